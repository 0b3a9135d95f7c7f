//! The install's direct I/O path (boot-flags' direct.rs), on what a device
//! has: a loop device with 512- and 4096-byte logical sectors (`losetup
//! -b`, with direct I/O on its backing file, as bench/blockdev.sh and the
//! shared RAUC harness attach theirs), and a disk image file. The ROOT
//! payload is 3 MiB + 1234 bytes, so its tail is not a multiple of the
//! sector or of the 4 KiB alignment.
//!
//! Each install runs under `strace`, which shows where the bytes went: the
//! disk must be opened a second time with `O_DIRECT`, the payload's full
//! 1 MiB buffers must be written (`pwrite64`) and read back (`pread64`) on
//! that descriptor, and the unaligned tail through the other one. Then the
//! slot must hold the payload byte for byte (read from the backing file)
//! and `verify-slot` must pass, so a path that wrote the wrong bytes, or
//! silently fell back to the page cache, fails here. The `--json` result's
//! `timing` (where the install's time went) is checked for its shape.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use slotctl_tests::installfix::{ok, Fix};
use slotctl_tests::{require_tool, slotctl_bin};

const MIB: u64 = 1 << 20;
const ROOT_LEN: usize = 3 * (1 << 20) + 1234;

/// A loop device over `file` with `sector`-byte sectors and direct I/O,
/// detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, sector: u32) -> Loop {
        require_tool("losetup");
        let out = Command::new("losetup")
            .args(["-b", &sector.to_string(), "--direct-io=on", "-f", "--show"])
            .arg(file)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// What strace saw on the disk: bytes written and read per kind of
/// descriptor, and the sizes of the direct transfers.
#[derive(Debug, Default)]
struct Seen {
    direct_opens: usize,
    direct_written: u64,
    direct_read: u64,
    cached_written: u64,
    direct_write_sizes: HashSet<u64>,
    direct_read_sizes: HashSet<u64>,
}

/// The descriptor number of a call's first argument: `pwrite64(5</dev/x>, ...`.
fn fd_of(call: &str) -> Option<u32> {
    let args = call.split_once('(')?.1;
    args[..args.find('<')?].parse().ok()
}

/// `(count, offset)` of a `pwrite64`/`pread64` line, and its result.
fn count_and_result(line: &str) -> Option<(u64, u64)> {
    let (args, ret) = line.rsplit_once(") = ")?;
    let mut it = args.rsplit(", ");
    let _off = it.next()?;
    let count: u64 = it.next()?.parse().ok()?;
    let ret: u64 = ret.trim().parse().ok()?;
    Some((count, ret))
}

fn parse(log: &str, disk: &str) -> Seen {
    let tag = format!("<{disk}>");
    let mut direct_fds = HashSet::new();
    let mut seen = Seen::default();
    for line in log.lines() {
        if !line.contains(&tag) {
            continue;
        }
        if line.contains("openat(") && line.contains(&format!("\"{disk}\"")) {
            if line.contains("O_DIRECT") {
                let fd = line
                    .rsplit_once(") = ")
                    .and_then(|(_, r)| r.split('<').next()?.trim().parse::<u32>().ok())
                    .unwrap_or_else(|| panic!("an O_DIRECT open that failed: {line}"));
                direct_fds.insert(fd);
                seen.direct_opens += 1;
            }
            continue;
        }
        let call = line.split_once(' ').map_or(line, |(_, c)| c.trim_start());
        let Some(fd) = fd_of(call) else { continue };
        let direct = direct_fds.contains(&fd);
        let Some((count, ret)) = count_and_result(call) else {
            continue;
        };
        assert_eq!(count, ret, "a short transfer: {line}");
        if call.starts_with("pwrite64(") {
            if direct {
                seen.direct_written += count;
                seen.direct_write_sizes.insert(count);
            } else {
                seen.cached_written += count;
            }
        } else if call.starts_with("pread64(") && direct {
            seen.direct_read += count;
            seen.direct_read_sizes.insert(count);
        }
    }
    seen
}

/// Install a 3 MiB + 1234-byte ROOT into B through `disk` (the fixture's
/// disk, provisioned, or a loop device over it) under strace; check the
/// transfers and the slot.
fn install_direct(f: &Fix, disk: &Path, compression: &str) {
    require_tool("strace");
    let (img, root) = f.image_with("v2.img", "2.0.0", 1, ROOT_LEN, 7, compression);
    let log = f.path("strace.log");
    let mut args: Vec<OsString> = vec![
        "--json".into(),
        "install".into(),
        "--booted".into(),
        "A".into(),
    ];
    args.push(img.into());
    args.extend(["--disk".into(), disk.into(), "--config".into()]);
    args.push(f.config.clone().into());
    let out = Command::new("strace")
        .args(["-f", "-qq", "-y", "-s", "0", "-o"])
        .arg(&log)
        .args(["-e", "trace=openat,pwrite64,pread64", "--"])
        .arg(slotctl_bin())
        .args(&args)
        .output()
        .expect("run strace");
    let out = ok(out);
    check_timing(&String::from_utf8_lossy(&out.stdout));
    let seen = parse(
        &std::fs::read_to_string(&log).unwrap(),
        &disk.display().to_string(),
    );
    let what = format!("{} ({compression}): {seen:?}", disk.display());
    assert!(seen.direct_opens >= 1, "no O_DIRECT open of {what}");
    // The 3 full MiB of ROOT go direct, in 1 MiB writes; its 1234-byte
    // tail does not (not a multiple of the alignment).
    assert!(
        seen.direct_written >= 3 * MIB && seen.direct_write_sizes.contains(&MIB),
        "ROOT's full MiB were not written direct: {what}"
    );
    assert!(
        seen.direct_written % 4096 == 0,
        "a direct write of a length not aligned: {what}"
    );
    assert!(
        seen.cached_written >= 1234,
        "the unaligned tail did not go through the page cache: {what}"
    );
    // The read-back reads the same MiB directly.
    assert!(
        seen.direct_read >= 3 * MIB && seen.direct_read_sizes.contains(&MIB),
        "the read-back did not read direct: {what}"
    );
    f.assert_partition_holds("B", "ROOT", &root);
    ok(f.run(&["verify-slot", "B"]));
    assert_eq!(f.flags("B"), (2, 3, false), "{what}");
}

/// `install --json`'s `timing`: the stream, its stages' busy times (each
/// within the stream's wall time), the flush and the read-back.
fn check_timing(stdout: &str) {
    let last = stdout.lines().last().expect("a result line");
    let r: serde_json::Value = serde_json::from_str(last).expect("JSON");
    assert_eq!(r["event"], "result", "{stdout}");
    let t = &r["timing"];
    let s = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("not seconds: {t}"));
    let stream = s(&t["stream_s"]);
    assert!(stream > 0.0, "{t}");
    for stage in ["read", "decode", "hash", "write"] {
        let b = s(&t["busy_s"][stage]);
        // Rounded to the millisecond each.
        assert!(
            b <= stream + 0.002,
            "{stage} busy longer than the stream: {t}"
        );
    }
    assert!(s(&t["busy_s"]["write"]) > 0.0, "{t}");
    assert!(s(&t["flush_s"]) >= 0.0, "{t}");
    let rb = s(&t["readback_s"]);
    assert!(rb > 0.0, "{t}");
    assert!(s(&t["readback_busy_s"]["read"]) <= rb + 0.002, "{t}");
    assert!(s(&t["readback_busy_s"]["hash"]) <= rb + 0.002, "{t}");
}

#[test]
fn loop_device_with_512_byte_sectors() {
    let f = Fix::provisioned("1.0.0", 1);
    let l = Loop::attach(&f.disk, 512);
    install_direct(&f, Path::new(&l.0), "zstd");
}

#[test]
fn loop_device_with_4096_byte_sectors() {
    let f = Fix::new();
    f.reinit_disk(4096);
    f.provision_a("1.0.0", 1);
    let l = Loop::attach(&f.disk, 4096);
    install_direct(&f, Path::new(&l.0), "none");
}

#[test]
fn disk_image_file() {
    let f = Fix::provisioned("1.0.0", 1);
    install_direct(&f, &f.disk.clone(), "zstd");
}

#[test]
fn parses_strace_lines() {
    let log =
        "12 openat(AT_FDCWD</t>, \"/dev/loop9\", O_RDWR|O_CLOEXEC|O_DIRECT) = 5</dev/loop9>\n\
               12 pwrite64(5</dev/loop9>, \"\"..., 1048576, 4194304) = 1048576\n\
               12 pwrite64(4</dev/loop9>, \"\"..., 1234, 5242880) = 1234\n\
               12 pread64(5</dev/loop9>, \"\"..., 1048576, 4194304) = 1048576\n";
    let s = parse(log, "/dev/loop9");
    assert_eq!(s.direct_opens, 1);
    assert_eq!(s.direct_written, MIB);
    assert_eq!(s.cached_written, 1234);
    assert_eq!(s.direct_read, MIB);
}
