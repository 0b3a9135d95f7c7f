//! One updater at a time: an exclusive `flock` on the config's lock file
//! (default `/run/slotctl.lock`). The holder writes its pid into the file so
//! that a second updater can say who holds it. The lock goes away with the
//! process (the kernel drops it on close), so a crash never leaves it stuck.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

use crate::exit;

/// Held for as long as it lives.
pub struct Lock {
    _file: Flock<File>,
    #[allow(dead_code)]
    pub path: PathBuf,
}

/// Take the lock, or fail with exit code 4 ("busy") naming the holder.
pub fn acquire(path: &Path) -> anyhow::Result<Lock> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut f) => {
            f.set_len(0)
                .and_then(|_| f.seek(SeekFrom::Start(0)))
                .and_then(|_| writeln!(f, "{}", std::process::id()))
                .with_context(|| format!("cannot write lock file {}", path.display()))?;
            Ok(Lock {
                _file: f,
                path: path.to_path_buf(),
            })
        }
        Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
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
        acquire(&p).unwrap();
    }
}
