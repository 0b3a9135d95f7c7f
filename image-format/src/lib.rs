//! image-format: the slotctl signed image container.
//!
//! An image is a small signed header (compatible, version, rollback index,
//! creation time, and one entry per payload: role, sizes, compression,
//! SHA-256 of the raw bytes), a block of ed25519 signatures over the exact
//! header bytes, and the payloads in header order. `docs/image-format.md` is
//! the byte-exact specification.
//!
//! The types make misuse hard:
//! - [`ImageReader::new`] reads the header and signature block from any
//!   `Read` (a pipe, an HTTP body) with hard caps checked before allocation,
//!   and parses nothing of the header but its length;
//! - [`ImageReader::verify`] checks the signatures against a [`Keyring`] and
//!   only then parses the header into a [`VerifiedHeader`], the only way to
//!   read its fields;
//! - [`VerifiedImage::next_payload`] gives a [`PayloadReader`] that
//!   decompresses and hashes as it streams, and whose final `read` fails
//!   when the size or the SHA-256 disagree, so no caller sees a clean end of
//!   bad data; [`VerifiedImage::copy_next_payload`] does the same with the
//!   hashing on a second thread, and [`PayloadHasher`] and [`decompressor`]
//!   are the pieces for pipelines of one's own;
//! - [`VerifiedHeader::record_bytes`] are the exact signed bytes to keep in a
//!   slot record, and [`VerifiedHeader::from_record_bytes`] re-verifies them;
//! - a payload may be `chunked` ([`Compression::Chunked`]): blocks compressed
//!   one zstd frame each behind a table the header authenticates
//!   ([`ChunkInfo`], [`ChunkTable`]), so a device can fetch only the blocks
//!   it lacks ([`BlockFinder`], [`fetch_plan`], [`decode_block`]); streamed,
//!   it decodes like any payload, each group checked before it is handed on;
//! - a payload may carry a dm-verity hash tree after its data
//!   ([`PackPart::verity`], [`VerityInfo`] in [`PayloadInfo::verity`]): the
//!   signed header binds its root hash, so a device can open the partition
//!   through dm-verity and have every block checked as it is read;
//! - [`ImageReader::into_untrusted`] parses without a signature (for
//!   `image info` without keys and `image sign`) into distinct `Untrusted*`
//!   types that nothing installing accepts.
//!
//! ```
//! use image_format::*;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = SigningKey::generate()?;
//! let mut ring = Keyring::new();
//! ring.add(key.public_key().clone());
//!
//! let mut image = std::io::Cursor::new(Vec::new());
//! let spec = PackSpec::new("acme-gw", semver::Version::new(1, 2, 0), 7, 1_700_000_000);
//! let parts = vec![PackPart {
//!     role: "ROOT".into(),
//!     compression: Compression::Zstd,
//!     source: Box::new(&b"root filesystem bytes"[..]),
//!     size_hint: None,
//!     verity: None,
//! }];
//! pack(&mut image, &spec, parts, &[&key])?;
//!
//! let mut verified = ImageReader::new(&image.get_ref()[..])?.verify(&ring, 1)?;
//! assert_eq!(verified.header().rollback_index(), 7);
//! while let Some(mut payload) = verified.next_payload()? {
//!     let mut raw = Vec::new();
//!     std::io::Read::read_to_end(&mut payload, &mut raw)?; // fails on a bad hash
//! }
//! verified.finish()?; // every payload read, nothing trailing
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod chunked;
mod error;
mod format;
mod frames;
mod keyfile;
mod keys;
mod pack;
mod payload;
mod reader;
mod sigblock;
mod verity;
mod verity_check;

#[cfg(test)]
mod tests;

pub use chunked::{
    auto_block_size, decode_block, fetch_plan, read_table, short_hash, BlockFinder, ChunkInfo,
    ChunkOptions, ChunkTable, FetchPlan, Needed, AUTO_MAX_BLOCKS, CHUNK_INFO_LEN,
    DEFAULT_GROUP_BLOCKS, MAX_BLOCK_COUNT, MAX_BLOCK_SIZE, MAX_DICT_LEN, MAX_GROUP_BLOCKS,
    MAX_TABLE_RAW_LEN, MERGE_GAP, MIN_BLOCK_SIZE,
};
pub use error::{Error, Result};
pub use format::{
    tag, valid_role, Compression, PayloadInfo, CRITICAL, DEFAULT_SIGNATURE_ROOM, FORMAT_VERSION,
    HEADER_FIXED_LEN, IMAGE_MAGIC, MAX_COMPATIBLE_LEN, MAX_HEADER_LEN, MAX_PAYLOADS,
    MAX_RECORD_LEN, MAX_ROLE_LEN, MAX_SIGNATURES, MAX_SIGNATURE_BLOCK_LEN, MAX_VERSION_LEN,
    PAYLOAD_ALIGN, SIGNATURE_BLOCK_FIXED_LEN, SIGNATURE_ENTRY_LEN, SIGNATURE_MAGIC,
    ZSTD_WINDOW_LOG_MAX,
};
/// Raw bytes in each zstd frame of a zstd payload that [`pack`] writes (the
/// last frame may hold fewer): every frame is independent (no window shared
/// across frames), records its content size in its header and carries no
/// checksum, so an installer can find the boundaries with
/// `ZSTD_findFrameCompressedSize` and decode frames in parallel, each into
/// one buffer of this size. Readers accept any split into frames
/// (`docs/image-format.md`).
pub const ZSTD_FRAME_RAW: usize = 1 << 20;

pub use keys::{KeyId, Keyring, PublicKey, SigningKey, KEY_ID_LEN};
pub use pack::{
    pack, sign_copy, sign_in_place, PackPart, PackSpec, ZstdOptions, DEFAULT_ZSTD_JOB_SIZE,
    MAX_ZSTD_LEVEL,
};
pub use payload::{decompressor, payload_decompressor, PayloadHasher, PayloadReader};
pub use reader::{
    ImageReader, SignatureStatus, UntrustedHeader, UntrustedImage, VerifiedHeader, VerifiedImage,
};
pub use semver;
pub use sigblock::{signature_block_len, signature_room, SignatureEntry};
pub use verity::{
    hash_tree_len, random_salt, verity_partition_len, VerityHasher, VerityInfo, VerityReader,
    VerityTree, DEFAULT_VERITY_SALT_LEN, MAX_VERITY_SALT_LEN, VERITY_BLOCK_SIZE, VERITY_HASH_TYPE,
};
pub use verity_check::VerityCheck;

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
