//! What the monitor tells people and scripts: the monitor.log writer and the
//! console lines, in exactly the shapes of the original.

pub mod log;
