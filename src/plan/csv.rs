//! The CSV plan source and the compiler: parse `kind,key,chutes` lines into a
//! [`PlanBuilder`], collect every error with its line, and write the compiled file
//! atomically ([`compile_file`]).
//!
//! Format (README / PLAN.md): a required header `kind,key,chutes`; then lines
//! `meta,name,TEXT`, `meta,version,N`, `prefix,KEY,CHUTES`, `exact,KEY,CHUTES`,
//! `default,WHICH,CHUTE`. Fields are separated by commas with no quoting; spaces and tabs
//! around fields are ignored; `meta,name` takes the rest of the line, commas included.
//! Lines starting with `#` and blank lines are ignored; CR LF line ends and a UTF-8 BOM
//! are accepted. This module parses and writes; lookups live in `plan::lookup`.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read};
use std::path::Path;

use super::build::{BuiltPlan, PlanBuilder};
use super::error::{CompileErrorKind, CompileErrors};
use super::format::LINE_BYTES_MAX;
use super::types::{CHUTES_PER_RULE_MAX, Chutes, DefaultKind, RuleKind};
use crate::decision::ChuteNumber;

/// The required header line.
pub const CSV_HEADER: &str = "kind,key,chutes";

/// Read buffer for CSV sources and write buffer for compiled plans.
const IO_BUFFER_BYTES: usize = 1 << 20;

/// What [`compile_file`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileReport {
    /// The plan name.
    pub name: String,
    /// The plan version written to the header.
    pub version: u32,
    /// Number of `exact` keys.
    pub exact_keys: u64,
    /// Number of `prefix` keys.
    pub prefix_keys: u64,
    /// Distinct chute lists.
    pub chute_sets: u32,
    /// Size of the compiled file.
    pub file_bytes: u64,
    /// CSV lines read (comments and blanks included).
    pub lines: u64,
}

/// Parse a chutes field: 1 to 4 distinct numbers 1..=65535 separated by `|`.
pub fn parse_chutes(field: &str) -> Result<Chutes, CompileErrorKind> {
    let bad = |why| CompileErrorKind::BadChute {
        field: CompileErrorKind::quote(field.as_bytes()),
        why,
    };
    if field.is_empty() {
        return Err(bad("no chute given"));
    }
    let mut chutes = [0 as ChuteNumber; CHUTES_PER_RULE_MAX];
    let mut count = 0;
    for part in field.split('|') {
        let part = part.trim_matches([' ', '\t']);
        if part.is_empty() {
            return Err(bad("empty chute between `|`"));
        }
        if !part.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(bad("not a number"));
        }
        let chute: u32 = part.parse().map_err(|_| bad("out of range 1..=65535"))?;
        if chute == 0 || chute > u32::from(ChuteNumber::MAX) {
            return Err(bad("out of range 1..=65535"));
        }
        let chute = chute as ChuteNumber;
        if chutes.get(..count).unwrap_or(&[]).contains(&chute) {
            return Err(bad("chute listed twice"));
        }
        let Some(slot) = chutes.get_mut(count) else {
            return Err(bad("more than 4 chutes"));
        };
        *slot = chute;
        count += 1;
    }
    Chutes::new(chutes.get(..count).unwrap_or(&[])).ok_or(bad("invalid chute list"))
}

/// Parser state across lines.
struct CsvParser {
    builder: PlanBuilder,
    errors: CompileErrors,
    seen_header: bool,
    name_line: Option<u32>,
    version_line: Option<u32>,
    default_lines: [Option<u32>; 4],
}

impl CsvParser {
    fn line(&mut self, line_number: u32, raw: &[u8]) {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let raw = if line_number == 1 {
            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
        } else {
            raw
        };
        let Ok(text) = std::str::from_utf8(raw) else {
            self.errors.push(line_number, CompileErrorKind::BadUtf8);
            return;
        };
        let trimmed = text.trim_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return;
        }
        if !self.seen_header {
            self.seen_header = true;
            let is_header = trimmed
                .split(',')
                .map(|field| field.trim_matches([' ', '\t']))
                .eq(CSV_HEADER.split(','));
            if is_header {
                return;
            }
            self.errors
                .push(line_number, CompileErrorKind::MissingHeader);
        }
        if let Err(kind) = self.entry(line_number, trimmed) {
            self.errors.push(line_number, kind);
        }
    }

    fn entry(&mut self, line_number: u32, text: &str) -> Result<(), CompileErrorKind> {
        let (kind, rest) = text.split_once(',').unwrap_or((text, ""));
        let kind = kind.trim_matches([' ', '\t']);
        if kind == "meta" {
            let Some((item, value)) = rest.split_once(',') else {
                return Err(CompileErrorKind::ColumnCount {
                    got: 1 + usize::from(!rest.is_empty()),
                });
            };
            return self.meta(
                line_number,
                item.trim_matches([' ', '\t']),
                value.trim_matches([' ', '\t']),
            );
        }
        let mut fields = text.split(',').map(|field| field.trim_matches([' ', '\t']));
        let columns = text.split(',').count();
        let (Some(_), Some(key), Some(chutes), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            if matches!(kind, "prefix" | "exact" | "default") {
                return Err(CompileErrorKind::ColumnCount { got: columns });
            }
            return Err(CompileErrorKind::UnknownKind {
                kind: CompileErrorKind::quote(kind.as_bytes()),
            });
        };
        match kind {
            "prefix" | "exact" => {
                let rule_kind = if kind == "exact" {
                    RuleKind::Exact
                } else {
                    RuleKind::Prefix
                };
                let key_error = match key.len() {
                    0 => Some(CompileErrorKind::EmptyKey),
                    bytes if bytes > super::format::KEY_BYTES_MAX => {
                        Some(CompileErrorKind::KeyTooLong { bytes })
                    }
                    _ => None,
                };
                let chutes = parse_chutes(chutes);
                if let Some(error) = key_error {
                    if let Err(chute_error) = chutes {
                        self.errors.push(line_number, error);
                        return Err(chute_error);
                    }
                    return Err(error);
                }
                self.builder
                    .add(rule_kind, key.as_bytes(), chutes?, line_number)
            }
            "default" => {
                let Some(which) = DefaultKind::from_name(key) else {
                    return Err(CompileErrorKind::UnknownDefault {
                        name: CompileErrorKind::quote(key.as_bytes()),
                    });
                };
                let parsed = parse_chutes(chutes)?;
                let [chute] = parsed.as_slice() else {
                    return Err(CompileErrorKind::DefaultNotSingle { which });
                };
                let slot = self.default_lines.get_mut(which.index()).ok_or(
                    CompileErrorKind::UnknownDefault {
                        name: which.as_str().to_string(),
                    },
                )?;
                if let Some(first_line) = *slot {
                    return Err(CompileErrorKind::DuplicateDefault { which, first_line });
                }
                *slot = Some(line_number);
                self.builder.set_default(which, *chute);
                Ok(())
            }
            _ => Err(CompileErrorKind::UnknownKind {
                kind: CompileErrorKind::quote(kind.as_bytes()),
            }),
        }
    }

    fn meta(&mut self, line_number: u32, item: &str, value: &str) -> Result<(), CompileErrorKind> {
        match item {
            "name" => {
                if let Some(first_line) = self.name_line {
                    return Err(CompileErrorKind::DuplicateMeta {
                        item: "name",
                        first_line,
                    });
                }
                self.name_line = Some(line_number);
                self.builder.set_name(value)
            }
            "version" => {
                if let Some(first_line) = self.version_line {
                    return Err(CompileErrorKind::DuplicateMeta {
                        item: "version",
                        first_line,
                    });
                }
                self.version_line = Some(line_number);
                let bad = || CompileErrorKind::BadVersion {
                    value: CompileErrorKind::quote(value.as_bytes()),
                };
                if !value.bytes().all(|byte| byte.is_ascii_digit()) {
                    return Err(bad());
                }
                let version: u32 = value.parse().map_err(|_| bad())?;
                self.builder.set_version(version).map_err(|_| bad())
            }
            _ => Err(CompileErrorKind::UnknownMeta {
                name: CompileErrorKind::quote(item.as_bytes()),
            }),
        }
    }
}

/// Compile CSV from a reader. `source_name` prefixes error messages (usually the path).
/// Returns the laid-out plan and the number of lines read.
pub fn compile_reader<R: BufRead>(
    source_name: &str,
    mut reader: R,
) -> Result<(BuiltPlan, u64), CompileErrors> {
    let mut parser = CsvParser {
        builder: PlanBuilder::new(),
        errors: CompileErrors::new(source_name),
        seen_header: false,
        name_line: None,
        version_line: None,
        default_lines: [None; 4],
    };
    let mut buffer = Vec::with_capacity(LINE_BYTES_MAX + 1);
    let mut line_number: u32 = 0;
    let mut lines: u64 = 0;
    loop {
        buffer.clear();
        let read = (&mut reader)
            .take(LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut buffer);
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                parser.errors.push(
                    line_number.saturating_add(1),
                    CompileErrorKind::Io {
                        doing: "reading the CSV",
                        kind: error.kind(),
                    },
                );
                break;
            }
        }
        line_number = line_number.saturating_add(1);
        lines += 1;
        if buffer.len() > LINE_BYTES_MAX && buffer.last() != Some(&b'\n') {
            parser
                .errors
                .push(line_number, CompileErrorKind::LineTooLong);
            if let Err(error) = skip_line(&mut reader) {
                parser.errors.push(
                    line_number,
                    CompileErrorKind::Io {
                        doing: "reading the CSV",
                        kind: error.kind(),
                    },
                );
                break;
            }
            continue;
        }
        parser.line(line_number, &buffer);
    }
    if !parser.seen_header {
        parser.errors.push(1, CompileErrorKind::MissingHeader);
    }
    let mut errors = parser.errors;
    match parser.builder.finish() {
        Ok(built) if errors.is_empty() => Ok((built, lines)),
        Ok(_) => {
            errors.sort();
            Err(errors)
        }
        Err(finish_errors) => {
            for error in finish_errors.errors {
                errors.push(error.line, error.kind);
            }
            errors.errors_dropped = errors
                .errors_dropped
                .saturating_add(finish_errors.errors_dropped);
            errors.sort();
            Err(errors)
        }
    }
}

/// Discard the rest of an over-long line.
fn skip_line<R: BufRead>(reader: &mut R) -> io::Result<()> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        if let Some(newline) = buffer.iter().position(|&byte| byte == b'\n') {
            reader.consume(newline + 1);
            return Ok(());
        }
        let consumed = buffer.len();
        reader.consume(consumed);
    }
}

/// Compile CSV text held in memory into the compiled file's bytes.
pub fn compile_str(source_name: &str, csv: &str) -> Result<Vec<u8>, CompileErrors> {
    let (built, _) = compile_reader(source_name, csv.as_bytes())?;
    Ok(built.to_bytes())
}

fn io_errors(source_name: &str, doing: &'static str, error: &io::Error) -> CompileErrors {
    let mut errors = CompileErrors::new(source_name);
    errors.push(
        0,
        CompileErrorKind::Io {
            doing,
            kind: error.kind(),
        },
    );
    errors
}

/// Compile a CSV file into a plan file: all CSV errors (up to the limit) are reported
/// with their lines; on success the plan is written to a temporary file in the target
/// directory, fsynced, renamed over `out_path` and the directory fsynced, so a reader
/// never sees a half-written plan and a mapped plan is never truncated in place.
pub fn compile_file(csv_path: &Path, out_path: &Path) -> Result<CompileReport, CompileErrors> {
    let source_name = csv_path.display().to_string();
    let file =
        File::open(csv_path).map_err(|error| io_errors(&source_name, "opening the CSV", &error))?;
    let (built, lines) = compile_reader(
        &source_name,
        BufReader::with_capacity(IO_BUFFER_BYTES, file),
    )?;
    write_atomically(&built, out_path)
        .map_err(|(doing, error)| io_errors(&out_path.display().to_string(), doing, &error))?;
    Ok(CompileReport {
        name: built.name().to_string(),
        version: built.version(),
        exact_keys: built.exact_keys(),
        prefix_keys: built.prefix_keys(),
        chute_sets: built.chute_sets(),
        file_bytes: built.file_bytes(),
        lines,
    })
}

/// Write `built` to `out_path` through a temporary file in the same directory.
pub fn write_atomically(
    built: &BuiltPlan,
    out_path: &Path,
) -> Result<(), (&'static str, io::Error)> {
    let directory = match out_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let file_name = out_path.file_name().ok_or((
        "naming the output",
        io::Error::new(io::ErrorKind::InvalidInput, "output path has no file name"),
    ))?;
    let temp_path = directory.join(format!(
        ".{}.tmp.{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = crate::util::fs::create_private_file(&temp_path)
            .map_err(|error| ("creating the temporary file", error))?;
        let mut writer = BufWriter::with_capacity(IO_BUFFER_BYTES, file);
        built
            .write_to(&mut writer)
            .map_err(|error| ("writing the plan", error))?;
        let file = writer
            .into_inner()
            .map_err(|error| ("writing the plan", error.into_error()))?;
        file.sync_all()
            .map_err(|error| ("syncing the plan", error))?;
        drop(file);
        fs::rename(&temp_path, out_path).map_err(|error| ("renaming into place", error))?;
        File::open(&directory)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| ("syncing the directory", error))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chutes_field_table() {
        let cases: &[(&str, Result<&[u16], &str>)] = &[
            ("7", Ok(&[7])),
            ("12|13", Ok(&[12, 13])),
            (" 1 | 2|3 |65535", Ok(&[1, 2, 3, 65535])),
            ("", Err("no chute given")),
            ("0", Err("out of range 1..=65535")),
            ("65536", Err("out of range 1..=65535")),
            ("99999999999999999999", Err("out of range 1..=65535")),
            ("-1", Err("not a number")),
            ("a", Err("not a number")),
            ("1||2", Err("empty chute between `|`")),
            ("1|2|3|4|5", Err("more than 4 chutes")),
            ("4|4", Err("chute listed twice")),
        ];
        for (field, expected) in cases {
            let got = parse_chutes(field);
            match (expected, got) {
                (Ok(chutes), Ok(parsed)) => assert_eq!(parsed.as_slice(), *chutes, "{field}"),
                (Err(why), Err(CompileErrorKind::BadChute { why: got, .. })) => {
                    assert_eq!(got, *why, "{field}")
                }
                (expected, got) => panic!("{field:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }
}
