//! What the integration tests share, in one module: the gate that runs a test only as root with
//! its tools installed (skipping with the reason elsewhere and failing in CI, through
//! `meetbox::host::test_tools`), the build the image tests start from, the signed apt
//! repository and the package-shaped Jitsi debs, the CIS measurement, and the small signed images
//! the flash tests write.
//!
//! The integration tests stay targets of the `meetbox` package (declared in builder/Cargo.toml)
//! rather than a workspace member of their own: Cargo gives the binary's path
//! (`CARGO_BIN_EXE_meetbox`) only to the tests of the package that builds it.

use meetbox::host::test_tools::{missing_root, missing_tool};
use std::path::Path;

#[allow(dead_code)] // the Jitsi repository and appliance tests serve packages; the others do not
pub mod apt_repo;
#[allow(dead_code, unused_imports)]
// the hardening and appliance tests measure CIS; the others do not
pub mod cis;
#[allow(dead_code)] // the flash tests sign and flash small images; the others do not
pub mod flash;
#[allow(dead_code)]
pub mod jitsi_packages;
#[allow(dead_code)] // the image and appliance tests read screens; the others do not
pub mod screen;
#[allow(dead_code)] // the appliance tests drive a browser; the others do not
pub mod webdriver;

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
#[allow(dead_code)] // the flash tests gate on single tools
pub fn root_and_tools_missing(why_root: &str, tools: &[(&str, &str)]) -> Option<String> {
    missing_root(why_root).or_else(|| {
        tools
            .iter()
            .find_map(|(tool, package)| missing_tool(tool, package))
    })
}

/// The one gate (`meetbox::host::test_tools::can_run`): skip with the reason, or fail in CI.
#[allow(unused_imports)] // the flash tests gate on single tools
pub use meetbox::host::test_tools::can_run;
