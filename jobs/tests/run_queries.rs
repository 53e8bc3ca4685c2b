//! Two runs set the same names on one node at once (the same orchestration submitted from two
//! nodes): each run's later jobs see what its own QUERY collected and its own ARGs and ENVs
//! set, although the other run's came in after them.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

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
/// releases J.
struct Mesh {
    sets: HashMap<String, (Arc<Notify>, String)>,
    /// Each QUERY job, as it starts waiting for its set.
    asked: mpsc::Sender<String>,
}

impl Coordinator for Mesh {
    fn query(
        &self,
        job_id: &str,
        _: &str,
        _: Value,
        _: bool,
    ) -> BoxFuture<'static, Result<Option<Value>, String>> {
        let set = self.sets.get(job_id).cloned();
        let _ = self.asked.try_send(job_id.to_string());
        Box::pin(async move {
            let (release, value) = set.ok_or("no such QUERY")?;
            release.notified().await;
            Ok(Some(json!({ "query": { "n1": { "x": value } } })))
        })
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

async fn next_done(events: &mut mpsc::Receiver<ExecEvent>) -> Outcome {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
            Ok(Some(ExecEvent::Finished(o))) => return o,
            Ok(Some(ExecEvent::Output { .. })) => continue,
            other => panic!("no job finished: {other:?}"),
        }
    }
}

#[tokio::test]
async fn each_run_renders_with_the_values_its_own_query_collected() {
    let (release_a, release_b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let sets = HashMap::from([
        (
            "a-query".to_string(),
            (Arc::clone(&release_a), "A".to_string()),
        ),
        (
            "b-query".to_string(),
            (Arc::clone(&release_b), "B".to_string()),
        ),
    ]);
    let cache = Arc::new(Cache::in_memory(DEFAULT_TTL));
    let (asked, mut waiting) = mpsc::channel(8);
    let config = ExecutorConfig {
        coordinator: Some(Arc::new(Mesh { sets, asked })),
        ..ExecutorConfig::default()
    };
    let (exec, mut events) = Executor::start(Arc::clone(&cache), config);
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
    let cache = Arc::new(Cache::in_memory(DEFAULT_TTL));
    let (exec, mut events) = Executor::start(Arc::clone(&cache), ExecutorConfig::default());
    for w in [
        work("a-arg", "run-a", "ARG", "x A"),
        work("a-env", "run-a", "ENV", "E A"),
        work("a-wait", "run-a", "WAIT", "--seconds 1"),
        work("a-echo", "run-a", "RUN", "--skip-cache echo {{ x }} $E"),
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
    while done.len() < 5 {
        let o = next_done(&mut events).await;
        done.insert(o.job_id.clone(), o);
    }
    assert!(done["b-echo"].finished_unix_ms <= done["a-echo"].started_unix_ms);
    assert_eq!(done["a-echo"].stdout.trim(), "A A", "{:?}", done["a-echo"]);
    assert_eq!(done["b-echo"].stdout.trim(), "B B", "{:?}", done["b-echo"]);
    // The node keeps what was set last, for later runs.
    assert_eq!(cache.args()["x"], json!("B"));
    assert_eq!(cache.envs_for_run("run-c"), vec![("E".into(), "B".into())]);
}
