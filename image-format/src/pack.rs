//! Packing and signing.
//!
//! `pack` makes one pass over each input: the header's length depends only on
//! the strings and the number of payloads, so the header and signature block
//! are reserved at the start of the (seekable) output, every payload is
//! hashed and, for zstd, compressed straight into the output behind them (as
//! independent frames of [`crate::ZSTD_FRAME_RAW`] raw bytes, `frames.rs`),
//! and then the header is encoded with the sizes and hashes, signed and
//! written into the reserved room. Memory stays bounded by the copy buffer
//! and the frames in flight (two per zstd worker), whatever the payload sizes.

use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use crate::chunked::ChunkOptions;
use crate::error::{Error, Result};
use crate::format::{
    self, Compression, HeaderSpec, PayloadInfo, DEFAULT_SIGNATURE_ROOM, MAX_PAYLOADS,
    MAX_SIGNATURES,
};
use crate::keys::SigningKey;
use crate::payload::PayloadHasher;
use crate::reader::ImageReader;
use crate::sigblock::{signature_block_len, signature_room, SignatureEntry};

const COPY_BUFFER: usize = 1 << 20;
/// The default of [`ZstdOptions::job_size`] and of `--zstd-job-size`. No
/// longer used by packing: zstd payloads are independent frames of
/// [`crate::ZSTD_FRAME_RAW`] raw bytes, which bound packing's memory, and
/// chunked parts compress one block at a time.
pub const DEFAULT_ZSTD_JOB_SIZE: u32 = 1 << 20;
/// Highest zstd level accepted: up to 19 the window stays within
/// [`format::ZSTD_WINDOW_LOG_MAX`], so every reader can decode it.
pub const MAX_ZSTD_LEVEL: i32 = 19;

/// zstd settings for packing.
#[derive(Clone, Copy, Debug)]
pub struct ZstdOptions {
    /// Compression level, 1..=19: of each frame of a zstd payload, of each
    /// block's frame of a chunked one.
    pub level: i32,
    /// Worker threads that compress a zstd payload's frames, or a chunked
    /// part's blocks, in parallel (0: compress on the calling thread; a zstd
    /// payload is compressed on the calling thread with 1 too).
    pub workers: u32,
    /// No longer used: it was the job size of zstd's own multithreading,
    /// when a zstd payload was one frame; a zstd payload is now cut into
    /// independent frames of [`crate::ZSTD_FRAME_RAW`] raw bytes whatever
    /// this is. Kept so that code and command lines that set it still work.
    pub job_size: u32,
}

impl Default for ZstdOptions {
    fn default() -> Self {
        ZstdOptions {
            level: 3,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            job_size: DEFAULT_ZSTD_JOB_SIZE,
        }
    }
}

/// What to put in the header.
#[derive(Clone, Debug)]
pub struct PackSpec {
    /// The device family.
    pub compatible: String,
    /// The release version.
    pub version: semver::Version,
    /// The anti-rollback index.
    pub rollback_index: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Signature entries to reserve room for (at least the number of signers).
    pub signature_room: usize,
    /// zstd settings for the parts that use it (chunked parts too: the
    /// level of each block frame, the workers compress blocks in parallel).
    pub zstd: ZstdOptions,
    /// Block layout of chunked parts.
    pub chunk: ChunkOptions,
}

impl PackSpec {
    /// A spec with the default signature room and zstd settings.
    pub fn new(
        compatible: &str,
        version: semver::Version,
        rollback_index: u64,
        created: u64,
    ) -> Self {
        PackSpec {
            compatible: compatible.to_owned(),
            version,
            rollback_index,
            created,
            signature_room: DEFAULT_SIGNATURE_ROOM,
            zstd: ZstdOptions::default(),
            chunk: ChunkOptions::default(),
        }
    }
}

/// One payload to pack.
pub struct PackPart<'a> {
    /// Its role.
    pub role: String,
    /// How to store it.
    pub compression: Compression,
    /// Its raw bytes.
    pub source: Box<dyn Read + 'a>,
    /// Its length when known (a file's): chunked parts choose their
    /// automatic block size from it.
    pub size_hint: Option<u64>,
    /// `Some(salt)`: append a dm-verity hash tree with this salt (0..=64
    /// bytes; [`crate::random_salt`] draws veritysetup's default of 32): the
    /// raw bytes become the source, zero padding to 4096 bytes, then the
    /// tree, and the header carries its root hash ([`PayloadInfo::verity`]).
    pub verity: Option<Vec<u8>>,
}

/// Counts (and, for zstd payloads, hashes) what goes through to the output.
struct Counter<'a, W> {
    inner: &'a mut W,
    count: u64,
    hasher: Option<Sha256>,
}

impl<W: Write> Write for Counter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn io_err(context: &'static str) -> impl Fn(io::Error) -> Error {
    move |e| Error::io(context, e)
}

/// Write a signed image to `out` (from its current position 0: pass a fresh
/// file). Returns the payload entries as written.
pub fn pack<W: Write + Seek>(
    out: &mut W,
    spec: &PackSpec,
    parts: Vec<PackPart<'_>>,
    signers: &[&SigningKey],
) -> Result<Vec<PayloadInfo>> {
    if signers.is_empty() {
        return Err(Error::InvalidInput(
            "at least one signing key is needed".into(),
        ));
    }
    for (i, k) in signers.iter().enumerate() {
        if signers[..i].iter().any(|o| o.key_id() == k.key_id()) {
            return Err(Error::DuplicateSignature { key_id: k.key_id() });
        }
    }
    if parts.is_empty() {
        return Err(Error::NoPayloads);
    }
    if parts.len() > MAX_PAYLOADS {
        return Err(Error::TooManyPayloads {
            count: parts.len(),
            max: MAX_PAYLOADS,
        });
    }
    if !(1..=MAX_ZSTD_LEVEL).contains(&spec.zstd.level) {
        return Err(Error::InvalidInput(format!(
            "zstd level {} is outside 1..={MAX_ZSTD_LEVEL}",
            spec.zstd.level
        )));
    }
    for (i, p) in parts.iter().enumerate() {
        if parts[..i].iter().any(|q| q.role == p.role) {
            return Err(Error::DuplicateRole {
                role: p.role.clone(),
            });
        }
    }
    let room = spec.signature_room.max(signers.len());
    if room > MAX_SIGNATURES {
        return Err(Error::InvalidInput(format!(
            "room for {room} signatures exceeds the limit of {MAX_SIGNATURES}"
        )));
    }

    // The header's length is fixed by the strings and the payload count:
    // encode it once with placeholder sizes and hashes.
    let mut infos: Vec<PayloadInfo> = parts
        .iter()
        .map(|p| {
            // Reserved with the real salt length: the field's length.
            let verity = p
                .verity
                .as_ref()
                .map(|salt| crate::VerityInfo::new(1, salt, [0; 32]))
                .transpose()?;
            Ok(PayloadInfo {
                role: p.role.clone(),
                compression: p.compression,
                raw_size: 0,
                stored_size: 0,
                sha256: [0; 32],
                offset: 0,
                // Reserved now (the header's length is fixed up front), filled
                // in once the stored bytes are written.
                stored_sha256: (p.compression == Compression::Zstd).then_some([0; 32]),
                chunked: (p.compression == Compression::Chunked).then_some(crate::ChunkInfo {
                    block_size: 0,
                    group_blocks: 0,
                    block_count: 0,
                    dict_len: 0,
                    table_stored_len: 0,
                    table_raw_len: 0,
                    table_sha256: [0; 32],
                }),
                verity,
            })
        })
        .collect::<Result<_>>()?;
    fn header_spec<'a>(spec: &'a PackSpec, payloads: &'a [PayloadInfo]) -> HeaderSpec<'a> {
        HeaderSpec {
            compatible: &spec.compatible,
            version: &spec.version,
            rollback_index: spec.rollback_index,
            created: spec.created,
            payloads,
        }
    }
    let header_len = format::encode_header(&header_spec(spec, &infos))?.len() as u64;
    let block_len = signature_block_len(header_len, room);
    let mut offset = header_len + block_len as u64;
    out.seek(SeekFrom::Start(offset))
        .map_err(io_err("seeking the output"))?;

    let mut buf = vec![0u8; COPY_BUFFER];
    for (part, info) in parts.into_iter().zip(infos.iter_mut()) {
        // With a tree, the source is read through a VerityReader, which
        // appends the padding and the tree and then knows the root hash.
        let size_hint = match &part.verity {
            Some(_) => part.size_hint.map(crate::verity_partition_len),
            None => part.size_hint,
        };
        let mut plain = None;
        let mut verity = None;
        let source: &mut dyn Read = match &part.verity {
            Some(salt) => verity.insert(crate::VerityReader::new(part.source, salt)?),
            None => plain.insert(part.source),
        };
        let mut hasher = PayloadHasher::new();
        let mut chunked_sums = None;
        let mut counter = Counter {
            inner: out,
            count: 0,
            hasher: info.stored_sha256.map(|_| Sha256::new()),
        };
        match part.compression {
            Compression::None => {
                copy_hashing(source, &mut counter, &mut hasher, &mut buf, &info.role)?
            }
            Compression::Zstd => {
                // Independent frames of ZSTD_FRAME_RAW raw bytes each, so
                // that an install can decode them on several cores.
                let mut enc = crate::frames::FramedEncoder::new(
                    &mut counter,
                    spec.zstd.level,
                    spec.zstd.workers,
                )
                .map_err(io_err("creating the zstd encoder"))?;
                copy_hashing(source, &mut enc, &mut hasher, &mut buf, &info.role)?;
                enc.finish().map_err(io_err("finishing the zstd stream"))?;
            }
            Compression::Chunked => {
                let packed = crate::chunked::pack::pack_chunked(
                    &mut counter,
                    source,
                    size_hint,
                    &spec.zstd,
                    &spec.chunk,
                    &info.role,
                )?;
                if packed.stored_size != counter.count {
                    return Err(Error::io(
                        "writing a chunked payload",
                        io::Error::other(format!(
                            "{}: wrote {} bytes, the table accounts for {}",
                            info.role, counter.count, packed.stored_size
                        )),
                    ));
                }
                info.chunked = Some(packed.info);
                chunked_sums = Some((packed.raw_size, packed.sha256));
            }
        }
        if let Some(h) = counter.hasher.take() {
            info.stored_sha256 = Some(h.finalize().into());
        }
        let (raw_size, sha256) = chunked_sums.unwrap_or_else(|| (hasher.len(), hasher.digest()));
        info.raw_size = raw_size;
        info.stored_size = counter.count;
        info.offset = offset;
        info.sha256 = sha256;
        if let Some(v) = &verity {
            let tree = v.info().ok_or_else(|| {
                Error::io(
                    "packing a dm-verity payload",
                    io::Error::other(format!("{}: the part was not read to its end", info.role)),
                )
            })?;
            debug_assert_eq!(tree.partition_len(), raw_size);
            info.verity = Some(tree.clone());
        }
        offset += info.stored_size;
    }

    let header = format::encode_header(&header_spec(spec, &infos))?;
    debug_assert_eq!(header.len() as u64, header_len);
    let entries: Vec<SignatureEntry> = signers
        .iter()
        .map(|k| SignatureEntry {
            key_id: k.key_id(),
            signature: k.sign(&header),
        })
        .collect();
    let block = crate::sigblock::encode_signature_block(&entries, block_len)?;
    out.seek(SeekFrom::Start(0))
        .map_err(io_err("seeking the output"))?;
    out.write_all(&header)
        .map_err(io_err("writing the header"))?;
    out.write_all(&block)
        .map_err(io_err("writing the signature block"))?;
    out.flush().map_err(io_err("flushing the output"))?;
    Ok(infos)
}

fn copy_hashing<W: Write>(
    source: &mut dyn Read,
    out: &mut W,
    hasher: &mut PayloadHasher,
    buf: &mut [u8],
    role: &str,
) -> Result<()> {
    loop {
        let n = match source.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Io {
                    context: "reading a part",
                    message: format!("{role}: {e}"),
                    kind: e.kind(),
                })
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(io_err("writing the image"))?;
    }
}

fn new_block_with(
    reader: &ImageReader<impl Read>,
    key: &SigningKey,
    block_len: u32,
) -> Result<Vec<u8>> {
    if reader.signatures().iter().any(|e| e.key_id == key.key_id()) {
        return Err(Error::DuplicateSignature {
            key_id: key.key_id(),
        });
    }
    let mut entries = reader.signatures().to_vec();
    entries.push(SignatureEntry {
        key_id: key.key_id(),
        signature: key.sign(reader.header_bytes()),
    });
    crate::sigblock::encode_signature_block(&entries, block_len)
}

/// Add a signature in place, rewriting only the signature block, when it has
/// room ([`Error::NoSignatureRoom`] otherwise: use [`sign_copy`]). The header
/// must parse; checking the payloads is the caller's business (the CLI does).
pub fn sign_in_place<F: Read + Write + Seek>(file: &mut F, key: &SigningKey) -> Result<()> {
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("seeking the image"))?;
    let reader = ImageReader::new(&mut *file)?;
    let header_len = reader.header_bytes().len() as u64;
    let block_len = reader.signature_block_bytes().len() as u32;
    let count = reader.signatures().len();
    if count + 1 > signature_room(block_len) {
        return Err(Error::NoSignatureRoom {
            count,
            room: signature_room(block_len),
        });
    }
    let block = new_block_with(&reader, key, block_len)?;
    file.seek(SeekFrom::Start(header_len))
        .map_err(io_err("seeking the image"))?;
    file.write_all(&block)
        .map_err(io_err("writing the signature block"))?;
    file.flush().map_err(io_err("flushing the image"))?;
    Ok(())
}

/// Copy `src` to `dst` with a signature added, in a signature block sized
/// for the signatures plus [`DEFAULT_SIGNATURE_ROOM`] more. Streams the
/// payload bytes unchanged.
pub fn sign_copy<R: Read, W: Write>(src: R, dst: &mut W, key: &SigningKey) -> Result<()> {
    let reader = ImageReader::new(src)?;
    let header_len = reader.header_bytes().len() as u64;
    let slots = (reader.signatures().len() + 1 + DEFAULT_SIGNATURE_ROOM).min(MAX_SIGNATURES);
    if reader.signatures().len() + 1 > slots {
        return Err(Error::NoSignatureRoom {
            count: reader.signatures().len(),
            room: MAX_SIGNATURES,
        });
    }
    let block = new_block_with(&reader, key, signature_block_len(header_len, slots))?;
    dst.write_all(reader.header_bytes())
        .map_err(io_err("writing the header"))?;
    dst.write_all(&block)
        .map_err(io_err("writing the signature block"))?;
    let mut rest = reader.into_untrusted()?.into_inner();
    io::copy(&mut rest, dst).map_err(io_err("copying the payloads"))?;
    dst.flush().map_err(io_err("flushing the image"))?;
    Ok(())
}
