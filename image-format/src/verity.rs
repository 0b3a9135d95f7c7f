//! dm-verity hash trees, computed as `veritysetup format --no-superblock`
//! computes them, and the payload field that carries their parameters.
//!
//! The tree (docs/image-format.md, "dm-verity"): hash type (format) 1,
//! SHA-256, 4096-byte data and hash blocks, a salt. Each data block's digest
//! is SHA-256(salt || block); the digests are packed 128 to a 4096-byte hash
//! block, the last block zero padded; each higher level hashes the blocks of
//! the level below the same way, until one block is left, whose
//! SHA-256(salt || block) is the root hash. The levels are stored top level
//! first. One data block needs no hash block: its digest is the root (as in
//! veritysetup and the kernel, whose level count is 0 then).
//!
//! A payload whose length is not a multiple of 4096 is **zero padded** up to
//! the next 4096-byte boundary: the padding counts as data (it is part of
//! the last data block) and is written to the partition, so the partition
//! holds `data blocks · 4096` bytes of data, then the tree right behind, at
//! block `hash_start_block` (= the data block count).
//!
//! [`VerityReader`] streams: it hands a source's bytes on while hashing
//! them, then the padding and the tree. Only the tree stays in memory (32
//! bytes per data block, 1/128 of the data, plus 1/128 of that per higher
//! level), never the data.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Data and hash block size: the only one this format writes or accepts.
pub const VERITY_BLOCK_SIZE: u32 = 4096;
/// The dm-verity hash type (on-disk format) written and accepted: 1.
pub const VERITY_HASH_TYPE: u8 = 1;
/// Longest salt the `verity` field carries (veritysetup's default is 32).
pub const MAX_VERITY_SALT_LEN: usize = 64;
/// Salt length `pack` draws at random, as veritysetup does by default.
pub const DEFAULT_VERITY_SALT_LEN: usize = 32;
/// Bytes of the `verity` field before the salt.
const FIXED_LEN: usize = 27;
/// Code of SHA-256 in the field's algorithm byte.
const ALG_SHA256: u8 = 1;
const DIGEST_LEN: usize = 32;
const BLOCK: usize = VERITY_BLOCK_SIZE as usize;

/// A payload's dm-verity parameters, as the signed header carries them
/// (payload field `0x8008`): what a device-mapper `verity` table needs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerityInfo {
    /// The dm-verity hash type (format): 1.
    pub hash_type: u8,
    /// Data blocks covered (the payload's data, zero padded to a block).
    pub data_blocks: u64,
    /// Where the tree starts, in hash blocks from the start of the
    /// partition: the data block count (the tree follows the data).
    pub hash_start_block: u64,
    /// Bytes per data block: 4096.
    pub data_block_size: u32,
    /// Bytes per hash block: 4096.
    pub hash_block_size: u32,
    /// The hash algorithm, as dm-verity and veritysetup name it: `sha256`.
    pub hash_algorithm: &'static str,
    /// The salt, 0..=64 bytes.
    pub salt: Vec<u8>,
    /// The root hash.
    pub root_hash: [u8; 32],
}

impl VerityInfo {
    /// The parameters of a tree over `data_blocks` blocks laid out as `pack`
    /// lays it out (4096-byte blocks, SHA-256, format 1, tree right after
    /// the data). Refuses 0 blocks and a salt over 64 bytes.
    pub fn new(data_blocks: u64, salt: &[u8], root_hash: [u8; 32]) -> Result<VerityInfo> {
        check_salt(salt)?;
        if data_blocks == 0 || data_blocks.checked_mul(VERITY_BLOCK_SIZE as u64).is_none() {
            return Err(Error::InvalidInput(format!(
                "dm-verity data block count {data_blocks} is outside 1..2^52"
            )));
        }
        Ok(VerityInfo {
            hash_type: VERITY_HASH_TYPE,
            data_blocks,
            hash_start_block: data_blocks,
            data_block_size: VERITY_BLOCK_SIZE,
            hash_block_size: VERITY_BLOCK_SIZE,
            hash_algorithm: "sha256",
            salt: salt.to_vec(),
            root_hash,
        })
    }

    /// The root hash as 64 lowercase hex digits.
    pub fn root_hex(&self) -> String {
        crate::hex(&self.root_hash)
    }

    /// The salt as lowercase hex, or `-` for an empty salt: the form a
    /// dm-verity table and `veritysetup --salt` take.
    pub fn salt_hex(&self) -> String {
        if self.salt.is_empty() {
            "-".into()
        } else {
            crate::hex(&self.salt)
        }
    }

    /// The data's length in 512-byte sectors (a dm table's length).
    pub fn data_sectors(&self) -> u64 {
        self.data_blocks * (self.data_block_size as u64 / 512)
    }

    /// Bytes of the hash tree.
    pub fn tree_len(&self) -> u64 {
        hash_tree_len(self.data_blocks)
    }

    /// Bytes from the partition's start to the end of the tree: the raw
    /// size of a payload that carries this tree.
    pub fn partition_len(&self) -> u64 {
        self.hash_start_block * self.hash_block_size as u64 + self.tree_len()
    }

    /// The field's value: `FIXED_LEN + salt + 32` bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FIXED_LEN + self.salt.len() + DIGEST_LEN);
        v.extend_from_slice(&self.data_blocks.to_le_bytes());
        v.extend_from_slice(&self.hash_start_block.to_le_bytes());
        v.extend_from_slice(&self.data_block_size.to_le_bytes());
        v.extend_from_slice(&self.hash_block_size.to_le_bytes());
        v.push(self.hash_type);
        v.push(ALG_SHA256);
        v.push(self.salt.len() as u8);
        v.extend_from_slice(&self.salt);
        v.extend_from_slice(&self.root_hash);
        v
    }

    /// Parse the field's value (at byte `at` of the header).
    pub(crate) fn decode(v: &[u8], at: u64) -> Result<VerityInfo> {
        let bad = |reason: String| Error::BadField {
            field: "verity",
            offset: at,
            reason,
        };
        if v.len() < FIXED_LEN + DIGEST_LEN {
            return Err(bad(format!("{} bytes, expected at least 59", v.len())));
        }
        let u64_at = |o: usize| u64::from_le_bytes(v[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(v[o..o + 4].try_into().expect("4 bytes"));
        let (data_blocks, hash_start) = (u64_at(0), u64_at(8));
        let (data_bs, hash_bs) = (u32_at(16), u32_at(20));
        let (hash_type, alg, salt_len) = (v[24], v[25], v[26] as usize);
        if v.len() != FIXED_LEN + salt_len + DIGEST_LEN {
            return Err(bad(format!(
                "{} bytes, a salt of {salt_len} bytes makes {}",
                v.len(),
                FIXED_LEN + salt_len + DIGEST_LEN
            )));
        }
        if salt_len > MAX_VERITY_SALT_LEN {
            return Err(bad(format!(
                "salt of {salt_len} bytes, at most {MAX_VERITY_SALT_LEN}"
            )));
        }
        if data_bs != VERITY_BLOCK_SIZE || hash_bs != VERITY_BLOCK_SIZE {
            return Err(bad(format!(
                "block sizes {data_bs}/{hash_bs}, expected {VERITY_BLOCK_SIZE}"
            )));
        }
        if hash_type != VERITY_HASH_TYPE {
            return Err(bad(format!("hash type {hash_type}, expected 1")));
        }
        if alg != ALG_SHA256 {
            return Err(bad(format!("hash algorithm {alg}, expected 1 (sha256)")));
        }
        if hash_start != data_blocks {
            return Err(bad(format!(
                "hash start block {hash_start} is not the data block count {data_blocks}"
            )));
        }
        let salt = &v[FIXED_LEN..FIXED_LEN + salt_len];
        let root: [u8; 32] = v[FIXED_LEN + salt_len..].try_into().expect("32 bytes");
        VerityInfo::new(data_blocks, salt, root).map_err(|e| bad(e.to_string()))
    }

    /// The tree must end exactly where the payload does.
    pub(crate) fn check(&self, raw_size: u64, at: u64) -> Result<()> {
        let end = self
            .hash_start_block
            .checked_mul(VERITY_BLOCK_SIZE as u64)
            .and_then(|s| s.checked_add(self.tree_len()));
        if end != Some(raw_size) {
            return Err(Error::BadField {
                field: "verity",
                offset: at,
                reason: format!(
                    "{} data blocks and their tree make {} bytes, raw_size is {raw_size}",
                    self.data_blocks,
                    end.map_or_else(|| "more than 2^64".into(), |e| e.to_string())
                ),
            });
        }
        Ok(())
    }
}

fn check_salt(salt: &[u8]) -> Result<()> {
    if salt.len() > MAX_VERITY_SALT_LEN {
        return Err(Error::InvalidInput(format!(
            "dm-verity salt of {} bytes: at most {MAX_VERITY_SALT_LEN}",
            salt.len()
        )));
    }
    Ok(())
}

/// Bytes of the hash tree over `data_blocks` blocks (0 for one block).
pub fn hash_tree_len(data_blocks: u64) -> u64 {
    let (mut n, mut total) = (data_blocks, 0u64);
    while n > 1 {
        n = n.div_ceil(BLOCK as u64 / DIGEST_LEN as u64);
        total = total.saturating_add(n.saturating_mul(BLOCK as u64));
    }
    total
}

/// The partition bytes a payload of `len` bytes takes with its tree: the
/// data zero padded to 4096 bytes, then the tree.
pub fn verity_partition_len(len: u64) -> u64 {
    let blocks = len.div_ceil(BLOCK as u64);
    (blocks * BLOCK as u64).saturating_add(hash_tree_len(blocks))
}

/// `DEFAULT_VERITY_SALT_LEN` random bytes from the OS, as veritysetup draws.
pub fn random_salt() -> Result<Vec<u8>> {
    let mut salt = vec![0u8; DEFAULT_VERITY_SALT_LEN];
    getrandom::getrandom(&mut salt).map_err(|e| Error::Random(e.to_string()))?;
    Ok(salt)
}

/// Computes a tree over data given in pieces of any size.
pub struct VerityHasher {
    /// SHA-256 with the salt already fed: each block clones it.
    salted: Sha256,
    salt: Vec<u8>,
    /// The partial data block.
    block: Vec<u8>,
    /// The digests of the full data blocks: level 0 before its padding.
    level0: Vec<u8>,
    data_len: u64,
}

impl VerityHasher {
    /// A hasher with this salt (0..=64 bytes).
    pub fn new(salt: &[u8]) -> Result<VerityHasher> {
        check_salt(salt)?;
        let mut salted = Sha256::new();
        salted.update(salt);
        Ok(VerityHasher {
            salted,
            salt: salt.to_vec(),
            block: Vec::with_capacity(BLOCK),
            level0: Vec::new(),
            data_len: 0,
        })
    }

    /// Feed data.
    pub fn update(&mut self, mut data: &[u8]) {
        self.data_len += data.len() as u64;
        if !self.block.is_empty() {
            let n = (BLOCK - self.block.len()).min(data.len());
            self.block.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.block.len() == BLOCK {
                let d = self.digest(&self.block);
                self.level0.extend_from_slice(&d);
                self.block.clear();
            }
        }
        let mut blocks = data.chunks_exact(BLOCK);
        for b in &mut blocks {
            let d = self.digest(b);
            self.level0.extend_from_slice(&d);
        }
        self.block.extend_from_slice(blocks.remainder());
    }

    /// Bytes fed so far.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    fn digest(&self, block: &[u8]) -> [u8; 32] {
        let mut h = self.salted.clone();
        h.update(block);
        h.finalize().into()
    }

    /// Zero pad the last block and build the tree. Refuses empty data.
    pub fn finish(mut self) -> Result<VerityTree> {
        let padding = (BLOCK - self.block.len()) % BLOCK;
        if padding > 0 {
            self.block.resize(BLOCK, 0);
            let d = self.digest(&self.block);
            self.level0.extend_from_slice(&d);
        }
        let data_blocks = (self.level0.len() / DIGEST_LEN) as u64;
        if data_blocks == 0 {
            return Err(Error::InvalidInput(
                "dm-verity needs at least one byte of data".into(),
            ));
        }
        // Each level: the digests of the level below, zero padded to whole
        // hash blocks; the last one holds a single digest, the root. The
        // bottom level (1/128 of the data) is the big one: the levels above
        // it (1/128 of it) are built aside, then put in front of it in
        // place, so the tree is never held twice.
        let mut bottom = std::mem::take(&mut self.level0);
        let mut upper: Vec<Vec<u8>> = Vec::new();
        let mut root = [0u8; 32];
        if bottom.len() == DIGEST_LEN {
            root.copy_from_slice(&bottom);
            bottom.clear();
        } else {
            bottom.resize(bottom.len().div_ceil(BLOCK) * BLOCK, 0);
            let mut digests: Vec<u8> = bottom
                .chunks_exact(BLOCK)
                .flat_map(|b| self.digest(b))
                .collect();
            while digests.len() > DIGEST_LEN {
                digests.resize(digests.len().div_ceil(BLOCK) * BLOCK, 0);
                let up = digests
                    .chunks_exact(BLOCK)
                    .flat_map(|b| self.digest(b))
                    .collect();
                upper.push(std::mem::replace(&mut digests, up));
            }
            root.copy_from_slice(&digests);
        }
        // Stored top level first: the upper levels, highest first, then the
        // bottom one.
        let above: usize = upper.iter().map(Vec::len).sum();
        let below = bottom.len();
        bottom.resize(above + below, 0);
        bottom.copy_within(0..below, above);
        let mut at = 0;
        for level in upper.iter().rev() {
            bottom[at..at + level.len()].copy_from_slice(level);
            at += level.len();
        }
        let tree = bottom;
        let info = VerityInfo::new(data_blocks, &self.salt, root)?;
        debug_assert_eq!(tree.len() as u64, info.tree_len());
        Ok(VerityTree {
            info,
            padding,
            tree,
        })
    }
}

/// A finished tree: its parameters, the zero padding the data needed, and
/// the tree bytes.
#[derive(Clone, Debug)]
pub struct VerityTree {
    info: VerityInfo,
    padding: usize,
    tree: Vec<u8>,
}

impl VerityTree {
    /// The parameters (root hash, salt, block counts).
    pub fn info(&self) -> &VerityInfo {
        &self.info
    }

    /// Zero bytes that follow the data to fill its last block (0..4096).
    pub fn padding_len(&self) -> usize {
        self.padding
    }

    /// The tree, top level first, as it follows the padded data.
    pub fn tree(&self) -> &[u8] {
        &self.tree
    }
}

enum Stage<R> {
    Data(R, VerityHasher),
    Tail(VerityTree, usize),
    /// `finish` failed: every later read fails too.
    Failed,
}

/// A `Read` that gives a source's bytes (hashing them), then the zero
/// padding to 4096 bytes, then the hash tree: a payload's raw bytes with
/// its tree appended. [`VerityReader::info`] is the tree's parameters once
/// everything was read.
pub struct VerityReader<R> {
    stage: Stage<R>,
}

impl<R: Read> VerityReader<R> {
    /// Wrap `source`; the tree uses `salt` (0..=64 bytes).
    pub fn new(source: R, salt: &[u8]) -> Result<VerityReader<R>> {
        Ok(VerityReader {
            stage: Stage::Data(source, VerityHasher::new(salt)?),
        })
    }

    /// The tree's parameters, once the source has ended (None before).
    pub fn info(&self) -> Option<&VerityInfo> {
        match &self.stage {
            Stage::Tail(t, _) => Some(t.info()),
            _ => None,
        }
    }
}

impl<R: Read> Read for VerityReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match &mut self.stage {
                Stage::Data(source, hasher) => {
                    let n = source.read(buf)?;
                    if n > 0 {
                        hasher.update(&buf[..n]);
                        return Ok(n);
                    }
                    let Stage::Data(_, hasher) = std::mem::replace(&mut self.stage, Stage::Failed)
                    else {
                        unreachable!("in the data stage")
                    };
                    match hasher.finish() {
                        Ok(tree) => self.stage = Stage::Tail(tree, 0),
                        Err(e) => {
                            self.stage = Stage::Failed;
                            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
                        }
                    }
                }
                Stage::Tail(tree, pos) => {
                    let (pad, t) = (tree.padding, &tree.tree);
                    let n = if *pos < pad {
                        let n = (pad - *pos).min(buf.len());
                        buf[..n].fill(0);
                        n
                    } else {
                        let from = *pos - pad;
                        let n = (t.len() - from).min(buf.len());
                        buf[..n].copy_from_slice(&t[from..from + n]);
                        n
                    };
                    *pos += n;
                    return Ok(n);
                }
                Stage::Failed => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "dm-verity needs at least one byte of data",
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
