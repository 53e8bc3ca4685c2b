//! The swarm's event loop and the handle the rest of the node talks to it through.
//!
//! One task ([`EventLoop`]) owns the `Swarm`. Everything else holds a cloneable [`MeshHandle`] and
//! sends it commands over a bounded channel, each with a oneshot for the reply; what the network
//! tells the node comes out as [`MeshEvent`]s on a bounded channel. The loop waits on nothing
//! but that channel: when the node falls behind taking its events, the loop waits for room
//! (backpressure rather than an unbounded queue), so the node takes them from its start on.
//!
//! The loop also runs membership: it sends this node's heartbeat, feeds what it hears into the
//! [`Membership`] table, synchronises tables with each peer it dials that it does not know as
//! alive (so a new node knows the whole mesh within one round trip of its bootstrap peer, and
//! the halves of a healed partition learn each other), exchanges versions with a random peer
//! now and then (anti-entropy), keeps enough connections open to random members that the mesh
//! survives the loss of any one node, and says goodbye when it shuts down.
//!
//! Here: the handle, the start, the loop's state and commands, heartbeats and leaving, and
//! every timing the loop keeps (constants below). The loop's other work is in three parts:
//! `swarm_events` (what peers send), `connections` (staying connected) and
//! `diagnostics` (what the operator is told of trouble).

mod connections;
mod diagnostics;
mod swarm_events;

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    gossipsub::{self, IdentTopic},
    identity::Keypair,
    multiaddr::Protocol,
    request_response::{self, OutboundRequestId},
    swarm::{
        SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use rand::seq::SliceRandom;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::{
    behaviour::{JOBS_TOPIC, MeshBehaviour, MeshBehaviourEvent, PRESENCE_TOPIC},
    key::MeshKey,
    membership::{self, MemberState, MemberView, Membership, MembershipChange},
    transport::{TransportKind, build_swarm},
    wire::{
        self, BlobRequest, BlobResponse, CtlRequest, CtlResponse, MAX_GOSSIP_BYTES, Presence,
        PresenceStatus,
    },
};
use connections::{AcrossASplit, Closing, PeerUse};
use diagnostics::{OtherRelease, OutOfReach, RefusedInbound, RefusedRows, SaidAtMost};

/// Who this node is, as its heartbeat tells the mesh.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    pub name: String,
    pub machine_id: String,
    pub version: String,
    pub labels: BTreeMap<String, String>,
    /// Host uptime when the daemon started; the loop adds its own age to it.
    pub host_uptime_at_start: Duration,
}

/// Everything needed to start the network side of one node.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub keypair: Keypair,
    pub transport: TransportKind,
    /// `None` for an open mesh.
    pub mesh_key: Option<MeshKey>,
    pub listen: Vec<Multiaddr>,
    /// Addresses dialled at start, whenever this node has no connection at all, and one node
    /// at a time now and then while it has connections (to reach across a split mesh).
    pub bootstrap: Vec<Multiaddr>,
    pub identity: LocalIdentity,
    /// Base heartbeat interval; large meshes stretch it (see [`membership::heartbeat_interval`]).
    pub heartbeat_interval: Duration,
    /// How many connections to random members to keep open.
    pub target_peers: usize,
    /// How many peers this node stays connected to at most before it closes idle connections.
    pub connection_budget: ConnectionBudget,
    /// How long a clean shutdown waits for peers to acknowledge the goodbye.
    pub leave_timeout: Duration,
    /// The number of this start, above every earlier start of the node (peers take the
    /// highest); `None`: the wall clock in milliseconds.
    pub incarnation: Option<u64>,
}

impl MeshConfig {
    /// Defaults for everything but who the node is and how it connects.
    pub fn new(keypair: Keypair, transport: TransportKind, identity: LocalIdentity) -> Self {
        Self {
            keypair,
            transport,
            mesh_key: None,
            listen: vec![],
            bootstrap: vec![],
            identity,
            heartbeat_interval: Duration::from_secs(5),
            target_peers: DEFAULT_TARGET_PEERS,
            connection_budget: ConnectionBudget::default(),
            leave_timeout: Duration::from_millis(1500),
            incarnation: None,
        }
    }
}

/// How many peers a node stays connected to before maintenance closes connections nobody uses.
///
/// Gossipsub keeps every connection to a gossipsub peer open for good (rust-libp2p issue
/// #5190), so the swarm's idle timeout never closes one: without this, a node that once sent a
/// request to another (a target its results, a submitter its run, a download its chunks) would
/// stay connected to it for the life of both, and a submitter in a mesh of a thousand nodes to
/// all of them (buffers per connection, and gossip to every connected peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionBudget {
    /// Above this many connected peers, maintenance closes connections to peers outside this
    /// node's gossip mesh that requests have not used for `idle_after`, the least recently
    /// used first, down to this many. Never below `target_peers` (it would close what
    /// maintenance dials).
    pub max_peers: usize,
    /// How long a connection must have gone without a request or an answer, and with none
    /// under way, before it may be closed. Never below [`MIN_IDLE_AFTER`]: a connection a
    /// peer has just opened counts as used from its opening, and must last until that peer's
    /// first request has come through it.
    pub idle_after: Duration,
}

impl Default for ConnectionBudget {
    fn default() -> Self {
        Self {
            max_peers: DEFAULT_CONNECTION_BUDGET,
            idle_after: DEFAULT_IDLE_AFTER,
        }
    }
}

impl ConnectionBudget {
    /// The budget as maintenance applies it to a node that keeps `target_peers` connections:
    /// values below their floors (`target_peers`, [`MIN_IDLE_AFTER`]) are raised to them.
    pub(crate) fn applied(self, target_peers: usize) -> Self {
        Self {
            max_peers: self.max_peers.max(target_peers),
            idle_after: self.idle_after.max(MIN_IDLE_AFTER),
        }
    }
}

/// Why the network side failed.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot build the network: {0}")]
    Build(String),
    #[error("the mesh task has stopped")]
    Stopped,
    #[error("gossip publish failed: {0}")]
    Publish(String),
    #[error("request to {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
}

/// What the network tells the rest of the node.
#[derive(Debug)]
pub enum MeshEvent {
    Member(MembershipChange),
    /// A job announce gossiped by `source` (opaque bytes for the layer above).
    Announce {
        source: PeerId,
        data: Vec<u8>,
    },
    /// A job request from `peer`; answer it with [`MeshHandle::reply`] and `token`.
    JobRequest {
        peer: PeerId,
        data: Vec<u8>,
        token: ReplyToken,
    },
    /// A peer asks for a chunk of a file; answer with [`MeshHandle::reply_blob`].
    BlobRequest {
        peer: PeerId,
        request: BlobRequest,
        token: BlobToken,
    },
    /// This start's number was raised to this (another daemon with this node's identity and a
    /// later start has gone): kept, a later restart is numbered above it
    /// ([`MeshConfig::incarnation`]).
    Renumbered(u64),
}

/// Identifies an inbound blob request until it is answered.
#[derive(Debug)]
pub struct BlobToken(request_response::InboundRequestId);

/// Identifies an inbound job request until it is answered.
#[derive(Debug)]
pub struct ReplyToken(request_response::InboundRequestId);

/// A snapshot of the network side, for `status`.
#[derive(Debug, Clone)]
pub struct MeshStatus {
    pub local_peer_id: PeerId,
    pub listen_addrs: Vec<Multiaddr>,
    pub connected_peers: usize,
    pub heartbeat_interval: Duration,
    pub members: Vec<MemberView>,
    /// Nodes heard lately speaking another wire version (another release), which take no part.
    pub other_releases: Vec<OtherReleaseView>,
    /// Members this node has lately failed to dial and is not connected to (a partial
    /// partition: they may still be heard through other nodes).
    pub unreachable: Vec<PeerId>,
    /// What an operator should know of this node's place in the mesh (another daemon with its
    /// identity, nodes of another release), in words.
    pub warnings: Vec<String>,
}

impl MeshStatus {
    /// How the operator knows a node: its name in the membership table, else the id as given
    /// (a node this table does not hold, or text that is no node id).
    pub fn name_or_id(&self, node: &str) -> String {
        let Ok(peer) = node.parse::<PeerId>() else {
            return node.to_string();
        };
        self.members
            .iter()
            .find(|m| m.presence.peer_id == peer)
            .map_or_else(|| node.to_string(), |m| m.presence.name.clone())
    }
}

/// Whom a node remembers for its next start: the members alive (or alive when it began to
/// leave), and apart the others its table still holds (left or expired, most lately heard
/// first). A fleet stopped one node after another leaves each with fewer members alive; those
/// that left come back with it, and a node that remembered only the alive ones could find
/// only part of the mesh again.
#[derive(Debug, Clone, Default)]
pub struct MembersToRemember {
    pub alive: Vec<(PeerId, Vec<Multiaddr>)>,
    pub others: Vec<(PeerId, Vec<Multiaddr>)>,
}

/// A node heard speaking another wire version, as far as this release can read it.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherReleaseView {
    pub peer_id: PeerId,
    pub wire_version: u16,
    /// Its name and release, when its heartbeat could be read that far (and they look like a
    /// name and a release: they are shown as they are).
    pub name: Option<String>,
    pub release: Option<String>,
}

impl OtherReleaseView {
    /// `release R, wire version W`, or `wire version W` when its release is not known.
    pub fn release_and_wire(&self) -> String {
        match &self.release {
            Some(release) => format!("release {release}, wire version {}", self.wire_version),
            None => format!("wire version {}", self.wire_version),
        }
    }
}

/// `name (peer id, release R, wire version W)`, with what is known of it.
impl std::fmt::Display for OtherReleaseView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(name) = &self.name {
            write!(f, "{name} (")?;
        }
        write!(f, "{}, {}", self.peer_id, self.release_and_wire())?;
        if self.name.is_some() {
            write!(f, ")")?;
        }
        Ok(())
    }
}

enum Command {
    Status {
        reply: oneshot::Sender<MeshStatus>,
    },
    AliveMembers {
        reply: oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>,
    },
    MembersToRemember {
        others: usize,
        reply: oneshot::Sender<MembersToRemember>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    PublishJobs {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    RequestJob {
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, MeshError>>,
    },
    Reply {
        token: ReplyToken,
        data: Vec<u8>,
    },
    RequestBlob {
        peer: PeerId,
        request: BlobRequest,
        reply: oneshot::Sender<Result<BlobResponse, MeshError>>,
    },
    ReplyBlob {
        token: BlobToken,
        response: BlobResponse,
    },
    Block {
        peers: Vec<PeerId>,
        blocked: bool,
        reply: oneshot::Sender<()>,
    },
    /// Tests only: applies `budget` at once and handles `then` in the same turn (see
    /// `EventLoop::close_over_budget_then`).
    #[cfg(test)]
    CloseOverBudgetThen {
        budget: ConnectionBudget,
        then: Box<Command>,
        closing: oneshot::Sender<Vec<PeerId>>,
    },
}

impl Command {
    /// The peer a request to send is for; `None` for every other command.
    fn request_to(&self) -> Option<PeerId> {
        match self {
            Command::RequestJob { peer, .. } | Command::RequestBlob { peer, .. } => Some(*peer),
            _ => None,
        }
    }
}

/// Depth of the command and event channels. Commands are small and answered at once; a full
/// channel makes senders wait, which is the backpressure we want.
const CHANNEL_DEPTH: usize = 256;

/// Connections a node keeps open (it dials random members until it has this many).
pub const DEFAULT_TARGET_PEERS: usize = 8;

/// Peers a node stays connected to before it closes idle connections: well above
/// [`DEFAULT_TARGET_PEERS`] (plus the members that dial this one, about as many again) and above
/// the peers of gossipsub's meshes (from [`crate::tuning::MESH_N`] up to
/// [`crate::tuning::MESH_N_HIGH`] per topic, two topics), so an ordinary member never trims and
/// only a node that talked to many (a submitter, a file source) comes back down to it.
pub const DEFAULT_CONNECTION_BUDGET: usize = 64;

/// How long a connection goes unused by requests before it may be closed (over the budget). A
/// request under way keeps its connection whatever its age; this is for what is likely to
/// come next: a job still running sends its results and alive checks within it.
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(60);

/// The shortest [`ConnectionBudget::idle_after`] applied: a shorter one is raised to this.
pub const MIN_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The cloneable handle to a running mesh node.
#[derive(Clone, Debug)]
pub struct MeshHandle {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
}

impl MeshHandle {
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| MeshError::Stopped)?;
        rx.await.map_err(|_| MeshError::Stopped)
    }

    /// The node's addresses and membership table.
    pub async fn status(&self) -> Result<MeshStatus, MeshError> {
        self.call(|reply| Command::Status { reply }).await
    }

    /// The other members that are alive, with their addresses: a lighter answer than
    /// [`MeshHandle::status`] for whoever only needs to know where members are.
    pub async fn alive_members(&self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, MeshError> {
        self.call(|reply| Command::AliveMembers { reply }).await
    }

    /// The members worth remembering for the next start (see [`MembersToRemember`]), with up
    /// to `others` of those not alive.
    pub async fn members_to_remember(&self, others: usize) -> Result<MembersToRemember, MeshError> {
        self.call(|reply| Command::MembersToRemember { others, reply })
            .await
    }

    /// Gossips a job announce to every member.
    pub async fn publish_jobs(&self, data: Vec<u8>) -> Result<(), MeshError> {
        self.call(|reply| Command::PublishJobs { data, reply })
            .await?
    }

    /// Sends a job request to `peer` (dialing it if needed) and waits for the answer.
    pub async fn request_job(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>, MeshError> {
        self.call(|reply| Command::RequestJob { peer, data, reply })
            .await?
    }

    /// Answers an inbound job request.
    pub async fn reply(&self, token: ReplyToken, data: Vec<u8>) -> Result<(), MeshError> {
        self.commands
            .send(Command::Reply { token, data })
            .await
            .map_err(|_| MeshError::Stopped)
    }

    /// Asks `peer` for a chunk of a file.
    pub async fn request_blob(
        &self,
        peer: PeerId,
        request: BlobRequest,
    ) -> Result<BlobResponse, MeshError> {
        self.call(|reply| Command::RequestBlob {
            peer,
            request,
            reply,
        })
        .await?
    }

    /// Answers an inbound blob request.
    pub async fn reply_blob(
        &self,
        token: BlobToken,
        response: BlobResponse,
    ) -> Result<(), MeshError> {
        self.commands
            .send(Command::ReplyBlob { token, response })
            .await
            .map_err(|_| MeshError::Stopped)
    }

    /// Refuses (`blocked`) or allows again any connection with `peers`; blocking closes the
    /// open ones. Simulations use it to split a mesh in process and heal it.
    pub async fn set_blocked(&self, peers: Vec<PeerId>, blocked: bool) -> Result<(), MeshError> {
        self.call(|reply| Command::Block {
            peers,
            blocked,
            reply,
        })
        .await
    }

    /// Tells the mesh this node is leaving, waits (bounded) for peers to hear it, and stops.
    pub async fn shutdown(&self) -> Result<(), MeshError> {
        self.call(|reply| Command::Shutdown { reply }).await
    }
}

/// A started mesh node: its handle, its events and the task that runs it.
pub struct Mesh {
    pub handle: MeshHandle,
    pub events: mpsc::Receiver<MeshEvent>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the network side: listens (failing clearly if it cannot), dials the bootstrap peers
/// and spawns the event loop.
pub async fn start(config: MeshConfig) -> Result<Mesh, MeshError> {
    let local_peer_id = config.keypair.public().to_peer_id();
    let mut swarm = build_swarm(config.keypair.clone(), config.transport, config.mesh_key)
        .map_err(MeshError::Build)?;
    let presence_topic = IdentTopic::new(PRESENCE_TOPIC);
    let jobs_topic = IdentTopic::new(JOBS_TOPIC);
    for topic in [&presence_topic, &jobs_topic] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(topic)
            .map_err(|e| MeshError::Build(format!("subscribe: {e}")))?;
    }

    let listen_addrs = listen(&mut swarm, &config.listen).await?;
    for addr in &config.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            warn!(%addr, "cannot dial bootstrap peer: {e}");
        }
    }

    let (command_tx, command_rx) = mpsc::channel(CHANNEL_DEPTH);
    let (event_tx, event_rx) = mpsc::channel(CHANNEL_DEPTH);
    let started = Instant::now();
    let incarnation = config.incarnation.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    });
    let mut own = local_presence_parts(
        &config,
        local_peer_id,
        incarnation,
        0,
        &listen_addrs,
        started,
    );
    own.sign(&config.keypair);
    warn_if_peers_drop(&own);
    let mut event_loop = EventLoop {
        swarm,
        commands: command_rx,
        events: event_tx,
        membership: Membership::new(own, started),
        config,
        local_peer_id,
        incarnation,
        seq: 0,
        started,
        listen_addrs,
        presence_topic,
        last_presence_publish: None,
        last_bootstrap_dial: started,
        alone_since: None,
        last_dial_error: None,
        out_of_reach: HashMap::new(),
        alone_said: SaidAtMost::every(ALONE_WARNING_EVERY),
        twin_said: SaidAtMost::every(TWIN_WARNING_EVERY),
        twin_seen: None,
        other_releases: HashMap::new(),
        last_sync: started,
        second_sync: SecondSync::Due,
        last_reconnect: started,
        across_a_split: AcrossASplit::new(started),
        last_ran: started,
        resumed_at: None,
        refused_inbound: RefusedInbound::default(),
        refused_pending: RefusedInbound::default(),
        refused_rows: RefusedRows::default(),
        too_large_said: SaidAtMost::every(TOO_LARGE_SAID_EVERY),
        dropped_presence_said: SaidAtMost::every(Duration::from_secs(60)),
        busy_said: SaidAtMost::every(Duration::from_secs(60)),
        held_member_changes: VecDeque::new(),
        non_members_said: HashMap::new(),
        left_still_here: HashMap::new(),
        recent_dials: HashMap::new(),
        connected: connections::ConnectedPeers::default(),
        peer_use: PeerUse::default(),
        closing: Closing::default(),
        leaving: None,
        jobs_topic,
        pending_requests: HashMap::new(),
        pending_replies: HashMap::new(),
        pending_blobs: HashMap::new(),
        pending_blob_replies: HashMap::new(),
    };
    let task = tokio::spawn(async move { event_loop.run().await });
    Ok(Mesh {
        handle: MeshHandle {
            commands: command_tx,
            local_peer_id,
        },
        events: event_rx,
        task,
    })
}

/// Opens every listener and waits until each has an address, so errors such as "address in use"
/// reach the operator at start instead of a log line later.
async fn listen(
    swarm: &mut Swarm<MeshBehaviour>,
    addrs: &[Multiaddr],
) -> Result<Vec<Multiaddr>, MeshError> {
    let mut pending = HashMap::new();
    for addr in addrs {
        ensure_port_free(addr)?;
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| MeshError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        pending.insert(id, addr.clone());
    }
    let mut bound = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pending.is_empty() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| MeshError::Listen {
                addr: pending
                    .values()
                    .next()
                    .cloned()
                    .unwrap_or_else(Multiaddr::empty),
                reason: "no address after 10 s".into(),
            })?;
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                pending.remove(&listener_id);
                bound.push(address);
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some(addr) = pending.remove(&listener_id) {
                    return Err(MeshError::Listen {
                        addr,
                        reason: error.to_string(),
                    });
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(addr) = pending.remove(&listener_id) {
                    return Err(MeshError::Listen {
                        addr,
                        reason: format!("listener closed: {reason:?}"),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(bound)
}

/// libp2p's TCP listeners set `SO_REUSEPORT`, so a second daemon could silently share a port
/// with the first and receive half of its connections. Binding the port once without that
/// option first turns this into a clear "address in use" error.
fn ensure_port_free(addr: &Multiaddr) -> Result<(), MeshError> {
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let port = match parts.next() {
        Some(Protocol::Tcp(port)) if port != 0 => port,
        _ => return Ok(()),
    };
    std::net::TcpListener::bind((ip, port))
        .map(drop)
        .map_err(|e| MeshError::Listen {
            addr: addr.clone(),
            reason: match e.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "{e}: another program (another daemon of this machine?) listens there; \
                     stop it or choose another port with --listen"
                ),
                _ => e.to_string(),
            },
        })
}

/// The addresses worth telling others: without loopback when the node has any other address, so
/// that members on other machines are not sent to dial themselves, and at most
/// [`wire::MAX_PRESENCE_ADDRESSES`], since peers drop a presence with more (see
/// [`advertised_preferring`]).
pub fn advertised(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    advertised_preferring(addrs, &[])
}

/// [`advertised`], keeping first the addresses the operator gave (`configured`, the listen
/// addresses as given: one on 0.0.0.0 or `::` names no address in particular), then those other
/// machines can reach, then link-local ones; each kind in the order the node found them. A node
/// listening on 0.0.0.0 has an address per interface, and a host with many (container bridges,
/// IPv6) has more than a presence may list: the least useful ones are left out rather than
/// the whole presence dropped by every peer.
pub fn advertised_preferring(addrs: &[Multiaddr], configured: &[Multiaddr]) -> Vec<Multiaddr> {
    let beyond_loopback = addrs
        .iter()
        .any(|a| AddressKind::of(a, configured) != AddressKind::Loopback);
    let mut kept: Vec<&Multiaddr> = addrs
        .iter()
        .filter(|a| !beyond_loopback || AddressKind::of(a, configured) != AddressKind::Loopback)
        .collect();
    // A stable sort: each kind keeps the order the node found its addresses in.
    kept.sort_by_key(|a| AddressKind::of(a, configured));
    kept.into_iter()
        .take(wire::MAX_PRESENCE_ADDRESSES)
        .cloned()
        .collect()
}

/// How useful a listen address is to other members, most useful first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AddressKind {
    /// Given by the operator as it is.
    Configured,
    /// Any other address another machine may dial (a LAN or public IP, a DNS name).
    Routable,
    /// Reachable only on the link it is on (169.254.0.0/16, fe80::/10).
    LinkLocal,
    /// This machine only.
    Loopback,
}

impl AddressKind {
    fn of(addr: &Multiaddr, configured: &[Multiaddr]) -> Self {
        if configured.contains(addr) {
            return AddressKind::Configured;
        }
        match addr.iter().next() {
            Some(Protocol::Ip4(ip)) if ip.is_loopback() => AddressKind::Loopback,
            Some(Protocol::Ip6(ip)) if ip.is_loopback() => AddressKind::Loopback,
            Some(Protocol::Ip4(ip)) if ip.is_link_local() => AddressKind::LinkLocal,
            Some(Protocol::Ip6(ip)) if ip.is_unicast_link_local() => AddressKind::LinkLocal,
            _ => AddressKind::Routable,
        }
    }
}

/// Says loudly that peers will drop this node's presence, and why: the node would see every
/// member while none of them sees it.
fn warn_if_peers_drop(own: &Presence) {
    if let Some(what) = own.implausible() {
        warn!(
            "this node's presence has {what}: every peer drops it, so this node sees the mesh \
             but no member sees this node (no jobs reach it); check its name, labels and \
             heartbeat interval"
        );
    }
}

fn local_presence_parts(
    config: &MeshConfig,
    peer_id: PeerId,
    incarnation: u64,
    seq: u64,
    listen_addrs: &[Multiaddr],
    started: Instant,
) -> Presence {
    let age = started.elapsed();
    Presence {
        peer_id,
        name: config.identity.name.clone(),
        machine_id: config.identity.machine_id.clone(),
        version: config.identity.version.clone(),
        incarnation,
        seq,
        status: PresenceStatus::Alive,
        host_uptime_secs: (config.identity.host_uptime_at_start + age).as_secs(),
        agent_uptime_secs: age.as_secs(),
        addresses: advertised_preferring(listen_addrs, &config.listen),
        labels: config.identity.labels.clone(),
        load: host_load(),
        heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u64,
        signature: Vec::new(),
    }
}

/// One-minute load average; 0 where the host does not say. `/proc/loadavg` lives in memory, so
/// reading it does not block the loop.
fn host_load() -> f32 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A clean shutdown in progress: waiting for peers to acknowledge the goodbye.
struct Leaving {
    reply: Option<oneshot::Sender<()>>,
    outstanding: HashSet<OutboundRequestId>,
    deadline: tokio::time::Instant,
    /// The members alive when the leave began: what [`MeshHandle::alive_members`] answers
    /// until the node is gone (goodbyes heard meanwhile are of members going down with it, as
    /// when a whole fleet stops; the layer above would write them off for nothing).
    alive: Vec<(PeerId, Vec<Multiaddr>)>,
}

/// How often a node says that connections from outside the mesh fail, at most: a node with
/// the wrong key retries every few seconds.
const REFUSED_INBOUND_SAID_EVERY: Duration = Duration::from_secs(600);

/// How often a node says, at most, that its membership table is full and refuses rows: every
/// heartbeat of a made-up identity, and every sync carrying some, is refused again.
const TABLE_FULL_SAID_EVERY: Duration = Duration::from_secs(600);

/// How often a node says, at most, that control messages are over their size limit: a table
/// too large to sync fails every sync, every few seconds.
const TOO_LARGE_SAID_EVERY: Duration = Duration::from_secs(60);

/// How long dials to a member must have failed, while it is alive (heard through other
/// nodes: a partial partition, a firewall between two of them), before `status` and the log
/// say so: the results that need a direct connection between the two wait meanwhile.
const OUT_OF_REACH_SAID_AFTER: Duration = Duration::from_secs(30);

/// How long a connected peer may go without this node knowing it takes the presence topic.
/// Gossipsub tells a peer its subscriptions once, on the first connection between the two: a
/// node restarted while its old connection still stood at a peer (a crash during a network
/// cut, before pings closed it) never hears that peer's, cannot publish to it, and that peer
/// sees it come and go for ever. That peer reconnects it once its old connection is found
/// dead (see `connections::ConnectedPeers`: about half a minute on TCP, see
/// `transport::TCP_USER_TIMEOUT`); failing that, past this the node drops the connection, and
/// the next one is a first on both sides once the old one is gone.
const SUBSCRIPTIONS_WITHIN: Duration = Duration::from_secs(30);

/// Don't redial a member sooner than this after the last attempt.
const REDIAL_AFTER: Duration = Duration::from_secs(10);
/// With no connection at all, dial the bootstrap peers again this often.
const BOOTSTRAP_REDIAL: Duration = Duration::from_secs(5);
/// A node that reaches no member warns after this long, then at most every
/// [`ALONE_WARNING_EVERY`].
const ALONE_GRACE: Duration = Duration::from_secs(6);
const ALONE_WARNING_EVERY: Duration = Duration::from_secs(300);

/// How often the log says, per node, that messages from a non-member were refused.
const NON_MEMBER_SAID_EVERY: Duration = Duration::from_secs(60);
/// Non-members remembered for that (past it, the list starts over).
const MAX_NON_MEMBERS_SAID: usize = 1024;

/// How long after its start a node's table may still lack members that message it.
const TABLE_FILLS_WITHIN: Duration = Duration::from_secs(30);

/// How often a node repeats that another daemon runs with its identity.
const TWIN_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How often a node repeats, for each node, that it speaks another wire version.
const OTHER_RELEASE_WARNING_EVERY: Duration = Duration::from_secs(600);
/// How long `status` names a node of another wire version after its last heartbeat.
const OTHER_RELEASE_SHOWN_FOR: Duration = Duration::from_secs(60);
/// Nodes of another wire version kept for `status` (one row each; the rest are counted out).
const MAX_OTHER_RELEASES: usize = 1024;

/// Exchange news with one random connected peer this often (anti-entropy: heals whatever
/// gossip missed). Only versions travel, and then the rows one side lacks.
const SYNC_EVERY: Duration = Duration::from_secs(15);
/// A member heard leaving but still connected this long after is asked for news: the goodbye
/// was another daemon's with its identity (a copied state directory), which it never hears
/// itself (gossip does not hand a node messages from its own id), and until it does the mesh
/// takes it for gone.
const LEFT_STILL_HERE_AFTER: Duration = Duration::from_secs(1);
/// Members heard leaving remembered for that (a fleet stopping at once: the rest is skipped).
const MAX_LEFT_STILL_HERE: usize = 1024;
/// After joining with a peer's table, when to ask that peer what it has learned since.
const SECOND_SYNC_AFTER: Duration = Duration::from_millis(250);
/// Where a node stands with the second table sync of its join (see [`SECOND_SYNC_AFTER`]).
#[derive(Debug, Clone, Copy)]
enum SecondSync {
    /// No table taken in yet since this node started.
    Due,
    /// Ask this peer at this time.
    At(PeerId, tokio::time::Instant),
    /// Asked (once per start).
    Done,
}

impl SecondSync {
    /// When to ask; only meaningful in [`SecondSync::At`].
    fn at(&self) -> tokio::time::Instant {
        match self {
            SecondSync::At(_, at) => *at,
            _ => tokio::time::Instant::now(),
        }
    }
}

/// How often a node dials one expired member. Two halves of a healed partition each have
/// enough connections among themselves: without this, nobody would connect across and each
/// half would see the other as expired for ever.
const RECONNECT_EVERY: Duration = Duration::from_secs(5);

/// With no expired member to dial, how often a node connected to others dials a bootstrap or
/// known peer it is not connected to (see `connections::AcrossASplit`).
const ACROSS_A_SPLIT_EVERY: Duration = Duration::from_secs(60);

/// How often maintenance runs.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);

/// Maintenance runs every second; a gap this long since it last ran means this node did not
/// run (a stopped process, a paused or suspended machine): it heard nobody meanwhile, and
/// the members are given that time back rather than taken for gone (their jobs would be
/// written off only to come back a moment later). Barely over the second: members expire
/// after three heartbeats, which may be well under 3 s. (A gap of a busy machine's, taken
/// for a pause, only delays expiries by that long.)
const PAUSED_AFTER: Duration = Duration::from_millis(1250);

/// A pause at least this long is logged (shorter ones may be a busy machine's).
const PAUSE_LOGGED_AFTER: Duration = Duration::from_secs(3);

/// For this long after a pause (one long enough to be logged, not a busy moment), an inbound
/// connection that fails before it is authenticated is no stranger worth a warning: members
/// dialled this node while it did not run, and gave up before it answered (the system kept
/// their connections waiting to be accepted).
const AFTER_A_PAUSE_NO_STRANGERS: Duration = Duration::from_secs(30);

struct EventLoop {
    swarm: Swarm<MeshBehaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<MeshEvent>,
    membership: Membership,
    config: MeshConfig,
    local_peer_id: PeerId,
    incarnation: u64,
    seq: u64,
    started: Instant,
    listen_addrs: Vec<Multiaddr>,
    presence_topic: IdentTopic,
    last_presence_publish: Option<Instant>,
    last_bootstrap_dial: Instant,
    /// Since when this node has had no connection at all (a node told whom to join).
    alone_since: Option<Instant>,
    /// The last failed dial while alone, for the warning.
    last_dial_error: Option<String>,
    /// Members this node failed to dial and has not been connected to since: when the first
    /// failure of the spell was, when the last, and its error.
    out_of_reach: HashMap<PeerId, OutOfReach>,
    /// That this node reaches nobody, said every [`ALONE_WARNING_EVERY`] at most.
    alone_said: SaidAtMost,
    /// That another daemon uses this node's identity, said every [`TWIN_WARNING_EVERY`] at most.
    twin_said: SaidAtMost,
    /// The addresses of that other daemon, for `status`, and until when to show them: two
    /// warnings' time after it was last heard of, or three of its heartbeat intervals if
    /// longer (with an earlier start, it is heard of once a heartbeat).
    twin_seen: Option<(Instant, Vec<Multiaddr>)>,
    /// Nodes heard speaking another wire version lately (at most [`MAX_OTHER_RELEASES`]).
    other_releases: HashMap<PeerId, OtherRelease>,
    last_sync: Instant,
    /// Asking the peer whose table this node joined with, once, what it has learned since.
    second_sync: SecondSync,
    last_reconnect: Instant,
    /// Dials of the bootstrap and known peers while connected to others.
    across_a_split: AcrossASplit,
    /// When maintenance (every second) or a command last ran: a longer gap is a pause of this
    /// node (see [`PAUSED_AFTER`]).
    last_ran: Instant,
    /// When this node last ran again after a pause.
    resumed_at: Option<Instant>,
    /// Connections from outside the mesh that failed (see [`REFUSED_INBOUND_SAID_EVERY`]).
    refused_inbound: RefusedInbound,
    /// Connections closed at once, too many being in their handshake (same counting).
    refused_pending: RefusedInbound,
    /// Rows the membership table refused, being full (see [`TABLE_FULL_SAID_EVERY`]).
    refused_rows: RefusedRows,
    /// That a control message was over its size limit (see [`TOO_LARGE_SAID_EVERY`]).
    too_large_said: SaidAtMost,
    /// That a gossiped presence was dropped (signed by another peer, or unreadable).
    dropped_presence_said: SaidAtMost,
    /// When the layer above was last said to be behind (see `busy`).
    busy_said: SaidAtMost,
    /// Membership changes the layer above had no room for yet (see
    /// [`EventLoop::tell_member_change`]).
    held_member_changes: VecDeque<MembershipChange>,
    /// When this node last warned of each non-member's messages (see
    /// [`NON_MEMBER_SAID_EVERY`]; at most [`MAX_NON_MEMBERS_SAID`] nodes).
    non_members_said: HashMap<PeerId, SaidAtMost>,
    /// Members heard leaving lately, and when (see [`LEFT_STILL_HERE_AFTER`]).
    left_still_here: HashMap<PeerId, Instant>,
    recent_dials: HashMap<PeerId, Instant>,
    /// Each connected peer's open connections (a third closes the oldest), whether its
    /// subscriptions came, and whether it started over beside a dead connection.
    connected: connections::ConnectedPeers,
    /// When requests last used each peer's connection, and the exchanges under way with it
    /// (which connections may be closed over the budget).
    peer_use: PeerUse,
    /// Peers whose connections the connection budget is closing, with the requests for them
    /// that wait until the close is done (then they dial again).
    closing: Closing,
    leaving: Option<Leaving>,
    jobs_topic: IdentTopic,
    /// Job requests this node sent, waiting for their answers.
    pending_requests: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, MeshError>>>,
    /// Job requests this node received, waiting for the layer above to answer.
    pending_replies:
        HashMap<request_response::InboundRequestId, request_response::ResponseChannel<CtlResponse>>,
    /// Blob requests this node sent, waiting for their chunks.
    pending_blobs: HashMap<OutboundRequestId, oneshot::Sender<Result<BlobResponse, MeshError>>>,
    /// Blob requests this node received, waiting for the layer above to read the chunk.
    pending_blob_replies: HashMap<
        request_response::InboundRequestId,
        request_response::ResponseChannel<BlobResponse>,
    >,
}

impl EventLoop {
    async fn run(&mut self) {
        let mut maintenance = tokio::time::interval(MAINTENANCE_EVERY);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_beat = tokio::time::Instant::now();
        let mut handles_gone = false;
        loop {
            let leave_deadline = self.leaving.as_ref().map(|l| l.deadline);
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
                command = self.commands.recv(), if !handles_gone => match command {
                    Some(command) => self.on_command(command),
                    // Every handle is gone: nobody can ask for anything any more.
                    None => {
                        handles_gone = true;
                        self.begin_leave(None);
                    }
                },
                _ = tokio::time::sleep_until(next_beat), if self.leaving.is_none() => {
                    self.heartbeat();
                    next_beat = tokio::time::Instant::now() + self.current_interval();
                }
                _ = maintenance.tick(), if self.leaving.is_none() => self.maintain().await,
                _ = tokio::time::sleep_until(self.second_sync.at()),
                    if matches!(self.second_sync, SecondSync::At(..)) && self.leaving.is_none() => {
                    if let SecondSync::At(peer, _) =
                        std::mem::replace(&mut self.second_sync, SecondSync::Done)
                    {
                        self.ask_news(&peer);
                    }
                }
                _ = tokio::time::sleep_until(leave_deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if leave_deadline.is_some() => {}
            }
            if !self.held_member_changes.is_empty() {
                self.pass_on_held_member_changes();
            }
            if let Some(leaving) = &self.leaving
                && (leaving.outstanding.is_empty()
                    || tokio::time::Instant::now() >= leaving.deadline)
            {
                if !leaving.outstanding.is_empty() {
                    debug!("goodbye not acknowledged by every peer in time");
                }
                if let Some(reply) = self.leaving.take().and_then(|l| l.reply) {
                    let _ = reply.send(());
                }
                break;
            }
        }
    }

    fn current_interval(&self) -> Duration {
        membership::heartbeat_interval(
            self.config.heartbeat_interval,
            self.membership.alive_count(Instant::now()),
        )
    }

    /// The table as shown, this node's own row as of now (its uptimes and load; the row in
    /// the table is as of its last heartbeat, up to an interval old).
    fn members_now(&self, now: Instant) -> Vec<membership::MemberView> {
        let mut members = self.membership.view(now);
        for own in members.iter_mut().filter(|m| m.is_self) {
            let fresh = self.local_presence(PresenceStatus::Alive);
            own.presence.host_uptime_secs = fresh.host_uptime_secs;
            own.presence.agent_uptime_secs = fresh.agent_uptime_secs;
            own.presence.load = fresh.load;
        }
        members
    }

    fn local_presence(&self, status: PresenceStatus) -> Presence {
        let mut p = local_presence_parts(
            &self.config,
            self.local_peer_id,
            self.incarnation,
            self.seq,
            &self.listen_addrs,
            self.started,
        );
        p.status = status;
        p.heartbeat_interval_ms = self.current_interval().as_millis() as u64;
        p.sign(&self.config.keypair);
        p
    }

    async fn emit(&mut self, changes: Vec<MembershipChange>) {
        for change in changes {
            let (state, peer) = match &change {
                MembershipChange::Alive(peer) => ("alive", peer),
                MembershipChange::Expired(peer) => ("expired", peer),
                MembershipChange::Left(peer) => ("left", peer),
            };
            // Named as the operator knows the node.
            let name = self.membership.name_of(peer).unwrap_or("?");
            info!(node = %name, %peer, state = %state, "membership");
            if let MembershipChange::Alive(peer) = &change
                && *peer != self.local_peer_id
                && self.membership.name_of(peer) == Some(self.config.identity.name.as_str())
            {
                warn!(
                    name = %self.config.identity.name,
                    %peer,
                    "another live node uses this node's name: jobs for every node leave both out \
                     and neither can be named as a target until one of them is renamed (--name); \
                     if it is this machine's previous identity (its state directory was wiped), \
                     it expires within three heartbeats and this clears by itself"
                );
            }
            // A node that is leaving tells nobody of members going: it is going itself (when a
            // whole fleet stops, the others' goodbyes come in while it says its own), and
            // results owed to it come after its next start. Written off here, they would be
            // failures shown first and replaced later.
            if self.leaving.is_some() && !matches!(change, MembershipChange::Alive(_)) {
                continue;
            }
            // A goodbye from a member still connected a moment later may be another daemon's
            // with its identity (a copied state directory) that stopped: that member is asked
            // then, and learns it (see `connections::ask_the_left_still_here`).
            if let MembershipChange::Left(peer) = &change
                && *peer != self.local_peer_id
                && self.left_still_here.len() < MAX_LEFT_STILL_HERE
            {
                self.left_still_here.insert(*peer, Instant::now());
            }
            self.tell_member_change(change);
        }
    }

    /// Tells the layer above of `change` without waiting on it: held, with any others held
    /// before it, while its queue is full (a stalled layer above must not stop this loop and
    /// its heartbeats), the latest change of each member only. At most one is held per
    /// member of the table: bounded by the table's size.
    fn tell_member_change(&mut self, change: MembershipChange) {
        if self.held_member_changes.is_empty() {
            match self.events.try_send(MeshEvent::Member(change)) {
                Ok(()) => return,
                // A dropped receiver means nobody listens for events; that is allowed.
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(MeshEvent::Member(change))) => {
                    self.held_member_changes.push_back(change);
                    return;
                }
                Err(mpsc::error::TrySendError::Full(_)) => return,
            }
        }
        let peer = *change.peer();
        match self
            .held_member_changes
            .iter_mut()
            .find(|held| *held.peer() == peer)
        {
            Some(held) => *held = change,
            None => self.held_member_changes.push_back(change),
        }
    }

    /// Hands the layer above the membership changes held for it, as far as its queue has room.
    fn pass_on_held_member_changes(&mut self) {
        while let Some(change) = self.held_member_changes.pop_front() {
            match self.events.try_send(MeshEvent::Member(change)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(MeshEvent::Member(change))) => {
                    self.held_member_changes.push_front(change);
                    return;
                }
                Err(_) => {
                    self.held_member_changes.clear();
                    return;
                }
            }
        }
    }

    fn heartbeat(&mut self) {
        self.seq += 1;
        let presence = self.local_presence(PresenceStatus::Alive);
        self.membership
            .update_local(presence.clone(), Instant::now());
        self.publish_presence(&presence);
    }

    fn publish_presence(&mut self, presence: &Presence) {
        let bytes = match wire::encode(presence, MAX_GOSSIP_BYTES) {
            Ok(b) => b,
            Err(e) => {
                warn!("cannot encode this node's presence: {e}");
                return;
            }
        };
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.presence_topic.clone(), bytes)
        {
            Ok(_) => self.last_presence_publish = Some(Instant::now()),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                debug!("no peer to send presence to yet")
            }
            Err(e) => debug!("presence not published: {e}"),
        }
    }

    fn on_command(&mut self, command: Command) {
        self.after_a_pause(Instant::now());
        let command = match command.request_to() {
            // Held until the connection being closed is gone (see [`Closing`]).
            Some(peer) => match self.closing.hold(peer, command) {
                Ok(()) => return,
                Err(command) => command,
            },
            None => command,
        };
        match command {
            #[cfg(test)]
            Command::CloseOverBudgetThen {
                budget,
                then,
                closing,
            } => self.close_over_budget_then(budget, *then, closing),
            Command::Block {
                peers,
                blocked,
                reply,
            } => {
                let list = &mut self.swarm.behaviour_mut().blocked;
                for peer in peers {
                    if blocked {
                        list.block_peer(peer);
                    } else {
                        list.unblock_peer(peer);
                    }
                }
                let _ = reply.send(());
            }
            Command::Status { reply } => {
                let now = Instant::now();
                let _ = reply.send(MeshStatus {
                    local_peer_id: self.local_peer_id,
                    listen_addrs: self.listen_addrs.clone(),
                    connected_peers: self.swarm.connected_peers().count(),
                    heartbeat_interval: self.current_interval(),
                    members: self.members_now(now),
                    other_releases: self.other_release_views(),
                    unreachable: self
                        .out_of_reach
                        .iter()
                        .filter(|(_, o)| o.said(now))
                        .map(|(peer, _)| *peer)
                        .collect(),
                    warnings: self.warnings(now),
                });
            }
            Command::AliveMembers { reply } => {
                let _ = reply.send(self.alive_or_when_leaving());
            }
            Command::MembersToRemember { others, reply } => {
                let alive = self.alive_or_when_leaving();
                let alive_ids: HashSet<PeerId> = alive.iter().map(|(peer, _)| *peer).collect();
                let others = self
                    .membership
                    .lately_heard_others(others, |peer| alive_ids.contains(peer));
                let _ = reply.send(MembersToRemember { alive, others });
            }
            Command::Shutdown { reply } => self.begin_leave(Some(reply)),
            Command::PublishJobs { data, reply } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.jobs_topic.clone(), data)
                    .map(|_| ())
                    .map_err(|e| MeshError::Publish(e.to_string()));
                let _ = reply.send(result);
            }
            Command::RequestJob { peer, data, reply } => {
                self.dial_for_request(peer);
                let id = self.send_ctl(&peer, CtlRequest::Job(data));
                self.pending_requests.insert(id, reply);
            }
            Command::RequestBlob {
                peer,
                request,
                reply,
            } => {
                self.dial_for_request(peer);
                let id = self.send_blob(&peer, request);
                self.pending_blobs.insert(id, reply);
            }
            Command::ReplyBlob { token, response } => {
                if let Some(channel) = self.pending_blob_replies.remove(&token.0) {
                    // Err: the requester went away; it will ask another holder.
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .blob
                        .send_response(channel, response);
                }
            }
            Command::Reply { token, data } => {
                if let Some(channel) = self.pending_replies.remove(&token.0) {
                    // Err: the requester went away; it will ask again.
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .ctl
                        .send_response(channel, CtlResponse::Job(data));
                }
            }
        }
    }

    /// Gossips the goodbye and also sends it to every connected peer directly, then waits
    /// (bounded by `leave_timeout`) for their acknowledgements.
    fn begin_leave(&mut self, reply: Option<oneshot::Sender<()>>) {
        if let Some(leaving) = &mut self.leaving {
            // Already leaving: the new caller takes the reply slot if it is free.
            if leaving.reply.is_none() {
                leaving.reply = reply;
            }
            return;
        }
        self.seq += 1;
        let presence = self.local_presence(PresenceStatus::Leaving);
        // The goodbye is this node's last word: passed back in a sync, it is its own, not
        // another daemon's with its identity.
        self.membership
            .update_local(presence.clone(), Instant::now());
        self.publish_presence(&presence);
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let outstanding = peers
            .iter()
            .map(|peer| {
                self.send_ctl(
                    peer,
                    CtlRequest::Leave {
                        presence: Box::new(presence.clone()),
                    },
                )
            })
            .collect();
        info!(peers = peers.len(), "leaving the mesh");
        self.leaving = Some(Leaving {
            reply,
            outstanding,
            deadline: tokio::time::Instant::now() + self.config.leave_timeout,
            alive: self.alive_members(),
        });
    }

    /// The members alive, or those alive when this node began to leave.
    fn alive_or_when_leaving(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        match &self.leaving {
            Some(leaving) => leaving.alive.clone(),
            None => self.alive_members(),
        }
    }

    /// The other members alive now, with their addresses.
    fn alive_members(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.membership
            .alive_others(Instant::now())
            .map(|p| (p.peer_id, p.addresses.clone()))
            .collect()
    }

    async fn observe(&mut self, presence: Presence) {
        let changes: Vec<_> = self
            .membership
            .observe(presence, Instant::now())
            .into_iter()
            .collect();
        self.say_if_table_full();
        self.answer_twin().await;
        self.emit(changes).await;
    }

    async fn merge(&mut self, mut records: Vec<wire::MemberRecord>) {
        let now = Instant::now();
        self.membership.keep_authentic(&mut records, now);
        let changes = self.membership.merge(records, now);
        self.say_if_table_full();
        self.answer_twin().await;
        self.emit(changes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host with more addresses than a presence may list (container bridges, IPv6) tells the
    /// most useful ones: what the operator gave first, then routable ones, then link-local,
    /// each in the order found; loopback only when it has nothing else.
    #[test]
    fn a_host_with_many_addresses_advertises_the_most_useful_ones_within_the_limit() {
        let addr = |s: String| s.parse::<Multiaddr>().unwrap();
        let link_local: Vec<Multiaddr> = (0..8)
            .map(|i| addr(format!("/ip6/fe80::{i:x}/tcp/7411")))
            .collect();
        let bridges: Vec<Multiaddr> = (0..20)
            .map(|i| addr(format!("/ip4/172.17.{i}.1/tcp/7411")))
            .collect();
        let global: Vec<Multiaddr> = (0..10)
            .map(|i| addr(format!("/ip6/2001:db8::{i:x}/tcp/7411")))
            .collect();
        let loopback = addr("/ip4/127.0.0.1/tcp/7411".into());
        let given = addr("/ip4/192.0.2.10/tcp/7411".into());
        // 40 addresses, as the swarm may report them: interleaved, the configured one last.
        let mut found = vec![loopback.clone()];
        found.extend(link_local.iter().take(4).cloned());
        found.extend(bridges.iter().cloned());
        found.extend(link_local.iter().skip(4).cloned());
        found.extend(global.iter().cloned());
        found.push(given.clone());
        assert_eq!(found.len(), 40);

        let told = advertised_preferring(&found, std::slice::from_ref(&given));
        let mut expected = vec![given];
        expected.extend(bridges);
        expected.extend(global);
        expected.push(link_local[0].clone());
        assert_eq!(told.len(), wire::MAX_PRESENCE_ADDRESSES);
        assert_eq!(told, expected);
        // Peers take a presence listing them.
        let mut presence = sample_presence();
        presence.addresses = told;
        assert_eq!(presence.implausible(), None);
        // Without configured addresses the same order holds, from the routable ones on.
        assert_eq!(advertised(&found)[..20], expected[1..21]);
        // A node on loopback alone tells that.
        assert_eq!(advertised(std::slice::from_ref(&loopback)), vec![loopback]);
    }

    fn sample_presence() -> Presence {
        Presence::sample_for_tests("web-01")
    }

    #[test]
    fn a_node_is_named_as_the_table_knows_it_else_by_its_id() {
        let known = PeerId::random();
        let member = MemberView {
            presence: Presence {
                peer_id: known,
                ..sample_presence()
            },
            state: crate::membership::MemberState::Alive,
            last_seen_ago: Duration::ZERO,
            is_self: false,
        };
        let status = MeshStatus {
            local_peer_id: PeerId::random(),
            listen_addrs: vec![],
            connected_peers: 0,
            heartbeat_interval: Duration::from_secs(5),
            members: vec![member],
            other_releases: vec![],
            unreachable: vec![],
            warnings: vec![],
        };
        assert_eq!(status.name_or_id(&known.to_string()), "web-01");
        let stranger = PeerId::random().to_string();
        assert_eq!(status.name_or_id(&stranger), stranger);
        assert_eq!(status.name_or_id("not an id"), "not an id");
    }
}
