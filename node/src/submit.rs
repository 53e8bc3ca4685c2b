//! Turning a submission from the CLI into a run: targets resolved against this node's view of
//! the mesh, ids assigned, `--restrict`, `--ignore-cache`, `--force-async` and `--run-once`
//! applied, and a record made for every job.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    time::Duration,
};

use coordination::{JobEntry, NodeId, Parent, Run};
use jobs::{Component, executor::QueueKind};
use mesh::{MemberState, MeshStatus};

use crate::{
    control::{JobSummary, Submission, SubmitReply, SubmittedJob, SubmittedParent},
    records::{JobRecord, NodeRef},
};

/// Why a submission cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// Bad input: an unknown or ambiguous target, nothing left to run.
    BadInput(String),
    /// A target exists but cannot be reached now.
    Unavailable(String),
}

impl SubmitError {
    /// The same error, saying first where the cause was written.
    fn prefixed(self, origin: &str) -> Self {
        match self {
            Self::BadInput(why) => Self::BadInput(format!("{origin}: {why}")),
            Self::Unavailable(why) => Self::Unavailable(format!("{origin}: {why}")),
        }
    }
}

/// A submission made ready to run.
pub struct Resolved {
    pub run: Run,
    pub records: Vec<JobRecord>,
    pub reply: SubmitReply,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// How many nodes a warning of nodes left out names; the others are counted.
const NAMED: usize = 5;

/// The first [`NAMED`] of `names`, then how many more.
fn first_named(names: Vec<String>) -> Vec<String> {
    let more = names.len().saturating_sub(NAMED);
    let mut shown: Vec<String> = names.into_iter().take(NAMED).collect();
    if more > 0 {
        shown.push(format!("and {more} more (see `status`)"));
    }
    shown
}

/// The members not alive (expired or left) a parent for every node leaves out (if there is
/// one): an operator who meant every node hears which did not run it. One whose name a live
/// node uses now (the same machine under a new identity: its state directory was replaced)
/// is not named: that node runs it, or, while two live nodes share the name (`conflict`),
/// the warning of those names it (and `--target NAME` would be refused as ambiguous).
fn not_alive_left_out(status: &MeshStatus, untargeted: bool, left_grace: Duration) -> Vec<String> {
    if !untargeted {
        return Vec::new();
    }
    let live: HashSet<&str> = status
        .members
        .iter()
        .filter(|v| v.is_self || matches!(v.state, MemberState::Alive | MemberState::Conflict))
        .map(|v| v.presence.name.as_str())
        .collect();
    let mut names: Vec<String> = status
        .members
        .iter()
        .filter(|v| !v.is_self && !live.contains(v.presence.name.as_str()))
        .filter_map(|v| match v.state {
            MemberState::Expired => Some(format!("{} (expired)", v.presence.name)),
            // Within the grace a goodbye gets, it may be restarting: named as a target, it
            // would be waited for.
            MemberState::Left if v.last_seen_ago < left_grace => Some(format!(
                "{name} (left {} s ago: restarting? `--target {name}` waits for it)",
                v.last_seen_ago.as_secs(),
                name = v.presence.name
            )),
            MemberState::Left => Some(format!("{} (left)", v.presence.name)),
            _ => None,
        })
        .collect();
    names.sort();
    first_named(names)
}

/// The nodes of another release a parent for every node leaves out (if there is one), as
/// `status` names them: the first few, then how many more. One that is also an alive member
/// (just upgraded) is not left out.
fn other_releases_left_out(status: &MeshStatus, untargeted: bool) -> Vec<String> {
    if !untargeted {
        return Vec::new();
    }
    let members: HashSet<mesh::PeerId> = status
        .members
        .iter()
        .filter(|v| v.state == MemberState::Alive)
        .map(|v| v.presence.peer_id)
        .collect();
    let left_out: Vec<String> = status
        .other_releases
        .iter()
        .filter(|o| !members.contains(&o.peer_id))
        .map(|o| o.to_string())
        .collect();
    first_named(left_out)
}

/// The mesh's members as a submission names them: by the name each node goes by.
struct MembersByName<'a> {
    status: &'a MeshStatus,
    by_name: BTreeMap<&'a str, Vec<&'a mesh::MemberView>>,
    /// How long a target that said goodbye has to come back before its jobs are written off:
    /// one named that left within it is taken (it is likely restarting), and its jobs wait.
    left_grace: Duration,
    /// The targets taken so, as `name (left N s ago)`.
    taken_after_leaving: std::cell::RefCell<BTreeSet<String>>,
    /// Names some live node goes by, and names only gone nodes go by (for error texts).
    alive_names: Vec<&'a str>,
    gone_names: Vec<&'a str>,
}

impl<'a> MembersByName<'a> {
    fn of(status: &'a MeshStatus, left_grace: Duration) -> Self {
        let by_name: BTreeMap<&str, Vec<&mesh::MemberView>> =
            status.members.iter().fold(BTreeMap::new(), |mut m, v| {
                m.entry(v.presence.name.as_str())
                    .or_insert_with(Vec::new)
                    .push(v);
                m
            });
        let mut alive_names = Vec::new();
        let mut gone_names = Vec::new();
        for (name, views) in &by_name {
            if views.iter().any(|v| is_live(v)) {
                alive_names.push(*name);
            } else {
                gone_names.push(*name);
            }
        }
        MembersByName {
            status,
            by_name,
            left_grace,
            taken_after_leaving: Default::default(),
            alive_names,
            gone_names,
        }
    }

    /// A name only a node of another release goes by: said so, rather than "unknown" or "left".
    fn other_release(&self, name: &str) -> Option<SubmitError> {
        let other = self
            .status
            .other_releases
            .iter()
            .find(|o| o.name.as_deref() == Some(name))?;
        Some(SubmitError::Unavailable(format!(
            "target '{name}' runs another release ({}; this node speaks wire version {}): it \
             takes no jobs from this node until both run the same directord-mesh release",
            other.release_and_wire(),
            mesh::wire::spoken_version()
        )))
    }

    /// The one alive node named `name`, or why there is none (`None`: no node has that name,
    /// nor one that differs only in case, in this release or another).
    fn lookup(&self, name: &str) -> Result<NodeRef, Option<SubmitError>> {
        let Some(views) = self.by_name.get(name) else {
            if let Some(e) = self.other_release(name) {
                return Err(Some(e));
            }
            // Names are matched exactly; one that differs only in case is likely meant.
            let like: Vec<&str> = self
                .by_name
                .keys()
                .copied()
                .filter(|n| n.eq_ignore_ascii_case(name))
                .collect();
            if !like.is_empty() {
                return Err(Some(SubmitError::BadInput(format!(
                    "unknown target '{name}' (names are matched exactly: did you mean {}?)",
                    like.iter()
                        .map(|n| format!("'{n}'"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ))));
            }
            return Err(None);
        };
        let alive: Vec<&&mesh::MemberView> = views.iter().filter(|v| is_live(v)).collect();
        match alive.as_slice() {
            [one] if one.state == MemberState::Alive => Ok(NodeRef {
                peer_id: one.presence.peer_id.to_string(),
                name: name.to_string(),
            }),
            [] => {
                if let Some(e) = self.other_release(name) {
                    return Err(Some(e));
                }
                // The row heard from last (a node reinstalled under its name has an older
                // row of its former identity too).
                let Some(v) = views.iter().min_by_key(|v| v.last_seen_ago) else {
                    return Err(None);
                };
                if v.state == MemberState::Left && v.last_seen_ago < self.left_grace {
                    self.taken_after_leaving.borrow_mut().insert(format!(
                        "{name} (left {:.0} s ago)",
                        v.last_seen_ago.as_secs_f64()
                    ));
                    return Ok(NodeRef {
                        peer_id: v.presence.peer_id.to_string(),
                        name: name.to_string(),
                    });
                }
                let what = match v.state {
                    MemberState::Left => "has left the mesh".to_string(),
                    MemberState::Expired => "is not answering (expired)".to_string(),
                    other => format!("is {}", other.as_str()),
                };
                Err(Some(SubmitError::Unavailable(format!(
                    "target '{name}' {what} (last heard from {:.0} s ago)",
                    v.last_seen_ago.as_secs_f64()
                ))))
            }
            _ => Err(Some(SubmitError::BadInput(format!(
                "target '{name}' is ambiguous: {} live nodes use that name (see `status`); rename one",
                alive.len()
            )))),
        }
    }

    /// Each name of `list` once, in order; every name no node has is said at once.
    fn resolve_list(&self, list: &[String]) -> Result<Vec<NodeRef>, SubmitError> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut unknown = Vec::new();
        for name in list {
            if seen.insert(name.as_str()) {
                match self.lookup(name) {
                    Ok(node) => out.push(node),
                    Err(Some(e)) => return Err(e),
                    Err(None) => unknown.push(format!("'{name}'")),
                }
            }
        }
        if unknown.is_empty() {
            return Ok(out);
        }
        let gone = if self.gone_names.is_empty() {
            String::new()
        } else {
            format!("; not alive: {}", some_of(&self.gone_names))
        };
        let targets = if unknown.len() == 1 {
            "target"
        } else {
            "targets"
        };
        Err(SubmitError::BadInput(format!(
            "unknown {targets} {} (alive: {}{gone})",
            unknown.join(", "),
            some_of(&self.alive_names)
        )))
    }
}

/// Alive, or alive under a name another live node shares.
fn is_live(v: &mesh::MemberView) -> bool {
    matches!(v.state, MemberState::Alive | MemberState::Conflict)
}

/// Resolves `sub` against the membership in `status`.
pub fn resolve(
    sub: Submission,
    status: &MeshStatus,
    local_name: &str,
    now_ms: u64,
    left_grace: Duration,
) -> Result<Resolved, SubmitError> {
    let local = NodeId(status.local_peer_id.to_string());
    let members = MembersByName::of(status, left_grace);
    let everyone = alive_members(status);
    let conflicted = conflicted_names(status);
    let mut left_out = BTreeSet::new();
    // Whether a job runs on every node (and so would on nodes of another release, or on
    // members not alive now): a parent of `--run-once` jobs only runs on one node anyway.
    let mut untargeted = false;

    let mut run = RunParts::new(&sub, local_name, now_ms);
    let mut restricted = 0;
    for mut sp in sub.parents {
        if !sub.restrict.is_empty() {
            restricted += restrict_by_fingerprint(&mut sp.jobs, &sub.restrict);
            // Nothing of it runs: its targets are not looked up (they need not be alive),
            // nor said to be left out.
            if sp.jobs.is_empty() {
                continue;
            }
        }
        let targets = match named_targets(&members, &sub.targets, &sp)? {
            Some(targets) => targets,
            None => {
                left_out.extend(conflicted.iter().cloned());
                untargeted |= sp.jobs.iter().any(|job| !job.spec.run_once);
                everyone.clone()
            }
        };
        if targets.is_empty() {
            return Err(SubmitError::Unavailable("no alive member to run on".into()));
        }
        run.add_parent(sp, &targets);
    }
    if run.parents.is_empty() {
        return Err(nothing_to_run(restricted));
    }
    check_waits(&run.parents, &run.origins, &run.node_names, &run.records)?;
    Ok(Resolved {
        run: Run {
            stream: sub.stream,
            created_unix_ms: now_ms,
            ..Run::new(&run.run_id, local, run.parents)
        },
        records: run.records,
        reply: SubmitReply {
            run_id: run.run_id,
            jobs: run.summaries,
            restricted,
            left_out: left_out.into_iter().collect(),
            other_releases_left_out: other_releases_left_out(status, untargeted),
            not_alive_left_out: not_alive_left_out(status, untargeted, left_grace),
            waiting_for_left: members.taken_after_leaving.take().into_iter().collect(),
            left_grace_secs: left_grace.as_secs(),
        },
    })
}

/// Every alive member: the nodes a parent that names no targets runs on.
fn alive_members(status: &MeshStatus) -> Vec<NodeRef> {
    status
        .members
        .iter()
        .filter(|v| v.state == MemberState::Alive)
        .map(|v| NodeRef {
            peer_id: v.presence.peer_id.to_string(),
            name: v.presence.name.clone(),
        })
        .collect()
}

/// Names live nodes share: a parent for every node cannot name their results apart, and so
/// leaves them out.
fn conflicted_names(status: &MeshStatus) -> BTreeSet<String> {
    status
        .members
        .iter()
        .filter(|v| v.state == MemberState::Conflict)
        .map(|v| v.presence.name.clone())
        .collect()
}

/// `--restrict`: keeps the jobs whose fingerprint starts with one of `restrict`, and says how
/// many it left out.
fn restrict_by_fingerprint(jobs: &mut Vec<SubmittedJob>, restrict: &[String]) -> usize {
    let before = jobs.len();
    jobs.retain(|job| {
        let fingerprint = job.spec.fingerprint();
        restrict.iter().any(|p| fingerprint.matches_prefix(p))
    });
    before - jobs.len()
}

/// The nodes `--target` names, else those the parent's own `targets:` name; `None` when
/// neither names any, for a parent that runs on every alive node.
fn named_targets(
    members: &MembersByName,
    targets: &[String],
    sp: &SubmittedParent,
) -> Result<Option<Vec<NodeRef>>, SubmitError> {
    if !targets.is_empty() {
        members.resolve_list(targets).map(Some)
    } else if let Some(list) = &sp.targets {
        // The parent's own `targets:` are named where they were written.
        members
            .resolve_list(list)
            .map(Some)
            .map_err(|e| match &sp.origin {
                None => e,
                Some(origin) => e.prefixed(origin),
            })
    } else {
        Ok(None)
    }
}

/// A submission with no job left to run, saying whether `--restrict` left them all out.
fn nothing_to_run(restricted: usize) -> SubmitError {
    SubmitError::BadInput(if restricted > 0 {
        match restricted {
            1 => "--restrict left out the only job: nothing to run".to_string(),
            n => format!("--restrict left out all {n} jobs: nothing to run"),
        }
    } else {
        "nothing to run".into()
    })
}

/// A run being put together, parent by parent: its parents, a record and a summary for every
/// job, and what [`check_waits`] needs to name them.
struct RunParts<'a> {
    run_id: String,
    originator: &'a str,
    created_unix_ms: u64,
    created_on_boot: Option<jobs::processes::BootInstant>,
    /// `--ignore-cache`, `--force-async`, and whether it is an `exec`.
    ignore_cache: bool,
    force_async: bool,
    exec: bool,
    parents: Vec<Parent>,
    records: Vec<JobRecord>,
    summaries: Vec<JobSummary>,
    /// Where each parent was written, and the names of the nodes they run on.
    origins: Vec<Option<String>>,
    node_names: HashMap<String, String>,
}

impl<'a> RunParts<'a> {
    fn new(sub: &Submission, originator: &'a str, now_ms: u64) -> Self {
        RunParts {
            run_id: new_id(),
            originator,
            created_unix_ms: now_ms,
            created_on_boot: jobs::processes::BootInstant::now(),
            ignore_cache: sub.ignore_cache,
            force_async: sub.force_async,
            exec: sub.exec,
            parents: Vec::new(),
            records: Vec::new(),
            summaries: Vec::new(),
            origins: Vec::new(),
            node_names: HashMap::new(),
        }
    }

    /// Adds `sp`'s jobs to run on `targets`: one parent for them all, or for an `exec` one
    /// parent per job. A parent with no jobs adds nothing.
    fn add_parent(&mut self, mut sp: SubmittedParent, targets: &[NodeRef]) {
        let queue = if sp.is_async || self.force_async {
            QueueKind::Async
        } else {
            QueueKind::Sync
        };
        let shared_parent = new_id();
        let mut entries = Vec::new();
        for job in std::mem::take(&mut sp.jobs) {
            entries.push(self.add_job(job, &sp, targets, &shared_parent));
        }
        if entries.is_empty() {
            return;
        }
        for t in targets {
            self.node_names.insert(t.peer_id.clone(), t.name.clone());
        }
        let target_ids: Vec<NodeId> = targets.iter().map(|t| NodeId(t.peer_id.clone())).collect();
        // An `exec`'s jobs (one per file of an ADD/COPY pattern) are each their own parent,
        // as their records say: one failing does not stop the others.
        let groups = if self.exec {
            entries
                .into_iter()
                .map(|e| (e.job_id.clone(), vec![e]))
                .collect()
        } else {
            vec![(shared_parent, entries)]
        };
        for (parent_id, jobs) in groups {
            self.origins.push(sp.origin.clone());
            self.parents.push(Parent {
                parent_id,
                fingerprint: sp.fingerprint,
                queue,
                targets: target_ids.clone(),
                target_keys: Default::default(),
                jobs,
            });
        }
    }

    /// Records and summarises `job`, to run on the first of `targets` for `--run-once`, else
    /// on all of them; the entry the run carries for it.
    fn add_job(
        &mut self,
        job: SubmittedJob,
        sp: &SubmittedParent,
        targets: &[NodeRef],
        shared_parent: &str,
    ) -> JobEntry {
        let fingerprint = job.spec.fingerprint();
        let job_id = new_id();
        let parent_id = if self.exec {
            job_id.clone()
        } else {
            shared_parent.to_string()
        };
        let mut spec = job.spec;
        if self.ignore_cache {
            spec.skip_cache = true;
        }
        let nodes: Vec<NodeRef> = if spec.run_once {
            targets[..1].to_vec()
        } else {
            targets.to_vec()
        };
        self.records.push(JobRecord {
            job_id: job_id.clone(),
            run_id: self.run_id.clone(),
            parent_id: parent_id.clone(),
            parent_fingerprint: sp.fingerprint.to_hex(),
            parent_name: sp.name.clone(),
            verb: spec.verb().name().to_string(),
            definition: job.definition.clone(),
            fingerprint: fingerprint.to_hex(),
            originator: self.originator.to_string(),
            created_unix_ms: self.created_unix_ms,
            created_on_boot: self.created_on_boot.clone(),
            // Numbered by the runs actor as it takes the submission in.
            submission: 0,
            position: self.records.len() as u32,
            nodes: nodes.clone(),
            results: BTreeMap::new(),
        });
        self.summaries.push(JobSummary {
            job_id: job_id.clone(),
            parent_id: parent_id.clone(),
            definition: job.definition,
            fingerprint: fingerprint.to_hex(),
            targets: nodes.iter().map(|n| n.name.clone()).collect(),
        });
        JobEntry {
            job_id,
            only_on: spec.run_once.then(|| NodeId(targets[0].peer_id.clone())),
            spec,
            fingerprint,
        }
    }
}

/// Refuses a run in which a JOB_WAIT waits, on a node it runs on, for a job of the same run
/// that this node can start only after the JOB_WAIT has ended: a later job of its own parent,
/// or of a later synchronous parent when it is synchronous too (a waiting job lets other runs'
/// jobs go ahead, never the rest of its own run). Such a wait could only end at its timeout.
/// A wait that some job of the run, or none, can answer in time is left alone.
fn check_waits(
    parents: &[Parent],
    origins: &[Option<String>],
    node_names: &HashMap<String, String>,
    records: &[JobRecord],
) -> Result<(), SubmitError> {
    let runs_on = |job: &JobEntry, parent: &Parent| -> Vec<NodeId> {
        match &job.only_on {
            Some(node) => vec![node.clone()],
            None => parent.targets.clone(),
        }
    };
    let name_of = |node: &NodeId| node_names.get(&node.0).cloned().unwrap_or(node.0.clone());
    let definition_of = |job: &JobEntry| {
        records.iter().find(|r| r.job_id == job.job_id).map_or_else(
            || job.spec.verb().name().to_string(),
            |r| r.definition.clone(),
        )
    };
    let written = |pi: usize| match origins.get(pi).and_then(Option::as_ref) {
        Some(origin) => format!("{origin}: "),
        None => String::new(),
    };
    for (pi, parent) in parents.iter().enumerate() {
        for (ji, job) in parent.jobs.iter().enumerate() {
            let Component::JobWait {
                fingerprint: awaited,
                identities,
            } = &job.spec.component
            else {
                continue;
            };
            for node in runs_on(job, parent) {
                let name = name_of(&node);
                if !identities.contains(&name) {
                    continue;
                }
                let mut found = Vec::new();
                for (pj, other) in parents.iter().enumerate() {
                    for (jj, candidate) in other.jobs.iter().enumerate() {
                        if candidate.fingerprint.matches_prefix(awaited)
                            && runs_on(candidate, other).contains(&node)
                        {
                            found.push((pj, jj, candidate));
                        }
                    }
                }
                let after_the_wait = |&(pj, jj, candidate): &(usize, usize, &JobEntry)| {
                    let queued_behind = (pj == pi && jj >= ji)
                        || (pj > pi
                            && parent.queue == QueueKind::Sync
                            && parents[pj].queue == QueueKind::Sync);
                    // QUEUESENTINEL runs beside every queue.
                    queued_behind && !matches!(candidate.spec.component, Component::Queuesentinel)
                };
                if let Some(&(pj, _, candidate)) = found.first()
                    && found.iter().all(after_the_wait)
                {
                    return Err(SubmitError::BadInput(format!(
                        "{}{} waits on '{name}' for a job that '{name}' runs only after it \
                         ({}{}): it could only wait until its timeout. Put the awaited job in an \
                         earlier entry, or make one of the two entries async",
                        written(pi),
                        definition_of(job),
                        written(pj),
                        definition_of(candidate),
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Names for an error message: all of them when they are few, else the first ones and how
/// many more (`status` lists them all).
fn some_of(names: &[&str]) -> String {
    const SHOWN: usize = 20;
    if names.len() <= SHOWN {
        return names.join(", ");
    }
    format!(
        "{}, and {} more (see `status`)",
        names[..SHOWN].join(", "),
        names.len() - SHOWN
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobs::{Fingerprint, JobSpec, ParseOutcome};

    /// A mesh as `status` shows it: (name, state, seconds since last heard) of each member.
    fn mesh_of(members: &[(&str, MemberState, u64)]) -> MeshStatus {
        let view = |(name, state, ago): &(&str, MemberState, u64)| mesh::MemberView {
            presence: mesh::wire::Presence::sample_for_tests(name),
            state: *state,
            last_seen_ago: Duration::from_secs(*ago),
            is_self: false,
        };
        MeshStatus {
            local_peer_id: mesh::PeerId::random(),
            listen_addrs: vec![],
            connected_peers: 0,
            heartbeat_interval: Duration::from_secs(5),
            members: members.iter().map(view).collect(),
            other_releases: vec![],
            unreachable: vec![],
            warnings: vec![],
        }
    }

    /// A node that said goodbye a moment ago is named as left out, with the advice to target
    /// it; not while live nodes go by its name, alive or in conflict (two of them: the advice
    /// would be refused as ambiguous).
    #[test]
    fn a_node_that_left_is_named_as_left_out_unless_live_nodes_go_by_its_name() {
        let grace = Duration::from_secs(30);
        let just_left = ("n3", MemberState::Left, 9);
        let said = not_alive_left_out(&mesh_of(&[just_left]), true, grace);
        assert_eq!(
            said,
            vec!["n3 (left 9 s ago: restarting? `--target n3` waits for it)"]
        );
        assert!(not_alive_left_out(&mesh_of(&[just_left]), false, grace).is_empty());
        let replaced = [just_left, ("n3", MemberState::Alive, 0)];
        assert!(not_alive_left_out(&mesh_of(&replaced), true, grace).is_empty());
        let shared = [
            just_left,
            ("n3", MemberState::Conflict, 0),
            ("n3", MemberState::Conflict, 4),
        ];
        assert!(not_alive_left_out(&mesh_of(&shared), true, grace).is_empty());
        // Left long ago, or expired: named without the advice.
        let gone = [
            ("n4", MemberState::Left, 600),
            ("n5", MemberState::Expired, 60),
        ];
        assert_eq!(
            not_alive_left_out(&mesh_of(&gone), true, grace),
            vec!["n4 (left)", "n5 (expired)"]
        );
    }

    fn spec(verb: &str, inline: &str) -> JobSpec {
        match JobSpec::parse(verb, inline, &Default::default()) {
            Ok(ParseOutcome::Spec(s)) => s,
            other => panic!("{verb} {inline}: {other:?}"),
        }
    }

    fn parent(id: &str, queue: QueueKind, targets: &[&str], jobs: Vec<JobSpec>) -> Parent {
        Parent {
            parent_id: id.into(),
            fingerprint: Fingerprint([0; 32]),
            queue,
            targets: targets.iter().map(|t| NodeId(t.to_string())).collect(),
            target_keys: Default::default(),
            jobs: jobs
                .into_iter()
                .enumerate()
                .map(|(i, spec)| JobEntry {
                    job_id: format!("{id}-{i}"),
                    fingerprint: spec.fingerprint(),
                    spec,
                    only_on: None,
                })
                .collect(),
        }
    }

    /// Node names are their ids here.
    fn check(parents: &[Parent]) -> Result<(), SubmitError> {
        let names = parents
            .iter()
            .flat_map(|p| p.targets.iter())
            .map(|n| (n.0.clone(), n.0.clone()))
            .collect();
        let origins: Vec<Option<String>> = (1..=parents.len())
            .map(|i| Some(format!("o.yaml: entry {i}")))
            .collect();
        check_waits(parents, &origins, &names, &[])
    }

    fn wait_for(job: &JobSpec, on: &str) -> JobSpec {
        spec(
            "JOB_WAIT",
            &format!("{} --identity {on}", &job.fingerprint().to_hex()[..12]),
        )
    }

    #[test]
    fn a_wait_for_a_later_job_of_its_own_run_on_its_own_node_is_refused() {
        let awaited = spec("RUN", "echo made");
        use QueueKind::{Async, Sync};
        // The awaited job in a later synchronous entry, on the node the wait runs on.
        let parents = [
            parent("p1", Sync, &["a", "b"], vec![wait_for(&awaited, "a")]),
            parent("p2", Sync, &["a"], vec![awaited.clone()]),
        ];
        let Err(SubmitError::BadInput(why)) = check(&parents) else {
            panic!("not refused");
        };
        assert!(
            why.starts_with("o.yaml: entry 1: JOB_WAIT waits on 'a'"),
            "{why}"
        );
        assert!(why.contains("(o.yaml: entry 2: RUN)"), "{why}");
        // Later in the same entry, even an async one.
        let parents = [parent(
            "p1",
            Async,
            &["a"],
            vec![wait_for(&awaited, "a"), awaited.clone()],
        )];
        assert!(check(&parents).is_err());
    }

    #[test]
    fn a_wait_some_job_can_answer_in_time_is_left_alone() {
        let awaited = spec("RUN", "echo made");
        use QueueKind::{Async, Sync};
        let cases = [
            // Awaited in an earlier entry.
            vec![
                parent("p1", Sync, &["a"], vec![awaited.clone()]),
                parent("p2", Sync, &["a"], vec![wait_for(&awaited, "a")]),
            ],
            // Awaited on another node.
            vec![
                parent("p1", Sync, &["a"], vec![wait_for(&awaited, "b")]),
                parent("p2", Sync, &["b"], vec![awaited.clone()]),
            ],
            // Awaited later but in an async entry: its own queue.
            vec![
                parent("p1", Sync, &["a"], vec![wait_for(&awaited, "a")]),
                parent("p2", Async, &["a"], vec![awaited.clone()]),
            ],
            // The wait is async, the awaited job in a later synchronous entry.
            vec![
                parent("p1", Async, &["a"], vec![wait_for(&awaited, "a")]),
                parent("p2", Sync, &["a"], vec![awaited.clone()]),
            ],
            // Not in this run at all: another run's job, or the cache, may answer.
            vec![parent("p1", Sync, &["a"], vec![wait_for(&awaited, "a")])],
        ];
        for (i, parents) in cases.iter().enumerate() {
            assert_eq!(check(parents), Ok(()), "case {i}");
        }
    }
}
