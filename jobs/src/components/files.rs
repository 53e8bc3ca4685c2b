//! ADD/COPY and WORKDIR: a file fetched by hash and landed at DEST (temporary file, verify,
//! fsync, owner and mode, rename), and directories made with their owner and mode.
//!
//! What touches the file system or asks the name service (a user or group may come from
//! LDAP) runs on tokio's blocking threads ([`super::off_thread`]): every job of the node
//! shares the executor's one thread.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tracing::warn;

use super::{Context, Finished, blocking_step, off_thread, render_path};
use crate::{
    cache::Cache,
    spec::{Component, FileRef, Fingerprint, Owner, Transfer},
    template::{self, Vars},
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
        tokio::task::spawn_blocking(move || {
            let link = std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink());
            !link && file_hash(&p).is_ok_and(|h| h == expected.0)
        })
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
                    "the job's timeout ended before the file arrived: the nodes holding it were \
                     out of reach, slow, or did not have it yet (this node's log says which)",
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
                return Finished::fail(
                    e.to_string(),
                    format!("{} was left as it was", path.display()),
                );
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

/// What ADD/COPY checks before it fetches the file (on a blocking thread): that `dir`, DEST's
/// directory, exists, that nothing at `path` is a directory or a special file, and who will
/// own the file (resolved on this node). The failure to report otherwise.
fn check_dest(path: &Path, dir: &Path, owner: Option<&Owner>) -> Result<Option<Ids>, Finished> {
    if !dir.is_dir() {
        return Err(Finished::fail(
            format!(
                "destination directory {} does not exist (create it first, e.g. with WORKDIR)",
                dir.display()
            ),
            "",
        ));
    }
    // A directory where the file would land (DEST without its trailing /): said before the
    // file is fetched, with the way to put it inside. (A link there is replaced, as below.)
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
    Other(String),
}

impl std::fmt::Display for LandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LandError::NotTheFile(e) | LandError::Other(e) => f.write_str(e),
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

/// Landings this process began, to name each one's temporary file.
static LANDINGS: AtomicU64 = AtomicU64::new(0);

/// A temporary file beside `path` for one landing of it by this process,
/// `.NAME.PID-N.dm-tmp`: no other landing uses it (two jobs landing one DEST, one of them
/// given up at its timeout, never write through one name).
pub(super) fn landing_file(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = LANDINGS.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}-{n}.dm-tmp", std::process::id()))
}

/// The process that wrote a temporary file, from what its name holds between DEST's name
/// and `.dm-tmp`: `PID-N`, or `PID` (as releases before named them).
fn landing_pid(middle: &str) -> Option<u32> {
    let (pid, n) = middle.split_once('-').unwrap_or((middle, "0"));
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the temporary files beside `path` that a daemon no longer running left while it
/// landed the file there (it was killed mid-copy); returns them. Those of a live process
/// (another daemon landing the same file now) stay; with `own_too`, this process's are taken
/// for a daemon's before it (in a container the daemon may get the same pid each start).
pub fn remove_stale_landings(path: &Path, own_too: bool) -> Vec<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".dm-tmp"))
            .and_then(landing_pid)
        else {
            continue;
        };
        let gone = !Path::new(&format!("/proc/{pid}")).exists();
        if (gone || (own_too && pid == std::process::id()))
            && std::fs::remove_file(entry.path()).is_ok()
        {
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
            .map(|path| remove_stale_landings(&path, true))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Writes `blob` (rendered with `args` for a blueprint) to a temporary file beside `path`,
/// checks it, makes it durable and renames it into place. Nothing is left at `path` or beside
/// it when anything fails, or when `given_up` turns true (its job was given up) before the
/// rename.
pub(super) fn land(
    blob: &Path,
    path: &Path,
    expected: Fingerprint,
    args: Option<Vars>,
    access: Access,
    source_name: &str,
    given_up: &AtomicBool,
) -> Result<Fingerprint, LandError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    // What an earlier daemon killed mid-copy left beside it goes first.
    for stale in remove_stale_landings(path, false) {
        warn!(path = %stale.display(), "removed a partial copy an interrupted job left");
    }
    let tmp = landing_file(path);
    let result = (|| -> Result<Fingerprint, LandError> {
        // Readable by its owner only while it fills: a file meant for 0600 is never
        // readable by others, not even for a moment. Made new, never opened through what
        // stands at its name (a link planted there by whoever may write in DEST's directory);
        // what stands there goes first.
        let _ = std::fs::remove_file(&tmp);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let landed = match &args {
            Some(args) => {
                let text = std::fs::read(blob)
                    .map_err(|e| format!("cannot read the transferred file: {e}"))?;
                let found = Fingerprint(*blake3::hash(&text).as_bytes());
                if found != expected {
                    return Err(LandError::NotTheFile(format!(
                        "integrity failure: expected blake3 {expected}, found {found}"
                    )));
                }
                let text = String::from_utf8(text)
                    .map_err(|_| "--blueprint needs a text file".to_string())?;
                let rendered = template::render_named(source_name, &text, args)?;
                out.write_all(rendered.as_bytes())
                    .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
                Fingerprint(*blake3::hash(rendered.as_bytes()).as_bytes())
            }
            None => {
                let mut src = std::fs::File::open(blob)
                    .map_err(|e| format!("cannot read the transferred file: {e}"))?;
                let mut hasher = blake3::Hasher::new();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    if given_up.load(Ordering::SeqCst) {
                        return Err(LandError::GivenUp);
                    }
                    let n = std::io::Read::read(&mut src, &mut buf)
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
                found
            }
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
        std::fs::rename(&tmp, path)
            .map_err(|e| format!("cannot move the file into {}: {e}", path.display()))?;
        Ok(landed)
    })();
    if let Err(e) = &result {
        let _ = std::fs::remove_file(&tmp);
        if let LandError::GivenUp = e {
            warn!(path = %path.display(), "{e}");
        }
    }
    result
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
    use super::*;

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

    /// Only the temporary files of DEST whose writer is no longer running go, named as
    /// landings name them now (`PID-N`) or did before (`PID`).
    #[test]
    fn stale_landings_of_gone_processes_are_removed_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        let ours = std::process::id();
        let names = [
            format!(".f.{gone_pid}.dm-tmp"),
            format!(".f.{gone_pid}-7.dm-tmp"),
            format!(".f.{ours}.dm-tmp"),
            format!(".f.{ours}-3.dm-tmp"),
            format!(".g.{gone_pid}.dm-tmp"),
            // Another DEST's, `f.1`: never taken for one of `f`.
            format!(".f.1.{gone_pid}.dm-tmp"),
            format!(".f.1.{gone_pid}-2.dm-tmp"),
            format!(".f.{gone_pid}-.dm-tmp"),
            ".f.x.dm-tmp".to_string(),
            "f".to_string(),
        ];
        for name in &names {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let sorted = |mut v: Vec<PathBuf>| {
            v.sort();
            v
        };
        let removed = remove_stale_landings(&dir.path().join("f"), false);
        assert_eq!(
            sorted(removed),
            sorted(vec![dir.path().join(&names[0]), dir.path().join(&names[1])])
        );
        for name in &names[2..] {
            assert!(dir.path().join(name).exists(), "{name} was removed");
        }
        // At a restart, this process's own are a predecessor's (same pid in a container).
        let removed = remove_stale_landings(&dir.path().join("f"), true);
        assert_eq!(
            sorted(removed),
            sorted(vec![dir.path().join(&names[2]), dir.path().join(&names[3])])
        );
    }

    /// Each landing has a temporary file of its own: two jobs landing one DEST (one of them
    /// given up at its timeout) never write through one name. A later restart still finds
    /// them as this process's.
    #[test]
    fn each_landing_has_its_own_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let (a, b) = (landing_file(&dest), landing_file(&dest));
        assert_ne!(a, b);
        for tmp in [&a, &b] {
            std::fs::write(tmp, b"x").unwrap();
        }
        let mut removed = remove_stale_landings(&dest, true);
        removed.sort();
        let mut made = vec![a, b];
        made.sort();
        assert_eq!(removed, made);
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
        let t = Transfer {
            src: blob.display().to_string(),
            dest: dest.display().to_string(),
            owner: None,
            mode: None,
            blueprint: false,
            file: Some(FileRef::read(&blob).unwrap()),
        };
        let cache = Cache::in_memory(crate::cache::DEFAULT_TTL);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let holder = Holder(blob.clone());
        let ctx = Context {
            job_id: "job",
            run_id: "run",
            cache: &cache,
            sink: None,
            deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(60),
            coordinator: Some(&holder),
            processes: None,
            queue: None,
            landing_lock: Some(&lock),
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
}
