//! The write pipeline: decompress, check, write, flush, read back.
//!
//! A reader thread decompresses the image into large aligned buffers, keeping only
//! the mapped ranges; a hashing thread checks each range against the block map
//! before its last buffer may be written; the calling thread writes with O_DIRECT
//! (streamed page-cache writeback on file systems without it). The first MiB (protective MBR and
//! primary GPT) and the image's last MiB (backup GPT) are zeroed before anything
//! else and written only after all data is on the target, so an interrupted or
//! failed flash leaves a disk without a partition table: it does not boot half an
//! image. After a flush every range is read back, past the page cache, and hashed.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::blockmap::BlockMap;
use crate::progress::{self, Progress};

/// Size of one I/O buffer: large enough to keep a disk streaming.
const CHUNK: usize = 4 << 20;
/// Buffers in flight between the stages.
const POOL: usize = 8;
/// Alignment for O_DIRECT: covers 512- and 4096-byte sectors.
const ALIGN: usize = 4096;
/// Regions held back until the end: the partition table lives here.
pub const HEADER_REGION: u64 = 1 << 20;
/// Amount of file data between writeback waits (progress counts flushed bytes).
const WRITEBACK_WINDOW: u64 = 64 << 20;

/// An open flash target.
pub struct TargetFile {
    pub path: PathBuf,
    /// Descriptor for large aligned writes and reads (O_DIRECT on block devices).
    direct: File,
    /// Descriptor for unaligned pieces, flushes and the partition table.
    buffered: File,
    /// Whether `direct` bypasses the page cache (O_DIRECT).
    direct_io: bool,
    /// Size in bytes.
    pub size: u64,
}

impl TargetFile {
    /// Opens a block device exclusively (the kernel refuses if it is mounted or held).
    pub fn open_block_device(path: &Path) -> Result<TargetFile> {
        let direct = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_EXCL)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot open {} exclusively for writing (is it in use?)",
                    path.display()
                )
            })?;
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {} for writing", path.display()))?;
        // SAFETY: lseek on a descriptor we own.
        let end = unsafe { libc::lseek(buffered.as_raw_fd(), 0, libc::SEEK_END) };
        ensure!(end >= 0, "cannot find the size of {}", path.display());
        Ok(TargetFile {
            path: path.to_path_buf(),
            direct,
            buffered,
            direct_io: true,
            size: end as u64,
        })
    }

    /// Opens or creates a regular file, growing it to at least `image_size`. Bulk
    /// I/O bypasses the page cache (O_DIRECT) where the file system allows it.
    pub fn open_file(path: &Path, image_size: u64) -> Result<TargetFile> {
        let open = |flags: libc::c_int| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .custom_flags(flags)
                .open(path)
        };
        let buffered =
            open(0).with_context(|| format!("cannot open or create {}", path.display()))?;
        let len = buffered
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        if len < image_size {
            buffered
                .set_len(image_size)
                .with_context(|| format!("cannot grow {} to the image size", path.display()))?;
        }
        // File systems without O_DIRECT refuse the flag: fall back to the page cache.
        let (direct, direct_io) = match open(libc::O_DIRECT) {
            Ok(direct) => (direct, true),
            Err(_) => (
                buffered
                    .try_clone()
                    .with_context(|| format!("cannot reopen {}", path.display()))?,
                false,
            ),
        };
        Ok(TargetFile {
            path: path.to_path_buf(),
            direct,
            buffered,
            direct_io,
            size: len.max(image_size),
        })
    }

    /// The descriptor for small writes (partition table relocation).
    pub fn buffered(&self) -> &File {
        &self.buffered
    }

    /// Writes `data` at `offset`: aligned bulk through the direct descriptor, the rest buffered.
    fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        let direct_len = if self.direct_io
            && offset % ALIGN as u64 == 0
            && data.as_ptr() as usize % ALIGN == 0
        {
            data.len() / ALIGN * ALIGN
        } else {
            0
        };
        self.direct.write_all_at(&data[..direct_len], offset)?;
        self.buffered
            .write_all_at(&data[direct_len..], offset + direct_len as u64)
    }

    /// Reads `buf.len()` bytes at `offset`, past the page cache where the device allows.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let direct_len =
            if self.direct_io && offset % ALIGN as u64 == 0 && buf.as_ptr() as usize % ALIGN == 0 {
                buf.len() / ALIGN * ALIGN
            } else {
                0
            };
        let (head, tail) = buf.split_at_mut(direct_len);
        self.direct.read_exact_at(head, offset)?;
        self.buffered
            .read_exact_at(tail, offset + direct_len as u64)
    }

    fn sync(&self) -> Result<()> {
        self.buffered
            .sync_data()
            .and_then(|_| self.direct.sync_data())
            .with_context(|| format!("cannot flush {}", self.path.display()))
    }

    /// Drops the target's cached pages so reads come from the medium.
    fn drop_cache(&self, offset: u64, len: u64) {
        // SAFETY: advice on a descriptor we own; failure only means reads may hit the cache.
        unsafe {
            libc::posix_fadvise(
                self.buffered.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }
}

/// A heap buffer aligned for O_DIRECT.
struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer owns its allocation exclusively; moving it between threads is sound.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn zeroed(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len.max(ALIGN), ALIGN).expect("valid layout");
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len.max(ALIGN), ALIGN).expect("valid layout");
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// A held-back region `[start, end)` and the image's bytes for it.
type HeldRegion = ((u64, u64), AlignedBuf);

/// A piece of one mapped range on its way to the target.
struct Chunk {
    range: usize,
    offset: u64,
    len: usize,
    buf: AlignedBuf,
    ends_range: bool,
}

impl Chunk {
    fn data(&self) -> &[u8] {
        &self.buf.as_slice()[..self.len]
    }
}

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

/// One flash: the image, its map, and what may stop it.
pub struct FlashJob<'a> {
    pub image_zst: &'a Path,
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

/// Runs the three stages; returns the bytes written and the held-back regions' content.
fn write_pipeline(job: &FlashJob, target: &TargetFile) -> Result<(u64, Vec<HeldRegion>)> {
    let map = job.map;
    let regions = held_regions(map.image_size);
    let mut held: Vec<HeldRegion> = regions
        .iter()
        .map(|&r| (r, AlignedBuf::zeroed(HEADER_REGION as usize)))
        .collect();
    let (free_tx, free_rx) = sync_channel::<AlignedBuf>(POOL);
    for _ in 0..POOL {
        free_tx
            .send(AlignedBuf::zeroed(CHUNK))
            .expect("the pool channel has room for every buffer");
    }
    let (raw_tx, raw_rx) = sync_channel::<Chunk>(POOL);
    let (checked_tx, checked_rx) = sync_channel::<Chunk>(POOL);

    progress::detail(format!(
        "writing {} of data ({} ranges) to {}",
        progress::human_bytes(map.mapped_bytes()),
        map.ranges.len(),
        target.path.display()
    ));
    let mut progress = Progress::bytes("write", map.mapped_bytes());
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| decompress_ranges(job, raw_tx, free_rx));
        let hasher = scope.spawn(|| check_ranges(map, raw_rx, checked_tx));
        let written = write_chunks(
            job,
            target,
            checked_rx,
            free_tx,
            &regions,
            &mut held,
            &mut progress,
        );
        // The stage that failed first explains the failure best.
        let reader = reader
            .join()
            .map_err(|_| anyhow!("the decompression thread panicked"))?;
        let hasher = hasher
            .join()
            .map_err(|_| anyhow!("the hashing thread panicked"))?;
        reader?;
        hasher?;
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

/// Stage 1: decompresses the image, keeps the mapped ranges, cuts them into chunks.
fn decompress_ranges(
    job: &FlashJob,
    out: SyncSender<Chunk>,
    free: Receiver<AlignedBuf>,
) -> Result<()> {
    let file = File::open(job.image_zst)
        .with_context(|| format!("cannot open {}", job.image_zst.display()))?;
    let mut decoder =
        zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(1 << 20, file))
            .context("cannot start zstd decompression")?;
    decoder
        .window_log_max(31)
        .context("cannot configure zstd decompression")?;
    let corrupt = || format!("{} is corrupt or truncated", job.image_zst.display());
    let mut scratch = vec![0u8; CHUNK];
    let mut position = 0u64;
    for (index, range) in job.map.ranges.iter().enumerate() {
        let (start, end) = job.map.byte_span(range);
        while position < start {
            let skip = (start - position).min(CHUNK as u64) as usize;
            decoder
                .read_exact(&mut scratch[..skip])
                .with_context(corrupt)?;
            position += skip as u64;
        }
        while position < end {
            if job.stop.load(Ordering::Relaxed) {
                return Ok(()); // the writer reports the interruption
            }
            let Ok(mut buf) = free.recv() else {
                return Ok(()); // the writer stopped and says why
            };
            let len = (end - position).min(CHUNK as u64) as usize;
            decoder
                .read_exact(&mut buf.as_mut_slice()[..len])
                .with_context(corrupt)?;
            let chunk = Chunk {
                range: index,
                offset: position,
                len,
                buf,
                ends_range: position + len as u64 == end,
            };
            if out.send(chunk).is_err() {
                return Ok(());
            }
            position += len as u64;
        }
    }
    Ok(())
}

/// Stage 2: hashes every range and lets a range's last chunk pass only if it matches.
fn check_ranges(map: &BlockMap, input: Receiver<Chunk>, out: SyncSender<Chunk>) -> Result<()> {
    let mut hasher = Sha256::new();
    for chunk in input {
        hasher.update(chunk.data());
        if chunk.ends_range {
            let digest: [u8; 32] = hasher.finalize_reset().into();
            let range = &map.ranges[chunk.range];
            ensure!(
                digest == range.sha256,
                "blocks {}-{} of the image do not match their checksum in the block map: \
                 the image or its map is damaged",
                range.first,
                range.last
            );
        }
        if out.send(chunk).is_err() {
            break;
        }
    }
    Ok(())
}

/// Stage 3: writes chunks, keeping the held regions in memory; counts flushed bytes.
fn write_chunks(
    job: &FlashJob,
    target: &TargetFile,
    input: Receiver<Chunk>,
    free: SyncSender<AlignedBuf>,
    regions: &[(u64, u64)],
    held: &mut [HeldRegion],
    progress: &mut Progress,
) -> Result<u64> {
    let mut writeback = Writeback::default();
    let mut written = 0;
    for chunk in input {
        if job.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        for ((start, end), buf) in held.iter_mut() {
            let from = chunk.offset.max(*start);
            let to = (chunk.offset + chunk.len as u64).min(*end);
            if from < to {
                let src =
                    &chunk.data()[(from - chunk.offset) as usize..(to - chunk.offset) as usize];
                buf.as_mut_slice()[(from - *start) as usize..(to - *start) as usize]
                    .copy_from_slice(src);
            }
        }
        for (offset, len) in outside_regions(chunk.offset, chunk.len as u64, regions) {
            let at = (offset - chunk.offset) as usize;
            target
                .write_at(&chunk.data()[at..at + len as usize], offset)
                .with_context(|| format!("cannot write to {}", target.path.display()))?;
            written += len;
        }
        if target.direct_io {
            progress.inc(chunk.len as u64); // O_DIRECT: on the medium once written
        } else {
            writeback.wrote(target, chunk.offset, chunk.len as u64, progress)?;
        }
        // The reader drops its end of the pool once it has read everything.
        let _ = free.send(chunk.buf);
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

/// Test switch: flips one byte of the target, past every cache.
fn corrupt_byte(target: &TargetFile, offset: u64) -> Result<()> {
    let mut byte = [0u8; 1];
    target
        .buffered
        .read_exact_at(&mut byte, offset)
        .and_then(|_| target.buffered.write_all_at(&[byte[0] ^ 0xFF], offset))
        .context("test switch: cannot corrupt the target")?;
    target.sync()
}

/// Reads every mapped range back from the target and compares its SHA-256.
fn read_back(job: &FlashJob, target: &TargetFile) -> Result<()> {
    let map = job.map;
    target.drop_cache(0, 0);
    let mut progress = Progress::bytes("read back", map.mapped_bytes());
    let (free_tx, free_rx) = sync_channel::<AlignedBuf>(POOL);
    for _ in 0..POOL {
        free_tx
            .send(AlignedBuf::zeroed(CHUNK))
            .expect("the pool channel has room for every buffer");
    }
    let (full_tx, full_rx) = sync_channel::<Chunk>(POOL);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> Result<()> {
            for (index, range) in map.ranges.iter().enumerate() {
                let (start, end) = map.byte_span(range);
                let mut position = start;
                while position < end {
                    if job.stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let Ok(mut buf) = free_rx.recv() else {
                        return Ok(());
                    };
                    let len = (end - position).min(CHUNK as u64) as usize;
                    target
                        .read_at(&mut buf.as_mut_slice()[..len], position)
                        .with_context(|| format!("cannot read {} back", target.path.display()))?;
                    let chunk = Chunk {
                        range: index,
                        offset: position,
                        len,
                        buf,
                        ends_range: position + len as u64 == end,
                    };
                    if full_tx.send(chunk).is_err() {
                        return Ok(());
                    }
                    position += len as u64;
                }
            }
            Ok(())
        });
        let compared = (|| -> Result<()> {
            let mut hasher = Sha256::new();
            for chunk in full_rx {
                if job.stop.load(Ordering::Relaxed) {
                    bail!("interrupted while reading back; the image was not verified");
                }
                hasher.update(chunk.data());
                if chunk.ends_range {
                    let digest: [u8; 32] = hasher.finalize_reset().into();
                    let range = &map.ranges[chunk.range];
                    let (start, end) = map.byte_span(range);
                    ensure!(
                        digest == range.sha256,
                        "read-back mismatch: bytes {start}-{end} of {} differ from the image",
                        target.path.display()
                    );
                }
                progress.inc(chunk.len as u64);
                let _ = free_tx.send(chunk.buf);
            }
            if job.stop.load(Ordering::Relaxed) {
                bail!("interrupted while reading back; the image was not verified");
            }
            Ok(())
        })();
        let read = reader
            .join()
            .map_err(|_| anyhow!("the read-back thread panicked"))?;
        compared?;
        read?;
        ensure!(
            progress.done() == map.mapped_bytes(),
            "only {} of {} bytes were read back",
            progress.done(),
            map.mapped_bytes()
        );
        progress.finish();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
        let mut encoder = zstd::Encoder::new(File::create(&zst).unwrap(), 1).unwrap();
        encoder.write_all(&std::fs::read(&raw).unwrap()).unwrap();
        encoder.finish().unwrap();

        let path = dir.path().join("target.raw");
        let mut target = TargetFile::open_file(&path, image_size).unwrap();
        target.direct = target.buffered.try_clone().unwrap();
        target.direct_io = false;
        let stop = AtomicBool::new(false);
        let job = FlashJob {
            image_zst: &zst,
            map: &map,
            stop: &stop,
            corrupt_after_write: None,
        };
        let report = write_image(&job, &target).unwrap();
        assert_eq!(report.bytes_verified, map.mapped_bytes());
        assert!(std::fs::read(&path).unwrap() == std::fs::read(&raw).unwrap());
    }
}
