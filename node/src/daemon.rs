//! The daemon: one [`Node`] per machine (or many in one process for tests and simulations).
//!
//! Starting a node opens and locks its state directory, loads or creates its identity and mesh
//! key, opens its database (checking that the disk takes writes), cache, blob store and process
//! log and binds its control socket, all before it starts the network (a node that cannot
//! start never joins); then it writes the join token and serves the socket. Shutting it down
//! says goodbye to the mesh, remembers where the members were and removes the socket.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use jobs::{
    cache::{self, Cache},
    executor::{Executor, ExecutorConfig},
    processes::ProcessLog,
};
use mesh::{
    JoinToken, MembershipChange, MeshConfig, MeshError, MeshEvent, MeshHandle, MeshKey, MeshStatus,
    Multiaddr, PeerId, TransportKind, multiaddr_with_peer,
};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::{
    blobs::{BlobStore, ImportError},
    config::NodeConfig,
    control::{
        self, ControlHandler, ControlRequest, ControlResponse, NodeRow, Reply, ResultsOwed,
        SelfInfo, StatusReport, Submission, WatchEvent,
    },
    host,
    records::JobRecord,
    runs::{self, Runs},
    state::{StateDir, StateError},
    store::Store,
    submit::{self, SubmitError},
    transfers::{TestHooks, Transfers},
};

/// The release every node reports in its heartbeat: the crate's version, and the commit it
/// was built from when known (`0.1.0+1a2b3c4d5e6f`; see `build.rs`), so that `status` tells
/// the nodes a rolling upgrade has reached from the others.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    env!("DIRECTORD_MESH_BUILD_SUFFIX")
);

/// How long a clean stop waits for the jobs still running to end once asked (SIGTERM)
/// before it stops them (SIGKILL): well within what a service manager waits for the daemon
/// (systemd: 90 s).
const JOB_STOP_GRACE: Duration = Duration::from_secs(5);

/// How often the addresses of alive members are saved for the next start.
const SAVE_PEERS_EVERY: Duration = Duration::from_secs(30);
/// Least time between two saves of the member addresses.
const SAVE_PEERS_SETTLE: Duration = Duration::from_secs(10);
/// How many members' addresses are saved (each is a bootstrap peer at the next start).
const REMEMBER_PEERS: usize = 32;
/// And this many members not alive then (left or expired), most lately heard first: they may
/// come back before the node does, as when a whole fleet is stopped one node after another.
const REMEMBER_OTHERS: usize = 16;

/// Why a node could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("state directory: {0}")]
    State(#[from] StateError),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error("control socket: {0}")]
    Control(String),
    #[error("{0}")]
    Store(String),
}

/// What a node knows about itself that does not change while it runs.
#[derive(Debug)]
struct NodeInfo {
    name: String,
    peer_id: PeerId,
    state_dir: PathBuf,
    mesh_key: Option<MeshKey>,
    join_token: JoinToken,
}

/// A running node.
pub struct Node {
    mesh: MeshHandle,
    info: Arc<NodeInfo>,
    control: Arc<Control>,
    store: Store,
    state: Arc<StateDir>,
    mesh_key_created: bool,
    listen_addrs: Vec<Multiaddr>,
    control_socket: Option<PathBuf>,
    tasks: Vec<JoinHandle<()>>,
    /// The tasks among them (and the mesh's) without which the node is a member in name
    /// only, by what the log calls them (see [`Node::lost_task`]).
    essential: Vec<(&'static str, tokio::task::AbortHandle)>,
    mesh_task: JoinHandle<()>,
    /// The process groups of the jobs running here, stopped at shutdown.
    processes: Arc<ProcessLog>,
    /// How long a clean stop lets the jobs running finish on their own (their results recorded
    /// and sent as any other's) before it asks them to end: a routine restart between two
    /// short jobs of a parent cuts none of them short (the rest of the parent runs after the
    /// restart). `join --stop-grace`.
    stop_grace: Duration,
    /// Waits for the database to close as the process ends ([`StateDirLock`]).
    store_closing: std::sync::Mutex<Option<crate::store::StoreClosing>>,
}

/// A node's state directory, kept locked as long as this is held, past the node's shutdown.
/// A daemon holds it until its process ends: no second daemon takes the directory while work
/// of this one (on other threads) may still be going.
pub struct StateDirLock {
    _state: Arc<StateDir>,
    /// Waited for before the directory is let go: the database closes once nothing uses it.
    store_closing: Option<crate::store::StoreClosing>,
}

/// How long a stopping node waits for results on their way to originators that take them.
const DELIVER_AT_STOP: Duration = Duration::from_secs(5);

/// How long the end of a daemon waits for its database to close.
const STORE_CLOSE_WAIT: Duration = Duration::from_secs(10);

impl StateDirLock {
    /// The directory is let go at once, the database closed or not: a stop asked to be at
    /// once (a second signal) does not wait for it.
    pub fn without_waiting_for_the_database(&mut self) {
        self.store_closing = None;
    }
}

impl Drop for StateDirLock {
    fn drop(&mut self) {
        if let Some(closing) = self.store_closing.take()
            && !closing.wait(STORE_CLOSE_WAIT)
        {
            warn!(
                "the database was still in use as the daemon ended: the next start checks it \
                 (a walk over all of it)"
            );
        }
    }
}

/// The control socket of a node still starting: removed if the start fails before the node
/// serves it (`listener` taken), so no socket is left that nothing answers.
struct UnservedSocket {
    listener: Option<tokio::net::UnixListener>,
    path: PathBuf,
}

impl Drop for UnservedSocket {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What a node keeps on its disk, opened: everything of a start that can fail before it joins.
struct OnDisk {
    state: Arc<StateDir>,
    keypair: mesh::Keypair,
    mesh_key: Option<MeshKey>,
    mesh_key_created: bool,
    store: Store,
    cache: Arc<Cache>,
    blobs: Arc<BlobStore>,
    processes: Arc<ProcessLog>,
    listener: Option<UnservedSocket>,
}

impl OnDisk {
    fn open(config: &NodeConfig) -> Result<OnDisk, NodeError> {
        if let Some(socket) = &config.control_socket {
            crate::state::check_socket_path(socket)?;
        }
        let state = Arc::new(StateDir::open(&config.state_dir)?);
        speak_wire_version_of_test_hook(state.path());
        let keypair = state.identity()?;
        let (mesh_key, mesh_key_created) = state.mesh_key(&config.mesh_key_choice)?;
        let store = Store::open(&config.state_dir.join("node.redb"))
            .map_err(|e| NodeError::Store(e.to_string()))?;
        let cache = Arc::new(
            Cache::open(
                store.database(),
                cache::DEFAULT_TTL,
                Arc::new(StoreCacheSink(store.clone())),
            )
            .map_err(|e| NodeError::Store(e.to_string()))?,
        );
        let blobs =
            Arc::new(BlobStore::open(&config.state_dir.join("blobs")).map_err(NodeError::Store)?);
        // Jobs a crash of the previous run left running are stopped before anything starts:
        // they are reported interrupted, and a resend must not run beside them.
        let log_path = config.state_dir.join("running-jobs");
        let (processes, stopped) = ProcessLog::open(&log_path)
            .map_err(|e| NodeError::Store(format!("{}: {e}", log_path.display())))?;
        if !stopped.is_empty() {
            warn!(
                groups = ?stopped,
                "stopped the process groups of jobs the previous run of this node left running"
            );
        }
        // The control socket too (a client that connects now waits until the node serves);
        // should the start fail from here, it goes again.
        let listener = match &config.control_socket {
            Some(socket) => Some(UnservedSocket {
                listener: Some(
                    control::bind(socket, config.socket_group.as_deref())
                        .map_err(NodeError::Control)?,
                ),
                path: socket.clone(),
            }),
            None => None,
        };
        Ok(OnDisk {
            state,
            keypair,
            mesh_key,
            mesh_key_created,
            store,
            cache,
            blobs,
            processes: Arc::new(processes),
            listener,
        })
    }
}

/// How this node joins: whom it dials first (the peers it was given, then those it knew), as
/// whom, and this start's number.
async fn mesh_config(
    config: &NodeConfig,
    state: &StateDir,
    keypair: mesh::Keypair,
    mesh_key: Option<MeshKey>,
) -> MeshConfig {
    let peer_id = keypair.public().to_peer_id();
    let mut bootstrap = resolve_dns(&config.bootstrap).await;
    // A join token made on this node (its state directory copied to this machine, with the
    // token) names the node itself: no peer there, only the node's own copy, if any.
    bootstrap.retain(|addr| {
        let own = is_own(addr, &peer_id);
        if own {
            warn!(
                %addr,
                "not dialling a bootstrap address of this node's own peer id (a join token made \
                 on this node: is this a copy of its state directory?)"
            );
        }
        !own
    });
    for addr in state.known_peers() {
        if !bootstrap.contains(&addr) && !is_own(&addr, &peer_id) {
            bootstrap.push(addr);
        }
    }
    let identity = mesh::LocalIdentity {
        name: config.name.clone(),
        machine_id: host::machine_id(),
        version: VERSION.to_string(),
        labels: config.labels.clone(),
        host_uptime_at_start: host::uptime(),
    };
    let mut mesh_config = MeshConfig::new(keypair, config.transport, identity);
    mesh_config.mesh_key = mesh_key;
    mesh_config.listen = config.listen.clone();
    mesh_config.bootstrap = bootstrap;
    mesh_config.heartbeat_interval = config.heartbeat_interval;
    mesh_config.connection_budget = config.connection_budget;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    mesh_config.incarnation = Some(state.next_incarnation(now_ms));
    mesh_config
}

/// Joins the mesh and writes the join token (see [`join_token_of`]), leaving again if that fails.
async fn join_mesh(
    config: &NodeConfig,
    state: &StateDir,
    keypair: mesh::Keypair,
    mesh_key: Option<MeshKey>,
) -> Result<(mesh::network::Mesh, MeshStatus, JoinToken), NodeError> {
    let mesh_config = mesh_config(config, state, keypair, mesh_key).await;
    let mesh = mesh::start(mesh_config).await?;
    match join_token_of(&mesh.handle, mesh_key, state, config).await {
        Ok((status, join_token)) => Ok((mesh, status, join_token)),
        Err(e) => {
            // Joined already, perhaps: peers hear it go rather than wait for it to expire.
            let _ = mesh.handle.shutdown().await;
            let _ = mesh.task.await;
            Err(e)
        }
    }
}

/// Checks the blobs a previous run left ([`BlobStore::verify_existing`]) on a blocking thread.
fn verify_blobs_in_background(blobs: &Arc<BlobStore>) {
    let blobs = blobs.clone();
    tokio::task::spawn_blocking(move || blobs.verify_existing());
}

/// Starts the executor, which reaches other nodes (QUERY, JOB_WAIT) through the runs.
fn start_executor(
    config: &NodeConfig,
    runs: &Runs,
    mesh: &MeshHandle,
    transfers: &Transfers,
    cache: &Arc<Cache>,
    processes: &Arc<ProcessLog>,
) -> (
    Executor,
    tokio::sync::mpsc::Receiver<jobs::executor::ExecEvent>,
) {
    let executor_config = ExecutorConfig {
        coordinator: Some(runs.coordinator(mesh.clone(), transfers.clone())),
        processes: Some(processes.clone()),
        own_thread: config.jobs_thread,
        ..ExecutorConfig::default()
    };
    Executor::start(cache.clone(), executor_config)
}

/// How long a target that said goodbye has to come back before its jobs are written off.
fn left_grace(heartbeat_interval: Duration) -> Duration {
    // As long as one that went silent, and at least 15 s whatever the heartbeat: a restart
    // takes as long with 1 s heartbeats.
    (heartbeat_interval * mesh::membership::EXPIRY_INTERVALS)
        .max(coordination::originator::OriginatorConfig::default().left_grace)
}

/// Halts the jobs from the database's first failed write: this node starts no job after it.
fn halt_jobs_on_store_failure(store: &Store, processes: &Arc<ProcessLog>) -> JoinHandle<()> {
    // The result could not be kept; the job is reported interrupted once the node is back, and
    // must not have run meanwhile.
    let failed = store.failed();
    let halted = processes.clone();
    tokio::spawn(async move {
        failed.await;
        halted.halt();
    })
}

/// Serves the control socket bound at the start, if any (from now on shutdown removes it).
fn serve_control_socket(
    listener: &mut Option<UnservedSocket>,
    control: &Arc<Control>,
) -> Option<JoinHandle<()>> {
    let listener = listener.as_mut().and_then(|l| l.listener.take())?;
    Some(tokio::spawn(control::serve(listener, control.clone())))
}

impl Node {
    /// Starts a node with `config`.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        // What can fail to open is opened before this node joins the mesh: a node that
        // cannot start would otherwise come alive on every other node, then leave.
        let OnDisk {
            state,
            keypair,
            mesh_key,
            mesh_key_created,
            store,
            cache,
            blobs,
            processes,
            mut listener,
        } = OnDisk::open(&config)?;
        let peer_id = keypair.public().to_peer_id();
        let (mesh, status, join_token) = join_mesh(&config, &state, keypair, mesh_key).await?;
        let info = Arc::new(NodeInfo {
            name: config.name.clone(),
            peer_id,
            state_dir: state.path().to_path_buf(),
            mesh_key,
            join_token,
        });

        // Checked in the background once nothing can fail the start any more (a runtime
        // dropped by a failed start would wait for the whole store to be hashed).
        verify_blobs_in_background(&blobs);
        let (transfers, transfers_task) = Transfers::start(
            blobs.clone(),
            mesh.handle.clone(),
            TestHooks::from_env(&config.state_dir),
        );
        let (runs, runs_inbox) = Runs::channel();
        // The mesh waits for its events to be taken once its queue is full (it stops polling
        // the network then): they are taken by a task of their own from the first moment the
        // start yields. The runs' restore below reads the store without yielding (a start
        // with a long backlog holds the node's thread that long); what comes meanwhile waits in
        // the mesh's queue, then in the runs' inbox, and is taken in order after it.
        let members_changed = Arc::new(tokio::sync::Notify::new());
        let events_task = tokio::spawn(consume_events(
            mesh.events,
            runs.clone(),
            transfers.clone(),
            state.clone(),
            members_changed.clone(),
        ));
        let (executor, exec_events) =
            start_executor(&config, &runs, &mesh.handle, &transfers, &cache, &processes);
        let left_grace = left_grace(config.heartbeat_interval);
        // A node that cannot write its database stops. Watched from before the restore, which
        // writes too (and halts the log itself should that fail).
        let halt_on_failure = halt_jobs_on_store_failure(&store, &processes);
        // Restores the runs the store holds and starts their actor.
        let runs_tasks = runs.start(
            runs_inbox,
            runs::RunsParts {
                local_name: config.name.clone(),
                mesh: mesh.handle.clone(),
                store: store.clone(),
                executor,
                exec_events,
                cache: cache.clone(),
                blobs: blobs.clone(),
                blob_retention: config.blob_retention,
                record_retention: config.record_retention,
                allow_submitters: config.allow_submitters.clone(),
                processes: Some(processes.clone()),
                left_grace,
            },
        );
        let control = Arc::new(Control {
            mesh: mesh.handle.clone(),
            info: info.clone(),
            runs: runs.clone(),
            store: store.clone(),
            cache: cache.clone(),
            blobs,
            transfers: transfers.clone(),
            left_grace,
        });
        // The tasks the node cannot do without: one that ends while the node runs panicked.
        let mut essential: Vec<(&'static str, tokio::task::AbortHandle)> = vec![
            ("the mesh task", mesh.task.abort_handle()),
            ("the file transfer task", transfers_task.abort_handle()),
            ("the mesh events task", events_task.abort_handle()),
        ];
        essential.extend(
            runs_tasks
                .iter()
                .map(|t| ("the jobs task", t.abort_handle())),
        );
        let mut tasks = runs_tasks;
        tasks.push(halt_on_failure);
        tasks.push(transfers_task);
        tasks.push(events_task);
        tasks.push(tokio::spawn(save_known_peers(
            mesh.handle.clone(),
            state.clone(),
            members_changed.clone(),
        )));
        let control_task = serve_control_socket(&mut listener, &control);
        essential.extend(
            control_task
                .iter()
                .map(|t| ("the control socket task", t.abort_handle())),
        );
        tasks.extend(control_task);
        info!(name = %config.name, %peer_id, "node started");
        let store_closing = store.closing();
        Ok(Node {
            mesh: mesh.handle,
            info,
            control,
            store,
            state,
            mesh_key_created,
            listen_addrs: status.listen_addrs,
            control_socket: config.control_socket,
            stop_grace: config.stop_grace,
            tasks,
            essential,
            mesh_task: mesh.task,
            processes,
            store_closing: std::sync::Mutex::new(store_closing),
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.info.peer_id
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The join token of this node's mesh, with this node as the bootstrap peer.
    pub fn join_token(&self) -> &JoinToken {
        &self.info.join_token
    }

    /// Addresses this node listens on.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// Whether this start created a new mesh (first run without a token or key).
    pub fn created_mesh(&self) -> bool {
        self.mesh_key_created
    }

    pub fn mesh_key(&self) -> Option<MeshKey> {
        self.info.mesh_key
    }

    pub fn control_socket(&self) -> Option<&PathBuf> {
        self.control_socket.as_ref()
    }

    /// Stops the jobs still running at once (SIGKILL to their process groups), whatever a
    /// clean stop under way waits for: what a second signal during [`Node::shutdown`]'s
    /// grace does before the process exits. Call it on a handle taken before the shutdown.
    pub fn job_stopper(&self) -> impl FnOnce() + Send + 'static {
        let processes = Arc::clone(&self.processes);
        move || {
            let stopped = processes.stop_all();
            if !stopped.is_empty() {
                warn!(groups = ?stopped, "stopped the jobs still running at once (SIGKILL)");
            }
        }
    }

    /// A task the node cannot do without that has ended while the node runs (it panicked: a
    /// bug, the log says where), by name. The node is then a member in name only (a dead
    /// mesh task answers nobody; a dead jobs task runs nothing): the daemon stops, so that
    /// its service manager starts it again.
    pub fn lost_task(&self) -> Option<&'static str> {
        self.essential
            .iter()
            .find(|(_, task)| task.is_finished())
            .map(|(name, _)| *name)
    }

    /// Keeps this node's state directory locked for as long as the result is held, even after
    /// the node has shut down (see [`StateDirLock`]); dropped, it waits for the database to
    /// close first (a blocking wait: for the end of the process, outside the runtime).
    pub fn hold_state_dir(&self) -> StateDirLock {
        StateDirLock {
            _state: self.state.clone(),
            store_closing: self
                .store_closing
                .lock()
                .ok()
                .and_then(|mut closing| closing.take()),
        }
    }

    /// This node and its membership table, as `status` shows them.
    pub async fn status(&self) -> Result<StatusReport, NodeError> {
        Ok(report(
            &self.info,
            self.mesh.status().await?,
            self.control.transfers.served_bytes(),
        ))
    }

    /// Answers a control request as the control socket would (for tests and simulations,
    /// which drive nodes in-process).
    pub async fn request(&self, request: ControlRequest) -> Reply {
        self.control.handle(request).await
    }

    /// Refuses (`blocked`) or allows again connections with `peers`, as a network split
    /// would. For tests and simulations.
    pub async fn set_blocked(&self, peers: Vec<PeerId>, blocked: bool) -> Result<(), NodeError> {
        self.mesh
            .set_blocked(peers, blocked)
            .await
            .map_err(NodeError::from)
    }

    /// Resolves with the reason once this node's database could not be written. The node
    /// should then stop: it can no longer keep what it acknowledges (see `store`).
    pub fn store_failed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        self.store.failed()
    }

    /// Stops the node as a crash would: no goodbye to its peers (their connections just drop),
    /// nothing saved beyond what the store has already committed. For tests and simulations.
    pub async fn crash(self) {
        // The executor is not a task of the node's: it starts nothing more (a killed daemon's
        // would not either), or a job could start after the restart has read the log.
        self.processes.halt();
        for task in &self.tasks {
            task.abort();
        }
        self.mesh_task.abort();
        // Aborted tasks drop what they hold (the store among it) when they next get polled:
        // waiting for them frees the state directory for a restart.
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.mesh_task.await;
    }

    /// Leaves the mesh cleanly: goodbye to the peers, member addresses saved, socket removed.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        // Queued jobs stay queued (they run after the restart); those running are given
        // `stop_grace` to finish and have their outcome taken in (a node whose database
        // fails keeps nothing more: its jobs are stopped at once), then stopped below.
        self.processes.halt();
        let running = self.processes.jobs_in_flight();
        if running > 0 && !self.store.has_failed() && !self.stop_grace.is_zero() {
            info!(
                jobs = running,
                "waiting up to {:?} for the jobs still running to finish (another signal \
                 stops them at once)",
                self.stop_grace
            );
            let deadline = tokio::time::Instant::now() + self.stop_grace;
            while self.processes.jobs_in_flight() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Results still on their way to originators that take them (of jobs that ended in
        // the grace or just before the stop) go before the node leaves: one held back a
        // moment for company, or sent as the node said goodbye, would otherwise wait for the
        // next start while its submitter writes the job off once the goodbye's grace is over.
        // Those for an originator that does not answer wait on disk for the next start.
        if !self.store.has_failed() {
            let deadline = tokio::time::Instant::now() + DELIVER_AT_STOP;
            // A runs actor too busy to answer by the deadline is not waited for either.
            while tokio::time::timeout_at(deadline, self.control.runs.delivering())
                .await
                .unwrap_or(false)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // The check of the blobs a previous run left ends: the next start checks the rest.
        self.control.blobs.stop();
        if let Ok(members) = self.mesh.members_to_remember(REMEMBER_OTHERS).await {
            remember_peers(&self.state, self.mesh.local_peer_id(), members);
        }
        let result = self.mesh.shutdown().await;
        // The jobs still running are asked to end before the tasks stop (a job dropped with
        // them would otherwise be killed at once), and stopped after JOB_STOP_GRACE if they
        // have not ended by then. Their results are not taken in any more: after the restart
        // they are reported interrupted (one that ends before the tasks stop may still be
        // taken in, and is recorded interrupted by the executor, not cached).
        let asked = self.processes.terminate_all();
        if !asked.is_empty() {
            info!(
                groups = ?asked,
                "asked the jobs still running to end (SIGTERM); what is left of them is \
                 stopped in {} s, or at once on another signal",
                JOB_STOP_GRACE.as_secs()
            );
        }
        for task in &self.tasks {
            task.abort();
        }
        let _ = self.mesh_task.await;
        // The executor may run on a thread of its own that is not waited for: its jobs'
        // shells are stopped here, not left to outlive the daemon.
        let deadline = tokio::time::Instant::now() + JOB_STOP_GRACE;
        while !asked.is_empty()
            && !self.processes.jobs_ended()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stopped = self.processes.stop_all();
        if !stopped.is_empty() {
            info!(groups = ?stopped, "stopped the process groups of the jobs still running");
        }
        self.store.flush();
        if let Some(socket) = &self.control_socket {
            let _ = std::fs::remove_file(socket);
        }
        info!("node stopped");
        result.map_err(NodeError::from)
    }
}

/// The token that joins other nodes to this one's mesh (its key and this node's addresses),
/// written to the state directory for a TCP mesh.
/// Also the mesh's status as it started (its listen addresses).
async fn join_token_of(
    mesh: &MeshHandle,
    mesh_key: Option<MeshKey>,
    state: &StateDir,
    config: &NodeConfig,
) -> Result<(MeshStatus, JoinToken), NodeError> {
    let status = mesh.status().await?;
    let peer_id = mesh.local_peer_id();
    let join_token = JoinToken {
        mesh_key,
        peers: mesh::network::advertised(&status.listen_addrs)
            .into_iter()
            .map(|a| multiaddr_with_peer(a, peer_id))
            .collect(),
    };
    if config.transport == TransportKind::Tcp {
        state.write_join_token(&join_token.encode())?;
    }
    Ok((status, join_token))
}

/// Whether `addr` ends in this node's own peer id.
fn is_own(addr: &Multiaddr, me: &PeerId) -> bool {
    matches!(addr.iter().last(), Some(mesh::multiaddr::Protocol::P2p(p)) if p == *me)
}

/// Turns `/dns/HOST/tcp/PORT` bootstrap addresses into IP addresses (the transport dials IPs).
async fn resolve_dns(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    use mesh::multiaddr::Protocol;
    let mut out = Vec::new();
    for addr in addrs {
        let parts: Vec<Protocol> = addr.iter().collect();
        let (host, port) = match parts.as_slice() {
            [
                Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h),
                Protocol::Tcp(port),
                ..,
            ] => (h.to_string(), *port),
            _ => {
                out.push(addr.clone());
                continue;
            }
        };
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(found) => {
                for sock in found {
                    let mut resolved = Multiaddr::from(sock.ip()).with(Protocol::Tcp(port));
                    for p in parts.iter().skip(2) {
                        resolved.push(p.clone());
                    }
                    out.push(resolved);
                }
            }
            Err(e) => warn!(%addr, "cannot resolve {host}: {e}"),
        }
    }
    out
}

/// Saves the addresses of up to [`REMEMBER_PEERS`] members alive and [`REMEMBER_OTHERS`] that
/// are not, for the next start.
fn remember_peers(state: &StateDir, me: PeerId, members: mesh::MembersToRemember) {
    let others = members
        .others
        .into_iter()
        .flat_map(|(peer, addrs)| addrs.into_iter().map(move |a| multiaddr_with_peer(a, peer)));
    let me = me.to_bytes();
    let mut alive: Vec<(blake3::Hash, PeerId, Vec<Multiaddr>)> = members
        .alive
        .into_iter()
        .map(|(peer, addrs)| {
            let mut h = blake3::Hasher::new();
            h.update(&me);
            h.update(&peer.to_bytes());
            (h.finalize(), peer, addrs)
        })
        .collect();
    // A few members are enough to find the mesh again; which ones depends on this node's id,
    // so that restarting nodes do not all knock on the same doors.
    alive.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let addrs: Vec<Multiaddr> = alive
        .into_iter()
        .take(REMEMBER_PEERS)
        .flat_map(|(_, peer, addrs)| addrs.into_iter().map(move |a| multiaddr_with_peer(a, peer)))
        .chain(others)
        .collect();
    if addrs.is_empty() {
        return;
    }
    if let Err(e) = state.save_known_peers(&addrs) {
        warn!("cannot save member addresses: {e}");
    }
}

/// Keeps `known-peers` current: soon after a member appears, and every [`SAVE_PEERS_EVERY`], so
/// a node that crashes finds the mesh again when it restarts.
async fn save_known_peers(
    mesh: MeshHandle,
    state: Arc<StateDir>,
    changed: Arc<tokio::sync::Notify>,
) {
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(SAVE_PEERS_EVERY) => {}
        }
        // Saved at once (a node that crashes right after joining still finds its peers on
        // restart), then at most once per SAVE_PEERS_SETTLE: the changes that come meanwhile
        // leave one permit, for one more save. A mesh of a thousand nodes forming would
        // otherwise cost each node a thousand fsyncs.
        let Ok(members) = mesh.members_to_remember(REMEMBER_OTHERS).await else {
            return;
        };
        let state = state.clone();
        let me = mesh.local_peer_id();
        // The write ends in an fsync: off the async workers.
        let _ = tokio::task::spawn_blocking(move || remember_peers(&state, me, members)).await;
        tokio::time::sleep(SAVE_PEERS_SETTLE).await;
    }
}

/// The cache's writes go through the store's writer, in its groups.
struct StoreCacheSink(Store);

impl cache::CacheSink for StoreCacheSink {
    fn write(&self, writes: cache::CacheWrites) {
        self.0.write_cache(writes);
    }
}

/// Hands what the network says to the runs actor.
async fn consume_events(
    mut events: tokio::sync::mpsc::Receiver<MeshEvent>,
    runs: Runs,
    transfers: Transfers,
    state: Arc<StateDir>,
    members_changed: Arc<tokio::sync::Notify>,
) {
    while let Some(event) = events.recv().await {
        let input = match event {
            MeshEvent::Member(MembershipChange::Expired(peer)) => runs::Input::MemberGone(peer),
            MeshEvent::Member(MembershipChange::Left(peer)) => runs::Input::MemberLeft(peer),
            MeshEvent::Member(MembershipChange::Alive(peer)) => {
                members_changed.notify_one();
                runs::Input::MemberBack(peer)
            }
            MeshEvent::Announce { source, data } => runs::Input::Announce { source, data },
            MeshEvent::JobRequest { peer, data, token } => {
                runs::Input::Request { peer, data, token }
            }
            MeshEvent::BlobRequest { request, token, .. } => {
                transfers.serve(request, token).await;
                continue;
            }
            MeshEvent::Renumbered(incarnation) => {
                state.keep_incarnation(incarnation);
                continue;
            }
        };
        runs.send(input).await;
    }
}

fn report(info: &NodeInfo, status: MeshStatus, blob_bytes_served: u64) -> StatusReport {
    let nodes = status
        .members
        .iter()
        .map(|m| {
            let p = &m.presence;
            // Uptimes were true when the heartbeat was sent; add its age for members still alive.
            let age = if matches!(
                m.state,
                mesh::MemberState::Alive | mesh::MemberState::Conflict
            ) {
                m.last_seen_ago.as_secs()
            } else {
                0
            };
            NodeRow {
                name: p.name.clone(),
                peer_id: p.peer_id.to_string(),
                state: m.state.as_str().to_string(),
                version: p.version.clone(),
                addresses: p.addresses.iter().map(|a| a.to_string()).collect(),
                machine_id: p.machine_id.clone(),
                host_uptime_secs: p.host_uptime_secs.saturating_add(age),
                agent_uptime_secs: p.agent_uptime_secs.saturating_add(age),
                // To the millisecond: more digits only show float noise.
                last_seen_secs: m.last_seen_ago.as_millis() as f64 / 1000.0,
                load: p.load,
                labels: p.labels.clone(),
                is_self: m.is_self,
            }
        })
        .collect();
    StatusReport {
        local: SelfInfo {
            name: info.name.clone(),
            peer_id: info.peer_id.to_string(),
            version: VERSION.to_string(),
            wire_version: mesh::wire::spoken_version(),
            listen_addresses: status.listen_addrs.iter().map(|a| a.to_string()).collect(),
            mesh_key_fingerprint: info.mesh_key.map(|k| k.fingerprint()),
            state_dir: info.state_dir.display().to_string(),
            heartbeat_interval_ms: status.heartbeat_interval.as_millis() as u64,
            connected_peers: status.connected_peers,
            blob_bytes_served,
            warnings: status.warnings,
            results_owed: Vec::new(),
        },
        nodes,
    }
}

/// Files up to this size also travel inside the run's announce.
pub(crate) const INLINE_MAX: u64 = 16 * 1024;
/// Most bytes of files carried inside one run; the others travel in chunks. Keeps a run with
/// many small files within gossip's and a direct delivery's message sizes.
pub(crate) const INLINE_TOTAL_MAX: usize = 256 * 1024;

/// Records read from the store, each open one (in memory, its results without their outputs)
/// filled from its copy on disk, read after it and so at least as new.
fn merge_open(mut stored: Vec<JobRecord>, open: Vec<JobRecord>) -> Vec<JobRecord> {
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (i, r) in stored.iter().enumerate() {
        by_id.insert(r.job_id.clone(), i);
    }
    for r in open {
        match by_id.get(&r.job_id) {
            Some(&i) => {
                let read = std::mem::take(&mut stored[i]);
                stored[i] = r.filled_from(read);
            }
            None => stored.push(r),
        }
    }
    stored
}

/// The daemon's answers on the control socket.
#[derive(Clone)]
struct Control {
    mesh: MeshHandle,
    info: Arc<NodeInfo>,
    runs: Runs,
    store: Store,
    cache: Arc<Cache>,
    blobs: Arc<BlobStore>,
    transfers: Transfers,
    /// How long a target that said goodbye has to come back (see `runs::RunsParts`).
    left_grace: Duration,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The submitter's files of a run's ADD/COPY jobs: where each is, and what the CLI read.
fn run_files(run: &coordination::Run) -> Vec<(String, jobs::spec::FileRef)> {
    run.parents
        .iter()
        .flat_map(|p| &p.jobs)
        .filter_map(|j| match &j.spec.component {
            jobs::Component::Add(t) | jobs::Component::Copy(t) => {
                t.file.clone().map(|f| (t.src.clone(), f))
            }
            _ => None,
        })
        .collect()
}

/// The files that also travel inside the run, by the sizes the CLI read: small ones, each
/// once, up to [`INLINE_TOTAL_MAX`] bytes in all; the others travel in chunks.
fn inline_plan(files: &[(String, jobs::spec::FileRef)]) -> Vec<(jobs::Fingerprint, u64)> {
    let mut plan: Vec<(jobs::Fingerprint, u64)> = Vec::new();
    let mut total = 0u64;
    for (_, file) in files {
        if file.size <= INLINE_MAX
            && total + file.size <= INLINE_TOTAL_MAX as u64
            && !plan.iter().any(|(hash, _)| *hash == file.hash)
        {
            total += file.size;
            plan.push((file.hash, file.size));
        }
    }
    plan
}

/// Stand-ins of the planned inline files, as large as they will be, to size the run before
/// anything is read.
fn placeholders(plan: &[(jobs::Fingerprint, u64)]) -> Vec<coordination::InlineBlob> {
    plan.iter()
        .map(|(hash, size)| coordination::InlineBlob {
            hash: *hash,
            data: vec![0; *size as usize],
        })
        .collect()
}

/// Why the run with these inline files is more than a message to its targets can carry,
/// if it is: a run stored that no message can carry would never reach anyone.
fn too_large(run: &coordination::Run, inline: Vec<coordination::InlineBlob>) -> Option<String> {
    let mut compact = run.compact();
    compact.inline = inline;
    let deliver = coordination::JobMessage::Deliver(Box::new(compact));
    // With room for the holders of its files the runs actor names in it.
    let room = mesh::wire::MAX_CTL_BYTES - coordination::transfer::HOLDER_HINTS_ROOM;
    let e = mesh::wire::encode(&deliver, room).err()?;
    Some(format!(
        "this run is too large to send to its targets ({e}): send fewer jobs or files at once \
         (an ADD/COPY whose pattern matches fewer files, or a smaller orchestration)"
    ))
}

/// Copies the run's files into the store and reads back those planned to travel inside it.
/// Returns those, the blobs this brought into the store (to take back if the submission is
/// refused) and how it ended. Blocking.
fn import_files(
    blobs: &BlobStore,
    files: Vec<(String, jobs::spec::FileRef)>,
    plan: &[(jobs::Fingerprint, u64)],
) -> (
    Vec<coordination::InlineBlob>,
    Vec<crate::blobs::Added>,
    Result<(), ImportError>,
) {
    let mut inline: Vec<coordination::InlineBlob> = Vec::new();
    let mut added = Vec::new();
    for (src, file) in files {
        match blobs.import(Path::new(&src), &file) {
            Ok(brought) => added.extend(brought),
            Err(e) => return (inline, added, Err(e)),
        }
        let planned = plan.iter().any(|(hash, _)| *hash == file.hash);
        if planned && !inline.iter().any(|b| b.hash == file.hash) {
            match std::fs::read(blobs.path(&file.hash)) {
                Ok(data) => inline.push(coordination::InlineBlob {
                    hash: file.hash,
                    data,
                }),
                Err(e) => {
                    let e = ImportError::Store(format!("reading back the copy of {src}: {e}"));
                    return (inline, added, Err(e));
                }
            }
        }
    }
    (inline, added, Ok(()))
}

impl Control {
    async fn submit(&self, submission: Submission) -> ControlResponse {
        let status = match self.mesh.status().await {
            Ok(s) => s,
            Err(e) => return ControlResponse::Error(e.to_string()),
        };
        let mut resolved = match submit::resolve(
            submission,
            &status,
            &self.info.name,
            unix_ms(),
            self.left_grace,
        ) {
            Ok(r) => r,
            Err(SubmitError::BadInput(e)) => return ControlResponse::Refused(e),
            Err(SubmitError::Unavailable(e)) => return ControlResponse::Error(e),
        };
        // ADD/COPY: the files go into this node's blob store, which serves them; small ones
        // also ride along in the run.
        let files = run_files(&resolved.run);
        let inline = inline_plan(&files);
        // Checked with the sizes the CLI gave before any file is copied: a run refused for
        // its size leaves nothing in the store.
        if let Some(refusal) = too_large(&resolved.run, placeholders(&inline)) {
            return ControlResponse::Refused(refusal);
        }
        let mut added = Vec::new();
        if !files.is_empty() {
            let blobs = self.blobs.clone();
            let imported =
                tokio::task::spawn_blocking(move || import_files(&blobs, files, &inline)).await;
            match imported {
                Ok((inline, brought, Ok(()))) => {
                    resolved.run.inline = inline;
                    added = brought;
                }
                Ok((_, brought, Err(e))) => {
                    self.withdraw(brought).await;
                    return match e {
                        ImportError::Source(e) => ControlResponse::Refused(e),
                        ImportError::Store(e) => ControlResponse::Error(e),
                    };
                }
                Err(e) => return ControlResponse::Error(format!("reading the files stopped: {e}")),
            }
        }
        // The files as read: the same sizes as checked, unless one changed meanwhile.
        if let Some(refusal) = too_large(&resolved.run, resolved.run.inline.clone()) {
            self.withdraw(added).await;
            return ControlResponse::Refused(refusal);
        }
        let (done, accepted) = tokio::sync::oneshot::channel();
        self.runs
            .send(runs::Input::Submit {
                run: resolved.run,
                records: resolved.records,
                done,
            })
            .await;
        match accepted.await {
            // The runs actor answers once the run and its records are on disk: a crash from
            // here on resumes the run at the next start.
            Ok(Ok(())) => ControlResponse::Submitted(resolved.reply),
            Ok(Err(e)) => ControlResponse::Error(e),
            Err(_) => ControlResponse::Error(
                "the node is shutting down; the jobs may have been stored, and then go out when \
                 it starts again: once it runs, `manage --list-jobs` shows whether they are there \
                 before you submit them again"
                    .into(),
            ),
        }
    }

    /// Takes back the blobs a refused submission brought into the store.
    async fn withdraw(&self, added: Vec<crate::blobs::Added>) {
        if added.is_empty() {
            return;
        }
        let blobs = self.blobs.clone();
        let _ = tokio::task::spawn_blocking(move || blobs.withdraw(&added)).await;
    }

    async fn watch(&self, job_ids: Vec<String>, output: bool) -> Reply {
        let (events, mut rx) = runs::watch_channel();
        let mut awaited = Awaited::new(job_ids.clone(), self.left_grace);
        self.runs
            .send(runs::Input::Watch {
                job_ids,
                output,
                events,
                flushed: false,
            })
            .await;
        let (tx, out) = tokio::sync::mpsc::channel(64);
        let (mesh, runs) = (self.mesh.clone(), self.runs.clone());
        tokio::spawn(async move {
            let mut check = tokio::time::interval_at(
                tokio::time::Instant::now() + AWAITED_CHECK,
                AWAITED_CHECK,
            );
            // A client slow to read does not bring a burst of checks after it.
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let events = tokio::select! {
                    // The client went away: the watch ends here, and the runs actor drops it.
                    () = tx.closed() => return,
                    event = rx.recv() => match event {
                        Some(event) => vec![event],
                        // The node is stopping, not every job done: no end is said, and the
                        // client sees the connection close as the daemon goes.
                        None if runs.is_stopped() => return,
                        None => break,
                    },
                    _ = check.tick() => awaited.check(&mesh, &runs).await,
                };
                for event in events {
                    if tx.send(ControlResponse::Watch(event)).await.is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(ControlResponse::WatchEnd).await;
        });
        Reply::Stream(out)
    }

    /// `ListJobs`: every record, oldest first, in parts of about [`control::RECORDS_PART`]
    /// bytes (a single answer of a large store would be over the frame limit). Only each
    /// record's place in the list is read at first; the records themselves are read from the
    /// store a few at a time: a long history is never in memory whole. Without `outputs`,
    /// each record goes without its results' stdout and stderr.
    fn list_jobs(&self, outputs: bool) -> Reply {
        /// Records read from the store at once, at most (fewer when their outputs are over a
        /// part's size).
        const READ_AT_ONCE: usize = 64;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let this = self.clone();
        tokio::spawn(async move {
            // Open records first, then everything that finished meanwhile is flushed to disk,
            // so the disk is at least as new as the memory for every job that is done.
            let (reply, open) = tokio::sync::oneshot::channel();
            this.runs.send(runs::Input::Records { reply }).await;
            let mut open: HashMap<String, JobRecord> = open
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.job_id.clone(), r))
                .collect();
            let store = this.store.clone();
            let mut keys = tokio::task::spawn_blocking(move || {
                store.flush();
                store.record_keys()
            })
            .await
            .unwrap_or_default();
            let stored: HashSet<String> = keys.iter().map(|k| k.job_id.clone()).collect();
            keys.extend(
                open.values()
                    .filter(|r| !stored.contains(&r.job_id))
                    .map(JobRecord::key),
            );
            drop(stored);
            keys.sort_by(|a, b| a.order().cmp(&b.order()));
            let mut part = Vec::new();
            let mut bytes = 0;
            let mut next = 0;
            while next < keys.len() {
                let ids: Vec<String> = keys[next..]
                    .iter()
                    .take(READ_AT_ONCE)
                    .map(|k| k.job_id.clone())
                    .collect();
                let store = this.store.clone();
                let (read, gone_through) = tokio::task::spawn_blocking(move || {
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    store.records_within(&ids, control::RECORDS_PART)
                })
                .await
                .unwrap_or_default();
                let batch = &keys[next..next + gone_through.max(1)];
                next += batch.len();
                let mut read: HashMap<String, JobRecord> =
                    read.into_iter().map(|r| (r.job_id.clone(), r)).collect();
                for key in batch {
                    // Where both have it, the runs actor's open record (results without
                    // their outputs) filled from the store, flushed since and so at least as
                    // new; a record deleted meanwhile is left out.
                    let record = match (read.remove(&key.job_id), open.remove(&key.job_id)) {
                        (Some(stored), Some(open)) => open.filled_from(stored),
                        (Some(stored), None) => stored,
                        (None, Some(open)) => open,
                        (None, None) => continue,
                    };
                    let record = if outputs {
                        record
                    } else {
                        record.without_outputs()
                    };
                    let size = record.approx_size();
                    if !part.is_empty() && bytes + size > control::RECORDS_PART {
                        let full = std::mem::take(&mut part);
                        if tx.send(ControlResponse::JobsPart(full)).await.is_err() {
                            return;
                        }
                        bytes = 0;
                    }
                    bytes += size;
                    part.push(record);
                }
            }
            if !part.is_empty() && tx.send(ControlResponse::JobsPart(part)).await.is_err() {
                return;
            }
            let _ = tx.send(ControlResponse::JobsEnd).await;
        });
        Reply::Stream(rx)
    }

    /// How many records the store holds once every write so far is on it.
    async fn records_on_disk(&self) -> usize {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            store.flush();
            store.record_count()
        })
        .await
        .unwrap_or(0)
    }

    /// `JobInfo`: the record of `id` (a job id, its start, or `last`), reading from the store
    /// only the records that may be it (with a long history, every record's output would be
    /// read otherwise).
    async fn job_info(&self, id: &str) -> Result<JobRecord, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.runs.send(runs::Input::Records { reply }).await;
        let open = rx.await.unwrap_or_default();
        let store = self.store.clone();
        let wanted = id.to_string();
        let open_ids: Vec<String> = open
            .iter()
            .filter(|r| r.job_id.starts_with(id))
            .map(|r| r.job_id.clone())
            .collect();
        let (stored, any_stored) = tokio::task::spawn_blocking(move || {
            store.flush();
            let stored = match wanted.as_str() {
                "last" => store.newest_record().into_iter().collect(),
                "" => Vec::new(),
                prefix => {
                    // Picked by id alone: only the record picked is read whole (a start
                    // that fits many is refused by the pick below, from the ids).
                    let ids = store.job_ids_starting(prefix);
                    let only_id = |id: &String| JobRecord {
                        job_id: id.clone(),
                        ..JobRecord::default()
                    };
                    // Each id once (an open record is on disk too).
                    let all: std::collections::BTreeSet<&String> =
                        ids.iter().chain(&open_ids).collect();
                    let candidates = all.into_iter().map(only_id).collect();
                    match crate::records::pick(candidates, prefix) {
                        Ok(picked) => store.record(&picked.job_id).into_iter().collect(),
                        Err(_) => ids.iter().map(only_id).collect(),
                    }
                }
            };
            (stored, store.record_count() > 0)
        })
        .await
        .unwrap_or_default();
        if id.trim().is_empty() || (!any_stored && open.is_empty()) {
            // An empty id, or a node with no records at all: said as such.
            return crate::records::pick(Vec::new(), id);
        }
        let candidates = merge_open(stored, open);
        if candidates.is_empty() {
            return Err(format!(
                "no job '{id}' on this node (a run's or a parent's id? `manage --follow-run \
                 {id}` shows its jobs; `manage --list-jobs` lists every job with its parent; \
                 a job's record is kept by the node that submitted it)"
            ));
        }
        crate::records::pick(candidates, id)
    }
}

impl ControlHandler for Control {
    async fn handle(&self, request: ControlRequest) -> Reply {
        let started = Instant::now();
        let response = match request {
            ControlRequest::Status => match self.mesh.status().await {
                Ok(status) => {
                    // A runs actor busy for long (restoring a large state) leaves the line
                    // out rather than hold up `status`.
                    let owed = async {
                        let (reply, owed) = tokio::sync::oneshot::channel();
                        self.runs.send(runs::Input::Owed { reply }).await;
                        owed.await.unwrap_or_default()
                    };
                    let owed = tokio::time::timeout(Duration::from_secs(2), owed).await;
                    let mut report = report(&self.info, status, self.transfers.served_bytes());
                    if owed.is_err() {
                        report.local.warnings.push(
                            "the node is busy: the results it holds for other submitters are \
                             not shown"
                                .into(),
                        );
                    }
                    report.local.results_owed = owed
                        .unwrap_or_default()
                        .into_iter()
                        .map(|o| ResultsOwed {
                            peer_id: o.to.0,
                            results: o.results,
                            failing_secs: o.failing_for.map(|d| d.as_secs()),
                        })
                        .collect();
                    ControlResponse::Status(Box::new(report))
                }
                Err(e) => ControlResponse::Error(e.to_string()),
            },
            ControlRequest::JoinToken => ControlResponse::JoinToken(self.info.join_token.encode()),
            ControlRequest::Submit(submission) => self.submit(submission).await,
            ControlRequest::Watch { job_ids, output } => return self.watch(job_ids, output).await,
            ControlRequest::ListJobs { outputs } => return self.list_jobs(outputs),
            ControlRequest::JobInfo(id) => match self.job_info(&id).await {
                Ok(record) => ControlResponse::Job(Some(Box::new(record))),
                Err(why) => ControlResponse::Refused(why),
            },
            ControlRequest::PurgeJobs => {
                let before = self.records_on_disk().await;
                let (done, purged) = tokio::sync::oneshot::channel();
                self.runs.send(runs::Input::Purge { done }).await;
                let _ = purged.await;
                let kept = self.records_on_disk().await;
                ControlResponse::Purged {
                    purged: before.saturating_sub(kept),
                    kept,
                }
            }
            ControlRequest::DumpCache => ControlResponse::Cache(self.cache.dump()),
        };
        debug!(elapsed = ?started.elapsed(), "control request answered");
        Reply::One(response)
    }
}

/// How often a watch tells whom its jobs wait for, and looks for those of them out of this
/// node's reach or gone with a goodbye.
const AWAITED_CHECK: Duration = Duration::from_secs(5);

/// A watch's view of the targets it waits for that will not report soon, so a client waiting
/// on them hears why: those this node cannot reach (alive through others, not dialable: the
/// mesh's `unreachable`) and those that said goodbye (a stop or a restart: written off unless
/// back within the grace).
struct Awaited {
    job_ids: Arc<HashSet<String>>,
    left_grace: Duration,
    /// Told already, and still out of reach: told again only after a new cut.
    told: HashSet<PeerId>,
    /// Told already, and still gone: told again only after a new goodbye.
    told_left: HashSet<PeerId>,
}

impl Awaited {
    fn new(job_ids: Vec<String>, left_grace: Duration) -> Self {
        Awaited {
            job_ids: Arc::new(job_ids.into_iter().collect()),
            left_grace,
            told: HashSet::new(),
            told_left: HashSet::new(),
        }
    }

    /// Whom the watched jobs wait for, then the targets newly out of reach, or newly gone
    /// with a goodbye, that still owe results of them.
    async fn check(&mut self, mesh: &MeshHandle, runs: &Runs) -> Vec<WatchEvent> {
        let Ok(status) = mesh.status().await else {
            return Vec::new();
        };
        let in_state = |peer: &PeerId, state: mesh::MemberState| {
            status
                .members
                .iter()
                .any(|m| m.presence.peer_id == *peer && m.state == state)
        };
        self.told.retain(|p| status.unreachable.contains(p));
        self.told_left
            .retain(|p| in_state(p, mesh::MemberState::Left));
        // Only members alive through others: one gone for good is written off, not awaited.
        let out_of_reach: Vec<PeerId> = status
            .unreachable
            .iter()
            .filter(|p| !self.told.contains(*p) && in_state(p, mesh::MemberState::Alive))
            .copied()
            .collect();
        let left: Vec<PeerId> = status
            .members
            .iter()
            .filter(|m| m.state == mesh::MemberState::Left && !m.is_self)
            .map(|m| m.presence.peer_id)
            .filter(|p| !self.told_left.contains(p))
            .collect();
        let mut events = self.waiting(runs).await;
        if out_of_reach.is_empty() && left.is_empty() {
            return events;
        }
        let (reply, owing) = tokio::sync::oneshot::channel();
        runs.send(runs::Input::Owing {
            job_ids: Arc::clone(&self.job_ids),
            among: out_of_reach
                .iter()
                .chain(&left)
                .map(ToString::to_string)
                .collect(),
            reply,
        })
        .await;
        let Ok(owing) = owing.await else {
            return events;
        };
        for peer in &out_of_reach {
            if owing.contains(&peer.to_string()) && self.told.insert(*peer) {
                events.push(WatchEvent::OutOfReach {
                    node: status.name_or_id(&peer.to_string()),
                });
            }
        }
        for peer in &left {
            if owing.contains(&peer.to_string()) && self.told_left.insert(*peer) {
                events.push(WatchEvent::Left {
                    node: status.name_or_id(&peer.to_string()),
                    grace_secs: self.left_grace.as_secs_f64().ceil() as u64,
                });
            }
        }
        events
    }
}

impl Awaited {
    /// Whom the watched jobs still wait for, if anyone: told at every check.
    async fn waiting(&self, runs: &Runs) -> Vec<WatchEvent> {
        let (reply, awaiting) = tokio::sync::oneshot::channel();
        runs.send(runs::Input::Awaiting {
            job_ids: Arc::clone(&self.job_ids),
            named: control::WAITING_NAMED,
            reply,
        })
        .await;
        match awaiting.await {
            Ok((named, total)) if total > 0 => vec![WatchEvent::Waiting { named, total }],
            _ => Vec::new(),
        }
    }
}

/// Test hook, on only when `DIRECTORD_MESH_TEST_HOOKS=1`: a `test-wire-version` file in the
/// state directory makes this process speak that wire version, as another release would.
fn speak_wire_version_of_test_hook(state_dir: &Path) {
    let on = std::env::var("DIRECTORD_MESH_TEST_HOOKS").is_ok_and(|v| v == "1");
    if on
        && let Ok(text) = std::fs::read_to_string(state_dir.join("test-wire-version"))
        && let Ok(version) = text.trim().parse::<u16>()
    {
        mesh::wire::speak_version_for_tests(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::add_run;

    fn listing(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        names
    }

    /// A submission refused at a file changed since the CLI read it takes back the files it
    /// had already copied; one the store held before stays.
    #[test]
    fn a_refused_import_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        for name in ["a", "b", "c", "d"] {
            std::fs::write(src.join(name), format!("file {name}")).unwrap();
        }
        let run = add_run(&src, "* /dest/");
        let files = run_files(&run);
        assert_eq!(files.len(), 4);
        let store = BlobStore::open(&dir.path().join("blobs")).unwrap();
        let held = files
            .iter()
            .find(|(s, _)| s.ends_with("/b"))
            .unwrap()
            .clone();
        store.import(Path::new(&held.0), &held.1).unwrap();
        let before = listing(&dir.path().join("blobs"));
        assert_eq!(before.len(), 1);
        std::fs::write(src.join("c"), "changed").unwrap();
        let plan = inline_plan(&files);
        let (_, added, result) = import_files(&store, files, &plan);
        assert!(
            matches!(&result, Err(ImportError::Source(e)) if e.contains("changed after it was read")),
            "{result:?}"
        );
        assert_eq!(added.len(), 1, "a was copied, b was held already");
        store.withdraw(&added);
        assert_eq!(listing(&dir.path().join("blobs")), before);
        assert!(store.has(&held.1.hash));
    }

    /// A run too large for any message is known by the sizes the CLI read, with none of its
    /// files read (here they are gone), and the refusal fits an `exec` as well.
    #[test]
    fn a_run_too_large_is_known_before_its_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let name = "f".repeat(200);
        std::fs::write(dir.path().join(&name), vec![7u8; 16 * 1024]).unwrap();
        let mut run = add_run(dir.path(), &format!("{name} /dest/"));
        std::fs::remove_file(dir.path().join(&name)).unwrap();
        let small = inline_plan(&run_files(&run));
        assert_eq!(small.len(), 1, "a small file rides along");
        assert!(too_large(&run, placeholders(&small)).is_none());
        let job = run.parents[0].jobs[0].clone();
        run.parents[0].jobs = (0..20_000)
            .map(|i| coordination::JobEntry {
                job_id: format!("j{i}"),
                ..job.clone()
            })
            .collect();
        let refusal = too_large(&run, placeholders(&inline_plan(&run_files(&run)))).unwrap();
        assert!(
            refusal.contains("too large to send") && refusal.contains("fewer jobs or files"),
            "{refusal}"
        );
    }
}
