//! A host that is not a member of the mesh.
//!
//! In an open mesh (no mesh key) any host that can reach a node's address can connect to it
//! and speak its protocols. Job messages and file requests are taken only from members,
//! nodes whose presence the node has heard: a stranger that connects but never announces a
//! presence is refused its job requests ("not a member"), its gossiped runs are dropped, and
//! its file requests are answered "unknown", and its table syncs are refused. The stranger here is a bare libp2p swarm with
//! only the protocols it needs (the job protocol, the file protocol, gossip and ping); a
//! member built from the mesh crate sends the same messages, and those are taken, so each
//! test shows what it checks can fail. One full node runs in this process on TCP over
//! loopback, as a host on the network would reach it.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use coordination::{Gossip, JobEntry, JobMessage, JobReply, NodeId, Parent, Run, TargetKeys};
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, gossipsub,
    identity::Keypair,
    noise, ping,
    request_response::{self, OutboundRequestId, ProtocolSupport},
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};
use mesh::{
    BLOB_PROTOCOL, CTL_PROTOCOL, JOBS_TOPIC, LocalIdentity, MeshConfig, MeshEvent, MeshHandle,
    TransportKind,
    codec::{BlobCodec, CborCodec},
    wire::{self, BlobRequest, BlobResponse, CtlRequest, CtlResponse, MAX_CTL_BYTES},
};
use node::{
    Node, NodeConfig,
    config::MeshKeyChoice,
    control::{ControlRequest, ControlResponse, Reply, WatchEvent},
};
use tokio::sync::{mpsc, oneshot};

const LIMIT: usize = MAX_CTL_BYTES;
/// How long the file a member's job creates is given to appear.
const RUNS_WITHIN: Duration = Duration::from_secs(20);
/// How long after the member's runs ran, sent after the stranger's, the stranger's must
/// still not have.
const NOT_RUN_AFTER: Duration = Duration::from_secs(2);

/// The protocols the stranger speaks, as any libp2p host could.
#[derive(NetworkBehaviour)]
struct StrangerBehaviour {
    ctl: request_response::Behaviour<CborCodec<CtlRequest, CtlResponse>>,
    blob: request_response::Behaviour<BlobCodec>,
    gossipsub: gossipsub::Behaviour,
    /// Answers the node's pings, which would otherwise close the connection.
    ping: ping::Behaviour,
}

impl StrangerBehaviour {
    fn new(key: &Keypair) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossipsub::Config::default(),
        )?;
        Ok(StrangerBehaviour {
            ctl: request_response::Behaviour::with_codec(
                CborCodec::new(LIMIT, LIMIT),
                [(CTL_PROTOCOL, ProtocolSupport::Outbound)],
                request_response::Config::default(),
            ),
            blob: request_response::Behaviour::with_codec(
                BlobCodec,
                [(BLOB_PROTOCOL, ProtocolSupport::Outbound)],
                request_response::Config::default(),
            ),
            gossipsub,
            ping: ping::Behaviour::default(),
        })
    }
}

/// What the test asks the stranger's swarm to do; each answer comes back on its `reply`.
enum Order {
    /// A request on the control protocol (a job message, a table sync).
    Ctl {
        to: PeerId,
        request: CtlRequest,
        reply: oneshot::Sender<Result<CtlResponse, String>>,
    },
    Chunk {
        to: PeerId,
        request: BlobRequest,
        reply: oneshot::Sender<Result<BlobResponse, String>>,
    },
    /// Publishes on the jobs topic; fails while no peer there is known to subscribe to it.
    Gossip {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// What the stranger has received on the jobs topic (it subscribes to it).
    Received {
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
}

/// A host connected to a node that never announces a presence: the node has no row of it.
/// Its swarm runs in a task of its own, which owns the requests under way.
struct Stranger {
    peer_id: PeerId,
    /// Its key: with it, it could sign a presence and so become a member.
    key: Keypair,
    orders: mpsc::Sender<Order>,
}

impl Stranger {
    /// Dials `node` at `addr` and returns once connected.
    async fn connect(addr: Multiaddr, node: PeerId) -> Stranger {
        let key = Keypair::generate_ed25519();
        let mut swarm = SwarmBuilder::with_existing_identity(key.clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("the stranger's transport")
            .with_behaviour(StrangerBehaviour::new)
            .expect("the stranger's protocols")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        let peer_id = *swarm.local_peer_id();
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&gossipsub::IdentTopic::new(JOBS_TOPIC))
            .expect("the stranger subscribes to the jobs topic");
        swarm
            .dial(mesh::multiaddr_with_peer(addr, node))
            .expect("the stranger dials");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == node => break,
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        panic!("the stranger could not connect: {error}")
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("the stranger connected in time");
        let (orders, inbox) = mpsc::channel(16);
        tokio::spawn(drive(swarm, inbox));
        Stranger {
            peer_id,
            key,
            orders,
        }
    }

    async fn order<T>(&self, order: impl FnOnce(oneshot::Sender<T>) -> Order) -> T {
        let (reply, answer) = oneshot::channel();
        self.orders
            .send(order(reply))
            .await
            .expect("the stranger's swarm runs");
        tokio::time::timeout(Duration::from_secs(40), answer)
            .await
            .expect("the stranger was answered in time")
            .expect("the stranger's swarm runs")
    }

    /// Sends `message` on the job protocol; the node's answer as it is on the wire.
    async fn ask_job(&self, to: PeerId, message: JobMessage) -> CtlResponse {
        let data = wire::encode(&message, LIMIT).expect("a job message encodes");
        self.ask_ctl(to, CtlRequest::Job(data)).await
    }

    /// Sends `request` on the control protocol; the node's answer as it is on the wire.
    async fn ask_ctl(&self, to: PeerId, request: CtlRequest) -> CtlResponse {
        self.order(|reply| Order::Ctl { to, request, reply })
            .await
            .expect("the node answers the control request")
    }

    async fn ask_chunk(&self, to: PeerId, request: BlobRequest) -> BlobResponse {
        self.order(|reply| Order::Chunk { to, request, reply })
            .await
            .expect("the node answers the file request")
    }

    /// What the stranger has received on the jobs topic so far.
    async fn received(&self) -> Vec<Vec<u8>> {
        self.order(|reply| Order::Received { reply }).await
    }

    /// Gossips `gossip` on the jobs topic once the node's subscription to it is known.
    async fn gossip(&self, gossip: &Gossip) {
        let data = wire::encode(gossip, LIMIT).expect("the gossip encodes");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let data = data.clone();
            match self.order(|reply| Order::Gossip { data, reply }).await {
                Ok(()) => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "the stranger never gossiped: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Requests under way, each with the order waiting for its answer.
type Waiting<T> = HashMap<OutboundRequestId, oneshot::Sender<Result<T, String>>>;

/// The stranger's swarm and what it owes answers for.
struct Driver {
    swarm: Swarm<StrangerBehaviour>,
    jobs: Waiting<CtlResponse>,
    chunks: Waiting<BlobResponse>,
    jobs_topic: gossipsub::IdentTopic,
    /// Messages received on the jobs topic.
    received: Vec<Vec<u8>>,
}

/// Runs the stranger's swarm until the test drops its [`Stranger`]: carries out orders and
/// hands each answer to its order.
async fn drive(swarm: Swarm<StrangerBehaviour>, mut inbox: mpsc::Receiver<Order>) {
    let mut driver = Driver {
        swarm,
        jobs: HashMap::new(),
        chunks: HashMap::new(),
        jobs_topic: gossipsub::IdentTopic::new(JOBS_TOPIC),
        received: Vec::new(),
    };
    loop {
        tokio::select! {
            order = inbox.recv() => match order {
                Some(order) => driver.carry_out(order),
                None => return,
            },
            event = driver.swarm.select_next_some() => driver.on_event(event),
        }
    }
}

impl Driver {
    fn carry_out(&mut self, order: Order) {
        let behaviour = self.swarm.behaviour_mut();
        match order {
            Order::Ctl { to, request, reply } => {
                let id = behaviour.ctl.send_request(&to, request);
                self.jobs.insert(id, reply);
            }
            Order::Chunk { to, request, reply } => {
                let id = behaviour.blob.send_request(&to, request);
                self.chunks.insert(id, reply);
            }
            Order::Gossip { data, reply } => {
                let published = behaviour.gossipsub.publish(self.jobs_topic.clone(), data);
                let _ = reply.send(published.map(drop).map_err(|e| e.to_string()));
            }
            Order::Received { reply } => {
                let _ = reply.send(self.received.clone());
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<StrangerBehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(StrangerBehaviourEvent::Ctl(event)) => {
                answered(&mut self.jobs, event)
            }
            SwarmEvent::Behaviour(StrangerBehaviourEvent::Blob(event)) => {
                answered(&mut self.chunks, event)
            }
            SwarmEvent::Behaviour(StrangerBehaviourEvent::Gossipsub(
                gossipsub::Event::Message { message, .. },
            )) => self.received.push(message.data),
            _ => {}
        }
    }
}

/// Hands a response (or the failure of a request) to the order waiting for it.
fn answered<Req, Resp>(waiting: &mut Waiting<Resp>, event: request_response::Event<Req, Resp>) {
    let (id, answer) = match event {
        request_response::Event::Message {
            message:
                request_response::Message::Response {
                    request_id,
                    response,
                },
            ..
        } => (request_id, Ok(response)),
        request_response::Event::OutboundFailure {
            request_id, error, ..
        } => (request_id, Err(error.to_string())),
        _ => return,
    };
    if let Some(reply) = waiting.remove(&id) {
        let _ = reply.send(answer);
    }
}

/// The one full node, listening on loopback in an open mesh.
async fn open_node(dir: &Path) -> Node {
    let mut cfg = NodeConfig::in_memory(dir.to_path_buf(), "host");
    cfg.transport = TransportKind::Tcp;
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("an address")];
    cfg.mesh_key_choice = MeshKeyChoice::Open;
    cfg.heartbeat_interval = Duration::from_secs(1);
    Node::start(cfg).await.expect("the node starts")
}

/// A member of `node`'s mesh that is only a mesh participant: it announces its presence like
/// any node, runs no jobs, and answers every job message sent to it Ok.
async fn member(node: &Node) -> MeshHandle {
    let identity = LocalIdentity {
        name: "member".into(),
        machine_id: "machine-member".into(),
        version: "test".into(),
        labels: BTreeMap::new(),
        host_uptime_at_start: Duration::ZERO,
    };
    let token = node.join_token().clone();
    assert!(token.mesh_key.is_none(), "the mesh is open");
    let mut cfg = MeshConfig::new(Keypair::generate_ed25519(), TransportKind::Tcp, identity);
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("an address")];
    cfg.bootstrap = token.peers.clone();
    cfg.heartbeat_interval = Duration::from_secs(1);
    let mut started = mesh::start(cfg).await.expect("the member starts");
    let handle = started.handle.clone();
    tokio::spawn(async move {
        while let Some(event) = started.events.recv().await {
            if let MeshEvent::JobRequest { token, .. } = event {
                let ok = wire::encode(&JobReply::Ok, LIMIT).expect("a reply encodes");
                let _ = handle.reply(token, ok).await;
            }
        }
    });
    started.handle
}

/// The node, a member of its mesh that it sees alive, and a stranger connected to it.
struct Scene {
    dir: tempfile::TempDir,
    node: Node,
    member: MeshHandle,
    stranger: Stranger,
}

async fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let node = open_node(dir.path()).await;
    let member = member(&node).await;
    wait_alive(&node, 2).await;
    let stranger = Stranger::connect(listen_addr(&node), node.peer_id()).await;
    Scene {
        dir,
        node,
        member,
        stranger,
    }
}

/// The address the node listens on.
fn listen_addr(node: &Node) -> Multiaddr {
    node.listen_addrs()
        .first()
        .cloned()
        .expect("the node listens")
}

async fn wait_alive(node: &Node, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(node).await < n {
        assert!(Instant::now() < deadline, "the node never saw {n} alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn alive(node: &Node) -> usize {
    let status = node.status().await.expect("status");
    status.nodes.iter().filter(|r| r.state == "alive").count()
}

/// Whether `node`'s table has a row of `peer` (in any state).
async fn has_row(node: &Node, peer: PeerId) -> bool {
    let status = node.status().await.expect("status");
    status.nodes.iter().any(|r| r.peer_id == peer.to_string())
}

/// A row of the membership table for a node of key `key` named `name`, signed by it.
fn signed_row(key: &Keypair, name: &str) -> mesh::wire::MemberRecord {
    let mut presence = mesh::wire::Presence {
        peer_id: key.public().to_peer_id(),
        name: name.into(),
        machine_id: "5".repeat(32),
        version: "test".into(),
        incarnation: 1,
        seq: 1,
        status: mesh::wire::PresenceStatus::Alive,
        host_uptime_secs: 1,
        agent_uptime_secs: 1,
        addresses: vec![],
        labels: BTreeMap::new(),
        load: 0.0,
        heartbeat_interval_ms: 60_000,
        signature: vec![],
    };
    presence.sign(key);
    mesh::wire::MemberRecord {
        presence,
        age_ms: 0,
    }
}

/// A run of `originator`'s with one job for `node` that creates `file`.
fn run_creating(originator: PeerId, node: &Node, run_id: &str, file: &Path) -> Run {
    let command = format!("--skip-cache touch {}", file.display());
    let spec = match jobs::JobSpec::parse("RUN", &command, &Default::default()).expect("it parses")
    {
        jobs::ParseOutcome::Spec(s) => s,
        jobs::ParseOutcome::Help(h) => panic!("{h}"),
    };
    let mut run = Run::new(
        run_id,
        NodeId(originator.to_string()),
        vec![Parent {
            parent_id: format!("{run_id}-parent"),
            fingerprint: spec.fingerprint(),
            queue: jobs::executor::QueueKind::Async,
            targets: vec![NodeId(node.peer_id().to_string())],
            target_keys: TargetKeys::default(),
            jobs: vec![JobEntry {
                job_id: format!("{run_id}-job"),
                fingerprint: spec.fingerprint(),
                spec,
                only_on: None,
            }],
        }],
    );
    run.originator_start = 1;
    run
}

async fn member_sends(member: &MeshHandle, to: PeerId, message: &JobMessage) -> JobReply {
    let bytes = wire::encode(message, LIMIT).expect("a job message encodes");
    let reply = member
        .request_job(to, bytes)
        .await
        .expect("the node answers the member");
    wire::decode(&reply, LIMIT).expect("a job reply")
}

async fn appears(file: &Path) -> bool {
    let deadline = Instant::now() + RUNS_WITHIN;
    while !file.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Where the job of the run named `name` creates its file.
fn marker(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-ran"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_announced_itself_cannot_run_jobs() {
    let Scene {
        dir,
        node,
        member,
        stranger,
    } = scene().await;
    let to = node.peer_id();
    assert!(
        !has_row(&node, stranger.peer_id).await,
        "the stranger is in the node's table"
    );

    // A run sent on the job protocol: refused, and nothing runs.
    let sent = marker(dir.path(), "stranger-sent");
    let run = run_creating(stranger.peer_id, &node, "stranger-sent", &sent);
    match stranger
        .ask_job(to, JobMessage::Deliver(Box::new(run)))
        .await
    {
        CtlResponse::Rejected { reason } => {
            assert!(reason.contains("not a member"), "refused for: {reason}")
        }
        CtlResponse::Job(reply) => panic!(
            "a stranger's run was taken in: {:?}",
            wire::decode::<JobReply>(&reply, LIMIT)
        ),
        other => panic!("a stranger's run was answered {other:?}"),
    }
    // A run gossiped: dropped.
    let gossiped = marker(dir.path(), "stranger-gossiped");
    let run = run_creating(stranger.peer_id, &node, "stranger-gossiped", &gossiped);
    stranger.gossip(&Gossip::Run(Box::new(run))).await;

    // The same from a member: taken and run.
    let member_sent = marker(dir.path(), "member-sent");
    let run = run_creating(member.local_peer_id(), &node, "member-sent", &member_sent);
    assert_eq!(
        member_sends(&member, to, &JobMessage::Deliver(Box::new(run))).await,
        JobReply::Ok
    );
    let member_gossiped = marker(dir.path(), "member-gossiped");
    let run = run_creating(
        member.local_peer_id(),
        &node,
        "member-gossiped",
        &member_gossiped,
    );
    member
        .publish_jobs(wire::encode(&Gossip::Run(Box::new(run)), LIMIT).expect("a run encodes"))
        .await
        .expect("the member gossips");
    assert!(appears(&member_sent).await, "the member's run never ran");
    assert!(
        appears(&member_gossiped).await,
        "the member's gossiped run never ran"
    );

    // The stranger's went out before the member's, which ran: a little longer, and they
    // still have not.
    tokio::time::sleep(NOT_RUN_AFTER).await;
    assert!(!sent.exists(), "the stranger's run ran");
    assert!(!gossiped.exists(), "the stranger's gossiped run ran");
    // Still connected and answered, it is still not a member.
    assert!(!has_row(&node, stranger.peer_id).await);
    node.shutdown().await.unwrap();
}

/// A node passes on gossip only once it has taken it: a stranger's job message goes no
/// further than the node it reached (a second stranger, subscribed to the jobs topic beside
/// it, never gets it), while a member's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_announced_itself_is_not_relayed() {
    let Scene {
        dir,
        node,
        member,
        stranger,
    } = scene().await;
    let listener = Stranger::connect(listen_addr(&node), node.peer_id()).await;
    // A node passes on what it cannot judge while its table fills, for its first 30 s.
    tokio::time::sleep(Duration::from_secs(32)).await;

    // The stranger's run, then the member's: the member's reaches the listener through
    // the node; a little longer, and the stranger's still has not.
    let encoded = |run: Run| wire::encode(&Gossip::Run(Box::new(run)), LIMIT).expect("encodes");
    let strangers = run_creating(
        stranger.peer_id,
        &node,
        "stranger-gossiped",
        &marker(dir.path(), "stranger-gossiped"),
    );
    stranger
        .gossip(&Gossip::Run(Box::new(strangers.clone())))
        .await;
    let members = run_creating(
        member.local_peer_id(),
        &node,
        "member-gossiped",
        &marker(dir.path(), "member-gossiped"),
    );
    member
        .publish_jobs(encoded(members.clone()))
        .await
        .expect("the member gossips");
    let deadline = Instant::now() + RUNS_WITHIN;
    while !listener
        .received()
        .await
        .contains(&encoded(members.clone()))
    {
        assert!(
            Instant::now() < deadline,
            "the member's run never reached the listener through the node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(NOT_RUN_AFTER).await;
    assert!(
        !listener.received().await.contains(&encoded(strangers)),
        "the node passed on the stranger's run"
    );
    node.shutdown().await.unwrap();
}

/// The membership table goes to members only, and takes rows pushed unasked from members
/// only: a host that never announced itself learns nothing of the mesh from a table sync
/// (nor makes the node copy its table for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_announced_itself_is_not_sent_the_table() {
    let Scene {
        dir: _dir,
        node,
        member,
        stranger,
    } = scene().await;
    let to = node.peer_id();
    let refused = |answer: CtlResponse| match answer {
        CtlResponse::Rejected { reason } => {
            assert!(reason.contains("not a member"), "refused for: {reason}")
        }
        CtlResponse::Members { members } => {
            panic!("a stranger was sent the table ({} rows)", members.len())
        }
        CtlResponse::Delta { members, .. } => {
            panic!("a stranger was sent the table ({} rows)", members.len())
        }
        other => panic!("a stranger's table sync or push was answered {other:?}"),
    };
    refused(
        stranger
            .ask_ctl(to, CtlRequest::SyncMembers { members: vec![] })
            .await,
    );
    refused(
        stranger
            .ask_ctl(to, CtlRequest::SyncVersions { versions: vec![] })
            .await,
    );
    refused(
        stranger
            .ask_ctl(to, CtlRequest::PushMembers { members: vec![] })
            .await,
    );
    // Rows of others it passes on in a sync are not taken from it either.
    let other = Keypair::generate_ed25519();
    refused(
        stranger
            .ask_ctl(
                to,
                CtlRequest::SyncMembers {
                    members: vec![signed_row(&other, "made-up")],
                },
            )
            .await,
    );
    assert!(!has_row(&node, other.public().to_peer_id()).await);
    // Once it announces itself (its own signed row in its first sync, as a newcomer does),
    // it is a member: sent the table, and its pushes taken.
    let own_row = signed_row(&stranger.key, "stranger");
    match stranger
        .ask_ctl(
            to,
            CtlRequest::SyncMembers {
                members: vec![own_row.clone()],
            },
        )
        .await
    {
        CtlResponse::Members { members } => assert!(
            members
                .iter()
                .any(|m| m.presence.peer_id == member.local_peer_id()),
            "the table sent lacks the member's row"
        ),
        other => panic!("an announced host's sync was answered {other:?}"),
    }
    assert!(has_row(&node, stranger.peer_id).await);
    let pushed = stranger
        .ask_ctl(
            to,
            CtlRequest::PushMembers {
                members: vec![own_row],
            },
        )
        .await;
    assert!(matches!(pushed, CtlResponse::Ack), "{pushed:?}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_announced_itself_is_not_sent_files() {
    let Scene {
        dir,
        node,
        member,
        stranger,
    } = scene().await;
    let to = node.peer_id();

    // A file the node holds: it sent it to itself with ADD.
    let file = dir.path().join("payload.bin");
    let content: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let yaml = format!(
        "- jobs:\n  - ADD: {} {}\n",
        file.display(),
        dir.path().join("copy.bin").display()
    );
    let job_id = submit(&node, &yaml, dir.path()).await;
    wait_done(&node, &job_id).await;
    let request = BlobRequest {
        hash: *blake3::hash(&content).as_bytes(),
        index: 0,
    };

    assert_eq!(
        Answer::of(stranger.ask_chunk(to, request.clone()).await),
        Answer::Unknown,
        "a stranger was answered a file request"
    );
    // The member asks for the same chunk and gets it.
    let served = member
        .request_blob(to, request.clone())
        .await
        .expect("the node answers the member");
    assert!(
        served == BlobResponse::Chunk(content),
        "the member was not served the file: {:?}",
        Answer::of(served)
    );
    // Asked again after the member was served, the stranger still learns nothing.
    assert_eq!(
        Answer::of(stranger.ask_chunk(to, request).await),
        Answer::Unknown
    );
    assert!(!has_row(&node, stranger.peer_id).await);
    node.shutdown().await.unwrap();
}

/// A file request's answer without the chunk's bytes, for assertion messages.
#[derive(Debug, PartialEq)]
enum Answer {
    Chunk { bytes: usize },
    NotYet,
    Unknown,
    Unavailable,
}

impl Answer {
    fn of(response: BlobResponse) -> Answer {
        match response {
            BlobResponse::Chunk(data) => Answer::Chunk { bytes: data.len() },
            BlobResponse::NotYet => Answer::NotYet,
            BlobResponse::Unknown => Answer::Unknown,
            BlobResponse::Unavailable => Answer::Unavailable,
        }
    }
}

/// Submits `yaml` (an orchestration of one job) on `node` for `node` itself; its job id.
async fn submit(node: &Node, yaml: &str, cwd: &Path) -> String {
    let submission = e2e_tests::submission(yaml, cwd, &[node.name()], false);
    match node.request(ControlRequest::Submit(submission)).await {
        Reply::One(ControlResponse::Submitted(r)) => {
            let [job] = <[_; 1]>::try_from(r.jobs).expect("one job");
            job.job_id
        }
        _ => panic!("the submission was not taken"),
    }
}

/// Waits until `job_id` has succeeded everywhere it ran.
async fn wait_done(node: &Node, job_id: &str) {
    let Reply::Stream(mut events) = node
        .request(ControlRequest::Watch {
            job_ids: vec![job_id.to_string()],
            output: false,
        })
        .await
    else {
        panic!("watch is a stream");
    };
    let record = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.recv().await {
            if let ControlResponse::Watch(WatchEvent::Done(record)) = event {
                return Some(record);
            }
        }
        None
    })
    .await
    .expect("the job finished in time")
    .expect("the job finished");
    assert!(
        record.results.values().all(|r| r.state.is_ok()),
        "{record:?}"
    );
}
