//! The framed zstd encoder: frame layout, round trips through `pack` and the
//! verifying reader, determinism across worker counts, errors.

use std::io::{Cursor, Read, Write};

use zstd::zstd_safe;

use super::FramedEncoder;
use crate::tests::{key, noise, ring, verify_all};
use crate::*;

const MIB: usize = 1 << 20;

/// The sizes around the frame boundary, and several frames.
const SIZES: [usize; 6] = [0, 1, MIB - 1, MIB, MIB + 1, 5 * MIB + 123];

/// `len` bytes: pseudo-random with runs of zeros and a repeated text, so
/// that frames are neither all incompressible nor trivial.
fn data(len: usize) -> Vec<u8> {
    let mut d = noise(len, 11);
    let text = b"slotctl frame test ";
    for (i, b) in d.iter_mut().enumerate() {
        match (i / 4096) % 4 {
            0 => *b = 0,
            1 => *b = text[i % text.len()],
            _ => {}
        }
    }
    d
}

/// Compress `raw` with the framed encoder, writing in pieces of `piece`.
fn encode(raw: &[u8], level: i32, workers: u32, piece: usize) -> Vec<u8> {
    let mut enc = FramedEncoder::new(Vec::new(), level, workers).unwrap();
    for c in raw.chunks(piece) {
        enc.write_all(c).unwrap();
    }
    enc.finish().unwrap()
}

/// Walk the frames with `find_frame_compressed_size`: (compressed length,
/// content size) of each.
fn frames(stored: &[u8]) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    let mut rest = stored;
    while !rest.is_empty() {
        let len = zstd_safe::find_frame_compressed_size(rest).unwrap();
        let content = zstd_safe::get_frame_content_size(&rest[..len])
            .unwrap()
            .expect("the frame header records its content size");
        // No checksum: the frame descriptor's bit 2 is clear.
        assert_eq!(rest[4] & 0b100, 0, "frame has a checksum");
        out.push((len, content));
        rest = &rest[len..];
    }
    out
}

/// Each frame holds exactly ZSTD_FRAME_RAW raw bytes but the last, which
/// holds the rest (one empty frame for an empty payload), and records it.
fn assert_layout(stored: &[u8], raw_len: usize) {
    let f = frames(stored);
    let want = raw_len.div_ceil(ZSTD_FRAME_RAW).max(1);
    assert_eq!(f.len(), want, "frames for {raw_len} raw bytes");
    for (i, &(_, content)) in f.iter().enumerate() {
        let expect = (raw_len - i * ZSTD_FRAME_RAW).min(ZSTD_FRAME_RAW);
        assert_eq!(content, expect as u64, "frame {i} of {raw_len} raw bytes");
        assert!(content <= ZSTD_FRAME_RAW as u64);
    }
    assert_eq!(
        f.iter().map(|&(len, _)| len).sum::<usize>(),
        stored.len(),
        "nothing after the last frame"
    );
}

#[test]
fn frame_raw_is_one_mib() {
    assert_eq!(ZSTD_FRAME_RAW, 1 << 20);
}

#[test]
fn frames_hold_one_mib_each_and_record_their_size() {
    for len in SIZES {
        let raw = data(len);
        let stored = encode(&raw, 3, 2, 300_000);
        assert_layout(&stored, len);
        // Each frame decodes alone into one ZSTD_FRAME_RAW buffer, as the
        // installer will decode them.
        let mut rest = &stored[..];
        let mut at = 0;
        let mut dec = zstd::bulk::Decompressor::new().unwrap();
        let mut buf = vec![0u8; ZSTD_FRAME_RAW];
        while !rest.is_empty() {
            let n = zstd_safe::find_frame_compressed_size(rest).unwrap();
            let got = dec.decompress_to_buffer(&rest[..n], &mut buf[..]).unwrap();
            assert_eq!(&buf[..got], &raw[at..at + got]);
            at += got;
            rest = &rest[n..];
        }
        assert_eq!(at, len);
        // And the concatenation is one zstd stream for a streaming decoder.
        assert_eq!(zstd::stream::decode_all(&stored[..]).unwrap(), raw);
    }
}

#[test]
fn empty_input_is_one_empty_frame() {
    let stored = encode(&[], 3, 0, 1);
    assert_eq!(frames(&stored), vec![(stored.len(), 0)]);
    assert!(zstd::stream::decode_all(&stored[..]).unwrap().is_empty());
    let mut raw = Vec::new();
    decompressor(Compression::Zstd, &stored[..])
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    assert!(raw.is_empty());
}

/// The same bytes whatever the worker count and however the input is cut
/// into writes.
#[test]
fn output_is_the_same_for_any_worker_count() {
    let raw = data(5 * MIB + 123);
    let one = encode(&raw, 3, 1, MIB);
    assert_eq!(encode(&raw, 3, 3, 4096 + 7), one);
    assert_eq!(encode(&raw, 3, 0, 3 * MIB), one);
    assert_eq!(encode(&raw, 3, 2, 1), one);
    assert_layout(&one, raw.len());
}

#[test]
fn every_level_round_trips() {
    let raw = data(MIB + 4000);
    for level in 1..=MAX_ZSTD_LEVEL {
        let stored = encode(&raw, level, 2, 100_000);
        assert_layout(&stored, raw.len());
        let mut out = Vec::new();
        decompressor(Compression::Zstd, &stored[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, raw, "level {level}");
    }
}

/// An image packed with `workers`: its bytes and the payload's entry.
fn pack_one(raw: &[u8], workers: u32) -> (Vec<u8>, PayloadInfo) {
    let mut spec = PackSpec::new("acme-gw", semver::Version::new(1, 0, 0), 1, 1);
    spec.zstd.workers = workers;
    let part = PackPart {
        role: "ROOT".into(),
        compression: Compression::Zstd,
        source: Box::new(raw),
        size_hint: Some(raw.len() as u64),
        verity: None,
    };
    let mut out = Cursor::new(Vec::new());
    let infos = pack(&mut out, &spec, vec![part], &[&key(1)]).unwrap();
    (out.into_inner(), infos[0].clone())
}

/// `pack` writes zstd payloads as 1 MiB frames, which the verifying reader
/// reads back, for every size around the frame boundary; the image is the
/// same with 1 and 3 workers.
#[test]
fn pack_writes_frames_that_verify() {
    for len in SIZES {
        for raw in [data(len), vec![0u8; len]] {
            let (img, p) = pack_one(&raw, 3);
            assert_eq!(p.raw_size, len as u64);
            let stored = &img[p.offset as usize..(p.offset + p.stored_size) as usize];
            assert_layout(stored, len);
            assert_eq!(
                verify_all(&img, &ring(&[&key(1)])).unwrap(),
                vec![raw.clone()]
            );
            let (img1, _) = pack_one(&raw, 1);
            assert_eq!(img1, img, "1 and 3 workers, {len} bytes");
        }
    }
}

/// A writer that fails after `left` bytes.
struct Failing {
    left: usize,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A failing output is reported, from `write` or `finish`, and the workers
/// stop (the test would hang otherwise).
#[test]
fn output_errors_are_reported() {
    let raw = data(6 * MIB);
    for workers in [0, 3] {
        let mut enc = FramedEncoder::new(Failing { left: 1000 }, 3, workers).unwrap();
        let r = raw
            .chunks(MIB / 2)
            .try_for_each(|c| enc.write_all(c))
            .and_then(|()| enc.finish().map(drop));
        assert_eq!(r.unwrap_err().to_string(), "disk full", "workers {workers}");
    }
}

/// The layout walk above does see a checksum where a frame has one.
#[test]
#[should_panic(expected = "frame has a checksum")]
fn the_walk_sees_a_checksum() {
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.set_parameter(zstd_safe::CParameter::ChecksumFlag(true))
        .unwrap();
    frames(&c.compress(b"abc").unwrap());
}
