//! libFuzzer entry point of the `relay_store` target (see `safemeet_fuzz::relay_store`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::relay_store(data));
