//! The network layer of directord-mesh.
//!
//! Everything that touches libp2p lives here and nothing here knows what a job means:
//!
//! - [`wire`]: the versioned CBOR messages nodes exchange, with size-checked decoders;
//! - [`codec`]: the length-prefixed request-response codec built on them;
//! - [`key`]: the mesh key (private network) and the join token;
//! - [`private`]: the private-network layer every connection starts with;
//! - [`membership`]: the sans-IO membership table (alive / expired / left / conflict);
//! - [`network`]: the swarm event loop and its cloneable [`MeshHandle`];
//! - [`shaped`]: in-process links with latency and loss (the simulator's tier 2);
//! - [`tuning`]: the numbers that shape the mesh's traffic, for models of it.
//!
//! The swarm runs TCP + private network + Noise + Yamux for daemons, or libp2p's memory
//! transport with the same upgrades when many nodes share one process (tests, simulations).

pub mod codec;
pub mod key;
pub mod membership;
pub mod network;
pub mod private;
pub mod shaped;
pub mod wire;

mod behaviour;
mod transport;

pub use behaviour::{BLOB_PROTOCOL, CTL_PROTOCOL, JOBS_TOPIC, PRESENCE_TOPIC};

/// The numbers that shape the mesh's traffic, for models of it (the simulator).
pub mod tuning {
    pub use crate::behaviour::{
        BLOB_TIMEOUT, CTL_TIMEOUT, GOSSIP_HEARTBEAT, IDONTWANT_THRESHOLD, MESH_N, MESH_N_HIGH,
        MESH_N_LOW,
    };
    pub use crate::membership::{EXPIRY_INTERVALS, heartbeat_interval};
    pub use crate::network::DEFAULT_TARGET_PEERS;
    pub use crate::wire::MAX_GOSSIP_BYTES;
}
pub use key::{JoinToken, KeyError, MeshKey};
pub use libp2p::{Multiaddr, PeerId, identity::Keypair, multiaddr};

/// `addr` ending in `/p2p/<peer>`, so that dialing it checks who answers.
pub fn multiaddr_with_peer(addr: Multiaddr, peer: PeerId) -> Multiaddr {
    match addr.iter().last() {
        Some(multiaddr::Protocol::P2p(_)) => addr,
        _ => addr.with(multiaddr::Protocol::P2p(peer)),
    }
}
pub use membership::{FORGET_AFTER, MemberState, MemberView, MembershipChange};
pub use network::{
    BlobToken, LocalIdentity, MembersToRemember, Mesh, MeshConfig, MeshError, MeshEvent,
    MeshHandle, MeshStatus, OtherReleaseView, ReplyToken, start,
};
pub use shaped::LinkShape;
pub use transport::TransportKind;
