//! bootchain: the boot-time pieces of slotctl's verified boot chain.
//!
//! - [`VerityTable`] and [`open_verity`]: a read-only dm-verity device over
//!   a slot partition, opened with three raw device-mapper ioctls on
//!   `/dev/mapper/control` (no libdevmapper, no cryptsetup, no udev). A wrong
//!   root hash is refused at once: the first data block is read through the
//!   new device before the corruption option (`restart_on_corruption`,
//!   `panic_on_corruption`) is switched on, so the caller gets an error
//!   instead of a restart loop.
//! - [`kexec_load`] and [`kexec_reboot`]: load a kernel (and initramfs) with
//!   `kexec_file_load`, the kexec call lockdown and Secure Boot allow, and
//!   jump into it.
//!
//! Everything here needs root and a Linux kernel with device-mapper,
//! dm-verity and `KEXEC_FILE`; the unit tests check the byte layouts on any
//! host, the QEMU guest checks the calls (docs/architecture.md, "bootchain").
//!
//! The only `unsafe` is in three small modules: the device-mapper ioctls,
//! `BLKRRPART` and the `kexec_file_load` system call. Each says why it is
//! sound.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod blk_sys;
mod dm;
#[allow(unsafe_code)]
mod dm_sys;
mod kexec;
#[allow(unsafe_code)]
mod kexec_sys;
mod verity;

pub use dm::{open_verity, remove, DM_CONTROL};
pub use kexec::{kexec_load, kexec_reboot};
pub use verity::{OnCorruption, VerityTable};

/// Re-reads the partition table of `disk` (the `BLKRRPART` ioctl, what
/// `blockdev --rereadpt` does): after boot-select repaired a primary GPT the
/// kernel had found bad, the partition nodes appear only then.
pub fn reread_partitions(disk: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let f = std::fs::File::open(disk)?;
    blk_sys::reread(f.as_fd()).map_err(std::io::Error::from)
}
