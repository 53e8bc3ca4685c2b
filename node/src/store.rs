//! The node's database (one redb file in the state directory).
//!
//! | table      | key → value                          | kept by         |
//! |------------|--------------------------------------|-----------------|
//! | `jobs`     | job id → [`JobRecord`] (no results)  | the originator  |
//! | `results`  | `job/node` → [`NodeResult`]          | the originator  |
//! | `runs`     | run id → [`StoredRun`]               | the originator  |
//! | `outbox`   | `run/job` → [`OutboxEntry`]          | a target        |
//! | `accepted` | run id → [`Accepted`]                | a target        |
//! | `pending`  | `run/job` → [`PendingJob`]           | a target        |
//! | `accepted-runs` | run id → `Run` (no inline files), while jobs of it are pending | a target |
//! | `cache`    | see `jobs::cache`                    | a target        |
//! | `query-values` | `job/peer` → [`QueryValue`]      | the originator  |
//! | `meta`     | `format`, `last-submission` → number | every node (`last-submission`: an originator) |
//!
//! Reads happen on the caller's thread. Writes go to one writer thread that commits them in
//! groups (one transaction for everything that arrived within [`GROUP_WINDOW`]), so a busy node
//! does not pay a commit per job result. The writer sleeps through its window instead of waking
//! for every write; a flush request wakes it and commits at once.
//!
//! A group is synced to disk only when somebody waits for it or its oldest write is
//! [`DURABLE_WITHIN`] old. Whoever tells another node "I have it" (an accepted run, results taken
//! in, a QUERY value collected) or "it is done" (a target's results: the jobs' ends and what they
//! cached) or a client "submitted" waits for that first ([`Store::committed`],
//! [`Store::commit_now`]), so a crash loses nothing that was told: at most the last second of
//! a target's own bookkeeping that nobody heard of yet, whose jobs then report as interrupted
//! (those that had started; see `jobs::processes`). A wait with nothing written since the last
//! sync (a target trying again to send results long on disk) is answered at once.
//!
//! A commit that fails (a full or broken disk) drops its group's writes: its waiters hear that
//! nothing was stored, and [`Store::failed`] resolves with the reason, for the node to stop. A node that
//! cannot write its database cannot keep what it acknowledges; stopping keeps the rule above
//! (what was acknowledged is on disk, the rest is resent by its senders), as a crash would.

mod writer;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use coordination::{JobResult, NodeId, Run};
use jobs::{executor::ResultState, processes::BootInstant};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, warn};

use crate::records::{JobRecord, NodeResult, RecordKey};
use writer::{Committed, Disk, Op, Table, test_hook, writer};

/// How long the writer gathers writes into one commit (a flush request ends it early).
pub const GROUP_WINDOW: Duration = Duration::from_millis(100);
/// Most writes in one commit.
const MAX_GROUP: usize = 4096;
/// Longest a write stays in memory only (see the writer thread, `store::writer`).
pub const DURABLE_WITHIN: Duration = Duration::from_secs(1);

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
const ACCEPTED: TableDefinition<&str, &[u8]> = TableDefinition::new("accepted");
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
const ACCEPTED_RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("accepted-runs");
const RESULTS: TableDefinition<&str, &[u8]> = TableDefinition::new("results");
const CACHE: TableDefinition<&str, &[u8]> = TableDefinition::new(jobs::cache::TABLE_NAME);
/// QUERY values an originator collected (`JOB/PEER`), kept until the job is over.
const QUERY_VALUES: TableDefinition<&str, &[u8]> = TableDefinition::new("query-values");
/// How the jobs of an accepted run ended here (`RUN/FINGERPRINT`: `true` if not failed), the
/// first of each fingerprint: a JOB_WAIT of that run asking after a restart is answered by
/// them, whatever the cache still holds. Kept as long as the run's `accepted` row.
const RUN_OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("run-outcomes");
/// Counters the node keeps (`last-submission`: the number of the last run submitted here).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// How much a start writes (and removes again) to learn that the disk takes writes.
const PROBE_BYTES: usize = 64 * 1024;

/// Writes [`PROBE_BYTES`] to disk and removes them, each durably: a disk that takes no more
/// (full, read-only, failing) fails the node's start here, before it joins the mesh, rather
/// than at its first write a moment after it came alive. (A database with enough free pages
/// of its own passes on a full disk; its later writes stop the node as any failed write does.)
fn probe_write(db: &Database, path: &Path) -> Result<(), String> {
    if let Some(hook) = test_hook(path).filter(|h| h.exists()) {
        return Err(format!("test hook {} is set", hook.display()));
    }
    for value in [Some(vec![0u8; PROBE_BYTES]), None] {
        let mut w = db.begin_write().map_err(|e| e.to_string())?;
        w.set_durability(Durability::Immediate)
            .map_err(|e| e.to_string())?;
        {
            let mut meta = w.open_table(META).map_err(|e| e.to_string())?;
            match &value {
                Some(bytes) => meta.insert(PROBE_KEY, bytes.as_slice()).map(drop),
                None => meta.remove(PROBE_KEY).map(drop),
            }
            .map_err(|e| e.to_string())?;
        }
        w.commit().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Every table, created when the database opens.
const TABLES: [Table; 11] = [
    JOBS,
    RUNS,
    OUTBOX,
    ACCEPTED,
    PENDING,
    RESULTS,
    CACHE,
    QUERY_VALUES,
    ACCEPTED_RUNS,
    RUN_OUTCOMES,
    META,
];
const LAST_SUBMISSION: &str = "last-submission";
/// The layout of the database (`meta` row `format`). A release that writes rows older ones
/// would misread or miss raises it; a release refuses a database of a higher format than its
/// own (a downgrade) rather than run on half of it. 1: args and envs a row per name, records
/// numbered by submission. It says which layout this release writes, not that every row is
/// in it: rows of older layouts are rewritten at open (the cache's args, after this is set),
/// so a migration must not be skipped on account of it.
const FORMAT_KEY: &str = "format";
/// The key of [`probe_write`]'s bytes (present only during a start).
const PROBE_KEY: &str = "start-probe";
pub const STORE_FORMAT: u64 = 1;

/// Deletes sent to the writer together when old records are forgotten.
const FORGET_BATCH: usize = 1024;

/// A run this node submitted, kept until every result is in so a restart can resume it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRun {
    pub run: Run,
    pub finished: bool,
    /// Until when (Unix ms) targets of a finished run that were written off may come back and
    /// be sent their jobs; 0: none may. A restart within it takes the run up again for them.
    #[serde(default)]
    pub write_offs_until_ms: u64,
}

/// A job of an accepted run that has not finished here. Its fingerprint and parent let a
/// restart record it failed (interrupted) in the cache, where JOB_WAITs look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingJob {
    pub job_id: String,
    /// `None` for rows written before fingerprints were kept, and for refused runs.
    pub fingerprint: Option<jobs::Fingerprint>,
    pub parent_id: String,
}

/// A target's value of a QUERY job's arg, as its originator keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryValue {
    pub job_id: String,
    pub node: NodeId,
    pub name: String,
    pub value: serde_json::Value,
}

/// A result waiting to reach its originator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub to: NodeId,
    pub result: JobResult,
    /// When the result was put here on the boot clock: after a restart in the same boot, its
    /// age is known whatever the wall clock did meanwhile (`None` in rows of releases before
    /// it, or where the boot cannot be told: then the wall clock says, from its finish time).
    #[serde(default)]
    pub finished_on_boot: Option<jobs::processes::BootInstant>,
}

/// How the jobs of a run ended here, by fingerprint (`true`: not failed).
pub type RunOutcomes = Vec<(jobs::Fingerprint, bool)>;

/// A run this node accepted as a target (its unfinished jobs are in the `pending` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub originator: NodeId,
    pub stream: bool,
    /// When the run was accepted; finished runs are remembered for a day to refuse resends.
    pub accepted_unix_ms: u64,
    /// Order of acceptance on this node (jobs queued again after a restart keep it); 0 in
    /// rows of releases before it.
    #[serde(default)]
    pub seq: u64,
    /// When the run was accepted on the boot clock: within the same boot its age is known
    /// after a restart whatever the wall clock did (`None` in rows of releases before it, or
    /// where the boot cannot be told).
    #[serde(default)]
    pub accepted_on_boot: Option<jobs::processes::BootInstant>,
}

/// Queued writes before writers wait; the writer drains far faster than jobs finish.
const WRITE_QUEUE: usize = 65_536;

/// A problem with the database.
#[derive(Debug, thiserror::Error)]
#[error("database {path}: {reason}")]
pub struct StoreError {
    path: String,
    reason: String,
}

/// The node's database.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writes: mpsc::SyncSender<Op>,
    /// The writer thread, woken when a write cannot wait for the end of its window.
    writer: thread::Thread,
    /// Why the writer could not commit, once it could not.
    failure: watch::Receiver<Option<String>>,
    /// Told when the writer thread has ended (see [`Store::closing`]); taken once.
    writer_done: Arc<std::sync::Mutex<Option<mpsc::Receiver<()>>>>,
}

/// Waits for a store to close: its writer thread ended, and the database closed (redb
/// writes its state on the close; a process that ends before leaves a database that the
/// next start has to repair, a walk over all of it).
pub struct StoreClosing {
    writer_done: mpsc::Receiver<()>,
    db: std::sync::Weak<Database>,
}

impl StoreClosing {
    /// Waits up to `timeout` for the store to close, once nothing uses it any more; whether
    /// it did.
    pub fn wait(self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        if self.writer_done.recv_timeout(timeout).is_err() {
            return false;
        }
        // The writer usually holds the database last and closes it as it ends; else the
        // last user does, on its own thread.
        while self.db.strong_count() > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Plain data into memory: cannot fail.
    ciborium::into_writer(v, &mut out).expect("CBOR encoding into memory");
    out
}

/// The database's page cache (at most half of it holds pages written but not yet in the
/// file). Pages a sweep or a listing read stay in it: with 32 MiB a node with a long history
/// idled at 75 MB; with 4 MiB at 25-36 MB, and neither orchestrations nor listings were
/// slower (docs/benchmarks.md, "The database's page cache").
const CACHE_BYTES: usize = 4 * 1024 * 1024;

impl Store {
    /// Opens (or creates) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        // A bounded page cache: redb's default (1 GiB) let an idle daemon's memory grow with
        // its database (one with 100 000 records settled at 250 MB resident after a restart).
        let db = Arc::new(
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(path)
                .map_err(|e| err(&e))?,
        );
        // Job output, ENV values and args: for this node's owner only, whatever the state
        // directory's own mode (an operator may have created it 0755).
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| err(&e))?;
        {
            let w = db.begin_write().map_err(|e| err(&e))?;
            for t in TABLES {
                w.open_table(t).map_err(|e| err(&e))?;
            }
            {
                let mut meta = w.open_table(META).map_err(|e| err(&e))?;
                let format: u64 = match meta.get(FORMAT_KEY).map_err(|e| err(&e))? {
                    Some(v) => ciborium::from_reader(v.value()).map_err(|e| err(&e))?,
                    None => 0,
                };
                if format > STORE_FORMAT {
                    return Err(err(&format!(
                        "written by a newer directord-mesh release (database format {format}; \
                         this release reads up to {STORE_FORMAT}): run that release or a later \
                         one, or move the state directory aside to start this node afresh \
                         (it then joins as a new node)"
                    )));
                }
                if format < STORE_FORMAT {
                    meta.insert(FORMAT_KEY, encode(&STORE_FORMAT).as_slice())
                        .map_err(|e| err(&e))?;
                }
            }
            w.commit().map_err(|e| err(&e))?;
        }
        probe_write(&db, path).map_err(|e| StoreError {
            path: path.display().to_string(),
            reason: format!("cannot be written: {e}"),
        })?;
        let (writes, rx) = mpsc::sync_channel(WRITE_QUEUE);
        let (failed, failure) = watch::channel(None);
        let disk = Disk {
            db: db.clone(),
            path: path.to_path_buf(),
            failed,
            fail_hook: test_hook(path),
        };
        // One message, when the writer ends: a bound of one.
        let (done, writer_done) = mpsc::sync_channel(1);
        let writer = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                writer(disk, rx);
                let _ = done.send(());
            })
            .map_err(|e| err(&e))?
            .thread()
            .clone();
        Ok(Store {
            db,
            writes,
            writer,
            failure,
            writer_done: Arc::new(std::sync::Mutex::new(Some(writer_done))),
        })
    }

    /// What waits for this store to close, once every user of it is gone (`None` once
    /// taken: one waits).
    pub fn closing(&self) -> Option<StoreClosing> {
        let writer_done = self.writer_done.lock().ok()?.take()?;
        Some(StoreClosing {
            writer_done,
            db: Arc::downgrade(&self.db),
        })
    }

    /// Resolves with the reason once a commit has failed (never, while the disk takes them).
    pub fn failed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut failure = self.failure.clone();
        async move {
            let reason = match failure.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone(),
                Err(_) => None,
            };
            match reason {
                Some(reason) => reason,
                // The writer is gone: only when the process goes down; nothing to report.
                None => std::future::pending().await,
            }
        }
    }

    /// Whether a commit has failed (the writes of its group are lost, whatever comes after).
    pub fn has_failed(&self) -> bool {
        self.failure.borrow().is_some()
    }

    /// The database, shared with the job cache.
    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    fn send(&self, op: Op) {
        let urgent = op.urgent();
        match self.writes.try_send(op) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(op)) => {
                // A full queue cannot wait for the window to end.
                self.writer.unpark();
                // Err: the writer is gone, which only happens when the process is going down.
                let _ = self.writes.send(op);
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {}
        }
        if urgent {
            self.writer.unpark();
        }
    }

    /// Waits until every write queued so far is on disk.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Op::Commit {
            done: Committed::Blocking(tx),
            now: true,
        });
        let _ = rx.recv();
    }

    /// Resolves once every write queued so far is on disk, in the writer's next group (the
    /// window is not cut short). Resolves at once (with an error) if the writer is gone.
    pub fn committed(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Commit {
            done: Committed::Async(tx),
            now: false,
        });
        rx
    }

    /// Like [`Store::committed`], but commits at once.
    pub fn commit_now(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Commit {
            done: Committed::Async(tx),
            now: true,
        });
        rx
    }

    /// Writes a record's description (its results are written one by one with
    /// [`Store::put_result`]).
    pub fn put_record(&self, record: &JobRecord) {
        let mut meta = record.clone();
        meta.results.clear();
        self.send(Op::Put(JOBS, record.job_id.clone(), encode(&meta)));
    }

    pub fn put_result(&self, job_id: &str, node: &str, result: &NodeResult) {
        self.send(Op::Put(RESULTS, format!("{job_id}/{node}"), encode(result)));
    }

    /// The number of the last run submitted here (0: none yet, or only before this was kept).
    pub fn last_submission(&self) -> u64 {
        self.get(META, LAST_SUBMISSION).unwrap_or(0)
    }

    /// Remembers `n` as the number of the last run submitted here, in the submission's commit.
    pub fn put_last_submission(&self, n: u64) {
        self.send(Op::Put(META, LAST_SUBMISSION.to_string(), encode(&n)));
    }

    pub fn put_run(&self, run: &StoredRun) {
        self.send(Op::Put(RUNS, run.run.run_id.clone(), encode(run)));
    }

    pub fn put_outbox(&self, entry: &OutboxEntry) {
        self.send(Op::Put(OUTBOX, outbox_key(&entry.result), encode(entry)));
    }

    /// The row of `result` in the outbox, as last committed.
    pub fn outbox_entry(&self, result: &JobResult) -> Option<OutboxEntry> {
        self.get(OUTBOX, &outbox_key(result))
    }

    pub fn delete_outbox(&self, result: &JobResult) {
        self.send(Op::Delete(OUTBOX, outbox_key(result)));
    }

    /// Remembers an accepted run and its jobs, all pending (in one commit).
    pub fn put_accepted(&self, run_id: &str, accepted: &Accepted, jobs: &[PendingJob]) {
        let mut ops = Vec::with_capacity(jobs.len() + 1);
        ops.push(Op::Put(ACCEPTED, run_id.to_string(), encode(accepted)));
        for job in jobs {
            ops.push(Op::Put(
                PENDING,
                format!("{run_id}/{}", job.job_id),
                encode(job),
            ));
        }
        self.send(Op::Batch(ops));
    }

    /// A job of an accepted run finished; its result, for another node, goes into the outbox
    /// in the same commit (else a crash between the two could leave the job neither pending,
    /// so reported interrupted, nor owed), and so does `outcome`, how the job with that
    /// fingerprint ended in the run (`true`: not failed), if it is the run's first (see
    /// [`Store::put_run_outcome`]).
    pub fn job_finished(
        &self,
        run_id: &str,
        job_id: &str,
        outbox: Option<&OutboxEntry>,
        outcome: Option<(jobs::Fingerprint, bool)>,
    ) {
        let mut ops = vec![Op::Delete(PENDING, format!("{run_id}/{job_id}"))];
        if let Some(entry) = outbox {
            ops.push(Op::Put(OUTBOX, outbox_key(&entry.result), encode(entry)));
        }
        if let Some((fingerprint, ok)) = outcome {
            ops.push(Op::Put(
                RUN_OUTCOMES,
                run_outcome_key(run_id, &fingerprint),
                encode(&ok),
            ));
        }
        match ops.len() {
            1 => self.send(ops.remove(0)),
            _ => self.send(Op::Batch(ops)),
        }
    }

    pub fn put_query_value(&self, v: &QueryValue) {
        let key = format!("{}/{}", v.job_id, v.node);
        self.send(Op::Put(QUERY_VALUES, key, encode(v)));
    }

    pub fn delete_query_value(&self, job_id: &str, node: &NodeId) {
        self.send(Op::Delete(QUERY_VALUES, format!("{job_id}/{node}")));
    }

    /// Every QUERY value kept, in key order (by job).
    pub fn query_values(&self) -> Vec<QueryValue> {
        self.all(QUERY_VALUES).into_iter().map(|(_, v)| v).collect()
    }

    /// Forgets an accepted run, with the `outcomes` kept of it.
    pub fn delete_accepted(&self, run_id: &str, outcomes: &[(jobs::Fingerprint, bool)]) {
        let mut ops = vec![
            Op::Delete(ACCEPTED, run_id.to_string()),
            Op::Delete(ACCEPTED_RUNS, run_id.to_string()),
        ];
        ops.extend(
            outcomes
                .iter()
                .map(|(fp, _)| Op::Delete(RUN_OUTCOMES, run_outcome_key(run_id, fp))),
        );
        self.send(Op::Batch(ops));
    }

    /// How the job with `fingerprint` of the accepted run `run_id` ended here (`ok`: not
    /// failed), for the run's own JOB_WAITs, if it is the run's first with that fingerprint
    /// (most come with [`Store::job_finished`]). Sent before the job's result: whatever of
    /// that is on disk, this is too.
    pub fn put_run_outcome(&self, run_id: &str, fingerprint: &jobs::Fingerprint, ok: bool) {
        self.send(Op::Put(
            RUN_OUTCOMES,
            run_outcome_key(run_id, fingerprint),
            encode(&ok),
        ));
    }

    /// The outcomes [`Store::put_run_outcome`] and [`Store::job_finished`] kept, by run, and
    /// the keys of rows that do not read as one (damaged: never restored, for the caller to
    /// delete with [`Store::delete_run_outcomes`]).
    pub fn run_outcomes(&self) -> (HashMap<String, RunOutcomes>, Vec<String>) {
        let values: HashMap<String, bool> = self.all(RUN_OUTCOMES).into_iter().collect();
        let mut kept: HashMap<String, RunOutcomes> = HashMap::new();
        let mut damaged = Vec::new();
        for key in self.keys(RUN_OUTCOMES) {
            let row = key
                .rsplit_once('/')
                .and_then(|(run, fp)| Some((run, jobs::Fingerprint::from_hex(fp)?)))
                .filter(|(run, fp)| run_outcome_key(run, fp) == key)
                .zip(values.get(&key));
            match row {
                Some(((run, fp), ok)) => kept.entry(run.to_string()).or_default().push((fp, *ok)),
                None => damaged.push(key),
            }
        }
        (kept, damaged)
    }

    /// Forgets the outcome rows `keys` (see [`run_outcome_key`]).
    pub fn delete_run_outcomes(&self, keys: Vec<String>) {
        self.send_in_batches(
            keys.into_iter()
                .map(|key| Op::Delete(RUN_OUTCOMES, key))
                .collect(),
        );
    }

    /// Keeps an accepted run while jobs of it are pending here, so that a restart can queue
    /// again those that never started. Written before [`Store::put_accepted`]: whatever of
    /// that is on disk, this is too. Inline files are left out (they are in the blob store).
    pub fn put_accepted_run(&self, run: &Run) {
        let bytes = if run.inline.is_empty() {
            encode(run)
        } else {
            encode(&Run {
                inline: Vec::new(),
                ..run.clone()
            })
        };
        self.send(Op::Put(ACCEPTED_RUNS, run.run_id.clone(), bytes));
    }

    /// The run `run_id` as [`Store::put_accepted_run`] kept it.
    pub fn accepted_run(&self, run_id: &str) -> Option<Run> {
        self.get(ACCEPTED_RUNS, run_id)
    }

    /// The runs [`Store::put_accepted_run`] keeps.
    pub fn accepted_run_ids(&self) -> Vec<String> {
        self.keys(ACCEPTED_RUNS)
    }

    /// No job of `run_id` is pending here any more (sent after the last one's
    /// [`Store::job_finished`]).
    pub fn forget_accepted_run(&self, run_id: &str) {
        self.send(Op::Delete(ACCEPTED_RUNS, run_id.to_string()));
    }

    /// Unfinished jobs of accepted runs, by run.
    pub fn pending_jobs(&self) -> HashMap<String, Vec<PendingJob>> {
        let mut out: HashMap<String, Vec<PendingJob>> = HashMap::new();
        let Some(r) = read(self.db.begin_read()) else {
            return out;
        };
        let Some(t) = read(r.open_table(PENDING)) else {
            return out;
        };
        let Some(iter) = read(t.iter()) else {
            return out;
        };
        for row in iter.filter_map(read) {
            if let Some((run, job)) = row.0.value().split_once('/') {
                // A row without a readable value (written before fingerprints were kept) still
                // names its job.
                let pending = ciborium::from_reader::<PendingJob, _>(row.1.value())
                    .ok()
                    .filter(|p| p.job_id == job)
                    .unwrap_or_else(|| PendingJob {
                        job_id: job.to_string(),
                        fingerprint: None,
                        parent_id: String::new(),
                    });
                out.entry(run.to_string()).or_default().push(pending);
            }
        }
        out
    }

    /// Forgets every job record and its results (and the QUERY values collected for them),
    /// and every run that is over (see [`Store::purge_jobs_but`]).
    pub fn purge_jobs(&self, now_ms: u64) {
        self.purge_jobs_but(&HashSet::new(), now_ms);
        self.flush();
    }

    /// Like [`Store::purge_jobs`], keeping the records of the jobs in `keep` with their
    /// results and QUERY values: their rows stay as they are (nothing is written again).
    /// Runs that are over go too, but for those whose written-off targets may still come
    /// back for their jobs (until `write_offs_until_ms`, by the wall clock's `now_ms`); the
    /// runs of kept (open) jobs are not over. Decided on what is on disk now: the caller
    /// flushed every write of those jobs first. Queued in order with every other write; not
    /// flushed.
    pub fn purge_jobs_but(&self, keep: &HashSet<String>, now_ms: u64) {
        let Some(snapshot) = read(self.db.begin_read()) else {
            return;
        };
        let runs_over: Vec<Op> = all_in::<RunOver>(&snapshot, RUNS)
            .into_iter()
            .filter(|(_, r)| r.finished && r.write_offs_until_ms <= now_ms)
            .map(|(run_id, _)| Op::Delete(RUNS, run_id))
            .collect();
        if keep.is_empty() {
            drop(snapshot);
            // Everything goes: cleared, whatever the history's length.
            for v in self.query_values() {
                self.delete_query_value(&v.job_id, &v.node);
            }
            self.send(Op::Clear(JOBS));
            self.send(Op::Clear(RESULTS));
            self.send_in_batches(runs_over);
            return;
        }
        let goes = |job: &str| !keep.contains(job);
        let mut deletes: Vec<Op> = keys_in(&snapshot, JOBS)
            .into_iter()
            .filter(|id| goes(id))
            .map(|id| Op::Delete(JOBS, id))
            .collect();
        deletes.extend(
            keys_in(&snapshot, RESULTS)
                .into_iter()
                .filter(|key| key.split_once('/').is_none_or(|(job, _)| goes(job)))
                .map(|key| Op::Delete(RESULTS, key)),
        );
        deletes.extend(
            all_in::<QueryValue>(&snapshot, QUERY_VALUES)
                .into_iter()
                .filter(|(_, v)| goes(&v.job_id))
                .map(|(key, _)| Op::Delete(QUERY_VALUES, key)),
        );
        deletes.extend(runs_over);
        drop(snapshot);
        self.send_in_batches(deletes);
    }

    /// Sends `ops` as batches of at most [`FORGET_BATCH`]: a long history's deletes never
    /// fill the writer's queue one at a time (its senders would wait), and each batch is a
    /// vector of its own size (one split off the front of the whole list kept the whole
    /// list's capacity: 100 000 records forgotten at once held 560 MB in the queue).
    fn send_in_batches(&self, ops: Vec<Op>) {
        let mut ops = ops.into_iter();
        loop {
            let batch: Vec<Op> = ops.by_ref().take(FORGET_BATCH).collect();
            if batch.is_empty() {
                break;
            }
            self.send(Op::Batch(batch));
        }
    }

    /// Forgets the records (and results, and QUERY values) of the jobs created `retention`
    /// or longer before `now` (on the boot clock when the record was made in this boot, else
    /// by the wall clock, Unix ms), except those in `open` and those of the runs in
    /// `kept_runs`, the finished runs no record is
    /// left of, and results and QUERY values whose record is gone. Returns how many records.
    /// Reads the whole tables: for a sweep now and then, not for every job.
    pub fn forget_records(
        &self,
        retention: Duration,
        now: (u64, Option<BootInstant>),
        open: &HashSet<String>,
        kept_runs: &HashSet<String>,
    ) -> usize {
        /// Only what the choice needs is read of each record.
        #[derive(Deserialize)]
        struct Created {
            created_unix_ms: u64,
            #[serde(default)]
            created_on_boot: Option<BootInstant>,
            #[serde(default)]
            run_id: String,
        }
        let (now_ms, now_boot) = now;
        let too_old = |r: &Created| {
            let then = (r.created_on_boot.as_ref(), r.created_unix_ms);
            jobs::processes::age(then, (now_boot.as_ref(), now_ms)) >= retention
        };
        // One snapshot for every table: a record and its results are written in that order, so
        // a result this sweep sees without its record is an orphan, not a result of a job
        // recorded since.
        let Some(snapshot) = read(self.db.begin_read()) else {
            return 0;
        };
        // Read a row at a time, keeping only what goes and hashes of what stays: a sweep of a
        // long history gathered every id at once, and the allocator could not hand the
        // space back afterwards (16 MB of a 35 000-record node's idle memory).
        let mut old: HashSet<String> = HashSet::new();
        let mut kept_jobs: HashSet<u64> = HashSet::new();
        let mut still_recorded: HashSet<u64> = HashSet::new();
        for_each_in::<Created>(&snapshot, JOBS, |id, r| {
            if too_old(&r) && !open.contains(id) && !kept_runs.contains(&r.run_id) {
                old.insert(id.to_string());
            } else {
                kept_jobs.insert(id_hash(id));
                still_recorded.insert(id_hash(&r.run_id));
            }
        });
        // Results and QUERY values of a record that is gone (a late result that arrived while
        // an earlier sweep forgot its record) go with the old ones. A kept job is known by
        // its id's hash: two ids with one hash only keep an orphan longer.
        let goes = |job: &str| {
            old.contains(job) || (!kept_jobs.contains(&id_hash(job)) && !open.contains(job))
        };
        let mut deletes: Vec<Op> = Vec::new();
        for_each_key_in(&snapshot, RESULTS, |key| {
            if key.split_once('/').is_some_and(|(job, _)| goes(job)) {
                deletes.push(Op::Delete(RESULTS, key.to_string()));
            }
        });
        for_each_in::<QueryValue>(&snapshot, QUERY_VALUES, |key, v| {
            if goes(&v.job_id) {
                deletes.push(Op::Delete(QUERY_VALUES, key.to_string()));
            }
        });
        deletes.extend(old.iter().map(|id| Op::Delete(JOBS, id.clone())));
        // A finished run is kept for its records (a late QUERY value reopens the collection
        // from it): once none is left, it goes too.
        for_each_in::<RunOver>(&snapshot, RUNS, |run_id, r| {
            if r.finished && !still_recorded.contains(&id_hash(run_id)) {
                deletes.push(Op::Delete(RUNS, run_id.to_string()));
            }
        });
        drop(snapshot);
        self.send_in_batches(deletes);
        old.len()
    }

    /// Cache changes, written in the same groups as everything else.
    pub fn write_cache(&self, writes: jobs::cache::CacheWrites) {
        for (k, v) in writes {
            match v {
                Some(bytes) => self.send(Op::Put(CACHE, k, bytes)),
                None => self.send(Op::Delete(CACHE, k)),
            }
        }
    }

    pub fn record(&self, job_id: &str) -> Option<JobRecord> {
        let mut record = self.record_without_results(job_id)?;
        self.fill_results(std::slice::from_mut(&mut record));
        Some(record)
    }

    /// A stored record as its row holds it: without the targets' results (and their outputs),
    /// which are rows of their own ([`Store::fill_results`] adds them).
    pub fn record_without_results(&self, job_id: &str) -> Option<JobRecord> {
        self.get(JOBS, job_id)
    }

    /// Where every stored record comes in a listing, oldest first: only these few fields of
    /// each are kept, so a long history is put in order without being in memory whole (read
    /// the records themselves a part at a time with [`Store::records_by_id`]).
    pub fn record_keys(&self) -> Vec<RecordKey> {
        let mut keys: Vec<RecordKey> = self
            .all::<RecordKey>(JOBS)
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        keys.sort_by(|a, b| a.order().cmp(&b.order()));
        keys
    }

    /// The stored records of `ids` with their results, in that order (one read of the
    /// database; an id not stored is left out).
    pub fn records_by_id(&self, ids: &[&str]) -> Vec<JobRecord> {
        self.records_within(ids, usize::MAX).0
    }

    /// [`Store::records_by_id`] until the records read hold about `budget` bytes (at least
    /// one is read): the records, and how many of `ids` were gone through.
    pub fn records_within(&self, ids: &[&str], budget: usize) -> (Vec<JobRecord>, usize) {
        let Some(r) = read(self.db.begin_read()) else {
            return (Vec::new(), ids.len());
        };
        let (Some(jobs), Some(results)) = (read(r.open_table(JOBS)), read(r.open_table(RESULTS)))
        else {
            return (Vec::new(), ids.len());
        };
        let mut records = Vec::new();
        let mut bytes = 0;
        for (done, id) in ids.iter().enumerate() {
            if bytes >= budget {
                return (records, done);
            }
            let Some(row) = read(jobs.get(*id)).flatten() else {
                continue;
            };
            match ciborium::from_reader::<JobRecord, _>(row.value()) {
                Ok(mut record) => {
                    add_results(&results, &mut record);
                    bytes += record.approx_size();
                    records.push(record);
                }
                Err(e) => warn!(key = *id, "unreadable row skipped: {e}"),
            }
        }
        (records, ids.len())
    }

    /// Adds to each record the results the store holds for it (one read of the database).
    pub fn fill_results(&self, records: &mut [JobRecord]) {
        if let Some(r) = read(self.db.begin_read()) {
            fill_results_in(&r, records);
        }
    }

    /// The ids of the records whose job id starts with `prefix` (only the keys are read).
    pub fn job_ids_starting(&self, prefix: &str) -> Vec<String> {
        (|| {
            let r = read(self.db.begin_read())?;
            let t = read(r.open_table(JOBS))?;
            let rows = read(t.range(prefix..))?;
            Some(
                rows.filter_map(read)
                    .map(|(key, _)| key.value().to_string())
                    .take_while(|key| key.starts_with(prefix))
                    .collect(),
            )
        })()
        .unwrap_or_default()
    }

    /// The newest record (by submission), with its results: the other records are read
    /// without theirs.
    pub fn newest_record(&self) -> Option<JobRecord> {
        let newest = self.record_keys().pop()?;
        self.record(&newest.job_id)
    }

    /// How many job records are on disk (those not yet written are not counted).
    pub fn record_count(&self) -> usize {
        use redb::ReadableTableMetadata;
        let Some(r) = read(self.db.begin_read()) else {
            return 0;
        };
        let Some(t) = read(r.open_table(JOBS)) else {
            return 0;
        };
        read(t.len()).map_or(0, |n| n as usize)
    }

    /// Every record with its results, oldest first (all in memory at once: for tests and
    /// small stores; a listing goes by [`Store::record_keys`]).
    pub fn records(&self) -> Vec<JobRecord> {
        let keys = self.record_keys();
        self.records_by_id(&keys.iter().map(|k| k.job_id.as_str()).collect::<Vec<_>>())
    }

    /// A run this node submitted, finished or not.
    pub fn run(&self, run_id: &str) -> Option<StoredRun> {
        self.get(RUNS, run_id)
    }

    /// The runs this node submitted to take up again at `now_ms` (Unix ms): those not
    /// finished, and finished ones whose written-off targets may still be sent their jobs. Only
    /// those are read whole (every finished run, each with all its jobs, would make a node
    /// with a long history start at a high peak).
    pub fn runs_to_resume(&self, now_ms: u64) -> Vec<StoredRun> {
        let Some(snapshot) = read(self.db.begin_read()) else {
            return Vec::new();
        };
        let open: Vec<String> = all_in::<RunOver>(&snapshot, RUNS)
            .into_iter()
            .filter(|(_, r)| !r.finished || r.write_offs_until_ms > now_ms)
            .map(|(run_id, _)| run_id)
            .collect();
        let Some(t) = read(snapshot.open_table(RUNS)) else {
            return Vec::new();
        };
        open.iter()
            .filter_map(|run_id| {
                let row = read(t.get(run_id.as_str())).flatten()?;
                match ciborium::from_reader::<StoredRun, _>(row.value()) {
                    Ok(stored) => Some(stored),
                    Err(e) => {
                        warn!(key = run_id.as_str(), "unreadable row skipped: {e}");
                        None
                    }
                }
            })
            .collect()
    }

    pub fn outbox(&self) -> Vec<OutboxEntry> {
        self.all(OUTBOX).into_iter().map(|(_, v)| v).collect()
    }

    pub fn accepted(&self) -> Vec<(String, Accepted)> {
        self.all(ACCEPTED)
    }

    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Option<T> {
        let r = read(self.db.begin_read())?;
        let t = read(r.open_table(table))?;
        let v = read(t.get(key))??;
        ciborium::from_reader(v.value())
            .map_err(|e| {
                warn!(
                    table = table.name(),
                    key, "a row in the database cannot be read (left out): {e}"
                )
            })
            .ok()
    }

    /// The keys of `table`, without reading the values.
    fn keys(&self, table: TableDefinition<&str, &[u8]>) -> Vec<String> {
        read(self.db.begin_read())
            .map(|r| keys_in(&r, table))
            .unwrap_or_default()
    }

    fn all<T: DeserializeOwned>(&self, table: TableDefinition<&str, &[u8]>) -> Vec<(String, T)> {
        read(self.db.begin_read())
            .map(|r| all_in(&r, table))
            .unwrap_or_default()
    }
}

/// [`Store::fill_results`] as `snapshot` sees the results.
fn fill_results_in(snapshot: &redb::ReadTransaction, records: &mut [JobRecord]) {
    let Some(t) = read(snapshot.open_table(RESULTS)) else {
        return;
    };
    for record in records {
        add_results(&t, record);
    }
}

/// Adds to `record` its results in `results` (the `results` table).
fn add_results(results: &redb::ReadOnlyTable<&str, &[u8]>, record: &mut JobRecord) {
    let from = format!("{}/", record.job_id);
    let to = format!("{}0", record.job_id);
    let Some(rows) = read(results.range(from.as_str()..to.as_str())) else {
        return;
    };
    for row in rows.filter_map(read) {
        let Some((_, node)) = row.0.value().split_once('/') else {
            continue;
        };
        let result = ciborium::from_reader::<NodeResult, _>(row.1.value()).unwrap_or_else(|e| {
            // Left out, the job would wait for that node for ever (`processing`); shown
            // as a failure, the operator sees the damage where it is.
            warn!(job = %record.job_id, node, "a result in the database cannot be read: {e}");
            NodeResult {
                state: ResultState::Failed,
                stdout: String::new(),
                stderr: String::new(),
                info: format!(
                    "this node's result cannot be read from the database ({e}): the row is \
                     damaged; what the node reported is lost"
                ),
                execution_secs: 0.0,
                roundtrip_secs: 0.0,
                finished_unix_ms: 0,
            }
        });
        record.results.insert(node.to_string(), result);
    }
}

/// What a read of the database gave; a failure (I/O, damage) is logged, and the caller goes on
/// as if nothing were there: an operator needs to know, since that may be a result or a run
/// it no longer sees.
fn read<T, E: std::fmt::Display>(result: Result<T, E>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            error!("database read failed: {e}");
            None
        }
    }
}

/// Of a stored run, only whether it is over (the run itself, with every job, is not read).
#[derive(Deserialize)]
struct RunOver {
    finished: bool,
    #[serde(default)]
    write_offs_until_ms: u64,
}

/// The keys of `table` as `snapshot` sees them.
fn keys_in(snapshot: &redb::ReadTransaction, table: TableDefinition<&str, &[u8]>) -> Vec<String> {
    let Some(t) = read(snapshot.open_table(table)) else {
        return Vec::new();
    };
    let Some(iter) = read(t.iter()) else {
        return Vec::new();
    };
    iter.filter_map(read)
        .map(|row| row.0.value().to_string())
        .collect()
}

/// Calls `f` with each key of `table` as `snapshot` sees them, one at a time.
fn for_each_key_in(
    snapshot: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    mut f: impl FnMut(&str),
) {
    let Some(t) = read(snapshot.open_table(table)) else {
        return;
    };
    let Some(iter) = read(t.iter()) else {
        return;
    };
    for row in iter.filter_map(read) {
        f(row.0.value());
    }
}

/// Calls `f` with each row of `table` as `snapshot` sees them, one at a time; an unreadable
/// row is skipped with a warning.
fn for_each_in<T: DeserializeOwned>(
    snapshot: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    mut f: impl FnMut(&str, T),
) {
    let Some(t) = read(snapshot.open_table(table)) else {
        return;
    };
    let Some(iter) = read(t.iter()) else {
        return;
    };
    for row in iter.filter_map(read) {
        match ciborium::from_reader::<T, _>(row.1.value()) {
            Ok(v) => f(row.0.value(), v),
            Err(e) => warn!(key = row.0.value(), "unreadable row skipped: {e}"),
        }
    }
}

/// An id as a set of many ids keeps it: eight bytes instead of a string of its own.
fn id_hash(id: &str) -> u64 {
    let hash = blake3::hash(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The rows of `table` as `snapshot` sees them; an unreadable row is skipped with a warning.
fn all_in<T: DeserializeOwned>(
    snapshot: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
) -> Vec<(String, T)> {
    let mut out = Vec::new();
    let Some(t) = read(snapshot.open_table(table)) else {
        return out;
    };
    let Some(iter) = read(t.iter()) else {
        return out;
    };
    for row in iter.filter_map(read) {
        match ciborium::from_reader::<T, _>(row.1.value()) {
            Ok(v) => out.push((row.0.value().to_string(), v)),
            Err(e) => warn!(key = row.0.value(), "unreadable row skipped: {e}"),
        }
    }
    out
}

fn outbox_key(result: &JobResult) -> String {
    format!("{}/{}", result.run_id, result.outcome.job_id)
}

/// The key of a run's outcome of a fingerprint in the `run-outcomes` table.
pub fn run_outcome_key(run_id: &str, fingerprint: &jobs::Fingerprint) -> String {
    format!("{run_id}/{}", fingerprint.to_hex())
}

#[cfg(test)]
mod tests;
