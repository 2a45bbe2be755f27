//! A gzip stream in two parts: a large head compressed once and cached, and a small tail
//! appended per response without compressing the head again.
//!
//! The head is the gzip header and the deflate blocks of the cached text, ended by a sync
//! flush (so it stops on a byte boundary, with no final block). [`finish`] appends the tail as
//! stored (uncompressed) deflate blocks, the last marked final, and the gzip trailer: the
//! CRC-32 of head and tail together (combined, not recomputed) and their length. Any gzip
//! reader sees one ordinary stream. A large head lies in a sealed memory file
//! ([`crate::sealed`]), sent to plain connections without a copy.

use std::io::Write as _;

use bytes::Bytes;
use crc32fast::Hasher;
use flate2::write::DeflateEncoder;
use flate2::Compression;

/// The gzip header: magic, deflate, no flags, no time, no extra flags, unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The cached part of a gzip stream.
#[derive(Clone, Debug)]
pub struct Head {
    /// The gzip header and the deflated text, sync-flushed.
    pub bytes: Bytes,
    crc: Hasher,
    length: u64,
}

/// Compresses `text` into the head of a gzip stream.
pub fn head(text: &[u8]) -> Head {
    let mut builder = Builder::new(text.len() / 4);
    builder.write(text);
    builder.head()
}

/// A head compressed as its text is written, piece by piece: the whole text is never held.
pub struct Builder {
    encoder: DeflateEncoder<crate::sealed::Writer>,
    crc: Hasher,
    length: u64,
}

impl Builder {
    /// A head expected to take about `capacity` compressed bytes.
    pub fn new(capacity: usize) -> Builder {
        let mut buffer = crate::sealed::Writer::with_capacity(capacity + HEADER.len());
        buffer.write_all(&HEADER).expect("writing to memory");
        Builder {
            encoder: DeflateEncoder::new(buffer, Compression::fast()),
            crc: Hasher::new(),
            length: 0,
        }
    }

    /// Compresses the next piece of text.
    pub fn write(&mut self, text: &[u8]) {
        self.encoder.write_all(text).expect("writing to memory");
        self.crc.update(text);
        self.length += text.len() as u64;
    }

    /// The head, sync-flushed: it ends on a byte boundary, with no final block.
    pub fn head(mut self) -> Head {
        // The encoder is dropped without finishing: its final block goes into the emptied
        // buffer.
        self.encoder.flush().expect("writing to memory");
        let bytes = std::mem::take(self.encoder.get_mut()).finish();
        Head {
            bytes,
            crc: self.crc,
            length: self.length,
        }
    }
}

impl Head {
    /// The length of the text the head holds, uncompressed.
    pub fn text_length(&self) -> u64 {
        self.length
    }
}

/// The end of the stream that `head` begins: `tail` as stored blocks, and the trailer.
pub fn finish(head: &Head, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tail.len() + tail.len() / 65_535 * 5 + 16);
    let mut chunks = tail.chunks(u16::MAX as usize).peekable();
    if chunks.peek().is_none() {
        stored_block(&mut out, &[], true);
    }
    while let Some(chunk) = chunks.next() {
        stored_block(&mut out, chunk, chunks.peek().is_none());
    }
    let mut crc = head.crc.clone();
    let mut tail_crc = Hasher::new();
    tail_crc.update(tail);
    crc.combine(&tail_crc);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE is the length modulo 2^32.
    let length = head.length.wrapping_add(tail.len() as u64) as u32;
    out.extend_from_slice(&length.to_le_bytes());
    out
}

/// One stored deflate block: its header byte (aligned, as the head ends aligned), LEN, NLEN
/// and the data.
fn stored_block(out: &mut Vec<u8>, data: &[u8], last: bool) {
    let length = data.len() as u16;
    out.push(u8::from(last));
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&(!length).to_le_bytes());
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut text)
            .unwrap();
        text
    }

    #[test]
    fn head_and_tail_read_as_one_stream() {
        let text = "wechat_miniprogram_visit_uv{app=\"shop\"} 55500\n".repeat(10_000);
        for tail in [
            String::new(),
            "process_open_fds 12\n".into(),
            "x".repeat(200_000),
        ] {
            let head = head(text.as_bytes());
            let mut stream = head.bytes.to_vec();
            stream.extend(finish(&head, tail.as_bytes()));
            assert_eq!(gunzip(&stream), format!("{text}{tail}").into_bytes());
        }
        let empty = head(b"");
        let mut stream = empty.bytes.to_vec();
        stream.extend(finish(&empty, b"only a tail\n"));
        assert_eq!(gunzip(&stream), b"only a tail\n");
    }

    #[test]
    fn a_head_written_in_pieces_is_the_head_of_the_whole() {
        let text = "wechat_miniprogram_visit_uv{app=\"shop\"} 55500\n".repeat(10_000);
        let mut builder = Builder::new(0);
        for piece in text.as_bytes().chunks(777) {
            builder.write(piece);
        }
        let head = builder.head();
        assert_eq!(head.text_length(), text.len() as u64);
        let mut stream = head.bytes.to_vec();
        stream.extend(finish(&head, b"tail\n"));
        assert_eq!(gunzip(&stream), format!("{text}tail\n").into_bytes());
    }

    #[test]
    fn the_head_compresses() {
        let text =
            "wechat_miniprogram_page_visit_pv{page=\"pages/index/index\"} 1\n".repeat(10_000);
        assert!(head(text.as_bytes()).bytes.len() < text.len() / 10);
    }
}
