//! JOB_WAIT across nodes, both sides: the waiting node asks each named node to say when the
//! job with a fingerprint has finished there ("register"); that node answers at once if its
//! cache says the job finished, or keeps the registration and says so when it does
//! ("notify"). No request is held open.
//!
//! - [`Waits`], the waiting node: a registration a node did not take is sent again every
//!   [`RETRY`]; one it took is sent again when the node is back (it may have restarted and
//!   forgotten it) and every [`REFRESH`] (plus up to [`REFRESH_SPREAD`], so that waits opened
//!   together do not ask at once) until the node has said the job finished, so a wait
//!   survives the awaited node's restart whether or not the waiting node noticed it (a job
//!   that the restart interrupted there is then answered "failed" from the node's cache).
//! - [`Registrations`], the node waited on: who waits for which fingerprint (a prefix of it
//!   is enough), once per wait whatever came twice, forgotten after [`FORGET`].

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use crate::NodeId;

/// A registration a node did not take is sent again this often.
pub const RETRY: Duration = Duration::from_secs(2);
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
    /// Registration not taken yet; sent again at this time.
    NotTaken { again_at: Instant },
    /// Taken; sent again at this time in case the node forgot it.
    Taken { again_at: Instant },
    /// The node said the job finished.
    Done,
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
            asked.insert(node, Asked::NotTaken { again_at: now });
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
        if let Some(asked) = self
            .waits
            .get_mut(wait_id)
            .and_then(|w| w.nodes.get_mut(node))
            && matches!(asked, Asked::NotTaken { .. })
        {
            *asked = Asked::Taken {
                again_at: now + refresh_after(wait_id, node),
            };
        }
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
    /// forgotten; it is asked again now.
    pub fn node_back(&mut self, node: &NodeId, now: Instant) -> Vec<Action> {
        for w in self.waits.values_mut() {
            if let Some(asked) = w.nodes.get_mut(node)
                && *asked != Asked::Done
            {
                *asked = Asked::NotTaken { again_at: now };
            }
        }
        self.tick(now)
    }

    /// Registrations due to be sent (again), by wait and node.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut due = Vec::new();
        for (wait_id, w) in &mut self.waits {
            for (node, asked) in &mut w.nodes {
                let again = match asked {
                    Asked::NotTaken { again_at } if *again_at <= now => now + RETRY,
                    Asked::Taken { again_at } if *again_at <= now => {
                        now + refresh_after(wait_id, node)
                    }
                    _ => continue,
                };
                match asked {
                    Asked::NotTaken { again_at } | Asked::Taken { again_at } => *again_at = again,
                    Asked::Done => {}
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
    /// fingerprint ended (`Some(true)`: not failed; `None`: not ended, or ended before a
    /// restart here, whose outcomes are not kept), and whether a job of it with the
    /// fingerprint is queued or running.
    InRun { ended: Option<bool>, pending: bool },
    /// The registration names no run: whether any job with the fingerprint is queued or
    /// running here.
    Any { pending: bool },
}

/// The state a registration is answered with at once, or `None` to keep it until the job
/// finishes here. The run's own job answers a wait of that run (not an earlier run's outcome,
/// nor a later job of the run queued behind the wait); a job queued or running is waited for
/// (a run again waits for its new run); else the node's `cached` outcome answers.
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
        AwaitedHere::InRun { .. } | AwaitedHere::Any { .. } => cached(),
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
    /// copy.
    pub fn register(
        &mut self,
        wait_id: &str,
        fingerprint: &str,
        run: Option<&str>,
        waiter: &NodeId,
        finished_state: Option<&str>,
        now: Instant,
    ) -> Vec<Action> {
        if let Some(state) = finished_state {
            return vec![Action::Notify {
                waiter: waiter.clone(),
                wait_id: wait_id.to_string(),
                state: state.to_string(),
            }];
        }
        // What outlived its use goes, now and then, not only when a job finishes here.
        if self.next_prune.is_none_or(|at| at <= now) {
            self.next_prune = Some(now + PRUNE_EVERY);
            self.registered
                .retain(|_, r| now.saturating_duration_since(r.since) < FORGET);
        }
        let key = (wait_id.to_string(), waiter.clone());
        if !self.registered.contains_key(&key)
            && self.registered.len() >= MAX_REGISTERED_PER_WAITER
            && self.registered.keys().filter(|(_, w)| w == waiter).count()
                >= MAX_REGISTERED_PER_WAITER
        {
            return vec![];
        }
        self.registered.insert(
            key,
            Registered {
                fingerprint: fingerprint.to_string(),
                run: run.map(str::to_string),
                since: now,
            },
        );
        vec![]
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
        assert_eq!(answer_now(Any { pending: true }, cached), None);
        assert_eq!(
            answer_now(Any { pending: false }, || Some("failed")),
            Some("failed")
        );
        assert_eq!(answer_now(Any { pending: false }, || None), None);
    }
}
