//! routes.toml: it loads or lists its errors; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = agent_inbox_core::config::Config::parse(&text, std::path::Path::new("."), |_| None) {
        assert!(!e.0.is_empty());
    }
});
