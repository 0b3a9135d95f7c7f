//! `pack`, `sign_in_place` and `sign_copy` at the edge of each limit: the
//! signature room (64 at most), zstd levels 1..=19, duplicate signers and
//! roles, and the offsets `pack` reports against what a reader finds.

use std::io::{Cursor, Read};

use image_format::*;

fn keys(n: usize) -> Vec<SigningKey> {
    (0..n).map(|_| SigningKey::generate().unwrap()).collect()
}

fn spec() -> PackSpec {
    PackSpec::new("acme", semver::Version::new(1, 0, 0), 1, 0)
}

fn part(role: &str, data: &'static [u8], compression: Compression) -> PackPart<'static> {
    PackPart {
        role: role.into(),
        compression,
        source: Box::new(data),
        size_hint: None,
        verity: None,
    }
}

fn pack_with(spec: &PackSpec, signers: &[&SigningKey]) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    pack(
        &mut out,
        spec,
        vec![part("ROOT", b"data", Compression::None)],
        signers,
    )?;
    Ok(out.into_inner())
}

#[test]
fn signature_room_limit() {
    let k = keys(1);
    let mut s = spec();
    s.signature_room = 64;
    let img = pack_with(&s, &[&k[0]]).unwrap();
    let r = ImageReader::new(&img[..]).unwrap();
    assert_eq!(signature_room(r.signature_block_bytes().len() as u32), 64);
    s.signature_room = 65;
    let e = pack_with(&s, &[&k[0]]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "room for 65 signatures exceeds the limit of 64"
    );
    // Room is at least the number of signers.
    // (The block is padded so the payloads start on a 4 KiB boundary.)
    s.signature_room = 0;
    let ks = keys(3);
    let img = pack_with(&s, &[&ks[0], &ks[1], &ks[2]]).unwrap();
    let r = ImageReader::new(&img[..]).unwrap();
    assert_eq!(r.signatures().len(), 3);
    let (h, b) = (r.header_bytes().len(), r.signature_block_bytes().len());
    assert_eq!((h + b) % 4096, 0);
    assert!(b >= 16 + 3 * 72);
}

/// Signatures a block of `len` bytes holds: 16 fixed bytes, 72 per entry,
/// at most 64 (docs/image-format.md).
fn room_of(len: usize) -> usize {
    ((len - 16) / 72).min(64)
}

#[test]
fn zstd_levels_and_duplicates() {
    let k = keys(1);
    let mut s = spec();
    for (level, ok) in [(0, false), (1, true), (19, true), (20, false), (-1, false)] {
        s.zstd.level = level;
        let r = pack_with(&s, &[&k[0]]);
        match r {
            Ok(_) => assert!(ok, "level {level}"),
            Err(e) => {
                assert!(!ok, "level {level}: {e}");
                assert_eq!(
                    e.to_string(),
                    format!("zstd level {level} is outside 1..=19")
                );
            }
        }
    }
    let e = pack_with(&spec(), &[&k[0], &k[0]]).unwrap_err();
    assert!(matches!(e, Error::DuplicateSignature { .. }), "{e}");
    let e = pack_with(&spec(), &[]).unwrap_err();
    assert_eq!(e.to_string(), "at least one signing key is needed");
    let mut out = Cursor::new(Vec::new());
    let parts = vec![
        part("ROOT", b"a", Compression::None),
        part("BOOT", b"b", Compression::None),
        part("ROOT", b"c", Compression::None),
    ];
    let e = pack(&mut out, &spec(), parts, &[&k[0]]).unwrap_err();
    assert_eq!(e.to_string(), "duplicate payload role ROOT");
}

/// The offsets and sizes `pack` returns are where a reader finds the
/// payloads: right after the signature block, one after the other.
#[test]
fn reported_offsets_match_the_image() {
    let k = keys(1);
    let mut ring = Keyring::new();
    ring.add(k[0].public_key().clone());
    let mut out = Cursor::new(Vec::new());
    let parts = vec![
        part("BOOT", b"boot bytes", Compression::None),
        part("ROOT", &[0u8; 50_000], Compression::Zstd),
        part("HASH", b"hash", Compression::None),
    ];
    let infos = pack(&mut out, &spec(), parts, &[&k[0]]).unwrap();
    let img = out.into_inner();
    let v = ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring, 1)
        .unwrap();
    let h = v.header();
    assert_eq!(infos, h.payloads());
    let start = (h.header_bytes().len() + h.signature_block_bytes().len()) as u64;
    assert_eq!(infos[0].offset, start);
    assert_eq!(infos[0].stored_size, 10);
    assert_eq!(infos[1].offset, start + 10);
    assert_eq!(infos[1].raw_size, 50_000);
    assert!(infos[1].stored_size < 1000);
    assert_eq!(infos[2].offset, infos[1].offset + infos[1].stored_size);
    assert_eq!(img.len() as u64, infos[2].offset + 4);
    assert_eq!(&img[infos[2].offset as usize..], b"hash");
}

#[test]
fn sign_in_place_fills_the_room_exactly() {
    let first = keys(1);
    let mut img = Cursor::new(pack_with(&spec(), &[&first[0]]).unwrap());
    let r = ImageReader::new(&img.get_ref()[..]).unwrap();
    let room = room_of(r.signature_block_bytes().len());
    assert_eq!(signature_room(r.signature_block_bytes().len() as u32), room);
    assert!(room >= DEFAULT_SIGNATURE_ROOM);
    let more = keys(room);
    for k in &more[..room - 1] {
        sign_in_place(&mut img, k).unwrap();
    }
    let e = sign_in_place(&mut img, &more[room - 1]).unwrap_err();
    assert!(
        matches!(e, Error::NoSignatureRoom { count, room: r } if count == room && r == room),
        "{e:?}"
    );
    let r = ImageReader::new(&img.get_ref()[..]).unwrap();
    assert_eq!(r.signatures().len(), room);
    assert_eq!(r.signatures()[0].key_id, first[0].key_id());
    assert_eq!(r.signatures()[room - 1].key_id, more[room - 2].key_id());
    // A signer already present is refused even with room.
    let mut img = Cursor::new(pack_with(&spec(), &[&first[0]]).unwrap());
    let e = sign_in_place(&mut img, &first[0]).unwrap_err();
    assert!(matches!(e, Error::DuplicateSignature { .. }), "{e:?}");
}

/// sign_copy grows the block up to 64 signatures and no further.
#[test]
fn sign_copy_up_to_64_signatures() {
    let k = keys(65);
    let signers: Vec<&SigningKey> = k[..63].iter().collect();
    let mut s = spec();
    s.signature_room = 63;
    let img63 = pack_with(&s, &signers).unwrap();
    let mut img64 = Vec::new();
    sign_copy(&img63[..], &mut img64, &k[63]).unwrap();
    let r = ImageReader::new(&img64[..]).unwrap();
    assert_eq!(r.signatures().len(), 64);
    assert_eq!(signature_room(r.signature_block_bytes().len() as u32), 64);
    let mut ring = Keyring::new();
    ring.add(k[63].public_key().clone());
    let mut v = r.verify(&ring, 1).unwrap();
    let mut data = Vec::new();
    v.next_payload()
        .unwrap()
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(data, b"data");
    let mut img65 = Vec::new();
    let e = sign_copy(&img64[..], &mut img65, &k[64]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoSignatureRoom {
                count: 64,
                room: 64
            }
        ),
        "{e:?}"
    );
    // With few signatures, the copy leaves the default room for more.
    let img1 = pack_with(&spec(), &[&k[0]]).unwrap();
    let mut img2 = Vec::new();
    sign_copy(&img1[..], &mut img2, &k[1]).unwrap();
    let r = ImageReader::new(&img2[..]).unwrap();
    assert!(room_of(r.signature_block_bytes().len()) >= 2 + DEFAULT_SIGNATURE_ROOM);
    assert_eq!(r.signatures().len(), 2);
}

/// A source that fails once with `kind`, then yields its bytes.
struct Hiccup {
    kind: Option<std::io::ErrorKind>,
    data: &'static [u8],
}

impl Read for Hiccup {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(kind) = self.kind.take() {
            return Err(std::io::Error::new(kind, "hiccup"));
        }
        self.data.read(buf)
    }
}

fn pack_source(source: Hiccup) -> Result<Vec<PayloadInfo>> {
    let k = keys(1);
    let mut out = Cursor::new(Vec::new());
    let parts = vec![PackPart {
        role: "ROOT".into(),
        compression: Compression::None,
        source: Box::new(source),
        size_hint: None,
        verity: None,
    }];
    pack(&mut out, &spec(), parts, &[&k[0]])
}

/// An interrupted read is retried; any other read error ends the pack,
/// naming the part.
#[test]
fn source_read_errors() {
    let infos = pack_source(Hiccup {
        kind: Some(std::io::ErrorKind::Interrupted),
        data: b"abc",
    })
    .unwrap();
    assert_eq!(infos[0].raw_size, 3);
    assert_eq!(
        infos[0].sha256_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let e = pack_source(Hiccup {
        kind: Some(std::io::ErrorKind::PermissionDenied),
        data: b"abc",
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "reading a part: ROOT: hiccup");
    assert!(!e.is_refusal());
}

/// The zstd defaults: level 3, `job_size` 1 MiB (no longer used by
/// packing, kept for the API and `--zstd-job-size`), and 1 MiB frames for
/// zstd payloads (what bounds packing's memory now).
#[test]
fn zstd_defaults() {
    assert_eq!(DEFAULT_ZSTD_JOB_SIZE, 1 << 20);
    let z = ZstdOptions::default();
    assert_eq!(z.level, 3);
    assert_eq!(z.job_size, 1 << 20);
    assert!(z.workers >= 1);
    assert_eq!(MAX_ZSTD_LEVEL, 19);
    assert_eq!(ZSTD_FRAME_RAW, 1 << 20);
}

/// sign_copy sizes the new block for the signatures, the new one and
/// DEFAULT_SIGNATURE_ROOM more (64 at most), padded so the payloads start
/// on a 4 KiB boundary: checked for every signature count 1..=63.
#[test]
fn sign_copy_block_size_for_every_count() {
    let k = keys(64);
    for n in 1..=63usize {
        let signers: Vec<&SigningKey> = k[..n].iter().collect();
        let mut s = spec();
        s.signature_room = n;
        let img = pack_with(&s, &signers).unwrap();
        let mut copy = Vec::new();
        sign_copy(&img[..], &mut copy, &k[63]).unwrap();
        let r = ImageReader::new(&copy[..]).unwrap();
        assert_eq!(r.signatures().len(), n + 1);
        let h = r.header_bytes().len();
        let slots = (n + 1 + DEFAULT_SIGNATURE_ROOM).min(64);
        let end = (h + 16 + 72 * slots).div_ceil(4096) * 4096;
        assert_eq!(h + r.signature_block_bytes().len(), end, "{n} signatures");
    }
}

/// A block whose room is filled to its last byte (no padding left): the
/// compatible string's length is chosen so that the padded block holds a
/// whole number of entries, then sign_in_place fills every one.
#[test]
fn sign_in_place_fills_a_block_to_its_last_byte() {
    let k = keys(1);
    let (img, h) = (1..=72)
        .map(|len| {
            let mut s = spec();
            s.compatible = "c".repeat(len);
            let img = pack_with(&s, &[&k[0]]).unwrap();
            let h = ImageReader::new(&img[..]).unwrap().header_bytes().len();
            (img, h)
        })
        .find(|(img, _)| {
            let b = ImageReader::new(&img[..])
                .unwrap()
                .signature_block_bytes()
                .len();
            (b - 16) % 72 == 0
        })
        .expect("some compatible length gives an exactly divisible block");
    let block_len = 4096 - h;
    let room = (block_len - 16) / 72;
    let mut img = Cursor::new(img);
    for key in keys(room - 1) {
        sign_in_place(&mut img, &key).unwrap();
    }
    let r = ImageReader::new(&img.get_ref()[..]).unwrap();
    assert_eq!(r.signatures().len(), room);
    assert_eq!(r.signature_block_bytes().len(), 16 + 72 * room);
}
