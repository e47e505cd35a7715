//! The write pipeline: decompress, check, write, flush, read back.
//!
//! Images built by meetbox are independent zstd frames with a seek table (see
//! [`crate::artifact::compress`] and [`crate::artifact::seek_table`]): worker threads, one per core,
//! read the frames that hold mapped data, check each against its SHA-256 in the
//! signed manifest ([`VerifiedFrames`]), decompress it into a large aligned
//! buffer, and skip the other frames. So no byte is written that did not come
//! from a signed frame, even if the file changed after the signature check, and
//! the check runs on every core instead of one. Older images (one frame) are
//! decompressed by one thread that keeps only the mapped ranges, and a hashing
//! thread checks each range against the block map before the buffer holding its
//! last byte may be written. Either way the buffers go back in image order to the
//! calling thread, which writes with O_DIRECT in large requests, which the block
//! layer keeps in flight together (streamed page-cache writeback on file systems
//! without O_DIRECT). A fixed pool
//! of buffers bounds the memory. The first MiB (protective MBR and primary GPT)
//! and the image's last MiB (backup GPT) are zeroed before anything else and
//! written only after all data is on the target, so an interrupted or failed
//! flash leaves a disk without a partition table: it does not boot half an image.
//! After a flush every range is read back, past the page cache, and hashed while
//! the next piece is read.

mod decode;
mod readback;
mod target;

use decode::*;
use readback::*;
pub use target::TargetFile;
use target::*;

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::ops::ControlFlow;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::artifact::blockmap::BlockMap;
use crate::artifact::seek_table::Frame;
use crate::host::pool::{run_ordered, Pool};
use crate::host::progress::{self, Progress};
use crate::verify::VerifiedFrames;

/// Size of one buffer of the single-stream path.
const CHUNK: usize = 4 << 20;
/// Buffers in flight between the stages of the single-stream path.
const POOL: usize = 8;
/// Size of one read-back request and buffer.
const READ_CHUNK: usize = 16 << 20;
/// Read-back requests in flight: a disk reads faster with more than one queued.
const READ_THREADS: usize = 2;
/// Largest write or read in one system call: large O_DIRECT requests are split
/// into several in flight at once by the block layer.
const WRITE_CHUNK: u64 = 16 << 20;
/// Largest frame decompressed whole; images with larger frames take the stream path.
const MAX_FRAME: u64 = 256 << 20;
/// Memory for decompressed frames in flight.
const FRAME_MEMORY: usize = 512 << 20;
/// Decompression threads at most: beyond this the disk is the limit.
const MAX_WORKERS: usize = 8;
/// Alignment for O_DIRECT: covers 512- and 4096-byte sectors.
const ALIGN: usize = 4096;
/// Regions held back until the end: the partition table lives here.
pub const HEADER_REGION: u64 = 1 << 20;
/// Amount of file data between writeback waits (progress counts flushed bytes).
const WRITEBACK_WINDOW: u64 = 64 << 20;

/// What a flash did, for the summary and the benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashReport {
    /// Every byte written to the target, including the zeroed header regions.
    pub bytes_written: u64,
    /// Bytes read back and compared.
    pub bytes_verified: u64,
    pub write_time: Duration,
    pub verify_time: Duration,
}

/// Where a flash reads the image from.
pub enum Input<'a> {
    /// A build's `NAME.img.zst`, with its frames and their signed SHA-256 as the signature check
    /// found them in the file (`None` when the manifest lists no frames).
    Compressed {
        image_zst: &'a Path,
        frames: Option<&'a VerifiedFrames>,
    },
    /// The raw image on a disk, read past the page cache, every range checked against the map as
    /// it is read: `meetbox install` copying the USB stick it started from.
    Disk(&'a TargetFile),
}

impl Input<'_> {
    /// The file or device the bytes come from, for messages.
    pub fn path(&self) -> &Path {
        match self {
            Input::Compressed { image_zst, .. } => image_zst,
            Input::Disk(disk) => &disk.path,
        }
    }
}

/// One flash: the image, its map, and what may stop it.
pub struct FlashJob<'a> {
    pub input: Input<'a>,
    pub map: &'a BlockMap,
    /// Set by Ctrl-C (or a test) to stop between buffers.
    pub stop: &'a AtomicBool,
    /// Test switch: flip this byte of the target between writing and reading back.
    pub corrupt_after_write: Option<u64>,
}

/// Byte regions `[start, end)` written last: the first MiB and the image's last MiB.
fn held_regions(image_size: u64) -> Vec<(u64, u64)> {
    let head = (0, HEADER_REGION.min(image_size));
    if image_size > 2 * HEADER_REGION {
        let tail_start = (image_size - HEADER_REGION) / ALIGN as u64 * ALIGN as u64;
        vec![head, (tail_start, image_size)]
    } else {
        vec![head]
    }
}

/// Regions zeroed before any data: the held regions plus the target's last MiB,
/// where an old backup GPT could otherwise bring back an old partition table.
fn zeroed_regions(image_size: u64, target_size: u64) -> Vec<(u64, u64)> {
    let mut regions = held_regions(image_size);
    if target_size > image_size {
        let start = target_size.saturating_sub(HEADER_REGION).max(image_size);
        regions.push((start / ALIGN as u64 * ALIGN as u64, target_size));
    }
    regions
}

/// Parts of `[offset, offset + len)` outside every held region, as `(offset, len)`.
fn outside_regions(offset: u64, len: u64, regions: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut pieces = vec![(offset, offset + len)];
    for &(start, end) in regions {
        pieces = pieces
            .into_iter()
            .flat_map(|(a, b)| {
                let mut kept = Vec::new();
                if a < start.min(b) {
                    kept.push((a, start.min(b)));
                }
                if end.max(a) < b {
                    kept.push((end.max(a), b));
                }
                kept
            })
            .collect();
    }
    pieces.into_iter().map(|(a, b)| (a, b - a)).collect()
}

/// The message every failure after the first write carries.
fn not_bootable(target: &Path) -> String {
    format!(
        "{} now holds part of an image and no partition table: it will not boot. \
         Run meetbox flash again to write the whole image",
        target.display()
    )
}

/// Writes the image's mapped ranges, the held-back regions last, flushes and reads
/// everything back. On any failure the target is left without a partition table.
pub fn write_image(job: &FlashJob, target: &TargetFile) -> Result<FlashReport> {
    let map = job.map;
    ensure!(
        target.size >= map.image_size,
        "{} is smaller than the image",
        target.path.display()
    );
    let started = Instant::now();
    let mut written = zero_regions(target, &zeroed_regions(map.image_size, target.size))
        .context("cannot clear the old partition table before writing")?;

    let result = write_pipeline(job, target);
    let held = match result {
        Ok((bytes, held)) => {
            written += bytes;
            held
        }
        Err(err) => {
            let _ = target.sync();
            return Err(err.context(not_bootable(&target.path)));
        }
    };
    for (region, buf) in held.iter().rev() {
        target
            .write_at(&buf.as_slice()[..(region.1 - region.0) as usize], region.0)
            .with_context(|| {
                format!(
                    "cannot write the partition table to {}",
                    target.path.display()
                )
            })
            .with_context(|| not_bootable(&target.path))?;
        written += region.1 - region.0;
    }
    target.sync().with_context(|| not_bootable(&target.path))?;
    let write_time = started.elapsed();

    if let Some(offset) = job.corrupt_after_write {
        corrupt_byte(target, offset)?;
    }

    let verify_started = Instant::now();
    if let Err(err) = read_back(job, target) {
        // A disk whose content is wrong or unverified must not boot.
        let wiped = zero_regions(target, &held_regions(map.image_size));
        let outcome = match wiped {
            Ok(_) => format!(
                "its partition table was cleared, so {} will not boot; run meetbox flash again \
                 (if this repeats, the disk is failing)",
                target.path.display()
            ),
            Err(wipe) => format!(
                "clearing its partition table also failed ({wipe:#}): do not boot {}",
                target.path.display()
            ),
        };
        return Err(err.context(outcome));
    }
    Ok(FlashReport {
        bytes_written: written,
        bytes_verified: map.mapped_bytes(),
        write_time,
        verify_time: verify_started.elapsed(),
    })
}

/// Reads the job's input once and checks every mapped range against the map, writing nothing:
/// how `meetbox install` makes sure the stick holds the signed image before it touches a disk.
/// Returns the bytes checked.
pub fn check_input(job: &FlashJob) -> Result<u64> {
    let source = Source::plan(job)?;
    let pool = Pool::new((0..source.buffers()).map(|_| AlignedBuf::zeroed(source.buffer_len())));
    let mut cursor = RangeCursor::new(job.map, true);
    let mut progress = Progress::bytes("check", job.map.mapped_bytes());
    source.produce(job, &pool, |block| {
        ensure!(!job.stop.load(Ordering::Relaxed), "interrupted");
        let pieces = cursor.hash(&block)?;
        progress.inc(pieces.iter().map(|(_, len)| len).sum());
        pool.put(block.buf);
        Ok(ControlFlow::Continue(()))
    })?;
    ensure!(
        progress.done() == job.map.mapped_bytes(),
        "only {} of {} mapped bytes could be read from {}",
        progress.done(),
        job.map.mapped_bytes(),
        job.input.path().display()
    );
    let checked = progress.done();
    progress.finish();
    Ok(checked)
}

/// Writes zeros over `regions` and flushes; returns the bytes written.
fn zero_regions(target: &TargetFile, regions: &[(u64, u64)]) -> Result<u64> {
    let zeros = AlignedBuf::zeroed(HEADER_REGION as usize);
    let mut written = 0;
    for &(start, end) in regions {
        let mut offset = start;
        while offset < end {
            let len = (end - offset).min(HEADER_REGION) as usize;
            target
                .write_at(&zeros.as_slice()[..len], offset)
                .with_context(|| format!("cannot write to {}", target.path.display()))?;
            offset += len as u64;
            written += len as u64;
        }
    }
    target.sync()?;
    Ok(written)
}

/// Runs the stages; returns the bytes written and the held-back regions' content.
fn write_pipeline(job: &FlashJob, target: &TargetFile) -> Result<(u64, Vec<HeldRegion>)> {
    let map = job.map;
    let regions = held_regions(map.image_size);
    let mut held: Vec<HeldRegion> = regions
        .iter()
        .map(|&r| (r, AlignedBuf::zeroed(HEADER_REGION as usize)))
        .collect();
    let source = Source::plan(job)?;
    let pool = Pool::new((0..source.buffers()).map(|_| AlignedBuf::zeroed(source.buffer_len())));
    let (checked_tx, checked_rx) = sync_channel::<Checked>(1);
    let check_ranges = !matches!(source, Source::Frames { .. });

    progress::detail(format!(
        "writing {} of data ({} ranges) to {}",
        progress::human_bytes(map.mapped_bytes()),
        map.ranges.len(),
        target.path.display()
    ));
    let mut progress = Progress::bytes("write", map.mapped_bytes());
    std::thread::scope(|scope| {
        let (source, pool) = (&source, &pool);
        let producer = scope.spawn(move || {
            let mut cursor = RangeCursor::new(map, check_ranges);
            source.produce(job, pool, |block| {
                let pieces = cursor.hash(&block)?;
                Ok(match checked_tx.send(Checked { block, pieces }) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()), // the writer stopped and says why
                })
            })
        });
        let written = write_blocks(
            job,
            target,
            checked_rx,
            pool,
            &regions,
            &mut held,
            &mut progress,
        );
        // Workers waiting for a buffer the writer will no longer return.
        pool.close();
        // The stage that failed first explains the failure best.
        producer
            .join()
            .map_err(|_| anyhow!("a decompression thread panicked"))??;
        let written = written?;
        ensure!(
            progress.done() == map.mapped_bytes(),
            "only {} of {} mapped bytes reached the target",
            progress.done(),
            map.mapped_bytes()
        );
        progress.finish();
        Ok((written, held))
    })
}

/// Writes the checked pieces, keeping the held regions in memory; counts flushed bytes.
fn write_blocks(
    job: &FlashJob,
    target: &TargetFile,
    input: Receiver<Checked>,
    pool: &Pool<AlignedBuf>,
    regions: &[(u64, u64)],
    held: &mut [HeldRegion],
    progress: &mut Progress,
) -> Result<u64> {
    let mut writeback = Writeback::default();
    let mut written = 0;
    for Checked { block, pieces } in input {
        for (offset, len) in pieces {
            if job.stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            for ((start, end), buf) in held.iter_mut() {
                let from = offset.max(*start);
                let to = (offset + len).min(*end);
                if from < to {
                    buf.as_mut_slice()[(from - *start) as usize..(to - *start) as usize]
                        .copy_from_slice(block.slice(from, to - from));
                }
            }
            for (piece, piece_len) in outside_regions(offset, len, regions) {
                let mut at = piece;
                while at < piece + piece_len {
                    let n = (piece + piece_len - at).min(WRITE_CHUNK);
                    target
                        .write_at(block.slice(at, n), at)
                        .with_context(|| format!("cannot write to {}", target.path.display()))?;
                    at += n;
                }
                written += piece_len;
            }
            if target.direct_io {
                progress.inc(len); // O_DIRECT: on the medium once written
            } else {
                writeback.wrote(target, offset, len, progress)?;
            }
        }
        pool.put(block.buf);
    }
    if job.stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    target.sync()?;
    progress.inc(writeback.pending + writeback.in_flight.map_or(0, |w| w.2));
    Ok(written)
}

/// Streams a file's writeback: starts it for each window and waits for the previous
/// one, so the page cache stays small and progress counts bytes on the medium.
#[derive(Default)]
struct Writeback {
    /// Start, end and byte count of the window being filled.
    window: Option<(u64, u64)>,
    pending: u64,
    /// The window whose writeback was started last: (start, end, bytes).
    in_flight: Option<(u64, u64, u64)>,
}

impl Writeback {
    fn wrote(
        &mut self,
        target: &TargetFile,
        offset: u64,
        len: u64,
        progress: &mut Progress,
    ) -> Result<()> {
        let (start, _) = self.window.unwrap_or((offset, offset));
        self.window = Some((start, offset + len));
        self.pending += len;
        if self.pending < WRITEBACK_WINDOW {
            return Ok(());
        }
        let fd = target.buffered.as_raw_fd();
        let sync = |from: u64, to: u64, flags: libc::c_uint| {
            // SAFETY: sync_file_range on a descriptor we own.
            let rc = unsafe {
                libc::sync_file_range(
                    fd,
                    from as libc::off64_t,
                    (to - from) as libc::off64_t,
                    flags,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("cannot flush {}", target.path.display()));
            }
            Ok(())
        };
        let (from, to) = self.window.take().expect("window set above");
        sync(from, to, libc::SYNC_FILE_RANGE_WRITE)?;
        if let Some((from, to, bytes)) = self.in_flight.take() {
            sync(
                from,
                to,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )?;
            target.drop_cache(from, to - from);
            progress.inc(bytes);
        }
        self.in_flight = Some((from, to, self.pending));
        self.pending = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
