#![no_main]
// Arbitrary bytes as a compiled plan: open, verify, resolve, iterate. Must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sortd::plan::fuzzing::open_verify_lookup(data));
