//! The originator's checks of which nodes are alive, each answer matched to its check.

use std::collections::{BTreeSet, HashSet};

use crate::message::NodeId;

/// The alive checks asked ([`super::Action::CheckAlive`]) and not answered yet, by number.
/// An answer carries the number of its check and applies to the runs asked with it, and to
/// no run asked later: it may have been taken before they were tracked. Answers may come in
/// any order (each is fetched on its own), and one never answered (the node stopping) holds
/// up no other.
#[derive(Debug, Default)]
pub(super) struct AliveChecks {
    /// The number of the last check asked.
    asked: u64,
    /// Checks asked and not answered yet. At most one is asked per tick, and each is
    /// answered within one round trip to the node's own mesh task, so this stays small.
    out: BTreeSet<u64>,
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
        self.out.insert(self.asked);
        self.asked
    }

    /// Whether an answer is still to come.
    fn out(&self) -> bool {
        !self.out.is_empty()
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

    /// The answer to check `check` came: the nodes it must not write off (`None`: that check
    /// is not out, so the answer is for nothing).
    pub(super) fn answer(&mut self, check: u64) -> Option<HashSet<NodeId>> {
        if !self.out.remove(&check) {
            return None;
        }
        let spared = if self.out() {
            self.back_since.clone()
        } else {
            std::mem::take(&mut self.back_since)
        };
        Some(spared)
    }
}
