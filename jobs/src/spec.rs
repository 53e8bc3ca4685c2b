//! What a job is: a verb with its component fields, the options every verb shares, and the
//! job's fingerprint.
//!
//! [`JobSpec::parse`] turns `VERB` + inline arguments + `vars` into a spec, with an error that
//! says what is wrong. The fingerprint is blake3 of the canonical CBOR of
//! `{component fields (with the verb), timeout, run_once}`: targets, parents and the cache flags
//! are not part of it, so the same command shares cache state across orchestrations, as in
//! Directord.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inline::{self, COMMON_OPTIONS, OptionSpec, Parsed};

/// Default job timeout in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// Linux's limit on one argument of a program (MAX_ARG_STRLEN), its closing NUL included.
const MAX_COMMAND_BYTES: usize = 128 * 1024;

/// The longest timeout or wait a job may ask for: a year (366 days), in seconds.
pub const MAX_SECONDS: u64 = 366 * 24 * 3600;

/// `secs` as a duration, held within 0..=[`MAX_SECONDS`] (a job that came from a peer was not
/// parsed here, so its values are taken as they are but never allowed to overflow a clock).
pub fn bounded_secs(secs: u64) -> std::time::Duration {
    std::time::Duration::from_secs(secs.min(MAX_SECONDS))
}

/// As [`bounded_secs`] for fractional seconds; not a number counts as 0.
pub fn bounded_secs_f64(secs: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(secs.clamp(0.0, MAX_SECONDS as f64)).unwrap_or_default()
}

/// A whole number of seconds from 1 to [`MAX_SECONDS`], for `option` (`--timeout` ...): `90`,
/// or with a unit, `90s`, `5m`, `2h`, `1d`.
fn whole_seconds(text: &str, option: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let scale = match unit {
        "" | "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        "d" => Some(86_400),
        _ => None,
    };
    scale
        .zip(number.parse::<u64>().ok())
        .and_then(|(scale, n)| n.checked_mul(scale))
        .filter(|n| (1..=MAX_SECONDS).contains(n))
        .ok_or_else(|| {
            format!(
                "{option} '{text}' must be a whole number of seconds, or of minutes, hours or \
                 days (90, 90s, 5m, 2h, 1d), from 1 s to a year"
            )
        })
}

/// The verbs this node can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verb {
    Run,
    Echo,
    Arg,
    Env,
    Workdir,
    Cachefile,
    Cacheevict,
    Queuesentinel,
    Wait,
    Query,
    QueryWait,
    JobWait,
    Add,
    Copy,
}

impl Verb {
    pub const ALL: [Verb; 14] = [
        Verb::Run,
        Verb::Echo,
        Verb::Arg,
        Verb::Env,
        Verb::Workdir,
        Verb::Cachefile,
        Verb::Cacheevict,
        Verb::Queuesentinel,
        Verb::Wait,
        Verb::Query,
        Verb::QueryWait,
        Verb::JobWait,
        Verb::Add,
        Verb::Copy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Verb::Run => "RUN",
            Verb::Echo => "ECHO",
            Verb::Arg => "ARG",
            Verb::Env => "ENV",
            Verb::Workdir => "WORKDIR",
            Verb::Cachefile => "CACHEFILE",
            Verb::Cacheevict => "CACHEEVICT",
            Verb::Queuesentinel => "QUEUESENTINEL",
            Verb::Wait => "WAIT",
            Verb::Query => "QUERY",
            Verb::QueryWait => "QUERY_WAIT",
            Verb::JobWait => "JOB_WAIT",
            Verb::Add => "ADD",
            Verb::Copy => "COPY",
        }
    }

    /// Verbs whose positionals are plain words: their options may also follow them.
    fn options_anywhere(self) -> bool {
        matches!(
            self,
            Verb::Workdir
                | Verb::Cachefile
                | Verb::Cacheevict
                | Verb::Query
                | Verb::QueryWait
                | Verb::JobWait
                | Verb::Add
                | Verb::Copy
        )
    }

    /// Looks a verb up by name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Verb> {
        Verb::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(name.trim()))
    }

    fn usage(self) -> &'static str {
        match self {
            Verb::Run => "RUN [OPTIONS] COMMAND...",
            Verb::Echo => "ECHO TEXT...",
            Verb::Arg => "ARG [--extend-args] KEY VALUE",
            Verb::Env => "ENV [--extend-args] KEY VALUE",
            Verb::Workdir => "WORKDIR [--chown USER[:GROUP]] [--chmod OCTAL] PATH",
            Verb::Cachefile => "CACHEFILE PATH",
            Verb::Cacheevict => "CACHEEVICT jobs|parents|args|envs|query|all",
            Verb::Queuesentinel => "QUEUESENTINEL [ANYTHING]",
            Verb::Wait => {
                "WAIT --seconds N | WAIT --cmd [--retry N] [--retry-wait SECONDS] COMMAND..."
            }
            Verb::Query => "QUERY [--no-wait] NAME",
            Verb::QueryWait => "QUERY_WAIT ITEM [--query-timeout SECONDS] [--identity NODE]...",
            Verb::JobWait => "JOB_WAIT FINGERPRINT --identity NODE [--identity NODE]...",
            Verb::Add => "ADD [--chown USER[:GROUP]] [--chmod OCTAL] [--blueprint] SRC DEST",
            Verb::Copy => "COPY [--chown USER[:GROUP]] [--chmod OCTAL] [--blueprint] SRC DEST",
        }
    }

    fn about(self) -> &'static str {
        match self {
            Verb::Run => {
                "Run COMMAND with /bin/sh -c on each target; it succeeds when the command exits 0. \
                 COMMAND is rendered as a template against the node's cached args, and cached ENV \
                 values are in its environment."
            }
            Verb::Echo => "Return TEXT as the job's output.",
            Verb::Arg => {
                "Cache KEY = VALUE as an arg on each target, for templates. VALUE is read as YAML: \
                 numbers, lists ([a, b]) and maps ({a: b}) keep their type."
            }
            Verb::Env => {
                "Cache KEY = VALUE as an environment variable for later RUN jobs on each target."
            }
            Verb::Workdir => {
                "Create the directory PATH (and its parents), then apply owner and mode."
            }
            Verb::Cachefile => {
                "Merge the YAML or JSON file PATH on each target into its cached args."
            }
            Verb::Cacheevict => {
                "Forget cached state: job results, parent results, args, envs, query data, or all."
            }
            Verb::Queuesentinel => {
                "Drop every job still queued on each target (each is reported failed, naming this job)."
            }
            Verb::Wait => {
                "Wait a number of seconds, or until COMMAND exits 0 (tried --retry times, \
                 --retry-wait seconds apart)."
            }
            Verb::Query => {
                "Collect the cached arg NAME from every target of this job and give each of them \
                 the whole set as the arg `query` ({query: {node: {NAME: value}}}) before the \
                 next job of this parent runs. --no-wait does not wait for the others."
            }
            Verb::QueryWait => {
                "Wait until the arg `query` holds ITEM: for every --identity given, or for any node."
            }
            Verb::JobWait => {
                "Wait until the job with FINGERPRINT (or a prefix of it) has finished - succeeded \
                 or failed - on every --identity node, bounded by this job's timeout. While such \
                 a job is queued or running there, the wait is for it, not for an earlier run's \
                 outcome."
            }
            Verb::Add | Verb::Copy => {
                "Copy the files matching SRC (a glob on the submitting machine) to DEST on each \
                 target; DEST ending in / is a directory. Each file is its own job. Files travel \
                 verified (blake3) and land atomically; a DEST that already has the content is \
                 left as it is (owner and mode are still applied). --blueprint renders the file \
                 as a template against the node's cached args."
            }
        }
    }

    fn options(self) -> &'static [OptionSpec] {
        match self {
            Verb::Run => &[
                OptionSpec {
                    name: "stdout-arg",
                    value: Some("NAME"),
                    help: "store the command's trimmed stdout as the cached arg NAME for later jobs",
                },
                OptionSpec {
                    name: "no-block",
                    value: None,
                    help: "start the command in its own session and report success at once",
                },
            ],
            Verb::Arg | Verb::Env => &[OptionSpec {
                name: "extend-args",
                value: None,
                help: "merge into the cached value (maps merge deeply, lists are extended) instead of replacing it",
            }],
            Verb::Workdir => &[
                OptionSpec {
                    name: "chown",
                    value: Some("USER[:GROUP]"),
                    help: "owner (names or numeric ids)",
                },
                OptionSpec {
                    name: "chmod",
                    value: Some("OCTAL"),
                    help: "mode, e.g. 0755",
                },
            ],
            Verb::Wait => &[
                OptionSpec {
                    name: "seconds",
                    value: Some("SECONDS"),
                    help: "wait this long",
                },
                OptionSpec {
                    name: "cmd",
                    value: None,
                    help: "wait until COMMAND (the rest of the line) exits 0",
                },
                OptionSpec {
                    name: "retry",
                    value: Some("N"),
                    help: "with --cmd: how many tries (default 30)",
                },
                OptionSpec {
                    name: "retry-wait",
                    value: Some("SECONDS"),
                    help: "with --cmd: pause between tries (default 1)",
                },
            ],
            Verb::Query => &[OptionSpec {
                name: "no-wait",
                value: None,
                help: "give this node's value and go on without waiting for the others",
            }],
            Verb::QueryWait => &[
                OptionSpec {
                    name: "query-timeout",
                    value: Some("SECONDS"),
                    help: "give up after this long (default 600)",
                },
                OptionSpec {
                    name: "identity",
                    value: Some("NODE"),
                    help: "the item must be there for this node (repeatable, or comma-separated)",
                },
            ],
            Verb::JobWait => &[OptionSpec {
                name: "identity",
                value: Some("NODE"),
                help: "a node to wait for (repeatable, or comma-separated; at least one)",
            }],
            Verb::Add | Verb::Copy => &[
                OptionSpec {
                    name: "chown",
                    value: Some("USER[:GROUP]"),
                    help: "owner (names or numeric ids)",
                },
                OptionSpec {
                    name: "chmod",
                    value: Some("OCTAL"),
                    help: "mode, e.g. 0644",
                },
                OptionSpec {
                    name: "blueprint",
                    value: None,
                    help: "render the file as a template against the node's cached args",
                },
            ],
            Verb::Echo | Verb::Cachefile | Verb::Cacheevict | Verb::Queuesentinel => &[],
        }
    }

    /// The `--exec-help` text.
    pub fn help(self) -> String {
        let mut out = format!("{}\n\n{}\n\nOptions:\n", self.usage(), self.about());
        for o in self.options().iter().chain(COMMON_OPTIONS) {
            let flag = match o.value {
                Some(v) => format!("--{} {v}", o.name),
                None => format!("--{}", o.name),
            };
            out.push_str(&format!("  {flag:<26} {}\n", o.help));
        }
        out
    }

    /// Whether a success may be skipped on the next run (see the cache).
    pub fn cacheable(self) -> bool {
        matches!(
            self,
            Verb::Run | Verb::Echo | Verb::Workdir | Verb::Add | Verb::Copy
        )
    }

    /// Whether a job of this verb waits for other nodes (their values, their jobs): it holds
    /// no lock meanwhile, not even the global one shared, so a `--force-lock` job on the node
    /// neither waits for it nor holds it up (the job it waits for may be queued behind).
    pub fn waits_for_other_nodes(self) -> bool {
        matches!(self, Verb::Query | Verb::QueryWait | Verb::JobWait)
    }

    /// The named lock a job of this verb holds while it runs, if any.
    pub fn lock(self) -> Option<&'static str> {
        match self {
            Verb::Arg | Verb::Env => Some("arg"),
            Verb::Cachefile => Some("cachefile"),
            Verb::Cacheevict => Some("cacheevict"),
            Verb::Queuesentinel => Some("queuesentinel"),
            // Not QUERY: it waits for the other nodes, and holding a lock meanwhile would
            // deadlock QUERY jobs of parallel parents waiting for each other across nodes.
            Verb::Add | Verb::Copy => Some("copy"),
            Verb::Run
            | Verb::Echo
            | Verb::Workdir
            | Verb::Wait
            | Verb::Query
            | Verb::QueryWait
            | Verb::JobWait => None,
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Owner for WORKDIR (and files): names or numeric ids, resolved on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub user: Option<String>,
    pub group: Option<String>,
}

impl Owner {
    /// Parses `USER`, `USER:GROUP` or `:GROUP`.
    pub fn parse(text: &str) -> Result<Owner, String> {
        let (user, group) = match text.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (text, None),
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let owner = Owner {
            user: some(user),
            group: group.and_then(some),
        };
        if owner.user.is_none() && owner.group.is_none() {
            return Err(format!("--chown '{text}' names neither a user nor a group"));
        }
        Ok(owner)
    }
}

/// What WAIT waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WaitFor {
    Seconds(f64),
    Command {
        command: String,
        retry: u32,
        retry_wait: f64,
    },
}

/// Which part of the cache CACHEEVICT forgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheTag {
    Jobs,
    Parents,
    Args,
    Envs,
    Query,
    All,
}

impl CacheTag {
    fn parse(text: &str) -> Result<CacheTag, String> {
        Ok(match text {
            "jobs" => CacheTag::Jobs,
            "parents" => CacheTag::Parents,
            "args" => CacheTag::Args,
            "envs" => CacheTag::Envs,
            "query" => CacheTag::Query,
            "all" => CacheTag::All,
            other => {
                return Err(format!(
                    "unknown cache tag '{other}' (use jobs, parents, args, envs, query or all)"
                ));
            }
        })
    }
}

/// The verb and its fields. The serialised form (tagged by `verb`) is part of the fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Component {
    Run {
        command: String,
        stdout_arg: Option<String>,
        no_block: bool,
    },
    Echo {
        text: String,
    },
    Arg {
        args: BTreeMap<String, Value>,
        extend: bool,
    },
    Env {
        envs: BTreeMap<String, Value>,
        extend: bool,
    },
    Workdir {
        path: String,
        owner: Option<Owner>,
        mode: Option<u32>,
    },
    Cachefile {
        path: String,
    },
    Cacheevict {
        tag: CacheTag,
    },
    Queuesentinel,
    Wait {
        wait: WaitFor,
    },
    Query {
        name: String,
        no_wait: bool,
    },
    QueryWait {
        item: String,
        timeout_secs: u64,
        identities: Vec<String>,
    },
    JobWait {
        fingerprint: String,
        identities: Vec<String>,
    },
    Add(Transfer),
    Copy(Transfer),
}

/// Size of the pieces a file travels in; each is verified on its own. A power of two
/// multiple of blake3's 1 KiB chunk, so that every piece is a whole subtree of the file's
/// blake3 tree (see [`FileRef::chunks`]).
pub const CHUNK_SIZE: u64 = 1024 * 1024;

/// One source file of ADD/COPY, as the submitter read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The file's name, used when DEST is a directory.
    pub name: String,
    pub size: u64,
    /// blake3 of the whole content.
    pub hash: Fingerprint,
    /// One digest per [`CHUNK_SIZE`] piece, in order (none for an empty file): the blake3
    /// chaining value of the piece as a subtree of the whole file, or, for a file of one
    /// piece, the file's own hash. The list merges into `hash` (see [`FileRef::check`]), so
    /// pieces that each match their digest make up exactly the file `hash` names: a node
    /// that fetched them all needs no second pass over the file to know it is whole.
    pub chunks: Vec<Fingerprint>,
}

impl FileRef {
    /// Hashes the file at `path`: the digest of each piece, and the whole hash from them
    /// (each byte is hashed once). How a piece is hashed depends on whether it is the file's
    /// only one, so the size must be known first: a file whose size is not what its metadata
    /// says (`/proc/version` says 0) is read again with the size read, and one that changes
    /// size again while it is read is an error.
    pub fn read(path: &std::path::Path) -> std::io::Result<FileRef> {
        let mut size = std::fs::metadata(path)?.len();
        for _ in 0..2 {
            let (chunks, read) = FileRef::digests(path, size)?;
            if read != size {
                size = read;
                continue;
            }
            let hash = match chunks.as_slice() {
                [] => Fingerprint(*blake3::hash(b"").as_bytes()),
                [only] => *only,
                _ => Fingerprint(*tree_root(&chunks, size).as_bytes()),
            };
            return Ok(FileRef {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                size,
                hash,
                chunks,
            });
        }
        Err(std::io::Error::other(format!(
            "it changed size while it was read (to {size} bytes, then again); submit again"
        )))
    }

    /// The digests of the file at `path` taken as `size` bytes long, and how many bytes it had.
    fn digests(path: &std::path::Path, size: u64) -> std::io::Result<(Vec<Fingerprint>, u64)> {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let pieces = size.div_ceil(CHUNK_SIZE) as usize;
        let mut chunks = Vec::new();
        let mut read = 0u64;
        let mut buf = vec![0u8; CHUNK_SIZE as usize];
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = file.read(&mut buf[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            chunks.push(FileRef::digest_of_chunk(
                chunks.len(),
                pieces,
                &buf[..filled],
            ));
            read += filled as u64;
            if filled < buf.len() {
                break;
            }
        }
        Ok((chunks, read))
    }

    /// The digest piece `index` of a file of `pieces` pieces has in [`FileRef::chunks`].
    /// Data that cannot be a piece of a file of several (empty, or longer than a piece) gets
    /// its plain hash, which matches no digest of such a file: blake3's tree functions
    /// would panic on it, and it may come from a peer.
    pub fn digest_of_chunk(index: usize, pieces: usize, data: &[u8]) -> Fingerprint {
        use blake3::hazmat::HasherExt;
        if pieces <= 1 || data.is_empty() || data.len() as u64 > CHUNK_SIZE {
            return Fingerprint(*blake3::hash(data).as_bytes());
        }
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(index as u64 * CHUNK_SIZE);
        hasher.update(data);
        Fingerprint(hasher.finalize_non_root())
    }

    /// Checks that the chunk list fits the size and merges into the whole hash. A description
    /// from a peer is checked before anything is fetched by it: one that fails (forged, or
    /// from a release whose lists held plain hashes of the pieces) could otherwise have a node
    /// keep other content under this hash.
    pub fn check(&self) -> Result<(), String> {
        let pieces = self.size.div_ceil(CHUNK_SIZE);
        if self.chunks.len() as u64 != pieces {
            return Err(format!(
                "{} ({}): {} bytes take {pieces} chunks, but its description lists {}",
                self.name,
                self.hash,
                self.size,
                self.chunks.len()
            ));
        }
        let merged = match self.chunks.as_slice() {
            [] => Fingerprint(*blake3::hash(b"").as_bytes()),
            [only] => *only,
            _ => Fingerprint(*tree_root(&self.chunks, self.size).as_bytes()),
        };
        if merged != self.hash {
            return Err(format!(
                "{} ({}): its chunk list does not add up to its blake3 (it makes {merged}); \
                 the run was forged or comes from an older release (wire version 7 or before), \
                 submit it again",
                self.name, self.hash
            ));
        }
        Ok(())
    }
}

/// The root hash of a file of `size` bytes (more than one piece) from its pieces' chaining
/// values, merged the way blake3 builds its tree: each left subtree is the largest power of
/// two of 1 KiB chunks that leaves something on the right, which for files over one piece
/// always ends on a piece boundary.
fn tree_root(pieces: &[Fingerprint], size: u64) -> blake3::Hash {
    use blake3::hazmat::{Mode, left_subtree_len, merge_subtrees_root};
    let left = left_subtree_len(size);
    let split = (left / CHUNK_SIZE) as usize;
    merge_subtrees_root(
        &subtree(&pieces[..split], left),
        &subtree(&pieces[split..], size - left),
        Mode::Hash,
    )
}

/// The chaining value of the subtree `len` bytes long made of `pieces`.
fn subtree(pieces: &[Fingerprint], len: u64) -> blake3::hazmat::ChainingValue {
    use blake3::hazmat::{Mode, left_subtree_len, merge_subtrees_non_root};
    if pieces.len() <= 1 {
        return pieces.first().map_or([0; 32], |p| p.0);
    }
    let left = left_subtree_len(len);
    let split = (left / CHUNK_SIZE) as usize;
    merge_subtrees_non_root(
        &subtree(&pieces[..split], left),
        &subtree(&pieces[split..], len - left),
        Mode::Hash,
    )
}

/// ADD and COPY: where from, where to, and how the file lands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    /// The source as written (a glob), then, once resolved, the one file's absolute path.
    pub src: String,
    pub dest: String,
    pub owner: Option<Owner>,
    pub mode: Option<u32>,
    pub blueprint: bool,
    /// The resolved source file (set by the submitter, see [`crate::transfer::resolve`]).
    pub file: Option<FileRef>,
}

impl Component {
    pub fn verb(&self) -> Verb {
        match self {
            Component::Run { .. } => Verb::Run,
            Component::Echo { .. } => Verb::Echo,
            Component::Arg { .. } => Verb::Arg,
            Component::Env { .. } => Verb::Env,
            Component::Workdir { .. } => Verb::Workdir,
            Component::Cachefile { .. } => Verb::Cachefile,
            Component::Cacheevict { .. } => Verb::Cacheevict,
            Component::Queuesentinel => Verb::Queuesentinel,
            Component::Wait { .. } => Verb::Wait,
            Component::Query { .. } => Verb::Query,
            Component::QueryWait { .. } => Verb::QueryWait,
            Component::JobWait { .. } => Verb::JobWait,
            Component::Add(_) => Verb::Add,
            Component::Copy(_) => Verb::Copy,
        }
    }
}

/// A blake3 fingerprint (of a job or of an orchestration entry).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fingerprint(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl Fingerprint {
    /// blake3 of the canonical CBOR of `value` (maps must be ordered: structs and BTreeMaps are).
    pub fn of<T: Serialize>(value: &T) -> Fingerprint {
        let mut bytes = Vec::new();
        // Serialising plain data into memory cannot fail.
        ciborium::into_writer(value, &mut bytes).expect("CBOR encoding into memory");
        Fingerprint(*blake3::hash(&bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The fingerprint whose [`Fingerprint::to_hex`] is `hex` (64 lowercase hex digits), as
    /// stored keys and blob file names are written; anything else is `None`.
    pub fn from_hex(hex: &str) -> Option<Fingerprint> {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (b, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *b = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Fingerprint(out))
    }

    /// Whether the hex form starts with `prefix` (for `--restrict`).
    pub fn matches_prefix(&self, prefix: &str) -> bool {
        !prefix.is_empty() && self.to_hex().starts_with(&prefix.to_ascii_lowercase())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One job as submitted: its component and the options every verb shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub component: Component,
    pub timeout_secs: u64,
    pub run_once: bool,
    pub skip_cache: bool,
    pub force_lock: bool,
}

#[derive(Serialize)]
struct FingerprintInput<'a> {
    component: &'a Component,
    timeout: u64,
    run_once: bool,
}

/// What parsing a job gave: a spec, or the verb's help (`--exec-help`).
#[derive(Debug, Clone, PartialEq)]
pub enum ParseOutcome {
    Spec(JobSpec),
    Help(String),
}

impl JobSpec {
    pub fn verb(&self) -> Verb {
        self.component.verb()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&FingerprintInput {
            component: &self.component,
            timeout: self.timeout_secs,
            run_once: self.run_once,
        })
    }

    /// Parses `VERB inline` with `vars` (which override options; names use `_` or `-`).
    /// `Ok(Help)` when `--exec-help` was given.
    pub fn parse(
        verb: &str,
        inline: &str,
        vars: &BTreeMap<String, Value>,
    ) -> Result<ParseOutcome, String> {
        let verb = Verb::from_name(verb).ok_or_else(|| {
            let names: Vec<&str> = Verb::ALL.iter().map(|v| v.name()).collect();
            let hint = names
                .iter()
                .find(|n| edit_distance(&verb.to_uppercase(), n) <= 2)
                .map(|n| format!("did you mean {n}? "))
                .unwrap_or_default();
            format!("unknown verb '{verb}' ({hint}known: {})", names.join(", "))
        })?;
        let mut parsed = if verb.options_anywhere() {
            inline::parse_anywhere(inline, verb.options())?
        } else {
            inline::parse(inline, verb.options())?
        };
        apply_vars(&mut parsed, verb, vars)?;
        if parsed.flag("exec-help") {
            return Ok(ParseOutcome::Help(verb.help()));
        }
        let timeout_secs = match parsed.value("timeout") {
            Some(t) => whole_seconds(t, "--timeout")?,
            None => DEFAULT_TIMEOUT_SECS,
        };
        let component = component(verb, &parsed, inline)?;
        check_templates(&component)?;
        Ok(ParseOutcome::Spec(JobSpec {
            component,
            timeout_secs,
            run_once: parsed.flag("run-once"),
            skip_cache: parsed.flag("skip-cache"),
            force_lock: parsed.flag("force-lock"),
        }))
    }
}

/// Letters to insert, delete or replace to turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A path on the node must be absolute: one that is not (and is no template, which may
/// render to an absolute one) is refused here rather than failing on every node.
fn absolute(what: &str, path: &str) -> Result<(), String> {
    if path.starts_with('/') || path.starts_with("{{") {
        Ok(())
    } else {
        Err(format!(
            "{what} '{path}' is not an absolute path (paths on the nodes must start with /)"
        ))
    }
}

/// Template syntax errors are bad input, refused here rather than on every node.
fn check_templates(component: &Component) -> Result<(), String> {
    fn value(key: &str, v: &Value) -> Result<(), String> {
        match v {
            Value::String(s) => {
                crate::template::check_syntax(s).map_err(|e| format!("value of {key}: {e}"))
            }
            Value::Array(items) => items.iter().try_for_each(|i| value(key, i)),
            Value::Object(map) => map.values().try_for_each(|i| value(key, i)),
            _ => Ok(()),
        }
    }
    let check = |what: &str, text: &str| {
        crate::template::check_syntax(text).map_err(|e| format!("{what}: {e}"))
    };
    match component {
        Component::Run { command, .. } => check("the command", command),
        Component::Wait {
            wait: WaitFor::Command { command, .. },
        } => check("--cmd", command),
        Component::Workdir { path, .. } | Component::Cachefile { path } => {
            check("the path", path)?;
            absolute("PATH", path)
        }
        Component::Add(t) | Component::Copy(t) => {
            check("DEST", &t.dest)?;
            absolute("DEST", &t.dest)
        }
        // Keys are not rendered, only values.
        Component::Arg { args: values, .. } | Component::Env { envs: values, .. } => {
            values.iter().try_for_each(|(k, v)| value(k, v))
        }
        _ => Ok(()),
    }
}

/// `vars` become options: `true` adds a flag, `false` removes it, other values set the option.
/// `yes`/`no` and their kin (`true`, `on`, `y`, ...), as YAML 1.1 and strtobool read them.
pub(crate) fn yes_or_no(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "t" | "true" | "on" | "1" => Some(true),
        "n" | "no" | "f" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn apply_vars(
    parsed: &mut Parsed,
    verb: Verb,
    vars: &BTreeMap<String, Value>,
) -> Result<(), String> {
    for (key, value) in vars {
        let name = key.replace('_', "-");
        // Directord's name for RUN's stdout-arg var and the extend flag.
        let spec = verb
            .options()
            .iter()
            .chain(COMMON_OPTIONS)
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let names: Vec<String> = verb
                    .options()
                    .iter()
                    .chain(COMMON_OPTIONS)
                    .map(|s| s.name.replace('-', "_"))
                    .collect();
                format!(
                    "vars: '{key}' is not an option of {verb} (options: {})",
                    names.join(", ")
                )
            })?;
        parsed.options.retain(|(n, _)| *n != name);
        match (spec.value, value) {
            (None, Value::Bool(true)) => parsed.options.push((name, None)),
            (None, Value::Bool(false)) => {}
            // YAML 1.1 (Directord's) reads a bare `yes` or `on` as true; here it is text.
            (None, Value::String(s)) if yes_or_no(s).is_some() => {
                if yes_or_no(s) == Some(true) {
                    parsed.options.push((name, None));
                }
            }
            (None, Value::Number(n)) if n.as_f64().is_some() => {
                if n.as_f64() != Some(0.0) {
                    parsed.options.push((name, None));
                }
            }
            (None, other) => {
                return Err(format!(
                    "vars: '{key}' is a flag; give true or false, not {other}"
                ));
            }
            (Some(_), Value::String(s)) => parsed.options.push((name, Some(s.clone()))),
            (Some(_), Value::Number(n)) => parsed.options.push((name, Some(n.to_string()))),
            (Some(_), Value::Bool(b)) => parsed.options.push((name, Some(b.to_string()))),
            (Some(placeholder), other) => {
                return Err(format!(
                    "vars: '{key}' needs a single value ({placeholder}), not {other}"
                ));
            }
        }
    }
    Ok(())
}

fn component(verb: Verb, p: &Parsed, inline: &str) -> Result<Component, String> {
    let usage = || format!("usage: {}", verb.usage());
    let one_word = |what: &str| -> Result<String, String> {
        match p.rest.as_slice() {
            [w] => Ok(w.text.clone()),
            [] => Err(format!("{verb} needs {what}; {}", usage())),
            _ => Err(format!(
                "{verb} takes one {what}, got {} words{}; {}",
                p.rest.len(),
                if what == "PATH" {
                    " (quote a path with spaces)"
                } else {
                    ""
                },
                usage()
            )),
        }
    };
    Ok(match verb {
        Verb::Run => {
            if p.rest_raw.is_empty() {
                return Err(format!("RUN needs a command; {}", usage()));
            }
            // The command is one argument of `/bin/sh -c`: the kernel takes no longer one.
            if p.rest_raw.len() >= MAX_COMMAND_BYTES && !crate::template::is_template(&p.rest_raw) {
                return Err(format!(
                    "the command is {} bytes; a shell command can be at most {} (the kernel's \
                     limit for one argument): put it in a file, ADD it and RUN that file",
                    p.rest_raw.len(),
                    MAX_COMMAND_BYTES - 1
                ));
            }
            let stdout_arg = p.value("stdout-arg").map(str::to_string);
            if let Some(name) = &stdout_arg {
                check_arg_name(name, "--stdout-arg")?;
            }
            Component::Run {
                command: p.rest_raw.clone(),
                stdout_arg,
                no_block: p.flag("no-block"),
            }
        }
        Verb::Echo => Component::Echo {
            text: p
                .rest
                .iter()
                .map(|w| w.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        },
        Verb::Arg | Verb::Env => {
            let Some(key) = p.rest.first() else {
                return Err(format!("{verb} needs a KEY and a VALUE; {}", usage()));
            };
            check_arg_name(&key.text, "KEY")?;
            let raw_value = p
                .rest
                .get(1)
                .map(|w| inline[w.start..].trim())
                .unwrap_or_default();
            if raw_value.is_empty() {
                return Err(format!("{verb} {} has no VALUE; {}", key.text, usage()));
            }
            let map = BTreeMap::from([(key.text.clone(), yaml_value(raw_value))]);
            let extend = p.flag("extend-args");
            if verb == Verb::Arg {
                Component::Arg { args: map, extend }
            } else {
                Component::Env { envs: map, extend }
            }
        }
        Verb::Workdir => Component::Workdir {
            path: one_word("PATH")?,
            owner: p.value("chown").map(Owner::parse).transpose()?,
            mode: p.value("chmod").map(parse_mode).transpose()?,
        },
        Verb::Cachefile => Component::Cachefile {
            path: one_word("PATH")?,
        },
        Verb::Cacheevict => Component::Cacheevict {
            tag: CacheTag::parse(&one_word("a tag")?)?,
        },
        Verb::Queuesentinel => Component::Queuesentinel,
        Verb::Wait => {
            let wait = match (p.value("seconds"), p.flag("cmd")) {
                (Some(s), false) => {
                    if !p.rest.is_empty() {
                        return Err(format!("WAIT --seconds takes nothing else; {}", usage()));
                    }
                    if p.value("retry").is_some() || p.value("retry-wait").is_some() {
                        return Err(format!(
                            "--retry and --retry-wait go with WAIT --cmd, not --seconds; {}",
                            usage()
                        ));
                    }
                    WaitFor::Seconds(parse_seconds(s, "--seconds")?)
                }
                (None, true) => {
                    if p.rest_raw.is_empty() {
                        return Err(format!("WAIT --cmd needs a command; {}", usage()));
                    }
                    WaitFor::Command {
                        command: p.rest_raw.clone(),
                        retry: match p.value("retry") {
                            Some(r) => {
                                r.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                                    format!("--retry '{r}' must be a whole number above 0")
                                })?
                            }
                            None => 30,
                        },
                        retry_wait: match p.value("retry-wait") {
                            Some(w) => parse_seconds(w, "--retry-wait")?,
                            None => 1.0,
                        },
                    }
                }
                _ => {
                    return Err(format!(
                        "WAIT needs exactly one of --seconds and --cmd; {}",
                        usage()
                    ));
                }
            };
            Component::Wait { wait }
        }
        Verb::Query => {
            let name = one_word("NAME")?;
            check_arg_name(&name, "NAME")?;
            Component::Query {
                name,
                no_wait: p.flag("no-wait"),
            }
        }
        Verb::QueryWait => Component::QueryWait {
            item: one_word("ITEM")?,
            timeout_secs: match p.value("query-timeout") {
                Some(t) => whole_seconds(t, "--query-timeout")?,
                None => DEFAULT_TIMEOUT_SECS,
            },
            identities: p.values("identity"),
        },
        Verb::Add | Verb::Copy => {
            let [src, dest] = p.rest.as_slice() else {
                let got = match p.rest.len() {
                    0 => "nothing".to_string(),
                    1 => "only one word".to_string(),
                    n => format!("{n} words (quote a path with spaces)"),
                };
                return Err(format!("{verb} takes SRC and DEST, got {got}; {}", usage()));
            };
            let transfer = Transfer {
                src: src.text.clone(),
                dest: dest.text.clone(),
                owner: p.value("chown").map(Owner::parse).transpose()?,
                mode: p.value("chmod").map(parse_mode).transpose()?,
                blueprint: p.flag("blueprint"),
                file: None,
            };
            if verb == Verb::Add {
                Component::Add(transfer)
            } else {
                Component::Copy(transfer)
            }
        }
        Verb::JobWait => {
            let given = one_word("FINGERPRINT")?;
            if given.len() < 8 || given.len() > 64 || !given.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(format!(
                    "'{given}' is not a job fingerprint (8 to 64 hexadecimal digits, see --finger-print)"
                ));
            }
            let fingerprint = given.to_ascii_lowercase();
            let mut identities = p.values("identity");
            // Named twice, a node is still one node to hear from.
            let mut seen = std::collections::HashSet::new();
            identities.retain(|id| seen.insert(id.clone()));
            if identities.is_empty() {
                return Err(format!(
                    "JOB_WAIT needs at least one --identity NODE; {}",
                    usage()
                ));
            }
            Component::JobWait {
                fingerprint,
                identities,
            }
        }
    })
}

/// Arg names are template variables: letters, digits and `_`, not starting with a digit.
fn check_arg_name(name: &str, what: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} '{name}' must be letters, digits and '_', not starting with a digit"
        ))
    }
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("--chmod '{text}' is not an octal mode like 0755"))
}

fn parse_seconds(text: &str, what: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= MAX_SECONDS as f64)
        .ok_or_else(|| {
            format!("{what} '{text}' is not a number of seconds from 0 to {MAX_SECONDS} (a year)")
        })
}

/// A value as YAML reads it (`1` → number, `[a]` → list, `{a: b}` → map, `null` or `~` →
/// null), else the text itself (an empty value, or a comment, is text: no value was written).
pub fn yaml_value(text: &str) -> Value {
    match serde_yaml_ng::from_str::<Value>(text) {
        Ok(Value::Null) if matches!(text.trim(), "null" | "Null" | "NULL" | "~") => Value::Null,
        Ok(Value::Null) | Err(_) => Value::String(text.to_string()),
        Ok(v) => v,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_fingerprint_reads_back_from_its_hex_form_only() {
        let fp = Fingerprint::of(&"x");
        assert_eq!(Fingerprint::from_hex(&fp.to_hex()), Some(fp));
        let hex = fp.to_hex();
        for bad in [
            hex.to_ascii_uppercase(),
            format!("+{}", &hex[1..]),
            hex[..62].to_string(),
            format!("{hex}00"),
            format!("{}g", &hex[..63]),
            String::new(),
        ] {
            assert_eq!(Fingerprint::from_hex(&bad), None, "{bad}");
        }
    }

    fn spec(verb: &str, inline: &str) -> JobSpec {
        spec_vars(verb, inline, BTreeMap::new())
    }

    fn spec_vars(verb: &str, inline: &str, vars: BTreeMap<String, Value>) -> JobSpec {
        match JobSpec::parse(verb, inline, &vars).unwrap() {
            ParseOutcome::Spec(s) => s,
            ParseOutcome::Help(h) => panic!("help: {h}"),
        }
    }

    fn err(verb: &str, inline: &str) -> String {
        JobSpec::parse(verb, inline, &BTreeMap::new()).unwrap_err()
    }

    #[test]
    fn a_copy_short_of_words_says_how_many_it_got() {
        let one = err("COPY", "/tmp/f1k");
        assert!(
            one.starts_with("COPY takes SRC and DEST, got only one word;"),
            "{one}"
        );
        let three = err("ADD", "a b c");
        assert!(
            three.contains("got 3 words (quote a path with spaces)"),
            "{three}"
        );
        // A name is not a path: no word of quoting paths.
        let two = err("QUERY", "a b");
        assert!(
            two.starts_with("QUERY takes one NAME, got 2 words;"),
            "{two}"
        );
    }

    #[test]
    fn run_keeps_the_command_as_written() {
        let s = spec(
            "RUN",
            r#"--skip-cache --stdout-arg out --timeout 30 echo "a   b" | grep a"#,
        );
        assert_eq!(
            s.component,
            Component::Run {
                command: r#"echo "a   b" | grep a"#.into(),
                stdout_arg: Some("out".into()),
                no_block: false
            }
        );
        assert!(s.skip_cache && !s.run_once && !s.force_lock);
        assert_eq!(s.timeout_secs, 30);
        assert_eq!(spec("run", "true").timeout_secs, DEFAULT_TIMEOUT_SECS);
    }

    #[test]
    fn timeouts_and_waits_beyond_a_year_are_refused_and_never_overflow_a_clock() {
        assert_eq!(
            spec("RUN", "--timeout 31622400 true").timeout_secs,
            MAX_SECONDS
        );
        for (given, secs) in [
            ("90", 90),
            ("90s", 90),
            ("5m", 300),
            ("2h", 7200),
            ("1d", 86_400),
        ] {
            let inline = format!("--timeout {given} true");
            assert_eq!(spec("RUN", &inline).timeout_secs, secs, "{given}");
        }
        for bad in ["5x", "m", "1.5m", "-1", "367d", "0m"] {
            let e = err("RUN", &format!("--timeout {bad} true"));
            assert!(e.contains(&format!("--timeout '{bad}'")), "{bad}: {e}");
        }
        for inline in [
            "--timeout 31622401 true",
            "--timeout 10000000000000000000 true",
        ] {
            let e = err("RUN", inline);
            assert!(e.contains("--timeout") && e.contains("a year"), "{e}");
        }
        let e = err("QUERY_WAIT", "--query-timeout 99999999999 item");
        assert!(e.contains("--query-timeout") && e.contains("a year"), "{e}");
        for inline in ["--seconds 1e20", "--seconds NaN", "--seconds -1"] {
            let e = err("WAIT", inline);
            assert!(e.contains("--seconds"), "{inline}: {e}");
        }
        // A job from a peer is not parsed here: whatever it carries stays within a year.
        let now = std::time::Instant::now();
        let _ = now + bounded_secs(u64::MAX);
        assert_eq!(bounded_secs(u64::MAX).as_secs(), MAX_SECONDS);
        assert_eq!(bounded_secs_f64(f64::NAN), std::time::Duration::ZERO);
        assert_eq!(bounded_secs_f64(-5.0), std::time::Duration::ZERO);
        assert_eq!(bounded_secs_f64(f64::INFINITY).as_secs(), MAX_SECONDS);
        assert_eq!(bounded_secs_f64(1.5).as_millis(), 1500);
    }

    #[test]
    fn arg_values_are_yaml() {
        let value = |inline: &str| match spec("ARG", inline).component {
            Component::Arg { args, .. } => args.into_values().next().unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(value("k argument"), json!("argument"));
        assert_eq!(value("k ['test']"), json!(["test"]));
        assert_eq!(value("k 1"), json!(1));
        assert_eq!(value("k 1.2"), json!(1.2));
        assert_eq!(value(r#"k {"a": "b"}"#), json!({"a": "b"}));
        assert_eq!(value("k hello   world"), json!("hello   world"));
        assert_eq!(value("k true"), json!(true));
        assert_eq!(value("k null"), json!(null));
        assert_eq!(value("k ~"), json!(null));
        assert_eq!(value("k # not a value"), json!("# not a value"));
        assert!(matches!(
            spec("ENV", "--extend-args E x").component,
            Component::Env { extend: true, .. }
        ));
    }

    #[test]
    fn vars_override_options() {
        let vars = BTreeMap::from([
            ("stdout_arg".to_string(), json!("v")),
            ("skip_cache".to_string(), json!(true)),
            ("timeout".to_string(), json!(9)),
        ]);
        let s = spec_vars("RUN", "--stdout-arg x echo hi", vars);
        assert!(matches!(s.component, Component::Run { stdout_arg: Some(ref v), .. } if v == "v"));
        assert!(s.skip_cache);
        assert_eq!(s.timeout_secs, 9);
        let bad = BTreeMap::from([("chown".to_string(), json!("root"))]);
        let e = JobSpec::parse("RUN", "true", &bad).unwrap_err();
        assert!(e.contains("'chown' is not an option of RUN"), "{e}");
        // Directord's files (YAML 1.1) write flags as yes/no.
        let yes = BTreeMap::from([("skip_cache".to_string(), json!("yes"))]);
        assert!(spec_vars("RUN", "true", yes).skip_cache);
        let no = BTreeMap::from([("skip_cache".to_string(), json!("off"))]);
        assert!(!spec_vars("RUN", "--skip-cache true", no).skip_cache);
        let one = BTreeMap::from([("skip_cache".to_string(), json!(1))]);
        assert!(spec_vars("RUN", "true", one).skip_cache);
        let bad = BTreeMap::from([("skip_cache".to_string(), json!("maybe"))]);
        assert!(
            JobSpec::parse("RUN", "true", &bad)
                .unwrap_err()
                .contains("is a flag")
        );
    }

    #[test]
    fn fingerprint_covers_fields_but_not_cache_flags() {
        let a = spec("RUN", "echo hi").fingerprint();
        assert_eq!(a, spec("RUN", "--skip-cache echo hi").fingerprint());
        assert_eq!(a, spec("RUN", "--force-lock echo hi").fingerprint());
        assert_ne!(a, spec("RUN", "echo  hi").fingerprint());
        assert_ne!(a, spec("RUN", "--timeout 5 echo hi").fingerprint());
        assert_ne!(a, spec("RUN", "--run-once echo hi").fingerprint());
        assert_ne!(a, spec("RUN", "--stdout-arg x echo hi").fingerprint());
        assert_ne!(a, spec("ECHO", "echo hi").fingerprint());
        // Stable across runs and machines: a fixed vector.
        assert_eq!(a.to_hex().len(), 64);
        assert_eq!(a, spec("RUN", "echo hi").fingerprint());
        assert!(a.matches_prefix(&a.to_hex()[..8].to_uppercase()));
    }

    #[test]
    fn other_verbs() {
        assert_eq!(
            spec("WORKDIR", "--chown=0:0 --chmod=0777 /tmp/x").component,
            Component::Workdir {
                path: "/tmp/x".into(),
                owner: Some(Owner {
                    user: Some("0".into()),
                    group: Some("0".into())
                }),
                mode: Some(0o777)
            }
        );
        assert_eq!(
            spec("ECHO", "hello   world").component,
            Component::Echo {
                text: "hello world".into()
            }
        );
        assert_eq!(
            spec("CACHEEVICT", "all").component,
            Component::Cacheevict { tag: CacheTag::All }
        );
        assert_eq!(
            spec("QUEUESENTINEL", "true").component,
            Component::Queuesentinel
        );
        assert_eq!(
            spec("WAIT", "--cmd --retry 3 test -f /tmp/x").component,
            Component::Wait {
                wait: WaitFor::Command {
                    command: "test -f /tmp/x".into(),
                    retry: 3,
                    retry_wait: 1.0
                }
            }
        );
        assert_eq!(
            spec("WAIT", "--seconds 1.5").component,
            Component::Wait {
                wait: WaitFor::Seconds(1.5)
            }
        );
    }

    #[test]
    fn coordination_verbs() {
        assert_eq!(
            spec("QUERY", "--no-wait host_name").component,
            Component::Query {
                name: "host_name".into(),
                no_wait: true
            }
        );
        assert_eq!(
            spec("JOB_WAIT", "ABCDEF0123 --identity n1 --identity n2,n3,n1").component,
            Component::JobWait {
                fingerprint: "abcdef0123".into(),
                identities: vec!["n1".into(), "n2".into(), "n3".into()]
            }
        );
        assert_eq!(
            spec("QUERY_WAIT", "x --query-timeout 5").component,
            Component::QueryWait {
                item: "x".into(),
                timeout_secs: 5,
                identities: vec![]
            }
        );
        assert!(err("JOB_WAIT", "abcdef0123").contains("at least one --identity"));
        assert!(err("JOB_WAIT", "xyz --identity a").contains("not a job fingerprint"));
        assert!(err("QUERY", "").contains("needs NAME"));
        assert!(err("QUERY_WAIT", "x --query-timeout 0").contains("--query-timeout"));
        // Plain-positional verbs take their options after the positional too.
        assert!(matches!(
            spec("WORKDIR", "/tmp/x --chmod 0700").component,
            Component::Workdir {
                mode: Some(0o700),
                ..
            }
        ));
    }

    #[test]
    fn bad_jobs_say_why() {
        assert!(err("FROB", "x").contains("unknown verb 'FROB' (known: RUN"));
        // Paths on the nodes: absolute, or a template that may render to one.
        assert!(err("WORKDIR", "srv/x").contains("PATH 'srv/x' is not an absolute path"));
        assert!(err("CACHEFILE", "c.yaml").contains("PATH 'c.yaml' is not an absolute"));
        assert!(err("ADD", "a.txt dest").contains("DEST 'dest' is not an absolute path"));
        assert_eq!(spec("WORKDIR", "{{ base }}/x").verb(), Verb::Workdir);
        assert!(err("RUNN", "x").contains("(did you mean RUN? known:"));
        assert!(err("ehco", "x").contains("did you mean ECHO?"));
        assert_eq!(edit_distance("QUERYWAIT", "QUERY_WAIT"), 1);
        assert!(err("RUN", "").contains("RUN needs a command"));
        let long = format!("echo {}", "y".repeat(MAX_COMMAND_BYTES));
        assert!(err("RUN", &long).contains("put it in a file"));
        let fits = format!("echo {}", "y".repeat(MAX_COMMAND_BYTES - 10));
        assert!(JobSpec::parse("RUN", &fits, &Default::default()).is_ok());
        assert!(err("RUN", "--timeout abc true").contains("--timeout 'abc'"));
        assert!(err("RUN", "--timeout 0 true").contains("from 1 s to a year"));
        assert!(err("RUN", "--stdout-arg 9x true").contains("--stdout-arg '9x'"));
        assert!(err("ARG", "").contains("needs a KEY and a VALUE"));
        assert!(err("ARG", "k").contains("has no VALUE"));
        assert!(err("ARG", "bad-key v").contains("KEY 'bad-key'"));
        assert!(err("WORKDIR", "").contains("needs PATH"));
        assert!(err("WORKDIR", "a b").contains("takes one PATH"));
        assert!(err("WORKDIR", "--chmod 999 /x").contains("not an octal mode"));
        assert!(err("WORKDIR", "--chown : /x").contains("neither a user nor a group"));
        assert!(err("CACHEEVICT", "stuff").contains("unknown cache tag 'stuff'"));
        assert!(err("WAIT", "").contains("exactly one of --seconds and --cmd"));
        assert!(err("WAIT", "--seconds x").contains("--seconds 'x'"));
        assert!(
            err("WAIT", "--retry 3 --seconds 1")
                .contains("--retry and --retry-wait go with WAIT --cmd, not --seconds")
        );
        assert!(err("RUN", "echo 'unterminated").contains("unterminated single quote"));
    }

    #[test]
    fn exec_help_prints_the_verb_help() {
        match JobSpec::parse("RUN", "--exec-help", &BTreeMap::new()).unwrap() {
            ParseOutcome::Help(h) => {
                assert!(
                    h.contains("RUN [OPTIONS] COMMAND")
                        && h.contains("--stdout-arg NAME")
                        && h.contains("--timeout")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// A file of `size` bytes whose pieces all differ.
    fn content(size: u64) -> Vec<u8> {
        (0..size)
            .map(|i| ((i * 31 + i / 4093) % 251) as u8)
            .collect()
    }

    fn read(data: &[u8]) -> FileRef {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, data).unwrap();
        FileRef::read(&path).unwrap()
    }

    #[test]
    fn a_files_chunk_list_adds_up_to_its_blake3_at_every_size() {
        let c = CHUNK_SIZE;
        for size in [
            0,
            1,
            1024,
            c - 1,
            c,
            c + 1,
            2 * c,
            2 * c + 1,
            3 * c,
            3 * c + 1023,
            4 * c,
            5 * c + 7,
            8 * c + 1,
        ] {
            let data = content(size);
            let file = read(&data);
            assert_eq!(file.size, size);
            assert_eq!(file.hash.0, *blake3::hash(&data).as_bytes(), "{size} bytes");
            assert_eq!(file.chunks.len() as u64, size.div_ceil(c));
            file.check().unwrap();
            for (index, piece) in data.chunks(c as usize).enumerate() {
                assert_eq!(
                    FileRef::digest_of_chunk(index, file.chunks.len(), piece),
                    file.chunks[index],
                    "{size} bytes, chunk {index}"
                );
            }
        }
    }

    #[test]
    fn a_chunk_list_that_makes_other_content_is_refused() {
        let real = read(&content(3 * CHUNK_SIZE + 5));
        let other = read(&content(3 * CHUNK_SIZE + 6)[1..]);
        assert_eq!(real.size, other.size);
        // Another file's pieces under this file's hash; two pieces swapped; one piece changed.
        let mut borrowed = real.clone();
        borrowed.chunks = other.chunks.clone();
        let mut swapped = real.clone();
        swapped.chunks.swap(0, 1);
        let mut changed = real.clone();
        changed.chunks[3] = other.chunks[3];
        // The plain hashes of the pieces (the list of releases before wire version 8).
        let mut plain = real.clone();
        plain.chunks = content(3 * CHUNK_SIZE + 5)
            .chunks(CHUNK_SIZE as usize)
            .map(|p| Fingerprint(*blake3::hash(p).as_bytes()))
            .collect();
        for forged in [borrowed, swapped, changed, plain] {
            let e = forged.check().unwrap_err();
            assert!(
                e.contains("does not add up to its blake3") && e.contains("older release"),
                "{e}"
            );
        }
        // One piece: its digest is the file's hash, or the description is refused.
        let small = read(b"small");
        let mut forged = small.clone();
        forged.chunks[0] = Fingerprint(*blake3::hash(b"other").as_bytes());
        assert!(forged.check().is_err());
        // A file whose metadata says 0 bytes while it has content is read again by its size.
        let proc = FileRef::read(std::path::Path::new("/proc/version")).unwrap();
        let content = std::fs::read("/proc/version").unwrap();
        assert!(!content.is_empty());
        assert_eq!(proc.size, content.len() as u64);
        assert_eq!(proc.hash.0, *blake3::hash(&content).as_bytes());
        proc.check().unwrap();
        // A list that does not fit the size is refused before any merging.
        let mut short = real.clone();
        short.chunks.pop();
        assert!(short.check().unwrap_err().contains("take 4 chunks"));
    }
}
