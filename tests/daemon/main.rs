//! The real `sortd` binary over real sockets: the daemon, faults through the proxy, the
//! service (metrics, systemd) and the tools. One test binary, so CI links it once.

mod check_and_generate;
mod common;
mod cost;
mod daemon;
mod events;
mod export_nats;
mod faults;
mod hostile;
mod hub_cluster;
mod hub_plans;
mod hub_preadvice;
mod hub_preadvice_stream;
mod nats_cli;
mod preadvice;
mod prometheus;
mod service;
mod tools;
mod web;
