//! libFuzzer entry point of the `room_state` target (see `safemeet_fuzz::room_state`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::room_state(data));
