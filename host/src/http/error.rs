//! Every error a request can end with, and the one place it becomes an answer
//! (`{"error": {"code", "message", ...}}`): internal detail goes to the log, never to the client.

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Response, StatusCode};

use crate::hooks::HookError;
use crate::inbox::InboxError;
use crate::signature::SignatureError;
use crate::store::StoreError;
use crate::wire::{BodyError, ErrorBody, ErrorDetail};

use super::{Body, json};

/// Everything a request can fail with; each maps to a status and a public code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body could not be read as the endpoint's JSON.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The body is over `max_body_bytes`.
    #[error("the body is over the {0}-byte limit")]
    BodyTooLarge(usize),
    /// Not JSON content.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// Wrong or missing credentials (never says which part).
    #[error("unauthorized")]
    Unauthorized,
    /// The console's sign-in with a wrong secret: the sign-in page again, with a 401.
    #[error("that is not the admin secret")]
    LoginFailed,
    /// Known path, wrong method; carries the methods it allows.
    #[error("method not allowed; this path takes {0}")]
    MethodNotAllowed(&'static str),
    /// The request conflicts with the server's state.
    #[error("{0}")]
    Conflict(String),
    /// A reload was asked for and failed; the old config stays.
    #[error("reload failed; the previous config stays in force: {0}")]
    ReloadFailed(String),
    /// Too many failed credentials from this address; try again after this long.
    #[error("too many failed credentials from this address; try again in {} s", .0.as_secs().max(1))]
    AuthLimited(std::time::Duration),
    /// A signed request's signature is missing, stale or wrong.
    #[error(transparent)]
    Signature(#[from] crate::signature::SignatureError),
    /// A pairing code that is used, expired or unknown (the same answer for each), or a
    /// pairing that is not waiting for that.
    #[error("no such invite: used, expired or unknown")]
    NoSuchInvite,
    /// The other inbox did not pair, or this one could not.
    #[error("pairing failed: {0}")]
    PairingFailed(String),
    /// A use case said no.
    #[error(transparent)]
    Inbox(#[from] InboxError),
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Inbox(InboxError::Store(e))
    }
}

impl ApiError {
    /// No such path, or no such resource.
    pub const NOT_FOUND: ApiError = ApiError::Inbox(InboxError::NotFound);

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Body(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized | ApiError::Signature(_) | ApiError::LoginFailed => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::AuthLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::ReloadFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NoSuchInvite => StatusCode::NOT_FOUND,
            ApiError::PairingFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::Inbox(e) => match e {
                InboxError::BadToken => StatusCode::UNAUTHORIZED,
                InboxError::NothingToRetry(_) | InboxError::Superseded => StatusCode::CONFLICT,
                InboxError::UnknownPeer { .. } => StatusCode::BAD_REQUEST,
                InboxError::UnknownType(_)
                | InboxError::UnknownReplyType { .. }
                | InboxError::LoopDetected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                InboxError::NotFound => StatusCode::NOT_FOUND,
                InboxError::NotAllowed { .. } => StatusCode::FORBIDDEN,
                InboxError::RateLimited { .. } | InboxError::TooManyReplies { .. } => {
                    StatusCode::TOO_MANY_REQUESTS
                }
                InboxError::Hook(HookError::Rejected { status, .. }) => {
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
                }
                InboxError::QueueFull { .. }
                | InboxError::ShuttingDown
                | InboxError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
                InboxError::Hook(HookError::Failed { .. }) | InboxError::Store(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }

    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Body(BodyError::BadJson(_)) => "bad_json",
            ApiError::Body(BodyError::NotObject) => "not_object",
            ApiError::Body(BodyError::MissingType) => "missing_type",
            ApiError::Body(BodyError::BadField(_)) => "bad_field",
            ApiError::BodyTooLarge(_) => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unauthorized | ApiError::LoginFailed => "unauthorized",
            ApiError::AuthLimited(_) => "too_many_auth_failures",
            ApiError::Signature(SignatureError::Missing) => "missing_signature",
            ApiError::Signature(SignatureError::Stale) => "stale_signature",
            ApiError::Signature(SignatureError::Bad) => "bad_signature",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::ReloadFailed(_) => "reload_failed",
            ApiError::NoSuchInvite => "not_found",
            ApiError::PairingFailed(_) => "pairing_failed",
            ApiError::Inbox(e) => match e {
                InboxError::UnknownType(_) | InboxError::UnknownReplyType { .. } => "unknown_type",
                InboxError::LoopDetected { .. } => "loop_detected",
                InboxError::Hook(HookError::Rejected { .. }) => "plugin_rejected",
                InboxError::Hook(HookError::Failed { .. }) => "plugin_failed",
                InboxError::QueueFull { .. } => "queue_full",
                InboxError::ShuttingDown => "shutting_down",
                InboxError::BadToken => "unauthorized",
                InboxError::Superseded => "superseded",
                InboxError::UnknownPeer { .. } => "bad_field",
                InboxError::NotFound => "not_found",
                InboxError::NothingToRetry(_) => "conflict",
                InboxError::NotAllowed { .. } => "not_allowed",
                InboxError::RateLimited { .. } => "rate_limited",
                InboxError::TooManyReplies { .. } => "too_many_replies",
                InboxError::Store(StoreError::Unavailable(_)) => "store_unavailable",
                InboxError::Store(_) => "internal",
            },
        }
    }

    /// One error of every kind a client can tell apart (every `code`), for the contract test
    /// that holds them to `openapi.yaml`. The match makes a new variant fail to compile here
    /// until it is added.
    pub fn examples() -> Vec<ApiError> {
        let all = vec![
            ApiError::Body(BodyError::BadJson("x".into())),
            ApiError::Body(BodyError::NotObject),
            ApiError::Body(BodyError::MissingType),
            ApiError::Body(BodyError::BadField("x".into())),
            ApiError::BodyTooLarge(1),
            ApiError::UnsupportedMediaType,
            ApiError::Unauthorized,
            ApiError::LoginFailed,
            ApiError::MethodNotAllowed("GET"),
            ApiError::Conflict("x".into()),
            ApiError::ReloadFailed("x".into()),
            ApiError::NoSuchInvite,
            ApiError::PairingFailed("x".into()),
            ApiError::AuthLimited(std::time::Duration::from_secs(1)),
            ApiError::Signature(SignatureError::Missing),
            ApiError::Signature(SignatureError::Stale),
            ApiError::Signature(SignatureError::Bad),
            ApiError::Inbox(InboxError::UnknownType(crate::router::NoRoute {
                msg_type: "X".into(),
                allowed: vec![],
            })),
            ApiError::Inbox(InboxError::UnknownReplyType {
                got: "X".into(),
                allowed: vec![],
            }),
            ApiError::Inbox(InboxError::LoopDetected { hops: 9, max: 8 }),
            ApiError::Inbox(InboxError::Hook(HookError::Rejected {
                plugin: "p".into(),
                status: 400,
                reason: "x".into(),
            })),
            ApiError::Inbox(InboxError::Hook(HookError::Failed {
                plugin: "p".into(),
                detail: "x".into(),
            })),
            ApiError::Inbox(InboxError::QueueFull {
                route: "r".into(),
                max_queued: 1,
            }),
            ApiError::Inbox(InboxError::ShuttingDown),
            ApiError::Inbox(InboxError::BadToken),
            ApiError::Inbox(InboxError::Superseded),
            ApiError::Inbox(InboxError::UnknownPeer {
                peer: "p".into(),
                known: vec![],
            }),
            ApiError::NOT_FOUND,
            ApiError::Inbox(InboxError::NothingToRetry("r".into())),
            ApiError::Inbox(InboxError::NotAllowed {
                reason: "x".into(),
                allowed: vec![],
            }),
            ApiError::Inbox(InboxError::RateLimited {
                agent: "a".into(),
                max: 1,
                retry_after: std::time::Duration::from_secs(1),
            }),
            ApiError::Inbox(InboxError::TooManyReplies {
                per_turn: 20,
                per_minute: 30,
                retry_after: std::time::Duration::from_secs(1),
            }),
            ApiError::Inbox(InboxError::Store(crate::store::StoreError::Closed)),
            ApiError::Inbox(InboxError::Store(StoreError::Unavailable("down".into()))),
        ];
        for e in &all {
            match e {
                ApiError::Body(_)
                | ApiError::BodyTooLarge(_)
                | ApiError::UnsupportedMediaType
                | ApiError::Unauthorized
                | ApiError::LoginFailed
                | ApiError::MethodNotAllowed(_)
                | ApiError::Conflict(_)
                | ApiError::ReloadFailed(_)
                | ApiError::NoSuchInvite
                | ApiError::PairingFailed(_)
                | ApiError::AuthLimited(_)
                | ApiError::Signature(_)
                | ApiError::Inbox(
                    InboxError::UnknownType(_)
                    | InboxError::UnknownReplyType { .. }
                    | InboxError::LoopDetected { .. }
                    | InboxError::Hook(_)
                    | InboxError::QueueFull { .. }
                    | InboxError::ShuttingDown
                    | InboxError::BadToken
                    | InboxError::Superseded
                    | InboxError::UnknownPeer { .. }
                    | InboxError::NotFound
                    | InboxError::NothingToRetry(_)
                    | InboxError::NotAllowed { .. }
                    | InboxError::RateLimited { .. }
                    | InboxError::TooManyReplies { .. }
                    | InboxError::Store(_),
                ) => {}
            }
        }
        all
    }

    /// Whether this is a failed credential (counted by the auth-failure limiter).
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            ApiError::Unauthorized
                | ApiError::LoginFailed
                | ApiError::Signature(_)
                | ApiError::NoSuchInvite
                | ApiError::Inbox(InboxError::BadToken)
        )
    }

    /// The message for the client: internal detail stays in the log.
    pub(super) fn public_message(&self) -> String {
        match self {
            ApiError::Inbox(InboxError::Store(StoreError::Unavailable(_))) => {
                "the database is unavailable; nothing was recorded, try again".into()
            }
            ApiError::Inbox(InboxError::Store(_)) => "internal error".into(),
            other => other.to_string(),
        }
    }

    /// The answer: status, JSON body, and the headers some errors carry.
    pub fn into_response(self) -> Response<Body> {
        if let ApiError::LoginFailed = self {
            let mut resp =
                super::console_pages::html(crate::console::login(Some(&self.to_string())));
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            return resp;
        }
        match &self {
            ApiError::Inbox(InboxError::Store(e @ StoreError::Unavailable(_))) => {
                tracing::warn!(error = %e, "refused: the store is unavailable")
            }
            ApiError::Inbox(InboxError::Store(e)) => tracing::error!(error = %e, "internal error"),
            ApiError::Inbox(InboxError::Hook(HookError::Failed { plugin, detail })) => {
                tracing::error!(plugin = %plugin, error = %detail, "plugin failed")
            }
            _ => {}
        }
        let detail = ErrorDetail {
            code: self.code().to_owned(),
            message: self.public_message(),
            allowed: match &self {
                ApiError::Inbox(InboxError::UnknownType(e)) => Some(e.allowed.clone()),
                ApiError::Inbox(
                    InboxError::UnknownReplyType { allowed, .. }
                    | InboxError::NotAllowed { allowed, .. },
                ) => Some(allowed.clone()),
                _ => None,
            },
            plugin: match &self {
                ApiError::Inbox(InboxError::Hook(
                    HookError::Rejected { plugin, .. } | HookError::Failed { plugin, .. },
                )) => Some(plugin.clone()),
                _ => None,
            },
        };
        let mut resp = json(self.status(), &ErrorBody { error: detail });
        match self {
            ApiError::Inbox(InboxError::QueueFull { .. } | InboxError::ShuttingDown) => {
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            ApiError::Inbox(InboxError::Store(StoreError::Unavailable(_))) => {
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            ApiError::MethodNotAllowed(allow) => {
                resp.headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Inbox(
                InboxError::RateLimited {
                    retry_after: wait, ..
                }
                | InboxError::TooManyReplies {
                    retry_after: wait, ..
                },
            )
            | ApiError::AuthLimited(wait) => {
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, retry_after(wait));
            }
            _ => {}
        }
        resp
    }
}

/// A `Retry-After` of whole seconds, rounded up (at least 1), so a client that waits this long is
/// let in.
pub(super) fn retry_after(wait: std::time::Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

/// An empty answer with just a status, for when even the error body cannot be built.
pub(super) fn bare(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Body::full(Bytes::new()));
    *resp.status_mut() = status;
    resp
}
