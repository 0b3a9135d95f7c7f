//! Boot selection on a [`Disk`], with the per-slot boot state: the counter
//! of boots that did not reach boot-check, its bound, and the check a boot
//! stage runs on the chosen slot (docs/state-machine.md, "The boot
//! counter").

use super::{BootReport, Disk};
use crate::bootstate::{self, BootState, Stored, DEFAULT_MAX_UNCHECKED_BOOTS};
use crate::device::BlockDevice;
use crate::error::Result;
use crate::flags::Nibble;
use crate::gpt::{GptCopy, Health};
use crate::slot::SlotId;
use crate::state::{self, BootKind, SlotFlags};

fn ix(id: SlotId) -> usize {
    match id {
        SlotId::A => 0,
        SlotId::B => 1,
    }
}

/// The work of one boot selection: the flags and boot states as they are
/// (or, on a dry run, would be) after each step.
struct Run {
    dry_run: bool,
    view: SlotFlags,
    states: [Option<(u64, Stored)>; 2],
    given_up: Vec<(SlotId, String)>,
    gave_up: [bool; 2],
}

impl<D: BlockDevice> Disk<D> {
    /// Disk byte offset of `id`'s boot state; `None` when its flags
    /// partition is too small to have one (under
    /// [`bootstate::MIN_FLAGS_PARTITION`]: no counter is kept).
    pub fn boot_state_offset(&self, id: SlotId) -> Option<u64> {
        let p = self.layout.slot(id).flags_partition();
        bootstate::offset(p.offset, p.size)
    }

    /// `id`'s boot state: its count of boots that did not reach
    /// boot-check and why it was given up. `None` when the slot has no
    /// boot state ([`Disk::boot_state_offset`]).
    pub fn boot_state(&mut self, id: SlotId) -> Result<Option<BootState>> {
        Ok(self.stored_boot_state(id)?.map(|(_, s)| s.state))
    }

    fn stored_boot_state(&mut self, id: SlotId) -> Result<Option<(u64, Stored)>> {
        match self.boot_state_offset(id) {
            None => Ok(None),
            Some(at) => Ok(Some((at, bootstate::read(&mut self.dev, at)?))),
        }
    }

    /// Clear `id`'s boot state (count 0, no reason), as a boot that reached
    /// boot-check does ([`Disk::mark_good`] does it for the booted slot);
    /// nothing is written when it is clear already, or the slot has none.
    pub fn clear_boot_state(&mut self, id: SlotId) -> Result<()> {
        if let Some((at, old)) = self.stored_boot_state(id)? {
            if !old.state.is_clear() {
                bootstate::write(&mut self.dev, at, &old, BootState::default())?;
            }
        }
        Ok(())
    }

    /// [`Disk::boot_select_checked`] with a check that always passes and the
    /// default bound ([`DEFAULT_MAX_UNCHECKED_BOOTS`]).
    pub fn boot_select(&mut self, dry_run: bool) -> Result<BootReport> {
        self.boot_select_checked(dry_run, DEFAULT_MAX_UNCHECKED_BOOTS, &mut |_| Ok(()))
    }

    /// What a boot stage runs: repair a bad copy; pick the slot; if it is
    /// a committed (good) slot whose boots that did not reach boot-check
    /// number `max_unchecked` or more and the other slot is good, give it
    /// up and pick again; record this boot (a slot on trial uses a try;
    /// every boot adds one to the slot's count, saturating) and only then
    /// run `check` on the slot; if the check fails and the other slot is
    /// bootable, give the slot up with the check's reason and pick again.
    /// A slot is given up at most once per call, and never when the other
    /// slot is not good (bound) or not bootable (check): then it is booted
    /// anyway and [`BootReport::forced`] says why.
    ///
    /// Giving a slot up writes its boot state (the reason) first, then its
    /// flags as a slot out of tries (tries 0, successful 0, priority kept)
    /// in one GPT commit. A slot on trial whose tries ran out is named in
    /// its boot state too, once. `max_unchecked` 0 turns the counter off
    /// (no count is written, no slot is given up for it); a failed check
    /// still gives a slot up. With `dry_run` nothing is written and the
    /// report says what would be done (`check` still runs).
    ///
    /// A table that cannot be written safely ([`crate::Gpt::check_writable`])
    /// is booted from as it is: nothing is written (no repair, no try, no
    /// boot state, no check), and a slot on trial is passed over, as if it
    /// had no tries left, because a try that cannot be recorded must not be
    /// taken (a broken update would otherwise boot forever).
    pub fn boot_select_checked(
        &mut self,
        dry_run: bool,
        max_unchecked: u8,
        check: &mut dyn FnMut(SlotId) -> std::result::Result<(), String>,
    ) -> Result<BootReport> {
        if let Err(e) = self.gpt.check_writable() {
            return Ok(self.boot_unwritable(e.to_string()));
        }
        let repaired = if dry_run {
            [GptCopy::Primary, GptCopy::Backup]
                .into_iter()
                .filter_map(|c| match self.gpt.health(c) {
                    Health::Ok => None,
                    Health::Bad(why) => Some((c, why.clone())),
                })
                .collect()
        } else {
            self.repair()?
        };
        let mut run = Run {
            dry_run,
            view: self.slot_flags(),
            states: [
                self.stored_boot_state(SlotId::A)?,
                self.stored_boot_state(SlotId::B)?,
            ],
            given_up: Vec::new(),
            gave_up: [false; 2],
        };
        if max_unchecked > 0 {
            self.name_spent_trials(&mut run)?;
        }
        let mut forced;
        let choice = loop {
            forced = None;
            let choice = state::boot_select(run.view);
            let id = choice.slot;
            let other = id.other();
            let count = run.states[ix(id)]
                .as_ref()
                .map_or(0, |(_, s)| s.state.unchecked_boots);
            if choice.kind == BootKind::Good && max_unchecked > 0 && count >= max_unchecked {
                let why = format!("{count} boots in a row did not reach boot-check");
                if run.view.get(other).good() && !run.gave_up[ix(id)] {
                    self.give_up(&mut run, id, why)?;
                    continue;
                }
                forced = Some(format!(
                    "slot {id}: {why}, but slot {other} is not good: booting {id} anyway"
                ));
            }
            // Record this boot before anything else happens to it.
            if !matches!(choice.kind, BootKind::NoBootable { .. }) {
                if max_unchecked > 0 {
                    let given_up = run.states[ix(id)]
                        .as_ref()
                        .and_then(|(_, s)| s.state.given_up.clone());
                    let n = count.saturating_add(1);
                    self.set_boot_state(&mut run, id, n, given_up)?;
                }
                if !dry_run {
                    self.write_flags(choice.flags)?;
                }
                run.view = choice.flags;
            }
            match check(id) {
                Ok(()) => break choice,
                Err(why) => {
                    let why = format!("its check failed: {why}");
                    // Chosen as bootable (a trial on its last try is not
                    // any more, its try used), and something else to boot.
                    let chosen = !matches!(choice.kind, BootKind::NoBootable { .. });
                    let may = chosen && run.view.get(other).bootable();
                    if may && !run.gave_up[ix(id)] {
                        self.give_up(&mut run, id, why)?;
                        continue;
                    }
                    forced = Some(format!(
                        "slot {id}: {why}, but slot {other} is not bootable: booting {id} anyway"
                    ));
                    break choice;
                }
            }
        };
        let unchecked_boots = run.states[ix(choice.slot)]
            .as_ref()
            .map_or(0, |(_, s)| s.state.unchecked_boots);
        Ok(BootReport {
            choice,
            repaired,
            unwritable: None,
            untried: Vec::new(),
            given_up: run.given_up,
            unchecked_boots,
            forced,
        })
    }

    /// The read-only boot of a table that cannot be written.
    fn boot_unwritable(&self, why: String) -> BootReport {
        let flags = self.slot_flags();
        let mut view = flags;
        let mut untried = Vec::new();
        let mut choice = state::boot_select(view);
        while let BootKind::Trial { .. } = choice.kind {
            untried.push(choice.slot);
            view = view.with(choice.slot, |y| y.tries = Nibble::ZERO);
            choice = state::boot_select(view);
        }
        choice.flags = flags;
        BootReport {
            choice,
            repaired: Vec::new(),
            unwritable: Some(why),
            untried,
            given_up: Vec::new(),
            unchecked_boots: 0,
            forced: None,
        }
    }

    /// A slot on trial whose tries ran out (priority > 0, tries 0, not
    /// successful) after boots that did not reach boot-check: say so in its
    /// boot state, once.
    fn name_spent_trials(&mut self, run: &mut Run) -> Result<()> {
        for id in SlotId::ALL {
            let f = run.view.get(id);
            let Some((_, s)) = &run.states[ix(id)] else {
                continue;
            };
            let n = s.state.unchecked_boots;
            if f.priority > Nibble::ZERO
                && f.tries == Nibble::ZERO
                && !f.successful
                && n > 0
                && s.state.given_up.is_none()
            {
                let why = format!("its tries ran out: {n} boots did not reach boot-check");
                self.set_boot_state(run, id, n, Some(why.clone()))?;
                run.given_up.push((id, why));
            }
        }
        Ok(())
    }

    /// Write (unless a dry run) and remember `id`'s boot state.
    fn set_boot_state(
        &mut self,
        run: &mut Run,
        id: SlotId,
        unchecked_boots: u8,
        given_up: Option<String>,
    ) -> Result<()> {
        let Some((at, old)) = run.states[ix(id)].take() else {
            return Ok(());
        };
        let new = BootState {
            unchecked_boots,
            given_up,
        };
        let stored = if new == old.state {
            old
        } else if run.dry_run {
            Stored {
                state: new,
                current: Some(old.next()),
            }
        } else {
            bootstate::write(&mut self.dev, at, &old, new)?
        };
        run.states[ix(id)] = Some((at, stored));
        Ok(())
    }

    /// Give `id` up: its boot state says why (written first), then its
    /// flags become those of a slot out of tries (one commit).
    fn give_up(&mut self, run: &mut Run, id: SlotId, why: String) -> Result<()> {
        let count = run.states[ix(id)]
            .as_ref()
            .map_or(0, |(_, s)| s.state.unchecked_boots);
        self.set_boot_state(run, id, count, Some(why.clone()))?;
        run.view = run.view.with(id, |f| {
            f.tries = Nibble::ZERO;
            f.successful = false;
        });
        if !run.dry_run {
            self.write_flags(run.view)?;
        }
        run.gave_up[ix(id)] = true;
        run.given_up.push((id, why));
        Ok(())
    }
}
