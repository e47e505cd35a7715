//! Kernel modules that a headless meeting server never loads, left out of the image. The
//! distributions' kernels carry a driver for every device Linux knows, including sound cards,
//! cameras and TV tuners, Wi-Fi and Bluetooth, data-centre fabrics and laboratory hardware. On
//! Ubuntu these come to about a third of the modules' size, and they are compressed already, so
//! every one of them costs its full size in the image.
//!
//! The mechanism is the one the firmware uses (firmware.rs): dpkg path filters, given to
//! mmdebstrap and written to `/etc/dpkg/dpkg.cfg.d/`, so every kernel that a security update
//! brings is unpacked without them too. `depmod` and the initramfs see only the modules that are
//! there. What stays covers every box the hardware profiles describe: storage (NVMe, SATA, USB),
//! wired Ethernet, graphics for the console, USB input, file systems and netfilter.

/// The filter in the image, relative to its root.
pub const DPKG_CONFIG: &str = "etc/dpkg/dpkg.cfg.d/61meetbox-modules";

/// Where kernel packages put their modules (Ubuntu 24.04 and Debian 12 use the first; merged
/// /usr the second).
const MODULE_DIRS: [&str; 2] = ["/lib/modules", "/usr/lib/modules"];

/// Paths under each kernel's `kernel/` directory, with why no Meetbox box loads them.
pub const LEFT_OUT: [(&str, &str); 14] = [
    (
        "sound/*",
        "sound cards: a meeting's audio is in the browsers",
    ),
    ("drivers/media/*", "cameras, TV tuners and video capture"),
    (
        "drivers/net/wireless/*",
        "Wi-Fi: off in every hardware profile, the box is wired",
    ),
    ("net/mac80211/*", "the Wi-Fi stack"),
    ("net/wireless/*", "the Wi-Fi configuration layer"),
    ("drivers/bluetooth/*", "Bluetooth (also blacklisted)"),
    ("net/bluetooth/*", "the Bluetooth stack"),
    ("drivers/infiniband/*", "data-centre fabrics"),
    (
        "drivers/staging/*",
        "drivers not yet accepted by the kernel",
    ),
    ("drivers/comedi/*", "laboratory data acquisition cards"),
    ("drivers/iio/*", "industrial and laptop sensors"),
    (
        "v4l2loopback/*",
        "virtual cameras (Ubuntu's out-of-tree module)",
    ),
    ("zfs/*", "ZFS: the box's disks are ext4 and FAT"),
    (
        "kernel/kheaders.ko*",
        "the kernel's own headers, for tracing tools",
    ),
];

/// dpkg's filter options that leave out [`LEFT_OUT`] for every kernel version.
pub fn dpkg_filters() -> Vec<String> {
    MODULE_DIRS
        .iter()
        .flat_map(|dir| {
            LEFT_OUT
                .iter()
                .map(move |(path, _)| format!("path-exclude={dir}/*/kernel/{path}"))
        })
        .collect()
}

/// The dpkg configuration file that keeps the filter for kernel updates.
pub fn dpkg_config() -> String {
    let mut text = String::from(
        "# Written by meetbox build: kernel modules a headless meeting server never loads \
         (builder/src/rootfs/modules.rs).\n",
    );
    for (filter, (_, why)) in dpkg_filters().iter().zip(LEFT_OUT.iter().cycle()) {
        text.push_str(&format!("# {why}\n{filter}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_version_and_both_module_directories_are_filtered() {
        let filters = dpkg_filters();
        assert_eq!(filters.len(), 2 * LEFT_OUT.len());
        assert!(filters.contains(&"path-exclude=/lib/modules/*/kernel/sound/*".to_string()));
        assert!(filters.contains(
            &"path-exclude=/usr/lib/modules/*/kernel/drivers/net/wireless/*".to_string()
        ));
        // Wired Ethernet, storage and graphics stay.
        for kept in [
            "drivers/net/ethernet",
            "drivers/nvme",
            "drivers/ata",
            "drivers/gpu",
        ] {
            assert!(
                !filters.iter().any(|f| f.contains(kept)),
                "{kept} is filtered"
            );
        }
    }

    #[test]
    fn the_config_says_why_before_each_filter() {
        let config = dpkg_config();
        assert!(config.contains(
            "# sound cards: a meeting's audio is in the browsers\npath-exclude=/lib/modules/*/kernel/sound/*\n"
        ));
        assert!(config.contains(
            "# sound cards: a meeting's audio is in the browsers\npath-exclude=/usr/lib/modules/*/kernel/sound/*\n"
        ));
        assert_eq!(config.matches("path-exclude=").count(), 2 * LEFT_OUT.len());
    }
}
