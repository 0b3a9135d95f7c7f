//! A table that can be read but not written safely (issue 11): a valid
//! primary whose alternate LBA leaves no room to rebuild the backup, or a
//! valid backup whose first usable LBA leaves no room to rebuild the
//! primary. `Disk::boot_select` boots from it as it is and writes nothing
//! (a slot on trial is passed over, since its try cannot be recorded);
//! every other operation refuses before writing.

mod common;

use boot_flags::gpt::Header;
use boot_flags::{BootKind, Disk, Flags, MemDevice, Nibble, SlotId};

const SS: usize = 512;

fn f(p: u8, t: u8, s: bool) -> Flags {
    Flags::new(p, t, s).unwrap()
}

fn edit_header(dev: &mut MemDevice, lba: usize, f: impl FnOnce(&mut Header)) {
    let sector = &mut dev.data[lba * SS..(lba + 1) * SS];
    let mut h = Header::parse(sector).unwrap();
    f(&mut h);
    h.write_into(sector);
}

/// The sample disk with flags (A, B) set, then made unwritable one of two
/// ways.
fn unwritable_disk(a: Flags, b: Flags, primary_valid: bool) -> MemDevice {
    let mut disk = Disk::open(common::sample_disk(512), None).unwrap();
    disk.set_flags(SlotId::A, a).unwrap();
    disk.set_flags(SlotId::B, b).unwrap();
    let mut dev = disk.into_device();
    let last = dev.data.len() / SS - 1;
    if primary_valid {
        // The backup "lives" right after the usable area: its entry array
        // would have to go over partition data.
        edit_header(&mut dev, 1, |h| h.alternate_lba = h.last_usable_lba + 1);
    } else {
        // 32 entry sectors cannot fit at LBA 2..=32 before first usable 33.
        edit_header(&mut dev, last, |h| h.first_usable_lba = 33);
        dev.data[SS..SS + 8].fill(0);
    }
    dev
}

#[test]
fn boot_select_boots_an_unwritable_table_as_it_is() {
    for primary_valid in [true, false] {
        // A good slot: booted, nothing written.
        let dev = unwritable_disk(f(15, 0, true), f(14, 0, true), primary_valid);
        let before = dev.data.clone();
        let mut disk = Disk::open(dev, None).unwrap();
        assert!(disk.check_writable().is_err());
        for dry_run in [true, false] {
            let r = disk.boot_select(dry_run).unwrap();
            assert_eq!(r.choice.slot, SlotId::A);
            assert_eq!(r.choice.kind, BootKind::Good);
            assert!(r.repaired.is_empty(), "{r:?}");
            let why = r.unwritable.as_deref().unwrap();
            assert!(why.contains("no room for the"), "{why}");
            assert!(r.untried.is_empty());
        }
        assert!(disk.device().data == before, "boot-select wrote");

        // B on trial at the higher priority: its try cannot be recorded,
        // so it is passed over for the good A, and nothing is written.
        let dev = unwritable_disk(f(13, 0, true), f(15, 3, false), primary_valid);
        let before = dev.data.clone();
        let mut disk = Disk::open(dev, None).unwrap();
        let r = disk.boot_select(false).unwrap();
        assert_eq!(r.choice.slot, SlotId::A);
        assert_eq!(r.untried, vec![SlotId::B]);
        assert_eq!(r.choice.flags.b, f(15, 3, false), "flags as on disk");
        assert!(disk.device().data == before, "boot-select wrote");

        // Every writing operation refuses, nothing written.
        disk.set_booted(Some(SlotId::A));
        assert!(disk.mark_good().is_err());
        assert!(disk.activate(SlotId::B, Nibble::new(3).unwrap()).is_err());
        assert!(disk.set_flags(SlotId::A, f(1, 0, true)).is_err());
        assert!(disk.repair().is_err());
        assert!(disk.device().data == before, "a refused operation wrote");
    }
}

/// The same disk, writable (the control): boot-select uses B's try.
#[test]
fn the_writable_control_uses_the_try() {
    let mut disk = Disk::open(common::sample_disk(512), None).unwrap();
    disk.set_flags(SlotId::A, f(13, 0, true)).unwrap();
    disk.set_flags(SlotId::B, f(15, 3, false)).unwrap();
    disk.check_writable().unwrap();
    let r = disk.boot_select(false).unwrap();
    assert_eq!(r.choice.slot, SlotId::B);
    assert!(r.unwritable.is_none());
    assert_eq!(disk.flags(SlotId::B), f(15, 2, false));
}
