//! Compressed frames of the last build of each image, found again by the SHA-256 of their raw
//! bytes. A rebuild lays out the same bytes where its inputs did not change (the disk is
//! reproducible), and compressing is most of a warm rebuild's time: a frame found here is read
//! and checked instead of compressed again.
//!
//! A cached frame is trusted only after it decompresses to exactly the raw bytes it stands for,
//! so a damaged or foreign cache file costs a recompression, never a wrong image. The key also
//! holds the zstd library version and the level, so a changed compressor cannot reuse frames.
//! After a build, frames that build did not use are removed: the cache holds one image's frames
//! per image name, no more.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Cached frames of one image name at one level.
pub struct FrameCache {
    dir: PathBuf,
    level: i32,
    used: Mutex<HashSet<String>>,
    /// Frames asked for, and how many of them the cache had (equal frames count each time).
    looked_up: AtomicU64,
    hits: AtomicU64,
}

/// What one build found in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUse {
    pub hits: u64,
    /// Frames of this build (equal frames, such as empty ones, share one cache file).
    pub frames: u64,
    /// Files of earlier builds that this one no longer needed.
    pub removed: u64,
}

impl FrameCache {
    /// The cache in `dir` (made private to root if missing) for frames at `level`.
    pub fn open(dir: &Path, level: i32) -> Result<FrameCache> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the frame cache {}", dir.display()))?;
        Ok(FrameCache {
            dir: dir.to_path_buf(),
            level,
            used: Mutex::new(HashSet::new()),
            looked_up: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    fn key(&self, raw: &[u8]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!(
            "zstd {} level {}\n",
            zstd::zstd_safe::version_number(),
            self.level
        ));
        hasher.update(raw);
        hex::encode(hasher.finalize())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.zst"))
    }

    /// The compressed frame for `raw`: from the cache when a cached file decompresses to exactly
    /// `raw`, else from `compress`, then stored for the next build.
    pub fn frame(
        &self,
        raw: &[u8],
        compress: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let key = self.key(raw);
        let path = self.path(&key);
        self.used.lock().expect("no panic holds it").insert(key);
        self.looked_up.fetch_add(1, Ordering::Relaxed);
        if let Ok(cached) = fs::read(&path) {
            let same = zstd::bulk::decompress(&cached, raw.len())
                .is_ok_and(|decompressed| decompressed == raw);
            if same {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(cached);
            }
        }
        let compressed = compress(raw)?;
        self.store(&path, &compressed)?;
        Ok(compressed)
    }

    /// Written through a temporary file and a rename: a build cut short leaves no half frame.
    fn store(&self, path: &Path, compressed: &[u8]) -> Result<()> {
        let mut temp = tempfile::Builder::new()
            .prefix(".frame-")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot write to the frame cache {}", self.dir.display()))?;
        std::io::Write::write_all(&mut temp, compressed)?;
        temp.persist(path)
            .with_context(|| format!("cannot store {}", path.display()))?;
        Ok(())
    }

    /// Removes every cached frame this build did not use; returns what the build found.
    pub fn finish(self) -> Result<CacheUse> {
        let used = self.used.into_inner().expect("no panic holds it");
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list the frame cache {}", self.dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = name.strip_suffix(".zst").unwrap_or(&name);
            if !used.contains(key) {
                fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                removed += 1;
            }
        }
        Ok(CacheUse {
            hits: self.hits.into_inner(),
            frames: self.looked_up.into_inner(),
            removed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(raw: &[u8]) -> Result<Vec<u8>> {
        Ok(zstd::bulk::compress(raw, 3)?)
    }

    #[test]
    fn a_second_build_reuses_the_frames_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let first = FrameCache::open(dir.path(), 3).unwrap();
        let a = vec![1u8; 4096];
        let b = vec![2u8; 4096];
        let frame_a = first.frame(&a, compress).unwrap();
        first.frame(&b, compress).unwrap();
        assert_eq!(
            first.finish().unwrap(),
            CacheUse {
                hits: 0,
                frames: 2,
                removed: 0
            }
        );

        let second = FrameCache::open(dir.path(), 3).unwrap();
        let again = second
            .frame(&a, |_| panic!("a cached frame is not compressed again"))
            .unwrap();
        assert_eq!(again, frame_a);
        assert_eq!(
            second.finish().unwrap(),
            CacheUse {
                hits: 1,
                frames: 1,
                removed: 1
            }
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_damaged_frame_is_compressed_again_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let raw = vec![7u8; 8192];
        let cache = FrameCache::open(dir.path(), 3).unwrap();
        let good = cache.frame(&raw, compress).unwrap();
        cache.finish().unwrap();
        let file = fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap();
        // Another frame's bytes under this frame's name.
        fs::write(file.path(), compress(&[9u8; 8192]).unwrap()).unwrap();

        let cache = FrameCache::open(dir.path(), 3).unwrap();
        let mut compressed_again = false;
        let frame = cache
            .frame(&raw, |raw| {
                compressed_again = true;
                compress(raw)
            })
            .unwrap();
        assert!(compressed_again);
        assert_eq!(frame, good);
        assert_eq!(cache.finish().unwrap().hits, 0);
        assert_eq!(fs::read(file.path()).unwrap(), good);
    }

    #[test]
    fn another_level_does_not_reuse_a_frame() {
        let dir = tempfile::tempdir().unwrap();
        let raw = vec![5u8; 4096];
        let three = FrameCache::open(dir.path(), 3).unwrap();
        three.frame(&raw, compress).unwrap();
        three.finish().unwrap();
        let nine = FrameCache::open(dir.path(), 9).unwrap();
        let mut compressed = false;
        nine.frame(&raw, |raw| {
            compressed = true;
            Ok(zstd::bulk::compress(raw, 9)?)
        })
        .unwrap();
        assert!(compressed);
    }
}
