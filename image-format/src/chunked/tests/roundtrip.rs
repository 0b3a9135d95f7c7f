//! Pack then decode: block sizes, short last blocks, zeros, group sizes,
//! workers, dictionaries; and through a whole signed image.

use super::*;
use crate::tests::{key, noise, ring};
use crate::*;

#[test]
fn round_trip_block_and_group_sizes() {
    let raw = disk_like(40, 4096, 3);
    for (b, g) in [
        (4096, 16),
        (4096, 1),
        (8192, 3),
        (65536, 256),
        (1 << 20, 16),
    ] {
        for workers in [0, 2] {
            let built = build(&raw, b, g, workers);
            let c = built.chunk();
            assert_eq!(c.block_size, b);
            assert_eq!(c.group_blocks, g);
            assert_eq!(c.block_count as u64, (raw.len() as u64).div_ceil(b as u64));
            assert_eq!(
                built.decode().unwrap(),
                raw,
                "B {b} G {g} workers {workers}"
            );
        }
    }
}

#[test]
fn workers_do_not_change_the_bytes() {
    let raw = disk_like(300, 4096, 5);
    let a = build(&raw, 4096, 16, 0);
    let b = build(&raw, 4096, 16, 3);
    assert_eq!(
        a.stored, b.stored,
        "block order is kept whatever the threads"
    );
    assert_eq!(a.info, b.info);
}

#[test]
fn short_last_block_and_raw_size_not_a_multiple() {
    for extra in [1usize, 100, 4095] {
        let mut raw = disk_like(9, 4096, 1);
        raw.extend(noise(extra, extra as u64));
        let built = build(&raw, 4096, 4, 2);
        let t = built.table();
        assert_eq!(t.block_count(), 10);
        assert_eq!(t.block_len(9), extra as u32);
        assert_eq!(t.block_len(8), 4096);
        assert_eq!(t.group_count(), 3);
        assert_eq!(t.group_range(2), 8..10);
        assert_eq!(built.decode().unwrap(), raw);
    }
}

#[test]
fn only_zeros_and_empty() {
    let raw = vec![0u8; 5 * 4096 + 17];
    let built = build(&raw, 4096, 2, 0);
    let t = built.table();
    assert_eq!(t.nonzero_blocks(), 0);
    assert_eq!(t.nonzero_groups(), 0);
    assert!((0..6).all(|i| t.is_zero(i) && t.short(i).is_none()));
    assert!(t.group_sha256(0).is_none());
    assert_eq!(t.frames_len(), 0);
    assert_eq!(
        built.info.stored_size,
        built.chunk().table_stored_len,
        "zeros store nothing but the table"
    );
    assert_eq!(built.decode().unwrap(), raw);

    let empty = build(&[], 4096, 16, 0);
    assert_eq!(empty.chunk().block_count, 0);
    assert_eq!(empty.chunk().table_raw_len, 0);
    assert_eq!(empty.decode().unwrap(), Vec::<u8>::new());
}

#[test]
fn table_accessors_agree_with_the_layout() {
    let raw = disk_like(50, 4096, 2);
    let built = build(&raw, 4096, 8, 0);
    let t = built.table();
    let c = built.chunk();
    let mut offset = c.table_stored_len;
    for i in 0..t.block_count() {
        assert_eq!(t.stored_offset(i), offset, "block {i}");
        let block = &raw[t.block_offset(i) as usize..][..t.block_len(i) as usize];
        assert_eq!(t.is_zero(i), block.iter().all(|&x| x == 0));
        if !t.is_zero(i) {
            assert_eq!(t.short(i), Some(short_hash(block)));
            let mut out = Vec::new();
            let frame =
                &built.stored[t.stored_range(i).start as usize..][..t.stored_len(i) as usize];
            decode_block(&t, i, frame, &mut out).unwrap();
            assert_eq!(out, block);
        }
        offset += t.stored_len(i) as u64;
    }
    assert_eq!(offset, built.info.stored_size);
    for k in 0..t.group_count() {
        let r = t.group_raw_range(k);
        assert!(t.group_matches(k, &raw[r.start as usize..r.end as usize]));
    }
    assert_eq!(t.frames_len(), built.info.stored_size - c.table_stored_len);
    // the raw table's size as the format defines it
    assert_eq!(
        c.table_raw_len,
        4 * t.block_count() as u64 + 4 * t.nonzero_blocks() as u64 + 32 * t.nonzero_groups() as u64
    );
}

#[test]
fn dictionary_is_trained_and_used() {
    // Many similar small blocks: zstd can train a dictionary on them.
    let mut raw = Vec::new();
    for i in 0..600u32 {
        let text = format!(
            "record {i} name=device-{} status=ok temperature={} ",
            i % 17,
            i % 40
        );
        raw.extend(text.bytes().cycle().take(4096));
    }
    let opts = ChunkOptions {
        block_size: 4096,
        group_blocks: 16,
        dict_size: 8192,
        temp_dir: None,
    };
    let built = build_opts(&raw, &opts, 2);
    let c = built.chunk();
    assert!(
        c.dict_len > 0 && c.dict_len <= 8192,
        "dict_len {}",
        c.dict_len
    );
    let t = built.table();
    assert_eq!(t.dict().len(), c.dict_len as usize);
    assert_eq!(built.decode().unwrap(), raw);
    // without the dictionary the frames do not decode
    let i = (0..t.block_count()).find(|&i| !t.is_zero(i)).unwrap();
    let frame = &built.stored[t.stored_range(i).start as usize..t.stored_range(i).end as usize];
    let plain = zstd::bulk::decompress(frame, 4096);
    assert!(
        plain.is_err() || plain.unwrap() != raw[..4096],
        "frames use the dictionary"
    );
}

#[test]
fn whole_image_round_trip_and_tamper() {
    let raw = disk_like(64, 4096, 9);
    let k = key(1);
    let mut spec = PackSpec::new("acme", semver::Version::new(1, 0, 0), 1, 0);
    spec.zstd.workers = 2;
    spec.chunk.block_size = 4096;
    let parts = vec![
        PackPart {
            role: "BOOT".into(),
            compression: Compression::Zstd,
            source: Box::new(&b"kernel"[..]),
            size_hint: None,
            verity: None,
        },
        PackPart {
            role: "ROOT".into(),
            compression: Compression::Chunked,
            source: Box::new(&raw[..]),
            size_hint: Some(raw.len() as u64),
            verity: None,
        },
    ];
    let mut out = std::io::Cursor::new(Vec::new());
    let infos = pack(&mut out, &spec, parts, &[&k]).unwrap();
    let image = out.into_inner();
    let payloads = crate::tests::verify_all(&image, &ring(&[&k])).unwrap();
    assert_eq!(payloads[1], raw);
    let root = &infos[1];
    assert_eq!(root.chunked.unwrap().block_size, 4096);

    // a flipped byte in the table frame, then in a block frame: refused
    let table_at = root.offset as usize + 3;
    let frame_at = root.offset as usize + root.chunked.unwrap().table_stored_len as usize + 20;
    for at in [table_at, frame_at] {
        let mut bad = image.clone();
        bad[at] ^= 0x10;
        let e = crate::tests::verify_all(&bad, &ring(&[&k])).unwrap_err();
        assert!(
            matches!(
                e,
                Error::BadChunkTable { .. }
                    | Error::CorruptBlock { .. }
                    | Error::GroupHashMismatch { .. }
            ),
            "byte {at}: {e}"
        );
        assert!(e.is_refusal());
    }
}
