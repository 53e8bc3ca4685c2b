//! `directord-mesh-sim` as an operator runs it: outputs on disk, clear errors, exit codes.

use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_directord-mesh-sim"))
        .args(args)
        .output()
        .expect("directord-mesh-sim runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_run_writes_table_csv_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = sim(&[
        "--nodes",
        "50,200",
        "--scenario",
        "fanout,partition",
        "--seed",
        "9",
        "--require-complete",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("fanout") && stdout.contains("partition"),
        "{stdout}"
    );

    let csv = std::fs::read_to_string(out_dir.join("results.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        simulations::metrics::CSV_HEADER
            .split(',')
            .collect::<Vec<_>>()
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 4, "{csv}");
    let delivery = header.iter().position(|h| *h == "delivery").unwrap();
    let nodes = header.iter().position(|h| *h == "nodes").unwrap();
    for row in &rows {
        // The network column is quoted and has no commas, so a plain split is enough.
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{row}");
        assert_eq!(cells[delivery], "1.0000", "{row}");
        assert!(["50", "200"].contains(&cells[nodes]), "{row}");
    }

    let png = std::fs::read(out_dir.join("results.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

/// A reader gone before the table (`| head -1`) is no panic: the CSV is written and the
/// exit code is the sweep's.
#[test]
fn a_closed_standard_output_still_writes_the_csv_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_directord-mesh-sim"))
        .args(["--nodes", "20", "--out"])
        .arg(&out_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("directord-mesh-sim runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out_dir.join("results.csv").exists(), "{stderr}");
}

#[test]
fn the_same_seed_writes_the_same_csv() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let out_dir = dir.path().join(name);
        let out = sim(&[
            "--nodes",
            "150",
            "--scenario",
            "churn",
            "--loss",
            "0.02",
            "--latency",
            "5ms..40ms",
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let csv = std::fs::read_to_string(out_dir.join("results.csv")).unwrap();
        // Everything but the wall time, which is this machine's.
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let wall = header.iter().position(|h| *h == "wall_s").unwrap();
        csv.lines()
            .map(|l| {
                let mut cells: Vec<&str> = l.split(',').collect();
                cells.remove(wall);
                cells.join(",")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run("a"), run("b"));
}

#[test]
fn bad_arguments_are_named_with_exit_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--nodes", "1"], "at least 2 nodes"),
        (&["--nodes", "99999999999"], "at most 100000"),
        (&["--loss", "1.5"], "--loss"),
        (&["--churn", "2"], "--churn"),
        (&["--latency", "fast"], "latency"),
        (&["--bandwidth", "lots"], "bandwidth"),
        (&["--scenario", "meltdown"], "meltdown"),
        (&["--tier", "2", "--bandwidth", "1gbit"], "--bandwidth"),
        (&["--tier", "2", "--loss-model", "drop"], "--loss-model"),
        (&["--tier", "2", "--nodes", "5000"], "tier 1"),
        (&["--tier", "4"], "tier"),
        (&["--netns"], "--tier 3"),
        (&["--tier", "3", "--latency", "20ms"], "--netns"),
        (&["--tier", "3", "--scenario", "all"], "--netns"),
        (&["--tier", "3", "--nodes", "500"], "at most 200"),
        (
            &["--tier", "3", "--netns", "--latency", "10ms..30ms"],
            "fixed --latency",
        ),
        (&["--tier", "3", "--bandwidth", "1gbit"], "--bandwidth"),
        (&["--jobs", "0"], "--jobs"),
        (
            &[
                "--nodes",
                "10",
                "--scenario",
                "orchestration",
                "--jobs",
                "1000000000",
            ],
            "at most 10000000 results",
        ),
        (
            &["--nodes", "1000,10", "--scenario", "all", "--jobs", "10001"],
            "--jobs 10001 on 1000 nodes",
        ),
        (&["--file-mib", "0"], "--file-mib"),
        (
            &["--nodes", "1000", "--value-bytes", "1000000"],
            "--value-bytes 1000000 on 1000 nodes",
        ),
        (&["--late", "1.5"], "--late"),
        (&["--loss-model", "lossy"], "lossy"),
        (&["--partition-for", "soon"], "soon"),
        (
            &[
                "--nodes",
                "2",
                "--scenario",
                "churn",
                "--jobs",
                "20000",
                "--job-time",
                "1000000000s",
            ],
            "--job-time",
        ),
        // The scenario's own number of jobs counts where --jobs is not given.
        (
            &[
                "--scenario",
                "churn",
                "--nodes",
                "10",
                "--job-time",
                "1000000000s",
            ],
            "with 10 jobs (churn on 10 nodes)",
        ),
        (&["--bandwidth", "0.0000001mbit"], "1kbit"),
        (
            &["--scenario", "late-join", "--late-within", "0s"],
            "--late-within",
        ),
        (
            &["--scenario", "partition", "--nodes", "2,10"],
            "at least 3 nodes",
        ),
        (&["--scenario", "all", "--nodes", "2"], "partition"),
        // Settings under which a scenario would disrupt nothing.
        (&["--scenario", "churn", "--churn", "0"], "--churn 0"),
        (&["--scenario", "late-join", "--late", "0"], "--late 0"),
        (
            &["--scenario", "partition", "--partition-for", "0s"],
            "--partition-for 0s",
        ),
        // Tier 1's only; and negative numbers are named with their option.
        (&["--tier", "2", "--seed", "7"], "--seed"),
        (&["--loss", "-0.1"], "--loss -0.1"),
        (&["--nodes", "-5"], "--nodes"),
        (&["--job-time", "-1s"], "cannot be negative"),
        (&["--latency", "-5ms"], "cannot be negative"),
        (&["--limit", "-1s"], "cannot be negative"),
        (&["--bandwidth", "0kbit"], "1kbit"),
        (&["--bandwidth", "-5mbit"], "1kbit"),
        (&["--limit", "0s"], "--limit 0s"),
        // An option where a value should be is not taken for one.
        (&["--limit", "--nodes", "20"], "--limit"),
        (&["--latency", "-.5ms"], "cannot be negative"),
    ];
    for (args, says) in cases {
        let out = sim(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let all = text(&out);
        assert!(
            all.contains(says),
            "{args:?} should mention {says:?}: {all}"
        );
        assert!(!all.contains("panicked"), "{all}");
    }
}

#[test]
fn help_explains_scenarios_and_knobs() {
    let out = sim(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "fanout",
        "orchestration",
        "files",
        "churn",
        "partition",
        "late-join",
        "--loss-model",
        "--latency",
        "--tier",
        "--netns",
        "--binary",
        "Tier 3",
        "results.csv",
        "--value-bytes",
    ] {
        assert!(help.contains(word), "--help should mention {word}");
    }
}

#[test]
fn unwritable_outputs_are_named_before_the_sweep() {
    for file in ["results.csv", "results.png"] {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should go: no one can write it, root included.
        std::fs::create_dir(dir.path().join(file)).unwrap();
        let out = sim(&["--nodes", "20", "--out", dir.path().to_str().unwrap()]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{all}");
        assert!(all.contains(file) && all.contains("cannot write"), "{all}");
        // Refused before any run.
        assert!(!all.contains("fanout on 20 nodes"), "{all}");
        assert!(!all.contains("wrote"), "{all}");
        // Nothing made for the check is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [file], "{all}");
    }
    // A file where the output directory should be.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, "").unwrap();
    let out = sim(&["--nodes", "20", "--out", file.to_str().unwrap()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("afile: not a directory"), "{all}");
}

#[test]
fn the_network_is_recorded_without_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let out = sim(&[
        "--nodes",
        "20",
        "--latency",
        "500us..1500us",
        "--bandwidth",
        "0.5mbit",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    assert!(
        csv.contains("latency 500us..1500us") && csv.contains("uplink 500kbit"),
        "{csv}"
    );
}

#[test]
fn a_disruption_that_did_not_happen_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let out = sim(&[
        "--nodes",
        "20",
        "--scenario",
        "partition",
        "--partition-at",
        "1000s",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("warning: tier 1 partition on 20 nodes: the partition never started"),
        "{all}"
    );
    // A split that outlasts the run.
    let out = sim(&[
        "--nodes",
        "20",
        "--scenario",
        "partition",
        "--partition-for",
        "1000s",
        "--limit",
        "20s",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("warning: tier 1 partition on 20 nodes: the halves were still apart"),
        "{all}"
    );
}

/// A size or scenario given twice runs once.
#[test]
fn a_size_given_twice_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = sim(&[
        "--nodes",
        "10,10,20",
        "--scenario",
        "fanout,fanout",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        3,
        "the header and a row per size: {csv}"
    );
}

/// Runs the simulator with `args`, its results into `out_dir` and its temporary files into
/// `tmp` (if given), and sends it SIGINT once stderr says a line starting with `when` (the
/// run it names has begun): its output and all it said on stderr.
fn interrupted_at(
    args: &[&str],
    out_dir: &std::path::Path,
    tmp: Option<&std::path::Path>,
    when: &str,
) -> (std::process::Output, String) {
    use std::io::{BufRead, BufReader};
    let mut command = Command::new(env!("CARGO_BIN_EXE_directord-mesh-sim"));
    command.args(args).arg("--out").arg(out_dir);
    if let Some(tmp) = tmp {
        command.env("TMPDIR", tmp);
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut said = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.starts_with(when) {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        }
    }
    (child.wait_with_output().unwrap(), said)
}

/// Ctrl-C during a sweep of real nodes (tier 2): the runs finished before are written, the
/// nodes' stores are removed, and the exit code says it was interrupted.
#[test]
fn an_interrupted_tier2_sweep_keeps_the_runs_finished_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (out_dir, tmp) = (dir.path().join("out"), dir.path().join("tmp"));
    std::fs::create_dir(&tmp).unwrap();
    // Interrupted once the second run has begun (the first is over then).
    let (out, said) = interrupted_at(
        &[
            "--tier",
            "2",
            "--nodes",
            "6",
            "--scenario",
            "fanout,partition",
        ],
        &out_dir,
        Some(&tmp),
        "tier 2 partition on 6 nodes",
    );
    assert_eq!(out.status.code(), Some(130), "{said}");
    assert!(said.contains("interrupted"), "{said}");
    let csv = std::fs::read_to_string(out_dir.join("results.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        2,
        "the header and the fanout run: {csv}"
    );
    assert!(csv.lines().nth(1).unwrap().contains("fanout"), "{csv}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Ctrl-C during a tier 1 sweep: the run under way stops, the runs finished before are
/// written, and the exit code says it was interrupted (the rows were lost, and empty output
/// files left, before).
#[test]
fn an_interrupted_tier1_sweep_keeps_the_runs_finished() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    // Interrupted once the large run has begun (the small one is over then).
    let (out, said) = interrupted_at(
        &["--nodes", "10,100000", "--scenario", "orchestration"],
        &out_dir,
        None,
        "tier 1 orchestration on 100000 nodes",
    );
    assert_eq!(out.status.code(), Some(130), "{said}");
    assert!(
        said.contains("interrupted (the run before it in the table and"),
        "{said}"
    );
    let csv = std::fs::read_to_string(out_dir.join("results.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        2,
        "the header and the 10-node run: {csv}"
    );
}

/// A tier 3 daemon that cannot start is said at once, with its exit status and what it
/// logged (its log goes with the run's temporary directory), not after the 30 s wait.
#[test]
fn a_tier3_daemon_that_cannot_start_says_why() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let daemon = dir.path().join("daemon.sh");
    std::fs::write(
        &daemon,
        "#!/bin/sh\necho 'error: cannot listen: address in use' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&daemon, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = sim(&[
        "--tier",
        "3",
        "--nodes",
        "3",
        "--binary",
        daemon.to_str().unwrap(),
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(
            "exited (exit status: 3) while starting:\n  error: cannot listen: address in use"
        ),
        "{all}"
    );
    // Said as it happened, not as the 30 s wait for the daemon running out.
    assert!(!all.contains("timed out"), "{all}");
}

/// A simulator killed outright (no cleanup of its own) leaves no tier 3 daemon running: each
/// gets SIGTERM as the simulator ends.
#[test]
fn a_killed_simulator_leaves_no_tier3_daemon_behind() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // A daemon that never answers (as the CLI, which the simulator asks for its status, it
    // fails): the simulator waits for it while it is killed.
    let daemon = dir.path().join("daemon.sh");
    std::fs::write(
        &daemon,
        format!(
            "#!/bin/sh\ncase \"$3\" in join) echo $$ >> {}; exec sleep 600;; esac\nexit 1\n",
            pids.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&daemon, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut simulator = Command::new(env!("CARGO_BIN_EXE_directord-mesh-sim"))
        .args(["--tier", "3", "--nodes", "3", "--binary"])
        .arg(&daemon)
        .arg("--out")
        .arg(dir.path().join("out"))
        // Its run directory goes with the test's.
        .env("TMPDIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = |path: &std::path::Path| -> Vec<i32> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while started(&pids).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no daemon started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    simulator.kill().unwrap();
    simulator.wait().unwrap();
    // Running: neither gone nor a zombie waiting to be collected.
    let running = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut left: Vec<i32> = started(&pids);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        left = started(&pids).into_iter().filter(|p| running(*p)).collect();
    }
    for pid in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(left.is_empty(), "daemons {left:?} outlived the simulator");
}

/// Tier 2 runs a sweep in one process: the memory per node of every run after the first is
/// said to count what the process kept from those before it.
#[test]
fn tier2_memory_of_later_runs_is_marked() {
    let dir = tempfile::tempdir().unwrap();
    let out = sim(&[
        "--tier",
        "2",
        "--nodes",
        "3,4",
        "--scenario",
        "fanout",
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let marked: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("RSS/node counts memory"))
        .collect();
    assert_eq!(marked.len(), 1, "{all}");
    assert!(
        marked[0].starts_with("warning: tier 2 fanout on 4 nodes:")
            && marked[0].contains("from the 1 run before it"),
        "{all}"
    );
}
