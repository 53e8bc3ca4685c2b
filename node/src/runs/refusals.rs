//! How many refused jobs a target holds per submitter.
//!
//! A refused run (`--allow-submitter`) is still stored: each of its jobs is answered failed as
//! refused, those answers wait in the outbox until the submitter takes them (however long),
//! and the run is remembered for a day after that, so that a resend is answered the same. A
//! member the node does not take jobs from could otherwise fill its disk with runs it sends
//! only to be refused, and never take the answers. Past [`REFUSED_JOBS_HELD`] jobs of one
//! submitter's refused runs held since the node started, its further new runs are dropped
//! (a direct copy is answered "run dropped", a gossiped one ignored) until the runs held are
//! forgotten.

use std::collections::{HashMap, HashSet};

use coordination::NodeId;

/// The most jobs of one submitter's refused runs a node holds (counted since its start).
pub(super) const REFUSED_JOBS_HELD: usize = 10_000;

/// Refused jobs held per submitter.
#[derive(Debug, Default)]
pub(super) struct RefusalBudget {
    /// Per submitter: jobs of its refused runs this node holds. Holds members whose runs were
    /// refused and are not forgotten yet.
    held: HashMap<NodeId, usize>,
    /// Submitters whose drops were said (said again once they are under the budget again).
    said: HashSet<NodeId>,
}

/// Whether the refusal of a submitter's new run is stored.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within the budget: refused and stored as usual (and counted).
    Store,
    /// The first run over the budget since the submitter was last under it: dropped, and
    /// worth a warning.
    FirstDropped,
    /// Dropped, said already.
    Dropped,
}

impl RefusalBudget {
    /// Counts the refusal of a new run of `jobs` jobs from `submitter`, if it fits (none
    /// always does).
    pub(super) fn take(&mut self, submitter: &NodeId, jobs: usize) -> Verdict {
        if jobs == 0 {
            return Verdict::Store;
        }
        let held = self.held.entry(submitter.clone()).or_default();
        if held.saturating_add(jobs) <= REFUSED_JOBS_HELD {
            *held += jobs;
            return Verdict::Store;
        }
        if self.said.insert(submitter.clone()) {
            Verdict::FirstDropped
        } else {
            Verdict::Dropped
        }
    }

    /// A refused run of `jobs` jobs from `submitter` is forgotten.
    pub(super) fn release(&mut self, submitter: &NodeId, jobs: usize) {
        if let Some(held) = self.held.get_mut(submitter) {
            *held = held.saturating_sub(jobs);
            if *held == 0 {
                self.held.remove(submitter);
            }
            self.said.remove(submitter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> NodeId {
        NodeId(n.into())
    }

    #[test]
    fn a_submitter_past_the_budget_is_dropped_until_runs_are_forgotten() {
        let mut b = RefusalBudget::default();
        assert_eq!(b.take(&node("a"), REFUSED_JOBS_HELD - 1), Verdict::Store);
        // A run of many jobs counts each of them.
        assert_eq!(b.take(&node("a"), 2), Verdict::FirstDropped);
        assert_eq!(b.take(&node("a"), 2), Verdict::Dropped);
        assert_eq!(b.take(&node("a"), 1), Verdict::Store);
        assert_eq!(b.take(&node("a"), 1), Verdict::Dropped);
        // Another submitter has its own budget.
        assert_eq!(b.take(&node("b"), 5), Verdict::Store);
        // Runs forgotten make room, and a later drop is said again.
        b.release(&node("a"), 1);
        assert_eq!(b.take(&node("a"), 1), Verdict::Store);
        assert_eq!(b.take(&node("a"), 1), Verdict::FirstDropped);
        b.release(&node("b"), 5);
        assert!(!b.held.contains_key(&node("b")));
    }
}
