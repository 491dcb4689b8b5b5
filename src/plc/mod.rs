//! (plc layer: being written.)
