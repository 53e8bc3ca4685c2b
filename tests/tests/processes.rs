//! Real daemons as processes on 127.0.0.1: joining with the token, expiry after `kill -9`, coming
//! back after a restart with the same identity, refusing a node with another mesh key, and a
//! clean leave on SIGTERM.

use std::time::Duration;

use e2e_tests::{Daemon, alive_names, state_of, text, wait_for};

/// Heartbeat interval the test daemons use (see `Daemon::start`): expiry is three of them.
const EXPIRY: Duration = Duration::from_secs(3);
/// Allowance on top of the expiry for scheduling on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(4);

#[test]
fn five_daemons_form_a_mesh_and_track_failures() {
    let root = tempfile::tempdir().unwrap();
    let mut daemons = vec![Daemon::start(root.path(), "n1", &[])];
    let token = daemons[0].join_token();
    for i in 2..=5 {
        daemons.push(Daemon::start(
            root.path(),
            &format!("n{i}"),
            &["--token", &token],
        ));
    }
    let all: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();

    // Every daemon lists all five alive.
    for d in &daemons {
        wait_for(
            Duration::from_secs(20),
            &format!("{} to see all 5 alive", d.name),
            || (alive_names(&d.status()?) == all).then_some(()),
        );
    }
    let ids: Vec<String> = daemons.iter().map(|d| d.peer_id()).collect();

    // kill -9 of n3: the others show it expired within expiry + slack.
    let victim_id = ids[2].clone();
    daemons[2].kill9();
    for d in daemons.iter().filter(|d| d.name != "n3") {
        let (_, took) = wait_for(
            EXPIRY + SLACK,
            &format!("{} to see n3 expired", d.name),
            || (state_of(&d.status()?, &victim_id)? == "expired").then_some(()),
        );
        assert!(took <= EXPIRY + SLACK);
    }

    // Restarted with the same state directory: alive again, same peer id, everywhere.
    daemons[2].restart();
    assert_eq!(
        daemons[2].peer_id(),
        victim_id,
        "a restart keeps the identity"
    );
    for d in &daemons {
        wait_for(
            Duration::from_secs(10),
            &format!("{} to see n3 alive again", d.name),
            || (state_of(&d.status()?, &victim_id)? == "alive").then_some(()),
        );
    }

    // A daemon with another mesh key (it made its own: no token) never appears anywhere.
    let first_addr = daemons[0].status().unwrap()["self"]["listen_addresses"][0]
        .as_str()
        .unwrap()
        .to_string();
    // (--peer alone joins only a mesh the node belongs to: the stranger first makes its own.)
    let mut stranger = Daemon::start(root.path(), "stranger", &[]);
    assert!(stranger.terminate().success());
    let stranger = Daemon::start(root.path(), "stranger", &["--peer", &first_addr]);
    // The mesh's side says that somebody outside it tried: at once, or once the 10 s a
    // handshake may take are over (under another key, the first message may read as a long
    // length that the node waits for). Only then is its absence below news.
    wait_for(
        Duration::from_secs(40),
        "n1 to say a connection failed before it was authenticated",
        || {
            daemons[0]
                .log()
                .contains("a connection failed before it was authenticated")
                .then_some(())
        },
    );
    // Past an expiry since it tried: let in, it would be listed by now.
    std::thread::sleep(EXPIRY + Duration::from_secs(2));
    for d in &daemons {
        let status = d.status().unwrap();
        assert!(
            status["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["name"] != "stranger"),
            "{} lists the stranger",
            d.name
        );
        assert_eq!(alive_names(&status), all);
    }
    assert_eq!(
        alive_names(&stranger.status().unwrap()),
        vec!["stranger".to_string()]
    );

    // SIGTERM, and SIGHUP (the terminal it runs in closing): exit 0 and shown as `left`, not
    // `expired` first (only a goodbye makes a member `left`; silence makes it `expired`).
    for (i, signal) in [
        (4, nix::sys::signal::Signal::SIGTERM),
        (3, nix::sys::signal::Signal::SIGHUP),
    ] {
        let leaver_id = ids[i].clone();
        let exit = daemons[i].stop_with(signal);
        assert!(
            exit.success(),
            "{signal}: clean shutdown exits 0, got {exit}"
        );
        for d in daemons.iter().take(3) {
            wait_for(
                Duration::from_secs(20),
                &format!("{} to see n{} left after {signal}", d.name, i + 1),
                || {
                    let state = state_of(&d.status()?, &leaver_id)?;
                    assert_ne!(state, "expired", "{} took n{} for gone", d.name, i + 1);
                    (state == "left").then_some(())
                },
            );
        }
    }
}

#[test]
fn two_live_nodes_with_one_name_show_a_conflict() {
    let root = tempfile::tempdir().unwrap();
    let first = Daemon::start(root.path(), "dup-a", &["--name", "web"]);
    let token = first.join_token();
    let second = Daemon::start(root.path(), "dup-b", &["--name", "web", "--token", &token]);
    for d in [&first, &second] {
        wait_for(Duration::from_secs(15), "both to show a conflict", || {
            let s = d.status()?;
            let states: Vec<String> = s["nodes"]
                .as_array()?
                .iter()
                .map(|n| n["state"].as_str().unwrap_or_default().to_string())
                .collect();
            (states == ["conflict", "conflict"]).then_some(())
        });
    }
    // Each says so in its log.
    for d in [&first, &second] {
        wait_for(Duration::from_secs(5), "the conflict in the log", || {
            d.log()
                .contains("another live node uses this node's name")
                .then_some(())
        });
    }
    // A job for every node leaves them out (their results could not be told apart), and says
    // so; naming one of them is refused as ambiguous.
    let third = Daemon::start(root.path(), "other", &["--name", "db", "--token", &token]);
    wait_for(Duration::from_secs(15), "db to see the conflict", || {
        let s = third.status()?;
        (s["nodes"].as_array()?.len() == 3).then_some(())
    });
    let o = third.cli(&["exec", "--verb", "RUN", "true", "--poll"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning: left out the live nodes named web"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("1/1 nodes"));
    let o = third.cli(&["exec", "--verb", "RUN", "true", "--target", "web"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ambiguous"));
}

/// A node of another release (another wire version) told to join is named by both sides, in
/// their logs and `status`, and listed by neither; a run for every node says it left it out,
/// a run for it says it runs another release; run with this release, it is a member.
#[test]
fn a_node_of_another_release_is_named_and_not_taken_in_until_it_runs_this_one() {
    let root = tempfile::tempdir().unwrap();
    let a = Daemon::start(root.path(), "a", &[]);
    let a_id = a.peer_id();
    let token = a.join_token();
    let old_dir = root.path().join("old");
    std::fs::create_dir_all(&old_dir).unwrap();
    let hook = old_dir.join("test-wire-version");
    let spoken = mesh::wire::WIRE_VERSION;
    std::fs::write(&hook, (spoken - 1).to_string()).unwrap();
    let mut old = Daemon::start(root.path(), "old", &["--token", &token]);
    let old_id = old.peer_id();
    let warning = |d: &Daemon, version: u16, peer: &str| {
        let status = d.status()?;
        let found = status["self"]["warnings"]
            .as_array()?
            .iter()
            .filter_map(|w| w.as_str())
            .any(|w| w.contains(&format!("speaks wire version {version},")) && w.contains(peer));
        found.then_some(status)
    };
    let (a_status, _) = wait_for(Duration::from_secs(20), "a to name the old node", || {
        warning(&a, spoken - 1, &old_id)
    });
    let (old_status, _) = wait_for(Duration::from_secs(20), "the old node to name a", || {
        warning(&old, spoken, &a_id)
    });
    assert_eq!(state_of(&a_status, &old_id), None, "{a_status}");
    assert_eq!(state_of(&old_status, &a_id), None, "{old_status}");
    assert!(
        a.log()
            .contains(&format!("a node speaks wire version {}", spoken - 1)),
        "{}",
        a.log()
    );
    let shown = String::from_utf8_lossy(&a.cli(&["status"]).stdout).to_string();
    let a_status = a.status().expect("status");
    let release = a_status["self"]["version"].as_str().expect("a version");
    let old_shown = format!(
        "old ({old_id}, release {release}, wire version {})",
        spoken - 1
    );
    assert!(
        shown.contains("Warning") && shown.contains(&old_shown),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("Release    {release} (wire version {spoken})")),
        "{shown}"
    );
    // A run for every node runs on a alone, and says what it left out.
    let o = a.cli(&["exec", "--verb", "RUN", "true", "--poll"]);
    assert!(o.status.success(), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains(&format!(
            "warning: left out the nodes of another release, which take no part in this mesh \
             until every node runs the same release: {old_shown}"
        )),
        "{}",
        text(&o)
    );
    // A run for it is refused before anything runs, saying why.
    let o = a.cli(&["exec", "--verb", "RUN", "true", "--target", "old"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!(
            "target 'old' runs another release (release {release}, wire version {}; this node \
             speaks wire version {spoken})",
            spoken - 1
        )),
        "{}",
        text(&o)
    );

    // Upgraded: a member, and no longer named.
    assert!(old.terminate().success());
    std::fs::remove_file(&hook).unwrap();
    old.restart();
    wait_for(
        Duration::from_secs(20),
        "a to take in the upgraded node",
        || {
            let status = a.status()?;
            let alive = state_of(&status, &old_id)? == "alive";
            let named = status["self"]["warnings"].to_string().contains(&old_id);
            (alive && !named).then_some(())
        },
    );
}

/// Upgrading node by node across a wire version, with a run on its way: the submitter runs
/// the new release first, so the target's result cannot reach it and the target is written
/// off as unreachable; once the target runs the new release too, the real result arrives.
#[test]
fn a_run_across_an_upgrade_node_by_node_takes_its_real_result_once_both_run_one_release() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Daemon::start(root.path(), "a", &[]);
    a.keep_listen_address();
    let token = a.join_token();
    let mut b = Daemon::start(root.path(), "b", &["--token", &token]);
    let b_id = b.peer_id();
    wait_for(Duration::from_secs(15), "a to see b", || {
        (state_of(&a.status()?, &b_id)? == "alive").then_some(())
    });
    let (started, gate) = (root.path().join("started"), root.path().join("gate"));
    // Each run of the job adds a line: the result taken must be the one run's, not a rerun's.
    let runs = root.path().join("runs");
    let job = format!(
        "--skip-cache echo ran >> {}; touch {}; while [ ! -e {} ]; do sleep 0.1; done; \
         echo finished-across",
        runs.display(),
        started.display(),
        gate.display()
    );
    let o = a.cli(&["exec", "--verb", "RUN", &job, "--target", "b"]);
    assert!(o.status.success(), "{}", text(&o));
    let job_id = e2e_tests::submitted_job_id(&o);
    wait_for(Duration::from_secs(20), "the job to start on b", || {
        started.exists().then_some(())
    });
    // a runs the next release (another wire version) first; b's job ends meanwhile.
    let next = (mesh::wire::WIRE_VERSION + 1).to_string();
    assert!(a.terminate().success());
    std::fs::write(a.state_dir.join("test-wire-version"), &next).unwrap();
    a.restart();
    std::fs::write(&gate, "").unwrap();
    let result_on_a = |a: &Daemon| {
        e2e_tests::records(a)
            .into_iter()
            .find(|r| r["job_id"] == job_id.as_str())
            .map(|r| r["results"]["b"].clone())
    };
    let (written_off, _) = wait_for(Duration::from_secs(60), "a to write b off", || {
        result_on_a(&a).filter(|b| {
            b["info"]
                .as_str()
                .is_some_and(|i| i.starts_with("unreachable"))
        })
    });
    assert_eq!(written_off["state"], "failed", "{written_off}");
    // b runs the next release too: its real result reaches a.
    assert!(b.terminate().success());
    std::fs::write(b.state_dir.join("test-wire-version"), &next).unwrap();
    b.restart();
    let (result, _) = wait_for(Duration::from_secs(60), "b's real result on a", || {
        result_on_a(&a).filter(|b| b["state"] == "success")
    });
    assert!(
        result["stdout"]
            .as_str()
            .is_some_and(|out| out.contains("finished-across")),
        "{result}"
    );
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        "ran\n",
        "the job ran once on b, across both restarts"
    );
}

/// A copy of a node's state directory started elsewhere runs with the node's identity and a
/// later start, so peers take its heartbeats over the node's. The node says so in its log, and
/// once the copy stops, peers see the node itself again and jobs reach it.
#[test]
fn a_copy_of_a_nodes_state_directory_is_named_and_the_node_is_back_when_it_stops() {
    let root = tempfile::tempdir().unwrap();
    let a = Daemon::start(root.path(), "a", &[]);
    let token = a.join_token();
    let b = Daemon::start(root.path(), "b", &["--token", &token]);
    let b_id = b.peer_id();
    let b_addr = b.status().unwrap()["self"]["listen_addresses"][0]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(Duration::from_secs(15), "a to see b", || {
        (state_of(&a.status()?, &b_id)? == "alive").then_some(())
    });
    // The copy: everything but the lock, the socket and the log of the running daemon.
    let copy_dir = root.path().join("b-copy");
    std::fs::create_dir(&copy_dir).unwrap();
    for entry in std::fs::read_dir(&b.state_dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if ["daemon.lock", "control.sock", "daemon.log"].contains(&name.to_str().unwrap()) {
            continue;
        }
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(entry.path())
            .arg(copy_dir.join(&name))
            .status()
            .unwrap();
        assert!(status.success());
    }
    // On this machine, the copy refuses to start: the sign of life beside its jobs' log
    // names b's daemon, still running (it would have stopped b's running jobs as its own).
    let sd = copy_dir.to_str().unwrap();
    let refused = e2e_tests::cli(&["--state-dir", sd, "join", "--listen", "127.0.0.1:0"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(&format!("the daemon with pid {} on this machine", b.pid()))
            && said.contains("is a copy"),
        "{said}"
    );
    // On another machine that sign of life names another boot: left out, as if copied there.
    std::fs::remove_file(copy_dir.join("running-jobs.alive")).unwrap();
    let mut copy = Daemon::start(root.path(), "b-copy", &["--name", "b"]);
    assert_eq!(copy.peer_id(), b_id);
    wait_for(
        Duration::from_secs(20),
        "b to name the copy in its log",
        || {
            b.log()
                .contains("another daemon runs with this node's identity")
                .then_some(())
        },
    );
    // And in `status`, as text and JSON.
    let warnings = b.status().unwrap()["self"]["warnings"].clone();
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("another daemon runs with this node's identity")),
        "{warnings}"
    );
    let shown = b.cli(&["status"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("Warning    another daemon"),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    // The copy, whose heartbeats peers take, names b too: a passes b's heartbeats back to
    // this identity, and b's keep coming for longer than an echo of a stopped run.
    wait_for(
        Duration::from_secs(30),
        "the copy to name b in its log",
        || {
            copy.log()
                .contains("another daemon runs with this node's identity")
                .then_some(())
        },
    );
    let warnings = copy.status().unwrap()["self"]["warnings"].clone();
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("another daemon runs with this node's identity")),
        "{warnings}"
    );
    assert!(copy.terminate().success());
    // Peers take b's own heartbeats again: its row is alive, with b's address.
    wait_for(Duration::from_secs(20), "a to see b itself again", || {
        let status = a.status()?;
        let row = status["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["peer_id"] == b_id.as_str())?
            .clone();
        (row["state"] == "alive"
            && row["addresses"]
                .as_array()?
                .iter()
                .any(|x| x == b_addr.as_str()))
        .then_some(())
    });
    assert!(b.log().contains("speaks for itself again"), "{}", b.log());
    // Its start is numbered above the copy's now, and written down: a restart of b goes
    // above it too (else peers would drop it as older than the copy they heard).
    let number = |dir: &std::path::Path| -> u64 {
        std::fs::read_to_string(dir.join("incarnation"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    wait_for(Duration::from_secs(10), "b to write its new number", || {
        (number(&b.state_dir) > number(&copy_dir)).then_some(())
    });
    assert_eq!(
        b.status().unwrap()["self"]["warnings"],
        serde_json::json!([])
    );
    let o = a.cli(&[
        "exec",
        "--verb",
        "RUN",
        "--target",
        "b",
        "echo back",
        "--poll",
    ]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Two daemons on one machine with the same port on two loopback addresses form a mesh.
/// Before, each dialled from its listening port (bound to every address) and so connected to
/// itself: the handshake failed with an error that blamed the mesh key.
#[test]
fn daemons_with_one_port_on_two_addresses_form_a_mesh() {
    let args = |name: &str, listen: &str, token: Option<&str>| {
        let mut a: Vec<String> = [
            "--name",
            name,
            "--listen",
            listen,
            "--heartbeat-interval",
            "1s",
        ]
        .map(String::from)
        .to_vec();
        if let Some(token) = token {
            a.extend(["--token".to_string(), token.to_string()]);
        }
        a
    };
    // n1 is given a free port by the system; n2 listens on the same port of another address.
    // Another process may have that one already: then both start again, on another port.
    let mut attempts = 0;
    let (_root, first, second) = loop {
        attempts += 1;
        let root = tempfile::tempdir().unwrap();
        let mut first = Daemon::spawn(root.path(), "n1", args("n1", "/ip4/127.0.0.1/tcp/0", None));
        first.wait_serving();
        let port = first
            .listen_address()
            .rsplit('/')
            .next()
            .expect("a port")
            .to_string();
        let token = first.join_token();
        let listen = format!("/ip4/127.0.0.2/tcp/{port}");
        let mut second = Daemon::spawn(root.path(), "n2", args("n2", &listen, Some(&token)));
        match second.serving_or_exit() {
            Ok(()) => break (root, first, second),
            Err(status) => {
                let log = second.log();
                assert!(
                    attempts < 3 && log.contains("in use"),
                    "n2 exited at start ({status}):\n{log}"
                );
                eprintln!("port {port} of 127.0.0.2 was taken: starting both again");
            }
        }
    };
    for d in [&first, &second] {
        wait_for(Duration::from_secs(20), "the two to see each other", || {
            (alive_names(&d.status()?) == ["n1", "n2"]).then_some(())
        });
    }
    assert!(
        !second.log().contains("Handshake failed"),
        "{}",
        second.log()
    );
}

/// A node's own row in `status` counts its uptime between its heartbeats (it showed the
/// uptime of its last heartbeat: the same for up to an interval, `0s` for the first one).
#[test]
fn a_nodes_own_row_counts_its_uptime_between_heartbeats() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), "n1", &["--heartbeat-interval", "30s"]);
    let own_uptime = || {
        let status = d.status().expect("status answers");
        status["nodes"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["is_self"] == true))
            .and_then(|r| r["agent_uptime_secs"].as_u64())
            .expect("an own row with an uptime")
    };
    let before = own_uptime();
    std::thread::sleep(Duration::from_millis(2500));
    let after = own_uptime();
    assert!(after >= before + 2, "{before} s, then {after} s");
}

/// A node stopped for longer than its members' expiry (SIGSTOP, as a paused machine) takes
/// nobody for gone once it runs again: it heard nobody because it did not run. Before, every
/// member expired at once and came back a moment later.
#[test]
fn a_node_that_was_paused_takes_nobody_for_gone() {
    let root = tempfile::tempdir().unwrap();
    let mut daemons = vec![Daemon::start(root.path(), "n1", &[])];
    let token = daemons[0].join_token();
    daemons.push(Daemon::start(root.path(), "n2", &["--token", &token]));
    let both = vec!["n1".to_string(), "n2".to_string()];
    wait_for(Duration::from_secs(20), "the mesh to form", || {
        (alive_names(&daemons[0].status()?) == both).then_some(())
    });
    // A run in flight: its check of which targets are alive (2 s after the submission) comes
    // due while the submitter is stopped, and is made as soon as it runs again.
    let poll = daemons[0]
        .cli_command(&[
            "exec",
            "--verb",
            "RUN",
            "--skip-cache",
            "--target",
            "n2",
            "sleep 6",
            "--poll",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "the run to be submitted", || {
        (!e2e_tests::records(&daemons[0]).is_empty()).then_some(())
    });
    let pid = nix::unistd::Pid::from_raw(daemons[0].pid());
    let port = daemons[0]
        .listen_address()
        .rsplit('/')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("a TCP port");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // A connection made to it while it does not run and given up (as a member's dial, after
    // its pings failed, in a longer pause): the system accepts it, the node only afterwards.
    drop(std::net::TcpStream::connect(("127.0.0.1", port)).expect("the system accepts it"));
    std::thread::sleep(EXPIRY + Duration::from_secs(3));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let o = poll.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    wait_for(Duration::from_secs(10), "n1 to run again", || {
        daemons[0]
            .log()
            .contains("did not run for a while")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let log = daemons[0].log();
    assert!(
        !log.contains("state=expired") && !log.contains("before reporting"),
        "the paused node took a member for gone:\n{log}"
    );
    // Connections its members opened meanwhile, given up before it answered, are no stranger.
    assert!(
        !log.contains("failed before it was authenticated"),
        "the paused node warned of strangers:\n{log}"
    );
    assert_eq!(alive_names(&daemons[0].status().unwrap()), both);
}

/// A pause shorter than 3 s takes nobody for gone either, with a member that expires sooner
/// (800 ms heartbeats: silent 2.4 s, it is gone; shorter ones would leave a loaded machine
/// too little room between the pauses). Before, only gaps of 3 s and more counted as
/// pauses.
#[test]
fn a_short_pause_takes_no_member_of_short_heartbeats_for_gone() {
    let root = tempfile::tempdir().unwrap();
    let mut daemons = vec![Daemon::start(root.path(), "n1", &[])];
    let token = daemons[0].join_token();
    daemons.push(Daemon::start(
        root.path(),
        "n2",
        &["--token", &token, "--heartbeat-interval", "800ms"],
    ));
    let both = vec!["n1".to_string(), "n2".to_string()];
    wait_for(Duration::from_secs(20), "the mesh to form", || {
        (alive_names(&daemons[0].status()?) == both).then_some(())
    });
    let pid = nix::unistd::Pid::from_raw(daemons[0].pid());
    for _ in 0..3 {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        std::thread::sleep(Duration::from_millis(2800));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
        // It runs again (it answers) before the next pause: each pause is one it came back
        // from, and would have taken n2 for gone then.
        wait_for(Duration::from_secs(20), "n1 to answer", || {
            daemons[0].status().map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(1500));
    }
    let log = daemons[0].log();
    assert!(
        !log.contains("state=expired"),
        "the paused node took a member for gone:\n{log}"
    );
    assert_eq!(alive_names(&daemons[0].status().unwrap()), both);
}

/// `status` on a daemon that does not run (SIGSTOP) says so within its own, shorter wait
/// instead of the other requests' minute.
#[test]
fn status_of_a_stopped_daemon_says_so_within_seconds() {
    let root = tempfile::tempdir().unwrap();
    let d = Daemon::start(root.path(), "n1", &[]);
    let pid = nix::unistd::Pid::from_raw(d.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let o = d.cli(&["status"]);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("did not answer within 15 s (is it stopped, e.g. with SIGSTOP"),
        "{}",
        text(&o)
    );
}

/// A daemon whose log reader goes away (its standard error a pipe closed: a log shipper
/// restarted, `| head`) goes on as a member and runs jobs; before, its next log line
/// panicked the task that wrote it (the mesh's), and the node stayed up, silent.
#[test]
fn a_daemon_whose_log_reader_goes_away_goes_on() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let root = tempfile::tempdir().unwrap();
    let n1 = Daemon::start(root.path(), "n1", &[]);
    let token = n1.join_token();
    let state_dir = root.path().join("n2");
    /// Killed when the test ends, whether it passes or not.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut n2 = Command::new(e2e_tests::binary())
        .arg("--state-dir")
        .arg(&state_dir)
        .args(["join", "--name", "n2", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--heartbeat-interval", "1s", "--token", &token])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    // Its first log line read, then the pipe closed.
    let mut first = String::new();
    BufReader::new(n2.0.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let both = vec!["n1".to_string(), "n2".to_string()];
    wait_for(Duration::from_secs(30), "n2 to be alive to n1", || {
        (alive_names(&n1.status()?) == both).then_some(())
    });
    // n2 logs on (the jobs it runs, its status asked): it stays alive to n1 through it all,
    // and runs jobs.
    let runs_a_job = || {
        let o = n1.cli(&[
            "exec",
            "--verb",
            "RUN",
            "--target",
            "n2",
            "--skip-cache",
            "echo still",
            "--poll",
            "--check",
        ]);
        assert!(o.status.success(), "{}", text(&o));
    };
    runs_a_job();
    let o = Command::new(e2e_tests::binary())
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("status")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(alive_names(&n1.status().unwrap()), both);
    runs_a_job();
    assert_eq!(n2.0.try_wait().unwrap(), None, "n2 stopped");
}

/// A task the daemon cannot do without that dies (a bug; here a test hook panics the file
/// transfer task at its next fetch) stops the daemon with an error, so that its service
/// manager starts it again; before, the process stayed up without it, a member in name only.
#[test]
fn a_daemon_that_loses_a_task_stops_with_an_error() {
    let root = tempfile::tempdir().unwrap();
    let n1 = Daemon::start(root.path(), "n1", &[]);
    let token = n1.join_token();
    let mut n2 = Daemon::start(root.path(), "n2", &["--token", &token]);
    let both = vec!["n1".to_string(), "n2".to_string()];
    wait_for(Duration::from_secs(30), "the mesh to form", || {
        (alive_names(&n1.status()?) == both).then_some(())
    });
    std::fs::write(n2.state_dir.join("test-panic-transfers"), b"").unwrap();
    // Too large to travel inside the run: n2 fetches it.
    let file = root.path().join("payload.bin");
    std::fs::write(&file, vec![7u8; 200_000]).unwrap();
    let o = n1.cli(&[
        "exec",
        "--verb",
        "ADD",
        "--target",
        "n2",
        &format!("{} /tmp/payload-lost-task.bin", file.display()),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let exited = n2.wait_exit(Duration::from_secs(30));
    assert_eq!(exited.code(), Some(1), "{}", n2.log());
    assert!(
        n2.log()
            .contains("the file transfer task of the daemon stopped (a bug"),
        "{}",
        n2.log()
    );
}

/// Runs `command` and returns its output, or `None` if it has not finished within `limit`
/// (then it is killed).
fn output_within(
    mut command: std::process::Command,
    limit: Duration,
) -> Option<std::process::Output> {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the CLI starts");
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("the CLI runs").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child.wait_with_output().expect("the CLI's output"))
}

/// Connections that never finish their handshake (anyone who reaches the port can open them,
/// mesh key or not) take no more than a share of the daemon's descriptors: while a flood of
/// them goes on against a daemon that may open 256 files, it answers on its control socket
/// and runs a job; once the flood stops, a new member joins.
#[test]
fn a_flood_of_connections_that_never_finish_their_handshake_leaves_the_daemon_working() {
    use std::{
        net::{SocketAddr, TcpStream},
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
    };
    // The flood's sockets are this test process's descriptors, beside those of the tests
    // running alongside: room for them all, as far as the hard limit allows.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, soft.max(hard.min(8_192)), hard);
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(root.path(), "flooded", &[]);
    d.terminate();
    d.set_descriptor_limit(Some(256));
    d.restart();
    let listen = d.listen_address();
    let port: u16 = listen
        .rsplit('/')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a TCP port");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // Silent connections, opened one after another and held, as a flood would.
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = std::thread::spawn({
        let flooding = flooding.clone();
        move || {
            let mut held = Vec::new();
            while flooding.load(Ordering::Relaxed) && held.len() < 1_000 {
                if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    held.push(s);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let opened = held.len();
            // Held until the checks are done.
            while flooding.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            opened
        }
    });
    // Well past what the daemon could hold at once; its open descriptors sampled meanwhile.
    let descriptors = || {
        std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
            .map(|fds| fds.count())
            .unwrap_or(0)
    };
    let mut most = 0;
    let sampling = std::time::Instant::now();
    while sampling.elapsed() < Duration::from_secs(3) {
        most = most.max(descriptors());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Half of 256 for connections in their handshake, the rest for everything else.
    assert!(
        most < 200,
        "the flood took {most} of the daemon's 256 descriptors"
    );

    let status = output_within(d.cli_command(&["status", "--json"]), Duration::from_secs(8));
    let status = status.expect("status did not answer within 8 s under the flood");
    assert!(status.status.success(), "{}", text(&status));
    let job = output_within(
        d.cli_command(&["exec", "--verb", "RUN", "echo still-working", "--poll"]),
        Duration::from_secs(20),
    )
    .expect("a job did not finish within 20 s under the flood");
    assert!(job.status.success(), "{}", text(&job));
    assert!(text(&job).contains("still-working"), "{}", text(&job));

    flooding.store(false, Ordering::Relaxed);
    let opened = flood.join().expect("the flood ran");
    assert!(opened > 300, "only {opened} connections opened");
    assert!(
        d.log().contains("in their handshake already"),
        "the daemon did not say it closed connections:\n{}",
        d.log()
    );

    // Once the flood is over, a new member joins.
    let newcomer = Daemon::start(root.path(), "newcomer", &["--token", &d.join_token()]);
    let both = vec!["flooded".to_string(), "newcomer".to_string()];
    wait_for(Duration::from_secs(40), "the newcomer to join", || {
        (alive_names(&d.status()?) == both).then_some(())
    });
    drop(newcomer);
}

/// A daemon whose control socket was removed while it ran is said to run, with how to reach
/// it again, not taken for stopped (starting another would be refused).
#[test]
fn a_daemon_without_its_control_socket_is_said_to_need_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(root.path(), "socketless", &[]);
    std::fs::remove_file(d.state_dir.join("control.sock")).unwrap();
    let o = d.cli(&["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let said = text(&o);
    assert!(
        said.contains(&format!("the daemon with pid {} runs", d.pid()))
            && said.contains("is gone")
            && said.contains("Restart it"),
        "{said}"
    );
    assert!(!said.contains("Start one with"), "{said}");
    // A copy of the directory is not that daemon's: nobody runs with it.
    let copy = root.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&d.state_dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    let o = e2e_tests::cli(&["--state-dir", copy.to_str().unwrap(), "status"]);
    let said = text(&o);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(
        said.contains("no directord-mesh daemon is running") && !said.contains("is gone"),
        "{said}"
    );
    d.terminate();
}
