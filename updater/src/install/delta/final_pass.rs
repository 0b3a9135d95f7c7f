//! Step 5 of a delta install: the final pass. After the flush, the target
//! payload is read front to back from the medium (page cache dropped),
//! each group is hashed against the signed table (a group without a hash
//! must be all zeros) and the whole payload against the header's SHA-256.
//! It always runs, `--no-readback` or not: it is the only whole check of a
//! payload assembled from several sources.

use sha2::{Digest, Sha256};

use super::plan::read_size;
use super::{BlockDevice, DeltaError, Target};

/// What the pass found.
#[derive(Debug, Default)]
pub struct PassResult {
    /// Groups whose bytes do not match the table.
    pub bad: Vec<u32>,
    /// The whole payload's SHA-256 matches the header's.
    pub whole_ok: bool,
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
    let b = u64::from(table.block_size());
    let step = read_size(b);
    let mut buf = vec![0u8; step.min(t.raw_size) as usize];
    let mut whole = Sha256::new();
    let mut group = Sha256::new();
    let mut group_zero = true;
    let mut res = PassResult::default();
    let g = table.group_blocks();
    let count = table.block_count();
    let mut pos = 0u64;
    let mut i = 0u32;
    while pos < t.raw_size {
        let n = step.min(t.raw_size - pos) as usize;
        dev.read_exact_at(t.dest + pos, &mut buf[..n])
            .map_err(|e| t.read_err(pos, e))?;
        whole.update(&buf[..n]);
        for block in buf[..n].chunks(b as usize) {
            group.update(block);
            group_zero = group_zero && block.iter().all(|&x| x == 0);
            let k = i / g;
            if i + 1 == count || (i + 1) % g == 0 {
                let digest = std::mem::take(&mut group).finalize();
                let ok = match table.group_sha256(k) {
                    Some(want) => digest[..] == want,
                    None => group_zero,
                };
                if !ok {
                    res.bad.push(k);
                }
                group_zero = true;
            }
            i += 1;
        }
        pos += n as u64;
        on_progress(pos);
    }
    res.whole_ok = whole.finalize()[..] == t.sha256;
    Ok(res)
}
