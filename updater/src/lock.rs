//! One updater at a time: an exclusive `flock` on the config's lock file
//! (default `/run/slotctl.lock`). The lock goes away with the process (the
//! kernel drops it on close), so a crash never leaves it stuck.
//!
//! The lock file is opened without following a symlink and without ever
//! truncating or creating anything but the lock file itself: when it is
//! absent it is created exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode
//! 0644); when it exists it must be a regular file (`O_NOFOLLOW|O_NONBLOCK`,
//! then `fstat`): a symlink, FIFO, device, socket or directory there is
//! refused in one line, so a symlink in `/run` cannot make an install
//! overwrite another file.
//!
//! The holder writes its pid into the file so that a second updater can say
//! who holds it, but only into a file that is evidently a lock file: one it
//! just created, or an existing one with a single link, owned by this user,
//! that is empty or holds nothing but a pid. Any other regular file (say,
//! a config that names an existing file as `lock_file`) is locked as it is
//! and its content left untouched; a second updater then reports
//! "unknown pid".

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg, OFlag};

use crate::exit;
use crate::localfile::{kind, FileError};

/// An existing lock file holding more than this is not a pid file.
const MAX_PID_FILE: u64 = 32;

/// Held for as long as it lives.
pub struct Lock {
    _file: Flock<File>,
    #[allow(dead_code)]
    pub path: PathBuf,
}

/// Open the lock file: (file, created by us).
fn open_lock(path: &Path) -> Result<(File, bool), FileError> {
    // A few rounds only for the race "existed, then removed before we
    // opened it".
    let mut last = None;
    for _ in 0..3 {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(path)
        {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(FileError::Io(e)),
        }
        // It exists (O_EXCL also says so for a symlink, even a dangling
        // one): refuse anything but a regular file before opening it.
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(FileError::Io(e)),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Err(FileError::Symlink);
        }
        if !ft.is_file() {
            return Err(FileError::NotRegular(kind(ft)));
        }
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Err(FileError::Symlink),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(FileError::Io(e)),
        };
        // What was opened, not what the name pointed at a moment ago.
        let ft = file.metadata()?.file_type();
        if !ft.is_file() {
            return Err(FileError::NotRegular(kind(ft)));
        }
        return Ok((file, false));
    }
    Err(FileError::Io(last.unwrap_or_else(|| {
        std::io::Error::other("the lock file keeps disappearing")
    })))
}

/// True when the existing file `f` (locked by us) may take our pid: one
/// link, our owner, and empty or holding only a pid.
fn is_pid_file(f: &mut File) -> std::io::Result<bool> {
    let meta = f.metadata()?;
    if meta.nlink() != 1 || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Ok(false);
    }
    if meta.len() > MAX_PID_FILE {
        return Ok(false);
    }
    let mut s = String::new();
    f.seek(SeekFrom::Start(0))?;
    if f.take(MAX_PID_FILE).read_to_string(&mut s).is_err() {
        return Ok(false);
    }
    let t = s.trim();
    Ok(t.is_empty() || t.bytes().all(|b| b.is_ascii_digit()))
}

/// Take the lock, or fail with exit code 4 ("busy") naming the holder.
/// A lock path that is not a regular file is an error (exit 1).
pub fn acquire(path: &Path) -> anyhow::Result<Lock> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    let (file, created) = open_lock(path).map_err(|e| match e {
        FileError::Io(e) => {
            anyhow::anyhow!("cannot open lock file {}: {e}", path.display())
        }
        e => anyhow::anyhow!("lock file {}: {e}", path.display()),
    })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut f) => {
            let writable = created
                || is_pid_file(&mut f)
                    .with_context(|| format!("cannot read lock file {}", path.display()))?;
            if writable {
                f.set_len(0)
                    .and_then(|_| f.seek(SeekFrom::Start(0)))
                    .and_then(|_| writeln!(f, "{}", std::process::id()))
                    .with_context(|| format!("cannot write lock file {}", path.display()))?;
            }
            Ok(Lock {
                _file: f,
                path: path.to_path_buf(),
            })
        }
        Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut s = String::new();
            let _ = (&f).take(MAX_PID_FILE).read_to_string(&mut s);
            let who = match s.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "unknown pid".to_string(),
            };
            Err(exit::busy(format!(
                "busy: another slotctl ({who}) holds {}",
                path.display()
            )))
        }
        Err((_, e)) => {
            Err(anyhow::Error::new(e).context(format!("cannot lock {}", path.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/l.lock");
        let held = acquire(&p).unwrap();
        let err = acquire(&p).err().unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.starts_with("busy:"),
            "{msg}"
        );
        drop(held);
        // The file stays; taking it again rewrites the pid in place.
        acquire(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
    }

    #[test]
    fn foreign_content_is_locked_but_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.lock");
        std::fs::write(&p, "not a pid\n").unwrap();
        let held = acquire(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "not a pid\n");
        let msg = format!("{:#}", acquire(&p).err().unwrap());
        assert!(msg.contains("unknown pid"), "{msg}");
        drop(held);
        // A second hard link: not evidently ours either.
        std::fs::write(&p, "").unwrap();
        std::fs::hard_link(&p, dir.path().join("other")).unwrap();
        let _held = acquire(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
    }

    #[test]
    fn not_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("link.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let msg = format!("{:#}", acquire(&link).err().unwrap());
        assert!(msg.contains("symbolic link"), "{msg}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let dangling = dir.path().join("dangling.lock");
        std::os::unix::fs::symlink(dir.path().join("absent"), &dangling).unwrap();
        let msg = format!("{:#}", acquire(&dangling).err().unwrap());
        assert!(msg.contains("symbolic link"), "{msg}");
        assert!(!dir.path().join("absent").exists());
        let msg = format!("{:#}", acquire(dir.path()).err().unwrap());
        assert!(msg.contains("is a directory"), "{msg}");
        let fifo = dir.path().join("fifo.lock");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let msg = format!("{:#}", acquire(&fifo).err().unwrap());
        assert!(msg.contains("is a FIFO"), "{msg}");
    }
}
