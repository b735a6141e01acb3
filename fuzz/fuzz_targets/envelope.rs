//! `POST /message` bodies: never a panic; an accepted one is storable and readable.
#![no_main]

use agent_inbox_core::model::{nests_deeper_than, valid_type_name};
use agent_inbox_core::wire::{Envelope, SendBody};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Envelope::parse(data, 64) {
        assert!(serde_json::from_str::<serde_json::Value>(&e.payload).is_ok());
        assert!(!nests_deeper_than(e.payload.as_bytes(), 64));
        assert!(valid_type_name(&e.msg_type));
    }
    let _ = SendBody::parse(data, 64);
});
