//! Tier 3 at small scale: real daemons (the `directord-mesh` binary next to the tests, which
//! `cargo test --workspace` builds), every scenario; the partition in network namespaces
//! (root). Everything delivered, every result recorded once.

use std::time::Duration;

use simulations::{
    metrics::Summary,
    scenario::{Scenario, Workload},
    tier3::{self, Tier3},
};

const NODES: usize = 6;

fn tier3(scenario: Scenario, netns: bool, tune: impl FnOnce(&mut Workload)) -> Summary {
    let mut workload = Workload::new(scenario, NODES);
    tune(&mut workload);
    Tier3 {
        workload,
        binary: tier3::default_binary()
            .expect("the directord-mesh binary is built (cargo build -p directord-mesh)"),
        netns,
        latency: None,
        loss: 0.0,
        limit: Duration::from_secs(120),
    }
    .run()
    .unwrap_or_else(|e| panic!("tier 3 {scenario}: {e}"))
    .summary()
}

/// Everything delivered, `jobs` results from each node.
fn assert_complete(s: &Summary, jobs: usize) {
    assert_complete_with(s, NODES * jobs);
}

fn assert_complete_with(s: &Summary, expected_results: usize) {
    let what = format!("tier 3 {} on {} nodes: {s:?}", s.scenario, s.nodes);
    assert_eq!(s.tier, 3, "{what}");
    assert_eq!(s.targets, NODES, "{what}");
    assert_eq!(s.delivery, 1.0, "delivery, {what}");
    assert_eq!(s.expected_results, expected_results, "{what}");
    assert_eq!(s.results_recorded, s.expected_results, "results, {what}");
    assert_eq!(s.unreachable, 0, "unreachable, {what}");
    assert_eq!(s.failed, 0, "failed, {what}");
    assert!(s.results[2].is_some(), "time to 100 % of results, {what}");
    assert!(s.rss_kib_per_node.is_some_and(|k| k > 0.0), "{what}");
}

#[test]
fn tier3_fanout_orchestration_query_job_wait_and_files_on_loopback() {
    assert_complete(&tier3(Scenario::Fanout, false, |_| {}), 1);
    assert_complete(&tier3(Scenario::Orchestration, false, |w| w.jobs = 20), 20);
    assert_complete(&tier3(Scenario::Query, false, |_| {}), 2);
    // The awaited job runs on one node for 0.5 s; every node's JOB_WAIT waits for it.
    let s = tier3(Scenario::JobWait, false, |_| {});
    assert_complete_with(&s, NODES + 1);
    let first = s.first_result.expect("results came");
    assert!(
        first >= 0.5,
        "a result came at {first} s, before the awaited job: {s:?}"
    );
    let s = tier3(Scenario::Files, false, |w| w.file_bytes = 3 << 20);
    assert_complete(&s, 1);
    // The submitter serves its file to a few nodes, not to all of them.
    assert!(
        s.submitter_upload_mib
            .is_some_and(|mib| (3.0..3.0 * 5.0).contains(&mib)),
        "{s:?}"
    );
}

#[test]
fn tier3_churn_and_late_join_lose_nothing() {
    let s = tier3(Scenario::Churn, false, |w| {
        w.churn = 0.4;
        w.downtime = Duration::from_secs(1);
    });
    assert_complete(&s, 10);
    // Nodes were killed (and came back): the run did not pass for want of churn.
    assert!(s.disruptions > 0, "{s:?}");
    let s = tier3(Scenario::LateJoin, false, |w| {
        w.late = 0.4;
        w.late_within = Duration::from_secs(2);
    });
    assert_complete(&s, 10);
    // Nodes joined after the submit, and the last of them had the run only once it joined.
    assert!(s.disruptions > 0, "{s:?}");
    let joined = s.last_join.expect("a late node joined");
    let last_have = s.have[2].expect("every target has the run");
    assert!(last_have >= joined - 0.01, "{s:?}");
}

#[test]
fn tier3_a_partition_between_namespaces_heals_and_loses_nothing() {
    // Longer than failure detection (three 1 s heartbeats): the far half is written off at
    // the submitter meanwhile, and its results replace the write-offs after the heal.
    let s = tier3(Scenario::Partition, true, |w| {
        w.partition_for = Duration::from_secs(5)
    });
    assert_complete(&s, 10);
    assert!(s.have[2].expect("every target has the run") >= 5.0, "{s:?}");
}
