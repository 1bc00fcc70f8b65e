//! libFuzzer entry point of the `relay_config` target (see `safemeet_fuzz::relay_config`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::relay_config(data));
