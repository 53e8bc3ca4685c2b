//! Runs that meet on one node: what one run's jobs do while another run's wait, and what
//! each sees of the other.
//!
//! - A synchronous job that waits for other nodes (QUERY, JOB_WAIT) lends the node's queue to
//!   other runs: two submitters' runs, each with a QUERY, may reach two nodes in opposite
//!   orders, and each node's QUERY would otherwise wait for the other node's value while that
//!   node's queue is held by the other run's QUERY. Its own run's jobs stay behind it.
//! - Two runs that set the same names (the same orchestration submitted from two nodes at
//!   once): each run's later jobs see what its own QUERY collected and its own ARGs and ENVs
//!   set, although the other run's came in after them.
//! - A JOB_WAIT ends with one answer from each node it names, however often it names it.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jobs::{
    Fingerprint, JobSpec, ParseOutcome,
    cache::{Cache, DEFAULT_TTL},
    components::{BoxFuture, Coordinator},
    executor::{ExecEvent, Executor, ExecutorConfig, Outcome, QueueKind, Work},
    spec::FileRef,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

/// A mesh whose QUERY of job J yields `{"query": {"n1": {"x": VALUE_J}}}` once the test
/// releases J, and whose JOB_WAITs hear at once that every node named finished the job.
#[derive(Default)]
struct Mesh {
    sets: HashMap<String, (Arc<Notify>, String)>,
    /// Each QUERY job, as it starts waiting for its set.
    asked: Option<mpsc::Sender<String>>,
    /// The JOB_WAIT channels, kept open as a node keeps them while the wait lasts.
    waits: Mutex<Vec<mpsc::Sender<(String, String)>>>,
    /// The value each QUERY job sent for this node, by job.
    sent: Arc<Mutex<HashMap<String, Value>>>,
}

impl Mesh {
    /// The QUERY of `job_id` gets `value` once `release` is notified.
    fn query_set(mut self, job_id: &str, release: &Arc<Notify>, value: &str) -> Self {
        self.sets
            .insert(job_id.into(), (Arc::clone(release), value.into()));
        self
    }
}

impl Coordinator for Mesh {
    fn query(
        &self,
        job_id: &str,
        _: &str,
        value: Value,
        _: bool,
    ) -> BoxFuture<'static, Result<Option<Value>, String>> {
        self.sent.lock().unwrap().insert(job_id.to_string(), value);
        let set = self.sets.get(job_id).cloned();
        if let Some(asked) = &self.asked {
            let _ = asked.try_send(job_id.to_string());
        }
        Box::pin(async move {
            let (release, value) = set.ok_or("no such QUERY")?;
            release.notified().await;
            Ok(Some(json!({ "query": { "n1": { "x": value } } })))
        })
    }

    /// One answer from each node named (a node named twice answers once, as over the mesh).
    fn job_wait(
        &self,
        _: &str,
        _: &str,
        nodes: &[String],
    ) -> BoxFuture<'static, Result<mpsc::Receiver<(String, String)>, String>> {
        let mut unique = nodes.to_vec();
        unique.sort();
        unique.dedup();
        let (tx, rx) = mpsc::channel(unique.len().max(1));
        for node in unique {
            let _ = tx.try_send((node, "success".to_string()));
        }
        self.waits.lock().unwrap().push(tx);
        Box::pin(async move { Ok(rx) })
    }

    fn fetch_blob(&self, _: &str, _: &FileRef) -> BoxFuture<'static, Result<PathBuf, String>> {
        Box::pin(async { Err("no files here".to_string()) })
    }

    fn discard_blob(&self, _: Fingerprint) {}
}

fn start(mesh: Mesh) -> (Arc<Cache>, Executor, mpsc::Receiver<ExecEvent>) {
    let cache = Arc::new(Cache::in_memory(DEFAULT_TTL));
    let config = ExecutorConfig {
        coordinator: Some(Arc::new(mesh)),
        ..ExecutorConfig::default()
    };
    let (exec, events) = Executor::start(Arc::clone(&cache), config);
    (cache, exec, events)
}

fn work(job_id: &str, run_id: &str, verb: &str, inline: &str) -> Work {
    work_in(QueueKind::Sync, job_id, run_id, verb, inline)
}

fn work_in(queue: QueueKind, job_id: &str, run_id: &str, verb: &str, inline: &str) -> Work {
    let spec: JobSpec = match JobSpec::parse(verb, inline, &Default::default()).unwrap() {
        ParseOutcome::Spec(s) => s,
        ParseOutcome::Help(h) => panic!("{h}"),
    };
    Work {
        job_id: job_id.into(),
        run_id: run_id.into(),
        parent_id: format!("{run_id}-parent"),
        queue,
        fingerprint: spec.fingerprint(),
        spec,
        stream: false,
    }
}

/// The next finished job, or `None` if none finishes within `within`.
async fn finished_within(
    events: &mut mpsc::Receiver<ExecEvent>,
    within: Duration,
) -> Option<Outcome> {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, events.recv()).await {
            Ok(Some(ExecEvent::Finished(o))) => return Some(o),
            Ok(Some(ExecEvent::Output { .. })) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

async fn next_done(events: &mut mpsc::Receiver<ExecEvent>) -> Outcome {
    finished_within(events, Duration::from_secs(20))
        .await
        .expect("a job finishes")
}

#[tokio::test]
async fn a_waiting_query_lets_another_run_go_ahead_and_keeps_its_own_run_behind_it() {
    let release = Arc::new(Notify::new());
    let (_, exec, mut events) = start(Mesh::default().query_set("a-query", &release, "A"));
    exec.submit(work("a-query", "run-a", "QUERY", "x"))
        .await
        .unwrap();
    exec.submit(work("a-after", "run-a", "RUN", "--skip-cache echo a"))
        .await
        .unwrap();
    exec.submit(work("b-run", "run-b", "RUN", "--skip-cache echo b"))
        .await
        .unwrap();
    // While run A's QUERY waits for the other nodes, run B's job runs; run A's next job does
    // not.
    assert_eq!(next_done(&mut events).await.job_id, "b-run");
    assert!(
        finished_within(&mut events, Duration::from_millis(500))
            .await
            .is_none()
    );
    // The aggregate comes: the QUERY finishes, then its run's next job runs.
    let released = Instant::now();
    release.notify_one();
    let mut done = HashMap::new();
    while done.len() < 2 {
        let o = next_done(&mut events).await;
        done.insert(o.job_id.clone(), o);
    }
    assert!(done["a-query"].state.is_ok(), "{:?}", done["a-query"]);
    assert!(done["a-after"].started_unix_ms >= done["a-query"].finished_unix_ms);
    assert!(released.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_job_wait_naming_a_node_twice_ends_with_its_one_answer() {
    let (_, exec, mut events) = start(Mesh::default());
    // As a spec from a submitter that does not fold repeated names would have it.
    let mut wait = work("w", "run-a", "JOB_WAIT", "abcdef0123 --identity n1");
    wait.spec.component = jobs::Component::JobWait {
        fingerprint: "abcdef0123".into(),
        identities: vec!["n1".into(), "n2".into(), "n1".into()],
    };
    exec.submit(wait).await.unwrap();
    // Not at its timeout (600 s): as soon as n1 and n2 have answered.
    let done = next_done(&mut events).await;
    assert!(done.state.is_ok(), "{done:?}");
    assert!(
        done.info
            .ends_with("completed on all coordinated targets: n1: success, n2: success"),
        "{done:?}"
    );
}

#[tokio::test]
async fn each_run_renders_with_the_values_its_own_query_collected() {
    let (release_a, release_b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (asked, mut waiting) = mpsc::channel(8);
    let mesh = Mesh {
        asked: Some(asked),
        ..Mesh::default()
    };
    let mesh = mesh
        .query_set("a-query", &release_a, "A")
        .query_set("b-query", &release_b, "B");
    let (cache, exec, mut events) = start(mesh);
    for w in [
        work("a-query", "run-a", "QUERY", "--skip-cache x"),
        work("a-wait", "run-a", "WAIT", "--seconds 1"),
        work(
            "a-echo",
            "run-a",
            "RUN",
            "--skip-cache echo {{ query.n1.x }}",
        ),
        work("b-query", "run-b", "QUERY", "--skip-cache x"),
    ] {
        exec.submit(w).await.unwrap();
    }
    // Both QUERYs wait (each lends the queue to the other run). Run A's gets its set first;
    // while A's next job waits a second, run B's QUERY of the same name merges its set into
    // the node's args.
    let mut queries = vec![waiting.recv().await.unwrap(), waiting.recv().await.unwrap()];
    queries.sort();
    assert_eq!(queries, ["a-query", "b-query"]);
    release_a.notify_one();
    assert_eq!(next_done(&mut events).await.job_id, "a-query");
    release_b.notify_one();
    let mut done = HashMap::new();
    while done.len() < 3 {
        let o = next_done(&mut events).await;
        done.insert(o.job_id.clone(), o);
    }
    assert_eq!(cache.args()["query"]["n1"]["x"], json!("B"), "merged last");
    assert!(done["b-query"].finished_unix_ms <= done["a-echo"].started_unix_ms);
    assert!(done["a-echo"].state.is_ok(), "{:?}", done["a-echo"]);
    assert_eq!(done["a-echo"].stdout.trim(), "A", "{:?}", done["a-echo"]);
}

#[tokio::test]
async fn each_run_sees_the_args_and_envs_it_set_itself() {
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let answered = Arc::new(Notify::new());
    answered.notify_one();
    let mesh = Mesh {
        sent: Arc::clone(&sent),
        ..Mesh::default()
    };
    let (cache, exec, mut events) = start(mesh.query_set("a-query", &answered, "-"));
    for w in [
        work("a-arg", "run-a", "ARG", "x A"),
        work("a-env", "run-a", "ENV", "E A"),
        work("a-wait", "run-a", "WAIT", "--seconds 1"),
        work("a-echo", "run-a", "RUN", "--skip-cache echo {{ x }} $E"),
        work("a-query", "run-a", "QUERY", "--skip-cache x"),
    ] {
        exec.submit(w).await.unwrap();
    }
    assert_eq!(next_done(&mut events).await.job_id, "a-arg");
    assert_eq!(next_done(&mut events).await.job_id, "a-env");
    // While run A waits, run B (an async parent: its own queue) sets the same names.
    for w in [
        work_in(QueueKind::Async, "b-arg", "run-b", "ARG", "x B"),
        work_in(QueueKind::Async, "b-env", "run-b", "ENV", "E B"),
        work_in(
            QueueKind::Async,
            "b-echo",
            "run-b",
            "RUN",
            "--skip-cache echo {{ x }} $E",
        ),
    ] {
        exec.submit(w).await.unwrap();
    }
    let mut done = HashMap::new();
    while done.len() < 6 {
        let o = next_done(&mut events).await;
        done.insert(o.job_id.clone(), o);
    }
    assert!(done["b-echo"].finished_unix_ms <= done["a-echo"].started_unix_ms);
    // Its QUERY sends the value the run sees.
    assert_eq!(sent.lock().unwrap()["a-query"], json!("A"));
    assert_eq!(done["a-echo"].stdout.trim(), "A A", "{:?}", done["a-echo"]);
    assert_eq!(done["b-echo"].stdout.trim(), "B B", "{:?}", done["b-echo"]);
    // The node keeps what was set last, for later runs.
    assert_eq!(cache.args()["x"], json!("B"));
    assert_eq!(cache.envs_for_run("run-c"), vec![("E".into(), "B".into())]);
}

/// What a run's own jobs write later (`--stdout-arg`, CACHEFILE) and evict shows to its next
/// jobs: its view of the args is not a copy frozen at its ARG.
#[tokio::test]
async fn a_runs_own_later_writes_and_evictions_show_to_it() {
    let (_, exec, mut events) = start(Mesh::default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vars.yaml");
    std::fs::write(&file, "y: from-file\n").unwrap();
    let jobs = [
        work("arg", "run-a", "ARG", "x first"),
        work(
            "out",
            "run-a",
            "RUN",
            "--skip-cache --stdout-arg x echo second",
        ),
        work("show-x", "run-a", "RUN", "--skip-cache echo {{ x }}"),
        work("arg-y", "run-a", "ARG", "y from-arg"),
        work("file", "run-a", "CACHEFILE", &file.display().to_string()),
        work("show-y", "run-a", "RUN", "--skip-cache echo {{ y }}"),
        work("evict", "run-a", "CACHEEVICT", "args"),
        work(
            "show-none",
            "run-a",
            "RUN",
            "--skip-cache echo {{ x | default('none') }}",
        ),
    ];
    let count = jobs.len();
    for w in jobs {
        exec.submit(w).await.unwrap();
    }
    let mut done = HashMap::new();
    while done.len() < count {
        let o = next_done(&mut events).await;
        done.insert(o.job_id.clone(), o);
    }
    let shown = |job: &str| done[job].stdout.trim().to_string();
    assert_eq!(shown("show-x"), "second", "{:?}", done["show-x"]);
    assert_eq!(shown("show-y"), "from-file", "{:?}", done["show-y"]);
    assert_eq!(shown("show-none"), "none", "{:?}", done["show-none"]);
}
