//! Large bytes kept in a sealed memory file (Linux's `memfd`), which a socket is sent from
//! without copying ([`Located::send`]).
//!
//! The exposition is large (megabytes compressed, a hundred uncompressed at a thousand apps)
//! and goes whole to every scraper. Written with `write(2)`, it is copied into the kernel on
//! every scrape; kept in a memory file sealed against any change, `sendfile(2)` hands its pages
//! to the socket as they are, as nginx does with a file, and a mapping of the file gives the
//! bytes to every other reader (TLS, the tests). The seals make the mapping immutable for
//! everyone, this process included, which is what makes handing it out as `&[u8]` sound.
//! Where a memory file cannot be had, the bytes stay on the heap and are written as before.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

/// From what size bytes go into a memory file: below it a response is a few writes anyway.
pub const SEALED_FROM: usize = 256 * 1024;

/// How much is gathered on the heap before it is written to the memory file.
const BUFFER: usize = 64 * 1024;

/// A sealed memory file and its mapping.
struct Mapped {
    file: File,
    map: memmap2::Mmap,
}

/// The owner of the bytes a [`Bytes`] made by [`Writer::finish`] points into.
struct Owner(Arc<Mapped>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0.map
    }
}

/// The mappings alive, by address and length: a few at a time (the exposition being served,
/// the text, the next rendering).
static LIVE: Mutex<Vec<(usize, usize, Weak<Mapped>)>> = Mutex::new(Vec::new());

/// Bytes written piece by piece: on the heap while small, then into a memory file.
#[derive(Default)]
pub struct Writer {
    heap: Vec<u8>,
    file: Option<File>,
}

impl Writer {
    /// A writer expecting about `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer {
            heap: Vec::with_capacity(capacity.min(SEALED_FROM)),
            file: None,
        }
    }

    /// The bytes written: in a sealed memory file when there are [`SEALED_FROM`] or more and
    /// one could be made, else on the heap.
    pub fn finish(mut self) -> Bytes {
        let Some(mut file) = self.file.take() else {
            self.heap.shrink_to_fit();
            return Bytes::from(self.heap);
        };
        match seal(&mut file, &self.heap) {
            Ok(mapped) => {
                let mapped = Arc::new(mapped);
                let start = mapped.map.as_ptr() as usize;
                let mut live = LIVE.lock().expect("sealed lock");
                live.retain(|(_, _, alive)| alive.strong_count() > 0);
                live.push((start, mapped.map.len(), Arc::downgrade(&mapped)));
                drop(live);
                Bytes::from_owner(Owner(mapped))
            }
            Err(error) => {
                tracing::debug!(%error, "a memory file could not be sealed; the bytes stay on the heap");
                Bytes::from(read_back(&mut file, self.heap))
            }
        }
    }

    /// Moves what is on the heap into the memory file, making it first; on any failure the
    /// bytes stay on the heap (what went into the file is read back).
    fn spill(&mut self) {
        if self.file.is_none() {
            self.file = memory_file();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err(error) = file.write_all(&self.heap) {
            tracing::debug!(%error, "a memory file could not be written; the bytes stay on the heap");
            let mut file = self.file.take().expect("the file is there");
            let heap = std::mem::take(&mut self.heap);
            self.heap = read_back(&mut file, heap);
            return;
        }
        self.heap.clear();
    }
}

impl Writer {
    /// Appends `bytes`; writing never fails (a failing memory file leaves them on the heap).
    pub fn append(&mut self, bytes: &[u8]) {
        self.heap.extend_from_slice(bytes);
        let limit = if self.file.is_some() {
            BUFFER
        } else {
            SEALED_FROM
        };
        if self.heap.len() >= limit {
            self.spill();
        }
    }
}

impl Write for Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A new memory file, if the system has them.
fn memory_file() -> Option<File> {
    use rustix::fs::{memfd_create, MemfdFlags};
    match memfd_create(
        "wechat-miniprogram-exporter",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    ) {
        Ok(fd) => Some(File::from(fd)),
        Err(error) => {
            tracing::debug!(%error, "no memory file; large responses are written from the heap");
            None
        }
    }
}

/// Writes `rest` to `file`, seals it against any change and maps it.
fn seal(file: &mut File, rest: &[u8]) -> std::io::Result<Mapped> {
    use rustix::fs::{fcntl_add_seals, SealFlags};
    file.write_all(rest)?;
    fcntl_add_seals(
        &*file,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )?;
    let map = map(file)?;
    Ok(Mapped {
        file: file.try_clone()?,
        map,
    })
}

/// Maps `file`, sealed: nothing can change or shorten it any more.
#[allow(unsafe_code)]
fn map(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is undefined behaviour only if the file changes or shrinks while
    // mapped; the file is a memory file of this process, and its seals (write, shrink, grow,
    // and no more seals) make any change impossible, for this process as for any other.
    unsafe { memmap2::Mmap::map(file) }
}

/// What went into `file` followed by `heap`, on the heap: the way back when the memory file
/// fails.
fn read_back(file: &mut File, heap: Vec<u8>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if file
        .rewind()
        .and_then(|()| file.read_to_end(&mut bytes))
        .is_err()
    {
        tracing::error!("a memory file could not be read back; a response is incomplete");
    }
    bytes.extend_from_slice(&heap);
    bytes
}

/// The memory file `bytes` lie in, and their offset in it.
fn find(bytes: &[u8]) -> Option<(Arc<Mapped>, u64)> {
    let address = bytes.as_ptr() as usize;
    let live = LIVE.lock().expect("sealed lock");
    live.iter().find_map(|(start, length, mapped)| {
        let inside = address >= *start && address + bytes.len() <= start + length;
        inside
            .then(|| mapped.upgrade())
            .flatten()
            .map(|mapped| (mapped, (address - start) as u64))
    })
}

/// Whether `bytes` lie in a sealed memory file, and can be sent from it ([`locate`]).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.len() >= BUFFER && find(bytes).is_some()
}

/// Sealed bytes found: their memory file, kept open while they are sent, and the part of them
/// not sent yet.
pub struct Located {
    mapped: Arc<Mapped>,
    offset: u64,
    end: u64,
}

/// Where `bytes` lie, if they lie in a sealed memory file.
pub fn locate(bytes: &[u8]) -> Option<Located> {
    let (mapped, offset) = find(bytes)?;
    Some(Located {
        mapped,
        offset,
        end: offset + bytes.len() as u64,
    })
}

impl Located {
    /// How many bytes are left to send.
    pub fn left(&self) -> usize {
        (self.end - self.offset) as usize
    }

    /// Sends what is left to `socket` with `sendfile(2)`, as far as the socket takes it (a
    /// non-blocking socket takes what fits): how many went.
    pub fn send(&mut self, socket: impl AsFd) -> rustix::io::Result<usize> {
        let left = self.left();
        rustix::fs::sendfile(socket, &self.mapped.file, Some(&mut self.offset), left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(pieces: &[&[u8]]) -> Bytes {
        let mut writer = Writer::with_capacity(0);
        for piece in pieces {
            writer.write_all(piece).unwrap();
        }
        writer.finish()
    }

    #[test]
    fn small_bytes_stay_on_the_heap_and_large_ones_go_into_a_sealed_file_unchanged() {
        let small = written(&[b"abc", b"def"]);
        assert_eq!(&small[..], b"abcdef");
        assert!(!is_sealed(&small));
        let piece: Vec<u8> = (0..=255u8).cycle().take(100_003).collect();
        let large = written(&[&piece, &piece, &piece, &piece]);
        assert_eq!(large.len(), 4 * piece.len());
        assert_eq!(
            &large[..],
            &[&piece[..], &piece, &piece, &piece].concat()[..]
        );
        assert!(is_sealed(&large));
        assert!(is_sealed(&large.slice(1000..200_000)));
    }

    #[test]
    fn a_sealed_file_refuses_every_change() {
        let large = written(&[&vec![7u8; SEALED_FROM * 2]]);
        let (mapped, _) = find(&large).unwrap();
        let mut file = mapped.file.try_clone().unwrap();
        assert!(file.write_all(b"changed").is_err());
        assert!(file.set_len(1).is_err());
        assert!(large.iter().all(|byte| *byte == 7));
    }

    #[test]
    fn sent_bytes_arrive_as_they_are_from_any_offset() {
        use std::io::Read as _;
        let piece: Vec<u8> = (0..=250u8).cycle().take(SEALED_FROM * 3 + 17).collect();
        let large = written(&[&piece]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sender = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        let reading = std::thread::spawn(move || {
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).unwrap();
            got
        });
        let mut rest = locate(&large[5..]).unwrap();
        while rest.left() > 0 {
            rest.send(&sender).unwrap();
        }
        sender.flush().unwrap();
        drop(sender);
        assert_eq!(reading.join().unwrap(), &piece[5..]);
        assert!(locate(b"heap").is_none());
        assert!(locate(&vec![0u8; SEALED_FROM]).is_none());
    }

    #[test]
    fn the_memory_files_of_dropped_bytes_are_forgotten() {
        for round in 0..20u8 {
            drop(written(&[&vec![round; SEALED_FROM]]));
        }
        let _last = written(&[&vec![1u8; SEALED_FROM]]);
        let live = LIVE.lock().unwrap();
        assert!(live.len() <= 8, "{} mappings kept", live.len());
    }
}
