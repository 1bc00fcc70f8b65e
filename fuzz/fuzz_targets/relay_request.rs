//! libFuzzer entry point of the `relay_request` target (see `safemeet_fuzz::relay_request`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::relay_request(data));
