//! Record what the real `slotctl` binary writes to a disk image, with
//! `strace`: every `pwrite64` (offset and bytes) and every `fsync` /
//! `fdatasync` on the image, in order. The result is a [`Trace`] the
//! power-cut enumeration replays, so the install under test is the real
//! binary's, not a re-implementation of its steps.
//!
//! The capture refuses to guess: any other write-like call on the image
//! (`write`, `pwritev`, `ftruncate`, `fallocate`, `sync_file_range`, ...),
//! a truncated data string, a short write, or disk writes from more than one
//! thread fail the test. The caller also checks that replaying the trace on
//! the disk as it was gives the disk as the binary left it.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use super::{Event, Trace, Write};

/// Syscalls traced: every way a process could change or sync the file.
const TRACED: &str = "trace=pwrite64,pwritev,pwritev2,write,writev,fsync,fdatasync,\
sync_file_range,ftruncate,fallocate,msync,copy_file_range,sendfile,splice,syncfs,sync";

fn hex_path(p: &Path) -> String {
    p.as_os_str()
        .as_encoded_bytes()
        .iter()
        .map(|b| format!("\\x{b:02x}"))
        .collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    if b.len() % 4 != 0 {
        return Err(format!("odd escaped string of {} chars", b.len()));
    }
    b.chunks_exact(4)
        .map(|c| {
            if &c[..2] != b"\\x" {
                return Err("not a \\x escape".to_string());
            }
            let h = std::str::from_utf8(&c[2..]).map_err(|e| e.to_string())?;
            u8::from_str_radix(h, 16).map_err(|e| e.to_string())
        })
        .collect()
}

/// Run `cmd` under strace and return its output and the events on `disk`.
/// `base` is the disk's content before the run (all durable).
pub fn record_binary(
    cmd: Command,
    disk: &Path,
    base: Vec<u8>,
    sector: u32,
    log: &Path,
) -> (Output, Trace) {
    crate::require_tool("strace");
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut st = Command::new("strace");
    st.args([
        "-f", "-qq", "-y", "-xx", "-s", "67108864", "-e", TRACED, "-o",
    ])
    .arg(log)
    .arg("--")
    .arg(prog)
    .args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => st.env(k, v),
            None => st.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        st.current_dir(d);
    }
    let out = st.output().expect("run strace");
    let text = std::fs::read_to_string(log).expect("read the strace log");
    let events = parse(&text, disk).unwrap_or_else(|e| panic!("strace capture of {disk:?}: {e}"));
    (
        out,
        Trace {
            base,
            events,
            sector,
        },
    )
}

/// Parse an `strace -f -y -xx` log into the events on `disk`.
pub fn parse(text: &str, disk: &Path) -> Result<Vec<Event>, String> {
    let tag = format!("<{}>", hex_path(disk));
    let mut unfinished: HashMap<String, String> = HashMap::new();
    let mut events = Vec::new();
    let mut writer_pid: Option<String> = None;
    for raw in text.lines() {
        // strace pads the pid column ("123   call(...)").
        let (pid, rest) = raw.split_once(' ').ok_or("a line without a pid")?;
        let rest = rest.trim_start();
        let line: String = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            unfinished.insert(pid.to_string(), head.to_string());
            continue;
        } else if let Some(tail) = rest.strip_prefix("<... ") {
            let head = unfinished
                .remove(pid)
                .ok_or("a resumed call that never started")?;
            let tail = tail.split_once("resumed>").ok_or("bad resumed line")?.1;
            format!("{head}{tail}")
        } else {
            rest.to_string()
        };
        if !line.contains(&tag) {
            continue;
        }
        let name = line.split('(').next().unwrap_or("");
        match writer_pid.as_deref() {
            None => writer_pid = Some(pid.to_string()),
            Some(p) if p == pid => {}
            Some(p) => return Err(format!("disk calls from threads {p} and {pid}")),
        }
        match name {
            "pwrite64" => {
                let (_, after) = line.split_once(", \"").ok_or("pwrite64 without data")?;
                let (data, tail) = after.split_once("\", ").ok_or("truncated pwrite64 data")?;
                let data = unhex(data)?;
                let (args, ret) = tail.rsplit_once(") = ").ok_or("pwrite64 without result")?;
                let mut it = args.split(", ");
                let count: usize = it.next().and_then(|c| c.parse().ok()).ok_or("count")?;
                let off: u64 = it.next().and_then(|c| c.parse().ok()).ok_or("offset")?;
                let ret: usize = ret
                    .trim()
                    .parse()
                    .map_err(|_| format!("failed write: {line:.200}"))?;
                if ret != count || data.len() != count {
                    return Err(format!(
                        "short or truncated write: {count} asked, {ret} written, {} captured",
                        data.len()
                    ));
                }
                events.push(Event::Write(Write { off, data }));
            }
            "fsync" | "fdatasync" => {
                if !line.trim_end().ends_with("= 0") {
                    return Err(format!("failed {name}: {line}"));
                }
                events.push(Event::Flush);
            }
            other => {
                return Err(format!(
                    "unsupported call on the disk: {other} ({line:.200})"
                ))
            }
        }
    }
    if !unfinished.is_empty() {
        return Err("calls still unfinished at the end of the log".into());
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_writes_flushes_and_resumed_calls() {
        let p = Path::new("/t/d");
        let h = hex_path(p);
        let log = format!(
            "10 pwrite64(3<{h}>, \"\\x61\\x62\", 2, 512) = 2\n\
             11   write(1<\\x2f>, \"\\x41\", 1) = 1\n\
             10 pwrite64(3<{h}>, \"\\x63\", 1, 7 <unfinished ...>\n\
             11 write(1<\\x2f>, \"\\x41\", 1) = 1\n\
             10 <... pwrite64 resumed>) = 1\n\
             10 fsync(3<{h}>) = 0\n"
        );
        let ev = parse(&log, p).unwrap();
        assert_eq!(
            ev,
            vec![
                Event::Write(Write {
                    off: 512,
                    data: b"ab".to_vec()
                }),
                Event::Write(Write {
                    off: 7,
                    data: b"c".to_vec()
                }),
                Event::Flush
            ]
        );
        let bad = format!("10 ftruncate(3<{h}>, 0) = 0\n");
        assert!(parse(&bad, p).unwrap_err().contains("ftruncate"));
        let trunc = format!("10 pwrite64(3<{h}>, \"\\x61\"..., 2, 0) = 2\n");
        assert!(parse(&trunc, p).is_err());
    }
}
