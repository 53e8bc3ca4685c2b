//! How a real daemon stops: at once once it has left the mesh, whatever work of its start is
//! still going, and cleanly when the stop signal comes while it is still starting.

use std::{
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use e2e_tests::{Daemon, binary};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// A blob of a size no start checks in the time of a test: a sparse file of 1 TiB (no disk
/// space), named as a blob is, that the daemon hashes from its start on.
fn plant_a_huge_blob(state_dir: &Path) {
    let blobs = state_dir.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let blob = std::fs::File::create(blobs.join("ab".repeat(32))).unwrap();
    blob.set_len(1 << 40).unwrap();
}

/// A daemon whose start is still checking its blob store (a 30 GB store takes most of a
/// minute) exits as soon as it has left the mesh, not when the check ends.
#[test]
fn a_daemon_still_checking_its_blobs_exits_once_it_has_left() {
    let root = tempfile::tempdir().unwrap();
    plant_a_huge_blob(&root.path().join("n1"));
    let mut daemon = Daemon::start(root.path(), "n1", &[]);
    // Gives the check time to be well under way.
    std::thread::sleep(Duration::from_millis(500));
    let status = daemon.terminate();
    let log = daemon.log();
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("node stopped"), "{log}");
}

/// A daemon started by hand, killed if the test fails before it exits.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `directord-mesh join` for a new state directory, its output into `log`.
fn spawn_join(state_dir: &Path, log: &Path) -> Started {
    let child = Command::new(binary())
        .arg("--state-dir")
        .arg(state_dir)
        .args([
            "join",
            "--name",
            "starting",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .env("RUST_LOG", "info,libp2p=warn")
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap();
    Started(child)
}

/// Sends SIGTERM to `child` every few milliseconds until it exits.
fn terminate_until_it_exits(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Reaped only below: the pid is still this child's.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        std::thread::sleep(Duration::from_millis(5));
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon still runs after 30 s of SIGTERM"
        );
    }
}

/// A stop signal that comes while the daemon starts (its state directory is locked, and it
/// goes on opening its database, binding its socket, starting the network) stops it once it
/// is up, as any stop does: it exits by itself, and leaves no control socket behind. The
/// signal is sent from the moment the state directory is locked until the daemon exits, so a
/// second one also comes while it leaves: that stops it at once, still without a socket left.
#[test]
fn stop_signals_from_the_start_on_stop_the_daemon_cleanly() {
    let root = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let state_dir = root.path().join(format!("s{round}"));
        let log = root.path().join(format!("s{round}.out"));
        let mut started = spawn_join(&state_dir, &log);
        let child = &mut started.0;
        let locked = Instant::now() + Duration::from_secs(20);
        while !state_dir.join("daemon.lock").exists() {
            assert!(
                child.try_wait().unwrap().is_none() && Instant::now() < locked,
                "the daemon never locked its state directory"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let status = terminate_until_it_exits(child);
        let said = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
        assert!(
            matches!(status.code(), Some(0 | 1)),
            "round {round}: the daemon did not exit by itself ({status}):\n{said}"
        );
        assert!(!said.contains("panicked"), "round {round}:\n{said}");
        assert!(
            said.contains("node stopped") || said.contains("stopped without a clean leave"),
            "round {round}:\n{said}"
        );
        assert!(
            !state_dir.join("control.sock").exists(),
            "round {round}: a control socket was left behind:\n{said}"
        );
    }
}

/// A fleet stopped one node after another: each node remembers for its next start the members
/// that left before it too (they come back with it), not only those still alive when it
/// stopped. Before, the last nodes to stop remembered only each other, and a fleet started
/// again at once could form two meshes that never met.
#[test]
fn a_node_stopped_after_others_remembers_them_too() {
    let root = e2e_tests::isolated_root(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let mut nodes = e2e_tests::isolated_mesh(root.path(), 3, Duration::from_secs(20));
    let ids: Vec<String> = nodes.iter().map(Daemon::peer_id).collect();
    assert!(nodes[0].terminate().success());
    e2e_tests::wait_for(Duration::from_secs(20), "n2 to see n1 leave", || {
        (e2e_tests::state_of(&nodes[1].status()?, &ids[0])? == "left").then_some(())
    });
    assert!(nodes[1].terminate().success());
    let known = std::fs::read_to_string(nodes[1].state_dir.join("known-peers")).unwrap();
    for (name, id) in [("n1", &ids[0]), ("n3", &ids[2])] {
        assert!(
            known.contains(&format!("/p2p/{id}")),
            "{name} missing from n2's known-peers:\n{known}"
        );
    }
    assert!(!known.contains(&format!("/p2p/{}", ids[1])), "{known}");
}

/// A clean stop leaves the database closed: the next start opens it as it is (before, the
/// process ended while the database was still closing, and every start repaired it, a walk
/// over all of it).
#[test]
fn a_clean_stop_leaves_the_database_closed() {
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(root.path(), "n1", &[]);
    for i in 0..3 {
        let o = d.cli(&[
            "exec",
            "--verb",
            "RUN",
            "--skip-cache",
            &format!("echo {i}"),
            "--poll",
        ]);
        assert!(o.status.success(), "{}", e2e_tests::text(&o));
    }
    assert!(d.terminate().success());
    let repaired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = repaired.clone();
    let db = redb::Builder::new()
        .set_repair_callback(move |_| seen.store(true, std::sync::atomic::Ordering::SeqCst))
        .open(d.state_dir.join("node.redb"))
        .unwrap();
    drop(db);
    assert!(
        !repaired.load(std::sync::atomic::Ordering::SeqCst),
        "the database needed a repair after a clean stop"
    );
}

/// Started under `nohup`, the daemon leaves SIGHUP ignored (a logout does not stop it), but
/// its jobs start with SIGHUP at its default, as any other signal; SIGTERM still stops it
/// cleanly.
#[test]
fn a_daemon_started_under_nohup_outlives_a_hangup() {
    let root = tempfile::tempdir().unwrap();
    let state_dir = root.path().join("n1");
    let log = std::fs::File::create(root.path().join("n1.log")).unwrap();
    let mut child = Command::new("nohup")
        .arg(binary())
        .arg("--state-dir")
        .arg(&state_dir)
        .args(["join", "--name", "n1", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let status = || {
        Command::new(binary())
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("status")
            .output()
            .unwrap()
    };
    e2e_tests::wait_for(Duration::from_secs(30), "the daemon to answer", || {
        status().status.success().then_some(())
    });
    // What a job's own process has ignored: nothing but what the job set itself.
    let job = Command::new(binary())
        .arg("--state-dir")
        .arg(&state_dir)
        .args([
            "exec",
            "--verb",
            "RUN",
            "grep SigIgn: /proc/self/status",
            "--stream",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&job.stdout);
    assert!(job.status.success(), "{said}");
    let mask = said
        .lines()
        .find_map(|l| l.split_once("SigIgn:").map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| panic!("no SigIgn line in {said}"));
    let mask = u64::from_str_radix(&mask, 16).unwrap();
    assert_eq!(mask & 1, 0, "the job inherited SIGHUP ignored: {said}");
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(child.try_wait().unwrap(), None, "a hangup stopped it");
    assert!(status().status.success());
    kill(pid, Signal::SIGTERM).unwrap();
    let (exited, _) = e2e_tests::wait_for(Duration::from_secs(60), "the daemon to stop", || {
        child.try_wait().unwrap()
    });
    assert!(exited.success(), "{exited:?}");
}
