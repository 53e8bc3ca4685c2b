//! The blob store: content-addressed files in `<state-dir>/blobs/`, named by their blake3.
//!
//! A blob gets here three ways: imported from the submitter's own disk when it submits an
//! ADD/COPY, carried inside a run's announce (small files), or fetched chunk by chunk from other
//! nodes. A fetch writes into `<hash>.part`, each chunk checked against its digest before it
//! is written; the digests add up to the file's hash (checked before the fetch begins), so the
//! finished file is renamed into place with no second pass. Chunks already checked are served
//! to other nodes while the fetch goes on. Each fetch of a file is an [`Attempt`] of its own,
//! and a chunk counts only for the attempt that wrote it: a write of an attempt given up
//! meanwhile can never count for the next one, whose file does not have it.
//!
//! Only blobs in this store are ever served, by hash: a peer can never name a path.
//!
//! The store remembers when each blob was last used (stored, served, or looked up for a job)
//! and [`BlobStore::evict`] removes those unused for longer than the node's blob retention,
//! except the ones open runs still need. Across restarts, a blob's modification time stands
//! for its last use.

use std::{
    collections::{HashMap, HashSet},
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use jobs::{
    Fingerprint,
    spec::{CHUNK_SIZE, FileRef},
};
use tracing::warn;

/// How often a blob's last use is written to its modification time.
const PERSIST_USE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// When a complete blob was last used: in memory, and as last written to its modification time.
#[derive(Debug, Clone, Copy)]
struct LastUse {
    at: SystemTime,
    persisted: SystemTime,
}

impl LastUse {
    fn new(at: SystemTime) -> LastUse {
        LastUse { at, persisted: at }
    }

    /// Notes a use now; returns the time to write to the file if the one there is more than
    /// [`PERSIST_USE_EVERY`] old (the write happens outside the store's lock).
    fn touch(&mut self) -> Option<SystemTime> {
        self.touch_at(SystemTime::now())
    }

    fn touch_at(&mut self, now: SystemTime) -> Option<SystemTime> {
        self.at = now;
        let stale = now
            .duration_since(self.persisted)
            .is_ok_and(|d| d >= PERSIST_USE_EVERY);
        stale.then(|| {
            self.persisted = now;
            now
        })
    }
}

/// What a chunk lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkLookup {
    Have(Vec<u8>),
    /// This blob is being fetched here and that chunk is not in yet, or the blob was here
    /// before this process started and is not checked yet ([`BlobStore::verify_existing`]).
    NotYet,
    /// This store does not know the blob, or the blob has no such chunk.
    Unknown,
    /// This store holds the blob (or a fetch of it) but cannot read the chunk now: the disk
    /// failing, no file descriptors left, something other than a file in its place. The blob
    /// stays held; the asker turns to other holders and asks this one again later, and never
    /// takes this answer for "unknown".
    Unreadable,
}

#[derive(Default)]
struct State {
    /// Complete blobs, and when each was last used.
    complete: HashMap<Fingerprint, LastUse>,
    /// Blobs being fetched: by which attempt, and which chunks are in.
    partial: HashMap<Fingerprint, Partial>,
    /// The last attempt begun.
    attempts: u64,
    /// Blobs a previous run left, not checked yet: held, but not served before their check.
    /// Asked for one, the store says "not yet" rather than "unknown", so that a node asking
    /// (one whose file only this node holds) waits for it instead of taking it for gone.
    unchecked: HashSet<Fingerprint>,
}

/// One fetch of a blob, from its [`BlobStore::begin`] to its finish or abandon: a chunk
/// written for it counts for it only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt(u64);

/// A blob being fetched.
struct Partial {
    attempt: Attempt,
    /// Which chunks are in.
    have: Vec<bool>,
}

/// Why a submitter's file could not go into its node's store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The file itself: unreadable, or changed since the CLI hashed it (bad input).
    #[error("{0}")]
    Source(String),
    /// The store: no room or no way to write in the state directory (the node's trouble).
    #[error("{0}")]
    Store(String),
}

/// A blob an import brought into the store, and when: what [`BlobStore::withdraw`] takes
/// back if its submission is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    hash: Fingerprint,
    at: SystemTime,
}

/// Opens the submitter's file to copy it, refusing anything but a regular file: a FIFO or
/// device put at its path since the CLI read it would block the copy or never end. Opened
/// without waiting (which a FIFO would do), checked on the open file itself.
fn open_source(src: &Path) -> Result<File, ImportError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(src)
        .map_err(|e| ImportError::Source(format!("cannot read {}: {e}", src.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| ImportError::Source(format!("cannot read {}: {e}", src.display())))?;
    if !meta.is_file() {
        return Err(ImportError::Source(format!(
            "{} is no longer a regular file (changed after it was read); submit again",
            src.display()
        )));
    }
    Ok(file)
}

/// The blob store of one node.
pub struct BlobStore {
    dir: PathBuf,
    state: Mutex<State>,
    /// Numbers the temporary copies of imports and of files carried inside announces: two
    /// copies of one file made at once each write their own.
    copies: std::sync::atomic::AtomicU64,
    /// The node stops: the check of the blobs a previous run left ends where it is (it may
    /// take minutes over a large store, and the process waits for it before it exits).
    stopping: std::sync::atomic::AtomicBool,
    /// Run by the next chunk write between opening the partial file and writing into it:
    /// the tests put a give-up and a new fetch of the same file there.
    #[cfg(test)]
    after_open: Mutex<Option<Between>>,
}

/// What the tests run between a chunk write's opening of the partial file and its write.
#[cfg(test)]
type Between = Box<dyn FnOnce(&BlobStore) + Send>;

/// Whether `file`'s content hashes to `hash`; `None` if it cannot be read. Blocking.
fn hashes_to(mut file: &File, hash: &Fingerprint) -> Option<bool> {
    let mut hasher = blake3::Hasher::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(hasher.finalize().as_bytes() == &hash.0)
}

fn hex(fp: &Fingerprint) -> String {
    fp.to_hex()
}

/// Whether `path` is still the file `read` was taken of (not a copy renamed over it since).
fn same_file(path: &Path, read: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).is_ok_and(|now| now.ino() == read.ino() && now.dev() == read.dev())
}

impl BlobStore {
    /// Opens `dir` (created if needed) and forgets fetches a previous run left unfinished.
    /// Blobs are written without waiting for the disk, so those already here are checked
    /// against their names (by [`BlobStore::verify_existing`]) before they are served again.
    /// Entries it did not make (none but blobs and their temporary copies) are left alone.
    pub fn open(dir: &Path) -> Result<BlobStore, String> {
        if fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
            return Err(format!(
                "{} is not a directory: the node keeps the files jobs send there (move the \
                 file away, or remove it, and start again)",
                dir.display()
            ));
        }
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Copies of files the jobs sent (`COPY --chmod 0600` ones too): owner only.
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut unchecked = HashSet::new();
        for entry in fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            match Fingerprint::from_hex(&name) {
                Some(hash) => {
                    unchecked.insert(hash);
                }
                // A fetch or copy left unfinished (`<hash>.part`, `<hash>.<n>.<kind>`).
                None if name
                    .split_once('.')
                    .is_some_and(|(stem, _)| Fingerprint::from_hex(stem).is_some()) =>
                {
                    let _ = fs::remove_file(entry.path());
                }
                None => {}
            }
        }
        Ok(BlobStore {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                unchecked,
                ..State::default()
            }),
            copies: std::sync::atomic::AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            after_open: Mutex::new(None),
        })
    }

    /// Checks the blobs a previous run left and keeps those whose content matches their name
    /// (a crash may have left one half-written). Blocking; run it off the async threads. Ends
    /// early once [`BlobStore::stop`] is called: the blobs not checked yet are neither served
    /// nor removed (the next start checks them).
    pub fn verify_existing(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if self.stops() {
                return;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(fp) = Fingerprint::from_hex(&name) else {
                continue;
            };
            if self.holds(&fp) {
                continue;
            }
            let Ok(f) = File::open(entry.path()) else {
                continue;
            };
            let Ok(read) = f.metadata() else { continue };
            let Some(found) = self.hash_unless_stopping(&f) else {
                return;
            };
            let ok = found.is_ok_and(|h| h == fp.0);
            let mut state = self.lock();
            // A copy landed while this one was read (a fetch, an import): it is good, and
            // it may be the file at this path now.
            if state.complete.contains_key(&fp) {
                continue;
            }
            if ok {
                let used = read.modified().unwrap_or_else(|_| SystemTime::now());
                state.complete.insert(fp, LastUse::new(used));
            } else if same_file(&entry.path(), &read) {
                let _ = fs::remove_file(entry.path());
            }
            state.unchecked.remove(&fp);
        }
        // Gone since the store opened (evicted, discarded, removed by hand), or held
        // meanwhile: none is waiting for its check any more.
        self.lock().unchecked.clear();
    }

    /// The node stops: [`BlobStore::verify_existing`] ends at its next read.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn stops(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// blake3 of `f`'s content, read a MiB at a time; `None` once the node stops meanwhile.
    fn hash_unless_stopping(&self, mut f: &File) -> Option<std::io::Result<[u8; 32]>> {
        use std::io::Read;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            if self.stops() {
                return None;
            }
            match f.read(&mut buf) {
                Ok(0) => return Some(Ok(*hasher.finalize().as_bytes())),
                Ok(n) => {
                    hasher.update(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a single insert or removal; a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the complete blob `hash` is (whether or not it is here).
    pub fn path(&self, hash: &Fingerprint) -> PathBuf {
        self.dir.join(hex(hash))
    }

    fn part_path(&self, hash: &Fingerprint) -> PathBuf {
        self.dir.join(format!("{}.part", hex(hash)))
    }

    /// A temporary file of its own for one copy of `hash` coming in (`kind`: how), renamed
    /// to the blob's name once whole. One left behind is removed when the store is next
    /// opened (not a blob's name).
    fn copy_path(&self, hash: &Fingerprint, kind: &str) -> PathBuf {
        let n = self
            .copies
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join(format!("{}.{n}.{kind}", hex(hash)))
    }

    /// Whether the blob is here, complete (not a use).
    pub fn holds(&self, hash: &Fingerprint) -> bool {
        self.lock().complete.contains_key(hash)
    }

    /// A complete blob whose file is gone from the disk (removed by hand) is not held any
    /// more. Checked under the lock: a copy landing meanwhile is in place before it is listed.
    fn forget_if_gone(&self, hash: &Fingerprint) {
        let mut state = self.lock();
        if !self.path(hash).exists() {
            state.complete.remove(hash);
        }
    }

    /// Whether the blob is here, complete; if it is, that counts as a use. One whose file
    /// is gone (removed by hand) is not held any more.
    pub fn has(&self, hash: &Fingerprint) -> bool {
        let persist = {
            let mut state = self.lock();
            let on_disk = state.complete.contains_key(hash) && self.path(hash).exists();
            match state.complete.get_mut(hash) {
                None => return false,
                Some(used) if on_disk => used.touch(),
                Some(_) => {
                    state.complete.remove(hash);
                    return false;
                }
            }
        };
        self.persist_use(hash, persist);
        true
    }

    /// Writes a use to the blob's modification time, which stands for its last use across
    /// restarts. Best effort: a failure only makes the blob look older after a restart.
    fn persist_use(&self, hash: &Fingerprint, at: Option<SystemTime>) {
        if let Some(at) = at {
            let _ = File::options()
                .write(true)
                .open(self.path(hash))
                .and_then(|f| f.set_modified(at));
        }
    }

    /// Copies the submitter's own file into the store, checking it still has the content the
    /// CLI hashed. Says whether the copy is new here, so a refused submission can take back
    /// what it brought ([`BlobStore::withdraw`]). Blocking.
    pub fn import(&self, src: &Path, file: &FileRef) -> Result<Option<Added>, ImportError> {
        // A copy held already is checked first: one damaged on disk since (bit rot, a stray
        // write) would otherwise be served, and fail every target's fetch, until a restart.
        if self.has(&file.hash) {
            if self.intact(&file.hash) {
                return Ok(None);
            }
            warn!(blob = %file.hash, src = %src.display(), "the copy held of this file was damaged on disk: copied again");
            self.discard(&file.hash);
        }
        let tmp = self.copy_path(&file.hash, "import");
        let store_error = |e: std::io::Error| {
            ImportError::Store(format!(
                "this node cannot keep a copy of {} to send ({}: {e}); files sent by ADD/COPY \
                 are staged in the state directory, which needs room for them",
                src.display(),
                tmp.display()
            ))
        };
        let result = (|| -> Result<(), ImportError> {
            let from = open_source(src)?;
            let mut to = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(store_error)?;
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 256 * 1024];
            // One byte past the size the CLI read tells a file that grew since.
            let mut from = from.take(file.size.saturating_add(1));
            let mut copied = 0u64;
            loop {
                let n = from
                    .read(&mut buf)
                    .map_err(|e| ImportError::Source(format!("reading {}: {e}", src.display())))?;
                if n == 0 {
                    break;
                }
                copied += n as u64;
                if copied > file.size {
                    return Err(ImportError::Source(format!(
                        "{} changed after it was read (it had {} bytes, has more now); submit \
                         again",
                        src.display(),
                        file.size
                    )));
                }
                hasher.update(&buf[..n]);
                to.write_all(&buf[..n]).map_err(store_error)?;
            }
            let found = Fingerprint(*hasher.finalize().as_bytes());
            if found != file.hash {
                return Err(ImportError::Source(format!(
                    "{} changed after it was read (blake3 was {}, is now {found}); submit again",
                    src.display(),
                    file.hash
                )));
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // Renamed into place under the lock: another import of the same file that landed
        // meanwhile keeps its copy and its claim (a refused submission takes back only what
        // it alone brought, never a file another one is using). Not fsynced: that would cost
        // an ADD of a large file a whole write to disk before anything is sent. A process
        // crash keeps it (the page cache); after a power loss a damaged copy is removed at the
        // next start and a resumed run's jobs for it fail, naming the file.
        let mut state = self.lock();
        let there = self.path(&file.hash).exists();
        if let Some(used) = state.complete.get_mut(&file.hash).filter(|_| there) {
            let persist = used.touch();
            drop(state);
            let _ = fs::remove_file(&tmp);
            self.persist_use(&file.hash, persist);
            return Ok(None);
        }
        if let Err(e) = fs::rename(&tmp, self.path(&file.hash)) {
            drop(state);
            let _ = fs::remove_file(&tmp);
            return Err(store_error(e));
        }
        let at = SystemTime::now();
        state.complete.insert(file.hash, LastUse::new(at));
        Ok(Some(Added {
            hash: file.hash,
            at,
        }))
    }

    /// Removes the blobs a refused submission brought, unless used since (another
    /// submission of the same file, a job, a peer): those stay for whoever uses them.
    /// Blocking.
    pub fn withdraw(&self, added: &[Added]) {
        let mut doomed = Vec::new();
        {
            let mut state = self.lock();
            for a in added {
                if state.complete.get(&a.hash).is_none_or(|u| u.at != a.at) {
                    continue;
                }
                let aside = self.dir.join(format!("{}.evicted", hex(&a.hash)));
                // Renamed under the lock, like an eviction; removed outside it.
                if fs::rename(self.path(&a.hash), &aside).is_ok() {
                    state.complete.remove(&a.hash);
                    doomed.push(aside);
                }
            }
        }
        for path in doomed {
            let _ = fs::remove_file(path);
        }
    }

    /// Stores a small blob carried inside an announce, if its content matches. Blocking.
    pub fn put(&self, hash: &Fingerprint, data: &[u8]) -> Result<(), String> {
        if self.has(hash) {
            return Ok(());
        }
        let found = Fingerprint(*blake3::hash(data).as_bytes());
        if found != *hash {
            return Err(format!(
                "inline file: expected blake3 {hash}, found {found}"
            ));
        }
        let tmp = self.copy_path(hash, "inline");
        let written = fs::write(&tmp, data).and_then(|_| fs::rename(&tmp, self.path(hash)));
        if let Err(e) = written {
            // A disk full, say: nothing of the copy stays.
            let _ = fs::remove_file(&tmp);
            return Err(format!("{}: {e}", tmp.display()));
        }
        self.lock()
            .complete
            .insert(*hash, LastUse::new(SystemTime::now()));
        Ok(())
    }

    /// Whether chunk `index` of `hash` can be served now: `None` if this store does not know
    /// the blob at all, or the file has no such chunk.
    pub fn has_chunk(&self, hash: &Fingerprint, index: u64) -> Option<bool> {
        let state = self.lock();
        if state.complete.contains_key(hash) {
            return Some(true);
        }
        // A chunk beyond the file is never coming: answered at once, as for an unknown blob.
        state
            .partial
            .get(hash)
            .and_then(|p| p.have.get(index as usize).copied())
    }

    /// Reads chunk `index` of `hash`, from the complete blob or from a fetch in progress.
    /// Blocking.
    pub fn chunk(&self, hash: &Fingerprint, index: u64) -> ChunkLookup {
        let (path, complete, ready) = {
            let mut state = self.lock();
            if let Some(used) = state.complete.get_mut(hash) {
                let persist = used.touch();
                drop(state);
                self.persist_use(hash, persist);
                (self.path(hash), true, true)
            } else if let Some(partial) = state.partial.get(hash) {
                let Some(ready) = partial.have.get(index as usize).copied() else {
                    return ChunkLookup::Unknown;
                };
                (self.part_path(hash), false, ready)
            } else if state.unchecked.contains(hash) && self.path(hash).exists() {
                // Held from before this process started, served once checked.
                return ChunkLookup::NotYet;
            } else {
                return ChunkLookup::Unknown;
            }
        };
        if !ready {
            return ChunkLookup::NotYet;
        }
        // `None`: the chunk is beyond the file (no such chunk; never an empty one).
        let read = (|| -> std::io::Result<Option<Vec<u8>>> {
            let mut f = File::open(&path)?;
            let len = f.metadata()?.len();
            let start = index.saturating_mul(CHUNK_SIZE);
            if start >= len {
                return Ok(None);
            }
            let end = start.saturating_add(CHUNK_SIZE).min(len);
            let want = (end - start) as usize;
            // Read into memory not zeroed first (a megabyte per chunk served adds up); the
            // file is in the page cache, so the reads that grow the buffer cost little.
            let mut buf = Vec::with_capacity(want);
            f.seek(SeekFrom::Start(start))?;
            f.take(want as u64).read_to_end(&mut buf)?;
            if buf.len() != want {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("read {} of chunk {index}'s {want} bytes", buf.len()),
                ));
            }
            Ok(Some(buf))
        })();
        match read {
            Ok(Some(data)) => ChunkLookup::Have(data),
            Ok(None) => ChunkLookup::Unknown,
            // A complete blob whose file is gone (removed by hand): not held any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && complete => {
                self.forget_if_gone(hash);
                ChunkLookup::Unknown
            }
            // Renamed from .part to complete meanwhile: ask again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ChunkLookup::NotYet,
            // The disk failing, or out of descriptors: still held, so not "unknown" (which
            // could fail the asker's job for a file this node has); the asker goes to another
            // holder rather than wait for this one.
            Err(e) => {
                warn!(blob = %hash, path = %path.display(), "cannot serve chunk {index}: {e}");
                ChunkLookup::Unreadable
            }
        }
    }

    /// Starts fetching `file`, or goes on with the fetch under way (its attempt). Blocking.
    pub fn begin(&self, file: &FileRef) -> Result<Attempt, String> {
        // The description comes from a peer's run: its chunk list must fit its size and add
        // up to its hash, or chunks that match it could make up some other content.
        file.check()?;
        let mut state = self.lock();
        if let Some(partial) = state.partial.get(&file.hash) {
            return Ok(partial.attempt);
        }
        state.attempts += 1;
        let attempt = Attempt(state.attempts);
        if state.complete.contains_key(&file.hash) {
            // Nothing to write: its chunks find the blob in place.
            return Ok(attempt);
        }
        let part = self.part_path(&file.hash);
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&part)
            .map_err(|e| format!("{}: {e}", part.display()))?;
        f.set_len(file.size)
            .map_err(|e| format!("{}: {e}", part.display()))?;
        state.partial.insert(
            file.hash,
            Partial {
                attempt,
                have: vec![false; file.chunks.len()],
            },
        );
        Ok(attempt)
    }

    /// Writes chunk `index` of the fetch `attempt` if it matches its hash; otherwise says what
    /// it got instead (`Ok(Some(reason))`). A fetch given up meanwhile gets nothing written
    /// (`Err`). Blocking.
    pub fn write_chunk(
        &self,
        file: &FileRef,
        attempt: Attempt,
        index: usize,
        data: &[u8],
    ) -> Result<Option<String>, String> {
        let Some(expected) = file.chunks.get(index) else {
            return Ok(Some(format!("chunk {index} is beyond the file")));
        };
        let want_len = file
            .size
            .saturating_sub(index as u64 * CHUNK_SIZE)
            .min(CHUNK_SIZE) as usize;
        if data.len() != want_len {
            return Ok(Some(format!(
                "chunk {index}: expected {want_len} bytes, found {}",
                data.len()
            )));
        }
        let found = FileRef::digest_of_chunk(index, file.chunks.len(), data);
        if found != *expected {
            return Ok(Some(format!(
                "chunk {index}: expected digest {expected}, found {found}"
            )));
        }
        let part = self.part_path(&file.hash);
        // Opened under the lock while the attempt is the one under way: the file is that
        // attempt's (a new one is created, under the lock, only once this one is removed).
        let f = {
            let state = self.lock();
            match state.partial.get(&file.hash) {
                Some(p) if p.attempt == attempt => OpenOptions::new()
                    .write(true)
                    .open(&part)
                    .map_err(|e| format!("{}: {e}", part.display()))?,
                _ => return self.not_under_way(&state, file),
            }
        };
        #[cfg(test)]
        if let Some(between) = self
            .after_open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            between(self);
        }
        f.write_all_at(data, index as u64 * CHUNK_SIZE)
            .map_err(|e| format!("{}: {e}", part.display()))?;
        let mut state = self.lock();
        // Given up while it was written: it went into the file given up, and counts for no
        // other attempt.
        match state.partial.get_mut(&file.hash) {
            Some(p) if p.attempt == attempt => {
                if let Some(slot) = p.have.get_mut(index) {
                    *slot = true;
                }
                Ok(None)
            }
            _ => self.not_under_way(&state, file),
        }
    }

    /// What a chunk written for an attempt that is not under way any more comes to: the
    /// blob is in place (the fetch finished: another answer of the same chunk came first; or
    /// the file came another way), or the fetch was given up.
    fn not_under_way(&self, state: &State, file: &FileRef) -> Result<Option<String>, String> {
        if state.complete.contains_key(&file.hash) {
            Ok(None)
        } else {
            Err(format!("the fetch of {} was given up", file.hash))
        }
    }

    /// Moves a fetch whose every chunk is in into place (each was checked as it came, and
    /// together they make the file, see [`FileRef::check`]). Blocking.
    pub fn finish(&self, file: &FileRef) -> Result<PathBuf, String> {
        if self.has(&file.hash) {
            // It came another way meanwhile (an import, a copy inside an announce).
            self.abandon(&file.hash);
            return Ok(self.path(&file.hash));
        }
        // Every chunk was checked against the chunk list before it was written, and `begin`
        // checked that the list adds up to the hash (`FileRef::check`): the file is whole
        // without reading it once more here (where it lands, it is checked again anyway).
        let part = self.part_path(&file.hash);
        let mut state = self.lock();
        let complete = state
            .partial
            .get(&file.hash)
            .is_some_and(|p| p.have.iter().all(|h| *h));
        state.partial.remove(&file.hash);
        if !complete {
            let _ = fs::remove_file(&part);
            return Err(format!(
                "the fetch of {} ended with chunks missing",
                file.hash
            ));
        }
        match fs::rename(&part, self.path(&file.hash)) {
            Ok(()) => {
                state
                    .complete
                    .insert(file.hash, LastUse::new(SystemTime::now()));
                Ok(self.path(&file.hash))
            }
            Err(e) => {
                let _ = fs::remove_file(&part);
                Err(format!("{}: {e}", part.display()))
            }
        }
    }

    /// Removes the complete blobs last used before `unused_since`, except those in `keep`
    /// (files of runs still open here); fetches in progress are never touched. Returns how
    /// many blobs and bytes went. Blocking.
    pub fn evict(&self, unused_since: SystemTime, keep: &HashSet<Fingerprint>) -> (usize, u64) {
        // Chosen and renamed aside under the lock (a fetch of the same blob that finishes
        // afterwards lands a new file, which nothing here touches), removed outside it.
        let mut doomed = Vec::new();
        {
            let mut state = self.lock();
            let old: Vec<Fingerprint> = state
                .complete
                .iter()
                .filter(|(hash, used)| used.at < unused_since && !keep.contains(*hash))
                .map(|(hash, _)| *hash)
                .collect();
            for hash in old {
                let aside = self.dir.join(format!("{}.evicted", hex(&hash)));
                match fs::rename(self.path(&hash), &aside) {
                    Ok(()) => {
                        state.complete.remove(&hash);
                        doomed.push(aside);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        state.complete.remove(&hash);
                    }
                    // Left in place (and in use); the next sweep tries again.
                    Err(_) => {}
                }
            }
        }
        let (mut count, mut bytes) = (0, 0);
        for path in doomed {
            let size = fs::metadata(&path).map_or(0, |m| m.len());
            // One left behind is removed when the store is next opened (not a blob's name).
            if fs::remove_file(&path).is_ok() {
                count += 1;
                bytes += size;
            }
        }
        (count, bytes)
    }

    /// Whether the blob's file hashes to its name (a file that cannot be read counts as
    /// intact: it is not the content that is wrong). Blocking: reads the blob.
    fn intact(&self, hash: &Fingerprint) -> bool {
        fs::File::open(self.path(hash))
            .ok()
            .and_then(|file| hashes_to(&file, hash))
            .unwrap_or(true)
    }

    /// Removes a complete blob whose content is not what its name says (a copy damaged on
    /// disk). A copy that does hash to its name (a
    /// good one fetched since the job that found a bad one) stays. Blocking: reads the blob.
    pub fn discard(&self, hash: &Fingerprint) {
        let path = self.path(hash);
        let Ok(file) = fs::File::open(&path) else {
            self.forget_if_gone(hash);
            return;
        };
        let Ok(read) = file.metadata() else { return };
        if hashes_to(&file, hash) != Some(false) {
            return;
        }
        let aside = self.dir.join(format!("{}.evicted", hex(hash)));
        {
            let mut state = self.lock();
            // Still the copy that was read: a good one landing meanwhile replaced it.
            // Renamed under the lock, like an eviction.
            if !same_file(&path, &read) || fs::rename(&path, &aside).is_err() {
                return;
            }
            state.complete.remove(hash);
        }
        let _ = fs::remove_file(&aside);
    }

    /// Gives up a fetch and removes what it wrote.
    pub fn abandon(&self, hash: &Fingerprint) {
        // Removed under the lock: a write of this attempt opens the file only under it.
        let mut state = self.lock();
        if state.partial.remove(hash).is_some() {
            let _ = fs::remove_file(self.part_path(hash));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn file_ref(data: &[u8]) -> FileRef {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, data).unwrap();
        FileRef::read(&p).unwrap()
    }

    /// A blob a previous run left is held, but not served before its check: asked for, the
    /// store says "not yet", so that a node whose file only this one holds waits for it
    /// rather than take it for gone. Once checked it is served, or unknown if it failed its
    /// check; one removed before its check is unknown at once.
    #[test]
    fn a_blob_left_from_before_is_not_yet_until_checked() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"a blob a previous run left".to_vec();
        let f = file_ref(&data);
        let damaged = Fingerprint([9; 32]);
        let removed = Fingerprint([8; 32]);
        {
            let store = BlobStore::open(dir.path()).unwrap();
            fs::write(store.path(&f.hash), &data).unwrap();
            fs::write(store.path(&damaged), b"not what the name says").unwrap();
            fs::write(store.path(&removed), b"removed by hand").unwrap();
        }
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(store.chunk(&f.hash, 0), ChunkLookup::NotYet);
        assert_eq!(store.chunk(&damaged, 0), ChunkLookup::NotYet);
        assert_eq!(store.chunk(&Fingerprint([7; 32]), 0), ChunkLookup::Unknown);
        fs::remove_file(store.path(&removed)).unwrap();
        assert_eq!(store.chunk(&removed, 0), ChunkLookup::Unknown);
        store.verify_existing();
        assert_eq!(store.chunk(&f.hash, 0), ChunkLookup::Have(data));
        assert_eq!(store.chunk(&damaged, 0), ChunkLookup::Unknown);
    }

    /// A stop ends the check of what a previous run left: nothing more is taken or removed
    /// (the next start checks the rest).
    #[test]
    fn a_stopping_node_ends_the_check_of_its_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"a blob a previous run left".to_vec();
        let f = file_ref(&data);
        let damaged = Fingerprint([9; 32]);
        {
            let store = BlobStore::open(dir.path()).unwrap();
            fs::write(store.path(&f.hash), &data).unwrap();
            fs::write(store.path(&damaged), b"not what the name says").unwrap();
        }
        let stopping = BlobStore::open(dir.path()).unwrap();
        stopping.stop();
        stopping.verify_existing();
        assert!(!stopping.has(&f.hash), "taken without a check");
        assert!(stopping.path(&damaged).exists(), "removed without a check");
        let next = BlobStore::open(dir.path()).unwrap();
        next.verify_existing();
        assert!(next.has(&f.hash));
        assert!(!next.path(&damaged).exists());
    }

    #[test]
    fn fetch_by_chunks_serves_what_it_has_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(CHUNK_SIZE * 2 + 10))
            .map(|i| (i % 251) as u8)
            .collect();
        let f = file_ref(&data);
        assert_eq!(store.chunk(&f.hash, 0), ChunkLookup::Unknown);
        let attempt = store.begin(&f).unwrap();
        assert_eq!(store.chunk(&f.hash, 1), ChunkLookup::NotYet);
        // No such chunk: answered at once, never parked nor served empty.
        assert_eq!(store.has_chunk(&f.hash, 3), None);
        assert_eq!(store.chunk(&f.hash, 3), ChunkLookup::Unknown);
        let c1 = &data[CHUNK_SIZE as usize..2 * CHUNK_SIZE as usize];
        let mut bad = c1.to_vec();
        bad[5] ^= 1;
        let refused = store
            .write_chunk(&f, attempt, 1, &bad)
            .unwrap()
            .expect("a corrupt chunk is refused");
        assert!(refused.starts_with("chunk 1: expected digest"), "{refused}");
        // A chunk of the wrong length (an empty one too) is refused before it is hashed.
        for short in [&c1[..10], &[][..]] {
            let refused = store
                .write_chunk(&f, attempt, 1, short)
                .unwrap()
                .expect("refused");
            assert!(
                refused.starts_with(&format!(
                    "chunk 1: expected {CHUNK_SIZE} bytes, found {}",
                    short.len()
                )),
                "{refused}"
            );
        }
        assert!(store.write_chunk(&f, attempt, 1, c1).unwrap().is_none());
        assert_eq!(store.chunk(&f.hash, 1), ChunkLookup::Have(c1.to_vec()));
        assert!(
            store
                .write_chunk(&f, attempt, 0, &data[..CHUNK_SIZE as usize])
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .write_chunk(&f, attempt, 2, &data[2 * CHUNK_SIZE as usize..])
                .unwrap()
                .is_none()
        );
        let path = store.finish(&f).unwrap();
        assert_eq!(fs::read(path).unwrap(), data);
        assert_eq!(store.chunk(&f.hash, 3), ChunkLookup::Unknown);
        assert_eq!(store.chunk(&f.hash, u64::MAX), ChunkLookup::Unknown);
        assert!(store.has(&f.hash));
        // Survives reopening once checked; leftovers and damaged blobs are cleaned.
        let leftover = dir
            .path()
            .join(format!("{}.part", hex(&Fingerprint([7; 32]))));
        fs::write(&leftover, b"x").unwrap();
        let damaged = Fingerprint([9; 32]);
        fs::write(store.path(&damaged), b"not what the name says").unwrap();
        let again = BlobStore::open(dir.path()).unwrap();
        assert!(!again.has(&f.hash), "not served before it is checked");
        again.verify_existing();
        assert!(again.has(&f.hash));
        assert!(!again.has(&damaged));
        assert!(!leftover.exists());
        assert!(!store.path(&damaged).exists());
    }

    /// Two submissions of one file at once each write their own copy: the blob is whole
    /// and both are taken (one temporary file for both was truncated under the other).
    #[test]
    fn imports_of_one_file_at_once_each_write_their_own_copy() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        let src = dir.path().join("src");
        fs::write(&src, &data).unwrap();
        let f = FileRef::read(&src).unwrap();
        for round in 0..3 {
            let store = std::sync::Arc::new(
                BlobStore::open(&dir.path().join(format!("b{round}"))).unwrap(),
            );
            let imports: Vec<_> = (0..4)
                .map(|_| {
                    let (store, src, f) = (store.clone(), src.clone(), f.clone());
                    std::thread::spawn(move || store.import(&src, &f))
                })
                .collect();
            for import in imports {
                import.join().unwrap().unwrap();
            }
            let copy = fs::read(store.path(&f.hash)).unwrap();
            assert!(copy == data, "round {round}: the copy is not the file");
            let left: Vec<_> = fs::read_dir(dir.path().join(format!("b{round}")))
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(left.len(), 1, "{left:?}");
        }
    }

    /// A blob whose file was removed by hand is not held any more: not served, fetched
    /// again; and a fetch that ends after the blob came another way leaves no partial copy.
    #[test]
    fn a_blob_removed_by_hand_is_not_held_and_a_fetch_overtaken_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let f = file_ref(b"hello");
        store.put(&f.hash, b"hello").unwrap();
        fs::remove_file(store.path(&f.hash)).unwrap();
        assert_eq!(store.chunk(&f.hash, 0), ChunkLookup::Unknown);
        assert!(!store.holds(&f.hash));
        store.put(&f.hash, b"hello").unwrap();
        fs::remove_file(store.path(&f.hash)).unwrap();
        assert!(!store.has(&f.hash));
        assert!(!store.holds(&f.hash));
        store.begin(&f).unwrap();
        store.put(&f.hash, b"hello").unwrap();
        assert_eq!(store.finish(&f).unwrap(), store.path(&f.hash));
        assert!(!store.part_path(&f.hash).exists());
        assert_eq!(
            store.chunk(&f.hash, 0),
            ChunkLookup::Have(b"hello".to_vec())
        );
    }

    /// A second answer of a chunk that comes after its fetch finished is no failure to
    /// write: the chunk is there.
    #[test]
    fn a_chunk_answered_again_after_the_fetch_finished_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let f = file_ref(b"hello");
        let attempt = store.begin(&f).unwrap();
        assert_eq!(store.write_chunk(&f, attempt, 0, b"hello"), Ok(None));
        store.finish(&f).unwrap();
        assert_eq!(store.write_chunk(&f, attempt, 0, b"hello"), Ok(None));
        // Given up (nothing here): that one cannot be written.
        let g = file_ref(b"other");
        let attempt = store.begin(&g).unwrap();
        store.abandon(&g.hash);
        assert!(store.write_chunk(&g, attempt, 0, b"other").is_err());
        // Nor once the file is fetched again: the chunk is not that fetch's.
        let again = store.begin(&g).unwrap();
        assert_ne!(again, attempt);
        assert!(store.write_chunk(&g, attempt, 0, b"other").is_err());
        assert_eq!(store.has_chunk(&g.hash, 0), Some(false));
        assert_eq!(store.write_chunk(&g, again, 0, b"other"), Ok(None));
        assert_eq!(store.has_chunk(&g.hash, 0), Some(true));
    }

    /// A chunk written for a fetch that is given up and begun again meanwhile does not count
    /// for the new one: it would serve, and keep, zeros where the chunk should be.
    #[test]
    fn a_chunk_of_a_fetch_given_up_does_not_count_for_the_next_fetch_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..CHUNK_SIZE + 10).map(|i| (i % 249) as u8).collect();
        let f = file_ref(&data);
        let attempt = store.begin(&f).unwrap();
        let again = f.clone();
        *store.after_open.lock().unwrap() = Some(Box::new(move |s: &BlobStore| {
            s.abandon(&again.hash);
            s.begin(&again).unwrap();
        }));
        assert!(
            store
                .write_chunk(&f, attempt, 0, &data[..CHUNK_SIZE as usize])
                .is_err()
        );
        assert_eq!(store.has_chunk(&f.hash, 0), Some(false));
        assert_eq!(store.chunk(&f.hash, 0), ChunkLookup::NotYet);
    }

    #[test]
    fn a_description_whose_chunks_do_not_fit_its_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let real = file_ref(&vec![7u8; CHUNK_SIZE as usize + 1]);
        // More chunks than the size allows, and a size with no chunks (sparse zeros).
        let mut longer = real.clone();
        longer.chunks.push(real.chunks[0]);
        let mut hollow = real.clone();
        hollow.chunks.clear();
        for bad in [longer, hollow] {
            let e = store.begin(&bad).unwrap_err();
            assert!(e.contains("take 2 chunks"), "{e}");
            assert_eq!(store.chunk(&bad.hash, 0), ChunkLookup::Unknown);
            // A chunk beyond the size never underflows.
            let refused = store.write_chunk(&bad, Attempt(0), 2, b"x").unwrap();
            assert!(refused.is_some());
        }
        store.begin(&real).unwrap();
    }

    /// A member describes a file by its real hash but with the pieces of other content: before
    /// the chunk lists added up to the hash, the node fetched that content and kept it under
    /// the real file's name until a landing found it out.
    #[test]
    fn a_description_whose_chunks_make_other_content_is_refused_before_any_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let size = 2 * CHUNK_SIZE as usize + 3;
        let real = file_ref(&vec![1u8; size]);
        let other_content = vec![2u8; size];
        let other = file_ref(&other_content);
        let mut forged = other.clone();
        forged.hash = real.hash;
        let small = file_ref(b"the real file");
        let mut forged_small = file_ref(b"other content");
        forged_small.hash = small.hash;
        for forged in [&forged, &forged_small] {
            let e = store.begin(forged).unwrap_err();
            assert!(e.contains("does not add up to its blake3"), "{e}");
            assert_eq!(store.chunk(&forged.hash, 0), ChunkLookup::Unknown);
            assert!(!store.part_path(&forged.hash).exists());
        }
        // Chunks offered for it anyway are never taken as the real file's.
        assert!(
            store
                .write_chunk(
                    &forged,
                    Attempt(0),
                    0,
                    &other_content[..CHUNK_SIZE as usize]
                )
                .is_err()
        );
        assert!(!store.has(&real.hash));
        store.begin(&real).unwrap();
    }

    /// Opening removes what an unfinished fetch or copy left, and nothing else (the directory
    /// may be a link to one that holds other files); a file where the directory should be is
    /// named as such.
    #[test]
    fn opening_removes_only_what_the_store_left_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        fs::create_dir(&blobs).unwrap();
        let h = hex(&Fingerprint(*blake3::hash(b"x").as_bytes()));
        for name in [
            format!("{h}.part"),
            format!("{h}.3.import"),
            "notes.txt".into(),
            "README".into(),
            "zz.part".into(),
        ] {
            fs::write(blobs.join(name), b"?").unwrap();
        }
        BlobStore::open(&blobs).unwrap();
        let mut left: Vec<String> = fs::read_dir(&blobs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["README", "notes.txt", "zz.part"]);
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let e = BlobStore::open(&file).err().unwrap();
        assert!(
            e.ends_with(
                "/file is not a directory: the node keeps the files jobs send there \
                 (move the file away, or remove it, and start again)"
            ),
            "{e}"
        );
    }

    /// A copy held already that was damaged on disk since (same size, other bytes) is not
    /// served again: the next import of its file copies it anew.
    #[test]
    fn an_import_replaces_a_held_copy_damaged_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("blobs")).unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"the real content").unwrap();
        let f = FileRef::read(&src).unwrap();
        assert!(store.import(&src, &f).unwrap().is_some());
        // Held and intact: not copied again.
        assert!(store.import(&src, &f).unwrap().is_none());
        fs::write(store.path(&f.hash), b"the rotted content").unwrap();
        assert!(store.import(&src, &f).unwrap().is_some());
        assert_eq!(
            store.chunk(&f.hash, 0),
            ChunkLookup::Have(b"the real content".to_vec())
        );
    }

    #[test]
    fn import_checks_the_content_and_empty_files_work() {
        let dir = tempfile::tempdir().unwrap();
        // Opened in a directory anybody may read (an operator made it 0755): owner only.
        fs::create_dir(dir.path().join("blobs")).unwrap();
        fs::set_permissions(dir.path().join("blobs"), fs::Permissions::from_mode(0o755)).unwrap();
        let store = BlobStore::open(&dir.path().join("blobs")).unwrap();
        let mode = fs::metadata(dir.path().join("blobs"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let src = dir.path().join("src");
        fs::write(&src, b"hello").unwrap();
        let f = FileRef::read(&src).unwrap();
        fs::write(&src, b"changed").unwrap();
        assert!(matches!(
            store.import(&src, &f),
            Err(ImportError::Source(e)) if e.contains("changed after it was read")
        ));
        // The store cannot take the copy (here the temporary name of the second import is
        // taken by a directory; a full disk is the usual cause): the node's trouble, not the
        // input's.
        fs::write(&src, b"hello").unwrap();
        let busy = dir
            .path()
            .join("blobs")
            .join(format!("{}.1.import", hex(&f.hash)));
        fs::create_dir(&busy).unwrap();
        assert!(matches!(
            store.import(&src, &f),
            Err(ImportError::Store(e)) if e.contains("cannot keep a copy of") && e.contains("state directory")
        ));
        fs::remove_dir(&busy).unwrap();
        fs::write(&src, b"hello").unwrap();
        store.import(&src, &f).unwrap();
        assert_eq!(
            store.chunk(&f.hash, 0),
            ChunkLookup::Have(b"hello".to_vec())
        );
        let empty = file_ref(b"");
        store.begin(&empty).unwrap();
        assert_eq!(fs::read(store.finish(&empty).unwrap()).unwrap(), b"");
        assert!(store.put(&f.hash, b"other").is_ok(), "already there");
        let g = file_ref(b"inline");
        assert!(store.put(&g.hash, b"not it").is_err());
        store.put(&g.hash, b"inline").unwrap();
        assert!(store.has(&g.hash));
    }

    /// A FIFO put at the path since the CLI read the file fails the import at once, naming
    /// the path, rather than block its thread forever; a file grown since is not copied
    /// past its size.
    #[test]
    fn an_import_of_a_path_that_is_no_longer_its_file_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(BlobStore::open(&dir.path().join("blobs")).unwrap());
        let src = dir.path().join("src");
        fs::write(&src, b"hello").unwrap();
        let f = FileRef::read(&src).unwrap();
        fs::remove_file(&src).unwrap();
        nix::unistd::mkfifo(&src, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let (store, src, f) = (store.clone(), src.clone(), f.clone());
            std::thread::spawn(move || tx.send(store.import(&src, &f)));
        }
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the import of a FIFO returns at once");
        assert!(
            matches!(&result, Err(ImportError::Source(e))
                if e.contains(&src.display().to_string()) && e.contains("regular file")),
            "{result:?}"
        );
        fs::remove_file(&src).unwrap();
        fs::write(&src, b"hello, and more").unwrap();
        let result = store.import(&src, &f);
        assert!(
            matches!(&result, Err(ImportError::Source(e)) if e.contains("has more now")),
            "{result:?}"
        );
        assert_eq!(fs::read_dir(dir.path().join("blobs")).unwrap().count(), 0);
    }

    /// A refused submission takes back the blobs it brought, but not one held before it nor
    /// one used since.
    #[test]
    fn a_withdrawal_removes_only_blobs_unused_since_their_import() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("blobs")).unwrap();
        let imported: Vec<(FileRef, Option<Added>)> = ["a", "b", "c"]
            .iter()
            .map(|name| {
                let src = dir.path().join(name);
                fs::write(&src, name.as_bytes()).unwrap();
                let f = FileRef::read(&src).unwrap();
                let added = store.import(&src, &f).unwrap();
                assert!(added.is_some(), "{name} is new");
                (f, added)
            })
            .collect();
        let again = store.import(&dir.path().join("a"), &imported[0].0).unwrap();
        assert_eq!(again, None, "held already");
        assert!(store.has(&imported[1].0.hash), "b is used since");
        let added: Vec<Added> = imported.iter().filter_map(|(_, a)| *a).collect();
        store.withdraw(&added);
        assert!(!store.holds(&imported[2].0.hash));
        assert!(!store.path(&imported[2].0.hash).exists());
        assert!(
            store.has(&imported[0].0.hash),
            "a was used again by its second import"
        );
        assert!(store.has(&imported[1].0.hash));
        assert_eq!(fs::read_dir(dir.path().join("blobs")).unwrap().count(), 2);
    }

    /// Two imports of one file at once: at most one claims the copy as its own (so a refused
    /// submission cannot take back a file another one is using), and the file stays.
    #[test]
    fn of_two_imports_of_one_file_at_once_at_most_one_claims_it() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("big");
        fs::write(&src, vec![7u8; 4 << 20]).unwrap();
        let f = FileRef::read(&src).unwrap();
        for round in 0..10 {
            let store = BlobStore::open(&dir.path().join(format!("blobs{round}"))).unwrap();
            let claims: Vec<Option<Added>> = std::thread::scope(|s| {
                let both = [
                    s.spawn(|| store.import(&src, &f)),
                    s.spawn(|| store.import(&src, &f)),
                ];
                both.map(|h| h.join().unwrap().unwrap())
                    .into_iter()
                    .collect()
            });
            assert_eq!(
                claims.iter().flatten().count(),
                1,
                "round {round}: {claims:?}"
            );
            assert!(store.has(&f.hash));
        }
    }

    #[test]
    fn only_a_copy_that_is_not_its_file_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let f = file_ref(b"content");
        store.put(&f.hash, b"content").unwrap();
        // A good copy (fetched again since a job found a bad one) stays.
        store.discard(&f.hash);
        assert!(store.has(&f.hash));
        // A copy that does not hash to its name goes, and the file can be stored again.
        fs::write(store.path(&f.hash), b"damaged").unwrap();
        store.discard(&f.hash);
        assert!(!store.has(&f.hash));
        assert!(!store.path(&f.hash).exists());
        assert_eq!(store.chunk(&f.hash, 0), ChunkLookup::Unknown);
        store.discard(&f.hash);
        store.put(&f.hash, b"content").unwrap();
        assert!(store.has(&f.hash));
        // Reopened after a discard, the store does not bring it back from a leftover.
        fs::write(store.path(&f.hash), b"damaged").unwrap();
        store.discard(&f.hash);
        drop(store);
        let store = BlobStore::open(dir.path()).unwrap();
        assert!(!store.has(&f.hash));
    }

    #[test]
    fn blobs_unused_for_the_retention_go_unless_an_open_run_needs_them() {
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let blob = |text: &[u8]| {
            let hash = Fingerprint(*blake3::hash(text).as_bytes());
            store.put(&hash, text).unwrap();
            hash
        };
        let (old, kept, used, fetching) = (
            blob(b"old"),
            blob(b"kept"),
            blob(b"used"),
            file_ref(b"partial"),
        );
        store.begin(&fetching).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let cutoff = SystemTime::now();
        // Serving a chunk and looking a blob up for a job both count as uses.
        assert_eq!(store.chunk(&used, 0), ChunkLookup::Have(b"used".to_vec()));
        let (count, bytes) = store.evict(cutoff, &HashSet::from([kept]));
        assert_eq!((count, bytes), (1, 3));
        assert!(!store.has(&old) && !store.path(&old).exists());
        assert_eq!(store.chunk(&old, 0), ChunkLookup::Unknown);
        assert!(store.has(&kept) && store.has(&used));
        assert_eq!(
            store.has_chunk(&fetching.hash, 0),
            Some(false),
            "a fetch in progress stays"
        );
        // Gone means fetched or stored again when a run needs it.
        store.put(&old, b"old").unwrap();
        assert!(store.has(&old));

        // After a restart, a blob's modification time stands for its last use, and a use
        // after a long quiet spell is written there.
        let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86400);
        for hash in [kept, used] {
            File::options()
                .write(true)
                .open(store.path(&hash))
                .and_then(|f| f.set_modified(two_days_ago))
                .unwrap();
        }
        let reopened = BlobStore::open(dir.path()).unwrap();
        reopened.verify_existing();
        assert_eq!(
            reopened.chunk(&used, 0),
            ChunkLookup::Have(b"used".to_vec())
        );
        let again = BlobStore::open(dir.path()).unwrap();
        again.verify_existing();
        let one_day_ago = SystemTime::now() - Duration::from_secs(86400);
        assert_eq!(again.evict(one_day_ago, &HashSet::new()), (1, 4));
        assert!(!again.has(&kept) && again.has(&used) && again.has(&old));
    }

    #[test]
    fn frequent_uses_still_reach_the_file_once_a_minute() {
        use std::time::Duration;

        let t0 = SystemTime::now();
        let mut last = LastUse::new(t0);
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // Used every 30 s: written at the first use a minute after the last write, and so on.
        let written: Vec<Option<SystemTime>> = [30, 60, 90, 120, 150]
            .iter()
            .map(|&s| last.touch_at(at(s)))
            .collect();
        assert_eq!(written, vec![None, Some(at(60)), None, Some(at(120)), None]);
        assert_eq!(last.at, at(150));
    }

    /// A chunk that cannot be read for any reason but a fetch's file renamed meanwhile (a
    /// disk error; here a directory in the file's place, which opens but fails to read, as
    /// root too) is "unreadable": not "not yet", which would keep the asker waiting on this
    /// node for nothing, nor "unknown", which would tell the asker this node does not hold
    /// the file. The blob stays held, and is served again once it can be read.
    #[test]
    fn a_chunk_that_cannot_be_read_is_unreadable_not_unknown_nor_awaited() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let in_place_of = |path: PathBuf| {
            let _ = fs::remove_file(&path);
            fs::create_dir(&path).unwrap();
            // Not empty: a directory's size is not 0, which would read as no such chunk.
            fs::write(path.join("x"), b"x").unwrap();
        };
        let f = file_ref(b"hello");
        store.put(&f.hash, b"hello").unwrap();
        in_place_of(store.path(&f.hash));
        assert_eq!(store.chunk(&f.hash, 0), ChunkLookup::Unreadable);
        assert!(
            store.holds(&f.hash),
            "a blob that cannot be read was forgotten"
        );
        // Readable again (the disk back): served, as it was never forgotten.
        fs::remove_dir_all(store.path(&f.hash)).unwrap();
        fs::write(store.path(&f.hash), b"hello").unwrap();
        assert_eq!(
            store.chunk(&f.hash, 0),
            ChunkLookup::Have(b"hello".to_vec())
        );
        // A fetch whose file went (renamed to the complete blob meanwhile): ask again.
        let g = file_ref(b"other");
        let attempt = store.begin(&g).unwrap();
        assert_eq!(store.write_chunk(&g, attempt, 0, b"other"), Ok(None));
        fs::remove_file(store.part_path(&g.hash)).unwrap();
        assert_eq!(store.chunk(&g.hash, 0), ChunkLookup::NotYet);
        in_place_of(store.part_path(&g.hash));
        assert_eq!(store.chunk(&g.hash, 0), ChunkLookup::Unreadable);
        assert_eq!(
            store.has_chunk(&g.hash, 0),
            Some(true),
            "the fetch lost its chunk"
        );
    }

    /// A file carried inside an announce that cannot be stored (a full disk; here a
    /// directory where it would go) leaves no temporary copy behind.
    #[test]
    fn a_put_that_fails_leaves_no_temporary_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let f = file_ref(b"hello");
        fs::create_dir(store.path(&f.hash)).unwrap();
        fs::write(store.path(&f.hash).join("x"), b"x").unwrap();
        assert!(store.put(&f.hash, b"hello").is_err());
        assert!(!store.has(&f.hash));
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(hex(&f.hash))]);
    }
}
