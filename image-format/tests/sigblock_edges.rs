//! The signature block's refusals, each with the byte offset
//! docs/image-format.md gives for the field (the block starts right after
//! the header: magic at +0, length at +8, count at +12, reserved at +14,
//! entries of 72 bytes from +16, then zero padding).

use std::io::Cursor;

use image_format::*;

/// A packed image with `n` signatures, and its header length.
fn image(n: usize) -> (Vec<u8>, usize) {
    let keys: Vec<SigningKey> = (0..n).map(|_| SigningKey::generate().unwrap()).collect();
    let signers: Vec<&SigningKey> = keys.iter().collect();
    let spec = PackSpec::new("acme", semver::Version::new(1, 0, 0), 1, 0);
    let parts = vec![PackPart {
        role: "ROOT".into(),
        compression: Compression::None,
        source: Box::new(&b"data"[..]),
        size_hint: None,
        verity: None,
    }];
    let mut out = Cursor::new(Vec::new());
    pack(&mut out, &spec, parts, &signers).unwrap();
    let img = out.into_inner();
    let h = ImageReader::new(&img[..]).unwrap().header_bytes().len();
    (img, h)
}

fn refusal(img: &[u8]) -> String {
    match ImageReader::new(img) {
        Ok(_) => panic!("accepted"),
        Err(e) => {
            assert!(e.is_refusal(), "{e}");
            e.to_string()
        }
    }
}

fn put16(img: &mut [u8], at: usize, v: u16) {
    img[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn magic_and_length() {
    let (mut img, h) = image(1);
    img[h + 3] ^= 0x20;
    assert_eq!(
        refusal(&img),
        format!("bad signature block magic at byte {h}")
    );
    let (mut img, h) = image(1);
    img[h + 8..h + 12].copy_from_slice(&15u32.to_le_bytes());
    assert_eq!(
        refusal(&img),
        format!(
            "signature block length 15 (at byte {}) is outside 16..=16384",
            h + 8
        )
    );
}

#[test]
fn reserved_field() {
    let (mut img, h) = image(1);
    put16(&mut img, h + 14, 1);
    assert_eq!(
        refusal(&img),
        format!(
            "reserved field of the signature block (at byte {}) is not zero",
            h + 14
        )
    );
}

#[test]
fn count_past_the_room() {
    let (mut img, h) = image(1);
    let block_len = ImageReader::new(&img[..])
        .unwrap()
        .signature_block_bytes()
        .len();
    let room = ((block_len - 16) / 72).min(64);
    put16(&mut img, h + 12, room as u16 + 1);
    assert_eq!(
        refusal(&img),
        format!(
            "signature count {} (at byte {}) exceeds the {room} that fit",
            room + 1,
            h + 12
        )
    );
    // Exactly the room is not "too many" (the zero entries that follow
    // are then refused as empty).
    put16(&mut img, h + 12, room as u16);
    let e = refusal(&img);
    assert!(e.starts_with("signature 1 (at byte"), "{e}");
}

#[test]
fn empty_entry_and_padding() {
    // Count 3 with only 2 entries written: the third (all zero) is empty.
    let (mut img, h) = image(2);
    put16(&mut img, h + 12, 3);
    assert_eq!(
        refusal(&img),
        format!("signature 2 (at byte {}) is empty", h + 16 + 2 * 72)
    );
    // A non-zero byte in the padding after the 2 entries.
    let (mut img, h) = image(2);
    let at = h + 16 + 2 * 72 + 5;
    img[at] = 0xaa;
    assert_eq!(
        refusal(&img),
        format!("unused room of the signature block has a non-zero byte at byte {at}")
    );
    // The same key twice.
    let (mut img, h) = image(2);
    let first: Vec<u8> = img[h + 16..h + 16 + 72].to_vec();
    img[h + 16 + 72..h + 16 + 144].copy_from_slice(&first);
    let e = refusal(&img);
    assert!(e.starts_with("duplicate signature by key"), "{e}");
}

#[test]
fn zero_signatures() {
    // A block with room but no entries parses; verification then refuses.
    let (mut img, h) = image(1);
    put16(&mut img, h + 12, 0);
    img[h + 16..h + 16 + 72].fill(0);
    let r = ImageReader::new(&img[..]).unwrap();
    assert!(r.signatures().is_empty());
    let mut ring = Keyring::new();
    ring.add(SigningKey::generate().unwrap().public_key().clone());
    match r.verify(&ring, 1) {
        Ok(_) => panic!("verified with no signatures"),
        Err(e) => assert_eq!(e.to_string(), "image has no signatures"),
    }
}

/// The smallest block the format allows: 16 bytes, no entries. It parses
/// (to no signatures); verification then refuses.
#[test]
fn a_sixteen_byte_block() {
    let (img, h) = image(1);
    let block_len = ImageReader::new(&img[..])
        .unwrap()
        .signature_block_bytes()
        .len();
    let mut small = img[..h].to_vec();
    small.extend_from_slice(b"SLOTSIG\0");
    small.extend_from_slice(&16u32.to_le_bytes());
    small.extend_from_slice(&[0; 4]);
    small.extend_from_slice(&img[h + block_len..]);
    let r = ImageReader::new(&small[..]).unwrap();
    assert!(r.signatures().is_empty());
    assert_eq!(r.signature_block_bytes().len(), 16);
}
