//! ADD/COPY and WORKDIR: a file fetched by hash and landed at DEST (temporary file, verify,
//! owner and mode, fsync, rename, fsync of DEST's directory), and directories made with their
//! owner and mode.
//!
//! What touches the file system or asks the name service (a user or group may come from
//! LDAP) runs on tokio's blocking threads ([`super::off_thread`]): every job of the node
//! shares the executor's one thread.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use tracing::warn;

use super::{Context, Finished, blocking_step, off_thread, render_path};
use crate::{
    cache::Cache,
    spec::{Component, FileRef, Fingerprint, Owner, Transfer},
    template::{self, Vars},
    transfer::BLUEPRINT_MAX_BYTES,
};

/// ADD/COPY on a target: land one file at DEST, verified and atomically.
pub(super) async fn transfer(t: &Transfer, ctx: &Context<'_>) -> Finished {
    let Some(file) = &t.file else {
        return Finished::fail(
            "the submitter did not resolve this file (a daemon older than its CLI?)",
            "",
        );
    };
    // The args are taken when needed and let go at once: held across the fetch, every ARG
    // meanwhile would copy them all.
    let path = match landing_path(&t.dest, file, &ctx.args()) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let checked = {
        let (path, owner) = (path.clone(), t.owner.clone());
        off_thread("the check of DEST", move || {
            blocking_step("check", &path);
            check_dest(&path, &dir, owner.as_ref())
        })
        .await
    };
    let owner = match checked {
        Ok(Ok(owner)) => owner,
        Ok(Err(f)) => return f,
        Err(e) => return Finished::fail(e, format!("{} was left as it was", path.display())),
    };
    let access = Access {
        owner,
        mode: t.mode,
    };
    let expected = file.hash;
    let size = file.size;
    let blueprint = t.blueprint;
    // Already there: nothing to transfer, but owner and mode still apply. (A link there is
    // replaced by the file, never changed through.)
    let unchanged = !blueprint && {
        let p = path.clone();
        tokio::task::spawn_blocking(move || holds_content(&p, size, expected))
            .await
            .unwrap_or(false)
    };
    let mut landed_hash = None;
    if !unchanged {
        let Some(coordinator) = ctx.coordinator else {
            return Finished::fail("ADD needs a mesh to fetch the file from", "");
        };
        // Bounded by the job's timeout: with every holder out of reach, the fetch waits for
        // one to come back.
        let fetched =
            tokio::time::timeout_at(ctx.deadline, coordinator.fetch_blob(ctx.job_id, file));
        let blob = match fetched.await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                return Finished::fail(e, format!("{} was not transferred", path.display()));
            }
            Err(_) => {
                return Finished::fail(
                    format!(
                        "the job's timeout ended before the file arrived ({} blake3 {expected}): \
                         the nodes holding it were out of reach, slow, or did not have it yet \
                         (this node's log says which)",
                        file.name
                    ),
                    format!("{} was not transferred", path.display()),
                );
            }
        };
        let landing = match ctx.landing_lock {
            Some(lock) => Some(Arc::clone(lock).lock_owned().await),
            None => None,
        };
        let target = path.clone();
        let source_name = file.name.clone();
        let args = blueprint.then(|| ctx.args());
        // The job given up (dropped at the executor's timeout) while the file lands: the
        // landing stops, and does not rename.
        let given_up = GiveUpOnDrop(Arc::new(AtomicBool::new(false)));
        let landing_given_up = Arc::clone(&given_up.0);
        let written = tokio::task::spawn_blocking(move || {
            // Held until the landing ends, whether or not the job still waits for it.
            let _landing = landing;
            land(
                &blob,
                &target,
                expected,
                args,
                access,
                &source_name,
                &landing_given_up,
            )
        })
        .await
        .unwrap_or_else(|e| Err(LandError::Other(format!("the copy stopped: {e}"))));
        drop(given_up);
        match written {
            Ok(hash) => landed_hash = Some(hash),
            Err(e) => {
                if let LandError::NotTheFile(_) = e {
                    coordinator.discard_blob(expected);
                }
                return Finished::fail(e.to_string(), e.what_became_of(&path));
            }
        }
    }
    // A file landed with its owner and mode already; one that was there gets them now.
    if unchanged {
        let p = path.clone();
        let applied = off_thread("the change of owner and mode", move || {
            access.apply(&p, false)
        })
        .await
        .and_then(|r| r);
        if let Err(e) = applied {
            return Finished::fail(
                e,
                format!("Failed to set ownership or mode of {}", path.display()),
            );
        }
    }
    let hex = landed_hash.unwrap_or(expected).to_hex();
    let info = if unchanged {
        format!(
            "File exists {} and blake3 {} matches, nothing to transfer",
            path.display(),
            expected
        )
    } else if blueprint {
        format!("rendered {} into {}", file.name, path.display())
    } else {
        format!("copied {size} bytes to {}", path.display())
    };
    Finished::ok(hex, info)
}

/// Why `dir`, DEST's directory, is not one: the first part of it that is there but not a
/// directory (a regular file cannot hold DEST, and WORKDIR would fail on it too), or that it
/// does not exist.
fn not_a_directory(dir: &Path) -> String {
    let blocking = dir.ancestors().find_map(|part| {
        let meta = std::fs::metadata(part).ok()?;
        Some((part, meta)).filter(|(_, m)| !m.is_dir())
    });
    match blocking {
        Some((part, _)) => format!(
            "destination directory {}: {} is a file, not a directory",
            dir.display(),
            part.display()
        ),
        None => format!(
            "destination directory {} does not exist (create it first, e.g. with WORKDIR)",
            dir.display()
        ),
    }
}

/// What ADD/COPY checks before it fetches the file (on a blocking thread): that `dir`, DEST's
/// directory, exists, that nothing at `path` is a directory or a special file, and who will
/// own the file (resolved on this node). The failure to report otherwise.
fn check_dest(path: &Path, dir: &Path, owner: Option<&Owner>) -> Result<Option<Ids>, Finished> {
    if !dir.is_dir() {
        return Err(Finished::fail(not_a_directory(dir), ""));
    }
    // A directory where the file would land (DEST without its trailing /): said before the
    // file is fetched, with the way to put it inside. (A link to a file is replaced, below.)
    let kind = std::fs::symlink_metadata(path).ok().map(|m| m.file_type());
    if kind.is_some_and(|t| t.is_dir()) {
        return Err(Finished::fail(
            format!(
                "{} is a directory: end DEST with / to put the file inside it",
                path.display()
            ),
            format!("{} was left as it was", path.display()),
        ));
    }
    // A link to a directory (a release's `current`) is not replaced by the file: the
    // operator more likely meant the directory, and the link would be lost.
    if kind.is_some_and(|t| t.is_symlink()) && path.is_dir() {
        let points_to = std::fs::read_link(path)
            .map(|to| format!(" ({})", to.display()))
            .unwrap_or_default();
        return Err(Finished::fail(
            format!(
                "{} is a link to a directory{points_to}: end DEST with / to put the file \
                 inside that directory, or remove the link first to replace it with the file",
                path.display()
            ),
            format!("{} was left as it was", path.display()),
        ));
    }
    // A FIFO, a device or a socket there is no file to replace: said at once (reading a
    // FIFO to see whether it holds the content would wait for a writer forever).
    if let Some(what) = kind.and_then(special_file) {
        return Err(Finished::fail(
            format!(
                "{} is {what}, not a regular file: ADD/COPY replaces only a file (or a link); \
                 remove it first or choose another DEST",
                path.display()
            ),
            format!("{} was left as it was", path.display()),
        ));
    }
    // Who will own it is settled before anything is written: a user this node lacks fails
    // the job with DEST as it was.
    owner.map(resolve_owner).transpose().map_err(|e| {
        Finished::fail(
            e,
            format!(
                "Failed to set ownership of {}: it was left as it was",
                path.display()
            ),
        )
    })
}

/// Tells a landing that its job was given up, when the job's future is dropped.
struct GiveUpOnDrop(Arc<AtomicBool>);

impl Drop for GiveUpOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What a file of type `t` is, when it is neither a regular file, a directory nor a link.
fn special_file(t: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        None
    }
}

/// Whether `path` is a regular file (not a link) that already has the content of `size`
/// bytes and hash `expected`. One of another size is not read at all: a large DEST would
/// otherwise be hashed whole for nothing.
fn holds_content(path: &Path, size: u64, expected: Fingerprint) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
        && file_hash(path).is_ok_and(|h| h == expected.0)
}

/// blake3 of a regular file's content; an error for anything else. Opened without waiting
/// (a FIFO put there since it was looked at would wait for a writer) and never through a
/// link.
pub(super) fn file_hash(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOFOLLOW).bits())
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut hasher = blake3::Hasher::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(*hasher.finalize().as_bytes())
}

/// Why a file did not land.
#[derive(Debug)]
pub(super) enum LandError {
    /// The transferred content does not have the file's hash.
    NotTheFile(String),
    /// Its job was given up (at its timeout) before the file was renamed into place.
    GivenUp,
    /// The file took DEST's place, but its directory could not be synced: a power loss may
    /// bring the old DEST back.
    NotDurable(String),
    Other(String),
}

impl LandError {
    /// What the failed landing left at `path`, for the job's info line.
    fn what_became_of(&self, path: &Path) -> String {
        match self {
            LandError::NotDurable(_) => format!(
                "{} was replaced, but may not outlast a power loss",
                path.display()
            ),
            _ => format!("{} was left as it was", path.display()),
        }
    }
}

impl std::fmt::Display for LandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LandError::NotTheFile(e) | LandError::NotDurable(e) | LandError::Other(e) => {
                f.write_str(e)
            }
            LandError::GivenUp => f.write_str(
                "the job was given up at its timeout before the file landed: DEST was left as \
                 it was",
            ),
        }
    }
}

impl From<String> for LandError {
    fn from(e: String) -> Self {
        LandError::Other(e)
    }
}

/// Where ADD/COPY lands `file`: DEST rendered against the node's args, the file's name added
/// when DEST ends in `/`.
pub(super) fn landing_path(dest: &str, file: &FileRef, args: &Vars) -> Result<PathBuf, Finished> {
    let dest = render_path(dest, args)?;
    Ok(if dest.ends_with('/') {
        PathBuf::from(&dest).join(&file.name)
    } else {
        PathBuf::from(&dest)
    })
}

/// How long a temporary file must have gone unwritten before a landing takes it for a
/// leftover, whoever wrote it: a landing writes its file without pause from the moment it
/// makes it, so an hour's silence is no landing's. (The clocks of hosts that share a
/// directory are taken to be within an hour of each other.)
const LEFTOVER_AFTER: Duration = Duration::from_secs(3600);

/// How many names a landing tries for its temporary file before it gives up: one of this
/// process's names is taken only when someone planted something there.
const TEMPORARY_NAME_TRIES: u32 = 64;

/// Landings this process began, to name each one's temporary file.
static LANDINGS: AtomicU64 = AtomicU64::new(0);

/// The daemon process that writes a temporary file, as the file's name tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lander {
    pid: u32,
    /// This boot of this machine and this process's PID namespace, hashed: where `pid`
    /// names this process, and where /proc tells whether the writer of a file still runs.
    host: u64,
    /// Drawn at random when the process starts: no other daemon, on this host or another
    /// (two in containers may both be PID 1), names its files alike.
    start: u64,
}

/// Who wrote a temporary file beside DEST, from what its name holds between DEST's name and
/// `.dm-tmp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// `PID-HOST-RANDOM-N` (HOST and RANDOM 16 hex digits each).
    Daemon(Lander),
    /// `PID-N` or `PID`, as releases before named them: no host in it.
    OlderRelease,
}

/// This process, as the names of its temporary files tell it.
fn this_lander() -> Lander {
    static THIS: OnceLock<Lander> = OnceLock::new();
    *THIS.get_or_init(|| {
        let start = random_u64();
        Lander {
            pid: std::process::id(),
            // Not known (no /proc): a host no other process names, so that only age makes
            // another's file a leftover.
            host: host_identity().unwrap_or(start),
            start,
        }
    })
}

/// 64 random bits, from the keys the standard library draws from the OS for its hash maps.
fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(SystemTime::now())
}

/// This boot (`boot_id`, random at each boot) and this process's PID namespace, hashed. The
/// boot is needed too: the first PID namespace has the same inode number on every machine.
fn host_identity() -> Option<u64> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(boot.trim().as_bytes());
    hasher.update(b"\0");
    hasher.update(namespace.as_os_str().as_encoded_bytes());
    let bytes: [u8; 8] = hasher.finalize().as_bytes()[..8].try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The directory DEST lands in.
fn dest_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// The temporary file beside `path` for landing `n` of `lander`:
/// `.NAME.PID-HOST-RANDOM-N.dm-tmp`.
fn landing_file(path: &Path, lander: &Lander, n: u64) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest_dir(path).join(format!(
        ".{name}.{}-{:016x}-{:016x}-{n}.dm-tmp",
        lander.pid, lander.host, lander.start
    ))
}

/// Who wrote a temporary file, from what its name holds between DEST's name and `.dm-tmp`;
/// `None` for anything else (a temporary file of another DEST whose name begins alike).
fn writer_of(middle: &str) -> Option<Writer> {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hex16 = |s: &str| {
        (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    let parts: Vec<&str> = middle.split('-').collect();
    match parts[..] {
        [pid] | [pid, _] if parts.iter().all(|p| number(p)) && pid.parse::<u32>().is_ok() => {
            Some(Writer::OlderRelease)
        }
        [pid, host, start, n] if number(pid) && number(n) => Some(Writer::Daemon(Lander {
            pid: pid.parse().ok()?,
            host: hex16(host)?,
            start: hex16(start)?,
        })),
        _ => None,
    }
}

/// Whether a temporary file that `writer` wrote, last written at `modified`, is a leftover
/// no landing will finish, as seen from `me`. This process's own are never. Those of this
/// host (same boot, same PID namespace) are when their writer is gone: its pid runs no
/// process here, or is `me`'s (a daemon before it with the same pid). Any other, from
/// another machine or container sharing the directory, or from a release before that did
/// not name its host, is only once it went unwritten for [`LEFTOVER_AFTER`]: this host's
/// /proc says nothing of a process elsewhere, and removing a file it is writing would
/// lose its copy.
fn is_leftover(writer: Writer, modified: Option<SystemTime>, me: &Lander) -> bool {
    if let Writer::Daemon(w) = writer {
        if w == *me {
            return false;
        }
        if w.host == me.host && (w.pid == me.pid || !running(w.pid)) {
            return true;
        }
    }
    modified
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|unwritten| unwritten >= LEFTOVER_AFTER)
}

/// Whether a process with this pid runs in this PID namespace: one that ended and was not
/// reaped yet (a zombie: a daemon killed under a parent that has not waited for it) does not.
fn running(pid: u32) -> bool {
    crate::processes::running_process(pid).is_some()
}

/// Removes the temporary files beside `path` that no landing will finish (a daemon killed
/// mid-copy left them; see [`is_leftover`] for which those are); returns them.
pub fn remove_stale_landings(path: &Path) -> Vec<PathBuf> {
    let me = this_lander();
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dest_dir(path)) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(writer) = file_name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".dm-tmp"))
            .and_then(writer_of)
        else {
            continue;
        };
        // Never through a link: the link itself is what is there.
        let modified = entry.metadata().ok().and_then(|m| m.modified().ok());
        if is_leftover(writer, modified, &me) && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// Removes what an ADD/COPY job `component` cut short by a crash left beside its DEST (see
/// [`remove_stale_landings`]); returns it. Nothing for other verbs.
pub fn remove_interrupted_landing(component: &Component, cache: &Cache) -> Vec<PathBuf> {
    match component {
        Component::Add(t) | Component::Copy(t) => t
            .file
            .as_ref()
            .and_then(|file| landing_path(&t.dest, file, &cache.args()).ok())
            .map(|path| remove_stale_landings(&path))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Makes the temporary file of a landing of `path` (numbered from `landings`), new and
/// readable by its owner only while it fills: a file meant for 0600 is never readable by
/// others, not even for a moment. Whatever already has a name (a link planted there by
/// whoever may write in DEST's directory) is neither opened nor removed: the next name is
/// tried, so no two landings ever write through one file.
fn create_landing_file(
    path: &Path,
    landings: &AtomicU64,
) -> Result<(std::fs::File, PathBuf), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let me = this_lander();
    for _ in 0..TEMPORARY_NAME_TRIES {
        let tmp = landing_file(path, &me, landings.fetch_add(1, Ordering::Relaxed));
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp);
        match made {
            Ok(out) => return Ok((out, tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", tmp.display())),
        }
    }
    Err(format!(
        "cannot create a temporary file beside {}: the next {TEMPORARY_NAME_TRIES} names were \
         all taken",
        path.display()
    ))
}

/// Writes `blob` (rendered with `args` for a blueprint) to a temporary file beside `path`,
/// checks it, makes it durable, renames it into place and makes the rename durable. Nothing
/// is left at `path` or beside it when anything fails before the rename, or when `given_up`
/// turns true (its job was given up) before it.
pub(super) fn land(
    blob: &Path,
    path: &Path,
    expected: Fingerprint,
    args: Option<Vars>,
    access: Access,
    source_name: &str,
    given_up: &AtomicBool,
) -> Result<Fingerprint, LandError> {
    // What an earlier daemon killed mid-copy left beside it goes first.
    for stale in remove_stale_landings(path) {
        warn!(path = %stale.display(), "removed a partial copy an interrupted job left");
    }
    let (mut out, tmp) = create_landing_file(path, &LANDINGS)?;
    let result = (|| -> Result<Fingerprint, LandError> {
        let landed = match &args {
            Some(args) => {
                write_rendered(blob, &mut out, &tmp, expected, args, source_name, given_up)?
            }
            None => copy_checked(blob, &mut out, &tmp, expected, given_up)?,
        };
        // Owner and mode before it takes DEST's name: nobody sees it otherwise.
        access
            .apply_to_new(&out)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        out.sync_all()
            .map_err(|e| format!("fsync {}: {e}", tmp.display()))?;
        blocking_step("land", path);
        if given_up.load(Ordering::SeqCst) {
            return Err(LandError::GivenUp);
        }
        std::fs::rename(&tmp, path).map_err(|e| match e.raw_os_error() {
            Some(nix::libc::EBUSY) => format!(
                "cannot move the file into {}: it is busy, most likely a mount point (a \
                 file bind-mounted there?), and ADD/COPY replace a file by renaming a \
                 checked copy over it, which a mount point refuses: send the file to the \
                 mounted file's source instead ({e})",
                path.display()
            ),
            _ => format!("cannot move the file into {}: {e}", path.display()),
        })?;
        Ok(landed)
    })();
    if let Err(e) = &result {
        let _ = std::fs::remove_file(&tmp);
        if let LandError::GivenUp = e {
            warn!(path = %path.display(), "{e}");
        }
    }
    let landed = result?;
    sync_dir(dest_dir(path))?;
    Ok(landed)
}

/// Copies `blob` into the temporary file `out` (at `tmp`), checking that it is the file
/// `expected`; returns its hash. Stops when `given_up` turns true.
fn copy_checked(
    blob: &Path,
    out: &mut std::fs::File,
    tmp: &Path,
    expected: Fingerprint,
    given_up: &AtomicBool,
) -> Result<Fingerprint, LandError> {
    use std::io::{Read, Write};
    let mut src =
        std::fs::File::open(blob).map_err(|e| format!("cannot read the transferred file: {e}"))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if given_up.load(Ordering::SeqCst) {
            return Err(LandError::GivenUp);
        }
        let n = src
            .read(&mut buf)
            .map_err(|e| format!("reading the transferred file: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    }
    let found = Fingerprint(*hasher.finalize().as_bytes());
    if found != expected {
        return Err(LandError::NotTheFile(format!(
            "integrity failure: expected blake3 {expected}, found {found}"
        )));
    }
    Ok(found)
}

/// Renders the blueprint `blob` with `args` into the temporary file `out` (at `tmp`);
/// returns the hash of what was written.
fn write_rendered(
    blob: &Path,
    out: &mut std::fs::File,
    tmp: &Path,
    expected: Fingerprint,
    args: &Vars,
    source_name: &str,
    given_up: &AtomicBool,
) -> Result<Fingerprint, LandError> {
    use std::io::Write;
    let text = read_blueprint(blob, expected, source_name)?;
    if given_up.load(Ordering::SeqCst) {
        return Err(LandError::GivenUp);
    }
    let rendered = template::render_named(source_name, &text, args)?;
    drop(text);
    out.write_all(rendered.as_bytes())
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    Ok(Fingerprint(*blake3::hash(rendered.as_bytes()).as_bytes()))
}

/// The text of the blueprint `blob`, checked to be the file `expected`. Refused over
/// [`BLUEPRINT_MAX_BYTES`]: it is held in memory whole, and then its rendering too.
fn read_blueprint(
    blob: &Path,
    expected: Fingerprint,
    source_name: &str,
) -> Result<String, LandError> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| format!("cannot read the transferred file: {e}");
    let file = std::fs::File::open(blob).map_err(unreadable)?;
    let size = file.metadata().map_err(unreadable)?.len();
    if size > BLUEPRINT_MAX_BYTES {
        return Err(LandError::Other(format!(
            "--blueprint renders files of up to 16 MiB: {source_name} is {size} bytes (send it \
             without --blueprint, or make it smaller)"
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(BLUEPRINT_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    let found = Fingerprint(*blake3::hash(&bytes).as_bytes());
    if found != expected {
        return Err(LandError::NotTheFile(format!(
            "integrity failure: expected blake3 {expected}, found {found}"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        LandError::Other(format!(
            "--blueprint needs UTF-8 text: {source_name} is not, from byte {}",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Makes the rename into `dir` durable: without it, a power loss may bring the old DEST back
/// after the job said the file landed. A file system that cannot sync a directory at all
/// (EINVAL) leaves nothing more to do.
fn sync_dir(dir: &Path) -> Result<(), LandError> {
    use std::os::unix::fs::OpenOptionsExt;
    let synced = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY)
        .open(dir)
        .and_then(|d| d.sync_all());
    match synced {
        Err(e) if e.raw_os_error() != Some(nix::libc::EINVAL) => {
            Err(LandError::NotDurable(format!(
                "the file was renamed into place, but its directory {} could not be synced \
                 ({e}): a power loss may bring back what was there before",
                dir.display()
            )))
        }
        _ => Ok(()),
    }
}

pub(super) async fn workdir(
    path: &str,
    owner: Option<&Owner>,
    mode: Option<u32>,
    ctx: &Context<'_>,
) -> Finished {
    let path = match render_path(path, &ctx.args()) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let owner = owner.cloned();
    off_thread("WORKDIR", move || {
        blocking_step("workdir", Path::new(&path));
        make_dir(&path, owner.as_ref(), mode)
    })
    .await
    .unwrap_or_else(|e| Finished::fail(e, ""))
}

/// WORKDIR's work (on a blocking thread): the directory `path`, made if need be, with its
/// owner and mode.
fn make_dir(path: &str, owner: Option<&Owner>, mode: Option<u32>) -> Finished {
    // A user this node lacks fails the job before the directory is made.
    let access = match owner.map(resolve_owner).transpose() {
        Ok(owner) => Access { owner, mode },
        Err(e) => {
            return Finished::fail(e, format!("Failed to set ownership of {path}: not created"));
        }
    };
    let existed = Path::new(path).is_dir();
    if let Err(e) = std::fs::create_dir_all(path) {
        // The path, or a directory on the way, is something else: say which.
        let blocking = Path::new(path)
            .ancestors()
            .find(|p| p.symlink_metadata().is_ok_and(|m| !m.is_dir()) && !p.is_dir());
        if let Some(file) = blocking {
            return Finished::fail(
                format!(
                    "cannot create {path}: {} is a file, not a directory",
                    file.display()
                ),
                "",
            );
        }
        return Finished::fail(format!("cannot create {path}: {e}"), "");
    }
    if let Err(e) = access.apply(Path::new(path), true) {
        // One this job made goes again rather than stay with the wrong owner or mode.
        if !existed {
            let _ = std::fs::remove_dir(path);
        }
        return Finished::fail(e, format!("Failed to set ownership or mode of {path}"));
    }
    Finished::ok(format!("Directory {path} OK"), "")
}

/// A user and a group as this node knows them (either may be left as it is).
type Ids = (Option<nix::unistd::Uid>, Option<nix::unistd::Gid>);

/// The owner (resolved on this node) and mode a file or directory is to have.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Access {
    owner: Option<Ids>,
    mode: Option<u32>,
}

impl Access {
    /// Applies the owner, then the mode (a chown clears set-id bits a mode may ask for), to
    /// what `path` names when it is opened, once: a symbolic link swapped in meanwhile does
    /// not turn the change onto another file. `follow`: whether the last part of the path may
    /// be a link (a directory linked elsewhere, as `/var/www` often is); a file is never
    /// changed through one.
    fn apply(&self, path: &Path, follow: bool) -> Result<(), String> {
        use std::os::{fd::AsFd, unix::fs::OpenOptionsExt};
        if self.owner.is_none() && self.mode.is_none() {
            return Ok(());
        }
        let mut flags = nix::fcntl::OFlag::O_NONBLOCK;
        if !follow {
            flags |= nix::fcntl::OFlag::O_NOFOLLOW;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits())
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        if let Some((uid, gid)) = self.owner {
            nix::unistd::fchown(file.as_fd(), uid, gid)
                .map_err(|e| format!("chown {}: {e}", path.display()))?;
        }
        if let Some(mode) = self.mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("cannot chmod {} to {mode:o}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Like [`Access::apply`], through the open file just created owner-only: without
    /// `--chmod` it gets the mode a new file gets here (0666 less the daemon's umask).
    fn apply_to_new(&self, file: &std::fs::File) -> Result<(), String> {
        use std::os::fd::AsFd;
        if let Some((uid, gid)) = self.owner {
            nix::unistd::fchown(file.as_fd(), uid, gid).map_err(|e| format!("chown: {e}"))?;
        }
        let mode = self.mode.unwrap_or(0o666 & !umask());
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot chmod to {mode:o}: {e}"))
    }
}

/// This process's umask, read without changing it (`Umask:` in /proc/self/status); 022 when it
/// cannot be read.
pub(super) fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// A user and group given by name or number, as this node knows them.
pub(super) fn resolve_owner(owner: &Owner) -> Result<Ids, String> {
    let uid = owner
        .user
        .as_deref()
        .map(|u| match u.parse::<u32>() {
            Ok(n) => Ok(nix::unistd::Uid::from_raw(n)),
            Err(_) => match nix::unistd::User::from_name(u) {
                Ok(Some(user)) => Ok(user.uid),
                _ => Err(format!("no user '{u}' on this node")),
            },
        })
        .transpose()?;
    let gid = owner
        .group
        .as_deref()
        .map(|g| match g.parse::<u32>() {
            Ok(n) => Ok(nix::unistd::Gid::from_raw(n)),
            Err(_) => match nix::unistd::Group::from_name(g) {
                Ok(Some(group)) => Ok(group.gid),
                _ => Err(format!("no group '{g}' on this node")),
            },
        })
        .transpose()?;
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    /// A process that ended and was not reaped (a zombie) is not running: a temporary file
    /// it left is removed at once, as one of a process gone.
    #[test]
    fn a_zombie_writer_is_not_running() {
        assert!(super::running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while super::running(pid) {
            assert!(std::time::Instant::now() < deadline, "{pid} still runs");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Not reaped until here: it was a zombie all along.
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        child.wait().unwrap();
        assert!(!super::running(pid));
    }

    use super::*;

    /// WORKDIR where a file stands (the path itself, or a directory on the way) names it.
    #[test]
    fn a_workdir_blocked_by_a_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        for path in [file.clone(), file.join("below")] {
            let f = make_dir(path.to_str().unwrap(), None, None);
            assert!(!f.success);
            assert_eq!(
                f.stderr,
                format!(
                    "cannot create {}: {} is a file, not a directory",
                    path.display(),
                    file.display()
                )
            );
        }
        let made = dir.path().join("a/b");
        assert!(make_dir(made.to_str().unwrap(), None, None).success);
        assert!(made.is_dir());
    }

    /// A file's owner and mode are never changed through a link in its place (a local user
    /// could point one at /etc/shadow between the check and the change); a directory's may
    /// be, as WORKDIR on `/var/www -> /srv/www` needs.
    #[test]
    fn modes_go_through_a_link_only_for_directories() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("dest");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let open_to_all = Access {
            owner: None,
            mode: Some(0o644),
        };
        let e = open_to_all.apply(&link, false).unwrap_err();
        assert!(
            e.starts_with(&format!("cannot open {}", link.display())),
            "{e}"
        );
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let real = dir.path().join("srv");
        std::fs::create_dir(&real).unwrap();
        let www = dir.path().join("www");
        std::os::unix::fs::symlink(&real, &www).unwrap();
        open_to_all.apply(&www, true).unwrap();
        let mode = std::fs::metadata(&real).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    /// The pid of a process that has ended.
    fn gone_pid() -> u32 {
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        pid
    }

    /// Makes `path` look unwritten for two hours.
    fn age_two_hours(path: &Path) {
        let then = SystemTime::now() - Duration::from_secs(2 * 3600);
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(then))
            .unwrap();
    }

    /// The name of landing `n` of `lander` for a DEST named `f`.
    fn landing_name(lander: Lander, n: u64) -> String {
        landing_file(Path::new("/d/f"), &lander, n)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Lands `content` at `dest` as a job does, from a blob in `store`.
    fn land_content(
        store: &Path,
        dest: &Path,
        content: &[u8],
        args: Option<Vars>,
    ) -> Result<Fingerprint, LandError> {
        let blob = store.join("blob");
        std::fs::write(&blob, content).unwrap();
        let hash = Fingerprint(*blake3::hash(content).as_bytes());
        let given_up = AtomicBool::new(false);
        land(&blob, dest, hash, args, Access::default(), "f", &given_up)
    }

    /// Which temporary files beside DEST are leftovers: this host's (same boot, same PID
    /// namespace) once their writer is gone; anyone else's (another machine or container
    /// sharing the directory, a release before that did not name its host) only once
    /// unwritten for an hour; this process's never. Another DEST's are never touched.
    #[test]
    fn leftovers_are_this_hosts_whose_writer_is_gone_or_any_unwritten_for_an_hour() {
        let dir = tempfile::tempdir().unwrap();
        let gone = gone_pid();
        let me = this_lander();
        let here = |pid, start| Lander {
            pid,
            host: me.host,
            start,
        };
        let elsewhere = |pid| Lander {
            pid,
            host: !me.host,
            start: 7,
        };
        // (name, aged two hours, removed)
        let files = [
            (landing_name(here(gone, 7), 0), false, true),
            (landing_name(here(me.pid, !me.start), 0), false, true),
            (landing_name(here(1, 7), 0), false, false),
            (landing_name(here(1, 7), 1), true, true),
            (landing_name(me, 0), true, false),
            (landing_name(elsewhere(gone), 0), false, false),
            (landing_name(elsewhere(me.pid), 0), false, false),
            (landing_name(elsewhere(1), 0), false, false),
            (landing_name(elsewhere(1), 1), true, true),
            (format!(".f.{gone}-7.dm-tmp"), false, false),
            (format!(".f.{gone}.dm-tmp"), false, false),
            (format!(".f.{gone}-8.dm-tmp"), true, true),
            // Another DEST's, `f.1` or `g`, or no landing's name: never taken for one of `f`.
            (
                format!(".f.1.{}", landing_name(here(gone, 7), 0)),
                true,
                false,
            ),
            (format!(".f.1.{gone}-2.dm-tmp"), true, false),
            (
                landing_name(here(gone, 7), 0).replacen(".f.", ".g.", 1),
                true,
                false,
            ),
            (format!(".f.{gone}-.dm-tmp"), true, false),
            (
                format!(".f.{gone}-{:016x}-zz-0.dm-tmp", me.host),
                true,
                false,
            ),
            (".f.x.dm-tmp".to_string(), true, false),
            ("f".to_string(), true, false),
        ];
        for (name, aged, _) in &files {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x").unwrap();
            if *aged {
                age_two_hours(&path);
            }
        }
        let mut removed = remove_stale_landings(&dir.path().join("f"));
        removed.sort();
        let mut leftovers: Vec<PathBuf> = files
            .iter()
            .filter(|(_, _, removed)| *removed)
            .map(|(name, _, _)| dir.path().join(name))
            .collect();
        leftovers.sort();
        assert_eq!(removed, leftovers);
        for (name, _, removed) in &files {
            assert_eq!(!dir.path().join(name).exists(), *removed, "{name}");
        }
    }

    /// A landing on a directory shared with other hosts (NFS, containers with PID
    /// namespaces of their own) leaves their temporary files alone while they are written,
    /// whatever their pids are here.
    #[test]
    fn a_landing_leaves_the_temporary_files_of_other_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let gone = gone_pid();
        let elsewhere = |pid| Lander {
            pid,
            host: !this_lander().host,
            start: 7,
        };
        let others = [
            format!(".f.{gone}-7.dm-tmp"),
            format!(".f.{gone}.dm-tmp"),
            landing_name(elsewhere(gone), 0),
            landing_name(elsewhere(1), 0),
        ];
        for name in &others {
            std::fs::write(dest.join(name), b"another host's copy").unwrap();
        }
        land_content(dir.path(), &dest.join("f"), b"content", None).unwrap();
        assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"content");
        for name in &others {
            assert!(dest.join(name).exists(), "{name} was removed");
        }
    }

    /// Each landing has a temporary file of its own: two jobs landing one DEST (one of them
    /// given up at its timeout), or two daemons with the same pid (PID 1 in two containers),
    /// never write through one name; and no landing takes this process's own for leftovers.
    #[test]
    fn each_landing_has_its_own_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let landings = AtomicU64::new(0);
        let (_a, a) = create_landing_file(&dest, &landings).unwrap();
        let (_b, b) = create_landing_file(&dest, &landings).unwrap();
        assert_ne!(a, b);
        let me = this_lander();
        let twin = Lander {
            start: !me.start,
            ..me
        };
        assert_ne!(landing_name(me, 0), landing_name(twin, 0));
        assert_eq!(remove_stale_landings(&dest), Vec::<PathBuf>::new());
        assert!(a.exists() && b.exists());
    }

    /// What already has the name a landing would take (a link planted there by whoever may
    /// write in DEST's directory, another landing's file) is neither written through nor
    /// removed: the landing takes the next name.
    #[test]
    fn a_landing_never_reuses_a_name_already_taken() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"not to be touched").unwrap();
        let me = this_lander();
        let taken = dir.path().join(landing_name(me, 0));
        std::fs::write(&taken, b"another landing's copy").unwrap();
        let link = dir.path().join(landing_name(me, 1));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let landings = AtomicU64::new(0);
        let (mut out, tmp) = create_landing_file(&dest, &landings).unwrap();
        assert_eq!(tmp, dir.path().join(landing_name(me, 2)));
        std::io::Write::write_all(&mut out, b"the new copy").unwrap();
        assert_eq!(std::fs::read(&taken).unwrap(), b"another landing's copy");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read(&victim).unwrap(), b"not to be touched");
        let mode = std::fs::metadata(&tmp).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// A blueprint is read and rendered whole in memory: one over 16 MiB is refused, saying
    /// so, and nothing lands.
    /// DEST under a regular file: that file is named, not a directory said to be missing.
    #[test]
    fn a_dest_under_a_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("small.txt");
        std::fs::write(&file, b"x").unwrap();
        let said = not_a_directory(&file.join("a/b"));
        assert!(
            said.ends_with(&format!("{} is a file, not a directory", file.display())),
            "{said}"
        );
        let missing = dir.path().join("missing/x");
        assert!(not_a_directory(&missing).contains("does not exist"));
    }

    /// A blueprint that is not UTF-8 says so, naming the file and where.
    #[test]
    fn a_blueprint_not_utf8_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = land_content(
            dir.path(),
            &dir.path().join("f"),
            b"ok\xff",
            Some(Vars::default()),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--blueprint needs UTF-8 text: "), "{e}");
        assert!(e.ends_with("is not, from byte 2"), "{e}");
    }

    #[test]
    fn a_blueprint_over_16_mib_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let big = vec![b'a'; 16 * 1024 * 1024 + 1];
        let e = land_content(dir.path(), &dest.join("f"), &big, Some(Vars::default()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--blueprint renders files of up to 16 MiB"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        // At the limit it renders.
        let at_limit = vec![b'a'; 16 * 1024 * 1024];
        land_content(
            dir.path(),
            &dest.join("f"),
            &at_limit,
            Some(Vars::default()),
        )
        .unwrap();
        assert_eq!(std::fs::metadata(dest.join("f")).unwrap().len(), 16 << 20);
    }

    /// Hands out one file as whatever a job asks for.
    struct Holder(PathBuf);

    impl super::super::Coordinator for Holder {
        fn query(
            &self,
            _: &str,
            _: &str,
            _: serde_json::Value,
            _: bool,
        ) -> super::super::BoxFuture<'static, Result<Option<serde_json::Value>, String>> {
            Box::pin(async { Err("no QUERY here".to_string()) })
        }

        fn job_wait(
            &self,
            _: &str,
            _: &str,
            _: &[String],
        ) -> super::super::BoxFuture<
            'static,
            Result<tokio::sync::mpsc::Receiver<(String, String)>, String>,
        > {
            Box::pin(async { Err("no JOB_WAIT here".to_string()) })
        }

        fn fetch_blob(
            &self,
            _: &str,
            _: &FileRef,
        ) -> super::super::BoxFuture<'static, Result<PathBuf, String>> {
            let path = self.0.clone();
            Box::pin(async move { Ok(path) })
        }

        fn discard_blob(&self, _: Fingerprint) {}
    }

    /// A job for `holder`'s file, with no lock and a minute to run.
    fn context<'a>(cache: &'a Cache, holder: &'a Holder) -> Context<'a> {
        Context {
            job_id: "job",
            run_id: "run",
            cache,
            sink: None,
            deadline: tokio::time::Instant::now() + Duration::from_secs(60),
            coordinator: Some(holder),
            processes: None,
            queue: None,
            landing_lock: None,
        }
    }

    /// An ADD of the file `blob` to `dest`, with no --chown or --chmod, as the CLI resolves it.
    fn add_of(blob: &Path, dest: &Path) -> Transfer {
        Transfer {
            src: blob.display().to_string(),
            dest: dest.display().to_string(),
            owner: None,
            mode: None,
            blueprint: false,
            file: Some(FileRef::read(blob).unwrap()),
        }
    }

    /// The temporary files beside DEST in `dir`.
    fn landings_in(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".dm-tmp"))
            .collect()
    }

    /// An ADD given up while its file lands (the executor drops it at its timeout) keeps the
    /// landing lock until the landing ends, so that no other landing goes on beside it; and
    /// that landing does not put the file in place, and leaves nothing beside DEST.
    #[tokio::test]
    async fn a_landing_given_up_holds_its_lock_to_its_end_and_lands_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, b"the content\n").unwrap();
        let dest_dir = dir.path().join("dest");
        std::fs::create_dir(&dest_dir).unwrap();
        let dest = dest_dir.join("f");
        super::super::tests::slow_step("land", &dest, std::time::Duration::from_secs(2));
        let t = add_of(&blob, &dest);
        let cache = Cache::in_memory(crate::cache::DEFAULT_TTL);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let holder = Holder(blob.clone());
        let ctx = Context {
            landing_lock: Some(&lock),
            ..context(&cache, &holder)
        };
        // Given up once its temporary file is there.
        let mut landing = Box::pin(transfer(&t, &ctx));
        let started = std::time::Instant::now();
        loop {
            tokio::select! {
                f = &mut landing => panic!("the landing ended: {f:?}"),
                _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {
                    if !landings_in(&dest_dir).is_empty() {
                        break;
                    }
                    assert!(started.elapsed().as_secs() < 20, "no landing began");
                }
            }
        }
        drop(landing);
        assert!(
            lock.try_lock().is_err(),
            "the landing lock went with the job while its landing went on"
        );
        let released = tokio::time::timeout(std::time::Duration::from_secs(20), lock.lock())
            .await
            .expect("the landing never ended");
        drop(released);
        assert!(
            std::fs::symlink_metadata(&dest).is_err(),
            "the given-up landing put the file in place"
        );
        assert_eq!(landings_in(&dest_dir), Vec::<String>::new());
    }

    /// A DEST of another size than the file is replaced without being read (here 1 TiB,
    /// sparse, which would take minutes to hash); one with the content is left as it is.
    #[tokio::test]
    async fn a_dest_of_another_size_is_replaced_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, b"the content\n").unwrap();
        let dest = dir.path().join("f");
        std::fs::File::create(&dest)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let t = add_of(&blob, &dest);
        let cache = Cache::in_memory(crate::cache::DEFAULT_TTL);
        let holder = Holder(blob.clone());
        let ctx = context(&cache, &holder);
        let copied = tokio::time::timeout(Duration::from_secs(20), transfer(&t, &ctx))
            .await
            .expect("DEST was read through");
        assert!(copied.success, "{copied:?}");
        assert!(copied.info.starts_with("copied 12 bytes"), "{copied:?}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"the content\n");
        let again = transfer(&t, &ctx).await;
        assert!(again.success, "{again:?}");
        assert!(again.info.ends_with("nothing to transfer"), "{again:?}");
    }
}
