//! The real `sortd` binary over real sockets: the daemon, faults through the proxy, the
//! service (metrics, systemd) and the tools. One test binary, so CI links it once.

mod common;
mod daemon;
mod faults;
mod service;
mod tools;
