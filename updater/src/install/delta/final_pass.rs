//! Step 5 of a delta install: the final pass. After the flush, the target
//! payload is read front to back from the medium (page cache dropped),
//! each group is hashed against the signed table (a group without a hash
//! must be all zeros) and the whole payload against the header's SHA-256.
//! It always runs, `--no-readback` or not: it is the only whole check of a
//! payload assembled from several sources.
//!
//! The device is read on the caller's thread (it is not `Send`), into
//! aligned buffers so that a `FileDevice` reads them directly from the disk
//! as the stream's read-back does (docs/performance.md); the two hashes run
//! on two other threads over the same buffers, so the pass costs about one
//! SHA-256 of the payload in time, not two. At most [`DEPTH`] + 2 buffers
//! of [`READ`] bytes exist.

use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use boot_flags::AlignedBuf;
use image_format::ChunkTable;
use sha2::{Digest, Sha256};

use super::{BlockDevice, DeltaError, Target};

/// Read size of the pass (a whole number of blocks, see [`read_size`]).
const READ: u64 = 1 << 20;
/// Buffers queued per hashing thread.
const DEPTH: usize = 2;

/// What the pass found.
#[derive(Debug, Default)]
pub struct PassResult {
    /// Groups whose bytes do not match the table.
    pub bad: Vec<u32>,
    /// The whole payload's SHA-256 matches the header's.
    pub whole_ok: bool,
}

/// A read size that is a whole number of `block`-byte blocks.
fn read_size(block: u64) -> u64 {
    (READ / block).max(1) * block
}

/// Read the target payload once and check every group and the whole.
pub fn final_pass(
    t: &Target<'_>,
    dev: &mut dyn BlockDevice,
    mut on_progress: impl FnMut(u64),
) -> Result<PassResult, DeltaError> {
    let table = t.table;
    dev.drop_cache(t.dest, t.raw_size)
        .map_err(|e| t.read_err(0, e))?;
    let step = read_size(u64::from(table.block_size()));
    let (whole_tx, whole_rx) = sync_channel::<Arc<AlignedBuf>>(DEPTH);
    let (group_tx, group_rx) = sync_channel::<Arc<AlignedBuf>>(DEPTH);
    std::thread::scope(|s| {
        let whole = s.spawn(move || {
            let mut h = Sha256::new();
            for buf in whole_rx {
                h.update(&buf[..]);
            }
            h.finalize()
        });
        let groups = s.spawn(move || {
            let mut check = GroupCheck::new(table);
            for buf in group_rx {
                check.feed(&buf);
            }
            check.bad
        });
        let mut spare: Vec<Arc<AlignedBuf>> = Vec::new();
        let mut pos = 0u64;
        let mut result = Ok(());
        while pos < t.raw_size {
            let n = step.min(t.raw_size - pos) as usize;
            // A buffer both hashers are done with, else a new one.
            let mut buf = spare
                .iter()
                .position(|b| Arc::strong_count(b) == 1)
                .map(|i| spare.swap_remove(i))
                .and_then(|b| Arc::try_unwrap(b).ok())
                .unwrap_or_else(|| AlignedBuf::new(step as usize));
            buf.set_len(n);
            if let Err(e) = dev.read_exact_at(t.dest + pos, &mut buf) {
                result = Err(t.read_err(pos, e));
                break;
            }
            let buf = Arc::new(buf);
            if whole_tx.send(Arc::clone(&buf)).is_err() || group_tx.send(Arc::clone(&buf)).is_err()
            {
                break;
            }
            spare.push(buf);
            spare.truncate(DEPTH * 2 + 2);
            pos += n as u64;
            on_progress(pos);
        }
        drop((whole_tx, group_tx));
        let digest = whole.join().expect("whole-payload hash thread panicked");
        let bad = groups.join().expect("group hash thread panicked");
        result.map(|()| PassResult {
            bad,
            whole_ok: digest[..] == t.sha256,
        })
    })
}

/// The group hashes of a payload fed front to back in whole blocks.
struct GroupCheck<'a> {
    table: &'a ChunkTable,
    hasher: Sha256,
    zero: bool,
    /// The next block's index.
    i: u32,
    bad: Vec<u32>,
}

impl<'a> GroupCheck<'a> {
    fn new(table: &'a ChunkTable) -> GroupCheck<'a> {
        GroupCheck {
            table,
            hasher: Sha256::new(),
            zero: true,
            i: 0,
            bad: Vec::new(),
        }
    }

    fn feed(&mut self, buf: &[u8]) {
        let b = self.table.block_size() as usize;
        let g = self.table.group_blocks();
        let count = self.table.block_count();
        for block in buf.chunks(b) {
            self.hasher.update(block);
            self.zero = self.zero && block.iter().all(|&x| x == 0);
            let i = self.i;
            if i + 1 == count || (i + 1) % g == 0 {
                let k = i / g;
                let digest = std::mem::take(&mut self.hasher).finalize();
                let ok = match self.table.group_sha256(k) {
                    Some(want) => digest[..] == want,
                    None => self.zero,
                };
                if !ok {
                    self.bad.push(k);
                }
                self.zero = true;
            }
            self.i += 1;
        }
    }
}
