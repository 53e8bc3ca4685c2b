//! Node settings and where they come from.
//!
//! Every `join` setting can come from four places; the first that sets it wins:
//! command-line flags, then environment variables (`DIRECTORD_MESH_*`), then the YAML config
//! file (`--config FILE`), then the defaults. Each place is read into a [`JoinOptions`] layer;
//! [`JoinOptions::over`] stacks two layers and [`JoinOptions::resolve`] turns the stack into a
//! [`NodeConfig`]. Every error names the setting, the place it came from and what is wrong.
//! An empty variable (`DIRECTORD_MESH_OPEN=` in a systemd `EnvironmentFile`) sets nothing.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

/// The largest config file read (one of every setting takes a few KiB).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

use mesh::{JoinToken, Multiaddr, PeerId, TransportKind};
use serde::Deserialize;

/// Environment variable of the global `--state-dir`.
pub const ENV_STATE_DIR: &str = "DIRECTORD_MESH_STATE_DIR";
/// Environment variable of `join --config`.
pub const ENV_CONFIG: &str = "DIRECTORD_MESH_CONFIG";
/// The state directory of a daemon run as root, when none is given.
pub const ROOT_STATE_DIR: &str = "/var/lib/directord-mesh";
/// Port a daemon listens on when `--listen` is not given.
pub const DEFAULT_PORT: u16 = 7411;
/// Default heartbeat interval; a member expires after three of them.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a file stays in the blob store after its last use, by default.
pub const DEFAULT_BLOB_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Job records submitted longer ago than this are forgotten, once every target reported
/// (`--record-retention`).
pub const DEFAULT_RECORD_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a stop lets the jobs running finish on their own by default (`--stop-grace`).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// The longest `--stop-grace` takes.
pub const MAX_STOP_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The fewest peers `--max-peers` takes: the most peers gossip keeps in a topic's mesh
/// ([`mesh::tuning::MESH_N_HIGH`]), which are never closed, and no fewer than the members a
/// node dials to stay in the mesh ([`mesh::tuning::DEFAULT_TARGET_PEERS`]). Below it the
/// budget could not be kept, and would only close what is dialled again.
pub const MAX_PEERS_FLOOR: usize = {
    let (gossip, dialled) = (
        mesh::tuning::MESH_N_HIGH,
        mesh::tuning::DEFAULT_TARGET_PEERS,
    );
    if gossip > dialled { gossip } else { dialled }
};

/// The most peers `--max-peers` takes: the most members a mesh holds
/// ([`mesh::membership::MAX_MEMBERS`]). A larger budget could never be reached: it is a typo.
pub const MAX_PEERS_CEILING: usize = mesh::membership::MAX_MEMBERS;

/// A setting that could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{origin}: {setting}: {reason}")]
    Invalid {
        origin: Source,
        setting: String,
        reason: String,
    },
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// The config file `DIRECTORD_MESH_CONFIG` names, which the operator may not know is set.
    #[error("config file {path} (named by {ENV_CONFIG}): {reason}")]
    FileFromEnv { path: PathBuf, reason: String },
    #[error("{0}")]
    Conflict(String),
}

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(&'static str),
    File(PathBuf),
}

impl Source {
    /// `setting` as it was written in this place: `--open`, `DIRECTORD_MESH_OPEN`,
    /// `open` in config file /etc/directord-mesh.yaml.
    fn as_written(&self, setting: &str) -> String {
        match self {
            Source::Flag => format!("--{setting}"),
            Source::Env(var) => (*var).to_string(),
            Source::File(path) => format!("`{setting}` in config file {}", path.display()),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => write!(f, "command line"),
            Source::Env(var) => write!(f, "environment variable {var}"),
            Source::File(path) => write!(f, "config file {}", path.display()),
        }
    }
}

/// One layer of `join` settings; `None` / empty means "this layer does not say".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JoinOptions {
    pub name: Option<String>,
    pub listen: Vec<Multiaddr>,
    pub peers: Vec<Multiaddr>,
    pub token: Option<JoinToken>,
    pub open: Option<bool>,
    pub heartbeat_interval: Option<Duration>,
    pub socket_group: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Zero: keep blobs forever.
    pub blob_retention: Option<Duration>,
    /// Zero: keep job records until purged.
    pub record_retention: Option<Duration>,
    /// Peers whose runs this node takes (besides its own); empty: any member's.
    pub allow_submitters: Vec<PeerId>,
    /// Connected peers above which idle connections are closed (`--max-peers`).
    pub max_peers: Option<usize>,
    /// How long a stop lets running jobs finish on their own (`--stop-grace`; zero: not at all).
    pub stop_grace: Option<Duration>,
    /// Where `open` and `token` were set, to name both should they contradict each other
    /// (`None`: not set in this layer, or set by hand, as the command line's flags are).
    pub open_from: Option<Source>,
    pub token_from: Option<Source>,
}

/// The environment variables `join` reads, in the order `--help` lists them.
pub const JOIN_ENV: [&str; 13] = [
    "DIRECTORD_MESH_NAME",
    "DIRECTORD_MESH_LISTEN",
    "DIRECTORD_MESH_PEER",
    "DIRECTORD_MESH_TOKEN",
    "DIRECTORD_MESH_OPEN",
    "DIRECTORD_MESH_HEARTBEAT_INTERVAL",
    "DIRECTORD_MESH_SOCKET_GROUP",
    "DIRECTORD_MESH_LABELS",
    "DIRECTORD_MESH_BLOB_RETENTION",
    "DIRECTORD_MESH_RECORD_RETENTION",
    "DIRECTORD_MESH_ALLOW_SUBMITTERS",
    "DIRECTORD_MESH_MAX_PEERS",
    "DIRECTORD_MESH_STOP_GRACE",
];

/// The config file's shape: the flags' long names, with `-` or `_`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of settings (name: ..., listen: ..., peer: ...)"
)]
struct FileOptions {
    name: Option<String>,
    listen: Option<serde_yaml_ng::Value>,
    #[serde(alias = "peers")]
    peer: Option<serde_yaml_ng::Value>,
    token: Option<String>,
    open: Option<serde_yaml_ng::Value>,
    #[serde(alias = "heartbeat-interval")]
    heartbeat_interval: Option<serde_yaml_ng::Value>,
    #[serde(alias = "socket-group")]
    socket_group: Option<serde_yaml_ng::Value>,
    #[serde(default, alias = "label")]
    labels: BTreeMap<String, String>,
    #[serde(alias = "blob-retention")]
    blob_retention: Option<serde_yaml_ng::Value>,
    #[serde(alias = "record-retention")]
    record_retention: Option<serde_yaml_ng::Value>,
    #[serde(
        alias = "allow-submitter",
        alias = "allow-submitters",
        alias = "allow_submitters"
    )]
    allow_submitter: Option<serde_yaml_ng::Value>,
    #[serde(alias = "max-peers")]
    max_peers: Option<serde_yaml_ng::Value>,
    #[serde(alias = "stop-grace")]
    stop_grace: Option<serde_yaml_ng::Value>,
}

/// What a YAML value is, in words, for an error that names what a setting got instead.
fn kind_of(v: &serde_yaml_ng::Value) -> String {
    use serde_yaml_ng::Value;
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("'{s}'"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// A repeatable setting, written as one value (`listen: 0.0.0.0:7411`) or as a list.
fn one_or_many(
    value: Option<serde_yaml_ng::Value>,
    setting: &str,
    source: &Source,
) -> Result<Vec<String>, ConfigError> {
    use serde_yaml_ng::Value;
    let text = |v: Value| match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(ConfigError::Invalid {
            origin: source.clone(),
            setting: setting.into(),
            reason: format!(
                "expected a value or a list of them, found {}",
                kind_of(&other)
            ),
        }),
    };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(items)) => items.into_iter().map(text).collect(),
        Some(one) => Ok(vec![text(one)?]),
    }
}

impl JoinOptions {
    /// Reads the `DIRECTORD_MESH_*` variables through `get` (the process environment in the
    /// daemon; a map in tests). List variables are comma-separated. A variable that is empty
    /// (or blank) sets nothing, as if it were not there.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &str| get(var).filter(|v| !v.trim().is_empty());
        let mut o = JoinOptions::default();
        let [
            name,
            listen,
            peer,
            token,
            open,
            heartbeat,
            group,
            labels,
            retention,
            records,
            submitters,
            max_peers,
            stop_grace,
        ] = JOIN_ENV;
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        o.name = get(name);
        if let Some(v) = get(listen) {
            o.listen = parse_addrs(&list(v), "listen", &Source::Env(listen))?;
        }
        if let Some(v) = get(peer) {
            o.peers = parse_addrs(&list(v), "peer", &Source::Env(peer))?;
        }
        if let Some(v) = get(token) {
            o.token = Some(parse_token(&v, &Source::Env(token))?);
            o.token_from = Some(Source::Env(token));
        }
        if let Some(v) = get(open) {
            o.open = Some(parse_bool(&v).ok_or_else(|| ConfigError::Invalid {
                origin: Source::Env(open),
                setting: "open".into(),
                reason: format!("'{v}' is not a boolean (use true/false, yes/no, 1/0)"),
            })?);
            o.open_from = Some(Source::Env(open));
        }
        if let Some(v) = get(heartbeat) {
            o.heartbeat_interval = Some(parse_interval(&v, &Source::Env(heartbeat))?);
        }
        o.socket_group = get(group);
        if let Some(v) = get(labels) {
            o.labels = parse_labels(&list(v), &Source::Env(labels))?;
        }
        if let Some(v) = get(retention) {
            o.blob_retention = Some(parse_retention_in(&v, &Source::Env(retention))?);
        }
        if let Some(v) = get(records) {
            o.record_retention = Some(parse_record_retention_in(&v, &Source::Env(records))?);
        }
        if let Some(v) = get(submitters) {
            o.allow_submitters = parse_peer_ids(&list(v), &Source::Env(submitters))?;
        }
        if let Some(v) = get(max_peers) {
            o.max_peers = Some(parse_max_peers_in(&v, &Source::Env(max_peers))?);
        }
        if let Some(v) = get(stop_grace) {
            o.stop_grace = Some(parse_stop_grace_in(&v, &Source::Env(stop_grace))?);
        }
        Ok(o)
    }

    /// Reads a YAML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let file_err = |reason: String| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = jobs::yaml_text::read_capped(path, MAX_CONFIG_BYTES).map_err(file_err)?;
        Self::from_yaml(&text, path)
    }

    /// Parses config file text (`path` is only used in messages).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let source = Source::File(path.to_path_buf());
        let file_err = |reason: String| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        // A byte-order mark, as some editors write one: no content.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let file: FileOptions = if text.trim().is_empty() {
            FileOptions::default()
        } else if let Some(why) = jobs::yaml_text::refusal(text) {
            return Err(file_err(why));
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| file_err(e.to_string()))?
        };
        let scalar = |v: serde_yaml_ng::Value, setting: &str| -> Result<String, ConfigError> {
            match v {
                serde_yaml_ng::Value::String(s) => Ok(s),
                serde_yaml_ng::Value::Number(n) => Ok(n.to_string()),
                other => Err(ConfigError::Invalid {
                    origin: source.clone(),
                    setting: setting.into(),
                    reason: format!("expected a string or number, found {}", kind_of(&other)),
                }),
            }
        };
        let open_from = file.open.is_some().then(|| source.clone());
        let token_from = file.token.is_some().then(|| source.clone());
        Ok(JoinOptions {
            name: file.name,
            listen: parse_addrs(
                &one_or_many(file.listen, "listen", &source)?,
                "listen",
                &source,
            )?,
            peers: parse_addrs(&one_or_many(file.peer, "peer", &source)?, "peer", &source)?,
            token: file.token.map(|t| parse_token(&t, &source)).transpose()?,
            open: file
                .open
                .map(|v| match v {
                    serde_yaml_ng::Value::Bool(b) => Ok(b),
                    serde_yaml_ng::Value::String(t) => {
                        parse_bool(&t).ok_or_else(|| ConfigError::Invalid {
                            origin: source.clone(),
                            setting: "open".into(),
                            reason: format!("'{t}' is not a boolean (use true/false, yes/no, 1/0)"),
                        })
                    }
                    serde_yaml_ng::Value::Number(n) => {
                        parse_bool(&n.to_string()).ok_or_else(|| ConfigError::Invalid {
                            origin: source.clone(),
                            setting: "open".into(),
                            reason: format!("{n} is not a boolean (use true/false, yes/no, 1/0)"),
                        })
                    }
                    other => Err(ConfigError::Invalid {
                        origin: source.clone(),
                        setting: "open".into(),
                        reason: format!("expected a boolean, found {}", kind_of(&other)),
                    }),
                })
                .transpose()?,
            heartbeat_interval: file
                .heartbeat_interval
                .map(|v| parse_interval(&scalar(v, "heartbeat-interval")?, &source))
                .transpose()?,
            socket_group: file
                .socket_group
                .map(|v| scalar(v, "socket-group"))
                .transpose()?,
            labels: file.labels,
            blob_retention: file
                .blob_retention
                .map(|v| parse_retention_in(&scalar(v, "blob-retention")?, &source))
                .transpose()?,
            record_retention: file
                .record_retention
                .map(|v| parse_record_retention_in(&scalar(v, "record-retention")?, &source))
                .transpose()?,
            allow_submitters: parse_peer_ids(
                &one_or_many(file.allow_submitter, "allow-submitter", &source)?,
                &source,
            )?,
            max_peers: file
                .max_peers
                .map(|v| parse_max_peers_in(&scalar(v, "max-peers")?, &source))
                .transpose()?,
            stop_grace: file
                .stop_grace
                .map(|v| parse_stop_grace_in(&scalar(v, "stop-grace")?, &source))
                .transpose()?,
            open_from,
            token_from,
        })
    }

    /// This layer on top of `lower`: every setting this layer makes wins.
    pub fn over(self, lower: JoinOptions) -> JoinOptions {
        let pick_list = |a: Vec<Multiaddr>, b: Vec<Multiaddr>| if a.is_empty() { b } else { a };
        let (token, token_from) = match self.token {
            Some(token) => (Some(token), self.token_from),
            None => (lower.token, lower.token_from),
        };
        let (open, open_from) = match self.open {
            Some(open) => (Some(open), self.open_from),
            None => (lower.open, lower.open_from),
        };
        JoinOptions {
            name: self.name.or(lower.name),
            listen: pick_list(self.listen, lower.listen),
            peers: pick_list(self.peers, lower.peers),
            token,
            token_from,
            open,
            open_from,
            heartbeat_interval: self.heartbeat_interval.or(lower.heartbeat_interval),
            socket_group: self.socket_group.or(lower.socket_group),
            labels: if self.labels.is_empty() {
                lower.labels
            } else {
                self.labels
            },
            blob_retention: self.blob_retention.or(lower.blob_retention),
            record_retention: self.record_retention.or(lower.record_retention),
            allow_submitters: if self.allow_submitters.is_empty() {
                lower.allow_submitters
            } else {
                self.allow_submitters
            },
            max_peers: self.max_peers.or(lower.max_peers),
            stop_grace: self.stop_grace.or(lower.stop_grace),
        }
    }

    /// Fills in defaults and checks the combination.
    pub fn resolve(
        self,
        state_dir: PathBuf,
        default_name: &str,
    ) -> Result<NodeConfig, ConfigError> {
        let open = self.open.unwrap_or(false);
        if open && self.token.as_ref().is_some_and(|t| t.mesh_key.is_some()) {
            return Err(self.open_against_a_key());
        }
        let heartbeat_interval = self.heartbeat_interval.unwrap_or(DEFAULT_HEARTBEAT);
        let blob_retention = self.blob_retention.unwrap_or(DEFAULT_BLOB_RETENTION);
        let record_retention = self.record_retention.unwrap_or(DEFAULT_RECORD_RETENTION);
        let name = self.name.unwrap_or_else(|| default_name.to_string());
        validate_name(&name)?;
        validate_labels(&self.labels)?;
        let mut listen: Vec<Multiaddr> = Vec::with_capacity(self.listen.len());
        for addr in self.listen {
            // One address given twice (`HOST:PORT` and its multiaddr, say) is listened on once.
            if !listen.contains(&addr) {
                listen.push(addr);
            }
        }
        if listen.is_empty() {
            listen.push(default_listen());
        }
        let mut peers = self.peers;
        if let Some(token) = &self.token {
            for addr in &token.peers {
                if !peers.contains(addr) {
                    peers.push(addr.clone());
                }
            }
        }
        let has_peers = !peers.is_empty();
        Ok(NodeConfig {
            control_socket: Some(crate::control::socket_path(&state_dir)),
            state_dir,
            name,
            listen,
            bootstrap: peers,
            mesh_key_choice: match (&self.token, open) {
                (Some(t), _) => match t.mesh_key {
                    Some(k) => MeshKeyChoice::Key(k),
                    None => MeshKeyChoice::Open,
                },
                (None, true) => MeshKeyChoice::Open,
                (None, false) if has_peers => MeshKeyChoice::FromState,
                (None, false) => MeshKeyChoice::FromStateOrNew,
            },
            heartbeat_interval,
            socket_group: self.socket_group,
            labels: self.labels,
            blob_retention: (!blob_retention.is_zero()).then_some(blob_retention),
            record_retention: (!record_retention.is_zero()).then_some(record_retention),
            transport: TransportKind::Tcp,
            jobs_thread: true,
            allow_submitters: self.allow_submitters,
            connection_budget: mesh::network::ConnectionBudget {
                max_peers: self
                    .max_peers
                    .unwrap_or(mesh::network::DEFAULT_CONNECTION_BUDGET),
                ..Default::default()
            },
            stop_grace: self.stop_grace.unwrap_or(DEFAULT_STOP_GRACE),
        })
    }

    /// `open` and a token that carries a mesh key, each named where it was set.
    fn open_against_a_key(&self) -> ConfigError {
        let by_hand = Source::Flag;
        let open = self.open_from.as_ref().unwrap_or(&by_hand);
        let token = self.token_from.as_ref().unwrap_or(&by_hand);
        ConfigError::Conflict(format!(
            "{} asks for a mesh without a key, but the join token given by {} carries one; \
             drop one of them",
            open.as_written("open"),
            token.as_written("token")
        ))
    }
}

/// The config-file layer: the file `--config` names (`flag`), else the one
/// `DIRECTORD_MESH_CONFIG` names (`from_env`; empty, it names none), read. `None` when neither
/// names one. An error about a file the variable named says so: the operator may not know
/// the variable is set.
pub fn config_file(
    flag: Option<PathBuf>,
    from_env: Option<std::ffi::OsString>,
) -> Result<Option<(PathBuf, JoinOptions)>, ConfigError> {
    if let Some(path) = flag {
        return JoinOptions::from_file(&path).map(|file| Some((path, file)));
    }
    let Some(path) = from_env.filter(|v| !v.is_empty()).map(PathBuf::from) else {
        return Ok(None);
    };
    match JoinOptions::from_file(&path) {
        Ok(file) => Ok(Some((path, file))),
        Err(ConfigError::File { path, reason }) => Err(ConfigError::FileFromEnv { path, reason }),
        Err(e) => Err(e),
    }
}

/// The default listen address: TCP on every interface, fixed port.
pub fn default_listen() -> Multiaddr {
    format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}")
        .parse()
        .expect("constant multiaddr")
}

/// Name of the control socket inside the state directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// Which mesh key a node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshKeyChoice {
    /// The key from a join token or a flag; must match the state directory's key if it has one.
    Key(mesh::MeshKey),
    /// No key (an open mesh); explicitly asked for.
    Open,
    /// The state directory's key; a new one on first run.
    FromStateOrNew,
    /// The state directory's key (or its open mesh), which must be there: `--peer` without a
    /// token joins a mesh this node already belongs to; a new key could never talk to it.
    FromState,
}

/// Everything a node needs to run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub state_dir: PathBuf,
    pub name: String,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub mesh_key_choice: MeshKeyChoice,
    pub heartbeat_interval: Duration,
    /// `None`: no control socket (nodes built as a library in tests and simulations).
    pub control_socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Blobs unused for this long are removed; `None` keeps them forever.
    pub blob_retention: Option<Duration>,
    /// Job records finished longer ago than this are forgotten; `None` keeps them until purged.
    pub record_retention: Option<Duration>,
    pub transport: TransportKind,
    /// Run jobs on a thread of their own, so a node that takes in many results (the submitter
    /// of a large run) starts its own jobs as promptly as the others. Daemons do; nodes built
    /// in-process, often by the hundred, share their caller's runtime.
    pub jobs_thread: bool,
    /// Peers whose runs this node takes (besides its own); empty: any member's. Runs from
    /// others are answered with every job failed as refused.
    pub allow_submitters: Vec<PeerId>,
    /// How many peers the node stays connected to before it closes idle connections
    /// (`--max-peers` sets how many).
    pub connection_budget: mesh::network::ConnectionBudget,
    /// How long a stop lets the jobs running finish on their own before it asks them to end
    /// (`--stop-grace`; zero asks at once).
    pub stop_grace: Duration,
}

impl NodeConfig {
    /// A node on libp2p's memory transport, for many nodes in one process (tests, simulations):
    /// no control socket, a fresh in-process address, no bootstrap peers yet.
    pub fn in_memory(state_dir: PathBuf, name: &str) -> Self {
        NodeConfig {
            state_dir,
            name: name.to_string(),
            listen: vec!["/memory/0".parse().expect("constant multiaddr")],
            bootstrap: vec![],
            mesh_key_choice: MeshKeyChoice::FromStateOrNew,
            heartbeat_interval: DEFAULT_HEARTBEAT,
            control_socket: None,
            socket_group: None,
            labels: BTreeMap::new(),
            blob_retention: Some(DEFAULT_BLOB_RETENTION),
            record_retention: Some(DEFAULT_RECORD_RETENTION),
            transport: TransportKind::Memory,
            jobs_thread: false,
            allow_submitters: Vec::new(),
            connection_budget: Default::default(),
            stop_grace: DEFAULT_STOP_GRACE,
        }
    }
}

/// The state directory when none is given: `/var/lib/directord-mesh` for root, else the XDG state
/// directory (`$XDG_STATE_HOME/directord-mesh`, default `~/.local/state/directord-mesh`).
/// Without `HOME`, the home the passwd database gives this user (`passwd_home`); without
/// either, there is none: a shared directory such as /tmp would let anyone plant the control
/// socket the CLI talks to.
pub fn default_state_dir(
    get: impl Fn(&str) -> Option<String>,
    is_root: bool,
    passwd_home: impl FnOnce() -> Option<PathBuf>,
) -> Result<PathBuf, String> {
    if is_root {
        return Ok(PathBuf::from(ROOT_STATE_DIR));
    }
    let absolute = |d: &String| d.starts_with('/');
    if let Some(dir) = get("XDG_STATE_HOME").filter(absolute) {
        return Ok(PathBuf::from(dir).join("directord-mesh"));
    }
    let home = get("HOME")
        .filter(absolute)
        .map(PathBuf::from)
        .or_else(|| passwd_home().filter(|h| h.is_absolute()));
    match home {
        Some(home) => Ok(home.join(".local/state/directord-mesh")),
        None => Err(format!(
            "no state directory: HOME is not set (to an absolute path), and the passwd \
             database gives this user no home; pass --state-dir DIR (or set {ENV_STATE_DIR})"
        )),
    }
}

/// This user's home directory in the passwd database, if it has one.
pub fn passwd_home() -> Option<PathBuf> {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid()).ok()??;
    Some(user.dir).filter(|d| !d.as_os_str().is_empty())
}

/// Parses a peer or listen address: a multiaddr, or `HOST:PORT` / `[V6]:PORT` as a shorthand
/// for TCP.
pub fn parse_addr(text: &str) -> Result<Multiaddr, String> {
    let text = text.trim();
    if text.starts_with('/') {
        return text
            .parse::<Multiaddr>()
            .map_err(|e| format!("'{text}' is not a valid multiaddr ({e})"));
    }
    match text.parse::<std::net::SocketAddr>() {
        Ok(std::net::SocketAddr::V4(a)) => Ok(format!("/ip4/{}/tcp/{}", a.ip(), a.port())
            .parse()
            .map_err(|e| format!("'{text}': {e}"))?),
        Ok(std::net::SocketAddr::V6(a)) => Ok(format!("/ip6/{}/tcp/{}", a.ip(), a.port())
            .parse()
            .map_err(|e| format!("'{text}': {e}"))?),
        Err(_) => match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => Err(format!(
                "'{text}': an IPv6 address with a port is written in brackets, [ADDRESS]:PORT"
            )),
            Some((_, port)) if port.parse::<u64>().is_ok() && port.parse::<u16>().is_err() => {
                Err(format!("'{text}': port {port} is out of range (1-65535)"))
            }
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                format!("/dns/{host}/tcp/{port}")
                    .parse()
                    .map_err(|e| format!("'{text}': {e}"))
            }
            _ => Err(format!(
                "'{text}' is neither a multiaddr (/ip4/10.0.0.1/tcp/{DEFAULT_PORT}) nor HOST:PORT"
            )),
        },
    }
}

/// An address for `setting` (`listen` or `peer`): parsed as [`parse_addr`] does, then checked
/// as [`usable_addr`] does.
pub fn parse_addr_for(text: &str, setting: &str) -> Result<Multiaddr, String> {
    let addr = parse_addr(text)?;
    // Said of the address as written (`localhost:7411`, not the multiaddr made of it).
    usable_addr(&addr, setting).map_err(|e| format!("'{text}': {e}"))?;
    Ok(addr)
}

/// Checks what `setting` can use: TCP only, and for `listen` an IP address (a name is not
/// listened on).
fn usable_addr(addr: &Multiaddr, setting: &str) -> Result<(), String> {
    use mesh::multiaddr::Protocol;
    if !addr.iter().any(|p| matches!(p, Protocol::Tcp(_))) {
        return Err("only TCP addresses are used (/ip4/ADDRESS/tcp/PORT or HOST:PORT)".into());
    }
    let named = addr
        .iter()
        .any(|p| matches!(p, Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)));
    if setting == "listen" && named {
        return Err(
            "listen on an IP address (0.0.0.0:PORT for every interface, 127.0.0.1:PORT, \
                    [::]:PORT), not a name"
                .into(),
        );
    }
    Ok(())
}

fn parse_addrs(
    items: &[String],
    setting: &str,
    source: &Source,
) -> Result<Vec<Multiaddr>, ConfigError> {
    items
        .iter()
        .map(|s| {
            parse_addr_for(s, setting).map_err(|reason| ConfigError::Invalid {
                origin: source.clone(),
                setting: setting.into(),
                reason,
            })
        })
        .collect()
}

fn parse_token(text: &str, source: &Source) -> Result<JoinToken, ConfigError> {
    JoinToken::decode(text).map_err(|e| ConfigError::Invalid {
        origin: source.clone(),
        setting: "token".into(),
        reason: e.to_string(),
    })
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn parse_interval(text: &str, source: &Source) -> Result<Duration, ConfigError> {
    parse_heartbeat(text).map_err(|reason| ConfigError::Invalid {
        origin: source.clone(),
        setting: "heartbeat-interval".into(),
        reason,
    })
}

/// Parses a heartbeat interval: a duration from 100 ms to 1 h.
pub fn parse_heartbeat(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!("{text} is outside 100ms..1h"));
    }
    Ok(d)
}

/// Parses `--max-peers`: a whole number of peers from [`MAX_PEERS_FLOOR`] to
/// [`MAX_PEERS_CEILING`].
pub fn parse_max_peers(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let range = format!("from {MAX_PEERS_FLOOR} to {MAX_PEERS_CEILING}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{text}' is not a number of peers (a whole number {range}, such as {})",
            mesh::network::DEFAULT_CONNECTION_BUDGET
        ));
    }
    let negative = text.starts_with('-');
    // Digits past what a usize holds are far above the ceiling anyway.
    let n = digits.parse::<usize>().unwrap_or(usize::MAX);
    if negative || n < MAX_PEERS_FLOOR {
        return Err(format!(
            "{text} is too few: give a number {range} (gossip alone keeps up to {} peers connected, \
             and those are never closed)",
            mesh::tuning::MESH_N_HIGH
        ));
    }
    if n > MAX_PEERS_CEILING {
        return Err(format!(
            "{text} is too many: give a number {range} (a mesh holds at most {MAX_PEERS_CEILING} members)"
        ));
    }
    Ok(n)
}

fn parse_max_peers_in(text: &str, source: &Source) -> Result<usize, ConfigError> {
    parse_max_peers(text).map_err(|reason| ConfigError::Invalid {
        origin: source.clone(),
        setting: "max-peers".into(),
        reason,
    })
}

/// Parses `--stop-grace`: a duration from 0 (running jobs are asked to end at once) to
/// [`MAX_STOP_GRACE`].
pub fn parse_stop_grace(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d > MAX_STOP_GRACE {
        return Err(format!(
            "{} is longer than {} h, the longest a stop waits for running jobs (a second \
             signal stops them at once anyway)",
            text.trim(),
            MAX_STOP_GRACE.as_secs() / 3600
        ));
    }
    Ok(d)
}

fn parse_stop_grace_in(text: &str, source: &Source) -> Result<Duration, ConfigError> {
    parse_stop_grace(text).map_err(|reason| ConfigError::Invalid {
        origin: source.clone(),
        setting: "stop-grace".into(),
        reason,
    })
}

/// Parses a blob retention: a duration of at least one second, or 0 for "keep forever".
pub fn parse_retention(text: &str) -> Result<Duration, String> {
    retention(text, "keep files forever")
}

fn parse_retention_in(text: &str, source: &Source) -> Result<Duration, ConfigError> {
    retention_in(parse_retention(text), "blob-retention", source)
}

/// Parses a record retention: a duration of at least one second, or 0 for "until purged".
pub fn parse_record_retention(text: &str) -> Result<Duration, String> {
    retention(text, "keep records until purged")
}

fn parse_record_retention_in(text: &str, source: &Source) -> Result<Duration, ConfigError> {
    retention_in(parse_record_retention(text), "record-retention", source)
}

/// A retention: at least a second, or 0, which means what `zero_means`.
fn retention(text: &str, zero_means: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if !d.is_zero() && d < Duration::from_secs(1) {
        return Err(format!(
            "{} is under a second; give at least 1s, or 0 to {zero_means}",
            text.trim()
        ));
    }
    Ok(d)
}

fn retention_in(
    parsed: Result<Duration, String>,
    setting: &str,
    source: &Source,
) -> Result<Duration, ConfigError> {
    parsed.map_err(|reason| ConfigError::Invalid {
        origin: source.clone(),
        setting: setting.into(),
        reason,
    })
}

/// The command line with `--stop-grace -5s` read as `--stop-grace=-5s`, for the `options`
/// whose value may be written negative (clap takes `-5s` for options of its own and refuses
/// them as unknown, where the option's own check says what is wrong); an option after one of
/// them (`--stop-grace --name n1`) stays an option.
pub fn negative_values_joined(
    args: impl Iterator<Item = std::ffi::OsString>,
    options: &[&str],
) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let name = arg.to_str().filter(|a| options.contains(a));
        let negative = args.peek().and_then(|v| v.to_str()).filter(|v| {
            v.strip_prefix('-')
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit() || c == '.'))
        });
        if let (Some(name), Some(value)) = (name, negative) {
            out.push(format!("{name}={value}").into());
            args.next();
            continue;
        }
        out.push(arg);
    }
    out
}

/// Parses `5`, `5s`, `500ms`, `2m`, `1h` or `7d` (a bare number is seconds; fractions allowed).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let not_one = || format!("'{text}' is not a duration (examples: 5, 5s, 500ms, 2m, 1h30m)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(not_one());
    }
    // Parts such as `1h30m`; a bare number is seconds.
    let mut secs = 0.0;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(split);
        let value: f64 = num.parse().map_err(|_| not_one())?;
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        secs += match unit.trim() {
            "" | "s" => value,
            "ms" => value / 1000.0,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            other => {
                return Err(format!(
                    "'{text}': unknown unit '{other}' (use ms, s, m, h or d)"
                ));
            }
        };
        rest = next.trim_start();
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{text}' is not a duration"))
}

fn parse_labels(
    items: &[String],
    source: &Source,
) -> Result<BTreeMap<String, String>, ConfigError> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(ConfigError::Invalid {
                origin: source.clone(),
                setting: "labels".into(),
                reason: format!("'{item}' is not KEY=VALUE"),
            }),
        })
        .collect()
}

/// Other nodes take no presence with more or longer labels, or control characters in them.
fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let (count, max) = (mesh::wire::MAX_LABELS, mesh::wire::MAX_LABEL_BYTES);
    if labels.len() > count {
        return Err(ConfigError::Conflict(format!(
            "{} labels: a node sends at most {count}",
            labels.len()
        )));
    }
    for (k, v) in labels {
        if k.len() > max || v.len() > max {
            return Err(ConfigError::Conflict(format!(
                "label '{k}': keys and values are at most {max} bytes"
            )));
        }
        if k.chars().chain(v.chars()).any(char::is_control) {
            return Err(ConfigError::Conflict(format!(
                "label {k:?}: no control characters in labels"
            )));
        }
    }
    Ok(())
}

/// Parses peer ids (as `status` shows them) of `--allow-submitter`.
fn parse_peer_ids(items: &[String], source: &Source) -> Result<Vec<PeerId>, ConfigError> {
    items
        .iter()
        .map(|item| {
            item.trim()
                .parse::<PeerId>()
                .map_err(|e| ConfigError::Invalid {
                    origin: source.clone(),
                    setting: "allow-submitter".into(),
                    reason: format!(
                        "'{item}' is not a peer id ({e}; `manage --list-nodes --json` shows each \
                         node's whole)"
                    ),
                })
        })
        .collect()
}

/// Parses the peer ids of `--allow-submitter` flags.
pub fn parse_submitter_flags(items: &[String]) -> Result<Vec<PeerId>, ConfigError> {
    parse_peer_ids(items, &Source::Flag)
}

/// Parses `KEY=VALUE` labels given as flags.
pub fn parse_label_flags(items: &[String]) -> Result<BTreeMap<String, String>, ConfigError> {
    parse_labels(items, &Source::Flag)
}

/// Node names are what operators type as `--target`: keep them printable and short.
pub fn validate_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Conflict(format!(
            "node name '{name}' must be 1-253 characters of ASCII letters, digits, '-', '_' or '.'"
        )))
    }
}

#[cfg(test)]
mod tests;
