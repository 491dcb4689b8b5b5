//! Small helpers shared by several layers.

pub mod fs;
pub mod huge_pages;
pub mod prefetch;
pub mod rate_limit;
