//! The four device-mapper ioctls, the only `unsafe` of the dm side.
//!
//! SAFETY (why this is sound): every call passes a byte buffer that the
//! caller built with [`crate::dm`]'s builder; [`dm_ioctl`] checks that it
//! is at least one `struct dm_ioctl` long and that its `data_size` field
//! equals the buffer's length. The kernel copies at most `data_size` bytes
//! in from that address and writes at most `data_size` bytes back (when the
//! answer is larger it sets `DM_BUFFER_FULL_FLAG` instead), so it never
//! touches memory outside the buffer, which the `&mut` borrow keeps alive
//! and unaliased for the whole call. The pointer is cast to `*mut DmIoctl`
//! only to give the request code its size; Rust never dereferences it, and
//! the kernel copies with `copy_from_user`, which has no alignment rule.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::dm::{DmIoctl, DM_IOCTL_SIZE};

const DM_IOCTL: u8 = 0xfd;

/// The device-mapper commands slotctl uses (`enum` in linux/dm-ioctl.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmd {
    DevCreate = 3,
    DevRemove = 4,
    DevSuspend = 6,
    TableLoad = 9,
}

impl Cmd {
    /// `_IOWR(DM_IOCTL, cmd, struct dm_ioctl)`, the request code the call uses.
    pub(crate) const fn request_code(self) -> u32 {
        nix::request_code_readwrite!(DM_IOCTL, self as u8, std::mem::size_of::<DmIoctl>()) as u32
    }
}

// The wrappers take the request codes above (tested against the kernel's
// numbers), not their own computation of them.
nix::ioctl_readwrite_bad!(dm_dev_create, Cmd::DevCreate.request_code(), DmIoctl);
nix::ioctl_readwrite_bad!(dm_dev_remove, Cmd::DevRemove.request_code(), DmIoctl);
nix::ioctl_readwrite_bad!(dm_dev_suspend, Cmd::DevSuspend.request_code(), DmIoctl);
nix::ioctl_readwrite_bad!(dm_table_load, Cmd::TableLoad.request_code(), DmIoctl);

/// Runs `cmd` on the control device with `buf` as the `struct dm_ioctl`
/// (and what follows it); the kernel's answer is left in `buf`.
pub(crate) fn dm_ioctl(control: BorrowedFd<'_>, cmd: Cmd, buf: &mut [u8]) -> nix::Result<()> {
    assert!(
        buf.len() >= DM_IOCTL_SIZE,
        "dm ioctl buffer shorter than struct dm_ioctl"
    );
    let data_size = u32::from_ne_bytes(buf[12..16].try_into().unwrap());
    assert_eq!(
        data_size as usize,
        buf.len(),
        "dm ioctl data_size is not the buffer length"
    );
    let fd = control.as_raw_fd();
    let p = buf.as_mut_ptr().cast::<DmIoctl>();
    // SAFETY: see the module comment: the kernel stays within `buf`
    // (data_size == buf.len(), checked above), `buf` is borrowed mutably
    // for the call, and `fd` is a live descriptor borrowed for the call.
    unsafe {
        match cmd {
            Cmd::DevCreate => dm_dev_create(fd, p),
            Cmd::DevRemove => dm_dev_remove(fd, p),
            Cmd::DevSuspend => dm_dev_suspend(fd, p),
            Cmd::TableLoad => dm_table_load(fd, p),
        }
    }
    .map(drop)
}
