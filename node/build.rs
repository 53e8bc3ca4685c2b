//! Names the build: the commit the source was built from, when it is a git checkout (or what
//! `DIRECTORD_MESH_BUILD` says, for a package built elsewhere), so that nodes of one release
//! built from different sources tell apart in `status` (`0.1.0+1a2b3c4d5e6f`).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DIRECTORD_MESH_BUILD");
    let build = match std::env::var("DIRECTORD_MESH_BUILD") {
        Ok(given) => given,
        Err(_) => commit().unwrap_or_default(),
    };
    // Only what a presence's release may hold: letters, digits, '-', '_' and '.'.
    let build: String = build
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    let suffix = if build.is_empty() {
        String::new()
    } else {
        format!("+{build}")
    };
    println!("cargo:rustc-env=DIRECTORD_MESH_BUILD_SUFFIX={suffix}");
}

/// The commit checked out (12 hex digits), watching what changes it; `None` outside a git
/// checkout or without git.
fn commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
    };
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").ok()?);
    // Only this workspace's own checkout: not a repository it was unpacked inside.
    let top = std::path::PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != manifest.parent()?.canonicalize().ok()? {
        return None;
    }
    let git_dir = git(&["rev-parse", "--absolute-git-dir"])?;
    let common = git(&["rev-parse", "--git-common-dir"]).unwrap_or_else(|| git_dir.clone());
    let common = if std::path::Path::new(&common).is_absolute() {
        common
    } else {
        format!("{}/{common}", manifest.display())
    };
    // Watched only where they exist: cargo takes a missing path as changed at every build.
    for path in [
        format!("{git_dir}/HEAD"),
        format!("{common}/refs/heads"),
        format!("{common}/packed-refs"),
    ] {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
