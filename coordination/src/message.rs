//! What nodes say to each other about jobs.
//!
//! The network layer carries these as opaque, versioned payloads: a [`Run`] is gossiped as an
//! announce (and resent directly as [`JobMessage::Deliver`]); the rest travel point to point.
//! Every message is idempotent: a resend never makes a job run twice.

use std::fmt;

use jobs::{
    Fingerprint, JobSpec,
    components::OutputStream,
    executor::{Outcome, QueueKind},
};
use serde::{Deserialize, Serialize};

/// A node, as the network names it (its peer id in text form).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One submission (one `exec`, or one `orchestrate` of one or more files): its parents in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub run_id: String,
    pub originator: NodeId,
    pub parents: Vec<Parent>,
    /// Targets send live output lines while jobs run.
    pub stream: bool,
    /// Small files of the run's ADD/COPY jobs, carried along.
    #[serde(default)]
    pub inline: Vec<InlineBlob>,
    /// Nodes already known to hold files of this run (besides the originator).
    #[serde(default)]
    pub holders: Vec<(Fingerprint, Vec<NodeId>)>,
    /// Announce round: 0 for the first announce, then one more for each re-announce. Gossip
    /// names a message by its content; the round makes a re-announce a new message.
    #[serde(default)]
    pub round: u32,
}

/// A small file carried inside a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineBlob {
    pub hash: Fingerprint,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl Run {
    /// The parents (each with only its jobs for `node`) that `node` must run, in order.
    pub fn work_for(&self, node: &NodeId) -> Vec<(&Parent, Vec<&JobEntry>)> {
        let mut out = Vec::new();
        for parent in self.parents.iter().filter(|p| p.targets.contains(node)) {
            let jobs: Vec<&JobEntry> = parent
                .jobs
                .iter()
                .filter(|j| j.only_on.as_ref().is_none_or(|only| only == node))
                .collect();
            if !jobs.is_empty() {
                out.push((parent, jobs));
            }
        }
        out
    }

    /// Every node that has at least one job of this run.
    pub fn targets(&self) -> std::collections::BTreeSet<NodeId> {
        self.parents
            .iter()
            .flat_map(|p| {
                p.targets.iter().filter(|t| {
                    p.jobs
                        .iter()
                        .any(|j| j.only_on.as_ref().is_none_or(|o| o == *t))
                })
            })
            .cloned()
            .collect()
    }

    /// Every (job, node) pair that must report a result.
    pub fn expected_results(&self) -> Vec<(String, NodeId)> {
        let mut out = Vec::new();
        for p in &self.parents {
            for j in &p.jobs {
                match &j.only_on {
                    Some(node) => out.push((j.job_id.clone(), node.clone())),
                    None => out.extend(p.targets.iter().map(|t| (j.job_id.clone(), t.clone()))),
                }
            }
        }
        out
    }
}

/// One orchestration entry (a "parent"): jobs that run in order on each of its targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parent {
    pub parent_id: String,
    pub fingerprint: Fingerprint,
    pub queue: QueueKind,
    pub targets: Vec<NodeId>,
    pub jobs: Vec<JobEntry>,
}

/// One job of a parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEntry {
    pub job_id: String,
    pub spec: JobSpec,
    pub fingerprint: Fingerprint,
    /// `--run-once`: the one target chosen to run it; the others skip it.
    pub only_on: Option<NodeId>,
}

/// A job's result on one node, on its way to the originator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub run_id: String,
    pub node: NodeId,
    pub outcome: Outcome,
}

/// Lines of live output of one job on one node; `seq` orders batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputBatch {
    pub job_id: String,
    pub node: NodeId,
    pub seq: u64,
    pub lines: Vec<(OutputStream, String)>,
}

/// Point-to-point job traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobMessage {
    /// Originator → target: the run, sent directly (a resend, or instead of gossip).
    Deliver(Box<Run>),
    /// Target → originator: every job of the run for this target is queued.
    Ack { run_id: String, node: NodeId },
    /// Target → originator: finished jobs.
    Results(Vec<JobResult>),
    /// Target → originator: live output.
    Output(Vec<OutputBatch>),
    /// Target → originator: this node's value of a QUERY job's arg.
    QueryValue {
        job_id: String,
        node: NodeId,
        name: String,
        value: serde_json::Value,
    },
    /// Originator → targets: every target's value, `{"query": {node: {name: value}}}`.
    QueryResult {
        job_id: String,
        aggregate: serde_json::Value,
    },
    /// Waiter → node: say when the job with this fingerprint (or prefix) has finished here.
    WaitFor {
        wait_id: String,
        fingerprint: String,
    },
    /// Node → waiter: the awaited job finished here (`success` or `failed`).
    WaitDone {
        wait_id: String,
        node: NodeId,
        state: String,
    },
    /// Target → originator: this node now holds the file and can serve it.
    HaveBlob { hash: Fingerprint, node: NodeId },
}

/// The answer to a [`JobMessage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobReply {
    /// Taken (or already had it).
    Ok,
    /// Understood and refused, with the reason.
    Refused(String),
}
