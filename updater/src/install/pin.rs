//! Binding an install to one image named elsewhere: the update feed's
//! release ([`ImagePin`]), so that `slotctl update` downloads the image once
//! and installs exactly the bytes the feed signed (docs/feed.md).
//!
//! The pin is checked twice, both times before anything makes the slot
//! bootable:
//! - before any write, the verified header: its version and rollback index
//!   equal the release's, the SHA-256 of its signed header bytes followed by
//!   its signature block (what the slot record keeps,
//!   [`image_format::VerifiedHeader::record_bytes`]) equals the release's
//!   `header_sha256`, and the image length it declares equals the release's
//!   `size`. The header carries each payload's size and SHA-256, so from
//!   here on every payload byte that reaches a partition is bound to the feed;
//! - after the payloads were written and the source read to its end, before
//!   the slot record and the activation: every byte read from the source
//!   went through a [`Tee`], which counted and hashed it (and never passed
//!   more than `size` bytes), and the count and the whole image's SHA-256
//!   must equal the release's.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::exit::refused;
use crate::feed::doc::Release;
use crate::feed::sign::{hex, unhex};

/// What the feed says the image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePin {
    /// The image file's exact size in bytes.
    pub size: u64,
    /// SHA-256 of the whole image file.
    pub sha256: [u8; 32],
    /// SHA-256 of the image's header and signature block (its first bytes,
    /// as a slot record stores them).
    pub header_sha256: [u8; 32],
    /// The release's version and rollback index (the header must say the same).
    pub version: String,
    pub rollback_index: u64,
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    unhex(s)?.try_into().ok()
}

impl ImagePin {
    /// The pin of a feed release (validated: its hashes are 64 hex digits).
    pub fn from_release(rel: &Release) -> anyhow::Result<ImagePin> {
        let bad = |f: &str| refused(format!("release {}: {f} is not 64 hex digits", rel.version));
        Ok(ImagePin {
            size: rel.size,
            sha256: unhex32(&rel.sha256).ok_or_else(|| bad("sha256"))?,
            header_sha256: unhex32(&rel.header_sha256).ok_or_else(|| bad("header_sha256"))?,
            version: rel.version.clone(),
            rollback_index: rel.rollback_index,
        })
    }

    /// Before any write: the verified header must be the pinned image's.
    pub fn check_header(
        &self,
        header: &image_format::VerifiedHeader,
        name: &str,
    ) -> anyhow::Result<()> {
        let differs = |what: String| {
            refused(format!(
                "image {name} {what}, not what the feed's release {} says: refusing it",
                self.version
            ))
        };
        if header.version().to_string() != self.version {
            return Err(differs(format!("carries version {}", header.version())));
        }
        if header.rollback_index() != self.rollback_index {
            return Err(differs(format!(
                "carries rollback index {}",
                header.rollback_index()
            )));
        }
        let got = Sha256::digest(header.record_bytes());
        if got[..] != self.header_sha256 {
            return Err(refused(format!(
                "image {name} has a signed header with SHA-256 {}, the feed says {}: it is not the image the feed names, refusing it",
                hex(&got),
                hex(&self.header_sha256)
            )));
        }
        if header.image_len() != self.size {
            return Err(refused(format!(
                "image {name}: its header declares {} bytes, the feed says {}: refusing it",
                header.image_len(),
                self.size
            )));
        }
        Ok(())
    }
}

/// A reader that counts what passes and, with a pin, hashes it and never
/// passes more than the pin's size: one byte more is an error (and the flag
/// of [`Tee::exceeded_flag`] says so).
pub struct Tee<R> {
    inner: R,
    count: u64,
    hasher: Option<Sha256>,
    max: u64,
    exceeded: Arc<AtomicBool>,
}

impl<R: Read> Tee<R> {
    pub fn new(inner: R, pin: Option<&ImagePin>) -> Tee<R> {
        Tee {
            inner,
            count: 0,
            hasher: pin.map(|_| Sha256::new()),
            max: pin.map_or(u64::MAX, |p| p.size),
            exceeded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Count and hash everything, unbounded (`feed add`).
    pub fn hashing(inner: R) -> Tee<R> {
        Tee {
            hasher: Some(Sha256::new()),
            ..Tee::new(inner, None)
        }
    }

    /// A flag that stays readable after the tee was moved into a reader.
    pub fn exceeded_flag(&self) -> Arc<AtomicBool> {
        self.exceeded.clone()
    }

    /// The wrapped reader back (e.g. to switch an HTTP source to ranges
    /// after the header was read through the tee).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The bytes read, and their SHA-256 when hashed.
    pub fn finish(self) -> (u64, Option<[u8; 32]>) {
        (self.count, self.hasher.map(|h| h.finalize().into()))
    }

    /// After the source reached its end: the bytes read must be the pinned
    /// image, by count and SHA-256.
    pub fn check_whole(self, pin: &ImagePin, name: &str) -> anyhow::Result<()> {
        let (count, got) = self.finish();
        if count != pin.size {
            return Err(refused(format!(
                "image {name} is {count} bytes, the feed says {}: refusing it",
                pin.size
            )));
        }
        match got {
            Some(got) if got == pin.sha256 => Ok(()),
            got => Err(refused(format!(
                "image {name} has SHA-256 {}, the feed says {}: refusing it",
                got.map_or_else(|| "(not hashed)".into(), |g| hex(&g)),
                hex(&pin.sha256)
            ))),
        }
    }
}

/// The refusal for a source longer than the pin, when `exceeded` is set.
pub fn exceeded_refusal(
    exceeded: &AtomicBool,
    pin: Option<&ImagePin>,
    name: &str,
) -> Option<anyhow::Error> {
    let pin = pin.filter(|_| exceeded.load(Ordering::SeqCst))?;
    Some(refused(format!(
        "image {name} is longer than the {} bytes the feed says: refusing it",
        pin.size
    )))
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.max - self.count;
        if left == 0 {
            // At the pinned size: the source must end here.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.store(true, Ordering::SeqCst);
                    Err(io::Error::other(format!(
                        "the image is longer than the {} bytes the feed says",
                        self.max
                    )))
                }
            };
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.count += n as u64;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(data: &[u8]) -> ImagePin {
        ImagePin {
            size: data.len() as u64,
            sha256: Sha256::digest(data).into(),
            header_sha256: [0; 32],
            version: "1.0.0".into(),
            rollback_index: 1,
        }
    }

    #[test]
    fn tee_passes_the_pinned_bytes_and_checks_them() {
        let data = b"0123456789".to_vec();
        let p = pin(&data);
        let mut t = Tee::new(&data[..], Some(&p));
        let mut out = Vec::new();
        t.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        t.check_whole(&p, "x").unwrap();
    }

    #[test]
    fn tee_refuses_one_byte_more_and_other_bytes() {
        let data = b"0123456789".to_vec();
        let p = pin(&data[..9]);
        let mut t = Tee::new(&data[..], Some(&p));
        let flag = t.exceeded_flag();
        let mut out = Vec::new();
        let e = t.read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("longer than the 9 bytes"), "{e}");
        assert_eq!(out, &data[..9], "never passes more than the pin's size");
        assert!(exceeded_refusal(&flag, Some(&p), "x").is_some());

        let mut other = data.clone();
        other[3] ^= 1;
        let p = pin(&data);
        let mut t = Tee::new(&other[..], Some(&p));
        std::io::copy(&mut t, &mut std::io::sink()).unwrap();
        let e = t.check_whole(&p, "x").unwrap_err().to_string();
        assert!(e.contains("SHA-256"), "{e}");

        let mut t = Tee::new(&data[..5], Some(&p));
        std::io::copy(&mut t, &mut std::io::sink()).unwrap();
        let e = t.check_whole(&p, "x").unwrap_err().to_string();
        assert!(e.contains("is 5 bytes, the feed says 10"), "{e}");
        assert!(!t_flag_set(&data, &p));
    }

    fn t_flag_set(data: &[u8], p: &ImagePin) -> bool {
        let mut t = Tee::new(data, Some(p));
        let flag = t.exceeded_flag();
        std::io::copy(&mut t, &mut std::io::sink()).unwrap();
        flag.load(Ordering::SeqCst)
    }

    #[test]
    fn tee_without_a_pin_passes_everything() {
        let data = vec![7u8; 100_000];
        let mut t = Tee::new(&data[..], None);
        let mut out = Vec::new();
        t.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }
}
