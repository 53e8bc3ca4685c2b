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
    let git_dir = git(&["rev-parse", "--absolute-git-dir"])?;
    let common = git(&["rev-parse", "--git-common-dir"]).unwrap_or_else(|| git_dir.clone());
    let common = if std::path::Path::new(&common).is_absolute() {
        common
    } else {
        format!("{}/{common}", std::env::var("CARGO_MANIFEST_DIR").ok()?)
    };
    println!("cargo:rerun-if-changed={git_dir}/HEAD");
    println!("cargo:rerun-if-changed={common}/refs/heads");
    println!("cargo:rerun-if-changed={common}/packed-refs");
    git(&["rev-parse", "--short=12", "HEAD"])
}
