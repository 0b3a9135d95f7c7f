//! The framed decode: frames decoded on two threads come out in order,
//! anything else falls back to the streaming decoder, errors name the
//! payload and stop every thread.

use super::super::tests::{data, job, Mem};
use super::*;
use crate::install::dev::BlockDevice;
use crate::install::pipeline::{write_payloads, Timing};
use crate::progress::{Mode, Progress};
use boot_flags::AlignedBuf;
use std::io::Read;

/// `raw` as `slotctl image pack` writes it: one frame per `CHUNK`.
fn framed(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in raw.chunks(CHUNK) {
        out.extend(zstd::bulk::compress(piece, 3).unwrap());
    }
    if raw.is_empty() {
        out.extend(zstd::bulk::compress(&[], 3).unwrap());
    }
    out
}

/// Distinct bytes in every MiB, so that a frame out of order shows.
fn numbered(n: usize) -> Vec<u8> {
    let mut v = data(n, 9);
    for (i, piece) in v.chunks_mut(CHUNK).enumerate() {
        let k = 8.min(piece.len());
        piece[..k].copy_from_slice(&(i as u64).to_le_bytes()[..k]);
    }
    v
}

fn install(
    stored: &[u8],
    jobs: &[Job],
    dev_len: usize,
) -> (Result<(), PipelineError>, Mem, Timing) {
    let mut dev = Mem(vec![0u8; dev_len]);
    let mut t = Timing::default();
    let p = Progress::with_mode(Mode::Quiet);
    let r = write_payloads(&mut &stored[..], jobs, &mut dev, &p, &mut t);
    (r, dev, t)
}

/// `read_frame` on `stored`, `left` bytes of it in the payload: what it
/// said and how many bytes it took.
fn walk(stored: &[u8], left: usize) -> (Walked, usize) {
    let mut buf = AlignedBuf::new(max_frame_stored());
    let mut src = stored;
    let w = read_frame(&mut src, &mut buf, left as u64).unwrap();
    assert_eq!(stored.len() - src.len(), buf.len(), "read = kept");
    (w, buf.len())
}

#[test]
fn the_reader_reads_whole_frames_and_stops_at_anything_else() {
    let z = framed(&numbered(3 * CHUNK + 5));
    let mut at = 0;
    for _ in 0..4 {
        let n = zstd_safe::find_frame_compressed_size(&z[at..]).unwrap();
        assert_eq!(walk(&z[at..], z.len() - at), (Walked::Frame, n));
        at += n;
    }
    assert_eq!(at, z.len());
    // With a content checksum, and of zeros (RLE blocks), and empty.
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.set_parameter(zstd_safe::CParameter::ChecksumFlag(true))
        .unwrap();
    for raw in [data(CHUNK, 3), vec![0; CHUNK], vec![]] {
        let one = c.compress(&raw).unwrap();
        assert_eq!(walk(&one, one.len()), (Walked::Frame, one.len()));
    }
    let one = zstd::bulk::compress(&data(CHUNK, 1), 3).unwrap();
    // The source ends early; the payload ends early (the rest is not read).
    assert_eq!(walk(&one[..one.len() - 1], one.len()).0, Walked::Ended);
    let (w, n) = walk(&one, one.len() - 1);
    assert!(w == Walked::Other && n < one.len() - 1, "{w:?} {n}");
    assert_eq!(walk(&one, 3), (Walked::Other, 0));
    // More than CHUNK in one frame, and a frame of unknown size (what the
    // streaming encoder of older slotctl wrote): left after their headers.
    let big = zstd::bulk::compress(&data(CHUNK + 1, 1), 3).unwrap();
    let (w, n) = walk(&big, big.len());
    assert!(w == Walked::Other && n < 20, "{w:?} {n}");
    let unknown = zstd::encode_all(&data(1000, 1)[..], 3).unwrap();
    assert!(matches!(
        zstd_safe::get_frame_content_size(&unknown),
        Ok(None)
    ));
    assert_eq!(walk(&unknown, unknown.len()).0, Walked::Other);
    // A skippable frame; not zstd at all; a reserved block type.
    let skip = [0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
    assert_eq!(walk(&skip, skip.len()), (Walked::Other, 5));
    assert_eq!(walk(&[7u8; 64], 64), (Walked::Other, 5));
    let fhd = usize::from(one[4]);
    let single = (fhd >> 5) & 1;
    let header = 5 + (1 - single) + [0, 1, 2, 4][fhd & 3] + [single, 2, 4, 8][fhd >> 6];
    let mut reserved = one.clone();
    reserved[header] |= 0b110;
    assert_eq!(walk(&reserved, one.len()).0, Walked::Other);
}

#[test]
fn frames_come_out_in_order_with_a_plain_payload_after() {
    let raw = numbered(7 * CHUNK + 4321);
    let z = framed(&raw);
    let plain = data(CHUNK + 3, 5);
    let mut stored = z.clone();
    stored.extend_from_slice(&plain);
    let jobs = [
        job("ROOT", Compression::Zstd, &raw, z.len(), 0, 0),
        job(
            "BOOT",
            Compression::None,
            &plain,
            plain.len(),
            8 * CHUNK as u64,
            0,
        ),
    ];
    let (r, dev, t) = install(&stored, &jobs, 10 * CHUNK);
    r.unwrap();
    assert_eq!(&dev.0[..raw.len()], &raw[..]);
    assert_eq!(&dev.0[8 * CHUNK..8 * CHUNK + plain.len()], &plain[..]);
    assert!(t.decode > Duration::ZERO, "{t:?}");
}

#[test]
fn small_and_empty_payloads() {
    for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1] {
        let raw = numbered(n);
        let z = framed(&raw);
        let (r, dev, _) = install(
            &z,
            &[job("ROOT", Compression::Zstd, &raw, z.len(), 0, 0)],
            3 * CHUNK,
        );
        r.unwrap_or_else(|e| panic!("{n} bytes: {e}"));
        assert_eq!(&dev.0[..n], &raw[..], "{n} bytes");
    }
}

/// Frames, then a frame the workers cannot take (unknown size, more than a
/// MiB), then frames again: the rest after the first such frame is
/// streamed, in its place.
#[test]
fn a_frame_of_unknown_size_streams_the_rest() {
    let raw = numbered(9 * CHUNK + 17);
    let mut z = framed(&raw[..3 * CHUNK]);
    z.extend(zstd::encode_all(&raw[3 * CHUNK..6 * CHUNK + 5], 3).unwrap());
    z.extend(framed(&raw[6 * CHUNK + 5..]));
    let (r, dev, _) = install(
        &z,
        &[job("ROOT", Compression::Zstd, &raw, z.len(), 0, 0)],
        10 * CHUNK,
    );
    r.unwrap();
    assert_eq!(&dev.0[..raw.len()], &raw[..]);
    // An old image: one frame of unknown size.
    let old = zstd::encode_all(&raw[..], 3).unwrap();
    let (r, dev, _) = install(
        &old,
        &[job("ROOT", Compression::Zstd, &raw, old.len(), 0, 0)],
        10 * CHUNK,
    );
    r.unwrap();
    assert_eq!(&dev.0[..raw.len()], &raw[..]);
}

/// A skippable frame between data frames decodes to nothing.
#[test]
fn skippable_frames_are_skipped() {
    let raw = numbered(3 * CHUNK);
    let mut z = framed(&raw[..CHUNK]);
    z.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]);
    z.extend(framed(&raw[CHUNK..]));
    let (r, dev, _) = install(
        &z,
        &[job("ROOT", Compression::Zstd, &raw, z.len(), 0, 0)],
        4 * CHUNK,
    );
    r.unwrap();
    assert_eq!(&dev.0[..raw.len()], &raw[..]);
}

#[test]
fn bad_frames_are_refused_naming_the_payload() {
    let raw = numbered(4 * CHUNK);
    let z = framed(&raw);
    let first = zstd_safe::find_frame_compressed_size(&z).unwrap();
    let second = zstd_safe::find_frame_compressed_size(&z[first..]).unwrap();
    let refused = |stored: &[u8], raw: &[u8]| {
        let j = job("ROOT", Compression::Zstd, raw, stored.len(), 0, 0);
        let (r, _, _) = install(stored, &[j], 6 * CHUNK);
        let e = r.unwrap_err();
        assert!(e.is_refusal(), "{e}");
        assert!(e.to_string().contains("ROOT"), "{e}");
        e
    };
    // The last frame cut short: the streaming decoder finds it truncated.
    let e = refused(&z[..z.len() - 10], &raw);
    assert!(matches!(e, PipelineError::Decode { .. }), "{e}");
    // A frame's block header broken: the worker's one-shot decode fails.
    let mut broken = z.clone();
    broken[first + 6] ^= 0xff;
    broken[first + 7] ^= 0xff;
    broken[first + 8] ^= 0xff;
    refused(&broken, &raw);
    // Garbage after the frames.
    let mut trailing = z.clone();
    trailing.extend_from_slice(b"not zstd at all");
    let e = refused(&trailing, &raw);
    assert!(matches!(e, PipelineError::Decode { .. }), "{e}");
    // More frames than the declared raw size: refused before writing past it.
    let e = refused(&z[..first + second], &raw[..CHUNK]);
    assert!(matches!(e, PipelineError::TooLong { .. }), "{e}");
    // Fewer.
    let e = refused(&z[..first], &raw);
    assert!(matches!(e, PipelineError::TooShort { .. }), "{e}");
}

/// A device that fails its third write: every stage stops, nothing hangs,
/// the write error is what comes back.
#[test]
fn a_write_error_stops_every_thread() {
    struct Failing(Mem, usize);
    impl BlockDevice for Failing {
        fn len(&mut self) -> io::Result<u64> {
            self.0.len()
        }
        fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.read_exact_at(off, buf)
        }
        fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
            self.1 += 1;
            if self.1 == 3 {
                return Err(io::Error::other("medium error"));
            }
            self.0.write_all_at(off, buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let raw = numbered(20 * CHUNK);
    let z = framed(&raw);
    let mut dev = Failing(Mem(vec![0u8; 21 * CHUNK]), 0);
    let p = Progress::with_mode(Mode::Quiet);
    let j = job("ROOT", Compression::Zstd, &raw, z.len(), 0, 0);
    let e = write_payloads(&mut &z[..], &[j], &mut dev, &p, &mut Timing::default()).unwrap_err();
    assert!(
        matches!(e, PipelineError::Write { offset, .. } if offset == 2 * CHUNK as u64),
        "{e}"
    );
}

/// A source that fails mid-payload: the source error comes back.
#[test]
fn a_source_error_stops_every_thread() {
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("network down"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let raw = numbered(6 * CHUNK);
    let z = framed(&raw);
    let j = job("ROOT", Compression::Zstd, &raw, z.len(), 0, 0);
    let mut dev = Mem(vec![0u8; 7 * CHUNK]);
    let p = Progress::with_mode(Mode::Quiet);
    let mut src = Failing(&z[..z.len() / 2]);
    let e = write_payloads(&mut src, &[j], &mut dev, &p, &mut Timing::default()).unwrap_err();
    assert!(matches!(e, PipelineError::Source { .. }), "{e}");
    assert!(e.to_string().contains("network down"), "{e}");
}

/// The framed path checks the payload's hash before the writer hears the
/// payload is whole: the raw bytes' (no `stored_sha256`, hashed by the
/// in-order thread) or the reader's hash of the stored bytes.
#[test]
fn a_wrong_hash_is_refused_while_writing() {
    use sha2::{Digest, Sha256};
    let raw = numbered(3 * CHUNK + 5);
    let z = framed(&raw);
    let mut j = job("ROOT", Compression::Zstd, &raw, z.len(), 0, 0);
    let while_writing = |r: Result<(), PipelineError>| {
        matches!(
            r,
            Err(PipelineError::HashMismatch {
                phase: "while writing",
                ..
            })
        )
    };
    j.sha256[0] ^= 1;
    assert!(while_writing(install(&z, &[j.clone()], 4 * CHUNK).0));
    // With a stored hash, the raw one is the read-back's: a right stored
    // hash passes, a wrong one is refused.
    j.stored_sha256 = Some(Sha256::digest(&z).into());
    install(&z, &[j.clone()], 4 * CHUNK).0.unwrap();
    j.stored_sha256.as_mut().unwrap()[0] ^= 1;
    assert!(while_writing(install(&z, &[j], 4 * CHUNK).0));
    // Frames, then a frame the workers cannot take and frames again: the
    // dispatcher's hash goes on through the streamed rest, every stored
    // byte once and in order, or the right hash would not pass.
    let mut mixed = framed(&raw[..CHUNK]);
    mixed.extend(zstd::encode_all(&raw[CHUNK..2 * CHUNK + 3], 3).unwrap());
    mixed.extend(framed(&raw[2 * CHUNK + 3..]));
    let mut j = job("ROOT", Compression::Zstd, &raw, mixed.len(), 0, 0);
    j.stored_sha256 = Some(Sha256::digest(&mixed).into());
    let (r, dev, _) = install(&mixed, &[j.clone()], 4 * CHUNK);
    r.unwrap();
    assert_eq!(&dev.0[..raw.len()], &raw[..]);
    j.stored_sha256.as_mut().unwrap()[31] ^= 1;
    assert!(while_writing(install(&mixed, &[j], 4 * CHUNK).0));
}
