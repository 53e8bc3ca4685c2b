//! What each verb does on a node.
//!
//! Every component returns a [`Finished`]: success or failure, stdout, stderr and an info line.
//! Errors of any kind (a template that does not render, a missing user, a command that times out)
//! become failed results with a message that says what happened; nothing here panics.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::{Map, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader},
    process::Command,
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::warn;

use crate::{
    cache::Cache,
    processes::ProcessLog,
    spec::{CacheTag, Component, FileRef, Fingerprint, Owner, Transfer, WaitFor},
    template::{self, Vars},
};

/// Output kept per stream; beyond it the output is cut and the cut is noted. With both
/// streams at the cap a result still travels in one job message (8 MiB at most).
pub const MAX_OUTPUT_BYTES: usize = 3 * 1024 * 1024;
/// The longest line read at once: a longer one (a command printing a binary file, or
/// `/dev/zero`) is taken in pieces of this size, so it never grows one buffer without end.
const MAX_LINE_BYTES: u64 = 64 * 1024;
/// How long output is still read once the job's shell has exited. Its pipes normally close
/// with it; a process it started in the background (`server &`) may hold them open for as
/// long as it runs. Past this the job ends with what was read, and that process runs on.
pub const AFTER_EXIT_GRACE: Duration = Duration::from_secs(1);

/// Which stream a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A line of live output. `offset` is where `text` starts in its stream's output, and the
/// job's result holds the same bytes there, so whoever shows live output can tell when lines
/// went missing on the way (live output is best effort) and fill the gap from the result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputLine {
    pub stream: OutputStream,
    pub offset: u64,
    /// The line with its newline, if it had one (a piece of an over-long line has none).
    pub text: String,
}

/// Where live output goes while a job runs (for `--stream`).
pub type LineSink = mpsc::Sender<OutputLine>;

/// How a component ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Finished {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub info: String,
}

impl Finished {
    pub fn ok(stdout: impl Into<String>, info: impl Into<String>) -> Self {
        Finished {
            success: true,
            stdout: stdout.into(),
            stderr: String::new(),
            info: info.into(),
        }
    }

    pub fn fail(stderr: impl Into<String>, info: impl Into<String>) -> Self {
        Finished {
            success: false,
            stdout: String::new(),
            stderr: stderr.into(),
            info: info.into(),
        }
    }
}

/// A boxed future, for the object-safe [`Coordinator`].
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What the verbs that coordinate across nodes (QUERY, JOB_WAIT) need from the node they run
/// on. The node implements it over the mesh; this crate never sees a peer.
pub trait Coordinator: Send + Sync {
    /// QUERY: hands this node's `value` of `name` to the job's originator. With `wait`,
    /// resolves with the aggregate (`{"query": {node: {name: value}}}`) once every target of
    /// the job has answered; without, at once with `None`.
    fn query(
        &self,
        job_id: &str,
        name: &str,
        value: Value,
        wait: bool,
    ) -> BoxFuture<'static, Result<Option<Value>, String>>;

    /// JOB_WAIT (the job `job_id`): asks each of `nodes` about the job with `fingerprint` (or
    /// a prefix of it). The receiver gets `(node, "success" | "failed")` as each one has
    /// finished it.
    fn job_wait(
        &self,
        job_id: &str,
        fingerprint: &str,
        nodes: &[String],
    ) -> BoxFuture<'static, Result<mpsc::Receiver<(String, String)>, String>>;

    /// JOB_WAIT that timed out: how this node sees each of `nodes` now (left, out of reach,
    /// alive), one phrase each, for the failure to say why no answer came.
    fn nodes_seen(&self, nodes: &[String]) -> BoxFuture<'static, Vec<String>> {
        let _ = nodes;
        Box::pin(async { Vec::new() })
    }

    /// ADD/COPY: makes the verified content of `file` available on this node (from the
    /// announce, this node's store, or other nodes) and says where it is.
    fn fetch_blob(
        &self,
        job_id: &str,
        file: &FileRef,
    ) -> BoxFuture<'static, Result<PathBuf, String>>;

    /// ADD/COPY: what `fetch_blob` gave for `hash` is not that content (a member sent a file
    /// description that does not match its hash, or the copy was damaged): the node drops it,
    /// so the next job that needs the file fetches it again.
    fn discard_blob(&self, hash: Fingerprint);
}

/// How a job tells its queue that it only waits for other nodes (QUERY, QUERY_WAIT,
/// JOB_WAIT): the queue may run other runs' jobs meanwhile (see `executor`). Two submitters'
/// QUERY jobs queued in opposite orders on two nodes would otherwise each hold a node's queue
/// waiting for a value the other node's queue has not reached.
pub trait QueueLender: Send + Sync {
    /// The job waits for other nodes from now until the guard is dropped.
    fn lend(&self) -> Box<dyn Send + Sync + '_>;
}

/// What a component runs with.
pub struct Context<'a> {
    pub job_id: &'a str,
    /// The job's run: its templates see the values its own run's QUERYs collected.
    pub run_id: &'a str,
    pub cache: &'a Cache,
    /// Where live output lines go, when asked for.
    pub sink: Option<&'a LineSink>,
    /// When the job's timeout expires.
    pub deadline: Instant,
    pub coordinator: Option<&'a dyn Coordinator>,
    /// Where the job's process group is written down while it runs.
    pub processes: Option<&'a ProcessLog>,
    /// The job's queue, which it may lend while it waits for other nodes.
    pub queue: Option<&'a dyn QueueLender>,
    /// ADD/COPY: the verb's named lock, taken only to land the file (fetching it may wait for
    /// its holders to come back; other copies on the node do not wait behind that).
    pub landing_lock: Option<&'a tokio::sync::Mutex<()>>,
}

impl Context<'_> {
    /// What the job's templates render with ([`Cache::args_for_run`]).
    fn args(&self) -> Vars {
        self.cache.args_for_run(self.run_id)
    }

    /// Lends the job's queue until the guard is dropped (nothing without a queue).
    fn lend_queue(&self) -> Option<Box<dyn Send + Sync + '_>> {
        self.queue.map(|q| q.lend())
    }
}

/// Runs `component` on this node.
pub async fn run(component: &Component, ctx: &Context<'_>) -> Finished {
    let (cache, sink, deadline, processes) = (ctx.cache, ctx.sink, ctx.deadline, ctx.processes);
    match component {
        Component::Run {
            command,
            stdout_arg,
            no_block,
        } => {
            let sh = CommandContext {
                cache,
                run_id: ctx.run_id,
                sink,
                deadline,
                processes,
            };
            run_command(command, stdout_arg.as_deref(), *no_block, &sh).await
        }
        Component::Echo { text } => {
            if let Some(sink) = sink {
                let mut offset = 0;
                for line in text.split_inclusive('\n') {
                    let _ = sink
                        .send(OutputLine {
                            stream: OutputStream::Stdout,
                            offset,
                            text: line.to_string(),
                        })
                        .await;
                    offset += line.len() as u64;
                }
            }
            Finished::ok(text.clone(), "")
        }
        Component::Arg { args, extend } => set_values(args, *extend, ctx, "args"),
        Component::Env { envs, extend } => set_values(envs, *extend, ctx, "envs"),
        Component::Workdir { path, owner, mode } => {
            workdir(path, owner.as_ref(), *mode, &ctx.args())
        }
        Component::Cachefile { path } => cachefile(path, ctx),
        Component::Cacheevict { tag } => {
            let n = cache.evict(*tag);
            if *tag == CacheTag::All {
                Finished::ok("All cache has been cleared", format!("{n} items evicted"))
            } else {
                let tag = format!("{tag:?}").to_lowercase();
                Finished::ok(format!("Evicted {n} items, tagged {tag}"), "")
            }
        }
        // The executor purges the queues; the job itself only reports.
        Component::Queuesentinel => Finished::ok("", ""),
        Component::Wait { wait } => {
            let sh = CommandContext {
                cache,
                run_id: ctx.run_id,
                sink: None,
                deadline,
                processes,
            };
            wait_for(wait, &sh).await
        }
        Component::Query { name, no_wait } => query(name, *no_wait, ctx).await,
        Component::QueryWait {
            item,
            timeout_secs,
            identities,
        } => query_wait(item, *timeout_secs, identities, ctx).await,
        Component::JobWait {
            fingerprint,
            identities,
        } => job_wait(fingerprint, identities, ctx).await,
        Component::Add(t) | Component::Copy(t) => transfer(t, ctx).await,
    }
}

/// ADD/COPY on a target: land one file at DEST, verified and atomically.
async fn transfer(t: &Transfer, ctx: &Context<'_>) -> Finished {
    let Some(file) = &t.file else {
        return Finished::fail(
            "the submitter did not resolve this file (a daemon older than its CLI?)",
            "",
        );
    };
    let args = ctx.args();
    let path = match landing_path(&t.dest, file, &args) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    if !dir.is_dir() {
        return Finished::fail(
            format!(
                "destination directory {} does not exist (create it first, e.g. with WORKDIR)",
                dir.display()
            ),
            "",
        );
    }
    // Who will own it is settled before anything is written: a user this node lacks fails
    // the job with DEST as it was.
    let owner = match t.owner.as_ref().map(resolve_owner).transpose() {
        Ok(o) => o,
        Err(e) => {
            return Finished::fail(
                e,
                format!(
                    "Failed to set ownership of {}: it was left as it was",
                    path.display()
                ),
            );
        }
    };
    let access = Access {
        owner,
        mode: t.mode,
    };
    let expected = file.hash;
    let size = file.size;
    let blueprint = t.blueprint;
    // Already there: nothing to transfer, but owner and mode still apply.
    let unchanged = !blueprint && {
        let p = path.clone();
        tokio::task::spawn_blocking(move || file_hash(&p).is_ok_and(|h| h == expected.0))
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
                    "the job's timeout ended before the file arrived (the nodes holding it were \
                     out of reach or slow; this node's log says which)",
                    format!("{} was not transferred", path.display()),
                );
            }
        };
        let _landing = match ctx.landing_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let target = path.clone();
        let source_name = file.name.clone();
        let written = tokio::task::spawn_blocking(move || {
            let args = blueprint.then_some(args);
            land(&blob, &target, expected, args, access, &source_name)
        })
        .await
        .unwrap_or_else(|e| Err(LandError::Other(format!("the copy stopped: {e}"))));
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
    if unchanged && let Err(e) = access.apply(&path) {
        return Finished::fail(
            e,
            format!("Failed to set ownership or mode of {}", path.display()),
        );
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

/// blake3 of a file's content.
fn file_hash(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut f, &mut hasher)?;
    Ok(*hasher.finalize().as_bytes())
}

/// Why a file did not land.
#[derive(Debug)]
enum LandError {
    /// The transferred content does not have the file's hash.
    NotTheFile(String),
    Other(String),
}

impl std::fmt::Display for LandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LandError::NotTheFile(e) | LandError::Other(e) => f.write_str(e),
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
fn landing_path(dest: &str, file: &FileRef, args: &Vars) -> Result<PathBuf, Finished> {
    let dest = render_path(dest, args)?;
    Ok(if dest.ends_with('/') {
        PathBuf::from(&dest).join(&file.name)
    } else {
        PathBuf::from(&dest)
    })
}

/// The temporary file beside `path` that this process lands it through.
fn landing_file(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.{}.dm-tmp", std::process::id()))
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
            .and_then(|pid| pid.parse::<u32>().ok())
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
/// it when anything fails.
fn land(
    blob: &Path,
    path: &Path,
    expected: Fingerprint,
    args: Option<Vars>,
    access: Access,
    source_name: &str,
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
        // one this process left earlier goes first.
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
        std::fs::rename(&tmp, path)
            .map_err(|e| format!("cannot move the file into {}: {e}", path.display()))?;
        Ok(landed)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

async fn query(name: &str, no_wait: bool, ctx: &Context<'_>) -> Finished {
    let Some(coordinator) = ctx.coordinator else {
        return Finished::fail("QUERY needs a mesh to ask", "");
    };
    // The value as this run sees it (its own ARG, whatever another run set since).
    let value = ctx.args().get(name).cloned().unwrap_or(Value::Null);
    let own = serde_json::json!({ name: value }).to_string();
    let lent = (!no_wait).then(|| ctx.lend_queue());
    let answer = coordinator.query(ctx.job_id, name, value, !no_wait).await;
    drop(lent);
    match answer {
        Ok(None) => Finished::ok(own, "value sent; not waiting for the others (--no-wait)"),
        Ok(Some(aggregate)) => {
            let nodes = aggregate
                .get("query")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            // The run's later jobs here render with this set, whatever another run's QUERY
            // of the same name merges into the node's args meanwhile.
            ctx.cache.keep_run_query(ctx.run_id, &aggregate);
            if let Value::Object(map) = aggregate {
                ctx.cache.merge_args(map, true);
            }
            Finished::ok(own, format!("query of {nodes} nodes merged into the args"))
        }
        Err(e) => Finished::fail(e, format!("QUERY {name} failed")),
    }
}

async fn query_wait(
    item: &str,
    timeout_secs: u64,
    identities: &[String],
    ctx: &Context<'_>,
) -> Finished {
    let until = ctx
        .deadline
        .min(Instant::now() + crate::spec::bounded_secs(timeout_secs));
    let _lent = ctx.lend_queue();
    loop {
        let args = ctx.cache.args();
        let query = args.get("query").and_then(Value::as_object);
        let has = |node: &str| {
            query
                .and_then(|q| q.get(node))
                .and_then(|v| v.get(item))
                .is_some()
        };
        let found = if identities.is_empty() {
            query.is_some_and(|q| q.values().any(|v| v.get(item).is_some()))
        } else {
            identities.iter().all(|id| has(id))
        };
        if found {
            let what = if identities.is_empty() {
                "Item found"
            } else {
                "Item found in all identities"
            };
            return Finished::ok(what, format!("query item {item}"));
        }
        if Instant::now() >= until {
            let missing: Vec<&str> = identities
                .iter()
                .filter(|id| !has(id))
                .map(String::as_str)
                .collect();
            let who = if missing.is_empty() {
                "any node".to_string()
            } else {
                missing.join(", ")
            };
            return Finished::fail(
                format!("Timeout after {timeout_secs} seconds"),
                format!("query item {item} was not found for {who}"),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn job_wait(fingerprint: &str, identities: &[String], ctx: &Context<'_>) -> Finished {
    // A node named twice is one node to hear from (one answer comes from it).
    let mut unique: Vec<String> = Vec::with_capacity(identities.len());
    for id in identities {
        if !unique.contains(id) {
            unique.push(id.clone());
        }
    }
    let identities = unique.as_slice();
    let Some(coordinator) = ctx.coordinator else {
        return Finished::fail("JOB_WAIT needs a mesh to ask", "");
    };
    let _lent = ctx.lend_queue();
    // Bounded by the job's timeout: the node may look for a name it does not know yet.
    let asked = tokio::time::timeout_at(
        ctx.deadline,
        coordinator.job_wait(ctx.job_id, fingerprint, identities),
    );
    let mut updates = match asked.await {
        Ok(Ok(rx)) => rx,
        Ok(Err(e)) => return Finished::fail(e, format!("JOB_WAIT {fingerprint} failed")),
        Err(_) => {
            return Finished::fail(
                format!(
                    "JOB_WAIT: timed out before every node it names was found in the mesh ({})",
                    identities.join(", ")
                ),
                format!("JOB_WAIT {fingerprint} failed"),
            );
        }
    };
    let mut done: Vec<(String, String)> = Vec::new();
    while done.len() < identities.len() {
        match tokio::time::timeout_at(ctx.deadline, updates.recv()).await {
            Ok(Some((node, state))) => {
                if !done.iter().any(|(n, _)| *n == node) {
                    done.push((node, state));
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let missing: Vec<&str> = identities
        .iter()
        .filter(|id| !done.iter().any(|(n, _)| n == *id))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        let states: Vec<String> = done.iter().map(|(n, s)| format!("{n}: {s}")).collect();
        Finished::ok(
            format!("Job completed, found fingerprint [ {fingerprint} ]"),
            format!(
                "completed on all coordinated targets: {}",
                states.join(", ")
            ),
        )
    } else {
        let missing: Vec<String> = missing.iter().map(|m| m.to_string()).collect();
        let seen = coordinator.nodes_seen(&missing).await;
        let seen = if seen.is_empty() {
            String::new()
        } else {
            format!(" ({})", seen.join("; "))
        };
        Finished::fail(
            format!(
                "timed out waiting for job {fingerprint} to finish on {}{seen}",
                missing.join(", ")
            ),
            format!(
                "JOB_WAIT gave up after its timeout; {} of {} nodes had finished it",
                done.len(),
                identities.len()
            ),
        )
    }
}

/// What a shell command runs with.
struct CommandContext<'a> {
    cache: &'a Cache,
    /// The job's run: its ENVs are the run's own, its templates render with its args
    /// ([`Cache::envs_for_run`], [`Cache::args_for_run`]; taken to render, then let go: a
    /// change while they are held copies them all).
    run_id: &'a str,
    sink: Option<&'a LineSink>,
    deadline: Instant,
    processes: Option<&'a ProcessLog>,
}

async fn run_command(
    command: &str,
    stdout_arg: Option<&str>,
    no_block: bool,
    sh: &CommandContext<'_>,
) -> Finished {
    let cache = sh.cache;
    let command = match template::render(command, &sh.cache.args_for_run(sh.run_id)) {
        Ok(c) if c.trim().is_empty() => {
            return Finished::fail(
                format!("'{command}' rendered to an empty command"),
                "nothing to run",
            );
        }
        Ok(c) => c,
        Err(e) => return Finished::fail(&e, "the command did not render"),
    };
    if no_block {
        let mut cmd = shell(&command, cache, sh.run_id);
        // Left running when the handle goes (it is the point of --no-block).
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false);
        return match cmd.spawn() {
            // Dropping the handle leaves the process running; tokio reaps it when it exits.
            Ok(child) => Finished::ok(
                "",
                format!(
                    "started in the background (pid {}): {command}",
                    child.id().unwrap_or(0)
                ),
            ),
            Err(e) => Finished::fail(format!("cannot start /bin/sh: {e}"), command),
        };
    }
    let r = run_shell(&command, sh).await;
    let (stdout_cut, stdout_not_utf8) = (r.stdout_cut, r.stdout_not_utf8);
    let mut finished = r.into_finished(&command);
    if finished.success
        && let Some(name) = stdout_arg
    {
        let value = finished.stdout.trim().to_string();
        if stdout_cut {
            finished.success = false;
            finished.info = format!(
                "--stdout-arg {name}: the output is over {MAX_OUTPUT_BYTES} bytes, too large to store"
            );
        } else if stdout_not_utf8 {
            finished.success = false;
            finished.info =
                format!("--stdout-arg {name}: the output is not UTF-8 text; an arg holds text");
        } else if value.is_empty() {
            finished.success = false;
            finished.info = format!("--stdout-arg {name}: the command printed nothing to store");
        } else {
            cache.merge_args_of(
                Some(sh.run_id),
                Map::from_iter([(name.to_string(), Value::String(value))]),
                false,
            );
        }
    }
    finished
}

fn shell(command: &str, cache: &Cache, run_id: &str) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .envs(cache.envs_for_run(run_id))
        .stdin(Stdio::null())
        // Its own process group, so a timeout can kill everything the command started.
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// What a shell command did.
struct ShellResult {
    spawn_error: Option<String>,
    exit: Option<std::process::ExitStatus>,
    timed_out: Option<Duration>,
    stdout: String,
    /// Whether `stdout` is only the first `MAX_OUTPUT_BYTES` of what the command printed.
    stdout_cut: bool,
    /// Whether stdout had bytes that are not UTF-8 (shown as U+FFFD in `stdout`).
    stdout_not_utf8: bool,
    stderr: String,
}

impl ShellResult {
    fn into_finished(self, command: &str) -> Finished {
        if let Some(e) = self.spawn_error {
            return Finished::fail(e, command.to_string());
        }
        let (success, info) = match (self.timed_out, self.exit) {
            (Some(after), _) => (
                false,
                format!(
                    "timed out after {:.0} s; its process group was killed: {command}",
                    after.as_secs_f64()
                ),
            ),
            (None, Some(status)) if status.success() => (true, command.to_string()),
            (None, Some(status)) => match status.code() {
                Some(code) => (false, format!("exit code {code}: {command}")),
                None => (false, format!("killed by a signal ({status}): {command}")),
            },
            (None, None) => (false, format!("no exit status: {command}")),
        };
        Finished {
            success,
            stdout: self.stdout.trim_end().to_string(),
            stderr: self.stderr.trim_end().to_string(),
            info,
        }
    }
}

/// A stream's output so far, and whether it was still open when reading stopped.
struct Read {
    text: String,
    /// The text is the first `MAX_OUTPUT_BYTES` of the stream (a note says so at its end).
    cut: bool,
    still_open: bool,
    /// The stream had bytes that are not UTF-8: the text shows each run of them as U+FFFD.
    not_utf8: bool,
}

/// Reads one stream to its end, or until `AFTER_EXIT_GRACE` after `exited` turns true.
async fn read_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    which: OutputStream,
    sink: Option<LineSink>,
    mut exited: watch::Receiver<bool>,
) -> Read {
    let mut reader = BufReader::new(stream);
    let mut out = String::new();
    let mut cut = false;
    let mut still_open = false;
    let mut not_utf8 = false;
    let mut offset = 0usize;
    let mut buf = Vec::new();
    let stop = async move {
        // An error means the shell's side is gone without word: read on to the end.
        if exited.wait_for(|e| *e).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(AFTER_EXIT_GRACE).await;
    };
    tokio::pin!(stop);
    loop {
        buf.clear();
        let mut limited = (&mut reader).take(MAX_LINE_BYTES);
        let read = tokio::select! {
            r = limited.read_until(b'\n', &mut buf) => r,
            _ = &mut stop => {
                still_open = true;
                Ok(0)
            }
        };
        // Bytes of a line begun when reading stopped are in `buf` (read_until keeps them).
        let read = match read {
            Ok(0) if still_open => Ok(buf.len()),
            other => other,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                // Borrowed exactly when every byte was UTF-8.
                not_utf8 |= matches!(line, std::borrow::Cow::Owned(_));
                if let Some(sink) = &sink {
                    // Waits for room: the node takes lines at once (it never waits on the
                    // network), so a streaming job slows down only when its node does. Past
                    // the node, lines may be dropped; a reader fills them in from the result.
                    let _ = sink
                        .send(OutputLine {
                            stream: which,
                            offset: offset as u64,
                            text: line.to_string(),
                        })
                        .await;
                }
                offset += line.len();
                // What is kept is a prefix of the output: once one piece does not fit,
                // nothing after it is kept either.
                if !cut && out.len() + line.len() <= MAX_OUTPUT_BYTES {
                    out.push_str(&line);
                } else {
                    cut = true;
                }
            }
        }
        if still_open {
            break;
        }
    }
    if still_open {
        // What the process still writes is read and dropped until it closes the pipe: a
        // closed pipe would kill it (SIGPIPE) at its next write. One task for each such
        // stream, ending with the process.
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
        });
    }
    if cut {
        out.push_str(&format!("\n[output cut at {MAX_OUTPUT_BYTES} bytes]"));
    }
    Read {
        text: out,
        cut,
        still_open,
        not_utf8,
    }
}

/// At most this long between tries to start a job's shell that could not start for want of
/// file descriptors or processes (it is tried until the job's timeout).
const SPAWN_RETRY_EVERY: Duration = Duration::from_millis(500);

/// Whether a failed spawn may work a moment later: the process (or the system) is out of
/// file descriptors, or of processes.
fn short_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE || code == nix::libc::EAGAIN
    )
}

/// Jobs waiting for file descriptors or processes to start their shell, in turn. The limits
/// are the process's, so the turn is too.
static SPAWN_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How many jobs wait for their turn: while any does, a new job queues behind them rather
/// than take what frees up first.
static SPAWN_WAITERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Starts `cmd`; when the node is short of descriptors or processes, tries again in turn
/// until `deadline`. Returns the child and whether it had to wait.
async fn spawn_in_turn(
    cmd: &mut Command,
    deadline: Instant,
) -> std::io::Result<(tokio::process::Child, bool)> {
    use std::sync::atomic::Ordering;
    let mut short = None;
    if SPAWN_WAITERS.load(Ordering::SeqCst) == 0 {
        match cmd.spawn() {
            Err(e) if short_of_resources(&e) => short = Some(e),
            other => return other.map(|child| (child, false)),
        }
    }
    // Said when the first job starts to wait, not for each.
    if SPAWN_WAITERS.fetch_add(1, Ordering::SeqCst) == 0
        && let Some(e) = &short
    {
        warn!(
            "cannot start /bin/sh for a job: {e}; jobs wait for their turn until their timeout \
             (raise the daemon's limit, e.g. LimitNOFILE= in its systemd unit)"
        );
    }
    // Counted down however this ends (the job's task may be dropped while it waits).
    struct Waiting;
    impl Drop for Waiting {
        fn drop(&mut self) {
            SPAWN_WAITERS.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _waiting = Waiting;
    let Ok(_turn) = tokio::time::timeout_at(deadline, SPAWN_TURN.lock()).await else {
        return Err(std::io::Error::other(
            "the node was short of file descriptors or processes until the job's timeout",
        ));
    };
    let mut pause = Duration::from_millis(10);
    // Whether this job itself could not start at once (one that only queued behind others
    // did wait, but its stderr need not say so).
    let mut short_here = short.is_some();
    loop {
        match cmd.spawn() {
            Err(e) if short_of_resources(&e) && Instant::now() + pause < deadline => {
                short_here = true;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(SPAWN_RETRY_EVERY);
            }
            other => return other.map(|child| (child, short_here)),
        }
    }
}

async fn run_shell(command: &str, sh: &CommandContext<'_>) -> ShellResult {
    let (sink, deadline) = (sh.sink, sh.deadline);
    let started = Instant::now();
    let mut cmd = shell(command, sh.cache, sh.run_id);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // A node short of file descriptors or processes for a moment (many jobs at once) is
    // waited on, within the job's timeout, rather than failing the job: in turn, first come
    // first served, while any job waits.
    let spawned = match spawn_in_turn(&mut cmd, deadline).await {
        Ok((child, waited)) => Ok((child, waited.then(|| started.elapsed()))),
        Err(e) => Err(e),
    };
    let (mut child, waited_for_spawn) = match spawned {
        Ok(c) => c,
        Err(e) => {
            return ShellResult {
                spawn_error: Some(format!("cannot start /bin/sh: {e}")),
                exit: None,
                timed_out: None,
                stdout: String::new(),
                stdout_cut: false,
                stdout_not_utf8: false,
                stderr: String::new(),
            };
        }
    };
    let pid = child.id();
    // Written down while it runs: a node restarted after a crash stops the group.
    let mut running = pid.map(|pid| Running::new(sh.processes, pid));
    // Both pipes were requested above; the readers and the wait share this task.
    let out = child.stdout.take();
    let err = child.stderr.take();
    let (exited_tx, exited) = watch::channel(false);
    let collect = async {
        let closed = || Read {
            text: String::new(),
            cut: false,
            still_open: false,
            not_utf8: false,
        };
        let read_out = async {
            match out {
                Some(s) => read_lines(s, OutputStream::Stdout, sink.cloned(), exited.clone()).await,
                None => closed(),
            }
        };
        let read_err = async {
            match err {
                Some(s) => read_lines(s, OutputStream::Stderr, sink.cloned(), exited.clone()).await,
                None => closed(),
            }
        };
        let wait = async {
            let status = child.wait().await;
            let _ = exited_tx.send(true);
            status
        };
        let (status, stdout, mut stderr) = tokio::join!(wait, read_out, read_err);
        if stdout.still_open || stderr.still_open {
            if !stderr.text.is_empty() && !stderr.text.ends_with('\n') {
                stderr.text.push('\n');
            }
            stderr.text.push_str(&format!(
                "[the shell exited but a process it started still holds its output; the job \
                 ended {} s later and left that process running]",
                AFTER_EXIT_GRACE.as_secs()
            ));
        }
        if let Some(waited) = waited_for_spawn {
            if !stderr.text.is_empty() && !stderr.text.ends_with('\n') {
                stderr.text.push('\n');
            }
            stderr.text.push_str(&format!(
                "[the shell waited {:.1} s to start: the node was short of file descriptors or \
                 processes]",
                waited.as_secs_f64()
            ));
        }
        let not_utf8: Vec<&str> = [(stdout.not_utf8, "stdout"), (stderr.not_utf8, "stderr")]
            .into_iter()
            .filter_map(|(yes, name)| yes.then_some(name))
            .collect();
        if !not_utf8.is_empty() {
            if !stderr.text.is_empty() && !stderr.text.ends_with('\n') {
                stderr.text.push('\n');
            }
            stderr.text.push_str(&format!(
                "[{} had bytes that are not UTF-8 text; they are shown as U+FFFD]",
                not_utf8.join(" and ")
            ));
        }
        (status, stdout, stderr.text)
    };
    let result = tokio::time::timeout_at(deadline, collect).await;
    if let Some(r) = running.as_mut() {
        r.waited = true;
    }
    match result {
        Ok((status, stdout, stderr)) => ShellResult {
            spawn_error: None,
            exit: status.ok(),
            timed_out: None,
            stdout_cut: stdout.cut,
            stdout_not_utf8: stdout.not_utf8,
            stdout: stdout.text,
            stderr,
        },
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            ShellResult {
                spawn_error: None,
                exit: None,
                timed_out: Some(started.elapsed()),
                stdout: String::new(),
                stdout_cut: false,
                stdout_not_utf8: false,
                stderr: String::new(),
            }
        }
    }
}

/// A job's process group while its shell runs: in the [`ProcessLog`] (if the node keeps one),
/// and killed if the job is dropped before its shell was waited for (the node shutting down,
/// the executor's last-resort timeout), so nothing of it runs on unsupervised.
struct Running<'a> {
    log: Option<&'a ProcessLog>,
    pgid: u32,
    waited: bool,
}

impl<'a> Running<'a> {
    fn new(log: Option<&'a ProcessLog>, pgid: u32) -> Self {
        if let Some(log) = log {
            log.started(pgid);
        }
        Running {
            log,
            pgid,
            waited: false,
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.waited {
            kill_group(self.pgid);
        }
        if let Some(log) = self.log {
            log.ended(self.pgid);
        }
    }
}

/// SIGKILL to a whole process group (the job's shell and everything it started).
fn kill_group(pgid: u32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn set_values(
    values: &std::collections::BTreeMap<String, Value>,
    extend: bool,
    ctx: &Context<'_>,
    kind: &str,
) -> Finished {
    let mut rendered = Map::new();
    {
        // Let go of the args before changing them: a change while they are held copies
        // them all.
        let args = &ctx.args();
        for (k, v) in values {
            match template::render_value(v, args) {
                Ok(v) => {
                    rendered.insert(k.clone(), v);
                }
                Err(e) => return Finished::fail(&e, format!("{kind} {k} did not render")),
            }
        }
    }
    let shown = Value::Object(rendered.clone()).to_string();
    // The run's later jobs see these as this job left them, whatever another run sets under
    // the same names meanwhile.
    if kind == "args" {
        ctx.cache.merge_args_of(Some(ctx.run_id), rendered, extend);
    } else {
        ctx.cache.merge_envs_of(Some(ctx.run_id), rendered, extend);
    }
    Finished::ok(
        format!("{kind} added to cache"),
        format!("type:{kind}, value:{shown}"),
    )
}

fn render_path(path: &str, args: &Vars) -> Result<String, Finished> {
    let rendered =
        template::render(path, args).map_err(|e| Finished::fail(&e, "the path did not render"))?;
    if !rendered.starts_with('/') {
        return Err(Finished::fail(
            format!("'{rendered}' is not an absolute path"),
            "paths on the node must be absolute",
        ));
    }
    Ok(rendered)
}

fn workdir(path: &str, owner: Option<&Owner>, mode: Option<u32>, args: &Vars) -> Finished {
    let path = match render_path(path, args) {
        Ok(p) => p,
        Err(f) => return f,
    };
    // A user this node lacks fails the job before the directory is made.
    let access = match owner.map(resolve_owner).transpose() {
        Ok(owner) => Access { owner, mode },
        Err(e) => {
            return Finished::fail(e, format!("Failed to set ownership of {path}: not created"));
        }
    };
    let existed = Path::new(&path).is_dir();
    if let Err(e) = std::fs::create_dir_all(&path) {
        return Finished::fail(format!("cannot create {path}: {e}"), "");
    }
    if let Err(e) = access.apply(Path::new(&path)) {
        // One this job made goes again rather than stay with the wrong owner or mode.
        if !existed {
            let _ = std::fs::remove_dir(&path);
        }
        return Finished::fail(e, format!("Failed to set ownership or mode of {path}"));
    }
    Finished::ok(format!("Directory {path} OK"), "")
}

/// The owner (resolved on this node) and mode a file or directory is to have.
#[derive(Debug, Clone, Copy, Default)]
struct Access {
    owner: Option<(Option<nix::unistd::Uid>, Option<nix::unistd::Gid>)>,
    mode: Option<u32>,
}

impl Access {
    /// Applies the owner, then the mode (a chown clears set-id bits a mode may ask for).
    fn apply(&self, path: &Path) -> Result<(), String> {
        if let Some((uid, gid)) = self.owner {
            nix::unistd::chown(path, uid, gid)
                .map_err(|e| format!("chown {}: {e}", path.display()))?;
        }
        if let Some(mode) = self.mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
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
fn umask() -> u32 {
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
fn resolve_owner(
    owner: &Owner,
) -> Result<(Option<nix::unistd::Uid>, Option<nix::unistd::Gid>), String> {
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

fn cachefile(path: &str, ctx: &Context<'_>) -> Finished {
    let path = match render_path(path, &ctx.args()) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return Finished::fail(format!("cannot read {path}: {e}"), ""),
    };
    match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => {
            let n = map.len();
            ctx.cache.merge_args_of(Some(ctx.run_id), map, true);
            Finished::ok("Cache file loaded", format!("{n} keys from {path}"))
        }
        Ok(_) => Finished::fail(format!("{path} is not a YAML or JSON mapping"), ""),
        Err(e) => Finished::fail(format!("{path}: {e}"), ""),
    }
}

async fn wait_for(wait: &WaitFor, sh: &CommandContext<'_>) -> Finished {
    match wait {
        WaitFor::Seconds(s) => {
            tokio::time::sleep(crate::spec::bounded_secs_f64(*s)).await;
            Finished::ok(format!("waited {s} s"), "")
        }
        WaitFor::Command {
            command,
            retry,
            retry_wait,
        } => {
            let command = match template::render(command, &sh.cache.args_for_run(sh.run_id)) {
                Ok(c) => c,
                Err(e) => return Finished::fail(&e, "the command did not render"),
            };
            let mut last = None;
            for attempt in 1..=*retry {
                let r = run_shell(&command, sh).await;
                if r.timed_out.is_some() {
                    return r.into_finished(&command);
                }
                if r.exit.is_some_and(|s| s.success()) {
                    return Finished::ok(
                        r.stdout.trim_end(),
                        format!("condition met on try {attempt}: {command}"),
                    );
                }
                last = Some(r);
                if attempt < *retry {
                    tokio::time::sleep(crate::spec::bounded_secs_f64(*retry_wait)).await;
                }
            }
            let stderr = last
                .map(|r| r.stderr.trim_end().to_string())
                .unwrap_or_default();
            Finished::fail(
                stderr,
                format!("condition not met after {retry} tries: {command}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the temporary files of DEST whose writer is no longer running go.
    #[test]
    fn stale_landings_of_gone_processes_are_removed_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        let ours = std::process::id();
        let names = [
            format!(".f.{gone_pid}.dm-tmp"),
            format!(".f.{ours}.dm-tmp"),
            format!(".g.{gone_pid}.dm-tmp"),
            ".f.x.dm-tmp".to_string(),
            "f".to_string(),
        ];
        for name in &names {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let removed = remove_stale_landings(&dir.path().join("f"), false);
        assert_eq!(removed, vec![dir.path().join(&names[0])]);
        for name in &names[1..] {
            assert!(dir.path().join(name).exists(), "{name} was removed");
        }
        // At a restart, this process's own are a predecessor's (same pid in a container).
        let removed = remove_stale_landings(&dir.path().join("f"), true);
        assert_eq!(removed, vec![dir.path().join(&names[1])]);
    }
}
