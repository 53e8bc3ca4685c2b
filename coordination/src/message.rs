//! What nodes say to each other about jobs.
//!
//! The network layer carries these as opaque, versioned payloads: a [`Run`] is gossiped as an
//! announce (and resent directly as [`JobMessage::Deliver`]); the rest travel point to point.
//! Every message is idempotent: a resend never makes a job run twice.

use std::fmt;

use jobs::{
    Fingerprint, JobSpec,
    components::OutputLine,
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
    /// Which start of the originator's daemon sent this copy (an id it draws at start; 0:
    /// not said): a target acknowledges each start once ([`crate::acknowledgement`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub originator_start: u64,
    /// When the run was submitted (unix ms, the originator's clock; 0: not said).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_unix_ms: u64,
    /// How old the run was when the originator sent this copy (ms, measured on its own clock,
    /// so clocks that differ between nodes do not matter; 0: not said). A target forgets the
    /// runs it took a day after it took them, so it does not run one this old that it does
    /// not remember: it may have run it already.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub age_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What is gossiped on the jobs topic, signed by the node that published it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Gossip {
    /// Originator → every node: a run (each node takes the jobs that target it).
    Run(Box<Run>),
    /// Originator → the targets of a QUERY job: every target's value, as
    /// [`JobMessage::QueryResult`] carries it; each target says it has it with
    /// [`JobMessage::QueryTaken`].
    QuerySet {
        job_id: String,
        aggregate: serde_json::Value,
        /// The start of the originator's daemon that sent it (as [`Run::originator_start`]):
        /// gossip names a message by its content, so the same set sent again after a
        /// restart of the originator would be dropped as seen.
        originator_start: u64,
    },
    /// Originator → the targets of a QUERY job: part of a set too large to gossip whole
    /// (`query::set_parts`), holding some of its values; a target puts the parts together
    /// (`query::SetInParts`) and takes the set once it holds `values` values that make up
    /// `set`, as it takes a [`Gossip::QuerySet`]. (Added within wire version 8: a node of a
    /// release without it logs each part as an unreadable announce and passes it on; such a
    /// target gets the set directly, 2 s a part after the parts went out.)
    QuerySetPart {
        job_id: String,
        /// `{"query": {node: {NAME: value}}}` of some of the set's nodes.
        part: serde_json::Value,
        /// How many values the whole set holds.
        values: u64,
        /// The whole set's `query::set_digest`.
        set: Fingerprint,
        /// As [`Gossip::QuerySet::originator_start`].
        originator_start: u64,
    },
}

/// How many bytes `value` takes encoded (CBOR, as the wire carries it, without the
/// envelope).
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a value that cannot encode counts as what was
    // written of it.
    let _ = ciborium::into_writer(value, &mut count);
    count.0
}

/// A small file carried inside a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineBlob {
    pub hash: Fingerprint,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Longest id a run, parent or job may have (ids are UUIDs, 36 characters).
pub const MAX_ID_LEN: usize = 64;

/// Whether `id` can name a run, parent or job. Ids become parts of store keys, so a member's
/// run with other characters (a `/` above all) is refused: letters, digits and `-` only.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Run {
    /// A first announce of `parents` from `originator`: no files, no live output.
    pub fn new(run_id: &str, originator: NodeId, parents: Vec<Parent>) -> Run {
        Run {
            run_id: run_id.to_string(),
            originator,
            parents,
            stream: false,
            inline: Vec::new(),
            holders: Vec::new(),
            round: 0,
            originator_start: 0,
            created_unix_ms: 0,
            age_ms: 0,
        }
    }

    /// The job `job_id` of this run, as written.
    pub fn job_spec(&self, job_id: &str) -> Option<&jobs::JobSpec> {
        self.parents
            .iter()
            .flat_map(|p| &p.jobs)
            .find(|j| j.job_id == job_id)
            .map(|j| &j.spec)
    }

    /// The first of this run's ids (run, parents, jobs) that is not a valid id, if any.
    pub fn invalid_id(&self) -> Option<&str> {
        std::iter::once(self.run_id.as_str())
            .chain(self.parents.iter().flat_map(|p| {
                std::iter::once(p.parent_id.as_str())
                    .chain(p.jobs.iter().map(|j| j.job_id.as_str()))
            }))
            .find(|id| !is_valid_id(id))
    }

    /// What makes this run one no node takes, if anything: an id that is not a valid id
    /// ([`Run::invalid_id`]), or a job id (or parent id) given twice (a node would run that
    /// job twice and lose one result; no submitter makes such a run).
    pub fn problem(&self) -> Option<String> {
        if let Some(id) = self.invalid_id() {
            return Some(format!("an invalid id: {id:?}"));
        }
        let mut parents = std::collections::HashSet::new();
        let mut jobs = std::collections::HashSet::new();
        for p in &self.parents {
            if !parents.insert(p.parent_id.as_str()) {
                return Some(format!("the parent id {:?} twice", p.parent_id));
            }
            for j in &p.jobs {
                if !jobs.insert(j.job_id.as_str()) {
                    return Some(format!("the job id {:?} twice", j.job_id));
                }
            }
        }
        None
    }

    /// The parents (each with only its jobs for `node`) that `node` must run, in order.
    pub fn work_for(&self, node: &NodeId) -> Vec<(&Parent, Vec<&JobEntry>)> {
        let mut out = Vec::new();
        let key = TargetKey::of(node);
        for parent in self.parents.iter().filter(|p| p.has_target(node, key)) {
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

    /// This run as it travels: each parent names its targets by [`TargetKey`] only, so an
    /// announce to a thousand targets carries 8 KB of keys instead of 55 KB of peer ids.
    pub fn compact(&self) -> Run {
        let mut run = self.clone();
        for parent in &mut run.parents {
            if !parent.targets.is_empty() {
                let mut keys: Vec<TargetKey> = parent.targets.iter().map(TargetKey::of).collect();
                keys.extend(parent.target_keys.0.iter().copied());
                parent.target_keys = TargetKeys::new(keys);
                parent.targets = Vec::new();
            }
        }
        run
    }

    /// Every node that has at least one job of this run. Only the targets listed by peer id
    /// count (not those given as keys): complete at the originator, which is the only one
    /// that asks.
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

    /// Every (job, node) pair that must report a result (by peer id, as [`Run::targets`]).
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
    /// The targets by peer id: every one of them at the originator. A run received from the
    /// network names them in `target_keys` instead ([`Run::compact`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<NodeId>,
    /// The targets by key, as a run travels; each node finds itself there by its own key
    /// and its distribution-tree neighbours through its membership table.
    #[serde(default, skip_serializing_if = "TargetKeys::is_empty")]
    pub target_keys: TargetKeys,
    pub jobs: Vec<JobEntry>,
}

impl Parent {
    /// Whether `node` (whose key is `key`) is one of this parent's targets.
    pub fn has_target(&self, node: &NodeId, key: TargetKey) -> bool {
        self.targets.contains(node) || self.target_keys.contains(key)
    }

    /// Every target's key, sorted, whichever way the parent names them.
    pub fn all_target_keys(&self) -> Vec<TargetKey> {
        if self.targets.is_empty() {
            return self.target_keys.0.clone();
        }
        let mut keys: Vec<TargetKey> = self.targets.iter().map(TargetKey::of).collect();
        keys.extend(self.target_keys.0.iter().copied());
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// A node's key in a run's target set: the first 8 bytes of the blake3 hash of its
/// [`NodeId`] (its peer id in text form; not the name an operator gave it).
///
/// Two of a mesh's nodes sharing a key would both run the jobs of either; with 64-bit keys
/// the chance of that in a mesh of a million nodes is below one in ten million, and making a
/// peer id that matches a given key takes some 2^64 key generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey(pub u64);

impl TargetKey {
    pub fn of(node: &NodeId) -> TargetKey {
        let hash = blake3::hash(node.0.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        TargetKey(u64::from_be_bytes(first))
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A sorted set of [`TargetKey`]s. It travels as one byte string of 8 bytes per key; a
/// string whose length is not a multiple of 8 is refused, and the keys are sorted on
/// arrival whatever order they came in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetKeys(Vec<TargetKey>);

impl TargetKeys {
    pub fn new(mut keys: Vec<TargetKey>) -> TargetKeys {
        keys.sort_unstable();
        keys.dedup();
        TargetKeys(keys)
    }

    pub fn contains(&self, key: TargetKey) -> bool {
        self.0.binary_search(&key).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl Serialize for TargetKeys {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|k| k.0.to_be_bytes()).collect();
        serde_bytes::Bytes::new(&bytes).serialize(s)
    }
}

impl<'de> Deserialize<'de> for TargetKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TargetKeys, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        if bytes.len() % 8 != 0 {
            return Err(serde::de::Error::custom(format!(
                "target keys are 8 bytes each; got {} bytes",
                bytes.len()
            )));
        }
        let keys = bytes
            .chunks_exact(8)
            .map(|c| {
                let mut k = [0u8; 8];
                k.copy_from_slice(c);
                TargetKey(u64::from_be_bytes(k))
            })
            .collect();
        Ok(TargetKeys::new(keys))
    }
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
    pub lines: Vec<OutputLine>,
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
    /// Originator → targets: the QUERY job's set cannot reach them (too large for any message):
    /// the job fails there, saying why, instead of waiting for its timeout.
    QueryFailed { job_id: String, reason: String },
    /// Target → originator: this node has the gossiped set of a QUERY job, with `values`
    /// values (it needs no direct copy).
    QueryTaken {
        job_id: String,
        node: NodeId,
        values: u64,
    },
    /// Waiter → node: say when the job with this fingerprint (or prefix) has finished here.
    WaitFor {
        wait_id: String,
        fingerprint: String,
        /// The waiting job's run, when that run has a job with this fingerprint for the node
        /// asked: the wait is for that job, even before the node has taken the run in (an
        /// earlier run's outcome does not answer it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<String>,
    },
    /// Node → waiter: the awaited job finished here (`success` or `failed`).
    WaitDone {
        wait_id: String,
        node: NodeId,
        state: String,
    },
    /// Target → originator: this node now holds the file and can serve it.
    HaveBlob { hash: Fingerprint, node: NodeId },
    /// Fetcher → holder: a chunk the holder served of this file did not match its digest.
    /// The holder checks its copy (now and then at most: see `node::runs`) and removes it if
    /// it is damaged; otherwise it would go on serving the bad chunks to every fetcher until
    /// a job of its own used the copy. Releases that do not know this message fail to decode
    /// it and the fetcher's request fails: nothing else changes.
    ServedCorrupt { hash: Fingerprint },
}

/// The answer to a [`JobMessage`].
///
/// A release that knows fewer answers reads one it does not know as no answer at all: a
/// target of such a release keeps the results it sent and offers them again later, which is
/// what [`JobReply::UnknownRuns`] asks of it anyway (so that answer needs no new wire version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobReply {
    /// Taken (or already had it).
    Ok,
    /// Understood and refused, with the reason.
    Refused(String),
    /// To [`JobMessage::Results`]: every result taken but those of these runs, of which this
    /// node has no trace. It never submitted them (another daemon with its identity did: a
    /// copy of its state directory running elsewhere, which the mesh cannot tell from it), or
    /// it forgot them (purged, or past `--record-retention`). The sender keeps those results
    /// and offers them again later, as after a failed try; it gives them up only once this
    /// answer has not changed for long ([`crate::outbox::Input::Unknown`]).
    UnknownRuns(Vec<String>),
}

#[cfg(test)]
mod tests {
    use jobs::{JobSpec, ParseOutcome, executor::QueueKind};

    use super::*;

    fn run_to(targets: &[NodeId]) -> Run {
        let spec = match JobSpec::parse("RUN", "true", &Default::default()).unwrap() {
            ParseOutcome::Spec(s) => s,
            ParseOutcome::Help(_) => unreachable!(),
        };
        Run::new(
            "r",
            NodeId("origin".into()),
            vec![Parent {
                parent_id: "p".into(),
                fingerprint: Fingerprint([0; 32]),
                queue: QueueKind::Sync,
                targets: targets.to_vec(),
                target_keys: TargetKeys::default(),
                jobs: vec![JobEntry {
                    job_id: "j".into(),
                    fingerprint: spec.fingerprint(),
                    spec,
                    only_on: None,
                }],
            }],
        )
    }

    #[test]
    fn the_originator_start_travels_with_the_run_and_is_left_out_when_unknown() {
        let mut run = run_to(&[NodeId("a".into())]);
        run.originator_start = 7;
        let back: Run = ciborium::from_reader(&cbor(&run)[..]).unwrap();
        assert_eq!(back.originator_start, 7);
        run.originator_start = 0;
        let bytes = cbor(&run);
        assert!(!bytes.windows(16).any(|w| w == b"originator_start"));
        let back: Run = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(back.originator_start, 0);
    }

    /// A release that knows only `Ok` and `Refused` cannot read the answer about unknown
    /// runs: it takes it for no answer (a failed try) and keeps the results, as asked; and
    /// the answers it does know read as before.
    #[test]
    fn an_earlier_release_reads_the_answer_about_unknown_runs_as_no_answer() {
        #[derive(Debug, Deserialize)]
        enum EarlierReply {
            Ok,
            Refused(String),
        }
        let unknown = cbor(&JobReply::UnknownRuns(vec!["r".into()]));
        assert!(ciborium::from_reader::<EarlierReply, _>(&unknown[..]).is_err());
        let ok = cbor(&JobReply::Ok);
        assert!(matches!(
            ciborium::from_reader::<EarlierReply, _>(&ok[..]),
            Ok(EarlierReply::Ok)
        ));
        let refused = cbor(&JobReply::Refused("full".into()));
        assert!(matches!(
            ciborium::from_reader::<EarlierReply, _>(&refused[..]),
            Ok(EarlierReply::Refused(why)) if why == "full"
        ));
        let back: JobReply = ciborium::from_reader(&unknown[..]).unwrap();
        assert_eq!(back, JobReply::UnknownRuns(vec!["r".into()]));
    }

    #[test]
    fn ids_that_could_not_be_store_keys_are_named() {
        let run = run_to(&[NodeId("a".into())]);
        assert_eq!(run.invalid_id(), None);
        let uuid = "6c056aec-ef11-4d16-8f96-740eedbd239a";
        assert!(is_valid_id(uuid));
        for bad in ["", "a/b", "../x", "a b", "é", &"x".repeat(MAX_ID_LEN + 1)] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
        let mut r = run.clone();
        r.parents[0].jobs[0].job_id = "j/results".into();
        assert_eq!(r.invalid_id(), Some("j/results"));
        let mut r = run.clone();
        r.parents[0].parent_id = String::new();
        assert_eq!(r.invalid_id(), Some(""));
        let mut r = run;
        r.run_id = "r/1".into();
        assert_eq!(r.invalid_id(), Some("r/1"));
        assert_eq!(r.problem().as_deref(), Some("an invalid id: \"r/1\""));
    }

    /// A job id (or parent id) given twice in one run makes it one no node takes.
    #[test]
    fn a_run_with_an_id_twice_is_named() {
        let run = run_to(&[NodeId("a".into())]);
        assert_eq!(run.problem(), None);
        let mut r = run.clone();
        let job = r.parents[0].jobs[0].clone();
        r.parents[0].jobs.push(job);
        assert_eq!(
            r.problem(),
            Some(format!(
                "the job id {:?} twice",
                run.parents[0].jobs[0].job_id
            ))
        );
        let mut r = run.clone();
        let parent = r.parents[0].clone();
        r.parents.push(parent);
        assert_eq!(
            r.problem(),
            Some(format!(
                "the parent id {:?} twice",
                run.parents[0].parent_id
            ))
        );
    }

    fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    fn peer_like(i: usize) -> NodeId {
        // As long as a real peer id in text form (52 characters).
        NodeId(format!("12D3KooW{i:044}"))
    }

    #[test]
    fn a_compact_run_reaches_exactly_its_targets() {
        let targets: Vec<NodeId> = (0..1000).map(peer_like).collect();
        let run = run_to(&targets[..500]);
        let sent: Run = ciborium::from_reader(&cbor(&run.compact())[..]).unwrap();
        assert!(sent.parents[0].targets.is_empty());
        assert_eq!(sent.parents[0].target_keys.len(), 500);
        for (i, t) in targets.iter().enumerate() {
            assert_eq!(sent.work_for(t).len(), usize::from(i < 500), "{t}");
            assert_eq!(run.work_for(t).len(), usize::from(i < 500), "{t}");
        }
        assert!(sent.work_for(&NodeId("origin".into())).is_empty());
    }

    #[test]
    fn a_compact_run_to_a_thousand_targets_is_small() {
        let targets: Vec<NodeId> = (0..1000).map(peer_like).collect();
        let run = run_to(&targets);
        let named = cbor(&run).len();
        let keyed = cbor(&run.compact()).len();
        assert!(named > 54_000, "{named}");
        assert!(keyed < 9_000, "{keyed}");
    }

    #[test]
    fn target_keys_that_are_not_whole_keys_are_refused() {
        let bytes = cbor(&serde_bytes::Bytes::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9]));
        let err = ciborium::from_reader::<TargetKeys, _>(&bytes[..]).unwrap_err();
        assert!(
            err.to_string()
                .contains("target keys are 8 bytes each; got 9 bytes"),
            "{err}"
        );
        // Keys in any order are put in order (every node lays out the same tree).
        let mut raw = Vec::new();
        for k in [3u64, 1, 2, 1] {
            raw.extend(k.to_be_bytes());
        }
        let keys: TargetKeys =
            ciborium::from_reader(&cbor(&serde_bytes::Bytes::new(&raw))[..]).unwrap();
        assert_eq!(
            keys,
            TargetKeys::new(vec![TargetKey(1), TargetKey(2), TargetKey(3)])
        );
        assert!(keys.contains(TargetKey(2)) && !keys.contains(TargetKey(4)));
    }
}
