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
//!
//! Beside each figure the bench measures a floor: the work no node of this design can skip for
//! the same copies, done at once on the same machine. Each copy is read from a holder's file,
//! goes through the private-network layer (`mesh::private`) and Noise (libp2p's) over loopback
//! TCP, is checked chunk by chunk (blake3) and written to a blob file, then copied to its
//! destination with the whole-file check and an fsync. No yamux, no request-response, no swarm,
//! no choosing whom to fetch from: what remains of the mesh's figure above the floor is its own.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use e2e_tests::{Daemon, binary};
use futures::{AsyncReadExt, AsyncWriteExt, executor::block_on, io::AllowStdIo};
use jobs::spec::{CHUNK_SIZE, FileRef};
use libp2p::{
    core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
    identity::Keypair,
    noise,
};
use mesh::private::PrivateStream;

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

/// The layers a mesh connection puts over TCP: the private network, then Noise.
async fn secure(
    tcp: TcpStream,
    dialer: bool,
) -> noise::Output<PrivateStream<AllowStdIo<TcpStream>>> {
    let private = mesh::private::handshake([7; 32], AllowStdIo::new(tcp))
        .await
        .expect("private handshake");
    let config = noise::Config::new(&Keypair::generate_ed25519()).expect("noise");
    let upgraded = if dialer {
        config.upgrade_outbound(private, "/noise").await
    } else {
        config.upgrade_inbound(private, "/noise").await
    };
    upgraded.expect("noise handshake").1
}

/// One copy of the floor, sending side: the holder reads each chunk from its file and writes it
/// through the private-network layer and Noise.
fn send_copy(source: &Path, file: &FileRef, listener: &TcpListener) {
    let (tcp, _) = listener.accept().expect("accept");
    block_on(async {
        let mut noise = secure(tcp, false).await;
        let blob = std::fs::File::open(source).expect("source");
        for index in 0..file.chunks.len() as u64 {
            let start = index * CHUNK_SIZE;
            let len = (file.size - start).min(CHUNK_SIZE) as usize;
            let mut chunk = vec![0u8; len];
            blob.read_exact_at(&mut chunk, start).expect("read chunk");
            noise.write_all(&chunk).await.expect("send");
        }
        noise.flush().await.expect("flush");
    });
}

/// One copy of the floor, fetching side: checks each chunk, writes it to its blob file, then
/// lands the file at `dest` as ADD does (whole-file check, fsync).
fn fetch_copy(file: &FileRef, to: std::net::SocketAddr, blob: &Path, dest: &Path) {
    let tcp = TcpStream::connect(to).expect("connect");
    block_on(async {
        let mut noise = secure(tcp, true).await;
        let out = std::fs::File::create(blob).expect("blob file");
        for (index, expected) in file.chunks.iter().enumerate() {
            let start = index as u64 * CHUNK_SIZE;
            let mut chunk = vec![0u8; (file.size - start).min(CHUNK_SIZE) as usize];
            noise.read_exact(&mut chunk).await.expect("receive");
            assert_eq!(
                FileRef::digest_of_chunk(index, file.chunks.len(), &chunk),
                *expected,
                "chunk {index}"
            );
            out.write_all_at(&chunk, start).expect("write chunk");
        }
    });
    let mut from = std::fs::File::open(blob).expect("blob file");
    let mut to = std::fs::File::create(dest).expect("destination");
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = from.read(&mut buf).expect("read blob");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n]).expect("write destination");
    }
    to.sync_all().expect("fsync");
    assert_eq!(hasher.finalize().as_bytes(), &file.hash.0, "whole file");
}

/// Seconds for `copies` copies of `source` through the floor's work, all at once. Blob files go
/// to `blobs` (beside the daemons' state); destinations to a tmpfs, as the daemons' `/tmp` is.
fn floor(source: &Path, file: &FileRef, blobs: &Path, copies: usize) -> f64 {
    let dests = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let listeners: Vec<(TcpListener, PathBuf, PathBuf)> = (0..copies)
        .map(|i| {
            (
                TcpListener::bind("127.0.0.1:0").expect("bind"),
                blobs.join(format!("floor-blob-{i}")),
                dests.path().join(format!("floor-dest-{i}")),
            )
        })
        .collect();
    let t = Instant::now();
    std::thread::scope(|scope| {
        for (listener, blob, dest) in &listeners {
            let to = listener.local_addr().expect("address");
            scope.spawn(move || send_copy(source, file, listener));
            scope.spawn(move || fetch_copy(file, to, blob, dest));
        }
    });
    let secs = t.elapsed().as_secs_f64();
    for (_, blob, dest) in &listeners {
        let _ = std::fs::remove_file(blob);
        let _ = std::fs::remove_file(dest);
    }
    secs
}

/// Hashes the file at `path` whole and each piece on its own, as file descriptions were made
/// before wire version 8 (for comparison only).
fn hash_twice(path: &Path) -> blake3::Hash {
    let mut file = std::fs::File::open(path).expect("source");
    let mut whole = blake3::Hasher::new();
    let mut pieces = Vec::new();
    loop {
        let mut piece = Vec::with_capacity(CHUNK_SIZE as usize);
        let n =
            std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, CHUNK_SIZE), &mut piece)
                .expect("read source");
        if n == 0 {
            break;
        }
        whole.update(&piece);
        pieces.push(blake3::hash(&piece));
    }
    std::hint::black_box(pieces);
    whole.finalize()
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
        // Alternated seven times, medians: the CLI's hashing, and beside it what it cost before
        // wire version 8 (the whole file and each piece hashed separately).
        let (mut once, mut twice) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            let t = Instant::now();
            FileRef::read(&path).unwrap();
            once.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            hash_twice(&path);
            twice.push(t.elapsed().as_secs_f64());
        }
        once.sort_by(f64::total_cmp);
        twice.sort_by(f64::total_cmp);
        println!(
            "hashing {mib} MiB (each byte once; the chunk digests merge into the whole hash): {:.1} ms, {:.0} MiB/s; \
             whole and per piece separately (before wire version 8): {:.1} ms",
            once[3] * 1000.0,
            mib as f64 / once[3],
            twice[3] * 1000.0
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
            let file = FileRef::read(&src).unwrap();
            let floor_secs = floor(&src, &file, root.path(), n - 1);
            let all = nodes.iter().map(served).sum::<u64>() - before_all;
            let copies = |bytes: u64| bytes as f64 / (mib as f64 * 1048576.0);
            println!(
                "ADD {mib:>3} MiB to {n:>2} nodes: {secs:.2} s until every node has it and every result is in; \
                 submitter uploaded {:.1} MiB ({:.2} copies); all nodes served {:.2} copies for {} targets; \
                 floor {floor_secs:.2} s",
                uploaded as f64 / 1048576.0,
                copies(uploaded),
                copies(all),
                n - 1,
            );
        }
    }
}
