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
    collections::BTreeMap,
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
    wire::{self, MAX_CTL_BYTES, MAX_GOSSIP_BYTES},
};
use serde::Serialize;
use serde_json::json;

/// The most a job message may take, as the node reads them (`runs.rs`: `MAX_JOB_MESSAGE`).
const MAX_JOB_MESSAGE: usize = MAX_CTL_BYTES;

mod mutation_support;

use mutation_support::*;

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
    out.push(Gossip::QuerySetPart {
        job_id: id(7),
        part: json!({"query": {node(3).0: {"hostname": "web-2"}}}),
        values: 2,
        set: jobs::Fingerprint([9; 32]),
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
        JobMessage::ServedCorrupt {
            hash: Fingerprint(*blake3::hash(b"listen 8080\n").as_bytes()),
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
        JobMessage::HaveBlob { hash, .. } | JobMessage::ServedCorrupt { hash } => {
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
                    // As a target puts parts together.
                    Gossip::QuerySetPart {
                        part,
                        values,
                        set,
                        originator_start,
                        ..
                    } => {
                        let whole = usize::try_from(*values).unwrap_or(usize::MAX);
                        let mut parts = coordination::query::SetInParts::default();
                        let _ = parts.part(part.clone(), whole, *set, *originator_start, now);
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

/// Job messages come from members only (who may run any command on any node anyway), and
/// some are read whole before anything looks at them: a message of tiny elements takes some
/// 33 times its size while it is read (an answer naming runs of empty ids: a `String` each; a
/// QUERY value of nulls: a JSON value each; and the list's doubling as it grows). This holds
/// that ceiling where it is, so a change that makes it worse shows: an 8 MiB message takes
/// at most about 320 MiB.
#[test]
fn what_a_job_message_of_tiny_elements_takes_is_bounded_by_its_size() {
    let messages = [
        (
            "runs of empty ids",
            wire::encode(
                &JobReply::UnknownRuns(vec![String::new(); 1_000_000]),
                MAX_JOB_MESSAGE,
            )
            .unwrap(),
        ),
        (
            "a QUERY value of nulls",
            wire::encode(
                &JobMessage::QueryValue {
                    job_id: id(1),
                    node: node(1),
                    name: "n".into(),
                    value: serde_json::Value::Array(vec![serde_json::Value::Null; 1_000_000]),
                },
                MAX_JOB_MESSAGE,
            )
            .unwrap(),
        ),
    ];
    for (what, input) in messages {
        let (decoded, peak) = peak_during(|| {
            if what.starts_with("runs") {
                wire::decode::<JobReply>(&input, MAX_JOB_MESSAGE).is_ok()
            } else {
                wire::decode::<JobMessage>(&input, MAX_JOB_MESSAGE).is_ok()
            }
        });
        assert!(decoded, "{what}: read");
        assert!(
            peak <= 40 * input.len(),
            "{what}: {} bytes took {peak}",
            input.len()
        );
    }
}
