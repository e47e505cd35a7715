//! The hardware and bandwidth sections of a profile, and the one loader for their own files
//! (`profiles/hardware/NAME.toml`, `profiles/bandwidth/NAME.toml`): every way in validates, so a
//! firmware name reaches mmdebstrap only once it is a package name.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::is_package_name;

/// The box: what the sizing model and the image need to know about the hardware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    /// CPU threads (what `nproc` shows).
    pub cores: u32,
    pub ram_gb: u32,
    pub storage_gb: u32,
    /// Firmware packages its usual NICs and GPU need, per base distribution.
    #[serde(default)]
    pub firmware: Firmware,
}

/// Firmware package names per base distribution: Debian splits firmware into
/// `firmware-*` packages in `non-free-firmware`, Ubuntu ships one `linux-firmware`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    #[serde(default)]
    pub debian: Vec<String>,
    #[serde(default)]
    pub ubuntu: Vec<String>,
    /// The firmware files the box's NIC and GPU load, as globs under `/lib/firmware` (e.g.
    /// `"rtl_nic/*"`). Ubuntu's `linux-firmware` carries firmware for every device Linux knows;
    /// an Ubuntu image keeps only these (and the CPU microcode), also through its updates
    /// (rootfs/firmware.rs). Debian's firmware packages are per family already.
    #[serde(default)]
    pub files: Vec<String>,
}

impl Firmware {
    /// The packages for `distribution` ("debian" or "ubuntu").
    pub fn for_distribution(&self, distribution: &str) -> Result<&[String]> {
        match distribution {
            "debian" => Ok(&self.debian),
            "ubuntu" => Ok(&self.ubuntu),
            other => {
                bail!("no firmware list for distribution {other:?}: use \"debian\" or \"ubuntu\"")
            }
        }
    }
}

/// The line the box sits behind, seen from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    /// What the server can send (the line's upload), Mbit/s.
    pub uplink_mbps: u32,
    /// What the server can receive (the line's download), Mbit/s.
    pub downlink_mbps: u32,
}

impl Hardware {
    /// Rejects values the model cannot use.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.cores >= 1, "key `cores`: must be at least 1");
        ensure!(self.ram_gb >= 1, "key `ram_gb`: must be at least 1");
        ensure!(self.storage_gb >= 1, "key `storage_gb`: must be at least 1");
        for (distribution, names) in [
            ("debian", &self.firmware.debian),
            ("ubuntu", &self.firmware.ubuntu),
        ] {
            for name in names {
                ensure!(
                    is_package_name(name),
                    "key `firmware.{distribution}`: {name:?} is not a package name \
                     (lower-case letters, digits, '+', '-', '.'); name the firmware package, \
                     e.g. \"firmware-realtek\""
                );
            }
        }
        for glob in &self.firmware.files {
            ensure!(
                is_firmware_glob(glob),
                "key `firmware.files`: {glob:?} is not a path under /lib/firmware (letters, digits, \
                 '.', '_', '-', '+', '/', and the wildcards '*' and '?'; no leading '/', no \
                 '..', wildcards only in the file name); name the files, e.g. \"rtl_nic/*\""
            );
        }
        Ok(())
    }
}

/// A relative path or glob below /lib/firmware that is safe to hand to dpkg's path filters.
fn is_firmware_glob(glob: &str) -> bool {
    !glob.is_empty()
        && !glob.starts_with('/')
        && !glob
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        // Wildcards only in the file name: dpkg needs each directory back in by its name.
        && !glob
            .rsplit_once('/')
            .is_some_and(|(dirs, _)| dirs.contains(['*', '?']))
        && glob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+/*?".contains(&b))
}

impl Bandwidth {
    /// Rejects values the model cannot use.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.uplink_mbps >= 1 && self.downlink_mbps >= 1,
            "keys `uplink_mbps` and `downlink_mbps`: must be at least 1"
        );
        Ok(())
    }
}

/// Parses a hardware section (the keys of `Hardware` at top level) and validates it.
pub fn parse_hardware(text: &str) -> Result<Hardware> {
    let hardware: Hardware =
        toml::from_str(text).map_err(|err| anyhow::anyhow!("{}", err.to_string().trim_end()))?;
    hardware.validate()?;
    Ok(hardware)
}

/// Parses a bandwidth section (the keys of `Bandwidth` at top level) and validates it.
pub fn parse_bandwidth(text: &str) -> Result<Bandwidth> {
    let bandwidth: Bandwidth =
        toml::from_str(text).map_err(|err| anyhow::anyhow!("{}", err.to_string().trim_end()))?;
    bandwidth.validate()?;
    Ok(bandwidth)
}

/// Loads a hardware profile: a name in `PROFILES/hardware/` or a path.
pub fn load_hardware(profiles: &Path, name_or_path: &str) -> Result<Hardware> {
    let path = super::resolve(name_or_path, profiles, "hardware")?;
    parse_hardware(&read(&path)?).with_context(|| format!("hardware profile {}", path.display()))
}

/// Loads a bandwidth profile: a name in `PROFILES/bandwidth/` or a path.
pub fn load_bandwidth(profiles: &Path, name_or_path: &str) -> Result<Bandwidth> {
    let path = super::resolve(name_or_path, profiles, "bandwidth")?;
    parse_bandwidth(&read(&path)?).with_context(|| format!("bandwidth profile {}", path.display()))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles_dir() -> std::path::PathBuf {
        super::super::shipped_profiles_dir()
    }

    #[test]
    fn every_profile_loads() {
        for kind in ["hardware", "bandwidth"] {
            let mut count = 0;
            for entry in std::fs::read_dir(profiles_dir().join(kind)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
                match kind {
                    "hardware" => {
                        let hardware = load_hardware(&profiles_dir(), &name).unwrap();
                        assert!(
                            !hardware.firmware.debian.is_empty()
                                && !hardware.firmware.ubuntu.is_empty(),
                            "{name}"
                        );
                    }
                    _ => {
                        load_bandwidth(&profiles_dir(), &name).unwrap();
                    }
                }
                count += 1;
            }
            assert!(count >= 4, "{kind}: only {count} profiles");
        }
    }

    #[test]
    fn profiles_reject_unknown_keys_and_missing_names() {
        let error =
            parse_bandwidth("uplink_mbps = 10\ndownlink_mbps = 50\nupload = 3\n").unwrap_err();
        assert!(format!("{error:#}").contains("unknown field"), "{error:#}");
        let error = parse_hardware(
            "cores = 4\nram_gb = 8\nstorage_gb = 64\n[firmware]\ndebian = [\"Bad Name\"]\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("not a package name"), "{error}");
        let error = load_bandwidth(&profiles_dir(), "dialup")
            .unwrap_err()
            .to_string();
        assert!(error.contains("available: cable-50-10"), "{error}");
        assert!(load_hardware(&profiles_dir(), "../bandwidth/cable-50-10").is_err());
    }

    #[test]
    fn a_bad_firmware_file_glob_is_refused_with_its_key() {
        for bad in [
            "/lib/firmware/x",
            "../etc/passwd",
            "*/x.bin",
            "rtl_nic/a b",
            "a//b",
            "",
            "x;rm",
        ] {
            let text =
                format!("cores = 4\nram_gb = 8\nstorage_gb = 64\n[firmware]\nfiles = [{bad:?}]\n");
            let message = format!("{:#}", parse_hardware(&text).unwrap_err());
            assert!(
                message.contains("key `firmware.files`"),
                "{bad:?}: {message}"
            );
        }
        let good = "cores = 4\nram_gb = 8\nstorage_gb = 64\n[firmware]\nfiles = [\"rtl_nic/rtl8168*\", \"i915/adlp_dmc*.bin*\"]\n";
        assert_eq!(parse_hardware(good).unwrap().firmware.files.len(), 2);
    }

    #[test]
    fn firmware_lists_are_per_distribution() {
        let hardware = load_hardware(&profiles_dir(), "n100-8gb").unwrap();
        assert!(hardware
            .firmware
            .for_distribution("ubuntu")
            .unwrap()
            .iter()
            .any(|p| p == "linux-firmware"));
        assert!(hardware
            .firmware
            .for_distribution("debian")
            .unwrap()
            .iter()
            .any(|p| p == "firmware-realtek"));
        assert!(hardware.firmware.for_distribution("arch").is_err());
    }

    #[test]
    fn a_bad_firmware_name_in_a_hardware_file_names_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("odd-box.toml");
        std::fs::write(
            &file,
            "cores = 4\nram_gb = 8\nstorage_gb = 64\n[firmware]\nubuntu = [\"linux-firmware,evil\"]\n",
        )
        .unwrap();
        // The way `meetbox build --hardware FILE` takes, before anything is installed.
        let profile = super::super::shipped("test");
        let error = profile
            .with_hardware(file.to_str().unwrap(), &profiles_dir())
            .unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.contains("key `firmware.ubuntu`"), "{message}");
        assert!(
            message.contains("\"linux-firmware,evil\" is not a package name"),
            "{message}"
        );
    }
}
