//! QUERY and JOB_WAIT across nodes: the runs actor's part, and the [`Coordinator`] the
//! executor calls.
//!
//! - **QUERY**: each target sends its value of the arg to the originator, whose collection is
//!   `coordination::query` (when the aggregate goes out, and to whom); the aggregate is
//!   gossiped, each target says it has it, and the ones gossip missed get it directly. A
//!   target's QUERY job waits for the aggregate (unless `--no-wait`), merges it into its args
//!   and finishes, so the next job of the parent sees it; a later, larger aggregate is merged
//!   into the args.
//! - **JOB_WAIT**: the waiting node asks each named node directly ("tell me when the job with
//!   this fingerprint has finished here"); a node answers at once if its cache says the job
//!   finished, or registers the wait and notifies when it does. When to ask (again) and whom
//!   to tell is `coordination::job_wait`; this sends what it says. No request is held open.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use coordination::{Gossip, JobMessage, JobReply, NodeId};
use jobs::{
    Component,
    components::{BoxFuture, Coordinator},
};
use mesh::{MemberState, MeshHandle, PeerId, wire};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{Actor, Input, MAX_JOB_MESSAGE, MAX_JOB_MESSAGE_READ, encode};
use crate::{
    records::{JobRecord, NodeResult},
    store::QueryValue,
};

/// A coordination message that did not reach its node (no connection, a partition, the node
/// restarting) is sent again after 1 s, then after twice as long each time up to this.
const TELL_RETRY_MAX: Duration = Duration::from_secs(10);
/// ... and given up after this long: every job waiting for it has timed out by then (a job's
/// timeout is at most a year, but what waits on these messages is a QUERY or JOB_WAIT job,
/// whose default is 10 minutes).
const TELL_GIVE_UP: Duration = Duration::from_secs(3600);
/// A QUERY job's originator is remembered on its targets this long.
const FORGET_QUERY_ORIGINS: Duration = Duration::from_secs(24 * 3600);

/// Coordination messages sent again to one node at most at a time (see
/// [`Actor::tell`]).
const MAX_RETRIED_PER_NODE: usize = 4096;

/// What the messages sent again to one node share: how many they are, and the word that the
/// node is back (each goes again at once then, not at the end of its wait: the nodes of a
/// mended partition's far side send their QUERY values together, not up to 10 s apart).
#[derive(Default)]
pub(super) struct RetriedTo {
    count: AtomicUsize,
    back: tokio::sync::Notify,
}

/// Bytes of large coordination messages (see [`LARGE_TOLD`]) in flight at once, in KiB: a
/// QUERY set too large to gossip goes to each target directly, and a thousand targets must not
/// hold a thousand copies of it at once (each send copies the message once more, into the
/// request, until it is answered).
const TOLD_IN_FLIGHT_KIB: usize = 64 * 1024;
/// A message of at least this many bytes waits for its share of [`TOLD_IN_FLIGHT_KIB`] before
/// each attempt; smaller ones (values, wait ends, hints) never wait.
const LARGE_TOLD: usize = 64 * 1024;

/// The budget of large coordination messages in flight (see [`TOLD_IN_FLIGHT_KIB`]).
#[derive(Clone)]
pub(super) struct ToldInFlight(Arc<tokio::sync::Semaphore>);

impl Default for ToldInFlight {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(TOLD_IN_FLIGHT_KIB)))
    }
}

impl ToldInFlight {
    /// Waits for the share of a message of `len` bytes, held until the permit is dropped;
    /// none for a small message.
    async fn share(&self, len: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if len < LARGE_TOLD {
            return None;
        }
        // At most TOLD_IN_FLIGHT_KIB (64 Ki), so within u32; a message over the whole budget
        // (none is: job messages are at most 8 MiB) would take all of it.
        let kib = len.div_ceil(1024).min(TOLD_IN_FLIGHT_KIB) as u32;
        // The semaphore is never closed.
        self.0.clone().acquire_many_owned(kib).await.ok()
    }
}

/// A message's place among those sent again to its node, given back when its task ends.
struct Retrying(Arc<RetriedTo>);

impl Retrying {
    /// A place among the node's (counted by `to`), if one is free.
    fn join(to: Arc<RetriedTo>) -> Option<Retrying> {
        let taken = to.count.fetch_add(1, Ordering::Relaxed);
        let slot = Retrying(to);
        (taken < MAX_RETRIED_PER_NODE).then_some(slot)
    }
}

impl Drop for Retrying {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waiting side: the job that waits, and the names of the nodes it waits on.
pub(super) struct WaitingJob {
    names: HashMap<NodeId, String>,
    updates: mpsc::Sender<(String, String)>,
}

/// A part of a QUERY set, as gossiped (`Gossip::QuerySetPart`).
pub(super) struct SetPart {
    pub(super) part: Value,
    pub(super) values: u64,
    pub(super) set: jobs::Fingerprint,
    pub(super) originator_start: u64,
}

/// Target side: where the set of a QUERY job that ran here comes from, and for which run.
pub(super) struct QueryOrigin {
    originator: NodeId,
    run_id: String,
    since: Instant,
    /// The parts of its sets gossiped in parts, as they come.
    parts: coordination::query::SetInParts,
}

/// What the actor keeps for QUERY and JOB_WAIT.
#[derive(Default)]
pub(super) struct CrossNode {
    /// Originator side: values of QUERY jobs as they arrive.
    queries: coordination::query::Queries,
    query_waiters: HashMap<String, oneshot::Sender<Result<Option<Value>, String>>>,
    /// Target side: who may send the aggregate of each QUERY job that ran here (its run's
    /// originator), and since when; forgotten after [`FORGET_QUERY_ORIGINS`]. A later,
    /// larger aggregate of the same job is taken too (merged into the args).
    query_origins: HashMap<String, QueryOrigin>,
    /// Waiting side: the JOB_WAITs in progress here, and their jobs.
    waits: coordination::job_wait::Waits,
    waiting: HashMap<String, WaitingJob>,
    /// Awaited side: the waits registered here.
    registrations: coordination::job_wait::Registrations,
    /// Messages being sent again, by node (see [`MAX_RETRIED_PER_NODE`]).
    retrying: HashMap<NodeId, Arc<RetriedTo>>,
    /// Large messages in flight (see [`TOLD_IN_FLIGHT_KIB`]).
    told_in_flight: ToldInFlight,
}

impl CrossNode {
    /// Nothing in progress: no query collected, no wait registering or waiting.
    pub(super) fn is_idle(&self) -> bool {
        self.queries.is_empty() && self.query_waiters.is_empty() && self.waits.is_empty()
    }

    /// Forgets the QUERY collections of jobs whose records were purged (`manage
    /// --purge-jobs`), keeping those of `open` jobs.
    pub(super) fn purge_queries(&mut self, open: &HashSet<String>) {
        self.queries.retain(|job| open.contains(job));
    }

    /// Whether the values of the QUERY job `job_id` are being collected here.
    pub(super) fn collecting(&self, job_id: &str) -> bool {
        self.queries.is_open(job_id)
    }

    /// `node` is back: the messages being sent again to it go now.
    pub(super) fn node_back(&self, node: &NodeId) {
        if let Some(to) = self.retrying.get(node) {
            to.back.notify_waiters();
        }
    }

    /// Forgets QUERY jobs here that gave up waiting (timed out).
    fn prune(&mut self) {
        self.query_waiters.retain(|_, reply| !reply.is_closed());
        // A node nothing is retried to any more (no task holds its count): its entry goes,
        // or the map would keep every node ever sent to.
        self.retrying
            .retain(|_, count| Arc::strong_count(count) > 1);
    }
}

/// The refusal in `reply` if it is one of a message its node could not store (it is sent
/// again, as if unanswered: see [`super::NOT_STORED`]).
fn not_stored(reply: &[u8]) -> Option<String> {
    match wire::decode::<JobReply>(reply, wire::MAX_CTL_BYTES) {
        Ok(JobReply::Refused(why)) if why == super::NOT_STORED => Some(why),
        _ => None,
    }
}

/// Sends with `send` until the node answers (whatever it answers but that it could not store
/// the message, [`not_stored`]: a refusal will not change by asking again), waiting 1 s after
/// the first failure, then twice as long each time up to `max_wait`, or until word that the
/// node is `back` (then at once, and the waits start over); false if it never answered within
/// `give_up`, or on an error `is_final` says will not pass (this node stopping). The messages
/// it carries are idempotent at their receiver, so one that arrived but whose answer was lost
/// may come twice.
async fn send_until_answered<F, Fut, T, E>(
    send: F,
    is_final: impl Fn(&E) -> bool,
    back: Option<&tokio::sync::Notify>,
    max_wait: Duration,
    give_up: Duration,
) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = tokio::time::Instant::now() + give_up;
    let first_wait = Duration::from_secs(1).min(max_wait);
    let mut wait = first_wait;
    loop {
        // Taken before the send: word that comes while it fails still counts.
        let seen_back = back.map(|b| b.notified());
        match send().await {
            Ok(_) => return true,
            Err(e) if is_final(&e) => return false,
            Err(e) => debug!("coordination message not delivered ({e}); again in {wait:?}"),
        }
        if tokio::time::Instant::now() + wait > deadline {
            return false;
        }
        let sleep = tokio::time::sleep(wait);
        match seen_back {
            Some(seen_back) => tokio::select! {
                () = sleep => wait = (wait * 2).min(max_wait),
                () = seen_back => wait = first_wait,
            },
            None => {
                sleep.await;
                wait = (wait * 2).min(max_wait);
            }
        }
    }
}

impl Actor {
    /// Sends `msg` to `to` (or handles it here when `to` is this node), again until `to`
    /// answers (see [`send_until_answered`]); the answer is ignored.
    pub(super) fn tell(&mut self, to: &NodeId, msg: JobMessage) {
        self.send_told(to, msg, false, true);
    }

    /// As [`Actor::tell`], once what was written so far is on disk: an outcome another node
    /// goes on from must not be one a crash here would turn into "interrupted".
    pub(super) fn tell_once_stored(&mut self, to: &NodeId, msg: JobMessage) {
        self.send_told(to, msg, true, true);
    }

    /// Sends a hint once: nothing waits for it, and a lost one only costs a little speed.
    pub(super) fn hint(&mut self, to: &NodeId, msg: JobMessage) {
        self.send_told(to, msg, false, false);
    }

    /// [`Actor::tell`] to each of `to`, encoded once: a QUERY set sent directly to every target
    /// is shared by the sends, not encoded and kept once per target.
    pub(super) fn tell_each(&mut self, to: Vec<NodeId>, msg: JobMessage) {
        let mut encoded: Option<Arc<Vec<u8>>> = None;
        for target in to {
            if target == self.local {
                self.tell_here(msg.clone());
                continue;
            }
            let bytes = match &encoded {
                Some(bytes) => bytes.clone(),
                None => {
                    let Some(bytes) = encode(&msg) else { return };
                    encoded.insert(Arc::new(bytes)).clone()
                }
            };
            self.send_encoded(&target, bytes, false, true);
        }
    }

    fn send_told(&mut self, to: &NodeId, msg: JobMessage, once_stored: bool, again: bool) {
        if *to == self.local {
            self.tell_here(msg);
            return;
        }
        let Some(bytes) = encode(&msg) else { return };
        self.send_encoded(to, Arc::new(bytes), once_stored, again);
    }

    /// A coordination message to this node: handled here, as if it had come from another.
    fn tell_here(&mut self, msg: JobMessage) {
        let local = self.mesh.local_peer_id();
        let _ = self.request(local, msg);
    }

    /// [`Actor::send_told`] of a message encoded already (`bytes`), to another node.
    fn send_encoded(
        &mut self,
        to: &NodeId,
        bytes: Arc<Vec<u8>>,
        once_stored: bool,
        mut again: bool,
    ) {
        let Ok(peer) = to.0.parse::<PeerId>() else {
            return;
        };
        let in_flight = self.cross.told_in_flight.clone();
        let committed = once_stored.then(|| self.store.committed());
        let mesh = self.mesh.clone();
        // A task per message: one per QUERY or JOB_WAIT job and node (a value, a set, a
        // wait's end), each a few hundred bytes, ending when the message is answered or after
        // TELL_GIVE_UP. At most MAX_RETRIED_PER_NODE are sent again for one node (a member
        // may register any number of waits and go away): past that, once, like a hint.
        let retrying = if again {
            let count = self.cross.retrying.entry(to.clone()).or_default().clone();
            match Retrying::join(count) {
                Some(slot) => Some(slot),
                None => {
                    debug!(%peer, "too many coordination messages retried for this node: sent once");
                    again = false;
                    None
                }
            }
        } else {
            None
        };
        tokio::spawn(async move {
            // Holds its place among the messages retried for the node until the task ends.
            let retrying = retrying;
            // Err: nothing was stored and the node stops.
            if let Some(committed) = committed
                && committed.await.is_err()
            {
                return;
            }
            if !again {
                let _share = in_flight.share(bytes.len()).await;
                let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|shared| shared.to_vec());
                if let Err(e) = mesh.request_job(peer, bytes).await {
                    debug!(%peer, "hint not delivered: {e}");
                }
                return;
            }
            let send = || async {
                let _share = in_flight.share(bytes.len()).await;
                let reply = mesh.request_job(peer, bytes.to_vec()).await?;
                match not_stored(&reply) {
                    Some(reason) => Err(mesh::MeshError::Request { peer, reason }),
                    None => Ok(reply),
                }
            };
            let stopped = |e: &mesh::MeshError| matches!(e, mesh::MeshError::Stopped);
            let back = retrying.as_ref().map(|r| &r.0.back);
            if !send_until_answered(send, stopped, back, TELL_RETRY_MAX, TELL_GIVE_UP).await {
                debug!(%peer, "coordination message not delivered; given up");
            }
        });
    }

    /// Target side: this node's value for a QUERY job.
    pub(super) fn query_local(
        &mut self,
        job_id: String,
        name: String,
        value: Value,
        reply: Option<oneshot::Sender<Result<Option<Value>, String>>>,
    ) {
        let Some((run_id, originator)) = self.job_runs.get(&job_id).and_then(|run| {
            self.accepted
                .get(run)
                .map(|a| (run.clone(), a.originator.clone()))
        }) else {
            if let Some(reply) = reply {
                let _ = reply.send(Err("QUERY of a job this node does not know".into()));
            }
            return;
        };
        if let Some(reply) = reply {
            self.cross.query_waiters.insert(job_id.clone(), reply);
        }
        // Until the set comes, the run's later jobs here see this node's value alone for the
        // name, not values an earlier run gathered from the others.
        let own = serde_json::json!({ "query": { self.local_name.clone(): { name.clone(): value.clone() } } });
        self.cache.keep_run_query(&run_id, &own);
        let now = Instant::now();
        self.cross
            .query_origins
            .retain(|_, o| now.saturating_duration_since(o.since) < FORGET_QUERY_ORIGINS);
        // The QUERY job starting again here keeps the parts that came for it.
        let parts = self
            .cross
            .query_origins
            .remove(&job_id)
            .filter(|o| o.originator == originator)
            .map(|o| o.parts)
            .unwrap_or_default();
        self.cross.query_origins.insert(
            job_id.clone(),
            QueryOrigin {
                originator: originator.clone(),
                run_id,
                since: now,
                parts,
            },
        );
        let msg = JobMessage::QueryValue {
            job_id,
            node: self.local.clone(),
            name,
            value,
        };
        self.tell(&originator, msg);
    }

    /// Where the set of the QUERY job `job_id` stands, seen from here.
    pub(super) fn query_stand(&self, job_id: &str) -> QueryStand {
        if let Some(names) = self.cross.queries.awaited(job_id) {
            return QueryStand::Awaits(names);
        }
        match self.cross.query_origins.get(job_id) {
            Some(origin) => QueryStand::Elsewhere(origin.originator.clone()),
            None => QueryStand::Unknown,
        }
    }

    /// Originator side: the record of `job_id` if it is a QUERY (in memory, or on disk after
    /// a restart).
    fn query_record(&self, job_id: &str) -> Option<JobRecord> {
        let record = match self.records.get(job_id) {
            Some(r) => r.clone(),
            None => self.finished_record(job_id)?,
        };
        (record.verb == "QUERY").then_some(record)
    }

    /// Originator side: whether values of the QUERY job `job_id` are collected, opening the
    /// collection from its record if need be (the arg from its run); false for a job this
    /// node does not track or that is not a QUERY.
    fn query_open(&mut self, job_id: &str) -> bool {
        if self.cross.queries.is_open(job_id) {
            return true;
        }
        let Some(record) = self.query_record(job_id) else {
            return false;
        };
        let arg = self.query_arg(&record);
        let targets = record
            .nodes
            .iter()
            .map(|n| {
                let result = record.results.get(&n.name);
                coordination::query::Target {
                    node: NodeId(n.peer_id.clone()),
                    name: n.name.clone(),
                    reported: result.is_some_and(|r| !r.is_write_off()),
                    written_off: result.is_some_and(NodeResult::is_write_off),
                }
            })
            .collect();
        self.cross
            .queries
            .open(job_id, arg, targets, Instant::now());
        true
    }

    /// Originator side: the arg the QUERY job of `record` collects, from its run (in memory,
    /// or on disk).
    fn query_arg(&self, record: &JobRecord) -> Option<String> {
        let stored;
        let run = match self.open_runs.get(&record.run_id) {
            Some(run) => Some(run),
            None => {
                stored = self.store.run(&record.run_id);
                stored.as_ref().map(|s| &s.run)
            }
        };
        run.into_iter()
            .flat_map(|run| run.parents.iter().flat_map(|p| &p.jobs))
            .find(|job| job.job_id == record.job_id)
            .and_then(|job| match &job.spec.component {
                Component::Query { name, .. } => Some(name.clone()),
                _ => None,
            })
    }

    /// Originator side: opens the collection of the QUERY job of `record`, which every
    /// target has reported for real, to wait for the values of its successes (see
    /// `Queries::open_over`): when `members_known`, not those gone (silent, or left) for
    /// longer than the grace a restart gets, as a run's write-off waits; else all of them.
    fn query_open_over(&mut self, record: &JobRecord, members_known: bool) {
        let (now, grace) = (Instant::now(), self.originator.left_grace());
        let targets = record
            .nodes
            .iter()
            .map(|n| {
                let node = NodeId(n.peer_id.clone());
                coordination::query::ReportedTarget {
                    alive: !members_known || !self.members.gone_for(&node, now, grace),
                    succeeded: record
                        .results
                        .get(&n.name)
                        .is_some_and(|r| r.state == jobs::executor::ResultState::Success),
                    name: n.name.clone(),
                    node,
                }
            })
            .collect();
        let over_for = super::now_ms().saturating_sub(record.last_result_unix_ms());
        let actions = self.cross.queries.open_over(
            &record.job_id,
            self.query_arg(record),
            targets,
            Duration::from_millis(over_for),
            now,
        );
        self.query_actions(actions);
    }

    /// Originator side: sends the aggregates the collection says are due, and keeps on disk
    /// the values it says to keep.
    fn query_actions(&mut self, actions: Vec<coordination::query::Action>) {
        use coordination::query::Action;
        for action in actions {
            match action {
                Action::Spread {
                    job_id,
                    to,
                    aggregate,
                } => self.query_spread(job_id, to, aggregate),
                Action::Send {
                    job_id,
                    to,
                    aggregate,
                } => {
                    let msg = JobMessage::QueryResult {
                        job_id: job_id.clone(),
                        aggregate,
                    };
                    let msg = match wire::encode(&msg, MAX_JOB_MESSAGE) {
                        Ok(_) => msg,
                        Err(e) => {
                            let reason = format!(
                                "the set of values this QUERY collected cannot reach the other \
                                 targets ({e}): QUERY smaller values, or fewer targets at once"
                            );
                            warn!(job = %job_id, "{reason}");
                            JobMessage::QueryFailed { job_id, reason }
                        }
                    };
                    self.tell_each(to, msg);
                }
                Action::Keep {
                    job_id,
                    node,
                    name,
                    value,
                } => self.store.put_query_value(&QueryValue {
                    job_id,
                    node,
                    name,
                    value,
                }),
                Action::Forget { job_id, targets } => {
                    for node in targets {
                        self.store.delete_query_value(&job_id, &node);
                    }
                }
            }
        }
    }

    /// Originator side: gossips the set of `job_id` to its targets `to`; this node, when one
    /// of them, takes it at once. A set too large for one gossip message goes in parts
    /// ([`Actor::query_set_parts`]), or to each target directly when it cannot; one whose
    /// gossip fails reaches them directly after the grace (`coordination::query`).
    fn query_spread(&mut self, job_id: String, to: Vec<NodeId>, aggregate: Value) {
        let values = coordination::query::values_in(&aggregate);
        if to.contains(&self.local) {
            self.query_result(job_id.clone(), aggregate.clone());
            let local = self.local.clone();
            self.cross.queries.taken(&job_id, &local, values);
        }
        let gossip = Gossip::QuerySet {
            job_id: job_id.clone(),
            aggregate,
            originator_start: self.start,
        };
        let messages = match wire::encode(&gossip, wire::MAX_GOSSIP_BYTES) {
            Ok(bytes) => vec![bytes],
            Err(_) => {
                let Gossip::QuerySet { aggregate, .. } = gossip else {
                    return;
                };
                match self.query_set_parts(&job_id, &aggregate, values) {
                    Some(parts) => {
                        debug!(job = %job_id, parts = parts.len(), "query set gossiped in parts");
                        let now = Instant::now();
                        self.cross
                            .queries
                            .gossiped_in_parts(&job_id, parts.len(), now);
                        parts
                    }
                    None => {
                        debug!(job = %job_id, "query set cannot be gossiped; sending it to each target");
                        let actions = self.cross.queries.not_gossiped(&job_id);
                        self.query_actions(actions);
                        return;
                    }
                }
            }
        };
        let mesh = self.mesh.clone();
        tokio::spawn(async move {
            // Each part goes whatever became of the others: a target that misses one gets
            // the set directly after the grace, one that has them all puts it together.
            for bytes in messages {
                if let Err(e) = mesh.publish_jobs(bytes).await {
                    debug!(job = %job_id, "query set not gossiped ({e}); targets get it directly");
                }
            }
        });
    }

    /// The gossip messages of a set of `values` values too large to gossip whole, in parts
    /// (`coordination::query::set_parts`); none for a set that cannot go so: one with a
    /// value too large for a gossip message, or one too large to send directly to the
    /// targets gossip misses (those fail: see [`Actor::query_actions`]).
    fn query_set_parts(
        &self,
        job_id: &str,
        aggregate: &Value,
        values: usize,
    ) -> Option<Vec<Vec<u8>>> {
        // (The direct message's envelope around the set: its job id and some 64 bytes.)
        if coordination::message::encoded_len(aggregate) + job_id.len() + 64 > MAX_JOB_MESSAGE {
            return None;
        }
        let parts = coordination::query::set_parts(aggregate, wire::MAX_GOSSIP_BYTES)?;
        let set = coordination::query::set_digest(aggregate);
        parts
            .into_iter()
            .map(|part| {
                let gossip = Gossip::QuerySetPart {
                    job_id: job_id.to_string(),
                    part,
                    values: values as u64,
                    set,
                    originator_start: self.start,
                };
                wire::encode(&gossip, wire::MAX_GOSSIP_BYTES).ok()
            })
            .collect()
    }

    /// Target side: a part of a set gossiped in parts (`Gossip::QuerySetPart`); the set is
    /// taken as a gossiped one once its parts are in ([`Actor::query_set_gossiped`]), and a
    /// set taken already is said taken again to a restarted originator that sends it again.
    /// Parts from any node but the originator of a QUERY job that ran here are dropped.
    pub(super) fn query_part_gossiped(&mut self, source: NodeId, job_id: String, part: SetPart) {
        if !self.is_query_origin(&job_id, &source) {
            return;
        }
        let Some(origin) = self.cross.query_origins.get_mut(&job_id) else {
            return;
        };
        let whole = usize::try_from(part.values).unwrap_or(usize::MAX);
        let now = Instant::now();
        match origin
            .parts
            .part(part.part, whole, part.set, part.originator_start, now)
        {
            coordination::query::Part::Set(set) => self.query_set_gossiped(source, job_id, set),
            coordination::query::Part::Had(values) => {
                let msg = JobMessage::QueryTaken {
                    job_id,
                    node: self.local.clone(),
                    values: values as u64,
                };
                self.hint(&source, msg);
            }
            coordination::query::Part::Pending => {}
        }
    }

    /// Target side: a gossiped set of a QUERY job. Taken (and its originator told so, once:
    /// a word lost costs one direct copy) when it comes from the originator of a QUERY job
    /// that ran here and holds this node's value; every other node drops it, as does a
    /// target that was written off and has not sent its value yet (gossip reaches it too,
    /// but a set without its value is not for it).
    pub(super) fn query_set_gossiped(&mut self, source: NodeId, job_id: String, aggregate: Value) {
        if !self.is_query_origin(&job_id, &source) {
            return;
        }
        let has_mine = aggregate
            .get("query")
            .and_then(Value::as_object)
            .is_some_and(|per_node| per_node.contains_key(&self.local_name));
        if !has_mine {
            debug!(job = %job_id, "a gossiped QUERY set without this node's value; not taken");
            return;
        }
        let values = coordination::query::values_in(&aggregate) as u64;
        self.query_result(job_id.clone(), aggregate);
        let msg = JobMessage::QueryTaken {
            job_id,
            node: self.local.clone(),
            values,
        };
        self.hint(&source, msg);
    }

    /// Originator side: `node` has the gossiped set of `job_id`, with `values` values.
    pub(super) fn query_taken(&mut self, job_id: &str, node: &NodeId, values: u64) {
        let values = usize::try_from(values).unwrap_or(usize::MAX);
        self.cross.queries.taken(job_id, node, values);
    }

    /// Originator side: every target has reported the QUERY job of `record` for real (none
    /// is written off, to come back with its value): its values are no longer needed once
    /// those of the targets it succeeded on are in (a `--no-wait` QUERY reports before its
    /// value may arrive) and the set they make has gone out.
    /// (With no collection open, the values still to come open one.)
    pub(super) fn query_over(&mut self, record: &JobRecord) {
        let actions = self
            .cross
            .queries
            .over(&record.job_id, successes(record), Instant::now());
        self.query_actions(actions);
    }

    /// Originator side, after a restart: the values collected before it, taken again (an
    /// aggregate that was due goes out now). Values of jobs that are over, or whose record
    /// is gone, are dropped.
    pub(super) fn restore_queries(&mut self) {
        let kept = self.store.query_values();
        if kept.is_empty() {
            return;
        }
        let mut by_job: BTreeMap<String, Vec<QueryValue>> = BTreeMap::new();
        for v in kept {
            by_job.entry(v.job_id.clone()).or_default().push(v);
        }
        for (job_id, values) in by_job {
            // Every target had reported: the values still waited for (those of successes
            // that overtook them), if any, are waited for again; else the collection goes.
            let open = match self.query_over_record(&job_id) {
                // Who is alive is not known yet: every success is waited for (one gone for
                // good holds the set back for the collection's life).
                Some(record) => {
                    self.query_open_over(&record, false);
                    self.cross.queries.is_open(&job_id)
                }
                None => self.query_open(&job_id),
            };
            if !open {
                self.cross.queries.forget(&job_id);
                for v in values {
                    self.store.delete_query_value(&job_id, &v.node);
                }
                continue;
            }
            for v in values {
                let node = v.node.clone();
                let Ok(actions) =
                    self.cross
                        .queries
                        .value(&job_id, &v.node, v.name, v.value, Instant::now())
                else {
                    // Of another arg (kept by an older version): not this QUERY's.
                    self.store.delete_query_value(&job_id, &node);
                    continue;
                };
                // Already on disk.
                let actions = actions
                    .into_iter()
                    .filter(|a| !matches!(a, coordination::query::Action::Keep { .. }))
                    .collect();
                self.query_actions(actions);
            }
        }
    }

    /// Originator side: a target's value arrived; refused if it is not of the arg the QUERY
    /// job collects.
    pub(super) fn query_value(
        &mut self,
        job_id: String,
        node: NodeId,
        name: String,
        value: Value,
    ) -> Result<(), String> {
        if !self.cross.queries.is_open(&job_id) {
            let open = match self.query_over_record(&job_id) {
                Some(record) => {
                    // Every target reported before this value came (a `--no-wait` result
                    // overtook it, the collection went while the targets were written off,
                    // or this node restarted): it and the values of the other successes
                    // alive still make the set (unless it settled: this one was sent again).
                    self.query_open_over(&record, true);
                    self.cross.queries.is_open(&job_id)
                }
                None => self.query_open(&job_id),
            };
            if !open {
                debug!(
                    job = %job_id,
                    "query value for a job this node does not collect (or no longer: it was \
                     sent again, or comes over an hour late); dropped"
                );
                return Ok(());
            }
        }
        let actions = self
            .cross
            .queries
            .value(&job_id, &node, name, value, Instant::now())?;
        self.query_actions(actions);
        Ok(())
    }

    /// Originator side: the finished record of the QUERY job `job_id` if every target has
    /// reported it for real (a record still in memory is still waiting for results).
    fn query_over_record(&self, job_id: &str) -> Option<JobRecord> {
        if self.records.contains_key(job_id) {
            return None;
        }
        self.finished_record(job_id)
            .filter(|r| r.verb == "QUERY" && r.reported_by_all())
    }

    /// Every tick: the larger aggregates that are due, and what is over.
    pub(super) fn query_tick(&mut self, now: Instant) {
        self.cross.prune();
        // Target side: what came of sets that stopped coming in parts goes.
        for origin in self.cross.query_origins.values_mut() {
            origin.parts.expire(now);
        }
        let actions = self.cross.queries.tick(now);
        self.query_actions(actions);
    }

    /// Originator side: the QUERY job `job_id` ended on `node` without success (it failed,
    /// was purged, or never ran after its parent failed there): no value will come from it.
    /// (`written_off`: this node wrote it off as unreachable; its value may still come.)
    pub(super) fn query_ended_without_value(
        &mut self,
        job_id: &str,
        node: &NodeId,
        written_off: bool,
    ) {
        if self.query_open(job_id) {
            let queries = &mut self.cross.queries;
            let actions = if written_off {
                queries.written_off(job_id, node, Instant::now())
            } else {
                queries.ended_without_value(job_id, node, Instant::now())
            };
            self.query_actions(actions);
        }
    }

    /// Originator side: a target is back (see `coordination::query`).
    pub(super) fn queries_node_back(&mut self, node: &NodeId) {
        let actions = self.cross.queries.node_back(node);
        self.query_actions(actions);
    }

    /// Target side: whether `from` may send the aggregate of the QUERY job `job_id` (the
    /// originator of its run).
    pub(super) fn is_query_origin(&self, job_id: &str, from: &NodeId) -> bool {
        self.cross
            .query_origins
            .get(job_id)
            .is_some_and(|origin| origin.originator == *from)
    }

    /// Target side: the aggregate of a QUERY job arrived.
    pub(super) fn query_result(&mut self, job_id: String, aggregate: Value) {
        if let Some(origin) = self.cross.query_origins.get_mut(&job_id) {
            origin.parts.taken_whole(&aggregate);
        }
        let aggregate = match self.cross.query_waiters.remove(&job_id) {
            // The job takes it (and merges it); if it gave up meanwhile, it comes back.
            Some(reply) => match reply.send(Ok(Some(aggregate))) {
                Ok(()) => return,
                Err(Ok(Some(aggregate))) => aggregate,
                Err(_) => return,
            },
            None => aggregate,
        };
        // --no-wait, a job that gave up, or a later and larger aggregate: merged now, for
        // whatever runs next, and for the run's own later jobs here if some are still to run.
        let run_id = self
            .cross
            .query_origins
            .get(&job_id)
            .map(|o| o.run_id.as_str());
        if let Some(run_id) = run_id
            && self
                .accepted
                .get(run_id)
                .is_some_and(|a| !a.pending.is_empty())
        {
            self.cache.keep_run_query(run_id, &aggregate);
        }
        if let Value::Object(map) = aggregate {
            self.cache.merge_args(map, true);
        }
    }

    /// Target side: the QUERY job's set cannot come: the job fails with `reason`.
    pub(super) fn query_failed(&mut self, job_id: &str, reason: String) {
        if let Some(reply) = self.cross.query_waiters.remove(job_id) {
            let _ = reply.send(Err(reason));
        }
    }

    /// Originator side: a target left; its QUERY answers will not come.
    pub(super) fn queries_node_gone(&mut self, node: &NodeId) {
        let actions = self.cross.queries.node_gone(node, Instant::now());
        self.query_actions(actions);
    }

    /// Waiting side: the JOB_WAIT job `job_id` starts waiting on `peers`. A node for which the
    /// job's own run has the awaited job is asked for that run's job.
    pub(super) fn job_wait(
        &mut self,
        job_id: &str,
        fingerprint: String,
        peers: Vec<(NodeId, String)>,
        updates: mpsc::Sender<(String, String)>,
    ) {
        let wait_id = uuid::Uuid::new_v4().to_string();
        let run_id = self.job_runs.get(job_id).cloned();
        // This node's own run is in memory; another node's is on disk since its acceptance.
        let run = run_id.as_ref().and_then(|id| match self.open_runs.get(id) {
            Some(run) => Some(run.clone()),
            None => self.store.accepted_run(id),
        });
        let nodes = peers
            .iter()
            .map(|(node, _)| {
                let in_run = run.as_ref().is_some_and(|run| {
                    run.work_for(node).iter().any(|(_, jobs)| {
                        jobs.iter().any(|j| {
                            j.job_id != job_id && j.fingerprint.matches_prefix(&fingerprint)
                        })
                    })
                });
                (node.clone(), in_run.then(|| run_id.clone()).flatten())
            })
            .collect();
        self.cross.waiting.insert(
            wait_id.clone(),
            WaitingJob {
                names: peers.into_iter().collect(),
                updates,
            },
        );
        let actions = self
            .cross
            .waits
            .open(&wait_id, &fingerprint, nodes, Instant::now());
        self.wait_actions(actions);
    }

    /// Every tick: waits whose job is over go; registrations due are sent (again).
    pub(super) fn wait_tick(&mut self, now: Instant) {
        let over: Vec<String> = self
            .cross
            .waiting
            .iter()
            .filter(|(_, w)| w.updates.is_closed())
            .map(|(id, _)| id.clone())
            .collect();
        for wait_id in over {
            self.cross.waiting.remove(&wait_id);
            self.cross.waits.close(&wait_id);
        }
        let actions = self.cross.waits.tick(now);
        self.wait_actions(actions);
    }

    /// Waiting side: `node` is back; it may have forgotten what it had registered.
    pub(super) fn waits_node_back(&mut self, node: &NodeId) {
        let actions = self.cross.waits.node_back(node, Instant::now());
        self.wait_actions(actions);
    }

    /// Does what `coordination::job_wait` says.
    fn wait_actions(&mut self, actions: Vec<coordination::job_wait::Action>) {
        use coordination::job_wait::Action;
        for action in actions {
            match action {
                Action::Register {
                    wait_id,
                    fingerprint,
                    to,
                    run,
                } if to == self.local => {
                    let local = self.local.clone();
                    let answer = self.wait_for(wait_id.clone(), fingerprint, run, local.clone());
                    self.wait_registered(&wait_id, &local, answer);
                }
                Action::Register {
                    wait_id,
                    fingerprint,
                    to,
                    run,
                } => self.register_with(wait_id, fingerprint, run, to),
                Action::Finished {
                    wait_id,
                    node,
                    state,
                } => {
                    if let Some(w) = self.cross.waiting.get(&wait_id)
                        && let Some(name) = w.names.get(&node)
                    {
                        // The channel holds one update per node; a closed one means the job
                        // is over.
                        let _ = w.updates.try_send((name.clone(), state));
                    }
                }
                Action::Notify {
                    waiter,
                    wait_id,
                    state,
                } => {
                    let msg = JobMessage::WaitDone {
                        wait_id,
                        node: self.local.clone(),
                        state,
                    };
                    self.tell_once_stored(&waiter, msg);
                }
            }
        }
    }

    /// Waiting side: asks `node` to register the wait (one try; its answer, or its failure,
    /// goes to the machine, whose tick sends the next if this one is not taken).
    fn register_with(
        &mut self,
        wait_id: String,
        fingerprint: String,
        run: Option<String>,
        node: NodeId,
    ) {
        let Ok(peer) = node.0.parse::<PeerId>() else {
            return;
        };
        let Some(bytes) = encode(&JobMessage::WaitFor {
            wait_id: wait_id.clone(),
            fingerprint,
            run,
        }) else {
            return;
        };
        let mesh = self.mesh.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let answer = match mesh.request_job(peer, bytes).await {
                Ok(reply) => match wire::decode::<JobReply>(&reply, MAX_JOB_MESSAGE_READ) {
                    Ok(JobReply::Ok) => Ok(()),
                    Ok(JobReply::Refused(why)) => Err(why),
                    Ok(JobReply::UnknownRuns(_)) => {
                        Err("an answer to results, not to a wait".into())
                    }
                    Err(e) => Err(format!("unreadable answer: {e}")),
                },
                Err(e) => Err(format!("not delivered: {e}")),
            };
            let _ = inbox
                .send(Input::WaitRegistered {
                    wait_id,
                    node,
                    answer,
                })
                .await;
        });
    }

    /// Waiting side: what `node` answered to a registration of the wait `wait_id` (`Err`:
    /// why it did not take it).
    pub(super) fn wait_registered(
        &mut self,
        wait_id: &str,
        node: &NodeId,
        answer: Result<(), String>,
    ) {
        let now = Instant::now();
        match answer {
            Ok(()) => self.cross.waits.taken(wait_id, node, now),
            Err(why) => {
                debug!(wait = %wait_id, %node, "JOB_WAIT registration not taken: {why}");
                self.cross.waits.not_taken(wait_id, node, now);
            }
        }
    }

    /// Awaited side: `waiter` wants to know when the job with `fingerprint` has finished here.
    /// While such a job is queued or running here, the wait is for it, not answered from an
    /// earlier run's outcome in the cache (an orchestration run again would otherwise go on
    /// before the job it waits for has run again). A wait for the job of `run` (the waiting
    /// job's run has it for this node) waits for this node to take that run in, then for that
    /// run's job if it is still pending here. `Err`: refused, with the reason for the waiter.
    pub(super) fn wait_for(
        &mut self,
        wait_id: String,
        fingerprint: String,
        run: Option<String>,
        waiter: NodeId,
    ) -> Result<(), String> {
        use coordination::job_wait::{AwaitedHere, answer_now};
        let here = match &run {
            Some(run) => match self.accepted.get(run) {
                None => AwaitedHere::RunNotTaken,
                Some(a) => AwaitedHere::InRun {
                    ended: a
                        .outcomes
                        .iter()
                        .find(|(fp, _)| fp.matches_prefix(&fingerprint))
                        .map(|(_, ok)| *ok),
                    pending: self.job_fingerprints.iter().any(|(job, fp)| {
                        fp.matches_prefix(&fingerprint) && self.job_runs.get(job) == Some(run)
                    }),
                },
            },
            None => AwaitedHere::Any {
                pending: self
                    .job_fingerprints
                    .values()
                    .any(|fp| fp.matches_prefix(&fingerprint)),
            },
        };
        let state = answer_now(here, || self.cache.finished_state(&fingerprint));
        let actions = self.cross.registrations.try_register(
            &wait_id,
            &fingerprint,
            run.as_deref(),
            &waiter,
            state,
            Instant::now(),
        )?;
        self.wait_actions(actions);
        Ok(())
    }

    /// Awaited side: a job with `fingerprint` of `run` finished here: tell whoever waits for it.
    pub(super) fn notify_waiters(&mut self, fingerprint: &str, run: &str, state: &str) {
        let actions = self
            .cross
            .registrations
            .finished(fingerprint, run, state, Instant::now());
        self.wait_actions(actions);
    }

    /// Awaited side: a job with `fingerprint` of `run` was refused here: tell the waits of
    /// that run only.
    pub(super) fn refused_waiters(&mut self, fingerprint: &str, run: &str) {
        let actions = self
            .cross
            .registrations
            .refused(fingerprint, run, Instant::now());
        self.wait_actions(actions);
    }

    /// Waiting side: a node says the awaited job finished there.
    pub(super) fn wait_done(&mut self, wait_id: &str, node: &NodeId, state: String) {
        let actions = self.cross.waits.done(wait_id, node, state);
        self.wait_actions(actions);
    }
}

/// How long JOB_WAIT looks for a node name this node does not know yet (a node that joined
/// moments ago reaches every table within a few seconds).
const UNKNOWN_NAME_GRACE: Duration = Duration::from_secs(10);

/// Why JOB_WAIT's node names do not name one node each.
enum NameError {
    Unknown(String),
    Ambiguous(String, usize),
}

/// The node each of `names` stands for. A name is one node's while it is live (an old row
/// under it, of a node reinstalled with a new identity, does not count); with none live, the
/// one last heard from, which may come back within the wait.
fn resolve_names(
    members: &[mesh::MemberView],
    names: &[String],
) -> Result<Vec<(NodeId, String)>, NameError> {
    let mut peers = Vec::new();
    for name in names {
        let found: Vec<&mesh::MemberView> = members
            .iter()
            .filter(|m| m.presence.name == *name)
            .collect();
        let live: Vec<&&mesh::MemberView> = found
            .iter()
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Conflict))
            .collect();
        let one = match live.as_slice() {
            [one] => **one,
            [] => match found.iter().min_by_key(|m| m.last_seen_ago) {
                Some(last) => *last,
                None => return Err(NameError::Unknown(name.clone())),
            },
            several => return Err(NameError::Ambiguous(name.clone(), several.len())),
        };
        peers.push((NodeId(one.presence.peer_id.to_string()), name.clone()));
    }
    Ok(peers)
}

/// How this node sees the node named `name`, in a phrase: whether it is still there to answer.
/// `unreachable`: members this node fails to dial lately.
fn seen_as(members: &[mesh::MemberView], unreachable: &[mesh::PeerId], name: &str) -> String {
    let named = members.iter().filter(|m| m.presence.name == name);
    let Some(m) = named.min_by_key(|m| (m.state != MemberState::Alive, m.last_seen_ago)) else {
        return format!("{name}: not in this node's table of the mesh");
    };
    let ago = m.last_seen_ago.as_secs();
    match m.state {
        MemberState::Alive if unreachable.contains(&m.presence.peer_id) => format!(
            "{name}: alive by the mesh's table (last heard {ago} s ago) but not reachable \
             directly from this node, so it could not answer (whether it ran the job is unknown; `status` says more)"
        ),
        MemberState::Alive => format!(
            "{name}: alive, and has not finished a job of that fingerprint (not run there yet, \
             still running, or never sent there)"
        ),
        MemberState::Expired => {
            format!(
                "{name}: not heard from for {ago} s (down or cut off; whether it ran the job is unknown)"
            )
        }
        MemberState::Left => format!("{name}: left the mesh {ago} s ago"),
        MemberState::Conflict => format!("{name}: two nodes use this identity"),
    }
}

/// Where the set of a QUERY job stands, seen from one of its targets.
#[derive(Debug)]
pub enum QueryStand {
    /// This node collects it, and still waits for the values of these targets (by name).
    Awaits(Vec<String>),
    /// The run's submitter (this node is not) collects it.
    Elsewhere(NodeId),
    /// Not known here (any more).
    Unknown,
}

/// The executor's way to the mesh for QUERY, JOB_WAIT and files.
pub struct NodeCoordinator {
    pub(crate) inbox: mpsc::Sender<Input>,
    pub(crate) mesh: MeshHandle,
    pub(crate) transfers: crate::transfers::Transfers,
}

impl Coordinator for NodeCoordinator {
    fn query(
        &self,
        job_id: &str,
        name: &str,
        value: Value,
        wait: bool,
    ) -> BoxFuture<'static, Result<Option<Value>, String>> {
        let inbox = self.inbox.clone();
        let (job_id, name) = (job_id.to_string(), name.to_string());
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            inbox
                .send(Input::QueryLocal {
                    job_id,
                    name,
                    value,
                    reply: wait.then_some(reply),
                })
                .await
                .map_err(|_| "the node is shutting down".to_string())?;
            if !wait {
                return Ok(None);
            }
            answer
                .await
                .map_err(|_| "the node is shutting down".to_string())?
        })
    }

    fn job_wait(
        &self,
        job_id: &str,
        fingerprint: &str,
        nodes: &[String],
    ) -> BoxFuture<'static, Result<mpsc::Receiver<(String, String)>, String>> {
        let inbox = self.inbox.clone();
        let mesh = self.mesh.clone();
        let job_id = job_id.to_string();
        let fingerprint = fingerprint.to_string();
        let nodes = nodes.to_vec();
        Box::pin(async move {
            // A node that just joined may not be in this node's table yet: a name not found
            // is looked for again, for a while, before the wait fails.
            let give_up = tokio::time::Instant::now() + UNKNOWN_NAME_GRACE;
            let peers = loop {
                let status = mesh.status().await.map_err(|e| e.to_string())?;
                match resolve_names(&status.members, &nodes) {
                    Ok(peers) => break peers,
                    Err(NameError::Unknown(_)) if tokio::time::Instant::now() < give_up => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(NameError::Unknown(name)) => {
                        return Err(format!(
                            "no node named '{name}' in the mesh (looked for {} s)",
                            UNKNOWN_NAME_GRACE.as_secs()
                        ));
                    }
                    Err(NameError::Ambiguous(name, count)) => {
                        return Err(format!(
                            "'{name}' is ambiguous ({count} live nodes use that name)"
                        ));
                    }
                }
            };
            let (updates, rx) = mpsc::channel(nodes.len().max(1));
            inbox
                .send(Input::JobWait {
                    job_id,
                    fingerprint,
                    peers,
                    updates,
                })
                .await
                .map_err(|_| "the node is shutting down".to_string())?;
            Ok(rx)
        })
    }

    fn query_waiting(&self, job_id: &str) -> BoxFuture<'static, Option<String>> {
        let inbox = self.inbox.clone();
        let mesh = self.mesh.clone();
        let job_id = job_id.to_string();
        Box::pin(async move {
            let (reply, stand) = oneshot::channel();
            inbox
                .send(Input::QueryWaiting {
                    job_id: job_id.clone(),
                    reply,
                })
                .await
                .ok()?;
            Some(match stand.await.ok()? {
                QueryStand::Awaits(names) if names.is_empty() => {
                    "every value had come; the set was on its way".to_string()
                }
                QueryStand::Awaits(names) => format!(
                    "this node, the submitter, still waited for the value{} of {} (the set goes \
                     out once every target has sent its value, left, or ended the job without \
                     one)",
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", ")
                ),
                QueryStand::Elsewhere(originator) => {
                    let (name, state) = match mesh.status().await {
                        // This node's own collection is over (its time ran out, or a purge):
                        // nothing more to say than the timeout.
                        Ok(status) if status.local_peer_id.to_string() == originator.0 => {
                            return None;
                        }
                        Ok(status) => {
                            let state = status
                                .members
                                .iter()
                                .find(|m| m.presence.peer_id.to_string() == originator.0)
                                .map(|m| m.state);
                            (status.name_or_id(&originator.0), state)
                        }
                        Err(_) => (originator.0.clone(), None),
                    };
                    // The submitter itself out of reach is the likelier cause.
                    let gone = match state {
                        Some(mesh::MemberState::Expired) => {
                            format!("; {name} itself is not answering here (expired)")
                        }
                        Some(mesh::MemberState::Left) => format!("; {name} itself has left"),
                        _ => String::new(),
                    };
                    format!(
                        "it comes from the submitter {name} once every target has sent its value \
                         (there, `manage --job-info {job_id}` shows which targets have not \
                         reported){gone}"
                    )
                }
                QueryStand::Unknown => return None,
            })
        })
    }

    fn nodes_seen(&self, nodes: &[String]) -> BoxFuture<'static, Vec<String>> {
        let mesh = self.mesh.clone();
        let nodes = nodes.to_vec();
        Box::pin(async move {
            let Ok(status) = mesh.status().await else {
                return Vec::new();
            };
            nodes
                .iter()
                .map(|name| seen_as(&status.members, &status.unreachable, name))
                .collect()
        })
    }

    fn fetch_blob(
        &self,
        job_id: &str,
        file: &jobs::spec::FileRef,
    ) -> BoxFuture<'static, Result<std::path::PathBuf, String>> {
        let inbox = self.inbox.clone();
        let transfers = self.transfers.clone();
        let job_id = job_id.to_string();
        let file = file.clone();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            inbox
                .send(Input::BlobSources {
                    job_id: job_id.clone(),
                    reply,
                })
                .await
                .map_err(|_| "the node is shutting down".to_string())?;
            let sources = answer
                .await
                .map_err(|_| "the node is shutting down".to_string())?;
            let hash = file.hash;
            let path = transfers.fetch(file, sources).await?;
            let _ = inbox.send(Input::BlobFetched { job_id, hash }).await;
            Ok(path)
        })
    }

    fn discard_blob(&self, hash: jobs::Fingerprint) {
        // Full inbox: the blob stays until evicted, and jobs needing it fail meanwhile.
        let _ = self.inbox.try_send(Input::BlobDamaged(hash));
    }
}

/// The names of the targets whose job of `record` succeeded.
fn successes(record: &JobRecord) -> Vec<String> {
    record
        .results
        .iter()
        .filter(|(_, r)| r.state == jobs::executor::ResultState::Success)
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message its node could not store is sent again; any other answer, a refusal too,
    /// ends the sending (asking again would not change it).
    #[test]
    fn a_message_not_stored_is_sent_again() {
        let reply = |r: JobReply| wire::encode(&r, wire::MAX_CTL_BYTES).unwrap();
        assert!(not_stored(&reply(JobReply::Refused(super::super::NOT_STORED.into()))).is_some());
        assert!(not_stored(&reply(JobReply::Refused("not a target".into()))).is_none());
        assert!(not_stored(&reply(JobReply::Ok)).is_none());
        assert!(not_stored(b"not a reply").is_none());
        // The sending goes on through such answers until the node takes the message.
        let answers = std::sync::Mutex::new(vec![
            reply(JobReply::Ok),
            reply(JobReply::Refused(super::super::NOT_STORED.into())),
        ]);
        let sent = AtomicUsize::new(0);
        let send = || {
            sent.fetch_add(1, Ordering::Relaxed);
            let answer = answers.lock().unwrap().pop().unwrap();
            async move {
                match not_stored(&answer) {
                    Some(reason) => Err(reason),
                    None => Ok(answer),
                }
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let answered = rt.block_on(send_until_answered(
            send,
            |_: &String| false,
            None,
            Duration::from_secs(1),
            Duration::from_secs(60),
        ));
        assert!(answered);
        assert_eq!(sent.load(Ordering::Relaxed), 2);
    }

    /// Messages sent again to one node hold a place each until their task ends; past the
    /// cap, none is free.
    #[test]
    fn messages_retried_for_one_node_are_capped() {
        let to = Arc::new(RetriedTo::default());
        let mut held: Vec<Retrying> = (0..MAX_RETRIED_PER_NODE)
            .map(|_| Retrying::join(to.clone()).expect("a free place"))
            .collect();
        assert!(Retrying::join(to.clone()).is_none());
        held.pop();
        assert!(Retrying::join(to.clone()).is_some());
        drop(held);
        assert_eq!(to.count.load(Ordering::Relaxed), 0);
    }

    /// A send that fails `failures` times, then is answered; counts the attempts.
    fn flaky(
        failures: usize,
        attempts: Arc<AtomicUsize>,
    ) -> impl Fn() -> BoxFuture<'static, Result<(), String>> {
        move || {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n < failures {
                    Err("no connection".to_string())
                } else {
                    Ok(())
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_is_sent_again_with_backoff_until_answered() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let start = tokio::time::Instant::now();
        let sent = send_until_answered(
            flaky(5, attempts.clone()),
            |_| false,
            None,
            Duration::from_secs(10),
            Duration::from_secs(3600),
        )
        .await;
        assert!(sent);
        assert_eq!(attempts.load(Ordering::SeqCst), 6);
        // 1 + 2 + 4 + 8 + 10 s between the six attempts.
        assert_eq!(start.elapsed(), Duration::from_secs(25));
    }

    /// Large messages in flight share a budget: one waits while others hold it; small ones
    /// never wait.
    #[tokio::test(start_paused = true)]
    async fn large_messages_in_flight_share_a_budget() {
        let budget = ToldInFlight::default();
        let whole = budget.share(TOLD_IN_FLIGHT_KIB * 1024).await;
        assert!(whole.is_some());
        assert!(budget.share(LARGE_TOLD - 1).await.is_none());
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.share(2 * 1024 * 1024).await.is_some() }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiting.is_finished(), "a share over the budget was given");
        drop(whole);
        assert!(waiting.await.unwrap());
        // One larger than the whole budget takes all of it rather than waiting for ever.
        assert!(budget.share(usize::MAX / 2).await.is_some());
    }

    /// Word that the node is back sends the message at once, and the waits start over.
    #[tokio::test(start_paused = true)]
    async fn word_that_the_node_is_back_sends_it_again_at_once() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let to = Arc::new(RetriedTo::default());
        let start = tokio::time::Instant::now();
        let back = to.clone();
        // Attempts at 0, 1, 3, 7 and 15 s failed; the next was due at 25 s.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            back.back.notify_waiters();
        });
        let sent = send_until_answered(
            flaky(6, attempts.clone()),
            |_| false,
            Some(&to.back),
            Duration::from_secs(10),
            Duration::from_secs(3600),
        )
        .await;
        assert!(sent);
        // At 20 s (failed once more), then 1 s later.
        assert_eq!(attempts.load(Ordering::SeqCst), 7);
        assert_eq!(start.elapsed(), Duration::from_secs(21));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_ends_it_at_once_and_silence_is_given_up() {
        let attempts = Arc::new(AtomicUsize::new(0));
        assert!(
            send_until_answered(
                flaky(0, attempts.clone()),
                |_| false,
                None,
                Duration::from_secs(10),
                Duration::from_secs(3600)
            )
            .await
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 1);

        let attempts = Arc::new(AtomicUsize::new(0));
        let start = tokio::time::Instant::now();
        let sent = send_until_answered(
            flaky(usize::MAX, attempts.clone()),
            |_| false,
            None,
            Duration::from_secs(10),
            Duration::from_secs(60),
        )
        .await;
        assert!(!sent);
        // Attempts at 0, 1, 3, 7, 15, 25, 35, 45 and 55 s; the next would pass the minute.
        assert_eq!(attempts.load(Ordering::SeqCst), 9);
        assert_eq!(start.elapsed(), Duration::from_secs(55));

        // An error that will not pass (this node stopping) ends it at once.
        let attempts = Arc::new(AtomicUsize::new(0));
        let sent = send_until_answered(
            flaky(usize::MAX, attempts.clone()),
            |e: &String| e == "no connection",
            None,
            Duration::from_secs(10),
            Duration::from_secs(60),
        )
        .await;
        assert!(!sent);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}
