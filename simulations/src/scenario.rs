//! What a simulation does to the mesh: the scenarios and their knobs, shared by every tier,
//! and the orchestrations and disruptions tiers 2 and 3 run them with.

use std::{fmt, path::Path, time::Duration};

use rand::Rng;

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
    /// Every node caches a value, then one QUERY job collects all of them at the submitter,
    /// which gossips the whole set to every node.
    Query,
    /// One node runs a job for `--job-time` while every node's JOB_WAIT waits for it there.
    JobWait,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Fanout,
        Scenario::Orchestration,
        Scenario::Files,
        Scenario::Churn,
        Scenario::Partition,
        Scenario::LateJoin,
        Scenario::Query,
        Scenario::JobWait,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Orchestration => "orchestration",
            Scenario::Files => "files",
            Scenario::Churn => "churn",
            Scenario::Partition => "partition",
            Scenario::LateJoin => "late-join",
            Scenario::Query => "query",
            Scenario::JobWait => "job-wait",
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
    /// Jobs in the run (1 for `fanout` and `files`; `query` and `job-wait` run their two).
    pub jobs: usize,
    /// Size of the file of the `files` scenario.
    pub file_bytes: u64,
    /// `query`: each node's value is padded to about this many bytes (0: a plain token of
    /// some 13 bytes, `token-<pid>`).
    pub value_bytes: usize,
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
                Scenario::Query | Scenario::JobWait => 2,
                Scenario::Orchestration => 100,
                Scenario::Churn | Scenario::Partition | Scenario::LateJoin => 10,
            },
            file_bytes: 16 << 20,
            value_bytes: 0,
            job_time: match scenario {
                Scenario::Churn | Scenario::Partition | Scenario::LateJoin => {
                    Duration::from_millis(100)
                }
                Scenario::JobWait => Duration::from_millis(500),
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

/// The arg the `query` scenario collects.
pub const QUERY_ARG: &str = "sim_token";

/// Name of node `i` in tiers 2 and 3.
pub fn node_name(i: usize) -> String {
    format!("node-{i}")
}

/// `job-wait`: the node that runs the awaited job (the first one after the submitter, node 0;
/// the submitter itself in a mesh of one).
pub fn awaited_node(nodes: usize) -> usize {
    usize::from(nodes > 1)
}

/// `job-wait`: the awaited job, as `VERB inline` (a WAIT of `job_time`).
pub fn awaited_job(job_time: Duration) -> (&'static str, String) {
    ("WAIT", format!("--seconds {}", job_time.as_secs_f64()))
}

impl Workload {
    /// The targets the run is submitted to (overriding its entries'): every node, but none
    /// for `job-wait`, whose entries name theirs.
    pub fn run_targets(&self) -> Vec<String> {
        match self.scenario {
            Scenario::JobWait => Vec::new(),
            _ => (0..self.nodes).map(node_name).collect(),
        }
    }

    /// Results the run brings: one per job per node, but `job-wait`'s awaited job runs on
    /// one node only.
    pub fn expected_results(&self) -> usize {
        match self.scenario {
            Scenario::JobWait => self.nodes + 1,
            _ => self.nodes * self.jobs,
        }
    }

    /// `job-wait`: the fingerprint of the awaited job (what JOB_WAIT names).
    pub fn awaited_fingerprint(&self) -> Result<String, String> {
        let (verb, inline) = awaited_job(self.job_time);
        match jobs::JobSpec::parse(verb, &inline, &Default::default())? {
            jobs::ParseOutcome::Spec(spec) => Ok(spec.fingerprint().to_string()),
            jobs::ParseOutcome::Help(_) => Err("the awaited job parsed as help".into()),
        }
    }
}

/// Something that happens to one node during a run (tiers 2 and 3): it goes down `down`
/// after the submit (`None`: before the submit, a late joiner) and is back `back` after it.
#[derive(Debug, Clone, Copy)]
pub struct Disruption {
    pub node: usize,
    pub down: Option<Duration>,
    pub back: Duration,
}

impl Workload {
    /// The run's orchestration for every scenario but `files`: `jobs` jobs in one entry,
    /// `WAIT --seconds` of `job_time` each, or `ECHO` for 0 s; for `query`, a RUN that caches
    /// a value of the node's own and the QUERY of it; for `job-wait`, the awaited WAIT on one
    /// node and a JOB_WAIT for it on every node (each entry names its targets: submit it
    /// without targets of its own, [`Workload::run_targets`]).
    pub fn jobs_yaml(&self) -> Result<String, String> {
        if self.scenario == Scenario::JobWait {
            let (verb, inline) = awaited_job(self.job_time);
            let fingerprint = self.awaited_fingerprint()?;
            let awaited = node_name(awaited_node(self.nodes));
            let everyone: Vec<String> = (0..self.nodes).map(node_name).collect();
            return Ok(format!(
                "- targets: [{awaited}]\n  jobs:\n  - {verb}: {inline}\n- targets: [{}]\n  jobs:\n  - JOB_WAIT: {fingerprint} --identity {awaited}\n",
                everyone.join(", ")
            ));
        }
        if self.scenario == Scenario::Query {
            let value = match self.value_bytes {
                0 => "echo token-$$".to_string(),
                n => format!("printf token-%s- $$; head -c {n} /dev/zero | tr '\\0' x"),
            };
            return Ok(format!(
                "- jobs:\n  - RUN: --skip-cache --stdout-arg {QUERY_ARG} {value}\n  - QUERY: {QUERY_ARG}\n"
            ));
        }
        let mut text = String::from("- jobs:\n");
        for i in 0..self.jobs.max(1) {
            if self.job_time.is_zero() {
                text.push_str(&format!("  - ECHO: job {i} of the simulated run\n"));
            } else {
                text.push_str(&format!(
                    "  - WAIT: --skip-cache --seconds {}\n",
                    self.job_time.as_secs_f64()
                ));
            }
        }
        Ok(text)
    }

    /// `files`: the setup orchestration that gives each node a destination directory of its
    /// own under `root` (the nodes share one filesystem, and an unchanged file already at
    /// DEST is not sent again), as the arg `sim_dest`.
    pub fn files_setup_yaml(&self, root: &Path) -> String {
        (0..self.nodes)
            .map(|i| {
                let dest = root.join("landed").join(node_name(i));
                format!(
                    "- targets: [{}]\n  jobs:\n  - ARG: sim_dest {}\n  - WORKDIR: {}\n",
                    node_name(i),
                    dest.display(),
                    dest.display()
                )
            })
            .collect()
    }

    /// `files`: the run itself, one ADD of `src` into each node's `sim_dest`.
    pub fn files_yaml(src: &Path) -> String {
        format!(
            "- jobs:\n  - ADD: '{} {{{{sim_dest}}}}/blob.bin'\n",
            src.display()
        )
    }

    /// Who goes down and comes back when (`churn`: `churn` of the nodes, each killed once at
    /// a random moment of the run and back `downtime` later; `late-join`: `late` of them, down
    /// before the submit and back within `late_within`), drawn from `others` (the nodes but
    /// the submitter, shuffled).
    pub fn disruptions(&self, others: &[usize], rng: &mut impl Rng) -> Vec<Disruption> {
        let pick = |f: f64| affected(others.len(), f);
        match self.scenario {
            Scenario::Churn => {
                // Saturating, and bounded so that a point drawn in it stays a Duration.
                let span = self
                    .job_time
                    .saturating_mul(u32::try_from(self.jobs).unwrap_or(u32::MAX))
                    .saturating_add(Duration::from_millis(500))
                    .min(MAX_SPAN);
                others
                    .iter()
                    .take(pick(self.churn))
                    .map(|&node| {
                        let at = span.mul_f64(rng.r#gen::<f64>());
                        Disruption {
                            node,
                            down: Some(at),
                            back: at.saturating_add(self.downtime),
                        }
                    })
                    .collect()
            }
            Scenario::LateJoin => others
                .iter()
                .take(pick(self.late))
                .map(|&node| Disruption {
                    node,
                    down: None,
                    back: self.late_within.mul_f64(rng.r#gen::<f64>()),
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The longest span the kills of `churn` are spread over (about 30 000 years).
const MAX_SPAN: Duration = Duration::from_secs(1 << 40);

/// `partition`: the far half, split from the submitter's: half of `others` (the nodes but
/// the submitter, shuffled), and at least one node, so that a mesh of 2 is split too.
pub fn far_half(others: &[usize]) -> &[usize] {
    &others[..(others.len() / 2).max(1).min(others.len())]
}

/// How many of `count` nodes a fraction of them is: rounded, and at least one when the
/// fraction is above 0 (10 % of 4 nodes is one node, not none).
pub fn affected(count: usize, fraction: f64) -> usize {
    let n = (count as f64 * fraction).round() as usize;
    if fraction > 0.0 { n.max(1) } else { n }.min(count)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;

    use super::{Scenario, Workload, affected, far_half};

    #[test]
    fn the_far_half_is_never_empty() {
        assert_eq!(far_half(&[5]), &[5]);
        assert_eq!(far_half(&[5, 7, 9]), &[5]);
        assert_eq!(far_half(&[5, 7, 9, 11]), &[5, 7]);
        assert!(far_half(&[]).is_empty());
    }

    #[test]
    fn churn_of_a_run_too_long_for_the_clock_neither_overflows_nor_truncates() {
        let mut w = Workload::new(Scenario::Churn, 4);
        w.jobs = 20_000;
        w.job_time = Duration::from_secs(1_000_000_000);
        w.churn = 1.0;
        w.downtime = Duration::from_secs(1_000_000_000);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let plan = w.disruptions(&[1, 2, 3], &mut rng);
        assert_eq!(plan.len(), 3);
        assert!(plan.iter().all(|d| d.down.is_some_and(|at| at < d.back)));

        // More jobs than a u32 holds are not cut to a few: the kills spread over all of them.
        w.jobs = u32::MAX as usize + 2;
        w.job_time = Duration::from_secs(1);
        let plan = w.disruptions(&[1, 2, 3], &mut rng);
        assert!(
            plan.iter()
                .any(|d| d.down.is_some_and(|at| at > Duration::from_secs(10))),
            "{plan:?}"
        );
    }

    #[test]
    fn a_fraction_above_zero_affects_at_least_one_node() {
        assert_eq!(affected(4, 0.1), 1);
        assert_eq!(affected(999, 0.1), 100);
        assert_eq!(affected(4, 0.0), 0);
        assert_eq!(affected(4, 1.0), 4);
        assert_eq!(affected(0, 0.5), 0);
    }
}
