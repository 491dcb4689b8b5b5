//! (plan layer: being written.)
