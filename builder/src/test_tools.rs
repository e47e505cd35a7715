//! Test helper: whether a host tool a test needs is installed.
//!
//! Tests that need a tool skip with a printed reason when it is missing, except in CI
//! (`CI=true`), where a missing tool is a failure with the package to install.

use std::path::Path;

/// True when `tool` is on PATH; otherwise skips (prints why) or, under `CI=true`, panics
/// naming the Debian package that provides it.
pub fn tool_available(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(tool))))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|dir| is_executable(&Path::new(dir).join(tool)));
    if found {
        return true;
    }
    let message = format!("`{tool}` is not installed (apt-get install {package})");
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
    false
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
