//! The slot record: what image a slot holds (docs/slot-record.md).
//!
//! It lives in the first [`RECORD_BYTES`] of the last [`RECORD_RESERVED`]
//! bytes of the slot's flags partition (the last 8 KiB of that region are
//! the slot's boot state, boot-flags' `bootstate`) and holds the exact signed header and signature block of the
//! installed image, so that `status` can show the version and rollback
//! index and `verify-slot` can re-check the signatures and re-hash the
//! partitions offline. Written after the payloads were verified, before
//! activation; zeroed when the slot is invalidated. Both the erase and the
//! write cover the whole 64 KiB region, so they also reset the boot state.
//!
//! ```text
//! offset size
//!   0     8   magic "SLOTREC\0"
//!   8     4   format version, u32 LE = 1
//!  12     4   blob length L, u32 LE (<= RECORD_RESERVED - 64)
//!  16    32   SHA-256 of the blob
//!  48    12   reserved, zero
//!  60     4   CRC-32 (IEEE) of bytes 0..60, u32 LE
//!  64     L   blob: the image's header bytes then its signature block bytes,
//!             exactly as they were in the image
//!  64+L  ...  zero up to RECORD_BYTES (56 KiB)
//!  56K    8K   the slot's boot state (zero as written here; not part of
//!              the record)
//! ```

use sha2::{Digest, Sha256};

use crate::install::dev::BlockDevice;

/// Bytes reserved for the record at the end of the flags partition: the
/// slot region boot-flags also places the boot state in.
pub const RECORD_RESERVED: u64 = boot_flags::bootstate::SLOT_REGION;
/// Bytes of the region the record itself may use: all but the boot state
/// at its end.
pub const RECORD_BYTES: usize = (RECORD_RESERVED - boot_flags::bootstate::BOOT_STATE_LEN) as usize;
pub const MAGIC: &[u8; 8] = b"SLOTREC\0";
pub const VERSION: u32 = 1;
const HEAD: usize = 64;
/// The largest blob a record can hold.
pub const MAX_BLOB: usize = RECORD_BYTES - HEAD;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("slot record: blob of {len} bytes exceeds the {max} that fit")]
    TooLarge { len: usize, max: usize },
    #[error("slot record: header CRC mismatch (corrupt record)")]
    BadCrc,
    #[error("slot record: unsupported format version {0}")]
    BadVersion(u32),
    #[error("slot record: blob length {0} out of range (corrupt record)")]
    BadLength(u32),
    #[error("slot record: blob SHA-256 mismatch (corrupt record)")]
    BadHash,
    #[error("slot record: no record magic, yet the region is not all zero (damaged record)")]
    NoMagic,
    #[error("slot record: flags partition of {0} bytes is too small to hold a record")]
    PartitionTooSmall(u64),
    #[error("slot record at disk byte {offset}: {err}")]
    Io { offset: u64, err: std::io::Error },
}

/// The full `RECORD_RESERVED`-byte region holding `blob`.
pub fn encode(blob: &[u8]) -> Result<Vec<u8>, RecordError> {
    if blob.len() > MAX_BLOB {
        return Err(RecordError::TooLarge {
            len: blob.len(),
            max: MAX_BLOB,
        });
    }
    let mut out = vec![0u8; RECORD_RESERVED as usize];
    out[0..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(blob.len() as u32).to_le_bytes());
    out[16..48].copy_from_slice(&Sha256::digest(blob));
    let crc = crc32fast::hash(&out[0..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
    out[HEAD..HEAD + blob.len()].copy_from_slice(blob);
    Ok(out)
}

/// The blob of a record region; `None` when there is no record: the
/// record's first [`RECORD_BYTES`] are all zero (an erased or never-written
/// slot; the boot state after them is not looked at, so a boot counted on
/// a slot without a record never makes it "damaged"). Any other content
/// without the magic is a damaged record, not an absent one: zeroing a byte
/// of the magic must not make a record (and the rollback floor it sets)
/// vanish.
pub fn decode(region: &[u8]) -> Result<Option<Vec<u8>>, RecordError> {
    let record = &region[..region.len().min(RECORD_BYTES)];
    if record.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if region.len() < HEAD || &region[0..8] != MAGIC {
        return Err(RecordError::NoMagic);
    }
    let crc = u32::from_le_bytes(region[60..64].try_into().unwrap());
    if crc32fast::hash(&region[0..60]) != crc {
        return Err(RecordError::BadCrc);
    }
    let version = u32::from_le_bytes(region[8..12].try_into().unwrap());
    if version != VERSION {
        return Err(RecordError::BadVersion(version));
    }
    let len = u32::from_le_bytes(region[12..16].try_into().unwrap());
    if len as usize > MAX_BLOB || HEAD + len as usize > record.len() {
        return Err(RecordError::BadLength(len));
    }
    let blob = &region[HEAD..HEAD + len as usize];
    if Sha256::digest(blob).as_slice() != &region[16..48] {
        return Err(RecordError::BadHash);
    }
    Ok(Some(blob.to_vec()))
}

/// Disk byte offset of the record region of a flags partition.
pub fn region_offset(part_offset: u64, part_len: u64) -> Result<u64, RecordError> {
    if part_len < boot_flags::bootstate::MIN_FLAGS_PARTITION {
        return Err(RecordError::PartitionTooSmall(part_len));
    }
    Ok(part_offset + part_len - RECORD_RESERVED)
}

/// The record of `slot` on `disk`: `None` when its region is all zero, an
/// error when the region is damaged or corrupt (or cannot be read).
pub fn read_slot<D: BlockDevice>(
    disk: &mut boot_flags::Disk<D>,
    slot: boot_flags::SlotId,
) -> Result<Option<Vec<u8>>, RecordError> {
    let part = disk.layout().slot(slot).flags_partition().clone();
    read(disk.device(), part.offset, part.size)
}

pub fn read(
    dev: &mut dyn BlockDevice,
    part_offset: u64,
    part_len: u64,
) -> Result<Option<Vec<u8>>, RecordError> {
    let offset = region_offset(part_offset, part_len)?;
    let mut region = vec![0u8; RECORD_RESERVED as usize];
    dev.read_exact_at(offset, &mut region)
        .map_err(|err| RecordError::Io { offset, err })?;
    decode(&region)
}

/// Write the record (no flush: the caller flushes).
pub fn write(
    dev: &mut dyn BlockDevice,
    part_offset: u64,
    part_len: u64,
    blob: &[u8],
) -> Result<(), RecordError> {
    let offset = region_offset(part_offset, part_len)?;
    let region = encode(blob)?;
    dev.write_all_at(offset, &region)
        .map_err(|err| RecordError::Io { offset, err })
}

/// Zero the record region (no flush).
pub fn erase(
    dev: &mut dyn BlockDevice,
    part_offset: u64,
    part_len: u64,
) -> Result<(), RecordError> {
    let offset = region_offset(part_offset, part_len)?;
    let zeros = vec![0u8; RECORD_RESERVED as usize];
    dev.write_all_at(offset, &zeros)
        .map_err(|err| RecordError::Io { offset, err })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let blob: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut r = encode(&blob).unwrap();
        assert_eq!(decode(&r).unwrap().unwrap(), blob);
        assert!(decode(&vec![0u8; RECORD_RESERVED as usize])
            .unwrap()
            .is_none());
        r[100] ^= 1;
        assert!(matches!(decode(&r), Err(RecordError::BadHash)));
        r[100] ^= 1;
        r[13] ^= 1;
        assert!(matches!(decode(&r), Err(RecordError::BadCrc)));
        r[13] ^= 1;
        // One byte of the magic zeroed: damaged, not absent.
        r[0] = 0;
        assert!(matches!(decode(&r), Err(RecordError::NoMagic)));
        // A single stray byte in an otherwise empty region: damaged too.
        let mut z = vec![0u8; RECORD_RESERVED as usize];
        z[RECORD_BYTES - 1] = 1;
        assert!(matches!(decode(&z), Err(RecordError::NoMagic)));
        assert!(encode(&vec![0u8; MAX_BLOB + 1]).is_err());
        assert!(encode(&vec![7u8; MAX_BLOB]).is_ok());
    }

    #[test]
    fn the_boot_state_is_not_part_of_the_record() {
        // A boot state in the last 8 KiB of an otherwise zero region (a slot
        // without a record that was booted): no record, not a damaged one.
        let mut z = vec![0u8; RECORD_RESERVED as usize];
        z[RECORD_BYTES..RECORD_BYTES + 8].copy_from_slice(b"SLOTBST\0");
        z[RECORD_RESERVED as usize - 1] = 0xab;
        assert!(decode(&z).unwrap().is_none());
        // Next to a record (a disk written before the boot state existed has
        // zeros there, one after has a boot state): the record reads the same.
        let blob = vec![5u8; 1000];
        let mut r = encode(&blob).unwrap();
        assert_eq!(r.len(), RECORD_RESERVED as usize);
        assert!(r[RECORD_BYTES..].iter().all(|&b| b == 0));
        r[RECORD_BYTES..].fill(0x5a);
        assert_eq!(decode(&r).unwrap().unwrap(), blob);
        // The largest blob ends where the boot state starts.
        assert_eq!(RECORD_BYTES, 56 * 1024);
        assert_eq!(64 + MAX_BLOB, RECORD_BYTES);
    }
}
