//! ADD and COPY on the submitting side: turning `SRC` (a glob) into the files it names.
//!
//! The submitter expands the glob (relative to its working directory, `~` for its home),
//! keeps regular files in sorted order, and hashes each (whole and per chunk). Each file
//! becomes its own job, so every file is its own tracked result; its content hash is part of
//! the job's fingerprint, so a changed file is sent again.

use std::path::{Path, PathBuf};

use crate::spec::{Component, FileRef, JobSpec, Transfer};

/// Expands ADD/COPY jobs into one job per source file (other jobs are returned as they are).
/// Fails, naming the pattern, when nothing matches or a file cannot be read.
pub fn resolve(spec: JobSpec, cwd: &Path) -> Result<Vec<JobSpec>, String> {
    let (transfer, add) = match &spec.component {
        Component::Add(t) => (t.clone(), true),
        Component::Copy(t) => (t.clone(), false),
        _ => return Ok(vec![spec]),
    };
    if transfer.file.is_some() {
        return Ok(vec![spec]);
    }
    let files = matching_files(&transfer.src, cwd)?;
    let mut out = Vec::new();
    for path in files {
        let file =
            FileRef::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
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
    Ok(out)
}

/// The regular files `pattern` names, sorted.
pub fn matching_files(pattern: &str, cwd: &Path) -> Result<Vec<PathBuf>, String> {
    let expanded = match pattern.strip_prefix("~/") {
        Some(rest) => match std::env::var_os("HOME") {
            Some(home) => Path::new(&home).join(rest).display().to_string(),
            None => pattern.to_string(),
        },
        None => pattern.to_string(),
    };
    let absolute = if Path::new(&expanded).is_absolute() {
        expanded
    } else {
        cwd.join(&expanded).display().to_string()
    };
    let paths =
        glob::glob(&absolute).map_err(|e| format!("'{pattern}' is not a valid pattern: {e}"))?;
    let mut files: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "no file matches '{pattern}' (relative paths start at {})",
            cwd.display()
        ));
    }
    Ok(files)
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
        assert!(
            JobSpec::parse("ADD", "only-one", &Default::default())
                .unwrap_err()
                .contains("takes SRC and DEST")
        );
    }
}
