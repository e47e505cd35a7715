//! Build profiles: what an image is made of, read from TOML in `profiles/`.
//!
//! Parsing is strict (unknown keys are errors) so a typo never silently builds the
//! wrong image; every error names the file, the key and what is allowed.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub mod sections;

pub use sections::{Bandwidth, Firmware, Hardware};

pub use crate::distro::Base;

/// A size in bytes, written in profiles as "4GiB", "512MiB" or a plain byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => {
                return Err(format!(
                "`{text}` is not a size: write a whole number with MiB, GiB or TiB, e.g. \"4GiB\""
            ))
            }
        };
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is not a size: write e.g. \"4GiB\" or \"512MiB\""))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(de)? {
            Raw::Bytes(bytes) => Ok(ByteSize(bytes)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
        ser.serialize_u64(self.0)
    }
}

/// Services switched on or off in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Services {
    /// OpenSSH server (keys only, LAN only); off on an appliance by default.
    #[serde(default)]
    pub ssh: bool,
    /// Jitsi Meet from Jitsi's own apt repository.
    #[serde(default)]
    pub jitsi: bool,
    /// The web admin from every source, not only the local network (firewall, nginx and the
    /// admin itself); off by default (docs/admin.md).
    #[serde(default)]
    pub admin_from_internet: bool,
}

/// When the appliance may reboot itself after security updates (new kernel, libc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    /// Local time of day, 24-hour "HH:MM", e.g. "03:30".
    pub reboot_time: String,
}

impl Maintenance {
    fn validate(&self) -> Result<()> {
        if !is_time_of_day(&self.reboot_time) {
            bail!(
                "key `maintenance.reboot_time`: `{}` is not a time of day: write 24-hour \"HH:MM\", e.g. \"03:30\"",
                self.reboot_time
            );
        }
        Ok(())
    }
}

/// "HH:MM" with 00 <= HH <= 23 and 00 <= MM <= 59, two digits each.
fn is_time_of_day(text: &str) -> bool {
    let Some((hours, minutes)) = text.split_once(':') else {
        return false;
    };
    let two_digits = |s: &str, max: u32| {
        s.len() == 2
            && s.chars().all(|c| c.is_ascii_digit())
            && s.parse::<u32>().is_ok_and(|n| n <= max)
    };
    two_digits(hours, 23) && two_digits(minutes, 59)
}

/// A resolved build profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Prefix of the artifact names.
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub base: Base,
    /// Apt mirror URL; unset means the distribution's default mirrors as the host's
    /// mmdebstrap knows them (release, -updates and -security pockets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// Packages installed beyond the base system.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Size of the raw disk image; the root partition grows to the disk on first boot.
    pub image_size: ByteSize,
    #[serde(default = "default_esp_size")]
    pub esp_size: ByteSize,
    /// Participants the owner expects in one meeting; the build warns when the
    /// hardware and bandwidth cannot hold them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants: Option<u32>,
    pub services: Services,
    /// Automatic reboots after security updates; without it the owner reboots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    pub hardware: Hardware,
    pub bandwidth: Bandwidth,
}

fn default_esp_size() -> ByteSize {
    ByteSize(256 << 20)
}

/// The smallest image that holds a base system with room to boot.
pub const MIN_IMAGE_SIZE: u64 = 2 << 30;

impl Profile {
    /// Parses and validates a profile; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Profile> {
        let profile: Profile = toml::from_str(text).map_err(|err| {
            anyhow::anyhow!(
                "profile {}: {}",
                origin.display(),
                err.to_string().trim_end()
            )
        })?;
        profile
            .validate()
            .with_context(|| format!("profile {}", origin.display()))?;
        Ok(profile)
    }

    /// Loads `name_or_path`: a path to a `.toml` file, or a name looked up in `profiles_dir`.
    pub fn load(name_or_path: &str, profiles_dir: &Path) -> Result<Profile> {
        let path = resolve(name_or_path, profiles_dir, "")?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read profile {}", path.display()))?;
        Profile::parse(&text, &path)
    }

    /// Replaces the hardware section with `profiles/hardware/NAME.toml`.
    pub fn with_hardware(mut self, name_or_path: &str, profiles_dir: &Path) -> Result<Profile> {
        self.hardware = sections::load_hardware(profiles_dir, name_or_path)?;
        Ok(self)
    }

    /// Replaces the bandwidth section with `profiles/bandwidth/NAME.toml`.
    pub fn with_bandwidth(mut self, name_or_path: &str, profiles_dir: &Path) -> Result<Profile> {
        self.bandwidth = sections::load_bandwidth(profiles_dir, name_or_path)?;
        Ok(self)
    }

    /// The artifact base name: `NAME-BASE`, e.g. `meetbox-test-ubuntu-24.04`.
    pub fn artifact_name(&self) -> String {
        format!("{}-{}", self.name, self.base)
    }

    fn validate(&self) -> Result<()> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            bail!(
                "key `name`: `{}` is not allowed: use lower-case letters, digits and '-'",
                self.name
            );
        }
        if let Some(mirror) = &self.mirror {
            if !(mirror.starts_with("http://") || mirror.starts_with("https://"))
                || mirror.contains(char::is_whitespace)
            {
                bail!("key `mirror`: `{mirror}` is not an http:// or https:// URL");
            }
        }
        for package in &self.packages {
            if !is_package_name(package) {
                bail!(
                    "key `packages`: `{package}` is not a Debian package name \
                     (lower-case letters, digits, '+', '-', '.'; at least two characters)"
                );
            }
        }
        if self.image_size.0 < MIN_IMAGE_SIZE {
            bail!(
                "key `image_size`: {} bytes is too small: at least {} (\"2GiB\")",
                self.image_size.0,
                MIN_IMAGE_SIZE
            );
        }
        if self.esp_size.0 < (64 << 20) || self.esp_size.0 > (4 << 30) {
            bail!("key `esp_size`: must lie between \"64MiB\" and \"4GiB\"");
        }
        if let Some(maintenance) = &self.maintenance {
            maintenance.validate()?;
        }
        self.hardware.validate()?;
        self.bandwidth.validate()?;
        if self.image_size.0 % (1 << 20) != 0 {
            bail!("key `image_size`: must be a whole number of MiB");
        }
        Ok(())
    }
}

/// Debian policy §5.6.1: package names.
pub(crate) fn is_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn resolve(name_or_path: &str, profiles_dir: &Path, kind: &str) -> Result<PathBuf> {
    let looks_like_path = name_or_path.contains('/') || name_or_path.ends_with(".toml");
    let path = if looks_like_path {
        PathBuf::from(name_or_path)
    } else {
        profiles_dir.join(kind).join(format!("{name_or_path}.toml"))
    };
    if !path.is_file() {
        let available = list_names(&profiles_dir.join(kind));
        bail!(
            "no {}profile `{name_or_path}` ({} does not exist); available: {}",
            if kind.is_empty() {
                String::new()
            } else {
                format!("{kind} ")
            },
            path.display(),
            if available.is_empty() {
                "none".to_string()
            } else {
                available.join(", ")
            }
        );
    }
    Ok(path)
}

/// Names of the `.toml` files in `dir`, sorted.
pub fn list_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            (path.extension()? == "toml")
                .then(|| path.file_stem()?.to_str().map(str::to_string))
                .flatten()
        })
        .collect();
    names.sort();
    names
}

/// Where profiles are found when no `--profiles-dir` is given: `./profiles` if it
/// exists, else the `profiles/` directory of the source tree this binary was built from.
pub fn default_profiles_dir() -> PathBuf {
    let local = PathBuf::from("profiles");
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles")
}

/// The repository's `profiles/` directory, for unit tests across the crate.
#[cfg(test)]
pub(crate) fn shipped_profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles")
}

/// A profile shipped in `profiles/`, for unit tests across the crate.
#[cfg(test)]
pub(crate) fn shipped(name: &str) -> Profile {
    Profile::load(name, &shipped_profiles_dir()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles_dir() -> PathBuf {
        shipped_profiles_dir()
    }

    const MINIMAL: &str = r#"
name = "box"
base = "debian-12"
image_size = "3GiB"
[services]
[hardware]
cores = 2
ram_gb = 4
storage_gb = 64
[bandwidth]
uplink_mbps = 10
downlink_mbps = 50
"#;

    #[test]
    fn shipped_profiles_parse() {
        for name in ["default", "test"] {
            let profile = Profile::load(name, &profiles_dir()).unwrap();
            assert_eq!(profile.base, Base::Ubuntu2404, "{name}");
        }
        let test = Profile::load("test", &profiles_dir()).unwrap();
        assert!(!test.services.jitsi);
        assert!(test.services.ssh, "the suite audits SSH on the test image");
        for package in ["nginx", "prosody", "coturn"] {
            assert!(test.packages.iter().any(|p| p == package), "{package}");
        }
        let default = Profile::load("default", &profiles_dir()).unwrap();
        assert!(default.services.jitsi);
        assert!(!default.services.ssh, "SSH is off by default");
    }

    #[test]
    fn minimal_profile_gets_defaults() {
        let profile = Profile::parse(MINIMAL, Path::new("x.toml")).unwrap();
        assert_eq!(profile.esp_size, ByteSize(256 << 20));
        assert_eq!(profile.image_size, ByteSize(3 << 30));
        assert!(!profile.services.ssh);
        assert_eq!(profile.artifact_name(), "box-debian-12");
    }

    fn error_of(text: &str) -> String {
        format!(
            "{:#}",
            Profile::parse(text, Path::new("profiles/bad.toml")).unwrap_err()
        )
    }

    #[test]
    fn unknown_key_names_file_key_and_allowed_keys() {
        let err = error_of(&MINIMAL.replace("[services]", "[services]\nshh = true"));
        assert!(err.contains("profiles/bad.toml"), "{err}");
        assert!(err.contains("shh"), "{err}");
        assert!(err.contains("ssh") && err.contains("jitsi"), "{err}");
    }

    #[test]
    fn bad_base_lists_the_allowed_ones() {
        let err = error_of(&MINIMAL.replace("debian-12", "fedora-40"));
        assert!(err.contains("fedora-40"), "{err}");
        assert!(
            err.contains("ubuntu-24.04") && err.contains("debian-12"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = error_of(&MINIMAL.replace("\"3GiB\"", "\"3 gigs\""));
        assert!(
            err.contains("image_size") && err.contains("3 gigs"),
            "{err}"
        );
        let err = error_of(&MINIMAL.replace("\"3GiB\"", "\"1GiB\""));
        assert!(
            err.contains("image_size") && err.contains("too small"),
            "{err}"
        );
        let err = error_of(&MINIMAL.replace("name = \"box\"", "name = \"My Box\""));
        assert!(err.contains("`name`"), "{err}");
        let err = error_of(&MINIMAL.replace("[services]", "packages = [\"Bad Pkg\"]\n[services]"));
        assert!(err.contains("packages") && err.contains("Bad Pkg"), "{err}");
        let err = error_of(&MINIMAL.replace("[services]", "mirror = \"ftp://x\"\n[services]"));
        assert!(err.contains("mirror"), "{err}");
        let err = error_of(&MINIMAL.replace("cores = 2", "cores = \"two\""));
        assert!(err.contains("cores"), "{err}");
    }

    #[test]
    fn maintenance_window_is_strictly_validated() {
        let with = |time: &str| {
            MINIMAL.replace(
                "[hardware]",
                &format!("[maintenance]\nreboot_time = \"{time}\"\n[hardware]"),
            )
        };
        let profile = Profile::parse(&with("03:30"), Path::new("x.toml")).unwrap();
        assert_eq!(profile.maintenance.unwrap().reboot_time, "03:30");
        assert!(Profile::parse(&with("23:59"), Path::new("x.toml")).is_ok());
        for bad in [
            "3:30", "24:00", "03:60", "03:30:00", "noon", "", "0330", "+3:30", "03:3x",
        ] {
            let err = error_of(&with(bad));
            assert!(
                err.contains("maintenance.reboot_time") && err.contains("HH:MM"),
                "{bad}: {err}"
            );
        }
        let err = error_of(&MINIMAL.replace(
            "[hardware]",
            "[maintenance]\nreboot = \"03:30\"\n[hardware]",
        ));
        assert!(err.contains("reboot_time"), "{err}");
        assert!(Profile::parse(MINIMAL, Path::new("x.toml"))
            .unwrap()
            .maintenance
            .is_none());
    }

    #[test]
    fn missing_section_is_named() {
        let err = error_of(&MINIMAL.replace("[services]\n", ""));
        assert!(err.contains("services"), "{err}");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!("512MiB".parse::<ByteSize>().unwrap(), ByteSize(512 << 20));
        assert_eq!("2GiB".parse::<ByteSize>().unwrap(), ByteSize(2 << 30));
        assert_eq!("4096".parse::<ByteSize>().unwrap(), ByteSize(4096));
        assert!("4GB".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
    }

    #[test]
    fn unknown_profile_lists_available_ones() {
        let err = format!(
            "{:#}",
            Profile::load("nosuch", &profiles_dir()).unwrap_err()
        );
        assert!(err.contains("nosuch") && err.contains("default"), "{err}");
    }

    #[test]
    fn base_override_parses() {
        assert_eq!("debian-12".parse::<Base>().unwrap(), Base::Debian12);
        assert!("ubuntu".parse::<Base>().is_err());
    }
}
