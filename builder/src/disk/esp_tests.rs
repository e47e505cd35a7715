//! Tests of `disk/esp.rs`.

use super::*;
use crate::disk::gpt::{create_sparse_image, write_partition_table};
use std::process::Command;

const MIB: u64 = 1024 * 1024;
/// 2023-11-14T22:13:20Z
const EPOCH: u64 = 1_700_000_000;

/// A root tree laid out like Ubuntu's: shim through an absolute alternatives symlink.
fn ubuntu_like_tree(dir: &Path) {
    let shim = dir.join("usr/lib/shim");
    std::fs::create_dir_all(&shim).unwrap();
    std::fs::create_dir_all(dir.join("etc/alternatives")).unwrap();
    std::fs::create_dir_all(dir.join("usr/lib/grub/x86_64-efi-signed")).unwrap();
    std::fs::write(shim.join("shimx64.efi.signed.latest"), b"shim latest").unwrap();
    std::fs::write(shim.join("shimx64.efi.signed.previous"), b"shim previous").unwrap();
    std::fs::write(shim.join("mmx64.efi"), b"mok manager").unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/shim/shimx64.efi.signed.latest",
        dir.join("etc/alternatives/shimx64.efi.signed"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/etc/alternatives/shimx64.efi.signed",
        shim.join("shimx64.efi.signed"),
    )
    .unwrap();
    std::fs::write(
        dir.join("usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"),
        vec![7u8; 300_000],
    )
    .unwrap();
}

fn contents<'a>(files: &'a [EspFile], path: &str) -> &'a [u8] {
    &files
        .iter()
        .find(|file| file.path == path)
        .unwrap_or_else(|| panic!("{path} missing"))
        .contents
}

#[test]
fn stub_finds_root_by_uuid_and_chains_to_boot_grub() {
    let uuid = uuid::uuid!("0b6f1b8e-0c3a-4c1e-9a57-3f0d8f1e2a11");
    assert_eq!(
        grub_stub(&uuid),
        "search --no-floppy --fs-uuid --set=root 0b6f1b8e-0c3a-4c1e-9a57-3f0d8f1e2a11\n\
         set prefix=($root)/boot/grub\n\
         configfile $prefix/grub.cfg\n"
    );
}

#[test]
fn ubuntu_tree_gives_shim_through_alternatives_grub_and_mok_manager() {
    let tree = tempfile::tempdir().unwrap();
    ubuntu_like_tree(tree.path());
    let uuid = Uuid::nil();
    let files = esp_files(tree.path(), "ubuntu", &uuid).unwrap();
    let paths: Vec<&str> = files.iter().map(|file| file.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "EFI/BOOT/BOOTX64.EFI",
            "EFI/BOOT/grubx64.efi",
            "EFI/BOOT/mmx64.efi",
            "EFI/ubuntu/shimx64.efi",
            "EFI/ubuntu/grubx64.efi",
            "EFI/ubuntu/mmx64.efi",
            "EFI/ubuntu/grub.cfg",
        ]
    );
    assert_eq!(contents(&files, "EFI/BOOT/BOOTX64.EFI"), b"shim latest");
    assert_eq!(contents(&files, "EFI/ubuntu/mmx64.efi"), b"mok manager");
    assert_eq!(
        contents(&files, "EFI/ubuntu/grub.cfg"),
        grub_stub(&uuid).as_bytes()
    );
}

#[test]
fn debian_tree_without_mok_manager_and_missing_grub_is_an_error() {
    let tree = tempfile::tempdir().unwrap();
    let shim = tree.path().join("usr/lib/shim");
    std::fs::create_dir_all(&shim).unwrap();
    std::fs::write(shim.join("shimx64.efi.signed"), b"debian shim").unwrap();
    let err = esp_files(tree.path(), "debian", &Uuid::nil()).unwrap_err();
    assert!(err.to_string().contains("grub-efi-amd64-signed"), "{err:#}");

    let grub = tree.path().join("usr/lib/grub/x86_64-efi-signed");
    std::fs::create_dir_all(&grub).unwrap();
    std::fs::write(grub.join("grubx64.efi.signed"), b"debian grub").unwrap();
    let files = esp_files(tree.path(), "debian", &Uuid::nil()).unwrap();
    assert_eq!(contents(&files, "EFI/debian/shimx64.efi"), b"debian shim");
    assert!(files.iter().all(|file| !file.path.ends_with("mmx64.efi")));
    assert!(files.iter().any(|file| file.path == "EFI/debian/grub.cfg"));
}

#[test]
fn unknown_vendor_is_rejected() {
    let err = esp_files(Path::new("."), "fedora", &Uuid::nil()).unwrap_err();
    assert!(err.to_string().contains("EFI/debian"), "{err}");
}

#[test]
fn symlinks_cannot_escape_the_tree() {
    assert_eq!(normalize(Path::new("a/../../etc")), None);
    assert_eq!(
        normalize(Path::new("/etc/./alternatives/../x")),
        Some(PathBuf::from("etc/x"))
    );
}

#[test]
fn civil_dates_match_known_instants() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(EPOCH / 86_400), (2023, 11, 14));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    let clock = FixedClock::at(EPOCH);
    assert_eq!(clock.date_time.time.hour, 22);
    assert_eq!(clock.date_time.time.min, 13);
    assert_eq!(clock.date_time.time.sec, 20);
    assert_eq!(FixedClock::at(0).date_time.date.year, 1980);
}

fn build(dir: &Path, name: &str, files: &[EspFile]) -> (PathBuf, DiskLayout) {
    let layout = DiskLayout::plan(200 * MIB, 64 * MIB, b"esp-test").unwrap();
    let path = dir.join(name);
    let image = create_sparse_image(&path, &layout).unwrap();
    write_partition_table(&image, &layout).unwrap();
    write_esp(&image, &layout, files, EPOCH).unwrap();
    (path, layout)
}

fn sample_files() -> Vec<EspFile> {
    let tree = tempfile::tempdir().unwrap();
    ubuntu_like_tree(tree.path());
    esp_files(
        tree.path(),
        "ubuntu",
        &uuid::uuid!("0b6f1b8e-0c3a-4c1e-9a57-3f0d8f1e2a11"),
    )
    .unwrap()
}

fn esp_bytes(path: &Path, layout: &DiskLayout) -> Vec<u8> {
    let image = std::fs::read(path).unwrap();
    let start = layout.esp.offset_bytes() as usize;
    image[start..start + layout.esp.len_bytes() as usize].to_vec()
}

#[test]
fn written_esp_reads_back_as_fat32_with_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = sample_files();
    let (path, layout) = build(dir.path(), "disk.img", &files);

    let region = PartitionSlice {
        file: File::options().read(true).write(true).open(&path).unwrap(),
        start: layout.esp.offset_bytes(),
        len: layout.esp.len_bytes(),
        pos: 0,
    };
    let fs = FileSystem::new(region, FsOptions::new()).unwrap();
    assert_eq!(fs.fat_type(), FatType::Fat32);
    assert_eq!(fs.volume_id(), layout.esp_volume_id);
    assert_eq!(fs.volume_label(), "ESP");
    for file in &files {
        let mut read = Vec::new();
        fs.root_dir()
            .open_file(&file.path)
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, file.contents, "{}", file.path);
    }
    let entry = fs
        .root_dir()
        .open_dir("EFI/ubuntu")
        .unwrap()
        .iter()
        .map(|entry| entry.unwrap())
        .find(|entry| entry.file_name() == "grub.cfg")
        .unwrap();
    assert_eq!(entry.modified().date.year, 2023);
    assert_eq!(entry.modified().time.hour, 22);
}

#[test]
fn two_writes_are_byte_identical_and_stay_inside_the_esp() {
    let dir = tempfile::tempdir().unwrap();
    let files = sample_files();
    let (a, layout) = build(dir.path(), "a.img", &files);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (b, _) = build(dir.path(), "b.img", &files);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // Nothing outside the ESP besides the partition table.
    let image = std::fs::read(&a).unwrap();
    let root_start = layout.root.offset_bytes() as usize;
    let gpt_end = 34 * 512;
    assert!(image[gpt_end..layout.esp.offset_bytes() as usize]
        .iter()
        .all(|&byte| byte == 0));
    assert!(image[root_start..image.len() - 33 * 512]
        .iter()
        .all(|&byte| byte == 0));
}

#[test]
fn fsck_vfat_accepts_the_esp() {
    if !crate::host::test_tools::tool_available("fsck.vfat", "dosfstools") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, layout) = build(dir.path(), "disk.img", &sample_files());
    let esp = dir.path().join("esp.fat");
    std::fs::write(&esp, esp_bytes(&path, &layout)).unwrap();
    let check = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&esp)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "fsck.vfat -n: {text}");
    assert!(!text.to_lowercase().contains("differ"), "{text}");
}

#[test]
fn mtools_list_the_boot_loader() {
    if !crate::host::test_tools::tool_available("mdir", "mtools") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, layout) = build(dir.path(), "disk.img", &sample_files());
    let target = format!("{}@@{}", path.display(), layout.esp.offset_bytes());
    let listing = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", &target, "::/EFI/BOOT"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.status.success(), "mdir: {text}");
    assert!(
        text.contains("BOOTX64") && text.contains("grubx64.efi"),
        "{text}"
    );
    assert!(text.contains("Volume in drive : is ESP"), "{text}");
}
