//! Clients following jobs (`--poll`, `--stream`), and the live output they are shown.
//!
//! - A **watcher** is a client's `Watch`: it hears of each of its jobs once the job is done and
//!   its record is on disk (the batching is [`super::notices`]), and with `--stream` the jobs'
//!   output as it comes.
//! - **Live output** goes from a job's target to its originator in batches, one batch in
//!   flight per originator, and from there to the watchers. Past the node the job runs on it
//!   is best effort (queues drop rather than slow anything down): every line carries its
//!   offset, and the CLI fills what went missing from the job's result. What a job on the
//!   submitter prints before its client's watch arrives is kept for it.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use coordination::{JobMessage, NodeId, OutputBatch};
use jobs::components::OutputLine;
use mesh::PeerId;
use tokio::sync::mpsc;

use super::{
    Actor, Input, encode,
    notices::{self, Notice},
};
use crate::{control::WatchEvent, records::JobRecord};

/// Events a watcher's channel holds.
const WATCH_DEPTH: usize = 65_536;
/// Bytes of output lines a watcher's channel holds; a client slower than that loses output
/// lines (the CLI fills them in from the result), never a result.
const WATCH_OUTPUT_BUDGET: usize = 8 * 1024 * 1024;

/// The node's end of a watch (see [`watch_channel`]).
#[derive(Clone)]
pub struct WatchSender {
    events: mpsc::Sender<WatchEvent>,
    /// Bytes of output lines sent and not taken yet.
    queued: Arc<AtomicUsize>,
}

impl WatchSender {
    /// Sends a line of output if the client keeps up (the channel and its byte budget have
    /// room); else it is dropped.
    fn output(&self, job_id: String, node: String, line: OutputLine) {
        let size = line.text.len();
        if self.queued.fetch_add(size, Ordering::Relaxed) + size > WATCH_OUTPUT_BUDGET
            || self
                .events
                .try_send(WatchEvent::Output { job_id, node, line })
                .is_err()
        {
            self.queued.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// The channel, for everything but output lines.
    pub(super) fn events(&self) -> &mpsc::Sender<WatchEvent> {
        &self.events
    }

    pub(super) fn is_closed(&self) -> bool {
        self.events.is_closed()
    }
}

/// The client's end of a watch.
pub struct WatchReceiver {
    events: mpsc::Receiver<WatchEvent>,
    queued: Arc<AtomicUsize>,
}

impl WatchReceiver {
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        let event = self.events.recv().await?;
        if let WatchEvent::Output { line, .. } = &event {
            self.queued.fetch_sub(line.text.len(), Ordering::Relaxed);
        }
        Some(event)
    }
}

/// A client following jobs: those it still waits for, those it was told of, and whether it
/// wants their output.
pub(super) struct Watcher {
    pub(super) remaining: HashSet<String>,
    /// Jobs it was told are done: while it still waits for others, a late result of one of
    /// them (a target written off as unreachable came back) is told too.
    pub(super) reported: HashSet<String>,
    pub(super) output: bool,
    pub(super) events: WatchSender,
}

/// Live output on its way to one originator: one batch in flight at a time.
#[derive(Default)]
pub(super) struct OutputQueue {
    /// Lines of jobs running here, waiting while one batch is in flight; at most
    /// [`MAX_WAITING_OUTPUT`] bytes of them (more are dropped: the reader sees the gap by the
    /// lines' offsets and fills it from the job's result).
    pub(super) waiting: Vec<OutputBatch>,
    pub(super) waiting_bytes: usize,
    pub(super) in_flight: bool,
}

/// Live output of one job kept for the watcher still to come (see `Actor::early_output`).
#[derive(Default)]
pub(super) struct EarlyOutput {
    lines: Vec<(String, OutputLine)>,
    bytes: usize,
}

/// What a line of live output costs in memory beside its text, for the caps below.
const LINE_OVERHEAD: usize = 64;

/// Early output kept per job; more is dropped (the CLI fills it in from the result).
const EARLY_OUTPUT_CAP: usize = 256 * 1024;

/// Live output that may wait for one originator (see [`OutputQueue`]).
const MAX_WAITING_OUTPUT: usize = 1024 * 1024;

impl Actor {
    /// The commit a batch of notices waited for is over: each watcher hears of its jobs.
    pub(super) fn notices_stored(&mut self, batch: u64, stored: bool) {
        if !stored || self.store.has_failed() {
            // A commit failed (this one or one before it, whose writes are lost even
            // if later commits succeed): nothing more is shown as done.
            self.notices.failed();
            return;
        }
        // Each job read once for the batch, however many clients watch it.
        let mut read: HashMap<String, Option<JobRecord>> = HashMap::new();
        for notices::Notice {
            to: events,
            event,
            outputs,
        } in self.notices.stored(batch)
        {
            // The record as held in memory; with the outputs its results left on disk
            // (where everything written before this notice now is) for a client that
            // shows them, else without (a `--poll` line needs none: a job of a
            // thousand targets printing megabytes is not sent whole to it).
            let event = match event {
                WatchEvent::Done(record) if outputs => {
                    let stored = read
                        .entry(record.job_id.clone())
                        .or_insert_with(|| self.store.record(&record.job_id));
                    let whole = match stored {
                        Some(stored) => record.filled_from(stored.clone()),
                        None => *record,
                    };
                    WatchEvent::Done(Box::new(whole))
                }
                WatchEvent::Done(record) => WatchEvent::Done(Box::new(record.held_in_memory())),
                other => other,
            };
            // A client whose channel is full of output lines still gets every result:
            // it is sent from a task of its own, which ends when the client goes.
            if let Err(mpsc::error::TrySendError::Full(event)) = events.try_send(event) {
                tokio::spawn(async move {
                    let _ = events.send(event).await;
                });
            }
        }
        self.send_notices();
    }

    /// Target side: a line of live output.
    pub(super) fn output(&mut self, job_id: String, line: OutputLine) {
        let Some(run_id) = self.job_runs.get(&job_id) else {
            return;
        };
        let Some(accepted) = self.accepted.get(run_id) else {
            return;
        };
        let originator = accepted.originator.clone();
        if originator == self.local {
            let node = self.local_name.clone();
            self.tell_watchers(
                &job_id,
                WatchEvent::Output {
                    job_id: job_id.clone(),
                    node,
                    line,
                },
            );
            return;
        }
        let q = self.outputs.entry(originator.clone()).or_default();
        let size = line.text.len() + LINE_OVERHEAD;
        if q.waiting_bytes + size > MAX_WAITING_OUTPUT {
            return;
        }
        q.waiting_bytes += size;
        match q.waiting.last_mut() {
            Some(b) if b.job_id == job_id => b.lines.push(line),
            _ => {
                let seq = self.output_seq.entry(job_id.clone()).or_default();
                *seq += 1;
                q.waiting.push(OutputBatch {
                    job_id,
                    node: self.local.clone(),
                    seq: *seq,
                    lines: vec![line],
                })
            }
        }
        self.flush_output(&originator);
    }

    pub(super) fn flush_output(&mut self, to: &NodeId) {
        let Some(q) = self.outputs.get_mut(to) else {
            return;
        };
        if q.in_flight || q.waiting.is_empty() {
            return;
        }
        let batches = std::mem::take(&mut q.waiting);
        q.waiting_bytes = 0;
        q.in_flight = true;
        let Ok(peer) = to.0.parse::<PeerId>() else {
            return;
        };
        let Some(bytes) = encode(&JobMessage::Output(batches)) else {
            q.in_flight = false;
            return;
        };
        let mesh = self.mesh.clone();
        let inbox = self.inbox.clone();
        let to = to.clone();
        tokio::spawn(async move {
            // Live output is best effort: a lost batch is not resent.
            let _ = mesh.request_job(peer, bytes).await;
            let _ = inbox.send(Input::OutputSent { to }).await;
        });
    }

    pub(super) fn job_done(&mut self, record: JobRecord) {
        let job_id = record.job_id.clone();
        self.early_output.remove(&job_id);
        let event = WatchEvent::Done(Box::new(record));
        let mut told = Vec::new();
        for w in &mut self.watchers {
            if w.remaining.remove(&job_id) {
                w.reported.insert(job_id.clone());
                told.push((w.events.clone(), w.remaining.is_empty(), w.output));
            } else if w.reported.contains(&job_id) {
                told.push((w.events.clone(), false, w.output));
            }
        }
        for (events, last, outputs) in told {
            let events = events.events().clone();
            self.notify_once_stored(events, event.clone(), last, outputs);
        }
        // A watcher with nothing left to wait for is finished: its stream ends once its last
        // notice went out (that notice holds the last sender).
        self.watchers.retain(|w| !w.remaining.is_empty());
    }

    /// Tells a watcher `event` once everything written so far is on disk; `last`: the watcher
    /// waits for nothing else (its commit is asked for at once); `outputs`: it shows the
    /// jobs' outputs (a finished job's record is then sent with them).
    pub(super) fn notify_once_stored(
        &mut self,
        events: mpsc::Sender<WatchEvent>,
        event: WatchEvent,
        last: bool,
        outputs: bool,
    ) {
        let notice = Notice {
            to: events,
            event,
            outputs,
        };
        self.notices.push(notice, last);
        self.send_notices();
    }

    /// Asks the store for the commit the waiting notices need, if any.
    pub(super) fn send_notices(&mut self) {
        let Some(wanted) = self.notices.next_commit() else {
            return;
        };
        let committed = if wanted.now {
            self.store.commit_now()
        } else {
            self.store.committed()
        };
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let stored = committed.await.is_ok();
            let batch = wanted.batch;
            let _ = inbox.send(Input::NoticesStored { batch, stored }).await;
        });
    }

    pub(super) fn tell_watchers(&mut self, job_id: &str, event: WatchEvent) {
        if let (Some(early), WatchEvent::Output { node, line, .. }) =
            (self.early_output.get_mut(job_id), &event)
        {
            let size = line.text.len() + node.len() + LINE_OVERHEAD;
            if early.bytes + size <= EARLY_OUTPUT_CAP {
                early.bytes += size;
                early.lines.push((node.clone(), line.clone()));
            }
            return;
        }
        let WatchEvent::Output { node, line, .. } = event else {
            return;
        };
        for w in &self.watchers {
            if w.output && w.remaining.contains(job_id) {
                w.events
                    .output(job_id.to_string(), node.clone(), line.clone());
            }
        }
    }

    /// Follows `job_ids` for a client. A job that is neither open in memory nor complete on
    /// disk has just finished and its last result is still in the store's write queue: the
    /// store is flushed (off this task) and the job looked up again.
    pub(super) fn watch(
        &mut self,
        job_ids: Vec<String>,
        output: bool,
        events: WatchSender,
        flushed: bool,
    ) {
        let mut remaining = HashSet::new();
        let mut reported = HashSet::new();
        let mut recheck = Vec::new();
        for id in job_ids {
            // What the job printed before anybody watched goes first.
            if let Some(early) = self.early_output.remove(&id)
                && output
            {
                for (node, line) in early.lines {
                    events.output(id.clone(), node, line);
                }
            }
            if let Some(r) = self.records.get(&id) {
                if r.results.len() >= r.nodes.len() {
                    let event = WatchEvent::Done(Box::new(r.clone()));
                    self.notify_once_stored(events.events().clone(), event, true, output);
                    reported.insert(id);
                } else {
                    remaining.insert(id);
                }
                continue;
            }
            match self.finished_record(&id) {
                // Read back from the store, whose last writes may not be synced yet.
                Some(r) if r.results.len() >= r.nodes.len() => {
                    let done = WatchEvent::Done(Box::new(r));
                    self.notify_once_stored(events.events().clone(), done, true, output);
                    reported.insert(id);
                }
                Some(r) if flushed => {
                    // On disk and still incomplete after a flush: what is known is all there is.
                    let done = WatchEvent::Done(Box::new(r));
                    self.notify_once_stored(events.events().clone(), done, true, output);
                }
                Some(_) => recheck.push(id),
                None if flushed => {
                    let _ = events.events().try_send(WatchEvent::Unknown(id));
                }
                None => recheck.push(id),
            }
        }
        if !recheck.is_empty() {
            let store = self.store.clone();
            let inbox = self.inbox.clone();
            let events = events.clone();
            tokio::spawn(async move {
                let _ = tokio::task::spawn_blocking(move || store.flush()).await;
                let _ = inbox
                    .send(Input::Watch {
                        job_ids: recheck,
                        output,
                        events,
                        flushed: true,
                    })
                    .await;
            });
        }
        if !remaining.is_empty() {
            self.watchers.push(Watcher {
                remaining,
                reported,
                output,
                events,
            });
        }
    }
}

/// A channel for a watcher: what the node sends, and what the client reads.
pub fn watch_channel() -> (WatchSender, WatchReceiver) {
    let (tx, rx) = mpsc::channel(WATCH_DEPTH);
    let queued = Arc::new(AtomicUsize::new(0));
    let sender = WatchSender {
        events: tx,
        queued: Arc::clone(&queued),
    };
    (sender, WatchReceiver { events: rx, queued })
}

#[cfg(test)]
mod tests {
    use jobs::components::OutputStream;

    use super::*;

    fn line(offset: u64, size: usize) -> OutputLine {
        OutputLine {
            stream: OutputStream::Stdout,
            offset,
            text: "x".repeat(size),
        }
    }

    #[tokio::test]
    async fn a_slow_client_holds_at_most_the_budget_of_output_lines() {
        let (tx, mut rx) = watch_channel();
        let piece = 64 * 1024;
        let fits = WATCH_OUTPUT_BUDGET / piece;
        for i in 0..fits + 10 {
            tx.output("j".into(), "n1".into(), line((i * piece) as u64, piece));
        }
        // Done and other events still go through.
        tx.events()
            .try_send(WatchEvent::Unknown("k".into()))
            .unwrap();
        let mut got = 0;
        while let Ok(Some(event)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv()).await
        {
            if matches!(event, WatchEvent::Output { .. }) {
                got += 1;
            }
        }
        assert_eq!(got, fits);
        // Taken in: room again.
        tx.output("j".into(), "n1".into(), line(0, piece));
        assert!(matches!(rx.recv().await, Some(WatchEvent::Output { .. })));
    }
}
