//! `ZstdOptions::workers`: "0: compress on the calling thread", otherwise
//! (from 2) a zstd payload's 1 MiB frames are compressed on that many worker
//! threads. Seen from outside: the
//! payload source counts this process's threads (/proc/self/task) each
//! time `pack` reads from it. This file holds one test so that no other
//! test's threads come and go meanwhile.

use std::io::{Cursor, Read};

use image_format::*;

/// 6 MiB of compressible bytes, handed out in reads, noting the number of
/// threads of the process at each read.
struct Counting {
    left: usize,
    threads: Vec<usize>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.threads
            .push(std::fs::read_dir("/proc/self/task")?.count());
        let n = buf.len().min(self.left).min(256 * 1024);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = ((self.left - i) % 251) as u8;
        }
        self.left -= n;
        Ok(n)
    }
}

/// Threads seen at the source's reads while packing with `workers`: the
/// fewest and the most.
fn threads_while_packing(workers: u32) -> (usize, usize) {
    let key = SigningKey::generate().unwrap();
    let mut spec = PackSpec::new("acme", semver::Version::new(1, 0, 0), 1, 0);
    spec.zstd.workers = workers;
    let mut source = Counting {
        left: 6 << 20,
        threads: Vec::new(),
    };
    let parts = vec![PackPart {
        role: "ROOT".into(),
        compression: Compression::Zstd,
        source: Box::new(&mut source),
        size_hint: None,
        verity: None,
    }];
    let mut out = Cursor::new(Vec::new());
    pack(&mut out, &spec, parts, &[&key]).unwrap();
    let mut ring = Keyring::new();
    ring.add(key.public_key().clone());
    let mut v = ImageReader::new(&out.get_ref()[..])
        .unwrap()
        .verify(&ring, 1)
        .unwrap();
    let mut n = 0u64;
    let mut r = v.next_payload().unwrap().unwrap();
    n += std::io::copy(&mut r, &mut std::io::sink()).unwrap();
    assert_eq!(n, 6 << 20);
    assert!(source.threads.len() > 4, "{:?}", source.threads);
    let min = *source.threads.iter().min().unwrap();
    let max = *source.threads.iter().max().unwrap();
    (min, max)
}

#[test]
fn workers_zero_stays_on_the_calling_thread_and_two_add_two_threads() {
    let (min, max) = threads_while_packing(0);
    assert_eq!(min, max, "workers 0 started threads");
    let (min2, max2) = threads_while_packing(2);
    assert_eq!(min2, min, "before the first write there are no workers");
    assert!(max2 >= min + 2, "workers 2: threads {min2}..={max2}");
}
