//! The one gate of every test that needs something of the host (a tool, root, loop devices): a
//! test that cannot run here skips with the reason printed, except under `CI=true`, where it
//! fails with the reason, so a CI machine that lacks a package never passes by skipping. The
//! unit tests and the integration tests in `tests/` all decide through [`can_run`].

use std::path::{Path, PathBuf};

/// Whether `test` can run: true with no reason against it; otherwise it skips (prints why) or,
/// under `CI=true`, panics with the reason.
pub fn can_run(test: &str, missing: Option<String>) -> bool {
    let Some(reason) = missing else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{test}: {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// True when `tool` is on PATH (or in /usr/sbin, /sbin); otherwise [`can_run`] decides, naming
/// the Debian package that provides it.
pub fn tool_available(tool: &str, package: &str) -> bool {
    tool_path(tool, package).is_some()
}

/// Where `tool` is; None when it is missing and [`can_run`] let the test skip.
pub fn tool_path(tool: &str, package: &str) -> Option<PathBuf> {
    let found = find_tool(tool);
    if found.is_none() {
        can_run(tool, missing_tool(tool, package));
    }
    found
}

/// Why `tool` cannot be used here, if it cannot.
pub fn missing_tool(tool: &str, package: &str) -> Option<String> {
    find_tool(tool)
        .is_none()
        .then(|| format!("`{tool}` is not installed (apt-get install {package})"))
}

/// Why a test that needs root cannot run here, if it cannot.
pub fn missing_root(why: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() } != 0).then(|| format!("{why} needs root"))
}

fn find_tool(tool: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>());
    on_path
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
