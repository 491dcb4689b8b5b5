//! `sortd events`: read the local sort-event journal. `tail` prints the newest events
//! (and follows), `find` answers "where did this parcel go, and was it diverted?",
//! `verify` checks every record and reports gaps, `decode` turns binary records (as a
//! NATS consumer receives them) into JSON lines.
//!
//! Reading, checking and rendering are the library's (`sortd::events`); this file parses
//! arguments and prints.

use std::collections::HashMap;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sortd::events::journal::{DIR_DEFAULT, JournalReader, verify};
use sortd::events::json::{BytesJson, to_json_line};
use sortd::events::record::{self, Event, Record, RecordDecoded};

/// Records read per batch.
const BATCH_RECORDS: usize = 4096;
/// Bytes read per batch.
const BATCH_BYTES: usize = 1 << 20;
/// Poll period of `tail --follow`.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Most bytes `decode` reads from stdin.
const DECODE_INPUT_BYTES_MAX: u64 = 1 << 30;

/// The `events` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Print the newest events; with --follow, keep printing new ones.
    Tail {
        /// Journal directory.
        #[arg(long, default_value = DIR_DEFAULT)]
        dir: PathBuf,
        /// Keep printing events as they are journaled.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// How many of the newest events to print first.
        #[arg(short = 'n', default_value_t = 10)]
        count: u64,
    },
    /// Where did a parcel go, and was it diverted? Prints its decisions and outcomes.
    Find {
        /// Journal directory.
        #[arg(long, default_value = DIR_DEFAULT)]
        dir: PathBuf,
        /// The parcel (tray) id.
        #[arg(long, conflicts_with = "barcode", required_unless_present = "barcode")]
        parcel: Option<u64>,
        /// A barcode read on the parcel.
        #[arg(long)]
        barcode: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Check every record and report damage and sequence gaps; exit 1 on damage.
    Verify {
        /// Journal directory.
        #[arg(long, default_value = DIR_DEFAULT)]
        dir: PathBuf,
    },
    /// Read the hub's event stream from NATS and check it per sorter: gaps, duplicates,
    /// parcels decided once, outcomes matched; exit 1 unless exact.
    Reconcile(Box<super::events_reconcile::ReconcileArgs>),
    /// Binary records on stdin (e.g. NATS message payloads) to JSON lines on stdout.
    Decode {
        /// Hub id to put in the JSON (from the NATS subject).
        #[arg(long, requires = "sorter")]
        hub: Option<String>,
        /// Sorter id to put in the JSON (from the NATS subject).
        #[arg(long, requires = "hub")]
        sorter: Option<String>,
    },
}

/// Run an `events` subcommand.
pub fn run(command: EventsCommand) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout().lock();
    let mut out = BufWriter::new(stdout);
    let result = match command {
        EventsCommand::Tail {
            dir,
            follow,
            json,
            count,
        } => tail(&dir, follow, json, count, &mut out),
        EventsCommand::Find {
            dir,
            parcel,
            barcode,
            json,
        } => find(&dir, parcel, barcode.as_deref(), json, &mut out),
        EventsCommand::Verify { dir } => verify_dir(&dir, &mut out),
        EventsCommand::Reconcile(args) => super::events_reconcile::run(*args, &mut out),
        EventsCommand::Decode { hub, sorter } => {
            let ids = hub.as_deref().zip(sorter.as_deref());
            decode_stdin(ids, &mut out)
        }
    };
    let flushed = out.flush();
    match result.and_then(|code| flushed.map(|()| code).map_err(Into::into)) {
        Err(error) if is_broken_pipe(&error) => Ok(ExitCode::SUCCESS),
        other => other,
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

fn open_reader(dir: &Path) -> anyhow::Result<JournalReader> {
    if !dir.is_dir() {
        anyhow::bail!("no journal at {} (see [events] dir)", dir.display());
    }
    Ok(JournalReader::open(dir)?)
}

/// Calls `each` for every record from the reader's position until nothing new is left.
fn drain(
    reader: &mut JournalReader,
    mut each: impl FnMut(&Record<'_>, Option<(&str, &str)>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut buf = Vec::with_capacity(BATCH_BYTES);
    let mut total = 0;
    loop {
        buf.clear();
        let batch = reader.read_batch(&mut buf, BATCH_RECORDS, BATCH_BYTES)?;
        if batch.records == 0 {
            return Ok(total);
        }
        let ids = reader.ids().map(|(h, s)| (h.to_string(), s.to_string()));
        let ids = ids.as_ref().map(|(h, s)| (h.as_str(), s.as_str()));
        let mut rest = buf.as_slice();
        while let RecordDecoded::Complete { record, consumed } = record::decode(rest) {
            each(&record, ids)?;
            total += 1;
            rest = rest.get(consumed..).unwrap_or_default();
        }
    }
}

fn print_record(
    out: &mut impl Write,
    record: &Record<'_>,
    ids: Option<(&str, &str)>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", to_json_line(record, ids))?;
    } else {
        writeln!(out, "{}", human(record))?;
    }
    Ok(())
}

fn tail(
    dir: &Path,
    follow: bool,
    json: bool,
    count: u64,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let mut reader = open_reader(dir)?;
    let last = reader.last_seq()?;
    reader.seek(last.saturating_sub(count) + 1)?;
    drain(&mut reader, |record, ids| {
        print_record(out, record, ids, json)
    })?;
    out.flush()?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let printed = drain(&mut reader, |record, ids| {
            print_record(out, record, ids, json)
        })?;
        if printed > 0 {
            // Flushing per batch lets `tail --follow | consumer` see events promptly.
            out.flush()?;
        } else {
            std::thread::sleep(FOLLOW_POLL);
        }
    }
}

/// A decision found by `find`, with the outcomes that confirm it.
struct Story {
    decision_line: String,
    seq: u64,
    key: (u64, u32),
    summary: String,
    outcomes: Vec<(String, String)>,
}

/// Prints the stories of the parcels that match (their decisions and outcomes); exit 1
/// when none does. Only matching records are rendered.
pub(crate) fn find(
    dir: &Path,
    parcel: Option<u64>,
    barcode: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let mut reader = open_reader(dir)?;
    let mut stories: Vec<Story> = Vec::new();
    // (parcel, scanner) -> index of its latest decision in `stories`.
    let mut latest: HashMap<(u64, u32), usize> = HashMap::new();
    let mut by_seq: HashMap<u64, usize> = HashMap::new();
    drain(&mut reader, |record, ids| {
        let line = || {
            if json {
                to_json_line(record, ids)
            } else {
                human(record)
            }
        };
        match &record.event {
            Event::Decision(d) => {
                let matches = parcel == Some(d.parcel_id)
                    || barcode.is_some_and(|code| d.barcodes.iter().any(|b| *b == code.as_bytes()));
                if matches {
                    let key = (d.parcel_id, d.scanner_id);
                    latest.insert(key, stories.len());
                    by_seq.insert(record.seq, stories.len());
                    let summary = match d.sent_us() {
                        Some(_) => format!(
                            "sent to chute {} ({}, {} rule, plan {} v{})",
                            d.chute,
                            d.reason.as_str(),
                            d.rule.as_str(),
                            d.plan_name,
                            d.plan_version
                        ),
                        None => format!(
                            "not actuated: {} (chute {} was decided, {})",
                            d.action.as_str(),
                            d.chute,
                            d.reason.as_str()
                        ),
                    };
                    stories.push(Story {
                        decision_line: line(),
                        seq: record.seq,
                        key,
                        summary,
                        outcomes: Vec::new(),
                    });
                }
            }
            Event::Outcome(o) => {
                let index = by_seq
                    .get(&o.decision_seq)
                    .or_else(|| latest.get(&(o.parcel_id, o.scanner_id)))
                    .copied();
                if let Some(story) = index.and_then(|index| stories.get_mut(index)) {
                    if story.key == (o.parcel_id, o.scanner_id) && record.seq > story.seq {
                        let verdict = format!("{} at chute {}", o.outcome.as_str(), o.chute);
                        story.outcomes.push((line(), verdict));
                    }
                }
            }
        }
        Ok(())
    })?;
    if stories.is_empty() {
        writeln!(out, "no event for that parcel in {}", dir.display())?;
        return Ok(ExitCode::from(1));
    }
    for story in &stories {
        writeln!(out, "{}", story.decision_line)?;
        for (line, _) in &story.outcomes {
            writeln!(out, "{line}")?;
        }
        if !json {
            let outcome = match story.outcomes.last() {
                Some((_, verdict)) => verdict.clone(),
                None => "no outcome from the PLC yet".to_string(),
            };
            writeln!(
                out,
                "=> parcel {} (scanner {}): {}; {}",
                story.key.0, story.key.1, story.summary, outcome
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_dir(dir: &Path, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    if !dir.is_dir() {
        anyhow::bail!("no journal at {}", dir.display());
    }
    let report = verify(dir)?;
    for segment in &report.segments {
        let name = segment
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(why) = &segment.bad_header {
            writeln!(
                out,
                "{name}: DAMAGED: unreadable header ({why}); {} bytes",
                segment.damaged_bytes
            )?;
            continue;
        }
        write!(
            out,
            "{name}: {} records, seq {}..={}",
            segment.records, segment.first_seq, segment.last_seq
        )?;
        match &segment.damage {
            Some((offset, damage)) => writeln!(
                out,
                "; DAMAGED at byte {offset}: {damage}; {} bytes after it",
                segment.damaged_bytes
            )?,
            None => writeln!(out, "; ok")?,
        }
    }
    for (before, after) in &report.gaps {
        writeln!(out, "GAP: sequences {}..={} missing", before + 1, after - 1)?;
    }
    let verdict = if report.is_clean() { "ok" } else { "DAMAGED" };
    writeln!(
        out,
        "{verdict}: {} segments, {} records, {} gaps",
        report.segments.len(),
        report.records,
        report.gaps.len()
    )?;
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn decode_stdin(ids: Option<(&str, &str)>, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let mut input = Vec::new();
    io::stdin()
        .lock()
        .take(DECODE_INPUT_BYTES_MAX)
        .read_to_end(&mut input)
        .context("reading stdin")?;
    let mut at = 0usize;
    let mut damaged = false;
    while let Some(rest) = input.get(at..).filter(|rest| !rest.is_empty()) {
        match record::decode(rest) {
            RecordDecoded::Complete { record, consumed } => {
                writeln!(out, "{}", to_json_line(&record, ids))?;
                at += consumed;
            }
            RecordDecoded::NeedMore => {
                writeln!(
                    out,
                    r#"{{"error":"truncated","offset":{at},"bytes":{}}}"#,
                    rest.len()
                )?;
                damaged = true;
                break;
            }
            RecordDecoded::Corrupt(error) => {
                // Records carry no magic: step a byte and try again, so records behind
                // the damage are still found.
                writeln!(out, r#"{{"error":"{}","offset":{at}}}"#, error.kind())?;
                damaged = true;
                at += 1;
                while let Some(next) = input.get(at..).filter(|r| !r.is_empty()) {
                    if matches!(record::decode(next), RecordDecoded::Complete { .. }) {
                        break;
                    }
                    at += 1;
                }
            }
        }
    }
    Ok(if damaged {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One line for people.
fn human(record: &Record<'_>) -> String {
    match &record.event {
        Event::Decision(d) => {
            let codes: Vec<String> = d
                .barcodes
                .iter()
                .map(|code| match BytesJson::of(code) {
                    BytesJson::Text(text) => text.to_string(),
                    BytesJson::Hex { hex } => format!("0x{hex}"),
                })
                .collect();
            let mut line = format!(
                "{} {} decision parcel={} scanner={} {} chute={} reason={} rule={} plan={}@{}",
                record.seq,
                utc(d.received_us),
                d.parcel_id,
                d.scanner_id,
                d.action.as_str(),
                d.chute,
                d.reason.as_str(),
                d.rule.as_str(),
                d.plan_name,
                d.plan_version,
            );
            line.push_str(&format!(" barcodes=[{}]", codes.join(",")));
            if !d.destination.is_empty() {
                line.push_str(&format!(" dest={}", String::from_utf8_lossy(d.destination)));
            }
            if let Some(sent_us) = d.sent_us() {
                line.push_str(&format!(
                    " plc_seq={} sent_after={}us",
                    d.plc_seq,
                    sent_us - d.received_us
                ));
            }
            if let Some(weight) = d.weight_g() {
                line.push_str(&format!(" weight={weight}g"));
            }
            if let Some([l, w, h]) = d.dimensions_mm() {
                line.push_str(&format!(" dims={l}x{w}x{h}mm"));
            }
            if d.pre_advice_seq != 0 {
                line.push_str(&format!(" pre_advice={}", d.pre_advice_seq));
            }
            line
        }
        Event::Outcome(o) => format!(
            "{} {} outcome parcel={} scanner={} {} chute={} plc_seq={} decision={}",
            record.seq,
            utc(o.confirmed_us),
            o.parcel_id,
            o.scanner_id,
            o.outcome.as_str(),
            o.chute,
            o.plc_seq,
            o.decision_seq,
        ),
    }
}

/// Microseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn utc(us: u64) -> String {
    let secs = us / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        us % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_renders_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            super::utc(1_732_000_000_123_456),
            "2024-11-19T07:06:40.123456Z"
        );
        assert_eq!(
            super::utc(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
    }
}
