//! The pure rules of plans from the hub: what a published plan's metadata says
//! ([`PublishedPlan`], stored as Object Store metadata and in the node's `plan.json`),
//! which plan a node takes ([`judge`]: versions only move forward unless the object says
//! rollback), which plan a node starts with ([`start_choice`]), what `plan publish`
//! accepts ([`publish_check`]), and the status a node reports in the Key-Value bucket
//! ([`NodeStatus`], [`node_state`]).
//!
//! No IO, no clock: callers pass times in. The watcher that downloads and swaps is
//! [`super::hub_plans`]; publishing and status for operators are [`super::hub_admin`].

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Metadata key: the plan's name.
pub const META_NAME: &str = "sortd-plan-name";
/// Metadata key: the plan's version (decimal).
pub const META_VERSION: &str = "sortd-plan-version";
/// Metadata key: the plan's checksum (16 lower-case hex digits).
pub const META_CHECKSUM: &str = "sortd-plan-checksum";
/// Metadata key: when it was published, in milliseconds since the Unix epoch.
pub const META_PUBLISHED: &str = "sortd-published-unix-ms";
/// Metadata key: `true` when the operator published an explicit rollback.
pub const META_ROLLBACK: &str = "sortd-rollback";
/// A node status value larger than this is refused.
pub const STATUS_BYTES_MAX: usize = 4096;
/// A metadata value longer than this is refused.
const META_VALUE_BYTES_MAX: usize = 1024;

/// What identifies a plan's content: name, version and checksum (the plan file's
/// footer checksum).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanIdentity {
    /// The plan's name.
    pub name: String,
    /// The plan's version.
    pub version: u32,
    /// The plan file's checksum (16 hex digits in JSON: a u64 does not survive
    /// JavaScript's numbers).
    #[serde(with = "hex_checksum")]
    pub checksum: u64,
}

mod hex_checksum {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(checksum: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::checksum_hex(*checksum))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

/// A plan as published for a group: its identity, when, and whether it is a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPlan {
    /// Name, version and checksum.
    #[serde(flatten)]
    pub identity: PlanIdentity,
    /// When it was published, in milliseconds since the Unix epoch.
    pub published_unix_ms: u64,
    /// Published with `--rollback`: nodes take it even when it is not newer.
    pub rollback: bool,
}

/// Why a published plan's metadata is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaError {
    /// A key is missing.
    Missing(&'static str),
    /// A key's value is malformed.
    Malformed(&'static str),
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaError::Missing(key) => write!(f, "metadata {key} is missing"),
            MetaError::Malformed(key) => write!(f, "metadata {key} is malformed"),
        }
    }
}

impl std::error::Error for MetaError {}

/// A checksum as written in metadata and status: 16 lower-case hex digits.
pub fn checksum_hex(checksum: u64) -> String {
    format!("{checksum:016x}")
}

impl PublishedPlan {
    /// The Object Store metadata of this plan.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            (META_NAME.to_string(), self.identity.name.clone()),
            (META_VERSION.to_string(), self.identity.version.to_string()),
            (
                META_CHECKSUM.to_string(),
                checksum_hex(self.identity.checksum),
            ),
            (
                META_PUBLISHED.to_string(),
                self.published_unix_ms.to_string(),
            ),
            (META_ROLLBACK.to_string(), self.rollback.to_string()),
        ])
    }

    /// Reads the metadata `plan publish` wrote; anything missing or malformed is an
    /// error (such an object is refused).
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Result<PublishedPlan, MetaError> {
        let get = |key: &'static str| -> Result<&str, MetaError> {
            let value = metadata.get(key).ok_or(MetaError::Missing(key))?;
            if value.len() > META_VALUE_BYTES_MAX {
                return Err(MetaError::Malformed(key));
            }
            Ok(value.as_str())
        };
        let version: u32 = get(META_VERSION)?
            .parse()
            .map_err(|_| MetaError::Malformed(META_VERSION))?;
        if version == 0 {
            return Err(MetaError::Malformed(META_VERSION));
        }
        let checksum_text = get(META_CHECKSUM)?;
        if checksum_text.len() != 16 {
            return Err(MetaError::Malformed(META_CHECKSUM));
        }
        let checksum = u64::from_str_radix(checksum_text, 16)
            .map_err(|_| MetaError::Malformed(META_CHECKSUM))?;
        let published_unix_ms = get(META_PUBLISHED)?
            .parse()
            .map_err(|_| MetaError::Malformed(META_PUBLISHED))?;
        let rollback = match get(META_ROLLBACK)? {
            "true" => true,
            "false" => false,
            _ => return Err(MetaError::Malformed(META_ROLLBACK)),
        };
        Ok(PublishedPlan {
            identity: PlanIdentity {
                name: get(META_NAME)?.to_string(),
                version,
                checksum,
            },
            published_unix_ms,
            rollback,
        })
    }
}

/// What a node does with a published plan, given the plan it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Download, verify and swap it in.
    Take,
    /// It is the plan running (same version and checksum): nothing to do.
    Running,
    /// Not newer than the running plan and not a rollback: ignored.
    NotNewer,
}

/// The version rule: a node takes a published plan whose version is above the running
/// one's, or any other plan when the object says rollback; never the plan it runs.
pub fn judge(running: &PlanIdentity, published: &PublishedPlan) -> Verdict {
    let candidate = &published.identity;
    if candidate.version == running.version && candidate.checksum == running.checksum {
        Verdict::Running
    } else if candidate.version > running.version || published.rollback {
        Verdict::Take
    } else {
        Verdict::NotNewer
    }
}

/// Why `plan publish` refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishRefusal {
    /// The version is not above the one published; `--rollback` to publish it anyway.
    NotNewer {
        /// The version published now.
        published: u32,
        /// The version offered.
        offered: u32,
    },
}

impl fmt::Display for PublishRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishRefusal::NotNewer { published, offered } => write!(
                f,
                "version {offered} is not above the published version {published}; \
                 publish with --rollback to make nodes go back to it"
            ),
        }
    }
}

impl std::error::Error for PublishRefusal {}

/// What `plan publish` accepts: a version above the published one, or anything with
/// `rollback`.
pub fn publish_check(
    published: Option<&PublishedPlan>,
    offered: &PlanIdentity,
    rollback: bool,
) -> Result<(), PublishRefusal> {
    match published {
        Some(published) if !rollback && offered.version <= published.identity.version => {
            Err(PublishRefusal::NotNewer {
                published: published.identity.version,
                offered: offered.version,
            })
        }
        _ => Ok(()),
    }
}

/// Which plan a node starts with (and takes on SIGHUP) when it takes plans from the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartChoice {
    /// The configured plan (`[plan] path`).
    Configured,
    /// The last good plan from the hub, kept in `[hub] dir`.
    Hub,
}

/// The start rule: the last good plan from the hub when there is one and it is a
/// rollback (the hub pinned it) or its version is at least the configured plan's;
/// otherwise the configured plan. `configured` is `None` when the configured plan does
/// not open or verify, `hub` `None` when no good hub plan is on disk.
pub fn start_choice(
    configured_version: Option<u32>,
    hub: Option<&PublishedPlan>,
) -> Option<StartChoice> {
    match (configured_version, hub) {
        (None, None) => None,
        (Some(_), None) => Some(StartChoice::Configured),
        (None, Some(_)) => Some(StartChoice::Hub),
        (Some(configured), Some(hub)) => {
            if hub.rollback || hub.identity.version >= configured {
                Some(StartChoice::Hub)
            } else {
                Some(StartChoice::Configured)
            }
        }
    }
}

/// Where the running plan came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanOrigin {
    /// The configured plan file.
    Configured,
    /// A plan from the hub.
    Hub,
}

impl PlanOrigin {
    /// The label in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            PlanOrigin::Configured => "configured",
            PlanOrigin::Hub => "hub",
        }
    }
}

/// The base plan a node runs (a pre-advice compaction does not change it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPlan {
    /// Name, version and checksum.
    pub identity: PlanIdentity,
    /// Since when, in milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// Where it came from.
    pub origin: PlanOrigin,
}

/// What a node reports in the status bucket under its node id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's group.
    pub group: String,
    /// The plan's name.
    pub plan_name: String,
    /// The plan's version.
    pub plan_version: u32,
    /// The plan's checksum, 16 hex digits.
    pub plan_checksum: String,
    /// Running since, in milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// Where the plan came from.
    pub origin: PlanOrigin,
    /// The node's sortd version.
    pub sortd_version: String,
}

impl NodeStatus {
    /// The status of a node of `group` running `running`.
    pub fn new(group: &str, running: &RunningPlan) -> NodeStatus {
        NodeStatus {
            group: group.to_string(),
            plan_name: running.identity.name.clone(),
            plan_version: running.identity.version,
            plan_checksum: checksum_hex(running.identity.checksum),
            since_unix_ms: running.since_unix_ms,
            origin: running.origin,
            sortd_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Decodes a status value; `None` when it is too large or not a node status.
    pub fn decode(bytes: &[u8]) -> Option<NodeStatus> {
        if bytes.len() > STATUS_BYTES_MAX {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }
}

/// A node's plan against the published one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// It runs the published plan.
    Current,
    /// It runs an older version.
    Behind,
    /// It runs another plan of the same or a newer version (a local plan, or the
    /// published one is a rollback it has not taken yet).
    Differs,
}

impl NodeState {
    /// The word `plan status` prints.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Current => "current",
            NodeState::Behind => "BEHIND",
            NodeState::Differs => "DIFFERS",
        }
    }
}

/// How a node's status compares with the published plan.
pub fn node_state(published: &PlanIdentity, node: &NodeStatus) -> NodeState {
    if node.plan_version == published.version
        && node.plan_checksum == checksum_hex(published.checksum)
    {
        NodeState::Current
    } else if node.plan_version < published.version {
        NodeState::Behind
    } else {
        NodeState::Differs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(version: u32, checksum: u64) -> PlanIdentity {
        PlanIdentity {
            name: format!("wave {version}"),
            version,
            checksum,
        }
    }

    fn published(version: u32, checksum: u64, rollback: bool) -> PublishedPlan {
        PublishedPlan {
            identity: identity(version, checksum),
            published_unix_ms: 1_700_000_000_000,
            rollback,
        }
    }

    #[test]
    fn metadata_round_trips_and_refuses_what_is_missing_or_malformed() {
        let plan = published(7, 0xdead_beef_0000_0001, true);
        let metadata = plan.to_metadata();
        assert_eq!(metadata[META_CHECKSUM], "deadbeef00000001");
        assert_eq!(PublishedPlan::from_metadata(&metadata), Ok(plan));
        let cases: [(&str, Option<&str>, MetaError); 7] = [
            (META_VERSION, None, MetaError::Missing(META_VERSION)),
            (META_VERSION, Some("0"), MetaError::Malformed(META_VERSION)),
            (META_VERSION, Some("-1"), MetaError::Malformed(META_VERSION)),
            (
                META_CHECKSUM,
                Some("abc"),
                MetaError::Malformed(META_CHECKSUM),
            ),
            (
                META_CHECKSUM,
                Some("zzzzzzzzzzzzzzzz"),
                MetaError::Malformed(META_CHECKSUM),
            ),
            (
                META_ROLLBACK,
                Some("yes"),
                MetaError::Malformed(META_ROLLBACK),
            ),
            (META_NAME, None, MetaError::Missing(META_NAME)),
        ];
        for (key, value, expected) in cases {
            let mut metadata = published(7, 1, false).to_metadata();
            match value {
                Some(value) => metadata.insert(key.to_string(), value.to_string()),
                None => metadata.remove(key),
            };
            assert_eq!(
                PublishedPlan::from_metadata(&metadata),
                Err(expected),
                "{key}={value:?}"
            );
        }
    }

    #[test]
    fn versions_only_move_forward_unless_the_object_says_rollback() {
        let running = identity(5, 50);
        let cases = [
            (published(6, 60, false), Verdict::Take),
            (published(5, 50, false), Verdict::Running),
            (published(5, 50, true), Verdict::Running),
            (published(5, 51, false), Verdict::NotNewer),
            (published(4, 40, false), Verdict::NotNewer),
            (published(4, 40, true), Verdict::Take),
            (published(5, 51, true), Verdict::Take),
        ];
        for (plan, expected) in cases {
            assert_eq!(judge(&running, &plan), expected, "{plan:?}");
        }
    }

    #[test]
    fn publish_refuses_a_version_not_above_the_published_one_without_rollback() {
        let current = published(5, 50, false);
        assert!(publish_check(None, &identity(1, 1), false).is_ok());
        assert!(publish_check(Some(&current), &identity(6, 60), false).is_ok());
        assert_eq!(
            publish_check(Some(&current), &identity(5, 51), false),
            Err(PublishRefusal::NotNewer {
                published: 5,
                offered: 5
            })
        );
        assert!(publish_check(Some(&current), &identity(4, 40), false).is_err());
        assert!(publish_check(Some(&current), &identity(4, 40), true).is_ok());
    }

    #[test]
    fn the_start_rule_prefers_the_hub_plan_unless_the_configured_one_is_newer() {
        let cases = [
            (None, None, None),
            (Some(3), None, Some(StartChoice::Configured)),
            (None, Some(published(2, 2, false)), Some(StartChoice::Hub)),
            (
                Some(3),
                Some(published(3, 3, false)),
                Some(StartChoice::Hub),
            ),
            (
                Some(3),
                Some(published(4, 4, false)),
                Some(StartChoice::Hub),
            ),
            (
                Some(3),
                Some(published(2, 2, false)),
                Some(StartChoice::Configured),
            ),
            (Some(3), Some(published(2, 2, true)), Some(StartChoice::Hub)),
        ];
        for (configured, hub, expected) in cases {
            assert_eq!(
                start_choice(configured, hub.as_ref()),
                expected,
                "{configured:?} {hub:?}"
            );
        }
    }

    #[test]
    fn node_status_round_trips_and_compares_with_the_published_plan() {
        let running = RunningPlan {
            identity: identity(5, 50),
            since_unix_ms: 1,
            origin: PlanOrigin::Hub,
        };
        let status = NodeStatus::new("north", &running);
        let bytes = serde_json::to_vec(&status).unwrap();
        assert_eq!(NodeStatus::decode(&bytes), Some(status.clone()));
        assert_eq!(NodeStatus::decode(b"{\"group\":1}"), None);
        assert_eq!(NodeStatus::decode(&vec![b' '; STATUS_BYTES_MAX + 1]), None);
        assert_eq!(node_state(&identity(5, 50), &status), NodeState::Current);
        assert_eq!(node_state(&identity(6, 60), &status), NodeState::Behind);
        assert_eq!(node_state(&identity(4, 40), &status), NodeState::Differs);
        assert_eq!(node_state(&identity(5, 51), &status), NodeState::Differs);
    }
}
