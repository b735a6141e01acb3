//! The text an agent receives: the message, then reply instructions in the original article's shape.
//!
//! This is the built-in renderer; a route's render-turn plugin replaces it.

use crate::model::{Message, ReplyContext};

/// Renders the prompt for one turn.
pub fn render(m: &Message, ctx: &ReplyContext) -> String {
    let payload = serde_json::from_str::<serde_json::Value>(&m.payload)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| m.payload.clone());
    let mut s = format!(
        "You have a new {t} message from {from}.\n\n\
         Type: {t}\nFrom: {from}\nMessage id: {id}\nThread: {thread}\n",
        t = m.msg_type,
        from = m.sender,
        id = m.id,
        thread = m.thread_id,
    );
    if let Some(r) = &m.in_reply_to {
        s.push_str(&format!("In reply to: {r}\n"));
    }
    s.push_str(&format!("Payload:\n{payload}\n"));
    let Some(first) = ctx.reply_types.first() else {
        s.push_str("\nNo reply is expected for this message.\n");
        return s;
    };
    // A private CA's file goes first, so the command still reads as the article's. The retries
    // carry a reply over a 503 (a host whose database is away, a restart) or a refused connection;
    // without `-f` a 4xx answer is not retried.
    let cacert = ctx
        .ca_file
        .as_ref()
        .map(|ca| format!("--cacert '{ca}' "))
        .unwrap_or_default();
    s.push_str(&format!(
        "\nTo send your response, POST to /send:\n\n  \
         curl -s {cacert}-X POST {url} \\\n    \
         --retry 5 --retry-all-errors \\\n    \
         -H \"Authorization: Bearer {token}\" \\\n    \
         -H \"Content-Type: application/json\" \\\n    \
         -d '{{\"type\": \"{first}\", \"payload\": {{...}}}}'\n\n\
         Valid types: {types}.\n\
         You may reply more than once (for example a STATUS, then the result); \
         replies are accepted until {deadline}.\n",
        url = ctx.url,
        token = ctx.token,
        types = ctx.reply_types.join(", "),
        deadline = ctx.deadline,
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            id: "m1".into(),
            sender: "tony".into(),
            route: "tasks".into(),
            msg_type: "TASK".into(),
            payload: r#"{"title":"fix it"}"#.into(),
            thread_id: "t1".into(),
            in_reply_to: None,
            hops: 0,
            sender_ref: None,
            received_at: 0,
            mailbox: false,
        }
    }

    #[test]
    fn prompt_has_message_curl_and_types() {
        let ctx = ReplyContext {
            url: "http://127.0.0.1:8700/send".into(),
            token: "tok123".into(),
            reply_types: vec!["BREAKDOWN".into(), "STATUS".into()],
            deadline: "2026-01-01T00:00:00Z".into(),
            ca_file: None,
        };
        let p = render(&message(), &ctx);
        for want in [
            "Type: TASK",
            "From: tony",
            "Thread: t1",
            "\"title\": \"fix it\"",
            "curl -s -X POST http://127.0.0.1:8700/send",
            "-H \"Authorization: Bearer tok123\"",
            "-H \"Content-Type: application/json\"",
            "-d '{\"type\": \"BREAKDOWN\", \"payload\": {...}}'",
            "Valid types: BREAKDOWN, STATUS.",
        ] {
            assert!(p.contains(want), "missing {want:?} in:\n{p}");
        }
    }

    #[test]
    fn a_private_ca_goes_into_the_curl() {
        let ctx = ReplyContext {
            url: "https://inbox.internal:8700/send".into(),
            token: "t".into(),
            reply_types: vec!["DONE".into()],
            deadline: String::new(),
            ca_file: Some("/etc/inbox/ca.pem".into()),
        };
        let p = render(&message(), &ctx);
        assert!(
            p.contains(
                "curl -s --cacert '/etc/inbox/ca.pem' -X POST https://inbox.internal:8700/send"
            ),
            "{p}"
        );
    }

    #[test]
    fn no_reply_types_means_no_instructions() {
        let ctx = ReplyContext {
            url: "u".into(),
            token: "t".into(),
            reply_types: vec![],
            deadline: String::new(),
            ca_file: None,
        };
        let p = render(&message(), &ctx);
        assert!(p.contains("No reply is expected"));
        assert!(!p.contains("curl"));
    }
}
