//! Two daemons with one identity: a node's state directory copied, key and all, to another
//! machine (here, another network and mount namespace). Peers cannot tell the two apart, so a
//! target's results for a run may reach the copy, which never submitted it: the copy must leave
//! them with the target, which hands them to the submitter once it reaches it. Needs root and
//! `ip`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use e2e_tests::{Daemon, Fleet, records, wait_for};
use serde_json::Value;

/// What the copy logs when it is sent results of a run it has no trace of.
const NO_TRACE: &str = "sent results of a run this node has no trace of";

/// Copies the regular files of `from` into `to`, directories and all, but the daemon's log
/// (the copy keeps its own) and sockets (the control socket).
fn copy_state(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_state(&entry.path(), &target);
        } else if kind.is_file() && entry.file_name() != "daemon.log" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// What `d` owes to the submitter `peer`: (results, failing), per its `status`.
fn owed_to(d: &Daemon, peer: &str) -> Option<(u64, bool)> {
    let status = d.status()?;
    let owed = status["self"]["results_owed"].as_array()?;
    Some(
        owed.iter()
            .find(|o| o["peer_id"] == peer)
            .map_or((0, false), |o| {
                (
                    o["results"].as_u64().unwrap_or(0),
                    !o["failing_secs"].is_null(),
                )
            }),
    )
}

#[test]
fn results_that_reach_a_copy_of_their_submitter_stay_with_the_target() {
    let fleet = Fleet::create(3);
    let root = e2e_tests::isolated_root(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let root = root.path();
    let mut a = Daemon::start_isolated_in(root, "a", &fleet, 0, &[]);
    let token = a.join_token();
    let t = Daemon::start_isolated_in(root, "t", &fleet, 2, &["--token", &token]);
    let both = ["a", "t"].map(String::from).to_vec();
    for d in [&a, &t] {
        wait_for(Duration::from_secs(30), "the mesh to form", || {
            (e2e_tests::alive_names(&d.status()?) == both).then_some(())
        });
    }
    // The operator's copy: taken while `a` is stopped, so its database is whole.
    a.terminate();
    copy_state(&a.state_dir, &root.join("b"));
    a.restart();
    for d in [&a, &t] {
        wait_for(Duration::from_secs(30), "a to be back", || {
            (e2e_tests::alive_names(&d.status()?) == both).then_some(())
        });
    }
    let p = a.peer_id();

    let submitted = Instant::now();
    let o = a.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--skip-cache",
        "--target",
        "t",
        "sleep 20; echo twin-marker",
    ]);
    let job_id = e2e_tests::submitted_job_id(&o);
    wait_for(Duration::from_secs(30), "the job to start on t", || {
        std::fs::read_to_string(t.state_dir.join("running-jobs"))
            .ok()?
            .contains(&format!(">{job_id}"))
            .then_some(())
    });
    // `a` goes out of reach; its copy starts on machine 1 and speaks for its peer id. Its start
    // is numbered above `a`'s (the clock past `a`'s number, which holds a random part below a
    // second), so peers take it at once, not once `a`'s row is gone.
    fleet.cut(0, 2);
    fleet.cut(0, 1);
    let a_start: u64 = std::fs::read_to_string(a.state_dir.join("incarnation"))
        .expect("a's start number")
        .trim()
        .parse()
        .expect("a number");
    wait_for(
        Duration::from_secs(5),
        "the clock to pass a's start",
        || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_millis();
            (now > u128::from(a_start)).then_some(())
        },
    );
    let t_address = t.status().expect("status")["self"]["listen_addresses"][0]
        .as_str()
        .expect("t listens")
        .to_string();
    let mut b = Daemon::start_isolated_in(
        root,
        "b",
        &fleet,
        1,
        &["--token", &token, "--peer", &t_address],
    );
    assert_eq!(b.peer_id(), p, "the copy has the submitter's identity");
    // The copied join token names `a`, its own peer id: not dialled, and said.
    wait_for(
        Duration::from_secs(10),
        "the copy to skip its own address",
        || {
            b.log()
                .contains("not dialling a bootstrap address of this node's own peer id")
                .then_some(())
        },
    );
    let row_of_p = |d: &Daemon| -> Option<Value> {
        d.status()?["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["peer_id"] == p.as_str())
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !row_of_p(&t).is_some_and(|row| row["name"] == "b" && row["state"] == "alive") {
        assert!(
            Instant::now() < deadline,
            "t never took the copy for a: t's row {:?}, b's status {:?}\n--- b's log:\n{}\n--- t's log:\n{}",
            row_of_p(&t),
            b.status(),
            b.log(),
            t.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The result goes to the copy: it says it has no trace of the run (or, as a release
    // before did, takes it, and the target forgets it).
    let (said, _) = wait_for(
        Duration::from_secs(150),
        "t to hand its result to the copy",
        || {
            if b.log().contains(NO_TRACE) {
                return Some(true);
            }
            let finished = submitted.elapsed() > Duration::from_secs(25);
            (finished && owed_to(&t, &p)? == (0, false)).then_some(false)
        },
    );
    let owed = owed_to(&t, &p);
    assert!(
        said && owed.is_some_and(|(n, _)| n == 1),
        "t forgot its result once the copy answered (owes {owed:?}):\n--- b's log:\n{}\n--- t's log:\n{}",
        b.log(),
        t.log()
    );
    // Tries go on: the copy keeps saying so, and the result stays.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(owed_to(&t, &p).map(|(n, _)| n), Some(1));

    // The copy stops; the submitter is reachable again and starts anew (a later start than
    // the copy's: peers take it over the copy's goodbye). The result reaches it.
    b.terminate();
    fleet.mend(0, 2);
    fleet.mend(0, 1);
    a.terminate();
    a.restart();
    let deadline = Instant::now() + Duration::from_secs(120);
    let record: Value = loop {
        let record = records(&a).into_iter().find(|r| r["job_id"] == job_id);
        if let Some(r) = record.filter(|r| r["results"]["t"]["state"] == "success") {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "t's result never reached a: {:?}\n--- t's status: {:?}\n--- a's log:\n{}\n--- t's log:\n{}",
            records(&a).into_iter().find(|r| r["job_id"] == job_id),
            t.status(),
            a.log(),
            t.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        record["results"]["t"]["stdout"].as_str().map(str::trim_end),
        Some("twin-marker"),
        "{record}"
    );
    wait_for(Duration::from_secs(30), "t to owe a nothing", || {
        (owed_to(&t, &p)?.0 == 0).then_some(())
    });
}
