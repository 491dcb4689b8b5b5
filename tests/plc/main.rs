//! The PLC link: telegrams, the host and PLC state machines over scripted and random
//! transports, and the fuzz corpus replay. One test binary for the whole `plc` layer.

mod common;
mod fuzz_corpus;
mod link;
mod random;
mod telegram;
