//! What a run measured, and how it is shown: one [`Report`] per run, summarised as a
//! [`Summary`] row for the table on stdout and the CSV file.

use std::{fmt::Write as _, time::Duration};

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

/// Raw measurements of one run. Times are seconds after the submit.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub tier: u8,
    pub scenario: String,
    pub nodes: usize,
    /// Tier 1 only: the seed of the network model.
    pub seed: Option<u64>,
    pub network: String,
    /// Nodes that must run something.
    pub targets: usize,
    /// (job, node) results the submitter must record.
    pub expected_results: usize,
    /// When each target that got the run had it queued.
    pub have_job: Vec<f64>,
    /// When the submitter knew each target had it (an ack, a delivery reply or a result).
    pub acked: Vec<f64>,
    /// When each expected result was first recorded at the submitter.
    pub results: Vec<f64>,
    /// Expected results still reported unreachable at the end.
    pub unreachable: usize,
    /// Recorded results that say the job failed on its target, for a reason other than:
    pub failed: usize,
    /// a kill of its target while the job was queued or running (`churn`): the restarted
    /// node reports it failed ("interrupted") rather than run it twice.
    pub interrupted: usize,
    /// Results that reached the submitter again after it had recorded them.
    pub repeated_results: usize,
    /// Expected results recorded more than once with different content (must stay 0).
    pub conflicting_results: usize,
    /// Whether the tier counts messages, bytes and gossip copies (tier 1 does; tier 2's
    /// memory transport does not), and sees results that arrive twice (tier 1 only).
    pub traffic_measured: bool,
    /// Per node: messages, payload bytes and framing bytes sent.
    pub messages: Vec<u64>,
    pub payload_bytes: Vec<u64>,
    pub overhead_bytes: Vec<u64>,
    /// Copies of gossiped messages received by live nodes, duplicates included. Each gossiped
    /// version is a message of its own: the run's announce, each announce again (a new
    /// round), and each QUERY set.
    pub gossip_received: u64,
    /// First receipts: each (node, message) pair counted once, for every message a node
    /// received at least once (its publisher's own copy is no receipt).
    /// `gossip_received / gossip_first_receipts` is the duplicate factor: copies a node
    /// receives of each message.
    pub gossip_first_receipts: u64,
    /// What the submitter uploaded, where the tier measures it (`None` where it does not):
    /// tier 1, everything it sent (messages and framing); tiers 2 and 3, the file bytes it
    /// served (the `files` scenario only: the daemon counts no other upload).
    pub submitter_upload: Option<u64>,
    /// Disruptions that took place: kills (`churn`), late joins (`late-join`) and splits
    /// (`partition`).
    pub disruptions: usize,
    /// `late-join`: when the last late node joined.
    pub last_join: Option<f64>,
    /// What the operator should know about the run (e.g. a disruption that never happened),
    /// printed as warnings.
    pub notes: Vec<String>,
    /// Tier 2 only: resident memory of the process per node.
    pub rss_per_node: Option<u64>,
    pub wall: Duration,
    /// Tier 1 only: events processed.
    pub events: u64,
}

/// Time by which `fraction` of `total` entries had happened, if they did.
pub fn time_to(times: &[f64], fraction: f64, total: usize) -> Option<f64> {
    if total == 0 {
        return Some(0.0);
    }
    let needed = ((fraction * total as f64).ceil() as usize).clamp(1, total);
    if times.len() < needed {
        return None;
    }
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(sorted[needed - 1])
}

/// One row of the table and of the CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub tier: u8,
    pub scenario: String,
    pub nodes: usize,
    pub seed: Option<u64>,
    pub network: String,
    pub targets: usize,
    pub delivery: f64,
    pub have: [Option<f64>; 3],
    pub acked: [Option<f64>; 3],
    pub results: [Option<f64>; 3],
    /// When the first result came.
    pub first_result: Option<f64>,
    pub results_recorded: usize,
    pub expected_results: usize,
    pub unreachable: usize,
    pub failed: usize,
    pub interrupted: usize,
    /// Tier 1 only (`None` where the tier cannot see it).
    pub repeated_results: Option<usize>,
    pub conflicting_results: Option<usize>,
    pub traffic: Option<Traffic>,
    /// `None` where the tier does not measure it (see [`Report::submitter_upload`]).
    pub submitter_upload_mib: Option<f64>,
    pub rss_kib_per_node: Option<f64>,
    pub wall_secs: f64,
    /// Tier 1 only: events processed (`None`, an empty CSV cell, in the tiers of real nodes).
    pub events: Option<u64>,
    /// Disruptions that took place, and when the last late node joined (`late-join`).
    pub disruptions: usize,
    pub last_join: Option<f64>,
}

/// Messages and bytes per node, and how many copies of each gossiped message a node received.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    pub messages_per_node: f64,
    pub payload_kib_per_node: f64,
    pub overhead_kib_per_node: f64,
    pub max_kib_node: f64,
    /// Copies received per node per gossiped message: every copy any node received of any
    /// message (the run's announce, each announce again, each QUERY set), over the (node,
    /// message) pairs where the node received that message at least once. 1.0 is a message
    /// that reached each node once; 0 where nothing was gossiped.
    pub duplicate_factor: f64,
}

impl Traffic {
    pub fn kib_per_node(&self) -> f64 {
        self.payload_kib_per_node + self.overhead_kib_per_node
    }
}

const FRACTIONS: [f64; 3] = [0.5, 0.99, 1.0];

impl Report {
    pub fn summary(&self) -> Summary {
        let at = |times: &[f64], total: usize| FRACTIONS.map(|f| time_to(times, f, total));
        let n = self.messages.len().max(1) as f64;
        let kib = |v: &[u64]| v.iter().sum::<u64>() as f64 / 1024.0 / n;
        let max_node = (0..self.messages.len())
            .map(|i| self.payload_bytes[i] + self.overhead_bytes[i])
            .max()
            .unwrap_or(0);
        Summary {
            tier: self.tier,
            scenario: self.scenario.clone(),
            nodes: self.nodes,
            seed: self.seed,
            network: self.network.clone(),
            targets: self.targets,
            delivery: if self.targets == 0 {
                1.0
            } else {
                self.have_job.len() as f64 / self.targets as f64
            },
            have: at(&self.have_job, self.targets),
            acked: at(&self.acked, self.targets),
            results: at(&self.results, self.expected_results),
            first_result: self.results.iter().copied().min_by(f64::total_cmp),
            results_recorded: self.results.len(),
            expected_results: self.expected_results,
            unreachable: self.unreachable,
            failed: self.failed,
            interrupted: self.interrupted,
            repeated_results: self.traffic_measured.then_some(self.repeated_results),
            conflicting_results: self.traffic_measured.then_some(self.conflicting_results),
            traffic: self.traffic_measured.then(|| Traffic {
                messages_per_node: self.messages.iter().sum::<u64>() as f64 / n,
                payload_kib_per_node: kib(&self.payload_bytes),
                overhead_kib_per_node: kib(&self.overhead_bytes),
                max_kib_node: max_node as f64 / 1024.0,
                duplicate_factor: if self.gossip_first_receipts == 0 {
                    0.0
                } else {
                    self.gossip_received as f64 / self.gossip_first_receipts as f64
                },
            }),
            submitter_upload_mib: self.submitter_upload.map(|b| b as f64 / (1 << 20) as f64),
            rss_kib_per_node: self.rss_per_node.map(|b| b as f64 / 1024.0),
            wall_secs: self.wall.as_secs_f64(),
            events: (self.tier == 1).then_some(self.events),
            disruptions: self.disruptions,
            last_join: self.last_join,
        }
    }
}

fn dash() -> String {
    "-".into()
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |s| format!("{s:.3}"))
}

/// The summaries as a table for a terminal.
pub fn table(rows: &[Summary]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "tier",
        "scenario",
        "nodes",
        "delivered",
        "have job 50/99/100% (s)",
        "results 50/99/100% (s)",
        "results",
        "msgs/node",
        "KiB/node (payload+overhead)",
        "dup",
        "submitter MiB",
        "RSS/node",
        "wall",
    ]);
    for r in rows {
        let triple =
            |v: &[Option<f64>; 3]| format!("{} / {} / {}", secs(v[0]), secs(v[1]), secs(v[2]));
        t.add_row(vec![
            Cell::new(r.tier),
            Cell::new(&r.scenario),
            Cell::new(r.nodes).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.1}%", r.delivery * 100.0)),
            Cell::new(triple(&r.have)),
            Cell::new(triple(&r.results)),
            Cell::new(format!(
                "{}/{}{}",
                r.results_recorded,
                r.expected_results,
                {
                    let notes: Vec<String> = [
                        (r.unreachable, "unreachable"),
                        (r.failed, "failed"),
                        (r.interrupted, "interrupted"),
                    ]
                    .iter()
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, what)| format!("{n} {what}"))
                    .collect();
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", notes.join(", "))
                    }
                }
            )),
            Cell::new(
                r.traffic
                    .as_ref()
                    .map_or_else(dash, |t| format!("{:.1}", t.messages_per_node)),
            ),
            Cell::new(r.traffic.as_ref().map_or_else(dash, |t| {
                format!(
                    "{:.1} + {:.1}",
                    t.payload_kib_per_node, t.overhead_kib_per_node
                )
            })),
            Cell::new(
                r.traffic
                    .as_ref()
                    .map_or_else(dash, |t| format!("{:.2}", t.duplicate_factor)),
            ),
            Cell::new(
                r.submitter_upload_mib
                    .map_or_else(dash, |m| format!("{m:.2}")),
            ),
            Cell::new(
                r.rss_kib_per_node
                    .map_or_else(|| "-".into(), |k| format!("{:.0} KiB", k)),
            ),
            Cell::new(format!("{:.1}s", r.wall_secs)),
        ]);
    }
    t.to_string()
}

pub const CSV_HEADER: &str = "tier,scenario,nodes,seed,network,targets,delivery,\
have_p50_s,have_p99_s,have_p100_s,acked_p50_s,acked_p99_s,acked_p100_s,\
results_p50_s,results_p99_s,results_p100_s,results_recorded,expected_results,unreachable,failed,interrupted,\
repeated_results,conflicting_results,messages_per_node,payload_kib_per_node,\
overhead_kib_per_node,max_kib_node,duplicate_factor,submitter_upload_mib,rss_kib_per_node,\
wall_s,events";

/// The summaries as CSV (with its header).
pub fn csv(rows: &[Summary]) -> String {
    let opt = |v: Option<f64>| v.map_or_else(String::new, |s| format!("{s:.4}"));
    let count = |v: Option<usize>| v.map_or_else(String::new, |c| c.to_string());
    let traffic = |f: fn(&Traffic) -> f64, r: &Summary| {
        r.traffic
            .as_ref()
            .map_or_else(String::new, |t| format!("{:.3}", f(t)))
    };
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},\"{}\",{},{:.4},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3},{}",
            r.tier,
            r.scenario,
            r.nodes,
            r.seed.map_or_else(String::new, |s| s.to_string()),
            r.network,
            r.targets,
            r.delivery,
            opt(r.have[0]),
            opt(r.have[1]),
            opt(r.have[2]),
            opt(r.acked[0]),
            opt(r.acked[1]),
            opt(r.acked[2]),
            opt(r.results[0]),
            opt(r.results[1]),
            opt(r.results[2]),
            r.results_recorded,
            r.expected_results,
            r.unreachable,
            r.failed,
            r.interrupted,
            count(r.repeated_results),
            count(r.conflicting_results),
            traffic(|t| t.messages_per_node, r),
            traffic(|t| t.payload_kib_per_node, r),
            traffic(|t| t.overhead_kib_per_node, r),
            traffic(|t| t.max_kib_node, r),
            traffic(|t| t.duplicate_factor, r),
            r.submitter_upload_mib
                .map_or_else(String::new, |m| format!("{m:.3}")),
            r.rss_kib_per_node
                .map_or_else(String::new, |k| format!("{k:.0}")),
            r.wall_secs,
            r.events.map_or_else(String::new, |e| e.to_string()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_not_measured_is_shown_as_such() {
        let measured = |upload| {
            Report {
                submitter_upload: upload,
                ..Report::default()
            }
            .summary()
        };
        let rows = [measured(None), measured(Some(3 << 20))];
        let csv = csv(&rows);
        let column = CSV_HEADER
            .split(',')
            .position(|h| h == "submitter_upload_mib")
            .unwrap();
        let cells: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(column).unwrap())
            .collect();
        assert_eq!(cells, ["", "3.000"]);
        // Not measured is "-", not the 0.00 of an upload measured as nothing.
        let zeros = |upload| table(&[measured(upload)]).matches("0.00").count();
        assert_eq!(zeros(None) + 1, zeros(Some(0)));
    }

    /// Tier 1 counts the events it simulated; the tiers of real nodes have none to count: their
    /// cell is empty, not a 0 that reads as "nothing happened".
    #[test]
    fn events_are_counted_in_tier_1_only() {
        let row = |tier| {
            Report {
                tier,
                events: if tier == 1 { 42 } else { 0 },
                ..Report::default()
            }
            .summary()
        };
        let csv = csv(&[row(1), row(2), row(3)]);
        let column = CSV_HEADER.split(',').position(|h| h == "events").unwrap();
        let cells: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(column).unwrap())
            .collect();
        assert_eq!(cells, ["42", "", ""]);
    }

    #[test]
    fn the_duplicate_factor_is_copies_per_first_receipt() {
        let factor = |received, first_receipts| {
            Report {
                traffic_measured: true,
                gossip_received: received,
                gossip_first_receipts: first_receipts,
                ..Report::default()
            }
            .summary()
            .traffic
            .unwrap()
            .duplicate_factor
        };
        assert_eq!(factor(12, 4), 3.0);
        // Nothing gossiped (a run too big for gossip goes directly).
        assert_eq!(factor(0, 0), 0.0);
    }

    #[test]
    fn time_to_counts_against_the_total_not_what_arrived() {
        let times = [0.3, 0.1, 0.2];
        assert_eq!(time_to(&times, 0.5, 3), Some(0.2));
        assert_eq!(time_to(&times, 1.0, 3), Some(0.3));
        // Four expected, three arrived: 100 % never happened.
        assert_eq!(time_to(&times, 1.0, 4), None);
        assert_eq!(time_to(&times, 0.75, 4), Some(0.3));
    }
}
