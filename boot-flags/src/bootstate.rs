//! A slot's *boot state*: how many boots in a row of this slot did not
//! reach boot-check, and why the slot was given up (docs/state-machine.md,
//! "The boot counter").
//!
//! It lives in the last [`BOOT_STATE_LEN`] bytes of the slot's flags
//! partition (the tail of the 64 KiB slot record region, which the slot
//! record leaves free), as two copies of [`COPY_LEN`] bytes:
//!
//! ```text
//! offset size
//!    0    8   magic "SLOTBST\0"
//!    8    4   format version, u32 LE = 1
//!   12    4   reserved, zero
//!   16    8   sequence number, u64 LE
//!   24    1   unchecked_boots
//!   25    1   reserved, zero
//!   26    2   length R of the given-up reason, u16 LE (0 = not given up, <= 200)
//!   28    R   the reason, UTF-8
//!   ...       zero up to 4092
//! 4092    4   CRC-32 (IEEE) of bytes 0..4092, u32 LE
//! ```
//!
//! A reader takes the valid copy with the higher sequence (compared modulo
//! 2^64); no valid copy (all zero, as an install leaves it) reads as count
//! 0, not given up. A write goes to the other copy (the older or invalid
//! one) with the sequence + 1, then flushes: a torn write leaves the copy
//! in force as it was.

use crate::device::BlockDevice;
use crate::error::{Error, Result};

/// Bytes of one copy: one 4 KiB sector, so a 4 KiB-sector disk writes a
/// copy in one sector.
pub const COPY_LEN: usize = 4096;
/// Bytes the boot state takes at the end of the flags partition.
pub const BOOT_STATE_LEN: u64 = 2 * COPY_LEN as u64;
/// The slot record region: the last 64 KiB of the flags partition; the
/// boot state is its last [`BOOT_STATE_LEN`] bytes.
pub const SLOT_REGION: u64 = 64 * 1024;
/// The smallest flags partition that has a boot state (as for the slot
/// record: twice its region).
pub const MIN_FLAGS_PARTITION: u64 = 2 * SLOT_REGION;
/// The longest given-up reason kept, in bytes (longer ones are cut at a
/// character boundary).
pub const REASON_MAX: usize = 200;
/// The default bound on boots of a committed slot that do not reach
/// boot-check, before boot selection gives it up for a good other slot.
pub const DEFAULT_MAX_UNCHECKED_BOOTS: u8 = 3;

const MAGIC: &[u8; 8] = b"SLOTBST\0";
const VERSION: u32 = 1;
const CRC_AT: usize = COPY_LEN - 4;
const REASON_AT: usize = 28;

/// What a slot's boot state says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootState {
    /// Consecutive boots of this slot that did not reach boot-check.
    pub unchecked_boots: u8,
    /// Why boot selection gave the slot up, if it did (and no install or
    /// boot-check cleared it since).
    pub given_up: Option<String>,
}

impl BootState {
    /// Count 0, not given up: what an erased region reads as.
    pub fn is_clear(&self) -> bool {
        self.unchecked_boots == 0 && self.given_up.is_none()
    }
}

/// The boot state as stored: the state in force and which copy holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The state in force.
    pub state: BootState,
    /// The copy in force (0 or 1) and its sequence; `None` when no copy is
    /// valid.
    pub current: Option<(usize, u64)>,
}

impl Stored {
    /// Where the next write goes and with what sequence: the other copy,
    /// sequence + 1 (wrapping); copy 0 with sequence 1 when none is valid.
    pub fn next(&self) -> (usize, u64) {
        match self.current {
            Some((i, seq)) => (1 - i, seq.wrapping_add(1)),
            None => (0, 1),
        }
    }
}

/// `reason` cut to at most [`REASON_MAX`] bytes at a character boundary.
pub fn bounded_reason(reason: &str) -> &str {
    if reason.len() <= REASON_MAX {
        return reason;
    }
    let mut end = REASON_MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// One copy holding `state` with sequence `seq`.
pub fn encode_copy(seq: u64, state: &BootState) -> Vec<u8> {
    let mut out = vec![0u8; COPY_LEN];
    out[0..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&seq.to_le_bytes());
    out[24] = state.unchecked_boots;
    if let Some(r) = &state.given_up {
        let r = bounded_reason(r).as_bytes();
        out[26..28].copy_from_slice(&(r.len() as u16).to_le_bytes());
        out[REASON_AT..REASON_AT + r.len()].copy_from_slice(r);
    }
    let crc = crc32fast::hash(&out[..CRC_AT]);
    out[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A copy's sequence and state; `None` when it is not a valid copy (wrong
/// magic, version or CRC, a reason too long or not UTF-8).
pub fn decode_copy(buf: &[u8]) -> Option<(u64, BootState)> {
    if buf.len() != COPY_LEN || &buf[0..8] != MAGIC {
        return None;
    }
    let word = |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    if word(CRC_AT) != crc32fast::hash(&buf[..CRC_AT]) || word(8) != VERSION {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&buf[16..24]);
    let len = usize::from(u16::from_le_bytes([buf[26], buf[27]]));
    if len > REASON_MAX {
        return None;
    }
    let given_up = match len {
        0 => None,
        n => Some(
            std::str::from_utf8(&buf[REASON_AT..REASON_AT + n])
                .ok()?
                .to_string(),
        ),
    };
    Some((
        u64::from_le_bytes(seq),
        BootState {
            unchecked_boots: buf[24],
            given_up,
        },
    ))
}

/// True when sequence `a` is newer than `b` (serial-number order modulo
/// 2^64: `a` is at most 2^63 - 1 steps after `b`).
pub fn newer(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) > 0
}

/// The state in force of the two copies (`bytes` = both, [`BOOT_STATE_LEN`]).
pub fn decode(bytes: &[u8]) -> Stored {
    let copies = [
        bytes.get(..COPY_LEN).and_then(decode_copy),
        bytes.get(COPY_LEN..2 * COPY_LEN).and_then(decode_copy),
    ];
    let pick = match (&copies[0], &copies[1]) {
        (Some((s0, _)), Some((s1, _))) => Some(if newer(*s1, *s0) { 1 } else { 0 }),
        (Some(_), None) => Some(0),
        (None, Some(_)) => Some(1),
        (None, None) => None,
    };
    match pick {
        None => Stored::default(),
        Some(i) => {
            let (seq, state) = copies[i].clone().unwrap_or_default();
            Stored {
                state,
                current: Some((i, seq)),
            }
        }
    }
}

/// Disk byte offset of the boot state of a flags partition; `None` when
/// the partition is too small to have one ([`MIN_FLAGS_PARTITION`]).
pub fn offset(part_offset: u64, part_len: u64) -> Option<u64> {
    (part_len >= MIN_FLAGS_PARTITION).then(|| part_offset + part_len - BOOT_STATE_LEN)
}

/// Read the boot state at disk byte `at`.
pub fn read(dev: &mut dyn BlockDevice, at: u64) -> Result<Stored> {
    let mut buf = vec![0u8; BOOT_STATE_LEN as usize];
    dev.read_exact_at(at, &mut buf)
        .map_err(|e| Error::io(format!("cannot read the boot state at byte {at}"), e))?;
    Ok(decode(&buf))
}

/// Write `state` over `old` (the boot state read at `at`): the copy not in
/// force, sequence + 1, then a flush, then the copy is read back past the
/// cache and compared. Returns the new stored state.
pub fn write(dev: &mut dyn BlockDevice, at: u64, old: &Stored, state: BootState) -> Result<Stored> {
    let (i, seq) = old.next();
    let state = BootState {
        given_up: state.given_up.map(|r| bounded_reason(&r).to_string()),
        ..state
    };
    let copy = encode_copy(seq, &state);
    let off = at + (i * COPY_LEN) as u64;
    let ctx = |what: &str| format!("cannot {what} the boot state at byte {off}");
    dev.write_all_at(off, &copy)
        .map_err(|e| Error::io(ctx("write"), e))?;
    dev.flush().map_err(|e| Error::io(ctx("flush"), e))?;
    dev.drop_cache(off, COPY_LEN as u64)
        .map_err(|e| Error::io(ctx("drop the cache of"), e))?;
    let mut back = vec![0u8; COPY_LEN];
    dev.read_exact_at(off, &mut back)
        .map_err(|e| Error::io(ctx("read back"), e))?;
    if back != copy {
        return Err(Error::VerifyFailed(format!(
            "the boot state copy at byte {off} reads back different"
        )));
    }
    Ok(Stored {
        state,
        current: Some((i, seq)),
    })
}

#[cfg(test)]
mod tests;
