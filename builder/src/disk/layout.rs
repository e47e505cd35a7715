//! Partition layout of the disk image: where the ESP and the root file system go,
//! and every identifier (disk, partition and file system UUIDs) they carry.
//!
//! Pure: the layout is a function of the image size, the ESP size and a seed, so the
//! same build inputs always give the same offsets and the same identifiers.

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::host::progress::human_bytes;

/// Logical sector size of the image (what every USB stick and SSD still emulates).
pub const SECTOR_SIZE: u64 = 512;
/// Partitions start on 1 MiB boundaries, the alignment every partitioning tool uses.
pub const ALIGNMENT_BYTES: u64 = 1024 * 1024;
/// Sectors of the backup GPT at the end of the disk: 32 sectors of entries + the header.
pub const BACKUP_GPT_SECTORS: u64 = 33;
/// Smallest ESP: FAT32 needs 65525 clusters, with 512-byte clusters that is 32 MiB of
/// data plus the two FATs; 40 MiB leaves room for both.
pub const MIN_ESP_BYTES: u64 = 40 * 1024 * 1024;
/// Smallest root partition we accept; any real root tree needs far more.
pub const MIN_ROOT_BYTES: u64 = 64 * 1024 * 1024;

/// EFI System Partition type.
pub const ESP_TYPE_GUID: Uuid = uuid::uuid!("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
/// "Root partition (x86-64)" from the Discoverable Partitions Specification, so
/// systemd-gpt-auto-generator and systemd-repart recognise it.
pub const ROOT_X86_64_TYPE_GUID: Uuid = uuid::uuid!("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");

/// Which role a partition plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionRole {
    Esp,
    Root,
}

impl PartitionRole {
    /// GPT partition type GUID for this role.
    pub fn type_guid(self) -> Uuid {
        match self {
            PartitionRole::Esp => ESP_TYPE_GUID,
            PartitionRole::Root => ROOT_X86_64_TYPE_GUID,
        }
    }

    /// GPT partition name.
    pub fn name(self) -> &'static str {
        match self {
            PartitionRole::Esp => "ESP",
            PartitionRole::Root => "root",
        }
    }
}

/// One planned partition; LBAs are inclusive, as in the GPT entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPlan {
    /// 1-based partition number.
    pub number: u32,
    pub role: PartitionRole,
    /// Unique partition GUID (PARTUUID).
    pub guid: Uuid,
    pub first_lba: u64,
    pub last_lba: u64,
}

impl PartitionPlan {
    /// Byte offset of the partition in the image.
    pub fn offset_bytes(&self) -> u64 {
        self.first_lba * SECTOR_SIZE
    }

    /// Length of the partition in bytes.
    pub fn len_bytes(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * SECTOR_SIZE
    }
}

/// The planned disk: partition table, partitions and file system identifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskLayout {
    pub image_size_bytes: u64,
    pub disk_guid: Uuid,
    /// Partition 1.
    pub esp: PartitionPlan,
    /// Partition 2, the last one, so it can grow to fill a larger disk.
    pub root: PartitionPlan,
    /// FAT volume id (serial number) of the ESP.
    pub esp_volume_id: u32,
    /// ext4 file system UUID of the root (what `root=UUID=` and GRUB's `search` use).
    pub root_fs_uuid: Uuid,
    /// ext4 directory hash seed of the root.
    pub root_hash_seed: Uuid,
}

impl DiskLayout {
    /// Plans a disk of `image_size_bytes` with an ESP of `esp_size_bytes` (rounded up to
    /// whole MiB) and a root partition filling the rest up to the backup GPT.
    pub fn plan(image_size_bytes: u64, esp_size_bytes: u64, seed: &[u8]) -> Result<DiskLayout> {
        if image_size_bytes % SECTOR_SIZE != 0 {
            bail!(
                "image size {image_size_bytes} bytes is not a multiple of the {SECTOR_SIZE}-byte \
                 sector size; use a size in whole MiB"
            );
        }
        if esp_size_bytes < MIN_ESP_BYTES {
            bail!(
                "ESP size {} is too small: FAT32 needs at least {} ({MIN_ESP_BYTES} bytes); raise the ESP size",
                human_bytes(esp_size_bytes),
                human_bytes(MIN_ESP_BYTES)
            );
        }
        let esp_len = esp_size_bytes.div_ceil(ALIGNMENT_BYTES) * ALIGNMENT_BYTES;
        let esp_start = ALIGNMENT_BYTES;
        let root_start = esp_start + esp_len;
        let minimum = root_start + MIN_ROOT_BYTES + BACKUP_GPT_SECTORS * SECTOR_SIZE;
        if image_size_bytes < minimum {
            bail!(
                "image size {} is too small: the partition table, an ESP of {} and the smallest root \
                 partition ({}) need at least {} ({minimum} bytes); raise the image size",
                human_bytes(image_size_bytes),
                human_bytes(esp_len),
                human_bytes(MIN_ROOT_BYTES),
                human_bytes(minimum)
            );
        }
        let total_sectors = image_size_bytes / SECTOR_SIZE;
        let esp = PartitionPlan {
            number: 1,
            role: PartitionRole::Esp,
            guid: derive_uuid(seed, "partition-esp"),
            first_lba: esp_start / SECTOR_SIZE,
            last_lba: root_start / SECTOR_SIZE - 1,
        };
        let root = PartitionPlan {
            number: 2,
            role: PartitionRole::Root,
            guid: derive_uuid(seed, "partition-root"),
            first_lba: root_start / SECTOR_SIZE,
            // The backup GPT takes the last 33 sectors; the sector before it is the last usable one.
            last_lba: total_sectors - BACKUP_GPT_SECTORS - 1,
        };
        let volume_id_bytes = derive_bytes(seed, "esp-volume-id");
        Ok(DiskLayout {
            image_size_bytes,
            disk_guid: derive_uuid(seed, "disk"),
            esp,
            root,
            esp_volume_id: u32::from_le_bytes([
                volume_id_bytes[0],
                volume_id_bytes[1],
                volume_id_bytes[2],
                volume_id_bytes[3],
            ]),
            root_fs_uuid: derive_uuid(seed, "root-fs-uuid"),
            root_hash_seed: derive_uuid(seed, "root-fs-hash-seed"),
        })
    }

    /// Partitions in table order.
    pub fn partitions(&self) -> [&PartitionPlan; 2] {
        [&self.esp, &self.root]
    }

    /// Number of sectors in the image.
    pub fn total_sectors(&self) -> u64 {
        self.image_size_bytes / SECTOR_SIZE
    }
}

/// SHA-256 of the seed and a purpose label, so every identifier is independent of the others.
fn derive_bytes(seed: &[u8], purpose: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"meetbox-layout-v1\0");
    hasher.update((seed.len() as u64).to_le_bytes());
    hasher.update(seed);
    hasher.update(purpose.as_bytes());
    hasher.finalize().into()
}

/// A UUID derived from the seed, with the RFC 4122 version-4 and variant bits set so
/// every tool accepts it as an ordinary random UUID.
pub fn derive_uuid(seed: &[u8], purpose: &str) -> Uuid {
    let digest = derive_bytes(seed, purpose);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    #[test]
    fn esp_first_root_last_aligned_and_filling_the_disk() {
        let layout = DiskLayout::plan(4 * GIB, 256 * MIB, b"seed").unwrap();
        assert_eq!(layout.esp.number, 1);
        assert_eq!(layout.esp.role.type_guid(), ESP_TYPE_GUID);
        assert_eq!(layout.esp.role.name(), "ESP");
        assert_eq!(layout.esp.offset_bytes(), MIB);
        assert_eq!(layout.esp.len_bytes(), 256 * MIB);
        assert_eq!(layout.root.number, 2);
        assert_eq!(layout.root.role.name(), "root");
        assert_eq!(
            layout.root.role.type_guid().to_string(),
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
        );
        assert_eq!(layout.root.offset_bytes(), 257 * MIB);
        assert_eq!(layout.root.offset_bytes() % ALIGNMENT_BYTES, 0);
        // Root ends right before the 33 sectors of the backup GPT.
        let total = 4 * GIB / SECTOR_SIZE;
        assert_eq!(layout.root.last_lba, total - 34);
        assert_eq!(
            layout.root.offset_bytes() + layout.root.len_bytes(),
            4 * GIB - 33 * SECTOR_SIZE
        );
    }

    #[test]
    fn esp_size_rounds_up_to_whole_mib() {
        let layout = DiskLayout::plan(GIB, 100 * MIB + 1, b"seed").unwrap();
        assert_eq!(layout.esp.len_bytes(), 101 * MIB);
        assert_eq!(layout.root.offset_bytes(), 102 * MIB);
    }

    #[test]
    fn same_seed_same_identifiers_other_seed_other_identifiers() {
        let a = DiskLayout::plan(2 * GIB, 128 * MIB, b"profile-x").unwrap();
        let b = DiskLayout::plan(2 * GIB, 128 * MIB, b"profile-x").unwrap();
        let c = DiskLayout::plan(2 * GIB, 128 * MIB, b"profile-y").unwrap();
        assert_eq!(a, b);
        assert_ne!(a.disk_guid, c.disk_guid);
        assert_ne!(a.root_fs_uuid, c.root_fs_uuid);
        assert_ne!(a.esp_volume_id, c.esp_volume_id);
    }

    #[test]
    fn identifiers_are_distinct_v4_uuids() {
        let layout = DiskLayout::plan(2 * GIB, 128 * MIB, b"seed").unwrap();
        let ids = [
            layout.disk_guid,
            layout.esp.guid,
            layout.root.guid,
            layout.root_fs_uuid,
            layout.root_hash_seed,
        ];
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(id.get_version_num(), 4, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
            for other in &ids[i + 1..] {
                assert_ne!(id, other);
            }
        }
    }

    #[test]
    fn derived_uuid_is_stable_across_releases() {
        // Pins the derivation: changing it would change every image's identifiers.
        let expected = {
            let mut hasher = Sha256::new();
            hasher.update(b"meetbox-layout-v1\0");
            hasher.update(4u64.to_le_bytes());
            hasher.update(b"seed");
            hasher.update(b"disk");
            let digest = hasher.finalize();
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            bytes[6] = (bytes[6] & 0x0f) | 0x40;
            bytes[8] = (bytes[8] & 0x3f) | 0x80;
            Uuid::from_bytes(bytes)
        };
        assert_eq!(derive_uuid(b"seed", "disk"), expected);
    }

    #[test]
    fn too_small_sizes_name_the_minimum() {
        let err = DiskLayout::plan(GIB, 32 * MIB, b"s")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ESP size") && err.contains("40.0 MiB"),
            "{err}"
        );

        let err = DiskLayout::plan(100 * MIB, 64 * MIB, b"s")
            .unwrap_err()
            .to_string();
        let minimum = MIB + 64 * MIB + MIN_ROOT_BYTES + 33 * SECTOR_SIZE;
        assert!(err.contains(&format!("{minimum} bytes")), "{err}");

        let smallest = DiskLayout::plan(minimum, 64 * MIB, b"s").unwrap();
        assert_eq!(smallest.root.len_bytes(), MIN_ROOT_BYTES);

        let err = DiskLayout::plan(GIB + 1, 64 * MIB, b"s")
            .unwrap_err()
            .to_string();
        assert!(err.contains("multiple"), "{err}");
    }
}
