//! A small in-memory A/B disk on a [`SimDevice`], built with boot-flags'
//! own GPT writer, and the boot a device does after a power cut.

use boot_flags::{
    BlockDevice, BootChoice, BootKind, Disk, Flags, Gpt, Guid, NewPartition, SlotFlags, SlotId,
};

use super::{CowDevice, SimDevice, SliceDevice};

/// Size of the simulated disk.
pub const DISK_LEN: usize = 4 << 20;

/// A fresh disk: BOOT-A, ROOT-A, BOOT-B, ROOT-B, DATA, data area filled with
/// a pattern, flags zero (other attribute bits set, to be preserved).
pub fn fresh_disk(sector: u32, report_sector_size: bool) -> SimDevice {
    let mut bytes = vec![0u8; DISK_LEN];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let mut dev = SimDevice::new(bytes, sector, report_sector_size);
    let ss = u64::from(sector);
    let unit = (512 << 10) / ss; // 512 KiB per partition
    let first = boot_flags::gpt::usable_area(sector, DISK_LEN as u64 / ss)
        .expect("usable area")
        .0
        .max(unit);
    let names = ["BOOT-A", "ROOT-A", "BOOT-B", "ROOT-B", "DATA"];
    let parts: Vec<NewPartition> = names
        .iter()
        .enumerate()
        .map(|(i, n)| NewPartition {
            name: (*n).into(),
            type_guid: Guid::LINUX_DATA,
            unique_guid: Guid::from_random_bytes([i as u8 + 1; 16]),
            first_lba: first + unit * i as u64,
            last_lba: first + unit * (i as u64 + 1) - 1,
            attributes: 1 | (1 << 2) | (1 << 57) | (1 << 60),
        })
        .collect();
    Gpt::create(
        &mut dev,
        sector,
        Guid::from_random_bytes([0x42; 16]),
        &parts,
    )
    .expect("create GPT");
    dev.flush().expect("flush");
    dev
}

/// Set both slots' flags (one commit each, as a factory would).
pub fn with_flags(mut dev: SimDevice, a: Flags, b: Flags) -> SimDevice {
    {
        let mut disk = Disk::open(&mut dev, None).expect("open");
        // Set the one with the lower priority first so no two slots share
        // a non-zero priority on the way.
        let (first, second) = if a.priority <= b.priority {
            ((SlotId::A, a), (SlotId::B, b))
        } else {
            ((SlotId::B, b), (SlotId::A, a))
        };
        disk.set_flags(SlotId::A, Flags::ZERO).expect("zero A");
        disk.set_flags(SlotId::B, Flags::ZERO).expect("zero B");
        disk.set_flags(first.0, first.1).expect("set flags");
        disk.set_flags(second.0, second.1).expect("set flags");
    }
    dev
}

/// Shorthand for flags in tests.
pub fn fl(priority: u8, tries: u8, successful: bool) -> Flags {
    Flags::new(priority, tries, successful).expect("valid flags")
}

/// What a reader sees on a disk: the entry array of the copy in use and
/// both slots' flags. `Err` when the table cannot be read.
pub fn read_view(bytes: &[u8], sector: u32, report: bool) -> Result<(Vec<u8>, SlotFlags), String> {
    let dev = SliceDevice {
        bytes,
        sector_size: report.then_some(sector),
    };
    let disk = Disk::open(dev, None).map_err(|e| e.to_string())?;
    Ok((disk.gpt().entry_bytes().to_vec(), disk.slot_flags()))
}

/// The outcome of a simulated boot.
#[derive(Debug)]
pub struct Booted {
    /// What boot selection chose.
    pub choice: BootChoice,
    /// The flags as read before the boot.
    pub before: SlotFlags,
    /// The disk after the boot stage's writes (empty unless asked for).
    pub after: Vec<u8>,
}

/// Boot a crash disk as the boot stage does (`slotctl boot-select`: open,
/// repair a bad copy, pick, use a try), then check the choice against
/// [`expected_boot`] (DESIGN.md's rules, written in this crate) and that
/// the table is healthy afterwards and holds the flags those rules give.
pub fn boot(bytes: &[u8], sector: u32, report: bool) -> Result<Booted, String> {
    boot_with(bytes, sector, report, false)
}

/// [`boot`], returning the disk after the boot when `keep`.
pub fn boot_with(bytes: &[u8], sector: u32, report: bool, keep: bool) -> Result<Booted, String> {
    let mut dev = CowDevice::new(bytes, report.then_some(sector));
    let (choice, before) = {
        let mut disk = Disk::open(&mut dev, None).map_err(|e| format!("open: {e}"))?;
        let before = disk.slot_flags();
        let report = disk
            .boot_select(false)
            .map_err(|e| format!("boot-select: {e}"))?;
        (report.choice, before)
    };
    check_choice(before, &choice)?;
    let disk = Disk::open(&mut dev, None).map_err(|e| format!("reopen after boot: {e}"))?;
    if !disk.gpt().is_healthy() {
        return Err("a GPT copy is still bad after boot-select".into());
    }
    let on_disk = raw_flags(disk.slot_flags());
    let want = expected_boot(raw_flags(before));
    if on_disk != (want.a, want.b) {
        return Err(format!(
            "after boot-select the flags on disk are {on_disk:?}, expected {:?} (from {:?})",
            (want.a, want.b),
            raw_flags(before)
        ));
    }
    Ok(Booted {
        choice,
        before,
        after: if keep { dev.to_vec() } else { Vec::new() },
    })
}

/// One slot's flags as plain numbers: (priority, tries, successful).
pub type Raw = (u8, u8, bool);

/// Both slots' flags as plain numbers.
pub fn raw_flags(f: SlotFlags) -> (Raw, Raw) {
    let r = |x: Flags| (x.priority.get(), x.tries.get(), x.successful);
    (r(f.a), r(f.b))
}

/// What boot selection must do, by [`expected_boot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The slot to boot.
    pub slot: SlotId,
    /// A's flags after the boot stage.
    pub a: Raw,
    /// B's flags after the boot stage.
    pub b: Raw,
    /// Why (as boot-flags reports it).
    pub kind: BootKind,
}

/// Boot selection written here from DESIGN.md's rules, not taken from
/// boot-flags (`state::boot_select` is what `Disk::boot_select` runs, so
/// comparing with it would check nothing). A slot is bootable when
/// `priority > 0 && (tries > 0 || successful)`; the bootable slot of
/// highest priority boots (tie: A); if it is not successful, one try is
/// used before booting; when no slot is bootable, the last successful slot
/// boots (both successful and not bootable means both at priority 0: A),
/// else A, and nothing is written.
pub fn expected_boot((a, b): (Raw, Raw)) -> Expected {
    let bootable = |(p, t, s): Raw| p > 0 && (t > 0 || s);
    let pick = match (bootable(a), bootable(b)) {
        (true, true) => Some(if b.0 > a.0 { SlotId::B } else { SlotId::A }),
        (true, false) => Some(SlotId::A),
        (false, true) => Some(SlotId::B),
        (false, false) => None,
    };
    let Some(slot) = pick else {
        let slot = if !a.2 && b.2 { SlotId::B } else { SlotId::A };
        let was_successful = if slot == SlotId::A { a.2 } else { b.2 };
        return Expected {
            slot,
            a,
            b,
            kind: BootKind::NoBootable { was_successful },
        };
    };
    let (mut na, mut nb) = (a, b);
    let chosen = if slot == SlotId::A { &mut na } else { &mut nb };
    let kind = if chosen.2 {
        BootKind::Good
    } else {
        chosen.1 -= 1;
        BootKind::Trial {
            tries_left: chosen.1,
        }
    };
    Expected {
        slot,
        a: na,
        b: nb,
        kind,
    }
}

/// Check what boot-select chose from `before` against [`expected_boot`].
pub fn check_choice(before: SlotFlags, choice: &BootChoice) -> Result<(), String> {
    let want = expected_boot(raw_flags(before));
    let (a, b) = raw_flags(choice.flags);
    let got = Expected {
        slot: choice.slot,
        a,
        b,
        kind: choice.kind,
    };
    if got != want {
        return Err(format!(
            "boot-select chose {got:?} from {:?}; the rules say {want:?}",
            raw_flags(before)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: bool = false;
    const S: bool = true;

    /// Hand-worked outcomes: (A, B) before; the slot; A, B after; why.
    #[allow(clippy::type_complexity)]
    fn cases() -> Vec<((Raw, Raw), SlotId, Raw, Raw, BootKind)> {
        use BootKind::*;
        use SlotId::{A, B};
        vec![
            // A good and higher: A, nothing changes.
            (((2, 0, S), (1, 3, N)), A, (2, 0, S), (1, 3, N), Good),
            // B new and higher: B on trial, one try used.
            (
                ((1, 0, S), (2, 3, N)),
                B,
                (1, 0, S),
                (2, 2, N),
                Trial { tries_left: 2 },
            ),
            // B's last try.
            (
                ((1, 0, S), (2, 1, N)),
                B,
                (1, 0, S),
                (2, 0, N),
                Trial { tries_left: 0 },
            ),
            // B out of tries: no longer bootable, back to A.
            (((1, 0, S), (2, 0, N)), A, (1, 0, S), (2, 0, N), Good),
            // Equal priorities: A.
            (
                ((3, 1, N), (3, 0, S)),
                A,
                (3, 0, N),
                (3, 0, S),
                Trial { tries_left: 0 },
            ),
            (((5, 0, S), (5, 0, S)), A, (5, 0, S), (5, 0, S), Good),
            // Priority 0 is never bootable, even successful with tries.
            (
                ((0, 15, S), (1, 1, N)),
                B,
                (0, 15, S),
                (1, 0, N),
                Trial { tries_left: 0 },
            ),
            // Successful keeps a slot bootable at 0 tries; the higher wins.
            (((15, 0, S), (14, 7, N)), A, (15, 0, S), (14, 7, N), Good),
            // Nothing bootable: the successful slot, flags unchanged.
            (
                ((0, 0, N), (0, 0, S)),
                B,
                (0, 0, N),
                (0, 0, S),
                NoBootable {
                    was_successful: true,
                },
            ),
            (
                ((0, 0, S), (0, 0, N)),
                A,
                (0, 0, S),
                (0, 0, N),
                NoBootable {
                    was_successful: true,
                },
            ),
            (
                ((0, 0, S), (0, 0, S)),
                A,
                (0, 0, S),
                (0, 0, S),
                NoBootable {
                    was_successful: true,
                },
            ),
            // Nothing bootable, nothing ever successful: A.
            (
                ((0, 0, N), (0, 0, N)),
                A,
                (0, 0, N),
                (0, 0, N),
                NoBootable {
                    was_successful: false,
                },
            ),
            (
                ((3, 0, N), (2, 0, N)),
                A,
                (3, 0, N),
                (2, 0, N),
                NoBootable {
                    was_successful: false,
                },
            ),
            (
                ((0, 4, N), (0, 2, S)),
                B,
                (0, 4, N),
                (0, 2, S),
                NoBootable {
                    was_successful: true,
                },
            ),
        ]
    }

    fn to_flags((a, b): (Raw, Raw)) -> SlotFlags {
        SlotFlags {
            a: fl(a.0, a.1, a.2),
            b: fl(b.0, b.1, b.2),
        }
    }

    #[test]
    fn the_reference_model_gives_the_hand_worked_outcomes() {
        for (before, slot, a, b, kind) in cases() {
            assert_eq!(
                expected_boot(before),
                Expected { slot, a, b, kind },
                "from {before:?}"
            );
        }
    }

    /// boot-flags on a real in-memory disk (512- and 4096-byte sectors)
    /// against the hand-worked outcomes, through the same [`boot`] the
    /// power-cut suites use: the flags are written as raw attribute bits
    /// (no state machine), boot-select runs, the table is read back.
    #[test]
    fn boot_select_on_a_disk_gives_the_hand_worked_outcomes() {
        for sector in [512u32, 4096] {
            for (before, slot, a, b, kind) in cases() {
                let mut dev = fresh_disk(sector, false);
                Disk::open(&mut dev, None)
                    .expect("open")
                    .write_flags(to_flags(before))
                    .expect("write flags");
                let booted = boot_with(dev.bytes(), sector, false, true)
                    .unwrap_or_else(|e| panic!("{sector}: from {before:?}: {e}"));
                assert_eq!(booted.choice.slot, slot, "{sector}: from {before:?}");
                assert_eq!(booted.choice.kind, kind, "{sector}: from {before:?}");
                let (_, after) = read_view(&booted.after, sector, false).expect("read back");
                assert_eq!(raw_flags(after), (a, b), "{sector}: from {before:?}");
            }
        }
    }

    /// The check refuses choices that break a rule.
    #[test]
    fn check_choice_refuses_wrong_choices() {
        let before = to_flags(((1, 0, S), (2, 3, N)));
        let right = BootChoice {
            slot: SlotId::B,
            flags: to_flags(((1, 0, S), (2, 2, N))),
            kind: BootKind::Trial { tries_left: 2 },
        };
        check_choice(before, &right).unwrap();
        let wrong = [
            // The try not used.
            BootChoice {
                flags: before,
                kind: BootKind::Trial { tries_left: 3 },
                ..right
            },
            // The lower priority booted.
            BootChoice {
                slot: SlotId::A,
                flags: before,
                kind: BootKind::Good,
            },
            // Called good while on trial.
            BootChoice {
                kind: BootKind::Good,
                ..right
            },
            // The other slot's flags touched.
            BootChoice {
                flags: to_flags(((1, 1, S), (2, 2, N))),
                ..right
            },
        ];
        for w in wrong {
            assert!(check_choice(before, &w).is_err(), "{w:?} passed");
        }
        // Nothing bootable, none successful: A, not B.
        let none = to_flags(((0, 0, N), (0, 0, N)));
        let b = BootChoice {
            slot: SlotId::B,
            flags: none,
            kind: BootKind::NoBootable {
                was_successful: false,
            },
        };
        assert!(check_choice(none, &b).is_err());
    }
}
