//! Membership: who is in the mesh, as one node sees it.
//!
//! A sans-IO table: it takes heartbeats, synchronised tables and leave notices together with the
//! current time, and answers what state every member is in. It never reads a clock or touches the
//! network, so the same code runs in the daemon and in the deterministic simulator.
//!
//! Rules:
//! - A member is **alive** while its last heartbeat is at most three of *its own* heartbeat
//!   intervals old, **expired** after that, **left** once it said goodbye.
//! - Two alive members with one name are both in **conflict**.
//! - News is ordered by `(incarnation, seq)`: a restarted daemon (higher incarnation) replaces
//!   its old self, and a delayed heartbeat never overrides a newer one or a leave notice.
//! - News of this node itself with a later incarnation than its own is another daemon with its
//!   identity (a copied state directory): a [`Twin`], reported to the node, which starts over
//!   with a later incarnation once the twin has left or gone silent.
//! - News of this node itself with an earlier incarnation, still going on (see
//!   [`EarlierStart`]), is the other side of the same: this daemon is the copy, and the earlier
//!   start still runs. It is a [`Twin`] too, never gone (this node's start is the later one
//!   already, peers take its heartbeats).
//! - The table holds at most [`MAX_MEMBERS`] rows and [`MAX_TABLE_BYTES`]: anyone who may
//!   connect can make up identities and sign rows for them. A full table drops members gone
//!   (expired or left), the longest unheard first, to take a new one, and otherwise refuses
//!   it: members alive are never dropped for newcomers. A later row of a member known of at
//!   most [`SMALL_ROW_BYTES`] is always taken; a larger one the table has no room for leaves
//!   the member's row as it was, and a heartbeat still says the member is there.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::wire::{MemberRecord, Presence, PresenceStatus, RowVersion};

/// A member is expired once its last heartbeat is older than this many of its intervals.
pub const EXPIRY_INTERVALS: u32 = 3;

/// How long expired and departed members stay in the table before they are forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The oldest a row passed on in a table sync can be: a node forgets a row that is not alive
/// [`FORGET_AFTER`] after its last heartbeat, and a row is alive for at most three of the
/// longest heartbeat intervals. An older age is no node's and counts as this one (an age past
/// what the clock can go back would otherwise count as heard now).
const MAX_PASSED_ON_AGE_MS: u64 = {
    let forgotten = FORGET_AFTER.as_millis() as u64;
    let alive = EXPIRY_INTERVALS as u64 * crate::wire::MAX_HEARTBEAT_MS;
    if forgotten > alive { forgotten } else { alive }
};

/// Most rows a table holds, this node's own included: room for the 10 000 nodes a mesh is
/// built for and more than half as many again (members gone but not yet forgotten, a mesh
/// grown past its plan). Anyone who may connect (in a keyed mesh, any holder of the key) can
/// make up identities and sign rows for them, and each row would otherwise stay for
/// [`FORGET_AFTER`]. A row as nodes send it takes 1 to 1.5 KiB in memory (some 400 bytes in
/// the map, the peer id and the row in place; its strings, addresses, labels and signature
/// on the heap), so a full table takes some 20 MiB; larger rows are bounded by
/// [`MAX_TABLE_BYTES`]. Past this many rows of 300 to 500 bytes encoded, a table no longer
/// fits one full-table sync (`wire::MAX_CTL_BYTES`), and nodes could not join through it.
pub const MAX_MEMBERS: usize = 16_384;

/// Most bytes the rows of other members take encoded (this node's own row is not counted)
/// for new members and for later rows over [`SMALL_ROW_BYTES`]: a row may take up to
/// `wire::MAX_PRESENCE_BYTES`, and [`MAX_MEMBERS`] such rows would take gigabytes. Four
/// full-table syncs (`wire::MAX_CTL_BYTES`): a table that works, one a newcomer can be sent
/// whole, takes at most one, and 10 000 nodes sending typical rows take 3 to 5 MiB.
///
/// Later rows of members known of at most [`SMALL_ROW_BYTES`] are taken past it, so the rows
/// take at most this and [`MAX_MEMBERS`] times [`SMALL_ROW_BYTES`] more: 64 MiB (the rows
/// over [`SMALL_ROW_BYTES`] take at most this together, each having been taken where the
/// whole table fitted it). In memory a row takes about its encoded size and 1 KiB more, so a
/// table takes some 80 MiB at most.
pub const MAX_TABLE_BYTES: usize = 4 * crate::wire::MAX_CTL_BYTES;

/// A later row of a member known that takes at most this many bytes encoded replaces its row
/// however full the table is. Rows grow as members speak (a load that a half-precision float
/// no longer holds, sequence numbers and uptimes past an integer's width, a goodbye a few
/// bytes longer than a heartbeat), and made-up identities are members known too: they can
/// join small and grow their rows until the table's bytes are full, and a table that then
/// refused longer rows would stop hearing members alive and report them expired. Rows as
/// nodes send them take 300 to 500 bytes; this leaves room for a dozen labels or addresses
/// more.
pub const SMALL_ROW_BYTES: usize = 2 * 1024;

/// Of [`MAX_TABLE_BYTES`], what only members already in the table may take: new members are
/// taken while the rows take less than the rest, so once newcomers fill the table, members
/// known may still grow rows over [`SMALL_ROW_BYTES`]. Made-up identities are members known
/// too and may take it first: members alive stay heard because later rows up to
/// [`SMALL_ROW_BYTES`] are always taken and a larger row refused still counts as heard.
const KEPT_FOR_KNOWN_BYTES: usize = crate::wire::MAX_CTL_BYTES;

/// Where a presence was heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    /// Its node's own gossip or leave notice: heard as of now.
    FromItsNode,
    /// Another node's table, with how long ago that node heard it.
    PassedOn,
}

/// Network-wide presence budget: the heartbeat interval grows with the mesh so that all
/// members together send about this many heartbeats per second.
const MESH_HEARTBEATS_PER_SEC: u64 = 50;

/// The state of one member, in the operator's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Expired,
    Left,
    Conflict,
}

impl MemberState {
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Expired => "expired",
            MemberState::Left => "left",
            MemberState::Conflict => "conflict",
        }
    }
}

/// A change worth telling the rest of the node about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// First heard of, or back after expiring, leaving or restarting (a restart is reported
    /// even when the node was not seen gone).
    Alive(PeerId),
    Expired(PeerId),
    Left(PeerId),
}

impl MembershipChange {
    /// The member it is about.
    pub fn peer(&self) -> &PeerId {
        match self {
            MembershipChange::Alive(p)
            | MembershipChange::Expired(p)
            | MembershipChange::Left(p) => p,
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    presence: Presence,
    last_seen: Instant,
    /// The last state reported through a [`MembershipChange`], to report each transition once.
    reported: MemberState,
    /// What the presence takes encoded, counted against [`MAX_TABLE_BYTES`].
    bytes: usize,
}

/// How long a member stays alive after its last heartbeat: three of its intervals.
fn expiry_of(presence: &Presence) -> Duration {
    Duration::from_millis(presence.heartbeat_interval_ms.max(1)) * EXPIRY_INTERVALS
}

/// Alive, expired or left: the state of a member whose row is `presence`, last heard from at
/// `last_seen` (conflict is decided across members in [`Membership::view`]).
fn state_of(presence: &Presence, last_seen: Instant, now: Instant) -> MemberState {
    if presence.status == PresenceStatus::Leaving {
        MemberState::Left
    } else if now.saturating_duration_since(last_seen) > expiry_of(presence) {
        MemberState::Expired
    } else {
        MemberState::Alive
    }
}

/// When a row passed on `age_ms` old was last heard from by the node that passed it on (an
/// age past [`MAX_PASSED_ON_AGE_MS`] counts as that, one not within the clock's range as now).
fn seen_at(age_ms: u64, now: Instant) -> Instant {
    let age = Duration::from_millis(age_ms.min(MAX_PASSED_ON_AGE_MS));
    now.checked_sub(age).unwrap_or(now)
}

impl Member {
    fn expiry(&self) -> Duration {
        expiry_of(&self.presence)
    }

    /// When this row is gone (expired or left) for a full table to drop it: now for a goodbye
    /// (`None`: not within the clock's range, for an absurd heartbeat interval).
    fn gone_at(&self, now: Instant) -> Option<Instant> {
        if self.presence.status == PresenceStatus::Leaving {
            Some(now)
        } else {
            self.last_seen.checked_add(self.expiry())
        }
    }

    /// When this row next changes by time alone: it expires or, once it is not alive, it is
    /// forgotten (`None`: not within the clock's range, for an absurd heartbeat interval).
    fn due(&self, now: Instant) -> Option<Instant> {
        match self.own_state(now) {
            MemberState::Alive => self.last_seen.checked_add(self.expiry()),
            _ => self.last_seen.checked_add(FORGET_AFTER),
        }
    }

    /// Alive, expired or left (conflict is decided across members in [`Membership::view`]).
    fn own_state(&self, now: Instant) -> MemberState {
        state_of(&self.presence, self.last_seen, now)
    }
}

/// Another daemon heard speaking with this node's identity: a copy of its state directory
/// running elsewhere. Started after this one (or, rarely, numbered the same), peers take its
/// news over this node's (a later start wins) for as long as it runs, so jobs for this node
/// may go there; started before this one and still running, the other way round.
///
/// Both daemons hear of each other. The earlier start hears the later one's rows (peers
/// pass on to a node rows newer than its own). The later start hears the earlier one's
/// heartbeats passed back by peers, which take them no more but hand each one heard from
/// its node to that peer id (reaching either daemon); those count only once they show the
/// earlier start still running (see [`EarlierStart`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Twin {
    pub presence: Presence,
    /// It left or went silent: this node should speak for itself again, with a later start.
    pub gone: bool,
}

/// Heartbeats of an earlier start of this node heard by this daemon: a start still running
/// (a copy of this node's state directory started before this one) or the echoes of this
/// node's previous run, which stopped just before this daemon started. Echoes are heartbeats
/// the previous run sent before it stopped, still in gossip's caches (a message stays there
/// five gossip heartbeats, 3.5 s) or on their way: they come within a few seconds, a handful
/// of sequence numbers at most. So a start counts as running only once heartbeats of it with
/// at least [`RUNNING_AFTER_LATER_SEQS`] later sequence numbers than the first one heard come
/// over more than [`RUNNING_AFTER`] and more than [`EXPIRY_INTERVALS`] of its heartbeat
/// intervals, without a longer silence between them (after one, it starts over from the next
/// heartbeat heard). Peers pass these heartbeats back on one of their connections to this
/// peer id in turn, so this daemon hears only some of them: the silence allowed is as long as
/// the span asked for.
#[derive(Debug, Clone, PartialEq)]
struct EarlierStart {
    incarnation: u64,
    first_heard: Instant,
    last_heard: Instant,
    /// The latest sequence number heard.
    last_seq: u64,
    /// How many heartbeats later than the one before were heard since the first one.
    later_seqs: u32,
}

/// How many heartbeats of an earlier start later than the first one heard show it running (see
/// [`EarlierStart`]).
const RUNNING_AFTER_LATER_SEQS: u32 = 2;

/// How long heartbeats of an earlier start must keep coming to show it running: well above
/// the few seconds an echo of a stopped run lasts (see [`EarlierStart`]).
const RUNNING_AFTER: Duration = Duration::from_secs(10);

impl EarlierStart {
    /// Whether the heartbeats heard show this start running, at `interval` between heartbeats.
    fn runs(&self, interval: Duration) -> bool {
        let span = self.last_heard.saturating_duration_since(self.first_heard);
        self.later_seqs >= RUNNING_AFTER_LATER_SEQS
            && span > RUNNING_AFTER
            && span > interval * EXPIRY_INTERVALS
    }
}

/// One row of the table, ready to show.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    pub presence: Presence,
    pub state: MemberState,
    pub last_seen_ago: Duration,
    pub is_self: bool,
}

/// The membership table of one node.
#[derive(Debug)]
pub struct Membership {
    local: PeerId,
    members: HashMap<PeerId, Member>,
    /// Before this, no row changes by time alone, so [`Membership::tick`] has nothing to do: a
    /// thousand-member table is walked when a member may have expired, not every second.
    /// Every row taken in brings it forward to that row's own due time if earlier.
    next_due: Option<Instant>,
    /// The newest news of a [`Twin`] not yet taken.
    twin: Option<Twin>,
    /// Heartbeats heard of an earlier start of this node, until they show it still runs.
    earlier_start: Option<EarlierStart>,
    /// What the rows of other members take encoded (see [`MAX_TABLE_BYTES`]).
    bytes: usize,
    /// The rows a full table may drop for a new one.
    room: Room,
    /// Rows refused since the last [`Membership::take_refused`]: the table was full.
    refused: u64,
    /// How many signatures of rows passed on were checked.
    #[cfg(test)]
    signatures_checked: usize,
}

/// What a full table knows of the rows it may drop to take a new one: members gone (expired
/// or left), the longest unheard first. Found by a walk of the table, so that a sync of many
/// new members into a full table walks it once, not once per row.
#[derive(Debug, Default)]
struct Room {
    /// Members gone at the last walk, the longest unheard last (taken first). Each is looked
    /// at again when its turn comes: it may have spoken or been forgotten since.
    gone: Vec<PeerId>,
    /// The last walk found nobody gone, and nobody alive then expires before this: no walk
    /// before it (rows refused meanwhile cost no walk each). Each row stored since brings it
    /// forward to when that row is gone if earlier (see [`Room::row_stored`]).
    none_before: Option<Instant>,
    /// How many times the table was walked.
    #[cfg(test)]
    walks: usize,
}

impl Room {
    /// A row was stored that is gone at `gone_at` (a goodbye: now; a heartbeat: when it
    /// expires, which may be before the last walk's first expiry, for a shorter heartbeat
    /// interval or a member taken in since): a walk may find it from then on.
    fn row_stored(&mut self, gone_at: Option<Instant>) {
        if let (Some(before), Some(at)) = (self.none_before, gone_at) {
            self.none_before = Some(before.min(at));
        }
    }
}

/// What a table may still take in one sync of rows passed on, as [`Membership::keep_authentic`]
/// counts it: rows free and the bytes they may take, then the rows of members gone.
#[derive(Debug)]
struct Places {
    rows: usize,
    bytes: usize,
    /// Members gone not yet counted for a row of this sync (`None`: not looked for yet: the
    /// free rows were enough so far).
    gone: Option<usize>,
    /// Rows of this sync counted for a member gone.
    gone_taken: usize,
    /// The table was walked for members gone during this sync.
    walked: bool,
}

impl Membership {
    /// A table that holds only this node.
    pub fn new(local: Presence, now: Instant) -> Self {
        let peer = local.peer_id;
        let mut members = HashMap::new();
        members.insert(
            peer,
            Member {
                presence: local,
                last_seen: now,
                reported: MemberState::Alive,
                bytes: 0,
            },
        );
        Self {
            local: peer,
            members,
            next_due: None,
            twin: None,
            earlier_start: None,
            bytes: 0,
            room: Room::default(),
            refused: 0,
            #[cfg(test)]
            signatures_checked: 0,
        }
    }

    pub fn local_peer(&self) -> PeerId {
        self.local
    }

    /// Replaces this node's own row (each heartbeat).
    pub fn update_local(&mut self, presence: Presence, now: Instant) {
        debug_assert_eq!(presence.peer_id, self.local);
        if let Some(me) = self.members.get_mut(&self.local) {
            me.presence = presence;
            me.last_seen = now;
        }
    }

    /// A heartbeat (or leave notice) heard directly from its sender. One already known (the
    /// same heartbeat, passed on in a table sync before its gossip arrived) still says the
    /// member is there now.
    pub fn observe(&mut self, presence: Presence, now: Instant) -> Option<MembershipChange> {
        self.accept(presence, now, now, Heard::FromItsNode)
    }

    /// Keeps of rows passed on by a peer those that are no news (dropped by [`merge`] anyway)
    /// or that their node signed: any member could otherwise send a row saying a node left,
    /// or took a name it has, or of a later start, and the node's own heartbeats would no
    /// longer count. Only news is checked: most rows of a sync are known already.
    ///
    /// Rows of members not in the table are checked only while [`merge`] could take them, one
    /// place per row: a row free with the bytes for it or, for a member alive, the row of a
    /// member gone (a full table takes no news of a member already gone). The others would
    /// be refused anyway, and are dropped unchecked and counted as refused. A row found not
    /// its node's uses its place up all the same: a sync of thousands of made-up rows, signed
    /// or not, into a full table costs a signature check for each place, not for each row (a
    /// newcomer refused so is taken from its own heartbeats, which come by gossip). Of rows of
    /// an earlier start of this node, never stored, one a sync is checked.
    ///
    /// Of several rows of news of one node in a sync (a table holds one per node, so no node
    /// sends more) only the latest is looked at: thousands of rows of one member with rising
    /// sequence numbers, each news, would otherwise cost a check each.
    ///
    /// [`merge`]: Membership::merge
    pub fn keep_authentic(&mut self, records: &mut Vec<MemberRecord>, now: Instant) {
        let mut latest: HashMap<PeerId, (u64, u64)> = HashMap::with_capacity(records.len());
        for r in records.iter().filter(|r| self.is_news(&r.presence)) {
            let key = r.presence.version_key();
            latest
                .entry(r.presence.peer_id)
                .and_modify(|k| *k = (*k).max(key))
                .or_insert(key);
        }
        let mut places = Places {
            rows: MAX_MEMBERS.saturating_sub(self.members.len()),
            bytes: (MAX_TABLE_BYTES - KEPT_FOR_KNOWN_BYTES).saturating_sub(self.bytes),
            gone: None,
            gone_taken: 0,
            walked: false,
        };
        let mut earlier_start_checked = false;
        let mut kept = Vec::with_capacity(records.len());
        for r in records.drain(..) {
            if !self.is_news(&r.presence) {
                kept.push(r);
                continue;
            }
            // The node's latest row, once (the entry goes as it is taken).
            if latest.get(&r.presence.peer_id) != Some(&r.presence.version_key()) {
                continue;
            }
            latest.remove(&r.presence.peer_id);
            if self.is_earlier_start(&r.presence) {
                if earlier_start_checked {
                    continue;
                }
                earlier_start_checked = true;
            } else if !self.members.contains_key(&r.presence.peer_id)
                && !self.take_place(&r, &mut places, now)
            {
                self.refused += 1;
                continue;
            }
            #[cfg(test)]
            {
                self.signatures_checked += 1;
            }
            if r.presence.authentic() {
                kept.push(r);
            }
        }
        *records = kept;
    }

    /// Whether `presence` is a row of an earlier start of this node than this daemon's.
    fn is_earlier_start(&self, presence: &Presence) -> bool {
        presence.peer_id == self.local
            && self
                .members
                .get(&self.local)
                .is_some_and(|me| presence.incarnation < me.presence.incarnation)
    }

    /// Takes from `places` the place [`Membership::merge`] would find for the row of a member
    /// not in the table: whether there is one (else it would be refused).
    fn take_place(&mut self, r: &MemberRecord, places: &mut Places, now: Instant) -> bool {
        let bytes = crate::wire::encoded_len(&r.presence);
        if places.rows > 0 && bytes <= places.bytes {
            places.rows -= 1;
            places.bytes -= bytes;
            return true;
        }
        if state_of(&r.presence, seen_at(r.age_ms, now), now) != MemberState::Alive {
            return false;
        }
        let mut gone = match places.gone {
            Some(gone) => gone,
            None => {
                // The last walk's list, unless it was used up: then walk now.
                if self.room.gone.is_empty() {
                    places.walked = true;
                    self.find_gone(self.local, now);
                }
                self.room.gone.len()
            }
        };
        if gone == 0 && !places.walked {
            // Members may have gone since the last walk. Those of the new list that this
            // sync already counted stay in the table until `merge` drops them.
            places.walked = true;
            self.find_gone(self.local, now);
            gone = self.room.gone.len().saturating_sub(places.gone_taken);
        }
        places.gone = Some(gone.saturating_sub(1));
        if gone == 0 {
            return false;
        }
        places.gone_taken += 1;
        true
    }

    /// Whether `presence` would change the table: a member unknown, a later heartbeat of one
    /// known, or news of this node's own identity that this daemon did not send (another
    /// daemon with its identity, see [`Membership::from_another_daemon`]) or of an earlier
    /// start of it (which may show an earlier start still running, see [`EarlierStart`]).
    fn is_news(&self, presence: &Presence) -> bool {
        match self.members.get(&presence.peer_id) {
            None => true,
            Some(me) if presence.peer_id == self.local => {
                Self::from_another_daemon(&me.presence, presence)
                    || presence.incarnation < me.presence.incarnation
            }
            Some(m) => presence.version_key() > m.presence.version_key(),
        }
    }

    /// Rows from another node's table; `age_ms` says how old each one was over there (an age
    /// older than any row a node keeps counts as the oldest).
    pub fn merge(&mut self, records: Vec<MemberRecord>, now: Instant) -> Vec<MembershipChange> {
        records
            .into_iter()
            .filter_map(|r| {
                let seen = seen_at(r.age_ms, now);
                self.accept(r.presence, seen, now, Heard::PassedOn)
            })
            .collect()
    }

    fn accept(
        &mut self,
        presence: Presence,
        seen: Instant,
        now: Instant,
        heard: Heard,
    ) -> Option<MembershipChange> {
        // No node sends such a name or release (`join` checks its own): a member breaking
        // the protocol, kept out of the table rather than shown to operators as it is.
        if !presence.plausible() {
            return None;
        }
        let peer = presence.peer_id;
        if peer == self.local {
            // Nobody else speaks for this node.
            self.heard_of_self(presence, seen, now);
            return None;
        }
        let known = self
            .members
            .get(&peer)
            .map(|m| (m.presence.version_key(), m.bytes));
        let (change, due) = match known {
            // The heartbeat already taken, from another node's table with its age there, now
            // heard from its node: the member is there now (a member passing on fresh
            // heartbeats as old ones cannot make a node that heartbeats expire).
            Some((key, _)) if heard == Heard::FromItsNode && presence.version_key() == key => {
                self.heard_again(peer, seen, now)?
            }
            Some((key, _)) if presence.version_key() <= key => return None,
            Some((_, bytes)) => self.take_later(presence, bytes, heard, seen, now)?,
            None => self.take_new(presence, seen, now)?,
        };
        if let Some(due) = due {
            self.next_due = Some(self.next_due.map_or(due, |next| next.min(due)));
        }
        change
    }

    /// `peer`, in the table, was heard at `seen` without a row to store: its last row stays,
    /// heard as of then (`None`: not in the table).
    fn heard_again(
        &mut self,
        peer: PeerId,
        seen: Instant,
        now: Instant,
    ) -> Option<(Option<MembershipChange>, Option<Instant>)> {
        let m = self.members.get_mut(&peer)?;
        m.last_seen = m.last_seen.max(seen);
        Some((Self::report(m, now), m.due(now)))
    }

    /// Takes a later row of a member known, whose row takes `bytes`. One of at most
    /// [`SMALL_ROW_BYTES`] is always taken. A larger one the table has no room for (nobody
    /// gone to drop) is refused, and the member's row stays as it was; being signed, a
    /// heartbeat still says the member is there, while a goodbye says nothing: the member
    /// expires three of its intervals after its last heartbeat taken (`None`: nothing to
    /// report or schedule).
    fn take_later(
        &mut self,
        presence: Presence,
        bytes: usize,
        heard: Heard,
        seen: Instant,
        now: Instant,
    ) -> Option<(Option<MembershipChange>, Option<Instant>)> {
        let peer = presence.peer_id;
        let size = crate::wire::encoded_len(&presence);
        let fits = |t: &Self| {
            size <= SMALL_ROW_BYTES
                || t.bytes.saturating_sub(bytes).saturating_add(size) <= MAX_TABLE_BYTES
        };
        if !self.make_room(peer, fits, now) {
            self.refused += 1;
            // Heard from the member itself, the row says it is there. Passed on by another
            // node, it does not: a row never stored stays news, and anyone could pass it on
            // again and again to keep a member that fell silent alive.
            if presence.status == PresenceStatus::Leaving || heard != Heard::FromItsNode {
                return None;
            }
            return self.heard_again(peer, seen, now);
        }
        self.bytes = self.bytes.saturating_sub(bytes) + size;
        let m = self.members.get_mut(&peer)?;
        m.bytes = size;
        let restarted = presence.incarnation > m.presence.incarnation;
        m.presence = presence;
        m.last_seen = m.last_seen.max(seen);
        let change = match Self::report(m, now) {
            // A restart seen while the node was alive is news too: what it held in
            // memory for others is gone.
            None if restarted
                && m.reported != MemberState::Expired
                && m.reported != MemberState::Left =>
            {
                Some(MembershipChange::Alive(peer))
            }
            change => change,
        };
        let (due, gone) = (m.due(now), m.gone_at(now));
        self.room.row_stored(gone);
        Some((change, due))
    }

    /// Takes a member not in the table (`None`: refused, the table is full).
    fn take_new(
        &mut self,
        presence: Presence,
        seen: Instant,
        now: Instant,
    ) -> Option<(Option<MembershipChange>, Option<Instant>)> {
        let peer = presence.peer_id;
        let mut m = Member {
            bytes: crate::wire::encoded_len(&presence),
            presence,
            last_seen: seen,
            reported: MemberState::Expired,
        };
        let fits = |t: &Self| {
            t.members.len() < MAX_MEMBERS
                && t.bytes.saturating_add(m.bytes) <= MAX_TABLE_BYTES - KEPT_FOR_KNOWN_BYTES
        };
        // A full table takes no news of a member already gone: it would drop one gone
        // member for another.
        let room = fits(self)
            || (m.own_state(now) == MemberState::Alive && self.make_room(peer, fits, now));
        if !room {
            self.refused += 1;
            return None;
        }
        let change = Self::report(&mut m, now);
        let due = m.due(now);
        self.room.row_stored(m.gone_at(now));
        self.bytes += m.bytes;
        self.members.insert(peer, m);
        Some((change, due))
    }

    /// Drops members gone, the longest unheard first, until `fits` (never `keep`'s row nor
    /// this node's): whether it does.
    fn make_room(&mut self, keep: PeerId, fits: impl Fn(&Self) -> bool, now: Instant) -> bool {
        while !fits(self) {
            let Some(peer) = self.next_gone(keep, now) else {
                return false;
            };
            self.forget(&peer);
        }
        true
    }

    /// The member gone heard from the longest ago, other than `keep` and this node (walking
    /// the table only once those found by the last walk are used up).
    fn next_gone(&mut self, keep: PeerId, now: Instant) -> Option<PeerId> {
        loop {
            let Some(peer) = self.room.gone.pop() else {
                if !self.find_gone(keep, now) {
                    return None;
                }
                continue;
            };
            if peer != keep
                && self
                    .members
                    .get(&peer)
                    .is_some_and(|m| m.own_state(now) != MemberState::Alive)
            {
                return Some(peer);
            }
        }
    }

    /// Walks the table for members gone (other than `keep` and this node), unless the last
    /// walk found none and nobody has expired since: whether it found any.
    fn find_gone(&mut self, keep: PeerId, now: Instant) -> bool {
        if self.room.none_before.is_some_and(|at| now < at) {
            return false;
        }
        #[cfg(test)]
        {
            self.room.walks += 1;
        }
        let mut gone: Vec<(Instant, PeerId)> = Vec::new();
        let mut first_expiry: Option<Instant> = None;
        for (peer, m) in &self.members {
            if *peer == self.local {
                continue;
            }
            if m.own_state(now) != MemberState::Alive {
                gone.push((m.last_seen, *peer));
            } else if let Some(expiry) = m.gone_at(now) {
                first_expiry = Some(first_expiry.map_or(expiry, |first| first.min(expiry)));
            }
        }
        // `keep` may go for the next newcomer: the walk found someone gone.
        let found = gone.iter().any(|(_, peer)| *peer != keep);
        self.room.none_before = if gone.is_empty() { first_expiry } else { None };
        // The longest unheard last, taken first.
        gone.sort_unstable_by(|a, b| b.cmp(a));
        self.room.gone = gone.into_iter().map(|(_, peer)| peer).collect();
        found
    }

    /// Drops `peer`'s row.
    fn forget(&mut self, peer: &PeerId) {
        if let Some(m) = self.members.remove(peer) {
            self.bytes = self.bytes.saturating_sub(m.bytes);
        }
    }

    /// How many rows the table refused since the last call, being full: members it does not
    /// show, and whose jobs and files it does not take (someone making up identities, or a
    /// mesh far larger than planned).
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    /// News of this node's own identity, heard at `seen`: if another daemon sent it, a
    /// [`Twin`] to report (the newest heard of).
    fn heard_of_self(&mut self, presence: Presence, seen: Instant, now: Instant) {
        let Some(me) = self.members.get(&self.local) else {
            return;
        };
        let alive = state_of(&presence, seen, now) == MemberState::Alive;
        if presence.incarnation < me.presence.incarnation {
            // A row the peer passing it on heard long ago shows nothing running now.
            if alive {
                self.heard_of_earlier_start(presence, now);
            }
            return;
        }
        if !Self::from_another_daemon(&me.presence, &presence)
            || self
                .twin
                .as_ref()
                .is_some_and(|t| presence.version_key() < t.presence.version_key())
        {
            return;
        }
        self.twin = Some(Twin {
            presence,
            gone: !alive,
        });
    }

    /// A heartbeat of an earlier start of this node, alive where it was heard (no goodbye, nor
    /// a row its peer heard over three of its intervals ago), counted as heard by this daemon
    /// `now` (not when a peer passing it on heard it: heartbeats of a stopped run heard over
    /// seconds before this daemon started must not add up to a run still going): once its
    /// start shows it still runs (see [`EarlierStart`]), a [`Twin`] to report, unless one of a
    /// later start waits to be taken (which matters more: it makes this node start over).
    fn heard_of_earlier_start(&mut self, presence: Presence, now: Instant) {
        let interval = Duration::from_millis(presence.heartbeat_interval_ms.max(1));
        let silence = (interval * EXPIRY_INTERVALS).max(RUNNING_AFTER);
        let followed = self
            .earlier_start
            .as_ref()
            .filter(|e| now.saturating_duration_since(e.last_heard) <= silence)
            .map(|e| e.incarnation);
        match followed {
            // An earlier start than the one followed is older news.
            Some(followed) if followed > presence.incarnation => return,
            Some(followed) if followed == presence.incarnation => {}
            // None followed, or a later start than the one followed, or one silent too long:
            // heard from here on.
            _ => {
                self.earlier_start = Some(EarlierStart {
                    incarnation: presence.incarnation,
                    first_heard: now,
                    last_heard: now,
                    last_seq: presence.seq,
                    later_seqs: 0,
                });
                return;
            }
        }
        let Some(e) = self.earlier_start.as_mut() else {
            return;
        };
        if presence.seq <= e.last_seq {
            return;
        }
        e.last_seq = presence.seq;
        e.last_heard = e.last_heard.max(now);
        e.later_seqs += 1;
        if !e.runs(interval) {
            return;
        }
        let own = self
            .members
            .get(&self.local)
            .map(|m| m.presence.incarnation);
        if self
            .twin
            .as_ref()
            .is_some_and(|t| Some(t.presence.incarnation) >= own)
        {
            return;
        }
        self.twin = Some(Twin {
            presence,
            gone: false,
        });
    }

    /// Whether `heard`, a row with this node's identity, is one this daemon (whose last row
    /// is `own`) did not send: a later start, or this start's number with a heartbeat this
    /// daemon has not sent (a later one, or this one with other content, told by the
    /// signature: ed25519 signs the same content alike). Two copies of one state directory
    /// started from the same file take the same number about once in a thousand, when
    /// started within a second of each other. Earlier starts and earlier heartbeats may be
    /// this daemon's own (or the other's, not told apart).
    fn from_another_daemon(own: &Presence, heard: &Presence) -> bool {
        match heard.incarnation.cmp(&own.incarnation) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => {
                heard.seq > own.seq || (heard.seq == own.seq && heard.signature != own.signature)
            }
            std::cmp::Ordering::Less => false,
        }
    }

    /// Reports `m`'s state if it changed since the last report.
    fn report(m: &mut Member, now: Instant) -> Option<MembershipChange> {
        let state = m.own_state(now);
        if state == m.reported {
            return None;
        }
        m.reported = state;
        let peer = m.presence.peer_id;
        Some(match state {
            MemberState::Alive | MemberState::Conflict => MembershipChange::Alive(peer),
            MemberState::Expired => MembershipChange::Expired(peer),
            MemberState::Left => MembershipChange::Left(peer),
        })
    }

    /// Whether `presence`, a heartbeat of another member, is of an earlier start than the row
    /// this table holds of it and no goodbye: peers take it no more, and pass it back to that
    /// member's peer id, where a copy of its state directory may run (see [`Twin`]). A goodbye
    /// shows nothing running: that node would drop it.
    pub fn to_pass_back(&self, presence: &Presence) -> bool {
        presence.status != PresenceStatus::Leaving
            && presence.peer_id != self.local
            && self
                .members
                .get(&presence.peer_id)
                .is_some_and(|m| presence.incarnation < m.presence.incarnation)
    }

    /// What was last heard of a [`Twin`] since the last call, if anything.
    pub fn take_twin(&mut self) -> Option<Twin> {
        self.twin.take()
    }

    /// This node did not run for `paused`, up to `now` (a stopped process, a paused or
    /// suspended machine): it could hear nobody meanwhile, so the members alive when the pause
    /// began get that time back, and expire only if still silent three of their intervals
    /// after it ended. Call before [`Membership::tick`] with the same `now`.
    pub fn resumed(&mut self, paused: Duration, now: Instant) {
        let Some(began) = now.checked_sub(paused) else {
            return;
        };
        let local = self.local;
        for m in self.members.values_mut() {
            if m.presence.peer_id != local && m.own_state(began) == MemberState::Alive {
                m.last_seen = m.last_seen.checked_add(paused).unwrap_or(now).min(now);
            }
        }
        self.next_due = self.next_due_after(now);
    }

    /// When a row next changes by time alone (see [`Membership::next_due`]).
    fn next_due_after(&self, now: Instant) -> Option<Instant> {
        self.members
            .values()
            .filter(|m| m.presence.peer_id != self.local)
            .filter_map(|m| m.due(now))
            .min()
    }

    /// Advances time: reports members that expired and forgets long-gone ones.
    pub fn tick(&mut self, now: Instant) -> Vec<MembershipChange> {
        if self.next_due.is_none_or(|due| now < due) {
            return Vec::new();
        }
        let local = self.local;
        let mut forgotten = 0;
        self.members.retain(|peer, m| {
            let keep = *peer == local
                || m.own_state(now) == MemberState::Alive
                || now.saturating_duration_since(m.last_seen) < FORGET_AFTER;
            if !keep {
                forgotten += m.bytes;
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(forgotten);
        let changes = self
            .members
            .values_mut()
            .filter(|m| m.presence.peer_id != local)
            .filter_map(|m| Self::report(m, now))
            .collect();
        self.next_due = self.next_due_after(now);
        changes
    }

    /// The table as rows to send to another node (push-pull synchronisation).
    pub fn records(&self, now: Instant) -> Vec<MemberRecord> {
        self.members
            .values()
            .map(|m| Self::record(m, now))
            .collect()
    }

    /// Which news this table holds about each member: what anti-entropy sends instead of the
    /// rows themselves (a few dozen bytes per member instead of a few hundred).
    pub fn versions(&self) -> Vec<RowVersion> {
        self.members
            .values()
            .map(|m| RowVersion {
                peer_id: m.presence.peer_id,
                incarnation: m.presence.incarnation,
                seq: m.presence.seq,
            })
            .collect()
    }

    /// Compares another node's versions with this table: the rows that node lacks or holds
    /// older news of, and the members it knows better than this table does.
    pub fn delta(&self, theirs: &[RowVersion], now: Instant) -> (Vec<MemberRecord>, Vec<PeerId>) {
        let their_keys: HashMap<PeerId, (u64, u64)> = theirs
            .iter()
            .map(|v| (v.peer_id, (v.incarnation, v.seq)))
            .collect();
        let newer_here = self
            .members
            .values()
            .filter(|m| {
                their_keys
                    .get(&m.presence.peer_id)
                    .is_none_or(|k| *k < m.presence.version_key())
            })
            .map(|m| Self::record(m, now))
            .collect();
        let newer_there = theirs
            .iter()
            .filter(|v| {
                self.members
                    .get(&v.peer_id)
                    .is_none_or(|m| m.presence.version_key() < (v.incarnation, v.seq))
            })
            .map(|v| v.peer_id)
            .collect();
        (newer_here, newer_there)
    }

    /// The rows of `peers` (those in the table).
    pub fn records_of(&self, peers: &[PeerId], now: Instant) -> Vec<MemberRecord> {
        peers
            .iter()
            .filter_map(|p| self.members.get(p))
            .map(|m| Self::record(m, now))
            .collect()
    }

    fn record(m: &Member, now: Instant) -> MemberRecord {
        MemberRecord {
            presence: m.presence.clone(),
            age_ms: now.saturating_duration_since(m.last_seen).as_millis() as u64,
        }
    }

    /// The name a member goes by.
    pub fn name_of(&self, peer: &PeerId) -> Option<&str> {
        self.members.get(peer).map(|m| m.presence.name.as_str())
    }

    /// Whether `peer` has a row here, in any state (cheaper than [`Membership::state_of`],
    /// which looks for another member of the same name).
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.members.contains_key(peer)
    }

    /// Whether `peer` is alive, sharing its name with another member or not (a conflicted
    /// member is reachable like any other): cheaper than [`Membership::state_of`].
    pub fn is_alive(&self, peer: &PeerId, now: Instant) -> bool {
        self.members
            .get(peer)
            .is_some_and(|m| m.own_state(now) == MemberState::Alive)
    }

    /// How long ago this node last had news of `peer`'s heartbeat (directly or through others).
    pub fn last_heard_ago(&self, peer: &PeerId, now: Instant) -> Option<Duration> {
        let m = self.members.get(peer)?;
        Some(now.saturating_duration_since(m.last_seen))
    }

    /// The state of one member, conflicts included.
    pub fn state_of(&self, peer: &PeerId, now: Instant) -> Option<MemberState> {
        let m = self.members.get(peer)?;
        let state = m.own_state(now);
        if state == MemberState::Alive && self.name_is_shared(&m.presence, now) {
            return Some(MemberState::Conflict);
        }
        Some(state)
    }

    fn name_is_shared(&self, p: &Presence, now: Instant) -> bool {
        self.members.values().any(|o| {
            o.presence.peer_id != p.peer_id
                && o.presence.name == p.name
                && o.own_state(now) == MemberState::Alive
        })
    }

    /// Every member with its state, sorted by name then peer id.
    pub fn view(&self, now: Instant) -> Vec<MemberView> {
        let mut alive_names: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if m.own_state(now) == MemberState::Alive {
                *alive_names.entry(m.presence.name.as_str()).or_default() += 1;
            }
        }
        let mut rows: Vec<MemberView> = self
            .members
            .values()
            .map(|m| {
                let mut state = m.own_state(now);
                if state == MemberState::Alive && alive_names[m.presence.name.as_str()] > 1 {
                    state = MemberState::Conflict;
                }
                let is_self = m.presence.peer_id == self.local;
                MemberView {
                    presence: m.presence.clone(),
                    state,
                    // This node is seen now, not at its last heartbeat.
                    last_seen_ago: if is_self {
                        Duration::ZERO
                    } else {
                        now.saturating_duration_since(m.last_seen)
                    },
                    is_self,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.presence.name.as_str(), a.presence.peer_id)
                .cmp(&(b.presence.name.as_str(), b.presence.peer_id))
        });
        rows
    }

    /// Presences of the other members that are alive (conflicted ones included: they are reachable).
    pub fn alive_others(&self, now: Instant) -> impl Iterator<Item = &Presence> {
        self.others_in(MemberState::Alive, now)
    }

    /// Members that went silent (not those that left): worth a dial now and then, since a
    /// healed partition only shows once someone connects across it.
    pub fn expired_others(&self, now: Instant) -> impl Iterator<Item = &Presence> {
        self.others_in(MemberState::Expired, now)
    }

    /// Up to `n` other members with addresses that `skip` does not name, most lately heard
    /// first, with their addresses: only those `n` rows are copied (the table may hold
    /// thousands).
    pub fn lately_heard_others(
        &self,
        n: usize,
        skip: impl Fn(&PeerId) -> bool,
    ) -> Vec<(PeerId, Vec<libp2p::Multiaddr>)> {
        let mut rows: Vec<&Member> = self
            .members
            .values()
            .filter(|m| {
                m.presence.peer_id != self.local
                    && !m.presence.addresses.is_empty()
                    && !skip(&m.presence.peer_id)
            })
            .collect();
        let newest_first = |m: &&Member| std::cmp::Reverse(m.last_seen);
        if rows.len() > n {
            if n > 0 {
                rows.select_nth_unstable_by_key(n - 1, newest_first);
            }
            rows.truncate(n);
        }
        rows.sort_by_key(newest_first);
        rows.into_iter()
            .map(|m| (m.presence.peer_id, m.presence.addresses.clone()))
            .collect()
    }

    /// Presences of the other members whose own state (alive, expired or left) is `state`.
    fn others_in(&self, state: MemberState, now: Instant) -> impl Iterator<Item = &Presence> {
        self.members
            .values()
            .filter(move |m| m.presence.peer_id != self.local && m.own_state(now) == state)
            .map(|m| &m.presence)
    }

    /// Where a member said it listens (empty if it is not in the table).
    pub fn addresses_of(&self, peer: &PeerId) -> &[libp2p::Multiaddr] {
        self.members
            .get(peer)
            .map(|m| m.presence.addresses.as_slice())
            .unwrap_or(&[])
    }

    /// Number of rows in the table, this node's own included (alive or not).
    pub fn rows(&self) -> usize {
        self.members.len()
    }

    /// Number of alive members, this node included.
    pub fn alive_count(&self, now: Instant) -> usize {
        self.alive_others(now).count() + 1
    }

    /// Peers whose name is held by more than one alive member.
    pub fn conflicted(&self, now: Instant) -> HashSet<PeerId> {
        self.view(now)
            .into_iter()
            .filter(|v| v.state == MemberState::Conflict)
            .map(|v| v.presence.peer_id)
            .collect()
    }
}

/// The heartbeat interval for a mesh of `alive` members: the configured base, stretched in large
/// meshes so the whole mesh stays near [`MESH_HEARTBEATS_PER_SEC`] heartbeats per second.
pub fn heartbeat_interval(base: Duration, alive: usize) -> Duration {
    let scaled = Duration::from_millis(alive as u64 * 1000 / MESH_HEARTBEATS_PER_SEC);
    // Never past what other nodes take from a presence (see `Presence::plausible`).
    base.max(scaled)
        .min(Duration::from_millis(crate::wire::MAX_HEARTBEAT_MS))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn presence(peer: PeerId, name: &str, incarnation: u64, seq: u64) -> Presence {
        Presence {
            peer_id: peer,
            name: name.into(),
            machine_id: "m".into(),
            version: "0.1.0".into(),
            incarnation,
            seq,
            status: PresenceStatus::Alive,
            host_uptime_secs: 1,
            agent_uptime_secs: 1,
            addresses: vec![],
            labels: BTreeMap::new(),
            load: 0.0,
            heartbeat_interval_ms: 1000,
            // The size of a signature, not one: the table takes a row by gossip as it comes
            // (gossip is signed), and checks signatures of rows passed on in `keep_authentic`.
            signature: vec![0; crate::wire::SIGNATURE_BYTES],
        }
    }

    fn table() -> (Membership, Instant) {
        let now = Instant::now();
        (
            Membership::new(presence(PeerId::random(), "self", 1, 0), now),
            now,
        )
    }

    /// The members a node remembers beside those alive: the most lately heard, with
    /// addresses, never itself or those skipped.
    #[test]
    fn the_most_lately_heard_others_come_first() {
        let (mut t, now) = table();
        let mut peers = Vec::new();
        for (i, ago) in [5u64, 1, 9, 3, 7].into_iter().enumerate() {
            let peer = PeerId::random();
            let mut p = presence(peer, &format!("n{i}"), 1, 1);
            p.addresses = vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()];
            t.observe(p, now - Duration::from_secs(ago));
            peers.push(peer);
        }
        // One without addresses is of no use to dial.
        t.observe(presence(PeerId::random(), "bare", 1, 1), now);
        let skipped = peers[3];
        let got: Vec<PeerId> = t
            .lately_heard_others(3, |p| *p == skipped)
            .into_iter()
            .map(|(peer, _)| peer)
            .collect();
        assert_eq!(got, vec![peers[1], peers[0], peers[4]]);
        assert_eq!(t.lately_heard_others(10, |_| false).len(), 5);
        assert!(t.lately_heard_others(0, |_| false).is_empty());
    }

    /// A row passed on in a sync counts only if its node signed it: a forged goodbye of a
    /// live member (or a forged row of this node) is dropped, a signed one taken.
    #[test]
    fn rows_passed_on_count_only_as_their_node_signed_them() {
        let (mut t, now) = table();
        let key = libp2p::identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let mut alive = presence(peer, "b", 1, 1);
        alive.sign(&key);
        assert_eq!(
            t.observe(alive.clone(), now),
            Some(MembershipChange::Alive(peer))
        );
        let row = |p: Presence| MemberRecord {
            presence: p,
            age_ms: 0,
        };
        let mut forged = presence(peer, "b", u64::MAX, 0);
        forged.status = PresenceStatus::Leaving;
        forged.sign(&libp2p::identity::Keypair::generate_ed25519());
        let mut rows = vec![row(forged), row(alive.clone())];
        t.keep_authentic(&mut rows, now);
        // The forged goodbye goes; the known row stays (no news, merged as a no-op).
        assert_eq!(rows.len(), 1);
        assert!(t.merge(rows, now).is_empty());
        assert_eq!(t.state_of(&peer, now), Some(MemberState::Alive));
        let mut goodbye = presence(peer, "b", 1, 2);
        goodbye.status = PresenceStatus::Leaving;
        goodbye.sign(&key);
        let mut rows = vec![row(goodbye)];
        t.keep_authentic(&mut rows, now);
        assert_eq!(t.merge(rows, now), vec![MembershipChange::Left(peer)]);
    }

    /// A presence whose name or release no node sends (control characters, too long) is kept
    /// out of the table, by gossip or by a table sync.
    #[test]
    fn presences_no_node_sends_are_kept_out() {
        let (mut t, now) = table();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        assert_eq!(t.observe(presence(a, "evil\x1b]0;x\x07", 1, 1), now), None);
        assert_eq!(t.observe(presence(b, &"n".repeat(254), 1, 1), now), None);
        let mut odd_release = presence(c, "c", 1, 1);
        odd_release.version = "1.0\r\n".into();
        let record = MemberRecord {
            presence: odd_release,
            age_ms: 0,
        };
        assert!(t.merge(vec![record], now).is_empty());
        for peer in [a, b, c] {
            assert_eq!(t.state_of(&peer, now), None);
        }
        // Nor an address with control characters, labels past the bounds, or a heartbeat
        // no node has (a row forged to stay alive for ever).
        let d = PeerId::random();
        let mut odd = presence(d, "d", 1, 1);
        odd.addresses = vec![
            libp2p::Multiaddr::empty()
                .with(libp2p::multiaddr::Protocol::Dns("\x1b]0;owned\x07".into())),
        ];
        assert_eq!(t.observe(odd, now), None);
        let mut odd = presence(d, "d", 1, 1);
        odd.labels = (0..=crate::wire::MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert_eq!(t.observe(odd, now), None);
        let mut odd = presence(d, "d", 1, 1);
        odd.heartbeat_interval_ms = u64::MAX;
        assert_eq!(t.observe(odd, now), None);
        assert_eq!(t.state_of(&d, now), None);
        assert_eq!(
            t.observe(presence(a, "web-1.example_2", 1, 2), now),
            Some(MembershipChange::Alive(a))
        );
    }

    /// A presence with a signature no key makes (a megabyte: with a few such rows no table
    /// sync fits one message, and no node could join) is kept out, by gossip or by a sync.
    #[test]
    fn a_presence_with_an_oversized_signature_is_kept_out() {
        let (mut t, now) = table();
        let (a, b) = (PeerId::random(), PeerId::random());
        let fat = |peer| Presence {
            signature: vec![7; 1_000_000],
            ..presence(peer, "fat", 1, 1)
        };
        assert_eq!(t.observe(fat(a), now), None);
        let record = MemberRecord {
            presence: fat(b),
            age_ms: 0,
        };
        assert!(t.merge(vec![record], now).is_empty());
        assert!(!t.contains(&a) && !t.contains(&b));
        assert!(
            crate::wire::encode(&t.records(now), crate::wire::MAX_CTL_BYTES).is_ok(),
            "the table still syncs"
        );
    }

    #[test]
    fn heartbeat_makes_alive_and_silence_expires() {
        let (mut t, now) = table();
        let p = PeerId::random();
        assert_eq!(
            t.observe(presence(p, "a", 1, 1), now),
            Some(MembershipChange::Alive(p))
        );
        assert_eq!(t.state_of(&p, now), Some(MemberState::Alive));
        // Exactly at 3 intervals it is still alive; just past, expired, reported once.
        assert!(t.tick(now + Duration::from_millis(3000)).is_empty());
        let later = now + Duration::from_millis(3001);
        assert_eq!(t.tick(later), vec![MembershipChange::Expired(p)]);
        assert!(t.tick(later).is_empty());
        assert_eq!(t.state_of(&p, later), Some(MemberState::Expired));
        // A new heartbeat revives it.
        assert_eq!(
            t.observe(presence(p, "a", 1, 2), later),
            Some(MembershipChange::Alive(p))
        );
    }

    #[test]
    fn a_pause_of_this_node_expires_nobody_that_speaks_after_it() {
        let (mut t, now) = table();
        let (p, q) = (PeerId::random(), PeerId::random());
        t.observe(presence(p, "a", 1, 1), now);
        t.observe(presence(q, "b", 1, 1), now);
        // This node stops for 10 s, 2 s after it heard both (1 s heartbeats: expiry at 3 s).
        let paused = Duration::from_secs(10);
        let after = now + Duration::from_secs(2) + paused;
        t.resumed(paused, after);
        assert!(t.tick(after).is_empty());
        assert_eq!(t.state_of(&p, after), Some(MemberState::Alive));
        // p speaks again; q stays silent and expires three intervals after the pause.
        t.observe(presence(p, "a", 1, 2), after + Duration::from_millis(500));
        let silent = after + Duration::from_millis(1001);
        assert_eq!(t.tick(silent), vec![MembershipChange::Expired(q)]);
        assert_eq!(t.state_of(&p, silent), Some(MemberState::Alive));
        // Without the pause taken into account, both would have expired at once.
        let (mut t, now) = table();
        t.observe(presence(p, "a", 1, 1), now);
        assert_eq!(
            t.tick(now + Duration::from_secs(12)),
            vec![MembershipChange::Expired(p)]
        );
    }

    #[test]
    fn a_delta_carries_exactly_what_each_side_lacks() {
        let now = Instant::now();
        let (a, b, c, d) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let mut ta = Membership::new(presence(a, "a", 1, 1), now);
        let mut tb = Membership::new(presence(b, "b", 1, 1), now);
        // Both know c, `a` has the newer heartbeat; only `b` knows d.
        ta.observe(presence(c, "c", 1, 5), now);
        tb.observe(presence(c, "c", 1, 3), now);
        tb.observe(presence(d, "d", 1, 1), now);
        // `b` asks with its versions; `a` answers with what `b` lacks and what it wants.
        let (for_b, wanted) = ta.delta(&tb.versions(), now);
        let mut sent: Vec<PeerId> = for_b.iter().map(|r| r.presence.peer_id).collect();
        sent.sort();
        let mut expected = vec![a, c];
        expected.sort();
        assert_eq!(sent, expected);
        let mut wanted_sorted = wanted.clone();
        wanted_sorted.sort();
        let mut expected = vec![b, d];
        expected.sort();
        assert_eq!(wanted_sorted, expected);
        // After both halves of the exchange the tables hold the same news.
        tb.merge(for_b, now);
        ta.merge(tb.records_of(&wanted, now), now);
        let mut va: Vec<_> = ta
            .versions()
            .into_iter()
            .map(|v| (v.peer_id, v.seq))
            .collect();
        let mut vb: Vec<_> = tb
            .versions()
            .into_iter()
            .map(|v| (v.peer_id, v.seq))
            .collect();
        va.sort();
        vb.sort();
        assert_eq!(va, vb);
        assert_eq!(ta.delta(&tb.versions(), now), (vec![], vec![]));
    }

    #[test]
    fn stale_news_never_overrides_newer() {
        let (mut t, now) = table();
        let p = PeerId::random();
        t.observe(presence(p, "a", 1, 5), now);
        let mut leaving = presence(p, "a", 1, 6);
        leaving.status = PresenceStatus::Leaving;
        assert_eq!(t.observe(leaving, now), Some(MembershipChange::Left(p)));
        // A delayed heartbeat of the same incarnation does not resurrect it.
        assert_eq!(t.observe(presence(p, "a", 1, 4), now), None);
        assert_eq!(t.state_of(&p, now), Some(MemberState::Left));
        // A restart (higher incarnation) does, even with a lower seq.
        assert_eq!(
            t.observe(presence(p, "a", 2, 0), now),
            Some(MembershipChange::Alive(p))
        );
        assert_eq!(t.state_of(&p, now), Some(MemberState::Alive));
        // Restarted again before anyone saw it go: still reported, once.
        assert_eq!(
            t.observe(presence(p, "a", 3, 0), now),
            Some(MembershipChange::Alive(p))
        );
        assert_eq!(t.observe(presence(p, "a", 3, 1), now), None);
    }

    #[test]
    fn two_alive_members_with_one_name_conflict() {
        let (mut t, now) = table();
        let (a, b) = (PeerId::random(), PeerId::random());
        t.observe(presence(a, "web", 1, 1), now);
        assert_eq!(t.state_of(&a, now), Some(MemberState::Alive));
        t.observe(presence(b, "web", 1, 1), now);
        assert_eq!(t.state_of(&a, now), Some(MemberState::Conflict));
        assert_eq!(t.conflicted(now), HashSet::from([a, b]));
        // Once one of them is gone, the other is plain alive again.
        let mut leaving = presence(b, "web", 1, 2);
        leaving.status = PresenceStatus::Leaving;
        t.observe(leaving, now);
        assert_eq!(t.state_of(&a, now), Some(MemberState::Alive));
        // A member that takes this node's own name conflicts with it too.
        t.observe(presence(PeerId::random(), "self", 1, 1), now);
        assert!(t.conflicted(now).contains(&t.local_peer()));
    }

    /// A member sharing its name with another is still alive: reachable, dialled and
    /// connected like any other.
    #[test]
    fn a_conflicted_member_is_alive() {
        let (mut t, now) = table();
        let (a, b) = (PeerId::random(), PeerId::random());
        t.observe(presence(a, "web", 1, 1), now);
        t.observe(presence(b, "web", 1, 1), now);
        assert_eq!(t.state_of(&a, now), Some(MemberState::Conflict));
        assert!(t.is_alive(&a, now) && t.is_alive(&b, now));
        assert!(!t.is_alive(&PeerId::random(), now));
        let later = now + Duration::from_millis(3001);
        assert!(!t.is_alive(&a, later));
    }

    /// A member that passes on each fresh heartbeat of a node as an old one, ahead of its
    /// gossip, cannot make that node expire: the gossip copy, heard from the node itself,
    /// says it is there now.
    #[test]
    fn heartbeats_passed_on_as_old_ones_cannot_expire_a_node_that_gossips_them() {
        let (mut t, now) = table();
        let x = PeerId::random();
        t.observe(presence(x, "x", 1, 1), now);
        for seq in 2..=4u64 {
            let at = now + Duration::from_millis(900 * (seq - 1));
            let as_old_as_the_first = MemberRecord {
                presence: presence(x, "x", 1, seq),
                age_ms: at.duration_since(now).as_millis() as u64,
            };
            t.merge(vec![as_old_as_the_first], at);
            assert_eq!(t.observe(presence(x, "x", 1, seq), at), None);
        }
        let at = now + Duration::from_millis(3001);
        assert!(t.tick(at).is_empty());
        assert_eq!(t.state_of(&x, at), Some(MemberState::Alive));
        // Heard from its node once it had expired here, the same heartbeat brings it back.
        let y = PeerId::random();
        let expired = MemberRecord {
            presence: presence(y, "y", 1, 1),
            age_ms: 10_000,
        };
        assert!(t.merge(vec![expired], at).is_empty());
        assert_eq!(
            t.observe(presence(y, "y", 1, 1), at),
            Some(MembershipChange::Alive(y))
        );
        // Passed on again, an equal heartbeat is no news.
        let again = MemberRecord {
            presence: presence(y, "y", 1, 1),
            age_ms: 0,
        };
        assert!(t.merge(vec![again], at).is_empty());
    }

    /// A row passed on with an age no node's table holds counts as the oldest a node keeps
    /// (not millions of years in `status`, nor past what the clock can go back).
    #[test]
    fn an_age_no_node_sends_counts_as_the_oldest_one() {
        let (mut t, now) = table();
        let p = PeerId::random();
        let absurd = MemberRecord {
            presence: presence(p, "a", 1, 1),
            age_ms: u64::MAX,
        };
        assert!(t.merge(vec![absurd], now).is_empty());
        let row = t.view(now).into_iter().find(|v| !v.is_self).unwrap();
        assert_eq!(row.state, MemberState::Expired);
        assert_eq!(
            row.last_seen_ago,
            Duration::from_millis(MAX_PASSED_ON_AGE_MS)
        );
        assert_eq!(MAX_PASSED_ON_AGE_MS, 3 * 24 * 3_600_000);
    }

    #[test]
    fn merge_keeps_ages_and_ignores_records_about_self() {
        let (mut t, now) = table();
        let p = PeerId::random();
        let changes = t.merge(
            vec![
                MemberRecord {
                    presence: presence(p, "a", 1, 1),
                    age_ms: 2500,
                },
                MemberRecord {
                    presence: presence(t.local_peer(), "impostor", 9, 9),
                    age_ms: 0,
                },
            ],
            now + Duration::from_secs(10),
        );
        assert_eq!(changes, vec![MembershipChange::Alive(p)]);
        let later = now + Duration::from_millis(10_501);
        assert_eq!(t.state_of(&p, later), Some(MemberState::Expired));
        let me = t.view(later).into_iter().find(|v| v.is_self).unwrap();
        assert_eq!(me.presence.name, "self");
        // This node is seen now, whenever its last heartbeat was.
        assert_eq!(me.last_seen_ago, Duration::ZERO);
        // A record that was already expired over there arrives expired and reports nothing.
        let q = PeerId::random();
        let changes = t.merge(
            vec![MemberRecord {
                presence: presence(q, "b", 1, 1),
                age_ms: 60_000,
            }],
            now + Duration::from_secs(120),
        );
        assert!(changes.is_empty());
        assert_eq!(
            t.state_of(&q, now + Duration::from_secs(120)),
            Some(MemberState::Expired)
        );
    }

    #[test]
    fn a_tick_between_due_times_changes_nothing_and_each_row_still_expires_on_time() {
        let (mut t, now) = table();
        let (slow, fast) = (PeerId::random(), PeerId::random());
        let mut slow_beat = presence(slow, "slow", 1, 1);
        slow_beat.heartbeat_interval_ms = 10_000;
        t.observe(slow_beat, now);
        // A full pass: the next thing due is the slow member's expiry, 30 s on.
        assert!(t.tick(now + Duration::from_secs(1)).is_empty());
        // A member that expires sooner arrives after that pass, and is still reported on time.
        let at = now + Duration::from_secs(2);
        t.observe(presence(fast, "fast", 1, 1), at);
        assert!(t.tick(at + Duration::from_millis(3000)).is_empty());
        assert_eq!(
            t.tick(at + Duration::from_millis(3001)),
            vec![MembershipChange::Expired(fast)]
        );
        assert!(t.tick(now + Duration::from_secs(30)).is_empty());
        assert_eq!(
            t.tick(now + Duration::from_millis(30_001)),
            vec![MembershipChange::Expired(slow)]
        );
        // A heartbeat interval no clock can add is never due, and breaks nothing.
        let mut absurd = presence(PeerId::random(), "absurd", 1, 1);
        absurd.heartbeat_interval_ms = u64::MAX;
        t.observe(absurd, now);
        assert!(t.tick(now + Duration::from_secs(40)).is_empty());
    }

    #[test]
    fn long_gone_members_are_forgotten() {
        let (mut t, now) = table();
        let p = PeerId::random();
        t.observe(presence(p, "a", 1, 1), now);
        t.tick(now + FORGET_AFTER + Duration::from_secs(10));
        assert_eq!(t.state_of(&p, now), None);
        assert_eq!(t.view(now).len(), 1);
    }

    #[test]
    fn interval_grows_with_the_mesh() {
        let base = Duration::from_secs(5);
        assert_eq!(heartbeat_interval(base, 20), base);
        assert_eq!(heartbeat_interval(base, 1000), Duration::from_secs(20));
    }

    /// A table of a node whose start is numbered 2, and a heartbeat of its start numbered 1
    /// with sequence number `seq` heard at `at`, as a peer passes it back.
    fn with_earlier_start() -> (Membership, Instant, impl Fn(&mut Membership, u64, Instant)) {
        let now = Instant::now();
        let me = PeerId::random();
        let t = Membership::new(presence(me, "self", 2, 0), now);
        let hear = move |t: &mut Membership, seq: u64, at: Instant| {
            let record = MemberRecord {
                presence: presence(me, "self", 1, seq),
                age_ms: 0,
            };
            t.merge(vec![record], at);
        };
        (t, now, hear)
    }

    /// Rows of an earlier start of this node that their peers heard long ago show nothing
    /// running now, however their sequence numbers go on; and of such rows (never stored), one
    /// a sync costs a signature check.
    #[test]
    fn old_rows_of_an_earlier_start_are_no_twin_and_cost_one_check_a_sync() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let now = Instant::now();
        let mut t = Membership::new(presence(me, "self", 2, 0), now);
        let row = |seq: u64, age_ms: u64| {
            let mut p = presence(me, "self", 1, seq);
            p.sign(&key);
            MemberRecord {
                presence: p,
                age_ms,
            }
        };
        for (seq, s) in [(40, 0), (41, 6), (42, 11), (43, 16)] {
            let at = now + Duration::from_secs(s);
            let mut rows = vec![row(seq, 3_600_000)];
            t.keep_authentic(&mut rows, at);
            assert_eq!(rows.len(), 1, "signed by its node");
            t.merge(rows, at);
        }
        assert_eq!(t.take_twin(), None);
        let mut rows: Vec<MemberRecord> = (0..500).map(|i| row(50 + i, 0)).collect();
        t.keep_authentic(&mut rows, now + Duration::from_secs(17));
        assert_eq!((t.signatures_checked, rows.len()), (4 + 1, 1));
    }

    /// Only news counts as a node's latest row in a sync: this node's own row passed back (no
    /// news) leaves a row of its earlier start beside it to be checked.
    #[test]
    fn a_row_of_an_earlier_start_beside_this_nodes_own_row_is_checked() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let now = Instant::now();
        let own = presence(me, "self", 2, 0);
        let mut t = Membership::new(own.clone(), now);
        let mut earlier = presence(me, "self", 1, 40);
        earlier.sign(&key);
        let mut rows = vec![
            MemberRecord {
                presence: earlier,
                age_ms: 0,
            },
            MemberRecord {
                presence: own,
                age_ms: 0,
            },
        ];
        t.keep_authentic(&mut rows, now);
        assert_eq!((t.signatures_checked, rows.len()), (1, 2));
    }

    /// A restarted node hears the last heartbeats of its previous run for a few seconds (gossip
    /// keeps messages 3.5 s): several sequence numbers, but not for long. That is no twin.
    #[test]
    fn the_echoes_of_a_restarted_run_are_no_twin() {
        let (mut t, now, hear) = with_earlier_start();
        let ms = Duration::from_millis;
        // A peer's row of it, last heard there 14 s ago (alive there: its interval was 5 s):
        // what counts is when this daemon heard it (the echoes below come over 4 s, not 18).
        let me = t.local_peer();
        let mut last_row = presence(me, "self", 1, 39);
        last_row.heartbeat_interval_ms = 5_000;
        let row = MemberRecord {
            presence: last_row,
            age_ms: 14_000,
        };
        t.merge(vec![row], now);
        // Its last five heartbeats, in disorder and again, over 4 s.
        for (seq, at) in [
            (40, 0),
            (42, 300),
            (41, 900),
            (43, 2000),
            (44, 3500),
            (44, 4000),
        ] {
            hear(&mut t, seq, now + ms(at));
        }
        assert_eq!(t.take_twin(), None);
        // One of them heard once more later still is no heartbeat later than those heard.
        hear(&mut t, 43, now + ms(12_000));
        assert_eq!(t.take_twin(), None);
        // Nor is one of that run heard again after a long silence, twice.
        hear(&mut t, 45, now + ms(30_000));
        hear(&mut t, 46, now + ms(31_000));
        assert_eq!(t.take_twin(), None);
        // Its goodbye says nothing either.
        let mut goodbye = presence(t.local_peer(), "self", 1, 47);
        goodbye.status = PresenceStatus::Leaving;
        t.observe(goodbye, now + ms(40_000));
        assert_eq!(t.take_twin(), None);
    }

    /// A copy of this node's state directory started before this daemon and still running
    /// keeps heartbeating with its earlier start, which peers pass back here (some of them:
    /// they reach either daemon): once its heartbeats come for longer than any echo, it is a
    /// twin, never gone (this node's heartbeats are the ones peers take).
    #[test]
    fn an_earlier_start_still_running_is_a_twin() {
        let (mut t, now, hear) = with_earlier_start();
        let at = |s: u64| now + Duration::from_secs(s);
        // Every other heartbeat, one a second, with silences of up to 4 s.
        for (seq, s) in [(10, 0), (12, 2), (13, 3), (17, 7), (19, 9), (20, 10)] {
            hear(&mut t, seq, at(s));
            assert_eq!(t.take_twin(), None, "heard for {s} s only");
        }
        hear(&mut t, 22, at(12));
        let twin = t.take_twin().expect("a twin");
        assert_eq!((twin.presence.incarnation, twin.presence.seq), (1, 22));
        assert!(!twin.gone);
        // Said again as its heartbeats keep coming.
        hear(&mut t, 23, at(13));
        assert!(t.take_twin().is_some_and(|t| !t.gone));
        // A twin with a later start, waiting to be taken, is not replaced.
        let later = presence(t.local_peer(), "self", 3, 0);
        t.observe(later.clone(), at(14));
        hear(&mut t, 24, at(14));
        assert_eq!(t.take_twin().map(|t| t.presence), Some(later));
        // Passed on unsigned, such a heartbeat is no evidence of anything.
        let mut records = vec![MemberRecord {
            presence: presence(t.local_peer(), "self", 1, 30),
            age_ms: 0,
        }];
        t.keep_authentic(&mut records, at(15));
        assert!(records.is_empty());
    }

    /// Peers pass back to a node only heartbeats of a start earlier than the row they hold,
    /// and no goodbye.
    #[test]
    fn heartbeats_of_an_earlier_start_than_the_row_held_are_told_apart() {
        let (mut t, now) = table();
        let p = PeerId::random();
        assert!(!t.to_pass_back(&presence(p, "a", 1, 1)), "unknown");
        t.observe(presence(p, "a", 2, 5), now);
        assert!(t.to_pass_back(&presence(p, "a", 1, 9)));
        let mut goodbye = presence(p, "a", 1, 10);
        goodbye.status = PresenceStatus::Leaving;
        assert!(!t.to_pass_back(&goodbye), "a goodbye");
        assert!(!t.to_pass_back(&presence(p, "a", 2, 4)), "same start");
        assert!(!t.to_pass_back(&presence(p, "a", 3, 0)));
        let me = t.local_peer();
        assert!(!t.to_pass_back(&presence(me, "self", 0, 0)), "own");
    }

    /// A copy of this node's state directory running elsewhere speaks with its identity and a
    /// later start: the table says so, and says when that copy left or went silent.
    #[test]
    fn another_daemon_with_this_identity_is_reported_and_its_end_too() {
        let (mut t, now) = table();
        let me = t.local_peer();
        // One heartbeat of this node's own earlier start is no twin.
        t.merge(
            vec![MemberRecord {
                presence: presence(me, "self", 0, 40),
                age_ms: 0,
            }],
            now,
        );
        assert_eq!(t.take_twin(), None);
        // A later start, heard lately: a twin, alive.
        let twin = presence(me, "self", 5, 3);
        t.merge(
            vec![MemberRecord {
                presence: twin.clone(),
                age_ms: 0,
            }],
            now,
        );
        assert_eq!(
            t.take_twin(),
            Some(Twin {
                presence: twin.clone(),
                gone: false
            })
        );
        assert_eq!(t.take_twin(), None, "taken once");
        // This node's own row is untouched.
        let row = t.view(now).into_iter().find(|v| v.is_self).unwrap();
        assert_eq!(row.presence.incarnation, 1);
        // Silent for longer than its expiry: gone.
        t.merge(
            vec![MemberRecord {
                presence: presence(me, "self", 5, 4),
                age_ms: 3_500,
            }],
            now + Duration::from_secs(4),
        );
        assert!(t.take_twin().is_some_and(|t| t.gone));
        // Said goodbye: gone.
        let mut leaving = presence(me, "self", 5, 5);
        leaving.status = PresenceStatus::Leaving;
        t.merge(
            vec![MemberRecord {
                presence: leaving,
                age_ms: 0,
            }],
            now + Duration::from_secs(5),
        );
        assert!(t.take_twin().is_some_and(|t| t.gone));
        // Once this node speaks with a later start than the twin's, the twin's old news is
        // nothing new.
        t.update_local(presence(me, "self", 6, 1), now + Duration::from_secs(6));
        t.merge(
            vec![MemberRecord {
                presence: presence(me, "self", 5, 9),
                age_ms: 0,
            }],
            now + Duration::from_secs(6),
        );
        assert_eq!(t.take_twin(), None);
    }

    /// Two copies of one state directory started from the same file can, rarely, take the
    /// same number: a row with this node's number that this daemon did not send (a later
    /// heartbeat, or this one with other content) is the other's, while this daemon's own
    /// rows passed back, its goodbye included, are not.
    #[test]
    fn another_daemon_with_this_number_is_reported_too() {
        let now = Instant::now();
        let key = libp2p::identity::Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let signed = |mut p: Presence| {
            p.sign(&key);
            p
        };
        let mut own = signed(presence(me, "self", 7, 3));
        let mut t = Membership::new(own.clone(), now);
        let passed_on = |p: &Presence| {
            vec![MemberRecord {
                presence: p.clone(),
                age_ms: 0,
            }]
        };
        // Its own row, and an earlier heartbeat of this start, passed back: nothing.
        for p in [own.clone(), signed(presence(me, "self", 7, 2))] {
            let mut rows = passed_on(&p);
            t.keep_authentic(&mut rows, now);
            t.merge(rows, now);
            assert_eq!(t.take_twin(), None);
        }
        // This start's heartbeat with other content (another machine's), and a later one.
        let mut elsewhere = presence(me, "self", 7, 3);
        elsewhere.machine_id = "another machine".into();
        let elsewhere = signed(elsewhere);
        for p in [elsewhere.clone(), signed(presence(me, "self", 7, 9))] {
            let mut rows = passed_on(&p);
            t.keep_authentic(&mut rows, now);
            t.merge(rows, now);
            assert_eq!(
                t.take_twin(),
                Some(Twin {
                    presence: p,
                    gone: false
                })
            );
        }
        // Other content under a signature of another key is nobody's, and no twin.
        let mut forged = elsewhere.clone();
        forged.load = 9.0;
        forged.sign(&libp2p::identity::Keypair::generate_ed25519());
        let mut rows = passed_on(&forged);
        t.keep_authentic(&mut rows, now);
        assert!(rows.is_empty());
        // This node's goodbye, once in its table, passed back: nothing.
        own.seq = 10;
        own.status = PresenceStatus::Leaving;
        let own = signed(own);
        t.update_local(own.clone(), now);
        t.merge(passed_on(&own), now);
        assert_eq!(t.take_twin(), None);
    }

    /// `count` members not in the table, alive as of `seen` (1 s heartbeats).
    fn newcomers(t: &mut Membership, count: usize, seen: Instant) -> Vec<PeerId> {
        (0..count)
            .map(|_| {
                let p = PeerId::random();
                t.merge(
                    vec![MemberRecord {
                        presence: presence(p, "n", 1, 1),
                        age_ms: 0,
                    }],
                    seen,
                );
                p
            })
            .collect()
    }

    /// Rows made up by anyone who may connect stay a day: a full table drops members gone
    /// for a new one, the longest unheard first, and refuses it when nobody is gone. It never
    /// drops members alive or its own row, and takes no news of members already gone.
    #[test]
    fn a_full_table_drops_members_gone_for_newcomers_and_otherwise_refuses_them() {
        let (mut t, now) = table();
        let me = t.local_peer();
        let later = now + Duration::from_secs(60);
        // Three members heard 30, 20 and 10 s before `later`, and one that left.
        let (old, older, oldest, left) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        for (peer, ago) in [(old, 10), (older, 20), (oldest, 30)] {
            t.observe(
                presence(peer, "gone", 1, 1),
                later - Duration::from_secs(ago),
            );
        }
        let mut goodbye = presence(left, "left", 1, 2);
        goodbye.status = PresenceStatus::Leaving;
        t.observe(goodbye, later - Duration::from_secs(5));
        let alive = newcomers(&mut t, MAX_MEMBERS - 5, later);
        assert_eq!(t.versions().len(), MAX_MEMBERS);
        assert_eq!(t.take_refused(), 0);
        // A newcomer takes the place of the member unheard the longest, then the next.
        let first = newcomers(&mut t, 1, later)[0];
        assert!(t.contains(&first) && !t.contains(&oldest) && t.contains(&older));
        newcomers(&mut t, 1, later);
        assert!(!t.contains(&older) && t.contains(&old));
        // News of a member already gone takes no place.
        let expired = PeerId::random();
        t.merge(
            vec![MemberRecord {
                presence: presence(expired, "x", 1, 1),
                age_ms: 60_000,
            }],
            later,
        );
        assert!(!t.contains(&expired) && t.contains(&old));
        assert_eq!(t.take_refused(), 1);
        // The last two gone make room; then nobody is gone, and newcomers are refused.
        newcomers(&mut t, 2, later);
        assert!(!t.contains(&old) && !t.contains(&left));
        let refused = newcomers(&mut t, 3, later);
        assert!(refused.iter().all(|p| !t.contains(p)));
        assert_eq!(t.take_refused(), 3);
        assert_eq!(t.take_refused(), 0, "counted once");
        assert_eq!(t.versions().len(), MAX_MEMBERS);
        assert!(t.contains(&me) && alive.iter().all(|p| t.contains(p)));
        // A member known still speaks.
        t.observe(presence(alive[0], "n", 1, 2), later);
        assert_eq!(t.take_refused(), 0);
        // Once members expire, they make room.
        let expired_by_then = later + Duration::from_millis(3001);
        t.observe(presence(alive[0], "n", 1, 3), expired_by_then);
        let taken = newcomers(&mut t, 1, expired_by_then)[0];
        assert!(t.contains(&taken) && t.contains(&alive[0]));
        assert_eq!(t.versions().len(), MAX_MEMBERS);
    }

    /// Rows of `count` members not known, each signed by its node.
    fn signed_newcomers(count: usize) -> Vec<MemberRecord> {
        (0..count)
            .map(|_| {
                let key = libp2p::identity::Keypair::generate_ed25519();
                let mut p = presence(key.public().to_peer_id(), "made-up", 1, 1);
                p.sign(&key);
                MemberRecord {
                    presence: p,
                    age_ms: 0,
                }
            })
            .collect()
    }

    /// Many rows of one node in a sync cost one check: only its latest row is looked at, and
    /// taken if its node signed it; so are rows of one newcomer (one place, one check).
    #[test]
    fn rows_of_one_node_in_a_sync_cost_one_check() {
        let (mut t, now) = table();
        let key = libp2p::identity::Keypair::generate_ed25519();
        let member = key.public().to_peer_id();
        let signed = |seq: u64| {
            let mut p = presence(member, "m", 1, seq);
            p.sign(&key);
            MemberRecord {
                presence: p,
                age_ms: 0,
            }
        };
        t.observe(signed(1).presence, now);
        let mut rows: Vec<MemberRecord> = (2..2_000).map(signed).collect();
        rows.swap(0, 1_997);
        t.keep_authentic(&mut rows, now);
        assert_eq!(t.signatures_checked, 1);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].presence.seq, 1_999, "the latest row");
        t.merge(rows, now);
        assert_eq!(t.records_of(&[member], now)[0].presence.seq, 1_999);
        // A newcomer's rows: one place taken, one check.
        let newcomer = libp2p::identity::Keypair::generate_ed25519();
        let mut rows: Vec<MemberRecord> = (1..500)
            .map(|seq| {
                let mut p = presence(newcomer.public().to_peer_id(), "n", 1, seq);
                p.sign(&newcomer);
                MemberRecord {
                    presence: p,
                    age_ms: 0,
                }
            })
            .collect();
        t.keep_authentic(&mut rows, now);
        assert_eq!((t.signatures_checked, rows.len()), (2, 1));
        assert_eq!(t.take_refused(), 0);
    }

    /// A sync of made-up rows into a full table with nobody gone costs no signature check:
    /// they are refused unchecked; once a member is gone, a newcomer is checked and takes
    /// its place, and the next is refused unchecked again.
    #[test]
    fn a_full_table_refuses_newcomers_passed_on_without_checking_them() {
        let (mut t, now) = table();
        let alive = newcomers(&mut t, MAX_MEMBERS - 1, now);
        assert_eq!(t.versions().len(), MAX_MEMBERS);
        let mut rows = signed_newcomers(50);
        t.keep_authentic(&mut rows, now);
        assert!(rows.is_empty());
        assert_eq!(t.signatures_checked, 0);
        assert_eq!(t.take_refused(), 50);
        // Rows of members known are still checked (and taken).
        let mut later = presence(alive[0], "n", 1, 2);
        let key = libp2p::identity::Keypair::generate_ed25519();
        later.sign(&key);
        let mut rows = vec![MemberRecord {
            presence: later,
            age_ms: 0,
        }];
        t.keep_authentic(&mut rows, now);
        assert_eq!(t.signatures_checked, 1);
        assert!(rows.is_empty(), "signed by another key: not its node's");
        // A member leaves: one newcomer is checked and takes its place; the next is refused
        // unchecked.
        let mut goodbye = presence(alive[1], "n", 1, 2);
        goodbye.status = PresenceStatus::Leaving;
        t.observe(goodbye, now);
        let mut rows = signed_newcomers(2);
        let (first, second) = (rows[0].presence.peer_id, rows[1].presence.peer_id);
        t.keep_authentic(&mut rows, now);
        assert_eq!(t.signatures_checked, 2, "one place: one checked");
        assert_eq!(t.take_refused(), 1);
        t.merge(rows, now);
        assert!(t.contains(&first) && !t.contains(&alive[1]) && !t.contains(&second));
        assert_eq!(t.take_refused(), 0);
        let mut rows = signed_newcomers(10);
        t.keep_authentic(&mut rows, now);
        assert!(rows.is_empty());
        assert_eq!(t.signatures_checked, 2);
        assert_eq!(t.take_refused(), 10);
        assert_eq!(t.versions().len(), MAX_MEMBERS);
        // Two more leave: a row not signed by its node uses its place up, so a flood of
        // forged rows costs a check per place, not per row.
        for gone in [alive[2], alive[3]] {
            let mut goodbye = presence(gone, "n", 1, 2);
            goodbye.status = PresenceStatus::Leaving;
            t.observe(goodbye, now);
        }
        let mut rows = signed_newcomers(300);
        rows[0].presence.load = 0.5;
        let forged = rows[0].presence.peer_id;
        let genuine = rows[1].presence.peer_id;
        t.keep_authentic(&mut rows, now);
        assert_eq!(t.signatures_checked, 2 + 2);
        assert_eq!(t.take_refused(), 298);
        t.merge(rows, now);
        assert!(!t.contains(&forged) && t.contains(&genuine));
        assert_eq!(
            [alive[2], alive[3]]
                .iter()
                .filter(|p| t.contains(p))
                .count(),
            1
        );
        assert_eq!(t.versions().len(), MAX_MEMBERS);
    }

    /// A table with free places checks one row per place, and refuses the rest unchecked.
    #[test]
    fn a_sync_is_checked_only_up_to_the_free_places() {
        let (mut t, now) = table();
        newcomers(&mut t, MAX_MEMBERS - 4, now);
        let mut rows = signed_newcomers(5);
        t.keep_authentic(&mut rows, now);
        assert_eq!(
            (t.signatures_checked, rows.len(), t.take_refused()),
            (3, 3, 2)
        );
        t.merge(rows, now);
        assert_eq!(t.versions().len(), MAX_MEMBERS);
        assert_eq!(t.take_refused(), 0);
    }

    /// Members gone since the last walk of a full table are places too: a sync that uses up
    /// the members that walk found walks again, and checks (and takes) a newcomer for each.
    #[test]
    fn members_gone_since_the_last_walk_are_places_too() {
        let (mut t, now) = table();
        let alive = newcomers(&mut t, MAX_MEMBERS - 1, now);
        let leave = |t: &mut Membership, who: PeerId| {
            let mut goodbye = presence(who, "n", 1, 2);
            goodbye.status = PresenceStatus::Leaving;
            t.observe(goodbye, now);
        };
        leave(&mut t, alive[0]);
        leave(&mut t, alive[1]);
        // The walk finds two gone; one newcomer takes one place, the other stays listed.
        let mut rows = signed_newcomers(1);
        t.keep_authentic(&mut rows, now);
        t.merge(rows, now);
        assert_eq!(
            (t.room.walks, t.room.gone.len(), t.take_refused()),
            (1, 1, 0)
        );
        // Two more leave after that walk: three places, for three honest newcomers.
        leave(&mut t, alive[2]);
        leave(&mut t, alive[3]);
        let mut rows = signed_newcomers(4);
        let peers: Vec<PeerId> = rows.iter().map(|r| r.presence.peer_id).collect();
        t.keep_authentic(&mut rows, now);
        assert_eq!(t.room.walks, 2);
        assert_eq!((t.signatures_checked, t.take_refused()), (1 + 3, 1));
        t.merge(rows, now);
        assert_eq!(t.take_refused(), 0);
        assert!(peers[..3].iter().all(|p| t.contains(p)) && !t.contains(&peers[3]));
        assert!(alive[..4].iter().all(|p| !t.contains(p)));
        assert_eq!(t.versions().len(), MAX_MEMBERS);
    }

    /// A table full by its bytes, with rows to spare but fewer bytes left than a row takes,
    /// has no place for a newcomer: a sync costs no check; bytes for three rows, three checks.
    #[test]
    fn a_table_full_by_its_bytes_checks_no_newcomer() {
        let row = crate::wire::encoded_len(&signed_newcomers(1)[0].presence);
        for (gap, places) in [(row - 1, 0), (3 * row + row / 2, 3)] {
            let (mut t, now) = table();
            made_up_rows(
                &mut t,
                MAX_TABLE_BYTES - KEPT_FOR_KNOWN_BYTES - gap,
                1000,
                now,
            );
            assert!(t.versions().len() < MAX_MEMBERS / 2);
            let mut rows = signed_newcomers(20);
            t.keep_authentic(&mut rows, now);
            assert_eq!(
                (t.signatures_checked, rows.len(), t.take_refused()),
                (places, places, 20 - places as u64)
            );
            t.merge(rows, now);
            assert_eq!(t.take_refused(), 0, "each row checked is taken");
        }
    }

    /// A full table takes no row of a member already gone (left, or silent longer than three
    /// of its intervals where it was heard): such a row takes no place of a member gone, and
    /// is refused unchecked; the newcomer alive after it takes the place.
    #[test]
    fn rows_of_members_already_gone_take_no_place_in_a_full_table() {
        let (mut t, now) = table();
        let alive = newcomers(&mut t, MAX_MEMBERS - 1, now);
        let mut goodbye = presence(alive[0], "n", 1, 2);
        goodbye.status = PresenceStatus::Leaving;
        t.observe(goodbye, now);
        // Expired (silent just over three 1 s intervals), alive (just under), left, alive.
        let mut rows = signed_newcomers(4);
        rows[0].age_ms = 3_001;
        rows[1].age_ms = 3_000;
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mut left = presence(key.public().to_peer_id(), "left", 1, 2);
        left.status = PresenceStatus::Leaving;
        left.sign(&key);
        rows[2].presence = left;
        let peers: Vec<PeerId> = rows.iter().map(|r| r.presence.peer_id).collect();
        // One place: the first row alive takes it, the last is refused unchecked too.
        t.keep_authentic(&mut rows, now);
        assert_eq!((t.signatures_checked, t.take_refused()), (1, 3));
        t.merge(rows, now);
        assert!(t.contains(&peers[1]) && !t.contains(&alive[0]));
        assert!(![peers[0], peers[2], peers[3]].iter().any(|p| t.contains(p)));
        assert_eq!(t.take_refused(), 0);
    }

    /// A presence may take over 100 KiB (64 labels of 1 KiB keys and values): rows of made-up
    /// identities that large, new or grown from small ones, stop at the table's bytes; the
    /// heartbeats of members known still fit once newcomers no longer do.
    #[test]
    fn large_rows_stop_at_the_tables_bytes() {
        let (mut t, now) = table();
        let mut template = presence(PeerId::random(), "large", 1, 1);
        template.labels = (0..crate::wire::MAX_LABELS)
            .map(|i| {
                (
                    format!("{i:01023}"),
                    "v".repeat(crate::wire::MAX_LABEL_BYTES),
                )
            })
            .collect();
        assert!(template.plausible());
        let large = |peer_id, seq| Presence {
            peer_id,
            seq,
            ..template.clone()
        };
        let row_bytes = crate::wire::encoded_len(&template);
        let fit = (MAX_TABLE_BYTES - KEPT_FOR_KNOWN_BYTES) / row_bytes;
        let peers: Vec<PeerId> = (0..fit + 10).map(|_| PeerId::random()).collect();
        for p in &peers {
            t.observe(large(*p, 1), now);
        }
        assert_eq!(t.versions().len(), fit + 1);
        assert_eq!(t.take_refused(), 10);
        assert!(t.bytes <= MAX_TABLE_BYTES - KEPT_FOR_KNOWN_BYTES);
        // A member known still speaks.
        let known = peers[0];
        let mut longer = large(known, 2);
        longer.name = "larger".into();
        t.observe(longer, now);
        assert_eq!(t.name_of(&known), Some("larger"));
        // Small rows grown large stop at the bytes of the whole table.
        let (mut t, now) = table();
        let grown = MAX_TABLE_BYTES / row_bytes + 10;
        let small: Vec<PeerId> = newcomers(&mut t, grown, now);
        for p in &small {
            t.observe(large(*p, 2), now);
        }
        assert!(t.bytes <= MAX_TABLE_BYTES);
        assert!(t.take_refused() >= 10);
        assert_eq!(t.versions().len(), grown + 1);
    }

    /// A heartbeat interval made-up identities may say: an hour, so they stay alive
    /// throughout a test.
    const AN_HOUR_MS: u64 = 3_600_000;

    /// `p` padded with labels to take exactly `bytes` encoded (from about 500 bytes to some
    /// 30 KiB): the last label's value takes what whole labels leave missing.
    fn padded(mut p: Presence, bytes: usize) -> Presence {
        const WHOLE: usize = 512;
        let mut i = 0;
        loop {
            let key = format!("{i:04}");
            p.labels.insert(key.clone(), String::new());
            // A value of 256 bytes or more takes 2 bytes more than its length over an empty
            // one: any length in that range takes exactly what is missing.
            let missing = bytes
                .checked_sub(crate::wire::encoded_len(&p) + 2)
                .filter(|m| *m >= 256)
                .expect("a row at least a label larger");
            if missing <= crate::wire::MAX_LABEL_BYTES {
                p.labels.insert(key, "v".repeat(missing));
                break;
            }
            p.labels.insert(key, "v".repeat(WHOLE));
            i += 1;
        }
        assert_eq!(crate::wire::encoded_len(&p), bytes);
        assert!(p.plausible());
        p
    }

    /// Made-up identities with `interval_ms` heartbeats, heard at `now`, whose rows fill the
    /// table's bytes to exactly `upto` (at most what newcomers may take): their peer ids.
    fn made_up_rows(
        t: &mut Membership,
        upto: usize,
        interval_ms: u64,
        now: Instant,
    ) -> Vec<PeerId> {
        const ROW: usize = 16_000;
        let mut peers = Vec::new();
        while t.bytes < upto {
            let left = upto - t.bytes;
            let size = match left {
                _ if left > 2 * ROW => ROW,
                _ if left > ROW => left / 2,
                _ => left,
            };
            let peer = PeerId::random();
            let mut row = presence(peer, "made-up", 1, 1);
            row.heartbeat_interval_ms = interval_ms;
            t.observe(padded(row, size), now);
            peers.push(peer);
        }
        assert_eq!(t.bytes, upto);
        assert_eq!(t.take_refused(), 0);
        peers
    }

    /// `peers`, made up, grow their rows (members known) until the table's bytes are exactly
    /// `upto`.
    fn grow_rows(t: &mut Membership, peers: &[PeerId], upto: usize, now: Instant) {
        for peer in peers {
            if t.bytes == upto {
                break;
            }
            let Some(old) = t.members.get(peer).map(|m| m.presence.clone()) else {
                continue;
            };
            let size = (t.members[peer].bytes + (upto - t.bytes)).min(32_000);
            let grown = Presence {
                labels: BTreeMap::new(),
                seq: old.seq + 1,
                ..old
            };
            t.observe(padded(grown, size), now);
        }
        assert_eq!(t.bytes, upto);
        assert_eq!(t.take_refused(), 0);
    }

    /// Made-up identities can fill a table's bytes to the last one, growing their rows once
    /// in (they are members known too): the heartbeats of a member alive, a little longer
    /// than its first one, and its goodbye are still taken.
    #[test]
    fn a_table_full_to_the_last_byte_still_takes_the_later_rows_of_members_known() {
        let (mut t, now) = table();
        let member = PeerId::random();
        t.observe(presence(member, "m", 1, 1), now);
        let made_up = made_up_rows(
            &mut t,
            MAX_TABLE_BYTES - KEPT_FOR_KNOWN_BYTES,
            AN_HOUR_MS,
            now,
        );
        grow_rows(&mut t, &made_up, MAX_TABLE_BYTES, now);
        // A load that a half-precision float no longer holds: 2 bytes longer than the first.
        let mut at = now;
        for seq in 2..10 {
            at = now + Duration::from_secs(seq - 1);
            let mut beat = presence(member, "m", 1, seq);
            beat.load = 0.37;
            t.observe(beat, at);
            assert!(t.tick(at).is_empty(), "nobody expires");
        }
        assert!(t.is_alive(&member, at));
        assert_eq!(t.take_refused(), 0);
        let row = &t.records_of(&[member], at)[0].presence;
        assert_eq!((row.seq, row.load), (9, 0.37));
        assert!(t.bytes > MAX_TABLE_BYTES);
        // Its goodbye, longer still.
        let mut goodbye = presence(member, "m", 1, 10);
        goodbye.load = 0.37;
        goodbye.status = PresenceStatus::Leaving;
        assert_eq!(t.observe(goodbye, at), Some(MembershipChange::Left(member)));
        assert_eq!(t.state_of(&member, at), Some(MemberState::Left));
        assert_eq!(t.take_refused(), 0);
        assert!(t.bytes <= MAX_TABLE_BYTES + MAX_MEMBERS * SMALL_ROW_BYTES);
    }

    /// A later row over `SMALL_ROW_BYTES` that a full table has no room for leaves its
    /// member's row as it was; its member spoke, so it stays alive. A goodbye that large is
    /// taken as the member's expiry.
    #[test]
    fn a_later_row_too_large_for_a_full_table_still_says_its_member_is_there() {
        let (mut t, now) = table();
        let member = PeerId::random();
        let large = |seq, bytes| padded(presence(member, "m", 1, seq), bytes);
        t.observe(large(1, 20_000), now);
        let made_up = made_up_rows(
            &mut t,
            MAX_TABLE_BYTES - KEPT_FOR_KNOWN_BYTES,
            AN_HOUR_MS,
            now,
        );
        grow_rows(&mut t, &made_up, MAX_TABLE_BYTES, now);
        let mut at = now;
        for seq in 2..10 {
            at = now + Duration::from_secs(seq - 1);
            t.observe(large(seq, 20_001), at);
            assert!(t.tick(at).is_empty(), "nobody expires");
        }
        assert!(t.is_alive(&member, at));
        assert_eq!(t.take_refused(), 8);
        assert_eq!(t.records_of(&[member], at)[0].presence, large(1, 20_000));
        assert_eq!(t.bytes, MAX_TABLE_BYTES);
        // Its goodbye, as large: refused, and the member expires three intervals after its
        // last heartbeat.
        let mut goodbye = large(10, 20_000);
        goodbye.status = PresenceStatus::Leaving;
        assert_eq!(t.observe(goodbye, at), None);
        assert_eq!(t.take_refused(), 1);
        assert_eq!(t.state_of(&member, at), Some(MemberState::Alive));
        assert!(t.tick(at + Duration::from_millis(3000)).is_empty());
        assert_eq!(
            t.tick(at + Duration::from_millis(3001)),
            vec![MembershipChange::Expired(member)]
        );
    }

    /// A later row too large for a full table, passed on by other nodes rather than heard from
    /// its member, says nothing of the member being there: never stored, it stays news, and
    /// passing it on again and again would keep a member that fell silent alive.
    #[test]
    fn a_refused_row_passed_on_by_others_keeps_no_member_alive() {
        let (mut t, now) = table();
        let member = PeerId::random();
        let large = |seq, bytes| padded(presence(member, "m", 1, seq), bytes);
        t.observe(large(1, 20_000), now);
        let made_up = made_up_rows(
            &mut t,
            MAX_TABLE_BYTES - KEPT_FOR_KNOWN_BYTES,
            AN_HOUR_MS,
            now,
        );
        grow_rows(&mut t, &made_up, MAX_TABLE_BYTES, now);
        let passed_on = MemberRecord {
            presence: large(2, 20_001),
            age_ms: 0,
        };
        let mut expired = Vec::new();
        for second in 1..10 {
            let at = now + Duration::from_secs(second);
            t.merge(vec![passed_on.clone()], at);
            expired.extend(t.tick(at));
        }
        assert_eq!(expired, vec![MembershipChange::Expired(member)]);
    }

    /// A full table walks its rows for members gone once per newcomer it refuses only when
    /// one may have gone: goodbyes that change no row (of identities it has no room for, or
    /// older than the row it holds) cost no walk; a member alive that leaves does.
    #[test]
    fn only_a_member_leaving_makes_a_full_table_look_for_room_again() {
        let (mut t, now) = table();
        let (member, restarted) = (PeerId::random(), PeerId::random());
        t.observe(presence(member, "m", 1, 1), now);
        t.observe(presence(restarted, "r", 2, 1), now);
        made_up_rows(
            &mut t,
            MAX_TABLE_BYTES - KEPT_FOR_KNOWN_BYTES,
            AN_HOUR_MS,
            now,
        );
        let goodbye = |peer, incarnation, seq| Presence {
            status: PresenceStatus::Leaving,
            ..presence(peer, "m", incarnation, seq)
        };
        // Nobody gone: the first newcomer refused walks the table, those after it do not.
        let at = now + Duration::from_secs(1);
        newcomers(&mut t, 3, at);
        assert_eq!((t.room.walks, t.take_refused()), (1, 3));
        for _ in 0..100 {
            assert_eq!(t.observe(goodbye(PeerId::random(), 1, 2), at), None);
            assert_eq!(t.observe(goodbye(restarted, 1, 9), at), None);
            newcomers(&mut t, 1, at);
        }
        assert_eq!((t.room.walks, t.take_refused()), (1, 200));
        // A member leaves: the next newcomer takes its place, after a walk.
        assert_eq!(
            t.observe(goodbye(member, 1, 2), at),
            Some(MembershipChange::Left(member))
        );
        let taken = newcomers(&mut t, 1, at)[0];
        assert!(t.contains(&taken) && !t.contains(&member));
        assert_eq!((t.room.walks, t.take_refused()), (2, 0));
    }

    /// A row may expire before the first expiry the table's last walk found (its member's
    /// heartbeats grew shorter, or it was taken in since): it still makes room once gone.
    #[test]
    fn a_member_expiring_sooner_than_the_last_walk_knew_makes_room() {
        const TEN_SECONDS_MS: u64 = 10_000;
        let newcomer = |t: &mut Membership, at| {
            let taken = newcomers(t, 1, at)[0];
            (t.contains(&taken), t.take_refused())
        };
        // A member whose heartbeats grow shorter.
        let (mut t, now) = table();
        let member = PeerId::random();
        let mut slow = presence(member, "m", 1, 1);
        slow.heartbeat_interval_ms = TEN_SECONDS_MS;
        t.observe(slow, now);
        made_up_rows(
            &mut t,
            MAX_TABLE_BYTES - KEPT_FOR_KNOWN_BYTES,
            TEN_SECONDS_MS,
            now,
        );
        // Nobody expires within 30 s, as of this walk.
        assert_eq!(newcomer(&mut t, now), (false, 1));
        t.observe(presence(member, "m", 1, 2), now + Duration::from_secs(1));
        assert_eq!(
            newcomer(&mut t, now + Duration::from_millis(4001)),
            (true, 0)
        );
        assert!(!t.contains(&member));
        // A member taken in after the walk, expiring sooner than the rows walked.
        let (mut t, now) = table();
        let small = crate::wire::encoded_len(&presence(PeerId::random(), "n", 1, 1));
        let upto = MAX_TABLE_BYTES - KEPT_FOR_KNOWN_BYTES - small;
        made_up_rows(&mut t, upto, TEN_SECONDS_MS, now);
        let large = padded(presence(PeerId::random(), "large", 1, 1), 2_000);
        t.observe(large, now);
        assert_eq!(t.take_refused(), 1, "walked, nobody gone");
        let member = newcomers(&mut t, 1, now + Duration::from_secs(1))[0];
        assert!(t.contains(&member));
        assert_eq!(
            newcomer(&mut t, now + Duration::from_millis(4001)),
            (true, 0)
        );
        assert!(!t.contains(&member));
    }
}
