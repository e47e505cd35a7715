//! Where the bytes to write come from: signed frames decompressed on every core, or one stream
//! checked range by range against the block map; either way in image order.

use super::*;

/// Raw image bytes on their way to the target: `buf[..len]` holds the image from
/// byte `offset`. Sources deliver blocks in image order; blocks never overlap.
pub(super) struct Block {
    pub(super) offset: u64,
    pub(super) len: usize,
    pub(super) buf: AlignedBuf,
}

impl Block {
    /// The image bytes `[offset, offset + len)`, which must lie in this block.
    pub(super) fn slice(&self, offset: u64, len: u64) -> &[u8] {
        let at = (offset - self.offset) as usize;
        &self.buf.as_slice()[at..at + len as usize]
    }
}

/// A block whose mapped pieces were checked, with those pieces as `(offset, len)`.
pub(super) struct Checked {
    pub(super) block: Block,
    pub(super) pieces: Vec<(u64, u64)>,
}

/// Where the raw image comes from.
pub(super) enum Source<'a> {
    /// Independent frames listed by a seek table: the frames holding mapped data
    /// are checked and decompressed in parallel, the others skipped.
    Frames {
        file: File,
        /// The frames holding mapped data, each with its signed SHA-256.
        needed: Vec<(Frame, [u8; 32])>,
        workers: usize,
        buffers: usize,
        frame_len: usize,
    },
    /// One zstd stream (images built before the frames, or without a usable
    /// index): decompressed on one thread, keeping the mapped ranges.
    Stream { image_zst: &'a Path },
    /// A disk holding the raw image: its mapped ranges read in pieces, several in flight.
    Disk {
        disk: &'a TargetFile,
        pieces: Vec<ReadPiece>,
    },
}

impl<'a> Source<'a> {
    /// Picks the verified frames to decompress; falls back to one stream, saying
    /// why, when the image has no usable frame index.
    pub(super) fn plan(job: &FlashJob<'a>) -> Result<Source<'a>> {
        let (image_zst, frames) = match job.input {
            Input::Disk(disk) => {
                return Ok(Source::Disk {
                    disk,
                    pieces: read_pieces(job.map),
                })
            }
            Input::Compressed { image_zst, frames } => (image_zst, frames),
        };
        let Some(verified) = frames else {
            progress::detail(
                "the image has no frame index (built before meetbox wrote frames): \
                 decompressing on one thread",
            );
            return Ok(Source::Stream { image_zst });
        };
        let table = &verified.table;
        let file = File::open(image_zst)
            .with_context(|| format!("cannot open {}", image_zst.display()))?;
        let frame_len = table.max_raw_frame();
        if table.raw_size() != job.map.image_size || frame_len > MAX_FRAME {
            progress::detail(format!(
                "the image's frame index lists {} bytes in frames of up to {}: \
                 decompressing on one thread",
                table.raw_size(),
                progress::human_bytes(frame_len)
            ));
            return Ok(Source::Stream { image_zst });
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
            workers,
            buffers,
            frame_len,
        })
    }

    /// Number of buffers in the pool.
    pub(super) fn buffers(&self) -> usize {
        match self {
            Source::Frames { buffers, .. } => *buffers,
            Source::Stream { .. } => POOL,
            Source::Disk { .. } => READ_THREADS + 3,
        }
    }

    /// Size of each buffer.
    pub(super) fn buffer_len(&self) -> usize {
        match self {
            Source::Frames { frame_len, .. } => *frame_len,
            Source::Stream { .. } => CHUNK,
            Source::Disk { .. } => READ_CHUNK,
        }
    }

    /// Decompresses the mapped data and hands it to `deliver` in image order, in
    /// blocks whose buffers come from `pool`; frames on every worker, a stream on
    /// the calling thread. Stops without an error when `deliver` breaks off or the
    /// pool closes: the stage that stopped reports why.
    pub(super) fn produce(
        &self,
        job: &FlashJob,
        pool: &Pool<AlignedBuf>,
        deliver: impl FnMut(Block) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        match self {
            Source::Stream { image_zst } => decompress_stream(job, image_zst, pool, deliver),
            Source::Frames {
                file,
                needed,
                workers,
                ..
            } => decompress_frames(job, file, needed, *workers, pool, deliver),
            Source::Disk { disk, pieces } => read_disk(disk, pieces, pool, deliver),
        }
    }
}

/// The indices of the frames holding at least one mapped byte.
pub(super) fn frames_with_data(map: &BlockMap, frames: &[Frame]) -> Vec<usize> {
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

/// Checks each frame's bytes against their verified SHA-256 and decompresses it
/// whole, on `workers` threads, delivering the frames in order.
fn decompress_frames(
    job: &FlashJob,
    file: &File,
    frames: &[(Frame, [u8; 32])],
    workers: usize,
    pool: &Pool<AlignedBuf>,
    mut deliver: impl FnMut(Block) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let image_zst = job.input.path();
    let corrupt = || format!("{} is corrupt or truncated", image_zst.display());
    run_ordered(
        frames.len(),
        workers,
        pool,
        || -> Result<_> {
            let decompressor =
                zstd::bulk::Decompressor::new().context("cannot start zstd decompression")?;
            Ok((decompressor, Vec::new()))
        },
        |(decompressor, compressed), index, buf| {
            let (frame, sha256) = &frames[index];
            compressed.resize(frame.compressed_size as usize, 0);
            file.read_exact_at(compressed, frame.compressed_offset)
                .with_context(corrupt)?;
            ensure!(
                Sha256::digest(&compressed[..])[..] == sha256[..],
                "bytes {}-{} of {} changed after its signature was checked: the file is corrupt \
                 or was replaced; check it with meetbox verify",
                frame.compressed_offset,
                frame.compressed_offset + frame.compressed_size,
                image_zst.display()
            );
            let len = frame.raw_size as usize;
            let n = decompressor
                .decompress_to_buffer(&compressed[..], &mut buf.as_mut_slice()[..len])
                .with_context(corrupt)?;
            ensure!(n == len, "{}", corrupt());
            Ok(())
        },
        |index, buf, ()| {
            let frame = &frames[index].0;
            deliver(Block {
                offset: frame.raw_offset,
                len: frame.raw_size as usize,
                buf,
            })
        },
    )?;
    Ok(())
}

/// Decompresses a single-stream image, keeps the mapped ranges, cuts them into blocks.
fn decompress_stream(
    job: &FlashJob,
    image_zst: &Path,
    pool: &Pool<AlignedBuf>,
    mut deliver: impl FnMut(Block) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let file =
        File::open(image_zst).with_context(|| format!("cannot open {}", image_zst.display()))?;
    let mut decoder =
        zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(1 << 20, file))
            .context("cannot start zstd decompression")?;
    decoder
        .window_log_max(31)
        .context("cannot configure zstd decompression")?;
    let corrupt = || format!("{} is corrupt or truncated", image_zst.display());
    let mut scratch = vec![0u8; CHUNK];
    let mut position = 0u64;
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
                offset: position,
                len,
                buf,
            };
            if deliver(block)?.is_break() {
                return Ok(());
            }
            position += len as u64;
        }
    }
    Ok(())
}

/// Reads the mapped pieces of a disk holding the raw image, [`READ_THREADS`] at a time, and
/// delivers them in order.
fn read_disk(
    disk: &TargetFile,
    pieces: &[ReadPiece],
    pool: &Pool<AlignedBuf>,
    mut deliver: impl FnMut(Block) -> Result<ControlFlow<()>>,
) -> Result<()> {
    run_ordered(
        pieces.len(),
        READ_THREADS,
        pool,
        || Ok(()),
        |_, index, buf| {
            let piece = &pieces[index];
            disk.read_at(&mut buf.as_mut_slice()[..piece.len], piece.offset)
                .with_context(|| {
                    format!(
                        "cannot read bytes {}-{} of {}",
                        piece.offset,
                        piece.offset + piece.len as u64,
                        disk.path.display()
                    )
                })
        },
        |index, buf, ()| {
            deliver(Block {
                offset: pieces[index].offset,
                len: pieces[index].len,
                buf,
            })
        },
    )?;
    Ok(())
}

/// Walks the block map's ranges in order as blocks bring their bytes, hashing
/// each range's bytes if asked to.
pub(super) struct RangeCursor<'a> {
    pub(super) map: &'a BlockMap,
    /// The range being walked.
    pub(super) range: usize,
    /// Its next byte expected.
    pub(super) position: u64,
    /// Hashes the ranges to check them against the map; `None` to only walk.
    pub(super) hasher: Option<Sha256>,
}

impl<'a> RangeCursor<'a> {
    pub(super) fn new(map: &'a BlockMap, check_ranges: bool) -> Self {
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
    pub(super) fn hash(&mut self, block: &Block) -> Result<Vec<(u64, u64)>> {
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
