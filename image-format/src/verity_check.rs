//! Checking a payload's dm-verity tree against its data: a `Write` that
//! takes the payload's raw bytes (data, zero padding, tree) in pieces of
//! any size, rebuilds the tree from the data with the header's salt, and
//! compares it byte for byte with the tree that follows, and its root with
//! the signed root hash.
//!
//! The payload's SHA-256 already proves the bytes are the ones the signer
//! packed; this proves the signer packed a tree a device can boot: a tree
//! that disagrees with its data would make every read of the partition
//! fail under dm-verity (`slotctl image verify`, docs/verified-boot.md).

use std::io::{self, Write};

use crate::verity::{VerityHasher, VerityInfo, VerityTree};

enum Stage {
    /// Data blocks still to come: the bytes left.
    Data(VerityHasher, u64),
    /// The data is in: the rebuilt tree, and how far the payload's tree
    /// bytes have been compared with it.
    Tree(VerityTree, usize),
    /// A mismatch was found (its message), or `finish` failed.
    Bad(String),
}

/// Rebuilds and compares one payload's tree (see the module).
pub struct VerityCheck {
    info: VerityInfo,
    stage: Stage,
    /// Bytes past the end of the tree (a payload holds none).
    extra: u64,
}

impl VerityCheck {
    /// A checker for a payload whose header carries `info`.
    pub fn new(info: &VerityInfo) -> crate::Result<VerityCheck> {
        let data = info.hash_start_block * info.hash_block_size as u64;
        Ok(VerityCheck {
            info: info.clone(),
            stage: Stage::Data(VerityHasher::new(&info.salt)?, data),
            extra: 0,
        })
    }

    fn data_done(&mut self, hasher: VerityHasher) {
        self.stage = match hasher.finish() {
            Err(e) => Stage::Bad(e.to_string()),
            Ok(tree) if tree.info().data_blocks != self.info.data_blocks => Stage::Bad(format!(
                "the data is {} blocks, the header says {}",
                tree.info().data_blocks,
                self.info.data_blocks
            )),
            Ok(tree) if tree.info().root_hash != self.info.root_hash => Stage::Bad(format!(
                "the data's root hash is {}, the header says {}",
                tree.info().root_hex(),
                self.info.root_hex()
            )),
            Ok(tree) => Stage::Tree(tree, 0),
        };
    }

    /// After the payload's last byte: `Ok` when the tree and the root
    /// match, else what disagrees, in one line.
    pub fn finish(self) -> Result<(), String> {
        match self.stage {
            Stage::Bad(why) => Err(why),
            Stage::Data(_, left) => Err(format!("the payload ends {left} bytes into its data")),
            Stage::Tree(tree, at) if at < tree.tree().len() => Err(format!(
                "the payload ends {} bytes before the end of its tree",
                tree.tree().len() - at
            )),
            Stage::Tree(..) if self.extra > 0 => {
                Err(format!("{} bytes follow the end of the tree", self.extra))
            }
            Stage::Tree(..) => Ok(()),
        }
    }
}

impl Write for VerityCheck {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            match &mut self.stage {
                Stage::Bad(_) => break,
                Stage::Data(hasher, left) => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    hasher.update(&rest[..n]);
                    *left -= n as u64;
                    rest = &rest[n..];
                    if *left == 0 {
                        let Stage::Data(hasher, _) =
                            std::mem::replace(&mut self.stage, Stage::Bad(String::new()))
                        else {
                            unreachable!("matched above")
                        };
                        self.data_done(hasher);
                    }
                }
                Stage::Tree(tree, at) => {
                    let want = &tree.tree()[*at..];
                    let n = want.len().min(rest.len());
                    if let Some(i) = (0..n).find(|&i| want[i] != rest[i]) {
                        let off = self.info.hash_start_block * self.info.hash_block_size as u64
                            + (*at + i) as u64;
                        self.stage = Stage::Bad(format!(
                            "the tree differs from one rebuilt from the data at payload byte {off}"
                        ));
                        break;
                    }
                    *at += n;
                    rest = &rest[n..];
                    if !rest.is_empty() {
                        self.extra += rest.len() as u64;
                        break;
                    }
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verity::VerityReader;
    use std::io::Read;

    fn packed(data: &[u8]) -> (Vec<u8>, VerityInfo) {
        let mut r = VerityReader::new(data, b"salt").unwrap();
        let mut raw = Vec::new();
        r.read_to_end(&mut raw).unwrap();
        (raw, r.info().unwrap().clone())
    }

    fn check(raw: &[u8], info: &VerityInfo, piece: usize) -> Result<(), String> {
        let mut c = VerityCheck::new(info).unwrap();
        for p in raw.chunks(piece) {
            c.write_all(p).unwrap();
        }
        c.finish()
    }

    #[test]
    fn a_packed_payload_passes_in_pieces_of_any_size() {
        let data: Vec<u8> = (0..300 * 4096 + 77).map(|i| (i * 7 % 251) as u8).collect();
        let (raw, info) = packed(&data);
        for piece in [1, 1000, 4096, 65536, raw.len()] {
            assert_eq!(check(&raw, &info, piece), Ok(()), "pieces of {piece}");
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_a_wrong_root_or_a_short_payload_fails() {
        let data: Vec<u8> = (0..200 * 4096).map(|i| (i % 13) as u8).collect();
        let (raw, info) = packed(&data);
        let mut bad = raw.clone();
        bad[5 * 4096 + 1] ^= 1;
        let e = check(&bad, &info, 9000).unwrap_err();
        assert!(e.contains("root hash"), "{e}");
        let mut bad = raw.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        let e = check(&bad, &info, 9000).unwrap_err();
        assert!(e.contains("tree differs"), "{e}");
        let mut other = info.clone();
        other.root_hash[0] ^= 1;
        assert!(check(&raw, &other, 4096).unwrap_err().contains("root hash"));
        let e = check(&raw[..raw.len() - 10], &info, 4096).unwrap_err();
        assert!(e.contains("before the end of its tree"), "{e}");
        let mut longer = raw.clone();
        longer.extend_from_slice(b"xyz");
        assert!(check(&longer, &info, 4096)
            .unwrap_err()
            .contains("3 bytes follow"));
    }
}
