//! Keeping this node connected: maintenance every second dials enough random members that
//! the mesh survives the loss of any one, redials the bootstrap peers while nobody answers,
//! reaches across a healed partition, drops connections whose subscriptions never came,
//! closes idle connections over the connection budget, and gives members their time back
//! after this process was paused.

use super::*;
use libp2p::swarm::ConnectionId;

/// Whom to dial to reach the mesh: a node named by the `/p2p/` part of its addresses, with all
/// of them, or an address given without its node's id.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Contact {
    Node(PeerId, Vec<Multiaddr>),
    Address(Multiaddr),
}

impl Contact {
    /// The bootstrap and known-peer addresses as contacts, a node's addresses together, in
    /// the order first given.
    fn all(bootstrap: &[Multiaddr]) -> Vec<Contact> {
        let mut contacts: Vec<Contact> = Vec::new();
        for addr in bootstrap {
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                contacts.push(Contact::Address(addr.clone()));
                continue;
            };
            match contacts
                .iter_mut()
                .find(|c| matches!(c, Contact::Node(p, _) if *p == peer))
            {
                Some(Contact::Node(_, addrs)) => addrs.push(addr.clone()),
                _ => contacts.push(Contact::Node(peer, vec![addr.clone()])),
            }
        }
        contacts
    }
}

/// Dials of the bootstrap and known peers while this node is connected to others, one every
/// [`ACROSS_A_SPLIT_EVERY`], in turn. Two halves of a split mesh that each keep connections
/// among themselves otherwise stop reaching across once they have forgotten each other
/// ([`membership::FORGET_AFTER`]), and never heal; one dial across is enough, since a dial to
/// a node not known as alive syncs whole tables.
#[derive(Debug)]
pub(super) struct AcrossASplit {
    last: Instant,
    next: usize,
}

impl AcrossASplit {
    /// None dialled yet; the first is due [`ACROSS_A_SPLIT_EVERY`] after `start`.
    pub(super) fn new(start: Instant) -> Self {
        Self {
            last: start,
            next: 0,
        }
    }

    /// The contact to dial at `now`, if one is due: the next in turn that is neither this node
    /// (`local`) nor a node it reaches already (`reached`: connected, or alive in its table,
    /// so on this side of any split). Addresses given without a node's id are dialled in
    /// their turn whatever they lead to.
    pub(super) fn due(
        &mut self,
        now: Instant,
        bootstrap: &[Multiaddr],
        local: PeerId,
        reached: impl Fn(&PeerId) -> bool,
    ) -> Option<Contact> {
        if now.saturating_duration_since(self.last) < ACROSS_A_SPLIT_EVERY {
            return None;
        }
        let contacts = Contact::all(bootstrap);
        let count = contacts.len();
        let (index, contact) = contacts
            .into_iter()
            .enumerate()
            .cycle()
            .skip(self.next % count.max(1))
            .take(count)
            .find(|(_, c)| match c {
                Contact::Node(peer, _) => *peer != local && !reached(peer),
                Contact::Address(_) => true,
            })?;
        self.last = now;
        self.next = index + 1;
        Some(contact)
    }
}

/// Which request-response protocol an exchange runs on (each numbers its requests on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum RequestProtocol {
    Ctl,
    Blob,
}

/// One request-response exchange with a peer: a request this node sent, until its answer or
/// failure, or one it received, until its answer is sent or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Exchange {
    Outbound(RequestProtocol, request_response::OutboundRequestId),
    Inbound(RequestProtocol, request_response::InboundRequestId),
}

/// An exchange counts as under way at most this long: every request's own timeout (the
/// longest is the blob protocol's minute, counted once for opening its stream and once for the
/// exchange) plus a dial have passed long before. Past it, an end libp2p never reported
/// stops keeping the connection open.
const EXCHANGE_LASTS_AT_MOST: Duration = Duration::from_secs(300);

/// How a connected peer's connection is used, as the connection budget weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LastUse {
    /// An exchange is under way: closing would fail it.
    Busy,
    /// Nothing under way; last used (a request, an answer, the connection opening) then.
    Since(Instant),
}

/// When requests last used each peer's connection, and the exchanges under way with it: what
/// the connection budget needs to close only connections nobody uses. One row per connected
/// peer (or peer with an exchange under way, such as a request waiting for its dial).
/// Generic over what names an exchange only so that tests can name their own.
#[derive(Debug)]
pub(super) struct PeerUse<E = Exchange> {
    peers: HashMap<PeerId, PeerRow<E>>,
}

impl<E> Default for PeerUse<E> {
    fn default() -> Self {
        Self {
            peers: HashMap::new(),
        }
    }
}

#[derive(Debug)]
struct PeerRow<E> {
    last: Instant,
    /// Each exchange under way, and when it began.
    open: HashMap<E, Instant>,
}

impl<E: Eq + std::hash::Hash> PeerUse<E> {
    fn row(&mut self, peer: PeerId, now: Instant) -> &mut PeerRow<E> {
        self.peers.entry(peer).or_insert_with(|| PeerRow {
            last: now,
            open: HashMap::new(),
        })
    }

    /// `peer`'s connection was used at `now` (it opened, say).
    pub(super) fn used(&mut self, peer: PeerId, now: Instant) {
        self.row(peer, now).last = now;
    }

    /// An exchange with `peer` began at `now`.
    pub(super) fn began(&mut self, peer: PeerId, exchange: E, now: Instant) {
        let row = self.row(peer, now);
        row.last = now;
        row.open.insert(exchange, now);
    }

    /// An exchange with `peer` ended (answered or failed) at `now`.
    pub(super) fn ended(&mut self, peer: PeerId, exchange: E, now: Instant) {
        let row = self.row(peer, now);
        row.last = now;
        row.open.remove(&exchange);
    }

    /// How `peer`'s connection is used as of `now`; a peer with no row yet counts as used now.
    pub(super) fn last_use(&mut self, peer: PeerId, now: Instant) -> LastUse {
        let row = self.row(peer, now);
        row.open
            .retain(|_, began| now.saturating_duration_since(*began) < EXCHANGE_LASTS_AT_MOST);
        match row.open.is_empty() {
            true => LastUse::Since(row.last),
            false => LastUse::Busy,
        }
    }

    /// Forgets the peers no longer `connected` with nothing under way.
    pub(super) fn keep_only(&mut self, connected: impl Fn(&PeerId) -> bool, now: Instant) {
        self.peers.retain(|peer, row| {
            row.open
                .retain(|_, began| now.saturating_duration_since(*began) < EXCHANGE_LASTS_AT_MOST);
            connected(peer) || !row.open.is_empty()
        });
    }
}

/// The connections to close so that at most `budget` peers stay connected: of the `connected`
/// peers, those outside this node's gossip meshes (`in_mesh`: closing one would cost gossip a
/// path it relies on) with no exchange under way and unused for at least `idle_after`, the
/// least recently used first, no more than the number over the budget. None while within it.
pub(super) fn peers_to_close(
    connected: &[(PeerId, LastUse)],
    in_mesh: &HashSet<PeerId>,
    budget: usize,
    idle_after: Duration,
    now: Instant,
) -> Vec<PeerId> {
    let over = connected.len().saturating_sub(budget);
    if over == 0 {
        return Vec::new();
    }
    let mut idle: Vec<(Instant, PeerId)> = connected
        .iter()
        .filter(|(peer, _)| !in_mesh.contains(peer))
        .filter_map(|(peer, last_use)| match last_use {
            LastUse::Since(at) if now.saturating_duration_since(*at) >= idle_after => {
                Some((*at, *peer))
            }
            _ => None,
        })
        .collect();
    idle.sort();
    idle.into_iter().take(over).map(|(_, peer)| peer).collect()
}

/// A close the connection budget began counts as under way at most this long (a close
/// ordinarily takes a round trip). Past it the requests waiting for it are sent as they are:
/// on a connection still closing they fail, and their senders retry as after any failure.
const CLOSE_TAKES_AT_MOST: Duration = Duration::from_secs(10);

/// The requests at most that wait for one peer's close; any more are sent as they are (see
/// [`CLOSE_TAKES_AT_MOST`]). Well above what the layer above keeps under way to one peer (a
/// download asks a source for a few chunks at a time, results go one batch at a time), so
/// this only bounds the memory held: with the time bound, at most this many requests per peer
/// being closed, for at most that long.
const MAX_WAITING_FOR_A_CLOSE: usize = 64;

/// Peers whose connections the connection budget is closing, and the requests for them that
/// wait until those connections are gone. A connection being closed still counts as open
/// until the swarm reports it closed: a request sent to its peer meanwhile would go on it and
/// fail with it (request-response picks among the open connections), where once it is gone
/// the request dials again. Generic over what waits only so that tests can name their own.
pub(super) struct Closing<W = Command> {
    peers: HashMap<PeerId, ClosingPeer<W>>,
}

impl<W> Default for Closing<W> {
    fn default() -> Self {
        Self {
            peers: HashMap::new(),
        }
    }
}

/// One peer being closed.
struct ClosingPeer<W> {
    /// When the close began.
    since: Instant,
    /// Connections to the peer opened after the close began (the peer dialled again): not
    /// being closed, so not waited for.
    opened_since: HashSet<ConnectionId>,
    /// Requests to send once the close is done, in the order they came.
    waiting: Vec<W>,
}

impl<W> Closing<W> {
    /// Every connection `peer` has now is being closed, from `now` on. A close already under
    /// way goes on as it is.
    pub(super) fn begin(&mut self, peer: PeerId, now: Instant) {
        self.peers.entry(peer).or_insert_with(|| ClosingPeer {
            since: now,
            opened_since: HashSet::new(),
            waiting: Vec::new(),
        });
    }

    pub(super) fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Keeps `request` to `peer` until the close under way is done; gives it back to be sent
    /// now when none is, or when [`MAX_WAITING_FOR_A_CLOSE`] already wait.
    pub(super) fn hold(&mut self, peer: PeerId, request: W) -> Result<(), W> {
        match self.peers.get_mut(&peer) {
            Some(closing) if closing.waiting.len() < MAX_WAITING_FOR_A_CLOSE => {
                closing.waiting.push(request);
                Ok(())
            }
            _ => Err(request),
        }
    }

    /// A connection to `peer` opened (`connection`).
    pub(super) fn opened(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(closing) = self.peers.get_mut(&peer) {
            closing.opened_since.insert(connection);
        }
    }

    /// A connection to `peer` closed (`connection`), leaving `remaining` open: once those are
    /// all opened after the close began, the close is done and its waiting requests are given
    /// back, to be sent.
    pub(super) fn closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        remaining: usize,
    ) -> Vec<W> {
        let Some(closing) = self.peers.get_mut(&peer) else {
            return Vec::new();
        };
        closing.opened_since.remove(&connection);
        if remaining > closing.opened_since.len() {
            return Vec::new();
        }
        self.peers
            .remove(&peer)
            .map(|closing| closing.waiting)
            .unwrap_or_default()
    }

    /// Gives up the closes under way for [`CLOSE_TAKES_AT_MOST`] as of `now`: their waiting
    /// requests are given back, to be sent as they are.
    pub(super) fn overdue(&mut self, now: Instant) -> Vec<W> {
        let late: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.since) >= CLOSE_TAKES_AT_MOST)
            .map(|(peer, _)| *peer)
            .collect();
        late.into_iter()
            .filter_map(|peer| self.peers.remove(&peer))
            .flat_map(|closing| closing.waiting)
            .collect()
    }
}

/// What this node keeps of each connected peer, from its first connection opening to its
/// last closing (the entry goes with the last): its open connections, oldest first, how long
/// it has gone without its gossip subscriptions heard, and what it said of them.
///
/// Past [`MAX_CONNECTIONS_PER_PEER`](crate::behaviour::MAX_CONNECTIONS_PER_PEER) connections,
/// the oldest is closed: a peer that dials a third time may have lost the old ones (its
/// machine lost the network; a copy of its state directory runs elsewhere).
///
/// A peer that started over is reconnected. Gossipsub tells a peer this node's subscriptions
/// only on the first connection between the two, and a daemon tells its own on its first
/// connection to a node: a peer that tells them a second time started over on its side while
/// this node's side went on, so it never heard this node's and cannot publish here. Once also
/// one of its connections was found dead (a failed ping, or a connection that [`broke`])
/// while others stay, the old daemon is gone: the peer is reconnected, and the next
/// connection is a first on both sides. Two daemons with one identity both running tell their
/// subscriptions in turn too, but their connections do not die (they close, by the later
/// daemon's choice or for being idle): they are left as they are (reconnecting them would let
/// one take both connections of the peer id, and the other would go unheard).
#[derive(Debug, Default)]
pub(super) struct ConnectedPeers {
    peers: HashMap<PeerId, ConnectedPeer>,
    /// Connections being closed after a failed ping.
    dead: HashSet<ConnectionId>,
}

#[derive(Debug)]
struct ConnectedPeer {
    /// Open connections, oldest first.
    open: Vec<ConnectionId>,
    /// Since when the peer's subscriptions are awaited: its first connection, or none once
    /// it was dropped for never telling them (counted again from its next first connection).
    awaited_since: Option<Instant>,
    /// It told its subscription to the presence topic, and told it again.
    told: bool,
    told_again: bool,
    /// One of its connections was found dead.
    lost_one: bool,
}

impl ConnectedPeer {
    fn started_over(&self) -> bool {
        self.told_again && self.lost_one
    }
}

impl ConnectedPeers {
    /// `connection` to `peer` opened at `now`: the peer's oldest connections beyond the
    /// number kept, to close.
    pub(super) fn opened(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        now: Instant,
    ) -> Vec<ConnectionId> {
        let p = self.peers.entry(peer).or_insert_with(|| ConnectedPeer {
            open: Vec::new(),
            awaited_since: Some(now),
            told: false,
            told_again: false,
            lost_one: false,
        });
        p.open.push(connection);
        let over = p
            .open
            .len()
            .saturating_sub(crate::behaviour::MAX_CONNECTIONS_PER_PEER);
        p.open.drain(..over).collect()
    }

    /// `connection` is being closed after a failed ping.
    pub(super) fn dead(&mut self, connection: ConnectionId) {
        self.dead.insert(connection);
    }

    /// `connection` to `peer` closed, `broke` if it broke (see [`broke`]): whether to
    /// reconnect the peer now, as one that started over.
    pub(super) fn closed(&mut self, peer: PeerId, connection: ConnectionId, broke: bool) -> bool {
        let dead = self.dead.remove(&connection) || broke;
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        p.open.retain(|c| *c != connection);
        if p.open.is_empty() {
            self.peers.remove(&peer);
            return false;
        }
        p.lost_one |= dead;
        p.started_over()
    }

    /// `peer` told its subscription to the presence topic: whether to reconnect it now, as
    /// one that started over.
    pub(super) fn told(&mut self, peer: PeerId) -> bool {
        // Gossip comes from connected peers only; a peer not here has nothing to reconnect.
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        p.told_again |= p.told;
        p.told = true;
        p.started_over()
    }

    /// The peers whose subscriptions have been awaited for `within` or longer at `now`.
    pub(super) fn awaited_for(&self, within: Duration, now: Instant) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| {
                p.awaited_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= within)
            })
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// `peer` is dropped for never telling its subscriptions: no longer awaited until its
    /// next first connection.
    pub(super) fn await_next_connection(&mut self, peer: &PeerId) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.awaited_since = None;
        }
    }
}

/// Whether a connection closed with `error` broke: the kernel gave up on data the peer never
/// acknowledged (`TCP_USER_TIMEOUT`), or the peer's machine reset it. A close by the peer, or
/// for being idle, is no sign of a daemon gone. The transport's layers wrap the socket's
/// error in their own, so the chain is walked.
pub(super) fn broke(error: &libp2p::swarm::ConnectionError) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, TimedOut};
    let libp2p::swarm::ConnectionError::IO(io) = error else {
        return false;
    };
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(io);
    // A chain longer than this is no error of the transport's layers.
    for _ in 0..16 {
        let Some(e) = next else {
            return false;
        };
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), TimedOut | ConnectionReset | ConnectionAborted) {
                return true;
            }
            // `io::Error::source` skips the error it wraps: look at that one itself.
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = e.source();
    }
    false
}

impl EventLoop {
    /// Sends a control request to `peer`, counted as an exchange under way until it ends.
    pub(super) fn send_ctl(&mut self, peer: &PeerId, request: CtlRequest) -> OutboundRequestId {
        let id = self.swarm.behaviour_mut().ctl.send_request(peer, request);
        let exchange = Exchange::Outbound(RequestProtocol::Ctl, id);
        self.peer_use.began(*peer, exchange, Instant::now());
        id
    }

    /// Asks `peer` for a chunk, counted as an exchange under way until it ends.
    pub(super) fn send_blob(&mut self, peer: &PeerId, request: BlobRequest) -> OutboundRequestId {
        let id = self.swarm.behaviour_mut().blob.send_request(peer, request);
        let exchange = Exchange::Outbound(RequestProtocol::Blob, id);
        self.peer_use.began(*peer, exchange, Instant::now());
        id
    }

    /// Closes idle connections while more peers are connected than the budget (see
    /// [`ConnectionBudget`] and [`peers_to_close`]). The budget is never below `target_peers`,
    /// so this never closes what `keep_connected` would dial again; a peer closed here is
    /// dialled again by the next request to it (`dial_for_request`), which waits for the close
    /// to be done (see [`Closing`]). Peers being closed count as gone already.
    pub(super) fn trim_connections(&mut self, now: Instant) {
        let connected: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|peer| !self.closing.contains(peer))
            .copied()
            .collect();
        self.peer_use.keep_only(|p| self.swarm.is_connected(p), now);
        let budget = self
            .config
            .connection_budget
            .applied(self.config.target_peers);
        let max_peers = budget.max_peers;
        if connected.len() <= max_peers {
            return;
        }
        let uses: Vec<(PeerId, LastUse)> = connected
            .into_iter()
            .map(|peer| (peer, self.peer_use.last_use(peer, now)))
            .collect();
        let in_mesh: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_mesh_peers()
            .copied()
            .collect();
        let close = peers_to_close(&uses, &in_mesh, max_peers, budget.idle_after, now);
        if close.is_empty() {
            return;
        }
        debug!(
            connected = uses.len(),
            closing = close.len(),
            budget = max_peers,
            "over the connection budget: closing connections unused for {} s",
            budget.idle_after.as_secs()
        );
        for peer in close {
            // Err: already gone.
            if self.swarm.disconnect_peer_id(peer).is_ok() {
                self.closing.begin(peer, now);
            }
        }
    }

    /// Tests only: applies `budget` from now on and closes what it closes at once, as
    /// maintenance does each second, then handles `then` in the same turn, before the swarm
    /// can report any of those connections gone: a command (a request) coming in the very
    /// moment the budget begins a close. Tells `closing` which peers are being closed.
    #[cfg(test)]
    pub(super) fn close_over_budget_then(
        &mut self,
        budget: ConnectionBudget,
        then: Command,
        closing: oneshot::Sender<Vec<PeerId>>,
    ) {
        self.config.connection_budget = budget;
        self.trim_connections(Instant::now());
        let peers = self
            .swarm
            .connected_peers()
            .filter(|peer| self.closing.contains(peer))
            .copied()
            .collect();
        self.on_command(then);
        let _ = closing.send(peers);
    }

    /// Sends the requests that waited for a close done (or given up on, at `now`).
    pub(super) fn send_after_closes(&mut self, now: Instant) {
        for request in self.closing.overdue(now) {
            self.on_command(request);
        }
    }

    /// Gives the members their time back if this node did not run for a while (see
    /// [`PAUSED_AFTER`]): before anything reads the table's states after a pause, whichever
    /// comes first (maintenance, or a command such as `alive_members` that the layer above
    /// sends as soon as it runs again).
    pub(super) fn after_a_pause(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_ran);
        self.last_ran = now;
        if gap >= PAUSED_AFTER {
            // A pause, not a busy moment (see `AFTER_A_PAUSE_NO_STRANGERS`).
            if gap >= PAUSE_LOGGED_AFTER {
                info!(
                    secs = gap.as_secs(),
                    "this node did not run for a while (stopped or paused): the members alive \
                     before are given that time back"
                );
                self.resumed_at = Some(now);
            }
            self.membership.resumed(gap, now);
        }
    }

    /// Once a second: expire silent members, keep enough connections, redial bootstrap peers,
    /// and now and then synchronise tables with a random peer.
    pub(super) async fn maintain(&mut self) {
        let now = Instant::now();
        self.after_a_pause(now);
        let changes = self.membership.tick(now);
        self.emit(changes).await;
        self.other_releases
            .retain(|_, o| now.saturating_duration_since(o.last_heard) < OTHER_RELEASE_SHOWN_FOR);
        self.drop_peers_without_subscriptions(now);
        // Spells no dial has renewed lately are over (the member left, or nothing needed it).
        self.out_of_reach
            .retain(|_, o| now.saturating_duration_since(o.last) < 10 * OUT_OF_REACH_SAID_AFTER);
        // A spell counts while the member is alive by the table: one expired meanwhile (a whole
        // partition) is out of everybody's reach, not of this node's alone, and is not to be
        // called a partial partition the moment it is heard again, before a dial could succeed.
        // (A spell the log has told of stays told: its "reachable again" still comes.)
        for (peer, spell) in &mut self.out_of_reach {
            if !self.membership.is_alive(peer, now) {
                spell.since = now;
            }
        }
        self.log_out_of_reach(now);
        self.send_after_closes(now);
        self.trim_connections(now);
        self.keep_connected(now);
        self.warn_if_alone(now);
        if now.saturating_duration_since(self.last_reconnect) >= RECONNECT_EVERY {
            self.last_reconnect = now;
            self.reconnect_one(now);
        }
        self.ask_the_left_still_here(now);
        if now.saturating_duration_since(self.last_sync) >= SYNC_EVERY {
            self.last_sync = now;
            let peers: Vec<PeerId> = self
                .swarm
                .connected_peers()
                .filter(|peer| !self.closing.contains(peer))
                .copied()
                .collect();
            if let Some(peer) = peers.choose(&mut rand::thread_rng()) {
                self.ask_news(peer);
            }
        }
    }

    /// Asks for news each member heard leaving [`LEFT_STILL_HERE_AFTER`] ago that is still
    /// connected and still taken for gone: the exchange tells it of its "own" goodbye, and it
    /// speaks for itself again at once (instead of at its next anti-entropy round).
    fn ask_the_left_still_here(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .left_still_here
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= LEFT_STILL_HERE_AFTER)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            self.left_still_here.remove(&peer);
            if self.swarm.is_connected(&peer)
                && self.membership.state_of(&peer, now) == Some(MemberState::Left)
            {
                debug!(%peer, "a member that left is still connected: asking it for news");
                self.ask_news(&peer);
            }
        }
    }

    /// Drops the connections to alive members connected for [`SUBSCRIPTIONS_WITHIN`] whose
    /// subscription to the presence topic never arrived (see there); they are dialled again
    /// like any member.
    pub(super) fn drop_peers_without_subscriptions(&mut self, now: Instant) {
        let presence = self.presence_topic.hash();
        let subscribed: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&presence))
            .map(|(peer, _)| *peer)
            .collect();
        let deaf: Vec<PeerId> = self
            .connected
            .awaited_for(SUBSCRIPTIONS_WITHIN, now)
            .into_iter()
            .filter(|peer| {
                !subscribed.contains(peer)
                    // A member heard from (not, say, a node of another release).
                    && self.membership.is_alive(peer, now)
            })
            .collect();
        for peer in deaf {
            info!(
                %peer,
                "connected for {} s without hearing the peer's subscriptions (a connection from \
                 before one side restarted may have lingered): reconnecting",
                SUBSCRIPTIONS_WITHIN.as_secs()
            );
            self.connected.await_next_connection(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// A node that was told whom to join and has reached nobody for [`ALONE_GRACE`] says so
    /// (a wrong address, a peer that is down, or a mesh whose key this node does not have),
    /// naming the last failed dial; then again every [`ALONE_WARNING_EVERY`].
    pub(super) fn warn_if_alone(&mut self, now: Instant) {
        if self.swarm.connected_peers().next().is_some() || self.config.bootstrap.is_empty() {
            self.alone_since = None;
            self.last_dial_error = None;
            return;
        }
        self.alone_since.get_or_insert(now);
        if let Some(warning) = self.alone_warning(now)
            && self.alone_said.due(now)
        {
            warn!("{warning}");
        }
    }

    /// What [`warn_if_alone`](Self::warn_if_alone) says, while it applies (`status` shows it).
    pub(super) fn alone_warning(&self, now: Instant) -> Option<String> {
        let since = self.alone_since?;
        let error = self.last_dial_error.as_ref()?;
        (now.duration_since(since) >= ALONE_GRACE).then(|| {
            format!(
                "connected to no member of the mesh for {} s: {error}. Retrying every {} s; \
                 check the address, that the peer runs, and that this node joined with that \
                 mesh's token (a node with another mesh key is refused)",
                now.duration_since(since).as_secs(),
                BOOTSTRAP_REDIAL.as_secs()
            )
        })
    }

    /// Sends `peer` the version of each row this node holds; the answer brings the rows this
    /// node lacks and names those `peer` wants back.
    pub(super) fn ask_news(&mut self, peer: &PeerId) {
        let versions = self.membership.versions();
        self.send_ctl(peer, CtlRequest::SyncVersions { versions });
    }

    /// Dials one random expired member (see [`RECONNECT_EVERY`]); with none to try, a
    /// bootstrap or known peer now and then (see [`AcrossASplit`]).
    pub(super) fn reconnect_one(&mut self, now: Instant) {
        let candidates: Vec<(PeerId, Vec<Multiaddr>)> = self
            .membership
            .expired_others(now)
            .filter(|p| !p.addresses.is_empty() && !self.recent_dials.contains_key(&p.peer_id))
            .filter(|p| !self.swarm.is_connected(&p.peer_id))
            .map(|p| (p.peer_id, p.addresses.clone()))
            .collect();
        if let Some((peer, addrs)) = candidates.choose(&mut rand::thread_rng()).cloned() {
            self.dial_member(peer, addrs, now);
        } else {
            self.dial_across_a_split(now);
        }
    }

    /// Dials a bootstrap or known peer if one is due (see [`AcrossASplit`]), while connected
    /// to others (a node connected to nobody redials them all, in `keep_connected`).
    fn dial_across_a_split(&mut self, now: Instant) {
        if self.swarm.connected_peers().next().is_none() {
            return;
        }
        let (swarm, membership) = (&self.swarm, &self.membership);
        let reached = |peer: &PeerId| swarm.is_connected(peer) || membership.is_alive(peer, now);
        let bootstrap = &self.config.bootstrap;
        let due = self
            .across_a_split
            .due(now, bootstrap, self.local_peer_id, reached);
        let Some(contact) = due else {
            return;
        };
        debug!(
            ?contact,
            "no expired member to try: dialling a bootstrap or known peer"
        );
        let dialled = match contact {
            Contact::Node(peer, addrs) => self.swarm.dial(
                DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            ),
            Contact::Address(addr) => self.swarm.dial(addr),
        };
        if let Err(e) = dialled {
            debug!("cannot dial a bootstrap or known peer: {e}");
        }
    }

    /// Opens a connection for a request to a member this node is not connected to, at the
    /// addresses in the membership table. request-response would dial by peer id alone, but
    /// the addresses it can find that way sit in a cache of 100 peers: in a larger mesh a
    /// request to a member outside it would fail at once.
    pub(super) fn dial_for_request(&mut self, peer: PeerId) {
        if self.swarm.is_connected(&peer) {
            return;
        }
        let addrs = self.membership.addresses_of(&peer).to_vec();
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        // Err: already dialing (the request waits for that connection) or no address at all
        // (the request fails and its sender retries).
        let _ = self.swarm.dial(opts);
    }

    /// Dials a member at its known addresses, unless already connected or dialing.
    pub(super) fn dial_member(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) {
        self.recent_dials.insert(peer, now);
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, "cannot dial member: {e}");
        }
    }

    /// Dials random alive members until `target_peers` connections are open (or being opened);
    /// with no connection at all, dials the bootstrap peers again.
    pub(super) fn keep_connected(&mut self, now: Instant) {
        self.recent_dials
            .retain(|_, at| now.saturating_duration_since(*at) < REDIAL_AFTER);
        let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        if connected.is_empty()
            && now.saturating_duration_since(self.last_bootstrap_dial) >= BOOTSTRAP_REDIAL
        {
            self.last_bootstrap_dial = now;
            for addr in self.config.bootstrap.clone() {
                let _ = self.swarm.dial(addr);
            }
        }
        let dialing = self
            .recent_dials
            .keys()
            .filter(|p| !connected.contains(p))
            .count();
        let want = self
            .config
            .target_peers
            .saturating_sub(connected.len() + dialing);
        if want == 0 {
            return;
        }
        let mut candidates: Vec<(PeerId, Vec<Multiaddr>)> = self
            .membership
            .alive_others(now)
            .filter(|p| {
                !connected.contains(&p.peer_id) && !self.recent_dials.contains_key(&p.peer_id)
            })
            .filter(|p| !p.addresses.is_empty())
            .map(|p| (p.peer_id, p.addresses.clone()))
            .collect();
        candidates.shuffle(&mut rand::thread_rng());
        for (peer, addrs) in candidates.into_iter().take(want) {
            self.dial_member(peer, addrs, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(peer: PeerId, i: u8) -> Multiaddr {
        format!("/ip4/10.0.0.{i}/tcp/7411/p2p/{peer}")
            .parse()
            .unwrap()
    }

    /// A node connected to others still dials, once a minute and in turn, the bootstrap and
    /// known peers it does not reach (so the halves of a split mesh find each other even
    /// after forgetting each other), never itself nor one it reaches already.
    #[test]
    fn bootstrap_peers_not_reached_are_dialled_in_turn_once_a_minute() {
        let start = Instant::now();
        let (me, reached, far, other) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let bare: Multiaddr = "/ip4/10.0.0.9/tcp/7411".parse().unwrap();
        let bootstrap = vec![
            at(me, 1),
            at(reached, 2),
            at(far, 3),
            bare.clone(),
            at(far, 4),
            at(other, 5),
        ];
        let is_reached = |p: &PeerId| *p == reached;
        let mut across = AcrossASplit::new(start);
        let minute = ACROSS_A_SPLIT_EVERY;
        let due = |a: &mut AcrossASplit, t| a.due(start + t, &bootstrap, me, is_reached);

        assert_eq!(due(&mut across, minute - Duration::from_secs(1)), None);
        // A node's addresses are dialled together.
        let far_node = Contact::Node(far, vec![at(far, 3), at(far, 4)]);
        assert_eq!(due(&mut across, minute), Some(far_node.clone()));
        assert_eq!(due(&mut across, minute + Duration::from_secs(5)), None);
        assert_eq!(
            due(&mut across, 2 * minute),
            Some(Contact::Address(bare.clone()))
        );
        assert_eq!(
            due(&mut across, 3 * minute),
            Some(Contact::Node(other, vec![at(other, 5)]))
        );
        // Round again, past this node and the one reached.
        assert_eq!(due(&mut across, 4 * minute), Some(far_node));

        // Nobody left to try: nothing is dialled, and the next one comes as soon as there is.
        let mut across = AcrossASplit::new(start);
        let all_reached = [at(me, 1), at(reached, 2)];
        assert_eq!(
            across.due(start + minute, &all_reached, me, is_reached),
            None
        );
        assert_eq!(across.due(start + minute, &[], me, is_reached), None);
        assert_eq!(
            across.due(start + minute, &bootstrap, me, is_reached),
            Some(Contact::Node(far, vec![at(far, 3), at(far, 4)]))
        );
    }

    const MINUTE: Duration = Duration::from_secs(60);

    /// Over the budget, the connections closed are those idle long enough and outside the
    /// gossip meshes, the least recently used first, only as many as are over; within the
    /// budget none is.
    #[test]
    fn over_the_budget_the_least_recently_used_idle_peers_outside_the_mesh_are_closed() {
        let start = Instant::now();
        let now = start + 10 * MINUTE;
        let peers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
        let ago = |minutes: u32| LastUse::Since(now - minutes * MINUTE);
        let connected = vec![
            (peers[0], ago(5)),
            (peers[1], ago(9)), // the least recently used, but in a gossip mesh
            (peers[2], LastUse::Busy),
            (peers[3], ago(7)),
            (peers[4], ago(0)), // used just now
            (peers[5], ago(3)),
        ];
        let in_mesh = HashSet::from([peers[1]]);
        let close = |budget| peers_to_close(&connected, &in_mesh, budget, MINUTE, now);

        assert_eq!(close(6), vec![]);
        assert_eq!(close(10), vec![]);
        assert_eq!(close(5), vec![peers[3]]);
        assert_eq!(close(3), vec![peers[3], peers[0], peers[5]]);
        // Never the busy, the meshed or the lately used, however far over.
        assert_eq!(close(0), vec![peers[3], peers[0], peers[5]]);
        // Idle is counted from the last use: a minute exactly is enough, less is not.
        let just = [(peers[0], LastUse::Since(now - MINUTE))];
        assert_eq!(
            peers_to_close(&just, &HashSet::new(), 0, MINUTE, now),
            vec![peers[0]]
        );
        let not_yet = [(
            peers[0],
            LastUse::Since(now - MINUTE + Duration::from_millis(1)),
        )];
        assert_eq!(
            peers_to_close(&not_yet, &HashSet::new(), 0, MINUTE, now),
            vec![]
        );
    }

    /// A peer is busy from a request until its end (answer or failure), in either direction,
    /// and idle from that end on; an end never reported stops counting after
    /// [`EXCHANGE_LASTS_AT_MOST`]. Rows of peers gone with nothing under way are forgotten.
    #[test]
    fn a_peer_is_busy_while_an_exchange_is_under_way_and_idle_from_its_end() {
        let start = Instant::now();
        let peer = PeerId::random();
        let other = PeerId::random();
        let mut uses = PeerUse::<&str>::default();
        let (asked, answering) = ("a chunk asked for", "a request being answered");

        uses.used(peer, start);
        assert_eq!(uses.last_use(peer, start), LastUse::Since(start));
        uses.began(peer, asked, start + MINUTE);
        uses.began(peer, answering, start + 2 * MINUTE);
        assert_eq!(uses.last_use(peer, start + 2 * MINUTE), LastUse::Busy);
        uses.ended(peer, asked, start + 3 * MINUTE);
        assert_eq!(uses.last_use(peer, start + 3 * MINUTE), LastUse::Busy);
        uses.ended(peer, answering, start + 4 * MINUTE);
        assert_eq!(
            uses.last_use(peer, start + 5 * MINUTE),
            LastUse::Since(start + 4 * MINUTE)
        );

        // An end that never comes.
        uses.began(other, asked, start);
        assert_eq!(uses.last_use(other, start + MINUTE), LastUse::Busy);
        assert_eq!(
            uses.last_use(other, start + EXCHANGE_LASTS_AT_MOST),
            LastUse::Since(start)
        );

        // Disconnected: a peer with an exchange under way (a request waiting for its dial) is
        // kept, the others forgotten.
        uses.began(other, asked, start + 6 * MINUTE);
        uses.keep_only(|_| false, start + 6 * MINUTE);
        assert_eq!(uses.peers.len(), 1);
        assert!(uses.peers.contains_key(&other));
        // A peer with no row counts as used now.
        assert_eq!(
            uses.last_use(peer, start + 7 * MINUTE),
            LastUse::Since(start + 7 * MINUTE)
        );
    }

    /// Requests to a peer being closed wait until every connection it had is gone (not one
    /// it opened meanwhile), and are then given back in order; a close taking
    /// [`CLOSE_TAKES_AT_MOST`] gives them back anyway. Requests to other peers, and past
    /// [`MAX_WAITING_FOR_A_CLOSE`], are not held.
    #[test]
    fn requests_to_a_peer_being_closed_wait_until_its_connections_are_gone() {
        let start = Instant::now();
        let (peer, other) = (PeerId::random(), PeerId::random());
        let [first, second, fresh] = [1, 2, 3].map(ConnectionId::new_unchecked);
        let mut closing = Closing::<&str>::default();

        assert_eq!(
            closing.hold(peer, "not being closed"),
            Err("not being closed")
        );
        closing.begin(peer, start);
        assert_eq!(closing.hold(peer, "a hint"), Ok(()));
        assert_eq!(closing.hold(other, "elsewhere"), Err("elsewhere"));
        // Two connections being closed, and one the peer opened meanwhile.
        closing.opened(peer, fresh);
        closing.begin(peer, start + MINUTE); // already under way: nothing changes
        assert_eq!(closing.hold(peer, "a chunk"), Ok(()));
        assert_eq!(closing.closed(peer, first, 2), Vec::<&str>::new());
        assert!(closing.contains(&peer));
        assert_eq!(closing.closed(peer, second, 1), vec!["a hint", "a chunk"]);
        assert!(!closing.contains(&peer));
        assert_eq!(closing.closed(peer, fresh, 0), Vec::<&str>::new());

        // The fresh connection closing first is not the close waited for.
        closing.begin(peer, start);
        closing.opened(peer, fresh);
        closing.hold(peer, "a result").unwrap();
        assert_eq!(closing.closed(peer, fresh, 1), Vec::<&str>::new());
        assert_eq!(closing.closed(peer, first, 0), vec!["a result"]);

        // A close that takes too long.
        closing.begin(other, start);
        closing.hold(other, "late").unwrap();
        let almost = start + CLOSE_TAKES_AT_MOST - Duration::from_millis(1);
        assert_eq!(closing.overdue(almost), Vec::<&str>::new());
        assert_eq!(closing.overdue(start + CLOSE_TAKES_AT_MOST), vec!["late"]);
        assert!(!closing.contains(&other));

        // At most so many wait.
        closing.begin(peer, start);
        for _ in 0..MAX_WAITING_FOR_A_CLOSE {
            assert_eq!(closing.hold(peer, "one of many"), Ok(()));
        }
        assert_eq!(closing.hold(peer, "one too many"), Err("one too many"));
    }

    /// Values below their floors are raised to them; others are applied as given.
    #[test]
    fn a_budget_below_its_floors_is_raised_to_them() {
        let given = |max_peers, idle_after| ConnectionBudget {
            max_peers,
            idle_after,
        };
        assert_eq!(
            given(0, Duration::ZERO).applied(8),
            given(8, MIN_IDLE_AFTER)
        );
        assert_eq!(given(20, MINUTE).applied(8), given(20, MINUTE));
    }

    /// What a bare participant hears from its swarm.
    #[derive(Debug)]
    enum Heard {
        Answer(Result<CtlResponse, String>),
        File(Result<BlobResponse, String>),
        Closed,
    }

    /// What a bare participant is given to send.
    #[derive(Debug)]
    enum Ask {
        Ctl(CtlRequest),
        File(BlobRequest),
    }

    /// A member known to `node` from its own row only: a bare swarm of the mesh's protocols
    /// that subscribes to no topic, so it is in none of the node's gossip meshes (which the
    /// connection budget never closes). It dials `node` at `addr`, hands it its row, and sends
    /// what the test gives it (see [`bare_participant`]).
    fn bare_member(
        keypair: Keypair,
        node: PeerId,
        addr: Multiaddr,
    ) -> (mpsc::Sender<Ask>, mpsc::UnboundedReceiver<Heard>) {
        let identity = identity("bare");
        let config = MeshConfig::new(keypair.clone(), TransportKind::Memory, identity);
        let peer = keypair.public().to_peer_id();
        let mut presence = local_presence_parts(&config, peer, 1, 0, &[], Instant::now());
        presence.sign(&keypair);
        let row = wire::MemberRecord {
            presence,
            age_ms: 0,
        };
        bare_participant(keypair, node, addr, Some(row))
    }

    /// A bare swarm of the mesh's protocols that dials `node` at `addr`, hands it `row` if
    /// given (without it, the node never hears of it: no member), and sends what the test
    /// gives it; it tells of each answer and of its connection closing, and answers nothing
    /// it is asked (the request fails at once).
    fn bare_participant(
        keypair: Keypair,
        node: PeerId,
        addr: Multiaddr,
        row: Option<wire::MemberRecord>,
    ) -> (mpsc::Sender<Ask>, mpsc::UnboundedReceiver<Heard>) {
        let mut swarm = build_swarm(keypair, TransportKind::Memory, None).expect("a swarm");
        swarm
            .dial(crate::multiaddr_with_peer(addr, node))
            .expect("the bare participant dials");
        if let Some(row) = row {
            let members = vec![row];
            swarm
                .behaviour_mut()
                .ctl
                .send_request(&node, CtlRequest::SyncMembers { members });
        }
        let (requests, mut to_send) = mpsc::channel(4);
        let (heard, hearing) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    request = to_send.recv() => match request {
                        Some(Ask::Ctl(request)) => {
                            swarm.behaviour_mut().ctl.send_request(&node, request);
                        }
                        Some(Ask::File(request)) => {
                            swarm.behaviour_mut().blob.send_request(&node, request);
                        }
                        None => return,
                    },
                    event = swarm.select_next_some() => {
                        let said = match event {
                            SwarmEvent::Behaviour(MeshBehaviourEvent::Ctl(
                                request_response::Event::Message {
                                    message: request_response::Message::Response { response, .. },
                                    ..
                                },
                            )) => Heard::Answer(Ok(response)),
                            SwarmEvent::Behaviour(MeshBehaviourEvent::Ctl(
                                request_response::Event::OutboundFailure { error, .. },
                            )) => Heard::Answer(Err(error.to_string())),
                            SwarmEvent::Behaviour(MeshBehaviourEvent::Blob(
                                request_response::Event::Message {
                                    message: request_response::Message::Response { response, .. },
                                    ..
                                },
                            )) => Heard::File(Ok(response)),
                            SwarmEvent::Behaviour(MeshBehaviourEvent::Blob(
                                request_response::Event::OutboundFailure { error, .. },
                            )) => Heard::File(Err(error.to_string())),
                            SwarmEvent::ConnectionClosed { .. } => Heard::Closed,
                            _ => continue,
                        };
                        let _ = heard.send(said);
                    }
                }
            }
        });
        (requests, hearing)
    }

    /// The next thing `events` tells within `within`.
    async fn next_within<T>(events: &mut mpsc::UnboundedReceiver<T>, within: Duration) -> T {
        tokio::time::timeout(within, events.recv())
            .await
            .expect("told in time")
            .expect("the member runs")
    }

    /// A node on the memory transport that dials nobody by itself, and its status.
    async fn memory_node() -> (Mesh, MeshStatus) {
        let identity = identity("node");
        let mut config =
            MeshConfig::new(Keypair::generate_ed25519(), TransportKind::Memory, identity);
        config.listen = vec!["/memory/0".parse().expect("a memory address")];
        config.heartbeat_interval = Duration::from_secs(1);
        config.target_peers = 0;
        let node = start(config).await.expect("the node starts");
        let status = node.handle.status().await.expect("status");
        (node, status)
    }

    /// A daemon of the peer id of `keypair`: a bare swarm subscribed to the presence topic,
    /// dialling `addr`.
    fn subscribed_daemon(keypair: &Keypair, addr: &Multiaddr) -> Swarm<MeshBehaviour> {
        let mut swarm = build_swarm(keypair.clone(), TransportKind::Memory, None).expect("a swarm");
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(PRESENCE_TOPIC))
            .expect("subscribed");
        swarm.dial(addr.clone()).expect("the daemon dials");
        swarm
    }

    /// Runs `swarm` for `time`, whatever it does meanwhile.
    async fn run_for(swarm: &mut Swarm<MeshBehaviour>, time: Duration) {
        let _ = tokio::time::timeout(time, async {
            loop {
                swarm.select_next_some().await;
            }
        })
        .await;
    }

    /// The identity of a node or member of these tests, named `name`.
    fn identity(name: &str) -> LocalIdentity {
        LocalIdentity {
            name: name.into(),
            machine_id: format!("machine-{name}"),
            version: "test".into(),
            labels: BTreeMap::new(),
            host_uptime_at_start: Duration::ZERO,
        }
    }

    /// A node over its budget keeps the connection of a request it has not answered yet,
    /// however long past `idle_after` the layer above takes, and closes it once answered and
    /// idle: closing it would fail the request, whose answer could not come back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_waiting_for_this_nodes_answer_stays_open_over_the_budget() {
        let identity = identity("node");
        let keypair = Keypair::generate_ed25519();
        let mut config = MeshConfig::new(keypair, TransportKind::Memory, identity);
        config.listen = vec!["/memory/0".parse().expect("a memory address")];
        config.heartbeat_interval = Duration::from_secs(1);
        // Every connection outside the gossip meshes is over the budget once idle.
        config.target_peers = 0;
        config.connection_budget = ConnectionBudget {
            max_peers: 0,
            idle_after: MIN_IDLE_AFTER,
        };
        let mut node = start(config).await.expect("the node starts");
        let status = node.handle.status().await.expect("status");
        let addr = status.listen_addrs[0].clone();
        let (requests, mut hearing) =
            bare_member(Keypair::generate_ed25519(), status.local_peer_id, addr);
        let table = next_within(&mut hearing, Duration::from_secs(10)).await;
        assert!(
            matches!(table, Heard::Answer(Ok(CtlResponse::Members { .. }))),
            "{table:?}"
        );

        requests
            .send(Ask::Ctl(CtlRequest::Job(b"a job".to_vec())))
            .await
            .expect("the bare member runs");
        let token = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match node.events.recv().await.expect("the node runs") {
                    MeshEvent::JobRequest { token, .. } => return token,
                    _ => continue,
                }
            }
        })
        .await
        .expect("the job request reached the node");
        // The layer above takes its time, well past `idle_after`.
        tokio::time::sleep(4 * MIN_IDLE_AFTER).await;
        assert!(
            hearing.try_recv().is_err(),
            "the connection of a request under way was closed"
        );
        node.handle
            .reply(token, b"done".to_vec())
            .await
            .expect("the node runs");
        let answer = next_within(&mut hearing, Duration::from_secs(5)).await;
        assert!(
            matches!(&answer, Heard::Answer(Ok(CtlResponse::Job(data))) if data == b"done"),
            "{answer:?}"
        );
        // Answered and idle, the connection is over the budget like any other.
        let closed = next_within(&mut hearing, MIN_IDLE_AFTER + Duration::from_secs(5)).await;
        assert!(matches!(closed, Heard::Closed), "{closed:?}");
        node.handle.shutdown().await.expect("the node leaves");
    }

    /// What the answering member of the test below sees of its swarm.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Seen {
        Connected,
        Closed,
        /// The node's answer to the row it was handed.
        Synced,
        /// A job request, answered with its own data.
        Asked(Vec<u8>),
    }

    /// A member listening on 127.0.0.1 over TCP, known to `node` from its own row, which lists
    /// that address: a bare swarm of the mesh's protocols subscribed to no topic (in none of
    /// the node's gossip meshes), as [`bare_member`]. It dials `node` at `addr`, hands it its
    /// row, answers each job request with the request's own data (and nothing else it is
    /// asked), and tells what it sees.
    async fn answering_member(
        node: PeerId,
        addr: Multiaddr,
    ) -> (PeerId, mpsc::UnboundedReceiver<Seen>) {
        let keypair = Keypair::generate_ed25519();
        let identity = identity("answering");
        let config = MeshConfig::new(keypair.clone(), TransportKind::Tcp, identity);
        let peer = keypair.public().to_peer_id();
        let mut swarm = build_swarm(keypair.clone(), TransportKind::Tcp, None).expect("a swarm");
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("an address"))
            .expect("the member listens");
        let listening = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let mut presence = local_presence_parts(&config, peer, 1, 0, &[listening], Instant::now());
        presence.sign(&keypair);
        assert!(
            !presence.addresses.is_empty(),
            "the row tells where to dial"
        );
        let members = vec![wire::MemberRecord {
            presence,
            age_ms: 0,
        }];
        swarm
            .dial(crate::multiaddr_with_peer(addr, node))
            .expect("the member dials");
        swarm
            .behaviour_mut()
            .ctl
            .send_request(&node, CtlRequest::SyncMembers { members });
        // Unbounded: a test's few connection and request events, read as they come.
        let (seen, seeing) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let said = match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => Seen::Connected,
                    SwarmEvent::ConnectionClosed { .. } => Seen::Closed,
                    SwarmEvent::Behaviour(MeshBehaviourEvent::Ctl(
                        request_response::Event::Message {
                            message:
                                request_response::Message::Response {
                                    response: CtlResponse::Members { .. },
                                    ..
                                },
                            ..
                        },
                    )) => Seen::Synced,
                    SwarmEvent::Behaviour(MeshBehaviourEvent::Ctl(
                        request_response::Event::Message {
                            message:
                                request_response::Message::Request {
                                    request: CtlRequest::Job(data),
                                    channel,
                                    ..
                                },
                            ..
                        },
                    )) => {
                        let answer = CtlResponse::Job(data.clone());
                        // Err: the node went away, which its side of the test shows.
                        let _ = swarm.behaviour_mut().ctl.send_response(channel, answer);
                        Seen::Asked(data)
                    }
                    _ => continue,
                };
                if seen.send(said).is_err() {
                    return;
                }
            }
        });
        (peer, seeing)
    }

    /// A request to a peer sent in the very moment the connection budget begins closing that
    /// peer's connection is answered: it waits until the connection being closed is gone and
    /// then goes on a new one, where sent at once it would go on the closing one and fail with
    /// it. On real TCP connections; the request comes in the same turn of the event loop as
    /// the close, before the swarm can report anything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_sent_as_the_budget_begins_closing_its_peer_is_answered_once_closed() {
        let identity = identity("node");
        let keypair = Keypair::generate_ed25519();
        let mut config = MeshConfig::new(keypair, TransportKind::Tcp, identity);
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("an address")];
        config.heartbeat_interval = Duration::from_secs(1);
        // Maintenance neither dials nor, within the default budget, closes anything: only
        // the budget applied below closes the member's connection.
        config.target_peers = 0;
        let node = start(config).await.expect("the node starts");
        let status = node.handle.status().await.expect("status");
        let addr = status.listen_addrs[0].clone();
        let (member, mut seen) = answering_member(status.local_peer_id, addr).await;
        assert_eq!(
            next_within(&mut seen, Duration::from_secs(10)).await,
            Seen::Connected
        );
        assert_eq!(
            next_within(&mut seen, Duration::from_secs(10)).await,
            Seen::Synced
        );
        // Idle for long enough that the budget below closes the member's connection.
        tokio::time::sleep(MIN_IDLE_AFTER + Duration::from_millis(500)).await;

        let data = b"sent as the close begins".to_vec();
        let (reply, answer) = oneshot::channel();
        let request = Command::RequestJob {
            peer: member,
            data: data.clone(),
            reply,
        };
        let (closing, closed) = oneshot::channel();
        let budget = ConnectionBudget {
            max_peers: 0,
            idle_after: MIN_IDLE_AFTER,
        };
        node.handle
            .commands
            .send(Command::CloseOverBudgetThen {
                budget,
                then: Box::new(request),
                closing,
            })
            .await
            .expect("the node runs");
        assert_eq!(
            closed.await.expect("the node runs"),
            vec![member],
            "the budget began closing the member's connection"
        );
        let answer = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("answered in time")
            .expect("the node runs");
        assert_eq!(answer.expect("the request is answered"), data);
        // The request went on a new connection, the first one closed.
        let mut after = Vec::new();
        while !after.contains(&Seen::Closed) || !after.contains(&Seen::Asked(data.clone())) {
            after.push(next_within(&mut seen, Duration::from_secs(10)).await);
        }
        after.sort();
        assert_eq!(
            after,
            vec![Seen::Connected, Seen::Closed, Seen::Asked(data)],
            "the member saw the close, then a new connection"
        );
        node.handle.shutdown().await.expect("the node leaves");
    }

    #[test]
    fn past_two_connections_of_a_peer_its_oldest_are_closed() {
        let mut open = ConnectedPeers::default();
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let c: Vec<ConnectionId> = (0..5).map(ConnectionId::new_unchecked).collect();
        assert!(open.opened(a, c[0], now).is_empty());
        assert!(open.opened(b, c[1], now).is_empty(), "counted per peer");
        assert!(open.opened(a, c[2], now).is_empty());
        assert_eq!(open.opened(a, c[3], now), vec![c[0]], "the oldest goes");
        // The one closed is reported closed; one of the two kept closes too.
        open.closed(a, c[0], false);
        open.closed(a, c[3], false);
        assert!(open.opened(a, c[4], now).is_empty(), "two open again");
        assert_eq!(open.opened(a, c[0], now), vec![c[2]]);
        open.closed(b, c[1], false);
        assert!(
            !open.peers.contains_key(&b),
            "no entry for a peer with none open"
        );
    }

    #[test]
    fn a_peer_is_awaited_from_its_first_connection_until_dropped_for_silence() {
        let mut peers = ConnectedPeers::default();
        let t0 = Instant::now();
        let within = Duration::from_secs(30);
        let (p, q) = (PeerId::random(), PeerId::random());
        let c = ConnectionId::new_unchecked;
        peers.opened(p, c(1), t0);
        peers.opened(q, c(2), t0 + Duration::from_secs(10));
        // A second connection does not restart the count.
        peers.opened(p, c(3), t0 + Duration::from_secs(20));
        assert!(
            peers
                .awaited_for(within, t0 + Duration::from_secs(29))
                .is_empty()
        );
        assert_eq!(peers.awaited_for(within, t0 + within), vec![p]);
        // Dropped for it: not counted again while its connections close.
        peers.await_next_connection(&p);
        let later = t0 + Duration::from_secs(45);
        assert_eq!(peers.awaited_for(within, later), vec![q]);
        peers.closed(p, c(1), false);
        peers.opened(p, c(4), later);
        assert_eq!(
            peers.awaited_for(within, later + within),
            vec![q],
            "counted again only from a first connection"
        );
        peers.closed(p, c(3), false);
        peers.closed(p, c(4), false);
        peers.opened(p, c(5), later);
        let mut awaited = peers.awaited_for(within, later + within);
        awaited.sort();
        let mut both = vec![p, q];
        both.sort();
        assert_eq!(awaited, both);
    }

    /// Jobs and files are for members only: a host that connects with the mesh's protocols
    /// but never gave the node its row (a stranger in an open mesh) has its job message
    /// refused, saying why, and is told no file is here, and nothing reaches the layer above;
    /// the same requests from a member do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_and_files_are_taken_from_members_only() {
        let (mut node, status) = memory_node().await;
        let addr = status.listen_addrs[0].clone();
        let node_peer = status.local_peer_id;
        let file = BlobRequest {
            hash: *blake3::hash(b"a file").as_bytes(),
            index: 0,
        };

        let (stranger, mut heard) =
            bare_participant(Keypair::generate_ed25519(), node_peer, addr.clone(), None);
        let job = Ask::Ctl(CtlRequest::Job(b"a job".to_vec()));
        stranger.send(job).await.expect("the stranger runs");
        let answer = next_within(&mut heard, Duration::from_secs(10)).await;
        assert!(
            matches!(&answer, Heard::Answer(Ok(CtlResponse::Rejected { reason }))
                if reason.contains("not a member")),
            "{answer:?}"
        );
        stranger
            .send(Ask::File(file.clone()))
            .await
            .expect("the stranger runs");
        let answer = next_within(&mut heard, Duration::from_secs(10)).await;
        assert!(
            matches!(answer, Heard::File(Ok(BlobResponse::Unknown))),
            "{answer:?}"
        );
        while let Ok(event) = node.events.try_recv() {
            assert!(
                !matches!(
                    event,
                    MeshEvent::JobRequest { .. } | MeshEvent::BlobRequest { .. }
                ),
                "a stranger's request reached the layer above: {event:?}"
            );
        }

        let (member, mut heard) = bare_member(Keypair::generate_ed25519(), node_peer, addr);
        let table = next_within(&mut heard, Duration::from_secs(10)).await;
        assert!(
            matches!(table, Heard::Answer(Ok(CtlResponse::Members { .. }))),
            "{table:?}"
        );
        let job = Ask::Ctl(CtlRequest::Job(b"a job".to_vec()));
        member.send(job).await.expect("the member runs");
        member
            .send(Ask::File(file.clone()))
            .await
            .expect("the member runs");
        let (mut job_seen, mut file_seen) = (false, false);
        tokio::time::timeout(Duration::from_secs(10), async {
            while !(job_seen && file_seen) {
                match node.events.recv().await.expect("the node runs") {
                    MeshEvent::JobRequest { data, .. } => job_seen = data == b"a job",
                    MeshEvent::BlobRequest { request, .. } => file_seen = request == file,
                    _ => {}
                }
            }
        })
        .await
        .expect("a member's job and file requests reach the layer above");
        node.handle.shutdown().await.expect("the node leaves");
    }

    /// A peer id whose two connections went silent (its machine lost the network) dials again
    /// from elsewhere (a copy of its state directory, or the node moved): the node takes the
    /// new connection and answers on it at once, closing the oldest silent one, instead of
    /// refusing it until the old ones are found dead (about half a minute).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_dials_again_beside_two_silent_connections_is_answered_at_once() {
        let (node, status) = memory_node().await;
        let addr = status.listen_addrs[0].clone();
        let node_peer = status.local_peer_id;

        // The first daemon of the peer id: two connections, then silence (its swarm is kept
        // but no longer run, as a machine cut off).
        let keypair = Keypair::generate_ed25519();
        let mut silent =
            build_swarm(keypair.clone(), TransportKind::Memory, None).expect("a swarm");
        for _ in 0..2 {
            let dial = DialOpts::peer_id(node_peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build();
            silent.dial(dial).expect("the first daemon dials");
        }
        let mut established = 0;
        tokio::time::timeout(Duration::from_secs(10), async {
            while established < 2 {
                if let SwarmEvent::ConnectionEstablished { .. } = silent.select_next_some().await {
                    established += 1;
                }
            }
        })
        .await
        .expect("both connections open");
        // Long enough for the node to finish its side of both.
        run_for(&mut silent, Duration::from_millis(500)).await;

        let (_requests, mut hearing) = bare_member(keypair, node_peer, addr);
        let table = next_within(&mut hearing, Duration::from_secs(5)).await;
        assert!(
            matches!(table, Heard::Answer(Ok(CtlResponse::Members { .. }))),
            "the new connection was refused: {table:?}"
        );
        drop(silent);
        node.handle.shutdown().await.expect("the node leaves");
    }

    #[test]
    fn a_peer_is_reconnected_once_it_started_over_and_an_old_connection_died() {
        let c = ConnectionId::new_unchecked;
        let now = Instant::now();
        let (p, q) = (PeerId::random(), PeerId::random());
        let mut g = ConnectedPeers::default();
        assert!(
            !g.told(PeerId::random()),
            "a peer not connected is not reconnected"
        );
        // Told once per session: nothing to do; a connection dead while another stays
        // (one of two of a live daemon): nothing either.
        g.opened(p, c(1), now);
        g.opened(p, c(2), now);
        assert!(!g.told(p));
        g.dead(c(1));
        assert!(!g.closed(p, c(1), false));
        // It tells again: it started over, and a connection of it died.
        assert!(g.told(p));
        // The other order: told again (two live daemons of one identity), then one dies.
        g.opened(q, c(3), now);
        g.opened(q, c(4), now);
        assert!(!g.told(q) && !g.told(q));
        assert!(!g.closed(q, c(3), false), "closed, not dead");
        g.opened(q, c(5), now);
        g.dead(c(4));
        assert!(g.closed(q, c(4), false));
        // All closed: a new session; a connection that broke counts as dead too.
        assert!(!g.closed(q, c(5), false));
        assert!(!g.peers.contains_key(&q));
        g.opened(q, c(6), now);
        g.opened(q, c(7), now);
        assert!(!g.told(q) && !g.told(q));
        assert!(g.closed(q, c(6), true));
        assert!(g.peers.len() == 2 && g.dead.is_empty());
    }

    /// A peer id whose connection went silent (its machine cut off) connects again from a
    /// new daemon (the node restarted, or its state directory was copied elsewhere) while the
    /// old connection still stands here. Gossipsub tells a peer this node's subscriptions only
    /// on the first connection between the two, so the new daemon would not hear them and
    /// could not publish here: once pings find the old connection dead, the node reconnects
    /// the peer, and the new daemon hears them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_started_over_beside_a_dead_connection_hears_the_nodes_subscriptions() {
        let (node, status) = memory_node().await;
        let addr = crate::multiaddr_with_peer(status.listen_addrs[0].clone(), status.local_peer_id);
        let presence = IdentTopic::new(PRESENCE_TOPIC).hash();
        let told_presence = |event: &SwarmEvent<MeshBehaviourEvent>| {
            matches!(
                event,
                SwarmEvent::Behaviour(MeshBehaviourEvent::Gossipsub(
                    gossipsub::Event::Subscribed { peer_id, topic },
                )) if *peer_id == status.local_peer_id && *topic == presence
            )
        };
        let keypair = Keypair::generate_ed25519();
        let daemon = || subscribed_daemon(&keypair, &addr);

        // The first daemon of the peer id hears the node's subscriptions, tells its own, and
        // falls silent (its swarm is kept but no longer run, as a machine cut off).
        let mut first = daemon();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !told_presence(&first.select_next_some().await) {}
        })
        .await
        .expect("the first daemon hears the node's subscriptions");
        run_for(&mut first, Duration::from_millis(500)).await;

        // The second one dials again whenever its connection closes. Pings take up to 40 s
        // to find the first one's connection dead (the first failed ping is let pass; a TCP
        // connection is found dead sooner, see `transport::TCP_USER_TIMEOUT`).
        let mut second = daemon();
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match second.select_next_some().await {
                    event if told_presence(&event) => return,
                    SwarmEvent::ConnectionClosed {
                        num_established: 0, ..
                    } => second.dial(addr.clone()).expect("the daemon dials again"),
                    _ => {}
                }
            }
        })
        .await
        .expect("the second daemon hears the node's subscriptions");
        drop(first);
        node.handle.shutdown().await.expect("the node leaves");
    }

    #[test]
    fn a_connection_broke_if_the_socket_timed_out_or_was_reset_under_the_layers() {
        use libp2p::swarm::ConnectionError;
        use std::io::{Error, ErrorKind};
        let wrapped = |kind: ErrorKind| {
            // As the muxer and the layers below it wrap the socket's error.
            let socket = Error::from(kind);
            ConnectionError::IO(Error::other(Error::other(socket)))
        };
        assert!(broke(&wrapped(ErrorKind::TimedOut)));
        assert!(broke(&wrapped(ErrorKind::ConnectionReset)));
        assert!(!broke(&wrapped(ErrorKind::BrokenPipe)));
        assert!(!broke(&ConnectionError::IO(Error::other(
            "closed by the peer"
        ))));
        assert!(!broke(&ConnectionError::KeepAliveTimeout));
    }

    /// Two live daemons of one identity both connected to a node tell it their subscriptions
    /// in turn; the later one closing its connection (as it does when it never hears the
    /// node's) is no sign of a daemon gone: the other one's connection stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_live_daemons_of_one_identity_are_not_reconnected_when_one_closes() {
        let (node, status) = memory_node().await;
        let node_peer = status.local_peer_id;
        let addr = crate::multiaddr_with_peer(status.listen_addrs[0].clone(), node_peer);
        let keypair = Keypair::generate_ed25519();
        let daemon = || subscribed_daemon(&keypair, &addr);
        // The first daemon runs on, telling when its connection closes.
        let mut first = daemon();
        let (closed, mut closes) = mpsc::unbounded_channel();
        let (greeted, mut greeting) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match first.select_next_some().await {
                    SwarmEvent::ConnectionClosed { .. } if closed.send(()).is_err() => return,
                    SwarmEvent::Behaviour(MeshBehaviourEvent::Gossipsub(
                        gossipsub::Event::Subscribed { .. },
                    )) => {
                        let _ = greeted.send(());
                    }
                    _ => {}
                }
            }
        });
        next_within(&mut greeting, Duration::from_secs(10)).await;
        // The second one connects, tells its subscriptions, and closes its connection.
        let mut second = daemon();
        run_for(&mut second, Duration::from_secs(1)).await;
        let _ = second.disconnect_peer_id(node_peer);
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let SwarmEvent::ConnectionClosed { .. } = second.select_next_some().await {
                    return;
                }
            }
        })
        .await
        .expect("the second daemon's connection closes");
        drop(second);
        assert!(
            tokio::time::timeout(Duration::from_secs(3), closes.recv())
                .await
                .is_err(),
            "the node closed the first daemon's connection too"
        );
        node.handle.shutdown().await.expect("the node leaves");
    }
}
