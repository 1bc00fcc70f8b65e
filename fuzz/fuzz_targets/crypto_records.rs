//! libFuzzer entry point of the `crypto_records` target (see `safemeet_fuzz::crypto_records`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::crypto_records(data));
