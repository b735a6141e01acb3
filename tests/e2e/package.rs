//! The Debian package: cargo-deb packages the binary the tests already built (`--no-build
//! --profile dev`, so there is no second wasmtime build; a release is the same recipe), `dpkg -i`
//! installs it, `systemd-analyze verify` checks its unit, the installed binary serves the config
//! the package wrote as the package's user, and `dpkg --purge` takes everything away.
//!
//! It changes the machine (a package, a system user, /etc/agent-inbox), so it needs root, as CI
//! has. Without root or cargo-deb it says so and passes, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agent_inbox_tests::*;

const UNIT: &str = "/usr/lib/systemd/system/agent-inbox.service";
const CONFIG: &str = "/etc/agent-inbox/routes.toml";

/// Runs `cmd`; its success, and its stdout and stderr together.
fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Why this machine cannot run the test, if it cannot.
fn cannot_run() -> Option<String> {
    let root = output(Command::new("id").arg("-u")).1.trim() == "0";
    if !root {
        return Some("not root: dpkg -i needs it".into());
    }
    match Command::new("cargo").args(["deb", "--version"]).output() {
        Ok(o) if o.status.success() => None,
        _ => Some("cargo-deb is not installed (.ci/run installs it)".into()),
    }
}

/// Purges the package when the test ends, however it ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "agent-inbox"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deb_installs_a_verified_hardened_service_that_serves_and_purges_clean() {
    if let Some(why) = cannot_run() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but {why}: the package test cannot run"
        );
        eprintln!("SKIPPED: {why}: the package test did not run");
        return;
    }
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let built = root.join("target/debug/agent-inbox");
    assert!(
        built.is_file(),
        "{} is not built (cargo test --workspace builds it)",
        built.display()
    );
    let out_dir = tempfile::tempdir().unwrap();
    let (ok, said) = output(
        Command::new("cargo")
            .current_dir(&root)
            .args(["deb", "-p", "agent-inbox", "--no-build", "--profile", "dev"])
            .arg("--output")
            .arg(out_dir.path()),
    );
    assert!(ok, "cargo deb: {said}");
    let deb = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    let size = std::fs::metadata(&deb).unwrap().len();
    eprintln!(
        "--- {}: {:.1} MB",
        deb.file_name().unwrap().to_string_lossy(),
        size as f64 / 1e6
    );

    // A leftover from an interrupted run goes first.
    let _ = Command::new("dpkg")
        .args(["--purge", "agent-inbox"])
        .output();
    let installed = Installed;
    let (ok, said) = output(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(ok, "dpkg -i: {said}");
    assert!(
        said.contains("wrote /etc/agent-inbox/routes.toml"),
        "{said}"
    );
    let (ok, verify) = output(Command::new("systemd-analyze").args(["verify", UNIT]));
    eprintln!(
        "--- systemd-analyze verify {UNIT}: {}\n{verify}",
        if ok { "ok" } else { "FAILED" }
    );
    assert!(ok, "{verify}");
    let unit = std::fs::read_to_string(UNIT).unwrap();
    for hardening in [
        "User=agent-inbox",
        "StateDirectory=agent-inbox",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "ReadWritePaths=/etc/agent-inbox",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(hardening), "the unit lacks {hardening}");
    }
    // The binary is stripped: far smaller than the one it was made from.
    let shipped = std::fs::metadata("/usr/bin/agent-inbox").unwrap().len();
    assert!(shipped < std::fs::metadata(&built).unwrap().len() / 2);
    let (_, ls) = output(Command::new("stat").args([
        "-c",
        "%U %a %n",
        "/etc/agent-inbox",
        "/etc/agent-inbox/secrets/admin.secret",
        "/var/lib/agent-inbox",
    ]));
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        [
            "agent-inbox 750 /etc/agent-inbox",
            "agent-inbox 600 /etc/agent-inbox/secrets/admin.secret",
            "agent-inbox 750 /var/lib/agent-inbox",
        ],
        "{ls}"
    );

    // The installed binary serves the config the package wrote, as the package's user (on a
    // free port, so no other test's server is in the way).
    let addr = unused_addr();
    let config = std::fs::read_to_string(CONFIG).unwrap();
    assert!(
        config.contains("data_dir = \"/var/lib/agent-inbox\""),
        "{config}"
    );
    std::fs::write(CONFIG, config.replace("127.0.0.1:8700", &addr.to_string())).unwrap();
    // setpriv execs the server itself (no process in between), so its pid gets the SIGTERM.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut serve = Command::new("setpriv")
        .args([
            "--reuid=agent-inbox",
            "--regid=agent-inbox",
            "--init-groups",
            "--",
        ])
        .args(["/usr/bin/agent-inbox", "serve", "--config", CONFIG])
        .env("HOME", "/var/lib/agent-inbox")
        .current_dir("/var/lib/agent-inbox")
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("setpriv");
    let ready = format!("http://{addr}/readyz");
    eventually(
        Duration::from_secs(20),
        "the packaged inbox ready",
        || async {
            try_request("GET", &ready, &[], "")
                .await
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .await;
    let (ok, status) =
        output(Command::new("/usr/bin/agent-inbox").args(["status", "--json", "--config", CONFIG]));
    assert!(ok && status.contains("config_hash"), "{status}");
    assert!(
        Path::new("/var/lib/agent-inbox/inbox.sqlite3").is_file(),
        "the state is in the StateDirectory"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status();
    let exited = serve.wait().unwrap();
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(exited.success(), "serve exited with {exited}: {log}");

    drop(installed);
    assert!(!Path::new("/usr/bin/agent-inbox").exists());
    assert!(!Path::new("/etc/agent-inbox").exists());
    let (known, _) = output(Command::new("id").arg("agent-inbox"));
    assert!(!known, "the purge removes the user");
}
