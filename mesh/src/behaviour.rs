//! The libp2p `NetworkBehaviour` of a mesh node and the tuning of each protocol in it.
//!
//! - gossipsub carries presence ([`PRESENCE_TOPIC`]) and job announces and QUERY sets
//!   ([`JOBS_TOPIC`]): signed, strict validation, message id = blake3 of the payload, mesh
//!   degrees tuned so that small meshes (2–20 nodes) form a full mesh instead of logging "mesh
//!   low" forever.
//! - `/directord/ctl/1` is the reliable point-to-point path (request-response, bounded frames):
//!   membership syncs and job messages.
//! - `/directord/blob/1` carries file chunks ([`BLOB_PROTOCOL`], its own timeout and streams).
//! - ping notices dead connections that TCP alone would keep open across a partition.
//! - connection limits cap duplicate connections to one peer (two connections double gossip);
//!   one more is let in so that the event loop can keep the newest two (see
//!   [`MAX_CONNECTIONS_PER_PEER`]); and the incoming connections still in their handshake
//!   ([`max_pending_incoming`]).

use std::time::Duration;

use libp2p::{
    StreamProtocol, allow_block_list, connection_limits, gossipsub, identity::Keypair, ping,
    request_response, swarm::NetworkBehaviour,
};

use crate::{
    codec::{BlobCodec, CborCodec},
    wire::{CtlRequest, CtlResponse, MAX_CTL_BYTES, MAX_GOSSIP_BYTES},
};

/// The control protocol's name and version.
pub const CTL_PROTOCOL: StreamProtocol = StreamProtocol::new("/directord/ctl/1");
/// The blob protocol: chunks of content-addressed files.
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/directord/blob/1");
/// Gossip topic of presence heartbeats.
pub const PRESENCE_TOPIC: &str = "directord/presence/1";
/// Gossip topic of job announces.
pub const JOBS_TOPIC: &str = "directord/jobs/1";

/// Connections kept open to one peer: two, for two nodes that dial each other at once. The
/// limit lets in one more, and the event loop closes the peer's oldest: a peer id whose two
/// connections linger after its machine lost the network (its node restarted elsewhere, or a
/// copy of its state directory started) is let in from its new connection at once, not only
/// once they are found dead (about half a minute: see `transport::TCP_USER_TIMEOUT`). With one
/// lingering, the new connection is the second, let in anyway; until the old one is found
/// dead, some requests to the peer go on it and fail, and are sent again.
pub const MAX_CONNECTIONS_PER_PEER: usize = 2;

/// Incoming connections in their handshake at once, at most, as a share of the descriptors
/// the process may open (see [`max_pending_incoming`]), and the bounds of that number.
const PENDING_INCOMING_SHARE: u64 = 2;
pub const MIN_PENDING_INCOMING: u32 = 64;
pub const MAX_PENDING_INCOMING: u32 = 8192;

/// How many incoming connections may be in their handshake at once: half the descriptors this
/// process may open, 64 to 8 192. Anyone who can reach the port can open connections, mesh key
/// or not, and each holds a descriptor until its handshake times out (10 s); unbounded, a
/// flood of silent connections took every descriptor, and with them the control socket, jobs'
/// pipes and files. Half stays for those. Past the limit a new connection is closed at once
/// (a node dialling then tries again). A burst of members dialling one node at once (a
/// thousand targets sending their results to a submitter) stays under it where the process
/// may open enough descriptors to hold their connections at all.
pub fn max_pending_incoming() -> u32 {
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(soft, _)| soft);
    let share = soft / PENDING_INCOMING_SHARE;
    u32::try_from(share)
        .unwrap_or(u32::MAX)
        .clamp(MIN_PENDING_INCOMING, MAX_PENDING_INCOMING)
}

/// How long a control exchange may take, end to end (libp2p's timeout covers the whole exchange).
pub const CTL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one chunk may take.
pub const BLOB_TIMEOUT: Duration = Duration::from_secs(60);
/// gossipsub heartbeat: mesh upkeep and IHAVE gossip.
pub const GOSSIP_HEARTBEAT: Duration = Duration::from_millis(700);
/// gossipsub mesh degree: wanted, least before grafting more, most before pruning.
pub const MESH_N: usize = 6;
pub const MESH_N_LOW: usize = 3;
pub const MESH_N_HIGH: usize = 12;
/// Receivers of a message larger than this tell their mesh peers not to send it again.
pub const IDONTWANT_THRESHOLD: usize = 1000;

#[derive(NetworkBehaviour)]
pub(crate) struct MeshBehaviour {
    /// Peers this node refuses to be connected to (empty in normal operation; simulations
    /// block peers to split the mesh).
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) ctl: request_response::Behaviour<CborCodec<CtlRequest, CtlResponse>>,
    pub(crate) blob: request_response::Behaviour<BlobCodec>,
    pub(crate) ping: ping::Behaviour,
}

impl MeshBehaviour {
    pub(crate) fn new(key: &Keypair) -> Result<Self, String> {
        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(GOSSIP_HEARTBEAT)
            .heartbeat_initial_delay(Duration::from_millis(100))
            .mesh_n(MESH_N)
            .mesh_n_low(MESH_N_LOW)
            .mesh_n_high(MESH_N_HIGH)
            .idontwant_message_size_threshold(IDONTWANT_THRESHOLD)
            .mesh_outbound_min(1)
            .validation_mode(gossipsub::ValidationMode::Strict)
            // Passed on only once the node has taken it (`network::swarm_events`).
            .validate_messages()
            .message_id_fn(|m: &gossipsub::Message| {
                gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
            })
            // Room for the signature, key and topic on top of the largest payload.
            .max_transmit_size(MAX_GOSSIP_BYTES + 4096)
            .flood_publish(true)
            .build()
            .map_err(|e| format!("gossipsub configuration: {e}"))?;
        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )
        .map_err(|e| format!("gossipsub: {e}"))?;
        let ctl = request_response::Behaviour::with_codec(
            CborCodec::new(MAX_CTL_BYTES, MAX_CTL_BYTES),
            [(CTL_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(CTL_TIMEOUT)
                .with_max_concurrent_streams(256),
        );
        let blob = request_response::Behaviour::with_codec(
            BlobCodec,
            [(BLOB_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(BLOB_TIMEOUT)
                .with_max_concurrent_streams(64),
        );
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER as u32 + 1))
                .with_max_pending_incoming(Some(max_pending_incoming())),
        );
        let ping = ping::Behaviour::new(
            ping::Config::new()
                .with_interval(Duration::from_secs(10))
                .with_timeout(Duration::from_secs(10)),
        );
        Ok(Self {
            blocked: allow_block_list::Behaviour::default(),
            limits,
            gossipsub,
            ctl,
            blob,
            ping,
        })
    }
}
