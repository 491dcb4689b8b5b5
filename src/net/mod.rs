//! The event loops: scanner ingress (accept, read, decode, decide, hand off) and PLC
//! egress (finalize, send over the link, read acks, confirmations and chute status).
//!
//! They are thin shells over the sans-IO [`crate::core`] (scanner sessions and the egress
//! core): sockets, poll, wakers and threads live here, every decision of substance is
//! made there. With one ingress worker both can run on one thread ([`single`]). The
//! settings they run on are their own ([`settings`]); they import nothing from the
//! daemon.

pub mod cidr;
pub mod egress;
pub mod egress_events;
pub mod ingress;
pub mod link_socket;
pub mod plc_admission;
pub mod settings;
pub mod single;
