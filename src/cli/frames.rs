//! `sortd frames`: being written.

use std::process::ExitCode;

/// The `frames` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum FramesCommand {}

/// Run a `frames` subcommand.
pub fn run(command: FramesCommand) -> anyhow::Result<ExitCode> {
    match command {}
}
