//! The verb table: each verb's name, usage, options, help text and lock, in one place.

use super::*;

/// `--chown` of WORKDIR, ADD and COPY.
const CHOWN: OptionSpec = OptionSpec {
    name: "chown",
    value: Some("USER[:GROUP]"),
    many: false,
    help: "owner (names or numeric ids)",
};

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
    pub(super) fn options_anywhere(self) -> bool {
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

    pub(super) fn usage(self) -> &'static str {
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
            Verb::QueryWait => {
                "QUERY_WAIT ITEM [--query-timeout SECONDS] [--identity NODE [NODE]...]"
            }
            Verb::JobWait => "JOB_WAIT FINGERPRINT --identity NODE [NODE]...",
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
                "Cache KEY = VALUE as an arg on each target, for templates. Numbers, true/false, \
                 null, lists ([a, b]), maps ({a: b}) and quoted strings ('a  b') keep their type; \
                 any other VALUE is the text as written (`Note: disk full`, `hello #1`)."
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
                "Wait until the job with FINGERPRINT (or its first 8 or more hexadecimal digits) has finished - succeeded \
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

    pub(super) fn options(self) -> &'static [OptionSpec] {
        match self {
            Verb::Run => &[
                OptionSpec {
                    name: "stdout-arg",
                    value: Some("NAME"),
                    many: false,
                    help: "store the command's trimmed stdout as the cached arg NAME for later jobs",
                },
                OptionSpec {
                    name: "no-block",
                    value: None,
                    many: false,
                    help: "start the command in the background (its own process group, its output discarded) and report success at once",
                },
            ],
            Verb::Arg | Verb::Env => &[OptionSpec {
                name: "extend-args",
                value: None,
                many: false,
                help: "merge into the cached value instead of replacing it: maps merge deeply, lists are extended (a value of any other type, or of another type than the cached one, replaces it, as in Directord)",
            }],
            Verb::Workdir => &[
                CHOWN,
                OptionSpec {
                    name: "chmod",
                    value: Some("OCTAL"),
                    many: false,
                    help: "mode, e.g. 0755",
                },
            ],
            Verb::Wait => &[
                OptionSpec {
                    name: "seconds",
                    value: Some("SECONDS"),
                    many: false,
                    help: "wait this long",
                },
                OptionSpec {
                    name: "cmd",
                    value: None,
                    many: false,
                    help: "wait until COMMAND (the rest of the line) exits 0",
                },
                OptionSpec {
                    name: "retry",
                    value: Some("N"),
                    many: false,
                    help: "with --cmd: how many tries (default 30)",
                },
                OptionSpec {
                    name: "retry-wait",
                    value: Some("SECONDS"),
                    many: false,
                    help: "with --cmd: pause between tries (default 1)",
                },
            ],
            Verb::Query => &[OptionSpec {
                name: "no-wait",
                value: None,
                many: false,
                help: "give this node's value and go on without waiting for the others",
            }],
            Verb::QueryWait => &[
                OptionSpec {
                    name: "query-timeout",
                    value: Some("SECONDS"),
                    many: false,
                    help: "give up after this long (default 600)",
                },
                OptionSpec {
                    name: "identity",
                    value: Some("NODE"),
                    many: true,
                    help: "the item must be there for this node (several after one --identity, \
                           repeatable, or comma-separated)",
                },
            ],
            Verb::JobWait => &[OptionSpec {
                name: "identity",
                value: Some("NODE"),
                many: true,
                help: "a node to wait for (several after one --identity, repeatable, or \
                       comma-separated; at least one)",
            }],
            Verb::Add | Verb::Copy => &[
                CHOWN,
                OptionSpec {
                    name: "chmod",
                    value: Some("OCTAL"),
                    many: false,
                    help: "mode, e.g. 0644",
                },
                OptionSpec {
                    name: "blueprint",
                    value: None,
                    many: false,
                    help: "render the file as a template against the node's cached args (a cached success counts while they are as they were)",
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
