//! Simulators of what surrounds sortd on a sorter: the PLC ([`plc`]).
//!
//! They are test and demo tools built on the same sans-IO link as the daemon.

pub mod plc;
