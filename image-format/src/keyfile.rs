//! What a key file holds when it is not what slotctl reads: the PEM label
//! and the algorithm OID found (with its common name when known), so that
//! an RSA, EC, X25519 or Ed448 key is named as such instead of reported
//! by the OID slotctl expected. Also the checks on key files that warn
//! rather than refuse (modes, keyring entries that are not files).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::pkcs8::spki::{der::pem, AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use ed25519_dalek::pkcs8::{ObjectIdentifier, PrivateKeyInfo};

/// Ed25519's algorithm OID (RFC 8410).
pub(crate) const ED25519_OID: &str = "1.3.101.112";

/// The common name of an algorithm OID (and of an EC curve OID).
fn oid_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.113549.1.1.10" => "RSA-PSS",
        "1.2.840.10040.4.1" => "DSA",
        "1.2.840.10045.2.1" => "EC",
        "1.2.840.10045.3.1.7" => "P-256",
        "1.3.132.0.34" => "P-384",
        "1.3.132.0.35" => "P-521",
        "1.3.132.0.10" => "secp256k1",
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1",
        "1.3.101.110" => "X25519",
        "1.3.101.111" => "X448",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        "1.2.156.10197.1.301" => "SM2",
        _ => return None,
    })
}

/// "an RSA key (algorithm OID 1.2.840.113549.1.1.1)", "an EC P-256 key
/// (algorithm OID 1.2.840.10045.2.1, curve 1.2.840.10045.3.1.7)", or
/// "a key of algorithm OID 1.2.3.4 (unknown to slotctl)".
fn describe(alg: &AlgorithmIdentifierRef<'_>) -> String {
    let oid = alg.oid.to_string();
    let curve: Option<ObjectIdentifier> = if oid == "1.2.840.10045.2.1" {
        alg.parameters_oid().ok()
    } else {
        None
    };
    match oid_name(&oid) {
        Some(name) => {
            let curve_name = curve.map(|c| {
                let c = c.to_string();
                (oid_name(&c).unwrap_or("unknown curve"), c)
            });
            let article = if name.starts_with(['R', 'E', 'X', 'S']) {
                "an"
            } else {
                "a"
            };
            match curve_name {
                Some((cn, c)) => {
                    format!("{article} {name} {cn} key (algorithm OID {oid}, curve {c})")
                }
                None => format!("{article} {name} key (algorithm OID {oid})"),
            }
        }
        None => format!("a key of algorithm OID {oid}, unknown to slotctl"),
    }
}

const ONLY_ED25519: &str = "slotctl signs and verifies with Ed25519 keys only (OID 1.3.101.112; \
                            `slotctl keygen` or `openssl genpkey -algorithm ed25519` makes one)";

/// Why `pem` is not an Ed25519 key of the wanted kind, when that can be
/// told from its PEM label or its algorithm identifier; `None` when it
/// looks like one (the caller's decoder then has the last word).
pub(crate) fn not_ed25519(pem_text: &str, private: bool) -> Option<String> {
    let (label, der) = match pem::decode_vec(pem_text.trim().as_bytes()) {
        Ok(x) => x,
        // Not PEM at all: the decoder's own message says so.
        Err(_) => return None,
    };
    let want = if private { "PRIVATE KEY" } else { "PUBLIC KEY" };
    if label != want {
        let what = match label {
            "RSA PRIVATE KEY" => "a PKCS#1 RSA private key".to_owned(),
            "EC PRIVATE KEY" => "a SEC1 EC private key".to_owned(),
            "OPENSSH PRIVATE KEY" => "an OpenSSH private key".to_owned(),
            "ENCRYPTED PRIVATE KEY" => {
                return Some(
                    "the PEM is an encrypted PKCS#8 private key; slotctl reads unencrypted \
                     keys (decrypt it with `openssl pkey`, or pass the PEM text in \
                     SLOTCTL_SIGNING_KEY)"
                        .into(),
                )
            }
            "PRIVATE KEY" => {
                return Some(
                    "the file holds a private key where a public key belongs (make the \
                     public key with `openssl pkey -in KEY -pubout`)"
                        .into(),
                )
            }
            "PUBLIC KEY" => {
                return Some("the file holds a public key where the private key belongs".into())
            }
            other => format!("PEM type {other:?}"),
        };
        return Some(format!(
            "the PEM label is \"{label}\" ({what}), expected \"{want}\"; {ONLY_ED25519}"
        ));
    }
    let alg = if private {
        PrivateKeyInfo::try_from(der.as_slice())
            .ok()
            .map(|k| k.algorithm)
    } else {
        SubjectPublicKeyInfoRef::try_from(der.as_slice())
            .ok()
            .map(|k| k.algorithm)
    }?;
    if alg.oid.to_string() == ED25519_OID {
        return None;
    }
    Some(format!("the file holds {}; {ONLY_ED25519}", describe(&alg)))
}

/// A warning when a private key file's mode gives its group or others any
/// access (read, write or execute): like ssh's "UNPROTECTED PRIVATE KEY
/// FILE", but the key is still used (CI secret mounts are often 0644; the
/// operator decides). The mode is the target's when `path` is a symlink.
pub(crate) fn unprotected(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "signing key {} has mode {mode:04o}: its group or others can read or change it \
             (chmod 600 {})",
            path.display(),
            path.display()
        )
    })
}

/// Why a keyring entry named like a key holds no key to read, or `None`
/// when it is a regular file (possibly through a symlink) to load. A
/// dangling symlink, a directory, a FIFO, socket or device is skipped
/// (the caller warns); an entry that cannot be examined otherwise is an
/// error.
pub(crate) fn keyring_entry(path: &Path) -> crate::Result<Option<String>> {
    let link = std::fs::symlink_metadata(path).map_err(|e| crate::Error::KeyFile {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if link.file_type().is_symlink() => {
            let target = std::fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into());
            return Ok(Some(format!(
                "a symlink to {target}, which cannot be read ({e})"
            )));
        }
        Err(e) => {
            return Err(crate::Error::KeyFile {
                path: path.to_owned(),
                detail: e.to_string(),
            })
        }
    };
    let t = meta.file_type();
    Ok(if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory, not a key file".into())
    } else if t.is_fifo() {
        Some("a FIFO, not a key file".into())
    } else if t.is_socket() {
        Some("a socket, not a key file".into())
    } else {
        Some("a device node, not a key file".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(oid_name("1.3.101.113"), Some("Ed448"));
        assert_eq!(oid_name("1.2.3"), None);
    }
}
