//! Daemons whose clocks move (with libfaketime, which offsets a process's wall clock by what a
//! file says, and makes its monotonic and boot clocks read the same unless told not to): a day and more going by while a
//! submitter is away, a node restarted with its clock set back, a submitter restarted after
//! its wall clock was corrected. Needs root (each daemon has its own `/tmp`, some their own
//! network namespace), `ip` and libfaketime.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use e2e_tests::{Clocks, Daemon, Link, alive_names, text, wait_for};
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

/// n1 and n2, n2 started with `extra`, each with every clock read from its clock file (see
/// [`clock`]; under libfaketime the monotonic and boot clocks read as the faked wall clock,
/// so a daemon whose clocks are to move runs under it from its first start on).
fn two_nodes(root: &Path, clocks: [PathBuf; 2], extra: &[&str]) -> (Daemon, Daemon) {
    let [n1_clock, n2_clock] = clocks;
    let mut n1 = Daemon::start_isolated(root, "n1", &[]);
    let token = n1.join_token();
    let mut args = vec!["--token", token.as_str()];
    args.extend_from_slice(extra);
    let mut n2 = Daemon::start_isolated(root, "n2", &args);
    // Each keeps its port across the restarts, as a machine does: with a new one each, n1
    // (restarted first) finds n2 again, but n2 finds n1 only if it wrote down n1's new
    // address before its own restart.
    for (d, file) in [(&mut n1, n1_clock), (&mut n2, n2_clock)] {
        d.keep_listen_address();
        d.terminate();
        d.set_clock(Some((file, Clocks::All)));
        d.restart();
    }
    for d in [&n1, &n2] {
        wait_for(Duration::from_secs(20), "the mesh to form", || {
            (alive_names(&d.status()?) == ["n1", "n2"]).then_some(())
        });
    }
    knows_address_of(&n1, &n2);
    (n1, n2)
}

/// Waits for `d` to write `peer`'s address down: a node restarted without a token finds
/// its peers again from there only.
fn knows_address_of(d: &Daemon, peer: &Daemon) {
    let port = peer.status().expect("status")["self"]["listen_addresses"][0]
        .as_str()
        .and_then(|a| a.rsplit('/').next())
        .expect("the peer listens")
        .to_string();
    wait_for(
        Duration::from_secs(20),
        "the peer's address to be saved",
        || {
            let known = std::fs::read_to_string(d.state_dir.join("known-peers")).ok()?;
            known.contains(&format!("/tcp/{port}/")).then_some(())
        },
    );
}

fn job_info(d: &Daemon, job_id: &str) -> Value {
    let o = d.cli(&["manage", "--job-info", job_id, "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// Runs `command` on n2 from `n1` without waiting; returns the job id.
fn submit_to_n2(n1: &Daemon, command: &str) -> String {
    let o = n1.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--skip-cache",
        "--target",
        "n2",
        command,
    ]);
    e2e_tests::submitted_job_id(&o)
}

/// n1's record of `job_id` once `done` holds for it; panics naming `what`, with both logs,
/// after `timeout`.
fn record_when(
    [n1, n2]: [&Daemon; 2],
    job_id: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let r = job_info(n1, job_id);
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {r}\n--- n1:\n{}\n--- n2:\n{}",
            n1.log(),
            n2.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A submitter that goes away for good leaves on the targets only small results for it: once
/// it has taken nothing for an hour, results older than the target's record retention lose
/// their output. Should it come back after all, it still learns how each job ended, and
/// nothing runs again.
#[test]
fn results_for_a_submitter_away_over_a_day_lose_their_output_and_still_reach_it() {
    let root = root();
    let n1_clock = clock(root.path(), "n1", "+0");
    let n2_clock = clock(root.path(), "n2", "+0");
    let (mut n1, n2) = two_nodes(
        root.path(),
        [n1_clock.clone(), n2_clock.clone()],
        &["--record-retention", "1s"],
    );
    let (started, ran) = (root.path().join("started"), root.path().join("ran"));
    let gate = root.path().join("gate");
    let command = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.1; done; echo once >> {}; \
         head -c 3000 /dev/zero | tr '\\0' x",
        started.display(),
        gate.display(),
        ran.display()
    );
    let job_id = submit_to_n2(&n1, &command);
    // The run reaches n2, then its submitter goes away, then the job ends.
    wait_for(Duration::from_secs(20), "n2 to start the job", || {
        started.exists().then_some(())
    });
    n1.kill9();
    std::fs::write(&gate, "").unwrap();
    let owed = |d: &Daemon| d.status().map(|s| s["self"]["results_owed"].clone());
    wait_for(Duration::from_secs(30), "n2 to hold the result", || {
        let o = owed(&n2)?;
        (o[0]["results"] == 1 && o[0]["failing_secs"].is_u64()).then_some(())
    });

    // A day and two hours go by on n2: the result loses its output, and stays.
    std::fs::write(&n2_clock, "+26h").unwrap();
    wait_for(Duration::from_secs(30), "n2 to drop the output", || {
        n2.log()
            .contains("dropped the output of results older than --record-retention")
            .then_some(())
    });
    assert_eq!(owed(&n2).unwrap()[0]["results"], 1);

    // The submitter comes back, as late.
    std::fs::write(&n1_clock, "+26h").unwrap();
    n1.restart();
    let record = record_when(
        [&n1, &n2],
        &job_id,
        "n1's record of the job never closed",
        Duration::from_secs(30),
        |r| r["results"]["n2"]["state"] == "success",
    );
    let stdout = record["results"]["n2"]["stdout"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        stdout,
        "[output not kept: the result waited 26 h for its submitter, which took nothing for \
         26 h]",
        "{record}"
    );
    let runs = std::fs::read_to_string(&ran).unwrap();
    assert_eq!(runs.lines().count(), 1, "the job ran once: {runs:?}");
    wait_for(Duration::from_secs(10), "n2 to owe nothing", || {
        (owed(&n2)? == serde_json::json!([])).then_some(())
    });
}

/// A node restarted with its clock an hour behind its last start still starts with a higher
/// number than that start: its peers take it in at once (they would ignore news of an older
/// start), and it does not mistake its own earlier start for a copy of itself.
#[test]
fn a_node_restarted_with_its_clock_set_back_is_taken_in_at_once() {
    let root = root();
    let n1_clock = clock(root.path(), "n1", "+0");
    let n2_clock = clock(root.path(), "n2", "+0");
    let (n1, mut n2) = two_nodes(root.path(), [n1_clock, n2_clock.clone()], &[]);
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

/// A submitter whose wall clock was corrected by two days while it was down (a crash right
/// after submitting, the run not yet delivered) resends the run as the seconds-old run it is:
/// within one boot its age goes by the boot clock, and the targets run it (by the wall clock
/// they would refuse it as submitted two days ago).
#[test]
fn a_run_resumed_after_a_wall_clock_correction_keeps_its_true_age() {
    // Declared first, so it is removed last: after the daemons in it have stopped.
    let link = Link::create();
    let root = root();
    let root = root.path();
    let mut n1 = Daemon::start_isolated_at(root, "n1", &link, 0, &[]);
    let token = n1.join_token();
    // n2 heartbeats every 5 s: cut off, n1 takes it for alive for 10 to 15 s more, time to
    // submit to it on a loaded machine too.
    let n2_args = ["--token", &token, "--heartbeat-interval", "5s"];
    let n2 = Daemon::start_isolated_at(root, "n2", &link, 1, &n2_args);
    for d in [&n1, &n2] {
        wait_for(Duration::from_secs(30), "the mesh to form", || {
            (alive_names(&d.status()?) == ["n1", "n2"]).then_some(())
        });
    }
    knows_address_of(&n1, &n2);
    // Cut off, n1 still takes n2 for alive for a while: the run stays on n1's disk.
    link.cut();
    let job_id = submit_to_n2(&n1, "echo ran");
    n1.kill9();
    n1.set_clock(Some((clock(root, "n1", "+2d"), Clocks::Wall)));
    link.mend();
    n1.restart();
    let record = record_when(
        [&n1, &n2],
        &job_id,
        "n2 never ran the resumed run",
        Duration::from_secs(60),
        |r| r["results"]["n2"]["stdout"] == "ran",
    );
    assert_eq!(record["results"]["n2"]["state"], "success", "{record}");
}
