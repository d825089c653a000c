#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ipns_registry_fuzz::unixfs(data));
