//! The operator's side of plans from the hub: [`publish`] stores a verified compiled plan
//! as the group's object in the plan bucket with its metadata (refusing a version not
//! above the published one unless it is a rollback), and [`group_status`] reads what is
//! published for a group and what each of its nodes reports running. `sortd plan
//! publish` and `sortd plan status` are thin shells over these; tests and the hub
//! scripts call them too.
//!
//! Two publishers racing for one group are not arbitrated: the later write wins (run
//! one publisher per group, e.g. the planning system's deployment job).

use std::fmt;
use std::path::Path;

use async_nats::jetstream::Context;
use async_nats::jetstream::object_store::ObjectMetadata;
use futures_util::StreamExt;

use super::hub_plan::{NodeStatus, PlanIdentity, PublishRefusal, PublishedPlan, publish_check};
use super::hub_plans::{plan_bucket, status_bucket};
use crate::plan::Plan;

/// At most this many node statuses are read for one report.
pub const NODES_MAX: usize = 10_000;

/// Why publishing or reading the status failed.
#[derive(Debug)]
pub enum AdminError {
    /// The plan does not open or verify.
    Plan(String),
    /// The version rule refused it.
    Refused(PublishRefusal),
    /// A NATS or JetStream call failed.
    Nats(String),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Plan(detail) | AdminError::Nats(detail) => f.write_str(detail),
            AdminError::Refused(refusal) => write!(f, "refused: {refusal}"),
        }
    }
}

impl std::error::Error for AdminError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AdminError::Refused(refusal) => Some(refusal),
            AdminError::Plan(_) | AdminError::Nats(_) => None,
        }
    }
}

/// Opens and fully verifies the compiled plan at `path`: what would be published.
pub fn verified_identity(path: &Path) -> Result<PlanIdentity, AdminError> {
    let plan = Plan::open(path)
        .map_err(|error| AdminError::Plan(format!("{}: {error}", path.display())))?;
    plan.verify()
        .map_err(|error| AdminError::Plan(format!("{}: {error}", path.display())))?;
    Ok(PlanIdentity {
        name: plan.name().to_string(),
        version: plan.version(),
        checksum: plan.checksum(),
    })
}

/// What [`publish`] did.
#[derive(Debug, Clone)]
pub struct Published {
    /// The plan now published.
    pub plan: PublishedPlan,
    /// The plan published before, if any (and readable).
    pub previous: Option<PublishedPlan>,
    /// Bytes stored.
    pub bytes: u64,
}

/// The published plan of `group` in `bucket`, if there is one with readable metadata.
pub async fn published_plan(
    js: &Context,
    bucket: &str,
    group: &str,
) -> Result<Option<PublishedPlan>, AdminError> {
    let store = plan_bucket(js, bucket, false)
        .await
        .map_err(AdminError::Nats);
    let Ok(store) = store else {
        return Ok(None);
    };
    match store.info(group).await {
        Ok(info) if !info.deleted => Ok(PublishedPlan::from_metadata(&info.metadata).ok()),
        Ok(_) => Ok(None),
        Err(error)
            if error.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(error) => Err(AdminError::Nats(format!(
            "reading {bucket}/{group}: {error}"
        ))),
    }
}

/// Stores the plan at `path` (verified: `identity` from [`verified_identity`]) as the
/// object `group` of `bucket` (created if missing), with its metadata.
pub async fn publish(
    js: &Context,
    bucket: &str,
    group: &str,
    path: &Path,
    identity: PlanIdentity,
    rollback: bool,
    now_unix_ms: u64,
) -> Result<Published, AdminError> {
    let previous = published_plan(js, bucket, group).await?;
    publish_check(previous.as_ref(), &identity, rollback).map_err(AdminError::Refused)?;
    let store = plan_bucket(js, bucket, true)
        .await
        .map_err(AdminError::Nats)?;
    let plan = PublishedPlan {
        identity,
        published_unix_ms: now_unix_ms,
        rollback,
    };
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|error| AdminError::Plan(format!("{}: {error}", path.display())))?;
    let meta = ObjectMetadata {
        name: group.to_string(),
        description: Some(format!(
            "sortd plan {:?} version {}",
            plan.identity.name, plan.identity.version
        )),
        metadata: plan.to_metadata(),
        ..Default::default()
    };
    let info = store
        .put(meta, &mut file)
        .await
        .map_err(|error| AdminError::Nats(format!("storing {bucket}/{group}: {error}")))?;
    Ok(Published {
        plan,
        previous,
        bytes: info.size as u64,
    })
}

/// A group as `plan status` shows it.
#[derive(Debug, Clone)]
pub struct GroupStatus {
    /// What is published for the group.
    pub published: Option<PublishedPlan>,
    /// Each node of the group (node id, status), sorted by node id.
    pub nodes: Vec<(String, NodeStatus)>,
}

/// Reads the published plan of `group` and the status of every node of the group.
pub async fn group_status(
    js: &Context,
    plan_bucket_name: &str,
    status_bucket_name: &str,
    group: &str,
) -> Result<GroupStatus, AdminError> {
    let published = published_plan(js, plan_bucket_name, group).await?;
    let mut nodes = Vec::new();
    if let Ok(store) = status_bucket(js, status_bucket_name, false).await {
        let mut keys = store
            .keys()
            .await
            .map_err(|error| AdminError::Nats(format!("listing {status_bucket_name}: {error}")))?;
        let mut seen = 0usize;
        while let Some(key) = keys.next().await {
            let key = key.map_err(|error| {
                AdminError::Nats(format!("listing {status_bucket_name}: {error}"))
            })?;
            seen += 1;
            if seen > NODES_MAX {
                break;
            }
            let value = store.get(key.as_str()).await.map_err(|error| {
                AdminError::Nats(format!("reading {status_bucket_name}/{key}: {error}"))
            })?;
            if let Some(status) = value.as_deref().and_then(NodeStatus::decode)
                && status.group == group
            {
                nodes.push((key, status));
            }
        }
    }
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(GroupStatus { published, nodes })
}
