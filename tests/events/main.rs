//! Sort events: the record format and its PROTOCOL.md examples, the journal (segments,
//! torn tails, retention, the cursor, a full disk), the `events` CLI and the fuzz corpus
//! replay. One test binary for the whole `events` layer.

mod cli;
mod fuzz_corpus;
mod journal;
mod record;
