//! The signature block: key ids and ed25519 signatures over the header,
//! with reserved room so that signatures can be added in place.

use crate::error::{Error, Result};
use crate::format::{
    MAX_SIGNATURES, MAX_SIGNATURE_BLOCK_LEN, PAYLOAD_ALIGN, SIGNATURE_BLOCK_FIXED_LEN,
    SIGNATURE_ENTRY_LEN, SIGNATURE_MAGIC,
};
use crate::keys::{KeyId, KEY_ID_LEN};

/// One entry of the signature block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureEntry {
    /// Id of the key that made it.
    pub key_id: KeyId,
    /// The ed25519 signature over the exact header bytes.
    pub signature: [u8; 64],
}

/// The signature block's length for `count` entries plus `room` more,
/// padded so that `header_len + block_len` is a multiple of [`PAYLOAD_ALIGN`].
pub fn signature_block_len(header_len: u64, slots: usize) -> u32 {
    let min = SIGNATURE_BLOCK_FIXED_LEN as u64 + SIGNATURE_ENTRY_LEN as u64 * slots as u64;
    let end = (header_len + min).div_ceil(PAYLOAD_ALIGN) * PAYLOAD_ALIGN;
    let len = end - header_len;
    // Never over the cap (slots <= MAX_SIGNATURES keeps `min` far below it).
    len.min(MAX_SIGNATURE_BLOCK_LEN as u64).max(min) as u32
}

/// Encode a signature block of exactly `block_len` bytes.
pub(crate) fn encode_signature_block(
    entries: &[SignatureEntry],
    block_len: u32,
) -> Result<Vec<u8>> {
    let need = SIGNATURE_BLOCK_FIXED_LEN as usize + SIGNATURE_ENTRY_LEN as usize * entries.len();
    if entries.len() > MAX_SIGNATURES || need > block_len as usize {
        return Err(Error::NoSignatureRoom {
            count: entries.len(),
            room: signature_room(block_len),
        });
    }
    let mut out = Vec::with_capacity(block_len as usize);
    out.extend_from_slice(&SIGNATURE_MAGIC);
    out.extend_from_slice(&block_len.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.key_id.0);
        out.extend_from_slice(&e.signature);
    }
    out.resize(block_len as usize, 0);
    Ok(out)
}

/// How many signatures a block of this length holds.
pub fn signature_room(block_len: u32) -> usize {
    let room = (block_len.saturating_sub(SIGNATURE_BLOCK_FIXED_LEN) / SIGNATURE_ENTRY_LEN) as usize;
    room.min(MAX_SIGNATURES)
}

/// Parse a whole signature block (its length already bounded by the reader).
/// `base` is the block's offset in the image.
pub(crate) fn parse_signature_block(block: &[u8], base: u64) -> Result<Vec<SignatureEntry>> {
    let fixed = SIGNATURE_BLOCK_FIXED_LEN as usize;
    if block.len() < fixed || block[..8] != SIGNATURE_MAGIC {
        return Err(Error::BadSignatureBlockMagic { offset: base });
    }
    let count = u16::from_le_bytes([block[12], block[13]]) as usize;
    let reserved = u16::from_le_bytes([block[14], block[15]]);
    if reserved != 0 {
        return Err(Error::SignatureBlockReserved { offset: base + 14 });
    }
    let room = signature_room(block.len() as u32);
    if count > room {
        return Err(Error::TooManySignatures {
            count: count as u64,
            offset: base + 12,
            max: room as u64,
        });
    }
    let entry_len = SIGNATURE_ENTRY_LEN as usize;
    let mut entries: Vec<SignatureEntry> = Vec::with_capacity(count);
    for (index, raw) in block[fixed..fixed + count * entry_len]
        .chunks_exact(entry_len)
        .enumerate()
    {
        let offset = base + (fixed + index * entry_len) as u64;
        if raw.iter().all(|&b| b == 0) {
            return Err(Error::EmptySignatureEntry { index, offset });
        }
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&raw[..KEY_ID_LEN]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&raw[KEY_ID_LEN..]);
        let key_id = KeyId(id);
        if entries.iter().any(|e| e.key_id == key_id) {
            return Err(Error::DuplicateSignature { key_id });
        }
        entries.push(SignatureEntry { key_id, signature });
    }
    let used = fixed + count * entry_len;
    if let Some(pos) = block[used..].iter().position(|&b| b != 0) {
        return Err(Error::SignatureBlockPadding {
            offset: base + (used + pos) as u64,
        });
    }
    Ok(entries)
}
