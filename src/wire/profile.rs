//! Text profiles: how one make of scanner frames and lays out its ASCII telegrams.
//!
//! A [`TextProfile`] is validated once (from a built-in name or a [`TextProfileSpec`] read
//! from TOML configuration) and then only read by the decoder in `text.rs`. This module
//! checks that a profile makes sense; it does not decode telegrams.

use std::fmt;

use serde::Deserialize;

use super::binary::{BARCODE_PREFIX_BYTES, FRAME_BYTES_MAX, SCAN_BYTES_MIN};
use super::frame::BARCODES_MAX;

/// Start-of-telegram byte (STX).
pub const STX: u8 = 0x02;
/// End-of-telegram byte in STX/ETX framing (ETX).
pub const ETX: u8 = 0x03;

/// Most fields one telegram layout may name.
pub const TEXT_FIELDS_MAX: usize = 32;
/// Most no-read markers one profile may list.
pub const NO_READ_MARKERS_MAX: usize = 8;
/// Longest no-read marker, in bytes.
pub const NO_READ_MARKER_BYTES_MAX: usize = 32;
/// Telegram length limit when a profile does not set one, in bytes of content.
pub const TELEGRAM_BYTES_DEFAULT: usize = 1024;
/// Largest `telegram_bytes_max` a profile may set: any telegram that short still fits one
/// binary SCAN, so a text frame can always be re-encoded.
pub const TELEGRAM_BYTES_MAX: usize =
    FRAME_BYTES_MAX - SCAN_BYTES_MIN - BARCODES_MAX * BARCODE_PREFIX_BYTES;
/// Longest profile name, in bytes.
pub const PROFILE_NAME_BYTES_MAX: usize = 64;

const _: () = assert!(TELEGRAM_BYTES_DEFAULT <= TELEGRAM_BYTES_MAX);
const _: () = assert!(NO_READ_MARKER_BYTES_MAX < TELEGRAM_BYTES_DEFAULT);

/// How telegrams are delimited in the byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFraming {
    /// `STX` content `ETX`; bytes outside are garbage. CR/LF just before `ETX` are ignored.
    StxEtx,
    /// Content ended by `terminator` (LF covers CR LF); a leading `STX` is optional.
    Line {
        /// The byte that ends a telegram.
        terminator: u8,
    },
}

/// What one field of a telegram means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldRole {
    /// Decimal parcel or tray id (0 or empty: none given).
    ParcelId,
    /// One or more codes split by the code separator; no-read markers and empty slots
    /// are left out.
    Barcodes,
    /// Decimal weight, in grams unless a `weight_unit` field says `kg`.
    Weight,
    /// `g` or `kg` (empty: grams).
    WeightUnit,
    /// Decimal length, in millimetres unless a `length_unit` field says `cm`.
    Length,
    /// Decimal width.
    Width,
    /// Decimal height.
    Height,
    /// `mm` or `cm` for length, width and height (empty: millimetres).
    LengthUnit,
    /// Destination code (UTF-8, at most 128 bytes; empty: none).
    Destination,
    /// SICK-style read diagnostics `ST=n`: 5 sets the multi-read flag.
    ReadStatus,
    /// A field sortd does not use.
    Ignore,
}

impl FieldRole {
    const fn as_str(self) -> &'static str {
        match self {
            FieldRole::ParcelId => "parcel_id",
            FieldRole::Barcodes => "barcodes",
            FieldRole::Weight => "weight",
            FieldRole::WeightUnit => "weight_unit",
            FieldRole::Length => "length",
            FieldRole::Width => "width",
            FieldRole::Height => "height",
            FieldRole::LengthUnit => "length_unit",
            FieldRole::Destination => "destination",
            FieldRole::ReadStatus => "read_status",
            FieldRole::Ignore => "ignore",
        }
    }
}

/// A validated text telegram layout. Build one with [`TextProfile::builtin`] or
/// [`TextProfileSpec::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextProfile {
    pub(super) name: String,
    pub(super) framing: TextFraming,
    pub(super) field_separator: Option<u8>,
    pub(super) code_separator: Option<u8>,
    pub(super) fields: Vec<FieldRole>,
    pub(super) fields_min: usize,
    pub(super) no_read_markers: Vec<Vec<u8>>,
    pub(super) telegram_bytes_max: usize,
}

const BUILTIN_NAMES: [&str; 3] = ["sick-dws", "sick-clv", "datalogic"];

impl TextProfile {
    /// The built-in profile called `name`, if there is one (see [`Self::builtin_names`]).
    pub fn builtin(name: &str) -> Option<TextProfile> {
        builtin_spec(name)?.validate().ok()
    }

    /// Names of the built-in profiles.
    pub fn builtin_names() -> &'static [&'static str] {
        &BUILTIN_NAMES
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How telegrams are delimited.
    pub fn framing(&self) -> TextFraming {
        self.framing
    }

    /// The role of each field, in telegram order.
    pub fn fields(&self) -> &[FieldRole] {
        &self.fields
    }

    /// Longest telegram content accepted, in bytes (start and end bytes not counted).
    pub fn telegram_bytes_max(&self) -> usize {
        self.telegram_bytes_max
    }

    /// The byte between fields, if the layout has more than one.
    pub fn field_separator(&self) -> Option<u8> {
        self.field_separator
    }

    /// The byte between several codes in a `barcodes` field.
    pub fn code_separator(&self) -> Option<u8> {
        self.code_separator
    }

    /// The codes that mean "nothing read", in configuration order.
    pub fn no_read_markers(&self) -> impl Iterator<Item = &[u8]> {
        self.no_read_markers.iter().map(Vec::as_slice)
    }

    pub(super) fn is_no_read(&self, code: &[u8]) -> bool {
        self.no_read_markers.iter().any(|marker| marker == code)
    }
}

/// A text profile as written in TOML configuration, before validation.
///
/// ```toml
/// name = "hub-dws"
/// framing = "stx-etx"            # or "line-lf" (CR LF or LF), "line-cr"
/// field_separator = ";"          # one byte; needed when there is more than one field
/// code_separator = ","           # splits several codes in a `barcodes` field
/// fields = ["parcel_id", "barcodes", "weight", "length", "width", "height", "destination"]
/// fields_min = 2                 # trailing fields may be missing (default: all required)
/// no_read = ["NoRead"]           # codes that mean "nothing read"
/// telegram_bytes_max = 512       # default 1024, at most 4030
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextProfileSpec {
    /// Profile name, used in logs and `--profile`.
    pub name: String,
    /// `stx-etx`, `line-lf` or `line-cr`.
    pub framing: String,
    /// Byte between fields (a one-character string).
    #[serde(default)]
    pub field_separator: Option<String>,
    /// Byte between codes inside a `barcodes` field (a one-character string).
    #[serde(default)]
    pub code_separator: Option<String>,
    /// Role of each field in order.
    pub fields: Vec<FieldRole>,
    /// Fewest fields a telegram may have (default: all of them).
    #[serde(default)]
    pub fields_min: Option<usize>,
    /// Codes that mean "nothing read".
    #[serde(default)]
    pub no_read: Vec<String>,
    /// Longest telegram content in bytes.
    #[serde(default)]
    pub telegram_bytes_max: Option<usize>,
}

/// Which field of a [`TextProfileSpec`] is wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileError {
    /// The spec field at fault (`name`, `framing`, `fields`, ...).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "text profile `{}`: {}", self.field, self.problem)
    }
}

impl std::error::Error for ProfileError {}

fn profile_error(field: &'static str, problem: impl Into<String>) -> ProfileError {
    ProfileError {
        field,
        problem: problem.into(),
    }
}

impl TextProfileSpec {
    /// Checks the spec and builds the profile, or says which field is wrong.
    pub fn validate(&self) -> Result<TextProfile, ProfileError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= PROFILE_NAME_BYTES_MAX
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(profile_error(
                "name",
                format!("must be 1 to {PROFILE_NAME_BYTES_MAX} of a-z, 0-9, '-', '_'"),
            ));
        }
        let framing = match self.framing.as_str() {
            "stx-etx" => TextFraming::StxEtx,
            "line-lf" => TextFraming::Line { terminator: b'\n' },
            "line-cr" => TextFraming::Line { terminator: b'\r' },
            other => {
                return Err(profile_error(
                    "framing",
                    format!("`{other}`: expected stx-etx, line-lf or line-cr"),
                ));
            }
        };
        let field_separator = separator("field_separator", self.field_separator.as_deref())?;
        let code_separator = separator("code_separator", self.code_separator.as_deref())?;
        if field_separator.is_some() && field_separator == code_separator {
            return Err(profile_error(
                "code_separator",
                "must differ from field_separator",
            ));
        }
        self.check_fields(field_separator)?;
        let fields_min = self.fields_min.unwrap_or(self.fields.len());
        if fields_min == 0 || fields_min > self.fields.len() {
            return Err(profile_error(
                "fields_min",
                format!("must be 1 to {} (the number of fields)", self.fields.len()),
            ));
        }
        let no_read_markers = self.no_read_markers(field_separator, code_separator)?;
        let telegram_bytes_max = self.telegram_bytes_max.unwrap_or(TELEGRAM_BYTES_DEFAULT);
        if telegram_bytes_max == 0 || telegram_bytes_max > TELEGRAM_BYTES_MAX {
            return Err(profile_error(
                "telegram_bytes_max",
                format!("must be 1 to {TELEGRAM_BYTES_MAX}"),
            ));
        }
        Ok(TextProfile {
            name: self.name.clone(),
            framing,
            field_separator,
            code_separator,
            fields: self.fields.clone(),
            fields_min,
            no_read_markers,
            telegram_bytes_max,
        })
    }

    fn check_fields(&self, field_separator: Option<u8>) -> Result<(), ProfileError> {
        if self.fields.is_empty() || self.fields.len() > TEXT_FIELDS_MAX {
            return Err(profile_error(
                "fields",
                format!("must list 1 to {TEXT_FIELDS_MAX} roles"),
            ));
        }
        if self.fields.len() > 1 && field_separator.is_none() {
            return Err(profile_error(
                "field_separator",
                "needed when there is more than one field",
            ));
        }
        for (index, role) in self.fields.iter().enumerate() {
            let repeated = self.fields.get(..index).unwrap_or_default().contains(role);
            if *role != FieldRole::Ignore && repeated {
                return Err(profile_error(
                    "fields",
                    format!("`{}` appears more than once", role.as_str()),
                ));
            }
        }
        let names_parcel = self.fields.iter().any(|role| {
            matches!(
                role,
                FieldRole::Barcodes | FieldRole::Destination | FieldRole::ParcelId
            )
        });
        if !names_parcel {
            return Err(profile_error(
                "fields",
                "needs at least one of barcodes, destination, parcel_id",
            ));
        }
        Ok(())
    }

    fn no_read_markers(
        &self,
        field_separator: Option<u8>,
        code_separator: Option<u8>,
    ) -> Result<Vec<Vec<u8>>, ProfileError> {
        if self.no_read.len() > NO_READ_MARKERS_MAX {
            return Err(profile_error(
                "no_read",
                format!("at most {NO_READ_MARKERS_MAX} markers"),
            ));
        }
        let mut markers = Vec::with_capacity(self.no_read.len());
        for marker in &self.no_read {
            let bytes = marker.as_bytes();
            let clean = !bytes.is_empty()
                && bytes.len() <= NO_READ_MARKER_BYTES_MAX
                && bytes.trim_ascii() == bytes
                && !bytes.iter().any(|&b| {
                    b.is_ascii_control() || Some(b) == field_separator || Some(b) == code_separator
                });
            if !clean {
                return Err(profile_error(
                    "no_read",
                    format!(
                        "`{marker}`: must be 1 to {NO_READ_MARKER_BYTES_MAX} printable bytes \
                         without separators or surrounding spaces"
                    ),
                ));
            }
            markers.push(bytes.to_vec());
        }
        Ok(markers)
    }
}

fn separator(field: &'static str, value: Option<&str>) -> Result<Option<u8>, ProfileError> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value.as_bytes() {
        [byte] if !matches!(*byte, STX | ETX | b'\r' | b'\n' | b' ') && byte.is_ascii() => {
            Ok(Some(*byte))
        }
        _ => Err(profile_error(
            field,
            format!("`{value}`: must be one ASCII character other than STX, ETX, CR, LF, space"),
        )),
    }
}

fn builtin_spec(name: &str) -> Option<TextProfileSpec> {
    use FieldRole::*;
    let spec = |framing: &str,
                field_separator: Option<&str>,
                fields: &[FieldRole],
                fields_min: usize,
                no_read: &[&str],
                telegram_bytes_max: usize| TextProfileSpec {
        name: name.to_owned(),
        framing: framing.to_owned(),
        field_separator: field_separator.map(str::to_owned),
        code_separator: Some(",".to_owned()),
        fields: fields.to_vec(),
        fields_min: Some(fields_min),
        no_read: no_read.iter().map(|&marker| marker.to_owned()).collect(),
        telegram_bytes_max: Some(telegram_bytes_max),
    };
    match name {
        // index;code;weight;unit;scale flag;length;width;height;unit;status;volume
        "sick-dws" => Some(spec(
            "stx-etx",
            Some(";"),
            &[
                ParcelId, Barcodes, Weight, WeightUnit, Ignore, Length, Width, Height, LengthUnit,
                Ignore, Ignore,
            ],
            11,
            &["NoRead"],
            512,
        )),
        // code[,code...][;ST=n]
        "sick-clv" => Some(spec(
            "stx-etx",
            Some(";"),
            &[Barcodes, ReadStatus],
            1,
            &["NoRead"],
            1024,
        )),
        // code,code,...  CR LF, optional leading STX
        "datalogic" => Some(spec(
            "line-lf",
            None,
            &[Barcodes],
            1,
            &["?", "???????"],
            1024,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_validates() {
        for name in TextProfile::builtin_names() {
            let profile = TextProfile::builtin(name);
            assert_eq!(profile.map(|p| p.name), Some((*name).to_owned()));
        }
        assert!(TextProfile::builtin("cognex").is_none());
    }

    fn good_spec() -> TextProfileSpec {
        TextProfileSpec {
            name: "hub-dws".into(),
            framing: "stx-etx".into(),
            field_separator: Some(";".into()),
            code_separator: Some(",".into()),
            fields: vec![FieldRole::ParcelId, FieldRole::Barcodes, FieldRole::Weight],
            fields_min: None,
            no_read: vec!["NoRead".into()],
            telegram_bytes_max: None,
        }
    }

    #[test]
    fn bad_specs_name_the_field_at_fault() {
        type Edit = fn(&mut TextProfileSpec);
        let cases: &[(&str, Edit)] = &[
            ("name", |s| s.name = "has space".into()),
            ("name", |s| s.name = String::new()),
            ("framing", |s| s.framing = "stx".into()),
            ("field_separator", |s| s.field_separator = Some(";;".into())),
            ("field_separator", |s| s.field_separator = Some("\n".into())),
            ("field_separator", |s| s.field_separator = None),
            ("code_separator", |s| s.code_separator = Some(";".into())),
            ("fields", |s| s.fields.clear()),
            ("fields", |s| s.fields.push(FieldRole::Weight)),
            ("fields", |s| s.fields = vec![FieldRole::Weight]),
            ("fields", |s| s.fields = vec![FieldRole::Ignore; 33]),
            ("fields_min", |s| s.fields_min = Some(0)),
            ("fields_min", |s| s.fields_min = Some(4)),
            ("no_read", |s| s.no_read = vec![String::new()]),
            ("no_read", |s| s.no_read = vec!["No;Read".into()]),
            ("no_read", |s| s.no_read = vec![" x".into()]),
            ("no_read", |s| s.no_read = vec!["?".into(); 9]),
            ("telegram_bytes_max", |s| s.telegram_bytes_max = Some(0)),
            ("telegram_bytes_max", |s| {
                s.telegram_bytes_max = Some(TELEGRAM_BYTES_MAX + 1)
            }),
        ];
        assert!(good_spec().validate().is_ok());
        for (field, edit) in cases {
            let mut spec = good_spec();
            edit(&mut spec);
            assert_eq!(
                spec.validate().map_err(|e| e.field),
                Err(*field),
                "{spec:?}"
            );
        }
    }

    #[test]
    fn spec_reads_from_toml_and_rejects_unknown_keys() {
        let text = r#"
            name = "hub-dws"
            framing = "line-lf"
            field_separator = "|"
            fields = ["parcel_id", "barcodes", "ignore", "destination"]
            fields_min = 2
            no_read = ["NR"]
        "#;
        let spec: TextProfileSpec = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let profile = spec.validate().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(profile.framing(), TextFraming::Line { terminator: b'\n' });
        assert_eq!(profile.fields().len(), 4);
        let typo = format!("{text}\nfeild_separator = \";\"");
        assert!(toml::from_str::<TextProfileSpec>(&typo).is_err());
        let bad_role = text.replace("\"ignore\"", "\"volume\"");
        assert!(toml::from_str::<TextProfileSpec>(&bad_role).is_err());
    }
}
