//! libFuzzer entry point of the `peer_answer` target (see `safemeet_fuzz::peer_answer`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::peer_answer(data));
