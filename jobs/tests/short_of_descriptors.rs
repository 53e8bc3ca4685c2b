//! A node short of file descriptors for a moment (many asynchronous jobs at once under a low
//! limit) runs every job once descriptors are free again, rather than failing those whose
//! shell could not start. In a test binary of its own: it lowers the process's limit.

use std::{collections::HashMap, sync::Arc, time::Duration};

use jobs::{
    JobSpec, ParseOutcome,
    cache::{Cache, DEFAULT_TTL},
    executor::{ExecEvent, Executor, ExecutorConfig, QueueKind, ResultState, Work},
};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

fn spec(inline: &str) -> JobSpec {
    match JobSpec::parse("RUN", inline, &Default::default()).unwrap() {
        ParseOutcome::Spec(s) => s,
        ParseOutcome::Help(h) => panic!("{h}"),
    }
}

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[tokio::test(flavor = "current_thread")]
async fn jobs_whose_shell_cannot_start_for_want_of_descriptors_wait_and_run() {
    let cache = Arc::new(Cache::in_memory(DEFAULT_TTL));
    let (exec, mut events) = Executor::start(cache, ExecutorConfig::default());
    // Room for a few jobs at a time (each holds its two pipes and a process handle).
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let low = open_descriptors() + 16;
    setrlimit(Resource::RLIMIT_NOFILE, low, hard).unwrap();

    let jobs = 40;
    for i in 0..jobs {
        // Each its own asynchronous parent: all start at once.
        exec.submit(Work {
            job_id: format!("job-{i}"),
            run_id: "r".into(),
            parent_id: format!("p{i}"),
            queue: QueueKind::Async,
            spec: spec(&format!("--skip-cache sleep 0.2; echo ran {i}")),
            fingerprint: spec(&format!("--skip-cache sleep 0.2; echo ran {i}")).fingerprint(),
            stream: false,
        })
        .await
        .unwrap();
    }
    let mut done = HashMap::new();
    while done.len() < jobs {
        let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("the executor went quiet")
            .expect("the executor stopped");
        if let ExecEvent::Finished(o) = event {
            done.insert(o.job_id.clone(), o);
        }
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    for i in 0..jobs {
        let o = &done[&format!("job-{i}")];
        assert_eq!(o.state, ResultState::Success, "job {i}: {o:?}");
        assert_eq!(o.stdout, format!("ran {i}"));
    }
}
