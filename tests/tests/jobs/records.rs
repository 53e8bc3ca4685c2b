//! Records and `manage`: listings while jobs run, filters, export, analysis, purges, retention
//! and listings larger than one control frame.

use super::*;

/// The submitter keeps an open job's results without their outputs in memory (they are on
/// disk): what `--job-info` and `--list-jobs` show of it is whole all the same, while other
/// targets still run it, after the submitter restarts, after a purge, and once it is done.
#[test]
fn an_open_jobs_outputs_show_whole_while_other_targets_run_it() {
    let root = root();
    let mut nodes = mesh(root.path());
    // n3 runs it until the test lets it end, once every view of it while open was seen.
    arg_per_node(&nodes[0], "held", &[("n2", "no"), ("n3", "yes")]);
    let gate = root.path().join("gate");
    let command = format!(
        "--skip-cache if [ {{{{ held }}}} = no ]; then head -c 300000 /dev/zero | tr '\\0' x; \
         echo; printf 'first\\nsecond\\n' >&2; else while [ ! -e {} ]; do sleep 0.1; done; \
         echo late; fi",
        gate.display()
    );
    let o = nodes[0].cli(&[
        "exec", "--verb", "RUN", "--target", "n2", "--target", "n3", &command,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let job_id = records(&nodes[0])
        .last()
        .and_then(|r| r["job_id"].as_str().map(str::to_string))
        .expect("the job's record");
    let shown_whole = |d: &Daemon| {
        let o = d.cli(&["manage", "--job-info", &job_id, "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        let info: Value = serde_json::from_slice(&o.stdout).unwrap();
        let n2 = &info["results"]["n2"];
        assert_eq!(n2["stdout"].as_str().unwrap().len(), 300000, "{n2}");
        assert_eq!(n2["stderr"], "first\nsecond", "{n2}");
        let listed = records(d);
        let listed = listed
            .iter()
            .find(|r| r["job_id"] == job_id.as_str())
            .expect("listed");
        assert_eq!(listed["results"]["n2"], *n2);
        info
    };
    wait_for(Duration::from_secs(20), "n2's result", || {
        let recs = records(&nodes[0]);
        let r = recs.iter().find(|r| r["job_id"] == job_id.as_str())?;
        r["results"].get("n2").map(|_| ())
    });
    let info = shown_whole(&nodes[0]);
    assert!(
        info["results"].get("n3").is_none(),
        "n3 still runs it: {info}"
    );
    // A listing asked without outputs (the table, the filters, the analyses) carries none.
    let listed_n2 = |outputs: bool| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut client = node::control::ControlClient::connect(&nodes[0].state_dir)
                .await
                .unwrap();
            let mut parts = client.list_jobs(outputs).await.unwrap();
            let mut found = None;
            while let Some(part) = parts.next().await.unwrap() {
                found = found.or(part.into_iter().find(|r| r.job_id == job_id));
            }
            found.expect("listed").results["n2"].clone()
        })
    };
    let (bare, whole) = (listed_n2(false), listed_n2(true));
    assert_eq!((bare.stdout.len(), bare.stderr.len()), (0, 0));
    assert_eq!(
        (whole.stdout.len(), whole.stderr.as_str()),
        (300000, "first\nsecond")
    );
    assert_eq!(bare.state, whole.state);
    assert_eq!(bare.execution_secs, whole.execution_secs);
    // Restarted, the submitter takes the open record back (without outputs in memory).
    assert!(nodes[0].terminate().success());
    nodes[0].restart();
    let info = shown_whole(&nodes[0]);
    assert!(
        info["results"].get("n3").is_none(),
        "n3 still runs it: {info}"
    );
    // A purge keeps the job still open, outputs and all (its rows are left as they are).
    let o = nodes[0].cli(&["manage", "--purge-jobs"]);
    assert!(o.status.success(), "{}", text(&o));
    let info = shown_whole(&nodes[0]);
    assert!(
        info["results"].get("n3").is_none(),
        "n3 still runs it: {info}"
    );
    std::fs::write(&gate, "").unwrap();
    let o = nodes[0].cli(&["manage", "--follow-run", "last"]);
    assert!(o.status.success(), "{}", text(&o));
    let info = shown_whole(&nodes[0]);
    assert_eq!(info["results"]["n3"]["stdout"], "late", "{info}");
}

/// `--filter failed` lists a job as soon as one node failed it, while others still run it
/// (as Directord's: the operator looks for failures mid-run); it is processing too, and not
/// a success.
#[test]
fn a_job_failed_on_one_node_is_listed_failed_while_others_run_it() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    arg_per_node(d, "delay", &[("n1", "0"), ("n2", "30")]);
    let o = d.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--target",
        "n1",
        "--target",
        "n2",
        "--skip-cache if [ {{ delay }} = 0 ]; then exit 1; fi; sleep {{ delay }}",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    wait_for(Duration::from_secs(20), "n1 to fail the job", || {
        let recs = records(d);
        let r = recs.last()?;
        (r["results"]["n1"]["state"] == "failed").then_some(())
    });
    let ids = |filter: &str| {
        let o = d.cli(&["manage", "--list-jobs", "--filter", filter, "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<Vec<Value>>(&o.stdout)
            .unwrap()
            .iter()
            .filter(|r| r["definition"].as_str().unwrap().contains("exit 1"))
            .count()
    };
    assert_eq!(ids("failed"), 1);
    assert_eq!(ids("processing"), 1);
    assert_eq!(ids("success"), 0);
    let o = d.cli(&["manage", "--list-jobs"]);
    assert!(
        text(&o).contains("Total Failed: 1   Total Processing: 1"),
        "{}",
        text(&o)
    );
}

#[test]
fn manage_lists_filters_exports_analyzes_and_purges() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let file = orchestrations().join("failure.yaml");
    let o = d.cli(&["orchestrate", file.to_str().unwrap(), "--poll"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let recs = records(d);
    assert_eq!(recs.len(), 4);

    let list = |filter: &str| {
        let o = d.cli(&["manage", "--list-jobs", "--filter", filter, "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<Vec<Value>>(&o.stdout)
            .unwrap()
            .len()
    };
    assert_eq!(list("failed"), 2);
    assert_eq!(list("success"), 2);
    assert_eq!(list("processing"), 0);
    let o = d.cli(&["manage", "--list-jobs"]);
    let table = String::from_utf8_lossy(&o.stdout);
    for col in [
        "ID",
        "PARENT JOB ID",
        "VERB",
        "EXECUTION TIME",
        "ROUNDTRIP TIME",
        "SUCCESS",
        "FAILED",
        "Total Items: 4   Total Failed: 2   Total Processing: 0",
    ] {
        assert!(table.contains(col), "{col} missing from:\n{table}");
    }
    // --last: only the newest, oldest first, in JSON or in the table (saying how many).
    let o = d.cli(&["manage", "--list-jobs", "--last", "2", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let newest: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(newest, recs[2..]);
    let o = d.cli(&["manage", "--list-jobs", "--last", "1", "--filter", "failed"]);
    let table = String::from_utf8_lossy(&o.stdout);
    let failed: Vec<&Value> = recs
        .iter()
        .filter(|r| r["results"].to_string().contains("\"failed\""))
        .collect();
    assert_eq!(failed.len(), 2, "{recs:?}");
    for (shown, record) in [(false, failed[0]), (true, failed[1])] {
        let id = record["job_id"].as_str().unwrap();
        assert_eq!(table.contains(id), shown, "{id} in:\n{table}");
    }
    assert!(
        table.contains(
            "Total Items: 1   Total Failed: 1   Total Processing: 0   (the newest 1 of 2)"
        ),
        "{table}"
    );

    // --job-info last: per-node fields.
    let o = d.cli(&["manage", "--job-info", "last"]);
    let info = String::from_utf8_lossy(&o.stdout);
    for key in [
        "JOB_DEFINITION",
        "n1 STATE",
        "n2 STDOUT",
        "n3 EXECUTION_TIME",
        "n3 ROUNDTRIP_TIME",
        "n3 FINISHED",
        "SUBMITTED",
    ] {
        assert!(info.contains(key), "{key} missing from:\n{info}");
    }
    // When, in UTC: `SUBMITTED   2026-12-02T20:31:05Z`.
    let submitted = info
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("SUBMITTED"))
        .map(str::trim)
        .unwrap_or_default();
    assert!(
        submitted.len() == 20 && submitted.ends_with('Z') && submitted.as_bytes()[10] == b'T',
        "{info}"
    );
    // The start of an id names the job too.
    let failing_id = record(&recs, "RUN: --skip-cache exit 7")["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = d.cli(&["manage", "--job-info", &failing_id[..13], "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["job_id"], failing_id.as_str());
    // What the table shows beside the record: over, failed on every node.
    assert_eq!(r["processing"], false, "{r}");
    assert_eq!(r["failed"].as_array().map(Vec::len), Some(3), "{r}");
    assert_eq!(r["success"], serde_json::json!([]), "{r}");
    assert_eq!(r["waiting_for"], serde_json::json!([]), "{r}");
    // An unknown id is bad input.
    let o = d.cli(&["manage", "--job-info", "no-such-job"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(
            "no job 'no-such-job' on this node (a run's or a parent's id? `manage \
             --follow-run no-such-job` shows its jobs"
        ),
        "{}",
        text(&o)
    );
    let o = d.cli(&["manage", "--analyze-parent", "last", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let a: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(a["total_jobs"].as_u64().unwrap() >= 1, "{a}");

    // Analysis of one parent: the failing one (3 jobs on 3 nodes).
    let failing = record(&recs, "RUN: --skip-cache exit 7");
    let parent = failing["parent_id"].as_str().unwrap();
    // (The start of its id will do.)
    let o = d.cli(&["manage", "--analyze-parent", &parent[..12], "--json"]);
    let a: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(a["total_jobs"], 3);
    assert_eq!(a["total_node_count"], 3);
    assert_eq!(a["total_successes"], 3);
    assert_eq!(a["total_failures"], 6);
    assert!(a["actual_runtime"].as_f64().unwrap() > 0.0);
    for key in [
        "slowest_node_execution",
        "fastest_node_execution",
        "slowest_node_roundtrip",
        "fastest_node_roundtrip",
    ] {
        assert!(
            ["n1", "n2", "n3"].contains(&a[key].as_str().unwrap()),
            "{key}: {a}"
        );
    }
    let o = d.cli(&[
        "manage",
        "--analyze-job",
        failing["job_id"].as_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("TOTAL_FAILURES"),
        "{}",
        text(&o)
    );

    // Export, then purge: the export keeps everything, the node forgets.
    let export = root.path().join("jobs.yaml");
    // A file there before, readable by all, is replaced by one only its owner reads.
    std::fs::write(&export, "old").unwrap();
    std::fs::set_permissions(&export, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = d.cli(&["manage", "--export-jobs", export.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Exported 4 jobs"),
        "{}",
        text(&o)
    );
    let exported: Vec<Value> =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    assert_eq!(exported.len(), 4);
    // Every job's output is in it: its owner's only.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&export).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // A device is written to, not replaced (as root, replacing /dev/null would break the
    // machine); a link's file is written through and made the owner's only.
    let o = d.cli(&["manage", "--export-jobs", "/dev/null"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &std::fs::metadata("/dev/null").unwrap().file_type()
    ));
    // To standard output (`-`, or `/dev/stdout` when it is a pipe): the export alone there,
    // one JSON document; what was exported is said on standard error.
    for to in ["-", "/dev/stdout"] {
        let o = d.cli_in(root.path(), &["manage", "--export-jobs", to]);
        assert!(o.status.success(), "{to}: {}", text(&o));
        let exported: Vec<Value> =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{to}: {e}: {}", text(&o)));
        assert_eq!(exported.len(), 4, "{to}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Exported 4 jobs to [ "),
            "{to}: {}",
            text(&o)
        );
    }
    assert!(!root.path().join("-").exists());
    // A reader that is gone before the export is written (`| head` having read enough): the
    // export stops without a word, as a listing does.
    let mut gone = d
        .cli_command(&["manage", "--export-jobs", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(gone.stdout.take());
    let o = gone.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(o.stderr.is_empty(), "{}", text(&o));
    // YAML by the name's ending, in any case.
    let upper = root.path().join("JOBS.YML");
    let o = d.cli(&["manage", "--export-jobs", upper.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let written = std::fs::read_to_string(&upper).unwrap();
    assert!(written.starts_with("- "), "not YAML: {written}");
    let linked = root.path().join("linked.json");
    let link = root.path().join("link.json");
    std::fs::write(&linked, "").unwrap();
    std::os::unix::fs::symlink(&linked, &link).unwrap();
    let o = d.cli(&["manage", "--export-jobs", link.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&linked).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&linked).unwrap().contains("job_id"));
    // A link another user made (in a shared directory) is not followed: it could lead to
    // any file of this user. (Only root can make a link another's.)
    if nix::unistd::geteuid().is_root() {
        std::fs::write(&linked, "kept").unwrap();
        let nobody = nix::unistd::Uid::from_raw(65534);
        std::os::unix::fs::lchown(&link, Some(nobody.as_raw()), None).unwrap();
        let o = d.cli(&["manage", "--export-jobs", link.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr)
                .contains("it is a link made by user id 65534 (this runs as 0)"),
            "{}",
            text(&o)
        );
        assert_eq!(std::fs::read_to_string(&linked).unwrap(), "kept");
    }
    // An export that cannot be written says where and why.
    for (path, why) in [
        (
            root.path().join("no-such-dir").join("jobs.json"),
            "No such file",
        ),
        (PathBuf::from("/dev/full"), "No space left"),
        // A file that is there, in a directory that takes no new file.
        (
            PathBuf::from("/proc/version"),
            "the file it is written to first, /proc/.version.",
        ),
    ] {
        let o = d.cli(&["manage", "--export-jobs", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains(&format!("cannot write {}: {why}", path.display())),
            "{}",
            text(&o)
        );
    }
    // The members, as this node sees them.
    let nodes_file = root.path().join("nodes.yaml");
    let o = d.cli(&["manage", "--export-nodes", nodes_file.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Exported 3 nodes"),
        "{}",
        text(&o)
    );
    // Said as JSON on request, for scripts.
    let o = d.cli(&[
        "manage",
        "--export-nodes",
        nodes_file.to_str().unwrap(),
        "--json",
    ]);
    let said: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(said["exported"], 3, "{said}");
    assert_eq!(said["replaced"], true, "{said}");
    let members: Vec<Value> =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&nodes_file).unwrap()).unwrap();
    let mut names: Vec<&str> = members.iter().filter_map(|m| m["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["n1", "n2", "n3"]);
    assert!(members.iter().all(|m| m["state"] == "alive"), "{members:?}");
    let nowhere = root.path().join("no-such-dir").join("nodes.json");
    let o = d.cli(&["manage", "--export-nodes", nowhere.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot write"),
        "{}",
        text(&o)
    );
    let o = d.cli(&["manage", "--purge-jobs", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let said: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(said["kept"], 0, "{said}");
    assert!(said["purged"].as_u64().is_some_and(|n| n > 0), "{said}");
    assert!(records(d).is_empty());
}

/// Records older than `--record-retention` are forgotten once every target reported; a job
/// still running is kept whatever its age, and goes once it is over.
#[test]
fn records_older_than_the_retention_are_forgotten_once_finished() {
    let root = root();
    let retention = ["--record-retention", "5s"];
    let nodes = e2e_tests::isolated_mesh_with(root.path(), 2, Duration::from_secs(20), &retention);
    let d = &nodes[0];
    // Beside the serial queue, so the quick job does not wait for it; it runs until the test
    // lets it end.
    let gate = root.path().join("gate");
    let long_command = format!("while [ ! -e {} ]; do sleep 0.1; done", gate.display());
    let o = d.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--skip-cache",
        "--force-async",
        &long_command,
    ]);
    let long = e2e_tests::submitted_job_id(&o);
    let quick_submitted = Instant::now();
    let o = d.cli(&["exec", "--verb", "RUN", "--skip-cache", "true", "--poll"]);
    assert!(o.status.success(), "{}", text(&o));
    let ids = |d: &Daemon| -> Vec<String> {
        records(d)
            .iter()
            .map(|r| r["job_id"].as_str().unwrap().to_string())
            .collect()
    };
    let listed = ids(d);
    // Within the retention of the quick job's submission, both are listed (a machine slow
    // enough to take longer has forgotten the quick one already).
    if quick_submitted.elapsed() < Duration::from_secs(5) {
        assert_eq!(listed.len(), 2, "{listed:?}");
    } else {
        eprintln!("the quick job took over the retention to report: not counted");
    }
    // The quick job goes after the retention; the one still running stays.
    wait_for(
        Duration::from_secs(30),
        "the finished record forgotten",
        || (ids(d) == vec![long.clone()]).then_some(()),
    );
    std::fs::write(&gate, "").unwrap();
    wait_for(
        Duration::from_secs(30),
        "the long job's record forgotten",
        || ids(d).is_empty().then_some(()),
    );
}

/// A record whose target was written off stays past `--record-retention` while the target
/// may still come back: its real result then replaces the write-off, as the operator was
/// told (before, the record went with the retention and the result was dropped).
#[test]
fn a_record_awaiting_a_written_off_target_outlives_the_retention() {
    let root = root();
    let retention = ["--record-retention", "3s"];
    let nodes = e2e_tests::isolated_mesh_with(root.path(), 2, Duration::from_secs(20), &retention);
    let d = &nodes[0];
    let (started, gate) = (root.path().join("started"), root.path().join("gate"));
    let job_id = submit(
        d,
        &["n2"],
        &format!(
            "touch {}; while [ ! -e {} ]; do sleep 0.1; done; echo real",
            started.display(),
            gate.display()
        ),
    );
    wait_for(Duration::from_secs(30), "n2 to start the job", || {
        started.exists().then_some(())
    });
    let n2 = nix::unistd::Pid::from_raw(nodes[1].pid());
    nix::sys::signal::kill(n2, nix::sys::signal::Signal::SIGSTOP).unwrap();
    wait_for_record(&nodes, &job_id, "n2 written off", |r| {
        r["results"]["n2"]["info"]
            .as_str()
            .is_some_and(|e| e.starts_with("unreachable"))
    });
    // Past the retention, a sweep a second: the record stays.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        records(d).iter().any(|r| r["job_id"] == job_id.as_str()),
        "the record went while n2 may still report"
    );
    std::fs::write(&gate, "").unwrap();
    nix::sys::signal::kill(n2, nix::sys::signal::Signal::SIGCONT).unwrap();
    let r = wait_for_record(&nodes, &job_id, "n2's real result", |r| {
        r["results"]["n2"]["stdout"] == "real"
    });
    assert_eq!(r["results"]["n2"]["state"], "success", "{r}");
}

#[test]
fn a_purge_keeps_the_jobs_still_running_and_the_clients_that_follow_them() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[1];
    let o = d.cli(&["exec", "--verb", "RUN", "--skip-cache echo over", "--poll"]);
    assert!(o.status.success(), "{}", text(&o));
    // It runs until the test lets it end, after the purge.
    let gate = root.path().join("gate");
    let command = format!(
        "--skip-cache while [ ! -e {} ]; do sleep 0.1; done; echo fin",
        gate.display()
    );
    // A run of two jobs: the first is over when the purge comes, the second still runs.
    let file = root.path().join("two.yaml");
    std::fs::write(
        &file,
        format!(
            "- targets: [n1, n3]\n  jobs:\n  - RUN: --skip-cache echo first\n  - RUN: {command}\n"
        ),
    )
    .unwrap();
    let mut poll = d
        .cli_command(&["orchestrate", file.to_str().unwrap(), "--poll"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        Duration::from_secs(20),
        "the run's first job to be over",
        || {
            let recs = records(d);
            let first = recs
                .iter()
                .find(|r| r["definition"] == "RUN: --skip-cache echo first")?;
            (recs.len() == 3 && first["results"].as_object()?.len() == 2).then_some(())
        },
    );
    let purged = d.cli(&["manage", "--purge-jobs"]);
    std::fs::write(&gate, "").unwrap();
    // The client still hears the job finish (it waited forever when the purge forgot it).
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let polled = loop {
        if let Some(status) = poll.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > until {
            let _ = poll.kill();
            let _ = poll.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        polled.is_some_and(|s| s.success()),
        "the client: {polled:?}"
    );
    assert!(purged.status.success(), "{}", text(&purged));
    // The run still running is kept whole (its job over too: a run followed again shows
    // all of it); the run that was over is forgotten.
    assert!(
        String::from_utf8_lossy(&purged.stdout).contains("kept 2 of runs still running"),
        "{}",
        text(&purged)
    );
    // The records kept their results.
    let recs = records(d);
    assert_eq!(recs.len(), 2, "{recs:?}");
    let fin = record(&recs, &format!("RUN: {command}"));
    let first = record(&recs, "RUN: --skip-cache echo first");
    for n in ["n1", "n3"] {
        assert_eq!(stdout_on(fin, n), "fin", "{n}: {fin}");
        assert_eq!(stdout_on(first, n), "first", "{n}: {first}");
    }
}

/// Records of more than a control frame's 64 MiB (twelve jobs each keeping 3 MiB of stdout
/// and of stderr) are still listed, exported, followed, analysed and purged: lists of records
/// come in parts. Before, every view of the whole store failed ("the daemon closed the
/// connection without answering") and nothing short of a restart could free it.
#[test]
fn records_over_a_control_frame_are_listed_in_parts() {
    let root = root();
    let nodes = mesh_of(root.path(), 1);
    let d = &nodes[0];
    const JOBS: usize = 12;
    for _ in 0..JOBS {
        let mut args = run_args(
            &["n1"],
            "yes 0123456789abcdef | head -c 3200000; yes fedcba9876543210 | head -c 3200000 >&2",
        );
        args.push("--poll".into());
        let o = d.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = d.cli(&["manage", "--list-jobs", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let listed: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed.len(), JOBS);
    let bytes: usize = listed
        .iter()
        .map(|r| {
            let n1 = &r["results"]["n1"];
            n1["stdout"].as_str().unwrap().len() + n1["stderr"].as_str().unwrap().len()
        })
        .sum();
    assert!(bytes > 64 * 1024 * 1024, "only {bytes} bytes of output");
    let export = root.path().join("jobs.yaml");
    let o = d.cli(&["manage", "--export-jobs", export.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::metadata(&export).unwrap().len() > 64 * 1024 * 1024);
    let o = d.cli(&["manage", "--follow-run", "last"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = d.cli(&[
        "manage",
        "--analyze-parent",
        listed[0]["parent_id"].as_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = d.cli(&["manage", "--purge-jobs"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("Purged every job record ({JOBS})")),
        "{}",
        text(&o)
    );
    let o = d.cli(&["manage", "--list-jobs", "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "[]",
        "{}",
        text(&o)
    );
}
