//! Bench: jobs through a mesh of real daemons on this machine.
//!
//! ```sh
//! cargo build --release -p directord-mesh
//! cargo bench -p e2e-tests --bench jobs                 # every figure below (takes a few minutes)
//! cargo bench -p e2e-tests --bench jobs -- latency      # only exec latency
//! cargo bench -p e2e-tests --bench jobs -- orchestrate  # only the 1000-job orchestrations
//! cargo bench -p e2e-tests --bench jobs -- large-args   # work beside megabytes of args
//! ```
//!
//! - **latency**: `directord-mesh exec --verb RUN --skip-cache true --poll`, timed from the CLI
//!   process start to its exit (every node's result in), on meshes of 1, 5, 20 and 50 daemons;
//!   3 warm-up runs, then the median of 10.
//! - **orchestrate**: Directord's comparison orchestrations (1 sync parent × 1000
//!   `RUN --skip-cache echo hello world`; 10 async parents × 100) with `--poll`, on 5 and 20
//!   daemons; median of 3, and the CPU time the daemons themselves spent per job and node
//!   (the shells they start are not counted). Beside them, the floor: the same number of bare
//!   `sh -c 'echo hello world'` spawns, one after another, on this machine.
//! - **memory**: RSS of the submitting daemon and of one other daemon, idle before the sync
//!   orchestration and at peak (VmHWM) after it.
//! - **large-args**: on 3 daemons, 100 entries of an ARG, a RUN rendering it and every tenth a
//!   QUERY of it (`--poll`, median of 3), before and after each node gathered 8 MB of args (a
//!   QUERY of every node's 2 MB output): what unrelated large values cost later work.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e_tests::{Daemon, alive_names, binary, wait_for};

fn mesh(root: &Path, n: usize) -> Vec<Daemon> {
    let args = |name: &str, token: Option<&str>| {
        let mut a: Vec<String> = vec![
            "--name".into(),
            name.into(),
            "--listen".into(),
            "/ip4/127.0.0.1/tcp/0".into(),
        ];
        if let Some(t) = token {
            a.extend(["--token".into(), t.into()]);
        }
        a
    };
    let mut first = Daemon::spawn(root, "b1", args("b1", None));
    first.wait_serving();
    let token = first.join_token();
    let mut nodes = vec![first];
    for i in 2..=n {
        let name = format!("b{i}");
        nodes.push(Daemon::spawn(root, &name, args(&name, Some(&token))));
    }
    for d in nodes.iter_mut() {
        d.wait_serving();
    }
    for d in &nodes {
        wait_for(Duration::from_secs(60), "the mesh to form", || {
            (alive_names(&d.status()?).len() == n).then_some(())
        });
    }
    nodes
}

/// Runs the CLI against `d`; returns the wall time; panics if it fails.
fn timed(d: &Daemon, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new(binary())
        .arg("--state-dir")
        .arg(&d.state_dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn latency(sizes: &[usize]) {
    for &n in sizes {
        let root = tempfile::tempdir().unwrap();
        let nodes = mesh(root.path(), n);
        let args = ["exec", "--verb", "RUN", "--skip-cache", "true", "--poll"];
        for _ in 0..3 {
            timed(&nodes[0], &args);
        }
        let runs: Vec<Duration> = (0..10).map(|_| timed(&nodes[0], &args)).collect();
        println!(
            "latency  N={n:>2}: exec RUN true --poll, CLI start to all {n} results: median {:.1} ms (min {:.1}, max {:.1})",
            median(runs.clone()).as_secs_f64() * 1000.0,
            runs.iter().min().unwrap().as_secs_f64() * 1000.0,
            runs.iter().max().unwrap().as_secs_f64() * 1000.0,
        );
    }
}

/// utime + stime of a process, in seconds (its children are not counted).
fn cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64
        / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as f64
}

fn spawn_floor(count: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..count {
        // The same environment as the daemons' jobs (see `Daemon`).
        let s = Command::new("sh")
            .args(["-c", "echo hello world"])
            .env_remove("LD_LIBRARY_PATH")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(s.success());
    }
    start.elapsed()
}

fn orchestrate(sizes: &[usize]) {
    let dir = tempfile::tempdir().unwrap();
    let sync = dir.path().join("comparison-sync.yaml");
    let mut text = String::from("- jobs:\n");
    for _ in 0..1000 {
        text.push_str("  - RUN: --skip-cache echo hello world\n");
    }
    std::fs::write(&sync, text).unwrap();
    let asynchronous = dir.path().join("comparison-async.yaml");
    let mut text = String::new();
    for p in 0..10 {
        text.push_str("- async: true\n  jobs:\n");
        for _ in 0..100 {
            text.push_str(&format!("  - RUN: --skip-cache echo hello world{p}\n"));
        }
    }
    std::fs::write(&asynchronous, text).unwrap();

    for &n in sizes {
        let root = tempfile::tempdir().unwrap();
        let nodes = mesh(root.path(), n);
        // Warm-up.
        timed(
            &nodes[0],
            &["exec", "--verb", "RUN", "--skip-cache", "true", "--poll"],
        );
        let (submitter, other) = (nodes[0].pid(), nodes[n - 1].pid());
        let idle = (rss_kib(submitter, "VmRSS:"), rss_kib(other, "VmRSS:"));
        for (label, file) in [
            ("1000-job sync   ", &sync),
            ("10x100-job async", &asynchronous),
        ] {
            let pids: Vec<i32> = nodes.iter().map(|d| d.pid()).collect();
            let cpu_before: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
            let runs: Vec<Duration> = (0..3)
                .map(|_| {
                    timed(
                        &nodes[0],
                        &["orchestrate", file.to_str().unwrap(), "--poll"],
                    )
                })
                .collect();
            let daemon_cpu = pids.iter().map(|p| cpu_secs(*p)).sum::<f64>() - cpu_before;
            let job_nodes = (3 * 1000 * n) as f64;
            let m = median(runs);
            println!(
                "orchestrate N={n:>2} {label}: median {:.2} s for {} results; daemons' own CPU {:.3} ms per job-node \
                 (the shells they start not counted)",
                m.as_secs_f64(),
                1000 * n,
                daemon_cpu * 1000.0 / job_nodes,
            );
            println!(
                "memory   N={n:>2} after {label}: submitting daemon RSS idle {:.1} MiB, peak so far {:.1} MiB; \
                 another daemon idle {:.1} MiB, peak so far {:.1} MiB",
                idle.0 as f64 / 1024.0,
                rss_kib(submitter, "VmHWM:") as f64 / 1024.0,
                idle.1 as f64 / 1024.0,
                rss_kib(other, "VmHWM:") as f64 / 1024.0,
            );
        }
        let floor = spawn_floor(1000 * n);
        println!(
            "floor    N={n:>2}: {} bare `sh -c 'echo hello world'` spawns one after another: {:.2} s \
             ({:.2} s if spread over this machine's 2 cores)",
            1000 * n,
            floor.as_secs_f64(),
            floor.as_secs_f64() / 2.0,
        );
    }
}

fn large_args() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work.yaml");
    let mut text = String::new();
    for i in 0..100 {
        text.push_str(&format!(
            "- jobs:\n  - ARG: --skip-cache w{i} v{i}\n  - RUN: --skip-cache echo {{{{ w{i} }}}}\n"
        ));
        if i % 10 == 0 {
            text.push_str(&format!("  - QUERY: --skip-cache w{i}\n"));
        }
    }
    std::fs::write(&work, text).unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(
        &big,
        "- jobs:\n  - RUN: --skip-cache --stdout-arg big head -c 2000000 /dev/zero | tr '\\0' x\n  \
         - QUERY: --skip-cache big\n",
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let nodes = mesh(root.path(), 3);
    let work_args = ["orchestrate", work.to_str().unwrap(), "--poll"];
    timed(&nodes[0], &work_args);
    let before = median((0..3).map(|_| timed(&nodes[0], &work_args)).collect());
    timed(&nodes[0], &["orchestrate", big.to_str().unwrap(), "--poll"]);
    let after = median((0..3).map(|_| timed(&nodes[0], &work_args)).collect());
    println!(
        "large-args N= 3: 100 ARG+RUN entries and 10 QUERYs: median {:.2} s with small args, \
         {:.2} s once each node holds 8 MB of args",
        before.as_secs_f64(),
        after.as_secs_f64(),
    );
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = which.is_empty();
    println!("binary: {}", binary().display());
    if all || which.iter().any(|w| w == "latency") {
        latency(&[1, 5, 20, 50]);
    }
    if all || which.iter().any(|w| w == "orchestrate") {
        orchestrate(&[5, 20]);
    }
    if all || which.iter().any(|w| w == "large-args") {
        large_args();
    }
}
