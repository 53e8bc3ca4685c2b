//! Every scenario at small scale, in both tiers: everything delivered, every result recorded
//! exactly once, nothing lost to a partition once it heals, and tier 1 deterministic.

use std::time::Duration;

use simulations::{
    metrics::Summary,
    network::{Latency, LossModel, NetworkModel},
    scenario::{Scenario, Workload},
    tier1::Tier1,
    tier2::Tier2,
};

const TIER1_NODES: usize = 300;
const TIER2_NODES: usize = 20;

fn tier1(scenario: Scenario, network: NetworkModel, seed: u64) -> Summary {
    let mut workload = Workload::new(scenario, TIER1_NODES);
    workload.file_bytes = 4 << 20;
    tier1_report(workload, network, seed).summary()
}

/// Everything delivered and every expected result recorded once, none failed or unreachable.
fn assert_complete(s: &Summary) {
    let what = format!("tier {} {} on {} nodes: {s:?}", s.tier, s.scenario, s.nodes);
    assert!(s.targets > 0, "{what}");
    assert_eq!(s.delivery, 1.0, "delivery, {what}");
    assert_eq!(s.results_recorded, s.expected_results, "results, {what}");
    assert_eq!(s.unreachable, 0, "unreachable, {what}");
    assert_eq!(s.failed, 0, "failed, {what}");
    if s.tier == 1 {
        // Results that arrive twice (a resend crossing its ack) are recognised, never recorded
        // again with other content.
        assert_eq!(s.conflicting_results, Some(0), "{what}");
    }
    assert!(s.results[2].is_some(), "time to 100 % of results, {what}");
}

#[test]
fn tier1_every_scenario_delivers_everything_without_loss() {
    for scenario in Scenario::ALL {
        let s = tier1(scenario, NetworkModel::default(), 7);
        assert_complete(&s);
        let workload = Workload::new(scenario, TIER1_NODES);
        assert_eq!(s.expected_results, workload.expected_results(), "{s:?}");
        if scenario == Scenario::JobWait {
            assert_waited(&s, &workload);
        }
    }
}

#[test]
fn tier1_partition_heals_and_every_result_arrives_after_it() {
    let s = tier1(Scenario::Partition, NetworkModel::default(), 3);
    assert_complete(&s);
    // The far half only gets the run once the split (5 s from the submit) is over.
    let last_have = s.have[2].expect("every target has the run");
    assert!(last_have >= 5.0, "{s:?}");
}

#[test]
fn tier1_a_partition_longer_than_failure_detection_still_loses_nothing() {
    // The far half expires at the submitter and its jobs are written off as unreachable;
    // once the split heals they run after all and their results replace the write-off.
    let mut workload = Workload::new(Scenario::Partition, TIER1_NODES);
    workload.partition_for = Duration::from_secs(90);
    let s = tier1_report(workload, NetworkModel::default(), 4).summary();
    assert_complete(&s);
    assert!(
        s.have[2].expect("every target has the run") >= 90.0,
        "{s:?}"
    );
}

#[test]
fn tier1_churn_kills_nodes_while_their_jobs_run() {
    let s = tier1(Scenario::Churn, NetworkModel::default(), 7);
    assert_complete(&s);
    // 10 % of the 299 nodes but the submitter, each killed once; some while a job ran.
    assert_eq!(s.disruptions, 30, "{s:?}");
    assert!(s.interrupted > 0, "{s:?}");
}

#[test]
fn tier1_late_nodes_get_the_run_only_after_they_join() {
    let s = tier1(Scenario::LateJoin, NetworkModel::default(), 7);
    assert_complete(&s);
    assert_joined_late(&s, 30);
    let fanout = tier1(Scenario::Fanout, NetworkModel::default(), 7);
    assert!(s.have[2] > fanout.have[2], "{s:?} {fanout:?}");
}

/// A tier 1 run of `workload` (within 600 s of simulated time).
fn tier1_report(
    workload: Workload,
    network: NetworkModel,
    seed: u64,
) -> simulations::metrics::Report {
    let scenario = workload.scenario;
    Tier1 {
        workload,
        network,
        seed,
        limit: Duration::from_secs(600),
    }
    .run()
    .unwrap_or_else(|e| panic!("tier 1 {scenario}: {e}"))
}

/// A QUERY set too large for one gossip message is gossiped in parts: every node gets it,
/// and the submitter uploads a copy to each of its gossip peers, not one per target (300
/// copies of 2.5 MB when each target got it directly). The same with loss: the parts a node missed come by gossip's
/// repair, or the whole set directly after the grace.
#[test]
fn tier1_a_query_set_past_gossips_limit_goes_in_parts() {
    for loss in [0.0, 0.01] {
        let mut workload = Workload::new(Scenario::Query, TIER1_NODES);
        workload.value_bytes = 8 * 1024;
        let set_mib = (TIER1_NODES * workload.value_bytes) as f64 / (1 << 20) as f64;
        let network = NetworkModel {
            loss,
            ..NetworkModel::default()
        };
        let s = tier1_report(workload, network, 3).summary();
        assert_complete(&s);
        let uploaded = s.submitter_upload_mib.unwrap();
        assert!(uploaded > set_mib, "{set_mib} MiB set: {s:?}");
        assert!(uploaded < 20.0 * set_mib, "{set_mib} MiB set: {s:?}");
    }
}

#[test]
fn tier1_says_when_a_disruption_did_not_happen() {
    let mut partition = Workload::new(Scenario::Partition, 50);
    partition.partition_at = Duration::from_secs(1000);
    let r = tier1_report(partition, NetworkModel::default(), 2);
    assert_eq!(r.disruptions, 0);
    assert!(
        r.notes.iter().any(|n| n.contains("never started")),
        "{:?}",
        r.notes
    );

    // Joining within 1 ms of the submit, before the gossip crosses a 20 ms link.
    let mut late = Workload::new(Scenario::LateJoin, 50);
    late.late_within = Duration::from_millis(1);
    let r = tier1_report(late, NetworkModel::default(), 2);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("missed the run's gossip")),
        "{:?}",
        r.notes
    );

    // Disruptions as meant: nothing to say.
    for scenario in [Scenario::Partition, Scenario::LateJoin, Scenario::Churn] {
        let r = tier1_report(Workload::new(scenario, 50), NetworkModel::default(), 2);
        assert!(r.disruptions > 0, "{scenario}");
        assert!(r.notes.is_empty(), "{scenario}: {:?}", r.notes);
    }
}

#[test]
fn tier1_churn_of_a_run_too_long_for_the_clock_does_not_overflow() {
    let mut workload = Workload::new(Scenario::Churn, 2);
    workload.jobs = 20_000;
    workload.job_time = Duration::from_secs(1_000_000_000);
    let s = Tier1 {
        workload,
        network: NetworkModel::default(),
        seed: 1,
        limit: Duration::from_secs(60),
    }
    .run()
    .unwrap()
    .summary();
    // Cut off at the limit, long before the first job could end.
    assert_eq!(s.results_recorded, 0, "{s:?}");
}

/// Traffic counts what the run sets off, gossip heartbeats and late acknowledgements after
/// the last result included: a fanout costs the same whether its job takes 5 ms or 3 s.
#[test]
fn tier1_traffic_does_not_depend_on_how_long_the_job_runs() {
    let traffic = |job_time| {
        let mut workload = Workload::new(Scenario::Fanout, TIER1_NODES);
        workload.job_time = job_time;
        let s = Tier1 {
            workload,
            network: NetworkModel::default(),
            seed: 3,
            limit: Duration::from_secs(600),
        }
        .run()
        .unwrap()
        .summary();
        assert_complete(&s);
        s.traffic.expect("tier 1 counts traffic")
    };
    let (short, long) = (
        traffic(Duration::from_millis(5)),
        traffic(Duration::from_secs(3)),
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 0.01 * a.max(b);
    assert!(
        close(short.messages_per_node, long.messages_per_node)
            && close(short.kib_per_node(), long.kib_per_node()),
        "{short:?} {long:?}"
    );
}

/// Traffic counts the bytes that left a node's uplink, not those still queued in it: a
/// 16 MiB file on a 1 mbit uplink for 10 s shows no more than the 1.19 MiB such an uplink
/// carries in that time (it showed 32 MiB, every chunk queued).
#[test]
fn tier1_traffic_counts_what_an_uplink_could_send() {
    let run = |limit: Duration| {
        let mut workload = Workload::new(Scenario::Files, 10);
        workload.file_bytes = 16 << 20;
        let network = NetworkModel {
            uplink: simulations::network::Bandwidth(Some(1_000_000)),
            ..NetworkModel::default()
        };
        Tier1 {
            workload,
            network,
            seed: 1,
            limit,
        }
        .run()
        .unwrap()
        .summary()
    };
    for secs in [10, 60] {
        let s = run(Duration::from_secs(secs));
        let carried = secs as f64 * 1e6 / 8.0 / (1 << 20) as f64;
        let uploaded = s.submitter_upload_mib.unwrap();
        assert!(
            uploaded <= carried && uploaded > 0.9 * carried,
            "{secs} s: {uploaded} MiB of at most {carried}"
        );
    }
}

/// The duplicate factor is copies per node and message: a QUERY gossips two messages (the run
/// and the set) and a partition has the run announced again, each time a message of its own,
/// and neither multiplies what a fanout's one message costs a node.
#[test]
fn tier1_duplicate_factor_counts_copies_of_each_message() {
    let dup = |scenario| {
        let s = tier1(scenario, NetworkModel::default(), 7);
        assert_complete(&s);
        s.traffic.expect("tier 1 counts traffic").duplicate_factor
    };
    let fanout = dup(Scenario::Fanout);
    assert!((1.0..12.0).contains(&fanout), "fanout: {fanout}");
    for scenario in [Scenario::Query, Scenario::Partition] {
        let d = dup(scenario);
        assert!(
            d >= 1.0 && d <= 1.2 * fanout,
            "{scenario}: {d} copies per node and message, fanout {fanout}"
        );
    }
}

#[test]
fn tier1_is_deterministic_for_a_seed() {
    let network = NetworkModel {
        latency: Latency::Uniform(Duration::from_millis(5), Duration::from_millis(40)),
        loss: 0.02,
        ..NetworkModel::default()
    };
    for scenario in [
        Scenario::Orchestration,
        Scenario::Churn,
        Scenario::Files,
        Scenario::Query,
        Scenario::JobWait,
    ] {
        let strip = |mut s: Summary| {
            s.wall_secs = 0.0;
            s
        };
        let a = strip(tier1(scenario, network.clone(), 11));
        let b = strip(tier1(scenario, network.clone(), 11));
        assert_eq!(a, b, "{scenario}: same seed, same result");
        let c = strip(tier1(scenario, network.clone(), 12));
        assert_ne!(a, c, "{scenario}: another seed draws another network");
    }
}

#[test]
fn tier1_loss_delays_or_drops_but_loses_nothing() {
    for loss_model in [LossModel::Retransmit, LossModel::Drop] {
        let network = NetworkModel {
            loss: 0.05,
            loss_model,
            ..NetworkModel::default()
        };
        for scenario in [
            Scenario::Fanout,
            Scenario::Orchestration,
            Scenario::Files,
            Scenario::Query,
            Scenario::JobWait,
        ] {
            assert_complete(&tier1(scenario, network.clone(), 5));
        }
    }
}

fn tier2(scenario: Scenario, tune: impl FnOnce(&mut Workload)) -> Summary {
    tier2_on(TIER2_NODES, scenario, tune)
}

fn tier2_on(nodes: usize, scenario: Scenario, tune: impl FnOnce(&mut Workload)) -> Summary {
    tier2_linked(nodes, scenario, None, tune)
}

fn tier2_linked(
    nodes: usize,
    scenario: Scenario,
    link: Option<mesh::LinkShape>,
    tune: impl FnOnce(&mut Workload),
) -> Summary {
    let mut workload = Workload::new(scenario, nodes);
    tune(&mut workload);
    Tier2 {
        workload,
        link,
        limit: Duration::from_secs(120),
    }
    .run()
    .unwrap_or_else(|e| panic!("tier 2 {scenario}: {e}"))
    .summary()
}

#[test]
fn tier2_fanout() {
    let s = tier2(Scenario::Fanout, |_| {});
    assert_complete(&s);
    assert_eq!(s.expected_results, TIER2_NODES);
    assert!(s.rss_kib_per_node.is_some_and(|k| k > 0.0), "{s:?}");
    // The daemon counts only the file bytes it serves: no upload is measured here.
    assert_eq!(s.submitter_upload_mib, None, "{s:?}");
}

#[test]
fn tier2_orchestration() {
    let s = tier2(Scenario::Orchestration, |w| w.jobs = 20);
    assert_complete(&s);
    assert_eq!(s.expected_results, TIER2_NODES * 20);
}

#[test]
fn tier2_files() {
    let s = tier2(Scenario::Files, |w| w.file_bytes = 3 << 20);
    assert_complete(&s);
    // The submitter serves its file to a few nodes, not to all of them.
    let upload = s
        .submitter_upload_mib
        .expect("tier 2 counts the file bytes served");
    assert!(upload >= 3.0, "{s:?}");
    assert!(upload < 3.0 * (TIER2_NODES / 2) as f64, "{s:?}");
}

/// Each node's QUERY job ends only once the set of every node's value has reached it.
#[test]
fn tier2_query() {
    let s = tier2(Scenario::Query, |_| {});
    assert_complete(&s);
    assert_eq!(s.expected_results, TIER2_NODES * 2);
}

/// The same with values of 64 KiB: a set of 1.3 MB, gossiped in parts that every node puts
/// together. (Nodes that could not would still finish, with the direct copies 4 s later:
/// tests/tests/misbehaving_member.rs checks that a target takes the parts.)
#[test]
fn tier2_query_of_a_set_past_gossips_limit() {
    let s = tier2(Scenario::Query, |w| w.value_bytes = 64 * 1024);
    assert_complete(&s);
    assert_eq!(s.expected_results, TIER2_NODES * 2);
}

/// Every node's JOB_WAIT ends only once the awaited job has finished on its node (which
/// runs it for half a second): none of them before.
#[test]
fn tier2_job_wait() {
    let s = tier2(Scenario::JobWait, |_| {});
    assert_complete(&s);
    assert_eq!(s.expected_results, TIER2_NODES + 1);
    assert_waited(&s, &Workload::new(Scenario::JobWait, TIER2_NODES));
}

/// `job-wait`: no result came before the awaited job could have finished.
fn assert_waited(s: &Summary, w: &Workload) {
    let first = s.first_result.expect("results came");
    assert!(
        first >= w.job_time.as_secs_f64(),
        "a result came at {first} s, before the awaited job could end: {s:?}"
    );
}

#[test]
fn tier2_churn() {
    let s = tier2(Scenario::Churn, |w| {
        w.churn = 0.2;
        w.downtime = Duration::from_secs(1);
    });
    assert_complete(&s);
    assert_eq!(s.expected_results, TIER2_NODES * 10);
    // 20 % of the 19 nodes but the submitter were killed (and came back).
    assert_eq!(s.disruptions, 4, "{s:?}");
}

#[test]
fn tier2_late_join() {
    let s = tier2(Scenario::LateJoin, |w| {
        w.late = 0.2;
        w.late_within = Duration::from_secs(2);
    });
    assert_complete(&s);
    assert_eq!(s.expected_results, TIER2_NODES * 10);
    assert_joined_late(&s, 4);
}

/// `late-join`: `late` nodes joined after the submit, and the last of them ran its job only
/// after it joined (it missed the gossip, and got the run later).
fn assert_joined_late(s: &Summary, late: usize) {
    assert_eq!(s.disruptions, late, "{s:?}");
    let joined = s.last_join.expect("a late node joined");
    assert!(
        joined > 0.1,
        "the last late node joined at {joined} s: {s:?}"
    );
    let last_have = s.have[2].expect("every target has the run");
    assert!(last_have >= joined - 0.01, "{s:?}");
}

#[test]
fn tier2_partition_heals_and_every_result_arrives_after_it() {
    let s = tier2(Scenario::Partition, |w| {
        w.partition_for = Duration::from_secs(3)
    });
    assert_complete(&s);
    // The far half can only have the run once the split (3 s from the submit) is over.
    let last_have = s.have[2].expect("every target has the run");
    assert!(last_have >= 3.0, "{s:?}");
}

#[test]
fn tier2_a_partition_longer_than_failure_detection_heals() {
    // Ten nodes: a heartbeat a second, so the far half expires at the submitter after 3 s of
    // the 6 s split; the halves reconnect afterwards and every result still arrives.
    let s = tier2_on(10, Scenario::Partition, |w| {
        w.partition_for = Duration::from_secs(6)
    });
    assert_complete(&s);
    assert!(s.have[2].expect("every target has the run") >= 6.0, "{s:?}");
}

#[test]
fn tier2_links_with_latency_and_loss_deliver_everything_later() {
    let link =
        Latency::Uniform(Duration::from_millis(20), Duration::from_millis(30)).link_shape(0.02);
    let s = tier2_linked(TIER2_NODES, Scenario::Orchestration, Some(link), |w| {
        w.jobs = 10
    });
    assert_complete(&s);
    // Nothing reaches a target sooner than one link's latency after the submit.
    let first = s.have[0].expect("half the targets have the run");
    assert!(first >= 0.02, "{s:?}");
}
