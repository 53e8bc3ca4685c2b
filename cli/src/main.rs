//! `directord-mesh`: the operator's command.
//!
//! `join` runs this machine's daemon; every other subcommand talks to that daemon over its
//! control socket (found through the global `--state-dir`). Exit codes: 0 success, 1 failure,
//! 2 bad input (arguments, config files, tokens).

mod demo;
mod export_file;
mod join;
mod live;
mod manage;
mod output;
mod render;
mod status;
mod submit;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

const ABOUT: &str =
    "Run orchestrations on many machines through a peer mesh with no central server.";

const LONG_ABOUT: &str = "\
Run orchestrations on many machines through a peer mesh with no central server.

Every machine runs one daemon (`directord-mesh join`). The first one creates a mesh and prints
the single command that joins another machine to it. From then on any node can run jobs on the
mesh (`exec`, `orchestrate`), report on it (`status`) and show the jobs it submitted, their
results and the cache (`manage`).

Quick look on one machine:  directord-mesh demo --nodes 5";

const AFTER_HELP: &str =
    "Exit codes: 0 success; 1 a job failed, a target was unreachable, or the daemon could not be
reached or could not do what was asked; 2 bad input (arguments, orchestration and config
files, tokens). `exec` and `orchestrate` without --poll, --stream or --check print the job ids
and exit 0 once the jobs are submitted, whatever the jobs then do.";

const MANAGE_AFTER_HELP: &str =
    "Exit codes: 0 success; 1 the daemon could not be reached or could not do what was asked
(and for --follow-run, as for exec: a job failed or a target was unreachable); 2 bad input
(arguments, an id no job or run has). A daemon that has not answered within 60 s (15 s for
--list-nodes and --export-nodes, as for status) is taken for stopped or stuck (exit 1).";

#[derive(Parser, Debug)]
#[command(
    name = "directord-mesh",
    bin_name = "directord-mesh",
    version = node::VERSION,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
struct Cli {
    /// State directory of this machine's daemon: identity, mesh key, join token, control socket.
    /// Default: /var/lib/directord-mesh as root, else $XDG_STATE_HOME/directord-mesh
    /// (~/.local/state/directord-mesh). [env: DIRECTORD_MESH_STATE_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run this machine's daemon in the foreground, creating a mesh or joining one.
    #[command(long_about = join::LONG_ABOUT)]
    Join(join::JoinArgs),
    /// Run one job on the mesh from this node: `exec --verb RUN 'uname -a' --poll`.
    #[command(
        after_help = AFTER_HELP,
        override_usage = "directord-mesh exec [OPTIONS] --verb <VERB> [ARGS]... [-- <ARGS>...]"
    )]
    Exec(submit::ExecArgs),
    /// Run orchestration files on the mesh from this node.
    #[command(after_help = AFTER_HELP)]
    Orchestrate(submit::OrchestrateArgs),
    /// Show this node and every member of the mesh as this node sees it.
    Status(StatusArgs),
    /// Operator views of the mesh (Directord's `manage`).
    #[command(after_help = MANAGE_AFTER_HELP)]
    Manage(ManageArgs),
    /// Start a real mesh of N daemons on this machine and show it; Ctrl-C stops it.
    #[command(long_about = demo::LONG_ABOUT)]
    Demo(demo::DemoArgs),
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// Print JSON: {"self": {...}, "nodes": [...]}.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("action").required(true).multiple(false)))]
struct ManageArgs {
    /// List the members of the mesh (the same table as `status`).
    #[arg(long, group = "action")]
    list_nodes: bool,

    /// List the jobs this node submitted.
    #[arg(long, group = "action")]
    list_jobs: bool,

    /// With --list-jobs: only jobs that succeeded (on every node), failed (on some node, even
    /// while others still run them) or are still processing.
    #[arg(long, value_enum)]
    filter: Option<manage::Filter>,

    /// With --list-jobs: only the N newest jobs (of those --filter keeps), oldest first.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..))]
    last: Option<u32>,

    /// One job's record, node by node (`last` for the newest; the start of an id will do);
    /// for a job still running, how this node sees each node it waits for.
    #[arg(long, group = "action", value_name = "ID", value_parser = manage::record_id)]
    job_info: Option<String>,

    /// Follow one run's jobs again until every result is in, as `--poll --check` does (`last`
    /// for the newest run; a run id, a job or parent id of the run, or the start of one that
    /// fits one run only, will do). For a run whose command was stopped or whose node
    /// restarted meanwhile; exit code as for exec.
    #[arg(long, group = "action", value_name = "ID", value_parser = manage::record_id)]
    follow_run: Option<String>,

    /// Forget every job record on this node, but those of runs still waiting for results
    /// (all their jobs, those over too).
    #[arg(long, group = "action")]
    purge_jobs: bool,

    /// Write every job record to FILE (YAML for .yaml/.yml, else JSON), readable by its
    /// owner only; a file there is replaced (and said to be); never into the state directory.
    /// `-` writes JSON to standard output (what was exported is then said on standard error).
    #[arg(long, group = "action", value_name = "FILE")]
    export_jobs: Option<PathBuf>,

    /// Write every member of the mesh, as this node sees it, to FILE (YAML for .yaml/.yml,
    /// else JSON; the rows of `manage --list-nodes --json`), as `--export-jobs` writes.
    #[arg(long, group = "action", value_name = "FILE")]
    export_nodes: Option<PathBuf>,

    /// Print this node's cache: job and parent results, args, envs.
    #[arg(long, group = "action")]
    dump_cache: bool,

    /// Timing analysis of one job (`last` for the newest; the start of an id will do).
    #[arg(long, group = "action", value_name = "ID", value_parser = manage::record_id)]
    analyze_job: Option<String>,

    /// Timing analysis of every job of one parent (`last` for the parent of the newest job; the
    /// start of an id will do).
    #[arg(long, group = "action", value_name = "ID", value_parser = manage::record_id)]
    analyze_parent: Option<String>,

    /// Print JSON instead of a table or a sentence (listings, job info, analyses, and what a
    /// purge or an export did; --dump-cache always prints JSON; an export's file is JSON or
    /// YAML by its extension).
    #[arg(long)]
    json: bool,
}

/// An error that ends the command, with the exit code it deserves.
#[derive(Debug)]
pub enum Failure {
    /// Bad input: exit code 2.
    Input(String),
    /// Anything else: exit code 1.
    Runtime(String),
    /// Already reported on the terminal: just this exit code.
    Silent(u8),
}

impl Failure {
    pub fn runtime(e: impl std::fmt::Display) -> Self {
        Failure::Runtime(e.to_string())
    }
}

/// The state directory every subcommand but `demo` uses: the flag, else the environment, else
/// the default (which a user without a home has none of: bad input, asking for the flag).
fn state_dir(flag: Option<PathBuf>) -> Result<PathBuf, Failure> {
    let given = flag.or_else(|| {
        std::env::var_os(node::config::ENV_STATE_DIR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    match given {
        Some(dir) => Ok(dir),
        None => node::config::default_state_dir(
            |k| std::env::var(k).ok(),
            nix::unistd::geteuid().is_root(),
            node::config::passwd_home,
        )
        .map_err(Failure::Input),
    }
}

/// `join`'s options whose value may be written negative (`--stop-grace -5s`), to be refused by
/// their own check rather than taken for unknown options.
const JOIN_DURATIONS: [&str; 4] = [
    "--heartbeat-interval",
    "--blob-retention",
    "--record-retention",
    "--stop-grace",
];

/// The subcommand of a command line: its first word after the global options.
fn subcommand(argv: &[std::ffi::OsString]) -> Option<&str> {
    let mut words = argv.iter().skip(1).filter_map(|a| a.to_str());
    loop {
        match words.next()? {
            "--state-dir" => {
                words.next()?;
            }
            global if global.starts_with("--state-dir=") => {}
            word => return Some(word),
        }
    }
}

fn main() -> ExitCode {
    let argv = match submit::exec_argv(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            crate::output::err_line(format!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    let argv = match subcommand(&argv) {
        Some("join") => node::config::negative_values_joined(argv.into_iter(), &JOIN_DURATIONS),
        _ => argv,
    };
    let cli = Cli::parse_from(argv);
    let result = match cli.command {
        Command::Demo(args) if cli.state_dir.is_some() || args.state_dir_given() => {
            Err(Failure::Input(
                "demo runs its own daemons, each with its own state directory: use `demo --dir \
                 DIR` instead of --state-dir"
                    .into(),
            ))
        }
        Command::Demo(args) => demo::run(args),
        command => state_dir(cli.state_dir).and_then(|dir| run_on(dir, command)),
    };
    match result {
        // What it printed did not all reach its file (reported as it happened).
        Ok(()) if output::failed() => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(msg)) => {
            crate::output::err_line(format!("error: {msg}"));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            crate::output::err_line(format!("error: {msg}"));
            ExitCode::from(1)
        }
        Err(Failure::Silent(code)) => ExitCode::from(code),
    }
}

/// Runs `command`, one of those that use the state directory `state_dir`.
fn run_on(state_dir: PathBuf, command: Command) -> Result<(), Failure> {
    match command {
        Command::Join(args) => join::run(state_dir, args),
        Command::Status(args) => status::run(&state_dir, status::View::Status { json: args.json }),
        Command::Exec(args) => submit::exec(state_dir, args),
        Command::Orchestrate(args) => submit::orchestrate(state_dir, args),
        Command::Manage(args) => manage_command(&state_dir, args),
        Command::Demo(args) => demo::run(args),
    }
}

fn manage_command(state_dir: &std::path::Path, args: ManageArgs) -> Result<(), Failure> {
    use manage::Action;
    if args.filter.is_some() && !args.list_jobs {
        return Err(Failure::Input(
            "--filter applies only to --list-jobs (e.g. manage --list-jobs --filter failed)".into(),
        ));
    }
    if args.last.is_some() && !args.list_jobs {
        return Err(Failure::Input(
            "--last applies only to --list-jobs (e.g. manage --list-jobs --last 20)".into(),
        ));
    }
    let action = if args.list_nodes {
        return status::run(state_dir, status::View::Nodes { json: args.json });
    } else if let Some(file) = args.export_nodes {
        let json = args.json;
        return status::run(state_dir, status::View::ExportNodes { file, json });
    } else if args.list_jobs {
        Action::ListJobs {
            filter: args.filter,
            last: args.last.map(|n| n as usize),
        }
    } else if let Some(id) = args.job_info {
        Action::JobInfo(id)
    } else if let Some(id) = args.follow_run {
        if args.json {
            return Err(Failure::Input(
                "--follow-run prints status lines, not JSON (manage --job-info ID --json gives \
                 a record)"
                    .into(),
            ));
        }
        return submit::follow_run(state_dir.to_path_buf(), &id);
    } else if args.purge_jobs {
        Action::PurgeJobs
    } else if let Some(file) = args.export_jobs {
        Action::ExportJobs(file)
    } else if args.dump_cache {
        Action::DumpCache
    } else if let Some(id) = args.analyze_job {
        Action::AnalyzeJob(id)
    } else if let Some(id) = args.analyze_parent {
        Action::AnalyzeParent(id)
    } else {
        return Err(Failure::Input(
            "manage needs an action; see manage --help".into(),
        ));
    };
    manage::run(state_dir, action, args.json)
}

/// A small runtime for commands that only talk to the local daemon.
fn client_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the async runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subcommand_is_the_first_word_after_the_global_options() {
        let argv = |line: &str| -> Vec<std::ffi::OsString> {
            line.split(' ').map(std::ffi::OsString::from).collect()
        };
        assert_eq!(subcommand(&argv("dm join --stop-grace -5s")), Some("join"));
        assert_eq!(subcommand(&argv("dm --state-dir join exec")), Some("exec"));
        assert_eq!(subcommand(&argv("dm --state-dir=/s join")), Some("join"));
        assert_eq!(subcommand(&argv("dm --state-dir")), None);
        assert_eq!(subcommand(&argv("dm")), None);
    }
}
