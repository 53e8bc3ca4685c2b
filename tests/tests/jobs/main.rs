//! Jobs end to end on real daemons: each daemon has its own `/tmp` (a mount namespace), so
//! three daemons on this machine behave like three machines.
//!
//! The tests are in the modules below, by what they cover; the helpers they share are here.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e_tests::{Daemon, records, reported, text, wait_for};
use serde_json::Value;

mod components;
mod delivery;
mod files;
mod input;
mod job_wait;
mod query;
mod records;

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

/// Returns once everything `d` has written so far is on its disk: a submission is answered
/// once its run is, and the store writes in order. The run (a `true` on `target`) is
/// looked at by nothing.
fn written_to_disk(d: &Daemon, target: &str) {
    let o = d.cli(&["exec", "--verb", "RUN", "--target", target, "true"]);
    assert!(o.status.success(), "{}", text(&o));
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

/// Sets the ARG `name` on each node to its own value, from `d`.
fn arg_per_node(d: &Daemon, name: &str, values: &[(&str, &str)]) {
    for (node, value) in values {
        let o = d.cli(&[
            "exec", "--verb", "ARG", "--target", node, name, value, "--poll",
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
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
