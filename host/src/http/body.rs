//! The response body: one buffer (every answer but a stream), or Server-Sent Events fed through a
//! bounded channel by the task that follows an A2A task.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// A response body.
#[derive(Debug)]
pub struct Body(Kind);

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
    /// A body another library made (rmcp's answers on `/mcp`).
    Boxed(BoxBody<Bytes, Infallible>),
}

impl Body {
    /// A body of these bytes (its length is sent as `Content-Length`).
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Body(Kind::Full((!bytes.is_empty()).then_some(bytes)))
    }

    /// A body written as it comes, ending when the sender is dropped.
    pub fn stream(rx: mpsc::Receiver<Bytes>) -> Self {
        Body(Kind::Stream(rx))
    }

    pub fn boxed(body: BoxBody<Bytes, Infallible>) -> Self {
        Body(Kind::Boxed(body))
    }
}

/// A `200 text/event-stream` answer whose body is what `rx` gets.
pub(super) fn event_stream(rx: mpsc::Receiver<Bytes>) -> http::Response<Body> {
    use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
    let mut resp = http::Response::new(Body::stream(rx));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::full(s)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.0 {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
            Kind::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(b) => b.is_none(),
            Kind::Stream(_) => false,
            Kind::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(_) => SizeHint::default(),
            Kind::Boxed(b) => b.size_hint(),
        }
    }
}
