//! Slots: partitions named `ROLE-A` / `ROLE-B`, discovered from the GPT.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::gpt::{Gpt, Partition};

/// Slot A or slot B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlotId {
    /// Partitions named `*-A`.
    A,
    /// Partitions named `*-B`.
    B,
}

impl SlotId {
    /// Both slots, A first.
    pub const ALL: [SlotId; 2] = [SlotId::A, SlotId::B];

    /// The other slot.
    pub fn other(self) -> SlotId {
        match self {
            SlotId::A => SlotId::B,
            SlotId::B => SlotId::A,
        }
    }

    /// The partition name suffix, `-A` or `-B`.
    pub fn suffix(self) -> &'static str {
        match self {
            SlotId::A => "-A",
            SlotId::B => "-B",
        }
    }

    /// "A" or "B".
    pub fn as_str(self) -> &'static str {
        match self {
            SlotId::A => "A",
            SlotId::B => "B",
        }
    }
}

impl std::ops::Not for SlotId {
    type Output = SlotId;
    fn not(self) -> SlotId {
        self.other()
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error parsing a [`SlotId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a slot: {0:?} (expected A or B)")]
pub struct ParseSlotError(pub String);

impl FromStr for SlotId {
    type Err = ParseSlotError;
    fn from_str(s: &str) -> std::result::Result<SlotId, ParseSlotError> {
        match s {
            "A" | "a" => Ok(SlotId::A),
            "B" | "b" => Ok(SlotId::B),
            _ => Err(ParseSlotError(s.to_string())),
        }
    }
}

/// One partition of a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotPartition {
    /// The name without its `-A`/`-B` suffix, e.g. `ROOT`.
    pub role: String,
    /// 1-based partition number.
    pub index: u32,
    /// Full partition name, e.g. `ROOT-A`.
    pub name: String,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

/// One slot: its partitions in table order and its flags partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Which slot.
    pub id: SlotId,
    /// Its partitions, in table order.
    pub partitions: Vec<SlotPartition>,
    /// Partition number whose attribute word holds the slot's flags.
    pub flags_index: u32,
}

impl Slot {
    /// The partition with this role.
    pub fn partition(&self, role: &str) -> Option<&SlotPartition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// The flags partition.
    pub fn flags_partition(&self) -> &SlotPartition {
        self.partitions
            .iter()
            .find(|p| p.index == self.flags_index)
            .unwrap_or(&self.partitions[0])
    }

    /// The roles, in table order.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.partitions.iter().map(|p| p.role.as_str())
    }
}

/// The slots of a disk and its shared partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotLayout {
    a: Slot,
    b: Slot,
    /// Partitions that belong to no slot (`DATA`, an ESP, ...).
    pub shared: Vec<Partition>,
}

fn slot_of_name(name: &str) -> Option<(SlotId, &str)> {
    SlotId::ALL.into_iter().find_map(|id| {
        name.strip_suffix(id.suffix())
            .filter(|role| !role.is_empty())
            .map(|role| (id, role))
    })
}

impl SlotLayout {
    /// Discover the slots from partition names. `flags_role` picks the
    /// partition carrying each slot's flags; by default it is each slot's
    /// first partition in table order. Every partition must lie inside the
    /// usable area; both slots must have the same roles, each once.
    pub fn discover(gpt: &Gpt, flags_role: Option<&str>) -> Result<SlotLayout> {
        let h = gpt.header();
        let mut parts: [Vec<SlotPartition>; 2] = [Vec::new(), Vec::new()];
        let mut shared = Vec::new();
        for p in gpt.partitions() {
            if p.first_lba < h.first_usable_lba
                || p.last_lba > h.last_usable_lba
                || p.first_lba > p.last_lba
            {
                return Err(Error::PartitionOutOfRange {
                    index: p.index,
                    name: p.name,
                });
            }
            let Some((id, role)) = slot_of_name(&p.name) else {
                shared.push(p);
                continue;
            };
            let list = &mut parts[id as usize];
            if list.iter().any(|q| q.role == role) {
                return Err(Error::DuplicateRole {
                    slot: id,
                    role: role.to_string(),
                });
            }
            let (offset, size) = gpt.byte_range(&p);
            list.push(SlotPartition {
                role: role.to_string(),
                index: p.index,
                name: p.name.clone(),
                offset,
                size,
            });
        }
        check_disjoint(gpt.partitions())?;
        let [a, b] = parts;
        match (a.is_empty(), b.is_empty()) {
            (true, true) => {
                return Err(Error::NoSlots("no partition name ends in -A or -B".into()))
            }
            (false, true) => {
                return Err(Error::NoSlots(
                    "slot A has partitions but no partition name ends in -B".into(),
                ))
            }
            (true, false) => {
                return Err(Error::NoSlots(
                    "slot B has partitions but no partition name ends in -A".into(),
                ))
            }
            (false, false) => {}
        }
        let roles = |v: &[SlotPartition]| v.iter().map(|p| p.role.clone()).collect::<BTreeSet<_>>();
        let (ra, rb) = (roles(&a), roles(&b));
        if ra != rb {
            let join = |s: Vec<&String>| s.into_iter().cloned().collect::<Vec<_>>().join(", ");
            return Err(Error::RoleMismatch {
                only_a: join(ra.difference(&rb).collect()),
                only_b: join(rb.difference(&ra).collect()),
            });
        }
        let make = |id: SlotId, partitions: Vec<SlotPartition>| -> Result<Slot> {
            let flags_index = match flags_role {
                None => partitions[0].index,
                Some(role) => {
                    partitions
                        .iter()
                        .find(|p| p.role == role)
                        .ok_or_else(|| Error::FlagsRole {
                            slot: id,
                            role: role.to_string(),
                        })?
                        .index
                }
            };
            Ok(Slot {
                id,
                partitions,
                flags_index,
            })
        };
        Ok(SlotLayout {
            a: make(SlotId::A, a)?,
            b: make(SlotId::B, b)?,
            shared,
        })
    }

    /// One slot.
    pub fn slot(&self, id: SlotId) -> &Slot {
        match id {
            SlotId::A => &self.a,
            SlotId::B => &self.b,
        }
    }

    /// The slot a partition number belongs to, if any.
    pub fn slot_of_partition(&self, index: u32) -> Option<SlotId> {
        SlotId::ALL
            .into_iter()
            .find(|&id| self.slot(id).partitions.iter().any(|p| p.index == index))
    }
}

/// Refuse a table in which two partitions share a sector: an install into
/// one slot must never touch the other (power-loss invariant 3), nor a
/// shared partition.
fn check_disjoint(mut parts: Vec<Partition>) -> Result<()> {
    parts.sort_by_key(|p| (p.first_lba, p.index));
    for w in parts.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.first_lba <= a.last_lba {
            return Err(Error::Overlap {
                first: a.index,
                first_name: a.name.clone(),
                second: b.index,
                second_name: b.name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod disjoint_tests {
    use super::*;
    use crate::Guid;

    fn part(index: u32, name: &str, first_lba: u64, last_lba: u64) -> Partition {
        Partition {
            index,
            type_guid: Guid::LINUX_DATA,
            unique_guid: Guid::from_random_bytes([index as u8; 16]),
            first_lba,
            last_lba,
            attributes: 0,
            name: name.to_string(),
        }
    }

    #[test]
    fn overlapping_partitions_are_refused_naming_both() {
        // ROOT-B (4) starts inside ROOT-A (2); table order differs from disk order.
        let parts = vec![
            part(4, "ROOT-B", 3000, 5000),
            part(2, "ROOT-A", 2048, 3000),
            part(5, "DATA", 6000, 7000),
        ];
        let err = check_disjoint(parts).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Overlap {
                    first: 2,
                    second: 4,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "partitions 2 (ROOT-A) and 4 (ROOT-B) overlap"
        );
    }

    #[test]
    fn adjacent_partitions_are_fine() {
        let parts = vec![part(1, "ROOT-A", 2048, 4095), part(2, "ROOT-B", 4096, 8191)];
        check_disjoint(parts).unwrap();
    }
}
