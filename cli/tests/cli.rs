//! The command line as an operator meets it: help texts, and bad input that must end in a clear
//! message and the right exit code (2 for bad input, 1 for failures), never a panic.

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_directord-mesh"));
    c.stdin(Stdio::null());
    c
}

/// Runs the CLI to its end. A command that should have refused its input at once but took it
/// (and so started a daemon, or waits for one) is killed after two minutes and fails the test,
/// rather than hang the run.
fn run(args: &[&str]) -> Output {
    use std::io::Read;
    const GIVE_UP: Duration = Duration::from_secs(120);
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read as it comes, so a chatty command never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > GIVE_UP {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} still ran after {GIVE_UP:?}: bad input taken?");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the command failed with `code` and every `needle` in its stderr, without a panic.
fn fails(args: &[&str], code: i32, needles: &[&str]) {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: expected {n:?} in:\n{err}");
    }
}

#[test]
fn help_explains_commands_and_settings() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for word in [
        "join",
        "status",
        "manage",
        "demo",
        "--state-dir",
        "DIRECTORD_MESH_STATE_DIR",
    ] {
        assert!(out.contains(word), "--help lacks {word}:\n{out}");
    }
    let o = run(&["join", "--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for word in [
        "--token",
        "--peer",
        "--listen",
        "--open",
        "--heartbeat-interval",
        "--config",
        "--socket-group",
        "--max-peers",
        "DIRECTORD_MESH_MAX_PEERS",
        "--stop-grace",
        "DIRECTORD_MESH_STOP_GRACE",
        "DIRECTORD_MESH_TOKEN",
        "join-token",
    ] {
        assert!(out.contains(word), "join --help lacks {word}:\n{out}");
    }
}

#[test]
fn bad_join_settings_exit_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().to_str().unwrap();
    fails(
        &["--state-dir", sd, "join", "--token", "garbage"],
        2,
        &["--token", "not a directord-mesh join token"],
    );
    fails(
        &["--state-dir", sd, "join", "--token", "dm1-AAAAAAAAAAAA"],
        2,
        &["damaged"],
    );
    fails(
        &["--state-dir", sd, "join", "--peer", "nonsense"],
        2,
        &["--peer", "nonsense"],
    );
    fails(
        &["--state-dir", sd, "join", "--stop-grace", "2d"],
        2,
        &["--stop-grace: 2d is longer than 24 h"],
    );
    // --peer without a token, from a state directory of no mesh: a new key could never join.
    fails(
        &[
            "--state-dir",
            sd,
            "join",
            "--peer",
            "127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
        ],
        2,
        &["--peer", "join with --token", "--open"],
    );
    assert!(!dir.path().join("mesh.key").exists());
    fails(
        &["--state-dir", sd, "join", "--listen", "/ip4/1.2.3/tcp/1"],
        2,
        &["--listen"],
    );
    fails(
        &[
            "--state-dir",
            sd,
            "join",
            "--heartbeat-interval",
            "5 parsecs",
        ],
        2,
        &["--heartbeat-interval"],
    );
    // Out of range on the command line, as from the environment or a file: refused before
    // any daemon starts (a zero interval would heartbeat without pause).
    for interval in ["0", "50ms", "2h"] {
        fails(
            &["--state-dir", sd, "join", "--heartbeat-interval", interval],
            2,
            &["--heartbeat-interval", "outside 100ms..1h"],
        );
    }
    fails(
        &["--state-dir", sd, "join", "--blob-retention", "5ms"],
        2,
        &["--blob-retention", "0 to keep files forever"],
    );
    fails(
        &["--state-dir", sd, "join", "--blob-retention", "a week"],
        2,
        &["--blob-retention", "not a duration"],
    );
    // A connection budget no node could keep, or no number: the flag, the value and the range.
    for (n, said) in [
        ("0", "0 is too few"),
        ("-5", "-5 is too few"),
        ("11", "11 is too few"),
        ("20000", "20000 is too many"),
        ("ten", "'ten' is not a number of peers"),
    ] {
        fails(
            &["--state-dir", sd, "join", "--max-peers", n],
            2,
            &["--max-peers", said, "from 12 to 16384"],
        );
    }
    fails(
        &["--state-dir", sd, "join", "--name", "bad name"],
        2,
        &["node name"],
    );
    fails(
        &["--state-dir", sd, "join", "--label", "novalue"],
        2,
        &["KEY=VALUE"],
    );
    fails(
        &[
            "--state-dir",
            sd,
            "join",
            "--socket-group",
            "no-such-group-xyz",
        ],
        2,
        &["no group named"],
    );
    fails(
        &[
            "--state-dir",
            sd,
            "join",
            "--config",
            "/nonexistent/dm.yaml",
        ],
        2,
        &["/nonexistent/dm.yaml"],
    );

    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "name: ok\nlisten: [\"/ip4/127.0.0.1/tcp/0\"]\nheartbeat: 5\n",
    )
    .unwrap();
    fails(
        &["--state-dir", sd, "join", "--config", cfg.to_str().unwrap()],
        2,
        &["bad.yaml", "unknown field `heartbeat`"],
    );
    std::fs::write(&cfg, "name: [unclosed\n").unwrap();
    fails(
        &["--state-dir", sd, "join", "--config", cfg.to_str().unwrap()],
        2,
        &["bad.yaml", "line 1"],
    );

    let o = bin()
        .args(["--state-dir", sd, "join"])
        .env("DIRECTORD_MESH_PEER", "what")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("DIRECTORD_MESH_PEER"), "{}", stderr(&o));
    let o = bin()
        .args(["--state-dir", sd, "join"])
        .env("DIRECTORD_MESH_MAX_PEERS", "5")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("DIRECTORD_MESH_MAX_PEERS: max-peers: 5 is too few"),
        "{}",
        stderr(&o)
    );
    // None of this created anything in the state directory.
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "bad.yaml")
            .count(),
        0
    );
}

#[test]
fn usage_errors_exit_2() {
    fails(&["manage"], 2, &["--list-nodes"]);
    // A typo in one of exec's own options is not handed to the job (it would run everywhere).
    fails(
        &["exec", "--verb", "RUN", "echo only-n1", "--taget", "n1"],
        2,
        &["exec has no option --taget: did you mean --target?"],
    );
    // Directord's `--target a b` after the command: `b` is not made a word of the command.
    fails(
        &[
            "exec",
            "--verb",
            "RUN",
            "echo only-n1",
            "--target",
            "n1",
            "n2",
        ],
        2,
        &["'n2' follows `--target n1`", "--target n1 --target n2"],
    );
    // The same after orchestrate's files: `n2` is read as a file, and its error says why.
    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hello.yaml");
    fails(
        &["orchestrate", hello, "--target", "n1", "n2"],
        2,
        &[
            "n2: cannot read",
            "'n2' follows `--target n1`",
            "--target n1 --target n2",
        ],
    );
    // A filter another action would silently ignore is refused before any daemon is asked.
    fails(
        &["manage", "--job-info", "last", "--filter", "failed"],
        2,
        &["--filter applies only to --list-jobs"],
    );
    fails(
        &["manage", "--job-info", "a\u{1b}[2Jb"],
        2,
        &[
            "--job-info <ID>",
            "a control character ('\\u{1b}') at byte 1",
        ],
    );
    fails(
        &["manage", "--job-info", "last", "--last", "3"],
        2,
        &["--last applies only to --list-jobs"],
    );
    fails(&["manage", "--list-jobs", "--last", "0"], 2, &["--last"]);
    fails(&["demo", "--nodes", "0"], 2, &["--nodes"]);
    // A negative duration is refused as one, not as an unknown argument; an option where a
    // duration should be is still an option.
    fails(
        &["join", "--stop-grace", "-5s"],
        2,
        &["--stop-grace: '-5s' is not a duration"],
    );
    fails(
        &["join", "--heartbeat-interval", "--name", "n1"],
        2,
        &["--heartbeat-interval <DURATION>"],
    );
    // A negative number is a value out of range, not an unknown argument.
    fails(&["demo", "--nodes", "-1"], 2, &["'-1'", "--nodes"]);
    fails(
        &["manage", "--list-jobs", "--last", "-3"],
        2,
        &["'-3'", "--last"],
    );
    // --finger-print runs nothing: there is nothing to wait for or check.
    fails(
        &["exec", "--verb", "RUN", "--finger-print", "--check", "true"],
        2,
        &["'--finger-print' cannot be used with '--check'"],
    );
    // Following a run prints status lines; JSON is refused before any daemon is asked.
    fails(
        &["manage", "--follow-run", "last", "--json"],
        2,
        &["--follow-run prints status lines, not JSON"],
    );
    fails(&["frobnicate"], 2, &["frobnicate"]);
    // The demo checks its file before it starts a daemon, and has no use for --state-dir.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let started = Instant::now();
    fails(
        &["demo", "--nodes", "2", "--exit", missing.to_str().unwrap()],
        2,
        &["missing.yaml"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a mesh was started first"
    );
    fails(
        &[
            "--state-dir",
            dir.path().to_str().unwrap(),
            "demo",
            "--exit",
        ],
        2,
        &["demo --dir"],
    );
    fails(
        &[
            "demo",
            "--exit",
            "--state-dir",
            dir.path().to_str().unwrap(),
        ],
        2,
        &["demo --dir"],
    );
    // A --dir that cannot be a directory is bad input, said as such.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    fails(
        &[
            "demo",
            "--nodes",
            "2",
            "--exit",
            "--dir",
            file.to_str().unwrap(),
        ],
        2,
        &["--dir", "cannot create it"],
    );
    // ... and its help does not offer it.
    let o = run(&["demo", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("--dir") && !help.contains("--state-dir"),
        "{help}"
    );
    // --restrict that matches nothing says so instead of printing an empty table.
    let file = dir.path().join("site.yaml");
    std::fs::write(&file, "- jobs:\n  - RUN: echo hi\n").unwrap();
    fails(
        &[
            "orchestrate",
            file.to_str().unwrap(),
            "--finger-print",
            "--restrict",
            "ffff0000",
        ],
        2,
        &["--restrict ffff0000 matches none"],
    );
    let o = run(&["orchestrate", file.to_str().unwrap(), "--finger-print"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("RUN"));
    // The jobs of one glob are told apart by their files, however long the paths.
    let deep = dir
        .path()
        .join("a-directory-with-a-long-name")
        .join("files");
    std::fs::create_dir_all(&deep).unwrap();
    for name in ["one.conf", "two.conf"] {
        std::fs::write(deep.join(name), name).unwrap();
    }
    let src = format!("{}/*.conf", deep.display());
    let o = run(&["exec", "--verb", "ADD", "--finger-print", &src, "/etc/app/"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("one.conf -> /etc/app/") && table.contains("two.conf -> /etc/app/"),
        "{table}"
    );
    // A value that cannot start a fingerprint is refused as such.
    fails(
        &["orchestrate", file.to_str().unwrap(), "--restrict", "zzzz"],
        2,
        &["--restrict", "'z' is not a hexadecimal digit"],
    );
}

/// The README's first command: a real mesh of daemons on this machine and an orchestration
/// through it; its exit code is the orchestration's (2 for bad input, as everywhere).
#[test]
fn demo_runs_an_orchestration_through_a_real_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let daemons = dir.path().join("daemons");
    let o = run(&[
        "demo",
        "--nodes",
        "3",
        "--exit",
        "--dir",
        daemons.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("heard the kernel of 3 nodes"), "{out}");
    assert_eq!(
        out.matches("STDOUT this line comes from exactly one node")
            .count(),
        1,
        "{out}"
    );
    // A file that parses but cannot run (a source that is not there) is bad input.
    let file = dir.path().join("add.yaml");
    std::fs::write(&file, "- jobs:\n  - ADD: /no/such/file /tmp/x\n").unwrap();
    fails(
        &[
            "demo",
            "--nodes",
            "2",
            "--exit",
            "--dir",
            dir.path().join("again").to_str().unwrap(),
            file.to_str().unwrap(),
        ],
        2,
        &["/no/such/file", "the orchestration did not succeed"],
    );
}

/// The README's first command as an operator runs it: the demo, then Ctrl-C once the mesh is
/// up (exit 0); and a Ctrl-C while the mesh is still forming (exit 130). Either way every
/// daemon stops and the temporary directory goes.
#[test]
fn ctrl_c_stops_the_demo_and_removes_its_directory() {
    use std::io::{BufRead, BufReader, Read};
    for ready in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let child = bin()
            .args(["demo", "--nodes", "2"])
            .env("TMPDIR", tmp.path())
            .current_dir(tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut demo = Running(child);
        let mut out = BufReader::new(demo.0.stdout.take().unwrap());
        let mut seen = String::new();
        let mut root = None;
        loop {
            let mut line = String::new();
            let read = out.read_line(&mut line).unwrap();
            assert!(
                read > 0,
                "the demo ended before it was interrupted:\n{seen}"
            );
            seen.push_str(&line);
            if let Some(rest) =
                line.strip_prefix("Starting 2 daemons on 127.0.0.1 (state and logs in ")
            {
                root = Some(std::path::PathBuf::from(
                    rest.trim_end().trim_end_matches(')'),
                ));
                if !ready {
                    break;
                }
            }
            if line.contains("press Ctrl-C") {
                break;
            }
        }
        let root = root.expect("the demo names its directory first");
        assert!(root.starts_with(tmp.path()), "{}", root.display());
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(demo.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let mut err = String::new();
        demo.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = demo.0.wait().unwrap();
        let expected = if ready { 0 } else { 130 };
        assert_eq!(status.code(), Some(expected), "{seen}{rest}\n{err}");
        if ready {
            assert!(rest.contains("Stopping 2 daemons..."), "{rest}");
        } else {
            assert!(
                err.contains("interrupted before the demo was over"),
                "{err}"
            );
        }
        assert!(!root.exists(), "{} is left", root.display());
        // No daemon of it runs on: none has its directory on its command line.
        let needle = root.to_str().unwrap();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                let cmdline = String::from_utf8_lossy(&cmdline);
                assert!(!cmdline.contains(needle), "still running: {cmdline}");
            }
        }
    }
}

#[test]
fn exit_codes_are_in_the_help() {
    for args in [
        &["--help"][..],
        &["exec", "--help"],
        &["orchestrate", "--help"],
        &["manage", "--help"],
    ] {
        let o = run(args);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("Exit codes: 0 success"), "{args:?}:\n{out}");
        assert!(out.contains("2 bad input"), "{args:?}:\n{out}");
    }
}

#[test]
fn status_without_a_daemon_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().to_str().unwrap();
    fails(
        &["--state-dir", sd, "status"],
        1,
        &["no directord-mesh daemon is running", "join"],
    );
    fails(
        &["--state-dir", sd, "manage", "--list-nodes"],
        1,
        &["no directord-mesh daemon is running"],
    );
    // The environment variable names the state directory too.
    let o = bin()
        .args(["status"])
        .env("DIRECTORD_MESH_STATE_DIR", sd)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(sd), "{}", stderr(&o));
    // A directory of other files is not taken for a state directory a daemon could start in.
    std::fs::write(dir.path().join("notes.txt"), "not a node").unwrap();
    fails(
        &["--state-dir", sd, "status"],
        1,
        &[&format!(
            "{sd} is not a directord-mesh state directory (it holds other files but none \
             of a node's"
        )],
    );
    // One made from an image (every file but identity.key) is a state directory with no
    // daemon running yet.
    std::fs::write(dir.path().join("join-token"), "dm1-").unwrap();
    fails(
        &["--state-dir", sd, "status"],
        1,
        &["no directord-mesh daemon is running", "join"],
    );
    // A state directory that is not there at all (a typo) is said to be so, before anybody
    // starts a new mesh with it.
    let typo = dir.path().join("no-such-state");
    fails(
        &["--state-dir", typo.to_str().unwrap(), "status"],
        1,
        &["there is no state directory", "no-such-state", "--token"],
    );
}

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_daemon(state_dir: &Path, listen: &str) -> Running {
    start_daemon_with(state_dir, listen, &[])
}

fn start_daemon_with(state_dir: &Path, listen: &str, extra: &[&str]) -> Running {
    let child = bin()
        .args([
            "--state-dir",
            state_dir.to_str().unwrap(),
            "join",
            "--listen",
            listen,
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !run(&["--state-dir", state_dir.to_str().unwrap(), "status"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Running(child)
}

#[test]
fn a_node_that_reaches_no_member_says_so() {
    // The token of a mesh whose only node is gone.
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone");
    drop(start_daemon(&gone, "/ip4/127.0.0.1/tcp/0"));
    let token = std::fs::read_to_string(gone.join("join-token")).unwrap();
    let log = dir.path().join("alone.log");
    let child = bin()
        .args(["--state-dir", dir.path().join("alone").to_str().unwrap()])
        .args(["join", "--listen", "/ip4/127.0.0.1/tcp/0", "--token"])
        .arg(token.trim())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _alone = Running(child);
    let text = wait_for_in_log(&log, "connected to no member of the mesh");
    assert!(text.contains("Connection refused"), "{text}");
    // `status` says it too, not only the log.
    let o = run(&[
        "--state-dir",
        dir.path().join("alone").to_str().unwrap(),
        "status",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.lines().any(|l| l.starts_with("Warning")
            && l.contains("connected to no member of the mesh for")
            && l.contains("Connection refused")),
        "{said}"
    );
}

/// A state directory of one mesh given another mesh's token, or told to join an open mesh:
/// the arguments are wrong (exit 2, as for a malformed token), the directory is left alone.
#[test]
fn a_token_of_another_mesh_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    drop(start_daemon(&a, "/ip4/127.0.0.1/tcp/0"));
    drop(start_daemon(&b, "/ip4/127.0.0.1/tcp/0"));
    let token_b = std::fs::read_to_string(b.join("join-token")).unwrap();
    let key_a = std::fs::read(a.join("mesh.key")).unwrap();
    let sd = a.to_str().unwrap();
    fails(
        &["--state-dir", sd, "join", "--token", token_b.trim()],
        2,
        &["belongs to another mesh", "use the token of that mesh"],
    );
    fails(
        &["--state-dir", sd, "join", "--open"],
        2,
        &["cannot join an open mesh"],
    );
    assert_eq!(std::fs::read(a.join("mesh.key")).unwrap(), key_a);
}

/// The daemon's log once it says `needle` (within 20 s).
fn wait_for_in_log(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A config file that sets nothing is most likely the wrong file: the daemon starts, and says so.
#[test]
fn a_config_file_that_sets_nothing_is_named_in_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fleet.yaml");
    std::fs::write(&cfg, "# to be filled in\n\n").unwrap();
    let log = dir.path().join("daemon.log");
    let child = bin()
        .args(["--state-dir", dir.path().join("s").to_str().unwrap()])
        .args(["join", "--listen", "/ip4/127.0.0.1/tcp/0", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _daemon = Running(child);
    let text = wait_for_in_log(&log, "this config file sets nothing");
    assert!(text.contains("fleet.yaml"), "{text}");
}

#[test]
fn one_daemon_per_state_dir_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let _daemon = start_daemon(&a, "/ip4/127.0.0.1/tcp/0");
    fails(
        &[
            "--state-dir",
            a.to_str().unwrap(),
            "join",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
        1,
        &["another daemon already runs"],
    );
    // Find the port it took, and try to take it again from another state directory.
    let o = run(&["--state-dir", a.to_str().unwrap(), "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let addr = v["self"]["listen_addresses"][0]
        .as_str()
        .unwrap()
        .to_string();
    let b = dir.path().join("b");
    fails(
        &[
            "--state-dir",
            b.to_str().unwrap(),
            "join",
            "--listen",
            &addr,
        ],
        1,
        &[
            "cannot listen on",
            &addr,
            "another program (another daemon of this machine?) listens there",
        ],
    );
    // A start that fails leaves no control socket that nothing answers.
    assert!(!b.join("control.sock").exists());
    // Nor does one whose database cannot be opened (it fails before it joins anything).
    let c = dir.path().join("c");
    std::fs::create_dir(&c).unwrap();
    std::fs::write(c.join("node.redb"), b"not a database").unwrap();
    fails(
        &[
            "--state-dir",
            c.to_str().unwrap(),
            "join",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
        1,
        &["node.redb"],
    );
    assert!(!c.join("control.sock").exists());
}

#[test]
fn status_shows_the_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("s");
    let _daemon = start_daemon_with(
        &sd,
        "127.0.0.1:0",
        &["--label", "role=web", "--label", "dc=a"],
    );
    let o = run(&["--state-dir", sd.to_str().unwrap(), "status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for col in [
        "NAME",
        "PEER ID",
        "ADDRESS",
        "VERSION",
        "HOST UPTIME",
        "AGENT UPTIME",
        "LAST SEEN",
        "STATE",
        "LABELS",
        "dc=a,role=web",
        "Total nodes: 1",
    ] {
        assert!(out.contains(col), "status lacks {col}:\n{out}");
    }
    let o = run(&[
        "--state-dir",
        sd.to_str().unwrap(),
        "manage",
        "--list-nodes",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let nodes = v.as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    for key in [
        "name",
        "peer_id",
        "state",
        "version",
        "addresses",
        "last_seen_secs",
    ] {
        assert!(nodes[0].get(key).is_some(), "missing {key}");
    }
    assert_eq!(nodes[0]["state"], "alive");
    // Read by a pipe that closes at once (`status | head -0`), or written to a full disk.
    let sd = sd.to_str().unwrap();
    for args in [&["status"][..], &["manage", "--list-nodes", "--json"]] {
        let args: Vec<&str> = ["--state-dir", sd].iter().chain(args).copied().collect();
        let (code, err) = closed_pipe(&args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let (code, err) = full_disk(&args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains("cannot write to standard output") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    // A reader gone early does not change what the exit code says of the jobs.
    let args = [
        "--state-dir",
        sd,
        "exec",
        "--verb",
        "RUN",
        "--skip-cache false",
        "--check",
    ];
    let (code, err) = closed_pipe(&args);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("1 failed"), "{err}");
}

/// An export never goes into the daemon's state directory (it could replace the database);
/// one that replaces a file says so, and the file is the owner's only.
#[test]
fn exports_keep_out_of_the_state_directory_and_say_what_they_replace() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("s");
    let _daemon = start_daemon(&sd, "127.0.0.1:0");
    let sd = sd.to_str().unwrap();
    for flag in ["--export-jobs", "--export-nodes"] {
        let inside = format!("{sd}/node.redb");
        fails(
            &["--state-dir", sd, "manage", flag, &inside],
            2,
            &[
                "node.redb: an export cannot go into the daemon's state directory",
                "choose another place",
            ],
        );
        // Nor through a link elsewhere to a file there.
        let link = dir.path().join(format!("link{flag}.json"));
        std::os::unix::fs::symlink(format!("{sd}/join-token"), &link).unwrap();
        let token = std::fs::read(format!("{sd}/join-token")).unwrap();
        fails(
            &["--state-dir", sd, "manage", flag, link.to_str().unwrap()],
            2,
            &["an export cannot go into the daemon's state directory"],
        );
        assert_eq!(
            std::fs::read(format!("{sd}/join-token")).unwrap(),
            token,
            "{flag}: the file the link leads to is as it was"
        );
        let file = dir.path().join(format!("out{flag}.json"));
        let file = file.to_str().unwrap();
        let o = run(&["--state-dir", sd, "manage", flag, file]);
        let said = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{flag}: {said}{}", stderr(&o));
        assert!(!said.contains("replaced"), "{flag}: {said}");
        let o = run(&["--state-dir", sd, "manage", flag, file]);
        let said = String::from_utf8_lossy(&o.stdout);
        assert!(
            said.contains("(the file that was there is replaced)"),
            "{flag}: {said}"
        );
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{flag}");
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(file).unwrap()).unwrap();
    }
    // The database is still the daemon's.
    let o = run(&["--state-dir", sd, "status"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Runs the command with its standard output on a pipe nobody reads: closed before the
/// command writes. Returns the exit code and standard error.
fn closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    (o.status.code(), stderr(&o))
}

/// Runs the command with its standard output on /dev/full (every write fails: no space).
fn full_disk(args: &[&str]) -> (Option<i32>, String) {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = bin().args(args).stdout(full).output().unwrap();
    (o.status.code(), stderr(&o))
}

#[test]
fn output_nobody_reads_ends_the_command_without_a_panic() {
    // --finger-print prints a table and needs no daemon.
    let args = ["exec", "--verb", "RUN", "--finger-print", "echo hi"];
    let (code, err) = closed_pipe(&args);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (code, err) = full_disk(&args);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot write to standard output"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Nobody reads standard error (`2>&1 | head -1` gone): the exit code is still the
    // command's own, not a panic's 101.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    for (args, expected) in [
        (&["exec", "--verb", "NOPE", "x"][..], 2),
        (&["--state-dir", missing.to_str().unwrap(), "status"], 1),
        (&["exec", "--no-such-flag"], 2),
    ] {
        let mut child = bin()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stderr.take());
        let code = child.wait().unwrap().code();
        assert_eq!(code, Some(expected), "{args:?}");
    }
}

#[test]
fn socket_group_owns_the_control_socket() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(Some(group)) = nix::unistd::Group::from_name("daemon") else {
        panic!("this test needs the standard 'daemon' group");
    };
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("g");
    let child = bin()
        .args([
            "--state-dir",
            sd.to_str().unwrap(),
            "join",
            "--listen",
            "127.0.0.1:0",
            "--socket-group",
            "daemon",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _running = Running(child);
    let socket = sd.join("control.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !run(&["--state-dir", sd.to_str().unwrap(), "status"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.gid(), group.gid.as_raw());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let dir_meta = std::fs::metadata(&sd).unwrap();
    assert_eq!(dir_meta.gid(), group.gid.as_raw());
    assert_eq!(dir_meta.permissions().mode() & 0o777, 0o750);
    // Keys stay private to the owner.
    let key = std::fs::metadata(sd.join("identity.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    // Another user: a member of the group is served; one outside it cannot look into the
    // state directory, and is told so (not told of a socket it cannot even see).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |uid: u32, gid: u32| {
        use std::os::unix::process::CommandExt;
        bin()
            .args(["--state-dir", sd.to_str().unwrap(), "status"])
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap()
    };
    let member = as_user(1, group.gid.as_raw());
    assert!(member.status.success(), "{}", stderr(&member));
    let outsider = as_user(65534, 65534);
    assert_eq!(outsider.status.code(), Some(1), "{}", stderr(&outsider));
    assert!(
        stderr(&outsider).contains(&format!(
            "permission denied on {} (or a directory above it): this user cannot reach the \
             control socket in it",
            sd.display()
        )),
        "{}",
        stderr(&outsider)
    );
    // The socket itself closed to the group: said of the socket.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    let member = as_user(1, group.gid.as_raw());
    assert!(
        stderr(&member).contains(&format!("permission denied on {}", socket.display())),
        "{}",
        stderr(&member)
    );
}
