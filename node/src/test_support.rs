//! Fixtures the crate's tests share: runs built the way a submission builds them, so that a
//! test of the store, the message size or the holder hints starts from the same kind of run.

use std::path::Path;

use coordination::{JobEntry, NodeId, Parent, Run};
use mesh::PeerId;

/// A run "r" of one parent "p", on one node, with the ADD jobs `pattern` makes from the files
/// in `dir`, numbered `j0`, `j1`, … in the order the pattern names the files.
pub(crate) fn add_run(dir: &Path, pattern: &str) -> Run {
    let spec = match jobs::JobSpec::parse("ADD", pattern, &Default::default()).unwrap() {
        jobs::ParseOutcome::Spec(s) => s,
        jobs::ParseOutcome::Help(h) => panic!("{h}"),
    };
    let jobs = jobs::transfer::resolve(spec, dir)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, spec)| JobEntry {
            job_id: format!("j{i}"),
            fingerprint: spec.fingerprint(),
            spec,
            only_on: None,
        })
        .collect();
    let me = NodeId(PeerId::random().to_string());
    Run::new(
        "r",
        me.clone(),
        vec![Parent {
            parent_id: "p".into(),
            fingerprint: jobs::Fingerprint([0; 32]),
            queue: jobs::executor::QueueKind::Sync,
            targets: vec![me],
            target_keys: Default::default(),
            jobs,
        }],
    )
}
