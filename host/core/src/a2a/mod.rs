//! The A2A v1.0 protocol, free of the inbox's state: the JSON shapes (`json`), JSON-RPC framing
//! (`rpc`), the agent card, the errors with their codes, and how a task's records read as an A2A
//! task (`state`). The methods themselves are use cases of the inbox (`inbox::a2a`).

pub mod card;
pub mod json;
pub mod remote;
mod rpc;
pub mod state;

pub use self::rpc::{Request, Version, error_response, parse_request, result_response, version};

/// A2A's errors, each with its JSON-RPC code (spec §5.4, §9.5).
#[derive(Debug, thiserror::Error)]
pub enum A2aError {
    /// The body is not JSON.
    #[error("Invalid JSON payload: {0}")]
    Parse(String),
    /// Not a JSON-RPC 2.0 request.
    #[error("Request payload validation error: {0}")]
    InvalidRequest(String),
    /// No such method.
    #[error("Method not found: {0}")]
    MethodNotFound(String),
    /// The params do not fit the method.
    #[error("Invalid parameters: {0}")]
    InvalidParams(String),
    /// The inbox failed (the detail is logged, not sent) or is busy.
    #[error("Internal error: {0}")]
    Internal(String),
    /// No such task, or not the caller's.
    #[error("Task not found: {0}")]
    TaskNotFound(String),
    /// The task has ended.
    #[error("Task cannot be canceled: it is {0}")]
    TaskNotCancelable(&'static str),
    /// Push notification configs are not offered.
    #[error("Push notifications are not supported by this agent")]
    PushNotSupported,
    /// The operation is not offered, or not in this state.
    #[error("Unsupported operation: {0}")]
    Unsupported(String),
    /// A part the inbox does not take.
    #[error("Content type not supported: {0}")]
    ContentType(String),
    /// No extended card.
    #[error("This agent has no extended agent card")]
    ExtendedCardNotConfigured,
    /// An `A2A-Version` other than 1.0.
    #[error("A2A version {0:?} is not supported; this agent speaks 1.0")]
    VersionNotSupported(String),
    /// The caller's address failed authentication too often (an HTTP 429, not a 200).
    #[error("Too many failed authentications from this address; retry after the Retry-After delay")]
    TooManyAuthFailures,
    /// The store cannot write now (a full disk, a database away): nothing was recorded; send
    /// again after the Retry-After delay (an HTTP 503, not a 200).
    #[error("The inbox cannot record messages right now; retry after the Retry-After delay")]
    StoreUnavailable,
}

impl A2aError {
    /// The JSON-RPC code.
    pub fn code(&self) -> i32 {
        match self {
            A2aError::Parse(_) => -32700,
            A2aError::InvalidRequest(_) => -32600,
            A2aError::MethodNotFound(_) => -32601,
            A2aError::InvalidParams(_) => -32602,
            A2aError::Internal(_) => -32603,
            A2aError::TaskNotFound(_) => -32001,
            A2aError::TaskNotCancelable(_) => -32002,
            A2aError::PushNotSupported => -32003,
            A2aError::Unsupported(_) => -32004,
            A2aError::ContentType(_) => -32005,
            A2aError::ExtendedCardNotConfigured => -32007,
            A2aError::VersionNotSupported(_) => -32009,
            // In JSON-RPC's implementation-defined range, apart from the codes A2A defines.
            A2aError::TooManyAuthFailures => -32029,
            A2aError::StoreUnavailable => -32030,
        }
    }

    /// The `ErrorInfo` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            A2aError::Parse(_) => "PARSE_ERROR",
            A2aError::InvalidRequest(_) => "INVALID_REQUEST",
            A2aError::MethodNotFound(_) => "METHOD_NOT_FOUND",
            A2aError::InvalidParams(_) => "INVALID_PARAMS",
            A2aError::Internal(_) => "INTERNAL_ERROR",
            A2aError::TaskNotFound(_) => "TASK_NOT_FOUND",
            A2aError::TaskNotCancelable(_) => "TASK_NOT_CANCELABLE",
            A2aError::PushNotSupported => "PUSH_NOTIFICATION_NOT_SUPPORTED",
            A2aError::Unsupported(_) => "UNSUPPORTED_OPERATION",
            A2aError::ContentType(_) => "CONTENT_TYPE_NOT_SUPPORTED",
            A2aError::ExtendedCardNotConfigured => "EXTENDED_AGENT_CARD_NOT_CONFIGURED",
            A2aError::VersionNotSupported(_) => "VERSION_NOT_SUPPORTED",
            A2aError::TooManyAuthFailures => "TOO_MANY_AUTH_FAILURES",
            A2aError::StoreUnavailable => "STORE_UNAVAILABLE",
        }
    }
}

/// Who calls: a peer by its A2A token, or the admin (who may read and cancel every task, and
/// send none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A peer.
    Peer(String),
    /// The operator.
    Admin,
}
