//! `sortd plan`: being written.

use std::process::ExitCode;

/// The `plan` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PlanCommand {}

/// Run a `plan` subcommand.
pub fn run(command: PlanCommand) -> anyhow::Result<ExitCode> {
    match command {}
}
