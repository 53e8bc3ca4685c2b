//! Standard output without `println!`'s panic when it is gone.
//!
//! `status | head -1` closes the pipe after one line; `status > /dev/full` cannot write at all.
//! `println!` panics on both. Here a closed pipe ends a short command quietly with exit 0, as
//! `cat` and `grep` do (the reader has what it wanted; the daemon keeps the jobs and their
//! results), and any other write error is reported and ends it with exit 1. The long-running
//! commands (`join`, `demo`) print with [`line_or_skip`], which never stops them: a daemon
//! must not die because whoever read its banner went away.

use std::{
    fmt::Display,
    io::{ErrorKind, Write},
};

/// Writes `text` and a newline to standard output, or ends the process (see the module doc).
pub fn line(text: impl Display) {
    write(format_args!("{text}\n"));
}

/// Writes `text` as it is (no newline added) to standard output, or ends the process.
pub fn text(text: impl Display) {
    write(format_args!("{text}"));
}

/// Writes `text` and a newline to standard output; a failure to write is ignored.
pub fn line_or_skip(text: impl Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}
