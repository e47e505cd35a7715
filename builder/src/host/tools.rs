//! The host programs a build or a VM run needs, and the packages that provide them.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::host::command::CommandRunExt;
use crate::host::progress;

/// A program (or data file) on the build host and the Debian/Ubuntu package providing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTool {
    /// A command looked up on PATH, or an absolute data file path.
    pub needs: &'static str,
    pub package: &'static str,
}

/// What `meetbox build` runs.
pub const BUILD_TOOLS: &[HostTool] = &[
    HostTool {
        needs: "mmdebstrap",
        package: "mmdebstrap",
    },
    HostTool {
        needs: "mke2fs",
        package: "e2fsprogs",
    },
    HostTool {
        needs: "debugfs",
        package: "e2fsprogs",
    },
    HostTool {
        needs: "systemctl",
        package: "systemd",
    },
    HostTool {
        needs: "gpgv",
        package: "gpgv",
    },
    // mmdebstrap recognises Ubuntu suites (and picks their mirrors) from this list.
    HostTool {
        needs: "/usr/share/distro-info/ubuntu.csv",
        package: "distro-info-data",
    },
];

/// Every program the builder and `meetbox run` start, with its package (for error messages).
const KNOWN_PACKAGES: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("mke2fs", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("dumpe2fs", "e2fsprogs"),
    ("systemctl", "systemd"),
    ("gpgv", "gpgv"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("zstd", "zstd"),
    ("sudo", "sudo"),
    ("apt-get", "apt"),
];

/// The package that provides `program`, where the builder knows it.
pub fn package_of(program: &str) -> Option<&'static str> {
    BUILD_TOOLS
        .iter()
        .map(|tool| (tool.needs, tool.package))
        .chain(KNOWN_PACKAGES.iter().copied())
        .find(|(needs, _)| *needs == program)
        .map(|(_, package)| package)
}

/// The tools in `tools` that are not on this host.
pub fn missing(tools: &[HostTool]) -> Vec<HostTool> {
    tools
        .iter()
        .copied()
        .filter(|tool| !present(tool.needs))
        .collect()
}

fn present(needs: &str) -> bool {
    if needs.starts_with('/') {
        return Path::new(needs).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .chain(["/usr/sbin".into(), "/sbin".into()])
                .any(|dir| dir.join(needs).is_file())
        })
        .unwrap_or(false)
}

/// Packages providing `tools`, sorted and without duplicates.
pub fn packages(tools: &[HostTool]) -> Vec<&'static str> {
    let mut packages: Vec<&str> = tools.iter().map(|tool| tool.package).collect();
    packages.sort_unstable();
    packages.dedup();
    packages
}

/// Fails naming the missing tools and the exact install command, or installs them
/// with apt-get when `install` is set.
pub fn ensure(tools: &[HostTool], install: bool) -> Result<()> {
    let missing = missing(tools);
    if missing.is_empty() {
        return Ok(());
    }
    let packages = packages(&missing);
    let names: Vec<&str> = missing.iter().map(|tool| tool.needs).collect();
    if !install {
        bail!(
            "missing host tools: {}\n  install them with: sudo apt-get install {}\n  \
             (or run again with --install-host-tools)",
            names.join(", "),
            packages.join(" ")
        );
    }
    progress::step(format!("Installing host tools: {}", packages.join(" ")));
    // SAFETY: geteuid has no preconditions.
    let mut command = if unsafe { libc::geteuid() } == 0 {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("apt-get");
        sudo
    };
    command
        .args(["install", "-y", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run_inherited()
        .with_context(|| format!("installing the host tools ({}) failed", packages.join(" ")))?;
    let still = self::missing(tools);
    if !still.is_empty() {
        bail!(
            "still missing after installation: {}",
            still.iter().map(|t| t.needs).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_missing_tools_with_their_packages() {
        let tools = [
            HostTool {
                needs: "sh",
                package: "dash",
            },
            HostTool {
                needs: "meetbox-no-such-tool",
                package: "no-such-package",
            },
            HostTool {
                needs: "/no/such/file",
                package: "no-such-package",
            },
        ];
        let missing = missing(&tools);
        assert_eq!(missing.len(), 2);
        assert_eq!(packages(&missing), vec!["no-such-package"]);
        let err = ensure(&tools, false).unwrap_err().to_string();
        assert!(err.contains("meetbox-no-such-tool"), "{err}");
        assert!(
            err.contains("sudo apt-get install no-such-package"),
            "{err}"
        );
    }
}
