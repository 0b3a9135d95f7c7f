//! Header field rules, on headers crafted and signed by the test: unknown
//! fields, duplicates, missing fields, sizes that disagree with the data.

use std::io::Read;

use sha2::{Digest, Sha256};

use super::{key, ring, verify_all};
use crate::format::{tag, wrap_header, Records};
use crate::sigblock::{encode_signature_block, signature_block_len, SignatureEntry};
use crate::*;

/// Sign `header` with key 1 and put `payload` bytes behind it.
pub(crate) fn signed(header: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    let k = key(1);
    let entry = SignatureEntry {
        key_id: k.key_id(),
        signature: k.sign(&header),
    };
    let block =
        encode_signature_block(&[entry], signature_block_len(header.len() as u64, 1)).unwrap();
    [header, block, payload.to_vec()].concat()
}

fn top(r: &mut Records) -> &mut Records {
    r.field(tag::COMPATIBLE, b"acme-gw")
        .field(tag::VERSION, b"2.0.0-rc.1")
        .field(tag::ROLLBACK_INDEX, &9u64.to_le_bytes())
        .field(tag::CREATED, &1u64.to_le_bytes())
}

struct Entry<'a> {
    role: &'a str,
    comp: u8,
    raw: u64,
    stored: u64,
    sha: [u8; 32],
    extra: Vec<(u16, Vec<u8>)>,
}

impl<'a> Entry<'a> {
    fn plain(role: &'a str, data: &[u8]) -> Entry<'a> {
        Entry {
            role,
            comp: 0,
            raw: data.len() as u64,
            stored: data.len() as u64,
            sha: Sha256::digest(data).into(),
            extra: Vec::new(),
        }
    }

    fn records(&self) -> Vec<u8> {
        let mut r = Records::default();
        r.field(tag::payload::ROLE, self.role.as_bytes())
            .field(tag::payload::COMPRESSION, &[self.comp])
            .field(tag::payload::RAW_SIZE, &self.raw.to_le_bytes())
            .field(tag::payload::STORED_SIZE, &self.stored.to_le_bytes())
            .field(tag::payload::SHA256, &self.sha);
        for (t, v) in &self.extra {
            r.field(*t, v);
        }
        r.0
    }
}

fn image(entries: &[Entry<'_>], extra: &[(u16, &[u8])], data: &[u8]) -> Vec<u8> {
    let mut r = Records::default();
    top(&mut r);
    for (t, v) in extra {
        r.field(*t, v);
    }
    for e in entries {
        r.field(tag::PAYLOAD, &e.records());
    }
    signed(wrap_header(&r.0, FORMAT_VERSION, 0), data)
}

fn check(img: &[u8]) -> Result<Vec<Vec<u8>>> {
    verify_all(img, &ring(&[&key(1)]))
}

#[test]
fn crafted_header_is_accepted() {
    let data = b"hello root".to_vec();
    let out = check(&image(&[Entry::plain("ROOT", &data)], &[], &data)).unwrap();
    assert_eq!(out, vec![data]);
}

#[test]
fn unknown_optional_fields_are_ignored() {
    let data = b"payload".to_vec();
    let mut entry = Entry::plain("ROOT", &data);
    entry
        .extra
        .push((0x0042, b"chunk index, some day".to_vec()));
    let img = image(&[entry], &[(0x0123, b"note")], &data);
    assert_eq!(check(&img).unwrap(), vec![data]);
    let v = ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring(&[&key(1)]), 1)
        .unwrap();
    assert_eq!(v.header().ignored_fields().len(), 1);
    assert_eq!(v.header().ignored_fields()[0].0, 0x0123);
}

#[test]
fn unknown_critical_fields_are_refused() {
    let data = b"payload".to_vec();
    let e = check(&image(
        &[Entry::plain("ROOT", &data)],
        &[(0x8123, b"x")],
        &data,
    ))
    .unwrap_err();
    assert!(
        matches!(e, Error::UnknownCriticalField { tag: 0x8123, .. }),
        "{e}"
    );
    let mut entry = Entry::plain("ROOT", &data);
    entry.extra.push((0x8042, Vec::new()));
    let e = check(&image(&[entry], &[], &data)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnknownCriticalField {
                tag: 0x8042,
                container: "payload entry",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("unknown critical field 0x8042 at byte "),
        "{e}"
    );
}

#[test]
fn duplicate_roles_are_refused() {
    let data = b"ab".to_vec();
    let e = check(&image(
        &[
            Entry::plain("ROOT", &data[..1]),
            Entry::plain("ROOT", &data[1..]),
        ],
        &[],
        &data,
    ))
    .unwrap_err();
    assert_eq!(e.to_string(), "duplicate payload role ROOT");
}

#[test]
fn duplicate_and_missing_fields_are_refused() {
    let data = b"x".to_vec();
    let e = check(&image(
        &[Entry::plain("ROOT", &data)],
        &[(tag::ROLLBACK_INDEX, &[0; 8])],
        &data,
    ))
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::DuplicateField {
                field: "rollback_index",
                ..
            }
        ),
        "{e}"
    );

    let mut r = Records::default();
    r.field(tag::COMPATIBLE, b"acme")
        .field(tag::VERSION, b"1.0.0")
        .field(tag::CREATED, &0u64.to_le_bytes())
        .field(tag::PAYLOAD, &Entry::plain("ROOT", &data).records());
    let e = check(&signed(wrap_header(&r.0, FORMAT_VERSION, 0), &data)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "missing field `rollback_index` in the header"
    );

    let mut r = Records::default();
    top(&mut r);
    let e = check(&signed(wrap_header(&r.0, FORMAT_VERSION, 0), b"")).unwrap_err();
    assert!(matches!(e, Error::NoPayloads), "{e}");
}

#[test]
fn malformed_values_are_refused() {
    let data = b"x".to_vec();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            {
                let mut r = Records::default();
                r.field(tag::COMPATIBLE, b"acme")
                    .field(tag::VERSION, b"one point two")
                    .field(tag::ROLLBACK_INDEX, &0u64.to_le_bytes())
                    .field(tag::CREATED, &0u64.to_le_bytes());
                r.0
            },
            "version",
        ),
        (
            {
                let mut r = Records::default();
                r.field(tag::COMPATIBLE, b"acme")
                    .field(tag::VERSION, b"1.0.0")
                    .field(tag::ROLLBACK_INDEX, &[1, 2, 3])
                    .field(tag::CREATED, &0u64.to_le_bytes());
                r.0
            },
            "rollback_index",
        ),
    ];
    for (mut records, field) in cases {
        let mut p = Records::default();
        p.field(tag::PAYLOAD, &Entry::plain("ROOT", &data).records());
        records.extend_from_slice(&p.0);
        let e = check(&signed(wrap_header(&records, FORMAT_VERSION, 0), &data)).unwrap_err();
        assert!(
            matches!(e, Error::BadField { field: f, .. } if f == field),
            "{e}"
        );
    }
    let mut bad_role = Entry::plain("ROOT-A", &data);
    bad_role.role = "ROOT-A";
    let e = check(&image(&[bad_role], &[], &data)).unwrap_err();
    assert!(matches!(e, Error::BadField { field: "role", .. }), "{e}");
    let mut bad_comp = Entry::plain("ROOT", &data);
    bad_comp.comp = 7;
    let e = check(&image(&[bad_comp], &[], &data)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadField {
                field: "compression",
                ..
            }
        ),
        "{e}"
    );

    // A record whose length runs past the header.
    let mut r = Records::default();
    top(&mut r);
    let mut records = r.0;
    records.extend_from_slice(&tag::PAYLOAD.to_le_bytes());
    records.extend_from_slice(&1000u32.to_le_bytes());
    let e = check(&signed(wrap_header(&records, FORMAT_VERSION, 0), &data)).unwrap_err();
    assert!(matches!(e, Error::FieldOverrun { .. }), "{e}");

    let mut r = Records::default();
    top(&mut r).field(tag::PAYLOAD, &Entry::plain("ROOT", &data).records());
    let e = check(&signed(wrap_header(&r.0, 2, 0), &data)).unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedFormatVersion { found: 2, .. }),
        "{e}"
    );
    let e = check(&signed(wrap_header(&r.0, FORMAT_VERSION, 1), &data)).unwrap_err();
    assert!(matches!(e, Error::HeaderFlags { flags: 1 }), "{e}");
}

#[test]
fn declared_sizes_that_disagree_with_the_data() {
    let data = b"0123456789".to_vec();
    // Uncompressed, raw != stored.
    let mut e1 = Entry::plain("ROOT", &data);
    e1.stored = 9;
    let e = check(&image(&[e1], &[], &data)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::SizeDisagreement {
                raw: 10,
                stored: 9,
                ..
            }
        ),
        "{e}"
    );

    // Declared larger than the data in the stream: truncated.
    let mut e2 = Entry::plain("ROOT", &data);
    e2.raw = 11;
    e2.stored = 11;
    let e = check(&image(&[e2], &[], &data)).unwrap_err();
    assert!(matches!(e, Error::PayloadTruncated { .. }), "{e}");

    // Declared smaller: the rest is trailing data.
    let mut e3 = Entry::plain("ROOT", &data[..9]);
    e3.sha = Sha256::digest(&data[..9]).into();
    let e = check(&image(&[e3], &[], &data)).unwrap_err();
    assert!(matches!(e, Error::TrailingData { .. }), "{e}");

    // zstd: raw size declared wrong, either way.
    let z = zstd::encode_all(&data[..], 3).unwrap();
    for raw in [9u64, 11] {
        let e4 = Entry {
            role: "ROOT",
            comp: 1,
            raw,
            stored: z.len() as u64,
            sha: Sha256::digest(&data).into(),
            extra: vec![],
        };
        let e = check(&image(&[e4], &[], &z)).unwrap_err();
        assert!(matches!(e, Error::RawSizeMismatch { .. }), "raw {raw}: {e}");
    }
    // zstd: stored size declared larger than the frame (junk follows it).
    let mut zj = z.clone();
    zj.extend_from_slice(&[0u8; 4]);
    let e5 = Entry {
        role: "ROOT",
        comp: 1,
        raw: 10,
        stored: zj.len() as u64,
        sha: Sha256::digest(&data).into(),
        extra: vec![],
    };
    let e = check(&image(&[e5], &[], &zj)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::CorruptPayload { .. } | Error::StoredSizeMismatch { .. }
        ),
        "{e}"
    );
}

#[test]
fn zstd_window_over_the_cap_is_refused() {
    // A frame that declares a 128 MiB window: the decoder must refuse it
    // rather than allocate it.
    let data = vec![7u8; 1 << 16];
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_contentsize(false).unwrap();
    enc.set_parameter(zstd::zstd_safe::CParameter::WindowLog(27))
        .unwrap();
    std::io::Write::write_all(&mut enc, &data).unwrap();
    let z = enc.finish().unwrap();
    let e = Entry {
        role: "ROOT",
        comp: 1,
        raw: data.len() as u64,
        stored: z.len() as u64,
        sha: Sha256::digest(&data).into(),
        extra: vec![],
    };
    let img = image(&[e], &[], &z);
    let mut v = ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring(&[&key(1)]), 1)
        .unwrap();
    let mut p = v.next_payload().unwrap().unwrap();
    let err = Error::from_io(p.read_to_end(&mut Vec::new()).unwrap_err());
    assert!(matches!(err, Error::CorruptPayload { .. }), "{err}");
    assert!(err.to_string().contains("too much memory"), "{err}");
}

/// `stored_sha256` (0x0007): checked against the stored bytes by every
/// reader that knows it; a wrong one is refused even though the raw bytes
/// match; twice is refused; a short one is malformed.
#[test]
fn stored_sha256_is_checked() {
    let data = vec![5u8; 70_000];
    let z = zstd::encode_all(&data[..], 3).unwrap();
    let entry = |stored_sha: &[u8]| Entry {
        role: "ROOT",
        comp: 1,
        raw: data.len() as u64,
        stored: z.len() as u64,
        sha: Sha256::digest(&data).into(),
        extra: vec![(tag::payload::STORED_SHA256, stored_sha.to_vec())],
    };
    let good: [u8; 32] = Sha256::digest(&z).into();
    let img = image(&[entry(&good)], &[], &z);
    assert_eq!(check(&img).unwrap(), vec![data.clone()]);
    let v = ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring(&[&key(1)]), 1)
        .unwrap();
    assert_eq!(v.header().payloads()[0].stored_sha256, Some(good));

    let mut bad = good;
    bad[31] ^= 1;
    let e = check(&image(&[entry(&bad)], &[], &z)).unwrap_err();
    assert!(matches!(e, Error::StoredHashMismatch { .. }), "{e}");

    let mut twice = entry(&good);
    twice
        .extra
        .push((tag::payload::STORED_SHA256, good.to_vec()));
    assert!(check(&image(&[twice], &[], &z)).is_err());
    let e = check(&image(&[entry(&good[..31])], &[], &z)).unwrap_err();
    assert!(e.to_string().contains("stored_sha256"), "{e}");
}

/// `pack` writes `stored_sha256` for zstd payloads only, equal to the
/// SHA-256 of the payload's stored bytes in the image.
#[test]
fn pack_writes_stored_sha256_for_zstd() {
    for comp in [Compression::Zstd, Compression::None] {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let spec = PackSpec::new("acme-gw", semver::Version::new(1, 0, 0), 1, 1);
        let part = PackPart {
            role: "ROOT".into(),
            compression: comp,
            source: Box::new(&data[..]),
            size_hint: Some(data.len() as u64),
            verity: None,
        };
        let mut out = std::io::Cursor::new(Vec::new());
        let infos = pack(&mut out, &spec, vec![part], &[&key(1)]).unwrap();
        let img = out.into_inner();
        let p = &infos[0];
        let stored = &img[p.offset as usize..(p.offset + p.stored_size) as usize];
        match comp {
            Compression::Zstd => {
                let want: [u8; 32] = Sha256::digest(stored).into();
                assert_eq!(p.stored_sha256, Some(want));
            }
            _ => assert_eq!(p.stored_sha256, None),
        }
        let v = ImageReader::new(&img[..])
            .unwrap()
            .verify(&ring(&[&key(1)]), 1)
            .unwrap();
        assert_eq!(v.header().payloads()[0].stored_sha256, p.stored_sha256);
        assert_eq!(check(&img).unwrap(), vec![data]);
    }
}
