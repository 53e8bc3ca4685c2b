//! What a target does, after its daemon restarts, with the jobs it had accepted and not
//! finished: run them, or report them interrupted, and in which words.
//!
//! A job that had started is never run again. A job that had not is run, unless its parent
//! had a job cut short (the parent failed), the node cannot tell which jobs started (after a
//! reboot; see `jobs::processes`), it no longer has the run to take the job from, or it was
//! down so long that the job's submitter has written it off.

use std::collections::HashSet;

/// What becomes of one pending job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It never started: queue it again.
    RunAgain,
    /// It had started, or the node cannot tell: interrupted, not run again.
    Interrupted,
    /// It never started, but an earlier job of its parent was cut short: not run.
    BehindInterrupted,
    /// It never started, but the node was down too long to run it now.
    DownTooLong,
}

/// One pending job: its id and its parent's.
#[derive(Debug, Clone, Copy)]
pub struct Pending<'a> {
    pub job_id: &'a str,
    pub parent_id: &'a str,
}

/// The fate of each of `pending` (one run's jobs pending here), in order. `started`: the
/// jobs the node's previous run started, if it can tell; `run_kept`: whether the node still
/// has the run (to take the jobs from); `down_too_long`: whether it was down so long that
/// nothing it had queued runs now.
pub fn fates(
    pending: &[Pending<'_>],
    started: Option<&HashSet<String>>,
    run_kept: bool,
    down_too_long: bool,
) -> Vec<Fate> {
    let Some(started) = started else {
        return vec![Fate::Interrupted; pending.len()];
    };
    let cut_parents: HashSet<&str> = pending
        .iter()
        .filter(|p| started.contains(p.job_id))
        .map(|p| p.parent_id)
        .collect();
    pending
        .iter()
        .map(|p| {
            if started.contains(p.job_id) {
                Fate::Interrupted
            } else if down_too_long {
                Fate::DownTooLong
            } else if cut_parents.contains(p.parent_id) {
                Fate::BehindInterrupted
            } else if run_kept {
                Fate::RunAgain
            } else {
                Fate::Interrupted
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Vec<Pending<'static>> {
        [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")]
            .map(|(job_id, parent_id)| Pending { job_id, parent_id })
            .to_vec()
    }

    #[test]
    fn a_started_job_is_interrupted_with_the_rest_of_its_parent_and_the_others_run() {
        let started = HashSet::from(["a1".to_string(), "done".to_string()]);
        assert_eq!(
            fates(&pending(), Some(&started), true, false),
            [
                Fate::Interrupted,
                Fate::BehindInterrupted,
                Fate::RunAgain,
                Fate::RunAgain
            ]
        );
    }

    #[test]
    fn nothing_runs_again_when_the_node_cannot_tell_lost_the_run_or_was_down_too_long() {
        let started = HashSet::from(["a1".to_string()]);
        assert_eq!(fates(&pending(), None, true, false), [Fate::Interrupted; 4]);
        assert_eq!(
            fates(&pending(), Some(&started), false, false),
            [
                Fate::Interrupted,
                Fate::BehindInterrupted,
                Fate::Interrupted,
                Fate::Interrupted
            ]
        );
        assert_eq!(
            fates(&pending(), Some(&started), true, true),
            [
                Fate::Interrupted,
                Fate::DownTooLong,
                Fate::DownTooLong,
                Fate::DownTooLong
            ]
        );
    }
}
