//! Keeping this node connected: maintenance every second dials enough random members that
//! the mesh survives the loss of any one, redials the bootstrap peers while nobody answers,
//! reaches across a healed partition, drops connections whose subscriptions never came, and
//! gives members their time back after this process was paused.

use super::*;

impl EventLoop {
    /// Gives the members their time back if this node did not run for a while (see
    /// [`PAUSED_AFTER`]): before anything reads the table's states after a pause, whichever
    /// comes first (maintenance, or a command such as `alive_members` that the layer above
    /// sends as soon as it runs again).
    pub(super) fn after_a_pause(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_ran);
        self.last_ran = now;
        if gap >= PAUSED_AFTER {
            if gap >= PAUSE_LOGGED_AFTER {
                info!(
                    secs = gap.as_secs(),
                    "this node did not run for a while (stopped or paused): the members alive \
                     before are given that time back"
                );
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
        self.log_out_of_reach(now);
        self.keep_connected(now);
        self.warn_if_alone(now);
        if now.saturating_duration_since(self.last_reconnect) >= RECONNECT_EVERY {
            self.last_reconnect = now;
            self.reconnect_one(now);
        }
        self.ask_the_left_still_here(now);
        if now.saturating_duration_since(self.last_sync) >= SYNC_EVERY {
            self.last_sync = now;
            let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
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
            .connected_since
            .iter()
            .filter(|(peer, since)| {
                now.saturating_duration_since(**since) >= SUBSCRIPTIONS_WITHIN
                    && !subscribed.contains(peer)
                    // A member heard from (not, say, a node of another release).
                    && self.membership.state_of(peer, now) == Some(MemberState::Alive)
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in deaf {
            info!(
                %peer,
                "connected for {} s without hearing the peer's subscriptions (a connection from \
                 before one side restarted may have lingered): reconnecting",
                SUBSCRIPTIONS_WITHIN.as_secs()
            );
            // Counted again from the next connection.
            self.connected_since.remove(&peer);
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
        let since = *self.alone_since.get_or_insert(now);
        if now.duration_since(since) >= ALONE_GRACE
            && let Some(error) = &self.last_dial_error
            && self.alone_said.due(now)
        {
            warn!(
                "connected to no member of the mesh for {} s: {error}. Retrying every {} s; \
                 check the address, that the peer runs, and that this node joined with that \
                 mesh's token (a node with another mesh key is refused)",
                now.duration_since(since).as_secs(),
                BOOTSTRAP_REDIAL.as_secs()
            );
        }
    }

    /// Sends `peer` the version of each row this node holds; the answer brings the rows this
    /// node lacks and names those `peer` wants back.
    pub(super) fn ask_news(&mut self, peer: &PeerId) {
        let versions = self.membership.versions();
        self.swarm
            .behaviour_mut()
            .ctl
            .send_request(peer, CtlRequest::SyncVersions { versions });
    }

    /// Dials one random expired member (see [`RECONNECT_EVERY`]).
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
