//! Tier 3: real daemons as processes. The `directord-mesh` binary is started N times on this
//! machine, each with its own state directory, and the run goes in through the CLI
//! (`orchestrate` on the first daemon), exactly as an operator would submit it; it is measured
//! from the submitter's job records (`manage --list-jobs --json`), like tier 2.
//!
//! With `--netns` every daemon gets a network namespace of its own, joined to the others by a
//! bridge (one per half of the mesh, the two halves joined by one more link): that is what lets
//! tier 3 give every link latency and loss (`tc netem` on each daemon's interface) and split
//! the mesh in two (the link between the halves goes down), as a real network would. Without
//! it the daemons listen on 127.0.0.1. Churn kills daemons with SIGKILL and starts them again
//! on the same state directory.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use node::records::JobRecord;
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::{
    metrics::Report,
    output,
    scenario::{Scenario, Workload, far_half, node_name},
};

/// Largest mesh tier 3 starts: each daemon is a process with a few threads and ~20 MiB.
pub const MAX_NODES: usize = 200;
/// Seed of the choices tier 3 makes (the halves, who is killed and when).
const CHOICES_SEED: u64 = 3;
/// Heartbeat of `n` daemons: 1 s (failure detection in three seconds, as the e2e tests use)
/// up to 10 nodes, then n/10 s. All of them share this machine's cores, and every node checks
/// every copy of every presence it receives (gossipsub signatures): on 2 cores, 100 daemons
/// beating every second keep it so busy that members expire.
fn heartbeat(n: usize) -> String {
    format!("{}s", n.div_ceil(10).max(1))
}
/// Port every daemon listens on in its own namespace.
const PORT: u16 = 7411;

/// One tier-3 run.
pub struct Tier3 {
    pub workload: Workload,
    /// The `directord-mesh` binary the daemons and CLI calls run.
    pub binary: PathBuf,
    /// Each daemon in its own network namespace (needs root, `ip` and `tc`).
    pub netns: bool,
    /// With `netns`: one-way delay added to every packet a daemon sends.
    pub latency: Option<Duration>,
    /// With `netns`: probability that a packet a daemon sends is dropped (TCP resends it).
    pub loss: f64,
    pub limit: Duration,
}

/// An error if a signal asked the run to stop.
fn check_interrupted() -> Result<(), String> {
    if crate::signals::interrupted() {
        Err("interrupted: the daemons were stopped and what they made removed".into())
    } else {
        Ok(())
    }
}

/// The binary next to this one (`target/<profile>/directord-mesh`; from a test executable in
/// `target/<profile>/deps`, the one above it), if it is there.
pub fn default_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("directord-mesh"))
        .find(|bin| bin.is_file())
}

impl Tier3 {
    pub fn run(&self) -> Result<Report, String> {
        let w = &self.workload;
        let started = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(CHOICES_SEED);
        // The far half: half of the nodes other than the submitter, drawn.
        let mut others: Vec<usize> = (1..w.nodes).collect();
        others.shuffle(&mut rng);
        let far: BTreeSet<usize> = far_half(&others).iter().copied().collect();
        let root = tempfile::Builder::new()
            .prefix("directord-mesh-tier3-")
            .tempdir()
            .map_err(|e| format!("a directory for the daemons: {e}"))?;
        // Dropped after the daemons (declared first): namespaces go once nothing runs in them.
        let net = if self.netns {
            Some(Net::create(w.nodes, &far, self.latency, self.loss)?)
        } else {
            None
        };
        let mut mesh = Mesh::start(&self.binary, root.path(), w.nodes, net.as_ref())?;
        let result = self.measure(&mut mesh, net.as_ref(), root.path(), &mut rng, others);
        let peaks: Vec<u64> = mesh
            .daemons
            .iter()
            .filter_map(|d| d.memory_kib("VmHWM:"))
            .collect();
        mesh.stop();
        let mut report = result?;
        if !peaks.is_empty() {
            report.rss_per_node = Some(peaks.iter().sum::<u64>() * 1024 / peaks.len() as u64);
        }
        report.wall = started.elapsed();
        if report.network.is_empty() {
            report.network = match &net {
                None => "daemons on 127.0.0.1".into(),
                Some(_) => format!(
                    "daemons in network namespaces, latency {}, loss {}",
                    self.latency
                        .map_or("none".into(), |l| format!("{}ms", l.as_millis())),
                    self.loss
                ),
            };
        }
        Ok(report)
    }

    fn measure(
        &self,
        mesh: &mut Mesh,
        net: Option<&Net>,
        root: &Path,
        rng: &mut ChaCha8Rng,
        others: Vec<usize>,
    ) -> Result<Report, String> {
        let w = &self.workload;
        let run = root.join("run.yaml");
        let text = match w.scenario {
            Scenario::Files => {
                let file = root.join("setup.yaml");
                write(&file, &w.files_setup_yaml(root))?;
                let ids = mesh.submit(&file, &[])?;
                let records = mesh.collect(&ids, Duration::from_secs(60))?;
                if records.values().any(|r| r.results.len() < r.nodes.len()) {
                    return Err(
                        "the setup run (an ARG and a WORKDIR per node) did not finish in 60 s"
                            .into(),
                    );
                }
                let src = root.join("blob.bin");
                let mut data = vec![0u8; w.file_bytes as usize];
                rng.fill(&mut data[..]);
                std::fs::write(&src, data).map_err(|e| format!("{}: {e}", src.display()))?;
                Workload::files_yaml(&src)
            }
            _ => w.jobs_yaml()?,
        };
        write(&run, &text)?;

        // Disruptions: who goes down (at, or before the submit for late joiners) and when
        // each comes back, after the submit.
        let plan = w.disruptions(&others, rng);
        // Late joiners are down before the submit (still members: they were seen alive).
        for d in &plan {
            if d.down.is_none() {
                mesh.daemons[d.node].kill();
            }
        }
        let late: BTreeSet<usize> = plan
            .iter()
            .filter(|d| d.down.is_none())
            .map(|d| d.node)
            .collect();
        let (mut disruptions, mut last_join) = (0, None);
        let mut events: Vec<(Duration, Event)> = Vec::new();
        for d in plan {
            if let Some(at) = d.down {
                events.push((at, Event::Kill(d.node)));
            }
            events.push((d.back, Event::Restart(d.node)));
        }
        if w.scenario == Scenario::Partition {
            if net.is_none() {
                return Err(
                    "the partition scenario of tier 3 needs --netns: the mesh is split \
                            by cutting the link between two network namespaces' bridges"
                        .into(),
                );
            }
            events.push((w.partition_at, Event::Split(true)));
            events.push((w.partition_at + w.partition_for, Event::Split(false)));
        }
        events.sort_by_key(|(at, _)| *at);

        let t0 = unix_ms();
        let t0_instant = Instant::now();
        // A split from the start is in place before the submit.
        if let Some((at, Event::Split(true))) = events.first()
            && at.is_zero()
        {
            net.expect("checked above").split(true)?;
            events.remove(0);
            disruptions += 1;
        }
        let ids = mesh.submit(&run, &w.run_targets())?;
        let deadline = t0_instant + self.limit;
        let records = loop {
            let now = t0_instant.elapsed();
            while events.first().is_some_and(|(at, _)| *at <= now) {
                let (_, event) = events.remove(0);
                match event {
                    Event::Kill(_) | Event::Split(true) => disruptions += 1,
                    Event::Restart(i) if late.contains(&i) => {
                        disruptions += 1;
                        last_join = Some(now.as_secs_f64());
                    }
                    _ => {}
                }
                match event {
                    Event::Kill(i) => mesh.daemons[i].kill(),
                    Event::Restart(i) => mesh.daemons[i].launch()?,
                    Event::Split(on) => net.expect("checked above").split(on)?,
                }
            }
            let records = mesh.records(&ids)?;
            let complete = records.len() == ids.len()
                && records.values().all(|r| {
                    r.results.len() >= r.nodes.len()
                        && r.results.values().all(|x| !x.info.starts_with(UNREACHABLE))
                });
            if (complete && events.is_empty()) || Instant::now() >= deadline {
                break records;
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(100));
        };
        // Whatever is still planned (a run that ended early) happens now, so that every
        // daemon is back and the mesh whole before it stops.
        let mut notes = Vec::new();
        let missed = events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Kill(_) | Event::Split(true)))
            .count();
        if missed > 0 {
            notes.push(format!(
                "{missed} kills or splits were planned after the run had ended (--limit) and \
                 did not disrupt it"
            ));
        }
        for (_, event) in events {
            match event {
                Event::Kill(i) => mesh.daemons[i].kill(),
                Event::Restart(i) => mesh.daemons[i].launch()?,
                Event::Split(on) => net.expect("checked above").split(on)?,
            }
        }
        let served = mesh.daemons[0]
            .status()
            .and_then(|s| s["self"]["blob_bytes_served"].as_u64())
            .unwrap_or(0);
        let mut report = crate::tier2::report(w, &records, t0, served);
        report.tier = 3;
        report.disruptions = disruptions;
        report.last_join = last_join;
        report.notes = notes;
        Ok(report)
    }
}

/// Something done to the mesh during a run.
enum Event {
    Kill(usize),
    Restart(usize),
    Split(bool),
}

/// Prefix of the info of a result the submitter gave up waiting for (see `node::runs`).
const UNREACHABLE: &str = "unreachable:";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The daemons of one run.
struct Mesh {
    daemons: Vec<Daemon>,
}

impl Mesh {
    /// Starts `n` daemons (the first creates the mesh, the others join with its token) and
    /// waits until the first sees all of them alive.
    fn start(binary: &Path, root: &Path, n: usize, net: Option<&Net>) -> Result<Mesh, String> {
        let listen = |i: usize| match net {
            Some(_) => format!("/ip4/{}/tcp/{PORT}", Net::address(i)),
            None => "/ip4/127.0.0.1/tcp/0".into(),
        };
        let daemon = |i: usize, token: Option<&str>| {
            let mut args = vec![
                "--name".to_string(),
                node_name(i),
                "--listen".into(),
                listen(i),
                "--heartbeat-interval".into(),
                heartbeat(n),
            ];
            if let Some(t) = token {
                args.extend(["--token".into(), t.into()]);
            }
            Daemon {
                binary: binary.to_path_buf(),
                state_dir: root.join(node_name(i)),
                args,
                netns: net.map(|net| net.namespace(i)),
                child: None,
            }
        };
        let mut first = daemon(0, None);
        first.launch()?;
        let token_file = first.state_dir.join("join-token");
        wait(Duration::from_secs(30), "the first daemon to start", || {
            first.check_running()?;
            Ok(first.status().is_some() && token_file.exists())
        })?;
        let token = std::fs::read_to_string(&token_file)
            .map_err(|e| format!("{}: {e}", token_file.display()))?;
        let mut mesh = Mesh {
            daemons: vec![first],
        };
        for i in 1..n {
            let mut d = daemon(i, Some(token.trim()));
            d.launch()?;
            mesh.daemons.push(d);
        }
        let formed = Instant::now();
        wait(Duration::from_secs(120), "the mesh to form", || {
            for d in &mut mesh.daemons {
                d.check_running()?;
            }
            Ok(mesh.daemons[0].status().is_some_and(|s| {
                s["nodes"]
                    .as_array()
                    .is_some_and(|a| a.iter().filter(|m| m["state"] == "alive").count() == n)
            }))
        })?;
        output::err_line(format_args!(
            "  {n} daemons formed a mesh in {:.1} s",
            formed.elapsed().as_secs_f64()
        ));
        Ok(mesh)
    }

    /// `orchestrate FILE [--target NAME...]` on the first daemon: the job ids.
    fn submit(&self, file: &Path, targets: &[String]) -> Result<Vec<String>, String> {
        let mut args = vec!["orchestrate".to_string(), file.display().to_string()];
        for t in targets {
            args.extend(["--target".into(), t.clone()]);
        }
        let o = self.daemons[0].cli(&args)?;
        if !o.status.success() {
            return Err(format!(
                "orchestrate: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect())
    }

    /// The submitter's records of `ids`.
    fn records(&self, ids: &[String]) -> Result<BTreeMap<String, JobRecord>, String> {
        let o = self.daemons[0].cli(&["manage".into(), "--list-jobs".into(), "--json".into()])?;
        if !o.status.success() {
            return Err(format!(
                "manage --list-jobs: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        let all: Vec<JobRecord> = serde_json::from_slice(&o.stdout)
            .map_err(|e| format!("manage --list-jobs --json: {e}"))?;
        let wanted: BTreeSet<&String> = ids.iter().collect();
        Ok(all
            .into_iter()
            .filter(|r| wanted.contains(&r.job_id))
            .map(|r| (r.job_id.clone(), r))
            .collect())
    }

    /// The records of `ids` once every result is in, or as they are after `limit`.
    fn collect(
        &self,
        ids: &[String],
        limit: Duration,
    ) -> Result<BTreeMap<String, JobRecord>, String> {
        let deadline = Instant::now() + limit;
        loop {
            let records = self.records(ids)?;
            let done = records.len() == ids.len()
                && records.values().all(|r| r.results.len() >= r.nodes.len());
            if done || Instant::now() >= deadline {
                return Ok(records);
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every daemon leaves (SIGTERM), or is killed after 10 s.
    fn stop(&mut self) {
        for d in &mut self.daemons {
            d.terminate();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for d in &mut self.daemons {
            d.wait_or_kill(deadline);
        }
    }
}

/// Polls `done` every 100 ms until it holds, or fails after `limit` naming `what`.
fn wait(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !done()? {
        if Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// One daemon: `directord-mesh --state-dir DIR join ARGS...`, in its namespace if it has one.
struct Daemon {
    binary: PathBuf,
    state_dir: PathBuf,
    args: Vec<String>,
    netns: Option<String>,
    child: Option<Child>,
}

impl Daemon {
    fn launch(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|e| format!("{}: {e}", self.state_dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.join("daemon.log"))
            .map_err(|e| format!("daemon log: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("daemon log: {e}"))?;
        // `ip netns exec` runs the daemon in place: the child's pid is the daemon's.
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
        // and getppid(2), both async-signal-safe. The daemon gets SIGTERM (and leaves the mesh) when the
        // thread that started it ends: a simulator killed outright leaves no daemon behind.
        // (Daemons are started from the simulator's main thread only; `ip netns exec` keeps
        // the setting across its exec of the daemon.)
        let simulator = nix::unistd::getpid();
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
                // Killed before the setting took: no daemon to leave behind either.
                if nix::unistd::getppid() != simulator {
                    return Err(std::io::Error::other("the simulator has ended"));
                }
                Ok(())
            });
        }
        let child = command
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("join")
            .args(&self.args)
            .env("RUST_LOG", "warn")
            // What an operator's daemon has: no build directories on the library path.
            .env_remove("LD_LIBRARY_PATH")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// An error if the daemon has exited (it could not start: a taken port, a bad binary),
    /// with its exit status and the end of its log (which goes with its state directory).
    fn check_running(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let Ok(Some(status)) = child.try_wait() else {
            return Ok(());
        };
        self.child = None;
        let log = std::fs::read_to_string(self.state_dir.join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
        Err(format!(
            "{} in {} exited ({status}) while starting{}",
            self.binary.display(),
            self.state_dir.display(),
            if tail.is_empty() {
                ", saying nothing".to_string()
            } else {
                format!(":\n  {tail}")
            }
        ))
    }

    /// SIGKILL: no goodbye, as a crash or a power loss.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn terminate(&mut self) {
        if let Some(child) = &self.child {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    fn wait_or_kill(&mut self, deadline: Instant) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// Runs the CLI against this daemon (the control socket works across namespaces).
    fn cli(&self, args: &[String]) -> Result<Output, String> {
        Command::new(&self.binary)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))
    }

    fn status(&self) -> Option<serde_json::Value> {
        let o = self
            .cli(&["status".into(), "--json".into()])
            .ok()
            .filter(|o| o.status.success())?;
        serde_json::from_slice(&o.stdout).ok()
    }

    /// A line of the daemon's `/proc/PID/status`, in KiB.
    fn memory_kib(&self, field: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        crate::tier2::process_memory_kib(&pid.to_string(), field)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The network of a `--netns` run: a namespace per daemon, each with one interface on one of
/// two bridges (the submitter's half and the far half) in a hub namespace, and one link
/// between the bridges that [`Net::split`] takes down. Removed when dropped.
struct Net {
    prefix: String,
    nodes: usize,
}

impl Net {
    fn create(
        nodes: usize,
        far: &BTreeSet<usize>,
        latency: Option<Duration>,
        loss: f64,
    ) -> Result<Net, String> {
        remove_stale_namespaces("dmsim");
        let net = Net {
            prefix: format!("dmsim{}", std::process::id()),
            nodes,
        };
        let hub = net.hub();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        for bridge in ["near", "far"] {
            ip(&["-n", &hub, "link", "add", bridge, "type", "bridge"])?;
            ip(&["-n", &hub, "link", "set", bridge, "up"])?;
        }
        ip(&[
            "-n", &hub, "link", "add", "trunk0", "type", "veth", "peer", "name", "trunk1",
        ])?;
        for (end, bridge) in [("trunk0", "near"), ("trunk1", "far")] {
            ip(&["-n", &hub, "link", "set", end, "master", bridge])?;
            ip(&["-n", &hub, "link", "set", end, "up"])?;
        }
        for i in 0..nodes {
            let ns = net.namespace(i);
            let port = format!("p{i}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ])?;
            let bridge = if far.contains(&i) { "far" } else { "near" };
            ip(&["-n", &hub, "link", "set", &port, "master", bridge])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            let address = format!("{}/16", Net::address(i));
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            if latency.is_some() || loss > 0.0 {
                let mut args: Vec<String> =
                    ["-n", &ns, "qdisc", "add", "dev", "eth0", "root", "netem"]
                        .map(String::from)
                        .to_vec();
                if let Some(l) = latency {
                    args.extend(["delay".into(), format!("{}us", l.as_micros())]);
                }
                if loss > 0.0 {
                    args.extend(["loss".into(), format!("{}%", loss * 100.0)]);
                }
                tc(&args).map_err(|e| {
                    if e.contains("qdisc kind is unknown") {
                        format!(
                            "{e} (--latency and --loss need the kernel's netem queueing \
                             discipline, sch_netem, which this kernel does not offer)"
                        )
                    } else {
                        e
                    }
                })?;
            }
        }
        Ok(net)
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    fn namespace(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    /// Node `i`'s address in 10.233.0.0/16, from 10.233.0.1 ([`MAX_NODES`] keeps it below
    /// the broadcast address).
    fn address(i: usize) -> String {
        let host = i + 1;
        format!("10.233.{}.{}", host / 256, host % 256)
    }

    /// Takes the link between the halves down (`on`) or up again.
    fn split(&self, on: bool) -> Result<(), String> {
        let state = if on { "down" } else { "up" };
        output::err_line(format_args!("  the link between the halves goes {state}"));
        ip(&["-n", &self.hub(), "link", "set", "trunk0", state])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in (0..self.nodes)
            .map(|i| self.namespace(i))
            .chain([self.hub()])
        {
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Removes the network namespaces of earlier runs whose program is gone (killed before it could
/// clean up): those named `<prefix><pid>-...` where no process `pid` runs. The end-to-end tests
/// use it too, with their own prefix.
pub fn remove_stale_namespaces(prefix: &str) {
    let Ok(o) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run(
        "ip",
        &args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    )
}

fn tc(args: &[String]) -> Result<(), String> {
    let (netns, rest) = match args {
        [flag, ns, rest @ ..] if flag == "-n" => (Some(ns.clone()), rest.to_vec()),
        _ => (None, args.to_vec()),
    };
    match netns {
        Some(ns) => {
            let mut all = vec!["netns".to_string(), "exec".into(), ns, "tc".into()];
            all.extend(rest);
            run("ip", &all)
        }
        None => run("tc", &rest),
    }
}

fn run(program: &str, args: &[String]) -> Result<(), String> {
    let o = Command::new(program).args(args).output().map_err(|e| {
        format!("cannot run `{program}` (iproute2; --netns needs it and root): {e}")
    })?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}
