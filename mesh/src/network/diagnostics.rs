//! What this node tells the operator about trouble in its place in the mesh: members it
//! cannot dial though others hear them (a partial partition), nodes of another release,
//! another daemon running with its identity, and connections from outside the mesh that
//! fail. Each is said in the log at a measured pace and listed by `status`.

use super::*;

/// Something the log says at most once every so often (a node with the wrong key retries
/// every few seconds, a download asks for many chunks at a time): when it was last said.
#[derive(Debug, Clone, Copy)]
pub(super) struct SaidAtMost {
    every: Duration,
    last: Option<Instant>,
}

impl SaidAtMost {
    /// Not said yet; then at most once every `every`.
    pub(super) const fn every(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// Whether to say it at `now`; if so, it counts as said then.
    pub(super) fn due(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < self.every)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// Inbound connections refused or failed before they were authenticated, since the last
/// warning.
pub(super) struct RefusedInbound {
    count: u64,
    said: SaidAtMost,
}

impl RefusedInbound {
    /// Counts one more; when a warning is due, how many there were since the last one (this
    /// one included), and the count starts over.
    pub(super) fn one_more(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        self.said.due(now).then(|| std::mem::take(&mut self.count))
    }
}

impl Default for RefusedInbound {
    fn default() -> Self {
        Self {
            count: 0,
            said: SaidAtMost::every(REFUSED_INBOUND_SAID_EVERY),
        }
    }
}

/// Rows the membership table refused, being full (see [`membership::MAX_MEMBERS`]): how many
/// since the log last said so, and when the last one was, for `status`.
#[derive(Debug)]
pub(super) struct RefusedRows {
    unsaid: u64,
    last: Option<Instant>,
    said: SaidAtMost,
}

impl Default for RefusedRows {
    fn default() -> Self {
        Self {
            unsaid: 0,
            last: None,
            said: SaidAtMost::every(TABLE_FULL_SAID_EVERY),
        }
    }
}

impl RefusedRows {
    /// Counts `refused` more rows refused at `now`; returns how many to say in the log now,
    /// if it is time (at most once every [`TABLE_FULL_SAID_EVERY`], with every row refused
    /// since the last time).
    pub(super) fn count(&mut self, refused: u64, now: Instant) -> Option<u64> {
        if refused > 0 {
            self.unsaid = self.unsaid.saturating_add(refused);
            self.last = Some(now);
        }
        if self.unsaid == 0 || !self.said.due(now) {
            return None;
        }
        Some(std::mem::take(&mut self.unsaid))
    }

    /// Whether rows were refused lately enough for `status` to say so: within two log
    /// periods, so a table that keeps refusing stays listed between two log lines.
    pub(super) fn lately(&self, now: Instant) -> bool {
        self.last
            .is_some_and(|at| now.saturating_duration_since(at) < 2 * TABLE_FULL_SAID_EVERY)
    }
}

/// What the log and `status` say of a full membership table holding `rows` rows.
pub(super) fn table_full_warning(rows: usize) -> String {
    format!(
        "the membership table is full (at most {} members, {} MiB of rows; {rows} here): rows \
         of members not known here, or heartbeats over {} KiB of members known, are refused. \
         Members gone make room as they go; members alive are never dropped for newcomers. \
         Someone who may connect to this mesh may be making up identities, or the mesh is \
         larger than it was built for",
        membership::MAX_MEMBERS,
        membership::MAX_TABLE_BYTES / (1024 * 1024),
        membership::SMALL_ROW_BYTES / 1024,
    )
}

/// A member this node cannot dial (see [`OUT_OF_REACH_SAID_AFTER`]).
pub(super) struct OutOfReach {
    pub(super) since: Instant,
    pub(super) last: Instant,
    pub(super) error: String,
    /// The log has said so (once per spell, when it is [`OutOfReach::said`]).
    pub(super) logged: bool,
}

impl OutOfReach {
    /// Long enough, and lately enough, to be said (in `status`, the log, to clients waiting
    /// on the member).
    pub(super) fn said(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= OUT_OF_REACH_SAID_AFTER
            && now.saturating_duration_since(self.last) < 2 * OUT_OF_REACH_SAID_AFTER
    }
}

/// A node heard speaking another wire version (another release): it cannot take part.
pub(super) struct OtherRelease {
    pub(super) version: u16,
    /// What its heartbeat says of it, if this release can read that much of it.
    pub(super) about: Option<OtherPresence>,
    pub(super) last_heard: Instant,
    pub(super) warned: SaidAtMost,
}

impl OtherRelease {
    /// As `status` and the log name it (`peer` is its peer id).
    pub(super) fn view(&self, peer: PeerId) -> OtherReleaseView {
        OtherReleaseView {
            peer_id: peer,
            wire_version: self.version,
            name: self.about.as_ref().map(|p| p.name.clone()),
            release: self.about.as_ref().map(|p| p.version.clone()),
        }
    }
}

/// The part of a heartbeat of another release read to name the node: every release so far
/// has these fields, and unknown ones are skipped.
#[derive(Debug, Clone, serde::Deserialize)]
pub(super) struct OtherPresence {
    pub(super) name: String,
    pub(super) version: String,
}

impl OtherPresence {
    /// Whether it looks like a node's name and a release, to be shown as they are (another
    /// release's heartbeat is not checked as this release's are).
    pub(super) fn plausible(&self) -> bool {
        wire::plausible_text(&self.name, 253) && wire::plausible_text(&self.version, 64)
    }
}

/// What `status` says of the nodes heard speaking wire version `version` (each as
/// [`OtherReleaseView`] shows it).
pub(super) fn other_release_warning(version: u16, nodes: &[String]) -> String {
    const NAMED: usize = 5;
    let mut named: Vec<String> = nodes.iter().take(NAMED).cloned().collect();
    if nodes.len() > NAMED {
        named.push(format!("and {} more", nodes.len() - NAMED));
    }
    let count = match nodes.len() {
        1 => "1 node speaks".to_string(),
        n => format!("{n} nodes speak"),
    };
    format!(
        "{count} wire version {version}, this node speaks {}: another release, which cannot \
         take part in this mesh (not listed) until every node runs the same directord-mesh \
         release ({})",
        wire::spoken_version(),
        named.join(", ")
    )
}

/// What the log and `status` say of another daemon with this node's identity at `addresses`.
pub(super) fn twin_warning(addresses: &[Multiaddr]) -> String {
    let addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    format!(
        "another daemon runs with this node's identity (at {}): one of the two runs with a \
         copy of the other's state directory. Peers hear one of them at a time, and jobs and \
         results for this node may go to either (results of runs one of them submitted wait \
         with their targets until they reach it); stop the copy, or move the copy's \
         identity.key away so it becomes a node of its own",
        addresses.join(", ")
    )
}

/// How long `status` shows the warning of another daemon with this node's identity after
/// news of it, whose heartbeats come every `interval`: two of the log's warning periods, or
/// three of the other's intervals if longer (peers pass on only some of its heartbeats, and a
/// large mesh heartbeats slowly), so that the warning stays while the other runs.
pub(super) fn twin_shown_for(interval: Duration) -> Duration {
    (2 * TWIN_WARNING_EVERY).max(interval * membership::EXPIRY_INTERVALS)
}

/// The size limit a control message was over, if that is why an exchange failed (the codec
/// refuses to write or read such a message).
pub(super) fn over_the_limit(error: &std::io::Error) -> Option<(usize, usize)> {
    match error.get_ref()?.downcast_ref::<wire::WireError>()? {
        wire::WireError::TooLarge { size, limit } => Some((*size, *limit)),
        _ => None,
    }
}

impl EventLoop {
    /// Warnings for `status`: connected to nobody though told whom to join, another daemon
    /// heard with this node's identity lately, nodes heard speaking another wire version,
    /// members out of reach, a full membership table.
    pub(super) fn warnings(&self, now: Instant) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.swarm.connected_peers().next().is_none()
            && let Some(w) = self.alone_warning(now)
        {
            warnings.push(w);
        }
        if let Some((until, addresses)) = &self.twin_seen
            && now < *until
        {
            warnings.push(twin_warning(addresses));
        }
        // (Nodes not heard for OTHER_RELEASE_SHOWN_FOR leave the map every second.)
        let mut by_version: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for view in self.other_release_views() {
            by_version
                .entry(view.wire_version)
                .or_default()
                .push(view.to_string());
        }
        for (version, mut nodes) in by_version {
            nodes.sort();
            warnings.push(other_release_warning(version, &nodes));
        }
        if let Some(w) = self.out_of_reach_warning(now) {
            warnings.push(w);
        }
        if self.refused_rows.lately(now) {
            warnings.push(table_full_warning(self.membership.rows()));
        }
        warnings
    }

    /// Says in the log (at most every [`TOO_LARGE_SAID_EVERY`]) that a control message with
    /// `peer` was over its size limit: most likely a membership table too large to send in one
    /// message, so every full-table sync fails and nodes joining through this one learn
    /// nobody.
    pub(super) fn say_if_too_large(&mut self, peer: PeerId, error: &std::io::Error) {
        let Some((size, limit)) = over_the_limit(error) else {
            return;
        };
        if self.too_large_said.due(Instant::now()) {
            warn!(
                %peer,
                "a control message of {size} bytes is over the {limit}-byte limit and was not \
                 exchanged: if it is a membership table ({} members here), table syncs fail and \
                 nodes joining through this one may not learn the mesh",
                self.membership.rows()
            );
        }
    }

    /// Says in the log (at most every [`TABLE_FULL_SAID_EVERY`]) how many rows the membership
    /// table refused, being full: members it does not show and whose messages it refuses.
    pub(super) fn say_if_table_full(&mut self) {
        let refused = self.membership.take_refused();
        if let Some(count) = self.refused_rows.count(refused, Instant::now()) {
            warn!(
                refused = count,
                "{} (said at most every 10 min, with the rows refused since)",
                table_full_warning(self.membership.rows())
            );
        }
    }

    /// Says in the log, once per spell, which members alive through other nodes this node has
    /// failed to dial for [`OUT_OF_REACH_SAID_AFTER`] (a partial partition).
    pub(super) fn log_out_of_reach(&mut self, now: Instant) {
        for (peer, spell) in &mut self.out_of_reach {
            if spell.logged || !spell.said(now) || !self.membership.is_alive(peer, now) {
                continue;
            }
            spell.logged = true;
            let name = self.membership.name_of(peer).unwrap_or("a member");
            let heard = self
                .membership
                .last_heard_ago(peer, now)
                .unwrap_or_default();
            warn!(
                %peer,
                "{name} is alive by the mesh's table (last heard {} s ago) but not reachable \
                 directly from this node for {} s ({}): results between the two wait until it \
                 is reachable again",
                heard.as_secs(),
                now.saturating_duration_since(spell.since).as_secs(),
                spell.error
            );
        }
    }

    /// Members alive by the table (heard through other nodes, or not expired yet) that this
    /// node has failed to dial for
    /// [`OUT_OF_REACH_SAID_AFTER`], lately, with how long and the last error.
    pub(super) fn out_of_reach_warning(&self, now: Instant) -> Option<String> {
        const NAMED: usize = 5;
        let mut spells: Vec<(String, Duration, Duration, &str)> = self
            .out_of_reach
            .iter()
            .filter(|(peer, o)| o.said(now) && self.membership.is_alive(peer, now))
            .map(|(peer, o)| {
                let name = self
                    .membership
                    .name_of(peer)
                    .map_or_else(|| peer.to_string(), str::to_string);
                (
                    name,
                    now.saturating_duration_since(o.since),
                    self.membership
                        .last_heard_ago(peer, now)
                        .unwrap_or_default(),
                    o.error.as_str(),
                )
            })
            .collect();
        if spells.is_empty() {
            return None;
        }
        spells.sort_by(|a, b| a.0.cmp(&b.0));
        let mut named: Vec<String> = spells
            .iter()
            .take(NAMED)
            .map(|(name, d, heard, error)| {
                format!(
                    "{name} for {} s, last heard {} s ago ({error})",
                    d.as_secs(),
                    heard.as_secs()
                )
            })
            .collect();
        if spells.len() > NAMED {
            named.push(format!("and {} more", spells.len() - NAMED));
        }
        Some(format!(
            "alive by the mesh's table but not reachable directly from this node: {}; \
             results between them wait until a direct connection works (jobs go through \
             other nodes, files come from other nodes that hold them)",
            named.join("; ")
        ))
    }

    pub(super) fn other_release_views(&self) -> Vec<OtherReleaseView> {
        let mut views: Vec<OtherReleaseView> = self
            .other_releases
            .iter()
            .map(|(peer, other)| other.view(*peer))
            .collect();
        views.sort_by(|a, b| (&a.name, a.peer_id).cmp(&(&b.name, b.peer_id)));
        views
    }

    /// `peer` sent a heartbeat in wire version `version`, not this node's: another release,
    /// which cannot take part (say so, once in a while for each such node, and in `status`).
    pub(super) fn heard_other_release(&mut self, peer: PeerId, version: u16, data: &[u8]) {
        let now = Instant::now();
        let about = wire::decode_any_version::<OtherPresence>(data, MAX_GOSSIP_BYTES)
            .ok()
            .filter(OtherPresence::plausible);
        if let Some(other) = self.other_releases.get_mut(&peer) {
            other.version = version;
            other.last_heard = now;
            if about.is_some() {
                other.about = about;
            }
            if !other.warned.due(now) {
                return;
            }
        } else if self.other_releases.len() < MAX_OTHER_RELEASES {
            let mut warned = SaidAtMost::every(OTHER_RELEASE_WARNING_EVERY);
            warned.due(now);
            self.other_releases.insert(
                peer,
                OtherRelease {
                    version,
                    about,
                    last_heard: now,
                    warned,
                },
            );
        } else {
            // So many already named: this one goes unsaid rather than at every heartbeat.
            return;
        }
        let Some(view) = self.other_releases.get(&peer).map(|o| o.view(peer)) else {
            return;
        };
        warn!(
            node = %view,
            "a node speaks wire version {version}, this node speaks {}: it cannot take part in \
             this mesh until both run the same directord-mesh release",
            wire::spoken_version()
        );
    }

    /// Another daemon runs with this node's identity (a copied state directory): say so while
    /// it runs. With a later start, peers take its heartbeats over this node's: once it has
    /// gone, start over with a later start of its own so peers take this node's again. (One
    /// with an earlier start is never reported gone: this node's heartbeats are taken.)
    pub(super) async fn answer_twin(&mut self) {
        let Some(twin) = self.membership.take_twin() else {
            return;
        };
        // A node on its way out neither warns nor speaks again (its own goodbye, passed
        // back, is no twin's; the table holds it).
        if self.leaving.is_some() {
            return;
        }
        if twin.gone {
            self.twin_seen = None;
            self.incarnation = self
                .incarnation
                .max(twin.presence.incarnation.saturating_add(1));
            self.seq = 0;
            warn!(
                "the other daemon with this node's identity has left or gone silent; this node \
                 speaks for itself again"
            );
            self.heartbeat();
            // Err: nobody listens any more (the node stops).
            let _ = self
                .events
                .send(MeshEvent::Renumbered(self.incarnation))
                .await;
            return;
        }
        let interval = Duration::from_millis(twin.presence.heartbeat_interval_ms);
        let until = Instant::now() + twin_shown_for(interval);
        self.twin_seen = Some((until, twin.presence.addresses.clone()));
        if self.twin_said.due(Instant::now()) {
            warn!(
                peer = %self.local_peer_id,
                machine = %twin.presence.machine_id,
                "{}",
                twin_warning(&twin.presence.addresses)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warning_of_a_twin_outlasts_its_news_by_two_log_periods_or_three_of_its_intervals() {
        assert_eq!(
            twin_shown_for(Duration::from_secs(5)),
            2 * TWIN_WARNING_EVERY
        );
        assert_eq!(
            twin_shown_for(Duration::from_secs(60)),
            Duration::from_secs(180),
            "a large mesh's slow heartbeats"
        );
    }

    #[test]
    fn a_pace_says_the_first_time_then_once_every_period() {
        let start = Instant::now();
        let mut said = SaidAtMost::every(Duration::from_secs(60));
        assert!(said.due(start));
        assert!(!said.due(start));
        assert!(!said.due(start + Duration::from_secs(59)));
        assert!(said.due(start + Duration::from_secs(60)));
        assert!(!said.due(start + Duration::from_secs(119)));
        // A clock read before the last time (another thread's `now`) is not due.
        assert!(!said.due(start));
        assert!(said.due(start + Duration::from_secs(120)));
    }

    /// Every row refused is said once, at the pace of the log, and `status` lists the full
    /// table while rows were refused within two periods.
    #[test]
    fn refused_rows_are_said_once_each_and_listed_while_recent() {
        let start = Instant::now();
        let period = TABLE_FULL_SAID_EVERY;
        let mut refused = RefusedRows::default();
        assert!(!refused.lately(start));
        assert_eq!(refused.count(0, start), None);
        assert_eq!(refused.count(3, start), Some(3));
        // Within the period: counted, not said.
        assert_eq!(refused.count(2, start + Duration::from_secs(1)), None);
        assert_eq!(refused.count(5, start + period / 2), None);
        assert!(refused.lately(start + period / 2));
        // The next period says every row since, once.
        assert_eq!(refused.count(0, start + period), Some(7));
        assert_eq!(refused.count(0, start + 2 * period), None);
        // Listed until two periods after the last refusal, then not.
        assert!(refused.lately(start + period / 2 + 2 * period - Duration::from_secs(1)));
        assert!(!refused.lately(start + period / 2 + 2 * period));
    }

    #[test]
    fn a_full_table_is_told_with_its_limits_and_size() {
        let text = table_full_warning(16_000);
        for part in [
            format!("at most {} members", membership::MAX_MEMBERS),
            format!("{} MiB", membership::MAX_TABLE_BYTES / (1024 * 1024)),
            "16000 here".to_string(),
            format!("heartbeats over {} KiB", membership::SMALL_ROW_BYTES / 1024),
        ] {
            assert!(text.contains(&part), "{part:?} missing in {text:?}");
        }
    }

    fn presence(name: &str, version: &str) -> OtherPresence {
        OtherPresence {
            name: name.into(),
            version: version.into(),
        }
    }

    /// Another release's heartbeat is read without this release's checks: what it says is
    /// shown only if it looks like a node's name and a release.
    #[test]
    fn another_releases_name_is_shown_only_if_it_looks_like_one() {
        assert!(presence("web-01.example", "0.2.0+build.5").plausible());
        for (name, version) in [
            ("", "0.2.0"),
            ("web01", ""),
            ("web 01", "0.2.0"),
            ("web01\u{1b}[2J", "0.2.0"),
            ("web01\nWarning: forged", "0.2.0"),
            ("web01", "0.2.0; rm -rf /"),
            (&"x".repeat(254), "0.2.0"),
            ("web01", &"1".repeat(65)),
        ] {
            assert!(!presence(name, version).plausible(), "{name:?} {version:?}");
        }
    }

    /// A message over its size limit is told from other failures of an exchange, whichever
    /// side refused it.
    #[test]
    fn a_message_over_its_limit_is_told_apart() {
        let table = crate::wire::CtlResponse::Members {
            members: Vec::new(),
        };
        let refused = futures::executor::block_on(crate::codec::write_frame(
            &mut futures::io::Cursor::new(Vec::new()),
            &table,
            4,
        ))
        .unwrap_err();
        assert!(over_the_limit(&refused).is_some_and(|(size, limit)| size > 4 && limit == 4));
        let other = std::io::Error::new(std::io::ErrorKind::InvalidData, "garbage");
        assert_eq!(over_the_limit(&other), None);
        assert_eq!(
            over_the_limit(&std::io::ErrorKind::UnexpectedEof.into()),
            None
        );
    }

    #[test]
    fn another_release_is_named_with_what_is_known_of_it() {
        let peer = PeerId::random();
        let known = OtherRelease {
            version: 5,
            about: Some(presence("n5", "0.0.9")),
            last_heard: Instant::now(),
            warned: SaidAtMost::every(OTHER_RELEASE_WARNING_EVERY),
        };
        assert_eq!(
            known.view(peer).to_string(),
            format!("n5 ({peer}, release 0.0.9, wire version 5)")
        );
        let unknown = OtherRelease {
            about: None,
            ..known
        };
        assert_eq!(
            unknown.view(peer).to_string(),
            format!("{peer}, wire version 5")
        );
    }
}
