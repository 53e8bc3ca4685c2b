//! How many runs a target refuses per submitter and hour, and stores the refusal of.
//!
//! A refused run (`--allow-submitter`, or submitted too long ago) is still stored: its jobs are
//! answered failed as refused, those answers wait in the outbox until the submitter takes
//! them, and the run is remembered for a day so that a resend is answered the same. A member
//! the node does not take jobs from could otherwise fill its disk with runs it sends only to
//! be refused. Past [`REFUSED_RUNS_PER_HOUR`] from one submitter in an hour, further new runs
//! of it are dropped unanswered (its submitter writes the node off for them, as unreachable).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use coordination::NodeId;

/// The most new runs one submitter gets refused and stored here in an hour.
pub(super) const REFUSED_RUNS_PER_HOUR: u32 = 1000;

/// The window the budget counts in.
const WINDOW: Duration = Duration::from_secs(3600);

/// Refusals counted per submitter, in windows of an hour from each one's first refusal.
#[derive(Debug, Default)]
pub(super) struct RefusalBudget {
    /// Per submitter: when its window began, and how many runs it got refused in it. Holds
    /// members that got a run refused within the hour (pruned by [`RefusalBudget::prune`]).
    windows: HashMap<NodeId, (Instant, u32)>,
}

/// Whether one more refusal of a submitter's run is stored.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within the budget: refused and stored as usual.
    Store,
    /// The first run over the budget this window: dropped, and worth a warning.
    FirstDropped,
    /// Dropped, said already this window.
    Dropped,
}

impl RefusalBudget {
    /// Counts a new refused run of `submitter` at `now`.
    pub(super) fn take(&mut self, submitter: &NodeId, now: Instant) -> Verdict {
        let (since, count) = self.windows.entry(submitter.clone()).or_insert((now, 0));
        if now.saturating_duration_since(*since) >= WINDOW {
            (*since, *count) = (now, 0);
        }
        *count = count.saturating_add(1);
        match *count {
            n if n <= REFUSED_RUNS_PER_HOUR => Verdict::Store,
            n if n == REFUSED_RUNS_PER_HOUR + 1 => Verdict::FirstDropped,
            _ => Verdict::Dropped,
        }
    }

    /// Forgets the windows that are over.
    pub(super) fn prune(&mut self, now: Instant) {
        self.windows
            .retain(|_, (since, _)| now.saturating_duration_since(*since) < WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> NodeId {
        NodeId(n.into())
    }

    #[test]
    fn a_submitter_past_the_budget_is_dropped_until_the_hour_is_over() {
        let mut b = RefusalBudget::default();
        let t0 = Instant::now();
        for _ in 0..REFUSED_RUNS_PER_HOUR {
            assert_eq!(b.take(&node("a"), t0), Verdict::Store);
        }
        assert_eq!(b.take(&node("a"), t0), Verdict::FirstDropped);
        assert_eq!(
            b.take(&node("a"), t0 + Duration::from_secs(3599)),
            Verdict::Dropped
        );
        // Another submitter has its own budget.
        assert_eq!(b.take(&node("b"), t0), Verdict::Store);
        // An hour after the window began, a new one.
        let later = t0 + WINDOW;
        assert_eq!(b.take(&node("a"), later), Verdict::Store);
    }

    #[test]
    fn windows_that_are_over_are_forgotten() {
        let mut b = RefusalBudget::default();
        let t0 = Instant::now();
        b.take(&node("a"), t0);
        b.take(&node("b"), t0 + Duration::from_secs(1800));
        b.prune(t0 + WINDOW);
        assert_eq!(b.windows.len(), 1);
        assert!(b.windows.contains_key(&node("b")));
    }
}
