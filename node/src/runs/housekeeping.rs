//! Timers and sweeps: the actor's tick, and forgetting what is old (accepted runs past
//! their memory, records past their retention, blobs no job uses).

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use coordination::{originator, outbox};
use tokio::sync::oneshot;
use tracing::info;

use super::{ACCEPTED_SWEEP_EVERY, Actor, now_ms, run_files};

/// How often the blob store is swept: a quarter of the retention, between 1 s and 10 min.
pub(super) fn blob_sweep_every(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

pub(super) fn record_sweep_every(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

impl Actor {
    /// `manage --purge-jobs`: every record of a run that is over is forgotten.
    pub(super) fn purge(&mut self, done: oneshot::Sender<()>) {
        // Jobs still waiting for results are kept: clients follow them and their
        // results are on their way. So are the other jobs of their runs, done or not: a run
        // followed again (`--follow-run`) or listed is whole, its failures included. What
        // is over is forgotten, here and on disk (in order with every other write).
        self.records.retain(|_, r| r.results.len() < r.nodes.len());
        let mut open: HashSet<String> = self.records.keys().cloned().collect();
        let open_runs: HashSet<&str> = self.records.values().map(|r| r.run_id.as_str()).collect();
        open.extend(
            open_runs
                .iter()
                .filter_map(|run_id| self.open_runs.get(*run_id))
                .flat_map(|run| run.parents.iter().flat_map(|p| &p.jobs))
                .map(|job| job.job_id.clone()),
        );
        self.closing.retain(|job, _| open.contains(job));
        self.early_output.retain(|job, _| open.contains(job));
        self.cross.purge_queries(&open);
        // Decided on what is on disk: every result taken so far is written first (an
        // operator's purge is rare enough to wait here for that commit, and for the scan of
        // every record's key below: about 0.16 s for 35 000 records, well within a
        // heartbeat, and no other run can change the records meanwhile). Notices of
        // jobs just done still to go out take their outputs now, before the records
        // go (memory holds results without their outputs).
        self.store.flush();
        let store = &self.store;
        self.notices
            .fill_done(|record| match store.record(&record.job_id) {
                Some(stored) => record.filled_from(stored),
                None => record,
            });
        self.store.purge_jobs_but(&open, super::now_ms());
        self.purge_barrier = Some(self.closing_next);
        self.ask_closing_commit();
        let _ = done.send(());
    }

    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        self.settle_starts(now);
        let actions = self.originator.handle(originator::Input::Tick, now);
        self.originator_actions(actions);
        let actions = self.outbox.handle(outbox::Input::Tick, now);
        self.outbox_actions(actions);
        self.wait_tick(now);
        self.query_tick(now);
        self.feed_executor();
        self.watchers.retain(|w| !w.events.is_closed());
        if now >= self.next_accepted_sweep {
            self.next_accepted_sweep = now + ACCEPTED_SWEEP_EVERY;
            self.forget_accepted_runs();
            self.members.forget_gone(now);
        }
        if let Some(retention) = self.record_retention
            && now >= self.next_record_sweep
        {
            self.next_record_sweep = now + record_sweep_every(retention);
            self.forget_old_records(retention);
            let expire = outbox::Input::Expire { retention };
            let actions = self.outbox.handle(expire, now);
            self.outbox_actions(actions);
        }
        if let Some(retention) = self.blob_retention
            && now >= self.next_blob_sweep
        {
            self.next_blob_sweep = now + blob_sweep_every(retention);
            self.sweep_blobs(retention);
            // Who else holds a file is worth telling only while this node has the file.
            let blobs = &self.blobs;
            self.holders.retain(|hash, _| blobs.holds(hash));
        }
    }

    /// Forgets the runs this node accepted more than [`REMEMBER_RUNS`] ago that it owes nothing
    /// more (no job pending, no result undelivered).
    pub(super) fn forget_accepted_runs(&mut self) {
        let (now_unix_ms, now) = (now_ms(), Instant::now());
        let store = &self.store;
        let outbox = &self.outbox;
        let refusals = &mut self.refusals;
        self.accepted.retain(|run_id, a| {
            // A run whose results have not reached its originator is remembered however old:
            // that originator resends it when it comes back, and it must not run again.
            let keep = !a.old_enough_to_forget(now_unix_ms, now) || outbox.holds_run(run_id);
            if !keep {
                store.delete_accepted(run_id, &a.outcomes);
                if let Some(jobs) = a.refused {
                    refusals.release(&a.originator, jobs);
                }
            }
            keep
        });
    }

    /// Forgets the records of jobs submitted more than `retention` ago whose every target
    /// has reported (jobs still waiting for results are in memory, and kept).
    pub(super) fn forget_old_records(&self, retention: Duration) {
        // One sweep at a time (a long history takes a while to read).
        if self
            .sweeping_records
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let now = (now_ms(), jobs::processes::BootInstant::now());
        // Open, or just done with a notice still to go out that reads its record then.
        let open: HashSet<String> = self
            .records
            .keys()
            .chain(self.closing.keys())
            .cloned()
            .collect();
        // Runs whose results may still come (targets written off may come back and report:
        // their real results replace the write-offs, as the operator was told): their
        // records stay.
        let awaited = self.originator.runs_awaiting_results();
        let store = self.store.clone();
        let sweeping = Arc::clone(&self.sweeping_records);
        tokio::task::spawn_blocking(move || {
            let forgotten = store.forget_records(retention, now, &open, &awaited);
            // The next sweep reads the store once these deletes are on it, or it would count
            // (and delete) the same records again.
            store.flush();
            sweeping.store(false, std::sync::atomic::Ordering::SeqCst);
            if forgotten > 0 {
                info!(
                    records = forgotten,
                    retention_secs = retention.as_secs(),
                    "forgot the records of jobs submitted longer ago than --record-retention"
                );
            }
        });
    }

    /// Removes blobs unused for `retention`, except the files of runs still open here: those
    /// this node submitted and those of jobs it has yet to run.
    pub(super) fn sweep_blobs(&self, retention: Duration) {
        let Some(unused_since) = SystemTime::now().checked_sub(retention) else {
            return;
        };
        let mut keep: HashSet<jobs::Fingerprint> =
            self.job_files.values().map(|f| f.hash).collect();
        keep.extend(self.open_runs.values().flat_map(run_files));
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || {
            let (count, bytes) = blobs.evict(unused_since, &keep);
            if count > 0 {
                info!(
                    count,
                    bytes,
                    retention_secs = retention.as_secs(),
                    "removed files from the blob store that went unused for the blob retention"
                );
            }
        });
    }
}
