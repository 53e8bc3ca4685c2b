//! `directord-mesh join`: run this machine's daemon in the foreground.

use std::path::PathBuf;

use clap::Args;
use node::{JoinOptions, Node, NodeError, config, state::StateError};

use crate::{Failure, output};

pub const LONG_ABOUT: &str = "\
Run this machine's daemon in the foreground (systemd-friendly: logs go to stderr; SIGINT,
SIGTERM or SIGHUP make it start no further job, let the jobs running finish for up to 10 s
(--stop-grace), give their results up to 5 s to reach their submitters, tell the mesh it is
leaving, ask the jobs still running to end (SIGTERM, SIGKILL 5 s later), then exit; a second
one while it stops stops it and its jobs at once (exit 1, without a goodbye);
started under nohup, SIGHUP does not stop it, and its jobs start with SIGHUP at its default).

The first run creates the node's identity in the state directory, and joins a mesh: the one of
--token; with --open, a mesh without a key; with neither, a new mesh with its own key (--peer
alone joins only a mesh this state directory already belongs to). It prints how another
machine joins that mesh, and writes the join token to <state-dir>/join-token. Later runs reuse
the identity and key, so a restarted node comes back with the same peer id.

Settings come from flags, then DIRECTORD_MESH_* environment variables (an empty one sets
nothing), then the --config YAML file (keys are the flags' long names: name, listen, peer,
token, open, heartbeat-interval, socket-group, blob-retention, record-retention,
allow-submitter, max-peers, stop-grace; and labels, a map of KEY: VALUE), then defaults.";

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// Node name, used as the target name of jobs. Default: the host name. [env: DIRECTORD_MESH_NAME]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Address to listen on: a multiaddr (/ip4/0.0.0.0/tcp/7411) or IP:PORT (an address, not
    /// a host name). Repeatable.
    /// Default: TCP port 7411 on all interfaces. [env: DIRECTORD_MESH_LISTEN, comma-separated]
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,

    /// A running member to join through: multiaddr or HOST:PORT. Repeatable.
    /// [env: DIRECTORD_MESH_PEER, comma-separated]
    #[arg(long, value_name = "MULTIADDR")]
    peer: Vec<String>,

    /// Join token printed by a running node (carries the mesh key and bootstrap addresses).
    /// [env: DIRECTORD_MESH_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,

    /// Run without a mesh key (any node that can reach this one may join). [env: DIRECTORD_MESH_OPEN]
    #[arg(long)]
    open: bool,

    /// How often to send presence heartbeats (5, 5s, 500ms, 1m), from 100ms to 1h; a node
    /// expires after three missed ones. Default: 5s. [env: DIRECTORD_MESH_HEARTBEAT_INTERVAL]
    #[arg(long, value_name = "DURATION")]
    heartbeat_interval: Option<String>,

    /// Group (name or gid) that owns the control socket; its members may use the CLI.
    /// [env: DIRECTORD_MESH_SOCKET_GROUP]
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,

    /// A KEY=VALUE label sent with this node's presence. Repeatable.
    /// [env: DIRECTORD_MESH_LABELS, comma-separated: role=web,zone=a]
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,

    /// How long a file sent by ADD/COPY stays in this node's blob store
    /// (<state-dir>/blobs) after it was last used: stored, served to another node or copied to
    /// a destination. Files of runs still open here are kept whatever their age. 0 keeps them
    /// forever; otherwise at least 1s. Default: 24h. [env: DIRECTORD_MESH_BLOB_RETENTION]
    #[arg(long, value_name = "DURATION")]
    blob_retention: Option<String>,

    /// How long this node keeps the record of a job it submitted (its results, as `manage`
    /// shows them), counted from the submission. Jobs still waiting for results are kept
    /// whatever their age. 0 keeps records until `manage --purge-jobs`; otherwise at least 1s.
    /// As a target, this node also drops the output (not the state) of the results it owes
    /// another submitter once they are this old and that submitter has taken nothing for an
    /// hour (a node gone for good).
    /// Default: 30d. [env: DIRECTORD_MESH_RECORD_RETENTION]
    #[arg(long, value_name = "DURATION")]
    record_retention: Option<String>,

    /// Take jobs only from this submitter (a peer id, whole: `manage --list-nodes --json` shows
    /// each node's; the `status` table shortens them), besides this node
    /// itself. Repeatable. A run from any other node is answered with each of its jobs failed as
    /// refused, and nothing runs (once this node holds 10000 jobs of one submitter's refused
    /// runs, it drops that submitter's further runs until those are forgotten). Default: jobs
    /// from any member of the mesh.
    /// [env: DIRECTORD_MESH_ALLOW_SUBMITTERS, comma-separated]
    #[arg(long = "allow-submitter", value_name = "PEER_ID")]
    allow_submitters: Vec<String>,

    /// How many peers this node stays connected to before it closes connections nobody uses.
    /// Above it, connections that have carried no request (jobs, results, files) for a minute
    /// are closed, least recently used first, down to it; the peers gossip relays through stay,
    /// so the count may stay above it. The next request for a closed peer connects again.
    /// Lower it on a machine short of file descriptors; raise it on a node that submits to many
    /// nodes of a large mesh, to keep their connections ready. From 12 (gossip alone keeps up
    /// to 12 peers, never closed) to 16384 (the most members a mesh holds).
    /// Default: 64. [env: DIRECTORD_MESH_MAX_PEERS]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    max_peers: Option<String>,

    /// How long a stop (SIGINT, SIGTERM, SIGHUP) lets the jobs running here finish on their
    /// own, their results recorded and sent as any other's, before it asks them to end
    /// (SIGTERM, then SIGKILL 5 s later; jobs not started yet run after the restart). 0 asks
    /// at once; at most 24h. A service manager must wait longer than this plus 10 s (up to
    /// 5 s for results on their way, 5 s for jobs asked to end) plus a few seconds to leave the
    /// mesh (systemd: TimeoutStopSec). While it waits, the node is still a
    /// member: runs sent to it meanwhile wait for its return. Default: 10s.
    /// [env: DIRECTORD_MESH_STOP_GRACE]
    #[arg(long, value_name = "DURATION")]
    stop_grace: Option<String>,

    /// YAML config file with the same settings. [env: DIRECTORD_MESH_CONFIG]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl JoinArgs {
    /// The command-line layer of the settings.
    fn options(&self) -> Result<JoinOptions, Failure> {
        let input = |e: String| Failure::Input(e);
        let addrs = |items: &[String], flag: &str| {
            items
                .iter()
                .map(|s| {
                    config::parse_addr_for(s, flag).map_err(|e| input(format!("--{flag}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(JoinOptions {
            name: self.name.clone(),
            listen: addrs(&self.listen, "listen")?,
            peers: addrs(&self.peer, "peer")?,
            token: self
                .token
                .as_deref()
                .map(|t| mesh::JoinToken::decode(t).map_err(|e| input(format!("--token: {e}"))))
                .transpose()?,
            token_from: self.token.is_some().then_some(config::Source::Flag),
            open: self.open.then_some(true),
            open_from: self.open.then_some(config::Source::Flag),
            heartbeat_interval: self
                .heartbeat_interval
                .as_deref()
                .map(|d| {
                    config::parse_heartbeat(d)
                        .map_err(|e| input(format!("--heartbeat-interval: {e}")))
                })
                .transpose()?,
            socket_group: self.socket_group.clone(),
            labels: config::parse_label_flags(&self.labels).map_err(|e| input(e.to_string()))?,
            allow_submitters: config::parse_submitter_flags(&self.allow_submitters)
                .map_err(|e| input(e.to_string()))?,
            blob_retention: self
                .blob_retention
                .as_deref()
                .map(|d| {
                    config::parse_retention(d).map_err(|e| input(format!("--blob-retention: {e}")))
                })
                .transpose()?,
            record_retention: self
                .record_retention
                .as_deref()
                .map(|d| {
                    config::parse_record_retention(d)
                        .map_err(|e| input(format!("--record-retention: {e}")))
                })
                .transpose()?,
            max_peers: self
                .max_peers
                .as_deref()
                .map(|n| config::parse_max_peers(n).map_err(|e| input(format!("--max-peers: {e}"))))
                .transpose()?,
            stop_grace: self
                .stop_grace
                .as_deref()
                .map(|d| {
                    config::parse_stop_grace(d).map_err(|e| input(format!("--stop-grace: {e}")))
                })
                .transpose()?,
        })
    }
}

/// Resolves the settings, starts the node, prints how to join it, and runs until a signal.
pub fn run(state_dir: PathBuf, args: JoinArgs) -> Result<(), Failure> {
    few_memory_arenas();
    chunk_buffers_reused();
    let flags = args.options()?;
    let env = JoinOptions::from_env(|k| std::env::var(k).ok())
        .map_err(|e| Failure::Input(e.to_string()))?;
    let (config_path, file) =
        match config::config_file(args.config.clone(), std::env::var_os(config::ENV_CONFIG))
            .map_err(|e| Failure::Input(e.to_string()))?
        {
            Some((path, file)) => (Some(path), file),
            None => (None, JoinOptions::default()),
        };
    // A config file that says nothing (empty, or comments only) is most likely the wrong one.
    let empty_file = config_path
        .as_ref()
        .filter(|_| file == JoinOptions::default());
    let config = flags
        .over(env.over(file))
        .resolve(state_dir, &node::host::hostname())
        .map_err(|e| Failure::Input(e.to_string()))?;
    if config.mesh_key_choice == config::MeshKeyChoice::FromState
        && !node::state::holds_a_mesh(&config.state_dir)
    {
        return Err(Failure::Input(format!(
            "--peer: {}",
            node::state::NO_MESH_FOR_PEER
        )));
    }
    if let Some(group) = &config.socket_group {
        node::control::resolve_group(group).map_err(Failure::Input)?;
    }

    init_logging();
    if let Some(path) = empty_file {
        tracing::warn!(
            "{}: this config file sets nothing (it is empty or all comments); starting with \
             flags, DIRECTORD_MESH_* variables and defaults",
            path.display()
        );
    }
    warn_of_a_low_descriptor_limit();
    // One thread runs the daemon: its work is I/O and small messages, and on a machine shared
    // with the jobs it runs, hopping between worker threads costs more than it gives. Blocking
    // work (disk, hashing) runs on tokio's blocking pool and the store's writer thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the async runtime: {e}")))?;
    let mut state_dir_lock = None;
    let result = runtime.block_on(run_node(config, &mut state_dir_lock));
    // Work still going on the blocking pool is not waited for: the check of the blob store a
    // start began can hash for minutes, and the node has left the mesh and saved what it
    // keeps. Dropping the runtime would wait for it, deaf to any further signal.
    runtime.shutdown_background();
    // Released only now, as the process ends: no second daemon takes the state directory
    // while this one still runs anything.
    drop(state_dir_lock);
    result
}

/// Starts the node, prints how to join it, and runs it until a stop signal (or a database that
/// cannot be written); then it leaves the mesh. `state_dir_lock` keeps the node's state
/// directory locked for the caller, past the node's end.
async fn run_node(
    config: config::NodeConfig,
    state_dir_lock: &mut Option<node::daemon::StateDirLock>,
) -> Result<(), Failure> {
    // Taken before the start: a signal that comes while the node starts (the default action
    // would end it with its control socket left behind and no goodbye) stops it once it is up.
    let mut signals = StopSignals::take()?;
    // After the stop signals are taken: under `nohup`, SIGHUP is then still ignored and
    // becomes one of the signals this daemon takes no action on.
    handle_ignored_signals();
    let node = Node::start(config).await.map_err(|e| match e {
        // Arguments naming another mesh than the state directory's: bad input (exit 2).
        NodeError::State(StateError::OtherMesh { .. }) => Failure::Input(e.to_string()),
        e => Failure::runtime(e),
    })?;
    *state_dir_lock = Some(node.hold_state_dir());
    print_banner(&node);
    tokio::spawn(return_freed_memory());
    let mut failure = None;
    tokio::select! {
        () = signals.next() => {}
        reason = node.store_failed() => {
            tracing::error!(
                "the database cannot be written; stopping: a node that cannot write its \
                 database cannot keep what it acknowledges. Whatever it acknowledged is on \
                 disk; its peers resend the rest, and its unfinished jobs report as \
                 interrupted once it is back."
            );
            failure = Some(reason);
        }
        task = lost_task(&node) => {
            tracing::error!(
                "{task} of the daemon stopped (a bug: the panic above says where); stopping, so \
                 that the service manager starts the daemon again"
            );
            failure = Some(format!("{task} of the daemon stopped"));
        }
    }
    let socket = node.control_socket().cloned();
    let stop_jobs = node.job_stopper();
    // A second signal while leaving stops at once: the jobs too (not left running while
    // the clean stop waited for them to end).
    let left = tokio::select! {
        r = node.shutdown() => r.map_err(Failure::runtime),
        () = signals.next() => {
            stop_jobs();
            if let Some(lock) = state_dir_lock.as_mut() {
                lock.without_waiting_for_the_database();
            }
            // Nothing answers the control socket any more.
            if let Some(socket) = socket {
                let _ = std::fs::remove_file(socket);
            }
            Err(Failure::Runtime("stopped without a clean leave".into()))
        }
    };
    match failure {
        Some(reason) => Err(Failure::Runtime(reason)),
        None => left,
    }
}

/// Resolves once a task the node cannot do without has ended (see [`Node::lost_task`]).
async fn lost_task(node: &Node) -> &'static str {
    loop {
        if let Some(task) = node.lost_task() {
            return task;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Each running job holds a few file descriptors (its pipes and process handle), each peer
/// and each command on the control socket one or more: a low limit is said at start. The
/// daemon does not raise its own: its jobs would inherit the raised one, and programs that
/// walk every descriptor up to the limit slow down (jobs short of descriptors wait in turn).
fn warn_of_a_low_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < LOW_DESCRIPTOR_LIMIT {
        tracing::warn!(
            limit = soft,
            "this daemon may open only {soft} files: many jobs at once wait for descriptors \
             (raise it: LimitNOFILE= in a systemd unit, ulimit -n in a shell)"
        );
    }
}

/// Caps the C allocator's arenas at two, before the daemon starts its threads. glibc gives
/// threads arenas of their own (up to eight per core), and memory freed in one is not reused
/// by another: twenty listings of 30 000 records one after another left a daemon holding
/// 597 MB (143 MB a minute later); with two arenas 182 MB (70 MB), the listings no slower
/// (docs/benchmarks.md). `MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in
/// `GLIBC_TUNABLES`, in the environment still decides if set.
fn few_memory_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && !std::env::var_os("GLIBC_TUNABLES")
            .is_some_and(|t| t.to_string_lossy().contains("glibc.malloc.arena_max"))
    {
        // SAFETY: mallopt only sets an allocator parameter; it takes no pointer, and this
        // runs on the main thread before any other thread exists.
        unsafe {
            nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
        }
    }
}

/// Lets the megabyte buffers of file chunks (fetched, served) come from the heap and be reused
/// there. glibc's own thresholds adjust to the chunks, but it still gave the heap's free top
/// back whenever it passed twice a chunk's size and took it again for the next chunks: a page
/// fault per 4 KiB and a zeroing for each, the daemons' largest cost above the files bench's
/// floor. Fixed thresholds end that adjustment: an allocation over 4 MiB is always mapped, and
/// up to 32 MiB freed per arena (two, see [`few_memory_arenas`]) stays until the minute's
/// [`return_freed_memory`]. `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, or their
/// `GLIBC_TUNABLES`, in the environment still decide if set.
fn chunk_buffers_reused() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
        let tunables = tunables.to_string_lossy();
        let said = |var: &str, tunable: &str| {
            std::env::var_os(var).is_some() || tunables.contains(tunable)
        };
        // SAFETY (both): mallopt only sets an allocator parameter; it takes no pointer, and
        // this runs on the main thread before any other thread exists.
        if !said("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold") {
            unsafe {
                nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 4 << 20);
            }
        }
        if !said("MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold") {
            unsafe {
                nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, 32 << 20);
            }
        }
    }
}

/// Hands memory the daemon freed back to the system now and then: after a large run (10 000
/// jobs, a multi-megabyte orchestration) the C allocator otherwise keeps the peak for good.
async fn return_freed_memory() {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        every.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free memory of glibc's heap to the system; it takes
        // no pointer and is safe to call from any thread at any time.
        unsafe {
            nix::libc::malloc_trim(0);
        }
    }
}

/// Below this many file descriptors a daemon is said to be short of them.
const LOW_DESCRIPTOR_LIMIT: u64 = 1024;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,libp2p=warn,libp2p_gossipsub=error")
    });
    // A line that cannot be written is dropped. Its reader gone (a log shipper restarted,
    // `| head`, a closed terminal) must not stop the daemon: the log layer would say so
    // with `eprintln!`, which panics on a closed standard error, in whichever task logged
    // (the mesh's, once).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// The signals that stop the daemon: SIGTERM, SIGINT, and SIGHUP (the terminal or ssh session
/// it runs in closing) unless it was started with SIGHUP ignored (`nohup`). Each is caught
/// from the moment this is made, whether or not it is being waited for then.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn take() -> Result<StopSignals, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let take = |kind: SignalKind| {
            signal(kind)
                .map_err(|e| Failure::Runtime(format!("cannot catch the stop signals: {e}")))
        };
        // Started with SIGHUP ignored (`nohup`): it does not stop the daemon, as the operator
        // asked (see `handle_ignored_signals`).
        let hup = match hangup_ignored() {
            true => None,
            false => Some(take(SignalKind::hangup())?),
        };
        Ok(StopSignals {
            term: take(SignalKind::terminate())?,
            int: take(SignalKind::interrupt())?,
            hup,
        })
    }

    /// Resolves at the next stop signal (at once for one that came since the last).
    async fn next(&mut self) {
        let hup = async {
            match &mut self.hup {
                Some(hup) => hup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            _ = hup => {}
        }
    }
}

/// Whether this process was started with SIGHUP ignored (as `nohup` starts it).
fn hangup_ignored() -> bool {
    ignored_in(ignored_mask()).contains(&nix::sys::signal::Signal::SIGHUP)
}

/// The signals this process ignores, from the kernel's account of it (`SigIgn` in
/// `/proc/self/status`: bit n-1 for signal n); 0 if it cannot be read.
fn ignored_mask() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .unwrap_or(0)
}

/// Of the signals a `SigIgn` mask names, those [`handle_ignored_signals`] may take over
/// (see [`TAKEN_OVER`]).
fn ignored_in(mask: u64) -> Vec<nix::sys::signal::Signal> {
    TAKEN_OVER
        .iter()
        .copied()
        .filter(|s| mask & (1u64 << (*s as i32 - 1)) != 0)
        .collect()
}

/// The signals a parent may have left ignored that a do-nothing handler takes over without a
/// difference for the daemon. Not the faults (SIGSEGV, SIGBUS...: ignored, the kernel still
/// ends the process; handled, the faulting instruction would run again forever), not the
/// terminal's job control (SIGTTOU, SIGTTIN, SIGTSTP: ignored, a background write or read
/// goes through or fails; handled, it would be retried forever), not SIGCHLD (ignored, it
/// changes how children are reaped), not SIGPIPE (every Rust program ignores it, and its
/// standard library sets it back to the default in each child it starts).
const TAKEN_OVER: [nix::sys::signal::Signal; 9] = {
    use nix::sys::signal::Signal::*;
    [
        SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGXCPU, SIGXFSZ,
    ]
};

/// A signal handler that does nothing (see [`handle_ignored_signals`]).
extern "C" fn do_nothing(_: std::ffi::c_int) {}

/// Gives each signal of [`TAKEN_OVER`] this daemon was started with ignored a handler that
/// does nothing: `nohup` ignores SIGHUP, a shell without job control starts a command in the
/// background with SIGQUIT (and SIGINT, which stops the daemon all the same) ignored, Python
/// ignores SIGXFSZ in what it starts, and an ignored signal stays ignored across exec, so
/// every job's shell would start with them ignored. A handled one is set back to its default
/// in a new program. The daemon goes on taking no action on them, and its jobs start with
/// them at their default, as under a service manager; jobs are still started with
/// posix_spawn (a reset in the child between fork and exec would cost each job a fork of the
/// whole daemon: a 1000-job run took 70 % longer so). Real-time signals left ignored stay so
/// in the jobs.
fn handle_ignored_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(do_nothing),
        // System calls the signal interrupts go on where they can.
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in ignored_in(ignored_mask()) {
        // SAFETY: the handler does nothing at all, so it is async-signal-safe, and it
        // replaces an "ignore" no code of this program relies on seeing (the stop signals it
        // catches are taken before this, and are not ignored then).
        if let Err(e) = unsafe { sigaction(signal, &action) } {
            tracing::debug!(%signal, "left ignored, and so ignored by the jobs too: {e}");
        }
    }
}

fn print_banner(node: &Node) {
    let mesh = match (node.mesh_key(), node.created_mesh()) {
        (Some(k), true) => format!("created a new mesh (key fingerprint {})", k.fingerprint()),
        (Some(k), false) => format!("mesh key fingerprint {}", k.fingerprint()),
        (None, _) => "open mesh (no mesh key)".to_string(),
    };
    let token = node.join_token().encode();
    let listening: Vec<String> = node.listen_addrs().iter().map(|a| a.to_string()).collect();
    output::line_or_skip(format_args!(
        "directord-mesh {}: node '{}' is up (peer {})",
        node::VERSION,
        node.name(),
        node.peer_id()
    ));
    output::line_or_skip(format_args!("  mesh:       {mesh}"));
    output::line_or_skip(format_args!("  listening:  {}", listening.join(", ")));
    if let Some(socket) = node.control_socket() {
        output::line_or_skip(format_args!("  control:    {}", socket.display()));
    }
    output::line_or_skip("");
    // The token carries the mesh key: shown when the mesh is new or someone watches, not at
    // every restart of a service whose output a journal keeps.
    let watched = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if node.created_mesh() || watched || node.mesh_key().is_none() {
        output::line_or_skip("To join another machine to this mesh, run on it:");
        output::line_or_skip("");
        output::line_or_skip(format_args!("  directord-mesh join --token {token}"));
        output::line_or_skip("");
    } else if let Some(token) = token_file(node) {
        output::line_or_skip(format_args!(
            "To join another machine to this mesh, give it the join token in {} (as \
             DIRECTORD_MESH_TOKEN, `token:` in its --config file, or `join --token`). It \
             carries the mesh key: keep it secret.",
            token.display()
        ));
        return;
    }
    if let Some(token) = token_file(node) {
        let secret = if node.mesh_key().is_some() {
            " It carries the mesh key: keep it secret."
        } else {
            ""
        };
        output::line_or_skip(format_args!(
            "(The token is also in {}.{secret})",
            token.display()
        ));
    }
}

/// Where the node's join token is kept (beside its control socket, in the state directory).
fn token_file(node: &Node) -> Option<std::path::PathBuf> {
    Some(node.control_socket()?.parent()?.join("join-token"))
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;

    use super::*;

    #[test]
    fn the_ignored_signals_taken_over_are_read_from_the_kernels_mask() {
        let bit = |s: Signal| 1u64 << (s as i32 - 1);
        let mask = bit(Signal::SIGHUP)
            | bit(Signal::SIGQUIT)
            | bit(Signal::SIGPIPE)
            | bit(Signal::SIGTTOU)
            | bit(Signal::SIGSEGV);
        assert_eq!(ignored_in(mask), vec![Signal::SIGHUP, Signal::SIGQUIT]);
        assert_eq!(ignored_in(0), vec![]);
    }

    /// The signals a process's kernel account names in `field` (`SigIgn`, `SigCgt`) of
    /// `/proc/PID/status` text.
    fn named_in(status: &str, field: &str) -> Vec<Signal> {
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        ignored_in(u64::from_str_radix(mask.trim(), 16).unwrap())
    }

    /// What a shell started by this process has ignored.
    fn a_child_ignores() -> Vec<Signal> {
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", "cat /proc/self/status"])
            .output()
            .unwrap();
        named_in(&String::from_utf8(out.stdout).unwrap(), "SigIgn:")
    }

    /// In a process of its own (this test binary again, as its only test), so that what it
    /// changes of the signals' dispositions reaches no other test: a daemon started with
    /// SIGQUIT ignored (a background command of a script) goes on taking no action on it
    /// (caught by a handler that does nothing), and what it starts has it at its default.
    #[test]
    fn an_ignored_signal_is_caught_here_and_reaches_children_at_its_default() {
        const CHILD: &str = "DIRECTORD_MESH_SIGNALS_CHILD";
        if std::env::var_os(CHILD).is_some() {
            // SAFETY: setting a disposition to "ignore" runs no code of ours.
            unsafe {
                nix::sys::signal::signal(Signal::SIGQUIT, nix::sys::signal::SigHandler::SigIgn)
            }
            .unwrap();
            assert!(a_child_ignores().contains(&Signal::SIGQUIT));
            handle_ignored_signals();
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            assert!(!named_in(&status, "SigIgn:").contains(&Signal::SIGQUIT));
            assert!(named_in(&status, "SigCgt:").contains(&Signal::SIGQUIT));
            assert!(!a_child_ignores().contains(&Signal::SIGQUIT));
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "join::tests::an_ignored_signal_is_caught_here_and_reaches_children_at_its_default",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("1 passed"), "the check did not run: {said}");
    }
}
