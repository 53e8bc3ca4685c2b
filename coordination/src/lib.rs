//! What nodes say to each other about jobs, as sans-IO state machines.
//!
//! Each machine takes inputs together with the current time and returns actions; none of them
//! does I/O, spawns tasks or reads a clock, so the daemon and the deterministic simulator run
//! the same code.
//!
//! - [`message`]: the job traffic between nodes (runs, acknowledgements, results, output);
//! - [`acknowledgement`]: whether a target acknowledges a copy of a run it has;
//! - [`job_wait`]: JOB_WAIT's registrations, on the waiting node and on the nodes it asks;
//! - [`originator`]: the submitting node's run tracker (announce, acks, resends, results);
//! - [`outbox`]: a target's queue of results on their way to originators;
//! - [`query`]: the originator's collection of QUERY values and when the aggregate goes out;
//! - [`restart`]: a restarted target's jobs that had not finished: run again or interrupted;
//! - [`transfer`]: fetching one file chunk by chunk from the nodes that hold it.

pub mod acknowledgement;
pub mod job_wait;
pub mod message;
pub mod originator;
pub mod outbox;
pub mod query;
pub mod restart;
pub mod transfer;

pub use message::{
    Gossip, InlineBlob, JobEntry, JobMessage, JobReply, JobResult, NodeId, OutputBatch, Parent,
    Run, TargetKey, TargetKeys,
};
