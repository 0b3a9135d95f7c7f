//! The state machine of the two slots' flags, as pure functions.
//!
//! Each operation maps the flags of both slots (and which slot is booted,
//! if known) to new flags, or refuses with a [`Refusal`] and changes
//! nothing. Writing the result is one GPT commit, done by the caller
//! ([`crate::Disk::apply`]).
//!
//! `booted` is `None` when the disk is not the one the system runs from
//! (an image file on a host): operations that need a booted slot refuse
//! with [`Refusal::NeedBooted`], except where nothing can be booted anyway
//! (see each operation).

use std::fmt;

use crate::flags::{Flags, Nibble};
use crate::slot::SlotId;

/// The flags of both slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlotFlags {
    /// Slot A's flags.
    pub a: Flags,
    /// Slot B's flags.
    pub b: Flags,
}

impl SlotFlags {
    /// One slot's flags.
    pub fn get(&self, id: SlotId) -> Flags {
        match id {
            SlotId::A => self.a,
            SlotId::B => self.b,
        }
    }

    /// Replace one slot's flags.
    pub fn set(&mut self, id: SlotId, f: Flags) {
        match id {
            SlotId::A => self.a = f,
            SlotId::B => self.b = f,
        }
    }

    pub(crate) fn with(mut self, id: SlotId, f: impl FnOnce(&mut Flags)) -> SlotFlags {
        let mut x = self.get(id);
        f(&mut x);
        self.set(id, x);
        self
    }

    /// The bootable slot of highest priority (tie: A), if any.
    pub fn next_boot(&self) -> Option<SlotId> {
        let (a, b) = (self.a, self.b);
        match (a.bootable(), b.bootable()) {
            (true, true) if b.priority > a.priority => Some(SlotId::B),
            (true, _) => Some(SlotId::A),
            (false, true) => Some(SlotId::B),
            (false, false) => None,
        }
    }

    /// True when the two slots share a non-zero priority.
    pub fn equal_priorities(&self) -> bool {
        self.a.priority == self.b.priority && self.a.priority > Nibble::ZERO
    }
}

/// A state-machine operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// First step of an install: the target is not bootable any more
    /// (P=0 T=0 S=0). Refused on the booted slot, while the booted slot is
    /// on trial, and on the only bootable slot.
    Invalidate(SlotId),
    /// Last step of an install: target P=2 T=`tries` S=0, the other
    /// (booted) slot P=1. The caller has checked the target's slot record.
    Activate {
        /// The slot to boot next.
        target: SlotId,
        /// Its tries (config `tries`, default 3); at least 1.
        tries: Nibble,
    },
    /// The booted slot's boot is good: S=1 (and P=1 if it had priority 0,
    /// so a slot booted as a last resort becomes bootable again).
    MarkGood,
    /// A slot (default: the booted one) is bad: P=0 T=0 S=0. Refused on the
    /// only bootable slot unless `force`.
    MarkBad {
        /// The slot; `None` means the booted slot.
        slot: Option<SlotId>,
        /// Allow leaving no bootable slot.
        force: bool,
    },
    /// Boot the other slot next: other P=2, booted P=1. The other slot must
    /// be bootable.
    Rollback,
    /// Undo an activation that has not booted yet: other P=0 T=0, booted
    /// P=2.
    Cancel,
    /// Set a slot's flags exactly (the technician's escape hatch). Refused
    /// only when both slots would share a non-zero priority.
    SetFlags(SlotId, Flags),
}

impl Op {
    /// A short name for messages ("mark-bad").
    pub fn name(&self) -> &'static str {
        match self {
            Op::Invalidate(_) => "invalidate",
            Op::Activate { .. } => "activate",
            Op::MarkGood => "mark-good",
            Op::MarkBad { .. } => "mark-bad",
            Op::Rollback => "rollback",
            Op::Cancel => "cancel",
            Op::SetFlags(..) => "set-flags",
        }
    }
}

/// Why the state machine refused an operation (nothing was written).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The operation needs the booted slot and none is known.
    #[error("{op} needs the booted slot, and no booted slot is known for this disk")]
    NeedBooted {
        /// The operation.
        op: &'static str,
    },
    /// The operation may not target the booted slot.
    #[error("{op}: slot {slot} is the booted slot")]
    TargetIsBooted {
        /// The operation.
        op: &'static str,
        /// The slot.
        slot: SlotId,
    },
    /// The booted slot is on trial: the other slot is the only fallback.
    #[error("{op}: the booted slot {booted} is on trial (not marked good), so slot {target} is its only fallback; mark {booted} good first")]
    BootedOnTrial {
        /// The operation.
        op: &'static str,
        /// The booted slot.
        booted: SlotId,
        /// The slot the operation would change.
        target: SlotId,
    },
    /// The operation would leave no bootable slot.
    #[error("{op}: slot {slot} is the only bootable slot")]
    OnlyBootable {
        /// The operation.
        op: &'static str,
        /// The slot.
        slot: SlotId,
    },
    /// The operation needs a slot to be bootable.
    #[error("{op}: slot {slot} is not bootable")]
    NotBootable {
        /// The operation.
        op: &'static str,
        /// The slot.
        slot: SlotId,
    },
    /// Cancel found no pending activation.
    #[error("cancel: slot {slot} has no pending activation to cancel (it is not waiting for its first boot)")]
    NothingToCancel {
        /// The other slot.
        slot: SlotId,
    },
    /// Activation with zero tries would leave the target unbootable.
    #[error("activate: slot {slot} needs at least 1 try")]
    NoTries {
        /// The target.
        slot: SlotId,
    },
    /// Both slots would share a non-zero priority.
    #[error("{op}: slot {other} already has priority {priority}; two slots must not share a non-zero priority")]
    EqualPriority {
        /// The operation.
        op: &'static str,
        /// The slot that has it.
        other: SlotId,
        /// The priority.
        priority: u8,
    },
}

const P1: Nibble = match Nibble::new(1) {
    Some(n) => n,
    None => Nibble::ZERO,
};
const P2: Nibble = match Nibble::new(2) {
    Some(n) => n,
    None => Nibble::ZERO,
};

fn booted_or(op: &Op, booted: Option<SlotId>) -> Result<SlotId, Refusal> {
    booted.ok_or(Refusal::NeedBooted { op: op.name() })
}

/// Refuse changing `target` while the booted slot is on trial.
fn check_not_on_trial(
    op: &Op,
    f: &SlotFlags,
    booted: Option<SlotId>,
    target: SlotId,
) -> Result<(), Refusal> {
    if booted == Some(target) {
        return Err(Refusal::TargetIsBooted {
            op: op.name(),
            slot: target,
        });
    }
    if let Some(b) = booted {
        if !f.get(b).good() {
            return Err(Refusal::BootedOnTrial {
                op: op.name(),
                booted: b,
                target,
            });
        }
    }
    Ok(())
}

/// Apply `op` to `flags`. `booted` is the slot the system runs from, if
/// this is its disk. Returns the new flags, or why not.
pub fn apply(flags: SlotFlags, booted: Option<SlotId>, op: &Op) -> Result<SlotFlags, Refusal> {
    let f = flags;
    let name = op.name();
    let out = match *op {
        Op::Invalidate(target) => {
            check_not_on_trial(op, &f, booted, target)?;
            if f.get(target).bootable() && !f.get(target.other()).bootable() {
                return Err(Refusal::OnlyBootable {
                    op: name,
                    slot: target,
                });
            }
            f.with(target, |x| *x = Flags::ZERO)
        }
        Op::Activate { target, tries } => {
            if tries == Nibble::ZERO {
                return Err(Refusal::NoTries { slot: target });
            }
            check_not_on_trial(op, &f, booted, target)?;
            let other = target.other();
            // With no booted slot known, activating is fine only when the
            // other slot is not bootable (a fresh disk): otherwise which one
            // runs matters.
            if booted.is_none() && f.get(other).bootable() {
                return Err(Refusal::NeedBooted { op: name });
            }
            let f = f.with(target, |x| {
                *x = Flags {
                    priority: P2,
                    tries,
                    successful: false,
                }
            });
            f.with(other, |x| {
                if x.priority > Nibble::ZERO {
                    x.priority = P1;
                }
            })
        }
        Op::MarkGood => {
            let b = booted_or(op, booted)?;
            let f = f.with(b, |x| {
                x.successful = true;
                if x.priority == Nibble::ZERO {
                    x.priority = P1;
                }
            });
            normalise(f, b)
        }
        Op::MarkBad { slot, force } => {
            let s = match slot {
                Some(s) => s,
                None => booted_or(op, booted)?,
            };
            if !force && f.get(s).bootable() && !f.get(s.other()).bootable() {
                return Err(Refusal::OnlyBootable { op: name, slot: s });
            }
            f.with(s, |x| *x = Flags::ZERO)
        }
        Op::Rollback => {
            let b = booted_or(op, booted)?;
            if !f.get(b.other()).bootable() {
                return Err(Refusal::NotBootable {
                    op: name,
                    slot: b.other(),
                });
            }
            f.with(b.other(), |x| x.priority = P2)
                .with(b, |x| x.priority = P1)
        }
        Op::Cancel => {
            let b = booted_or(op, booted)?;
            let o = f.get(b.other());
            if !o.bootable() || o.successful {
                return Err(Refusal::NothingToCancel { slot: b.other() });
            }
            let after = f.with(b, |x| x.priority = P2);
            if !after.get(b).bootable() {
                return Err(Refusal::OnlyBootable {
                    op: name,
                    slot: b.other(),
                });
            }
            after.with(b.other(), |x| {
                x.priority = Nibble::ZERO;
                x.tries = Nibble::ZERO;
            })
        }
        Op::SetFlags(slot, new) => {
            let other = f.get(slot.other());
            if new.priority > Nibble::ZERO && new.priority == other.priority {
                return Err(Refusal::EqualPriority {
                    op: name,
                    other: slot.other(),
                    priority: other.priority.get(),
                });
            }
            f.with(slot, |x| *x = new)
        }
    };
    Ok(out)
}

/// If both slots share a non-zero priority, raise `keep`'s (or lower the
/// other's when `keep` is at 15).
fn normalise(f: SlotFlags, keep: SlotId) -> SlotFlags {
    if !f.equal_priorities() {
        return f;
    }
    if f.get(keep).priority < Nibble::MAX {
        f.with(keep, |x| x.priority = x.priority.saturating_inc())
    } else {
        f.with(keep.other(), |x| x.priority = x.priority.saturating_dec())
    }
}

/// Why boot selection chose its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootKind {
    /// A bootable slot already marked good.
    Good,
    /// A slot on trial; one try was used (`tries_left` after this boot).
    Trial {
        /// Tries remaining after this boot.
        tries_left: u8,
    },
    /// No slot was bootable: this is the last resort (the last successful
    /// slot, else A). Nothing is written.
    NoBootable {
        /// True when the chosen slot has its successful bit.
        was_successful: bool,
    },
}

/// What boot selection decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootChoice {
    /// The slot to boot.
    pub slot: SlotId,
    /// Flags to commit before booting (tries decremented on a trial).
    pub flags: SlotFlags,
    /// Why.
    pub kind: BootKind,
}

impl fmt::Display for BootChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            BootKind::Good => write!(f, "slot {} (good)", self.slot),
            BootKind::Trial { tries_left } => {
                let tries = if tries_left == 1 { "try" } else { "tries" };
                write!(
                    f,
                    "slot {} (on trial, {tries_left} {tries} left)",
                    self.slot
                )
            }
            BootKind::NoBootable { was_successful } => write!(
                f,
                "slot {} as a last resort: no slot is bootable ({})",
                self.slot,
                if was_successful {
                    "it was the last successful slot"
                } else {
                    "no slot was ever successful, so A"
                }
            ),
        }
    }
}

/// Boot selection: the bootable slot of highest priority (tie: A); if it
/// is not successful, one try is used before booting. When no slot is
/// bootable, the last successful slot (the higher priority if both, tie A)
/// else A, with flags unchanged.
pub fn boot_select(flags: SlotFlags) -> BootChoice {
    if let Some(slot) = flags.next_boot() {
        let x = flags.get(slot);
        if x.successful {
            return BootChoice {
                slot,
                flags,
                kind: BootKind::Good,
            };
        }
        let tries = x.tries.saturating_dec();
        return BootChoice {
            slot,
            flags: flags.with(slot, |y| y.tries = tries),
            kind: BootKind::Trial {
                tries_left: tries.get(),
            },
        };
    }
    let slot = match (flags.a.successful, flags.b.successful) {
        (true, true) if flags.b.priority > flags.a.priority => SlotId::B,
        (false, true) => SlotId::B,
        _ => SlotId::A,
    };
    BootChoice {
        slot,
        flags,
        kind: BootKind::NoBootable {
            was_successful: flags.get(slot).successful,
        },
    }
}

#[cfg(test)]
mod tests;
