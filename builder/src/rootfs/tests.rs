//! Tests of `rootfs/mod.rs`.

use super::*;
use crate::profile::shipped as profile;

/// The hook writes the overlay's live-stick files byte for byte and executable (run by the
/// real shell on a scratch root), before the kernel's initramfs is made.
#[test]
fn the_live_stick_hook_writes_the_overlay_files_exactly() {
    let hook = live_stick_hook();
    let root = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("sh")
        .args(["-c", &hook, "hook"])
        .arg(root.path())
        .status()
        .unwrap();
    assert!(status.success());
    for (path, text) in LIVE_STICK_FILES {
        let written = root.path().join(path);
        assert_eq!(std::fs::read_to_string(&written).unwrap(), text, "{path}");
        let mode = std::fs::metadata(&written).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{path}");
    }
    let recipe = Recipe::for_profile(&profile("test"));
    assert!(recipe.essential_hooks.contains(&hook));
    let args = recipe.mmdebstrap_args(Path::new("keyring.gpg"), Path::new("out.tar"));
    assert!(args.contains(&format!("--essential-hook={hook}")));
}

#[test]
fn shipped_keyrings_match_their_pins() {
    for base in Base::ALL {
        let keys = base.distro();
        let mut found = keyring::fingerprints(keys.keyring).unwrap();
        let mut pinned: Vec<String> = keys
            .fingerprints
            .iter()
            .map(|f| keyring::normalize(f))
            .collect();
        found.sort();
        pinned.sort();
        assert_eq!(found, pinned, "{base}");
    }
}

#[test]
fn recipe_has_boot_chain_and_profile_packages() {
    let recipe = Recipe::for_profile(&profile("test"));
    for package in [
        "linux-image-generic",
        "initramfs-tools",
        "shim-signed",
        "grub-efi-amd64-signed",
        "systemd-repart",
        "nginx",
        "prosody",
        "coturn",
    ] {
        assert!(recipe.packages.iter().any(|p| p == package), "{package}");
    }
    // The test profile turns SSH on so the suite can audit it; the default leaves it out.
    assert!(recipe.packages.iter().any(|p| p == "openssh-server"));
    let default = Recipe::for_profile(&profile("default"));
    assert!(!default.packages.iter().any(|p| p == "openssh-server"));
    assert_eq!(recipe.components, ["main", "universe"]);
    let mut sorted = recipe.packages.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, recipe.packages);
}

#[test]
fn debian_recipe_uses_debian_kernel() {
    let mut p = profile("test");
    p.base = Base::Debian12;
    let recipe = Recipe::for_profile(&p);
    assert!(recipe.packages.iter().any(|p| p == "linux-image-amd64"));
    assert!(!recipe.packages.iter().any(|p| p == "systemd-repart"));
}

#[test]
fn cache_key_follows_every_input() {
    let recipe = Recipe::for_profile(&profile("test"));
    let key = recipe.cache_key("mmdebstrap 1.3.5");
    assert_eq!(key, recipe.cache_key("mmdebstrap 1.3.5"));
    assert_ne!(key, recipe.cache_key("mmdebstrap 1.4.0"));
    let mut more = recipe.clone();
    more.packages.push("vim".into());
    assert_ne!(key, more.cache_key("mmdebstrap 1.3.5"));
    let mut mirrored = recipe.clone();
    mirrored.mirror = Some("http://mirror.example/ubuntu".into());
    assert_ne!(key, mirrored.cache_key("mmdebstrap 1.3.5"));
    let mut debian = recipe;
    debian.base = Base::Debian12;
    assert_ne!(key, debian.cache_key("mmdebstrap 1.3.5"));
}

#[test]
fn own_mirror_gets_all_three_pockets() {
    let mut p = profile("test");
    p.mirror = Some("http://mirror.example/ubuntu/".into());
    let sources = Recipe::for_profile(&p).sources();
    assert_eq!(
        sources,
        [
            "deb http://mirror.example/ubuntu noble main universe",
            "deb http://mirror.example/ubuntu noble-updates main universe",
            "deb http://mirror.example/ubuntu noble-security main universe",
        ]
    );
    p.base = Base::Debian12;
    p.mirror = Some("http://mirror.example/debian".into());
    let sources = Recipe::for_profile(&p).sources();
    assert_eq!(
        sources[2],
        "deb http://mirror.example/debian-security bookworm-security main non-free-firmware"
    );
    p.mirror = None;
    assert!(Recipe::for_profile(&p).sources().is_empty());
}

#[test]
fn mmdebstrap_args_end_with_suite_output_and_sources() {
    let mut p = profile("test");
    p.mirror = Some("http://mirror.example/ubuntu".into());
    let recipe = Recipe::for_profile(&p);
    let args = recipe.mmdebstrap_args(Path::new("k.gpg"), Path::new("out.tar"));
    let suite_at = args.iter().position(|a| a == "noble").unwrap();
    assert_eq!(args[suite_at + 1], "out.tar");
    assert_eq!(args.len(), suite_at + 5);
    assert!(args.contains(&"--keyring=k.gpg".to_string()));
    assert!(args
        .iter()
        .any(|a| a.starts_with("--customize-hook=") && a.contains("passwd --lock root")));
}

#[test]
fn installed_packages_come_from_dpkg_status() {
    let status = "Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.3\n\n\
                  Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                  Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2-1\nDescription: x\n";
    let packages = installed_packages(status);
    assert_eq!(
        packages,
        vec![
            Package {
                name: "bash".into(),
                version: "5.2-1".into(),
                architecture: "amd64".into()
            },
            Package {
                name: "zlib1g".into(),
                version: "1:1.3".into(),
                architecture: "amd64".into()
            },
        ]
    );
}
