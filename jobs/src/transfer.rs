//! ADD and COPY on the submitting side: turning `SRC` (a glob) into the files it names.
//!
//! The submitter expands the glob (relative to its working directory, `~` for its home),
//! keeps regular files in sorted order, and hashes each (per chunk, the digests merging into
//! the file's hash, see [`FileRef`]). Each file
//! becomes its own job, so every file is its own tracked result; its content hash is part of
//! the job's fingerprint, so a changed file is sent again.

use std::path::{Path, PathBuf};

use crate::spec::{Component, FileRef, JobSpec, Transfer};

/// The largest file `--blueprint` renders: it is read and rendered whole, in memory, on each
/// target. A larger one is refused before it is sent.
pub const BLUEPRINT_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Expands ADD/COPY jobs into one job per source file (other jobs are returned as they are).
/// Fails, naming the pattern, when nothing matches or a file cannot be read.
pub fn resolve(spec: JobSpec, cwd: &Path) -> Result<Vec<JobSpec>, String> {
    resolve_noting_left_out(spec, cwd).map(|(specs, _)| specs)
}

/// What a source pattern matched beside the files it sends, left out, for the submitter to
/// say so: a `conf/*` that leaves out `conf/.env`, or a link to a file that is gone, would
/// otherwise deploy without it unnoticed.
#[derive(Debug, Default, PartialEq)]
pub struct LeftOut {
    /// Hidden files a wildcard left out (as a shell does: see [`matching_files`]), sorted.
    pub hidden: Vec<PathBuf>,
    /// What is neither a regular file nor a directory (a link to nothing, a named pipe, a
    /// device), sorted, each with what it is.
    pub not_files: Vec<(PathBuf, String)>,
}

/// [`resolve`], and what the pattern of its source matched that it leaves out.
pub fn resolve_noting_left_out(
    spec: JobSpec,
    cwd: &Path,
) -> Result<(Vec<JobSpec>, LeftOut), String> {
    let (transfer, add) = match &spec.component {
        Component::Add(t) => (t.clone(), true),
        Component::Copy(t) => (t.clone(), false),
        _ => return Ok((vec![spec], LeftOut::default())),
    };
    if transfer.file.is_some() {
        return Ok((vec![spec], LeftOut::default()));
    }
    let (files, left_out) = matching(&transfer.src, cwd)?;
    // Several files to one file path would land one over the other, the last one winning.
    // (A DEST that is a template may still render to a directory: it is left to the target.)
    if files.len() > 1 && !transfer.dest.ends_with('/') && !transfer.dest.contains("{{") {
        return Err(format!(
            "'{}' matches {} files but DEST '{}' names one file: end DEST with / to put them \
             in that directory",
            transfer.src,
            files.len(),
            transfer.dest
        ));
    }
    // Into a directory, each file lands under its own name: two of one name would land one
    // over the other, and both report success.
    if transfer.dest.ends_with('/') {
        let mut by_name: std::collections::BTreeMap<&std::ffi::OsStr, &Path> = Default::default();
        for path in &files {
            let Some(name) = path.file_name() else {
                continue;
            };
            if let Some(first) = by_name.insert(name, path) {
                return Err(format!(
                    "'{}' matches two files named '{}' ({} and {}), which would land on one \
                     file in '{}': name them in separate ADD/COPY jobs with their own \
                     destinations",
                    transfer.src,
                    name.to_string_lossy(),
                    first.display(),
                    path.display(),
                    transfer.dest
                ));
            }
        }
    }
    let mut out = Vec::new();
    for path in files {
        let file =
            FileRef::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if transfer.blueprint && file.size > BLUEPRINT_MAX_BYTES {
            return Err(format!(
                "--blueprint renders files of up to 16 MiB: {} is {} bytes (send it without \
                 --blueprint, or make it smaller)",
                path.display(),
                file.size
            ));
        }
        if transfer.blueprint {
            check_blueprint(&path)?;
        }
        let resolved = Transfer {
            src: path.display().to_string(),
            file: Some(file),
            ..transfer.clone()
        };
        let mut job = spec.clone();
        job.component = if add {
            Component::Add(resolved)
        } else {
            Component::Copy(resolved)
        };
        out.push(job);
    }
    Ok((out, left_out))
}

/// A `--blueprint` source is UTF-8 text that parses as a template: either mistake would fail
/// on every target, so it is bad input, said before anything is sent.
fn check_blueprint(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut bytes = Vec::new();
    // Bounded: the file may have grown since it was hashed.
    std::fs::File::open(path)
        .and_then(|f| f.take(BLUEPRINT_MAX_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() as u64 > BLUEPRINT_MAX_BYTES {
        return Err(format!(
            "{} grew past the 16 MiB --blueprint renders while it was read; submit again",
            path.display()
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "--blueprint needs UTF-8 text: {} is not, from byte {}",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    crate::template::check_syntax(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A file beside those a pattern's last part (a wildcard) matches whose name is not UTF-8:
/// glob skips such names, and the file would be left out without a word. Only for a pattern
/// whose directory part is plain.
fn name_not_utf8(absolute: &str) -> Option<PathBuf> {
    let wild = |s: &str| s.contains(['*', '?', '[']);
    let path = Path::new(absolute);
    if !wild(path.file_name()?.to_str()?) || wild(path.parent()?.to_str()?) {
        return None;
    }
    std::fs::read_dir(path.parent()?)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_str().is_none()))
}

/// Whether `path` was matched by a wildcard at a name starting with a dot. A shell, and
/// Directord (Python's glob), leave such hidden names to patterns that write the dot:
/// `*.conf` takes no `.hidden.conf`, `.*.conf` does. (The glob crate's own option leaves out
/// every hidden name, even those a pattern's written dot names.)
fn hidden_by_wildcard(pattern: &str, path: &Path) -> bool {
    let wild = |s: &str| s.contains(['*', '?', '[']);
    let hidden = |pattern: &str, name: &str| {
        wild(pattern) && !pattern.starts_with('.') && name.starts_with('.')
    };
    let names = |p: &Path| -> Vec<String> {
        p.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect()
    };
    let (pattern, path) = (names(Path::new(pattern)), names(path));
    // `**` spans any number of directories: only the names themselves line up.
    if pattern.len() != path.len() || pattern.iter().any(|p| p == "**") {
        return match (pattern.last(), path.last()) {
            (Some(p), Some(name)) => hidden(p, name),
            _ => false,
        };
    }
    pattern.iter().zip(&path).any(|(p, name)| hidden(p, name))
}

/// The regular files `pattern` names, sorted.
pub fn matching_files(pattern: &str, cwd: &Path) -> Result<Vec<PathBuf>, String> {
    matching(pattern, cwd).map(|(files, _)| files)
}

/// The regular files `pattern` names, sorted, and what else it matched that is left out.
fn matching(pattern: &str, cwd: &Path) -> Result<(Vec<PathBuf>, LeftOut), String> {
    let expanded = match pattern.strip_prefix("~/") {
        Some(rest) => match std::env::var_os("HOME") {
            Some(home) => Path::new(&home).join(rest).display().to_string(),
            None => pattern.to_string(),
        },
        None => pattern.to_string(),
    };
    let absolute = if Path::new(&expanded).is_absolute() {
        expanded.clone()
    } else {
        cwd.join(&expanded).display().to_string()
    };
    let paths =
        glob::glob(&absolute).map_err(|e| format!("'{pattern}' is not a valid pattern: {e}"))?;
    // A file left out would go unnoticed: a directory the pattern runs through that cannot
    // be read, or a name the pattern cannot match, is said.
    if let Some(unseen) = name_not_utf8(&absolute) {
        return Err(format!(
            "'{pattern}' may mean {}, whose name is not UTF-8 text, which no pattern matches: \
             ADD and COPY send files with UTF-8 names (rename it, or name the others one by one)",
            unseen.display()
        ));
    }
    let found = paths.collect::<Result<Vec<PathBuf>, _>>().map_err(|e| {
        format!(
            "'{pattern}': cannot read {}: {}",
            e.path().display(),
            e.error()
        )
    })?;
    let (mut hidden, found): (Vec<PathBuf>, Vec<PathBuf>) = found
        .into_iter()
        .partition(|p| hidden_by_wildcard(&absolute, p));
    hidden.sort();
    let (mut files, others): (Vec<PathBuf>, Vec<PathBuf>) =
        found.into_iter().partition(|p| p.is_file());
    files.sort();
    if files.is_empty() {
        if let Some(dir) = others.iter().find(|p| p.is_dir()) {
            return Err(format!(
                "'{pattern}' names only directories ({}): ADD and COPY send files; name the \
                 files, e.g. '{}/*'",
                dir.display(),
                pattern.trim_end_matches('/')
            ));
        }
        if let Some(one) = hidden.first() {
            return Err(format!(
                "'{pattern}' matches only hidden names (such as {}), which a wildcard leaves \
                 out, as in a shell: write their leading dot ('.*')",
                one.display()
            ));
        }
        if let Some(other) = others.first() {
            return Err(format!(
                "'{pattern}' names {}, {}: ADD and COPY send regular files",
                other.display(),
                not_a_file(other)
            ));
        }
        return Err(if Path::new(&expanded).is_absolute() {
            format!("no file matches '{pattern}'")
        } else {
            format!(
                "no file matches '{pattern}' (relative paths start at {})",
                cwd.display()
            )
        });
    }
    hidden.retain(|p| p.is_file());
    let mut not_files: Vec<(PathBuf, String)> = others
        .into_iter()
        .filter(|p| !p.is_dir())
        .map(|p| {
            let what = not_a_file(&p);
            (p, what)
        })
        .collect();
    not_files.sort();
    Ok((files, LeftOut { hidden, not_files }))
}

/// What `path` is, said of something that is neither a regular file nor a directory.
fn not_a_file(path: &Path) -> String {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path).map(|m| m.file_type()) {
        Ok(t) if t.is_fifo() => "a named pipe (FIFO)".into(),
        Ok(t) if t.is_socket() => "a socket".into(),
        Ok(t) if t.is_block_device() || t.is_char_device() => "a device".into(),
        Ok(_) => "which is not a regular file".into(),
        Err(_) => match std::fs::read_link(path) {
            Ok(target) => format!(
                "a symbolic link to {}, which does not exist",
                target.display()
            ),
            Err(e) => format!("which cannot be read ({e})"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{CHUNK_SIZE, ParseOutcome};

    fn spec(inline: &str) -> JobSpec {
        match JobSpec::parse("ADD", inline, &Default::default()).unwrap() {
            ParseOutcome::Spec(s) => s,
            ParseOutcome::Help(h) => panic!("{h}"),
        }
    }

    /// Two sources of one name would land on one file of the directory: refused, naming both.
    #[test]
    fn two_files_of_one_name_are_refused_for_one_directory() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["a", "b"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join("dup.txt"), sub).unwrap();
        }
        std::fs::write(dir.path().join("a").join("other.txt"), b"o").unwrap();
        let e = resolve(spec("*/dup.txt /srv/dir/"), dir.path()).unwrap_err();
        let (a, b) = (dir.path().join("a/dup.txt"), dir.path().join("b/dup.txt"));
        assert_eq!(
            e,
            format!(
                "'*/dup.txt' matches two files named 'dup.txt' ({} and {}), which would land on \
                 one file in '/srv/dir/': name them in separate ADD/COPY jobs with their own \
                 destinations",
                a.display(),
                b.display()
            )
        );
        assert_eq!(resolve(spec("a/* /srv/dir/"), dir.path()).unwrap().len(), 2);
    }

    /// A file whose name is not UTF-8 is refused by name, not silently left out of a glob;
    /// a blueprint over 16 MiB is refused before it is sent anywhere.
    #[test]
    fn a_name_not_utf8_and_a_huge_blueprint_are_refused_before_sending() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good"), b"g").unwrap();
        let bad = std::ffi::OsStr::from_bytes(b"bad\xffname");
        std::fs::write(dir.path().join(bad), b"b").unwrap();
        let e = resolve(spec("* /srv/dir/"), dir.path()).unwrap_err();
        assert!(e.contains("whose name is not UTF-8 text"), "{e}");
        assert!(e.contains("bad"), "{e}");
        let big = dir.path().join("big.j2");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(BLUEPRINT_MAX_BYTES + 1)
            .unwrap();
        let e = resolve(spec("--blueprint big.j2 /srv/big.conf"), dir.path()).unwrap_err();
        assert!(
            e.starts_with("--blueprint renders files of up to 16 MiB"),
            "{e}"
        );
        assert_eq!(
            resolve(spec("big.j2 /srv/big.conf"), dir.path())
                .unwrap()
                .len(),
            1
        );
    }

    /// A blueprint that is not a template (a syntax error) or not text would fail on every
    /// target: refused before it is sent, naming the file; the same files go as they are
    /// without --blueprint, and a blueprint with a missing variable is the target's to judge.
    #[test]
    fn a_blueprint_with_a_syntax_error_or_not_text_is_refused_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broken.j2"), "hello {{ x\n").unwrap();
        std::fs::write(dir.path().join("binary.j2"), b"ok \xff\xfe").unwrap();
        std::fs::write(dir.path().join("fine.j2"), "hello {{ name }}\n").unwrap();
        let e = resolve(spec("--blueprint broken.j2 /srv/a"), dir.path()).unwrap_err();
        assert!(e.contains("broken.j2: template syntax error"), "{e}");
        let e = resolve(spec("--blueprint binary.j2 /srv/a"), dir.path()).unwrap_err();
        assert!(
            e.starts_with("--blueprint needs UTF-8 text:")
                && e.contains("binary.j2 is not, from byte 3"),
            "{e}"
        );
        for plain in ["broken.j2", "binary.j2"] {
            assert!(resolve(spec(&format!("{plain} /srv/a")), dir.path()).is_ok());
        }
        assert!(resolve(spec("--blueprint fine.j2 /srv/a"), dir.path()).is_ok());
    }

    /// A wildcard takes no leading dot, as in a shell; a dot written takes hidden files.
    #[test]
    fn hidden_files_are_matched_only_by_a_leading_dot() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.txt", ".hidden.txt", "b.txt"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let names = |pattern: &str| -> Vec<String> {
            matching_files(pattern, dir.path())
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("*.txt"), ["a.txt", "b.txt"]);
        assert_eq!(names(".*.txt"), [".hidden.txt"]);
        assert_eq!(names(".hidden.txt"), [".hidden.txt"]);
        // Nor a hidden directory on the way.
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        for d in [".git", "src"] {
            std::fs::write(dir.path().join(d).join("c.txt"), d).unwrap();
        }
        assert_eq!(names("*/c.txt"), ["c.txt"]);
        assert_eq!(
            matching_files("*/c.txt", dir.path()).unwrap(),
            [dir.path().join("src/c.txt")]
        );
        assert_eq!(names(".git/*.txt"), ["c.txt"]);
        let e = matching_files(".git/*", dir.path()).unwrap();
        assert_eq!(e.len(), 1);
        std::fs::remove_file(dir.path().join("src/c.txt")).unwrap();
        let e = matching_files("*/c.txt", dir.path()).unwrap_err();
        assert!(e.contains("matches only hidden names"), "{e}");
        // What a wildcard left out is told, files only (not the .git directory).
        let (files, left_out) = matching("*", dir.path()).unwrap();
        assert_eq!(files, [dir.path().join("a.txt"), dir.path().join("b.txt")]);
        assert_eq!(left_out.hidden, [dir.path().join(".hidden.txt")]);
        assert!(left_out.not_files.is_empty(), "{left_out:?}");
        assert!(matching(".*", dir.path()).unwrap().1.hidden.is_empty());
    }

    /// What a pattern matches that is neither a regular file nor a directory (a link to a
    /// file that is gone, a named pipe) is left out and said, with what it is.
    #[test]
    fn links_to_nothing_and_pipes_a_pattern_matches_are_said() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.conf"), b"a").unwrap();
        std::os::unix::fs::symlink("/nowhere/x", dir.path().join("b.conf")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("c.conf"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::create_dir(dir.path().join("d.conf")).unwrap();
        let (specs, left_out) =
            resolve_noting_left_out(spec("*.conf /etc/app/"), dir.path()).unwrap();
        assert_eq!(specs.len(), 1);
        assert!(left_out.hidden.is_empty());
        assert_eq!(
            left_out.not_files,
            [
                (
                    dir.path().join("b.conf"),
                    "a symbolic link to /nowhere/x, which does not exist".to_string()
                ),
                (dir.path().join("c.conf"), "a named pipe (FIFO)".to_string()),
            ]
        );
    }

    #[test]
    fn several_files_need_a_directory_and_a_directory_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"a").unwrap();
        std::fs::write(dir.path().join("b.txt"), b"b").unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        let e = resolve(spec("*.txt /srv/one-file"), dir.path()).unwrap_err();
        assert!(
            e.contains("'*.txt' matches 2 files but DEST '/srv/one-file' names one file"),
            "{e}"
        );
        assert_eq!(
            resolve(spec("*.txt /srv/dir/"), dir.path()).unwrap().len(),
            2
        );
        assert_eq!(
            resolve(spec("a.txt /srv/one-file"), dir.path())
                .unwrap()
                .len(),
            1
        );
        // A template may render to a directory: the target decides.
        assert_eq!(
            resolve(spec("*.txt {{ dest }}"), dir.path()).unwrap().len(),
            2
        );
        let e = resolve(spec("conf /srv/"), dir.path()).unwrap_err();
        assert!(e.contains("'conf' names only directories"), "{e}");
        assert!(e.contains("'conf/*'"), "{e}");
    }

    #[test]
    fn one_job_per_file_in_sorted_order_with_content_hashes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.conf"), b"bbb").unwrap();
        std::fs::write(dir.path().join("a.conf"), b"").unwrap();
        std::fs::create_dir(dir.path().join("dir.conf")).unwrap();
        let big = vec![7u8; (2 * CHUNK_SIZE) as usize];
        std::fs::write(dir.path().join("c.conf"), &big).unwrap();
        let jobs = resolve(spec("--chmod 0644 *.conf /etc/app/"), dir.path()).unwrap();
        let files: Vec<FileRef> = jobs
            .iter()
            .map(|j| match &j.component {
                Component::Add(t) => t.file.clone().unwrap(),
                _ => panic!(),
            })
            .collect();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec!["a.conf", "b.conf", "c.conf"]);
        assert_eq!(files[0].size, 0);
        assert!(files[0].chunks.is_empty(), "an empty file has no chunks");
        assert_eq!(files[1].hash.0, *blake3::hash(b"bbb").as_bytes());
        assert_eq!(
            files[2].chunks.len(),
            2,
            "a size that is a multiple of the chunk has no empty tail"
        );
        assert_eq!(files[2].hash.0, *blake3::hash(&big).as_bytes());
        // Content is part of the fingerprint.
        assert_ne!(jobs[0].fingerprint(), jobs[1].fingerprint());
    }

    #[test]
    fn no_match_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = resolve(spec("missing/*.txt /tmp/"), dir.path()).unwrap_err();
        assert!(e.contains("no file matches 'missing/*.txt'"), "{e}");
        // An absolute path needs no word on where relative ones start.
        let missing = dir.path().join("missing.txt");
        let e = resolve(spec(&format!("{} /tmp/", missing.display())), dir.path()).unwrap_err();
        assert_eq!(e, format!("no file matches '{}'", missing.display()));
        // What is there but is no regular file is named for what it is.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = resolve(spec("fifo /tmp/"), dir.path()).unwrap_err();
        assert!(
            e.contains("fifo, a named pipe (FIFO): ADD and COPY send regular files"),
            "{e}"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("gone"), &link).unwrap();
        let e = resolve(spec("link /tmp/"), dir.path()).unwrap_err();
        assert!(
            e.contains("link, a symbolic link to") && e.contains("gone, which does not exist"),
            "{e}"
        );
        assert!(
            JobSpec::parse("ADD", "only-one", &Default::default())
                .unwrap_err()
                .contains("takes SRC and DEST")
        );
    }
}
