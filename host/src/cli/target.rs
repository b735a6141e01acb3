//! Which running inbox an admin command reaches, and with which secret. `--url` (or `INBOX_URL`)
//! with `INBOX_ADMIN_SECRET` (or `--admin-secret-file`) is enough: no config file is read. What
//! those do not give comes from `--config`, of which only `[server]`'s address, CA and admin
//! secret are read (`config::admin_view`), so a broken peer or route, or a peer secret missing
//! from this shell, does not stop `status`, `messages` or `reload`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::client::AdminClient;
use crate::config::{self, Secret};

/// The environment variable an admin command takes the admin secret from.
const ADMIN_SECRET_VAR: &str = "INBOX_ADMIN_SECRET";

#[derive(clap::Args, Clone, Debug)]
pub(super) struct Target {
    /// The routes file: only its [server] address, tls_ca and admin secret are read, and only
    /// for what --url and the admin secret's variable or file do not give.
    #[arg(long, short, default_value = "routes.toml")]
    pub(super) config: PathBuf,
    /// The running inbox's base URL, e.g. http://127.0.0.1:8700 (one ending in /send is taken
    /// too).
    #[arg(long, env = "INBOX_URL")]
    pub(super) url: Option<String>,
    /// A file holding the admin secret; else $INBOX_ADMIN_SECRET; else the config's.
    #[arg(long, env = "INBOX_ADMIN_SECRET_FILE")]
    pub(super) admin_secret_file: Option<PathBuf>,
    /// The CA file that verifies the inbox's certificate; else the config's tls_ca.
    #[arg(long, env = "INBOX_CA_FILE")]
    pub(super) cacert: Option<PathBuf>,
}

/// `INBOX_URL` as people write it: the base URL, or the `/send` URL a turn is given.
pub(super) fn base_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    url.strip_suffix("/send").unwrap_or(url).to_owned()
}

impl Target {
    /// The admin's client for the inbox this names.
    pub(super) fn admin(&self) -> anyhow::Result<AdminClient> {
        let secret = match &self.admin_secret_file {
            Some(path) => Some(Secret::new(
                config::secret_file::read(path)
                    .map_err(|e| anyhow::anyhow!("--admin-secret-file {e}"))?
                    .value,
            )),
            None => std::env::var(ADMIN_SECRET_VAR)
                .ok()
                .filter(|s| !s.is_empty())
                .map(Secret::new),
        };
        let (url, secret, ca) = match (&self.url, secret) {
            // Everything given: the config file is not read at all.
            (Some(url), Some(secret)) => (base_url(url), secret, self.cacert.clone()),
            (url, secret) => {
                let view = self.view().with_context(|| {
                    format!(
                        "no --url (INBOX_URL) with ${ADMIN_SECRET_VAR} or --admin-secret-file, \
                         so the address and secret come from {}",
                        self.config.display()
                    )
                })?;
                let secret = secret.or(view.admin_secret).with_context(|| {
                    format!(
                        "{} sets no admin secret ([server] admin_secret_env or \
                         admin_secret_file); or set ${ADMIN_SECRET_VAR}",
                        self.config.display()
                    )
                })?;
                let url = url.as_deref().map_or(view.base_url, base_url);
                (url, secret, self.cacert.clone().or(view.ca))
            }
        };
        AdminClient::new(&url, secret, ca.as_deref())
    }

    /// The admin's view of the config file.
    fn view(&self) -> anyhow::Result<config::AdminView> {
        let path = &self.config;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        config::admin_view(&text, base, |var| std::env::var(var).ok())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_url_is_the_base_url_in_either_form() {
        for given in [
            "http://127.0.0.1:8700",
            "http://127.0.0.1:8700/",
            "http://127.0.0.1:8700/send",
            " http://127.0.0.1:8700/send/ ",
        ] {
            assert_eq!(base_url(given), "http://127.0.0.1:8700", "{given:?}");
        }
    }
}
