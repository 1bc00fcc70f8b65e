//! libFuzzer entry point of the `identity` target (see `safemeet_fuzz::identity`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::identity(data));
