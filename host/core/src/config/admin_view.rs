//! What a command-line client needs of routes.toml to reach the running inbox as its admin: the
//! address (`public_url`, else `listen`), the CA that verifies its certificate, and the admin
//! secret. Only `[server]` is read, and when the file is not valid TOML, only the `[server]`
//! table's own lines: a broken peer or route, or a peer's secret missing from this shell, must
//! not stop `status`, `messages` or `reload` when the operator needs them most.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{DEFAULT_LISTEN, Secret, secret_file};

/// The running inbox as its admin reaches it.
#[derive(Debug, Clone)]
pub struct AdminView {
    /// Its base URL, e.g. `http://127.0.0.1:8700`.
    pub base_url: String,
    /// The current admin secret, if the file gives one.
    pub admin_secret: Option<Secret>,
    /// `tls_ca`, resolved against the file's directory.
    pub ca: Option<PathBuf>,
}

/// Reads the admin's view of config `text`; `env` looks up `admin_secret_env`, and
/// `admin_secret_file` is read relative to `base_dir`.
pub fn admin_view(
    text: &str,
    base_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<AdminView, String> {
    let server = match text.parse::<toml::Table>() {
        Ok(mut t) => t.remove("server"),
        Err(whole) => server_lines(text)
            .parse::<toml::Table>()
            .map_err(|_| format!("not valid TOML, even its [server] table: {whole}"))?
            .remove("server"),
    };
    let server = match server {
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err("server is not a table".into()),
        None => toml::Table::new(),
    };
    let text_of = |key: &str| -> Result<Option<String>, String> {
        match server.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            // During a rotation the current one is listed first.
            Some(toml::Value::Array(a)) => match a.first() {
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                _ => Err(format!("server.{key}: not a string or a list of strings")),
            },
            Some(_) => Err(format!("server.{key}: not a string")),
        }
    };
    let base_url = match text_of("public_url")? {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let listen = text_of("listen")?.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
            let mut addr: SocketAddr = listen
                .parse()
                .map_err(|_| format!("server.listen: {listen:?} is not an address"))?;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let scheme = if server.contains_key("tls_cert") {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{addr}")
        }
    };
    let admin_secret = if let Some(var) = text_of("admin_secret_env")? {
        let value = env(&var).filter(|v| !v.is_empty()).ok_or_else(|| {
            format!("server.admin_secret_env: environment variable {var} is not set")
        })?;
        Some(Secret::new(value))
    } else if let Some(path) = text_of("admin_secret_file")? {
        let file = secret_file::read(&base_dir.join(path))
            .map_err(|e| format!("server.admin_secret_file: {e}"))?;
        Some(Secret::new(file.value))
    } else {
        text_of("admin_secret")?.map(Secret::new)
    };
    Ok(AdminView {
        base_url,
        admin_secret,
        ca: text_of("tls_ca")?.map(|p| base_dir.join(p)),
    })
}

/// The `[server]` table's lines alone: from its header to the next table's.
fn server_lines(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        let head = line.trim_start();
        if head.starts_with('[') {
            inside = head.starts_with("[server]");
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "[server]\nlisten = \"0.0.0.0:9000\"\nadmin_secret_env = \"ADMIN\"\n";

    fn env(var: &str) -> Option<String> {
        (var == "ADMIN").then(|| "the-admin-secret".to_owned())
    }

    #[test]
    fn only_the_server_table_is_read_so_a_broken_peer_stops_nothing() {
        // A peer whose secret is not in this shell, and a route that breaks every rule.
        let text = format!(
            "{SERVER}[peers.bob]\nurl = \"http://x\"\nsecret_env = \"NOT_SET\"\n\
             [routes.r]\nfrom = [\"nobody\"]\nbogus = 1\n"
        );
        let v = admin_view(&text, Path::new("/etc/inbox"), env).expect("read");
        assert_eq!(v.base_url, "http://127.0.0.1:9000");
        assert!(
            v.admin_secret
                .is_some_and(|s| s.matches(b"the-admin-secret"))
        );
        // Not even valid TOML after [server]: its own lines still are.
        let cut = format!("{SERVER}[peers.bob\nurl = \"http://x");
        let v = admin_view(&cut, Path::new("/etc/inbox"), env).expect("read");
        assert_eq!(v.base_url, "http://127.0.0.1:9000");
        let broken_server = "[server]\nlisten = \n";
        assert!(
            admin_view(broken_server, Path::new("."), env)
                .expect_err("no")
                .contains("not valid TOML")
        );
    }

    #[test]
    fn public_url_tls_and_each_secret_source_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("admin");
        std::fs::write(&secret, "from-a-file\n").expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let text = "[server]\npublic_url = \"https://inbox.example/\"\n\
                    admin_secret_file = [\"admin\", \"old\"]\ntls_ca = \"ca.pem\"\n";
        let v = admin_view(text, dir.path(), |_| None).expect("read");
        assert_eq!(v.base_url, "https://inbox.example");
        assert!(v.admin_secret.is_some_and(|s| s.matches(b"from-a-file")));
        assert_eq!(v.ca, Some(dir.path().join("ca.pem")));
        let tls =
            "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\nadmin_secret = \"lit\"\n";
        let v = admin_view(tls, dir.path(), |_| None).expect("read");
        assert_eq!(v.base_url, "https://127.0.0.1:8443");
        let e = admin_view(SERVER, dir.path(), |_| None).expect_err("unset");
        assert!(e.contains("ADMIN is not set"), "{e}");
        let none = admin_view("", dir.path(), |_| None).expect("defaults");
        assert_eq!(none.base_url, format!("http://{DEFAULT_LISTEN}"));
        assert!(none.admin_secret.is_none());
    }
}
