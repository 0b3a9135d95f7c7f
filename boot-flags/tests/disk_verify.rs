//! `Disk`'s read-back after a commit catches a disk that lies: one that
//! accepts writes and keeps none of them, and one that garbles the backup
//! copy on its way to the medium. The operation must fail with
//! `VerifyFailed`, not report success.

mod common;

use std::io;

use boot_flags::{BlockDevice, Disk, Error, Flags, MemDevice, SlotId};

/// How the device lies.
#[derive(Clone, Copy)]
enum Lie {
    /// Every write returns Ok and changes nothing.
    DropAll,
    /// Writes to the last 64 KiB (the backup copy) land with a flipped byte.
    GarbleBackup,
}

struct Liar {
    inner: MemDevice,
    lie: Lie,
}

impl BlockDevice for Liar {
    fn len(&mut self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact_at(off, buf)
    }
    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        match self.lie {
            Lie::DropAll => Ok(()),
            Lie::GarbleBackup => {
                let end = self.inner.data.len() as u64;
                let mut buf = buf.to_vec();
                if off + buf.len() as u64 > end - 65536 {
                    let last = buf.len() - 1;
                    buf[last / 2] ^= 0x5a;
                }
                self.inner.write_all_at(off, &buf)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn open(lie: Lie) -> Disk<Liar> {
    let inner = common::sample_disk(512);
    Disk::open(Liar { inner, lie }, None).unwrap()
}

#[test]
fn writes_that_vanish_fail_the_read_back() {
    let mut disk = open(Lie::DropAll);
    let before = disk.slot_flags();
    let err = disk
        .set_flags(SlotId::A, Flags::new(2, 0, true).unwrap())
        .unwrap_err();
    assert!(
        matches!(&err, Error::VerifyFailed(why) if why.contains("entry array differs")),
        "got {err:?}"
    );
    // What the disk holds is what the read-back saw: the old flags.
    let reread = Disk::open(disk.into_device().inner, None).unwrap();
    assert_eq!(reread.slot_flags(), before);
}

#[test]
fn a_garbled_backup_fails_the_read_back() {
    let mut disk = open(Lie::GarbleBackup);
    let err = disk
        .set_flags(SlotId::B, Flags::new(3, 2, false).unwrap())
        .unwrap_err();
    assert!(
        matches!(&err, Error::VerifyFailed(why) if why.contains("backup")),
        "got {err:?}"
    );
}

#[test]
fn an_honest_disk_passes_the_read_back() {
    let inner = common::sample_disk(512);
    let mut disk = Disk::open(inner, None).unwrap();
    disk.set_flags(SlotId::B, Flags::new(3, 2, false).unwrap())
        .unwrap();
    assert_eq!(disk.flags(SlotId::B), Flags::new(3, 2, false).unwrap());
    let reread = Disk::open(disk.into_device(), None).unwrap();
    assert_eq!(reread.flags(SlotId::B), Flags::new(3, 2, false).unwrap());
}
