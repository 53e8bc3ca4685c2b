//! Lines for the terminal without `println!`'s panic when it is gone.
//!
//! `directord-mesh-sim ... | head` closes the pipe after a few lines; `println!` and
//! `eprintln!` panic then, and the exit code would be 101 instead of the sweep's. What
//! cannot be written is dropped: the CSV and the plot are still written, and the exit code
//! still says whether every run delivered everything.

use std::{fmt::Display, io::Write};

/// `text` and a newline on standard output, if it can be written.
pub fn line(text: impl Display) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// `text` and a newline on standard error, if it can be written.
pub fn err_line(text: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
