//! `agent-inbox peer invite | join | list | remove`: pairing two inboxes with one line, through
//! the running inboxes (which write their own routes.toml and reload).

use std::process::ExitCode;

use serde_json::json;

use super::print;
use super::target::Target;
use crate::wire::{Invited, Joined, PeerList, PeerRemoved};

#[derive(clap::Subcommand)]
pub(super) enum Command {
    /// Invite another inbox to pair: prints the one line to run on the other machine. The code
    /// in it works once, until it expires.
    Invite {
        /// The name the other inbox gets here.
        name: String,
        /// The name to suggest the other inbox gives this one (default: this host's name).
        #[arg(long = "as")]
        as_name: Option<String>,
        /// How long the invite works, e.g. 30m, 1h, 2d.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        #[command(flatten)]
        target: Target,
    },
    /// Join the inbox an invite names: each side then has the other as a peer (its own key for
    /// each direction), and its local agents may message it.
    Join {
        /// The invite line (`ainv1.…`).
        invite: String,
        /// The name the inviting inbox gets here (default: the one the invite suggests).
        #[arg(long = "as")]
        as_name: Option<String>,
        /// Join over plain http: the keys cross the network in the clear.
        #[arg(long)]
        insecure: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the peers: where each is, how it authenticates, which routes it reaches.
    List {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a peer from routes.toml (its table, its name in every route and may_send, the
    /// key files pairing wrote) and reload.
    Remove {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

fn peers_table(list: &PeerList) -> String {
    if list.peers.is_empty() {
        return "no peers\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .peers
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.url
                    .clone()
                    .unwrap_or_else(|| "(calls in over A2A only)".into()),
                format!(
                    "{}{}",
                    p.auth,
                    if p.own_keys { ", a key each way" } else { "" }
                ),
                if p.routes.is_empty() {
                    "none".to_owned()
                } else {
                    p.routes.join(", ")
                },
            ]
        })
        .collect();
    print::table(&["PEER", "URL", "AUTH", "ROUTES"], &rows)
}

pub(super) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let post = http::Method::POST;
    match command {
        Command::Invite {
            name,
            as_name,
            ttl,
            target,
        } => {
            let body = json!({"peer": name, "as": as_name, "ttl_secs": ttl.as_secs()});
            let r: Invited = target
                .admin()?
                .expect(post, "/admin/peers/invite", Some(body))
                .await?;
            if r.insecure {
                eprintln!(
                    "warning: {} is plain http: the pairing keys will cross the network in the \
                     clear (set [server] public_url to an https URL, or pair over a VPN you trust)",
                    r.url
                );
            }
            let expires = print::time(Some(r.expires_at));
            eprintln!("on the other machine, before {expires}, run:");
            outln!("{}", r.command);
        }
        Command::Join {
            invite,
            as_name,
            insecure,
            target,
        } => {
            let body = json!({"invite": invite, "as": as_name, "insecure": insecure});
            let r: Joined = target
                .admin()?
                .expect(post, "/admin/peers/join", Some(body))
                .await?;
            outln!("paired with {} ({})", r.peer, r.url);
        }
        Command::List { json, target } => {
            let list: PeerList = target
                .admin()?
                .expect(http::Method::GET, "/admin/peers", None)
                .await?;
            print::list(&list, json, peers_table)?;
        }
        Command::Remove { name, target } => {
            let path = format!(
                "/admin/peers/{}/remove",
                percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC)
            );
            let r: PeerRemoved = target.admin()?.expect(post, &path, None).await?;
            outln!("removed {} (config {})", r.peer, r.config_hash);
        }
    }
    Ok(ExitCode::SUCCESS)
}
