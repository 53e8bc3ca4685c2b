//! What each verb does on a node.
//!
//! Every component returns a [`Finished`]: success or failure, stdout, stderr and an info line.
//! Errors of any kind (a template that does not render, a missing user, a command that times out)
//! become failed results with a message that says what happened; nothing here panics.
//!
//! Here: what a job is given ([`Context`]) and returns, the dispatch by verb, and the verbs
//! that set values (ARG, ENV, CACHEFILE, CACHEEVICT). Beside it: `shell` (RUN, WAIT),
//! `files` (ADD/COPY, WORKDIR) and `cross_node` (QUERY, QUERY_WAIT, JOB_WAIT).

mod cross_node;
mod files;
mod shell;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde_json::{Map, Value};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    cache::Cache,
    processes::ProcessLog,
    spec::{self, CacheTag, Component, FileRef, Fingerprint},
    template::{self, Vars},
};

pub use cross_node::query_value_sent;
use cross_node::{job_wait, query, query_wait};
pub use files::{remove_interrupted_landing, remove_stale_landings};
use files::{transfer, workdir};
use shell::{CommandContext, run_command, wait_for};

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

    /// QUERY (the job `job_id`) that timed out waiting for the set: why it has not come, as
    /// far as this node can tell (whose values the submitter still waits for, or which node
    /// to ask), for the failure to say.
    fn query_waiting(&self, job_id: &str) -> BoxFuture<'static, Option<String>> {
        let _ = job_id;
        Box::pin(async { None })
    }

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
    /// its holders to come back; other copies on the node do not wait behind that), and held
    /// until the landing ends, even past the job's end if it was given up meanwhile.
    pub landing_lock: Option<&'a Arc<tokio::sync::Mutex<()>>>,
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
        Component::Workdir { path, owner, mode } => workdir(path, owner.as_ref(), *mode, ctx).await,
        Component::Cachefile { path } => cachefile(path, ctx).await,
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
                    // An env every later RUN and WAIT of the node would fail on is not kept
                    // (a job from a peer was not parsed here, and a rendered value may hold
                    // NUL). Only a string is passed as it is; another value as JSON.
                    if kind == "envs"
                        && let Some(why) = spec::env_problem(k, v.as_str().unwrap_or_default())
                    {
                        return Finished::fail(why, "no env was set");
                    }
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

/// Runs `work` on one of tokio's blocking threads and waits for it: file system work, name
/// service lookups (`getpwnam` may ask LDAP) and parsing of large files. The executor runs
/// the actor and every job on one thread: its timers, output readers and other jobs would
/// otherwise stop while `work` runs. `what` names the work if its thread fails.
pub(super) async fn off_thread<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("{what} stopped unexpectedly: {e}"))
}

/// Where a blocking `step` on `path` begins: tests may make it slow
/// (`tests::slow_step`); nothing otherwise.
fn blocking_step(step: &str, path: &Path) {
    #[cfg(test)]
    tests::pause_if_slow(step, path);
    #[cfg(not(test))]
    let _ = (step, path);
}

pub(super) fn render_path(path: &str, args: &Vars) -> Result<String, Finished> {
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

/// Most bytes of a file CACHEFILE loads: its args go to every job of the node, in memory.
const MAX_CACHE_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A regular file's text, up to [`MAX_CACHE_FILE_BYTES`]: a device (`/dev/zero`) or a pipe
/// would fill the memory, or block the job past its timeout.
fn read_cache_file(path: &str) -> std::io::Result<String> {
    use std::{io::Read, os::unix::fs::OpenOptionsExt};
    // Non-blocking: opening a pipe to read would wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_CACHE_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "{} bytes, over the {} MiB a cache file may hold",
            meta.len(),
            MAX_CACHE_FILE_BYTES >> 20
        )));
    }
    let mut text = String::new();
    file.take(MAX_CACHE_FILE_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

async fn cachefile(path: &str, ctx: &Context<'_>) -> Finished {
    let path = match render_path(path, &ctx.args()) {
        Ok(p) => p,
        Err(f) => return f,
    };
    let loaded = {
        let path = path.clone();
        off_thread("CACHEFILE", move || {
            blocking_step("cachefile", Path::new(&path));
            load_cache_file(&path)
        })
        .await
    };
    match loaded {
        Ok(Ok(map)) => {
            let n = map.len();
            ctx.cache.merge_args_of(Some(ctx.run_id), map, true);
            Finished::ok("Cache file loaded", format!("{n} keys from {path}"))
        }
        Ok(Err(f)) => f,
        Err(e) => Finished::fail(e, ""),
    }
}

/// CACHEFILE's reading and parsing (on a blocking thread): the mapping in the file at
/// `path`, or the failure to report.
fn load_cache_file(path: &str) -> Result<Map<String, Value>, Finished> {
    let text = read_cache_file(path)
        .map_err(|e| Finished::fail(format!("cannot read {path}: {e}"), ""))?;
    if let Some(why) = crate::yaml_text::refusal(&text) {
        return Err(Finished::fail(format!("{path}: {why}"), ""));
    }
    match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Finished::fail(
            format!("{path} is not a YAML or JSON mapping"),
            "",
        )),
        Err(e) => Err(Finished::fail(format!("{path}: {e}"), "")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::cache::DEFAULT_TTL;

    /// A mesh of one node, `n1`, whose QUERY set is this node's value.
    struct OneNode;

    impl Coordinator for OneNode {
        fn query(
            &self,
            _: &str,
            name: &str,
            value: Value,
            _: bool,
        ) -> BoxFuture<'static, Result<Option<Value>, String>> {
            let set = json!({ "query": { "n1": { name: value } } });
            Box::pin(async move { Ok(Some(set)) })
        }

        fn job_wait(
            &self,
            _: &str,
            _: &str,
            _: &[String],
        ) -> BoxFuture<'static, Result<mpsc::Receiver<(String, String)>, String>> {
            Box::pin(async { Err("no JOB_WAIT here".to_string()) })
        }

        fn fetch_blob(&self, _: &str, _: &FileRef) -> BoxFuture<'static, Result<PathBuf, String>> {
            Box::pin(async { Err("no files here".to_string()) })
        }

        fn discard_blob(&self, _: Fingerprint) {}
    }

    /// A cache file the parser would take minutes over (nesting 100 000 deep) is refused at
    /// once, named by line and column; a mapping loads.
    #[test]
    fn a_cache_file_nested_too_deep_is_refused_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.yaml");
        std::fs::write(&path, format!("a: 1\nb: {}\n", "[".repeat(100_000))).unwrap();
        let path = path.to_str().unwrap();
        let f = load_cache_file(path).unwrap_err();
        assert!(
            f.stderr.ends_with(
                "cache.yaml: YAML nested too deep at line 2 column 1004: more \
                 than 1000 lists or mappings inside each other"
            ),
            "{f:?}"
        );
        std::fs::write(path, "a: 1\nb: [x]\n").unwrap();
        assert_eq!(load_cache_file(path).unwrap().len(), 2);
    }

    /// WAIT ends at the job's deadline, saying so: a wait of seconds past it, and a command
    /// retried past it (between tries, with how many were made).
    #[tokio::test]
    async fn a_wait_ends_at_the_jobs_deadline() {
        let cache = Cache::in_memory(DEFAULT_TTL);
        let mut ctx = context(&cache, &OneNode);
        let wait = |wait| Component::Wait { wait };
        let started = Instant::now();
        // Said in whole seconds: 1.1 s and 1.7 s (below) are "1 s" and "2 s" even a few
        // hundred ms late.
        ctx.deadline = started + Duration::from_millis(1100);
        let f = run(&wait(crate::spec::WaitFor::Seconds(5.0)), &ctx).await;
        assert!(!f.success, "{f:?}");
        assert_eq!(
            f.info,
            "timed out after 1 s (the job's --timeout), before the wait of 5 s ended"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        ctx.deadline = Instant::now() + Duration::from_secs(30);
        let f = run(&wait(crate::spec::WaitFor::Seconds(0.1)), &ctx).await;
        assert!(f.success && f.stdout == "waited 0.1 s", "{f:?}");

        // A wait as long as the timeout fits it (the wait starts a moment after the job's
        // clock): `WAIT --seconds 600` under the default timeout of 600 s succeeds.
        ctx.deadline = Instant::now() + Duration::from_millis(300);
        let f = run(&wait(crate::spec::WaitFor::Seconds(0.3)), &ctx).await;
        assert!(f.success && f.stdout == "waited 0.3 s", "{f:?}");

        let started = Instant::now();
        ctx.deadline = started + Duration::from_millis(1700);
        let retried = crate::spec::WaitFor::Command {
            command: "echo not yet >&2; false".into(),
            retry: 10,
            retry_wait: 1.0,
        };
        let f = run(&wait(retried), &ctx).await;
        assert!(!f.success, "{f:?}");
        assert_eq!(
            f.info,
            "timed out after 2 s (the job's --timeout), condition not met after 2 tries: \
             echo not yet >&2; false"
        );
        assert_eq!(f.stderr, "not yet");
        assert!(started.elapsed() < Duration::from_millis(2500));
    }

    fn context<'a>(cache: &'a Cache, coordinator: &'a OneNode) -> Context<'a> {
        Context {
            job_id: "job",
            run_id: "run",
            cache,
            sink: None,
            deadline: Instant::now() + Duration::from_secs(30),
            coordinator: Some(coordinator),
            processes: None,
            queue: None,
            landing_lock: None,
        }
    }

    /// Blocking steps made slow, by step and path ([`blocking_step`]).
    static SLOW_STEPS: std::sync::Mutex<Vec<(&'static str, PathBuf, Duration)>> =
        std::sync::Mutex::new(Vec::new());

    /// Makes the blocking `step` on `path` take `pause` longer.
    pub(super) fn slow_step(step: &'static str, path: &Path, pause: Duration) {
        SLOW_STEPS.lock().unwrap_or_else(|p| p.into_inner()).push((
            step,
            path.to_path_buf(),
            pause,
        ));
    }

    /// The pause set for the blocking `step` on `path`, if any.
    pub(super) fn pause_if_slow(step: &str, path: &Path) {
        let pause = SLOW_STEPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(s, p, _)| *s == step && p == path)
            .map(|(_, _, pause)| *pause);
        if let Some(pause) = pause {
            std::thread::sleep(pause);
        }
    }

    /// Slow file system, name service or parsing work of some jobs (a CACHEFILE of a large
    /// file, a WORKDIR on a slow disk, an ADD whose owner LDAP looks up) holds up no other
    /// job, though the executor runs them all on one thread: a RUN beside them times out at
    /// its own timeout, not once they are done.
    #[tokio::test]
    async fn slow_blocking_work_holds_up_no_other_job() {
        use crate::executor::{ExecEvent, Executor, ExecutorConfig, QueueKind, Work};
        let dir = tempfile::tempdir().unwrap();
        let pause = Duration::from_secs(3);
        let vars = dir.path().join("vars.yaml");
        std::fs::write(&vars, "k: v\n").unwrap();
        let made = dir.path().join("made");
        let dest = dir.path().join("dest");
        slow_step("cachefile", &vars, pause);
        slow_step("workdir", &made, pause);
        slow_step("check", &dest, pause);
        let cache = Arc::new(Cache::in_memory(DEFAULT_TTL));
        let config = crate::executor::ExecutorConfig {
            own_thread: true,
            ..ExecutorConfig::default()
        };
        let (exec, mut events) = Executor::start(cache, config);
        let work = |job_id: &str, verb: &str, inline: String, stream: bool| {
            let mut spec = match crate::JobSpec::parse(verb, &inline, &Default::default()) {
                Ok(crate::ParseOutcome::Spec(s)) => s,
                other => panic!("{other:?}"),
            };
            if let Component::Add(t) = &mut spec.component {
                t.file = Some(FileRef {
                    name: "src".into(),
                    size: 0,
                    hash: Fingerprint(*blake3::hash(b"").as_bytes()),
                    chunks: Vec::new(),
                });
            }
            Work {
                job_id: job_id.into(),
                run_id: "run".into(),
                parent_id: job_id.into(),
                queue: QueueKind::Async,
                fingerprint: spec.fingerprint(),
                spec,
                stream,
            }
        };
        let next = async |events: &mut mpsc::Receiver<ExecEvent>| {
            tokio::time::timeout(Duration::from_secs(60), events.recv())
                .await
                .expect("the executor went quiet")
                .expect("the executor stopped")
        };
        let command = "--skip-cache --timeout 1 echo started; sleep 30";
        exec.submit(work("run", "RUN", command.into(), true))
            .await
            .unwrap();
        // Once it runs, its timeout set, the slow jobs come.
        match next(&mut events).await {
            ExecEvent::Output { job_id, .. } if job_id == "run" => {}
            other => panic!("{other:?}"),
        }
        let slow = [
            ("cachefile", "CACHEFILE", vars.display().to_string()),
            ("workdir", "WORKDIR", made.display().to_string()),
            ("add", "ADD", format!("src {}", dest.display())),
        ];
        for (job_id, verb, inline) in &slow {
            exec.submit(work(job_id, verb, inline.clone(), false))
                .await
                .unwrap();
        }
        let mut done = HashMap::new();
        while done.len() < 4 {
            if let ExecEvent::Finished(o) = next(&mut events).await {
                done.insert(o.job_id.clone(), o);
            }
        }
        let run = &done["run"];
        assert!(run.info.starts_with("timed out after 1 s"), "{run:?}");
        let outlasted: Vec<String> = slow
            .iter()
            .map(|(job_id, ..)| &done[*job_id])
            .inspect(|o| assert!(o.execution_secs >= 3.0, "not slowed: {o:?}"))
            .filter(|o| run.execution_secs >= o.execution_secs)
            .map(|o| format!("{} ({:.1} s)", o.job_id, o.execution_secs))
            .collect();
        assert!(
            outlasted.is_empty(),
            "the RUN ended after {:.1} s, not before slow jobs beside it: {}",
            run.execution_secs,
            outlasted.join(", ")
        );
    }

    fn component(verb: &str, inline: &str) -> Component {
        match crate::JobSpec::parse(verb, inline, &Default::default()) {
            Ok(crate::ParseOutcome::Spec(s)) => s.component,
            other => panic!("{other:?}"),
        }
    }

    /// A QUERY run again brings the node's value again: it replaces the one before, and a
    /// value the node changed since (a key gone from a map) is replaced too.
    #[tokio::test]
    async fn a_query_run_again_replaces_its_values() {
        let cache = Cache::in_memory(DEFAULT_TTL);
        let ctx = context(&cache, &OneNode);
        assert!(run(&component("ARG", "lst [1, 2]"), &ctx).await.success);
        for _ in 0..3 {
            let f = run(&component("QUERY", "lst"), &ctx).await;
            assert!(f.success, "{f:?}");
        }
        assert_eq!(cache.args()["query"], json!({"n1": {"lst": [1, 2]}}));
        assert_eq!(
            cache.args_for_run("run")["query"],
            json!({"n1": {"lst": [1, 2]}})
        );
        assert!(
            run(&component("ARG", "m {'a': 1, 'b': 2}"), &ctx)
                .await
                .success
        );
        assert!(run(&component("QUERY", "m"), &ctx).await.success);
        assert!(run(&component("ARG", "m {'a': 1}"), &ctx).await.success);
        assert!(run(&component("QUERY", "m"), &ctx).await.success);
        assert_eq!(
            cache.args()["query"],
            json!({"n1": {"lst": [1, 2], "m": {"a": 1}}})
        );
    }

    /// An env no process environment can hold, in the cache (left by an older release, set
    /// by hand): RUN and WAIT fail naming it, rather than with a spawn error that names
    /// nothing.
    #[tokio::test]
    async fn a_cached_env_a_process_cannot_take_is_named() {
        for (name, value, said) in [
            ("BAD", "a\0b", "the value of env BAD holds a NUL byte"),
            ("BAD=X", "v", "the env name 'BAD=X' holds '='"),
            ("BAD\0X", "v", "the env name 'BAD\\0X' holds a NUL byte"),
        ] {
            let cache = Cache::in_memory(DEFAULT_TTL);
            cache.merge_envs(Map::from_iter([(name.into(), json!(value))]), false);
            let ctx = context(&cache, &OneNode);
            for (verb, inline) in [
                ("RUN", "true"),
                ("RUN", "--no-block true"),
                ("WAIT", "--cmd --retry 1 true"),
            ] {
                let f = run(&component(verb, inline), &ctx).await;
                assert!(!f.success, "{verb} {inline}: {f:?}");
                assert!(
                    f.stderr.contains(said) || f.info.contains(said),
                    "{verb} {inline}: {f:?}"
                );
            }
        }
    }

    /// An ENV whose value renders with NUL fails naming it, and sets nothing.
    #[tokio::test]
    async fn an_env_rendered_with_nul_is_refused() {
        let cache = Cache::in_memory(DEFAULT_TTL);
        let ctx = context(&cache, &OneNode);
        assert!(run(&component("ARG", r#"nul "a\0b""#), &ctx).await.success);
        let f = run(&component("ENV", "E {{ nul }}"), &ctx).await;
        assert!(!f.success, "{f:?}");
        assert!(
            f.stderr.starts_with("the value of env E holds a NUL byte"),
            "{f:?}"
        );
        assert!(cache.envs().is_empty());
        assert!(run(&component("RUN", "true"), &ctx).await.success);
    }
}
