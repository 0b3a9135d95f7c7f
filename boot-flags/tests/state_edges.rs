//! The state machine at its edges, with hand-written expectations from the
//! rules in docs/state-machine.md (not computed by the code under test):
//! ties, priority 15, priority 0, and the last-resort choice.

use boot_flags::state::{apply, boot_select, BootKind, Op, Refusal};
use boot_flags::{Flags, Nibble, SlotFlags, SlotId};

use SlotId::{A, B};

fn f(p: u8, t: u8, s: bool) -> Flags {
    Flags::new(p, t, s).unwrap()
}

fn pair(a: Flags, b: Flags) -> SlotFlags {
    SlotFlags { a, b }
}

#[test]
fn next_boot_by_priority_tie_to_a() {
    assert_eq!(pair(f(1, 0, true), f(2, 0, true)).next_boot(), Some(B));
    assert_eq!(pair(f(2, 0, true), f(1, 0, true)).next_boot(), Some(A));
    assert_eq!(pair(f(2, 0, true), f(2, 1, false)).next_boot(), Some(A));
    assert_eq!(pair(f(0, 5, true), f(1, 1, false)).next_boot(), Some(B));
    assert_eq!(pair(f(1, 1, false), f(0, 5, true)).next_boot(), Some(A));
    assert_eq!(pair(f(0, 5, true), f(3, 0, false)).next_boot(), None);
}

#[test]
fn equal_priorities_means_equal_and_non_zero() {
    assert!(pair(f(3, 0, true), f(3, 1, false)).equal_priorities());
    assert!(!pair(f(3, 0, true), f(4, 0, true)).equal_priorities());
    assert!(!pair(f(0, 0, true), f(0, 1, false)).equal_priorities());
    assert!(pair(f(15, 0, true), f(15, 0, true)).equal_priorities());
}

/// mark-good leaves no tie: the booted slot goes one above, or (at 15)
/// the other goes one below.
#[test]
fn mark_good_breaks_ties() {
    let s = apply(
        pair(f(14, 2, false), f(14, 0, true)),
        Some(A),
        &Op::MarkGood,
    )
    .unwrap();
    assert_eq!(s, pair(f(15, 2, true), f(14, 0, true)));
    let s = apply(
        pair(f(15, 2, false), f(15, 0, true)),
        Some(A),
        &Op::MarkGood,
    )
    .unwrap();
    assert_eq!(s, pair(f(15, 2, true), f(14, 0, true)));
    let s = apply(pair(f(9, 0, true), f(15, 2, false)), Some(B), &Op::MarkGood).unwrap();
    assert_eq!(s, pair(f(9, 0, true), f(15, 2, true)));
    // No tie: nothing else moves.
    let s = apply(pair(f(1, 0, true), f(2, 2, false)), Some(B), &Op::MarkGood).unwrap();
    assert_eq!(s, pair(f(1, 0, true), f(2, 2, true)));
    // Priority 0 on both (a last-resort boot of A): A gets 1, B stays 0.
    let s = apply(pair(f(0, 0, false), f(0, 0, false)), Some(A), &Op::MarkGood).unwrap();
    assert_eq!(s, pair(f(1, 0, true), f(0, 0, false)));
}

/// activate lowers a bootable other slot to 1 and leaves a priority-0
/// slot at 0.
#[test]
fn activate_keeps_a_zero_priority_at_zero() {
    // No booted slot known, the other slot is not bootable (P=0, T=5).
    let s = apply(
        pair(f(0, 5, true), f(0, 0, false)),
        None,
        &Op::Activate {
            target: B,
            tries: Nibble::new(4).unwrap(),
        },
    )
    .unwrap();
    assert_eq!(s, pair(f(0, 5, true), f(2, 4, false)));
    let s = apply(
        pair(f(7, 0, true), f(0, 0, false)),
        Some(A),
        &Op::Activate {
            target: B,
            tries: Nibble::new(1).unwrap(),
        },
    )
    .unwrap();
    assert_eq!(s, pair(f(1, 0, true), f(2, 1, false)));
    // Zero tries would leave the target unbootable: refused.
    let r = apply(
        pair(f(1, 0, true), f(0, 0, false)),
        Some(A),
        &Op::Activate {
            target: B,
            tries: Nibble::ZERO,
        },
    );
    assert_eq!(r, Err(Refusal::NoTries { slot: B }));
}

/// With nothing bootable, the last successful slot boots (A when both or
/// neither were), and nothing changes.
#[test]
fn last_resort_choice() {
    let cases = [
        (pair(f(0, 0, true), f(0, 0, true)), A, true),
        (pair(f(0, 0, false), f(0, 3, true)), B, true),
        (pair(f(0, 2, true), f(0, 0, false)), A, true),
        (pair(f(0, 0, false), f(0, 0, false)), A, false),
        (pair(f(4, 0, false), f(0, 0, false)), A, false),
    ];
    for (flags, slot, was_successful) in cases {
        let c = boot_select(flags);
        assert_eq!(c.slot, slot, "{flags:?}");
        assert_eq!(c.kind, BootKind::NoBootable { was_successful }, "{flags:?}");
        assert_eq!(c.flags, flags);
    }
}

/// A trial boot uses one try; a good slot boots with nothing changed.
#[test]
fn trial_and_good_boots() {
    let c = boot_select(pair(f(1, 0, true), f(2, 1, false)));
    assert_eq!((c.slot, c.kind), (B, BootKind::Trial { tries_left: 0 }));
    assert_eq!(c.flags, pair(f(1, 0, true), f(2, 0, false)));
    let c = boot_select(pair(f(3, 0, true), f(2, 1, false)));
    assert_eq!((c.slot, c.kind), (A, BootKind::Good));
    assert_eq!(c.flags, pair(f(3, 0, true), f(2, 1, false)));
}

/// Refusals keyed on the booted slot.
#[test]
fn booted_slot_rules() {
    let good_a = pair(f(1, 0, true), f(2, 0, true));
    // Invalidating the booted slot, or the other while booted is on trial.
    assert!(matches!(
        apply(good_a, Some(A), &Op::Invalidate(A)),
        Err(Refusal::TargetIsBooted { slot: A, .. })
    ));
    let trial_a = pair(f(2, 2, false), f(1, 0, true));
    assert!(matches!(
        apply(trial_a, Some(A), &Op::Invalidate(B)),
        Err(Refusal::BootedOnTrial {
            booted: A,
            target: B,
            ..
        })
    ));
    // Booted good: invalidating the other is fine.
    assert_eq!(
        apply(good_a, Some(A), &Op::Invalidate(B)).unwrap(),
        pair(f(1, 0, true), Flags::ZERO)
    );
    // Operations that need the booted slot.
    for op in [Op::MarkGood, Op::Rollback, Op::Cancel] {
        assert!(matches!(
            apply(good_a, None, &op),
            Err(Refusal::NeedBooted { .. })
        ));
    }
    // Rollback to a slot that is not bootable.
    assert!(matches!(
        apply(pair(f(1, 0, true), f(0, 3, false)), Some(A), &Op::Rollback),
        Err(Refusal::NotBootable { slot: B, .. })
    ));
    // Cancel with nothing pending (the other is good, or not bootable).
    for b in [f(2, 0, true), f(0, 0, false)] {
        assert!(matches!(
            apply(pair(f(1, 0, true), b), Some(A), &Op::Cancel),
            Err(Refusal::NothingToCancel { slot: B })
        ));
    }
    // set-flags refuses only a shared non-zero priority.
    assert!(matches!(
        apply(good_a, Some(A), &Op::SetFlags(A, f(2, 0, true))),
        Err(Refusal::EqualPriority {
            other: B,
            priority: 2,
            ..
        })
    ));
    assert_eq!(
        apply(
            pair(f(0, 0, false), f(0, 0, false)),
            None,
            &Op::SetFlags(A, f(0, 3, true))
        )
        .unwrap(),
        pair(f(0, 3, true), f(0, 0, false))
    );
}

/// mark-bad protects the only bootable slot unless forced; a slot that is
/// not bootable, or whose partner is, can always be marked bad.
#[test]
fn mark_bad_and_the_only_bootable_slot() {
    let only_a = pair(f(1, 0, true), f(0, 2, true));
    let bad = |slot, force| Op::MarkBad { slot, force };
    assert_eq!(
        apply(only_a, None, &bad(Some(A), false)),
        Err(Refusal::OnlyBootable {
            op: "mark-bad",
            slot: A
        })
    );
    assert_eq!(
        apply(only_a, None, &bad(Some(A), true)).unwrap(),
        pair(Flags::ZERO, f(0, 2, true))
    );
    // B is not bootable: marking it bad is fine, forced or not.
    assert_eq!(
        apply(only_a, None, &bad(Some(B), false)).unwrap(),
        pair(f(1, 0, true), Flags::ZERO)
    );
    // Neither bootable: nothing to protect.
    let none = pair(f(0, 1, false), f(3, 0, false));
    assert_eq!(
        apply(none, None, &bad(Some(B), false)).unwrap(),
        pair(f(0, 1, false), Flags::ZERO)
    );
    // Both bootable: the booted one may go.
    let both = pair(f(1, 0, true), f(2, 2, false));
    assert_eq!(
        apply(both, Some(B), &bad(None, false)).unwrap(),
        pair(f(1, 0, true), Flags::ZERO)
    );
    assert_eq!(
        apply(both, None, &bad(None, false)),
        Err(Refusal::NeedBooted { op: "mark-bad" })
    );
}

/// cancel refuses when the booted slot could not boot itself even at
/// priority 2 (tries 0, never successful): the pending slot is the only
/// bootable one.
#[test]
fn cancel_that_would_leave_nothing_bootable() {
    let s = pair(f(1, 0, false), f(2, 3, false));
    assert_eq!(
        apply(s, Some(A), &Op::Cancel),
        Err(Refusal::OnlyBootable {
            op: "cancel",
            slot: B
        })
    );
}

/// Each operation's name, as refusals print it.
#[test]
fn operation_names_in_messages() {
    let ops = [
        (Op::Invalidate(A), "invalidate"),
        (
            Op::Activate {
                target: A,
                tries: Nibble::new(1).unwrap(),
            },
            "activate",
        ),
        (Op::MarkGood, "mark-good"),
        (
            Op::MarkBad {
                slot: None,
                force: false,
            },
            "mark-bad",
        ),
        (Op::Rollback, "rollback"),
        (Op::Cancel, "cancel"),
        (Op::SetFlags(A, Flags::ZERO), "set-flags"),
    ];
    for (op, name) in ops {
        assert_eq!(op.name(), name);
    }
    let e = apply(SlotFlags::default(), None, &Op::Rollback).unwrap_err();
    assert_eq!(
        e.to_string(),
        "rollback needs the booted slot, and no booted slot is known for this disk"
    );
    let e = apply(
        pair(f(1, 0, true), f(2, 0, true)),
        Some(A),
        &Op::Invalidate(A),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "invalidate: slot A is the booted slot");
}
