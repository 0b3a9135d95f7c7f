//! Link flags of the `slotctl` binary.
//!
//! The static build (`-C target-feature=+crt-static`, as qemu/lib.sh and
//! bench/install.sh build it) is a static PIE: glibc relocates it itself at
//! start. Packed relative relocations (DT_RELR, glibc >= 2.36, binutils >=
//! 2.38) store those relocations in a few KiB instead of ~150 KB of
//! `.rela.dyn` entries (docs/architecture.md, "The release binary").

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" && features.split(',').any(|f| f == "crt-static") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
