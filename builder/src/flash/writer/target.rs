//! The flash target: a block device or an image file, opened for O_DIRECT where it can be,
//! and the aligned buffers such writes need. The installer's source, the stick, is opened the same
//! way, read-only.

use super::*;

/// An open flash target.
pub struct TargetFile {
    pub path: PathBuf,
    /// Descriptor for large aligned writes and reads (O_DIRECT on block devices).
    pub(super) direct: File,
    /// Descriptor for unaligned pieces, flushes and the partition table.
    pub(super) buffered: File,
    /// Whether `direct` bypasses the page cache (O_DIRECT).
    pub(super) direct_io: bool,
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

    /// Opens a disk or an image file to read from, past the page cache where it allows: the stick
    /// `meetbox install` copies, whose bytes must come from the medium, not from memory.
    pub fn open_for_reading(path: &Path) -> Result<TargetFile> {
        let buffered = File::open(path)
            .with_context(|| format!("cannot open {} to read it", path.display()))?;
        // SAFETY: lseek on a descriptor we own.
        let end = unsafe { libc::lseek(buffered.as_raw_fd(), 0, libc::SEEK_END) };
        ensure!(end >= 0, "cannot find the size of {}", path.display());
        let direct = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        let (direct, direct_io) = direct_or_buffered(direct, &buffered, path)?;
        Ok(TargetFile {
            path: path.to_path_buf(),
            direct,
            buffered,
            direct_io,
            size: end as u64,
        })
    }

    /// Reads `buf.len()` bytes at `offset` through the page cache (small reads: the partition
    /// table, the ESP).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.drop_cache(offset, buf.len() as u64);
        self.buffered.read_exact_at(buf, offset)
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
        let (direct, direct_io) = direct_or_buffered(open(libc::O_DIRECT), &buffered, path)?;
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
    pub(super) fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
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
    pub(super) fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
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

    pub(super) fn sync(&self) -> Result<()> {
        self.buffered
            .sync_data()
            .and_then(|_| self.direct.sync_data())
            .with_context(|| format!("cannot flush {}", self.path.display()))
    }

    /// Drops the target's cached pages so reads come from the medium.
    pub(super) fn drop_cache(&self, offset: u64, len: u64) {
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

/// The O_DIRECT descriptor and true, or, where the file system refuses the flag, a second handle
/// on the page cache and false.
fn direct_or_buffered(
    direct: std::io::Result<File>,
    buffered: &File,
    path: &Path,
) -> Result<(File, bool)> {
    match direct {
        Ok(direct) => Ok((direct, true)),
        Err(_) => Ok((
            buffered
                .try_clone()
                .with_context(|| format!("cannot reopen {}", path.display()))?,
            false,
        )),
    }
}

/// A heap buffer aligned for O_DIRECT.
pub(super) struct AlignedBuf {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
}

// SAFETY: the buffer owns its allocation exclusively; moving it between threads is sound.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub(super) fn zeroed(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len.max(ALIGN), ALIGN).expect("valid layout");
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
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
pub(super) type HeldRegion = ((u64, u64), AlignedBuf);
