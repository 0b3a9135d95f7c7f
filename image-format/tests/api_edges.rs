//! image-format's small public pieces against docs/image-format.md and
//! FIPS 180-2: the size limits, role names at their edges, compression
//! names and codes, which errors count as refusals (exit 3) and how an
//! error travels inside an `io::Error`, the SHA-256 hex of a known payload.

use std::io::{self, Cursor, Read};

use image_format::*;

#[test]
fn limits_are_the_documented_ones() {
    // "A header plus signature block is thus at most 48 KiB".
    assert_eq!(MAX_HEADER_LEN, 32 * 1024);
    assert_eq!(MAX_SIGNATURE_BLOCK_LEN, 16 * 1024);
    assert_eq!(MAX_RECORD_LEN, 48 * 1024);
    assert_eq!(HEADER_FIXED_LEN, 16);
    assert_eq!(SIGNATURE_ENTRY_LEN, 72);
    assert_eq!(MAX_ROLE_LEN, 32);
}

#[test]
fn role_names() {
    for ok in ["ROOT", "a", "boot_2", &"R".repeat(32)] {
        assert!(valid_role(ok), "{ok:?}");
    }
    for bad in ["", &"R".repeat(33), "ROOT-A", "röot", "a b", "x.y"] {
        assert!(!valid_role(bad), "{bad:?}");
    }
}

#[test]
fn compression_names_and_codes() {
    assert_eq!(Compression::None.code(), 0);
    assert_eq!(Compression::Zstd.code(), 1);
    assert_eq!(Compression::None.name(), "none");
    assert_eq!(Compression::Zstd.name(), "zstd");
    assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
    assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd);
    assert_eq!(Compression::Chunked.code(), 2);
    assert_eq!(Compression::Chunked.name(), "chunked");
    assert_eq!(
        "chunked".parse::<Compression>().unwrap(),
        Compression::Chunked
    );
    let e = "gzip".parse::<Compression>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown compression `gzip` (expected none, zstd or chunked)"
    );
    assert!(!e.is_refusal(), "bad usage is not a refusal");
}

#[test]
fn refusals_and_io_errors() {
    let io_err = Error::io(
        "reading the image",
        io::Error::from(io::ErrorKind::NotFound),
    );
    assert!(!io_err.is_refusal());
    assert!(!Error::ZeroThreshold.is_refusal());
    assert!(!Error::EmptyKeyring.is_refusal());
    assert!(Error::BadMagic.is_refusal());
    assert!(Error::NoSignatures.is_refusal());
    assert!(Error::ThresholdNotMet {
        valid: 0,
        threshold: 1
    }
    .is_refusal());

    // Through io::Error and back: the kind says what it was, and the image
    // error comes back out unchanged.
    let kinds = [
        (io_err, io::ErrorKind::NotFound),
        (
            Error::Truncated {
                what: "header",
                offset: 9,
            },
            io::ErrorKind::UnexpectedEof,
        ),
        (Error::BadMagic, io::ErrorKind::InvalidData),
    ];
    for (e, kind) in kinds {
        let text = e.to_string();
        let wrapped = io::Error::from(e);
        assert_eq!(wrapped.kind(), kind, "{text}");
        let back = Error::from_io(wrapped);
        assert_eq!(back.to_string(), text);
        let again = Error::io("ctx", io::Error::from(back));
        assert_eq!(
            again.to_string(),
            text.replacen("reading the image", "ctx", 1)
        );
    }
    // A plain I/O error keeps its kind and message.
    let e = Error::from_io(io::Error::new(io::ErrorKind::BrokenPipe, "pipe gone"));
    assert_eq!(e.to_string(), "read: pipe gone");
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::BrokenPipe);
}

/// SHA-256("abc") from FIPS 180-2, appendix B.1, as the header shows it.
#[test]
fn payload_sha256_hex() {
    let key = SigningKey::generate().unwrap();
    let mut ring = Keyring::new();
    ring.add(key.public_key().clone());
    let mut image = Cursor::new(Vec::new());
    let spec = PackSpec::new("acme-gw", semver::Version::new(1, 0, 0), 1, 1_700_000_000);
    let parts = vec![PackPart {
        role: "ROOT".into(),
        compression: Compression::None,
        source: Box::new(&b"abc"[..]),
        size_hint: None,
        verity: None,
    }];
    pack(&mut image, &spec, parts, &[&key]).unwrap();
    let mut v = ImageReader::new(&image.get_ref()[..])
        .unwrap()
        .verify(&ring, 1)
        .unwrap();
    let p = &v.header().payloads()[0];
    assert_eq!(
        p.sha256_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!((p.raw_size, p.stored_size), (3, 3));
    let mut r = v.next_payload().unwrap().unwrap();
    let mut raw = Vec::new();
    r.read_to_end(&mut raw).unwrap();
    assert_eq!(raw, b"abc");
}

fn try_pack(compatible: &str, version: &str, roles: &[String]) -> Result<Vec<u8>> {
    let key = SigningKey::generate().unwrap();
    let spec = PackSpec::new(
        compatible,
        semver::Version::parse(version).unwrap(),
        1,
        1_700_000_000,
    );
    let parts = roles
        .iter()
        .map(|r| PackPart {
            role: r.clone(),
            compression: Compression::None,
            source: Box::new(&b"x"[..]),
            size_hint: None,
            verity: None,
        })
        .collect();
    let mut out = Cursor::new(Vec::new());
    pack(&mut out, &spec, parts, &[&key]).map(|_| out.into_inner())
}

/// What `pack` refuses to put in a header, at the edge of each limit:
/// compatible 1..=255 printable ASCII, version string up to 255 bytes,
/// 1..=64 payloads with valid role names.
#[test]
fn pack_refuses_headers_past_the_limits() {
    let one = ["ROOT".to_string()];
    try_pack(&"c".repeat(255), "1.0.0", &one).unwrap();
    for bad in [
        String::new(),
        "c".repeat(256),
        "acme gw".into(),
        "acmé".into(),
    ] {
        let e = try_pack(&bad, "1.0.0", &one).unwrap_err();
        assert!(
            e.to_string().contains("must be 1..=255 printable ASCII"),
            "{bad:?}: {e}"
        );
    }
    // "1.0.0-" and a pre-release identifier: 255 bytes pass, 256 do not.
    let v255 = format!("1.0.0-{}", "a".repeat(249));
    try_pack("acme", &v255, &one).unwrap();
    let v256 = format!("1.0.0-{}", "a".repeat(250));
    let e = try_pack("acme", &v256, &one).unwrap_err();
    assert_eq!(e.to_string(), "version string too long");

    let roles = |n: usize| (0..n).map(|i| format!("R{i}")).collect::<Vec<_>>();
    let img = try_pack("acme", "1.0.0", &roles(64)).unwrap();
    let untrusted = ImageReader::new(&img[..])
        .unwrap()
        .into_untrusted()
        .unwrap();
    assert_eq!(untrusted.header().payloads().len(), 64);
    let e = try_pack("acme", "1.0.0", &roles(65)).unwrap_err();
    assert_eq!(e.to_string(), "65 payloads exceed the limit of 64");
    let e = try_pack("acme", "1.0.0", &[]).unwrap_err();
    assert_eq!(e.to_string(), "image has no payloads");
    let e = try_pack("acme", "1.0.0", &["ROOT-A".into()]).unwrap_err();
    assert!(
        e.to_string().contains("role `ROOT-A` must be 1..=32"),
        "{e}"
    );
}

/// A zstd payload is declared with code 1 and read back as zstd.
#[test]
fn zstd_payload_round_trip() {
    let key = SigningKey::generate().unwrap();
    let mut ring = Keyring::new();
    ring.add(key.public_key().clone());
    let data = vec![7u8; 100_000];
    let spec = PackSpec::new("acme", semver::Version::new(2, 0, 0), 3, 0);
    let parts = vec![PackPart {
        role: "ROOT".into(),
        compression: Compression::Zstd,
        source: Box::new(&data[..]),
        size_hint: None,
        verity: None,
    }];
    let mut out = Cursor::new(Vec::new());
    pack(&mut out, &spec, parts, &[&key]).unwrap();
    let img = out.into_inner();
    let mut v = ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring, 1)
        .unwrap();
    let p = v.header().payloads()[0].clone();
    assert_eq!(p.compression, Compression::Zstd);
    assert_eq!(p.raw_size, 100_000);
    assert!(p.stored_size < 1000, "{}", p.stored_size);
    let mut raw = Vec::new();
    v.next_payload()
        .unwrap()
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(raw, data);
}

/// PayloadHasher counts and hashes what it is fed, in any pieces.
#[test]
fn payload_hasher_counts_and_hashes() {
    let mut h = PayloadHasher::new();
    assert!(h.is_empty());
    assert_eq!(h.len(), 0);
    h.update(b"");
    assert!(h.is_empty());
    h.update(b"ab");
    h.update(b"c");
    assert!(!h.is_empty());
    assert_eq!(h.len(), 3);
    // SHA-256("abc"), FIPS 180-2 appendix B.1.
    let hex: String = h.digest().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
