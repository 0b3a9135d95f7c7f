//! Finding blocks locally and the download plan.

use super::*;
use crate::chunked::{fetch_plan, BlockFinder, Needed};

#[test]
fn needed_lookup_finds_every_block_with_a_short_hash() {
    let mut raw = disk_like(30, 4096, 1);
    raw.extend(raw[4096 * 2..4096 * 3].to_vec()); // a duplicate of block 2
    let built = build(&raw, 4096, 4, 0);
    let t = built.table();
    let n = Needed::new(&t);
    assert_eq!(n.len() as u32, t.nonzero_blocks());
    for i in 0..t.block_count() {
        match t.short(i) {
            Some(s) => assert!(n.lookup(s).any(|j| j == i)),
            None => assert!(t.is_zero(i)),
        }
    }
    if let Some(s) = t.short(2) {
        let hits: Vec<u32> = n.lookup(s).collect();
        assert!(hits.contains(&2) && hits.contains(&30), "{hits:?}");
    }
    assert_eq!(n.lookup([0xde, 0xad, 0xbe, 0xef]).count(), 0);
    let some = Needed::from_blocks(&t, [2, 3]);
    assert!(some.len() <= 2);
}

#[test]
fn finder_and_plan() {
    let b = 4096usize;
    let old = disk_like(64, b, 7);
    let mut new = old.clone();
    // change blocks 5 and 40; move 10..12 to 50..52
    for i in [5usize, 40] {
        new[i * b..(i + 1) * b].copy_from_slice(&crate::tests::noise(b, 900 + i as u64));
    }
    let moved = old[10 * b..12 * b].to_vec();
    new[50 * b..52 * b].copy_from_slice(&moved);
    let built = build(&new, b as u32, 8, 0);
    let t = built.table();
    let mut f = BlockFinder::new(&t);
    let mut found_at = vec![None; 64];
    let read = f
        .scan(&old[..], |i, at, bytes| {
            assert_eq!(bytes.len(), b);
            found_at[i as usize] = Some(at);
            Ok(())
        })
        .unwrap();
    assert!(read <= old.len() as u64);
    for i in 0..64u32 {
        let changed = [5, 40].contains(&i) && !t.is_zero(i);
        assert_eq!(f.is_found(i), !t.is_zero(i) && !changed, "block {i}");
    }
    if !t.is_zero(50) {
        assert!(found_at[50].is_some());
    }
    let plan = fetch_plan(&t, |i| f.is_found(i), |_| false);
    let want: Vec<u32> = [5u32, 40].into_iter().filter(|&i| !t.is_zero(i)).collect();
    assert_eq!(plan.blocks, want);
    assert_eq!(
        plan.frame_bytes,
        want.iter().map(|&i| t.stored_len(i) as u64).sum::<u64>()
    );
    assert_eq!(plan.refetched_groups, 0);
    assert_eq!(plan.reused_blocks + want.len() as u32, t.nonzero_blocks());
    assert_eq!(
        plan.zero_bytes
            + plan.reused_bytes
            + want.iter().map(|&i| t.block_len(i) as u64).sum::<u64>(),
        new.len() as u64
    );
    // a wrong candidate in group 0 fetches the whole group
    let wrong_block = (0..8).find(|&i| f.is_found(i)).unwrap();
    let plan2 = fetch_plan(&t, |i| f.is_found(i), |i| i == wrong_block);
    assert_eq!(plan2.refetched_groups, 1);
    let g0: Vec<u32> = t.group_range(0).filter(|&i| !t.is_zero(i)).collect();
    assert!(g0.iter().all(|i| plan2.blocks.contains(i)));
    // ranges: adjacent frames merge, a gap larger than max_gap does not
    let all = fetch_plan(&t, |_| false, |_| false);
    assert_eq!(
        all.ranges(&t, 0)
            .iter()
            .map(|r| r.end - r.start)
            .sum::<u64>(),
        all.frame_bytes
    );
    let merged = all.ranges(&t, u64::MAX);
    assert_eq!(merged.len(), 1);
}

#[test]
fn a_short_last_block_matches_only_a_block_of_its_length() {
    let mut new = disk_like(4, 4096, 3);
    new.extend(b"tail bytes");
    let built = build(&new, 4096, 4, 0);
    let t = built.table();
    let mut f = BlockFinder::new(&t);
    let mut hits = Vec::new();
    let mut padded = b"tail bytes".to_vec();
    padded.resize(4096, 0);
    f.offer(&padded, &mut hits);
    assert!(hits.is_empty());
    f.offer(b"tail bytes", &mut hits);
    assert_eq!(hits, vec![4]);
    f.offer(b"tail bytes", &mut hits);
    assert!(hits.is_empty(), "found once");
}

#[test]
fn a_block_at_its_own_place_replaces_a_candidate_from_elsewhere() {
    let b = 4096usize;
    let new = disk_like(8, b, 11);
    let built = build(&new, b as u32, 4, 0);
    let t = built.table();
    let target = (0..8u32).rev().find(|&i| !t.is_zero(i)).unwrap();
    let block = &new[target as usize * b..][..b];
    let mut f = BlockFinder::new(&t);
    let mut hits = Vec::new();
    // the same bytes met first at another index: a candidate
    f.offer_at(0, block, &mut hits);
    assert!(hits.contains(&target));
    assert!(f.is_found(target));
    // met again elsewhere: nothing new
    f.offer_at(1, block, &mut hits);
    assert!(!hits.contains(&target));
    // met at its own place: returned again (it replaces the candidate)
    f.offer_at(target, block, &mut hits);
    assert_eq!(hits, vec![target]);
    // scan reports it at its own offset last
    let mut local = vec![0u8; 8 * b];
    local[..b].copy_from_slice(block);
    local[target as usize * b..][..b].copy_from_slice(block);
    let mut f = BlockFinder::new(&t);
    let mut seen = Vec::new();
    f.scan(&local[..], |i, at, _| {
        if i == target {
            seen.push(at);
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![0, target as u64 * b as u64]);
}
