//! The control socket: how the `directord-mesh` CLI talks to the daemon on its machine.
//!
//! A Unix socket in the state directory (mode 0660, group configurable). Each message is a frame:
//! a big-endian `u32` length, then CBOR of `{v: CONTROL_VERSION, body}`. The length is checked
//! against the limit of what the frame carries ([`MAX_FRAME`] for a request,
//! [`MAX_RESPONSE_FRAME`] for an answer) before anything is read, and the buffer grows as
//! the bytes come. A client sends one
//! [`ControlRequest`] and reads one [`ControlResponse`] per request, or a stream of them
//! (`Watch`, `ListJobs`); the connection may carry several in turn. A stream that has nothing
//! to say for [`STREAM_KEEPALIVE`] says [`ControlResponse::StillHere`], so a client can tell
//! silent jobs from a stopped daemon.

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use jobs::{Fingerprint, JobSpec, components::OutputLine};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{UnixListener, UnixStream},
};
use tracing::{debug, info, warn};

use crate::records::JobRecord;

/// Version of the control protocol; CLI and daemon of different versions refuse each other clearly.
pub const CONTROL_VERSION: u16 = 7;
/// Largest request frame (a submission is at most 8 MiB).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Largest answer frame: one job record with every target's output (up to 3 MiB of stdout and
/// of stderr each) fits for up to about 170 targets; a larger one is answered with an error
/// that says so. Lists of records come in parts of about [`RECORDS_PART`].
pub const MAX_RESPONSE_FRAME: usize = 1024 * 1024 * 1024;
/// About how many bytes of records one [`ControlResponse::JobsPart`] carries.
pub const RECORDS_PART: usize = 8 * 1024 * 1024;

/// What a frame carries, and so how large it may be.
pub trait Framed {
    const LIMIT: usize;
}

impl Framed for ControlRequest {
    const LIMIT: usize = MAX_FRAME;
}

impl Framed for ControlResponse {
    const LIMIT: usize = MAX_RESPONSE_FRAME;
}

/// What the CLI asks the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// This node and its membership table.
    Status,
    /// The line that joins another machine.
    JoinToken,
    /// Run jobs through the mesh, with this node as their originator.
    Submit(Submission),
    /// Follow jobs until each is done: [`ControlResponse::Watch`] events, then
    /// [`ControlResponse::WatchEnd`]. `output`: the jobs' live output lines too, and their
    /// outputs in each [`WatchEvent::Done`] record; without it, a Done record's results have
    /// no stdout and only the first line of stderr (`NodeResult::without_output`).
    Watch { job_ids: Vec<String>, output: bool },
    /// Every job this node submitted: [`ControlResponse::JobsPart`]s in order, then
    /// [`ControlResponse::JobsEnd`]. `outputs`: every result's stdout and stderr too; without
    /// them (a table, a filter, an analysis) the daemon reads them but sends none, so a
    /// listing of records with megabytes of output each stays small.
    ListJobs { outputs: bool },
    /// One job (`last` for the newest).
    JobInfo(String),
    /// Forget every job record but those still waiting for results: [`ControlResponse::Purged`].
    PurgeJobs,
    /// This node's cache (job and parent results, args, envs).
    DumpCache,
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlResponse {
    Status(Box<StatusReport>),
    JoinToken(String),
    Submitted(SubmitReply),
    Watch(WatchEvent),
    WatchEnd,
    /// A stream has had nothing to say for [`STREAM_KEEPALIVE`]: the daemon is still there.
    StillHere,
    /// Some of the records a `ListJobs` asked for, in order.
    JobsPart(Vec<JobRecord>),
    /// Every record has been sent.
    JobsEnd,
    Job(Option<Box<JobRecord>>),
    /// How many records a purge forgot, and how many it kept (still waiting for results).
    Purged {
        purged: usize,
        kept: usize,
    },
    Cache(serde_json::Value),
    /// The request cannot be carried out as asked (an unknown target, say): bad input.
    Refused(String),
    Error(String),
}

impl ControlResponse {
    /// What kind of answer this is, to name an unexpected one without printing all of it.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlResponse::Status(_) => "status",
            ControlResponse::JoinToken(_) => "join token",
            ControlResponse::Submitted(_) => "submitted",
            ControlResponse::Watch(_) => "watch event",
            ControlResponse::WatchEnd => "end of watch",
            ControlResponse::StillHere => "still here",
            ControlResponse::JobsPart(_) => "part of a list of jobs",
            ControlResponse::JobsEnd => "end of a list of jobs",
            ControlResponse::Job(_) => "job",
            ControlResponse::Purged { .. } => "purged",
            ControlResponse::Cache(_) => "cache",
            ControlResponse::Refused(_) => "refused",
            ControlResponse::Error(_) => "error",
        }
    }
}

/// A submission: the parents of one `exec` or `orchestrate`, and the command's options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub parents: Vec<SubmittedParent>,
    /// `--target`: replaces every parent's targets, in this order.
    pub targets: Vec<String>,
    /// `--restrict`: only jobs whose fingerprint starts with one of these run.
    pub restrict: Vec<String>,
    /// `--ignore-cache`.
    pub ignore_cache: bool,
    /// `--force-async`.
    pub force_async: bool,
    /// Targets send output lines while jobs run (`--stream`).
    pub stream: bool,
    /// An `exec`: each job is its own parent (parent id = job id).
    pub exec: bool,
}

/// One parent (orchestration entry) of a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmittedParent {
    /// Where the parent was written (`FILE: entry N`), to name it in errors; none for `exec`.
    #[serde(default)]
    pub origin: Option<String>,
    /// The entry's `name:`, shown with its jobs' records.
    #[serde(default)]
    pub name: Option<String>,
    pub targets: Option<Vec<String>>,
    pub is_async: bool,
    pub fingerprint: Fingerprint,
    pub jobs: Vec<SubmittedJob>,
}

/// One job of a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmittedJob {
    pub spec: JobSpec,
    /// `VERB: arguments` as written.
    pub definition: String,
}

/// What the daemon made of a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitReply {
    pub run_id: String,
    pub jobs: Vec<JobSummary>,
    /// Jobs left out by `--restrict`.
    pub restricted: usize,
    /// Names of live nodes a parent for every node left out: each shares its name with another
    /// live node (records name results by node), until one of them is renamed.
    #[serde(default)]
    pub left_out: Vec<String>,
    /// Nodes of another release a parent for every node left out (they take no part until
    /// every node runs the same release), as `name (release R, wire version W)`.
    #[serde(default)]
    pub other_releases_left_out: Vec<String>,
    /// Members not alive (expired or left, not yet forgotten) a parent for every node left
    /// out, as `name (expired)` or `name (left)`.
    #[serde(default)]
    pub not_alive_left_out: Vec<String>,
    /// Targets named that had left the mesh within the grace a goodbye gets (a restart, most
    /// likely), as `name (left N s ago)`: their jobs wait that long for them to come back.
    #[serde(default)]
    pub waiting_for_left: Vec<String>,
    /// That grace, in seconds.
    #[serde(default)]
    pub left_grace_secs: u64,
}

/// A submitted job, as the CLI lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job_id: String,
    pub parent_id: String,
    pub definition: String,
    pub fingerprint: String,
    pub targets: Vec<String>,
}

/// News about watched jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WatchEvent {
    /// A line of live output from a job on a node (best effort: see [`OutputLine`]).
    Output {
        job_id: String,
        node: String,
        line: OutputLine,
    },
    /// Every node has reported this job.
    Done(Box<JobRecord>),
    /// No such job here.
    Unknown(String),
    /// A target that still owes results is alive (heard through other nodes) but this node
    /// has not reached it directly for a while (a partial partition): its results come once
    /// it can. Told once per cut.
    OutOfReach { node: String },
    /// A target that still owes results said goodbye (a stop or a restart): its results come
    /// if it is back within `grace_secs` of its goodbye, else it is written off. Told once
    /// per goodbye.
    Left { node: String, grace_secs: u64 },
    /// The targets that still owe results of the watched jobs, as of now: the first
    /// [`WAITING_NAMED`] by name (in the order the jobs name them) and how many in all. Sent
    /// every few seconds while some are owed, so a client can show whom it waits for.
    Waiting { named: Vec<String>, total: usize },
}

/// Most targets a [`WatchEvent::Waiting`] names.
pub const WAITING_NAMED: usize = 8;

/// `status`: this node, then every member it knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    #[serde(rename = "self")]
    pub local: SelfInfo,
    pub nodes: Vec<NodeRow>,
}

/// This node as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfInfo {
    pub name: String,
    pub peer_id: String,
    pub version: String,
    /// The wire version this node speaks: nodes of another take no part in its mesh.
    #[serde(default)]
    pub wire_version: u16,
    pub listen_addresses: Vec<String>,
    /// Fingerprint of the mesh key; `None` for an open mesh.
    pub mesh_key_fingerprint: Option<String>,
    pub state_dir: String,
    pub heartbeat_interval_ms: u64,
    pub connected_peers: usize,
    /// Bytes of files this node has served to other nodes since it started.
    #[serde(default)]
    pub blob_bytes_served: u64,
    /// What the operator should know, in words (another daemon with this node's identity).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Results this node ran for other submitters and has not handed over yet, per submitter.
    #[serde(default)]
    pub results_owed: Vec<ResultsOwed>,
}

/// Results waiting in this node's outbox for one submitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsOwed {
    /// The submitter's peer id.
    pub peer_id: String,
    pub results: usize,
    /// How long every try to hand them over has failed; `None`: the last try did not fail.
    pub failing_secs: Option<u64>,
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    pub name: String,
    pub peer_id: String,
    /// `alive`, `expired`, `left` or `conflict`.
    pub state: String,
    pub version: String,
    pub addresses: Vec<String>,
    pub machine_id: String,
    pub host_uptime_secs: u64,
    pub agent_uptime_secs: u64,
    pub last_seen_secs: f64,
    pub load: f32,
    pub labels: std::collections::BTreeMap<String, String>,
    pub is_self: bool,
}

/// Why talking to the daemon failed; the message tells the operator what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no directord-mesh daemon is running with state directory {state_dir} (no answer on {socket}).\n\
         Start one with:  directord-mesh --state-dir {state_dir} join"
    )]
    NoDaemon { state_dir: String, socket: String },
    #[error(
        "the daemon with pid {pid} runs with state directory {state_dir}, but its control \
         socket {socket} is gone (removed while it ran, or it is stopping): it cannot be reached \
         until it starts again. Restart it: stop it (kill -TERM {pid}, or through its service \
         manager) and start it again"
    )]
    SocketGone {
        state_dir: String,
        socket: String,
        pid: u32,
    },
    #[error(
        "{state_dir} is not a directord-mesh state directory (it holds other files but none \
         of a node's: identity.key, mesh.key, join-token, node.redb): no daemon has run with \
         it (check --state-dir or DIRECTORD_MESH_STATE_DIR)"
    )]
    NotStateDir { state_dir: String },
    #[error(
        "there is no state directory {state_dir}: no directord-mesh daemon has run with it \
         (check --state-dir or DIRECTORD_MESH_STATE_DIR).{}\n\
         A new node starts there with:  directord-mesh --state-dir {state_dir} join  \
         (add --token TOKEN to join an existing mesh; without it, it creates a new one)",
        root_daemon_hint(*.root_daemon)
    )]
    NoStateDir {
        state_dir: String,
        /// A daemon serves root's default state directory, which this (other) user's
        /// default is not: most likely the one meant.
        root_daemon: bool,
    },
    #[error(
        "permission denied on {socket}: run as root or as a member of the socket's group (see join --socket-group)"
    )]
    PermissionDenied { socket: String },
    #[error(
        "permission denied on {state_dir} (or a directory above it): this user cannot reach the \
         control socket in it; run as root or as a member of the socket's group (see join \
         --socket-group)"
    )]
    StateDirDenied { state_dir: String },
    #[error("control socket {socket}: {source}")]
    Io {
        socket: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the daemon speaks control protocol version {found}, this CLI speaks {CONTROL_VERSION}: \
         they are different releases ({})",
        version_advice(*found)
    )]
    Version { found: u16 },
    #[error("malformed control message: {0}")]
    Malformed(String),
    #[error("control message of {size} bytes is over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error(
        "the daemon closed the connection without answering (it stopped or restarted: its log says why)"
    )]
    Closed,
    #[error(
        "the daemon on {socket} did not answer within {} s (is it stopped, e.g. with SIGSTOP, stuck, \
         or out of file descriptors? its log says more)",
        .after.as_secs()
    )]
    NoAnswer {
        socket: String,
        after: std::time::Duration,
    },
    #[error("the daemon answered: {0}")]
    Daemon(String),
}

#[derive(Serialize, Deserialize)]
struct Frame<T> {
    v: u16,
    body: T,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u16,
}

/// Reads one frame; `Ok(None)` on a clean end of stream before the frame starts.
pub async fn read_frame<T: DeserializeOwned + Framed>(
    io: &mut (impl AsyncRead + Unpin),
) -> Result<Option<T>, ControlError> {
    let mut len = [0u8; 4];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(transport_error(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > T::LIMIT {
        return Err(ControlError::TooLarge {
            size: len,
            limit: T::LIMIT,
        });
    }
    // Grown as the bytes come (from 64 KiB): a client that announces a large frame and
    // sends little holds little.
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    (&mut *io)
        .take(len as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(transport_error)?;
    if buf.len() < len {
        return Err(transport_error(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the frame ended after {} of its {len} bytes", buf.len()),
        )));
    }
    match ciborium::from_reader::<Frame<T>, _>(buf.as_slice()) {
        Ok(f) if f.v == CONTROL_VERSION => Ok(Some(f.body)),
        Ok(f) => Err(ControlError::Version { found: f.v }),
        Err(e) => match ciborium::from_reader::<VersionOnly, _>(buf.as_slice()) {
            Ok(only) if only.v != CONTROL_VERSION => Err(ControlError::Version { found: only.v }),
            _ => Err(ControlError::Malformed(e.to_string())),
        },
    }
}

/// Where the daemon of root's default state directory is, for a user whose own default
/// directory has none (empty when there is no such daemon).
fn root_daemon_hint(root_daemon: bool) -> String {
    if !root_daemon {
        return String::new();
    }
    let dir = crate::config::ROOT_STATE_DIR;
    format!(
        "\nA daemon runs as root with state directory {dir} (its control socket is there): \
         to use it as a member of its socket group, pass --state-dir {dir} (or set \
         DIRECTORD_MESH_STATE_DIR={dir})."
    )
}

/// Whether a daemon's control socket is in root's default state directory, while this user
/// (not root) asked for another directory. Only a user who may look into that directory (its
/// socket group's members) sees the socket.
fn root_daemon_elsewhere(state_dir: &Path) -> bool {
    let root_dir = Path::new(crate::config::ROOT_STATE_DIR);
    !nix::unistd::geteuid().is_root() && state_dir != root_dir && socket_path(root_dir).exists()
}

/// What to do when the daemon speaks control protocol `found`, not this CLI's.
fn version_advice(found: u16) -> &'static str {
    if found < CONTROL_VERSION {
        "the daemon is older: after an upgrade, restart it"
    } else {
        "the daemon is newer: use the directord-mesh binary of its release"
    }
}

/// Writes one frame.
pub async fn write_frame<T: Serialize + Framed>(
    io: &mut (impl AsyncWrite + Unpin),
    body: &T,
) -> Result<(), ControlError> {
    let mut buf = Vec::new();
    ciborium::into_writer(
        &Frame {
            v: CONTROL_VERSION,
            body,
        },
        &mut buf,
    )
    .map_err(|e| ControlError::Malformed(e.to_string()))?;
    if buf.len() > T::LIMIT {
        return Err(ControlError::TooLarge {
            size: buf.len(),
            limit: T::LIMIT,
        });
    }
    let mut out = Vec::with_capacity(buf.len() + 4);
    out.extend_from_slice(&(buf.len() as u32).to_be_bytes());
    out.extend_from_slice(&buf);
    io.write_all(&out).await.map_err(transport_error)?;
    io.flush().await.map_err(transport_error)
}

/// A connection that failed under a frame: the other side went away (a daemon that stopped
/// or restarted, with requests it had not read yet; a client that hung up), or another
/// failure of the socket.
fn transport_error(e: io::Error) -> ControlError {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => ControlError::Closed,
        _ => ControlError::Malformed(format!("the connection failed: {e}")),
    }
}

/// How long the CLI waits for the daemon's answer to a request, or for the next frame of a
/// stream (a daemon says [`ControlResponse::StillHere`] on a quiet stream, so silent jobs do
/// not count). Every answer is prompt: the slowest, a submission, waits for one commit to disk.
pub const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a stream stays quiet before the daemon says [`ControlResponse::StillHere`]; well
/// under [`ANSWER_TIMEOUT`], so a busy machine's late keepalive is not taken for a dead daemon.
pub const STREAM_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// The CLI's side of the control socket.
pub struct ControlClient {
    stream: UnixStream,
    socket: PathBuf,
    answer_timeout: std::time::Duration,
}

/// The answer to `ListJobs` as it comes, a part at a time (from [`ControlClient::list_jobs`]).
pub struct JobParts<'a> {
    client: &'a mut ControlClient,
    /// The first answer, read when the list was asked for.
    next: Option<ControlResponse>,
    ended: bool,
}

impl JobParts<'_> {
    /// The next part of the list, in order; `None` once it ended.
    pub async fn next(&mut self) -> Result<Option<Vec<JobRecord>>, ControlError> {
        if self.ended {
            return Ok(None);
        }
        let answer = match self.next.take() {
            Some(answer) => answer,
            None => self.client.next_event().await?,
        };
        match answer {
            ControlResponse::JobsPart(part) => Ok(Some(part)),
            ControlResponse::JobsEnd => {
                self.ended = true;
                Ok(None)
            }
            other => Err(ControlError::Malformed(format!(
                "unexpected answer in a list of jobs: {}",
                other.kind()
            ))),
        }
    }
}

impl ControlClient {
    /// Connects to the daemon of `state_dir`.
    pub async fn connect(state_dir: &Path) -> Result<Self, ControlError> {
        let socket = socket_path(state_dir);
        Self::connect_socket(state_dir, &socket).await
    }

    pub async fn connect_socket(state_dir: &Path, socket: &Path) -> Result<Self, ControlError> {
        match UnixStream::connect(socket).await {
            Ok(stream) => Ok(Self {
                stream,
                socket: socket.to_path_buf(),
                answer_timeout: ANSWER_TIMEOUT,
            }),
            Err(e) => Err(match e.kind() {
                io::ErrorKind::NotFound if !state_dir.exists() => ControlError::NoStateDir {
                    state_dir: state_dir.display().to_string(),
                    root_daemon: root_daemon_elsewhere(state_dir),
                },
                // A directory of something else (`--state-dir /tmp`): a daemon is not to be
                // started there on this advice (an empty one may well be meant for one).
                io::ErrorKind::NotFound
                    if !crate::state::has_state_files(state_dir)
                        && std::fs::read_dir(state_dir)
                            .is_ok_and(|mut entries| entries.next().is_some()) =>
                {
                    ControlError::NotStateDir {
                        state_dir: state_dir.display().to_string(),
                    }
                }
                // A daemon runs with the directory, but its socket went (removed by hand, or
                // by a cleanup of the directory): starting another would be refused. (The
                // daemon a copy of the directory names runs with another one: it holds the
                // lock of its own.)
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    if let Some(pid) =
                        jobs::processes::running_keeper(&state_dir.join("running-jobs"))
                            .filter(|_| crate::state::held_by_a_daemon(state_dir)) =>
                {
                    ControlError::SocketGone {
                        state_dir: state_dir.display().to_string(),
                        socket: socket.display().to_string(),
                        pid,
                    }
                }
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ControlError::NoDaemon {
                        state_dir: state_dir.display().to_string(),
                        socket: socket.display().to_string(),
                    }
                }
                // The directory cannot be looked into: the socket may not even be there.
                io::ErrorKind::PermissionDenied
                    if std::fs::symlink_metadata(socket)
                        .is_err_and(|e| e.kind() == io::ErrorKind::PermissionDenied) =>
                {
                    ControlError::StateDirDenied {
                        state_dir: state_dir.display().to_string(),
                    }
                }
                io::ErrorKind::PermissionDenied => ControlError::PermissionDenied {
                    socket: socket.display().to_string(),
                },
                _ => ControlError::Io {
                    socket: socket.display().to_string(),
                    source: e,
                },
            }),
        }
    }

    /// Waits this long for answers instead of [`ANSWER_TIMEOUT`].
    pub fn with_answer_timeout(mut self, after: std::time::Duration) -> Self {
        self.answer_timeout = after;
        self
    }

    /// Sends one request and reads its response, waiting at most the answer timeout; an `Error`
    /// answer becomes [`ControlError::Daemon`].
    pub async fn request(
        &mut self,
        request: &ControlRequest,
    ) -> Result<ControlResponse, ControlError> {
        let after = self.answer_timeout;
        let exchange = async {
            self.send(request).await?;
            self.next().await
        };
        match tokio::time::timeout(after, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(ControlError::NoAnswer {
                socket: self.socket.display().to_string(),
                after,
            }),
        }
    }

    /// Sends a request whose answer is a stream (`Watch`) and reads its first event, however
    /// long it takes; read the rest with [`next_event`](Self::next_event).
    pub async fn start_stream(
        &mut self,
        request: &ControlRequest,
    ) -> Result<ControlResponse, ControlError> {
        self.send(request).await?;
        self.next_event().await
    }

    /// Writes `request`. A daemon that hung up before reading it may have said why first (it
    /// refuses connections past its limit so): that answer is the error then, not the broken
    /// connection.
    async fn send(&mut self, request: &ControlRequest) -> Result<(), ControlError> {
        let e = match write_frame(&mut self.stream, request).await {
            Ok(()) => return Ok(()),
            // Only a connection the daemon closed may hold a word of why.
            Err(e @ ControlError::Closed) => e,
            Err(e) => return Err(e),
        };
        let said = tokio::time::timeout(std::time::Duration::from_secs(1), self.next()).await;
        match said {
            Ok(Err(refused @ ControlError::Daemon(_))) => Err(refused),
            _ => Err(e),
        }
    }

    /// Every job record the daemon holds, oldest first (`ListJobs`, gathered from its parts:
    /// all in memory at once; [`ControlClient::list_jobs`] reads them a part at a time).
    pub async fn records(&mut self) -> Result<Vec<JobRecord>, ControlError> {
        let mut all = Vec::new();
        let mut parts = self.list_jobs(true).await?;
        while let Some(part) = parts.next().await? {
            all.extend(part);
        }
        Ok(all)
    }

    /// Asks for every job record the daemon holds (`ListJobs`), with their outputs or
    /// without; they come oldest first, in parts of about [`RECORDS_PART`] bytes: see
    /// [`JobParts::next`].
    pub async fn list_jobs(&mut self, outputs: bool) -> Result<JobParts<'_>, ControlError> {
        let first = self
            .start_stream(&ControlRequest::ListJobs { outputs })
            .await?;
        Ok(JobParts {
            client: self,
            next: Some(first),
            ended: false,
        })
    }

    /// Reads a stream's next event, however long the jobs behind it take, passing over the
    /// daemon's [`ControlResponse::StillHere`]; a daemon silent for the answer timeout (stopped
    /// or stuck: a live one says it is still there every [`STREAM_KEEPALIVE`]) is
    /// [`ControlError::NoAnswer`].
    pub async fn next_event(&mut self) -> Result<ControlResponse, ControlError> {
        loop {
            let after = self.answer_timeout;
            match tokio::time::timeout(after, self.next()).await {
                Ok(Ok(ControlResponse::StillHere)) => continue,
                Ok(answer) => return answer,
                Err(_) => {
                    return Err(ControlError::NoAnswer {
                        socket: self.socket.display().to_string(),
                        after,
                    });
                }
            }
        }
    }

    /// Reads the next response (after a `Watch`, the next event).
    pub async fn next(&mut self) -> Result<ControlResponse, ControlError> {
        match read_frame::<ControlResponse>(&mut self.stream).await? {
            Some(ControlResponse::Error(e)) => Err(ControlError::Daemon(e)),
            Some(r) => Ok(r),
            None => Err(ControlError::Closed),
        }
    }
}

/// Answers control requests; implemented by the daemon.
pub trait ControlHandler: Send + Sync + 'static {
    fn handle(&self, request: ControlRequest) -> impl Future<Output = Reply> + Send;
}

/// A handler's answer: one response, or a stream of them (ended by the sender closing).
pub enum Reply {
    One(ControlResponse),
    Stream(tokio::sync::mpsc::Receiver<ControlResponse>),
}

impl From<ControlResponse> for Reply {
    fn from(r: ControlResponse) -> Self {
        Reply::One(r)
    }
}

/// Binds the control socket: removes a stale one (the caller holds the state-directory lock, so
/// no live daemon owns it), sets mode 0660 and the group.
pub fn bind(socket: &Path, group: Option<&str>) -> Result<UnixListener, String> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot remove stale socket {}: {e}",
                socket.display()
            ));
        }
    }
    let listener =
        bind_owner_only(socket).map_err(|e| format!("cannot bind {}: {e}", socket.display()))?;
    // From here a failure removes the socket again: nothing would answer on it.
    share_socket(socket, group).inspect_err(|_| {
        let _ = std::fs::remove_file(socket);
    })?;
    Ok(listener)
}

/// Binds `socket` as a file only its owner may use (0600), until [`share_socket`] gives it its
/// mode: bound under the umask alone (0777 less 022, most often), others could connect in
/// the moment before that.
///
/// The umask belongs to the whole process, so it is tightened only around the bind and put
/// back at once. That is safe here: a daemon binds its socket while it starts, before it runs
/// any job or serves anything, and the one other thread it has then (the store's writer)
/// creates no file; a file another thread did create meanwhile would only get fewer
/// permissions, never more.
fn bind_owner_only(socket: &Path) -> io::Result<UnixListener> {
    use nix::sys::stat::{Mode, umask};
    let before = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(socket);
    umask(before);
    bound
}

/// Gives the bound socket its mode, and with `group` its group (and the state directory's).
fn share_socket(socket: &Path, group: Option<&str>) -> Result<(), String> {
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot set the mode of {}: {e}", socket.display()))?;
    if let Some(group) = group {
        let gid = resolve_group(group)?;
        nix::unistd::chown(socket, None, Some(gid))
            .map_err(|e| format!("cannot give {} to group {group}: {e}", socket.display()))?;
        // The group must also be able to reach the socket inside the state directory; the
        // keys in there stay 0600.
        if let Some(dir) = socket.parent() {
            nix::unistd::chown(dir, None, Some(gid))
                .map_err(|e| format!("cannot give {} to group {group}: {e}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
                .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))?;
        }
    }
    Ok(())
}

/// A group given by name or number.
pub fn resolve_group(group: &str) -> Result<nix::unistd::Gid, String> {
    if let Ok(n) = group.parse::<u32>() {
        // chown's "leave the group as it is": the socket would stay root's alone.
        if n == u32::MAX {
            return Err(format!(
                "--socket-group: {n} is no group id (it means \"no change\" to the system)"
            ));
        }
        return Ok(nix::unistd::Gid::from_raw(n));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(format!(
            "--socket-group: no group named '{group}' on this machine"
        )),
        Err(e) => Err(format!("--socket-group: cannot look up '{group}': {e}")),
    }
}

/// Serves the control socket until the listener is dropped (the task is aborted).
pub async fn serve<H: ControlHandler>(listener: UnixListener, handler: Arc<H>) {
    serve_with(listener, handler, ServeLimits::default()).await
}

/// At most this many control connections are open at once; one more is told so and closed.
/// Each holds a task and a descriptor, and the daemon's descriptors are shared with the
/// mesh, its database and the jobs' pipes: a client that opens connections in a loop must
/// not take those away.
pub const MAX_CONNECTIONS: usize = 256;

/// A connection whose next request has not come (whole) for this long is closed: the CLI
/// sends each request at once, so only a client that hangs (or never speaks) waits that long.
pub const REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// The bounds [`serve`] keeps; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct ServeLimits {
    /// A stream quiet this long says [`ControlResponse::StillHere`].
    keepalive: std::time::Duration,
    max_connections: usize,
    request_wait: std::time::Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            keepalive: STREAM_KEEPALIVE,
            max_connections: MAX_CONNECTIONS,
            request_wait: REQUEST_WAIT,
        }
    }
}

/// [`serve`] within `limits`.
async fn serve_with<H: ControlHandler>(
    listener: UnixListener,
    handler: Arc<H>,
    limits: ServeLimits,
) {
    let ServeLimits {
        keepalive,
        max_connections,
        request_wait,
    } = limits;
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut refused_since_said = 0u64;
    let mut refusal_said_at: Option<tokio::time::Instant> = None;
    // Failures to accept (out of file descriptors, mostly) are retried every 100 ms and said
    // once a minute.
    let mut failed_since_said = 0u64;
    let mut said_at: Option<tokio::time::Instant> = None;
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                failed_since_said += 1;
                if said_at.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(60)) {
                    warn!(
                        failures = failed_since_said,
                        "control socket accept failed: {e} (commands wait until it works; \
                         tried again every 100 ms, said once a minute)"
                    );
                    said_at = Some(tokio::time::Instant::now());
                    failed_since_said = 0;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = open.clone().try_acquire_owned() else {
            refused_since_said += 1;
            if refusal_said_at.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(60)) {
                warn!(
                    refused = refused_since_said,
                    "control connections refused: {max_connections} are open already \
                     (said once a minute)"
                );
                refusal_said_at = Some(tokio::time::Instant::now());
                refused_since_said = 0;
            }
            // Said without waiting on the client: one that does not read must not hold up
            // the accept loop.
            tokio::spawn(async move {
                let why = format!(
                    "this daemon already serves {max_connections} control connections (the \
                     most it keeps open at once); try again once some have finished"
                );
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    write_frame(&mut stream, &ControlResponse::Error(why)),
                )
                .await;
            });
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            // Held as long as the connection is served.
            let _place = place;
            loop {
                let next =
                    tokio::time::timeout(request_wait, read_frame::<ControlRequest>(&mut stream));
                let Ok(next) = next.await else {
                    debug!(
                        "closed a control connection whose next request had not come in {request_wait:?}"
                    );
                    return;
                };
                let reply = match next {
                    // A client gone before its request was read (killed, or given up waiting
                    // on a daemon that was stuck or out of file descriptors) waits for nothing:
                    // what it asked is not done (its operator may ask again).
                    Ok(Some(_)) if hung_up(&stream) => {
                        info!("dropped a control request whose client had already gone");
                        return;
                    }
                    Ok(Some(request)) => handler.handle(request).await,
                    Ok(None) => return,
                    Err(ControlError::Version { found }) => {
                        let why = client_of_another_version(found);
                        warn!("refused a control connection: {why}");
                        let _ = write_frame(&mut stream, &ControlResponse::Error(why)).await;
                        return;
                    }
                    Err(e) => {
                        debug!("bad control request: {e}");
                        // Tell the client what was wrong, then hang up: the stream may be out of step.
                        let _ =
                            write_frame(&mut stream, &ControlResponse::Error(e.to_string())).await;
                        return;
                    }
                };
                match reply {
                    Reply::One(response) => {
                        if !answer(&mut stream, &response).await {
                            return;
                        }
                    }
                    Reply::Stream(mut rx) => loop {
                        let response = match tokio::time::timeout(keepalive, rx.recv()).await {
                            Ok(Some(response)) => response,
                            Ok(None) => break,
                            Err(_) => ControlResponse::StillHere,
                        };
                        if !answer(&mut stream, &response).await {
                            return;
                        }
                    },
                }
            }
        });
    }
}

/// Why this daemon refuses a client that speaks control protocol `found`, in the daemon's
/// words (a [`ControlError::Version`] is the CLI's: "the daemon speaks ...").
fn client_of_another_version(found: u16) -> String {
    let advice = if found < CONTROL_VERSION {
        "the client is older: use the directord-mesh binary of this daemon's release"
    } else {
        "the client is newer: after an upgrade, restart this daemon"
    };
    format!(
        "this daemon speaks control protocol version {CONTROL_VERSION}, the client that \
         connected speaks {found}: they are different releases ({advice})"
    )
}

/// Writes one answer; `false` once the client is gone. An answer too large for a frame is
/// replaced by an error that says so (in the log too), and the connection goes on.
async fn answer(stream: &mut UnixStream, response: &ControlResponse) -> bool {
    answer_or_say_why(stream, response, ControlResponse::Error).await
}

/// [`answer`] for any kind of frame: `error` makes the answer that says why one could not
/// be sent.
async fn answer_or_say_why<T: Serialize + Framed>(
    stream: &mut (impl AsyncWrite + Unpin),
    response: &T,
    error: impl Fn(String) -> T,
) -> bool {
    match write_frame(stream, response).await {
        Ok(()) => true,
        Err(e @ ControlError::TooLarge { .. }) => {
            let why = format!("this answer cannot be sent: {e}");
            warn!("{why}");
            write_frame(stream, &error(why)).await.is_ok()
        }
        Err(_) => false,
    }
}

/// Whether the client has closed its socket (both ways: a client that only shut its writing
/// side still waits for the answer), without reading anything it sent.
fn hung_up(stream: &UnixStream) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

/// The socket path for a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(crate::config::CONTROL_SOCKET)
}

#[cfg(test)]
mod tests {
    /// A frame with a small limit, to test what happens past it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Small {
        Data(Vec<u8>),
        Error(String),
    }

    impl Framed for Small {
        const LIMIT: usize = 200;
    }

    /// An answer over its frame's limit is replaced by one that says why, and the
    /// connection stays in step (the client reads that error, not a cut frame).
    /// A socket whose group cannot be given is not left behind: nothing would answer on it.
    #[tokio::test]
    async fn a_socket_that_cannot_be_shared_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("control.sock");
        let Err(e) = bind(&sock, Some("no-such-group-for-directord-mesh")) else {
            panic!("a socket was bound for a group that does not exist");
        };
        assert!(e.contains("no-such-group-for-directord-mesh"), "{e}");
        assert!(!sock.exists());
    }

    #[tokio::test]
    async fn an_answer_too_large_is_replaced_by_one_that_says_so() {
        let mut out = Vec::new();
        assert!(answer_or_say_why(&mut out, &Small::Data(vec![7; 1000]), Small::Error).await);
        match read_frame::<Small>(&mut out.as_slice()).await.unwrap() {
            Some(Small::Error(why)) => assert!(
                why.starts_with("this answer cannot be sent: control message of ")
                    && why.ends_with("bytes is over the 200-byte limit"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        let mut out = Vec::new();
        assert!(answer_or_say_why(&mut out, &Small::Data(vec![7; 10]), Small::Error).await);
        assert_eq!(
            read_frame::<Small>(&mut out.as_slice()).await.unwrap(),
            Some(Small::Data(vec![7; 10]))
        );
    }

    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_reject_bad_input() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &ControlRequest::Status)
            .await
            .unwrap();
        let back: ControlRequest = read_frame(&mut buf.as_slice()).await.unwrap().unwrap();
        assert_eq!(back, ControlRequest::Status);

        // Empty stream: a clean end, not an error.
        assert!(
            read_frame::<ControlRequest>(&mut &[][..])
                .await
                .unwrap()
                .is_none()
        );
        // A length over the cap is refused before allocation.
        let huge = [0xffu8, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame::<ControlRequest>(&mut &huge[..]).await,
            Err(ControlError::TooLarge { .. })
        ));
        // Garbage body.
        let garbage = [0, 0, 0, 3, 0xff, 0x00, 0x13];
        assert!(matches!(
            read_frame::<ControlRequest>(&mut &garbage[..]).await,
            Err(ControlError::Malformed(_))
        ));
        // Truncated body: the other side went away mid-frame, as when the connection is
        // reset (a daemon restarted with the request unread) or its pipe broken.
        let truncated = [0, 0, 0, 9, 1];
        assert!(matches!(
            read_frame::<ControlRequest>(&mut &truncated[..]).await,
            Err(ControlError::Closed)
        ));
        for kind in [io::ErrorKind::ConnectionReset, io::ErrorKind::BrokenPipe] {
            assert!(matches!(
                transport_error(io::Error::from(kind)),
                ControlError::Closed
            ));
        }
        assert!(matches!(
            transport_error(io::Error::from(io::ErrorKind::PermissionDenied)),
            ControlError::Malformed(e) if e.starts_with("the connection failed")
        ));
        // Another version is named as such.
        let mut body = Vec::new();
        ciborium::into_writer(
            &Frame {
                v: 42,
                body: ControlRequest::Status,
            },
            &mut body,
        )
        .unwrap();
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend(body);
        let err = read_frame::<ControlRequest>(&mut framed.as_slice())
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::Version { found: 42 }));
        assert!(err.to_string().contains("version 42"), "{err}");
        assert!(err.to_string().contains("the daemon is newer"), "{err}");
        let older = ControlError::Version { found: 1 }.to_string();
        assert!(older.contains("the daemon is older: after an upgrade, restart it"));
    }

    #[tokio::test]
    async fn missing_daemon_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let err = ControlClient::connect(dir.path())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no directord-mesh daemon is running"), "{err}");
        assert!(err.contains("join"), "{err}");
    }

    struct Echo;
    impl ControlHandler for Echo {
        async fn handle(&self, request: ControlRequest) -> Reply {
            match request {
                ControlRequest::JoinToken => ControlResponse::JoinToken("t".into()).into(),
                // A watch of a job that is quiet for 600 ms, then done.
                ControlRequest::Watch { .. } => {
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                        let _ = tx.send(ControlResponse::WatchEnd).await;
                    });
                    Reply::Stream(rx)
                }
                _ => ControlResponse::Error("nope".into()).into(),
            }
        }
    }

    fn watch() -> ControlRequest {
        ControlRequest::Watch {
            job_ids: vec!["j".into()],
            output: false,
        }
    }

    /// A quiet stream of a live daemon is followed to its end, past the client's answer
    /// timeout: the daemon says it is still there.
    #[tokio::test]
    async fn a_quiet_stream_is_followed_past_the_answer_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let listener = bind(&dir.path().join("control.sock"), None).unwrap();
        let keepalive = std::time::Duration::from_millis(50);
        let server = tokio::spawn(serve_with(
            listener,
            Arc::new(Echo),
            ServeLimits {
                keepalive,
                ..ServeLimits::default()
            },
        ));
        // Keepalives every 50 ms keep a 0.6 s answer timeout from passing in a 1.5 s quiet
        // stream (unless the whole test stalls for over half a second).
        let mut c = ControlClient::connect(dir.path())
            .await
            .unwrap()
            .with_answer_timeout(std::time::Duration::from_millis(600));
        assert_eq!(
            c.start_stream(&watch()).await.unwrap(),
            ControlResponse::WatchEnd
        );
        // The connection is still in step for the next request.
        assert_eq!(
            c.request(&ControlRequest::JoinToken).await.unwrap(),
            ControlResponse::JoinToken("t".into())
        );
        server.abort();
    }

    /// The same quiet stream from a daemon that says nothing (stopped, or of a version before
    /// keepalives) is reported once the answer timeout passes.
    #[tokio::test]
    async fn a_stream_from_a_daemon_gone_silent_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let listener = bind(&dir.path().join("control.sock"), None).unwrap();
        let keepalive = std::time::Duration::from_secs(3600);
        let server = tokio::spawn(serve_with(
            listener,
            Arc::new(Echo),
            ServeLimits {
                keepalive,
                ..ServeLimits::default()
            },
        ));
        let mut c = ControlClient::connect(dir.path())
            .await
            .unwrap()
            .with_answer_timeout(std::time::Duration::from_millis(200));
        let err = c.start_stream(&watch()).await.unwrap_err();
        assert!(matches!(err, ControlError::NoAnswer { .. }), "{err}");
        assert!(err.to_string().contains("did not answer within"), "{err}");
        server.abort();
    }

    /// A group by number is taken as it is, but for chown's "no change", which would leave the
    /// socket root's alone.
    #[test]
    fn socket_group_no_change_is_refused() {
        assert_eq!(resolve_group("0").unwrap().as_raw(), 0);
        let e = resolve_group("4294967295").unwrap_err();
        assert!(
            e.contains("--socket-group: 4294967295 is no group id"),
            "{e}"
        );
    }

    /// One connection past the cap is told why and closed; once one closes, the next is served.
    #[tokio::test]
    async fn connections_past_the_cap_are_told_so() {
        let dir = tempfile::tempdir().unwrap();
        let listener = bind(&dir.path().join("control.sock"), None).unwrap();
        let limits = ServeLimits {
            max_connections: 2,
            ..ServeLimits::default()
        };
        let server = tokio::spawn(serve_with(listener, Arc::new(Echo), limits));
        let mut first = ControlClient::connect(dir.path()).await.unwrap();
        let mut second = ControlClient::connect(dir.path()).await.unwrap();
        for c in [&mut first, &mut second] {
            assert_eq!(
                c.request(&ControlRequest::JoinToken).await.unwrap(),
                ControlResponse::JoinToken("t".into())
            );
        }
        // Told so whether its request went out before the daemon hung up or after (then its
        // write fails, and the refusal is read all the same).
        for wait in [0, 300] {
            let mut third = ControlClient::connect(dir.path()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            let err = third
                .request(&ControlRequest::JoinToken)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("already serves 2 control connections"),
                "after {wait} ms: {err}"
            );
        }
        drop(first);
        // The server sees the first one go when it next reads from it.
        let mut served = None;
        for _ in 0..100 {
            let mut next = ControlClient::connect(dir.path()).await.unwrap();
            match next.request(&ControlRequest::JoinToken).await {
                Ok(answer) => {
                    served = Some(answer);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        assert_eq!(served, Some(ControlResponse::JoinToken("t".into())));
        server.abort();
    }

    /// A client that connects and never sends (the whole of) a request is hung up on.
    #[tokio::test]
    async fn a_connection_without_a_request_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("control.sock");
        let listener = bind(&sock, None).unwrap();
        let limits = ServeLimits {
            request_wait: std::time::Duration::from_millis(200),
            ..ServeLimits::default()
        };
        let server = tokio::spawn(serve_with(listener, Arc::new(Echo), limits));
        let mut silent = UnixStream::connect(&sock).await.unwrap();
        // Half a frame's length, then nothing.
        silent.write_all(&[0, 0]).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            silent.read_to_end(&mut rest),
        )
        .await;
        assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
        // A client that asks at once is answered as before.
        let mut c = ControlClient::connect(dir.path()).await.unwrap();
        assert_eq!(
            c.request(&ControlRequest::JoinToken).await.unwrap(),
            ControlResponse::JoinToken("t".into())
        );
        server.abort();
    }

    #[tokio::test]
    async fn server_answers_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("control.sock");
        let listener = bind(&sock, None).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        let server = tokio::spawn(serve(listener, Arc::new(Echo)));

        let mut c = ControlClient::connect(dir.path()).await.unwrap();
        assert_eq!(
            c.request(&ControlRequest::JoinToken).await.unwrap(),
            ControlResponse::JoinToken("t".into())
        );
        let err = c.request(&ControlRequest::Status).await.unwrap_err();
        assert!(matches!(err, ControlError::Daemon(ref m) if m == "nope"));

        // A client that sends garbage gets an error answer; the server keeps serving others.
        let mut raw = UnixStream::connect(&sock).await.unwrap();
        raw.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        let answer: ControlResponse = read_frame(&mut raw).await.unwrap().unwrap();
        assert!(matches!(answer, ControlResponse::Error(_)));
        let mut c2 = ControlClient::connect(dir.path()).await.unwrap();
        assert!(c2.request(&ControlRequest::JoinToken).await.is_ok());
        server.abort();
    }

    /// A client of another control protocol version is answered in the daemon's own words
    /// (its version, then the client's), not in a CLI's.
    #[tokio::test]
    async fn a_client_of_another_version_is_told_from_the_daemons_side() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("control.sock");
        let server = tokio::spawn(serve(bind(&sock, None).unwrap(), Arc::new(Echo)));
        for (client, advice) in [
            (CONTROL_VERSION - 1, "the client is older"),
            (CONTROL_VERSION + 1, "the client is newer"),
        ] {
            let mut body = Vec::new();
            ciborium::into_writer(
                &Frame {
                    v: client,
                    body: ControlRequest::Status,
                },
                &mut body,
            )
            .unwrap();
            let mut raw = UnixStream::connect(&sock).await.unwrap();
            raw.write_all(&(body.len() as u32).to_be_bytes())
                .await
                .unwrap();
            raw.write_all(&body).await.unwrap();
            let Some(ControlResponse::Error(why)) = read_frame(&mut raw).await.unwrap() else {
                panic!("no error answer");
            };
            let said = format!(
                "this daemon speaks control protocol version {CONTROL_VERSION}, the client \
                 that connected speaks {client}"
            );
            assert!(why.contains(&said) && why.contains(advice), "{why}");
            assert!(!why.contains("this CLI speaks"), "{why}");
        }
        server.abort();
    }

    /// The socket is its owner's alone from the moment it is bound, whatever the umask (a
    /// socket is made with 0777 less the umask).
    #[tokio::test]
    async fn a_socket_is_bound_for_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("control.sock");
        let _listener = bind_owner_only(&sock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// A user whose own default state directory has no daemon, while root's has one, is told
    /// where that one is.
    #[test]
    fn no_state_dir_names_roots_daemon_when_there_is_one() {
        let error = |root_daemon| {
            ControlError::NoStateDir {
                state_dir: "/home/u/.local/state/directord-mesh".into(),
                root_daemon,
            }
            .to_string()
        };
        let e = error(true);
        assert!(
            e.contains("--state-dir /var/lib/directord-mesh")
                && e.contains("A new node starts there"),
            "{e}"
        );
        assert!(!error(false).contains("/var/lib/directord-mesh"));
    }

    /// Counts the requests it is given.
    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicUsize);
    impl ControlHandler for Counting {
        async fn handle(&self, _: ControlRequest) -> Reply {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ControlResponse::JoinToken("t".into()).into()
        }
    }

    /// A client that sent its request and went away before the daemon read it (killed, or
    /// given up on a daemon that was stuck) does not have it done; one still waiting does.
    #[tokio::test]
    async fn a_request_whose_client_has_gone_is_not_done() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("control.sock");
        let listener = bind(&sock, None).unwrap();
        let mut gone = UnixStream::connect(&sock).await.unwrap();
        write_frame(&mut gone, &ControlRequest::JoinToken)
            .await
            .unwrap();
        drop(gone);
        let mut waiting = UnixStream::connect(&sock).await.unwrap();
        write_frame(&mut waiting, &ControlRequest::JoinToken)
            .await
            .unwrap();
        // One that has only shut its writing side still waits for the answer.
        let mut half = UnixStream::connect(&sock).await.unwrap();
        write_frame(&mut half, &ControlRequest::JoinToken)
            .await
            .unwrap();
        half.shutdown().await.unwrap();
        // Only now does the daemon take connections (it was busy, or out of descriptors).
        let handler = Arc::new(Counting::default());
        let server = tokio::spawn(serve(listener, handler.clone()));
        for client in [&mut waiting, &mut half] {
            let answer: ControlResponse = read_frame(client).await.unwrap().unwrap();
            assert_eq!(answer, ControlResponse::JoinToken("t".into()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(handler.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        server.abort();
    }

    /// A daemon that takes the connection but never answers (stopped with SIGSTOP: the kernel
    /// still queues connections) is reported, not waited on for ever.
    #[tokio::test]
    async fn a_daemon_that_never_answers_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("control.sock");
        let _listener = bind(&sock, None).unwrap();
        let mut c = ControlClient::connect(dir.path())
            .await
            .unwrap()
            .with_answer_timeout(std::time::Duration::from_millis(200));
        let err = c.request(&ControlRequest::Status).await.unwrap_err();
        assert!(matches!(err, ControlError::NoAnswer { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("control.sock") && text.contains("did not answer"),
            "{text}"
        );
    }
}
