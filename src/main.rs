//! The `sortd` binary: parse the command line, run the chosen subcommand.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
