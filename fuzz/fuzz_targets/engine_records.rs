//! libFuzzer entry point of the `engine_records` target (see `safemeet_fuzz::engine_records`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::engine_records(data));
