//! Many full nodes in one process over libp2p's memory transport.

use std::time::{Duration, Instant};

use node::{Node, NodeConfig, config::MeshKeyChoice};

/// Starts `n` nodes: the first creates the mesh, the others join with its token.
async fn start_mesh(n: usize, dirs: &[tempfile::TempDir]) -> Vec<Node> {
    let mut cfg = NodeConfig::in_memory(dirs[0].path().to_path_buf(), "node-0");
    cfg.heartbeat_interval = Duration::from_secs(1);
    let first = Node::start(cfg).await.expect("first node starts");
    let token = first.join_token().clone();
    let mut nodes = vec![first];
    for (i, dir) in dirs.iter().enumerate().take(n).skip(1) {
        let mut cfg = NodeConfig::in_memory(dir.path().to_path_buf(), &format!("node-{i}"));
        cfg.heartbeat_interval = Duration::from_secs(1);
        cfg.bootstrap = token.peers.clone();
        cfg.mesh_key_choice = MeshKeyChoice::Key(token.mesh_key.expect("mesh has a key"));
        nodes.push(Node::start(cfg).await.expect("node starts"));
    }
    nodes
}

async fn alive_counts(nodes: &[Node]) -> Vec<usize> {
    let mut counts = Vec::new();
    for node in nodes {
        let status = node.status().await.expect("status");
        counts.push(status.nodes.iter().filter(|r| r.state == "alive").count());
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_on_memory_transport_all_see_each_other() {
    let dirs: Vec<_> = (0..10).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_mesh(10, &dirs).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut counts = alive_counts(&nodes).await;
    while counts.iter().any(|&c| c != 10) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        counts = alive_counts(&nodes).await;
    }
    assert_eq!(counts, vec![10; 10], "alive members seen by each node");

    // Every node sees every name exactly once, with the peer id it really has.
    let expected: std::collections::BTreeMap<String, String> = nodes
        .iter()
        .map(|n| (n.name().to_string(), n.peer_id().to_string()))
        .collect();
    for node in &nodes {
        let status = node.status().await.unwrap();
        let seen: std::collections::BTreeMap<String, String> = status
            .nodes
            .iter()
            .map(|r| (r.name.clone(), r.peer_id.clone()))
            .collect();
        assert_eq!(seen, expected, "table of {}", node.name());
        assert_eq!(status.nodes.iter().filter(|r| r.is_self).count(), 1);
    }

    // A clean shutdown shows as `left` on the others.
    let mut nodes = nodes;
    let leaver = nodes.pop().unwrap();
    let leaver_id = leaver.peer_id().to_string();
    leaver.shutdown().await.unwrap();
    // (`left` comes only from its goodbye: silence makes a member `expired`.)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut left_everywhere = true;
        for node in &nodes {
            let status = node.status().await.unwrap();
            let row = status
                .nodes
                .iter()
                .find(|r| r.peer_id == leaver_id)
                .unwrap();
            left_everywhere &= row.state == "left";
        }
        if left_everywhere {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leave not seen by every node within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_mesh_key_never_joins() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_mesh(2, &dirs).await;
    // The two know each other before the intruder comes: the check below is of it alone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive_counts(&nodes).await.iter().any(|&c| c != 2) {
        assert!(Instant::now() < deadline, "mesh did not form");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = nodes[0].join_token().clone();
    let mut cfg = NodeConfig::in_memory(dirs[2].path().to_path_buf(), "intruder");
    cfg.heartbeat_interval = Duration::from_secs(1);
    cfg.bootstrap = token.peers.clone();
    // No key given: it makes its own mesh key, which differs.
    let intruder = Node::start(cfg).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    for node in &nodes {
        let status = node.status().await.unwrap();
        assert!(
            status.nodes.iter().all(|r| r.name != "intruder"),
            "{}",
            node.name()
        );
        assert_eq!(status.nodes.len(), 2);
    }
    assert_eq!(intruder.status().await.unwrap().nodes.len(), 1);
    intruder.shutdown().await.unwrap();
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// A node whose database cannot be opened fails to start before it joins: the mesh never
/// hears of it (it would come alive on every node, then go).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_open_its_database_never_joins() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_mesh(1, &dirs).await;
    let token = nodes[0].join_token().clone();
    std::fs::write(dirs[1].path().join("node.redb"), b"not a database").unwrap();
    let mut cfg = NodeConfig::in_memory(dirs[1].path().to_path_buf(), "broken");
    cfg.heartbeat_interval = Duration::from_secs(1);
    cfg.bootstrap = token.peers.clone();
    cfg.mesh_key_choice = MeshKeyChoice::Key(token.mesh_key.expect("mesh has a key"));
    let Err(e) = Node::start(cfg).await else {
        panic!("a node with a broken database started");
    };
    assert!(e.to_string().contains("node.redb"), "{e}");
    // It got no further: a start numbers itself just before it joins.
    assert!(!dirs[1].path().join("incarnation").exists());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = nodes[0].status().await.unwrap();
    assert!(
        status.nodes.iter().all(|r| r.name != "broken"),
        "{:?}",
        status.nodes
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// Submits `VERB inline` as an exec on `node` to `targets` and waits for every result.
/// Submits one `VERB inline` job to `targets` through `node`'s control API; returns its id.
async fn submit_one(
    node: &Node,
    verb: &str,
    inline: &str,
    targets: &[&str],
    stream: bool,
) -> String {
    use node::control::{
        ControlRequest, ControlResponse, Reply, Submission, SubmittedJob, SubmittedParent,
    };
    let spec = match jobs::JobSpec::parse(verb, inline, &Default::default()).unwrap() {
        jobs::ParseOutcome::Spec(s) => s,
        jobs::ParseOutcome::Help(h) => panic!("{h}"),
    };
    let submission = Submission {
        parents: vec![SubmittedParent {
            name: None,
            origin: None,
            targets: None,
            is_async: false,
            fingerprint: jobs::Fingerprint([0; 32]),
            jobs: vec![SubmittedJob {
                spec,
                definition: format!("{verb}: {inline}"),
            }],
        }],
        targets: targets.iter().map(|t| t.to_string()).collect(),
        restrict: vec![],
        ignore_cache: false,
        force_async: false,
        stream,
        exec: true,
    };
    match node.request(ControlRequest::Submit(submission)).await {
        Reply::One(ControlResponse::Submitted(r)) => r.jobs[0].job_id.clone(),
        Reply::One(other) => panic!("submit: {other:?}"),
        Reply::Stream(_) => panic!("submit streamed"),
    }
}

async fn exec_and_wait(
    node: &Node,
    verb: &str,
    inline: &str,
    targets: &[&str],
) -> node::records::JobRecord {
    use node::control::{ControlRequest, ControlResponse, Reply, WatchEvent};
    let job_id = submit_one(node, verb, inline, targets, false).await;
    let Reply::Stream(mut rx) = node
        // With the outputs: the Done record carries them only for a client that shows them.
        .request(ControlRequest::Watch {
            job_ids: vec![job_id],
            output: true,
        })
        .await
    else {
        panic!("watch did not stream");
    };
    let mut record = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("watch timed out")
    {
        match event {
            ControlResponse::Watch(WatchEvent::Done(r)) => record = Some(*r),
            ControlResponse::WatchEnd => break,
            other => panic!("{other:?}"),
        }
    }
    record.expect("job done")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_on_every_target_from_any_node() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_mesh(3, &dirs).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive_counts(&nodes).await.iter().any(|&c| c != 3) {
        assert!(Instant::now() < deadline, "mesh did not form");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // From a node that is not the first, to all three.
    let record = exec_and_wait(
        &nodes[1],
        "RUN",
        "echo hello from $(hostname)",
        &["node-0", "node-1", "node-2"],
    )
    .await;
    assert_eq!(record.results.len(), 3, "{record:?}");
    for (name, r) in &record.results {
        assert_eq!(
            r.state,
            jobs::executor::ResultState::Success,
            "{name}: {r:?}"
        );
        assert!(r.stdout.starts_with("hello from"), "{name}: {r:?}");
    }
    assert_eq!(record.status(), node::records::JobStatus::Success);
    // The same job again is skipped everywhere (cached success).
    let again = exec_and_wait(
        &nodes[2],
        "RUN",
        "echo hello from $(hostname)",
        &["node-0", "node-1", "node-2"],
    )
    .await;
    assert!(
        again
            .results
            .values()
            .all(|r| r.state == jobs::executor::ResultState::Skipped),
        "{again:?}"
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_for_many_targets_is_gossiped_and_acknowledged() {
    // Five targets: more than the originator delivers directly, so the run goes by gossip and
    // each target acknowledges it over request-response.
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_mesh(5, &dirs).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive_counts(&nodes).await.iter().any(|&c| c != 5) {
        assert!(Instant::now() < deadline, "mesh did not form");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all: Vec<String> = (0..5).map(|i| format!("node-{i}")).collect();
    let names: Vec<&str> = all.iter().map(String::as_str).collect();
    let record = exec_and_wait(&nodes[3], "RUN", "--skip-cache echo gossiped", &names).await;
    assert_eq!(record.results.len(), 5, "{record:?}");
    assert!(
        record.results.values().all(|r| r.stdout == "gossiped"),
        "{record:?}"
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_printed_before_the_client_watches_is_kept_for_it() {
    use node::control::{ControlRequest, ControlResponse, Reply, WatchEvent};
    let dirs: Vec<_> = (0..1).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_mesh(1, &dirs).await;
    let printed = dirs[0].path().join("printed");
    let job_id = submit_one(
        &nodes[0],
        "RUN",
        &format!(
            "--skip-cache echo early; touch {}; sleep 3; echo late",
            printed.display()
        ),
        &["node-0"],
        true,
    )
    .await;
    // The client is slow to watch: the job has printed its first line by then (and the node
    // has had a moment to read it).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !printed.exists() {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let Reply::Stream(mut rx) = nodes[0]
        .request(ControlRequest::Watch {
            job_ids: vec![job_id],
            output: true,
        })
        .await
    else {
        panic!("watch did not stream");
    };
    let mut lines = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("watch timed out")
    {
        match event {
            ControlResponse::Watch(WatchEvent::Output { line, .. }) => {
                lines.push((line.offset, line.text))
            }
            ControlResponse::Watch(WatchEvent::Done(_)) => {}
            ControlResponse::WatchEnd => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        lines,
        [(0, "early\n".to_string()), (6, "late\n".to_string())]
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// Opens the node's database once the stopped node has let go of it (its aborted tasks drop
/// what they hold when next polled).
async fn reopen_store(dir: &std::path::Path) -> node::store::Store {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match node::store::Store::open(&dir.join("node.redb")) {
            Ok(store) => return store,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A run kept for a restart whose acceptance never reached the disk (a crash between the two
/// writes) is dropped when the node starts again: nothing would ever ask for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_run_without_its_acceptance_is_dropped_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut cfg = NodeConfig::in_memory(dir.path().to_path_buf(), "node-0");
        cfg.heartbeat_interval = Duration::from_secs(1);
        Node::start(cfg)
    };
    start()
        .await
        .expect("node starts")
        .shutdown()
        .await
        .unwrap();
    {
        let store = reopen_store(dir.path()).await;
        store.put_accepted_run(&coordination::Run::new(
            "orphan",
            coordination::NodeId("someone".into()),
            Vec::new(),
        ));
        store.flush();
        assert_eq!(store.accepted_run_ids(), vec!["orphan".to_string()]);
    }
    // The store's writer thread lets go of the database once its channel closes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        match start().await {
            Ok(node) => break node,
            Err(e) if Instant::now() > deadline => panic!("the node does not start again: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    // The restore runs as the node starts; the shutdown waits for its writes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.shutdown().await.unwrap();
    let store = reopen_store(dir.path()).await;
    assert!(store.accepted_run_ids().is_empty());
}

/// Starts `n` nodes as [`start_mesh`] does, the last with `budget` (the others with the
/// default one, which none of them reaches).
async fn start_mesh_with_budget(
    n: usize,
    dirs: &[tempfile::TempDir],
    budget: mesh::network::ConnectionBudget,
) -> Vec<Node> {
    let config = |i: usize| {
        let mut cfg = NodeConfig::in_memory(dirs[i].path().to_path_buf(), &format!("node-{i}"));
        cfg.heartbeat_interval = Duration::from_secs(1);
        if i == n - 1 {
            cfg.connection_budget = budget;
        }
        cfg
    };
    let first = Node::start(config(0)).await.expect("first node starts");
    let token = first.join_token().clone();
    let mut nodes = vec![first];
    for i in 1..n {
        let mut cfg = config(i);
        cfg.bootstrap = token.peers.clone();
        cfg.mesh_key_choice = MeshKeyChoice::Key(token.mesh_key.expect("mesh has a key"));
        nodes.push(Node::start(cfg).await.expect("node starts"));
    }
    nodes
}

async fn connected_peers(node: &Node) -> usize {
    node.status().await.expect("status").local.connected_peers
}

/// The connections a submitter opened to every target of a run are closed once idle, down to
/// the connection budget (gossipsub alone would keep them for good), and the next run on every
/// node still gets every result: the peers closed are dialled again when a request needs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_closes_idle_connections_over_its_budget_and_still_reaches_every_node() {
    const NODES: usize = 16;
    let budget = mesh::network::ConnectionBudget {
        // As low as it goes: the connections maintenance keeps to random members (a lower
        // budget counts as this).
        max_peers: mesh::tuning::DEFAULT_TARGET_PEERS,
        // Long enough that no connection of the run is trimmed before the count after it,
        // however far apart the targets report on a loaded machine.
        idle_after: Duration::from_secs(10),
    };
    let dirs: Vec<_> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_mesh_with_budget(NODES, &dirs, budget).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive_counts(&nodes).await.iter().any(|&c| c != NODES) {
        assert!(Instant::now() < deadline, "mesh did not form");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all: Vec<String> = (0..NODES).map(|i| format!("node-{i}")).collect();
    let names: Vec<&str> = all.iter().map(String::as_str).collect();
    let submitter = &nodes[NODES - 1];

    let first = exec_and_wait(submitter, "RUN", "--skip-cache echo first", &names).await;
    assert_eq!(first.results.len(), NODES, "{first:?}");
    assert!(
        first.results.values().all(|r| r.stdout == "first"),
        "{first:?}"
    );
    // Every target sent its result to the submitter: each was connected to it, more than its
    // budget allows (only the submitter closes connections: the others keep every one).
    let after_run = connected_peers(submitter).await;
    assert!(
        after_run > budget.max_peers,
        "the run left the submitter connected to {after_run} peers, within its budget of {}",
        budget.max_peers
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = vec![after_run];
    loop {
        let now_connected = connected_peers(submitter).await;
        if seen.last() != Some(&now_connected) {
            seen.push(now_connected);
        }
        if now_connected <= budget.max_peers {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the submitter stays connected to {now_connected} peers, over its budget of {} \
             (connected peers seen: {seen:?})",
            budget.max_peers
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let second = exec_and_wait(submitter, "RUN", "--skip-cache echo second", &names).await;
    assert_eq!(second.results.len(), NODES, "{second:?}");
    assert!(
        second.results.values().all(|r| r.stdout == "second"),
        "{second:?}"
    );
    assert_eq!(second.status(), node::records::JobStatus::Success);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
