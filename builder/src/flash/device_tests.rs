//! Tests of `flash/device.rs`.

use super::*;

fn usb_stick() -> DiskFacts {
    DiskFacts {
        name: "sdb".into(),
        size_bytes: 32 << 30,
        read_only: false,
        removable: true,
        logical_block_size: 512,
        model: Some("SanDisk Ultra".into()),
        serial: Some("4C530001".into()),
        transport: "usb".into(),
        partition_of: None,
        uses: Vec::new(),
        holders: Vec::new(),
    }
}

const IMAGE: Option<u64> = Some(4 << 30);

#[test]
fn idle_disk_large_enough_is_accepted() {
    assert_eq!(refusals(&usb_stick(), IMAGE), vec![]);
}

#[test]
fn mounted_partition_is_refused() {
    let mut disk = usb_stick();
    disk.uses.push(DiskUse::Mount {
        source: "sdb1".into(),
        mount_point: "/media/stick".into(),
    });
    let reasons = refusals(&disk, IMAGE);
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0]
        .to_string()
        .contains("sdb1 is mounted at /media/stick"));
}

#[test]
fn running_system_is_refused() {
    let mut disk = usb_stick();
    disk.uses.push(DiskUse::Mount {
        source: "dm-0".into(),
        mount_point: "/".into(),
    });
    let reasons = refusals(&disk, IMAGE);
    assert_eq!(
        reasons,
        vec![Refusal::RunningSystem {
            source: "dm-0".into(),
            mount_point: "/".into()
        }]
    );
    assert!(reasons[0].to_string().contains("holds the running system"));
}

#[test]
fn swap_is_refused() {
    let mut disk = usb_stick();
    disk.uses.push(DiskUse::Swap {
        source: "sdb2".into(),
    });
    assert!(refusals(&disk, IMAGE)[0].to_string().contains("swapoff"));
}

#[test]
fn held_disk_is_refused() {
    let mut disk = usb_stick();
    disk.holders = vec!["dm-3".into(), "md0".into()];
    let reasons = refusals(&disk, IMAGE);
    assert!(reasons[0].to_string().contains("in use by dm-3, md0"));
}

#[test]
fn read_only_disk_is_refused() {
    let mut disk = usb_stick();
    disk.read_only = true;
    assert_eq!(refusals(&disk, IMAGE), vec![Refusal::ReadOnly]);
}

#[test]
fn small_disk_is_refused_only_when_an_image_is_given() {
    let mut disk = usb_stick();
    disk.size_bytes = 2 << 30;
    let reasons = refusals(&disk, IMAGE);
    assert!(
        reasons[0].to_string().contains("too small"),
        "{}",
        reasons[0]
    );
    assert_eq!(refusals(&disk, None), vec![]);
}

#[test]
fn partition_is_refused() {
    let mut disk = usb_stick();
    disk.name = "sdb1".into();
    disk.partition_of = Some("sdb".into());
    assert!(refusals(&disk, IMAGE)[0].to_string().contains("/dev/sdb"));
}

#[test]
fn four_k_sector_disk_is_refused() {
    let mut disk = usb_stick();
    disk.logical_block_size = 4096;
    assert_eq!(
        refusals(&disk, IMAGE),
        vec![Refusal::SectorSize { size: 4096 }]
    );
}

#[test]
fn every_reason_is_reported_together() {
    let mut disk = usb_stick();
    disk.read_only = true;
    disk.holders = vec!["dm-0".into()];
    disk.size_bytes = 1 << 20;
    assert_eq!(refusals(&disk, IMAGE).len(), 3);
}

#[test]
fn transports_come_from_the_sysfs_path() {
    let cases = [
        ("/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb", "sdb", "usb"),
        ("/sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1", "nvme0n1", "nvme"),
        ("/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda", "sda", "sata"),
        ("/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda", "vda", "virtio"),
        ("/sys/devices/platform/mmc0/mmc_host/mmc0/mmc0:0001/block/mmcblk0", "mmcblk0", "mmc"),
        ("/sys/devices/virtual/block/loop0", "loop0", "loop"),
        ("/sys/devices/virtual/block/zram0", "zram0", "virtual"),
    ];
    for (path, name, expected) in cases {
        assert_eq!(transport_from_sysfs_path(path, name), expected, "{path}");
    }
}

#[test]
fn mountinfo_and_swaps_parse() {
    let mountinfo = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                     40 27 8:17 / /media/my\\040stick rw - vfat /dev/sdb1 rw\n";
    assert_eq!(
        parse_mountinfo(mountinfo),
        vec![
            MountEntry {
                device: (254, 0),
                mount_point: "/".into()
            },
            MountEntry {
                device: (8, 17),
                mount_point: "/media/my stick".into()
            },
        ]
    );
    let swaps = "Filename\tType\tSize\tUsed\tPriority\n/dev/zram0 partition 8388604 0 100\n";
    assert_eq!(parse_swaps(swaps), vec!["/dev/zram0".to_string()]);
}
