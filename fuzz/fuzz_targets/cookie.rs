//! Console cookies: see `agent_inbox_core::oracles::cookie` for what must hold.
#![no_main]

use agent_inbox_core::oracles;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = std::str::from_utf8(data) {
        oracles::cookie(h);
    }
});
