//! JOB_WAIT across nodes: blocking until the job ended on each named node, through restarts of
//! either side, runs again, names that move, and timeouts that say why.

use super::*;

/// The JOB_WAIT job `wait` (targeted at n2, waiting on n3) reported success on n2, having heard
/// `heard` ("n3: success") from n3; its record.
fn job_wait_heard(nodes: &[Daemon], wait: &str, heard: &str) -> Value {
    let r = wait_for_job(nodes, wait, "the JOB_WAIT never reported", |r| {
        reported(r, "n2")
    });
    assert_eq!(r["results"]["n2"]["state"], "success", "{r}");
    let info = r["results"]["n2"]["info"].as_str().unwrap_or_default();
    assert!(info.contains(heard), "{r}");
    r
}

#[test]
fn job_wait_blocks_until_the_job_finished_on_the_named_node() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let slow = root.path().join("slow.yaml");
    std::fs::write(
        &slow,
        "- targets: [n3]\n  jobs:\n  - RUN: sleep 2; echo awaited\n",
    )
    .unwrap();
    let fp = fingerprint_of(d, &slow, "sleep 2; echo awaited");
    let waiting = root.path().join("waiting.yaml");
    std::fs::write(
        &waiting,
        format!("- targets: [n1, n2]\n  jobs:\n  - JOB_WAIT: {fp} --identity n3\n  - RUN: --skip-cache echo after\n"),
    )
    .unwrap();
    // The awaited job is submitted (not waited for) from n1; the waiters from n2.
    let o = d.cli(&["orchestrate", slow.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = nodes[1].cli(&[
        "orchestrate",
        waiting.to_str().unwrap(),
        "--poll",
        "--check",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let awaited = record(&records(d), "RUN: sleep 2; echo awaited").clone();
    let done_at = awaited["results"]["n3"]["finished_unix_ms"]
        .as_u64()
        .unwrap();
    let recs = records(&nodes[1]);
    let wait = record(&recs, &format!("JOB_WAIT: {fp} --identity n3"));
    let after = record(&recs, "RUN: --skip-cache echo after");
    for n in ["n1", "n2"] {
        assert_eq!(wait["results"][n]["state"], "success", "{wait}");
        assert!(
            wait["results"][n]["info"]
                .as_str()
                .unwrap()
                .contains("n3: success"),
            "{wait}"
        );
        let (started, _) = window(after, n);
        assert!(
            started >= done_at,
            "{n} went on before n3 finished the awaited job"
        );
    }
}

/// An orchestration run again waits again: while the awaited job of the new run is queued or
/// running on its node, the JOB_WAIT is for it, not answered by the earlier run's outcome.
#[test]
fn a_job_wait_run_again_waits_for_the_awaited_jobs_new_run() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let slow = root.path().join("slow.yaml");
    // The awaited job ends when the test lets it (at once the first time).
    let (started, gate) = (root.path().join("started"), root.path().join("gate"));
    std::fs::create_dir(&started).unwrap();
    std::fs::write(&gate, "").unwrap();
    let exec = format!(
        "--skip-cache mktemp -p {} >/dev/null; while [ ! -e {} ]; do sleep 0.1; done; echo again",
        started.display(),
        gate.display()
    );
    std::fs::write(
        &slow,
        format!("- targets: [n3]\n  jobs:\n  - RUN: {exec}\n"),
    )
    .unwrap();
    let fp = fingerprint_of(d, &slow, "mktemp");
    let waiting = root.path().join("waiting.yaml");
    std::fs::write(
        &waiting,
        format!("- targets: [n2]\n  jobs:\n  - JOB_WAIT: {fp} --identity n3\n  - RUN: --skip-cache echo after\n"),
    )
    .unwrap();
    // The first time through: the awaited job finishes, and is cached as a success on n3.
    let o = d.cli(&["orchestrate", slow.to_str().unwrap(), "--poll"]);
    assert!(o.status.success(), "{}", text(&o));
    // Again: the awaited job is submitted (not waited for) from n1; once it runs on n3, the
    // waiter from n2.
    std::fs::remove_file(&gate).unwrap();
    let o = d.cli(&["orchestrate", slow.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let again = by_definition(&records(d), &format!("RUN: {exec}"))
        .into_iter()
        .max_by_key(|r| r["created_unix_ms"].as_u64())
        .map(|r| r["job_id"].as_str().unwrap().to_string())
        .unwrap();
    wait_for(
        Duration::from_secs(20),
        "the awaited job to run again",
        || (std::fs::read_dir(&started).ok()?.count() == 2).then_some(()),
    );
    let waiter = nodes[1]
        .cli_command(&[
            "orchestrate",
            waiting.to_str().unwrap(),
            "--poll",
            "--check",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Time for the JOB_WAIT to ask n3: answered by the earlier run's outcome, n2 would go on
    // now, before the awaited job can end.
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&gate, "").unwrap();
    let o = waiter.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let awaited = wait_for_record(&nodes, &again, "the awaited job never ran again", |r| {
        r["results"]["n3"]["finished_unix_ms"].is_u64()
    });
    let done_at = awaited["results"]["n3"]["finished_unix_ms"]
        .as_u64()
        .unwrap();
    let recs = records(&nodes[1]);
    let (started, _) = window(record(&recs, "RUN: --skip-cache echo after"), "n2");
    assert!(
        started >= done_at,
        "n2 went on {} ms before n3 finished the awaited job's new run",
        done_at - started
    );
}

/// The node waited on restarts after it took the registration and before it runs the job:
/// it forgot the registration, so the waiting node registers again (it sees the node's new
/// incarnation at once, and asks again every 15-20 s until told) and still hears when the
/// job finishes.
#[test]
fn a_job_wait_outlives_a_restart_of_the_node_it_waits_on() {
    let root = root();
    let mut nodes = mesh(root.path());
    let awaited = root.path().join("awaited.yaml");
    std::fs::write(
        &awaited,
        "- targets: [n3]\n  jobs:\n  - RUN: echo awaited\n",
    )
    .unwrap();
    let fp = fingerprint_of(&nodes[0], &awaited, "echo awaited");
    let waiting = root.path().join("waiting.yaml");
    let wait = format!("JOB_WAIT: {fp} --identity n3 --timeout 40");
    std::fs::write(&waiting, format!("- targets: [n2]\n  jobs:\n  - {wait}\n")).unwrap();
    let o = nodes[0].cli(&["orchestrate", waiting.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // n3 takes the registration at once (or within a 2 s retry), then crashes and comes back
    // without it.
    std::thread::sleep(Duration::from_secs(3));
    crash_and_restart(&mut nodes[2]);
    let o = nodes[0].cli(&["orchestrate", awaited.to_str().unwrap(), "--poll"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = job_wait_heard(&nodes, &wait, "n3: success");
    // n2 registered again as soon as it saw n3's new incarnation, not at its next refresh.
    let done_at =
        record(&records(&nodes[0]), "RUN: echo awaited")["results"]["n3"]["finished_unix_ms"]
            .as_u64()
            .unwrap();
    let (_, waited_until) = window(&r, "n2");
    assert!(
        waited_until < done_at + 10_000,
        "the wait ended {} ms after the job",
        waited_until.saturating_sub(done_at)
    );
}

/// The job waited for is cut short by its node's crash: once restarted, that node reports it
/// failed (interrupted), to its submitter and to the JOB_WAIT on it, which goes on at once
/// instead of waiting out its timeout.
#[test]
fn a_job_wait_hears_of_a_job_its_nodes_crash_interrupted() {
    let root = root();
    let mut nodes = mesh(root.path());
    let awaited = root.path().join("awaited.yaml");
    let started = root.path().join("started");
    let command = format!("touch {}; sleep 30", started.display());
    std::fs::write(
        &awaited,
        format!("- targets: [n3]\n  jobs:\n  - RUN: {command}\n"),
    )
    .unwrap();
    let fp = fingerprint_of(&nodes[0], &awaited, "touch");
    let waiting = root.path().join("waiting.yaml");
    let wait = format!("JOB_WAIT: {fp} --identity n3 --timeout 40");
    std::fs::write(&waiting, format!("- targets: [n2]\n  jobs:\n  - {wait}\n")).unwrap();
    for file in [&awaited, &waiting] {
        let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // n3 runs the awaited job and has taken the wait (at once, or within a 2 s retry, which
    // nothing shows from outside) when it crashes.
    wait_for(Duration::from_secs(20), "n3 to run the awaited job", || {
        started.exists().then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    crash_and_restart(&mut nodes[2]);
    job_wait_heard(&nodes, &wait, "n3: failed");
    let definition = format!("RUN: {command}");
    let awaited = wait_for_job(&nodes, &definition, "n3 never reported", |r| {
        reported(r, "n3")
    });
    let info = awaited["results"]["n3"]["info"]
        .as_str()
        .unwrap_or_default();
    assert!(info.starts_with("interrupted"), "{awaited}");
}

#[test]
fn job_wait_on_a_node_that_never_runs_the_job_times_out_clearly() {
    let root = root();
    let mut nodes = mesh(root.path());
    // `JOB_WAIT deadbeef00 --identity NODE [more]` on n1 fails with `needle` in its stderr.
    let fails_with = |nodes: &[Daemon], identity: &str, more: &[&str], needle: &str| {
        let mut args = vec![
            "exec",
            "--verb",
            "JOB_WAIT",
            "deadbeef00",
            "--identity",
            identity,
        ];
        args.extend_from_slice(more);
        args.extend_from_slice(&["--target", "n1", "--poll"]);
        let o = nodes[0].cli(&args);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let last = records(&nodes[0]).into_iter().last().unwrap();
        let r = &last["results"]["n1"];
        assert_eq!(r["state"], "failed", "{last}");
        assert!(
            r["stderr"].as_str().unwrap().contains(needle),
            "{needle:?} not in {last}"
        );
    };
    fails_with(
        &nodes,
        "n2",
        &["--timeout", "2"],
        "timed out waiting for job deadbeef00 to finish on n2 (n2: alive, and has not finished \
         a job of that fingerprint (not run there yet, still running, or never sent there))",
    );
    // An unknown node is named as such (after looking for it for a while) ...
    fails_with(&nodes, "nope", &[], "no node named 'nope'");
    // ... and a JOB_WAIT whose timeout ends while it looks for the name says so.
    fails_with(
        &nodes,
        "nope",
        &["--timeout", "2"],
        "timed out before every node it names was found in the mesh (nope)",
    );
    // A node that has left is said to have left.
    nodes[2].terminate();
    fails_with(
        &nodes,
        "n3",
        &["--timeout", "2"],
        "on n3 (n3: left the mesh",
    );
}

/// A job that failed on a node without running (the job before it in its parent failed there)
/// is "failed" to a JOB_WAIT that asks only afterwards, as to one that was waiting already:
/// the late one does not wait for its timeout.
#[test]
fn a_job_wait_asking_late_hears_of_a_job_that_never_ran() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let stops = root.path().join("stops.yaml");
    std::fs::write(
        &stops,
        "- targets: [n3]\n  jobs:\n  - RUN: --skip-cache false\n  - RUN: echo never runs here\n",
    )
    .unwrap();
    let fp = fingerprint_of(d, &stops, "echo never runs here");
    let o = d.cli(&["orchestrate", stops.to_str().unwrap(), "--poll"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = d.cli(&[
        "exec",
        "--verb",
        "JOB_WAIT",
        &fp,
        "--identity",
        "n3",
        "--timeout",
        "60",
        "--target",
        "n1",
        "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let last = records(d).into_iter().last().unwrap();
    let r = &last["results"]["n1"];
    assert_eq!(r["state"], "success", "{last}");
    assert!(
        r["info"]
            .as_str()
            .unwrap()
            .ends_with("completed on all coordinated targets: n3: failed"),
        "{last}"
    );
}

/// A JOB_WAIT for a job of its own run is answered by how that run's job ended on the node:
/// not by an earlier run's outcome there, and not held up by a later job of the run with the
/// same fingerprint queued behind the wait.
#[test]
fn a_job_wait_in_its_own_run_hears_of_that_runs_job() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let job = "RUN: --skip-cache echo marker-job";
    // An earlier run of the job succeeded on n3: its outcome is in n3's cache.
    let o = d.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--target",
        "n3",
        "--skip-cache",
        "echo marker-job",
        "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let probe = root.path().join("probe.yaml");
    std::fs::write(&probe, format!("- jobs:\n  - {job}\n")).unwrap();
    let fp = fingerprint_of(d, &probe, "echo marker-job");
    // Now the job does not run on n3 (the job before it fails); n2 asks only after that.
    let failing = root.path().join("failing.yaml");
    std::fs::write(
        &failing,
        format!(
            "- targets: [n3]\n  jobs:\n  - RUN: --skip-cache false\n  - {job}\n\
             - targets: [n2]\n  async: true\n  jobs:\n  - WAIT: --seconds 2\n\
             \x20 - JOB_WAIT: {fp} --identity n3 --timeout 60\n"
        ),
    )
    .unwrap();
    let o = d.cli(&["orchestrate", failing.to_str().unwrap(), "--poll"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let recs = records(d);
    let wait = record(&recs, &format!("JOB_WAIT: {fp} --identity n3 --timeout 60"));
    assert!(
        wait["results"]["n2"]["info"]
            .as_str()
            .unwrap()
            .ends_with("completed on all coordinated targets: n3: failed"),
        "{wait}"
    );
    // The same job before and after a JOB_WAIT on its own node: the one before answers it.
    let twice = root.path().join("twice.yaml");
    std::fs::write(
        &twice,
        format!(
            "- targets: [n1]\n  jobs:\n  - {job}\n\
             - targets: [n1]\n  jobs:\n  - JOB_WAIT: {fp} --identity n1 --timeout 60\n\
             - targets: [n1]\n  jobs:\n  - {job}\n"
        ),
    )
    .unwrap();
    let o = d.cli(&["orchestrate", twice.to_str().unwrap(), "--poll"]);
    assert!(o.status.success(), "{}", text(&o));
    let recs = records(d);
    let wait = record(&recs, &format!("JOB_WAIT: {fp} --identity n1 --timeout 60"));
    let r = &wait["results"]["n1"];
    assert!(
        r["info"]
            .as_str()
            .unwrap()
            .ends_with("completed on all coordinated targets: n1: success"),
        "{wait}"
    );
    assert!(r["execution_secs"].as_f64().unwrap() < 50.0, "{wait}");
}

/// A JOB_WAIT for a job of its own run that asks only after the awaited node restarted, with
/// the job's outcome evicted from that node's cache meanwhile, hears how the run's job ended
/// there (kept on disk with the run) instead of waiting out its timeout.
#[test]
fn a_job_wait_of_its_own_run_asking_after_a_restart_hears_how_the_job_ended() {
    let root = root();
    let mut nodes = mesh(root.path());
    let job = "RUN: echo kept-outcome";
    let probe = root.path().join("probe.yaml");
    std::fs::write(&probe, format!("- jobs:\n  - {job}\n")).unwrap();
    let fp = fingerprint_of(&nodes[0], &probe, "echo kept-outcome");
    let wait = format!("JOB_WAIT: {fp} --identity n3 --timeout 30");
    let file = root.path().join("run.yaml");
    std::fs::write(
        &file,
        format!(
            "- targets: [n3]\n  jobs:\n  - {job}\n  - CACHEEVICT: jobs\n\
             - targets: [n2]\n  async: true\n  jobs:\n  - WAIT: --seconds 12\n  - {wait}\n"
        ),
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // n3's results reached the submitter: what it wrote of its jobs before them is on disk.
    wait_for_job(&nodes, "CACHEEVICT: jobs", "n3 never reported", |r| {
        reported(r, "n3")
    });
    let restarted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    crash_and_restart(&mut nodes[2]);
    let r = job_wait_heard(&nodes, &wait, "n3: success");
    let (asked_from, _) = window(&r, "n2");
    assert!(
        asked_from > restarted_at,
        "the JOB_WAIT began before n3's restart, so it says nothing of what n3 kept: {r}"
    );
}

/// The submitter dies right after submitting, before its own part of the run was accepted on
/// its disk: back, it reports that part interrupted, and a JOB_WAIT of the run on another node
/// that asks it only then hears the job failed there, instead of waiting out its timeout for
/// a run the submitter will never take in.
#[test]
fn a_job_wait_on_a_submitter_that_died_before_taking_its_own_part_hears_it_failed() {
    let root = root();
    let mut nodes = mesh(root.path());
    let job = "RUN: sleep 2; echo own-part";
    let probe = root.path().join("probe.yaml");
    std::fs::write(&probe, format!("- jobs:\n  - {job}\n")).unwrap();
    let fp = fingerprint_of(&nodes[0], &probe, "echo own-part");
    let wait = format!("JOB_WAIT: {fp} --identity n1 --timeout 40");
    let file = root.path().join("run.yaml");
    std::fs::write(
        &file,
        format!(
            "- targets: [n1]\n  jobs:\n  - {job}\n\
             - targets: [n2]\n  jobs:\n  - WAIT: --seconds 6\n  - {wait}\n"
        ),
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    nodes[0].kill9();
    std::thread::sleep(Duration::from_millis(300));
    nodes[0].restart();
    let r = wait_for_job(&nodes, &wait, "the JOB_WAIT never reported", |r| {
        reported(r, "n2")
    });
    // The kill came before n1's acceptance of its own part reached the disk (within the
    // store's second), as this test means.
    assert!(
        nodes[0]
            .log()
            .contains("own part of a run it submitted was not taken in on disk"),
        "n1 had taken in its part before the kill: {}",
        nodes[0].log()
    );
    let result = &r["results"]["n2"];
    assert_eq!(result["state"], "success", "{r}");
    assert!(
        result["info"]
            .as_str()
            .unwrap_or_default()
            .ends_with("completed on all coordinated targets: n1: failed"),
        "{r}"
    );
    let recs = records(&nodes[0]);
    let own = record(&recs, job);
    assert!(
        own["results"]["n1"]["info"]
            .as_str()
            .is_some_and(|i| i.starts_with("interrupted")),
        "{own}"
    );
}

/// A JOB_WAIT naming a node this node does not know yet (it joins moments later) looks for
/// it again instead of failing at once, and ends when the job has run there.
#[test]
fn a_job_wait_on_a_node_that_joins_moments_later_waits_for_it() {
    // n3 must be seen within the 10 s JOB_WAIT looks for a name; a start too slow for that
    // (a loaded machine) says nothing either way, and the test begins again.
    for attempt in 1..=3 {
        if job_wait_on_a_node_that_joins_moments_later(attempt) {
            return;
        }
    }
    panic!("n3 never joined within 9 s of the JOB_WAIT in 3 attempts: this machine is too slow");
}

/// One attempt of [`a_job_wait_on_a_node_that_joins_moments_later_waits_for_it`]: `false` if
/// n3 took too long to join for it to tell anything.
fn job_wait_on_a_node_that_joins_moments_later(attempt: u32) -> bool {
    let root = root();
    let mut nodes = mesh_of(root.path(), 2);
    let awaited = "echo awaited";
    let fp = match jobs::JobSpec::parse("RUN", awaited, &BTreeMap::new()) {
        Ok(jobs::ParseOutcome::Spec(spec)) => spec.fingerprint().to_string(),
        other => panic!("RUN {awaited} does not parse: {other:?}"),
    };
    let wait = format!("JOB_WAIT: {fp} --identity n3 --timeout 60");
    let file = root.path().join("wait.yaml");
    std::fs::write(&file, format!("- targets: [n1]\n  jobs:\n  - {wait}\n")).unwrap();
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let submitted = Instant::now();
    // n3 joins now; once n1 sees it, the awaited job runs there.
    let token = nodes[0].join_token();
    nodes.push(Daemon::start_isolated(
        root.path(),
        "n3",
        &["--token", &token],
    ));
    wait_for(Duration::from_secs(20), "n1 to see n3", || {
        e2e_tests::alive_names(&nodes[0].status()?)
            .contains(&"n3".to_string())
            .then_some(())
    });
    if submitted.elapsed() >= Duration::from_secs(9) {
        eprintln!(
            "attempt {attempt}: n3 took {:?} to join, too close to the 10 s JOB_WAIT looks for \
             a name: the test says nothing on a machine this slow",
            submitted.elapsed()
        );
        return false;
    }
    let o = nodes[0].cli(&["exec", "--verb", "RUN", awaited, "--target", "n3", "--poll"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = wait_for_job(&nodes, &wait, "the JOB_WAIT never reported", |r| {
        reported(r, "n1")
    });
    assert_eq!(r["results"]["n1"]["state"], "success", "{r}");
    true
}

/// A node reinstalled under its old name (a new identity; the old one's row says it left) is
/// the one a JOB_WAIT on that name asks.
#[test]
fn job_wait_asks_the_live_node_of_a_reused_name() {
    let root = root();
    let mut nodes = mesh(root.path());
    assert!(nodes[2].terminate().success());
    let token = nodes[0].join_token();
    // A fresh state directory: a new identity under the old name.
    let mut again = Daemon::start(
        root.path(),
        "n3-again",
        &["--name", "n3", "--token", &token],
    );
    wait_for(Duration::from_secs(20), "n1 to see the new n3", || {
        let s = nodes[0].status()?;
        let rows = s["nodes"].as_array()?;
        let n3: Vec<&Value> = rows.iter().filter(|r| r["name"] == "n3").collect();
        (n3.len() == 2 && n3.iter().any(|r| r["state"] == "alive")).then_some(())
    });
    let o = nodes[0].cli(&[
        "exec",
        "--verb",
        "RUN",
        "--skip-cache",
        "--target",
        "n3",
        "echo reused",
        "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let fingerprint = records(&nodes[0]).into_iter().last().unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let o = nodes[0].cli(&[
        "exec",
        "--verb",
        "JOB_WAIT",
        &fingerprint,
        "--identity",
        "n3",
        "--timeout",
        "10",
        "--target",
        "n1",
        "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    again.terminate();
}
