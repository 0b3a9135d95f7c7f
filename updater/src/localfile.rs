//! The small local files slotctl reads and writes besides the disk: the
//! config, the agent's state (`state_dir/agent.json`), feed files, layout
//! files. Anyone who can write the directory they live in may have put a
//! symlink, a FIFO or a device node there, so:
//!
//! - a read opens with `O_NONBLOCK` (a FIFO never blocks the open), checks
//!   with `fstat` on the open descriptor that it is a regular file, and
//!   reads at most a stated bound (refusing a larger file, /dev/zero can
//!   never be read forever); [`Links::Refuse`] adds `O_NOFOLLOW` (the state
//!   directory's files: a symlink there is refused, never followed);
//! - a write ([`write_atomic`]) goes to a temp file created exclusively
//!   (`O_EXCL`, unpredictable name, `tempfile`) in the same directory, is
//!   fsynced, renamed over the target (which replaces a symlink there,
//!   never writes through it), and the directory is fsynced.
//!
//! Every refusal is a [`FileError`] whose text reads after the file's path:
//! `state /var/lib/slotctl/agent.json: is a FIFO, not a regular file`.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// Whether the last component of a path may be a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow it (the config, which the operator may link into /etc).
    Follow,
    /// Refuse it (`O_NOFOLLOW`): the state directory's files.
    Refuse,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("is a symbolic link, refused (it must be a regular file)")]
    Symlink,
    #[error("is a {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("is larger than {max} bytes, the bound for this file")]
    TooLarge { max: u64 },
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl FileError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// What a file type is, for messages.
pub fn kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "regular file"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Open `path` for reading, only if it is a regular file. Never blocks on
/// a FIFO, and refuses other kinds before opening them where it can (a
/// `stat` first, so a device node is not even opened) and after (an
/// `fstat` of what was opened, so a swap in between is caught too).
pub fn open_regular(path: &Path, links: Links) -> Result<File, FileError> {
    let meta = match links {
        Links::Follow => std::fs::metadata(path)?,
        Links::Refuse => std::fs::symlink_metadata(path)?,
    };
    if meta.file_type().is_symlink() {
        return Err(FileError::Symlink);
    }
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular(kind(meta.file_type())));
    }
    let mut flags = OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    if links == Links::Refuse {
        flags |= OFlag::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) && links == Links::Refuse {
                FileError::Symlink
            } else {
                FileError::Io(e)
            }
        })?;
    let ft = file.metadata()?.file_type();
    if !ft.is_file() {
        return Err(FileError::NotRegular(kind(ft)));
    }
    Ok(file)
}

/// The whole content of the regular file `path`, at most `max` bytes.
pub fn read_bounded(path: &Path, links: Links, max: u64) -> Result<Vec<u8>, FileError> {
    let file = open_regular(path, links)?;
    if file.metadata()?.len() > max {
        return Err(FileError::TooLarge { max });
    }
    let mut buf = Vec::new();
    // The size can change after the fstat: never read more than max + 1.
    file.take(max.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(FileError::TooLarge { max });
    }
    Ok(buf)
}

/// As [`read_bounded`], as UTF-8 text.
pub fn read_bounded_text(path: &Path, links: Links, max: u64) -> Result<String, FileError> {
    let bytes = read_bounded(path, links, max)?;
    String::from_utf8(bytes)
        .map_err(|_| FileError::Io(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8")))
}

/// Write `bytes` to `path` atomically: a temp file created exclusively
/// with an unpredictable name beside it (`.NAME.XXXXXX`, mode `mode` less
/// the umask), fsync, rename over `path`, fsync of the directory. A symlink
/// at `path` is replaced, not written through; a crash leaves the old file
/// or the new one (and at worst a stray temp file).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(&dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read_bounded(&f, Links::Refuse, 5).unwrap(), b"12345");
        assert!(matches!(
            read_bounded(&f, Links::Refuse, 4),
            Err(FileError::TooLarge { max: 4 })
        ));
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert!(matches!(
            read_bounded(&l, Links::Refuse, 9),
            Err(FileError::Symlink)
        ));
        assert_eq!(read_bounded(&l, Links::Follow, 9).unwrap(), b"12345");
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for links in [Links::Refuse, Links::Follow] {
            let e = read_bounded(&fifo, links, 9).unwrap_err();
            assert_eq!(e.to_string(), "is a FIFO, not a regular file");
        }
        let e = read_bounded(Path::new("/dev/zero"), Links::Follow, 9).unwrap_err();
        assert_eq!(e.to_string(), "is a character device, not a regular file");
        let e = read_bounded(d.path(), Links::Follow, 9).unwrap_err();
        assert_eq!(e.to_string(), "is a directory, not a regular file");
        assert!(read_bounded(&d.path().join("none"), Links::Refuse, 9)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn atomic_write_replaces_a_symlink_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let p = d.path().join("state.json");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_atomic(&p, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_file());
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let mut names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["state.json", "victim"]);
    }
}
