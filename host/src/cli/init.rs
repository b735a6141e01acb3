//! `agent-inbox init`: a working, commented routes.toml for one local agent, with its secrets in
//! files beside it (0600, in a 0700 `secrets/`): the admin secret and the agent's own token. The
//! agent's route and a mailbox for the answers to what it sends have no peers yet: pairing
//! (`agent-inbox peer invite` / `join`) adds each peer. It never overwrites anything.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::token::random_secret;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum AgentKind {
    /// `openclaw agent --agent ID -m {prompt}`: a turn of an OpenClaw agent through its gateway.
    Openclaw,
    /// The OpenClaw gateway's `/hooks/agent` endpoint (driver `openclaw-gateway`).
    Gateway,
    /// Any command: give it after `--`; `{prompt}` in it is replaced by the prompt (without
    /// one, the prompt comes on stdin).
    Command,
}

#[derive(clap::Args)]
pub(super) struct Args {
    /// The directory to write into (routes.toml, secrets/); created if missing.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Which agent runs the turns.
    #[arg(long, value_enum, default_value = "openclaw")]
    agent: AgentKind,
    /// The local agent's name here, and (for OpenClaw) the OpenClaw agent's id.
    #[arg(long, default_value = "main")]
    name: String,
    /// The address to listen on; another machine needs one it can reach (e.g. 0.0.0.0:8700,
    /// or a VPN address).
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: String,
    /// The URL other machines reach this inbox at (invites carry it); by default
    /// http://LISTEN.
    #[arg(long)]
    public_url: Option<String>,
    /// Where the inbox keeps its state (`[server] data_dir`); by default `data` beside
    /// routes.toml.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// With `--agent command`: the command and its arguments.
    #[arg(last = true)]
    command: Vec<String>,
}

/// A TOML string.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML array of strings.
fn list(items: &[String]) -> String {
    toml::Value::Array(items.iter().cloned().map(toml::Value::String).collect()).to_string()
}

/// The routes.toml `init` writes.
fn routes_toml(args: &Args) -> anyhow::Result<String> {
    let name = &args.name;
    let public_url = match &args.public_url {
        Some(u) => format!("public_url = {}\n", quoted(u.trim_end_matches('/'))),
        None => format!(
            "# public_url = \"https://inbox.example:8700\"  # else http://{}\n",
            args.listen
        ),
    };
    let data_dir = match &args.data_dir {
        Some(d) => format!("data_dir = {}\n", quoted(&d.display().to_string())),
        None => String::new(),
    };
    let agent = match args.agent {
        AgentKind::Openclaw => format!(
            "# Each turn is one `openclaw agent` run through the OpenClaw gateway on this machine.\n\
             command = {}\n\
             timeout_secs = 600\n",
            list(&[
                "openclaw".into(),
                "agent".into(),
                "--agent".into(),
                name.clone(),
                "-m".into(),
                "{prompt}".into(),
            ])
        ),
        AgentKind::Gateway => format!(
            "# Each turn goes to the OpenClaw gateway's hook endpoint. Put the gateway's hooks.token\n\
             # in secrets/openclaw-hooks.token (chmod 600) before `serve`.\n\
             driver = \"openclaw-gateway\"\n\
             url = \"http://127.0.0.1:18789/hooks/agent\"\n\
             token_file = \"secrets/openclaw-hooks.token\"\n\
             agent_id = {}\n\
             timeout_secs = 600\n",
            quoted(name)
        ),
        AgentKind::Command => {
            anyhow::ensure!(
                !args.command.is_empty(),
                "--agent command needs the command after `--`, e.g. \
                 `agent-inbox init --agent command -- my-agent --prompt {{prompt}}`"
            );
            let stdin = if args.command.iter().any(|a| a.contains("{prompt}")) {
                ""
            } else {
                "stdin = true  # no {prompt} in the command: the prompt comes on stdin\n"
            };
            format!(
                "command = {}\n{stdin}timeout_secs = 600\n",
                list(&args.command)
            )
        }
    };
    Ok(format!(
        r#"# routes.toml, written by `agent-inbox init`. Check it with `agent-inbox check`, run the
# inbox with `agent-inbox serve`. Every key is in the README ("routes.toml").
#
# To talk to an inbox on another machine: `agent-inbox peer invite NAME` here prints one line;
# `agent-inbox peer join '<that line>'` there. Pairing adds the peer below (to each route's
# `from` and `reply_to`, and to the agent's `may_send`) and reloads, on both sides.

[server]
listen = {listen}
{public_url}{data_dir}# The admin secret (for the command line and the console) is in this file, never here.
admin_secret_file = "secrets/admin.secret"

# What runs a turn: the agent answers each message of route "{name}" (below).
[agent]
{agent}
# The local agent: its own token (in the file) lets it start conversations (`agent-inbox send`,
# or the MCP tools of `agent-inbox mcp`) within may_send, and answer its route's messages.
[agents.{name}]
token_file = "secrets/{name}.token"
may_send = []  # pairing adds {{ to = ["PEER"], types = ["TASK"] }}

# Messages for the agent: a peer sends a TASK, the agent's turn answers DONE.
[routes.{name}]
from = []      # pairing adds each peer
types = ["TASK"]
reply_types = ["DONE"]
reply_to = []  # pairing adds each peer
agent_id = "{name}"

# The answers to what the agent sends: kept here for `send --wait`, `ask` and the console.
# TURN_FAILED is what a peer sends when its agent could not answer.
[routes.answers]
from = []      # pairing adds each peer
types = ["DONE", "TURN_FAILED"]
mailbox = true
"#,
        listen = quoted(&args.listen),
    ))
}

/// Creates a 0600 secret file; fails if it exists.
fn create_private(path: &Path, secret: &str) -> anyhow::Result<()> {
    crate::config::secret_file::create(path, secret)
        .with_context(|| format!("create {}", path.display()))
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        crate::config::is_valid_name(&args.name),
        "--name {:?}: a name is letters, digits, '_', '-' or '.'",
        args.name
    );
    let text = routes_toml(&args)?;
    let config = args.dir.join("routes.toml");
    let secrets = args.dir.join("secrets");
    let admin = secrets.join("admin.secret");
    let token = secrets.join(format!("{}.token", args.name));
    // Nothing is overwritten: an existing file stops everything before anything is written.
    for p in [&config, &admin, &token] {
        if p.exists() {
            anyhow::bail!(
                "{} exists; init writes a new inbox and overwrites nothing (start it with \
                 `agent-inbox serve --config {}`)",
                p.display(),
                config.display()
            );
        }
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&secrets)
        .with_context(|| format!("create {}", secrets.display()))?;
    create_private(&admin, &random_secret())?;
    create_private(&token, &random_secret())?;
    // routes.toml last: a config that exists has its secrets.
    let tmp = args.dir.join(".routes.toml.init");
    std::fs::write(&tmp, &text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &config).with_context(|| format!("write {}", config.display()))?;
    let shown = config.display();
    outln!("wrote {shown}, {} and {}", admin.display(), token.display());
    if args.agent == AgentKind::Gateway {
        outln!(
            "put the OpenClaw gateway's hooks.token in {} (chmod 600)",
            secrets.join("openclaw-hooks.token").display()
        );
    }
    outln!("start it:   agent-inbox serve --config {shown}");
    outln!("pair it:    agent-inbox peer invite NAME --config {shown}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(agent: AgentKind, command: &[&str]) -> Args {
        Args {
            dir: PathBuf::from("."),
            agent,
            name: "main".into(),
            listen: "127.0.0.1:8700".into(),
            public_url: None,
            data_dir: Some(PathBuf::from("/var/lib/agent-inbox")),
            command: command.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn every_kind_of_agent_gives_a_config_that_validates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).expect("mkdir");
        for f in ["admin.secret", "main.token", "openclaw-hooks.token"] {
            create_private(&secrets.join(f), &random_secret()).expect("write");
        }
        for (kind, command) in [
            (AgentKind::Openclaw, &[][..]),
            (AgentKind::Gateway, &[]),
            (AgentKind::Command, &["my-agent", "--prompt", "{prompt}"]),
            (AgentKind::Command, &["my-agent"]),
        ] {
            let text = routes_toml(&args(kind, command)).expect("text");
            let c = crate::config::Config::parse(&text, dir.path(), |_| None)
                .unwrap_or_else(|e| panic!("{kind:?}: {e}\n{text}"));
            assert!(c.routes["main"].from.is_empty(), "no peers yet");
            assert!(c.agents["main"].may_send.is_empty());
        }
        assert!(routes_toml(&args(AgentKind::Command, &[])).is_err());
    }

    #[test]
    fn pairing_an_inits_config_gives_a_config_whose_peer_talks_to_the_agent() {
        use crate::config::edit::{NewPeer, add_peer};
        let dir = tempfile::tempdir().expect("tempdir");
        let secrets = dir.path().join("secrets");
        std::fs::create_dir_all(secrets.join("peers")).expect("mkdir");
        create_private(&secrets.join("admin.secret"), "a").expect("write");
        create_private(&secrets.join("main.token"), "t").expect("write");
        for (f, key) in [
            (
                "bob.receive",
                "whsec_c2lnbmluZyBrZXkgb2YgdG9ueSwgdGhpcnR5LXR3byE=",
            ),
            (
                "bob.send",
                "whsec_YSBuZXcgc2lnbmluZyBrZXkgZm9yIHRvbnksIDMyIGI=",
            ),
        ] {
            create_private(&secrets.join("peers").join(f), key).expect("write");
        }
        let text = routes_toml(&args(AgentKind::Command, &["true"])).expect("text");
        let peer = NewPeer {
            name: "bob".into(),
            url: "https://bob.example/message/alice".into(),
            receive_key_file: "secrets/peers/bob.receive".into(),
            send_key_file: "secrets/peers/bob.send".into(),
            sends: vec!["TASK".into()],
        };
        let paired = add_peer(&text, &peer).expect("edit");
        let c = crate::config::Config::parse(&paired, dir.path(), |_| None)
            .unwrap_or_else(|e| panic!("{e}\n{paired}"));
        assert_eq!(c.routes["main"].from, ["bob"]);
        assert_eq!(c.routes["answers"].from, ["bob"]);
        assert!(c.agents["main"].may_send("bob", "TASK"));
        assert!(
            c.peers["bob"].send_secrets[0]
                .matches(b"whsec_YSBuZXcgc2lnbmluZyBrZXkgZm9yIHRvbnksIDMyIGI=")
        );
    }
}
