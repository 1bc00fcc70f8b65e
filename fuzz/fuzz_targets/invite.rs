//! libFuzzer entry point of the `invite` target (see `safemeet_fuzz::invite`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::invite(data));
