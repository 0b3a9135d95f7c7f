//! The GUID partition table: reading both copies, trusting only checked
//! ones, and crash-safe commits that change nothing they do not mean to.
//!
//! The table is kept as the raw bytes read from disk (each copy's header
//! sector and the entry array). Changing a partition's attributes edits
//! those bytes in place, and a commit writes them back with only the CRCs
//! recomputed: other entries, their order and numbering, unknown attribute
//! bits and reserved bytes stay exactly as they were.

mod create;
mod header;

pub use create::{usable_area, NewPartition};
pub use header::Header;

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::guid::Guid;
use header::{MIN_ENTRY_SIZE, SIGNATURE};

/// The two places a GPT lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GptCopy {
    /// Header at LBA 1, entries after it.
    Primary,
    /// Header in the last LBA, entries before it.
    Backup,
}

impl GptCopy {
    /// The other copy.
    pub fn other(self) -> GptCopy {
        match self {
            GptCopy::Primary => GptCopy::Backup,
            GptCopy::Backup => GptCopy::Primary,
        }
    }
}

impl std::fmt::Display for GptCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GptCopy::Primary => "primary",
            GptCopy::Backup => "backup",
        })
    }
}

/// Whether a copy can be trusted, as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Header CRC, entry-array CRC and self-references hold, and it agrees
    /// with the copy in use.
    Ok,
    /// Not trusted, with the reason.
    Bad(String),
}

impl Health {
    /// True for [`Health::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Health::Ok)
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Ok => f.write_str("ok"),
            Health::Bad(why) => write!(f, "bad: {why}"),
        }
    }
}

/// One used partition entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based partition number (the entry's position in the array).
    pub index: u32,
    /// Partition type GUID.
    pub type_guid: Guid,
    /// Unique partition GUID.
    pub unique_guid: Guid,
    /// First LBA (inclusive).
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// The 64-bit attribute word.
    pub attributes: u64,
    /// Name (UTF-16LE on disk, up to 36 code units).
    pub name: String,
}

/// One copy's placement on disk and its header sector as read.
#[derive(Clone, Debug)]
struct Place {
    header_lba: u64,
    entries_lba: u64,
    /// The header sector as found (or the other copy's, when this one was
    /// bad), used as the template so that reserved bytes are kept.
    sector: Vec<u8>,
    health: Health,
}

/// A GPT read from a device: the trusted copy's header and entries, and
/// where both copies live.
#[derive(Clone, Debug)]
pub struct Gpt {
    sector_size: u32,
    disk_len: u64,
    header: Header,
    entries: Vec<u8>,
    primary: Place,
    backup: Place,
}

/// A copy that passed every check.
struct GoodCopy {
    header: Header,
    sector: Vec<u8>,
    entries: Vec<u8>,
}

/// Read and check one copy whose header is at `lba`.
fn read_copy(
    dev: &mut dyn BlockDevice,
    ss: u32,
    lba: u64,
    primary: bool,
    disk_sectors: u64,
) -> std::result::Result<GoodCopy, String> {
    let ssz = u64::from(ss);
    if lba >= disk_sectors {
        return Err(format!("LBA {lba} is past the end of the disk"));
    }
    let mut sector = vec![0u8; ss as usize];
    dev.read_exact_at(lba * ssz, &mut sector)
        .map_err(|e| format!("cannot read header: {e}"))?;
    let header = Header::parse(&sector)?;
    header.check_geometry(lba, primary, ss, disk_sectors)?;
    let mut entries = vec![0u8; header.entries_bytes() as usize];
    dev.read_exact_at(header.entries_lba * ssz, &mut entries)
        .map_err(|e| format!("cannot read entry array: {e}"))?;
    let crc = crc32fast::hash(&entries);
    if crc != header.entries_crc {
        return Err(format!(
            "entry array CRC mismatch (header says {:08x}, entries give {crc:08x})",
            header.entries_crc
        ));
    }
    Ok(GoodCopy {
        header,
        sector,
        entries,
    })
}

/// Outcome of trying one sector size.
enum Attempt {
    Found(Box<Gpt>),
    /// Nothing usable; the reasons per copy, and whether a signature was
    /// seen at all.
    Failed {
        primary: String,
        backup: String,
        signature_seen: bool,
        truncated: Option<u64>,
    },
}

fn has_signature(dev: &mut dyn BlockDevice, off: u64) -> bool {
    let mut sig = [0u8; 8];
    dev.read_exact_at(off, &mut sig).is_ok() && &sig == SIGNATURE
}

/// The size in bytes a primary header with a valid CRC says the disk has,
/// when that is more than the disk has (a truncated image).
fn truncated_size(dev: &mut dyn BlockDevice, ss: u32, disk_len: u64) -> Option<u64> {
    let mut sector = vec![0u8; ss as usize];
    dev.read_exact_at(u64::from(ss), &mut sector).ok()?;
    let h = Header::parse(&sector).ok()?;
    let need = h
        .alternate_lba
        .max(h.last_usable_lba)
        .checked_add(1)?
        .checked_mul(u64::from(ss))?;
    (need > disk_len).then_some(need)
}

fn try_sector_size(dev: &mut dyn BlockDevice, ss: u32, disk_len: u64) -> Attempt {
    let disk_sectors = disk_len / u64::from(ss);
    let last = disk_sectors.saturating_sub(1);
    let primary = read_copy(dev, ss, 1, true, disk_sectors);
    let backup_lba = match &primary {
        Ok(p) => p.header.alternate_lba,
        Err(_) => last,
    };
    let backup = read_copy(dev, ss, backup_lba, false, disk_sectors);
    let place = |lba: u64, c: &GoodCopy, health: Health| Place {
        header_lba: lba,
        entries_lba: c.header.entries_lba,
        sector: c.sector.clone(),
        health,
    };
    let array_sectors = |h: &Header| h.entries_bytes().div_ceil(u64::from(ss));
    let gpt = match (primary, backup) {
        (Ok(p), Ok(b)) => {
            // Both valid: the primary wins (as in cgpt); a backup that
            // disagrees is stale, e.g. from an interrupted commit.
            let same = p.entries == b.entries
                && p.header.disk_guid == b.header.disk_guid
                && p.header.first_usable_lba == b.header.first_usable_lba
                && p.header.last_usable_lba == b.header.last_usable_lba
                && p.header.entry_size == b.header.entry_size;
            let bh = if same {
                Health::Ok
            } else {
                Health::Bad("differs from the primary (interrupted update?)".into())
            };
            Gpt {
                sector_size: ss,
                disk_len,
                primary: place(1, &p, Health::Ok),
                backup: place(backup_lba, &b, bh),
                header: p.header,
                entries: p.entries,
            }
        }
        (Ok(p), Err(why)) => {
            let entries_lba = backup_lba - array_sectors(&p.header);
            let backup = Place {
                header_lba: backup_lba,
                entries_lba,
                sector: p.sector.clone(),
                health: Health::Bad(why),
            };
            Gpt {
                sector_size: ss,
                disk_len,
                primary: place(1, &p, Health::Ok),
                backup,
                header: p.header,
                entries: p.entries,
            }
        }
        (Err(why), Ok(b)) => {
            let primary = Place {
                header_lba: 1,
                entries_lba: 2,
                sector: b.sector.clone(),
                health: Health::Bad(why),
            };
            // A backup that leaves no room to rebuild the primary at LBA
            // 2.. is still a valid table to read (and boot) from; every
            // commit refuses it (`check_writable`), so nothing is written.
            Gpt {
                sector_size: ss,
                disk_len,
                backup: place(backup_lba, &b, Health::Ok),
                primary,
                header: b.header,
                entries: b.entries,
            }
        }
        (Err(p), Err(b)) => {
            let signature_seen =
                has_signature(dev, u64::from(ss)) || has_signature(dev, last * u64::from(ss));
            return Attempt::Failed {
                primary: p,
                backup: b,
                signature_seen,
                truncated: truncated_size(dev, ss, disk_len),
            };
        }
    };
    Attempt::Found(Box::new(gpt))
}

impl Gpt {
    /// Read the GPT: detect the sector size (the device's own when it
    /// reports one, else 512 then 4096), read both copies, trust a copy only
    /// when its header CRC, entry-array CRC and self-references hold, and
    /// fall back to the backup when the primary is bad.
    pub fn read(dev: &mut dyn BlockDevice) -> Result<Gpt> {
        let disk_len = dev
            .len()
            .map_err(|e| Error::io("cannot get the disk size", e))?;
        let reported = dev
            .logical_sector_size()
            .map_err(|e| Error::io("cannot get the logical sector size", e))?;
        let candidates: Vec<u32> = match reported {
            Some(s @ (512 | 4096)) => vec![s],
            Some(s) => return Err(Error::SectorSize(s)),
            None => vec![512, 4096],
        };
        let mut failure: Option<Error> = None;
        for ss in candidates {
            if disk_len < 3 * u64::from(ss) {
                continue;
            }
            match try_sector_size(dev, ss, disk_len) {
                Attempt::Found(gpt) => return Ok(*gpt),
                Attempt::Failed {
                    primary,
                    backup,
                    signature_seen,
                    truncated,
                } => {
                    let err = if let Some(expected) = truncated {
                        Error::Truncated {
                            expected,
                            actual: disk_len,
                        }
                    } else if signature_seen {
                        Error::BothCopiesBad { primary, backup }
                    } else {
                        continue;
                    };
                    // Keep the first explanation that found a GPT signature.
                    failure.get_or_insert(err);
                }
            }
        }
        if let Some(err) = failure {
            return Err(err);
        }
        // Neither copy was found. A disk that cannot even be read is an I/O
        // error, not a disk without a GPT: say so, with the cause.
        if disk_len >= 3 * 512 {
            let mut probe = [0u8; 512];
            dev.read_exact_at(512, &mut probe)
                .map_err(|e| Error::io("cannot read the partition table", e))?;
        }
        let mut mbr = [0u8; 512];
        let has_mbr = dev.read_exact_at(0, &mut mbr).is_ok() && mbr[510..512] == [0x55, 0xaa];
        Err(Error::NoGpt(if disk_len < 3 * 512 {
            format!("the disk is only {disk_len} bytes")
        } else if has_mbr {
            "an MBR partition table only".into()
        } else {
            "no partition table found".into()
        }))
    }

    /// Logical sector size in bytes (512 or 4096).
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// Size of the disk in bytes, as read.
    pub fn disk_len(&self) -> u64 {
        self.disk_len
    }

    /// The header of the copy in use.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// How a copy was found on disk (both are [`Health::Ok`] after a commit).
    pub fn health(&self, copy: GptCopy) -> &Health {
        match copy {
            GptCopy::Primary => &self.primary.health,
            GptCopy::Backup => &self.backup.health,
        }
    }

    /// True when both copies are good and agree.
    pub fn is_healthy(&self) -> bool {
        self.primary.health.is_ok() && self.backup.health.is_ok()
    }

    fn entry_range(&self, index: u32) -> Option<std::ops::Range<usize>> {
        if index == 0 || index > self.header.num_entries {
            return None;
        }
        let size = self.header.entry_size as usize;
        let start = (index as usize - 1) * size;
        Some(start..start + size)
    }

    fn parse_entry(&self, index: u32) -> Option<Partition> {
        let e = &self.entries[self.entry_range(index)?];
        let guid = |off: usize| {
            let mut g = [0u8; 16];
            g.copy_from_slice(&e[off..off + 16]);
            Guid(g)
        };
        let u64_at = |off: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&e[off..off + 8]);
            u64::from_le_bytes(a)
        };
        let type_guid = guid(0);
        if type_guid.is_zero() {
            return None;
        }
        let units: Vec<u16> = e[56..MIN_ENTRY_SIZE as usize]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Some(Partition {
            index,
            type_guid,
            unique_guid: guid(16),
            first_lba: u64_at(32),
            last_lba: u64_at(40),
            attributes: u64_at(48),
            name: String::from_utf16_lossy(&units),
        })
    }

    /// The used entries, in table order, numbered by their position.
    pub fn partitions(&self) -> Vec<Partition> {
        (1..=self.header.num_entries)
            .filter_map(|i| self.parse_entry(i))
            .collect()
    }

    /// One used entry by its 1-based number.
    pub fn partition(&self, index: u32) -> Option<Partition> {
        self.parse_entry(index)
    }

    /// Byte offset and length of a partition.
    pub fn byte_range(&self, p: &Partition) -> (u64, u64) {
        let ss = u64::from(self.sector_size);
        let sectors = p.last_lba.saturating_sub(p.first_lba).saturating_add(1);
        // Saturating: an entry is untrusted table content and may hold any
        // LBA; callers that write check the range against the usable area
        // (SlotLayout::discover does) before using it.
        (p.first_lba.saturating_mul(ss), sectors.saturating_mul(ss))
    }

    /// Set a partition's whole attribute word in memory (nothing is written
    /// until [`Gpt::commit`]).
    pub fn set_attributes(&mut self, index: u32, attributes: u64) -> Result<()> {
        if self.parse_entry(index).is_none() {
            return Err(Error::NoSuchPartition(index));
        }
        let r = self
            .entry_range(index)
            .ok_or(Error::NoSuchPartition(index))?;
        self.entries[r.start + 48..r.start + 56].copy_from_slice(&attributes.to_le_bytes());
        Ok(())
    }

    /// The entry array as it stands in memory.
    pub fn entry_bytes(&self) -> &[u8] {
        &self.entries
    }

    /// The header sector to write for one copy.
    fn header_sector(&self, copy: GptCopy) -> Vec<u8> {
        let (me, other) = match copy {
            GptCopy::Primary => (&self.primary, &self.backup),
            GptCopy::Backup => (&self.backup, &self.primary),
        };
        let mut sector = me.sector.clone();
        let h = Header {
            my_lba: me.header_lba,
            alternate_lba: other.header_lba,
            entries_lba: me.entries_lba,
            entries_crc: crc32fast::hash(&self.entries),
            ..self.header.clone()
        };
        h.write_into(&mut sector);
        sector
    }

    fn write_copy(&self, dev: &mut dyn BlockDevice, copy: GptCopy) -> Result<()> {
        let ss = u64::from(self.sector_size);
        let place = match copy {
            GptCopy::Primary => &self.primary,
            GptCopy::Backup => &self.backup,
        };
        dev.write_all_at(place.entries_lba * ss, &self.entries)
            .map_err(|e| Error::io(format!("cannot write the {copy} GPT entries"), e))?;
        dev.write_all_at(place.header_lba * ss, &self.header_sector(copy))
            .map_err(|e| Error::io(format!("cannot write the {copy} GPT header"), e))?;
        dev.flush()
            .map_err(|e| Error::io(format!("cannot flush the {copy} GPT"), e))
    }

    /// Whether a commit may write this table: `Err` (nothing is written)
    /// when a copy's entry array would land in the usable area (partition
    /// data), on its own header or past the end of the disk. Possible only
    /// when a bad copy would be rebuilt where the good one leaves it no
    /// room (the primary's alternate LBA just after the usable area, a
    /// backup whose first usable LBA leaves no room at LBA 2..). Such a
    /// table is still read and booted from as it is.
    pub fn check_writable(&self) -> Result<()> {
        self.check_places()
    }

    /// Refuse to write a copy whose entry array would land in the usable
    /// area (partition data) or past the end of the disk: possible only
    /// when a bad copy is rebuilt from a table that leaves it no room.
    fn check_places(&self) -> Result<()> {
        let ss = u64::from(self.sector_size);
        let sectors = (self.entries.len() as u64).div_ceil(ss);
        let disk_sectors = self.disk_len / ss;
        let h = &self.header;
        for (copy, p) in [
            (GptCopy::Primary, &self.primary),
            (GptCopy::Backup, &self.backup),
        ] {
            let end = p.entries_lba + sectors;
            let in_usable = p.entries_lba <= h.last_usable_lba && end > h.first_usable_lba;
            let overlaps_header = (p.entries_lba..end).contains(&p.header_lba);
            if in_usable || overlaps_header || end > disk_sectors || p.header_lba >= disk_sectors {
                return Err(Error::BadLayout(format!(
                    "no room for the {copy} GPT copy (entries at LBA {}, header at LBA {})",
                    p.entries_lba, p.header_lba
                )));
            }
        }
        // A backup that must be rebuilt goes where the primary's alternate
        // LBA says only when that is the disk's last LBA, its one proper
        // place: a corrupted alternate LBA (with a usable area shrunk to
        // match) would otherwise put it over free space or partition data
        // that the table no longer claims (found by tests/fuzz_gpt.rs).
        let last = disk_sectors.saturating_sub(1);
        if !self.backup.health.is_ok() && self.backup.header_lba != last {
            return Err(Error::BadLayout(format!(
                "no room for the backup GPT copy: the primary's alternate LBA {} is not the \
                 disk's last LBA {last}, and no valid backup is there",
                self.backup.header_lba
            )));
        }
        Ok(())
    }

    /// The order a commit writes the copies in: a copy that is bad (or
    /// stale) first, so the good one keeps describing the state before the
    /// commit until the other is a complete copy of the new state; when
    /// both are good, primary then backup.
    pub fn commit_order(&self) -> [GptCopy; 2] {
        if !self.backup.health.is_ok() && self.primary.health.is_ok() {
            [GptCopy::Backup, GptCopy::Primary]
        } else {
            [GptCopy::Primary, GptCopy::Backup]
        }
    }

    /// Write the table: one whole copy (entries, then header), flush, then
    /// the other, flush. Only the entry array and the header sectors are
    /// written; the CRCs are recomputed, every other byte is as read.
    pub fn commit(&mut self, dev: &mut dyn BlockDevice) -> Result<()> {
        self.check_places()?;
        for copy in self.commit_order() {
            self.write_copy(dev, copy)?;
        }
        for place in [&mut self.primary, &mut self.backup] {
            place.health = Health::Ok;
        }
        self.primary.sector = self.header_sector(GptCopy::Primary);
        self.backup.sector = self.header_sector(GptCopy::Backup);
        Ok(())
    }

    /// Rewrite a bad copy from the good one. Returns the copies that were
    /// bad (empty when both were good and nothing was written).
    pub fn repair(&mut self, dev: &mut dyn BlockDevice) -> Result<Vec<(GptCopy, String)>> {
        let bad: Vec<(GptCopy, String)> = [GptCopy::Primary, GptCopy::Backup]
            .into_iter()
            .filter_map(|c| match self.health(c) {
                Health::Ok => None,
                Health::Bad(why) => Some((c, why.clone())),
            })
            .collect();
        if !bad.is_empty() {
            self.commit(dev)?;
        }
        Ok(bad)
    }

    /// The byte ranges a commit writes (entry arrays and header sectors of
    /// both copies): everything else on the disk is never touched.
    pub fn written_ranges(&self) -> Vec<(u64, u64)> {
        let ss = u64::from(self.sector_size);
        let n = self.entries.len() as u64;
        [&self.primary, &self.backup]
            .iter()
            .flat_map(|p| [(p.entries_lba * ss, n), (p.header_lba * ss, ss)])
            .collect()
    }
}

#[cfg(test)]
mod tests;
