//! What a job is: a verb with its component fields, the options every verb shares, and the
//! job's fingerprint.
//!
//! [`JobSpec::parse`] turns `VERB` + inline arguments + `vars` into a spec, with an error that
//! says what is wrong. The fingerprint is blake3 of the canonical CBOR of
//! `{component fields (with the verb), timeout, run_once}`: targets, parents and the cache flags
//! are not part of it, so the same command shares cache state across orchestrations, as in
//! Directord.

mod file_ref;
mod verb;

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inline::{self, COMMON_OPTIONS, OptionSpec, Parsed};

pub use file_ref::{CHUNK_SIZE, FileRef};
pub use verb::Verb;

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

/// Owner for WORKDIR (and files): names or numeric ids, resolved on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub user: Option<String>,
    pub group: Option<String>,
}

impl Owner {
    /// Parses `USER`, `USER:GROUP` or `:GROUP`.
    pub fn parse(text: &str) -> Result<Owner, String> {
        // As --chmod: an owner is given as it is (a template would be taken for a user name).
        if crate::template::is_template(text) {
            return Err(format!(
                "--chown '{text}' is a template, which --chown does not render: name the user \
                 and group, or give their ids"
            ));
        }
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
            match inline::parse(inline, verb.options()) {
                Ok(parsed) => parsed,
                // Free text with a lone quote or a trailing backslash (`ECHO: it's done`) is
                // taken word by word at its spaces, as Directord takes every line.
                Err(_) if matches!(verb, Verb::Echo | Verb::Arg | Verb::Env) => {
                    inline::parse_plain(inline, verb.options())?
                }
                Err(e) => return Err(e),
            }
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
            // An option that takes several words takes a list of them (`identity: [a, b]`).
            (Some(placeholder), Value::Array(items)) if spec.many => {
                for item in items {
                    match item {
                        Value::String(s) => parsed.options.push((name.clone(), Some(s.clone()))),
                        Value::Number(n) => {
                            parsed.options.push((name.clone(), Some(n.to_string())))
                        }
                        other => {
                            return Err(format!(
                                "vars: '{key}' takes a list of {placeholder}s; {other} is not one"
                            ));
                        }
                    }
                }
            }
            (Some(placeholder), other) => {
                return Err(format!(
                    "vars: '{key}' needs a single value ({placeholder}), not {other}"
                ));
            }
        }
    }
    Ok(())
}

/// A verb with its parsed inline arguments: what each verb's parser reads, and the usage line
/// its errors end with.
struct VerbInput<'a> {
    verb: Verb,
    p: &'a Parsed,
    /// The inline arguments as written (ARG and ENV take their VALUE from it).
    inline: &'a str,
}

impl VerbInput<'_> {
    /// `usage: ...`, the verb's usage line, which its errors end with.
    fn usage(&self) -> String {
        format!("usage: {}", self.verb.usage())
    }

    /// The one word after the options, named `what` in the error when there is not exactly one.
    fn one_word(&self, what: &str) -> Result<String, String> {
        let (verb, p) = (self.verb, self.p);
        match p.rest.as_slice() {
            [w] => Ok(w.text.clone()),
            [] => Err(format!("{verb} needs {what}; {}", self.usage())),
            _ => Err(format!(
                "{verb} takes one {what}, got {} words{}; {}",
                p.rest.len(),
                if what == "PATH" {
                    " (quote a path with spaces)"
                } else {
                    ""
                },
                self.usage()
            )),
        }
    }
}

/// The component `verb` makes of its parsed inline arguments.
fn component(verb: Verb, p: &Parsed, inline: &str) -> Result<Component, String> {
    let input = VerbInput { verb, p, inline };
    Ok(match verb {
        Verb::Run => run(&input)?,
        Verb::Echo => Component::Echo {
            text: p
                .rest
                .iter()
                .map(|w| w.text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        },
        Verb::Arg | Verb::Env => arg_or_env(&input)?,
        Verb::Workdir => Component::Workdir {
            path: input.one_word("PATH")?,
            owner: p.value("chown").map(Owner::parse).transpose()?,
            mode: p.value("chmod").map(parse_mode).transpose()?,
        },
        Verb::Cachefile => Component::Cachefile {
            path: input.one_word("PATH")?,
        },
        Verb::Cacheevict => Component::Cacheevict {
            tag: CacheTag::parse(&input.one_word("a tag")?)?,
        },
        Verb::Queuesentinel => Component::Queuesentinel,
        Verb::Wait => Component::Wait {
            wait: wait_for(&input)?,
        },
        Verb::Query => query(&input)?,
        Verb::QueryWait => query_wait(&input)?,
        Verb::Add | Verb::Copy => transfer(&input)?,
        Verb::JobWait => job_wait(&input)?,
    })
}

/// RUN: the shell command (at most one argument's length unless a template) and --stdout-arg.
fn run(input: &VerbInput) -> Result<Component, String> {
    let p = input.p;
    if p.rest_raw.is_empty() {
        return Err(format!("RUN needs a command; {}", input.usage()));
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
    if stdout_arg.is_some() && p.flag("no-block") {
        return Err(
            "--stdout-arg stores what the command printed, and --no-block reports before it \
             prints anything: give one or the other"
                .into(),
        );
    }
    Ok(Component::Run {
        command: p.rest_raw.clone(),
        stdout_arg,
        no_block: p.flag("no-block"),
    })
}

/// ARG and ENV: one KEY and the rest of the line as its VALUE ([`yaml_value`]).
fn arg_or_env(input: &VerbInput) -> Result<Component, String> {
    let (verb, p) = (input.verb, input.p);
    let Some(key) = p.rest.first() else {
        return Err(format!("{verb} needs a KEY and a VALUE; {}", input.usage()));
    };
    check_arg_name(&key.text, "KEY")?;
    let raw_value = p
        .rest
        .get(1)
        .map(|w| input.inline[w.start..].trim_ascii())
        .unwrap_or_default();
    if raw_value.is_empty() {
        return Err(format!(
            "{verb} {} has no VALUE; {}",
            key.text,
            input.usage()
        ));
    }
    if let Some(why) = crate::yaml_text::nested_too_deep(raw_value) {
        return Err(format!("{verb} {} VALUE: {why}", key.text));
    }
    let value = yaml_value(raw_value);
    // Only a string is passed as it is; any other value as JSON, which escapes NUL.
    if verb == Verb::Env
        && let Some(why) = env_problem(&key.text, value.as_str().unwrap_or_default())
    {
        return Err(why);
    }
    let map = BTreeMap::from([(key.text.clone(), value)]);
    let extend = p.flag("extend-args");
    Ok(if verb == Verb::Arg {
        Component::Arg { args: map, extend }
    } else {
        Component::Env { envs: map, extend }
    })
}

/// WAIT: either --seconds alone, or --cmd with the command and its --retry and --retry-wait.
fn wait_for(input: &VerbInput) -> Result<WaitFor, String> {
    let p = input.p;
    match (p.value("seconds"), p.flag("cmd")) {
        (Some(s), false) => {
            if !p.rest.is_empty() {
                return Err(format!(
                    "WAIT --seconds takes nothing else; {}",
                    input.usage()
                ));
            }
            if p.value("retry").is_some() || p.value("retry-wait").is_some() {
                return Err(format!(
                    "--retry and --retry-wait go with WAIT --cmd, not --seconds; {}",
                    input.usage()
                ));
            }
            Ok(WaitFor::Seconds(parse_seconds(s, "--seconds")?))
        }
        (None, true) => wait_command(input),
        _ => Err(format!(
            "WAIT needs exactly one of --seconds and --cmd; {}",
            input.usage()
        )),
    }
}

/// WAIT --cmd: the command, tried up to --retry times (30), --retry-wait seconds apart (1).
fn wait_command(input: &VerbInput) -> Result<WaitFor, String> {
    let p = input.p;
    if p.rest_raw.is_empty() {
        return Err(format!("WAIT --cmd needs a command; {}", input.usage()));
    }
    Ok(WaitFor::Command {
        command: p.rest_raw.clone(),
        retry: match p.value("retry") {
            Some(r) => r
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("--retry '{r}' must be a whole number above 0"))?,
            None => 30,
        },
        retry_wait: match p.value("retry-wait") {
            Some(w) => parse_seconds(w, "--retry-wait")?,
            None => 1.0,
        },
    })
}

/// QUERY: the NAME of the arg to ask every node for.
fn query(input: &VerbInput) -> Result<Component, String> {
    let name = input.one_word("NAME")?;
    check_arg_name(&name, "NAME")?;
    Ok(Component::Query {
        name,
        no_wait: input.p.flag("no-wait"),
    })
}

/// QUERY_WAIT: the ITEM to wait for, how long (--query-timeout) and from whom (--identity).
fn query_wait(input: &VerbInput) -> Result<Component, String> {
    let p = input.p;
    Ok(Component::QueryWait {
        item: input.one_word("ITEM")?,
        timeout_secs: match p.value("query-timeout") {
            Some(t) => whole_seconds(t, "--query-timeout")?,
            None => DEFAULT_TIMEOUT_SECS,
        },
        identities: p.values("identity"),
    })
}

/// ADD and COPY: SRC and DEST, with the file's owner and mode and whether it is a blueprint.
fn transfer(input: &VerbInput) -> Result<Component, String> {
    let (verb, p) = (input.verb, input.p);
    let [src, dest] = p.rest.as_slice() else {
        let got = match p.rest.len() {
            0 => "nothing".to_string(),
            1 => "only one word".to_string(),
            n => format!("{n} words (quote a path with spaces)"),
        };
        return Err(format!(
            "{verb} takes SRC and DEST, got {got}; {}",
            input.usage()
        ));
    };
    let transfer = Transfer {
        src: src.text.clone(),
        dest: dest.text.clone(),
        owner: p.value("chown").map(Owner::parse).transpose()?,
        mode: p.value("chmod").map(parse_mode).transpose()?,
        blueprint: p.flag("blueprint"),
        file: None,
    };
    Ok(if verb == Verb::Add {
        Component::Add(transfer)
    } else {
        Component::Copy(transfer)
    })
}

/// JOB_WAIT: the job's FINGERPRINT (hexadecimal) and the nodes to hear from (--identity).
fn job_wait(input: &VerbInput) -> Result<Component, String> {
    let given = input.one_word("FINGERPRINT")?;
    if given.len() < 8 || given.len() > 64 || !given.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "'{given}' is not a job fingerprint (8 to 64 hexadecimal digits, see --finger-print)"
        ));
    }
    let fingerprint = given.to_ascii_lowercase();
    let mut identities = input.p.values("identity");
    // Named twice, a node is still one node to hear from.
    let mut seen = std::collections::HashSet::new();
    identities.retain(|id| seen.insert(id.clone()));
    if identities.is_empty() {
        return Err(format!(
            "JOB_WAIT needs at least one --identity NODE; {}",
            input.usage()
        ));
    }
    Ok(Component::JobWait {
        fingerprint,
        identities,
    })
}

/// Why `name=value` cannot be in a process's environment, naming the env (`None`: it can): an
/// empty name, `=` or NUL in the name, NUL in the value. ENV refuses such an env when it is
/// parsed and when its value is rendered on the node; a job's shell, when one reaches it.
pub(crate) fn env_problem(name: &str, value: &str) -> Option<String> {
    let shown = name.escape_debug();
    if name.is_empty() {
        Some("an env's name cannot be empty".to_string())
    } else if name.contains('\0') {
        Some(format!(
            "the env name '{shown}' holds a NUL byte, which no process environment can hold"
        ))
    } else if name.contains('=') {
        Some(format!(
            "the env name '{shown}' holds '=', which ends a name in a process environment"
        ))
    } else if value.contains('\0') {
        Some(format!(
            "the value of env {shown} holds a NUL byte, which no process environment can hold"
        ))
    } else {
        None
    }
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
            "{what} '{}' must be letters, digits and '_', not starting with a digit",
            name.escape_debug()
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

/// A value as Directord reads one (Python literals, here in YAML's spelling): a list or map
/// written in brackets or braces (`[a, 1]`, `{a: b}`), a quoted string (`'a b'`), or a plain
/// number, boolean or null (`1`, `1.5`, `true`, `null`, `~`) is that value, a comment after it
/// left out (`5 # five` is 5, as Python reads it); anything else is the text as written. So
/// `Note: disk full`, `- a`, `hello #1`, `&x y` or `!!int "5"` stay text, not a map, a list,
/// `hello`, `y` or 5: YAML's block syntax, and a plain value's anchor or tag, are not read.
pub fn yaml_value(text: &str) -> Value {
    let as_written = || Value::String(text.to_string());
    let trimmed = text.trim_ascii();
    let Ok(read) = serde_yaml_ng::from_str::<Value>(trimmed) else {
        return as_written();
    };
    match trimmed.chars().next() {
        Some('[') if read.is_array() => read,
        Some('{') if read.is_object() => read,
        Some('"' | '\'') if read.is_string() => read,
        Some('!' | '&' | '*') => as_written(),
        _ => match read {
            Value::Null if matches!(trimmed, "null" | "Null" | "NULL" | "~") => Value::Null,
            Value::Bool(_) | Value::Number(_) => read,
            _ => as_written(),
        },
    }
}

#[cfg(test)]
mod tests;
