//! zstd compression of the raw image in independent frames, hashing both sides in
//! the same pass (the manifest needs the SHA-256 of the raw and the compressed image).
//!
//! The raw image is cut into frames of [`FRAME_SIZE`] raw bytes, each compressed
//! on its own (on every core, one frame per worker) and written in order, followed
//! by a seek table ([`crate::artifact::seek_table`]) listing the frames. Concatenated frames
//! and a trailing skippable frame are plain zstd: `zstd -d`, `zstdcat` and bmaptool
//! read the file as one stream, while `meetbox flash` decompresses the frames it
//! needs in parallel and skips the others.
//!
//! Why 32 MiB frames (measured with tests/bench/compress.sh at level 12, see
//! docs/benchmarks.md): independent frames cost ratio, since no match reaches
//! into the previous frame. Against one frame, 32 MiB frames grew the real test
//! image by 0.15 % and the synthetic one by 0.05 %; 16 MiB by 0.17 % and 0.41 %,
//! 8 MiB by 0.34 % and 1.2 %. 64 MiB frames were within 0.1 % of one frame, but
//! double the memory `meetbox flash` holds (a few decompressed frames at once)
//! and skip unmapped space more coarsely.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::artifact::checksums::Sha256Digest;
use crate::artifact::frame_cache::FrameCache;
use crate::artifact::manifest::ImageFrame;
use crate::artifact::seek_table::SeekTable;
use crate::host::pool::{run_ordered, Pool};
use crate::host::progress::Progress;

/// Raw bytes per zstd frame.
pub const FRAME_SIZE: u64 = 32 << 20;
/// Largest frame size accepted: the seek table stores sizes in 32 bits.
const MAX_FRAME_SIZE: u64 = 1 << 30;

/// Sizes and digests of one compression run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    pub raw_size: u64,
    pub raw_sha256: Sha256Digest,
    pub compressed_size: u64,
    pub compressed_sha256: Sha256Digest,
    /// The zstd frames holding data, in file order (the seek table not counted);
    /// empty for one multithreaded stream.
    pub frames: Vec<ImageFrame>,
}

/// Compresses `raw` into `out` (through a temporary file and a rename) in frames of
/// [`FRAME_SIZE`], with `threads` workers. The output does not depend on the thread
/// count: each frame is compressed by one single-threaded compressor.
pub fn compress(raw: &Path, out: &Path, level: i32, threads: u32) -> Result<Compressed> {
    compress_in_frames(raw, out, level, threads, FRAME_SIZE, None)
}

/// [`compress`] with a chosen frame size (a multiple of 4096), taking the frames an earlier
/// build left in `cache` where the raw bytes are the same.
pub fn compress_in_frames(
    raw: &Path,
    out: &Path,
    level: i32,
    threads: u32,
    frame_size: u64,
    cache: Option<&FrameCache>,
) -> Result<Compressed> {
    ensure!(
        frame_size > 0 && frame_size % 4096 == 0 && frame_size <= MAX_FRAME_SIZE,
        "the frame size must be a multiple of 4 KiB up to 1 GiB"
    );
    let input = File::open(raw).with_context(|| format!("cannot open {}", raw.display()))?;
    let raw_size = input.metadata()?.len();
    let frames = raw_size.div_ceil(frame_size).max(1) as usize;
    let workers = (threads.max(1) as usize).min(frames);
    let (temp, mut sink) = temp_output(out)?;

    let pool = Pool::new((0..workers + 2).map(|_| Vec::<u8>::new()));
    let mut progress = Progress::bytes("compress", raw_size);
    let mut raw_hasher = Sha256::new();
    let mut image_frames = Vec::with_capacity(frames);
    let compressed = run_ordered(
        frames,
        workers,
        &pool,
        || -> Result<zstd::bulk::Compressor<'static>> {
            let mut compressor = zstd::bulk::Compressor::new(level)?;
            compressor.include_checksum(true)?;
            Ok(compressor)
        },
        |compressor, index, buf| {
            let start = index as u64 * frame_size;
            let len = (raw_size - start).min(frame_size) as usize;
            buf.resize(len, 0);
            input
                .read_exact_at(buf, start)
                .with_context(|| format!("cannot read {}", raw.display()))?;
            let mut compress =
                |raw: &[u8]| compressor.compress(raw).context("zstd compression failed");
            let compressed = match cache {
                Some(cache) => cache.frame(buf, compress)?,
                None => compress(buf)?,
            };
            let sha256 = Sha256Digest::of(&compressed);
            Ok((compressed, sha256))
        },
        |_, raw, (compressed, sha256)| {
            raw_hasher.update(&raw);
            sink.write_all(&compressed)?;
            image_frames.push(ImageFrame {
                compressed_size: compressed.len() as u64,
                raw_size: raw.len() as u64,
                sha256,
            });
            progress.inc(raw.len() as u64);
            pool.put(raw);
            Ok(ControlFlow::Continue(()))
        },
    )?;
    ensure!(compressed == frames, "compression stopped early");
    let raw_sha256 = Sha256Digest::from_hasher(raw_hasher);

    let sizes: Vec<(u32, u32)> = image_frames
        .iter()
        .map(|f| (f.compressed_size as u32, f.raw_size as u32))
        .collect();
    sink.write_all(&SeekTable::from_sizes(&sizes).to_bytes())?;
    progress.finish();
    let (compressed_size, compressed_sha256) = persist_output(temp, sink, out)?;
    Ok(Compressed {
        raw_size,
        raw_sha256,
        compressed_size,
        compressed_sha256,
        frames: image_frames,
    })
}

/// Compresses `raw` as one multithreaded zstd frame, the format of images built
/// before the frames (tests and benchmarks use it to check that such images still
/// flash). The output does not depend on the thread count either.
pub fn compress_single_frame(
    raw: &Path,
    out: &Path,
    level: i32,
    threads: u32,
) -> Result<Compressed> {
    let mut input = File::open(raw).with_context(|| format!("cannot open {}", raw.display()))?;
    let raw_size = input.metadata()?.len();
    let (temp, sink) = temp_output(out)?;
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
    let sink = encoder.finish()?;
    progress.finish();
    let (compressed_size, compressed_sha256) = persist_output(temp, sink, out)?;
    Ok(Compressed {
        raw_size,
        raw_sha256: Sha256Digest::from_hasher(raw_hasher),
        compressed_size,
        compressed_sha256,
        frames: Vec::new(),
    })
}

/// A temporary file next to `out` and a hashing, buffered writer into it.
fn temp_output(out: &Path) -> Result<(tempfile::NamedTempFile, HashingWriter<BufWriter<File>>)> {
    let dir = out.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let temp = tempfile::Builder::new()
        .prefix(".meetbox-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let sink = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, temp.as_file().try_clone()?),
        hasher: Sha256::new(),
        written: 0,
    };
    Ok((temp, sink))
}

/// Flushes and syncs the temporary output, then renames it to `out`; returns the
/// compressed size and digest.
fn persist_output(
    temp: tempfile::NamedTempFile,
    mut sink: HashingWriter<BufWriter<File>>,
    out: &Path,
) -> Result<(u64, Sha256Digest)> {
    sink.inner.flush()?;
    let HashingWriter {
        inner,
        hasher,
        written,
    } = sink;
    drop(inner);
    temp.as_file().sync_all()?;
    temp.persist(out)
        .with_context(|| format!("cannot rename into {}", out.display()))?;
    Ok((written, Sha256Digest::from_hasher(hasher)))
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

/// Compress a raw image the way `meetbox build` does (for benchmarks and tests).
#[derive(clap::Args, Debug, Clone)]
pub struct CompressArgs {
    /// The raw image.
    pub raw: PathBuf,
    /// The compressed image to write.
    pub out: PathBuf,
    /// zstd level (1-19).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
    /// Raw MiB per frame.
    #[arg(long, default_value_t = FRAME_SIZE >> 20)]
    pub frame_mib: u64,
    /// One multithreaded frame without a seek table (the format of older builds).
    #[arg(long, conflicts_with = "frame_mib")]
    pub single_frame: bool,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<u32>,
}

/// Runs the hidden `meetbox compress`; prints sizes, digests and time as JSON.
pub fn run(args: &CompressArgs) -> Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let started = Instant::now();
    let result = if args.single_frame {
        compress_single_frame(&args.raw, &args.out, args.level, threads)?
    } else {
        compress_in_frames(
            &args.raw,
            &args.out,
            args.level,
            threads,
            args.frame_mib << 20,
            None,
        )?
    };
    println!(
        "{}",
        serde_json::json!({
            "raw_size": result.raw_size,
            "raw_sha256": result.raw_sha256.to_string(),
            "compressed_size": result.compressed_size,
            "compressed_sha256": result.compressed_sha256.to_string(),
            // One multithreaded stream counts as one frame.
            "frames": result.frames.len().max(1),
            // What `meetbox build` signs in the manifest (the benchmark signs it too).
            "frame_list": result.frames,
            "threads": threads,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        for (i, byte) in data.iter_mut().enumerate().step_by(7) {
            *byte = (i % 251) as u8;
        }
        data
    }

    #[test]
    fn round_trips_and_reports_digests() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.img");
        let data = sample(3 << 20);
        std::fs::write(&raw, &data).unwrap();
        let out = dir.path().join("a.img.zst");
        let result = compress_in_frames(&raw, &out, 3, 2, 1 << 20, None).unwrap();
        let compressed = std::fs::read(&out).unwrap();
        assert_eq!(result.raw_size, data.len() as u64);
        assert_eq!(result.raw_sha256, Sha256Digest::of(&data));
        assert_eq!(result.compressed_size, compressed.len() as u64);
        assert_eq!(result.compressed_sha256, Sha256Digest::of(&compressed));
        assert_eq!(result.frames.len(), 3);
        let mut offset = 0;
        for frame in &result.frames {
            let end = offset + frame.compressed_size as usize;
            assert_eq!(frame.sha256, Sha256Digest::of(&compressed[offset..end]));
            assert_eq!(frame.raw_size, 1 << 20);
            offset = end;
        }
        // One zstd stream to any decoder: frames, then the skippable seek table.
        assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), data);
    }

    #[test]
    fn frames_are_independent_and_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.img");
        // A partial last frame and an all-zero frame in the middle.
        let mut data = sample((5 << 20) + 12288);
        data[(2 << 20)..(3 << 20)].fill(0);
        std::fs::write(&raw, &data).unwrap();
        let out = dir.path().join("a.img.zst");
        compress_in_frames(&raw, &out, 3, 3, 1 << 20, None).unwrap();
        let file = File::open(&out).unwrap();
        let len = file.metadata().unwrap().len();
        let table = SeekTable::read(&file, len).unwrap().expect("a seek table");
        assert_eq!(table.frames.len(), 6);
        assert_eq!(table.raw_size(), data.len() as u64);
        assert_eq!(table.frames[5].raw_size, 12288);
        // An all-zero frame stays tiny.
        assert!(
            table.frames[2].compressed_size < 200,
            "{:?}",
            table.frames[2]
        );
        let bytes = std::fs::read(&out).unwrap();
        for frame in &table.frames {
            let start = frame.compressed_offset as usize;
            let one = &bytes[start..start + frame.compressed_size as usize];
            let raw_start = frame.raw_offset as usize;
            let expected = &data[raw_start..raw_start + frame.raw_size as usize];
            assert!(zstd::decode_all(one).unwrap() == expected);
            // The frame header carries the content size.
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(one).unwrap(),
                Some(frame.raw_size)
            );
        }
    }

    #[test]
    fn output_does_not_depend_on_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.img");
        let data: Vec<u8> = (0..(6u32 << 20))
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 & 0x0f)
            .collect();
        std::fs::write(&raw, &data).unwrap();
        let digest = |threads| {
            compress_in_frames(&raw, &dir.path().join("x.zst"), 3, threads, 1 << 20, None)
                .unwrap()
                .compressed_sha256
        };
        let one = digest(1);
        assert_eq!(one, digest(2));
        assert_eq!(one, digest(5));
        let single = |threads| {
            compress_single_frame(&raw, &dir.path().join("y.zst"), 3, threads)
                .unwrap()
                .compressed_sha256
        };
        assert_eq!(single(1), single(4));
    }

    #[test]
    fn the_zstd_tool_reads_the_frames() {
        if !crate::host::test_tools::tool_available("zstd", "zstd") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.img");
        let data = sample((2 << 20) + 4096);
        std::fs::write(&raw, &data).unwrap();
        let out = dir.path().join("a.img.zst");
        compress_in_frames(&raw, &out, 3, 2, 1 << 20, None).unwrap();
        let output = std::process::Command::new("zstd")
            .args(["-d", "-c", "-q"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.stdout == data);
    }

    #[test]
    fn an_empty_image_is_one_empty_frame() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("empty.img");
        std::fs::write(&raw, b"").unwrap();
        let out = dir.path().join("empty.img.zst");
        let result = compress(&raw, &out, 3, 2).unwrap();
        assert_eq!(result.frames.len(), 1);
        assert_eq!(result.frames[0].raw_size, 0);
        assert!(zstd::decode_all(&std::fs::read(&out).unwrap()[..])
            .unwrap()
            .is_empty());
    }
}
