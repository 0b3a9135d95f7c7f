//! Each `Disk` operation commits the flags the state machine's rules say
//! (hand-written expectations, from the rules in DESIGN.md, not computed by
//! `state::apply`), and the medium holds them: every step is checked on a
//! fresh `Disk::open` of the device's bytes.

mod common;

use boot_flags::{Disk, Flags, MemDevice, Nibble, SlotId};

fn f(p: u8, t: u8, s: bool) -> Flags {
    Flags::new(p, t, s).unwrap()
}

/// The (A, B) flags the medium holds now.
fn on_medium(disk: &mut Disk<MemDevice>) -> (Flags, Flags) {
    let reread = Disk::open(disk.device().clone(), None).unwrap();
    (reread.flags(SlotId::A), reread.flags(SlotId::B))
}

#[test]
fn an_install_cycle_step_by_step() {
    let mut disk = Disk::open(common::sample_disk(512), None).unwrap();
    assert_eq!(on_medium(&mut disk), (f(0, 0, false), f(0, 0, false)));

    // Factory: A good, B good at a higher priority (an old image).
    disk.set_flags(SlotId::A, f(1, 0, true)).unwrap();
    disk.set_flags(SlotId::B, f(2, 0, true)).unwrap();
    assert_eq!(on_medium(&mut disk), (f(1, 0, true), f(2, 0, true)));

    // Running from A, install into B: invalidate B...
    disk.set_booted(Some(SlotId::A));
    disk.invalidate(SlotId::B).unwrap();
    assert_eq!(on_medium(&mut disk), (f(1, 0, true), f(0, 0, false)));
    // ...activate B with 3 tries (the booted slot keeps P=1).
    disk.activate(SlotId::B, Nibble::new(3).unwrap()).unwrap();
    assert_eq!(on_medium(&mut disk), (f(1, 0, true), f(2, 3, false)));

    // Cancel before it boots: A P=2, B P=0 T=0.
    disk.cancel().unwrap();
    assert_eq!(on_medium(&mut disk), (f(2, 0, true), f(0, 0, false)));

    // Activate again, boot B (one try used), B marks itself good.
    disk.activate(SlotId::B, Nibble::new(3).unwrap()).unwrap();
    assert_eq!(on_medium(&mut disk), (f(1, 0, true), f(2, 3, false)));
    disk.set_booted(Some(SlotId::B));
    let report = disk.boot_select(false).unwrap();
    assert_eq!(report.choice.slot, SlotId::B);
    assert_eq!(on_medium(&mut disk), (f(1, 0, true), f(2, 2, false)));
    disk.mark_good().unwrap();
    assert_eq!(on_medium(&mut disk), (f(1, 0, true), f(2, 2, true)));

    // Rollback from B: A P=2, B P=1.
    disk.rollback().unwrap();
    assert_eq!(on_medium(&mut disk), (f(2, 0, true), f(1, 2, true)));

    // Mark the booted slot (B) bad: P=0 T=0 S=0; A stays.
    disk.mark_bad(None, false).unwrap();
    assert_eq!(on_medium(&mut disk), (f(2, 0, true), f(0, 0, false)));

    // Marking A bad now would leave nothing bootable: refused, unchanged...
    assert!(disk.mark_bad(Some(SlotId::A), false).is_err());
    assert_eq!(on_medium(&mut disk), (f(2, 0, true), f(0, 0, false)));
    // ...unless forced.
    disk.mark_bad(Some(SlotId::A), true).unwrap();
    assert_eq!(on_medium(&mut disk), (f(0, 0, false), f(0, 0, false)));
}

#[test]
fn a_refused_invalidate_writes_nothing() {
    let mut disk = Disk::open(common::sample_disk(4096), None).unwrap();
    disk.set_flags(SlotId::A, f(1, 0, true)).unwrap();
    let before = disk.device().clone();
    disk.set_booted(Some(SlotId::A));
    assert!(disk.invalidate(SlotId::A).is_err(), "the booted slot");
    disk.set_booted(None);
    assert!(
        disk.invalidate(SlotId::A).is_err(),
        "the only bootable slot"
    );
    assert_eq!(disk.device(), &before);
}
