//! `BLKRRPART`: ask the kernel to re-read a disk's partition table, the
//! only `unsafe` of the block side.
//!
//! SAFETY (why this is sound): `BLKRRPART` takes no argument (`_IO(0x12,
//! 95)`); the kernel reads and writes no user memory for it. The descriptor
//! is borrowed for the call, so it is open while the kernel uses it.

use std::os::fd::{AsRawFd, BorrowedFd};

// linux/fs.h: #define BLKRRPART _IO(0x12,95)
nix::ioctl_none!(blkrrpart, 0x12, 95);

/// Re-reads the partition table of the disk open on `fd`.
pub(crate) fn reread(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: see the module comment: no argument, a live borrowed fd.
    unsafe { blkrrpart(fd.as_raw_fd()) }.map(drop)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_request_code_is_the_kernels() {
        // 0x125f in linux/fs.h's numbering.
        assert_eq!(nix::request_code_none!(0x12, 95), 0x125f);
    }
}
