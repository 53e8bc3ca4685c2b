//! Helpers for end-to-end tests: real `directord-mesh` daemons as child processes.
//!
//! The binary is found next to the test executable (`target/<profile>/directord-mesh`, which
//! `cargo test --workspace` builds before running any test), or at `$DIRECTORD_MESH_BIN`.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Path of the `directord-mesh` binary under test.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("DIRECTORD_MESH_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/directord-mesh
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("directord-mesh"))
        .expect("target directory");
    // The benches run from target/release: they need the release binary.
    let release = bin.parent().and_then(Path::file_name) == Some("release".as_ref());
    assert!(
        bin.exists(),
        "{} does not exist: build it with `cargo build{} -p directord-mesh`{}",
        bin.display(),
        if release { " --release" } else { "" },
        if release {
            ""
        } else {
            " (cargo test --workspace does)"
        }
    );
    bin
}

/// libfaketime's multi-threaded library, which moves a process's clocks (Debian and Ubuntu:
/// the `libfaketime` package; `DIRECTORD_MESH_TEST_LIBFAKETIME` names another path).
pub fn libfaketime() -> PathBuf {
    if let Some(path) = std::env::var_os("DIRECTORD_MESH_TEST_LIBFAKETIME") {
        return PathBuf::from(path);
    }
    let arch = std::env::consts::ARCH;
    let candidates = [
        format!("/usr/lib/{arch}-linux-gnu/faketime/libfaketimeMT.so.1"),
        "/usr/lib/faketime/libfaketimeMT.so.1".to_string(),
        "/usr/lib64/faketime/libfaketimeMT.so.1".to_string(),
        "/usr/local/lib/faketime/libfaketimeMT.so.1".to_string(),
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "this test moves a daemon's clocks with libfaketime, which is not installed \
                 (looked for {}): install it (Debian, Ubuntu: apt-get install libfaketime) or \
                 set DIRECTORD_MESH_TEST_LIBFAKETIME",
                candidates.join(", ")
            )
        })
}

/// Runs the CLI to completion with `args`.
pub fn cli(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run directord-mesh")
}

/// A command's exit code and output, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The job id `exec` printed first (without `--poll`), once it succeeded.
pub fn submitted_job_id(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .expect("exec prints the job id")
        .to_string()
}

/// The submission of `yaml` (an orchestration; its files resolved from `cwd`) to `targets`, as
/// the CLI would send it, for tests that talk to an in-process node directly.
pub fn submission(
    yaml: &str,
    cwd: &Path,
    targets: &[&str],
    stream: bool,
) -> node::control::Submission {
    use node::control::{SubmittedJob, SubmittedParent};
    let orchestration = jobs::orchestration::parse_str(yaml, "test").expect("it parses");
    let parents = orchestration
        .entries
        .into_iter()
        .map(|entry| SubmittedParent {
            name: None,
            origin: None,
            targets: entry.targets,
            is_async: entry.is_async,
            fingerprint: entry.fingerprint,
            jobs: entry
                .jobs
                .into_iter()
                .flat_map(|job| {
                    let text = job.text;
                    jobs::transfer::resolve(job.spec, cwd)
                        .expect("files resolve")
                        .into_iter()
                        .map(move |spec| SubmittedJob {
                            spec,
                            definition: text.clone(),
                        })
                })
                .collect(),
        })
        .collect();
    node::control::Submission {
        parents,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        restrict: vec![],
        ignore_cache: false,
        force_async: false,
        stream,
        exec: false,
    }
}

/// The job records `d` holds (the jobs it submitted), as `manage --list-jobs --json` prints them.
pub fn records(d: &Daemon) -> Vec<Value> {
    let o = d.cli(&["manage", "--list-jobs", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice::<Vec<Value>>(&o.stdout).expect("manage --list-jobs --json prints JSON")
}

/// A daemon started with `join`, killed when dropped.
pub struct Daemon {
    pub name: String,
    pub state_dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// Runs in its own mount namespace with a private, empty `/tmp`, like a separate machine.
    isolated: bool,
    /// The network namespace it runs in (see [`Link`]), if not this one.
    netns: Option<String>,
    /// A file holding the offset of its clocks (libfaketime's syntax: `+0`, `+26h`, `-1h`),
    /// read again every second, and which clocks it moves.
    clock: Option<(PathBuf, Clocks)>,
    /// The most files it may open (its RLIMIT_NOFILE), if not the test's own.
    descriptor_limit: Option<u64>,
}

/// Which of a daemon's clocks a clock file moves (see [`Daemon::set_clock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clocks {
    /// Wall, monotonic and boot clocks, as if that much time went by (libfaketime makes the
    /// monotonic and boot clocks read as the faked wall clock: compare them only between
    /// starts made under it).
    All,
    /// The wall clock alone: as if it were set wrong, or corrected.
    Wall,
}

impl Daemon {
    /// Starts `directord-mesh --state-dir <root>/<name> join [--name <name>] --listen 127.0.0.1:0
    /// --heartbeat-interval 1s <extra...>` and waits until it answers `status`.
    pub fn start(root: &Path, name: &str, extra: &[&str]) -> Daemon {
        let mut args: Vec<String> = Vec::new();
        if !extra.contains(&"--name") {
            args.extend(["--name".into(), name.into()]);
        }
        args.extend(["--listen".into(), "/ip4/127.0.0.1/tcp/0".into()]);
        // Tests see expiry sooner with a 1 s heartbeat, unless they ask for another.
        if !extra.contains(&"--heartbeat-interval") {
            args.extend(["--heartbeat-interval".into(), "1s".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut d = Daemon::spawn(root, name, args);
        d.wait_serving();
        d
    }

    /// Like [`Daemon::start`], but the daemon gets its own mount namespace with a private `/tmp`
    /// (as if on another machine). `root` must not be under `/tmp`. Needs root.
    pub fn start_isolated(root: &Path, name: &str, extra: &[&str]) -> Daemon {
        Daemon::start_isolated_on(root, name, None, extra)
    }

    /// Like [`Daemon::start_isolated`], on one side of `link`: in that side's network
    /// namespace, listening on its address.
    pub fn start_isolated_at(
        root: &Path,
        name: &str,
        link: &Link,
        side: usize,
        extra: &[&str],
    ) -> Daemon {
        let at = (link.names[side].clone(), Link::ADDRS[side].to_string());
        Daemon::start_isolated_on(root, name, Some(at), extra)
    }

    /// Like [`Daemon::start_isolated`], on machine `i` of `fleet`: in its network namespace,
    /// listening on its address.
    pub fn start_isolated_in(
        root: &Path,
        name: &str,
        fleet: &Fleet,
        i: usize,
        extra: &[&str],
    ) -> Daemon {
        let at = (fleet.names[i].clone(), fleet.address(i));
        Daemon::start_isolated_on(root, name, Some(at), extra)
    }

    /// `at`: the network namespace and address to listen on, if not this namespace's
    /// loopback.
    fn start_isolated_on(
        root: &Path,
        name: &str,
        at: Option<(String, String)>,
        extra: &[&str],
    ) -> Daemon {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test gives each daemon its own /tmp with a mount namespace, which needs root"
        );
        assert!(
            !root.starts_with("/tmp"),
            "state directories of isolated daemons must be outside /tmp"
        );
        let mut args: Vec<String> = vec!["--name".into(), name.into()];
        let ip = at.as_ref().map_or("127.0.0.1", |(_, ip)| ip.as_str());
        args.extend(["--listen".into(), format!("/ip4/{ip}/tcp/0")]);
        // Tests see expiry sooner with a 1 s heartbeat, unless they ask for another.
        if !extra.contains(&"--heartbeat-interval") {
            args.extend(["--heartbeat-interval".into(), "1s".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut d = Daemon {
            name: name.into(),
            state_dir: root.join(name),
            args,
            child: None,
            isolated: true,
            netns: at.map(|(netns, _)| netns),
            clock: None,
            descriptor_limit: None,
        };
        d.launch();
        d.wait_serving();
        d
    }

    /// Runs the CLI against this daemon (`--state-dir` is added).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all = vec!["--state-dir", self.state_dir.to_str().unwrap()];
        all.extend_from_slice(args);
        cli(&all)
    }

    /// Runs the CLI against this daemon from the working directory `dir`.
    pub fn cli_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.cli_command(args)
            .current_dir(dir)
            .output()
            .expect("run directord-mesh")
    }

    /// The CLI against this daemon, not yet started (`--state-dir` added, no stdin): for a
    /// client that runs beside the test (`--poll`, `--follow-run`), given its output and
    /// spawned by the caller.
    pub fn cli_command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new(binary());
        command
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Starts `directord-mesh --state-dir <root>/<name> join <args...>` without waiting.
    pub fn spawn(root: &Path, name: &str, args: Vec<String>) -> Daemon {
        let mut d = Daemon {
            name: name.into(),
            state_dir: root.join(name),
            args,
            child: None,
            isolated: false,
            netns: None,
            clock: None,
            descriptor_limit: None,
        };
        d.launch();
        d
    }

    /// From its next start on, the daemon's `clocks` are offset by what `file` says (see
    /// [`libfaketime`]); `None`: the machine's clocks.
    pub fn set_clock(&mut self, clock: Option<(PathBuf, Clocks)>) {
        self.clock = clock;
    }

    /// From its next start on, the daemon may open at most `limit` files (`None`: as many as
    /// the test).
    pub fn set_descriptor_limit(&mut self, limit: Option<u64>) {
        self.descriptor_limit = limit;
    }

    /// Starts the daemon again with the same state directory and arguments, and waits until it
    /// answers.
    pub fn restart(&mut self) {
        self.launch();
        self.wait_serving();
    }

    /// Starts the daemon again without waiting for it to serve: for a start that fails.
    pub fn relaunch(&mut self) {
        self.launch();
    }

    fn launch(&mut self) {
        std::fs::create_dir_all(&self.state_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.join("daemon.log"))
            .unwrap();
        let mut command = if self.isolated {
            // ip netns exec, unshare and sh exec in place: the child's pid is the daemon's.
            let mut c = match &self.netns {
                Some(netns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", netns, "unshare"]);
                    c
                }
                None => Command::new("unshare"),
            };
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg("mount -t tmpfs tmpfs /tmp && exec \"$0\" \"$@\"")
                .arg(binary_outside_tmp(
                    self.state_dir.parent().expect("state dir has a parent"),
                ));
            c
        } else {
            Command::new(binary())
        };
        if let Some((file, clocks)) = &self.clock {
            command
                .env("LD_PRELOAD", libfaketime())
                .env("FAKETIME_TIMESTAMP_FILE", file)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("NO_FAKE_STAT", "1");
            if *clocks == Clocks::Wall {
                command.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            }
        }
        command
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("join")
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("DAEMON_LOG").unwrap_or_else(|_| "info,libp2p=warn".into()),
            )
            // Test hooks stay off until a test creates their file in the state directory.
            .env("DIRECTORD_MESH_TEST_HOOKS", "1")
            // cargo puts its build directories on the library path of what it runs; a daemon
            // started by an operator has none, and every job's shell would search them.
            .env_remove("LD_LIBRARY_PATH")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let descriptor_limit = self.descriptor_limit;
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
        // signal(2) and setrlimit(2), which are async-signal-safe. A test process killed
        // outright (a timeout) leaves no daemon behind; the test's thread, which starts its
        // daemons, outlives them anyway (they are stopped as the test ends). SIGHUP at its
        // default: a test run under nohup would otherwise hand its daemons SIGHUP ignored,
        // which they keep (as `nohup directord-mesh join` asks).
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)?;
                nix::sys::signal::signal(
                    nix::sys::signal::Signal::SIGHUP,
                    nix::sys::signal::SigHandler::SigDfl,
                )
                .map_err(std::io::Error::from)?;
                if let Some(limit) = descriptor_limit {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        limit,
                        limit,
                    )
                    .map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn daemon");
        self.child = Some(child);
    }

    /// Waits until the daemon answers `status`; panics with its log if it exits or hangs.
    pub fn wait_serving(&mut self) {
        if let Err(status) = self.serving_or_exit() {
            panic!(
                "daemon {} exited at start ({status}):\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Waits until the daemon answers `status` (`Ok`) or exits (`Err`, with how: a start
    /// that may fail, such as on an address another process took meanwhile); panics with its
    /// log if it does neither within 30 s.
    pub fn serving_or_exit(&mut self) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.status().is_none() {
            if let Some(status) = self.child.as_mut().expect("running").try_wait().unwrap() {
                self.child = None;
                return Err(status);
            }
            assert!(
                Instant::now() < deadline,
                "daemon {} never answered:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The address the daemon listens on (the first it reports), with the port it was given.
    pub fn listen_address(&self) -> String {
        self.status().expect("status")["self"]["listen_addresses"][0]
            .as_str()
            .expect("the daemon listens")
            .to_string()
    }

    /// From its next start on, the daemon listens where it listens now: started on port 0,
    /// it keeps the port the system gave it, as a machine keeps its address across restarts.
    pub fn keep_listen_address(&mut self) {
        let address = self.listen_address();
        let at = self
            .args
            .iter()
            .rposition(|a| a == "--listen")
            .expect("started with --listen");
        self.args[at + 1] = address;
    }

    /// `status --json`, or `None` if the daemon does not answer.
    pub fn status(&self) -> Option<Value> {
        let out = cli(&[
            "--state-dir",
            self.state_dir.to_str().unwrap(),
            "status",
            "--json",
        ]);
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("status --json prints JSON"))
    }

    pub fn peer_id(&self) -> String {
        self.status().expect("status")["self"]["peer_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn join_token(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("join-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// `kill -9`: no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with(nix::sys::signal::Signal::SIGTERM)
    }

    /// Sends `signal` and waits for the exit (a clean stop lets running jobs finish for up to
    /// 10 s, then asks them to end and waits up to 5 s more).
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
        self.wait_exit(Duration::from_secs(30))
    }

    /// Waits for the daemon to exit by itself; panics with its log if it is still running after
    /// `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon {} still runs after {timeout:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let running = self.child.is_some();
        self.kill9();
        // Killed, the daemon leaves its jobs' processes running, as a crash does: they are
        // stopped here as its next start would stop them, or a test's `sleep 30` outlives it.
        if running {
            let _ = jobs::processes::ProcessLog::open(&self.state_dir.join("running-jobs"));
        }
    }
}

/// Two network namespaces joined by one veth pair: two machines on either side of a link
/// the test can cut and mend. Side 0 has [`Link::ADDRS`]`[0]`, side 1 `[1]`; both are
/// removed when the link is dropped (drop the daemons in them first). Needs root and `ip`.
pub struct Link {
    names: [String; 2],
}

impl Link {
    pub const ADDRS: [&'static str; 2] = ["10.231.0.1", "10.231.0.2"];
    const DEVICES: [&'static str; 2] = ["dm0", "dm1"];

    pub fn create() -> Link {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Those of earlier test runs killed before they could clean up.
        simulations::tier3::remove_stale_namespaces("dmtest-");
        let names = [0, 1].map(|side| format!("dmtest-{}-{n}-{side}", std::process::id()));
        // Removed again even if a step below fails.
        let link = Link { names };
        for name in &link.names {
            ip(&["netns", "add", name]);
        }
        let [a, b] = &link.names;
        ip(&[
            "link",
            "add",
            Self::DEVICES[0],
            "netns",
            a,
            "type",
            "veth",
            "peer",
            "name",
            Self::DEVICES[1],
            "netns",
            b,
        ]);
        for side in 0..2 {
            let netns = link.names[side].as_str();
            let address = format!("{}/24", Self::ADDRS[side]);
            ip(&[
                "-n",
                netns,
                "addr",
                "add",
                &address,
                "dev",
                Self::DEVICES[side],
            ]);
            ip(&["-n", netns, "link", "set", "lo", "up"]);
            ip(&["-n", netns, "link", "set", Self::DEVICES[side], "up"]);
        }
        link
    }

    /// Cuts the link: nothing passes between the sides until [`Link::mend`].
    pub fn cut(&self) {
        ip(&[
            "-n",
            &self.names[0],
            "link",
            "set",
            Self::DEVICES[0],
            "down",
        ]);
    }

    pub fn mend(&self) {
        ip(&["-n", &self.names[0], "link", "set", Self::DEVICES[0], "up"]);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs `ip ARGS`; panics with its error output if it fails.
/// Machines on one switch: a network namespace each, joined by a bridge in a namespace of
/// its own; any two can be cut from each other while both still reach the rest (a firewall
/// between them: a partial partition). All are removed when the fleet is dropped (drop the
/// daemons in them first). Needs root and `ip`.
pub struct Fleet {
    hub: String,
    names: Vec<String>,
}

impl Fleet {
    /// `n` machines, `0..n`.
    pub fn create(n: usize) -> Fleet {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        simulations::tier3::remove_stale_namespaces("dmtest-");
        let prefix = format!("dmtest-{}-f{k}", std::process::id());
        // Removed again even if a step below fails.
        let fleet = Fleet {
            hub: format!("{prefix}-hub"),
            names: (0..n).map(|i| format!("{prefix}-{i}")).collect(),
        };
        ip(&["netns", "add", &fleet.hub]);
        ip(&[
            "-n", &fleet.hub, "link", "add", "name", "dmbr", "type", "bridge",
        ]);
        ip(&["-n", &fleet.hub, "link", "set", "dmbr", "up"]);
        for (i, name) in fleet.names.iter().enumerate() {
            ip(&["netns", "add", name]);
            let port = format!("p{i}");
            ip(&[
                "-n", &fleet.hub, "link", "add", "name", &port, "type", "veth", "peer", "name",
                "eth0", "netns", name,
            ]);
            ip(&[
                "-n", &fleet.hub, "link", "set", &port, "master", "dmbr", "up",
            ]);
            let address = format!("{}/24", fleet.address(i));
            ip(&["-n", name, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", name, "link", "set", "eth0", "up"]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
        }
        fleet
    }

    /// Machine `i`'s address.
    pub fn address(&self, i: usize) -> String {
        format!("10.232.0.{}", i + 1)
    }

    /// Nothing passes between machines `a` and `b` (each drops what it would send the other)
    /// until [`Fleet::mend`]; both still reach every other machine.
    pub fn cut(&self, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let to = format!("{}/32", self.address(to));
            ip(&["-n", &self.names[from], "route", "add", "blackhole", &to]);
        }
    }

    pub fn mend(&self, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let to = format!("{}/32", self.address(to));
            ip(&["-n", &self.names[from], "route", "del", "blackhole", &to]);
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for name in self.names.iter().chain([&self.hub]) {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ip(args: &[&str]) {
    let o = Command::new("ip")
        .args(args)
        .output()
        .expect("run `ip` (iproute2): network namespaces need it");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The binary under test, reachable from a daemon with its own empty `/tmp`: when the build
/// lives under `/tmp`, a link (or copy) of it in `root`.
fn binary_outside_tmp(root: &Path) -> PathBuf {
    let bin = binary();
    if !bin.starts_with("/tmp") {
        return bin;
    }
    let outside = root.join("directord-mesh");
    if !outside.exists() && std::fs::hard_link(&bin, &outside).is_err() {
        std::fs::copy(&bin, &outside).expect("copy the binary out of /tmp");
    }
    outside
}

/// A fresh directory for isolated daemons and the files they share: under `preferred` (the
/// target's temporary directory), unless that is itself under `/tmp` (each isolated daemon
/// gets its own empty `/tmp`), in which case under `/var/tmp`.
pub fn isolated_root(preferred: &Path) -> tempfile::TempDir {
    let base = if preferred.starts_with("/tmp") {
        PathBuf::from("/var/tmp/directord-mesh-tests")
    } else {
        preferred.to_path_buf()
    };
    std::fs::create_dir_all(&base).expect("test directory");
    tempfile::tempdir_in(&base).expect("test directory")
}

/// An `n`-node mesh of isolated daemons (`n1`, `n2`, ...; see [`Daemon::start_isolated`]),
/// returned once every daemon sees all `n` alive (or a panic after `timeout`).
pub fn isolated_mesh(root: &Path, n: usize, timeout: Duration) -> Vec<Daemon> {
    isolated_mesh_with(root, n, timeout, &[])
}

/// Like [`isolated_mesh`], with `extra` arguments for every daemon's `join`.
pub fn isolated_mesh_with(root: &Path, n: usize, timeout: Duration, extra: &[&str]) -> Vec<Daemon> {
    isolated_mesh_each(root, &vec![extra; n], timeout)
}

/// Like [`isolated_mesh`], of one daemon per entry of `extras`, each with its own extra
/// arguments for `join` (`extras[0]` for `n1`, ...).
pub fn isolated_mesh_each(root: &Path, extras: &[&[&str]], timeout: Duration) -> Vec<Daemon> {
    let n = extras.len();
    let first = Daemon::start_isolated(root, "n1", extras[0]);
    let token = first.join_token();
    let mut nodes = vec![first];
    for (i, extra) in extras.iter().enumerate().skip(1) {
        let mut args = vec!["--token", token.as_str()];
        args.extend_from_slice(extra);
        nodes.push(Daemon::start_isolated(root, &format!("n{}", i + 1), &args));
    }
    let mut names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    names.sort();
    for d in &nodes {
        wait_for(timeout, "the mesh to form", || {
            (alive_names(&d.status()?) == names).then_some(())
        });
    }
    nodes
}

/// Whether `node` reported the job of the record `r` (a `manage --job-info --json` record) for
/// real: its result is there and is not the submitter's write-off of an unreachable target. A
/// target killed and restarted may be written off first (its heartbeats stop for as long as
/// it takes to start again), and its real result replaces the write-off when it comes.
pub fn reported(r: &Value, node: &str) -> bool {
    let result = &r["results"][node];
    result.is_object()
        && !result["info"]
            .as_str()
            .is_some_and(|info| info.starts_with("unreachable"))
}

/// The state of `peer_id` in a `status --json` report, if listed.
pub fn state_of(status: &Value, peer_id: &str) -> Option<String> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["peer_id"] == peer_id)
        .map(|n| n["state"].as_str().unwrap_or_default().to_string())
}

/// Names of the alive members in a `status --json` report, sorted.
pub fn alive_names(status: &Value) -> Vec<String> {
    let mut names: Vec<String> = status["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|n| n["state"] == "alive")
                .map(|n| n["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
/// Returns the value and how long it took.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
