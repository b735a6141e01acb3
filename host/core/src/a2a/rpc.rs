//! JSON-RPC 2.0 as A2A's JSON-RPC binding uses it (§9): one request object per POST, its `id`
//! echoed in the answer, errors as error objects with an `ErrorInfo` detail, and the `A2A-Version`
//! service parameter. Pure.

use serde_json::{Value, json};

use super::A2aError;
use super::json::RpcError;

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Its id (string or number), echoed.
    pub id: Value,
    pub method: String,
    /// Its params (`{}` when absent).
    pub params: Value,
}

/// Reads one JSON-RPC request; on failure, the id to answer with (null when unknown) and the
/// error.
pub fn parse_request(bytes: &[u8], max_depth: usize) -> Result<Request, (Value, A2aError)> {
    if crate::model::nests_deeper_than(bytes, max_depth) {
        return Err((
            Value::Null,
            A2aError::InvalidRequest(format!("the body nests deeper than {max_depth} levels")),
        ));
    }
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| (Value::Null, A2aError::Parse(e.to_string())))?;
    let Value::Object(mut obj) = v else {
        return Err((
            Value::Null,
            A2aError::InvalidRequest(
                "the body must be one JSON-RPC request object (batches are not supported)".into(),
            ),
        ));
    };
    let id = match obj.remove("id") {
        Some(id @ Value::String(_)) => id,
        // JSON-RPC: a number id SHOULD NOT have a fraction; echoing one back (1e-42) is asking
        // for a client that cannot match it.
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n),
        Some(Value::Null) | None => {
            return Err((
                Value::Null,
                A2aError::InvalidRequest("a request needs an id (string or number)".into()),
            ));
        }
        Some(_) => {
            return Err((
                Value::Null,
                A2aError::InvalidRequest("id must be a string or an integer".into()),
            ));
        }
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((
            id,
            A2aError::InvalidRequest("jsonrpc must be \"2.0\"".into()),
        ));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => {
            return Err((
                id,
                A2aError::InvalidRequest("method must be a non-empty string".into()),
            ));
        }
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p,
        Some(_) => {
            return Err((
                id,
                A2aError::InvalidParams("params must be an object".into()),
            ));
        }
    };
    Ok(Request { id, method, params })
}

/// What the `A2A-Version` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    /// 1.0, or no header on a 1.0 method (see [`version`]).
    V1,
    /// Anything else.
    Unsupported(String),
}

/// The version a request is served with. An explicit `A2A-Version` must be 1.0 (`1.0.x` is
/// 1.0 too: patch versions do not count, §3.6). The spec reads a missing header as 0.3; 0.3's
/// methods have other names (`message/send`), so a request without the header that calls one is
/// refused as 0.3, and one that calls a 1.0 method is served as 1.0: it can only be a 1.0 client
/// that left the header out (curl, a script), and failing it would help nobody.
pub fn version(header: Option<&str>, method: &str) -> Version {
    match header.map(str::trim) {
        None | Some("") if method.contains('/') => Version::Unsupported("0.3".into()),
        None | Some("") => Version::V1,
        Some(v) => {
            let mut parts = v.split('.');
            match (parts.next(), parts.next()) {
                (Some("1"), Some("0") | None) => Version::V1,
                _ => Version::Unsupported(v.chars().take(20).collect()),
            }
        }
    }
}

/// A success answer.
pub fn result_response(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// An error answer, with the spec's `ErrorInfo` detail.
pub fn error_response(id: &Value, e: &A2aError) -> Value {
    let error = RpcError {
        code: e.code(),
        message: e.to_string(),
        data: Some(json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": e.reason(),
            "domain": "a2a-protocol.org",
            "metadata": {},
        }])),
    };
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_in_order() {
        let code = |body: &str| {
            parse_request(body.as_bytes(), 64)
                .err()
                .map(|(_, e)| e.code())
        };
        assert_eq!(code("{"), Some(-32700));
        assert_eq!(code("[]"), Some(-32600));
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":"GetTask"}"#),
            Some(-32600)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"1.0","id":1,"method":"GetTask"}"#),
            Some(-32600)
        );
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":1,"method":7}"#), Some(-32600));
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1.5,"method":"GetTask"}"#),
            Some(-32600)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"GetTask","params":[1]}"#),
            Some(-32602)
        );
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"params":{}1{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(code(&deep), Some(-32600));
        let ok =
            parse_request(br#"{"jsonrpc":"2.0","id":"a","method":"GetTask"}"#, 64).expect("valid");
        assert_eq!(ok.id, json!("a"));
        assert_eq!(ok.params, json!({}));
    }

    #[test]
    fn versions() {
        assert_eq!(version(Some("1.0"), "SendMessage"), Version::V1);
        assert_eq!(version(Some(" 1.0.2"), "SendMessage"), Version::V1);
        assert_eq!(version(None, "SendMessage"), Version::V1);
        assert_eq!(
            version(None, "message/send"),
            Version::Unsupported("0.3".into())
        );
        assert_eq!(
            version(Some("0.3"), "SendMessage"),
            Version::Unsupported("0.3".into())
        );
        assert_eq!(
            version(Some("2.0"), "SendMessage"),
            Version::Unsupported("2.0".into())
        );
    }
}
