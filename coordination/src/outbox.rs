//! The result outbox of a target: every result reaches its originator, eventually.
//!
//! Sans-IO. Results queue per originator; one batch per originator is in flight at a time
//! (which batches naturally under load and keeps latency low when idle). When the node says
//! more results of the same run are coming soon, a result waits up to [`LINGER`] for company,
//! so a long run of short jobs travels in a few large batches; the last result of a run never
//! waits. A batch that fails
//! goes back to the front of its queue and is retried with backoff, for as long as it takes:
//! an originator that is down gets its results when it comes back, at once when the node sees
//! it alive again ([`Input::Back`]) rather than at the end of a long backoff. The node keeps every queued
//! result on disk until [`Action::Delivered`] says it may forget it. Only the size of what
//! waits for an originator gone for good is bounded: once every try to it has failed for
//! [`SLIM_AFTER_FAILING`], results older than the node's record retention lose their output
//! ([`Input::Expire`], [`Action::Slimmed`]) and keep their state, times and ids, so the
//! originator, should it come back, still learns how each job ended, and the run stays
//! remembered here (never run twice).
//!
//! An originator may answer that it has no trace of a result's run
//! ([`crate::message::JobReply::UnknownRuns`]): another daemon with its identity (a copy of
//! its state directory on another machine) took the connection, or it forgot the run (purged,
//! or past its record retention). Such results are kept and offered again with the same
//! backoff, so they reach the daemon that submitted the run once a try gets to it; they are
//! given up ([`Input::Unknown`]) only when every answer about their run for
//! [`GIVE_UP_UNKNOWN_AFTER`] said so and they are [`UNKNOWN_KEPT_AT_LEAST`] old, so results
//! of a run their submitter forgot are not offered to it for ever.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::message::{JobResult, NodeId};

/// Most results in one batch.
pub const MAX_BATCH: usize = 256;
/// Most bytes of output in one batch (a batch travels as one message of at most 8 MiB; a
/// single result is always sent, its output being capped by the executor).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How long a result waits for more when more are coming.
pub const LINGER: Duration = Duration::from_millis(20);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long every try to an originator must have failed, in this process's life, before
/// the output of its old results is dropped ([`Input::Expire`]).
pub const SLIM_AFTER_FAILING: Duration = Duration::from_secs(3600);
/// A result whose output and info take less than this is kept whole whatever its age.
const SLIM_ABOVE: usize = 1024;
/// How a result whose output was dropped begins its stdout.
pub const OUTPUT_NOT_KEPT: &str = "[output not kept: ";
/// How long every answer about a run must have been that its originator has no trace of it
/// (with nothing of it taken meanwhile), in this process's life, before its results are given
/// up ([`Input::Unknown`]). With a copy of the originator answering for it, tries reach either
/// daemon: an hour of tries (every 30 s at most) that all reach the copy is not chance.
pub const GIVE_UP_UNKNOWN_AFTER: Duration = Duration::from_secs(3600);
/// The age a result of a run its originator has no trace of must have reached before it is
/// given up: the daemon that submitted the run may be down while a copy of it answers, and
/// gets what it is owed when it comes back within a day.
pub const UNKNOWN_KEPT_AT_LEAST: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A result to deliver to `to` (already handed to the node's store). `more_coming`: other
    /// jobs of the same run are still queued here.
    Add {
        to: NodeId,
        result: JobResult,
        more_coming: bool,
    },
    /// The batch in flight to `to` was taken (`ok`) or failed.
    Sent {
        to: NodeId,
        ok: bool,
    },
    /// The batch in flight to `to` was answered: taken, but for the results of `runs`, of
    /// which `to` has no trace ([`crate::message::JobReply::UnknownRuns`]). Those stay queued
    /// and are offered again with backoff, as after a failed try; they are given up (and
    /// reported [`Action::Delivered`]) once every answer about their run for
    /// [`GIVE_UP_UNKNOWN_AFTER`] was this one and they are [`UNKNOWN_KEPT_AT_LEAST`] old.
    Unknown {
        to: NodeId,
        runs: Vec<String>,
    },
    Tick,
    /// A result to deliver to `to` that this node held on disk when it started, `age` old (by
    /// the boot clock if it was put there in this boot, else by the wall clock from its
    /// finish time).
    Restored {
        to: NodeId,
        result: JobResult,
        age: Duration,
    },
    /// `to` is alive again (back after it expired, left or restarted): retry now.
    Back {
        to: NodeId,
    },
    /// From now on, drop the output of results older than `retention` whose originator has
    /// taken nothing for [`SLIM_AFTER_FAILING`] (now, and whenever a try fails). A result's age
    /// goes by the monotonic clock from when it was added (a wall clock stepped forward while
    /// the node runs does not make a fresh result look old).
    Expire {
        retention: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send these results to `to`, then report [`Input::Sent`].
    Send { to: NodeId, results: Vec<JobResult> },
    /// These results reached their originator, or were given up after it said for long
    /// enough that it has no trace of their run ([`Input::Unknown`]); the node may delete them
    /// from disk.
    Delivered(Vec<JobResult>),
    /// These results, for `to`, lost their output (see [`Input::Expire`]): the node writes
    /// them over their old selves on disk and says so in its log. They stay queued.
    Slimmed { to: NodeId, results: Vec<JobResult> },
}

/// What waits for one originator, as `status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Owed {
    pub to: NodeId,
    /// Results waiting or in flight.
    pub results: usize,
    /// How long every try has failed (`None`: the last one did not fail).
    pub failing_for: Option<Duration>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<JobResult>,
    in_flight: Option<Vec<JobResult>>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Hold the waiting results until then (more are coming).
    linger_until: Option<Instant>,
    /// The first of the failed tries since the last one that succeeded.
    failing_since: Option<Instant>,
    /// Results of runs the originator answered it has no trace of ([`Input::Unknown`]):
    /// offered again, after their own backoff, only when nothing else waits, so they never
    /// hold up the results it does take.
    unknown: VecDeque<JobResult>,
    unknown_retry_at: Option<Instant>,
    unknown_backoff: Duration,
}

impl Queue {
    /// Whether results of `run_id` wait here or are in flight.
    fn holds(&self, run_id: &str) -> bool {
        self.waiting
            .iter()
            .chain(self.in_flight.iter().flatten())
            .chain(&self.unknown)
            .any(|r| r.run_id == run_id)
    }

    /// Results waiting or in flight.
    fn len(&self) -> usize {
        self.waiting.len() + self.in_flight.as_ref().map_or(0, Vec::len) + self.unknown.len()
    }

    /// Whether anything is left to send or to hear about.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `results`, of runs the originator has no trace of, wait apart for their next offer.
    fn unknown_kept(&mut self, results: Vec<JobResult>, now: Instant) {
        self.unknown.extend(results);
        self.unknown_backoff = next_backoff(self.unknown_backoff);
        self.unknown_retry_at = Some(now + self.unknown_backoff);
    }

    /// Whether the results of unknown runs are to be offered at `now`: nothing else waits,
    /// the originator is not being waited out, and their own backoff is over.
    fn unknown_due(&self, now: Instant) -> bool {
        !self.unknown.is_empty()
            && self.waiting.is_empty()
            && self.retry_at.is_none_or(|t| t <= now)
            && self.unknown_retry_at.is_none_or(|t| t <= now)
    }

    /// The originator answered and kept nothing back: no more waiting between tries.
    fn taken(&mut self) {
        self.backoff = Duration::ZERO;
        self.retry_at = None;
        self.failing_since = None;
    }

    /// `results` were not taken: back to the front, in order, offered again after the backoff.
    fn failed(&mut self, results: Vec<JobResult>, now: Instant) {
        self.failing_since.get_or_insert(now);
        for r in results.into_iter().rev() {
            self.waiting.push_front(r);
        }
        self.backoff = next_backoff(self.backoff);
        self.retry_at = Some(now + self.backoff);
    }
}

/// The wait after `backoff` before the next try: [`FIRST_RETRY`], doubling up to [`MAX_RETRY`].
fn next_backoff(backoff: Duration) -> Duration {
    if backoff.is_zero() {
        FIRST_RETRY
    } else {
        (backoff * 2).min(MAX_RETRY)
    }
}

/// Results waiting for their originators.
#[derive(Default)]
pub struct Outbox {
    queues: BTreeMap<NodeId, Queue>,
    /// When each queued result was added, by (run, job), and how old it was then.
    added: HashMap<(String, String), (Instant, Duration)>,
    /// Output of results older than this is dropped once their originator has taken nothing
    /// for [`SLIM_AFTER_FAILING`] (set by [`Input::Expire`]).
    slim_older_than: Option<Duration>,
    /// Runs whose originator answered that it has no trace of them, since when (the first
    /// such answer since it last took a result of the run).
    unknown_since: HashMap<String, Instant>,
}

fn key(r: &JobResult) -> (String, String) {
    (r.run_id.clone(), r.outcome.job_id.clone())
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Results not yet delivered (waiting or in flight).
    pub fn pending(&self) -> usize {
        self.queues.values().map(Queue::len).sum()
    }

    /// Whether nothing is due before `until`: no batch waits to be sent before then (a batch in
    /// flight is over when its answer comes, not at a time). An originator that has been
    /// down for a while is retried every [`MAX_RETRY`], which a node may wait for at leisure.
    pub fn quiet_until(&self, until: Instant) -> bool {
        self.queues.values().all(|q| {
            if q.in_flight.is_some() {
                true
            } else if !q.waiting.is_empty() {
                q.retry_at.is_some_and(|t| t >= until) && q.linger_until.is_none_or(|t| t >= until)
            } else {
                q.unknown.is_empty()
                    || q.unknown_retry_at.is_some_and(|t| t >= until)
                    || q.retry_at.is_some_and(|t| t >= until)
            }
        })
    }

    /// What waits for each originator, in the order of their ids.
    pub fn owed(&self, now: Instant) -> Vec<Owed> {
        self.queues
            .iter()
            .map(|(to, q)| Owed {
                to: to.clone(),
                results: q.len(),
                failing_for: q.failing_since.map(|t| now.saturating_duration_since(t)),
            })
            .collect()
    }

    /// Whether results are on their way to an originator that has taken every try so far: in
    /// flight, or waiting (for company, or behind a batch) with no failed try since. A node
    /// that stops gives these a moment to go; those for an originator whose tries fail wait
    /// on disk for the node's next start.
    pub fn delivering(&self) -> bool {
        self.queues
            .values()
            .any(|q| q.failing_since.is_none() && (q.in_flight.is_some() || !q.waiting.is_empty()))
    }

    /// Whether results of `run_id` are still to deliver.
    pub fn holds_run(&self, run_id: &str) -> bool {
        self.queues.values().any(|q| q.holds(run_id))
    }

    /// `results` were taken by their originator: they and their runs are no longer owed.
    fn taken(&mut self, results: &[JobResult]) {
        for r in results {
            self.added.remove(&key(r));
            self.unknown_since.remove(&r.run_id);
        }
    }

    /// How old `r` is now (see [`Input::Expire`]).
    fn age(&self, r: &JobResult, now: Instant) -> Duration {
        self.added.get(&key(r)).map_or(Duration::ZERO, |(t, at)| {
            *at + now.saturating_duration_since(*t)
        })
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        match input {
            Input::Add {
                to,
                result,
                more_coming,
            } => {
                self.added
                    .entry(key(&result))
                    .or_insert((now, Duration::ZERO));
                let q = self.queues.entry(to.clone()).or_default();
                q.waiting.push_back(result);
                q.linger_until = if more_coming {
                    Some(q.linger_until.unwrap_or(now + LINGER))
                } else {
                    None
                };
                self.try_send(&to, now).into_iter().collect()
            }
            Input::Sent { to, ok } => {
                let Some(q) = self.queues.get_mut(&to) else {
                    return vec![];
                };
                let Some(batch) = q.in_flight.take() else {
                    return vec![];
                };
                let mut actions = Vec::new();
                if ok {
                    q.taken();
                    // Results of a run it had no trace of were taken: the daemon that
                    // submitted it answers now, and gets the others of such runs at once.
                    if batch
                        .iter()
                        .any(|r| self.unknown_since.contains_key(&r.run_id))
                    {
                        q.unknown_retry_at = None;
                        q.unknown_backoff = Duration::ZERO;
                    }
                    self.taken(&batch);
                    actions.push(Action::Delivered(batch));
                } else {
                    q.failed(batch, now);
                    actions.extend(self.slim(&to, now));
                }
                actions.extend(self.try_send(&to, now));
                self.queues.retain(|_, q| !q.is_empty());
                actions
            }
            Input::Unknown { to, runs } => {
                let Some(batch) = self.queues.get_mut(&to).and_then(|q| q.in_flight.take()) else {
                    return vec![];
                };
                let (unknown, taken): (Vec<JobResult>, Vec<JobResult>) =
                    batch.into_iter().partition(|r| runs.contains(&r.run_id));
                self.taken(&taken);
                let mut done = taken;
                let mut kept = Vec::new();
                for r in unknown {
                    let since = *self.unknown_since.entry(r.run_id.clone()).or_insert(now);
                    let age = self.age(&r, now);
                    if now.saturating_duration_since(since) >= GIVE_UP_UNKNOWN_AFTER
                        && age >= UNKNOWN_KEPT_AT_LEAST
                    {
                        self.added.remove(&key(&r));
                        done.push(r);
                    } else {
                        kept.push(r);
                    }
                }
                let mut actions = Vec::new();
                if !done.is_empty() {
                    actions.push(Action::Delivered(done));
                }
                // Still there: its batch was taken from it above. It answered: the results it
                // takes go on at once; those it has no trace of wait apart (`unknown_kept`).
                let q = self.queues.entry(to.clone()).or_default();
                q.taken();
                if !kept.is_empty() {
                    q.unknown_kept(kept, now);
                }
                actions.extend(self.try_send(&to, now));
                self.queues.retain(|_, q| !q.is_empty());
                if !self.unknown_since.is_empty() {
                    let queues = &self.queues;
                    self.unknown_since
                        .retain(|run, _| queues.values().any(|q| q.holds(run)));
                }
                actions
            }
            Input::Restored { to, result, age } => {
                self.added.insert(key(&result), (now, age));
                self.queues
                    .entry(to.clone())
                    .or_default()
                    .waiting
                    .push_back(result);
                self.try_send(&to, now).into_iter().collect()
            }
            Input::Tick => {
                let due: Vec<NodeId> = self
                    .queues
                    .iter()
                    .filter(|(_, q)| {
                        q.in_flight.is_none()
                            && (q.retry_at.is_some_and(|t| t <= now)
                                || q.linger_until.is_some_and(|t| t <= now)
                                || q.unknown_due(now))
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                due.iter().filter_map(|to| self.try_send(to, now)).collect()
            }
            Input::Back { to } => {
                if let Some(q) = self.queues.get_mut(&to) {
                    q.retry_at = None;
                    q.backoff = Duration::ZERO;
                    // The daemon with its identity that comes back may be the one that
                    // submitted those runs.
                    q.unknown_retry_at = None;
                    q.unknown_backoff = Duration::ZERO;
                }
                self.try_send(&to, now).into_iter().collect()
            }
            Input::Expire { retention } => {
                self.slim_older_than = Some(retention);
                let all: Vec<NodeId> = self.queues.keys().cloned().collect();
                all.iter().filter_map(|to| self.slim(to, now)).collect()
            }
        }
    }

    /// Drops the output of the old results waiting for `to`, if it has taken nothing for
    /// long enough (see [`Input::Expire`]).
    fn slim(&mut self, to: &NodeId, now: Instant) -> Option<Action> {
        let older_than = self.slim_older_than?;
        let q = self.queues.get_mut(to)?;
        let failing_for = now.saturating_duration_since(q.failing_since?);
        if failing_for < SLIM_AFTER_FAILING {
            return None;
        }
        let mut slimmed = Vec::new();
        for r in &mut q.waiting {
            let age = self.added.get(&key(r)).map_or(Duration::ZERO, |(t, at)| {
                *at + now.saturating_duration_since(*t)
            });
            if age >= older_than && slim_result(r, age, failing_for) {
                slimmed.push(r.clone());
            }
        }
        (!slimmed.is_empty()).then(|| Action::Slimmed {
            to: to.clone(),
            results: slimmed,
        })
    }

    fn try_send(&mut self, to: &NodeId, now: Instant) -> Option<Action> {
        let q = self.queues.get_mut(to)?;
        if q.in_flight.is_some() {
            return None;
        }
        let from = if q.unknown_due(now) {
            &mut q.unknown
        } else {
            if q.waiting.is_empty() || q.retry_at.is_some_and(|t| t > now) {
                return None;
            }
            if q.linger_until.is_some_and(|t| t > now) && q.waiting.len() < MAX_BATCH {
                return None;
            }
            &mut q.waiting
        };
        let mut n = 0;
        let mut bytes = 0;
        for r in from.iter().take(MAX_BATCH) {
            bytes += weight(r);
            if n > 0 && bytes > MAX_BATCH_BYTES {
                break;
            }
            n += 1;
        }
        let batch: Vec<JobResult> = from.drain(..n).collect();
        q.in_flight = Some(batch.clone());
        q.retry_at = None;
        q.linger_until = None;
        Some(Action::Send {
            to: to.clone(),
            results: batch,
        })
    }
}

/// Drops the output of `r`, `age` old, its originator silent for `failing_for`, unless it
/// is small or already dropped. Whether it did.
fn slim_result(r: &mut JobResult, age: Duration, failing_for: Duration) -> bool {
    let o = &mut r.outcome;
    if o.stdout.starts_with(OUTPUT_NOT_KEPT)
        || o.stdout.len() + o.stderr.len() + o.info.len() < SLIM_ABOVE
    {
        return false;
    }
    o.stdout = format!(
        "{OUTPUT_NOT_KEPT}the result waited {} for its submitter, which took nothing for {}]",
        days_or_hours(age),
        days_or_hours(failing_for)
    );
    o.stderr.clear();
    if o.info.len() > SLIM_ABOVE / 2 {
        let mut end = SLIM_ABOVE / 2;
        while !o.info.is_char_boundary(end) {
            end -= 1;
        }
        o.info.truncate(end);
        o.info.push('…');
    }
    true
}

fn days_or_hours(d: Duration) -> String {
    let hours = d.as_secs() / 3600;
    if hours >= 48 {
        format!("{} days", hours / 24)
    } else {
        format!("{hours} h")
    }
}

/// About how many bytes `r` takes in a message.
fn weight(r: &JobResult) -> usize {
    let o = &r.outcome;
    o.stdout.len() + o.stderr.len() + o.info.len() + o.job_id.len() + r.run_id.len() + 128
}

#[cfg(test)]
mod tests {
    use jobs::executor::{Outcome, ResultState};

    use super::*;

    fn result(job: &str) -> JobResult {
        JobResult {
            run_id: "r".into(),
            node: NodeId("me".into()),
            outcome: Outcome {
                job_id: job.into(),
                state: ResultState::Success,
                stdout: String::new(),
                stderr: String::new(),
                info: String::new(),
                execution_secs: 0.0,
                started_unix_ms: 0,
                finished_unix_ms: 0,
            },
        }
    }

    fn add(o: &mut Outbox, job: &str, now: Instant) -> Vec<Action> {
        add_more(o, job, false, now)
    }

    fn add_more(o: &mut Outbox, job: &str, more_coming: bool, now: Instant) -> Vec<Action> {
        o.handle(
            Input::Add {
                to: NodeId("origin".into()),
                result: result(job),
                more_coming,
            },
            now,
        )
    }

    fn sent(o: &mut Outbox, ok: bool, now: Instant) -> Vec<Action> {
        o.handle(
            Input::Sent {
                to: NodeId("origin".into()),
                ok,
            },
            now,
        )
    }

    /// A stopping node waits while results are on their way to an originator that takes
    /// them (lingering for company or in flight), not for one whose tries fail.
    #[test]
    fn delivering_while_an_answering_originator_has_results_coming() {
        let t = Instant::now();
        let mut o = Outbox::default();
        assert!(!o.delivering());
        // Waiting for company: not sent yet, on its way all the same.
        assert!(add_more(&mut o, "1", true, t).is_empty());
        assert!(o.delivering());
        assert_eq!(o.handle(Input::Tick, t + LINGER).len(), 1);
        assert!(o.delivering(), "in flight");
        sent(&mut o, true, t + LINGER);
        assert!(!o.delivering(), "taken");
        // A try that fails: what is left waits for the next start.
        add(&mut o, "2", t + LINGER);
        assert!(o.delivering());
        sent(&mut o, false, t + LINGER);
        assert!(!o.delivering(), "its originator does not answer");
        // Back, and taken.
        let to = NodeId("origin".into());
        assert_eq!(o.handle(Input::Back { to }, t + LINGER).len(), 1);
        sent(&mut o, true, t + LINGER);
        assert!(!o.delivering());
    }

    fn jobs(a: &Action) -> Vec<String> {
        match a {
            Action::Send { results, .. }
            | Action::Delivered(results)
            | Action::Slimmed { results, .. } => {
                results.iter().map(|r| r.outcome.job_id.clone()).collect()
            }
        }
    }

    #[test]
    fn one_batch_in_flight_and_the_rest_batched_behind_it() {
        let t = Instant::now();
        let mut o = Outbox::new();
        let a = add(&mut o, "1", t);
        assert_eq!(a.len(), 1);
        assert_eq!(jobs(&a[0]), vec!["1"]);
        assert!(add(&mut o, "2", t).is_empty());
        assert!(add(&mut o, "3", t).is_empty());
        let a = sent(&mut o, true, t);
        assert_eq!(a.len(), 2);
        assert!(matches!(a[0], Action::Delivered(_)));
        assert_eq!(jobs(&a[1]), vec!["2", "3"]);
        sent(&mut o, true, t);
        assert_eq!(o.pending(), 0);
    }

    #[test]
    fn a_batch_stays_within_its_byte_budget_and_a_large_result_goes_alone() {
        let t = Instant::now();
        let mut o = Outbox::new();
        let big = |job: &str| {
            let mut r = result(job);
            r.outcome.stdout = "x".repeat(3 * 1024 * 1024);
            r
        };
        let add_result = |o: &mut Outbox, r: JobResult| {
            o.handle(
                Input::Add {
                    to: NodeId("origin".into()),
                    result: r,
                    more_coming: false,
                },
                t,
            )
        };
        add_result(&mut o, big("1"));
        add_result(&mut o, big("2"));
        add_result(&mut o, big("3"));
        add_result(&mut o, result("4"));
        // Each 3 MiB result travels alone (two would pass the 4 MiB budget); the small one
        // joins the last.
        for expected in [vec!["2"], vec!["3", "4"]] {
            let a = sent(&mut o, true, t);
            assert_eq!(jobs(&a[1]), expected);
        }
        sent(&mut o, true, t);
        assert_eq!(o.pending(), 0);
    }

    #[test]
    fn it_says_which_runs_still_have_results_to_deliver() {
        let t = Instant::now();
        let mut o = Outbox::new();
        add(&mut o, "1", t);
        add(&mut o, "2", t);
        assert!(o.holds_run("r") && !o.holds_run("other"));
        // In flight and waiting both count until delivered.
        sent(&mut o, true, t);
        assert!(o.holds_run("r"));
        sent(&mut o, true, t);
        assert!(!o.holds_run("r"));
    }

    #[test]
    fn failures_are_retried_with_backoff_and_nothing_is_lost() {
        let t = Instant::now();
        let mut o = Outbox::new();
        add(&mut o, "1", t);
        add(&mut o, "2", t);
        // The originator is down: the batch goes back, in order, and waits.
        assert!(sent(&mut o, false, t).is_empty());
        assert_eq!(o.pending(), 2);
        assert!(
            o.handle(Input::Tick, t + Duration::from_millis(100))
                .is_empty()
        );
        let a = o.handle(Input::Tick, t + FIRST_RETRY);
        assert_eq!(jobs(&a[0]), vec!["1", "2"]);
        sent(&mut o, false, t + FIRST_RETRY);
        // Second failure: twice the wait.
        assert!(o.handle(Input::Tick, t + FIRST_RETRY * 2).is_empty());
        let a = o.handle(Input::Tick, t + FIRST_RETRY * 3);
        assert_eq!(a.len(), 1);
        let a = sent(&mut o, true, t + FIRST_RETRY * 3);
        assert_eq!(jobs(&a[0]), vec!["1", "2"]);
        assert_eq!(o.pending(), 0);
    }

    #[test]
    fn an_originator_seen_alive_again_gets_its_results_without_waiting_out_the_backoff() {
        let t = Instant::now();
        let mut o = Outbox::new();
        add(&mut o, "1", t);
        // Down for a long while: the wait has grown to its longest.
        let mut now = t;
        for _ in 0..10 {
            sent(&mut o, false, now);
            now += MAX_RETRY;
            assert_eq!(o.handle(Input::Tick, now).len(), 1);
        }
        sent(&mut o, false, now);
        assert!(o.handle(Input::Tick, now + MAX_RETRY / 2).is_empty());
        // Seen alive again: the batch goes at once.
        let back = Input::Back {
            to: NodeId("origin".into()),
        };
        let a = o.handle(back, now + Duration::from_secs(1));
        assert_eq!(jobs(&a[0]), vec!["1"]);
        // A failure right after starts the backoff from its first step again.
        sent(&mut o, false, now + Duration::from_secs(1));
        let a = o.handle(Input::Tick, now + Duration::from_secs(1) + FIRST_RETRY);
        assert_eq!(a.len(), 1);
        // Nothing queued for someone else: nothing to do.
        let other = Input::Back {
            to: NodeId("other".into()),
        };
        assert!(o.handle(other, now + Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn results_linger_while_more_of_the_run_is_coming() {
        let t = Instant::now();
        let mut o = Outbox::new();
        assert!(
            add_more(&mut o, "1", true, t).is_empty(),
            "waits for company"
        );
        assert!(add_more(&mut o, "2", true, t + Duration::from_millis(5)).is_empty());
        assert!(
            o.handle(Input::Tick, t + Duration::from_millis(10))
                .is_empty()
        );
        // The linger ends: both go together.
        let a = o.handle(Input::Tick, t + LINGER);
        assert_eq!(jobs(&a[0]), vec!["1", "2"]);
        sent(&mut o, true, t + LINGER);
        // The last result of a run goes at once, with whatever waited.
        add_more(&mut o, "3", true, t + LINGER);
        let a = add_more(&mut o, "4", false, t + LINGER);
        assert_eq!(jobs(&a[0]), vec!["3", "4"]);
    }

    #[test]
    fn an_originator_down_for_a_while_leaves_the_outbox_quiet_between_retries() {
        let t0 = Instant::now();
        let mut o = Outbox::new();
        let to = NodeId("o".into());
        assert!(o.quiet_until(t0 + Duration::from_secs(1)));
        o.handle(
            Input::Add {
                to: to.clone(),
                result: result("j1"),
                more_coming: false,
            },
            t0,
        );
        // In flight: its answer ends it, no time does.
        assert!(o.quiet_until(t0 + Duration::from_secs(1)));
        // Failed once: retried in 250 ms, not quiet for a second.
        let mut now = t0;
        o.handle(
            Input::Sent {
                to: to.clone(),
                ok: false,
            },
            now,
        );
        assert!(!o.quiet_until(now + Duration::from_secs(1)));
        // After many failures the retries are 30 s apart: quiet in between.
        for _ in 0..10 {
            now += MAX_RETRY;
            o.handle(Input::Tick, now);
            o.handle(
                Input::Sent {
                    to: to.clone(),
                    ok: false,
                },
                now,
            );
        }
        assert!(o.quiet_until(now + Duration::from_secs(1)));
        assert!(!o.quiet_until(now + MAX_RETRY + Duration::from_secs(1)));
    }

    fn big(job: &str) -> JobResult {
        let mut r = result(job);
        r.outcome.stdout = "o".repeat(SLIM_ABOVE);
        r.outcome.stderr = "e".repeat(10);
        r
    }

    fn restored(job: &str, age: Duration) -> Input {
        Input::Restored {
            to: NodeId("origin".into()),
            result: big(job),
            age,
        }
    }

    fn expire(o: &mut Outbox, at: Instant, retention: Duration) -> Vec<Action> {
        o.handle(Input::Expire { retention }, at)
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn old_results_for_an_originator_gone_for_good_lose_their_output_and_stay_queued() {
        let t = Instant::now();
        let mut o = Outbox::new();
        // Read from disk at the start: 40 days and 10 days old.
        o.handle(restored("old", 40 * DAY), t);
        o.handle(restored("new", 10 * DAY), t);
        // In flight: nothing is touched while a try may still succeed.
        assert!(expire(&mut o, t, 30 * DAY).is_empty());
        sent(&mut o, false, t);
        // Failing, but not for long enough in this process.
        let soon = t + SLIM_AFTER_FAILING - Duration::from_secs(1);
        assert!(o.handle(Input::Tick, soon).len() == 1, "retried");
        assert!(sent(&mut o, false, soon).is_empty());
        assert_eq!(
            o.owed(soon)[0].failing_for,
            Some(SLIM_AFTER_FAILING - Duration::from_secs(1))
        );
        // The next failed try, an hour in: the old one loses its output.
        let later = t + SLIM_AFTER_FAILING;
        assert_eq!(o.handle(Input::Tick, later).len(), 1);
        let a = sent(&mut o, false, later);
        assert_eq!(a.len(), 1, "{a:?}");
        let Action::Slimmed { to, results } = &a[0] else {
            panic!("{a:?}");
        };
        assert_eq!(to.0, "origin");
        assert_eq!(jobs(&a[0]), vec!["old"]);
        let slim = &results[0].outcome;
        assert_eq!(
            slim.stdout,
            "[output not kept: the result waited 40 days for its submitter, which took nothing \
             for 1 h]"
        );
        assert!(slim.stderr.is_empty());
        assert_eq!(slim.state, ResultState::Success, "its state is kept");
        // Nothing more to drop at the next sweep; both still go when the originator is back.
        assert!(expire(&mut o, later, 30 * DAY).is_empty());
        assert_eq!(o.pending(), 2);
        let back = Input::Back {
            to: NodeId("origin".into()),
        };
        let a = o.handle(back, later);
        assert_eq!(jobs(&a[0]), vec!["old", "new"]);
        let Action::Send { results, .. } = &a[0] else {
            panic!("{a:?}");
        };
        assert!(results[0].outcome.stdout.starts_with(OUTPUT_NOT_KEPT));
        assert_eq!(
            results[1].outcome.stdout.len(),
            SLIM_ABOVE,
            "the newer one whole"
        );
        let a = sent(&mut o, true, later);
        assert!(matches!(a[0], Action::Delivered(_)));
        assert!(o.owed(later).is_empty());
        assert!(o.added.is_empty(), "nothing left behind");
    }

    #[test]
    fn a_sweep_drops_the_output_of_waiting_results_and_small_results_are_kept_whole() {
        let t = Instant::now();
        let mut o = Outbox::new();
        o.handle(restored("big", 40 * DAY), t);
        o.handle(
            Input::Restored {
                to: NodeId("origin".into()),
                result: result("small"),
                age: 40 * DAY,
            },
            t,
        );
        sent(&mut o, false, t);
        let a = expire(&mut o, t + SLIM_AFTER_FAILING, 30 * DAY);
        assert_eq!(jobs(&a[0]), vec!["big"]);
    }

    #[test]
    fn a_result_made_in_this_process_ages_by_the_monotonic_clock() {
        let t = Instant::now();
        let mut o = Outbox::new();
        // Finished "long ago" by a wall clock that was stepped: the outbox does not look.
        let mut r = big("1");
        r.outcome.finished_unix_ms = 1;
        o.handle(
            Input::Add {
                to: NodeId("origin".into()),
                result: r,
                more_coming: false,
            },
            t,
        );
        sent(&mut o, false, t);
        assert!(expire(&mut o, t + SLIM_AFTER_FAILING, DAY).is_empty());
        assert!(expire(&mut o, t + DAY - Duration::from_secs(1), DAY).is_empty());
        let a = expire(&mut o, t + DAY, DAY);
        assert_eq!(jobs(&a[0]), vec!["1"]);
    }

    #[test]
    fn a_delivery_ends_the_failing_spell() {
        let t = Instant::now();
        let mut o = Outbox::new();
        o.handle(restored("1", 40 * DAY), t);
        assert_eq!(o.owed(t)[0].failing_for, None);
        sent(&mut o, false, t);
        let hour_less = t + SLIM_AFTER_FAILING - Duration::from_secs(1);
        assert_eq!(o.handle(Input::Tick, hour_less).len(), 1);
        sent(&mut o, true, hour_less);
        o.handle(restored("2", 40 * DAY), hour_less);
        sent(&mut o, false, hour_less);
        // Failing again, but only since the last failure: nothing is dropped yet.
        let later = t + SLIM_AFTER_FAILING + Duration::from_secs(1);
        assert!(expire(&mut o, later, Duration::ZERO).is_empty());
        assert_eq!(o.owed(later)[0].failing_for, Some(Duration::from_secs(2)));
        let a = expire(&mut o, hour_less + SLIM_AFTER_FAILING, Duration::ZERO);
        assert_eq!(jobs(&a[0]), vec!["2"]);
    }

    fn of_run(run: &str, job: &str) -> JobResult {
        let mut r = result(job);
        r.run_id = run.into();
        r
    }

    fn unknown(o: &mut Outbox, runs: &[&str], now: Instant) -> Vec<Action> {
        o.handle(
            Input::Unknown {
                to: NodeId("origin".into()),
                runs: runs.iter().map(|r| r.to_string()).collect(),
            },
            now,
        )
    }

    /// The originator's peer id reached a daemon that never submitted the run (a copy of the
    /// submitter's state directory on another machine): its results stay and go again, and
    /// reach the submitter once a try gets to it. The rest of the batch was taken.
    #[test]
    fn results_of_a_run_the_originator_does_not_know_are_kept_and_offered_again() {
        let t = Instant::now();
        let mut o = Outbox::new();
        let to = NodeId("origin".into());
        let add_result = |o: &mut Outbox, r: JobResult| {
            o.handle(
                Input::Add {
                    to: to.clone(),
                    result: r,
                    more_coming: false,
                },
                t,
            )
        };
        assert_eq!(
            jobs(&add_result(&mut o, of_run("theirs", "1"))[0]),
            vec!["1"]
        );
        assert!(add_result(&mut o, of_run("known", "2")).is_empty());
        // Answered by a daemon that never submitted it: nothing is forgotten, and the result
        // behind it, which it takes, goes at once.
        let a = unknown(&mut o, &["theirs"], t);
        assert_eq!(jobs(&a[0]), vec!["2"]);
        assert_eq!(o.pending(), 2);
        assert!(o.holds_run("theirs"));
        assert_eq!(o.owed(t)[0].failing_for, None, "it answers");
        let a = sent(&mut o, true, t);
        assert_eq!(jobs(&a[0]), vec!["2"]);
        assert_eq!(o.pending(), 1);
        // Offered again after its own backoff, once nothing else waits.
        assert!(o.handle(Input::Tick, t + FIRST_RETRY / 2).is_empty());
        let a = o.handle(Input::Tick, t + FIRST_RETRY);
        assert_eq!(jobs(&a[0]), vec!["1"]);
        assert!(unknown(&mut o, &["theirs"], t + FIRST_RETRY).is_empty());
        // Backing off as after failed tries; then the submitter answers: taken.
        let next = t + FIRST_RETRY * 3;
        assert!(
            o.handle(Input::Tick, next - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(jobs(&o.handle(Input::Tick, next)[0]), vec!["1"]);
        let a = sent(&mut o, true, next);
        assert_eq!(jobs(&a[0]), vec!["1"]);
        assert_eq!(o.pending(), 0);
        assert!(o.unknown_since.is_empty() && o.added.is_empty());
    }

    /// However many results of unknown runs wait, and however large, the results the
    /// originator takes pass them at once, and it is never taken for failing.
    #[test]
    fn results_of_unknown_runs_never_hold_up_the_others() {
        let t = Instant::now();
        let mut o = Outbox::new();
        let to = NodeId("origin".into());
        let add_result = |o: &mut Outbox, r: JobResult, now: Instant| {
            o.handle(
                Input::Add {
                    to: to.clone(),
                    result: r,
                    more_coming: false,
                },
                now,
            )
        };
        for i in 0..300 {
            o.handle(
                Input::Restored {
                    to: to.clone(),
                    result: of_run("purged", &format!("p{i}")),
                    age: Duration::ZERO,
                },
                t,
            );
        }
        // Every batch of them is answered so: they wait apart.
        let now = t;
        let mut a = unknown(&mut o, &["purged"], now);
        while let Some(Action::Send { results, .. }) = a.first() {
            assert!(results.iter().all(|r| r.run_id == "purged"));
            a = unknown(&mut o, &["purged"], now);
        }
        assert_eq!(o.pending(), 300);
        // A live result goes at once, whatever the backoff of those, and is taken.
        let a = add_result(&mut o, of_run("live", "l"), now);
        assert_eq!(jobs(&a[0]), vec!["l"]);
        assert_eq!(o.owed(now)[0].failing_for, None);
        assert_eq!(jobs(&sent(&mut o, true, now)[0]), vec!["l"]);
        assert_eq!(o.pending(), 300);
        // Another one while they are in flight waits only for their answer.
        let a = o.handle(Input::Tick, now + MAX_RETRY);
        assert!(matches!(&a[0], Action::Send { results, .. } if results[0].run_id == "purged"));
        assert!(add_result(&mut o, of_run("live", "m"), now + MAX_RETRY).is_empty());
        let a = unknown(&mut o, &["purged"], now + MAX_RETRY);
        assert_eq!(jobs(&a[0]), vec!["m"]);
    }

    /// Results of a run that nobody ever takes (its submitter purged it) are given up once
    /// every answer about it for an hour said so and they are a day old; not before.
    #[test]
    fn results_of_a_run_no_answer_knows_are_given_up_when_old_and_refused_for_an_hour() {
        let t = Instant::now();
        let mut o = Outbox::new();
        let to = NodeId("origin".into());
        o.handle(
            Input::Restored {
                to: to.clone(),
                result: of_run("purged", "old"),
                age: 2 * DAY,
            },
            t,
        );
        o.handle(
            Input::Add {
                to: to.clone(),
                result: of_run("purged", "new"),
                more_coming: false,
            },
            t,
        );
        let mut now = t;
        // The one behind goes at once, and is answered so too.
        assert_eq!(jobs(&unknown(&mut o, &["purged"], now)[0]), vec!["new"]);
        assert!(unknown(&mut o, &["purged"], now).is_empty());
        // Answered so for almost an hour: still kept, and still offered.
        while now < t + GIVE_UP_UNKNOWN_AFTER - MAX_RETRY {
            now += MAX_RETRY;
            assert_eq!(o.handle(Input::Tick, now).len(), 1, "offered again");
            assert!(unknown(&mut o, &["purged"], now).is_empty());
        }
        assert_eq!(o.pending(), 2);
        // An hour of such answers: the day-old result goes, the fresh one stays.
        now = t + GIVE_UP_UNKNOWN_AFTER;
        assert_eq!(o.handle(Input::Tick, now).len(), 1);
        let a = unknown(&mut o, &["purged"], now);
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(matches!(a[0], Action::Delivered(_)));
        assert_eq!(jobs(&a[0]), vec!["old"]);
        assert_eq!(o.pending(), 1);
        // Until it is a day old too.
        now = t + UNKNOWN_KEPT_AT_LEAST - Duration::from_secs(1);
        assert_eq!(o.handle(Input::Tick, now).len(), 1);
        assert!(unknown(&mut o, &["purged"], now).is_empty());
        now += MAX_RETRY;
        assert_eq!(o.handle(Input::Tick, now).len(), 1);
        let a = unknown(&mut o, &["purged"], now);
        assert_eq!(jobs(&a[0]), vec!["new"]);
        assert_eq!(o.pending(), 0);
        assert!(o.owed(now).is_empty());
        assert!(
            o.unknown_since.is_empty() && o.added.is_empty(),
            "nothing left behind"
        );
    }

    /// Tries that fail on the way do not end the spell of such answers; a result of the run
    /// taken does, and the hour starts again from the next such answer.
    #[test]
    fn a_result_of_the_run_taken_starts_the_hour_again() {
        let t = Instant::now();
        let mut o = Outbox::new();
        let to = NodeId("origin".into());
        let restore = |o: &mut Outbox, job: &str, now: Instant| {
            o.handle(
                Input::Restored {
                    to: to.clone(),
                    result: of_run("r", job),
                    age: 2 * DAY,
                },
                now,
            )
        };
        restore(&mut o, "1", t);
        unknown(&mut o, &["r"], t);
        // A try that failed half an hour in changes nothing.
        let half = t + GIVE_UP_UNKNOWN_AFTER / 2;
        assert_eq!(o.handle(Input::Tick, half).len(), 1);
        sent(&mut o, false, half);
        let hour = t + GIVE_UP_UNKNOWN_AFTER;
        assert_eq!(o.handle(Input::Tick, hour).len(), 1);
        assert_eq!(
            jobs(&unknown(&mut o, &["r"], hour)[0]),
            vec!["1"],
            "given up"
        );
        // Another result of the run: answered so once, then taken (the submitter reached).
        restore(&mut o, "2", hour);
        assert!(unknown(&mut o, &["r"], hour).is_empty());
        let later = hour + FIRST_RETRY;
        assert_eq!(o.handle(Input::Tick, later).len(), 1);
        sent(&mut o, true, later);
        assert!(o.unknown_since.is_empty());
        // A third, answered so: its hour starts now.
        restore(&mut o, "3", later);
        assert!(unknown(&mut o, &["r"], later).is_empty());
        let a = o.handle(Input::Back { to: to.clone() }, hour + GIVE_UP_UNKNOWN_AFTER);
        assert_eq!(a.len(), 1);
        assert!(unknown(&mut o, &["r"], hour + GIVE_UP_UNKNOWN_AFTER).is_empty());
        assert_eq!(o.pending(), 1);
    }
}
