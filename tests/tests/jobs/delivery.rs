//! Delivery through node loss, restarts and stops: targets killed, gone or restarted, submitters
//! restarted mid-run, clean and abrupt stops, `--poll` following a run again, a disk that fails.

use super::*;

/// `--poll` names the targets its jobs wait for: without a terminal, once the same ones were
/// told twice running (the daemon tells every 5 s), on stderr, and once only (the job runs
/// past the second telling with room to spare, and past the third on a slow machine).
#[test]
fn poll_names_the_targets_it_waits_for() {
    let root = root();
    let nodes = mesh(root.path());
    let o = nodes[0].cli(&[
        "exec",
        "--verb",
        "RUN",
        "--target",
        "n3",
        "--target",
        "n2",
        "--skip-cache sleep 14",
        "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        said.matches("Still waiting for n3, n2 (2 targets)").count(),
        1,
        "{}",
        text(&o)
    );
}

/// A target stopped for good mid-run (SIGTERM, never back) is written off once the grace a
/// goodbye gets has passed (three of the submitter's heartbeats, at least 15 s), and `--poll`
/// says meanwhile why it waits and for how long.
#[test]
fn a_target_gone_for_good_is_waited_for_then_written_off() {
    let root = root();
    // The submitter's heartbeat sets the grace: three of 6 s, 18 s (over the 15 s floor).
    let mut nodes = vec![Daemon::start_isolated(
        root.path(),
        "n1",
        &["--heartbeat-interval", "6s"],
    )];
    let token = nodes[0].join_token();
    nodes.push(Daemon::start_isolated(
        root.path(),
        "n2",
        &["--token", &token],
    ));
    for d in &nodes {
        wait_for(Duration::from_secs(20), "the mesh to form", || {
            (e2e_tests::alive_names(&d.status()?).len() == 2).then_some(())
        });
    }
    let poll = poll_a_sleep(&nodes[0], &["n2"], &root.path().join("started"), 60);
    let stopped = Instant::now();
    assert!(nodes[1].terminate().success());
    let o = poll.wait_with_output().unwrap();
    let waited = stopped.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains(
            "Waiting for n2: it left the mesh (a stop or a restart); its results come if it is \
             back within 18 s of leaving, else it is written off as unreachable"
        ),
        "{}",
        text(&o)
    );
    assert!(
        said.contains("written off as unreachable (n2)"),
        "{}",
        text(&o)
    );
    // Not before the grace (written off at once, as before, it would end in about a second).
    assert!(waited >= Duration::from_secs(17), "ended after {waited:?}");
}

#[test]
fn a_target_killed_mid_run_is_reported_unreachable() {
    let root = root();
    let mut nodes = mesh(root.path());
    let started = root.path().join("started");
    std::fs::create_dir(&started).unwrap();
    let command = format!("mktemp -p {} >/dev/null; sleep 4", started.display());
    let poll = nodes[0]
        .cli_command(&["exec", "--verb", "RUN", "--skip-cache", &command, "--poll"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        Duration::from_secs(20),
        "the job to start on every node",
        || (std::fs::read_dir(&started).ok()?.count() == 3).then_some(()),
    );
    nodes[2].kill9();
    let o = poll.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // The summary says the failure may still turn into a result.
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "1 failed result is a target written off as unreachable (n3): should they report \
             later, their results replace these; `manage --follow-run "
        ),
        "{}",
        text(&o)
    );
    let last = records(&nodes[0]).into_iter().last().unwrap();
    assert_eq!(last["results"]["n1"]["state"], "success");
    assert_eq!(last["results"]["n2"]["state"], "success");
    assert_eq!(last["results"]["n3"]["state"], "failed");
    assert!(
        last["results"]["n3"]["info"]
            .as_str()
            .unwrap()
            .starts_with("unreachable"),
        "{last}"
    );
}

/// A job for every node names the members it did not run on because they are not alive
/// (expired or left): an operator who meant every node hears which did not run it.
#[test]
fn a_job_for_every_node_names_the_members_not_alive() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 4);
    nodes[2].kill9();
    assert!(nodes[3].terminate().success());
    wait_for(
        Duration::from_secs(20),
        "n3 to expire and n4 to leave",
        || {
            let status = nodes[0].status()?;
            let state = |name: &str| {
                status["nodes"]
                    .as_array()?
                    .iter()
                    .find(|n| n["name"] == name)
                    .map(|n| n["state"].clone())
            };
            (state("n3")? == "expired" && state("n4")? == "left").then_some(())
        },
    );
    let o = nodes[0].cli(&["exec", "--verb", "RUN", "--skip-cache", "true", "--poll"]);
    assert!(o.status.success(), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    // n4 left within the grace a goodbye gets (15 s): it may be restarting.
    assert!(
        said.contains(
            "warning: not run on the members that are not alive: n3 (expired), n4 (left "
        ) && said.contains(" s ago: restarting? `--target n4` waits for it)"),
        "{}",
        text(&o)
    );
    // Named targets leave nobody out, nor does a `--run-once` job (it was only ever to run on
    // one node): no warning.
    for only in [["--target", "n2"], ["--run-once", "--poll"]] {
        let mut args = vec!["exec", "--verb", "RUN", "--skip-cache"];
        args.extend(only);
        args.push("true");
        let o = nodes[0].cli(&args);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            !String::from_utf8_lossy(&o.stderr).contains("not alive"),
            "{only:?}: {}",
            text(&o)
        );
    }
    // n4's machine rebuilt (a new state directory, so a new identity) under its old name: the
    // live n4 runs the job, and the identity that left is not named as one that did not.
    let token = nodes[0].join_token();
    let rebuilt = Daemon::start(
        root.path(),
        "n4-rebuilt",
        &["--name", "n4", "--token", &token],
    );
    let rebuilt_id = rebuilt.peer_id();
    wait_for(
        Duration::from_secs(20),
        "the rebuilt n4 to be alive",
        || {
            let status = nodes[0].status()?;
            let alive = status["nodes"].as_array()?.iter().any(|n| {
                n["name"] == "n4" && n["state"] == "alive" && n["peer_id"] == rebuilt_id.as_str()
            });
            alive.then_some(())
        },
    );
    let o = nodes[0].cli(&["exec", "--verb", "RUN", "--skip-cache", "true", "--poll"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("warning: not run on the members that are not alive: n3 (expired)\n"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("3/3 nodes"), "{}", text(&o));
}

/// A node killed with -9 leaves its jobs' processes running (nothing can stop them then); once
/// restarted it stops them before anything else runs, and reports the jobs interrupted.
#[test]
fn a_restarted_node_stops_the_jobs_its_crash_left_running() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 2);
    // A command line no other process has.
    let marker = format!("sleep 47.{}", std::process::id());
    let job_id = submit(&nodes[0], &["n2"], &format!("{marker}; echo never"));
    wait_for(Duration::from_secs(20), "the job to start on n2", || {
        processes_running(&marker).then_some(())
    });
    nodes[1].kill9();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        processes_running(&marker),
        "the job's process outlives its node's crash (what this test is about)"
    );
    nodes[1].restart();
    wait_for(
        Duration::from_secs(10),
        "the leftover job to be stopped",
        || (!processes_running(&marker)).then_some(()),
    );
    assert!(
        nodes[1].log().contains(
            "stopped the process groups of jobs the previous run of this node left running"
        ),
        "{}",
        nodes[1].log()
    );
    let record = wait_for_record(&nodes, &job_id, "the job to be reported", |r| {
        r["results"]["n2"]["state"] == "failed"
    });
    assert_ne!(record["results"]["n2"]["stdout"], "never", "{record}");
}

/// A node restarted after a crash reports the job that was running interrupted, and the rest
/// of that job's parent not run (even when the same job succeeded there before); the jobs
/// still queued behind it (other parents) run after the restart, in order. `crashed` is the
/// node that runs them and stops as `how` says (0: the submitter).
fn queued_jobs_after_a_restart_of(crashed: usize, how: Stop) {
    let down_long = how == Stop::DownLong;
    let root = root();
    let mut nodes = mesh_of(root.path(), 2);
    let target = nodes[crashed].name.clone();
    let set_delay = |delay: &str| {
        let o = nodes[0].cli(&[
            "exec", "--verb", "ARG", "--target", &target, "delay", delay, "--poll",
        ]);
        assert!(o.status.success(), "{}", text(&o));
    };
    // A command line no other process has, once rendered (the arg is a number: no trailing
    // zero).
    let variant = match how {
        Stop::Crash => 1,
        Stop::Term => 2,
        Stop::DownLong => 3,
    };
    let delay = format!("46.{crashed}{variant}{}1", std::process::id());
    let marker = format!("sleep {delay}");
    let file = root.path().join("queued.yaml");
    let entry = |jobs: &[&str]| {
        let jobs: String = jobs
            .iter()
            .map(|j| format!("  - RUN: --skip-cache {j}\n"))
            .collect();
        format!("- targets: [{target}]\n  jobs:\n{jobs}")
    };
    let sleep = "sleep {{ delay }}";
    // A file small enough to travel inside the run (kept in the node's blob store).
    let src = root.path().join("small.txt");
    let add = format!("ADD: {} /tmp/queued-add/", src.display());
    let orchestration = [
        entry(&[sleep, "echo after-sleep"]),
        entry(&["echo second"]),
        entry(&["echo third"]),
        format!(
            "- targets: [{target}]\n  jobs:\n  - WORKDIR: --skip-cache /tmp/queued-add\n  - {add}\n"
        ),
    ]
    .concat();
    std::fs::write(&file, orchestration).unwrap();
    std::fs::write(&src, "before\n").unwrap();
    // Once quickly, so the jobs' fingerprints have succeeded on the node before.
    set_delay("0");
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap(), "--poll", "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = nodes[0].cli(&["manage", "--purge-jobs"]);
    assert!(o.status.success(), "{}", text(&o));
    set_delay(&delay);
    std::fs::write(&src, "queued at the crash\n").unwrap();
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    wait_for(Duration::from_secs(20), "the sleep to start", || {
        processes_running(&marker).then_some(())
    });
    // A target's acceptance is on disk before its jobs start; the submitter's own lands with
    // its next commit, within a second, which nothing shows from outside.
    if crashed == 0 {
        written_to_disk(&nodes[0], &nodes[1].name);
    }
    if how == Stop::Term {
        let stopped = Instant::now();
        assert!(nodes[crashed].terminate().success());
        nodes[crashed].restart();
        // Back within the grace a target that said goodbye is given (15 s: three of the
        // submitter's 1 s heartbeats would be 3 s, but the grace is never shorter than 15 s),
        // which this test is about.
        eprintln!("stopped and back in {:?}", stopped.elapsed());
    } else if down_long {
        nodes[crashed].kill9();
        // The log of starts was last touched 11 minutes ago, as if the node had been down since
        // (and no word on the boot clock beside it, which this machine may not have run for
        // that long: the wall clock measures).
        let log = nodes[crashed].state_dir.join("running-jobs");
        std::fs::remove_file(nodes[crashed].state_dir.join("running-jobs.alive")).unwrap();
        std::fs::File::options()
            .append(true)
            .open(&log)
            .and_then(|f| f.set_modified(std::time::SystemTime::now() - Duration::from_secs(660)))
            .unwrap();
        nodes[crashed].restart();
    } else {
        crash_and_restart(&mut nodes[crashed]);
    }
    let result = |job: &str| {
        let definition = match job.starts_with("ADD") {
            true => job.to_string(),
            false => format!("RUN: --skip-cache {job}"),
        };
        let r = wait_for_job(&nodes, &definition, &format!("{job} never reported"), |r| {
            reported(r, &target)
        });
        let state = r["results"][&target]["state"].as_str().unwrap_or_default();
        let info = r["results"][&target]["info"].as_str().unwrap_or_default();
        (state.to_string(), info.to_string(), r)
    };
    let (state, info, r) = result(sleep);
    assert!(state == "failed" && info.starts_with("interrupted"), "{r}");
    if down_long {
        for job in ["echo after-sleep", "echo second", "echo third", &add] {
            let (state, info, r) = result(job);
            assert!(
                state == "failed" && info.starts_with("interrupted: the node was down"),
                "{r}"
            );
        }
        return;
    }
    let (state, info, r) = result("echo after-sleep");
    assert!(
        state == "failed" && info.starts_with("interrupted: not run, an earlier job"),
        "{r}"
    );
    if how == Stop::Term && crashed != 0 {
        // A clean restart is waited for: the target was never written off meanwhile.
        let log = nodes[0].log();
        assert!(
            !log.contains("before reporting"),
            "the submitter wrote off a target that restarted:\n{log}"
        );
    }
    let (state, _, second) = result("echo second");
    assert_eq!(state, "success", "{second}");
    assert_eq!(stdout_on(&second, &target), "second");
    let (state, _, third) = result("echo third");
    assert_eq!(state, "success", "{third}");
    assert!(
        window(&second, &target).1 <= window(&third, &target).0,
        "in order: {second} {third}"
    );
    let (state, _, r) = result(&add);
    assert_eq!(state, "success", "{r}");
    let o = nodes[0].cli(&[
        "exec",
        "--verb",
        "RUN",
        "--target",
        &target,
        "--skip-cache",
        "cat /tmp/queued-add/small.txt",
        "--stream",
        "--check",
    ]);
    assert!(text(&o).contains("queued at the crash"), "{}", text(&o));
    assert!(
        nodes[crashed].log().contains("queued again the jobs"),
        "{}",
        nodes[crashed].log()
    );
}

/// How the node running the jobs stops in [`queued_jobs_after_a_restart_of`].
#[derive(PartialEq)]
enum Stop {
    /// kill -9, restarted at once.
    Crash,
    /// SIGTERM (a clean stop), restarted at once.
    Term,
    /// kill -9, back after what looks like 11 minutes: it runs nothing it had queued.
    DownLong,
}

#[test]
fn a_target_restarted_after_a_crash_runs_the_jobs_still_queued() {
    queued_jobs_after_a_restart_of(1, Stop::Crash);
}

#[test]
fn a_target_stopped_cleanly_runs_the_jobs_still_queued_once_back() {
    queued_jobs_after_a_restart_of(1, Stop::Term);
}

#[test]
fn a_target_back_after_a_long_stop_runs_nothing_it_had_queued() {
    queued_jobs_after_a_restart_of(1, Stop::DownLong);
}

#[test]
fn a_submitter_restarted_after_a_crash_runs_its_own_jobs_still_queued() {
    queued_jobs_after_a_restart_of(0, Stop::Crash);
}

/// A clean stop asks a running job to end before it stops it: a job whose processes trap
/// SIGTERM get to clean up, a child of the job's shell too, which may take a moment after
/// the shell itself ended (the grace waits for the job's processes, not its shell). The job
/// is reported interrupted once its node is back, as a crash's are, and nothing of it is
/// cached: the same job submitted again runs (its shell's `exit 0` on SIGTERM, taken in while
/// the node waited for the child, was cached a success). With `--stop-grace 0` the node asks
/// at once, not after letting the job run on.
#[test]
fn a_clean_stop_lets_a_running_job_clean_up() {
    let root = root();
    let mut nodes = e2e_tests::isolated_mesh_with(
        root.path(),
        1,
        Duration::from_secs(20),
        &["--stop-grace", "0"],
    );
    let started = root.path().join("started");
    let cleaned = root.path().join("cleaned");
    let command = format!(
        "if [ -e {s} ]; then echo again; exit 0; fi; trap 'exit 0' TERM; sh -c 'trap \"sleep \
         0.5; echo cleaned > {c}; exit 0\" TERM; touch {s}; sleep 60 & wait' >/dev/null 2>&1 & \
         wait",
        s = started.display(),
        c = cleaned.display()
    );
    let o = nodes[0].cli(&["exec", "--verb", "RUN", &command]);
    let job_id = e2e_tests::submitted_job_id(&o);
    wait_for(Duration::from_secs(20), "the job to start", || {
        started.exists().then_some(())
    });
    assert!(nodes[0].terminate().success());
    let log = nodes[0].log();
    assert_eq!(
        std::fs::read_to_string(&cleaned).ok().as_deref(),
        Some("cleaned\n"),
        "{log}"
    );
    assert!(
        log.contains("asked the jobs still running to end (SIGTERM)")
            && !log.contains("waiting up to"),
        "{log}"
    );
    nodes[0].restart();
    let name = nodes[0].name.clone();
    let r = wait_for_record(&nodes, &job_id, "the job reported", |r| reported(r, &name));
    let info = r["results"][&name]["info"].as_str().unwrap_or_default();
    assert!(info.starts_with("interrupted"), "{r}");
    let o = nodes[0].cli(&["exec", "--verb", "RUN", &command]);
    let again = wait_for_record(&nodes, &e2e_tests::submitted_job_id(&o), "it ran", |r| {
        reported(r, &name)
    });
    assert_eq!(again["results"][&name]["state"], "success", "{again}");
    assert_eq!(stdout_on(&again, &name), "again", "{again}");
}

/// A clean stop lets a short job running finish on its own (its result recorded and sent
/// as any other's, before the node leaves, though a process it left in the background holds
/// its output a moment after its shell ended), and the rest of its parent runs once the node
/// is back: a routine restart cuts no short job short. Another signal meanwhile would stop
/// it at once.
#[test]
fn a_clean_stop_lets_a_short_running_job_finish() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 2);
    let target = nodes[1].name.clone();
    let started = root.path().join("started");
    let file = root.path().join("parent.yaml");
    std::fs::write(
        &file,
        format!(
            "- targets: [{target}]\n  jobs:\n  - RUN: --skip-cache touch {}; sleep 2; sleep 3 & echo first\n  - RUN: --skip-cache echo second\n",
            started.display()
        ),
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    wait_for(Duration::from_secs(20), "the first job to start", || {
        started.exists().then_some(())
    });
    assert!(nodes[1].terminate().success());
    let log = nodes[1].log();
    assert!(
        log.contains("waiting up to 10s for the jobs still running to finish"),
        "{log}"
    );
    assert!(
        !log.contains("asked the jobs still running to end"),
        "{log}"
    );
    // Its result went out before the node left: the submitter has it with the node still
    // down (held back a moment for the company of the second job's, it used to wait for the
    // next start, and the job was written off as unreachable meanwhile).
    let first = wait_for_job(
        &nodes,
        &format!(
            "RUN: --skip-cache touch {}; sleep 2; sleep 3 & echo first",
            started.display()
        ),
        "the first job, with its node down",
        |r| reported(r, &target),
    );
    assert_eq!(first["results"][&target]["state"], "success", "{first}");
    assert_eq!(stdout_on(&first, &target), "first", "{first}");
    nodes[1].restart();
    let second = wait_for_job(
        &nodes,
        "RUN: --skip-cache echo second",
        "the second job",
        |r| reported(r, &target),
    );
    assert_eq!(second["results"][&target]["state"], "success", "{second}");
    assert_eq!(stdout_on(&second, &target), "second", "{second}");
}

/// `--stop-grace` sets how long a stop lets running jobs finish: past it, a job still running
/// is asked to end (and reported interrupted once the node is back), however long the default.
#[test]
fn a_stop_grace_shorter_than_a_job_asks_it_to_end() {
    let root = root();
    let mut nodes = e2e_tests::isolated_mesh_with(
        root.path(),
        1,
        Duration::from_secs(20),
        &["--stop-grace", "1s"],
    );
    let started = root.path().join("started");
    let o = nodes[0].cli(&[
        "exec",
        "--verb",
        "RUN",
        &format!("--skip-cache touch {}; sleep 30", started.display()),
    ]);
    let job_id = e2e_tests::submitted_job_id(&o);
    wait_for(Duration::from_secs(20), "the job to start", || {
        started.exists().then_some(())
    });
    assert!(nodes[0].terminate().success());
    let log = nodes[0].log();
    assert!(
        log.contains("waiting up to 1s for the jobs still running to finish")
            && log.contains("asked the jobs still running to end (SIGTERM)"),
        "{log}"
    );
    nodes[0].restart();
    let name = nodes[0].name.clone();
    let r = wait_for_record(&nodes, &job_id, "the job reported", |r| reported(r, &name));
    assert_eq!(r["results"][&name]["state"], "failed", "{r}");
    let info = r["results"][&name]["info"].as_str().unwrap_or_default();
    assert!(info.starts_with("interrupted"), "{r}");
}

/// A second signal while a clean stop waits for its jobs to end stops them at once: a job
/// that ignores SIGTERM does not outlive its daemon (it did, the stop cut short before it
/// stopped anything).
#[test]
fn a_second_signal_during_the_stop_grace_stops_the_jobs_at_once() {
    use nix::sys::signal::{Signal, kill};
    let root = root();
    let mut nodes = mesh_of(root.path(), 1);
    let started = root.path().join("started");
    let marker = format!("sleep 61.{}", std::process::id());
    let command = format!("trap '' TERM; touch {}; {marker}", started.display());
    submit(&nodes[0], &[], &command);
    wait_for(Duration::from_secs(20), "the job to start", || {
        started.exists().then_some(())
    });
    let pid = nix::unistd::Pid::from_raw(nodes[0].pid());
    kill(pid, Signal::SIGTERM).unwrap();
    // After the 10 s it gives running jobs to finish on their own.
    wait_for(
        Duration::from_secs(25),
        "the daemon to ask its job to end",
        || {
            nodes[0]
                .log()
                .contains("asked the jobs still running to end (SIGTERM)")
                .then_some(())
        },
    );
    // The job ignores it: the daemon waits for it, and is told again.
    assert!(processes_running(&marker));
    kill(pid, Signal::SIGINT).unwrap();
    nodes[0].wait_exit(Duration::from_secs(10));
    wait_for(Duration::from_secs(10), "the job's processes to go", || {
        (!processes_running(&marker)).then_some(())
    });
    let log = nodes[0].log();
    assert!(
        log.contains("stopped the jobs still running at once (SIGKILL)"),
        "{log}"
    );
}

/// `--job-info` of a job still running says how this node sees each node it waits for.
#[test]
fn job_info_says_how_the_nodes_a_job_waits_for_are_seen() {
    let root = root();
    let nodes = mesh_of(root.path(), 2);
    let (started, gate) = (root.path().join("started"), root.path().join("gate"));
    let job_id = submit(
        &nodes[0],
        &["n2"],
        &format!(
            "touch {}; while [ ! -e {} ]; do sleep 0.1; done",
            started.display(),
            gate.display()
        ),
    );
    wait_for(Duration::from_secs(30), "n2 to start the job", || {
        started.exists().then_some(())
    });
    let info = |json: bool| {
        let mut args = vec!["manage", "--job-info", job_id.as_str()];
        if json {
            args.push("--json");
        }
        let o = nodes[0].cli(&args);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let r: Value = serde_json::from_str(&info(true)).unwrap();
    assert_eq!(r["waiting_for"], serde_json::json!(["n2"]), "{r}");
    assert_eq!(
        r["waiting_for_state"],
        serde_json::json!({"n2": "alive"}),
        "{r}"
    );
    let shown = info(false);
    assert!(
        shown.contains("n2 (alive: the job is queued or running there"),
        "{shown}"
    );
    std::fs::write(&gate, "").unwrap();
    wait_for(Duration::from_secs(30), "n2 to report", || {
        let r: Value = serde_json::from_str(&info(true)).ok()?;
        (r["waiting_for"] == serde_json::json!([])).then_some(())
    });
}

/// A run is followed again from its node (its command gone): by `last` or the start of one of
/// its job ids, with its status lines and its exit code.
#[test]
fn a_run_is_followed_again_until_its_last_result() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let o = d.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--skip-cache",
        "sleep 2; echo followed",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = d.cli(&["manage", "--follow-run", "last"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("Job Success") && text(&o).contains("3/3 nodes"),
        "{}",
        text(&o)
    );
    let o = d.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--skip-cache",
        "sleep 1; exit 3",
        "--target",
        "n2",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let job_id = out.split_whitespace().next().unwrap().to_string();
    let o = d.cli(&["manage", "--follow-run", &job_id[..8]]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("FAILED JOBS") && text(&o).contains("exit code 3"),
        "{}",
        text(&o)
    );
    // By its parent's id (which `--list-jobs` shows): the same run.
    let o = d.cli(&["manage", "--job-info", &job_id, "--json"]);
    let record: Value = serde_json::from_slice(&o.stdout).unwrap();
    let parent = record["parent_id"].as_str().unwrap();
    let o = d.cli(&["manage", "--follow-run", parent]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("exit code 3"), "{}", text(&o));
    let o = d.cli(&["manage", "--follow-run", "nope"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("no run, job or parent 'nope'"),
        "{}",
        text(&o)
    );
}

/// A target written off as unreachable (its daemon stopped) comes back with its result while
/// `--poll` still waits for another job: the job's line is shown again with the real result,
/// and the exit code follows it.
#[test]
fn poll_shows_a_late_result_and_exits_by_it() {
    use nix::{sys::signal, unistd::Pid};
    let root = root();
    let nodes = mesh_of(root.path(), 3);
    let file = root.path().join("two.yaml");
    // Each job ends when the test lets it: n2's once n1 has written n2 off, n3's once n2's
    // late result is in.
    let started = root.path().join("started");
    let (n2_gate, n3_gate) = (root.path().join("n2-gate"), root.path().join("n3-gate"));
    let until = |gate: &Path| format!("while [ ! -e {} ]; do sleep 0.1; done", gate.display());
    std::fs::write(
        &file,
        format!(
            "- targets: [n2]\n  jobs:\n  - RUN: --skip-cache touch {}; {}; echo back\n\
             - targets: [n3]\n  jobs:\n  - RUN: --skip-cache {}; echo slow\n",
            started.display(),
            until(&n2_gate),
            until(&n3_gate)
        ),
    )
    .unwrap();
    let poll = nodes[0]
        .cli_command(&["orchestrate", file.to_str().unwrap(), "--poll"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the run to start on n2", || {
        started.exists().then_some(())
    });
    // n2's daemon stops answering (its job's shell goes on) until n1 has written it off.
    let n2 = Pid::from_raw(nodes[1].pid());
    signal::kill(n2, signal::Signal::SIGSTOP).unwrap();
    let (written_off, _) = wait_for(Duration::from_secs(20), "n2 to be written off", || {
        records(&nodes[0]).into_iter().find(|r| {
            r["results"]["n2"]["info"]
                .as_str()
                .is_some_and(|i| i.starts_with("unreachable"))
        })
    });
    signal::kill(n2, signal::Signal::SIGCONT).unwrap();
    std::fs::write(&n2_gate, "").unwrap();
    let id = written_off["job_id"].as_str().unwrap();
    wait_for_record(&nodes, id, "n2's late result", |r| {
        r["results"]["n2"]["state"] == "success"
    });
    std::fs::write(&n3_gate, "").unwrap();
    let o = poll.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(id)).collect();
    assert!(
        lines.len() == 2
            && lines[0].starts_with("Job Failed")
            && lines[0].contains("unreachable")
            && lines[1].starts_with("Late result: Job Success"),
        "{out}"
    );
}

#[test]
fn a_submitter_restarted_mid_run_still_gets_every_result() {
    let root = root();
    let mut nodes = mesh(root.path());
    let job_id = submit(&nodes[0], &["n2", "n3"], "sleep 2; echo done");
    // The submitter dies before any result and comes back while the jobs still run elsewhere.
    nodes[0].kill9();
    std::thread::sleep(Duration::from_millis(500));
    nodes[0].restart();
    let record = wait_for_record(
        &nodes,
        &job_id,
        "both results never reached the restarted submitter",
        |r| r["results"].as_object().is_some_and(|m| m.len() == 2),
    );
    for n in ["n2", "n3"] {
        assert_eq!(record["results"][n]["state"], "success", "{record}");
        assert_eq!(record["results"][n]["stdout"], "done");
    }
}

/// A target shows in `status` the results it holds for a submitter that is down, and how long
/// it has been trying; they go once the submitter is back.
#[test]
fn a_target_shows_the_results_it_holds_for_a_submitter_that_is_down() {
    let root = root();
    let mut nodes = mesh(root.path());
    let submitter = nodes[0].peer_id();
    let started = root.path().join("started");
    let gate = root.path().join("gate");
    let command = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.1; done; echo held",
        started.display(),
        gate.display()
    );
    let job_id = submit(&nodes[0], &["n2"], &command);
    // The job starts on n2, then its submitter dies, then the job ends.
    wait_for(Duration::from_secs(20), "n2 to start the job", || {
        started.exists().then_some(())
    });
    nodes[0].kill9();
    std::fs::write(&gate, "").unwrap();
    let owed = |d: &Daemon| d.status().map(|s| s["self"]["results_owed"].clone());
    wait_for(
        Duration::from_secs(30),
        "n2 never showed the result it holds for n1",
        || {
            let o = owed(&nodes[1])?;
            (o[0]["peer_id"] == submitter.as_str()
                && o[0]["results"] == 1
                && o[0]["failing_secs"].is_u64())
            .then_some(())
        },
    );
    let shown = text(&nodes[1].cli(&["status"]));
    assert!(
        shown.contains("Owed       1 result to n1, not taken for "),
        "{shown}"
    );
    assert_eq!(
        owed(&nodes[2]),
        Some(serde_json::json!([])),
        "n3 owes nothing"
    );
    nodes[0].restart();
    let record = wait_for_record(&nodes, &job_id, "the held result never arrived", |r| {
        reported(r, "n2")
    });
    assert_eq!(record["results"]["n2"]["stdout"], "held", "{record}");
    wait_for(
        Duration::from_secs(10),
        "n2 still shows the result owed",
        || (owed(&nodes[1])? == serde_json::json!([])).then_some(()),
    );
    assert!(!text(&nodes[1].cli(&["status"])).contains("Owed"));
}

/// The submitter dies right after submitting, before its own part of the run was accepted on
/// its disk: back, it reports that part interrupted (it may have started; it is not run again),
/// not unreachable with a promise of a later result that never comes.
#[test]
fn a_submitter_killed_right_after_submitting_reports_its_own_part_interrupted() {
    let root = root();
    let mut nodes = mesh(root.path());
    let job_id = submit(&nodes[0], &["n1", "n2"], "sleep 2; echo done");
    nodes[0].kill9();
    std::thread::sleep(Duration::from_millis(300));
    nodes[0].restart();
    let record = wait_for_record(&nodes, &job_id, "both results never arrived", |r| {
        r["results"].as_object().is_some_and(|m| m.len() == 2)
    });
    assert_eq!(record["results"]["n2"]["state"], "success", "{record}");
    assert_eq!(record["results"]["n1"]["state"], "failed", "{record}");
    assert!(
        record["results"]["n1"]["info"]
            .as_str()
            .is_some_and(|i| i.starts_with("interrupted")),
        "{record}"
    );
}

/// A target that dies while its submitter is down is written off once the submitter is back
/// (no membership change tells the restarted submitter: it learns the target already expired).
#[test]
fn a_target_gone_while_its_submitter_was_down_is_written_off_after_the_restart() {
    let root = root();
    let mut nodes = mesh(root.path());
    let job_id = submit(&nodes[0], &["n2", "n3"], "sleep 3; echo done");
    nodes[0].kill9();
    nodes[2].kill9();
    // n2 sees n3 expire (three missed 1 s heartbeats) before the submitter starts again.
    let started = Instant::now();
    while nodes[1].status().is_some_and(|s| {
        s["nodes"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["name"] == "n3" && r["state"] == "alive")
        })
    }) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "n3 never expired at n2"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    nodes[0].restart();
    let record = wait_for_record(
        &nodes,
        &job_id,
        "the restarted submitter never wrote off the target that died meanwhile",
        |r| r["results"].as_object().is_some_and(|m| m.len() == 2),
    );
    assert_eq!(record["results"]["n2"]["state"], "success", "{record}");
    assert_eq!(record["results"]["n3"]["state"], "failed", "{record}");
    assert!(
        record["results"]["n3"]["info"]
            .as_str()
            .is_some_and(|i| i.starts_with("unreachable")),
        "{record}"
    );
}

/// A target written off while it was down is sent its jobs when it is back within the window,
/// though its submitter restarted meanwhile: of a run that was over (every other result in)
/// and of one still open.
#[test]
fn a_target_written_off_before_its_submitter_restarted_is_sent_its_jobs_once_back() {
    let root = root();
    // n3 heartbeats every 5 s: n1 has it alive for 10 to 15 s after its kill, time to submit
    // to it on a loaded machine too.
    let (usual, slow): (&[&str], &[&str]) = (&[], &["--heartbeat-interval", "5s"]);
    let mut nodes =
        e2e_tests::isolated_mesh_each(root.path(), &[usual, usual, slow], Duration::from_secs(30));
    nodes[2].kill9();
    // Submitted while n1 still has n3 alive. The second is still open when n1 restarts: n2
    // runs it until the test lets it end.
    let gate = root.path().join("gate");
    let over = submit(&nodes[0], &["n2", "n3"], "echo over");
    let open = submit(
        &nodes[0],
        &["n2", "n3"],
        &format!(
            "while [ ! -e {} ]; do sleep 0.1; done; echo open",
            gate.display()
        ),
    );
    for job in [&over, &open] {
        wait_for_record(&nodes, job, "n3 was never written off", |r| {
            r["results"]["n3"]["info"]
                .as_str()
                .is_some_and(|i| i.starts_with("unreachable"))
        });
    }
    crash_and_restart(&mut nodes[0]);
    std::fs::write(&gate, "").unwrap();
    nodes[2].restart();
    for (job, said) in [(&over, "over"), (&open, "open")] {
        let r = wait_for_record(&nodes, job, "n3 was never sent its job again", |r| {
            r["results"]["n3"]["state"] == "success" && r["results"]["n2"]["state"] == "success"
        });
        assert_eq!(stdout_on(&r, "n3").trim(), said, "{r}");
    }
}

/// A `--poll` whose daemon stops says so: the jobs are not over (they run again after the
/// restart), so no summary reads as if they were.
#[test]
fn a_poll_whose_daemon_stops_says_it_stopped() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 1);
    let poll = poll_a_sleep(&nodes[0], &[], &root.path().join("started"), 30);
    assert!(nodes[0].terminate().success());
    let o = poll.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("the daemon closed the connection before every job finished"),
        "{}",
        text(&o)
    );
    // How to follow the run again, by its id (the first line names it).
    let run_id = String::from_utf8_lossy(&o.stderr)
        .split_whitespace()
        .nth(1)
        .map(|id| id.trim_end_matches(':').to_string())
        .unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("`manage --follow-run {run_id}`")),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("succeeded"), "{}", text(&o));
}

/// A node whose database stops taking writes refuses what it cannot store, says why and stops;
/// back on a working disk it gets every result it refused, and nothing it refused to submit runs.
#[test]
fn a_node_that_cannot_write_its_database_stops_and_loses_nothing() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 2);
    let hook = nodes[0].state_dir.join("test-fail-writes");
    let job_id = submit(&nodes[0], &["n2"], "sleep 2; echo done");
    // The submitter's disk fails while n2 runs the job: n2's result cannot be stored there.
    std::fs::write(&hook, "").unwrap();
    let status = nodes[0].wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", nodes[0].log());
    let log = nodes[0].log();
    assert!(
        log.contains("node.redb: write failed: test hook")
            && log.contains("the database cannot be written; stopping"),
        "the log says what failed and why the node stopped:\n{log}"
    );
    // Once: the writes still queued behind the failure fail too, and are not news.
    let said = log
        .lines()
        .filter(|l| l.contains(" ERROR ") && l.contains("write failed") && !l.contains("stopping"))
        .count();
    assert_eq!(said, 1, "{log}");
    // Started again on the broken disk: it fails before it joins the mesh (it used to come
    // alive, then stop at its first write).
    let started = |log: &str| log.matches("node started").count();
    let before = started(&nodes[0].log());
    assert!(before >= 1, "{}", nodes[0].log());
    nodes[0].relaunch();
    assert_eq!(nodes[0].wait_exit(Duration::from_secs(30)).code(), Some(1));
    let log = nodes[0].log();
    assert!(
        log.contains("node.redb: cannot be written: test hook"),
        "{log}"
    );
    assert_eq!(started(&log), before, "it started:\n{log}");
    // Back on a working disk: n2 still holds the result, and delivers it.
    std::fs::remove_file(&hook).unwrap();
    nodes[0].restart();
    let record = wait_for_record(&nodes, &job_id, "the refused result never arrived", |r| {
        r["results"]["n2"]["state"] == "success"
    });
    assert_eq!(record["results"]["n2"]["stdout"], "done", "{record}");

    // A submission the disk cannot take is refused, and nothing of it is sent out.
    let ran = root.path().join("refused-ran");
    std::fs::write(&hook, "").unwrap();
    let args = run_args(&["n2"], &format!("touch {}", ran.display()));
    let o = nodes[0].cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("the submission could not be stored"),
        "{}",
        text(&o)
    );
    assert_eq!(nodes[0].wait_exit(Duration::from_secs(30)).code(), Some(1));
    std::fs::remove_file(&hook).unwrap();
    nodes[0].restart();
    // n2 runs n1's jobs again (a refused run kept by mistake would be resent at the start, and
    // run there before this one), and time goes by.
    wait_for(Duration::from_secs(20), "n1 to see n2 again", || {
        e2e_tests::alive_names(&nodes[0].status()?)
            .contains(&"n2".to_string())
            .then_some(())
    });
    let mut args = run_args(&["n2"], "true");
    args.push("--poll".into());
    let o = nodes[0].cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !records(&nodes[0]).iter().any(|r| r["definition"]
            .as_str()
            .unwrap_or("")
            .contains("refused-ran")),
        "a refused submission left a record"
    );
    assert!(!ran.exists(), "a refused submission ran on its target");
}

/// `--poll` prints a job's result only once the submitter has it on disk: a result its
/// database could not take is never shown as done (a restart would report it interrupted).
#[test]
fn a_result_is_shown_only_once_it_is_on_disk() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 1);
    let hook = nodes[0].state_dir.join("test-fail-writes");
    // The job itself breaks the disk as it ends: its result is the first write that fails.
    let command = format!("sleep 1; touch {}; echo done", hook.display());
    let mut args = run_args(&["n1"], &command);
    args.push("--poll".into());
    let poll = nodes[0]
        .cli_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = poll.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("closed the connection before every job finished")
            && !text(&o).contains("Job Success"),
        "a result that is not on disk was shown:\n{}",
        text(&o)
    );
    assert_eq!(nodes[0].wait_exit(Duration::from_secs(30)).code(), Some(1));
    std::fs::remove_file(&hook).unwrap();
    nodes[0].restart();
    let last = records(&nodes[0]).into_iter().last().unwrap();
    // What the restarted node reports agrees with what the client was told: not a success.
    assert_eq!(last["results"]["n1"]["state"], "failed", "{last}");
}

/// A run submitted while its target restarts cleanly (it said goodbye and is not back yet)
/// is taken, with a note: it waits for the target as a run already going would, and its job
/// runs once the target is back (before, it was refused: "target 'n3' has left the mesh").
#[test]
fn a_run_for_a_target_restarting_cleanly_is_taken_and_runs_once_it_is_back() {
    let root = root();
    let mut nodes = mesh(root.path());
    let n3 = nodes[2].peer_id();
    nodes[2].terminate();
    wait_for(Duration::from_secs(10), "n1 to hear n3 leave", || {
        let status = nodes[0].status()?;
        (e2e_tests::state_of(&status, &n3)? == "left").then_some(())
    });
    let mut poll = nodes[0]
        .cli_command(&[
            "exec",
            "--verb",
            "RUN",
            "--target",
            "n3",
            "echo back",
            "--poll",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The client's lines as they come, and all of them once it ends.
    let stderr = poll.stderr.take().expect("piped");
    let (lines, said) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            all.push_str(&line);
            all.push('\n');
            let _ = lines.send(line);
        }
        all
    });
    // n3 stays down until the run is taken, with the note.
    let note = "note: targets that had just left the mesh (restarting?): n3 (left";
    let noted = std::iter::from_fn(|| said.recv_timeout(Duration::from_secs(60)).ok())
        .any(|line| line.contains(note));
    nodes[2].restart();
    let o = poll.wait_with_output().unwrap();
    let said = reader.join().unwrap();
    assert!(noted, "no note while n3 was down: {said}");
    assert!(o.status.success(), "{}{said}", text(&o));
    let r = wait_for_job(&nodes, "RUN: echo back", "n3's result", |r| {
        reported(r, "n3")
    });
    assert_eq!(r["results"]["n3"]["state"], "success", "{r}");
    assert_eq!(stdout_on(&r, "n3"), "back", "{r}");
}

/// Without a terminal (a log, a script), `--poll` says at once which run it submitted and how
/// to follow it again; following it again works.
#[test]
fn poll_without_a_terminal_names_the_run_to_follow_again() {
    let root = root();
    let nodes = mesh_of(root.path(), 1);
    let o = nodes[0].cli(&["exec", "--verb", "RUN", "echo hi", "--poll"]);
    assert!(o.status.success(), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr).to_string();
    let first = said.lines().next().unwrap_or_default();
    let run_id = first
        .strip_prefix("run ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        !run_id.is_empty()
            && first.ends_with(&format!(
                ": 1 job submitted; `manage --follow-run {run_id}` follows it again"
            )),
        "{said}"
    );
    let o = nodes[0].cli(&["manage", "--follow-run", &run_id]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Job Success"),
        "{}",
        text(&o)
    );
}

/// `--poll` on a terminal draws a bar of the jobs done (on stderr) beside its lines (stdout).
#[test]
fn poll_on_a_terminal_draws_a_progress_bar() {
    use std::io::Read;
    use std::os::fd::AsFd;
    let root = root();
    let nodes = mesh(root.path());
    // stderr on a pseudo-terminal, as an operator's; stdout a pipe, read apart.
    let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    // Not inherited by what other tests start meanwhile: their processes would keep the
    // terminal open after this test's client ends.
    for end in [pty.master.as_fd(), pty.slave.as_fd()] {
        let cloexec = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC);
        nix::fcntl::fcntl(end, cloexec).expect("close-on-exec");
    }
    let mut command =
        nodes[0].cli_command(&["exec", "--verb", "RUN", "--skip-cache", "sleep 1", "--poll"]);
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::from(pty.slave));
    let child = command.spawn().unwrap();
    drop(command); // the terminal's last copy here: it ends once the client exits
    let mut terminal = std::fs::File::from(pty.master);
    let drawn = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (ended, end) = std::sync::mpsc::channel();
    let reading = drawn.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // A pseudo-terminal whose other side has closed reads as an error (EIO), not EOF.
        while let Ok(n @ 1..) = terminal.read(&mut buf) {
            reading.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        let _ = ended.send(());
    });
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // The reader ends with the client; should anything else hold the terminal, what was
    // drawn by then is what counts.
    let _ = end.recv_timeout(Duration::from_secs(10));
    let drawn = String::from_utf8_lossy(&drawn.lock().unwrap()).to_string();
    assert!(
        drawn.contains("/1 jobs done"),
        "the terminal showed: {drawn:?}"
    );
    // The job's line goes to stdout, not into the bar.
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Job Success"),
        "{}",
        text(&o)
    );
}

/// A whole mesh stopped at once (SIGTERM, as for an upgrade) while a run is in flight: the
/// submitter, leaving itself, writes off none of the targets whose goodbyes it hears, and
/// once all are back the run ends with every target's own result (interrupted by the stop).
/// Before, each target was recorded failed as unreachable, and following the run first
/// showed those failures.
#[test]
fn a_mesh_stopped_at_once_writes_off_no_target() {
    let root = root();
    let mut nodes = mesh(root.path());
    // Each keeps the port it was given across the restart, as on real machines (with ports
    // picked anew, nobody would find anybody again).
    for d in &mut nodes {
        d.keep_listen_address();
    }
    let started = root.path().join("started");
    std::fs::create_dir(&started).unwrap();
    submit(
        &nodes[0],
        &["n2", "n3"],
        // Long enough to be running still when the stop comes, on a loaded machine too.
        &format!("mktemp -p {}; sleep 30; echo done", started.display()),
    );
    wait_for(
        Duration::from_secs(20),
        "the job to start on n2 and n3",
        || (std::fs::read_dir(&started).ok()?.count() == 2).then_some(()),
    );
    for d in &nodes {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(d.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
    // The jobs get 10 s to finish, then 5 s to end once asked.
    for d in &mut nodes {
        d.wait_exit(Duration::from_secs(30));
    }
    let log = nodes[0].log();
    assert!(
        !log.contains("before reporting"),
        "the stopping submitter wrote off targets:\n{log}"
    );
    for d in &mut nodes {
        d.restart();
    }
    // The targets' own results: the job was cut by their stop (they say so).
    let o = nodes[0].cli(&["manage", "--follow-run", "last"]);
    let said = text(&o);
    let stopped = "interrupted: the job was running when its node was stopped (a stop ends";
    assert!(
        !said.contains("unreachable")
            && said.contains(&format!("n2: {stopped}"))
            && said.contains(&format!("n3: {stopped}")),
        "{said}\n--- n1:\n{}",
        nodes[0].log()
    );
}

/// What a target did is on disk before its submitter hears of it: a target killed while a
/// chain of jobs runs, each caching a value, has cached every value of the jobs its submitter
/// has as succeeded there (a result used to leave before its writes were durable: after the
/// crash, the target reported as interrupted jobs its submitter had as succeeded, and later
/// jobs rendering their values failed).
#[test]
fn a_target_killed_mid_chain_keeps_what_its_submitter_has_as_done() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 2);
    let target = nodes[1].name.clone();
    let file = root.path().join("chain.yaml");
    let mut yaml = String::from("- jobs:\n");
    for k in 1..=15 {
        yaml.push_str(&format!(
            "  - RUN: --skip-cache --stdout-arg v{k} sleep 0.2; echo value{k}\n"
        ));
    }
    std::fs::write(&file, yaml).unwrap();
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap(), "--target", &target]);
    assert!(o.status.success(), "{}", text(&o));
    // Some jobs in, others to come.
    wait_for(Duration::from_secs(30), "a few results", || {
        let done = records(&nodes[0])
            .iter()
            .filter(|r| r["results"][&target]["state"] == "success")
            .count();
        (done >= 4).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    crash_and_restart(&mut nodes[1]);
    // Every job reported (interrupted, not run, or done).
    let settled = wait_for(Duration::from_secs(60), "every job reported", || {
        let records = records(&nodes[0]);
        records
            .iter()
            .all(|r| reported(r, &target))
            .then_some(records)
    })
    .0;
    let o = nodes[1].cli(&["manage", "--dump-cache"]);
    assert!(o.status.success(), "{}", text(&o));
    let cache: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut succeeded = 0;
    for r in &settled {
        if r["results"][&target]["state"] != "success" {
            continue;
        }
        succeeded += 1;
        let definition = r["definition"].as_str().unwrap_or_default();
        let arg = definition
            .split_whitespace()
            .nth(3)
            .expect("the job names its arg");
        let value = stdout_on(r, &target);
        assert_eq!(
            cache["args"][arg].as_str(),
            Some(value.as_str()),
            "{target} lost {arg}, which its submitter has as set by {definition:?}: {cache}"
        );
    }
    assert!(succeeded >= 4, "{settled:?}");
}
