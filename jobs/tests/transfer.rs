//! ADD/COPY on a target when what the node fetched is not the file the job names: the job
//! fails, nothing lands, and the node is told to drop its copy so that the next job fetches
//! the file again (the copy in its blob store was damaged on disk).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use jobs::{
    Fingerprint, JobSpec, ParseOutcome,
    cache::{Cache, DEFAULT_TTL},
    components::{BoxFuture, Coordinator},
    executor::{ExecEvent, Executor, ExecutorConfig, Outcome, QueueKind, ResultState, Work},
    spec::FileRef,
};
use serde_json::Value;
use tokio::sync::mpsc;

/// Hands out `content` as whatever file a job asks for (but the file named `stalled`, which
/// never comes: its holders are out of reach), and records what it is told to drop.
struct FakeNode {
    content: PathBuf,
    discarded: Mutex<Vec<Fingerprint>>,
}

impl Coordinator for FakeNode {
    fn query(
        &self,
        _: &str,
        _: &str,
        _: Value,
        _: bool,
    ) -> BoxFuture<'static, Result<Option<Value>, String>> {
        Box::pin(async { Err("no QUERY here".to_string()) })
    }

    fn job_wait(
        &self,
        _: &str,
        _: &str,
        _: &[String],
    ) -> BoxFuture<'static, Result<mpsc::Receiver<(String, String)>, String>> {
        Box::pin(async { Err("no JOB_WAIT here".to_string()) })
    }

    fn fetch_blob(&self, _: &str, file: &FileRef) -> BoxFuture<'static, Result<PathBuf, String>> {
        let path = self.content.clone();
        let stalled = file.name == "stalled";
        Box::pin(async move {
            if stalled {
                std::future::pending::<()>().await;
            }
            Ok(path)
        })
    }

    fn discard_blob(&self, hash: Fingerprint) {
        self.discarded.lock().unwrap().push(hash);
    }
}

/// `VERB inline`, its file resolved from `cwd` the way the submitter does it.
fn transfer_spec(verb: &str, inline: &str, cwd: &Path) -> JobSpec {
    let spec = match JobSpec::parse(verb, inline, &Default::default()).unwrap() {
        ParseOutcome::Spec(s) => s,
        ParseOutcome::Help(h) => panic!("{h}"),
    };
    let mut specs = jobs::transfer::resolve(spec, cwd).unwrap();
    assert_eq!(specs.len(), 1);
    specs.remove(0)
}

/// Runs `spec` on an executor whose node hands out `content`; returns the outcome and the
/// hashes the node was told to drop.
async fn run(spec: JobSpec, content: &Path) -> (Outcome, Vec<Fingerprint>) {
    let node = Arc::new(FakeNode {
        content: content.to_path_buf(),
        discarded: Mutex::new(Vec::new()),
    });
    let config = ExecutorConfig {
        coordinator: Some(node.clone()),
        ..ExecutorConfig::default()
    };
    let (exec, mut events) = Executor::start(Arc::new(Cache::in_memory(DEFAULT_TTL)), config);
    exec.submit(Work {
        job_id: "job".into(),
        run_id: "run".into(),
        parent_id: "parent".into(),
        queue: QueueKind::Sync,
        fingerprint: spec.fingerprint(),
        spec,
        stream: false,
    })
    .await
    .unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("the executor answers")
            .expect("the executor runs");
        if let ExecEvent::Finished(outcome) = event {
            let discarded = node.discarded.lock().unwrap().clone();
            return (outcome, discarded);
        }
    }
}

#[tokio::test]
async fn a_fetched_copy_that_is_not_the_file_fails_the_job_and_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("real.conf");
    std::fs::write(&source, "the real content {{ x | default('') }}\n").unwrap();
    let forged = dir.path().join("forged");
    std::fs::write(&forged, "something else\n").unwrap();
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let hash = Fingerprint(*blake3::hash(&std::fs::read(&source).unwrap()).as_bytes());

    for (verb, inline) in [
        ("ADD", format!("real.conf {}/", dest.display())),
        ("ADD", format!("--blueprint real.conf {}/", dest.display())),
    ] {
        let spec = transfer_spec(verb, &inline, dir.path());
        let (outcome, discarded) = run(spec.clone(), &forged).await;
        assert_eq!(outcome.state, ResultState::Failed, "{inline}: {outcome:?}");
        assert!(
            outcome.stderr.contains("integrity failure") || outcome.info.contains("integrity"),
            "{inline}: {outcome:?}"
        );
        assert_eq!(discarded, vec![hash], "{inline}: the copy is dropped");
        assert!(
            std::fs::read_dir(&dest).unwrap().next().is_none(),
            "{inline}: nothing landed"
        );

        // The right content lands, and nothing is dropped.
        let (outcome, discarded) = run(spec, &source).await;
        assert_eq!(outcome.state, ResultState::Success, "{inline}: {outcome:?}");
        assert!(discarded.is_empty(), "{inline}: {discarded:?}");
        std::fs::remove_file(dest.join("real.conf")).unwrap();
    }
}

/// A copy whose file does not come (its holders out of reach) does not hold up the node's
/// other copies: the copy lock is taken only to land a file.
#[tokio::test]
async fn a_stalled_fetch_does_not_hold_up_other_copies() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["stalled", "quick"] {
        std::fs::write(dir.path().join(name), name).unwrap();
    }
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let node = Arc::new(FakeNode {
        content: dir.path().join("quick"),
        discarded: Mutex::new(Vec::new()),
    });
    let config = ExecutorConfig {
        coordinator: Some(node),
        ..ExecutorConfig::default()
    };
    let (exec, mut events) = Executor::start(Arc::new(Cache::in_memory(DEFAULT_TTL)), config);
    for (job, name) in [("stalled-job", "stalled"), ("quick-job", "quick")] {
        let spec = transfer_spec(
            "COPY",
            &format!("--timeout 60 {name} {}/", dest.display()),
            dir.path(),
        );
        exec.submit(Work {
            job_id: job.into(),
            run_id: job.into(),
            parent_id: job.into(),
            queue: QueueKind::Async,
            fingerprint: spec.fingerprint(),
            spec,
            stream: false,
        })
        .await
        .unwrap();
    }
    let finished = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the quick copy waited behind the stalled one")
            .expect("the executor runs");
        if let ExecEvent::Finished(outcome) = event {
            break outcome;
        }
    };
    assert_eq!(finished.job_id, "quick-job");
    assert_eq!(finished.state, ResultState::Success, "{finished:?}");
    assert!(dest.join("quick").exists());
}

/// A link planted at the name of the temporary file a copy lands through (by whoever may
/// write in DEST's directory) is not written through: the file lands, the link's target is
/// untouched, and the landed file has the asked mode. Links are planted at the names this
/// process's landings took before temporary names carried a random part (`.NAME.PID-N.dm-tmp`):
/// fresh, they are another's and stay. (A link at one of today's names is in the unit tests of
/// `create_landing_file`: the next name is taken.)
#[tokio::test]
async fn a_link_at_the_temporary_name_is_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("app.conf");
    std::fs::write(&source, "the real content\n").unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "not to be touched\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let planted: Vec<PathBuf> = (0..1000)
        .map(|n| dest.join(format!(".app.conf.{}-{n}.dm-tmp", std::process::id())))
        .collect();
    for link in &planted {
        std::os::unix::fs::symlink(&victim, link).unwrap();
    }
    let spec = transfer_spec(
        "COPY",
        &format!("--chmod 0600 app.conf {}/", dest.display()),
        dir.path(),
    );
    let (outcome, _) = run(spec, &source).await;
    assert_eq!(outcome.state, ResultState::Success, "{outcome:?}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "not to be touched\n"
    );
    let victim_mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
    assert_eq!(victim_mode, 0o644, "the link's target was chmodded");
    let landed = dest.join("app.conf");
    assert_eq!(
        std::fs::read_to_string(&landed).unwrap(),
        "the real content\n"
    );
    assert_eq!(
        std::fs::metadata(&landed).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let taken = planted
        .iter()
        .filter(|link| std::fs::symlink_metadata(link).is_err())
        .count();
    assert_eq!(
        taken, 0,
        "a fresh temporary file of another landing was removed"
    );
}

/// DEST naming a directory that is there, without the trailing `/`: the job fails before
/// anything is fetched, saying how to put the file inside, and the directory is untouched.
#[tokio::test]
async fn a_dest_that_is_a_directory_without_its_slash_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("small.txt");
    std::fs::write(&source, "small\n").unwrap();
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let spec = transfer_spec("COPY", &format!("small.txt {}", dest.display()), dir.path());
    let (outcome, discarded) = run(spec, &source).await;
    assert_eq!(outcome.state, ResultState::Failed, "{outcome:?}");
    assert_eq!(
        outcome.stderr,
        format!(
            "{} is a directory: end DEST with / to put the file inside it",
            dest.display()
        ),
        "{outcome:?}"
    );
    assert!(discarded.is_empty());
    assert!(std::fs::read_dir(&dest).unwrap().next().is_none());
}

/// DEST naming a link to a directory, without the trailing `/`: the job fails before
/// anything is fetched, naming where the link points, and the link stays (it was replaced by
/// the file, and a deployment's `current` link was lost).
#[tokio::test]
async fn a_dest_that_links_to_a_directory_is_named_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("small.txt");
    std::fs::write(&source, "small\n").unwrap();
    std::fs::create_dir(dir.path().join("v2")).unwrap();
    let dest = dir.path().join("current");
    std::os::unix::fs::symlink("v2", &dest).unwrap();
    let spec = transfer_spec("COPY", &format!("small.txt {}", dest.display()), dir.path());
    let (outcome, discarded) = run(spec, &source).await;
    assert_eq!(outcome.state, ResultState::Failed, "{outcome:?}");
    assert!(
        outcome.stderr.starts_with(&format!(
            "{} is a link to a directory (v2): end DEST with /",
            dest.display()
        )),
        "{outcome:?}"
    );
    assert!(discarded.is_empty());
    assert!(std::fs::symlink_metadata(&dest).unwrap().is_symlink());
    // With the slash, the file goes inside the directory it points to.
    let spec = transfer_spec(
        "COPY",
        &format!("small.txt {}/", dest.display()),
        dir.path(),
    );
    let (outcome, _) = run(spec, &source).await;
    assert_eq!(outcome.state, ResultState::Success, "{outcome:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("v2/small.txt")).unwrap(),
        "small\n"
    );
}

/// DEST naming a FIFO or a socket: the job fails at once, naming DEST and what it is, and
/// leaves it there. (Read to see whether it already held the file, a FIFO would have kept
/// the job, and a thread of the node, waiting for a writer forever.)
#[tokio::test]
async fn a_dest_that_is_a_fifo_or_a_socket_fails_at_once() {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("small.txt");
    std::fs::write(&source, "small\n").unwrap();
    let fifo = dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let socket = dir.path().join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // Should a reader wait on the FIFO all the same, a writer that comes and goes ends its
    // wait, so that the test fails rather than hangs.
    let (settled, wait) = std::sync::mpsc::channel::<()>();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            if wait.recv_timeout(Duration::from_secs(8)).is_err() {
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::libc::O_NONBLOCK)
                    .open(&fifo);
            }
        })
    };
    for (dest, what) in [(&fifo, "a FIFO (named pipe)"), (&socket, "a socket")] {
        let spec = transfer_spec(
            "COPY",
            &format!("--timeout 3 small.txt {}", dest.display()),
            dir.path(),
        );
        let started = std::time::Instant::now();
        let (outcome, discarded) = run(spec, &source).await;
        assert_eq!(outcome.state, ResultState::Failed, "{outcome:?}");
        assert!(
            outcome
                .stderr
                .starts_with(&format!("{} is {what}, not a regular file", dest.display())),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{outcome:?}");
        assert!(discarded.is_empty());
        let kind = std::fs::symlink_metadata(dest).unwrap().file_type();
        assert!(
            kind.is_fifo() || kind.is_socket(),
            "{} was replaced",
            dest.display()
        );
    }
    let _ = settled.send(());
    writer.join().unwrap();
}
