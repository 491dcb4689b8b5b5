//! `sortd plan preadvice` (append, list, compact a node's pre-advice directory) and
//! `sortd plan lookup --preadvice DIR`. Thin shells over `sortd::plan::preadvice`: for
//! tests and manual fixes. `append` and `compact` write the directory: run them only
//! while no daemon uses it (the daemon is the directory's single writer); `list` and
//! `lookup` only read.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use sortd::export::hub_config::{PREADVICE_STREAM_DEFAULT, check_name, preadvice_subject};
use sortd::export::preadvice_sub::publish_batch;
use sortd::plan::overlay::OverlayValue;
use sortd::plan::preadvice_msg::{entry_to_json, parse_message};
use sortd::plan::{Plan, PreAdvice, PreAdviceSettings};

use super::nats_args::{self, NatsArgs};

/// The `plan preadvice` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PreadviceCommand {
    /// Append the entries of a JSON-lines file (the NATS message format) as one batch.
    Append {
        /// The pre-advice directory (`<state>/preadvice`).
        #[arg(long)]
        dir: PathBuf,
        /// The node's base plan.
        #[arg(long)]
        plan: PathBuf,
        /// Batch sequence; default: one above the last in the log.
        #[arg(long)]
        seq: Option<u64>,
        /// The JSON-lines file.
        file: PathBuf,
    },
    /// Print the overlay as JSON lines with each entry's sequence.
    List {
        /// The pre-advice directory.
        #[arg(long)]
        dir: PathBuf,
        /// The node's base plan.
        #[arg(long)]
        plan: PathBuf,
        /// How many entries to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publish a JSON-lines file as one batch to the hub's pre-advice stream (created
    /// when missing); prints the stream sequence, which every node applies it at.
    Publish {
        #[command(flatten)]
        nats: Box<NatsArgs>,
        /// The sorter group (subject `sortd.preadvice.<group>`).
        #[arg(long)]
        group: String,
        /// The pre-advice stream.
        #[arg(long, default_value = PREADVICE_STREAM_DEFAULT)]
        stream: String,
        /// `Nats-Msg-Id`: a retried publish with the same id is stored once.
        #[arg(long)]
        msg_id: Option<String>,
        /// The JSON-lines file.
        file: PathBuf,
    },
    /// Fold the overlay into `<dir>/compacted.sortplan` and cut the log.
    Compact {
        /// The pre-advice directory.
        #[arg(long)]
        dir: PathBuf,
        /// The node's base plan.
        #[arg(long)]
        plan: PathBuf,
    },
}

fn open_plan(path: &Path) -> anyhow::Result<Plan> {
    Plan::open(path).with_context(|| format!("{}: cannot open plan", path.display()))
}

fn open_dir(dir: &Path, plan: &Path) -> anyhow::Result<PreAdvice> {
    let (preadvice, recovery) =
        PreAdvice::open(dir, open_plan(plan)?, PreAdviceSettings::default())
            .with_context(|| format!("{}: cannot open pre-advice", dir.display()))?;
    if recovery.tail_cut_bytes > 0 {
        eprintln!(
            "{}: cut a torn tail of {} bytes",
            dir.display(),
            recovery.tail_cut_bytes
        );
    }
    Ok(preadvice)
}

/// Run a `plan preadvice` subcommand.
pub fn run(command: PreadviceCommand) -> anyhow::Result<ExitCode> {
    match command {
        PreadviceCommand::Append {
            dir,
            plan,
            seq,
            file,
        } => {
            let message =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let parsed = parse_message(&message);
            for error in &parsed.errors {
                eprintln!("{}:{}: {}", file.display(), error.line, error.kind);
            }
            if parsed.too_large {
                eprintln!("{}: message too large", file.display());
            }
            let preadvice = open_dir(&dir, &plan)?;
            let seq = seq.unwrap_or(preadvice.last_seq() + 1);
            let applied = preadvice
                .apply(&parsed.entries, seq)
                .with_context(|| format!("{}: appending", dir.display()))?;
            println!(
                "seq {seq}: {} stored, {} refused (overlay full), {} bad lines{}; overlay {} entries",
                applied.counts.stored,
                applied.counts.refused_full,
                parsed.bad_lines,
                if applied.duplicate {
                    " (duplicate sequence: ignored)"
                } else {
                    ""
                },
                applied.overlay_entries
            );
            Ok(if parsed.bad_lines > 0 {
                ExitCode::from(super::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            })
        }
        PreadviceCommand::List { dir, plan, limit } => {
            let (view, recovery) =
                PreAdvice::read_view(&dir, open_plan(&plan)?, PreAdviceSettings::default())
                    .with_context(|| format!("{}: cannot read pre-advice", dir.display()))?;
            println!(
                "plan \"{}\" version {}; overlay {} entries through seq {}; {} log records{}",
                view.plan.name(),
                view.plan.version(),
                view.overlay.len(),
                view.overlay.seq_max(),
                recovery.records,
                if recovery.tail_cut_bytes > 0 {
                    format!(" (+{} torn bytes at the end)", recovery.tail_cut_bytes)
                } else {
                    String::new()
                }
            );
            for (key, value, seq) in view.overlay.entries().take(limit) {
                let entry = sortd::plan::PreAdviceEntry {
                    barcode: key.into(),
                    value: value.into(),
                };
                println!("{seq} {}", entry_to_json(&entry));
            }
            Ok(ExitCode::SUCCESS)
        }
        PreadviceCommand::Publish {
            nats,
            group,
            stream,
            msg_id,
            file,
        } => nats_args::exit_on_connect_error(publish(
            &nats,
            &group,
            &stream,
            msg_id.as_deref(),
            &file,
        )),
        PreadviceCommand::Compact { dir, plan } => {
            let preadvice = open_dir(&dir, &plan)?;
            match preadvice
                .compact()
                .with_context(|| format!("{}: compacting", dir.display()))?
            {
                Some(report) => println!(
                    "{}: plan \"{}\" version {}: {} exact keys; folded {} entries through seq {} ({} unresolved destinations dropped), deleted {} log segments",
                    dir.join(sortd::plan::preadvice::COMPACTED_FILE).display(),
                    report.plan_name,
                    report.plan_version,
                    report.exact_keys,
                    report.folded,
                    report.through_seq,
                    report.unresolved,
                    report.segments_deleted
                ),
                None => println!("{}: nothing to compact", dir.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Milliseconds a publish may take to connect, and to be acknowledged.
const PUBLISH_TIMEOUT_MS: u64 = 10_000;

fn publish(
    nats: &NatsArgs,
    group: &str,
    stream: &str,
    msg_id: Option<&str>,
    file: &Path,
) -> anyhow::Result<ExitCode> {
    check_name("--group", group)?;
    check_name("--stream", stream)?;
    let message = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    // The nodes skip bad lines and apply the rest; say so before it goes out.
    let parsed = parse_message(&message);
    for error in &parsed.errors {
        eprintln!(
            "{}:{}: {} (nodes will skip it)",
            file.display(),
            error.line,
            error.kind
        );
    }
    anyhow::ensure!(
        !parsed.too_large,
        "{}: over the pre-advice message limit",
        file.display()
    );
    let connection = nats.connection(PUBLISH_TIMEOUT_MS)?;
    let subject = preadvice_subject(group);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let published = runtime.block_on(publish_batch(
        &connection,
        stream,
        &subject,
        message,
        msg_id,
    ))?;
    println!(
        "{subject}: stream {stream} seq {}{}: {} entries, {} bad lines",
        published.stream_seq,
        if published.duplicate {
            " (duplicate: already stored)"
        } else {
            ""
        },
        parsed.entries.len(),
        parsed.bad_lines
    );
    Ok(ExitCode::SUCCESS)
}

/// `sortd plan lookup FILE --preadvice DIR`: resolve through the node's overlay.
pub fn lookup(
    file: PathBuf,
    dir: PathBuf,
    barcodes: Vec<String>,
    code: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (view, _) = PreAdvice::read_view(&dir, open_plan(&file)?, PreAdviceSettings::default())
        .with_context(|| format!("{}: cannot read pre-advice", dir.display()))?;
    let barcode_bytes: Vec<&[u8]> = barcodes.iter().map(|barcode| barcode.as_bytes()).collect();
    let resolved = view.resolve(&barcode_bytes, code.as_deref().map(str::as_bytes));
    let resolution = resolved.resolution;
    println!(
        "decision: {} -> chute {} (chutes {})",
        resolution.outcome.as_str(),
        resolution.chutes.primary(),
        resolution.chutes
    );
    println!(
        "answered by: plan \"{}\" version {}, pre-advice seq {}",
        view.plan.name(),
        resolved.plan_version,
        resolved.preadvice_seq
    );
    for barcode in &barcodes {
        let shown = barcode.escape_debug();
        match view.overlay.get(barcode.as_bytes()) {
            Some((OverlayValue::Chutes(chutes), seq)) => {
                println!("  barcode \"{shown}\": pre-advice seq {seq} -> {chutes}")
            }
            Some((OverlayValue::Destination(code), seq)) => println!(
                "  barcode \"{shown}\": pre-advice seq {seq} -> destination \"{}\"",
                String::from_utf8_lossy(code).escape_debug()
            ),
            Some((OverlayValue::Removed, seq)) => {
                println!("  barcode \"{shown}\": removed by pre-advice seq {seq}")
            }
            None => match view.plan.exact(barcode.as_bytes()) {
                Some((chutes, rule)) => {
                    println!(
                        "  barcode \"{shown}\": exact at line {} -> {chutes}",
                        rule.line
                    )
                }
                None => println!("  barcode \"{shown}\": no entry"),
            },
        }
    }
    Ok(ExitCode::SUCCESS)
}
