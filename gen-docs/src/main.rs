//! `slotctl-gen-docs OUT_DIR`: write slotctl's man pages into OUT_DIR/man
//! and its bash/zsh/fish completions into OUT_DIR/completions.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let [out] = args.as_slice() else {
        eprintln!("usage: slotctl-gen-docs OUT_DIR  (writes OUT_DIR/man and OUT_DIR/completions)");
        return ExitCode::from(2);
    };
    match slotctl_gen_docs::generate(out.as_ref()) {
        Ok(done) => {
            for p in done.man_pages.iter().chain(&done.completions) {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("slotctl-gen-docs: {e}");
            ExitCode::FAILURE
        }
    }
}
