//! Query strings: see `agent_inbox_core::oracles::query` for what must hold.
#![no_main]

use agent_inbox_core::oracles;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = std::str::from_utf8(data) {
        oracles::query(q);
    }
});
