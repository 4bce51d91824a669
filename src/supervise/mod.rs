//! The pure core: from what was observed to what it means and what to do.
//! Nothing here touches a file, a process or the clock; every function takes
//! its facts and its "now" as arguments and is tested as a table.

pub mod assess;
pub mod lifecycle;
pub mod model;
pub mod plan;
pub mod policy;
pub mod stream_map;
pub mod streams;

#[cfg(test)]
mod props;
