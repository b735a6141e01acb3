//! Properties of the parsers and checks that face the outside, with proptest; and every input in
//! `fuzz/crashers/` (inputs the fuzz targets once found trouble with, and seeds) run as a test.
//! The fuzz targets in `fuzz/` drive the same functions.

use proptest::prelude::*;

use agent_inbox_core::config::Config;
use agent_inbox_core::model::{nests_deeper_than, valid_type_name};
use agent_inbox_core::oracles;
use agent_inbox_core::signature::{self, Signed, SigningKey};
use agent_inbox_core::wire::{Ack, AckStatus, Envelope, SendBody};

const DEPTH: usize = 64;

/// What the inbox stores from an accepted envelope can be read back by every reader: the payload
/// parses as JSON within the depth limit, and the type is a type name.
fn storable(e: &Envelope) -> bool {
    serde_json::from_str::<serde_json::Value>(&e.payload).is_ok()
        && !nests_deeper_than(e.payload.as_bytes(), DEPTH)
        && valid_type_name(&e.msg_type)
}

/// What `/send` takes from a body can be stored: the same rule as an envelope's.
fn sendable(b: &SendBody) -> bool {
    serde_json::from_str::<serde_json::Value>(&b.payload).is_ok()
        && !nests_deeper_than(b.payload.as_bytes(), DEPTH)
        && valid_type_name(&b.msg_type)
}

/// JSON values up to a depth, as text.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_envelope_parser_never_panics_and_accepts_only_what_it_can_store(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(e) = Envelope::parse(&bytes, DEPTH) {
            prop_assert!(storable(&e), "{e:?}");
        }
        if let Ok(b) = SendBody::parse(&bytes, DEPTH) {
            prop_assert!(sendable(&b), "{b:?}");
        }
    }

    /// Random bytes almost never parse, so the check above rarely runs: here a well-formed body
    /// is damaged at one place (a byte changed, or the text cut), so that many still parse, and
    /// each one that does must be storable.
    #[test]
    fn a_damaged_body_that_still_parses_is_storable(
        msg_type in "[A-Za-z0-9_.:-]{1,16}",
        payload in json_value(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let body = serde_json::json!({"type": msg_type, "payload": payload});
        let mut text = serde_json::to_vec(&body).expect("serializes");
        let i = at.index(text.len());
        if cut {
            text.truncate(i);
        } else {
            text[i] = byte;
        }
        if let Ok(e) = Envelope::parse(&text, DEPTH) {
            prop_assert!(storable(&e), "{e:?}");
        }
        if let Ok(b) = SendBody::parse(&text, DEPTH) {
            prop_assert!(sendable(&b), "{b:?}");
        }
    }

    #[test]
    fn a_well_formed_envelope_is_accepted_and_reads_back(
        msg_type in "[A-Za-z0-9_.:-]{1,64}",
        payload in json_value(),
        id in proptest::option::of("[a-z0-9-]{1,40}"),
        hops in 0u32..1000,
    ) {
        let body = serde_json::json!({"type": msg_type, "payload": payload, "id": id, "hops": hops});
        let text = serde_json::to_vec(&body).expect("serializes");
        let e = Envelope::parse(&text, DEPTH).expect("a well-formed envelope parses");
        prop_assert!(storable(&e));
        prop_assert_eq!(&e.msg_type, &msg_type);
        prop_assert_eq!(e.id, id);
        prop_assert_eq!(e.hops, hops);
        // Kept exactly as sent (floats included: no parse and print on the way).
        let sent = if payload.is_null() { "{}".to_owned() } else { payload.to_string() };
        prop_assert_eq!(e.payload, sent);
    }

    #[test]
    fn a_routes_toml_loads_or_lists_its_errors_and_never_panics(text in ".{0,400}") {
        if let Err(e) = Config::parse(&text, std::path::Path::new("."), |_| None) {
            prop_assert!(!e.0.is_empty());
        }
    }

    #[test]
    fn mutated_configs_never_panic(cut in 0usize..600, insert in ".{0,20}") {
        let base = "[server]\nadmin_secret = \"a\"\nmax_json_depth = 32\n[agent]\ncommand = [\"x\", \"{prompt}\"]\n\
                    [peers.p]\nurl = \"http://h/m\"\nsecret = [\"s1\", \"s2\"]\n[peers.q]\nurl = \"http://h/m\"\n\
                    auth = \"standard-webhooks\"\nsecret = \"whsec_c2lnbmluZyBrZXkgb2YgdG9ueSwgdGhpcnR5LXR3byE=\"\n\
                    [routes.r]\nfrom = [\"p\", \"q\"]\ntypes = [\"A\"]\nreply_types = [\"B\"]\nreply_to = [\"p\"]\n";
        let at = cut.min(base.len());
        let at = (0..=at).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
        let text = format!("{}{insert}{}", &base[..at], &base[at..]);
        let _ = Config::parse(&text, std::path::Path::new("."), |_| None);
    }

    #[test]
    fn acks_round_trip(id in ".{1,40}", thread in proptest::option::of(".{1,40}"), which in 0u8..3) {
        let status = [AckStatus::Received, AckStatus::Duplicate, AckStatus::Queued][which as usize];
        let ack = Ack { status, id, thread_id: thread };
        let text = serde_json::to_string(&ack).expect("json");
        prop_assert_eq!(serde_json::from_str::<Ack>(&text).expect("parses"), ack);
    }

    #[test]
    fn the_signature_check_accepts_exactly_the_right_signatures(
        key in prop::collection::vec(any::<u8>(), 24..=64),
        id in "[a-zA-Z0-9_]{1,32}",
        ts in 1_600_000_000i64..2_000_000_000,
        body in prop::collection::vec(any::<u8>(), 0..256),
        flip in any::<prop::sample::Index>(),
    ) {
        use base64::Engine as _;
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&key));
        let key = SigningKey::parse(&secret).expect("a valid key");
        let sig = signature::sign(std::slice::from_ref(&key), &id, ts, &body);
        let ts_text = ts.to_string();
        let headers = |sig: &str| -> (String, String) { (ts_text.clone(), sig.to_owned()) };
        let check = |ts: &str, sig: &str, body: &[u8]| {
            signature::verify(
                std::slice::from_ref(&key),
                Signed { id: Some(id.as_bytes()), timestamp: Some(ts.as_bytes()), signature: Some(sig.as_bytes()) },
                body,
                ts_text.parse().expect("a number"),
                300,
            )
        };
        let (t, s) = headers(&sig);
        prop_assert_eq!(check(&t, &s, &body), Ok(()));
        // Any one bit of the body changed: refused.
        if !body.is_empty() {
            let mut changed = body.clone();
            let i = flip.index(changed.len());
            changed[i] ^= 1;
            prop_assert_eq!(check(&t, &s, &changed), Err(signature::SignatureError::Bad));
        }
        // Any one character of the signature changed: refused.
        let mut bytes = sig.clone().into_bytes();
        let i = 3 + flip.index(bytes.len() - 3);
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(bytes).expect("ascii");
        if forged != sig {
            prop_assert_eq!(check(&t, &forged, &body), Err(signature::SignatureError::Bad));
        }
    }
}

/// Every saved input in `fuzz/crashers/<target>/` goes through its target's function.
#[test]
fn past_crashers_and_seeds_stay_fixed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/crashers");
    let mut seen = 0;
    for (target, run) in [
        (
            "envelope",
            (|b: &[u8]| {
                let _ = Envelope::parse(b, DEPTH).map(|e| assert!(storable(&e)));
            }) as fn(&[u8]),
        ),
        ("config", |b: &[u8]| {
            let _ = Config::parse(
                &String::from_utf8_lossy(b),
                std::path::Path::new("."),
                |_| None,
            );
        }),
        // As the fuzz target: `id\nsignature\nbody` under one key; what verifies was signed.
        ("signature", |b: &[u8]| {
            signed_seed(b);
        }),
        ("a2a_request", oracles::a2a_request),
        ("query", |b: &[u8]| {
            oracles::query(&String::from_utf8_lossy(b))
        }),
        ("cookie", |b: &[u8]| {
            oracles::cookie(&String::from_utf8_lossy(b));
        }),
        ("forwarded_for", oracles::forwarded_for),
        ("url", |b: &[u8]| oracles::url(&String::from_utf8_lossy(b))),
    ] {
        // A target without its folder is a mistake (a rename), not an empty corpus.
        let dir = std::fs::read_dir(root.join(target))
            .unwrap_or_else(|e| panic!("fuzz/crashers/{target}: {e}"));
        let mut here = 0;
        for f in dir.flatten() {
            let bytes = std::fs::read(f.path()).expect("read");
            run(&bytes);
            here += 1;
        }
        assert!(here > 0, "no inputs under fuzz/crashers/{target}");
        seen += here;
    }
    assert!(seen > 0, "no inputs under {}", root.display());
}

/// The signature seeds hold inputs the check must accept, so the replay above checks the
/// accepting branch too, not only refusals.
#[test]
fn the_signed_seeds_verify() {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/crashers/signature");
    for name in ["signed.bin", "signed-among-others.bin"] {
        let b = std::fs::read(root.join(name)).expect("the seed");
        assert!(signed_seed(&b), "{name} does not verify");
    }
}

/// The signature target's input, `id\nsignature\nbody` under one key at one time, as the fuzz
/// target reads it: whether it verifies (and, if it does, that the key made that signature).
fn signed_seed(b: &[u8]) -> bool {
    const KEY: &str = "whsec_c2lnbmluZyBrZXkgb2YgdG9ueSwgdGhpcnR5LXR3byE=";
    let key = SigningKey::parse(KEY).expect("a valid key");
    let mut parts = b.splitn(3, |c| *c == b'\n');
    let (id, sig, body) = (parts.next(), parts.next(), parts.next().unwrap_or_default());
    let headers = Signed {
        id,
        timestamp: Some(b"1700000000"),
        signature: sig,
    };
    if signature::verify(
        std::slice::from_ref(&key),
        headers,
        body,
        1_700_000_000,
        300,
    )
    .is_err()
    {
        return false;
    }
    let id = std::str::from_utf8(id.unwrap_or_default()).expect("a signed id is text");
    let good = signature::sign(&[key], id, 1_700_000_000, body);
    let sig = std::str::from_utf8(sig.unwrap_or_default()).unwrap_or_default();
    assert!(
        sig.split(' ').any(|s| good == s),
        "accepted an unsigned input"
    );
    true
}

/// The cookie corpus holds a value the secret signed, so the replay checks acceptance too; and
/// the URL corpus a literal of each kind.
#[test]
fn the_accepting_seeds_of_the_newer_targets_are_accepted() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/crashers");
    let signed = std::fs::read_to_string(root.join("cookie/signed.txt")).expect("the seed");
    assert!(
        oracles::cookie(&signed),
        "the signed cookie seed is refused"
    );
    for name in ["wrong-mac.txt", "longer-expiry.txt", "upper-hex.txt"] {
        let forged = std::fs::read_to_string(root.join("cookie").join(name)).expect("seed");
        assert!(!oracles::cookie(&forged), "{name} was accepted");
    }
    let read = |name: &str| std::fs::read_to_string(root.join("url").join(name)).expect("seed");
    assert!(agent_inbox_core::ssrf::literal_not_public(
        &agent_inbox_core::ssrf::parse_url(&read("mapped-loopback.txt"))
            .expect("parses")
            .0
    ));
    assert!(!agent_inbox_core::ssrf::literal_not_public(
        &agent_inbox_core::ssrf::parse_url(&read("public-literal.txt"))
            .expect("parses")
            .0
    ));
    assert!(agent_inbox_core::ssrf::parse_url(&read("ftp.txt")).is_err());
}
