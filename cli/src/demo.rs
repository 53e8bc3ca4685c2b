//! `directord-mesh demo`: a real mesh of N daemons on this machine, for a first look.
//!
//! Each daemon is a child process running `directord-mesh join` on 127.0.0.1 with its own state
//! directory under one temporary directory. The first creates the mesh, the others join it with
//! its token. The demo waits until every daemon sees every other one alive, prints the mesh as
//! the first daemon sees it, runs an orchestration through it (streaming each node's output),
//! and keeps it running until Ctrl-C, when it stops every daemon cleanly and removes the
//! temporary directory.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use clap::Args;
use tokio::process::{Child, Command};

use crate::{Failure, output, render, status};

pub const LONG_ABOUT: &str = "\
Start a real mesh of N daemons on this machine and show it.

Each daemon is a separate `directord-mesh join` process listening on 127.0.0.1, with its own
state directory and log under one temporary directory. The first daemon creates the mesh; the
others join it with its token. Once every daemon sees all N alive, the demo prints the mesh as
the first daemon sees it, runs FILE through the mesh from the first daemon (each node's output
streams live), shows how to talk to any daemon yourself, then keeps running until Ctrl-C, when
it stops every daemon (each tells the mesh it is leaving) and removes the directory. A Ctrl-C
before that (while the mesh forms or the orchestration runs) stops and removes them the same
way, and the demo exits with 130.";

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How many daemons to start (1 to 200).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..=200))]
    nodes: u16,

    /// Run the orchestration, then stop the mesh and exit with its outcome, instead of
    /// keeping the mesh for you to try until Ctrl-C.
    #[arg(long)]
    exit: bool,

    /// Put the daemons' state directories and logs in DIR and keep them (default: a temporary
    /// directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Orchestration to run through the mesh once it has formed (default: examples/hello.yaml,
    /// or the same built-in example when that file is not here).
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,

    /// Shadows the global --state-dir, which means nothing here: hidden from this help, and
    /// refused with a pointer to --dir when given.
    #[arg(long, hide = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl DemoArgs {
    /// Whether `demo --state-dir` was given (refused: the demo's daemons have their own).
    pub fn state_dir_given(&self) -> bool {
        self.state_dir.is_some()
    }
}

/// The default orchestration, built in for when `examples/hello.yaml` is not at hand.
const HELLO: &str = include_str!("../../examples/hello.yaml");

/// How long the demo waits for the mesh to form before giving up.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

struct Daemon {
    name: String,
    state_dir: PathBuf,
    child: Child,
}

pub fn run(args: DemoArgs) -> Result<(), Failure> {
    // A file that cannot run is said now, before any daemon starts.
    if let Some(file) = &args.file
        && let Err(e) = jobs::orchestration::parse_file(file)
        && !e.is_help
    {
        return Err(Failure::Input(e.to_string()));
    }
    let (root, _temp) = match &args.dir {
        Some(dir) => {
            // A path that cannot be a directory is a bad --dir (exit 2), not a failure.
            std::fs::create_dir_all(dir).map_err(|e| {
                Failure::Input(format!("--dir {}: cannot create it: {e}", dir.display()))
            })?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("directord-mesh-demo-")
                .tempdir()
                .map_err(|e| {
                    Failure::Runtime(format!("cannot create a temporary directory: {e}"))
                })?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let exe = std::env::current_exe()
        .map_err(|e| Failure::Runtime(format!("cannot find this program's path: {e}")))?;
    let result = crate::client_runtime()?.block_on(async {
        // Caught from the start: a Ctrl-C while the mesh forms or the orchestration runs stops
        // the daemons and removes the directory like one later (dying of it would leave both).
        let mut stop = StopSignals::new()?;
        let mut daemons = Vec::new();
        let result = tokio::select! {
            result = demo(&exe, &root, &args, &mut daemons) => result,
            () = stop.recv() => {
                output::line_or_skip("");
                output::err_line("interrupted before the demo was over");
                Err(Failure::Silent(INTERRUPTED))
            }
        };
        let result = match result {
            // The mesh is up and the orchestration done: it keeps running for the user.
            Ok(()) if !args.exit => {
                stop.recv().await;
                output::line_or_skip("");
                Ok(())
            }
            other => other,
        };
        stop_all(&mut daemons).await;
        result
    });
    let extra = root.join(EXTRA);
    if let Some(temp) = _temp
        && still_runs(&extra)
    {
        // Removing the directory under a running daemon leaves it without its database and
        // socket, dialing the stopped daemons for ever.
        let kept = temp.keep();
        output::err_line(format!(
            "a daemon you started in {} still runs: {} was kept; stop that daemon (Ctrl-C \
             where it runs), then remove it",
            extra.display(),
            kept.display()
        ));
    }
    result
}

/// The state directory the demo suggests for a node joined by hand.
const EXTRA: &str = "extra";

/// Whether a daemon holds the state directory `dir` (its lock is taken).
fn still_runs(dir: &Path) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let Ok(file) = std::fs::File::open(dir.join("daemon.lock")) else {
        return false;
    };
    Flock::lock(file, FlockArg::LockSharedNonblock)
        .is_err_and(|(_, errno)| errno == nix::errno::Errno::EWOULDBLOCK)
}

async fn demo(
    exe: &Path,
    root: &Path,
    args: &DemoArgs,
    daemons: &mut Vec<Daemon>,
) -> Result<(), Failure> {
    let n = args.nodes as usize;
    let daemons_word = if n == 1 { "daemon" } else { "daemons" };
    output::line_or_skip(format_args!(
        "Starting {n} {daemons_word} on 127.0.0.1 (state and logs in {})",
        root.display()
    ));
    let started = Instant::now();
    daemons.push(spawn(exe, root, "demo-1", None)?);
    wait_until_serving(&mut daemons[0]).await?;
    let token = node::state::read_join_token(&daemons[0].state_dir).map_err(Failure::runtime)?;
    for i in 2..=n {
        daemons.push(spawn(exe, root, &format!("demo-{i}"), Some(&token))?);
    }
    for d in daemons.iter_mut().skip(1) {
        wait_until_serving(d).await?;
    }
    wait_until_formed(daemons, n).await?;
    let seen = if n == 1 {
        "The daemon sees itself alive".to_string()
    } else {
        format!("All {n} daemons see all {n} alive")
    };
    output::line_or_skip(format_args!(
        "{seen}, {:.2} s after the first one started.\n",
        started.elapsed().as_secs_f64()
    ));
    let report = status::fetch(&daemons[0].state_dir).await?;
    output::line_or_skip(format_args!("{}\n", render::status(&report)));
    let file = match &args.file {
        Some(f) => f.clone(),
        None if Path::new("examples/hello.yaml").exists() => PathBuf::from("examples/hello.yaml"),
        None => {
            let f = root.join("hello.yaml");
            std::fs::write(&f, HELLO)
                .map_err(|e| Failure::Runtime(format!("cannot write {}: {e}", f.display())))?;
            f
        }
    };
    output::line_or_skip(format_args!(
        "Running {} through the mesh from {}:\n",
        file.display(),
        daemons[0].name
    ));
    let status = Command::new(exe)
        .arg("--state-dir")
        .arg(&daemons[0].state_dir)
        .arg("orchestrate")
        .arg(&file)
        .arg("--stream")
        // Interrupted, the demo stops the daemons: the watch has nothing left to wait for.
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| Failure::Runtime(format!("cannot run the orchestration: {e}")))?;
    if args.exit {
        return match status.code() {
            Some(0) => Ok(()),
            // It said why above; its exit code is the demo's (2: bad input, 1: a job failed).
            Some(code) => {
                crate::output::err_line(format!(
                    "error: the orchestration did not succeed ({status})"
                ));
                Err(Failure::Silent(u8::try_from(code).unwrap_or(1)))
            }
            None => Err(Failure::Runtime(format!(
                "the orchestration did not succeed ({status})"
            ))),
        };
    }
    // Worth saying only while the mesh keeps running.
    output::line_or_skip("");
    let last = &daemons[n - 1];
    output::line_or_skip("Ask any daemon yourself, e.g.:");
    output::line_or_skip(format_args!(
        "  {} --state-dir {} exec --verb RUN 'uptime' --poll",
        exe.display(),
        last.state_dir.display()
    ));
    output::line_or_skip(format_args!(
        "  {} --state-dir {} manage --list-jobs",
        exe.display(),
        daemons[0].state_dir.display()
    ));
    output::line_or_skip(format_args!(
        "  {} --state-dir {} status",
        exe.display(),
        last.state_dir.display()
    ));
    output::line_or_skip("Join this mesh from another terminal:");
    // The token from its file, not on the command line: it would show in the process list.
    output::line_or_skip(format_args!(
        "  DIRECTORD_MESH_TOKEN=$(cat {}) {} --state-dir {} join --listen 127.0.0.1:0",
        daemons[0].state_dir.join("join-token").display(),
        exe.display(),
        root.join(EXTRA).display()
    ));
    output::line_or_skip("\nThe mesh keeps running; press Ctrl-C to stop it.");
    Ok(())
}

fn spawn(exe: &Path, root: &Path, name: &str, token: Option<&str>) -> Result<Daemon, Failure> {
    let state_dir = root.join(name);
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| Failure::Runtime(format!("cannot create {}: {e}", state_dir.display())))?;
    let log_path = state_dir.join("daemon.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| Failure::Runtime(format!("cannot create {}: {e}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| Failure::Runtime(format!("{}: {e}", log_path.display())))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--state-dir")
        .arg(&state_dir)
        .args([
            "join",
            "--name",
            name,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--heartbeat-interval",
            "1s",
        ])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // In the environment, not the arguments: process lists show arguments to every user.
    if let Some(token) = token {
        cmd.env("DIRECTORD_MESH_TOKEN", token);
    }
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2), which
    // is async-signal-safe. It makes the daemon get SIGTERM if the demo dies without cleaning up.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    let child = Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::Runtime(format!("cannot start {}: {e}", exe.display())))?;
    Ok(Daemon {
        name: name.to_string(),
        state_dir,
        child,
    })
}

/// Waits until the daemon answers on its control socket; fails with its log if it exits.
async fn wait_until_serving(d: &mut Daemon) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if status::fetch(&d.state_dir).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(exit)) = d.child.try_wait() {
            return Err(Failure::Runtime(format!(
                "daemon {} exited ({exit}) at start; its log:\n{}",
                d.name,
                log_tail(&d.state_dir)
            )));
        }
        if Instant::now() > deadline {
            return Err(Failure::Runtime(format!(
                "daemon {} did not answer within 15 s; its log:\n{}",
                d.name,
                log_tail(&d.state_dir)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every daemon sees `n` alive members.
async fn wait_until_formed(daemons: &[Daemon], n: usize) -> Result<(), Failure> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    loop {
        let mut lowest = usize::MAX;
        for d in daemons {
            let alive = match status::fetch(&d.state_dir).await {
                Ok(r) => r.nodes.iter().filter(|r| r.state == "alive").count(),
                Err(_) => 0,
            };
            lowest = lowest.min(alive);
        }
        if lowest == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Failure::Runtime(format!(
                "the mesh did not form within {} s (the daemon seeing the fewest saw {lowest} of {n} alive); \
                 see the daemons' logs in their state directories",
                FORM_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The exit code of a demo interrupted before it was over (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

/// The signals that stop the demo: Ctrl-C, a plain `kill`, or the terminal going away.
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<Self, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            int: signal(SignalKind::interrupt()).map_err(Failure::runtime)?,
            term: signal(SignalKind::terminate()).map_err(Failure::runtime)?,
            hup: signal(SignalKind::hangup()).map_err(Failure::runtime)?,
        })
    }

    /// Waits for the next of them.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// Stops every daemon: SIGTERM (each leaves the mesh cleanly), then SIGKILL after 5 s.
async fn stop_all(daemons: &mut [Daemon]) {
    if daemons.is_empty() {
        return;
    }
    let count = match daemons.len() {
        1 => "the daemon".to_string(),
        n => format!("{n} daemons"),
    };
    output::line_or_skip(format_args!("Stopping {count}..."));
    for d in daemons.iter() {
        if let Some(pid) = d.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for d in daemons.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(5), d.child.wait())
            .await
            .is_err()
        {
            let _ = d.child.kill().await;
        }
    }
}

fn log_tail(state_dir: &Path) -> String {
    let text = std::fs::read_to_string(state_dir.join("daemon.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
