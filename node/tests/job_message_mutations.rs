//! The job messages a node decodes from the network, fed mutated bytes: runs and QUERY sets
//! gossiped on the jobs topic ([`Gossip`]), the messages members send each other directly
//! inside `CtlRequest::Job` ([`JobMessage`]) and their answers ([`JobReply`]). Valid messages
//! of each kind are encoded as a node encodes them, then bit flips, boundary bytes, CBOR heads
//! that claim huge lengths, truncations, duplicated, spliced and deleted ranges and appended
//! garbage; each result goes through the decoder the node runs on it (`mesh::wire::decode`
//! with the node's limit) and then through the checks a target applies to what it decoded
//! (ids, a run's work for the node, its files' descriptions, where it fetches them from).
//!
//! What must hold for every input: no panic, decoding gives an error or a value that encodes
//! again (and reads back as itself), and the memory decoding takes is bounded by the input's
//! size, never by a length the input claims.
//!
//! The mutations come from a small xorshift generator seeded per message: a failure names the
//! seed, the case and the input in hex, and running the test again gives the same inputs.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    collections::BTreeMap,
    fmt::Debug,
    time::{Duration, Instant},
};

use coordination::{
    Gossip, InlineBlob, JobEntry, JobMessage, JobReply, JobResult, NodeId, OutputBatch, Parent,
    Run, TargetKey, TargetKeys,
    message::is_valid_id,
    transfer::{Download, distribution_sources, run_file_sources},
};
use jobs::{
    Component, Fingerprint, JobSpec,
    components::{OutputLine, OutputStream},
    executor::{Outcome, QueueKind, ResultState},
    spec::{
        CHUNK_SIZE, CacheTag, FileRef, Owner, Transfer, WaitFor, bounded_secs, bounded_secs_f64,
    },
};
use mesh::{
    Keypair,
    wire::{self, MAX_CHUNK_BYTES, MAX_CTL_BYTES, MAX_GOSSIP_BYTES},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

/// The most a job message may take, as the node reads them (`runs.rs`: `MAX_JOB_MESSAGE`).
const MAX_JOB_MESSAGE: usize = MAX_CTL_BYTES;

// ---------------------------------------------------------------------------------------------
// Memory: what decoding one input takes at most, counted per thread (tests run side by side).

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(size: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + size;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size)));
}

// SAFETY: every call is passed on to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        shrank(layout.size());
        grew(new_size);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and says how many bytes more than before it this thread held at most meanwhile.
fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, peak.saturating_sub(base))
}

/// The most one decode of `len` input bytes may take: serde's decoders reserve up to 1 MiB for
/// a sequence from the length it claims (`size_hint::cautious`), and a message nests a few of
/// them; beyond that, memory follows the bytes actually there. A claimed length of gigabytes
/// taken at its word is far over this.
fn memory_bound(len: usize) -> usize {
    4 * 1024 * 1024 + 64 * len
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// xorshift64: small, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: nearby seeds give unrelated streams, never the zero state.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// Bytes that sit on the edges of CBOR's heads: smallest and largest immediates, the one-,
/// two-, four- and eight-byte length markers of each major type, indefinite lengths, break,
/// simple values and floats.
const BOUNDARY: &[u8] = &[
    0x00, 0x01, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1f, 0x20, 0x38, 0x3b, 0x40, 0x58, 0x5a, 0x5b, 0x5f,
    0x60, 0x78, 0x7a, 0x7b, 0x7f, 0x80, 0x98, 0x9a, 0x9b, 0x9f, 0xa0, 0xb8, 0xba, 0xbb, 0xbf, 0xc0,
    0xd8, 0xdb, 0xe0, 0xf4, 0xf5, 0xf6, 0xf7, 0xf9, 0xfa, 0xfb, 0xff,
];

/// The boundary values every byte of a sample is set to in turn.
const SWEEP: &[u8] = &[
    0x00, 0x01, 0x17, 0x18, 0x1b, 0x5b, 0x7b, 0x7f, 0x80, 0x9b, 0xbb, 0xf7, 0xff,
];

/// Heads with an eight-byte argument: an unsigned and a negative integer, byte and text
/// strings, an array, a map and a tag.
const HUGE_HEADS: &[u8] = &[0x1b, 0x3b, 0x5b, 0x7b, 0x9b, 0xbb, 0xdb];
/// The same with a four-byte argument.
const LONG_HEADS: &[u8] = &[0x1a, 0x3a, 0x5a, 0x7a, 0x9a, 0xba, 0xda];

/// Lengths a head may claim: past every limit, just past the limits, the edges of the integer
/// types.
const CLAIMS: &[u64] = &[
    u64::MAX,
    u64::MAX - 1,
    1 << 63,
    (1 << 63) - 1,
    1 << 32,
    (1 << 32) - 1,
    1 << 31,
    (MAX_CTL_BYTES + 1) as u64,
    MAX_CTL_BYTES as u64,
    (MAX_GOSSIP_BYTES + 1) as u64,
    (MAX_CHUNK_BYTES + 1) as u64,
    1 << 24,
    65_536,
    1025,
    64,
    0,
];

/// One mutation of `input`, with `donor` (another valid message) to splice from.
fn mutate_once(rng: &mut Rng, out: &mut Vec<u8>, donor: &[u8]) {
    let len = out.len();
    let at = |rng: &mut Rng| if len == 0 { 0 } else { rng.below(len) };
    match rng.below(12) {
        // A bit flipped.
        0 if len > 0 => {
            let i = at(rng);
            out[i] ^= 1 << rng.below(8);
        }
        // A byte set to a boundary value.
        1 if len > 0 => {
            let i = at(rng);
            out[i] = rng.pick(BOUNDARY);
        }
        // A head that claims a huge length, written over the bytes there or put in.
        2 | 3 => {
            let i = at(rng);
            let mut head = vec![rng.pick(HUGE_HEADS)];
            head.extend(rng.pick(CLAIMS).to_be_bytes());
            if rng.below(2) == 0 {
                let end = (i + head.len()).min(len);
                out.splice(i..end, head);
            } else {
                out.splice(i..i, head);
            }
        }
        4 => {
            let i = at(rng);
            let mut head = vec![rng.pick(LONG_HEADS)];
            head.extend((rng.pick(CLAIMS) as u32).to_be_bytes());
            let end = (i + head.len()).min(len);
            out.splice(i..end, head);
        }
        // Cut short.
        5 if len > 0 => out.truncate(at(rng)),
        // A range repeated.
        6 if len > 0 => {
            let from = at(rng);
            let to = (from + 1 + rng.below(64)).min(len);
            let piece = out[from..to].to_vec();
            let times = 1 + rng.below(4);
            let i = at(rng);
            for _ in 0..times {
                out.splice(i..i, piece.iter().copied());
            }
        }
        // A range of another message put in place of one of this.
        7 if len > 0 && !donor.is_empty() => {
            let from = rng.below(donor.len());
            let to = (from + 1 + rng.below(128)).min(donor.len());
            let i = at(rng);
            let end = (i + rng.below(128)).min(len);
            out.splice(i..end, donor[from..to].iter().copied());
        }
        // A range taken out.
        8 if len > 0 => {
            let i = at(rng);
            let end = (i + 1 + rng.below(32)).min(len);
            out.drain(i..end);
        }
        // Garbage after the end.
        9 => {
            let n = 1 + rng.below(64);
            for _ in 0..n {
                out.push(rng.next() as u8);
            }
        }
        // Indefinite lengths and breaks where definite ones were.
        10 if len > 0 => {
            let i = at(rng);
            out[i] = rng.pick(&[0x5f, 0x7f, 0x9f, 0xbf, 0xff]);
        }
        // A random byte anywhere.
        _ if len > 0 => {
            let i = at(rng);
            out[i] = rng.next() as u8;
        }
        _ => out.push(rng.pick(BOUNDARY)),
    }
}

/// `input` with one to four mutations.
fn mutate(rng: &mut Rng, input: &[u8], donor: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, &mut out, donor);
    }
    out
}

/// How many times the default number of random mutations each test makes:
/// `MUTATION_SCALE=50 cargo test ...` searches longer from the same seeds (its first cases are
/// those of the default run).
fn scale() -> usize {
    std::env::var("MUTATION_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Names the case being run if it panics: the test's output then says which input did it.
struct Case<'a> {
    what: &'a str,
    seed: u64,
    index: usize,
    input: &'a [u8],
}

impl Drop for Case<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{}: seed {:#x}, case {}: input ({} bytes) {}",
                self.what,
                self.seed,
                self.index,
                self.input.len(),
                hex(self.input)
            );
        }
    }
}

/// Runs `check` on every case made from `samples`: each sample as it is, cut at every length
/// (for samples up to 4 KiB), each of its bytes set to each value of [`SWEEP`] (up to 1 KiB),
/// then `per_sample` random mutations (times [`scale`]). Each case runs as it is: a panic
/// fails the test, after the case is named. `check` returns whether the input decoded; the
/// totals are returned.
fn run_cases(
    what: &str,
    seed: u64,
    samples: &[Vec<u8>],
    per_sample: usize,
    mut check: impl FnMut(&[u8]) -> bool,
) -> (usize, usize) {
    let started = Instant::now();
    let (mut cases, mut decoded, mut most) = (0, 0, 0);
    let mut one = |seed: u64, index: usize, input: &[u8]| {
        let _case = Case {
            what,
            seed,
            index,
            input,
        };
        let (ok, peak) = peak_during(|| check(input));
        assert!(
            peak <= memory_bound(input.len()),
            "{what}: seed {seed:#x}, case {index}: decoding {} bytes took {peak} bytes",
            input.len()
        );
        most = most.max(peak);
        cases += 1;
        decoded += usize::from(ok);
    };
    for (s, sample) in samples.iter().enumerate() {
        let seed = seed.wrapping_mul(1000).wrapping_add(s as u64);
        let donor = &samples[(s + 1) % samples.len()];
        let mut index = 0;
        one(seed, index, sample);
        if sample.len() <= 4096 {
            for cut in 0..sample.len() {
                index += 1;
                one(seed, index, &sample[..cut]);
            }
        }
        if sample.len() <= 1024 {
            for i in 0..sample.len() {
                for &b in SWEEP {
                    let mut m = sample.clone();
                    m[i] = b;
                    index += 1;
                    one(seed, index, &m);
                }
            }
        }
        let mut rng = Rng::new(seed);
        for _ in 0..per_sample * scale() {
            let m = mutate(&mut rng, sample, donor);
            index += 1;
            one(seed, index, &m);
        }
    }
    eprintln!(
        "{what}: {cases} cases, {decoded} decoded, at most {most} bytes held, in {:.1?}",
        started.elapsed()
    );
    (cases, decoded)
}

/// What every decoded value must allow: shown in logs, encoded again, read back as itself.
fn encodes_again<T>(value: &T)
where
    T: Serialize + DeserializeOwned + Debug,
{
    let _ = format!("{value:?}");
    let bytes = wire::encode(value, usize::MAX).expect("a decoded value encodes again");
    let back: T = wire::decode(&bytes, usize::MAX).expect("a value encoded again decodes");
    let again = wire::encode(&back, usize::MAX).expect("encodes a third time");
    assert_eq!(bytes, again, "a value encoded again reads back as itself");
}

// ---------------------------------------------------------------------------------------------
// Valid messages, as nodes send them.

/// A node's id as the network names it: the peer id of key `n`, the same on every run.
fn node(n: u8) -> NodeId {
    let key = Keypair::ed25519_from_bytes([n; 32]).expect("32 bytes are an ed25519 secret");
    NodeId(key.public().to_peer_id().to_string())
}

/// An id as a submission draws them (a UUID), `n` telling them apart.
fn id(n: u32) -> String {
    format!("6c056aec-ef11-4d16-8f96-{n:012x}")
}

fn spec(component: Component) -> JobSpec {
    JobSpec {
        component,
        timeout_secs: jobs::spec::DEFAULT_TIMEOUT_SECS,
        run_once: false,
        skip_cache: false,
        force_lock: false,
    }
}

/// The description of `data` as a submitter makes it (each piece's digest, the whole hash).
fn file_ref(name: &str, data: &[u8]) -> FileRef {
    let pieces: Vec<&[u8]> = data.chunks(CHUNK_SIZE as usize).collect();
    let file = FileRef {
        name: name.into(),
        size: data.len() as u64,
        hash: Fingerprint(*blake3::hash(data).as_bytes()),
        chunks: pieces
            .iter()
            .enumerate()
            .map(|(i, p)| FileRef::digest_of_chunk(i, pieces.len(), p))
            .collect(),
    };
    file.check().expect("a description that adds up");
    file
}

fn transfer(src: &str, dest: &str, file: FileRef, blueprint: bool) -> Transfer {
    Transfer {
        src: src.into(),
        dest: dest.into(),
        owner: Some(Owner {
            user: Some("root".into()),
            group: None,
        }),
        mode: Some(0o644),
        blueprint,
        file: Some(file),
    }
}

/// One job of each verb, with fields as a submission fills them.
fn every_verb() -> Vec<JobSpec> {
    let large: Vec<u8> = (0..2 * CHUNK_SIZE as usize + 100)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut args = BTreeMap::new();
    args.insert("port".into(), json!(8080));
    args.insert("list".into(), json!([1, "a", null, true, 1.5, {"k": "v"}]));
    args.insert("nested".into(), json!({"a": {"b": {"c": "d"}}}));
    let mut run_once = spec(Component::Run {
        command: "systemctl restart app".into(),
        stdout_arg: None,
        no_block: true,
    });
    run_once.run_once = true;
    run_once.timeout_secs = jobs::spec::MAX_SECONDS;
    vec![
        spec(Component::Run {
            command: r#"echo "a   b" | grep a > /tmp/out"#.into(),
            stdout_arg: Some("out".into()),
            no_block: false,
        }),
        run_once,
        spec(Component::Echo {
            text: "héllo {{ out }}".into(),
        }),
        spec(Component::Arg { args, extend: true }),
        spec(Component::Env {
            envs: BTreeMap::from([("PATH".into(), json!("/usr/bin:/bin"))]),
            extend: false,
        }),
        spec(Component::Workdir {
            path: "/opt/app".into(),
            owner: Some(Owner {
                user: Some("app".into()),
                group: Some("app".into()),
            }),
            mode: Some(0o755),
        }),
        spec(Component::Cachefile {
            path: "/etc/facts.yaml".into(),
        }),
        spec(Component::Cacheevict { tag: CacheTag::All }),
        spec(Component::Queuesentinel),
        spec(Component::Wait {
            wait: WaitFor::Seconds(2.5),
        }),
        spec(Component::Wait {
            wait: WaitFor::Command {
                command: "test -f /tmp/ready".into(),
                retry: 10,
                retry_wait: 0.5,
            },
        }),
        spec(Component::Query {
            name: "hostname".into(),
            no_wait: false,
        }),
        spec(Component::QueryWait {
            item: "hostname".into(),
            timeout_secs: 60,
            identities: vec![node(1).0, node(2).0],
        }),
        spec(Component::JobWait {
            fingerprint: "0123456789abcdef".into(),
            identities: vec![node(3).0],
        }),
        spec(Component::Add(transfer(
            "files/app.conf",
            "/etc/app.conf",
            file_ref("app.conf", b"listen 8080\n"),
            true,
        ))),
        spec(Component::Copy(transfer(
            "/srv/big.bin",
            "/opt/big.bin",
            file_ref("big.bin", &large),
            false,
        ))),
        spec(Component::Add(transfer(
            "empty",
            "/tmp/empty",
            file_ref("empty", b""),
            false,
        ))),
    ]
}

fn entry(n: u32, spec: JobSpec) -> JobEntry {
    JobEntry {
        job_id: id(n),
        fingerprint: spec.fingerprint(),
        spec,
        only_on: None,
    }
}

fn parent(n: u32, targets: Vec<NodeId>, jobs: Vec<JobEntry>) -> Parent {
    Parent {
        parent_id: id(1000 + n),
        fingerprint: Fingerprint::of(&n),
        queue: QueueKind::Sync,
        targets,
        target_keys: TargetKeys::default(),
        jobs,
    }
}

/// The node a run of these tests comes from, and the nodes it targets.
fn originator() -> NodeId {
    node(1)
}

fn targets() -> Vec<NodeId> {
    (2..6).map(node).collect()
}

/// Runs as they travel ([`Run::compact`]): one job, one parent per verb, and one with files,
/// inline data, holders and every optional field set.
fn runs() -> Vec<Run> {
    let mut small = Run::new(
        &id(1),
        originator(),
        vec![parent(
            1,
            targets(),
            vec![entry(
                1,
                spec(Component::Run {
                    command: "uptime".into(),
                    stdout_arg: None,
                    no_block: false,
                }),
            )],
        )],
    );
    small.created_unix_ms = 1_700_000_000_000;
    let verbs = every_verb();
    let files: Vec<JobEntry> = verbs
        .iter()
        .filter(|s| matches!(s.component, Component::Add(_) | Component::Copy(_)))
        .enumerate()
        .map(|(i, s)| entry(200 + i as u32, s.clone()))
        .collect();
    let mut each = Run::new(
        &id(2),
        originator(),
        verbs
            .into_iter()
            .filter(|s| !matches!(s.component, Component::Add(_) | Component::Copy(_)))
            .enumerate()
            .map(|(i, s)| {
                let mut job = entry(100 + i as u32, s);
                if job.spec.run_once {
                    job.only_on = Some(node(2));
                }
                parent(100 + i as u32, targets()[..2].to_vec(), vec![job])
            })
            .collect(),
    );
    each.stream = true;
    each.round = 2;
    let inline_data = b"listen 8080\n".to_vec();
    let mut with_files = Run::new(&id(3), originator(), vec![parent(3, targets(), files)]);
    with_files.parents[0].queue = QueueKind::Async;
    with_files.inline = vec![InlineBlob {
        hash: Fingerprint(*blake3::hash(&inline_data).as_bytes()),
        data: inline_data,
    }];
    with_files.holders = vec![(
        with_files.parents[0].jobs[1].spec.fingerprint(),
        vec![node(7), node(8)],
    )];
    with_files.originator_start = 0x1234_5678_9abc;
    with_files.created_unix_ms = 1_700_000_000_000;
    with_files.age_ms = 1500;
    vec![small.compact(), each.compact(), with_files.compact()]
}

fn gossips() -> Vec<Gossip> {
    let mut out: Vec<Gossip> = runs()
        .into_iter()
        .map(|r| Gossip::Run(Box::new(r)))
        .collect();
    out.push(Gossip::QuerySet {
        job_id: id(7),
        aggregate: json!({"query": {
            node(2).0: {"hostname": "web-1"},
            node(3).0: {"hostname": null},
        }}),
        originator_start: 42,
    });
    out
}

fn outcome(n: u32, state: ResultState) -> Outcome {
    Outcome {
        job_id: id(n),
        state,
        stdout: "line one\nline two\n".into(),
        stderr: "warning: ü\n".into(),
        info: "exit status 0".into(),
        execution_secs: 0.125,
        started_unix_ms: 1_700_000_000_000,
        finished_unix_ms: 1_700_000_000_125,
    }
}

fn job_messages() -> Vec<JobMessage> {
    let run = runs().swap_remove(0);
    vec![
        JobMessage::Deliver(Box::new(run)),
        JobMessage::Ack {
            run_id: id(1),
            node: node(2),
        },
        JobMessage::Results(vec![
            JobResult {
                run_id: id(1),
                node: node(2),
                outcome: outcome(1, ResultState::Success),
            },
            JobResult {
                run_id: id(1),
                node: node(2),
                outcome: outcome(2, ResultState::Failed),
            },
        ]),
        JobMessage::Output(vec![OutputBatch {
            job_id: id(1),
            node: node(2),
            seq: 3,
            lines: vec![
                OutputLine {
                    stream: OutputStream::Stdout,
                    offset: 0,
                    text: "starting\n".into(),
                },
                OutputLine {
                    stream: OutputStream::Stderr,
                    offset: 9,
                    text: "a piece of a long line".into(),
                },
            ],
        }]),
        JobMessage::QueryValue {
            job_id: id(7),
            node: node(2),
            name: "hostname".into(),
            value: json!("web-1"),
        },
        JobMessage::QueryResult {
            job_id: id(7),
            aggregate: json!({"query": {node(2).0: {"hostname": "web-1"}}}),
        },
        JobMessage::QueryFailed {
            job_id: id(7),
            reason: "the set of 9000 values is too large for any message".into(),
        },
        JobMessage::QueryTaken {
            job_id: id(7),
            node: node(3),
            values: 2,
        },
        JobMessage::WaitFor {
            wait_id: id(8),
            fingerprint: "0123456789abcdef".into(),
            run: Some(id(1)),
        },
        JobMessage::WaitFor {
            wait_id: id(9),
            fingerprint: Fingerprint::of(&"job").to_hex(),
            run: None,
        },
        JobMessage::WaitDone {
            wait_id: id(8),
            node: node(4),
            state: "success".into(),
        },
        JobMessage::HaveBlob {
            hash: Fingerprint(*blake3::hash(b"listen 8080\n").as_bytes()),
            node: node(5),
        },
    ]
}

fn job_replies() -> Vec<JobReply> {
    vec![
        JobReply::Ok,
        JobReply::Refused("results come from the node that ran the job".into()),
        JobReply::UnknownRuns(vec![id(1), id(2)]),
    ]
}

fn encoded<T: Serialize>(values: &[T]) -> Vec<Vec<u8>> {
    values
        .iter()
        .map(|v| wire::encode(v, MAX_JOB_MESSAGE).expect("a valid message encodes"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What a node does with what it decoded.

/// The checks a job's spec gets where a target takes it: its fingerprint, its times bounded,
/// the description of its file checked before anything is fetched by it.
fn take_spec(spec: &JobSpec) {
    let _ = spec.fingerprint();
    let _ = spec.verb();
    let _ = bounded_secs(spec.timeout_secs);
    match &spec.component {
        Component::Add(t) | Component::Copy(t) => {
            if let Some(file) = &t.file
                && file.check().is_ok()
            {
                // A chunk's expected length, as the node works it out for each chunk in.
                for index in 0..file.chunks.len().min(4) {
                    let _ = file
                        .size
                        .saturating_sub(index as u64 * CHUNK_SIZE)
                        .min(CHUNK_SIZE);
                    let _ = FileRef::digest_of_chunk(index, file.chunks.len(), b"x");
                }
            }
        }
        Component::Wait {
            wait: WaitFor::Seconds(s),
        } => {
            let _ = bounded_secs_f64(*s);
        }
        Component::Wait {
            wait: WaitFor::Command { retry_wait, .. },
        } => {
            let _ = bounded_secs_f64(*retry_wait);
        }
        Component::QueryWait { timeout_secs, .. } => {
            let _ = bounded_secs(*timeout_secs);
        }
        Component::JobWait { fingerprint, .. } => {
            let _ = Fingerprint::from_hex(fingerprint);
            let _ = Fingerprint::of(&"job").matches_prefix(fingerprint);
        }
        _ => {}
    }
}

/// What a target does with a run it decoded (`runs.rs`: `announced`, `request`, and
/// `target.rs`: `accept`): the run's problems, its work for this node, its inline files
/// checked against their hashes, and for each file job the sources of the file and a download
/// of its chunks.
/// Whether it is a run the target takes (no problem, work for it).
fn take_run(run: &Run, local: &NodeId, now: Instant) -> bool {
    let _ = run.originator.0 == originator().0;
    if run.problem().is_some() {
        return false;
    }
    let _ = run.invalid_id();
    let _ = run.age_ms >= 24 * 3600 * 1000;
    let known: Vec<NodeId> = targets();
    let name_of = |key: TargetKey| known.iter().find(|n| TargetKey::of(n) == key).cloned();
    let work = run.work_for(local);
    let taken = !work.is_empty();
    for (parent, jobs) in work {
        let _ = parent.all_target_keys();
        for job in jobs {
            take_spec(&job.spec);
            let _ = run.job_spec(&job.job_id);
            if let Component::Add(t) | Component::Copy(t) = &job.spec.component
                && let Some(file) = &t.file
                && file.check().is_ok()
            {
                let _ = distribution_sources(run, parent, job, local, &file.hash, name_of);
                let sources = run_file_sources(run, parent, job, local, &file.hash, name_of);
                let (mut download, _) = Download::new(file.chunks.len(), sources, now);
                let _ = download.progress();
                let _ = download.handle(
                    coordination::transfer::Input::Tick,
                    now + Duration::from_secs(1),
                );
            }
        }
    }
    for blob in &run.inline {
        let _ = Fingerprint(*blake3::hash(&blob.data).as_bytes()) == blob.hash;
    }
    for (hash, holders) in &run.holders {
        let _ = hash.to_hex();
        let _ = holders.len();
    }
    // What the originator side reads of a run.
    let _ = run.targets();
    let _ = run.expected_results();
    encodes_again(&run.compact());
    taken
}

/// The checks a directly sent job message gets before the node's state is touched (`runs.rs`:
/// `request`).
fn take_message(msg: &JobMessage, local: &NodeId, now: Instant) {
    match msg {
        JobMessage::Deliver(run) => {
            take_run(run, local, now);
        }
        JobMessage::Ack { run_id, node } => {
            let _ = is_valid_id(run_id) && node.0.len() < 64;
        }
        JobMessage::Results(results) => {
            for r in results {
                let _ = r.outcome.state.is_ok();
                let _ = bounded_secs_f64(r.outcome.execution_secs);
                let _ = r
                    .outcome
                    .finished_unix_ms
                    .saturating_sub(r.outcome.started_unix_ms);
            }
        }
        JobMessage::Output(batches) => {
            for b in batches {
                for line in &b.lines {
                    let _ = line.offset.saturating_add(line.text.len() as u64);
                }
            }
        }
        JobMessage::QueryValue { value, .. }
        | JobMessage::QueryResult {
            aggregate: value, ..
        } => {
            let _ = value.to_string();
            let _ = value.get("query").and_then(|q| q.as_object());
        }
        JobMessage::WaitFor {
            wait_id,
            fingerprint,
            run,
        } => {
            let _ = (8..=64).contains(&fingerprint.len())
                && fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
                && is_valid_id(wait_id)
                && run.as_deref().is_none_or(is_valid_id);
        }
        JobMessage::HaveBlob { hash, .. } => {
            let _ = hash.to_hex();
        }
        JobMessage::QueryFailed { .. }
        | JobMessage::QueryTaken { .. }
        | JobMessage::WaitDone { .. } => {}
    }
}

const PER_SAMPLE: usize = 1500;

// ---------------------------------------------------------------------------------------------
// The tests.

/// What members gossip on the jobs topic: runs and QUERY sets.
#[test]
fn mutated_gossiped_runs_and_query_sets_are_errors_or_values_a_node_can_take() {
    let now = Instant::now();
    let local = node(2);
    let samples = encoded(&gossips());
    assert!(samples.iter().all(|s| s.len() <= MAX_GOSSIP_BYTES));
    let (cases, decoded) = run_cases(
        "gossip",
        11,
        &samples,
        PER_SAMPLE,
        |input| match wire::decode::<Gossip>(input, MAX_JOB_MESSAGE) {
            Ok(gossip) => {
                encodes_again(&gossip);
                match &gossip {
                    Gossip::Run(run) => {
                        take_run(run, &local, now);
                    }
                    Gossip::QuerySet { aggregate, .. } => {
                        let _ = aggregate.to_string();
                    }
                }
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        },
    );
    assert!(cases > 4 * PER_SAMPLE && decoded > 0, "{cases} {decoded}");
}

/// Runs as a node takes them whole, under many mutations each (their jobs carry most of what
/// a run can hold: every verb, file descriptions, JSON values).
#[test]
fn mutated_runs_are_errors_or_runs_a_target_can_take() {
    let now = Instant::now();
    let local = node(3);
    let gossiped: Vec<Gossip> = runs()
        .into_iter()
        .map(|r| Gossip::Run(Box::new(r)))
        .collect();
    let samples = encoded(&gossiped);
    let mut taken = 0;
    let (_, decoded) = run_cases(
        "run",
        12,
        &samples,
        2 * PER_SAMPLE,
        |input| match wire::decode::<Gossip>(input, MAX_JOB_MESSAGE) {
            Ok(Gossip::Run(run)) => {
                encodes_again(&run);
                taken += usize::from(take_run(&run, &local, now));
                true
            }
            Ok(_) => true,
            Err(_) => false,
        },
    );
    eprintln!("run: {taken} runs taken");
    assert!(decoded > 0 && taken > 0, "{decoded} {taken}");
}

/// What members send each other directly, inside `CtlRequest::Job`.
#[test]
fn mutated_job_messages_are_errors_or_values_a_node_can_take() {
    let now = Instant::now();
    let local = node(2);
    let samples = encoded(&job_messages());
    run_cases(
        "job message",
        13,
        &samples,
        PER_SAMPLE,
        |input| match wire::decode::<JobMessage>(input, MAX_JOB_MESSAGE) {
            Ok(msg) => {
                encodes_again(&msg);
                take_message(&msg, &local, now);
                true
            }
            Err(_) => false,
        },
    );
}

/// The answers to job messages, inside `CtlResponse::Job`.
#[test]
fn mutated_job_replies_are_errors_or_values() {
    let samples = encoded(&job_replies());
    run_cases(
        "job reply",
        14,
        &samples,
        PER_SAMPLE,
        |input| match wire::decode::<JobReply>(input, MAX_JOB_MESSAGE) {
            Ok(reply) => {
                encodes_again(&reply);
                if let JobReply::UnknownRuns(runs) = &reply {
                    let _ = runs.iter().filter(|r| is_valid_id(r)).count();
                }
                true
            }
            Err(_) => false,
        },
    );
}

/// Target keys travel as one byte string of 8 bytes each: any other length is refused, and
/// any bytes of the right length are keys (sorted on arrival).
#[test]
fn target_keys_of_any_length_are_keys_or_an_error() {
    let mut rng = Rng::new(15);
    for len in 0..200 {
        let raw: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let mut bytes = Vec::new();
        ciborium::into_writer(&serde_bytes::Bytes::new(&raw), &mut bytes).unwrap();
        let keys = ciborium::from_reader::<TargetKeys, _>(&bytes[..]);
        assert_eq!(keys.is_ok(), len % 8 == 0, "{len} bytes: {}", hex(&raw));
        if let Ok(keys) = keys {
            assert!(keys.len() <= len / 8);
        }
    }
}

/// JSON values nest (QUERY values and sets, ARG and ENV values): nested as deep as CBOR allows
/// they are refused at the decoder's depth limit, within the stack of a runtime worker thread
/// (where a node decodes them), never by overflowing it.
#[test]
fn deeply_nested_values_are_refused_within_a_worker_threads_stack() {
    let worker_stack = 2 * 1024 * 1024;
    let message = wire::encode(
        &JobMessage::QueryValue {
            job_id: id(7),
            node: node(2),
            name: "hostname".into(),
            value: json!(null),
        },
        MAX_JOB_MESSAGE,
    )
    .unwrap();
    // The value is the last field: its `null` (0xf6) is the last byte.
    assert_eq!(message.last(), Some(&0xf6));
    let head = &message[..message.len() - 1];
    // Arrays of one, indefinite arrays closed at the end, maps of one under the key "".
    let nested = |depth: usize, open: &[u8], close: &[u8]| {
        let mut input = head.to_vec();
        for _ in 0..depth {
            input.extend_from_slice(open);
        }
        input.push(0xf6);
        for _ in 0..depth {
            input.extend_from_slice(close);
        }
        input
    };
    for (depth, open, close, decodes) in [
        (100, &[0x81][..], &[][..], true),
        (200, &[0x9f], &[0xff], true),
        (200, &[0xa1, 0x60], &[], true),
        (256, &[0x81], &[], false),
        (10_000, &[0x81], &[], false),
        (100_000, &[0x9f], &[0xff], false),
        (100_000, &[0xa1, 0x60], &[], false),
    ] {
        let input = nested(depth, open, close);
        let decoded = std::thread::Builder::new()
            .stack_size(worker_stack)
            .spawn(move || {
                let msg = wire::decode::<JobMessage>(&input, MAX_JOB_MESSAGE);
                if let Ok(m) = &msg {
                    encodes_again(m);
                    take_message(m, &node(2), Instant::now());
                }
                msg.is_ok()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(decoded, decodes, "{depth} deep, opened by {open:x?}");
    }
}
