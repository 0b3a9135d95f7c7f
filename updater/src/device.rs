//! Which disk to work on, and which slot is booted.
//!
//! The disk is `--disk`, else the config's `disk`, else the disk holding the
//! booted root filesystem, found through sysfs: `stat("/")` gives the root's
//! device number; `/sys/dev/block/MAJ:MIN` is its partition (its `partition`
//! file holds the number, its parent directory is the disk). A root on a
//! device-mapper or other stacked device with exactly one underlying device
//! (`slaves/`) is followed down to that partition.
//!
//! The booted slot is the slot owning the root's partition when the disk
//! worked on is the root's disk; `--booted` overrides. An image file never
//! has a detected booted slot.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use boot_flags::{Disk, FileDevice, SlotId};

use crate::cli::Globals;
use crate::config::Config;

/// Where the root filesystem lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootLocation {
    /// Kernel name of the disk, e.g. `vda`, `nvme0n1`.
    pub disk_name: String,
    /// The disk's device number (`MAJ:MIN`).
    pub disk_dev: (u64, u64),
    /// The root partition's number on that disk.
    pub partition: u32,
}

impl RootLocation {
    /// `/dev/<disk name>`.
    pub fn disk_node(&self) -> PathBuf {
        PathBuf::from("/dev").join(&self.disk_name)
    }
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn parse_dev(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Follow a sysfs block directory to a partition: the directory itself if
/// it is one, else its single underlying device (dm, md with one leg).
fn partition_of(dir: &Path, depth: u32) -> Result<RootLocation, String> {
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some(num) = read_trim(&dir.join("partition")) {
        let partition = num
            .parse()
            .map_err(|_| format!("{}/partition: not a number", dir.display()))?;
        let parent = dir
            .parent()
            .ok_or_else(|| format!("{} has no parent disk", dir.display()))?;
        let disk_name = parent
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: bad disk name", parent.display()))?
            .to_string();
        let disk_dev = read_trim(&parent.join("dev"))
            .and_then(|s| parse_dev(&s))
            .ok_or_else(|| format!("{}/dev unreadable", parent.display()))?;
        return Ok(RootLocation {
            disk_name,
            disk_dev,
            partition,
        });
    }
    let slaves: Vec<PathBuf> = std::fs::read_dir(dir.join("slaves"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    match (slaves.as_slice(), depth) {
        ([one], d) if d < 4 => partition_of(one, d + 1),
        _ => Err(format!(
            "{} is not a partition and not stacked on exactly one",
            dir.display()
        )),
    }
}

/// Find the partition and disk holding `/`.
pub fn root_location() -> Result<RootLocation, String> {
    let meta = std::fs::metadata("/").map_err(|e| format!("stat /: {e}"))?;
    let dev = meta.dev();
    let (maj, min) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let dir = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    if !dir.exists() {
        return Err(format!("/ is not on a block device (device {maj}:{min})"));
    }
    partition_of(&dir, 0)
}

/// The device node of partition `index` of the disk node `disk`:
/// `/dev/vda` -> `/dev/vda3`; names ending in a digit (`nvme0n1`,
/// `mmcblk0`, `loop0`) take a `p`: `/dev/nvme0n1p3`.
pub fn partition_node(disk: &Path, index: u32) -> PathBuf {
    let s = disk.as_os_str().to_string_lossy();
    let sep = if s.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    PathBuf::from(format!("{s}{sep}{index}"))
}

/// How the booted slot was determined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootedSource {
    /// `--booted`.
    Option,
    /// From the root filesystem's partition.
    Detected,
    /// Not known (an image file, or the root is elsewhere).
    Unknown,
}

/// An opened disk with its slots and booted slot.
pub struct Opened {
    /// The path worked on.
    pub path: PathBuf,
    /// True for a block device (partitions have device nodes).
    pub is_block: bool,
    /// The disk.
    pub disk: Disk<FileDevice>,
    /// Where `disk.booted()` came from.
    pub booted_source: BootedSource,
}

impl Opened {
    /// Where partition `index` is read: its device node on a block device,
    /// the disk image file itself otherwise (with the partition's offset).
    pub fn partition_path(&self, index: u32) -> PathBuf {
        if self.is_block {
            partition_node(&self.path, index)
        } else {
            self.path.clone()
        }
    }
}

/// The disk path from `--disk`, the config, or the booted root.
pub fn disk_path(globals: &Globals, config: &Config) -> anyhow::Result<PathBuf> {
    if let Some(p) = config.disk_path(globals) {
        return Ok(p);
    }
    root_location()
        .map(|r| r.disk_node())
        .map_err(|why| anyhow!("cannot find the disk of the booted root ({why}): pass --disk PATH"))
}

/// Parse a slot name given by the user.
pub fn parse_slot(s: &str) -> anyhow::Result<SlotId> {
    s.parse::<SlotId>()
        .map_err(|_| anyhow!("no slot {s:?} on an A/B disk (slots are A and B)"))
}

/// Open the disk (read-only unless `writable`), discover its slots and the
/// booted slot. Opened `writable`, a disk whose partition table cannot be
/// written safely (`Disk::check_writable`) is refused here, in one line,
/// before anything is written: every command that writes (install, the
/// state commands, repair, the agent, boot-check) goes through this.
pub fn open(globals: &Globals, config: &Config, writable: bool) -> anyhow::Result<Opened> {
    let o = open_unchecked(globals, config, writable)?;
    if writable {
        o.disk.check_writable().map_err(|e| {
            anyhow!(
                "{}: the partition table cannot be written safely, so nothing is written \
                 (boot-select still boots from it as it is): {e}",
                o.path.display()
            )
        })?;
    }
    Ok(o)
}

/// [`open`] without the writability check: for `boot-select`, which boots
/// from a table it cannot write as it is (`Disk::boot_select`).
pub fn open_unchecked(
    globals: &Globals,
    config: &Config,
    writable: bool,
) -> anyhow::Result<Opened> {
    let path = disk_path(globals, config)?;
    let dev = FileDevice::open(&path, writable)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let is_block = dev.is_block_device();
    let rdev = dev.rdev();
    let mut disk = Disk::open(dev, config.flags_role.as_deref())
        .with_context(|| path.display().to_string())?;
    let (booted, booted_source) = match &globals.booted {
        Some(s) => (Some(parse_slot(s)?), BootedSource::Option),
        None => match (rdev, root_location()) {
            (Some(rdev), Ok(root))
                if (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)) == root.disk_dev =>
            {
                match disk.layout().slot_of_partition(root.partition) {
                    Some(s) => (Some(s), BootedSource::Detected),
                    None => (None, BootedSource::Unknown),
                }
            }
            _ => (None, BootedSource::Unknown),
        },
    };
    disk.set_booted(booted);
    Ok(Opened {
        path,
        is_block,
        disk,
        booted_source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_nodes() {
        let n = |d: &str, i| partition_node(Path::new(d), i).display().to_string();
        assert_eq!(n("/dev/vda", 4), "/dev/vda4");
        assert_eq!(n("/dev/sda", 12), "/dev/sda12");
        assert_eq!(n("/dev/nvme0n1", 2), "/dev/nvme0n1p2");
        assert_eq!(n("/dev/mmcblk0", 1), "/dev/mmcblk0p1");
        assert_eq!(n("/dev/loop7", 3), "/dev/loop7p3");
    }

    /// A fake sysfs: `vda` with partition 3, and `dm-0` stacked on it.
    #[test]
    fn follows_partition_and_stacked_device() {
        let t = tempfile::tempdir().unwrap();
        let vda = t.path().join("devices/vda");
        std::fs::create_dir_all(vda.join("vda3")).unwrap();
        std::fs::write(vda.join("dev"), "254:0\n").unwrap();
        std::fs::write(vda.join("vda3/partition"), "3\n").unwrap();
        let want = RootLocation {
            disk_name: "vda".into(),
            disk_dev: (254, 0),
            partition: 3,
        };
        assert_eq!(partition_of(&vda.join("vda3"), 0).unwrap(), want);
        assert_eq!(want.disk_node(), PathBuf::from("/dev/vda"));

        let dm = t.path().join("devices/dm-0");
        std::fs::create_dir_all(dm.join("slaves")).unwrap();
        std::os::unix::fs::symlink(vda.join("vda3"), dm.join("slaves/vda3")).unwrap();
        assert_eq!(partition_of(&dm, 0).unwrap(), want);
        // A whole disk is not a partition.
        assert!(partition_of(&vda, 0).is_err());
    }

    #[test]
    fn parse_dev_numbers() {
        assert_eq!(parse_dev("254:3"), Some((254, 3)));
        assert_eq!(parse_dev("x:3"), None);
    }
}
