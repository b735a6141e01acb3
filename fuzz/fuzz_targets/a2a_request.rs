//! POST /a2a bodies: see `agent_inbox_core::oracles::a2a_request` for what must hold.
#![no_main]

use agent_inbox_core::oracles;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    oracles::a2a_request(data);
});
