//! Signing and verifying feeds with the same ed25519 key files and key ids
//! as images (image-format's `SigningKey` and `Keyring`: PKCS#8 PEM private
//! keys, SPKI PEM public keys, key id = the first 8 bytes of SHA-256 of the
//! SPKI DER, in hex).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::VerifyingKey;
use image_format::{Keyring, SigningKey};
use sha2::{Digest, Sha256};

use super::doc::{self, Envelope, FeedDoc, SignatureJson, SIGNING_CONTEXT};
use super::FeedError;

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Public keys trusted for feeds, by key id.
#[derive(Debug, Default, Clone)]
pub struct FeedKeyring {
    keys: BTreeMap<String, VerifyingKey>,
}

impl FeedKeyring {
    /// The keys of an image-format keyring.
    pub fn from_keyring(ring: &Keyring) -> FeedKeyring {
        let keys = ring
            .iter()
            .filter_map(|k| {
                let v = VerifyingKey::from_public_key_der(&k.to_spki_der()).ok()?;
                Some((k.key_id().to_hex(), v))
            })
            .collect();
        FeedKeyring { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A public key file, or a keyring directory (every `*.pub`/`*.pem`).
    pub fn load(path: &Path) -> Result<FeedKeyring, FeedError> {
        let ring = if path.is_dir() {
            Keyring::load_dir(path)
        } else {
            Keyring::load_file(path)
        }
        .map_err(|e| FeedError::Keyring {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let ring = FeedKeyring::from_keyring(&ring);
        if ring.is_empty() {
            return Err(FeedError::Keyring {
                path: path.display().to_string(),
                detail: "no public key".into(),
            });
        }
        Ok(ring)
    }
}

/// Add a signature by `key` over the envelope's `signed` text. Refused when
/// this key already signed it.
pub fn add_signature(env: &mut Envelope, key: &SigningKey) -> Result<String, FeedError> {
    let id = key.key_id().to_hex();
    if env.signatures.iter().any(|s| s.keyid == id) {
        return Err(FeedError::AlreadySigned(id));
    }
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(env.signed.as_bytes());
    let sig = key.sign(&msg);
    env.signatures.push(SignatureJson {
        keyid: id.clone(),
        sig: hex(&sig),
    });
    Ok(id)
}

/// A feed whose signatures were checked against a keyring and whose
/// document passed validation. Only [`verify`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedFeed {
    doc: FeedDoc,
    sha256: String,
    keys: Vec<String>,
}

impl VerifiedFeed {
    pub fn doc(&self) -> &FeedDoc {
        &self.doc
    }
    /// SHA-256 of the signed text (what "the same feed" means).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// Ids of the trusted keys whose signatures held.
    pub fn signed_by(&self) -> &[String] {
        &self.keys
    }
}

/// Check the envelope's signatures: at least `threshold` distinct keys of
/// `ring` must have signed; one bad signature by a trusted key is an error
/// of its own (someone tampered with the feed). Then parse and validate the
/// document.
pub fn verify(
    bytes: &[u8],
    ring: &FeedKeyring,
    threshold: usize,
) -> Result<VerifiedFeed, FeedError> {
    let env = doc::parse_envelope(bytes)?;
    if env.signatures.is_empty() {
        return Err(FeedError::Unsigned);
    }
    let mut msg = SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(env.signed.as_bytes());
    let mut good = BTreeSet::new();
    let mut untrusted = Vec::new();
    for s in &env.signatures {
        let Some(key) = ring.keys.get(&s.keyid) else {
            untrusted.push(s.keyid.clone());
            continue;
        };
        let sig = unhex(&s.sig)
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or_else(|| {
                FeedError::Malformed(format!("signature by {} is not 128 hex digits", s.keyid))
            })?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        if key.verify_strict(&msg, &sig).is_err() {
            return Err(FeedError::BadSignature(s.keyid.clone()));
        }
        good.insert(s.keyid.clone());
    }
    if good.len() < threshold {
        return Err(FeedError::NotTrusted {
            good: good.len(),
            threshold,
            untrusted: untrusted.join(", "),
        });
    }
    let doc: FeedDoc = serde_json::from_str(&env.signed)
        .map_err(|e| FeedError::Malformed(format!("signed document: {e}")))?;
    doc.validate()?;
    Ok(VerifiedFeed {
        doc,
        sha256: hex(&Sha256::digest(env.signed.as_bytes())),
        keys: good.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::time::Timestamp;

    fn key(_n: u8) -> SigningKey {
        SigningKey::generate().unwrap()
    }

    fn ring(keys: &[&SigningKey]) -> FeedKeyring {
        let mut r = Keyring::new();
        for k in keys {
            r.add(k.public_key().clone());
        }
        FeedKeyring::from_keyring(&r)
    }

    fn env() -> Envelope {
        let mut d = FeedDoc::new("acme");
        d.serial = 3;
        d.expires = Timestamp(2_000_000_000);
        Envelope {
            signed: d.to_signed_text(),
            signatures: vec![],
        }
    }

    #[test]
    fn sign_and_verify() {
        let (k1, k2, k3) = (key(1), key(2), key(3));
        let ring = ring(&[&k1, &k2]);
        let mut e = env();
        assert!(matches!(
            verify(&doc::envelope_bytes(&e), &ring, 1),
            Err(FeedError::Unsigned)
        ));
        add_signature(&mut e, &k3).unwrap();
        let err = verify(&doc::envelope_bytes(&e), &ring, 1).unwrap_err();
        assert!(
            matches!(err, FeedError::NotTrusted { good: 0, .. }),
            "{err}"
        );
        add_signature(&mut e, &k1).unwrap();
        assert!(matches!(
            add_signature(&mut e, &k1),
            Err(FeedError::AlreadySigned(_))
        ));
        let v = verify(&doc::envelope_bytes(&e), &ring, 1).unwrap();
        assert_eq!(v.doc().serial, 3);
        assert_eq!(v.signed_by(), &[k1.key_id().to_hex()]);
        assert!(verify(&doc::envelope_bytes(&e), &ring, 2).is_err());
        add_signature(&mut e, &k2).unwrap();
        verify(&doc::envelope_bytes(&e), &ring, 2).unwrap();
    }

    #[test]
    fn tampering_is_caught() {
        let k1 = key(1);
        let ring = ring(&[&k1]);
        let mut e = env();
        add_signature(&mut e, &k1).unwrap();
        let mut t = e.clone();
        t.signed = t.signed.replace("\"serial\":3", "\"serial\":9");
        let err = verify(&doc::envelope_bytes(&t), &ring, 1).unwrap_err();
        assert!(matches!(err, FeedError::BadSignature(_)), "{err}");
        // A signature made without the context prefix does not verify.
        let mut raw = e.clone();
        raw.signatures[0].sig = hex(&k1.sign(raw.signed.as_bytes()));
        assert!(verify(&doc::envelope_bytes(&raw), &ring, 1).is_err());
        let mut short = e.clone();
        short.signatures[0].sig.pop();
        assert!(matches!(
            verify(&doc::envelope_bytes(&short), &ring, 1),
            Err(FeedError::Malformed(_))
        ));
        assert!(matches!(
            verify(b"{\"signed\": 1}", &ring, 1),
            Err(FeedError::Malformed(_))
        ));
    }
}
