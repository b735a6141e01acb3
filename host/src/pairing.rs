//! Pairing's changes to this inbox's own files: a peer's two key files (0600, in `secrets/peers/`
//! beside routes.toml, a 0700 directory) and routes.toml itself, edited by `config::edit` so its
//! comments and layout stay. The new text is validated before it is written, and written
//! atomically (a new file renamed over the old, then the directory synced); the caller reloads,
//! then keeps the change ([`Written::keep`]) or puts everything back ([`Written::undo`]), so a
//! failed pairing leaves no half-added peer.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use tokio::sync::{Mutex, MutexGuard};

use crate::config::edit::{self, EditError, NewPeer};
use crate::config::{Config, ConfigErrors};
use crate::reload::{Outcome, Reloader};
use crate::signature::SigningKey;

/// Where pairing keeps the peers' keys, relative to routes.toml's directory.
pub const KEY_DIR: &str = "secrets/peers";

/// A peer's two keys (`whsec_…`): one checks what it sends us, one signs what we send it.
#[derive(Clone)]
pub struct Keys {
    pub receive: String,
    pub send: String,
}

/// Why a change to the files was not made (nothing was left changed).
#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    #[error(transparent)]
    Edit(#[from] EditError),
    #[error("the config pairing would write is not valid: {0}")]
    Invalid(ConfigErrors),
    #[error("{0}")]
    Io(String),
    #[error("the reload that would apply it failed, so it was undone: {0}")]
    Reload(String),
}

fn io(what: &str, path: &Path, e: std::io::Error) -> PairingError {
    PairingError::Io(format!("{what} {}: {e}", path.display()))
}

/// routes.toml and its directory, edited one change at a time.
pub struct PeerFiles {
    config: PathBuf,
    one_at_a_time: Mutex<()>,
}

/// A change made to the files, to keep or to undo once the reload has said whether it took.
#[must_use = "keep or undo the change"]
pub struct Written<'a> {
    config: &'a Path,
    before: String,
    /// Key files this change made (removed by an undo).
    made: Vec<PathBuf>,
    /// Key files this change retires (removed when it is kept).
    retired: Vec<PathBuf>,
    _lock: MutexGuard<'a, ()>,
}

impl Written<'_> {
    /// The change stays; the key files of a removed peer go.
    pub fn keep(self) {
        for f in &self.retired {
            let _ = std::fs::remove_file(f);
        }
    }

    /// Puts routes.toml back as it was and removes the key files the change made.
    pub fn undo(self) -> Result<(), PairingError> {
        replace(self.config, &self.before)?;
        for f in &self.made {
            let _ = std::fs::remove_file(f);
        }
        Ok(())
    }
}

/// Writes `text` over `path` atomically, with the file's mode kept.
fn replace(path: &Path, text: &str) -> Result<(), PairingError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or("routes.toml".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.pairing"));
    let mode = std::fs::metadata(path).map_or(0o640, |m| m.permissions().mode() & 0o777);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("write", &tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("replace", path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl PeerFiles {
    pub fn new(config: &Path) -> Self {
        PeerFiles {
            config: config.to_owned(),
            one_at_a_time: Mutex::new(()),
        }
    }

    fn dir(&self) -> &Path {
        self.config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    fn read(&self) -> Result<String, PairingError> {
        std::fs::read_to_string(&self.config).map_err(|e| io("read", &self.config, e))
    }

    /// The new text, if it makes a valid config (secrets from this process's environment).
    fn validate(&self, text: &str) -> Result<(), PairingError> {
        let base = std::fs::canonicalize(self.dir()).unwrap_or_else(|_| self.dir().to_owned());
        Config::parse(text, &base, |v| std::env::var(v).ok())
            .map(|_| ())
            .map_err(PairingError::Invalid)
    }

    /// Adds peer `name` at `url` with its `keys`, our agents allowed to send it `sends`.
    pub async fn add(
        &self,
        name: &str,
        url: &str,
        keys: &Keys,
        sends: &[String],
    ) -> Result<Written<'_>, PairingError> {
        let lock = self.one_at_a_time.lock().await;
        let before = self.read()?;
        let rel = |end: &str| format!("{KEY_DIR}/{name}.{end}");
        let peer = NewPeer {
            name: name.to_owned(),
            url: url.to_owned(),
            receive_key_file: rel("receive"),
            send_key_file: rel("send"),
            sends: sends.to_vec(),
        };
        let text = edit::add_peer(&before, &peer)?;
        let dir = self.dir().join(KEY_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io("create", &dir, e))?;
        let mut made = Vec::new();
        let written = (|| {
            for (end, secret) in [("receive", &keys.receive), ("send", &keys.send)] {
                let path = self.dir().join(rel(end));
                crate::config::secret_file::create(&path, secret)
                    .map_err(|e| io("create", &path, e))?;
                made.push(path);
            }
            self.validate(&text)?;
            replace(&self.config, &text)
        })();
        match written {
            Ok(()) => Ok(Written {
                config: &self.config,
                before,
                made,
                retired: Vec::new(),
                _lock: lock,
            }),
            Err(e) => {
                for f in &made {
                    let _ = std::fs::remove_file(f);
                }
                Err(e)
            }
        }
    }

    /// Removes peer `name`; its key files go when the change is kept, and only those in
    /// [`KEY_DIR`] (files an operator named elsewhere are theirs).
    pub async fn remove(&self, name: &str) -> Result<Written<'_>, PairingError> {
        let lock = self.one_at_a_time.lock().await;
        let before = self.read()?;
        let (text, files) = edit::remove_peer(&before, name)?;
        self.validate(&text)?;
        replace(&self.config, &text)?;
        let retired = files
            .iter()
            .filter(|f| Path::new(f).parent() == Some(Path::new(KEY_DIR)))
            .map(|f| self.dir().join(f))
            .collect();
        Ok(Written {
            config: &self.config,
            before,
            made: Vec::new(),
            retired,
            _lock: lock,
        })
    }
}

/// Pairing's changes applied: the files written, then the config reloaded, and the files put
/// back if the reload fails. Also its client, for the other inbox's `/pair/*`.
pub struct Pairing {
    files: PeerFiles,
    reloader: Arc<Reloader>,
    client: crate::tls::HttpsClient,
}

/// How long a call to the other inbox may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Pairing {
    pub fn new(reloader: Arc<Reloader>) -> Self {
        Pairing {
            files: PeerFiles::new(reloader.path()),
            reloader,
            client: crate::tls::client(),
        }
    }

    /// Reloads with `written` on disk; keeps it if the reload took, else undoes it.
    async fn apply(
        &self,
        written: Written<'_>,
        why: &str,
        allow_empty: bool,
    ) -> Result<String, PairingError> {
        match self.reloader.reload(why, allow_empty).await {
            Ok(Outcome::Swapped(hash)) => {
                written.keep();
                Ok(hash)
            }
            Ok(Outcome::Unchanged) => {
                written.keep();
                Ok(self.reloader.status().config_hash)
            }
            Err(e) => {
                written.undo()?;
                // The file is as it was: the reload of it puts the config in force back too.
                let _ = self.reloader.reload("pairing undone", true).await;
                Err(PairingError::Reload(e.to_string()))
            }
        }
    }

    /// Adds peer `name` and makes it live; the config hash in force after.
    pub async fn add(
        &self,
        name: &str,
        url: &str,
        keys: &Keys,
        sends: &[String],
    ) -> Result<String, PairingError> {
        let written = self.files.add(name, url, keys, sends).await?;
        self.apply(written, "peer paired", false).await
    }

    /// Removes peer `name` and makes it so; the config hash in force after. Removing the last
    /// peer is allowed: it is what was asked.
    pub async fn remove(&self, name: &str) -> Result<String, PairingError> {
        let written = self.files.remove(name).await?;
        self.apply(written, "peer removed", true).await
    }

    /// POSTs `body` (JSON) to `url`, signed with `key` if given; the status and the body.
    pub async fn post(
        &self,
        url: &str,
        body: &serde_json::Value,
        key: Option<&SigningKey>,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let bytes = Bytes::from(body.to_string());
        let mut req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("agent-inbox/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(key) = key {
            let id = format!("pair_{}", crate::model::new_id());
            let now = crate::model::now_ms() / 1000;
            req = req
                .header("webhook-id", &id)
                .header("webhook-timestamp", now)
                .header(
                    "webhook-signature",
                    crate::signature::sign(std::slice::from_ref(key), &id, now, &bytes),
                );
        }
        let req = req.body(Full::new(bytes)).map_err(|e| e.to_string())?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("cannot reach {url}: {e}"))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| format!("{url}: no answer within {} s", CALL_TIMEOUT.as_secs()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "# hand-written\n[server]\nadmin_secret = \"admin-secret-0123\"\n\n\
        [agents.main]\ntoken = \"main-token-0123456789\"\nmay_send = []\n\n\
        [agent]\ncommand = [\"true\"]\n\n\
        [routes.main]\nfrom = []  # peers\ntypes = [\"TASK\"]\nreply_types = [\"DONE\"]\n\
        reply_to = []\nagent_id = \"main\"\n";

    fn keys() -> Keys {
        Keys {
            receive: "whsec_c2lnbmluZyBrZXkgb2YgdG9ueSwgdGhpcnR5LXR3byE=".into(),
            send: "whsec_YSBuZXcgc2lnbmluZyBrZXkgZm9yIHRvbnksIDMyIGI=".into(),
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, CONFIG).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        (dir, path)
    }

    async fn add_bob<'a>(files: &'a PeerFiles, keys: &Keys) -> Result<Written<'a>, PairingError> {
        files
            .add(
                "bob",
                "https://bob.example/message/alice",
                keys,
                &["TASK".to_owned()],
            )
            .await
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn a_peer_added_then_kept_then_removed_leaves_the_file_as_it_was() {
        let (dir, path) = setup();
        let files = PeerFiles::new(&path);
        add_bob(&files, &keys()).await.expect("added").keep();
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# hand-written\n") && text.contains("from = [\"bob\"]  # peers"));
        assert_eq!(mode(&path), 0o640, "the file keeps its mode");
        let keys_dir = dir.path().join(KEY_DIR);
        assert_eq!(mode(&keys_dir), 0o700);
        assert_eq!(mode(&keys_dir.join("bob.receive")), 0o600);
        let c = Config::load(&path).expect("valid");
        assert!(c.peers["bob"].send_secrets[0].matches(keys().send.as_bytes()));
        // Twice: refused, nothing changed.
        assert!(matches!(
            add_bob(&files, &keys()).await,
            Err(PairingError::Edit(EditError::Exists(_)))
        ));
        files.remove("bob").await.expect("removed").keep();
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("bob"), "{text}");
        assert!(!keys_dir.join("bob.receive").exists() && !keys_dir.join("bob.send").exists());
    }

    #[tokio::test]
    async fn an_undone_or_invalid_change_leaves_nothing_behind() {
        let (dir, path) = setup();
        let files = PeerFiles::new(&path);
        // The reload failed: undo.
        add_bob(&files, &keys())
            .await
            .expect("added")
            .undo()
            .expect("undone");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), CONFIG);
        assert!(!dir.path().join(KEY_DIR).join("bob.receive").exists());
        // A key that is not a key: the config would not validate, so nothing is written.
        let bad = Keys {
            receive: "not-a-key".into(),
            ..keys()
        };
        let e = add_bob(&files, &bad).await.err().expect("refused");
        assert!(matches!(e, PairingError::Invalid(_)), "{e}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), CONFIG);
        assert!(!dir.path().join(KEY_DIR).join("bob.send").exists());
    }
}
