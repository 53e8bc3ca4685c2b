//! The originator's side of QUERY: collecting each target's value of an arg and sending all
//! of them, as `{"query": {node: {NAME: value}}}`, to every target.
//!
//! The set holds every target's value, so it is gossiped ([`Action::Spread`]) rather than
//! sent to each target: sending it directly costs the originator N sets of N values. Each
//! target says it has it ([`Queries::taken`]); those that have not said so after
//! [`GOSSIP_GRACE`] (gossip missed them) get it directly ([`Action::Send`]).
//!
//! An aggregate goes out once every target has sent its value, left (or expired), or reported
//! the QUERY job ended without one. Targets that left get no partial aggregate: it would reach
//! them when they are back, ahead of the larger one their own late value brings about (gossip
//! may still carry one to them; a node takes a set only when it holds its own value). A value
//! that comes after the aggregate (a target back from a partition) is added, and after
//! [`LATE_VALUES_WAIT`] for others the larger aggregate goes to every target (while targets
//! written off have yet to send theirs, up to [`WRITTEN_OFF_WAIT`]: a partition's far side
//! comes back together, its values some seconds apart, and should share one set); a target back
//! whose value had come before it left gets the aggregate it missed. A collection is kept
//! until the node says every target has reported the job for real ([`Queries::over`]) and
//! then until the values of the targets whose QUERY succeeded are in and what they bring
//! about has gone out (a `--no-wait` QUERY reports before its value arrives: a target back
//! from a partition sends both at once, and its result may come first), or for [`KEEP_FOR`].
//! Values that come once every target has reported and no collection is open (it went for
//! want of any value while its targets were written off, or the node restarted) open one
//! that waits for the values of the successes still alive ([`Queries::open_over`]); a value
//! sent again after its collection settled is no news ([`Queries::settled`]), and none opens
//! [`KEEP_FOR`] after the last target reported.
//!
//! Values outlive a restart of the originator: each new one is to be kept on disk
//! ([`Action::Keep`]) before the target is told it arrived (the target does not send it
//! again), and replayed with [`Queries::value`] after the restart; [`Action::Forget`] says
//! when they can go.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use jobs::Fingerprint;
use serde_json::Value;

use crate::NodeId;

/// How long values that come after an aggregate wait for more before the larger one goes out.
pub const LATE_VALUES_WAIT: Duration = Duration::from_millis(500);
/// How long, at most, the larger set waits after the first late value for the values of the
/// targets still written off. Each node of a partition's far side sends its value again when
/// it sees the originator back, and they see it back seconds apart; the QUERY job of each
/// finishes with the first set it takes.
pub const WRITTEN_OFF_WAIT: Duration = Duration::from_secs(5);
/// A collection is dropped after this long whatever happens.
pub const KEEP_FOR: Duration = Duration::from_secs(3600);
/// Targets that have not said they have a gossiped set this long after it went out get it
/// directly. Gossip reaches 99 % of ten thousand nodes within half a second (docs/scaling.md)
/// and a miss is repaired by gossip's own IHAVE/IWANT at its next heartbeat (0.7 s).
pub const GOSSIP_GRACE: Duration = Duration::from_secs(2);

/// One target of a QUERY job, as the job's record has it.
#[derive(Debug, Clone)]
pub struct Target {
    pub node: NodeId,
    /// Its name (the aggregate's key).
    pub name: String,
    /// It has reported the job for real: it sent its value to an earlier collection (one
    /// lost to a restart), or never will.
    pub reported: bool,
    /// It was written off as unreachable and not heard from since: its value is not waited
    /// for, as of a target seen gone (should it come back, it is news as then).
    pub written_off: bool,
}

/// A target of a QUERY job that every target has reported for real, as
/// [`Queries::open_over`] takes it.
#[derive(Debug, Clone)]
pub struct ReportedTarget {
    pub node: NodeId,
    /// Its name (the aggregate's key).
    pub name: String,
    /// Its QUERY succeeded: its value was sent (it may still be on its way).
    pub succeeded: bool,
    /// It is not known to be gone for good: not silent, nor left longer than the grace a
    /// restart gets (a member not heard since the node started counts as alive).
    pub alive: bool,
}

/// What the node does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Gossip `aggregate` (the QueryResult of `job_id`) to the mesh, for `to`; each of them
    /// says when it has it ([`Queries::taken`]), and the rest get it directly after
    /// [`GOSSIP_GRACE`]. If it cannot be gossiped, say so with [`Queries::not_gossiped`].
    Spread {
        job_id: String,
        to: Vec<NodeId>,
        aggregate: Value,
    },
    /// Send `aggregate` (the QueryResult of `job_id`) to each of `to`.
    Send {
        job_id: String,
        to: Vec<NodeId>,
        aggregate: Value,
    },
    /// Keep `node`'s value on disk before telling it the value arrived; replay it with
    /// [`Queries::value`] after a restart.
    Keep {
        job_id: String,
        node: NodeId,
        name: String,
        value: Value,
    },
    /// The values kept for `job_id` (from any of `targets`) are no longer needed.
    Forget {
        job_id: String,
        targets: Vec<NodeId>,
    },
}

struct Collection {
    /// The arg asked for: the job's, or (when the node could not say) the first value's.
    name: Option<String>,
    targets: Vec<NodeId>,
    names: HashMap<NodeId, String>,
    /// Targets whose value (or word that none comes) is still awaited.
    expected: HashSet<NodeId>,
    /// Targets that left or expired, until they are back.
    gone: HashSet<NodeId>,
    /// Targets whose QUERY job ended without a value (it failed, never ran, or the target was
    /// written off), until a value of theirs comes: no job there waits for the set.
    without_value: HashSet<NodeId>,
    /// Targets that had reported the job when the collection opened (its job there is over).
    reported: HashSet<NodeId>,
    values: BTreeMap<String, Value>,
    /// An aggregate went out (gossiped or sent).
    sent: bool,
    /// Targets that have not said they have the last gossiped set, and when the rest get it
    /// directly.
    unconfirmed: HashSet<NodeId>,
    confirm_by: Option<Instant>,
    /// How many values the last gossiped set holds.
    spread_values: usize,
    /// When the values that came after the aggregate go out, and the latest they go while
    /// targets are still `written_off`.
    respread_at: Option<Instant>,
    respread_by: Option<Instant>,
    /// Targets written off (unreachable) whose value has not come and that have not reported
    /// the job for real since: the larger set waits for them a while ([`WRITTEN_OFF_WAIT`]).
    written_off: HashSet<NodeId>,
    /// Every target has reported the job for real: the names of those whose QUERY succeeded
    /// (each sent its value, perhaps still on its way). The collection goes once those are in
    /// and nothing is left to send.
    closing: Option<Vec<String>>,
    since: Instant,
}

/// Every QUERY job this node collects values for.
#[derive(Default)]
pub struct Queries {
    collections: HashMap<String, Collection>,
    /// Jobs whose collection went once settled ([`Queries::over`]), and when: a value of
    /// theirs sent again (its answer was lost) is no news. Each goes after [`KEEP_FOR`] (at
    /// a tick), so this holds at most the jobs settled within the last hour.
    settled: HashMap<String, Instant>,
}

impl Queries {
    /// No collection open (what [`Queries::settled`] remembers needs no tick soon).
    pub fn is_empty(&self) -> bool {
        self.collections.is_empty()
    }

    /// Whether the collection of `job_id` went within [`KEEP_FOR`] once every value it
    /// waited for was in and its set had gone out: a value of it now is one sent again.
    pub fn settled(&self, job_id: &str) -> bool {
        self.settled.contains_key(job_id)
    }

    /// Whether values of `job_id` are being collected (else [`Queries::open`] it first).
    pub fn is_open(&self, job_id: &str) -> bool {
        self.collections.contains_key(job_id)
    }

    /// Starts collecting values of the arg `name` (when known) for `job_id`, expecting every
    /// target that has not reported it; a collection goes [`KEEP_FOR`] after `since`.
    pub fn open(
        &mut self,
        job_id: &str,
        name: Option<String>,
        targets: Vec<Target>,
        since: Instant,
    ) {
        if self.is_open(job_id) {
            return;
        }
        let written_off: HashSet<NodeId> = targets
            .iter()
            .filter(|t| t.written_off && !t.reported)
            .map(|t| t.node.clone())
            .collect();
        let collection = Collection {
            name,
            expected: targets
                .iter()
                .filter(|t| !t.reported && !t.written_off)
                .map(|t| t.node.clone())
                .collect(),
            names: targets
                .iter()
                .map(|t| (t.node.clone(), t.name.clone()))
                .collect(),
            reported: targets
                .iter()
                .filter(|t| t.reported)
                .map(|t| t.node.clone())
                .collect(),
            gone: written_off.clone(),
            without_value: written_off.clone(),
            written_off,
            targets: targets.into_iter().map(|t| t.node).collect(),
            values: BTreeMap::new(),
            sent: false,
            unconfirmed: HashSet::new(),
            confirm_by: None,
            spread_values: 0,
            respread_at: None,
            respread_by: None,
            closing: None,
            since,
        };
        self.collections.insert(job_id.to_string(), collection);
    }

    /// Opens the collection of `job_id` when every target has reported it for real and no
    /// collection holds its values: those of the targets whose QUERY succeeded are still to
    /// come. A `--no-wait` result overtook its value, the collection went for want of any
    /// value while its targets were written off, or this node restarted. Those values make the
    /// set, and the collection goes once they are in and it has gone out. Targets not `alive`
    /// are not waited for (as if they had gone since): the others get the set without them,
    /// and a value of theirs that comes later brings about a larger one.
    ///
    /// Nothing opens for a job whose collection already settled (a value sent again is no
    /// news), nor for one every target reported [`KEEP_FOR`] or more ago (`over_for`): a
    /// collection lives that long from then, so a restart does not give it another hour.
    pub fn open_over(
        &mut self,
        job_id: &str,
        name: Option<String>,
        targets: Vec<ReportedTarget>,
        over_for: Duration,
        now: Instant,
    ) -> Vec<Action> {
        if self.settled(job_id) || over_for >= KEEP_FOR {
            return vec![];
        }
        let succeeded: Vec<String> = targets
            .iter()
            .filter(|t| t.succeeded)
            .map(|t| t.name.clone())
            .collect();
        let opening = !self.is_open(job_id);
        let not_alive: Vec<NodeId> = targets
            .iter()
            .filter(|t| !t.alive)
            .map(|t| t.node.clone())
            .collect();
        let targets = targets
            .into_iter()
            .map(|t| Target {
                reported: !t.succeeded,
                node: t.node,
                name: t.name,
                written_off: false,
            })
            .collect();
        self.open(
            job_id,
            name,
            targets,
            now.checked_sub(over_for).unwrap_or(now),
        );
        if opening && let Some(c) = self.collections.get_mut(job_id) {
            for node in not_alive {
                c.expected.remove(&node);
                c.gone.insert(node);
            }
        }
        self.over(job_id, succeeded, now)
    }

    /// The names of the targets whose value (or word that none comes) the set of `job_id`
    /// still waits for, sorted; `None` if it is not collected here.
    pub fn awaited(&self, job_id: &str) -> Option<Vec<String>> {
        let c = self.collections.get(job_id)?;
        let mut names: Vec<String> = c
            .expected
            .iter()
            .map(|n| c.names.get(n).cloned().unwrap_or_else(|| n.0.clone()))
            .collect();
        names.sort();
        Some(names)
    }

    /// The arg the QUERY `job_id` collects, if known.
    pub fn arg(&self, job_id: &str) -> Option<&str> {
        self.collections.get(job_id)?.name.as_deref()
    }

    /// `node`'s value of `name` for `job_id`: ignored unless the job is open, `node` one of
    /// its targets and not every target had reported the job when it opened; refused (with
    /// the reason, for the sender) when `name` is not the arg collected (the job's, else the
    /// first value's); a target's first value counts, and is to be kept ([`Action::Keep`]).
    pub fn value(
        &mut self,
        job_id: &str,
        node: &NodeId,
        name: String,
        value: Value,
        now: Instant,
    ) -> Result<Vec<Action>, String> {
        let Some(c) = self.collections.get_mut(job_id) else {
            return Ok(vec![]);
        };
        let Some(node_name) = c.names.get(node).cloned() else {
            return Ok(vec![]);
        };
        if let Some(arg) = c.name.as_ref()
            && *arg != name
        {
            return Err(format!(
                "QUERY job {job_id} collects the arg '{arg}', not '{name}'"
            ));
        }
        if c.targets.iter().all(|t| c.reported.contains(t)) {
            // Every target had reported the job when the collection opened: the value is late
            // or sent twice, no job waits for a set, and a set of it alone would go to all.
            return Ok(vec![]);
        }
        let new = !c.values.contains_key(&node_name);
        let mut actions = Vec::new();
        if new {
            c.values.insert(node_name, value.clone());
            actions.push(Action::Keep {
                job_id: job_id.to_string(),
                node: node.clone(),
                name: name.clone(),
                value,
            });
        }
        c.name.get_or_insert(name);
        c.expected.remove(node);
        c.gone.remove(node);
        // Back from a write-off with its value: its job waits for the set.
        c.without_value.remove(node);
        c.written_off.remove(node);
        if c.sent {
            if new && c.respread_at.is_none() {
                c.respread_at = Some(now + LATE_VALUES_WAIT);
                c.respread_by = Some(now + WRITTEN_OFF_WAIT);
            }
            return Ok(actions);
        }
        actions.extend(self.spread_if_complete(job_id, now));
        Ok(actions)
    }

    /// `node` has the gossiped set of `job_id` with `values` values: it needs no direct copy
    /// of it (a copy of an older, smaller set does not count).
    pub fn taken(&mut self, job_id: &str, node: &NodeId, values: usize) {
        if let Some(c) = self.collections.get_mut(job_id)
            && values >= c.spread_values
        {
            c.unconfirmed.remove(node);
        }
    }

    /// The set of `job_id` was gossiped in `parts` parts ([`set_parts`]): its targets get as
    /// many graces as there are parts to say they have it (each part travels as a gossiped
    /// set of its own would), from `now`.
    pub fn gossiped_in_parts(&mut self, job_id: &str, parts: usize, now: Instant) {
        if let Some(c) = self.collections.get_mut(job_id)
            && c.confirm_by.is_some()
        {
            let parts = u32::try_from(parts.max(1)).unwrap_or(u32::MAX);
            c.confirm_by = Some(now + GOSSIP_GRACE.saturating_mul(parts));
        }
    }

    /// The set of `job_id` cannot be gossiped (whole or in parts): every target that has not
    /// said it has it
    /// gets it directly now. (A publish that fails otherwise is left to the grace.)
    pub fn not_gossiped(&mut self, job_id: &str) -> Vec<Action> {
        match self.collections.get_mut(job_id) {
            Some(c) => send_unconfirmed(job_id, c),
            None => vec![],
        }
    }

    /// `node`'s QUERY job of `job_id` ended without a value (failed, or never ran after its
    /// parent failed there): nobody waits for one.
    pub fn ended_without_value(
        &mut self,
        job_id: &str,
        node: &NodeId,
        now: Instant,
    ) -> Vec<Action> {
        if let Some(c) = self.collections.get_mut(job_id) {
            c.written_off.remove(node);
        }
        self.without_value(job_id, node, now)
    }

    /// `node`'s QUERY job of `job_id` was written off (the node stopped answering): no value
    /// is waited for now, but one may come when it is back, and a larger set waits for it a
    /// while ([`WRITTEN_OFF_WAIT`]).
    pub fn written_off(&mut self, job_id: &str, node: &NodeId, now: Instant) -> Vec<Action> {
        if let Some(c) = self.collections.get_mut(job_id)
            && !c.names.get(node).is_some_and(|n| c.values.contains_key(n))
        {
            c.written_off.insert(node.clone());
        }
        self.without_value(job_id, node, now)
    }

    fn without_value(&mut self, job_id: &str, node: &NodeId, now: Instant) -> Vec<Action> {
        match self.collections.get_mut(job_id) {
            Some(c) => {
                c.expected.remove(node);
                c.without_value.insert(node.clone());
                c.unconfirmed.remove(node);
                self.spread_if_complete(job_id, now)
            }
            None => vec![],
        }
    }

    /// `node` left or expired (was written off): its value is not waited for, and it gets no
    /// aggregate until it is back. (The write-off of its QUERY job, if it had not reported it,
    /// comes with [`Queries::written_off`].)
    pub fn node_gone(&mut self, node: &NodeId, now: Instant) -> Vec<Action> {
        let jobs: Vec<String> = self
            .collections
            .iter_mut()
            .filter(|(_, c)| c.names.contains_key(node))
            .map(|(job, c)| {
                c.gone.insert(node.clone());
                c.expected.remove(node);
                c.unconfirmed.remove(node);
                job.clone()
            })
            .collect();
        jobs.iter()
            .flat_map(|job| self.spread_if_complete(job, now))
            .collect()
    }

    /// `node` is back. If its value had come before it left, it gets the aggregate it missed;
    /// otherwise its value is on its way and brings about a larger one for everyone.
    pub fn node_back(&mut self, node: &NodeId) -> Vec<Action> {
        let mut actions = Vec::new();
        for (job, c) in &mut self.collections {
            let had_value = c.names.get(node).is_some_and(|n| c.values.contains_key(n));
            if c.gone.remove(node) && c.sent && had_value {
                actions.extend(aggregate(job, c, vec![node.clone()]));
            }
        }
        actions
    }

    /// Sends the larger aggregates that are due and the direct copies of gossiped sets whose
    /// grace is over; forgets collections older than [`KEEP_FOR`].
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        self.settled
            .retain(|_, at| now.saturating_duration_since(*at) < KEEP_FOR);
        let old: Vec<String> = self
            .collections
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.since) >= KEEP_FOR)
            .map(|(job, _)| job.clone())
            .collect();
        let mut actions: Vec<Action> = old.iter().flat_map(|job| self.forget(job)).collect();
        for (job, c) in &mut self.collections {
            if c.confirm_by.is_some_and(|at| at <= now) {
                actions.extend(send_unconfirmed(job, c));
            }
        }
        let due: Vec<String> = self
            .collections
            .iter_mut()
            .filter(|(_, c)| {
                c.respread_at.is_some_and(|at| at <= now)
                    && (c.written_off.is_empty() || c.respread_by.is_some_and(|by| by <= now))
            })
            .map(|(job, c)| {
                c.respread_at = None;
                c.respread_by = None;
                c.sent = false;
                job.clone()
            })
            .collect();
        actions.extend(due.iter().flat_map(|job| self.spread_if_complete(job, now)));
        let closing: Vec<String> = self
            .collections
            .iter()
            .filter(|(_, c)| c.closing.is_some())
            .map(|(job, _)| job.clone())
            .collect();
        actions.extend(
            closing
                .iter()
                .flat_map(|job| self.forget_if_settled(job, now)),
        );
        actions
    }

    /// Forgets the collections of the jobs `keep` does not want (their records were purged).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.collections.retain(|job, _| keep(job));
    }

    /// Every target has reported `job_id` for real, those named `succeeded` with a success:
    /// its values are no longer needed once each of those is in and what they bring about
    /// has gone out (at once, if so already).
    /// (None open: values that come later open one, see [`Queries::open_over`].)
    pub fn over(&mut self, job_id: &str, succeeded: Vec<String>, now: Instant) -> Vec<Action> {
        match self.collections.get_mut(job_id) {
            Some(c) => c.closing = Some(succeeded),
            None => return vec![],
        }
        self.forget_if_settled(job_id, now)
    }

    /// Forgets `job_id` if it is closing and settled (see [`Queries::over`]).
    fn forget_if_settled(&mut self, job_id: &str, now: Instant) -> Vec<Action> {
        let settled = self.collections.get(job_id).is_some_and(|c| {
            // (Opened once every target had reported: it takes no value at all.)
            let takes_none = c.targets.iter().all(|t| c.reported.contains(t));
            c.closing.as_ref().is_some_and(|succeeded| {
                takes_none
                    || c.respread_at.is_none()
                        && c.unconfirmed.is_empty()
                        && succeeded.iter().all(|name| c.values.contains_key(name))
            })
        });
        if !settled {
            return vec![];
        }
        self.settled.insert(job_id.to_string(), now);
        self.forget(job_id)
    }

    /// Drops the collection of `job_id`: its values kept on disk can go.
    pub fn forget(&mut self, job_id: &str) -> Vec<Action> {
        match self.collections.remove(job_id) {
            Some(c) if !c.values.is_empty() => {
                let targets = c
                    .targets
                    .into_iter()
                    .filter(|t| c.names.get(t).is_some_and(|n| c.values.contains_key(n)))
                    .collect();
                vec![Action::Forget {
                    job_id: job_id.to_string(),
                    targets,
                }]
            }
            _ => vec![],
        }
    }

    /// Once nothing is awaited, every target not gone gets what was collected: gossiped when
    /// more than one does.
    fn spread_if_complete(&mut self, job_id: &str, now: Instant) -> Vec<Action> {
        let Some(c) = self.collections.get_mut(job_id) else {
            return vec![];
        };
        if !c.expected.is_empty() || c.sent {
            return vec![];
        }
        // No value at all: no target's job waits for an aggregate.
        if c.values.is_empty() {
            self.collections.remove(job_id);
            return vec![];
        }
        c.sent = true;
        let to: Vec<NodeId> = c
            .targets
            .iter()
            .filter(|t| !c.gone.contains(*t))
            .cloned()
            .collect();
        // Word of an earlier set is moot now.
        c.unconfirmed.clear();
        c.confirm_by = None;
        if to.len() < 2 {
            return aggregate(job_id, c, to).into_iter().collect();
        }
        let Some(aggregate) = aggregate_of(c) else {
            return vec![];
        };
        // Targets whose job there waits for the set say they have it.
        c.unconfirmed = to
            .iter()
            .filter(|t| !c.without_value.contains(*t) && !c.reported.contains(*t))
            .cloned()
            .collect();
        c.confirm_by = Some(now + GOSSIP_GRACE);
        c.spread_values = c.values.len();
        vec![Action::Spread {
            job_id: job_id.to_string(),
            to,
            aggregate,
        }]
    }
}

/// The last gossiped set of `c`, directly to every target that has not said it has it.
fn send_unconfirmed(job_id: &str, c: &mut Collection) -> Vec<Action> {
    c.confirm_by = None;
    let mut to: Vec<NodeId> = c.unconfirmed.drain().collect();
    if to.is_empty() {
        return vec![];
    }
    to.sort();
    aggregate(job_id, c, to).into_iter().collect()
}

/// The aggregate of what `c` collected, sent directly to `to`.
fn aggregate(job_id: &str, c: &Collection, to: Vec<NodeId>) -> Option<Action> {
    Some(Action::Send {
        job_id: job_id.to_string(),
        to,
        aggregate: aggregate_of(c)?,
    })
}

/// `{"query": {node: {NAME: value}}}` of what `c` collected (none before the arg is known).
fn aggregate_of(c: &Collection) -> Option<Value> {
    let name = c.name.as_ref()?;
    let per_node: serde_json::Map<String, Value> = c
        .values
        .iter()
        .map(|(node, value)| (node.clone(), serde_json::json!({ name.clone(): value })))
        .collect();
    Some(serde_json::json!({ "query": per_node }))
}

/// How many values a set holds (what [`Queries::taken`] is told).
pub fn values_in(aggregate: &Value) -> usize {
    aggregate
        .get("query")
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len)
}

/// Room in a message of part of a set for all but its values (the wire envelope, the
/// variant and field names, the job id, the count, the digest, the originator's start, the
/// part's map header), with a wide margin: see [`set_parts`].
pub const SET_PART_ROOM: usize = 4 * 1024;

/// The set `aggregate` in parts, each to gossip in a message of at most `message_bytes`
/// ([`SET_PART_ROOM`] of them for all but its values), in the order of their nodes' names
/// (one part if it fits in one): for a set too large for one gossip message. None if it is
/// not a set of values, or a single value is too large for a part (such a set goes to each
/// target directly).
pub fn set_parts(aggregate: &Value, message_bytes: usize) -> Option<Vec<Value>> {
    let part_bytes = message_bytes.checked_sub(SET_PART_ROOM)?;
    let per_node = aggregate.get("query")?.as_object()?;
    let mut parts = Vec::new();
    let mut part = serde_json::Map::new();
    let mut bytes = 0;
    for (node, value) in per_node {
        let size = crate::message::encoded_len(node) + crate::message::encoded_len(value);
        if size > part_bytes {
            return None;
        }
        if bytes + size > part_bytes {
            parts.push(serde_json::json!({ "query": std::mem::take(&mut part) }));
            bytes = 0;
        }
        part.insert(node.clone(), value.clone());
        bytes += size;
    }
    if !part.is_empty() {
        parts.push(serde_json::json!({ "query": part }));
    }
    (!parts.is_empty()).then_some(parts)
}

/// How long a set being put together from parts waits for its next part before what came
/// is dropped (the originator sends the set directly to a target that has not said it has
/// it, 2 s a part after it gossiped the parts).
pub const PARTS_WAIT: Duration = Duration::from_secs(60);

/// Most bytes of values a target holds while it puts one set together (a set that large
/// could not be sent directly either). Only the originator of the QUERY job's run sends
/// parts a target takes, one set per QUERY job that ran there: a member that submits runs
/// can make its targets do anything their jobs can, so no cap over all jobs is kept.
pub const MAX_SET_IN_PARTS: usize = 8 * 1024 * 1024;

/// What the set a gossiped part belongs to is called: blake3 of its CBOR (the map's keys in
/// order, so a set put together from its parts has the digest of the whole).
pub fn set_digest(aggregate: &Value) -> Fingerprint {
    Fingerprint::of(aggregate)
}

/// What a part of a set brought about ([`SetInParts::part`]).
#[derive(Debug, PartialEq)]
pub enum Part {
    /// The set is whole: take it.
    Set(Value),
    /// A part of a set this node has already (whole, or put together), from a start of the
    /// originator's daemon not yet told so (one that restarted and sends it again, or parts
    /// slower than a direct copy): say it has it (this many values).
    Had(usize),
    /// Nothing yet (or nothing at all: a part of a smaller set, one seen, one that is not a
    /// part of a set).
    Pending,
}

/// Target side: one QUERY job's sets gossiped in parts ([`set_parts`]), put together. Each
/// part names its set (its [`set_digest`]) and how many values the set holds; the set is
/// taken once that many are in and they make up that digest. The parts of a later, larger set
/// replace those of a set not yet whole; what came waits [`PARTS_WAIT`] for more at most.
#[derive(Debug, Default)]
pub struct SetInParts {
    /// The set being put together, how many values it holds, what came of it and how large.
    digest: Option<Fingerprint>,
    whole: usize,
    values: serde_json::Map<String, Value>,
    bytes: usize,
    last_part: Option<Instant>,
    /// The last set taken (whole, or put together), how many values it held, and which
    /// start of the originator it was last said taken to.
    taken_digest: Option<Fingerprint>,
    taken: usize,
    said_to_start: u64,
}

impl SetInParts {
    /// A part of the set `digest` of `whole` values, gossiped by the originator's daemon of
    /// start `start`, at `now`.
    pub fn part(
        &mut self,
        part: Value,
        whole: usize,
        digest: Fingerprint,
        start: u64,
        now: Instant,
    ) -> Part {
        if self.taken_digest == Some(digest) {
            if self.said_to_start == start {
                return Part::Pending;
            }
            self.said_to_start = start;
            return Part::Had(self.taken);
        }
        if whole <= self.taken {
            return Part::Pending;
        }
        let Value::Object(mut part) = part else {
            return Part::Pending;
        };
        let Some(Value::Object(per_node)) = part.remove("query") else {
            return Part::Pending;
        };
        self.expire(now);
        if self.digest != Some(digest) {
            if self.digest.is_some() && whole < self.whole {
                return Part::Pending;
            }
            self.drop_parts();
            self.digest = Some(digest);
            self.whole = whole;
        }
        self.last_part = Some(now);
        for (node, value) in per_node {
            match self.values.get(&node) {
                Some(had) if *had == value => {}
                // A node's value is one in a set: parts that disagree are not of one set.
                Some(_) => {
                    self.drop_parts();
                    return Part::Pending;
                }
                None => {
                    self.bytes +=
                        crate::message::encoded_len(&node) + crate::message::encoded_len(&value);
                    self.values.insert(node, value);
                }
            }
        }
        if self.bytes > MAX_SET_IN_PARTS {
            self.drop_parts();
            return Part::Pending;
        }
        if self.values.len() < self.whole {
            return Part::Pending;
        }
        let set = serde_json::json!({ "query": std::mem::take(&mut self.values) });
        let whole = self.whole;
        self.drop_parts();
        if set_digest(&set) != digest {
            return Part::Pending;
        }
        self.taken_digest = Some(digest);
        self.taken = whole;
        self.said_to_start = start;
        Part::Set(set)
    }

    /// The set `aggregate` reached this node (whole, or put together): its parts are no news,
    /// nor are those of smaller sets; a set being put together that it holds goes.
    pub fn taken_whole(&mut self, aggregate: &Value) {
        let values = values_in(aggregate);
        if values < self.taken {
            return;
        }
        self.taken_digest = Some(set_digest(aggregate));
        self.taken = values;
        if self.whole <= values {
            self.drop_parts();
        }
    }

    /// Drops what came of a set whose last part came [`PARTS_WAIT`] ago or more.
    pub fn expire(&mut self, now: Instant) {
        if self
            .last_part
            .is_some_and(|at| now.saturating_duration_since(at) >= PARTS_WAIT)
        {
            self.drop_parts();
        }
    }

    fn drop_parts(&mut self) {
        self.digest = None;
        self.whole = 0;
        self.values = serde_json::Map::new();
        self.bytes = 0;
        self.last_part = None;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn n(s: &str) -> NodeId {
        NodeId(s.into())
    }

    fn targets(names: &[&str]) -> Vec<Target> {
        names
            .iter()
            .map(|s| Target {
                node: n(s),
                name: s.to_string(),
                reported: false,
                written_off: false,
            })
            .collect()
    }

    fn sent(actions: &[Action]) -> Vec<(Vec<NodeId>, Value)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, aggregate, .. } | Action::Spread { to, aggregate, .. } => {
                    Some((to.clone(), aggregate["query"].clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn kept(actions: &[Action]) -> Vec<(NodeId, Value)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Keep { node, value, .. } => Some((node.clone(), value.clone())),
                _ => None,
            })
            .collect()
    }

    /// What a QUERY timing out on the submitter names: the targets whose values are still
    /// awaited (not those that sent one, ended without one, or left).
    #[test]
    fn the_targets_still_awaited_are_named() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        assert_eq!(q.awaited("j"), None);
        q.open("j", Some("x".into()), targets(&["d", "c", "b", "a"]), t0);
        assert_eq!(q.awaited("j").unwrap(), ["a", "b", "c", "d"]);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        q.ended_without_value("j", &n("b"), t0);
        q.node_gone(&n("c"), t0);
        assert_eq!(q.awaited("j").unwrap(), ["d"]);
        q.value("j", &n("d"), "x".into(), json!(4), t0).unwrap();
        assert_eq!(q.awaited("j").unwrap(), Vec::<String>::new());
    }

    /// A collection opened again (after a restart of the originator, or once a value came
    /// after it was over) does not wait for the targets written off before: the set goes out
    /// with the others' values, and one that comes back is news as then.
    #[test]
    fn a_collection_opened_again_does_not_wait_for_targets_written_off() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        let mut ts = targets(&["a", "b", "c"]);
        ts[2].written_off = true;
        q.open("j", Some("x".into()), ts, t0);
        assert_eq!(q.awaited("j").unwrap(), ["a", "b"]);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        let b = q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        assert_eq!(
            sent(&b),
            vec![(vec![n("a"), n("b")], json!({"a": {"x": 1}, "b": {"x": 2}}))]
        );
        // Back after all, with its value: a larger set for everyone.
        q.node_back(&n("c"));
        q.value("j", &n("c"), "x".into(), json!(3), t0).unwrap();
        assert_eq!(q.awaited("j").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn values_are_kept_once_and_a_restart_replays_them() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        q.open("j", None, targets(&["a", "b", "c"]), t0);
        let a = q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        assert_eq!(kept(&a), vec![(n("a"), json!(1))]);
        assert!(
            q.value("j", &n("a"), "x".into(), json!(1), t0)
                .unwrap()
                .is_empty()
        );
        // A value of another arg is not this QUERY's.
        assert_eq!(
            q.value("j", &n("b"), "y".into(), json!(5), t0),
            Err("QUERY job j collects the arg 'x', not 'y'".into())
        );
        // The originator restarts: a fresh collection, the kept value replayed, then the rest.
        let mut q = Queries::default();
        q.open("j", None, targets(&["a", "b", "c"]), t0);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        let a = q.value("j", &n("c"), "x".into(), json!(3), t0).unwrap();
        assert_eq!(
            sent(&a),
            vec![(
                vec![n("a"), n("b"), n("c")],
                json!({"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}})
            )]
        );
        let forget = Action::Forget {
            job_id: "j".into(),
            targets: vec![n("a"), n("b"), n("c")],
        };
        // Every target reported: the collection goes once each has taken the set.
        assert!(
            q.over("j", vec!["a".into(), "b".into(), "c".into()], t0)
                .is_empty()
        );
        for node in ["a", "b", "c"] {
            q.taken("j", &n(node), 3);
        }
        assert_eq!(q.tick(t0), vec![forget]);
        assert!(q.is_empty());
    }

    /// A `--no-wait` QUERY of a target back from a partition: its result came before its
    /// value, after every other target had reported. The collection waits for that value and
    /// spreads the larger set it makes before it goes.
    #[test]
    fn a_value_overtaken_by_its_result_still_makes_the_larger_set() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        q.open("j", Some("x".into()), targets(&["a", "b", "c"]), t0);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        let first = q.node_gone(&n("c"), t0);
        assert_eq!(
            sent(&first),
            vec![(vec![n("a"), n("b")], json!({"a": {"x": 1}, "b": {"x": 2}}))]
        );
        q.taken("j", &n("a"), 2);
        q.taken("j", &n("b"), 2);
        q.node_back(&n("c"));
        // c's success comes first: every target has reported, c's value is still to come.
        assert!(
            q.over("j", vec!["a".into(), "b".into(), "c".into()], t0)
                .is_empty()
        );
        assert!(q.tick(t0 + GOSSIP_GRACE).is_empty());
        assert!(q.is_open("j"));
        let t1 = t0 + GOSSIP_GRACE;
        q.value("j", &n("c"), "x".into(), json!(3), t1).unwrap();
        let larger = q.tick(t1 + LATE_VALUES_WAIT);
        assert_eq!(
            sent(&larger),
            vec![(
                vec![n("a"), n("b"), n("c")],
                json!({"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}})
            )]
        );
        // Gone once every target has it (directly, for those gossip missed).
        let after = q.tick(t1 + LATE_VALUES_WAIT + GOSSIP_GRACE);
        assert!(
            after.iter().any(|a| matches!(a, Action::Forget { .. })),
            "{after:?}"
        );
        assert!(!q.is_open("j"));
    }

    /// Who gets the set directly, in order.
    fn direct(actions: &[Action]) -> Vec<Vec<NodeId>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, .. } => Some(to.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_set_is_gossiped_and_sent_directly_only_to_targets_it_missed() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        q.open("j", Some("x".into()), targets(&["a", "b", "c", "d"]), t0);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        q.value("j", &n("c"), "x".into(), json!(3), t0).unwrap();
        let a = q.ended_without_value("j", &n("d"), t0);
        let Some(Action::Spread { to, aggregate, .. }) = a.first() else {
            panic!("not gossiped: {a:?}");
        };
        assert_eq!(to, &vec![n("a"), n("b"), n("c"), n("d")]);
        assert_eq!(values_in(aggregate), 3);
        assert!(direct(&a).is_empty());
        q.taken("j", &n("a"), 3);
        // A copy of a smaller set does not count; not a target: ignored.
        q.taken("j", &n("b"), 2);
        q.taken("j", &n("z"), 3);
        assert!(q.tick(t0 + GOSSIP_GRACE / 2).is_empty());
        // b and c did not say they have it; d, whose job ended without a value, is not
        // waited on.
        let a = q.tick(t0 + GOSSIP_GRACE);
        assert_eq!(direct(&a), vec![vec![n("b"), n("c")]]);
        assert!(q.tick(t0 + GOSSIP_GRACE * 3).is_empty());
    }

    #[test]
    fn a_set_that_cannot_be_gossiped_goes_directly_at_once() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        q.open("j", Some("x".into()), targets(&["a", "b", "c"]), t0);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        let a = q.value("j", &n("c"), "x".into(), json!(3), t0).unwrap();
        assert!(matches!(a.last(), Some(Action::Spread { .. })));
        q.taken("j", &n("c"), 3);
        let a = q.not_gossiped("j");
        assert_eq!(direct(&a), vec![vec![n("a"), n("b")]]);
        assert_eq!(
            sent(&a)[0].1,
            json!({"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}})
        );
        assert!(q.tick(t0 + GOSSIP_GRACE).is_empty());
    }

    #[test]
    fn a_larger_set_is_gossiped_again_and_waits_for_new_word() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        q.open("j", Some("x".into()), targets(&["a", "b", "c"]), t0);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        q.node_gone(&n("c"), t0);
        q.taken("j", &n("a"), 2);
        q.taken("j", &n("b"), 2);
        // c is back with its value: after the wait, everyone gets the larger set by gossip.
        let t1 = t0 + Duration::from_secs(1);
        assert!(
            q.value("j", &n("c"), "x".into(), json!(3), t1)
                .unwrap()
                .len()
                == 1
        );
        let a = q.tick(t1 + LATE_VALUES_WAIT);
        let Some(Action::Spread { to, aggregate, .. }) = a.first() else {
            panic!("not gossiped: {a:?}");
        };
        assert_eq!((to.len(), values_in(aggregate)), (3, 3));
        // Word of the smaller set does not count for the larger one.
        q.taken("j", &n("a"), 2);
        q.taken("j", &n("c"), 3);
        let a = q.tick(t1 + LATE_VALUES_WAIT + GOSSIP_GRACE);
        assert_eq!(direct(&a), vec![vec![n("a"), n("b")]]);
    }

    #[test]
    fn a_target_written_off_then_back_with_its_value_gets_the_set_it_misses() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        let mut t = targets(&["a", "b", "c", "d"]);
        // d had reported the job before a restart of the originator: nothing waits there.
        t[3].reported = true;
        q.open("j", Some("x".into()), t, t0);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        // c is written off: gone (the set goes to the others), and its job recorded as
        // ended without a value.
        let a = q.node_gone(&n("c"), t0);
        assert!(q.written_off("j", &n("c"), t0).is_empty());
        let Some(Action::Spread { to, .. }) = a.first() else {
            panic!("not gossiped: {a:?}");
        };
        assert_eq!(to, &vec![n("a"), n("b"), n("d")]);
        q.taken("j", &n("a"), 2);
        q.taken("j", &n("b"), 2);
        assert!(direct(&q.tick(t0 + GOSSIP_GRACE)).is_empty());
        // c is back with its value: the larger set is gossiped, and c, which gossip missed,
        // gets it directly.
        let t1 = t0 + Duration::from_secs(5);
        q.value("j", &n("c"), "x".into(), json!(3), t1).unwrap();
        let a = q.tick(t1 + LATE_VALUES_WAIT);
        assert!(matches!(a.first(), Some(Action::Spread { .. })), "{a:?}");
        q.taken("j", &n("a"), 3);
        q.taken("j", &n("b"), 3);
        let a = q.tick(t1 + LATE_VALUES_WAIT + GOSSIP_GRACE);
        assert_eq!(direct(&a), vec![vec![n("c")]]);
    }

    #[test]
    fn everyone_gets_every_value_once_all_came() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        q.open("j", None, targets(&["a", "b"]), t0);
        assert!(sent(&q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap()).is_empty());
        // Not a target: ignored.
        assert!(
            q.value("j", &n("z"), "y".into(), json!(9), t0)
                .unwrap()
                .is_empty()
        );
        let a = q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        assert_eq!(
            sent(&a),
            vec![(vec![n("a"), n("b")], json!({"a": {"x": 1}, "b": {"x": 2}}))]
        );
        // A value sent again changes nothing.
        assert!(
            q.value("j", &n("b"), "x".into(), json!(2), t0)
                .unwrap()
                .is_empty()
        );
        assert!(q.tick(t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn only_values_of_the_jobs_arg_count() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        q.open("j", Some("x".into()), targets(&["a", "b"]), t0);
        assert_eq!(q.arg("j"), Some("x"));
        // First, but of another arg: not taken, not kept.
        assert!(q.value("j", &n("a"), "y".into(), json!(0), t0).is_err());
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        let a = q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        assert_eq!(sent(&a)[0].1, json!({"a": {"x": 1}, "b": {"x": 2}}));
    }

    #[test]
    fn a_query_without_any_value_sends_nothing_and_goes() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        q.open("j", Some("x".into()), targets(&["a", "b"]), t0);
        assert!(q.ended_without_value("j", &n("a"), t0).is_empty());
        assert!(q.node_gone(&n("b"), t0).is_empty());
        assert!(q.is_empty());
    }

    #[test]
    fn a_target_without_a_value_does_not_hold_the_others() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        q.open("j", None, targets(&["a", "b"]), t0);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        let a = q.ended_without_value("j", &n("b"), t0);
        assert_eq!(
            sent(&a),
            vec![(vec![n("a"), n("b")], json!({"a": {"x": 1}}))]
        );
    }

    /// A QUERY job of `x` (`name`: as the node knows it) on a, b and c: a's value came, then
    /// b and c were cut off (and written off, if `written_off`). Also what was sent then: a's
    /// set, to a alone (asserted).
    fn cut_off(name: Option<&str>, written_off: bool, t0: Instant) -> Queries {
        let mut q = Queries::default();
        q.open("j", name.map(str::to_string), targets(&["a", "b", "c"]), t0);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        // a goes on with what it has; b and c get nothing yet.
        assert!(q.node_gone(&n("b"), t0).is_empty());
        let a = q.node_gone(&n("c"), t0);
        assert_eq!(sent(&a), vec![(vec![n("a")], json!({"a": {"x": 1}}))]);
        if written_off {
            for node in ["b", "c"] {
                assert!(q.written_off("j", &n(node), t0).is_empty());
            }
        }
        q
    }

    #[test]
    fn a_partition_gives_the_far_side_the_whole_set_and_no_partial_one() {
        let t0 = Instant::now();
        let mut q = cut_off(None, false, t0);
        // Back, without a value yet: nothing is sent to them.
        assert!(q.node_back(&n("b")).is_empty());
        let t1 = t0 + Duration::from_secs(30);
        assert!(sent(&q.value("j", &n("b"), "x".into(), json!(2), t1).unwrap()).is_empty());
        assert!(sent(&q.value("j", &n("c"), "x".into(), json!(3), t1).unwrap()).is_empty());
        // Within the wait nothing; then one larger aggregate for everyone.
        assert!(q.tick(t1 + LATE_VALUES_WAIT / 2).is_empty());
        let a = q.tick(t1 + LATE_VALUES_WAIT);
        assert_eq!(
            sent(&a),
            vec![(
                vec![n("a"), n("b"), n("c")],
                json!({"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}})
            )]
        );
    }

    /// The far side of a partition, written off, sees the originator again seconds apart and
    /// its values come as far apart: the larger set waits for all of them (the QUERY job of
    /// each finishes with the first set it takes).
    #[test]
    fn far_values_seconds_apart_make_one_larger_set() {
        let t0 = Instant::now();
        let mut q = cut_off(Some("x"), true, t0);
        let t1 = t0 + Duration::from_secs(30);
        assert!(q.node_back(&n("b")).is_empty());
        q.value("j", &n("b"), "x".into(), json!(2), t1).unwrap();
        // c is still written off: no set of a and b alone.
        assert!(q.tick(t1 + LATE_VALUES_WAIT).is_empty());
        let t2 = t1 + Duration::from_millis(800);
        assert!(q.node_back(&n("c")).is_empty());
        assert!(sent(&q.value("j", &n("c"), "x".into(), json!(3), t2).unwrap()).is_empty());
        let a = q.tick(t2);
        assert_eq!(
            sent(&a),
            vec![(
                vec![n("a"), n("b"), n("c")],
                json!({"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}})
            )]
        );
    }

    /// A target whose QUERY failed for real and that is written off later (for other jobs of
    /// the run) does not hold the larger set: no value of it will come.
    #[test]
    fn a_target_that_failed_for_real_then_went_holds_nothing() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        q.open("j", Some("x".into()), targets(&["a", "b", "c"]), t0);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        q.ended_without_value("j", &n("c"), t0);
        q.node_gone(&n("b"), t0);
        q.written_off("j", &n("b"), t0);
        q.taken("j", &n("a"), 1);
        q.node_gone(&n("c"), t0);
        let t1 = t0 + Duration::from_secs(30);
        q.node_back(&n("b"));
        q.value("j", &n("b"), "x".into(), json!(2), t1).unwrap();
        let a = q.tick(t1 + LATE_VALUES_WAIT);
        assert_eq!(
            sent(&a),
            vec![(vec![n("a"), n("b")], json!({"a": {"x": 1}, "b": {"x": 2}}))]
        );
    }

    /// A target written off that does not come back holds the larger set only a while; one
    /// that comes back and reports its QUERY failed holds it no longer.
    #[test]
    fn a_written_off_target_holds_the_larger_set_only_a_while() {
        for back_failed in [false, true] {
            let t0 = Instant::now();
            let mut q = cut_off(Some("x"), true, t0);
            let t1 = t0 + Duration::from_secs(30);
            q.node_back(&n("b"));
            q.value("j", &n("b"), "x".into(), json!(2), t1).unwrap();
            let expected = vec![(vec![n("a"), n("b")], json!({"a": {"x": 1}, "b": {"x": 2}}))];
            if back_failed {
                q.node_back(&n("c"));
                let a = q.ended_without_value("j", &n("c"), t1);
                assert!(a.is_empty(), "{a:?}");
                let a = q.tick(t1 + LATE_VALUES_WAIT);
                assert_eq!(sent(&a)[0].1, expected[0].1, "{a:?}");
            } else {
                assert!(q.tick(t1 + WRITTEN_OFF_WAIT / 2).is_empty());
                let a = q.tick(t1 + WRITTEN_OFF_WAIT);
                assert_eq!(sent(&a), expected);
            }
        }
    }

    #[test]
    fn a_target_back_whose_value_came_before_gets_what_it_missed() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        q.open("j", None, targets(&["a", "b"]), t0);
        q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        q.node_gone(&n("b"), t0);
        let a = q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        assert_eq!(sent(&a)[0].0, vec![n("a")]);
        let a = q.node_back(&n("b"));
        assert_eq!(
            sent(&a),
            vec![(vec![n("b")], json!({"a": {"x": 1}, "b": {"x": 2}}))]
        );
    }

    /// A value that comes after every target reported the job (late, or sent twice) is
    /// neither kept nor spread: no job waits for a set, and a set of that value alone would
    /// go to every target.
    #[test]
    fn a_value_after_every_target_reported_goes_nowhere() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        let mut t = targets(&["a", "b", "c"]);
        for target in &mut t {
            target.reported = true;
        }
        q.open("j", Some("x".into()), t, t0);
        let a = q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        assert!(a.is_empty(), "{a:?}");
        assert!(q.tick(t0 + LATE_VALUES_WAIT + GOSSIP_GRACE).is_empty());
        assert!(q.over("j", vec!["a".into()], t0).is_empty());
        assert!(q.is_empty());
    }

    #[test]
    fn reported_targets_are_not_awaited_and_old_collections_go() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        let mut t = targets(&["a", "b"]);
        t[1].reported = true;
        q.open("j", None, t, t0);
        let a = q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        assert_eq!(sent(&a)[0].0, vec![n("a"), n("b")]);
        q.open("k", None, targets(&["a"]), t0);
        let a = q.tick(t0 + KEEP_FOR);
        // Only `j` had values to forget, and only a's.
        assert_eq!(
            a,
            vec![Action::Forget {
                job_id: "j".into(),
                targets: vec![n("a")]
            }]
        );
        assert!(q.is_empty());
    }

    /// A `--no-wait` QUERY whose targets were all written off (the collection went, holding
    /// no value) and reported success after the mend, ahead of their values: the values open
    /// a collection that makes the set of them all, and it goes once every target has it. A
    /// value sent again after that is no news.
    #[test]
    fn values_after_every_target_reported_open_a_collection_that_waits_for_the_successes() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        let mut t = targets(&["a", "b", "c"]);
        for target in &mut t {
            target.written_off = true;
        }
        q.open("j", Some("x".into()), t, t0);
        for node in ["a", "b", "c"] {
            assert!(q.written_off("j", &n(node), t0).is_empty());
        }
        assert!(!q.is_open("j"));
        // Every result came back: a and b succeeded, c failed. No collection is open.
        assert!(q.over("j", vec!["a".into(), "b".into()], t0).is_empty());
        let opened = q.open_over(
            "j",
            Some("x".into()),
            reported(&["a", "b"], &["c"], &[]),
            Duration::ZERO,
            t0,
        );
        assert!(opened.is_empty(), "{opened:?}");
        assert_eq!(q.awaited("j").unwrap(), vec!["a", "b"]);
        let a = q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        assert!(sent(&a).is_empty(), "{a:?}");
        let b = q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        assert_eq!(
            sent(&b),
            vec![(
                vec![n("a"), n("b"), n("c")],
                json!({"a": {"x": 1}, "b": {"x": 2}})
            )]
        );
        // Only the successes say they have it (c's job there is over).
        q.taken("j", &n("a"), 2);
        assert!(q.is_open("j"));
        q.taken("j", &n("b"), 2);
        let gone = q.tick(t0);
        assert_eq!(
            gone,
            vec![Action::Forget {
                job_id: "j".into(),
                targets: vec![n("a"), n("b")]
            }]
        );
        assert!(q.settled("j") && q.is_empty());
        assert!(!q.settled("k"));
        // A value sent again opens nothing.
        let again = q.open_over(
            "j",
            Some("x".into()),
            reported(&["a", "b"], &["c"], &[]),
            Duration::ZERO,
            t0,
        );
        assert!(again.is_empty() && !q.is_open("j"), "{again:?}");
        // Remembered for an hour only.
        q.tick(t0 + KEEP_FOR);
        assert!(!q.settled("j"));
    }

    /// Targets of a job every target reported: `succeeded` and `failed` ones, of which those
    /// in `not_alive` are not members alive now.
    fn reported(succeeded: &[&str], failed: &[&str], not_alive: &[&str]) -> Vec<ReportedTarget> {
        let of = |names: &[&str], succeeded: bool| -> Vec<ReportedTarget> {
            names
                .iter()
                .map(|s| ReportedTarget {
                    node: n(s),
                    name: s.to_string(),
                    succeeded,
                    alive: !not_alive.contains(s),
                })
                .collect()
        };
        let mut all = of(succeeded, true);
        all.extend(of(failed, false));
        all
    }

    /// A success whose node is gone (for good, perhaps) does not hold the set back from the
    /// others; its value, should it come, brings about the larger set for everyone.
    #[test]
    fn a_collection_opened_over_a_job_does_not_wait_for_a_success_that_is_gone() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        let opened = q.open_over(
            "j",
            Some("x".into()),
            reported(&["a", "b", "c"], &[], &["c"]),
            Duration::ZERO,
            t0,
        );
        assert!(opened.is_empty(), "{opened:?}");
        assert_eq!(q.awaited("j").unwrap(), vec!["a", "b"]);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        let b = q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        assert_eq!(
            sent(&b),
            vec![(vec![n("a"), n("b")], json!({"a": {"x": 1}, "b": {"x": 2}}))]
        );
        q.taken("j", &n("a"), 2);
        q.taken("j", &n("b"), 2);
        // Still open: c's value may come.
        assert!(q.tick(t0).is_empty());
        assert!(q.is_open("j"));
        q.node_back(&n("c"));
        let c = q.value("j", &n("c"), "x".into(), json!(3), t0).unwrap();
        assert!(sent(&c).is_empty(), "{c:?}");
        let later = q.tick(t0 + LATE_VALUES_WAIT);
        assert_eq!(
            sent(&later),
            vec![(
                vec![n("a"), n("b"), n("c")],
                json!({"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}})
            )]
        );
    }

    /// A collection opened over a job lives [`KEEP_FOR`] from when its last target
    /// reported, not from when it opened: none opens past that.
    #[test]
    fn a_collection_opened_over_a_job_lives_an_hour_from_its_last_report() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        let targets = || reported(&["a", "b"], &[], &[]);
        let late = q.open_over("j", Some("x".into()), targets(), KEEP_FOR, t0);
        assert!(late.is_empty() && !q.is_open("j"), "{late:?}");
        let ten_min = Duration::from_secs(600);
        q.open_over("j", Some("x".into()), targets(), ten_min, t0);
        assert!(q.is_open("j"));
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        assert!(
            q.tick(t0 + KEEP_FOR - ten_min - Duration::from_secs(1))
                .is_empty()
        );
        let gone = q.tick(t0 + KEEP_FOR - ten_min);
        assert_eq!(
            gone,
            vec![Action::Forget {
                job_id: "j".into(),
                targets: vec![n("a")]
            }]
        );
        assert!(!q.is_open("j"));
    }

    /// Each node's value as a set holds it, `{"x": value}`.
    fn set_of(values: &[(&str, Value)]) -> Value {
        let per_node: serde_json::Map<String, Value> = values
            .iter()
            .map(|(node, v)| (node.to_string(), json!({ "x": v })))
            .collect();
        json!({ "query": per_node })
    }

    #[test]
    fn a_set_is_cut_into_parts_of_at_most_the_bytes_given_and_each_value_is_in_one() {
        let values: Vec<(String, Value)> = (0..50)
            .map(|i| (format!("node-{i:02}"), json!("v".repeat(100 + i))))
            .collect();
        let borrowed: Vec<(&str, Value)> = values
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        let set = set_of(&borrowed);
        let parts = set_parts(&set, SET_PART_ROOM + 1000).expect("each value fits in a part");
        assert!(parts.len() > 1, "{} parts", parts.len());
        let mut together = serde_json::Map::new();
        for part in &parts {
            let per_node = part["query"].as_object().unwrap();
            let bytes: usize = per_node
                .iter()
                .map(|(n, v)| crate::message::encoded_len(n) + crate::message::encoded_len(v))
                .sum();
            assert!(bytes <= 1000, "a part of {bytes} bytes");
            for (node, value) in per_node {
                assert!(together.insert(node.clone(), value.clone()).is_none());
            }
        }
        assert_eq!(json!({ "query": together }), set);
        // Each part, as gossiped, well within the message (the envelope adds some 10 bytes).
        for part in parts.iter().cloned() {
            let gossip = crate::Gossip::QuerySetPart {
                job_id: "0".repeat(crate::message::MAX_ID_LEN),
                part,
                values: u64::MAX,
                set: set_digest(&set),
                originator_start: u64::MAX,
            };
            let len = crate::message::encoded_len(&gossip);
            assert!(len + 512 <= SET_PART_ROOM + 1000, "{len} bytes");
        }
        // Whole, when it fits.
        assert_eq!(set_parts(&set, 1 << 20), Some(vec![set.clone()]));
        // A value larger than a part: not cut, nor a set of no values.
        let large = set_of(&[("a", json!("v".repeat(2000))), ("b", json!(1))]);
        assert_eq!(set_parts(&large, SET_PART_ROOM + 1000), None);
        assert_eq!(set_parts(&json!({ "query": {} }), 1 << 20), None);
        assert_eq!(set_parts(&json!([1]), 1 << 20), None);
        assert_eq!(set_parts(&set, 100), None, "no room for values");
    }

    #[test]
    fn parts_make_the_set_once_all_are_in_whatever_their_order() {
        let t0 = Instant::now();
        let small = set_of(&[("a", json!(1)), ("b", json!(2)), ("c", json!(3))]);
        let (digest, parts) = (
            set_digest(&small),
            set_parts(&small, SET_PART_ROOM + 6).unwrap(),
        );
        assert_eq!(parts.len(), 3, "{parts:?}");
        let mut set = SetInParts::default();
        assert_eq!(set.part(parts[2].clone(), 3, digest, 1, t0), Part::Pending);
        // The same part again (gossip from two peers) is no news.
        assert_eq!(set.part(parts[2].clone(), 3, digest, 1, t0), Part::Pending);
        assert_eq!(set.part(parts[0].clone(), 3, digest, 1, t0), Part::Pending);
        assert_eq!(
            set.part(parts[1].clone(), 3, digest, 1, t0),
            Part::Set(small.clone())
        );
        // A part of it again from the same start of the originator: nothing.
        assert_eq!(set.part(parts[0].clone(), 3, digest, 1, t0), Part::Pending);
        // Sent again by a restarted originator: said taken, once.
        assert_eq!(set.part(parts[0].clone(), 3, digest, 2, t0), Part::Had(3));
        assert_eq!(set.part(parts[1].clone(), 3, digest, 2, t0), Part::Pending);

        // A larger set, whose parts come after one of a set never whole: that one's go.
        let larger = set_of(&[
            ("a", json!(1)),
            ("b", json!(2)),
            ("c", json!(3)),
            ("d", json!(4)),
        ]);
        let (new_digest, new_parts) = (
            set_digest(&larger),
            set_parts(&larger, SET_PART_ROOM + 6).unwrap(),
        );
        let other = set_of(&[
            ("a", json!(1)),
            ("e", json!(5)),
            ("f", json!(6)),
            ("g", json!(7)),
        ]);
        let other_parts = set_parts(&other, SET_PART_ROOM + 6).unwrap();
        let mut set = SetInParts::default();
        assert_eq!(
            set.part(other_parts[3].clone(), 4, set_digest(&other), 1, t0),
            Part::Pending
        );
        for part in &new_parts[..3] {
            assert_eq!(set.part(part.clone(), 4, new_digest, 1, t0), Part::Pending);
        }
        // A part of a smaller set meanwhile changes nothing.
        assert_eq!(set.part(parts[1].clone(), 3, digest, 1, t0), Part::Pending);
        assert_eq!(
            set.part(new_parts[3].clone(), 4, new_digest, 1, t0),
            Part::Set(larger.clone())
        );

        // A set that came whole (a direct copy) makes its parts and those of smaller sets no
        // news, but a restarted originator sending them again hears it was taken.
        let mut set = SetInParts::default();
        set.taken_whole(&larger);
        for part in &new_parts {
            assert_eq!(set.part(part.clone(), 4, new_digest, 0, t0), Part::Pending);
        }
        assert_eq!(set.part(parts[0].clone(), 3, digest, 0, t0), Part::Pending);
        assert_eq!(
            set.part(new_parts[0].clone(), 4, new_digest, 5, t0),
            Part::Had(4)
        );
        // Nor is a part without values a set.
        let mut set = SetInParts::default();
        assert_eq!(
            set.part(json!({ "query": {} }), 0, digest, 1, t0),
            Part::Pending
        );
        assert_eq!(set.part(json!("x"), 1, digest, 1, t0), Part::Pending);
    }

    /// Parts whose values do not make up the set they name, that stop coming, or that hold
    /// more than a set may: nothing taken, nothing kept.
    #[test]
    fn parts_of_a_set_that_does_not_add_up_are_not_taken_nor_kept() {
        let t0 = Instant::now();
        let set = set_of(&[("a", json!(1)), ("b", json!(2))]);
        let parts = set_parts(&set, SET_PART_ROOM + 6).unwrap();
        let wrong = set_of(&[("a", json!(1)), ("b", json!(3))]);
        let mut held = SetInParts::default();
        assert_eq!(
            held.part(parts[0].clone(), 2, set_digest(&wrong), 1, t0),
            Part::Pending
        );
        assert_eq!(
            held.part(parts[1].clone(), 2, set_digest(&wrong), 1, t0),
            Part::Pending
        );
        assert!(held.values.is_empty() && held.digest.is_none());
        // The right digest still makes it, from its parts.
        let digest = set_digest(&set);
        assert_eq!(held.part(parts[0].clone(), 2, digest, 1, t0), Part::Pending);
        assert_eq!(
            held.part(parts[1].clone(), 2, digest, 1, t0),
            Part::Set(set.clone())
        );

        // Parts that give a node two values are not of one set.
        let mut held = SetInParts::default();
        let other_a = set_parts(&set_of(&[("a", json!(9))]), SET_PART_ROOM + 6).unwrap();
        assert_eq!(held.part(parts[0].clone(), 2, digest, 1, t0), Part::Pending);
        assert_eq!(
            held.part(other_a[0].clone(), 2, digest, 1, t0),
            Part::Pending
        );
        assert!(held.values.is_empty() && held.bytes == 0);

        // What came waits for the rest only PARTS_WAIT.
        let mut held = SetInParts::default();
        assert_eq!(held.part(parts[0].clone(), 2, digest, 1, t0), Part::Pending);
        held.expire(t0 + PARTS_WAIT / 2);
        assert_eq!(held.values.len(), 1);
        held.expire(t0 + PARTS_WAIT);
        assert!(held.values.is_empty());
        let later = t0 + PARTS_WAIT * 2;
        assert_eq!(
            held.part(parts[1].clone(), 2, digest, 1, later),
            Part::Pending
        );
        assert_eq!(
            held.part(parts[0].clone(), 2, digest, 1, later),
            Part::Set(set)
        );

        // More bytes than a set may hold: dropped.
        let big = json!("v".repeat(MAX_SET_IN_PARTS / 2 + 1));
        let huge = set_of(&[("a", big.clone()), ("b", big.clone()), ("c", json!(1))]);
        let parts = set_parts(&huge, MAX_SET_IN_PARTS).unwrap();
        let mut held = SetInParts::default();
        for part in parts {
            assert_eq!(held.part(part, 3, set_digest(&huge), 1, t0), Part::Pending);
        }
        assert!(held.bytes <= MAX_SET_IN_PARTS, "{} bytes held", held.bytes);
    }

    #[test]
    fn a_set_gossiped_in_parts_gets_a_grace_per_part() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        q.open("j", Some("x".into()), targets(&["a", "b", "c"]), t0);
        q.value("j", &n("a"), "x".into(), json!(1), t0).unwrap();
        q.value("j", &n("b"), "x".into(), json!(2), t0).unwrap();
        let a = q.value("j", &n("c"), "x".into(), json!(3), t0).unwrap();
        assert!(matches!(a.last(), Some(Action::Spread { .. })));
        q.gossiped_in_parts("j", 3, t0);
        q.taken("j", &n("a"), 3);
        assert!(q.tick(t0 + GOSSIP_GRACE).is_empty());
        assert!(q.tick(t0 + GOSSIP_GRACE * 2).is_empty());
        let a = q.tick(t0 + GOSSIP_GRACE * 3);
        assert_eq!(direct(&a), vec![vec![n("b"), n("c")]]);
        // Without a set out, nothing to lengthen.
        q.gossiped_in_parts("j", 3, t0);
        assert!(q.tick(t0 + GOSSIP_GRACE * 6).is_empty());
    }
}
