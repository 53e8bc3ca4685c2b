//! What the swarm reports: connections opening and closing, gossip (presences and jobs),
//! requests and responses on the control and blob protocols. Job messages and file requests
//! are taken from members only, and the table goes to members only; what else a peer sends
//! updates the membership table.

use super::*;
use connections::{Exchange, RequestProtocol};
use libp2p::swarm::ConnectionId;

/// Why a request of a peer that is no member was refused.
const NOT_A_MEMBER: &str = "not a member of this mesh (no presence heard from it)";

/// Why a job message was refused while the node's layer above could take no more.
const BUSY: &str = "busy: this node cannot take more job messages now; send it again later";

impl EventLoop {
    pub(super) async fn on_swarm_event(&mut self, event: SwarmEvent<MeshBehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(MeshBehaviourEvent::Gossipsub(event)) => {
                self.on_gossip(event).await
            }
            SwarmEvent::Behaviour(MeshBehaviourEvent::Ctl(event)) => self.on_ctl(event).await,
            SwarmEvent::Behaviour(MeshBehaviourEvent::Blob(event)) => self.on_blob(event).await,
            SwarmEvent::Behaviour(MeshBehaviourEvent::Ping(event)) => {
                if let Err(e) = event.result {
                    debug!(peer = %event.peer, "ping failed ({e}); closing the connection");
                    if self.swarm.close_connection(event.connection) {
                        self.connected.dead(event.connection);
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } if !self.listen_addrs.contains(&address) => {
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_connected(peer_id, connection_id, &endpoint, num_established.get()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                num_established,
                ..
            } => self.on_disconnected(peer_id, connection_id, cause, num_established),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                self.on_dial_failed(peer_id, error)
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => self.on_inbound_failed(error, send_back_addr),
            _ => {}
        }
    }

    /// A connection to `peer_id` opened: its `established`th open one now.
    fn on_connected(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        endpoint: &libp2p::core::ConnectedPoint,
        established: u32,
    ) {
        debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
        if let Some(spell) = self.out_of_reach.remove(&peer_id)
            && spell.logged
        {
            let name = self.membership.name_of(&peer_id).unwrap_or("a member");
            info!(
                peer = %peer_id,
                "{name} is reachable directly again (after {} s)",
                spell.since.elapsed().as_secs()
            );
        }
        // A new connection counts as used: it was opened for something (a request, a
        // member to keep) that has not had its chance yet. So does one opened beside
        // another, or replacing one about to close.
        self.peer_use.used(peer_id, Instant::now());
        self.closing.opened(peer_id, connection_id);
        // A third connection of one peer id: the peer dialled again, so an older
        // connection may be dead (its machine lost the network; a copy of its state
        // directory runs elsewhere). The newest two are kept.
        for oldest in self
            .connected
            .opened(peer_id, connection_id, Instant::now())
        {
            debug!(peer = %peer_id, "a third connection: closing the peer's oldest");
            self.swarm.close_connection(oldest);
        }
        // A table sync when dialling a peer this node does not know as alive: its
        // bootstrap peer (a newcomer learns the whole mesh in one round trip) or an
        // expired member (the other side of a healed partition). Dials to members
        // already alive here need none; anti-entropy covers what gossip misses.
        let now = Instant::now();
        let known_alive = self.membership.is_alive(&peer_id, now);
        if endpoint.is_dialer() && established == 1 && !known_alive && self.leaving.is_none() {
            let members = self.membership.records(now);
            self.send_ctl(&peer_id, CtlRequest::SyncMembers { members });
        }
    }

    /// A connection to `peer_id` closed, `num_established` of its connections still open.
    fn on_disconnected(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        cause: Option<libp2p::swarm::ConnectionError>,
        num_established: u32,
    ) {
        debug!(peer = %peer_id, ?cause, "connection closed");
        let broke = cause.as_ref().is_some_and(connections::broke);
        if self.connected.closed(peer_id, connection_id, broke) {
            self.reconnect_started_over(peer_id);
        }
        // Requests that waited for this close go now, dialling again.
        let remaining = num_established as usize;
        for request in self.closing.closed(peer_id, connection_id, remaining) {
            self.on_command(request);
        }
    }

    /// A dial failed (to `peer_id`, if the dial named one).
    fn on_dial_failed(&mut self, peer_id: Option<PeerId>, error: libp2p::swarm::DialError) {
        debug!(peer = ?peer_id, "dial failed: {error}");
        if let Some(peer) = peer_id
            && !self.swarm.is_connected(&peer)
        {
            let now = Instant::now();
            let spell = self.out_of_reach.entry(peer).or_insert(OutOfReach {
                since: now,
                last: now,
                error: String::new(),
                logged: false,
            });
            spell.last = now;
            // The transport's error: its first line is enough for `status`.
            let error = error.to_string();
            spell.error = error
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
        }
        if self.swarm.connected_peers().next().is_none() {
            self.last_dial_error = Some(error.to_string());
        }
    }

    /// An inbound connection failed before it was established.
    fn on_inbound_failed(&mut self, error: libp2p::swarm::ListenError, send_back_addr: Multiaddr) {
        debug!("inbound connection failed: {error}");
        let now = Instant::now();
        if let libp2p::swarm::ListenError::Denied { cause } = &error
            && let Some(exceeded) = cause.downcast_ref::<libp2p::connection_limits::Exceeded>()
        {
            // A fourth connection of one peer id (see `MAX_CONNECTIONS_PER_PEER`):
            // authenticated, only one too many.
            if exceeded.limit() <= crate::behaviour::MAX_CONNECTIONS_PER_PEER as u32 + 1 {
                return;
            }
            // Too many in their handshake at once (`behaviour::max_pending_incoming`).
            if let Some(since_last_said) = self.refused_pending.one_more(now) {
                warn!(
                    from = %send_back_addr,
                    since_last_said,
                    "closed an incoming connection at once: {} are in their handshake already \
                     (a burst of nodes dialling at once, or a flood of connections that never \
                     finish it; nodes dialling now try again; said at most every 10 min)",
                    exceeded.limit()
                );
            }
            return;
        }
        // A pause just ended (this may be the first thing handled after it).
        self.after_a_pause(now);
        if self
            .resumed_at
            .is_some_and(|at| now.saturating_duration_since(at) < AFTER_A_PAUSE_NO_STRANGERS)
        {
            debug!("an inbound connection made while this node did not run was given up");
            return;
        }
        if let Some(since_last_said) = self.refused_inbound.one_more(now) {
            warn!(
                from = %send_back_addr,
                since_last_said,
                "a connection failed before it was authenticated: {error} (a node with \
                 another mesh key or none, or something that is not a directord-mesh \
                 node; said at most every 10 min)"
            );
        }
    }

    /// Says that `what` came from `peer`, not a member. Right after this node starts its table
    /// is still filling and members' messages are refused for a moment (they are sent again),
    /// so only later is it worth a warning.
    pub(super) fn not_a_member(&mut self, peer: &PeerId, what: &str) {
        let now = Instant::now();
        if self.started.elapsed() < TABLE_FILLS_WITHIN {
            debug!(%peer, "{what} from a node not yet known as a member (this node just started)");
            return;
        }
        // Once a minute per node at most: a download asks for many chunks at a time, and any
        // host may send requests in an open mesh.
        let said = &mut self.non_members_said;
        if said.len() >= MAX_NON_MEMBERS_SAID && !said.contains_key(peer) {
            said.clear();
        }
        let due = said
            .entry(*peer)
            .or_insert(SaidAtMost::every(NON_MEMBER_SAID_EVERY))
            .due(now);
        if due {
            warn!(%peer, "{what} from a node that is not a member of this mesh");
        } else {
            debug!(%peer, "{what} from a node that is not a member of this mesh");
        }
    }

    /// The layer above takes no more events now (its queue is full: it is stalled, or far
    /// behind): `what` was done instead of waiting for it, which would stop this loop, and
    /// with it the heartbeats and syncs that keep this node a member. Said once a minute.
    fn busy(&mut self, what: &str) {
        if self.busy_said.due(Instant::now()) {
            warn!(
                "{what}: the node's job handling is behind (its queue of {CHANNEL_DEPTH} events \
                 is full); senders try again (said at most once a minute)"
            );
        } else {
            debug!("{what}: the node's job handling is behind");
        }
    }

    /// Whether `peer` has a row in the membership table (in any state: a member that expired
    /// or left here may be back before its new presence arrives).
    pub(super) fn is_member(&self, peer: &PeerId) -> bool {
        self.membership.contains(peer)
    }

    pub(super) async fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                // Gossip is passed on only once taken here (`validate_messages`): what a
                // member would drop (a stranger's job message, a forged or unreadable
                // presence) goes no further than this node.
                let acceptance = self.take_gossip(message).await;
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            // The node's join: its first presence goes out as soon as one peer can take it,
            // and gossip spreads it from there. Later subscribers are newcomers, which learn
            // this node from the table they sync on dialling; publishing again for each would
            // cost every member a message per join (quadratic formation).
            gossipsub::Event::Subscribed { peer_id, topic }
                if topic == self.presence_topic.hash() =>
            {
                // A peer that tells its subscriptions again may have started over.
                if self.connected.told(peer_id) {
                    self.reconnect_started_over(peer_id);
                }
                if self.last_presence_publish.is_none() && self.leaving.is_none() {
                    self.heartbeat();
                }
            }
            _ => {}
        }
    }

    /// Takes a gossiped message: a job message from a member goes to the layer above, a
    /// presence into the table. Returns whether gossip passes it on.
    async fn take_gossip(&mut self, message: gossipsub::Message) -> gossipsub::MessageAcceptance {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        if message.topic == self.jobs_topic.hash() {
            // Jobs come only from members (nodes whose presence this node has heard).
            return match message.source {
                Some(source) if !self.is_member(&source) => {
                    self.not_a_member(&source, "dropped a job announce");
                    // A node that has just started knows few members yet: it passes on
                    // what it cannot judge, as every node did before it knew better.
                    if self.started.elapsed() < TABLE_FILLS_WITHIN {
                        Accept
                    } else {
                        Ignore
                    }
                }
                Some(source) => {
                    let data = message.data;
                    // Not waited for: a stalled layer above must not stall the mesh
                    // (heartbeats, syncs). A run announced meanwhile is dropped here (and still
                    // passed on); its originator sends it directly to whoever did not take it.
                    if let Err(e) = self.events.try_send(MeshEvent::Announce { source, data })
                        && matches!(e, mpsc::error::TrySendError::Full(_))
                    {
                        self.busy("dropped a gossiped job message");
                    }
                    Accept
                }
                // Unsigned: `ValidationMode::Strict` lets none through.
                None => Reject,
            };
        }
        if message.topic != self.presence_topic.hash() {
            return Ignore;
        }
        match wire::decode::<Presence>(&message.data, MAX_GOSSIP_BYTES) {
            Ok(p) if Some(p.peer_id) == message.source => {
                // Upgraded, if it spoke another version before.
                self.other_releases.remove(&p.peer_id);
                self.pass_back_earlier_start(&p);
                self.observe(p).await;
                Accept
            }
            Ok(p) => {
                let signer = message.source.map_or("nobody".into(), |s| s.to_string());
                let why = format!("of {} signed by {signer}", p.peer_id);
                self.dropped_presence(&why);
                Reject
            }
            // Another release's presence: the nodes of that release read it.
            Err(wire::WireError::Version { found }) if let Some(source) = message.source => {
                self.heard_other_release(source, found, &message.data);
                Accept
            }
            Err(e) => {
                let from = message.source.map_or("nobody".into(), |s| s.to_string());
                let why = format!("from {from} that cannot be read: {e}");
                self.dropped_presence(&why);
                Reject
            }
        }
    }

    /// Reconnects `peer`, whose gossip started over beside a connection now found dead (see
    /// `connections::ConnectedPeers`).
    fn reconnect_started_over(&mut self, peer: PeerId) {
        info!(
            %peer,
            "a peer started over while its old connection stood here (it restarted, or a copy of \
             its state directory started elsewhere): reconnecting it so both sides hear each \
             other's gossip"
        );
        // Requests for it wait until its connections are gone, then dial again.
        self.closing.begin(peer, Instant::now());
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// Says that a gossiped presence was dropped (`why`): once a minute at most, as a member
    /// breaking the protocol may send one with every heartbeat.
    fn dropped_presence(&mut self, why: &str) {
        if self.dropped_presence_said.due(Instant::now()) {
            warn!("dropped a presence {why} (said at most once a minute)");
        } else {
            debug!("dropped a presence {why}");
        }
    }

    /// Hands `presence`, a heartbeat heard from its node, back to that node's peer id if it is
    /// of an earlier start than the row held: a copy of that node's state directory, started
    /// later, runs too. Gossip never brings a node the messages of its own peer id (nobody
    /// forwards a message to its source), and peers pass on only the later start's rows, so
    /// this is how the later start hears of the earlier one (see [`membership::Twin`]). The
    /// request goes on one of the connections to that peer id, in turn: to either daemon.
    /// The earlier start takes its own heartbeat as nothing new.
    fn pass_back_earlier_start(&mut self, presence: &Presence) {
        if self.leaving.is_some()
            || !self.membership.to_pass_back(presence)
            || !self.swarm.is_connected(&presence.peer_id)
        {
            return;
        }
        let members = vec![wire::MemberRecord {
            presence: presence.clone(),
            age_ms: 0,
        }];
        self.send_ctl(&presence.peer_id, CtlRequest::PushMembers { members });
    }

    /// A control-protocol event: requests answered here or handed to the layer above (jobs),
    /// answers given to the requests waiting for them.
    pub(super) async fn on_ctl(&mut self, event: request_response::Event<CtlRequest, CtlResponse>) {
        self.peer_use
            .begin_or_end(RequestProtocol::Ctl, &event, Instant::now());
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request,
                        channel,
                        request_id,
                    },
                ..
            } => {
                self.on_ctl_request(peer, request, channel, request_id)
                    .await
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_ctl_response(peer, request_id, response).await,
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.request_done(request_id);
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Err(MeshError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
                if let request_response::OutboundFailure::Io(e) = &error {
                    self.say_if_too_large(peer, e);
                }
                debug!(%peer, "control request failed: {error}");
            }
            request_response::Event::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                self.pending_replies.remove(&request_id);
                if let request_response::InboundFailure::Io(e) = &error {
                    self.say_if_too_large(peer, e);
                }
                debug!(%peer, "inbound control request failed: {error}");
            }
            // An answer sent only ends its exchange, counted above.
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// A peer's control request: a table sync or push, a leave notice, answered here; a job
    /// message from a member, handed to the layer above (which answers it).
    async fn on_ctl_request(
        &mut self,
        peer: PeerId,
        request: CtlRequest,
        channel: request_response::ResponseChannel<CtlResponse>,
        request_id: request_response::InboundRequestId,
    ) {
        let response = match request {
            CtlRequest::Job(_) if !self.is_member(&peer) => {
                self.not_a_member(&peer, "refused a job message");
                CtlResponse::Rejected {
                    reason: NOT_A_MEMBER.into(),
                }
            }
            CtlRequest::Job(data) => {
                let event = MeshEvent::JobRequest {
                    peer,
                    data,
                    token: ReplyToken(request_id),
                };
                // Not waited for (see `busy`): a layer above that cannot take it now has it
                // refused at once, and its sender sends it again later.
                match self.events.try_send(event) {
                    Ok(()) => {
                        self.pending_replies.insert(request_id, channel);
                        return;
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.busy("refused a job message");
                        CtlResponse::Rejected {
                            reason: BUSY.into(),
                        }
                    }
                    // Nobody handles jobs here: the channel is dropped, the peer sees a failure.
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            // The table goes to members only: a node's own row comes with its first sync (a
            // newcomer is a member once it is merged). A host that never announced itself
            // learns nothing of the mesh, nor makes a node copy its whole table for it.
            CtlRequest::SyncMembers { mut members } => {
                // A host not in the table yet brings its own row only (a newcomer's first
                // sync): the rows of others it may carry are not taken from a stranger.
                if !self.is_member(&peer) {
                    members.retain(|m| m.presence.peer_id == peer);
                }
                self.merge(members).await;
                if self.is_member(&peer) {
                    CtlResponse::Members {
                        members: self.membership.records(Instant::now()),
                    }
                } else {
                    self.not_a_member(&peer, "refused a table sync");
                    CtlResponse::Rejected {
                        reason: NOT_A_MEMBER.into(),
                    }
                }
            }
            CtlRequest::SyncVersions { .. } if !self.is_member(&peer) => {
                self.not_a_member(&peer, "refused a table sync");
                CtlResponse::Rejected {
                    reason: NOT_A_MEMBER.into(),
                }
            }
            CtlRequest::SyncVersions { versions } => {
                let (members, wanted) = self.membership.delta(&versions, Instant::now());
                CtlResponse::Delta { members, wanted }
            }
            // Rows pushed unasked come from members only (a node pushes what an answer to
            // its own sync said was wanted, or a copy's heartbeat back to it): a stranger
            // does not fill the table, nor keep the node checking signatures.
            CtlRequest::PushMembers { .. } if !self.is_member(&peer) => {
                self.not_a_member(&peer, "refused rows pushed");
                CtlResponse::Rejected {
                    reason: NOT_A_MEMBER.into(),
                }
            }
            CtlRequest::PushMembers { members } => {
                self.merge(members).await;
                CtlResponse::Ack
            }
            CtlRequest::Leave { presence }
                if presence.peer_id == peer && presence.status == PresenceStatus::Leaving =>
            {
                self.observe(*presence).await;
                CtlResponse::Ack
            }
            CtlRequest::Leave { .. } => CtlResponse::Rejected {
                reason: "a leave notice must come from the leaving node".into(),
            },
        };
        // Err means the peer went away meanwhile; nothing is waiting for the answer.
        let _ = self
            .swarm
            .behaviour_mut()
            .ctl
            .send_response(channel, response);
    }

    /// A peer's answer to a control request: given to whoever waits for it (a job message
    /// sent for the layer above), or merged into the table (a sync).
    async fn on_ctl_response(
        &mut self,
        peer: PeerId,
        request_id: OutboundRequestId,
        response: CtlResponse,
    ) {
        self.request_done(request_id);
        if let Some(reply) = self.pending_requests.remove(&request_id) {
            let _ = reply.send(match response {
                CtlResponse::Job(data) => Ok(data),
                CtlResponse::Rejected { reason } => Err(MeshError::Request {
                    peer,
                    reason: format!("refused: {reason}"),
                }),
                other => Err(MeshError::Request {
                    peer,
                    reason: format!("unexpected answer {other:?}"),
                }),
            });
            return;
        }
        match response {
            CtlResponse::Members { members } => {
                self.merge(members).await;
                // Nodes joining at the same moment as this one reach that peer just
                // after this table left it, and their one-time joins may miss this
                // node: ask once more what it has learned since.
                if matches!(self.second_sync, SecondSync::Due) {
                    self.second_sync =
                        SecondSync::At(peer, tokio::time::Instant::now() + SECOND_SYNC_AFTER);
                }
                // Connect to the members just learned now rather than at the next tick.
                if self.leaving.is_none() {
                    self.keep_connected(Instant::now());
                }
            }
            CtlResponse::Delta { members, wanted } => {
                self.merge(members).await;
                if !wanted.is_empty() && self.leaving.is_none() {
                    let members = self.membership.records_of(&wanted, Instant::now());
                    self.send_ctl(&peer, CtlRequest::PushMembers { members });
                }
            }
            _ => {}
        }
    }

    /// A blob-protocol event: members' chunk requests handed to the layer above, answers
    /// given to the downloads waiting for them.
    pub(super) async fn on_blob(
        &mut self,
        event: request_response::Event<BlobRequest, BlobResponse>,
    ) {
        self.peer_use
            .begin_or_end(RequestProtocol::Blob, &event, Instant::now());
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request,
                        channel,
                        request_id,
                    },
                ..
            } => {
                // Files go to members only, as jobs come only from them (in an open mesh any
                // host may connect; one that never announced itself learns nothing here).
                if !self.is_member(&peer) {
                    self.not_a_member(&peer, "refused a file request");
                    // Err: the requester went away.
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .blob
                        .send_response(channel, BlobResponse::Unknown);
                    return;
                }
                let event = MeshEvent::BlobRequest {
                    peer,
                    request,
                    token: BlobToken(request_id),
                };
                match self.events.try_send(event) {
                    Ok(()) => {
                        self.pending_blob_replies.insert(request_id, channel);
                    }
                    // Asked again a moment later, as a chunk still on its way here is.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.busy("answered a file request 'not yet'");
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .blob
                            .send_response(channel, BlobResponse::NotYet);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.pending_blobs.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending_blobs.remove(&request_id) {
                    let _ = reply.send(Err(MeshError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { request_id, .. } => {
                self.pending_blob_replies.remove(&request_id);
            }
            // An answer sent only ends its exchange, counted above.
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn request_done(&mut self, id: OutboundRequestId) {
        if let Some(leaving) = &mut self.leaving {
            leaving.outstanding.remove(&id);
        }
    }
}

impl PeerUse {
    /// Counts the exchange a request-response event on `protocol` begins or ends, at `now`,
    /// before the event is handled: a request received begins one, ended by its answer sent
    /// or its failure; an answer received or a failure ends a request this node sent (begun
    /// in `send_ctl` or `send_blob`). Every kind of event is named, so a new one cannot go
    /// uncounted.
    fn begin_or_end<Request, Response>(
        &mut self,
        protocol: RequestProtocol,
        event: &request_response::Event<Request, Response>,
        now: Instant,
    ) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message: Message::Request { request_id, .. },
                ..
            } => self.began(*peer, Exchange::Inbound(protocol, *request_id), now),
            Event::Message {
                peer,
                message: Message::Response { request_id, .. },
                ..
            }
            | Event::OutboundFailure {
                peer, request_id, ..
            } => self.ended(*peer, Exchange::Outbound(protocol, *request_id), now),
            Event::ResponseSent {
                peer, request_id, ..
            }
            | Event::InboundFailure {
                peer, request_id, ..
            } => self.ended(*peer, Exchange::Inbound(protocol, *request_id), now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connections::LastUse;
    use request_response::{Event, Message};

    /// Which of the two swarms of [`Pair`] heard an event.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Side {
        Asker,
        Answerer,
    }

    /// What a request-response event is, whatever its protocol.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Kind {
        Request,
        Response,
        OutboundFailure,
        InboundFailure,
        ResponseSent,
    }

    /// The protocol and kind of a request-response event.
    fn what(event: &MeshBehaviourEvent) -> (RequestProtocol, Kind) {
        fn kind<Request, Response>(event: &Event<Request, Response>) -> Kind {
            match event {
                Event::Message {
                    message: Message::Request { .. },
                    ..
                } => Kind::Request,
                Event::Message {
                    message: Message::Response { .. },
                    ..
                } => Kind::Response,
                Event::OutboundFailure { .. } => Kind::OutboundFailure,
                Event::InboundFailure { .. } => Kind::InboundFailure,
                Event::ResponseSent { .. } => Kind::ResponseSent,
            }
        }
        match event {
            MeshBehaviourEvent::Ctl(e) => (RequestProtocol::Ctl, kind(e)),
            MeshBehaviourEvent::Blob(e) => (RequestProtocol::Blob, kind(e)),
            other => panic!("not a request-response event: {other:?}"),
        }
    }

    /// Two bare swarms of the mesh's protocols connected over memory, one asking and one
    /// answering, each counting its exchanges with the other as the event loop does.
    struct Pair {
        asker: Swarm<MeshBehaviour>,
        answerer: Swarm<MeshBehaviour>,
        asker_use: PeerUse,
        answerer_use: PeerUse,
    }

    impl Pair {
        async fn connected() -> Pair {
            let swarm = || {
                build_swarm(Keypair::generate_ed25519(), TransportKind::Memory, None)
                    .expect("a swarm")
            };
            let (mut asker, mut answerer) = (swarm(), swarm());
            answerer
                .listen_on("/memory/0".parse().expect("a memory address"))
                .expect("the answerer listens");
            let addr = loop {
                if let SwarmEvent::NewListenAddr { address, .. } = answerer.select_next_some().await
                {
                    break address;
                }
            };
            asker.dial(addr).expect("the asker dials");
            let (mut asker_in, mut answerer_in) = (false, false);
            while !(asker_in && answerer_in) {
                tokio::select! {
                    event = asker.select_next_some() => {
                        asker_in |= matches!(event, SwarmEvent::ConnectionEstablished { .. });
                    }
                    event = answerer.select_next_some() => {
                        answerer_in |= matches!(event, SwarmEvent::ConnectionEstablished { .. });
                    }
                }
            }
            Pair {
                asker,
                answerer,
                asker_use: PeerUse::default(),
                answerer_use: PeerUse::default(),
            }
        }

        /// Sends a request on `protocol`, counted as `send_ctl` and `send_blob` count theirs.
        fn ask(&mut self, protocol: RequestProtocol) {
            let peer = *self.answerer.local_peer_id();
            let behaviour = self.asker.behaviour_mut();
            let id = match protocol {
                RequestProtocol::Ctl => behaviour.ctl.send_request(&peer, CtlRequest::Job(vec![])),
                RequestProtocol::Blob => {
                    let request = BlobRequest {
                        hash: [0; 32],
                        index: 0,
                    };
                    behaviour.blob.send_request(&peer, request)
                }
            };
            let exchange = Exchange::Outbound(protocol, id);
            self.asker_use.began(peer, exchange, Instant::now());
        }

        /// Whether `side` counts an exchange with the other side as under way.
        fn busy(&mut self, side: Side) -> bool {
            let now = Instant::now();
            let last_use = match side {
                Side::Asker => {
                    let peer = *self.answerer.local_peer_id();
                    self.asker_use.last_use(peer, now)
                }
                Side::Answerer => {
                    let peer = *self.asker.local_peer_id();
                    self.answerer_use.last_use(peer, now)
                }
            };
            last_use == LastUse::Busy
        }

        /// The next request-response event on either side, of either protocol, counted as the
        /// event loop counts it (before handling it).
        async fn next(&mut self) -> (Side, MeshBehaviourEvent) {
            loop {
                let (side, event) = tokio::select! {
                    event = self.asker.select_next_some() => (Side::Asker, event),
                    event = self.answerer.select_next_some() => (Side::Answerer, event),
                };
                let SwarmEvent::Behaviour(event) = event else {
                    continue;
                };
                let uses = match side {
                    Side::Asker => &mut self.asker_use,
                    Side::Answerer => &mut self.answerer_use,
                };
                let now = Instant::now();
                match &event {
                    MeshBehaviourEvent::Ctl(e) => uses.begin_or_end(RequestProtocol::Ctl, e, now),
                    MeshBehaviourEvent::Blob(e) => uses.begin_or_end(RequestProtocol::Blob, e, now),
                    _ => continue,
                }
                return (side, event);
            }
        }
    }

    /// On both protocols, a request counts as under way on each side from its sending (asker)
    /// or arrival (answerer) until its end there: an answer sent or received, or a failure
    /// (the answerer dropping the request unanswered). While under way, the connection
    /// budget keeps the peer's connection.
    #[tokio::test]
    async fn an_exchange_is_under_way_on_both_sides_until_its_answer_or_failure() {
        let exchanges = async {
            let mut pair = Pair::connected().await;
            for protocol in [RequestProtocol::Ctl, RequestProtocol::Blob] {
                for answered in [true, false] {
                    let case = format!("{protocol:?}, answered: {answered}");
                    pair.ask(protocol);
                    assert!(pair.busy(Side::Asker), "{case}: a request sent begins one");
                    assert!(!pair.busy(Side::Answerer), "{case}");

                    let (side, event) = pair.next().await;
                    assert_eq!(
                        (side, what(&event)),
                        (Side::Answerer, (protocol, Kind::Request)),
                        "{case}"
                    );
                    assert!(
                        pair.busy(Side::Answerer),
                        "{case}: a request received begins one"
                    );
                    // Err: the asker went away, which the ends below would show.
                    let behaviour = pair.answerer.behaviour_mut();
                    match event {
                        MeshBehaviourEvent::Ctl(Event::Message {
                            message: Message::Request { channel, .. },
                            ..
                        }) if answered => {
                            let _ = behaviour.ctl.send_response(channel, CtlResponse::Ack);
                        }
                        MeshBehaviourEvent::Blob(Event::Message {
                            message: Message::Request { channel, .. },
                            ..
                        }) if answered => {
                            let _ = behaviour.blob.send_response(channel, BlobResponse::NotYet);
                        }
                        // Dropping the request's channel leaves it unanswered.
                        unanswered => drop(unanswered),
                    }

                    let mut ends = Vec::new();
                    for _ in 0..2 {
                        let (side, event) = pair.next().await;
                        let (on, kind) = what(&event);
                        assert_eq!(on, protocol, "{case}: {event:?}");
                        assert!(!pair.busy(side), "{case}: {side:?} busy after {event:?}");
                        ends.push((side, kind));
                    }
                    ends.sort();
                    let expected = match answered {
                        true => [
                            (Side::Asker, Kind::Response),
                            (Side::Answerer, Kind::ResponseSent),
                        ],
                        false => [
                            (Side::Asker, Kind::OutboundFailure),
                            (Side::Answerer, Kind::InboundFailure),
                        ],
                    };
                    assert_eq!(ends, expected, "{case}");
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), exchanges)
            .await
            .expect("the exchanges end in time");
    }
}
