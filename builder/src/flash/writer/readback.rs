//! After the flush: every mapped range read back past the page cache and hashed against the
//! block map.

use super::*;

/// Test switch: flips one byte of the target, past every cache.
pub(super) fn corrupt_byte(target: &TargetFile, offset: u64) -> Result<()> {
    let mut byte = [0u8; 1];
    target
        .buffered
        .read_exact_at(&mut byte, offset)
        .and_then(|_| target.buffered.write_all_at(&[byte[0] ^ 0xFF], offset))
        .context("test switch: cannot corrupt the target")?;
    target.sync()
}

/// A piece of one mapped range to read back.
pub(super) struct ReadPiece {
    pub(super) range: usize,
    pub(super) offset: u64,
    pub(super) len: usize,
    pub(super) ends_range: bool,
}

/// The mapped ranges cut into pieces of at most [`READ_CHUNK`], in image order.
pub(super) fn read_pieces(map: &BlockMap) -> Vec<ReadPiece> {
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
pub(super) fn read_back(job: &FlashJob, target: &TargetFile) -> Result<()> {
    let map = job.map;
    target.drop_cache(0, 0);
    let pieces = read_pieces(map);
    let buffers = Pool::new((0..READ_THREADS + 2).map(|_| AlignedBuf::zeroed(READ_CHUNK)));
    let mut progress = Progress::bytes("read back", map.mapped_bytes());
    let interrupted = || anyhow!("interrupted while reading back; the image was not verified");
    let mut hasher = Sha256::new();
    run_ordered(
        pieces.len(),
        READ_THREADS,
        &buffers,
        || Ok(()),
        |_, index, buf| {
            let piece = &pieces[index];
            target
                .read_at(&mut buf.as_mut_slice()[..piece.len], piece.offset)
                .with_context(|| format!("cannot read {} back", target.path.display()))
        },
        |index, buf, ()| {
            ensure!(!job.stop.load(Ordering::Relaxed), interrupted());
            let piece = &pieces[index];
            hasher.update(&buf.as_slice()[..piece.len]);
            buffers.put(buf);
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
            Ok(ControlFlow::Continue(()))
        },
    )?;
    ensure!(!job.stop.load(Ordering::Relaxed), interrupted());
    ensure!(
        progress.done() == map.mapped_bytes(),
        "only {} of {} bytes were read back",
        progress.done(),
        map.mapped_bytes()
    );
    progress.finish();
    Ok(())
}
