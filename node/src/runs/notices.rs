//! Notices to `--poll`/`--stream` clients that a job finished, held until its record is on disk.
//!
//! A client never prints a result that a crash could still turn into "interrupted". Notices
//! wait for a commit of the store; to keep that from costing a disk sync per job, they are
//! batched: a batch goes with the writer's next regular commit (within its window), unless it
//! holds the last job a client waits for, whose commit is asked for at once. At most one commit
//! of each kind is in flight; notices arriving meanwhile form the next batch.
//!
//! This holds no I/O: the runs actor asks the store for the commits this names and reports
//! back when each is over.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use crate::{control::WatchEvent, records::JobRecord};

/// What a client hears of a finished job, and the channel it hears it on.
pub struct Notice {
    pub to: mpsc::Sender<WatchEvent>,
    pub event: WatchEvent,
    /// Whether the client shows the jobs' outputs (`--stream`): only then is a finished
    /// job's record sent with them (read from the store; memory holds it without them).
    pub outputs: bool,
}

/// A commit the notices need: its batch number, and whether it should end the window now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitWanted {
    pub batch: u64,
    pub now: bool,
}

/// Bounded by the jobs clients watch: one notice per watched job and client.
#[derive(Default)]
pub struct Notices {
    /// Not covered by a commit yet.
    waiting: Vec<Notice>,
    /// One of `waiting` is the last a client waits for.
    waiting_urgent: bool,
    /// Covered by a commit in flight, oldest first.
    committing: VecDeque<(CommitWanted, Vec<Notice>)>,
    next_batch: u64,
    /// A commit failed (the node stops): nothing more goes out.
    failed: bool,
}

impl Notices {
    /// Holds `notice`; `last` when its client waits for nothing else.
    pub fn push(&mut self, notice: Notice, last: bool) {
        self.waiting.push(notice);
        self.waiting_urgent |= last;
    }

    /// The commit to ask the store for now, if any: the waiting notices become its batch.
    pub fn next_commit(&mut self) -> Option<CommitWanted> {
        if self.failed || self.waiting.is_empty() {
            return None;
        }
        let now = self.waiting_urgent;
        // One in flight of the same kind: the waiting notices go with the next one. (A regular
        // commit in flight does not hold back an urgent one, which ends the window for both.)
        if self.committing.iter().any(|(c, _)| c.now == now) {
            return None;
        }
        let wanted = CommitWanted {
            batch: self.next_batch,
            now,
        };
        self.next_batch += 1;
        self.waiting_urgent = false;
        self.committing
            .push_back((wanted, std::mem::take(&mut self.waiting)));
        Some(wanted)
    }

    /// The commit of `batch` is over: the notices now on disk, in order. The store commits in
    /// the order commits were asked for, so every earlier batch is on disk too.
    pub fn stored(&mut self, batch: u64) -> Vec<Notice> {
        let mut out = Vec::new();
        if self.failed {
            return out;
        }
        while let Some((c, _)) = self.committing.front()
            && c.batch <= batch
        {
            if let Some((_, notices)) = self.committing.pop_front() {
                out.extend(notices);
            }
        }
        out
    }

    /// Applies `fill` to the record of every finished-job notice still held for a client that
    /// shows outputs (a purge is about to remove their records from the store, where their
    /// outputs are).
    pub fn fill_done(&mut self, mut fill: impl FnMut(JobRecord) -> JobRecord) {
        let held = self
            .waiting
            .iter_mut()
            .chain(self.committing.iter_mut().flat_map(|(_, n)| n.iter_mut()));
        for Notice { event, outputs, .. } in held {
            if !*outputs {
                continue;
            }
            if let WatchEvent::Done(record) = event {
                let taken = std::mem::take(record.as_mut());
                **record = fill(taken);
            }
        }
    }

    /// A commit failed: the node stops. The notices stay held, so their clients see the
    /// connection drop rather than a stream that ended as if complete.
    pub fn failed(&mut self) {
        self.failed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(id: &str) -> (Notice, mpsc::Receiver<WatchEvent>) {
        let (tx, rx) = mpsc::channel(4);
        let notice = Notice {
            to: tx,
            event: WatchEvent::Unknown(id.into()),
            outputs: false,
        };
        (notice, rx)
    }

    fn ids(notices: Vec<Notice>) -> Vec<String> {
        notices
            .into_iter()
            .map(|n| match n.event {
                WatchEvent::Unknown(id) => id,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn notices_wait_for_one_regular_commit_and_share_it() {
        let mut n = Notices::default();
        let (a, _ra) = notice("a");
        n.push(a, false);
        let first = n.next_commit().unwrap();
        assert!(
            !first.now,
            "a job that is not a client's last waits for the window"
        );
        let (b, _rb) = notice("b");
        let (c, _rc) = notice("c");
        n.push(b, false);
        n.push(c, false);
        assert_eq!(
            n.next_commit(),
            None,
            "one regular commit in flight at a time"
        );
        assert_eq!(ids(n.stored(first.batch)), ["a"]);
        let second = n.next_commit().unwrap();
        assert_eq!(ids(n.stored(second.batch)), ["b", "c"]);
        assert_eq!(n.next_commit(), None);
    }

    #[test]
    fn a_clients_last_job_is_committed_at_once_even_behind_a_regular_commit() {
        let mut n = Notices::default();
        let (a, _ra) = notice("a");
        n.push(a, false);
        let regular = n.next_commit().unwrap();
        let (b, _rb) = notice("b");
        n.push(b, true);
        let urgent = n.next_commit().unwrap();
        assert!(urgent.now);
        // The urgent commit covers the regular one queued before it: both batches go, in order.
        assert_eq!(ids(n.stored(urgent.batch)), ["a", "b"]);
        assert!(n.stored(regular.batch).is_empty());
    }

    /// A purge fills the records of the finished-job notices still held, whether waiting for
    /// their commit or covered by one in flight.
    #[test]
    fn held_notices_of_finished_jobs_are_filled() {
        let mut n = Notices::default();
        let done = |id: &str, outputs: bool| {
            let (tx, rx) = mpsc::channel(4);
            let record = JobRecord {
                job_id: id.into(),
                ..JobRecord::default()
            };
            let notice = Notice {
                to: tx,
                event: WatchEvent::Done(Box::new(record)),
                outputs,
            };
            (notice, rx)
        };
        let (a, _ra) = done("a", true);
        n.push(a, false);
        let first = n.next_commit().unwrap();
        let (b, _rb) = done("b", true);
        n.push(b, false);
        // A client that shows no outputs gets none: its notice is left as it is.
        let (c, _rc) = done("c", false);
        n.push(c, false);
        n.fill_done(|mut r| {
            r.definition = format!("filled {}", r.job_id);
            r
        });
        let mut out = n.stored(first.batch);
        let second = n.next_commit().unwrap();
        out.extend(n.stored(second.batch));
        let filled: Vec<String> = out
            .into_iter()
            .map(|n| match n.event {
                WatchEvent::Done(r) => r.definition,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(filled, ["filled a", "filled b", ""]);
    }

    #[test]
    fn after_a_failed_commit_nothing_goes_out() {
        let mut n = Notices::default();
        let (a, _ra) = notice("a");
        n.push(a, true);
        n.next_commit().unwrap();
        n.failed();
        let (b, _rb) = notice("b");
        n.push(b, true);
        assert_eq!(n.next_commit(), None);
        // A commit asked for before the failure that then succeeds releases nothing either:
        // the failed group's writes are lost whatever comes after.
        assert!(n.stored(u64::MAX).is_empty());
    }
}
