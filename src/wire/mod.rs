//! (wire layer: being written.)
