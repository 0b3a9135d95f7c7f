//! Building a fresh GPT (protective MBR, both copies) on a blank device.

use super::header::Header;
use super::Gpt;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::guid::Guid;

/// Entries in a fresh table (what cgptlib requires).
const NUM_ENTRIES: u32 = 128;
/// Bytes per entry in a fresh table.
const ENTRY_SIZE: u32 = 128;
/// Longest partition name, in UTF-16 code units.
const MAX_NAME_UNITS: usize = 36;

/// A partition of a fresh table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPartition {
    /// Name, at most 36 UTF-16 code units.
    pub name: String,
    /// Type GUID (not zero).
    pub type_guid: Guid,
    /// Unique GUID.
    pub unique_guid: Guid,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Attribute word.
    pub attributes: u64,
}

/// The usable area of a fresh table on a disk of `disk_sectors` sectors:
/// `(first_usable_lba, last_usable_lba)`.
pub fn usable_area(sector_size: u32, disk_sectors: u64) -> Option<(u64, u64)> {
    let array = u64::from(NUM_ENTRIES * ENTRY_SIZE).div_ceil(u64::from(sector_size));
    let first = 2 + array;
    let last = disk_sectors.checked_sub(2 + array)?;
    (last >= first).then_some((first, last))
}

fn protective_mbr(disk_sectors: u64) -> [u8; 512] {
    let mut mbr = [0u8; 512];
    let e = &mut mbr[446..462];
    e[0] = 0x00; // not bootable
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    e[4] = 0xee; // GPT protective
    e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX);
    e[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    mbr
}

fn encode_entries(parts: &[NewPartition], first: u64, last: u64) -> Result<Vec<u8>> {
    if parts.len() > NUM_ENTRIES as usize {
        return Err(Error::BadLayout(format!(
            "{} partitions, at most {NUM_ENTRIES}",
            parts.len()
        )));
    }
    let mut sorted: Vec<&NewPartition> = parts.iter().collect();
    sorted.sort_by_key(|p| p.first_lba);
    for w in sorted.windows(2) {
        if w[1].first_lba <= w[0].last_lba {
            return Err(Error::BadLayout(format!(
                "partitions {} and {} overlap",
                w[0].name, w[1].name
            )));
        }
    }
    let mut entries = vec![0u8; (NUM_ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in parts.iter().enumerate() {
        if p.type_guid.is_zero() {
            return Err(Error::BadLayout(format!("{}: zero type GUID", p.name)));
        }
        if p.first_lba < first || p.last_lba > last || p.first_lba > p.last_lba {
            return Err(Error::BadLayout(format!(
                "{}: LBAs {}..={} outside the usable area {first}..={last}",
                p.name, p.first_lba, p.last_lba
            )));
        }
        let units: Vec<u16> = p.name.encode_utf16().collect();
        if units.len() > MAX_NAME_UNITS {
            return Err(Error::BadLayout(format!(
                "name {:?} is longer than {MAX_NAME_UNITS} UTF-16 units",
                p.name
            )));
        }
        let e = &mut entries[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&p.type_guid.0);
        e[16..32].copy_from_slice(&p.unique_guid.0);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        for (j, u) in units.iter().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    Ok(entries)
}

impl Gpt {
    /// Write a fresh table to `dev`: a protective MBR, the primary copy,
    /// flush, the backup copy, flush; then read it back. Partitions are
    /// numbered in the order given. 128 entries of 128 bytes, as cgpt wants.
    pub fn create(
        dev: &mut dyn BlockDevice,
        sector_size: u32,
        disk_guid: Guid,
        parts: &[NewPartition],
    ) -> Result<Gpt> {
        if sector_size != 512 && sector_size != 4096 {
            return Err(Error::SectorSize(sector_size));
        }
        let ss = u64::from(sector_size);
        let disk_len = dev
            .len()
            .map_err(|e| Error::io("cannot get the disk size", e))?;
        let disk_sectors = disk_len / ss;
        let (first, last) = usable_area(sector_size, disk_sectors).ok_or_else(|| {
            Error::BadLayout(format!("a disk of {disk_len} bytes is too small for a GPT"))
        })?;
        let entries = encode_entries(parts, first, last)?;
        let array_sectors = u64::from(NUM_ENTRIES * ENTRY_SIZE).div_ceil(ss);
        let primary = Header {
            revision: 0x0001_0000,
            header_size: 92,
            my_lba: 1,
            alternate_lba: disk_sectors - 1,
            first_usable_lba: first,
            last_usable_lba: last,
            disk_guid,
            entries_lba: 2,
            num_entries: NUM_ENTRIES,
            entry_size: ENTRY_SIZE,
            entries_crc: crc32fast::hash(&entries),
        };
        let backup = Header {
            my_lba: disk_sectors - 1,
            alternate_lba: 1,
            entries_lba: disk_sectors - 1 - array_sectors,
            ..primary.clone()
        };
        let mut lba0 = vec![0u8; sector_size as usize];
        lba0[..512].copy_from_slice(&protective_mbr(disk_sectors));
        let io = |what: &str| {
            let what = what.to_string();
            move |e| Error::io(what, e)
        };
        dev.write_all_at(0, &lba0)
            .map_err(io("cannot write the protective MBR"))?;
        for h in [&primary, &backup] {
            let mut sector = vec![0u8; sector_size as usize];
            h.write_into(&mut sector);
            dev.write_all_at(h.entries_lba * ss, &entries)
                .map_err(io("cannot write GPT entries"))?;
            dev.write_all_at(h.my_lba * ss, &sector)
                .map_err(io("cannot write a GPT header"))?;
            dev.flush().map_err(io("cannot flush the GPT"))?;
        }
        Gpt::read(dev)
    }
}
