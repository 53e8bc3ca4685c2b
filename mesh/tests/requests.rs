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

/// Waits until `node` sees `peer` alive.
async fn wait_alive(node: &mesh::MeshHandle, peer: mesh::PeerId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !is_alive(node, peer).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{peer} never seen alive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn is_alive(node: &mesh::MeshHandle, peer: mesh::PeerId) -> bool {
    // A node whose loop stopped does not answer at all.
    let status = tokio::time::timeout(Duration::from_secs(5), node.status())
        .await
        .expect("the node's loop answers")
        .expect("status");
    status
        .members
        .iter()
        .any(|m| m.presence.peer_id == peer && m.state == MemberState::Alive)
}

/// A node whose job handling takes no more (stalled, or far behind) stays a member: what it
/// cannot take is dropped (gossip, which its originator sends again directly) or refused as
/// busy (a job message, which its sender sends again), instead of stopping the mesh's loop,
/// its heartbeats with it, until its peers took it for gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_job_handling_is_stalled_stays_alive_and_says_busy() {
    let base = 7_400_000 + u64::from(std::process::id() % 10_000) * 10;
    // Heartbeats every second (expiry after 3 s): a loaded machine's second of delay in the
    // three swarms' loops is not taken for the stall this test is about.
    let config = |name: &str, port: u64, bootstrap: Vec<Multiaddr>| {
        let mut cfg = config(name, port, bootstrap);
        cfg.heartbeat_interval = Duration::from_secs(1);
        cfg
    };
    // Its events are never read (nor dropped: the receiver lives to the end).
    let stalled = mesh::start(config("stalled", base, vec![]))
        .await
        .expect("the stalled node starts");
    let stalled_id = stalled.handle.local_peer_id();
    let addr = mesh::multiaddr_with_peer(format!("/memory/{base}").parse().unwrap(), stalled_id);
    let mut asker = mesh::start(config("asker", base + 1, vec![addr]))
        .await
        .expect("the asker starts");
    let asker_id = asker.handle.local_peer_id();
    tokio::spawn(async move { while asker.events.recv().await.is_some() {} });
    wait_alive(&asker.handle, stalled_id).await;
    wait_alive(&stalled.handle, asker_id).await;
    // More job messages gossiped than its queue of events holds, each its own.
    let mut published = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while published < 600 {
        if asker
            .handle
            .publish_jobs(format!("run {published}").into_bytes())
            .await
            .is_ok()
        {
            published += 1;
        } else {
            assert!(tokio::time::Instant::now() < deadline, "nothing gossiped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A job message sent directly is refused at once, as busy.
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        asker.handle.request_job(stalled_id, b"a run".to_vec()),
    )
    .await
    .expect("answered at once");
    match answer {
        Err(e) => assert!(e.to_string().contains("busy"), "{e}"),
        Ok(reply) => panic!("taken: {reply:?}"),
    }
    // A node joins meanwhile: a membership change the stalled node's queue has no room for.
    let addr = mesh::multiaddr_with_peer(format!("/memory/{base}").parse().unwrap(), stalled_id);
    let mut late = mesh::start(config("late", base + 2, vec![addr]))
        .await
        .expect("the late node starts");
    let late_id = late.handle.local_peer_id();
    let late_handle = late.handle.clone();
    tokio::spawn(async move { while late.events.recv().await.is_some() {} });
    wait_alive(&stalled.handle, late_id).await;
    // Heartbeats go on: over many heartbeat intervals (three without one expire it), the
    // stalled node is alive all along.
    for _ in 0..30 {
        assert!(
            is_alive(&asker.handle, stalled_id).await,
            "the stalled node was taken for gone"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(is_alive(&late_handle, stalled_id).await);
    drop(stalled.events);
    for node in [&asker.handle, &late_handle, &stalled.handle] {
        let _ = node.shutdown().await;
    }
}
