//! Daemons whose clocks move (with libfaketime, which offsets a process's wall and monotonic
//! clocks by what a file says): a day and more going by while a submitter is away, and a
//! node restarted with its clock set back. Needs root (each daemon has its own `/tmp`) and
//! libfaketime.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use e2e_tests::{Daemon, alive_names, text, wait_for};
use serde_json::Value;

fn root() -> tempfile::TempDir {
    e2e_tests::isolated_root(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

/// A clock file for libfaketime holding `offset`.
fn clock(root: &Path, name: &str, offset: &str) -> PathBuf {
    let file = root.join(format!("{name}.clock"));
    std::fs::write(&file, offset).unwrap();
    file
}

/// n1 and n2, n2 started with `extra` and its clocks read from `n2_clock`.
fn two_nodes(root: &Path, n2_clock: PathBuf, extra: &[&str]) -> (Daemon, Daemon) {
    let n1 = Daemon::start_isolated(root, "n1", &[]);
    let token = n1.join_token();
    let mut args = vec!["--token", token.as_str()];
    args.extend_from_slice(extra);
    let mut n2 = Daemon::start_isolated(root, "n2", &args);
    n2.terminate();
    n2.set_clock(Some(n2_clock));
    n2.restart();
    for d in [&n1, &n2] {
        wait_for(Duration::from_secs(20), "the mesh to form", || {
            (alive_names(&d.status()?) == ["n1", "n2"]).then_some(())
        });
    }
    // n2 listens on a new port since its restart: n1 finds it again after its own restart
    // only once it has written that down.
    let port = n2.status().expect("status")["self"]["listen_addresses"][0]
        .as_str()
        .and_then(|a| a.rsplit('/').next())
        .expect("n2 listens")
        .to_string();
    wait_for(Duration::from_secs(20), "n1 to save n2's address", || {
        let known = std::fs::read_to_string(n1.state_dir.join("known-peers")).ok()?;
        known.contains(&format!("/tcp/{port}/")).then_some(())
    });
    (n1, n2)
}

fn job_info(d: &Daemon, job_id: &str) -> Value {
    let o = d.cli(&["manage", "--job-info", job_id, "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// A submitter that goes away for good leaves its results on the targets only so long: once
/// it has taken nothing for an hour and they are older than the target's record retention
/// and a day, the target gives them up and forgets the run. Should the submitter come back
/// after all, it resends the run, which the target refuses as too old rather than run again,
/// and the record closes with that reason.
#[test]
fn results_for_a_submitter_away_over_a_day_are_given_up_and_its_record_closes_as_refused() {
    let root = root();
    let n2_clock = clock(root.path(), "n2", "+0");
    let (mut n1, n2) = two_nodes(root.path(), n2_clock.clone(), &["--record-retention", "1s"]);
    let ran = root.path().join("ran");
    let command = format!("sleep 1; echo once >> {}", ran.display());
    let o = n1.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--skip-cache",
        "--target",
        "n2",
        &command,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let job_id = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .expect("exec prints the job id")
        .to_string();
    // The run reaches n2 (the job takes a second there), then its submitter goes away.
    std::thread::sleep(Duration::from_millis(300));
    n1.kill9();
    let owed = |d: &Daemon| d.status().map(|s| s["self"]["results_owed"].clone());
    wait_for(Duration::from_secs(30), "n2 to hold the result", || {
        let o = owed(&n2)?;
        (o[0]["results"] == 1 && o[0]["failing_secs"].is_u64()).then_some(())
    });

    // A day and two hours go by on n2: it gives the result up.
    std::fs::write(&n2_clock, "+26h").unwrap();
    wait_for(Duration::from_secs(30), "n2 to give the result up", || {
        (owed(&n2)? == serde_json::json!([])).then_some(())
    });
    let log = n2.log();
    assert!(
        log.contains("gave up results whose submitter has taken nothing for an hour"),
        "{log}"
    );

    // The submitter comes back, as late.
    n1.set_clock(Some(clock(root.path(), "n1", "+26h")));
    n1.restart();
    // (It may first write n2 off, having seen it last 26 h ago; the answer replaces that.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        let r = job_info(&n1, &job_id);
        let info = r["results"]["n2"]["info"].as_str().unwrap_or_default();
        if info.starts_with("refused") {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "n1's record of the job never closed as refused: {r}\n--- n1:\n{}\n--- n2:\n{}",
            n1.log(),
            n2.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let result = &record["results"]["n2"];
    assert_eq!(result["state"], "failed", "{record}");
    let info = result["info"].as_str().unwrap_or_default();
    assert!(
        info.starts_with("refused: submitted 26 h ago"),
        "the record says why: {record}"
    );
    let runs = std::fs::read_to_string(&ran).unwrap();
    assert_eq!(runs.lines().count(), 1, "the job ran once: {runs:?}");
}

/// A node restarted with its clock an hour behind its last start still starts with a higher
/// number than that start: its peers take it in at once (they would ignore news of an older
/// start), and it does not mistake its own earlier start for a copy of itself.
#[test]
fn a_node_restarted_with_its_clock_set_back_is_taken_in_at_once() {
    let root = root();
    let n2_clock = clock(root.path(), "n2", "+0");
    let (n1, mut n2) = two_nodes(root.path(), n2_clock.clone(), &[]);
    let number = |d: &Daemon| -> u64 {
        let text = std::fs::read_to_string(d.state_dir.join("incarnation")).unwrap();
        text.trim().parse().unwrap()
    };
    let before = number(&n2);
    n2.terminate();
    std::fs::write(&n2_clock, "-1h").unwrap();
    n2.restart();
    assert!(number(&n2) > before, "{} !> {before}", number(&n2));
    wait_for(Duration::from_secs(10), "n1 to see n2 back", || {
        let s = n1.status()?;
        let row = s["nodes"].as_array()?.iter().find(|n| n["name"] == "n2")?;
        (row["state"] == "alive" && row["agent_uptime_secs"].as_u64()? < 60).then_some(())
    });
    // Past three heartbeats: had n1 ignored the new start, n2 would have expired by now.
    std::thread::sleep(Duration::from_secs(4));
    let o = n1.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--target",
        "n2",
        "echo back",
        "--poll",
    ]);
    assert!(o.status.success(), "{}\n{}", text(&o), n2.log());
    let warnings = &n2.status().expect("status")["self"]["warnings"];
    assert_eq!(warnings, &serde_json::json!([]), "{}", n2.log());
}
