//! What the integration tests share: the gate that runs a test only as root with
//! its tools installed, skipping with the reason elsewhere and failing in CI, and
//! the build the image tests start from.

use meetbox::host::test_tools::{missing_root, missing_tool};
use std::path::Path;

#[allow(dead_code)] // the Jitsi repository and appliance tests serve packages; the others do not
pub mod apt_repo;
#[allow(dead_code)]
pub mod jitsi_packages;

/// The arguments of `meetbox build` for the `test` profile on `base` into `out`,
/// signed with `key`, with the root file system cache in `cache`.
#[allow(dead_code)] // the image and appliance tests build; the others do not
pub fn test_build_args(base: &str, out: &Path, key: &Path, cache: &Path) -> Vec<String> {
    let path = |p: &Path| p.to_str().expect("test paths are UTF-8").to_string();
    [
        "build",
        "--profile",
        "test",
        "--base",
        base,
        "--out",
        &path(out),
        "--key",
        &path(key),
        "--cache-dir",
        &path(cache),
    ]
    .map(String::from)
    .to_vec()
}

/// Why a test that needs root and these `(program, package)` pairs cannot run, if it cannot.
pub fn root_and_tools_missing(why_root: &str, tools: &[(&str, &str)]) -> Option<String> {
    missing_root(why_root).or_else(|| {
        tools
            .iter()
            .find_map(|(tool, package)| missing_tool(tool, package))
    })
}

/// The one gate (`meetbox::host::test_tools::can_run`): skip with the reason, or fail in CI.
pub use meetbox::host::test_tools::can_run;
