//! A real network partition between real daemons: the submitter on one side of a link, its
//! targets on the other, each side in its own network namespace (and each daemon with its own
//! `/tmp`). The test cuts the link while jobs run and mends it later; needs root and `ip`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use e2e_tests::{Daemon, Link, records, state_of, text, wait_for};
use serde_json::Value;

/// The record of `job_id` at `d`, once `done` holds for it (or a panic naming `what`).
fn wait_for_record(d: &Daemon, job_id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = records(d).into_iter().find(|r| r["job_id"] == job_id);
        if let Some(r) = record.filter(|r| done(r)) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}\n--- n1's log:\n{}",
            records(d).into_iter().find(|r| r["job_id"] == job_id),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `command` on `targets` from `d` without waiting; returns the job id.
fn submit(d: &Daemon, targets: [&str; 2], command: &str) -> String {
    let o = d.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--skip-cache",
        "--target",
        targets[0],
        "--target",
        targets[1],
        command,
    ]);
    e2e_tests::submitted_job_id(&o)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

fn result<'a>(record: &'a Value, node: &str) -> (&'a str, &'a str, &'a str) {
    let r = &record["results"][node];
    (
        r["state"].as_str().unwrap_or(""),
        r["stdout"].as_str().unwrap_or(""),
        r["info"].as_str().unwrap_or(""),
    )
}

/// n1 on side 0 of `link`, n2 and n3 on side 1, each started with `extra`, once all see each
/// other.
fn across(link: &Link, root: &Path, extra: &[&str]) -> [Daemon; 3] {
    let n1 = Daemon::start_isolated_at(root, "n1", link, 0, extra);
    let token = n1.join_token();
    let mut args = vec!["--token", token.as_str()];
    args.extend_from_slice(extra);
    let n2 = Daemon::start_isolated_at(root, "n2", link, 1, &args);
    let n3 = Daemon::start_isolated_at(root, "n3", link, 1, &args);
    let all = ["n1", "n2", "n3"].map(String::from).to_vec();
    for d in [&n1, &n2, &n3] {
        wait_for(Duration::from_secs(30), "the mesh to form", || {
            (e2e_tests::alive_names(&d.status()?) == all).then_some(())
        });
    }
    [n1, n2, n3]
}

/// Waits until the connections across the cut `link` are closed (failed pings): from then on
/// nothing sent before the cut can still arrive by TCP's retransmissions after the mend.
fn connections_closed(n1: &Daemon, far: [&Daemon; 2]) {
    for (d, connected) in [(n1, 0), (far[0], 1), (far[1], 1)] {
        wait_for(
            Duration::from_secs(60),
            "the connections across the cut to close",
            || (d.status()?["self"]["connected_peers"] == connected).then_some(()),
        );
    }
}

/// Jobs that finish while their submitter is cut off, and a job submitted after the cut, are
/// first written off as unreachable (the targets expired) and then, once the link is mended,
/// recorded with their real results; a job submitted on the far side runs there at once and
/// across the link after the mend; no job runs twice on a target.
#[test]
fn a_partition_loses_no_result_and_runs_nothing_twice() {
    // Declared first, so it is removed last: after the daemons in it have stopped.
    let link = Link::create();
    let root = e2e_tests::isolated_root(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let root = root.path();
    // Heartbeats every 5 s: each side takes the other for alive for 10 to 15 s after the cut,
    // time to submit across it on a loaded machine too.
    let [n1, n2, n3] = across(&link, root, &["--heartbeat-interval", "5s"]);
    let far = [n2.peer_id(), n3.peer_id()];

    // Job A starts before the cut and finishes during it.
    let started = root.join("started");
    std::fs::create_dir(&started).unwrap();
    let (ran_a, ran_b) = (root.join("ran-a"), root.join("ran-b"));
    let a = submit(
        &n1,
        ["n2", "n3"],
        &format!(
            "mktemp -p {} >/dev/null; sleep 3; echo x >> {}; echo done-a",
            started.display(),
            ran_a.display()
        ),
    );
    wait_for(
        Duration::from_secs(20),
        "job A to start on n2 and n3",
        || (std::fs::read_dir(&started).ok()?.count() == 2).then_some(()),
    );
    link.cut();
    // Job B is submitted after the cut, before n1 can tell its targets are gone.
    let b = submit(
        &n1,
        ["n2", "n3"],
        &format!("echo x >> {}; echo done-b", ran_b.display()),
    );
    // Job C comes from the far side, for a node on each side: half of it runs at once.
    let ran_c = root.join("ran-c");
    let c = submit(
        &n2,
        ["n3", "n1"],
        &format!("echo x >> {}; echo done-c", ran_c.display()),
    );
    let r = wait_for_record(&n2, &c, "job C on n3, beside its submitter", |r| {
        result(r, "n3").0 == "success"
    });
    // No answer from n1, or n2's write-off of it: job C waits behind job A on n3 (one
    // synchronous queue), about as long as n2 takes to see n1 expire.
    let (state, _, info) = result(&r, "n1");
    assert!(
        state.is_empty() || (state == "failed" && info.starts_with("unreachable")),
        "n1 answered across a cut link: {r}"
    );

    wait_for(
        Duration::from_secs(30),
        "n1 to see n2 and n3 expire",
        || {
            let status = n1.status()?;
            far.iter()
                .all(|p| state_of(&status, p).as_deref() == Some("expired"))
                .then_some(())
        },
    );
    for (job, what) in [(&a, "job A"), (&b, "job B")] {
        let r = wait_for_record(&n1, job, &format!("{what} written off"), |r| {
            ["n2", "n3"].iter().all(|n| result(r, n).0 == "failed")
        });
        for n in ["n2", "n3"] {
            assert!(result(&r, n).2.starts_with("unreachable"), "{what}: {r}");
        }
    }
    // A partition longer than the connections across it last.
    connections_closed(&n1, [&n2, &n3]);
    wait_for(
        Duration::from_secs(20),
        "job A to finish on the far side",
        || (lines(&ran_a) == 2).then_some(()),
    );
    assert_eq!(lines(&ran_b), 0, "job B crossed a cut link");
    assert_eq!(lines(&ran_c), 1, "job C crossed a cut link");

    link.mend();
    for (job, out, what) in [(&a, "done-a", "job A"), (&b, "done-b", "job B")] {
        let r = wait_for_record(&n1, job, &format!("{what}'s real results"), |r| {
            ["n2", "n3"].iter().all(|n| result(r, n).0 == "success")
        });
        for n in ["n2", "n3"] {
            assert_eq!(result(&r, n).1, out, "{what} on {n}: {r}");
        }
    }
    let r = wait_for_record(&n2, &c, "job C's result from n1", |r| {
        ["n1", "n3"].iter().all(|n| result(r, n).0 == "success")
    });
    assert_eq!(result(&r, "n1").1, "done-c", "{r}");
    // Resends after the mend ran nothing twice (a late duplicate would land within this).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lines(&ran_a), 2, "job A ran again");
    assert_eq!(lines(&ran_b), 2, "job B ran other than once per target");
    assert_eq!(lines(&ran_c), 2, "job C ran other than once per target");
    drop((n1, n2, n3));
}

/// Submits from `n1` to all three nodes one entry whose first job marks its start under
/// `root` and sleeps 2 s, then the `jobs` given (YAML lines of the entry's job list), and waits
/// until it has started on every node; returns the run's job ids, in order.
fn start_on_all(root: &Path, n1: &Daemon, jobs: &[&str]) -> Vec<String> {
    start_on(root, n1, &["n1", "n2", "n3"], jobs)
}

/// [`start_on_all`] on the `targets` named.
fn start_on(root: &Path, n1: &Daemon, targets: &[&str], jobs: &[&str]) -> Vec<String> {
    let started = root.join("started");
    std::fs::create_dir(&started).unwrap();
    let mut yaml = format!(
        "- jobs:\n  - RUN: --skip-cache mktemp -p {} >/dev/null; sleep 3\n",
        started.display()
    );
    for job in jobs {
        yaml.push_str(&format!("  - {job}\n"));
    }
    let file = root.join("orchestration.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut args = vec!["orchestrate", file.to_str().unwrap()];
    for n in targets {
        args.extend(["--target", n]);
    }
    let o = n1.cli(&args);
    assert!(o.status.success(), "{}", text(&o));
    let ids: Vec<String> = records(n1)
        .iter()
        .map(|r| r["job_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), jobs.len() + 1);
    // Back at once once the first job has started everywhere: the caller's cut lands while
    // it sleeps, before any later job begins.
    wait_for(
        Duration::from_secs(20),
        "the run to start on every target",
        || (std::fs::read_dir(&started).ok()?.count() == targets.len()).then_some(()),
    );
    ids
}

/// A QUERY whose far targets are cut off from their submitter when they send their values:
/// the submitter's own QUERY goes on with its own value once the far side is written off; the
/// far values are sent again until they arrive, after the mend, and then every target gets
/// the whole set (the far QUERY jobs finish with it, the submitter merges it into its args).
#[test]
fn a_query_across_a_partition_completes_after_the_mend() {
    let link = Link::create();
    let root = e2e_tests::isolated_root(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let root = root.path();
    let [n1, n2, n3] = across(&link, root, &[]);
    let ids = start_on_all(
        root,
        &n1,
        &[
            "RUN: --skip-cache --stdout-arg token echo \"token-$$\"",
            "QUERY: token --timeout 120",
            "RUN: --skip-cache echo \"{{ query | length }}\"",
        ],
    );
    link.cut();
    connections_closed(&n1, [&n2, &n3]);
    link.mend();
    for id in &ids {
        wait_for_record(&n1, id, "every job's real result", |r| {
            ["n1", "n2", "n3"]
                .iter()
                .all(|n| result(r, n).0 == "success")
        });
    }
    let last = records(&n1)
        .into_iter()
        .find(|r| r["job_id"] == ids[3].as_str())
        .unwrap();
    // n1 went on during the cut with what it had; the far side saw all three values.
    assert_eq!(result(&last, "n1").1, "1", "{last}");
    for n in ["n2", "n3"] {
        assert_eq!(result(&last, n).1, "3", "{n}: {last}");
    }
    // ... and n1 has the whole set too, from the aggregate sent again.
    wait_for(
        Duration::from_secs(20),
        "n1's args to hold every value",
        || {
            let o = n1.cli(&["manage", "--dump-cache"]);
            let cache: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            (cache["args"]["query"].as_object()?.len() == 3).then_some(())
        },
    );
    drop((n1, n2, n3));
}

/// A `--no-wait` QUERY on targets cut off from their submitter until they are written off:
/// after the mend each far target's result and value travel again, and the result may come
/// first. The values still make the whole set, which every target gets, so the QUERY_WAIT
/// for all three values ends everywhere (before, a value behind its result was dropped, and
/// every QUERY_WAIT timed out).
#[test]
fn a_no_wait_query_across_a_partition_gives_every_target_the_whole_set() {
    no_wait_query_across_a_cut(&["n1", "n2", "n3"], Duration::ZERO);
}

/// The same with the submitter no target: the far results both came back (after the mend)
/// ahead of their values, and the collection had gone while the targets were written off,
/// holding no value. The values still make the set of both, and each target gets it (before,
/// both values were dropped and every QUERY_WAIT timed out).
#[test]
fn a_no_wait_query_of_far_targets_only_gives_them_the_whole_set_after_the_mend() {
    // Long enough for the far values' resends to back off to several seconds: after the
    // mend, the results (sent again at once when the submitter is seen back) come first.
    no_wait_query_across_a_cut(&["n2", "n3"], Duration::from_secs(20));
}

/// A `--no-wait` QUERY on `targets` from n1, its far targets (n2, n3) cut off until written
/// off, the cut mended `cut_for` after that; every target's QUERY_WAIT for every value, and
/// the job after it, must end with the whole set.
fn no_wait_query_across_a_cut(targets: &[&str], cut_for: Duration) {
    let link = Link::create();
    let root = e2e_tests::isolated_root(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let root = root.path();
    let [n1, n2, n3] = across(&link, root, &[]);
    let identities: Vec<String> = targets.iter().map(|t| format!("--identity {t}")).collect();
    let query_wait = format!(
        "QUERY_WAIT: --skip-cache --query-timeout 150 nowait {}",
        identities.join(" ")
    );
    let ids = start_on(
        root,
        &n1,
        targets,
        &[
            "RUN: --skip-cache --stdout-arg nowait echo \"v-$$\"",
            "QUERY: --skip-cache --no-wait nowait",
            &query_wait,
            "RUN: --skip-cache echo \"{{ query | length }}\"",
        ],
    );
    link.cut();
    // The far QUERYs ran during the cut; the submitter writes their nodes off.
    wait_for_record(&n1, &ids[2], "the far targets written off", |r| {
        ["n2", "n3"]
            .iter()
            .all(|n| result(r, n).2.starts_with("unreachable"))
    });
    std::thread::sleep(cut_for);
    link.mend();
    for id in &ids {
        wait_for_record(&n1, id, "every job's real result", |r| {
            targets.iter().all(|n| result(r, n).0 == "success")
        });
    }
    let last = records(&n1)
        .into_iter()
        .find(|r| r["job_id"] == ids[4].as_str())
        .unwrap();
    for n in targets {
        assert_eq!(result(&last, n).1, targets.len().to_string(), "{n}: {last}");
    }
    drop((n1, n2, n3));
}

/// A QUERY whose far targets lose their submitter: their wait for the set times out saying
/// the submitter itself is not answering there, not only that other targets have not reported.
#[test]
fn a_query_timed_out_far_from_its_submitter_says_the_submitter_is_gone() {
    let link = Link::create();
    let root = e2e_tests::isolated_root(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let root = root.path();
    let [n1, n2, n3] = across(&link, root, &[]);
    let ids = start_on_all(
        root,
        &n1,
        &["QUERY: --skip-cache --timeout 10 hostname_here"],
    );
    link.cut();
    let query = &ids[1];
    // Far QUERYs time out during the cut (each far node then holds two results for n1: its
    // first job's and its QUERY's); their results come after the mend.
    for far in [&n2, &n3] {
        wait_for(Duration::from_secs(60), "the far QUERY to time out", || {
            let owed = far.status()?["self"]["results_owed"].clone();
            (owed[0]["results"] == 2).then_some(())
        });
    }
    link.mend();
    let record = wait_for_record(&n1, query, "the far results", |r| {
        ["n2", "n3"]
            .iter()
            .all(|n| result(r, n).0 == "failed" && !result(r, n).2.starts_with("unreachable"))
    });
    for n in ["n2", "n3"] {
        let stderr = record["results"][n]["stderr"].as_str().unwrap_or_default();
        assert!(
            stderr.contains("it comes from the submitter n1")
                && stderr.contains("n1 itself is not answering here (expired)"),
            "{n}: {record}"
        );
    }
    drop((n1, n2, n3));
}

/// A submitter cut off from every other member: its `--poll` writes its targets off, and says
/// that this node, hearing nobody, may be the one cut off (the targets may still be running).
#[test]
fn a_poll_from_a_cut_off_submitter_says_it_may_be_the_one_cut_off() {
    let link = Link::create();
    let root = e2e_tests::isolated_root(Path::new(env!("CARGO_TARGET_TMPDIR")));
    // Heartbeats of 5 s: the targets are still alive to n1 when it takes the submission
    // right after the cut (with 1 s ones a slow machine could see them gone first, and
    // refuse it).
    let [n1, n2, n3] = across(&link, root.path(), &["--heartbeat-interval", "5s"]);
    link.cut();
    let o = n1.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--skip-cache",
        "--target",
        "n2",
        "--target",
        "n3",
        "true",
        "--poll",
    ]);
    link.mend();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("written off as unreachable")
            && said.contains("this node hears no other member of the mesh now"),
        "{}",
        text(&o)
    );
    drop((n1, n2, n3));
}

/// Whether `peer` stays alive in `d`'s view through `steady` in a row, within `timeout`.
fn heard_steadily(d: &Daemon, peer: &str, steady: Duration, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut alive_since: Option<Instant> = None;
    while Instant::now() < deadline {
        let alive = d
            .status()
            .and_then(|s| state_of(&s, peer))
            .is_some_and(|state| state == "alive");
        if !alive {
            alive_since = None;
        } else if alive_since.get_or_insert_with(Instant::now).elapsed() >= steady {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// A node killed while cut off and started again as soon as the link is mended comes back
/// while its peer still holds its old connection (pings have not closed it yet). Gossipsub
/// tells a peer its subscriptions only on a first connection, so the restarted node would
/// never hear its peer's, and the peer would see it come and go for ever; it drops such a
/// connection, and both are heard steadily after.
#[test]
fn a_node_restarted_across_a_mended_cut_is_heard_steadily() {
    // Declared first, so it is removed last: after the daemons in it have stopped.
    let link = Link::create();
    let root = e2e_tests::isolated_root(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let root = root.path();
    let mut n1 = Daemon::start_isolated_at(root, "n1", &link, 0, &[]);
    let token = n1.join_token();
    let n2 = Daemon::start_isolated_at(root, "n2", &link, 1, &["--token", &token]);
    let (n1_id, n2_id) = (n1.peer_id(), n2.peer_id());
    wait_for(Duration::from_secs(30), "the mesh to form", || {
        (state_of(&n2.status()?, &n1_id)? == "alive").then_some(())
    });
    link.cut();
    n1.kill9();
    link.mend();
    n1.restart();
    // Expiry is three 1 s heartbeats: eight seconds alive in a row is steady.
    let steady = Duration::from_secs(8);
    assert!(
        heard_steadily(&n2, &n1_id, steady, Duration::from_secs(90)),
        "n2 never heard n1 steadily:\n--- n1:\n{}\n--- n2:\n{}",
        n1.log(),
        n2.log()
    );
    assert!(
        heard_steadily(&n1, &n2_id, steady, Duration::from_secs(30)),
        "n1 never heard n2 steadily:\n{}",
        n1.log()
    );
}

/// Whether `d`'s `status` warns that `peer` is alive but not reachable directly.
fn says_out_of_reach(d: &Daemon, peer: &str) -> Option<()> {
    let warnings = d.status()?["self"]["warnings"].to_string();
    (warnings.contains("not reachable directly from this node")
        && warnings.contains(&format!("{peer} for ")))
    .then_some(())
}

/// A firewall between two machines (a partial partition): n1 and n2 cannot reach each other,
/// both reach n3 and n4, so each sees the other alive through them. Each side's `status` says
/// the other is out of its reach; a file n1 sends to n2, n3 and n4 (a run for three is
/// gossiped, so it reaches n2 through the others) lands on n2 from the other holders (n2 asks
/// n1 in vain, then them, which may not have it yet when first asked); n2's result reaches n1
/// once the cut is mended. A run for n2 alone (delivered directly, which cannot reach it) is
/// announced after all and runs on n2 during the cut.
#[test]
fn a_partial_partition_is_named_and_a_file_goes_around_it() {
    // Declared first, so it is removed last: after the daemons in it have stopped.
    let fleet = e2e_tests::Fleet::create(4);
    let root = e2e_tests::isolated_root(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let root = root.path();
    let n1 = Daemon::start_isolated_in(root, "n1", &fleet, 0, &[]);
    let token = n1.join_token();
    let n3 = Daemon::start_isolated_in(root, "n3", &fleet, 2, &["--token", &token]);
    let n4 = Daemon::start_isolated_in(root, "n4", &fleet, 3, &["--token", &token]);
    let n3_address = n3.status().expect("status")["self"]["listen_addresses"][0]
        .as_str()
        .expect("n3 listens")
        .to_string();
    fleet.cut(0, 1);
    let n2 = Daemon::start_isolated_in(
        root,
        "n2",
        &fleet,
        1,
        &["--token", &token, "--peer", &n3_address],
    );
    let all = ["n1", "n2", "n3", "n4"].map(String::from).to_vec();
    for d in [&n1, &n2, &n3, &n4] {
        wait_for(
            Duration::from_secs(30),
            "the mesh to form through n3",
            || (e2e_tests::alive_names(&d.status()?) == all).then_some(()),
        );
    }
    let file = root.join("payload");
    let payload: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &payload).unwrap();
    let o = n1.cli(&[
        "exec",
        "--verb",
        "ADD",
        "--target",
        "n2",
        "--target",
        "n3",
        "--target",
        "n4",
        "--timeout",
        "120",
        file.to_str().unwrap(),
        "/tmp/landed",
    ]);
    let job_id = e2e_tests::submitted_job_id(&o);
    wait_for(
        Duration::from_secs(90),
        "n1 to name n2 as out of its reach",
        || says_out_of_reach(&n1, "n2"),
    );
    wait_for(
        Duration::from_secs(30),
        "n2 to name n1 as out of its reach",
        || says_out_of_reach(&n2, "n1"),
    );
    // The log says so too, once.
    let said = "n2 is alive by the mesh's table (last heard ";
    wait_for(Duration::from_secs(10), "n1's log to say so", || {
        let log = n1.log();
        (log.matches(said).count() == 1
            && log.contains("but not reachable directly from this node"))
        .then_some(())
    });
    // Followed with `--poll`, which says why it waits (on stderr: stdout is the jobs').
    let (polled, notices) = (root.join("poll.out"), root.join("poll.err"));
    let mut poll = n1
        .cli_command(&[
            "exec",
            "--verb",
            "RUN",
            "--target",
            "n2",
            "echo around",
            "--poll",
        ])
        .stdout(std::fs::File::create(&polled).unwrap())
        .stderr(std::fs::File::create(&notices).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while n2
        .status()
        .is_none_or(|s| s["self"]["results_owed"][0]["results"] != 2)
    {
        assert!(
            Instant::now() < deadline,
            "n2 never held its two results for n1:\n--- n2:\n{}\n--- n3:\n{}",
            n2.log(),
            n3.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for(
        Duration::from_secs(30),
        "the client following the run for n2 to say why it waits",
        || {
            std::fs::read_to_string(&notices)
                .ok()?
                .contains("Waiting for n2: alive by the mesh's table but out of this node's reach")
                .then_some(())
        },
    );
    fleet.mend(0, 1);
    let record = wait_for_record(&n1, &job_id, "both results after the mend", |r| {
        r["results"].as_object().is_some_and(|m| m.len() == 3)
    });
    for node in ["n2", "n3", "n4"] {
        assert_eq!(result(&record, node).0, "success", "{node}: {record}");
    }
    let (status, _) = wait_for(Duration::from_secs(60), "the client to finish", || {
        poll.try_wait().unwrap()
    });
    let shown = std::fs::read_to_string(&polled).unwrap();
    assert!(status.success(), "{status:?}: {shown}");
    let alone_id = shown
        .lines()
        .find_map(|l| l.strip_prefix("Job Success: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no success line: {shown}"))
        .to_string();
    let record = wait_for_record(&n1, &alone_id, "n2's result after the mend", |r| {
        r["results"].as_object().is_some_and(|m| m.len() == 1)
    });
    assert_eq!(
        result(&record, "n2"),
        ("success", "around", "echo around"),
        "{record}"
    );
    // The copy on n2 is the file, byte for byte (its /tmp is its own).
    let compare = format!("cmp /tmp/landed {}", file.display());
    let o = n1.cli(&[
        "exec", "--verb", "RUN", "--target", "n2", &compare, "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let log = n1.log();
    assert_eq!(log.matches(said).count(), 1, "{log}");
    assert!(log.contains("n2 is reachable directly again"), "{log}");
}

/// n3 is cut off from both others while all three run the same jobs in step: written off,
/// it reports each job after the mend right when the others do, while their last results may
/// still be on their way to disk. Every record ends complete and nothing waits for ever (a
/// late result read such a record back from the disk without the others' last result, and it
/// waited for that one for ever: `manage --follow-run` hung, and a purge wrote the record back
/// without it).
#[test]
fn late_results_racing_the_last_others_complete_every_record() {
    // Declared first, so it is removed last: after the daemons in it have stopped.
    let fleet = e2e_tests::Fleet::create(3);
    let root = e2e_tests::isolated_root(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let root = root.path();
    let n1 = Daemon::start_isolated_in(root, "n1", &fleet, 0, &[]);
    let token = n1.join_token();
    let n2 = Daemon::start_isolated_in(root, "n2", &fleet, 1, &["--token", &token]);
    let n3 = Daemon::start_isolated_in(root, "n3", &fleet, 2, &["--token", &token]);
    let all = ["n1", "n2", "n3"].map(String::from).to_vec();
    for d in [&n1, &n2, &n3] {
        wait_for(Duration::from_secs(30), "the mesh to form", || {
            (e2e_tests::alive_names(&d.status()?) == all).then_some(())
        });
    }
    const JOBS: usize = 80;
    let mut orchestration = String::from("- targets: [n1, n2, n3]\n  jobs:\n");
    for i in 0..JOBS {
        orchestration.push_str(&format!("  - RUN: --skip-cache echo {i}; sleep 0.3\n"));
    }
    let file = root.join("lockstep.yaml");
    std::fs::write(&file, orchestration).unwrap();
    let o = n1.cli(&["orchestrate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // In step on every node, a few jobs in.
    wait_for(Duration::from_secs(30), "the first jobs' results", || {
        let recs = records(&n1);
        let done = recs
            .iter()
            .filter(|r| r["results"]["n3"]["state"] == "success");
        (done.count() >= 3).then_some(())
    });
    fleet.cut(0, 2);
    fleet.cut(1, 2);
    let n3_id = n3.peer_id();
    wait_for(Duration::from_secs(30), "n1 to see n3 expire", || {
        (state_of(&n1.status()?, &n3_id)? == "expired").then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    fleet.mend(0, 2);
    fleet.mend(1, 2);
    // Every node's real result of every job (n3's came late; the others may still be
    // running their last jobs when n3 is done with its own: n3 ran alone meanwhile).
    wait_for(
        Duration::from_secs(90),
        "every node's real result of every job",
        || {
            let recs = records(&n1);
            (recs.len() == JOBS
                && recs.iter().all(|r| {
                    ["n1", "n2", "n3"]
                        .iter()
                        .all(|node| r["results"][node]["state"] == "success")
                }))
            .then_some(())
        },
    );
    // The log says n3 is back with its results once, not once per job.
    let log = n1.log();
    assert_eq!(
        log.matches("n3, written off as unreachable, reports after all")
            .count(),
        1,
        "{log}"
    );
    // Nothing is still waiting: following the run again ends at once, and a purge keeps
    // nothing.
    let o = n1.cli(&["manage", "--list-jobs", "--filter", "processing", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let open: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(open.is_empty(), "records still waiting: {open:?}");
    let mut follow = n1
        .cli_command(&["manage", "--follow-run", "last"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let followed = wait_for(Duration::from_secs(20), "`--follow-run` to end", || {
        follow.try_wait().unwrap()
    });
    assert!(followed.0.success(), "{:?}", followed.0);
    let o = n1.cli(&["manage", "--purge-jobs"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("Purged every job record ({JOBS})")),
        "{}",
        text(&o)
    );
}
