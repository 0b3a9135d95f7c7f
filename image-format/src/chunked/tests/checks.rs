//! Every check of the header field, of the table and of a block frame
//! refuses what it is there to refuse.

use sha2::{Digest, Sha256};

use super::*;
use crate::chunked::table::one_frame;
use crate::chunked::{decode_block, CHUNK_INFO_LEN};
use crate::format::{parse_payload, tag, Records};
use crate::Error;

fn field_err(c: &ChunkInfo, raw_size: u64, stored_size: u64) -> String {
    ChunkInfo::decode(&c.encode(), 100)
        .and_then(|c| c.check(raw_size, stored_size, 100))
        .unwrap_err()
        .to_string()
}

type Change = Box<dyn Fn(&mut ChunkInfo)>;

fn good() -> ChunkInfo {
    ChunkInfo {
        block_size: 4096,
        group_blocks: 16,
        block_count: 3,
        dict_len: 0,
        table_stored_len: 30,
        table_raw_len: 12 + 12 + 32,
        table_sha256: [7; 32],
    }
}

#[test]
fn header_field_checks() {
    let raw = 3 * 4096 - 5;
    let ok = ChunkInfo::decode(&good().encode(), 0).unwrap();
    ok.check(raw, 1000, 0).unwrap();
    assert_eq!(ok, good(), "encode and decode agree");
    let e = ChunkInfo::decode(&good().encode()[..CHUNK_INFO_LEN - 1], 9).unwrap_err();
    assert!(e.to_string().contains("63 bytes, expected 64"), "{e}");

    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|c| c.block_size = 3000), "not a power of two"),
        (Box::new(|c| c.block_size = 2048), "not a power of two"),
        (Box::new(|c| c.block_size = 2 << 20), "not a power of two"),
        (Box::new(|c| c.group_blocks = 0), "outside 1..=256"),
        (Box::new(|c| c.group_blocks = 257), "outside 1..=256"),
        (
            Box::new(|c| c.block_count = (1 << 20) + 1),
            "exceed the limit",
        ),
        (
            Box::new(|c| c.dict_len = (1 << 20) + 1),
            "exceeds the limit",
        ),
        (
            Box::new(|c| c.table_raw_len = (64 << 20) + 1),
            "exceeds the limit",
        ),
        (Box::new(|c| c.table_raw_len = 11), "cannot hold"),
        (
            Box::new(|c| c.table_stored_len = 0),
            "table frame of 0 bytes",
        ),
        (Box::new(|c| c.table_stored_len = 100_000), "zstd bound"),
        (Box::new(|c| c.block_count = 4), "makes 3"),
        (
            Box::new(|c| {
                c.table_raw_len = 2000;
                c.table_stored_len = 1001
            }),
            "exceeds the stored size",
        ),
    ];
    for (change, want) in cases {
        let mut c = good();
        change(&mut c);
        let e = field_err(&c, raw, 1000);
        assert!(
            e.contains("field `chunked`") && e.contains(want),
            "{e} (want {want})"
        );
    }
}

fn entry(compression: u8, chunked: &[&[u8]]) -> Vec<u8> {
    let mut r = Records::default();
    r.field(tag::payload::ROLE, b"ROOT")
        .field(tag::payload::COMPRESSION, &[compression])
        .field(tag::payload::RAW_SIZE, &(3u64 * 4096 - 5).to_le_bytes())
        .field(tag::payload::STORED_SIZE, &1000u64.to_le_bytes())
        .field(tag::payload::SHA256, &[1; 32]);
    for c in chunked {
        r.field(tag::payload::CHUNKED, c);
    }
    r.0
}

#[test]
fn the_field_is_required_iff_chunked() {
    let f = good().encode();
    let p = parse_payload(&entry(2, &[&f]), 0).unwrap();
    assert_eq!(p.compression, Compression::Chunked);
    assert_eq!(p.chunked, Some(good()));
    let e = parse_payload(&entry(2, &[]), 0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::MissingField {
                field: "chunked",
                ..
            }
        ),
        "{e}"
    );
    for other in [0u8, 1] {
        let e = parse_payload(&entry(other, &[&f]), 0).unwrap_err();
        assert!(e.to_string().contains("present on a payload"), "{e}");
    }
    let e = parse_payload(&entry(2, &[&f, &f]), 0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DuplicateField {
                field: "chunked",
                ..
            }
        ),
        "{e}"
    );
    let old = parse_payload(&entry(1, &[]), 0).unwrap();
    assert_eq!(old.chunked, None, "old images parse as before");
}

/// The payload entry with the table's declared length and hash set for `raw`.
fn reseal(info: &PayloadInfo, raw: &[u8]) -> PayloadInfo {
    let mut p = info.clone();
    let mut c = p.chunked.unwrap();
    c.table_raw_len = raw.len() as u64;
    c.table_sha256 = Sha256::digest(raw).into();
    p.chunked = Some(c);
    p
}

fn table_err(info: &PayloadInfo, raw: Vec<u8>) -> String {
    let e = ChunkTable::parse(info, raw).unwrap_err();
    assert!(matches!(e, Error::BadChunkTable { .. }), "{e}");
    assert!(e.is_refusal());
    e.to_string()
}

#[test]
fn table_checks() {
    let data = disk_like(20, 4096, 4);
    let built = build(&data, 4096, 4, 0);
    let t = built.table();
    let raw = t.raw_table().to_vec();
    let info = &built.info;
    ChunkTable::parse(info, raw.clone()).unwrap();
    let nz = (0..t.block_count()).find(|&i| !t.is_zero(i)).unwrap() as usize;
    let set_len = |raw: &mut Vec<u8>, i: usize, v: u32| {
        raw[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes())
    };

    // length and hash against the header
    let e = table_err(info, raw[..raw.len() - 1].to_vec());
    assert!(e.contains("the header declares"), "{e}");
    let mut flipped = raw.clone();
    flipped[5] ^= 1;
    assert!(table_err(info, flipped).contains("SHA-256"));
    // block count against the raw size
    let mut bigger = info.clone();
    bigger.raw_size += 4096;
    assert!(table_err(&bigger, raw.clone()).contains("blocks for a raw size"));
    // the lengths do not fit
    let short = raw[..4 * t.block_count() as usize - 4].to_vec();
    assert!(table_err(&reseal(info, &short), short).contains("too short"));
    // a nonzero block declared zero: the layout no longer adds up
    let mut r = raw.clone();
    set_len(&mut r, nz, 0);
    assert!(table_err(&reseal(info, &r), r).contains("layout"));
    // trailing bytes in the table
    let mut r = raw.clone();
    r.extend_from_slice(&[0; 4]);
    assert!(table_err(&reseal(info, &r), r).contains("layout"));
    // a frame longer than zstd's bound for its block
    let mut r = raw.clone();
    set_len(&mut r, nz, 5000);
    assert!(table_err(&reseal(info, &r), r).contains("zstd bound"));
    // frames that do not add up to the stored size
    let mut r = raw.clone();
    let len = t.stored_len(nz as u32);
    set_len(&mut r, nz, len + 1);
    assert!(table_err(&reseal(info, &r), r).contains("stored bytes"));
}

#[test]
fn table_frame_checks() {
    let data = disk_like(20, 4096, 4);
    let built = build(&data, 4096, 4, 0);
    let n = built.chunk().table_stored_len as usize;
    let frame = &built.stored[..n];
    let err =
        |info: &PayloadInfo, f: &[u8]| ChunkTable::from_frame(info, f).unwrap_err().to_string();
    assert!(err(&built.info, &frame[..n - 1]).contains("table frame of"));
    // the right length but the table frame is followed by another frame
    let mut two = zstd::bulk::compress(&built.table().raw_table()[..8], 3).unwrap();
    let tail = zstd::bulk::compress(b"x", 3).unwrap();
    two.extend(&tail);
    let mut p = built.info.clone();
    let mut c = p.chunked.unwrap();
    c.table_stored_len = two.len() as u64;
    p.chunked = Some(c);
    assert!(err(&p, &two).contains("follow its zstd frame"));
    // a frame that decodes to more than the declared raw table
    let mut more = built.table().raw_table().to_vec();
    more.extend_from_slice(&[0; 64]);
    let f = zstd::bulk::compress(&more, 3).unwrap();
    c.table_stored_len = f.len() as u64;
    p.chunked = Some(c);
    assert!(err(&p, &f).contains("table frame"));
    // not zstd at all
    let junk = vec![0x55u8; n];
    assert!(err(&built.info, &junk).contains("not a zstd frame"));
    // not a chunked payload
    let mut plain = built.info.clone();
    plain.chunked = None;
    assert!(err(&plain, frame).contains("not chunked"));
}

#[test]
fn block_frame_checks() {
    let block = crate::tests::noise(4096, 3);
    let frame = zstd::bulk::compress(&block, 3).unwrap();
    let mut out = Vec::new();
    one_frame(&frame, &mut out, 4096, None).unwrap();
    assert_eq!(out, block);
    let e = one_frame(&frame, &mut out, 4095, None).unwrap_err();
    assert!(
        e.contains("more than 4095") || e.contains("decodes to"),
        "{e}"
    );
    let e = one_frame(&frame, &mut out, 4097, None).unwrap_err();
    assert!(e.contains("decodes to 4096 bytes, expected 4097"), "{e}");
    let mut trailing = frame.clone();
    trailing.push(0);
    assert!(one_frame(&trailing, &mut out, 4096, None)
        .unwrap_err()
        .contains("follow"));
    let mut two = zstd::bulk::compress(&block[..2048], 3).unwrap();
    two.extend(zstd::bulk::compress(&block[2048..], 3).unwrap());
    assert!(one_frame(&two, &mut out, 4096, None)
        .unwrap_err()
        .contains("follow"));
    assert!(one_frame(&frame[..frame.len() - 1], &mut out, 4096, None).is_err());
    let mut corrupt = frame.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    let r = one_frame(&corrupt, &mut out, 4096, None);
    assert!(
        r.is_err() || out != block,
        "a corrupt frame never yields the block"
    );

    // through decode_block: lengths, zero blocks, block index
    let data = disk_like(10, 4096, 2);
    let built = build(&data, 4096, 4, 0);
    let t = built.table();
    let nz = (0..10).find(|&i| !t.is_zero(i)).unwrap();
    let z = (0..10).find(|&i| t.is_zero(i)).unwrap();
    let f = &built.stored[t.stored_range(nz).start as usize..t.stored_range(nz).end as usize];
    decode_block(&t, nz, f, &mut out).unwrap();
    let e = decode_block(&t, nz, &f[1..], &mut out).unwrap_err();
    assert!(
        matches!(e, Error::CorruptBlock { block, .. } if block == nz),
        "{e}"
    );
    decode_block(&t, z, &[], &mut out).unwrap();
    assert_eq!(out, vec![0u8; 4096]);
    assert!(decode_block(&t, z, f, &mut out).is_err());
    assert!(decode_block(&t, 10, &[], &mut out).is_err());
}

#[test]
fn a_group_that_does_not_hash_right_is_never_handed_on() {
    // Two blocks swapped inside a group: every frame decodes, the table's
    // group hash catches it before any byte of the group is read.
    let data = disk_like(8, 4096, 0);
    let built = build(&data, 4096, 8, 0);
    let t = built.table();
    let nz: Vec<u32> = (0..8)
        .filter(|&i| !t.is_zero(i) && t.short(i) != t.short(0))
        .collect();
    let (a, b) = (nz[0], nz[1]);
    let mut stored = built.stored.clone();
    let ra = t.stored_range(a);
    let rb = t.stored_range(b);
    if ra.end - ra.start == rb.end - rb.start {
        let fa = stored[ra.start as usize..ra.end as usize].to_vec();
        let fb = stored[rb.start as usize..rb.end as usize].to_vec();
        stored[ra.start as usize..ra.end as usize].copy_from_slice(&fb);
        stored[rb.start as usize..rb.end as usize].copy_from_slice(&fa);
    } else {
        // different lengths: corrupt a byte instead (the frame checks it)
        stored[ra.start as usize + 10] ^= 1;
    }
    let mut d = crate::payload_decompressor(&built.info, &stored[..]).unwrap();
    let mut buf = vec![0u8; 100];
    let e = std::io::Read::read(&mut d, &mut buf).unwrap_err();
    let e = Error::from_io(e);
    assert!(
        matches!(
            e,
            Error::GroupHashMismatch { group: 0, .. } | Error::CorruptBlock { .. }
        ),
        "{e}"
    );
}
