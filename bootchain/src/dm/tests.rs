use super::*;
use crate::dm_sys::Cmd;

/// The table the verity module's tests use (`/dev/vda3`, 4096 blocks).
fn table() -> VerityTable {
    crate::verity::tests::sample()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn struct_layouts_match_linux_dm_ioctl_h() {
    assert_eq!(size_of::<DmIoctl>(), 312);
    assert_eq!(size_of::<DmTargetSpec>(), 40);
    assert_eq!(offset_of!(DmIoctl, data_size), 12);
    assert_eq!(offset_of!(DmIoctl, data_start), 16);
    assert_eq!(offset_of!(DmIoctl, target_count), 20);
    assert_eq!(offset_of!(DmIoctl, flags), 28);
    assert_eq!(offset_of!(DmIoctl, dev), 40);
    assert_eq!(offset_of!(DmIoctl, name), 48);
    assert_eq!(offset_of!(DmIoctl, uuid), 176);
    assert_eq!(offset_of!(DmTargetSpec, length), 8);
    assert_eq!(offset_of!(DmTargetSpec, next), 20);
    assert_eq!(offset_of!(DmTargetSpec, target_type), 24);
}

#[test]
fn request_codes() {
    assert_eq!(Cmd::DevCreate.request_code(), 0xC138_FD03);
    assert_eq!(Cmd::DevRemove.request_code(), 0xC138_FD04);
    assert_eq!(Cmd::DevSuspend.request_code(), 0xC138_FD06);
    assert_eq!(Cmd::TableLoad.request_code(), 0xC138_FD09);
}

#[test]
fn header_bytes() {
    let b = build("slot-root", DM_SUSPEND_FLAG, 0, &[]);
    assert_eq!(b.len(), 312);
    assert_eq!(&b[0..12], &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(u32_at(&b, 12), 312, "data_size");
    assert_eq!(u32_at(&b, 16), 312, "data_start");
    assert_eq!(u32_at(&b, 20), 0, "target_count");
    assert_eq!(u32_at(&b, 28), 2, "flags");
    assert_eq!(u64_at(&b, 40), 0, "dev");
    assert_eq!(&b[48..57], b"slot-root");
    assert!(
        b[57..].iter().all(|&x| x == 0),
        "name NUL-terminated, uuid and the rest zero"
    );
}

#[test]
fn table_load_buffer_bytes() {
    let t = table();
    let params = t.params();
    let b = table_load_buffer("root", &t, OnCorruption::Restart);
    // params + NUL, padded to 8
    let padded = (params.len() + 1).next_multiple_of(8);
    assert_eq!(b.len(), 312 + 40 + padded);
    assert_eq!(b.len() % 8, 0);
    assert_eq!(
        u32_at(&b, 12) as usize,
        b.len(),
        "data_size is the whole buffer"
    );
    assert_eq!(u32_at(&b, 16), 312, "data_start");
    assert_eq!(u32_at(&b, 20), 1, "target_count");
    assert_eq!(u32_at(&b, 28), 1, "DM_READONLY_FLAG");
    assert_eq!(&b[48..53], b"root\0");
    let spec = &b[312..352];
    assert_eq!(u64_at(spec, 0), 0, "sector_start");
    assert_eq!(u64_at(spec, 8), 32768, "length in sectors");
    assert_eq!(u32_at(spec, 16), 0, "status");
    assert_eq!(u32_at(spec, 20) as usize, 40 + padded, "next");
    assert_eq!(&spec[24..40], b"verity\0\0\0\0\0\0\0\0\0\0");
    let p = &b[352..];
    assert_eq!(&p[..params.len()], params.as_bytes());
    assert!(
        p[params.len()..].iter().all(|&x| x == 0),
        "NUL terminator and padding"
    );
    assert!(params.ends_with(" 1 restart_on_corruption"));
}

#[test]
fn table_load_buffer_eio_has_no_optional_args() {
    let b = table_load_buffer("root", &table(), OnCorruption::Eio);
    let p = std::str::from_utf8(&b[352..])
        .unwrap()
        .trim_end_matches('\0');
    assert_eq!(
        p,
        format!(
            "1 /dev/vda3 /dev/vda3 4096 4096 4096 4096 sha256 {} {}",
            table().root_hex,
            table().salt_hex
        )
    );
}

#[test]
fn answered_dev_decodes_like_the_kernel_encodes() {
    // huge_encode_dev(MKDEV(254, 300)) = (minor & 0xff) | major << 8 | (minor & !0xff) << 12
    let encoded: u64 = (300 & 0xff) | (254 << 8) | ((300 & !0xff) << 12);
    let mut b = build("x", 0, 0, &[]);
    b[40..48].copy_from_slice(&encoded.to_ne_bytes());
    let dev = answered_dev(&b);
    assert_eq!((major(dev), minor(dev)), (254, 300));
}

#[test]
fn bad_names_refused() {
    for name in ["", "a/b", "a b", ".", "..", &"x".repeat(128)] {
        let e = open_verity(name, &table()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        assert!(e.to_string().contains("device-mapper name"), "{e}");
        assert_eq!(
            remove(name).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
    check_name(&"x".repeat(127)).unwrap();
}

#[test]
fn bad_table_refused_before_any_ioctl() {
    // The host has no device-mapper: an invalid table must be refused as
    // such, not as a missing /dev/mapper/control.
    let t = VerityTable {
        root_hex: "not-hex".into(),
        ..table()
    };
    let e = open_verity("root", &t).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("root hash \"not-hex\""), "{e}");
}
