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

use std::alloc::{self, Layout};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::artifact::blockmap::BlockMap;
use crate::artifact::seek_table::Frame;
use crate::host::pool::Pool;
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
    /// The image's frames with their signed SHA-256, as the signature check
    /// found them in the file; `None` when the manifest lists no frames.
    pub frames: Option<&'a VerifiedFrames>,
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
    let (block_tx, block_rx) = sync_channel::<Block>(source.buffers());
    let (checked_tx, checked_rx) = sync_channel::<Checked>(1);
    let check_ranges = matches!(source, Source::Stream);

    progress::detail(format!(
        "writing {} of data ({} ranges) to {}",
        progress::human_bytes(map.mapped_bytes()),
        map.ranges.len(),
        target.path.display()
    ));
    let mut progress = Progress::bytes("write", map.mapped_bytes());
    std::thread::scope(|scope| {
        let sources = source.spawn(scope, job, &pool, block_tx);
        let hasher = scope.spawn(move || check_blocks(map, check_ranges, block_rx, checked_tx));
        let written = write_blocks(
            job,
            target,
            checked_rx,
            &pool,
            &regions,
            &mut held,
            &mut progress,
        );
        // Workers waiting for a buffer the writer will no longer return.
        pool.close();
        // The stage that failed first explains the failure best.
        for source in sources {
            source
                .join()
                .map_err(|_| anyhow!("a decompression thread panicked"))??;
        }
        hasher
            .join()
            .map_err(|_| anyhow!("the hashing thread panicked"))??;
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

/// Raw image bytes on their way to the target: `buf[..len]` holds the image from
/// byte `offset`. Sources number their blocks in image order (`seq`) and may
/// finish them out of order; blocks never overlap.
struct Block {
    seq: usize,
    offset: u64,
    len: usize,
    buf: AlignedBuf,
}

impl Block {
    /// The image bytes `[offset, offset + len)`, which must lie in this block.
    fn slice(&self, offset: u64, len: u64) -> &[u8] {
        let at = (offset - self.offset) as usize;
        &self.buf.as_slice()[at..at + len as usize]
    }
}

/// A block whose mapped pieces were checked, with those pieces as `(offset, len)`.
struct Checked {
    block: Block,
    pieces: Vec<(u64, u64)>,
}

/// Where the raw image comes from.
enum Source {
    /// Independent frames listed by a seek table: the frames holding mapped data
    /// are checked and decompressed in parallel, the others skipped.
    Frames {
        file: File,
        /// The frames holding mapped data, each with its signed SHA-256.
        needed: Vec<(Frame, [u8; 32])>,
        /// The next frame a worker takes (an index into `needed`).
        next: AtomicUsize,
        workers: usize,
        buffers: usize,
        frame_len: usize,
    },
    /// One zstd stream (images built before the frames, or without a usable
    /// index): decompressed on one thread, keeping the mapped ranges.
    Stream,
}

impl Source {
    /// Picks the verified frames to decompress; falls back to one stream, saying
    /// why, when the image has no usable frame index.
    fn plan(job: &FlashJob) -> Result<Source> {
        let Some(verified) = job.frames else {
            progress::detail(
                "the image has no frame index (built before meetbox wrote frames): \
                 decompressing on one thread",
            );
            return Ok(Source::Stream);
        };
        let table = &verified.table;
        let file = File::open(job.image_zst)
            .with_context(|| format!("cannot open {}", job.image_zst.display()))?;
        let frame_len = table.max_raw_frame();
        if table.raw_size() != job.map.image_size || frame_len > MAX_FRAME {
            progress::detail(format!(
                "the image's frame index lists {} bytes in frames of up to {}: \
                 decompressing on one thread",
                table.raw_size(),
                progress::human_bytes(frame_len)
            ));
            return Ok(Source::Stream);
        }
        let needed: Vec<(Frame, [u8; 32])> = frames_with_data(job.map, &table.frames)
            .into_iter()
            .map(|i| (table.frames[i], verified.sha256[i]))
            .collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let frame_len = (frame_len as usize).div_ceil(ALIGN) * ALIGN;
        // Workers plus room for the hasher, the writer and one frame in between,
        // within the memory budget.
        let buffers = (FRAME_MEMORY / frame_len.max(1)).clamp(3, cores.min(MAX_WORKERS) + 3);
        let workers = (buffers - 2).min(cores).min(needed.len()).max(1);
        progress::detail(format!(
            "decompressing {} of {} frames on {workers} thread{}",
            needed.len(),
            table.frames.len(),
            if workers == 1 { "" } else { "s" }
        ));
        Ok(Source::Frames {
            file,
            needed,
            next: AtomicUsize::new(0),
            workers,
            buffers,
            frame_len,
        })
    }

    /// Number of buffers in the pool.
    fn buffers(&self) -> usize {
        match self {
            Source::Frames { buffers, .. } => *buffers,
            Source::Stream => POOL,
        }
    }

    /// Size of each buffer.
    fn buffer_len(&self) -> usize {
        match self {
            Source::Frames { frame_len, .. } => *frame_len,
            Source::Stream => CHUNK,
        }
    }

    /// Starts the decompression threads; each returns its own failure.
    fn spawn<'scope, 'env: 'scope>(
        &'env self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        job: &'env FlashJob,
        pool: &'env Pool<AlignedBuf>,
        out: SyncSender<Block>,
    ) -> Vec<std::thread::ScopedJoinHandle<'scope, Result<()>>> {
        match self {
            Source::Stream => vec![scope.spawn(move || decompress_stream(job, pool, out))],
            Source::Frames {
                file,
                needed,
                next,
                workers,
                ..
            } => (0..*workers)
                .map(|_| {
                    let out = out.clone();
                    scope.spawn(move || {
                        let result = decompress_frames(job, file, needed, next, pool, out);
                        if result.is_err() {
                            pool.close(); // releases the other workers
                        }
                        result
                    })
                })
                .collect(),
        }
    }
}

/// The indices of the frames holding at least one mapped byte.
fn frames_with_data(map: &BlockMap, frames: &[Frame]) -> Vec<usize> {
    let mut needed = Vec::new();
    let mut ranges = map.ranges.iter().map(|r| map.byte_span(r)).peekable();
    for (index, frame) in frames.iter().enumerate().filter(|(_, f)| f.raw_size > 0) {
        let end = frame.raw_offset + frame.raw_size;
        // Ranges ending before this frame are of no use to it or any later frame.
        while ranges.next_if(|&(_, e)| e <= frame.raw_offset).is_some() {}
        if ranges.peek().is_some_and(|&(start, _)| start < end) {
            needed.push(index);
        }
    }
    needed
}

/// A decompression worker: takes a buffer, then the next frame, checks its bytes
/// against their verified SHA-256, decompresses it whole and hands it on, until
/// the frames run out or the pipeline stops.
fn decompress_frames(
    job: &FlashJob,
    file: &File,
    frames: &[(Frame, [u8; 32])],
    next: &AtomicUsize,
    pool: &Pool<AlignedBuf>,
    out: SyncSender<Block>,
) -> Result<()> {
    let corrupt = || format!("{} is corrupt or truncated", job.image_zst.display());
    let mut decompressor =
        zstd::bulk::Decompressor::new().context("cannot start zstd decompression")?;
    let mut compressed = Vec::new();
    loop {
        if job.stop.load(Ordering::Relaxed) {
            return Ok(()); // the writer reports the interruption
        }
        let Some(mut buf) = pool.take() else {
            return Ok(()); // the pipeline stopped and says why
        };
        let seq = next.fetch_add(1, Ordering::SeqCst);
        let Some((frame, sha256)) = frames.get(seq) else {
            pool.put(buf);
            return Ok(());
        };
        compressed.resize(frame.compressed_size as usize, 0);
        file.read_exact_at(&mut compressed, frame.compressed_offset)
            .with_context(corrupt)?;
        ensure!(
            Sha256::digest(&compressed)[..] == sha256[..],
            "bytes {}-{} of {} changed after its signature was checked: the file is corrupt \
             or was replaced; check it with meetbox verify",
            frame.compressed_offset,
            frame.compressed_offset + frame.compressed_size,
            job.image_zst.display()
        );
        let len = frame.raw_size as usize;
        let n = decompressor
            .decompress_to_buffer(&compressed[..], &mut buf.as_mut_slice()[..len])
            .with_context(corrupt)?;
        ensure!(n == len, "{}", corrupt());
        let block = Block {
            seq,
            offset: frame.raw_offset,
            len,
            buf,
        };
        if out.send(block).is_err() {
            return Ok(());
        }
    }
}

/// Decompresses a single-stream image, keeps the mapped ranges, cuts them into blocks.
fn decompress_stream(
    job: &FlashJob,
    pool: &Pool<AlignedBuf>,
    out: SyncSender<Block>,
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
    let mut seq = 0;
    for range in &job.map.ranges {
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
            let Some(mut buf) = pool.take() else {
                return Ok(()); // the writer stopped and says why
            };
            let len = (end - position).min(CHUNK as u64) as usize;
            decoder
                .read_exact(&mut buf.as_mut_slice()[..len])
                .with_context(corrupt)?;
            let block = Block {
                seq,
                offset: position,
                len,
                buf,
            };
            if out.send(block).is_err() {
                return Ok(());
            }
            seq += 1;
            position += len as u64;
        }
    }
    Ok(())
}

/// Puts the blocks back in image order and finds their mapped pieces. With
/// `check_ranges` it also hashes every mapped range and lets a block pass only
/// once every range ending in it matches the block map.
fn check_blocks(
    map: &BlockMap,
    check_ranges: bool,
    input: Receiver<Block>,
    out: SyncSender<Checked>,
) -> Result<()> {
    let mut cursor = RangeCursor::new(map, check_ranges);
    let mut waiting = BTreeMap::new();
    let mut next = 0;
    for block in input {
        waiting.insert(block.seq, block);
        while let Some(block) = waiting.remove(&next) {
            next += 1;
            let pieces = cursor.hash(&block)?;
            if out.send(Checked { block, pieces }).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Walks the block map's ranges in order as blocks bring their bytes, hashing
/// each range's bytes if asked to.
struct RangeCursor<'a> {
    map: &'a BlockMap,
    /// The range being walked.
    range: usize,
    /// Its next byte expected.
    position: u64,
    /// Hashes the ranges to check them against the map; `None` to only walk.
    hasher: Option<Sha256>,
}

impl<'a> RangeCursor<'a> {
    fn new(map: &'a BlockMap, check_ranges: bool) -> Self {
        RangeCursor {
            map,
            range: 0,
            position: map.ranges.first().map_or(0, |r| map.byte_span(r).0),
            hasher: check_ranges.then(Sha256::new),
        }
    }

    /// Walks the mapped bytes of `block` (which must follow the bytes walked so
    /// far without a gap), checking every range that ends in it if asked to;
    /// returns the block's mapped pieces.
    fn hash(&mut self, block: &Block) -> Result<Vec<(u64, u64)>> {
        let end = block.offset + block.len as u64;
        let mut pieces = Vec::new();
        while let Some(range) = self.map.ranges.get(self.range) {
            let (start, range_end) = self.map.byte_span(range);
            if start >= end {
                break;
            }
            let from = start.max(block.offset);
            let to = range_end.min(end);
            ensure!(
                from == self.position && from < to,
                "the decompressed image has no data for bytes {}-{range_end}",
                self.position
            );
            if let Some(hasher) = &mut self.hasher {
                hasher.update(block.slice(from, to - from));
            }
            pieces.push((from, to - from));
            self.position = to;
            if to < range_end {
                break;
            }
            if let Some(hasher) = &mut self.hasher {
                let digest: [u8; 32] = hasher.finalize_reset().into();
                ensure!(
                    digest == range.sha256,
                    "blocks {}-{} of the image do not match their checksum in the block map: \
                     the image or its map is damaged",
                    range.first,
                    range.last
                );
            }
            self.range += 1;
            if let Some(next) = self.map.ranges.get(self.range) {
                self.position = self.map.byte_span(next).0;
            }
        }
        Ok(pieces)
    }
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

/// A piece of one mapped range to read back.
struct ReadPiece {
    range: usize,
    offset: u64,
    len: usize,
    ends_range: bool,
}

/// The mapped ranges cut into pieces of at most [`READ_CHUNK`], in image order.
fn read_pieces(map: &BlockMap) -> Vec<ReadPiece> {
    let mut pieces = Vec::new();
    for (range, r) in map.ranges.iter().enumerate() {
        let (start, end) = map.byte_span(r);
        let mut offset = start;
        while offset < end {
            let len = (end - offset).min(READ_CHUNK as u64);
            pieces.push(ReadPiece {
                range,
                offset,
                len: len as usize,
                ends_range: offset + len == end,
            });
            offset += len;
        }
    }
    pieces
}

/// Reads every mapped range back from the target and compares its SHA-256. Only
/// after everything is written: a fake-capacity drive that wraps writes around
/// overwrites data that an earlier read-back would have found intact. Several
/// reads are in flight while the pieces read so far are hashed in order.
fn read_back(job: &FlashJob, target: &TargetFile) -> Result<()> {
    let map = job.map;
    target.drop_cache(0, 0);
    let pieces = read_pieces(map);
    let pool = Pool::new((0..READ_THREADS + 2).map(|_| AlignedBuf::zeroed(READ_CHUNK)));
    let next = AtomicUsize::new(0);
    let (full_tx, full_rx) = sync_channel::<(usize, AlignedBuf)>(READ_THREADS + 2);
    let mut progress = Progress::bytes("read back", map.mapped_bytes());
    let interrupted = || anyhow!("interrupted while reading back; the image was not verified");
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..READ_THREADS)
            .map(|_| {
                let full = full_tx.clone();
                let (pool, next, pieces) = (&pool, &next, &pieces);
                scope.spawn(move || {
                    let result = (|| -> Result<()> {
                        while !job.stop.load(Ordering::Relaxed) {
                            let Some(mut buf) = pool.take() else {
                                break;
                            };
                            let seq = next.fetch_add(1, Ordering::SeqCst);
                            let Some(piece) = pieces.get(seq) else {
                                pool.put(buf);
                                break;
                            };
                            target
                                .read_at(&mut buf.as_mut_slice()[..piece.len], piece.offset)
                                .with_context(|| {
                                    format!("cannot read {} back", target.path.display())
                                })?;
                            if full.send((seq, buf)).is_err() {
                                break;
                            }
                        }
                        Ok(())
                    })();
                    if result.is_err() {
                        pool.close(); // releases the other readers
                    }
                    result
                })
            })
            .collect();
        drop(full_tx);
        let compared = (|| -> Result<()> {
            let mut hasher = Sha256::new();
            let mut waiting = BTreeMap::new();
            let mut next_piece = 0;
            for (seq, buf) in full_rx {
                waiting.insert(seq, buf);
                while let Some(buf) = waiting.remove(&next_piece) {
                    if job.stop.load(Ordering::Relaxed) {
                        return Err(interrupted());
                    }
                    let piece = &pieces[next_piece];
                    next_piece += 1;
                    hasher.update(&buf.as_slice()[..piece.len]);
                    if piece.ends_range {
                        let digest: [u8; 32] = hasher.finalize_reset().into();
                        let range = &map.ranges[piece.range];
                        let (start, end) = map.byte_span(range);
                        ensure!(
                            digest == range.sha256,
                            "read-back mismatch: bytes {start}-{end} of {} differ from the image",
                            target.path.display()
                        );
                    }
                    progress.inc(piece.len as u64);
                    pool.put(buf);
                }
            }
            if job.stop.load(Ordering::Relaxed) {
                return Err(interrupted());
            }
            Ok(())
        })();
        pool.close();
        for reader in readers {
            reader
                .join()
                .map_err(|_| anyhow!("a read-back thread panicked"))??;
        }
        compared?;
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
        crate::artifact::compress::compress_in_frames(&raw, &zst, 1, 2, 8 * MIB).unwrap();

        let path = dir.path().join("target.raw");
        let mut target = TargetFile::open_file(&path, image_size).unwrap();
        target.direct = target.buffered.try_clone().unwrap();
        target.direct_io = false;
        let stop = AtomicBool::new(false);
        let frames = frames_as_verified(&zst);
        let job = FlashJob {
            image_zst: &zst,
            map: &map,
            frames: Some(&frames),
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

    fn block(seq: usize, offset: u64, bytes: &[u8]) -> Block {
        let mut buf = AlignedBuf::zeroed(bytes.len());
        buf.as_mut_slice().copy_from_slice(bytes);
        Block {
            seq,
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
        let pieces = cursor.hash(&block(0, 0, &data[..8 * 4096])).unwrap();
        assert_eq!(pieces, vec![(2 * 4096, 6 * 4096)]);
        let pieces = cursor
            .hash(&block(1, 8 * 4096, &data[8 * 4096..16 * 4096]))
            .unwrap();
        assert_eq!(pieces, vec![(8 * 4096, 2 * 4096), (12 * 4096, 2 * 4096)]);

        // Damaged data fails where its range ends.
        let mut cursor = RangeCursor::new(&map, true);
        let mut bad = data[..16 * 4096].to_vec();
        bad[13 * 4096] ^= 1;
        cursor.hash(&block(0, 0, &bad[..8 * 4096])).unwrap();
        let err = cursor
            .hash(&block(1, 8 * 4096, &bad[8 * 4096..]))
            .unwrap_err();
        assert!(err.to_string().contains("blocks 12-13"), "{err}");

        // Only walking (frames checked before decompression): the same pieces.
        let mut cursor = RangeCursor::new(&map, false);
        cursor.hash(&block(0, 0, &bad[..8 * 4096])).unwrap();
        let pieces = cursor.hash(&block(1, 8 * 4096, &bad[8 * 4096..])).unwrap();
        assert_eq!(pieces, vec![(8 * 4096, 2 * 4096), (12 * 4096, 2 * 4096)]);

        // A missing block (a gap inside a range) is an error, not a skipped range.
        let mut cursor = RangeCursor::new(&map, false);
        cursor.hash(&block(0, 0, &data[..4 * 4096])).unwrap();
        let err = cursor
            .hash(&block(1, 8 * 4096, &data[8 * 4096..16 * 4096]))
            .unwrap_err();
        assert!(err.to_string().contains("no data"), "{err}");
    }
}
