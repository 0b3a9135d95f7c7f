//! boot-flags: the GPT, A/B slot flags and boot selection.
//!
//! The library every part of slotctl stands on, small enough for a
//! boot-time binary:
//!
//! - [`BlockDevice`]: the one door to a disk ([`FileDevice`] for image
//!   files and block devices, [`MemDevice`] in memory). A test can put a
//!   recording or power-cut device underneath anything here.
//! - [`Gpt`]: an own GPT reader and writer. Both copies are read; a copy is
//!   trusted only when its header CRC, entry-array CRC and self-references
//!   hold; the backup is used when the primary is bad; 512- and 4096-byte
//!   sectors are detected. [`Gpt::commit`] writes one whole copy, flushes,
//!   writes the other, flushes, and changes no byte it does not mean to.
//! - [`Flags`]: priority (bits 48–51), tries (52–55), successful (56) in a
//!   partition's attribute word, bit-compatible with ChromeOS `cgpt` and
//!   GRUB's gptprio.
//! - [`SlotId`], [`SlotLayout`]: slots discovered from partition names
//!   ending `-A` / `-B`; the rest of the name is the role.
//! - [`state`]: the state machine (invalidate, activate, mark-good, mark-bad,
//!   rollback, cancel, set-flags) and boot selection as pure functions.
//! - [`Disk`]: a device, its GPT and layout; each operation is one call,
//!   computed in memory and written by one verified commit.
//! - [`bootstate`]: each slot's boot state (boots in a row that did not
//!   reach boot-check, why the slot was given up), kept at the end of its
//!   flags partition; [`Disk::boot_select_checked`] bounds the boots of a
//!   committed slot that never reaches boot-check.
//!
//! # Example
//!
//! ```
//! use boot_flags::{Disk, Flags, Gpt, Guid, MemDevice, NewPartition, Nibble, SlotId};
//!
//! // A 4 MiB in-memory disk with BOOT-A, BOOT-B and DATA.
//! let mut dev = MemDevice::new(4 << 20);
//! let part = |name: &str, first: u64, last: u64| NewPartition {
//!     name: name.into(),
//!     type_guid: Guid::LINUX_DATA,
//!     unique_guid: Guid::from_random_bytes([name.len() as u8; 16]),
//!     first_lba: first,
//!     last_lba: last,
//!     attributes: 0,
//! };
//! Gpt::create(&mut dev, 512, Guid::from_random_bytes([9; 16]), &[
//!     part("BOOT-A", 2048, 4095),
//!     part("BOOT-B", 4096, 6143),
//!     part("DATA", 6144, 8000),
//! ])?;
//!
//! let mut disk = Disk::open(dev, None)?;
//! // A fresh disk: nothing bootable. The factory marks A good...
//! disk.set_flags(SlotId::A, Flags::new(1, 0, true)?)?;
//! // ...and the system runs from A. An install into B:
//! disk.set_booted(Some(SlotId::A));
//! disk.invalidate(SlotId::B)?;
//! // (write and verify the payload, write the slot record)
//! disk.activate(SlotId::B, Nibble::new(3).unwrap())?;
//! assert_eq!(disk.next_boot(), Some(SlotId::B));
//!
//! // At boot: B is on trial, one try is used.
//! let report = disk.boot_select(false)?;
//! assert_eq!(report.choice.slot, SlotId::B);
//! assert_eq!(disk.flags(SlotId::B).tries.get(), 2);
//! # Ok::<(), boot_flags::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

// Lets the shared test fixtures name the crate as `boot_flags` in unit tests.
#[cfg(test)]
extern crate self as boot_flags;

pub mod bootstate;
mod device;
mod direct;
mod disk;
mod error;
mod flags;
pub mod gpt;
mod guid;
mod slot;
pub mod state;

pub use bootstate::{BootState, DEFAULT_MAX_UNCHECKED_BOOTS};
pub use device::{BlockDevice, FileDevice, MemDevice};
pub use direct::{AlignedBuf, DirectReader, DIRECT_ALIGN, DIRECT_MIN};
pub use disk::{BootReport, Disk};
pub use error::{Error, Result};
pub use flags::{Flags, Nibble, FLAGS_MASK, PRIORITY_SHIFT, SUCCESSFUL_SHIFT, TRIES_SHIFT};
pub use gpt::{Gpt, GptCopy, Health, NewPartition, Partition};
pub use guid::Guid;
pub use slot::{ParseSlotError, Slot, SlotId, SlotLayout, SlotPartition};
pub use state::{BootChoice, BootKind, Op, Refusal, SlotFlags};
