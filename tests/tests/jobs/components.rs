//! Directord's components and the executor's semantics: functional orchestrations, the
//! cache, parent failure, streams, queues, QUEUESENTINEL, timeouts and `--restrict`.

use super::*;

#[test]
fn directord_functional_checks_on_three_nodes() {
    let root = root();
    let nodes = mesh(root.path());
    // Submitted from the second node: any node can orchestrate.
    let submitter = &nodes[1];
    let file = orchestrations().join("functional.yaml");
    let o = submitter.cli(&["orchestrate", file.to_str().unwrap(), "--poll", "--check"]);
    assert!(o.status.success(), "{}", text(&o));

    let recs = records(submitter);
    for definition in [
        "RUN: echo hello world",
        "RUN: --skip-cache echo hello world",
        "RUN: --stdout-arg test_stdout_arg echo hello world 2",
        "ARG: test_runtime_complex_arg_list ['test']",
        "ENV: test_runtime_arg_as_env environment",
        "WORKDIR: --chown=0:0 --chmod=0777 /tmp/test-mode",
        "RUN: stat /tmp/test-mode | grep Uid | grep 0777",
        "RUN: grep environment /tmp/test/test-sh-env",
        "CACHEFILE: /tmp/test/test-cache.yaml",
        "CACHEEVICT: all",
    ] {
        assert_eq!(
            states(record(&recs, definition)),
            all("success"),
            "{definition}"
        );
    }
    // --run-once: exactly one node ran it.
    let once = record(&recs, "RUN: --run-once echo hello world run-once");
    assert_eq!(states(once).len(), 1, "{once}");
    // Every cached arg rendered with its type on every node.
    let rendered = recs
        .iter()
        .find(|r| {
            r["definition"]
                .as_str()
                .unwrap()
                .contains("{{ test_stdout_arg }}")
        })
        .unwrap();
    for n in ["n1", "n2", "n3"] {
        assert_eq!(
            stdout_on(rendered, n),
            "hello world 2|hello world 3|argument|test|2|b|2.4",
            "{n}"
        );
        assert_eq!(
            stdout_on(
                record(
                    &recs,
                    "RUN: echo \"{{ test_array_args | join(',') }} {{ test_integer_args }}\""
                ),
                n
            ),
            "one,two 9000"
        );
        assert_eq!(
            stdout_on(record(&recs, "ECHO: test [vars: skip_cache=true]"), n),
            "test"
        );
        assert_eq!(
            stdout_on(
                record(
                    &recs,
                    "RUN: echo \"${test_runtime_arg_as_env}\" | tee /tmp/test/test-sh-env"
                ),
                n
            ),
            "environment"
        );
    }
}

#[test]
fn cache_skips_reruns_and_evictions() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", "--verb"];
        all.extend_from_slice(args);
        all.push("--poll");
        let o = d.cli(&all);
        assert!(o.status.success(), "{}", text(&o));
        let last = records(d).into_iter().last().unwrap();
        states(&last)
    };
    assert_eq!(exec(&["RUN", "echo cached"]), all("success"));
    assert_eq!(
        exec(&["RUN", "echo cached"]),
        all("skipped"),
        "a second identical run is skipped"
    );
    // ... and the summary says so, with how to run it anyway.
    let o = d.cli(&["exec", "--verb", "RUN", "echo cached", "--poll"]);
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains(&format!(
            "{n} skipped: succeeded there within the cache's time (--ignore-cache runs them again)",
            n = nodes.len()
        )),
        "{}",
        text(&o)
    );
    let o = d.cli(&[
        "exec",
        "--verb",
        "RUN",
        "echo cached",
        "--ignore-cache",
        "--poll",
    ]);
    assert!(o.status.success());
    assert_eq!(
        states(&records(d).into_iter().last().unwrap()),
        all("success"),
        "--ignore-cache reruns"
    );
    assert_eq!(exec(&["CACHEEVICT", "jobs"]), all("success"));
    assert_eq!(
        exec(&["RUN", "echo cached"]),
        all("success"),
        "after CACHEEVICT jobs it runs again"
    );
    // The cache is visible on each node.
    let o = d.cli(&["manage", "--dump-cache"]);
    let cache: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        cache["jobs"]
            .as_object()
            .unwrap()
            .values()
            .any(|j| j["state"] == "success")
    );
}

#[test]
fn a_failure_stops_the_rest_of_its_parent_and_exits_1() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[2];
    let file = orchestrations().join("failure.yaml");
    let o = d.cli(&["orchestrate", file.to_str().unwrap(), "--poll", "--check"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    // The named entry's jobs are shown with its name; the other entry has none.
    for line in [
        "FAILED JOBS",
        "[the failing parent] RUN: --skip-cache exit 7  on n1: exit code 7",
        "(RUN: --skip-cache echo another parent) 3/3 nodes",
    ] {
        assert!(stdout.contains(line), "{line}: {}", text(&o));
    }
    // Failed jobs are listed in the run's order: the one that failed first, then the one it
    // kept from running.
    let failed_list = &stdout[stdout.find("FAILED JOBS").unwrap()..];
    let at = |definition: &str| {
        failed_list
            .find(definition)
            .unwrap_or_else(|| panic!("{definition}: {}", text(&o)))
    };
    assert!(
        at("exit 7  on n1") < at("echo never runs  on n1"),
        "{}",
        text(&o)
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("Job Failed: ")
            && l.contains(" ([the failing parent] RUN: --skip-cache exit 7) failed on 3/3")),
        "{}",
        text(&o)
    );
    let recs = records(d);
    assert_eq!(
        states(record(&recs, "RUN: --skip-cache echo before")),
        all("success")
    );
    let failed = record(&recs, "RUN: --skip-cache exit 7");
    assert_eq!(states(failed), all("failed"));
    assert_eq!(failed["parent_name"], "the failing parent");
    let other = record(&recs, "RUN: --skip-cache echo another parent");
    assert!(other.get("parent_name").is_none(), "{other}");
    let info = d.cli(&["manage", "--job-info", failed["job_id"].as_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&info.stdout)
            .lines()
            .map(str::trim)
            .any(|l| l.starts_with("PARENT_NAME") && l.ends_with("the failing parent")),
        "{}",
        text(&info)
    );
    let never = record(&recs, "RUN: --skip-cache echo never runs");
    assert_eq!(states(never), all("failed"));
    for n in ["n1", "n2", "n3"] {
        let info = never["results"][n]["info"].as_str().unwrap();
        assert!(info.contains("of this parent failed"), "{n}: {info}");
        assert!(never["results"][n]["stdout"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        states(record(&recs, "RUN: --skip-cache echo another parent")),
        all("success")
    );
}

#[test]
fn a_failure_on_one_node_stops_its_parent_there_only_and_files_run_in_order() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    // Only n2 is told to fail.
    arg_per_node(d, "fail_here", &[("n1", "no"), ("n2", "yes"), ("n3", "no")]);
    let first = root.path().join("first.yaml");
    std::fs::write(
        &first,
        "- jobs:\n\
         \x20 - RUN: --skip-cache test \"{{ fail_here }}\" = no || { echo not-here >&2; exit 3; }\n\
         \x20 - RUN: --skip-cache echo rest-of-parent\n\
         - jobs:\n\
         \x20 - ARG: from_first_file one\n",
    )
    .unwrap();
    // Renders only where the first file's ARG came before it (strict templates).
    let second = root.path().join("second.yaml");
    std::fs::write(
        &second,
        "- jobs:\n  - RUN: --skip-cache echo \"{{ from_first_file }} then two\"\n",
    )
    .unwrap();
    let o = d.cli(&[
        "orchestrate",
        first.to_str().unwrap(),
        second.to_str().unwrap(),
        "--poll",
        "--check",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let recs = records(d);
    let failing = record(
        &recs,
        "RUN: --skip-cache test \"{{ fail_here }}\" = no || { echo not-here >&2; exit 3; }",
    );
    let mut expected = all("success");
    expected.insert("n2".into(), "failed".into());
    assert_eq!(states(failing), expected);
    // The rest of that parent ran where it did not fail, and was stopped on n2 alone.
    let rest = record(&recs, "RUN: --skip-cache echo rest-of-parent");
    assert_eq!(states(rest), expected);
    for n in ["n1", "n3"] {
        assert_eq!(stdout_on(rest, n), "rest-of-parent", "{n}");
    }
    let info = rest["results"]["n2"]["info"].as_str().unwrap();
    assert!(info.contains("of this parent failed"), "{info}");
    assert!(stdout_on(rest, "n2").is_empty());
    // `--job-info` shows each node's stderr and info where there are any.
    let shown = |job: &Value| {
        let o = d.cli(&["manage", "--job-info", job["job_id"].as_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    let lines = shown(failing);
    for line in ["n2 STATE failed", "n2 STDERR not-here", "n1 STATE success"] {
        assert!(lines.iter().any(|l| l == line), "{line}: {lines:#?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("n2 INFO") && l.contains("exit code 3")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("n1 STDERR")),
        "{lines:#?}"
    );
    let lines = shown(rest);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("n2 INFO") && l.contains("of this parent failed")),
        "{lines:#?}"
    );
    // The next parent runs everywhere, n2 too; the second file's job after the first's.
    assert_eq!(
        states(record(&recs, "ARG: from_first_file one")),
        all("success")
    );
    let then = record(
        &recs,
        "RUN: --skip-cache echo \"{{ from_first_file }} then two\"",
    );
    for n in ["n1", "n2", "n3"] {
        assert_eq!(stdout_on(then, n), "one then two", "{n}: {then}");
    }
    let submitted: Vec<&str> = recs
        .iter()
        .filter_map(|r| r["definition"].as_str())
        .filter(|d| d.contains("fail_here }}") || d.contains("then two"))
        .collect();
    assert_eq!(
        submitted,
        [
            "RUN: --skip-cache test \"{{ fail_here }}\" = no || { echo not-here >&2; exit 3; }",
            "RUN: --skip-cache echo \"{{ from_first_file }} then two\""
        ],
        "records in the order of the files"
    );
}

#[test]
fn run_once_runs_on_the_first_target_given() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[1];
    for (targets, ran_on) in [(["n3", "n1"], "n3"), (["n1", "n3"], "n1")] {
        let command = format!("echo once-{}-{}", targets[0], targets[1]);
        let o = d.cli(&[
            "exec",
            "--verb",
            "RUN",
            "--run-once",
            &command,
            "--target",
            targets[0],
            "--target",
            targets[1],
            "--poll",
            "--check",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let recs = records(d);
        let once = record(&recs, &format!("RUN: --run-once {command}"));
        assert_eq!(
            states(once),
            BTreeMap::from([(ran_on.to_string(), "success".to_string())]),
            "{once}"
        );
        assert_eq!(stdout_on(once, ran_on), command.trim_start_matches("echo "));
    }
}

/// The lines `--stream` printed for `node` and `stream` (`STDOUT`, `STDERR`), in order.
fn streamed(o: &std::process::Output, node: &str, stream: &str) -> Vec<String> {
    let prefix = format!("{node} -- {stream} ");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

#[test]
fn stream_shows_every_line_of_every_node_once_and_in_order() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    // A remote node's last line travels apart from its result; the submitter's own first
    // lines come before the CLI starts to watch. Neither may be lost, several times over.
    for round in 0..5 {
        for target in ["n1", "n2"] {
            let o = d.cli(&[
                "exec",
                "--verb",
                "RUN",
                "--target",
                target,
                "--skip-cache echo a; echo e >&2; echo b",
                "--stream",
            ]);
            assert!(o.status.success(), "{}", text(&o));
            assert_eq!(
                streamed(&o, target, "STDOUT"),
                ["a", "b"],
                "round {round}: {}",
                text(&o)
            );
            assert_eq!(
                streamed(&o, target, "STDERR"),
                ["e"],
                "round {round}: {}",
                text(&o)
            );
        }
    }
    // More lines than any queue on the way holds, on the submitter and on two other nodes.
    let o = d.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--skip-cache seq 1 20000",
        "--stream",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let all: Vec<String> = (1..=20000).map(|i| i.to_string()).collect();
    for n in ["n1", "n2", "n3"] {
        let got = streamed(&o, n, "STDOUT");
        assert!(
            got == all,
            "{n}: {} lines, first {:?}",
            got.len(),
            got.first()
        );
    }
}

/// What a job prints reaches the operator's screen as text: escape sequences (a retitle, a
/// clear screen) and a carriage return over the node name show in caret notation in
/// `--stream`, `--poll` and `--job-info`; `--json` keeps the output as it was.
#[test]
fn what_a_job_prints_cannot_steer_the_operators_terminal() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let nasty = r"--skip-cache printf '\033]0;owned\007\033[2Jok\rn9 -- STDOUT fake\n'; printf '\033[31mbad\n' >&2; exit 3";
    let shown = "^[]0;owned^G^[[2Jok^Mn9 -- STDOUT fake";
    let o = d.cli(&["exec", "--verb", "RUN", "--target", "n2", nasty, "--stream"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(streamed(&o, "n2", "STDOUT"), [shown], "{}", text(&o));
    assert_eq!(streamed(&o, "n2", "STDERR"), ["^[[31mbad"], "{}", text(&o));
    assert!(!text(&o).contains('\x1b'), "{:?}", text(&o));

    let o = d.cli(&["exec", "--verb", "RUN", "--target", "n2", nasty, "--poll"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("(^[[31mbad)"), "{}", text(&o));
    assert!(!text(&o).contains('\x1b'), "{:?}", text(&o));

    let o = d.cli(&["manage", "--job-info", "last"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(shown), "{}", text(&o));
    assert!(!text(&o).contains('\x1b'), "{:?}", text(&o));
    let o = d.cli(&["manage", "--job-info", "last", "--json"]);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        r["results"]["n2"]["stdout"],
        "\x1b]0;owned\x07\x1b[2Jok\rn9 -- STDOUT fake"
    );
}

#[test]
fn async_parents_run_concurrently_beside_sync_ones() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let file = orchestrations().join("async.yaml");
    let o = d.cli(&["orchestrate", file.to_str().unwrap(), "--poll", "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    let recs = records(d);
    let sleeps = by_definition(&recs, "RUN: --skip-cache sleep 1");
    assert_eq!(sleeps.len(), 2);
    for n in ["n1", "n2", "n3"] {
        assert!(
            overlap(window(sleeps[0], n), window(sleeps[1], n)),
            "{n}: async and sync sleeps overlap"
        );
        assert_eq!(
            stdout_on(
                record(&recs, "RUN: --skip-cache echo \"{{ async_arg }}\""),
                n
            ),
            "from async"
        );
    }
    assert_eq!(
        states(record(&recs, "RUN: --run-once echo async run-once")).len(),
        1
    );
}

/// Sync parents run one after another on a node; `--force-async` runs them side by side.
#[test]
fn force_async_runs_sync_parents_side_by_side() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let file = root.path().join("two-sync-parents.yaml");
    let sleeps = |tag: &str| {
        format!(
            "- jobs:\n  - RUN: --skip-cache sleep 1 && echo {tag}-first\n\
             - jobs:\n  - RUN: --skip-cache sleep 1 && echo {tag}-second\n"
        )
    };
    for (tag, options) in [("sync", &[][..]), ("forced", &["--force-async"][..])] {
        std::fs::write(&file, sleeps(tag)).unwrap();
        let mut args = vec!["orchestrate", file.to_str().unwrap(), "--poll", "--check"];
        args.extend_from_slice(options);
        let o = d.cli(&args);
        assert!(o.status.success(), "{}", text(&o));
        let recs = records(d);
        let first = record(
            &recs,
            &format!("RUN: --skip-cache sleep 1 && echo {tag}-first"),
        );
        let second = record(
            &recs,
            &format!("RUN: --skip-cache sleep 1 && echo {tag}-second"),
        );
        for n in ["n1", "n2", "n3"] {
            let ((s1, e1), (s2, e2)) = (window(first, n), window(second, n));
            // How long both ran at once (negative: the gap between them), in ms; the times
            // are whole milliseconds, so a run in turn may seem to overlap by one or two.
            let together = e1.min(e2) as i64 - s1.max(s2) as i64;
            if tag == "forced" {
                assert!(
                    together >= 500,
                    "{n}: {together} ms together: {first} {second}"
                );
            } else {
                assert!(
                    together <= 5,
                    "{n}: {together} ms together: {first} {second}"
                );
            }
        }
    }
}

#[test]
fn directord_timing_and_comparison_orchestrations() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    if let Some(file) = reference("functional-tests-async-time.yaml") {
        let o = d.cli(&["orchestrate", file.to_str().unwrap(), "--poll", "--check"]);
        assert!(o.status.success(), "{}", text(&o));
        let recs = records(d);
        // The three async parents (6 s, 5 s, 4 s sleeps) ran side by side on every node: the
        // first job of each (in submission order) overlapped the others.
        let firsts: Vec<&Value> = ["sleep 6", "sleep 5", "sleep 4"]
            .iter()
            .map(|s| by_definition(&recs, &format!("RUN: --skip-cache {s}"))[0])
            .collect();
        for n in ["n1", "n2", "n3"] {
            assert!(overlap(window(firsts[0], n), window(firsts[1], n)), "{n}");
            assert!(overlap(window(firsts[1], n), window(firsts[2], n)), "{n}");
        }
    }
    for name in [
        "comparison-orchestration.yaml",
        "comparison-orchestration-async.yaml",
    ] {
        let Some(file) = reference(name) else {
            continue;
        };
        let o = d.cli(&["orchestrate", file.to_str().unwrap(), "--poll", "--check"]);
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr)
                .contains("1000 succeeded, 0 failed (3000 of 3000 results)"),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn queuesentinel_purges_queued_work_and_reports_it() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    // This project's file holds its first jobs until the sentinel has run (a gate file);
    // Directord's sleeps 10 s in each.
    let gate = root.path().join("sentinel-gate");
    let hold = format!("while [ ! -e {} ]; do sleep 0.1; done", gate.display());
    let own = root.path().join("sentinel.yaml");
    std::fs::write(
        &own,
        format!(
            "- async: true\n  jobs:\n  - RUN: --skip-cache {hold}\n  - RUN: --skip-cache echo purged a\n\
             - jobs:\n  - RUN: --skip-cache {hold}\n  - RUN: --skip-cache echo purged b\n"
        ),
    )
    .unwrap();
    let (file, running) = match reference("functional-tests-queue-sentinel.yaml") {
        Some(file) => (file, "sleep 10".to_string()),
        None => (own, gate.display().to_string()),
    };
    // Submit without waiting, then the sentinel, as Directord's test does: once every node
    // runs the first jobs, with the rest queued behind them.
    let o = d.cli(&["orchestrate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for n in &nodes {
        wait_for(
            Duration::from_secs(30),
            "every node to run a first job",
            || runs_a_job(n, &running).then_some(()),
        );
    }
    let o = d.cli(&[
        "exec",
        "--verb",
        "QUEUESENTINEL",
        "true",
        "--poll",
        "--check",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(&gate, "").unwrap();
    // Every purged job is reported failed, naming the sentinel; nothing stays queued.
    let (recs, _) = wait_for(Duration::from_secs(60), "every job to be reported", || {
        let recs = records(d);
        recs.iter()
            .all(|r| {
                r["results"].as_object().unwrap().len() == r["nodes"].as_array().unwrap().len()
            })
            .then_some(recs)
    });
    let sentinel = recs
        .iter()
        .position(|r| {
            r["definition"]
                .as_str()
                .unwrap()
                .starts_with("QUEUESENTINEL")
        })
        .expect("the sentinel's record");
    for n in ["n1", "n2", "n3"] {
        let (mut ran, mut purged) = (0, 0);
        for r in &recs[..sentinel] {
            let x = &r["results"][n];
            let info = x["info"].as_str().unwrap_or_default();
            match x["state"].as_str() {
                // The sleeps running when the sentinel came end as they would have.
                Some("success") => ran += 1,
                Some("failed") if info.contains("QUEUESENTINEL") => purged += 1,
                other => panic!("{n}: {other:?} {info}: {r}"),
            }
        }
        // At most a job per parent was running; everything queued behind was purged.
        assert!(
            purged >= 1 && purged >= ran,
            "{n}: {ran} ran, {purged} purged"
        );
    }
}

/// Whether a job of `d` runs now whose command line holds `pattern` (a job's shell is a child
/// of its daemon's process).
fn runs_a_job(d: &Daemon, pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-P", &d.pid().to_string(), "-f", pattern])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn a_timeout_kills_the_job_and_its_children() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    // A duration no other process on this machine sleeps for, to find the children afterwards.
    let marker = format!(
        "{}.{}",
        300 + std::process::id() % 100,
        Instant::now().elapsed().subsec_nanos() % 1000
    );
    let command = format!("sleep {marker} & sleep {marker}");
    let o = d.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--timeout",
        "1",
        &command,
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let last = records(d).into_iter().last().unwrap();
    assert_eq!(states(&last), all("failed"));
    assert!(
        last["results"]["n2"]["info"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{last}"
    );
    let pattern = format!("sleep {marker}");
    wait_for(Duration::from_secs(20), "no sleep left behind", || {
        (!processes_running(&pattern)).then_some(())
    });
}

#[test]
fn restrict_runs_only_the_jobs_with_matching_fingerprints() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let file = orchestrations().join("failure.yaml");
    // Find the fingerprint of "echo another parent" in the --finger-print table.
    let o = d.cli(&["orchestrate", file.to_str().unwrap(), "--finger-print"]);
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    let row = table
        .lines()
        .find(|l| l.contains("echo another")) // the EXEC column cuts long arguments
        .unwrap();
    let prefix = row.split_whitespace().last().unwrap()[..8].to_string();
    let o = d.cli(&[
        "orchestrate",
        file.to_str().unwrap(),
        "--restrict",
        &prefix,
        "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("3 jobs left out by --restrict"),
        "{}",
        text(&o)
    );
    let recs = records(d);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        recs[0]["definition"],
        "RUN: --skip-cache echo another parent"
    );
    // A prefix no job has: nothing is submitted, and the refusal says how many were left out.
    let o = d.cli(&[
        "orchestrate",
        file.to_str().unwrap(),
        "--restrict",
        "0000000000",
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("--restrict left out all 4 jobs: nothing to run"),
        "{}",
        text(&o)
    );
    assert_eq!(records(d).len(), 1);
}

/// Only the entries `--restrict` keeps have their targets looked up: an entry left out may
/// name a node that is gone, and says nothing of the members it would have run on.
#[test]
fn restrict_looks_up_only_the_targets_of_what_it_keeps() {
    let root = root();
    let mut nodes = mesh(root.path());
    let file = root.path().join("two-entries.yaml");
    std::fs::write(
        &file,
        "- targets: [n3]\n  jobs:\n    - RUN: --skip-cache echo on-n3\n\
         - targets: [n2]\n  jobs:\n    - RUN: --skip-cache echo on-n2\n\
         - jobs:\n    - RUN: --skip-cache echo everyone\n",
    )
    .unwrap();
    let on_n2 = fingerprint_of(&nodes[0], &file, "echo on-n2");
    let peer = nodes[2].peer_id();
    assert!(nodes[2].terminate().success());
    wait_for(Duration::from_secs(20), "n3 to be seen leaving", || {
        (e2e_tests::state_of(&nodes[0].status()?, &peer)? == "left").then_some(())
    });
    let o = nodes[0].cli(&[
        "orchestrate",
        file.to_str().unwrap(),
        "--restrict",
        &on_n2,
        "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains("not alive"),
        "a left-out entry's members were warned of: {}",
        text(&o)
    );
    let recs = records(&nodes[0]);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(stdout_on(&recs[0], "n2"), "on-n2");
}

/// The jobs of one `exec` (an ADD whose pattern matches three files) are each their own
/// parent, on the targets as in their records: the first failing does not stop the others.
#[test]
fn an_execs_jobs_are_each_their_own_parent() {
    let root = root();
    let nodes = mesh_of(root.path(), 1);
    let d = &nodes[0];
    let src = sources(root.path());
    for name in ["a.txt", "b.txt", "c.txt"] {
        std::fs::write(src.join(name), name).unwrap();
    }
    // A directory where a.txt would land fails its ADD.
    run_on(d, &["n1"], "mkdir -p /tmp/each/a.txt");
    let pattern = format!("{}/* /tmp/each/", src.display());
    let o = d.cli(&["exec", "--verb", "ADD", &pattern, "--poll"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let adds: Vec<Value> = records(d)
        .into_iter()
        .filter(|r| r["verb"] == "ADD")
        .collect();
    assert_eq!(adds.len(), 3, "one job per file");
    for r in &adds {
        assert_eq!(r["parent_id"], r["job_id"], "{r}");
        let definition = r["definition"].as_str().unwrap();
        let state = &states(r)["n1"];
        if definition.ends_with("(file a.txt)") {
            assert_eq!(state, "failed", "{r}");
        } else {
            assert_eq!(state, "success", "{r}");
        }
    }
    let landed = run_on(d, &["n1"], "cat /tmp/each/b.txt /tmp/each/c.txt");
    assert_eq!(landed["n1"], "b.txtc.txt");
}
