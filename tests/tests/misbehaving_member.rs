//! A member that breaks the job protocol.
//!
//! Members hold the mesh key, so one can send any job message to anyone. What it claims about
//! runs it has no part in is not taken: a result for a job it was not a target of, a result in
//! another node's name, a QUERY aggregate for runs it did not send (sent or gossiped), a claim
//! to hold a file no
//! open run sends, a run whose ids could not be store keys, a JOB_WAIT for every job. Two full nodes run on the
//! memory transport; the misbehaving member is a bare mesh participant that sends hand-made
//! job messages.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use coordination::{Gossip, JobMessage, JobReply, JobResult, NodeId, Run};
use jobs::executor::{Outcome, ResultState};
use mesh::{
    Keypair, LocalIdentity, MeshConfig, MeshEvent, MeshHandle, PeerId, TransportKind, wire,
};
use node::{
    Node, NodeConfig,
    config::MeshKeyChoice,
    control::{ControlRequest, ControlResponse, Reply, WatchEvent},
    records::JobRecord,
};
use tokio::sync::mpsc;

const LIMIT: usize = wire::MAX_CTL_BYTES;

async fn node(dir: &Path, name: &str, joins: Option<&Node>) -> Node {
    let mut cfg = NodeConfig::in_memory(dir.to_path_buf(), name);
    cfg.heartbeat_interval = Duration::from_secs(1);
    if let Some(first) = joins {
        let token = first.join_token().clone();
        cfg.bootstrap = token.peers.clone();
        cfg.mesh_key_choice = MeshKeyChoice::Key(token.mesh_key.expect("mesh has a key"));
    }
    Node::start(cfg).await.expect("node starts")
}

/// What the misbehaving member hears of the jobs traffic.
enum Heard {
    /// A copy of a run (gossiped or delivered).
    Run(Run),
    /// Results sent to it, as the originator of a run it made.
    Results(Vec<JobResult>),
    /// A QUERY's set of values, gossiped or sent to it directly.
    Set {
        gossiped: bool,
        job_id: String,
        aggregate: serde_json::Value,
    },
    /// Word that a JOB_WAIT it registered is over on `node`, with the job's state.
    WaitDone {
        wait_id: String,
        node: NodeId,
        state: String,
    },
    /// Part of a QUERY's set gossiped in parts, and how many values the whole set holds.
    Part {
        job_id: String,
        part: serde_json::Value,
        values: u64,
    },
}

/// A member that is only a mesh participant: it runs no jobs and sends what the test says.
async fn rogue(first: &Node) -> (MeshHandle, mpsc::Receiver<Heard>) {
    let identity = LocalIdentity {
        name: "rogue".into(),
        machine_id: "machine-rogue".into(),
        version: "test".into(),
        labels: BTreeMap::new(),
        host_uptime_at_start: Duration::ZERO,
    };
    let token = first.join_token().clone();
    let mut cfg = MeshConfig::new(Keypair::generate_ed25519(), TransportKind::Memory, identity);
    cfg.listen = vec!["/memory/0".parse().expect("a memory address")];
    cfg.bootstrap = token.peers.clone();
    cfg.mesh_key = token.mesh_key;
    cfg.heartbeat_interval = Duration::from_secs(1);
    let mut started = mesh::start(cfg).await.expect("the rogue member starts");
    // It hears the runs and QUERY sets sent to it (as a target it takes runs and never runs
    // them); it answers every job request Ok and drains its other events.
    let (tx, heard) = mpsc::channel(64);
    let handle = started.handle.clone();
    tokio::spawn(async move {
        while let Some(event) = started.events.recv().await {
            let heard = match event {
                MeshEvent::Announce { data, .. } => match wire::decode::<Gossip>(&data, LIMIT) {
                    Ok(Gossip::Run(run)) => Some(Heard::Run(*run)),
                    Ok(Gossip::QuerySet {
                        job_id, aggregate, ..
                    }) => Some(Heard::Set {
                        gossiped: true,
                        job_id,
                        aggregate,
                    }),
                    Ok(Gossip::QuerySetPart {
                        job_id,
                        part,
                        values,
                        ..
                    }) => Some(Heard::Part {
                        job_id,
                        part,
                        values,
                    }),
                    Err(_) => None,
                },
                MeshEvent::JobRequest { data, token, .. } => {
                    let ok = wire::encode(&JobReply::Ok, LIMIT).expect("a reply encodes");
                    let _ = handle.reply(token, ok).await;
                    match wire::decode::<JobMessage>(&data, LIMIT) {
                        Ok(JobMessage::Deliver(run)) => Some(Heard::Run(*run)),
                        Ok(JobMessage::Results(results)) => Some(Heard::Results(results)),
                        Ok(JobMessage::WaitDone {
                            wait_id,
                            node,
                            state,
                        }) => Some(Heard::WaitDone {
                            wait_id,
                            node,
                            state,
                        }),
                        Ok(JobMessage::QueryResult { job_id, aggregate }) => Some(Heard::Set {
                            gossiped: false,
                            job_id,
                            aggregate,
                        }),
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(heard) = heard {
                let _ = tx.try_send(heard);
            }
        }
    });
    (started.handle, heard)
}

/// Two full nodes and the rogue member, each alive to the two nodes.
struct Trio {
    /// The nodes' state directories (the submitter's first), kept for the test's length.
    dirs: Vec<tempfile::TempDir>,
    submitter: Node,
    target: Node,
    rogue: MeshHandle,
    heard: mpsc::Receiver<Heard>,
}

async fn trio() -> Trio {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let submitter = node(dirs[0].path(), "submitter", None).await;
    let target = node(dirs[1].path(), "target", Some(&submitter)).await;
    let (rogue, heard) = rogue(&submitter).await;
    wait_alive(&submitter, 3).await;
    wait_alive(&target, 3).await;
    Trio {
        dirs,
        submitter,
        target,
        rogue,
        heard,
    }
}

/// Submits `yaml` (an orchestration) on `node` to `targets`; returns the run and job ids.
async fn submit(node: &Node, yaml: &str, cwd: &Path, targets: &[&str]) -> (String, Vec<String>) {
    submit_run(node, yaml, cwd, targets, false).await
}

/// Like [`submit`]; `stream`: the targets send the jobs' output live, as for `--stream`.
async fn submit_run(
    node: &Node,
    yaml: &str,
    cwd: &Path,
    targets: &[&str],
    stream: bool,
) -> (String, Vec<String>) {
    let submission = e2e_tests::submission(yaml, cwd, targets, stream);
    match node.request(ControlRequest::Submit(submission)).await {
        Reply::One(ControlResponse::Submitted(r)) => {
            (r.run_id, r.jobs.into_iter().map(|j| j.job_id).collect())
        }
        _ => panic!("the submission was not taken"),
    }
}

/// The next copy of run `run_id` the rogue receives.
async fn copy_of(heard: &mut mpsc::Receiver<Heard>, run_id: &str) -> Run {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Heard::Run(run) = heard.recv().await.expect("the rogue still listens")
                && run.run_id == run_id
            {
                return run;
            }
        }
    })
    .await
    .expect("the run reached the rogue")
}

/// The next set of QUERY job `job_id` the rogue receives: whether it was gossiped, and the set.
async fn set_of(heard: &mut mpsc::Receiver<Heard>, job_id: &str) -> (bool, serde_json::Value) {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Heard::Set {
                gossiped,
                job_id: job,
                aggregate,
            } = heard.recv().await.expect("the rogue still listens")
                && job == job_id
            {
                return (gossiped, aggregate);
            }
        }
    })
    .await
    .expect("the QUERY set reached the rogue")
}

/// The record of `job_id` once every target has reported it, outputs and all.
async fn finished(node: &Node, job_id: &str) -> JobRecord {
    let Reply::Stream(mut events) = node
        .request(ControlRequest::Watch {
            job_ids: vec![job_id.to_string()],
            output: true,
        })
        .await
    else {
        panic!("watch is a stream");
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.recv().await {
            if let ControlResponse::Watch(WatchEvent::Done(record)) = event {
                return Some(*record);
            }
        }
        None
    })
    .await
    .expect("the job finished in time")
    .expect("the job finished")
}

async fn send(rogue: &MeshHandle, to: PeerId, msg: &JobMessage) -> JobReply {
    let bytes = wire::encode(msg, LIMIT).expect("a job message encodes");
    let reply = rogue
        .request_job(to, bytes)
        .await
        .expect("the node answers");
    wire::decode(&reply, LIMIT).expect("a job reply")
}

async fn wait_alive(node: &Node, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = node.status().await.expect("status");
        if status.nodes.iter().filter(|r| r.state == "alive").count() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never saw {n} alive",
            node.name()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The record of `job_id` once `name` has reported it (within 30 s, else the test fails
/// saying `what` never happened).
async fn reported_on(node: &Node, job_id: &str, name: &str, what: &str) -> JobRecord {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = job_info(node, job_id).await;
        if record.results.contains_key(name) {
            return record;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn job_info(node: &Node, job_id: &str) -> JobRecord {
    match node.request(ControlRequest::JobInfo(job_id.into())).await {
        Reply::One(ControlResponse::Job(Some(r))) => *r,
        _ => panic!("no record of {job_id}"),
    }
}

fn outcome(job_id: &str) -> Outcome {
    Outcome {
        job_id: job_id.into(),
        state: ResultState::Success,
        stdout: "forged".into(),
        stderr: String::new(),
        info: String::new(),
        execution_secs: 0.0,
        started_unix_ms: 0,
        finished_unix_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_report_or_aggregate_for_runs_it_has_no_part_in() {
    let Trio {
        dirs,
        submitter,
        target,
        rogue,
        heard: _delivered,
    } = trio().await;

    // A job on `target` that runs long enough for the forgeries to arrive first.
    let yaml = "- jobs:\n  - RUN: --skip-cache sleep 2; echo real\n";
    let (run_id, job_ids) = submit(&submitter, yaml, dirs[0].path(), &["target"]).await;
    let job_id = job_ids[0].clone();
    let rogue_id = NodeId(rogue.local_peer_id().to_string());
    let target_id = NodeId(target.peer_id().to_string());

    // A result in the rogue's own name, for a job it is no target of: not taken.
    let own = JobMessage::Results(vec![JobResult {
        run_id: run_id.clone(),
        node: rogue_id.clone(),
        outcome: outcome(&job_id),
    }]);
    send(&rogue, submitter.peer_id(), &own).await;
    // A result in the target's name: refused outright.
    let impersonated = JobMessage::Results(vec![JobResult {
        run_id: run_id.clone(),
        node: target_id,
        outcome: outcome(&job_id),
    }]);
    assert_eq!(
        send(&rogue, submitter.peer_id(), &impersonated).await,
        JobReply::Refused("results come from the node that ran the job".into())
    );
    // (The real result may already be in on a slow machine; a forged one never is.)
    let record = job_info(&submitter, &job_id).await;
    assert!(
        record.results.len() <= 1 && record.results.values().all(|r| r.stdout != "forged"),
        "a forged result was recorded: {:?}",
        record.results
    );

    // A QUERY aggregate from a member that is not the originator of a QUERY job there: refused.
    assert_eq!(
        send(
            &rogue,
            target.peer_id(),
            &JobMessage::QueryResult {
                job_id: job_id.clone(),
                aggregate: serde_json::json!({"target": {"x": 1}}),
            },
        )
        .await,
        JobReply::Refused(
            "a query result comes from the originator of a QUERY job that ran here".into()
        )
    );

    // Word that a QUERY set cannot come, from a member that is not its originator: refused
    // (taken, it would fail the target's QUERY).
    assert_eq!(
        send(
            &rogue,
            target.peer_id(),
            &JobMessage::QueryFailed {
                job_id: job_id.clone(),
                reason: "forged".into(),
            },
        )
        .await,
        JobReply::Refused(
            "a query result comes from the originator of a QUERY job that ran here".into()
        )
    );

    // A QUERY value of another arg than the job's: refused (taken, it would name the arg and
    // every other target's value would be ignored).
    let (_, query_jobs) = submit(
        &submitter,
        "- jobs:\n  - QUERY: token --timeout 5\n",
        dirs[0].path(),
        &["rogue"],
    )
    .await;
    let value = |name: &str| JobMessage::QueryValue {
        job_id: query_jobs[0].clone(),
        node: rogue_id.clone(),
        name: name.into(),
        value: serde_json::json!("x"),
    };
    assert_eq!(
        send(&rogue, submitter.peer_id(), &value("other")).await,
        JobReply::Refused(format!(
            "QUERY job {} collects the arg 'token', not 'other'",
            query_jobs[0]
        ))
    );
    assert_eq!(
        send(&rogue, submitter.peer_id(), &value("token")).await,
        JobReply::Ok
    );

    // A JOB_WAIT registration with an empty (or not hexadecimal) fingerprint would match
    // every job there: refused.
    for fingerprint in ["", "not-a-fingerprint"] {
        let wait = JobMessage::WaitFor {
            wait_id: "w".into(),
            fingerprint: fingerprint.into(),
            run: None,
        };
        assert_eq!(
            send(&rogue, target.peer_id(), &wait).await,
            JobReply::Refused("a JOB_WAIT names a job by 8 to 64 hexadecimal digits".into())
        );
    }

    // The real result arrives and completes the job, with only the real target in it.
    let done = finished(&submitter, &job_id).await;
    assert_eq!(
        done.results.keys().collect::<Vec<_>>(),
        vec!["target"],
        "{done:?}"
    );
    assert_eq!(done.results["target"].stdout, "real");

    target.shutdown().await.unwrap();
    submitter.shutdown().await.unwrap();
}

/// A QUERY's set of values is gossiped; a target that does not say it has it (the rogue)
/// gets it directly after the grace; a set gossiped by a member that is not the QUERY job's
/// originator is not taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_set_is_gossiped_and_a_forged_one_is_not_taken() {
    let Trio {
        dirs,
        submitter,
        target,
        rogue,
        mut heard,
    } = trio().await;
    let rogue_id = NodeId(rogue.local_peer_id().to_string());

    let yaml = "- jobs:\n  - ARG: token real\n  - QUERY: token --timeout 60\n";
    let (_, jobs) = submit(&submitter, yaml, dirs[0].path(), &["target", "rogue"]).await;
    let query_job = jobs[1].clone();
    let value = JobMessage::QueryValue {
        job_id: query_job.clone(),
        node: rogue_id,
        name: "token".into(),
        value: serde_json::json!("r"),
    };
    assert_eq!(
        send(&rogue, submitter.peer_id(), &value).await,
        JobReply::Ok
    );
    let expected = serde_json::json!({
        "query": {"target": {"token": "real"}, "rogue": {"token": "r"}}
    });
    let (gossiped, set) = set_of(&mut heard, &query_job).await;
    assert!(gossiped, "the set was sent directly first");
    assert_eq!(set, expected);
    // The rogue never said it has it: it gets it directly too.
    let (gossiped, set) = set_of(&mut heard, &query_job).await;
    assert!(!gossiped, "the set was not sent directly after the grace");
    assert_eq!(set, expected);

    // The target's QUERY job took the real set and finished.
    reported_on(
        &submitter,
        &query_job,
        "target",
        "the target's QUERY never finished",
    )
    .await;
    // A set of the same job gossiped by the rogue is dropped: the target keeps the real one.
    let forged = Gossip::QuerySet {
        job_id: query_job.clone(),
        aggregate: serde_json::json!({"query": {"target": {"token": "forged"}}}),
        originator_start: 1,
    };
    rogue
        .publish_jobs(wire::encode(&forged, LIMIT).expect("a set encodes"))
        .await
        .expect("the forged set is gossiped");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, jobs) = submit(
        &submitter,
        "- jobs:\n  - RUN: echo {{ query.target.token }}/{{ query.rogue.token }}\n",
        dirs[0].path(),
        &["target"],
    )
    .await;
    let done = finished(&submitter, &jobs[0]).await;
    assert_eq!(done.results["target"].stdout, "real/r", "{done:?}");

    target.shutdown().await.unwrap();
    submitter.shutdown().await.unwrap();
}

/// A QUERY set too large for gossip goes to each target directly at once (not after the
/// grace), and word that a target took a set counts only in the sender's own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_set_too_large_to_gossip_goes_directly_and_word_of_it_is_the_senders_own() {
    let Trio {
        dirs,
        submitter,
        target,
        rogue,
        mut heard,
    } = trio().await;
    let rogue_id = NodeId(rogue.local_peer_id().to_string());
    let target_id = NodeId(target.peer_id().to_string());

    let yaml = "- jobs:\n  - ARG: token real\n  - QUERY: token --timeout 60\n";
    let (_, jobs) = submit(&submitter, yaml, dirs[0].path(), &["target", "rogue"]).await;
    let query_job = jobs[1].clone();
    // The rogue's value alone is over gossip's 1 MiB.
    let big = "x".repeat(1_200_000);
    let value = JobMessage::QueryValue {
        job_id: query_job.clone(),
        node: rogue_id,
        name: "token".into(),
        value: serde_json::json!(big),
    };
    // The target sends its own value as its QUERY starts, right after its ARG: in before
    // the rogue's (with a second to spare), so that the rogue's is the last and the time
    // taken is the submitter's alone.
    reported_on(
        &submitter,
        &jobs[0],
        "target",
        "the target's ARG never finished",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = Instant::now();
    assert_eq!(
        send(&rogue, submitter.peer_id(), &value).await,
        JobReply::Ok
    );
    let (gossiped, set) = set_of(&mut heard, &query_job).await;
    assert!(!gossiped, "a set over 1 MiB was gossiped");
    // Not held for the grace that gossiped sets get (2 s), which would mean it was handled
    // as a gossiped set nobody confirmed.
    let took = sent.elapsed();
    eprintln!("the set came {took:?} after the last value");
    assert!(
        took < coordination::query::GOSSIP_GRACE,
        "the set came {took:?} after the last value"
    );
    assert_eq!(set["query"]["rogue"]["token"], serde_json::json!(big));
    assert_eq!(set["query"]["target"]["token"], "real");
    // The target took it too, directly: its QUERY job finished.
    reported_on(
        &submitter,
        &query_job,
        "target",
        "the target's QUERY never finished",
    )
    .await;
    // Word of a set in another node's name: refused.
    let taken = JobMessage::QueryTaken {
        job_id: query_job.clone(),
        node: target_id,
        values: 2,
    };
    assert_eq!(
        send(&rogue, submitter.peer_id(), &taken).await,
        JobReply::Refused("a query set is taken by its node".into())
    );

    target.shutdown().await.unwrap();
    submitter.shutdown().await.unwrap();
}

/// A QUERY set too large for one gossip message, of values that each fit in one, is gossiped
/// in parts: every target puts them together (the originator does not send it to each), and
/// one that does not say it has it gets it directly, only after a grace per part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_set_too_large_for_one_gossip_message_is_gossiped_in_parts() {
    let Trio {
        dirs,
        submitter,
        target,
        rogue,
        mut heard,
    } = trio().await;
    let rogue_id = NodeId(rogue.local_peer_id().to_string());

    // The target's value and the rogue's fit in a gossip message each, not together.
    let (target_len, rogue_len) = (400_000, 700_000);
    let yaml = format!(
        "- jobs:\n  - ARG: token {}\n  - QUERY: token --timeout 60\n  \
         - RUN: echo {{{{ query.target.token | length }}}}/{{{{ query.rogue.token | length }}}}\n",
        "t".repeat(target_len)
    );
    let (_, jobs) = submit(&submitter, &yaml, dirs[0].path(), &["target", "rogue"]).await;
    let query_job = jobs[1].clone();
    // In after the target's own value (sent as its QUERY starts, right after its ARG).
    reported_on(
        &submitter,
        &jobs[0],
        "target",
        "the target's ARG never finished",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let value = JobMessage::QueryValue {
        job_id: query_job.clone(),
        node: rogue_id,
        name: "token".into(),
        value: serde_json::json!("r".repeat(rogue_len)),
    };
    let sent = Instant::now();
    assert_eq!(
        send(&rogue, submitter.peer_id(), &value).await,
        JobReply::Ok
    );

    // The parts are gossiped, and together they are the set.
    let mut together = serde_json::Map::new();
    let mut parts = 0;
    while together.len() < 2 {
        let next = tokio::time::timeout(Duration::from_secs(20), heard.recv())
            .await
            .expect("the parts reached the rogue")
            .expect("the rogue still listens");
        match next {
            Heard::Part {
                job_id,
                part,
                values,
            } if job_id == query_job => {
                assert_eq!(values, 2);
                parts += 1;
                together.extend(part["query"].as_object().expect("a part of a set").clone());
            }
            Heard::Set { job_id, .. } if job_id == query_job => {
                panic!("the set came whole before its parts")
            }
            _ => {}
        }
    }
    assert_eq!(parts, 2);
    assert_eq!(
        together["target"]["token"].as_str().map(str::len),
        Some(target_len)
    );
    assert_eq!(
        together["rogue"]["token"].as_str().map(str::len),
        Some(rogue_len)
    );

    // The target puts the parts together and its QUERY finishes, before any direct copy
    // went out (those to it and to the rogue go at the same moment).
    reported_on(
        &submitter,
        &query_job,
        "target",
        "the target's QUERY never finished",
    )
    .await;
    while let Ok(next) = heard.try_recv() {
        if let Heard::Set { job_id, .. } = next {
            assert_ne!(
                job_id, query_job,
                "the target's QUERY waited for a direct copy of the set"
            );
        }
    }
    // The rogue never says it has the set: it gets it directly, after two graces (one per
    // part), not one.
    let (gossiped, set) = set_of(&mut heard, &query_job).await;
    let took = sent.elapsed();
    assert!(!gossiped);
    assert_eq!(set, serde_json::json!({ "query": together }));
    assert!(
        took >= coordination::query::GOSSIP_GRACE * 2,
        "the direct copy came {took:?} after the last value"
    );
    // And the job after it sees both values (the rogue runs nothing: the job is over on the
    // target alone).
    let done = reported_on(
        &submitter,
        &jobs[2],
        "target",
        "the target's RUN never finished",
    )
    .await;
    assert_eq!(
        done.results["target"].stdout,
        format!("{target_len}/{rogue_len}"),
        "{done:?}"
    );

    target.shutdown().await.unwrap();
    submitter.shutdown().await.unwrap();
}

/// A member's claim to hold a file counts only for files of runs the node has open: nobody
/// grows the hints a node hands out (and keeps) with files it never sent. And a run whose ids
/// could not be store keys is not taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_plant_holder_hints_or_runs_with_bad_ids() {
    let Trio {
        dirs,
        submitter,
        target,
        rogue,
        heard: mut delivered,
    } = trio().await;

    // A file too large to travel inside the run: it is fetched, and hints name holders.
    let file = dirs[0].path().join("payload.bin");
    let content: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let hash = jobs::Fingerprint(*blake3::hash(&content).as_bytes());
    let rogue_id = NodeId(rogue.local_peer_id().to_string());
    let claim = JobMessage::HaveBlob {
        hash,
        node: rogue_id.clone(),
    };

    // Before any run sends the file, the claim is answered but not kept.
    assert_eq!(
        send(&rogue, submitter.peer_id(), &claim).await,
        JobReply::Ok
    );
    // The rogue is a target too (so it receives the runs), and never reports: the first run
    // stays open while the claim is made again.
    let targets = ["target", "rogue"];
    let yaml = format!(
        "- jobs:\n  - ADD: {} {}/one.bin\n",
        file.display(),
        dirs[1].path().display()
    );
    let (first, _) = submit(&submitter, &yaml, dirs[0].path(), &targets).await;
    let run = copy_of(&mut delivered, &first).await;
    assert!(
        !run.holders
            .iter()
            .any(|(_, nodes)| nodes.contains(&rogue_id)),
        "a claim about a file of no open run was handed out: {:?}",
        run.holders
    );

    // While a run that sends the file is open, the same claim is a hint for the next run.
    assert_eq!(
        send(&rogue, submitter.peer_id(), &claim).await,
        JobReply::Ok
    );
    let yaml = format!(
        "- jobs:\n  - ADD: {} {}/two.bin\n",
        file.display(),
        dirs[1].path().display()
    );
    let (second, _) = submit(&submitter, &yaml, dirs[0].path(), &targets).await;
    let run = copy_of(&mut delivered, &second).await;
    assert!(
        run.holders
            .iter()
            .any(|(h, nodes)| *h == hash && nodes.contains(&rogue_id)),
        "a claim about a file of an open run was not kept: {:?}",
        run.holders
    );

    // A run of its own whose ids could not be store keys is refused by its target.
    let mut forged = run.clone();
    forged.originator = rogue_id.clone();
    forged.run_id = "../runs".into();
    assert_eq!(
        send(
            &rogue,
            target.peer_id(),
            &JobMessage::Deliver(Box::new(forged))
        )
        .await,
        JobReply::Refused("a run with an invalid id: \"../runs\"".into())
    );
    // One that names a job twice (run twice on a node, one result lost) is refused too.
    let mut twice = run.clone();
    twice.originator = rogue_id.clone();
    twice.run_id = "twice".into();
    let job = twice.parents[0].jobs[0].clone();
    twice.parents[0].jobs.push(job.clone());
    assert_eq!(
        send(
            &rogue,
            target.peer_id(),
            &JobMessage::Deliver(Box::new(twice))
        )
        .await,
        JobReply::Refused(format!("a run with the job id {:?} twice", job.job_id))
    );
    // A registration of a wait, kept a day, with ids of megabytes is refused.
    for (wait_id, run) in [
        ("w".repeat(1 << 20), None),
        ("wait-1".to_string(), Some("r".repeat(1 << 20))),
    ] {
        let wait = JobMessage::WaitFor {
            wait_id,
            fingerprint: "abcdef01".into(),
            run,
        };
        assert_eq!(
            send(&rogue, target.peer_id(), &wait).await,
            JobReply::Refused("a wait's ids are those of a job's".into())
        );
    }

    target.shutdown().await.unwrap();
    submitter.shutdown().await.unwrap();
}

/// A JOB_WAIT registration that names its job's fingerprint in upper case hears when the job
/// ends, as one in lower case does (the registration is taken either way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_registered_in_upper_case_hears_its_job_end() {
    let Trio {
        dirs,
        submitter,
        target,
        rogue,
        mut heard,
    } = trio().await;
    let gate = dirs[1].path().join("gate");
    let yaml = format!(
        "- jobs:\n  - RUN: --skip-cache while [ ! -e {} ]; do sleep 0.1; done\n",
        gate.display()
    );
    let (_, jobs) = submit(&submitter, &yaml, dirs[0].path(), &["target"]).await;
    let fingerprint = job_info(&submitter, &jobs[0]).await.fingerprint;
    // The job is queued or running on the target while the waits register.
    for (wait_id, named) in [
        ("upper", fingerprint.to_ascii_uppercase()),
        ("lower", fingerprint.clone()),
    ] {
        let wait = JobMessage::WaitFor {
            wait_id: wait_id.into(),
            fingerprint: named,
            run: None,
        };
        assert_eq!(send(&rogue, target.peer_id(), &wait).await, JobReply::Ok);
    }
    std::fs::write(&gate, "").unwrap();
    let target_id = NodeId(target.peer_id().to_string());
    let mut told = BTreeMap::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while told.len() < 2 {
            if let Heard::WaitDone {
                wait_id,
                node,
                state,
            } = heard.recv().await.expect("the rogue still listens")
            {
                assert_eq!(node, target_id);
                told.insert(wait_id, state);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("both waits should hear the job end: {told:?}"));
    assert_eq!(told["upper"], "success");
    assert_eq!(told["lower"], "success");

    target.shutdown().await.unwrap();
    submitter.shutdown().await.unwrap();
}

/// A target's batch of results sent again (its ack was lost) tells no one anything: a watcher
/// still waiting for other jobs hears of each job once, not of a "late result" that is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_sent_twice_is_news_once() {
    let dir = tempfile::tempdir().unwrap();
    let submitter = node(dir.path(), "submitter", None).await;
    let (rogue, _heard) = rogue(&submitter).await;
    wait_alive(&submitter, 2).await;
    let yaml = "- jobs:\n  - ECHO: first\n- jobs:\n  - ECHO: second\n";
    let (run_id, jobs) = submit(&submitter, yaml, dir.path(), &["rogue"]).await;
    let Reply::Stream(mut events) = submitter
        .request(ControlRequest::Watch {
            job_ids: jobs.clone(),
            output: false,
        })
        .await
    else {
        panic!("watch is a stream");
    };
    let rogue_id = NodeId(rogue.local_peer_id().to_string());
    let result = |job_id: &str| {
        JobMessage::Results(vec![JobResult {
            run_id: run_id.clone(),
            node: rogue_id.clone(),
            outcome: outcome(job_id),
        }])
    };
    // The first job's result, then the same batch again, then the second job's.
    for job in [&jobs[0], &jobs[0], &jobs[1]] {
        assert_eq!(
            send(&rogue, submitter.peer_id(), &result(job)).await,
            JobReply::Ok
        );
    }
    let mut done = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.recv().await {
            if let ControlResponse::Watch(WatchEvent::Done(record)) = event {
                done.push(record.job_id.clone());
            }
        }
    })
    .await
    .expect("the watch ended");
    assert_eq!(done, jobs, "each job is news once");
    submitter.shutdown().await.unwrap();
}

/// A target's result that names another run than its job's (a run of the same submitter the
/// target also has a part in) is not taken: taken, it would complete the job while the real
/// run's tracker waited for it, sending it again and again. With its own run id it is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_naming_another_run_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let submitter = node(dir.path(), "submitter", None).await;
    let (rogue, _heard) = rogue(&submitter).await;
    wait_alive(&submitter, 2).await;
    let (run_a, jobs_a) =
        submit(&submitter, "- jobs:\n  - ECHO: a\n", dir.path(), &["rogue"]).await;
    let (run_b, jobs_b) =
        submit(&submitter, "- jobs:\n  - ECHO: b\n", dir.path(), &["rogue"]).await;
    let rogue_id = NodeId(rogue.local_peer_id().to_string());
    let result = |run_id: &str, job_id: &str| {
        JobMessage::Results(vec![JobResult {
            run_id: run_id.into(),
            node: rogue_id.clone(),
            outcome: outcome(job_id),
        }])
    };
    // Job a's result under run b (whose tracker is open too), then job b's own: once b is
    // done, the first was handled (one actor takes them in order).
    send(&rogue, submitter.peer_id(), &result(&run_b, &jobs_a[0])).await;
    send(&rogue, submitter.peer_id(), &result(&run_b, &jobs_b[0])).await;
    assert_eq!(finished(&submitter, &jobs_b[0]).await.results.len(), 1);
    let a = job_info(&submitter, &jobs_a[0]).await;
    assert!(
        a.results.is_empty(),
        "a result naming another run was recorded: {:?}",
        a.results
    );
    // Its own run's: taken, and the job is done.
    send(&rogue, submitter.peer_id(), &result(&run_a, &jobs_a[0])).await;
    let done = finished(&submitter, &jobs_a[0]).await;
    assert_eq!(done.results.keys().collect::<Vec<_>>(), vec!["rogue"]);
    submitter.shutdown().await.unwrap();
}

/// An acknowledgement of a run the node has no trace of is answered so (it is for another
/// daemon with the node's identity, whose re-announces the target must still answer); one of
/// the node's own run is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_of_a_run_the_node_has_no_trace_of_is_answered_so() {
    let dir = tempfile::tempdir().unwrap();
    let submitter = node(dir.path(), "submitter", None).await;
    let (rogue, _heard) = rogue(&submitter).await;
    wait_alive(&submitter, 2).await;
    let (run_id, _) = submit(&submitter, "- jobs:\n  - ECHO: a\n", dir.path(), &["rogue"]).await;
    let ack = |run_id: &str| JobMessage::Ack {
        run_id: run_id.into(),
        node: NodeId(rogue.local_peer_id().to_string()),
    };
    assert_eq!(
        send(&rogue, submitter.peer_id(), &ack("no-such-run")).await,
        JobReply::UnknownRuns(vec!["no-such-run".into()])
    );
    assert_eq!(
        send(&rogue, submitter.peer_id(), &ack(&run_id)).await,
        JobReply::Ok
    );
    submitter.shutdown().await.unwrap();
}

/// The outcome of `job_id` in the next results sent to the rogue that have it.
async fn result_of(heard: &mut mpsc::Receiver<Heard>, job_id: &str) -> Outcome {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Heard::Results(results) = heard.recv().await.expect("the rogue listens")
                && let Some(r) = results.iter().find(|r| r.outcome.job_id == job_id)
            {
                return r.outcome.clone();
            }
        }
    })
    .await
    .expect("the target reported the job")
}

/// A run submitted more than a day ago (by its originator's measure, whatever the clocks say)
/// that a target does not remember is not run there (it may have run and been forgotten); it
/// is answered failed, saying why. A run of now runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_submitted_too_long_ago_is_answered_not_run() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let submitter = node(dirs[0].path(), "submitter", None).await;
    let target = node(dirs[1].path(), "target", Some(&submitter)).await;
    let (rogue, mut heard) = rogue(&submitter).await;
    wait_alive(&target, 3).await;
    let rogue_id = NodeId(rogue.local_peer_id().to_string());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // A run of the rogue's own making for `target` that touches `file`, submitted `age` ago.
    let made = |name: &str, age: Duration| {
        let file = dirs[1].path().join(name);
        let spec = match jobs::JobSpec::parse(
            "RUN",
            &format!("--skip-cache touch {}", file.display()),
            &Default::default(),
        )
        .unwrap()
        {
            jobs::ParseOutcome::Spec(s) => s,
            jobs::ParseOutcome::Help(h) => panic!("{h}"),
        };
        let job_id = format!("{name}-job");
        let run = Run {
            // The originator's clock runs a month ahead of the target's: only the age it
            // measured itself counts.
            created_unix_ms: now_ms + 30 * 24 * 3_600_000,
            age_ms: age.as_millis() as u64,
            ..Run::new(
                &format!("{name}-run"),
                rogue_id.clone(),
                vec![coordination::Parent {
                    parent_id: format!("{name}-parent"),
                    fingerprint: spec.fingerprint(),
                    queue: jobs::executor::QueueKind::Sync,
                    targets: vec![NodeId(target.peer_id().to_string())],
                    target_keys: Default::default(),
                    jobs: vec![coordination::JobEntry {
                        job_id: job_id.clone(),
                        fingerprint: spec.fingerprint(),
                        spec,
                        only_on: None,
                    }],
                }],
            )
        };
        (run, job_id, file)
    };
    for (name, age, runs) in [
        ("old", Duration::from_secs(25 * 3600), false),
        ("fresh", Duration::from_secs(5), true),
    ] {
        let (run, job_id, file) = made(name, age);
        assert_eq!(
            send(
                &rogue,
                target.peer_id(),
                &JobMessage::Deliver(Box::new(run))
            )
            .await,
            JobReply::Ok
        );
        let outcome = result_of(&mut heard, &job_id).await;
        assert_eq!(outcome.state.is_ok(), runs, "{name}: {outcome:?}");
        assert_eq!(file.exists(), runs, "{name}: {outcome:?}");
        if !runs {
            assert!(
                outcome
                    .info
                    .starts_with("refused: submitted 25 h ago, and target forgets"),
                "{outcome:?}"
            );
        }
    }
    target.shutdown().await.unwrap();
    submitter.shutdown().await.unwrap();
}

/// A run of the rogue's own (it is the originator, as it must be) with one job `job_id` of
/// `cmd` for `target`.
fn rogue_run(rogue: &MeshHandle, target: &Node, run_id: &str, job_id: &str, cmd: &str) -> Run {
    use coordination::{JobEntry, Parent, TargetKeys};
    let spec = match jobs::JobSpec::parse("RUN", cmd, &Default::default()).expect("it parses") {
        jobs::ParseOutcome::Spec(s) => s,
        jobs::ParseOutcome::Help(h) => panic!("{h}"),
    };
    let mut run = Run::new(
        run_id,
        NodeId(rogue.local_peer_id().to_string()),
        vec![Parent {
            parent_id: "rogue-parent".into(),
            fingerprint: jobs::Fingerprint([7; 32]),
            queue: jobs::executor::QueueKind::Async,
            targets: vec![NodeId(target.peer_id().to_string())],
            target_keys: TargetKeys::default(),
            jobs: vec![JobEntry {
                job_id: job_id.into(),
                fingerprint: spec.fingerprint(),
                spec,
                only_on: None,
            }],
        }],
    );
    run.originator_start = 1;
    run
}

/// A member reuses the id of another submitter's job still running on a target, in a run of
/// its own: the target drops that run (before, it sent the other job's result, output and
/// all, to the member, and the submitter never heard of it); and a run of the member's under
/// the other run's id is dropped too (it would have turned the submitter's copies into
/// resends of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_take_over_another_submitters_job_or_run() {
    let Trio {
        dirs,
        submitter,
        target,
        rogue,
        mut heard,
    } = trio().await;
    // The job runs on the target (until the test lets it end) while the member sends its runs.
    let (started, gate) = (dirs[1].path().join("started"), dirs[1].path().join("gate"));
    let yaml = format!(
        "- jobs:\n  - RUN: --skip-cache touch {}; while [ ! -e {} ]; do sleep 0.1; done; \
         echo victim-output\n",
        started.display(),
        gate.display()
    );
    let (run_id, job_ids) = submit(&submitter, &yaml, dirs[0].path(), &["target"]).await;
    let job_id = job_ids[0].clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        assert!(
            Instant::now() < deadline,
            "the job never started on the target"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (rogue_run_id, rogue_job_id, why) in [
        (
            "rogue-run-0001",
            job_id.as_str(),
            "a job id of it is another run's job's here",
        ),
        (
            &run_id,
            "rogue-job-0001",
            "its run id is another submitter's run's here",
        ),
    ] {
        let run = rogue_run(
            &rogue,
            &target,
            rogue_run_id,
            rogue_job_id,
            "echo rogue-own",
        );
        // Refused, not acknowledged: its sender does not take it for queued.
        assert_eq!(
            send(
                &rogue,
                target.peer_id(),
                &JobMessage::Deliver(Box::new(run)),
            )
            .await,
            JobReply::Refused(format!("run dropped: {why}"))
        );
    }
    std::fs::write(&gate, "").unwrap();
    let record = finished(&submitter, &job_id).await;
    let result = &record.results["target"];
    assert_eq!(result.state, ResultState::Success, "{record:?}");
    assert_eq!(result.stdout, "victim-output", "{record:?}");
    // Nothing of either run reaches the member: the first was dropped, the second too.
    let got = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Some(Heard::Results(rs)) = heard.recv().await {
                return rs;
            }
        }
    })
    .await;
    assert!(got.is_err(), "the member was sent results: {got:?}");
    target.shutdown().await.unwrap();
    submitter.shutdown().await.unwrap();
}

/// A member sends live output for a job it is no target of, in its own name and in the
/// target's: a client watching the job's output sees only the target's own lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_speak_in_another_jobs_live_output() {
    use coordination::OutputBatch;
    use jobs::components::{OutputLine, OutputStream};
    let Trio {
        dirs,
        submitter,
        target,
        rogue,
        heard: _heard,
    } = trio().await;
    // The job says its line, then runs until the test lets it end, once the forged lines
    // were sent.
    let gate = dirs[1].path().join("gate");
    let yaml = format!(
        "- jobs:\n  - RUN: --skip-cache echo real; while [ ! -e {} ]; do sleep 0.1; done\n",
        gate.display()
    );
    let (_, job_ids) = submit_run(&submitter, &yaml, dirs[0].path(), &["target"], true).await;
    let job_id = job_ids[0].clone();
    let Reply::Stream(mut events) = submitter
        .request(ControlRequest::Watch {
            job_ids: vec![job_id.clone()],
            output: true,
        })
        .await
    else {
        panic!("watch is a stream");
    };
    // The watch shows the job's output live: the target's own line comes while it runs.
    let mut shown = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.recv().await {
            match event {
                ControlResponse::Watch(WatchEvent::Output { line, node, .. }) => {
                    let real = line.text == "real\n";
                    shown.push((node, line.text));
                    if real {
                        break;
                    }
                }
                ControlResponse::Watch(WatchEvent::Done(_)) | ControlResponse::WatchEnd => {
                    panic!("the job ended before the test let it: {shown:?}")
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the target's own line was not shown live: {shown:?}"));
    let rogue_id = NodeId(rogue.local_peer_id().to_string());
    let target_id = NodeId(target.peer_id().to_string());
    let batches = [rogue_id, target_id]
        .into_iter()
        .map(|node| OutputBatch {
            job_id: job_id.clone(),
            node,
            seq: 0,
            lines: vec![OutputLine {
                stream: OutputStream::Stdout,
                offset: 0,
                text: "forged\n".into(),
            }],
        })
        .collect();
    send(&rogue, submitter.peer_id(), &JobMessage::Output(batches)).await;
    std::fs::write(&gate, "").unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.recv().await {
            match event {
                ControlResponse::Watch(WatchEvent::Output { line, node, .. }) => {
                    shown.push((node, line.text))
                }
                ControlResponse::Watch(WatchEvent::Done(_)) | ControlResponse::WatchEnd => break,
                _ => {}
            }
        }
    })
    .await
    .expect("the job finished in time");
    assert!(
        shown.iter().all(|(_, text)| text != "forged\n"),
        "a forged line was shown: {shown:?}"
    );
    target.shutdown().await.unwrap();
    submitter.shutdown().await.unwrap();
}

/// Files a member carries inside a run are kept only within the limits a submitter sends
/// them in (16 KiB a file, 256 KiB in all): a larger one is left out (its jobs would fetch it
/// in chunks), not written on the target's job thread however large the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_files_past_the_limits_are_left_out() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let submitter = node(dirs[0].path(), "submitter", None).await;
    let target = node(dirs[1].path(), "target", Some(&submitter)).await;
    let (rogue, mut heard) = rogue(&submitter).await;
    wait_alive(&target, 3).await;
    let blob = |byte: u8, len: usize| {
        let data = vec![byte; len];
        coordination::InlineBlob {
            hash: jobs::Fingerprint(*blake3::hash(&data).as_bytes()),
            data,
        }
    };
    // Within the limits; one file over 16 KiB; then small ones past 256 KiB in all.
    let mut inline = vec![blob(1, 1024), blob(2, 64 * 1024)];
    inline.extend((0..20).map(|i| blob(10 + i, 16 * 1024)));
    let mut run = rogue_run(
        &rogue,
        &target,
        "inline-run",
        "inline-job",
        "--skip-cache true",
    );
    run.inline = inline.clone();
    assert_eq!(
        send(
            &rogue,
            target.peer_id(),
            &JobMessage::Deliver(Box::new(run))
        )
        .await,
        JobReply::Ok
    );
    assert!(result_of(&mut heard, "inline-job").await.state.is_ok());
    let kept =
        |b: &coordination::InlineBlob| dirs[1].path().join("blobs").join(b.hash.to_hex()).exists();
    assert!(kept(&inline[0]));
    assert!(!kept(&inline[1]), "a file over 16 KiB was kept");
    // 1 KiB, then 16 KiB files while the total stays within 256 KiB (the one over 16 KiB
    // counts in the total too: it was carried).
    let within = inline[2..].iter().filter(|b| kept(b)).count();
    assert_eq!(
        within,
        (256 - 1 - 64) / 16,
        "{within} of the small files kept"
    );
    target.shutdown().await.unwrap();
    submitter.shutdown().await.unwrap();
}

/// A member a node does not take jobs from (`--allow-submitter`) gets its runs refused, each
/// refusal stored and answered; once the node holds the budget's worth of that member's
/// refused jobs (counted by job, however they are split into runs), its further runs are
/// dropped, so it cannot fill the node's disk with runs sent only to be refused. A run
/// refused before is still answered when sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_jobs_past_the_budget_are_dropped() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let submitter = node(dirs[0].path(), "submitter", None).await;
    let mut cfg = NodeConfig::in_memory(dirs[1].path().to_path_buf(), "target");
    cfg.heartbeat_interval = Duration::from_secs(1);
    let token = submitter.join_token().clone();
    cfg.bootstrap = token.peers.clone();
    cfg.mesh_key_choice = MeshKeyChoice::Key(token.mesh_key.expect("mesh has a key"));
    cfg.allow_submitters = vec![submitter.peer_id()];
    let target = Node::start(cfg).await.expect("node starts");
    let (rogue, mut heard) = rogue(&submitter).await;
    wait_alive(&target, 3).await;
    // The refusals' answers are taken as they come (a rogue that stopped listening would hold
    // the target's result sends up).
    let (first_tx, first) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let outcome = result_of(&mut heard, "refused-run-0-job-0").await;
        let _ = first_tx.send(outcome);
        while heard.recv().await.is_some() {}
    });
    // Runs of 1 000 jobs each: the budget (10 000 jobs) holds ten of them.
    let many = |i: usize| {
        let mut run = rogue_run(
            &rogue,
            &target,
            &format!("refused-run-{i}"),
            &format!("refused-run-{i}-job-0"),
            "true",
        );
        let job = run.parents[0].jobs[0].clone();
        run.parents[0].jobs = (0..1000)
            .map(|j| coordination::JobEntry {
                job_id: format!("refused-run-{i}-job-{j}"),
                ..job.clone()
            })
            .collect();
        run
    };
    for i in 0..10 {
        assert_eq!(
            send(
                &rogue,
                target.peer_id(),
                &JobMessage::Deliver(Box::new(many(i)))
            )
            .await,
            JobReply::Ok,
            "run {i}"
        );
    }
    let outcome = first.await.expect("the target reported the first run");
    assert!(
        outcome
            .info
            .starts_with("refused: target takes jobs only from"),
        "{outcome:?}"
    );
    let reply = send(
        &rogue,
        target.peer_id(),
        &JobMessage::Deliver(Box::new(many(10))),
    )
    .await;
    assert_eq!(
        reply,
        JobReply::Refused("run dropped: too many jobs of its submitter refused here".into())
    );
    // A resend of a run refused before is answered as before.
    assert_eq!(
        send(
            &rogue,
            target.peer_id(),
            &JobMessage::Deliver(Box::new(many(7)))
        )
        .await,
        JobReply::Ok
    );
    target.shutdown().await.unwrap();
    submitter.shutdown().await.unwrap();
}
