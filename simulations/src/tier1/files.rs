//! Files in tier 1: chunks served and fetched by the real `coordination::transfer`
//! downloads, over the modelled network.

use coordination::transfer::{self, ChunkResult};
use jobs::spec::CHUNK_SIZE;

use super::{Answer, Body, Event, Parked, Sim, daemon, next_phase};
use crate::network::micros;

impl Sim {
    pub(super) fn serve(&mut self, node: usize, id: u64, index: usize) {
        if self.nodes[node].chunks.get(index).copied().unwrap_or(false) {
            let bytes = self.chunk_len(index) + 16;
            self.respond(id, Answer::Chunk(ChunkResult::Ok), bytes);
        } else if self.nodes[node].download.is_some() {
            let deadline = self.now + micros(daemon::PARK_FOR);
            self.nodes[node].parked.push(Parked {
                id,
                index,
                deadline,
            });
            self.want_transfer_tick(node);
        } else {
            self.respond(id, Answer::Chunk(ChunkResult::Unknown), 3);
        }
    }

    pub(super) fn chunk_len(&self, index: usize) -> u64 {
        let size = self.file.as_ref().map_or(0, |f| f.size);
        let start = index as u64 * CHUNK_SIZE;
        size.saturating_sub(start).min(CHUNK_SIZE)
    }

    pub(super) fn chunk_arrived(&mut self, node: usize, index: usize) {
        if let Some(c) = self.nodes[node].chunks.get_mut(index) {
            *c = true;
        }
        let parked = std::mem::take(&mut self.nodes[node].parked);
        let (ready, waiting): (Vec<Parked>, Vec<Parked>) =
            parked.into_iter().partition(|p| p.index == index);
        self.nodes[node].parked = waiting;
        let bytes = self.chunk_len(index) + 16;
        for p in ready {
            self.respond(p.id, Answer::Chunk(ChunkResult::Ok), bytes);
        }
    }

    pub(super) fn download_step(&mut self, node: usize, input: transfer::Input) {
        let now = self.instant();
        let Some(d) = self.nodes[node].download.as_mut() else {
            return;
        };
        let actions = d.handle(input, now);
        self.download_actions(node, actions);
    }

    pub(super) fn download_actions(&mut self, node: usize, actions: Vec<transfer::Action>) {
        for action in actions {
            match action {
                transfer::Action::Fetch { index, from } => {
                    let to = self.index[&from];
                    self.request(node, to, Body::Chunk { index });
                }
                // The daemon only logs it; the download goes on asking.
                transfer::Action::Stalled { .. } => {}
                transfer::Action::Done | transfer::Action::Failed(_) => {
                    let ok = matches!(action, transfer::Action::Done);
                    self.nodes[node].download = None;
                    // Nobody will answer what waits here now: the file is whole or abandoned.
                    for p in std::mem::take(&mut self.nodes[node].parked) {
                        let answer = if ok {
                            ChunkResult::Ok
                        } else {
                            ChunkResult::Unknown
                        };
                        let bytes = if ok { self.chunk_len(p.index) + 16 } else { 3 };
                        self.respond(p.id, Answer::Chunk(answer), bytes);
                    }
                    if let Some(job) = self.nodes[node].waiting_job.take() {
                        self.run_job(node, job, ok);
                    }
                }
            }
        }
        self.want_transfer_tick(node);
    }

    pub(super) fn want_transfer_tick(&mut self, node: usize) {
        let busy = self.nodes[node].download.is_some() || !self.nodes[node].parked.is_empty();
        if busy && self.nodes[node].transfer_tick_at.is_none() {
            let period = micros(daemon::TRANSFER_TICK);
            let at = next_phase(self.now, self.nodes[node].phase % period, period);
            self.nodes[node].transfer_tick_at = Some(at);
            let epoch = self.nodes[node].epoch;
            self.schedule(at, Event::TransferTick { node, epoch });
        }
    }

    pub(super) fn transfer_tick(&mut self, node: usize) {
        let now = self.now;
        let parked = std::mem::take(&mut self.nodes[node].parked);
        let (expired, waiting): (Vec<Parked>, Vec<Parked>) =
            parked.into_iter().partition(|p| p.deadline <= now);
        self.nodes[node].parked = waiting;
        for p in expired {
            self.respond(p.id, Answer::Chunk(ChunkResult::NotYet), 3);
        }
        self.download_step(node, transfer::Input::Tick);
        self.want_transfer_tick(node);
    }
}
