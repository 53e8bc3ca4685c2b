use jobs::{Fingerprint, JobSpec, ParseOutcome, executor::QueueKind};

use super::*;
use crate::message::{JobEntry, Parent};

fn node(n: &str) -> NodeId {
    NodeId(n.to_string())
}

fn run(targets: &[&str], jobs: usize, only_on: Option<&str>) -> Run {
    let spec = match JobSpec::parse("RUN", "true", &Default::default()).unwrap() {
        ParseOutcome::Spec(s) => s,
        ParseOutcome::Help(_) => unreachable!(),
    };
    Run::new(
        "r1",
        node("me"),
        vec![Parent {
            parent_id: "p1".into(),
            fingerprint: Fingerprint([0; 32]),
            queue: QueueKind::Sync,
            targets: targets.iter().map(|t| node(t)).collect(),
            target_keys: Default::default(),
            jobs: (0..jobs)
                .map(|i| JobEntry {
                    job_id: format!("j{i}"),
                    fingerprint: spec.fingerprint(),
                    spec: spec.clone(),
                    only_on: only_on.map(node),
                })
                .collect(),
        }],
    )
}

fn acked(n: &str) -> Input {
    Input::Acked {
        run_id: "r1".into(),
        node: node(n),
    }
}

fn result(job: &str, n: &str) -> Input {
    Input::Result {
        run_id: "r1".into(),
        job_id: job.into(),
        node: node(n),
    }
}

#[test]
fn few_targets_get_direct_delivery_many_get_gossip() {
    let now = Instant::now();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    let a = o.handle(Input::Submit(run(&["me", "a", "b"], 1, None)), now);
    assert!(matches!(a[0], Action::DeliverLocal(_)));
    assert_eq!(
        a.iter()
            .filter(|x| matches!(x, Action::Deliver { .. }))
            .count(),
        2
    );
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    let mut r = run(&["a", "b", "c"], 1, None);
    r.run_id = "r2".into();
    let a = o.handle(Input::Submit(r), now);
    assert_eq!(a.len(), 1);
    assert!(matches!(a[0], Action::Announce(_)));
}

/// A target cut off from this node but alive through others (a partial partition) is
/// never reached by direct deliveries: the run is announced after a while, once.
#[test]
fn a_direct_run_not_acknowledged_is_announced_once() {
    let t0 = Instant::now();
    let config = OriginatorConfig::default();
    let after = config.announce_direct_after;
    let mut o = Originator::new(node("me"), config.clone());
    o.handle(Input::Submit(run(&["a", "b"], 1, None)), t0);
    o.handle(acked("a"), t0);
    let announces = |a: &[Action]| -> Vec<u32> {
        a.iter()
            .filter_map(|x| match x {
                Action::Announce(run) => Some(run.round),
                _ => None,
            })
            .collect()
    };
    let before = without_checks(o.handle(Input::Tick, t0 + after - Duration::from_millis(1)));
    assert!(announces(&before).is_empty(), "{before:?}");
    let a = o.handle(Input::Tick, t0 + after);
    assert_eq!(announces(&a), vec![1], "{a:?}");
    for s in 3..60 {
        let a = o.handle(Input::Tick, t0 + Duration::from_secs(s));
        assert!(announces(&a).is_empty(), "{s} s: {a:?}");
    }
    // Every target acknowledged in time: nothing is gossiped.
    let mut o = Originator::new(node("me"), config);
    o.handle(Input::Submit(run(&["a", "b"], 1, None)), t0);
    for n in ["a", "b"] {
        o.handle(acked(n), t0);
    }
    for s in 0..60 {
        let a = o.handle(Input::Tick, t0 + Duration::from_secs(s));
        assert!(announces(&a).is_empty(), "{s} s: {a:?}");
    }
}

/// Of a large run, a target sent it directly (resumed after a restart, or back after
/// one) is never answered with a gossip of the whole run, which every other target would
/// check and acknowledge again; a small run whose targets all acknowledged keeps no
/// deadline that would gossip it at once when a target is back later.
#[test]
fn only_a_small_run_is_announced_after_a_direct_delivery() {
    let t0 = Instant::now();
    let config = OriginatorConfig::default();
    let after = config.announce_direct_after;
    let announced = |a: &[Action]| a.iter().any(|x| matches!(x, Action::Announce(_)));
    let mut o = Originator::new(node("me"), config.clone());
    o.handle(
        Input::Resume {
            run: run(&["a", "b", "c", "d", "e"], 1, None),
            acked: ["a", "b", "c", "d"].map(node).to_vec(),
            reported: vec![],
            written_off: vec![],
            queued_here: HashSet::new(),
        },
        t0,
    );
    for s in 0..60 {
        let a = o.handle(Input::Tick, t0 + Duration::from_secs(s));
        assert!(!announced(&a), "{s} s: {a:?}");
    }
    // A small run: b acknowledged it, then was written off. Back a minute later, it is sent
    // nothing: it has the run on disk.
    let mut o = Originator::new(node("me"), config);
    o.handle(Input::Submit(run(&["a", "b"], 1, None)), t0);
    o.handle(acked("b"), t0);
    o.handle(Input::NodeGone(node("b")), t0);
    o.handle(acked("a"), t0);
    let back = t0 + Duration::from_secs(60);
    assert!(o.handle(Input::NodeBack(node("b")), back).is_empty());
    for s in 0..10 {
        let a = o.handle(Input::Tick, back + Duration::from_secs(s));
        assert!(without_checks(a.clone()).is_empty(), "{s} s: {a:?}");
    }
    // a was written off before it acknowledged: back, it is resent the run, and gossiped
    // only if it does not acknowledge within the deadline (the submission's went when
    // every target had acknowledged or gone).
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&["a", "b"], 1, None)), t0);
    o.handle(acked("b"), t0);
    o.handle(Input::NodeGone(node("a")), t0);
    assert!(o.handle(Input::NodeBack(node("a")), back).is_empty());
    let a = without_checks(o.handle(Input::Tick, back));
    assert!(
        matches!(&a[..], [Action::Deliver { node: n, .. }] if *n == node("a")),
        "{a:?}"
    );
    let a = o.handle(Input::Tick, back + after - Duration::from_millis(1));
    assert!(!announced(&a), "{a:?}");
    let a = o.handle(Input::Tick, back + after);
    assert!(announced(&a), "{a:?}");
    // A target gone before its deadline takes the deadline with it: back much later, it
    // gets its own.
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&["a", "b"], 1, None)), t0);
    o.handle(acked("b"), t0);
    o.handle(Input::NodeGone(node("a")), t0 + after / 2);
    let back = t0 + Duration::from_secs(40);
    o.handle(Input::NodeBack(node("a")), back);
    let a = o.handle(Input::Tick, back + after - Duration::from_millis(1));
    assert!(!announced(&a), "{a:?}");
    let a = o.handle(Input::Tick, back + after);
    assert!(announced(&a), "{a:?}");
}

#[test]
fn a_target_that_said_goodbye_is_written_off_only_if_not_back_in_time() {
    let t0 = Instant::now();
    let grace = OriginatorConfig::default().left_grace;
    let written_off = |a: &[Action], n: &str| {
        a.iter()
            .any(|x| matches!(x, Action::Unreachable { node: gone, .. } if *gone == node(n)))
    };
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&["a", "b"], 2, None)), t0);
    for n in ["a", "b"] {
        o.handle(acked(n), t0);
    }
    // a restarts: it says goodbye and is back three seconds later. Neither the ticks nor
    // the check of who is alive after the submission write it off meanwhile.
    let s = Duration::from_secs(1);
    assert!(o.handle(Input::NodeLeft(node("a")), t0 + s).is_empty());
    let a = o.handle(Input::Tick, t0 + 2 * s);
    let check = check_in(&a).expect("a check is asked");
    let a = o.handle(alive(check, &["b"]), t0 + 2 * s);
    assert!(!written_off(&a, "a"), "{a:?}");
    // Back without its jobs written off: it acknowledged, so it has the run on disk and
    // takes its jobs up again; nothing is sent.
    assert!(o.handle(Input::NodeBack(node("a")), t0 + 4 * s).is_empty());
    for at in [5, 20, 40] {
        let a = o.handle(Input::Tick, t0 + at * s);
        assert!(!written_off(&a, "a"), "{at} s: {a:?}");
    }
    // b stops for good: written off once its grace has passed.
    o.handle(Input::NodeLeft(node("b")), t0 + 50 * s);
    let a = o.handle(Input::Tick, t0 + 50 * s + grace - Duration::from_millis(1));
    assert!(!written_off(&a, "b"), "{a:?}");
    let a = o.handle(Input::Tick, t0 + 50 * s + grace);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Unreachable { node: n, job_ids, .. }
            if *n == node("b") && job_ids.len() == 2)),
        "{a:?}"
    );
    // A target that went silent is written off at once, as before.
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&["a"], 1, None)), t0);
    let a = o.handle(Input::NodeGone(node("a")), t0 + s);
    assert!(written_off(&a, "a"), "{a:?}");
}

#[test]
fn a_target_written_off_that_comes_back_gets_its_jobs_again() {
    let t0 = Instant::now();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&["a", "b", "c"], 2, None)), t0);
    for n in ["a", "c"] {
        for j in ["j0", "j1"] {
            o.handle(result(j, n), t0);
        }
    }
    // b is gone: its jobs are written off and the run finishes.
    let a = o.handle(Input::NodeGone(node("b")), t0);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Unreachable { node: n, job_ids, .. }
        if *n == node("b") && job_ids.len() == 2))
    );
    assert!(a.iter().any(|x| matches!(x, Action::Finished { .. })));
    // Its results may still come: the run's records are kept.
    let awaited = HashSet::from(["r1".to_string()]);
    assert_eq!(o.runs_awaiting_results(), awaited);

    // b is back (a partition healed): it never acknowledged, so the run goes to it again in
    // the next round, and is tracked until its results are in.
    let back = t0 + Duration::from_secs(60);
    assert!(o.handle(Input::NodeBack(node("b")), back).is_empty());
    assert_eq!(o.runs_awaiting_results(), awaited);
    let a = o.handle(Input::Tick, back);
    assert!(
        matches!(&a[..], [Action::Deliver { node: n, .. }] if *n == node("b")),
        "{a:?}"
    );
    let a = without_checks(o.handle(Input::Tick, back + Duration::from_secs(1)));
    assert!(
        matches!(&a[..], [Action::Deliver { node: n, .. }] if *n == node("b")),
        "{a:?}"
    );
    o.handle(result("j0", "b"), back);
    let a = o.handle(result("j1", "b"), back);
    assert_eq!(
        a,
        vec![Action::Finished {
            run_id: "r1".into()
        }]
    );
    // Back once more: nothing is owed any more.
    assert!(o.handle(Input::NodeBack(node("b")), back).is_empty());
    assert!(o.runs_awaiting_results().is_empty());
}

/// A target that restarts quickly reports its (interrupted) jobs before this node sees it
/// alive again: those jobs are not owed any more, so its return sends it nothing and a
/// later departure writes nothing off.
#[test]
fn a_written_off_job_that_reports_before_its_target_is_seen_back_is_not_owed() {
    let t0 = Instant::now();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&["a", "b"], 2, None)), t0);
    for j in ["j0", "j1"] {
        o.handle(result(j, "a"), t0);
    }
    let a = o.handle(Input::NodeGone(node("b")), t0);
    assert!(a.iter().any(|x| matches!(x, Action::Finished { .. })));
    // Its results arrive first, then word that it is alive.
    let later = t0 + Duration::from_secs(5);
    o.handle(result("j0", "b"), later);
    o.handle(result("j1", "b"), later);
    let a = o.handle(Input::NodeBack(node("b")), later);
    assert!(a.is_empty(), "{a:?}");
    assert!(o.handle(Input::NodeGone(node("b")), later).is_empty());
    // One of two reported: only the other is sent again.
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&["b"], 2, None)), t0);
    o.handle(Input::NodeGone(node("b")), t0);
    o.handle(result("j0", "b"), later);
    assert!(o.handle(Input::NodeBack(node("b")), later).is_empty());
    let a = o.handle(Input::Tick, later);
    assert!(
        matches!(&a[..], [Action::Deliver { node: n, .. }] if *n == node("b")),
        "{a:?}"
    );
    assert_eq!(o.missing("r1"), 1);
}

/// A target acknowledges a run only once it is on its disk: one that restarts (seen again,
/// never written off) still has it and takes its jobs up again, and is sent nothing; one
/// that had not acknowledged is resent it in the rounds, as before its restart.
#[test]
fn a_target_that_restarted_is_resent_the_run_only_if_it_had_not_acknowledged() {
    let t0 = Instant::now();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&["a", "b"], 1, None)), t0);
    o.handle(acked("a"), t0);
    assert!(o.handle(Input::NodeBack(node("a")), t0).is_empty());
    assert!(o.handle(Input::NodeBack(node("b")), t0).is_empty());
    let a = o.handle(Input::Tick, t0 + Duration::from_millis(500));
    assert!(
        matches!(&a[..], [Action::Deliver { node: n, .. }] if *n == node("b")),
        "{a:?}"
    );
    o.handle(acked("b"), t0);
    let later = t0 + Duration::from_secs(60);
    assert!(without_checks(o.handle(Input::Tick, later)).is_empty());
    assert_eq!(o.missing("r1"), 2);
}

#[test]
fn a_target_back_after_the_window_stays_unreachable() {
    let t0 = Instant::now();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&["a", "b", "c"], 1, None)), t0);
    o.handle(Input::NodeGone(node("b")), t0);
    let late = t0 + OriginatorConfig::default().written_off_for + Duration::from_secs(1);
    assert!(o.handle(Input::NodeBack(node("b")), late).is_empty());
}

/// `actions` less the alive checks that follow every submission.
fn without_checks(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| !matches!(a, Action::CheckAlive { .. }))
        .collect()
}

/// The number of the alive check among `actions`, if one was asked.
fn check_in(actions: &[Action]) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::CheckAlive { check } => Some(*check),
        _ => None,
    })
}

/// The answer to alive check `check`: these nodes are alive.
fn alive(check: u64, nodes: &[&str]) -> Input {
    Input::Alive {
        check,
        alive: nodes.iter().map(|n| node(n)).collect(),
    }
}

/// An originator resending to four targets per round, and the names of `n` targets of one
/// run it was just given (with what it did on submit).
fn submitted_to(n: usize, t0: Instant) -> (Originator, Vec<String>, Vec<Action>) {
    let config = OriginatorConfig {
        resend_batch: 4,
        ..OriginatorConfig::default()
    };
    let names: Vec<String> = (0..n).map(|i| format!("t{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut o = Originator::new(node("me"), config);
    let a = o.handle(Input::Submit(run(&refs, 1, None)), t0);
    (o, names, a)
}

#[test]
fn many_unacked_targets_get_a_new_announce_and_resends_in_turns() {
    let t0 = Instant::now();
    let (mut o, names, a) = submitted_to(10, t0);
    assert!(matches!(&a[0], Action::Announce(r) if r.round == 0));

    let mut delivered = Vec::new();
    let mut at = t0;
    for round in 1..=3u32 {
        at += Duration::from_secs(11);
        let a = without_checks(o.handle(Input::Tick, at));
        // Ten unacknowledged, more than the batch of four: announced again, as a new
        // gossip message (its round differs), and four direct resends.
        assert!(
            matches!(&a[0], Action::Announce(r) if r.round == round),
            "round {round}: {a:?}"
        );
        let to: Vec<NodeId> = a
            .iter()
            .filter_map(|x| match x {
                Action::Deliver { node, .. } => Some(node.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(to.len(), 4);
        delivered.extend(to);
    }
    // Taken in turn: twelve resends cover all ten targets.
    let covered: BTreeSet<NodeId> = delivered.into_iter().collect();
    assert_eq!(covered.len(), 10);

    // Down to the batch: no more announces, resends only.
    for name in &names[..6] {
        o.handle(acked(name), at);
    }
    let a = o.handle(Input::Tick, at + Duration::from_secs(11));
    assert!(
        a.iter().all(|x| matches!(x, Action::Deliver { .. })),
        "{a:?}"
    );
    assert_eq!(a.len(), 4);
}

#[test]
fn a_run_is_announced_again_only_when_the_announce_stops_reaching_targets() {
    let t0 = Instant::now();
    let (mut o, names, _) = submitted_to(100, t0);
    // Acknowledges `acks`, then lets a round go: its announce round if any, and whom it
    // resent the run to.
    let round = |o: &mut Originator, acks: &[String], at: Instant| {
        for name in acks {
            let acked = acked(name);
            o.handle(acked, at);
        }
        let a = o.handle(Input::Tick, at);
        let announced = match a.first() {
            Some(Action::Announce(r)) => Some(r.round),
            _ => None,
        };
        let resent: Vec<String> = a
            .iter()
            .filter_map(|x| match x {
                Action::Deliver { node: n, .. } => Some(n.0.clone()),
                _ => None,
            })
            .collect();
        (announced, resent)
    };
    // The announce reaches more targets each round than still wait for it: it is on its
    // way (a large or busy mesh), so resends only.
    let at = t0 + Duration::from_millis(600);
    let (announced, resent) = round(&mut o, &names[..60], at);
    assert_eq!((announced, resent.len()), (None, 4));
    let reached: Vec<String> = names[60..]
        .iter()
        .filter(|n| !resent.contains(n))
        .take(25)
        .cloned()
        .collect();
    let at = at + Duration::from_secs(11);
    let (announced, _) = round(&mut o, &reached, at);
    assert_eq!(announced, None);
    // Nobody reached by the announce since: announced again.
    let at = at + Duration::from_secs(11);
    let (announced, resent) = round(&mut o, &[], at);
    assert_eq!(announced, Some(1));
    // Only the targets resent to answer (they joined late): announced again.
    let at = at + Duration::from_secs(11);
    let (announced, _) = round(&mut o, &resent, at);
    assert_eq!(announced, Some(2));
}

#[test]
fn unacked_targets_get_resends_with_backoff_until_they_ack() {
    let t0 = Instant::now();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&["a", "b", "c"], 1, None)), t0);
    assert!(
        o.handle(Input::Tick, t0 + Duration::from_millis(100))
            .is_empty()
    );
    o.handle(acked("a"), t0);
    let a = o.handle(Input::Tick, t0 + Duration::from_millis(500));
    let to: Vec<&NodeId> = a
        .iter()
        .map(|x| match x {
            Action::Deliver { node, .. } => node,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(to, vec![&node("b"), &node("c")]);
    // Backoff: nothing at +900 ms, again at +1500 ms (500 + 1000).
    assert!(
        o.handle(Input::Tick, t0 + Duration::from_millis(900))
            .is_empty()
    );
    // A result counts as an acknowledgement.
    o.handle(result("j0", "b"), t0);
    let a = o.handle(Input::Tick, t0 + Duration::from_millis(1500));
    assert_eq!(a.len(), 1);
    assert!(matches!(&a[0], Action::Deliver { node: n, .. } if *n == node("c")));
}

#[test]
fn finishes_when_every_result_is_in_and_run_once_expects_one_node() {
    let now = Instant::now();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&["a", "b"], 2, Some("b"))), now);
    assert_eq!(o.missing("r1"), 2);
    assert!(o.handle(result("j0", "b"), now).is_empty());
    // A duplicate changes nothing.
    assert!(o.handle(result("j0", "b"), now).is_empty());
    assert_eq!(
        o.handle(result("j1", "b"), now),
        vec![Action::Finished {
            run_id: "r1".into()
        }]
    );
    assert_eq!(o.open_runs(), 0);
    // A late result of a finished run is ignored.
    assert!(o.handle(result("j1", "b"), now).is_empty());
}

#[test]
fn a_target_that_leaves_has_its_jobs_reported_unreachable() {
    let now = Instant::now();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&["a", "b"], 2, None)), now);
    o.handle(result("j0", "a"), now);
    o.handle(result("j0", "b"), now);
    o.handle(result("j1", "a"), now);
    let a = o.handle(Input::NodeGone(node("b")), now);
    assert_eq!(
        a,
        vec![
            Action::Unreachable {
                run_id: "r1".into(),
                node: node("b"),
                job_ids: vec!["j1".into()]
            },
            Action::Finished {
                run_id: "r1".into()
            }
        ]
    );
}

#[test]
fn resume_after_a_restart_resends_and_reports_its_own_jobs_interrupted() {
    let now = Instant::now();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    let a = o.handle(
        Input::Resume {
            run: run(&["me", "a", "b"], 1, None),
            acked: vec![node("a")],
            reported: vec![("j0".into(), node("a"))],
            written_off: vec![],
            queued_here: HashSet::new(),
        },
        now,
    );
    assert_eq!(
        a,
        vec![Action::Interrupted {
            run_id: "r1".into(),
            job_ids: vec!["j0".into()]
        }]
    );
    let a = o.handle(Input::Tick, now);
    assert_eq!(a.len(), 1);
    assert!(matches!(&a[0], Action::Deliver { node: n, .. } if *n == node("b")));
    assert_eq!(o.missing("r1"), 1);
}

/// A resumed run whose targets (here 4: more than the direct deliveries' 2, fewer than a
/// resend batch) do not acknowledge the direct resends in time is announced again by
/// gossip, in a new round.
#[test]
fn a_resumed_run_not_acknowledged_in_time_is_announced_again() {
    let now = Instant::now();
    let config = OriginatorConfig::default();
    let resumed = || {
        let mut o = Originator::new(node("me"), config.clone());
        o.handle(
            Input::Resume {
                run: run(&["a", "b", "c", "d", "e"], 1, None),
                acked: vec![node("a")],
                reported: vec![],
                written_off: vec![],
                queued_here: HashSet::new(),
            },
            now,
        );
        o
    };
    let mut o = resumed();
    let a = o.handle(Input::Tick, now);
    assert_eq!(a.len(), 4, "{a:?}");
    assert!(
        a.iter().all(|a| matches!(a, Action::Deliver { .. })),
        "{a:?}"
    );
    let later = now + config.announce_direct_after;
    let a = o.handle(Input::Tick, later);
    let announced: Vec<u32> = a
        .iter()
        .filter_map(|a| match a {
            Action::Announce(run) => Some(run.round),
            _ => None,
        })
        .collect();
    assert_eq!(announced, [1], "{a:?}");
    // Acknowledged by then, it is not.
    let mut o = resumed();
    o.handle(Input::Tick, now);
    for t in ["b", "c", "d", "e"] {
        o.handle(
            Input::Acked {
                run_id: "r1".into(),
                node: node(t),
            },
            now,
        );
    }
    let a = o.handle(Input::Tick, later);
    assert!(!a.iter().any(|a| matches!(a, Action::Announce(_))), "{a:?}");
}

/// Its own jobs that had not started before the restart are queued again here: awaited,
/// not interrupted.
#[test]
fn a_resumed_run_awaits_its_own_jobs_queued_again() {
    let now = Instant::now();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    let a = o.handle(
        Input::Resume {
            run: run(&["me", "a"], 2, None),
            acked: vec![node("a")],
            reported: vec![
                ("j0".into(), node("a")),
                ("j1".into(), node("a")),
                ("j0".into(), node("me")),
            ],
            written_off: vec![],
            queued_here: HashSet::from(["j1".to_string()]),
        },
        now,
    );
    assert_eq!(a, vec![]);
    assert_eq!(o.missing("r1"), 1);
    let a = o.handle(result("j1", "me"), now);
    assert_eq!(
        a,
        vec![Action::Finished {
            run_id: "r1".into()
        }]
    );
}

#[test]
fn targets_of_a_resumed_run_not_alive_after_a_while_are_written_off() {
    let now = Instant::now();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(
        Input::Resume {
            run: run(&["a", "b", "c"], 1, None),
            acked: vec![],
            reported: vec![("j0".into(), node("c"))],
            written_off: vec![],
            queued_here: HashSet::new(),
        },
        now,
    );
    let check = OriginatorConfig::default().resumed_alive_check;
    let asks = |a: &[Action]| usize::from(check_in(a).is_some());
    assert_eq!(asks(&o.handle(Input::Tick, now + check / 2)), 0);
    assert_eq!(asks(&o.handle(Input::Tick, now + check)), 1);
    assert_eq!(
        asks(&o.handle(Input::Tick, now + check * 2)),
        0,
        "asked once"
    );
    // `b` expired while this node was down; `c` has reported and is not owed anything.
    only_b_is_written_off(&mut o, 1, now + check);
}

/// Told at `at`, in the answer to check `check`, that only `a` is alive, `o` writes off
/// `b`'s one job of run `r1`.
fn only_b_is_written_off(o: &mut Originator, check: u64, at: Instant) {
    let a = o.handle(alive(check, &["a"]), at);
    assert_eq!(
        a,
        vec![Action::Unreachable {
            run_id: "r1".into(),
            node: node("b"),
            job_ids: vec!["j0".into()]
        }]
    );
    assert_eq!(o.missing("r1"), 1);
}

/// A target that expired before its run reached the tracker (no membership change comes
/// for it afterwards) is found by the check that follows every submission.
#[test]
fn a_target_gone_before_its_run_was_tracked_is_written_off() {
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    let t0 = Instant::now();
    o.handle(Input::Submit(run(&["a", "b"], 1, None)), t0);
    let check = OriginatorConfig::default().submitted_alive_check;
    let asks = |a: &[Action]| usize::from(check_in(a).is_some());
    assert_eq!(asks(&o.handle(Input::Tick, t0 + check / 2)), 0);
    assert_eq!(asks(&o.handle(Input::Tick, t0 + check)), 1);
    only_b_is_written_off(&mut o, 1, t0 + check);
}

/// The check after a submission is that run's: a run resumed moments before keeps its
/// longer wait for membership to refill, and a target seen back since the check was asked
/// is not written off by its answer.
#[test]
fn a_submissions_alive_check_is_its_own_runs() {
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    let t0 = Instant::now();
    o.handle(
        Input::Resume {
            run: Run::new("resumed", node("me"), run(&["a", "b"], 1, None).parents),
            acked: vec![],
            reported: vec![],
            written_off: vec![],
            queued_here: HashSet::new(),
        },
        t0,
    );
    let mut fresh = run(&["a", "b", "c"], 1, None);
    fresh.run_id = "fresh".into();
    o.handle(Input::Submit(fresh), t0);
    let check = OriginatorConfig::default().submitted_alive_check;
    let a = o.handle(Input::Tick, t0 + check);
    let asked = check_in(&a).expect("a check is asked");
    // c came back between the question and the answer.
    o.handle(Input::NodeBack(node("c")), t0 + check);
    let a = o.handle(alive(asked, &["a"]), t0 + check);
    assert_eq!(
        a,
        vec![Action::Unreachable {
            run_id: "fresh".into(),
            node: node("b"),
            job_ids: vec!["j0".into()]
        }]
    );
    assert_eq!(
        o.missing("resumed"),
        2,
        "the resumed run waits for its own check"
    );
    assert_eq!(o.missing("fresh"), 2);
}

/// Targets of a run over before a restart, written off then, are written off again as of
/// then: one back within the window is sent its jobs, one written off longer ago than the
/// window is not; the run says how long its write-offs stay open.
#[test]
fn a_write_off_before_a_restart_still_sends_the_jobs_to_a_target_back_within_the_window() {
    let now = Instant::now();
    let config = OriginatorConfig::default();
    let window = config.written_off_for;
    let mut o = Originator::new(node("me"), config);
    let before = |n: &str, ago: Duration| WriteOffBefore {
        job_id: "j0".into(),
        node: node(n),
        ago,
    };
    let a = o.handle(
        Input::WrittenOffBefore {
            run: run(&["a", "b", "c"], 1, None),
            written_off: vec![
                before("b", Duration::from_secs(60)),
                before("c", window + Duration::from_secs(1)),
            ],
        },
        now,
    );
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(
        o.write_offs_open_for("r1", now),
        Some(window - Duration::from_secs(60))
    );
    assert_eq!(o.write_offs_open_for("r1", now + window), None);
    // Its targets may still report: a result of it is never taken for one of an unknown run.
    assert!(o.knows("r1") && !o.knows("r2"));
    assert!(o.handle(Input::NodeBack(node("c")), now).is_empty());
    o.handle(Input::NodeBack(node("b")), now);
    let a = o.handle(Input::Tick, now);
    assert!(
        matches!(&a[..], [Action::Deliver { node: n, .. }] if *n == node("b")),
        "{a:?}"
    );
    assert_eq!(o.missing("r1"), 1);
}

/// Nodes seen back are remembered only while an alive check is out: a node that submits
/// nothing keeps no list of every node it ever saw come back.
#[test]
fn nodes_seen_back_are_kept_only_while_a_check_is_out() {
    let t0 = Instant::now();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    for i in 0..100 {
        o.handle(Input::NodeBack(node(&format!("n{i}"))), t0);
    }
    assert!(o.checks.back_since.is_empty());
}

/// A run of `targets` (those of `run`) under another id.
fn named(run_id: &str, targets: &[&str]) -> Run {
    Run::new(run_id, node("me"), run(targets, 1, None).parents)
}

/// An answer to an alive check taken before a target was seen back does not write it off,
/// even when a later check was asked meanwhile.
#[test]
fn an_earlier_answer_does_not_write_off_a_target_seen_back_since() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let check = OriginatorConfig::default().submitted_alive_check;
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    // x expired before either run reached the tracker.
    o.handle(Input::NodeGone(node("x")), t0);
    o.handle(Input::Submit(named("A", &["x", "y"])), t0);
    o.handle(Input::Submit(named("B", &["x", "y"])), t0 + ms(150));
    let first = check_in(&o.handle(Input::Tick, t0 + check)).expect("A's check");
    // x is back, then B's check is asked, then the answer to A's (taken before x was back).
    o.handle(Input::NodeBack(node("x")), t0 + check + ms(50));
    let a = o.handle(Input::Tick, t0 + check + ms(200));
    let second = check_in(&a).expect("B's check");
    let a = o.handle(alive(first, &["y"]), t0 + check + ms(250));
    assert!(a.is_empty(), "{a:?}");
    let a = o.handle(alive(second, &["x", "y"]), t0 + check + ms(260));
    assert!(a.is_empty(), "{a:?}");
    assert_eq!((o.missing("A"), o.missing("B")), (2, 2));
}

/// Each answer is for the runs asked with its check, in whatever order the answers come: a
/// run tracked after the first check was asked (its target expired since) is checked by its
/// own answer, and the first check's answer, taken earlier, writes off nothing of it.
#[test]
fn each_alive_answer_is_for_the_runs_asked_with_it() {
    for later_answer_first in [false, true] {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let check = OriginatorConfig::default().submitted_alive_check;
        let mut o = Originator::new(node("me"), OriginatorConfig::default());
        o.handle(Input::Submit(named("A", &["x", "y"])), t0);
        let first = check_in(&o.handle(Input::Tick, t0 + check)).expect("A's check");
        // The answer to A's check is taken now, z alive; z expires, then B names it (read
        // before it expired) and B's check is asked before A's answer arrives.
        let b_at = t0 + check + ms(100);
        o.handle(Input::NodeGone(node("z")), t0 + check + ms(50));
        o.handle(Input::Submit(named("B", &["x", "z"])), b_at);
        let second = check_in(&o.handle(Input::Tick, b_at + check)).expect("B's check");
        let answers = [alive(first, &["x", "y", "z"]), alive(second, &["x", "y"])];
        let mut taken = Vec::new();
        let mut at = b_at + check;
        let order: Vec<Input> = if later_answer_first {
            answers.into_iter().rev().collect()
        } else {
            answers.into_iter().collect()
        };
        for answer in order {
            at += ms(10);
            taken.extend(o.handle(answer, at));
        }
        assert_eq!(
            taken,
            vec![Action::Unreachable {
                run_id: "B".into(),
                node: node("z"),
                job_ids: vec!["j0".into()]
            }],
            "later answer first: {later_answer_first}"
        );
        assert_eq!((o.missing("A"), o.missing("B")), (2, 1));
        // An answer to a check already answered, or never asked, is for nothing.
        assert!(o.handle(alive(second, &[]), at).is_empty());
        assert!(o.handle(alive(99, &[]), at).is_empty());
    }
}

/// `n` target names of a large run.
fn many(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("t{i:05}")).collect()
}

/// A run of 10 000 targets and 10 jobs: a thousand targets go and come back, every target
/// comes back after a resume; what is written off, owed and sent is as for a small run.
#[test]
fn membership_changes_on_a_run_of_ten_thousand_targets() {
    let t0 = Instant::now();
    let names = many(10_000);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    o.handle(Input::Submit(run(&refs, 10, None)), t0);
    for name in &names {
        o.handle(acked(name), t0);
    }
    let mut written_off = 0;
    for name in &names[..1000] {
        for a in o.handle(Input::NodeGone(node(name)), t0) {
            match a {
                Action::Unreachable {
                    node: n, job_ids, ..
                } => {
                    assert_eq!((n.0.as_str(), job_ids.len()), (name.as_str(), 10));
                    written_off += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(written_off, 1000);
    assert_eq!(o.missing("r1"), 90_000);
    // Back, they owe their jobs again; they had acknowledged, so nothing is sent.
    let back = t0 + Duration::from_secs(1);
    for name in &names[..1000] {
        assert!(o.handle(Input::NodeBack(node(name)), back).is_empty());
    }
    assert_eq!(o.missing("r1"), 100_000);
    assert!(without_checks(o.handle(Input::Tick, back)).is_empty());
    // Targets that acknowledged and never went: nothing to do.
    for name in &names[1000..] {
        o.handle(Input::NodeBack(node(name)), back);
    }
    assert_eq!(o.missing("r1"), 100_000);
    for name in &names {
        for j in 0..10 {
            o.handle(result(&format!("j{j}"), name), back);
        }
    }
    assert_eq!(o.open_runs(), 0);

    // Resumed with every target acknowledged and one job of two reported by each.
    let mut o = Originator::new(node("me"), OriginatorConfig::default());
    let a = o.handle(
        Input::Resume {
            run: run(&refs, 2, None),
            acked: refs.iter().map(|n| node(n)).collect(),
            reported: refs.iter().map(|n| ("j0".into(), node(n))).collect(),
            written_off: vec![],
            queued_here: HashSet::new(),
        },
        t0,
    );
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(o.missing("r1"), 10_000);
    for name in &names {
        o.handle(Input::NodeBack(node(name)), t0);
    }
    let a = without_checks(o.handle(Input::Tick, t0 + Duration::from_secs(1)));
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(o.missing("r1"), 10_000);
}

/// Whom `actions` deliver the run to.
fn delivered_to(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|x| match x {
            Action::Deliver { node: n, .. } => Some(n.0.clone()),
            _ => None,
        })
        .collect()
}

/// A split heals: the targets back that had not acknowledged the run get it in the batched
/// rounds, with a new announce while many of them wait, not each at once; those that had
/// acknowledged are sent nothing.
#[test]
fn targets_back_after_a_split_get_the_run_in_rounds() {
    let t0 = Instant::now();
    let (mut o, names, _) = submitted_to(100, t0);
    for name in &names[..60] {
        o.handle(acked(name), t0);
    }
    // The split takes 20 targets that acknowledged and the 40 that had not.
    for name in &names[40..] {
        o.handle(Input::NodeGone(node(name)), t0);
    }
    let back = t0 + Duration::from_secs(60);
    for name in &names[40..] {
        assert!(o.handle(Input::NodeBack(node(name)), back).is_empty());
    }
    let a = without_checks(o.handle(Input::Tick, back));
    assert!(
        matches!(&a[0], Action::Announce(r) if r.round == 1),
        "{a:?}"
    );
    let mut resent: BTreeSet<String> = delivered_to(&a).into_iter().collect();
    assert_eq!(resent.len(), 4);
    let mut at = back;
    for _ in 0..9 {
        at += Duration::from_secs(11);
        let a = o.handle(Input::Tick, at);
        assert_eq!(delivered_to(&a).len(), 4, "{a:?}");
        resent.extend(delivered_to(&a));
    }
    let owed_it: BTreeSet<String> = names[60..].iter().cloned().collect();
    assert_eq!(resent, owed_it);
}
