//! README promises about the device side that had no test (issue 10, item
//! 7), against the real binary:
//!
//! - a boot check that runs over its `timeout_secs` is killed with its
//!   whole process group (a child it left in the background included), and
//!   the slot is marked bad (exit 5);
//! - `install --factory` refuses a disk the system runs from. How slotctl
//!   decides that (updater/src/device.rs): `stat("/")` gives the root's
//!   device, `/sys/dev/block/MAJ:MIN` must be a partition of the disk given
//!   with `--disk`, and that partition must belong to a slot. The test makes
//!   exactly that true without going near the host's own disks: a disk
//!   image of its own on a loop device, its partitions added with `partx`
//!   (this host's kernel does not parse GPT itself), an ext4 file system on
//!   ROOT-A mounted read-only in a private mount namespace, and slotctl run
//!   chrooted into it, so that its `/` is on ROOT-A of /dev/loopN.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use slotctl_tests::installfix::*;
use slotctl_tests::{require_tool, slotctl_bin};

/// Whether `pid` is a live process whose command line starts with `argv0`
/// (a zombie is dead: it only waits to be reaped, and this container's init
/// may never reap it; the command line guards against a reused pid).
fn live(pid: u32, argv0: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
    if state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X')) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline.starts_with(format!("{argv0}\0").as_bytes())
}

fn read_pid(p: &Path) -> u32 {
    let s = std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e} (the check did not start?)", p.display()));
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: {s:?}", p.display()))
}

#[test]
fn overrunning_check_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let bg_pid = dir.path().join("bg.pid");
    let fg_pid = dir.path().join("fg.pid");
    let sh_pid = dir.path().join("sh.pid");
    // The check (a shell) leaves a `sleep 300` in the background, then
    // waits on another one. Its output goes to /dev/null, so that a
    // survivor cannot hold slotctl's stderr pipe (and this test) open.
    let script = format!(
        "exec >/dev/null 2>&1; echo $$ > {sh}; sleep 300 & echo $! > {bg}; sleep 300 & echo $! > {fg}; wait",
        sh = sh_pid.display(),
        bg = bg_pid.display(),
        fg = fg_pid.display(),
    );
    let f = Fix::updated(&format!(
        r#"
[[boot_check.checks]]
name = "hangs-with-a-child"
command = ["sh", "-c", {script:?}]
timeout_secs = 1
"#
    ));
    let a_root = f.read_partition("A", "ROOT");
    let out = f.run(&["boot-check", "--booted", "B"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = error_line(&out);
    assert!(
        err.contains("health check \"hangs-with-a-child\" failed: timed out after 1s (killed)")
            && err.contains("slot B marked bad, rebooting"),
        "{err}"
    );
    // The shell and both its sleeps (its process group) are gone. SIGKILL is
    // delivered asynchronously: give the kernel a moment (a bounded wait,
    // not a timing assertion).
    let procs = [
        (read_pid(&sh_pid), "sh"),
        (read_pid(&bg_pid), "sleep"),
        (read_pid(&fg_pid), "sleep"),
    ];
    let t = Instant::now();
    while procs.iter().any(|&(p, a)| live(p, a)) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive: Vec<u32> = procs
        .iter()
        .filter(|&&(p, a)| live(p, a))
        .map(|&(p, _)| p)
        .collect();
    if !alive.is_empty() {
        // Do not leave them behind (they are ours: this test started them).
        for p in &alive {
            let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
        }
        panic!("processes of the timed-out check survived: {alive:?}");
    }
    // The documented outcome: B marked bad, the reboot command run, A as it was.
    assert_eq!(f.flags("B"), (0, 0, false));
    assert_eq!(f.flags("A"), (1, 0, true));
    assert!(f.rebooted.exists(), "reboot command not run");
    assert!(f.read_partition("A", "ROOT") == a_root);
}

/// Run a command, panic with its output unless it succeeds.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A loop device over a disk image of this test, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(image: &Path) -> Loop {
        let out = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(image));
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let n = dev.strip_prefix("/dev/loop").unwrap_or("");
        assert!(
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
            "losetup printed {dev:?}, not a loop device"
        );
        let l = Loop(dev);
        // Add the partitions of its GPT (read by partx in user space).
        run_ok(Command::new("partx").args(["-a", &l.0]));
        l
    }

    fn partition(&self, index: u64) -> PathBuf {
        let p = PathBuf::from(format!("{}p{index}", self.0));
        let t = Instant::now();
        while !p.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{} never appeared",
                p.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // Partitions added with partx outlive the detach: delete them first
        // (retrying while the ended namespace's mount still lets go).
        let name = self.0.trim_start_matches("/dev/");
        let sys = PathBuf::from(format!("/sys/block/{name}"));
        let has_parts = || {
            std::fs::read_dir(&sys).is_ok_and(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().starts_with(name))
            })
        };
        for _ in 0..50 {
            let _ = Command::new("partx").args(["-d", &self.0]).output();
            if !has_parts() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Mounts `part` read-only on `mnt` in a private mount namespace, binds in
/// what slotctl needs (/usr for its libraries, /sys, /dev, the fixture's
/// directory and the binary's), and runs the rest chrooted into `mnt`.
const CHROOT_SCRIPT: &str = r#"set -e
mnt=$1 part=$2 fix=$3 bindir=$4
shift 4
mount -t ext4 -o ro "$part" "$mnt"
for d in /usr /sys /dev "$fix" "$bindir"; do mount --bind "$d" "$mnt$d"; done
exec chroot "$mnt" "$@"
"#;

fn in_chroot(mnt: &Path, part: &Path, fix: &Path, args: &[OsString]) -> Output {
    let bin = slotctl_bin();
    let bindir = bin.parent().unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        CHROOT_SCRIPT,
        "sh",
    ])
    .arg(mnt)
    .arg(part)
    .arg(fix)
    .arg(bindir)
    .arg(&bin)
    .args(args);
    cmd.output().expect("run unshare")
}

#[test]
fn factory_refuses_the_disk_the_system_runs_from() {
    for t in [
        "losetup",
        "partx",
        "mkfs.ext4",
        "unshare",
        "chroot",
        "mount",
    ] {
        require_tool(t);
    }
    let f = Fix::new();
    let fix = f.dir.path().canonicalize().unwrap();
    let bin = slotctl_bin().canonicalize().unwrap();
    let r = f.payload("root1", 100_000, 1);
    let img = f.pack(
        "v1.img",
        "1.0.0",
        1,
        &[("BOOT", &f.boot_payload()), ("ROOT", &r)],
        "zstd",
    );

    // A root file system for ROOT-A: the mount points slotctl's chroot needs.
    let skel = f.path("skel");
    for d in [
        PathBuf::from("usr"),
        "sys".into(),
        "dev".into(),
        fix.strip_prefix("/").unwrap().into(),
        bin.parent().unwrap().strip_prefix("/").unwrap().into(),
    ] {
        std::fs::create_dir_all(skel.join(d)).unwrap();
    }
    for (l, t) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(t, skel.join(l)).unwrap();
    }
    let st = f.status(None);
    let root_a = st["slots"]["A"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "ROOT")
        .unwrap()
        .clone();
    let (off, size) = (
        root_a["offset"].as_u64().unwrap(),
        root_a["size"].as_u64().unwrap(),
    );
    run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "^has_journal", "-d"])
            .arg(&skel)
            .arg("-E")
            .arg(format!("offset={off}"))
            .arg(&f.disk)
            .arg(format!("{}k", size / 1024)),
    );
    let before = f.disk_bytes();

    let lo = Loop::attach(&f.disk);
    let part = lo.partition(root_a["index"].as_u64().unwrap());
    let mnt = tempfile::tempdir().unwrap();
    // slotctl's arguments: `words`, then --disk and --config.
    let argv = |words: &[&OsStr]| -> Vec<OsString> {
        let mut v: Vec<OsString> = words.iter().map(|w| w.to_os_string()).collect();
        v.extend([
            "--disk".into(),
            lo.0.clone().into(),
            "--config".into(),
            f.config.clone().into(),
        ]);
        v
    };
    let os = OsStr::new;

    // Inside, slotctl sees it runs from slot A of this disk.
    let out = ok(in_chroot(
        mnt.path(),
        &part,
        &fix,
        &argv(&[os("status"), os("--json")]),
    ));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["booted"], "A", "{st}");
    assert_eq!(st["booted_source"], "detected", "{st}");

    // So a factory install into either slot is refused, writing nothing.
    for slot in ["B", "A"] {
        let args = argv(&[
            os("install"),
            os("--factory"),
            os("--slot"),
            os(slot),
            img.as_os_str(),
        ]);
        let out = in_chroot(mnt.path(), &part, &fix, &args);
        assert_refused(
            &out,
            3,
            &format!(
                "--factory is for a fresh disk, and {} is the disk the system runs from",
                lo.0
            ),
        );
    }
    assert!(
        f.disk_bytes() == before,
        "a refused factory install changed the disk"
    );

    // Control: the same command from the host's root (not on this disk)
    // provisions the slot, so the refusal above came from the detection.
    ok(slotctl_tests::run_slotctl(argv(&[
        os("install"),
        os("--factory"),
        os("--slot"),
        os("B"),
        img.as_os_str(),
    ])));
    drop(lo);
    assert_eq!(f.flags("B"), (2, 0, true));
    f.assert_partition_holds("B", "ROOT", &r);
}
