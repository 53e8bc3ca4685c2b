//! Job records: what the originator of a run knows about each of its jobs, node by node.
//!
//! A record is created when the job is submitted and filled in as results arrive. It keeps
//! Directord's fields (per-node STDOUT, STDERR, INFO, EXECUTION and ROUNDTRIP times, SUCCESS and
//! FAILED), derived from one result per node instead of lists that repeat nodes.

use std::collections::BTreeMap;

use jobs::executor::{Outcome, ResultState};
use serde::{Deserialize, Serialize};

/// A target of a job: its peer id and its name when the job was submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    pub peer_id: String,
    pub name: String,
}

/// One node's result of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeResult {
    /// `success`, `failed` or `skipped`.
    pub state: ResultState,
    pub stdout: String,
    pub stderr: String,
    pub info: String,
    /// Time the component ran on the node.
    pub execution_secs: f64,
    /// Submission at the originator to the result's arrival there.
    pub roundtrip_secs: f64,
    pub finished_unix_ms: u64,
}

/// A record's place in a listing and its id, without the rest of it: read from a stored
/// record (the other fields are passed over), a long history can be put in order without
/// holding every record's targets and texts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordKey {
    pub job_id: String,
    pub run_id: String,
    pub created_unix_ms: u64,
    #[serde(default)]
    pub submission: u64,
    pub position: u32,
}

impl RecordKey {
    /// As [`JobRecord::order`].
    pub fn order(&self) -> (u64, u64, &str, u32) {
        (
            self.submission,
            self.created_unix_ms,
            &self.run_id,
            self.position,
        )
    }
}

impl NodeResult {
    /// `outcome` as recorded, `roundtrip_ms` after its job was submitted.
    pub fn from_outcome(outcome: Outcome, roundtrip_ms: u64) -> NodeResult {
        // A time no node measures (NaN, negative, infinite: a target that breaks the
        // protocol) would turn every sum and comparison of the analyses into nonsense.
        let execution_secs = if outcome.execution_secs.is_finite() && outcome.execution_secs >= 0.0
        {
            outcome.execution_secs
        } else {
            0.0
        };
        NodeResult {
            state: outcome.state,
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            info: outcome.info,
            execution_secs,
            roundtrip_secs: roundtrip_ms as f64 / 1000.0,
            finished_unix_ms: outcome.finished_unix_ms,
        }
    }
}

/// Where a job stands, across its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Some node has not reported yet.
    Processing,
    /// Every node reported success or skipped.
    Success,
    /// Every node reported and at least one failed (or was unreachable).
    Failed,
}

/// Everything the originator records about one job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub run_id: String,
    pub parent_id: String,
    pub parent_fingerprint: String,
    /// The orchestration entry's `name:`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_name: Option<String>,
    pub verb: String,
    /// The job as written (`RUN: echo hi`).
    pub definition: String,
    pub fingerprint: String,
    /// Name of the node that submitted it (this node).
    pub originator: String,
    pub created_unix_ms: u64,
    /// When it was created on the boot clock: its age for `--record-retention` within one
    /// boot, whatever the wall clock did since (`None`: an older release's record, or a
    /// machine whose boot cannot be told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_on_boot: Option<jobs::processes::BootInstant>,
    /// The number of its submission on this node: later submissions have higher ones,
    /// whatever the wall clock says (0: a record of a release that did not number them).
    #[serde(default)]
    pub submission: u64,
    /// Position of the job in its run (submission order).
    pub position: u32,
    pub nodes: Vec<NodeRef>,
    /// Results by node name.
    pub results: BTreeMap<String, NodeResult>,
}

impl JobRecord {
    /// About how many bytes the record takes when sent: its texts and outputs, and a little
    /// for the rest of it and of each node and result.
    pub fn approx_size(&self) -> usize {
        512 + self.definition.len()
            + self.nodes.len() * 128
            + self
                .results
                .values()
                .map(|r| 256 + r.stdout.len() + r.stderr.len() + r.info.len())
                .sum::<usize>()
    }
}

/// What a write-off's info says after the node's name (see [`write_off_info`]).
const WRITE_OFF_TEXT: &str = " stopped answering, left the mesh or restarted before reporting";

/// The info of the failed result the submitter records for a target it wrote off as
/// unreachable (`name`); `back_within_min`: how long a target that comes back without the job
/// is still sent it.
pub fn write_off_info(name: &str, back_within_min: u64) -> String {
    format!(
        "unreachable: {name}{WRITE_OFF_TEXT}; should it report later, that result replaces this \
         one (back within {back_within_min} min without the job, it is sent the job)"
    )
}

impl NodeResult {
    /// This result as an open record holds it in memory while the job waits for its other
    /// targets: the output stays on disk (it went to the store first), but for the first line
    /// of stderr, which a `--poll` line shows. Everything else is kept.
    pub fn without_output(&self) -> NodeResult {
        let first = self.stderr.lines().next().unwrap_or_default();
        let mut end = first.len().min(SLIM_STDERR_MAX);
        while !first.is_char_boundary(end) {
            end -= 1;
        }
        NodeResult {
            stdout: String::new(),
            stderr: first[..end].to_string(),
            info: self.info.clone(),
            ..*self
        }
    }

    /// Whether this is the submitter's write-off of an unreachable target ([`write_off_info`]),
    /// not a result the target sent.
    pub fn is_write_off(&self) -> bool {
        self.state == ResultState::Failed
            && self.info.starts_with("unreachable: ")
            && self.info.contains(WRITE_OFF_TEXT)
    }

    /// Whether the target ran the job through: not a write-off, and not a job the target
    /// reported failed without running it (an earlier job of its parent failed there, it
    /// could not start, a QUEUESENTINEL emptied the queue) or cut short or never started by
    /// its restart. Only those have times of their own for the averages and the fastest and
    /// slowest nodes.
    pub fn ran(&self) -> bool {
        let no_time_of_its_own = [
            jobs::executor::NOT_RUN,
            jobs::executor::OMITTED,
            INTERRUPTED_PREFIX,
        ];
        let not_run_through = self.state == ResultState::Failed
            && no_time_of_its_own
                .iter()
                .any(|prefix| self.info.starts_with(prefix));
        !self.is_write_off() && !not_run_through
    }
}

/// How the info of a job a target's restart cut short, or kept from starting, begins (see
/// `runs::INTERRUPTED` and `runs::restore`).
pub const INTERRUPTED_PREFIX: &str = "interrupted: ";

/// How much of stderr's first line a result held in memory keeps ([`NodeResult::without_output`]).
const SLIM_STDERR_MAX: usize = 1024;

impl JobRecord {
    /// This record as an open one is held in memory: each result without its output (see
    /// [`NodeResult::without_output`]).
    pub fn held_in_memory(mut self) -> JobRecord {
        for result in self.results.values_mut() {
            *result = result.without_output();
        }
        self
    }

    /// This record as held in memory (outputs on disk, see [`NodeResult::without_output`])
    /// made whole from `stored`, the same record read from the store after every write made
    /// before memory was read is on disk: each result the store has is taken from it (it is at
    /// least as new), and a result only memory has stays as it is.
    pub fn filled_from(mut self, stored: JobRecord) -> JobRecord {
        for (name, result) in stored.results {
            self.results.insert(name, result);
        }
        self
    }

    /// Every target has reported the job for real (none is written off as unreachable, to
    /// come back with its result).
    pub fn reported_by_all(&self) -> bool {
        self.results.len() >= self.nodes.len() && self.results.values().all(|r| !r.is_write_off())
    }

    /// When the last of its results arrived here, by this node's wall clock: its creation
    /// plus the longest round trip.
    pub fn last_result_unix_ms(&self) -> u64 {
        let longest = self
            .results
            .values()
            .map(|r| r.roundtrip_secs)
            .fold(0.0, f64::max);
        // (A round trip is never negative nor NaN: it is measured here; `as` saturates.)
        self.created_unix_ms
            .saturating_add((longest * 1000.0) as u64)
    }

    /// Submission order: by submission number (then creation time, for records that have
    /// none), run, then position in the run.
    pub fn order(&self) -> (u64, u64, &str, u32) {
        (
            self.submission,
            self.created_unix_ms,
            &self.run_id,
            self.position,
        )
    }

    /// Its results without their outputs (stdout and stderr emptied): for views that only
    /// count, time or follow the jobs, a long history of large outputs need not be held.
    pub fn without_outputs(mut self) -> JobRecord {
        for result in self.results.values_mut() {
            result.stdout = String::new();
            result.stderr = String::new();
        }
        self
    }

    /// Its place in a listing (see [`RecordKey`]).
    pub fn key(&self) -> RecordKey {
        RecordKey {
            job_id: self.job_id.clone(),
            run_id: self.run_id.clone(),
            created_unix_ms: self.created_unix_ms,
            submission: self.submission,
            position: self.position,
        }
    }

    pub fn status(&self) -> JobStatus {
        if self.results.len() < self.nodes.len() {
            JobStatus::Processing
        } else if self
            .results
            .values()
            .any(|r| r.state == ResultState::Failed)
        {
            JobStatus::Failed
        } else {
            JobStatus::Success
        }
    }

    pub fn successes(&self) -> Vec<&str> {
        self.names_with(|s| s.is_ok())
    }

    pub fn failures(&self) -> Vec<&str> {
        self.names_with(|s| s == ResultState::Failed)
    }

    fn names_with(&self, f: impl Fn(ResultState) -> bool) -> Vec<&str> {
        self.results
            .iter()
            .filter(|(_, r)| f(r.state))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The names of the targets that have not reported the job yet.
    pub fn waiting_for(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| !self.results.contains_key(&n.name))
            .map(|n| n.name.as_str())
            .collect()
    }

    /// The node name of a peer id among this job's targets.
    pub fn name_of(&self, peer_id: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.peer_id == peer_id)
            .map(|n| n.name.as_str())
    }

    /// Mean execution and roundtrip time over the results of targets that ran the job
    /// ([`NodeResult::ran`]).
    pub fn mean_times(&self) -> (f64, f64) {
        let ran = || self.results.values().filter(|r| r.ran());
        let n = ran().count().max(1) as f64;
        // Folded from +0.0: an empty f64 sum is -0.0, shown as "-0.000000".
        let total = |f: fn(&NodeResult) -> f64| ran().map(f).fold(0.0, |a, b| a + b);
        (
            total(|r| r.execution_secs) / n,
            total(|r| r.roundtrip_secs) / n,
        )
    }
}

/// An id given empty (`--job-info ''`, a variable that was not set).
const EMPTY_ID: &str = "an empty id: give a job id, the start of one, or `last`";

/// Which job `id` names among `records`: `last` for the newest, else the job with that id or
/// the only one whose id starts with it. The error says why none was picked.
pub fn pick(records: Vec<JobRecord>, id: &str) -> Result<JobRecord, String> {
    if id.trim().is_empty() {
        return Err(EMPTY_ID.into());
    }
    if records.is_empty() {
        return Err(format!(
            "no job '{id}' on this node (it has no job records: a job's record is kept by \
             the node that submitted it)"
        ));
    }
    if id == "last" {
        return records
            .into_iter()
            .max_by(|a, b| a.order().cmp(&b.order()))
            .ok_or_else(|| format!("no job '{id}' on this node"));
    }
    let mut matches: Vec<JobRecord> = records
        .into_iter()
        .filter(|r| r.job_id.starts_with(id))
        .collect();
    if let Some(exact) = matches.iter().position(|r| r.job_id == id) {
        return Ok(matches.swap_remove(exact));
    }
    match matches.len() {
        0 => Err(format!("no job '{id}' on this node")),
        1 => Ok(matches.remove(0)),
        n => Err(format!(
            "'{id}' is the start of {n} job ids on this node ({}); give more of the id",
            starts_of(matches.iter().map(|r| r.job_id.as_str()))
        )),
    }
}

/// The starts of some of `ids`, for an error that asks for more of one: the first five, sorted,
/// cut after their second group of hex digits.
fn starts_of<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    const SHOWN: usize = 5;
    let mut ids: Vec<&str> = ids.collect();
    ids.sort_unstable();
    let mut out: Vec<String> = ids
        .iter()
        .take(SHOWN)
        .map(|id| match id.char_indices().nth(13) {
            Some((cut, _)) => format!("{}...", &id[..cut]),
            None => id.to_string(),
        })
        .collect();
    if ids.len() > SHOWN {
        out.push(format!("{} more", ids.len() - SHOWN));
    }
    out.join(", ")
}

/// The run `id` names among `records`, and its jobs: `last` for the run of the newest job, else
/// the run with that id, or of the job or parent with that id, else the only run one of whose
/// ids (run, job or parent) starts with it. The error says why none was picked: a start that
/// fits ids of several runs is no pick.
pub fn pick_run(records: Vec<JobRecord>, id: &str) -> Result<(String, Vec<JobRecord>), String> {
    if id.trim().is_empty() {
        return Err(EMPTY_ID.into());
    }
    let run_id = if id == "last" {
        match records.iter().max_by_key(|r| r.order()) {
            Some(newest) => newest.run_id.clone(),
            None => {
                return Err(format!(
                    "no run '{id}' on this node (it has no job records)"
                ));
            }
        }
    } else if let Some(exact) = records
        .iter()
        .find(|r| r.run_id == id || r.job_id == id || r.parent_id == id)
    {
        exact.run_id.clone()
    } else {
        let mut runs: Vec<&str> = records
            .iter()
            .filter(|r| names_run_of(r, id))
            .map(|r| r.run_id.as_str())
            .collect();
        runs.sort_unstable();
        runs.dedup();
        match runs.as_slice() {
            [one] => one.to_string(),
            [] => return Err(format!("no run, job or parent '{id}' on this node")),
            many => {
                return Err(format!(
                    "'{id}' is the start of ids (run, job or parent ids) of {} runs on this \
                     node (runs {}); give more of the id",
                    many.len(),
                    starts_of(many.iter().copied())
                ));
            }
        }
    };
    let jobs = records.into_iter().filter(|r| r.run_id == run_id).collect();
    Ok((run_id, jobs))
}

/// Whether `id` may name the run of `record`: it starts the run's id, the job's or its parent's.
fn names_run_of(record: &JobRecord, id: &str) -> bool {
    record.run_id.starts_with(id)
        || record.job_id.starts_with(id)
        || record.parent_id.starts_with(id)
}

/// The jobs of the parent `id` names among `records`: `last` for the parent of the newest job,
/// else the parent with that id or the only one whose id starts with it. The error says why
/// none was picked.
pub fn pick_parent(records: Vec<JobRecord>, id: &str) -> Result<(String, Vec<JobRecord>), String> {
    if id.trim().is_empty() {
        return Err(EMPTY_ID.into());
    }
    let id = if id == "last" {
        match records.iter().max_by_key(|r| r.order()) {
            Some(newest) => newest.parent_id.clone(),
            None => {
                return Err(format!(
                    "no parent '{id}' on this node (it has no job records)"
                ));
            }
        }
    } else {
        id.to_string()
    };
    let mut parents: Vec<&str> = records
        .iter()
        .map(|r| r.parent_id.as_str())
        .filter(|p| p.starts_with(id.as_str()))
        .collect();
    parents.sort_unstable();
    parents.dedup();
    let parent = match parents.as_slice() {
        [] => return Err(format!("no job with parent '{id}' on this node")),
        [one] => one.to_string(),
        _ if parents.contains(&id.as_str()) => id,
        many => {
            return Err(format!(
                "'{id}' is the start of {} parent ids on this node ({}); give more of the id",
                many.len(),
                starts_of(many.iter().copied())
            ));
        }
    };
    let jobs = records
        .into_iter()
        .filter(|r| r.parent_id == parent)
        .collect();
    Ok((parent, jobs))
}

/// What a [`Picking`] picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// A run, as [`pick_run`].
    Run,
    /// A parent, as [`pick_parent`].
    Parent,
}

/// A run or a parent picked from records as they are read in listing order (oldest first),
/// keeping only the runs it may be: every run with a record `id` may name, and the newest run
/// (for `last`). A run's records are next to each other in that order (they share its
/// submission), so the pick is the one all the records would give, without holding them all.
pub struct Picking {
    what: Pick,
    id: String,
    kept: Vec<JobRecord>,
    /// The records of the run being read, and whether `id` may name one of them.
    run: Vec<JobRecord>,
    named: bool,
}

impl Picking {
    pub fn new(what: Pick, id: &str) -> Picking {
        Picking {
            what,
            id: id.to_string(),
            kept: Vec::new(),
            run: Vec::new(),
            named: false,
        }
    }

    /// The next record in listing order.
    pub fn add(&mut self, record: JobRecord) {
        // An empty id names nothing (`pick` says so): every record would start with it.
        if self.id.trim().is_empty() {
            return;
        }
        if self.run.first().is_some_and(|r| r.run_id != record.run_id) {
            let run = std::mem::take(&mut self.run);
            if self.named {
                self.kept.extend(run);
            }
            self.named = false;
        }
        let id = self.id.as_str();
        self.named |= match self.what {
            Pick::Run => names_run_of(&record, id),
            Pick::Parent => record.parent_id.starts_with(id),
        };
        self.run.push(record);
    }

    /// The run or parent `id` names, and its jobs; the error says why none was picked.
    pub fn pick(mut self) -> Result<(String, Vec<JobRecord>), String> {
        self.kept.append(&mut self.run);
        match self.what {
            Pick::Run => pick_run(self.kept, &self.id),
            Pick::Parent => pick_parent(self.kept, &self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open record keeps its results without their outputs (but stderr's first line, for
    /// `--poll`), and is made whole from its stored copy; a result only memory has stays.
    #[test]
    fn an_open_record_is_held_without_outputs_and_filled_from_the_store() {
        let full = |out: &str| NodeResult {
            state: ResultState::Failed,
            stdout: out.repeat(1000),
            stderr: format!("{}\nmore", "é".repeat(600)),
            info: "command failed".into(),
            execution_secs: 1.5,
            roundtrip_secs: 2.0,
            finished_unix_ms: 7,
        };
        let slim = full("out").without_output();
        assert_eq!(slim.stdout, "");
        // The first line, cut at a character boundary within 1 KiB.
        assert_eq!(slim.stderr, "é".repeat(512));
        assert_eq!(
            (slim.state, &slim.info, slim.finished_unix_ms),
            (ResultState::Failed, &"command failed".to_string(), 7)
        );
        let mut stored = record("j", 1);
        stored.results.insert("n1".into(), full("n1"));
        let mut open = stored.clone();
        open.results
            .insert("n1".into(), full("n1").without_output());
        open.results
            .insert("n2".into(), full("n2").without_output());
        let whole = open.filled_from(stored);
        assert_eq!(whole.results["n1"], full("n1"));
        assert_eq!(
            whole.results["n2"].stdout, "",
            "only memory has it: kept as it is"
        );
    }

    fn record(id: &str, created: u64) -> JobRecord {
        JobRecord {
            job_id: id.into(),
            created_unix_ms: created,
            ..JobRecord::default()
        }
    }

    /// A run is named by `last`, its id or the start of it, one of its jobs or parents.
    #[test]
    fn a_run_is_picked_by_its_id_a_job_or_last() {
        let job = |id: &str, run: &str, created| JobRecord {
            job_id: id.into(),
            run_id: run.into(),
            parent_id: format!("p{}", &run[run.len() - 1..]),
            created_unix_ms: created,
            ..JobRecord::default()
        };
        let all = || {
            vec![
                job("j1", "run-a", 1),
                job("j2", "run-a", 1),
                job("j3", "run-b", 2),
            ]
        };
        let picked = |id: &str| pick_run(all(), id).map(|(run, jobs)| (run, jobs.len()));
        assert_eq!(picked("last"), Ok(("run-b".into(), 1)));
        assert_eq!(picked("run-a"), Ok(("run-a".into(), 2)));
        assert_eq!(picked("j2"), Ok(("run-a".into(), 2)));
        assert!(picked("run-").unwrap_err().contains("of 2 runs"));
        assert_eq!(
            picked("x"),
            Err("no run, job or parent 'x' on this node".into())
        );
        // A parent's id names its run too.
        assert_eq!(picked("pa"), Ok(("run-a".into(), 2)));
        // A start of one run's id and of another run's job: which one is meant is not said.
        assert!(picked("r").unwrap_err().contains("of 2 runs"));
        assert!(picked("j").unwrap_err().contains("of 2 runs"));
        // The start of one run's id that also starts a job id of another run.
        let records = vec![job("6a", "run-a", 1), job("k1", "6b", 2)];
        assert!(pick_run(records, "6").unwrap_err().contains("of 2 runs"));
    }

    /// Picked from records as they come, a run or a parent is the one all records give.
    #[test]
    fn a_pick_while_reading_is_the_pick_of_all_the_records() {
        let job = |id: &str, run: &str, parent: &str, submission| JobRecord {
            job_id: id.into(),
            run_id: run.into(),
            parent_id: parent.into(),
            submission,
            ..JobRecord::default()
        };
        let mut all = vec![
            job("a1", "run-a", "pa", 1),
            job("a2", "run-a", "pa", 1),
            job("b1", "run-b", "pb1", 2),
            job("b2", "run-b", "pb2", 2),
            job("c1", "other", "pc", 3),
            job("d1", "run-d", "pd", 4),
            job("d2", "run-d", "pd", 4),
        ];
        for (i, r) in all.iter_mut().enumerate() {
            r.position = i as u32;
        }
        for what in [Pick::Run, Pick::Parent] {
            for id in [
                "last", "run-a", "run-", "run", "a2", "b", "c1", "other", "pb", "pb2", "pd", "p",
                "x", "", " ",
            ] {
                let mut picking = Picking::new(what, id);
                for r in all.clone() {
                    picking.add(r);
                }
                let everything = match what {
                    Pick::Run => pick_run(all.clone(), id),
                    Pick::Parent => pick_parent(all.clone(), id),
                };
                assert_eq!(picking.pick(), everything, "{what:?} {id:?}");
            }
            assert_eq!(
                Picking::new(what, "last").pick(),
                match what {
                    Pick::Run => pick_run(Vec::new(), "last"),
                    Pick::Parent => pick_parent(Vec::new(), "last"),
                }
            );
        }
        // Some picks are found at all (the comparison above is not of errors only).
        let mut picking = Picking::new(Pick::Run, "b2");
        all.into_iter().for_each(|r| picking.add(r));
        let (run, jobs) = picking.pick().unwrap();
        assert_eq!((run.as_str(), jobs.len()), ("run-b", 2));
    }

    /// An id start that fits several jobs is answered with some of them, cut short.
    #[test]
    fn an_ambiguous_start_names_some_of_the_ids_it_fits() {
        let ids: Vec<String> = (0..7)
            .map(|i| format!("3{i}c08ad8-b28b-4dad-945f-acab6e197ca1"))
            .collect();
        let records: Vec<JobRecord> = ids
            .iter()
            .map(|id| JobRecord {
                job_id: id.clone(),
                ..JobRecord::default()
            })
            .collect();
        assert_eq!(
            pick(records, "3").unwrap_err(),
            "'3' is the start of 7 job ids on this node (30c08ad8-b28b..., 31c08ad8-b28b..., \
             32c08ad8-b28b..., 33c08ad8-b28b..., 34c08ad8-b28b..., 2 more); give more of the id"
        );
    }

    #[test]
    fn a_job_is_picked_by_id_prefix_or_last() {
        let all = || vec![record("abc-1", 1), record("abd-2", 3), record("abc", 2)];
        assert_eq!(pick(all(), "last").unwrap().job_id, "abd-2");
        assert_eq!(pick(all(), "abd").unwrap().job_id, "abd-2");
        // The last submitted, whatever the clock said when it was made (stepped back since).
        let mut later = record("abe-3", 0);
        later.submission = 1;
        later.parent_id = "later-parent".into();
        let with_later = || {
            let mut v = all();
            v.push(later.clone());
            v
        };
        assert_eq!(pick(with_later(), "last").unwrap().job_id, "abe-3");
        assert_eq!(
            pick_parent(with_later(), "last").unwrap().1[0].job_id,
            "abe-3"
        );
        // An exact id wins over the longer ids it starts.
        assert_eq!(pick(all(), "abc").unwrap().job_id, "abc");
        assert!(
            pick(all(), "ab")
                .unwrap_err()
                .contains("start of 3 job ids")
        );
        assert_eq!(pick(all(), "x").unwrap_err(), "no job 'x' on this node");
        assert_eq!(pick(all(), "").unwrap_err(), EMPTY_ID);
        assert_eq!(pick_parent(all(), " ").unwrap_err(), EMPTY_ID);
        assert!(
            pick(vec![], "last")
                .unwrap_err()
                .contains("has no job records")
        );
    }

    #[test]
    fn a_parent_is_picked_by_id_prefix_or_last() {
        let job = |id: &str, parent: &str, created| JobRecord {
            parent_id: parent.into(),
            ..record(id, created)
        };
        let all = || {
            vec![
                job("j1", "p-aa", 1),
                job("j2", "p-aa", 2),
                job("j3", "p-ab", 4),
                job("j4", "p-a", 3),
            ]
        };
        let jobs_of = |picked: Result<(String, Vec<JobRecord>), String>| {
            let (parent, jobs) = picked.unwrap();
            let mut ids: Vec<String> = jobs.into_iter().map(|j| j.job_id).collect();
            ids.sort();
            (parent, ids)
        };
        assert_eq!(
            jobs_of(pick_parent(all(), "last")),
            ("p-ab".into(), vec!["j3".into()])
        );
        assert_eq!(
            jobs_of(pick_parent(all(), "p-aa")),
            ("p-aa".into(), vec!["j1".into(), "j2".into()])
        );
        // An exact id wins over the longer ids it starts.
        assert_eq!(
            jobs_of(pick_parent(all(), "p-a")),
            ("p-a".into(), vec!["j4".into()])
        );
        assert_eq!(
            pick_parent(all(), "p-").unwrap_err(),
            "'p-' is the start of 3 parent ids on this node (p-a, p-aa, p-ab); give more of the id"
        );
        assert_eq!(
            pick_parent(all(), "x").unwrap_err(),
            "no job with parent 'x' on this node"
        );
        assert!(
            pick_parent(vec![], "last")
                .unwrap_err()
                .contains("has no job records")
        );
    }

    /// Only a target that ran a job through has times for the averages: not one that
    /// reported it not run, omitted by a QUEUESENTINEL or interrupted by a restart (a RUN's
    /// info is its command: a success starting so ran).
    #[test]
    fn jobs_not_run_through_count_in_no_time() {
        let result = |state: ResultState, info: &str, secs: f64| NodeResult {
            state,
            stdout: String::new(),
            stderr: String::new(),
            info: info.into(),
            execution_secs: secs,
            roundtrip_secs: secs,
            finished_unix_ms: 0,
        };
        let mut record = record("j", 0);
        record.results = [
            ("a", result(ResultState::Success, "sleep 1", 1.0)),
            (
                "b",
                result(ResultState::Failed, crate::runs::INTERRUPTED, 0.0),
            ),
            (
                "c",
                result(
                    ResultState::Failed,
                    "omitted: QUEUESENTINEL x emptied the queue",
                    0.0,
                ),
            ),
            (
                "d",
                result(
                    ResultState::Failed,
                    "not run: job x of this parent failed",
                    0.0,
                ),
            ),
            (
                "e",
                result(ResultState::Success, "interrupted: ; sleep 3", 3.0),
            ),
        ]
        .into_iter()
        .map(|(n, r)| (n.to_string(), r))
        .collect();
        assert_eq!(record.mean_times(), (2.0, 2.0));
    }

    /// The last result arrived at the record's creation plus the longest round trip; a
    /// record without results was over when created.
    #[test]
    fn the_last_result_arrived_after_the_longest_round_trip() {
        let result = |secs: f64| NodeResult {
            state: ResultState::Success,
            stdout: String::new(),
            stderr: String::new(),
            info: String::new(),
            execution_secs: 0.0,
            roundtrip_secs: secs,
            finished_unix_ms: 0,
        };
        let mut record = record("j", 0);
        record.created_unix_ms = 10_000;
        assert_eq!(record.last_result_unix_ms(), 10_000);
        record.results = [("a", 1.5), ("b", 40.25), ("c", 0.0)]
            .into_iter()
            .map(|(n, secs)| (n.to_string(), result(secs)))
            .collect();
        assert_eq!(record.last_result_unix_ms(), 50_250);
    }

    #[test]
    fn only_the_submitters_own_write_off_counts_as_one() {
        let result = |state: ResultState, info: String| NodeResult {
            state,
            stdout: String::new(),
            stderr: String::new(),
            info,
            execution_secs: 0.0,
            roundtrip_secs: 0.0,
            finished_unix_ms: 0,
        };
        assert!(result(ResultState::Failed, write_off_info("n2", 10)).is_write_off());
        // A RUN's info is its command: one that starts like a write-off is a real result.
        for info in ["unreachable: ; true", "unreachable: n2 went away"] {
            assert!(!result(ResultState::Success, info.into()).is_write_off());
            assert!(!result(ResultState::Failed, info.into()).is_write_off());
        }
    }
}
