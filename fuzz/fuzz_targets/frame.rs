//! libFuzzer entry point of the `frame` target (see `safemeet_fuzz::frame`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::frame(data));
