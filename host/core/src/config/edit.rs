//! Edits of routes.toml that pairing makes, keeping the file's comments and layout (toml_edit):
//! adding a peer appends its `[peers.NAME]` table at the end and puts its name in the lists
//! that let it talk to the local agents; removing one takes all of that away again. Pure: text
//! in, text out. The caller validates the result before writing it.

use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, Value};

/// A peer pairing adds: where to deliver to it, and the files holding each direction's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPeer {
    pub name: String,
    /// Its `/message/{our name}` URL.
    pub url: String,
    /// The file holding the key that checks what it sends (`secret_file`).
    pub receive_key_file: String,
    /// The file holding the key that signs what we send it (`send_secret_file`).
    pub send_key_file: String,
    /// The types our local agents may send it (what its agents' routes take).
    pub sends: Vec<String>,
}

/// Why an edit cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("routes.toml is not valid TOML: {0}")]
    Syntax(String),
    #[error("peer {0:?} is already in routes.toml")]
    Exists(String),
    #[error("no peer {0:?} in routes.toml")]
    Unknown(String),
    #[error("{0} is not what routes.toml should have there")]
    Shape(String),
}

fn parse(text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>()
        .map_err(|e| EditError::Syntax(e.to_string().trim().to_owned()))
}

/// The routes a paired peer joins, and the local agents that may then send it. A route run by a
/// local agent (`agent_id`) takes the peer's messages and answers it; a mailbox that takes
/// `TURN_FAILED` keeps the answers to what the agents send.
fn joins(route: &Table) -> (bool, bool) {
    let has = |key: &str, want: &str| {
        route
            .get(key)
            .and_then(Item::as_array)
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(want)))
    };
    let agent_route = route.contains_key("agent_id");
    let answers =
        route.get("mailbox").and_then(Item::as_bool) == Some(true) && has("types", "TURN_FAILED");
    let replies = agent_route
        && route
            .get("reply_types")
            .and_then(Item::as_array)
            .is_some_and(|a| !a.is_empty());
    (agent_route || answers, replies)
}

/// Appends `name` to the list at `key` of `table` (making the list if it is missing).
fn push_name(table: &mut Table, key: &str, name: &str) -> Result<(), EditError> {
    let item = table
        .entry(key)
        .or_insert_with(|| Item::Value(Value::Array(Array::new())));
    let list = item
        .as_array_mut()
        .ok_or_else(|| EditError::Shape(key.to_owned()))?;
    if !list.iter().any(|v| v.as_str() == Some(name)) {
        list.push(name);
    }
    Ok(())
}

/// `text` with `peer` added: its table at the end, its name in the `from` (and `reply_to`) of
/// the local agents' routes and of the answers mailbox, and a `may_send` rule for each local
/// agent that runs one of those routes.
pub fn add_peer(text: &str, peer: &NewPeer) -> Result<String, EditError> {
    let mut doc = parse(text)?;
    let name = peer.name.as_str();
    let peers = doc
        .entry("peers")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| EditError::Shape("peers".into()))?;
    if peers.contains_key(name) {
        return Err(EditError::Exists(name.to_owned()));
    }
    let mut table = Table::new();
    table.insert("url", toml_edit::value(&peer.url));
    table.insert("auth", toml_edit::value("standard-webhooks"));
    table.insert("secret_file", toml_edit::value(&peer.receive_key_file));
    table.insert("send_secret_file", toml_edit::value(&peer.send_key_file));
    table
        .decor_mut()
        .set_prefix(format!("\n# Paired with `agent-inbox peer`: {name}.\n"));
    peers.insert(name, Item::Table(table));

    let mut agents = Vec::new();
    if let Some(routes) = doc.get_mut("routes").and_then(Item::as_table_mut) {
        for (_, route) in routes.iter_mut() {
            let Some(route) = route.as_table_mut() else {
                continue;
            };
            let (from, reply_to) = joins(route);
            if from {
                push_name(route, "from", name)?;
            }
            if reply_to {
                push_name(route, "reply_to", name)?;
            }
            if let Some(agent) = route.get("agent_id").and_then(Item::as_str) {
                agents.push(agent.to_owned());
            }
        }
    }
    if !peer.sends.is_empty() {
        for agent in agents {
            let Some(table) = doc
                .get_mut("agents")
                .and_then(|a| a.get_mut(&agent))
                .and_then(Item::as_table_mut)
            else {
                continue;
            };
            let mut rule = InlineTable::new();
            rule.insert("to", Value::Array(Array::from_iter([name])));
            rule.insert(
                "types",
                Value::Array(Array::from_iter(peer.sends.iter().map(String::as_str))),
            );
            match table.get_mut("may_send") {
                None => {
                    table.insert(
                        "may_send",
                        Item::Value(Value::Array(Array::from_iter([Value::InlineTable(rule)]))),
                    );
                }
                Some(Item::Value(Value::Array(rules))) => {
                    if rules.is_empty() {
                        // `[]` with a comment after it: the rule goes in, the comment stays.
                        rules.set_trailing("");
                    }
                    rules.push(Value::InlineTable(rule));
                }
                Some(Item::ArrayOfTables(rules)) => rules.push(rule.into_table()),
                Some(_) => return Err(EditError::Shape(format!("agents.{agent}.may_send"))),
            }
        }
    }
    Ok(doc.to_string())
}

/// Takes `name` out of a list; whether it was there.
fn drop_name(list: &mut Array, name: &str) -> bool {
    let before = list.len();
    list.retain(|v| v.as_str() != Some(name));
    list.len() != before
}

/// `text` without peer `name`: its table, its name in every route's `from` and `reply_to`, and
/// in every `may_send` rule (a rule left with no peer goes). Also the key files its table named
/// (`secret_file`, `send_secret_file`), for the caller to delete if they are pairing's own.
pub fn remove_peer(text: &str, name: &str) -> Result<(String, Vec<String>), EditError> {
    let mut doc = parse(text)?;
    let removed = doc
        .get_mut("peers")
        .and_then(Item::as_table_mut)
        .and_then(|p| p.remove(name))
        .ok_or_else(|| EditError::Unknown(name.to_owned()))?;
    let files = ["secret_file", "send_secret_file"]
        .iter()
        .filter_map(|k| removed.get(k).and_then(Item::as_str).map(str::to_owned))
        .collect();
    if let Some(routes) = doc.get_mut("routes").and_then(Item::as_table_mut) {
        for (_, route) in routes.iter_mut() {
            for key in ["from", "reply_to"] {
                if let Some(list) = route.get_mut(key).and_then(Item::as_array_mut) {
                    drop_name(list, name);
                }
            }
        }
    }
    if let Some(agents) = doc.get_mut("agents").and_then(Item::as_table_mut) {
        for (_, agent) in agents.iter_mut() {
            // A rule that names others too keeps them; one left with nobody goes.
            match agent.get_mut("may_send") {
                Some(Item::Value(Value::Array(rules))) => {
                    let mut emptied = Vec::new();
                    for (i, rule) in rules.iter_mut().enumerate() {
                        let to = rule
                            .as_inline_table_mut()
                            .and_then(|r| r.get_mut("to"))
                            .and_then(Value::as_array_mut);
                        if to.is_some_and(|to| drop_name(to, name) && to.is_empty()) {
                            emptied.push(i);
                        }
                    }
                    for i in emptied.into_iter().rev() {
                        rules.remove(i);
                    }
                }
                Some(Item::ArrayOfTables(rules)) => {
                    let mut emptied = Vec::new();
                    for (i, rule) in rules.iter_mut().enumerate() {
                        let to = rule.get_mut("to").and_then(Item::as_array_mut);
                        if to.is_some_and(|to| drop_name(to, name) && to.is_empty()) {
                            emptied.push(i);
                        }
                    }
                    for i in emptied.into_iter().rev() {
                        rules.remove(i);
                    }
                }
                _ => {}
            }
        }
    }
    Ok((doc.to_string(), files))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-written file: comments everywhere, odd spacing, a route pairing leaves alone.
    const HAND: &str = r#"# My inbox.   (hand-written; keep me)

[server]
listen = "127.0.0.1:8700"   # loopback only
admin_secret_file = "secrets/admin.secret"

[agents.main]
token_file = "secrets/main.token"
may_send = []  # pairing adds rules

# the agent's route
[routes.main]
from = []      # pairing adds each peer
types = ["TASK"]
reply_types = ["DONE"]
reply_to = []  # and here
agent_id = "main"

[routes.answers]
from = []
types = ["DONE", "TURN_FAILED"]
mailbox = true

[routes.webhooks]   # a route pairing does not touch
from = ["github"]
types = ["PUSH"]
mailbox = true

[peers.github]
url = "https://example.invalid/hook"
secret_env = "GITHUB_SECRET"
"#;

    fn bob() -> NewPeer {
        NewPeer {
            name: "bob".into(),
            url: "https://bob.example:8700/message/alice".into(),
            receive_key_file: "secrets/peers/bob.receive".into(),
            send_key_file: "secrets/peers/bob.send".into(),
            sends: vec!["TASK".into()],
        }
    }

    #[test]
    fn adding_a_peer_keeps_every_byte_outside_what_it_adds() {
        let added = add_peer(HAND, &bob()).expect("added");
        // Line by line, the only changes are the lists that gained bob and the new table.
        let expect =
            HAND.replace(
                "may_send = []  # pairing adds rules",
                "may_send = [{ to = [\"bob\"], types = [\"TASK\"] }]  # pairing adds rules",
            )
            .replace(
                "from = []      # pairing adds each peer",
                "from = [\"bob\"]      # pairing adds each peer",
            )
            .replace(
                "reply_to = []  # and here",
                "reply_to = [\"bob\"]  # and here",
            )
            .replace(
                "from = []\ntypes = [\"DONE\", \"TURN_FAILED\"]",
                "from = [\"bob\"]\ntypes = [\"DONE\", \"TURN_FAILED\"]",
            ) + "\n# Paired with `agent-inbox peer`: bob.\n[peers.bob]\n\
               url = \"https://bob.example:8700/message/alice\"\n\
               auth = \"standard-webhooks\"\n\
               secret_file = \"secrets/peers/bob.receive\"\n\
               send_secret_file = \"secrets/peers/bob.send\"\n";
        assert_eq!(added, expect);
        // Twice is refused; a second peer joins the same lists.
        assert_eq!(
            add_peer(&added, &bob()),
            Err(EditError::Exists("bob".into()))
        );
        let carol = NewPeer {
            name: "carol".into(),
            ..bob()
        };
        let both = add_peer(&added, &carol).expect("added");
        assert!(both.contains("from = [\"bob\", \"carol\"]      # pairing adds each peer"));
        assert!(both.contains("{ to = [\"carol\"], types = [\"TASK\"] }"));
    }

    #[test]
    fn removing_a_peer_gives_the_file_back() {
        let added = add_peer(HAND, &bob()).expect("added");
        let (removed, files) = remove_peer(&added, "bob").expect("removed");
        assert_eq!(
            files,
            ["secrets/peers/bob.receive", "secrets/peers/bob.send"]
        );
        // Back to the lists as they were; the rule list keeps its comment.
        for line in [
            "from = []      # pairing adds each peer",
            "reply_to = []  # and here",
            "[routes.webhooks]   # a route pairing does not touch",
        ] {
            assert!(removed.contains(line), "{line:?} in\n{removed}");
        }
        assert!(!removed.contains("bob"), "{removed}");
        assert!(removed.contains("may_send = []"), "{removed}");
        assert_eq!(
            remove_peer(&removed, "bob"),
            Err(EditError::Unknown("bob".into()))
        );
        // A peer another rule also names: the rule keeps the others.
        let shared = HAND.replace(
            "may_send = []  # pairing adds rules",
            "may_send = [{ to = [\"github\", \"bob\"], types = [\"TASK\"] }]",
        );
        let with_bob = add_peer(
            &shared,
            &NewPeer {
                sends: vec![],
                ..bob()
            },
        )
        .expect("added");
        let (back, _) = remove_peer(&with_bob, "bob").expect("removed");
        assert!(
            back.contains("{ to = [\"github\"], types = [\"TASK\"] }"),
            "{back}"
        );
    }

    #[test]
    fn a_file_that_is_not_toml_is_refused() {
        assert!(matches!(
            add_peer("[server\n", &bob()),
            Err(EditError::Syntax(_))
        ));
    }
}
