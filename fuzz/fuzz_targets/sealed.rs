//! libFuzzer entry point of the `sealed` target (see `safemeet_fuzz::sealed`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::sealed(data));
