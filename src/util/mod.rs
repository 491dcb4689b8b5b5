//! Small helpers shared by several layers.

pub mod fs;
pub mod prefetch;
pub mod rate_limit;
