//! Run slotctl where it might hang or eat memory on hostile local files
//! (a FIFO, /dev/zero): with a generous time limit after which the child is
//! killed and the run reported as killed (so a hang fails the test instead
//! of hanging the suite; nothing is timed), and an address-space limit
//! (`ulimit -v`), so an unbounded read fails inside the child instead of
//! pressing on the whole machine.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The generous limit: a hang, not a slow run.
pub const HANG: Duration = Duration::from_secs(60);
/// Address space for the child, in KiB (slotctl needs a few tens of MiB).
pub const VMEM_KIB: u64 = 1 << 20;

pub struct Limited {
    pub output: Output,
    /// True when the child ran past the limit and was killed.
    pub killed: bool,
}

/// Run slotctl with `args` under `ulimit -v VMEM_KIB`, killing it after
/// `limit`.
pub fn run_slotctl_limited<S: AsRef<std::ffi::OsStr>>(args: &[S], limit: Duration) -> Limited {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {VMEM_KIB} && exec \"$0\" \"$@\""))
        .arg(crate::slotctl_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn slotctl");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let mut killed = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > limit {
            // Our own child, by its pid.
            let _ = child.kill();
            killed = true;
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Limited {
        output: Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        },
        killed,
    }
}
