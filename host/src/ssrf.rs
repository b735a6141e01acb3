//! Which addresses a URL that a client supplied (an A2A push URL) may reach: public ones only,
//! unless the config allows private ones. Checked when the URL is given, and enforced where the
//! connection is made, by a resolver that drops every address that is not public; so a name that
//! resolves elsewhere later (DNS rebinding) still cannot reach a private address. The rules
//! themselves (what is public, the URL's syntax) are the core crate's, re-exported here.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioExecutor;

pub use agent_inbox_core::ssrf::*;

/// An HTTPS client that connects only to public addresses.
pub type PublicClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector<PublicOnly>>, Full<Bytes>>;

/// Checks a URL a client gave: http(s), and (unless `allow_private`) a host that is a public
/// address or a name with at least one public address now. Delivery checks again, at connect
/// time, through [`PublicOnly`].
pub async fn check_url(url: &str, allow_private: bool) -> Result<http::Uri, UrlError> {
    let (uri, target) = parse_url(url)?;
    if allow_private {
        return Ok(uri);
    }
    let bare = match target {
        Target::Address(ip) if is_public(ip) => return Ok(uri),
        Target::Address(ip) => return Err(UrlError::NotPublic(ip.to_string())),
        Target::Name(name) => name,
    };
    let bare = bare.as_str();
    let port = uri.port_u16().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|_| UrlError::Unresolved(bare.into()))?
        .collect();
    if addrs.iter().any(|a| is_public(a.ip())) {
        Ok(uri)
    } else {
        Err(UrlError::NotPublic(bare.into()))
    }
}

/// A resolver that keeps only public addresses (none left: the name does not resolve).
#[derive(Clone)]
pub struct PublicOnly(GaiResolver);

impl tower_service::Service<Name> for PublicOnly {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_owned();
        let lookup = self.0.call(name);
        Box::pin(async move {
            let public: Vec<SocketAddr> = lookup.await?.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(std::io::Error::other(format!(
                    "{host} has no public address; push URLs may not reach private ones"
                )));
            }
            Ok(public.into_iter())
        })
    }
}

/// An HTTPS client (public roots) that connects only to public addresses.
pub fn public_client() -> PublicClient {
    let mut http = HttpConnector::new_with_resolver(PublicOnly(GaiResolver::new()));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(https)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_are_checked_before_use() {
        let refused = |u: &'static str| async move { check_url(u, false).await.err() };
        assert!(matches!(
            refused("ftp://x").await,
            Some(UrlError::NotHttp(_))
        ));
        for u in [
            "http://127.0.0.1:9/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:8080/hook",
            "https://[fd00::1]/x",
            "http://[::127.0.0.1]/x",
            "http://[2002:7f00:1::]/x",
            "http://[2001:0:808:808::80ff:fffe]/x",
            "http://[64:ff9b:1::a00:1]/x",
        ] {
            assert!(
                matches!(refused(u).await, Some(UrlError::NotPublic(_))),
                "{u}"
            );
        }
        assert!(check_url("http://127.0.0.1:9/hook", true).await.is_ok());
        assert!(check_url("https://8.8.8.8/hook", false).await.is_ok());
    }
}
