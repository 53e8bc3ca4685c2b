//! Fetching one content-addressed file, chunk by chunk, from the nodes that hold it.
//!
//! Sans-IO. The node gives the sources in order of preference (for ADD: its parent in the
//! distribution tree, that node's parent, ..., the originator, then other holders), and reports
//! how each chunk request went. Rules:
//! - up to [`MAX_IN_FLIGHT`] chunks are requested at once, each from the first source that has
//!   not failed it;
//! - `NotYet` (the source is still receiving that chunk itself) retries the same source a
//!   little later, so a distribution tree streams instead of everyone falling back to the
//!   originator; a source that keeps a chunk waiting for [`NOT_YET_PATIENCE`] (a node holds
//!   each such request a few seconds before it answers) is stalled on its own copy: it is
//!   passed over for every chunk for a while ([`BEHIND_PAUSE`], doubling), then asked again for
//!   one chunk, and is back for all once it gives one;
//! - a corrupt chunk fails that source for that chunk; a source that does not know the file
//!   (for [`MAX_UNKNOWN`] rounds of [`NOT_YET_PAUSE`]: it may not have begun its own copy) is
//!   passed over for every chunk for a while ([`LACKING_PAUSE`], doubling) and then asked
//!   again: a holder that begins its copy late (its job queued behind others) still serves;
//! - an unreachable source is passed over for a while (1 s, doubling to
//!   [`MAX_UNREACHABLE_PAUSE`]) and then asked again: a node cut off for a minute, or every
//!   holder of the file out of reach, pauses the download instead of failing it (the job's
//!   timeout bounds the wait, and the node gives a download up once no job waits for it);
//! - a source that answers none of its requests for [`QUIET_AFTER`] (its process stopped,
//!   its connection still open: its requests would wait for their timeout of a minute) loses
//!   those chunks to the other sources, and is asked for nothing more until it answers one of
//!   them; an answer that comes after all is taken (a chunk in is in, whoever gave it), and
//!   the other source's answer to the same chunk then changes nothing;
//! - time counts on the download's own clock: a gap between two inputs longer than
//!   [`MAX_COUNTED_GAP`] (the node ticks every download every 25 ms) means this node was not
//!   running (stopped, starved, its clock jumped), and only that much of it counts against
//!   the sources; a request made before such a gap that failed may have timed out on this
//!   node's side, so it is made again without holding it against the source;
//! - with every source passed over, or no chunk in for [`STALL_AFTER`], the download says it
//!   is stalled (once, until a chunk comes), naming what it waits for;
//! - when every source has failed a chunk for good, the download fails, naming what each
//!   source did;
//! - when the node names the run's originator among the sources ([`Sources`], only when they
//!   take in every node that may come to hold a copy of the run's file: see
//!   [`run_file_sources`]) and no member holds the file, the download fails saying so rather
//!   than wait for the job's timeout: once the originator has answered it does not know the
//!   file, and nothing else, for [`NOT_HELD_AFTER`] (each other source is then passed over
//!   after one round: nothing is on its way to it), and every other source last answered the
//!   same since the originator began to, and has itself said nothing else for as long (a
//!   request that fails starts a source's spell over: a node just restarted answers
//!   "unknown" until it learns of this node), none out of reach, none asked and not
//!   answered. Every copy of the run's file comes from the originator, from a holder the run
//!   names or from another target of the job (the only job of the run that sends the file),
//!   all of them sources, so none will come; a source out of reach may hold the file, and
//!   keeps the download waiting.
//!
//! [`distribution_sources`] orders the sources of a file for one target of a run;
//! [`run_file_sources`] names the originator among them when they cover the run.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use jobs::Fingerprint;

use crate::message::{JobEntry, NodeId, Parent, Run, TargetKey};

/// Chunks requested at once by one download.
pub const MAX_IN_FLIGHT: usize = 16;
/// Pause before asking again a source that does not have a chunk yet.
pub const NOT_YET_PAUSE: Duration = Duration::from_millis(50);
/// How long a source that does not have a chunk yet is waited on for it, from the first
/// request it answered so. Time, not answers: a node still fetching the file holds each
/// request up to 5 s (`node::transfers::PARK_FOR`) before it says so.
pub const NOT_YET_PATIENCE: Duration = Duration::from_secs(30);
/// The first pause before a source that kept a chunk waiting past [`NOT_YET_PATIENCE`] is
/// asked again; it doubles each time, up to [`MAX_UNREACHABLE_PAUSE`].
pub const BEHIND_PAUSE: Duration = Duration::from_secs(2);
/// How long a download goes without a chunk before it says it is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(30);
/// Rounds of `Unknown` answers (at most one counted per [`NOT_YET_PAUSE`], however many chunks
/// are in flight) a source may give before it is passed over: a node of the distribution tree
/// may not have started its own copy yet when its children first ask. One, for every source
/// but the originator, once the originator has said so for [`NOT_HELD_AFTER`].
pub const MAX_UNKNOWN: u32 = 40;
/// How long the run's originator must answer that it does not know the file, and nothing
/// else in between (an unreachable request starts it over), before its word is taken that
/// it no longer holds it. A node also answers so when it does not know the asker as a member
/// yet: an originator whose daemon restarts begins with an empty membership table and
/// learns of the asker from the asker's next heartbeat (5 s, and longer in a large mesh) or
/// from the sync with a peer every 15 s. This is well past that. (A holder that cannot read
/// its copy answers that it cannot serve it now, which counts as out of reach.)
pub const NOT_HELD_AFTER: Duration = Duration::from_secs(60);
/// The first pause before a source that did not know the file is asked again; it doubles
/// each time, up to [`MAX_UNREACHABLE_PAUSE`].
pub const LACKING_PAUSE: Duration = Duration::from_secs(2);
/// The first pause before an unreachable source is asked again; it doubles with each failure
/// in a row, up to [`MAX_UNREACHABLE_PAUSE`].
pub const UNREACHABLE_PAUSE: Duration = Duration::from_secs(1);
pub const MAX_UNREACHABLE_PAUSE: Duration = Duration::from_secs(30);
/// How long a source may leave every request asked of it unanswered before those chunks are
/// asked of the other sources: longer than a node holds a request for a chunk it is still
/// fetching itself before it answers (5 s, `node::transfers::PARK_FOR`), so that only a
/// source that answers nothing at all loses them.
pub const QUIET_AFTER: Duration = Duration::from_secs(8);
/// The most time between two inputs that counts for the download. The node ticks each
/// download every 25 ms: a longer gap is time this node was not running (stopped, its
/// threads starved, its clock jumped), not time the sources took.
pub const MAX_COUNTED_GAP: Duration = Duration::from_secs(2);

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
    /// More nodes that may hold the file (appended after the known ones), for another job.
    /// The originator stays named only if these name the same one: else they may leave out
    /// nodes a copy can come from, and the download waits for a holder as long as it takes.
    Sources(Sources),
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
    /// No chunk came for [`STALL_AFTER`], or every source that may still give the file is
    /// passed over for now (the download goes on once one can serve): said once each time it
    /// comes to that, until a chunk comes. Names what the download waits for.
    Stalled {
        out_of_reach: Vec<NodeId>,
        lacking: Vec<NodeId>,
        /// Sources still fetching the file themselves that do not have the chunks asked yet.
        fetching: Vec<NodeId>,
        /// Other sources asked for chunks that have not answered yet.
        unanswered: Vec<NodeId>,
    },
}

/// Why a download failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Every source failed chunk `index` for good: what each did (the first few of them).
    Chunk {
        index: usize,
        sources: Vec<(NodeId, &'static str)>,
        /// Sources left out of `sources` (a run to thousands of targets would list them all).
        more: usize,
    },
    /// No node holds the file: the originator (the root every copy of the run comes from)
    /// answered it does not hold it, and so did every other source, none out of reach.
    NotHeld {
        originator: NodeId,
        /// The other sources asked, each of which answered it does not hold the file.
        others: usize,
    },
    /// The originator answered it does not hold the file, and chunk `index` is had by no
    /// source: `partial` of them hold part of the file (not that chunk), the others none.
    PartHeldByNone {
        originator: NodeId,
        index: usize,
        partial: usize,
    },
}

impl Failure {
    /// The reason in words, the file named by `file` and each source by `name`.
    pub fn describe(&self, file: &str, name: impl Fn(&NodeId) -> String) -> String {
        match self {
            Failure::Chunk {
                index,
                sources,
                more,
            } => {
                let mut parts: Vec<String> = sources
                    .iter()
                    .map(|(s, why)| format!("{}: {why}", name(s)))
                    .collect();
                if parts.is_empty() {
                    parts.push("no node holds it".into());
                }
                if *more > 0 {
                    parts.push(format!("and {more} more"));
                }
                format!(
                    "chunk {index} of {file} could be had from none of the nodes holding it ({})",
                    parts.join("; ")
                )
            }
            Failure::NotHeld { originator, others } => {
                let rest = match others {
                    0 => "no other node was to have a copy".to_string(),
                    1 => "neither does the one other node that might have had a copy".to_string(),
                    n => format!(
                        "neither does any of the {n} other nodes that might have had a copy"
                    ),
                };
                format!(
                    "no member holds {file}: its originator {} answered it does not hold it \
                     (its copy was removed or lost), and {rest}",
                    name(originator)
                )
            }
            Failure::PartHeldByNone {
                originator,
                index,
                partial,
            } => format!(
                "no member holds all of {file}: its originator {} answered it does not hold it \
                 (its copy was removed or lost), and chunk {index} is missing from {}",
                name(originator),
                if *partial == 1 {
                    "the one node that holds part of it".to_string()
                } else {
                    format!("each of the {partial} nodes that hold part of it")
                }
            ),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe("the file", |n| n.to_string()))
    }
}

/// Where one file is fetched from: the nodes that may hold it, best first (for a job of a run,
/// [`distribution_sources`]), and which of them is the run's originator, the root every copy
/// of the run comes from. Named only when the nodes take in every node a copy of the run's
/// file may come from ([`run_file_sources`]): then its word that it does not hold the file,
/// once every other source says the same, ends the download: no copy is on its way to any of
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    pub nodes: Vec<NodeId>,
    pub originator: Option<NodeId>,
}

/// Sources with no originator named: the download waits for a holder however long it takes
/// (the job's timeout bounds it).
impl From<Vec<NodeId>> for Sources {
    fn from(nodes: Vec<NodeId>) -> Sources {
        Sources {
            nodes,
            originator: None,
        }
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
    /// Its first such answer since it last answered anything else or failed to answer
    /// (`None` from such a failure until it says so again): its spell of not knowing the
    /// file began then.
    first_said: Option<Instant>,
    /// When it last answered so.
    said_at: Instant,
    /// Rounds of such answers since it was last asked again.
    rounds: u32,
    /// When the last round was counted.
    counted_at: Instant,
    /// Passed over until then, once it has said so for [`MAX_UNKNOWN`] rounds.
    until: Option<Instant>,
    /// Times it was passed over (the pause doubles with each).
    pauses: u32,
}

impl Lacking {
    /// When its spell began, if it has lasted [`NOT_HELD_AFTER`]: its word that it does not
    /// hold the file is taken then.
    fn for_long_since(&self) -> Option<Instant> {
        self.first_said
            .filter(|first| self.said_at.saturating_duration_since(*first) >= NOT_HELD_AFTER)
    }
}

/// A source that said it does not have a chunk yet: it is behind, still fetching the file
/// itself. Past [`NOT_YET_PATIENCE`] its own copy is taken for stalled (it is cut off from its
/// sources), and it gets no more patience until it gives a chunk.
#[derive(Debug, Clone, Copy)]
struct Behind {
    /// Since when it has kept chunks waiting without giving one (the first request it
    /// answered so was made then).
    since: Instant,
    /// Passed over until then, once it has kept chunks waiting past its patience.
    until: Option<Instant>,
    /// Times it was passed over (the pause doubles with each).
    pauses: u32,
    /// Asked again for this chunk, not answered yet: the other chunks go elsewhere meanwhile.
    probing: Option<usize>,
}

/// The download's clock: the node's, less the time this node was not running (each gap
/// between two inputs counts for [`MAX_COUNTED_GAP`] at most).
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// The last input, on the node's clock.
    last_input: Instant,
    /// The time between inputs not counted, so far.
    not_counted: Duration,
    /// The last input, on the download's clock.
    now: Instant,
    /// When this node was last found to have not been running, on the download's clock: a
    /// request made before then that failed may have timed out on this node's side.
    woke_at: Option<Instant>,
}

impl Clock {
    fn new(now: Instant) -> Clock {
        Clock {
            last_input: now,
            not_counted: Duration::ZERO,
            now,
            woke_at: None,
        }
    }

    /// An input at `now` on the node's clock: the time on the download's.
    fn advance(&mut self, now: Instant) -> Instant {
        let gap = now.saturating_duration_since(self.last_input);
        let asleep = gap > MAX_COUNTED_GAP;
        if asleep {
            self.not_counted += gap - MAX_COUNTED_GAP;
        }
        self.last_input = self.last_input.max(now);
        self.now = self.at(now).max(self.now);
        if asleep {
            self.woke_at = Some(self.now);
        }
        self.now
    }

    /// `now` on the node's clock, on the download's.
    fn at(&self, now: Instant) -> Instant {
        // Never before the download began: only gaps since are left out.
        now.checked_sub(self.not_counted).unwrap_or(now)
    }
}

#[derive(Debug, Clone)]
enum Chunk {
    Missing {
        not_before: Instant,
    },
    /// Asked of this source at `asked_at`; only its answer counts (a late one from a source
    /// asked before is not this request's).
    InFlight {
        from: NodeId,
        asked_at: Instant,
    },
    Have,
}

/// One file being fetched.
pub struct Download {
    chunks: Vec<Chunk>,
    sources: Vec<NodeId>,
    /// The root every copy comes from, if the node named it ([`Sources::originator`]).
    originator: Option<NodeId>,
    /// Per chunk: sources that failed it, with why.
    failed: HashMap<usize, HashMap<NodeId, &'static str>>,
    /// Per chunk not in yet: the source that said it does not have it yet, and since when it
    /// keeps the chunk waiting (when the first request it answered so was made).
    not_yet: HashMap<usize, (NodeId, Instant)>,
    /// Per chunk not in yet: each source that said it does not have it yet, and when the
    /// last request it answered so was made (see [`Download::held_by_none`]).
    not_yet_from: HashMap<usize, HashMap<NodeId, Instant>>,
    /// Sources that said they do not know the file, until they give a chunk.
    lacking: HashMap<NodeId, Lacking>,
    /// Sources that were unreachable, until they answer again.
    unreachable: HashMap<NodeId, OutOfReach>,
    /// Sources that said they do not have a chunk yet, until they give one.
    behind: HashMap<NodeId, Behind>,
    /// Sources that left every request asked of them unanswered for [`QUIET_AFTER`]: the
    /// chunks asked of each (and when) and asked of others since, whose answers it owes. Not
    /// asked again until it answers one of them (or they fail).
    quiet: HashMap<NodeId, BTreeMap<usize, Instant>>,
    /// When each source last answered (a failed request is no answer).
    heard_at: HashMap<NodeId, Instant>,
    /// When the last chunk came (or the download began).
    progressed_at: Instant,
    /// Whether [`Action::Stalled`] was said since the last chunk came.
    stalled: bool,
    /// The chunks asked for and not answered yet (at most [`MAX_IN_FLIGHT`]; those of a quiet
    /// source asked of another are not counted).
    in_flight: BTreeSet<usize>,
    /// Time as the download counts it (every instant kept here is on it).
    clock: Clock,
    finished: bool,
    /// Sources looked at to place a chunk, counted for the tests of the cost of a tick.
    #[cfg(test)]
    looked_up: std::cell::Cell<usize>,
}

/// `first`, doubled `times` times, at most [`MAX_UNREACHABLE_PAUSE`].
fn doubling(first: Duration, times: u32) -> Duration {
    first
        .saturating_mul(1 << times.min(16))
        .min(MAX_UNREACHABLE_PAUSE)
}

impl Download {
    /// A download of `chunks` chunks from `sources` (in order of preference); returns the first
    /// requests to make.
    pub fn new(
        chunks: usize,
        sources: impl Into<Sources>,
        now: Instant,
    ) -> (Download, Vec<Action>) {
        let Sources {
            nodes: sources,
            originator,
        } = sources.into();
        let mut d = Download {
            chunks: vec![Chunk::Missing { not_before: now }; chunks],
            sources: Vec::new(),
            originator,
            failed: HashMap::new(),
            not_yet: HashMap::new(),
            not_yet_from: HashMap::new(),
            lacking: HashMap::new(),
            unreachable: HashMap::new(),
            behind: HashMap::new(),
            quiet: HashMap::new(),
            heard_at: HashMap::new(),
            progressed_at: now,
            stalled: false,
            in_flight: BTreeSet::new(),
            clock: Clock::new(now),
            finished: false,
            #[cfg(test)]
            looked_up: Default::default(),
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
        let now = self.clock.advance(now);
        match input {
            Input::Got {
                index,
                from,
                result,
            } => self.got(index, from, result, now),
            Input::Sources(more) => {
                if more.originator != self.originator {
                    self.originator = None;
                }
                for s in more.nodes {
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
        let now = self.clock.at(now);
        let mut nodes: Vec<NodeId> = self
            .lacking
            .iter()
            .filter(|(_, l)| l.until.is_some_and(|t| t > now))
            .map(|(n, _)| n.clone())
            .collect();
        nodes.sort();
        nodes
    }

    /// The sources still fetching the file themselves: they said they do not have a chunk yet
    /// and gave none since, sorted (those out of reach are named as such instead).
    pub fn fetching(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .behind
            .keys()
            .filter(|s| !self.unreachable.contains_key(*s))
            .cloned()
            .collect();
        nodes.sort();
        nodes
    }

    /// A chunk request came back.
    fn got(
        &mut self,
        index: usize,
        from: NodeId,
        result: ChunkResult,
        now: Instant,
    ) -> Vec<Action> {
        let asked_at = match self.chunks.get(index) {
            Some(Chunk::InFlight {
                from: asked,
                asked_at,
            }) if *asked == from => *asked_at,
            _ => match self.quiet.get(&from).and_then(|owed| owed.get(&index)) {
                Some(&asked_at) => return self.late(index, from, asked_at, result, now),
                None => return self.schedule(now),
            },
        };
        self.in_flight.remove(&index);
        if let Some(b) = self.behind.get_mut(&from)
            && b.probing == Some(index)
        {
            b.probing = None;
        }
        if result == ChunkResult::Unreachable {
            self.not_heard(&from);
            if self.asked_before_waking(asked_at) {
                // Asked before this node was not running for a while: the request may have
                // timed out on this side. Asked again, nothing held against the source.
                self.end_probe(&from, index);
                self.chunks[index] = Chunk::Missing { not_before: now };
                return self.schedule(now);
            }
        }
        if result != ChunkResult::Unreachable {
            self.heard(&from, result, now);
        }
        self.chunks[index] = match result {
            ChunkResult::Ok => self.arrived(index, &from, now),
            ChunkResult::NotYet => self.not_there_yet(index, from, asked_at, now),
            ChunkResult::Corrupt => {
                self.failed
                    .entry(index)
                    .or_default()
                    .insert(from, "sent corrupt data");
                Chunk::Missing { not_before: now }
            }
            ChunkResult::Unknown => self.unknown_to(from, now),
            ChunkResult::Unreachable => self.out_of_reach_now(index, from, now),
        };
        // Only this chunk can have lost its last source.
        if matches!(self.chunks[index], Chunk::Missing { .. })
            && self.sources_for(index).next().is_none()
        {
            self.finished = true;
            return vec![Action::Failed(self.why(index))];
        }
        self.schedule(now)
    }

    /// A request to `from` failed: it may have restarted, and answer it does not know the
    /// file until it learns of this node, so its spell of saying so starts over (its pause,
    /// if passed over, stands).
    fn not_heard(&mut self, from: &NodeId) {
        if let Some(l) = self.lacking.get_mut(from) {
            l.first_said = None;
        }
    }

    /// `from` answered (`result` is not [`ChunkResult::Unreachable`]): it is reachable, and
    /// knows the file unless it says otherwise.
    fn heard(&mut self, from: &NodeId, result: ChunkResult, now: Instant) {
        self.heard_at.insert(from.clone(), now);
        self.unreachable.remove(from);
        if result != ChunkResult::Unknown {
            self.lacking.remove(from);
        }
    }

    /// Whether a request made at `asked_at` was made before this node was last found to have
    /// not been running.
    fn asked_before_waking(&self, asked_at: Instant) -> bool {
        self.clock.woke_at.is_some_and(|woke| asked_at < woke)
    }

    /// `from`, quiet, answers its request for chunk `index` (made at `asked_at`) after all
    /// (the chunk was asked of another meanwhile): a chunk in is in, whoever gave it, and any
    /// answer brings `from` back for every chunk.
    fn late(
        &mut self,
        index: usize,
        from: NodeId,
        asked_at: Instant,
        result: ChunkResult,
        now: Instant,
    ) -> Vec<Action> {
        if let Some(owed) = self.quiet.get_mut(&from) {
            owed.remove(&index);
            if owed.is_empty() {
                self.quiet.remove(&from);
            }
        }
        // A late answer that it does not know the file was given a while ago: it neither
        // begins nor lengthens a spell of saying so; any other answer ends it.
        if result == ChunkResult::Unreachable {
            self.not_heard(&from);
        } else {
            // It answers: back for every chunk. A probe it was asked (a chunk it owes, since
            // it has been asked nothing while quiet) is over, answered or not.
            self.quiet.remove(&from);
            self.end_probes(&from);
            self.heard(&from, result, now);
        }
        match result {
            // Made before this node was not running for a while: it may have timed out here.
            ChunkResult::Unreachable if self.asked_before_waking(asked_at) => {
                self.end_probe(&from, index);
            }
            ChunkResult::Unreachable => {
                // Timed out in the end: out of reach (the chunk is asked of others already).
                self.out_of_reach_now(index, from.clone(), now);
                self.end_probe(&from, index);
            }
            ChunkResult::Ok => {
                if let Chunk::InFlight { from: other, .. } = &self.chunks[index] {
                    // Asked of another too: that answer, when it comes, is no news (and if
                    // it was to tell whether that one serves again, it tells nothing now).
                    let other = other.clone();
                    self.end_probe(&other, index);
                    self.in_flight.remove(&index);
                }
                if !matches!(self.chunks[index], Chunk::Have) {
                    self.chunks[index] = self.arrived(index, &from, now);
                }
            }
            ChunkResult::Corrupt => {
                self.failed
                    .entry(index)
                    .or_default()
                    .insert(from, "sent corrupt data");
                if matches!(self.chunks[index], Chunk::Missing { .. })
                    && self.sources_for(index).next().is_none()
                {
                    self.finished = true;
                    return vec![Action::Failed(self.why(index))];
                }
            }
            ChunkResult::NotYet | ChunkResult::Unknown => {}
        }
        self.schedule(now)
    }

    /// The request for chunk `index` to `from` tells no more whether `from` serves again:
    /// if it was asked to tell that, another request will.
    fn end_probe(&mut self, from: &NodeId, index: usize) {
        if let Some(o) = self.unreachable.get_mut(from)
            && o.probing == Some(index)
        {
            o.probing = None;
        }
        if let Some(b) = self.behind.get_mut(from)
            && b.probing == Some(index)
        {
            b.probing = None;
        }
    }

    /// `from` answered a request given up on: whatever it was asked to tell whether it serves
    /// again is over.
    fn end_probes(&mut self, from: &NodeId) {
        if let Some(o) = self.unreachable.get_mut(from) {
            o.probing = None;
        }
        if let Some(b) = self.behind.get_mut(from) {
            b.probing = None;
        }
    }

    /// Sources that left every request asked of them unanswered for [`QUIET_AFTER`] lose
    /// those chunks to the others, when another source can be asked now (the only source
    /// left keeps them: asking it again would not help).
    fn leave_quiet_sources(&mut self, now: Instant) {
        // Per source, the chunks in flight from it and when each was asked.
        let mut asked: HashMap<&NodeId, BTreeMap<usize, Instant>> = HashMap::new();
        for &index in &self.in_flight {
            if let Chunk::InFlight { from, asked_at } = &self.chunks[index] {
                asked.entry(from).or_default().insert(index, *asked_at);
            }
        }
        let quiet: Vec<(NodeId, BTreeMap<usize, Instant>)> = asked
            .into_iter()
            .filter(|(source, chunks)| {
                // Owing an answer since its oldest request, or its last answer if later.
                let Some(first) = chunks.values().min().copied() else {
                    return false;
                };
                let since = self
                    .heard_at
                    .get(*source)
                    .map_or(first, |heard| (*heard).max(first));
                now.saturating_duration_since(since) >= QUIET_AFTER
            })
            .map(|(source, chunks)| (source.clone(), chunks))
            .collect();
        for (source, chunks) in quiet {
            if !self
                .sources
                .iter()
                .any(|other| *other != source && self.askable(other, now))
            {
                continue;
            }
            for &index in chunks.keys() {
                self.in_flight.remove(&index);
                self.chunks[index] = Chunk::Missing { not_before: now };
            }
            self.quiet.entry(source).or_default().extend(chunks);
        }
    }

    /// Chunk `index` came from `from`: the download goes on, and `from` serves again.
    fn arrived(&mut self, index: usize, from: &NodeId, now: Instant) -> Chunk {
        self.behind.remove(from);
        self.not_yet.remove(&index);
        self.not_yet_from.remove(&index);
        self.progressed_at = now;
        self.stalled = false;
        Chunk::Have
    }

    /// `from` does not have chunk `index` yet (the request was made at `asked_at`): asked again
    /// a little later while within its patience, for this chunk and for any chunk since it
    /// last gave one; past it, passed over for every chunk for a while.
    fn not_there_yet(
        &mut self,
        index: usize,
        from: NodeId,
        asked_at: Instant,
        now: Instant,
    ) -> Chunk {
        let quiet_since = self
            .behind
            .entry(from.clone())
            .or_insert(Behind {
                since: asked_at,
                until: None,
                pauses: 0,
                probing: None,
            })
            .since;
        self.not_yet_from
            .entry(index)
            .or_default()
            .insert(from.clone(), asked_at);
        let chunk_since = match self.not_yet.get(&index) {
            Some((source, since)) if *source == from => *since,
            _ => {
                self.not_yet.insert(index, (from.clone(), asked_at));
                asked_at
            }
        };
        let waited = now.saturating_duration_since(quiet_since.min(chunk_since));
        if waited >= NOT_YET_PATIENCE {
            self.pass_over_behind(&from, now);
            Chunk::Missing { not_before: now }
        } else {
            Chunk::Missing {
                not_before: now + NOT_YET_PAUSE,
            }
        }
    }

    /// Passes over `from`, which kept chunks waiting too long, for a pause that doubles each
    /// time (the chunks asked of it together come back alike: one pause for them all).
    fn pass_over_behind(&mut self, from: &NodeId, now: Instant) {
        if let Some(b) = self.behind.get_mut(from)
            && b.until.is_none_or(|t| t <= now)
        {
            b.until = Some(now + doubling(BEHIND_PAUSE, b.pauses));
            b.pauses += 1;
        }
    }

    /// `from` does not know the file: asked again a little later, and passed over for a
    /// while once it has said so for [`MAX_UNKNOWN`] rounds, or for one once the originator
    /// has said so for [`NOT_HELD_AFTER`] (nothing is on its way to `from` then: its patience,
    /// for a copy it may not have begun, would only keep the sources after it unasked). When
    /// the originator is named, a pause ends no later than the source's spell reaches
    /// [`NOT_HELD_AFTER`], so that its word is taken then.
    fn unknown_to(&mut self, from: NodeId, now: Instant) -> Chunk {
        let is_originator = self.originator.as_ref() == Some(&from);
        let patience = if self.originator_lacks_it() && !is_originator {
            1
        } else {
            MAX_UNKNOWN
        };
        let l = self.lacking.entry(from).or_insert(Lacking {
            first_said: None,
            said_at: now,
            rounds: 0,
            counted_at: now,
            until: None,
            pauses: 0,
        });
        l.said_at = now;
        let first_said = *l.first_said.get_or_insert(now);
        // Only when the word of every source can end the download (see `held_by_none`).
        let due =
            Some(first_said + NOT_HELD_AFTER).filter(|due| self.originator.is_some() && *due > now);
        // The chunks in flight at once all answer alike: one round.
        if l.rounds == 0 || now >= l.counted_at + NOT_YET_PAUSE {
            l.rounds += 1;
            l.counted_at = now;
        }
        if l.rounds >= patience && l.until.is_none_or(|t| t <= now) {
            let until = now + doubling(LACKING_PAUSE, l.pauses);
            l.until = Some(due.map_or(until, |due| until.min(due)));
            l.pauses += 1;
            l.rounds = 0;
            Chunk::Missing { not_before: now }
        } else {
            Chunk::Missing {
                not_before: now + NOT_YET_PAUSE,
            }
        }
    }

    /// The request for chunk `index` to `from` failed: `from` is passed over for a pause that
    /// doubles with each failure in a row.
    fn out_of_reach_now(&mut self, index: usize, from: NodeId, now: Instant) -> Chunk {
        // Other chunks in flight from it fail too: only the first failure, or the answer to
        // the probe that asked it again, counts.
        let failures = self.unreachable.get(&from).map_or(0, |o| o.failures);
        let counts = self
            .unreachable
            .get(&from)
            .is_none_or(|o| o.probing == Some(index));
        if counts {
            self.unreachable.insert(
                from,
                OutOfReach {
                    until: now + doubling(UNREACHABLE_PAUSE, failures),
                    failures: failures + 1,
                    probing: None,
                },
            );
        }
        Chunk::Missing { not_before: now }
    }

    /// The first source that may still give chunk `index` (reachable or not).
    fn sources_for(&self, index: usize) -> impl Iterator<Item = &NodeId> {
        let failed = self.failed.get(&index);
        self.sources
            .iter()
            .filter(move |s| !failed.is_some_and(|f| f.contains_key(*s)))
    }

    /// Whether `source` may be asked now: it is neither out of reach, nor passed over for not
    /// having the file or for keeping chunks waiting, nor asked again already and not
    /// answered yet, nor quiet.
    fn askable(&self, source: &NodeId, now: Instant) -> bool {
        let lacking = self
            .lacking
            .get(source)
            .is_some_and(|l| l.until.is_some_and(|t| t > now));
        let out_of_reach = self
            .unreachable
            .get(source)
            .is_some_and(|o| o.probing.is_some() || o.until > now);
        let behind = self
            .behind
            .get(source)
            .is_some_and(|b| b.probing.is_some() || b.until.is_some_and(|t| t > now));
        let quiet = self.quiet.contains_key(source);
        !(lacking || out_of_reach || behind || quiet)
    }

    /// Where to ask for chunk `index` now: the first source that may give it and can be asked
    /// now ([`Download::askable`]); `Err(true)` while the only ones left are passed over,
    /// `Err(false)` once none is left.
    fn source_for(&self, index: usize, now: Instant) -> Result<&NodeId, bool> {
        let mut any = false;
        for s in self.sources_for(index) {
            #[cfg(test)]
            self.looked_up.set(self.looked_up.get() + 1);
            if self.askable(s, now) {
                return Ok(s);
            }
            any = true;
        }
        Err(any)
    }

    /// What to do now: the requests to make, and whether the download is done, failed or
    /// stalled.
    fn schedule(&mut self, now: Instant) -> Vec<Action> {
        if self.chunks.iter().all(|c| matches!(c, Chunk::Have)) {
            self.finished = true;
            return vec![Action::Done];
        }
        if let Some(failure) = self.held_by_none() {
            self.finished = true;
            return vec![Action::Failed(failure)];
        }
        self.leave_quiet_sources(now);
        let (mut actions, waiting) =
            if self.sources.is_empty() || self.sources.iter().any(|s| self.askable(s, now)) {
                match self.ask(now) {
                    Ok(asked) => asked,
                    Err(failure) => {
                        self.finished = true;
                        return vec![Action::Failed(failure)];
                    }
                }
            } else {
                // Every source is passed over: no chunk can be asked for, so the chunks (tens of
                // thousands in a large file) are not gone through, each against every source, at
                // every tick. A chunk that lost its last source failed when it did.
                (Vec::new(), true)
            };
        let idle = now.saturating_duration_since(self.progressed_at) >= STALL_AFTER;
        if !self.stalled && ((waiting && self.in_flight.is_empty()) || idle) {
            self.stalled = true;
            actions.push(self.stall(now));
        }
        actions
    }

    /// Whether no source may ever give the file: every source, the originator among them, has
    /// answered it does not hold it, and nothing else, for [`NOT_HELD_AFTER`], each last
    /// since the originator began to. Then nothing is on its way to any of them: every copy
    /// of the run's file comes from the originator, a holder the run names or another target
    /// of the job, and the node names the originator only when all of those are sources
    /// ([`run_file_sources`]). Not while a source is out of reach (it may hold the file), nor
    /// while a request is unanswered (its answer may be a chunk), nor while a source's last
    /// word is older than the originator's spell (it is asked again first).
    fn held_by_none(&self) -> Option<Failure> {
        let originator = self.originator.as_ref()?;
        let since = self.lacking.get(originator)?.for_long_since()?;
        if !self.in_flight.is_empty() || !self.quiet.is_empty() {
            return None;
        }
        // Last answered it does not know the file (any other answer ends its `lacking`),
        // since the originator's spell began; and has said so, and nothing else, for
        // [`NOT_HELD_AFTER`] itself, answering since it last failed to (a failed request
        // starts its spell over): a holder just restarted (back from out of reach) answers
        // "unknown" until it learns of this node, as the originator may.
        let lacking = |s: &NodeId| {
            self.lacking
                .get(s)
                .is_some_and(|l| l.said_at >= since && l.for_long_since().is_some())
                && !self.unreachable.contains_key(s)
        };
        if self.sources.iter().all(lacking) {
            return Some(Failure::NotHeld {
                originator: originator.clone(),
                others: self.sources.len().saturating_sub(1),
            });
        }
        // Or some sources hold part of the file (fetched before the originator lost it), but
        // one chunk missing here none has: each source not lacking the file has said it does
        // not have that chunk yet, to a request made [`NOT_HELD_AFTER`] into the originator's
        // spell or later (a chunk the originator sent before its spell began has landed or
        // failed by then). Nothing can bring that chunk to any of them any more.
        let settled = since + NOT_HELD_AFTER;
        let (index, partial) = self.not_yet_from.iter().find_map(|(index, said)| {
            if !matches!(self.chunks.get(*index), Some(Chunk::Missing { .. })) {
                return None;
            }
            let none_has = self.sources.iter().all(|s| {
                lacking(s)
                    || (said.get(s).is_some_and(|at| *at >= settled)
                        && !self.unreachable.contains_key(s))
            });
            none_has.then_some((*index, said.len()))
        })?;
        Some(Failure::PartHeldByNone {
            originator: originator.clone(),
            index,
            partial,
        })
    }

    /// Whether the originator has answered it does not know the file, and nothing else, for
    /// [`NOT_HELD_AFTER`].
    fn originator_lacks_it(&self) -> bool {
        self.originator
            .as_ref()
            .and_then(|o| self.lacking.get(o))
            .is_some_and(|l| l.for_long_since().is_some())
    }

    /// Asks for missing chunks while the window has room, each of the first source that can
    /// give it now. Says whether some chunk waits for a source passed over for now, or why the
    /// file cannot be had.
    fn ask(&mut self, now: Instant) -> Result<(Vec<Action>, bool), Failure> {
        let mut actions = Vec::new();
        let mut waiting = false;
        for index in 0..self.chunks.len() {
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                break;
            }
            let Chunk::Missing { not_before } = self.chunks[index] else {
                continue;
            };
            match self.source_for(index, now).cloned() {
                Ok(from) if not_before <= now => actions.push(self.fetch(index, from, now)),
                Ok(_) => {}
                Err(true) => waiting = true,
                Err(false) => return Err(self.why(index)),
            }
        }
        Ok((actions, waiting))
    }

    /// Asks `from` for chunk `index`.
    fn fetch(&mut self, index: usize, from: NodeId, now: Instant) -> Action {
        // A source passed over lately is asked for one chunk first.
        if let Some(o) = self.unreachable.get_mut(&from) {
            o.probing = Some(index);
        }
        if let Some(b) = self.behind.get_mut(&from)
            && b.until.is_some()
        {
            b.probing = Some(index);
        }
        self.chunks[index] = Chunk::InFlight {
            from: from.clone(),
            asked_at: now,
        };
        self.in_flight.insert(index);
        Action::Fetch { index, from }
    }

    /// What the download waits for, said when it stalls.
    fn stall(&self, now: Instant) -> Action {
        let out_of_reach = self.out_of_reach();
        let lacking = self.lacking(now);
        let fetching = self.fetching();
        let named: HashSet<&NodeId> = out_of_reach
            .iter()
            .chain(&lacking)
            .chain(&fetching)
            .collect();
        let unanswered: BTreeSet<NodeId> = self
            .in_flight
            .iter()
            .filter_map(|&index| match &self.chunks[index] {
                Chunk::InFlight { from, .. } => Some(from),
                _ => None,
            })
            .chain(self.quiet.keys())
            .filter(|from| !named.contains(from))
            .cloned()
            .collect();
        Action::Stalled {
            out_of_reach,
            lacking,
            fetching,
            unanswered: unanswered.into_iter().collect(),
        }
    }

    /// Checks what the download keeps holds together: the chunks in flight are those asked
    /// and not answered, and every source asked again for one chunk (to tell whether it
    /// serves again) waits for an answer it can still get.
    #[cfg(test)]
    fn check(&self) {
        let asked: BTreeSet<usize> = (0..self.chunks.len())
            .filter(|&i| matches!(self.chunks[i], Chunk::InFlight { .. }))
            .collect();
        assert_eq!(asked, self.in_flight);
        assert!(self.in_flight.len() <= MAX_IN_FLIGHT);
        let waits_for = |source: &NodeId, index: usize| {
            matches!(&self.chunks[index], Chunk::InFlight { from, .. } if from == source)
                || self
                    .quiet
                    .get(source)
                    .is_some_and(|owed| owed.contains_key(&index))
        };
        for (source, o) in &self.unreachable {
            if let Some(index) = o.probing {
                assert!(waits_for(source, index), "{source} probed for {index}");
            }
        }
        for (source, b) in &self.behind {
            if let Some(index) = b.probing {
                assert!(waits_for(source, index), "{source} probed for {index}");
            }
        }
        for (source, owed) in &self.quiet {
            assert!(!owed.is_empty());
            for index in owed.keys() {
                assert!(
                    !matches!(&self.chunks[*index], Chunk::InFlight { from, .. } if from == source)
                );
            }
        }
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
        Failure::Chunk {
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
    tree_sources(run, parent, job, local, hash, name_of).0
}

/// The sources of [`distribution_sources`], with the run's originator named among them
/// ([`Sources::originator`]) only when they take in every node a copy of the run's file may
/// come from: the originator, the holders the run names, and every other target of the job
/// (the job's targets are few enough that the fallbacks wrap round them all, and each is
/// named). Each of those targets fetches from the same nodes, so a copy can come from no one
/// else, and the download may end once they all say they do not hold the file. In a larger
/// run a target's ancestors fetch from fallbacks of their own that are not among these: the
/// originator is not named, and the download waits for a holder until the job's timeout.
pub fn run_file_sources(
    run: &Run,
    parent: &Parent,
    job: &JobEntry,
    local: &NodeId,
    hash: &Fingerprint,
    name_of: impl Fn(TargetKey) -> Option<NodeId>,
) -> Sources {
    let (nodes, covers_the_run) = tree_sources(run, parent, job, local, hash, name_of);
    let originator = (covers_the_run && run.originator != *local && sent_once(run, hash))
        .then(|| run.originator.clone());
    Sources { nodes, originator }
}

/// Whether `hash` is the file of only one job of `run`: another job sending it (in another
/// parent, or run once on another node) has targets of its own that fetch it from sources
/// not among these, and may hold a copy these never hear of.
fn sent_once(run: &Run, hash: &Fingerprint) -> bool {
    run.parents
        .iter()
        .flat_map(|p| &p.jobs)
        .filter(|job| match &job.spec.component {
            jobs::Component::Add(t) | jobs::Component::Copy(t) => {
                t.file.as_ref().is_some_and(|f| f.hash == *hash)
            }
            _ => false,
        })
        .count()
        == 1
}

/// [`distribution_sources`], and whether they name every other target of the job.
fn tree_sources(
    run: &Run,
    parent: &Parent,
    job: &JobEntry,
    local: &NodeId,
    hash: &Fingerprint,
    name_of: impl Fn(TargetKey) -> Option<NodeId>,
) -> (Vec<NodeId>, bool) {
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
    // More targets than sources cannot all be among them (a run to ten thousand targets is
    // not gone through).
    let local_key = TargetKey::of(local);
    let covers_the_run = keys.len() <= sources.len() + 1
        && keys
            .iter()
            .filter(|k| **k != local_key)
            .all(|k| name(*k).is_some_and(|node| seen.contains(&node)));
    (sources, covers_the_run)
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

    /// Answers at `now` each request in `said` as `answer` says (`None`: not answered), then
    /// each request those answers bring, until `d` asks nothing more. Returns the requests
    /// not answered, and everything else `d` said.
    fn answer_at_once(
        d: &mut Download,
        mut said: Vec<Action>,
        now: Instant,
        mut answer: impl FnMut(usize, &str) -> Option<ChunkResult>,
    ) -> (Vec<(usize, String)>, Vec<Action>) {
        let (mut left, mut other) = (Vec::new(), Vec::new());
        while !said.is_empty() {
            let mut next = Vec::new();
            for action in said {
                let Action::Fetch { index, from } = action else {
                    other.push(action);
                    continue;
                };
                match answer(index, &from.0) {
                    Some(result) => next.extend(d.handle(got(index, &from.0, result), now)),
                    None => left.push((index, from.0)),
                }
            }
            said = next;
        }
        (left, other)
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
                fetching: vec![],
                unanswered: vec![],
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
        assert!(d.handle(Input::Sources(vec![n("c")].into()), t).is_empty());
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
                fetching: vec![],
                unanswered: vec![],
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

    const PARK: Duration = Duration::from_secs(5);

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// What a download did, driven in simulated time.
    #[derive(Default)]
    struct Trace {
        /// Requests made: when, which chunk, of whom.
        asked: Vec<(Instant, usize, NodeId)>,
        /// Everything else it said, and when.
        said: Vec<(Instant, Action)>,
    }

    impl Trace {
        fn stalls(&self) -> Vec<&(Instant, Action)> {
            self.said
                .iter()
                .filter(|(_, a)| matches!(a, Action::Stalled { .. }))
                .collect()
        }

        fn done_at(&self) -> Option<Instant> {
            self.said
                .iter()
                .find(|(_, a)| *a == Action::Done)
                .map(|(at, _)| *at)
        }

        fn first_ask_of(&self, source: &str) -> Option<Instant> {
            self.asked
                .iter()
                .find(|(_, _, from)| *from == n(source))
                .map(|(at, _, _)| *at)
        }

        /// When the last of `sources` to be asked was first asked (`None`: one never was).
        fn all_asked_by(&self, sources: &[NodeId]) -> Option<Instant> {
            sources
                .iter()
                .map(|s| self.first_ask_of(&s.0))
                .try_fold(None, |latest: Option<Instant>, at| {
                    at.map(|at| Some(latest.map_or(at, |l| l.max(at))))
                })
                .flatten()
        }
    }

    /// Drives `d` from `start` for `span` of simulated time as the node does (a tick every
    /// 25 ms), each request answered as `answer` says from the time it was asked: after how
    /// long, and how (`None`: never).
    fn drive(
        d: &mut Download,
        first: Vec<Action>,
        start: Instant,
        span: Duration,
        mut answer: impl FnMut(Instant, usize, &NodeId) -> Option<(Duration, ChunkResult)>,
    ) -> Trace {
        const TICK: Duration = Duration::from_millis(25);
        let mut trace = Trace::default();
        let mut due: std::collections::BTreeMap<(Instant, u64), Input> = Default::default();
        let mut sent = 0;
        let mut now = start;
        let mut next_tick = start + TICK;
        let mut actions = first;
        loop {
            for action in actions {
                match action {
                    Action::Fetch { index, from } => {
                        if let Some((after, result)) = answer(now, index, &from) {
                            sent += 1;
                            let reply = Input::Got {
                                index,
                                from: from.clone(),
                                result,
                            };
                            due.insert((now + after, sent), reply);
                        }
                        trace.asked.push((now, index, from));
                    }
                    other => trace.said.push((now, other)),
                }
            }
            if d.is_over() || now >= start + span {
                return trace;
            }
            let input = match due.first_key_value() {
                Some((&(at, _), _)) if at < next_tick => {
                    now = at;
                    due.pop_first().expect("an answer is due").1
                }
                _ => {
                    now = next_tick;
                    next_tick += TICK;
                    Input::Tick
                }
            };
            actions = d.handle(input, now);
            if !d.is_over() {
                d.check();
            }
        }
    }

    /// A parent cut from its own sources holds each request for 5 s (the node parks it,
    /// waiting for the chunk) and then says it does not have the chunk yet. The download turns
    /// to the originator once the parent has given nothing for its patience, for the chunks
    /// asked of the parent and the ones after them, and finishes.
    #[test]
    fn a_stalled_parent_is_left_for_the_originator() {
        let t = Instant::now();
        let (mut d, first) = Download::new(3 * MAX_IN_FLIGHT, vec![n("parent"), n("origin")], t);
        let trace = drive(&mut d, first, t, secs(120), |_, _, from| {
            Some(if *from == n("parent") {
                (PARK, ChunkResult::NotYet)
            } else {
                (ms(20), ChunkResult::Ok)
            })
        });
        let asked = trace
            .first_ask_of("origin")
            .expect("the originator is asked");
        assert!(
            asked - t <= NOT_YET_PATIENCE + secs(1),
            "asked after {:?}",
            asked - t
        );
        let done = trace.done_at().expect("the download finishes");
        assert!(
            done - t <= NOT_YET_PATIENCE + secs(5),
            "done after {:?}",
            done - t
        );
    }

    /// A parent that gives chunk after chunk but keeps one waiting (its own fetch of that one
    /// is stuck): that chunk is had from the originator once it has waited for the parent's
    /// patience, while the rest goes on coming from the parent (passed over only briefly).
    #[test]
    fn a_chunk_kept_waiting_by_a_parent_that_gives_others_comes_from_the_originator() {
        let t = Instant::now();
        let (mut d, first) = Download::new(640, vec![n("parent"), n("origin")], t);
        let trace = drive(&mut d, first, t, secs(120), |_, index, from| {
            Some(match (from.0.as_str(), index) {
                ("parent", 0) => (PARK, ChunkResult::NotYet),
                ("parent", _) => (secs(1), ChunkResult::Ok),
                _ => (ms(20), ChunkResult::Ok),
            })
        });
        let asked = trace
            .asked
            .iter()
            .find(|(_, index, from)| *index == 0 && *from == n("origin"))
            .map(|(at, _, _)| *at - t)
            .expect("the originator is asked for chunk 0");
        // Told when the parent answers, which it does 5 s after each request.
        assert!(
            asked <= NOT_YET_PATIENCE + PARK + secs(1),
            "asked after {asked:?}"
        );
        let from_parent = trace
            .asked
            .iter()
            .filter(|(_, _, from)| *from == n("parent"))
            .count();
        assert!(
            from_parent > 400,
            "{from_parent} chunks asked of the parent"
        );
        assert!(trace.done_at().is_some(), "{:?}", trace.said);
    }

    /// Requests nobody answers (a holder that takes them and says nothing until they time
    /// out): after 30 s without a chunk the download says it is stalled, once, naming whom it
    /// waits for.
    #[test]
    fn a_download_without_a_chunk_for_a_while_says_so_once() {
        let t = Instant::now();
        let (mut d, first) = Download::new(4, vec![n("origin")], t);
        let trace = drive(&mut d, first, t, secs(59), |_, _, _| None);
        let stalls = trace.stalls();
        assert_eq!(stalls.len(), 1, "{:?}", trace.said);
        let (at, said) = stalls[0];
        assert!(
            *at - t >= STALL_AFTER && *at - t < STALL_AFTER + secs(1),
            "said after {:?}",
            *at - t
        );
        assert_eq!(
            *said,
            Action::Stalled {
                out_of_reach: vec![],
                lacking: vec![],
                fetching: vec![],
                unanswered: vec![n("origin")],
            }
        );
    }

    /// The parent is stalled and the originator out of reach (this node and its parent cut
    /// off together): the download says so once, neither fails nor gives up on the parent
    /// (asked again for one chunk after pauses that double), and finishes once the parent has
    /// the chunks.
    #[test]
    fn with_every_source_stalled_it_says_so_and_goes_on_when_one_serves() {
        let t = Instant::now();
        let back = t + secs(60);
        let (mut d, first) = Download::new(4, vec![n("parent"), n("origin")], t);
        let trace = drive(&mut d, first, t, secs(180), |now, _, from| {
            Some(match from.0.as_str() {
                "parent" if now >= back => (ms(20), ChunkResult::Ok),
                "parent" => (PARK, ChunkResult::NotYet),
                _ => (ms(10), ChunkResult::Unreachable),
            })
        });
        let stalls = trace.stalls();
        assert_eq!(stalls.len(), 1, "{:?}", trace.said);
        let (at, said) = stalls[0];
        assert!(*at - t <= STALL_AFTER + secs(1), "said after {:?}", *at - t);
        assert!(
            matches!(said, Action::Stalled { fetching, .. } if *fetching == vec![n("parent")]),
            "{said:?}"
        );
        // Passed over, the parent is asked again one chunk at a time, less and less often.
        let probes: Vec<Instant> = trace
            .asked
            .iter()
            .filter(|(at, _, from)| *from == n("parent") && *at > t + secs(31) && *at < back)
            .map(|(at, _, _)| *at)
            .collect();
        assert!(probes.len() >= 2, "{probes:?}");
        assert!(probes.windows(2).all(|w| w[0] < w[1]), "{probes:?}");
        let gaps: Vec<Duration> = probes.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[0] < g[1]), "{gaps:?}");
        let done = trace.done_at().expect("the download finishes");
        assert!(
            done < back + MAX_UNREACHABLE_PAUSE + PARK,
            "done after {:?}",
            done - t
        );
    }

    /// A tick while every source is passed over asks nothing and does not go through the
    /// chunks, each against every source (a 32 GiB file has 32768 chunks; a run names dozens
    /// of sources).
    #[test]
    fn a_tick_with_every_source_paused_looks_at_no_chunk() {
        let t = Instant::now();
        let sources: Vec<NodeId> = (0..50).map(|i| n(&format!("s{i:02}"))).collect();
        let (mut d, first) = Download::new(4096, sources, t);
        // Every source out of reach in turn.
        let (_, said) = answer_at_once(&mut d, first, t, |_, _| Some(ChunkResult::Unreachable));
        assert!(
            said.iter().any(|a| matches!(a, Action::Stalled { .. })),
            "{said:?}"
        );
        d.looked_up.set(0);
        assert!(d.handle(Input::Tick, t + ms(100)).is_empty());
        assert_eq!(d.looked_up.get(), 0, "sources looked at in one tick");
        // Once the first pause is over, the sources are asked again.
        let a = d.handle(Input::Tick, t + UNREACHABLE_PAUSE);
        assert!(!fetches(&a).is_empty(), "{a:?}");
    }

    /// A holder that stops answering (its process stopped: the connection stays open, nothing
    /// comes back until its requests time out a minute later) while the download goes on: the
    /// chunks asked of it are asked of the originator within seconds, and it is asked for no
    /// more than one chunk meanwhile.
    #[test]
    fn a_holder_that_stops_answering_loses_its_chunks_to_the_others() {
        let t = Instant::now();
        let stopped = t + secs(1);
        let (mut d, first) = Download::new(400, vec![n("parent"), n("origin")], t);
        let trace = drive(&mut d, first, t, secs(120), |now, _, from| {
            Some(match from.0.as_str() {
                "parent" if now >= stopped => (secs(60), ChunkResult::Unreachable),
                "parent" => (ms(500), ChunkResult::Ok),
                _ => (ms(20), ChunkResult::Ok),
            })
        });
        let done = trace.done_at().expect("the download finishes");
        assert!(
            done - stopped < secs(12),
            "done {:?} after the parent stopped",
            done - stopped
        );
        let later = trace
            .asked
            .iter()
            .filter(|(at, _, from)| *from == n("parent") && *at > stopped + secs(11))
            .count();
        assert!(later <= 1, "{later} chunks asked of the stopped parent");
        assert!(trace.stalls().is_empty(), "{:?}", trace.said);
    }

    /// A parent still fetching the file holds each request until the chunk comes (5 s at
    /// most) and says it does not have it yet, for a while, then serves: slow, not quiet, it
    /// keeps its chunks (the originator is asked for none).
    #[test]
    fn a_parent_that_holds_requests_a_few_seconds_is_not_taken_for_quiet() {
        let t = Instant::now();
        let (mut d, first) = Download::new(4 * MAX_IN_FLIGHT, vec![n("parent"), n("origin")], t);
        let trace = drive(&mut d, first, t, secs(120), |now, _, from| {
            Some(match from.0.as_str() {
                "parent" if now < t + secs(20) => (PARK, ChunkResult::NotYet),
                "parent" => (PARK - ms(100), ChunkResult::Ok),
                _ => (ms(20), ChunkResult::Ok),
            })
        });
        assert_eq!(trace.first_ask_of("origin"), None);
        assert!(trace.done_at().is_some(), "{:?}", trace.said);
    }

    /// The chunks of a holder that went quiet are asked of another; its answers, when they
    /// come after all, are taken (a chunk in is in, whoever gave it) and bring it back for
    /// every chunk; the other's answer to the same chunk changes nothing.
    #[test]
    fn a_quiet_holder_answering_late_is_harmless_and_serves_again() {
        let t = Instant::now();
        let (mut d, first) = Download::new(MAX_IN_FLIGHT + 4, vec![n("parent"), n("origin")], t);
        assert!(fetches(&first).iter().all(|(_, s)| s == "parent"));
        let mut now = t;
        let mut moved = Vec::new();
        while now < t + secs(15) && moved.is_empty() {
            now += secs(1);
            moved = fetches(&d.handle(Input::Tick, now));
        }
        assert_eq!(
            moved.len(),
            MAX_IN_FLIGHT,
            "asked of the originator: {moved:?}"
        );
        assert!(moved.iter().all(|(_, s)| s == "origin"), "{moved:?}");
        assert!(now - t <= secs(10), "moved after {:?}", now - t);
        // The parent answers chunk 0 after all: taken, and the parent is back.
        let a = d.handle(got(0, "parent", ChunkResult::Ok), now);
        assert_eq!(fetches(&a), vec![(MAX_IN_FLIGHT, "parent".into())]);
        // The originator's answer to chunk 0 comes too: nothing more is asked for it.
        let a = d.handle(got(0, "origin", ChunkResult::Ok), now);
        assert!(fetches(&a).is_empty(), "{a:?}");
        assert_eq!(d.progress().0, 1);
        let mut done = Vec::new();
        for i in 1..MAX_IN_FLIGHT {
            done.extend(d.handle(got(i, "origin", ChunkResult::Ok), now));
            // The parent's late answer to the same chunk changes nothing.
            done.extend(d.handle(got(i, "parent", ChunkResult::Ok), now));
        }
        let rest: Vec<(usize, String)> = fetches(&done);
        assert!(rest.iter().all(|(_, s)| s == "parent"), "{rest:?}");
        for i in MAX_IN_FLIGHT..MAX_IN_FLIGHT + 4 {
            done.extend(d.handle(got(i, "parent", ChunkResult::Ok), now));
        }
        assert_eq!(
            done.iter().filter(|a| **a == Action::Done).count(),
            1,
            "{done:?}"
        );
    }

    /// This node was not running for a minute and a half (stopped, or its clock jumped): its
    /// requests timed out on its own side, and its timers fire late at once. None of that
    /// is laid at the holders' door: no stall is said, no holder taken for out of reach, and
    /// the chunks are asked again of the same holder.
    #[test]
    fn time_this_node_was_not_running_is_not_counted_against_the_holders() {
        let t = Instant::now();
        let (mut d, first) = Download::new(2 * MAX_IN_FLIGHT, vec![n("parent"), n("origin")], t);
        let mut now = t;
        for _ in 0..4 {
            now += ms(25);
            assert!(d.handle(Input::Tick, now).is_empty());
        }
        let woke = now + secs(90);
        let mut said = Vec::new();
        for (i, _) in fetches(&first) {
            said.extend(d.handle(got(i, "parent", ChunkResult::Unreachable), woke));
        }
        said.extend(d.handle(Input::Tick, woke));
        assert!(
            !said.iter().any(|a| matches!(a, Action::Stalled { .. })),
            "{said:?}"
        );
        assert!(d.out_of_reach().is_empty(), "{:?}", d.out_of_reach());
        let again = fetches(&said);
        assert_eq!(again.len(), MAX_IN_FLIGHT, "{said:?}");
        assert!(again.iter().all(|(_, s)| s == "parent"), "{again:?}");
        // The parent answers: the download goes on from it, without a word of a stall.
        let mut rest = Vec::new();
        for (i, _) in again {
            rest.extend(d.handle(got(i, "parent", ChunkResult::Ok), woke + ms(10)));
        }
        for (i, s) in fetches(&rest) {
            assert_eq!(s, "parent");
            rest.extend(d.handle(got(i, "parent", ChunkResult::Ok), woke + ms(20)));
        }
        assert!(rest.contains(&Action::Done), "{rest:?}");
        assert!(
            !rest.iter().any(|a| matches!(a, Action::Stalled { .. })),
            "{rest:?}"
        );
    }

    /// Stopped while a holder was still fetching the file itself (it keeps each request a
    /// while, then says it does not have the chunk yet): the time this node was not running
    /// does not use up that holder's patience.
    #[test]
    fn time_this_node_was_not_running_does_not_use_up_a_fetching_holders_patience() {
        let t = Instant::now();
        let (mut d, first) = Download::new(1, vec![n("parent"), n("origin")], t);
        assert_eq!(fetches(&first), vec![(0, "parent".into())]);
        let woke = t + NOT_YET_PATIENCE + secs(30);
        let a = d.handle(got(0, "parent", ChunkResult::NotYet), woke);
        assert!(fetches(&a).is_empty(), "{a:?}");
        let a = d.handle(Input::Tick, woke + NOT_YET_PAUSE);
        assert_eq!(fetches(&a), vec![(0, "parent".into())]);
    }

    /// A holder still fetching the file kept chunks waiting past its patience, was passed
    /// over and asked again for one chunk, then went quiet: once it answers any of the
    /// requests it owes, it is asked again (the one chunk it was asked again for, whose
    /// answer is not awaited any more, does not keep it passed over for good).
    #[test]
    fn a_quiet_holder_asked_again_for_one_chunk_is_back_once_it_answers_another() {
        /// The chunks the parent never answers for.
        const KEPT: std::ops::Range<usize> = 1..MAX_IN_FLIGHT;
        /// Answers at once, not yet, what is asked of the parent but [`KEPT`]; the requests
        /// left go to `left`.
        fn not_yet(d: &mut Download, said: Vec<Action>, now: Instant, left: &mut Vec<Req>) {
            let kept = |i: usize, s: &str| s != "parent" || KEPT.contains(&i);
            let answer = |i, s: &str| (!kept(i, s)).then_some(ChunkResult::NotYet);
            left.extend(answer_at_once(d, said, now, answer).0);
        }
        type Req = (usize, String);
        let t = Instant::now();
        let (mut d, first) = Download::new(MAX_IN_FLIGHT + 40, vec![n("parent"), n("origin")], t);
        let mut now = t;
        let mut left = Vec::new();
        not_yet(&mut d, first, now, &mut left);
        // Answering (not quiet), and keeping every chunk waiting: passed over in the end.
        while !left.iter().any(|(_, s)| s == "origin") {
            assert!(now < t + NOT_YET_PATIENCE + secs(2), "{left:?}");
            now += secs(1);
            let said = d.handle(Input::Tick, now);
            not_yet(&mut d, said, now, &mut left);
        }
        assert_eq!(d.fetching(), vec![n("parent")]);
        // Its pause over, it is asked again for one chunk once the window has room; it does
        // not answer any more.
        now += BEHIND_PAUSE;
        let origin: Vec<usize> = left
            .iter()
            .filter(|(_, s)| s == "origin")
            .map(|(i, _)| *i)
            .collect();
        let mut asked = Vec::new();
        for i in origin {
            asked.extend(fetches(&d.handle(got(i, "origin", ChunkResult::Ok), now)));
        }
        let probe: Vec<&Req> = asked.iter().filter(|(_, s)| s == "parent").collect();
        assert_eq!(probe.len(), 1, "{asked:?}");
        let probe = probe[0].0;
        // Quiet: everything asked of it goes to the originator.
        let mut moved = Vec::new();
        while moved.is_empty() {
            assert!(now < t + secs(60));
            now += secs(1);
            let said = d.handle(Input::Tick, now);
            moved = fetches(&said);
        }
        assert!(moved.iter().all(|(_, s)| s == "origin"), "{moved:?}");
        assert!(moved.contains(&(probe, "origin".into())), "{moved:?}");
        // It answers one of the others (not yet): asked again, for one chunk (it has given
        // none since it was passed over), not passed over for good.
        d.handle(got(3, "parent", ChunkResult::NotYet), now);
        let mut next = Vec::new();
        for (i, _) in moved
            .into_iter()
            .chain(asked.into_iter().filter(|(i, _)| *i != probe))
        {
            next.extend(fetches(&d.handle(got(i, "origin", ChunkResult::Ok), now)));
        }
        let again: Vec<&Req> = next.iter().filter(|(_, s)| s == "parent").collect();
        assert_eq!(again.len(), 1, "{next:?}");
    }

    /// Sources that answer anyhow for a minute (at once or late, not having the file, timing
    /// out, going quiet) and serve well after: whatever state the download was left in, it
    /// finishes (no source is left passed over for good, no chunk waits for nothing).
    #[test]
    fn after_any_mix_of_answers_the_download_finishes_once_the_sources_serve() {
        for seed in 1..=20u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = move |below: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % below
            };
            let t = Instant::now();
            let well = t + secs(60);
            let sources = vec![n("a"), n("b"), n("c")];
            let (mut d, first) = Download::new(40, sources, t);
            let trace = drive(&mut d, first, t, secs(400), |now, _, _| {
                if now >= well {
                    return Some((ms(20), ChunkResult::Ok));
                }
                let after = ms(next(6_000));
                Some(match next(6) {
                    0 | 1 => (after, ChunkResult::Ok),
                    2 => (after, ChunkResult::NotYet),
                    3 => (after, ChunkResult::Unknown),
                    4 => (after, ChunkResult::Unreachable),
                    // Quiet until its request times out.
                    _ => (secs(60), ChunkResult::Unreachable),
                })
            });
            let done = trace.done_at();
            assert!(
                done.is_some_and(|at| at < well + secs(180)),
                "seed {seed}: done after {:?}; {:?}",
                done.map(|at| at - t),
                trace.said
            );
        }
    }

    /// The sources of a run's file, `originator` among them.
    fn of_run(nodes: &[&str], originator: &str) -> Sources {
        Sources {
            nodes: nodes.iter().map(|s| n(s)).collect(),
            originator: Some(n(originator)),
        }
    }

    /// The sources of the last target of a run to as many targets as name the originator
    /// ([`run_file_sources`]: one more than [`FALLBACK_TARGETS`]): its four ancestors, the
    /// originator, holders the run names, and the other targets.
    fn deep_in_a_tree() -> Sources {
        let ancestors = (0..4).map(|i| format!("ancestor{i}"));
        let holders = (0..2).map(|i| format!("holder{i}"));
        let targets = (0..FALLBACK_TARGETS - 4).map(|i| format!("target{i:02}"));
        let mut nodes: Vec<String> = ancestors.collect();
        nodes.push("origin".into());
        nodes.extend(holders.chain(targets));
        let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
        of_run(&nodes, "origin")
    }

    /// The failures a download said.
    fn failures(trace: &Trace) -> Vec<(Instant, Failure)> {
        trace
            .said
            .iter()
            .filter_map(|(at, a)| match a {
                Action::Failed(f) => Some((*at, f.clone())),
                _ => None,
            })
            .collect()
    }

    /// The originator no longer holds the file (its copy removed since the run), and no other
    /// node has a copy: once the originator has said so for [`NOT_HELD_AFTER`] and every other
    /// source has said it does not hold the file either, the download fails, saying no member
    /// holds it, instead of waiting for the job's timeout.
    #[test]
    fn a_file_no_member_holds_fails_naming_the_originator() {
        let t = Instant::now();
        let sources = deep_in_a_tree();
        let all = sources.nodes.clone();
        let (mut d, first) = Download::new(40, sources, t);
        let trace = drive(&mut d, first, t, secs(600), |_, _, _| {
            Some((ms(20), ChunkResult::Unknown))
        });
        let failed = failures(&trace);
        let [(at, failure)] = &failed[..] else {
            panic!("{:?}", trace.said);
        };
        assert_eq!(
            *failure,
            Failure::NotHeld {
                originator: n("origin"),
                others: all.len() - 1,
            }
        );
        // Every source is asked (the ones after the originator once it has said so long
        // enough), and each one's word is taken once it has said so for [`NOT_HELD_AFTER`]
        // itself: the download fails within a few seconds of the last one's spell.
        let all_asked = trace.all_asked_by(&all).expect("every source is asked");
        let after = *at - all_asked;
        assert!(
            after >= NOT_HELD_AFTER && after < NOT_HELD_AFTER + secs(5),
            "failed {after:?} after every source was asked ({:?} in)",
            *at - t
        );
        let why = failure.describe("app.conf (blake3 abc)", |s| s.0.to_uppercase());
        assert!(
            why.starts_with(
                "no member holds app.conf (blake3 abc): its originator ORIGIN \
                             answered it does not hold it"
            ),
            "{why}"
        );
    }

    /// A download whose originator no longer holds the file, driven for 5 min with `others`
    /// answering as it says (given when each request was made), the originator and the
    /// parent not holding the file.
    fn without_the_originators_copy(
        mut others: impl FnMut(Instant, usize, &NodeId) -> (Duration, ChunkResult),
    ) -> (Download, Trace) {
        let t = Instant::now();
        let sources = of_run(&["parent", "origin", "holder", "target"], "origin");
        let (mut d, first) = Download::new(40, sources, t);
        let trace = drive(&mut d, first, t, secs(300), |at, index, from| {
            Some(match from.0.as_str() {
                "parent" | "origin" => (ms(20), ChunkResult::Unknown),
                _ => others(at, index, from),
            })
        });
        (d, trace)
    }

    /// The originator does not hold the file, nor does any other source: in a small tree the
    /// download fails as soon as the originator, and then each other source, has said so for
    /// [`NOT_HELD_AFTER`], not before.
    #[test]
    fn a_file_no_member_of_a_small_run_holds_fails_once_the_originator_said_so_long_enough() {
        let (_, trace) = without_the_originators_copy(|_, _, _| (ms(20), ChunkResult::Unknown));
        let failed = failures(&trace);
        let [(at, Failure::NotHeld { originator, others })] = &failed[..] else {
            panic!("{:?}", trace.said);
        };
        let sources = ["parent", "origin", "holder", "target"].map(n);
        let all_asked = trace.all_asked_by(&sources).expect("every source is asked");
        let after = *at - all_asked;
        assert!(
            after >= NOT_HELD_AFTER && after < NOT_HELD_AFTER + secs(5),
            "failed {after:?} after the last source was first asked"
        );
        assert_eq!((originator, *others), (&n("origin"), 3));
    }

    /// A download whose originator lost its copy while `holder` and `target` hold part of
    /// the file: chunk `i` comes from the one whose `has` says so, the other saying it does not
    /// have it yet; `parent` and `origin` do not hold the file. Driven for 5 min.
    fn with_parts(has: impl Fn(&str, usize) -> bool) -> (Download, Trace) {
        without_the_originators_copy(move |_, index, from| {
            if has(&from.0, index) {
                (ms(20), ChunkResult::Ok)
            } else {
                (ms(20), ChunkResult::NotYet)
            }
        })
    }

    /// The originator lost its copy and the other nodes hold only the same first half of the
    /// file: the download fails, naming a chunk none has, well before a job's timeout
    /// (it waited for the timeout, the holders answering "not yet" for ever).
    #[test]
    fn a_file_whose_copies_all_lack_a_chunk_fails_naming_it() {
        let (_, trace) = with_parts(|_, index| index < 20);
        let failed = failures(&trace);
        let [
            (
                at,
                Failure::PartHeldByNone {
                    originator,
                    index,
                    partial,
                },
            ),
        ] = &failed[..]
        else {
            panic!("{:?}", trace.said);
        };
        assert_eq!((originator, *partial), (&n("origin"), 2));
        assert!(*index >= 20, "chunk {index}");
        let took = *at - trace.asked[0].0;
        assert!(took < secs(300), "failed after {took:?}");
        let why = failures(&trace)[0]
            .1
            .describe("app.conf (blake3 abc)", |s| s.0.to_uppercase());
        assert!(
            why.starts_with("no member holds all of app.conf (blake3 abc): its originator ORIGIN"),
            "{why}"
        );
    }

    /// The originator lost its copy, and the other nodes hold halves that make the whole
    /// file: the download completes, from both.
    #[test]
    fn a_file_whose_copies_together_hold_every_chunk_completes() {
        let (_, trace) = with_parts(|who, index| (who == "holder") == (index < 20));
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        assert!(trace.done_at().is_some(), "{:?}", trace.said);
    }

    /// `holder` answers that it does not hold the file to the requests asked of it before
    /// 30 s, and as `then` says to the later ones; every other source does not hold the file.
    fn lacking_then(then: (Duration, ChunkResult)) -> (Download, Trace) {
        let mut start = None;
        without_the_originators_copy(move |at, _, from| {
            let start = *start.get_or_insert(at);
            match from.0.as_str() {
                "holder" if at >= start + secs(30) => then,
                _ => (ms(20), ChunkResult::Unknown),
            }
        })
    }

    /// Whether `source` answered that it does not hold the file before 30 s.
    fn said_it_lacks_it_first(trace: &Trace, source: &str) -> bool {
        let start = trace.asked[0].0;
        trace
            .first_ask_of(source)
            .is_some_and(|at| at < start + secs(30))
    }

    /// The originator does not hold the file, and a source that said it does not either is
    /// out of reach since (it may hold it by now: a holder behind a partition): the download
    /// waits, as for any holder out of reach.
    #[test]
    fn a_source_out_of_reach_keeps_waiting_a_download_the_originator_cannot_serve() {
        let (d, trace) = lacking_then((ms(10), ChunkResult::Unreachable));
        assert!(said_it_lacks_it_first(&trace, "holder"));
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        assert!(!d.is_over());
        assert_eq!(d.out_of_reach(), vec![n("holder")]);
    }

    /// The originator does not hold the file, and a source that said it does not either is
    /// fetching it since (from before the originator lost it): the download waits for it
    /// while a chunk the originator sent before could still reach it, and fails once that
    /// source, asked later than that, still has none (nothing can bring it one any more).
    #[test]
    fn a_source_still_fetching_a_file_nobody_can_give_fails_once_that_is_settled() {
        let (d, trace) = lacking_then((PARK, ChunkResult::NotYet));
        assert!(said_it_lacks_it_first(&trace, "holder"));
        let failed = failures(&trace);
        let [(at, Failure::PartHeldByNone { partial: 1, .. })] = &failed[..] else {
            panic!("{:?}", trace.said);
        };
        // The source's word counts from requests made NOT_HELD_AFTER into the originator's
        // spell (which began with the first requests), answered PARK later.
        let took = *at - trace.asked[0].0;
        assert!(
            took >= NOT_HELD_AFTER + PARK && took < secs(300),
            "failed after {took:?}"
        );
        assert!(d.is_over());
    }

    /// The originator does not hold the file, but a holder the run names does: the download
    /// finishes from it.
    #[test]
    fn a_holder_serves_a_file_the_originator_lacks() {
        let (_, trace) = without_the_originators_copy(|_, _, from| match from.0.as_str() {
            "holder" => (ms(20), ChunkResult::Ok),
            _ => (ms(20), ChunkResult::Unknown),
        });
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        assert!(trace.done_at().is_some(), "{:?}", trace.said);
    }

    /// The originator of a one-target run answers that it does not know the file for a while
    /// (its daemon restarted and does not know this node as a member yet) and then serves:
    /// the download finishes.
    #[test]
    fn an_originator_that_lacks_the_file_for_a_while_and_then_serves_is_waited_for() {
        for lacking_for in [3, 10, 30, 50].map(secs) {
            let t = Instant::now();
            let (mut d, first) = Download::new(40, of_run(&["origin"], "origin"), t);
            let trace = drive(&mut d, first, t, secs(300), |at, _, _| {
                Some(if at < t + lacking_for {
                    (ms(20), ChunkResult::Unknown)
                } else {
                    (ms(20), ChunkResult::Ok)
                })
            });
            assert!(
                failures(&trace).is_empty(),
                "{lacking_for:?}: {:?}",
                trace.said
            );
            assert!(
                trace.done_at().is_some(),
                "{lacking_for:?}: {:?}",
                trace.said
            );
        }
    }

    /// The originator serves part of the file, restarts (out of reach for a few seconds), and
    /// says twice for 40 s that it does not know the file (it does not know this node as a
    /// member yet), out of reach between: neither stretch is long enough, and the download
    /// finishes once it serves again.
    #[test]
    fn an_originator_that_lacks_the_file_twice_briefly_is_waited_for() {
        let t = Instant::now();
        let (mut d, first) = Download::new(40, of_run(&["origin"], "origin"), t);
        let mut served = 0;
        let trace = drive(&mut d, first, t, secs(300), |at, _, _| {
            let at = at - t;
            Some(if at < secs(1) && served < 10 {
                served += 1;
                (ms(20), ChunkResult::Ok)
            } else if at < secs(5) || (secs(45)..secs(50)).contains(&at) {
                (ms(20), ChunkResult::Unreachable)
            } else if at < secs(95) {
                (ms(20), ChunkResult::Unknown)
            } else {
                (ms(20), ChunkResult::Ok)
            })
        });
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        assert!(trace.done_at().is_some(), "{:?}", trace.said);
    }

    /// A holder the run names says for half a minute that it does not know the file (it does
    /// not know this node as a member yet), restarts (out of reach for 15 s), and says so
    /// again for 55 s before it serves, while the originator no longer holds the file: a
    /// request that failed starts its spell over, as it does the originator's, so neither
    /// stretch is long enough, and the download finishes.
    #[test]
    fn a_holder_that_lacks_the_file_twice_briefly_is_waited_for() {
        let t = Instant::now();
        let (mut d, first) = Download::new(40, of_run(&["origin", "holder"], "origin"), t);
        let trace = drive(&mut d, first, t, secs(300), |at, _, from| {
            let at = at - t;
            Some(match from.0.as_str() {
                "holder" if at < secs(30) => (ms(20), ChunkResult::Unknown),
                "holder" if at < secs(45) => (ms(20), ChunkResult::Unreachable),
                "holder" if at < secs(100) => (ms(20), ChunkResult::Unknown),
                "holder" => (ms(20), ChunkResult::Ok),
                _ => (ms(20), ChunkResult::Unknown),
            })
        });
        let asked_in = |from: Duration, to: Duration| {
            trace
                .asked
                .iter()
                .any(|(at, _, source)| *source == n("holder") && (from..to).contains(&(*at - t)))
        };
        assert!(
            asked_in(secs(30), secs(45)),
            "the holder was asked while out of reach"
        );
        assert!(
            asked_in(secs(60), secs(100)),
            "the holder was asked after a minute"
        );
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        assert!(trace.done_at().is_some(), "{:?}", trace.said);
    }

    /// The originator does not hold the file; a source that said it does not either is asked
    /// again and answers a few seconds later with a chunk (it has the file by then): while
    /// that request is unanswered the download waits, and it finishes.
    #[test]
    fn a_request_unanswered_keeps_waiting_a_download_the_originator_cannot_serve() {
        let t = Instant::now();
        let (mut d, first) = Download::new(2, of_run(&["origin", "late"], "origin"), t);
        let trace = drive(&mut d, first, t, secs(300), |at, index, from| {
            let at = at - t;
            Some(match (from.0.as_str(), index) {
                ("late", 0) if at >= secs(55) => (secs(7), ChunkResult::Ok),
                ("late", 0) => (secs(3), ChunkResult::Unknown),
                ("late", _) if at >= ms(61_500) => (ms(20), ChunkResult::Ok),
                ("late", _) => (secs(1), ChunkResult::Unknown),
                _ => (ms(20), ChunkResult::Unknown),
            })
        });
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        assert!(trace.done_at().is_some(), "{:?}", trace.said);
    }

    /// The originator does not hold the file; a source that said it does not either is asked
    /// again and answers nothing for a minute and a half, then gives the chunks (its process
    /// was stopped, with the file on its way to it): the download waits for it, and finishes.
    #[test]
    fn a_quiet_source_keeps_waiting_a_download_the_originator_cannot_serve() {
        let t = Instant::now();
        let (mut d, first) = Download::new(40, of_run(&["origin", "late"], "origin"), t);
        let trace = drive(&mut d, first, t, secs(400), |at, _, from| {
            let at = at - t;
            Some(match from.0.as_str() {
                "late" if at < secs(3) => (ms(20), ChunkResult::Unknown),
                "late" if at < secs(10) => (secs(90), ChunkResult::Ok),
                "late" => (ms(20), ChunkResult::Ok),
                _ => (ms(20), ChunkResult::Unknown),
            })
        });
        assert!(said_it_lacks_it_first(&trace, "late"));
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        assert!(trace.done_at().is_some(), "{:?}", trace.said);
    }

    /// A source first in line (an ancestor) says it does not hold the file, and then leaves a
    /// request unanswered until the originator has said so too for [`NOT_HELD_AFTER`]; its
    /// answer after all is that it does not hold it, given long before. Its word is older
    /// than the originator's: it is asked again, and serves.
    #[test]
    fn a_source_last_heard_lacking_the_file_before_the_originator_said_so_is_asked_again() {
        let t = Instant::now();
        let (mut d, first) = Download::new(40, of_run(&["ancestor", "origin"], "origin"), t);
        let trace = drive(&mut d, first, t, secs(300), |at, _, from| {
            let at = at - t;
            Some(match from.0.as_str() {
                "ancestor" if at < secs(1) => (ms(20), ChunkResult::Unknown),
                "ancestor" if at < secs(2) => (secs(75), ChunkResult::Unknown),
                "ancestor" => (ms(20), ChunkResult::Ok),
                _ => (ms(20), ChunkResult::Unknown),
            })
        });
        let first_asked = trace
            .first_ask_of("origin")
            .expect("the originator is asked");
        assert!(first_asked - t > secs(1), "{:?}", first_asked - t);
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        assert!(trace.done_at().is_some(), "{:?}", trace.said);
    }

    /// A run of `targets` targets named `t00`, `t01`, ..., from `origin`, with one job that
    /// sends a file, and its targets in tree order.
    fn run_to(targets: usize) -> (Run, JobEntry, Vec<NodeId>) {
        use jobs::{JobSpec, ParseOutcome, executor::QueueKind};

        use crate::message::TargetKeys;

        let mut spec = match JobSpec::parse("ADD", "/srv/app.conf /etc/", &Default::default()) {
            Ok(ParseOutcome::Spec(s)) => s,
            other => panic!("{other:?}"),
        };
        let jobs::Component::Add(transfer) = &mut spec.component else {
            panic!("{:?}", spec.component);
        };
        transfer.file = Some(jobs::spec::FileRef {
            name: "app.conf".into(),
            size: 0,
            hash: Fingerprint([1; 32]),
            chunks: vec![],
        });
        let job = JobEntry {
            job_id: "j".into(),
            fingerprint: spec.fingerprint(),
            spec,
            only_on: None,
        };
        let names: Vec<NodeId> = (0..targets).map(|i| n(&format!("t{i:02}"))).collect();
        let parent = Parent {
            parent_id: "p".into(),
            fingerprint: Fingerprint([0; 32]),
            queue: QueueKind::Sync,
            targets: names.clone(),
            target_keys: TargetKeys::default(),
            jobs: vec![job.clone()],
        };
        let mut in_order = names;
        in_order.sort_by_key(TargetKey::of);
        (Run::new("r", n("origin"), vec![parent]), job, in_order)
    }

    /// The sources of `local`'s copy of the file of the job of `run` ([`run_to`]), its
    /// members named by `name_of`.
    fn sources_in(
        run: &Run,
        job: &JobEntry,
        local: &NodeId,
        name_of: impl Fn(TargetKey) -> Option<NodeId>,
    ) -> Sources {
        let parent = &run.parents[0];
        run_file_sources(run, parent, job, local, &Fingerprint([1; 32]), name_of)
    }

    /// In a run to up to one more target than [`FALLBACK_TARGETS`], every target's sources
    /// take in every other target and the originator: they name it. One more target, and
    /// some target's ancestors fetch from nodes not among its sources: none names it.
    #[test]
    fn the_originator_is_named_only_when_the_sources_take_in_every_target() {
        for targets in [1, 2, 5, FALLBACK_TARGETS, FALLBACK_TARGETS + 1] {
            let (run, job, in_order) = run_to(targets);
            for local in &in_order {
                let sources = sources_in(&run, &job, local, |_| None);
                assert_eq!(sources.originator, Some(n("origin")), "{targets}: {local}");
                for other in in_order.iter().filter(|t| *t != local) {
                    assert!(sources.nodes.contains(other), "{targets}: {local}: {other}");
                }
            }
        }
        for targets in [FALLBACK_TARGETS + 2, 100, 1000] {
            let (run, job, in_order) = run_to(targets);
            for local in &in_order {
                let sources = sources_in(&run, &job, local, |_| None);
                assert_eq!(sources.originator, None, "{targets}: {local}");
            }
        }
    }

    /// The originator no longer holds the file; a holder that was out of reach comes back (its
    /// daemon restarted) and answers "unknown" for up to 40 s, not knowing this node as a
    /// member yet, then serves: its first "unknown" is not taken for its last word, and the
    /// download finishes.
    #[test]
    fn a_holder_back_from_out_of_reach_that_says_unknown_at_first_is_waited_for() {
        let t = Instant::now();
        let (mut d, first) = Download::new(4, of_run(&["origin", "holder"], "origin"), t);
        let trace = drive(&mut d, first, t, secs(400), |at, _, from| {
            let at = at - t;
            Some(match from.0.as_str() {
                "holder" if at < secs(120) => (ms(20), ChunkResult::Unreachable),
                "holder" if at < secs(160) => (ms(20), ChunkResult::Unknown),
                "holder" => (ms(20), ChunkResult::Ok),
                _ => (ms(20), ChunkResult::Unknown),
            })
        });
        assert!(
            trace.asked.iter().any(|(at, _, from)| from.0 == "holder"
                && *at - t >= secs(120)
                && *at - t < secs(160)),
            "the holder was asked while it said unknown"
        );
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        assert!(trace.done_at().is_some(), "{:?}", trace.said);
    }

    /// A run whose file another parent sends too: the targets of that parent fetch it from
    /// sources of their own, and may hold a copy these never hear of, so the originator is not
    /// named.
    #[test]
    fn a_file_another_parent_of_the_run_sends_too_leaves_the_originator_unnamed() {
        let (mut run, job, in_order) = run_to(3);
        let local = &in_order[0];
        assert_eq!(
            sources_in(&run, &job, local, |_| None).originator,
            Some(n("origin"))
        );
        let mut other = run.parents[0].clone();
        other.parent_id = "p2".into();
        other.targets = vec![n("elsewhere")];
        run.parents.push(other);
        assert_eq!(sources_in(&run, &job, local, |_| None).originator, None);
    }

    /// A run that gives only its targets' keys ([`Run::compact`]): a target the node cannot
    /// name yet may hold a copy it cannot ask for, so the originator is not named.
    #[test]
    fn a_target_the_node_cannot_name_leaves_the_originator_unnamed() {
        let (run, job, in_order) = run_to(5);
        let compact = run.compact();
        let members: HashMap<TargetKey, NodeId> = in_order
            .iter()
            .map(|t| (TargetKey::of(t), t.clone()))
            .collect();
        let local = &in_order[4];
        let all = sources_in(&compact, &job, local, |k| members.get(&k).cloned());
        assert_eq!(all.originator, Some(n("origin")));
        let unknown = TargetKey::of(&in_order[2]);
        let named = |k: TargetKey| (k != unknown).then(|| members.get(&k).cloned()).flatten();
        assert_eq!(sources_in(&compact, &job, local, named).originator, None);
        // At the originator itself, no copy comes from it.
        let (run, job, _) = run_to(3);
        assert_eq!(
            sources_in(&run, &job, &n("origin"), |_| None).originator,
            None
        );
    }

    /// A target deep in a run of a thousand: an ancestor says it does not hold the file, as
    /// does everyone else, for three minutes, when it has the file from fallbacks of its own
    /// (not among this target's sources), and serves. The download does not fail meanwhile.
    #[test]
    fn an_ancestor_that_gets_the_file_from_beyond_the_sources_is_waited_for() {
        let (run, job, in_order) = run_to(1000);
        let sources = sources_in(&run, &job, &in_order[999], |_| None);
        let ancestor = sources.nodes[0].clone();
        let t = Instant::now();
        let (mut d, first) = Download::new(40, sources, t);
        let trace = drive(&mut d, first, t, secs(400), |at, _, from| {
            Some(if *from == ancestor && at >= t + secs(180) {
                (ms(20), ChunkResult::Ok)
            } else {
                (ms(20), ChunkResult::Unknown)
            })
        });
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        assert!(trace.done_at().is_some(), "{:?}", trace.said);
    }

    /// No node of a run larger than the sources take in holds the file: the download waits
    /// (the job's timeout bounds it), however long.
    #[test]
    fn a_download_in_a_run_larger_than_the_fallbacks_never_says_no_member_holds_the_file() {
        let (run, job, in_order) = run_to(FALLBACK_TARGETS + 2);
        let t = Instant::now();
        let sources = sources_in(&run, &job, &in_order[FALLBACK_TARGETS + 1], |_| None);
        let (mut d, first) = Download::new(4, sources, t);
        let trace = drive(&mut d, first, t, secs(300), |_, _, _| {
            Some((ms(20), ChunkResult::Unknown))
        });
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        assert!(!d.is_over());
    }

    /// A job for the same file joins a download with sources from another run: they may
    /// leave out nodes a copy comes from, so the download no longer ends on the first run's
    /// originator's word.
    #[test]
    fn sources_of_another_run_joining_leave_the_originator_unnamed() {
        let t = Instant::now();
        let (mut d, first) = Download::new(40, of_run(&["origin"], "origin"), t);
        let mut other = of_run(&["other"], "other");
        d.handle(Input::Sources(other.clone()), t);
        let trace = drive(&mut d, first, t, secs(300), |_, _, _| {
            Some((ms(20), ChunkResult::Unknown))
        });
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        // The same run's other job joining changes nothing.
        let (mut d, first) = Download::new(40, of_run(&["origin"], "origin"), t);
        other.originator = Some(n("origin"));
        d.handle(Input::Sources(other), t);
        let trace = drive(&mut d, first, t, secs(300), |_, _, _| {
            Some((ms(20), ChunkResult::Unknown))
        });
        assert!(
            matches!(
                &failures(&trace)[..],
                [(_, Failure::NotHeld { others: 1, .. })]
            ),
            "{:?}",
            trace.said
        );
    }

    /// No originator named (the sources alone): a source that says it does not hold the file
    /// may still get it, so the download waits, however long.
    #[test]
    fn without_an_originator_named_a_download_nobody_serves_waits() {
        let t = Instant::now();
        let (mut d, first) = Download::new(40, vec![n("parent"), n("origin")], t);
        let trace = drive(&mut d, first, t, secs(300), |_, _, _| {
            Some((ms(20), ChunkResult::Unknown))
        });
        assert!(failures(&trace).is_empty(), "{:?}", trace.said);
        assert!(!d.is_over());
    }
}
