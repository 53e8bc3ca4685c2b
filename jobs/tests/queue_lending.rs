//! A synchronous job that waits for other nodes lends the node's queue to other runs.
//!
//! Two submitters' runs, each with a QUERY, may reach two nodes in opposite orders: each
//! node's QUERY then waits for the other node's value while that node's queue is held by the
//! other run's QUERY. Here the node's side of that: a QUERY waiting for its aggregate lets a
//! job of another run go ahead, while the jobs of its own run stay behind it. Also here: a
//! JOB_WAIT ends with one answer from each node it names, however often it names it.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use jobs::{
    Fingerprint, JobSpec, ParseOutcome,
    cache::{Cache, DEFAULT_TTL},
    components::{BoxFuture, Coordinator},
    executor::{ExecEvent, Executor, ExecutorConfig, Outcome, QueueKind, Work},
    spec::FileRef,
};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

/// A mesh whose QUERY aggregates come only when the test says so.
struct SlowMesh {
    release: Arc<Notify>,
    /// The JOB_WAIT channels, kept open as a node keeps them while the wait lasts.
    waits: std::sync::Mutex<Vec<mpsc::Sender<(String, String)>>>,
}

impl Coordinator for SlowMesh {
    fn query(
        &self,
        _: &str,
        _: &str,
        _: Value,
        wait: bool,
    ) -> BoxFuture<'static, Result<Option<Value>, String>> {
        let release = Arc::clone(&self.release);
        Box::pin(async move {
            if !wait {
                return Ok(None);
            }
            release.notified().await;
            Ok(Some(serde_json::json!({ "query": {} })))
        })
    }

    /// Every node named has finished the job: one answer from each (a node named twice
    /// answers once, as over the mesh).
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

fn work(job_id: &str, run_id: &str, verb: &str, inline: &str) -> Work {
    let spec: JobSpec = match JobSpec::parse(verb, inline, &Default::default()).unwrap() {
        ParseOutcome::Spec(s) => s,
        ParseOutcome::Help(h) => panic!("{h}"),
    };
    Work {
        job_id: job_id.into(),
        run_id: run_id.into(),
        parent_id: format!("{job_id}-parent"),
        queue: QueueKind::Sync,
        fingerprint: spec.fingerprint(),
        spec,
        stream: false,
    }
}

/// The next finished job, or `None` if none finishes within `within`.
async fn next_done(events: &mut mpsc::Receiver<ExecEvent>, within: Duration) -> Option<Outcome> {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, events.recv()).await {
            Ok(Some(ExecEvent::Finished(o))) => return Some(o),
            Ok(Some(ExecEvent::Output { .. })) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_waiting_query_lets_another_run_go_ahead_and_keeps_its_own_run_behind_it() {
    let release = Arc::new(Notify::new());
    let config = ExecutorConfig {
        coordinator: Some(Arc::new(SlowMesh {
            release: Arc::clone(&release),
            waits: Default::default(),
        })),
        ..ExecutorConfig::default()
    };
    let (exec, mut events) = Executor::start(Arc::new(Cache::in_memory(DEFAULT_TTL)), config);
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
    let first = next_done(&mut events, Duration::from_secs(20)).await;
    assert_eq!(first.map(|o| o.job_id).as_deref(), Some("b-run"));
    assert!(
        next_done(&mut events, Duration::from_millis(500))
            .await
            .is_none()
    );
    // The aggregate comes: the QUERY finishes, then its run's next job runs.
    let released = Instant::now();
    release.notify_one();
    let mut done = HashMap::new();
    while done.len() < 2 {
        let o = next_done(&mut events, Duration::from_secs(20))
            .await
            .expect("run A's jobs finish once the aggregate came");
        done.insert(o.job_id.clone(), o);
    }
    assert!(done["a-query"].state.is_ok(), "{:?}", done["a-query"]);
    assert!(done["a-after"].started_unix_ms >= done["a-query"].finished_unix_ms);
    assert!(released.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_job_wait_naming_a_node_twice_ends_with_its_one_answer() {
    let config = ExecutorConfig {
        coordinator: Some(Arc::new(SlowMesh {
            release: Arc::new(Notify::new()),
            waits: Default::default(),
        })),
        ..ExecutorConfig::default()
    };
    let (exec, mut events) = Executor::start(Arc::new(Cache::in_memory(DEFAULT_TTL)), config);
    // As a spec from a submitter that does not fold repeated names would have it.
    let mut wait = work("w", "run-a", "JOB_WAIT", "abcdef0123 --identity n1");
    wait.spec.component = jobs::Component::JobWait {
        fingerprint: "abcdef0123".into(),
        identities: vec!["n1".into(), "n2".into(), "n1".into()],
    };
    exec.submit(wait).await.unwrap();
    // Not at its timeout (600 s): as soon as n1 and n2 have answered.
    let done = next_done(&mut events, Duration::from_secs(20))
        .await
        .expect("the JOB_WAIT ends with the answers");
    assert!(done.state.is_ok(), "{done:?}");
    assert!(
        done.info
            .ends_with("completed on all coordinated targets: n1: success, n2: success"),
        "{done:?}"
    );
}
