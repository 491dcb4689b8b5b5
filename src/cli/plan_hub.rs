//! `sortd plan publish` and `sortd plan status`: a compiled plan into the hub's plan
//! bucket for a group, and what each node of the group runs. Thin shells over
//! `sortd::export::hub_admin`, on a small tokio runtime of their own.
//!
//! Where NATS is: the shared options of `super::nats_args` (`--nats URL`, credentials
//! and TLS from files), or `--config FILE`, whose `[hub]` section gives the URLs,
//! credentials, TLS, buckets and (by default) the group, as a node configured with it
//! would use them (`enabled` need not be set).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use sortd::export::connection::{NatsConnection, connect};
use sortd::export::hub_admin::{self, AdminError};
use sortd::export::hub_config::{PLAN_BUCKET_DEFAULT, STATUS_BUCKET_DEFAULT};
use sortd::export::hub_plan::{NodeState, checksum_hex, node_state};

use super::nats_args::{self, NatsArgs};

/// Exit status of `plan status --strict` when a node does not run the published plan.
const EXIT_NODES_DIFFER: u8 = 2;
/// Milliseconds to connect and for each JetStream request, with the NATS options.
const TIMEOUT_MS: u64 = 10_000;

/// Where the hub is, and which group.
#[derive(Debug, clap::Args)]
pub struct HubArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// A sortd configuration whose [hub] section says how to reach NATS (URLs,
    /// credentials, TLS), the buckets and the default group; instead of the NATS options.
    #[arg(long, conflicts_with_all = nats_args::IDS)]
    config: Option<PathBuf>,
    /// The sorter group (default: the configuration's [hub] group).
    #[arg(long)]
    group: Option<String>,
}

/// Arguments of `sortd plan publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The compiled plan (`sortd plan compile`); it is fully verified first.
    plan: PathBuf,
    #[command(flatten)]
    hub: HubArgs,
    /// Publish even though the version is not above the published one: the group's
    /// nodes go back to this plan.
    #[arg(long)]
    rollback: bool,
}

/// Arguments of `sortd plan status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// Print JSON (the published plan and each node's status) instead of a table.
    #[arg(long)]
    json: bool,
    /// Exit 2 when no plan is published or a node does not run it.
    #[arg(long)]
    strict: bool,
}

/// The resolved connection, buckets and group.
struct Target {
    connection: NatsConnection,
    plan_bucket: String,
    status_bucket: String,
    group: String,
}

fn target(args: &HubArgs) -> anyhow::Result<Target> {
    if let Some(path) = &args.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file =
            sortd::daemon::config::parse(&text).with_context(|| format!("{}", path.display()))?;
        let mut section = file.hub;
        section.enabled = true;
        if let Some(group) = &args.group {
            section.group = group.clone();
        }
        if section.node.is_empty() {
            section.node = "operator".into();
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let settings = section
            .validate(base)
            .with_context(|| format!("{}: [hub]", path.display()))?
            .context("[hub] is not usable")?;
        return Ok(Target {
            connection: settings.connection,
            plan_bucket: settings.plan_bucket,
            status_bucket: settings.status_bucket,
            group: settings.group,
        });
    }
    let Some(group) = &args.group else {
        bail!("--group is required without --config");
    };
    let connection = args.nats.connection(TIMEOUT_MS)?;
    Ok(Target {
        connection,
        plan_bucket: PLAN_BUCKET_DEFAULT.into(),
        status_bucket: STATUS_BUCKET_DEFAULT.into(),
        group: group.clone(),
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")
}

async fn jetstream(target: &Target) -> anyhow::Result<async_nats::jetstream::Context> {
    let client = connect(&target.connection, "sortd-plan-cli".into(), None)
        .await
        .context("connecting to NATS")?;
    Ok(async_nats::jetstream::context::ContextBuilder::new()
        .timeout(target.connection.request_timeout)
        .build(client))
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// `sortd plan publish`.
pub fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    nats_args::exit_on_connect_error(publish_to_hub(args))
}

fn publish_to_hub(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let target = target(&args.hub)?;
    // Verified before anything reaches the hub.
    let identity = match hub_admin::verified_identity(&args.plan) {
        Ok(identity) => identity,
        Err(error) => {
            eprintln!("sortd: {error}");
            return Ok(ExitCode::from(super::EXIT_USAGE));
        }
    };
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let js = jetstream(&target).await?;
        let published = hub_admin::publish(
            &js,
            &target.plan_bucket,
            &target.group,
            &args.plan,
            identity,
            args.rollback,
            now_unix_ms(),
        )
        .await;
        anyhow::Ok(published)
    })?;
    match result {
        Ok(published) => {
            let plan = &published.plan;
            println!(
                "published plan \"{}\" version {} checksum {}{} for group {} in {} ({} bytes); before: {}",
                plan.identity.name,
                plan.identity.version,
                checksum_hex(plan.identity.checksum),
                if plan.rollback { " as a rollback" } else { "" },
                target.group,
                target.plan_bucket,
                published.bytes,
                published
                    .previous
                    .as_ref()
                    .map_or("none".to_string(), |previous| format!(
                        "version {}",
                        previous.identity.version
                    ))
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error @ AdminError::Refused(_)) | Err(error @ AdminError::Plan(_)) => {
            eprintln!("sortd: {error}");
            Ok(ExitCode::from(super::EXIT_USAGE))
        }
        Err(error) => Err(error.into()),
    }
}

/// `sortd plan status`.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    nats_args::exit_on_connect_error(group_status(args))
}

fn group_status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let target = target(&args.hub)?;
    let runtime = runtime()?;
    let status = runtime.block_on(async {
        let js = jetstream(&target).await?;
        let status = hub_admin::group_status(
            &js,
            &target.plan_bucket,
            &target.status_bucket,
            &target.group,
        )
        .await?;
        anyhow::Ok(status)
    })?;
    let states: Vec<Option<NodeState>> = status
        .nodes
        .iter()
        .map(|(_, node)| {
            status
                .published
                .as_ref()
                .map(|published| node_state(&published.identity, node))
        })
        .collect();
    if args.json {
        let nodes: Vec<serde_json::Value> = status
            .nodes
            .iter()
            .zip(&states)
            .map(|((id, node), state)| {
                serde_json::json!({
                    "node": id,
                    "status": node,
                    "state": state.map(|state| state.name().to_ascii_lowercase()),
                })
            })
            .collect();
        let document = serde_json::json!({
            "group": target.group,
            "published": status.published,
            "nodes": nodes,
        });
        println!("{document}");
    } else {
        match &status.published {
            Some(published) => println!(
                "group {}: published plan \"{}\" version {} checksum {}{}, at {} (unix ms)",
                target.group,
                published.identity.name,
                published.identity.version,
                checksum_hex(published.identity.checksum),
                if published.rollback {
                    " (rollback)"
                } else {
                    ""
                },
                published.published_unix_ms
            ),
            None => println!("group {}: no plan published", target.group),
        }
        println!(
            "{:<20} {:>8} {:<16} {:>15} {:<10} {:<8} state",
            "node", "version", "checksum", "since (unix ms)", "origin", "sortd"
        );
        for ((id, node), state) in status.nodes.iter().zip(&states) {
            println!(
                "{:<20} {:>8} {:<16} {:>15} {:<10} {:<8} {}",
                id,
                node.plan_version,
                node.plan_checksum,
                node.since_unix_ms,
                node.origin.name(),
                node.sortd_version,
                state.map_or("-", NodeState::name)
            );
        }
        let current = states
            .iter()
            .filter(|state| **state == Some(NodeState::Current))
            .count();
        println!(
            "{} node(s), {current} on the published plan",
            status.nodes.len()
        );
    }
    let all_current = status.published.is_some()
        && states
            .iter()
            .all(|state| *state == Some(NodeState::Current));
    if args.strict && !all_current {
        return Ok(ExitCode::from(EXIT_NODES_DIFFER));
    }
    Ok(ExitCode::SUCCESS)
}
