//! Multithreaded zstd compression of the raw image, hashing both sides in the
//! same pass (the manifest needs the SHA-256 of the raw and the compressed image).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::checksums::Sha256Digest;
use crate::progress::Progress;

/// Sizes and digests of one compression run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    pub raw_size: u64,
    pub raw_sha256: Sha256Digest,
    pub compressed_size: u64,
    pub compressed_sha256: Sha256Digest,
}

/// Compresses `raw` into `out` (through a temporary file and a rename) with
/// `threads` workers. zstd's multithreaded output is the same for any thread count
/// above zero, so the thread count does not change the artifact.
pub fn compress(raw: &Path, out: &Path, level: i32, threads: u32) -> Result<Compressed> {
    let mut input = File::open(raw).with_context(|| format!("cannot open {}", raw.display()))?;
    let raw_size = input.metadata()?.len();
    let dir = out.parent().unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".meetbox-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let sink = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, temp.as_file().try_clone()?),
        hasher: Sha256::new(),
        written: 0,
    };
    let mut encoder = zstd::stream::write::Encoder::new(sink, level)?;
    encoder
        .multithread(threads.max(1))
        .context("zstd was built without multithreading")?;
    encoder.include_checksum(true)?;
    encoder.set_pledged_src_size(Some(raw_size))?;
    let mut raw_hasher = Sha256::new();
    let mut buffer = vec![0u8; 4 << 20];
    let mut progress = Progress::bytes("compress", raw_size);
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        raw_hasher.update(&buffer[..n]);
        encoder.write_all(&buffer[..n])?;
        progress.inc(n as u64);
    }
    let mut sink = encoder.finish()?;
    sink.inner.flush()?;
    progress.finish();
    temp.as_file().sync_all()?;
    temp.persist(out)
        .with_context(|| format!("cannot rename into {}", out.display()))?;
    Ok(Compressed {
        raw_size,
        raw_sha256: Sha256Digest::from_hasher(raw_hasher),
        compressed_size: sink.written,
        compressed_sha256: Sha256Digest::from_hasher(sink.hasher),
    })
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_digests() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.img");
        let mut data = vec![0u8; 3 << 20];
        for (i, byte) in data.iter_mut().enumerate().step_by(7) {
            *byte = (i % 251) as u8;
        }
        std::fs::write(&raw, &data).unwrap();
        let out = dir.path().join("a.img.zst");
        let result = compress(&raw, &out, 3, 2).unwrap();
        let compressed = std::fs::read(&out).unwrap();
        assert_eq!(result.raw_size, data.len() as u64);
        assert_eq!(result.raw_sha256, Sha256Digest::of(&data));
        assert_eq!(result.compressed_size, compressed.len() as u64);
        assert_eq!(result.compressed_sha256, Sha256Digest::of(&compressed));
        assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), data);
    }

    #[test]
    fn output_does_not_depend_on_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.img");
        let data: Vec<u8> = (0..(6u32 << 20))
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 & 0x0f)
            .collect();
        std::fs::write(&raw, &data).unwrap();
        let one = compress(&raw, &dir.path().join("1.zst"), 3, 1).unwrap();
        let four = compress(&raw, &dir.path().join("4.zst"), 3, 4).unwrap();
        assert_eq!(one.compressed_sha256, four.compressed_sha256);
    }
}
