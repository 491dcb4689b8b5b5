//! The event loops: scanner ingress (accept, read, decode, decide, hand off) and PLC
//! egress (finalize, send over the link, read acks, confirmations and chute status).
//!
//! They are thin shells over the sans-IO core ([`crate::wire`], [`crate::plan`],
//! [`crate::pipeline`], [`crate::plc`]); every decision of substance is made there.

pub mod cidr;
pub mod egress;
pub mod ingress;
pub mod input;
pub mod link_socket;
