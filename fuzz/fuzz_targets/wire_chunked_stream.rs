#![no_main]
// Invariants live in sortd::wire::fuzzing so the stable corpus replay runs the same checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sortd::wire::fuzzing::chunked_stream(data));
