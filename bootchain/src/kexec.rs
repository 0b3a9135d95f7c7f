//! Loading and starting another kernel with `kexec_file_load`: the kernel
//! reads the image itself (and checks its signature where the machine
//! asks), which is why lockdown and Secure Boot allow it and the older
//! `kexec_load` not. No kexec-tools needed.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sys::reboot::{reboot, RebootMode};

use crate::kexec_sys;

/// x86's `COMMAND_LINE_SIZE`, the NUL included.
const COMMAND_LINE_SIZE: usize = 2048;

fn open(what: &str, p: &Path) -> io::Result<File> {
    File::open(p).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("kexec: cannot open {what} {}: {e}", p.display()),
        )
    })
}

/// Loads `kernel` (a bzImage), `initrd` if given, and `cmdline` as the
/// kernel to start on [`kexec_reboot`]. Replaces a kernel loaded before.
pub fn kexec_load(kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> io::Result<()> {
    let cmd = CString::new(cmdline).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "kexec: the command line contains a NUL byte",
        )
    })?;
    if cmd.as_bytes_with_nul().len() > COMMAND_LINE_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "kexec: the command line is {} bytes, more than {}",
                cmdline.len(),
                COMMAND_LINE_SIZE - 1
            ),
        ));
    }
    let k = open("kernel", kernel)?;
    let i = initrd.map(|p| open("initramfs", p)).transpose()?;
    let flags = if i.is_none() {
        libc::KEXEC_FILE_NO_INITRAMFS as libc::c_ulong
    } else {
        0
    };
    kexec_sys::kexec_file_load(k.as_fd(), i.as_ref().map(|f| f.as_fd()), &cmd, flags).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::ENOEXEC) => " (not a kernel image this kernel can load)",
            Some(libc::EKEYREJECTED) => " (signature rejected)",
            Some(libc::EPERM) => " (needs CAP_SYS_BOOT; kexec may be disabled)",
            _ => "",
        };
        io::Error::new(
            e.kind(),
            format!("kexec_file_load {}: {e}{why}", kernel.display()),
        )
    })
}

/// Syncs the file systems and starts the kernel loaded by [`kexec_load`].
/// Returns only on failure (e.g. `EINVAL` when nothing is loaded).
pub fn kexec_reboot() -> io::Result<Infallible> {
    nix::unistd::sync();
    reboot(RebootMode::RB_KEXEC).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("reboot into the loaded kernel (kexec): {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_cmdline_refused_before_the_call() {
        let e = kexec_load(Path::new("/nonexistent"), None, "a\0b").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("NUL"), "{e}");
        let e = kexec_load(Path::new("/nonexistent"), None, &"x".repeat(2048)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("2048 bytes"), "{e}");
    }

    #[test]
    fn missing_files_named() {
        let e = kexec_load(Path::new("/nonexistent/vmlinuz"), None, "console=ttyS0").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string()
                .contains("kexec: cannot open kernel /nonexistent/vmlinuz"),
            "{e}"
        );
        let e = kexec_load(
            Path::new("/proc/self/exe"),
            Some(Path::new("/nonexistent/initrd")),
            "",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("initramfs /nonexistent/initrd"),
            "{e}"
        );
    }
}
