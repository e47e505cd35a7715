//! The image's own bytes: each frame hashed against the signed manifest, on every core, or the
//! whole file streamed once through SHA-256, the block map and the decompressor.

use super::*;

pub(super) fn check_frame_digests(
    files: &BuildFiles,
    frames: &Result<VerifiedFrames, String>,
) -> CheckResult {
    CheckResult {
        check: format!("frames of {}", files.image_zst_name()),
        outcome: match frames {
            Ok(frames) => Outcome::Passed(format!(
                "{} frames match their SHA-256 in the manifest",
                frames.sha256.len()
            )),
            Err(reason) => Outcome::Failed(reason.clone()),
        },
    }
}

pub(super) fn check_decompressed(
    files: &BuildFiles,
    read: &ImageRead,
    manifest: Option<&Manifest>,
) -> CheckResult {
    let check = "decompressed image".to_string();
    let outcome = match (&read.raw, manifest) {
        (Some(Err(reason)), _) => Outcome::Failed(format!(
            "{} does not decompress ({reason}): truncated or altered",
            files.image_zst_name()
        )),
        (None, _) => Outcome::Failed("was not decompressed".into()),
        (Some(Ok(_)), None) => Outcome::Failed("no readable manifest to compare with".into()),
        (Some(Ok((size, digest))), Some(manifest)) => {
            let image = &manifest.image;
            if *size != image.raw_size_bytes || *digest != image.raw_sha256 {
                Outcome::Failed(format!(
                    "{size} bytes sha256 {digest}, the manifest says {} bytes sha256 {}",
                    image.raw_size_bytes, image.raw_sha256
                ))
            } else {
                Outcome::Passed(format!("{} sha256 {digest}", human_bytes(*size)))
            }
        }
    };
    CheckResult { check, outcome }
}

/// What one pass over the compressed image found.
pub(super) struct ImageRead {
    pub(super) bytes: ImageBytes,
    pub(super) compressed_size: u64,
    /// Signature verification over the whole file, if it was asked for.
    pub(super) signature: Option<Result<(), String>>,
    /// Size and SHA-256 of the decompressed image, if decompression was asked for.
    pub(super) raw: Option<Result<(u64, Sha256Digest), String>>,
}

/// How the compressed image's bytes were checked.
pub(super) enum ImageBytes {
    /// Hashed whole: its SHA-256.
    Whole(Sha256Digest),
    /// Frame by frame against the manifest: the frames, or why they do not match.
    Frames(Result<VerifiedFrames, String>),
}

impl ImageRead {
    /// The SHA-256 the image file is known to have: hashed whole, or, when every
    /// frame matched the manifest that lists them, the one that manifest names.
    pub(super) fn compressed_sha256(
        &self,
        manifest: Option<&Manifest>,
    ) -> Result<Sha256Digest, String> {
        match (&self.bytes, manifest) {
            (ImageBytes::Whole(digest), _) => Ok(*digest),
            (ImageBytes::Frames(Ok(_)), Some(manifest)) => Ok(manifest.image.compressed_sha256),
            (ImageBytes::Frames(Ok(_)), None) => Err("no manifest lists the frames".into()),
            (ImageBytes::Frames(Err(_)), _) => {
                Err("the image's frames do not match the signed manifest".into())
            }
        }
    }
}

/// Checks the image frame by frame against the SHA-256 of each in the manifest.
/// The frames cover the file up to its seek table, which is not used (the
/// manifest lists the frames) and so not checked.
pub(super) fn check_frames(image: &File, size: u64, listed: &[ImageFrame]) -> ImageRead {
    ImageRead {
        bytes: ImageBytes::Frames(hash_listed_frames(image, size, listed)),
        compressed_size: size,
        signature: None,
        raw: None,
    }
}

/// Reads and hashes the listed frames on every core (frames are independent, so
/// this runs at the disk's speed or the cores', not one core's); the frames with
/// their digests, or the first frame that differs from the list.
pub(super) fn hash_listed_frames(
    image: &File,
    size: u64,
    listed: &[ImageFrame],
) -> Result<VerifiedFrames, String> {
    let sizes = listed
        .iter()
        .map(|f| {
            Some((
                u32::try_from(f.compressed_size).ok()?,
                u32::try_from(f.raw_size).ok()?,
            ))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or("the manifest lists a frame of 4 GiB or more: it is not from meetbox")?;
    let table = SeekTable::from_sizes(&sizes);
    let total = table.compressed_size();
    if total > size {
        return Err(format!(
            "the manifest lists {total} bytes of frames but the file has {size}: it is truncated"
        ));
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(listed.len())
        .max(1);
    let mut progress = Progress::bytes("verify", total);
    let buffers = Pool::new((0..threads + 2).map(|_| Vec::<u8>::new()));
    let mut digests = Vec::with_capacity(listed.len());
    let frames = &table.frames;
    run_ordered(
        frames.len(),
        threads,
        &buffers,
        || Ok(()),
        |_, index, bytes| {
            let frame = &frames[index];
            bytes.resize(frame.compressed_size as usize, 0);
            image
                .read_exact_at(bytes, frame.compressed_offset)
                .with_context(|| {
                    format!(
                        "cannot read bytes {}-{}",
                        frame.compressed_offset,
                        frame.compressed_offset + frame.compressed_size
                    )
                })?;
            Ok(<[u8; 32]>::from(Sha256::digest(&bytes[..])))
        },
        |index, bytes, digest| {
            digests.push(digest);
            progress.inc(frames[index].compressed_size);
            buffers.put(bytes);
            Ok(ControlFlow::Continue(()))
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    progress.finish();
    if let Some(index) = (0..listed.len()).find(|&i| digests[i] != listed[i].sha256.0) {
        let frame = &table.frames[index];
        return Err(format!(
            "the file does not match its signature: frame {index} (bytes {}-{}) differs from \
             its SHA-256 in the signed manifest; the file is damaged or was altered",
            frame.compressed_offset,
            frame.compressed_offset + frame.compressed_size
        ));
    }
    Ok(VerifiedFrames {
        table,
        sha256: digests,
    })
}

/// Reads the image once and hands each block to up to three threads: one computes
/// the SHA-256 of the compressed bytes, one the signature's BLAKE2b prehash, one
/// decompresses and hashes the raw image. Each hash runs at about one core's
/// speed, so splitting them lets the check run at the speed of the slowest one.
pub(super) fn stream_image(
    mut image: File,
    size: u64,
    signature: Option<(&PublicKey, &SignatureBox)>,
    decompress: bool,
) -> Result<ImageRead> {
    std::thread::scope(|scope| {
        let (digest_tx, digest_rx) = sync_channel::<Arc<Vec<u8>>>(CHANNEL_DEPTH);
        let digest = scope.spawn(move || {
            let mut progress = Progress::bytes("verify", size);
            let mut hasher = Sha256::new();
            let mut total = 0u64;
            for block in digest_rx {
                hasher.update(&block[..]);
                total += block.len() as u64;
                progress.inc(block.len() as u64);
            }
            progress.finish();
            (Sha256Digest::from_hasher(hasher), total)
        });
        let mut consumers = vec![digest_tx];
        let verdict = signature.map(|(key, signature)| {
            let (tx, rx) = sync_channel(CHANNEL_DEPTH);
            consumers.push(tx);
            scope.spawn(move || {
                // It stops reading early on errors; the reader then stops sending to it.
                minisign::verify(
                    key,
                    signature,
                    Unseekable(ChannelReader::new(rx)),
                    true,
                    false,
                    false,
                )
                .map_err(|e| e.to_string())
            })
        });
        let raw_handle = decompress.then(|| {
            let (tx, rx) = sync_channel(CHANNEL_DEPTH);
            consumers.push(tx);
            scope.spawn(move || hash_decompressed(rx))
        });

        let read = feed_blocks(&mut image, consumers);
        let (compressed_sha256, compressed_size) =
            digest.join().expect("the hashing thread does not panic");
        let signature =
            verdict.map(|handle| handle.join().expect("the signature thread does not panic"));
        let raw = raw_handle.map(|handle| {
            handle
                .join()
                .expect("the decompressing thread does not panic")
                .map_err(|e| e.to_string())
        });
        read.context("cannot read the image")?;
        Ok(ImageRead {
            bytes: ImageBytes::Whole(compressed_sha256),
            compressed_size,
            signature,
            raw,
        })
    })
}

/// Reads the file in blocks and sends each to every consumer still listening (the
/// signature check and the decompressor stop listening when the data is bad; the
/// digest listens to the end).
pub(super) fn feed_blocks(
    image: &mut File,
    mut consumers: Vec<SyncSender<Arc<Vec<u8>>>>,
) -> io::Result<()> {
    loop {
        let mut block = vec![0u8; CHUNK_BYTES];
        let filled = read_full(image, &mut block)?;
        if filled == 0 {
            return Ok(());
        }
        block.truncate(filled);
        let block = Arc::new(block);
        consumers.retain(|consumer| consumer.send(Arc::clone(&block)).is_ok());
        if consumers.is_empty() {
            return Ok(());
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(super) fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Decompresses the blocks as a zstd stream and returns the raw size and SHA-256;
/// a truncated or corrupt stream is an error. Hashing runs in its own thread: the
/// raw image is several times larger than the compressed one and SHA-256 of it costs
/// about as much as decompressing it.
pub(super) fn hash_decompressed(blocks: Receiver<Arc<Vec<u8>>>) -> io::Result<(u64, Sha256Digest)> {
    let (raw_tx, raw_rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
    let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH + 2);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            for block in raw_rx {
                hasher.update(&block);
                size += block.len() as u64;
                // The decompressor may have finished already; then the block is dropped.
                let _ = spare_tx.try_send(block);
            }
            (size, Sha256Digest::from_hasher(hasher))
        });
        let decoded = decompress_into(blocks, &raw_tx, &spare_rx);
        drop(raw_tx);
        let hashed = hasher.join().expect("the hashing thread does not panic");
        decoded.map(|()| hashed)
    })
}

/// Decompresses into blocks (reused once hashed) and sends them to the hasher.
pub(super) fn decompress_into(
    blocks: Receiver<Arc<Vec<u8>>>,
    raw: &SyncSender<Vec<u8>>,
    spare: &Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut decoder = zstd::stream::read::Decoder::new(ChannelReader::new(blocks))?;
    loop {
        let mut block = spare.try_recv().unwrap_or_default();
        block.resize(CHUNK_BYTES, 0);
        let filled = read_full(&mut decoder, &mut block)?;
        if filled == 0 {
            return Ok(());
        }
        block.truncate(filled);
        if raw.send(block).is_err() {
            return Ok(());
        }
    }
}

/// Reads the blocks a channel delivers, as one stream; ends when the sender is gone.
pub(super) struct ChannelReader {
    blocks: Receiver<Arc<Vec<u8>>>,
    current: Arc<Vec<u8>>,
    offset: usize,
}

impl ChannelReader {
    fn new(blocks: Receiver<Arc<Vec<u8>>>) -> Self {
        ChannelReader {
            blocks,
            current: Arc::new(Vec::new()),
            offset: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.current.len() {
            match self.blocks.recv() {
                Ok(block) => {
                    self.current = block;
                    self.offset = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// `minisign::verify` wants `Seek` only to echo the data (`output = true`), which
/// we never ask for; a stream cannot seek.
pub(super) struct Unseekable<R>(R);

impl<R: Read> Read for Unseekable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R> Seek for Unseekable<R> {
    fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a streamed image cannot seek",
        ))
    }
}
