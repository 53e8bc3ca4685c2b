//! The directord-mesh daemon as a library.
//!
//! A [`Node`] composes the network ([`mesh`]), the job coordination state machines and the local
//! job executor, and owns what lives on the machine: the state directory ([`state`]), the control
//! socket ([`control`]) and the timers. The `directord-mesh` binary is a thin CLI over this crate;
//! tests and the simulator start many `Node`s in one process.

pub mod blobs;
pub mod config;
pub mod control;
pub mod daemon;
pub mod host;
pub mod records;
pub mod runs;
pub mod state;
pub mod store;
pub mod submit;
pub mod transfers;

#[cfg(test)]
mod test_support;

pub use config::{JoinOptions, NodeConfig};
pub use daemon::{Node, NodeError, VERSION};
