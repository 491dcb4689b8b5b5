//! Simulators of what surrounds sortd on a sorter: the PLC ([`plc`]), and a deterministic
//! simulation of the whole core with its surroundings ([`deterministic`]).
//!
//! They are test and demo tools built on the same sans-IO link as the daemon.

pub mod deterministic;
pub mod plc;
pub mod plc_model;
