//! Every tampering of an image is refused, with a one-line error.

use std::io::{self, Read};

use super::{key, noise, ring, sample_image, verify_all};
use crate::sigblock::{encode_signature_block, SignatureEntry};
use crate::*;

/// The error of a tampered image, asserting it is one clear line.
fn refused(image: &[u8], keyring: &Keyring) -> Error {
    let e = verify_all(image, keyring).expect_err("tampered image was accepted");
    let line = e.to_string();
    assert!(
        !line.is_empty() && !line.contains('\n'),
        "not one line: {line:?}"
    );
    e
}

fn record_len(image: &[u8]) -> usize {
    let r = ImageReader::new(image).unwrap();
    r.header_bytes().len() + r.signature_block_bytes().len()
}

#[test]
fn every_bit_of_header_and_signature_block_flipped() {
    let k = key(1);
    let keyring = ring(&[&k]);
    let img = sample_image(&[&k]);
    let len = record_len(&img);
    let mut kinds = std::collections::BTreeSet::new();
    for bit in 0..len * 8 {
        let mut bad = img.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let e = refused(&bad, &keyring);
        kinds.insert(
            format!("{e:?}")
                .split([' ', '(', '{'])
                .next()
                .unwrap()
                .to_owned(),
        );
    }
    // The flips hit the framing, the signatures and the padding alike.
    for expected in [
        "BadMagic",
        "HeaderTooLong",
        "BadSignature",
        "BadSignatureBlockMagic",
        "SignatureBlockPadding",
        "UntrustedSignatures",
    ] {
        assert!(kinds.contains(expected), "{expected} not seen in {kinds:?}");
    }
}

#[test]
fn payload_bytes_flipped_at_sampled_offsets() {
    let k = key(1);
    let keyring = ring(&[&k]);
    let img = sample_image(&[&k]);
    let start = record_len(&img);
    let mut checked = 0;
    for off in (start..img.len()).step_by(29).chain([img.len() - 1]) {
        for bit in [0, 7] {
            let mut bad = img.clone();
            bad[off] ^= 1 << bit;
            let e = refused(&bad, &keyring);
            assert!(
                matches!(
                    e,
                    Error::HashMismatch { .. }
                        | Error::StoredHashMismatch { .. }
                        | Error::CorruptPayload { .. }
                        | Error::RawSizeMismatch { .. }
                        | Error::StoredSizeMismatch { .. }
                ),
                "offset {off}: {e}"
            );
            checked += 1;
        }
    }
    assert!(checked > 300);
}

#[test]
fn truncation_at_every_4k_boundary() {
    let k = key(1);
    let keyring = ring(&[&k]);
    let img = sample_image(&[&k]);
    assert!(img.len() > 3 * 4096);
    let cuts = (0..img.len())
        .step_by(4096)
        .chain([img.len() - 1, 1, 15, 16]);
    for cut in cuts {
        let e = refused(&img[..cut], &keyring);
        assert!(
            matches!(e, Error::Truncated { .. } | Error::PayloadTruncated { .. }),
            "cut at {cut}: {e}"
        );
    }
}

#[test]
fn trailing_garbage() {
    let k = key(1);
    let keyring = ring(&[&k]);
    for tail in [&[0u8][..], b"garbage", &noise(5000, 3)] {
        let mut bad = sample_image(&[&k]);
        let len = bad.len() as u64;
        bad.extend_from_slice(tail);
        match refused(&bad, &keyring) {
            Error::TrailingData { offset } => assert_eq!(offset, len),
            e => panic!("{e}"),
        }
    }
}

#[test]
fn lengths_near_4_gib_are_refused_without_allocating() {
    let k = key(1);
    let keyring = ring(&[&k]);
    let img = sample_image(&[&k]);
    for len in [u32::MAX, u32::MAX - 15, MAX_HEADER_LEN + 1] {
        let mut bad = img[..16].to_vec();
        bad[8..12].copy_from_slice(&len.to_le_bytes());
        // An endless stream behind it: reading it all would never finish.
        let stream = (&bad[..]).chain(io::repeat(0));
        let e = ImageReader::new(stream).err().unwrap();
        assert!(matches!(e, Error::HeaderTooLong { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!("header length {len} (at byte 8) exceeds the limit of {MAX_HEADER_LEN} bytes")
        );
    }
    let hlen = ImageReader::new(&img[..]).unwrap().header_bytes().len();
    let mut bad = img[..hlen + 16].to_vec();
    bad[hlen + 8..hlen + 12].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    let e = ImageReader::new((&bad[..]).chain(io::repeat(0)))
        .err()
        .unwrap();
    assert!(matches!(e, Error::BadSignatureBlockLength { .. }), "{e}");
    let _ = keyring;
}

fn with_signatures(img: &[u8], entries: &[SignatureEntry]) -> Vec<u8> {
    let r = ImageReader::new(img).unwrap();
    let hlen = r.header_bytes().len();
    let blen = r.signature_block_bytes().len();
    let block = encode_signature_block(entries, blen as u32).unwrap();
    let mut out = img.to_vec();
    out[hlen..hlen + blen].copy_from_slice(&block);
    out
}

#[test]
fn zero_signatures() {
    let k = key(1);
    let img = with_signatures(&sample_image(&[&k]), &[]);
    assert!(matches!(refused(&img, &ring(&[&k])), Error::NoSignatures));
}

#[test]
fn unknown_key_only() {
    let (k, other) = (key(1), key(2));
    let e = refused(&sample_image(&[&k]), &ring(&[&other]));
    assert_eq!(
        e.to_string(),
        format!(
            "no signature by a trusted key (image signed by: {})",
            k.key_id()
        )
    );
}

#[test]
fn signature_under_a_trusted_id_by_another_key() {
    let (k, other) = (key(1), key(2));
    let img = sample_image(&[&k]);
    let header = ImageReader::new(&img[..]).unwrap().header_bytes().to_vec();
    // Claims to be k's, but made with another key.
    let forged = SignatureEntry {
        key_id: k.key_id(),
        signature: other.sign(&header),
    };
    let e = refused(&with_signatures(&img, &[forged]), &ring(&[&k]));
    assert!(matches!(e, Error::BadSignature { index: 0, .. }), "{e}");
}

#[test]
fn duplicate_signature_entries() {
    let k = key(1);
    let img = sample_image(&[&k]);
    let entry = ImageReader::new(&img[..]).unwrap().signatures()[0];
    let e = refused(&with_signatures(&img, &[entry, entry]), &ring(&[&k]));
    assert!(matches!(e, Error::DuplicateSignature { .. }), "{e}");
}

#[test]
fn signature_count_raised_into_empty_room() {
    let k = key(1);
    let img = sample_image(&[&k]);
    let hlen = ImageReader::new(&img[..]).unwrap().header_bytes().len();
    let mut bad = img.clone();
    bad[hlen + 12] = 3;
    let e = refused(&bad, &ring(&[&k]));
    assert!(
        matches!(e, Error::EmptySignatureEntry { index: 1, .. }),
        "{e}"
    );
}

#[test]
fn payload_reader_stays_failed() {
    let k = key(1);
    let mut img = sample_image(&[&k]);
    let last = img.len() - 1;
    img[last] ^= 1;
    let mut v = ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring(&[&k]), 1)
        .unwrap();
    let mut boot = v.next_payload().unwrap().unwrap();
    io::copy(&mut boot, &mut io::sink()).unwrap();
    drop(boot);
    let mut root = v.next_payload().unwrap().unwrap();
    let mut buf = vec![0u8; 100_000];
    let mut saw_error = false;
    for _ in 0..10 {
        match root.read(&mut buf) {
            Ok(0) => panic!("EOF on a payload with a bad hash"),
            Ok(_) => {}
            Err(e) => {
                if !saw_error {
                    assert!(matches!(Error::from_io(e), Error::HashMismatch { .. }));
                }
                saw_error = true;
            }
        }
    }
    assert!(saw_error);
}

#[test]
fn unread_or_abandoned_payloads() {
    let k = key(1);
    let keyring = ring(&[&k]);
    let img = sample_image(&[&k]);
    let mut v = ImageReader::new(&img[..])
        .unwrap()
        .verify(&keyring, 1)
        .unwrap();
    let mut boot = v.next_payload().unwrap().unwrap();
    let mut some = [0u8; 10];
    boot.read_exact(&mut some).unwrap();
    drop(boot);
    let e = v.next_payload().err().unwrap();
    assert!(matches!(e, Error::PayloadAbandoned { .. }), "{e}");

    let mut v = ImageReader::new(&img[..])
        .unwrap()
        .verify(&keyring, 1)
        .unwrap();
    v.skip_payload().unwrap();
    let e = v.finish().unwrap_err();
    assert!(
        matches!(e, Error::PayloadNotConsumed { ref role } if role == "ROOT"),
        "{e}"
    );
}
