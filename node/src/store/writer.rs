//! The writer thread: every write to the database goes through one queue to one thread,
//! which gathers what comes within a window into one transaction and commits it once. Only
//! the last write of each key in a group lands; a commit is durable only when somebody waits
//! for it or the oldest write not on disk is old enough, and a wait with nothing left to make
//! durable costs no commit.

use super::*;

pub(super) enum Op {
    Put(
        TableDefinition<'static, &'static str, &'static [u8]>,
        String,
        Vec<u8>,
    ),
    Delete(
        TableDefinition<'static, &'static str, &'static [u8]>,
        String,
    ),
    Clear(TableDefinition<'static, &'static str, &'static [u8]>),
    /// Puts and deletes that land in one commit, never split between two.
    Batch(Vec<Op>),
    /// Tell `done` once everything queued before is committed; `now` ends the window at once.
    Commit {
        done: Committed,
        now: bool,
    },
}

/// Who waits for a commit.
pub(super) enum Committed {
    Blocking(mpsc::SyncSender<()>),
    Async(oneshot::Sender<()>),
}

impl Committed {
    pub(super) fn tell(self) {
        match self {
            Committed::Blocking(tx) => {
                let _ = tx.send(());
            }
            Committed::Async(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

impl Op {
    pub(super) fn urgent(&self) -> bool {
        matches!(self, Op::Commit { now: true, .. })
    }
}

/// The writer thread: gathers what is queued within a window, applies it in one transaction,
/// commits once.
///
/// A commit is made durable (fsync) only when somebody waits for it, or when the oldest write
/// not yet on disk is [`DURABLE_WITHIN`] old; the others are redb's in-memory commits, visible to
/// readers at once. So a crash loses at most that much of what nobody was told is stored
/// (finished jobs' bookkeeping, cache entries), and never what was acknowledged.
pub(super) fn writer(disk: Disk, rx: mpsc::Receiver<Op>) {
    let mut not_durable_since: Option<Instant> = None;
    loop {
        let first = match not_durable_since {
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => break,
            },
            Some(since) => {
                let left = (since + DURABLE_WITHIN).saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(op) => op,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // Nothing new: make what is there durable (after a failure, try again
                        // a while later rather than at once).
                        not_durable_since =
                            (!commit_group(&disk, Vec::new(), true)).then(Instant::now);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        let mut now_asked = first.urgent();
        let mut batch = vec![first];
        let until = Instant::now() + GROUP_WINDOW;
        // Sleep through the window rather than wake for every write: writers only wake this
        // thread for a flush or a full queue.
        loop {
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => {
                        now_asked |= op.urgent();
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if now_asked || batch.len() >= MAX_GROUP || left.is_zero() {
                break;
            }
            thread::park_timeout(left);
        }
        if not_durable_since.is_none()
            && disk.failed.borrow().is_none()
            && batch.iter().all(|op| matches!(op, Op::Commit { .. }))
        {
            // Only waiters, and everything written before them is on disk already: they are
            // told at once, without a transaction and its sync (a target asks this before
            // every try to send results it owes, most of them long on disk).
            for op in batch {
                if let Op::Commit { done, .. } = op {
                    done.tell();
                }
            }
            continue;
        }
        let waited_for = batch.iter().any(|op| matches!(op, Op::Commit { .. }));
        let since = *not_durable_since.get_or_insert_with(Instant::now);
        let durable = waited_for || since.elapsed() >= DURABLE_WITHIN;
        if commit_group(&disk, batch, durable) && durable {
            not_durable_since = None;
        }
    }
    if not_durable_since.is_some() {
        commit_group(&disk, Vec::new(), true);
    }
}

/// What the writer writes to, and where it says that it could not.
pub(super) struct Disk {
    pub(super) db: Arc<Database>,
    pub(super) path: PathBuf,
    pub(super) failed: watch::Sender<Option<String>>,
    /// Test hook: while this file exists, every commit fails.
    pub(super) fail_hook: Option<PathBuf>,
}

/// `test-fail-writes` beside the database, when `DIRECTORD_MESH_TEST_HOOKS=1`.
pub(super) fn test_hook(path: &Path) -> Option<PathBuf> {
    let on = std::env::var("DIRECTORD_MESH_TEST_HOOKS").is_ok_and(|v| v == "1");
    on.then(|| path.with_file_name("test-fail-writes"))
}

/// Applies one group of writes in one transaction; tells its waiters once it is on disk.
/// Returns whether it committed.
pub(super) fn commit_group(disk: &Disk, batch: Vec<Op>, durable: bool) -> bool {
    let db = &disk.db;
    let mut waiters = Vec::new();
    // Only the last write of each key in a group matters: a result put into the outbox and
    // taken by its originator within the window, or a cache key rewritten by every job of a
    // parent, costs one write (or none).
    let mut last: Vec<(TableName, String, Option<Vec<u8>>)> = Vec::new();
    let mut index: HashMap<(TableName, String), usize> = HashMap::new();
    let mut clears: Vec<(usize, Table)> = Vec::new();
    let mut tables = TablesSeen::default();
    let ops = batch.into_iter().flat_map(|op| match op {
        Op::Batch(ops) => ops,
        op => vec![op],
    });
    for op in ops {
        let (table, key, value) = match op {
            Op::Put(table, k, v) => (table, k, Some(v)),
            Op::Delete(table, k) => (table, k, None),
            Op::Clear(table) => {
                // Writes before the clear are void; writes after it stay. Clears seen
                // earlier apply before fewer writes once those go.
                let name = tables.number(table);
                for (at, _) in &mut clears {
                    *at -= last[..*at].iter().filter(|(t, _, _)| *t == name).count();
                }
                last.retain(|(t, _, _)| *t != name);
                index = last
                    .iter()
                    .enumerate()
                    .map(|(i, (t, k, _))| ((*t, k.clone()), i))
                    .collect();
                clears.push((last.len(), table));
                continue;
            }
            Op::Commit { done, .. } => {
                waiters.push(done);
                continue;
            }
            // Flattened above; a batch holds no batch.
            Op::Batch(_) => continue,
        };
        let table = tables.number(table);
        match index.get(&(table, key.clone())) {
            Some(&i) => last[i].2 = value,
            None => {
                index.insert((table, key.clone()), last.len());
                last.push((table, key, value));
            }
        }
    }
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        if let Some(hook) = disk.fail_hook.as_ref().filter(|h| h.exists()) {
            return Err(format!("test hook {} is set", hook.display()).into());
        }
        let mut w = db.begin_write()?;
        w.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut clears = clears.into_iter().peekable();
        for (i, (table, key, value)) in last.into_iter().enumerate() {
            while let Some((_, t)) = clears.next_if(|(at, _)| *at <= i) {
                w.delete_table(t)?;
                w.open_table(t)?;
            }
            let mut t = w.open_table(tables.table(table))?;
            match value {
                Some(v) => {
                    t.insert(key.as_str(), v.as_slice())?;
                }
                None => {
                    t.remove(key.as_str())?;
                }
            }
        }
        for (_, t) in clears {
            w.delete_table(t)?;
            w.open_table(t)?;
        }
        w.commit()?;
        Ok(())
    })();
    match result {
        // After a group was lost, nothing counts as stored (its writes may be what the waiters
        // rely on): the waiters see their senders dropped, as the lost group's did.
        Ok(()) if disk.failed.borrow().is_some() => true,
        Ok(()) => {
            waiters.into_iter().for_each(Committed::tell);
            true
        }
        // Waiters see their sender dropped: nothing they were waiting for is on disk.
        Err(e) => {
            let reason = format!("database {}: write failed: {e}", disk.path.display());
            // Said once: the node stops on the first failure, and the groups still queued
            // fail after it (redb: "Previous I/O error occurred").
            disk.failed.send_if_modified(|failure| {
                let first = failure.is_none();
                if first {
                    error!("{reason}");
                    *failure = Some(reason);
                } else {
                    debug!("{reason}");
                }
                first
            });
            false
        }
    }
}

pub(super) type Table = TableDefinition<'static, &'static str, &'static [u8]>;
/// A table, as its position in the group's [`TablesSeen`].
pub(super) type TableName = usize;

/// The tables a group of writes touches, each numbered once (a group's writes are keyed by
/// table number and key; whatever table a write names, it lands there).
#[derive(Default)]
pub(super) struct TablesSeen(Vec<Table>);

impl TablesSeen {
    pub(super) fn number(&mut self, table: Table) -> TableName {
        match self.0.iter().position(|t| t.name() == table.name()) {
            Some(i) => i,
            None => {
                self.0.push(table);
                self.0.len() - 1
            }
        }
    }

    /// `number` comes from [`TablesSeen::number`] of this group, so it is in range.
    pub(super) fn table(&self, number: TableName) -> Table {
        self.0[number]
    }
}
