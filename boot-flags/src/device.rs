//! The one door to the disk: [`BlockDevice`], and [`FileDevice`] for image
//! files and block device nodes alike.
//!
//! Everything that reads or writes a disk goes through `&mut dyn BlockDevice`
//! (or a generic `D: BlockDevice`), so a test can put a recording or
//! power-cut-simulating device underneath any operation.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::direct::{Direct, DirectReader, Split};

/// Byte-addressed access to a disk, with a durability barrier.
///
/// Implementations must make [`flush`](BlockDevice::flush) a real barrier:
/// when it returns, every write before it is durable.
#[allow(clippy::len_without_is_empty)]
pub trait BlockDevice {
    /// Size of the device in bytes.
    fn len(&mut self) -> io::Result<u64>;
    /// Fill `buf` from byte offset `off`; a short read is an error.
    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Write all of `buf` at byte offset `off`.
    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()>;
    /// Durable barrier (`fsync`): every earlier write is on the medium.
    fn flush(&mut self) -> io::Result<()>;
    /// The logical sector size the device reports, if it has one (block
    /// devices do; image files do not, and the GPT reader then detects it).
    fn logical_sector_size(&mut self) -> io::Result<Option<u32>> {
        Ok(None)
    }
    /// Make sure a later read of `off..off+len` comes from the medium, not
    /// from a cache (used to verify what was written).
    fn drop_cache(&mut self, _off: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// A handle that reads from the medium directly, from another thread,
    /// while this device is written; `None` (the default) where there is
    /// none (memory, simulated devices, file systems without direct I/O).
    fn direct_reader(&mut self) -> Option<DirectReader> {
        None
    }
    /// Make `off..off+len` read as zeros without sending the zeros: the
    /// device's own zeroing (a block device's write-zeroes, a file
    /// system's zeroed extents). `Ok(true)` when done: like a write, not
    /// durable before [`flush`](BlockDevice::flush). `Ok(false)` (the
    /// default) where there is no such command: the caller writes the
    /// zeros itself.
    fn write_zeroes(&mut self, _off: u64, _len: u64) -> io::Result<bool> {
        Ok(false)
    }
}

/// A reference or a box of a device is a device.
macro_rules! forward_block_device {
    ($($ty:ty),*) => {$(
        impl<T: BlockDevice + ?Sized> BlockDevice for $ty {
            fn len(&mut self) -> io::Result<u64> {
                (**self).len()
            }
            fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
                (**self).read_exact_at(off, buf)
            }
            fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
                (**self).write_all_at(off, buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                (**self).flush()
            }
            fn logical_sector_size(&mut self) -> io::Result<Option<u32>> {
                (**self).logical_sector_size()
            }
            fn drop_cache(&mut self, off: u64, len: u64) -> io::Result<()> {
                (**self).drop_cache(off, len)
            }
            fn direct_reader(&mut self) -> Option<DirectReader> {
                (**self).direct_reader()
            }
            fn write_zeroes(&mut self, off: u64, len: u64) -> io::Result<bool> {
                (**self).write_zeroes(off, len)
            }
        }
    )*};
}

forward_block_device!(&mut T, Box<T>);

/// A disk image file or a block device node.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
    /// `Some(rdev)` for a block device node.
    rdev: Option<u64>,
    writable: bool,
    /// The `O_DIRECT` descriptor for large aligned transfers (direct.rs).
    direct: Direct,
    /// `fallocate(FALLOC_FL_ZERO_RANGE)` is not supported here (a kernel or
    /// file system without it): [`BlockDevice::write_zeroes`] no longer tries.
    no_zero_range: bool,
}

impl FileDevice {
    /// Open `path` read-only or read-write. Regular files and block devices
    /// are accepted; anything else (a directory, a character device) is an
    /// `InvalidInput` error.
    pub fn open(path: impl AsRef<Path>, writable: bool) -> io::Result<FileDevice> {
        let path = path.as_ref();
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        let meta = file.metadata()?;
        let ft = meta.file_type();
        let rdev = if ft.is_block_device() {
            Some(meta.rdev())
        } else if ft.is_file() {
            None
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            ));
        };
        Ok(FileDevice {
            file,
            path: path.to_path_buf(),
            rdev,
            writable,
            direct: Direct::Untried,
            no_zero_range: false,
        })
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for a block device node, false for a regular file.
    pub fn is_block_device(&self) -> bool {
        self.rdev.is_some()
    }

    /// The device number (`st_rdev`) of a block device node.
    pub fn rdev(&self) -> Option<u64> {
        self.rdev
    }
}

/// Read a block device's logical sector size from sysfs (no ioctl). A
/// partition's directory has no `queue/`: its parent disk's is used.
fn sysfs_logical_block_size(rdev: u64) -> io::Result<u32> {
    let major = nix::sys::stat::major(rdev);
    let minor = nix::sys::stat::minor(rdev);
    let base = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let candidates = [
        base.join("queue/logical_block_size"),
        base.join("../queue/logical_block_size"),
    ];
    for c in &candidates {
        if let Ok(text) = std::fs::read_to_string(c) {
            return text.trim().parse::<u32>().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a number: {:?}", c.display(), text.trim()),
                )
            });
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no logical_block_size under {}", base.display()),
    ))
}

impl BlockDevice for FileDevice {
    fn len(&mut self) -> io::Result<u64> {
        if self.rdev.is_some() {
            self.file.seek(SeekFrom::End(0))
        } else {
            Ok(self.file.metadata()?.len())
        }
    }

    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = (off, buf.as_ptr() as usize, buf.len());
        let sector = || self.rdev.and_then(|r| sysfs_logical_block_size(r).ok());
        if let Some((file, Split { head, mid })) =
            self.direct.part(&self.path, self.writable, sector, at)
        {
            let (front, rest) = buf.split_at_mut(head);
            let (middle, tail) = rest.split_at_mut(mid);
            let mid_off = off + head as u64;
            match file.read_exact_at(middle, mid_off) {
                Ok(()) => {
                    self.file.read_exact_at(front, off)?;
                    return self.file.read_exact_at(tail, mid_off + mid as u64);
                }
                Err(e) => self.direct.refused(e)?,
            }
        }
        FileExt::read_exact_at(&self.file, buf, off)
    }

    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        let at = (off, buf.as_ptr() as usize, buf.len());
        let sector = || self.rdev.and_then(|r| sysfs_logical_block_size(r).ok());
        if let Some((file, Split { head, mid })) =
            self.direct.part(&self.path, self.writable, sector, at)
        {
            let (front, rest) = buf.split_at(head);
            let (middle, tail) = rest.split_at(mid);
            let mid_off = off + head as u64;
            match file.write_all_at(middle, mid_off) {
                Ok(()) => {
                    self.file.write_all_at(front, off)?;
                    return self.file.write_all_at(tail, mid_off + mid as u64);
                }
                Err(e) => self.direct.refused(e)?,
            }
        }
        FileExt::write_all_at(&self.file, buf, off)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn logical_sector_size(&mut self) -> io::Result<Option<u32>> {
        match self.rdev {
            // Without sysfs (an initramfs that did not mount it) the GPT
            // reader detects the sector size from the table itself.
            Some(rdev) => match sysfs_logical_block_size(rdev) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                other => other.map(Some),
            },
            None => Ok(None),
        }
    }

    fn drop_cache(&mut self, off: u64, len: u64) -> io::Result<()> {
        self.file.sync_all()?;
        let off = i64::try_from(off).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        nix::fcntl::posix_fadvise(
            self.file.as_raw_fd(),
            off,
            len,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .map_err(io::Error::from)
    }

    fn direct_reader(&mut self) -> Option<DirectReader> {
        let sector = || self.rdev.and_then(|r| sysfs_logical_block_size(r).ok());
        let (file, align) = self.direct.get(&self.path, self.writable, sector)?;
        Some(DirectReader::new(file.try_clone().ok()?, align))
    }

    /// `fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)`. On a block
    /// device the kernel sends the device's write-zeroes command, or writes
    /// its own zero page where the device has none (`blkdev_issue_zeroout`,
    /// never a discard: the range is allocated and reads as zeros), and
    /// drops the range from the page cache; on a disk image file, ext4 and
    /// XFS mark the extents zeroed. Either way no zeros cross from user
    /// space, and `fsync` makes the result durable like a write's. A kernel
    /// or file system that refuses the call (tmpfs, an old kernel, a
    /// range it will not take) gets the zeros written instead.
    fn write_zeroes(&mut self, off: u64, len: u64) -> io::Result<bool> {
        use nix::errno::Errno;
        use nix::fcntl::FallocateFlags as F;
        if self.no_zero_range || !self.writable {
            return Ok(false);
        }
        let (Ok(o), Ok(l)) = (i64::try_from(off), i64::try_from(len)) else {
            return Ok(false);
        };
        let mode = F::FALLOC_FL_ZERO_RANGE | F::FALLOC_FL_KEEP_SIZE;
        match nix::fcntl::fallocate(self.file.as_raw_fd(), mode, o, l) {
            Ok(()) => Ok(true),
            // No such call here at all: stop asking.
            Err(Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::ENODEV | Errno::ENOTTY) => {
                self.no_zero_range = true;
                Ok(false)
            }
            // Not this range (not whole sectors, past the end), not now
            // (the page cache could not be dropped), not this file.
            Err(Errno::EINVAL | Errno::EBUSY | Errno::EPERM) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// An in-memory disk, for tests and for building images in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemDevice {
    /// The disk's bytes.
    pub data: Vec<u8>,
    /// What [`BlockDevice::logical_sector_size`] reports.
    pub sector_size: Option<u32>,
}

impl MemDevice {
    /// A zero-filled disk of `len` bytes.
    pub fn new(len: usize) -> MemDevice {
        MemDevice {
            data: vec![0; len],
            sector_size: None,
        }
    }

    fn range(&self, off: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        let start =
            usize::try_from(off).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        Ok(start..end)
    }
}

impl BlockDevice for MemDevice {
    fn len(&mut self) -> io::Result<u64> {
        Ok(self.data.len() as u64)
    }
    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.range(off, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        let r = self.range(off, buf.len())?;
        self.data[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn logical_sector_size(&mut self) -> io::Result<Option<u32>> {
        Ok(self.sector_size)
    }
}
