//! Tests of `vm/qemu.rs`.

use super::*;

fn spec() -> VmSpec {
    VmSpec {
        disk: "disk.img".into(),
        disk_as_usb_stick: false,
        internal_disks: Vec::new(),
        data_sticks: Vec::new(),
        vars: "vars.fd".into(),
        memory_mb: 2048,
        cpus: 2,
        accel: Accel::Tcg,
        forwards: vec![(8080, 80), (8443, 443)],
        udp_forwards: Vec::new(),
        serial_log: None,
        serial_socket: None,
        qmp_socket: None,
        tap: None,
        capture: None,
    }
}

#[test]
fn the_image_as_a_usb_stick_boots_before_the_internal_disks() {
    let mut spec = spec();
    spec.disk_as_usb_stick = true;
    spec.internal_disks = vec![("ssd.img".into(), "MBX-SSD".into())];
    let args = spec.args().join(" ");
    assert!(args.contains("-device qemu-xhci,id=xhci"), "{args}");
    assert!(
        args.contains("-drive if=none,id=stick,format=raw,file=disk.img"),
        "{args}"
    );
    assert!(
        args.contains(
            "-device usb-storage,id=usbstick,bus=xhci.0,drive=stick,removable=on,bootindex=0"
        ),
        "{args}"
    );
    assert!(
        args.contains("-drive if=none,id=internal0,format=raw,file=ssd.img -device virtio-blk-pci,drive=internal0,serial=MBX-SSD,bootindex=1"),
        "{args}"
    );
    assert!(!args.contains("if=virtio"), "{args}");
}

#[test]
fn data_sticks_hang_on_usb_beside_a_virtio_boot_disk() {
    let mut spec = spec();
    spec.data_sticks = vec!["backup-stick.img".into()];
    let args = spec.args().join(" ");
    assert!(args.contains("-device qemu-xhci,id=xhci"), "{args}");
    assert!(
        args.contains("file=disk.img,format=raw,if=virtio"),
        "{args}"
    );
    assert!(
        args.contains("-drive if=none,id=datastick0,format=raw,file=backup-stick.img -device usb-storage,bus=xhci.0,drive=datastick0,removable=on"),
        "{args}"
    );
    assert!(!args.contains("bootindex=0"), "{args}");
}

#[test]
fn capture_dumps_the_user_network_to_a_pcap_file() {
    let mut spec = spec();
    spec.capture = Some("traffic.pcap".into());
    let args = spec.args().join(" ");
    assert!(
        args.contains("-object filter-dump,id=capture0,netdev=n0,file=traffic.pcap"),
        "{args}"
    );
    assert!(!super::VmSpec {
        capture: None,
        ..spec
    }
    .args()
    .join(" ")
    .contains("filter-dump"));
}

#[test]
fn tap_adds_a_second_card() {
    let mut spec = spec();
    spec.tap = Some("mbtap0".into());
    let args = spec.args().join(" ");
    assert!(
        args.contains("-netdev tap,id=n1,ifname=mbtap0,script=no,downscript=no"),
        "{args}"
    );
    assert!(args.contains("virtio-net-pci,netdev=n1,mac=52:54:00:6d:62:01"));
    assert!(
        args.contains("user,id=n0,"),
        "user networking stays: {args}"
    );
}

#[test]
fn command_line_has_secure_boot_firmware_and_loopback_forwards() {
    let args = spec().args().join(" ");
    assert!(args.contains("q35,smm=on,accel=tcg"), "{args}");
    assert!(args.contains("driver=cfi.pflash01,property=secure,value=on"));
    assert!(args.contains("readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"));
    assert!(args.contains("if=pflash,format=raw,unit=1,file=vars.fd"));
    assert!(args.contains("file=disk.img,format=raw,if=virtio"));
    assert!(
        args.contains("user,id=n0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:8443-:443")
    );
    assert!(args.contains("-serial mon:stdio"));
}

#[test]
fn serial_log_and_qmp_for_unattended_runs() {
    let mut spec = spec();
    spec.serial_log = Some("serial.log".into());
    spec.qmp_socket = Some("qmp.sock".into());
    spec.accel = Accel::Kvm;
    let args = spec.args().join(" ");
    assert!(
        args.contains("-serial file:serial.log -monitor none"),
        "{args}"
    );
    assert!(args.contains("-qmp unix:qmp.sock,server=on,wait=off"));
    assert!(args.contains("accel=kvm"));
}

#[test]
fn serial_socket_is_typed_into_and_still_logged() {
    let mut spec = spec();
    spec.serial_socket = Some("serial.sock".into());
    spec.serial_log = Some("serial.log".into());
    spec.udp_forwards = vec![(13478, 3478)];
    let args = spec.args().join(" ");
    assert!(
        args.contains(
            "-chardev socket,id=serial0,path=serial.sock,server=on,wait=off,logfile=serial.log,logappend=off -serial chardev:serial0 -monitor none"
        ),
        "{args}"
    );
    assert!(!args.contains("file:serial.log"), "{args}");
    assert!(
        args.contains(",hostfwd=udp:127.0.0.1:13478-:3478"),
        "{args}"
    );

    spec.serial_log = None;
    let args = spec.args().join(" ");
    assert!(
        args.contains("path=serial.sock,server=on,wait=off -serial chardev:serial0"),
        "{args}"
    );
}

#[test]
fn decompression_keeps_zero_blocks_sparse_and_grows_the_disk() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let mut raw = vec![0u8; 8 << 20];
    raw[4096..8192].fill(0xAB);
    raw[(6 << 20)..(6 << 20) + 10].fill(1);
    // Compressed as the build does: frames and a seek table.
    let raw_path = dir.path().join("in.img");
    fs::write(&raw_path, &raw).unwrap();
    let zst = dir.path().join("x.img.zst");
    crate::artifact::compress::compress_in_frames(&raw_path, &zst, 3, 2, 2 << 20, None).unwrap();
    let out = dir.path().join("x.img");
    let written = decompress_sparse(&zst, &out, 16 << 20).unwrap();
    assert_eq!(written, raw.len() as u64);
    let back = fs::read(&out).unwrap();
    assert_eq!(back.len(), 16 << 20);
    assert_eq!(&back[..raw.len()], &raw[..]);
    let allocated = fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        allocated < (1 << 20),
        "only data blocks allocated, got {allocated}"
    );
}
