//! Property tests of the state machine over random operation sequences.

mod common;

use boot_flags::state::{self, BootKind, Op, SlotFlags};
use boot_flags::{Disk, Flags, Nibble, SlotId};
use proptest::prelude::*;

/// A step a device can take: a state-machine operation with the device
/// booted from `booted`, or a (re)boot through boot selection.
#[derive(Clone, Debug)]
enum Step {
    Boot,
    Op(Op),
}

fn slot() -> impl Strategy<Value = SlotId> {
    prop_oneof![Just(SlotId::A), Just(SlotId::B)]
}

fn nibble() -> impl Strategy<Value = Nibble> {
    (0u8..16).prop_map(|v| Nibble::new(v).unwrap())
}

fn flags() -> impl Strategy<Value = Flags> {
    (nibble(), nibble(), any::<bool>()).prop_map(|(priority, tries, successful)| Flags {
        priority,
        tries,
        successful,
    })
}

/// Operations the device runs on its own (no escape hatches).
fn normal_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        slot().prop_map(Op::Invalidate),
        (slot(), 1u8..16).prop_map(|(target, t)| Op::Activate {
            target,
            tries: Nibble::new(t).unwrap()
        }),
        Just(Op::MarkGood),
        proptest::option::of(slot()).prop_map(|slot| Op::MarkBad { slot, force: false }),
        Just(Op::Rollback),
        Just(Op::Cancel),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![1 => Just(Step::Boot), 3 => normal_op().prop_map(Step::Op)]
}

/// Start states: any flags without a shared non-zero priority.
fn start() -> impl Strategy<Value = SlotFlags> {
    (flags(), flags())
        .prop_map(|(a, b)| SlotFlags { a, b })
        .prop_filter("normalised", |f| !f.equal_priorities())
}

fn any_good(f: &SlotFlags) -> bool {
    f.a.good() || f.b.good()
}

fn any_bootable(f: &SlotFlags) -> bool {
    f.a.bootable() || f.b.bootable()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Never two slots with equal non-zero priority; never an unbootable
    /// device when one slot was good; boot selection picks the bootable
    /// slot of highest priority.
    #[test]
    fn invariants_hold(start in start(), steps in proptest::collection::vec(step(), 1..40)) {
        let mut f = start;
        let mut booted: Option<SlotId> = None;
        for s in steps {
            let before = f;
            match s {
                Step::Boot => {
                    let c = state::boot_select(f);
                    match c.kind {
                        BootKind::NoBootable { .. } => {
                            prop_assert!(!any_bootable(&f));
                            prop_assert_eq!(c.flags, f);
                        }
                        _ => {
                            let x = f.get(c.slot);
                            prop_assert!(x.bootable());
                            let o = f.get(c.slot.other());
                            prop_assert!(!o.bootable() || o.priority < x.priority
                                || (o.priority == x.priority && c.slot == SlotId::A));
                        }
                    }
                    f = c.flags;
                    booted = Some(c.slot);
                }
                Step::Op(op) => match state::apply(f, booted, &op) {
                    Ok(next) => {
                        if let Some(b) = booted {
                            if matches!(op, Op::Invalidate(_) | Op::Activate { .. }) {
                                prop_assert!(before.get(b).good(), "{:?} while {} on trial", op, b);
                                prop_assert!(next.get(b).bootable(), "{:?} broke the booted slot", op);
                            }
                        }
                        f = next;
                    }
                    Err(_) => prop_assert_eq!(f, before),
                },
            }
            prop_assert!(!f.equal_priorities(), "shared priority after {:?}: {:?}", s, f);
            if any_good(&before) {
                prop_assert!(any_bootable(&f), "{:?} left nothing bootable: {:?} -> {:?}", s, before, f);
            }
        }
    }

    /// The technician's set-flags never creates a shared non-zero priority.
    #[test]
    fn set_flags_keeps_priorities_distinct(start in start(), s in slot(), new in flags()) {
        if let Ok(f) = state::apply(start, None, &Op::SetFlags(s, new)) {
            prop_assert!(!f.equal_priorities());
            prop_assert_eq!(f.get(s), new);
            prop_assert_eq!(f.get(s.other()), start.get(s.other()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The same sequences through `Disk` on a GPT: what is read back from
    /// the device always equals the pure model, and both copies stay good.
    #[test]
    fn disk_matches_model(ss in prop_oneof![Just(512u32), Just(4096)],
                          steps in proptest::collection::vec(step(), 1..12)) {
        let mut disk = Disk::open(common::sample_disk(ss), None).unwrap();
        disk.set_flags(SlotId::A, Flags::new(1, 0, true).unwrap()).unwrap();
        let mut model = disk.slot_flags();
        for s in steps {
            match s {
                Step::Boot => {
                    let r = disk.boot_select(false).unwrap();
                    model = state::boot_select(model).flags;
                    disk.set_booted(Some(r.choice.slot));
                }
                Step::Op(op) => {
                    if let Ok(next) = state::apply(model, disk.booted(), &op) {
                        model = next;
                    }
                    let _ = disk.apply(op);
                }
            }
            let reread = Disk::open(disk.device().clone(), None).unwrap();
            prop_assert!(reread.gpt().is_healthy());
            prop_assert_eq!(reread.slot_flags(), model);
        }
    }
}
