//! `kexec_file_load(2)`, the only `unsafe` of the kexec side (libc has no
//! wrapper; the system call is made directly).
//!
//! SAFETY (why this is sound): the kernel reads the two files through their
//! descriptors, which the `BorrowedFd`s keep open for the call, and reads
//! exactly `cmdline_len` bytes from `cmdline_ptr`, which come from a live
//! `&CStr` whose length including its NUL is what is passed. Nothing is
//! written to user memory.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

pub(crate) fn kexec_file_load(
    kernel: BorrowedFd<'_>,
    initrd: Option<BorrowedFd<'_>>,
    cmdline: &CStr,
    flags: libc::c_ulong,
) -> io::Result<()> {
    let kernel_fd = libc::c_long::from(kernel.as_raw_fd());
    let initrd_fd = libc::c_long::from(initrd.map_or(-1, |f| f.as_raw_fd()));
    let len = cmdline.to_bytes_with_nul().len() as libc::c_ulong;
    // SAFETY: see the module comment; every argument is a plain integer or
    // a pointer to `len` readable bytes that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel_fd,
            initrd_fd,
            len,
            cmdline.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
