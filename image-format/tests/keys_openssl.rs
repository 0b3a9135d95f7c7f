//! Keys against `openssl` as the independent judge: a key openssl made
//! loads, its public half and key id are what openssl computes, a
//! signature verifies under `openssl pkeyutl`, and a keyring directory
//! takes exactly its `*.pub` / `*.pem` files. Needs `openssl` (3.x).

use std::fs;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use image_format::*;

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn an_openssl_key_its_id_and_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let key_pem = dir.path().join("k.pem");
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", p(&key_pem)]);
    let pub_pem = String::from_utf8(openssl(&["pkey", "-in", p(&key_pem), "-pubout"])).unwrap();
    let pub_der = openssl(&["pkey", "-in", p(&key_pem), "-pubout", "-outform", "DER"]);

    let key = SigningKey::load_file(&key_pem).unwrap();
    let public = key.public_key();
    assert_eq!(public.to_public_key_pem(), pub_pem);
    assert_eq!(public.to_spki_der(), pub_der);
    assert_eq!(pub_der.len(), 44);
    // Key id: the first 8 bytes of SHA-256 over the SPKI DER.
    let digest = Sha256::digest(&pub_der);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let id = key.key_id();
    assert_eq!(id, public.key_id());
    assert_eq!(id, KeyId::of_spki_der(&pub_der));
    assert_eq!(id.0[..], digest[..8]);
    assert_eq!(id.to_hex(), hex);
    assert_eq!(id.to_string(), hex);
    assert_eq!(format!("{id:?}"), format!("KeyId({hex})"));
    assert_eq!(format!("{public:?}"), format!("PublicKey({hex})"));
    assert_eq!(format!("{key:?}"), format!("SigningKey({hex})"));
    // The same key from the other encodings.
    assert_eq!(&PublicKey::from_public_key_pem(&pub_pem).unwrap(), public);
    assert_eq!(&PublicKey::from_spki_der(&pub_der).unwrap(), public);
    let again = SigningKey::from_pkcs8_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
    assert_eq!(again.key_id(), id);

    // A signature openssl accepts, over exactly the message.
    let msg = dir.path().join("msg");
    fs::write(&msg, b"slotctl header bytes").unwrap();
    let sig = dir.path().join("sig");
    fs::write(&sig, key.sign(b"slotctl header bytes")).unwrap();
    let pubfile = dir.path().join("k.pub");
    fs::write(&pubfile, &pub_pem).unwrap();
    let verified = openssl(&[
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        p(&pubfile),
        "-rawin",
        "-in",
        p(&msg),
        "-sigfile",
        p(&sig),
    ]);
    assert!(String::from_utf8_lossy(&verified).contains("Signature Verified Successfully"));
    // ed25519 is deterministic: openssl's own signature is the same bytes.
    let theirs = openssl(&[
        "pkeyutl",
        "-sign",
        "-inkey",
        p(&key_pem),
        "-rawin",
        "-in",
        p(&msg),
    ]);
    assert_eq!(theirs, key.sign(b"slotctl header bytes"));
}

#[test]
fn a_keyring_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut ids = Vec::new();
    for name in ["a.pub", "b.pem", "c.txt"] {
        let k = SigningKey::generate().unwrap();
        fs::write(d.join(name), k.public_key().to_public_key_pem()).unwrap();
        ids.push(k.key_id());
    }
    // A directory named like a key is skipped with a warning naming it (so
    // is a dangling symlink); a file with no key extension quietly.
    fs::create_dir(d.join("d.pub")).unwrap();
    std::os::unix::fs::symlink(d.join("missing"), d.join("e.pub")).unwrap();
    fs::write(d.join("README"), "not a key").unwrap();
    let mut warned = Vec::new();
    let ring = Keyring::load_dir_warn(d, &mut |w| warned.push(w)).unwrap();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned[0].contains("d.pub") && warned[0].contains("a directory"));
    assert!(warned[1].contains("e.pub") && warned[1].contains("a symlink to"));
    fs::remove_file(d.join("e.pub")).unwrap();
    assert_eq!(ring.len(), 2);
    assert!(!ring.is_empty());
    assert!(ring.get(&ids[0]).is_some());
    assert!(ring.get(&ids[1]).is_some());
    assert!(ring.get(&ids[2]).is_none(), "c.txt is not read");
    let mut want = vec![ids[0], ids[1]];
    want.sort();
    assert_eq!(ring.iter().map(PublicKey::key_id).collect::<Vec<_>>(), want);
    // A key added twice is kept once.
    let mut ring2 = ring.clone();
    ring2.add(ring.get(&ids[0]).unwrap().clone());
    assert_eq!(ring2.len(), 2);
    assert_eq!(Keyring::new().len(), 0);
    assert!(Keyring::new().is_empty());

    // A matching file that is not a key is an error naming it.
    fs::write(d.join("e.pem"), "garbage").unwrap();
    let e = Keyring::load_dir(d).unwrap_err().to_string();
    assert!(e.contains("e.pem"), "{e}");
    // No key at all is an error.
    let empty = tempfile::tempdir().unwrap();
    fs::write(empty.path().join("x.txt"), "").unwrap();
    let e = Keyring::load_dir(empty.path()).unwrap_err().to_string();
    assert!(e.contains("no *.pub or *.pem public key"), "{e}");
    // One file, and the PEM text.
    let one = Keyring::load_file(&d.join("a.pub")).unwrap();
    assert_eq!(one.iter().next().unwrap().key_id(), ids[0]);
    let text = fs::read_to_string(d.join("b.pem")).unwrap();
    assert!(Keyring::from_public_key_pem(&text)
        .unwrap()
        .get(&ids[1])
        .is_some());
}

/// A signature that does not verify over the header is refused, by name.
#[test]
fn a_bad_signature_is_refused() {
    let key = SigningKey::generate().unwrap();
    let mut ring = Keyring::new();
    ring.add(key.public_key().clone());
    let spec = PackSpec::new("acme", semver::Version::new(1, 0, 0), 1, 0);
    let parts = vec![PackPart {
        role: "ROOT".into(),
        compression: Compression::None,
        source: Box::new(&b"data"[..]),
        size_hint: None,
        verity: None,
    }];
    let mut out = std::io::Cursor::new(Vec::new());
    pack(&mut out, &spec, parts, &[&key]).unwrap();
    let mut img = out.into_inner();
    ImageReader::new(&img[..])
        .unwrap()
        .verify(&ring, 1)
        .unwrap();
    // The first signature's bytes: after the header, the block's 16 fixed
    // bytes and the 8-byte key id.
    let header_len = ImageReader::new(&img[..]).unwrap().header_bytes().len();
    img[header_len + 16 + 8 + 5] ^= 0x01;
    let Err(e) = ImageReader::new(&img[..]).unwrap().verify(&ring, 1) else {
        panic!("a flipped signature bit verified");
    };
    assert_eq!(
        e.to_string(),
        format!(
            "signature 0 by trusted key {} does not verify over the header",
            key.key_id()
        )
    );
    assert!(e.is_refusal());
}
