//! X-Forwarded-For: see `agent_inbox_core::oracles::forwarded_for` for what must hold.
#![no_main]

use agent_inbox_core::oracles;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    oracles::forwarded_for(data);
});
