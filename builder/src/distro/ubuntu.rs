//! Ubuntu 24.04 LTS (noble).

use super::Distro;

pub const NOBLE: Distro = Distro {
    name: "ubuntu-24.04",
    efi_vendor: "ubuntu",
    suite: "noble",
    keyring: include_bytes!("../../keys/ubuntu-archive.gpg"),
    // Ubuntu Archive Automatic Signing Key (2018) <ftpmaster@ubuntu.com>
    fingerprints: &["F6EC B376 2474 EDA9 D21B  7022 8719 20D1 991B C93C"],
    components: &["main", "universe"],
    // Ubuntu ships systemd-repart in its own package.
    packages: &["linux-image-generic", "systemd-repart"],
    kernel_link_dir: "/boot",
    // Ubuntu mirrors carry the security pocket in the same archive.
    security_mirror: |mirror| mirror.to_string(),
    security_origins: |suite| vec![format!("origin=Ubuntu,archive={suite}-security")],
    // linux-image-generic depends on linux-firmware: every firmware file Linux knows.
    filters_firmware: true,
};
