//! The boot counter: boots of a slot that do not reach boot-check are
//! counted in its boot state; a committed slot at the bound is given up for
//! a good other slot; a failed check gives a slot up; mark-good clears the
//! count. Each step is checked on a fresh `Disk::open` of the medium.

mod common;

use boot_flags::{BootState, Disk, Flags, MemDevice, SlotId};

fn f(p: u8, t: u8, s: bool) -> Flags {
    Flags::new(p, t, s).unwrap()
}

/// A disk with slot flags (A, B) set; booted slot unknown.
fn disk(a: Flags, b: Flags) -> Disk<MemDevice> {
    let mut d = Disk::open(common::sample_disk(512), None).unwrap();
    d.set_flags(SlotId::A, Flags::ZERO).unwrap();
    d.set_flags(SlotId::B, Flags::ZERO).unwrap();
    let (first, second) = if a.priority <= b.priority {
        ((SlotId::A, a), (SlotId::B, b))
    } else {
        ((SlotId::B, b), (SlotId::A, a))
    };
    d.set_flags(first.0, first.1).unwrap();
    d.set_flags(second.0, second.1).unwrap();
    d
}

/// What the medium holds: (A, B) flags and boot states.
fn medium(d: &mut Disk<MemDevice>) -> ((Flags, Flags), BootState, BootState) {
    let mut r = Disk::open(d.device().clone(), None).unwrap();
    let (a, b) = (r.flags(SlotId::A), r.flags(SlotId::B));
    let sa = r.boot_state(SlotId::A).unwrap().unwrap();
    let sb = r.boot_state(SlotId::B).unwrap().unwrap();
    ((a, b), sa, sb)
}

fn ok(_: SlotId) -> Result<(), String> {
    Ok(())
}

#[test]
fn a_committed_slot_that_never_reaches_boot_check_is_given_up_after_the_bound() {
    let mut d = disk(f(1, 0, true), f(2, 0, true));
    for n in 1..=3u8 {
        let r = d.boot_select_checked(false, 3, &mut ok).unwrap();
        assert_eq!(r.choice.slot, SlotId::B, "boot {n}");
        assert_eq!(r.unchecked_boots, n);
        assert!(r.given_up.is_empty() && r.forced.is_none());
        let (flags, _, sb) = medium(&mut d);
        assert_eq!(flags, (f(1, 0, true), f(2, 0, true)));
        assert_eq!(sb.unchecked_boots, n);
    }
    // The fourth boot: B has 3 boots that did not reach boot-check, A is
    // good: B is given up, A boots.
    let r = d.boot_select_checked(false, 3, &mut ok).unwrap();
    assert_eq!(r.choice.slot, SlotId::A);
    let why = "3 boots in a row did not reach boot-check".to_string();
    assert_eq!(r.given_up, vec![(SlotId::B, why.clone())]);
    assert_eq!(r.unchecked_boots, 1);
    let (flags, sa, sb) = medium(&mut d);
    assert_eq!(flags, (f(1, 0, true), f(2, 0, false)));
    assert!(!flags.1.bootable());
    assert_eq!(sb.given_up, Some(why));
    assert_eq!(sa.unchecked_boots, 1);
    // A reaches boot-check: its count is cleared; B stays given up.
    d.set_booted(Some(SlotId::A));
    d.mark_good().unwrap();
    let (flags, sa, sb) = medium(&mut d);
    assert_eq!(flags, (f(1, 0, true), f(2, 0, false)));
    assert!(sa.is_clear());
    assert_eq!(sb.unchecked_boots, 3);
    let r = d.boot_select(false).unwrap();
    assert_eq!(r.choice.slot, SlotId::A);
}

#[test]
fn without_a_good_other_slot_the_failing_slot_still_boots_and_says_so() {
    // B on trial (not good): A stays the one to boot.
    let mut d = disk(f(2, 0, true), f(0, 0, false));
    for n in 1..=5u8 {
        let r = d.boot_select_checked(false, 3, &mut ok).unwrap();
        assert_eq!(r.choice.slot, SlotId::A);
        assert_eq!(r.unchecked_boots, n);
        assert!(r.given_up.is_empty());
        assert_eq!(r.forced.is_some(), n > 3, "boot {n}: {:?}", r.forced);
    }
    let (flags, sa, _) = medium(&mut d);
    assert_eq!(flags, (f(2, 0, true), f(0, 0, false)));
    assert_eq!(sa.unchecked_boots, 5);
    assert_eq!(sa.given_up, None);
}

#[test]
fn a_failed_check_gives_the_slot_up_and_boots_the_other() {
    let mut d = disk(f(1, 0, true), f(2, 3, false));
    let mut asked = Vec::new();
    let mut check = |id: SlotId| {
        asked.push(id);
        if id == SlotId::B {
            Err("root hash does not verify".to_string())
        } else {
            Ok(())
        }
    };
    let r = d.boot_select_checked(false, 3, &mut check).unwrap();
    assert_eq!(asked, vec![SlotId::B, SlotId::A]);
    assert_eq!(r.choice.slot, SlotId::A);
    let why = "its check failed: root hash does not verify".to_string();
    assert_eq!(r.given_up, vec![(SlotId::B, why.clone())]);
    let (flags, sa, sb) = medium(&mut d);
    // B: its try used, then out of tries; priority kept.
    assert_eq!(flags, (f(1, 0, true), f(2, 0, false)));
    assert_eq!(sb.unchecked_boots, 1);
    assert_eq!(sb.given_up, Some(why));
    assert_eq!(sa.unchecked_boots, 1);
}

#[test]
fn a_failed_check_on_a_last_try_gives_the_slot_up_too() {
    let mut d = disk(f(1, 0, true), f(2, 1, false));
    let r = d
        .boot_select_checked(false, 3, &mut |id| {
            if id == SlotId::B {
                Err("bad".into())
            } else {
                Ok(())
            }
        })
        .unwrap();
    assert_eq!(r.choice.slot, SlotId::A);
    assert!(r.forced.is_none());
    let (flags, _, sb) = medium(&mut d);
    assert_eq!(flags, (f(1, 0, true), f(2, 0, false)));
    assert_eq!(sb.given_up.as_deref(), Some("its check failed: bad"));
}

#[test]
fn a_failed_check_on_the_only_bootable_slot_boots_it_anyway() {
    let mut d = disk(f(2, 0, true), f(0, 0, false));
    let r = d
        .boot_select_checked(false, 3, &mut |_| Err("bad".into()))
        .unwrap();
    assert_eq!(r.choice.slot, SlotId::A);
    assert!(r.given_up.is_empty());
    assert!(r
        .forced
        .as_deref()
        .unwrap()
        .contains("its check failed: bad"));
    let (flags, sa, _) = medium(&mut d);
    assert_eq!(flags, (f(2, 0, true), f(0, 0, false)));
    assert_eq!(sa.unchecked_boots, 1);
}

#[test]
fn a_trial_whose_tries_ran_out_is_named_once() {
    let mut d = disk(f(1, 0, true), f(2, 1, false));
    assert_eq!(d.boot_select(false).unwrap().choice.slot, SlotId::B);
    // B's boot never reached boot-check: the next boot passes it over.
    let r = d.boot_select(false).unwrap();
    assert_eq!(r.choice.slot, SlotId::A);
    let why = "its tries ran out: 1 boots did not reach boot-check".to_string();
    assert_eq!(r.given_up, vec![(SlotId::B, why.clone())]);
    let (_, _, sb) = medium(&mut d);
    assert_eq!(sb.given_up, Some(why));
    // Said once: the next boot does not write B's state again.
    let before = d.device().data.clone();
    let r = d.boot_select(false).unwrap();
    assert!(r.given_up.is_empty());
    let after = d.device().data.clone();
    let at = d.boot_state_offset(SlotId::B).unwrap() as usize;
    assert_eq!(before[at..at + 8192], after[at..at + 8192]);
}

#[test]
fn mark_good_clears_the_count_and_writes_nothing_when_clear() {
    let mut d = disk(f(1, 0, true), f(2, 0, true));
    d.boot_select(false).unwrap();
    d.boot_select(false).unwrap();
    assert_eq!(medium(&mut d).2.unchecked_boots, 2);
    d.set_booted(Some(SlotId::B));
    d.mark_good().unwrap();
    assert!(medium(&mut d).2.is_clear());
    let before = d.device().data.clone();
    d.mark_good().unwrap();
    assert!(
        d.device().data == before,
        "mark-good on a clear state wrote"
    );
}

#[test]
fn a_dry_run_writes_nothing_and_says_what_would_happen() {
    let mut d = disk(f(1, 0, true), f(2, 0, true));
    for _ in 0..3 {
        d.boot_select(false).unwrap();
    }
    let before = d.device().data.clone();
    let r = d.boot_select_checked(true, 3, &mut ok).unwrap();
    assert_eq!(r.choice.slot, SlotId::A);
    assert_eq!(r.given_up.len(), 1);
    assert!(d.device().data == before, "a dry run wrote");
    // And the real one does it.
    assert_eq!(d.boot_select(false).unwrap().choice.slot, SlotId::A);
}

#[test]
fn the_counter_off_writes_nothing_on_a_good_boot() {
    let mut d = disk(f(1, 0, true), f(2, 0, true));
    let before = d.device().data.clone();
    for _ in 0..5 {
        let r = d.boot_select_checked(false, 0, &mut ok).unwrap();
        assert_eq!(r.choice.slot, SlotId::B);
        assert_eq!(r.unchecked_boots, 0);
    }
    assert!(d.device().data == before, "the counter off wrote");
}

#[test]
fn an_install_erase_resets_the_boot_state() {
    let mut d = disk(f(1, 0, true), f(2, 0, true));
    d.boot_select(false).unwrap();
    assert_eq!(medium(&mut d).2.unchecked_boots, 1);
    // What an install's erase of the 64 KiB record region does.
    let p = d.layout().slot(SlotId::B).flags_partition().clone();
    let at = (p.offset + p.size - 65536) as usize;
    d.device().data[at..at + 65536].fill(0);
    assert!(medium(&mut d).2.is_clear());
}

/// A slot made the next boot by hand (rollback, activate) starts with a
/// clear count: an old count does not give it up at its first boot.
#[test]
fn rollback_and_activate_clear_the_targets_count() {
    // A, good, booted twice without reaching boot-check; then B was booted
    // (A's count stays 2 on the medium).
    let mut d = disk(f(2, 0, true), f(1, 0, true));
    for _ in 0..2 {
        d.boot_select_checked(false, 3, &mut ok).unwrap();
    }
    d.set_flags(SlotId::B, f(3, 0, true)).unwrap();
    d.set_flags(SlotId::A, f(1, 0, true)).unwrap();
    let (_, sa, _) = medium(&mut d);
    assert_eq!(sa.unchecked_boots, 2);
    // A technician on B rolls back to A: A's count is cleared.
    d.set_booted(Some(SlotId::B));
    d.rollback().unwrap();
    let (flags, sa, _) = medium(&mut d);
    assert_eq!(flags.0.priority.get(), 2);
    assert!(sa.is_clear(), "rollback left A's count: {sa:?}");
    // B, given up for a failed check, activated again (the caller checks
    // its record): its reason and count are gone.
    let mut d = disk(f(1, 0, true), f(2, 3, false));
    let r = d
        .boot_select_checked(false, 3, &mut |s| {
            if s == SlotId::B {
                Err("bad root".into())
            } else {
                Ok(())
            }
        })
        .unwrap();
    assert_eq!(r.choice.slot, SlotId::A);
    let (_, _, sb) = medium(&mut d);
    assert!(
        sb.given_up
            .as_deref()
            .is_some_and(|w| w.contains("bad root")),
        "{sb:?}"
    );
    d.set_booted(Some(SlotId::A));
    d.activate(SlotId::B, boot_flags::Nibble::new(3).unwrap())
        .unwrap();
    let (flags, _, sb) = medium(&mut d);
    assert!(flags.1.bootable());
    assert!(sb.is_clear(), "activate left B's boot state: {sb:?}");
}
