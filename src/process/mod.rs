//! Everything that touches processes: PID files, the kernel's facts about a
//! PID (state, start time, owner), the identity judgement that decides
//! whether a PID is still our worker, spawning through the wrapper, and file
//! locks shared between monitors.

pub mod identity;
pub mod lock;
pub mod pidfile;
pub mod procinfo;
pub mod spawn;
pub mod stop;
