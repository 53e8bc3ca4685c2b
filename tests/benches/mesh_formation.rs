//! Bench: how fast real daemons form a mesh, and what an idle daemon costs.
//!
//! ```sh
//! cargo build --release -p directord-mesh
//! cargo bench -p e2e-tests --bench mesh_formation            # N = 5 and 20, 5 runs each
//! cargo bench -p e2e-tests --bench mesh_formation -- 20 3    # N = 20, 3 runs
//! ```
//!
//! Formation: N `directord-mesh join` processes on 127.0.0.1 with default settings; the first
//! creates the mesh, the others are spawned at once with its token. The clock starts when the
//! first process is spawned and stops when every daemon's table lists N alive members (each
//! daemon asked over its control socket every 10 ms).
//!
//! Idle cost: a 20-node mesh with the default 5 s heartbeat is left alone for 10 s, then the
//! RSS and the CPU time (utime + stime from /proc) of the bootstrap daemon and of a joining
//! daemon are sampled over 30 s.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use e2e_tests::Daemon;
use node::control::{ControlClient, ControlRequest, ControlResponse};

fn alive_seen(state_dir: &Path, rt: &tokio::runtime::Runtime) -> usize {
    rt.block_on(async {
        let Ok(mut c) = ControlClient::connect(state_dir).await else {
            return 0;
        };
        match c.request(&ControlRequest::Status).await {
            Ok(ControlResponse::Status(r)) => r.nodes.iter().filter(|n| n.state == "alive").count(),
            _ => 0,
        }
    })
}

fn args(name: &str, token: Option<&str>) -> Vec<String> {
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
}

/// Starts an N-node mesh; returns the daemons, the time until all tables were full, and the
/// time from the last spawn until then.
fn form(root: &Path, n: usize, rt: &tokio::runtime::Runtime) -> (Vec<Daemon>, Duration, Duration) {
    let start = Instant::now();
    let mut daemons = vec![Daemon::spawn(root, "b1", args("b1", None))];
    let token_path = root.join("b1").join("join-token");
    while !token_path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "first daemon wrote no token"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_string();
    for i in 2..=n {
        let name = format!("b{i}");
        daemons.push(Daemon::spawn(root, &name, args(&name, Some(&token))));
    }
    let last_spawn = Instant::now();
    let mut pending: Vec<PathBuf> = daemons.iter().map(|d| d.state_dir.clone()).collect();
    while !pending.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "mesh of {n} did not form in 60 s"
        );
        pending.retain(|dir| alive_seen(dir, rt) != n);
        std::thread::sleep(Duration::from_millis(10));
    }
    (daemons, start.elapsed(), last_spawn.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn proc_cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn proc_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn main() {
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let sizes: Vec<usize> = match argv.first() {
        Some(n) => vec![n.parse().expect("N")],
        None => vec![5, 20],
    };
    let runs: usize = argv.get(1).map(|r| r.parse().expect("runs")).unwrap_or(5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("binary: {}", e2e_tests::binary().display());

    for &n in &sizes {
        let mut totals = Vec::new();
        let mut from_last = Vec::new();
        for _ in 0..runs {
            let root = tempfile::tempdir().unwrap();
            let (daemons, total, last) = form(root.path(), n, &rt);
            totals.push(total.as_secs_f64() * 1000.0);
            from_last.push(last.as_secs_f64() * 1000.0);
            drop(daemons);
        }
        println!(
            "formation N={n:>3}: first spawn -> all {n} alive in every table: median {:.0} ms (min {:.0}, max {:.0}); \
             last spawn -> done: median {:.0} ms  [{runs} runs]",
            median(totals.clone()),
            totals.iter().cloned().fold(f64::MAX, f64::min),
            totals.iter().cloned().fold(0.0, f64::max),
            median(from_last),
        );
    }

    // Idle cost in a 20-node mesh.
    let root = tempfile::tempdir().unwrap();
    let (daemons, _, _) = form(root.path(), 20, &rt);
    std::thread::sleep(Duration::from_secs(10));
    let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    let watched = [&daemons[0], &daemons[9]];
    let before: Vec<u64> = watched.iter().map(|d| proc_cpu_ticks(d.pid())).collect();
    let window = Duration::from_secs(30);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    for (d, b) in watched.iter().zip(before) {
        let cpu = (proc_cpu_ticks(d.pid()) - b) as f64 / ticks_per_sec;
        println!(
            "idle in a 20-node mesh, {} ({}): RSS {:.1} MiB, CPU {:.2} % of one core over {:.0} s",
            d.name,
            if d.name == "b1" {
                "bootstrap, connected to all"
            } else {
                "joined node"
            },
            proc_rss_kib(d.pid()) as f64 / 1024.0,
            cpu / secs * 100.0,
            secs
        );
    }
}
