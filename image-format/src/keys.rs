//! Keys: ed25519 signing keys (PKCS#8 PEM), public keys (SPKI PEM), key ids,
//! and the keyring a device trusts.
//!
//! The files are the ones `openssl genpkey -algorithm ed25519` and
//! `openssl pkey -pubout` make. A key id is the first 8 bytes of the SHA-256
//! of the public key's SPKI DER encoding, which a third party computes with
//! `openssl pkey -pubin -in k.pub -outform DER | openssl dgst -sha256`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::{
    spki::der::pem::LineEnding, DecodePrivateKey, DecodePublicKey, EncodePrivateKey,
    EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::Signer;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Length of a key id in bytes.
pub const KEY_ID_LEN: usize = 8;

/// The id of a public key: the first 8 bytes of SHA-256(SPKI DER). Shown as
/// 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    /// The id of a public key given as its SPKI DER encoding.
    pub fn of_spki_der(der: &[u8]) -> KeyId {
        let digest = Sha256::digest(der);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        KeyId(id)
    }

    /// The 16 hex digits.
    pub fn to_hex(&self) -> String {
        crate::hex(&self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

/// An ed25519 public key with its id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: ed25519_dalek::VerifyingKey,
    key_id: KeyId,
}

impl PublicKey {
    fn from_verifying(inner: ed25519_dalek::VerifyingKey) -> PublicKey {
        let der = inner
            .to_public_key_der()
            .expect("encoding a 32-byte ed25519 key as SPKI cannot fail");
        PublicKey {
            inner,
            key_id: KeyId::of_spki_der(der.as_bytes()),
        }
    }

    /// Decode an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_public_key_pem(pem: &str) -> Result<PublicKey> {
        let what = "public key (expected an ed25519 SPKI PEM)";
        if let Some(detail) = crate::keyfile::not_ed25519(pem, false) {
            return Err(Error::Key {
                what: what.into(),
                detail,
            });
        }
        let inner = ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
            Error::Key {
                what: what.into(),
                detail: e.to_string(),
            }
        })?;
        Ok(PublicKey::from_verifying(inner))
    }

    /// Decode an SPKI DER public key.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey> {
        let inner =
            ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(|e| Error::Key {
                what: "public key (expected an ed25519 SPKI DER)".into(),
                detail: e.to_string(),
            })?;
        Ok(PublicKey::from_verifying(inner))
    }

    /// Read an SPKI PEM public key file.
    pub fn load_file(path: &Path) -> Result<PublicKey> {
        load_pem_file(path, PublicKey::from_public_key_pem)
    }

    /// The SPKI PEM text (what `openssl pkey -pubout` writes).
    pub fn to_public_key_pem(&self) -> String {
        self.inner
            .to_public_key_pem(LineEnding::LF)
            .expect("encoding a 32-byte ed25519 key as SPKI PEM cannot fail")
    }

    /// The SPKI DER bytes (44 bytes).
    pub fn to_spki_der(&self) -> Vec<u8> {
        self.inner
            .to_public_key_der()
            .expect("encoding a 32-byte ed25519 key as SPKI cannot fail")
            .into_vec()
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Strict ed25519 verification (RFC 8032, rejecting small-order keys and
    /// non-canonical signatures).
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.inner.verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id)
    }
}

/// An ed25519 signing key. Its `Debug` shows only the key id; the secret is
/// zeroed on drop (ed25519-dalek's `ZeroizeOnDrop`).
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl SigningKey {
    fn from_dalek(inner: ed25519_dalek::SigningKey) -> SigningKey {
        let public = PublicKey::from_verifying(inner.verifying_key());
        SigningKey { inner, public }
    }

    /// A new key from the operating system's random number generator.
    pub fn generate() -> Result<SigningKey> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
        let key = SigningKey::from_dalek(ed25519_dalek::SigningKey::from_bytes(&seed));
        seed.fill(0);
        Ok(key)
    }

    /// Decode a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), as
    /// `openssl genpkey -algorithm ed25519` writes it (v1) or with the public
    /// key included (v2).
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey> {
        let what = "private key (expected an ed25519 PKCS#8 PEM)";
        if let Some(detail) = crate::keyfile::not_ed25519(pem, true) {
            return Err(Error::Key {
                what: what.into(),
                detail,
            });
        }
        let inner =
            ed25519_dalek::SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| Error::Key {
                what: what.into(),
                detail: e.to_string(),
            })?;
        Ok(SigningKey::from_dalek(inner))
    }

    /// Read a PKCS#8 PEM private key file. A file that its group or others
    /// may read or write is used, with a warning on stderr (see
    /// [`SigningKey::load_file_warn`]).
    pub fn load_file(path: &Path) -> Result<SigningKey> {
        SigningKey::load_file_warn(path, &mut stderr_warning)
    }

    /// [`SigningKey::load_file`], handing each warning (one line naming the
    /// file) to `warn`: a key file whose mode gives its group or others any
    /// access (like ssh's "UNPROTECTED PRIVATE KEY FILE", but a warning).
    pub fn load_file_warn(path: &Path, warn: &mut dyn FnMut(String)) -> Result<SigningKey> {
        let key = load_pem_file(path, SigningKey::from_pkcs8_pem)?;
        if let Some(w) = crate::keyfile::unprotected(path) {
            warn(w);
        }
        Ok(key)
    }

    /// The PKCS#8 v1 PEM text (the form `openssl genpkey` writes). The
    /// returned string is zeroed when dropped.
    pub fn to_pkcs8_pem(
        &self,
    ) -> Result<ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing<String>> {
        let bytes = KeypairBytes {
            secret_key: self.inner.to_bytes(),
            public_key: None,
        };
        bytes.to_pkcs8_pem(LineEnding::LF).map_err(|e| Error::Key {
            what: "encoding private key".into(),
            detail: e.to_string(),
        })
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The id of the public half.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id
    }

    /// A plain (not prehashed) ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.inner.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public.key_id)
    }
}

/// The public keys a device trusts, by key id.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: BTreeMap<KeyId, PublicKey>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Add a key (a key already present is kept once).
    pub fn add(&mut self, key: PublicKey) {
        self.keys.insert(key.key_id(), key);
    }

    /// A keyring of one SPKI PEM key.
    pub fn from_public_key_pem(pem: &str) -> Result<Keyring> {
        let mut ring = Keyring::new();
        ring.add(PublicKey::from_public_key_pem(pem)?);
        Ok(ring)
    }

    /// A keyring of one SPKI PEM key file.
    pub fn load_file(path: &Path) -> Result<Keyring> {
        let mut ring = Keyring::new();
        ring.add(PublicKey::load_file(path)?);
        Ok(ring)
    }

    /// Every `*.pub` and `*.pem` file of a directory, warning on stderr
    /// about matching entries that hold no key (see [`Keyring::load_dir_warn`]).
    pub fn load_dir(dir: &Path) -> Result<Keyring> {
        Keyring::load_dir_warn(dir, &mut stderr_warning)
    }

    /// Every `*.pub` and `*.pem` file of a directory (other names are
    /// ignored). A matching regular file that is not an ed25519 public key
    /// is an error, so a broken key is noticed. A matching entry that is
    /// not a regular file (a dangling symlink, a directory, a FIFO, socket
    /// or device) holds no key: it is skipped with one warning line, handed
    /// to `warn`, naming it and why, and the other keys still load. An
    /// empty result is an error.
    pub fn load_dir_warn(dir: &Path, warn: &mut dyn FnMut(String)) -> Result<Keyring> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::KeyFile {
            path: dir.to_owned(),
            detail: e.to_string(),
        })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::KeyFile {
                path: dir.to_owned(),
                detail: e.to_string(),
            })?;
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|ext| ext == "pub" || ext == "pem")
            {
                names.push(path);
            }
        }
        names.sort();
        let mut paths = Vec::new();
        for path in names {
            match crate::keyfile::keyring_entry(&path)? {
                None => paths.push(path),
                Some(why) => warn(format!("keyring entry {} skipped: {why}", path.display())),
            }
        }
        let mut ring = Keyring::new();
        for path in paths {
            ring.add(PublicKey::load_file(&path)?);
        }
        if ring.is_empty() {
            return Err(Error::KeyFile {
                path: dir.to_owned(),
                detail: "no *.pub or *.pem public key in the keyring directory".into(),
            });
        }
        Ok(ring)
    }

    /// The key with this id.
    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, by id.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.values()
    }
}

/// Where the warnings of [`Keyring::load_dir`] and [`SigningKey::load_file`]
/// go: one `slotctl: warning: ...` line on stderr each.
pub fn stderr_warning(w: String) {
    eprintln!("slotctl: warning: {w}");
}

/// Read a PEM key file and parse it; either failure names the file.
fn load_pem_file<T>(path: &Path, parse: fn(&str) -> Result<T>) -> Result<T> {
    let key_file_error = |detail: String| Error::KeyFile {
        path: path.to_owned(),
        detail,
    };
    let text = read_pem_text(path).map_err(key_file_error)?;
    parse(&text).map_err(|e| key_file_error(e.to_string()))
}

/// A PEM key file is a few hundred bytes: more than this is not one.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The text of a key file: a regular file (checked before it is opened, so
/// a FIFO does not block, and again on what was opened) of at most
/// [`MAX_KEY_FILE`] bytes (so /dev/zero is not read forever).
fn read_pem_text(path: &Path) -> std::result::Result<String, String> {
    use std::io::Read;
    let regular = |m: std::fs::Metadata| {
        if m.is_file() {
            Ok(m.len())
        } else if m.is_dir() {
            Err("is a directory, not a regular file".to_string())
        } else {
            Err("is not a regular file (a FIFO, device or socket)".to_string())
        }
    };
    regular(std::fs::metadata(path).map_err(|e| e.to_string())?)?;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = regular(f.metadata().map_err(|e| e.to_string())?)?;
    let too_large = || format!("is larger than {MAX_KEY_FILE} bytes, not a PEM key");
    if len > MAX_KEY_FILE {
        return Err(too_large());
    }
    let mut text = String::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(too_large());
    }
    Ok(text)
}
