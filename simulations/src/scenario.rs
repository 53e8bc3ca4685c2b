//! What a simulation does to the mesh: the scenarios and their knobs, shared by both tiers.

use std::{fmt, time::Duration};

/// One kind of run, as `--scenario` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// One job to every node.
    Fanout,
    /// `--jobs` jobs in one orchestration entry, to every node.
    Orchestration,
    /// One ADD of a `--file-mib` file to every node.
    Files,
    /// `--jobs` jobs to every node while `--churn` of the nodes are killed and restarted.
    Churn,
    /// `--jobs` jobs to every node while the mesh is split in two halves, then healed.
    Partition,
    /// `--jobs` jobs to every node while `--late` of them join only after the announce.
    LateJoin,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Fanout,
        Scenario::Orchestration,
        Scenario::Files,
        Scenario::Churn,
        Scenario::Partition,
        Scenario::LateJoin,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Orchestration => "orchestration",
            Scenario::Files => "files",
            Scenario::Churn => "churn",
            Scenario::Partition => "partition",
            Scenario::LateJoin => "late-join",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The knobs of one run.
#[derive(Debug, Clone)]
pub struct Workload {
    pub scenario: Scenario,
    pub nodes: usize,
    /// Jobs in the run (1 for `fanout` and `files`).
    pub jobs: usize,
    /// Size of the file of the `files` scenario.
    pub file_bytes: u64,
    /// How long each job runs on a target.
    pub job_time: Duration,
    /// `churn`: fraction of the nodes killed (each once) during the run.
    pub churn: f64,
    /// `churn`: how long a killed node stays down before it restarts.
    pub downtime: Duration,
    /// `partition`: when the split starts (after the submit) and how long it lasts.
    pub partition_at: Duration,
    pub partition_for: Duration,
    /// `late-join`: fraction of the nodes that join after the announce, within `late_within`.
    pub late: f64,
    pub late_within: Duration,
}

impl Workload {
    /// The scenario's defaults for `nodes` nodes.
    pub fn new(scenario: Scenario, nodes: usize) -> Workload {
        Workload {
            scenario,
            nodes,
            jobs: match scenario {
                Scenario::Fanout | Scenario::Files => 1,
                Scenario::Orchestration => 100,
                Scenario::Churn | Scenario::Partition | Scenario::LateJoin => 10,
            },
            file_bytes: 16 << 20,
            job_time: match scenario {
                Scenario::Churn | Scenario::Partition | Scenario::LateJoin => {
                    Duration::from_millis(100)
                }
                _ => Duration::from_millis(5),
            },
            churn: 0.1,
            downtime: Duration::from_secs(2),
            partition_at: Duration::ZERO,
            partition_for: Duration::from_secs(5),
            late: 0.1,
            late_within: Duration::from_secs(3),
        }
    }
}
