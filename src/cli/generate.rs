//! `sortd generate man|completions`: the man pages and shell completions, generated from
//! the clap definitions so they never drift from the binary. Hidden: packaging
//! (packaging/build-deb.sh) runs it on the binary it packages; people read the results.
//!
//! A subcommand rather than a build script: the pages come from exactly the binary that
//! ships, and the ordinary build stays free of generation work and extra build
//! dependencies. It writes files only into the folder it is given.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// What to generate.
#[derive(Debug, clap::Subcommand)]
pub enum GenerateCommand {
    /// Man pages: sortd.1 and one per subcommand (sortd-run.1, ...), into DIR.
    Man {
        /// Folder to write the pages into (created if missing).
        dir: PathBuf,
    },
    /// A completion script for SHELL, into DIR (under the shell's usual file name).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: Shell,
        /// Folder to write the script into (created if missing).
        dir: PathBuf,
    },
}

/// Writes the requested files and prints each path.
pub fn run(command: GenerateCommand) -> anyhow::Result<ExitCode> {
    let mut cli = Cli::command();
    match command {
        GenerateCommand::Man { dir } => {
            create(&dir)?;
            // Hidden subcommands (this one) get no page.
            clap_mangen::generate_to(cli, &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
            let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .filter_map(|entry| Some(entry.ok()?.path()))
                .filter(|path| path.extension().is_some_and(|extension| extension == "1"))
                .collect();
            pages.sort();
            for page in pages {
                println!("{}", page.display());
            }
        }
        GenerateCommand::Completions { shell, dir } => {
            create(&dir)?;
            let path = clap_complete::generate_to(shell, &mut cli, "sortd", &dir)
                .with_context(|| format!("writing {shell} completions to {}", dir.display()))?;
            println!("{}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn create(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
