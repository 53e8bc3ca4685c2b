//! JOB_WAIT across nodes, both sides: the waiting node asks each named node to say when the
//! job with a fingerprint has finished there ("register"); that node answers at once if its
//! cache says the job finished, or keeps the registration and says so when it does
//! ("notify"). No request is held open.
//!
//! - [`Waits`], the waiting node: one registration at a time is on its way to a node (none
//!   is sent again before the last is answered or fails); one the node did not take is sent
//!   again [`RETRY`] after, then twice as long after each failure up to [`RETRY_MAX`]; one it
//!   took is sent again when the node is back (it may have restarted and forgotten it) and
//!   every [`REFRESH`] (plus up to [`REFRESH_SPREAD`], so that waits opened together do not
//!   ask at once) until the node has said the job finished, so a wait survives the awaited
//!   node's restart whether or not the waiting node noticed it (a job that the restart
//!   interrupted there is then answered "failed": from how the waiting job's run ended it
//!   there, which the node keeps with the run, or else from its cache).
//! - [`Registrations`], the node waited on: who waits for which fingerprint (a prefix of it
//!   is enough), once per wait whatever came twice, forgotten after [`FORGET`]. A waiter
//!   holds at most [`MAX_REGISTERED_PER_WAITER`]: past that, its registration not sent again
//!   for [`STALE`] (its wait is over) gives its place to the new one, or the new one is
//!   refused, saying why.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use crate::NodeId;

/// A registration a node did not take is sent again this long after ...
pub const RETRY: Duration = Duration::from_secs(2);
/// ... then twice as long after each failure, up to this.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// A registration on its way with no word of it for this long is taken as lost, and sent
/// again: longer than a request takes to time out (30 s).
pub const ANSWER_WAIT: Duration = Duration::from_secs(40);
/// A registration a node took is sent again this often until it says the job finished ...
pub const REFRESH: Duration = Duration::from_secs(15);
/// ... plus up to this much, fixed for each wait and node.
pub const REFRESH_SPREAD: Duration = Duration::from_secs(5);
/// A registration that never fires is forgotten after this long.
pub const FORGET: Duration = Duration::from_secs(24 * 3600);

/// What the node does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Waiting side: ask `to` to say when the job with `fingerprint` has finished there (it
    /// may be this node itself).
    Register {
        wait_id: String,
        fingerprint: String,
        to: NodeId,
        /// The waiting job's run, when it has a job with `fingerprint` for `to`: the wait is
        /// for that job.
        run: Option<String>,
    },
    /// Waiting side: `node` says the awaited job finished there with `state`; the waiting job
    /// hears it (once per node).
    Finished {
        wait_id: String,
        node: NodeId,
        state: String,
    },
    /// Awaited side: tell `waiter` that the job it waits for (`wait_id`) finished here.
    Notify {
        waiter: NodeId,
        wait_id: String,
        state: String,
    },
}

/// Where a wait stands with one of the nodes it asks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Asked {
    /// Registration not taken yet; sent again at `again_at`, and again `backoff` after that
    /// one fails.
    NotTaken {
        again_at: Instant,
        backoff: Duration,
    },
    /// A registration is on its way since `since`: none is sent again until it is answered
    /// or fails (then again `backoff` after), or [`ANSWER_WAIT`] passes.
    Sent { since: Instant, backoff: Duration },
    /// Taken; sent again at this time in case the node forgot it.
    Taken { again_at: Instant },
    /// The node said the job finished.
    Done,
}

impl Asked {
    /// Not taken yet: to be sent at once.
    fn at_once(now: Instant) -> Asked {
        Asked::NotTaken {
            again_at: now,
            backoff: RETRY,
        }
    }

    /// Whether a registration is to be sent now; if so, it is on its way from `now`.
    fn send_if_due(&mut self, now: Instant) -> bool {
        let backoff = match *self {
            Asked::NotTaken { again_at, backoff } if again_at <= now => backoff,
            Asked::Taken { again_at } if again_at <= now => RETRY,
            // No word of the last one for longer than any answer takes: it is lost.
            Asked::Sent { since, backoff } if since + ANSWER_WAIT <= now => longer(backoff),
            _ => return false,
        };
        *self = Asked::Sent {
            since: now,
            backoff,
        };
        true
    }
}

/// The wait after a failure when `backoff` was waited after the one before: twice that, up
/// to [`RETRY_MAX`].
fn longer(backoff: Duration) -> Duration {
    (backoff * 2).min(RETRY_MAX)
}

struct Wait {
    fingerprint: String,
    nodes: HashMap<NodeId, Asked>,
    /// The nodes for which the waiting job's own run has the awaited job, with that run.
    in_run: HashMap<NodeId, String>,
}

/// The waiting node's JOB_WAITs in progress.
#[derive(Default)]
pub struct Waits {
    waits: HashMap<String, Wait>,
}

impl Waits {
    pub fn is_empty(&self) -> bool {
        self.waits.is_empty()
    }

    /// A JOB_WAIT starts: every node in `nodes` is asked at once, each with the waiting job's
    /// run if that run has the awaited job for it.
    pub fn open(
        &mut self,
        wait_id: &str,
        fingerprint: &str,
        nodes: Vec<(NodeId, Option<String>)>,
        now: Instant,
    ) -> Vec<Action> {
        let mut asked = HashMap::new();
        let mut in_run = HashMap::new();
        for (node, run) in nodes {
            if let Some(run) = run {
                in_run.insert(node.clone(), run);
            }
            asked.insert(node, Asked::at_once(now));
        }
        self.waits.insert(
            wait_id.to_string(),
            Wait {
                fingerprint: fingerprint.to_string(),
                nodes: asked,
                in_run,
            },
        );
        self.tick(now)
    }

    /// The waiting job is over (all nodes said, it timed out, or it was dropped).
    pub fn close(&mut self, wait_id: &str) {
        self.waits.remove(wait_id);
    }

    /// `node` took the registration.
    pub fn taken(&mut self, wait_id: &str, node: &NodeId, now: Instant) {
        if let Some(asked) = self.asked(wait_id, node)
            && matches!(asked, Asked::NotTaken { .. } | Asked::Sent { .. })
        {
            *asked = Asked::Taken {
                again_at: now + refresh_after(wait_id, node),
            };
        }
    }

    /// The registration on its way to `node` failed (no answer, or refused): it is sent
    /// again after a while, longer after each failure.
    pub fn not_taken(&mut self, wait_id: &str, node: &NodeId, now: Instant) {
        if let Some(asked) = self.asked(wait_id, node)
            && let Asked::Sent { backoff, .. } = *asked
        {
            *asked = Asked::NotTaken {
                again_at: now + backoff,
                backoff: longer(backoff),
            };
        }
    }

    /// Where the wait `wait_id` stands with `node`.
    fn asked(&mut self, wait_id: &str, node: &NodeId) -> Option<&mut Asked> {
        self.waits.get_mut(wait_id)?.nodes.get_mut(node)
    }

    /// `node` says the awaited job finished there.
    pub fn done(&mut self, wait_id: &str, node: &NodeId, state: String) -> Vec<Action> {
        match self
            .waits
            .get_mut(wait_id)
            .and_then(|w| w.nodes.get_mut(node))
        {
            Some(asked) if *asked != Asked::Done => {
                *asked = Asked::Done;
                vec![Action::Finished {
                    wait_id: wait_id.to_string(),
                    node: node.clone(),
                    state,
                }]
            }
            _ => vec![],
        }
    }

    /// `node` is back (after expiring, leaving or restarting): what it took, it may have
    /// forgotten; it is asked again now, or, with a registration on its way, soon after that
    /// one fails.
    pub fn node_back(&mut self, node: &NodeId, now: Instant) -> Vec<Action> {
        for w in self.waits.values_mut() {
            match w.nodes.get_mut(node) {
                Some(Asked::Sent { backoff, .. }) => *backoff = RETRY,
                Some(asked) if *asked != Asked::Done => *asked = Asked::at_once(now),
                _ => {}
            }
        }
        self.tick(now)
    }

    /// Registrations due to be sent (again), by wait and node.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut due = Vec::new();
        for (wait_id, w) in &mut self.waits {
            for (node, asked) in &mut w.nodes {
                if !asked.send_if_due(now) {
                    continue;
                }
                let run = w.in_run.get(node).cloned();
                due.push((wait_id.clone(), node.clone(), w.fingerprint.clone(), run));
            }
        }
        // In a fixed order, for the simulator and the tests.
        due.sort_by(|a, b| (&a.0, &a.1.0).cmp(&(&b.0, &b.1.0)));
        due.into_iter()
            .map(|(wait_id, to, fingerprint, run)| Action::Register {
                wait_id,
                fingerprint,
                to,
                run,
            })
            .collect()
    }
}

/// How long after it was taken a registration is sent again: [`REFRESH`] plus a share of
/// [`REFRESH_SPREAD`] drawn from the wait and the node (a hash: the same every time and with
/// every build, so the simulator stays deterministic).
fn refresh_after(wait_id: &str, node: &NodeId) -> Duration {
    let mut h = blake3::Hasher::new();
    h.update(wait_id.as_bytes());
    h.update(&[0]);
    h.update(node.0.as_bytes());
    let bytes: [u8; 8] = h.finalize().as_bytes()[..8].try_into().unwrap_or([0; 8]);
    let spread = REFRESH_SPREAD.as_millis() as u64;
    REFRESH + Duration::from_millis(u64::from_le_bytes(bytes) % spread.max(1))
}

/// What the node waited on knows of the awaited job when a registration comes, for
/// [`answer_now`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AwaitedHere {
    /// The registration names the waiter's run, which this node has not taken in yet: that
    /// run's job is still to come.
    RunNotTaken,
    /// The registration names the waiter's run, taken in here: how its first job with the
    /// fingerprint ended (`Some(true)`: not failed; `None`: not ended, or its outcome was not
    /// kept), and whether a job of it with the fingerprint is queued or running.
    InRun { ended: Option<bool>, pending: bool },
    /// The registration names no run: whether any job with the fingerprint is queued or
    /// running here.
    Any { pending: bool },
}

/// What a wait of a run is told when the run's job ended here but how is not known (the run
/// was taken in by a release that kept no outcomes, and the cache has none of the job).
pub const ENDED_UNKNOWN: &str = "ended (how was not kept)";

/// The state a registration is answered with at once, or `None` to keep it until the job
/// finishes here. The run's own job answers a wait of that run (not an earlier run's outcome,
/// nor a later job of the run queued behind the wait); a job queued or running is waited for
/// (a run again waits for its new run); else the node's `cached` outcome answers. A run
/// taken in here with its job neither pending nor ended has ended it all the same (its jobs
/// here were queued as it came): without an outcome, [`ENDED_UNKNOWN`] says so, rather than
/// keep the wait to its timeout for a job that will not run.
pub fn answer_now(
    here: AwaitedHere,
    cached: impl FnOnce() -> Option<&'static str>,
) -> Option<&'static str> {
    match here {
        AwaitedHere::RunNotTaken => None,
        AwaitedHere::InRun {
            ended: Some(ok), ..
        } => Some(if ok { "success" } else { "failed" }),
        AwaitedHere::InRun { pending: true, .. } | AwaitedHere::Any { pending: true } => None,
        AwaitedHere::InRun { .. } => cached().or(Some(ENDED_UNKNOWN)),
        AwaitedHere::Any { .. } => cached(),
    }
}

struct Registered {
    fingerprint: String,
    /// Only the awaited job of this run answers it.
    run: Option<String>,
    since: Instant,
}

/// The waits other nodes (or this one) registered here, by wait and waiter (in that order,
/// so what they are told comes out in a fixed order).
#[derive(Default)]
pub struct Registrations {
    registered: BTreeMap<(String, NodeId), Registered>,
    /// When registrations older than [`FORGET`] are next looked for.
    next_prune: Option<Instant>,
}

/// How often [`Registrations::register`] looks for registrations to forget.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Most waits one node may have registered here at once: a JOB_WAIT job registers one per
/// node it names, so a real waiter needs a few; a member sending registrations without end
/// would otherwise grow this node's memory for a day each.
pub const MAX_REGISTERED_PER_WAITER: usize = 4096;

/// A registration its waiter has not sent again for this long is of a wait that is over (a
/// live one is sent again every [`REFRESH`] plus up to [`REFRESH_SPREAD`], 20 s at most):
/// it gives its place when the waiter holds [`MAX_REGISTERED_PER_WAITER`].
pub const STALE: Duration = Duration::from_secs(60);

impl Registrations {
    pub fn len(&self) -> usize {
        self.registered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.registered.is_empty()
    }

    /// `waiter` wants to know when the job with `fingerprint` (of `run`, if given) has
    /// finished here; `finished_state` is what this node's cache says of that job now, if it
    /// answers the wait. A registration sent again is one entry, kept [`FORGET`] from its last
    /// copy. Refused, with the reason for the waiter, when the waiter holds
    /// [`MAX_REGISTERED_PER_WAITER`] registrations all sent again within [`STALE`].
    pub fn try_register(
        &mut self,
        wait_id: &str,
        fingerprint: &str,
        run: Option<&str>,
        waiter: &NodeId,
        finished_state: Option<&str>,
        now: Instant,
    ) -> Result<Vec<Action>, String> {
        if let Some(state) = finished_state {
            return Ok(vec![Action::Notify {
                waiter: waiter.clone(),
                wait_id: wait_id.to_string(),
                state: state.to_string(),
            }]);
        }
        self.prune(now);
        let key = (wait_id.to_string(), waiter.clone());
        if !self.registered.contains_key(&key) {
            self.make_room(waiter, now)?;
        }
        self.registered.insert(
            key,
            Registered {
                fingerprint: fingerprint.to_string(),
                run: run.map(str::to_string),
                since: now,
            },
        );
        Ok(vec![])
    }

    /// As [`Registrations::try_register`], for a caller with no way to pass a refusal on: a
    /// registration refused is left out.
    pub fn register(
        &mut self,
        wait_id: &str,
        fingerprint: &str,
        run: Option<&str>,
        waiter: &NodeId,
        finished_state: Option<&str>,
        now: Instant,
    ) -> Vec<Action> {
        self.try_register(wait_id, fingerprint, run, waiter, finished_state, now)
            .unwrap_or_default()
    }

    /// What outlived its use goes, now and then, not only when a job finishes here.
    fn prune(&mut self, now: Instant) {
        if self.next_prune.is_none_or(|at| at <= now) {
            self.next_prune = Some(now + PRUNE_EVERY);
            self.registered
                .retain(|_, r| now.saturating_duration_since(r.since) < FORGET);
        }
    }

    /// Room for one more registration of `waiter`: when it holds
    /// [`MAX_REGISTERED_PER_WAITER`], the one it sent again least recently goes if that was
    /// [`STALE`] ago; else the reason it is refused.
    fn make_room(&mut self, waiter: &NodeId, now: Instant) -> Result<(), String> {
        if self.registered.len() < MAX_REGISTERED_PER_WAITER {
            return Ok(());
        }
        let mut held = 0;
        let mut oldest: Option<(&(String, NodeId), Instant)> = None;
        for (key, r) in self.registered.iter().filter(|((_, w), _)| w == waiter) {
            held += 1;
            if oldest.is_none_or(|(_, since)| r.since < since) {
                oldest = Some((key, r.since));
            }
        }
        if held < MAX_REGISTERED_PER_WAITER {
            return Ok(());
        }
        match oldest {
            Some((key, since)) if now.saturating_duration_since(since) >= STALE => {
                let key = key.clone();
                self.registered.remove(&key);
                Ok(())
            }
            _ => Err(format!(
                "this node holds {MAX_REGISTERED_PER_WAITER} waits registered by the waiting \
                 node, each sent again within the last {} s: no more until one of them ends",
                STALE.as_secs()
            )),
        }
    }

    /// A job with `fingerprint` of `run` finished here with `state`: every wait for it (or
    /// for a prefix of it) is told, and forgotten, except those for the job of another run.
    pub fn finished(
        &mut self,
        fingerprint: &str,
        run: &str,
        state: &str,
        now: Instant,
    ) -> Vec<Action> {
        self.tell(fingerprint, run, state, now, true)
    }

    /// A job with `fingerprint` of `run` was refused here (never run): only the waits for the
    /// job of that very run are told it failed. A wait for the job of any run is not: a
    /// refused member's run must not end the waits of the runs this node takes.
    pub fn refused(&mut self, fingerprint: &str, run: &str, now: Instant) -> Vec<Action> {
        self.tell(fingerprint, run, "failed", now, false)
    }

    fn tell(
        &mut self,
        fingerprint: &str,
        run: &str,
        state: &str,
        now: Instant,
        any_run_too: bool,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        self.registered.retain(|(wait_id, waiter), r| {
            let of_this_run = match &r.run {
                Some(of) => of == run,
                None => any_run_too,
            };
            if fingerprint.starts_with(&r.fingerprint) && of_this_run {
                actions.push(Action::Notify {
                    waiter: waiter.clone(),
                    wait_id: wait_id.clone(),
                    state: state.to_string(),
                });
                false
            } else {
                now.saturating_duration_since(r.since) < FORGET
            }
        });
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeId {
        NodeId(s.into())
    }

    fn registered_with(actions: &[Action]) -> Vec<NodeId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Register { to, .. } => Some(to.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn registrations_are_sent_again_until_taken_then_refreshed_until_done() {
        let t0 = Instant::now();
        let mut w = Waits::default();
        let a = w.open("w", "fp", vec![(n("a"), None), (n("b"), None)], t0);
        assert_eq!(registered_with(&a), vec![n("a"), n("b")]);
        w.taken("w", &n("a"), t0);
        w.not_taken("w", &n("b"), t0);
        // Within the retry nothing; then only b, which did not take it.
        assert!(w.tick(t0 + RETRY / 2).is_empty());
        assert_eq!(registered_with(&w.tick(t0 + RETRY)), vec![n("b")]);
        // a says done; b took it: b alone is asked again at the refresh, and only then.
        let a = w.done("w", &n("a"), "success".into());
        assert_eq!(
            a,
            vec![Action::Finished {
                wait_id: "w".into(),
                node: n("a"),
                state: "success".into()
            }]
        );
        assert!(w.done("w", &n("a"), "success".into()).is_empty());
        w.taken("w", &n("b"), t0 + RETRY);
        assert!(
            w.tick(t0 + RETRY + REFRESH - Duration::from_millis(1))
                .is_empty()
        );
        let later = t0 + RETRY + REFRESH + REFRESH_SPREAD;
        assert_eq!(registered_with(&w.tick(later)), vec![n("b")]);
        w.close("w");
        assert!(w.is_empty());
    }

    /// A registration on its way is not sent again until it is answered or fails; after
    /// each failure it waits twice as long as after the last, up to [`RETRY_MAX`].
    #[test]
    fn a_registration_on_its_way_is_not_sent_again() {
        let t0 = Instant::now();
        let mut w = Waits::default();
        let a = w.open("w", "fp", vec![(n("a"), None)], t0);
        assert_eq!(registered_with(&a), vec![n("a")]);
        let mut at = t0 + Duration::from_secs(29);
        assert!(w.tick(at).is_empty());
        let mut waited = Vec::new();
        for _ in 0..6 {
            w.not_taken("w", &n("a"), at);
            let failed = at;
            while w.tick(at).is_empty() {
                at += Duration::from_secs(1);
            }
            waited.push((at - failed).as_secs());
            // On its way again: held back as long as it is.
            assert!(w.tick(at + RETRY_MAX).is_empty());
        }
        assert_eq!(waited, [2, 4, 8, 16, 30, 30]);
        // Taken: sent again at the refresh only; a failure of that one waits the least again.
        w.taken("w", &n("a"), at);
        let refresh = at + REFRESH + REFRESH_SPREAD;
        assert_eq!(registered_with(&w.tick(refresh)), vec![n("a")]);
        w.not_taken("w", &n("a"), refresh);
        assert_eq!(registered_with(&w.tick(refresh + RETRY)), vec![n("a")]);
        // No word of it at all: taken as lost after the longest an answer takes.
        let lost = refresh + RETRY;
        assert!(w.tick(lost + ANSWER_WAIT / 2).is_empty());
        assert_eq!(registered_with(&w.tick(lost + ANSWER_WAIT)), vec![n("a")]);
    }

    #[test]
    fn waits_opened_together_do_not_refresh_together() {
        let at: Vec<Duration> = (0..20)
            .map(|i| refresh_after(&format!("wait-{i}"), &n("a")))
            .collect();
        assert!(
            at.iter()
                .all(|d| *d >= REFRESH && *d < REFRESH + REFRESH_SPREAD)
        );
        let mut distinct = at.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 10, "{at:?}");
        assert_eq!(refresh_after("wait-0", &n("a")), at[0]);
    }

    #[test]
    fn a_node_back_is_asked_again_at_once_unless_it_said_done() {
        let t0 = Instant::now();
        let mut w = Waits::default();
        w.open("w", "fp", vec![(n("a"), None), (n("b"), None)], t0);
        w.taken("w", &n("a"), t0);
        w.taken("w", &n("b"), t0);
        w.done("w", &n("b"), "failed".into());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(registered_with(&w.node_back(&n("a"), t1)), vec![n("a")]);
        // Back again while that one is on its way: none more; if it fails, soon after.
        assert!(w.node_back(&n("a"), t1).is_empty());
        w.not_taken("w", &n("a"), t1);
        assert_eq!(registered_with(&w.tick(t1 + RETRY)), vec![n("a")]);
        assert!(w.node_back(&n("b"), t1).is_empty());
        assert!(w.node_back(&n("z"), t1).is_empty());
    }

    #[test]
    fn a_node_tells_every_waiter_once_and_at_once_if_the_job_already_finished() {
        let t0 = Instant::now();
        let mut r = Registrations::default();
        assert!(r.register("w1", "ab", None, &n("x"), None, t0).is_empty());
        // Registered twice (sent again): still one entry.
        assert!(r.register("w1", "ab", None, &n("x"), None, t0).is_empty());
        assert!(r.register("w2", "abcd", None, &n("y"), None, t0).is_empty());
        assert_eq!(r.len(), 2);
        assert!(r.finished("zz", "r1", "success", t0).is_empty());
        let a = r.finished("abcdef", "r1", "success", t0);
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(r.is_empty());
        // Already finished here: told at once, nothing kept.
        let a = r.register("w3", "ab", None, &n("x"), Some("failed"), t0);
        assert_eq!(
            a,
            vec![Action::Notify {
                waiter: n("x"),
                wait_id: "w3".into(),
                state: "failed".into()
            }]
        );
        assert!(r.is_empty());
        // A registration that never fires is forgotten.
        r.register("w4", "cd", None, &n("x"), None, t0);
        r.register("w5", "ef", None, &n("x"), None, t0 + FORGET);
        assert_eq!(r.len(), 1);
        assert!(r.finished("cd", "r1", "success", t0 + FORGET).is_empty());
    }

    #[test]
    fn a_wait_for_a_job_of_its_own_run_is_answered_by_that_job_only() {
        let t0 = Instant::now();
        let mut w = Waits::default();
        let a = w.open(
            "w",
            "ab",
            vec![(n("a"), Some("r2".into())), (n("b"), None)],
            t0,
        );
        let runs: Vec<(NodeId, Option<String>)> = a
            .iter()
            .filter_map(|a| match a {
                Action::Register { to, run, .. } => Some((to.clone(), run.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(runs, vec![(n("a"), Some("r2".into())), (n("b"), None)]);
        let mut r = Registrations::default();
        r.register("w", "ab", Some("r2"), &n("x"), None, t0);
        r.register("v", "ab", None, &n("y"), None, t0);
        // The same job of another run answers only the wait that names no run.
        let told = r.finished("abcd", "r1", "success", t0);
        assert_eq!(
            told,
            vec![Action::Notify {
                waiter: n("y"),
                wait_id: "v".into(),
                state: "success".into()
            }]
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r.finished("abcd", "r2", "failed", t0).len(), 1);
        assert!(r.is_empty());
    }

    /// A job refused here (never run) answers only the waits for the job of its own run; a
    /// wait for the job of any run goes on waiting for one that runs.
    #[test]
    fn a_refused_job_answers_only_the_waits_of_its_own_run() {
        let t0 = Instant::now();
        let mut r = Registrations::default();
        r.register("own", "ab", Some("refused-run"), &n("x"), None, t0);
        r.register("any", "ab", None, &n("y"), None, t0);
        r.register("other", "ab", Some("r2"), &n("z"), None, t0);
        let told = r.refused("abcd", "refused-run", t0);
        assert_eq!(
            told,
            vec![Action::Notify {
                waiter: n("x"),
                wait_id: "own".into(),
                state: "failed".into()
            }]
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r.finished("abcd", "r2", "success", t0).len(), 2);
    }

    /// One waiter may hold only so many registrations; others still register, and a wait
    /// registered before is refreshed.
    #[test]
    fn a_waiter_holds_a_bounded_number_of_registrations() {
        let t0 = Instant::now();
        let mut r = Registrations::default();
        for i in 0..MAX_REGISTERED_PER_WAITER + 10 {
            r.register(&format!("w{i}"), "ab", None, &n("flood"), None, t0);
        }
        assert_eq!(r.len(), MAX_REGISTERED_PER_WAITER);
        r.register("w0", "ab", None, &n("flood"), None, t0);
        r.register("real", "ab", None, &n("other"), None, t0);
        assert_eq!(r.len(), MAX_REGISTERED_PER_WAITER + 1);
        let told = r.finished("abcd", "r1", "success", t0);
        assert_eq!(told.len(), MAX_REGISTERED_PER_WAITER + 1);
    }

    /// A waiter's registrations not refreshed for long (their waits are over: timed out, or
    /// the waiter gone) make room for its new one rather than leave it out.
    #[test]
    fn a_new_registration_takes_the_place_of_one_not_refreshed_for_long() {
        let t0 = Instant::now();
        let mut r = Registrations::default();
        for i in 0..MAX_REGISTERED_PER_WAITER {
            r.register(&format!("old{i}"), "ab", None, &n("x"), None, t0);
        }
        let later = t0 + Duration::from_secs(3600);
        r.register("new", "ab", None, &n("x"), None, later);
        assert_eq!(r.len(), MAX_REGISTERED_PER_WAITER);
        let told = r.finished("abcd", "r1", "success", later);
        assert!(
            told.iter()
                .any(|a| matches!(a, Action::Notify { wait_id, .. } if wait_id == "new")),
            "the new registration was left out"
        );
    }

    /// While every registration a waiter holds is sent again within [`STALE`], a new one is
    /// refused, saying why, rather than taken and left out; one it holds is still refreshed.
    #[test]
    fn a_new_registration_is_refused_while_the_waiter_holds_the_most_live_ones() {
        let t0 = Instant::now();
        let mut r = Registrations::default();
        for i in 0..MAX_REGISTERED_PER_WAITER {
            r.try_register(&format!("w{i}"), "ab", None, &n("x"), None, t0)
                .unwrap();
        }
        let soon = t0 + STALE - Duration::from_secs(1);
        let refused = r.try_register("new", "ab", None, &n("x"), None, soon);
        assert!(
            refused
                .unwrap_err()
                .contains("registered by the waiting node")
        );
        assert!(
            r.try_register("w0", "ab", None, &n("x"), None, soon)
                .is_ok()
        );
        // w0, refreshed, stays; w1, not sent again for long, gives its place.
        let later = t0 + STALE;
        assert!(
            r.try_register("new", "ab", None, &n("x"), None, later)
                .is_ok()
        );
        let told: Vec<String> = r
            .finished("abcd", "r1", "success", later)
            .into_iter()
            .filter_map(|a| match a {
                Action::Notify { wait_id, .. } => Some(wait_id),
                _ => None,
            })
            .collect();
        assert_eq!(told.len(), MAX_REGISTERED_PER_WAITER);
        assert!(told.iter().any(|w| w == "w0") && told.iter().any(|w| w == "new"));
        assert!(!told.iter().any(|w| w == "w1"));
    }

    #[test]
    fn a_registration_is_answered_at_once_only_by_what_it_waits_for() {
        use AwaitedHere::*;
        let cached = || Some("success");
        assert_eq!(answer_now(RunNotTaken, cached), None);
        // The run's own job ended: it answers, whatever the cache says and even with a later
        // job of the run pending.
        let ended = |ok| InRun {
            ended: Some(ok),
            pending: true,
        };
        assert_eq!(answer_now(ended(false), cached), Some("failed"));
        assert_eq!(answer_now(ended(true), || None), Some("success"));
        let waiting = InRun {
            ended: None,
            pending: true,
        };
        assert_eq!(answer_now(waiting, cached), None);
        let forgotten = InRun {
            ended: None,
            pending: false,
        };
        assert_eq!(answer_now(forgotten, cached), Some("success"));
        assert_eq!(answer_now(forgotten, || None), Some(ENDED_UNKNOWN));
        assert_eq!(answer_now(Any { pending: true }, cached), None);
        assert_eq!(
            answer_now(Any { pending: false }, || Some("failed")),
            Some("failed")
        );
        assert_eq!(answer_now(Any { pending: false }, || None), None);
    }
}
