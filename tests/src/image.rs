//! Helpers for the image tests: keys, parts, packing through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::run_slotctl;

/// Deterministic pseudo-random bytes (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Panic with the command's output unless it succeeded; return stdout.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Assert a refusal: exit code `code`, and stderr is exactly one
/// `slotctl: error: ...` line (besides `slotctl: warning:` lines); returns it.
pub fn refused(out: Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}; stderr: {stderr} stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("slotctl: warning: "))
        .collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr:?}");
    assert!(lines[0].starts_with("slotctl: error: "), "{stderr:?}");
    lines[0].to_owned()
}

/// `slotctl keygen --out DIR/NAME`; returns (NAME.key, NAME.pub).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let base = dir.join(name);
    ok(
        run_slotctl(["keygen".as_ref(), "--out".as_ref(), base.as_os_str()]),
        "keygen",
    );
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// Run a shell command line (for openssl/zstd/head/tail pipelines).
pub fn sh(script: &str, dir: &Path) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("spawn sh")
}

/// Write `len` pseudo-random bytes to `path`.
pub fn write_noise(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let data = noise(len, seed);
    std::fs::write(path, &data).unwrap();
    data
}

/// `slotctl image pack` with the given keys and `--part` values into `out`.
pub fn pack(keys: &[&Path], parts: &[String], out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec![
        "image".into(),
        "pack".into(),
        "--version".into(),
        "1.4.2".into(),
        "--compatible".into(),
        "acme-gw".into(),
        "--rollback-index".into(),
        "7".into(),
        "-o".into(),
        out.display().to_string(),
    ];
    for k in keys {
        args.push("--key".into());
        args.push(k.display().to_string());
    }
    for p in parts {
        args.push("--part".into());
        args.push(p.clone());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    run_slotctl(args)
}

/// The openssl verification script, extracted from docs/image-format.md
/// (the block after the `openssl-verify-script` marker), so the test runs
/// exactly what the doc prints.
pub fn doc_openssl_script() -> String {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/image-format.md");
    let text = std::fs::read_to_string(&doc).expect("read docs/image-format.md");
    let start = text
        .find("<!-- openssl-verify-script")
        .expect("marker in the doc");
    let rest = &text[start..];
    let body = &rest[rest.find("```sh\n").expect("sh block") + 6..];
    body[..body.find("\n```").expect("end of block")].to_owned() + "\n"
}

/// A fresh temporary directory.
pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// BOOT (zstd, compressible) and ROOT (none, random) parts in `dir`, as
/// `--part` values.
pub fn parts(dir: &Path) -> Vec<String> {
    std::fs::write(dir.join("boot.img"), b"kernel and initramfs ".repeat(5000)).unwrap();
    write_noise(&dir.join("root.img"), 300_000, 11);
    vec![
        format!("BOOT={}", dir.join("boot.img").display()),
        format!("ROOT:none={}", dir.join("root.img").display()),
    ]
}
