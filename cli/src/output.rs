//! Standard output without `println!`'s panic when it is gone.
//!
//! `status | head -1` closes the pipe after one line; `status > /dev/full` cannot write at all.
//! `println!` panics on both. Here the first failed write stops all later ones and the command
//! goes on to its end, so its exit code still says how the jobs went (`exec --check | head`
//! exits 1 when a job failed). A closed pipe is quiet (the reader has what it wanted); any
//! other write error is reported once on stderr and makes the exit code 1
//! ([`failed`]). The long-running commands (`join`, `demo`) print with [`line_or_skip`],
//! which never reports: a daemon must not stop because whoever read its banner went away.

use std::{
    fmt::Display,
    io::{ErrorKind, Write},
    sync::atomic::{AtomicU8, Ordering},
};

/// 0: writable; 1: the reader went away; 2: writing failed otherwise.
static STATE: AtomicU8 = AtomicU8::new(0);
const GONE: u8 = 1;
const FAILED: u8 = 2;

/// Writes `text` and a newline to standard output (nothing once a write failed).
pub fn line(text: impl Display) {
    write(format_args!("{text}\n"));
}

/// Writes `text` as it is (no newline added) to standard output.
pub fn text(text: impl Display) {
    write(format_args!("{text}"));
}

/// Writes `text` and a newline to standard error; a failure to write is ignored (`eprintln!`
/// panics when standard error is closed: `cmd 2>&- ` or a reader gone from `2>&1 | head`, and
/// the exit code would be 101 instead of what the command has to say).
pub fn err_line(text: impl Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// Writes `text` and a newline to standard output; a failure to write is ignored.
pub fn line_or_skip(text: impl Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// Whether writing to standard output failed for another reason than a closed pipe.
pub fn failed() -> bool {
    STATE.load(Ordering::Relaxed) == FAILED
}

/// Standard output as a writer, for text too large to build in memory first (wrap it in a
/// `BufWriter`): it is written as [`text`] is, and a failure is reported there, never
/// returned (nothing is written once one happened).
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_with(|out| out.write_all(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write(args: std::fmt::Arguments<'_>) {
    write_with(|out| out.write_fmt(args));
}

fn write_with(write: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>) {
    if STATE.load(Ordering::Relaxed) != 0 {
        return;
    }
    let mut out = std::io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::BrokenPipe => STATE.store(GONE, Ordering::Relaxed),
        Err(e) => {
            STATE.store(FAILED, Ordering::Relaxed);
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "error: cannot write to standard output: {e}");
        }
    }
}
