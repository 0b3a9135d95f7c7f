//! `slotctl image diff-size OLD NEW` through the real binary, against an
//! estimate computed independently (blocks compared by content, frame
//! lengths from the table via the zstd CLI).

use slotctl_tests::chunked::{disk_like, expected_download, frame_lengths, info, json, B};
use slotctl_tests::image::{keygen, noise, ok, pack, refused, sh, tmp};
use slotctl_tests::{require_tool, run_slotctl};

#[test]
fn diff_size_counts_what_a_device_would_download() {
    require_tool("zstd");
    let d = tmp();
    let dir = d.path();
    let (k, _) = keygen(dir, "rel");
    let v1 = disk_like(200, 0, 2);
    let mut v2 = v1.clone();
    // change some blocks, move some, add a tail
    for i in [3usize, 50, 51, 120] {
        v2[i * B..(i + 1) * B].copy_from_slice(&noise(B, 5000 + i as u64));
    }
    let moved = v1[10 * B..14 * B].to_vec();
    v2[150 * B..154 * B].copy_from_slice(&moved);
    v2.extend(noise(3 * B + 100, 77));
    std::fs::write(dir.join("v1.raw"), &v1).unwrap();
    std::fs::write(dir.join("v2.raw"), &v2).unwrap();
    let old = dir.join("old.img");
    let new = dir.join("new.img");
    // OLD as today's zstd image; NEW chunked.
    ok(
        pack(
            &[&k],
            &[format!("ROOT:zstd={}", dir.join("v1.raw").display())],
            &old,
            &[],
        ),
        "pack old",
    );
    ok(
        pack(
            &[&k],
            &[format!("ROOT:chunked={}", dir.join("v2.raw").display())],
            &new,
            &[],
        ),
        "pack new",
    );
    let want = expected_download(dir, &new, &v1, &v2);
    let out = json(ok(
        run_slotctl([
            "--json",
            "image",
            "diff-size",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ]),
        "diff-size",
    ));
    assert_eq!(out["download_bytes"], want, "{out}");
    let new_len = std::fs::metadata(&new).unwrap().len();
    assert_eq!(out["new_image_len"], new_len);
    assert_eq!(out["new_raw_size"], v2.len());
    let pct = out["percent_of_raw"].as_f64().unwrap();
    assert!(
        (pct - want as f64 * 100.0 / v2.len() as f64).abs() < 0.006,
        "{pct}"
    );
    let pct = out["percent_of_image"].as_f64().unwrap();
    assert!(
        (pct - want as f64 * 100.0 / new_len as f64).abs() < 0.006,
        "{pct}"
    );
    assert!(want < new_len / 3, "the point of it: {want} of {new_len}");
    // with the gaps the device downloads when it merges near frames
    let gaps = out["download_bytes_with_gaps"].as_u64().unwrap();
    assert!(gaps >= want && gaps <= new_len, "{gaps}");
    assert_eq!(out["merge_gap"], 512);
    let p = &out["payloads"][0];
    assert_eq!(p["refetched_groups"], 0);
    // changed blocks 3, 50, 51, 120 (when not zero in v2) and the 4 tail blocks
    let changed = [3usize, 50, 51, 120]
        .iter()
        .filter(|&&i| v2[i * B..(i + 1) * B].iter().any(|&x| x != 0))
        .count();
    assert_eq!(p["fetched_blocks"], changed + 4);

    let text = ok(
        run_slotctl([
            "image",
            "diff-size",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ]),
        "diff-size text",
    );
    assert!(text.contains(&format!("download {want} bytes")), "{text}");
    assert!(text.contains("% of the new raw size"), "{text}");

    // NEW against itself: header and table only
    let same = json(ok(
        run_slotctl([
            "--json",
            "image",
            "diff-size",
            new.to_str().unwrap(),
            new.to_str().unwrap(),
        ]),
        "diff-size same",
    ));
    let v = info(&new);
    let p0 = &v["payloads"][0];
    assert_eq!(
        same["download_bytes"],
        p0["offset"].as_u64().unwrap() + p0["chunked"]["table_stored_len"].as_u64().unwrap()
    );
    // OLD without the role: every nonzero frame
    let other = dir.join("other.img");
    ok(
        pack(
            &[&k],
            &[format!("BOOT={}", dir.join("v1.raw").display())],
            &other,
            &[],
        ),
        "pack other",
    );
    let none = json(ok(
        run_slotctl([
            "--json",
            "image",
            "diff-size",
            other.to_str().unwrap(),
            new.to_str().unwrap(),
        ]),
        "diff-size other role",
    ));
    assert_eq!(none["download_bytes"], new_len);
    assert_eq!(none["payloads"][0]["old_has_role"], false);
    // An unchunked NEW counts whole.
    let whole = json(ok(
        run_slotctl([
            "--json",
            "image",
            "diff-size",
            new.to_str().unwrap(),
            old.to_str().unwrap(),
        ]),
        "diff-size unchunked new",
    ));
    assert_eq!(
        whole["download_bytes"],
        std::fs::metadata(&old).unwrap().len()
    );
    // Not an image: one line, exit 3.
    std::fs::write(dir.join("junk.img"), b"not an image at all").unwrap();
    let line = refused(
        run_slotctl([
            "image",
            "diff-size",
            dir.join("junk.img").to_str().unwrap(),
            new.to_str().unwrap(),
        ]),
        3,
    );
    assert!(line.contains("not a slotctl image"), "{line}");
}

/// Two different 16-byte strings with the same short hash (the first 4
/// bytes of SHA-256): a birthday search, about 2^16 tries.
fn short_hash_collision() -> (Vec<u8>, Vec<u8>) {
    let mut seen = std::collections::HashMap::new();
    for n in 0u64.. {
        let m = format!("tail{n:012}").into_bytes();
        let h = image_format::short_hash(&m);
        if let Some(other) = seen.insert(h, m.clone()) {
            return (other, m);
        }
    }
    unreachable!()
}

#[test]
fn diff_size_fetches_a_group_whole_when_a_candidate_is_a_short_hash_collision() {
    require_tool("openssl");
    require_tool("zstd");
    let d = tmp();
    let dir = d.path();
    let (k, _) = keygen(dir, "rel");
    let (x, y) = short_hash_collision();
    assert_ne!(x, y);
    // openssl agrees the two differ and share the first 4 bytes of SHA-256
    std::fs::write(dir.join("x"), &x).unwrap();
    std::fs::write(dir.join("y"), &y).unwrap();
    let hx = ok(
        sh("openssl dgst -sha256 -r x | cut -c1-64", dir),
        "openssl x",
    );
    let hy = ok(
        sh("openssl dgst -sha256 -r y | cut -c1-64", dir),
        "openssl y",
    );
    assert_eq!(hx[..8], hy[..8]);
    assert_ne!(hx, hy);

    // 35 blocks and a 16-byte last block (index 35, in group 8 of 4 blocks
    // with 32..34): OLD ends with y, NEW with x; everything else equal.
    let body = disk_like(35, 0, 4);
    let v1 = [body.clone(), y].concat();
    let v2 = [body, x].concat();
    std::fs::write(dir.join("v1.raw"), &v1).unwrap();
    std::fs::write(dir.join("v2.raw"), &v2).unwrap();
    let old = dir.join("old.img");
    let new = dir.join("new.img");
    ok(
        pack(
            &[&k],
            &[format!("ROOT:zstd={}", dir.join("v1.raw").display())],
            &old,
            &[],
        ),
        "pack old",
    );
    ok(
        pack(
            &[&k],
            &[format!("ROOT:chunked={}", dir.join("v2.raw").display())],
            &new,
            &["--chunk-group-blocks", "4"],
        ),
        "pack new",
    );
    let out = json(ok(
        run_slotctl([
            "--json",
            "image",
            "diff-size",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ]),
        "diff-size",
    ));
    let p = &out["payloads"][0];
    assert_eq!(p["refetched_groups"], 1, "{out}");
    // Content alone says only the last block is missing; the wrong
    // candidate costs its whole group: the frames of blocks 32..=35.
    let only_last = expected_download(dir, &new, &v1, &v2);
    let v = info(&new);
    let lengths = frame_lengths(dir, &new, &v["payloads"][0]);
    let group: u64 = lengths[32..=34].iter().map(|&l| l as u64).sum();
    assert!(group > 0, "the group holds reused blocks");
    assert_eq!(out["download_bytes"], only_last + group, "{out}");
    assert_eq!(
        p["fetched_blocks"],
        lengths[32..=35].iter().filter(|&&l| l != 0).count()
    );
}
