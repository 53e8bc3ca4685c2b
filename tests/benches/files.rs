//! Bench: ADD of one file to every node of a mesh of real daemons on this machine.
//!
//! ```sh
//! cargo build --release -p directord-mesh
//! sudo cargo bench -p e2e-tests --bench files          # 10 and 100 MiB to 5, 20 and 50 nodes
//! cargo bench -p e2e-tests --bench files -- 20 100     # one size (MiB) on one mesh size
//! ```
//!
//! Each daemon has its own `/tmp` (a mount namespace, so root is needed), as if on its own
//! machine. The clock runs from the CLI's start to its exit with `--poll`: every node has the
//! verified file at its destination **and** the submitter has every result. The submitter's
//! upload is the bytes it served over `/directord/blob/1` (from `status --json`). Hashing
//! throughput is blake3 over the source file as the CLI reads it.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use e2e_tests::{Daemon, binary};
use jobs::spec::FileRef;

/// Daemons as an operator runs them: the default presence heartbeat (5 s), not the tests' 1 s
/// (every node checks the signature of each copy of every heartbeat it receives; at 1 s, 50
/// co-located daemons spend a third of this machine on that alone).
fn mesh(root: &Path, n: usize) -> Vec<Daemon> {
    e2e_tests::isolated_mesh_with(
        root,
        n,
        Duration::from_secs(60),
        &["--heartbeat-interval", "5s"],
    )
}

fn served(d: &Daemon) -> u64 {
    d.status().unwrap()["self"]["blob_bytes_served"]
        .as_u64()
        .unwrap_or(0)
}

fn main() {
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let sizes_nodes: Vec<usize> = match argv.first() {
        Some(n) => vec![n.parse().expect("nodes")],
        None => vec![5, 20, 50],
    };
    let sizes_mib: Vec<usize> = match argv.get(1) {
        Some(s) => vec![s.parse().expect("MiB")],
        None => vec![10, 100],
    };
    println!("binary: {}", binary().display());
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let sources = e2e_tests::isolated_root(base);
    for &mib in &sizes_mib {
        let path = sources.path().join(format!("file-{mib}MiB.bin"));
        let data: Vec<u8> = (0..mib * 1024 * 1024)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let t = Instant::now();
        FileRef::read(&path).unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "hashing {mib} MiB (whole + per chunk): {:.0} ms, {:.0} MiB/s",
            secs * 1000.0,
            mib as f64 / secs
        );
    }
    for &n in &sizes_nodes {
        let root = e2e_tests::isolated_root(base);
        let nodes = mesh(root.path(), n);
        for &mib in &sizes_mib {
            let src = sources.path().join(format!("file-{mib}MiB.bin"));
            let before = served(&nodes[0]);
            let before_all: u64 = nodes.iter().map(served).sum();
            let t = Instant::now();
            let o = nodes[0].cli(&[
                "exec",
                "--verb",
                "ADD",
                &format!("{} /tmp/", src.display()),
                "--poll",
            ]);
            let secs = t.elapsed().as_secs_f64();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let uploaded = served(&nodes[0]) - before;
            let all = nodes.iter().map(served).sum::<u64>() - before_all;
            let copies = |bytes: u64| bytes as f64 / (mib as f64 * 1048576.0);
            println!(
                "ADD {mib:>3} MiB to {n:>2} nodes: {secs:.2} s until every node has it and every result is in; \
                 submitter uploaded {:.1} MiB ({:.2} copies); all nodes served {:.2} copies for {} targets",
                uploaded as f64 / 1048576.0,
                copies(uploaded),
                copies(all),
                n - 1,
            );
        }
    }
}
