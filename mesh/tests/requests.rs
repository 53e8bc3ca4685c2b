//! Requests to members this node has no connection to.
//!
//! A node keeps a few connections; a result, an ack or a chunk often goes to a member it is not
//! connected to. The mesh dials that member at the addresses in its membership table (not
//! through libp2p's own address cache, which holds only 100 peers), so this works in a mesh of
//! any size. Here two nodes that each keep a single connection (to a common bootstrap peer)
//! exchange a request.

use std::{collections::BTreeMap, time::Duration};

use mesh::{Keypair, LocalIdentity, MemberState, MeshConfig, MeshEvent, Multiaddr, TransportKind};

fn config(name: &str, port: u64, bootstrap: Vec<Multiaddr>) -> MeshConfig {
    let identity = LocalIdentity {
        name: name.into(),
        machine_id: format!("machine-{name}"),
        version: "test".into(),
        labels: BTreeMap::new(),
        host_uptime_at_start: Duration::ZERO,
    };
    let mut cfg = MeshConfig::new(Keypair::generate_ed25519(), TransportKind::Memory, identity);
    cfg.listen = vec![format!("/memory/{port}").parse().expect("a memory address")];
    cfg.bootstrap = bootstrap;
    cfg.heartbeat_interval = Duration::from_millis(500);
    // One connection each: the two leaves reach each other only through a dial of their own.
    cfg.target_peers = 1;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reaches_a_member_without_a_connection() {
    let base = 7_300_000 + u64::from(std::process::id() % 10_000) * 10;
    let hub = mesh::start(config("hub", base, vec![]))
        .await
        .expect("hub starts");
    let hub_addr = mesh::multiaddr_with_peer(
        format!("/memory/{base}").parse().unwrap(),
        hub.handle.local_peer_id(),
    );
    let a = mesh::start(config("a", base + 1, vec![hub_addr.clone()]))
        .await
        .expect("a starts");
    let mut b = mesh::start(config("b", base + 2, vec![hub_addr]))
        .await
        .expect("b starts");
    let b_id = b.handle.local_peer_id();

    // `a` learns `b` (gossip or table sync through the hub) without connecting to it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = a.handle.status().await.expect("status of a");
        let knows_b = status
            .members
            .iter()
            .any(|m| m.presence.peer_id == b_id && m.state == MemberState::Alive);
        if knows_b {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a never saw b alive: {:?}",
            status.members
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `b` answers whatever job request it gets.
    let b_handle = b.handle.clone();
    let answering = tokio::spawn(async move {
        while let Some(event) = b.events.recv().await {
            if let MeshEvent::JobRequest { data, token, .. } = event {
                let mut answer = b"echo: ".to_vec();
                answer.extend(data);
                b_handle.reply(token, answer).await.expect("b replies");
            }
        }
    });

    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        a.handle.request_job(b_id, b"ping".to_vec()),
    )
    .await
    .expect("the request is answered in time")
    .expect("the request succeeds");
    assert_eq!(answer, b"echo: ping");

    answering.abort();
    for node in [&a.handle, &hub.handle] {
        let _ = node.shutdown().await;
    }
}
