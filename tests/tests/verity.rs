//! dm-verity at pack time, checked by the real `veritysetup` (cryptsetup-bin):
//! the Rust tree equals `veritysetup format --no-superblock` byte for byte,
//! and `veritysetup verify` accepts a packed payload with the parameters of
//! the signed header. Needs `cargo build -p slotctl` first.

use std::path::Path;
use std::process::Command;

use image_format::{VerityHasher, VerityTree};
use slotctl_tests::image::{doc_openssl_script, keygen, noise, ok, pack, refused, sh, tmp};
use slotctl_tests::{have_tool, run_slotctl, run_slotctl_peak_rss};

/// veritysetup is the validator: its absence is a failure, never a skip.
fn require_veritysetup() {
    assert!(
        have_tool("veritysetup"),
        "veritysetup is missing: install cryptsetup-bin (apt-get install -y cryptsetup-bin)"
    );
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("spawn veritysetup");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `veritysetup format --no-superblock` of `data` into `hash`; its root hash.
fn veritysetup_format(data: &Path, hash: &Path, salt: &str, extra: &[String]) -> String {
    let (okay, text) = run(Command::new("veritysetup")
        .args(["format", "--no-superblock", "--format=1", "--hash=sha256"])
        .args(["--data-block-size=4096", "--hash-block-size=4096"])
        .arg(format!("--salt={salt}"))
        .args(extra)
        .arg(data)
        .arg(hash));
    assert!(okay, "veritysetup format failed: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap_or_else(|| panic!("no root hash in: {text}"))
        .trim()
        .to_owned()
}

/// `veritysetup verify` of a partition image holding data then tree.
fn veritysetup_verify(part: &Path, blocks: u64, start: u64, salt: &str, root: &str) -> bool {
    let (okay, text) = run(Command::new("veritysetup")
        .args(["verify", "--no-superblock"])
        .arg(format!("--data-blocks={blocks}"))
        .arg(format!("--hash-offset={}", start * 4096))
        .arg(format!("--salt={salt}"))
        .arg(part)
        .arg(part)
        .arg(root));
    if !okay {
        eprintln!("veritysetup verify: {text}");
    }
    okay
}

fn rust_tree(data: &[u8], salt: &[u8]) -> VerityTree {
    let mut v = VerityHasher::new(salt).unwrap();
    for piece in data.chunks(65536 + 7) {
        v.update(piece);
    }
    v.finish().unwrap()
}

#[test]
fn rust_tree_equals_veritysetup_format_byte_for_byte() {
    require_veritysetup();
    let d = tmp();
    let dir = d.path();
    let salt = noise(32, 99);
    let salt_hex: String = salt.iter().map(|b| format!("{b:02x}")).collect();
    // (bytes, salt): 1 block (no hash block), 128 (one level), 129 (a
    // second level), 16385 (a third), a size that is not a multiple of
    // 4096 (zero padded, as docs/image-format.md says), and no salt.
    let cases: [(usize, &[u8], &str); 6] = [
        (4096, &salt, &salt_hex),
        (128 * 4096, &salt, &salt_hex),
        (129 * 4096, &salt, &salt_hex),
        (16385 * 4096, &salt, &salt_hex),
        (5 * 4096 + 1234, &salt, &salt_hex),
        (129 * 4096, b"", "-"),
    ];
    for (len, salt, salt_arg) in cases {
        let data = noise(len, len as u64);
        let tree = rust_tree(&data, salt);
        // veritysetup reads whole blocks: give it the data zero padded.
        let mut padded = data.clone();
        padded.resize(len.div_ceil(4096) * 4096, 0);
        let (data_file, hash_file) = (dir.join("data"), dir.join("hash"));
        std::fs::write(&data_file, &padded).unwrap();
        let _ = std::fs::remove_file(&hash_file);
        std::fs::write(&hash_file, b"").unwrap();
        let root = veritysetup_format(&data_file, &hash_file, salt_arg, &[]);
        let theirs = std::fs::read(&hash_file).unwrap();
        let info = tree.info();
        assert_eq!(info.root_hex(), root, "{len} bytes: root hash");
        assert_eq!(info.salt_hex(), salt_arg);
        assert_eq!(info.data_blocks, padded.len() as u64 / 4096);
        assert_eq!(tree.padding_len(), padded.len() - len);
        assert_eq!(theirs.len(), tree.tree().len(), "{len} bytes: tree length");
        assert!(theirs == tree.tree(), "{len} bytes: tree bytes differ");
        eprintln!(
            "{len} bytes: {} data blocks, tree {} bytes, root {root}: same as veritysetup",
            info.data_blocks,
            theirs.len()
        );
    }
}

fn pack_args(dir: &Path, key: &Path, part: &str, extra: &[&str]) -> std::process::Output {
    let img = dir.join("v.img");
    pack(&[key], &[part.to_owned()], &img, extra)
}

fn info_json(img: &Path) -> serde_json::Value {
    let out = ok(
        run_slotctl(["--json", "image", "info", img.to_str().unwrap()]),
        "info",
    );
    serde_json::from_str(&out).unwrap()
}

fn extract(dir: &Path, public: &Path, role: &str) -> std::path::PathBuf {
    let out = dir.join(format!("{role}.raw"));
    ok(
        run_slotctl([
            "image",
            "extract",
            "--pubkey",
            public.to_str().unwrap(),
            role,
            "-o",
            out.to_str().unwrap(),
            dir.join("v.img").to_str().unwrap(),
        ]),
        "extract",
    );
    out
}

#[test]
fn veritysetup_verify_accepts_a_packed_payload_with_the_header_parameters() {
    require_veritysetup();
    let d = tmp();
    let dir = d.path();
    let (key, public) = keygen(dir, "rel");
    let data = noise(300 * 4096 + 100, 5);
    std::fs::write(dir.join("root.img"), &data).unwrap();
    let part = format!("ROOT={}", dir.join("root.img").display());
    for compression in ["none", "zstd", "chunked"] {
        // The default: a random salt.
        ok(
            pack_args(
                dir,
                &key,
                &part,
                &["--compression", compression, "--verity", "ROOT"],
            ),
            "pack --verity",
        );
        let v = &info_json(&dir.join("v.img"))["payloads"][0];
        let t = &v["verity"];
        let (blocks, start) = (
            t["data_blocks"].as_u64().unwrap(),
            t["hash_start_block"].as_u64().unwrap(),
        );
        let (salt, root) = (
            t["salt"].as_str().unwrap(),
            t["root_hash"].as_str().unwrap(),
        );
        assert_eq!((blocks, start), (301, 301));
        assert_eq!(salt.len(), 64, "32 random bytes");
        assert_eq!(t["hash_type"], 1);
        assert_eq!(t["hash_algorithm"], "sha256");
        assert_eq!(t["data_block_size"], 4096);
        assert_eq!(t["hash_block_size"], 4096);
        assert_eq!(t["data_sectors"], 301 * 8);
        // 301 blocks: 3 hash blocks below, 1 above.
        assert_eq!(v["raw_size"], 301 * 4096 + 4 * 4096);
        // `image verify` rebuilds the tree from the data and names the root.
        let verify = ok(
            run_slotctl([
                "image",
                "verify",
                "--pubkey",
                public.to_str().unwrap(),
                dir.join("v.img").to_str().unwrap(),
            ]),
            "verify",
        );
        assert!(
            verify.contains(&format!(
                "over 301 blocks rebuilt from the data: root {root} matches"
            )),
            "{verify}"
        );
        let raw = extract(dir, &public, "ROOT");
        assert!(
            veritysetup_verify(&raw, blocks, start, salt, root),
            "{compression}: veritysetup verify refused the packed payload"
        );
        // It can fail: a wrong root hash, and one flipped data byte.
        let wrong = format!(
            "{}{}",
            if root.starts_with('0') { "1" } else { "0" },
            &root[1..]
        );
        assert!(!veritysetup_verify(&raw, blocks, start, salt, &wrong));
        let mut bytes = std::fs::read(&raw).unwrap();
        bytes[200 * 4096 + 5] ^= 1;
        std::fs::write(&raw, &bytes).unwrap();
        assert!(!veritysetup_verify(&raw, blocks, start, salt, root));
    }
    // Two random salts differ.
    ok(pack_args(dir, &key, &part, &["--verity", "ROOT"]), "pack");
    let a = info_json(&dir.join("v.img"))["payloads"][0]["verity"]["salt"].clone();
    ok(pack_args(dir, &key, &part, &["--verity", "ROOT"]), "pack");
    let b = info_json(&dir.join("v.img"))["payloads"][0]["verity"]["salt"].clone();
    assert_ne!(a, b);
}

#[test]
fn the_partition_is_what_veritysetup_format_makes_in_place() {
    require_veritysetup();
    let d = tmp();
    let dir = d.path();
    let (key, public) = keygen(dir, "rel");
    let data = noise(129 * 4096 - 10, 6);
    std::fs::write(dir.join("root.img"), &data).unwrap();
    let part = format!("ROOT={}", dir.join("root.img").display());
    let salt = "5a17".repeat(8);
    ok(
        pack_args(
            dir,
            &key,
            &part,
            &["--verity", "ROOT", "--verity-salt", &salt],
        ),
        "pack",
    );
    let raw = std::fs::read(extract(dir, &public, "ROOT")).unwrap();
    // veritysetup writes the tree into the same file at the hash offset.
    let mut padded = data.clone();
    padded.resize(129 * 4096, 0);
    let file = dir.join("part");
    std::fs::write(&file, &padded).unwrap();
    let root = veritysetup_format(
        &file,
        &file,
        &salt,
        &[
            "--data-blocks=129".into(),
            format!("--hash-offset={}", 129 * 4096),
        ],
    );
    assert!(
        std::fs::read(&file).unwrap() == raw,
        "the partition bytes differ"
    );
    let v = info_json(&dir.join("v.img"));
    assert_eq!(v["payloads"][0]["verity"]["root_hash"], root.as_str());
    assert_eq!(v["payloads"][0]["verity"]["salt"], salt.as_str());
    // Human info shows the same fields.
    let human = ok(
        run_slotctl(["image", "info", dir.join("v.img").to_str().unwrap()]),
        "info",
    );
    assert!(
        human.contains(&format!(
            "    verity: format 1 sha256 blocks 4096/4096 data blocks 129 hash start block 129 salt {salt} root {root}"
        )),
        "{human}"
    );
    // Reproducible: the same salt, the same bytes.
    let first = std::fs::read(dir.join("v.img")).unwrap();
    let pack_again = || {
        ok(
            pack_args(
                dir,
                &key,
                &part,
                &["--verity", "ROOT", "--verity-salt", &salt, "--created", "1"],
            ),
            "pack",
        );
        std::fs::read(dir.join("v.img")).unwrap()
    };
    let a = pack_again();
    assert!(a == pack_again());
    assert!(first.len() == a.len());
}

#[test]
fn bad_verity_arguments_are_one_line_each() {
    let d = tmp();
    let dir = d.path();
    let (key, _) = keygen(dir, "rel");
    std::fs::write(dir.join("root.img"), noise(5000, 1)).unwrap();
    std::fs::write(dir.join("empty.img"), b"").unwrap();
    let part = format!("ROOT={}", dir.join("root.img").display());
    let cases: [(&[&str], &str); 5] = [
        (
            &["--verity", "BOOT"],
            "--verity BOOT: no --part with role BOOT (parts: ROOT)",
        ),
        (
            &["--verity", "ROOT", "--verity", "ROOT"],
            "--verity ROOT is given twice",
        ),
        (
            &["--verity", "ROOT", "--verity-salt", "abc"],
            "--verity-salt `abc` is not hex",
        ),
        (
            &["--verity", "ROOT", "--verity-salt", "+f"],
            "--verity-salt `+f` is not hex",
        ),
        (
            &["--verity", "ROOT", "--verity-salt", &"ab".repeat(65)],
            "--verity-salt: 65 bytes, at most 64",
        ),
    ];
    for (extra, want) in cases {
        let line = refused(pack_args(dir, &key, &part, extra), 1);
        assert!(line.contains(want), "{extra:?}: {line}");
        assert!(!dir.join("v.img").exists());
    }
    // A salt without --verity is a usage error (clap's, exit 2).
    let out = pack_args(dir, &key, &part, &["--verity-salt", "00"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--verity <ROLE>"));
    let empty = format!("ROOT={}", dir.join("empty.img").display());
    let line = refused(pack_args(dir, &key, &empty, &["--verity", "ROOT"]), 1);
    assert!(
        line.contains("ROOT: dm-verity needs at least one byte of data"),
        "{line}"
    );
    assert!(!dir.join("v.img").exists());
}

#[test]
fn openssl_script_from_the_doc_checks_verity_images() {
    slotctl_tests::require_tool("openssl");
    slotctl_tests::require_tool("zstd");
    let d = tmp();
    let dir = d.path();
    let (key, public) = keygen(dir, "rel");
    std::fs::write(dir.join("root.img"), noise(200 * 4096 + 1, 3)).unwrap();
    std::fs::write(dir.join("boot.img"), b"kernel ".repeat(3000)).unwrap();
    let img = dir.join("v.img");
    let parts = [
        format!("ROOT:none={}", dir.join("root.img").display()),
        format!("BOOT:chunked={}", dir.join("boot.img").display()),
    ];
    let salt = "00ff".repeat(16);
    ok(
        pack(
            &[&key],
            &parts,
            &img,
            &[
                "--verity",
                "ROOT",
                "--verity",
                "BOOT",
                "--verity-salt",
                &salt,
            ],
        ),
        "pack",
    );
    std::fs::write(dir.join("verify.sh"), doc_openssl_script()).unwrap();
    let run = |what: &Path| {
        sh(
            &format!("sh verify.sh {} {}", what.display(), public.display()),
            dir,
        )
    };
    let out = ok(run(&img), "the doc's script");
    let v = info_json(&img);
    let root = v["payloads"][0]["verity"]["root_hash"].as_str().unwrap();
    assert!(
        out.contains(&format!(
            "payload ROOT: verity data blocks 201, hash start block 201, salt {salt}, root {root}"
        )),
        "{out}"
    );
    assert!(out.contains("payload BOOT: verity data blocks 6,"), "{out}");
    assert!(out.contains("image OK"), "{out}");
    // The tree is covered by the payload hash: one flipped tree byte fails.
    let mut bytes = std::fs::read(&img).unwrap();
    let end = bytes.len() - 1;
    let root_off = v["payloads"][0]["offset"].as_u64().unwrap() as usize;
    let tree_byte = root_off + 201 * 4096 + 100;
    assert!(tree_byte < end);
    bytes[tree_byte] ^= 1;
    std::fs::write(dir.join("bad.img"), &bytes).unwrap();
    let out = run(&dir.join("bad.img"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED: payload ROOT: sha256"));
}

/// Packing with a tree holds the tree (1/128 of the data) and no more:
/// 512 MiB under 32 MiB peak RSS, like the packs of tests/tests/image_memory.rs.
#[test]
fn pack_512_mib_with_verity_under_32_mib_rss() {
    let d = tmp();
    let dir = d.path();
    let (key, _) = keygen(dir, "mem");
    let raw = dir.join("root.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(512 << 20).unwrap();
    drop(f);
    let img = dir.join("big.img");
    let part = format!("ROOT={}", raw.display());
    let args = [
        "image",
        "pack",
        "--key",
        key.to_str().unwrap(),
        "--version",
        "1.0.0",
        "--compatible",
        "mem",
        "--rollback-index",
        "1",
        "--compression",
        "zstd",
        "--part",
        &part,
        "--verity",
        "ROOT",
        "-o",
        img.to_str().unwrap(),
    ];
    let (_, rss) = run_slotctl_peak_rss(args);
    eprintln!("pack --verity: {rss} KiB peak RSS for 512 MiB");
    assert!(rss < 32 * 1024, "pack --verity peaked at {rss} KiB");
    let v = info_json(&img);
    assert_eq!(v["payloads"][0]["verity"]["data_blocks"], 131072);
    assert_eq!(
        v["payloads"][0]["raw_size"],
        (512u64 << 20) + (1024 + 8 + 1) * 4096
    );
}

/// Install writes the tree like any payload bytes: after a factory install
/// the slot's ROOT partition opens with veritysetup from the parameters of
/// the slot's signed record, and verify-slot accepts the slot.
#[test]
fn an_installed_partition_verifies_with_veritysetup() {
    require_veritysetup();
    use slotctl_tests::installfix::{ok as ran, Fix, COMPATIBLE};
    let f = Fix::new();
    let root = f.payload("root", 2 * 1024 * 1024 + 555, 8);
    let img = f.pack_extra(
        "v.img",
        "1.0.0",
        1,
        COMPATIBLE,
        &[("BOOT", &f.boot_payload()), ("ROOT", &root)],
        "chunked",
        &f.key,
        &["--verity", "ROOT"],
    );
    f.factory("A", &img);
    ran(f.run(&["verify-slot", "A"]));
    let t = info_json(&img)["payloads"][1]["verity"].clone();
    let part = f.path("root-a.part");
    std::fs::write(&part, f.read_partition("A", "ROOT")).unwrap();
    let (blocks, start) = (
        t["data_blocks"].as_u64().unwrap(),
        t["hash_start_block"].as_u64().unwrap(),
    );
    let (salt, root_hash) = (
        t["salt"].as_str().unwrap(),
        t["root_hash"].as_str().unwrap(),
    );
    assert_eq!(blocks, 513);
    assert!(veritysetup_verify(&part, blocks, start, salt, root_hash));
}
