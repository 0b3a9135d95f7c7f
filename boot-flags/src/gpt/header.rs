//! The GPT header: parsing with checks, and serialising into the sector it
//! came from so that bytes we do not own stay as they were.

use crate::guid::Guid;

/// "EFI PART".
pub(crate) const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The UEFI header size; larger headers are accepted and their tail kept.
pub(crate) const MIN_HEADER_SIZE: u32 = 92;
/// Size of the fields we interpret (the rest of an entry is kept as is).
pub(crate) const MIN_ENTRY_SIZE: u32 = 128;
/// Cap on the entry array we are willing to read (UEFI's usual is 16 KiB).
pub(crate) const MAX_ENTRIES_BYTES: u64 = 1 << 20;

const OFF_REVISION: usize = 8;
const OFF_HEADER_SIZE: usize = 12;
const OFF_HEADER_CRC: usize = 16;
const OFF_MY_LBA: usize = 24;
const OFF_ALTERNATE_LBA: usize = 32;
const OFF_FIRST_USABLE: usize = 40;
const OFF_LAST_USABLE: usize = 48;
const OFF_DISK_GUID: usize = 56;
const OFF_ENTRIES_LBA: usize = 72;
const OFF_NUM_ENTRIES: usize = 80;
const OFF_ENTRY_SIZE: usize = 84;
const OFF_ENTRIES_CRC: usize = 88;

/// The fields of a GPT header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Revision, 0x00010000 for UEFI 2.x.
    pub revision: u32,
    /// Bytes covered by the header CRC (at least 92).
    pub header_size: u32,
    /// LBA of this header.
    pub my_lba: u64,
    /// LBA of the other copy's header.
    pub alternate_lba: u64,
    /// First LBA a partition may use.
    pub first_usable_lba: u64,
    /// Last LBA a partition may use.
    pub last_usable_lba: u64,
    /// The disk's GUID.
    pub disk_guid: Guid,
    /// LBA of this copy's entry array.
    pub entries_lba: u64,
    /// Number of entries in the array.
    pub num_entries: u32,
    /// Size of one entry in bytes.
    pub entry_size: u32,
    /// CRC32 of the entry array.
    pub entries_crc: u32,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// CRC32 of a header: its first `header_size` bytes with the CRC field zeroed.
fn header_crc(sector: &[u8], header_size: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&sector[..OFF_HEADER_CRC]);
    h.update(&[0; 4]);
    h.update(&sector[OFF_HEADER_CRC + 4..header_size]);
    h.finalize()
}

impl Header {
    /// Parse a header sector, checking signature, size and header CRC.
    /// `sector` is one whole logical sector. The error is the reason, for
    /// the copy's health report.
    pub fn parse(sector: &[u8]) -> Result<Header, String> {
        if sector.len() < MIN_HEADER_SIZE as usize || &sector[..8] != SIGNATURE {
            return Err("no \"EFI PART\" signature".into());
        }
        let header_size = u32_at(sector, OFF_HEADER_SIZE);
        if header_size < MIN_HEADER_SIZE || header_size as usize > sector.len() {
            return Err(format!("header size {header_size} is invalid"));
        }
        let stored = u32_at(sector, OFF_HEADER_CRC);
        let computed = header_crc(sector, header_size as usize);
        if stored != computed {
            return Err(format!(
                "header CRC mismatch (stored {stored:08x}, computed {computed:08x})"
            ));
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&sector[OFF_DISK_GUID..OFF_DISK_GUID + 16]);
        Ok(Header {
            revision: u32_at(sector, OFF_REVISION),
            header_size,
            my_lba: u64_at(sector, OFF_MY_LBA),
            alternate_lba: u64_at(sector, OFF_ALTERNATE_LBA),
            first_usable_lba: u64_at(sector, OFF_FIRST_USABLE),
            last_usable_lba: u64_at(sector, OFF_LAST_USABLE),
            disk_guid: Guid(guid),
            entries_lba: u64_at(sector, OFF_ENTRIES_LBA),
            num_entries: u32_at(sector, OFF_NUM_ENTRIES),
            entry_size: u32_at(sector, OFF_ENTRY_SIZE),
            entries_crc: u32_at(sector, OFF_ENTRIES_CRC),
        })
    }

    /// Bytes of the entry array.
    pub fn entries_bytes(&self) -> u64 {
        u64::from(self.num_entries) * u64::from(self.entry_size)
    }

    /// Write these fields into `sector` (a header sector, possibly the one
    /// it was read from) and recompute the header CRC. Bytes past the fields
    /// (reserved, or a larger header's tail) are left as they are.
    pub fn write_into(&self, sector: &mut [u8]) {
        sector[..8].copy_from_slice(SIGNATURE);
        let put32 =
            |s: &mut [u8], off: usize, v: u32| s[off..off + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |s: &mut [u8], off: usize, v: u64| s[off..off + 8].copy_from_slice(&v.to_le_bytes());
        put32(sector, OFF_REVISION, self.revision);
        put32(sector, OFF_HEADER_SIZE, self.header_size);
        put64(sector, OFF_MY_LBA, self.my_lba);
        put64(sector, OFF_ALTERNATE_LBA, self.alternate_lba);
        put64(sector, OFF_FIRST_USABLE, self.first_usable_lba);
        put64(sector, OFF_LAST_USABLE, self.last_usable_lba);
        sector[OFF_DISK_GUID..OFF_DISK_GUID + 16].copy_from_slice(&self.disk_guid.0);
        put64(sector, OFF_ENTRIES_LBA, self.entries_lba);
        put32(sector, OFF_NUM_ENTRIES, self.num_entries);
        put32(sector, OFF_ENTRY_SIZE, self.entry_size);
        put32(sector, OFF_ENTRIES_CRC, self.entries_crc);
        let crc = header_crc(sector, self.header_size as usize);
        put32(sector, OFF_HEADER_CRC, crc);
    }

    /// Check the header's geometry against where it was found and the disk
    /// size. `primary` says which copy this claims to be.
    pub fn check_geometry(
        &self,
        found_at: u64,
        primary: bool,
        sector_size: u32,
        disk_sectors: u64,
    ) -> Result<(), String> {
        if self.my_lba != found_at {
            return Err(format!(
                "header at LBA {found_at} says it is at LBA {}",
                self.my_lba
            ));
        }
        if self.entry_size < MIN_ENTRY_SIZE || self.entry_size % 8 != 0 {
            return Err(format!("entry size {} is invalid", self.entry_size));
        }
        if self.num_entries == 0 || self.entries_bytes() > MAX_ENTRIES_BYTES {
            return Err(format!(
                "{} entries of {} bytes is not a plausible entry array",
                self.num_entries, self.entry_size
            ));
        }
        let array_sectors = self.entries_bytes().div_ceil(u64::from(sector_size));
        let entries_end = self.entries_lba.saturating_add(array_sectors);
        let (other_ok, entries_ok) = if primary {
            (
                self.alternate_lba > self.last_usable_lba && self.alternate_lba != 1,
                self.entries_lba > self.my_lba && entries_end <= self.first_usable_lba,
            )
        } else {
            (
                self.alternate_lba == 1,
                self.entries_lba > self.last_usable_lba && entries_end <= self.my_lba,
            )
        };
        if !other_ok {
            return Err(format!(
                "alternate header LBA {} is inconsistent",
                self.alternate_lba
            ));
        }
        if !entries_ok {
            return Err(format!(
                "entry array at LBA {} overlaps the header or the usable area",
                self.entries_lba
            ));
        }
        if self.first_usable_lba > self.last_usable_lba.saturating_add(1)
            || self.first_usable_lba < 2
        {
            return Err(format!(
                "usable area {}..={} is invalid",
                self.first_usable_lba, self.last_usable_lba
            ));
        }
        let needed = if primary {
            self.alternate_lba
        } else {
            self.my_lba
        };
        if needed >= disk_sectors || self.last_usable_lba >= disk_sectors {
            return Err(format!(
                "it describes a disk of at least {} sectors, the disk has {disk_sectors}",
                needed.max(self.last_usable_lba).saturating_add(1)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse() {
        let h = Header {
            revision: 0x0001_0000,
            header_size: 92,
            my_lba: 1,
            alternate_lba: 999,
            first_usable_lba: 34,
            last_usable_lba: 966,
            disk_guid: Guid([7; 16]),
            entries_lba: 2,
            num_entries: 128,
            entry_size: 128,
            entries_crc: 0xdead_beef,
        };
        let mut sector = vec![0u8; 512];
        sector[200] = 0x5a; // reserved byte: must survive
        h.write_into(&mut sector);
        assert_eq!(Header::parse(&sector).unwrap(), h);
        assert_eq!(sector[200], 0x5a);
        h.check_geometry(1, true, 512, 1000).unwrap();
        assert!(h.check_geometry(1, true, 512, 999).is_err());
        assert!(h.check_geometry(2, true, 512, 1000).is_err());
        sector[30] ^= 1;
        assert!(Header::parse(&sector).unwrap_err().contains("CRC"));
    }
}
