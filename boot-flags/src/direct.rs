//! Direct I/O for [`FileDevice`](crate::FileDevice): large aligned transfers
//! bypass the page cache, so a payload goes to the disk as it is produced
//! instead of piling up as dirty pages that one `fsync` at the end writes.
//!
//! Nothing changes for a caller: `write_all_at` and `read_exact_at` take any
//! buffer. A transfer of at least [`DIRECT_MIN`] bytes whose middle part is
//! aligned (disk offset and memory address, to [`DIRECT_ALIGN`] or the
//! device's logical sector size if larger) goes through a second descriptor
//! of the same file opened with `O_DIRECT`; the unaligned head and tail,
//! small transfers and unaligned buffers go through the page cache as
//! before. [`AlignedBuf`] gives buffers whose start is aligned.
//!
//! The power-loss rules are the same for both: a direct write is on the
//! device but may sit in its volatile cache, so it is durable only after
//! [`BlockDevice::flush`](crate::BlockDevice::flush) (`fsync` on the
//! device, which flushes the device's cache for every descriptor of it).
//! The kernel keeps the page cache coherent with direct writes (it writes
//! back and drops the cached pages of the range), so a buffered read after
//! a direct write sees the new bytes.
//!
//! Where `O_DIRECT` is not available (tmpfs before Linux 6.6, some FUSE
//! file systems) the open or the first transfer fails with `EINVAL`; the
//! device then stays on the page cache for good.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Alignment of direct transfers (offset, length, memory): a page, which
/// covers 512- and 4096-byte sectors and file systems' block sizes.
pub const DIRECT_ALIGN: usize = 4096;

/// Transfers smaller than this stay on the page cache: the GPT, slot records
/// and single blocks gain nothing from direct I/O.
pub const DIRECT_MIN: usize = 64 << 10;

/// A byte buffer whose first byte is aligned to [`DIRECT_ALIGN`], for direct
/// transfers. Its length is set with [`AlignedBuf::set_len`] up to the
/// capacity it was made with; it never reallocates, so the alignment holds.
/// The memory is zeroed on creation and only the pages written are touched.
pub struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
    cap: usize,
}

impl AlignedBuf {
    /// An empty buffer of `cap` bytes of capacity.
    pub fn new(cap: usize) -> AlignedBuf {
        let mem = vec![0u8; cap + DIRECT_ALIGN];
        // The address is only inspected, never turned back into a pointer.
        let start = (DIRECT_ALIGN - mem.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        AlignedBuf {
            mem,
            start,
            len: 0,
            cap,
        }
    }

    /// Bytes it can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Set the length (at most the capacity). Bytes that come into view
    /// hold whatever was there before (zeros, or earlier contents).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "AlignedBuf::set_len past its capacity");
        self.len = len;
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

/// The `O_DIRECT` descriptor of a [`FileDevice`](crate::FileDevice), opened
/// on first use.
#[derive(Debug, Default)]
pub(crate) enum Direct {
    /// Not tried yet.
    #[default]
    Untried,
    Open {
        file: File,
        align: usize,
    },
    /// Not available here: everything goes through the page cache.
    Off,
}

/// A second handle on a [`FileDevice`](crate::FileDevice)'s `O_DIRECT`
/// descriptor that can move to another thread and read while the device
/// is being written (the install's read-back, overlapped with the
/// writes: updater/src/install/pipeline/ahead.rs). It reads only whole
/// aligned transfers, so every byte comes from the device, never from the
/// page cache.
#[derive(Debug)]
pub struct DirectReader {
    file: File,
    align: usize,
}

impl DirectReader {
    pub(crate) fn new(file: File, align: usize) -> DirectReader {
        DirectReader { file, align }
    }

    /// Alignment every offset, length and buffer address must have.
    pub fn align(&self) -> usize {
        self.align
    }

    /// Fill `buf` from disk byte `off`, directly. An unaligned offset,
    /// length or buffer is an `InvalidInput` error (nothing is read); so
    /// is, from the kernel, a file system that refuses direct I/O.
    pub fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let a = self.align;
        if off % a as u64 != 0 || buf.len() % a != 0 || buf.as_ptr() as usize % a != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a direct read must be aligned",
            ));
        }
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, off)
    }
}

/// How a transfer splits: `head` bytes through the page cache, then `mid`
/// bytes direct, then the rest through the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    pub head: usize,
    pub mid: usize,
}

/// The direct part of a transfer of `len` bytes at disk offset `off` from
/// memory address `addr`, if it is worth one.
pub(crate) fn split(off: u64, addr: usize, len: usize, align: usize) -> Option<Split> {
    let head = ((align as u64 - off % align as u64) % align as u64) as usize;
    let mid = len.checked_sub(head)? / align * align;
    let aligned_mem = (addr + head) % align == 0;
    (mid >= DIRECT_MIN && aligned_mem).then_some(Split { head, mid })
}

impl Direct {
    /// The descriptor and alignment, opening it on first use; `None` when
    /// direct I/O is off for this device.
    pub(crate) fn get(
        &mut self,
        path: &Path,
        writable: bool,
        sector: impl FnOnce() -> Option<u32>,
    ) -> Option<(&File, usize)> {
        if let Direct::Untried = self {
            let sector = sector();
            let flags = nix::fcntl::OFlag::O_DIRECT.bits();
            *self = match OpenOptions::new()
                .read(true)
                .write(writable)
                .custom_flags(flags)
                .open(path)
            {
                Ok(file) => Direct::Open {
                    file,
                    align: DIRECT_ALIGN.max(sector.unwrap_or(0) as usize),
                },
                Err(_) => Direct::Off,
            };
        }
        match self {
            Direct::Open { file, align } => Some((file, *align)),
            _ => None,
        }
    }

    /// The descriptor and how a transfer of `len` bytes at disk offset
    /// `off` from memory address `addr` splits, if any part of it goes
    /// direct (the descriptor is opened on the first such transfer).
    pub(crate) fn part(
        &mut self,
        path: &Path,
        writable: bool,
        sector: impl FnOnce() -> Option<u32>,
        (off, addr, len): (u64, usize, usize),
    ) -> Option<(&File, Split)> {
        if len < DIRECT_MIN {
            return None;
        }
        let (file, align) = self.get(path, writable, sector)?;
        Some((file, split(off, addr, len, align)?))
    }

    /// A direct transfer failed with `err`: if the file system refuses
    /// direct I/O (`EINVAL`), turn it off and let the caller redo the
    /// transfer through the page cache (`Ok`); any other error is the
    /// device's and is returned.
    pub(crate) fn refused(&mut self, err: io::Error) -> io::Result<()> {
        if err.raw_os_error() == Some(nix::libc::EINVAL) {
            *self = Direct::Off;
            Ok(())
        } else {
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned() {
        for cap in [1, 4096, 1 << 20, (1 << 20) + 7] {
            let mut b = AlignedBuf::new(cap);
            b.set_len(cap);
            assert_eq!(b.as_ptr() as usize % DIRECT_ALIGN, 0);
            assert_eq!(b.len(), cap);
            b[cap - 1] = 7;
            b.set_len(0);
            assert!(b.is_empty());
            b.set_len(cap);
            assert_eq!(b[cap - 1], 7, "contents survive a shorter length");
        }
    }

    #[test]
    #[should_panic(expected = "past its capacity")]
    fn length_past_capacity_panics() {
        AlignedBuf::new(16).set_len(17);
    }

    #[test]
    fn splits() {
        let a = 4096;
        let m = DIRECT_MIN;
        // Aligned offset and memory: all direct but a short tail.
        assert_eq!(
            split(a as u64, 0, m + 100, a),
            Some(Split { head: 0, mid: m })
        );
        // An offset 512 bytes before a boundary: a 512-byte head.
        assert_eq!(
            split(3 * 512, 1536, m + 4096, a),
            Some(Split { head: 2560, mid: m })
        );
        // The same with memory that is not aligned where the direct part
        // starts: all through the page cache.
        assert_eq!(split(3 * 512, 512, m + 4096, a), None);
        assert_eq!(
            split(3 * 512, 1536, m + 4096, 512),
            Some(Split {
                head: 0,
                mid: m + 4096
            })
        );
        // Memory not aligned where the direct part starts.
        assert_eq!(split(0, 8, m, a), None);
        // Too small.
        assert_eq!(split(0, 0, m - 1, a), None);
        assert_eq!(split(100, 0, m + 100, a), None);
    }
}
