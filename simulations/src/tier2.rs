//! Tier 2: real nodes in one process. N full [`Node`]s (gossipsub, request-response, redb,
//! executor, blob store) talk over libp2p's memory transport; the run is submitted the way
//! `orchestrate` submits it and measured from the submitter's job records, on the wall clock.
//!
//! What tier 2 can see is what an operator sees: when each target ran its jobs and when each
//! result reached the submitter. Message and byte counts are tier 1's (the memory transport
//! does not count them); acks are internal to the originator. Links can be given latency and
//! loss (`mesh::shaped`: a lost chunk is resent after TCP's retransmission timeout). A partition is made by each
//! node refusing connections with the other side (libp2p's block list), which closes the
//! open ones and fails new dials, as a network split does.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use node::{
    Node, NodeConfig,
    config::MeshKeyChoice,
    control::{
        ControlRequest, ControlResponse, Reply, Submission, SubmittedJob, SubmittedParent,
        WatchEvent,
    },
    records::JobRecord,
};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use tokio::sync::Mutex;

use crate::{
    metrics::Report,
    output,
    scenario::{Scenario, Workload, far_half, node_name},
};

/// Heartbeat of `n` simulated nodes. Every presence heartbeat is checked (its gossipsub
/// signature verified) by every node, once per copy: a real mesh spreads that over `n`
/// machines, tier 2 puts it on this one. The interval grows with n² so that the whole process
/// handles about [`PRESENCES_PER_SEC`] copies per second, whatever `n`; failure detection is
/// slower accordingly (three heartbeats), which only the churn scenario notices.
fn heartbeat(n: usize) -> Duration {
    let secs = (n * n) as f64 / PRESENCES_PER_SEC;
    // Within what a presence may say (a day: 14 000 nodes).
    Duration::from_secs_f64(secs.max(1.0)).min(Duration::from_millis(mesh::wire::MAX_HEARTBEAT_MS))
}

/// Presence copies per second that all tier-2 nodes together handle (see [`heartbeat`]).
const PRESENCES_PER_SEC: f64 = 100.0;
/// Formation has failed when the submitter sees nobody new alive for this long.
const FORMATION_STALL: Duration = Duration::from_secs(60);
/// Seed of the choices tier 2 makes (bootstrap peers, who is killed and when): tier 2 is
/// wall-clock and not deterministic, but it makes the same choices each time.
const CHOICES_SEED: u64 = 2;
/// Largest mesh tier 2 starts (memory and threads of one process on this class of machine).
pub const MAX_NODES: usize = 2000;
/// Prefix of the info of a result the submitter gave up waiting for (see `node::runs`).
const UNREACHABLE: &str = "unreachable:";
/// Prefix of the info of a job its target was killed in the middle of.
const INTERRUPTED: &str = "interrupted:";

pub struct Tier2 {
    pub workload: Workload,
    /// Latency and loss on every link (`None`: the memory transport as it is).
    pub link: Option<mesh::LinkShape>,
    /// Wall-clock time after the submit after which the run stops, finished or not.
    pub limit: Duration,
}

impl Tier2 {
    pub fn run(&self) -> Result<Report, String> {
        let w = &self.workload;
        if w.nodes < 2 {
            return Err("tier 2 needs at least 2 nodes".into());
        }
        if w.nodes > MAX_NODES {
            return Err(format!(
                "tier 2 starts at most {MAX_NODES} nodes in one process; use --tier 1 for {}",
                w.nodes
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("sim-node")
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        runtime.block_on(self.run_async())
    }

    async fn run_async(&self) -> Result<Report, String> {
        let started = Instant::now();
        let w = self.workload.clone();
        let root = tempfile::Builder::new()
            .prefix("directord-mesh-sim-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let mut rng = ChaCha8Rng::seed_from_u64(CHOICES_SEED);
        // Memory per node: the peak of this run over the process before its first run (the
        // allocator keeps what an earlier run freed, so a later run's own growth undercounts).
        static BASELINE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        static RUNS_BEFORE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let rss_before = *BASELINE.get_or_init(|| memory_kib("VmRSS:").unwrap_or(0));
        let runs_before = RUNS_BEFORE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = std::fs::write("/proc/self/clear_refs", "5");

        // Interrupted while it forms, the nodes started go with the future (the process then
        // ends, and the stores with `root`).
        let mesh = tokio::select! {
            mesh = Mesh::start(root.path(), w.nodes, self.link, &mut rng) => mesh?,
            _ = crate::signals::until_interrupted() => {
                return Err("interrupted while the mesh formed".into());
            }
        };
        let result = tokio::select! {
            result = self.measure(&mesh, root.path(), &mut rng) => result,
            _ = crate::signals::until_interrupted() => {
                Err("interrupted: the nodes were stopped and their stores removed".into())
            }
        };
        mesh.stop().await;
        let mut report = result?;
        let peak = memory_kib("VmHWM:").unwrap_or(0);
        report.rss_per_node = Some(peak.saturating_sub(rss_before) * 1024 / w.nodes as u64);
        if runs_before > 0 {
            report.notes.push(rss_note(runs_before));
        }
        report.wall = started.elapsed();
        Ok(report)
    }

    async fn measure(
        &self,
        mesh: &Mesh,
        root: &Path,
        rng: &mut ChaCha8Rng,
    ) -> Result<Report, String> {
        let w = &self.workload;
        let submitter = mesh.node(0).await.ok_or("the submitter is not running")?;
        let parents = match w.scenario {
            Scenario::Files => {
                let setup = parents_of(&w.files_setup_yaml(root), root)?;
                let ids = submit(&submitter, setup, &[]).await?;
                let records = collect(&submitter, &ids, Duration::from_secs(60)).await?;
                if records.values().any(|r| r.results.len() < r.nodes.len()) {
                    return Err(
                        "the setup run (an ARG and a WORKDIR per node) did not finish in 60 s"
                            .into(),
                    );
                }
                let src = root.join("blob.bin");
                write_random_file(&src, w.file_bytes, rng)?;
                parents_of(&Workload::files_yaml(&src), root)?
            }
            _ => parents_of(&w.jobs_yaml()?, root)?,
        };
        drop(submitter);

        // Disruptions: who goes down, and when (after the submit).
        let mut others: Vec<usize> = (1..w.nodes).collect();
        others.shuffle(rng);
        let plan: Vec<(usize, Option<Duration>, Duration)> = w
            .disruptions(&others, rng)
            .into_iter()
            .map(|d| (d.node, d.down, d.back))
            .collect();
        // Late joiners are down before the announce (still members: they were seen alive).
        for (i, kill, _) in &plan {
            if kill.is_none() {
                mesh.kill(*i).await;
            }
        }

        let submitter = mesh.node(0).await.ok_or("the submitter is not running")?;
        // The submitter's half and the other half (half of the other nodes, drawn). A split
        // from the start is in place before the submit.
        let mut tasks = tokio::task::JoinSet::new();
        let far: BTreeSet<usize> = far_half(&others).iter().copied().collect();
        let split_first = w.scenario == Scenario::Partition && w.partition_at.is_zero();
        if split_first {
            mesh.split(&far, true).await?;
        }
        let t0 = unix_ms();
        let t0_instant = Instant::now();
        let cpu_at_submit = cpu_seconds();
        let ids = submit(&submitter, parents, &w.run_targets()).await?;
        // Every disruption planned takes place (the run waits for them below).
        let disruptions = plan.len() + usize::from(w.scenario == Scenario::Partition);
        let last_join = plan
            .iter()
            .filter(|(_, kill, _)| kill.is_none())
            .map(|(_, _, back)| back.as_secs_f64())
            .max_by(f64::total_cmp);
        if w.scenario == Scenario::Partition {
            let mesh = mesh.clone();
            let (start, end) = (w.partition_at, w.partition_at + w.partition_for);
            spawn_split(&mut tasks, mesh, far, split_first, t0_instant, start, end);
        }
        for (i, kill, restart) in plan {
            let mesh = mesh.clone();
            tasks.spawn(async move {
                if let Some(at) = kill {
                    tokio::time::sleep_until((t0_instant + at).into()).await;
                    mesh.kill(i).await;
                }
                tokio::time::sleep_until((t0_instant + restart).into()).await;
                mesh.restart(i)
                    .await
                    .map_err(|e| format!("a node did not restart: {e}"))
            });
        }
        let records = collect(&submitter, &ids, self.limit).await?;
        // All N nodes share this machine's cores: a run cannot take less wall time than the
        // CPU it needs divided by the cores. Printed so that a slow figure can be told apart
        // from a slow protocol.
        if let (Some(before), Some(after)) = (cpu_at_submit, cpu_seconds()) {
            let wall = t0_instant.elapsed().as_secs_f64();
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            output::err_line(format_args!(
                "  the run took {wall:.1} s and {:.1} s of cpu ({:.2} of this machine's {cores} \
                 cores on average, the idle mesh's own work included)",
                after - before,
                (after - before) / wall.max(0.001),
            ));
        }
        while let Some(joined) = tasks.join_next().await {
            joined.map_err(|e| format!("a disruption task failed: {e}"))??;
        }
        let served = match submitter.status().await {
            Ok(status) => status.local.blob_bytes_served,
            Err(e) => return Err(format!("status of the submitter: {e}")),
        };
        let mut report = report(w, &records, t0, served);
        report.disruptions = disruptions;
        report.last_join = last_join;
        Ok(report)
    }
}

type Disruptions = tokio::task::JoinSet<Result<(), String>>;

/// Splits the mesh at `start` after the submit (unless it already is) and heals it at `end`.
fn spawn_split(
    disruptions: &mut Disruptions,
    mesh: Mesh,
    far: BTreeSet<usize>,
    already_split: bool,
    t0: Instant,
    start: Duration,
    end: Duration,
) {
    disruptions.spawn(async move {
        if !already_split {
            tokio::time::sleep_until((t0 + start).into()).await;
            mesh.split(&far, true).await?;
        }
        tokio::time::sleep_until((t0 + end).into()).await;
        mesh.split(&far, false).await
    });
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a run's memory per node holds after `runs_before` other runs in this process: the
/// peak includes what the allocator kept of theirs.
fn rss_note(runs_before: usize) -> String {
    format!(
        "RSS/node counts memory this process kept from the {runs_before} run{} before it in \
         this sweep (run it alone to measure it alone)",
        if runs_before == 1 { "" } else { "s" }
    )
}

/// A line of `/proc/self/status` in KiB (`VmRSS:` now, `VmHWM:` the peak).
fn memory_kib(field: &str) -> Option<u64> {
    process_memory_kib("self", field)
}

/// A line of `/proc/<process>/status` in KiB (`process`: a pid or `self`).
pub(crate) fn process_memory_kib(process: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU time (user + system) this process has used, from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // In clock ticks of USER_HZ, which Linux fixes at 100 for /proc on every architecture.
    Some(ticks as f64 / 100.0)
}

fn write_random_file(path: &Path, bytes: u64, rng: &mut ChaCha8Rng) -> Result<(), String> {
    let mut data = vec![0u8; bytes as usize];
    rng.fill(&mut data[..]);
    std::fs::write(path, data).map_err(|e| format!("{}: {e}", path.display()))
}

/// An orchestration written as YAML, parsed and resolved the way `orchestrate` does it.
fn parents_of(yaml: &str, cwd: &Path) -> Result<Vec<SubmittedParent>, String> {
    let orchestration = jobs::orchestration::parse_str(yaml, "simulated run")
        .map_err(|e| format!("simulated orchestration: {e}"))?;
    orchestration
        .entries
        .into_iter()
        .map(|entry| {
            let mut jobs = Vec::new();
            for job in entry.jobs {
                for spec in jobs::transfer::resolve(job.spec, cwd)? {
                    jobs.push(SubmittedJob {
                        spec,
                        definition: job.text.clone(),
                    });
                }
            }
            Ok(SubmittedParent {
                name: None,
                origin: None,
                targets: entry.targets,
                is_async: entry.is_async,
                fingerprint: entry.fingerprint,
                jobs,
            })
        })
        .collect()
}

/// Submits `parents` on `node` (to `targets`, or each parent's own) and returns the job ids.
async fn submit(
    node: &Node,
    parents: Vec<SubmittedParent>,
    targets: &[String],
) -> Result<Vec<String>, String> {
    let submission = Submission {
        parents,
        targets: targets.to_vec(),
        restrict: vec![],
        ignore_cache: false,
        force_async: false,
        stream: false,
        exec: false,
    };
    match node.request(ControlRequest::Submit(submission)).await {
        Reply::One(ControlResponse::Submitted(reply)) => {
            Ok(reply.jobs.into_iter().map(|j| j.job_id).collect())
        }
        Reply::One(ControlResponse::Refused(e) | ControlResponse::Error(e)) => {
            Err(format!("submit refused: {e}"))
        }
        Reply::One(other) => Err(format!("submit: unexpected answer {other:?}")),
        Reply::Stream(_) => Err("submit: unexpected stream".into()),
    }
}

/// Waits until every job has a real result from each of its targets, or `limit` passes, and
/// returns the records as they are then. Results first reported unreachable (a target down)
/// are waited for too: a restarted target delivers them later.
async fn collect(
    node: &Node,
    ids: &[String],
    limit: Duration,
) -> Result<BTreeMap<String, JobRecord>, String> {
    let deadline = Instant::now() + limit;
    let mut records = BTreeMap::new();
    if let Reply::Stream(mut rx) = node
        .request(ControlRequest::Watch {
            job_ids: ids.to_vec(),
            output: false,
        })
        .await
    {
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            match event {
                ControlResponse::Watch(WatchEvent::Done(record)) => {
                    records.insert(record.job_id.clone(), *record);
                }
                ControlResponse::WatchEnd => break,
                _ => {}
            }
        }
    }
    // Jobs not done yet, or done with placeholders: poll until real or out of time.
    loop {
        let pending: Vec<String> = ids
            .iter()
            .filter(|id| records.get(*id).is_none_or(|r| !complete(r)))
            .cloned()
            .collect();
        for id in &pending {
            match node.request(ControlRequest::JobInfo(id.clone())).await {
                Reply::One(ControlResponse::Job(Some(record))) => {
                    records.insert(id.clone(), *record);
                }
                Reply::One(other) => return Err(format!("job {id}: unexpected answer {other:?}")),
                Reply::Stream(_) => return Err(format!("job {id}: unexpected stream")),
            }
        }
        let done = ids.iter().all(|id| records.get(id).is_some_and(complete));
        if done || Instant::now() >= deadline {
            return Ok(records);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn complete(record: &JobRecord) -> bool {
    record.results.len() >= record.nodes.len()
        && record
            .results
            .values()
            .all(|r| !r.info.starts_with(UNREACHABLE))
}

/// The report of a run from the submitter's records; `t0` is the submit time.
/// What the submitter's `records` of a run submitted at `t0` (unix ms) say (tiers 2 and 3).
pub(crate) fn report(
    w: &Workload,
    records: &BTreeMap<String, JobRecord>,
    t0: u64,
    served: u64,
) -> Report {
    let since = |unix_ms: f64| ((unix_ms - t0 as f64) / 1000.0).max(0.0);
    let mut started: BTreeMap<&str, f64> = BTreeMap::new();
    let mut results = Vec::new();
    let mut unreachable = 0;
    let mut failed = 0;
    let mut interrupted = 0;
    let mut expected = 0;
    let mut targets = BTreeSet::new();
    for record in records.values() {
        expected += record.nodes.len();
        targets.extend(record.nodes.iter().map(|n| n.name.as_str()));
        for (name, result) in &record.results {
            if result.info.starts_with(UNREACHABLE) {
                unreachable += 1;
                continue;
            }
            if result.info.starts_with(INTERRUPTED) {
                interrupted += 1;
            } else if !result.state.is_ok() {
                if failed == 0 {
                    output::err_line(format_args!(
                        "warning: {} failed on {name}: {} {}",
                        record.definition,
                        result.info,
                        result.stderr.trim()
                    ));
                }
                failed += 1;
            }
            results.push(since(
                record.created_unix_ms as f64 + result.roundtrip_secs * 1000.0,
            ));
            let ran = since(result.finished_unix_ms as f64 - result.execution_secs * 1000.0);
            let first = started.entry(name.as_str()).or_insert(ran);
            *first = first.min(ran);
        }
    }
    Report {
        tier: 2,
        scenario: w.scenario.name().into(),
        nodes: w.nodes,
        seed: None,
        network: String::new(),
        targets: targets.len(),
        expected_results: expected,
        have_job: started.into_values().collect(),
        acked: vec![],
        results,
        unreachable,
        failed,
        interrupted,
        repeated_results: 0,
        conflicting_results: 0,
        traffic_measured: false,
        messages: vec![],
        payload_bytes: vec![],
        overhead_bytes: vec![],
        gossip_received: 0,
        gossip_first_receipts: 0,
        // The daemon counts the file bytes it serves, and no other upload.
        submitter_upload: (w.scenario == Scenario::Files).then_some(served),
        rss_per_node: None,
        wall: Duration::ZERO,
        events: 0,
        disruptions: 0,
        last_join: None,
        notes: Vec::new(),
    }
}

/// The running nodes, each replaceable (killed and restarted) while a run goes on.
#[derive(Clone)]
struct Mesh {
    nodes: Arc<Vec<Mutex<Option<Arc<Node>>>>>,
    configs: Arc<Vec<NodeConfig>>,
}

impl Mesh {
    /// Starts `n` nodes: node-0 creates the mesh, each other joins through a random earlier
    /// one; returns once the submitter sees all of them alive.
    async fn start(
        root: &Path,
        n: usize,
        link: Option<mesh::LinkShape>,
        rng: &mut ChaCha8Rng,
    ) -> Result<Mesh, String> {
        let begun = Instant::now();
        let mut nodes: Vec<Arc<Node>> = Vec::with_capacity(n);
        let mut configs = Vec::with_capacity(n);
        for i in 0..n {
            let dir: PathBuf = root.join("nodes").join(node_name(i));
            let mut cfg = NodeConfig::in_memory(dir, &node_name(i));
            cfg.heartbeat_interval = heartbeat(n);
            if let Some(shape) = link {
                cfg.transport = mesh::TransportKind::ShapedMemory(shape);
            }
            if let Some(first) = nodes.first() {
                let token = first.join_token();
                let via = &nodes[rng.gen_range(0..nodes.len())];
                cfg.bootstrap = via.join_token().peers.clone();
                cfg.mesh_key_choice = match token.mesh_key {
                    Some(key) => MeshKeyChoice::Key(key),
                    None => MeshKeyChoice::Open,
                };
            }
            let node = Node::start(cfg.clone())
                .await
                .map_err(|e| format!("{} did not start: {e}", node_name(i)))?;
            nodes.push(Arc::new(node));
            configs.push(cfg);
        }
        output::err_line(format_args!(
            "  {n} nodes started in {:.1} s",
            begun.elapsed().as_secs_f64()
        ));
        let mesh = Mesh {
            nodes: Arc::new(nodes.into_iter().map(|n| Mutex::new(Some(n))).collect()),
            configs: Arc::new(configs),
        };
        // Formation: the submitter sees everyone alive, then gossipsub's mesh settles. It may
        // take long on a busy machine; it has failed once nobody new appeared for a while.
        let submitter = mesh.node(0).await.ok_or("the submitter is not running")?;
        let mut best = 0;
        let mut progress_at = Instant::now();
        loop {
            let alive = match submitter.status().await {
                Ok(s) => s.nodes.iter().filter(|r| r.state == "alive").count(),
                Err(e) => return Err(format!("status of the submitter: {e}")),
            };
            if alive == n {
                output::err_line(format_args!(
                    "  all {n} seen alive by the submitter after {:.1} s",
                    begun.elapsed().as_secs_f64()
                ));
                break;
            }
            if alive > best {
                best = alive;
                progress_at = Instant::now();
            }
            if progress_at.elapsed() > FORMATION_STALL {
                mesh.stop().await;
                return Err(format!(
                    "the mesh did not form: the submitter sees {alive} of {n} nodes alive, \
                     and nobody new for {} s",
                    FORMATION_STALL.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Then the rest of formation (connections, gossipsub meshes, membership exchanges)
        // quiets down: the process uses less than half a core, or a minute has passed.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let settle_until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < settle_until {
            let before = cpu_seconds();
            tokio::time::sleep(Duration::from_secs(1)).await;
            match (before, cpu_seconds()) {
                (Some(a), Some(b)) if b - a < 0.5 => break,
                (Some(_), Some(_)) => continue,
                _ => break,
            }
        }
        output::err_line(format_args!(
            "  formation settled after {:.1} s (cpu {:.1} s)",
            begun.elapsed().as_secs_f64(),
            cpu_seconds().unwrap_or(0.0)
        ));
        Ok(mesh)
    }

    async fn node(&self, i: usize) -> Option<Arc<Node>> {
        self.nodes[i].lock().await.clone()
    }

    /// Kills node `i` the way `kill -9` does: no goodbye, state left on disk.
    async fn kill(&self, i: usize) {
        let Some(mut node) = self.nodes[i].lock().await.take() else {
            return;
        };
        // Someone may hold the node for a moment (a status call, the partition): wait for it.
        loop {
            match Arc::try_unwrap(node) {
                Ok(node) => return node.crash().await,
                Err(shared) => {
                    node = shared;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Starts node `i` again from its state directory, through the submitter.
    async fn restart(&self, i: usize) -> Result<(), String> {
        let mut cfg = self.configs[i].clone();
        if let Some(submitter) = self.node(0).await {
            cfg.bootstrap = submitter.join_token().peers.clone();
        }
        let node = Node::start(cfg)
            .await
            .map_err(|e| format!("{}: {e}", node_name(i)))?;
        *self.nodes[i].lock().await = Some(Arc::new(node));
        Ok(())
    }

    /// Splits the mesh (`apart`) into `far` and the rest, or heals the split: each node
    /// refuses, or allows again, connections with every node of the other side.
    async fn split(&self, far: &BTreeSet<usize>, apart: bool) -> Result<(), String> {
        let mut ids = Vec::with_capacity(self.nodes.len());
        for i in 0..self.nodes.len() {
            ids.push(self.node(i).await.map(|n| n.peer_id()));
        }
        for i in 0..self.nodes.len() {
            let Some(node) = self.node(i).await else {
                continue;
            };
            let other_side: Vec<_> = (0..ids.len())
                .filter(|j| far.contains(j) != far.contains(&i))
                .filter_map(|j| ids[j])
                .collect();
            node.set_blocked(other_side, apart)
                .await
                .map_err(|e| format!("{}: {e}", node_name(i)))?;
        }
        Ok(())
    }

    /// Shuts every running node down.
    async fn stop(&self) {
        let mut stopping = tokio::task::JoinSet::new();
        for slot in self.nodes.iter() {
            if let Some(node) = slot
                .lock()
                .await
                .take()
                .and_then(|n| Arc::try_unwrap(n).ok())
            {
                stopping.spawn(async move {
                    let _ = node.shutdown().await;
                });
            }
        }
        while stopping.join_next().await.is_some() {}
    }
}
