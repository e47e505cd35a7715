//! The distributions an image can be based on, one descriptor each ([`ubuntu`], [`debian`]):
//! suite, pinned archive keys, components, the packages only that base needs, the EFI vendor
//! directory (which also names its firmware list in hardware profiles), where the kernel links
//! live, and its security pocket. Everything that differs between bases is read from here, so adding a base
//! is adding a descriptor.

pub mod debian;
pub mod ubuntu;

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The distribution release an image is based on, as profiles name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Base {
    #[serde(rename = "ubuntu-24.04")]
    Ubuntu2404,
    #[serde(rename = "debian-12")]
    Debian12,
}

/// What the pipeline needs to know about one base distribution.
pub struct Distro {
    /// The name used in profiles, on the command line and in artifact names.
    pub name: &'static str,
    /// The vendor: the directory under `EFI/` whose `grub.cfg` the signed GRUB reads, and the
    /// key of a hardware profile's firmware list for this base (`[firmware] ubuntu = [...]`).
    pub efi_vendor: &'static str,
    /// The apt suite (code name).
    pub suite: &'static str,
    /// The archive keyring, kept in the repository, and the fingerprints pinned for it.
    pub keyring: &'static [u8],
    pub fingerprints: &'static [&'static str],
    pub components: &'static [&'static str],
    /// Packages only this base needs (its kernel, and what it packages apart).
    pub packages: &'static [&'static str],
    /// Where the kernel packages keep the `vmlinuz`/`initrd.img` links to the newest kernel.
    pub kernel_link_dir: &'static str,
    /// The security pocket's mirror, given the profile's mirror.
    pub security_mirror: fn(&str) -> String,
    /// unattended-upgrades' origin patterns for the security pocket of `suite`.
    pub security_origins: fn(&str) -> Vec<String>,
    /// Whether the kernel pulls in one firmware package for every device, which the image then
    /// filters down to the hardware profile's files (rootfs/firmware.rs).
    pub filters_firmware: bool,
}

impl Base {
    pub const ALL: [Base; 2] = [Base::Ubuntu2404, Base::Debian12];

    /// This base's descriptor.
    pub fn distro(self) -> &'static Distro {
        match self {
            Base::Ubuntu2404 => &ubuntu::NOBLE,
            Base::Debian12 => &debian::BOOKWORM,
        }
    }

    pub fn name(self) -> &'static str {
        self.distro().name
    }

    pub fn suite(self) -> &'static str {
        self.distro().suite
    }

    pub fn efi_vendor(self) -> &'static str {
        self.distro().efi_vendor
    }

    pub fn kernel_link_dir(self) -> &'static str {
        self.distro().kernel_link_dir
    }
}

impl fmt::Display for Base {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Base {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Base::ALL
            .into_iter()
            .find(|base| base.name() == s)
            .with_context(|| {
                let names: Vec<String> = Base::ALL
                    .iter()
                    .map(|b| format!("`{}`", b.name()))
                    .collect();
                format!("unknown base `{s}`: use {}", names.join(" or "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_base_has_a_name_that_parses_back_and_a_firmware_list() {
        for base in Base::ALL {
            assert_eq!(base.name().parse::<Base>().unwrap(), base);
            let firmware = crate::profile::Firmware::default();
            assert!(
                firmware.for_distribution(base.efi_vendor()).is_ok(),
                "{base}"
            );
        }
        let err = "arch".parse::<Base>().unwrap_err().to_string();
        assert!(err.contains("use `ubuntu-24.04` or `debian-12`"), "{err}");
    }
}
