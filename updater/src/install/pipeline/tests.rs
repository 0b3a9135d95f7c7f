//! Pipeline tests on an in-memory device.

use super::*;
use crate::progress::Mode;

pub(super) struct Mem(pub(super) Vec<u8>);
impl BlockDevice for Mem {
    fn len(&mut self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let o = off as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        let o = off as usize;
        self.0[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) fn data(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|i| {
            if i % 3 == 0 {
                0
            } else {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }
        })
        .collect()
}

pub(super) fn job(
    role: &str,
    c: Compression,
    raw: &[u8],
    stored: usize,
    off: u64,
    skip: u64,
) -> Job {
    Job {
        chunked: None,
        role: role.into(),
        compression: c,
        stored_size: stored as u64,
        raw_size: raw.len() as u64,
        sha256: Sha256::digest(raw).into(),
        stored_sha256: None,
        dest_offset: off,
        skip_before: skip,
        check: Check::Stream,
    }
}

#[test]
fn writes_zstd_and_plain_and_reads_back() {
    let a = data(3 * CHUNK + 123, 1);
    let b = data(CHUNK / 2, 2);
    let bz = zstd::encode_all(&b[..], 3).unwrap();
    let mut stream = a.clone();
    stream.extend_from_slice(&[0u8; 7]);
    stream.extend_from_slice(&bz);
    let jobs = vec![
        job("ROOT", Compression::None, &a, a.len(), 4096, 0),
        job("BOOT", Compression::Zstd, &b, bz.len(), 8 * CHUNK as u64, 7),
    ];
    let mut dev = Mem(vec![0u8; 10 * CHUNK]);
    let p = Progress::with_mode(Mode::Quiet);
    let mut src: &[u8] = &stream;
    write_payloads(&mut src, &jobs, &mut dev, &p, &mut Timing::default()).unwrap();
    assert_eq!(&dev.0[4096..4096 + a.len()], &a[..]);
    assert_eq!(&dev.0[8 * CHUNK..8 * CHUNK + b.len()], &b[..]);
    readback(&jobs, &mut dev, &p, &mut Timing::default()).unwrap();
    dev.0[5000] ^= 1;
    let e = readback(&jobs, &mut dev, &p, &mut Timing::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("ROOT: SHA-256 mismatch on read-back"),
        "{e}"
    );
}

#[test]
fn refuses_bad_hash_short_and_long() {
    let a = data(CHUNK + 5, 3);
    let mut j = job("ROOT", Compression::None, &a, a.len(), 0, 0);
    let p = Progress::with_mode(Mode::Quiet);
    let mut dev = Mem(vec![0u8; 4 * CHUNK]);
    let mut bad = a.clone();
    bad[10] ^= 1;
    let e = write_payloads(
        &mut &bad[..],
        &[j.clone()],
        &mut dev,
        &p,
        &mut Timing::default(),
    )
    .unwrap_err();
    assert!(matches!(e, PipelineError::HashMismatch { .. }), "{e}");
    let e = write_payloads(
        &mut &a[..100],
        &[j.clone()],
        &mut dev,
        &p,
        &mut Timing::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, PipelineError::Truncated { ref role, missing } if role == "ROOT" && missing == a.len() as u64 - 100),
        "{e}"
    );
    assert!(e.is_refusal());
    // zstd stream that decompresses to more than raw_size
    let big = data(2 * CHUNK, 4);
    let z = zstd::encode_all(&big[..], 1).unwrap();
    j.compression = Compression::Zstd;
    j.stored_size = z.len() as u64;
    let e = write_payloads(
        &mut &z[..],
        &[j.clone()],
        &mut dev,
        &p,
        &mut Timing::default(),
    )
    .unwrap_err();
    assert!(matches!(e, PipelineError::TooLong { .. }), "{e}");
    // garbage instead of zstd
    j.stored_size = a.len() as u64;
    let e = write_payloads(&mut &a[..], &[j], &mut dev, &p, &mut Timing::default()).unwrap_err();
    assert!(matches!(e, PipelineError::Decode { .. }), "{e}");
}

/// A zstd payload with a signed `stored_sha256`: the stream checks the
/// stored bytes' hash (a wrong one is refused before the writer hears the
/// payload is whole) and does not hash the raw bytes, which the read-back
/// checks on the disk.
#[test]
fn stored_sha256_checks_the_stream_and_the_read_back_the_raw_bytes() {
    let b = data(2 * CHUNK + 77, 4);
    let bz = zstd::encode_all(&b[..], 3).unwrap();
    let p = Progress::with_mode(Mode::Quiet);
    let mut j = job("ROOT", Compression::Zstd, &b, bz.len(), 0, 0);
    j.stored_sha256 = Some(Sha256::digest(&bz).into());
    let mut dev = Mem(vec![0u8; 4 * CHUNK]);
    let mut t = Timing::default();
    write_payloads(&mut &bz[..], &[j.clone()], &mut dev, &p, &mut t).unwrap();
    assert_eq!(&dev.0[..b.len()], &b[..]);
    readback(&[j.clone()], &mut dev, &p, &mut t).unwrap();

    // A wrong stored hash: refused while writing.
    let mut wrong = j.clone();
    wrong.stored_sha256.as_mut().unwrap()[0] ^= 1;
    let e = write_payloads(&mut &bz[..], &[wrong], &mut dev, &p, &mut t).unwrap_err();
    assert!(
        matches!(
            e,
            PipelineError::HashMismatch {
                phase: "while writing",
                ..
            }
        ),
        "{e}"
    );

    // The raw hash is the read-back's: with a right stored hash and a wrong
    // raw one, the stream passes and the read-back refuses.
    let mut raw_wrong = j;
    raw_wrong.sha256[0] ^= 1;
    write_payloads(&mut &bz[..], &[raw_wrong.clone()], &mut dev, &p, &mut t).unwrap();
    let e = readback(&[raw_wrong], &mut dev, &p, &mut t).unwrap_err();
    assert!(e.to_string().contains("mismatch on read-back"), "{e}");
}

/// `Check::ReadBack`: the stream hashes nothing and refuses nothing on a
/// hash (a wrong signed stored hash and a tampered plain payload both pass
/// it), and the read-back refuses every payload whose bytes on the disk
/// are not the signed ones.
#[test]
fn check_read_back_leaves_the_hashes_to_the_read_back() {
    let p = Progress::with_mode(Mode::Quiet);
    let a = data(CHUNK + 300, 5);
    let b = data(2 * CHUNK + 77, 6);
    let bz = zstd::encode_all(&b[..], 3).unwrap();
    let mut plain = job("BOOT", Compression::None, &a, a.len(), 0, 0);
    let mut z = job("ROOT", Compression::Zstd, &b, bz.len(), 4 * CHUNK as u64, 0);
    z.stored_sha256 = Some(Sha256::digest(&bz).into());
    plain.check = Check::ReadBack;
    z.check = Check::ReadBack;
    let stream = [&a[..], &bz[..]].concat();
    let mut dev = Mem(vec![0u8; 8 * CHUNK]);
    let mut t = Timing::default();
    let jobs = [plain.clone(), z.clone()];
    write_payloads(&mut &stream[..], &jobs, &mut dev, &p, &mut t).unwrap();
    readback(&jobs, &mut dev, &p, &mut t).unwrap();

    // A wrong signed stored hash is not looked at: the raw bytes are right.
    let mut z_wrong = z.clone();
    z_wrong.stored_sha256.as_mut().unwrap()[0] ^= 1;
    let jobs = [plain.clone(), z_wrong];
    write_payloads(&mut &stream[..], &jobs, &mut dev, &p, &mut t).unwrap();
    readback(&jobs, &mut dev, &p, &mut t).unwrap();
    // With `Check::Stream` the same job is refused while writing.
    let mut z_stream = jobs[1].clone();
    z_stream.check = Check::Stream;
    let e = write_payloads(&mut &bz[..], &[z_stream], &mut dev, &p, &mut t).unwrap_err();
    assert!(
        e.to_string()
            .contains("ROOT: SHA-256 mismatch while writing"),
        "{e}"
    );

    // A tampered plain payload is written whole, then refused on read-back.
    let mut bad = stream.clone();
    bad[CHUNK + 7] ^= 0x20;
    let jobs = [plain, z];
    write_payloads(&mut &bad[..], &jobs, &mut dev, &p, &mut t).unwrap();
    assert_eq!(
        dev.0[CHUNK + 7],
        bad[CHUNK + 7],
        "the stream wrote the tampered byte"
    );
    let e = readback(&jobs, &mut dev, &p, &mut t).unwrap_err();
    assert!(
        e.to_string()
            .contains("BOOT: SHA-256 mismatch on read-back"),
        "{e}"
    );
    assert!(e.is_refusal());
}

/// A disk image file that writes one byte wrong (at `bad`, if set), like a
/// medium that drops a bit: the read-back must see it, whether it reads
/// during the stream (ahead.rs) or after the flush.
struct Lying {
    dev: boot_flags::FileDevice,
    bad: Option<u64>,
}
impl BlockDevice for Lying {
    fn len(&mut self) -> io::Result<u64> {
        self.dev.len()
    }
    fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.dev.read_exact_at(off, buf)
    }
    fn write_all_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        match self.bad {
            Some(b) if (off..off + buf.len() as u64).contains(&b) => {
                let mut copy = AlignedBuf::new(buf.len());
                copy.set_len(buf.len());
                copy.copy_from_slice(buf);
                copy[(b - off) as usize] ^= 0x10;
                self.dev.write_all_at(off, &copy)
            }
            _ => self.dev.write_all_at(off, buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.dev.flush()
    }
    fn drop_cache(&mut self, off: u64, len: u64) -> io::Result<()> {
        self.dev.drop_cache(off, len)
    }
    fn direct_reader(&mut self) -> Option<boot_flags::DirectReader> {
        self.dev.direct_reader()
    }
}

/// The read-back overlapped with the writes, on a file with direct I/O:
/// it reads the aligned part of each payload as it is written, the
/// unaligned tail after the flush, and a byte written wrong anywhere is a
/// mismatch on read-back.
#[test]
fn read_ahead_checks_what_the_disk_holds() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path().join("disk");
    std::fs::write(&path, vec![0u8; 8 * CHUNK]).unwrap();
    let a = data(3 * CHUNK + 123, 11);
    let b = data(2 * CHUNK, 12);
    let mut stream = a.clone();
    stream.extend_from_slice(&b);
    let jobs = vec![
        job("ROOT", Compression::None, &a, a.len(), 0, 0),
        job("BOOT", Compression::None, &b, b.len(), 4 * CHUNK as u64, 0),
    ];
    let p = Progress::with_mode(Mode::Quiet);
    let run = |bad: Option<u64>| {
        let dev = boot_flags::FileDevice::open(&path, true).unwrap();
        let mut dev = Lying { dev, bad };
        let ahead = ReadAhead::start(&mut dev, &jobs);
        let mut t = Timing::default();
        write_payloads_reading(&mut &stream[..], &jobs, &mut dev, &p, &mut t, &ahead).unwrap();
        dev.flush().unwrap();
        let r = readback_after(&jobs, &mut dev, &p, &mut t, ahead);
        (r, t)
    };
    // What the read-ahead read by itself: every aligned byte.
    let mut dev = boot_flags::FileDevice::open(&path, true).unwrap();
    let ahead = ReadAhead::start(&mut dev, &jobs);
    let mut t = Timing::default();
    write_payloads_reading(&mut &stream[..], &jobs, &mut dev, &p, &mut t, &ahead).unwrap();
    let got = ahead.finish();
    let done: Vec<u64> = got.partials.iter().map(|p| p.done).collect();
    assert_eq!(done, [3 * CHUNK as u64, 2 * CHUNK as u64]);
    let want: [u8; 32] = Sha256::digest(&b).into();
    assert_eq!(got.partials[1].hasher.clone().finalize()[..], want[..]);

    let (r, t) = run(None);
    r.unwrap();
    assert!(t.readahead_read > std::time::Duration::ZERO, "{t:?}");
    assert!(t.readahead_hash > std::time::Duration::ZERO, "{t:?}");
    assert_eq!(std::fs::read(&path).unwrap()[..a.len()], a[..]);
    // Early in ROOT (read during the stream), in ROOT's unaligned tail (read
    // after the flush), in BOOT: each is found, in its payload.
    for (bad, role) in [
        (5000, "ROOT"),
        (a.len() as u64 - 3, "ROOT"),
        (4 * CHUNK as u64 + 77, "BOOT"),
    ] {
        let e = run(Some(bad)).0.unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("{role}: SHA-256 mismatch on read-back")),
            "byte {bad}: {e}"
        );
    }
}
