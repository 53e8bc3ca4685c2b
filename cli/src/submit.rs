//! `exec` and `orchestrate`: submit jobs to the mesh through this machine's daemon, and follow
//! them with `--poll` (a progress bar and a line per job) or `--stream` (live output).
//!
//! Exit codes: 0 every job succeeded (or was skipped), 1 a job failed or a target was
//! unreachable, 2 bad input.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use clap::Args;
use comfy_table::{Table, presets::NOTHING};
use indicatif::{ProgressBar, ProgressStyle};
use jobs::{
    Fingerprint, JobSpec, ParseOutcome,
    executor::ResultState,
    orchestration::{self, Orchestration, OrchestrationError},
    spec::Component,
};
use node::{
    control::{
        ControlClient, ControlError, ControlRequest, ControlResponse, Submission, SubmitReply,
        SubmittedJob, SubmittedParent, WatchEvent,
    },
    records::{JobRecord, JobStatus, NodeResult, Pick, Picking},
};

use crate::{Failure, output, render};

/// Options shared by `exec` and `orchestrate`.
#[derive(Args, Debug, Clone)]
pub struct RunOptions {
    /// Run on this node (by name); repeatable, order kept (--run-once jobs run on the first).
    /// Overrides the targets in orchestration files. Default: the files' targets, else every
    /// node alive in the mesh.
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,

    /// Only run jobs whose fingerprint starts with this (see --finger-print); repeatable.
    #[arg(long, value_name = "FINGERPRINT", value_parser = fingerprint_start)]
    restrict: Vec<String>,

    /// Run every job even if it already succeeded on a node within the cache TTL.
    #[arg(long)]
    ignore_cache: bool,

    /// Run every parent in its own queue, concurrently with the others.
    #[arg(long)]
    force_async: bool,

    /// Print each job's fingerprint and run nothing.
    #[arg(long, conflicts_with_all = ["poll", "stream", "check"])]
    finger_print: bool,

    /// Wait for the jobs: a progress bar and one status line per job.
    #[arg(long)]
    poll: bool,

    /// Like --poll, and print the jobs' output live, each line prefixed with its node.
    #[arg(long)]
    stream: bool,

    /// Wait for the jobs and, at the end, list every failed job with its reason.
    #[arg(long)]
    check: bool,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The verb to run: RUN, ECHO, ARG, ENV, WORKDIR, CACHEFILE, CACHEEVICT, QUEUESENTINEL,
    /// WAIT, ADD, COPY, QUERY, QUERY_WAIT or JOB_WAIT (`--exec-help` among its arguments shows
    /// a verb's own help).
    #[arg(long, value_name = "VERB")]
    verb: String,

    #[command(flatten)]
    options: RunOptions,

    /// The verb's arguments, e.g. `--skip-cache 'echo hello'`. They are joined with spaces into
    /// one line and split again as an orchestration file's inline arguments are, so quote a
    /// command as one argument to keep its own quotes: `'touch "my file"'`. Options of `exec`
    /// itself (--poll, --target, ...) may stand anywhere; after `--` everything belongs to the
    /// job. A near miss of --target, --restrict, --finger-print or --state-dir anywhere, or
    /// of --poll, --stream, --check, --ignore-cache or --force-async as the last argument (or
    /// one of these but --check with one dash, `-poll`, there), is refused rather than given
    /// to the job.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// Options of `exec` whose misspelling would run the job somewhere else, or at all (a missed
/// `--finger-print` runs what it was to show): a near miss of one of them is refused.
const MISTYPED_HARMS: &[&str] = &[
    "--target",
    "--restrict",
    "--verb",
    "--finger-print",
    "--state-dir",
];

/// Options of `exec` whose near miss is refused as the last argument, where operators add
/// them (`... --pol`): the job would run with the typo as its own argument. Elsewhere a near
/// miss is the job's: `--pull` and `--pool` are common options of the commands jobs run.
const MISTYPED_AT_THE_END: &[&str] = &[
    "--poll",
    "--stream",
    "--check",
    "--ignore-cache",
    "--force-async",
];

/// `exec`'s own options, and whether each takes a value.
const EXEC_OPTIONS: &[(&str, bool)] = &[
    ("--verb", true),
    ("--target", true),
    ("--restrict", true),
    ("--state-dir", true),
    ("--ignore-cache", false),
    ("--force-async", false),
    ("--finger-print", false),
    ("--poll", false),
    ("--stream", false),
    ("--check", false),
    ("--help", false),
    ("-h", false),
];

/// Rewrites an `exec` command line so that its own options may stand anywhere among the job's
/// arguments: `exec --verb RUN --skip-cache 'uname -a' --poll` becomes
/// `exec --verb RUN --poll -- --skip-cache 'uname -a'`. Other command lines are unchanged.
///
/// An argument one typo away from an exec option whose loss changes where or what runs
/// (`--taget n1`: on every node instead of one) is refused rather than handed to the job.
/// After `--` everything is the job's.
pub fn exec_argv(argv: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, String> {
    let Some(at) = argv.iter().position(|a| a == "exec") else {
        return Ok(argv);
    };
    // Only when `exec` is the subcommand, i.e. everything before it is global options.
    let mut i = 1;
    while i < at {
        match argv[i].to_str() {
            Some("--state-dir") => i += 2,
            Some(a) if a.starts_with("--state-dir=") => i += 1,
            _ => return Ok(argv),
        }
    }
    if i != at {
        return Ok(argv);
    }
    let mut out: Vec<std::ffi::OsString> = argv[..=at].to_vec();
    let mut job = Vec::new();
    // The `--target NAME` (or `--restrict`) just read, when the job's own words (other than
    // its options) came before it: a plain word right after it is Directord's
    // `'cmd' --target a b`, which names two nodes there, not a word of the command here.
    let mut node_option_after_words: Option<String> = None;
    let mut rest = argv[at + 1..].iter();
    while let Some(arg) = rest.next() {
        let text = arg.to_str().unwrap_or_default();
        if let Some(option) = node_option_after_words.take()
            && !text.starts_with('-')
        {
            let name = option.split([' ', '=']).next().unwrap_or_default();
            return Err(format!(
                "exec: '{text}' follows `{option}` after the job's own words: Directord's \
                 `--target a b` names two nodes, and here it would be a word of the job; give \
                 each its own option (`{option} {name} {text}`), and the job's words in one \
                 place (all of them after `--`, if they must come last)"
            ));
        }
        if text == "--" {
            job.extend(rest.by_ref().cloned());
            break;
        }
        let name = text.split_once('=').map_or(text, |(n, _)| n);
        // Help is exec's only before the job's arguments: `df -h` is the job's.
        let jobs_help = !job.is_empty() && matches!(name, "-h" | "--help");
        match EXEC_OPTIONS
            .iter()
            .find(|(o, _)| *o == name)
            .filter(|_| !jobs_help)
        {
            Some((_, takes_value)) => {
                out.push(arg.clone());
                let mut given = text.to_string();
                if *takes_value
                    && !text.contains('=')
                    && let Some(value) = rest.next()
                {
                    out.push(value.clone());
                    given = format!("{text} {}", value.to_string_lossy());
                }
                let job_words_before = job
                    .iter()
                    .any(|w: &std::ffi::OsString| !w.to_string_lossy().starts_with('-'));
                if matches!(name, "--target" | "--restrict") && job_words_before {
                    node_option_after_words = Some(given);
                }
            }
            None => {
                let last = rest.len() == 0;
                // A capital letter is a typo too (`--Poll`).
                let lower = name.to_lowercase();
                if let Some(option) = MISTYPED_HARMS
                    .iter()
                    .chain(MISTYPED_AT_THE_END.iter().filter(|_| last))
                    .find(|o| {
                        name.starts_with("--")
                            && (one_typo(&lower, o) || (lower != name && lower == **o))
                    })
                {
                    return Err(format!(
                        "exec has no option {name}: did you mean {option}? (to give {name} to \
                         the job, put it after `--`)"
                    ));
                }
                // One dash short, as the last argument (`... -poll`): the job would run with
                // it as its own argument. With a value (`-target=x`) it is the command's.
                if last
                    && !text.contains('=')
                    && name.starts_with('-')
                    && !name.starts_with("--")
                    && let Some(option) = MISTYPED_HARMS
                        .iter()
                        .chain(MISTYPED_AT_THE_END)
                        // `-check` ends common commands (`terraform fmt -check`).
                        .filter(|o| **o != "--check")
                        .find(|o| o[1..] == lower)
                {
                    return Err(format!(
                        "exec has no option {name}: did you mean {option}? (to give {name} to \
                         the job, put it after `--`, or quote the command with it as one \
                         argument)"
                    ));
                }
                job.push(arg.clone())
            }
        }
    }
    if !job.is_empty() {
        out.push("--".into());
        out.extend(job);
    }
    Ok(out)
}

/// Whether `a` and `b` differ by exactly one typo: a letter left out, added, replaced, or two
/// neighbours swapped.
fn one_typo(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a == b || a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let start = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[start..], &b[start..]);
    match a.len().cmp(&b.len()) {
        std::cmp::Ordering::Less => a == &b[1..],
        std::cmp::Ordering::Greater => &a[1..] == b,
        std::cmp::Ordering::Equal => {
            a[1..] == b[1..] || (a.len() >= 2 && a[0] == b[1] && a[1] == b[0] && a[2..] == b[2..])
        }
    }
}

#[derive(Args, Debug)]
pub struct OrchestrateArgs {
    /// Orchestration files, run in order.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    #[command(flatten)]
    options: RunOptions,
}

pub fn exec(state_dir: PathBuf, args: ExecArgs) -> Result<(), Failure> {
    // The arguments are joined with spaces into one inline line, as in an orchestration file:
    // `exec --verb RUN --skip-cache 'echo "a  b"'` runs `echo "a  b"`.
    let inline = args.args.join(" ");
    let spec = match JobSpec::parse(&args.verb, &inline, &Default::default()) {
        Ok(ParseOutcome::Spec(spec)) => spec,
        Ok(ParseOutcome::Help(help)) => {
            output::text(help);
            return Ok(());
        }
        // Most messages name the verb first ("RUN needs a command"): not said twice.
        Err(e) => {
            let verb = args.verb.to_uppercase();
            return Err(Failure::Input(match e.starts_with(&format!("{verb} ")) {
                true => e,
                false => format!("{verb}: {e}"),
            }));
        }
    };
    let definition = format!("{}: {inline}", spec.verb());
    let parent = SubmittedParent {
        origin: None,
        name: None,
        targets: None,
        is_async: false,
        fingerprint: Fingerprint::of(&definition),
        jobs: vec![SubmittedJob { spec, definition }],
    };
    run(state_dir, vec![parent], args.options, true)
}

/// The `--target NODE` (or `--restrict FINGERPRINT`) that `file` comes right after in the
/// command line `argv`, if it does: a word there that does not look like a file (no `/`, no
/// `.yaml`/`.yml`; for `--restrict`, hexadecimal) is most likely a second node (fingerprint).
fn node_option_before(
    file: &std::path::Path,
    argv: impl IntoIterator<Item = std::ffi::OsString>,
) -> Option<(&'static str, String)> {
    let word = file.to_str()?;
    if word.contains('/') || word.ends_with(".yaml") || word.ends_with(".yml") {
        return None;
    }
    let argv: Vec<std::ffi::OsString> = argv.into_iter().collect();
    let fits = |option: &str| match option {
        "--restrict" => word.bytes().all(|b| b.is_ascii_hexdigit()),
        _ => true,
    };
    // Every place the word is given (it may also be, say, a --state-dir's value).
    (1..argv.len())
        .filter(|&at| argv[at] == file.as_os_str())
        .find_map(|at| {
            let before = argv[at - 1].to_str()?;
            let two_before = at.checked_sub(2).map(|i| &argv[i]);
            ["--target", "--restrict"].into_iter().find_map(|option| {
                let value = match before
                    .strip_prefix(option)
                    .and_then(|v| v.strip_prefix('='))
                {
                    Some(value) => value,
                    None if two_before.is_some_and(|a| a == option) && !before.starts_with('-') => {
                        before
                    }
                    None => return None,
                };
                fits(option).then(|| (option, value.to_string()))
            })
        })
}

pub fn orchestrate(state_dir: PathBuf, args: OrchestrateArgs) -> Result<(), Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::Runtime(format!("cannot tell the current directory: {e}")))?;
    let mut parents = Vec::new();
    for file in &args.files {
        let Orchestration { entries } = match orchestration::parse_file(file) {
            Ok(o) => o,
            Err(e) if e.is_help => {
                // Where it was asked for: nothing of the files runs.
                let at = OrchestrationError {
                    message: "--exec-help: the verb's help is shown, and nothing was run".into(),
                    ..e.clone()
                };
                output::text(e.message);
                output::err_line(at);
                return Ok(());
            }
            Err(e) => {
                let hint = node_option_before(file, std::env::args_os())
                    .filter(|_| !file.exists())
                    .map(|(option, given)| {
                        let what = match option {
                            "--restrict" => "fingerprints",
                            _ => "nodes",
                        };
                        format!(
                            " ('{}' follows `{option} {given}`: Directord's `{option} a b` names \
                             two {what}; here each takes its own option, `{option} {given} \
                             {option} {}`)",
                            file.display(),
                            file.display()
                        )
                    })
                    .unwrap_or_default();
                return Err(Failure::Input(format!("{e}{hint}")));
            }
        };
        for (e, entry) in entries.into_iter().enumerate() {
            let mut jobs = Vec::new();
            for (j, job) in entry.jobs.into_iter().enumerate() {
                // ADD/COPY sources are read here, and a missing one is named where it is written.
                let verb = job.spec.verb();
                let at = format!(
                    "{}: entry {}, job {} ({verb})",
                    file.display(),
                    e + 1,
                    j + 1
                );
                let (specs, left_out) = jobs::transfer::resolve_noting_left_out(job.spec, &cwd)
                    .map_err(|why| Failure::Input(format!("{at}: {why}")))?;
                say_sources_left_out(&at, &left_out);
                jobs.extend(submitted_jobs(&job.text, specs));
            }
            let origin = match &entry.name {
                Some(name) => format!("{}: entry {} ({name})", file.display(), e + 1),
                None => format!("{}: entry {}", file.display(), e + 1),
            };
            parents.push(SubmittedParent {
                origin: Some(origin),
                name: entry.name,
                targets: entry.targets,
                is_async: entry.is_async,
                fingerprint: entry.fingerprint,
                jobs,
            });
        }
    }
    run(state_dir, parents, args.options, false)
}

/// The jobs one written job became (an ADD/COPY glob, one per file): each as written, and when
/// there are several, with the name of its file, so that their status lines tell them apart.
fn submitted_jobs(definition: &str, specs: Vec<JobSpec>) -> Vec<SubmittedJob> {
    let several = specs.len() > 1;
    specs
        .into_iter()
        .map(|spec| {
            let file = match &spec.component {
                Component::Add(t) | Component::Copy(t) if several => t.file.as_ref(),
                _ => None,
            };
            let definition = match file {
                Some(file) => format!("{definition} (file {})", file.name),
                None => definition.to_string(),
            };
            SubmittedJob { spec, definition }
        })
        .collect()
}

/// Says what the pattern of the ADD/COPY at `at` matched and left out: hidden files its
/// wildcard left out, as a shell does, and what is not a regular file (a link to nothing, a
/// named pipe). A `conf/*` that leaves out `conf/.env` would otherwise deploy without it
/// unnoticed.
fn say_sources_left_out(at: &str, left_out: &jobs::transfer::LeftOut) {
    if !left_out.hidden.is_empty() {
        let names = left_out.hidden.iter().map(|p| p.display().to_string());
        output::err_line(format!(
            "note: {at}: its wildcard left out hidden files, as a shell does: {} (write \
             their leading dot, e.g. '.*', to send them)",
            first_few(names, left_out.hidden.len())
        ));
    }
    if !left_out.not_files.is_empty() {
        let names = left_out
            .not_files
            .iter()
            .map(|(p, what)| format!("{} ({what})", p.display()));
        output::err_line(format!(
            "note: {at}: its pattern matched what ADD and COPY cannot send, left out: {}",
            first_few(names, left_out.not_files.len())
        ));
    }
}

/// The first few of `names` (`count` in all), and how many more there are.
fn first_few(names: impl Iterator<Item = String>, count: usize) -> String {
    const NAMED: usize = 3;
    let named: Vec<String> = names.take(NAMED).collect();
    match count.saturating_sub(NAMED) {
        0 => named.join(", "),
        n => format!("{} and {n} more", named.join(", ")),
    }
}

/// ADD/COPY name files on this machine: each source glob becomes one job per file, with the
/// file's content hashes (part of the job's fingerprint).
fn resolve_files(parents: Vec<SubmittedParent>) -> Result<Vec<SubmittedParent>, Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::Runtime(format!("cannot tell the current directory: {e}")))?;
    parents
        .into_iter()
        .map(|mut parent| {
            let mut jobs = Vec::new();
            for job in parent.jobs {
                let (specs, left_out) = jobs::transfer::resolve_noting_left_out(job.spec, &cwd)
                    .map_err(|e| Failure::Input(format!("{}: {e}", job.definition)))?;
                say_sources_left_out(&job.definition, &left_out);
                jobs.extend(submitted_jobs(&job.definition, specs));
            }
            parent.jobs = jobs;
            Ok(parent)
        })
        .collect()
}

fn run(
    state_dir: PathBuf,
    parents: Vec<SubmittedParent>,
    options: RunOptions,
    exec: bool,
) -> Result<(), Failure> {
    let parents = resolve_files(parents)?;
    if options.finger_print {
        return print_fingerprints(&parents, &options.restrict);
    }
    let follow = options.poll || options.stream || options.check;
    let answer_timeout = answer_timeout_for(&parents);
    let submission = Submission {
        parents,
        targets: options.targets.clone(),
        restrict: options.restrict.clone(),
        ignore_cache: options.ignore_cache,
        force_async: options.force_async,
        stream: options.stream,
        exec,
    };
    crate::client_runtime()?.block_on(async move {
        let mut client = ControlClient::connect(&state_dir)
            .await
            .map_err(Failure::runtime)?
            .with_answer_timeout(answer_timeout);
        let reply = match client.request(&ControlRequest::Submit(submission)).await {
            Ok(ControlResponse::Submitted(r)) => r,
            Ok(ControlResponse::Refused(why)) => return Err(Failure::Input(why)),
            Ok(other) => return Err(Failure::Runtime(format!("unexpected answer: {other:?}"))),
            Err(e @ (ControlError::Closed | ControlError::NoAnswer { .. })) => {
                return Err(Failure::Runtime(format!(
                    "{e}\nWhether it took the jobs is not known here: once it runs again, \
                     `manage --list-jobs` shows them if it did"
                )));
            }
            Err(e) => return Err(Failure::runtime(e)),
        };
        // The longer wait was for the daemon to copy the files in; a watch waits as usual.
        let mut client = client.with_answer_timeout(node::control::ANSWER_TIMEOUT);
        say_left_out(&reply);
        if !follow {
            for j in &reply.jobs {
                output::line(format_args!("{}", listed(j)));
            }
            return Ok(());
        }
        // Without a terminal there is no progress bar: a log says at once what was submitted,
        // and how to follow it again should this command be stopped.
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let jobs = match reply.jobs.len() {
                1 => "1 job".to_string(),
                n => format!("{n} jobs"),
            };
            crate::output::err_line(format!(
                "run {}: {jobs} submitted; `manage --follow-run {}` follows it again",
                reply.run_id, reply.run_id
            ));
        }
        let follow = Follow {
            poll: options.poll,
            stream: options.stream,
            check: options.check,
        };
        follow_jobs(&mut client, &reply, &follow).await
    })
}

/// A submitted job as listed without `--poll`: `ID  DEFINITION  [TARGETS]`, one line a job
/// (scripts read the ID from the first word of each), so a definition written over several
/// lines shows its breaks as `\n`, clipped as `--poll` clips it.
fn listed(j: &node::control::JobSummary) -> String {
    let definition = render::clipped(j.definition.trim_end(), SHOWN_MAX).replace('\n', "\\n");
    format!("{}  {definition}  [{}]", j.job_id, j.targets.join(", "))
}

/// `--finger-print`: the jobs' fingerprints instead of running them.
fn print_fingerprints(parents: &[SubmittedParent], restrict: &[String]) -> Result<(), Failure> {
    let matched = parents
        .iter()
        .flat_map(|p| &p.jobs)
        .filter(|j| {
            let fp = j.spec.fingerprint();
            restrict.is_empty() || restrict.iter().any(|r| fp.matches_prefix(r))
        })
        .count();
    if matched == 0 && !restrict.is_empty() {
        return Err(Failure::Input(format!(
            "--restrict {} matches none of the jobs' fingerprints",
            restrict.join(", ")
        )));
    }
    output::line(format_args!("{}", fingerprints(parents, restrict)));
    Ok(())
}

/// How long to wait for the daemon to take a submission: it copies ADD/COPY files into its
/// blob store before it answers, so the usual answer timeout and time for that (at 20 MB/s,
/// a slow disk).
fn answer_timeout_for(parents: &[SubmittedParent]) -> Duration {
    let file_bytes: u64 = parents
        .iter()
        .flat_map(|p| &p.jobs)
        .filter_map(|j| match &j.spec.component {
            jobs::Component::Add(t) | jobs::Component::Copy(t) => t.file.as_ref().map(|f| f.size),
            _ => None,
        })
        .sum();
    node::control::ANSWER_TIMEOUT + Duration::from_secs(file_bytes / 20_000_000)
}

/// The targets a submission left out, and why, on stderr.
fn say_left_out(reply: &SubmitReply) {
    if reply.restricted > 0 {
        let jobs = if reply.restricted == 1 { "job" } else { "jobs" };
        crate::output::err_line(format!(
            "{} {jobs} left out by --restrict",
            reply.restricted
        ));
    }
    if !reply.left_out.is_empty() {
        crate::output::err_line(format!(
            "warning: left out the live nodes named {}: two or more nodes share each name \
             (see `status`); give each a distinct --name (a node whose state directory was \
             wiped shares it with its previous identity until that expires, within three \
             heartbeats)",
            reply.left_out.join(", ")
        ));
    }
    if !reply.other_releases_left_out.is_empty() {
        crate::output::err_line(format!(
            "warning: left out the nodes of another release, which take no part in this \
             mesh until every node runs the same release: {}",
            reply.other_releases_left_out.join(", ")
        ));
    }
    if !reply.not_alive_left_out.is_empty() {
        crate::output::err_line(format!(
            "warning: not run on the members that are not alive: {}",
            reply.not_alive_left_out.join(", ")
        ));
    }
    if !reply.waiting_for_left.is_empty() {
        crate::output::err_line(format!(
            "note: targets that had just left the mesh (restarting?): {}; their jobs wait up \
             to {} s from their leaving for them to come back, else they are written off as \
             unreachable",
            reply.waiting_for_left.join(", "),
            reply.left_grace_secs
        ));
    }
}

/// A `--restrict` value: the start of a fingerprint, in hexadecimal digits.
fn fingerprint_start(value: &str) -> Result<String, String> {
    match value.chars().find(|c| !c.is_ascii_hexdigit()) {
        _ if value.is_empty() => Err("empty: give the start of a job fingerprint".into()),
        Some(c) => Err(format!(
            "'{c}' is not a hexadecimal digit: give the start of a job fingerprint (see \
             --finger-print)"
        )),
        None if value.len() > 64 => {
            Err("longer than a job fingerprint (64 hexadecimal digits)".into())
        }
        None => Ok(value.to_string()),
    }
}

/// `--finger-print`: the table of parents and jobs with their fingerprints.
fn fingerprints(parents: &[SubmittedParent], restrict: &[String]) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_header(vec!["COUNT", "PARENT", "VERB", "EXEC", "JOB"]);
    let mut count = 0;
    for p in parents {
        for j in &p.jobs {
            let fp = j.spec.fingerprint();
            if !restrict.is_empty() && !restrict.iter().any(|r| fp.matches_prefix(r)) {
                continue;
            }
            count += 1;
            // A file job names its own file first: the jobs of one glob differ only in it.
            let args = match &j.spec.component {
                jobs::Component::Add(t) | jobs::Component::Copy(t) if t.file.is_some() => {
                    let name = t.file.as_ref().map(|f| f.name.as_str()).unwrap_or_default();
                    format!("{name} -> {}", t.dest)
                }
                _ => j
                    .definition
                    .split_once(": ")
                    .map(|(_, a)| a.to_string())
                    .unwrap_or_default(),
            };
            let shown = if args.chars().count() >= 30 {
                format!("{}...", args.chars().take(27).collect::<String>())
            } else {
                args
            };
            table.add_row(vec![
                count.to_string(),
                p.fingerprint.to_hex()[..12].to_string(),
                j.spec.verb().name().to_string(),
                shown,
                fp.to_hex()[..12].to_string(),
            ]);
        }
    }
    render::table_text(&table)
}

/// How a command follows its jobs (`--poll`, `--stream`, `--check`).
struct Follow {
    poll: bool,
    stream: bool,
    check: bool,
}

/// `manage --follow-run ID`: follows the jobs of one run this node submitted until every
/// result is in, as `--poll --check` does (for a run whose command was stopped, or whose
/// node restarted meanwhile); the exit code is theirs.
pub fn follow_run(state_dir: PathBuf, id: &str) -> Result<(), Failure> {
    crate::client_runtime()?.block_on(async {
        let mut client = ControlClient::connect(&state_dir)
            .await
            .map_err(Failure::runtime)?;
        // Only the runs `id` may name are kept as the list comes.
        let mut picking = Picking::new(Pick::Run, id);
        // The jobs are followed by id: what they printed comes with the watch.
        let mut parts = client.list_jobs(false).await.map_err(Failure::runtime)?;
        while let Some(part) = parts.next().await.map_err(Failure::runtime)? {
            part.into_iter().for_each(|r| picking.add(r));
        }
        let (run_id, mut jobs) = picking.pick().map_err(Failure::Input)?;
        jobs.sort_by_key(|r| r.position);
        let reply = SubmitReply {
            run_id,
            jobs: jobs
                .into_iter()
                .map(|r| node::control::JobSummary {
                    job_id: r.job_id,
                    parent_id: r.parent_id,
                    definition: r.definition,
                    fingerprint: r.fingerprint,
                    targets: r.nodes.into_iter().map(|n| n.name).collect(),
                })
                .collect(),
            restricted: 0,
            left_out: Vec::new(),
            other_releases_left_out: Vec::new(),
            not_alive_left_out: Vec::new(),
            waiting_for_left: Vec::new(),
            left_grace_secs: 0,
        };
        let follow = Follow {
            poll: true,
            stream: false,
            check: true,
        };
        follow_jobs(&mut client, &reply, &follow).await
    })
}

/// `--poll`'s bar on a terminal: jobs done of `jobs`, and whom the rest wait for.
fn progress_bar(jobs: usize) -> ProgressBar {
    let bar = ProgressBar::new(jobs as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} jobs done {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Follows the submitted jobs until each is done; prints as asked; decides the exit code.
async fn follow_jobs(
    client: &mut ControlClient,
    reply: &SubmitReply,
    options: &Follow,
) -> Result<(), Failure> {
    let job_ids: Vec<String> = reply.jobs.iter().map(|j| j.job_id.clone()).collect();
    let expected: u64 = reply.jobs.iter().map(|j| j.targets.len() as u64).sum();
    let request = ControlRequest::Watch {
        job_ids: job_ids.clone(),
        output: options.stream,
    };
    let mut follower = Follower::new(options, job_ids.len());
    let mut next = client.start_stream(&request).await;
    loop {
        match next {
            Ok(ControlResponse::Watch(WatchEvent::Output { job_id, node, line })) => {
                for text in follower.live.line(&job_id, &node, &line) {
                    follower.say(text);
                }
            }
            Ok(ControlResponse::Watch(WatchEvent::Done(record))) => follower.done(*record),
            Ok(ControlResponse::Watch(WatchEvent::Unknown(id))) => {
                follower.say(format!("Job unknown: {id}"))
            }
            Ok(ControlResponse::Watch(WatchEvent::OutOfReach { node })) => {
                follower.notice(&format!(
                    "Waiting for {node}: alive by the mesh's table but out of this node's \
                     reach; its results come once this node reaches it again (`status` \
                     says why)"
                ));
            }
            Ok(ControlResponse::Watch(WatchEvent::Waiting { named, total })) => {
                follower.waiting(named, total)
            }
            Ok(ControlResponse::Watch(WatchEvent::Left { node, grace_secs })) => {
                follower.notice(&format!(
                    "Waiting for {node}: it left the mesh (a stop or a restart); its results \
                     come if it is back within {grace_secs} s of leaving, else it is written off \
                     as unreachable"
                ));
            }
            Ok(ControlResponse::WatchEnd) => break,
            Ok(other) => return Err(Failure::Runtime(format!("unexpected answer: {other:?}"))),
            Err(e) => return Err(watch_failure(e, &reply.run_id)),
        }
        next = client.next_event().await;
    }
    if let Some(b) = &follower.bar {
        b.finish_and_clear();
    }
    let written_off = follower
        .finished
        .values()
        .any(|r| r.results.values().any(|x| x.is_write_off()));
    let cut_off = written_off && hears_nobody(client).await;
    summarize(
        &follower.finished,
        job_ids.len(),
        expected,
        options.check,
        &reply.run_id,
    )
    .inspect_err(|_| {
        if cut_off {
            output::err_line(
                "this node hears no other member of the mesh now: it may be the one cut off \
                 (`status` says more), and the targets it wrote off may still be running their \
                 jobs",
            );
        }
    })
}

/// Whether the daemon holds every other member of its table expired (asked once the jobs are
/// done; a mesh of one, or no answer, says nothing).
async fn hears_nobody(client: &mut ControlClient) -> bool {
    match client.request(&ControlRequest::Status).await {
        Ok(ControlResponse::Status(report)) => {
            let others: Vec<_> = report.nodes.iter().filter(|n| !n.is_self).collect();
            !others.is_empty() && others.iter().all(|n| n.state == "expired")
        }
        _ => false,
    }
}

/// Why following the jobs of `run_id` stopped before each was done, for the operator.
fn watch_failure(e: ControlError, run_id: &str) -> Failure {
    match e {
        ControlError::Closed => Failure::Runtime(format!(
            "the daemon closed the connection before every job finished (it stopped or \
             restarted: its log says why; the jobs go on, and once it runs again \
             `manage --follow-run {run_id}` follows them to the end)"
        )),
        e @ ControlError::NoAnswer { .. } => Failure::Runtime(format!(
            "{e}\nThe jobs go on without this command; once the daemon answers again, \
             `manage --follow-run {run_id}` follows them to the end"
        )),
        e => Failure::runtime(e),
    }
}

/// What following a run has shown so far, and where it shows it.
struct Follower<'a> {
    options: &'a Follow,
    /// `--poll`'s bar on a terminal: jobs, not results (the daemon tells a job once every
    /// target has reported it).
    bar: Option<ProgressBar>,
    /// The jobs told done, as the summary needs them.
    finished: BTreeMap<String, JobRecord>,
    live: crate::live::LiveOutput,
    /// Whom the daemon said the jobs wait for last, and whom this command said so of.
    last_waiting: Option<(Vec<String>, usize)>,
    said_waiting: Option<(Vec<String>, usize)>,
}

impl<'a> Follower<'a> {
    fn new(options: &'a Follow, jobs: usize) -> Self {
        let bar = (options.poll && std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .then(|| progress_bar(jobs));
        Follower {
            options,
            bar,
            finished: BTreeMap::new(),
            live: crate::live::LiveOutput::default(),
            last_waiting: None,
            said_waiting: None,
        }
    }

    /// A line on standard output; the bar (on a terminal's standard error) steps aside.
    fn say(&self, line: String) {
        match &self.bar {
            Some(b) => b.suspend(|| output::line(line)),
            None => output::line(line),
        }
    }

    /// A notice for the operator, on standard error: standard output is the jobs' own
    /// (`--stream`).
    fn notice(&self, text: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| crate::output::err_line(text)),
            None => crate::output::err_line(text),
        }
    }

    /// A job is done: its output not shown yet (`--stream`) and its line. Told again: a
    /// target written off as unreachable came back with its result while other jobs were
    /// still awaited; its line is shown again, and the exit code follows what is known last.
    fn done(&mut self, record: JobRecord) {
        let late = self.finished.contains_key(&record.job_id);
        if let Some(b) = &self.bar
            && !late
        {
            b.inc(1);
            // Whom the rest wait for is told again within a few seconds.
            b.set_message("");
        }
        if self.options.stream {
            for text in self.live.rest(&record) {
                self.say(text);
            }
        }
        if self.options.poll || self.options.stream {
            let line = status_line(&record);
            self.say(if late {
                format!("Late result: {line}")
            } else {
                line
            });
        }
        // Kept for the summary: states, infos and each error's first line (a long run's
        // outputs need not stay in memory).
        let mut kept = record;
        for result in kept.results.values_mut() {
            result.stdout = String::new();
            result.stderr = first_line(&result.stderr).to_string();
        }
        self.finished.insert(kept.job_id.clone(), kept);
    }

    /// Whom the jobs wait for: on the bar, or without one a line on stderr once the same
    /// targets were told twice running (a few seconds apart): those the jobs wait on, not a
    /// run in flow.
    fn waiting(&mut self, named: Vec<String>, total: usize) {
        let who = waiting_for(&named, total);
        if let Some(b) = &self.bar {
            b.set_message(format!("waiting for {who}"));
            return;
        }
        let now = (named, total);
        if self.last_waiting.as_ref() == Some(&now) && self.said_waiting.as_ref() != Some(&now) {
            crate::output::err_line(format!("Still waiting for {who}"));
            self.said_waiting = Some(now.clone());
        }
        self.last_waiting = Some(now);
    }
}

/// What a followed run came to, once every job is done: the failed results (with `--check`),
/// one line of counts and a word on write-offs, on stderr; the exit code (0: every job
/// succeeded).
fn summarize(
    done: &BTreeMap<String, JobRecord>,
    jobs: usize,
    expected: u64,
    check: bool,
    run_id: &str,
) -> Result<(), Failure> {
    let mut failed: Vec<&JobRecord> = done
        .values()
        .filter(|r| r.status() == JobStatus::Failed)
        .collect();
    // In the run's order, which says which step failed first (ids are random).
    failed.sort_by_key(|r| (r.submission, r.position));
    if check && !failed.is_empty() {
        output::line("FAILED JOBS");
        for r in &failed {
            for (node, result) in r
                .results
                .iter()
                .filter(|(_, x)| x.state == ResultState::Failed)
            {
                let why = reason(result);
                output::line(format_args!(
                    "  {}  {}  on {node}: {}",
                    r.job_id,
                    described(r),
                    why
                ));
            }
        }
    }
    // Over without every result (the node knows no more of them, as for a record whose
    // submitter lost track of it): neither succeeded nor failed.
    let incomplete = done
        .values()
        .filter(|r| r.status() == JobStatus::Processing)
        .count();
    let ok = done.len() - failed.len() - incomplete;
    // A job that succeeded within the cache's time on a node is not run there again: said,
    // or a one-off command seems to have run when it did not.
    let skipped = done
        .values()
        .flat_map(|r| r.results.values())
        .filter(|x| x.state == ResultState::Skipped)
        .count();
    let skipped = match skipped {
        0 => String::new(),
        n => format!(
            "; {n} skipped: succeeded there within the cache's time (--ignore-cache runs them again)"
        ),
    };
    let incomplete = match incomplete {
        0 => String::new(),
        n => format!(", {n} without every result"),
    };
    crate::output::err_line(format!(
        "jobs: {ok} succeeded, {} failed{incomplete} ({} of {} results{skipped})",
        failed.len(),
        done.values().map(|r| r.results.len()).sum::<usize>(),
        expected
    ));
    // Failures that are only write-offs may still turn into results: say so.
    let written_off: BTreeSet<&str> = done
        .values()
        .flat_map(|r| r.results.iter())
        .filter(|(_, x)| x.is_write_off())
        .map(|(node, _)| node.as_str())
        .collect();
    if !written_off.is_empty() {
        let count = done
            .values()
            .flat_map(|r| r.results.values())
            .filter(|x| x.is_write_off())
            .count();
        let what = match count {
            1 => "1 failed result is a target written off as unreachable".to_string(),
            n => format!("{n} failed results are targets written off as unreachable"),
        };
        crate::output::err_line(format!(
            "{what} ({}): should they report later, their results replace these; \
             `manage --follow-run {}` shows the jobs as they are then",
            written_off.into_iter().collect::<Vec<_>>().join(", "),
            run_id
        ));
    }
    if ok == jobs {
        Ok(())
    } else {
        Err(Failure::Silent(1))
    }
}

/// `n1, n2 (2 targets)`, `n1, ..., n8 and 12 more (20 targets)`: whom the jobs wait for.
fn waiting_for(named: &[String], total: usize) -> String {
    let more = match total.saturating_sub(named.len()) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    let targets = match total {
        1 => "1 target".to_string(),
        n => format!("{n} targets"),
    };
    format!("{}{more} ({targets})", named.join(", "))
}

/// How many reasons a `--poll` line gives for a failed job (each with the targets that failed
/// so), and how many targets it names for one reason.
const REASONS_SHOWN: usize = 10;
const NAMES_SHOWN: usize = 5;

/// `n1, n2, n3`, or `n1, n2, n3, n4, n5 and 7 more`.
fn some_names(names: &[&str]) -> String {
    let shown = names[..names.len().min(NAMES_SHOWN)].join(", ");
    match names.len().saturating_sub(NAMES_SHOWN) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// Why a job failed on a node, in one line: what the node says (`exit code 1: CMD`, `Failed
/// to set ownership of DIR`) and the first line of what the job wrote to stderr.
fn reason(result: &NodeResult) -> String {
    let line = |s| {
        let line = crate::render::clipped(first_line(s), SHOWN_MAX);
        crate::render::shown(&line, false).into_owned()
    };
    match (line(&result.info).as_str(), line(&result.stderr).as_str()) {
        (info, "") => info.to_string(),
        ("", err) => err.to_string(),
        (info, err) if info == err => info.to_string(),
        (info, err) => format!("{info} ({err})"),
    }
}

/// At most this much of a definition or a reason shows on a `--poll` line.
const SHOWN_MAX: usize = 1024;

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// The job as written, after its entry's name if it has one: `[web] RUN: echo hi`. On one
/// line: a command written over several lines shows its line breaks as `\n`.
fn described(r: &JobRecord) -> String {
    let definition =
        crate::render::clipped(r.definition.trim_end(), SHOWN_MAX).replace('\n', "\\n");
    match &r.parent_name {
        Some(name) => format!("[{name}] {definition}"),
        None => definition,
    }
}

/// `Job Success: ID (RUN: echo hi) 3/3 nodes` and the like.
fn status_line(r: &JobRecord) -> String {
    let skipped = r
        .results
        .values()
        .filter(|x| x.state == ResultState::Skipped)
        .count();
    let skipped = if skipped > 0 {
        format!(", {skipped} skipped")
    } else {
        String::new()
    };
    match r.status() {
        JobStatus::Failed => {
            let failed = r.failures();
            // Nodes that failed alike share their reason: `n1, n2, n3: exit code 3: CMD`.
            let mut alike: Vec<(String, Vec<&str>)> = Vec::new();
            let mut group_of: std::collections::HashMap<String, usize> = Default::default();
            for (n, x) in r
                .results
                .iter()
                .filter(|(_, x)| x.state == ResultState::Failed)
            {
                let why = reason(x);
                match group_of.get(&why) {
                    Some(&at) => alike[at].1.push(n),
                    None => {
                        group_of.insert(why.clone(), alike.len());
                        alike.push((why, vec![n]));
                    }
                }
            }
            let mut reasons: Vec<String> = alike
                .iter()
                .take(REASONS_SHOWN)
                .map(|(why, names)| format!("{}: {why}", some_names(names)))
                .collect();
            // Thousands of failed targets would make one line of megabytes.
            if alike.len() > REASONS_SHOWN {
                let rest: usize = alike[REASONS_SHOWN..].iter().map(|(_, n)| n.len()).sum();
                reasons.push(format!(
                    "and {rest} more (`manage --job-info {}` lists them)",
                    r.job_id
                ));
            }
            format!(
                "Job Failed: {} ({}) failed on {}/{} nodes - {}",
                r.job_id,
                described(r),
                failed.len(),
                r.nodes.len(),
                reasons.join("; ")
            )
        }
        JobStatus::Processing => format!(
            "Job Incomplete: {} ({}) {}/{} nodes reported ({} failed){skipped}",
            r.job_id,
            described(r),
            r.results.len(),
            r.nodes.len(),
            r.failures().len()
        ),
        JobStatus::Success => format!(
            "Job Success: {} ({}) {}/{} nodes{skipped}",
            r.job_id,
            described(r),
            r.successes().len(),
            r.nodes.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_right_after_a_node_option_is_taken_for_a_second_node() {
        let argv = |words: &str| {
            words
                .split(' ')
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
        };
        let before =
            |file: &str, words: &str| node_option_before(std::path::Path::new(file), argv(words));
        assert_eq!(
            before("b", "dm orchestrate f.yaml --target a b"),
            Some(("--target", "a".into()))
        );
        assert_eq!(
            before("b", "dm orchestrate f.yaml --restrict=3f b"),
            Some(("--restrict", "3f".into()))
        );
        // The word may come earlier as another option's value.
        assert_eq!(
            before("n2", "dm --state-dir n2 orchestrate f.yaml --target n1 n2"),
            Some(("--target", "n1".into()))
        );
        // What looks like a file, or like no fingerprint after --restrict, is left alone.
        assert_eq!(
            before("deploy.yaml", "dm orchestrate --target n1 deploy.yaml"),
            None
        );
        assert_eq!(
            before("./deploy", "dm orchestrate --target n1 ./deploy"),
            None
        );
        assert_eq!(
            before("site", "dm orchestrate f.yaml --restrict 3f site"),
            None
        );
        // A file given first, or after a flag or another file, follows no node option.
        assert_eq!(before("f.yaml", "dm orchestrate f.yaml --target a b"), None);
        assert_eq!(before("b", "dm orchestrate --poll b"), None);
        assert_eq!(before("b", "dm orchestrate a.yaml b"), None);
        assert_eq!(before("b", "dm orchestrate --target --poll b"), None);
    }

    #[test]
    fn a_failure_names_what_the_node_says_and_what_the_job_wrote() {
        let failed = |info: &str, stderr: &str| NodeResult {
            state: ResultState::Failed,
            stdout: String::new(),
            stderr: stderr.into(),
            info: info.into(),
            execution_secs: 0.0,
            roundtrip_secs: 0.0,
            finished_unix_ms: 0,
        };
        assert_eq!(
            reason(&failed(
                "Failed to set ownership of /srv/x",
                "no user 'nosuch' on this node\nmore"
            )),
            "Failed to set ownership of /srv/x (no user 'nosuch' on this node)"
        );
        assert_eq!(
            reason(&failed("exit code 1: false", "")),
            "exit code 1: false"
        );
        assert_eq!(reason(&failed("", "boom")), "boom");
        assert_eq!(reason(&failed("exit code 1: x", "x")), "exit code 1: x (x)");
        assert_eq!(reason(&failed("boom", "boom")), "boom");
    }

    /// A command written over several lines keeps its job's status on one line.
    #[test]
    fn whom_the_jobs_wait_for_reads_well() {
        let names = |n: usize| (1..=n).map(|i| format!("n{i}")).collect::<Vec<_>>();
        assert_eq!(waiting_for(&names(1), 1), "n1 (1 target)");
        assert_eq!(waiting_for(&names(2), 2), "n1, n2 (2 targets)");
        assert_eq!(
            waiting_for(&names(8), 20),
            "n1, n2, n3, n4, n5, n6, n7, n8 and 12 more (20 targets)"
        );
    }

    #[test]
    fn a_job_written_over_lines_is_described_on_one() {
        let r = JobRecord {
            job_id: "j".into(),
            parent_name: Some("web".into()),
            definition: "RUN: printf 'a\\n'\necho b\n".into(),
            nodes: vec![],
            ..JobRecord::default()
        };
        assert_eq!(described(&r), r"[web] RUN: printf 'a\n'\necho b");
        assert_eq!(status_line(&r).lines().count(), 1, "{}", status_line(&r));
    }

    /// Without `--poll`, each job is listed on one line, whatever its definition spans.
    #[test]
    fn a_job_written_over_lines_is_listed_on_one() {
        let j = node::control::JobSummary {
            job_id: "j1".into(),
            parent_id: "p".into(),
            definition: "RUN: |\n  echo a\n  echo b\n".into(),
            fingerprint: "f".into(),
            targets: vec!["n1".into(), "n2".into()],
        };
        assert_eq!(listed(&j), r"j1  RUN: |\n  echo a\n  echo b  [n1, n2]");
        let long = node::control::JobSummary {
            definition: format!("RUN: {}\necho", "x".repeat(2 * SHOWN_MAX)),
            ..j
        };
        let line = listed(&long);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.len() < SHOWN_MAX + 200, "{}", line.len());
        assert!(line.starts_with("j1  RUN: x") && line.ends_with("  [n1, n2]"));
    }

    /// A job over without every result (what the node knows is all there is) is not counted
    /// a success, and the command does not exit 0 for it.
    #[test]
    fn a_job_without_every_result_is_not_a_success() {
        let node = |n: &str| node::records::NodeRef {
            name: n.into(),
            peer_id: format!("peer-{n}"),
        };
        let ok = NodeResult {
            state: ResultState::Success,
            stdout: String::new(),
            stderr: String::new(),
            info: String::new(),
            execution_secs: 0.0,
            roundtrip_secs: 0.0,
            finished_unix_ms: 0,
        };
        let r = JobRecord {
            job_id: "j".into(),
            definition: "RUN: true".into(),
            nodes: vec![node("n1"), node("n2")],
            results: BTreeMap::from([("n1".to_string(), ok)]),
            ..JobRecord::default()
        };
        assert_eq!(
            status_line(&r),
            "Job Incomplete: j (RUN: true) 1/2 nodes reported (0 failed)"
        );
        let done = BTreeMap::from([("j".to_string(), r)]);
        assert!(summarize(&done, 1, 2, false, "run").is_err());
    }

    /// A job failed on thousands of targets names the first few, and how to see the rest.
    #[test]
    fn a_job_failed_on_many_targets_names_a_few() {
        let names: Vec<String> = (0..5000).map(|i| format!("n{i:04}")).collect();
        let failed = NodeResult {
            state: ResultState::Failed,
            stdout: String::new(),
            stderr: String::new(),
            info: "exit code 1: false".into(),
            execution_secs: 0.0,
            roundtrip_secs: 0.0,
            finished_unix_ms: 0,
        };
        let r = JobRecord {
            job_id: "j".into(),
            definition: "RUN: false".into(),
            nodes: names
                .iter()
                .map(|n| node::records::NodeRef {
                    name: n.clone(),
                    peer_id: format!("peer-{n}"),
                })
                .collect(),
            results: names.iter().map(|n| (n.clone(), failed.clone())).collect(),
            ..JobRecord::default()
        };
        let line = status_line(&r);
        assert_eq!(
            line,
            "Job Failed: j (RUN: false) failed on 5000/5000 nodes - n0000, n0001, n0002, \
             n0003, n0004 and 4995 more: exit code 1: false"
        );
        // Each its own reason: ten of them, and how many more.
        let mut r = r;
        for (i, x) in r.results.values_mut().enumerate() {
            x.info = format!("exit code {i}: false");
        }
        let line = status_line(&r);
        assert!(line.len() < 1000, "{} bytes", line.len());
        assert!(
            line.starts_with(
                "Job Failed: j (RUN: false) failed on 5000/5000 nodes - n0000: exit code 0: false; "
            ),
            "{line}"
        );
        assert!(
            line.ends_with("; and 4990 more (`manage --job-info j` lists them)"),
            "{line}"
        );
    }

    fn rewrite(args: &[&str]) -> Vec<String> {
        exec_argv(args.iter().map(Into::into).collect())
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn an_exec_option_with_a_typo_is_refused_not_given_to_the_job() {
        let argv = |args: &[&str]| args.iter().map(Into::into).collect::<Vec<_>>();
        for (typo, meant) in [
            ("--taget", "--target"),
            ("--targets", "--target"),
            ("--tagret", "--target"),
            ("--restict", "--restrict"),
            ("--state-dirr", "--state-dir"),
        ] {
            let e = exec_argv(argv(&["dm", "exec", "--verb", "RUN", "echo x", typo, "n1"]))
                .unwrap_err();
            assert!(e.contains(&format!("did you mean {meant}?")), "{typo}: {e}");
        }
        // Anywhere: a missed --finger-print would run what it was to show.
        let e = exec_argv(argv(&[
            "dm",
            "exec",
            "--verb",
            "RUN",
            "--fingerprint",
            "true",
        ]))
        .unwrap_err();
        assert!(e.contains("did you mean --finger-print?"), "{e}");
        // At the end, where exec's own options are added: the job would run with the typo.
        for (typo, meant) in [
            ("--pol", "--poll"),
            ("--polll", "--poll"),
            ("--Poll", "--poll"),
            ("--strem", "--stream"),
            ("--chek", "--check"),
            ("--check2", "--check"),
            ("--ignore-cach", "--ignore-cache"),
            ("--force-asyn", "--force-async"),
        ] {
            let e = exec_argv(argv(&["dm", "exec", "--verb", "RUN", "echo x", typo])).unwrap_err();
            assert!(e.contains(&format!("did you mean {meant}?")), "{typo}: {e}");
        }
        // One dash short, at the end.
        for (typo, meant) in [
            ("-poll", "--poll"),
            ("-Stream", "--stream"),
            ("-target", "--target"),
        ] {
            let e = exec_argv(argv(&["dm", "exec", "--verb", "RUN", "echo x", typo])).unwrap_err();
            assert!(e.contains(&format!("did you mean {meant}?")), "{typo}: {e}");
        }
        for args in [
            &[
                "dm",
                "exec",
                "--verb",
                "RUN",
                "terraform apply",
                "-target=module.a",
            ][..],
            &["dm", "exec", "--verb", "RUN", "terraform fmt -check"],
            &["dm", "exec", "--verb", "RUN", "terraform", "fmt", "-check"],
            &["dm", "exec", "--verb", "RUN", "x", "-poll", "y"],
            &["dm", "exec", "--verb", "RUN", "find . -type f"],
            &["dm", "exec", "--verb", "RUN", "--", "echo", "-poll"],
        ] {
            assert!(exec_argv(argv(args)).is_ok(), "{args:?}");
        }
        // The job's own options, and a command's, are the job's (near misses of --poll too);
        // after `--` nothing is checked.
        for args in [
            &["dm", "exec", "--verb", "RUN", "ls", "--all"][..],
            &["dm", "exec", "--verb", "RUN", "docker build --pull", "."],
            &["dm", "exec", "--verb", "RUN", "rbd ls", "--pool", "x"],
            &["dm", "exec", "--verb", "RUN", "--timeout", "5", "sleep 1"],
            &["dm", "exec", "--verb", "RUN", "--", "echo", "--taget"],
        ] {
            assert!(exec_argv(argv(args)).is_ok(), "{args:?}");
        }
        assert!(one_typo("--ab", "--ba") && !one_typo("--abc", "--abc"));
        assert!(!one_typo("--all", "--poll") && one_typo("--pll", "--poll"));
    }

    /// Directord's `exec --verb RUN 'cmd' --target a b` names two nodes: here the `b` would be
    /// a word of the command, run on `a` alone; it is refused instead.
    #[test]
    fn several_nodes_after_one_target_are_refused_not_run_as_the_job_s_words() {
        let argv = |args: &[&str]| args.iter().map(Into::into).collect::<Vec<_>>();
        let e = exec_argv(argv(&[
            "dm", "exec", "--verb", "RUN", "echo hi", "--target", "a", "b",
        ]))
        .unwrap_err();
        assert!(e.contains("'b' follows `--target a`"), "{e}");
        assert!(e.contains("`--target a --target b`"), "{e}");
        let e = exec_argv(argv(&[
            "dm",
            "exec",
            "--verb",
            "RUN",
            "echo hi",
            "--restrict=ab12",
            "cd34",
        ]))
        .unwrap_err();
        assert!(e.contains("'cd34' follows `--restrict=ab12`"), "{e}");
        // The job's options before its target, its words after it, and exec's own options
        // after the job's words, are as they were.
        for args in [
            &[
                "dm",
                "exec",
                "--verb",
                "RUN",
                "--skip-cache",
                "--target",
                "a",
                "echo hi",
            ][..],
            &["dm", "exec", "--verb", "RUN", "--target", "a", "echo", "hi"],
            &[
                "dm", "exec", "--verb", "RUN", "echo hi", "--target", "a", "--target", "b",
                "--poll",
            ],
            &[
                "dm",
                "exec",
                "--verb",
                "JOB_WAIT",
                "abcdef0123",
                "--target",
                "a",
                "--identity",
                "b",
            ],
        ] {
            assert!(exec_argv(argv(args)).is_ok(), "{args:?}");
        }
    }

    /// `-h` after the job's first argument is the job's (`df -h`); before it, exec's help.
    #[test]
    fn help_after_the_job_s_first_argument_is_the_job_s() {
        assert_eq!(
            rewrite(&["dm", "exec", "--verb", "RUN", "df", "-h", "--poll"]),
            vec!["dm", "exec", "--verb", "RUN", "--poll", "--", "df", "-h"]
        );
        assert_eq!(
            rewrite(&["dm", "exec", "--verb", "RUN", "ls", "--help"]),
            vec!["dm", "exec", "--verb", "RUN", "--", "ls", "--help"]
        );
        assert_eq!(rewrite(&["dm", "exec", "-h"]), vec!["dm", "exec", "-h"]);
        assert_eq!(
            rewrite(&["dm", "exec", "--verb", "RUN", "--help"]),
            vec!["dm", "exec", "--verb", "RUN", "--help"]
        );
    }

    #[test]
    fn exec_options_may_stand_anywhere() {
        assert_eq!(
            rewrite(&[
                "dm",
                "exec",
                "--verb",
                "RUN",
                "--skip-cache",
                "uname -a",
                "--poll",
                "--target=a"
            ]),
            vec![
                "dm",
                "exec",
                "--verb",
                "RUN",
                "--poll",
                "--target=a",
                "--",
                "--skip-cache",
                "uname -a"
            ]
        );
        assert_eq!(
            rewrite(&[
                "dm",
                "--state-dir",
                "/s",
                "exec",
                "--timeout",
                "5",
                "--verb",
                "RUN",
                "sleep 1"
            ]),
            vec![
                "dm",
                "--state-dir",
                "/s",
                "exec",
                "--verb",
                "RUN",
                "--",
                "--timeout",
                "5",
                "sleep 1"
            ]
        );
        // After `--`, everything is the job's.
        assert_eq!(
            rewrite(&["dm", "exec", "--verb", "ECHO", "--", "--poll"]),
            vec!["dm", "exec", "--verb", "ECHO", "--", "--poll"]
        );
        // Other commands are left alone, even when a value is "exec".
        assert_eq!(
            rewrite(&["dm", "status", "exec"]),
            vec!["dm", "status", "exec"]
        );
    }
}
