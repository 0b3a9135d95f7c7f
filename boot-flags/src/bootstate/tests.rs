use super::*;
use crate::device::MemDevice;

fn st(n: u8, why: Option<&str>) -> BootState {
    BootState {
        unchecked_boots: n,
        given_up: why.map(str::to_string),
    }
}

fn both(c0: &[u8], c1: &[u8]) -> Vec<u8> {
    [c0, c1].concat()
}

#[test]
fn all_zero_reads_as_clear_and_the_first_write_goes_to_copy_0() {
    let s = decode(&[0u8; BOOT_STATE_LEN as usize]);
    assert_eq!(s, Stored::default());
    assert!(s.state.is_clear());
    assert_eq!(s.next(), (0, 1));
}

#[test]
fn round_trip_and_the_higher_sequence_wins() {
    let a = encode_copy(7, &st(2, None));
    let b = encode_copy(8, &st(3, Some("3 boots in a row did not reach boot-check")));
    assert_eq!(decode_copy(&a), Some((7, st(2, None))));
    let s = decode(&both(&a, &b));
    assert_eq!(s.current, Some((1, 8)));
    assert_eq!(s.state.unchecked_boots, 3);
    assert_eq!(
        s.state.given_up.as_deref(),
        Some("3 boots in a row did not reach boot-check")
    );
    // The next write replaces the older copy (0) with sequence 9.
    assert_eq!(s.next(), (0, 9));
    // Order of the copies does not matter.
    assert_eq!(decode(&both(&b, &a)).current, Some((0, 8)));
}

#[test]
fn a_torn_or_damaged_copy_leaves_the_other_in_force() {
    let old = encode_copy(4, &st(1, None));
    let new = encode_copy(5, &st(2, None));
    // The new copy torn at every 512-byte boundary over a 2-generations-old
    // copy (sequence 3) in the same place: never valid, copy 0 in force.
    let older = encode_copy(3, &st(0, None));
    for t in (512..COPY_LEN).step_by(512) {
        let mut torn = older.clone();
        torn[..t].copy_from_slice(&new[..t]);
        let s = decode(&both(&old, &torn));
        assert_eq!(s.current, Some((0, 4)), "torn at {t}");
        assert_eq!(s.state, st(1, None), "torn at {t}");
        // The retry goes to the torn copy again.
        assert_eq!(s.next(), (1, 5));
    }
    // Any single flipped bit invalidates a copy.
    for bit in [
        0,
        8 * 9,
        8 * 16,
        8 * 24,
        8 * 26,
        8 * 30,
        8 * 4000,
        8 * CRC_AT + 3,
    ] {
        let mut bad = new.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(decode_copy(&bad), None, "bit {bit}");
        assert_eq!(decode(&both(&old, &bad)).state, st(1, None));
    }
    // A pattern (a partition written by something else): no valid copy.
    let pattern: Vec<u8> = (0..BOOT_STATE_LEN as usize)
        .map(|i| (i % 251) as u8)
        .collect();
    assert_eq!(decode(&pattern), Stored::default());
}

#[test]
fn a_copy_with_a_bad_version_or_reason_is_invalid() {
    let fix_crc = |c: &mut Vec<u8>| {
        let crc = crc32fast::hash(&c[..CRC_AT]);
        c[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    };
    let mut c = encode_copy(1, &st(1, None));
    c[8] = 2;
    fix_crc(&mut c);
    assert_eq!(decode_copy(&c), None);
    let mut c = encode_copy(1, &st(1, Some("x")));
    c[26..28].copy_from_slice(&(REASON_MAX as u16 + 1).to_le_bytes());
    fix_crc(&mut c);
    assert_eq!(decode_copy(&c), None);
    let mut c = encode_copy(1, &st(1, Some("ab")));
    c[REASON_AT] = 0xff;
    fix_crc(&mut c);
    assert_eq!(decode_copy(&c), None);
}

#[test]
fn the_sequence_wraps() {
    assert!(newer(0, u64::MAX));
    assert!(!newer(u64::MAX, 0));
    assert!(newer(5, 4));
    assert!(!newer(4, 4));
    let a = encode_copy(u64::MAX, &st(1, None));
    let b = encode_copy(0, &st(2, None));
    let s = decode(&both(&a, &b));
    assert_eq!(s.current, Some((1, 0)));
    assert_eq!(s.state.unchecked_boots, 2);
    let s = decode(&both(&a, &[0u8; COPY_LEN]));
    assert_eq!(s.next(), (1, 0));
}

#[test]
fn long_reasons_are_cut_at_a_character_boundary() {
    let long = "é".repeat(150); // 300 bytes
    let cut = bounded_reason(&long);
    assert!(cut.len() <= REASON_MAX && cut.len() >= REASON_MAX - 1);
    assert!(long.starts_with(cut));
    let c = encode_copy(1, &st(0, Some(&long)));
    assert_eq!(decode_copy(&c).unwrap().1.given_up.as_deref(), Some(cut));
}

#[test]
fn writes_alternate_copies_and_read_back() {
    let mut dev = MemDevice::new(1 << 20);
    let at = offset(0, 1 << 20).unwrap();
    assert_eq!(at, (1 << 20) - BOOT_STATE_LEN);
    assert_eq!(offset(0, MIN_FLAGS_PARTITION - 512), None);
    let s0 = read(&mut dev, at).unwrap();
    let s1 = write(&mut dev, at, &s0, st(1, None)).unwrap();
    assert_eq!(s1.current, Some((0, 1)));
    let s2 = write(&mut dev, at, &s1, st(2, Some("why"))).unwrap();
    assert_eq!(s2.current, Some((1, 2)));
    assert_eq!(read(&mut dev, at).unwrap(), s2);
    let s3 = write(&mut dev, at, &s2, BootState::default()).unwrap();
    assert_eq!(s3.current, Some((0, 3)));
    assert!(read(&mut dev, at).unwrap().state.is_clear());
    // Nothing outside the 8 KiB was touched.
    let mut rest = vec![0u8; at as usize];
    dev.read_exact_at(0, &mut rest).unwrap();
    assert!(rest.iter().all(|&b| b == 0));
}
