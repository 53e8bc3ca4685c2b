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
    let deadline = Instant::now() + Duration::from_secs(5);
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
            "leave not seen by every node within 5 s"
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
