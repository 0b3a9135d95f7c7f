use super::*;

fn fl(p: u8, t: u8, s: bool) -> Flags {
    Flags::new(p, t, s).unwrap()
}

fn pair(a: Flags, b: Flags) -> SlotFlags {
    SlotFlags { a, b }
}

const A: SlotId = SlotId::A;
const B: SlotId = SlotId::B;

fn tries(n: u8) -> Nibble {
    Nibble::new(n).unwrap()
}

#[test]
fn install_cycle() {
    let s0 = pair(fl(1, 0, true), Flags::ZERO);
    let s1 = apply(s0, Some(A), &Op::Invalidate(B)).unwrap();
    assert_eq!(s1, s0);
    let s2 = apply(
        s1,
        Some(A),
        &Op::Activate {
            target: B,
            tries: tries(3),
        },
    )
    .unwrap();
    assert_eq!(s2, pair(fl(1, 0, true), fl(2, 3, false)));
    let c = boot_select(s2);
    assert_eq!(c.slot, B);
    assert_eq!(c.kind, BootKind::Trial { tries_left: 2 });
    assert_eq!(c.flags.b, fl(2, 2, false));
    let s3 = apply(c.flags, Some(B), &Op::MarkGood).unwrap();
    assert_eq!(s3.b, fl(2, 2, true));
    assert_eq!(boot_select(s3).kind, BootKind::Good);
}

#[test]
fn failed_trial_falls_back() {
    let mut s = pair(fl(1, 0, true), fl(2, 2, false));
    for left in [1, 0] {
        let c = boot_select(s);
        assert_eq!(c.slot, B);
        assert_eq!(c.kind, BootKind::Trial { tries_left: left });
        s = c.flags;
    }
    let c = boot_select(s);
    assert_eq!(c.slot, A);
    assert_eq!(c.kind, BootKind::Good);
}

#[test]
fn refusals() {
    let good_a = pair(fl(1, 0, true), fl(2, 3, false));
    let r = |s, b, op| apply(s, b, &op).unwrap_err();
    assert!(matches!(
        r(good_a, Some(A), Op::Invalidate(A)),
        Refusal::TargetIsBooted { .. }
    ));
    // B booted on trial: A is its only fallback.
    assert!(matches!(
        r(good_a, Some(B), Op::Invalidate(A)),
        Refusal::BootedOnTrial { .. }
    ));
    assert!(matches!(
        r(
            good_a,
            Some(B),
            Op::Activate {
                target: A,
                tries: tries(3)
            }
        ),
        Refusal::BootedOnTrial { .. }
    ));
    let only_a = pair(fl(1, 0, true), Flags::ZERO);
    assert!(matches!(
        r(
            only_a,
            Some(A),
            Op::MarkBad {
                slot: None,
                force: false
            }
        ),
        Refusal::OnlyBootable { .. }
    ));
    assert_eq!(
        apply(
            only_a,
            Some(A),
            &Op::MarkBad {
                slot: None,
                force: true
            }
        )
        .unwrap(),
        SlotFlags::default()
    );
    assert!(matches!(
        r(only_a, Some(A), Op::Rollback),
        Refusal::NotBootable { .. }
    ));
    assert!(matches!(
        r(only_a, Some(A), Op::Cancel),
        Refusal::NothingToCancel { .. }
    ));
    assert!(matches!(
        r(only_a, None, Op::MarkGood),
        Refusal::NeedBooted { .. }
    ));
    assert!(matches!(
        r(good_a, None, Op::Rollback),
        Refusal::NeedBooted { .. }
    ));
    // No booted slot, A bootable: which one runs matters for activate B.
    assert!(matches!(
        r(
            only_a,
            None,
            Op::Activate {
                target: B,
                tries: tries(3)
            }
        ),
        Refusal::NeedBooted { .. }
    ));
    // ... and invalidating the only bootable slot is refused.
    assert!(matches!(
        r(only_a, None, Op::Invalidate(A)),
        Refusal::OnlyBootable { .. }
    ));
    assert!(matches!(
        r(
            only_a,
            Some(A),
            Op::Activate {
                target: B,
                tries: Nibble::ZERO
            }
        ),
        Refusal::NoTries { .. }
    ));
    assert!(matches!(
        r(good_a, None, Op::SetFlags(A, fl(2, 0, true))),
        Refusal::EqualPriority { priority: 2, .. }
    ));
}

#[test]
fn fresh_disk_without_booted_slot() {
    let fresh = SlotFlags::default();
    let s = apply(
        fresh,
        None,
        &Op::Activate {
            target: A,
            tries: tries(3),
        },
    )
    .unwrap();
    assert_eq!(s, pair(fl(2, 3, false), Flags::ZERO));
    let s = apply(fresh, None, &Op::SetFlags(A, fl(1, 0, true))).unwrap();
    assert_eq!(s.a, fl(1, 0, true));
}

#[test]
fn rollback_and_cancel() {
    let s = pair(fl(1, 0, true), fl(2, 0, true));
    assert_eq!(
        apply(s, Some(B), &Op::Rollback).unwrap(),
        pair(fl(2, 0, true), fl(1, 0, true))
    );
    let pending = pair(fl(1, 0, true), fl(2, 3, false));
    assert_eq!(
        apply(pending, Some(A), &Op::Cancel).unwrap(),
        pair(fl(2, 0, true), fl(0, 0, false))
    );
}

#[test]
fn mark_good_after_last_resort_boot() {
    let none = SlotFlags::default();
    let c = boot_select(none);
    assert_eq!(c.slot, A);
    assert_eq!(
        c.kind,
        BootKind::NoBootable {
            was_successful: false
        }
    );
    assert_eq!(c.flags, none);
    let s = apply(none, Some(A), &Op::MarkGood).unwrap();
    assert_eq!(s.a, fl(1, 0, true));
    // B with priority 1 already: A is raised above it, not equal.
    let s = apply(pair(Flags::ZERO, fl(1, 0, false)), Some(A), &Op::MarkGood).unwrap();
    assert_eq!(s, pair(fl(2, 0, true), fl(1, 0, false)));
    // Last successful slot is chosen when nothing is bootable.
    let c = boot_select(pair(fl(0, 0, false), fl(0, 0, true)));
    assert_eq!(c.slot, B);
}

#[test]
fn tie_goes_to_a() {
    let s = pair(fl(3, 0, true), fl(3, 0, true));
    assert_eq!(boot_select(s).slot, A);
    assert_eq!(s.next_boot(), Some(A));
}
