//! Signed requests: the check never panics, and accepts only what the key signed.
#![no_main]

use agent_inbox_core::signature::{self, Signed, SigningKey};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "whsec_c2lnbmluZyBrZXkgb2YgdG9ueSwgdGhpcnR5LXR3byE=";

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::parse(KEY).expect("a valid key");
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (id, sig, body) = (parts.next(), parts.next(), parts.next().unwrap_or_default());
    let headers = Signed { id, timestamp: Some(b"1700000000"), signature: sig };
    if signature::verify(std::slice::from_ref(&key), headers, body, 1_700_000_000, 300).is_ok() {
        let id = std::str::from_utf8(id.unwrap_or_default()).expect("a signed id is text");
        let good = signature::sign(&[key], id, 1_700_000_000, body);
        let sig = std::str::from_utf8(sig.unwrap_or_default()).unwrap_or_default();
        assert!(sig.split(' ').any(|s| good == s), "accepted a signature the key did not make");
    }
});
