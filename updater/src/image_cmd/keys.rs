//! `slotctl keygen` and loading signing keys (file or environment).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use image_format::SigningKey;

/// The environment variable that may hold a PKCS#8 PEM signing key, so that
/// CI never writes the secret to disk.
pub const SIGNING_KEY_ENV: &str = "SLOTCTL_SIGNING_KEY";

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Writes NAME.key and NAME.pub; refuses to overwrite either.
    #[arg(long, value_name = "NAME")]
    pub out: PathBuf,
}

fn with_suffix(name: &Path, suffix: &str) -> PathBuf {
    let mut s = name.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn create_new(path: &Path, mode: u32, contents: &[u8]) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let key_path = with_suffix(&args.out, ".key");
    let pub_path = with_suffix(&args.out, ".pub");
    for p in [&key_path, &pub_path] {
        if p.symlink_metadata().is_ok() {
            bail!("{} already exists; not overwriting a key", p.display());
        }
    }
    let key = SigningKey::generate()?;
    let pem = key.to_pkcs8_pem()?;
    create_new(&key_path, 0o600, pem.as_bytes())?;
    if let Err(e) = create_new(
        &pub_path,
        0o644,
        key.public_key().to_public_key_pem().as_bytes(),
    ) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    println!(
        "wrote {} (private, mode 0600) and {} (public); key id {}",
        key_path.display(),
        pub_path.display(),
        key.key_id()
    );
    Ok(())
}

/// The signing keys: each `--key FILE`, or else the PEM text in
/// SLOTCTL_SIGNING_KEY. Never prints key material.
pub fn signing_keys(files: &[PathBuf]) -> anyhow::Result<Vec<SigningKey>> {
    if !files.is_empty() {
        return files
            .iter()
            .map(|p| SigningKey::load_file(p).map_err(anyhow::Error::from))
            .collect();
    }
    match std::env::var(SIGNING_KEY_ENV) {
        Ok(pem) if !pem.trim().is_empty() => {
            let key = SigningKey::from_pkcs8_pem(&pem)
                .map_err(|e| anyhow::anyhow!("{SIGNING_KEY_ENV}: {e}"))?;
            Ok(vec![key])
        }
        Ok(_) => bail!("{SIGNING_KEY_ENV} is empty and no --key was given"),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{SIGNING_KEY_ENV} is not valid UTF-8"),
        Err(std::env::VarError::NotPresent) => {
            bail!("no signing key: give --key FILE or set {SIGNING_KEY_ENV} to the PEM text")
        }
    }
}
