//! The install's direct I/O path (boot-flags' direct.rs), on what a device
//! has: a loop device with 512- and 4096-byte logical sectors (`losetup
//! -b`, with direct I/O on its backing file, as bench/blockdev.sh and the
//! shared RAUC harness attach theirs), and a disk image file. The ROOT
//! payload is 3 MiB + 1234 bytes, so its tail is not a multiple of the
//! sector or of the 4 KiB alignment. Its second half is zeros (the
//! fixture's test bytes), so its third MiB is all zeros: that one must go
//! to the device's own zeroing (`fallocate(FALLOC_FL_ZERO_RANGE)`,
//! pipeline/zeroes.rs) over a slot filled with other bytes first.
//!
//! Each install runs under `strace`, which shows where the bytes went: the
//! disk must be opened a second time with `O_DIRECT`, the payload's full
//! 1 MiB buffers must be written (`pwrite64`, or the zero one zeroed) on
//! that descriptor and read back (`pread64`, by the read-ahead in 512 KiB
//! pieces) on it or its duplicate, and the unaligned tail through the
//! other one. Then the
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
    /// Lengths of the `FALLOC_FL_ZERO_RANGE` calls on either descriptor.
    zero_ranges: Vec<u64>,
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

/// The result descriptor of an `openat` or `fcntl(F_DUPFD...)` line.
fn result_fd(line: &str) -> u32 {
    line.rsplit_once(") = ")
        .and_then(|(_, r)| r.split('<').next()?.trim().parse::<u32>().ok())
        .unwrap_or_else(|| panic!("a call that failed: {line}"))
}

/// `logs`: one strace log per thread (`strace -ff`), so no call is split
/// across lines. First the descriptors: the `O_DIRECT` opens of the disk
/// and their duplicates (the read-ahead's `DirectReader`, a `try_clone`),
/// then the transfers.
fn parse(logs: &[String], disk: &str) -> Seen {
    let tag = format!("<{disk}>");
    let lines = || {
        logs.iter()
            .flat_map(|l| l.lines())
            .filter(|l| l.contains(&tag))
    };
    let mut direct_fds = HashSet::new();
    let mut seen = Seen::default();
    for line in lines() {
        if line.starts_with("openat(")
            && line.contains(&format!("\"{disk}\""))
            && line.contains("O_DIRECT")
        {
            direct_fds.insert(result_fd(line));
            seen.direct_opens += 1;
        }
    }
    for line in lines() {
        if line.starts_with("fcntl(")
            && line.contains("F_DUPFD")
            && fd_of(line).is_some_and(|fd| direct_fds.contains(&fd))
        {
            direct_fds.insert(result_fd(line));
        }
    }
    for call in lines() {
        if call.starts_with("fallocate(") && call.contains("FALLOC_FL_ZERO_RANGE") {
            let (args, ret) = call.rsplit_once(") = ").expect("a whole fallocate line");
            assert_eq!(ret.trim(), "0", "a zero range failed: {call}");
            let len = args.rsplit(", ").next().and_then(|l| l.parse().ok());
            seen.zero_ranges
                .push(len.unwrap_or_else(|| panic!("no length: {call}")));
            continue;
        }
        let Some(fd) = fd_of(call) else { continue };
        let direct = direct_fds.contains(&fd);
        let Some((count, ret)) = count_and_result(call) else {
            continue;
        };
        assert_eq!(count, ret, "a short transfer: {call}");
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
    // Other bytes where ROOT goes, so that the zeroed MiB must be zeroed.
    let (off, size) = f.partition("B", "ROOT");
    {
        use std::os::unix::fs::FileExt;
        let d = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
        d.write_all_at(&vec![0xa5; size as usize], off).unwrap();
        d.sync_all().unwrap();
    }
    // One log per thread (`-ff`: `strace.log.TID`), so that no call is
    // split by another thread's (the read-ahead reads while the writer
    // writes).
    let logdir = f.path("strace");
    std::fs::create_dir_all(&logdir).unwrap();
    let log = logdir.join("log");
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
        .args(["-ff", "-qq", "-y", "-s", "0", "-o"])
        .arg(&log)
        .args(["-e", "trace=openat,fcntl,pwrite64,pread64,fallocate", "--"])
        .arg(slotctl_bin())
        .args(&args)
        .output()
        .expect("run strace");
    let out = ok(out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    check_timing(&stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["timing"]["zeroed_bytes"], MIB, "{stdout}");
    let logs: Vec<String> = std::fs::read_dir(&logdir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(logs.len() > 1, "one log per thread");
    let seen = parse(&logs, &disk.display().to_string());
    let what = format!("{} ({compression}): {seen:?}", disk.display());
    assert!(seen.direct_opens >= 1, "no O_DIRECT open of {what}");
    // Of the 3 full MiB of ROOT, the two with data go direct, in 1 MiB
    // writes, and the zero one as one zero range; its 1234-byte tail
    // (zeros too) is written, not zeroed, and not direct (not a multiple
    // of the alignment).
    assert_eq!(seen.zero_ranges, [MIB], "ROOT's zero MiB: {what}");
    assert!(
        seen.direct_written >= 2 * MIB
            && seen.direct_written < 3 * MIB
            && seen.direct_write_sizes.contains(&MIB),
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
    // The read-back reads the same MiB directly: the read-ahead, while the
    // stream writes, in 512 KiB pieces (pipeline/ahead.rs).
    assert!(
        seen.direct_read >= 3 * MIB && seen.direct_read_sizes.contains(&(512 << 10)),
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
    // The read-ahead reads the full MiB during the stream and the flush.
    let whole = stream + s(&t["flush_s"]) + rb;
    for part in ["read", "hash"] {
        let b = s(&t["readahead_busy_s"][part]);
        assert!(b > 0.0 && b <= whole + 0.003, "read-ahead {part}: {t}");
    }
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
    let main = "openat(AT_FDCWD</t>, \"/dev/loop9\", O_RDWR|O_CLOEXEC|O_DIRECT) = 5</dev/loop9>\n\
                pwrite64(5</dev/loop9>, \"\"..., 1048576, 4194304) = 1048576\n\
                pwrite64(4</dev/loop9>, \"\"..., 1234, 5242880) = 1234\n\
                fcntl(5</dev/loop9>, F_DUPFD_CLOEXEC, 3) = 7</dev/loop9>\n\
                fcntl(4</dev/loop9>, F_DUPFD_CLOEXEC, 3) = 8</dev/loop9>\n\
                fallocate(4</dev/loop9>, FALLOC_FL_KEEP_SIZE|FALLOC_FL_ZERO_RANGE, 3145728, 1048576) = 0\n";
    // Another thread's log: reads on the duplicate of the direct descriptor
    // are direct, on the duplicate of the other one not.
    let other = "pread64(7</dev/loop9>, \"\"..., 1048576, 4194304) = 1048576\n\
                 pread64(8</dev/loop9>, \"\"..., 4096, 0) = 4096\n";
    let s = parse(&[other.to_string(), main.to_string()], "/dev/loop9");
    assert_eq!(s.direct_opens, 1);
    assert_eq!(s.direct_written, MIB);
    assert_eq!(s.cached_written, 1234);
    assert_eq!(s.direct_read, MIB);
    assert_eq!(s.zero_ranges, [MIB]);
}
