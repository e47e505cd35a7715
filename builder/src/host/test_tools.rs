//! Test helper: whether a host tool a test needs is installed.
//!
//! Tests that need a tool skip with a printed reason when it is missing, except in CI
//! (`CI=true`), where a missing tool is a failure with the package to install.

use std::path::{Path, PathBuf};

/// True when `tool` is on PATH; otherwise skips (prints why) or, under `CI=true`, panics
/// naming the Debian package that provides it.
pub fn tool_available(tool: &str, package: &str) -> bool {
    tool_path(tool, package).is_some()
}

/// Where `tool` is, found as [`tool_available`] finds it (the same skip or CI failure).
pub fn tool_path(tool: &str, package: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>());
    let found = on_path
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate));
    if found.is_some() {
        return found;
    }
    let message = format!("`{tool}` is not installed (apt-get install {package})");
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
    None
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
