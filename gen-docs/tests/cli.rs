//! The `slotctl-gen-docs` binary: what it writes, and one line on bad input.

use std::process::{Command, Output};

fn run(args: &[&std::ffi::OsStr], epoch: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slotctl-gen-docs"));
    cmd.args(args);
    match epoch {
        Some(e) => cmd.env("SOURCE_DATE_EPOCH", e),
        None => cmd.env_remove("SOURCE_DATE_EPOCH"),
    };
    cmd.output().expect("spawn slotctl-gen-docs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn writes_pages_and_completions_dated_by_source_date_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[dir.path().as_os_str()], Some("86400"));
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8(out.stdout).unwrap();
    for f in [
        "man/slotctl.1",
        "man/slotctl-install.1",
        "man/slotctl-image-pack.1",
    ] {
        let path = dir.path().join(f);
        assert!(
            listed.contains(path.to_str().unwrap()),
            "{f} not listed: {listed}"
        );
        let th = std::fs::read_to_string(&path).unwrap();
        assert!(th.contains(" 1 1970-01-02 \"slotctl "), "{f}: {th}");
    }
    let toml5 = std::fs::read_to_string(dir.path().join("man/slotctl.toml.5")).unwrap();
    assert!(
        toml5.contains(".TH SLOTCTL.TOML 5 \"1970-01-02\" \"slotctl "),
        "{toml5}"
    );
    assert!(!toml5.contains('@'), "a placeholder left: {toml5}");
    for f in ["slotctl.bash", "_slotctl", "slotctl.fish"] {
        assert!(dir.path().join("completions").join(f).is_file(), "{f}");
    }
}

#[test]
fn bad_input_gets_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let cases: [(Vec<&std::ffi::OsStr>, Option<&str>, i32, &str); 4] = [
        (vec![], None, 2, "usage: slotctl-gen-docs OUT_DIR"),
        (vec!["a".as_ref(), "b".as_ref()], None, 2, "usage:"),
        (
            vec![dir.path().as_os_str()],
            Some("yesterday"),
            1,
            "SOURCE_DATE_EPOCH",
        ),
        (vec![file.as_os_str()], None, 1, "a-file"),
    ];
    for (args, epoch, code, want) in cases {
        let out = run(&args, epoch);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // The refused runs wrote nothing.
    assert!(!dir.path().join("man").exists());
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}
