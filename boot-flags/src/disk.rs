//! [`Disk`]: a device with its GPT and slot layout, and the state-machine
//! operations as one call each (compute, then one verified commit).

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::flags::{Flags, Nibble};
use crate::gpt::{Gpt, GptCopy};
use crate::slot::{SlotId, SlotLayout};
use crate::state::{self, BootChoice, Op, SlotFlags};

mod select;

/// A disk with A/B slots, ready for state-machine operations.
#[derive(Debug)]
pub struct Disk<D: BlockDevice> {
    dev: D,
    gpt: Gpt,
    layout: SlotLayout,
    booted: Option<SlotId>,
    flags_role: Option<String>,
}

/// What [`Disk::boot_select`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootReport {
    /// The choice (and the flags committed, unless a dry run).
    pub choice: BootChoice,
    /// GPT copies that were bad and rewritten first (or would be, on a dry
    /// run), with the reason.
    pub repaired: Vec<(GptCopy, String)>,
    /// Why nothing could be written (see [`Gpt::check_writable`]): the
    /// table was used as read, no copy rebuilt, no try recorded.
    pub unwritable: Option<String>,
    /// Slots on trial that were passed over because their try could not be
    /// recorded (only when `unwritable`).
    pub untried: Vec<SlotId>,
    /// Slots this boot selection gave up (or named as out of tries), with
    /// why, in order; the reason is in each slot's boot state.
    pub given_up: Vec<(SlotId, String)>,
    /// The chosen slot's boots in a row that did not reach boot-check,
    /// this one included (0 when the counter is off or the slot has no
    /// boot state).
    pub unchecked_boots: u8,
    /// The chosen slot reached the bound or failed its check, and was
    /// booted anyway because the other slot is not good (bound) or not
    /// bootable (check): why. A device must boot something.
    pub forced: Option<String>,
}

impl<D: BlockDevice> Disk<D> {
    /// Read the GPT and discover the slots. `flags_role` picks the role
    /// whose partition holds each slot's flags (default: each slot's first
    /// partition). No booted slot is assumed: see [`Disk::set_booted`].
    pub fn open(mut dev: D, flags_role: Option<&str>) -> Result<Disk<D>> {
        let gpt = Gpt::read(&mut dev)?;
        let layout = SlotLayout::discover(&gpt, flags_role)?;
        Ok(Disk {
            dev,
            gpt,
            layout,
            booted: None,
            flags_role: flags_role.map(str::to_string),
        })
    }

    /// The GPT as read (and as changed by commits since).
    pub fn gpt(&self) -> &Gpt {
        &self.gpt
    }

    /// The slots and shared partitions.
    pub fn layout(&self) -> &SlotLayout {
        &self.layout
    }

    /// The device, e.g. to write a payload into a slot's partitions.
    pub fn device(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Give the device back.
    pub fn into_device(self) -> D {
        self.dev
    }

    /// The slot the system runs from, if this is its disk.
    pub fn booted(&self) -> Option<SlotId> {
        self.booted
    }

    /// Say which slot is booted (from detection or `--booted`).
    pub fn set_booted(&mut self, booted: Option<SlotId>) {
        self.booted = booted;
    }

    /// One slot's flags.
    pub fn flags(&self, id: SlotId) -> Flags {
        let idx = self.layout.slot(id).flags_index;
        let attrs = self.gpt.partition(idx).map(|p| p.attributes).unwrap_or(0);
        Flags::from_attributes(attrs)
    }

    /// Both slots' flags.
    pub fn slot_flags(&self) -> SlotFlags {
        SlotFlags {
            a: self.flags(SlotId::A),
            b: self.flags(SlotId::B),
        }
    }

    /// The slot boot selection would pick, if any is bootable.
    pub fn next_boot(&self) -> Option<SlotId> {
        self.slot_flags().next_boot()
    }

    /// `Ok` when a commit may write this disk's table; the reason it may
    /// not otherwise ([`Gpt::check_writable`]). Commands that write check
    /// this before writing anything (payloads included).
    pub fn check_writable(&self) -> Result<()> {
        self.gpt.check_writable()
    }

    /// Write `new` flags: one commit (both copies), then read the table back
    /// past the cache and check it. Nothing is written when nothing changes
    /// and both copies are good.
    pub fn write_flags(&mut self, new: SlotFlags) -> Result<()> {
        if new == self.slot_flags() && self.gpt.is_healthy() {
            return Ok(());
        }
        let mut gpt = self.gpt.clone();
        for id in SlotId::ALL {
            let idx = self.layout.slot(id).flags_index;
            let attrs = gpt
                .partition(idx)
                .ok_or(Error::NoSuchPartition(idx))?
                .attributes;
            gpt.set_attributes(idx, new.get(id).apply_to(attrs))?;
        }
        gpt.commit(&mut self.dev)?;
        self.gpt = gpt;
        self.verify()
    }

    /// Re-read the table from the medium and check it is what we committed.
    fn verify(&mut self) -> Result<()> {
        for (off, len) in self.gpt.written_ranges() {
            self.dev
                .drop_cache(off, len)
                .map_err(|e| Error::io("cannot drop the cache for read-back", e))?;
        }
        let back = Gpt::read(&mut self.dev)?;
        if !back.is_healthy() {
            let why = format!(
                "primary {}, backup {}",
                back.health(GptCopy::Primary),
                back.health(GptCopy::Backup)
            );
            return Err(Error::VerifyFailed(why));
        }
        if back.entry_bytes() != self.gpt.entry_bytes() {
            return Err(Error::VerifyFailed("entry array differs".into()));
        }
        self.layout = SlotLayout::discover(&back, self.flags_role.as_deref())?;
        self.gpt = back;
        Ok(())
    }

    /// Apply a state-machine operation: compute, then one commit. A refusal
    /// writes nothing. Returns the new flags.
    pub fn apply(&mut self, op: Op) -> Result<SlotFlags> {
        let new = state::apply(self.slot_flags(), self.booted, &op)?;
        // Whose count starts again: the booted slot's when its boot reached
        // boot-check; the target's when it is made the next boot by hand
        // (activate, rollback), so that an old count or reason does not give
        // it up at its first boot. Cleared before the flags, so a cut in
        // between leaves a clear count under the old flags (a slot on trial
        // stays bound by its tries), never new flags with a stale count.
        let fresh = match op {
            Op::MarkGood => self.booted,
            Op::Activate { target, .. } => Some(target),
            Op::Rollback => self.booted.map(SlotId::other),
            _ => None,
        };
        if let Some(s) = fresh {
            self.clear_boot_state(s)?;
        }
        self.write_flags(new)?;
        Ok(new)
    }

    /// [`Op::Invalidate`]: first step of an install into `target`.
    pub fn invalidate(&mut self, target: SlotId) -> Result<()> {
        self.apply(Op::Invalidate(target)).map(drop)
    }

    /// [`Op::Activate`]: last step of an install, after the caller checked
    /// the target's slot record. Clears the target's boot state.
    pub fn activate(&mut self, target: SlotId, tries: Nibble) -> Result<()> {
        self.apply(Op::Activate { target, tries }).map(drop)
    }

    /// [`Op::MarkGood`]; also clears the booted slot's boot state (count
    /// 0, no reason), written only when it is not clear already.
    pub fn mark_good(&mut self) -> Result<()> {
        self.apply(Op::MarkGood).map(drop)
    }

    /// [`Op::MarkBad`].
    pub fn mark_bad(&mut self, slot: Option<SlotId>, force: bool) -> Result<()> {
        self.apply(Op::MarkBad { slot, force }).map(drop)
    }

    /// [`Op::Rollback`]. Clears the other slot's boot state.
    pub fn rollback(&mut self) -> Result<()> {
        self.apply(Op::Rollback).map(drop)
    }

    /// [`Op::Cancel`].
    pub fn cancel(&mut self) -> Result<()> {
        self.apply(Op::Cancel).map(drop)
    }

    /// [`Op::SetFlags`].
    pub fn set_flags(&mut self, slot: SlotId, flags: Flags) -> Result<()> {
        self.apply(Op::SetFlags(slot, flags)).map(drop)
    }

    /// Rewrite a bad GPT copy from the good one. Returns the copies that
    /// were bad, with the reason (empty: nothing to do, nothing written).
    pub fn repair(&mut self) -> Result<Vec<(GptCopy, String)>> {
        let mut gpt = self.gpt.clone();
        let bad = gpt.repair(&mut self.dev)?;
        if !bad.is_empty() {
            self.gpt = gpt;
            self.verify()?;
        }
        Ok(bad)
    }
}
