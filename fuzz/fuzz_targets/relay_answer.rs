//! libFuzzer entry point of the `relay_answer` target (see `safemeet_fuzz::relay_answer`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::relay_answer(data));
