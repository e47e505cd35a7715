//! Moving the backup GPT to the end of a target larger than the image.
//!
//! An image's backup GPT header sits at the image's last sector. On a larger disk
//! firmware and tools look for it at the disk's last sector, find nothing and call
//! the table damaged. We rewrite the headers so the backup (header and partition
//! array) sits at the end of the target, which also lets the root partition grow
//! into the new space. The arithmetic is a pure function over the image's first
//! sectors; `apply` writes the result.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{ensure, Context, Result};

/// Sector size of the image's partition table (disks with other sizes are refused).
pub const SECTOR: u64 = 512;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// The writes that move the backup GPT, worked out in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relocation {
    /// Protective MBR with its size field covering the whole target.
    pub mbr: Vec<u8>,
    /// Primary header pointing at the new backup, with a new last usable sector.
    pub primary_header: Vec<u8>,
    /// Backup header for the target's last sector.
    pub backup_header: Vec<u8>,
    /// The partition array, to be copied in front of the backup header.
    pub entries: Vec<u8>,
    pub backup_entries_lba: u64,
    pub backup_header_lba: u64,
    /// Where the image's backup header was; it is cleared so no stale copy is found.
    pub old_backup_lba: u64,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn seal_header(header: &mut [u8], header_size: usize) {
    header[16..20].fill(0);
    let crc = CRC32.checksum(&header[..header_size]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// Works out the relocation from the image's first sectors (`head`, at least up to
/// the end of the primary partition array) for a target of `target_sectors`.
/// `None` when the image has no GPT or its backup already ends the target.
pub fn plan(head: &[u8], target_sectors: u64) -> Result<Option<Relocation>> {
    let sector = SECTOR as usize;
    ensure!(head.len() >= 2 * sector, "image head too short for a GPT");
    let header = &head[sector..2 * sector];
    if &header[..8] != SIGNATURE {
        return Ok(None);
    }
    let header_size = u32_at(header, 12) as usize;
    ensure!(
        (92..=sector).contains(&header_size),
        "the image's GPT header has an invalid size {header_size}"
    );
    let mut check = header.to_vec();
    seal_header(&mut check, header_size);
    ensure!(
        check[16..20] == header[16..20],
        "the image's primary GPT header fails its CRC check"
    );
    let old_backup_lba = u64_at(header, 32);
    let last_lba = target_sectors - 1;
    if old_backup_lba == last_lba {
        return Ok(None);
    }
    ensure!(
        old_backup_lba < last_lba,
        "the image's backup GPT lies beyond the end of the target"
    );

    let entries_lba = u64_at(header, 72);
    let entries_len = u32_at(header, 80) as usize * u32_at(header, 84) as usize;
    let entries_start = entries_lba as usize * sector;
    let entries = head
        .get(entries_start..entries_start + entries_len)
        .context("the image's GPT partition array lies beyond its first MiB")?;
    ensure!(
        CRC32.checksum(entries) == u32_at(header, 88),
        "the image's GPT partition array fails its CRC check"
    );
    let entries_sectors = (entries_len as u64).div_ceil(SECTOR);
    let backup_entries_lba = last_lba - entries_sectors;
    let last_usable = backup_entries_lba - 1;

    let mut primary = header.to_vec();
    primary[32..40].copy_from_slice(&last_lba.to_le_bytes());
    primary[48..56].copy_from_slice(&last_usable.to_le_bytes());
    seal_header(&mut primary, header_size);

    let mut backup = primary.clone();
    backup[24..32].copy_from_slice(&last_lba.to_le_bytes());
    backup[32..40].copy_from_slice(&1u64.to_le_bytes());
    backup[72..80].copy_from_slice(&backup_entries_lba.to_le_bytes());
    seal_header(&mut backup, header_size);

    let mut mbr = head[..sector].to_vec();
    let covered = u32::try_from(last_lba).unwrap_or(u32::MAX);
    if mbr[446 + 4] == 0xEE {
        mbr[446 + 12..446 + 16].copy_from_slice(&covered.to_le_bytes());
    }

    Ok(Some(Relocation {
        mbr,
        primary_header: primary,
        backup_header: backup,
        entries: entries.to_vec(),
        backup_entries_lba,
        backup_header_lba: last_lba,
        old_backup_lba,
    }))
}

/// Writes a relocation so that a valid table exists at every moment: first the new
/// backup, then the primary that points at it, then the stale backup is cleared.
pub fn apply(target: &File, relocation: &Relocation) -> Result<()> {
    let sync = |what: &str| {
        target
            .sync_data()
            .with_context(|| format!("cannot flush the target after writing {what}"))
    };
    target
        .write_all_at(&relocation.entries, relocation.backup_entries_lba * SECTOR)
        .and_then(|_| {
            target.write_all_at(
                &relocation.backup_header,
                relocation.backup_header_lba * SECTOR,
            )
        })
        .context("cannot write the backup GPT at the end of the target")?;
    sync("the backup GPT")?;
    target
        .write_all_at(&relocation.mbr, 0)
        .and_then(|_| target.write_all_at(&relocation.primary_header, SECTOR))
        .context("cannot rewrite the primary GPT header")?;
    sync("the primary GPT header")?;
    target
        .write_all_at(&[0u8; SECTOR as usize], relocation.old_backup_lba * SECTOR)
        .context("cannot clear the image's old backup GPT header")?;
    sync("the cleared old backup GPT header")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 34 sectors of a minimal GPT disk of `sectors` sectors with one partition.
    fn image_head(sectors: u64) -> Vec<u8> {
        let mut head = vec![0u8; 34 * 512];
        head[446 + 4] = 0xEE;
        head[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        head[446 + 12..446 + 16].copy_from_slice(&((sectors - 1) as u32).to_le_bytes());
        head[510] = 0x55;
        head[511] = 0xAA;
        let entries = &mut head[1024..1024 + 128 * 128];
        entries[..16].copy_from_slice(&[0x11; 16]); // type GUID
        entries[16..32].copy_from_slice(&[0x22; 16]); // partition GUID
        entries[32..40].copy_from_slice(&2048u64.to_le_bytes());
        entries[40..48].copy_from_slice(&(sectors - 34).to_le_bytes());
        let entries_crc = CRC32.checksum(&head[1024..1024 + 128 * 128]);
        let h = &mut head[512..1024];
        h[..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(sectors - 1).to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
        h[56..72].copy_from_slice(&[0x33; 16]);
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        seal_header(h, 92);
        head
    }

    #[test]
    fn backup_moves_to_the_last_sector() {
        let head = image_head(8192);
        let plan = plan(&head, 20_000).unwrap().unwrap();
        assert_eq!(plan.backup_header_lba, 19_999);
        assert_eq!(plan.backup_entries_lba, 19_999 - 32);
        assert_eq!(plan.old_backup_lba, 8191);
        assert_eq!(u64_at(&plan.primary_header, 32), 19_999);
        assert_eq!(u64_at(&plan.primary_header, 48), 19_999 - 33);
        assert_eq!(u64_at(&plan.backup_header, 24), 19_999);
        assert_eq!(u64_at(&plan.backup_header, 32), 1);
        assert_eq!(u64_at(&plan.backup_header, 72), 19_999 - 32);
        assert_eq!(u32_at(&plan.mbr, 446 + 12), 19_999);
        for header in [&plan.primary_header, &plan.backup_header] {
            let mut check = header.clone();
            seal_header(&mut check, 92);
            assert_eq!(&check, header, "header CRC must be valid");
        }
    }

    #[test]
    fn same_size_target_needs_nothing() {
        assert_eq!(plan(&image_head(8192), 8192).unwrap(), None);
    }

    #[test]
    fn no_gpt_needs_nothing() {
        assert_eq!(plan(&[0u8; 4096], 8192).unwrap(), None);
    }

    #[test]
    fn damaged_header_is_an_error() {
        let mut head = image_head(8192);
        head[512 + 40] ^= 1;
        assert!(plan(&head, 20_000).unwrap_err().to_string().contains("CRC"));
    }
}
