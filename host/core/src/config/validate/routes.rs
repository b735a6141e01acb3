//! `[routes]` with their agents and plugins, and `[plugins]`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use super::{Checker, schema, valid_name, valid_type_name};
use crate::config::defaults::*;
use crate::config::{
    A2aAgent, A2aRemote, AgentSettings, Approval, Approve, ConfigError, Driver, Gateway, OnFailure,
    OnInterrupt, PluginSpec, Plugins, Route, RouteA2a, RouteKind, WILDCARD,
};

pub(super) fn routes(c: &mut Checker<'_>, raw: &schema::File) -> BTreeMap<String, Route> {
    let known_peers = || {
        let names: Vec<&str> = raw.peers.keys().map(String::as_str).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let mut routes = BTreeMap::new();
    let mut claimed: HashMap<(String, String), String> = HashMap::new();
    for (name, r) in &raw.routes {
        let at = format!("routes.{name}");
        if !valid_name(name) {
            c.invalid(&at, "a route name is letters, digits, '_', '-' or '.'");
        }
        for (key, list) in [("from", &r.from), ("reply_to", &r.reply_to)] {
            for (i, peer) in list.iter().enumerate() {
                match raw.peers.get(peer) {
                    None => c.errors.push(ConfigError::UnknownPeer {
                        at: format!("{at}.{key}[{i}]"),
                        peer: peer.clone(),
                        known: known_peers(),
                    }),
                    Some(p) if key == "reply_to" && p.url.is_none() && !is_a2a_agent(p) => c
                        .invalid(
                            format!("{at}.reply_to[{i}]"),
                            format!("peer {peer:?} has no url to deliver replies to"),
                        ),
                    Some(_) => {}
                }
            }
        }
        // A route with no peers yet (`agent-inbox init` writes one; pairing adds each peer).
        let no_peers_yet = r.from.is_empty();
        if no_peers_yet {
            c.warnings.push(format!(
                "{at}.from is empty: no peer reaches this route yet (`agent-inbox peer invite` \
                 adds one)"
            ));
        }
        // An A2A route may take nothing through /message: A2A messages name it by skill.
        if r.types.is_empty() && r.a2a.is_none() {
            c.errors.push(ConfigError::Empty {
                at: format!("{at}.types"),
            });
        }
        for (key, list) in [("types", &r.types), ("reply_types", &r.reply_types)] {
            let mut seen = BTreeSet::new();
            for (i, t) in list.iter().enumerate() {
                if key == "types" && t == WILDCARD {
                    if list.len() > 1 {
                        c.invalid(
                            format!("{at}.types"),
                            "\"*\" (every type no other route names) must be the only entry",
                        );
                    }
                } else if !valid_type_name(t) {
                    c.invalid(
                        format!("{at}.{key}[{i}]"),
                        format!("{t:?} is not a type name (letters, digits, '_', '-', '.', ':')"),
                    );
                } else if !seen.insert(t) {
                    c.invalid(format!("{at}.{key}[{i}]"), format!("{t:?} is listed twice"));
                }
            }
        }
        // An internal route is never matched by sender and type, so it cannot overlap.
        for peer in r.from.iter().filter(|_| !r.internal) {
            for t in &r.types {
                let key = (peer.clone(), t.clone());
                if let Some(other) = claimed.get(&key) {
                    c.errors.push(ConfigError::Overlap {
                        a: other.clone(),
                        b: name.clone(),
                        peer: peer.clone(),
                        msg_type: t.clone(),
                    });
                } else {
                    claimed.insert(key, name.clone());
                }
            }
        }

        let kind = if r.mailbox {
            for (key, present) in [
                ("agent", r.agent.is_some()),
                ("reply_types", !r.reply_types.is_empty()),
                ("reply_to", !r.reply_to.is_empty()),
            ] {
                if present {
                    c.errors.push(ConfigError::AgentKeyOnMailbox {
                        route: name.clone(),
                        key: key.into(),
                    });
                }
            }
            RouteKind::Mailbox
        } else {
            // An A2A route's replies are the task's artifacts, so they need no peer to go to.
            let artifacts_only = r.a2a.is_some() && r.reply_to.is_empty();
            let nobody_yet = no_peers_yet && r.reply_to.is_empty();
            if r.reply_types.is_empty() != r.reply_to.is_empty() && !artifacts_only && !nobody_yet {
                c.invalid(
                    &at,
                    "reply_types and reply_to go together: the agent replies with these types to these peers",
                );
            }
            RouteKind::Agent(agent_settings(
                c,
                &at,
                &raw.agent,
                r.agent.as_ref(),
                &r.reply_types,
            ))
        };
        let plugin = r.plugin.as_ref().map(|p| {
            let path = c.base_dir.join(p);
            if !path.is_file() {
                c.invalid(
                    format!("{at}.plugin"),
                    format!("{} is not a file", path.display()),
                );
            }
            let limits = r.plugin_limits.clone().unwrap_or_default();
            let d = &raw.plugins.limits;
            let memory_mib = c.positive(
                &format!("{at}.plugin_limits.memory_mib"),
                limits.memory_mib.or(d.memory_mib),
                DEFAULT_PLUGIN_MEMORY_MIB,
            );
            let deadline_ms = c.positive(
                &format!("{at}.plugin_limits.deadline_ms"),
                limits.deadline_ms.or(d.deadline_ms),
                DEFAULT_PLUGIN_DEADLINE_MS,
            );
            PluginSpec {
                path,
                config_json: r
                    .plugin_config
                    .as_ref()
                    .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "{}".into()))
                    .unwrap_or_else(|| "{}".into()),
                memory_bytes: memory_mib * 1024 * 1024,
                deadline: Duration::from_millis(deadline_ms),
                warm_calls: limits.warm_calls.or(d.warm_calls).unwrap_or(0),
            }
        });
        if r.plugin.is_none() && (r.plugin_config.is_some() || r.plugin_limits.is_some()) {
            c.invalid(&at, "plugin_config and plugin_limits need a plugin");
        }
        let a2a = r.a2a.as_ref().map(|a| route_a2a(c, &at, name, r, a));
        let approve = approve(c, &at, r);
        let approval_timeout = Duration::from_secs(c.positive(
            &format!("{at}.approval_timeout_secs"),
            r.approval_timeout_secs,
            approval_timeout(&raw.approval).as_secs(),
        ));
        if let RouteKind::Agent(a) = &kind
            && a.mcp_tools
            && r.agent_id.is_none()
        {
            c.warnings.push(format!(
                "{at}: its agent has the inbox's MCP tools (mcp_tools) but the route has no \
                 agent_id, so the tools' `reply` cannot answer its turns; name the [agents] \
                 entry whose token the tools use"
            ));
        }
        routes.insert(
            name.clone(),
            Route {
                plugin,
                internal: r.internal,
                name: name.clone(),
                from: r.from.clone(),
                types: r.types.clone(),
                reply_types: r.reply_types.clone(),
                reply_to: r.reply_to.clone(),
                kind,
                a2a,
                agent_id: r.agent_id.clone(),
                approve,
                approval_timeout,
            },
        );
    }
    a2a_skills(c, &routes);
    routes
}

/// A route's `approve = "none" | "inbound" | "outbound" | "both"`.
fn approve(c: &mut Checker<'_>, at: &str, r: &schema::Route) -> Approve {
    let at = format!("{at}.approve");
    let a = match r.approve.as_deref() {
        None | Some("none") => Approve::default(),
        Some("inbound") => Approve {
            inbound: true,
            outbound: false,
        },
        Some("outbound") => Approve {
            inbound: false,
            outbound: true,
        },
        Some("both") => Approve {
            inbound: true,
            outbound: true,
        },
        Some(other) => {
            c.invalid(
                &at,
                format!("{other:?} is not one of \"none\", \"inbound\", \"outbound\", \"both\""),
            );
            Approve::default()
        }
    };
    // Approval holds an agent's turn or its replies: a mailbox route has neither.
    if r.mailbox && (a.inbound || a.outbound) {
        c.invalid(
            &at,
            "a mailbox route runs no agent: there is nothing to hold",
        );
    }
    if a.outbound && r.reply_types.is_empty() {
        c.invalid(
            &at,
            "\"outbound\" holds the agent's replies, but the route has no reply_types",
        );
    }
    a
}

/// `[approval] timeout_secs`, the default of every `approval_timeout_secs` (checked once, in
/// [`approval`]: a bad value here falls back to the built-in default).
pub(super) fn approval_timeout(a: &schema::Approval) -> Duration {
    a.timeout_secs
        .filter(|s| *s > 0)
        .map_or(DEFAULT_APPROVAL_TIMEOUT, Duration::from_secs)
}

/// `[approval]`.
pub(super) fn approval(c: &mut Checker<'_>, a: &schema::Approval) -> Approval {
    if let Some(argv) = &a.notify_command
        && argv.first().is_none_or(|p| p.trim().is_empty())
    {
        c.invalid(
            "approval.notify_command",
            "an argv list whose first entry is the program",
        );
    }
    c.positive(
        "approval.timeout_secs",
        a.timeout_secs,
        DEFAULT_APPROVAL_TIMEOUT.as_secs(),
    );
    Approval {
        notify_command: a.notify_command.clone(),
        notify_timeout: Duration::from_secs(c.positive(
            "approval.notify_timeout_secs",
            a.notify_timeout_secs,
            DEFAULT_NOTIFY_TIMEOUT.as_secs(),
        )),
    }
}

/// A route's `a2a = { ... }`.
fn route_a2a(
    c: &mut Checker<'_>,
    at: &str,
    name: &str,
    r: &schema::Route,
    a: &schema::RouteA2a,
) -> RouteA2a {
    let at = format!("{at}.a2a");
    if r.mailbox {
        c.invalid(
            &at,
            "an A2A skill runs an agent: a mailbox route cannot be one",
        );
    }
    if r.internal {
        c.invalid(&at, "an internal route is reached only through a plugin");
    }
    if !valid_type_name(&a.msg_type) {
        c.invalid(
            format!("{at}.type"),
            format!("{:?} is not a type name", a.msg_type),
        );
    }
    let skill = a.skill.clone().unwrap_or_else(|| name.to_owned());
    if !valid_name(&skill) {
        c.invalid(
            format!("{at}.skill"),
            "a skill id is letters, digits, '_', '-' or '.'",
        );
    }
    for (i, t) in a.input_required_types.iter().enumerate() {
        if !r.reply_types.contains(t) {
            c.invalid(
                format!("{at}.input_required_types[{i}]"),
                format!("{t:?} is not one of the route's reply_types"),
            );
        }
    }
    RouteA2a {
        name: a.name.clone().unwrap_or_else(|| skill.clone()),
        description: a
            .description
            .clone()
            .unwrap_or_else(|| format!("Hands a {} to the agent behind route {name}", a.msg_type)),
        skill,
        tags: a.tags.clone(),
        examples: a.examples.clone(),
        msg_type: a.msg_type.clone(),
        default: a.default,
        input_required_types: a.input_required_types.clone(),
    }
}

/// Skill ids name one route each, and each peer has at most one default skill.
fn a2a_skills(c: &mut Checker<'_>, routes: &BTreeMap<String, Route>) {
    let mut skills: HashMap<&str, &str> = HashMap::new();
    let mut defaults: HashMap<&str, &str> = HashMap::new();
    for (name, r) in routes {
        let Some(a) = &r.a2a else { continue };
        if let Some(other) = skills.insert(&a.skill, name) {
            c.invalid(
                format!("routes.{name}.a2a.skill"),
                format!("skill {:?} is also routes.{other}'s", a.skill),
            );
        }
        if a.default {
            for peer in &r.from {
                if let Some(other) = defaults.insert(peer, name) {
                    c.invalid(
                        format!("routes.{name}.a2a.default"),
                        format!("routes.{other} is already peer {peer:?}'s default skill"),
                    );
                }
            }
        }
    }
}

pub(super) fn plugins(
    c: &mut Checker<'_>,
    raw: &schema::Plugins,
    data_dir: &Path,
    routes: &BTreeMap<String, Route>,
) -> Plugins {
    Plugins {
        cache_dir: match raw.cache_dir.as_deref() {
            Some(dir) => c.base_dir.join(dir),
            None => data_dir.join(DEFAULT_PLUGIN_CACHE_DIR),
        },
        max_instances: c.positive(
            "plugins.max_instances",
            raw.max_instances,
            DEFAULT_PLUGIN_MAX_INSTANCES,
        ),
        max_memory_bytes: routes
            .values()
            .filter_map(|r| r.plugin.as_ref().map(|p| p.memory_bytes))
            .max()
            .unwrap_or(DEFAULT_PLUGIN_MEMORY_MIB << 20),
    }
}

/// Merges `[agent]` with a route's `agent = { ... }` and checks the result.
pub(super) fn agent_settings(
    c: &mut Checker<'_>,
    at: &str,
    defaults: &schema::Agent,
    over: Option<&schema::Agent>,
    reply_types: &[String],
) -> AgentSettings {
    let o = over.cloned().unwrap_or_default();
    let d = defaults;
    let at = format!("{at}.agent");
    let mut command = o
        .command
        .clone()
        .or_else(|| d.command.clone())
        .unwrap_or_default();
    // A program given as a relative path ("agents/run.sh") is relative to routes.toml's directory;
    // a bare name ("openclaw") is looked up in PATH.
    if let Some(program) = command.first_mut()
        && program.contains('/')
        && Path::new(program.as_str()).is_relative()
    {
        *program = c.base_dir.join(program.as_str()).display().to_string();
    }
    let driver = match o.driver.as_deref().or(d.driver.as_deref()) {
        None | Some("command") => {
            if command.is_empty() || command[0].is_empty() {
                c.invalid(
                    format!("{at}.command"),
                    "no agent command: set [agent] command or the route's agent.command",
                );
            }
            Driver::Command
        }
        Some("openclaw-gateway") => gateway(c, &at, &o, d),
        Some("a2a") => a2a_agent(c, &at, &o, d, reply_types),
        Some(other) => {
            c.invalid(
                format!("{at}.driver"),
                format!("{other:?} is not \"command\", \"openclaw-gateway\" or \"a2a\""),
            );
            Driver::Command
        }
    };
    let on_failure = match o.on_failure.or_else(|| d.on_failure.clone()).as_deref() {
        None | Some("notify") => OnFailure::Notify,
        Some("ignore") => OnFailure::Ignore,
        Some("notify_with_stderr") => OnFailure::NotifyWithStderr,
        Some(other) => {
            c.invalid(
                format!("{at}.on_failure"),
                format!("{other:?} is not \"notify\", \"notify_with_stderr\" or \"ignore\""),
            );
            OnFailure::Notify
        }
    };
    let on_interrupt = match o.on_interrupt.or_else(|| d.on_interrupt.clone()).as_deref() {
        None | Some("rerun") => OnInterrupt::Rerun,
        Some("fail") => OnInterrupt::Fail,
        Some(other) => {
            c.invalid(
                format!("{at}.on_interrupt"),
                format!("{other:?} is not \"rerun\" or \"fail\""),
            );
            OnInterrupt::Rerun
        }
    };
    AgentSettings {
        command,
        stdin: o.stdin.or(d.stdin).unwrap_or(false),
        mcp_tools: o.mcp_tools.or(d.mcp_tools).unwrap_or(false),
        timeout: Duration::from_secs(c.positive(
            &format!("{at}.timeout_secs"),
            o.timeout_secs.or(d.timeout_secs),
            DEFAULT_AGENT_TIMEOUT_SECS,
        )),
        kill_grace: Duration::from_secs(
            o.kill_grace_secs
                .or(d.kill_grace_secs)
                .unwrap_or(DEFAULT_KILL_GRACE_SECS),
        ),
        max_concurrent: c.positive(
            &format!("{at}.max_concurrent"),
            o.max_concurrent.or(d.max_concurrent),
            DEFAULT_MAX_CONCURRENT,
        ),
        max_queued: c.positive(
            &format!("{at}.max_queued"),
            o.max_queued.or(d.max_queued),
            DEFAULT_MAX_QUEUED,
        ),
        output_cap: c.positive(
            &format!("{at}.output_cap_bytes"),
            o.output_cap_bytes.or(d.output_cap_bytes),
            DEFAULT_OUTPUT_CAP_BYTES,
        ),
        max_replies_per_turn: c.positive(
            &format!("{at}.max_replies_per_turn"),
            o.max_replies_per_turn.or(d.max_replies_per_turn),
            DEFAULT_MAX_REPLIES_PER_TURN,
        ),
        max_replies_per_minute: c.positive(
            &format!("{at}.max_replies_per_minute"),
            o.max_replies_per_minute.or(d.max_replies_per_minute),
            DEFAULT_MAX_REPLIES_PER_MINUTE,
        ),
        on_failure,
        on_interrupt,
        driver,
    }
}

/// The OpenClaw gateway driver's settings: the route's keys over `[agent]`'s.
fn gateway(c: &mut Checker<'_>, at: &str, o: &schema::Agent, d: &schema::Agent) -> Driver {
    let url = o.url.clone().or_else(|| d.url.clone());
    let url = match url.as_deref().map(str::parse::<http::Uri>) {
        Some(Ok(u)) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
            Some(u)
        }
        Some(_) => {
            c.invalid(format!("{at}.url"), "not an http(s) URL");
            None
        }
        None => {
            c.invalid(
                format!("{at}.url"),
                "the gateway's hook endpoint, e.g. http://127.0.0.1:18789/hooks/agent",
            );
            None
        }
    };
    let (var, file) = token_source(o, d);
    let token = if var.is_none() && file.is_none() {
        c.invalid(
            format!("{at}.token_env"),
            "the variable (or token_file, the file) holding the gateway's hooks.token",
        );
        Vec::new()
    } else {
        c.secrets(&format!("{at}.token"), var.as_ref(), file.as_ref(), None)
    };
    let agent_id = o
        .agent_id
        .clone()
        .or_else(|| d.agent_id.clone())
        .unwrap_or_else(|| "main".into());
    let session_prefix = o
        .session_prefix
        .clone()
        .or_else(|| d.session_prefix.clone())
        .unwrap_or_else(|| "hook:inbox:".into());
    match (url, token.into_iter().next()) {
        (Some(url), Some(token)) => Driver::OpenClawGateway(Box::new(Gateway {
            url,
            token,
            agent_id,
            session_prefix,
        })),
        _ => Driver::Command,
    }
}

/// The A2A driver's settings: the route's keys over `[agent]`'s. Its answers are the route's
/// replies, so their types must be among the route's `reply_types`.
fn a2a_agent(
    c: &mut Checker<'_>,
    at: &str,
    o: &schema::Agent,
    d: &schema::Agent,
    reply_types: &[String],
) -> Driver {
    let url = o.url.clone().or_else(|| d.url.clone());
    let (var, file) = token_source(o, d);
    let per_minute = o.max_calls_per_minute.or(d.max_calls_per_minute);
    let keys = ["url", "token"];
    let remote = a2a_remote(
        c,
        at,
        keys,
        url.as_deref(),
        [var.as_ref(), file.as_ref()],
        per_minute,
    );
    let Some(first) = reply_types.first() else {
        c.invalid(
            at,
            "an A2A agent's answers are the route's replies: give the route reply_types (and reply_to)",
        );
        return Driver::Command;
    };
    let mut typed = |key: &str, given: Option<String>, default: &str| -> String {
        let t = given.unwrap_or_else(|| default.to_owned());
        if !reply_types.contains(&t) {
            c.invalid(
                format!("{at}.{key}"),
                format!("{t:?} is not one of the route's reply_types"),
            );
        }
        t
    };
    let reply_type = typed(
        "reply_type",
        o.reply_type.clone().or_else(|| d.reply_type.clone()),
        first,
    );
    let question_type = typed(
        "question_type",
        o.question_type.clone().or_else(|| d.question_type.clone()),
        &reply_type,
    );
    match remote {
        Some(remote) => Driver::A2a(Box::new(A2aAgent {
            remote,
            skill: o.skill.clone().or_else(|| d.skill.clone()),
            reply_type,
            question_type,
        })),
        None => Driver::Command,
    }
}

/// A driver's token: the route's `token_env` or `token_file` over `[agent]`'s (the route's
/// either one replaces both of `[agent]`'s).
fn token_source(
    o: &schema::Agent,
    d: &schema::Agent,
) -> (Option<schema::OneOrMany>, Option<schema::OneOrMany>) {
    let (var, file) = if o.token_env.is_some() || o.token_file.is_some() {
        (&o.token_env, &o.token_file)
    } else {
        (&d.token_env, &d.token_file)
    };
    (
        var.clone().map(schema::OneOrMany::One),
        file.clone().map(schema::OneOrMany::One),
    )
}

/// A remote A2A agent's URL (its JSON-RPC endpoint, or its card when the path ends in `.json`),
/// the variables or files holding the bearer the inbox sends it, and its call budget; `keys`
/// name the URL's key and the bearer's (`KEY_env`, `KEY_file`) under `at`.
pub(super) fn a2a_remote(
    c: &mut Checker<'_>,
    at: &str,
    [url_key, bearer_key]: [&str; 2],
    url: Option<&str>,
    [bearer_env, bearer_file]: [Option<&schema::OneOrMany>; 2],
    per_minute: Option<u32>,
) -> Option<A2aRemote> {
    let url = match url.map(str::parse::<http::Uri>) {
        Some(Ok(u)) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => u,
        Some(_) => {
            c.invalid(format!("{at}.{url_key}"), "not an http(s) URL");
            return None;
        }
        None => {
            c.invalid(
                format!("{at}.{url_key}"),
                "the agent's JSON-RPC endpoint (e.g. http://host:18789/a2a/v1) or its card (…/.well-known/agent-card.json)",
            );
            return None;
        }
    };
    // A rotation lists the new one first; that is the one sent.
    let bearer = (bearer_env.is_some() || bearer_file.is_some())
        .then(|| {
            c.secrets(&format!("{at}.{bearer_key}"), bearer_env, bearer_file, None)
                .into_iter()
                .next()
        })
        .flatten();
    let max_calls_per_minute = c.positive(
        &format!("{at}.max_calls_per_minute"),
        per_minute,
        DEFAULT_A2A_CALLS_PER_MINUTE,
    );
    Some(A2aRemote {
        card: url.path().ends_with(".json"),
        url,
        bearer,
        max_calls_per_minute,
    })
}

fn is_a2a_agent(p: &schema::Peer) -> bool {
    p.a2a_url.is_some() || p.a2a_card_url.is_some()
}
