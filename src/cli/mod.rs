//! The command line: one `sortd` binary with a subcommand per job.
//!
//! Each subcommand lives in its own file and owns its arguments; this module only
//! dispatches and turns errors into exit codes. `anyhow` is allowed here and nowhere in
//! the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod events;
mod events_reconcile;
mod frames;
mod generate;
mod loadgen;
mod nats_args;
mod plan;
mod plan_hub;
mod plan_preadvice;
mod plc_sim;
mod run;
mod simulate;

/// Exit status for a bad configuration or bad command-line input (BSD `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "sortd", version, about = "Parcel sorter controller")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a self-contained demo: PLC simulator, daemon, example plan and scanners.
    Demo(demo::DemoArgs),
    /// Read the sort-event journal: tail, find a parcel, verify, decode records.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Decode or encode scanner frames (the integrator's tool).
    #[command(subcommand)]
    Frames(frames::FramesCommand),
    /// Compile, verify, inspect and compare sort plans.
    #[command(subcommand)]
    Plan(plan::PlanCommand),
    /// Run the daemon.
    Run(run::RunArgs),
    /// Run a PLC simulator that speaks sortd's PLC link.
    PlcSim(plc_sim::PlcSimArgs),
    /// Play scanners (and the PLC) against a running sortd and report.
    Loadgen(loadgen::LoadgenArgs),
    /// Run the deterministic simulation of the core over many seeds.
    Simulate(simulate::SimulateArgs),
    /// Generate man pages and shell completions (for packaging).
    #[command(subcommand, hide = true)]
    Generate(generate::GenerateCommand),
}

/// Parse the command line and run the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Events(command) => events::run(command),
        Command::Frames(command) => frames::run(command),
        Command::Plan(command) => plan::run(command),
        Command::Run(args) => run::run(args),
        Command::PlcSim(args) => plc_sim::run(args),
        Command::Loadgen(args) => loadgen::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Generate(command) => generate::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sortd: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes as `error: cause: cause`, leaving out a cause whose text is
/// already shown: the library's errors keep their cause (`source()`) and also name it in
/// their own message, so `{:#}` would print it twice.
fn one_line(error: &anyhow::Error) -> String {
    let mut shown = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if shown.contains(&text) {
            continue;
        }
        if !shown.is_empty() {
            shown.push_str(": ");
        }
        shown.push_str(&text);
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // Catches, among others, a conflict or requirement naming an unknown option.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::other("address in use");
        let error = anyhow::Error::new(io).context("cannot bind scanners");
        assert_eq!(one_line(&error), "cannot bind scanners: address in use");
        let error = sortd::daemon::DaemonError::Bind {
            what: "scanners".into(),
            error: std::io::Error::other("address in use"),
        };
        assert_eq!(
            one_line(&anyhow::Error::new(error)),
            "cannot bind scanners: address in use"
        );
    }
}
