//! Interoperability of our block maps with bmaptool, the reference implementation.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use meetbox::artifact::blockmap::BlockMap;

/// Whether `tool` (from bmap-tools) can run here: the one gate of the tests.
fn have_tool(tool: &str) -> bool {
    meetbox::host::test_tools::tool_available(tool, "bmap-tools")
}

/// A 48 MiB sparse image with data at the start, in the middle and at the end,
/// with varied content so every range hashes differently.
fn sparse_image(path: &Path) {
    let file = File::create(path).unwrap();
    file.set_len(48 << 20).unwrap();
    let pattern = |seed: u8, len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[seed as usize % 4] ^ seed)
            .collect()
    };
    file.write_all_at(&pattern(1, 3 << 20), 0).unwrap();
    file.write_all_at(&pattern(2, 4096), 7 << 20).unwrap();
    file.write_all_at(&pattern(3, 5 << 20), 20 << 20).unwrap();
    file.write_all_at(&pattern(4, 64 << 10), (48 << 20) - (64 << 10))
        .unwrap();
    file.sync_all().unwrap();
}

/// Compresses as `meetbox build` does: independent frames (small ones here, so
/// there are several) and a seek table in a skippable frame, which bmaptool's
/// zstd must read as one stream.
fn compress(raw: &Path, zst: &Path) {
    meetbox::artifact::compress::compress_in_frames(raw, zst, 3, 2, 4 << 20, None).unwrap();
}

#[test]
fn bmaptool_copy_accepts_our_map() {
    if !have_tool("bmaptool") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("x.img");
    let zst = dir.path().join("x.img.zst");
    let bmap = dir.path().join("x.img.bmap");
    let target = dir.path().join("target.img");
    sparse_image(&raw);
    compress(&raw, &zst);
    let map = BlockMap::from_image(&raw).unwrap();
    assert_eq!(map.ranges.len(), 4, "{map:?}");
    map.write(&bmap).unwrap();

    let output = Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(&bmap)
        .arg(&zst)
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "bmaptool copy refused our map: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        std::fs::read(&target).unwrap() == std::fs::read(&raw).unwrap(),
        "bmaptool copy with our map produced a different image"
    );
}

#[test]
fn bmaptool_create_output_parses_and_matches_ours() {
    if !have_tool("bmaptool") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("x.img");
    let theirs = dir.path().join("theirs.bmap");
    sparse_image(&raw);
    let output = Command::new("bmaptool")
        .arg("create")
        .arg("-o")
        .arg(&theirs)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "bmaptool create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed = BlockMap::read(&theirs).unwrap();
    assert_eq!(parsed, BlockMap::from_image(&raw).unwrap());

    // A changed byte in bmaptool's file is caught by its own file checksum.
    let tampered = std::fs::read_to_string(&theirs)
        .unwrap()
        .replace("<ImageSize> ", "<ImageSize> 1");
    assert!(BlockMap::parse(&tampered).is_err());
}
