//! Faults in tier 1: nodes killed and restarted (keeping what the daemon keeps on disk),
//! and how the submitter sees them go and come back.

use coordination::{
    acknowledgement::Acknowledgement,
    job_wait::{Registrations, Waits},
    outbox::{self, Outbox},
};

use super::{Done, Event, Sim, daemon};

impl Sim {
    /// A node the submitter had written off is reachable again: its next presence heartbeat
    /// (one heartbeat interval of this mesh size) tells the submitter.
    pub(super) fn heard_again(&mut self, node: usize) {
        if self.written_off[node] {
            let at = self.now + self.expiry / u64::from(daemon::EXPIRY_INTERVALS);
            self.schedule(at, Event::Back { node });
        }
    }

    pub(super) fn suspect(&mut self, node: usize) {
        self.down_since[node] = Some(self.now);
        let at = self.now + self.expiry;
        self.schedule(at, Event::Suspect { node });
    }

    pub(super) fn kill(&mut self, node: usize) {
        if !self.nodes[node].alive {
            return;
        }
        // What its uplink still held never leaves.
        let unsent = self.backlog(node);
        Sim::unsend((&mut self.payload[node], &mut self.overhead[node]), unsent);
        let now = self.now;
        let n = &mut self.nodes[node];
        n.alive = false;
        n.killed_at.push(now);
        n.epoch += 1;
        n.queue.clear();
        n.ack = Acknowledgement::default();
        n.running = None;
        n.outbox = Outbox::new();
        n.download = None;
        n.waiting_job = None;
        n.query_waiting = None;
        n.query_ran = false;
        n.waits = Waits::default();
        n.wait_running = None;
        n.registrations = Registrations::default();
        n.parked.clear();
        n.dont_want.clear();
        n.heartbeat_at = None;
        n.runs_tick_at = None;
        n.transfer_tick_at = None;
        n.store_group_ends = 0;
        n.uplink_free = self.now;
        if self.down_since[node].is_none() {
            self.suspect(node);
        }
    }

    /// A node starts (a restart, or a late join): what it kept on disk is picked up again.
    pub(super) fn start(&mut self, node: usize) {
        if self.nodes[node].alive {
            return;
        }
        self.nodes[node].alive = true;
        // Waits on it register again (it forgot them), as the daemon does on seeing it back.
        if self.wait_job.is_some() {
            let now = self.instant();
            let back = self.ids[node].clone();
            for waiter in 0..self.nodes.len() {
                if waiter != node
                    && self.nodes[waiter].alive
                    && !self.nodes[waiter].waits.is_empty()
                {
                    let actions = self.nodes[waiter].waits.node_back(&back, now);
                    self.wait_actions(waiter, actions);
                }
            }
        }
        self.nodes[node].uplink_free = self.now;
        if !self.crosses_partition(node, self.submitter) {
            self.down_since[node] = None;
            self.heard_again(node);
            if !self.written_off[node] && node != self.submitter {
                let at = self.now + self.latency();
                self.schedule(at, Event::Restarted { node });
            }
        }
        let now = self.instant();
        for result in self.nodes[node].undelivered.clone() {
            let input = outbox::Input::Restored {
                to: self.ids[self.submitter].clone(),
                result,
                age: std::time::Duration::ZERO,
            };
            let actions = self.nodes[node].outbox.handle(input, now);
            self.outbox_actions(node, actions);
        }
        if self.nodes[node].accepted {
            let pending: Vec<usize> = self.work[node]
                .iter()
                .copied()
                .filter(|j| !self.nodes[node].finished.contains(j))
                .collect();
            let epoch = self.nodes[node].epoch;
            for job in pending {
                self.nodes[node].running = Some(job);
                self.job_done(node, epoch, job, Done::Interrupted);
            }
        }
    }
}
