//! The executor on this machine: real shells, real processes, real files.

use std::{collections::HashMap, sync::Arc, time::Duration};

use jobs::{
    JobSpec, ParseOutcome,
    cache::{Cache, DEFAULT_TTL},
    components::{OutputLine, OutputStream},
    executor::{ExecEvent, Executor, ExecutorConfig, Outcome, QueueKind, ResultState, Work},
};
use tokio::sync::mpsc;

fn spec(verb: &str, inline: &str) -> JobSpec {
    match JobSpec::parse(verb, inline, &Default::default()).unwrap() {
        ParseOutcome::Spec(s) => s,
        ParseOutcome::Help(h) => panic!("{h}"),
    }
}

struct Harness {
    exec: Executor,
    events: mpsc::Receiver<ExecEvent>,
    next: usize,
    outputs: HashMap<String, Vec<OutputLine>>,
}

impl Harness {
    fn new() -> Self {
        Harness::with(ExecutorConfig::default())
    }

    fn with(config: ExecutorConfig) -> Self {
        let cache = Arc::new(Cache::in_memory(DEFAULT_TTL));
        let (exec, events) = Executor::start(cache, config);
        Harness {
            exec,
            events,
            next: 0,
            outputs: HashMap::new(),
        }
    }

    /// Submits `VERB inline` in `parent`; returns the job id.
    async fn submit(&mut self, parent: &str, queue: QueueKind, verb: &str, inline: &str) -> String {
        self.submit_spec(parent, queue, spec(verb, inline), false)
            .await
    }

    async fn submit_spec(
        &mut self,
        parent: &str,
        queue: QueueKind,
        spec: JobSpec,
        stream: bool,
    ) -> String {
        self.next += 1;
        let job_id = format!("job-{}", self.next);
        self.exec
            .submit(Work {
                job_id: job_id.clone(),
                run_id: parent.to_string(),
                parent_id: parent.to_string(),
                queue,
                fingerprint: spec.fingerprint(),
                spec,
                stream,
            })
            .await
            .unwrap();
        job_id
    }

    /// Collects results until `n` jobs finished.
    async fn results(&mut self, n: usize) -> HashMap<String, Outcome> {
        let mut done = HashMap::new();
        while done.len() < n {
            let event = tokio::time::timeout(Duration::from_secs(60), self.events.recv())
                .await
                .expect("executor went quiet")
                .expect("executor stopped");
            match event {
                ExecEvent::Finished(o) => {
                    done.insert(o.job_id.clone(), o);
                }
                ExecEvent::Output { job_id, line, .. } => {
                    self.outputs.entry(job_id).or_default().push(line)
                }
            }
        }
        done
    }
}

#[tokio::test]
async fn run_reports_output_exit_code_and_caches_success() {
    let mut h = Harness::new();
    let ok = h
        .submit("p", QueueKind::Sync, "RUN", r#"echo "a   b"; echo err >&2"#)
        .await;
    let bad = h.submit("q", QueueKind::Sync, "RUN", "exit 3").await;
    // Bytes that are not UTF-8 are shown replaced, and the result says so.
    let binary = h
        .submit("b", QueueKind::Sync, "RUN", r"printf 'a\377b\n'")
        .await;
    let r = h.results(3).await;
    assert_eq!(r[&ok].state, ResultState::Success);
    assert_eq!(r[&ok].stdout, "a   b");
    assert_eq!(r[&ok].stderr, "err");
    assert_eq!(r[&bad].state, ResultState::Failed);
    assert!(r[&bad].info.starts_with("exit code 3"), "{}", r[&bad].info);
    assert_eq!(r[&binary].state, ResultState::Success);
    assert_eq!(r[&binary].stdout, "a\u{FFFD}b");
    assert_eq!(
        r[&binary].stderr,
        "[stdout had bytes that are not UTF-8 text; they are shown as U+FFFD]"
    );

    // The same job again is skipped; --skip-cache runs it.
    let again = h
        .submit(
            "p2",
            QueueKind::Sync,
            "RUN",
            r#"echo "a   b"; echo err >&2"#,
        )
        .await;
    let r = h.results(1).await;
    assert_eq!(r[&again].state, ResultState::Skipped);
    let mut s = spec("RUN", r#"echo "a   b"; echo err >&2"#);
    s.skip_cache = true;
    let forced = h.submit_spec("p3", QueueKind::Sync, s, false).await;
    assert_eq!(h.results(1).await[&forced].state, ResultState::Success);
}

/// A templated job's cached success counts for the args it rendered with only: once an arg
/// it reads changes, it runs again (then is skipped again); an arg it does not read changes
/// nothing.
#[tokio::test]
async fn a_templated_job_runs_again_when_the_args_it_reads_change() {
    let mut h = Harness::new();
    let step = async |h: &mut Harness, run: &str, verb: &str, inline: &str| {
        let id = h.submit(run, QueueKind::Sync, verb, inline).await;
        h.results(1).await.remove(&id).unwrap()
    };
    assert_eq!(
        step(&mut h, "a", "ARG", "x 1").await.state,
        ResultState::Success
    );
    let first = step(&mut h, "b", "RUN", "echo {{ x }}").await;
    assert_eq!(
        (first.state, first.stdout.as_str()),
        (ResultState::Success, "1")
    );
    assert_eq!(
        step(&mut h, "c", "RUN", "echo {{ x }}").await.state,
        ResultState::Skipped
    );
    // Another arg: the job does not read it.
    step(&mut h, "d", "ARG", "y 5").await;
    assert_eq!(
        step(&mut h, "e", "RUN", "echo {{ x }}").await.state,
        ResultState::Skipped
    );
    step(&mut h, "f", "ARG", "x 2").await;
    let again = step(&mut h, "g", "RUN", "echo {{ x }}").await;
    assert_eq!(
        (again.state, again.stdout.as_str()),
        (ResultState::Success, "2")
    );
    assert_eq!(
        step(&mut h, "h", "RUN", "echo {{ x }}").await.state,
        ResultState::Skipped
    );
    // A job without templates is skipped whatever the args.
    assert_eq!(
        step(&mut h, "i", "RUN", "echo plain").await.state,
        ResultState::Success
    );
    step(&mut h, "j", "ARG", "x 3").await;
    assert_eq!(
        step(&mut h, "k", "RUN", "echo plain").await.state,
        ResultState::Skipped
    );
}

#[tokio::test]
async fn output_without_newlines_is_kept_up_to_the_cap_and_a_peer_job_cannot_overflow_a_clock() {
    let mut h = Harness::new();
    // 10 MB on one "line": read in bounded pieces, the first MAX_OUTPUT_BYTES kept, the rest
    // cut.
    let long = h
        .submit(
            "p",
            QueueKind::Sync,
            "RUN",
            "head -c 10000000 /dev/zero | tr '\\0' a",
        )
        .await;
    // A job as a peer could send it, never parsed here: a timeout of u64::MAX seconds.
    let mut s = spec("RUN", "echo fine");
    s.timeout_secs = u64::MAX;
    let unbounded = h.submit_spec("q", QueueKind::Sync, s, false).await;
    let r = h.results(2).await;
    let out = &r[&long].stdout;
    assert_eq!(r[&long].state, ResultState::Success, "{}", r[&long].info);
    let kept = out.bytes().take_while(|b| *b == b'a').count();
    assert!(
        kept > jobs::components::MAX_OUTPUT_BYTES - 65536
            && kept <= jobs::components::MAX_OUTPUT_BYTES,
        "kept {kept} bytes"
    );
    assert!(
        out.ends_with("bytes]"),
        "{}",
        &out[out.len().saturating_sub(60)..]
    );
    assert_eq!(
        r[&unbounded].state,
        ResultState::Success,
        "{:?}",
        r[&unbounded]
    );
    assert_eq!(r[&unbounded].stdout, "fine");
}

/// A command the shell cannot be started with (one argument over the kernel's 128 KiB, once
/// rendered) fails
/// saying why where `--poll` looks (the info, cause first), and the info names a huge command
/// only in part: a result must stay small enough to send.
#[tokio::test]
async fn a_command_too_long_to_start_says_why_in_a_bounded_info() {
    let mut h = Harness::new();
    // Rendered to 200 005 bytes (a command written that long is refused when it is read).
    let job = h
        .submit("p", QueueKind::Sync, "RUN", r#"echo {{ "a" * 200000 }}"#)
        .await;
    let r = &h.results(1).await[&job];
    assert_eq!(r.state, ResultState::Failed);
    assert!(
        r.info
            .starts_with("cannot start /bin/sh: Argument list too long"),
        "{:?}",
        r.info.get(..200).unwrap_or(&r.info)
    );
    assert!(r.stderr.contains("Argument list too long"), "{}", r.stderr);
    assert!(r.info.len() < 17 * 1024, "{} bytes", r.info.len());
    assert!(
        r.info.ends_with("[the command is 200005 bytes long]"),
        "{:?}",
        r.info
            .get(r.info.len().saturating_sub(80)..)
            .unwrap_or(&r.info)
    );
}

#[tokio::test]
async fn a_failure_stops_the_rest_of_its_parent() {
    let mut h = Harness::new();
    let first = h
        .submit("p", QueueKind::Sync, "RUN", "sleep 0.2; false")
        .await;
    let second = h
        .submit(
            "p",
            QueueKind::Sync,
            "RUN",
            "--skip-cache touch /nonexistent-dir/never",
        )
        .await;
    let other = h
        .submit(
            "other",
            QueueKind::Sync,
            "RUN",
            "--skip-cache echo other parent",
        )
        .await;
    let r = h.results(3).await;
    assert_eq!(r[&first].state, ResultState::Failed);
    assert_eq!(r[&second].state, ResultState::Failed);
    assert!(
        r[&second]
            .info
            .contains(&format!("job {first} of this parent failed")),
        "{}",
        r[&second].info
    );
    assert_eq!(
        r[&other].state,
        ResultState::Success,
        "other parents carry on"
    );
    // A job of that parent arriving later is refused too.
    let late = h
        .submit("p", QueueKind::Sync, "RUN", "--skip-cache echo late")
        .await;
    let r = h.results(1).await;
    assert_eq!(r[&late].state, ResultState::Failed);
    assert!(r[&late].info.contains("earlier job of this parent failed"));
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let mut h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cmd = format!(
        "--timeout 1 sleep 60 & echo $! > {}; wait",
        pidfile.display()
    );
    let job = h.submit("p", QueueKind::Sync, "RUN", &cmd).await;
    let r = h.results(1).await;
    assert_eq!(r[&job].state, ResultState::Failed);
    assert!(r[&job].info.contains("timed out"), "{}", r[&job].info);
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The background sleep was killed with its group.
    assert!(ends_soon(pid).await, "process {pid} survived the timeout");
}

/// A job that times out keeps the output it printed before (the reason it hung is often in
/// it), and still says that it timed out.
#[tokio::test]
async fn a_timeout_keeps_the_output_read_before_it() {
    let mut h = Harness::new();
    let job = h
        .submit(
            "p",
            QueueKind::Sync,
            "RUN",
            "--skip-cache --timeout 2 echo partial; echo half >&2; sleep 101 & sleep 102",
        )
        .await;
    let r = h.results(1).await;
    let o = &r[&job];
    assert_eq!(o.state, ResultState::Failed, "{o:?}");
    assert!(o.info.starts_with("timed out after 2 s"), "{o:?}");
    assert_eq!(o.stdout, "partial", "{o:?}");
    assert_eq!(o.stderr, "half", "{o:?}");
    assert!(o.execution_secs < 10.0, "{o:?}");
}

/// Whether process `pid` is gone, or a zombie waiting for init, within a second.
async fn ends_soon(pid: i32) -> bool {
    for _ in 0..50 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A process the command leaves in the background holds the job's pipes; the job ends shortly
/// after its shell, says why, and leaves the process running: it is not killed when it
/// writes to its output later (its output is read and dropped).
#[tokio::test]
async fn a_background_process_holding_the_output_does_not_hold_the_job() {
    let mut h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cmd = format!(
        "--timeout 20 --skip-cache (sleep 2; echo later; echo to stderr >&2; sleep 60) & echo $! $$ > {}; echo started",
        pidfile.display()
    );
    let started = std::time::Instant::now();
    let job = h.submit("p", QueueKind::Sync, "RUN", &cmd).await;
    let r = h.results(1).await;
    let waited = started.elapsed();
    assert_eq!(r[&job].state, ResultState::Success, "{:?}", r[&job]);
    assert_eq!(r[&job].stdout, "started");
    assert!(
        r[&job].stderr.contains("still holds its output"),
        "{:?}",
        r[&job]
    );
    // Ended by the grace, long before the 20 s timeout (a generous bound for a slow machine).
    assert!(waited < Duration::from_secs(15), "took {waited:?}");
    let ids = std::fs::read_to_string(&pidfile).unwrap();
    let (pid, group): (i32, i32) = match ids.split_whitespace().collect::<Vec<_>>()[..] {
        [pid, group] => (pid.parse().unwrap(), group.parse().unwrap()),
        _ => panic!("{ids:?}"),
    };
    // Past its writes at 2 s, the background process still runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alive = !ends_soon(pid).await;
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(group),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(
        alive,
        "the background process {pid} died after the job ended"
    );
}

/// A job dropped before its shell ends (the node shutting down) takes its processes with it,
/// and the process log records the group while it runs.
#[tokio::test]
async fn a_dropped_job_kills_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let (log, _) = jobs::processes::ProcessLog::open(&dir.path().join("running-jobs")).unwrap();
    let cache = Cache::in_memory(DEFAULT_TTL);
    let job = spec(
        "RUN",
        &format!("sleep 60 & echo $! > {}; wait", pidfile.display()),
    );
    let ctx = jobs::components::Context {
        job_id: "j",
        run_id: "r",
        cache: &cache,
        sink: None,
        deadline: tokio::time::Instant::now() + Duration::from_secs(60),
        coordinator: None,
        processes: Some(&log),
        queue: None,
        landing_lock: None,
    };
    // Dropped once its background sleep is known to run.
    let mut run = Box::pin(jobs::components::run(&job.component, &ctx));
    let started = std::time::Instant::now();
    let pid: i32 = loop {
        tokio::select! {
            _ = &mut run => panic!("the job ran to its end"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
                if let Ok(pid) = text.trim().parse() {
                    break pid;
                }
                assert!(started.elapsed() < Duration::from_secs(10), "the job never started");
            }
        }
    };
    drop(run);
    assert!(
        ends_soon(pid).await,
        "process {pid} outlived its dropped job"
    );
    let logged = std::fs::read_to_string(dir.path().join("running-jobs")).unwrap();
    assert!(logged.lines().any(|l| l.starts_with('+')), "{logged}");
    assert!(logged.lines().any(|l| l.starts_with('-')), "{logged}");
}

/// `--no-block` starts the command and reports at once; the command goes on running.
#[tokio::test]
async fn no_block_leaves_the_command_running() {
    let mut h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    let job = h
        .submit(
            "p",
            QueueKind::Sync,
            "RUN",
            &format!(
                "--skip-cache --no-block sleep 0.5; touch {}",
                done.display()
            ),
        )
        .await;
    let r = h.results(1).await;
    assert_eq!(r[&job].state, ResultState::Success, "{:?}", r[&job]);
    assert!(r[&job].info.contains("started in the background"));
    for _ in 0..250 {
        if done.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the background command did not run to its end");
}

#[tokio::test]
async fn async_parents_run_side_by_side_and_sync_parents_in_turn() {
    let mut h = Harness::new();
    let a = h
        .submit("a", QueueKind::Async, "RUN", "--skip-cache sleep 0.5")
        .await;
    let b = h
        .submit("b", QueueKind::Async, "RUN", "--skip-cache sleep 0.5")
        .await;
    let s1 = h
        .submit("s1", QueueKind::Sync, "RUN", "--skip-cache sleep 0.3")
        .await;
    let s2 = h
        .submit("s2", QueueKind::Sync, "RUN", "--skip-cache sleep 0.3")
        .await;
    let r = h.results(4).await;
    let overlap = |x: &Outcome, y: &Outcome| {
        x.started_unix_ms < y.finished_unix_ms && y.started_unix_ms < x.finished_unix_ms
    };
    assert!(overlap(&r[&a], &r[&b]), "async parents overlap");
    assert!(overlap(&r[&a], &r[&s1]), "async runs beside sync");
    assert!(
        !overlap(&r[&s1], &r[&s2]),
        "sync parents share one serial queue"
    );
    assert!(
        r[&s1].finished_unix_ms <= r[&s2].started_unix_ms,
        "in arrival order"
    );
}

/// A cached `--stdout-arg` job is skipped while its arg is cached, and runs again once a
/// CACHEEVICT of args took the arg away (skipped, it would leave later jobs without it).
#[tokio::test]
async fn cached_stdout_arg_job_runs_again_after_its_arg_is_evicted() {
    let mut h = Harness::new();
    let set = "--stdout-arg greeting echo hello";
    let first = h.submit("a", QueueKind::Sync, "RUN", set).await;
    let cached = h.submit("b", QueueKind::Sync, "RUN", set).await;
    let evict = h.submit("c", QueueKind::Sync, "CACHEEVICT", "args").await;
    let again = h.submit("d", QueueKind::Sync, "RUN", set).await;
    let uses = h
        .submit("d", QueueKind::Sync, "RUN", "echo {{ greeting }} there")
        .await;
    let r = h.results(5).await;
    assert_eq!(r[&first].state, ResultState::Success, "{:?}", r[&first]);
    assert_eq!(r[&cached].state, ResultState::Skipped, "{:?}", r[&cached]);
    assert_eq!(r[&evict].state, ResultState::Success, "{:?}", r[&evict]);
    assert_eq!(r[&again].state, ResultState::Success, "{:?}", r[&again]);
    assert_eq!(r[&uses].stdout, "hello there", "{:?}", r[&uses]);
}

#[tokio::test]
async fn args_envs_and_stdout_arg_feed_later_jobs() {
    let mut h = Harness::new();
    h.submit(
        "p",
        QueueKind::Sync,
        "RUN",
        "--stdout-arg greeting echo hello",
    )
    .await;
    h.submit("p", QueueKind::Sync, "ARG", "port 8080").await;
    h.submit("p", QueueKind::Sync, "ARG", "list ['x', 'y']")
        .await;
    h.submit("p", QueueKind::Sync, "ENV", "GREETING {{ greeting }} there")
        .await;
    let used = h
        .submit(
            "p",
            QueueKind::Sync,
            "RUN",
            r#"echo "{{ greeting }}:{{ port }}:{{ list | join(',') }}:$GREETING""#,
        )
        .await;
    let missing = h
        .submit("q", QueueKind::Sync, "RUN", "echo {{ not_cached }}")
        .await;
    let empty = h
        .submit("r", QueueKind::Sync, "RUN", "--stdout-arg nothing true")
        .await;
    // Output over the cap is not stored cut: the job fails and the arg stays unset.
    let huge = h
        .submit(
            "s",
            QueueKind::Sync,
            "RUN",
            "--stdout-arg huge head -c 3200000 /dev/zero | tr '\\0' c",
        )
        .await;
    let after_huge = h
        .submit("t", QueueKind::Sync, "RUN", "echo {{ huge | length }}")
        .await;
    // A command that renders to nothing fails instead of running an empty shell.
    h.submit("u", QueueKind::Sync, "ARG", "blank ''").await;
    let blank = h.submit("u", QueueKind::Sync, "RUN", "{{ blank }}").await;
    // Bytes that are not UTF-8 are not stored in an arg, replaced.
    let binary = h
        .submit(
            "v",
            QueueKind::Sync,
            "RUN",
            r"--stdout-arg binary printf 'a\377b'",
        )
        .await;
    let r = h.results(12).await;
    assert_eq!(r[&binary].state, ResultState::Failed, "{:?}", r[&binary]);
    assert!(r[&binary].info.contains("not UTF-8"), "{}", r[&binary].info);
    assert_eq!(r[&huge].state, ResultState::Failed, "{:?}", r[&huge].info);
    assert!(
        r[&huge].info.contains("too large to store"),
        "{}",
        r[&huge].info
    );
    assert_eq!(r[&after_huge].state, ResultState::Failed);
    assert!(
        r[&after_huge].stderr.contains("undefined"),
        "{:?}",
        r[&after_huge]
    );
    assert_eq!(r[&blank].state, ResultState::Failed, "{:?}", r[&blank]);
    assert!(
        r[&blank].stderr.contains("rendered to an empty command"),
        "{:?}",
        r[&blank]
    );
    assert_eq!(
        r[&used].stdout, "hello:8080:x,y:hello there",
        "{:?}",
        r[&used]
    );
    assert_eq!(r[&missing].state, ResultState::Failed);
    assert!(
        r[&missing].stderr.contains("undefined"),
        "{:?}",
        r[&missing]
    );
    assert_eq!(r[&empty].state, ResultState::Failed);
    assert!(r[&empty].info.contains("printed nothing"));
}

/// The inline args of a RUN that creates `started`, then runs until `gate` exists.
fn gated(started: &std::path::Path, gate: &std::path::Path) -> String {
    format!(
        "--skip-cache touch {}; while [ ! -e {} ]; do sleep 0.05; done",
        started.display(),
        gate.display()
    )
}

/// Waits (up to a minute) for `file` to exist.
async fn until_exists(file: &std::path::Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !file.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never appeared",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every job the executor settles, run or not (its parent failed, a QUEUESENTINEL emptied
/// the queue), is in the log of starts before its result goes out, so a restart never takes
/// it for a job that never started; once the node stops, no job starts.
#[tokio::test]
async fn every_settled_job_is_written_down_and_none_starts_once_the_node_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("running-jobs");
    let (log, _) = jobs::processes::ProcessLog::open(&path).unwrap();
    // As a node does once it has dealt with what its previous run left.
    log.restored();
    let log = Arc::new(log);
    let mut h = Harness::with(ExecutorConfig {
        processes: Some(log.clone()),
        ..ExecutorConfig::default()
    });
    let failed = h
        .submit("p", QueueKind::Sync, "RUN", "--skip-cache exit 1")
        .await;
    let not_run = h
        .submit("p", QueueKind::Sync, "RUN", "--skip-cache echo never")
        .await;
    // Runs (after p's two have settled: one queue) until the test lets it end.
    let (started, gate) = (dir.path().join("started"), dir.path().join("gate"));
    let running = h
        .submit("q", QueueKind::Sync, "RUN", &gated(&started, &gate))
        .await;
    let omitted = h
        .submit("r", QueueKind::Sync, "RUN", "--skip-cache echo omitted")
        .await;
    until_exists(&started).await;
    let sentinel = h
        .submit("s", QueueKind::Bypass, "QUEUESENTINEL", "true")
        .await;
    let mut r = h.results(4).await;
    std::fs::write(&gate, "").unwrap();
    r.extend(h.results(1).await);
    assert!(r[&not_run].info.starts_with("not run"), "{:?}", r[&not_run]);
    assert!(
        r[&omitted].info.contains("QUEUESENTINEL"),
        "{:?}",
        r[&omitted]
    );

    log.halt();
    let queued = h
        .submit("t", QueueKind::Sync, "RUN", "--skip-cache echo too late")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.events.try_recv().is_err(),
        "nothing is reported once the node stops"
    );
    drop(h);
    drop(log);
    let (log, _) = jobs::processes::ProcessLog::open(&path).unwrap();
    let starts = log.previous_starts().expect("a log of this boot");
    for job in [&failed, &not_run, &running, &omitted, &sentinel] {
        assert!(starts.contains(job), "{job} missing from {starts:?}");
    }
    assert!(!starts.contains(&queued), "{queued} never started");
}

/// A QUEUESENTINEL in an asynchronous parent runs at once; the parent's later jobs still run
/// one after another (its end used to free the parent's queue while the next job ran).
#[tokio::test]
async fn a_queuesentinel_leaves_its_async_parent_serial() {
    let mut h = Harness::new();
    let sentinel = h
        .submit("a", QueueKind::Async, "QUEUESENTINEL", "true")
        .await;
    let first = h
        .submit(
            "a",
            QueueKind::Async,
            "RUN",
            "--skip-cache sleep 0.5; exit 1",
        )
        .await;
    let second = h
        .submit("a", QueueKind::Async, "RUN", "--skip-cache echo second")
        .await;
    let r = h.results(3).await;
    assert_eq!(r[&sentinel].state, ResultState::Success);
    assert_eq!(r[&first].state, ResultState::Failed);
    assert_eq!(r[&second].state, ResultState::Failed, "{:?}", r[&second]);
    assert!(r[&second].info.starts_with("not run"), "{:?}", r[&second]);
}

#[tokio::test]
async fn queuesentinel_reports_every_purged_job() {
    let mut h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let started = [dir.path().join("p"), dir.path().join("a")];
    // The first job of each runs until the test lets it end; the second waits behind it.
    let running = h
        .submit("p", QueueKind::Sync, "RUN", &gated(&started[0], &gate))
        .await;
    let q1 = h
        .submit("p", QueueKind::Sync, "RUN", "--skip-cache echo one")
        .await;
    let q2 = h
        .submit("a", QueueKind::Async, "RUN", &gated(&started[1], &gate))
        .await;
    let q3 = h
        .submit("a", QueueKind::Async, "RUN", "--skip-cache echo three")
        .await;
    for file in &started {
        until_exists(file).await;
    }
    let sentinel = h
        .submit("s", QueueKind::Bypass, "QUEUESENTINEL", "true")
        .await;
    let mut r = h.results(3).await;
    std::fs::write(&gate, "").unwrap();
    r.extend(h.results(2).await);
    assert_eq!(
        r[&running].state,
        ResultState::Success,
        "running jobs finish"
    );
    assert_eq!(
        r[&q2].state,
        ResultState::Success,
        "running async jobs finish"
    );
    for q in [&q1, &q3] {
        assert_eq!(r[q].state, ResultState::Failed);
        assert!(
            r[q].info.contains(&format!("QUEUESENTINEL {sentinel}")),
            "{}",
            r[q].info
        );
    }
    assert_eq!(r[&sentinel].state, ResultState::Success);
    assert_eq!(r[&sentinel].info, "purged 2 queued jobs");
}

#[tokio::test]
async fn workdir_cachefile_cacheevict_wait_and_echo() {
    let mut h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("a/b");
    let wd = h
        .submit(
            "p",
            QueueKind::Sync,
            "WORKDIR",
            &format!("--chmod 0750 --chown 0:0 {}", d.display()),
        )
        .await;
    let file = dir.path().join("vars.yaml");
    std::fs::write(&file, "from_file: [1, 2]\nnested: {k: v}\n").unwrap();
    let cf = h
        .submit(
            "p",
            QueueKind::Sync,
            "CACHEFILE",
            &file.display().to_string(),
        )
        .await;
    let use_it = h
        .submit(
            "p",
            QueueKind::Sync,
            "RUN",
            "echo {{ nested.k }}{{ from_file | length }}",
        )
        .await;
    let echo = h
        .submit("p", QueueKind::Sync, "ECHO", "hello   world")
        .await;
    let wait = h
        .submit(
            "p",
            QueueKind::Sync,
            "WAIT",
            &format!("--cmd --retry 20 --retry-wait 0.05 test -d {}", d.display()),
        )
        .await;
    let never = h
        .submit(
            "w",
            QueueKind::Sync,
            "WAIT",
            "--cmd --retry 2 --retry-wait 0.01 false",
        )
        .await;
    let evict = h.submit("e", QueueKind::Sync, "CACHEEVICT", "args").await;
    let after = h
        .submit("e", QueueKind::Sync, "RUN", "echo {{ nested.k }}")
        .await;
    let r = h.results(8).await;
    assert_eq!(r[&wd].state, ResultState::Success, "{:?}", r[&wd]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
        0o750
    );
    assert_eq!(r[&cf].stdout, "Cache file loaded");
    assert_eq!(r[&use_it].stdout, "v2");
    assert_eq!(r[&echo].stdout, "hello world");
    assert_eq!(r[&wait].state, ResultState::Success);
    assert_eq!(r[&never].state, ResultState::Failed);
    assert!(r[&never].info.contains("not met after 2 tries"));
    assert!(
        r[&evict].stdout.starts_with("Evicted 2 items, tagged args"),
        "{}",
        r[&evict].stdout
    );
    assert_eq!(r[&after].state, ResultState::Failed, "args are gone");
    // Bad owner: a failed result, not a crash, and no directory made for nobody.
    let private = dir.path().join("private");
    let bad = h
        .submit(
            "x",
            QueueKind::Sync,
            "WORKDIR",
            &format!(
                "--chown no-such-user-xyz --chmod 0700 {}",
                private.display()
            ),
        )
        .await;
    let r = h.results(1).await;
    assert_eq!(r[&bad].state, ResultState::Failed);
    assert!(r[&bad].stderr.contains("no user 'no-such-user-xyz'"));
    assert!(
        !private.exists(),
        "the directory was made with the wrong owner"
    );
}

/// ARG --extend-args extends a cached list and merges a cached map (deeply); without it the
/// value replaces what was cached.
#[tokio::test]
async fn extend_args_extends_lists_and_merges_maps() {
    let mut h = Harness::new();
    for inline in [
        "list [1, 2]",
        "--extend-args list [3]",
        "map {a: {x: 1}, b: 2}",
        "--extend-args map {a: {y: 2}, c: 3}",
        "plain [1, 2]",
        "plain [3]",
    ] {
        h.submit("p", QueueKind::Sync, "ARG", inline).await;
    }
    let shown = h
        .submit(
            "p",
            QueueKind::Sync,
            "RUN",
            "echo '{{ list }} {{ map.a.x }}{{ map.a.y }}{{ map.b }}{{ map.c }} {{ plain }}'",
        )
        .await;
    let r = h.results(7).await;
    assert_eq!(r[&shown].state, ResultState::Success, "{:?}", r[&shown]);
    assert_eq!(r[&shown].stdout, "[1, 2, 3] 1223 [3]");
}

/// WORKDIR and CACHEFILE paths render with the node's args when the job runs; an undefined
/// variable in one fails that job, naming it.
#[tokio::test]
async fn paths_render_with_the_args_when_the_job_runs() {
    let mut h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vars.yaml"), "loaded_from: file\n").unwrap();
    let arg = h
        .submit(
            "p",
            QueueKind::Sync,
            "ARG",
            &format!("base {}", dir.path().display()),
        )
        .await;
    let wd = h
        .submit("p", QueueKind::Sync, "WORKDIR", "{{ base }}/made/here")
        .await;
    let cf = h
        .submit("p", QueueKind::Sync, "CACHEFILE", "{{ base }}/vars.yaml")
        .await;
    let used = h
        .submit("p", QueueKind::Sync, "RUN", "echo {{ loaded_from }}")
        .await;
    let missing = h
        .submit("q", QueueKind::Sync, "WORKDIR", "{{ nowhere }}/x")
        .await;
    let r = h.results(5).await;
    assert_eq!(r[&arg].state, ResultState::Success, "{:?}", r[&arg]);
    assert_eq!(r[&wd].state, ResultState::Success, "{:?}", r[&wd]);
    assert!(dir.path().join("made/here").is_dir());
    assert_eq!(r[&cf].state, ResultState::Success, "{:?}", r[&cf]);
    assert_eq!(r[&used].stdout, "file");
    assert_eq!(r[&missing].state, ResultState::Failed);
    let why = format!("{} {}", r[&missing].info, r[&missing].stderr);
    assert!(why.contains("nowhere"), "{why}");
}

#[tokio::test]
async fn streamed_output_arrives_before_the_result() {
    let mut h = Harness::new();
    let mut s = spec("RUN", "for i in 1 2 3; do echo line$i; done");
    s.skip_cache = true;
    let job = h.submit_spec("p", QueueKind::Sync, s, true).await;
    let r = h.results(1).await;
    assert_eq!(r[&job].state, ResultState::Success);
    let texts =
        |lines: &[OutputLine]| -> Vec<String> { lines.iter().map(|l| l.text.clone()).collect() };
    assert_eq!(texts(&h.outputs[&job]), ["line1\n", "line2\n", "line3\n"]);
    // Each line says where it starts in the result's output (a reader fills gaps from it).
    let mut s = spec("RUN", "echo out1; echo err1 >&2; echo out2; printf tail");
    s.skip_cache = true;
    let job = h.submit_spec("p", QueueKind::Sync, s, true).await;
    let r = h.results(1).await;
    assert_eq!(r[&job].stdout, "out1\nout2\ntail");
    for line in &h.outputs[&job] {
        let whole = match line.stream {
            OutputStream::Stdout => &r[&job].stdout,
            OutputStream::Stderr => &r[&job].stderr,
        };
        // (The result's output has its trailing blanks trimmed.)
        let at = line.offset as usize;
        assert!(whole[at..].starts_with(line.text.trim_end()), "{line:?}");
    }
    assert_eq!(h.outputs[&job].len(), 4);
    // ECHO's text is output too (`--stream` shows it).
    let mut s = spec("ECHO", "hello echo");
    s.skip_cache = true;
    let job = h.submit_spec("p", QueueKind::Sync, s, true).await;
    let r = h.results(1).await;
    assert_eq!(r[&job].stdout, "hello echo");
    assert_eq!(texts(&h.outputs[&job]), ["hello echo"]);
    // So is what the other components print when they end (WAIT, ARG...), before the result:
    // a reader sees each job's output in the order the jobs ran.
    for (verb, inline) in [("WAIT", "--seconds 0"), ("ARG", "answer 42")] {
        let mut s = spec(verb, inline);
        s.skip_cache = true;
        let job = h.submit_spec("p", QueueKind::Sync, s, true).await;
        let r = h.results(1).await;
        assert!(!r[&job].stdout.is_empty(), "{verb}: {:?}", r[&job]);
        assert_eq!(texts(&h.outputs[&job]).concat(), r[&job].stdout, "{verb}");
        assert_eq!(h.outputs[&job][0].offset, 0);
    }
}

/// A job waiting for other nodes (a QUERY_WAIT for an item that never comes) holds no lock: a
/// `--force-lock` job queued after it runs meanwhile, and so do the jobs after that one (held
/// up, the job awaited could be one of them, queued on this node).
#[tokio::test]
async fn a_wait_for_other_nodes_does_not_hold_up_a_force_locked_job() {
    let mut h = Harness::new();
    let wait = h
        .submit(
            "w",
            QueueKind::Async,
            "QUERY_WAIT",
            "never --query-timeout 3",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = spec("RUN", "true");
    s.force_lock = true;
    s.skip_cache = true;
    let alone = h.submit_spec("b", QueueKind::Async, s, false).await;
    let after = h
        .submit("c", QueueKind::Async, "RUN", "--skip-cache true")
        .await;
    let r = h.results(3).await;
    for job in [&alone, &after] {
        assert_eq!(r[job].state, ResultState::Success, "{:?}", r[job]);
        assert!(
            r[job].finished_unix_ms + 1000 < r[&wait].finished_unix_ms,
            "{job} ended with the wait: {:?} {:?}",
            r[job],
            r[&wait]
        );
    }
    assert_eq!(r[&wait].stderr, "Timeout after 3 seconds", "{:?}", r[&wait]);
}

/// A QUERY_WAIT ended by the job's own, shorter timeout says so (not `--query-timeout`'s).
#[tokio::test]
async fn a_query_wait_names_the_timeout_that_ended_it() {
    let mut h = Harness::new();
    let job = h
        .submit(
            "w",
            QueueKind::Sync,
            "QUERY_WAIT",
            "never --query-timeout 10 --timeout 1",
        )
        .await;
    let r = h.results(1).await;
    assert_eq!(
        r[&job].stderr,
        "Timeout after 1 seconds (the job's --timeout, shorter than --query-timeout 10)",
        "{:?}",
        r[&job]
    );
}

/// CACHEFILE loads only a regular file: a device or a pipe is refused at once (`/dev/zero`
/// filled the memory; a pipe no one writes held the job past its timeout).
#[tokio::test]
async fn a_cache_file_is_a_regular_file() {
    let mut h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (parent, path) in [("a", "/dev/zero".into()), ("b", fifo.display().to_string())] {
        let job = h
            .submit(
                parent,
                QueueKind::Async,
                "CACHEFILE",
                &format!("--timeout 5 {path}"),
            )
            .await;
        let r = &h.results(1).await[&job];
        assert_eq!(r.state, ResultState::Failed, "{r:?}");
        assert_eq!(
            r.stderr,
            format!("cannot read {path}: not a regular file"),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn force_lock_runs_alone() {
    let mut h = Harness::new();
    let a = h
        .submit("a", QueueKind::Async, "RUN", "--skip-cache sleep 0.3")
        .await;
    let mut s = spec("RUN", "sleep 0.3");
    s.force_lock = true;
    s.skip_cache = true;
    let alone = h.submit_spec("b", QueueKind::Async, s, false).await;
    let c = h
        .submit("c", QueueKind::Async, "RUN", "--skip-cache sleep 0.3")
        .await;
    let r = h.results(3).await;
    // started_unix_ms is taken before the locks; compare the locked run by its execution window.
    let window = |o: &Outcome| {
        (
            o.finished_unix_ms - (o.execution_secs * 1000.0) as u64,
            o.finished_unix_ms,
        )
    };
    let (s0, e0) = window(&r[&alone]);
    for other in [&a, &c] {
        let (s1, e1) = window(&r[other]);
        assert!(
            e1 <= s0 + 5 || e0 <= s1 + 5,
            "force-locked job overlapped {other}"
        );
    }
}

/// Marks the run of [`jobs_never_see_the_daemons_own_settings`] in a process of its own.
const DAEMON_ENV_CHILD: &str = "DIRECTORD_MESH_JOBS_TEST_CHILD";

/// The daemon's own settings (`DIRECTORD_MESH_*`, the mesh's key among them) never reach a
/// job's processes: RUN, RUN --no-block and WAIT --cmd. The test runs itself again in a
/// process of its own, with such settings in its environment (set where the process is
/// started, so nothing here changes the environment of a process with threads).
#[tokio::test]
async fn jobs_never_see_the_daemons_own_settings() {
    if std::env::var_os(DAEMON_ENV_CHILD).is_some() {
        return daemon_env_child().await;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "jobs_never_see_the_daemons_own_settings",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DAEMON_ENV_CHILD, "1")
        .env("DIRECTORD_MESH_TOKEN", "dm1-the-mesh-key")
        .env("DIRECTORD_MESH_NAME", "node-a")
        .env("JOBS_TEST_VISIBLE", "yes")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("daemon-env-child-ok"),
        "the child failed:\n{stdout}\n{stderr}"
    );
}

async fn daemon_env_child() {
    let mut h = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let background = dir.path().join("background-env");
    let run = h.submit("p", QueueKind::Sync, "RUN", "env").await;
    let no_block = h
        .submit(
            "p",
            QueueKind::Sync,
            "RUN",
            &format!(
                "--no-block env > {0}.tmp; mv {0}.tmp {0}",
                background.display()
            ),
        )
        .await;
    let wait = h
        .submit(
            "p",
            QueueKind::Sync,
            "WAIT",
            "--cmd --retry 1 ! env | grep -q DIRECTORD_MESH_ && test \"$JOBS_TEST_VISIBLE\" = yes",
        )
        .await;
    // A job's own ENV of such a name is its own to pass.
    h.submit("p", QueueKind::Sync, "ENV", "DIRECTORD_MESH_OWN mine")
        .await;
    let own = h
        .submit("p", QueueKind::Sync, "RUN", "--skip-cache env")
        .await;
    let r = h.results(5).await;
    for job in [&run, &no_block, &wait, &own] {
        assert_eq!(r[job].state, ResultState::Success, "{:?}", r[job]);
    }
    let leaked = |env: &str| {
        env.lines()
            .filter(|l| l.starts_with("DIRECTORD_MESH_") && *l != "DIRECTORD_MESH_OWN=mine")
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(r[&run].stdout.contains("JOBS_TEST_VISIBLE=yes"));
    assert_eq!(leaked(&r[&run].stdout), Vec::<String>::new());
    assert!(r[&own].stdout.contains("DIRECTORD_MESH_OWN=mine"));
    assert_eq!(leaked(&r[&own].stdout), Vec::<String>::new());
    let mut env = None;
    for _ in 0..250 {
        if let Ok(text) = std::fs::read_to_string(&background) {
            env = Some(text);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let env = env.expect("the background command did not write its environment");
    assert!(env.contains("JOBS_TEST_VISIBLE=yes"));
    assert_eq!(leaked(&env), Vec::<String>::new());
    println!("daemon-env-child-ok");
}

/// An env that no process environment can hold is refused where it comes from, naming it:
/// an ENV whose value renders with NUL fails and sets nothing, and later jobs run.
#[tokio::test]
async fn an_env_rendered_with_nul_fails_and_later_jobs_run() {
    let mut h = Harness::new();
    h.submit("p", QueueKind::Sync, "ARG", r#"nul "a\0b""#).await;
    let env = h
        .submit("p", QueueKind::Sync, "ENV", "BROKEN x{{ nul }}")
        .await;
    let r = h.results(2).await;
    assert_eq!(r[&env].state, ResultState::Failed, "{:?}", r[&env]);
    assert!(
        r[&env].stderr.contains("BROKEN") && r[&env].stderr.contains("NUL"),
        "{:?}",
        r[&env]
    );
    let run = h.submit("q", QueueKind::Sync, "RUN", "echo still").await;
    let wait = h
        .submit("q", QueueKind::Sync, "WAIT", "--cmd --retry 1 true")
        .await;
    let r = h.results(2).await;
    assert_eq!(r[&run].state, ResultState::Success, "{:?}", r[&run]);
    assert_eq!(r[&run].stdout, "still");
    assert_eq!(r[&wait].state, ResultState::Success, "{:?}", r[&wait]);
}

/// A line over the longest read at once (64 KiB) that is valid UTF-8 stays valid where it
/// was cut: 30000 'あ' (3 bytes each) go to an arg whole.
#[tokio::test]
async fn a_long_line_of_multibyte_text_is_text() {
    let mut h = Harness::new();
    let job = h
        .submit(
            "p",
            QueueKind::Sync,
            "RUN",
            "--stdout-arg big printf 'あ%.0s' $(seq 30000)",
        )
        .await;
    let r = h.results(1).await;
    assert_eq!(r[&job].state, ResultState::Success, "{:?}", r[&job].info);
    assert_eq!(r[&job].stdout, "あ".repeat(30000));
    assert!(r[&job].stderr.is_empty(), "{}", r[&job].stderr);
}
