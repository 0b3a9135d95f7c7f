//! A tiny boot-stage tool over the bootchain crate, used to prove it in a
//! QEMU guest (docs/architecture.md, "bootchain") and to show its use:
//!
//! ```text
//! bootchain-demo open NAME DEV DATA_BLOCKS HASH_START_BLOCK ROOT_HEX SALT_HEX eio|restart|panic
//!     opens DEV (data and hash tree in one device, 4096-byte blocks, sha256)
//!     as the read-only dm-verity device NAME and prints its node
//! bootchain-demo remove NAME
//! bootchain-demo kexec KERNEL CMDLINE [INITRD]
//!     loads KERNEL (and INITRD) with kexec_file_load and starts it
//! ```
//!
//! Build it static for an initramfs:
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --example bootchain-demo --target x86_64-unknown-linux-gnu`

use std::io;
use std::path::Path;
use std::process::ExitCode;

use bootchain::{OnCorruption, VerityTable};

fn usage() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "usage: bootchain-demo open NAME DEV DATA_BLOCKS HASH_START_BLOCK ROOT_HEX SALT_HEX eio|restart|panic \
         | remove NAME | kexec KERNEL CMDLINE [INITRD]",
    )
}

fn number(what: &str, s: &str) -> io::Result<u64> {
    s.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {s:?} is not a number"),
        )
    })
}

fn run(args: &[String]) -> io::Result<()> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["open", name, dev, blocks, start, root, salt, mode] => {
            let on_corruption = match *mode {
                "eio" => OnCorruption::Eio,
                "restart" => OnCorruption::Restart,
                "panic" => OnCorruption::Panic,
                _ => return Err(usage()),
            };
            let t = VerityTable {
                data_dev: dev.into(),
                hash_dev: dev.into(),
                data_block_size: 4096,
                hash_block_size: 4096,
                data_blocks: number("data block count", blocks)?,
                hash_start_block: number("hash start block", start)?,
                algorithm: "sha256".into(),
                root_hex: root.to_string(),
                salt_hex: salt.to_string(),
                on_corruption,
            };
            let node = bootchain::open_verity(name, &t)?;
            println!("{}", node.display());
            Ok(())
        }
        ["remove", name] => bootchain::remove(name),
        ["kexec", kernel, cmdline, rest @ ..] if rest.len() <= 1 => {
            bootchain::kexec_load(Path::new(kernel), rest.first().map(Path::new), cmdline)?;
            eprintln!("bootchain-demo: {kernel} loaded, starting it");
            match bootchain::kexec_reboot()? {}
        }
        _ => Err(usage()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootchain-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
