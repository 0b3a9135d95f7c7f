//! Device-mapper through its raw ioctls on `/dev/mapper/control`: create a
//! device, load a read-only dm-verity table, resume it, remove it. The byte
//! layouts follow linux/dm-ioctl.h (interface version 4); they are built
//! here in safe code and handed to [`crate::dm_sys`] as one buffer.
//!
//! Why not the `devicemapper` crate: it builds `devicemapper-sys` with
//! bindgen, which needs libclang and libdevmapper headers at build time and
//! gets in the way of the static boot binary; the four calls slotctl needs
//! are a few dozen lines.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::mem::{offset_of, size_of};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use boot_flags::AlignedBuf;
use nix::sys::stat::{major, makedev, minor, mknod, Mode, SFlag};

use crate::dm_sys::{dm_ioctl, Cmd};
use crate::verity::{OnCorruption, VerityTable};

/// The device-mapper control node (10:236 on devtmpfs).
pub const DM_CONTROL: &str = "/dev/mapper/control";

/// `struct dm_ioctl`, the header of every device-mapper ioctl. Used for its
/// layout (size, field offsets) and as the request code's type; the bytes
/// themselves are written by [`Header`].
#[repr(C)]
pub(crate) struct DmIoctl {
    pub version: [u32; 3],
    pub data_size: u32,
    pub data_start: u32,
    pub target_count: u32,
    pub open_count: i32,
    pub flags: u32,
    pub event_nr: u32,
    pub padding: u32,
    pub dev: u64,
    pub name: [u8; 128],
    pub uuid: [u8; 129],
    pub data: [u8; 7],
}

/// `struct dm_target_spec`, one per target after the header in TABLE_LOAD.
#[repr(C)]
pub(crate) struct DmTargetSpec {
    pub sector_start: u64,
    pub length: u64,
    pub status: i32,
    /// Bytes from the start of this spec to the next one.
    pub next: u32,
    pub target_type: [u8; 16],
}

pub(crate) const DM_IOCTL_SIZE: usize = size_of::<DmIoctl>();
pub(crate) const DM_TARGET_SPEC_SIZE: usize = size_of::<DmTargetSpec>();
/// The interface version slotctl speaks: 4.0.0 (any 4.x kernel accepts it).
pub(crate) const DM_VERSION: [u32; 3] = [4, 0, 0];
pub(crate) const DM_READONLY_FLAG: u32 = 1 << 0;
pub(crate) const DM_SUSPEND_FLAG: u32 = 1 << 1;
const DM_NAME_LEN: usize = 128;

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// A `struct dm_ioctl` for device `name` followed by `payload`, with
/// `data_size` = the whole length and `data_start` = the header's size.
pub(crate) fn build(name: &str, flags: u32, target_count: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; DM_IOCTL_SIZE + payload.len()];
    for (i, v) in DM_VERSION.iter().enumerate() {
        put_u32(&mut buf, offset_of!(DmIoctl, version) + 4 * i, *v);
    }
    let len = buf.len() as u32;
    put_u32(&mut buf, offset_of!(DmIoctl, data_size), len);
    put_u32(
        &mut buf,
        offset_of!(DmIoctl, data_start),
        DM_IOCTL_SIZE as u32,
    );
    put_u32(&mut buf, offset_of!(DmIoctl, target_count), target_count);
    put_u32(&mut buf, offset_of!(DmIoctl, flags), flags);
    let at = offset_of!(DmIoctl, name);
    buf[at..at + name.len()].copy_from_slice(name.as_bytes());
    buf[DM_IOCTL_SIZE..].copy_from_slice(payload);
    buf
}

/// The DM_TABLE_LOAD buffer: header (read-only, one target), one
/// `dm_target_spec` of type `verity` covering the data, and the parameter
/// string NUL-terminated and padded to 8 bytes.
pub(crate) fn table_load_buffer(name: &str, t: &VerityTable, on: OnCorruption) -> Vec<u8> {
    let mut params = t.params_with(on).into_bytes();
    params.push(0);
    params.resize(params.len().next_multiple_of(8), 0);
    let mut spec = vec![0u8; DM_TARGET_SPEC_SIZE];
    put_u64(&mut spec, offset_of!(DmTargetSpec, sector_start), 0);
    put_u64(&mut spec, offset_of!(DmTargetSpec, length), t.sectors());
    let next = (DM_TARGET_SPEC_SIZE + params.len()) as u32;
    put_u32(&mut spec, offset_of!(DmTargetSpec, next), next);
    let at = offset_of!(DmTargetSpec, target_type);
    spec[at..at + 6].copy_from_slice(b"verity");
    spec.extend_from_slice(&params);
    build(name, DM_READONLY_FLAG, 1, &spec)
}

/// The `dev` field of the kernel's answer (a `huge_encode_dev` number).
fn answered_dev(buf: &[u8]) -> u64 {
    let at = offset_of!(DmIoctl, dev);
    u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap())
}

fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty()
        || name.len() >= DM_NAME_LEN
        || name.contains('/')
        || name == "."
        || name == ".."
        || name.bytes().any(|b| !b.is_ascii_graphic())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "device-mapper name {name:?} must be 1 to 127 printable ASCII characters without '/' or spaces"
            ),
        ));
    }
    Ok(())
}

fn ctx(e: impl Into<io::Error>, what: impl std::fmt::Display) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn control() -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(DM_CONTROL)
        .map_err(|e| ctx(e, format!("cannot open {DM_CONTROL} (is dm-mod loaded?)")))
}

fn call(
    control: &File,
    cmd: Cmd,
    mut buf: Vec<u8>,
    what: impl std::fmt::Display,
) -> io::Result<Vec<u8>> {
    dm_ioctl(control.as_fd(), cmd, &mut buf).map_err(|e| ctx(e, what))?;
    Ok(buf)
}

fn load(control: &File, name: &str, t: &VerityTable, on: OnCorruption) -> io::Result<()> {
    call(
        control,
        Cmd::TableLoad,
        table_load_buffer(name, t, on),
        format_args!("device-mapper {name}: the kernel refused the verity table (see its log)"),
    )
    .map(drop)
}

fn suspend(control: &File, name: &str, suspend: bool) -> io::Result<()> {
    let (flags, verb) = if suspend {
        (DM_SUSPEND_FLAG, "suspend")
    } else {
        (0, "resume")
    };
    call(
        control,
        Cmd::DevSuspend,
        build(name, flags, 0, &[]),
        format_args!("device-mapper {name}: {verb}"),
    )
    .map(drop)
}

/// `/dev/dm-N` for the device, created with mknod when devtmpfs has not.
fn node(dev: u64) -> io::Result<PathBuf> {
    let (maj, min) = (major(dev), minor(dev));
    let path = PathBuf::from(format!("/dev/dm-{min}"));
    match std::fs::metadata(&path) {
        Ok(m) if m.file_type().is_block_device() && m.rdev() == makedev(maj, min) => Ok(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists but is not block device {maj}:{min}",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            mknod(
                &path,
                SFlag::S_IFBLK,
                Mode::from_bits_truncate(0o600),
                makedev(maj, min),
            )
            .map_err(|e| ctx(e, format_args!("mknod {} ({maj}:{min})", path.display())))?;
            Ok(path)
        }
        Err(e) => Err(ctx(e, path.display())),
    }
}

/// Reads the first data block through the device, bypassing the page
/// cache: dm-verity checks it and its hash blocks up to the root hash.
fn read_first_block(dev: &Path, block_size: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)?;
    let mut buf = AlignedBuf::new(block_size as usize);
    buf.set_len(block_size as usize);
    f.read_exact(&mut buf)
}

/// Opens `t` as the read-only dm-verity device `name` and returns its node
/// (`/dev/dm-N`).
///
/// The table is first loaded without a corruption option and the first
/// data block read through the device: a wrong root hash (or a corrupted
/// first block or hash path) fails that read with `EIO`, and the device is
/// removed again and an error returned, without a restart or panic. Then,
/// when `t.on_corruption` asks for it, the table with the option is loaded
/// and swapped in (suspend, resume).
pub fn open_verity(name: &str, t: &VerityTable) -> io::Result<PathBuf> {
    check_name(name)?;
    t.validate()?;
    let control = control()?;
    let created = call(
        &control,
        Cmd::DevCreate,
        build(name, 0, 0, &[]),
        format_args!("device-mapper {name}: create"),
    )?;
    let dev = answered_dev(&created);
    let opened = (|| {
        load(&control, name, t, OnCorruption::Eio)?;
        suspend(&control, name, false)?;
        let path = node(dev)?;
        read_first_block(&path, t.data_block_size).map_err(|e| {
            ctx(
                e,
                format_args!(
                    "verity {name}: the first block of {} does not verify against root hash {} \
                     (wrong root hash, or corrupted data or hash tree)",
                    t.data_dev.display(),
                    t.root_hex
                ),
            )
        })?;
        if t.on_corruption != OnCorruption::Eio {
            load(&control, name, t, t.on_corruption)?;
            suspend(&control, name, true)?;
            suspend(&control, name, false)?;
        }
        Ok(path)
    })();
    if opened.is_err() {
        // Best effort: the first error is the one worth reporting.
        let _ = dev_remove(&control, name);
    }
    opened
}

/// Removes the device-mapper device `name` (it must not be in use).
pub fn remove(name: &str) -> io::Result<()> {
    check_name(name)?;
    dev_remove(&control()?, name)
}

/// DM_DEV_REMOVE of `name` on an open control device.
fn dev_remove(control: &File, name: &str) -> io::Result<()> {
    call(
        control,
        Cmd::DevRemove,
        build(name, 0, 0, &[]),
        format_args!("device-mapper {name}: remove"),
    )
    .map(drop)
}

#[cfg(test)]
mod tests;
