//! The inbox's own TLS, with a CA and certificates made here: two inboxes talk over HTTPS (each
//! trusting the other's private CA with `ca_file`), an agent replies by running the curl command
//! of its instructions as written, and a renewed certificate is served after the reload that
//! reads it, while a broken one is refused and the old one stays.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent_inbox::tls::{HttpsClient, client_trusting};
use agent_inbox_tests::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A private CA, and the files of certificates it signed.
struct Pki {
    dir: PathBuf,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "agent-inbox test CA");
        let key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
        Pki {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for 127.0.0.1 and writes `name.pem` and `name.key` (by rename, as
    /// a renewal tool does); returns the certificate's DER.
    fn issue(&self, name: &str) -> Vec<u8> {
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".into()])
                .expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        write_by_rename(&self.dir.join(format!("{name}.key")), key.serialize_pem());
        write_by_rename(&self.dir.join(format!("{name}.pem")), cert.pem());
        cert.der().to_vec()
    }

    /// Issues a certificate for 127.0.0.1 and writes it with its key into one file,
    /// `name.bundle.pem`, by one rename: a renewal a watcher can never see half done (two
    /// files renamed one after the other could be read as a new key with the old certificate).
    fn issue_bundle(&self, name: &str) -> Vec<u8> {
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".into()])
                .expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let bundle = format!("{}{}", cert.pem(), key.serialize_pem());
        write_by_rename(&self.dir.join(format!("{name}.bundle.pem")), bundle);
        cert.der().to_vec()
    }

    /// `[server]` keys serving certificate `name`.
    fn serve(&self, toml: Toml, name: &str, addr: SocketAddr) -> Toml {
        self.serve_files(toml, &format!("{name}.pem"), &format!("{name}.key"), addr)
    }

    /// `[server]` keys serving the bundle `name` (certificate and key in one file).
    fn serve_bundle(&self, toml: Toml, name: &str, addr: SocketAddr) -> Toml {
        let bundle = format!("{name}.bundle.pem");
        self.serve_files(toml, &bundle, &bundle, addr)
    }

    fn serve_files(&self, toml: Toml, cert: &str, key: &str, addr: SocketAddr) -> Toml {
        let path = |f: &str| quoted(path_str(&self.dir.join(f)));
        toml.listen(addr)
            .server("public_url", &quoted(&format!("https://{addr}")))
            .server("tls_cert", &path(cert))
            .server("tls_key", &path(key))
            .server("tls_ca", &quoted(path_str(&self.ca_file())))
    }
}

/// An HTTPS request trusting `ca`.
async fn https(
    client: &HttpsClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let req = build_request(method, url, headers, body.to_owned());
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("an answer within 20 s")
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The certificate a TLS server at `addr` presents, verified against `ca`.
async fn presented(addr: SocketAddr, ca: &Path) -> Vec<u8> {
    let pem = std::fs::read(ca).expect("ca");
    let config = agent_inbox::tls::client_config(&pem).expect("a client config");
    let tls = handshake(addr, config).await;
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

/// A TLS connection to `addr` (as 127.0.0.1) made with `config`.
async fn handshake(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake")
}

async fn bound() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_inboxes_and_an_agent_talk_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    pki.issue("a");
    pki.issue("b");
    let ((la, a), (lb, b)) = (bound().await, bound().await);
    let ca = path_str(&pki.ca_file()).to_owned();
    // A sends TASKs to B; B's agent replies STATUS by running its instructions' curl; the reply
    // is relayed back to A's mailbox. Every hop is HTTPS with the private CA.
    let a_toml = pki
        .serve(Toml::new(), "a", a)
        .schedule(FAST_RETRIES)
        // One secret per link: A sends it to B and accepts it from B.
        .peer("b", &format!("https://{b}/message"), TONY)
        .peer_key("b", "ca_file", &quoted(&ca))
        .mailbox("replies", &["b"], &["STATUS"])
        .build();
    let agent = toml_list(&[
        "python3".to_owned(),
        path_str(&agents_dir().join("prompt-curl.py")).to_owned(),
    ]);
    let b_toml = pki
        .serve(Toml::new(), "b", b)
        .command(&agent)
        .agent("stdin", "true")
        .agent("timeout_secs", "20")
        .schedule(FAST_RETRIES)
        .peer("a", &format!("https://{a}/message"), TONY)
        .peer_key("a", "ca_file", &quoted(&ca))
        .agent_route("tasks", &["a"], &["TASK"], &["STATUS"], &["a"])
        .build();
    let host_a = start_host_on(&a_toml, la).await;
    let host_b = start_host_on(&b_toml, lb).await;
    let client = client_trusting(&std::fs::read(pki.ca_file()).expect("ca")).expect("client");
    let admin = format!("Bearer {ADMIN}");
    let json_admin = [
        ("authorization", admin.as_str()),
        ("content-type", "application/json"),
    ];

    let (status, ack) = https(
        &client,
        "POST",
        &format!("https://{a}/admin/send"),
        &json_admin,
        &json!({"to": "b", "type": "TASK", "payload": {"job": "over tls"}}).to_string(),
    )
    .await;
    assert_eq!(status, 202, "{ack:#}");
    let thread = ack["thread_id"].as_str().expect("thread").to_owned();

    let reply = eventually(
        Duration::from_secs(30),
        "the reply in A's mailbox",
        || async {
            let (_, list) = https(
                &client,
                "GET",
                &format!("https://{a}/messages?route=replies"),
                &json_admin,
                "",
            )
            .await;
            list["messages"].as_array()?.first().cloned()
        },
    )
    .await;
    assert_eq!(reply["type"], "STATUS", "{reply:#}");
    assert_eq!(reply["thread_id"], thread.as_str());
    assert_eq!(reply["payload"]["followed"], "the instructions");

    // On B, the turn's prompt had the CA in its curl, and the agent ran it over HTTPS.
    let (_, list) = https(
        &client,
        "GET",
        &format!("https://{b}/messages"),
        &json_admin,
        "",
    )
    .await;
    let id = list["messages"][0]["id"]
        .as_str()
        .expect("B's message")
        .to_owned();
    // The reply can reach A before B's agent has exited: wait for the turn's end.
    let detail = eventually(Duration::from_secs(20), "B's turn to end", || async {
        let url = format!("https://{b}/messages/{id}");
        let (_, detail) = https(&client, "GET", &url, &json_admin, "").await;
        (detail["turn"]["state"] == "done").then_some(detail)
    })
    .await;
    let out = detail["turn"]["stdout_tail"].as_str().unwrap_or("");
    assert!(
        out.contains(&format!("--cacert '{ca}'")) && out.contains(&format!("https://{b}/send")),
        "{detail:#}"
    );

    // Plain HTTP to a TLS port is a failed handshake, not an answer and not a crash.
    let plain = try_request("GET", &format!("http://{a}/healthz"), &[], "").await;
    assert!(plain.is_err(), "{plain:?}");
    let (status, _) = https(&client, "GET", &format!("https://{a}/healthz"), &[], "").await;
    assert_eq!(status, 200);
    host_a.stop().await;
    host_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_and_a_broken_one_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    let first = pki.issue_bundle("inbox");
    let (listener, addr) = bound().await;
    let toml = pki.serve_bundle(Toml::new(), "inbox", addr).build();
    let host = start_host_on(&toml, listener).await;
    assert_eq!(presented(addr, &pki.ca_file()).await, first);

    // A renewal replaces the bundle by one rename; the watcher reloads and new connections get
    // it.
    let second = pki.issue_bundle("inbox");
    assert_ne!(first, second);
    eventually(
        Duration::from_secs(20),
        "the renewed certificate",
        || async { (presented(addr, &pki.ca_file()).await == second).then_some(()) },
    )
    .await;

    // A broken certificate is refused with the reason, and the last good one stays.
    let client = client_trusting(&std::fs::read(pki.ca_file()).expect("ca")).expect("client");
    write_by_rename(&dir.path().join("inbox.bundle.pem"), "not a certificate");
    let admin = format!("Bearer {ADMIN}");
    let (status, answer) = https(
        &client,
        "POST",
        &format!("https://{addr}/admin/reload"),
        &[("authorization", admin.as_str())],
        "",
    )
    .await;
    assert_eq!(status, 422, "{answer:#}");
    assert_eq!(answer["error"]["code"], "reload_failed");
    let message = answer["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("server.tls_cert"), "{message}");
    assert_eq!(presented(addr, &pki.ca_file()).await, second);
    host.stop().await;
}

#[test]
fn tls_keys_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |extra: &str| {
        let toml = Toml::new()
            .build()
            .replacen("[server]\n", &format!("[server]\n{extra}"), 1);
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, toml).expect("write");
        let out = std::process::Command::new(bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let (ok, text) = check("tls_cert = \"a.pem\"\n");
    assert!(
        !ok && text.contains("tls_cert and tls_key go together"),
        "{text}"
    );
    let (ok, text) =
        check("tls_cert = \"a.pem\"\ntls_key = \"a.key\"\npublic_url = \"http://127.0.0.1:1\"\n");
    assert!(!ok && text.contains("https://"), "{text}");
    let (ok, text) = check("tls_ca = \"ca.pem\"\n");
    assert!(!ok && text.contains("needs tls_cert and tls_key"), "{text}");
}

/// The TLS version a handshake with only `version` offered settles on.
async fn handshake_with(
    addr: SocketAddr,
    ca: &Path,
    version: &'static rustls::SupportedProtocolVersion,
) -> rustls::ProtocolVersion {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("ca");
    for cert in agent_inbox::tls::certificates(&pem).expect("the CA") {
        roots.add(cert).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = handshake(addr, config).await;
    tls.get_ref().1.protocol_version().expect("a version")
}

/// README (`[server]`): `public_url` defaults to `https://<listen>` with `tls_cert`; TLS 1.2 and
/// 1.3 are served; with `tls_ca`, agents get `INBOX_CA_FILE` and `NODE_EXTRA_CA_CERTS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_public_url_agents_reach_https_and_get_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path());
    pki.issue("inbox");
    let (listener, addr) = bound().await;
    let file = |f: &str| quoted(path_str(&dir.path().join(f)));
    let toml = Toml::tasks(
        "http://127.0.0.1:9/message",
        &agent_command(&["--record", path_str(record.path())]),
    )
    .listen(addr)
    .server("tls_cert", &file("inbox.pem"))
    .server("tls_key", &file("inbox.key"))
    .server("tls_ca", &file("ca.pem"))
    .build();
    let host = start_host_on(&toml, listener).await;
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        assert_eq!(
            handshake_with(addr, &pki.ca_file(), version).await,
            expected
        );
    }
    let client = client_trusting(&std::fs::read(pki.ca_file()).expect("ca")).expect("client");
    let (status, ack) = https(
        &client,
        "POST",
        &format!("https://{addr}/message"),
        &[
            ("x-shared-secret", TONY),
            ("content-type", "application/json"),
        ],
        r#"{"type": "TASK"}"#,
    )
    .await;
    assert_eq!(status, 202, "{ack:#}");
    let id = ack["id"].as_str().unwrap();
    let env = read_record(record.path(), id).await["environ"].clone();
    assert_eq!(
        env["INBOX_REPLY_URL"],
        format!("https://{addr}/send"),
        "{env:#}"
    );
    let ca = path_str(&pki.ca_file()).to_owned();
    assert_eq!(env["INBOX_CA_FILE"], ca.as_str());
    assert_eq!(env["NODE_EXTRA_CA_CERTS"], ca.as_str());
    host.stop().await;
}
