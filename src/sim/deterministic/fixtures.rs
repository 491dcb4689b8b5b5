//! The plans a simulation swaps between: a few good compiled plans and corrupt copies
//! (truncated, bit-flipped, empty, missing), written once to a private temporary folder.
//!
//! The files never change after they are written, so every seed sees the same bytes.
//! Corrupt copies are made from plans whose versions are never published intact: a
//! decision stamped with one of those versions proves an unverified plan was served.
//! Also here: the keys the simulated scanners draw their parcels from.

use std::path::{Path, PathBuf};

use crate::plan::compile_str;
use crate::plan::generate::tracking_number;

/// Exact keys in every plan; scanners also send keys beyond this range (misses).
pub(super) const EXACT_KEYS: u64 = 240;
/// Seed of the synthetic tracking numbers.
const TRACKING_SEED: u64 = 0x51_u64;
/// Chutes the plans use for rules; the simulated PLC marks these full or disabled.
pub(super) const RULE_CHUTES_MAX: u16 = 40;
/// Versions of the good plans.
const GOOD_VERSIONS: [u32; 3] = [1, 2, 3];
/// Versions of the plans that are only ever offered corrupt.
const CORRUPT_SOURCE_VERSIONS: [u32; 2] = [71, 72];

/// Destination codes the scanners send: the plans have rules for some of them.
pub(super) const DESTINATIONS: [&str; 8] = [
    "330106001",
    "3301",
    "330205",
    "33",
    "440312",
    "4403",
    "110101",
    "520000",
];

const _: () = assert!(
    RULE_CHUTES_MAX < 996,
    "rule chutes stay clear of the defaults"
);

/// Why the fixtures could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixtureError {
    /// A file or folder could not be written.
    Io {
        /// What was being done.
        doing: &'static str,
        /// The error's kind.
        kind: std::io::ErrorKind,
    },
    /// A generated plan did not compile (a bug in this module).
    Compile {
        /// The plan's version.
        version: u32,
        /// The compiler's first message.
        message: String,
    },
}

impl std::fmt::Display for FixtureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FixtureError::Io { doing, kind } => write!(f, "plan fixtures: {doing}: {kind}"),
            FixtureError::Compile { version, message } => {
                write!(f, "plan fixture v{version} does not compile: {message}")
            }
        }
    }
}

impl std::error::Error for FixtureError {}

/// One plan file a swap may be attempted with.
#[derive(Debug, Clone)]
pub(super) struct PlanFile {
    pub path: PathBuf,
    /// The version in the file's header (for corrupt files: of the plan they came from).
    pub version: u32,
    /// Whether the file is intact (a swap must succeed) or corrupt (it must be refused).
    pub intact: bool,
    /// What was done to it, for failure messages.
    pub label: &'static str,
}

/// The plan files, in a folder removed when this is dropped.
#[derive(Debug)]
pub struct PlanFixtures {
    _folder: tempfile::TempDir,
    pub(super) files: Vec<PlanFile>,
}

/// The exact key `index` (hits below [`EXACT_KEYS`], misses above).
pub(super) fn exact_key(index: u64) -> [u8; 15] {
    tracking_number(TRACKING_SEED, index)
}

fn plan_csv(version: u32) -> String {
    use std::fmt::Write as _;
    let chute = |index: u64| 1 + ((index * u64::from(version) + u64::from(version)) % 40) as u16;
    let mut csv =
        format!("kind,key,chutes\nmeta,name,simulation plan v{version}\nmeta,version,{version}\n");
    for index in 0..EXACT_KEYS {
        let key = exact_key(index);
        let key = String::from_utf8_lossy(&key);
        let primary = chute(index);
        if index % 3 == 0 {
            let alternate = 1 + primary % RULE_CHUTES_MAX;
            let _ = writeln!(csv, "exact,{key},{primary}|{alternate}");
        } else {
            let _ = writeln!(csv, "exact,{key},{primary}");
        }
    }
    let prefixes: [(&str, [u16; 2]); 5] = [
        ("33", [21, 22]),
        ("3301", [23, 24]),
        ("330106", [25, 26]),
        ("44", [27, 28]),
        ("4403", [29, 30]),
    ];
    for (key, [a, b]) in prefixes {
        let shift = (version as u16) % 5;
        let _ = writeln!(csv, "prefix,{key},{}|{}", a + shift, b + shift);
    }
    csv.push_str(
        "default,no_read,998\ndefault,no_rule,999\ndefault,multi_read,997\ndefault,late,996\n",
    );
    csv
}

fn compiled(version: u32) -> Result<Vec<u8>, FixtureError> {
    compile_str("simulation", &plan_csv(version)).map_err(|errors| FixtureError::Compile {
        version,
        message: errors.lines().next().unwrap_or_default(),
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), FixtureError> {
    std::fs::write(path, bytes).map_err(|error| FixtureError::Io {
        doing: "writing a plan",
        kind: error.kind(),
    })
}

/// The corrupt variants of `bytes`: each a label and the damaged bytes.
fn corruptions(bytes: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let flip = |at: usize, bit: u8| {
        let mut copy = bytes.to_vec();
        if let Some(byte) = copy.get_mut(at) {
            *byte ^= 1 << bit;
        }
        copy
    };
    let cut = |keep: usize| {
        bytes
            .get(..keep.min(bytes.len()))
            .unwrap_or_default()
            .to_vec()
    };
    let len = bytes.len();
    vec![
        ("half-written", cut(len / 2)),
        ("last byte missing", cut(len.saturating_sub(1))),
        ("header only", cut(64)),
        ("empty", Vec::new()),
        ("bit flip in the header", flip(9, 3)),
        ("bit flip in the records", flip(len / 2, 5)),
        ("bit flip near the end", flip(len * 7 / 8, 0)),
        ("bit flip in the checksum", flip(len.saturating_sub(2), 7)),
    ]
}

impl PlanFixtures {
    /// Writes the plans to a new temporary folder.
    pub fn create() -> Result<PlanFixtures, FixtureError> {
        let folder = tempfile::Builder::new()
            .prefix("sortd-sim-plans")
            .tempdir()
            .map_err(|error| FixtureError::Io {
                doing: "creating the folder",
                kind: error.kind(),
            })?;
        let mut files = Vec::new();
        for version in GOOD_VERSIONS {
            let path = folder.path().join(format!("good-v{version}.sortplan"));
            write(&path, &compiled(version)?)?;
            files.push(PlanFile {
                path,
                version,
                intact: true,
                label: "intact",
            });
        }
        for version in CORRUPT_SOURCE_VERSIONS {
            let bytes = compiled(version)?;
            for (index, (label, damaged)) in corruptions(&bytes).into_iter().enumerate() {
                let path = folder
                    .path()
                    .join(format!("bad-v{version}-{index}.sortplan"));
                write(&path, &damaged)?;
                files.push(PlanFile {
                    path,
                    version,
                    intact: false,
                    label,
                });
            }
        }
        files.push(PlanFile {
            path: folder.path().join("missing.sortplan"),
            version: 0,
            intact: false,
            label: "missing file",
        });
        Ok(PlanFixtures {
            _folder: folder,
            files,
        })
    }

    /// The first good plan: what every run starts with.
    pub(super) fn initial(&self) -> Option<&PlanFile> {
        self.files.iter().find(|file| file.intact)
    }

    /// Whether `version` belongs to a plan that is ever published intact.
    pub(super) fn is_publishable(version: u32) -> bool {
        GOOD_VERSIONS.contains(&version)
    }

    /// How many files a swap can be attempted with.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are none (never, once created).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}
