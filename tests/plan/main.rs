//! Sort plans: CSV, the file format, resolution, the shared handle, the `plan` CLI and
//! the fuzz corpus replay. One test binary for the whole `plan` layer.

mod cli;
mod csv;
mod file;
mod fuzz_corpus;
mod handle;
mod preadvice;
mod resolve;
