//! The originator's checks of which nodes are alive, each answer matched to its check.

use std::collections::HashSet;

use crate::message::NodeId;

/// The alive checks asked ([`super::Action::CheckAlive`]) and answered, by number. The
/// mesh answers them in the order asked, so the n-th answer is for the n-th check and
/// applies to the runs asked with it, and to no run asked later: it may have been taken
/// before they were tracked.
#[derive(Debug, Default)]
pub(super) struct AliveChecks {
    asked: u64,
    answered: u64,
    /// Nodes seen back while a check is out, and not gone since: an answer may have been
    /// taken before they came back, so it does not write them off. Kept until every check
    /// out is answered (not emptied when a new one is asked: an answer to an earlier one
    /// may still come), and only then: a node that submits nothing keeps no list of every
    /// node it ever saw come back.
    pub(super) back_since: HashSet<NodeId>,
}

impl AliveChecks {
    /// A new check is asked: its number.
    pub(super) fn ask(&mut self) -> u64 {
        self.asked += 1;
        self.asked
    }

    /// Whether an answer is still to come.
    fn out(&self) -> bool {
        self.answered < self.asked
    }

    /// `node` is alive again.
    pub(super) fn back(&mut self, node: &NodeId) {
        if self.out() {
            self.back_since.insert(node.clone());
        }
    }

    /// `node` is gone: an answer without it is right about it.
    pub(super) fn gone(&mut self, node: &NodeId) {
        self.back_since.remove(node);
    }

    /// An answer came: the number of the check it answers, and the nodes it must not write
    /// off (`None`: no check is out).
    pub(super) fn answer(&mut self) -> Option<(u64, HashSet<NodeId>)> {
        if !self.out() {
            return None;
        }
        self.answered += 1;
        let spared = if self.out() {
            self.back_since.clone()
        } else {
            std::mem::take(&mut self.back_since)
        };
        Some((self.answered, spared))
    }
}
