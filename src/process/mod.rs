//! Everything that touches processes: PID files, the kernel's facts about a
//! PID (state, start time, owner), the identity judgement that decides
//! whether a PID is still our worker, spawning through the wrapper, and file
//! locks shared between monitors.

pub mod bounded;
pub mod detach;
pub mod docker;
pub mod identity;
pub mod lock;
pub mod pidfile;
pub mod procinfo;
pub mod proof;
pub mod safe_file;
pub mod spawn;
pub mod stop;

pub use detach::{detached, remember_descriptor_limit, restore_descriptor_limit};
