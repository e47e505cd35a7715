//! Tests of `flash/writer/mod.rs`.

use super::*;
use crate::artifact::seek_table::SeekTable;

const MIB: u64 = 1 << 20;

#[test]
fn head_and_tail_are_held_back() {
    assert_eq!(held_regions(64 * MIB), vec![(0, MIB), (63 * MIB, 64 * MIB)]);
    assert_eq!(held_regions(MIB + 4096), vec![(0, MIB)]);
}

#[test]
fn larger_target_also_clears_its_last_mib() {
    assert_eq!(
        zeroed_regions(64 * MIB, 100 * MIB),
        vec![(0, MIB), (63 * MIB, 64 * MIB), (99 * MIB, 100 * MIB)]
    );
    assert_eq!(zeroed_regions(64 * MIB, 64 * MIB).len(), 2);
    // A target barely larger than the image: no overlap with the image.
    assert_eq!(
        zeroed_regions(64 * MIB, 64 * MIB + 4096)[2],
        (64 * MIB, 64 * MIB + 4096)
    );
}

#[test]
fn chunk_pieces_skip_held_regions() {
    let regions = [(0, MIB), (63 * MIB, 64 * MIB)];
    assert_eq!(outside_regions(0, 4 * MIB, &regions), vec![(MIB, 3 * MIB)]);
    assert_eq!(outside_regions(0, 4096, &regions), vec![]);
    assert_eq!(
        outside_regions(62 * MIB, 2 * MIB, &regions),
        vec![(62 * MIB, MIB)]
    );
    assert_eq!(
        outside_regions(10 * MIB, 4 * MIB, &regions),
        vec![(10 * MIB, 4 * MIB)]
    );
}

/// File systems without O_DIRECT take the page-cache path with streamed
/// writeback; it must write the same bytes and count every one as flushed.
#[test]
fn page_cache_fallback_writes_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("x.img");
    let image_size = 160 * MIB;
    let file = File::create(&raw).unwrap();
    file.set_len(image_size).unwrap();
    // More data than two writeback windows, so windows are waited for.
    let data: Vec<u8> = (0..(150 * MIB) as usize)
        .map(|i| (i >> 12) as u8 ^ i as u8 | 1)
        .collect();
    file.write_all_at(&data, 5 * MIB).unwrap();
    file.sync_all().unwrap();
    let map = BlockMap::from_image(&raw).unwrap();
    let zst = dir.path().join("x.img.zst");
    crate::artifact::compress::compress_in_frames(&raw, &zst, 1, 2, 8 * MIB, None).unwrap();

    let path = dir.path().join("target.raw");
    let mut target = TargetFile::open_file(&path, image_size).unwrap();
    target.direct = target.buffered.try_clone().unwrap();
    target.direct_io = false;
    let stop = AtomicBool::new(false);
    let frames = frames_as_verified(&zst);
    let job = FlashJob {
        input: Input::Compressed {
            image_zst: &zst,
            frames: Some(&frames),
        },
        map: &map,
        stop: &stop,
        corrupt_after_write: None,
    };
    let report = write_image(&job, &target).unwrap();
    assert_eq!(report.bytes_verified, map.mapped_bytes());
    assert!(std::fs::read(&path).unwrap() == std::fs::read(&raw).unwrap());
}

/// The frames of a compressed file with the SHA-256 of each, as the signature
/// check would find them.
fn frames_as_verified(zst: &Path) -> VerifiedFrames {
    let file = File::open(zst).unwrap();
    let table = SeekTable::read(&file, file.metadata().unwrap().len())
        .unwrap()
        .unwrap();
    let sha256 = table
        .frames
        .iter()
        .map(|frame| {
            let mut bytes = vec![0; frame.compressed_size as usize];
            file.read_exact_at(&mut bytes, frame.compressed_offset)
                .unwrap();
            Sha256::digest(&bytes).into()
        })
        .collect();
    VerifiedFrames { table, sha256 }
}

fn map_of(image_size: u64, spans: &[(u64, u64)], data: &[u8]) -> BlockMap {
    let ranges = spans
        .iter()
        .map(|&(first, last)| {
            let start = (first * 4096) as usize;
            let end = (((last + 1) * 4096) as usize).min(image_size as usize);
            crate::artifact::blockmap::MappedRange {
                first,
                last,
                sha256: Sha256::digest(&data[start..end]).into(),
            }
        })
        .collect();
    BlockMap {
        image_size,
        block_size: 4096,
        ranges,
    }
}

#[test]
fn only_frames_with_mapped_data_are_needed() {
    let data = vec![0u8; (64 * MIB) as usize];
    // Block 0, blocks 1000-1100 (3.9-4.3 MiB: across a frame boundary), the last block.
    let map = map_of(64 * MIB, &[(0, 0), (1000, 1100), (16383, 16383)], &data);
    let table = SeekTable::from_sizes(&[(100, (4 * MIB) as u32); 16]);
    let needed: Vec<u64> = frames_with_data(&map, &table.frames)
        .iter()
        .map(|&i| table.frames[i].raw_offset / (4 * MIB))
        .collect();
    assert_eq!(needed, vec![0, 1, 15]);
    // Empty frames (allowed by the format) are never needed.
    let table = SeekTable::from_sizes(&[(9, 0), (100, (64 * MIB) as u32)]);
    assert_eq!(frames_with_data(&map, &table.frames).len(), 1);
}

fn block(offset: u64, bytes: &[u8]) -> Block {
    let mut buf = AlignedBuf::zeroed(bytes.len());
    buf.as_mut_slice().copy_from_slice(bytes);
    Block {
        offset,
        len: bytes.len(),
        buf,
    }
}

#[test]
fn ranges_are_hashed_across_blocks_and_checked_where_they_end() {
    let data: Vec<u8> = (0..(64 * 4096)).map(|i| (i % 253) as u8).collect();
    // Ranges: blocks 2-9 (across the first block boundary at 8) and 12-13.
    let map = map_of(64 * 4096, &[(2, 9), (12, 13)], &data);
    let mut cursor = RangeCursor::new(&map, true);
    let pieces = cursor.hash(&block(0, &data[..8 * 4096])).unwrap();
    assert_eq!(pieces, vec![(2 * 4096, 6 * 4096)]);
    let pieces = cursor
        .hash(&block(8 * 4096, &data[8 * 4096..16 * 4096]))
        .unwrap();
    assert_eq!(pieces, vec![(8 * 4096, 2 * 4096), (12 * 4096, 2 * 4096)]);

    // Damaged data fails where its range ends.
    let mut cursor = RangeCursor::new(&map, true);
    let mut bad = data[..16 * 4096].to_vec();
    bad[13 * 4096] ^= 1;
    cursor.hash(&block(0, &bad[..8 * 4096])).unwrap();
    let err = cursor.hash(&block(8 * 4096, &bad[8 * 4096..])).unwrap_err();
    assert!(err.to_string().contains("blocks 12-13"), "{err}");

    // Only walking (frames checked before decompression): the same pieces.
    let mut cursor = RangeCursor::new(&map, false);
    cursor.hash(&block(0, &bad[..8 * 4096])).unwrap();
    let pieces = cursor.hash(&block(8 * 4096, &bad[8 * 4096..])).unwrap();
    assert_eq!(pieces, vec![(8 * 4096, 2 * 4096), (12 * 4096, 2 * 4096)]);

    // A missing block (a gap inside a range) is an error, not a skipped range.
    let mut cursor = RangeCursor::new(&map, false);
    cursor.hash(&block(0, &data[..4 * 4096])).unwrap();
    let err = cursor
        .hash(&block(8 * 4096, &data[8 * 4096..16 * 4096]))
        .unwrap_err();
    assert!(err.to_string().contains("no data"), "{err}");
}
