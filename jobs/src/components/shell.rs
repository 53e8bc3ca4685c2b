//! RUN and WAIT: shell commands on the node (with the run's envs, never the daemon's own
//! `DIRECTORD_MESH_*` settings), their output read line by line (live when the job streams),
//! their timeout (the whole process group is killed), and spawns retried when the machine is
//! short of processes or descriptors.

use std::{
    process::Stdio,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use serde_json::{Map, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader},
    process::Command,
    sync::watch,
    time::Instant,
};
use tracing::warn;

use super::{
    AFTER_EXIT_GRACE, Finished, LineSink, MAX_LINE_BYTES, MAX_OUTPUT_BYTES, OutputLine,
    OutputStream,
};
use crate::{
    cache::Cache,
    processes::{self, ProcessLog},
    spec::{WaitFor, env_problem},
    template,
};

/// Jobs waiting for file descriptors or processes to start their shell, in turn. The limits
/// are the process's, so the turn is too.
static SPAWN_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How many jobs wait for their turn: while any does, a new job queues behind them rather
/// than take what frees up first.
static SPAWN_WAITERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What a shell command runs with.
pub(super) struct CommandContext<'a> {
    pub(super) cache: &'a Cache,
    /// The job's run: its ENVs are the run's own, its templates render with its args
    /// ([`Cache::envs_for_run`], [`Cache::args_for_run`]; taken to render, then let go: a
    /// change while they are held copies them all).
    pub(super) run_id: &'a str,
    pub(super) sink: Option<&'a LineSink>,
    pub(super) deadline: Instant,
    pub(super) processes: Option<&'a ProcessLog>,
}

impl CommandContext<'_> {
    /// `command` rendered with the run's args (plain text as it is, without asking for them).
    fn render(&self, command: &str) -> Result<String, String> {
        if !template::is_template(command) {
            return Ok(command.to_string());
        }
        template::render(command, &self.cache.args_for_run(self.run_id))
    }
}

pub(super) async fn run_command(
    command: &str,
    stdout_arg: Option<&str>,
    no_block: bool,
    sh: &CommandContext<'_>,
) -> Finished {
    let cache = sh.cache;
    let command = match sh.render(command) {
        Ok(c) if c.trim().is_empty() => {
            return Finished::fail(
                format!("'{command}' rendered to an empty command"),
                "nothing to run",
            );
        }
        Ok(c) => c,
        Err(e) => return Finished::fail(&e, "the command did not render"),
    };
    // The command as a result's info names it (a rendered command may be huge).
    let shown = shown_command(&command);
    if no_block {
        let mut cmd = match shell(&command, cache, sh.run_id) {
            Ok(cmd) => cmd,
            Err(why) => return Finished::fail(why.clone(), format!("{why}: {shown}")),
        };
        // Left running when the handle goes (it is the point of --no-block).
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false);
        return match cmd.spawn() {
            // Dropping the handle leaves the process running; tokio reaps it when it exits.
            Ok(child) => Finished::ok(
                "",
                format!(
                    "started in the background (pid {}): {shown}",
                    child.id().unwrap_or(0)
                ),
            ),
            Err(e) => {
                let why = format!("cannot start /bin/sh: {e}");
                Finished::fail(why.clone(), format!("{why}: {shown}"))
            }
        };
    }
    let r = run_shell(&command, sh).await;
    let (stdout_cut, stdout_not_utf8) = (r.stdout_cut, r.stdout_not_utf8);
    let mut finished = r.into_finished(&shown);
    if finished.success
        && let Some(name) = stdout_arg
    {
        let value = finished.stdout.trim().to_string();
        if stdout_cut {
            finished.success = false;
            finished.info = format!(
                "--stdout-arg {name}: the output is over {MAX_OUTPUT_BYTES} bytes, too large to store"
            );
        } else if stdout_not_utf8 {
            finished.success = false;
            finished.info =
                format!("--stdout-arg {name}: the output is not UTF-8 text; an arg holds text");
        } else if value.is_empty() {
            finished.success = false;
            finished.info = format!("--stdout-arg {name}: the command printed nothing to store");
        } else {
            cache.merge_args_of(
                Some(sh.run_id),
                Map::from_iter([(name.to_string(), Value::String(value))]),
                false,
            );
        }
    }
    finished
}

/// What the names of the daemon's own settings start with (`DIRECTORD_MESH_TOKEN`, the mesh's
/// key, among them).
const DAEMON_VARS: &str = "DIRECTORD_MESH_";

/// The names of the daemon's own settings in its environment, looked up once: a process's
/// environment is read whole to find them, and a node spawns a shell per job.
fn daemon_vars() -> &'static [std::ffi::OsString] {
    static NAMES: std::sync::OnceLock<Vec<std::ffi::OsString>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        std::env::vars_os()
            .map(|(name, _)| name)
            .filter(|name| name.as_encoded_bytes().starts_with(DAEMON_VARS.as_bytes()))
            .collect()
    })
}

/// `/bin/sh -c command` as a job runs it (RUN, WAIT --cmd): with the run's envs, and without
/// the daemon's own settings (`DIRECTORD_MESH_*`), which it would otherwise inherit: a job
/// that prints its environment would hand out the mesh's key. An env of the job's own of such
/// a name is passed. An env no process environment can hold (NUL in it, left in the cache by
/// an older release) fails the job with its name, rather than as a spawn error that names
/// nothing.
pub(super) fn shell(command: &str, cache: &Cache, run_id: &str) -> Result<Command, String> {
    let envs = cache.envs_for_run(run_id);
    if let Some(why) = envs.iter().find_map(|(k, v)| env_problem(k, v)) {
        return Err(format!(
            "cannot start /bin/sh: {why} (set it again with ENV, or CACHEEVICT envs)"
        ));
    }
    let mut cmd = Command::new("/bin/sh");
    for name in daemon_vars() {
        cmd.env_remove(name);
    }
    cmd.arg("-c")
        .arg(command)
        .envs(envs)
        .stdin(Stdio::null())
        // Its own process group, so a timeout can kill everything the command started. A job
        // dropped before its shell ends kills that group (`Running`), or leaves it to the
        // node stopping, which asks it to end first: the handle itself kills nothing.
        .process_group(0)
        .kill_on_drop(false);
    Ok(cmd)
}

/// What a shell command did.
pub(super) struct ShellResult {
    spawn_error: Option<String>,
    exit: Option<std::process::ExitStatus>,
    timed_out: Option<Duration>,
    stdout: String,
    /// Whether `stdout` is only the first `MAX_OUTPUT_BYTES` of what the command printed.
    stdout_cut: bool,
    /// Whether stdout had bytes that are not UTF-8 (shown as U+FFFD in `stdout`).
    stdout_not_utf8: bool,
    stderr: String,
}

impl ShellResult {
    /// The shell did not start, for the reason `why`.
    fn not_started(why: String) -> ShellResult {
        ShellResult {
            spawn_error: Some(why),
            exit: None,
            timed_out: None,
            stdout: String::new(),
            stdout_cut: false,
            stdout_not_utf8: false,
            stderr: String::new(),
        }
    }

    /// `command`: as the info shows it (see [`shown_command`]).
    fn into_finished(self, command: &str) -> Finished {
        if let Some(e) = self.spawn_error {
            // The cause first: it is what `--poll` shows of a failed job.
            let info = format!("{e}: {command}");
            return Finished::fail(e, info);
        }
        let (success, info) = match (self.timed_out, self.exit) {
            (Some(after), _) => (
                false,
                format!(
                    "timed out after {:.0} s; its process group was killed: {command}",
                    after.as_secs_f64()
                ),
            ),
            (None, Some(status)) if status.success() => (true, command.to_string()),
            (None, Some(status)) => match status.code() {
                Some(code) => (false, format!("exit code {code}: {command}")),
                None => (false, format!("killed by a signal ({status}): {command}")),
            },
            (None, None) => (false, format!("no exit status: {command}")),
        };
        Finished {
            success,
            stdout: self.stdout.trim_end().to_string(),
            stderr: self.stderr.trim_end().to_string(),
            info,
        }
    }
}

/// Most bytes of a command a result's info shows: a command rendered from a large arg would
/// otherwise make the result too large to send, and its output and error with it.
const SHOWN_COMMAND_BYTES: usize = 16 * 1024;

/// `command` as a result's info shows it: whole, or its first [`SHOWN_COMMAND_BYTES`] and how
/// long it was.
fn shown_command(command: &str) -> std::borrow::Cow<'_, str> {
    if command.len() <= SHOWN_COMMAND_BYTES {
        return command.into();
    }
    let mut end = SHOWN_COMMAND_BYTES;
    while !command.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}... [the command is {} bytes long]",
        &command[..end],
        command.len()
    )
    .into()
}

/// A stream's output so far, and whether it was still open when reading stopped.
pub(super) struct Read {
    text: String,
    /// The text is the first `MAX_OUTPUT_BYTES` of the stream (a note says so at its end).
    cut: bool,
    still_open: bool,
    /// The text kept had bytes that are not UTF-8: it shows each run of them as U+FFFD.
    not_utf8: bool,
}

/// Reads one stream to its end, or until `AFTER_EXIT_GRACE` after `exited` turns true.
pub(super) async fn read_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    which: OutputStream,
    sink: Option<LineSink>,
    mut exited: watch::Receiver<bool>,
) -> Read {
    let mut reader = BufReader::new(stream);
    let mut out = String::new();
    let mut cut = false;
    let mut still_open = false;
    let mut not_utf8 = false;
    let mut offset = 0usize;
    let mut buf = Vec::new();
    // The first bytes of a character that a piece of an over-long line cut in two: they go
    // with the next piece, so valid text never shows as U+FFFD where a cut fell.
    let mut carry = Vec::new();
    let stop = async move {
        // An error means the shell's side is gone without word: read on to the end.
        if exited.wait_for(|e| *e).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(AFTER_EXIT_GRACE).await;
    };
    tokio::pin!(stop);
    loop {
        buf.clear();
        buf.append(&mut carry);
        let mut limited = (&mut reader).take(MAX_LINE_BYTES);
        let read = tokio::select! {
            r = limited.read_until(b'\n', &mut buf) => r,
            _ = &mut stop => {
                still_open = true;
                Ok(0)
            }
        };
        // More may follow: this piece ended at the cut of an over-long line.
        let more = matches!(read, Ok(n) if n > 0) && buf.last() != Some(&b'\n');
        // Bytes of a line begun when reading stopped are in `buf` (read_until keeps them), as
        // are those carried over to a stream's end.
        let read = match read {
            Ok(0) if still_open || !buf.is_empty() => Ok(buf.len()),
            other => other,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if more {
                    let cut = buf.len() - split_char_at_end(&buf);
                    carry.extend(buf.drain(cut..));
                    if buf.is_empty() {
                        continue;
                    }
                }
                let line = String::from_utf8_lossy(&buf);
                if let Some(sink) = &sink {
                    // Waits for room: the node takes lines at once (it never waits on the
                    // network), so a streaming job slows down only when its node does. Past
                    // the node, lines may be dropped; a reader fills them in from the result.
                    let _ = sink
                        .send(OutputLine {
                            stream: which,
                            offset: offset as u64,
                            text: line.to_string(),
                        })
                        .await;
                }
                offset += line.len();
                // What is kept is a prefix of the output: once one piece does not fit,
                // nothing after it is kept either.
                if !cut && out.len() + line.len() <= MAX_OUTPUT_BYTES {
                    // Borrowed exactly when every byte was UTF-8. Only what is kept counts:
                    // the note is about the text the result shows.
                    not_utf8 |= matches!(line, std::borrow::Cow::Owned(_));
                    out.push_str(&line);
                } else {
                    cut = true;
                }
            }
        }
        if still_open {
            break;
        }
    }
    if still_open {
        // What the process still writes is read and dropped until it closes the pipe: a
        // closed pipe would kill it (SIGPIPE) at its next write. One task for each such
        // stream, ending with the process.
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
        });
    }
    if cut {
        out.push_str(&format!("\n[output cut at {MAX_OUTPUT_BYTES} bytes]"));
    }
    Read {
        text: out,
        cut,
        still_open,
        not_utf8,
    }
}

/// How many bytes at the end of `bytes` are the start of a UTF-8 character that bytes yet to
/// come may complete (0 to 3): those of a character cut where an over-long line was.
fn split_char_at_end(bytes: &[u8]) -> usize {
    // A character is at most 4 bytes: a cut one starts within the last 3.
    let Some(start) = (bytes.len().saturating_sub(3)..bytes.len())
        .rev()
        .find(|&i| bytes[i] & 0b1100_0000 != 0b1000_0000)
    else {
        return 0;
    };
    match std::str::from_utf8(&bytes[start..]) {
        // Valid as far as it goes, and incomplete: the rest may come.
        Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => bytes.len() - start,
        _ => 0,
    }
}

/// At most this long between tries to start a job's shell that could not start for want of
/// file descriptors or processes (it is tried until the job's timeout).
pub(super) const SPAWN_RETRY_EVERY: Duration = Duration::from_millis(500);

/// Whether a failed spawn may work a moment later: the process (or the system) is out of
/// file descriptors, or of processes.
pub(super) fn short_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE || code == nix::libc::EAGAIN
    )
}

/// Starts `cmd`; when the node is short of descriptors or processes, tries again in turn
/// until `deadline`. Returns the child and whether it had to wait.
pub(super) async fn spawn_in_turn(
    cmd: &mut Command,
    deadline: Instant,
) -> std::io::Result<(tokio::process::Child, bool)> {
    use std::sync::atomic::Ordering;
    let mut short = None;
    if SPAWN_WAITERS.load(Ordering::SeqCst) == 0 {
        match cmd.spawn() {
            Err(e) if short_of_resources(&e) => short = Some(e),
            other => return other.map(|child| (child, false)),
        }
    }
    // Said when the first job starts to wait, not for each.
    if SPAWN_WAITERS.fetch_add(1, Ordering::SeqCst) == 0
        && let Some(e) = &short
    {
        warn!(
            "cannot start /bin/sh for a job: {e}; jobs wait for their turn until their timeout \
             (raise the daemon's limit, e.g. LimitNOFILE= in its systemd unit)"
        );
    }
    // Counted down however this ends (the job's task may be dropped while it waits).
    struct Waiting;
    impl Drop for Waiting {
        fn drop(&mut self) {
            SPAWN_WAITERS.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _waiting = Waiting;
    let Ok(_turn) = tokio::time::timeout_at(deadline, SPAWN_TURN.lock()).await else {
        return Err(std::io::Error::other(
            "the node was short of file descriptors or processes until the job's timeout",
        ));
    };
    let mut pause = Duration::from_millis(10);
    // Whether this job itself could not start at once (one that only queued behind others
    // did wait, but its stderr need not say so).
    let mut short_here = short.is_some();
    loop {
        match cmd.spawn() {
            Err(e) if short_of_resources(&e) && Instant::now() + pause < deadline => {
                short_here = true;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(SPAWN_RETRY_EVERY);
            }
            other => return other.map(|child| (child, short_here)),
        }
    }
}

pub(super) async fn run_shell(command: &str, sh: &CommandContext<'_>) -> ShellResult {
    let (sink, deadline) = (sh.sink, sh.deadline);
    let started = Instant::now();
    let mut cmd = match shell(command, sh.cache, sh.run_id) {
        Ok(cmd) => cmd,
        Err(why) => return ShellResult::not_started(why),
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // A node short of file descriptors or processes for a moment (many jobs at once) is
    // waited on, within the job's timeout, rather than failing the job: in turn, first come
    // first served, while any job waits.
    let spawned = match spawn_in_turn(&mut cmd, deadline).await {
        Ok((child, waited)) => Ok((child, waited.then(|| started.elapsed()))),
        Err(e) => Err(e),
    };
    let (mut child, waited_for_spawn) = match spawned {
        Ok(c) => c,
        Err(e) => return ShellResult::not_started(format!("cannot start /bin/sh: {e}")),
    };
    let pid = child.id();
    // Set once the shell is collected: its number may then go to another process.
    let collected = AtomicBool::new(false);
    // Written down while it runs: a node restarted after a crash stops the group.
    let mut running = pid.map(|pid| Running::new(sh.processes, pid, &collected));
    // Both pipes were requested above; the readers and the wait share this task.
    let out = child.stdout.take();
    let err = child.stderr.take();
    let (exited_tx, exited) = watch::channel(false);
    let collect = async {
        let closed = || Read {
            text: String::new(),
            cut: false,
            still_open: false,
            not_utf8: false,
        };
        let read_out = async {
            match out {
                Some(s) => read_lines(s, OutputStream::Stdout, sink.cloned(), exited.clone()).await,
                None => closed(),
            }
        };
        let read_err = async {
            match err {
                Some(s) => read_lines(s, OutputStream::Stderr, sink.cloned(), exited.clone()).await,
                None => closed(),
            }
        };
        let wait = async {
            let status = child.wait().await;
            collected.store(true, Ordering::Relaxed);
            let _ = exited_tx.send(true);
            status
        };
        let (status, stdout, mut stderr) = tokio::join!(wait, read_out, read_err);
        if stdout.still_open || stderr.still_open {
            if !stderr.text.is_empty() && !stderr.text.ends_with('\n') {
                stderr.text.push('\n');
            }
            stderr.text.push_str(&format!(
                "[the shell exited but a process it started still holds its output; the job \
                 ended {} s later and left that process running]",
                AFTER_EXIT_GRACE.as_secs()
            ));
        }
        if let Some(waited) = waited_for_spawn {
            if !stderr.text.is_empty() && !stderr.text.ends_with('\n') {
                stderr.text.push('\n');
            }
            stderr.text.push_str(&format!(
                "[the shell waited {:.1} s to start: the node was short of file descriptors or \
                 processes]",
                waited.as_secs_f64()
            ));
        }
        let not_utf8: Vec<&str> = [(stdout.not_utf8, "stdout"), (stderr.not_utf8, "stderr")]
            .into_iter()
            .filter_map(|(yes, name)| yes.then_some(name))
            .collect();
        if !not_utf8.is_empty() {
            if !stderr.text.is_empty() && !stderr.text.ends_with('\n') {
                stderr.text.push('\n');
            }
            stderr.text.push_str(&format!(
                "[{} had bytes that are not UTF-8 text; they are shown as U+FFFD]",
                not_utf8.join(" and ")
            ));
        }
        (status, stdout, stderr.text)
    };
    tokio::pin!(collect);
    let mut timed_out = None;
    let result = match tokio::time::timeout_at(deadline, &mut collect).await {
        Ok(r) => Some(r),
        Err(_) => {
            timed_out = Some(started.elapsed());
            if let Some(pid) = pid {
                kill_job_group(pid, collected.load(Ordering::Relaxed));
            }
            // The killed group's pipes close, and the readers end with what was read before
            // the kill (a process that left the group and holds them is read for
            // `AFTER_EXIT_GRACE` once the shell is reaped, as after any exit).
            tokio::time::timeout(AFTER_KILL_GRACE, &mut collect)
                .await
                .ok()
        }
    };
    if let Some(r) = running.as_mut() {
        r.waited = true;
    }
    match result {
        Some((status, stdout, stderr)) => ShellResult {
            spawn_error: None,
            exit: if timed_out.is_some() {
                None
            } else {
                status.ok()
            },
            timed_out,
            stdout_cut: stdout.cut,
            stdout_not_utf8: stdout.not_utf8,
            stdout: stdout.text,
            stderr,
        },
        None => ShellResult {
            spawn_error: None,
            exit: None,
            timed_out,
            stdout: String::new(),
            stdout_cut: false,
            stdout_not_utf8: false,
            stderr: String::new(),
        },
    }
}

/// How long a timed-out job's output is still read once its process group was killed: the
/// readers end as its pipes close, or `AFTER_EXIT_GRACE` after its shell was reaped. Within
/// the executor's own grace past the deadline.
const AFTER_KILL_GRACE: Duration = AFTER_EXIT_GRACE.saturating_add(Duration::from_millis(500));

/// A job's process group while its shell runs: in the [`ProcessLog`] (if the node keeps one),
/// and killed if the job is dropped before its shell was waited for (the node shutting down,
/// the executor's last-resort timeout), so nothing of it runs on unsupervised.
pub(super) struct Running<'a> {
    log: Option<&'a ProcessLog>,
    pgid: u32,
    waited: bool,
    /// Whether the shell was collected (see [`kill_job_group`]).
    collected: &'a AtomicBool,
}

impl<'a> Running<'a> {
    fn new(log: Option<&'a ProcessLog>, pgid: u32, collected: &'a AtomicBool) -> Self {
        if let Some(log) = log {
            log.started(pgid);
        }
        Running {
            log,
            pgid,
            waited: false,
            collected,
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.waited {
            // The node is stopping and asked the group to end: it stays logged, and the node
            // stops what is left of it after the grace (`ProcessLog::stop_all`).
            if self.log.is_some_and(ProcessLog::terminating) {
                return;
            }
            kill_job_group(self.pgid, self.collected.load(Ordering::Relaxed));
        }
        if let Some(log) = self.log {
            log.ended(self.pgid);
        }
    }
}

/// SIGKILL to the process group of a job's shell (the shell and everything it started).
/// Once the shell is `collected` its number is free unless the group still has members (the
/// kernel gives out no number some process has as its group): a process numbered `pgid` then
/// took the number after the job's group was gone, and the group is someone else's. (Between
/// the check and the signal the number would have to go round every other number.)
pub(super) fn kill_job_group(pgid: u32, collected: bool) {
    if collected && processes::number_taken(pgid) {
        return;
    }
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// How far past the job's deadline a WAIT of seconds may end: the moment between the job's
/// clock starting and the wait's (longer on a jobs thread busy rendering; well within the
/// executor's grace past the deadline).
const WAIT_SLACK: Duration = Duration::from_millis(250);

/// WAIT: for a time, or for a command to succeed; either ends at the job's deadline.
pub(super) async fn wait_for(wait: &WaitFor, sh: &CommandContext<'_>) -> Finished {
    let started = tokio::time::Instant::now();
    let timed_out = |what: String| {
        Finished::fail(
            "",
            format!(
                "timed out after {:.0} s (the job's --timeout), {what}",
                started.elapsed().as_secs_f64()
            ),
        )
    };
    match wait {
        WaitFor::Seconds(s) => {
            let until = started + crate::spec::bounded_secs_f64(*s);
            // The job's clock started a moment before the wait: a wait as long as the job's
            // timeout fits it (it timed out, by microseconds).
            if until > sh.deadline + WAIT_SLACK {
                tokio::time::sleep_until(sh.deadline).await;
                return timed_out(format!("before the wait of {s} s ended"));
            }
            tokio::time::sleep_until(until).await;
            Finished::ok(format!("waited {s} s"), "")
        }
        WaitFor::Command {
            command,
            retry,
            retry_wait,
        } => {
            let command = match sh.render(command) {
                Ok(c) => c,
                Err(e) => return Finished::fail(&e, "the command did not render"),
            };
            let mut last = None;
            for attempt in 1..=*retry {
                if tokio::time::Instant::now() >= sh.deadline {
                    let tries = attempt - 1;
                    return Finished {
                        stderr: last
                            .map(|r: ShellResult| r.stderr.trim_end().to_string())
                            .unwrap_or_default(),
                        ..timed_out(format!("condition not met after {tries} tries: {command}"))
                    };
                }
                let r = run_shell(&command, sh).await;
                if r.timed_out.is_some() {
                    let killed =
                        format!("on try {attempt}, whose process group was killed: {command}");
                    return Finished {
                        stdout: r.stdout,
                        stderr: r.stderr,
                        ..timed_out(killed)
                    };
                }
                // A shell that did not start says why (no try would fare better).
                if r.spawn_error.is_some() {
                    return r.into_finished(&command);
                }
                if r.exit.is_some_and(|s| s.success()) {
                    return Finished::ok(
                        r.stdout.trim_end(),
                        format!("condition met on try {attempt}: {command}"),
                    );
                }
                last = Some(r);
                if attempt < *retry {
                    let next =
                        tokio::time::Instant::now() + crate::spec::bounded_secs_f64(*retry_wait);
                    tokio::time::sleep_until(next.min(sh.deadline)).await;
                }
            }
            let stderr = last
                .map(|r| r.stderr.trim_end().to_string())
                .unwrap_or_default();
            Finished::fail(
                stderr,
                format!("condition not met after {retry} tries: {command}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timed-out or dropped job kills its shell's group, but once the shell was collected
    /// a process now numbered like it is another's, and its group is left alone.
    #[test]
    fn a_job_group_is_killed_only_while_its_number_is_the_jobs() {
        use std::os::unix::process::CommandExt;
        let spawn = || {
            std::process::Command::new("sleep")
                .arg("60")
                .process_group(0)
                .spawn()
                .unwrap()
        };
        // The number is another process's: left alone.
        let mut other = spawn();
        kill_job_group(other.id(), true);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            other.try_wait().unwrap().is_none(),
            "another's group was killed"
        );
        // The shell not collected yet: its number is the job's, killed.
        kill_job_group(other.id(), false);
        let status = other.wait().unwrap();
        assert!(!status.success(), "{status:?}");
        // The shell collected, a process it started still in its group: the number is
        // still the job's (nobody has it), and what is left of the group is killed.
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 60 > /dev/null & echo $!"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut said = String::new();
        std::io::Read::read_to_string(&mut shell.stdout.take().unwrap(), &mut said).unwrap();
        let left: u32 = said.trim().parse().unwrap();
        shell.wait().unwrap();
        assert!(
            processes::running_process(left).is_some(),
            "the sleep runs on"
        );
        kill_job_group(shell.id(), true);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while processes::running_process(left).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "what the job left lives on"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads `bytes` as a job's stdout; returns what was kept and the lines sent live.
    async fn read_all(bytes: Vec<u8>) -> (Read, Vec<OutputLine>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let (_exited, exited) = watch::channel(false);
        let read = read_lines(
            std::io::Cursor::new(bytes),
            OutputStream::Stdout,
            Some(tx),
            exited,
        )
        .await;
        let mut lines = Vec::new();
        while let Ok(line) = rx.try_recv() {
            lines.push(line);
        }
        (read, lines)
    }

    /// A line longer than one read, of characters the cut between pieces falls inside, is
    /// the text it was, whole and in each piece; a character cut at the stream's end, or
    /// bytes that are no text, still show as U+FFFD.
    #[tokio::test]
    async fn a_character_cut_between_pieces_of_a_long_line_stays_whole() {
        for text in [
            format!("{}\n", "あ".repeat(30000)),
            "あ".repeat(30000),
            format!("a{}", "𝄞".repeat(40000)),
            format!("ab{}\nnext\n", "é".repeat(70000)),
        ] {
            let (read, lines) = read_all(text.clone().into_bytes()).await;
            assert!(!read.not_utf8, "{} bytes", text.len());
            assert_eq!(read.text, text);
            assert!(lines.len() > 1, "not cut: {} bytes", text.len());
            let mut offset = 0;
            for line in &lines {
                assert_eq!(line.offset, offset);
                assert!(!line.text.contains('\u{FFFD}'));
                offset += line.text.len() as u64;
            }
        }
        for (bytes, shown) in [
            (b"ab\xE3\x81".to_vec(), "ab\u{FFFD}"),
            (b"a\xFFb\n".to_vec(), "a\u{FFFD}b\n"),
            (b"\xE3\x81\n".to_vec(), "\u{FFFD}\n"),
        ] {
            let (read, _) = read_all(bytes).await;
            assert!(read.not_utf8, "{shown:?}");
            assert_eq!(read.text, shown);
        }
    }

    /// Bytes that are no text past the output kept leave the kept text's note out: the
    /// result shows none of them (the lines sent live show them, replaced).
    #[tokio::test]
    async fn bytes_that_are_no_text_count_only_in_the_output_kept() {
        // Lines of 32 KiB: few enough for `read_all`'s channel.
        let line = format!("{}\n", "a".repeat(32 * 1024 - 1));
        let mut bytes = line.repeat(MAX_OUTPUT_BYTES / line.len() + 1);
        bytes.push_str("end\n");
        let mut bytes = bytes.into_bytes();
        bytes.extend_from_slice(b"\xFF\n");
        let (read, lines) = read_all(bytes).await;
        assert!(read.cut && !read.not_utf8);
        assert!(!read.text.contains('\u{FFFD}'));
        assert_eq!(lines.last().map(|l| l.text.as_str()), Some("\u{FFFD}\n"));
        let (read, _) = read_all(b"a\xFFb\n".to_vec()).await;
        assert!(!read.cut && read.not_utf8);
    }

    #[test]
    fn the_start_of_a_cut_character_is_found() {
        for (bytes, n) in [
            (&b""[..], 0),
            (b"abc", 0),
            (b"a\xE3", 1),
            (b"a\xE3\x81", 2),
            (b"a\xE3\x81\x82", 0),
            (b"\xF0\x9D\x84", 3),
            (b"\xF0\x9D\x84\x9E", 0),
            // Not the start of any character, or a lone continuation byte: nothing to wait for.
            (b"a\xFF", 0),
            (b"a\x81", 0),
            (b"a\xE0\x80", 0),
        ] {
            assert_eq!(split_char_at_end(bytes), n, "{bytes:?}");
        }
    }
}
