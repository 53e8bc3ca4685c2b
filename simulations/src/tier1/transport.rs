//! The modelled network of tier 1: datagrams with their latency, loss and partitions,
//! request-response exchanges with their timeouts, gossipsub's flood and IHAVE/IWANT, and
//! the membership heartbeats.

use coordination::{
    JobMessage, outbox,
    transfer::{self, ChunkResult},
};
use rand::seq::SliceRandom;

use super::{
    Answer, Body, COORDINATION_RETRY, Event, Flood, Kind, Pending, SUBMITTER_START, Sim, cbor_len,
    daemon, next_phase, wait_id_of,
};
use crate::network::{Micros, Overhead, micros};

impl Sim {
    /// Bytes on `node`'s uplink that have not left by now: what a crash drops, and what a
    /// report leaves out (traffic counts the bytes sent, not those still queued).
    pub(super) fn backlog(&self, node: usize) -> u64 {
        let queued_for = self.nodes[node].uplink_free.saturating_sub(self.now);
        self.network.uplink.bytes_in(queued_for)
    }

    /// Takes `bytes` that never left `node`'s uplink out of its traffic: payload first (the
    /// queue's tail is mostly payload: chunks, sets, runs), then overhead.
    pub(super) fn unsend(traffic: (&mut u64, &mut u64), bytes: u64) {
        let (payload, overhead) = traffic;
        let from_payload = bytes.min(*payload);
        *payload -= from_payload;
        *overhead -= (bytes - from_payload).min(*overhead);
    }

    /// Puts a message on `from`'s uplink; returns when its last byte has left. Its bytes
    /// count as sent from now; those still queued when the node crashes or the report is
    /// made are taken out again ([`Sim::backlog`]).
    pub(super) fn transmit(&mut self, from: usize, payload: u64, overhead: u64) -> Micros {
        self.messages[from] += 1;
        self.payload[from] += payload;
        self.overhead[from] += overhead;
        let start = self.now.max(self.nodes[from].uplink_free);
        let done = start + self.network.uplink.transmit(payload + overhead);
        self.nodes[from].uplink_free = done;
        done
    }

    pub(super) fn crosses_partition(&self, a: usize, b: usize) -> bool {
        self.partitioned && self.side_b[a] != self.side_b[b]
    }

    /// Whether a message from `a` to `b` arrives now, and how late: `None` if it is lost (a
    /// partition, or loss under the `drop` model).
    pub(super) fn fate(&mut self, a: usize, b: usize) -> Option<Micros> {
        if self.crosses_partition(a, b) {
            return None;
        }
        self.network.fate(&mut self.rng)
    }

    pub(super) fn latency(&mut self) -> Micros {
        self.network.latency.sample(&mut self.rng)
    }

    /// A one-way message that arrives or does not.
    pub(super) fn datagram(
        &mut self,
        from: usize,
        to: usize,
        payload: u64,
        overhead: u64,
        event: Event,
    ) {
        let left = self.transmit(from, payload, overhead);
        let Some(late) = self.fate(from, to) else {
            return;
        };
        let at = left + late + self.latency();
        self.schedule_from(at, event, from, left);
    }

    pub(super) fn control(&mut self, from: usize, to: usize, make: impl Fn(usize, usize) -> Event) {
        self.datagram(
            from,
            to,
            0,
            Overhead::CONTROL + Overhead::MESSAGE_ID,
            make(to, from),
        );
    }

    pub(super) fn request(&mut self, from: usize, to: usize, body: Body) {
        let (kind, payload, timeout) = match &body {
            Body::Deliver => (Kind::Deliver, self.deliver_bytes, daemon::CTL_TIMEOUT),
            Body::Ack => (
                Kind::Ack,
                cbor_len(&JobMessage::Ack {
                    run_id: self.run.run_id.clone(),
                    node: self.ids[from].clone(),
                }),
                daemon::CTL_TIMEOUT,
            ),
            Body::Results(results) => (
                Kind::Results,
                cbor_len(&JobMessage::Results(results.clone())),
                daemon::CTL_TIMEOUT,
            ),
            // A BlobRequest: the file's hash, the chunk's index and a token.
            Body::Chunk { index } => (Kind::Chunk { index: *index }, 72, daemon::BLOB_TIMEOUT),
            Body::QueryValue => (
                Kind::QueryValue,
                self.query_value_bytes,
                daemon::CTL_TIMEOUT,
            ),
            Body::QueryResult { bytes } => (
                Kind::QueryResult { bytes: *bytes },
                *bytes,
                daemon::CTL_TIMEOUT,
            ),
            Body::WaitFor => (Kind::WaitFor, self.wait_for_bytes, daemon::CTL_TIMEOUT),
            Body::WaitDone => (Kind::WaitDone, self.wait_done_bytes, daemon::CTL_TIMEOUT),
            Body::QueryTaken { values } => (
                Kind::QueryTaken { values: *values },
                cbor_len(&JobMessage::QueryTaken {
                    job_id: self.job_id(self.query_job.unwrap_or_default()),
                    node: self.ids[from].clone(),
                    values: *values as u64,
                }),
                daemon::CTL_TIMEOUT,
            ),
        };
        let id = self.next_request;
        self.next_request += 1;
        let timeout = micros(timeout);
        self.requests.insert(
            id,
            Pending {
                from,
                from_epoch: self.nodes[from].epoch,
                to,
                kind,
                body: Some(body),
                sent_at: self.now,
                timeout,
            },
        );
        let left = self.transmit(from, payload, Overhead::REQUEST);
        if !self.nodes[to].alive {
            // Nobody listening: the dial is refused after a round trip.
            let at = left + 2 * self.latency();
            self.schedule(at, Event::Failed { id });
        } else {
            match self.fate(from, to) {
                None => self.schedule(self.now + timeout, Event::Failed { id }),
                Some(late) => {
                    // A request opens a new stream and agrees on its protocol first
                    // (multistream-select waits for the answer): a round trip before the
                    // request itself crosses.
                    let negotiation = 2 * self.latency();
                    let at = left + late + negotiation + self.latency();
                    if at > self.now + timeout {
                        self.schedule(self.now + timeout, Event::Failed { id });
                    } else {
                        self.schedule_from(at, Event::Request { id }, from, left);
                    }
                }
            }
        }
    }

    /// When what `node` just wrote is on disk: the end of its store's open group, or of one
    /// opened now (`node::store` gathers writes for a window, and syncs a group somebody waits
    /// for when it ends).
    pub(super) fn committed_at(&mut self, node: usize) -> Micros {
        let n = &mut self.nodes[node];
        if n.store_group_ends <= self.now {
            n.store_group_ends = self.now + micros(daemon::STORE_GROUP_WINDOW);
        }
        n.store_group_ends
    }

    /// Answers `id` with Ok once `node`'s store has committed what the request wrote.
    pub(super) fn respond_once_committed(&mut self, node: usize, id: u64) {
        let at = self.committed_at(node);
        self.schedule(
            at,
            Event::Respond {
                id,
                answer: Answer::Ok,
                payload: 3,
            },
        );
    }

    pub(super) fn respond(&mut self, id: u64, answer: Answer, payload: u64) {
        let Some(p) = self.requests.get(&id) else {
            return;
        };
        let (from, to, give_up) = (p.to, p.from, p.sent_at + p.timeout);
        let left = self.transmit(from, payload, Overhead::RESPONSE);
        match self.fate(from, to) {
            None => self.schedule(give_up.max(self.now), Event::Failed { id }),
            Some(late) => {
                let at = left + late + self.latency();
                if at > give_up {
                    self.schedule(give_up.max(self.now), Event::Failed { id });
                } else {
                    self.schedule_from(at, Event::Reply { id, answer }, from, left);
                }
            }
        }
    }

    pub(super) fn request_in(&mut self, id: u64) {
        let Some(p) = self.requests.get_mut(&id) else {
            return;
        };
        let (to, from) = (p.to, p.from);
        let Some(body) = p.body.take() else {
            return;
        };
        if !self.nodes[to].alive {
            let at = self.now + self.latency();
            self.schedule(at, Event::Failed { id });
            return;
        }
        match body {
            Body::Deliver => {
                self.accept(to, false);
                self.respond_once_committed(to, id);
            }
            Body::Ack => {
                self.acked(from);
                self.respond(id, Answer::Ok, 3);
            }
            Body::Results(results) => {
                for r in results {
                    self.result_in(r);
                }
                self.respond_once_committed(to, id);
            }
            Body::Chunk { index } => self.serve(to, id, index),
            Body::QueryValue => {
                // Kept on disk before the answer, as the daemon does.
                self.query_value_in(from);
                self.respond_once_committed(to, id);
            }
            Body::QueryResult { .. } => {
                self.query_result_in(to);
                self.respond(id, Answer::Ok, 3);
            }
            Body::WaitFor => {
                self.register_at(to, from);
                self.respond(id, Answer::Ok, 3);
            }
            Body::WaitDone => {
                self.wait_done_at(to, from);
                self.respond(id, Answer::Ok, 3);
            }
            Body::QueryTaken { values } => {
                if let Some(job) = self.query_job {
                    let job_id = self.job_id(job);
                    self.queries.taken(&job_id, &self.ids[from], values);
                }
                self.respond(id, Answer::Ok, 3);
            }
        }
    }

    pub(super) fn answer_in(&mut self, id: u64, answer: Option<Answer>) {
        let Some(p) = self.requests.remove(&id) else {
            return;
        };
        let node = p.from;
        if !self.nodes[node].alive || self.nodes[node].epoch != p.from_epoch {
            return;
        }
        match p.kind {
            Kind::Deliver => {
                if answer.is_some() {
                    self.acked(p.to);
                }
            }
            Kind::Ack => {
                if answer.is_some() {
                    self.nodes[node].ack.answered(SUBMITTER_START);
                }
            }
            Kind::Results => {
                let to = self.ids[self.submitter].clone();
                let input = outbox::Input::Sent {
                    to,
                    ok: answer.is_some(),
                };
                let now = self.instant();
                let actions = self.nodes[node].outbox.handle(input, now);
                self.outbox_actions(node, actions);
            }
            Kind::Chunk { index } => {
                let result = match answer {
                    Some(Answer::Chunk(r)) => r,
                    _ => ChunkResult::Unreachable,
                };
                if result == ChunkResult::Ok {
                    self.chunk_arrived(node, index);
                }
                let input = transfer::Input::Got {
                    index,
                    from: self.ids[p.to].clone(),
                    result,
                };
                self.download_step(node, input);
            }
            Kind::WaitFor => {
                // A registration not taken is sent again by the wait's own timer.
                if answer.is_some() {
                    let now = self.instant();
                    let wait_id = wait_id_of(node);
                    self.nodes[node].waits.taken(&wait_id, &self.ids[p.to], now);
                }
            }
            // Sent once, as the daemon does: a word lost costs one direct copy of the set.
            Kind::QueryTaken { .. } => {}
            kind @ (Kind::QueryValue | Kind::QueryResult { .. } | Kind::WaitDone) => {
                if answer.is_none() {
                    let epoch = self.nodes[node].epoch;
                    let event = Event::Retry {
                        from: node,
                        epoch,
                        to: p.to,
                        kind,
                    };
                    self.schedule(self.now + COORDINATION_RETRY, event);
                }
            }
        }
    }

    /// The newest version of `what` that `node` has.
    pub(super) fn seen(&self, node: usize, what: Flood) -> Option<u32> {
        self.nodes[node].seen[what.index()].map(|(round, _)| round)
    }

    /// The size of `what` (for a set, the newest: a node passing on an older one is charged
    /// a little more than it sends).
    pub(super) fn flood_bytes(&self, what: Flood) -> u64 {
        match what {
            Flood::Run => self.run_bytes,
            Flood::QuerySet => self.set_bytes,
        }
    }

    /// `from` sends the newest version of `what` it has to `to`.
    pub(super) fn gossip_out(&mut self, from: usize, to: usize, what: Flood) {
        let Some(round) = self.seen(from, what) else {
            return;
        };
        let bytes = self.flood_bytes(what);
        self.datagram(
            from,
            to,
            bytes,
            Overhead::GOSSIP,
            Event::Gossip {
                to,
                from,
                what,
                round,
            },
        );
    }

    /// `node` publishes version `round` of `what`: flood publishing, to every connected peer.
    pub(super) fn publish(&mut self, node: usize, what: Flood, round: u32) {
        self.nodes[node].seen[what.index()] = Some((round, self.now));
        for p in self.peers[node].clone() {
            self.gossip_out(node, p, what);
        }
        self.next_heartbeat(node);
    }

    pub(super) fn gossip_in(&mut self, to: usize, from: usize, what: Flood, round: u32) {
        if !self.nodes[to].alive {
            if what == Flood::Run {
                self.missed_gossip[to] = true;
            }
            return;
        }
        // Every copy counts, and each version once per node: a new round of the run is a
        // message of its own, received again by everyone.
        self.gossip_received += 1;
        if !self.nodes[to].received.contains(&(what, round)) {
            self.nodes[to].received.push((what, round));
            self.gossip_first_receipts += 1;
        }
        // Gossip drops what it has seen: this version, or (for the model) an older one.
        if self.seen(to, what).is_some_and(|r| r >= round) {
            return;
        }
        self.nodes[to].seen[what.index()] = Some((round, self.now));
        let mesh = self.mesh[to].clone();
        if self.flood_bytes(what) > daemon::IDONTWANT_THRESHOLD as u64 {
            for &p in mesh.iter().filter(|&&p| p != from) {
                self.control(to, p, |to, from| Event::IDontWant {
                    to,
                    from,
                    what,
                    round,
                });
            }
        }
        for &p in &mesh {
            if p != from
                && p != self.submitter
                && !self.nodes[to].dont_want.contains(&(p, what, round))
            {
                self.gossip_out(to, p, what);
            }
        }
        self.next_heartbeat(to);
        match what {
            Flood::Run => self.accept(to, true),
            Flood::QuerySet => self.query_set_in(to, round as usize),
        }
    }

    pub(super) fn next_heartbeat(&mut self, node: usize) {
        if self.nodes[node].heartbeat_at.is_some() {
            return;
        }
        let at = next_phase(
            self.now,
            self.nodes[node].phase,
            micros(daemon::GOSSIP_HEARTBEAT),
        );
        self.nodes[node].heartbeat_at = Some(at);
        let epoch = self.nodes[node].epoch;
        self.schedule(at, Event::Heartbeat { node, epoch });
    }

    /// IHAVE to some peers outside the mesh while the message is in the gossip window.
    pub(super) fn heartbeat(&mut self, node: usize, epoch: u32) {
        if self.nodes[node].epoch != epoch || !self.nodes[node].alive {
            return;
        }
        self.nodes[node].heartbeat_at = None;
        let period = micros(daemon::GOSSIP_HEARTBEAT);
        let recent: Vec<(Flood, u32)> = Flood::ALL
            .into_iter()
            .filter_map(|what| {
                let (round, seen) = self.nodes[node].seen[what.index()]?;
                (self.now <= seen + daemon::HISTORY_GOSSIP * period).then_some((what, round))
            })
            .collect();
        if recent.is_empty() {
            return;
        }
        let mut others: Vec<usize> = self.peers[node]
            .iter()
            .copied()
            .filter(|p| !self.mesh[node].contains(p))
            .collect();
        let count = daemon::GOSSIP_LAZY
            .max((others.len() as f64 * daemon::GOSSIP_FACTOR).ceil() as usize)
            .min(others.len());
        others.shuffle(&mut self.rng);
        for &p in &others[..count] {
            for &(what, round) in &recent {
                self.control(node, p, |to, from| Event::IHave {
                    to,
                    from,
                    what,
                    round,
                });
            }
        }
        self.next_heartbeat(node);
    }
}
