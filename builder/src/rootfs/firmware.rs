//! Firmware by hardware profile. On Ubuntu the kernel pulls in `linux-firmware`, about 670 MB of
//! firmware for every device Linux knows; the image keeps the files its hardware profile names
//! (`[firmware] files`, globs under `/lib/firmware`) and the CPU microcode, and no more.
//!
//! The mechanism is dpkg's path filters: given to mmdebstrap for the install, and written to
//! `/etc/dpkg/dpkg.cfg.d/` in the image, so every later upgrade of `linux-firmware` (its security
//! updates included) unpacks the same subset. Why not the alternatives: Ubuntu has no package per
//! device family, and a repacked or meta package would take the box off the archive's own
//! updates. The cost: a profile must name its hardware's files, so `meetbox build` warns about a
//! name that matches no file.

use std::path::Path;

use crate::profile::Base;

/// The filter in the image, relative to its root.
pub const DPKG_CONFIG: &str = "etc/dpkg/dpkg.cfg.d/60meetbox-firmware";
/// Kept whatever the profile says: microcode updates fix CPU security bugs.
const ALWAYS_KEPT: [&str; 2] = ["intel-ucode/*", "amd-ucode/*"];
/// Where packages put firmware (noble's `linux-firmware` uses the first; merged /usr the second).
const FIRMWARE_DIRS: [&str; 2] = ["/lib/firmware", "/usr/lib/firmware"];

/// dpkg's filter options for `base` keeping `files`, in dpkg's order (the last match wins):
/// everything under the firmware directories out, then the kept files back in. Empty where the
/// base needs no filter.
pub fn dpkg_filters(base: Base, files: &[String]) -> Vec<String> {
    if !base.distro().filters_firmware {
        return Vec::new();
    }
    let mut filters: Vec<String> = FIRMWARE_DIRS
        .iter()
        .map(|dir| format!("path-exclude={dir}/*"))
        .collect();
    for glob in ALWAYS_KEPT
        .iter()
        .copied()
        .chain(files.iter().map(String::as_str))
    {
        for dir in FIRMWARE_DIRS {
            // dpkg creates no directory it excluded: each parent comes back in by its name.
            let parts: Vec<&str> = glob.split('/').collect();
            let mut parent = String::new();
            for part in &parts[..parts.len() - 1] {
                parent.push('/');
                parent.push_str(part);
                let include = format!("path-include={dir}{parent}");
                if !filters.contains(&include) {
                    filters.push(include);
                }
            }
            filters.push(format!("path-include={dir}/{glob}"));
        }
    }
    filters
}

/// The dpkg configuration file that keeps the filter for upgrades; None without a filter.
pub fn dpkg_config(filters: &[String]) -> Option<String> {
    (!filters.is_empty()).then(|| {
        format!(
            "# Written by meetbox build: only the firmware of the hardware profile (docs/hardening.md).\n{}\n",
            filters.join("\n")
        )
    })
}

/// The profile's globs that match no firmware file in `tree` (a compressed `NAME.zst` or
/// `NAME.xz` counts as `NAME`): hardware whose firmware the image lacks.
pub fn unmatched(tree: &Path, files: &[String]) -> Vec<String> {
    let mut present = Vec::new();
    for dir in FIRMWARE_DIRS {
        collect(&tree.join(dir.trim_start_matches('/')), "", &mut present);
    }
    files
        .iter()
        .filter(|glob| {
            !present.iter().any(|file| {
                let plain = file
                    .strip_suffix(".zst")
                    .or_else(|| file.strip_suffix(".xz"))
                    .unwrap_or(file);
                glob_matches(glob, file) || glob_matches(glob, plain)
            })
        })
        .cloned()
        .collect()
}

fn collect(dir: &Path, prefix: &str, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => collect(&entry.path(), &path, found),
            Ok(_) => found.push(path),
            Err(_) => {}
        }
    }
}

/// fnmatch without flags, as dpkg's filters match: `*` and `?` also match '/'.
fn glob_matches(glob: &str, text: &str) -> bool {
    let (glob, text) = (glob.as_bytes(), text.as_bytes());
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((sg, st)) => {
                    g = sg + 1;
                    t = st + 1;
                    star = Some((sg, st + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ubuntu_excludes_firmware_then_keeps_microcode_and_the_profiles_files() {
        let filters = dpkg_filters(Base::Ubuntu2404, &["rtl_nic/*".into()]);
        assert_eq!(
            filters[..4],
            [
                "path-exclude=/lib/firmware/*",
                "path-exclude=/usr/lib/firmware/*",
                "path-include=/lib/firmware/intel-ucode",
                "path-include=/lib/firmware/intel-ucode/*",
            ]
        );
        let at = |f: &str| filters.iter().position(|x| x == f).unwrap();
        assert!(
            at("path-include=/usr/lib/firmware/rtl_nic")
                < at("path-include=/usr/lib/firmware/rtl_nic/*"),
            "{filters:?}"
        );
        assert_eq!(filters.len(), 2 + 2 * 3 * 2);
        assert!(dpkg_filters(Base::Debian12, &["rtl_nic/*".into()]).is_empty());
        assert!(dpkg_config(&[]).is_none());
        assert!(dpkg_config(&filters)
            .unwrap()
            .ends_with("path-include=/usr/lib/firmware/rtl_nic/*\n"));
    }

    #[test]
    fn globs_match_as_dpkg_matches_them() {
        assert!(glob_matches("rtl_nic/*", "rtl_nic/rtl8168h-2.fw.zst"));
        assert!(glob_matches(
            "i915/adlp_dmc*.bin",
            "i915/adlp_dmc_ver2_16.bin"
        ));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("rtl_nic/*", "amdgpu/x.bin"));
        assert!(!glob_matches("i915/*.bin", "i915/x.bin.zst"));
    }

    #[test]
    fn globs_that_match_no_file_are_reported() {
        let tree = tempfile::tempdir().unwrap();
        let dir = tree.path().join("lib/firmware/rtl_nic");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rtl8168h-2.fw.zst"), b"x").unwrap();
        let files = vec![
            "rtl_nic/rtl8168h-2.fw".to_string(),
            "rtl_nic/rtl8125*".to_string(),
        ];
        assert_eq!(unmatched(tree.path(), &files), ["rtl_nic/rtl8125*"]);
    }
}
