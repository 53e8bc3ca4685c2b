//! Fetching one content-addressed file, chunk by chunk, from the nodes that hold it.
//!
//! Sans-IO. The node gives the sources in order of preference (for ADD: its parent in the
//! distribution tree, that node's parent, ..., the originator, then other holders), and reports
//! how each chunk request went. Rules:
//! - up to [`MAX_IN_FLIGHT`] chunks are requested at once, each from the first source that has
//!   not failed it;
//! - `NotYet` (the source is still receiving that chunk itself) retries the same source a
//!   little later, so a distribution tree streams instead of everyone falling back to the
//!   originator; after [`MAX_NOT_YET`] such answers the source counts as failed for the chunk;
//! - a corrupt chunk fails that source for that chunk; a source that does not know the file
//!   (for [`MAX_UNKNOWN`] rounds of [`NOT_YET_PAUSE`]: it may not have begun its own copy) is
//!   passed over for every chunk for a while ([`LACKING_PAUSE`], doubling) and then asked
//!   again: a holder that begins its copy late (its job queued behind others) still serves;
//! - an unreachable source is passed over for a while (1 s, doubling to
//!   [`MAX_UNREACHABLE_PAUSE`]) and then asked again: a node cut off for a minute, or every
//!   holder of the file out of reach, pauses the download instead of failing it (the job's
//!   timeout bounds the wait, and the node gives a download up once no job waits for it);
//! - when every source has failed a chunk for good, the download fails, naming what each
//!   source did.
//!
//! [`distribution_sources`] orders the sources of a file for one target of a run.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use jobs::Fingerprint;

use crate::message::{JobEntry, NodeId, Parent, Run, TargetKey};

/// Chunks requested at once by one download.
pub const MAX_IN_FLIGHT: usize = 16;
/// Pause before asking again a source that does not have a chunk yet.
pub const NOT_YET_PAUSE: Duration = Duration::from_millis(50);
/// `NotYet` answers a source may give for one chunk before it counts as failed.
pub const MAX_NOT_YET: u32 = 600;
/// Rounds of `Unknown` answers (at most one counted per [`NOT_YET_PAUSE`], however many chunks
/// are in flight) a source may give before it is passed over: a node of the distribution tree
/// may not have started its own copy yet when its children first ask.
pub const MAX_UNKNOWN: u32 = 40;
/// The first pause before a source that did not know the file is asked again; it doubles
/// each time, up to [`MAX_UNREACHABLE_PAUSE`].
pub const LACKING_PAUSE: Duration = Duration::from_secs(2);
/// The first pause before an unreachable source is asked again; it doubles with each failure
/// in a row, up to [`MAX_UNREACHABLE_PAUSE`].
pub const UNREACHABLE_PAUSE: Duration = Duration::from_secs(1);
pub const MAX_UNREACHABLE_PAUSE: Duration = Duration::from_secs(30);

/// How a chunk request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkResult {
    /// Received and verified.
    Ok,
    /// The source has the file in progress but not this chunk yet.
    NotYet,
    /// The bytes did not match the chunk's hash.
    Corrupt,
    /// The source does not know the file.
    Unknown,
    /// The request failed (the source is unreachable or timed out).
    Unreachable,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A chunk request came back.
    Got {
        index: usize,
        from: NodeId,
        result: ChunkResult,
    },
    /// More nodes that may hold the file (appended after the known ones).
    Sources(Vec<NodeId>),
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask `from` for chunk `index`.
    Fetch { index: usize, from: NodeId },
    /// Every chunk is in.
    Done,
    /// The file cannot be had; says what each source did.
    Failed(Failure),
    /// Every source that may still give the file is out of reach or does not have it yet (the
    /// download goes on once one can serve): said once each time it comes to that.
    Stalled {
        out_of_reach: Vec<NodeId>,
        lacking: Vec<NodeId>,
    },
}

/// Why a download failed: for one chunk, what each source did (the first few of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub index: usize,
    pub sources: Vec<(NodeId, &'static str)>,
    /// Sources left out of `sources` (a run to thousands of targets would list them all).
    pub more: usize,
}

impl Failure {
    /// The reason in words, each source named by `name`.
    pub fn describe(&self, name: impl Fn(&NodeId) -> String) -> String {
        let mut parts: Vec<String> = self
            .sources
            .iter()
            .map(|(s, why)| format!("{}: {why}", name(s)))
            .collect();
        if parts.is_empty() {
            parts.push("no node holds it".into());
        }
        if self.more > 0 {
            parts.push(format!("and {} more", self.more));
        }
        format!(
            "chunk {} of the file could be had from none of the nodes holding it ({})",
            self.index,
            parts.join("; ")
        )
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(|n| n.to_string()))
    }
}

/// A source that was unreachable.
#[derive(Debug, Clone, Copy)]
struct OutOfReach {
    /// Passed over until then.
    until: Instant,
    /// Failures in a row (the pause doubles with each).
    failures: u32,
    /// Asked again for this chunk, not answered yet: the other chunks wait for that answer.
    probing: Option<usize>,
}

/// A source that answered that it does not know the file.
#[derive(Debug, Clone, Copy)]
struct Lacking {
    /// Rounds of such answers since it was last asked again.
    rounds: u32,
    /// When the last round was counted.
    counted_at: Instant,
    /// Passed over until then, once it has said so for [`MAX_UNKNOWN`] rounds.
    until: Option<Instant>,
    /// Times it was passed over (the pause doubles with each).
    pauses: u32,
}

#[derive(Debug, Clone)]
enum Chunk {
    Missing {
        not_before: Instant,
    },
    /// Asked of this source; only its answer counts (a late one from a source asked before
    /// is not this request's).
    InFlight {
        from: NodeId,
    },
    Have,
}

/// One file being fetched.
pub struct Download {
    chunks: Vec<Chunk>,
    sources: Vec<NodeId>,
    /// Per chunk: sources that failed it, with why.
    failed: HashMap<usize, HashMap<NodeId, &'static str>>,
    not_yet: HashMap<(usize, NodeId), u32>,
    /// Sources that said they do not know the file, until they give a chunk.
    lacking: HashMap<NodeId, Lacking>,
    /// Sources that were unreachable, until they answer again.
    unreachable: HashMap<NodeId, OutOfReach>,
    /// Whether [`Action::Stalled`] was said since a source last answered.
    stalled: bool,
    in_flight: usize,
    finished: bool,
}

impl Download {
    /// A download of `chunks` chunks from `sources` (in order of preference); returns the first
    /// requests to make.
    pub fn new(chunks: usize, sources: Vec<NodeId>, now: Instant) -> (Download, Vec<Action>) {
        let mut d = Download {
            chunks: vec![Chunk::Missing { not_before: now }; chunks],
            sources: Vec::new(),
            failed: HashMap::new(),
            not_yet: HashMap::new(),
            lacking: HashMap::new(),
            unreachable: HashMap::new(),
            stalled: false,
            in_flight: 0,
            finished: false,
        };
        // A set, not `contains`: a run to ten thousand targets lists them all as fallbacks.
        let mut seen = HashSet::with_capacity(sources.len());
        for s in sources {
            if seen.insert(s.clone()) {
                d.sources.push(s);
            }
        }
        let actions = d.schedule(now);
        (d, actions)
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        if self.finished {
            return vec![];
        }
        match input {
            Input::Got {
                index,
                from,
                result,
            } => {
                if !matches!(self.chunks.get(index), Some(Chunk::InFlight { from: asked }) if *asked == from)
                {
                    return self.schedule(now);
                }
                self.in_flight -= 1;
                if result != ChunkResult::Unreachable {
                    // It answered: reachable again.
                    self.unreachable.remove(&from);
                }
                if !matches!(result, ChunkResult::Unknown | ChunkResult::Unreachable) {
                    // It knows the file now: the download goes on.
                    self.lacking.remove(&from);
                    self.stalled = false;
                }
                self.chunks[index] = match result {
                    ChunkResult::Ok => Chunk::Have,
                    ChunkResult::NotYet => {
                        let n = self.not_yet.entry((index, from.clone())).or_default();
                        *n += 1;
                        if *n >= MAX_NOT_YET {
                            self.failed
                                .entry(index)
                                .or_default()
                                .insert(from, "never had it");
                        }
                        Chunk::Missing {
                            not_before: now + NOT_YET_PAUSE,
                        }
                    }
                    ChunkResult::Corrupt => {
                        self.failed
                            .entry(index)
                            .or_default()
                            .insert(from, "sent corrupt data");
                        Chunk::Missing { not_before: now }
                    }
                    ChunkResult::Unknown => {
                        let l = self.lacking.entry(from).or_insert(Lacking {
                            rounds: 0,
                            counted_at: now,
                            until: None,
                            pauses: 0,
                        });
                        // The chunks in flight at once all answer alike: one round.
                        if l.rounds == 0 || now >= l.counted_at + NOT_YET_PAUSE {
                            l.rounds += 1;
                            l.counted_at = now;
                        }
                        if l.rounds >= MAX_UNKNOWN && l.until.is_none_or(|t| t <= now) {
                            let pause = LACKING_PAUSE
                                .saturating_mul(1 << l.pauses.min(16))
                                .min(MAX_UNREACHABLE_PAUSE);
                            l.until = Some(now + pause);
                            l.pauses += 1;
                            l.rounds = 0;
                            Chunk::Missing { not_before: now }
                        } else {
                            Chunk::Missing {
                                not_before: now + NOT_YET_PAUSE,
                            }
                        }
                    }
                    ChunkResult::Unreachable => {
                        // Other chunks in flight from it fail too: only the first failure, or
                        // the answer to the probe that asked it again, counts.
                        let failures = self.unreachable.get(&from).map_or(0, |o| o.failures);
                        let counts = self
                            .unreachable
                            .get(&from)
                            .is_none_or(|o| o.probing == Some(index));
                        if counts {
                            let pause = UNREACHABLE_PAUSE
                                .saturating_mul(1 << failures.min(16))
                                .min(MAX_UNREACHABLE_PAUSE);
                            self.unreachable.insert(
                                from,
                                OutOfReach {
                                    until: now + pause,
                                    failures: failures + 1,
                                    probing: None,
                                },
                            );
                        }
                        Chunk::Missing { not_before: now }
                    }
                };
                self.schedule(now)
            }
            Input::Sources(more) => {
                for s in more {
                    if !self.sources.contains(&s) {
                        self.sources.push(s);
                    }
                }
                self.schedule(now)
            }
            Input::Tick => self.schedule(now),
        }
    }

    /// Whether it has ended (every chunk in, or failed): nothing more comes of it.
    pub fn is_over(&self) -> bool {
        self.finished
    }

    /// Chunks in, and chunks in all.
    pub fn progress(&self) -> (usize, usize) {
        let have = self
            .chunks
            .iter()
            .filter(|c| matches!(c, Chunk::Have))
            .count();
        (have, self.chunks.len())
    }

    /// The sources found unreachable and not heard from since, sorted.
    pub fn out_of_reach(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.unreachable.keys().cloned().collect();
        nodes.sort();
        nodes
    }

    /// The sources that said they do not know the file and are passed over now, sorted.
    pub fn lacking(&self, now: Instant) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .lacking
            .iter()
            .filter(|(_, l)| l.until.is_some_and(|t| t > now))
            .map(|(n, _)| n.clone())
            .collect();
        nodes.sort();
        nodes
    }

    /// The first source that may still give chunk `index` (reachable or not).
    fn sources_for(&self, index: usize) -> impl Iterator<Item = &NodeId> {
        let failed = self.failed.get(&index);
        self.sources
            .iter()
            .filter(move |s| !failed.is_some_and(|f| f.contains_key(*s)))
    }

    /// Where to ask for chunk `index` now: the first source that may give it and is neither
    /// out of reach nor passed over for not having it; `Err(true)` while the only ones left
    /// are, `Err(false)` once none is left.
    fn source_for(&self, index: usize, now: Instant) -> Result<&NodeId, bool> {
        let mut any = false;
        for s in self.sources_for(index) {
            let lacking = self
                .lacking
                .get(s)
                .is_some_and(|l| l.until.is_some_and(|t| t > now));
            match self.unreachable.get(s) {
                _ if lacking => any = true,
                Some(o) if o.probing.is_some() || o.until > now => any = true,
                _ => return Ok(s),
            }
        }
        Err(any)
    }

    fn schedule(&mut self, now: Instant) -> Vec<Action> {
        if self.chunks.iter().all(|c| matches!(c, Chunk::Have)) {
            self.finished = true;
            return vec![Action::Done];
        }
        let mut actions = Vec::new();
        let mut out_of_reach = false;
        for index in 0..self.chunks.len() {
            if self.in_flight >= MAX_IN_FLIGHT {
                break;
            }
            let Chunk::Missing { not_before } = self.chunks[index] else {
                continue;
            };
            match self.source_for(index, now).cloned() {
                Ok(from) if not_before <= now => {
                    // A source out of reach lately is asked for one chunk first.
                    if let Some(o) = self.unreachable.get_mut(&from) {
                        o.probing = Some(index);
                    }
                    self.chunks[index] = Chunk::InFlight { from: from.clone() };
                    self.in_flight += 1;
                    actions.push(Action::Fetch { index, from });
                }
                Ok(_) => {}
                Err(true) => out_of_reach = true,
                Err(false) => {
                    self.finished = true;
                    return vec![Action::Failed(self.why(index))];
                }
            }
        }
        if out_of_reach && self.in_flight == 0 && !self.stalled {
            self.stalled = true;
            actions.push(Action::Stalled {
                out_of_reach: self.out_of_reach(),
                lacking: self.lacking(now),
            });
        }
        actions
    }

    fn why(&self, index: usize) -> Failure {
        /// The first sources say why; a run to thousands of targets would list them all.
        const SHOWN: usize = 8;
        let sources: Vec<(NodeId, &'static str)> = self
            .sources
            .iter()
            .map(|s| {
                let reason = self
                    .failed
                    .get(&index)
                    .and_then(|f| f.get(s))
                    .copied()
                    .unwrap_or("not asked");
                (s.clone(), reason)
            })
            .collect();
        Failure {
            index,
            more: sources.len().saturating_sub(SHOWN),
            sources: sources.into_iter().take(SHOWN).collect(),
        }
    }
}

/// Who holds the files of `run` already, as its targets are told: a few nodes per file
/// ([`HOLDER_HINTS_PER_FILE`], [`MAX_HOLDER_HINTS`] in all), beside the distribution tree
/// every target works out itself (a file sent to ten thousand nodes before has ten thousand
/// holders, more than a run's message can carry).
pub fn holder_hints(
    run: &Run,
    holders: &HashMap<Fingerprint, BTreeSet<NodeId>>,
) -> Vec<(Fingerprint, Vec<NodeId>)> {
    let mut hints: Vec<(Fingerprint, Vec<NodeId>)> = Vec::new();
    let mut named = 0;
    let run_seed = blake3::hash(run.run_id.as_bytes()).as_bytes()[0] as usize;
    for parent in &run.parents {
        for job in &parent.jobs {
            if let jobs::Component::Add(t) | jobs::Component::Copy(t) = &job.spec.component
                && let Some(file) = &t.file
                && let Some(nodes) = holders.get(&file.hash)
                && !hints.iter().any(|(h, _)| *h == file.hash)
            {
                let take = HOLDER_HINTS_PER_FILE.min(MAX_HOLDER_HINTS - named);
                if take == 0 {
                    return hints;
                }
                // A few from a place that differs from run to run, so that the runs of a
                // busy file do not all name the same holders.
                let from = run_seed % nodes.len().max(1);
                let some: Vec<NodeId> = nodes
                    .iter()
                    .cycle()
                    .skip(from)
                    .take(take.min(nodes.len()))
                    .cloned()
                    .collect();
                named += some.len();
                hints.push((file.hash, some));
            }
        }
    }
    hints
}

/// Holders of a file a run names, at most (see [`holder_hints`]).
const HOLDER_HINTS_PER_FILE: usize = 16;
/// Holders a run names for all its files together, at most.
pub const MAX_HOLDER_HINTS: usize = 1024;

/// What the holders of a run's files take in its messages at most: [`MAX_HOLDER_HINTS`] peer
/// ids (53 bytes each as text) and a hash for each file named. A submission is checked to fit
/// a message with this much room to spare.
pub const HOLDER_HINTS_ROOM: usize = 128 * 1024;

/// How many nodes each holder feeds in a file's distribution tree.
pub const TREE_FANOUT: usize = 2;

/// Other targets a node may fall back to for a file, beyond its tree ancestors, the
/// originator and known holders (a run to ten thousand targets does not list them all).
pub const FALLBACK_TARGETS: usize = 32;

/// Where `local` fetches the file of `job` from, best first: its ancestors in the distribution
/// tree of the job's targets (the originator at the root, each node feeding [`TREE_FANOUT`]
/// others, so the originator uploads only a few copies however many targets there are), then
/// nodes known to hold the file, then up to [`FALLBACK_TARGETS`] other targets (they may have
/// it by then; the ones after `local` in tree order, so fallbacks spread over the tree).
///
/// The tree is laid out in the order of the targets' keys, which every node computes alike
/// whether the run names its targets or only gives their keys ([`Run::compact`]); `name_of`
/// finds the node behind a key (the membership table). A key it cannot name is passed over:
/// the next ancestor up, and in the end the originator, serves instead.
pub fn distribution_sources(
    run: &Run,
    parent: &Parent,
    job: &JobEntry,
    local: &NodeId,
    hash: &Fingerprint,
    name_of: impl Fn(TargetKey) -> Option<NodeId>,
) -> Vec<NodeId> {
    let originator = TargetKey::of(&run.originator);
    let keys: Vec<TargetKey> = match &job.only_on {
        Some(only) => vec![TargetKey::of(only)],
        None => parent
            .all_target_keys()
            .into_iter()
            .filter(|k| *k != originator)
            .collect(),
    };
    // Names the run gives itself (at the originator, all of them).
    let named: HashMap<TargetKey, &NodeId> = parent
        .targets
        .iter()
        .chain(job.only_on.iter())
        .map(|t| (TargetKey::of(t), t))
        .collect();
    let name = |k: TargetKey| named.get(&k).map(|n| (*n).clone()).or_else(|| name_of(k));
    let mut sources = Vec::new();
    let position = keys.binary_search(&TargetKey::of(local)).ok();
    if let Some(mut p) = position {
        while p >= TREE_FANOUT {
            p = (p - TREE_FANOUT) / TREE_FANOUT;
            sources.extend(name(keys[p]));
        }
    }
    sources.push(run.originator.clone());
    for (h, nodes) in &run.holders {
        if h == hash {
            sources.extend(nodes.iter().cloned());
        }
    }
    let start = position.map_or(0, |p| p + 1);
    let n = keys.len();
    sources.extend((0..n.min(FALLBACK_TARGETS)).filter_map(|i| name(keys[(start + i) % n])));
    let mut seen = HashSet::new();
    sources.retain(|s| s != local && seen.insert(s.clone()));
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeId {
        NodeId(s.to_string())
    }

    fn fetches(actions: &[Action]) -> Vec<(usize, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Fetch { index, from } => Some((*index, from.0.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn asks_the_first_source_for_up_to_the_window() {
        let t = Instant::now();
        let (_, a) = Download::new(20, vec![n("parent"), n("origin")], t);
        let f = fetches(&a);
        assert_eq!(f.len(), MAX_IN_FLIGHT);
        assert!(f.iter().all(|(_, s)| s == "parent"));
    }

    #[test]
    fn an_empty_file_is_done_at_once() {
        let (_, a) = Download::new(0, vec![n("origin")], Instant::now());
        assert_eq!(a, vec![Action::Done]);
    }

    #[test]
    fn not_yet_waits_for_the_same_source_corrupt_moves_on() {
        let t = Instant::now();
        let (mut d, _) = Download::new(2, vec![n("parent"), n("origin")], t);
        let got = |d: &mut Download, index, from: &str, result, at| {
            d.handle(
                Input::Got {
                    index,
                    from: n(from),
                    result,
                },
                at,
            )
        };
        // Chunk 0 is not at the parent yet: nothing until the pause is over, then the parent again.
        assert!(fetches(&got(&mut d, 0, "parent", ChunkResult::NotYet, t)).is_empty());
        assert_eq!(
            fetches(&d.handle(Input::Tick, t + NOT_YET_PAUSE)),
            vec![(0, "parent".into())]
        );
        // Chunk 1 arrives corrupt from the parent: the originator is asked.
        assert_eq!(
            fetches(&got(&mut d, 1, "parent", ChunkResult::Corrupt, t)),
            vec![(1, "origin".into())]
        );
        got(&mut d, 1, "origin", ChunkResult::Ok, t);
        assert_eq!(
            got(&mut d, 0, "parent", ChunkResult::Ok, t),
            vec![Action::Done]
        );
    }

    fn got(index: usize, from: &str, result: ChunkResult) -> Input {
        Input::Got {
            index,
            from: n(from),
            result,
        }
    }

    #[test]
    fn an_unreachable_source_is_passed_over_for_every_chunk_for_a_while() {
        let t = Instant::now();
        let (mut d, a) = Download::new(3, vec![n("parent"), n("origin")], t);
        assert_eq!(fetches(&a).len(), 3);
        let a = d.handle(got(0, "parent", ChunkResult::Unreachable), t);
        assert_eq!(fetches(&a), vec![(0, "origin".into())]);
        // An answer from a source the chunk was not asked of is not taken.
        assert!(fetches(&d.handle(got(0, "parent", ChunkResult::Ok), t)).is_empty());
        d.handle(got(0, "origin", ChunkResult::Ok), t);
        // The other chunks in flight from the parent fail later (their requests time out),
        // after its pause of 1 s: they do not make it longer. The first is the probe that asks
        // the parent again; the other goes to the originator meanwhile.
        let late = t + UNREACHABLE_PAUSE + UNREACHABLE_PAUSE / 2;
        let a = d.handle(got(1, "parent", ChunkResult::Unreachable), late);
        assert_eq!(fetches(&a), vec![(1, "parent".into())]);
        let a = d.handle(got(2, "parent", ChunkResult::Unreachable), late);
        assert_eq!(fetches(&a), vec![(2, "origin".into())]);
        // The parent answers its probe: back for every chunk.
        d.handle(got(1, "parent", ChunkResult::Ok), late);
        let a = d.handle(got(2, "origin", ChunkResult::NotYet), late);
        assert!(fetches(&a).is_empty(), "{a:?}");
        let a = d.handle(Input::Tick, late + NOT_YET_PAUSE);
        assert_eq!(fetches(&a), vec![(2, "parent".into())]);
        assert_eq!(
            d.handle(got(2, "parent", ChunkResult::Ok), late + NOT_YET_PAUSE),
            vec![Action::Done]
        );
    }

    /// Every holder out of reach (this node cut off): the download says so once and waits,
    /// asking again after pauses that double, one chunk at a time, and goes on once a holder
    /// answers.
    #[test]
    fn with_every_source_out_of_reach_it_waits_and_asks_again() {
        let t = Instant::now();
        let (mut d, a) = Download::new(3, vec![n("parent"), n("origin")], t);
        assert_eq!(fetches(&a).len(), 3);
        let mut said = Vec::new();
        for index in 0..3 {
            said.extend(d.handle(got(index, "parent", ChunkResult::Unreachable), t));
        }
        assert_eq!(fetches(&said).len(), 3, "{said:?}");
        let mut said = Vec::new();
        for index in 0..3 {
            said.extend(d.handle(got(index, "origin", ChunkResult::Unreachable), t));
        }
        assert_eq!(
            said,
            vec![Action::Stalled {
                out_of_reach: vec![n("origin"), n("parent")],
                lacking: vec![],
            }],
            "neither failed nor asked again at once"
        );
        assert!(d.handle(Input::Tick, t + UNREACHABLE_PAUSE / 2).is_empty());
        // After the pause: one chunk from each, not all of them.
        let t1 = t + UNREACHABLE_PAUSE;
        let a = d.handle(Input::Tick, t1);
        assert_eq!(
            fetches(&a),
            vec![(0, "parent".into()), (1, "origin".into())]
        );
        // Still out of reach: the next pause is twice as long, and nothing is said again.
        let mut said = d.handle(got(0, "parent", ChunkResult::Unreachable), t1);
        said.extend(d.handle(got(1, "origin", ChunkResult::Unreachable), t1));
        assert!(said.is_empty(), "{said:?}");
        assert!(d.handle(Input::Tick, t1 + UNREACHABLE_PAUSE).is_empty());
        let t2 = t1 + UNREACHABLE_PAUSE * 2;
        let a = d.handle(Input::Tick, t2);
        assert_eq!(
            fetches(&a),
            vec![(0, "parent".into()), (1, "origin".into())]
        );
        // The originator is back: the rest comes from it.
        let a = d.handle(got(1, "origin", ChunkResult::Ok), t2);
        assert_eq!(fetches(&a), vec![(2, "origin".into())]);
        d.handle(got(2, "origin", ChunkResult::Ok), t2);
        let a = d.handle(got(0, "parent", ChunkResult::Unreachable), t2);
        assert_eq!(fetches(&a), vec![(0, "origin".into())]);
        assert_eq!(
            d.handle(got(0, "origin", ChunkResult::Ok), t2),
            vec![Action::Done]
        );
    }

    #[test]
    fn sources_are_tree_ancestors_then_the_originator_then_a_bounded_few_targets() {
        use jobs::{JobSpec, ParseOutcome, executor::QueueKind};

        use crate::message::{JobEntry, Parent, Run, TargetKeys};

        let spec = match JobSpec::parse("RUN", "true", &Default::default()).unwrap() {
            ParseOutcome::Spec(s) => s,
            ParseOutcome::Help(_) => unreachable!(),
        };
        let targets: Vec<NodeId> = (0..1000).map(|i| n(&format!("t{i:04}"))).collect();
        let job = JobEntry {
            job_id: "j".into(),
            fingerprint: spec.fingerprint(),
            spec,
            only_on: None,
        };
        let parent = Parent {
            parent_id: "p".into(),
            fingerprint: Fingerprint([0; 32]),
            queue: QueueKind::Sync,
            targets: targets.clone(),
            target_keys: TargetKeys::default(),
            jobs: vec![job.clone()],
        };
        let run = Run::new("r", n("origin"), vec![parent.clone()]);
        // The tree in key order: the node at position 999 has 498, 248, ... up to the root pair.
        let mut in_order = targets.clone();
        in_order.sort_by_key(TargetKey::of);
        let local = in_order[999].clone();
        let ancestors: Vec<NodeId> = [498, 248, 123, 60, 29, 13, 5, 1]
            .iter()
            .map(|&i| in_order[i].clone())
            .collect();
        let nobody = |_: TargetKey| None;
        let sources =
            distribution_sources(&run, &parent, &job, &local, &Fingerprint([1; 32]), nobody);
        assert_eq!(sources[..ancestors.len()], ancestors[..], "{sources:?}");
        assert_eq!(sources[ancestors.len()], n("origin"));
        // Then a few other targets, not all thousand, and never itself.
        assert!(
            sources.len() <= ancestors.len() + 1 + FALLBACK_TARGETS,
            "{}",
            sources.len()
        );
        assert!(!sources.contains(&local));
        let unique: HashSet<&NodeId> = sources.iter().collect();
        assert_eq!(unique.len(), sources.len());

        // The run as it travels names no target: the node finds the same sources through its
        // membership table.
        let compact = run.compact();
        let cparent = &compact.parents[0];
        assert!(cparent.targets.is_empty());
        let members: HashMap<TargetKey, NodeId> = targets
            .iter()
            .map(|t| (TargetKey::of(t), t.clone()))
            .collect();
        let from_keys = |name_of: &dyn Fn(TargetKey) -> Option<NodeId>| {
            distribution_sources(
                &compact,
                cparent,
                &job,
                &local,
                &Fingerprint([1; 32]),
                name_of,
            )
        };
        assert_eq!(from_keys(&|k| members.get(&k).cloned()), sources);

        // A node it does not know yet is passed over for the next one up.
        let unknown = TargetKey::of(&ancestors[0]);
        let from_keys = from_keys(&|k| (k != unknown).then(|| members.get(&k).cloned()).flatten());
        assert_eq!(from_keys[..ancestors.len() - 1], ancestors[1..]);
        assert_eq!(from_keys[ancestors.len() - 1], n("origin"));
    }

    #[test]
    fn fails_naming_each_source_when_none_is_left() {
        let t = Instant::now();
        let (mut d, _) = Download::new(1, vec![n("a"), n("b")], t);
        d.handle(
            Input::Got {
                index: 0,
                from: n("a"),
                result: ChunkResult::Corrupt,
            },
            t,
        );
        let a = d.handle(got(0, "b", ChunkResult::Corrupt), t);
        match &a[..] {
            [Action::Failed(failure)] => {
                let why = failure.to_string();
                assert!(
                    why.contains("a: sent corrupt data") && why.contains("b: sent corrupt data"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        // New sources are not taken once it has failed.
        assert!(d.handle(Input::Sources(vec![n("c")]), t).is_empty());
    }

    /// A source that does not know the file (it has not begun its own copy: its job waits
    /// behind others) is passed over for a while, named as not holding it yet, and asked
    /// again; once it has the file, it serves. Chunks in flight together count as one round.
    #[test]
    fn a_source_without_the_file_yet_is_asked_again_later() {
        let t = Instant::now();
        let (mut d, first) = Download::new(MAX_IN_FLIGHT, vec![n("late")], t);
        assert_eq!(fetches(&first).len(), MAX_IN_FLIGHT);
        // Every chunk in flight says so at once: one round, not sixteen.
        let mut now = t;
        for i in 0..MAX_IN_FLIGHT {
            d.handle(got(i, "late", ChunkResult::Unknown), now);
        }
        assert_eq!(d.lacking[&n("late")].rounds, 1);
        // Round after round, until it is passed over.
        let mut stalled = Vec::new();
        for _ in 1..MAX_UNKNOWN {
            now += NOT_YET_PAUSE;
            let asked = fetches(&d.handle(Input::Tick, now));
            assert!(!asked.is_empty(), "asked again within its patience");
            for (i, _) in asked {
                stalled.extend(d.handle(got(i, "late", ChunkResult::Unknown), now));
            }
        }
        assert_eq!(
            stalled
                .iter()
                .filter(|a| matches!(a, Action::Stalled { .. }))
                .collect::<Vec<_>>(),
            vec![&Action::Stalled {
                out_of_reach: vec![],
                lacking: vec![n("late")],
            }]
        );
        assert!(!d.is_over(), "not failed: it may have the file later");
        assert!(fetches(&d.handle(Input::Tick, now + NOT_YET_PAUSE)).is_empty());
        // After the pause it is asked again, and now it has the file.
        now += LACKING_PAUSE;
        let asked = fetches(&d.handle(Input::Tick, now));
        assert!(!asked.is_empty());
        let mut done = Vec::new();
        for (i, _) in asked {
            done.extend(d.handle(got(i, "late", ChunkResult::Ok), now));
        }
        let rest = fetches(&d.handle(Input::Tick, now));
        for (i, _) in rest {
            done.extend(d.handle(got(i, "late", ChunkResult::Ok), now));
        }
        assert!(done.contains(&Action::Done), "{done:?}");
    }
}
