//! Issue 11 items 5 and 6: local files an attacker with write access to
//! their directory (`/run` for the lock, the state directory) can shape.
//! The lock file and the agent state must never follow a symlink into
//! another file, never block on a FIFO and never read without bound; each
//! refusal is one line naming the file and what is wrong, and the disk is
//! left byte-identical.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use slotctl_tests::feedenv::Env;
use slotctl_tests::installfix::{assert_refused, stderr, Fix};
use slotctl_tests::limited::{run_slotctl_limited, Limited, HANG};

const PRECIOUS: &str = "precious content, not slotctl's\n";

/// A fixture whose slot A holds 1.0.0 and a 2.0.0 image to install.
fn install_fix() -> (Fix, PathBuf) {
    let fix = Fix::provisioned("1.0.0", 1);
    let (v2, _) = fix.image("v2.img", "2.0.0", 1, 50_000, 2);
    (fix, v2)
}

fn install(fix: &Fix, image: &Path) -> Limited {
    let args = [
        OsStr::new("install"),
        image.as_os_str(),
        "--booted".as_ref(),
        "A".as_ref(),
    ];
    run_slotctl_limited(&fix.args(&args), HANG)
}

/// Not killed, exit `code`, one `slotctl: error:` line naming `what`.
fn assert_one_line(run: &Limited, code: i32, what: &str) {
    assert!(!run.killed, "slotctl hung (killed after {HANG:?})");
    assert_refused(&run.output, code, what);
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("mkfifo");
    assert!(st.success(), "mkfifo {}", p.display());
}

#[test]
fn lock_file_symlink_to_a_victim_is_refused_and_the_victim_kept() {
    let (fix, v2) = install_fix();
    let victim = fix.path("victim");
    std::fs::write(&victim, PRECIOUS).unwrap();
    std::fs::remove_file(&fix.lock).unwrap();
    std::os::unix::fs::symlink(&victim, &fix.lock).unwrap();
    let before = fix.disk_bytes();
    let run = install(&fix, &v2);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), PRECIOUS);
    assert_one_line(&run, 1, "is a symbolic link");
    assert!(stderr(&run.output).contains(&fix.lock.display().to_string()));
    assert!(fix.disk_bytes() == before, "the disk changed");

    // A dangling symlink: nothing is created at its target either.
    let absent = fix.path("absent");
    std::fs::remove_file(&fix.lock).unwrap();
    std::os::unix::fs::symlink(&absent, &fix.lock).unwrap();
    let run = install(&fix, &v2);
    assert_one_line(&run, 1, "is a symbolic link");
    assert!(!absent.exists(), "the symlink's target was created");
    assert!(fix.disk_bytes() == before, "the disk changed");
}

#[test]
fn lock_path_that_is_not_a_regular_file_is_refused() {
    let (fix, v2) = install_fix();
    let before = fix.disk_bytes();
    std::fs::remove_file(&fix.lock).unwrap();
    type Make<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Make); 3] = [
        ("is a FIFO", &|p| mkfifo(p)),
        ("is a directory", &|p| std::fs::create_dir(p).unwrap()),
        // /dev/null's own node, made where the lock goes.
        ("is a character device", &|p| {
            let st = Command::new("mknod")
                .args([p.as_os_str(), "c".as_ref(), "1".as_ref(), "3".as_ref()])
                .status()
                .expect("mknod");
            assert!(st.success(), "mknod (the tests run as root)");
        }),
    ];
    for (what, make) in cases {
        make(&fix.lock);
        let run = install(&fix, &v2);
        assert_one_line(&run, 1, what);
        assert!(fix.disk_bytes() == before, "the disk changed ({what})");
        let m = std::fs::symlink_metadata(&fix.lock).unwrap();
        if m.is_dir() {
            std::fs::remove_dir(&fix.lock).unwrap();
        } else {
            std::fs::remove_file(&fix.lock).unwrap();
        }
    }
    // And a regular file that is not a pid file is locked, not rewritten.
    std::fs::write(&fix.lock, PRECIOUS).unwrap();
    let run = install(&fix, &v2);
    assert!(run.output.status.success(), "{}", stderr(&run.output));
    assert_eq!(std::fs::read_to_string(&fix.lock).unwrap(), PRECIOUS);
}

/// A disk with slot A good, a signed empty feed on 127.0.0.1, and the
/// agent pointed at it; its state directory (created, empty).
fn feed_env() -> (Env, PathBuf) {
    let env = Env::new("");
    env.sign();
    let state = env.fix.path("state");
    std::fs::create_dir_all(&state).unwrap();
    (env, state)
}

fn agent_cmd(fix: &Fix, cmd: &str) -> Limited {
    run_slotctl_limited(&fix.args(&[cmd, "--booted", "A"]), HANG)
}

fn read_proc(name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
        .unwrap_or_else(|e| panic!("/proc/sys/kernel/{name}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn state_temp_name_symlinks_cannot_redirect_check() {
    let (env, state) = feed_env();
    let fix = &env.fix;
    let victim = fix.path("victim");
    std::fs::write(&victim, PRECIOUS).unwrap();
    // The old temp name was `.agent.json.tmp.<pid>`: plant it for every pid
    // the next process can get (all of them when pid_max is small, else a
    // wide window past the last one handed out).
    let pid_max = read_proc("pid_max");
    let pids: Vec<u64> = if pid_max <= 65_536 {
        (1..pid_max).collect()
    } else {
        let last = read_proc("ns_last_pid");
        (1..=50_000).map(|i| (last + i) % pid_max).collect()
    };
    for pid in &pids {
        std::os::unix::fs::symlink(&victim, state.join(format!(".agent.json.tmp.{pid}"))).unwrap();
    }
    let before = fix.disk_bytes();
    let run = agent_cmd(fix, "check");
    assert!(!run.killed, "check hung");
    assert!(run.output.status.success(), "{}", stderr(&run.output));
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        PRECIOUS,
        "check wrote through a planted temp-name symlink"
    );
    let st = state.join("agent.json");
    assert!(
        std::fs::symlink_metadata(&st)
            .unwrap()
            .file_type()
            .is_file(),
        "agent.json must be a regular file"
    );
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&st).unwrap()).unwrap();
    assert!(saved["seed"].is_u64(), "{saved}");
    // The last check (its own file, written the same way) is a regular file.
    let lc = std::fs::symlink_metadata(state.join("last-check.json")).unwrap();
    assert!(
        lc.file_type().is_file(),
        "last-check.json must be a regular file"
    );
    // Nothing else was left in the directory: the planted links, the state
    // and the last check.
    let others: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            n != "agent.json" && n != "last-check.json" && !n.starts_with(".agent.json.tmp.")
        })
        .collect();
    assert!(others.is_empty(), "left behind: {others:?}");
    assert!(fix.disk_bytes() == before, "check changed the disk");
}

#[test]
fn state_file_that_reads_forever_is_refused_in_one_line() {
    let (env, state) = feed_env();
    let fix = &env.fix;
    let st = state.join("agent.json");
    let before = fix.disk_bytes();
    // agent.json -> /dev/zero, then /dev/zero's own node in its place,
    // then a regular file past the bound.
    std::os::unix::fs::symlink("/dev/zero", &st).unwrap();
    let run = agent_cmd(fix, "check");
    assert_one_line(&run, 1, "is a symbolic link");
    assert!(stderr(&run.output).contains(&st.display().to_string()));
    std::fs::remove_file(&st).unwrap();
    let mk = Command::new("mknod")
        .args([st.as_os_str(), "c".as_ref(), "1".as_ref(), "5".as_ref()])
        .status()
        .expect("mknod");
    assert!(mk.success(), "mknod (the tests run as root)");
    let run = agent_cmd(fix, "check");
    assert_one_line(&run, 1, "is a character device, not a regular file");
    std::fs::remove_file(&st).unwrap();
    std::fs::write(&st, vec![b' '; 300 * 1024]).unwrap();
    let run = agent_cmd(fix, "check");
    assert_one_line(&run, 1, "is larger than 262144 bytes");
    assert!(fix.disk_bytes() == before, "the disk changed");
}

#[test]
fn state_file_fifo_is_refused_without_hanging() {
    let (env, state) = feed_env();
    let fix = &env.fix;
    let st = state.join("agent.json");
    mkfifo(&st);
    let before = fix.disk_bytes();
    for cmd in ["check", "update"] {
        let run = agent_cmd(fix, cmd);
        assert_one_line(&run, 1, "is a FIFO, not a regular file");
    }
    // status reports the state it cannot read, and goes on.
    let run = agent_cmd(fix, "status");
    assert!(!run.killed, "status hung on the FIFO");
    assert!(run.output.status.success(), "{}", stderr(&run.output));
    let out = String::from_utf8_lossy(&run.output.stdout);
    assert!(
        out.contains("cannot read agent state") && out.contains("is a FIFO"),
        "{out}"
    );
    assert!(fix.disk_bytes() == before, "the disk changed");
}

#[test]
fn config_and_feed_files_that_read_forever_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    for (path, what) in [
        (Path::new("/dev/zero"), "is a character device"),
        (fifo.as_path(), "is a FIFO"),
        (dir.path(), "is a directory"),
    ] {
        let run = run_slotctl_limited(
            &["status".as_ref(), "--config".as_ref(), path.as_os_str()],
            HANG,
        );
        assert_one_line(&run, 1, &format!("config {}: {what}", path.display()));
        let run = run_slotctl_limited(
            &[
                "feed".as_ref(),
                "show".as_ref(),
                "--feed".as_ref(),
                path.as_os_str(),
            ],
            HANG,
        );
        assert_one_line(&run, 1, &format!("feed {}: {what}", path.display()));
        // A public key file (the keyring's, or --pubkey) likewise.
        let run = run_slotctl_limited(
            &[
                "image".as_ref(),
                "verify".as_ref(),
                "--pubkey".as_ref(),
                path.as_os_str(),
                dir.path().join("absent.img").as_os_str(),
            ],
            HANG,
        );
        assert!(!run.killed, "image verify hung on {}", path.display());
        let err = stderr(&run.output);
        assert!(!run.output.status.success(), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("slotctl: error: ")
                && err.contains(&path.display().to_string())
                && err.contains("not a regular file"),
            "{err}"
        );
    }
}
