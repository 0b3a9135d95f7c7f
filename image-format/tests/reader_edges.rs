//! `ImageReader` before verification: each signature's status against a
//! keyring (docs/image-format.md: a signature by a trusted key must verify
//! over the header bytes; others are by unknown keys), and reading the
//! header from a source that ends early or fails.

use std::io::{self, Cursor, Read};

use image_format::*;

/// An image signed by `signers`, compatible "acme".
fn signed_by(signers: &[&SigningKey]) -> Vec<u8> {
    let spec = PackSpec::new("acme", semver::Version::new(1, 0, 0), 1, 0);
    let parts = vec![PackPart {
        role: "ROOT".into(),
        compression: Compression::None,
        source: Box::new(&b"data"[..]),
        size_hint: None,
        verity: None,
    }];
    let mut out = Cursor::new(Vec::new());
    pack(&mut out, &spec, parts, signers).unwrap();
    out.into_inner()
}

#[test]
fn signature_status_valid_unknown_and_invalid() {
    let (a, b) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let mut ring = Keyring::new();
    ring.add(a.public_key().clone());
    let mut img = signed_by(&[&a, &b]);
    let status = |img: &[u8]| {
        let r = ImageReader::new(img).unwrap();
        let mut s: Vec<(KeyId, SignatureStatus)> = r
            .signature_status(&ring)
            .into_iter()
            .map(|(e, s)| (e.key_id, s))
            .collect();
        s.sort_by_key(|(id, _)| (*id != a.public_key().key_id()) as u8);
        s
    };
    let (ida, idb) = (a.public_key().key_id(), b.public_key().key_id());
    assert_eq!(
        status(&img),
        [
            (ida, SignatureStatus::Valid),
            (idb, SignatureStatus::UnknownKey)
        ]
    );
    // One header byte changed ("acme" -> "acmf"): a's signature no longer
    // verifies; b's key is still unknown.
    let at = img.windows(4).position(|w| w == b"acme").unwrap();
    img[at + 3] = b'f';
    assert_eq!(
        status(&img),
        [
            (ida, SignatureStatus::Invalid),
            (idb, SignatureStatus::UnknownKey)
        ]
    );
}

/// Serves `data` in one read per call; the first read fails with `first`.
struct FailsFirst {
    data: Cursor<Vec<u8>>,
    first: Option<io::ErrorKind>,
}

impl Read for FailsFirst {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(kind) = self.first.take() {
            return Err(io::Error::new(kind, "boom"));
        }
        self.data.read(buf)
    }
}

#[test]
fn header_read_errors_and_early_ends() {
    let key = SigningKey::generate().unwrap();
    let img = signed_by(&[&key]);
    let src = |data: &[u8], first| FailsFirst {
        data: Cursor::new(data.to_vec()),
        first,
    };
    // An interrupted first read is retried.
    assert!(ImageReader::new(src(&img, Some(io::ErrorKind::Interrupted))).is_ok());
    // Any other error is reported, not retried.
    let e = ImageReader::new(src(&img, Some(io::ErrorKind::ConnectionReset)))
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "reading the image: boom");
    // The image ends at byte 50, inside its header: the header's variable
    // part is read from byte 16, and 34 bytes of it arrive.
    let e = ImageReader::new(src(&img[..50], None)).err().unwrap();
    assert_eq!(
        e.to_string(),
        "image truncated: header ends early (at byte 50)"
    );
}
