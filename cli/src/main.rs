//! `directord-mesh`: the operator's command.
//!
//! `join` runs this machine's daemon; every other subcommand talks to that daemon over its
//! control socket (found through the global `--state-dir`). Exit codes: 0 success, 1 failure,
//! 2 bad input (arguments, config files, tokens).

mod demo;
mod join;
mod render;
mod status;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

const ABOUT: &str =
    "Run orchestrations on many machines through a peer mesh with no central server.";

const LONG_ABOUT: &str = "\
Run orchestrations on many machines through a peer mesh with no central server.

Every machine runs one daemon (`directord-mesh join`). The first one creates a mesh and prints
the single command that joins another machine to it. Any node can then report on the mesh
(`status`) and, as the issues land, submit work to it.

Quick look on one machine:  directord-mesh demo --nodes 5";

#[derive(Parser, Debug)]
#[command(name = "directord-mesh", version, about = ABOUT, long_about = LONG_ABOUT)]
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
    /// Show this node and every member of the mesh as this node sees it.
    Status(StatusArgs),
    /// Operator views of the mesh (Directord's `manage`).
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

    /// Print JSON instead of a table.
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
}

impl Failure {
    pub fn runtime(e: impl std::fmt::Display) -> Self {
        Failure::Runtime(e.to_string())
    }
}

/// The state directory every subcommand uses: the flag, else the environment, else the default.
fn state_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| {
        std::env::var_os(node::config::ENV_STATE_DIR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(|| {
        node::config::default_state_dir(|k| std::env::var(k).ok(), nix::unistd::geteuid().is_root())
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let state_dir = state_dir(cli.state_dir);
    let result = match cli.command {
        Command::Join(args) => join::run(state_dir, args),
        Command::Status(args) => status::run(&state_dir, status::View::Status { json: args.json }),
        Command::Manage(args) if args.list_nodes => {
            status::run(&state_dir, status::View::Nodes { json: args.json })
        }
        Command::Manage(_) => Err(Failure::Input(
            "manage needs an action, e.g. --list-nodes".into(),
        )),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

/// A small runtime for commands that only talk to the local daemon.
fn client_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the async runtime: {e}")))
}
