//! libFuzzer entry point of the `jsonrpc` target (see `safemeet_fuzz::jsonrpc`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safemeet_fuzz::jsonrpc(data));
