//! The one error type of the crate. Every variant names the field or the byte
//! offset that was wrong, and displays as one line.

// The variants are documented; their fields are named for what they hold.
#![allow(missing_docs)]

use std::io;
use std::path::PathBuf;

use crate::keys::KeyId;

/// Everything that can go wrong reading, verifying, packing or signing an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error of the underlying stream or file.
    #[error("{context}: {message}")]
    Io {
        context: &'static str,
        message: String,
        kind: io::ErrorKind,
    },

    // ---- framing (read before any signature check) ----
    /// The stream ended inside the header, the signature block or a payload.
    #[error("image truncated: {what} ends early (at byte {offset})")]
    Truncated { what: &'static str, offset: u64 },
    /// The first 8 bytes are not `SLOTIMG\0`.
    #[error("not a slotctl image: bad magic at byte 0")]
    BadMagic,
    /// The header length field (byte 8) is over the cap; refused before allocating.
    #[error("header length {len} (at byte 8) exceeds the limit of {max} bytes")]
    HeaderTooLong { len: u64, max: u32 },
    /// The header length field is smaller than the fixed part of the header.
    #[error("header length {len} (at byte 8) is below the minimum of {min} bytes")]
    HeaderTooShort { len: u64, min: u32 },
    /// The signature block does not start with `SLOTSIG\0`.
    #[error("bad signature block magic at byte {offset}")]
    BadSignatureBlockMagic { offset: u64 },
    /// The signature block length is outside its bounds.
    #[error("signature block length {len} (at byte {offset}) is outside {min}..={max}")]
    BadSignatureBlockLength {
        len: u64,
        offset: u64,
        min: u32,
        max: u32,
    },
    /// More signatures than the cap, or than fit in the block.
    #[error("signature count {count} (at byte {offset}) exceeds the {max} that fit")]
    TooManySignatures { count: u64, offset: u64, max: u64 },
    /// The reserved field of the signature block is not zero.
    #[error("reserved field of the signature block (at byte {offset}) is not zero")]
    SignatureBlockReserved { offset: u64 },
    /// A byte of the signature block's unused room is not zero.
    #[error("unused room of the signature block has a non-zero byte at byte {offset}")]
    SignatureBlockPadding { offset: u64 },
    /// A signature entry is all zero (the unused-room pattern).
    #[error("signature {index} (at byte {offset}) is empty")]
    EmptySignatureEntry { index: usize, offset: u64 },

    // ---- signatures ----
    /// The signature block holds no signature.
    #[error("image has no signatures")]
    NoSignatures,
    /// Two signatures carry the same key id.
    #[error("duplicate signature by key {key_id}")]
    DuplicateSignature { key_id: KeyId },
    /// No signature is by a key of the keyring.
    #[error("no signature by a trusted key (image signed by: {signed_by})")]
    UntrustedSignatures { signed_by: String },
    /// A signature by a trusted key does not verify over the header bytes.
    #[error("signature {index} by trusted key {key_id} does not verify over the header")]
    BadSignature { index: usize, key_id: KeyId },
    /// Fewer distinct trusted keys signed than the threshold requires.
    #[error("{valid} valid signature(s) by trusted keys, {threshold} required")]
    ThresholdNotMet { valid: usize, threshold: usize },
    /// A threshold of 0 would accept anything.
    #[error("signature threshold must be at least 1")]
    ZeroThreshold,
    /// The keyring is empty.
    #[error("the keyring is empty")]
    EmptyKeyring,

    // ---- header fields (parsed only after the signature check) ----
    /// The format version in the header is not one this reader knows.
    #[error("unsupported image format version {found} (this slotctl reads version {supported})")]
    UnsupportedFormatVersion { found: u16, supported: u16 },
    /// The header's reserved flags are not zero.
    #[error("header flags {flags:#06x} (at byte 14) are not zero")]
    HeaderFlags { flags: u16 },
    /// A field record runs past the end of its container.
    #[error("header field at byte {offset} runs past the end of {container}")]
    FieldOverrun {
        offset: u64,
        container: &'static str,
    },
    /// An unknown field with the critical bit set.
    #[error("unknown critical field {tag:#06x} at byte {offset} of the {container}")]
    UnknownCriticalField {
        tag: u16,
        offset: u64,
        container: &'static str,
    },
    /// A field that may occur once occurs twice.
    #[error("duplicate field `{field}` at byte {offset}")]
    DuplicateField { field: &'static str, offset: u64 },
    /// A required field is missing.
    #[error("missing field `{field}` in the {container}")]
    MissingField {
        field: &'static str,
        container: &'static str,
    },
    /// A field's value is malformed.
    #[error("field `{field}` at byte {offset}: {reason}")]
    BadField {
        field: &'static str,
        offset: u64,
        reason: String,
    },
    /// Two payloads have the same role.
    #[error("duplicate payload role {role}")]
    DuplicateRole { role: String },
    /// No payload at all.
    #[error("image has no payloads")]
    NoPayloads,
    /// More payloads than the cap.
    #[error("{count} payloads exceed the limit of {max}")]
    TooManyPayloads { count: usize, max: usize },
    /// Declared raw and stored sizes disagree for an uncompressed payload.
    #[error("payload {role}: uncompressed but stored size {stored} != raw size {raw}")]
    SizeDisagreement { role: String, raw: u64, stored: u64 },
    /// The payloads' declared total size overflows.
    #[error("declared payload sizes overflow a 64-bit offset")]
    SizeOverflow,

    // ---- payload stream ----
    /// The stream ended inside a payload's stored bytes.
    #[error("image truncated: payload {role} ends early (at byte {offset})")]
    PayloadTruncated { role: String, offset: u64 },
    /// A payload decompressed to more or fewer bytes than declared.
    #[error("payload {role}: {actual} raw bytes, header declares {expected}")]
    RawSizeMismatch {
        role: String,
        expected: u64,
        actual: u64,
    },
    /// A payload's SHA-256 does not match the header.
    #[error("payload {role}: SHA-256 {actual} does not match the header's {expected}")]
    HashMismatch {
        role: String,
        expected: String,
        actual: String,
    },
    /// A payload's stored bytes do not hash to the header's `stored_sha256`.
    #[error("payload {role}: SHA-256 of the stored bytes {actual} does not match the header's {expected}")]
    StoredHashMismatch {
        role: String,
        expected: String,
        actual: String,
    },
    /// The zstd stream is corrupt.
    #[error("payload {role}: corrupt zstd data ({detail})")]
    CorruptPayload { role: String, detail: String },
    /// The zstd stream ended before the declared stored size.
    #[error("payload {role}: compressed stream ends {left} bytes before its declared stored size")]
    StoredSizeMismatch { role: String, left: u64 },
    /// A chunked payload's table is malformed or does not match the header.
    #[error("payload {role}: chunk table: {reason}")]
    BadChunkTable { role: String, reason: String },
    /// A block frame of a chunked payload is corrupt or of the wrong size.
    #[error("payload {role}: block {block} (raw offset {offset}): {detail}")]
    CorruptBlock {
        role: String,
        block: u32,
        offset: u64,
        detail: String,
    },
    /// A group of blocks does not hash to the table's SHA-256.
    #[error("payload {role}: group {group} (raw offset {offset}) does not match the signed table")]
    GroupHashMismatch {
        role: String,
        group: u32,
        offset: u64,
    },
    /// A read after a payload reader already failed.
    #[error("payload {role}: read after a verification error")]
    PayloadPoisoned { role: String },
    /// Bytes follow the last payload.
    #[error("trailing data after the last payload (at byte {offset})")]
    TrailingData { offset: u64 },
    /// `finish` was called with payloads not read to their end.
    #[error("payload {role} was not read to its end")]
    PayloadNotConsumed { role: String },
    /// `next_payload` was called while an earlier payload was read only in part.
    #[error("payload {role} was read only in part before the next one was requested")]
    PayloadAbandoned { role: String },

    // ---- keys ----
    /// A key could not be decoded (the detail never includes key material).
    #[error("{what}: {detail}")]
    Key { what: String, detail: String },
    /// A key file could not be read or decoded.
    #[error("key file {path}: {detail}")]
    KeyFile { path: PathBuf, detail: String },
    /// The OS random number generator failed.
    #[error("random number generator: {0}")]
    Random(String),

    // ---- packing / signing ----
    /// A pack or sign argument is invalid.
    #[error("{0}")]
    InvalidInput(String),
    /// The signature block has no room for another signature.
    #[error("signature block is full ({count} signatures, room for {room})")]
    NoSignatureRoom { count: usize, room: usize },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error with what was being done.
    pub fn io(context: &'static str, err: io::Error) -> Self {
        // An image error travelling inside an io::Error (from a payload
        // reader) comes back out unchanged.
        match Error::from_io(err) {
            Error::Io { message, kind, .. } => Error::Io {
                context,
                message,
                kind,
            },
            other => other,
        }
    }

    /// Recover an [`Error`] that a payload reader returned inside an
    /// `io::Error`; other I/O errors become [`Error::Io`].
    pub fn from_io(err: io::Error) -> Self {
        let kind = err.kind();
        if err.get_ref().is_some_and(|e| e.is::<Error>()) {
            if let Some(inner) = err.into_inner() {
                if let Ok(e) = inner.downcast::<Error>() {
                    return *e;
                }
            }
            // Unreachable in practice: the check above said it is an Error.
            return Error::Io {
                context: "read",
                message: "lost error".into(),
                kind,
            };
        }
        Error::Io {
            context: "read",
            message: err.to_string(),
            kind,
        }
    }

    /// True for a verification or integrity failure (signature, hash,
    /// malformed or tampered image), as opposed to an I/O error or bad usage.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            Error::Io { .. }
                | Error::Key { .. }
                | Error::KeyFile { .. }
                | Error::Random(_)
                | Error::InvalidInput(_)
                | Error::NoSignatureRoom { .. }
                | Error::ZeroThreshold
                | Error::EmptyKeyring
                | Error::PayloadNotConsumed { .. }
                | Error::PayloadAbandoned { .. }
        )
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io { kind, .. } => *kind,
            Error::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}
