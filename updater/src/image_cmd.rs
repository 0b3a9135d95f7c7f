//! Release-engineer commands: keygen, image pack/sign/verify/info/extract.

use clap::Subcommand;

use crate::cli::Globals;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Generate an ed25519 signing key pair (NAME.key, NAME.pub).
    Keygen,
}

pub fn run(cmd: ImageCommand, _globals: &Globals) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Keygen => anyhow::bail!("keygen: not implemented yet"),
    }
}
