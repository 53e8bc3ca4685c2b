//! The file an export writes (`manage --export-jobs`, `--export-nodes`): readable by its
//! owner only, written aside and renamed into place, never inside the daemon's state
//! directory, and a file it replaces is said. `-` is standard output; what an export to it
//! (or to a device or a pipe, `/dev/stdout`) did is said on standard error, so that what it
//! wrote stays one whole JSON or YAML document.

use std::{
    os::{fd::AsFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
};

use crate::Failure;

/// Where an export may go: refused inside the state directory (an export named `node.redb`
/// there would replace the daemon's database under it), named there directly, through a
/// linked directory, or as a link to a file there (an export follows a link to a file, but
/// not one another user made); `Ok(true)` when a regular file is there already (the export replaces it, and says so).
pub fn check(state_dir: &Path, path: &Path) -> Result<bool, Failure> {
    if is_stdout(path) {
        return Ok(false);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (Ok(dir), Ok(state)) = (parent.canonicalize(), state_dir.canonicalize()) else {
        // A directory that does not exist: the write says so.
        return Ok(false);
    };
    // A link someone else made (in a shared directory such as /tmp) could lead to any file
    // this user may write: not followed.
    if let Ok(link) = std::fs::symlink_metadata(path)
        && link.file_type().is_symlink()
    {
        use std::os::unix::fs::MetadataExt;
        let me = nix::unistd::geteuid().as_raw();
        if link.uid() != me && link.uid() != 0 {
            return Err(Failure::Input(format!(
                "{}: it is a link made by user id {} (this runs as {me}), which could lead to \
                 any file of this user: an export does not follow it; remove it, or choose \
                 another place",
                path.display(),
                link.uid()
            )));
        }
    }
    // What is there already, with every link followed (a link to nothing is replaced itself).
    let there = path.canonicalize().ok();
    if dir.starts_with(&state) || there.is_some_and(|t| t.starts_with(&state)) {
        return Err(Failure::Input(format!(
            "{}: an export cannot go into the daemon's state directory {} (it could replace \
             the daemon's own files); choose another place",
            path.display(),
            state_dir.display()
        )));
    }
    Ok(std::fs::metadata(path).is_ok_and(|m| m.is_file()))
}

/// Whether an export to `file` is YAML: its name ends in `.yaml` or `.yml`, in any case
/// (`NODES.YML` too); anything else is JSON.
pub fn is_yaml(file: &Path) -> bool {
    file.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// `-`: standard output.
fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// How errors name `file`.
pub fn name(file: &Path) -> String {
    if is_stdout(file) {
        "standard output".to_string()
    } else {
        file.display().to_string()
    }
}

/// Says what an export of `count` `items` to `file` did, as a line or (`json`) as JSON; a
/// file it replaced is said. On standard output, or on standard error when the export went
/// to standard output, a device or a pipe (its reader reads the export alone).
pub fn say(count: usize, items: &str, file: &Path, replaced: bool, json: bool) {
    let said = if json {
        let said = serde_json::json!({
            "exported": count,
            "file": file.display().to_string(),
            "replaced": replaced,
        });
        serde_json::to_string_pretty(&said).unwrap_or_else(|_| said.to_string())
    } else {
        let note = if replaced {
            " (the file that was there is replaced)"
        } else {
            ""
        };
        format!("Exported {count} {items} to [ {} ]{note}", name(file))
    };
    let streamed = is_stdout(file) || std::fs::metadata(file).is_ok_and(|m| !m.is_file());
    if streamed {
        crate::output::err_line(said);
    } else {
        crate::output::line(said);
    }
}

/// A file written readable by its owner only, as the records in the state directory are
/// (every job's output is in them). A new or regular file is written aside and renamed over
/// the path by [`PrivateFile::finish`] (a file there before, with another mode, is replaced;
/// one never finished leaves it as it was); a link to a file is followed, and that file is
/// replaced the same way (the link stays); a device or a pipe (`/dev/stdout`, a process
/// substitution) is just written to, as standard output is for `-`.
pub struct PrivateFile {
    file: std::fs::File,
    /// Where it is written aside, and the path it is renamed to.
    aside: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl PrivateFile {
    pub fn create(path: &Path) -> std::io::Result<PrivateFile> {
        if is_stdout(path) {
            let file = std::io::stdout().as_fd().try_clone_to_owned()?.into();
            return Ok(PrivateFile { file, aside: None });
        }
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let resolved;
        let path = match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => {
                let file = std::fs::OpenOptions::new().write(true).open(path)?;
                return Ok(PrivateFile { file, aside: None });
            }
            Ok(_) if is_link => {
                resolved = std::fs::canonicalize(path)?;
                resolved.as_path()
            }
            _ => path,
        };
        let name = path
            .file_name()
            .ok_or_else(|| std::io::Error::other("not a file name"))?;
        let mut aside_name = std::ffi::OsString::from(".");
        aside_name.push(name);
        aside_name.push(format!(".{}.tmp", std::process::id()));
        let aside = path.with_file_name(aside_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)
            .map_err(|e| {
                // A directory that is there but takes no new file (`/proc`, read-only, full):
                // the file it refused is named, as the path itself may exist.
                if aside.parent().is_some_and(|dir| dir.is_dir()) {
                    std::io::Error::new(
                        e.kind(),
                        format!("the file it is written to first, {}: {e}", aside.display()),
                    )
                } else {
                    e
                }
            })?;
        Ok(PrivateFile {
            file,
            aside: Some((aside, path.to_path_buf())),
        })
    }

    /// Everything is written: the file takes its path.
    pub fn finish(mut self) -> std::io::Result<()> {
        match self.aside.take() {
            Some((aside, path)) => std::fs::rename(&aside, path).inspect_err(|_| {
                let _ = std::fs::remove_file(&aside);
            }),
            None => Ok(()),
        }
    }
}

impl std::io::Write for PrivateFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for PrivateFile {
    /// Never finished (a failed write, a list cut short): what was written aside goes.
    fn drop(&mut self) {
        if let Some((aside, _)) = &self.aside {
            let _ = std::fs::remove_file(aside);
        }
    }
}
