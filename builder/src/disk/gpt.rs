//! The image file itself: a sparse file of the exact size with a protective MBR and the
//! primary and backup GPT written from a [`DiskLayout`].
//!
//! GUIDs come from the layout, never from the `gpt` crate's random generator, so the
//! partition table is the same for the same build inputs.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::{bail, Context, Result};
use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition::Partition;
use gpt::partition_types;
use gpt::GptConfig;

use crate::disk::layout::{DiskLayout, PartitionPlan, PartitionRole};

/// Creates (or truncates) `path` as a sparse file of the layout's exact size, ready for
/// the partition table and file systems.
pub fn create_sparse_image(path: &Path, layout: &DiskLayout) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot create image file {}", path.display()))?;
    file.set_len(layout.image_size_bytes)
        .with_context(|| format!("cannot size image file {}", path.display()))?;
    Ok(file)
}

/// Writes the protective MBR and the primary and backup GPT of `layout` into `image`.
pub fn write_partition_table(image: &File, layout: &DiskLayout) -> Result<()> {
    let actual = image
        .metadata()
        .context("cannot read the image file's size")?
        .len();
    if actual != layout.image_size_bytes {
        bail!(
            "image file is {actual} bytes but the layout plans {} bytes; create it with create_sparse_image",
            layout.image_size_bytes
        );
    }
    let mut device = image.try_clone().context("cannot reopen the image file")?;

    // The protective MBR covers the whole disk (capped at what 32 bits can say).
    let mbr_sectors = u32::try_from(layout.total_sectors() - 1).unwrap_or(u32::MAX);
    ProtectiveMBR::with_lb_size(mbr_sectors)
        .overwrite_lba0(&mut device)
        .context("cannot write the protective MBR")?;

    let mut disk = GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(device, Some(layout.disk_guid))
        .context("cannot set up the GPT headers")?;
    let partitions: BTreeMap<u32, Partition> = layout
        .partitions()
        .into_iter()
        .map(|plan| (plan.number, gpt_entry(plan)))
        .collect();
    disk.update_partitions(partitions)
        .context("cannot fill the GPT partition entries")?;
    disk.write().context("cannot write the GPT")?;
    Ok(())
}

fn gpt_entry(plan: &PartitionPlan) -> Partition {
    let part_type_guid = match plan.role {
        PartitionRole::Esp => partition_types::EFI,
        PartitionRole::Root => partition_types::LINUX_ROOT_X64,
    };
    Partition {
        part_type_guid,
        part_guid: plan.guid,
        first_lba: plan.first_lba,
        last_lba: plan.last_lba,
        flags: 0,
        name: plan.role.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::{ESP_TYPE_GUID, ROOT_X86_64_TYPE_GUID};
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    const MIB: u64 = 1024 * 1024;

    fn image(dir: &Path, name: &str) -> (std::path::PathBuf, DiskLayout) {
        let layout = DiskLayout::plan(300 * MIB, 64 * MIB, b"disk-test").unwrap();
        let path = dir.join(name);
        let file = create_sparse_image(&path, &layout).unwrap();
        write_partition_table(&file, &layout).unwrap();
        (path, layout)
    }

    #[test]
    fn crate_type_guids_match_the_layout() {
        assert_eq!(partition_types::EFI.guid, ESP_TYPE_GUID);
        assert_eq!(partition_types::LINUX_ROOT_X64.guid, ROOT_X86_64_TYPE_GUID);
    }

    #[test]
    fn table_reads_back_with_planned_guids_and_stays_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let (path, layout) = image(dir.path(), "disk.img");

        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 300 * MIB);
        assert!(meta.blocks() * 512 < MIB, "image should stay sparse");

        let disk = GptConfig::new()
            .only_valid_headers(true)
            .open(&path)
            .unwrap();
        assert_eq!(*disk.guid(), layout.disk_guid);
        assert_eq!(disk.header().backup_lba, layout.total_sectors() - 1);
        let parts = disk.partitions();
        assert_eq!(parts.len(), 2);
        for plan in layout.partitions() {
            let entry = &parts[&plan.number];
            assert_eq!(entry.part_guid, plan.guid);
            assert_eq!(entry.part_type_guid.guid, plan.role.type_guid());
            assert_eq!(entry.first_lba, plan.first_lba);
            assert_eq!(entry.last_lba, plan.last_lba);
            assert_eq!(entry.name, plan.role.name());
        }

        let mut mbr = [0u8; 512];
        let mut file = File::open(&path).unwrap();
        file.read_exact(&mut mbr).unwrap();
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
        assert_eq!(mbr[446 + 4], 0xEE, "protective MBR partition type");
        let mut backup_signature = [0u8; 8];
        file.seek(SeekFrom::Start(300 * MIB - 512)).unwrap();
        file.read_exact(&mut backup_signature).unwrap();
        assert_eq!(&backup_signature, b"EFI PART");
    }

    #[test]
    fn same_layout_gives_identical_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = image(dir.path(), "a.img");
        let (b, _) = image(dir.path(), "b.img");
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }

    #[test]
    fn sgdisk_verifies_the_table() {
        if !crate::host::test_tools::tool_available("sgdisk", "gdisk") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (path, layout) = image(dir.path(), "disk.img");
        let verify = Command::new("sgdisk")
            .arg("-v")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&verify.stdout);
        assert!(verify.status.success(), "sgdisk -v failed: {text}");
        assert!(text.contains("No problems found"), "{text}");

        let info = Command::new("sgdisk")
            .args(["-i", "2"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&info.stdout).to_uppercase();
        assert!(
            text.contains(&layout.root.guid.to_string().to_uppercase()),
            "{text}"
        );
        assert!(
            text.contains("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
            "{text}"
        );
    }
}
