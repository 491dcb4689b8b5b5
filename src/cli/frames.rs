//! `sortd frames`: the integrator's tool for "what did my scanner send?".
//!
//! `decode` reads a byte stream (a capture file or stdin) through the binary decoder or a
//! text profile and prints one JSON line per frame or error; `encode` turns JSON lines
//! (the same shape `decode` prints) back into binary frames. All decoding is the wire
//! layer's; this file only reads, formats and writes.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sortd::wire::{
    self, Barcodes, Decoded, Frame, FrameDecodeError, Framing, Heartbeat, Hello, ScanFlags,
    ScanFrame, TextProfile,
};

/// Bytes read from the input per read call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Longest JSON line `encode` accepts, in bytes.
const JSON_LINE_BYTES_MAX: usize = 64 * 1024;

/// The `frames` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum FramesCommand {
    /// Decode a byte stream into one JSON line per frame or error.
    Decode {
        /// Text profile to decode with (sick-dws, sick-clv, datalogic); binary if absent.
        #[arg(long)]
        profile: Option<String>,
        /// Capture file to read; stdin if absent.
        file: Option<PathBuf>,
    },
    /// Encode JSON lines (as printed by `decode`) into binary frames on stdout.
    Encode {
        /// JSON lines file to read; stdin if absent.
        file: Option<PathBuf>,
    },
}

/// Run a `frames` subcommand.
pub fn run(command: FramesCommand) -> anyhow::Result<ExitCode> {
    match command {
        FramesCommand::Decode { profile, file } => {
            let framing = match profile {
                None => Framing::Binary,
                Some(name) => match TextProfile::builtin(&name) {
                    Some(profile) => Framing::Text(profile),
                    None => {
                        eprintln!(
                            "sortd: unknown profile `{name}`; built-in profiles: {}",
                            TextProfile::builtin_names().join(", ")
                        );
                        return Ok(ExitCode::from(super::EXIT_USAGE));
                    }
                },
            };
            let input = open_input(file.as_deref())?;
            let stdout = io::stdout().lock();
            decode_stream(&framing, input, &mut BufWriter::new(stdout))?;
            Ok(ExitCode::SUCCESS)
        }
        FramesCommand::Encode { file } => {
            let input = BufReader::new(open_input(file.as_deref())?);
            let stdout = io::stdout().lock();
            encode_lines(input, &mut BufWriter::new(stdout))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_input(file: Option<&Path>) -> anyhow::Result<Box<dyn Read>> {
    Ok(match file {
        Some(path) => {
            Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
        }
        None => Box::new(io::stdin().lock()),
    })
}

/// Decodes everything `input` holds, printing a JSON line per frame or skipped run.
fn decode_stream(
    framing: &Framing,
    mut input: impl Read,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES * 2);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    // Stream offset of buffer[0].
    let mut offset: u64 = 0;
    loop {
        let read = match input.read(&mut chunk) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error).context("cannot read input"),
        };
        let at_end = read == 0;
        buffer.extend_from_slice(chunk.get(..read).unwrap_or_default());
        let mut start = 0;
        while start < buffer.len() {
            let rest = buffer.get(start..).unwrap_or_default();
            let advance = match framing.decode(rest) {
                Decoded::Frame { frame, consumed } => {
                    writeln!(out, "{}", frame_json(&frame, offset, consumed)?)?;
                    consumed
                }
                Decoded::Skip { error, skip } => {
                    writeln!(out, "{}", error_json(&error, offset, skip)?)?;
                    skip
                }
                Decoded::NeedMore if at_end => {
                    let skip = framing.resync_offset(rest);
                    let error = FrameDecodeError::Truncated {
                        available: rest.len(),
                    };
                    writeln!(out, "{}", error_json(&error, offset, skip)?)?;
                    skip
                }
                Decoded::NeedMore => break,
            };
            start += advance;
            offset += advance as u64;
        }
        buffer.drain(..start);
        if at_end {
            out.flush()?;
            return Ok(());
        }
    }
}

fn bytes_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::from(text),
        Err(_) => json!({ "hex": hex(bytes) }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Field order of the JSON lines `decode` prints (serde_json would sort a map).
#[derive(Serialize)]
struct ScanLine<'a> {
    offset: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    bytes: usize,
    scanner_id: u32,
    sequence: u32,
    parcel_id: u64,
    scanned_at_us: u64,
    barcodes: Vec<Value>,
    destination: Option<Value>,
    weight_g: u32,
    length_mm: u16,
    width_mm: u16,
    height_mm: u16,
    flags: u16,
    flag_names: Vec<&'a str>,
}

#[derive(Serialize)]
struct HelloLine {
    offset: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    bytes: usize,
    scanner_id: u32,
    protocol_version: u8,
    heartbeat_interval_ms: u16,
    sent_at_us: u64,
}

#[derive(Serialize)]
struct HeartbeatLine {
    offset: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    bytes: usize,
    scanner_id: u32,
    sequence: u32,
    sent_at_us: u64,
}

#[derive(Serialize)]
struct ErrorLine {
    offset: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    error: &'static str,
    detail: String,
    skipped: usize,
}

fn frame_json(frame: &Frame<'_>, offset: u64, consumed: usize) -> anyhow::Result<String> {
    let line = match frame {
        Frame::Scan(scan) => serde_json::to_string(&ScanLine {
            offset,
            kind: "scan",
            bytes: consumed,
            scanner_id: scan.scanner_id,
            sequence: scan.sequence,
            parcel_id: scan.parcel_id,
            scanned_at_us: scan.scanned_at_us,
            barcodes: scan.barcodes.iter().map(|code| bytes_json(code)).collect(),
            destination: scan.destination.map(bytes_json),
            weight_g: scan.weight_g,
            length_mm: scan.length_mm,
            width_mm: scan.width_mm,
            height_mm: scan.height_mm,
            flags: scan.flags.bits(),
            flag_names: ScanFlags::NAMED
                .iter()
                .filter(|(flag, _)| scan.flags.contains(*flag))
                .map(|(_, name)| *name)
                .collect(),
        }),
        Frame::Hello(hello) => serde_json::to_string(&HelloLine {
            offset,
            kind: "hello",
            bytes: consumed,
            scanner_id: hello.scanner_id,
            protocol_version: hello.protocol_version,
            heartbeat_interval_ms: hello.heartbeat_interval_ms,
            sent_at_us: hello.sent_at_us,
        }),
        Frame::Heartbeat(heartbeat) => serde_json::to_string(&HeartbeatLine {
            offset,
            kind: "heartbeat",
            bytes: consumed,
            scanner_id: heartbeat.scanner_id,
            sequence: heartbeat.sequence,
            sent_at_us: heartbeat.sent_at_us,
        }),
    };
    Ok(line?)
}

fn error_json(error: &FrameDecodeError, offset: u64, skipped: usize) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&ErrorLine {
        offset,
        kind: "error",
        error: error.kind(),
        detail: error.to_string(),
        skipped,
    })?)
}

/// A barcode or destination in JSON: a string, or `{"hex": "..."}` for bytes that are
/// not UTF-8.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BytesJson {
    Text(String),
    Hex { hex: String },
}

impl BytesJson {
    fn into_bytes(self) -> anyhow::Result<Vec<u8>> {
        match self {
            BytesJson::Text(text) => Ok(text.into_bytes()),
            BytesJson::Hex { hex } => {
                if hex.len() % 2 != 0 {
                    bail!("hex `{hex}` has an odd number of digits");
                }
                (0..hex.len())
                    .step_by(2)
                    .map(|at| {
                        hex.get(at..at + 2)
                            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                            .with_context(|| format!("bad hex `{hex}`"))
                    })
                    .collect()
            }
        }
    }
}

/// One JSON input line for `encode`. `offset`, `bytes` and `flag_names` (printed by
/// `decode`) are accepted and ignored; omitted numbers are 0.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum FrameJson {
    Scan {
        #[serde(default, rename = "offset")]
        _offset: Option<u64>,
        #[serde(default, rename = "bytes")]
        _bytes: Option<u64>,
        #[serde(default)]
        scanner_id: u32,
        #[serde(default)]
        sequence: u32,
        #[serde(default)]
        parcel_id: u64,
        #[serde(default)]
        scanned_at_us: u64,
        #[serde(default)]
        barcodes: Vec<BytesJson>,
        #[serde(default)]
        destination: Option<BytesJson>,
        #[serde(default)]
        weight_g: u32,
        #[serde(default)]
        length_mm: u16,
        #[serde(default)]
        width_mm: u16,
        #[serde(default)]
        height_mm: u16,
        #[serde(default)]
        flags: u16,
        #[serde(default, rename = "flag_names")]
        _flag_names: Option<Vec<String>>,
    },
    Hello {
        #[serde(default, rename = "offset")]
        _offset: Option<u64>,
        #[serde(default, rename = "bytes")]
        _bytes: Option<u64>,
        #[serde(default)]
        scanner_id: u32,
        protocol_version: u8,
        #[serde(default)]
        heartbeat_interval_ms: u16,
        #[serde(default)]
        sent_at_us: u64,
    },
    Heartbeat {
        #[serde(default, rename = "offset")]
        _offset: Option<u64>,
        #[serde(default, rename = "bytes")]
        _bytes: Option<u64>,
        #[serde(default)]
        scanner_id: u32,
        #[serde(default)]
        sequence: u32,
        #[serde(default)]
        sent_at_us: u64,
    },
}

/// Encodes each JSON line of `input` as one binary frame; lines of type `error` (as
/// printed by `decode`) and blank lines are passed over.
fn encode_lines(input: impl BufRead, out: &mut impl Write) -> anyhow::Result<()> {
    let mut frame_bytes = Vec::with_capacity(wire::FRAME_BYTES_MAX);
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("cannot read line {number}"))?;
        if line.len() > JSON_LINE_BYTES_MAX {
            bail!("line {number}: longer than {JSON_LINE_BYTES_MAX} bytes");
        }
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(&line).with_context(|| format!("line {number}: not JSON"))?;
        if value.get("type").and_then(Value::as_str) == Some("error") {
            continue;
        }
        let parsed: FrameJson =
            serde_json::from_value(value).with_context(|| format!("line {number}: not a frame"))?;
        frame_bytes.clear();
        encode_json_frame(parsed, &mut frame_bytes).with_context(|| format!("line {number}"))?;
        out.write_all(&frame_bytes)?;
    }
    out.flush()?;
    Ok(())
}

fn encode_json_frame(parsed: FrameJson, out: &mut Vec<u8>) -> anyhow::Result<()> {
    match parsed {
        FrameJson::Scan {
            scanner_id,
            sequence,
            parcel_id,
            scanned_at_us,
            barcodes,
            destination,
            weight_g,
            length_mm,
            width_mm,
            height_mm,
            flags,
            ..
        } => {
            let codes = barcodes
                .into_iter()
                .map(BytesJson::into_bytes)
                .collect::<anyhow::Result<Vec<_>>>()?;
            let destination = destination.map(BytesJson::into_bytes).transpose()?;
            let code_slices: Vec<&[u8]> = codes.iter().map(Vec::as_slice).collect();
            let Some(barcodes) = Barcodes::from_slice(&code_slices) else {
                bail!("{} barcodes, at most {}", codes.len(), wire::BARCODES_MAX);
            };
            let scan = ScanFrame {
                scanner_id,
                sequence,
                parcel_id,
                scanned_at_us,
                barcodes,
                destination: destination.as_deref(),
                weight_g,
                length_mm,
                width_mm,
                height_mm,
                flags: ScanFlags::from_bits(flags),
            };
            wire::encode(&Frame::Scan(scan), out)?;
        }
        FrameJson::Hello {
            scanner_id,
            protocol_version,
            heartbeat_interval_ms,
            sent_at_us,
            ..
        } => {
            let hello = Hello {
                scanner_id,
                protocol_version,
                heartbeat_interval_ms,
                sent_at_us,
            };
            wire::encode(&Frame::Hello(hello), out)?;
        }
        FrameJson::Heartbeat {
            scanner_id,
            sequence,
            sent_at_us,
            ..
        } => {
            let heartbeat = Heartbeat {
                scanner_id,
                sequence,
                sent_at_us,
            };
            wire::encode(&Frame::Heartbeat(heartbeat), out)?;
        }
    }
    Ok(())
}
