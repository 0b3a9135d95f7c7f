//! Every command that reads an image agrees on its length (issue 11,
//! smaller items): an image with bytes after its last payload, or cut
//! anywhere (header, signature block, first or last payload), is refused
//! by `image verify`, `image extract` (with and without the signature
//! check), `image info`, `image sign`, `feed add` and `install`, from a
//! file, from standard input and (install) over HTTP, each with exit 3
//! and one line naming the same fault. Before, `extract` exited 0 on
//! trailing bytes (and on a later payload cut off), `info` said nothing,
//! and `feed add` took trailing bytes into the feed and gave exit 1 for a
//! cut image.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use slotctl_tests::http::{Mode, TestServer};
use slotctl_tests::installfix::{assert_status_unchanged_but_target, Fix, COMPATIBLE};
use slotctl_tests::{run_slotctl, slotctl};

/// Exit 3 and exactly one stderr line besides warnings, naming `what`.
fn refused(out: &Output, what: &str, cmd: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{cmd}: {err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("slotctl: warning: "))
        .collect();
    assert_eq!(lines.len(), 1, "{cmd}: not one line: {err:?}");
    assert!(
        lines[0].starts_with("slotctl: error: ") && lines[0].contains(what),
        "{cmd}: expected {what:?} in: {err}"
    );
}

fn os(s: &str) -> OsString {
    s.into()
}

/// Run slotctl with `args`, standard input from `input` when given.
fn run_in(args: &[OsString], input: Option<&Path>) -> Output {
    let mut c = slotctl();
    c.args(args);
    c.stdin(match input {
        Some(p) => Stdio::from(File::open(p).unwrap()),
        None => Stdio::null(),
    });
    c.output().unwrap()
}

struct Case {
    name: &'static str,
    file: PathBuf,
    /// What every refusal names.
    what: String,
    /// True when the cut is before any payload: install writes nothing.
    before_payloads: bool,
}

fn cases(f: &Fix, img: &Path) -> Vec<Case> {
    let b = std::fs::read(img).unwrap();
    let info: serde_json::Value = serde_json::from_slice(
        &run_slotctl([os("--json"), os("image"), os("info"), img.into()]).stdout,
    )
    .unwrap();
    let h = info["header_len"].as_u64().unwrap() as usize;
    let s = info["signature_block_len"].as_u64().unwrap() as usize;
    let p = info["payloads"].as_array().unwrap();
    let boot_end =
        (p[0]["offset"].as_u64().unwrap() + p[0]["stored_size"].as_u64().unwrap()) as usize;
    assert_eq!(p[0]["role"], "BOOT");
    assert_eq!(b.len() as u64, info["image_len"].as_u64().unwrap());
    let write = |name: &str, bytes: &[u8]| {
        let path = f.path(&format!("{name}.img"));
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let mut trailing = b.clone();
    trailing.extend_from_slice(b"xyz");
    vec![
        Case {
            name: "trailing",
            file: write("trailing", &trailing),
            what: format!("trailing data after the last payload (at byte {})", b.len()),
            before_payloads: false,
        },
        Case {
            name: "cut-header",
            file: write("cut-header", &b[..h / 2]),
            what: "image truncated: header ends early".into(),
            before_payloads: true,
        },
        Case {
            name: "cut-signatures",
            file: write("cut-signatures", &b[..h + s / 2]),
            what: "image truncated: signature block ends early".into(),
            before_payloads: true,
        },
        Case {
            name: "cut-first-payload",
            file: write("cut-first-payload", &b[..boot_end - 10]),
            what: "image truncated: payload BOOT ends early".into(),
            before_payloads: false,
        },
        Case {
            name: "cut-last-payload",
            file: write("cut-last-payload", &b[..b.len() - 1]),
            what: "image truncated: payload ROOT ends early".into(),
            before_payloads: false,
        },
    ]
}

#[test]
fn every_command_that_reads_an_image_agrees_on_trailing_bytes_and_cuts() {
    let f = Fix::provisioned("1.0.0", 1);
    let boot = f.payload("boot2", 30_000, 2);
    let root = f.payload("root2", 60_000, 3);
    let img = f.pack(
        "v2.img",
        "2.0.0",
        1,
        &[("BOOT", &boot), ("ROOT", &root)],
        "zstd",
    );
    let public: OsString = f.keyring.join("dev.pub").into();
    let feed = f.path("feed.json");
    let init = run_slotctl([
        os("feed"),
        os("init"),
        os("--compatible"),
        os(COMPATIBLE),
        os("--feed"),
        feed.clone().into(),
    ]);
    assert!(init.status.success());
    let out = f.path("extracted");
    let verify = |src: OsString| {
        vec![
            os("image"),
            os("verify"),
            os("--pubkey"),
            public.clone(),
            src,
        ]
    };
    let extract_boot = |src: OsString| {
        vec![
            os("image"),
            os("extract"),
            os("--pubkey"),
            public.clone(),
            os("BOOT"),
            os("-o"),
            out.clone().into(),
            src,
        ]
    };
    let feed_add = |src: OsString| {
        vec![
            os("feed"),
            os("add"),
            os("--feed"),
            feed.clone().into(),
            os("--url"),
            os("v2.img"),
            src,
        ]
    };
    for c in cases(&f, &img) {
        let file: OsString = c.file.clone().into();
        let original = std::fs::read(&c.file).unwrap();
        // (args, standard input) for the commands that need no disk.
        let plain: Vec<(Vec<OsString>, Option<&Path>)> = vec![
            (verify(file.clone()), None),
            (verify(os("-")), Some(&c.file)),
            (extract_boot(file.clone()), None),
            (extract_boot(os("-")), Some(&c.file)),
            (
                vec![
                    os("image"),
                    os("extract"),
                    os("--no-verify-signature"),
                    os("ROOT"),
                    os("-o"),
                    out.clone().into(),
                    file.clone(),
                ],
                None,
            ),
            (vec![os("image"), os("info"), file.clone()], None),
            (
                vec![os("--json"), os("image"), os("info"), os("-")],
                Some(&c.file),
            ),
            (
                vec![
                    os("image"),
                    os("info"),
                    os("--pubkey"),
                    public.clone(),
                    file.clone(),
                ],
                None,
            ),
            (
                vec![
                    os("image"),
                    os("sign"),
                    os("--key"),
                    f.key.clone().into(),
                    file.clone(),
                ],
                None,
            ),
            (feed_add(file.clone()), None),
        ];
        let feed_before = std::fs::read(&feed).unwrap();
        for (args, input) in &plain {
            let cmd = format!("{}: {args:?}", c.name);
            let o = run_in(args, *input);
            refused(&o, &c.what, &cmd);
            assert!(!out.exists(), "{cmd}: extract wrote its output");
            assert_eq!(std::fs::read(&c.file).unwrap(), original, "{cmd}");
        }
        assert_eq!(std::fs::read(&feed).unwrap(), feed_before, "feed changed");

        // install from the file, from standard input and over HTTP.
        let server = TestServer::start(&c.file, Mode::Normal);
        let url = server.url("v2.img");
        for (src, input) in [
            (file.clone(), None),
            (os("-"), Some(c.file.as_path())),
            (os(&url), None),
        ] {
            let before = f.status(Some("A"));
            let disk = f.disk_bytes();
            let args = vec![
                os("install"),
                os("--booted"),
                os("A"),
                src.clone(),
                os("--disk"),
                f.disk.clone().into(),
                os("--config"),
                f.config.clone().into(),
            ];
            let cmd = format!("{}: install {src:?}", c.name);
            refused(&run_in(&args, input), &c.what, &cmd);
            if c.before_payloads {
                assert!(f.disk_bytes() == disk, "{cmd}: the disk changed");
            } else {
                assert_status_unchanged_but_target(&before, &f.status(Some("A")), "B");
            }
        }
    }
    // The intact image passes every one of them.
    let file: OsString = img.clone().into();
    for args in [
        verify(file.clone()),
        extract_boot(file.clone()),
        vec![os("image"), os("info"), file.clone()],
        feed_add(file),
    ] {
        let o = run_in(&args, None);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&boot).unwrap());
}
