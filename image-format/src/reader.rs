//! Reading an image from any `Read` (non-seekable is fine) and verifying it.
//!
//! [`ImageReader::new`] reads and bounds the header and the signature block,
//! parsing nothing in the header but its length. [`ImageReader::verify`]
//! checks the signatures against a [`Keyring`] and only then parses the
//! fields, into a [`VerifiedImage`] whose [`VerifiedHeader`] is the only way
//! to read them. The payloads follow in header order through
//! [`VerifiedImage::next_payload`].

use std::io::Read;

use crate::error::{Error, Result};
use crate::format::{
    self, HeaderFields, PayloadInfo, HEADER_FIXED_LEN, IMAGE_MAGIC, MAX_HEADER_LEN,
    MAX_SIGNATURE_BLOCK_LEN, SIGNATURE_BLOCK_FIXED_LEN, SIGNATURE_MAGIC,
};
use crate::keys::{KeyId, Keyring};
use crate::payload::Stream;
use crate::sigblock::SignatureEntry;

/// Read exactly `buf.len()` bytes; a short stream is [`Error::Truncated`].
pub(crate) fn read_exact_at<R: Read + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
    what: &'static str,
    offset: u64,
) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => {
                return Err(Error::Truncated {
                    what,
                    offset: offset + done as u64,
                })
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading the image", e)),
        }
    }
    Ok(())
}

/// An image whose header and signature block have been read (and bounded)
/// but not verified. Nothing of the header beyond its length is parsed yet.
pub struct ImageReader<R> {
    inner: R,
    /// header bytes followed by signature block bytes, exactly as in the image.
    record: Vec<u8>,
    header_len: usize,
    signatures: Vec<SignatureEntry>,
}

impl<R: Read> ImageReader<R> {
    /// Read the header and the signature block from the start of `inner`.
    /// Lengths are checked against [`MAX_HEADER_LEN`] and
    /// [`MAX_SIGNATURE_BLOCK_LEN`] before anything is allocated.
    pub fn new(mut inner: R) -> Result<ImageReader<R>> {
        let mut fixed = [0u8; HEADER_FIXED_LEN as usize];
        read_exact_at(&mut inner, &mut fixed, "header", 0)?;
        if fixed[..8] != IMAGE_MAGIC {
            return Err(Error::BadMagic);
        }
        let header_len = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
        if header_len > MAX_HEADER_LEN {
            return Err(Error::HeaderTooLong {
                len: header_len as u64,
                max: MAX_HEADER_LEN,
            });
        }
        if header_len < HEADER_FIXED_LEN {
            return Err(Error::HeaderTooShort {
                len: header_len as u64,
                min: HEADER_FIXED_LEN,
            });
        }
        let hlen = header_len as usize;
        let mut record = Vec::with_capacity(hlen + SIGNATURE_BLOCK_FIXED_LEN as usize);
        record.extend_from_slice(&fixed);
        record.resize(hlen, 0);
        read_exact_at(
            &mut inner,
            &mut record[HEADER_FIXED_LEN as usize..],
            "header",
            HEADER_FIXED_LEN as u64,
        )?;

        let mut sfixed = [0u8; SIGNATURE_BLOCK_FIXED_LEN as usize];
        read_exact_at(&mut inner, &mut sfixed, "signature block", hlen as u64)?;
        if sfixed[..8] != SIGNATURE_MAGIC {
            return Err(Error::BadSignatureBlockMagic {
                offset: hlen as u64,
            });
        }
        let block_len = u32::from_le_bytes([sfixed[8], sfixed[9], sfixed[10], sfixed[11]]);
        if !(SIGNATURE_BLOCK_FIXED_LEN..=MAX_SIGNATURE_BLOCK_LEN).contains(&block_len) {
            return Err(Error::BadSignatureBlockLength {
                len: block_len as u64,
                offset: hlen as u64 + 8,
                min: SIGNATURE_BLOCK_FIXED_LEN,
                max: MAX_SIGNATURE_BLOCK_LEN,
            });
        }
        record.reserve_exact(block_len as usize);
        record.extend_from_slice(&sfixed);
        record.resize(hlen + block_len as usize, 0);
        read_exact_at(
            &mut inner,
            &mut record[hlen + SIGNATURE_BLOCK_FIXED_LEN as usize..],
            "signature block",
            (hlen + SIGNATURE_BLOCK_FIXED_LEN as usize) as u64,
        )?;
        let signatures = crate::sigblock::parse_signature_block(&record[hlen..], hlen as u64)?;
        Ok(ImageReader {
            inner,
            record,
            header_len: hlen,
            signatures,
        })
    }

    /// The exact header bytes (what the signatures cover). Untrusted.
    pub fn header_bytes(&self) -> &[u8] {
        &self.record[..self.header_len]
    }

    /// The exact signature block bytes. Untrusted.
    pub fn signature_block_bytes(&self) -> &[u8] {
        &self.record[self.header_len..]
    }

    /// The signature entries (key ids are only hints until checked).
    pub fn signatures(&self) -> &[SignatureEntry] {
        &self.signatures
    }

    /// Each signature checked against the keyring, for display.
    pub fn signature_status(&self, keyring: &Keyring) -> Vec<(SignatureEntry, SignatureStatus)> {
        let header = self.header_bytes();
        self.signatures
            .iter()
            .map(|e| {
                let status = match keyring.get(&e.key_id) {
                    None => SignatureStatus::UnknownKey,
                    Some(k) if k.verify(header, &e.signature) => SignatureStatus::Valid,
                    Some(_) => SignatureStatus::Invalid,
                };
                (*e, status)
            })
            .collect()
    }

    /// Check the signatures (at least `threshold` distinct trusted keys, and
    /// no invalid signature by a trusted key), then parse the header.
    pub fn verify(self, keyring: &Keyring, threshold: usize) -> Result<VerifiedImage<R>> {
        let verified_by =
            check_signatures(self.header_bytes(), &self.signatures, keyring, threshold)?;
        let fields = parse_fields(&self.record, self.header_len)?;
        let stream = Stream::new(
            self.inner,
            fields.payloads.clone(),
            self.record.len() as u64,
        );
        Ok(VerifiedImage {
            header: VerifiedHeader {
                record: self.record,
                header_len: self.header_len,
                fields,
                signatures: self.signatures,
                verified_by,
            },
            stream,
        })
    }

    /// Parse the header WITHOUT checking any signature: for `image info`
    /// without a keyring, for `image sign` (which checks the structure and
    /// payload hashes before adding a signature) and for tests. Nothing here
    /// is authentic; the installer accepts only a [`VerifiedHeader`].
    pub fn into_untrusted(self) -> Result<UntrustedImage<R>> {
        let fields = parse_fields(&self.record, self.header_len)?;
        let stream = Stream::new(
            self.inner,
            fields.payloads.clone(),
            self.record.len() as u64,
        );
        Ok(UntrustedImage {
            header: UntrustedHeader {
                record: self.record,
                header_len: self.header_len,
                fields,
                signatures: self.signatures,
            },
            stream,
        })
    }
}

/// What checking one signature against a keyring found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureStatus {
    /// By a trusted key and valid over the header.
    Valid,
    /// By a trusted key but does not verify (tampered header or signature).
    Invalid,
    /// Its key id is not in the keyring.
    UnknownKey,
}

fn check_signatures(
    header: &[u8],
    signatures: &[SignatureEntry],
    keyring: &Keyring,
    threshold: usize,
) -> Result<Vec<KeyId>> {
    if threshold == 0 {
        return Err(Error::ZeroThreshold);
    }
    if keyring.is_empty() {
        return Err(Error::EmptyKeyring);
    }
    if signatures.is_empty() {
        return Err(Error::NoSignatures);
    }
    let mut valid = Vec::new();
    for (index, e) in signatures.iter().enumerate() {
        if let Some(key) = keyring.get(&e.key_id) {
            if !key.verify(header, &e.signature) {
                return Err(Error::BadSignature {
                    index,
                    key_id: e.key_id,
                });
            }
            valid.push(e.key_id);
        }
    }
    if valid.is_empty() {
        let signed_by = signatures
            .iter()
            .map(|e| e.key_id.to_hex())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Error::UntrustedSignatures { signed_by });
    }
    if valid.len() < threshold {
        return Err(Error::ThresholdNotMet {
            valid: valid.len(),
            threshold,
        });
    }
    Ok(valid)
}

/// Parse the header and place each payload at its offset in the image.
fn parse_fields(record: &[u8], header_len: usize) -> Result<HeaderFields> {
    let mut fields = format::parse_header(&record[..header_len])?;
    let mut offset = record.len() as u64;
    for p in &mut fields.payloads {
        p.offset = offset;
        offset = offset
            .checked_add(p.stored_size)
            .ok_or(Error::SizeOverflow)?;
    }
    Ok(fields)
}

macro_rules! header_accessors {
    () => {
        /// The device family the image is for.
        pub fn compatible(&self) -> &str {
            &self.fields.compatible
        }
        /// The release version.
        pub fn version(&self) -> &semver::Version {
            &self.fields.version
        }
        /// The anti-rollback index.
        pub fn rollback_index(&self) -> u64 {
            self.fields.rollback_index
        }
        /// Creation time, seconds since the Unix epoch.
        pub fn created(&self) -> u64 {
            self.fields.created
        }
        /// The header's format version.
        pub fn format_version(&self) -> u16 {
            self.fields.format_version
        }
        /// The payloads in stream order.
        pub fn payloads(&self) -> &[PayloadInfo] {
            &self.fields.payloads
        }
        /// The payload of a role.
        pub fn payload(&self, role: &str) -> Option<&PayloadInfo> {
            self.fields.payloads.iter().find(|p| p.role == role)
        }
        /// Unknown optional fields that were ignored: (tag, byte offset, length).
        pub fn ignored_fields(&self) -> &[(u16, u64, u32)] {
            &self.fields.ignored
        }
        /// The exact header bytes the signatures cover.
        pub fn header_bytes(&self) -> &[u8] {
            &self.record[..self.header_len]
        }
        /// The exact signature block bytes.
        pub fn signature_block_bytes(&self) -> &[u8] {
            &self.record[self.header_len..]
        }
        /// Header followed by signature block, exactly as at the start of the
        /// image: what a slot record stores.
        pub fn record_bytes(&self) -> &[u8] {
            &self.record
        }
        /// All signature entries.
        pub fn signatures(&self) -> &[SignatureEntry] {
            &self.signatures
        }
        /// Where the first payload starts in the image.
        pub fn payloads_offset(&self) -> u64 {
            self.record.len() as u64
        }
        /// Total image length the header declares.
        pub fn image_len(&self) -> u64 {
            self.fields
                .payloads
                .last()
                .map_or(self.record.len() as u64, |p| p.offset + p.stored_size)
        }
    };
}

/// A header whose signatures were checked against a keyring. Only
/// [`ImageReader::verify`] and [`VerifiedHeader::from_record_bytes`] make one.
#[derive(Clone, Debug)]
pub struct VerifiedHeader {
    record: Vec<u8>,
    header_len: usize,
    fields: HeaderFields,
    signatures: Vec<SignatureEntry>,
    verified_by: Vec<KeyId>,
}

impl VerifiedHeader {
    header_accessors!();

    /// The trusted keys whose signatures verified.
    pub fn verified_by(&self) -> &[KeyId] {
        &self.verified_by
    }

    /// Re-verify a stored record (header + signature block, exactly as
    /// [`VerifiedHeader::record_bytes`] returned them; nothing may follow).
    pub fn from_record_bytes(keyring: &Keyring, threshold: usize, bytes: &[u8]) -> Result<Self> {
        let mut cursor = bytes;
        let ImageReader {
            inner,
            record,
            header_len,
            signatures,
        } = ImageReader::new(&mut cursor)?;
        if !inner.is_empty() {
            return Err(Error::TrailingData {
                offset: record.len() as u64,
            });
        }
        let verified_by = check_signatures(&record[..header_len], &signatures, keyring, threshold)?;
        let fields = parse_fields(&record, header_len)?;
        Ok(VerifiedHeader {
            record,
            header_len,
            fields,
            signatures,
            verified_by,
        })
    }
}

/// A header parsed WITHOUT a signature check. Deliberately a different type:
/// nothing that installs accepts it.
#[derive(Clone, Debug)]
pub struct UntrustedHeader {
    record: Vec<u8>,
    header_len: usize,
    fields: HeaderFields,
    signatures: Vec<SignatureEntry>,
}

impl UntrustedHeader {
    header_accessors!();
}

/// A verified image: its header and the stream of payloads that follows.
pub struct VerifiedImage<R> {
    header: VerifiedHeader,
    stream: Stream<R>,
}

/// An unverified image (see [`ImageReader::into_untrusted`]).
pub struct UntrustedImage<R> {
    header: UntrustedHeader,
    stream: Stream<R>,
}

macro_rules! stream_methods {
    () => {
        /// The next payload as a reader of its raw bytes, which hashes as it
        /// streams: its `read` returns an error instead of the end of data
        /// when the raw size or the SHA-256 disagree with the header. `None`
        /// after the last payload.
        pub fn next_payload(&mut self) -> Result<Option<crate::PayloadReader<'_, R>>> {
            self.stream.next_payload(true)
        }

        /// Like [`Self::next_payload`], but without hashing: the reader
        /// checks the stored and raw sizes only, and the caller MUST feed
        /// every byte to a [`crate::PayloadHasher`] and call its `finish`
        /// before trusting the data (for pipelines that hash on another thread).
        pub fn next_payload_unhashed(&mut self) -> Result<Option<crate::PayloadReader<'_, R>>> {
            self.stream.next_payload(false)
        }

        /// Copy the next payload's raw bytes to `out`, checking its size and
        /// SHA-256; reading (and decompressing) runs on the calling thread,
        /// hashing on a second one. Returns the payload's entry, or `None`
        /// after the last one. On an error, `out` may have received bytes
        /// that are not to be trusted.
        pub fn copy_next_payload(
            &mut self,
            out: &mut dyn std::io::Write,
        ) -> Result<Option<PayloadInfo>> {
            let Some(mut p) = self.stream.next_payload(false)? else {
                return Ok(None);
            };
            crate::payload::copy_with_hasher_thread(&mut p, out)?;
            Ok(Some(p.info().clone()))
        }

        /// Read past the next payload without decoding or checking it.
        pub fn skip_payload(&mut self) -> Result<Option<PayloadInfo>> {
            self.stream.skip_payload()
        }

        /// After the last payload: check that every payload was read to its
        /// end (or skipped) and that no byte follows.
        pub fn finish(self) -> Result<()> {
            self.stream.finish()
        }

        /// The underlying stream, positioned after whatever was consumed.
        pub fn into_inner(self) -> R {
            self.stream.into_inner()
        }
    };
}

impl<R: Read> VerifiedImage<R> {
    /// The verified header.
    pub fn header(&self) -> &VerifiedHeader {
        &self.header
    }

    /// The verified header, dropping the stream.
    pub fn into_header(self) -> VerifiedHeader {
        self.header
    }

    stream_methods!();
}

impl<R: Read> UntrustedImage<R> {
    /// The unverified header.
    pub fn header(&self) -> &UntrustedHeader {
        &self.header
    }

    stream_methods!();
}
