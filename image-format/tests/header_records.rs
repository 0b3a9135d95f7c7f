//! The header's field records, built here byte by byte from
//! docs/image-format.md (not by `pack`), and the refusals the parser gives
//! for them with the byte offsets the document's layout implies: the fixed
//! part is magic(8) + header_len u32 + format_version u16 + flags u16, then
//! records of tag u16 + len u32 + value, with tags 0x8001 compatible,
//! 0x8002 version, 0x8003 rollback_index, 0x8004 created, 0x8005 payload
//! (itself records: 0x8001 role, 0x8002 compression, 0x8003 raw_size,
//! 0x8004 stored_size, 0x8005 sha256).

use std::io::Read;

use image_format::*;

/// SHA-256("abc"), FIPS 180-2 appendix B.1.
const SHA_ABC: [u8; 32] = [
    0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
    0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
];

fn rec(tag: u16, value: &[u8]) -> Vec<u8> {
    let mut r = tag.to_le_bytes().to_vec();
    r.extend_from_slice(&(value.len() as u32).to_le_bytes());
    r.extend_from_slice(value);
    r
}

/// A payload entry for 3 uncompressed bytes "abc".
fn payload(role: &str) -> Vec<u8> {
    let mut p = rec(0x8001, role.as_bytes());
    p.extend(rec(0x8002, &[0]));
    p.extend(rec(0x8003, &3u64.to_le_bytes()));
    p.extend(rec(0x8004, &3u64.to_le_bytes()));
    p.extend(rec(0x8005, &SHA_ABC));
    rec(0x8005, &p)
}

/// The usual four header fields, with `compatible` as given.
fn fields(compatible: &[u8]) -> Vec<u8> {
    let mut r = rec(0x8001, compatible);
    r.extend(rec(0x8002, b"1.0.0"));
    r.extend(rec(0x8003, &1u64.to_le_bytes()));
    r.extend(rec(0x8004, &0u64.to_le_bytes()));
    r
}

/// Header (fixed part + `records`), an empty signature block, then `data`.
fn image(records: &[u8], data: &[u8]) -> Vec<u8> {
    let mut img = b"SLOTIMG\0".to_vec();
    img.extend_from_slice(&(16 + records.len() as u32).to_le_bytes());
    img.extend_from_slice(&1u16.to_le_bytes());
    img.extend_from_slice(&0u16.to_le_bytes());
    img.extend_from_slice(records);
    img.extend_from_slice(b"SLOTSIG\0");
    img.extend_from_slice(&16u32.to_le_bytes());
    img.extend_from_slice(&[0; 4]);
    img.extend_from_slice(data);
    img
}

fn parse(img: &[u8]) -> Result<UntrustedImage<&[u8]>> {
    ImageReader::new(img)?.into_untrusted()
}

fn refusal(img: &[u8]) -> String {
    match parse(img) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_builder_makes_an_image_the_parser_accepts() {
    let mut records = fields(b"acme");
    records.extend(payload("ROOT"));
    let img = image(&records, b"abc");
    let mut u = parse(&img).unwrap();
    assert_eq!(u.header().compatible(), "acme");
    assert_eq!(u.header().payloads()[0].role, "ROOT");
    let mut raw = Vec::new();
    u.next_payload()
        .unwrap()
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(raw, b"abc");
    u.finish().unwrap();
}

/// A header of only its 16-byte fixed part is well framed but declares no
/// payload.
#[test]
fn a_header_of_only_the_fixed_part() {
    assert_eq!(refusal(&image(&[], &[])), "image has no payloads");
}

/// 64 payload records are the limit; the 65th is refused and counted.
#[test]
fn a_sixty_fifth_payload_record() {
    let mut records = fields(b"acme");
    for i in 0..64 {
        records.extend(payload(&format!("R{i}")));
    }
    let data = b"abc".repeat(64);
    assert_eq!(
        parse(&image(&records, &data))
            .unwrap()
            .header()
            .payloads()
            .len(),
        64
    );
    records.extend(payload("R64"));
    let data = b"abc".repeat(65);
    assert_eq!(
        refusal(&image(&records, &data)),
        "65 payloads exceed the limit of 64"
    );
}

/// Offsets in the messages: records start at byte 16, a value 6 bytes
/// after its record.
#[test]
fn record_offsets_in_refusals() {
    // compatible "acme" fills bytes 16..26; 3 stray bytes follow.
    let mut records = rec(0x8001, b"acme");
    records.extend_from_slice(&[1, 2, 3]);
    assert_eq!(
        refusal(&image(&records, &[])),
        "header field at byte 26 runs past the end of header"
    );
    // A record whose length runs past the header: reported at its start.
    let mut records = fields(b"acme");
    let at = 16 + records.len();
    records.extend(rec(0x8005, &[0; 4]));
    records.truncate(records.len() - 1);
    assert_eq!(
        refusal(&image(&records, &[])),
        format!("header field at byte {at} runs past the end of header")
    );
    // rollback_index of 7 bytes: record at 16, value at 22.
    let records = rec(0x8003, &[0; 7]);
    assert_eq!(
        refusal(&image(&records, &[])),
        "field `rollback_index` at byte 22: 7 bytes, expected 8"
    );
    // Inside a payload entry: the entry's value starts at 16 + 6; its role
    // record's value 6 bytes later, at 28.
    let records = rec(0x8005, &rec(0x8001, b"RO-OT"));
    assert_eq!(
        refusal(&image(&records, &[])),
        "field `role` at byte 28: not [A-Za-z0-9_]"
    );
}

/// `compatible` is 1..=255 bytes: the length is refused before the
/// characters are looked at.
#[test]
fn compatible_length_edges() {
    let with = |c: &[u8]| {
        let mut r = fields(c);
        r.extend(payload("ROOT"));
        image(&r, b"abc")
    };
    let c255 = "c".repeat(255);
    assert_eq!(
        parse(&with(c255.as_bytes())).unwrap().header().compatible(),
        c255
    );
    assert_eq!(
        refusal(&with(b"")),
        "field `compatible` at byte 22: 0 bytes, expected 1..=255"
    );
    assert_eq!(
        refusal(&with("c".repeat(256).as_bytes())),
        "field `compatible` at byte 22: 256 bytes, expected 1..=255"
    );
    assert_eq!(
        refusal(&with(b"acme gw")),
        "field `compatible` at byte 22: not printable ASCII"
    );
}

/// Skipping walks the payloads in order, then reports the end.
#[test]
fn skipping_payloads_in_order() {
    let mut records = fields(b"acme");
    for role in ["BOOT", "ROOT", "DATA"] {
        records.extend(payload(role));
    }
    let img = image(&records, &b"abc".repeat(3));
    let mut u = parse(&img).unwrap();
    let roles: Vec<String> = std::iter::from_fn(|| u.skip_payload().unwrap())
        .map(|p| p.role)
        .collect();
    assert_eq!(roles, ["BOOT", "ROOT", "DATA"]);
    u.finish().unwrap();
    // Skip one, then read the next: it is the second payload's bytes.
    // (the first payload's bytes are not "abc": skipping does not hash)
    let img = image(&records, b"xyzabcabc");
    let mut u = parse(&img).unwrap();
    assert_eq!(u.skip_payload().unwrap().unwrap().role, "BOOT");
    let mut r = u.next_payload().unwrap().unwrap();
    assert_eq!(r.info().role, "ROOT");
    let mut raw = Vec::new();
    r.read_to_end(&mut raw).unwrap();
    assert_eq!(raw, b"abc");
}

/// The largest header `pack` can write: compatible and version of 255
/// bytes, 64 payloads with 32-byte role names. By the layout above that is
/// 16 + (6+255) + (6+255) + (6+8) + (6+8) + 64 × (6 + (6+32) + (6+1) +
/// (6+8) + (6+8) + (6+32)) = 8,054 bytes, a quarter of the 32 KiB limit,
/// which `pack` can therefore never reach.
#[test]
fn the_largest_header_pack_writes() {
    let key = SigningKey::generate().unwrap();
    let version = format!("1.0.0-{}", "a".repeat(249));
    let spec = PackSpec::new(
        &"c".repeat(255),
        semver::Version::parse(&version).unwrap(),
        u64::MAX,
        u64::MAX,
    );
    let parts = (0..64)
        .map(|i| PackPart {
            role: format!("R{i:031}"),
            compression: Compression::None,
            source: Box::new(&b"x"[..]),
            size_hint: None,
            verity: None,
        })
        .collect();
    let mut out = std::io::Cursor::new(Vec::new());
    pack(&mut out, &spec, parts, &[&key]).unwrap();
    let img = out.into_inner();
    let r = ImageReader::new(&img[..]).unwrap();
    assert_eq!(r.header_bytes().len(), 8054);
    assert_eq!(&img[8..12], &8054u32.to_le_bytes());
}

/// A read into an empty buffer in the middle of a payload returns 0 and
/// changes nothing: the rest still reads and verifies.
#[test]
fn an_empty_read_mid_payload_changes_nothing() {
    let mut records = fields(b"acme");
    records.extend(payload("ROOT"));
    let img = image(&records, b"abc");
    let mut u = parse(&img).unwrap();
    let mut r = u.next_payload().unwrap().unwrap();
    let mut one = [0u8; 1];
    assert_eq!(r.read(&mut one).unwrap(), 1);
    assert_eq!(r.read(&mut []).unwrap(), 0);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert_eq!((one[0], &rest[..]), (b'a', &b"bc"[..]));
    assert_eq!(r.read(&mut []).unwrap(), 0);
    assert_eq!(r.read(&mut one).unwrap(), 0);
    u.finish().unwrap();
}

/// Copying a payload from an image that ends inside it: the copy stops with
/// the truncation, at the byte where the data ran out (the payload starts
/// after the 16-byte empty signature block).
#[test]
fn copying_a_truncated_payload_reports_where_it_ends() {
    let mut records = fields(b"acme");
    records.extend(payload("ROOT"));
    let img = image(&records, b"ab");
    let end = img.len();
    let mut u = parse(&img).unwrap();
    let mut out = Vec::new();
    let e = u.copy_next_payload(&mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("image truncated: payload ROOT ends early (at byte {end})")
    );
}
