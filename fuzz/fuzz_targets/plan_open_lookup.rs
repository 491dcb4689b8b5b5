#![no_main]
// Placeholder until the layer lands; replaced by the layer that owns it.
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});
