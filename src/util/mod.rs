//! Small helpers shared by several layers.

pub mod rate_limit;
