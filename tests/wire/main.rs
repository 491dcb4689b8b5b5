//! Scanner frames: golden bytes, faults, properties, the PROTOCOL.md dumps, the `frames`
//! CLI and the fuzz corpus replay. One test binary for the whole `wire` layer.

mod binary;
mod cli;
mod fuzz_corpus;
mod properties;
mod protocol_doc;
mod text;
