//! A target's acknowledgement of one run: whether a copy of the run calls for another one.
//!
//! Each copy of a run names the start of its originator's daemon ([`Run::originator_start`]).
//! Once that start has answered a target's acknowledgement, the target stays silent on its
//! re-announces: a re-announce to a thousand targets does not bring back a thousand
//! acknowledgements the originator has. An acknowledgement not answered yet is sent again (it
//! may be lost; an originator announces again only when acknowledgements stop coming), and so
//! is one to an originator that restarted since, which has forgotten what it had.

use crate::message::Run;

/// What a target knows of the originator having its acknowledgement of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acknowledgement {
    /// The originator's start that answered it.
    answered_by: Option<u64>,
}

impl Acknowledgement {
    /// Whether `run`, as just received, calls for an acknowledgement.
    pub fn wanted(&self, run: &Run) -> bool {
        // An originator that does not say which start it is: always.
        run.originator_start == 0 || self.answered_by != Some(run.originator_start)
    }

    /// The originator's start `start` answered the acknowledgement.
    pub fn answered(&mut self, start: u64) {
        self.answered_by = Some(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_from(start: u64) -> Run {
        Run {
            run_id: "r".into(),
            originator: crate::NodeId("o".into()),
            parents: vec![],
            stream: false,
            inline: vec![],
            holders: vec![],
            round: 1,
            originator_start: start,
            created_unix_ms: 0,
            age_ms: 0,
        }
    }

    #[test]
    fn a_start_that_answered_is_not_acknowledged_again() {
        let mut ack = Acknowledgement::default();
        // Not answered yet (never sent, or on its way and maybe lost): acknowledged.
        assert!(ack.wanted(&copy_from(7)));
        ack.answered(7);
        assert!(!ack.wanted(&copy_from(7)));
        // The originator restarted: it has forgotten.
        assert!(ack.wanted(&copy_from(8)));
        ack.answered(8);
        assert!(!ack.wanted(&copy_from(8)));
        // An originator that does not say its start: every copy is acknowledged.
        ack.answered(0);
        assert!(ack.wanted(&copy_from(0)));
    }
}
