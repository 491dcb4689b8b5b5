//! `sortd events reconcile`: read the hub's sort-event stream from NATS and check it per
//! sorter (events, first/last event id, gaps, duplicates, parcels decided exactly once,
//! outcomes matched). Exit 1 when any sorter's events are not exact or an expected sorter
//! is missing. Reading is `sortd::export::stream_read`, checking
//! `sortd::events::reconcile`; this file parses arguments and prints.

use std::io::Write;
use std::process::ExitCode;

use sortd::events::reconcile::{Reconciler, SorterReport};
use sortd::export::config::STREAM_NAME_DEFAULT;
use sortd::export::stream_read::read_events;

use super::nats_args::{self, NatsArgs};

/// Milliseconds to connect and for each stream API call.
const TIMEOUT_MS: u64 = 10_000;

/// Arguments of `sortd events reconcile`.
#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// The sort-event stream.
    #[arg(long, default_value = STREAM_NAME_DEFAULT)]
    stream: String,
    /// Subjects to read (e.g. `sortd.events.greven.>` for one hub).
    #[arg(long, default_value = "sortd.events.>")]
    filter: String,
    /// Sorters that must be present (comma-separated); a missing one fails the check.
    #[arg(long, value_delimiter = ',')]
    expect_sorters: Vec<String>,
    /// One JSON object per sorter instead of the table.
    #[arg(long)]
    json: bool,
}

/// Run `sortd events reconcile`. Exit 1 when the stream is not exact; a failure to
/// connect has its own status (`nats_args`).
pub fn run(args: ReconcileArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    nats_args::exit_on_connect_error(reconcile(args, out))
}

fn reconcile(args: ReconcileArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let connection = args.nats.connection(TIMEOUT_MS)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut reconciler = Reconciler::new();
    let messages = runtime.block_on(read_events(
        &connection,
        &args.stream,
        &args.filter,
        |sorter, headers, payload| reconciler.message(sorter, headers, payload),
    ))?;
    let reports = reconciler.report();
    let missing: Vec<&String> = args
        .expect_sorters
        .iter()
        .filter(|sorter| !reports.iter().any(|report| &report.sorter == *sorter))
        .collect();
    if args.json {
        for report in &reports {
            writeln!(out, "{}", json(report))?;
        }
    } else {
        print_table(out, &reports, messages)?;
    }
    for sorter in &missing {
        writeln!(out, "MISSING sorter {sorter}: no events in the stream")?;
    }
    let exact = reports.iter().all(SorterReport::is_exact) && missing.is_empty();
    if !args.json {
        writeln!(
            out,
            "{}",
            if exact {
                "reconciled: every event once, no gap, every parcel decided once"
            } else {
                "NOT reconciled"
            }
        )?;
    }
    Ok(if exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(
    out: &mut impl Write,
    reports: &[SorterReport],
    messages: u64,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<16} {:>9} {:>10} {:>10} {:>6} {:>6} {:>8} {:>9} {:>6} {:>9} {:>9} {:>7}",
        "sorter",
        "events",
        "first",
        "last",
        "gaps",
        "dups",
        "parcels",
        "once",
        "more",
        "outcomes",
        "matched",
        "damaged"
    )?;
    let mut total = SorterReport {
        sorter: "TOTAL".into(),
        ..SorterReport::default()
    };
    for r in reports {
        row(out, r)?;
        for gap in &r.gaps {
            writeln!(
                out,
                "  gap in {}: events {}..={} missing",
                r.sorter, gap.0, gap.1
            )?;
        }
        total.events += r.events;
        total.gap_events += r.gap_events;
        total.duplicate_events += r.duplicate_events;
        total.parcels += r.parcels;
        total.parcels_decided_once += r.parcels_decided_once;
        total.parcels_decided_more += r.parcels_decided_more;
        total.outcomes += r.outcomes;
        total.outcomes_matched += r.outcomes_matched;
        total.damaged += r.damaged;
    }
    row(out, &total)?;
    writeln!(out, "{} sorters, {messages} messages", reports.len())?;
    Ok(())
}

fn row(out: &mut impl Write, r: &SorterReport) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<16} {:>9} {:>10} {:>10} {:>6} {:>6} {:>8} {:>9} {:>6} {:>9} {:>9} {:>7}",
        r.sorter,
        r.events,
        r.first_seq,
        r.last_seq,
        r.gap_events,
        r.duplicate_events,
        r.parcels,
        r.parcels_decided_once,
        r.parcels_decided_more,
        r.outcomes,
        r.outcomes_matched,
        r.damaged
    )?;
    Ok(())
}

fn json(r: &SorterReport) -> String {
    serde_json::json!({
        "sorter": r.sorter,
        "messages": r.messages,
        "events": r.events,
        "first_event_id": format!("{}:{}", r.sorter, r.first_seq),
        "last_event_id": format!("{}:{}", r.sorter, r.last_seq),
        "gap_events": r.gap_events,
        "gaps": r.gaps,
        "duplicate_events": r.duplicate_events,
        "damaged": r.damaged,
        "parcels": r.parcels,
        "parcels_decided_once": r.parcels_decided_once,
        "parcels_decided_more": r.parcels_decided_more,
        "repeat_scans": r.repeat_scans,
        "outcomes": r.outcomes,
        "outcomes_matched": r.outcomes_matched,
        "sent_unconfirmed": r.sent_unconfirmed,
        "exact": r.is_exact(),
    })
    .to_string()
}
