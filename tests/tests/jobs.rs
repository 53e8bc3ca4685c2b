//! Jobs end to end on real daemons: each daemon has its own `/tmp` (a mount namespace), so
//! three daemons on this machine behave like three machines.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e_tests::{Daemon, records, reported, text, wait_for};
use serde_json::Value;

fn orchestrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("orchestrations")
}

/// Directord's own orchestrations, when the reference folder sits beside the repository (not
/// in a clone of it alone: then the checks that need them are skipped, saying so; this
/// project's own equivalents in `orchestrations/` run everywhere).
fn reference(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/directord-orchestrations")
        .join(name);
    if !path.exists() {
        eprintln!("skipped: Directord's {name} is not beside the repository");
    }
    path.exists().then_some(path)
}

/// A 3-node mesh of isolated daemons, all seeing each other.
fn mesh(root: &Path) -> Vec<Daemon> {
    mesh_of(root, 3)
}

/// An `n`-node mesh of isolated daemons (`n1`, `n2`, ...), all seeing each other.
fn mesh_of(root: &Path, n: usize) -> Vec<Daemon> {
    e2e_tests::isolated_mesh(root, n, Duration::from_secs(20))
}

fn root() -> tempfile::TempDir {
    e2e_tests::isolated_root(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

fn by_definition<'a>(records: &'a [Value], definition: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["definition"] == definition)
        .collect()
}

/// The one record with this definition.
fn record<'a>(records: &'a [Value], definition: &str) -> &'a Value {
    let found = by_definition(records, definition);
    assert_eq!(found.len(), 1, "records with definition {definition:?}");
    found[0]
}

fn states(r: &Value) -> BTreeMap<String, String> {
    r["results"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(n, x)| (n.clone(), x["state"].as_str().unwrap().to_string()))
        .collect()
}

fn all(state: &str) -> BTreeMap<String, String> {
    ["n1", "n2", "n3"]
        .iter()
        .map(|n| (n.to_string(), state.to_string()))
        .collect()
}

fn stdout_on(r: &Value, node: &str) -> String {
    r["results"][node]["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The node's execution window of a result, in unix ms.
fn window(r: &Value, node: &str) -> (u64, u64) {
    let x = &r["results"][node];
    let end = x["finished_unix_ms"].as_u64().unwrap();
    let exec = (x["execution_secs"].as_f64().unwrap() * 1000.0) as u64;
    (end - exec, end)
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

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
    let own = root.path().join("sentinel.yaml");
    std::fs::write(
        &own,
        "- async: true\n  jobs:\n  - RUN: --skip-cache sleep 10\n  - RUN: --skip-cache echo purged a\n\
         - jobs:\n  - RUN: --skip-cache sleep 10\n  - RUN: --skip-cache echo purged b\n",
    )
    .unwrap();
    let file = reference("functional-tests-queue-sentinel.yaml").unwrap_or(own);
    // Submit without waiting, then the sentinel, as Directord's test does: once every node
    // runs the first sleeps, with the rest queued behind them.
    let o = d.cli(&["orchestrate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for n in &nodes {
        wait_for(Duration::from_secs(30), "every node to run a sleep", || {
            runs_a_job(n, "sleep 10").then_some(())
        });
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
    // Every purged job is reported failed, naming the sentinel; nothing stays queued.
    let (recs, _) = wait_for(Duration::from_secs(60), "every job to be reported", || {
        let recs = records(d);
        recs.iter()
            .all(|r| {
                r["results"].as_object().unwrap().len() == r["nodes"].as_array().unwrap().len()
            })
            .then_some(recs)
    });
    let purged = recs
        .iter()
        .flat_map(|r| r["results"].as_object().unwrap().values())
        .filter(|x| {
            x["info"]
                .as_str()
                .unwrap_or_default()
                .contains("QUEUESENTINEL")
        })
        .count();
    assert!(
        purged >= 3,
        "each node reports its purged jobs (found {purged})"
    );
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

/// Whether a process's command line holds `pattern` (a regular expression) not followed by
/// another digit: the markers are numbers, and one test's `sleep 47.123` must not find another
/// test's `sleep 47.1231` (tests of one binary share its pid, and run side by side).
fn processes_running(pattern: &str) -> bool {
    let whole_number = format!("{pattern}([^0-9]|$)");
    Command::new("pgrep")
        .args(["-f", &whole_number])
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

/// Returns once everything `d` has written so far is on its disk: a submission is answered
/// once its run is, and the store writes in order. The run (a `true` on `target`) is
/// looked at by nothing.
fn written_to_disk(d: &Daemon, target: &str) {
    let o = d.cli(&["exec", "--verb", "RUN", "--target", target, "true"]);
    assert!(o.status.success(), "{}", text(&o));
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

/// `exec --verb RUN --skip-cache` of `command` on `targets`.
fn run_args(targets: &[&str], command: &str) -> Vec<String> {
    let mut args: Vec<String> = ["exec", "--verb", "RUN", "--skip-cache"]
        .map(String::from)
        .to_vec();
    for t in targets {
        args.extend(["--target".to_string(), t.to_string()]);
    }
    args.push(command.to_string());
    args
}

/// Starts `exec --verb RUN 'touch STARTED; sleep SECS' --poll` on `targets` (every node if
/// none) from `d`, its output piped, and waits until the job has started.
fn poll_a_sleep(d: &Daemon, targets: &[&str], started: &Path, secs: u32) -> std::process::Child {
    let mut args = run_args(
        targets,
        &format!("touch {}; sleep {secs}", started.display()),
    );
    args.push("--poll".into());
    let poll = d
        .cli_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the job to start", || {
        started.exists().then_some(())
    });
    poll
}

/// Runs `command` on `targets` from `d`, checks it was accepted, and returns its job id.
fn submit(d: &Daemon, targets: &[&str], command: &str) -> String {
    let args = run_args(targets, command);
    let o = d.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    e2e_tests::submitted_job_id(&o)
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

/// Waits up to 180 s until the submitter's record of `job_id` satisfies `done`; panics with every
/// node's log otherwise.
fn wait_for_record(
    nodes: &[Daemon],
    job_id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let o = nodes[0].cli(&["manage", "--job-info", job_id, "--json"]);
        let r: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        if done(&r) {
            return r;
        }
        if started.elapsed() > Duration::from_secs(180) {
            for d in nodes {
                eprintln!("==== {} ====\n{}", d.name, d.log());
            }
            panic!("{what}: {}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits up to 180 s until the submitter's record of the job written as `definition` satisfies
/// `done` (see [`wait_for_record`]).
fn wait_for_job(
    nodes: &[Daemon],
    definition: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let job_id = record(&records(&nodes[0]), definition)["job_id"]
        .as_str()
        .expect("a record has a job id")
        .to_string();
    wait_for_record(nodes, &job_id, what, done)
}

/// Kills the daemon with -9 and starts it again at once, like a crash and a quick restart.
fn crash_and_restart(d: &mut Daemon) {
    d.kill9();
    std::thread::sleep(Duration::from_millis(300));
    d.restart();
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

#[test]
fn bad_orchestrations_and_arguments_exit_2_with_the_reason() {
    let bad = orchestrations().join("bad");
    let cases: &[(&str, &[&str])] = &[
        (
            "unknown-verb.yaml",
            &["entry 1, job 2 (FROB)", "unknown verb 'FROB'"],
        ),
        (
            "unknown-option.yaml",
            &["entry 1, job 1 (RUN)", "unknown option --bogus"],
        ),
        ("syntax.yaml", &["YAML syntax error at line"]),
        ("no-jobs.yaml", &["entry 1", "missing `jobs:`"]),
        ("missing-value.yaml", &["job 1 (ARG)", "has no VALUE"]),
        ("bad-timeout.yaml", &["--timeout 'soon'"]),
        ("bad-mode.yaml", &["not an octal mode"]),
        ("unterminated-quote.yaml", &["unterminated double quote"]),
        ("not-a-list.yaml", &["expected a list of entries"]),
        ("bad-async.yaml", &["async: 'maybe' is not a boolean"]),
        ("bad-var.yaml", &["'chown' is not an option of RUN"]),
        ("bad-tag.yaml", &["unknown cache tag 'everything'"]),
        ("empty.yaml", &["the file is empty"]),
        ("bad-wait.yaml", &["exactly one of --seconds and --cmd"]),
        (
            "missing-source.yaml",
            &[
                "missing-source.yaml: entry 2, job 1 (ADD)",
                "no file matches",
            ],
        ),
        (
            "bad-template.yaml",
            &["entry 1, job 2 (RUN)", "the command: template syntax error"],
        ),
        ("binary.yaml", &["binary.yaml"]),
        (
            "does-not-exist.yaml",
            &["does-not-exist.yaml", "cannot read"],
        ),
    ];
    let state = root();
    for (file, needles) in cases {
        let path = bad.join(file);
        let o = e2e_tests::cli(&[
            "--state-dir",
            state.path().to_str().unwrap(),
            "orchestrate",
            path.to_str().unwrap(),
            "--poll",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{file}: {}", text(&o));
        assert!(!err.contains("panicked"), "{file}: {err}");
        for n in *needles {
            assert!(err.contains(n), "{file}: expected {n:?} in {err}");
        }
    }
    let args: &[(&[&str], &str)] = &[
        (&["exec", "--verb", "FROB", "x"], "unknown verb 'FROB'"),
        (&["exec", "--verb", "RUN"], "error: RUN needs a command"),
        (
            &["exec", "--verb", "RUN", "--timeout", "x", "true"],
            "--timeout 'x'",
        ),
        (&["exec", "--verb", "WORKDIR", "a", "b"], "takes one PATH"),
        (&["exec", "RUN", "true"], "--verb"),
        (&["orchestrate"], "FILE"),
    ];
    for (a, needle) in args {
        let mut all = vec!["--state-dir", state.path().to_str().unwrap()];
        all.extend_from_slice(a);
        let o = e2e_tests::cli(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {}", text(&o));
        assert!(err.contains(needle), "{a:?}: expected {needle:?} in {err}");
    }
    // ADD of several files to one file path, or of a directory, is refused before any daemon
    // is asked.
    let dir = orchestrations();
    for (inline, needle) in [
        (
            format!("{}/*.yaml /srv/one-file", dir.display()),
            "names one file: end DEST with /",
        ),
        (format!("{} /srv/", dir.display()), "names only directories"),
    ] {
        let sd = state.path().to_str().unwrap();
        let o = e2e_tests::cli(&["--state-dir", sd, "exec", "--verb", "ADD", &inline]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{inline}: {}", text(&o));
        assert!(
            err.contains(needle),
            "{inline}: expected {needle:?} in {err}"
        );
    }
    // --exec-help prints the verb's help and runs nothing (no daemon needed).
    let o = e2e_tests::cli(&[
        "--state-dir",
        state.path().to_str().unwrap(),
        "exec",
        "--verb",
        "RUN",
        "--exec-help",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--stdout-arg NAME"));
    // In a file, it says where, and that nothing of the files ran.
    let file = state.path().join("help.yaml");
    std::fs::write(
        &file,
        "- jobs:\n  - RUN: true\n  - RUN: --exec-help echo x\n",
    )
    .unwrap();
    let o = e2e_tests::cli(&[
        "--state-dir",
        state.path().to_str().unwrap(),
        "orchestrate",
        file.to_str().unwrap(),
        "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--stdout-arg NAME"));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("help.yaml: entry 1, job 2 (RUN): --exec-help: the verb's help is shown, and nothing was run"),
        "{}",
        text(&o)
    );
}

#[test]
fn unknown_targets_are_refused_before_anything_runs() {
    let root = root();
    let nodes = mesh(root.path());
    let o = nodes[0].cli(&[
        "exec", "--verb", "RUN", "--target", "nope", "true", "--poll",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown target 'nope'"),
        "{}",
        text(&o)
    );
    // Every unknown name is said at once.
    let o = nodes[0].cli(&[
        "exec", "--verb", "RUN", "--target", "web1", "--target", "n2", "--target", "web2", "true",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("unknown targets 'web1', 'web2' (alive: n1, n2, n3)"),
        "{}",
        text(&o)
    );
    // A name that differs only in case is pointed at.
    let o = nodes[0].cli(&["exec", "--verb", "RUN", "--target", "N2", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("did you mean 'n2'?"),
        "{}",
        text(&o)
    );
    assert!(records(&nodes[0]).is_empty(), "nothing was recorded");
    // A run no message can carry (9 MiB of text) is refused, not stored to wait forever.
    let big = root.path().join("big.yaml");
    let text9 = "x".repeat(9 * 1024 * 1024);
    std::fs::write(&big, format!("- jobs:\n  - ECHO: {text9}\n")).unwrap();
    let o = nodes[0].cli(&["orchestrate", big.to_str().unwrap(), "--poll"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        &text(&o)[..2000.min(text(&o).len())]
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("too large to send"),
        "{}",
        &text(&o)[..2000.min(text(&o).len())]
    );
    assert!(records(&nodes[0]).is_empty(), "nothing was recorded");
    // --finger-print runs nothing and needs no daemon.
    let file = orchestrations().join("functional.yaml");
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap(), "--finger-print"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("COUNT"));
    assert!(records(&nodes[0]).is_empty());
    // The hidden files a wildcard of ADD leaves out, as a shell does, are said.
    let conf = root.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("app.conf"), "a").unwrap();
    std::fs::write(conf.join(".env"), "secret").unwrap();
    std::os::unix::fs::symlink("/nowhere/db.conf", conf.join("db.conf")).unwrap();
    let hidden = root.path().join("hidden.yaml");
    std::fs::write(
        &hidden,
        format!("- jobs:\n  - ADD: {}/* /tmp/x/\n", conf.display()),
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", hidden.to_str().unwrap(), "--finger-print"]);
    assert!(o.status.success(), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains(&format!(
            "hidden.yaml: entry 1, job 1 (ADD): its wildcard left out hidden files, as a shell \
             does: {}/.env (write their leading dot",
            conf.display()
        )),
        "{}",
        text(&o)
    );
    // So is what it matched that is no file to send.
    assert!(
        said.contains(&format!(
            "hidden.yaml: entry 1, job 1 (ADD): its pattern matched what ADD and COPY cannot \
             send, left out: {}/db.conf (a symbolic link to /nowhere/db.conf, which does not \
             exist)",
            conf.display()
        )),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("app.conf"),
        "{}",
        text(&o)
    );
    // A parent's own `targets:` are named where they were written.
    let named = root.path().join("named.yaml");
    std::fs::write(
        &named,
        "- jobs:\n  - RUN: true\n- targets: [n1, nope]\n  jobs:\n  - RUN: true\n",
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", named.to_str().unwrap(), "--poll"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("named.yaml: entry 2: unknown target 'nope'"),
        "{}",
        text(&o)
    );
    assert!(records(&nodes[0]).is_empty(), "nothing was recorded");
    // A JOB_WAIT on n1 for a job that n1 runs only after it (a later synchronous entry) could
    // only wait until its timeout: refused before anything runs.
    let later = root.path().join("later.yaml");
    std::fs::write(&later, "- targets: [n1]\n  jobs:\n  - RUN: echo awaited\n").unwrap();
    let fp = fingerprint_of(&nodes[0], &later, "echo awaited");
    let backwards = root.path().join("backwards.yaml");
    std::fs::write(
        &backwards,
        format!(
            "- targets: [n1, n2]\n  jobs:\n  - JOB_WAIT: {fp} --identity n1\n\
             - targets: [n1]\n  jobs:\n  - RUN: echo awaited\n"
        ),
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", backwards.to_str().unwrap(), "--poll"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("backwards.yaml: entry 1: JOB_WAIT")
            && err.contains("waits on 'n1' for a job that 'n1' runs only after it")
            && err.contains("backwards.yaml: entry 2: RUN: echo awaited"),
        "{}",
        text(&o)
    );
    assert!(records(&nodes[0]).is_empty(), "nothing was recorded");
}

/// A node started with `--allow-submitter` runs jobs from that submitter and its own; a run
/// from any other node is answered with its jobs failed as refused, and nothing runs.
#[test]
fn a_node_takes_jobs_only_from_the_submitters_it_allows() {
    let root = root();
    let n1 = Daemon::start_isolated(root.path(), "n1", &[]);
    let token = n1.join_token();
    let n2 = Daemon::start_isolated(root.path(), "n2", &["--token", &token]);
    let n1_id = n1.peer_id();
    let n3 = Daemon::start_isolated(
        root.path(),
        "n3",
        &["--token", &token, "--allow-submitter", &n1_id],
    );
    let all = ["n1", "n2", "n3"].map(String::from).to_vec();
    for d in [&n1, &n2, &n3] {
        wait_for(Duration::from_secs(20), "the mesh to form", || {
            (e2e_tests::alive_names(&d.status()?) == all).then_some(())
        });
    }
    let marker = root.path().join("ran");
    let command = format!("echo x >> {}", marker.display());
    for (d, allowed) in [(&n1, true), (&n3, true), (&n2, false)] {
        let mut args = run_args(&["n3"], &command);
        args.push("--poll".into());
        let o = d.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let last = records(d).into_iter().last().unwrap();
        let info = last["results"]["n3"]["info"].as_str().unwrap_or_default();
        if allowed {
            assert!(o.status.success(), "from {}: {}", d.name, text(&o));
        } else {
            assert_eq!(o.status.code(), Some(1), "{}", text(&o));
            assert!(
                info.starts_with("refused: n3 takes jobs only from the submitters it lists"),
                "{last}"
            );
        }
    }
    let ran = std::fs::read_to_string(&marker).unwrap_or_default();
    assert_eq!(ran.lines().count(), 2, "only the allowed runs ran");
    // A job refused never ran: a JOB_WAIT for it from a run n3 takes is not answered by the
    // refusal (it was, at once, as a failure), and times out.
    let mut args = run_args(&["n3"], "echo refused-only");
    args.push("--poll".into());
    let o = n2.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let refused = records(&n2).into_iter().last().unwrap();
    let fingerprint = refused["fingerprint"].as_str().unwrap();
    let o = n1.cli(&[
        "exec",
        "--verb",
        "JOB_WAIT",
        "--target",
        "n1",
        &format!("--timeout 3 {} --identity n3", &fingerprint[..12]),
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("0 of 1 nodes had finished it"),
        "{}",
        text(&o)
    );
    assert!(
        n3.log().contains("refused a run: its submitter is not one"),
        "{}",
        n3.log()
    );
}

/// A target that left the mesh is written off once the grace a goodbye gets is over, and
/// after that named as gone: a run for it is refused, and nothing is recorded.
#[test]
fn a_target_that_left_is_reported_as_gone() {
    let root = root();
    let mut nodes = mesh(root.path());
    let peer = nodes[2].peer_id();
    assert!(nodes[2].terminate().success());
    wait_for(Duration::from_secs(20), "n3 to be seen leaving", || {
        (e2e_tests::state_of(&nodes[0].status()?, &peer)? == "left").then_some(())
    });
    // Within the grace a goodbye gets, the run is taken (n3 may be restarting), and n3 is
    // written off once the grace is over.
    let o = nodes[0].cli(&["exec", "--verb", "RUN", "--target", "n3", "true", "--poll"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("note: targets that had just left the mesh (restarting?): n3")
            && said.contains("1 failed result is a target written off as unreachable (n3)"),
        "{}",
        text(&o)
    );
    assert_eq!(records(&nodes[0]).len(), 1);
    // After it, a run for n3 is refused: nothing is recorded.
    let o = nodes[0].cli(&["exec", "--verb", "RUN", "--target", "n3", "true", "--poll"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("target 'n3' has left the mesh"),
        "{}",
        text(&o)
    );
    assert_eq!(records(&nodes[0]).len(), 1, "nothing more was recorded");
}

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

/// The fingerprint prefix `--finger-print` shows for the job whose EXEC column starts with `exec`.
fn fingerprint_of(d: &Daemon, file: &Path, exec: &str) -> String {
    let o = d.cli(&["orchestrate", file.to_str().unwrap(), "--finger-print"]);
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    let row = table
        .lines()
        .find(|l| l.contains(exec))
        .unwrap_or_else(|| panic!("{exec} not in:\n{table}"));
    row.split_whitespace().last().unwrap().to_string()
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

#[test]
fn query_aggregates_every_targets_value_across_five_nodes() {
    let root = root();
    let nodes = mesh_of(root.path(), 5);
    let file = root.path().join("query.yaml");
    std::fs::write(
        &file,
        "- jobs:\n\
         \x20 - RUN: --skip-cache --stdout-arg token echo \"token-$$\"\n\
         \x20 - QUERY: token\n\
         \x20 - QUERY_WAIT: token --identity n1 --identity n5 --query-timeout 5\n\
         \x20 - RUN: --skip-cache echo \"{{ query | length }} {{ query.values() | map(attribute='token') | unique | list | length }}\"\n",
    )
    .unwrap();
    let o = nodes[2].cli(&["orchestrate", file.to_str().unwrap(), "--poll", "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    let recs = records(&nodes[2]);
    let names = ["n1", "n2", "n3", "n4", "n5"];
    let count = recs
        .iter()
        .find(|r| r["definition"].as_str().unwrap().contains("query | length"))
        .unwrap();
    let query = record(&recs, "QUERY: token");
    for n in names {
        // Every node saw all five values, and they differ (one per node).
        assert_eq!(stdout_on(count, n), "5 5", "{n}: {count}");
        assert!(
            stdout_on(query, n).starts_with("{\"token\":\"token-"),
            "{n}: {query}"
        );
    }
    // The cache of any node holds the whole set.
    let o = nodes[4].cli(&["manage", "--dump-cache"]);
    let cache: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        cache["args"]["query"].as_object().unwrap().len(),
        5,
        "{cache}"
    );
    // The same QUERY again on three of them: their jobs see the three values of this run,
    // not the two the others sent to the run before (still in the nodes' args), and a wait
    // for one of the others is not met by that earlier value.
    let again = root.path().join("again.yaml");
    std::fs::write(
        &again,
        "- jobs:\n\
         \x20 - RUN: --skip-cache --stdout-arg token echo \"token-$$\"\n\
         \x20 - QUERY: token\n\
         \x20 - RUN: --skip-cache echo \"{{ query | length }}\"\n\
         \x20 - QUERY_WAIT: token --identity n5 --query-timeout 2\n",
    )
    .unwrap();
    let mut args = vec!["orchestrate", again.to_str().unwrap(), "--poll"];
    for n in ["n1", "n2", "n3"] {
        args.extend(["--target", n]);
    }
    let o = nodes[2].cli(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let recs = records(&nodes[2]);
    let newest = |definition: &str| {
        recs.iter()
            .rfind(|r| r["definition"] == definition)
            .unwrap_or_else(|| panic!("{definition}"))
    };
    let count = newest("RUN: --skip-cache echo \"{{ query | length }}\"");
    let wait = newest("QUERY_WAIT: token --identity n5 --query-timeout 2");
    for n in ["n1", "n2", "n3"] {
        assert_eq!(stdout_on(count, n), "3", "{n}: {count}");
        assert_eq!(wait["results"][n]["state"], "failed", "{n}: {wait}");
    }
}

/// Two submitters' runs with a QUERY each reach the nodes in different orders (each
/// submitter's own run first); a QUERY waiting for the others lends its node's queue, so
/// neither waits for the other.
#[test]
fn two_submitters_querying_at_once_do_not_hold_each_other_up() {
    let root = root();
    let nodes = mesh(root.path());
    let file = root.path().join("two.yaml");
    std::fs::write(
        &file,
        "- jobs:\n\
         \x20 - RUN: --skip-cache sleep 1; echo a\n\
         \x20 - QUERY: --timeout 30 qv\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let args = ["orchestrate", file, "--poll", "--check"];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| nodes[0].cli(&args));
        let b = s.spawn(|| nodes[1].cli(&args));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success(), "n1's run: {}", text(&a));
    assert!(b.status.success(), "n2's run: {}", text(&b));
}

/// A target whose QUERY job never runs (an earlier job of its parent failed there) sends no
/// value: the other targets get the values that did come instead of waiting out their timeout.
#[test]
fn a_query_that_cannot_run_on_one_target_does_not_hold_up_the_others() {
    let root = root();
    let nodes = mesh(root.path());
    let o = nodes[0].cli(&[
        "exec", "--verb", "ARG", "--target", "n3", "broken", "yes", "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let file = root.path().join("query.yaml");
    std::fs::write(
        &file,
        "- jobs:\n\
         \x20 - RUN: --skip-cache --stdout-arg token echo \"token-$$\"\n\
         \x20 - RUN: --skip-cache test \"{{ broken | default('no') }}\" != yes\n\
         \x20 - QUERY: token --timeout 60\n\
         \x20 - RUN: --skip-cache echo \"{{ query | length }}\"\n",
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap(), "--poll"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let recs = records(&nodes[0]);
    let query = record(&recs, "QUERY: token --timeout 60");
    let count = record(&recs, "RUN: --skip-cache echo \"{{ query | length }}\"");
    assert_eq!(states(query)["n3"], "failed", "{query}");
    for n in ["n1", "n2"] {
        assert_eq!(states(query)[n], "success", "{n}: {query}");
        assert_eq!(stdout_on(count, n), "2", "{n}: {count}");
    }
}

/// A QUERY whose set is too large for any message (three values of 2.9 MB) fails on the
/// targets it cannot reach, saying why, instead of holding them until the job's timeout; the
/// submitter, which has the set, goes on.
#[test]
fn a_query_set_too_large_to_send_fails_its_targets_at_once() {
    let root = root();
    let nodes = mesh(root.path());
    let file = root.path().join("big.yaml");
    std::fs::write(
        &file,
        "- jobs:\n\
         \x20 - RUN: --skip-cache --stdout-arg big head -c 2200000 /dev/zero | base64 -w0\n\
         \x20 - QUERY: big --timeout 120\n\
         \x20 - RUN: --skip-cache echo after\n",
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap(), "--poll"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        &text(&o)[..2000.min(text(&o).len())]
    );
    let recs = records(&nodes[0]);
    let query = record(&recs, "QUERY: big --timeout 120");
    let after = record(&recs, "RUN: --skip-cache echo after");
    assert_eq!(states(query)["n1"], "success");
    assert_eq!(stdout_on(after, "n1"), "after");
    for n in ["n2", "n3"] {
        let r = &query["results"][n];
        assert_eq!(r["state"], "failed", "{n}");
        let why = r["stderr"].as_str().unwrap();
        assert!(
            why.contains("cannot reach the other targets")
                && why.contains(&mesh::wire::MAX_JOB_DATA.to_string()),
            "{n}: {why}"
        );
        assert!(
            r["execution_secs"].as_f64().unwrap() < 100.0,
            "{n}: it failed before its timeout"
        );
    }
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

/// Sets the ARG `name` on each node to its own value, from `d`.
fn arg_per_node(d: &Daemon, name: &str, values: &[(&str, &str)]) {
    for (node, value) in values {
        let o = d.cli(&[
            "exec", "--verb", "ARG", "--target", node, name, value, "--poll",
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
}

/// The submitter restarts in the middle of a QUERY: two values came before (its own and
/// n2's), n3's comes after. The values from before are kept on disk, so n2 and n3 still get
/// all three (before, the restarted submitter waited for a value that was never sent again);
/// the submitter's own QUERY job, cut by the crash, is reported interrupted and holds nobody.
#[test]
fn a_query_outlives_a_restart_of_its_submitter() {
    let root = root();
    let mut nodes = mesh(root.path());
    // n3 holds its first job until the test lets it go on, once the submitter is back.
    arg_per_node(
        &nodes[0],
        "hold",
        &[("n1", "no"), ("n2", "no"), ("n3", "yes")],
    );
    let gate = root.path().join("gate");
    let file = root.path().join("query.yaml");
    let count = "RUN: --skip-cache echo \"{{ query | length }}\"";
    let token = "RUN: --skip-cache --stdout-arg token echo \"token-$$\"";
    std::fs::write(
        &file,
        format!(
            "- jobs:\n\
             \x20 - RUN: --skip-cache test {{{{ hold }}}} = no || while [ ! -e {} ]; do sleep 0.1; done\n\
             \x20 - {token}\n\
             \x20 - QUERY: token --timeout 40\n\
             \x20 - {count}\n",
            gate.display()
        ),
    )
    .unwrap();
    let o = nodes[0].cli(&[
        "orchestrate",
        file.to_str().unwrap(),
        "--target",
        "n1",
        "--target",
        "n2",
        "--target",
        "n3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // n1's and n2's values are in within a second of their QUERY jobs' start, right after
    // the jobs that make them, which nothing shows from outside (n1's own lands on its disk
    // with the next commit); n3 sends its own once the submitter has crashed and is back.
    wait_for_job(&nodes, token, "n1's and n2's values", |r| {
        reported(r, "n1") && reported(r, "n2")
    });
    std::thread::sleep(Duration::from_secs(2));
    written_to_disk(&nodes[0], "n2");
    crash_and_restart(&mut nodes[0]);
    std::fs::write(&gate, "").unwrap();
    let r = wait_for_job(&nodes, count, "the last job never reported thrice", |r| {
        r["results"].as_object().is_some_and(|m| m.len() == 3)
    });
    for n in ["n2", "n3"] {
        assert_eq!(r["results"][n]["state"], "success", "{n}: {r}");
        assert_eq!(stdout_on(&r, n), "3", "{n}: {r}");
    }
    assert_eq!(r["results"]["n1"]["state"], "failed", "{r}");
    let query = record(&records(&nodes[0]), "QUERY: token --timeout 40").clone();
    let info = query["results"]["n1"]["info"].as_str().unwrap_or_default();
    assert!(info.starts_with("interrupted"), "{query}");
}

/// A target restarted cleanly (a goodbye, back within the grace) while a QUERY collects gives
/// its value after the restart, and every target's next job sees all three (before, the
/// goodbye ended the wait at once: n1 and n2 went on with two values).
#[test]
fn a_query_waits_for_a_target_restarting_within_the_grace() {
    let root = root();
    let mut nodes = mesh(root.path());
    // n3's QUERY waits in its queue behind a long sleep of another entry, which the restart
    // cuts; the queued jobs run after it.
    let marker = format!("sleep 47.{}1", std::process::id());
    let count = "RUN: --skip-cache echo \"{{ query | length }}\"";
    let file = root.path().join("query.yaml");
    std::fs::write(
        &file,
        format!(
            "- targets: [n3]\n  jobs:\n  - RUN: --skip-cache {marker}\n\
             - jobs:\n\
             \x20 - RUN: --skip-cache --stdout-arg token echo \"token-$$\"\n\
             \x20 - QUERY: token --timeout 60\n\
             \x20 - {count}\n"
        ),
    )
    .unwrap();
    // The second entry names no targets: every node (`--target` would set both entries').
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    wait_for(Duration::from_secs(20), "the sleep to start", || {
        processes_running(&marker).then_some(())
    });
    // n1's and n2's values are sent as their QUERY jobs start, right after the jobs that
    // make them (and take moments to arrive).
    let token = "RUN: --skip-cache --stdout-arg token echo \"token-$$\"";
    wait_for_job(&nodes, token, "n1's and n2's values", |r| {
        reported(r, "n1") && reported(r, "n2")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(nodes[2].terminate().success());
    nodes[2].restart();
    let r = wait_for_job(&nodes, count, "the last job never reported thrice", |r| {
        r["results"].as_object().is_some_and(|m| m.len() == 3)
    });
    for n in ["n1", "n2", "n3"] {
        assert_eq!(r["results"][n]["state"], "success", "{n}: {r}");
        assert_eq!(stdout_on(&r, n), "3", "{n}: {r}");
    }
}

/// A QUERY whose set does not come in time says why on each target: the submitter names the
/// targets whose values it still waits for, the others name the submitter to ask.
#[test]
fn a_query_that_times_out_says_whose_values_it_waited_for() {
    let root = root();
    let nodes = mesh(root.path());
    arg_per_node(
        &nodes[0],
        "delay",
        &[("n1", "0"), ("n2", "0"), ("n3", "12")],
    );
    let file = root.path().join("query.yaml");
    std::fs::write(
        &file,
        "- jobs:\n\
         \x20 - RUN: --skip-cache sleep {{ delay }}\n\
         \x20 - QUERY: delay --timeout 5\n",
    )
    .unwrap();
    let o = nodes[0].cli(&[
        "orchestrate",
        file.to_str().unwrap(),
        "--target",
        "n1",
        "--target",
        "n2",
        "--target",
        "n3",
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = record(&records(&nodes[0]), "QUERY: delay --timeout 5").clone();
    let stderr = |n: &str| r["results"][n]["stderr"].as_str().unwrap_or_default();
    for n in ["n1", "n2"] {
        assert_eq!(r["results"][n]["state"], "failed", "{n}: {r}");
        assert!(
            stderr(n).starts_with("timed out waiting for the set of every target's value: "),
            "{n}: {r}"
        );
    }
    assert!(
        stderr("n1").contains("this node, the submitter, still waited for the value of n3 "),
        "{r}"
    );
    assert!(
        stderr("n2").contains("it comes from the submitter n1 once every target has sent"),
        "{r}"
    );
    // n3's value came late (n1's and n2's QUERY jobs had timed out 7 s before); its own
    // job had the set at once.
    assert_eq!(r["results"]["n3"]["state"], "success", "{r}");
}

#[test]
fn directord_query_orchestration() {
    let Some(file) = reference("functional-tests-query.yaml") else {
        return;
    };
    let root = root();
    let nodes = mesh(root.path());
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap(), "--poll", "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    // The decoded /etc/hosts written on every node matches this machine's.
    let recs = records(&nodes[0]);
    assert!(recs.iter().all(|r| {
        r["results"]
            .as_object()
            .unwrap()
            .values()
            .all(|x| x["state"] != "failed")
    }));
    let check = nodes[0].cli(&[
        "exec",
        "--verb",
        "RUN",
        "--skip-cache",
        "cmp /tmp/base64-hosts /etc/hosts && echo same",
        "--poll",
    ]);
    assert!(check.status.success(), "{}", text(&check));
}

/// A directory of source files every daemon can read (outside the private /tmps).
fn sources(root: &Path) -> PathBuf {
    let dir = root.join("sources");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `command` on `nodes` through `d`; returns each node's stdout.
fn run_on(d: &Daemon, nodes: &[&str], command: &str) -> BTreeMap<String, String> {
    let mut args = vec![
        "exec",
        "--verb",
        "RUN",
        "--skip-cache",
        command,
        "--poll",
        "--check",
    ];
    for n in nodes {
        args.push("--target");
        args.push(n);
    }
    let o = d.cli(&args);
    assert!(o.status.success(), "{command}: {}", text(&o));
    let last = records(d).into_iter().last().unwrap();
    nodes
        .iter()
        .map(|n| (n.to_string(), stdout_on(&last, n)))
        .collect()
}

#[test]
fn files_land_verified_with_owner_and_mode_on_every_node() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[1];
    let src = sources(root.path());
    let chunk = 1024 * 1024;
    std::fs::write(src.join("empty.bin"), b"").unwrap();
    std::fs::write(src.join("exact.bin"), vec![0xabu8; 2 * chunk]).unwrap();
    let odd: Vec<u8> = (0..3 * chunk + 7).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(src.join("odd.bin"), &odd).unwrap();
    std::fs::write(src.join("small.txt"), b"small file\n").unwrap();
    let all = ["n1", "n2", "n3"];
    run_on(d, &all, "mkdir -p /tmp/files");
    let pattern = format!("{}/* /tmp/files/", src.display());
    let o = d.cli(&[
        "exec", "--verb", "ADD", "--chown", "1:1", "--chmod", "0640", &pattern, "--poll", "--check",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let recs = records(d);
    assert_eq!(recs.len(), 1 + 4, "one job per file");
    // Each tells which file it is, in its status line too.
    for name in ["empty.bin", "exact.bin", "odd.bin", "small.txt"] {
        let tail = format!("{pattern} (file {name})");
        let named = recs.iter().filter(|r| {
            r["definition"]
                .as_str()
                .is_some_and(|d| d.starts_with("ADD: ") && d.ends_with(&tail))
        });
        assert_eq!(named.count(), 1, "{tail}");
        assert!(text(&o).contains(&tail), "{}", text(&o));
    }
    for name in ["empty.bin", "exact.bin", "odd.bin", "small.txt"] {
        let same = run_on(
            d,
            &all,
            &format!(
                "cmp {}/{name} /tmp/files/{name} && stat -c '%u:%g %a' /tmp/files/{name}",
                src.display()
            ),
        );
        for n in all {
            assert_eq!(same[n], "1:1 640", "{name} on {n}");
        }
    }
    // Already there: nothing is transferred, but the new mode is applied.
    let o = d.cli(&[
        "exec",
        "--verb",
        "COPY",
        "--chmod",
        "0600",
        &format!("{}/odd.bin /tmp/files/", src.display()),
        "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let last = records(d).into_iter().last().unwrap();
    for n in all {
        assert!(
            last["results"][n]["info"]
                .as_str()
                .unwrap()
                .contains("nothing to transfer"),
            "{last}"
        );
    }
    assert_eq!(
        run_on(d, &all, "stat -c %a /tmp/files/odd.bin")["n3"],
        "600"
    );
    // A secret for an owner a node lacks: the job fails with nothing at DEST or beside it,
    // and a file that lands with a mode is never readable by others, not while it lands either
    // (its temporary file is the owner's only). Without --chmod: the umask's mode.
    std::fs::write(src.join("secret.env"), b"PASSWORD=hunter2\n").unwrap();
    let o = d.cli(&[
        "exec",
        "--verb",
        "COPY",
        "--chown",
        "no-such-user-xyz",
        "--chmod",
        "0600",
        &format!("{}/secret.env /tmp/files/", src.display()),
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no user 'no-such-user-xyz'"),
        "{}",
        text(&o)
    );
    let left = run_on(d, &all, "ls -A /tmp/files | grep -c secret || true");
    for n in all {
        assert_eq!(
            left[n], "0",
            "{n}: the secret, or its temporary file, was left"
        );
    }
    let o = d.cli(&[
        "exec",
        "--verb",
        "COPY",
        &format!("{}/secret.env /tmp/files/plain.env", src.display()),
        "--poll",
        "--check",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let modes = run_on(
        d,
        &all,
        "printf '%s %s' $(umask) $(stat -c %a /tmp/files/plain.env)",
    );
    for n in all {
        let (umask, mode) = modes[n].split_once(' ').unwrap();
        let umask = u32::from_str_radix(umask, 8).unwrap();
        assert_eq!(mode, format!("{:o}", 0o666 & !umask), "{n}: {modes:?}");
    }
    // A missing destination directory is a clear failure; nothing is left behind.
    let o = d.cli(&[
        "exec",
        "--verb",
        "ADD",
        &format!("{}/odd.bin /tmp/nowhere/", src.display()),
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let last = records(d).into_iter().last().unwrap();
    assert!(
        last["results"]["n2"]["stderr"]
            .as_str()
            .unwrap()
            .contains("/tmp/nowhere does not exist"),
        "{last}"
    );
    // No match on the submitting side: bad input, nothing runs.
    let o = d.cli(&[
        "exec",
        "--verb",
        "ADD",
        &format!("{}/none-*.bin /tmp/", src.display()),
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no file matches"),
        "{}",
        text(&o)
    );
}

#[test]
fn unused_files_leave_the_blob_store_and_are_sent_again_when_needed() {
    let root = root();
    let retention = ["--blob-retention", "5s"];
    let nodes = e2e_tests::isolated_mesh_with(root.path(), 3, Duration::from_secs(20), &retention);
    let d = &nodes[0];
    let src = sources(root.path());
    // Over the inline limit: fetched in chunks and kept in each node's blob store.
    let data: Vec<u8> = (0..2 * 1024 * 1024 + 5)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    std::fs::write(src.join("big.bin"), &data).unwrap();
    let add = |dest: &str| {
        let o = d.cli(&[
            "exec",
            "--verb",
            "ADD",
            &format!("{}/big.bin {dest}", src.display()),
            "--poll",
            "--check",
        ]);
        assert!(o.status.success(), "{}", text(&o));
    };
    let blobs = |n: &Daemon| {
        std::fs::read_dir(n.state_dir.join("blobs"))
            .map(|dir| dir.count())
            .unwrap_or(0)
    };
    add("/tmp/first.bin");
    for n in &nodes {
        assert_eq!(blobs(n), 1, "{} holds the file it just used", n.name);
    }
    for n in &nodes {
        e2e_tests::wait_for(Duration::from_secs(30), "the unused blob to go", || {
            (blobs(n) == 0).then_some(())
        });
    }
    // A later run needs it again: imported and fetched anew, and it lands intact.
    add("/tmp/second.bin");
    let same = run_on(
        d,
        &["n1", "n2", "n3"],
        &format!("cmp {}/big.bin /tmp/second.bin && echo same", src.display()),
    );
    assert!(same.values().all(|v| v == "same"), "{same:?}");
}

#[test]
fn a_corrupt_holder_is_routed_around_and_integrity_failures_leave_nothing() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let src = sources(root.path());
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 5).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.join("data.bin"), &data).unwrap();
    let add = |target: &str, file: &str| {
        d.cli(&[
            "exec",
            "--verb",
            "ADD",
            "--ignore-cache",
            &format!("{}/{file} /tmp/", src.display()),
            "--target",
            target,
            "--poll",
        ])
    };
    // n2 gets the file from n1 and holds it from then on.
    let o = add("n2", "data.bin");
    assert!(o.status.success(), "{}", text(&o));
    // n1 starts corrupting every chunk it serves; n3 still gets the file intact, from n2.
    std::fs::write(d.state_dir.join("test-corrupt-blobs"), b"").unwrap();
    let o = add("n3", "data.bin");
    assert!(o.status.success(), "{}", text(&o));
    let same = run_on(
        d,
        &["n3"],
        &format!(
            "cmp {}/data.bin /tmp/data.bin && echo intact",
            src.display()
        ),
    );
    assert_eq!(same["n3"], "intact");
    // A file only n1 holds cannot be had intact: an integrity failure, and no file at DEST.
    let other: Vec<u8> = data.iter().map(|b| b.wrapping_add(1)).collect();
    std::fs::write(src.join("other.bin"), &other).unwrap();
    let o = add("n2", "other.bin");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let last = records(d).into_iter().last().unwrap();
    let err = last["results"]["n2"]["stderr"].as_str().unwrap();
    assert!(
        err.contains("integrity failure")
            && err.contains("expected digest")
            && err.contains("found"),
        "{err}"
    );
    let left = run_on(d, &["n2"], "ls -A /tmp | grep -c other || true");
    assert_eq!(left["n2"], "0", "no partial file at DEST or beside it");
}

/// A holder whose copy is damaged on disk serves bad chunks of it: the fetcher that got them
/// tells it, and it drops the damaged copy (until then it failed every fetcher, and kept it
/// until a job of its own used it). A holder told so whose copy is sound keeps it.
#[test]
fn a_holder_told_it_served_a_corrupt_chunk_drops_its_damaged_copy() {
    let root = root();
    let nodes = mesh(root.path());
    let (d, n2) = (&nodes[0], &nodes[1]);
    let src = sources(root.path());
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 5).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("data.bin"), &data).unwrap();
    let hash = blake3::hash(&data).to_hex().to_string();
    let add = |target: &str| {
        d.cli(&[
            "exec",
            "--verb",
            "ADD",
            "--ignore-cache",
            &format!("{}/data.bin /tmp/", src.display()),
            "--target",
            target,
            "--poll",
        ])
    };
    let o = add("n2");
    assert!(o.status.success(), "{}", text(&o));
    let copy = |n: &Daemon| n.state_dir.join("blobs").join(&hash);
    assert!(copy(n2).exists(), "n2 holds the file it fetched");
    // n2's copy is damaged on disk in its second chunk; n1 serves corrupt chunks (its copy
    // on disk is sound). n3 gets the first, third and fourth chunks from n2, the second from
    // neither: the job fails, and both holders hear they served corrupt chunks.
    let mut damaged = std::fs::read(copy(n2)).unwrap();
    damaged[1024 * 1024 + 7] ^= 0xff;
    std::fs::write(copy(n2), &damaged).unwrap();
    std::fs::write(d.state_dir.join("test-corrupt-blobs"), b"").unwrap();
    let o = add("n3");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    wait_for(
        Duration::from_secs(30),
        "n2 to drop its damaged copy",
        || (!copy(n2).exists()).then_some(()),
    );
    wait_for(Duration::from_secs(30), "n1 to check its copy", || {
        d.log()
            .contains("served of a file did not match its digest")
            .then_some(())
    });
    assert_eq!(
        std::fs::read(copy(d)).unwrap(),
        data,
        "n1's sound copy stays"
    );
    // Told again within the minute (n3 tries once more and gets corrupt chunks from n1
    // alone, until its timeout): no second check of the same copy.
    let o = d.cli(&[
        "exec",
        "--verb",
        "ADD",
        "--ignore-cache",
        "--timeout",
        "3",
        &format!("{}/data.bin /tmp/", src.display()),
        "--target",
        "n3",
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let checks = d
        .log()
        .matches("served of a file did not match its digest")
        .count();
    assert_eq!(checks, 1, "one check of n1's copy a minute");
}

#[test]
fn a_holder_killed_mid_transfer_does_not_fail_the_job() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 4);
    let src = sources(root.path());
    let data: Vec<u8> = (0..80 * 1024 * 1024).map(|i| (i % 241) as u8).collect();
    std::fs::write(src.join("big.bin"), &data).unwrap();
    // The distribution tree is ordered by target key: the first target feeds the third.
    let key = |i: usize| coordination::TargetKey::of(&coordination::NodeId(nodes[i].peer_id()));
    let mut targets: Vec<(coordination::TargetKey, usize)> = (1..4).map(|i| (key(i), i)).collect();
    targets.sort();
    let (feeder, fed) = (targets[0].1, targets[2].1);
    std::fs::write(nodes[feeder].state_dir.join("test-slow-blobs"), b"").unwrap();
    let pattern = format!("{}/big.bin /tmp/", src.display());
    let names: Vec<String> = (1..4).map(|i| nodes[i].name.clone()).collect();
    let mut args: Vec<String> = ["exec", "--verb", "ADD", &pattern, "--poll"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for n in &names {
        args.extend(["--target".to_string(), n.clone()]);
    }
    let poll = nodes[0]
        .cli_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once the fed node has begun to receive (its partial copy is there): a fixed
    // wait let a fast machine finish the whole transfer first.
    wait_for(
        Duration::from_secs(30),
        "the fed node to begin receiving",
        || partial_copy(&nodes[fed]),
    );
    nodes[feeder].kill9();
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let o = poll.wait_with_output().unwrap();
    let last = records(&nodes[0]).into_iter().last().unwrap();
    let fed_name = &nodes[fed].name;
    assert_eq!(
        last["results"][fed_name]["state"],
        "success",
        "{}\n{last}",
        text(&o)
    );
    // It was still receiving (from the slow feeder) when the feeder died.
    let finished = last["results"][fed_name]["finished_unix_ms"]
        .as_u64()
        .unwrap();
    assert!(
        finished > killed_at,
        "the fed node finished before its feeder was killed: {last}"
    );
    let same = run_on(
        &nodes[0],
        &[fed_name],
        &format!("cmp {}/big.bin /tmp/big.bin && echo intact", src.display()),
    );
    assert_eq!(same[fed_name], "intact");
}

/// Starts an ADD of a 40 MiB file from n1 (which serves it slowly, so the copy takes a while)
/// to `targets`, `options` before its arguments, DEST `dest`; returns the job id and the
/// file's bytes once n2 has begun to receive it.
fn slow_copy_under_way(
    nodes: &[Daemon],
    root: &Path,
    options: &str,
    dest: &str,
    targets: &[&str],
) -> (String, Vec<u8>) {
    let src = sources(root);
    let data: Vec<u8> = (0..40 * 1024 * 1024).map(|i| (i % 239) as u8).collect();
    std::fs::write(src.join("big.bin"), &data).unwrap();
    std::fs::write(nodes[0].state_dir.join("test-slow-blobs"), b"").unwrap();
    let pattern = format!("{options}{}/big.bin {dest}", src.display());
    let mut args = vec!["exec", "--verb", "ADD", &pattern];
    for n in targets {
        args.extend(["--target", n]);
    }
    let o = nodes[0].cli(&args);
    assert!(o.status.success(), "{}", text(&o));
    let job_id = records(&nodes[0]).last().unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(Duration::from_secs(30), "n2 to begin receiving", || {
        partial_copy(&nodes[1])
    });
    (job_id, data)
}

/// Whether `d`'s blob store holds a file still being received.
fn partial_copy(d: &Daemon) -> Option<()> {
    std::fs::read_dir(d.state_dir.join("blobs"))
        .ok()?
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .then_some(())
}

/// The submitter, the only node holding the whole file, crashes while three targets receive
/// it (one of them from another target, down the distribution tree) and is back seconds
/// later: the targets wait for it, rather than failing the copy or stalling, and the copy
/// completes everywhere.
#[test]
fn a_copy_waits_for_its_only_holder_to_come_back() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 4);
    let (job_id, _) = slow_copy_under_way(&nodes, root.path(), "", "/tmp/", &["n2", "n3", "n4"]);
    nodes[0].kill9();
    std::thread::sleep(Duration::from_secs(3));
    nodes[0].restart();
    let r = wait_for_record(
        &nodes,
        &job_id,
        "the targets never reported the copy",
        |r| ["n2", "n3", "n4"].iter().all(|n| reported(r, n)),
    );
    for n in ["n2", "n3", "n4"] {
        assert_eq!(r["results"][n]["state"], "success", "{n}: {r}");
    }
    let same = run_on(
        &nodes[0],
        &["n2", "n3", "n4"],
        &format!(
            "cmp {}/big.bin /tmp/big.bin && echo intact",
            sources(root.path()).display()
        ),
    );
    assert!(same.values().all(|v| v == "intact"), "{same:?}");
}

/// The only holder of a file is gone for longer than the copy's timeout: the copy fails when
/// its timeout ends, saying so, and leaves no partial file behind.
#[test]
fn a_copy_whose_holders_stay_out_of_reach_ends_at_its_timeout() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 2);
    // The timeout leaves room for a loaded machine to see the copy under way and kill n1.
    let (job_id, _) = slow_copy_under_way(&nodes, root.path(), "--timeout 8 ", "/tmp/", &["n2"]);
    nodes[0].kill9();
    std::thread::sleep(Duration::from_secs(10));
    nodes[0].restart();
    let r = wait_for_record(&nodes, &job_id, "n2 never reported the copy", |r| {
        reported(r, "n2")
    });
    let n2 = &r["results"]["n2"];
    assert_eq!(n2["state"], "failed", "{r}");
    assert!(
        n2["stderr"]
            .as_str()
            .unwrap()
            .contains("the job's timeout ended before the file arrived ("),
        "{r}"
    );
    assert!(
        n2["stderr"].as_str().unwrap().contains(" blake3 "),
        "the file is named with its hash: {r}"
    );
    assert!(
        partial_copy(&nodes[1]).is_none(),
        "a partial copy was left in n2's blob store"
    );
    // Its log says how far the copy got and whom it could not reach.
    let log = nodes[1].log();
    assert!(
        log.lines().any(|l| l.contains("file transfer given up")
            && l.contains("chunks had arrived")
            && l.contains("out of reach: n1")),
        "{log}"
    );
    let left = run_on(&nodes[0], &["n2"], "ls -A /tmp | grep -c big.bin || true");
    assert_eq!(left["n2"], "0", "no file at DEST");
}

/// Submits from n1 a run of one parent on n2, its jobs in order: one that marks it has
/// started (`<name>.started` under `root`) and then waits for the gate `<name>.gate`, then
/// an ADD of `src` to `dest` that may take 10 minutes. Returns the gate and the ADD's job id
/// once the first job runs on n2.
fn copy_behind_a_gate(
    nodes: &[Daemon],
    root: &Path,
    name: &str,
    src: &Path,
    dest: &Path,
) -> (PathBuf, String) {
    let started = root.join(format!("{name}.started"));
    let gate = root.join(format!("{name}.gate"));
    let add = format!("ADD: --timeout 600 {} {}", src.display(), dest.display());
    let file = root.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "- targets: [n2]\n  jobs:\n  - RUN: --skip-cache touch {}; \
             while [ ! -e {} ]; do sleep 0.1; done\n  - {add}\n",
            started.display(),
            gate.display()
        ),
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let job_id = record(&records(&nodes[0]), &add)["job_id"]
        .as_str()
        .expect("a record has a job id")
        .to_string();
    wait_for(
        Duration::from_secs(20),
        "the gated job to start on n2",
        || started.exists().then_some(()),
    );
    (gate, job_id)
}

/// The submitter's copy of a file is removed from its blob store while the run that sends it
/// waits on its target, and no other member holds it: the copy fails as soon as the
/// submitter answers it does not hold the file, naming its hash, not at the end of its 10
/// minutes, and nothing lands at DEST. With the copy kept, the same run succeeds.
#[test]
fn a_copy_of_a_file_no_member_holds_fails_naming_it_without_waiting_out_its_timeout() {
    let root = root();
    let nodes = mesh_of(root.path(), 2);
    let src = sources(root.path());
    let dest = root.path().join("landed");
    std::fs::create_dir_all(&dest).unwrap();
    // Over the inline limit: fetched from n1's blob store, not carried inside the run. Two
    // contents, so that n2 does not hold the second from the first copy.
    let content = |seed: usize| -> Vec<u8> {
        (0..256 * 1024)
            .map(|i| ((i * 13 + seed) % 251) as u8)
            .collect()
    };
    let (kept, lost) = (content(1), content(2));
    std::fs::write(src.join("kept.bin"), &kept).unwrap();
    std::fs::write(src.join("lost.bin"), &lost).unwrap();
    let (kept_at, lost_at) = (dest.join("kept.bin"), dest.join("lost.bin"));

    let (gate, job_id) =
        copy_behind_a_gate(&nodes, root.path(), "kept", &src.join("kept.bin"), &kept_at);
    std::fs::write(&gate, "").unwrap();
    let r = wait_for_record(&nodes, &job_id, "n2 never reported the copy", |r| {
        reported(r, "n2")
    });
    assert_eq!(r["results"]["n2"]["state"], "success", "{r}");
    assert_eq!(std::fs::read(&kept_at).unwrap(), kept);

    let (gate, job_id) =
        copy_behind_a_gate(&nodes, root.path(), "lost", &src.join("lost.bin"), &lost_at);
    let hash = blake3::hash(&lost).to_hex().to_string();
    let blob = nodes[0].state_dir.join("blobs").join(&hash);
    std::fs::remove_file(&blob)
        .unwrap_or_else(|e| panic!("n1 keeps the file to send at {}: {e}", blob.display()));
    std::fs::write(&gate, "").unwrap();
    // Within wait_for_record's three minutes: the copy's timeout is ten.
    let r = wait_for_record(&nodes, &job_id, "n2 never reported the copy", |r| {
        reported(r, "n2")
    });
    let n2 = &r["results"]["n2"];
    assert_eq!(n2["state"], "failed", "{r}");
    let stderr = n2["stderr"].as_str().unwrap_or_default();
    assert!(
        stderr.contains("no member holds")
            && stderr.contains(&format!("(blake3 {hash})"))
            && stderr.contains("its originator n1 answered it does not hold it"),
        "{r}"
    );
    assert!(!lost_at.exists(), "the lost file landed at DEST");
    let beside: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("lost"))
        .collect();
    assert!(beside.is_empty(), "left beside DEST: {beside:?}");
}

/// The submitter loses its copy (removed from its blob store) while two targets hold part of
/// the file: the copy fails on each, naming the file and a chunk none of them has, long
/// before its timeout (it waited for the timeout, the targets answering each other "not yet"
/// for ever).
#[test]
fn a_copy_whose_parts_are_all_that_is_left_fails_without_waiting_out_its_timeout() {
    let root = root();
    let nodes = mesh_of(root.path(), 3);
    let (job_id, data) = slow_copy_under_way(&nodes, root.path(), "", "/tmp/", &["n2", "n3"]);
    let hash = blake3::hash(&data).to_hex().to_string();
    std::fs::remove_file(nodes[0].state_dir.join("blobs").join(&hash)).unwrap();
    let (r, _) = wait_for(Duration::from_secs(300), "both targets to report", || {
        let o = nodes[0].cli(&["manage", "--job-info", &job_id, "--json"]);
        let r: Value = serde_json::from_slice(&o.stdout).ok()?;
        ["n2", "n3"].iter().all(|t| reported(&r, t)).then_some(r)
    });
    // The first to fail finds a chunk missing from the other's part; the other may then find
    // that part gone too (given up with its copy), and no copy at all.
    let mut parts_only = 0;
    for t in ["n2", "n3"] {
        let result = &r["results"][t];
        assert_eq!(result["state"], "failed", "{r}");
        let stderr = result["stderr"].as_str().unwrap_or_default();
        assert!(
            stderr.contains("no member holds")
                && stderr.contains(&format!("big.bin (blake3 {hash})"))
                && stderr.contains("its originator n1 answered it does not hold it"),
            "{t}: {r}"
        );
        if stderr.contains("is missing from the one node that holds part of it") {
            parts_only += 1;
        }
    }
    assert!(parts_only >= 1, "{r}");
}

/// A target killed while it copies a file: once back, it reports the job interrupted and
/// removes what the copy left beside DEST.
#[test]
fn a_file_job_cut_short_leaves_nothing_beside_its_dest_after_the_restart() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 2);
    let dest = root.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let (job_id, data) = slow_copy_under_way(
        &nodes,
        root.path(),
        "",
        &format!("{}/", dest.display()),
        &["n2"],
    );
    let pid = nodes[1].pid();
    nodes[1].kill9();
    // What daemons of releases before, killed while they landed the file, left beside DEST
    // two hours ago (the kill came while it fetched the file here: its landing is too quick
    // to catch), and the temporary file of a copy in progress, which stays. (Names without a
    // host are judged by age: whose they are cannot be told; today's names are in the unit
    // tests of `is_leftover`.)
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    let left_at = |path: &std::path::Path| {
        std::fs::write(path, &data[..1024]).unwrap();
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(two_hours_ago).unwrap();
    };
    let stale = dest.join(format!(".big.bin.{pid}-3.dm-tmp"));
    left_at(&stale);
    // As a release before that named them (one name per process).
    let stale_before = dest.join(format!(".big.bin.{pid}.dm-tmp"));
    left_at(&stale_before);
    let live = dest.join(format!(".big.bin.{}-0.dm-tmp", std::process::id()));
    std::fs::write(&live, b"another daemon's copy in progress").unwrap();
    nodes[1].restart();
    let r = wait_for_record(&nodes, &job_id, "n2 never reported the copy", |r| {
        reported(r, "n2")
    });
    assert_eq!(r["results"]["n2"]["state"], "failed", "{r}");
    assert!(
        r["results"]["n2"]["info"]
            .as_str()
            .unwrap()
            .starts_with("interrupted: the job had started when its node stopped"),
        "{r}"
    );
    for stale in [&stale, &stale_before] {
        assert!(
            !stale.exists(),
            "the partial copy {} is still beside DEST: {}",
            stale.display(),
            nodes[1].log()
        );
    }
    assert!(live.exists(), "a live process's copy was removed");
    assert!(!dest.join("big.bin").exists());
}

#[test]
fn directord_functional_tests_in_full() {
    let Some(file) = reference("functional-tests.yaml") else {
        return;
    };
    let dir = file.parent().unwrap().to_path_buf();
    let root = root();
    let nodes = mesh(root.path());
    let o = nodes[1].cli_in(
        &dir,
        &["orchestrate", "functional-tests.yaml", "--poll", "--check"],
    );
    assert!(o.status.success(), "{}", text(&o));
    // Modes and owners on every node, as the file asks.
    let modes = run_on(
        &nodes[1],
        &["n1", "n2", "n3"],
        "stat -c '%a %u:%g' /tmp/test/test-cache.yaml-mode /tmp/test/test-cache.yaml-0-0 | tr '\\n' ' '",
    );
    for n in ["n1", "n2", "n3"] {
        assert_eq!(modes[n], "664 0:0 644 0:0", "{n}");
    }
    for name in [
        "functional-tests-async.yaml",
        "functional-tests-async-race.yaml",
        "functional-tests-async-transfer.yaml",
    ] {
        let o = nodes[0].cli_in(&dir, &["orchestrate", name, "--poll", "--check"]);
        assert!(o.status.success(), "{name}: {}", text(&o));
    }
    let copies = run_on(
        &nodes[0],
        &["n1", "n2", "n3"],
        "ls /tmp/test*-* | wc -l; cmp /etc/services /tmp/test2-9 && echo same",
    );
    for n in ["n1", "n2", "n3"] {
        assert!(copies[n].ends_with("same"), "{n}: {}", copies[n]);
    }
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
