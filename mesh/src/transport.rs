//! Building the swarm: identity, transport and behaviour.
//!
//! Two transports, chosen when a node is built:
//! - **TCP** (daemons): TCP, then the private-network layer ([`crate::private`]) when the mesh has a key (a peer
//!   without the key fails here, before anything else), then Noise and Yamux.
//! - **Memory** (tests and simulations, many nodes in one process): libp2p's in-process
//!   transport with the same upgrades, optionally with the same private-network layer, and
//!   optionally with latency and loss on every link ([`crate::shaped`]).

use std::time::Duration;

use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, Transport,
    core::{
        muxing::StreamMuxerBox,
        transport::{self, Boxed, MemoryTransport},
        upgrade,
    },
    identity::Keypair,
    noise, tcp, yamux,
};

use crate::{
    behaviour::MeshBehaviour,
    key::MeshKey,
    private,
    shaped::{LinkShape, Shaped},
};

/// Which transport a node speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Tcp,
    Memory,
    /// The memory transport with latency and loss on every link (simulations).
    ShapedMemory(LinkShape),
}

type BoxedTransport = Boxed<(PeerId, StreamMuxerBox)>;

/// Idle connections to non-gossip peers are closed after this long.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);

/// How long data sent on a TCP connection may go unacknowledged before the kernel closes it
/// (`TCP_USER_TIMEOUT`; pings send something every 10 s). A peer cut off by a dropped route or
/// a firewall would otherwise keep its connection "open" for the kernel's quarter of an hour
/// of retransmissions, and requests sent on it (file chunks, results) would wait for their
/// own timeouts instead of failing over to another node.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets [`TCP_USER_TIMEOUT`] on a new connection's socket. A failure (a kernel without the
/// option) leaves the kernel's default.
fn with_user_timeout(stream: tcp::tokio::TcpStream) -> tcp::tokio::TcpStream {
    use nix::sys::socket::{setsockopt, sockopt::TcpUserTimeout};
    if let Err(e) = setsockopt(
        &stream.0,
        TcpUserTimeout,
        &(TCP_USER_TIMEOUT.as_millis() as u32),
    ) {
        tracing::debug!("TCP_USER_TIMEOUT not set: {e}");
    }
    stream
}

fn upgrade_transport<T>(
    base: T,
    key: &Keypair,
    mesh_key: Option<MeshKey>,
) -> Result<BoxedTransport, noise::Error>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Send + Unpin + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    let noise = noise::Config::new(key)?;
    let yamux = yamux::Config::default();
    Ok(match mesh_key {
        Some(mesh_key) => {
            let key = mesh_key.bytes();
            base.and_then(move |socket, _| private::handshake(key, socket))
                .upgrade(upgrade::Version::V1)
                .authenticate(noise)
                .multiplex(yamux)
                .boxed()
        }
        None => base
            .upgrade(upgrade::Version::V1)
            .authenticate(noise)
            .multiplex(yamux)
            .boxed(),
    })
}

/// TCP that dials from a new port every time. libp2p otherwise dials from the listening port
/// (bound to every address), and two daemons on one machine with the same port on two
/// loopback addresses (127.0.0.1:7431, 127.0.0.2:7431) would connect each to itself: the
/// handshake fails with an error that blames the mesh key. No one here needs the port
/// reused (it serves hole punching; members learn each other's addresses from presence).
struct DialFromNewPorts<T>(T);

impl<T: Transport + Unpin> Transport for DialFromNewPorts<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: transport::ListenerId,
        addr: Multiaddr,
    ) -> Result<(), transport::TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: transport::ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: transport::DialOpts,
    ) -> Result<Self::Dial, transport::TransportError<Self::Error>> {
        let opts = transport::DialOpts {
            port_use: transport::PortUse::New,
            ..opts
        };
        self.0.dial(addr, opts)
    }

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<transport::TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

/// Builds the swarm of one node.
pub(crate) fn build_swarm(
    keypair: Keypair,
    kind: TransportKind,
    mesh_key: Option<MeshKey>,
) -> Result<Swarm<MeshBehaviour>, String> {
    let builder = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(
            |key| -> Result<BoxedTransport, Box<dyn std::error::Error + Send + Sync>> {
                let transport = match kind {
                    TransportKind::Tcp => upgrade_transport(
                        DialFromNewPorts(tcp::tokio::Transport::new(
                            tcp::Config::default().nodelay(true),
                        ))
                        .map(|stream, _| with_user_timeout(stream)),
                        key,
                        mesh_key,
                    ),
                    TransportKind::Memory => {
                        upgrade_transport(MemoryTransport::default(), key, mesh_key)
                    }
                    TransportKind::ShapedMemory(shape) => upgrade_transport(
                        MemoryTransport::default().map(move |conn, _| Shaped::new(conn, shape)),
                        key,
                        mesh_key,
                    ),
                };
                Ok(transport?)
            },
        )
        .map_err(|e| format!("transport: {e}"))?;
    let swarm = builder
        .with_behaviour(|key| MeshBehaviour::new(key).map_err(Into::into))
        .map_err(|e| format!("behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}
