//! The scaling harness (`directord-mesh-sim`): how the mesh behaves from ten nodes to ten
//! thousand.
//!
//! - [`tier1`]: the real `coordination` state machines on a seeded, discrete-event network
//!   model; deterministic, thousands of nodes in seconds;
//! - [`tier2`]: real [`node::Node`]s over libp2p's memory transport in one process;
//! - [`tier3`]: real daemons as processes, optionally each in a network namespace (latency,
//!   loss and partitions on real links);
//! - [`scenario`]: what a run does to the mesh (fanout, orchestration, files, churn,
//!   partition, late join) and its knobs;
//! - [`network`]: tier 1's network (latency, loss, bandwidth) and wire-size estimates;
//! - [`metrics`]: what a run measured, as a table and CSV; [`plot`]: the PNG;
//! - [`signals`]: Ctrl-C during a run of real nodes stops it cleanly;
//! - [`output`]: lines for the terminal that a closed pipe does not turn into a panic.

pub mod metrics;
pub mod network;
pub mod output;
pub mod plot;
pub mod scenario;
pub mod signals;
pub mod tier1;
pub mod tier2;
pub mod tier3;
