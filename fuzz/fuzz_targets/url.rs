//! URLs a client gives: see `agent_inbox_core::oracles::url` for what must hold.
#![no_main]

use agent_inbox_core::oracles;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(u) = std::str::from_utf8(data) {
        oracles::url(u);
    }
});
