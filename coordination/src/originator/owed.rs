//! The results a run still waits for, on the originator, indexed by the target that owes them.

use std::collections::{BTreeSet, HashMap};

use crate::message::NodeId;

/// The (job, target) results a run still waits for, by target: what a target that goes or
/// comes back owes is found without going through every other target's (a run has up to
/// tens of thousands of targets, and a split of the mesh moves thousands of them at once).
#[derive(Debug, Default)]
pub(super) struct Owed {
    by_node: HashMap<NodeId, BTreeSet<String>>,
    len: usize,
}

impl Owed {
    /// (job, target) results still owed.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The targets that owe results.
    pub(super) fn nodes(&self) -> impl Iterator<Item = &NodeId> {
        self.by_node.keys()
    }

    /// `node` owes `job_id`'s result (again).
    pub(super) fn insert(&mut self, job_id: String, node: NodeId) {
        if self.by_node.entry(node).or_default().insert(job_id) {
            self.len += 1;
        }
    }

    /// `node` reported `job_id`: not owed any more.
    pub(super) fn remove(&mut self, job_id: &str, node: &NodeId) {
        let Some(jobs) = self.by_node.get_mut(node) else {
            return;
        };
        if jobs.remove(job_id) {
            self.len -= 1;
        }
        if jobs.is_empty() {
            self.by_node.remove(node);
        }
    }

    /// Every job `node` owes, in order; it owes nothing after.
    pub(super) fn take(&mut self, node: &NodeId) -> Vec<String> {
        let jobs = self.by_node.remove(node).unwrap_or_default();
        self.len -= jobs.len();
        jobs.into_iter().collect()
    }
}

impl FromIterator<(String, NodeId)> for Owed {
    fn from_iter<I: IntoIterator<Item = (String, NodeId)>>(results: I) -> Self {
        let mut owed = Owed::default();
        for (job_id, node) in results {
            owed.insert(job_id, node);
        }
        owed
    }
}
