//! Chunked images (compression `chunked`) through the real binary: pack,
//! verify, extract, info and sign, with the doc's openssl script and the
//! zstd CLI as independent validators (diff-size: image_diff_size.rs).

use std::path::Path;

use slotctl_tests::chunked::{disk_like, frame_lengths, info, json, verify, B};
use slotctl_tests::image::{doc_openssl_script, keygen, ok, pack, refused, sh, tmp};
use slotctl_tests::{require_tool, run_slotctl};

#[test]
fn openssl_script_from_the_doc_verifies_chunked_images_and_refuses_tampered_ones() {
    require_tool("openssl");
    require_tool("zstd");
    let d = tmp();
    let dir = d.path();
    let (k, p) = keygen(dir, "rel");
    let root = disk_like(90, 1234, 3);
    std::fs::write(dir.join("root.img"), &root).unwrap();
    // Many similar blocks, so zstd can train a dictionary on them.
    let logs: Vec<u8> = (0..400)
        .flat_map(|i| {
            format!(
                "log {i} unit=svc{} state=running pid={} ",
                i % 11,
                1000 + i % 57
            )
            .into_bytes()
            .into_iter()
            .cycle()
            .take(B)
        })
        .collect();
    std::fs::write(dir.join("logs.img"), &logs).unwrap();
    std::fs::write(dir.join("boot.img"), b"kernel ".repeat(3000)).unwrap();
    let img = dir.join("chunked.img");
    let parts = vec![
        format!("BOOT={}", dir.join("boot.img").display()),
        format!("ROOT:chunked={}", dir.join("root.img").display()),
    ];
    ok(pack(&[&k], &parts, &img, &[]), "pack");
    let dimg = dir.join("dict.img");
    let dparts = vec![format!("LOGS:chunked={}", dir.join("logs.img").display())];
    ok(
        pack(
            &[&k],
            &dparts,
            &dimg,
            &[
                "--chunk-dict-size",
                "4096",
                "--chunk-block-size",
                "8192",
                "--chunk-group-blocks",
                "3",
            ],
        ),
        "pack with a dictionary",
    );
    let dinfo = info(&dimg);
    let dc = &dinfo["payloads"][0]["chunked"];
    assert!(dc["dict_len"].as_u64().unwrap() > 0, "{dc}");
    assert_eq!(dc["block_size"], 8192);
    assert_eq!(dc["group_blocks"], 3);

    std::fs::write(dir.join("verify.sh"), doc_openssl_script()).unwrap();
    let script = |image: &Path| {
        sh(
            &format!("sh verify.sh {} {}", image.display(), p.display()),
            dir,
        )
    };
    let out = ok(script(&img), "doc script");
    assert!(
        out.contains(&format!("payload ROOT: {} bytes", root.len())),
        "{out}"
    );
    assert!(out.contains("payload BOOT: 21000 bytes"), "{out}");
    assert!(out.contains("image OK"), "{out}");
    let out = ok(script(&dimg), "doc script, dictionary");
    assert!(
        out.contains(&format!("payload LOGS: {} bytes", logs.len())),
        "{out}"
    );
    ok(verify(&p, &img), "slotctl verify");
    ok(verify(&p, &dimg), "slotctl verify, dictionary");

    // Tamper: a byte of the table frame, of a block frame, of the header's
    // chunked field, and two frames of equal length swapped (each frame
    // decodes: only the hashes catch it). Both the script and slotctl refuse.
    let good = std::fs::read(&img).unwrap();
    let v = info(&img);
    let rootp = &v["payloads"][1];
    let at = rootp["offset"].as_u64().unwrap() as usize;
    let ts = rootp["chunked"]["table_stored_len"].as_u64().unwrap() as usize;
    let lengths = frame_lengths(dir, &img, rootp);
    let mut starts = Vec::new();
    let mut o = at + ts;
    for &l in &lengths {
        starts.push(o);
        o += l as usize;
    }
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut t = good.clone();
    t[at + ts / 2] ^= 0x04;
    cases.push(("table frame", t));
    let mut f = good.clone();
    f[at + ts + 30] ^= 0x20;
    cases.push(("block frame", f));
    let header_len = v["header_len"].as_u64().unwrap() as usize;
    let h = good.clone();
    let field = h
        .windows(6)
        .position(|w| w[..2] == [0x06, 0x80] && w[2..] == [64, 0, 0, 0])
        .unwrap();
    assert!(field < header_len);
    let mut hf = good.clone();
    hf[field + 6] ^= 0x01; // block size 4096 -> 4097
    cases.push(("chunked field", hf));
    // two nonzero frames of the same length with different content
    let pair = (0..lengths.len())
        .flat_map(|a| (a + 1..lengths.len()).map(move |b| (a, b)))
        .find(|&(a, b)| {
            lengths[a] != 0
                && lengths[a] == lengths[b]
                && good[starts[a]..starts[a] + lengths[a] as usize]
                    != good[starts[b]..starts[b] + lengths[b] as usize]
        });
    if let Some((a, b)) = pair {
        let l = lengths[a] as usize;
        let mut s = good.clone();
        let fa = good[starts[a]..starts[a] + l].to_vec();
        let fb = good[starts[b]..starts[b] + l].to_vec();
        s[starts[a]..starts[a] + l].copy_from_slice(&fb);
        s[starts[b]..starts[b] + l].copy_from_slice(&fa);
        cases.push(("swapped frames", s));
    }
    assert!(cases.len() >= 3);
    let mut dict_bad = std::fs::read(&dimg).unwrap();
    let dp = &dinfo["payloads"][0];
    let dl = dp["offset"].as_u64().unwrap() as usize
        + dp["chunked"]["table_stored_len"].as_u64().unwrap() as usize
        + 5;
    dict_bad[dl] ^= 0x01;
    cases.push(("frame with a dictionary", dict_bad));
    for (what, bytes) in cases {
        let bad = dir.join(format!("bad-{}.img", what.replace(' ', "-")));
        std::fs::write(&bad, bytes).unwrap();
        let out = script(&bad);
        assert!(
            !out.status.success(),
            "doc script accepted a tampered {what}"
        );
        let line = refused(verify(&p, &bad), 3);
        assert!(line.contains(bad.to_str().unwrap()), "{what}: {line}");
    }
}

#[test]
fn chunked_pack_extract_info_sign_and_stdin() {
    require_tool("zstd");
    let d = tmp();
    let dir = d.path();
    let (k, p) = keygen(dir, "rel");
    let root = disk_like(70, 77, 5);
    std::fs::write(dir.join("root.img"), &root).unwrap();
    let zeros = vec![0u8; 10 * B + 5];
    std::fs::write(dir.join("zeros.img"), &zeros).unwrap();
    let img = dir.join("c.img");
    let parts = vec![
        format!("ROOT={}", dir.join("root.img").display()),
        format!("ZERO={}", dir.join("zeros.img").display()),
    ];
    // --compression chunked applies to every part that names none.
    let out = ok(
        pack(
            &[&k],
            &parts,
            &img,
            &["--compression", "chunked", "--zstd-workers", "2"],
        ),
        "pack",
    );
    assert!(out.contains("ROOT     chunked"), "{out}");
    // The same image with one thread: the same bytes (order kept).
    let img1 = dir.join("c1.img");
    ok(
        pack(
            &[&k],
            &parts,
            &img1,
            &[
                "--compression",
                "chunked",
                "--zstd-workers",
                "0",
                "--created",
                "0",
            ],
        ),
        "pack 1 thread",
    );
    let img2 = dir.join("c2.img");
    ok(
        pack(
            &[&k],
            &parts,
            &img2,
            &[
                "--compression",
                "chunked",
                "--zstd-workers",
                "3",
                "--created",
                "0",
            ],
        ),
        "pack 3 threads",
    );
    assert_eq!(std::fs::read(&img1).unwrap(), std::fs::read(&img2).unwrap());

    // a part from a pipe (size unknown: 4 KiB blocks) packs the same bytes
    let piped = dir.join("piped.img");
    ok(
        sh(
            &format!(
                "cat {} | {} image pack --key {} --version 1.4.2 --compatible acme-gw --rollback-index 7 \
                 --created 0 --zstd-workers 0 --part ROOT:chunked=/dev/stdin --part ZERO:chunked={} -o {}",
                dir.join("root.img").display(),
                slotctl_tests::slotctl_bin().display(),
                k.display(),
                dir.join("zeros.img").display(),
                piped.display()
            ),
            dir,
        ),
        "pack from a pipe",
    );
    assert_eq!(
        std::fs::read(&piped).unwrap(),
        std::fs::read(&img1).unwrap(),
        "a pipe and a file give the same image"
    );

    // extract: byte for byte
    for (role, data) in [("ROOT", &root), ("ZERO", &zeros)] {
        let outp = dir.join(format!("{role}.out"));
        ok(
            run_slotctl([
                "image",
                "extract",
                "--pubkey",
                p.to_str().unwrap(),
                "-o",
                outp.to_str().unwrap(),
                role,
                img.to_str().unwrap(),
            ]),
            "extract",
        );
        assert_eq!(&std::fs::read(&outp).unwrap(), data, "{role}");
    }

    // info: statistics computed here independently
    let v = info(&img);
    let r = &v["payloads"][0];
    assert_eq!(r["compression"], "chunked");
    let c = &r["chunked"];
    let blocks = root.len().div_ceil(B);
    let zero_blocks = root.chunks(B).filter(|b| b.iter().all(|&x| x == 0)).count();
    assert_eq!(c["block_size"], 4096);
    assert_eq!(c["blocks"], blocks);
    assert_eq!(c["zero_blocks"], zero_blocks);
    assert_eq!(c["group_blocks"], 16);
    assert_eq!(c["groups"], blocks.div_ceil(16));
    assert_eq!(c["dict_len"], 0);
    let lengths = frame_lengths(dir, &img, r);
    assert_eq!(lengths.iter().filter(|&&l| l == 0).count(), zero_blocks);
    let frames: u64 = lengths.iter().map(|&l| l as u64).sum();
    assert_eq!(c["frames_len"], frames);
    assert_eq!(
        r["stored_size"].as_u64().unwrap(),
        frames + c["table_stored_len"].as_u64().unwrap()
    );
    let nz = (blocks - zero_blocks) as f64;
    let mean = c["mean_stored_per_nonzero_block"].as_f64().unwrap();
    assert!((mean - frames as f64 / nz).abs() < 0.06, "{mean}");
    // the raw table: 4 per block + 4 per nonzero block + 32 per group with data
    let groups_with_data = root
        .chunks(16 * B)
        .filter(|g| g.iter().any(|&x| x != 0))
        .count();
    assert_eq!(
        c["table_raw_len"],
        4 * blocks + 4 * (blocks - zero_blocks) + 32 * groups_with_data
    );
    let z = &v["payloads"][1]["chunked"];
    assert_eq!(z["zero_blocks"], 11);
    assert_eq!(z["frames_len"], 0);
    let text = ok(
        run_slotctl(["image", "info", img.to_str().unwrap()]),
        "info",
    );
    assert!(
        text.contains(&format!(
            "chunked: blocks of 4096 bytes: {blocks} in groups of 16;"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{zero_blocks} zero blocks")),
        "{text}"
    );
    // info from standard input reads the same tables
    let piped = ok(
        sh(
            &format!(
                "cat {} | {} --json image info -",
                img.display(),
                slotctl_tests::slotctl_bin().display()
            ),
            dir,
        ),
        "info -",
    );
    assert_eq!(json(piped)["payloads"], v["payloads"]);

    // verify from standard input, and sign (in place) keeps it verifiable
    let out = ok(
        sh(
            &format!(
                "cat {} | {} image verify --pubkey {} -",
                img.display(),
                slotctl_tests::slotctl_bin().display(),
                p.display()
            ),
            dir,
        ),
        "verify -",
    );
    assert!(out.contains("OK"), "{out}");
    let (k2, p2) = keygen(dir, "second");
    ok(
        run_slotctl([
            "image",
            "sign",
            "--key",
            k2.to_str().unwrap(),
            img.to_str().unwrap(),
        ]),
        "sign",
    );
    ok(verify(&p2, &img), "verify with the second key");

    // a table whose bytes do not match the header: info says so, exit 3
    let mut bad = std::fs::read(&img).unwrap();
    let at = r["offset"].as_u64().unwrap() as usize;
    bad[at + 2] ^= 0x01;
    let badp = dir.join("bad.img");
    std::fs::write(&badp, &bad).unwrap();
    let line = refused(run_slotctl(["image", "info", badp.to_str().unwrap()]), 3);
    assert!(line.contains("chunk table"), "{line}");
    let line = refused(
        run_slotctl([
            "image",
            "extract",
            "--pubkey",
            p.to_str().unwrap(),
            "-o",
            dir.join("x.out").to_str().unwrap(),
            "ROOT",
            badp.to_str().unwrap(),
        ]),
        3,
    );
    assert!(line.contains("chunk table"), "{line}");
    assert!(!dir.join("x.out").exists());
}

#[test]
fn chunked_pack_refuses_bad_options() {
    let d = tmp();
    let dir = d.path();
    let (k, _) = keygen(dir, "rel");
    std::fs::write(dir.join("root.img"), disk_like(4, 0, 1)).unwrap();
    let parts = vec![format!("ROOT:chunked={}", dir.join("root.img").display())];
    for (args, want) in [
        (vec!["--chunk-block-size", "3000"], "not a power of two"),
        (vec!["--chunk-block-size", "2048"], "not a power of two"),
        (vec!["--chunk-block-size", "2097152"], "not a power of two"),
        (vec!["--chunk-group-blocks", "0"], "outside 1..=256"),
        (vec!["--chunk-group-blocks", "257"], "outside 1..=256"),
        (vec!["--chunk-dict-size", "1048577"], "exceeds the limit"),
    ] {
        let out_img = dir.join("o.img");
        let line = refused(pack(&[&k], &parts, &out_img, &args), 1);
        assert!(line.contains(want), "{args:?}: {line}");
        assert!(!out_img.exists());
    }
    let line = refused(
        pack(
            &[&k],
            &[format!("ROOT:gzip={}", dir.join("root.img").display())],
            &dir.join("o.img"),
            &[],
        ),
        1,
    );
    assert!(line.contains("expected none, zstd or chunked"), "{line}");
}
