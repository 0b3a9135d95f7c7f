//! Unit tests: round trips, and every tampering the format must refuse.

pub(crate) mod fields;
mod tamper;

use std::io::{Cursor, Read};

use crate::*;

/// A deterministic key (tests only), so failures reproduce.
pub(crate) fn key(seed: u8) -> SigningKey {
    let pem = test_key_pem(seed);
    SigningKey::from_pkcs8_pem(&pem).unwrap()
}

fn test_key_pem(seed: u8) -> String {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, KeypairBytes};
    KeypairBytes {
        secret_key: [seed; 32],
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .unwrap()
    .to_string()
}

pub(crate) fn ring(keys: &[&SigningKey]) -> Keyring {
    let mut r = Keyring::new();
    for k in keys {
        r.add(k.public_key().clone());
    }
    r
}

/// Pseudo-random bytes (xorshift), reproducible.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A small image: BOOT (zstd, compressible), ROOT (none, random), signed by `signers`.
pub(crate) fn sample_image(signers: &[&SigningKey]) -> Vec<u8> {
    let boot = b"boot loader and kernel ".repeat(300);
    let root = noise(9000, 7);
    let parts = vec![
        PackPart {
            role: "BOOT".into(),
            compression: Compression::Zstd,
            source: Box::new(Cursor::new(boot)),
            size_hint: None,
            verity: None,
        },
        PackPart {
            role: "ROOT".into(),
            compression: Compression::None,
            source: Box::new(Cursor::new(root)),
            size_hint: None,
            verity: None,
        },
    ];
    let mut spec = PackSpec::new(
        "acme-gw",
        semver::Version::parse("1.2.3").unwrap(),
        5,
        1_700_000_000,
    );
    spec.zstd.workers = 0;
    let mut out = Cursor::new(Vec::new());
    pack(&mut out, &spec, parts, signers).unwrap();
    out.into_inner()
}

/// Verify and read every payload; the first error wins.
pub(crate) fn verify_all(image: &[u8], keyring: &Keyring) -> Result<Vec<Vec<u8>>> {
    let mut v = ImageReader::new(image)?.verify(keyring, 1)?;
    let mut out = Vec::new();
    while let Some(mut p) = v.next_payload()? {
        let mut raw = Vec::new();
        p.read_to_end(&mut raw).map_err(Error::from_io)?;
        out.push(raw);
    }
    v.finish()?;
    Ok(out)
}

#[test]
fn round_trip() {
    let k = key(1);
    let img = sample_image(&[&k]);
    let payloads = verify_all(&img, &ring(&[&k])).unwrap();
    assert_eq!(payloads[0], b"boot loader and kernel ".repeat(300));
    assert_eq!(payloads[1], noise(9000, 7));

    let v = ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring(&[&k]), 1)
        .unwrap();
    let h = v.header();
    assert_eq!(h.compatible(), "acme-gw");
    assert_eq!(h.version(), &semver::Version::new(1, 2, 3));
    assert_eq!(h.rollback_index(), 5);
    assert_eq!(h.created(), 1_700_000_000);
    assert_eq!(h.verified_by(), &[k.key_id()]);
    let boot = h.payload("BOOT").unwrap();
    assert_eq!(boot.compression, Compression::Zstd);
    assert_eq!(boot.raw_size, 23 * 300);
    assert!(boot.stored_size < boot.raw_size);
    assert_eq!(boot.offset % PAYLOAD_ALIGN, 0);
    let root = h.payload("ROOT").unwrap();
    assert_eq!(root.offset, boot.offset + boot.stored_size);
    assert_eq!(h.image_len(), img.len() as u64);
    assert_eq!(&img[root.offset as usize..], &noise(9000, 7)[..]);
}

#[test]
fn record_bytes_reverify() {
    let k = key(1);
    let img = sample_image(&[&k]);
    let v = ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring(&[&k]), 1)
        .unwrap();
    let record = v.header().record_bytes().to_vec();
    assert_eq!(&img[..record.len()], &record[..]);
    let again = VerifiedHeader::from_record_bytes(&ring(&[&k]), 1, &record).unwrap();
    assert_eq!(again.payloads(), v.header().payloads());
    // Bound to the keyring and to the exact bytes.
    let other = key(2);
    assert!(matches!(
        VerifiedHeader::from_record_bytes(&ring(&[&other]), 1, &record),
        Err(Error::UntrustedSignatures { .. })
    ));
    let mut longer = record.clone();
    longer.push(0);
    assert!(matches!(
        VerifiedHeader::from_record_bytes(&ring(&[&k]), 1, &longer),
        Err(Error::TrailingData { .. })
    ));
    // A prefix reader accepts a record followed by anything (a zeroed tail).
    let mut padded = record.clone();
    padded.resize(64 * 1024, 0);
    let h = ImageReader::new(&padded[..])
        .unwrap()
        .verify(&ring(&[&k]), 1)
        .unwrap();
    assert_eq!(h.header().record_bytes(), &record[..]);
}

#[test]
fn threshold_and_rotation() {
    let (a, b, c) = (key(1), key(2), key(3));
    let img = sample_image(&[&a, &b]);
    // Either key alone verifies (rotation); both meet a threshold of 2.
    verify_all(&img, &ring(&[&a])).unwrap();
    verify_all(&img, &ring(&[&b])).unwrap();
    let both = ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring(&[&a, &b, &c]), 2)
        .unwrap();
    assert_eq!(both.header().verified_by().len(), 2);
    let e = ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring(&[&a, &c]), 2)
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::ThresholdNotMet {
                valid: 1,
                threshold: 2
            }
        ),
        "{e}"
    );
    let e = ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring(&[&a]), 0)
        .err()
        .unwrap();
    assert!(matches!(e, Error::ZeroThreshold));
}

#[test]
fn sign_in_place_and_copy() {
    let (a, b, c) = (key(1), key(2), key(3));
    let img = sample_image(&[&a]);
    let mut file = Cursor::new(img.clone());
    sign_in_place(&mut file, &b).unwrap();
    let signed = file.into_inner();
    assert_eq!(signed.len(), img.len());
    let hlen = ImageReader::new(&img[..]).unwrap().header_bytes().len();
    assert_eq!(&signed[..hlen], &img[..hlen], "header bytes unchanged");
    verify_all(&signed, &ring(&[&b])).unwrap();
    let e = sign_in_place(&mut Cursor::new(signed.clone()), &b).unwrap_err();
    assert!(matches!(e, Error::DuplicateSignature { .. }), "{e}");

    let mut copy = Vec::new();
    sign_copy(&signed[..], &mut copy, &c).unwrap();
    verify_all(&copy, &ring(&[&c])).unwrap();
    let r = ImageReader::new(&copy[..]).unwrap();
    assert_eq!(r.signatures().len(), 3);
    assert_eq!(r.header_bytes(), &img[..hlen]);
}

#[test]
fn sign_in_place_without_room_is_refused() {
    let (a, b) = (key(1), key(2));
    let mut spec = PackSpec::new("x", semver::Version::new(1, 0, 0), 0, 0);
    spec.signature_room = 1;
    let mut out = Cursor::new(Vec::new());
    let parts = vec![PackPart {
        role: "ROOT".into(),
        compression: Compression::None,
        source: Box::new(&b"abc"[..]),
        size_hint: None,
        verity: None,
    }];
    pack(&mut out, &spec, parts, &[&a]).unwrap();
    let img = out.into_inner();
    // The alignment padding gives room for more entries than asked: fill it.
    let room = signature_room(
        ImageReader::new(&img[..])
            .unwrap()
            .signature_block_bytes()
            .len() as u32,
    );
    let mut file = Cursor::new(img);
    for seed in 2..=room as u8 {
        sign_in_place(&mut file, &key(seed)).unwrap();
    }
    let e = sign_in_place(&mut file, &key(200)).unwrap_err();
    assert!(matches!(e, Error::NoSignatureRoom { .. }), "{e}");
    let _ = b;
}

#[test]
fn keys_round_trip_pem() {
    let k = SigningKey::generate().unwrap();
    let pem = k.to_pkcs8_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let back = SigningKey::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(back.key_id(), k.key_id());
    let pubpem = k.public_key().to_public_key_pem();
    assert!(pubpem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(
        PublicKey::from_public_key_pem(&pubpem).unwrap(),
        *k.public_key()
    );
    assert_eq!(k.public_key().to_spki_der().len(), 44);
    assert!(!format!("{k:?}").contains(&pem[30..60]));
    assert!(SigningKey::from_pkcs8_pem(&pubpem).is_err());
}

#[test]
fn copy_next_payload_checks_on_a_second_thread() {
    let k = key(1);
    let keyring = ring(&[&k]);
    let img = sample_image(&[&k]);
    let mut v = ImageReader::new(&img[..])
        .unwrap()
        .verify(&keyring, 1)
        .unwrap();
    let mut boot = Vec::new();
    let info = v.copy_next_payload(&mut boot).unwrap().unwrap();
    assert_eq!(info.role, "BOOT");
    assert_eq!(boot, b"boot loader and kernel ".repeat(300));
    let mut root = Vec::new();
    v.copy_next_payload(&mut root).unwrap().unwrap();
    assert_eq!(root, noise(9000, 7));
    assert!(v.copy_next_payload(&mut Vec::new()).unwrap().is_none());
    v.finish().unwrap();

    // A flipped byte in either payload: the copy fails with the hash (or
    // zstd) error, never Ok.
    let hlen = ImageReader::new(&img[..]).unwrap().header_bytes().len();
    for off in [hlen + 4096 + 10, img.len() - 1] {
        let mut bad = img.clone();
        bad[off] ^= 4;
        let mut v = ImageReader::new(&bad[..])
            .unwrap()
            .verify(&keyring, 1)
            .unwrap();
        let r = v
            .copy_next_payload(&mut Vec::new())
            .and_then(|_| v.copy_next_payload(&mut Vec::new()));
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                Error::HashMismatch { .. }
                    | Error::StoredHashMismatch { .. }
                    | Error::CorruptPayload { .. }
            ),
            "offset {off}: {e}"
        );
    }
}

#[test]
fn keyring_directory() {
    let dir = tempfile::tempdir().unwrap();
    let e = Keyring::load_dir(dir.path()).unwrap_err();
    assert!(
        e.to_string().contains("no *.pub or *.pem public key"),
        "{e}"
    );
    let (a, b) = (key(1), key(2));
    std::fs::write(dir.path().join("a.pub"), a.public_key().to_public_key_pem()).unwrap();
    std::fs::write(dir.path().join("b.pem"), b.public_key().to_public_key_pem()).unwrap();
    std::fs::write(dir.path().join("README"), "not a key, ignored").unwrap();
    let ring = Keyring::load_dir(dir.path()).unwrap();
    assert_eq!(ring.len(), 2);
    assert!(ring.get(&a.key_id()).is_some() && ring.get(&b.key_id()).is_some());
    // A broken key file is an error naming it, not silently skipped.
    std::fs::write(
        dir.path().join("c.pub"),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let e = Keyring::load_dir(dir.path()).unwrap_err();
    assert!(e.to_string().contains("c.pub"), "{e}");
    // A private key is not a public key.
    let e = PublicKey::from_public_key_pem(&a.to_pkcs8_pem().unwrap()).unwrap_err();
    assert!(
        !e.to_string().contains("PRIVATE"),
        "no key material in: {e}"
    );
}

#[test]
fn hasher_and_decompressor_building_blocks() {
    let k = key(1);
    let img = sample_image(&[&k]);
    let v = ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring(&[&k]), 1)
        .unwrap();
    let boot = v.header().payload("BOOT").unwrap().clone();
    let stored = &img[boot.offset as usize..(boot.offset + boot.stored_size) as usize];
    let mut raw = Vec::new();
    decompressor(boot.compression, stored)
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    let mut h = PayloadHasher::new();
    for chunk in raw.chunks(1000) {
        h.update(chunk);
    }
    h.clone().finish(&boot).unwrap();
    h.update(b"x");
    assert!(matches!(
        h.finish(&boot),
        Err(Error::RawSizeMismatch { .. })
    ));
    let mut h = PayloadHasher::new();
    raw[0] ^= 1;
    h.update(&raw);
    assert!(matches!(h.finish(&boot), Err(Error::HashMismatch { .. })));
}

/// `parse_header` checks the magic itself, not only through
/// `ImageReader::new` (which refuses a bad magic before calling it).
#[test]
fn parse_header_checks_its_own_magic() {
    let mut h = [0u8; 16];
    h[12] = 1; // format version 1, flags 0
    assert!(matches!(
        crate::format::parse_header(&h),
        Err(Error::BadMagic)
    ));
    h[..8].copy_from_slice(&IMAGE_MAGIC);
    assert!(matches!(
        crate::format::parse_header(&h),
        Err(Error::NoPayloads)
    ));
    assert!(matches!(
        crate::format::parse_header(&h[..15]),
        Err(Error::BadMagic)
    ));
}
