//! Block maps in bmaptool's XML format (version 2.0).
//!
//! A raw disk image is mostly holes. The block map lists the ranges of blocks that
//! hold data, each with its SHA-256, so a flasher writes only those ranges and can
//! check every one of them. The format is bmaptool's, so `bmaptool copy` accepts
//! our images and we accept bmaptool's maps.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use quick_xml::events::Event;
use sha2::{Digest, Sha256};

/// Block size of the maps we write: the page size, as bmaptool uses.
pub const BLOCK_SIZE: u64 = 4096;

/// The only format we write; we read any 2.x map.
const FORMAT_VERSION: &str = "2.0";

/// Length of a SHA-256 digest in hex.
const SHA256_HEX_LEN: usize = 64;

/// A run of consecutive blocks that hold data, with the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedRange {
    /// First block of the run.
    pub first: u64,
    /// Last block of the run (inclusive, as in the XML).
    pub last: u64,
    /// SHA-256 of the run's bytes (the last block of an image may be partial).
    pub sha256: [u8; 32],
}

/// The block map of one raw image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMap {
    /// Size of the raw image in bytes.
    pub image_size: u64,
    /// Size of a block in bytes.
    pub block_size: u64,
    /// Mapped runs, sorted and not overlapping.
    pub ranges: Vec<MappedRange>,
}

impl BlockMap {
    /// Maps the data ranges of a sparse raw image (found with SEEK_DATA/SEEK_HOLE)
    /// and hashes each of them.
    pub fn from_image(raw: &Path) -> Result<BlockMap> {
        let mut file =
            File::open(raw).with_context(|| format!("cannot open image {}", raw.display()))?;
        let image_size = file
            .metadata()
            .with_context(|| format!("cannot stat image {}", raw.display()))?
            .len();
        let extents = data_extents(&file, image_size)
            .with_context(|| format!("cannot find the data ranges of {}", raw.display()))?;
        let spans = block_spans(&extents, BLOCK_SIZE, image_size);
        let mut buffer = vec![0u8; 4 << 20];
        let mut ranges = Vec::with_capacity(spans.len());
        for (first, last) in spans {
            let start = first * BLOCK_SIZE;
            let end = ((last + 1) * BLOCK_SIZE).min(image_size);
            let sha256 = hash_file_span(&mut file, start, end, &mut buffer)
                .with_context(|| format!("cannot read {} to hash it", raw.display()))?;
            ranges.push(MappedRange {
                first,
                last,
                sha256,
            });
        }
        Ok(BlockMap {
            image_size,
            block_size: BLOCK_SIZE,
            ranges,
        })
    }

    /// Number of blocks in the image (the last one may be partial).
    pub fn blocks_count(&self) -> u64 {
        self.image_size.div_ceil(self.block_size)
    }

    /// Number of blocks that hold data.
    pub fn mapped_blocks_count(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// Number of bytes a flasher writes.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| {
                let (start, end) = self.byte_span(r);
                end - start
            })
            .sum()
    }

    /// Byte offsets `[start, end)` of a range in the image.
    pub fn byte_span(&self, range: &MappedRange) -> (u64, u64) {
        let start = range.first * self.block_size;
        let end = ((range.last + 1) * self.block_size).min(self.image_size);
        (start, end)
    }

    /// Renders the map as bmaptool's XML, including the file checksum.
    pub fn to_xml(&self) -> String {
        let with_zeros = self.render_xml(&"0".repeat(SHA256_HEX_LEN));
        let checksum = hex::encode(Sha256::digest(with_zeros.as_bytes()));
        self.render_xml(&checksum)
    }

    fn render_xml(&self, file_checksum: &str) -> String {
        let mapped = self.mapped_blocks_count();
        let mut xml = format!(
            "<?xml version=\"1.0\" ?>\n\
             <!-- Block map of a raw disk image: only the listed block ranges hold data.\n\
             \x20    Written by meetbox in bmaptool's format; `bmaptool copy` accepts it. -->\n\
             <bmap version=\"{FORMAT_VERSION}\">\n\
             \x20   <!-- Image size in bytes -->\n\
             \x20   <ImageSize> {} </ImageSize>\n\n\
             \x20   <!-- Size of a block in bytes -->\n\
             \x20   <BlockSize> {} </BlockSize>\n\n\
             \x20   <!-- Count of blocks in the image file -->\n\
             \x20   <BlocksCount> {} </BlocksCount>\n\n\
             \x20   <!-- Count of mapped blocks -->\n\
             \x20   <MappedBlocksCount> {mapped} </MappedBlocksCount>\n\n\
             \x20   <!-- Type of checksum used in this file -->\n\
             \x20   <ChecksumType> sha256 </ChecksumType>\n\n\
             \x20   <!-- Checksum of this file, computed with this value set to all zeros -->\n\
             \x20   <BmapFileChecksum> {file_checksum} </BmapFileChecksum>\n\n\
             \x20   <!-- Mapped block ranges (first-last, inclusive) with their SHA-256 -->\n\
             \x20   <BlockMap>\n",
            self.image_size,
            self.block_size,
            self.blocks_count(),
        );
        for range in &self.ranges {
            let digest = hex::encode(range.sha256);
            if range.first == range.last {
                xml.push_str(&format!(
                    "        <Range chksum=\"{digest}\"> {} </Range>\n",
                    range.first
                ));
            } else {
                xml.push_str(&format!(
                    "        <Range chksum=\"{digest}\"> {}-{} </Range>\n",
                    range.first, range.last
                ));
            }
        }
        xml.push_str("    </BlockMap>\n</bmap>\n");
        xml
    }

    /// Parses a bmaptool 2.x map (ours or bmaptool's) and checks its file checksum
    /// and internal consistency.
    pub fn parse(xml: &str) -> Result<BlockMap> {
        let fields = read_fields(xml)?;
        let version = fields
            .version
            .context("the bmap has no version attribute")?;
        ensure!(
            version.split('.').next() == Some("2"),
            "bmap format version {version} is not supported (expected 2.x); \
             regenerate the map with a current bmaptool or meetbox"
        );
        let checksum_type = required(&fields.checksum_type, "ChecksumType")?;
        ensure!(
            checksum_type.eq_ignore_ascii_case("sha256"),
            "bmap uses checksum type {checksum_type}; only sha256 is supported \
             (bmaptool create uses sha256 by default)"
        );
        let file_checksum = required(&fields.file_checksum, "BmapFileChecksum")?;
        verify_file_checksum(xml, file_checksum)?;

        let image_size = parse_number(required(&fields.image_size, "ImageSize")?, "ImageSize")?;
        let block_size = parse_number(required(&fields.block_size, "BlockSize")?, "BlockSize")?;
        let blocks_count = parse_number(
            required(&fields.blocks_count, "BlocksCount")?,
            "BlocksCount",
        )?;
        let mapped_count = parse_number(
            required(&fields.mapped_blocks_count, "MappedBlocksCount")?,
            "MappedBlocksCount",
        )?;
        ensure!(
            block_size > 0 && block_size % 512 == 0,
            "bmap block size {block_size} is not a multiple of 512"
        );

        let mut ranges = Vec::with_capacity(fields.ranges.len());
        for (text, chksum) in &fields.ranges {
            ranges.push(parse_range(text, chksum.as_deref())?);
        }
        let map = BlockMap {
            image_size,
            block_size,
            ranges,
        };
        ensure!(
            map.blocks_count() == blocks_count,
            "bmap is inconsistent: BlocksCount {blocks_count} does not match ImageSize {image_size}"
        );
        for pair in map.ranges.windows(2) {
            ensure!(
                pair[0].last < pair[1].first,
                "bmap is inconsistent: range {}-{} is out of order or overlaps the next",
                pair[0].first,
                pair[0].last
            );
        }
        if let Some(last) = map.ranges.last() {
            ensure!(
                last.last < blocks_count,
                "bmap is inconsistent: range {}-{} goes past the end of the image",
                last.first,
                last.last
            );
        }
        ensure!(
            map.mapped_blocks_count() == mapped_count,
            "bmap is inconsistent: MappedBlocksCount {mapped_count} but the ranges hold {} blocks",
            map.mapped_blocks_count()
        );
        Ok(map)
    }

    /// Reads and parses a map file.
    pub fn read(path: &Path) -> Result<BlockMap> {
        let xml = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read block map {}", path.display()))?;
        BlockMap::parse(&xml).with_context(|| format!("invalid block map {}", path.display()))
    }

    /// Writes the map atomically (temporary file in the same directory, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        temp.write_all(self.to_xml().as_bytes())
            .and_then(|_| temp.as_file().sync_all())
            .with_context(|| format!("cannot write block map for {}", path.display()))?;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot set permissions of {}", path.display()))?;
        temp.persist(path)
            .with_context(|| format!("cannot move block map into place at {}", path.display()))?;
        Ok(())
    }
}

/// Byte extents `[start, end)` holding data, as the file system reports them.
fn data_extents(file: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut extents = Vec::new();
    let mut offset: u64 = 0;
    while offset < size {
        // SAFETY: lseek on a descriptor we own; no memory is touched.
        let data = unsafe { libc::lseek(fd, offset as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            return Err(err);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (data, hole) = (data as u64, (hole as u64).min(size));
        if hole > data {
            extents.push((data, hole));
        }
        offset = hole.max(data + 1);
    }
    Ok(extents)
}

/// Turns byte extents into inclusive block runs, widening to whole blocks and
/// merging runs that touch.
fn block_spans(extents: &[(u64, u64)], block_size: u64, image_size: u64) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for &(start, end) in extents {
        let end = end.min(image_size);
        if end <= start {
            continue;
        }
        let first = start / block_size;
        let last = (end - 1) / block_size;
        match spans.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => spans.push((first, last)),
        }
    }
    spans
}

fn hash_file_span(file: &mut File, start: u64, end: u64, buffer: &mut [u8]) -> Result<[u8; 32]> {
    file.seek(SeekFrom::Start(start))?;
    let mut hasher = Sha256::new();
    let mut left = end - start;
    while left > 0 {
        let want = left.min(buffer.len() as u64) as usize;
        file.read_exact(&mut buffer[..want])?;
        hasher.update(&buffer[..want]);
        left -= want as u64;
    }
    Ok(hasher.finalize().into())
}

/// Text of the elements we need, as found in the XML.
#[derive(Default)]
struct Fields {
    version: Option<String>,
    image_size: Option<String>,
    block_size: Option<String>,
    blocks_count: Option<String>,
    mapped_blocks_count: Option<String>,
    checksum_type: Option<String>,
    file_checksum: Option<String>,
    /// Range text ("12-40" or "7") and its chksum attribute.
    ranges: Vec<(String, Option<String>)>,
}

fn read_fields(xml: &str) -> Result<Fields> {
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut fields = Fields::default();
    let mut current: Option<String> = None;
    let mut range_checksum: Option<String> = None;
    loop {
        let event = reader.read_event().with_context(|| {
            format!(
                "bmap is not valid XML near byte {}",
                reader.buffer_position()
            )
        })?;
        match event {
            Event::Start(element) => {
                let name = String::from_utf8_lossy(element.name().as_ref()).into_owned();
                for attribute in element.attributes() {
                    let attribute = attribute.context("bmap has a malformed XML attribute")?;
                    let value = attribute
                        .unescape_value()
                        .context("bmap has a malformed XML attribute value")?
                        .into_owned();
                    match (name.as_str(), attribute.key.as_ref()) {
                        ("bmap", b"version") => fields.version = Some(value),
                        ("Range", b"chksum") => range_checksum = Some(value),
                        _ => {}
                    }
                }
                if name == "Range" {
                    fields.ranges.push((String::new(), range_checksum.take()));
                }
                current = Some(name);
            }
            Event::Text(text) => {
                let text = text
                    .unescape()
                    .context("bmap has malformed XML text")?
                    .trim()
                    .to_string();
                let slot = match current.as_deref() {
                    Some("ImageSize") => &mut fields.image_size,
                    Some("BlockSize") => &mut fields.block_size,
                    Some("BlocksCount") => &mut fields.blocks_count,
                    Some("MappedBlocksCount") => &mut fields.mapped_blocks_count,
                    Some("ChecksumType") => &mut fields.checksum_type,
                    Some("BmapFileChecksum") => &mut fields.file_checksum,
                    Some("Range") => {
                        if let Some(last) = fields.ranges.last_mut() {
                            last.0 = text;
                        }
                        continue;
                    }
                    _ => continue,
                };
                *slot = Some(text);
            }
            Event::End(_) => current = None,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(fields)
}

fn required<'a>(value: &'a Option<String>, element: &str) -> Result<&'a str> {
    value
        .as_deref()
        .with_context(|| format!("bmap has no <{element}> element"))
}

fn parse_number(text: &str, element: &str) -> Result<u64> {
    text.parse()
        .with_context(|| format!("bmap <{element}> is not a number: {text:?}"))
}

fn parse_range(text: &str, chksum: Option<&str>) -> Result<MappedRange> {
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (first.trim(), last.trim()),
        None => (text.trim(), text.trim()),
    };
    let first: u64 = first
        .parse()
        .with_context(|| format!("bmap range {text:?} is not a block number or first-last"))?;
    let last: u64 = last
        .parse()
        .with_context(|| format!("bmap range {text:?} is not a block number or first-last"))?;
    ensure!(first <= last, "bmap range {text:?} ends before it starts");
    let chksum = chksum.with_context(|| {
        format!("bmap range {text:?} has no chksum; create the map with checksums")
    })?;
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(chksum, &mut sha256)
        .with_context(|| format!("bmap range {text:?} has a malformed sha256 chksum"))?;
    Ok(MappedRange {
        first,
        last,
        sha256,
    })
}

/// Checks the file checksum the way bmaptool computes it: SHA-256 of the file with
/// the checksum's first occurrence replaced by zeros.
fn verify_file_checksum(xml: &str, stored: &str) -> Result<()> {
    if stored.len() != SHA256_HEX_LEN || !stored.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("bmap file checksum {stored:?} is not a sha256 digest");
    }
    let position = xml
        .find(stored)
        .context("bmap file checksum not found in the file text")?;
    let mut bytes = xml.as_bytes().to_vec();
    bytes[position..position + SHA256_HEX_LEN].fill(b'0');
    let computed = hex::encode(Sha256::digest(&bytes));
    ensure!(
        computed.eq_ignore_ascii_case(stored),
        "bmap file checksum mismatch (stored {stored}, computed {computed}): the map was \
         modified or truncated; download or rebuild it"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn sample() -> BlockMap {
        BlockMap {
            image_size: 10 * 4096 + 100,
            block_size: 4096,
            ranges: vec![
                MappedRange {
                    first: 0,
                    last: 2,
                    sha256: [1; 32],
                },
                MappedRange {
                    first: 5,
                    last: 5,
                    sha256: [2; 32],
                },
                MappedRange {
                    first: 9,
                    last: 10,
                    sha256: [3; 32],
                },
            ],
        }
    }

    #[test]
    fn xml_round_trips() {
        let map = sample();
        let xml = map.to_xml();
        assert!(xml.contains("<bmap version=\"2.0\">"), "{xml}");
        assert!(xml.contains("> 5 </Range>"), "{xml}");
        assert!(xml.contains("> 9-10 </Range>"), "{xml}");
        assert_eq!(BlockMap::parse(&xml).unwrap(), map);
        assert_eq!(map.blocks_count(), 11);
        assert_eq!(map.mapped_blocks_count(), 6);
        assert_eq!(map.mapped_bytes(), 4 * 4096 + 4096 + 100);
    }

    #[test]
    fn tampered_map_is_refused() {
        let xml = sample().to_xml().replace("> 5 </Range>", "> 6 </Range>");
        let err = format!("{:#}", BlockMap::parse(&xml).unwrap_err());
        assert!(err.contains("file checksum mismatch"), "{err}");
    }

    #[test]
    fn inconsistent_counts_are_refused() {
        let mut map = sample();
        map.ranges.swap(0, 1);
        let err = format!("{:#}", BlockMap::parse(&map.to_xml()).unwrap_err());
        assert!(err.contains("out of order"), "{err}");

        let mut map = sample();
        map.ranges[2].last = 11;
        let err = format!("{:#}", BlockMap::parse(&map.to_xml()).unwrap_err());
        assert!(err.contains("past the end"), "{err}");
    }

    #[test]
    fn spans_widen_to_blocks_and_merge() {
        let extents = [
            (0, 10),
            (4096, 8192),
            (3 * 4096 + 1, 3 * 4096 + 2),
            (50_000, 60_000),
        ];
        assert_eq!(
            block_spans(&extents, 4096, 55_000),
            vec![(0, 1), (3, 3), (12, 13)]
        );
    }

    #[test]
    fn from_image_maps_only_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse.img");
        let file = File::create(&path).unwrap();
        file.set_len(64 << 20).unwrap();
        file.write_all_at(&[0xAA; 8192], 0).unwrap();
        file.write_all_at(&[0x55; 4096 * 3], 32 << 20).unwrap();
        file.sync_all().unwrap();
        drop(file);

        let map = BlockMap::from_image(&path).unwrap();
        assert_eq!(map.image_size, 64 << 20);
        let spans: Vec<_> = map.ranges.iter().map(|r| (r.first, r.last)).collect();
        let first_data = (32 << 20) / 4096;
        assert_eq!(spans, vec![(0, 1), (first_data, first_data + 2)]);
        let expected: [u8; 32] = Sha256::digest([0xAA; 8192]).into();
        assert_eq!(map.ranges[0].sha256, expected);
        let written = BlockMap::parse(&map.to_xml()).unwrap();
        assert_eq!(written, map);
    }

    #[test]
    fn write_is_atomic_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.img.bmap");
        sample().write(&path).unwrap();
        assert_eq!(BlockMap::read(&path).unwrap(), sample());
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "temporary file left behind");
    }
}
