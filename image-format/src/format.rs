//! The byte layout (docs/image-format.md is the normative text): constants,
//! and the header's field records (the signature block is in `sigblock`).
//!
//! All integers are little-endian.

use crate::error::{Error, Result};

/// The first 8 bytes of every image (and of its signed header).
pub const IMAGE_MAGIC: [u8; 8] = *b"SLOTIMG\0";
/// The first 8 bytes of the signature block.
pub const SIGNATURE_MAGIC: [u8; 8] = *b"SLOTSIG\0";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// magic(8) + header_len u32 + format_version u16 + flags u16.
pub const HEADER_FIXED_LEN: u32 = 16;
/// Hard cap on the header length, checked before allocating it.
pub const MAX_HEADER_LEN: u32 = 32 * 1024;
/// magic(8) + block_len u32 + count u16 + reserved u16.
pub const SIGNATURE_BLOCK_FIXED_LEN: u32 = 16;
/// key id (8) + ed25519 signature (64).
pub const SIGNATURE_ENTRY_LEN: u32 = 72;
/// Hard cap on the signature block length, checked before allocating it.
pub const MAX_SIGNATURE_BLOCK_LEN: u32 = 16 * 1024;
/// Hard cap on the number of signatures.
pub const MAX_SIGNATURES: usize = 64;
/// Hard cap on the number of payloads.
pub const MAX_PAYLOADS: usize = 64;
/// Room for signatures `pack` reserves, so `sign` can add them in place.
pub const DEFAULT_SIGNATURE_ROOM: usize = 16;
/// `pack` aligns the first payload to this many bytes.
pub const PAYLOAD_ALIGN: u64 = 4096;
/// The largest header plus signature block: what a slot record must hold.
pub const MAX_RECORD_LEN: usize = (MAX_HEADER_LEN + MAX_SIGNATURE_BLOCK_LEN) as usize;
/// Bit 15 of a field tag: a reader that does not know the field must refuse.
pub const CRITICAL: u16 = 0x8000;
/// Longest `compatible` string.
pub const MAX_COMPATIBLE_LEN: usize = 255;
/// Longest version string.
pub const MAX_VERSION_LEN: usize = 255;
/// Longest role name.
pub const MAX_ROLE_LEN: usize = 32;

/// Field tags of the header's top level.
pub mod tag {
    /// UTF-8, 1..=255 bytes, printable ASCII.
    pub const COMPATIBLE: u16 = 0x8001;
    /// UTF-8 semantic version, 1..=255 bytes.
    pub const VERSION: u16 = 0x8002;
    /// u64.
    pub const ROLLBACK_INDEX: u16 = 0x8003;
    /// u64, seconds since the Unix epoch.
    pub const CREATED: u16 = 0x8004;
    /// A nested list of payload fields; one per payload, in stream order.
    pub const PAYLOAD: u16 = 0x8005;

    /// Field tags inside a PAYLOAD record.
    pub mod payload {
        /// ASCII `[A-Za-z0-9_]`, 1..=32 bytes.
        pub const ROLE: u16 = 0x8001;
        /// u8: 0 none, 1 zstd, 2 chunked.
        pub const COMPRESSION: u16 = 0x8002;
        /// u64: bytes after decompression.
        pub const RAW_SIZE: u16 = 0x8003;
        /// u64: bytes in the image.
        pub const STORED_SIZE: u16 = 0x8004;
        /// 32 bytes: SHA-256 of the raw bytes.
        pub const SHA256: u16 = 0x8005;
        /// 56 bytes: a chunked payload's block layout and table
        /// ([`crate::ChunkInfo`]); required iff compression is `chunked`.
        pub const CHUNKED: u16 = 0x8006;
        /// Optional, 32 bytes: SHA-256 of the **stored** bytes (as they are
        /// in the image). `pack` writes it for zstd payloads, so that an
        /// install can check the bytes it decompresses by hashing about
        /// half as many (docs/image-format.md, "stored_sha256").
        pub const STORED_SHA256: u16 = 0x0007;
        /// Critical, at most once: the parameters and root hash of a
        /// dm-verity tree that ends the raw bytes ([`crate::VerityInfo`]).
        pub const VERITY: u16 = 0x8008;
    }
}

/// How a payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// The raw bytes as they are (stored size = raw size).
    None,
    /// One or more zstd frames; the window may not exceed 2^[`ZSTD_WINDOW_LOG_MAX`].
    Zstd,
    /// Blocks compressed one zstd frame each behind a chunk table (the
    /// payload's `chunked` field describes them; see [`crate::ChunkTable`]).
    Chunked,
}

/// Largest zstd window log a reader accepts (16 MiB), bounding decoder memory.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

impl Compression {
    /// The header's byte value.
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
            Compression::Chunked => 2,
        }
    }

    /// The name used on the command line and in `info`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Chunked => "chunked",
        }
    }

    fn from_code(code: u8) -> Option<Compression> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            2 => Some(Compression::Chunked),
            _ => None,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Compression> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            "chunked" => Ok(Compression::Chunked),
            _ => Err(Error::InvalidInput(format!(
                "unknown compression `{s}` (expected none, zstd or chunked)"
            ))),
        }
    }
}

/// One payload as the header declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PayloadInfo {
    /// The slot role it is written to (BOOT, ROOT, HASH...).
    pub role: String,
    /// How it is stored.
    pub compression: Compression,
    /// Bytes after decompression (what is written to the partition).
    pub raw_size: u64,
    /// Bytes in the image.
    pub stored_size: u64,
    /// SHA-256 of the raw bytes.
    pub sha256: [u8; 32],
    /// Byte offset of the stored bytes in the image.
    pub offset: u64,
    /// The block layout and table of a `chunked` payload (None otherwise).
    pub chunked: Option<crate::ChunkInfo>,
    /// SHA-256 of the stored bytes, when the header carries it (optional
    /// field `0x0007`; `pack` writes it for zstd payloads).
    pub stored_sha256: Option<[u8; 32]>,
    /// The dm-verity tree the raw bytes end with (critical field `0x8008`):
    /// data, zero padding to 4096 bytes, then the tree.
    pub verity: Option<crate::VerityInfo>,
}

impl PayloadInfo {
    /// The SHA-256 as 64 lowercase hex digits.
    pub fn sha256_hex(&self) -> String {
        crate::hex(&self.sha256)
    }
}

/// True for a valid role name.
pub fn valid_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= MAX_ROLE_LEN
        && role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn valid_compatible(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_COMPATIBLE_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The parsed fields of a header. Only `reader` hands these out, behind a
/// verified (or explicitly untrusted) type.
#[derive(Clone, Debug)]
pub(crate) struct HeaderFields {
    pub format_version: u16,
    pub compatible: String,
    pub version: semver::Version,
    pub rollback_index: u64,
    pub created: u64,
    pub payloads: Vec<PayloadInfo>,
    /// Unknown optional fields that were ignored: (tag, offset, length).
    pub ignored: Vec<(u16, u64, u32)>,
}

/// The fields to encode in a header.
#[derive(Clone, Debug)]
pub(crate) struct HeaderSpec<'a> {
    pub compatible: &'a str,
    pub version: &'a semver::Version,
    pub rollback_index: u64,
    pub created: u64,
    pub payloads: &'a [PayloadInfo],
}

/// Encodes field records; tests use it directly to build odd headers.
#[derive(Default)]
pub(crate) struct Records(pub Vec<u8>);

impl Records {
    pub fn field(&mut self, tag: u16, value: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&tag.to_le_bytes());
        self.0
            .extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
        self.0.extend_from_slice(value);
        self
    }
}

/// Wrap field records in the fixed header part (magic, length, version, flags).
pub(crate) fn wrap_header(records: &[u8], format_version: u16, flags: u16) -> Vec<u8> {
    let len = HEADER_FIXED_LEN as usize + records.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&IMAGE_MAGIC);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&format_version.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(records);
    out
}

pub(crate) fn payload_records(p: &PayloadInfo) -> Vec<u8> {
    let mut r = Records::default();
    r.field(tag::payload::ROLE, p.role.as_bytes())
        .field(tag::payload::COMPRESSION, &[p.compression.code()])
        .field(tag::payload::RAW_SIZE, &p.raw_size.to_le_bytes())
        .field(tag::payload::STORED_SIZE, &p.stored_size.to_le_bytes())
        .field(tag::payload::SHA256, &p.sha256);
    if let Some(c) = &p.chunked {
        r.field(tag::payload::CHUNKED, &c.encode());
    }
    if let Some(h) = &p.stored_sha256 {
        r.field(tag::payload::STORED_SHA256, h);
    }
    if let Some(v) = &p.verity {
        r.field(tag::payload::VERITY, &v.encode());
    }
    r.0
}

/// The canonical encoding `pack` writes. Its length depends only on the
/// strings and the number of payloads, so `pack` can reserve it up front.
pub(crate) fn encode_header(spec: &HeaderSpec<'_>) -> Result<Vec<u8>> {
    if !valid_compatible(spec.compatible) {
        return Err(Error::InvalidInput(format!(
            "compatible `{}` must be 1..={MAX_COMPATIBLE_LEN} printable ASCII characters",
            spec.compatible
        )));
    }
    let version = spec.version.to_string();
    if version.len() > MAX_VERSION_LEN {
        return Err(Error::InvalidInput("version string too long".into()));
    }
    if spec.payloads.is_empty() {
        return Err(Error::NoPayloads);
    }
    if spec.payloads.len() > MAX_PAYLOADS {
        return Err(Error::TooManyPayloads {
            count: spec.payloads.len(),
            max: MAX_PAYLOADS,
        });
    }
    let mut r = Records::default();
    r.field(tag::COMPATIBLE, spec.compatible.as_bytes())
        .field(tag::VERSION, version.as_bytes())
        .field(tag::ROLLBACK_INDEX, &spec.rollback_index.to_le_bytes())
        .field(tag::CREATED, &spec.created.to_le_bytes());
    for p in spec.payloads {
        if !valid_role(&p.role) {
            return Err(Error::InvalidInput(format!(
                "role `{}` must be 1..={MAX_ROLE_LEN} characters of A-Z a-z 0-9 _",
                p.role
            )));
        }
        r.field(tag::PAYLOAD, &payload_records(p));
    }
    let header = wrap_header(&r.0, FORMAT_VERSION, 0);
    if header.len() > MAX_HEADER_LEN as usize {
        return Err(Error::HeaderTooLong {
            len: header.len() as u64,
            max: MAX_HEADER_LEN,
        });
    }
    Ok(header)
}

/// One field record: (tag, offset of the record, value, offset of the value).
type Record<'a> = (u16, u64, &'a [u8], u64);

/// A cursor over untrusted bytes that never indexes out of bounds.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` in the image, for error messages.
    base: u64,
    container: &'static str,
}

impl<'a> Cursor<'a> {
    fn at(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let start = self.pos;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Error::FieldOverrun {
                offset: self.at(),
                container: self.container,
            })?;
        self.pos = end;
        Ok(&self.buf[start..end])
    }

    /// The next record.
    fn record(&mut self) -> Result<Option<Record<'a>>> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let rec_at = self.at();
        let head = self.take(6).map_err(|_| Error::FieldOverrun {
            offset: rec_at,
            container: self.container,
        })?;
        let tag = u16::from_le_bytes([head[0], head[1]]);
        let len = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let value_at = self.at();
        let value = self.take(len).map_err(|_| Error::FieldOverrun {
            offset: rec_at,
            container: self.container,
        })?;
        Ok(Some((tag, rec_at, value, value_at)))
    }
}

fn set_once<T>(slot: &mut Option<T>, v: T, field: &'static str, at: u64) -> Result<()> {
    if slot.is_some() {
        return Err(Error::DuplicateField { field, offset: at });
    }
    *slot = Some(v);
    Ok(())
}

fn fixed<const N: usize>(v: &[u8], field: &'static str, at: u64) -> Result<[u8; N]> {
    v.try_into().map_err(|_| Error::BadField {
        field,
        offset: at,
        reason: format!("{} bytes, expected {N}", v.len()),
    })
}

fn text<'a>(v: &'a [u8], field: &'static str, at: u64, max: usize) -> Result<&'a str> {
    if v.is_empty() || v.len() > max {
        return Err(Error::BadField {
            field,
            offset: at,
            reason: format!("{} bytes, expected 1..={max}", v.len()),
        });
    }
    std::str::from_utf8(v).map_err(|_| Error::BadField {
        field,
        offset: at,
        reason: "not UTF-8".into(),
    })
}

fn unknown(tag: u16, at: u64, container: &'static str) -> Result<()> {
    if tag & CRITICAL != 0 {
        Err(Error::UnknownCriticalField {
            tag,
            offset: at,
            container,
        })
    } else {
        Ok(())
    }
}

/// Parse header bytes. Called only on bytes whose signature was checked, or
/// by the explicitly untrusted inspection.
pub(crate) fn parse_header(header: &[u8]) -> Result<HeaderFields> {
    if header.len() < HEADER_FIXED_LEN as usize || header[..8] != IMAGE_MAGIC {
        return Err(Error::BadMagic);
    }
    let format_version = u16::from_le_bytes([header[12], header[13]]);
    if format_version != FORMAT_VERSION {
        return Err(Error::UnsupportedFormatVersion {
            found: format_version,
            supported: FORMAT_VERSION,
        });
    }
    let flags = u16::from_le_bytes([header[14], header[15]]);
    if flags != 0 {
        return Err(Error::HeaderFlags { flags });
    }
    let mut cur = Cursor {
        buf: &header[HEADER_FIXED_LEN as usize..],
        pos: 0,
        base: HEADER_FIXED_LEN as u64,
        container: "header",
    };
    let (mut compatible, mut version, mut rollback, mut created) = (None, None, None, None);
    let mut payloads: Vec<PayloadInfo> = Vec::new();
    let mut ignored = Vec::new();
    while let Some((tag, rec_at, v, at)) = cur.record()? {
        match tag {
            tag::COMPATIBLE => {
                let s = text(v, "compatible", at, MAX_COMPATIBLE_LEN)?;
                if !valid_compatible(s) {
                    return Err(Error::BadField {
                        field: "compatible",
                        offset: at,
                        reason: "not printable ASCII".into(),
                    });
                }
                set_once(&mut compatible, s.to_owned(), "compatible", rec_at)?;
            }
            tag::VERSION => {
                let s = text(v, "version", at, MAX_VERSION_LEN)?;
                let parsed = semver::Version::parse(s).map_err(|e| Error::BadField {
                    field: "version",
                    offset: at,
                    reason: format!("`{s}` is not a semantic version: {e}"),
                })?;
                set_once(&mut version, parsed, "version", rec_at)?;
            }
            tag::ROLLBACK_INDEX => {
                let n = u64::from_le_bytes(fixed(v, "rollback_index", at)?);
                set_once(&mut rollback, n, "rollback_index", rec_at)?;
            }
            tag::CREATED => {
                let n = u64::from_le_bytes(fixed(v, "created", at)?);
                set_once(&mut created, n, "created", rec_at)?;
            }
            tag::PAYLOAD => {
                if payloads.len() == MAX_PAYLOADS {
                    return Err(Error::TooManyPayloads {
                        count: payloads.len() + 1,
                        max: MAX_PAYLOADS,
                    });
                }
                let p = parse_payload(v, at)?;
                if payloads.iter().any(|q| q.role == p.role) {
                    return Err(Error::DuplicateRole { role: p.role });
                }
                payloads.push(p);
            }
            other => {
                unknown(other, rec_at, "header")?;
                ignored.push((other, rec_at, v.len() as u32));
            }
        }
    }
    let missing = |field| Error::MissingField {
        field,
        container: "header",
    };
    if payloads.is_empty() {
        return Err(Error::NoPayloads);
    }
    // Offsets of the stored bytes follow from the framing; filled in by the
    // reader, which knows where the payloads start.
    Ok(HeaderFields {
        format_version,
        compatible: compatible.ok_or_else(|| missing("compatible"))?,
        version: version.ok_or_else(|| missing("version"))?,
        rollback_index: rollback.ok_or_else(|| missing("rollback_index"))?,
        created: created.ok_or_else(|| missing("created"))?,
        payloads,
        ignored,
    })
}

pub(crate) fn parse_payload(v: &[u8], base: u64) -> Result<PayloadInfo> {
    let mut cur = Cursor {
        buf: v,
        pos: 0,
        base,
        container: "payload entry",
    };
    let (mut role, mut comp, mut raw, mut stored, mut sha) = (None, None, None, None, None);
    let mut stored_sha = None;
    let mut chunked: Option<(crate::ChunkInfo, u64)> = None;
    let mut verity: Option<(crate::VerityInfo, u64)> = None;
    while let Some((tag, rec_at, v, at)) = cur.record()? {
        match tag {
            tag::payload::ROLE => {
                let s = text(v, "role", at, MAX_ROLE_LEN)?;
                if !valid_role(s) {
                    return Err(Error::BadField {
                        field: "role",
                        offset: at,
                        reason: "not [A-Za-z0-9_]".into(),
                    });
                }
                set_once(&mut role, s.to_owned(), "role", rec_at)?;
            }
            tag::payload::COMPRESSION => {
                let [code] = fixed::<1>(v, "compression", at)?;
                let c = Compression::from_code(code).ok_or_else(|| Error::BadField {
                    field: "compression",
                    offset: at,
                    reason: format!("unknown compression {code}"),
                })?;
                set_once(&mut comp, c, "compression", rec_at)?;
            }
            tag::payload::RAW_SIZE => {
                let n = u64::from_le_bytes(fixed(v, "raw_size", at)?);
                set_once(&mut raw, n, "raw_size", rec_at)?;
            }
            tag::payload::STORED_SIZE => {
                let n = u64::from_le_bytes(fixed(v, "stored_size", at)?);
                set_once(&mut stored, n, "stored_size", rec_at)?;
            }
            tag::payload::SHA256 => {
                let h: [u8; 32] = fixed(v, "sha256", at)?;
                set_once(&mut sha, h, "sha256", rec_at)?;
            }
            tag::payload::CHUNKED => {
                let c = crate::ChunkInfo::decode(v, at)?;
                set_once(&mut chunked, (c, at), "chunked", rec_at)?;
            }
            tag::payload::STORED_SHA256 => {
                let h: [u8; 32] = fixed(v, "stored_sha256", at)?;
                set_once(&mut stored_sha, h, "stored_sha256", rec_at)?;
            }
            tag::payload::VERITY => {
                let info = crate::VerityInfo::decode(v, at)?;
                set_once(&mut verity, (info, at), "verity", rec_at)?;
            }
            other => unknown(other, rec_at, "payload entry")?,
        }
    }
    let missing = |field| Error::MissingField {
        field,
        container: "payload entry",
    };
    let p = PayloadInfo {
        role: role.ok_or_else(|| missing("role"))?,
        compression: comp.ok_or_else(|| missing("compression"))?,
        raw_size: raw.ok_or_else(|| missing("raw_size"))?,
        stored_size: stored.ok_or_else(|| missing("stored_size"))?,
        sha256: sha.ok_or_else(|| missing("sha256"))?,
        offset: 0,
        chunked: chunked.map(|(c, _)| c),
        stored_sha256: stored_sha,
        verity: verity.as_ref().map(|(v, _)| v.clone()),
    };
    if let Some((v, at)) = &verity {
        v.check(p.raw_size, *at)?;
    }
    match (p.compression, chunked) {
        (Compression::Chunked, None) => return Err(missing("chunked")),
        (Compression::Chunked, Some((c, at))) => c.check(p.raw_size, p.stored_size, at)?,
        (_, Some((_, at))) => {
            return Err(Error::BadField {
                field: "chunked",
                offset: at,
                reason: format!(
                    "present on a payload with compression {}",
                    p.compression.name()
                ),
            })
        }
        (_, None) => {}
    }
    if p.compression == Compression::None && p.raw_size != p.stored_size {
        return Err(Error::SizeDisagreement {
            role: p.role,
            raw: p.raw_size,
            stored: p.stored_size,
        });
    }
    Ok(p)
}
