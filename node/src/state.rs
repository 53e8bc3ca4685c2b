//! The state directory: what a node keeps between runs.
//!
//! | file          | what                                                             |
//! |---------------|------------------------------------------------------------------|
//! | `identity.key`| the node's ed25519 key (its peer id), created on first run, 0600 |
//! | `mesh.key`    | the mesh's private-network key (`swarm.key` format), 0600        |
//! | `mesh.open`   | present instead of `mesh.key` when the mesh was joined `--open`   |
//! | `join-token`  | the line that joins another machine to this mesh, 0600           |
//! | `known-peers` | member addresses seen last run, to find the mesh again at start  |
//! | `incarnation` | the number of the node's last start (above every earlier one)    |
//! | `daemon.lock` | held while a daemon runs, so two never share one directory       |
//! | `control.sock`| the daemon's control socket                                     |

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use mesh::{Keypair, MeshKey, Multiaddr};
use nix::fcntl::{Flock, FlockArg};

use crate::config::MeshKeyChoice;

/// A problem with the state directory; every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// The mesh the arguments name (a token's key, an open mesh, a peer) is not the one the
    /// state directory belongs to: the operator's input, not the machine's trouble.
    #[error("{path}: {reason}")]
    OtherMesh { path: PathBuf, reason: String },
    #[error(
        "another daemon already runs with state directory {dir}; stop it first or pass a different --state-dir"
    )]
    Locked { dir: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why `--peer` alone cannot join from a state directory that belongs to no mesh yet.
pub const NO_MESH_FOR_PEER: &str = "this node has no mesh key yet, and --peer alone would make \
     a new one that the mesh behind --peer refuses: join with --token (a running node prints it, \
     and keeps it in the join-token file of its state directory), or add --open if that mesh \
     runs without a key";

/// Whether a daemon holds `dir` now (its `daemon.lock`, which a copy of the directory does
/// not hold). Looked at with a shared lock taken and let go at once; a directory without the
/// file, or that cannot be read, is not held.
pub fn held_by_a_daemon(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join("daemon.lock")) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_unlocked_on_drop) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Whether `dir` holds a mesh this node belongs to: a mesh key it ran with (it saved a join
/// token then), or the mark of an open mesh.
pub fn holds_a_mesh(dir: &Path) -> bool {
    (dir.join("mesh.key").exists() && dir.join("join-token").exists())
        || dir.join("mesh.open").exists()
}

/// The files of a state directory any of which says a daemon ran with it or it was made
/// for one (an image may hold all of them but `identity.key`, as README advises).
const STATE_FILES: [&str; 6] = [
    "identity.key",
    "mesh.key",
    "mesh.open",
    "join-token",
    "known-peers",
    "node.redb",
];

/// Whether `dir` holds any file of a state directory.
pub fn has_state_files(dir: &Path) -> bool {
    STATE_FILES.iter().any(|f| dir.join(f).exists())
}

/// The entries of a state directory whose owner is checked at every start: whoever could
/// put one there could take the node's place (its keys, its database) or command it.
const OWNED_ENTRIES: [&str; 11] = [
    "identity.key",
    "mesh.key",
    "mesh.open",
    "join-token",
    "known-peers",
    "incarnation",
    "node.redb",
    "blobs",
    "daemon.lock",
    "running-jobs",
    "running-jobs.alive",
];

/// The room for a Unix socket's path (`sun_path` on Linux), its closing NUL included.
const SOCKET_PATH_MAX: usize = 108;

/// Refuses a control socket path too long for a Unix socket: said before anything is made in
/// the state directory (the bind would fail only after the keys and the database are).
pub fn check_socket_path(socket: &Path) -> Result<(), StateError> {
    let len = socket.as_os_str().len();
    if len < SOCKET_PATH_MAX {
        return Ok(());
    }
    Err(StateError::Invalid {
        path: socket.to_path_buf(),
        reason: format!(
            "the control socket's path is {len} bytes, and a Unix socket's may be {} at most: \
             choose a shorter --state-dir",
            SOCKET_PATH_MAX - 1
        ),
    })
}

/// Whether `name` is one a node makes in its state directory: the entries above, the control
/// socket, the demo's daemon.log, and what a write leaves aside (`mesh.tmp`, `known-peers.tmp`).
fn is_node_entry(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    let stem = name.split('.').next().unwrap_or_default();
    OWNED_ENTRIES
        .iter()
        .chain(&["control.sock", "daemon.log"])
        .any(|own| own.split('.').next() == Some(stem))
}

/// The files that hold a secret: only their owner may read them.
const SECRET_FILES: [&str; 3] = ["identity.key", "mesh.key", "join-token"];

/// Refuses what cannot be a node's own state directory (not a directory, another user's, a
/// shared one like /tmp, or one holding files of another user), takes write access to its own
/// away from others and read access to its keys: whoever can replace the keys or the control
/// socket in it can take the node's place or command it, and whoever reads the mesh key can
/// run anything on every node.
fn check_ownership(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |path: &Path, reason: String| {
        Err(StateError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    };
    let meta = fs::metadata(dir).map_err(io_err(dir))?;
    let me = nix::unistd::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if !meta.is_dir() {
        return refuse(dir, "it is not a directory".into());
    }
    // Root may replace anything anyway: a directory root hands to the daemon's user (a
    // shared volume) is not refused for being root's.
    if meta.uid() != me && meta.uid() != 0 {
        return refuse(
            dir,
            format!(
                "it belongs to user id {} and this daemon runs as {me}, so that user could \
                 replace its keys: chown it to the daemon's user, or use another --state-dir",
                meta.uid()
            ),
        );
    }
    if mode & 0o1000 != 0 && mode & 0o022 != 0 {
        // Sticky and writable by others, as /tmp is (and a fresh tmpfs, meant for the node):
        // one holding anything but the node's own files is a directory others share, and
        // whatever they put in it (a key, a link) would be taken as the node's.
        let entries = fs::read_dir(dir).map_err(io_err(dir))?;
        if let Some(other) = entries
            .flatten()
            .map(|e| e.file_name())
            .find(|name| !is_node_entry(name))
        {
            return refuse(
                dir,
                format!(
                    "it is a shared directory (mode {mode:o}, like /tmp) and holds {}, which \
                     is not the node's: files others put there would become this node's keys; \
                     give the node a directory of its own (one that does not exist yet is \
                     made, mode 700)",
                    other.to_string_lossy()
                ),
            );
        }
    }
    if mode & 0o022 != 0 {
        // Its own directory: tightened rather than refused (a umask of 002 made it so, or it
        // is a fresh tmpfs); the files in it are checked below. The sticky bit means nothing
        // once others cannot write in it (setgid, for the group of new files, stays).
        let now = mode & !0o1022;
        match fs::set_permissions(dir, fs::Permissions::from_mode(now)) {
            Ok(()) => tracing::warn!(
                dir = %dir.display(),
                "the state directory's mode was {mode:o}, which let others write in it and \
                 replace its keys: it is {now:o} now"
            ),
            // Not this daemon's to change (root's shared volume): said, not refused.
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                "the state directory's mode {mode:o} lets others write in it and replace its \
                 keys, and it cannot be changed here ({e}): chmod go-w it"
            ),
        }
    }
    for name in OWNED_ENTRIES {
        let path = dir.join(name);
        let Ok(entry) = fs::symlink_metadata(&path) else {
            continue;
        };
        // A link is its own maker's, and what it leads to is its owner's: both count.
        let target = if entry.file_type().is_symlink() {
            fs::metadata(&path).ok()
        } else {
            None
        };
        for owner in [Some(entry.uid()), target.as_ref().map(MetadataExt::uid)]
            .into_iter()
            .flatten()
        {
            if owner != me && owner != 0 {
                return refuse(
                    &path,
                    format!(
                        "it belongs to user id {owner}, not to this daemon's ({me}): whoever \
                         made it could take this node's place; remove it, or chown it if it is \
                         the node's own"
                    ),
                );
            }
        }
        let file_mode = entry.mode() & 0o777;
        if SECRET_FILES.contains(&name) && entry.is_file() && file_mode & 0o077 != 0 {
            match fs::set_permissions(&path, fs::Permissions::from_mode(0o600)) {
                Ok(()) => tracing::warn!(
                    file = %path.display(),
                    "the mode of {name} was {file_mode:o}, which let others read a secret: it \
                     is 600 now"
                ),
                Err(e) => tracing::warn!(
                    file = %path.display(),
                    "the mode {file_mode:o} of {name} lets others read a secret, and it cannot \
                     be changed here ({e}): chmod 600 it"
                ),
            }
        }
    }
    Ok(())
}

/// An open state directory, locked for one daemon.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl StateDir {
    /// Creates the directory if needed (0700) and takes its lock.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            // Keys live here: only the owner may look inside.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        }
        check_ownership(dir)?;
        let lock_path = dir.join("daemon.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                StateError::Locked {
                    dir: dir.to_path_buf(),
                }
            } else {
                StateError::Io {
                    path: lock_path.clone(),
                    source: errno.into(),
                }
            }
        })?;
        Ok(Self {
            // Absolute, as `status` shows it: the daemon may have been started elsewhere.
            dir: dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The node's identity: loaded, or created and saved on first run.
    pub fn identity(&self) -> Result<Keypair, StateError> {
        let path = self.dir.join("identity.key");
        match read_if_exists(&path)? {
            Some(bytes) if bytes.is_empty() => Err(StateError::Invalid {
                path: path.clone(),
                reason: "the file is empty (cut short when it was written?); restore it from a \
                         backup, or move it away to give this node a new identity"
                    .into(),
            }),
            // libp2p's reason names key types this build leaves out, which misleads more than
            // it helps: the bytes are not an identity key, whatever they are.
            Some(bytes) => {
                Keypair::from_protobuf_encoding(&bytes).map_err(|_| StateError::Invalid {
                    path: path.clone(),
                    reason: format!(
                        "not a valid identity key ({} bytes that do not decode as an ed25519 \
                         key); move it away to create a new identity",
                        bytes.len()
                    ),
                })
            }
            None => {
                let key = Keypair::generate_ed25519();
                let bytes = key
                    .to_protobuf_encoding()
                    .map_err(|e| StateError::Invalid {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                write_private(&path, &bytes)?;
                Ok(key)
            }
        }
    }

    /// The key of the mesh this directory ran in, from its join token, when `mesh.key` is
    /// gone (removed by hand, or lost): written again, rather than a new mesh the old one
    /// refuses.
    fn key_from_join_token(&self) -> Result<MeshKey, StateError> {
        let key_path = self.dir.join("mesh.key");
        let gone = |why: String| StateError::OtherMesh {
            path: self.dir.clone(),
            reason: format!(
                "mesh.key is gone, though join-token shows this node ran in a mesh, and {why}: \
                 put mesh.key back, join with --token of the mesh, or use a new --state-dir"
            ),
        };
        let text = read_join_token(&self.dir).map_err(|e| gone(format!("{e}")))?;
        let token = mesh::JoinToken::decode(&text)
            .map_err(|e| gone(format!("the token cannot be read ({e})")))?;
        let Some(key) = token.mesh_key else {
            return Err(gone(
                "the token is of an open mesh, yet mesh.open is gone too".into(),
            ));
        };
        write_private(&key_path, key.to_key_file().as_bytes())?;
        tracing::warn!(
            file = %key_path.display(),
            "mesh.key was gone: made again from the join token this node saved"
        );
        Ok(key)
    }

    /// The mesh key this node uses, reconciling what it was asked for with what it stored.
    /// Returns the key (`None` for an open mesh) and whether it was created now.
    pub fn mesh_key(&self, choice: &MeshKeyChoice) -> Result<(Option<MeshKey>, bool), StateError> {
        let key_path = self.dir.join("mesh.key");
        let open_path = self.dir.join("mesh.open");
        let stored_key = match read_if_exists(&key_path)? {
            Some(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| StateError::Invalid {
                    path: key_path.clone(),
                    reason: "not a text key file".into(),
                })?;
                Some(
                    MeshKey::from_key_file(&text).map_err(|e| StateError::Invalid {
                        path: key_path.clone(),
                        reason: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        let stored_open = open_path.exists();
        // A key written by a start that never came up (its listen address was taken, say)
        // binds the directory to no mesh yet: only a node that ran saved a join token.
        let ever_up = self.dir.join("join-token").exists();
        let mismatch = |reason: &str| StateError::OtherMesh {
            path: self.dir.clone(),
            reason: reason.into(),
        };
        match choice {
            MeshKeyChoice::Key(_) if stored_open && ever_up => Err(mismatch(
                "this state directory belongs to an open mesh (mesh.open), so it cannot join a mesh with a key; \
                 use a new --state-dir",
            )),
            MeshKeyChoice::Key(key) => match stored_key {
                Some(stored) if stored != *key && ever_up => Err(mismatch(
                    "this state directory belongs to another mesh (its mesh.key differs from the token's key); \
                     use the token of that mesh, or a new --state-dir",
                )),
                Some(stored) if stored == *key => Ok((Some(*key), false)),
                _ => {
                    write_private(&key_path, key.to_key_file().as_bytes())?;
                    let _ = fs::remove_file(&open_path);
                    Ok((Some(*key), false))
                }
            },
            MeshKeyChoice::Open => {
                if stored_key.is_some() && ever_up {
                    return Err(mismatch(
                        "this state directory belongs to a mesh with a key (mesh.key), so it cannot join an open mesh; \
                         use a new --state-dir",
                    ));
                }
                if stored_key.is_some() {
                    fs::remove_file(&key_path).map_err(io_err(&key_path))?;
                }
                if !stored_open {
                    write_private(&open_path, b"this node joined an open mesh (no mesh key)\n")?;
                }
                Ok((None, false))
            }
            // A key this node made itself and never ran with names no mesh yet.
            MeshKeyChoice::FromState => match (stored_key, stored_open) {
                (Some(k), _) if ever_up => Ok((Some(k), false)),
                (None, true) => Ok((None, false)),
                (None, false) if ever_up => Ok((Some(self.key_from_join_token()?), false)),
                _ => Err(mismatch(NO_MESH_FOR_PEER)),
            },
            MeshKeyChoice::FromStateOrNew => match (stored_key, stored_open) {
                (Some(k), _) => Ok((Some(k), false)),
                (None, true) => Ok((None, false)),
                // It ran in a mesh: a new one would cut it off from it, and the token, the
                // last copy of the key here, would be overwritten.
                (None, false) if ever_up => Ok((Some(self.key_from_join_token()?), false)),
                (None, false) => {
                    let key = MeshKey::generate();
                    write_private(&key_path, key.to_key_file().as_bytes())?;
                    Ok((Some(key), true))
                }
            },
        }
    }

    /// Saves the join token for operators to copy.
    pub fn write_join_token(&self, token: &str) -> Result<PathBuf, StateError> {
        let path = self.dir.join("join-token");
        write_private(&path, format!("{token}\n").as_bytes())?;
        Ok(path)
    }

    /// The number of this start of the node, above every earlier start's: the wall clock in
    /// milliseconds, or above the last start's if the clock is behind it (stepped back
    /// since), plus a random part below a second, so two copies of one state directory
    /// started from the same file do not take the same number (peers would take them for one
    /// daemon instead of warning of twins). Peers take the heartbeats of the highest start of
    /// a node; a restart numbered below the last one would be taken for a stale copy, and the
    /// node would warn of a twin that is its own earlier start. Kept in `incarnation`; should
    /// that not be written, the number is still used.
    pub fn next_incarnation(&self, now_unix_ms: u64) -> u64 {
        let floor = self
            .last_incarnation()
            .map_or(now_unix_ms, |last| now_unix_ms.max(last.saturating_add(1)));
        let next = floor.saturating_add(uuid::Uuid::new_v4().as_u64_pair().0 % 1000);
        self.write_incarnation(next);
        next
    }

    /// This start's number was raised to `n` while it ran (a twin with a later start went):
    /// written down, so the next start is numbered above it.
    pub fn keep_incarnation(&self, n: u64) {
        if self.last_incarnation().is_none_or(|last| n > last) {
            self.write_incarnation(n);
        }
    }

    /// The number written down last (`None`: none, or not a number).
    fn last_incarnation(&self) -> Option<u64> {
        fs::read_to_string(self.dir.join("incarnation"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    }

    fn write_incarnation(&self, n: u64) {
        let path = self.dir.join("incarnation");
        if let Err(e) = write_private(&path, format!("{n}\n").as_bytes()) {
            tracing::warn!("cannot remember this start's number: {e}");
        }
    }

    /// Member addresses remembered from the last run.
    pub fn known_peers(&self) -> Vec<Multiaddr> {
        let path = self.dir.join("known-peers");
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Remembers member addresses for the next run.
    pub fn save_known_peers(&self, addrs: &[Multiaddr]) -> Result<(), StateError> {
        let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
        write_private(&self.dir.join("known-peers"), text.as_bytes())
    }
}

/// Reads the join token a daemon wrote into `state_dir`.
pub fn read_join_token(state_dir: &Path) -> Result<String, StateError> {
    let path = state_dir.join("join-token");
    fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(io_err(&path))
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match File::open(path) {
        Ok(mut f) => {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map_err(io_err(path))?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes a file readable only by its owner, atomically (temporary file, fsync, rename, fsync
/// of the directory), so a crash never leaves half a key behind, nor loses the rename.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)))
        .map_err(io_err(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err(path)));
    if written.is_err() {
        // A full disk: what was written aside goes, and the file there stays as it was.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_directory_of(path)
}

/// Makes the last rename into `path`'s directory durable: until the directory itself is
/// synced, a crash may bring back the old file (or none) after the new one was acknowledged.
fn sync_directory_of(path: &Path) -> Result<(), StateError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match File::open(dir).and_then(|d| d.sync_all()) {
        // A file system that cannot sync a directory (some network and FUSE ones) says so
        // with EINVAL: nothing more can be done there.
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => Ok(()),
        other => other.map_err(io_err(dir)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn identity_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = StateDir::open(dir.path()).unwrap().identity().unwrap();
        let b = StateDir::open(dir.path()).unwrap().identity().unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let mode = fs::metadata(dir.path().join("identity.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Each start is numbered above the last, even when the clock has been stepped back
    /// since (peers would take the restart for a stale copy of the node).
    #[test]
    fn every_start_is_numbered_above_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let within = |n: u64, from: u64| (from..from + 1000).contains(&n);
        let first = state.next_incarnation(5_000);
        assert!(within(first, 5_000), "{first}");
        let second = state.next_incarnation(9_000);
        assert!(within(second, 9_000), "{second}");
        // The clock stepped back.
        let third = state.next_incarnation(1_000);
        assert!(within(third, second + 1), "{third}");
        drop(state);
        let state = StateDir::open(dir.path()).unwrap();
        let fourth = state.next_incarnation(1);
        assert!(within(fourth, third + 1), "{fourth}");
        // Two copies of one directory, started from the same file, as a rule differ.
        let copy = tempfile::tempdir().unwrap();
        let numbers: HashSet<u64> = (0..5)
            .map(|_| {
                fs::copy(
                    dir.path().join("incarnation"),
                    copy.path().join("incarnation"),
                )
                .unwrap();
                StateDir::open(copy.path()).unwrap().next_incarnation(1)
            })
            .collect();
        assert!(numbers.len() > 1, "{numbers:?}");
        // A number raised while the node ran is kept: the next start goes above it.
        state.keep_incarnation(fourth + 10_000);
        state.keep_incarnation(5);
        let fifth = state.next_incarnation(1);
        assert!(within(fifth, fourth + 10_001), "{fifth}");
        // A damaged file numbers by the clock again.
        fs::write(dir.path().join("incarnation"), "garbage").unwrap();
        assert!(within(state.next_incarnation(7), 7));
    }

    /// A directory others may write in loses that; a shared one (sticky, like /tmp), one
    /// that is no directory, one of another user or holding another user's files is refused,
    /// and its mode left as it was; keys others could read are made the owner's alone.
    #[test]
    fn a_state_dir_others_could_write_is_refused() {
        let mode_of = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o775)).unwrap();
        fs::write(dir.path().join("mesh.key"), "key").unwrap();
        fs::set_permissions(
            dir.path().join("mesh.key"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        drop(StateDir::open(dir.path()).unwrap());
        assert_eq!(
            mode_of(dir.path()),
            0o755,
            "others' write access is taken away"
        );
        assert_eq!(mode_of(&dir.path().join("mesh.key")), 0o600);
        // World-writable with the sticky bit, as /tmp is, holding others' files: refused,
        // and left as it is.
        let shared = tempfile::tempdir().unwrap();
        fs::write(shared.path().join("someones.txt"), "").unwrap();
        fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let e = StateDir::open(shared.path()).unwrap_err().to_string();
        assert!(
            e.contains("shared directory (mode 1777, like /tmp) and holds someones.txt"),
            "{e}"
        );
        assert_eq!(mode_of(shared.path()), 0o1777);
        // The same with only the node's own files (a fresh tmpfs mounted for it, a node's
        // directory on one): tightened.
        fs::remove_file(shared.path().join("someones.txt")).unwrap();
        fs::write(shared.path().join("known-peers.tmp"), "").unwrap();
        drop(StateDir::open(shared.path()).unwrap());
        assert_eq!(mode_of(shared.path()), 0o755);
        // A file, whatever its mode, is not changed.
        let file = dir.path().join("a-file");
        fs::write(&file, "").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        let e = StateDir::open(&file).unwrap_err().to_string();
        assert!(e.contains("it is not a directory"), "{e}");
        assert_eq!(mode_of(&file), 0o666);
        // Another owner (only root can hand a directory or file to another user).
        if nix::unistd::geteuid().is_root() {
            let nobody = Some(nix::unistd::Uid::from_raw(65534));
            let planted = tempfile::tempdir().unwrap();
            let key = planted.path().join("mesh.key");
            fs::write(&key, "key").unwrap();
            nix::unistd::chown(&key, nobody, None).unwrap();
            let e = StateDir::open(planted.path()).unwrap_err().to_string();
            assert!(
                e.contains("mesh.key") && e.contains("belongs to user id 65534"),
                "{e}"
            );
            // A link of ours to another user's file is theirs too.
            fs::remove_file(&key).unwrap();
            let theirs = dir.path().join("theirs");
            fs::write(&theirs, "key").unwrap();
            nix::unistd::chown(&theirs, nobody, None).unwrap();
            std::os::unix::fs::symlink(&theirs, planted.path().join("identity.key")).unwrap();
            let e = StateDir::open(planted.path()).unwrap_err().to_string();
            assert!(
                e.contains("identity.key") && e.contains("user id 65534"),
                "{e}"
            );
            nix::unistd::chown(dir.path(), nobody, None).unwrap();
            let e = StateDir::open(dir.path()).unwrap_err().to_string();
            assert!(e.contains("belongs to user id 65534"), "{e}");
        }
    }

    /// A control socket's path too long for a Unix socket is refused.
    #[test]
    fn a_socket_path_too_long_is_refused() {
        let deep = Path::new("/").join("d".repeat(120)).join("control.sock");
        let e = check_socket_path(&deep).unwrap_err().to_string();
        assert!(
            e.contains("choose a shorter --state-dir") && e.contains("107 at most"),
            "{e}"
        );
        assert!(check_socket_path(Path::new("/var/lib/directord-mesh/control.sock")).is_ok());
    }

    #[test]
    fn one_daemon_per_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _held = StateDir::open(dir.path()).unwrap();
        let err = StateDir::open(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
    }

    /// A node that ran in a mesh and lost its mesh.key takes it again from its join token
    /// (before, it made a new mesh, cut off from its own, and overwrote the token); an
    /// unreadable token is said, and nothing is made.
    #[test]
    fn a_lost_mesh_key_is_taken_again_from_the_join_token() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let key = MeshKey::generate();
        state.mesh_key(&MeshKeyChoice::Key(key)).unwrap();
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let token = mesh::JoinToken {
            mesh_key: Some(key),
            peers: vec![
                format!("/ip4/127.0.0.1/tcp/7411/p2p/{peer}")
                    .parse()
                    .unwrap(),
            ],
        };
        state.write_join_token(&token.encode()).unwrap();
        fs::remove_file(dir.path().join("mesh.key")).unwrap();
        for choice in [MeshKeyChoice::FromStateOrNew, MeshKeyChoice::FromState] {
            assert_eq!(state.mesh_key(&choice).unwrap(), (Some(key), false));
            fs::remove_file(dir.path().join("mesh.key")).unwrap();
        }
        state.write_join_token("dm1-damaged").unwrap();
        let e = state
            .mesh_key(&MeshKeyChoice::FromStateOrNew)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mesh.key is gone") && e.contains("the token cannot be read"),
            "{e}"
        );
        assert!(!dir.path().join("mesh.key").exists());
    }

    #[test]
    fn peer_without_a_token_needs_the_mesh_key_already_here() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert!(!holds_a_mesh(dir.path()));
        let e = state.mesh_key(&MeshKeyChoice::FromState).unwrap_err();
        assert!(e.to_string().contains("join with --token"), "{e}");
        assert!(!dir.path().join("mesh.key").exists(), "no key made");
        // A key it made itself and never ran with (its first start failed) is no mesh yet.
        state.mesh_key(&MeshKeyChoice::FromStateOrNew).unwrap();
        assert!(!holds_a_mesh(dir.path()));
        assert!(state.mesh_key(&MeshKeyChoice::FromState).is_err());
        // Once it ran in a mesh (a token's key, kept), --peer alone is enough.
        let key = MeshKey::generate();
        state.mesh_key(&MeshKeyChoice::Key(key)).unwrap();
        state.write_join_token("dm1-token").unwrap();
        assert!(holds_a_mesh(dir.path()));
        assert_eq!(
            state.mesh_key(&MeshKeyChoice::FromState).unwrap(),
            (Some(key), false)
        );
    }

    #[test]
    fn mesh_key_is_created_then_kept_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let (k1, created) = state.mesh_key(&MeshKeyChoice::FromStateOrNew).unwrap();
        assert!(created && k1.is_some());
        let (k2, created) = state.mesh_key(&MeshKeyChoice::FromStateOrNew).unwrap();
        assert!(!created);
        assert_eq!(k1, k2);
        // The node came up (it saved its join token): the key binds the directory now.
        state.write_join_token("dm1-test").unwrap();
        // The same key from a token is fine; another key is refused with a reason.
        assert!(state.mesh_key(&MeshKeyChoice::Key(k1.unwrap())).is_ok());
        let err = state
            .mesh_key(&MeshKeyChoice::Key(MeshKey::generate()))
            .unwrap_err();
        assert!(err.to_string().contains("another mesh"), "{err}");
        let err = state.mesh_key(&MeshKeyChoice::Open).unwrap_err();
        assert!(err.to_string().contains("open mesh"), "{err}");
    }

    #[test]
    fn a_key_from_a_start_that_never_came_up_binds_nothing() {
        // A first `join` whose listen address was taken created a key and stopped.
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let (created, _) = state.mesh_key(&MeshKeyChoice::FromStateOrNew).unwrap();
        // Joining a mesh with its token then works, and that key is kept.
        let theirs = MeshKey::generate();
        assert_ne!(created, Some(theirs));
        assert_eq!(
            state.mesh_key(&MeshKeyChoice::Key(theirs)).unwrap(),
            (Some(theirs), false)
        );
        assert_eq!(
            state.mesh_key(&MeshKeyChoice::FromStateOrNew).unwrap(),
            (Some(theirs), false)
        );
        // So does joining an open mesh instead.
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.mesh_key(&MeshKeyChoice::FromStateOrNew).unwrap();
        assert_eq!(state.mesh_key(&MeshKeyChoice::Open).unwrap(), (None, false));
        assert!(!dir.path().join("mesh.key").exists());
        assert_eq!(
            state.mesh_key(&MeshKeyChoice::FromStateOrNew).unwrap(),
            (None, false)
        );
    }

    /// A directory that ran in an open mesh is not switched to a keyed one by a token, as a
    /// directory of a keyed mesh is not switched to an open one; one that never came up is.
    #[test]
    fn a_directory_of_an_open_mesh_refuses_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.mesh_key(&MeshKeyChoice::Open).unwrap();
        // Never came up: joining a keyed mesh instead is fine.
        let key = MeshKey::generate();
        assert_eq!(
            state.mesh_key(&MeshKeyChoice::Key(key)).unwrap(),
            (Some(key), false)
        );
        assert!(!dir.path().join("mesh.open").exists());

        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.mesh_key(&MeshKeyChoice::Open).unwrap();
        state.write_join_token("dm1-open").unwrap();
        let e = state
            .mesh_key(&MeshKeyChoice::Key(MeshKey::generate()))
            .unwrap_err();
        assert!(matches!(e, StateError::OtherMesh { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("belongs to an open mesh") && e.contains("use a new --state-dir"),
            "{e}"
        );
        assert!(dir.path().join("mesh.open").exists());
        assert!(!dir.path().join("mesh.key").exists());
        assert_eq!(state.mesh_key(&MeshKeyChoice::Open).unwrap(), (None, false));
    }

    #[test]
    fn open_mesh_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.mesh_key(&MeshKeyChoice::Open).unwrap(), (None, false));
        assert_eq!(
            state.mesh_key(&MeshKeyChoice::FromStateOrNew).unwrap(),
            (None, false)
        );
    }

    #[test]
    fn damaged_identity_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let error_for = |content: &[u8]| {
            fs::write(dir.path().join("identity.key"), content).unwrap();
            StateDir::open(dir.path())
                .unwrap()
                .identity()
                .unwrap_err()
                .to_string()
        };
        let err = error_for(b"garbage");
        assert!(
            err.contains("identity.key") && err.contains("not a valid identity key"),
            "{err}"
        );
        assert!(!err.contains("feature"), "{err}");
        let err = error_for(b"");
        assert!(
            err.contains("identity.key") && err.contains("the file is empty"),
            "{err}"
        );
    }
}
