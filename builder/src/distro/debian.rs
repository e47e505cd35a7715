//! Debian 12 (bookworm).

use super::Distro;

pub const BOOKWORM: Distro = Distro {
    name: "debian-12",
    efi_vendor: "debian",
    suite: "bookworm",
    keyring: include_bytes!("../../keys/debian-12-archive.gpg"),
    fingerprints: &[
        // Debian Archive Automatic Signing Key (12/bookworm)
        "B8B8 0B5B 623E AB6A D877  5C45 B7C5 D7D6 3509 47F8",
        // Debian Security Archive Automatic Signing Key (12/bookworm)
        "05AB 9034 0C0C 5E79 7F44  A8C8 254C F3B5 AEC0 A8F0",
        // Debian Stable Release Key (12/bookworm)
        "4D64 FEC1 19C2 0290 67D6  E791 F8D2 585B 8783 D481",
    ],
    components: &["main", "non-free-firmware"],
    // Debian 12 has systemd-repart in systemd itself.
    packages: &["linux-image-amd64"],
    kernel_link_dir: "",
    // Debian mirrors publish security updates beside the archive.
    security_mirror: |mirror| format!("{mirror}-security"),
    security_origins: |suite| {
        vec![
            format!("origin=Debian,codename={suite},label=Debian-Security"),
            format!("origin=Debian,codename={suite}-security,label=Debian-Security"),
        ]
    },
    // Debian's kernel needs no firmware package; the profile's are per device family.
    filters_firmware: false,
};
