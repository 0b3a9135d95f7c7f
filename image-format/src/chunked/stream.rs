//! The streaming decoder of a chunked payload: reads the table frame and
//! checks it, then the block frames group by group, and hands a group's raw
//! bytes on only after its SHA-256 matched the table. Memory: the table plus
//! one group (G x B) and one frame.

use std::io::{self, Read};

use super::table::{decode_block, ChunkTable};
use crate::error::{Error, Result};
use crate::format::PayloadInfo;

/// Decodes a chunked payload's stored bytes (read from `input`) to its raw
/// bytes. It reads exactly `stored_size` bytes when the payload is valid and
/// stops at the first error; the whole payload's SHA-256 is the caller's
/// (as for the other compressions).
pub(crate) struct ChunkedDecoder<R> {
    input: R,
    payload: PayloadInfo,
    table: Option<ChunkTable>,
    next_group: u32,
    group: Vec<u8>,
    served: usize,
    frame: Vec<u8>,
    block: Vec<u8>,
}

fn read_exact_or<R: Read>(r: &mut R, buf: &mut [u8], role: &str) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => {
                return Err(Error::BadChunkTable {
                    role: role.to_owned(),
                    reason: format!(
                        "the stored bytes end {} bytes before the frames the table lists",
                        buf.len() - done
                    ),
                }
                .into())
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl<R: Read> ChunkedDecoder<R> {
    pub(crate) fn new(payload: PayloadInfo, input: R) -> ChunkedDecoder<R> {
        ChunkedDecoder {
            input,
            payload,
            table: None,
            next_group: 0,
            group: Vec::new(),
            served: 0,
            frame: Vec::new(),
            block: Vec::new(),
        }
    }

    pub(crate) fn get_ref(&self) -> &R {
        &self.input
    }

    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.input
    }

    fn read_table(&mut self) -> io::Result<()> {
        let info = super::table::chunk_info(&self.payload)?;
        let mut frame = vec![0u8; info.table_stored_len as usize];
        read_exact_or(&mut self.input, &mut frame, &self.payload.role)?;
        let table = ChunkTable::from_frame(&self.payload, &frame)?;
        let g = table.group_blocks() as usize * table.block_size() as usize;
        self.group.reserve_exact(g.min(table.raw_size() as usize));
        self.table = Some(table);
        Ok(())
    }

    /// Decode the next group into `self.group` and check its SHA-256.
    fn next_group(&mut self) -> Result<bool> {
        let table = self.table.as_ref().expect("the table was read");
        let k = self.next_group;
        if k >= table.group_count() {
            return Ok(false);
        }
        self.group.clear();
        self.served = 0;
        for i in table.group_range(k) {
            let len = table.stored_len(i) as usize;
            self.frame.resize(len, 0);
            read_exact_or(&mut self.input, &mut self.frame, table.role())
                .map_err(Error::from_io)?;
            decode_block(table, i, &self.frame, &mut self.block)?;
            self.group.extend_from_slice(&self.block);
        }
        if !table.group_matches(k, &self.group) {
            self.group.clear();
            return Err(Error::GroupHashMismatch {
                role: table.role().to_owned(),
                group: k,
                offset: table.group_raw_range(k).start,
            });
        }
        self.next_group += 1;
        Ok(true)
    }
}

impl<R: Read> Read for ChunkedDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.table.is_none() {
            self.read_table()?;
        }
        if self.served == self.group.len() && !self.next_group()? {
            return Ok(0);
        }
        let n = buf.len().min(self.group.len() - self.served);
        buf[..n].copy_from_slice(&self.group[self.served..self.served + n]);
        self.served += n;
        Ok(n)
    }
}

/// Read a chunked payload's table frame from `stored` (positioned at the
/// payload's first stored byte), check it and parse it.
pub fn read_table<R: Read>(payload: &PayloadInfo, mut stored: R) -> Result<ChunkTable> {
    let info = super::table::chunk_info(payload)?;
    let mut frame = vec![0u8; info.table_stored_len as usize];
    read_exact_or(&mut stored, &mut frame, &payload.role).map_err(Error::from_io)?;
    ChunkTable::from_frame(payload, &frame)
}
