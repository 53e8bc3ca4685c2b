//! The process groups of running jobs, written down so that a node restarted after a crash
//! (kill -9, out of memory) stops what its previous run left running: a job reported
//! interrupted must not go on unsupervised beside a resend of it.
//!
//! It also says which jobs were settled (started, or reported without running): a job of an
//! accepted run that the previous run of the node never settled can be queued again after a
//! restart, where one that started is reported interrupted (no job runs twice). A job's line
//! stays until the node says its result is on disk ([`ProcessLog::jobs_settled`]).
//!
//! One file, appended to and never synced (a crashed process leaves the page cache intact;
//! after a reboot there is nothing left to stop, and no telling which jobs started): a `boot`
//! line naming the boot it belongs to, a `starts` line once the log names every job the node
//! may have started (see [`ProcessLog::restored`]), then `>JOB` as a job is settled,
//! `+PGID TICKS` as a job's shell starts and `-PGID` as it ends, and `stopped` once a clean
//! stop has stopped the jobs still running (so the next start tells it from a crash). TICKS
//! is the time on the boot clock just after the shell started, in the clock ticks
//! `/proc/PID/stat` gives a process's start in. A group is stopped only if the log is from this boot and this pid
//! namespace and its leader (the job's shell) is still there and started at most a second
//! before TICKS: a later process that took the number started after the shell ended, so after
//! TICKS. Children a shell left in its group after the shell itself ended are not stopped.

use std::{
    collections::{HashMap, HashSet},
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::{
    sys::signal::{Signal, killpg},
    time::{ClockId, clock_gettime},
    unistd::Pid,
};

/// Rewritten with only the live entries once it grows past this (and twice its size after
/// the last rewrite).
const COMPACT_AT: u64 = 1024 * 1024;

/// The line after the boot's that says the log names every job's start.
const STARTS_SAID: &str = "starts";

/// The line a clean stop ends the log with, once it has stopped the jobs still running.
const STOPPED: &str = "stopped";

/// Why a job may not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotStarted {
    #[error("the node is stopping")]
    Stopping,
    #[error("cannot write down in {0} that the job starts (a restart would run it again)")]
    Unrecorded(String),
}

/// Linux reports process start times in USER_HZ ticks, which it fixes at 100.
const TICKS_PER_SEC: u64 = 100;

/// How long before the recorded time the shell may have started (spawning on a loaded
/// machine takes a while).
const START_SLACK_TICKS: u64 = TICKS_PER_SEC;

/// How often a stop looks for processes the jobs' groups gained (see
/// [`ProcessLog::jobs_ended`]).
const NOTE_MEMBERS_EVERY: Duration = Duration::from_millis(200);

pub struct ProcessLog {
    state: Mutex<State>,
}

struct State {
    path: PathBuf,
    file: File,
    boot: String,
    live: HashMap<u32, u64>,
    /// Jobs started, and whether their results are on disk (then they leave at the next
    /// rewrite of the log).
    starts: HashMap<String, bool>,
    /// The node stops: no job starts any more.
    stopping: bool,
    /// The node asked the groups still running to end ([`ProcessLog::terminate_all`]) and
    /// stops them after a grace: a job dropped meanwhile leaves its group to that.
    terminating: bool,
    /// Jobs started whose outcome the node has not taken in yet ([`ProcessLog::job_taken`]):
    /// what a clean stop lets finish first.
    in_flight: HashSet<String>,
    /// When [`ProcessLog::jobs_ended`] last looked in /proc for processes the groups gained.
    members_noted_at: Option<std::time::Instant>,
    /// The groups [`ProcessLog::terminate_all`] asked to end, each with its processes then
    /// (pid and start time): the group is the job's while one of them is still there, even
    /// once its shell has ended (a child finishing its cleanup).
    asked: Vec<(u32, Vec<(u32, u64)>)>,
    /// A write failed: the file is gone until a rewrite works.
    broken: bool,
    /// Its size when last rewritten (the next rewrite waits for twice as much).
    compacted: u64,
    /// The jobs the previous run of the node started, if it can tell (see
    /// [`ProcessLog::previous_starts`]).
    previous: Option<HashSet<String>>,
    /// The previous run stopped cleanly, stopping the jobs it still ran (see
    /// [`ProcessLog::previous_stopped_cleanly`]).
    previous_stopped: bool,
    /// When the previous run last wrote or touched the log (see [`ProcessLog::touch`]).
    previous_alive: Option<SystemTime>,
    /// When the previous run last said it was alive on the boot clock, in ticks, if that was
    /// in this boot: a measure of its downtime that a step of the wall clock does not skew.
    previous_alive_ticks: Option<u64>,
    /// The log names every job this node may have started (its `starts` line): from the
    /// start when the previous run's log did, else once the node has restored
    /// ([`ProcessLog::restored`]).
    starts_said: bool,
    /// The node has dealt with what its previous run left (see [`ProcessLog::restored`]).
    restored: bool,
    written: u64,
}

impl ProcessLog {
    /// Opens the log at `path`, stops every job process group a previous run of this node left
    /// running (returned), and starts a fresh log.
    pub fn open(path: &Path) -> io::Result<(ProcessLog, Vec<u32>)> {
        let boot = boot_id();
        if let Some(pid) = writer_still_running(path, &boot) {
            return Err(io::Error::other(format!(
                "the daemon with pid {pid} on this machine keeps this log: this state directory \
                 is a copy of the one that daemon runs with, and a copy is the same node (same \
                 identity.key). Give this node its own state directory (a copy without \
                 identity.key and running-jobs makes a new node), or stop the other daemon"
            )));
        }
        // An unreadable or damaged log stops nothing: it only serves a cleanup.
        let previous_alive = fs::metadata(path).and_then(|m| m.modified()).ok();
        // Only if the log was not touched well after it (by a release that kept no such
        // word: its own would be stale).
        let previous_alive_ticks = fs::read_to_string(alive_path(path)).ok().and_then(|text| {
            let mut fields = text.trim_end().split('\t');
            let (said_boot, ticks, wall_ms) = (fields.next()?, fields.next()?, fields.next()?);
            let said_at = UNIX_EPOCH + Duration::from_millis(wall_ms.parse().ok()?);
            let touched_since =
                previous_alive.is_some_and(|alive| alive > said_at + Duration::from_secs(120));
            (!boot.is_empty() && said_boot == boot && !touched_since).then(|| ticks.parse().ok())?
        });
        let (stopped, previous, previous_stopped) = match fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let starts = starts(&text, &boot);
                // Only a log that can tell the starts apart tells of the stop too.
                let clean = starts.is_some() && text.lines().any(|l| l == STOPPED);
                (stop_leftovers(&text, &boot), starts, clean)
            }
            Err(_) => (Vec::new(), None, false),
        };
        // The previous run's starts stay in the new log until the jobs they name are recorded
        // (see `jobs_settled`): should this run stop before that, the next one still knows.
        let starts: HashMap<String, bool> = previous
            .iter()
            .flatten()
            .map(|job| (job.clone(), false))
            .collect();
        // Until the node has dealt with the jobs its previous run left, the new log must tell
        // the next start no more than this one knows: nothing about starts if this one cannot
        // tell (a crash right now must not make the next start take every pending job for
        // one never started), and the previous run's last sign of life, not now.
        let starts_said = previous.is_some();
        let file = fresh(path, &boot, &HashMap::new(), &starts, starts_said)?;
        if let Some(alive) = previous_alive {
            let _ = file.set_modified(alive);
        }
        let written = file.metadata()?.len();
        let log = ProcessLog {
            state: Mutex::new(State {
                path: path.to_path_buf(),
                file,
                boot,
                live: HashMap::new(),
                starts,
                stopping: false,
                terminating: false,
                asked: Vec::new(),
                in_flight: HashSet::new(),
                members_noted_at: None,
                broken: false,
                compacted: written,
                previous,
                previous_stopped,
                previous_alive,
                previous_alive_ticks,
                starts_said,
                restored: false,
                written,
            }),
        };
        Ok((log, stopped))
    }

    /// The jobs the previous run of this node started, once (later calls: `None`). `None`
    /// also when it cannot tell: no log, or a log from another boot (or pid namespace), whose
    /// last writes may be lost. A job a node accepted and did not start may run after all.
    pub fn previous_starts(&self) -> Option<HashSet<String>> {
        self.lock().previous.take()
    }

    /// Whether the previous run of the node stopped cleanly (SIGTERM, SIGINT, SIGHUP), stopping
    /// the jobs it still ran, as far as the log tells: a job it started without a result was
    /// stopped with it (or had just ended), not cut short by a crash.
    pub fn previous_stopped_cleanly(&self) -> bool {
        self.lock().previous_stopped
    }

    /// How long ago the previous run of the node was last alive, as far as the log tells (it
    /// is written as jobs start and touched every minute or so: see [`ProcessLog::touch`]).
    pub fn previous_down_for(&self) -> Option<std::time::Duration> {
        let state = self.lock();
        // In this boot: by the boot clock (a wall clock stepped meanwhile would make a short
        // stop look long, or a long one short). Else by the wall clock, all there is.
        if let Some(then) = state.previous_alive_ticks {
            return Some(ticks_to_duration(boot_ticks().saturating_sub(then)));
        }
        let alive = state.previous_alive?;
        Some(SystemTime::now().duration_since(alive).unwrap_or_default())
    }

    /// Says the node is alive (the file's modification time), for [`previous_down_for`]
    /// after a crash. Call it about once a minute. Before [`ProcessLog::restored`] it does
    /// nothing: the log keeps the previous run's last sign of life.
    ///
    /// [`previous_down_for`]: ProcessLog::previous_down_for
    pub fn touch(&self) {
        let state = self.lock();
        if state.restored {
            let _ = state.file.set_modified(SystemTime::now());
            say_alive(&state);
        }
    }

    /// The node has dealt with every job its previous run left (run again, or reported with
    /// the results on disk): from now on the log speaks for this run only. Should writing
    /// that fail, the next write tries again.
    pub fn restored(&self) {
        let mut state = self.lock();
        state.restored = true;
        if !state.starts_said {
            rewrite(&mut state);
        }
        let _ = state.file.set_modified(SystemTime::now());
        say_alive(&state);
    }

    /// Job `job_id` is about to start (or to be reported without running: it is settled
    /// either way). Refused while the node stops (the job stays pending, and runs after the
    /// restart), and when the log cannot say so (the job would run again after a restart).
    pub fn job_started(&self, job_id: &str) -> Result<(), NotStarted> {
        // One lock throughout: once `halt` has returned, no job is said to start.
        let mut state = self.lock();
        if state.stopping {
            return Err(NotStarted::Stopping);
        }
        state.starts.insert(job_id.to_string(), false);
        state.in_flight.insert(job_id.to_string());
        append(&mut state, format!(">{job_id}\n"));
        if state.broken && state.path.exists() {
            return Err(NotStarted::Unrecorded(state.path.display().to_string()));
        }
        Ok(())
    }

    /// The node took in the outcome of `job_id` (its result is on its way to disk).
    pub fn job_taken(&self, job_id: &str) {
        self.lock().in_flight.remove(job_id);
    }

    /// How many jobs started here have not had their outcome taken in yet: running, or just
    /// ended (a shell that has exited, whose output is still read).
    pub fn jobs_in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// These jobs' results are on disk: a restart finds them done, so their starts may go.
    pub fn jobs_settled<'a>(&self, job_ids: impl IntoIterator<Item = &'a str>) {
        let mut state = self.lock();
        for job in job_ids {
            if let Some(settled) = state.starts.get_mut(job) {
                *settled = true;
            }
        }
    }

    /// No job starts from now on (the node is stopping, or has crashed in a simulation).
    pub fn halt(&self) {
        self.lock().stopping = true;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another job's write panicked; the log is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A job's shell started as the leader of process group `pgid`. Should the node have
    /// begun to stop meanwhile (after the job was said to start, before its shell was
    /// spawned), the group is stopped at once: nothing runs on unsupervised.
    pub fn started(&self, pgid: u32) {
        let ticks = boot_ticks();
        let mut state = self.lock();
        state.live.insert(pgid, ticks);
        append(&mut state, format!("+{pgid} {ticks}\n"));
        if state.stopping {
            let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
        }
    }

    /// The job's shell ended (what it left in its group is the job's own business).
    pub fn ended(&self, pgid: u32) {
        let mut state = self.lock();
        state.live.remove(&pgid);
        append(&mut state, format!("-{pgid}\n"));
    }

    /// Asks the process group of every job still running to end (SIGTERM: a package manager
    /// or a database gets to release its locks and finish its writes), as a node stopping
    /// does first; no job starts from now on. Returns the groups asked.
    /// [`ProcessLog::stop_all`] then stops what is left of them.
    pub fn terminate_all(&self) -> Vec<u32> {
        let mut state = self.lock();
        state.stopping = true;
        state.terminating = true;
        let mut asked: Vec<u32> = state
            .live
            .iter()
            .filter(|(pgid, ticks)| is_shell(**pgid, **ticks))
            .map(|(pgid, _)| *pgid)
            .collect();
        asked.sort_unstable();
        let mut members = group_members(&asked);
        for pgid in &asked {
            let _ = killpg(Pid::from_raw(*pgid as i32), Signal::SIGTERM);
        }
        state.asked = asked
            .iter()
            .map(|pgid| (*pgid, members.remove(pgid).unwrap_or_default()))
            .collect();
        asked
    }

    /// Whether the node asked the jobs still running to end and stops what is left of them
    /// after a grace ([`ProcessLog::terminate_all`]): a job dropped meanwhile (the node's
    /// tasks stopping) leaves its group to that rather than killing it at once.
    pub fn terminating(&self) -> bool {
        self.lock().terminating
    }

    /// Whether every process of the groups asked to end has ended (its shell, and the
    /// children it started: one may still be cleaning up after its shell is gone). Each call
    /// also notes the processes a group gained since (a cleanup that starts a process of its
    /// own): called often enough, a process started while another of the job's was still
    /// there is waited for, and stopped with the group, even once it is the last one left.
    pub fn jobs_ended(&self) -> bool {
        let mut state = self.lock();
        // A look through /proc at most every NOTE_MEMBERS_EVERY (a machine may run thousands
        // of processes; the lock is held meanwhile).
        let now = std::time::Instant::now();
        if state
            .members_noted_at
            .is_none_or(|at| now.duration_since(at) >= NOTE_MEMBERS_EVERY)
        {
            state.members_noted_at = Some(now);
            note_new_members(&mut state.asked);
        }
        state
            .asked
            .iter()
            .all(|(_, members)| !any_still_there(members))
    }

    /// Stops every job's process group still running (the node is stopping: its jobs must not
    /// go on unsupervised, and after its restart they are reported interrupted). Returns them.
    pub fn stop_all(&self) -> Vec<u32> {
        let mut state = self.lock();
        state.stopping = true;
        note_new_members(&mut state.asked);
        // A shell already collected whose job still reads its output (a process it left
        // holds a pipe) may have freed its number: stopped only if the number is not another
        // process's now.
        let mut stopped: Vec<u32> = state
            .live
            .iter()
            .filter(|(pgid, ticks)| shell_or_free(**pgid, **ticks))
            .map(|(pgid, _)| *pgid)
            .collect();
        // Groups asked to end whose shell has ended but which still hold a process of the
        // job's: not left running beside the restarted node.
        stopped.extend(
            state
                .asked
                .iter()
                .filter(|(_, members)| any_still_there(members))
                .map(|(pgid, _)| *pgid),
        );
        stopped.sort_unstable();
        stopped.dedup();
        for pgid in &stopped {
            let _ = killpg(Pid::from_raw(*pgid as i32), Signal::SIGKILL);
        }
        // Written as it is (a rewrite would drop it): the next start tells a clean stop.
        if !state.broken {
            let _ = state.file.write_all(format!("{STOPPED}\n").as_bytes());
        }
        stopped
    }
}

/// Appends `line` to the log; after a write that failed, or once the log has grown enough, writes
/// it anew from what `state` holds.
fn append(state: &mut State, line: String) {
    if !state.broken && state.file.write_all(line.as_bytes()).is_ok() {
        state.written += line.len() as u64;
    } else if !state.broken {
        // The log no longer says every start. No log is the safe word (a restart then
        // reports every pending job interrupted, runs none again) until a rewrite works;
        // meanwhile the cleanup after a crash is lost, which is only best effort.
        let _ = fs::remove_file(&state.path);
        state.broken = true;
    }
    // Until the node has restored, the file keeps the previous run's last sign of life.
    if !state.restored
        && let Some(alive) = state.previous_alive
    {
        let _ = state.file.set_modified(alive);
    }
    let said_late = state.restored && !state.starts_said;
    if state.broken || said_late || state.written > COMPACT_AT.max(2 * state.compacted) {
        rewrite(state);
    }
}

/// Writes the log anew with what `state` holds (the jobs settled and on disk left out).
fn rewrite(state: &mut State) {
    state.starts.retain(|_, settled| !*settled);
    let say_starts = state.starts_said || state.restored;
    if let Ok(file) = fresh(
        &state.path,
        &state.boot,
        &state.live,
        &state.starts,
        say_starts,
    ) {
        state.written = file.metadata().map_or(0, |m| m.len());
        state.compacted = state.written;
        state.file = file;
        state.broken = false;
        state.starts_said = say_starts;
    }
}

/// A log holding `live` and `starts` (with the line saying it names every start if
/// `say_starts`), written aside and renamed over `path`, open for appending.
fn fresh(
    path: &Path,
    boot: &str,
    live: &HashMap<u32, u64>,
    starts: &HashMap<String, bool>,
    say_starts: bool,
) -> io::Result<File> {
    let aside = path.with_extension("new");
    let mut text = format!("boot {boot}\n");
    if say_starts {
        text.push_str(&format!("{STARTS_SAID}\n"));
    }
    for job in starts.keys() {
        text.push_str(&format!(">{job}\n"));
    }
    for (pgid, ticks) in live {
        text.push_str(&format!("+{pgid} {ticks}\n"));
    }
    write_private(&aside, text.as_bytes())?;
    fs::rename(&aside, path)?;
    OpenOptions::new().append(true).open(path)
}

/// The jobs `text` (a previous log) shows started, if it is from this boot and pid namespace
/// (after a reboot its last lines may be lost; nothing tells the namespaces' logs apart) and
/// says starts at all (a release before did not).
fn starts(text: &str, boot: &str) -> Option<HashSet<String>> {
    let mut lines = text.lines();
    if boot.is_empty()
        || lines.next() != Some(&format!("boot {boot}"))
        || lines.next() != Some(STARTS_SAID)
    {
        return None;
    }
    Some(
        lines
            .filter_map(|line| line.strip_prefix('>'))
            .map(str::to_string)
            .collect(),
    )
}

/// Stops the groups `text` (a previous log) shows running, if it is from this boot and pid
/// namespace.
fn stop_leftovers(text: &str, boot: &str) -> Vec<u32> {
    let mut lines = text.lines();
    // Without a way to tell boots or namespaces apart, nothing is stopped.
    if boot.is_empty() || lines.next() != Some(&format!("boot {boot}")) {
        return Vec::new();
    }
    let mut live: HashMap<u32, u64> = HashMap::new();
    for line in lines {
        if let Some(rest) = line.strip_prefix('+') {
            if let Some((pgid, ticks)) = rest.split_once(' ')
                && let (Ok(pgid), Ok(ticks)) = (pgid.parse(), ticks.parse())
            {
                live.insert(pgid, ticks);
            }
        } else if let Some(pgid) = line.strip_prefix('-').and_then(|p| p.parse().ok()) {
            live.remove(&pgid);
        }
    }
    let mut stopped = Vec::new();
    for (pgid, ticks) in live {
        if !is_shell(pgid, ticks) {
            continue;
        }
        let Ok(raw) = i32::try_from(pgid) else {
            continue;
        };
        if raw > 1 && killpg(Pid::from_raw(raw), Signal::SIGKILL).is_ok() {
            stopped.push(pgid);
        }
    }
    stopped.sort_unstable();
    stopped
}

/// This boot and pid namespace (empty if the kernel does not say: then nothing is ever
/// stopped). A restarted container keeps the boot but gets a new pid namespace. Neither
/// changes while a process lives, so once read it is kept: a node asks for it with every
/// result it owes another node ([`BootInstant::now`]). A read that fails (short of
/// descriptors, say) is tried again at the next ask.
fn boot_id() -> String {
    static BOOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(boot) = BOOT.get() {
        return boot.clone();
    }
    let boot = read_boot_id();
    if !boot.is_empty() {
        let _ = BOOT.set(boot.clone());
    }
    boot
}

fn read_boot_id() -> String {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let namespace = fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if boot.is_empty() || namespace.is_empty() {
        return String::new();
    }
    format!("{boot} {namespace}")
}

/// A moment on this machine's boot clock, and which boot: within one boot, the time since it
/// is measured whatever the wall clock did meanwhile (stepped by a bad NTP sync, say).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootInstant {
    boot: String,
    ticks: u64,
}

impl BootInstant {
    /// Now (`None` where the boot cannot be told).
    pub fn now() -> Option<BootInstant> {
        let boot = boot_id();
        (!boot.is_empty()).then(|| BootInstant {
            boot,
            ticks: boot_ticks(),
        })
    }

    /// How long before `now` this was, if in the same boot.
    pub fn before(&self, now: &BootInstant) -> Option<std::time::Duration> {
        (self.boot == now.boot).then(|| ticks_to_duration(now.ticks.saturating_sub(self.ticks)))
    }
}

/// How old something made at `then` is at `now`, each a moment on the boot clock (if it
/// could be told) and on the wall clock (Unix ms): by the boot clock if both are of the same
/// boot, which a wall clock stepped meanwhile does not fool; else by the wall clock (none if
/// `then` is ahead of `now`).
pub fn age(
    then: (Option<&BootInstant>, u64),
    now: (Option<&BootInstant>, u64),
) -> std::time::Duration {
    then.0
        .zip(now.0)
        .and_then(|(a, b)| a.before(b))
        .unwrap_or_else(|| std::time::Duration::from_millis(now.1.saturating_sub(then.1)))
}

/// Writes `bytes` to `path` for this node's owner only (0600, as every file of the state
/// directory): job ids and process groups are nobody else's business.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // A file left from before keeps its mode when truncated.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)
}

/// Where the log's writer says when it was last alive on the boot clock (and the wall clock),
/// and which process it is: `BOOT\tTICKS\tUNIX_MS\tPID\tPID_START_TICKS`.
fn alive_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".alive");
    PathBuf::from(name)
}

/// The daemon whose sign of life beside `log` names it (pid, and when that process started),
/// if it still runs in this boot and pid namespace and is not this process. Only the daemon
/// holding the state directory's lock writes there, and this one holds it now: a writer still
/// running keeps another directory, of which this is a copy. Stopping "its" jobs would kill
/// that daemon's running jobs.
/// The pid of the daemon that keeps the log at `log` and runs now on this machine (in this
/// pid namespace), if one does.
pub fn running_keeper(log: &Path) -> Option<u32> {
    writer_still_running(log, &boot_id())
}

fn writer_still_running(log: &Path, boot: &str) -> Option<u32> {
    let text = fs::read_to_string(alive_path(log)).ok()?;
    let fields: Vec<&str> = text.trim_end().split('\t').collect();
    let [said_boot, _, _, pid, started, ..] = fields[..] else {
        return None;
    };
    let pid: u32 = pid.parse().ok()?;
    let started: u64 = started.parse().ok()?;
    let runs = !boot.is_empty()
        && said_boot == boot
        && pid != std::process::id()
        && start_ticks(pid) == Some(started);
    runs.then_some(pid)
}

/// Writes now, on the boot clock, beside the log (whole or not at all: a temporary file
/// renamed), with this process's pid and start (see [`writer_still_running`]). A failure
/// only leaves the next start to measure by the wall clock.
fn say_alive(state: &State) {
    if state.boot.is_empty() {
        return;
    }
    let path = alive_path(&state.path);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let pid = std::process::id();
    let started = start_ticks(pid).unwrap_or_default();
    if write_private(
        &tmp,
        format!(
            "{}\t{}\t{wall_ms}\t{pid}\t{started}\n",
            state.boot,
            boot_ticks()
        )
        .as_bytes(),
    )
    .is_ok()
    {
        let _ = fs::rename(&tmp, &path);
    }
}

/// Now on the boot clock: time since the machine booted, suspended time included (where the
/// monotonic clock stops while the machine sleeps), whatever the wall clock does.
pub fn boot_clock() -> std::time::Duration {
    clock_gettime(ClockId::CLOCK_BOOTTIME).map_or(std::time::Duration::ZERO, |t| {
        std::time::Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
    })
}

/// A span of the boot clock's ticks.
fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / TICKS_PER_SEC)
}

/// Now, on the boot clock, in clock ticks.
fn boot_ticks() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        t.tv_sec() as u64 * TICKS_PER_SEC + t.tv_nsec() as u64 / (1_000_000_000 / TICKS_PER_SEC)
    })
}

/// The processes (pid and start time) in each of the process groups `pgids`, from /proc;
/// those that have ended (zombies) left out.
fn group_members(pgids: &[u32]) -> HashMap<u32, Vec<(u32, u64)>> {
    let mut members: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
    if pgids.is_empty() {
        return members;
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return members;
    };
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        if let Some(running) = running_process(pid)
            && pgids.contains(&running.group)
        {
            members
                .entry(running.group)
                .or_default()
                .push((pid, running.start_ticks));
        }
    }
    members
}

/// Adds to each group of `asked` that still holds one of its noted processes the processes it
/// gained since they were noted. Such a group still exists, so its number names no other group:
/// what /proc shows in it is the job's (checked again after the look, in case the last noted
/// process ended meanwhile and the number went to a group of someone else's).
fn note_new_members(asked: &mut [(u32, Vec<(u32, u64)>)]) {
    let still: Vec<u32> = asked
        .iter()
        .filter(|(_, members)| any_still_there(members))
        .map(|(pgid, _)| *pgid)
        .collect();
    if still.is_empty() {
        return;
    }
    let mut found = group_members(&still);
    for (pgid, members) in asked.iter_mut() {
        let Some(now) = found.remove(pgid) else {
            continue;
        };
        if !any_still_there(members) {
            continue;
        }
        for member in now {
            if !members.contains(&member) {
                members.push(member);
            }
        }
    }
}

/// Whether one of `members` (pid and start time) is still running: the same process, not
/// a later one that took its number.
fn any_still_there(members: &[(u32, u64)]) -> bool {
    members
        .iter()
        .any(|(pid, ticks)| start_ticks(*pid) == Some(*ticks))
}

/// Whether process number `pid` is taken now: by a process in any state (a zombie too), or
/// a thread. Asked of the kernel, not of /proc: it needs no file descriptor and answers in
/// this process's pid namespace.
pub(crate) fn number_taken(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::unistd::getpgid(Some(Pid::from_raw(pid))),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Whether a signal to process group `pgid`, led by the job's shell started at `ticks`, reaches
/// only the job: its shell is still there (running, or ended and not yet collected), or the
/// number is nobody's. The kernel gives out no number some process still has as its group, so
/// a group that outlived its shell keeps its number; a process now numbered `pgid` that is not
/// the shell took the number after the shell's group was gone, and may lead a group of its own.
/// Where that cannot be told (/proc is not this pid namespace's, or unreadable: out of
/// descriptors), the group is signalled, as it always was. Between this check and the signal
/// the number would have to be freed and go round every other number to reach another group.
fn shell_or_free(pgid: u32, ticks: u64) -> bool {
    if !number_taken(pgid) || !proc_is_ours() {
        return true;
    }
    match process_stat(pgid) {
        Some(p) => p.start_ticks <= ticks + 1 && p.start_ticks + START_SLACK_TICKS >= ticks,
        None => true,
    }
}

/// Whether /proc shows this process's pid namespace (it may be another's: a namespace entered
/// without mounting its own /proc).
fn proc_is_ours() -> bool {
    static OURS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OURS.get_or_init(|| {
        fs::read_link("/proc/self")
            .ok()
            .and_then(|p| p.to_str()?.parse::<u32>().ok())
            == Some(std::process::id())
    })
}

/// Whether process `pgid` is still the job's shell logged as started at `ticks`: not a later
/// process that took the number (it started after the shell ended, so after `ticks`), nor a
/// shell that ended.
fn is_shell(pgid: u32, ticks: u64) -> bool {
    start_ticks(pgid).is_some_and(|start| start <= ticks + 1 && start + START_SLACK_TICKS >= ticks)
}

/// When process `pid` started, in clock ticks after boot (`None`: no such process, or one that
/// has ended and waits to be collected).
fn start_ticks(pid: u32) -> Option<u64> {
    running_process(pid).map(|p| p.start_ticks)
}

/// What /proc says of a process that is still running.
pub(crate) struct RunningProcess {
    /// Its process group.
    group: u32,
    /// When it started, in clock ticks after boot.
    start_ticks: u64,
}

/// Process `pid` as /proc has it; `None`: no such process, or one that has ended and waits to
/// be collected (a zombie).
pub(crate) fn running_process(pid: u32) -> Option<RunningProcess> {
    process_stat(pid)
        .filter(|p| !p.ended)
        .map(|p| RunningProcess {
            group: p.group,
            start_ticks: p.start_ticks,
        })
}

/// What /proc/PID/stat says of process `pid`, in any state.
struct ProcessStat {
    /// Ended, and waiting to be collected (a zombie) or being removed.
    ended: bool,
    group: u32,
    start_ticks: u64,
}

fn process_stat(pid: u32) -> Option<ProcessStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (in parentheses, which may hold anything): state, ppid,
    // pgrp, ... starttime (field 22 of the line, the 20th of these).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(ProcessStat {
        ended: matches!(fields.first(), Some(&("Z" | "X"))),
        group: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// For tests elsewhere in the crate: the log as a disk that refuses every write leaves it.
#[cfg(test)]
impl ProcessLog {
    /// From now on a start can be neither appended nor written anew, and the log not removed
    /// (`blocker` is a directory with something in it, standing at the log's path).
    pub(crate) fn refuse_writes(&self, blocker: &Path) {
        let mut state = self.lock();
        state.path = blocker.to_path_buf();
        // /dev/full refuses every write with ENOSPC.
        state.file = OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .expect("/dev/full");
    }
}

#[cfg(test)]
mod tests {
    use std::{
        os::unix::process::CommandExt,
        process::{Command, Stdio},
        time::{Duration, Instant},
    };

    use super::*;

    /// Whether a live (not zombie) process is in group `pgid`. Zombies are left out: a
    /// sandbox's init may be slow to reap them.
    fn group_alive(pgid: u32) -> bool {
        !group_members(&[pgid]).is_empty()
    }

    /// Waits until group `pgid` holds a live process besides its leader.
    /// Waits until `done` holds; fails with `what` after 5 s.
    fn within_5_s(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for_child_in(pgid: u32) {
        wait_for_others_in(pgid, 1);
    }

    /// Waits until group `pgid` holds `n` live processes besides its leader.
    fn wait_for_others_in(pgid: u32, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let members = group_members(&[pgid]).remove(&pgid).unwrap_or_default();
            if members.iter().filter(|(pid, _)| *pid != pgid).count() >= n {
                return;
            }
            assert!(Instant::now() < deadline, "group {pgid} started no child");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A job-like process group: a shell leading it, with a child in the background.
    fn spawn_group() -> std::process::Child {
        Command::new("sh")
            .args(["-c", "sleep 60 & sleep 60"])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn the_log_and_its_sign_of_life_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("running-jobs");
        // A log left by a release that wrote it 0644 is rewritten 0600.
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let (log, _) = ProcessLog::open(&path).unwrap();
        log.restored();
        let mut files = vec![path.clone()];
        // Without a boot id (no /proc here) no sign of life is written.
        if !boot_id().is_empty() {
            files.push(alive_path(&path));
        }
        for file in files {
            let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
    }

    /// A copy of a running daemon's state directory, started on the same machine, refuses
    /// to open the log (naming the daemon) and stops none of that daemon's jobs; once that
    /// daemon is gone, the log opens and its jobs left running are stopped as usual.
    #[test]
    fn a_copy_of_a_running_daemons_log_stops_nothing_of_it() {
        if boot_id().is_empty() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("running-jobs");
        let mut job = spawn_group();
        fs::write(
            &path,
            format!("boot {}\n+{} {}\n", boot_id(), job.id(), boot_ticks()),
        )
        .unwrap();
        // The daemon that keeps the log: another process, still running.
        let mut daemon = Command::new("sleep").arg("60").spawn().unwrap();
        let started = start_ticks(daemon.id()).unwrap();
        let sign_of_life = |pid: u32, started: u64| {
            let text = format!("{}\t{}\t0\t{pid}\t{started}\n", boot_id(), boot_ticks());
            fs::write(alive_path(&path), text).unwrap();
        };
        sign_of_life(daemon.id(), started);
        let refused = match ProcessLog::open(&path) {
            Ok(_) => panic!("a copy of a running daemon's log opened"),
            Err(e) => e.to_string(),
        };
        assert!(
            refused.contains(&format!("the daemon with pid {}", daemon.id()))
                && refused.contains("is a copy"),
            "{refused}"
        );
        assert!(
            group_alive(job.id()),
            "the running daemon's job was stopped"
        );
        daemon.kill().unwrap();
        daemon.wait().unwrap();
        sign_of_life(daemon.id(), started);
        let (_log, stopped) = ProcessLog::open(&path).unwrap();
        assert_eq!(stopped, vec![job.id()]);
        job.wait().unwrap();
    }

    #[test]
    fn a_restart_stops_the_groups_a_crash_left_running_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("running-jobs");
        let (log, stopped) = ProcessLog::open(&path).unwrap();
        assert!(stopped.is_empty());
        // One job still running at the "crash", one that ended, one whose number now
        // belongs to a later process (recorded long before it started).
        let (mut left, mut done) = (spawn_group(), spawn_group());
        log.started(left.id());
        log.started(done.id());
        log.ended(done.id());
        let mut other = spawn_group();
        let stale = boot_ticks().saturating_sub(60 * TICKS_PER_SEC);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(file, "+{} {stale}", other.id()).unwrap();
        drop(log);

        let (_log, stopped) = ProcessLog::open(&path).unwrap();
        assert_eq!(stopped, vec![left.id()]);
        left.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(left.id()) {
            assert!(
                Instant::now() < deadline,
                "the left group's background sleep lives"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(group_alive(done.id()) && group_alive(other.id()));
        for child in [&mut done, &mut other] {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            child.wait().unwrap();
        }
        // The fresh log holds no group from before (nor the line naming every start: the
        // first run never restored).
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("boot {}\n", boot_id())
        );
    }

    /// A restart in the same boot knows which jobs the previous run started (running, or
    /// ended without its result on disk yet), and still knows after another restart; a log of
    /// another boot, or of a release that did not say starts, or none at all, tells nothing.
    #[test]
    fn a_restart_knows_which_jobs_started_in_this_boot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("running-jobs");
        let (log, _) = ProcessLog::open(&path).unwrap();
        assert_eq!(log.previous_starts(), None, "no log before");
        log.restored();
        log.job_started("running").unwrap();
        log.job_started("ended").unwrap();
        drop(log);
        let both: HashSet<String> = ["running", "ended"].map(String::from).into();
        let (log, _) = ProcessLog::open(&path).unwrap();
        assert_eq!(log.previous_starts(), Some(both.clone()));
        assert_eq!(log.previous_starts(), None, "told once");
        log.job_started("later").unwrap();
        drop(log);
        let (log, _) = ProcessLog::open(&path).unwrap();
        let mut all = both.clone();
        all.insert("later".into());
        assert_eq!(log.previous_starts(), Some(all));
        drop(log);

        // Many starts: the log is rewritten on the way, without the jobs settled (results on
        // disk) but with every other.
        let (log, _) = ProcessLog::open(&path).unwrap();
        log.job_started("long-running").unwrap();
        let job = |i: usize| format!("job-{i:08}-0000-0000-0000-000000000000");
        for i in 0..40_000 {
            log.job_started(&job(i)).unwrap();
            if i % 2 == 0 {
                log.jobs_settled([job(i).as_str()]);
            }
        }
        let size = fs::metadata(&path).unwrap().len();
        assert!(size < 4 * COMPACT_AT, "{size} bytes");
        drop(log);
        let (log, _) = ProcessLog::open(&path).unwrap();
        let starts = log.previous_starts().unwrap();
        assert!(starts.contains("long-running"));
        assert!(
            (0..40_000)
                .filter(|i| i % 2 == 1)
                .all(|i| starts.contains(&job(i)))
        );
        assert!(
            starts.len() < 30_000,
            "settled starts left: {}",
            starts.len()
        );
        // Once the node stops, no job starts.
        log.halt();
        assert_eq!(log.job_started("too late"), Err(NotStarted::Stopping));
        drop(log);

        for text in [
            "boot another boot\nstarts\n>a\n".to_string(),
            format!("boot {}\n>a\n", boot_id()),
        ] {
            fs::write(&path, text).unwrap();
            let (log, _) = ProcessLog::open(&path).unwrap();
            assert_eq!(log.previous_starts(), None);
        }
        fs::remove_file(&path).unwrap();
        let (log, _) = ProcessLog::open(&path).unwrap();
        assert_eq!(log.previous_starts(), None);
    }

    /// In the same boot, the downtime is measured on the boot clock: the wall clock stepped an
    /// hour ahead while the node was down a few seconds does not make it an hour (queued
    /// jobs would not run); of another boot, the wall clock is all there is.
    #[test]
    fn downtime_in_the_same_boot_goes_by_the_boot_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("running-jobs");
        let (log, _) = ProcessLog::open(&path).unwrap();
        log.restored();
        drop(log);
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let stepped = || {
            let file = OpenOptions::new().append(true).open(&path).unwrap();
            file.set_modified(an_hour_ago).unwrap();
        };
        stepped();
        let (log, _) = ProcessLog::open(&path).unwrap();
        assert!(log.previous_down_for().unwrap() < Duration::from_secs(60));
        drop(log);
        fs::write(alive_path(&path), "another boot\t5\t0\n").unwrap();
        stepped();
        let (log, _) = ProcessLog::open(&path).unwrap();
        assert!(log.previous_down_for().unwrap() >= Duration::from_secs(3590));
        drop(log);
        // Said at the boot's start, an hour ago by the wall clock, and the log touched just
        // now by a release that kept no such word: the word is stale, the log's time counts.
        let hour_ago_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            - 3_600_000;
        fs::write(
            alive_path(&path),
            format!("{}\t0\t{hour_ago_ms}\n", boot_id()),
        )
        .unwrap();
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        file.set_modified(SystemTime::now()).unwrap();
        drop(file);
        let (log, _) = ProcessLog::open(&path).unwrap();
        if boot_clock() > Duration::from_secs(120) {
            assert!(log.previous_down_for().unwrap() < Duration::from_secs(60));
        }
    }

    /// Until the node has restored, the log tells a next start no more than the previous log
    /// told this one: a crash right after a start that could not tell which jobs had started
    /// (another boot) must not make the next take every pending job for one never started,
    /// nor a crash right after a long stop make the next think the node was down a moment.
    #[test]
    fn a_crash_before_the_node_restored_tells_the_next_start_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("running-jobs");
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let set_log = |text: String| {
            fs::write(&path, text).unwrap();
            let file = OpenOptions::new().append(true).open(&path).unwrap();
            file.set_modified(an_hour_ago).unwrap();
            // Said alive on the boot clock an hour ago, if it was alive then.
            let _ = fs::remove_file(alive_path(&path));
        };
        let down_an_hour = |log: &ProcessLog| {
            let down = log.previous_down_for().unwrap();
            assert!(down >= Duration::from_secs(3590), "{down:?}");
        };

        // A log of another boot: which jobs started, nobody can tell.
        set_log("boot another boot\nstarts\n>a\n".into());
        let (log, _) = ProcessLog::open(&path).unwrap();
        assert_eq!(log.previous_starts(), None);
        down_an_hour(&log);
        log.touch();
        drop(log); // the crash, before restoring
        let (log, _) = ProcessLog::open(&path).unwrap();
        assert_eq!(log.previous_starts(), None);
        down_an_hour(&log);
        log.restored();
        log.job_started("b").unwrap();
        drop(log);
        let (log, _) = ProcessLog::open(&path).unwrap();
        assert_eq!(log.previous_starts(), Some(["b".to_string()].into()));
        assert!(log.previous_down_for().unwrap() < Duration::from_secs(60));
        drop(log);

        // A log of this boot: what it knew is kept as it was.
        set_log(format!("boot {}\n{STARTS_SAID}\n>a\n", boot_id()));
        for _ in 0..2 {
            let (log, _) = ProcessLog::open(&path).unwrap();
            assert_eq!(log.previous_starts(), Some(["a".to_string()].into()));
            down_an_hour(&log);
        }
    }

    /// A job's shell that starts after the node began to stop is stopped at once.
    #[test]
    fn a_shell_started_while_the_node_stops_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = ProcessLog::open(&dir.path().join("running-jobs")).unwrap();
        log.halt();
        let mut late = spawn_group();
        log.started(late.id());
        late.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(late.id()) {
            assert!(Instant::now() < deadline, "the late group lives on");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A write that fails (a full disk): the log is written anew with every start, or, when
    /// that fails too, removed, so that a restart runs nothing again (it cannot tell what
    /// started); a start that can be neither written nor taken back by removing the log is
    /// refused. Once writing works again the log says every start.
    #[test]
    fn a_failed_write_leaves_a_whole_log_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("running-jobs");
        let (log, _) = ProcessLog::open(&path).unwrap();
        log.restored();
        log.job_started("before").unwrap();
        let full = || OpenOptions::new().append(true).open("/dev/full").unwrap();

        // The append fails, the rewrite works: nothing is lost.
        log.lock().file = full();
        log.job_started("at the full disk").unwrap();
        assert!(!log.lock().broken);
        log.job_started("after").unwrap();
        let started = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        let reopened = || {
            let (log, _) = ProcessLog::open(&path).unwrap();
            log.previous_starts()
        };
        assert_eq!(
            reopened(),
            Some(started(&["before", "at the full disk", "after"]))
        );

        // The append and the rewrite fail (the directory is gone): no log, so a restart
        // would report what was pending interrupted rather than run it again.
        let (log, _) = ProcessLog::open(&path).unwrap();
        let _ = log.previous_starts();
        let moved = dir.path().join("moved");
        fs::create_dir(&moved).unwrap();
        log.lock().path = moved.join("gone").join("running-jobs");
        log.lock().file = full();
        log.job_started("unwritten").unwrap();
        assert!(log.lock().broken);
        assert!(!log.lock().path.exists());
        // Writable again: the next start rewrites the log, the unwritten one included.
        fs::create_dir(moved.join("gone")).unwrap();
        log.job_started("next").unwrap();
        assert!(!log.lock().broken);
        let text = fs::read_to_string(moved.join("gone").join("running-jobs")).unwrap();
        assert!(
            text.contains(">unwritten\n") && text.contains(">next\n"),
            "{text}"
        );

        // The log can be neither appended to nor removed (here: a directory stands at its
        // path): the start is refused, so the job does not run.
        let blocked = dir.path().join("blocked");
        fs::create_dir_all(blocked.join("inside")).unwrap();
        log.lock().path = blocked.clone();
        log.lock().file = full();
        assert_eq!(
            log.job_started("refused"),
            Err(NotStarted::Unrecorded(blocked.display().to_string()))
        );
    }

    /// A shell that ended while its node was down (a zombie waiting to be collected) is not
    /// "left running": nothing is stopped, nothing is said.
    #[test]
    fn a_shell_that_ended_meanwhile_is_not_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("running-jobs");
        let (log, _) = ProcessLog::open(&path).unwrap();
        let mut ended = Command::new("sh")
            .args(["-c", "exit 0"])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        log.started(ended.id());
        drop(log);
        // Not collected yet: a zombie.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fs::read_to_string(format!("/proc/{}/stat", ended.id()))
            .unwrap_or_default()
            .contains(") Z ")
        {
            assert!(Instant::now() < deadline, "the shell never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        let (_log, stopped) = ProcessLog::open(&path).unwrap();
        assert!(stopped.is_empty(), "{stopped:?}");
        ended.wait().unwrap();
    }

    /// A node stopping stops the groups of its running jobs, and only those.
    #[test]
    fn stop_all_stops_the_running_groups() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = ProcessLog::open(&dir.path().join("running-jobs")).unwrap();
        let (mut running, mut ended) = (spawn_group(), spawn_group());
        log.started(running.id());
        log.started(ended.id());
        log.ended(ended.id());
        assert_eq!(log.stop_all(), vec![running.id()]);
        running.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(running.id()) {
            assert!(Instant::now() < deadline, "the running group lives on");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(group_alive(ended.id()));
        let _ = killpg(Pid::from_raw(ended.id() as i32), Signal::SIGKILL);
        ended.wait().unwrap();
    }

    /// A stopping node stops a job's group whose shell ended (collected or not) while a
    /// process it started holds on in the group, and leaves alone a number another process
    /// took after the job's group was gone.
    #[test]
    fn stop_all_stops_groups_that_outlived_their_shell_and_spares_a_taken_number() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = ProcessLog::open(&dir.path().join("running-jobs")).unwrap();
        let left_behind = || {
            Command::new("sh")
                .args(["-c", "sleep 60 & exit 0"])
                .stdin(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap()
        };
        // One shell ended and waits to be collected (a zombie), one was collected: both
        // left a sleep in their group.
        let (mut zombie, mut collected) = (left_behind(), left_behind());
        log.started(zombie.id());
        log.started(collected.id());
        wait_for_child_in(zombie.id());
        wait_for_child_in(collected.id());
        within_5_s("the shell never ended", || {
            process_stat(zombie.id()).is_some_and(|p| p.ended)
        });
        collected.wait().unwrap();
        assert!(!number_taken(collected.id()));
        // A process that took a job's number: it started long after the logged shell.
        let mut other = spawn_group();
        let its_start = process_stat(other.id()).unwrap().start_ticks;
        log.lock()
            .live
            .insert(other.id(), its_start.saturating_sub(5 * TICKS_PER_SEC));
        let mut stopped = log.stop_all();
        stopped.sort_unstable();
        let mut expected = vec![zombie.id(), collected.id()];
        expected.sort_unstable();
        assert_eq!(stopped, expected);
        within_5_s("a left-behind process lives on", || {
            !group_alive(zombie.id()) && !group_alive(collected.id())
        });
        assert!(group_alive(other.id()), "another's group was stopped");
        zombie.wait().unwrap();
        let _ = killpg(Pid::from_raw(other.id() as i32), Signal::SIGKILL);
        other.wait().unwrap();
    }

    /// A node stopping asks its jobs' groups to end first: a shell that traps SIGTERM gets to
    /// run its trap (here: write a file), and its group is stopped only after.
    #[test]
    fn a_stop_asks_the_jobs_to_end_before_it_stops_them() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = ProcessLog::open(&dir.path().join("running-jobs")).unwrap();
        let cleaned = dir.path().join("cleaned");
        let script = format!(
            "trap 'echo done > {}; exit 0' TERM; sleep 60 & wait",
            cleaned.display()
        );
        let mut job = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        log.started(job.id());
        // The shell must have set its trap before it is asked: it has once it started sleep.
        wait_for_child_in(job.id());
        let mut stubborn = Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 60 & wait"])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        log.started(stubborn.id());
        wait_for_child_in(stubborn.id());
        let mut asked = log.terminate_all();
        asked.sort_unstable();
        let mut both = vec![job.id(), stubborn.id()];
        both.sort_unstable();
        assert_eq!(asked, both);
        assert!(job.wait().unwrap().success(), "its trap ran and it ended");
        assert_eq!(fs::read_to_string(&cleaned).unwrap(), "done\n");
        // Its sleep ends on the same SIGTERM, but shows in /proc until it next runs (later on
        // a busy machine): until then the job's group is one a stop would still stop.
        within_5_s("the job's sleep lives on", || !group_alive(job.id()));
        // The stubborn shell is still there: the jobs have not all ended.
        assert!(!log.jobs_ended());
        log.ended(job.id());
        assert!(!log.jobs_ended());
        assert_eq!(log.stop_all(), vec![stubborn.id()]);
        stubborn.wait().unwrap();
        log.ended(stubborn.id());
        within_5_s("the stubborn group lives on", || log.jobs_ended());
    }

    /// A job's shell that ends at once on SIGTERM while a child of it still cleans up: the
    /// job has not ended until the child has, and a stop then stops the child too, its
    /// shell gone and logged ended.
    #[test]
    fn a_job_has_ended_only_once_its_children_have() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = ProcessLog::open(&dir.path().join("running-jobs")).unwrap();
        let mut job = Command::new("sh")
            .args(["-c", "sh -c 'trap \"\" TERM; sleep 60 & wait'; true"])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        log.started(job.id());
        // The inner shell and its sleep: its trap is set.
        wait_for_others_in(job.id(), 2);
        log.terminate_all();
        job.wait().unwrap();
        log.ended(job.id());
        // The shell is gone; the child that ignores SIGTERM is not.
        assert!(!log.jobs_ended());
        assert_eq!(log.stop_all(), vec![job.id()]);
        within_5_s("the child lives on", || {
            !group_alive(job.id()) && log.jobs_ended()
        });
    }

    /// A job whose cleanup starts a process of its own and ends: that process is the job's
    /// too (it is in the job's group), waited for, and stopped with the group at the end of
    /// the grace, though it was not there when the job was asked to end.
    #[test]
    fn a_process_the_cleanup_starts_is_stopped_with_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = ProcessLog::open(&dir.path().join("running-jobs")).unwrap();
        let mut job = Command::new("sh")
            .args([
                "-c",
                "trap 'sleep 60 & sleep 0.5; exit 0' TERM; sleep 60 & wait",
            ])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        log.started(job.id());
        wait_for_child_in(job.id());
        log.terminate_all();
        // Looked at as often as a stopping node does, until the shell has ended.
        let deadline = Instant::now() + Duration::from_secs(10);
        while job.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the trap did not end the shell");
            log.jobs_ended();
            std::thread::sleep(Duration::from_millis(20));
        }
        log.ended(job.id());
        // The sleep the trap started is all that is left of the job, and still running.
        assert!(group_alive(job.id()));
        assert!(!log.jobs_ended());
        assert_eq!(log.stop_all(), vec![job.id()]);
        within_5_s("the trap's process lives on", || {
            !group_alive(job.id()) && log.jobs_ended()
        });
    }

    /// The next start tells a clean stop (which stopped the jobs running) from a crash, once:
    /// the log it starts says nothing of its own stop until it stops.
    #[test]
    fn a_clean_stop_is_told_from_a_crash() {
        if boot_id().is_empty() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("running-jobs");
        let (log, _) = ProcessLog::open(&path).unwrap();
        log.restored();
        log.job_started("j").unwrap();
        drop(log);
        let (log, _) = ProcessLog::open(&path).unwrap();
        assert!(!log.previous_stopped_cleanly(), "a crash (no stop said)");
        log.restored();
        log.job_started("k").unwrap();
        log.stop_all();
        drop(log);
        let (log, _) = ProcessLog::open(&path).unwrap();
        assert!(log.previous_stopped_cleanly());
        assert!(log.previous_starts().is_some_and(|s| s.contains("k")));
        drop(log);
        let (log, _) = ProcessLog::open(&path).unwrap();
        assert!(
            !log.previous_stopped_cleanly(),
            "that start did not stop cleanly"
        );
    }

    #[test]
    fn a_log_from_another_boot_stops_nothing_and_a_long_one_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("running-jobs");
        fs::write(&path, "boot another\n+1234 5\n").unwrap();
        let (log, stopped) = ProcessLog::open(&path).unwrap();
        assert!(stopped.is_empty());
        log.started(7);
        for _ in 0..100_000 {
            log.started(8);
            log.ended(8);
        }
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.len() as u64 <= COMPACT_AT, "{}", text.len());
        assert!(text.contains("+7 "), "the live entry survives compaction");
    }
}
