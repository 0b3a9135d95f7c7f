//! The tree against its definition (veritysetup itself is the validator in
//! tests/tests/verity.rs), the field's encoding, and the critical bit.

use std::io::{Cursor, Read};

use sha2::{Digest, Sha256};

use crate::tests::{key, noise, ring};
use crate::*;

const SALT: &[u8] = b"0123456789abcdef0123456789abcdef";

fn h(parts: &[&[u8]]) -> [u8; 32] {
    let mut s = Sha256::new();
    for p in parts {
        s.update(p);
    }
    s.finalize().into()
}

/// A hash block: these digests, zero padded to 4096 bytes.
fn hash_block(digests: &[[u8; 32]]) -> Vec<u8> {
    let mut b = digests.concat();
    assert!(b.len() <= 4096);
    b.resize(4096, 0);
    b
}

fn tree_of(data: &[u8], salt: &[u8]) -> VerityTree {
    let mut v = VerityHasher::new(salt).unwrap();
    v.update(data);
    v.finish().unwrap()
}

#[test]
fn one_block_has_no_tree_and_its_digest_is_the_root() {
    let data = noise(4096, 1);
    let t = tree_of(&data, SALT);
    assert_eq!(t.tree(), b"");
    assert_eq!(t.padding_len(), 0);
    assert_eq!(t.info().root_hash, h(&[SALT, &data]));
    assert_eq!(t.info().data_blocks, 1);
    assert_eq!(t.info().hash_start_block, 1);
    assert_eq!(t.info().tree_len(), 0);
}

#[test]
fn one_level_up_to_128_blocks_two_levels_from_129() {
    let data = noise(129 * 4096, 2);
    let digests: Vec<[u8; 32]> = data.chunks(4096).map(|b| h(&[SALT, b])).collect();

    let t = tree_of(&data[..128 * 4096], SALT);
    let level0 = hash_block(&digests[..128]);
    assert_eq!(t.tree(), &level0[..]);
    assert_eq!(t.info().root_hash, h(&[SALT, &level0]));

    let t = tree_of(&data, SALT);
    let (l0a, l0b) = (hash_block(&digests[..128]), hash_block(&digests[128..]));
    let top = hash_block(&[h(&[SALT, &l0a]), h(&[SALT, &l0b])]);
    assert_eq!(
        t.tree(),
        &[top.clone(), l0a, l0b].concat()[..],
        "top level first"
    );
    assert_eq!(t.info().root_hash, h(&[SALT, &top]));
    assert_eq!(t.info().tree_len(), 3 * 4096);
    assert_eq!(t.info().partition_len(), 129 * 4096 + 3 * 4096);
}

#[test]
fn a_partial_last_block_is_zero_padded() {
    let data = noise(4096 + 100, 3);
    let t = tree_of(&data, SALT);
    let mut padded = data.clone();
    padded.resize(8192, 0);
    assert_eq!(t.padding_len(), 3996);
    assert_eq!(t.info().data_blocks, 2);
    assert_eq!(t.tree(), tree_of(&padded, SALT).tree());
    assert_eq!(t.info(), tree_of(&padded, SALT).info());
}

#[test]
fn pieces_of_any_size_give_the_same_tree_and_the_reader_appends_it() {
    let data = noise(300 * 4096 + 17, 4);
    let whole = tree_of(&data, b"");
    let mut v = VerityHasher::new(b"").unwrap();
    for piece in data.chunks(1000).chain(data[..0].chunks(1)) {
        v.update(piece);
    }
    assert_eq!(v.data_len(), data.len() as u64);
    let pieces = v.finish().unwrap();
    assert_eq!(pieces.tree(), whole.tree());
    assert_eq!(pieces.info(), whole.info());
    assert_eq!(whole.info().salt_hex(), "-");

    let mut r = VerityReader::new(Cursor::new(&data), b"").unwrap();
    assert!(r.info().is_none());
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(r.info(), Some(whole.info()));
    assert_eq!(out.len() as u64, whole.info().partition_len());
    assert_eq!(out.len() as u64, verity_partition_len(data.len() as u64));
    assert_eq!(&out[..data.len()], &data[..]);
    assert!(out[data.len()..301 * 4096].iter().all(|&b| b == 0));
    assert_eq!(&out[301 * 4096..], whole.tree());
}

#[test]
fn tree_lengths() {
    assert_eq!(hash_tree_len(1), 0);
    assert_eq!(hash_tree_len(2), 4096);
    assert_eq!(hash_tree_len(128), 4096);
    assert_eq!(hash_tree_len(129), 3 * 4096);
    assert_eq!(hash_tree_len(128 * 128), (128 + 1) * 4096);
    assert_eq!(hash_tree_len(128 * 128 + 1), (129 + 2 + 1) * 4096);
    assert_eq!(verity_partition_len(1), 4096);
    assert_eq!(verity_partition_len(4097), 8192 + 4096);
}

#[test]
fn empty_data_and_long_salts_are_refused() {
    let e = VerityHasher::new(b"").unwrap().finish().unwrap_err();
    assert!(e.to_string().contains("at least one byte"), "{e}");
    let mut r = VerityReader::new(Cursor::new(Vec::new()), SALT).unwrap();
    let e = r.read(&mut [0; 16]).unwrap_err();
    assert!(e.to_string().contains("at least one byte"), "{e}");
    assert!(VerityHasher::new(&[0; 65]).is_err());
    assert!(VerityInfo::new(1, &[0; 65], [0; 32]).is_err());
    assert!(VerityInfo::new(0, SALT, [0; 32]).is_err());
}

#[test]
fn the_field_round_trips_and_bad_values_are_refused() {
    let info = VerityInfo::new(129, SALT, [7; 32]).unwrap();
    let v = info.encode();
    assert_eq!(v.len(), 27 + 32 + 32);
    assert_eq!(VerityInfo::decode(&v, 0).unwrap(), info);
    assert_eq!(info.data_sectors(), 129 * 8);
    assert_eq!(info.root_hex(), "07".repeat(32));
    assert_eq!(info.salt_hex(), crate::hex(SALT));
    let bad = |at: usize, byte: u8, want: &str| {
        let mut w = v.clone();
        w[at] = byte;
        let e = VerityInfo::decode(&w, 100).unwrap_err();
        assert!(
            e.to_string().starts_with("field `verity` at byte 100: ")
                && e.to_string().contains(want),
            "{e}"
        );
    };
    bad(8, 130, "hash start block 130");
    bad(17, 0x20, "block sizes 8192/4096");
    bad(21, 0x02, "block sizes 4096/512");
    bad(24, 0, "hash type 0");
    bad(25, 2, "hash algorithm 2");
    bad(26, 33, "a salt of 33 bytes makes 92");
    assert!(VerityInfo::decode(&v[..58], 0).is_err());
    assert!(VerityInfo::decode(&[v.clone(), vec![0]].concat(), 0).is_err());
    let mut long = VerityInfo::new(1, &[1; 64], [0; 32]).unwrap().encode();
    assert!(VerityInfo::decode(&long, 0).is_ok());
    long[26] = 65;
    long.push(0);
    let e = VerityInfo::decode(&long, 0).unwrap_err();
    assert!(e.to_string().contains("salt of 65 bytes"), "{e}");
    let zero = VerityInfo::new(1, SALT, [0; 32]).unwrap();
    let mut z = zero.encode();
    z[..16].fill(0);
    assert!(VerityInfo::decode(&z, 0).is_err(), "0 data blocks");
}

/// Pack one ROOT payload with a tree; returns the image and the raw data.
fn verity_image(len: usize, compression: Compression) -> (Vec<u8>, Vec<u8>) {
    let data = noise(len, 5);
    let parts = vec![PackPart {
        role: "ROOT".into(),
        compression,
        source: Box::new(Cursor::new(data.clone())),
        size_hint: Some(len as u64),
        verity: Some(SALT.to_vec()),
    }];
    let mut spec = PackSpec::new("acme-gw", semver::Version::new(1, 0, 0), 1, 1);
    spec.zstd.workers = 0;
    let mut out = Cursor::new(Vec::new());
    let infos = pack(&mut out, &spec, parts, &[&key(1)]).unwrap();
    assert_eq!(infos[0].verity.as_ref().unwrap().salt, SALT);
    (out.into_inner(), data)
}

#[test]
fn pack_appends_the_tree_and_the_header_carries_its_root() {
    for compression in [Compression::None, Compression::Zstd, Compression::Chunked] {
        let (img, data) = verity_image(200 * 4096 + 5, compression);
        let expect = tree_of(&data, SALT);
        let v = ImageReader::new(&img[..])
            .unwrap()
            .verify(&ring(&[&key(1)]), 1)
            .unwrap();
        let p = v.header().payload("ROOT").unwrap().clone();
        assert_eq!(p.verity.as_ref(), Some(expect.info()), "{compression:?}");
        assert_eq!(p.raw_size, expect.info().partition_len());
        let raw = crate::tests::verify_all(&img, &ring(&[&key(1)])).unwrap();
        let mut want = data.clone();
        want.resize(201 * 4096, 0);
        want.extend_from_slice(expect.tree());
        assert!(
            raw[0] == want,
            "{compression:?}: raw bytes = data, padding, tree"
        );
    }
}

/// Re-sign `header` (key 1) and put the payload bytes of `img` behind it.
fn resigned(img: &[u8], header: Vec<u8>) -> Vec<u8> {
    let r = ImageReader::new(img).unwrap();
    let rest = &img[r.header_bytes().len() + r.signature_block_bytes().len()..];
    crate::tests::fields::signed(header, rest)
}

/// The same header with only the verity field's tag replaced.
fn with_verity_tag(img: &[u8], tag: u16) -> Vec<u8> {
    let r = ImageReader::new(img).unwrap();
    let mut header = r.header_bytes().to_vec();
    let info = r.into_untrusted().unwrap().header().payloads()[0]
        .verity
        .clone();
    let value = info.unwrap().encode();
    let at = header
        .windows(value.len())
        .position(|w| w == value)
        .expect("the field's value in the header");
    assert_eq!(
        header[at - 6..at - 4],
        crate::tag::payload::VERITY.to_le_bytes()
    );
    header[at - 6..at - 4].copy_from_slice(&tag.to_le_bytes());
    resigned(img, header)
}

#[test]
fn a_reader_that_does_not_know_the_field_refuses_it() {
    let (img, data) = verity_image(3 * 4096, Compression::None);
    let keys = ring(&[&key(1)]);
    // Re-signed unchanged: accepted, with the tree.
    let same = with_verity_tag(&img, crate::tag::payload::VERITY);
    assert_eq!(same, img);
    assert!(crate::tests::verify_all(&same, &keys).is_ok());
    // The tag, and only the tag, swapped for one this reader does not know,
    // critical like VERITY: refused, as an older reader refuses VERITY.
    let e = crate::tests::verify_all(&with_verity_tag(&img, 0x8009), &keys).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnknownCriticalField {
                tag: 0x8009,
                container: "payload entry",
                ..
            }
        ),
        "{e}"
    );
    // Without the critical bit the same bytes would be skipped: the bit is
    // what makes an older reader refuse rather than ignore the tree.
    let skipped = with_verity_tag(&img, 0x0009);
    let raw = crate::tests::verify_all(&skipped, &keys).unwrap();
    assert_eq!(&raw[0][..data.len()], &data[..]);
    let v = ImageReader::new(&skipped[..])
        .unwrap()
        .verify(&keys, 1)
        .unwrap();
    assert_eq!(v.header().payloads()[0].verity, None);
}

#[test]
fn a_tree_that_does_not_end_with_the_payload_is_refused() {
    let (img, _) = verity_image(3 * 4096, Compression::None);
    let r = ImageReader::new(&img[..]).unwrap();
    let mut header = r.header_bytes().to_vec();
    // Data blocks (and hash start) 3 -> 2: the tree would end elsewhere.
    let info = r.into_untrusted().unwrap().header().payloads()[0]
        .verity
        .clone()
        .unwrap();
    let value = info.encode();
    let at = header
        .windows(value.len())
        .position(|w| w == value)
        .unwrap();
    header[at] = 2;
    header[at + 8] = 2;
    let e = crate::tests::verify_all(&resigned(&img, header), &ring(&[&key(1)])).unwrap_err();
    assert!(
        e.to_string()
            .contains("2 data blocks and their tree make 12288 bytes, raw_size is 16384"),
        "{e}"
    );
}
