#![no_main]
// Invariants live in sortd::events::fuzzing so the stable corpus replay runs the same checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sortd::events::fuzzing::journal_read(data));
