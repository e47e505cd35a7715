//! The USB installer as an owner meets it (issue 12): the `test` image written to a USB stick
//! (usb-storage, removable) in a Secure Boot VM with two empty internal disks, one too small. The
//! stick starts as a live session and offers only the disk that can take the image; a stick with
//! one flipped byte is refused before anything is written; a power cut during the write leaves
//! the disk without a partition table; the next try installs, and the box then starts from the
//! internal disk alone and sets itself up from the answers file it took from the stick. The
//! stick's bytes are the same at the end as at the start. The other choice, running the box from
//! the stick, is the console test's box (`run_from_the_stick`).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::guest_disk::GuestDisk;
use crate::{built, can_run, exclusive, fresh_disk, work_dir, Guest, Ports, BOOT, PROMPT, SETUP};

const MIB: u64 = 1 << 20;
/// Checking 1.2 GB of the stick and writing and reading it back, in software emulation.
const INSTALL: Duration = Duration::from_secs(1500);
const SSD_SERIAL: &str = "MBX-SSD-0001";
pub(crate) const SMALL_SERIAL: &str = "MBX-SMALL-01";

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// An empty internal disk of `bytes` (sparse).
pub(crate) fn empty_disk(name: &str, bytes: u64) -> PathBuf {
    let path = work_dir().join(format!("{name}.img"));
    let _ = fs::remove_file(&path);
    File::create(&path).unwrap().set_len(bytes).unwrap();
    path
}

/// Bytes of `path` that hold data on the host (the rest are holes nothing wrote).
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// The first and last MiB of the disk: where the partition tables would be.
fn partition_table_areas_are_empty(disk: &Path) -> bool {
    let file = File::open(disk).unwrap();
    let size = file.metadata().unwrap().len();
    let mut bytes = vec![0u8; MIB as usize];
    [0, size - MIB].iter().all(|&at| {
        file.read_exact_at(&mut bytes, at).unwrap();
        bytes.iter().all(|&b| b == 0)
    })
}

/// Offset of a byte of data well inside the root partition (file contents, not metadata).
fn data_byte_in_root(stick: &Path, root_offset: u64) -> u64 {
    let file = File::open(stick).unwrap();
    let mut block = vec![0u8; 4096];
    let mut at = root_offset + 600 * MIB;
    loop {
        file.read_exact_at(&mut block, at).unwrap();
        if let Some(i) = block.iter().position(|&b| b != 0) {
            return at + i as u64;
        }
        at += MIB;
    }
}

fn flip(path: &Path, offset: u64) {
    let file = File::options().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x20], offset).unwrap();
    file.sync_all().unwrap();
}

/// Boots the stick and waits for the offer, then checks it as the owner sees it.
fn offer(stick: &Path, disks: &[(PathBuf, String)], name: &str) -> Guest {
    let mut guest = Guest::boot_from_stick(stick, disks, name, Ports::new());
    guest.console.expect("Meetbox first-boot setup", BOOT);
    guest.console.expect("Press Enter to start", PROMPT);
    eprintln!("live session after {}", guest.elapsed());
    guest.console.type_line("");
    guest.console.expect("Choose 1-2: ", PROMPT);
    guest
        .console
        .assert_clean_screen("Meetbox first-boot setup", "Choose 1-2:");
    guest
}

fn choose_the_ssd(guest: &mut Guest) {
    guest.console.type_line("1");
    guest.console.expect("Type ERASE to install", PROMPT);
    guest.console.type_line("ERASE");
    guest
        .console
        .expect("Checking /dev/sda against the signed seal", PROMPT);
}

/// The offer shows the SSD only; the stick and the small disk are named with their reasons.
fn check_offer_lists_only_the_ssd(guest: &Guest) {
    let screen = guest.console.screen(24, 80, usize::MAX).join("\n");
    assert!(
        screen.contains("1) Install onto /dev/vdb: ") && screen.contains(SSD_SERIAL),
        "{screen}"
    );
    assert!(
        screen.contains("2) Run from this USB stick instead"),
        "{screen}"
    );
    assert!(
        screen.contains("/dev/sda: it is the USB stick this box started from"),
        "{screen}"
    );
    assert!(screen.contains("/dev/vda: it is too small"), "{screen}");
    assert!(!screen.contains("Install onto /dev/vda"), "{screen}");
}

/// One flipped byte in the root partition: refused before any write, the cause named.
fn damaged_stick_is_refused(
    guest: &mut Guest,
    stick: &Path,
    stick_disk: &GuestDisk,
    ssd: &Path,
    stick_sha256: &str,
) {
    let flipped = data_byte_in_root(stick, stick_disk.root_offset());
    flip(stick, flipped);
    choose_the_ssd(guest);
    guest
        .console
        .expect("does not hold the signed image", INSTALL);
    guest.console.expect("write the image to it again", PROMPT);
    guest
        .console
        .expect("Press Enter to return to the choices", PROMPT);
    assert_eq!(
        allocated(ssd),
        0,
        "nothing may reach the disk from a damaged stick"
    );
    flip(stick, flipped);
    assert_eq!(sha256_of(stick), stick_sha256);
}

/// Back at the choices, install; the power goes off in the middle of the write, and the disk is
/// left without a partition table.
fn power_cut_mid_write(mut guest: Guest, ssd: &Path) {
    guest.console.type_line("");
    guest.console.expect("Choose 1-2: ", PROMPT);
    choose_the_ssd(&mut guest);
    guest.console.expect("Installing meetbox-", INSTALL);
    let started = Instant::now();
    while allocated(ssd) < 300 * MIB {
        assert!(started.elapsed() < INSTALL, "the write did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(guest); // the plug pulled
    assert!(
        partition_table_areas_are_empty(ssd),
        "a write cut short must leave no partition table"
    );
}

#[test]
fn installs_from_a_usb_stick_onto_the_internal_disk() {
    if !can_run("USB installer") {
        return;
    }
    let _one_at_a_time = exclusive();
    let stick = fresh_disk("installer-stick", 0);
    let stick_disk = GuestDisk::new(&stick, &built().manifest);
    let dir = tempfile::tempdir().unwrap();
    let answers = dir.path().join("meetbox-setup.toml");
    let mut file = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&answers)
        .unwrap();
    file.write_all(
        b"domain = \"box.meetbox.test\"\nadmin_password = \"violet lantern harbor sixty\"\n\
          tls = \"self-signed\"\n",
    )
    .unwrap();
    drop(file);
    stick_disk.put_on_esp(&answers, "meetbox-setup.toml");
    let stick_sha256 = sha256_of(&stick);

    let image_size = fs::metadata(&stick).unwrap().len();
    let ssd = empty_disk("installer-ssd", image_size + 1024 * MIB);
    let small = empty_disk("installer-small", 1024 * MIB);
    let disks = vec![
        (small.clone(), SMALL_SERIAL.to_string()),
        (ssd.clone(), SSD_SERIAL.to_string()),
    ];

    let mut guest = offer(&stick, &disks, "installer-offer");
    check_offer_lists_only_the_ssd(&guest);
    // The screen of a real box in the live session: the banner and its prompt, nothing else.
    guest.tty1_shows("tty1-installer-live", &["first-boot setup", "Press Enter"]);

    damaged_stick_is_refused(&mut guest, &stick, &stick_disk, &ssd, &stick_sha256);

    power_cut_mid_write(guest, &ssd);

    // The second try from the stick starts cleanly and installs.
    let mut guest = offer(&stick, &disks, "installer-install");
    choose_the_ssd(&mut guest);
    let started = Instant::now();
    guest
        .console
        .expect("Meetbox is installed on /dev/vdb", INSTALL);
    eprintln!(
        "confirmation to installed: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    guest.console.expect("Remove the USB stick now", PROMPT);
    // The owner pulls the stick out; the box restarts from the internal disk alone and sets itself
    // up there, from the answers file it took along.
    guest.vm.pull_out_usb_stick().unwrap();
    guest
        .console
        .expect("The stick is out: restarting from /dev/vdb", PROMPT);
    guest.console.expect("Meetbox first-boot setup", BOOT);
    guest.console.expect("Setup is complete", SETUP);
    let transcript = guest.console.transcript();
    let after_restart = &transcript[transcript.rfind("The stick is out").unwrap()..];
    assert!(
        !after_restart.contains("Choose 1-2"),
        "the internal disk is no live session"
    );
    assert!(
        !after_restart.contains("Domain name of the server"),
        "the answers file did not come along"
    );
    assert!(after_restart.contains("box.meetbox.test"));
    eprintln!("set up on the internal disk after {}", guest.elapsed());
    drop(guest);
    assert_eq!(
        sha256_of(&stick),
        stick_sha256,
        "the live sessions must not change the stick"
    );
}

/// The other choice, in the console test's box: with no internal disk that can take the image,
/// the offer says so and the owner runs the box from the stick. The stick is marked (its one
/// write) and restarts as an ordinary box that asks the setup questions.
pub(crate) fn run_from_the_stick(guest: &mut Guest) {
    guest.console.expect("Press Enter to start", BOOT);
    guest.console.type_line("");
    guest
        .console
        .expect("No internal disk can take the image", PROMPT);
    guest.console.expect("Choose 1-1: ", PROMPT);
    guest
        .console
        .assert_clean_screen("Meetbox first-boot setup", "Choose 1-1:");
    guest.console.type_line("1");
    guest
        .console
        .expect("The box will run from this USB stick", PROMPT);
    eprintln!("the owner runs the box from the stick, {}", guest.elapsed());
}

/// The stick, powered off cleanly, holds the owner's choice (also after a factory reset): killed
/// while the root grows, the file system's journal would hold metadata that debugfs, which does
/// not replay it, cannot read.
pub(crate) fn check_marked_to_run_from(stick: &Path) {
    let mark = GuestDisk::new(stick, &built().manifest)
        .read_root_file(meetbox_firstboot::layout::RUN_FROM_THIS_DISK);
    assert!(
        mark.contains("the owner chose to run the box from this disk"),
        "{mark}"
    );
}
