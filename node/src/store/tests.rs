use std::collections::BTreeMap;

use super::*;

fn outcome(job: &str) -> jobs::executor::Outcome {
    jobs::executor::Outcome {
        job_id: job.into(),
        state: jobs::executor::ResultState::Success,
        stdout: String::new(),
        stderr: String::new(),
        info: String::new(),
        execution_secs: 0.0,
        started_unix_ms: 0,
        finished_unix_ms: 0,
    }
}

/// A result of run `r` owed to `o`.
fn entry(job: &str) -> OutboxEntry {
    OutboxEntry {
        to: NodeId("o".into()),
        result: JobResult {
            run_id: "r".into(),
            node: NodeId("n".into()),
            outcome: outcome(job),
        },
        finished_on_boot: None,
    }
}

/// A node's successful result with `stdout`.
fn success(stdout: &str) -> NodeResult {
    NodeResult {
        state: jobs::executor::ResultState::Success,
        stdout: stdout.into(),
        stderr: String::new(),
        info: String::new(),
        execution_secs: 0.0,
        roundtrip_secs: 0.0,
        finished_unix_ms: 0,
    }
}

fn record(id: &str, created: u64) -> JobRecord {
    JobRecord {
        job_id: id.into(),
        run_id: "r".into(),
        parent_id: "p".into(),
        parent_fingerprint: String::new(),
        parent_name: None,
        verb: "RUN".into(),
        definition: "RUN: true".into(),
        fingerprint: String::new(),
        originator: "me".into(),
        created_unix_ms: created,
        created_on_boot: None,
        submission: 0,
        position: 0,
        nodes: vec![],
        results: BTreeMap::new(),
    }
}

#[test]
fn a_group_keeps_only_the_last_write_of_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    store.put_outbox(&entry("a"));
    store.put_outbox(&entry("b"));
    store.delete_outbox(&entry("a").result);
    store.put_record(&record("x", 1));
    store.purge_jobs(0);
    store.put_record(&record("y", 2));
    store.flush();
    let left: Vec<String> = store
        .outbox()
        .into_iter()
        .map(|e| e.result.outcome.job_id)
        .collect();
    assert_eq!(left, vec!["b"]);
    let ids: Vec<String> = store.records().into_iter().map(|r| r.job_id).collect();
    assert_eq!(
        ids,
        vec!["y"],
        "a write after a purge survives it, one before does not"
    );
}

#[test]
fn a_pending_row_without_a_value_still_names_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    // As an older version wrote it: the key alone; and one that cannot be read.
    store.send(Op::Put(PENDING, "r/j1".into(), Vec::new()));
    store.send(Op::Put(PENDING, "r/j2".into(), vec![0xff, 0x00]));
    store.flush();
    let mut pending = store.pending_jobs()["r"].clone();
    pending.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    let ids: Vec<&str> = pending.iter().map(|p| p.job_id.as_str()).collect();
    assert_eq!(ids, ["j1", "j2"]);
    assert!(pending.iter().all(|p| p.fingerprint.is_none()));
}

/// A database of a later layout is refused, naming it; older ones are marked with this
/// release's layout when opened.
#[test]
fn a_database_written_by_a_newer_release_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get::<u64>(META, FORMAT_KEY), Some(STORE_FORMAT));
        store.send(Op::Put(
            META,
            FORMAT_KEY.into(),
            encode(&(STORE_FORMAT + 1)),
        ));
        store.flush();
    }
    // The writer thread holds the database until its channel closes.
    let mut tries = 0;
    let e = loop {
        let Err(e) = Store::open(&path) else {
            panic!("a newer database was opened");
        };
        let e = e.to_string();
        tries += 1;
        if !e.contains("already open") || tries == 100 {
            break e;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        e.starts_with(&format!("database {}: written by a newer", path.display()))
            && e.contains(&format!(
                "(database format {}; this release reads up to {STORE_FORMAT})",
                STORE_FORMAT + 1
            )),
        "{e}"
    );
}

#[test]
fn query_values_survive_a_reopen_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let value = serde_json::json!({"a": [1, -2, 3.5, null, true], "b": {"c": "d"}});
    let kept = |job: &str, node: &str| QueryValue {
        job_id: job.into(),
        node: NodeId(node.into()),
        name: "x".into(),
        value: value.clone(),
    };
    {
        let store = Store::open(&path).unwrap();
        store.put_query_value(&kept("j", "n1"));
        store.put_query_value(&kept("j", "n2"));
        store.put_query_value(&kept("k", "n1"));
        store.delete_query_value("j", &NodeId("n1".into()));
        store.flush();
    }
    let store = reopen(&path);
    assert_eq!(store.query_values(), vec![kept("j", "n2"), kept("k", "n1")]);
}

/// Reopens the database at `path` once the last store on it has let it go (the writer
/// thread does so once its queue closes).
fn reopen(path: &Path) -> Store {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(path) {
            Ok(store) => break store,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn a_runs_outcomes_survive_a_reopen_and_go_with_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let fp = |text: &str| jobs::Fingerprint::of(&text);
    let (a, b) = (fp("RUN: true"), fp("RUN: false"));
    {
        let store = Store::open(&path).unwrap();
        store.put_run_outcome("r1", &a, true);
        store.put_run_outcome("r1", &b, false);
        store.put_run_outcome("r2", &a, false);
        store.flush();
    }
    let store = reopen(&path);
    let (mut kept, damaged) = store.run_outcomes();
    assert!(damaged.is_empty(), "{damaged:?}");
    for outcomes in kept.values_mut() {
        outcomes.sort_by_key(|(f, _)| f.to_hex());
    }
    let mut r1 = vec![(a, true), (b, false)];
    r1.sort_by_key(|(f, _)| f.to_hex());
    assert_eq!(kept.get("r1"), Some(&r1));
    assert_eq!(kept.get("r2"), Some(&vec![(a, false)]));
    store.delete_accepted("r1", &r1);
    // A row that does not read is named as such, to be deleted.
    store.send(Op::Put(RUN_OUTCOMES, "r3/not-hex".into(), encode(&true)));
    store.send(Op::Put(RUN_OUTCOMES, run_outcome_key("r4", &a), vec![0xff]));
    store.flush();
    let (kept, mut damaged) = store.run_outcomes();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept.contains_key("r2"));
    damaged.sort();
    assert_eq!(
        damaged,
        vec!["r3/not-hex".to_string(), run_outcome_key("r4", &a)]
    );
    store.delete_run_outcomes(damaged);
    store.flush();
    assert_eq!(store.run_outcomes().1, Vec::<String>::new());
}

#[test]
fn clears_and_writes_in_one_group_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let result = NodeResult::from_outcome(outcome("x"), 0);
    // A purge (both clears) lands in the same group as a result before it and a
    // submission after it: the submission stays.
    store.put_result("x", "n", &result);
    store.send(Op::Clear(JOBS));
    store.send(Op::Clear(RESULTS));
    store.put_record(&record("y", 2));
    store.flush();
    let ids: Vec<String> = store.records().into_iter().map(|r| r.job_id).collect();
    assert_eq!(ids, vec!["y"]);
}

#[test]
fn an_accepted_run_and_a_finished_jobs_result_are_each_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let jobs: Vec<PendingJob> = (0..MAX_GROUP + 10)
        .map(|i| PendingJob {
            job_id: format!("j{i}"),
            fingerprint: Some(jobs::Fingerprint([i as u8; 32])),
            parent_id: "p".into(),
        })
        .collect();
    let accepted = Accepted {
        originator: NodeId("o".into()),
        stream: false,
        accepted_unix_ms: 1,
        seq: 1,
        accepted_on_boot: None,
    };
    store.put_accepted("r", &accepted, &jobs);
    store.job_finished("r", "j0", Some(&entry("j0")), None);
    store.job_finished("r", "j1", None, None);
    store.flush();
    let pending = &store.pending_jobs()["r"];
    assert_eq!(pending.len(), MAX_GROUP + 8);
    // What was kept of each job comes back with it.
    assert!(pending.iter().any(|p| p == &jobs[5]), "{:?}", &pending[..3]);
    let owed: Vec<String> = store
        .outbox()
        .into_iter()
        .map(|e| e.result.outcome.job_id)
        .collect();
    assert_eq!(owed, vec!["j0"]);
}

/// A purge that keeps open jobs leaves their rows as they are (results whole, QUERY
/// values) and removes the rest: nothing is written again from memory.
#[test]
fn a_purge_keeps_the_rows_of_the_jobs_it_keeps_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let value = |job: &str| QueryValue {
        job_id: job.into(),
        node: NodeId("n1".into()),
        name: "x".into(),
        value: serde_json::json!(1),
    };
    for job in ["open", "done"] {
        let mut r = record(job, 1);
        r.results
            .insert("n1".into(), success(&format!("{job} output")));
        store.put_record(&r);
        store.put_result(job, "n1", &success(&format!("{job} output")));
        store.put_query_value(&value(job));
    }
    // A result whose record is gone (forgotten meanwhile) goes too.
    store.put_result("orphan", "n1", &success("orphan"));
    store.flush();
    store.purge_jobs_but(&HashSet::from(["open".to_string()]), 0);
    store.flush();
    let ids: Vec<String> = store.records().into_iter().map(|r| r.job_id).collect();
    assert_eq!(ids, vec!["open"]);
    assert_eq!(
        store.record("open").unwrap().results["n1"].stdout,
        "open output"
    );
    assert_eq!(store.query_values(), vec![value("open")]);
    let snapshot = store.db.begin_read().unwrap();
    assert_eq!(keys_in(&snapshot, RESULTS), vec!["open/n1".to_string()]);
}

#[test]
fn records_survive_reopening_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    {
        let store = Store::open(&path).unwrap();
        let closing = store.closing().unwrap();
        // Whatever the directory's mode, the database is the owner's only.
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // Listed in submission order, whatever their creation times say.
        let mut c = record("c", 0);
        c.submission = 1;
        store.put_record(&c);
        store.put_record(&record("b", 2));
        store.put_record(&record("a", 1));
        assert_eq!(store.last_submission(), 0);
        store.put_last_submission(1);
        store.flush();
        assert_eq!(store.record("a").unwrap().created_unix_ms, 1);
        drop(store);
        // The writer thread holds the database until its channel closes.
        assert!(
            closing.wait(Duration::from_secs(60)),
            "the store never closed"
        );
    }
    let store = Store::open(&path).unwrap();
    let ids: Vec<String> = store.records().into_iter().map(|r| r.job_id).collect();
    assert_eq!(ids, vec!["a", "b", "c"]);
    assert_eq!(store.last_submission(), 1);
    store.purge_jobs(0);
    assert!(store.records().is_empty());
}

/// Within one boot a record's age goes by the boot clock: one made while the wall clock
/// ran a month behind (corrected since) stays, one made while it ran a year ahead goes
/// when its retention is over. Of another boot, the wall clock decides.
#[test]
fn a_records_age_in_this_boot_goes_by_the_boot_clock() {
    let Some(now) = BootInstant::now() else {
        return; // No boot id here: nothing but the wall clock to go by.
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let mut ticks_ago = serde_json::to_value(&now).unwrap();
    ticks_ago["ticks"] = serde_json::json!(0);
    let mut other_boot = ticks_ago.clone();
    other_boot["boot"] = serde_json::json!("another boot");
    let at = |v: &serde_json::Value| serde_json::from_value::<BootInstant>(v.clone()).ok();
    let now_ms = 40 * 24 * 3_600_000;
    let month = 31 * 24 * 3_600_000;
    for (id, created_ms, on_boot) in [
        ("made-behind", now_ms - month, Some(now.clone())),
        ("made-ahead", now_ms + 12 * month, at(&ticks_ago)),
        ("other-boot-old", now_ms - month, at(&other_boot)),
        ("other-boot-new", now_ms, at(&other_boot)),
    ] {
        let mut r = record(id, created_ms);
        r.created_on_boot = on_boot;
        store.put_record(&r);
    }
    store.flush();
    // The machine has been up longer than half a minute (this test's build took longer),
    // and this test has taken less.
    let forgotten = store.forget_records(
        Duration::from_secs(30),
        (now_ms, BootInstant::now()),
        &HashSet::new(),
        &HashSet::new(),
    );
    store.flush();
    let left: Vec<String> = store.records().into_iter().map(|r| r.job_id).collect();
    assert_eq!(forgotten, 2, "{left:?}");
    assert_eq!(left, vec!["made-behind", "other-boot-new"]);
}

/// A restart reads back whole only the runs not finished, and the finished ones whose
/// written-off targets may still be sent their jobs.
#[test]
fn only_the_runs_to_take_up_again_are_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    for (id, finished, write_offs_until_ms) in [
        ("done", true, 0),
        ("open", false, 0),
        ("also-done", true, 0),
        ("written-off-lately", true, 2000),
        ("written-off-long-ago", true, 1000),
    ] {
        store.put_run(&StoredRun {
            run: Run::new(id, NodeId("me".into()), Vec::new()),
            finished,
            write_offs_until_ms,
        });
    }
    store.flush();
    let mut open: Vec<String> = store
        .runs_to_resume(1000)
        .into_iter()
        .map(|r| r.run.run_id)
        .collect();
    open.sort();
    assert_eq!(open, ["open", "written-off-lately"]);
}

#[test]
fn records_are_put_in_order_by_their_keys_and_read_back_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let result = success("out");
    // Submission first, then creation time (records of a release that did not number
    // submissions), run, position; the targets are not needed to order them.
    let mut numbered = record("numbered", 1);
    numbered.submission = 2;
    let mut second = record("second", 5);
    second.position = 1;
    second.nodes = vec![crate::records::NodeRef {
        peer_id: "p".into(),
        name: "n1".into(),
    }];
    for r in [
        &numbered,
        &second,
        &record("first", 5),
        &record("oldest", 3),
    ] {
        store.put_record(r);
    }
    store.put_result("second", "n1", &result);
    store.flush();
    let keys = store.record_keys();
    let order: Vec<&str> = keys.iter().map(|k| k.job_id.as_str()).collect();
    assert_eq!(order, ["oldest", "first", "second", "numbered"]);
    assert_eq!(keys[2], second.key());
    // In the order asked, with results; an id not stored is left out.
    let read = store.records_by_id(&["numbered", "missing", "second"]);
    let mut with_result = second.clone();
    with_result.results.insert("n1".into(), result);
    assert_eq!(read, [numbered, with_result.clone()]);
    assert_eq!(
        store.newest_record().map(|r| r.job_id),
        Some("numbered".into())
    );
    assert_eq!(store.records()[2], with_result);
}

/// The records of a run whose targets written off may still report stay past the
/// retention: their real results replace the write-offs.
#[test]
fn records_of_runs_awaiting_written_off_targets_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let mut other = record("other-run", 10);
    other.run_id = "other".into();
    store.put_record(&other);
    store.put_record(&record("awaited", 10));
    store.flush();
    let awaited = HashSet::from(["r".to_string()]);
    let forgotten = store.forget_records(
        Duration::from_millis(500),
        (1000, None),
        &HashSet::new(),
        &awaited,
    );
    assert_eq!(forgotten, 1);
    store.flush();
    let left: Vec<String> = store.records().into_iter().map(|r| r.job_id).collect();
    assert_eq!(left, vec!["awaited"]);
}

/// Records older than the retention go with their results and QUERY values; newer ones
/// and those still open stay whole.
#[test]
fn old_records_are_forgotten_with_their_results_except_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let result = success("out");
    for (id, created) in [("old", 10), ("old-open", 10), ("new", 1000)] {
        store.put_record(&record(id, created));
        for node in ["n1", "n2"] {
            store.put_result(id, node, &result);
        }
        store.put_query_value(&QueryValue {
            job_id: id.into(),
            node: NodeId("n1".into()),
            name: "x".into(),
            value: serde_json::json!(1),
        });
    }
    // An id that starts another's is not taken for it.
    store.put_record(&record("old-openly", 2000));
    store.put_result("old-openly", "n1", &result);
    store.flush();
    let run = |id: &str, finished: bool| StoredRun {
        run: Run::new(id, NodeId("me".into()), Vec::new()),
        finished,
        write_offs_until_ms: 0,
    };
    // Its records stay; none left, finished; none left, still open.
    for (id, finished) in [("r", true), ("gone", true), ("open-run", false)] {
        store.put_run(&run(id, finished));
    }
    store.flush();
    let open = HashSet::from(["old-open".to_string()]);
    assert_eq!(
        store.forget_records(
            Duration::from_millis(500),
            (1000, None),
            &open,
            &HashSet::new()
        ),
        1
    );
    store.flush();
    let runs: Vec<bool> = ["r", "gone", "open-run"]
        .iter()
        .map(|id| store.run(id).is_some())
        .collect();
    assert_eq!(runs, vec![true, false, true]);
    store.flush();
    let left: Vec<(String, usize)> = store
        .records()
        .into_iter()
        .map(|r| (r.job_id, r.results.len()))
        .collect();
    assert_eq!(
        left,
        vec![
            ("old-open".into(), 2),
            ("new".into(), 2),
            ("old-openly".into(), 1)
        ]
    );
    let queried: Vec<String> = store.query_values().into_iter().map(|v| v.job_id).collect();
    assert_eq!(queried, vec!["new", "old-open"]);
    assert_eq!(
        store.forget_records(
            Duration::from_millis(500),
            (1000, None),
            &open,
            &HashSet::new()
        ),
        0
    );

    // A late result (and QUERY value) of a record already forgotten, and one of a job
    // still open whose record is not on disk yet: the next sweep takes only the first.
    for id in ["old", "open-unwritten"] {
        store.put_result(id, "n3", &result);
        store.put_query_value(&QueryValue {
            job_id: id.into(),
            node: NodeId("n3".into()),
            name: "x".into(),
            value: serde_json::json!(2),
        });
    }
    store.flush();
    let open = HashSet::from(["old-open".to_string(), "open-unwritten".to_string()]);
    assert_eq!(
        store.forget_records(
            Duration::from_millis(500),
            (1000, None),
            &open,
            &HashSet::new()
        ),
        0
    );
    store.flush();
    let results: Vec<String> = store.keys(RESULTS);
    assert!(
        !results.iter().any(|k| k.starts_with("old/")),
        "{results:?}"
    );
    assert!(
        results.contains(&"open-unwritten/n3".to_string()),
        "{results:?}"
    );
    let queried: Vec<String> = store.query_values().into_iter().map(|v| v.job_id).collect();
    assert_eq!(queried, vec!["new", "old-open", "open-unwritten"]);
}

/// The child half of [`what_was_acknowledged_or_is_a_second_old_survives_kill_9`]: writes,
/// says when, and waits to be killed.
fn crash_child(path: &str, mode: &str) {
    use std::io::Write;
    let store = Store::open(Path::new(path)).unwrap();
    if mode == "acknowledged" {
        store.put_record(&record("acknowledged", 1));
        store.committed().blocking_recv().unwrap();
    } else {
        store.put_record(&record("quiet", 2));
        // Past the commit that makes it durable, with room for a slow disk's sync.
        std::thread::sleep(GROUP_WINDOW + DURABLE_WITHIN + Duration::from_secs(2));
    }
    println!("ready");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Runs [`crash_child`] in a real process and kills it (SIGKILL) once it is ready.
fn write_and_crash(path: &Path, mode: &str) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::what_was_acknowledged_or_is_a_second_old_survives_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DIRECTORD_MESH_STORE_CRASH_CHILD", path)
        .env("DIRECTORD_MESH_STORE_CRASH_MODE", mode)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // The test harness may print its own words before ours on a line.
    let ready = lines.map_while(Result::ok).any(|l| l.ends_with("ready"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ready, "the {mode} child never got ready");
}

#[test]
fn what_was_acknowledged_or_is_a_second_old_survives_kill_9() {
    if let Ok(path) = std::env::var("DIRECTORD_MESH_STORE_CRASH_CHILD") {
        let mode = std::env::var("DIRECTORD_MESH_STORE_CRASH_MODE").unwrap();
        crash_child(&path, &mode);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let ids = || -> Vec<String> {
        let store = Store::open(&path).unwrap();
        let closing = store.closing().unwrap();
        let ids = store.records().into_iter().map(|r| r.job_id).collect();
        drop(store);
        // The writer thread lets the file go once its channel closes.
        assert!(
            closing.wait(Duration::from_secs(60)),
            "the store never closed"
        );
        ids
    };
    // Killed as soon as `committed` answered: the write is there.
    write_and_crash(&path, "acknowledged");
    assert_eq!(ids(), vec!["acknowledged"]);
    // Nobody waited, but the write is older than DURABLE_WITHIN: it is there too.
    write_and_crash(&path, "quiet");
    assert_eq!(ids(), vec!["acknowledged", "quiet"]);
}

/// A purge takes the runs that are over with the records, but those still open and those
/// whose written-off targets may come back for their jobs: with no retention sweep, nothing
/// else would ever remove them.
#[test]
fn a_purge_takes_the_runs_that_are_over() {
    for keep in [HashSet::new(), HashSet::from(["open-job".to_string()])] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let run = |id: &str, finished: bool, write_offs_until_ms: u64| StoredRun {
            run: Run::new(id, NodeId("me".into()), Vec::new()),
            finished,
            write_offs_until_ms,
        };
        store.put_record(&record("open-job", 1));
        store.put_run(&run("over", true, 0));
        store.put_run(&run("open", false, 0));
        store.put_run(&run("owed", true, 5_000));
        store.put_run(&run("owed-until-now", true, 1_000));
        store.flush();
        store.purge_jobs_but(&keep, 1_000);
        store.flush();
        let left: Vec<&str> = ["over", "open", "owed", "owed-until-now"]
            .into_iter()
            .filter(|id| store.run(id).is_some())
            .collect();
        assert_eq!(left, vec!["open", "owed"], "keeping {keep:?}");
    }
}

/// A result row that cannot be read shows as that node's failure, saying so: left out, the
/// job would be `processing` for ever, waiting for a node that reported long ago.
#[test]
fn a_damaged_result_row_is_a_failure_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let mut r = record("j", 1);
    r.nodes = vec![crate::records::NodeRef {
        peer_id: "p1".into(),
        name: "n1".into(),
    }];
    store.put_record(&r);
    store.send(Op::Put(RESULTS, "j/n1".into(), vec![0xff, 0x00]));
    store.flush();
    let got = store.record("j").unwrap();
    let result = &got.results["n1"];
    assert_eq!(result.state, ResultState::Failed);
    assert!(
        result.info.contains("cannot be read from the database"),
        "{}",
        result.info
    );
    assert_eq!(got.status(), crate::records::JobStatus::Failed);
}

/// A wait for a commit when everything written is on disk already is answered without a
/// transaction: shown by a disk that fails every transaction from some point on, which still
/// answers such a wait, but not one with a write queued before it.
#[test]
fn a_wait_with_nothing_left_to_write_costs_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("fail");
    let db = Arc::new(Database::create(dir.path().join("db")).unwrap());
    let (failed, _failure) = watch::channel(None);
    let disk = Disk {
        db,
        path: dir.path().join("db"),
        failed,
        fail_hook: Some(hook.clone()),
    };
    let (tx, rx) = mpsc::sync_channel(16);
    let writer = std::thread::spawn(move || writer(disk, rx));
    let commit_now = || {
        let (done, answer) = oneshot::channel();
        tx.send(Op::Commit {
            done: Committed::Async(done),
            now: true,
        })
        .unwrap();
        answer.blocking_recv()
    };
    tx.send(Op::Put(META, "a".into(), vec![1])).unwrap();
    assert!(commit_now().is_ok(), "a write and a wait for it");
    std::fs::write(&hook, "").unwrap();
    assert!(
        commit_now().is_ok(),
        "nothing written since the last durable commit: answered though no transaction \
         could succeed now"
    );
    tx.send(Op::Put(META, "b".into(), vec![2])).unwrap();
    assert!(
        commit_now().is_err(),
        "a write waits for a transaction, which fails"
    );
    drop(tx);
    writer.join().unwrap();
}

#[test]
fn a_result_owed_keeps_when_it_was_put_there_and_reads_rows_written_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let mut now = entry("now");
    // `None` where the machine tells no boot: the row goes and comes back all the same.
    now.finished_on_boot = jobs::processes::BootInstant::now();
    store.put_outbox(&now);
    store.flush();
    assert_eq!(store.outbox(), vec![now.clone()]);
    // An older release's row: the same fields without the boot instant.
    #[derive(Serialize)]
    struct Before<'a> {
        to: &'a NodeId,
        result: &'a coordination::JobResult,
    }
    let mut bytes = Vec::new();
    ciborium::into_writer(
        &Before {
            to: &now.to,
            result: &now.result,
        },
        &mut bytes,
    )
    .unwrap();
    let read: OutboxEntry = ciborium::from_reader(bytes.as_slice()).unwrap();
    assert_eq!(read.finished_on_boot, None);
    assert_eq!((read.to, read.result), (now.to, now.result));
}
