//! Secrets from files (`*_file`), which is how systemd credentials (`LoadCredential=`) and
//! container secrets arrive. A file others may write is refused: anyone could put their own
//! secret in it. One others may read is taken with a warning (container secrets are often 0444).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// A secret file's value, and whether users other than its owner and group may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub value: String,
    pub others_may_read: bool,
}

/// Reads the secret at `path`: the whole file, less one trailing line break.
pub fn read(path: &Path) -> Result<SecretFile, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o002 != 0 {
        return Err(format!(
            "{}: others may write it (mode {mode:04o}), so anyone could change the secret; chmod o-w",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{}: the secret is not UTF-8 text", path.display()))?;
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(SecretFile {
        value: value.to_owned(),
        others_may_read: mode & 0o004 != 0,
    })
}

/// Writes a new secret file at `path`: `secret` and a line break, readable by its owner only
/// (0600), on disk before it returns. An existing file is never overwritten.
pub fn create(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{secret}\n").as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        (dir, path)
    }

    #[test]
    fn a_private_file_is_read_less_its_line_break() {
        let (_d, p) = file("s3cret\n", 0o600);
        assert_eq!(
            read(&p),
            Ok(SecretFile {
                value: "s3cret".into(),
                others_may_read: false
            })
        );
        let (_d, p) = file("s3cret\r\n", 0o400);
        assert_eq!(read(&p).map(|s| s.value), Ok("s3cret".into()));
        // Only one line break is taken: the rest is the secret's.
        let (_d, p) = file(" two words \n\n", 0o640);
        assert_eq!(read(&p).map(|s| s.value), Ok(" two words \n".into()));
    }

    #[test]
    fn a_created_secret_is_private_reads_back_and_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("new.secret");
        create(&p, "s3cret").expect("created");
        assert_eq!(
            std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read(&p).map(|s| s.value), Ok("s3cret".into()));
        assert!(create(&p, "other").is_err());
        assert_eq!(read(&p).map(|s| s.value), Ok("s3cret".into()));
    }

    #[test]
    fn a_file_others_may_write_is_refused_and_one_they_may_read_is_flagged() {
        for mode in [0o666, 0o602, 0o646] {
            let (_d, p) = file("s3cret", mode);
            let e = read(&p).expect_err("refused");
            assert!(e.contains("others may write it"), "{mode:o}: {e}");
        }
        let (_d, p) = file("s3cret", 0o444);
        assert_eq!(read(&p).map(|s| s.others_may_read), Ok(true));
        let missing = read(Path::new("/nonexistent/secret")).expect_err("missing");
        assert!(missing.contains("/nonexistent/secret"), "{missing}");
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            read(dir.path())
                .expect_err("a dir")
                .contains("not a regular file")
        );
    }
}
