//! Every entry point of the image parser on arbitrary bytes: the framing and
//! signature block (`ImageReader::new`), the field parser without a
//! signature (`into_untrusted`), the payload stream, and record re-verification.
#![no_main]

use std::io::Read;
use std::sync::OnceLock;

use image_format::{ImageReader, Keyring, PublicKey, VerifiedHeader};
use libfuzzer_sys::fuzz_target;

fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| {
        let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        let mut ring = Keyring::new();
        ring.add(PublicKey::from_public_key_pem(pem).unwrap());
        ring
    })
}

fuzz_target!(|data: &[u8]| {
    let ring = keyring();
    if let Ok(reader) = ImageReader::new(data) {
        let _ = reader.signature_status(ring);
        if let Ok(mut image) = reader.into_untrusted() {
            while let Ok(Some(mut payload)) = image.next_payload() {
                if payload.read_to_end(&mut Vec::new()).is_err() {
                    break;
                }
            }
            let _ = image.finish();
        }
    }
    let _ = VerifiedHeader::from_record_bytes(ring, 1, data);
    if let Ok(reader) = ImageReader::new(data) {
        let _ = reader.verify(ring, 1);
    }
});
