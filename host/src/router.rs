//! Pure routing: which route takes a message from a sender, and which types that sender may send.
//!
//! Built once per config snapshot; lookups never allocate on the hot path.

use std::collections::{BTreeSet, HashMap};

use crate::config::{Config, WILDCARD};

/// Maps (sender, type) to the one route that accepts it.
#[derive(Debug, Default)]
pub struct Router {
    by_sender_type: HashMap<(String, String), String>,
    /// Routes with `types = ["*"]`, by sender: used when no route names the type.
    fallback: HashMap<String, String>,
    types_by_sender: HashMap<String, Vec<String>>,
}

/// No route accepts this type from this sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no route accepts type {msg_type:?} from this sender; it may send: {}",
    list_or_none(allowed)
)]
pub struct NoRoute {
    /// The type that was sent.
    pub msg_type: String,
    /// Types the sender may send, sorted.
    pub allowed: Vec<String>,
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

impl Router {
    /// Builds the routing table; the config is already validated, so there are no overlaps.
    pub fn new(config: &Config) -> Self {
        let mut by_sender_type = HashMap::new();
        let mut fallback = HashMap::new();
        let mut types: HashMap<String, BTreeSet<String>> = HashMap::new();
        // Internal routes are reached only through a plugin's route-to.
        for route in config.routes.values().filter(|r| !r.internal) {
            for peer in &route.from {
                for t in &route.types {
                    if t == WILDCARD {
                        fallback.insert(peer.clone(), route.name.clone());
                        continue;
                    }
                    by_sender_type.insert((peer.clone(), t.clone()), route.name.clone());
                    types.entry(peer.clone()).or_default().insert(t.clone());
                }
            }
        }
        let types_by_sender = types
            .into_iter()
            .map(|(p, t)| (p, t.into_iter().collect()))
            .collect();
        Self {
            by_sender_type,
            fallback,
            types_by_sender,
        }
    }

    /// The route for a message of `msg_type` from `sender`.
    pub fn route(&self, sender: &str, msg_type: &str) -> Result<&str, NoRoute> {
        // Tuple keys need owned strings to look up; the cost is two small allocations per message.
        match self
            .by_sender_type
            .get(&(sender.to_owned(), msg_type.to_owned()))
        {
            Some(r) => Ok(r),
            None if let Some(r) = self.fallback.get(sender) => Ok(r),
            None => Err(NoRoute {
                msg_type: msg_type.to_owned(),
                allowed: self
                    .types_by_sender
                    .get(sender)
                    .cloned()
                    .unwrap_or_default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn routes_by_sender_and_type() {
        let cfg = Config::parse(
            r#"
            [agent]
            command = ["x"]
            [peers.a]
            url = "http://h/m"
            secret = "sa"
            [peers.b]
            url = "http://h/m"
            secret = "sb"
            [routes.tasks]
            from = ["a"]
            types = ["TASK", "PING"]
            [routes.notes]
            from = ["a", "b"]
            types = ["NOTE"]
            mailbox = true
            [routes.rest]
            from = ["b"]
            types = ["*"]
            mailbox = true
            "#,
            Path::new("."),
            |_| None,
        )
        .expect("valid");
        let r = Router::new(&cfg);
        type Case<'a> = (&'a str, &'a str, Result<&'a str, &'a [&'a str]>);
        let cases: &[Case<'_>] = &[
            ("a", "TASK", Ok("tasks")),
            ("a", "NOTE", Ok("notes")),
            ("b", "NOTE", Ok("notes")),
            ("b", "TASK", Ok("rest")),
            ("b", "NOTE", Ok("notes")),
            ("a", "task", Err(&["NOTE", "PING", "TASK"])),
            ("c", "NOTE", Err(&[])),
            ("a", "OTHER", Err(&["NOTE", "PING", "TASK"])),
        ];
        for (sender, t, want) in cases {
            let got = r.route(sender, t);
            match want {
                Ok(route) => assert_eq!(got, Ok(*route), "{sender} {t}"),
                Err(allowed) => {
                    let e = got.expect_err("no route");
                    assert_eq!(e.allowed, *allowed, "{sender} {t}");
                }
            }
        }
    }
}
