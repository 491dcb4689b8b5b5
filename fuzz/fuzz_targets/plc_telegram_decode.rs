#![no_main]
use sortd::plc::fuzzing::telegram_decode;
libfuzzer_sys::fuzz_target!(|data: &[u8]| telegram_decode(std::time::Instant::now(), data));
