//! A table made by another tool (sgdisk), with gaps in the numbering and
//! attribute bits of its own: slotctl changes the flag bits and the CRCs,
//! and not one other byte.

use std::process::Command;

use slotctl_tests::disk::{ok, path_str, text};
use slotctl_tests::require_tool;

#[test]
fn foreign_table_keeps_numbering_and_other_bits() {
    require_tool("sgdisk");
    require_tool("sfdisk");
    require_tool("cgpt");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("g.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let out = Command::new("sgdisk")
        .args([
            "-o",
            "-n",
            "2:2048:+512K",
            "-c",
            "2:ROOT-A",
            "-n",
            "4:4096:+512K",
            "-c",
            "4:ROOT-B",
            "-n",
            "6:6144:+256K",
            "-c",
            "6:DATA",
            "-A",
            "2:set:0",
            "-A",
            "2:set:2",
            "-A",
            "2:set:60",
            "-A",
            "4:set:63",
        ])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = std::fs::read(&img).unwrap();
    let p = path_str(&img);

    ok(&[
        "--disk",
        p,
        "set-flags",
        "B",
        "--priority",
        "2",
        "--tries",
        "5",
    ]);
    ok(&[
        "--disk",
        p,
        "set-flags",
        "A",
        "--priority",
        "1",
        "--successful",
        "1",
    ]);
    let after = std::fs::read(&img).unwrap();

    // Only these may differ: the attribute words of entries 2 and 4 in
    // both arrays (entry i at (i-1)*128, attributes at +48) and the two CRC
    // fields of both headers.
    let n = before.len();
    let primary_entries = 2 * 512;
    let backup_entries = n - 512 - 128 * 128;
    let mut allowed = Vec::new();
    for base in [primary_entries, backup_entries] {
        for idx in [2, 4] {
            let a = base + (idx - 1) * 128 + 48;
            allowed.push(a..a + 8);
        }
    }
    for hdr in [512, n - 512] {
        allowed.push(hdr + 16..hdr + 20);
        allowed.push(hdr + 88..hdr + 92);
    }
    for (i, (x, y)) in before.iter().zip(&after).enumerate() {
        if x != y {
            assert!(allowed.iter().any(|r| r.contains(&i)), "byte {i} changed");
        }
    }

    // The real tools: numbering and foreign bits intact, flags right.
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(&img)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let parts = v["partitiontable"]["partitions"].as_array().unwrap();
    let nodes: Vec<String> = parts
        .iter()
        .map(|p| p["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nodes, [format!("{p}2"), format!("{p}4"), format!("{p}6")]);
    assert_eq!(
        parts[0]["attrs"],
        "RequiredPartition LegacyBIOSBootable GUID:48,56,60"
    );
    assert_eq!(parts[1]["attrs"], "GUID:49,52,54,63");
    let out = Command::new("sgdisk").arg("-v").arg(&img).output().unwrap();
    assert!(
        text(&out.stdout).contains("No problems found."),
        "{}",
        text(&out.stdout)
    );
    let out = Command::new("cgpt")
        .args(["show", "-i", "4", "-T"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), "5");

    let out = ok(&["--disk", p, "status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["slots"]["A"]["flags_partition"], 2);
    assert_eq!(st["slots"]["B"]["flags_partition"], 4);
    assert_eq!(st["shared"][0]["index"], 6);
}
