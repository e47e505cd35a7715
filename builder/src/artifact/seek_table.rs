//! The frame index of a compressed image: a seek table in zstd's seekable format.
//!
//! `meetbox build` compresses the raw image in independent zstd frames of a fixed
//! raw size (see [`crate::artifact::compress`]), so `meetbox flash` can decompress them on
//! every core and skip the frames that hold no mapped data. It needs to know where
//! each frame starts in the compressed file and which raw bytes it holds.
//!
//! Two ways were considered:
//!
//! * **A seek table** in the [zstd seekable format]: a skippable frame at the end
//!   of the file listing each frame's compressed and decompressed size, found from
//!   a fixed 9-byte footer. Reading it costs two small reads, whatever the image
//!   size, and it is a published format other tools read. Skippable frames are
//!   part of the zstd format, so `zstd -d`, `zstdcat` and bmaptool (which runs
//!   `zstd`) ignore it and decompress the image as before.
//! * **Scanning frame headers**: each frame header carries its content size (the
//!   pledged size), but the compressed size of a frame is only known by walking
//!   its block headers (3 bytes before every block of at most 128 KiB), so the
//!   scan touches about 8,000 places per GiB of compressed image before the first
//!   byte can be decompressed, and relies on every frame declaring its size.
//!
//! The seek table wins: constant cost, no dependency on optional header fields, a
//! documented format. It is written by our own code from the specification; the
//! checksum column it allows is left out, since every frame carries zstd's own
//! content checksum and the signed manifest lists each frame with its SHA-256
//! (which `meetbox flash` checks, using the manifest's list, not this table). A file without a (valid) seek table, such as an image built before
//! the frames were introduced, still decompresses as one stream.
//!
//! [zstd seekable format]: https://github.com/facebook/zstd/blob/dev/contrib/seekable_format/zstd_seekable_compression_format.md

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context, Result};

/// Magic number of the skippable frame holding the seek table.
pub const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// Magic number ending the seek table's footer: the last 4 bytes of the file.
pub const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// Size of the footer: number of frames (4), descriptor (1), magic (4).
const FOOTER_LEN: u64 = 9;
/// Size of the skippable frame header: magic (4) and frame size (4).
const SKIPPABLE_HEADER_LEN: u64 = 8;
/// Descriptor bit 7: every entry carries a 4-byte checksum.
const CHECKSUM_FLAG: u8 = 0x80;
/// Descriptor bits 6-2: reserved for incompatible changes, must be zero.
const RESERVED_BITS: u8 = 0x7C;

/// One compressed frame: where its bytes are and which raw bytes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the frame in the compressed file.
    pub compressed_offset: u64,
    pub compressed_size: u64,
    /// Offset of the frame's first byte in the raw image.
    pub raw_offset: u64,
    pub raw_size: u64,
}

/// The frames of a compressed image, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeekTable {
    pub frames: Vec<Frame>,
}

impl SeekTable {
    /// Builds the table from `(compressed_size, raw_size)` pairs in frame order.
    pub fn from_sizes(sizes: &[(u32, u32)]) -> SeekTable {
        let mut compressed_offset = 0;
        let mut raw_offset = 0;
        let frames = sizes
            .iter()
            .map(|&(compressed, raw)| {
                let frame = Frame {
                    compressed_offset,
                    compressed_size: compressed.into(),
                    raw_offset,
                    raw_size: raw.into(),
                };
                compressed_offset += u64::from(compressed);
                raw_offset += u64::from(raw);
                frame
            })
            .collect();
        SeekTable { frames }
    }

    /// Size of the raw image: the sum of the frames' decompressed sizes.
    pub fn raw_size(&self) -> u64 {
        self.frames.last().map_or(0, |f| f.raw_offset + f.raw_size)
    }

    /// Bytes of compressed frames before the seek table.
    pub fn compressed_size(&self) -> u64 {
        self.frames
            .last()
            .map_or(0, |f| f.compressed_offset + f.compressed_size)
    }

    /// Largest decompressed size of one frame.
    pub fn max_raw_frame(&self) -> u64 {
        self.frames.iter().map(|f| f.raw_size).max().unwrap_or(0)
    }

    /// The seek table as a skippable frame, to append after the frames.
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries = self.frames.len() as u64 * 8;
        let mut out = Vec::with_capacity((SKIPPABLE_HEADER_LEN + entries + FOOTER_LEN) as usize);
        out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        out.extend_from_slice(&((entries + FOOTER_LEN) as u32).to_le_bytes());
        for frame in &self.frames {
            out.extend_from_slice(&(frame.compressed_size as u32).to_le_bytes());
            out.extend_from_slice(&(frame.raw_size as u32).to_le_bytes());
        }
        out.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        out.push(0); // descriptor: no checksums
        out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        out
    }

    /// Reads the seek table at the end of `file` (of `file_size` bytes). `Ok(None)`
    /// when the file does not end with one (a single-frame image); an error when it
    /// ends with one that does not describe the file.
    pub fn read(file: &File, file_size: u64) -> Result<Option<SeekTable>> {
        if file_size < SKIPPABLE_HEADER_LEN + FOOTER_LEN {
            return Ok(None);
        }
        let mut footer = [0u8; FOOTER_LEN as usize];
        file.read_exact_at(&mut footer, file_size - FOOTER_LEN)
            .context("cannot read the end of the image")?;
        if le32(&footer[5..9]) != SEEKABLE_MAGIC {
            return Ok(None);
        }
        let count = u64::from(le32(&footer[0..4]));
        let descriptor = footer[4];
        ensure!(
            descriptor & RESERVED_BITS == 0,
            "the seek table uses a format version this meetbox does not know (descriptor {descriptor:#04x})"
        );
        let entry_len: u64 = if descriptor & CHECKSUM_FLAG != 0 {
            12
        } else {
            8
        };
        let table_len = count * entry_len + FOOTER_LEN;
        let frame_len = SKIPPABLE_HEADER_LEN + table_len;
        ensure!(
            frame_len <= file_size,
            "the seek table lists {count} frames, more than the file can hold"
        );
        let mut table = vec![0u8; frame_len as usize];
        file.read_exact_at(&mut table, file_size - frame_len)
            .context("cannot read the seek table")?;
        ensure!(
            le32(&table[0..4]) == SKIPPABLE_MAGIC && u64::from(le32(&table[4..8])) == table_len,
            "the seek table's frame header does not match its footer"
        );
        let sizes: Vec<(u32, u32)> = table[8..8 + (count * entry_len) as usize]
            .chunks_exact(entry_len as usize)
            .map(|entry| (le32(&entry[0..4]), le32(&entry[4..8])))
            .collect();
        let parsed = SeekTable::from_sizes(&sizes);
        let expected = file_size - frame_len;
        if parsed.compressed_size() != expected {
            bail!(
                "the seek table's frames add up to {} bytes but {expected} precede it",
                parsed.compressed_size()
            );
        }
        Ok(Some(parsed))
    }
}

fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn round_trips_through_a_file() {
        let table = SeekTable::from_sizes(&[(10, 100), (7, 100), (3, 40)]);
        let mut bytes = vec![0xAA; 20];
        bytes.extend(table.to_bytes());
        let file = file_with(&bytes);
        let read = SeekTable::read(file.as_file(), bytes.len() as u64)
            .unwrap()
            .unwrap();
        assert_eq!(read, table);
        assert_eq!(read.raw_size(), 240);
        assert_eq!(read.max_raw_frame(), 100);
        assert_eq!(
            read.frames[2],
            Frame {
                compressed_offset: 17,
                compressed_size: 3,
                raw_offset: 200,
                raw_size: 40
            }
        );
    }

    #[test]
    fn layout_follows_the_specification() {
        let bytes = SeekTable::from_sizes(&[(0x0102_0304, 0x0A0B_0C0D)]).to_bytes();
        assert_eq!(bytes.len(), 8 + 8 + 9);
        assert_eq!(&bytes[0..4], &[0x5E, 0x2A, 0x4D, 0x18]);
        assert_eq!(&bytes[4..8], &17u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &[4, 3, 2, 1, 0x0D, 0x0C, 0x0B, 0x0A]);
        assert_eq!(&bytes[16..21], &[1, 0, 0, 0, 0]);
        assert_eq!(&bytes[21..25], &[0xB1, 0xEA, 0x92, 0x8F]);
    }

    #[test]
    fn reads_tables_with_checksums() {
        // Written by hand: one frame of 5 compressed bytes, with a checksum column.
        let mut bytes = vec![1, 2, 3, 4, 5];
        bytes.extend(SKIPPABLE_MAGIC.to_le_bytes());
        bytes.extend(21u32.to_le_bytes());
        bytes.extend(5u32.to_le_bytes());
        bytes.extend(64u32.to_le_bytes());
        bytes.extend(0xDEAD_BEEFu32.to_le_bytes());
        bytes.extend(1u32.to_le_bytes());
        bytes.push(CHECKSUM_FLAG);
        bytes.extend(SEEKABLE_MAGIC.to_le_bytes());
        let file = file_with(&bytes);
        let table = SeekTable::read(file.as_file(), bytes.len() as u64)
            .unwrap()
            .unwrap();
        assert_eq!(table.frames.len(), 1);
        assert_eq!(table.raw_size(), 64);
    }

    #[test]
    fn no_table_and_bad_tables() {
        let plain = file_with(&zstd::encode_all(&[0u8; 1000][..], 3).unwrap());
        let len = plain.as_file().metadata().unwrap().len();
        assert_eq!(SeekTable::read(plain.as_file(), len).unwrap(), None);

        // Frames that do not add up to the bytes before the table.
        let mut bytes = vec![0u8; 30];
        bytes.extend(SeekTable::from_sizes(&[(20, 100)]).to_bytes());
        let file = file_with(&bytes);
        let err = SeekTable::read(file.as_file(), bytes.len() as u64).unwrap_err();
        assert!(err.to_string().contains("add up"), "{err}");

        // A footer claiming more frames than the file holds.
        let mut bytes = SeekTable::from_sizes(&[]).to_bytes();
        bytes[8] = 0xFF;
        let file = file_with(&bytes);
        assert!(SeekTable::read(file.as_file(), bytes.len() as u64).is_err());

        // Reserved descriptor bits.
        let mut bytes = SeekTable::from_sizes(&[]).to_bytes();
        bytes[12] = 0x04;
        let file = file_with(&bytes);
        assert!(SeekTable::read(file.as_file(), bytes.len() as u64).is_err());
    }
}
