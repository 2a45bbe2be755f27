//! A plain TCP connection that sends the bytes lying in a sealed memory file with
//! `sendfile(2)` ([`crate::sealed`]), without copying them, from the CPU the connection's
//! packets arrive on, and everything else as any socket.
//!
//! hyper writes a response as the slices it is made of; the cached exposition is one of them.
//! A write that holds a sealed slice is sent whole on a blocking thread: the plain slices
//! before it, the sealed one with `sendfile` from its offset in the file, the plain ones after
//! it, so a scrape of a large exposition costs the kernel no copy on the sending side. For the
//! send, that thread moves to the CPU where the connection's packets arrive
//! (`SO_INCOMING_CPU`), where the scraper's acknowledgements are handled: every segment of
//! the response then leaves from that one CPU. Sent from tokio's workers, which take turns at a
//! connection, segments left from two CPUs at once, and a scraper on the same machine (or
//! node) got them out of order: retransmissions, and a fifth fewer scrapes per second.

use std::future::Future as _;
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustix::io::Errno;
use rustix::process::CpuSet;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::sealed;

/// How long a send waits for room in a full socket before it looks whether the connection
/// was closed meanwhile.
const WAIT_MS: i32 = 250;

/// A TCP connection that sends sealed bytes with `sendfile`.
pub struct Connection {
    stream: TcpStream,
    /// The send under way on a blocking thread: hyper asks again with the same slices (more
    /// may follow them) until it is done.
    sending: Option<JoinHandle<io::Result<usize>>>,
    /// Set when the connection is dropped: a send under way stops at its next wait.
    closed: Arc<AtomicBool>,
}

impl Connection {
    /// `stream`, sending sealed bytes with `sendfile`.
    pub fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            sending: None,
            closed: Arc::default(),
        }
    }

    /// Sends `before`, `sealed` and `after` in this order on a blocking thread (unless a send
    /// is under way already): ready, with how many bytes went, once the send ends.
    fn send(
        &mut self,
        context: &mut Context<'_>,
        before: &[io::IoSlice<'_>],
        sealed: &[u8],
        after: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.sending.is_none() {
            let Some(located) = sealed::locate(sealed) else {
                return Poll::Ready(Err(io::Error::other("the bytes are no longer sealed")));
            };
            let socket = match self.stream.as_fd().try_clone_to_owned() {
                Ok(socket) => socket,
                // No descriptor to spare for a thread (the process at its limit of open
                // files): the bytes go from here, as they did before threads sent them.
                Err(_) => return self.send_here(context, before, located),
            };
            let send = Send {
                socket,
                before: joined(before),
                located,
                after: joined(after),
                closed: self.closed.clone(),
            };
            self.sending = Some(tokio::task::spawn_blocking(move || send.run()));
        }
        self.finish(context)
    }

    /// Sends `before` if there is any, else the sealed bytes of `located`, from this task: as
    /// far as the socket takes them.
    fn send_here(
        &mut self,
        context: &mut Context<'_>,
        before: &[io::IoSlice<'_>],
        mut located: sealed::Located,
    ) -> Poll<io::Result<usize>> {
        if !before.is_empty() {
            return Pin::new(&mut self.stream).poll_write_vectored(context, before);
        }
        loop {
            ready!(self.stream.poll_write_ready(context))?;
            let stream = &self.stream;
            let sent = stream.try_io(Interest::WRITABLE, || Ok(located.send(stream)?));
            match sent {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }

    /// The end of the send under way.
    fn finish(&mut self, context: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(sending) = self.sending.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let ended = ready!(Pin::new(sending).poll(context));
        self.sending = None;
        Poll::Ready(ended.unwrap_or_else(|failed| Err(io::Error::other(failed))))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// `slices` one after the other.
fn joined(slices: &[io::IoSlice<'_>]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(slices.iter().map(|slice| slice.len()).sum());
    for slice in slices {
        bytes.extend_from_slice(slice);
    }
    bytes
}

/// One send of plain bytes around sealed ones, on a copy of the connection's descriptor.
struct Send {
    socket: OwnedFd,
    before: Vec<u8>,
    located: sealed::Located,
    after: Vec<u8>,
    closed: Arc<AtomicBool>,
}

impl Send {
    /// Sends everything in order, from the CPU the connection's packets arrive on: how many
    /// bytes went (fewer if the connection closed or failed; an error if none went).
    fn run(mut self) -> io::Result<usize> {
        let mut pinned = Pinned::new();
        pinned.follow(&self.socket);
        let (socket, closed) = (&self.socket, &*self.closed);
        let mut drain =
            |length, attempt: Attempt<'_>| drain(socket, closed, &mut pinned, length, attempt);
        let more = rustix::net::SendFlags::MORE;
        let before = &self.before;
        let mut sent = drain(before.len(), &mut |done| {
            rustix::net::send(socket, &before[done..], more)
        })?;
        if sent < before.len() {
            return Ok(sent);
        }
        let located = &mut self.located;
        let sealed = located.left();
        match drain(sealed, &mut |_| located.send(socket)) {
            Ok(went) => sent += went,
            Err(error) if sent == 0 => return Err(error),
            Err(_) => return Ok(sent),
        }
        if sent < before.len() + sealed {
            return Ok(sent);
        }
        let after = &self.after;
        let none = rustix::net::SendFlags::empty();
        let rest = drain(after.len(), &mut |done| {
            rustix::net::send(socket, &after[done..], none)
        });
        Ok(sent + rest.unwrap_or(0))
    }
}

/// What a send attempts: given how many bytes went so far, how many more went.
type Attempt<'a> = &'a mut dyn FnMut(usize) -> rustix::io::Result<usize>;

/// Sends `length` bytes with `attempt`, waiting while the socket is full (and following the
/// connection to the CPU its packets now arrive on): how many went, fewer once the connection
/// is closed or fails (an error if none went).
fn drain(
    socket: &OwnedFd,
    closed: &AtomicBool,
    pinned: &mut Pinned,
    length: usize,
    attempt: Attempt<'_>,
) -> io::Result<usize> {
    let mut done = 0;
    while done < length {
        match attempt(done) {
            Ok(0) => break,
            Ok(sent) => done += sent,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) if !closed.load(Ordering::Acquire) => {
                let writable = rustix::event::PollFlags::OUT;
                let mut wait = [rustix::event::PollFd::new(socket, writable)];
                let _ = rustix::event::poll(&mut wait, WAIT_MS);
                pinned.follow(socket);
            }
            Err(Errno::AGAIN) => break,
            Err(error) if done == 0 => return Err(error.into()),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// The thread of a send, kept on the CPU a connection's packets arrive on while it sends; it
/// gets back the CPUs it had when this is dropped.
struct Pinned {
    /// The CPUs the thread may run on, if they could be read.
    allowed: Option<CpuSet>,
    /// The CPU the thread was moved to.
    on: Option<usize>,
}

impl Pinned {
    fn new() -> Pinned {
        Pinned {
            allowed: rustix::process::sched_getaffinity(None).ok(),
            on: None,
        }
    }

    /// Moves the thread to the CPU `socket`'s packets arrive on, alone, if it may run there.
    fn follow(&mut self, socket: &OwnedFd) {
        let cpu = rustix::net::sockopt::get_socket_incoming_cpu(socket).ok();
        self.move_to(cpu.map(|cpu| cpu as usize));
    }

    /// Moves the thread to `cpu` alone, if it may run there and is not there already.
    fn move_to(&mut self, cpu: Option<usize>) {
        let (Some(cpu), Some(allowed)) = (cpu, &self.allowed) else {
            return;
        };
        if self.on == Some(cpu) || cpu >= CpuSet::MAX_CPU || !allowed.is_set(cpu) {
            return;
        }
        let mut only = CpuSet::new();
        only.set(cpu);
        if rustix::process::sched_setaffinity(None, &only).is_ok() {
            self.on = Some(cpu);
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let (Some(_), Some(allowed)) = (self.on, &self.allowed) {
            let _ = rustix::process::sched_setaffinity(None, allowed);
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.sending.is_some() || sealed::is_sealed(bytes) {
            return self.send(context, &[], bytes, &[]);
        }
        Pin::new(&mut self.stream).poll_write(context, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.sending.is_some() {
            return self.finish(context);
        }
        let Some(at) = slices.iter().position(|slice| sealed::is_sealed(slice)) else {
            return Pin::new(&mut self.stream).poll_write_vectored(context, slices);
        };
        let after = &slices[at + 1..];
        let plain = after
            .iter()
            .take_while(|slice| !sealed::is_sealed(slice))
            .count();
        self.send(context, &slices[..at], &slices[at], &after[..plain])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// `length` bytes counting up to `top` and over, and the same in a sealed memory file.
    fn sealed_pattern(top: u8, length: usize) -> (Vec<u8>, bytes::Bytes) {
        let mut writer = sealed::Writer::with_capacity(0);
        let bytes: Vec<u8> = (0..=top).cycle().take(length).collect();
        writer.write_all(&bytes).unwrap();
        let sealed = writer.finish();
        assert!(sealed::is_sealed(&sealed));
        (bytes, sealed)
    }

    /// A connection to a reader that reads it to the end, and what the reader got.
    async fn connection_to_a_reader() -> (Connection, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let reading = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            socket.read_to_end(&mut got).await.unwrap();
            got
        });
        let connection = Connection::new(TcpStream::connect(address).await.unwrap());
        (connection, reading)
    }

    #[tokio::test]
    async fn plain_and_sealed_slices_arrive_in_order_as_they_are() {
        let (large, sealed) = sealed_pattern(200, sealed::SEALED_FROM * 4 + 3);
        let (mut connection, reading) = connection_to_a_reader().await;
        let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let mut parts = vec![
            bytes::Bytes::from(head.clone()),
            sealed.clone(),
            bytes::Bytes::from_static(b"tail"),
        ];
        while !parts.is_empty() {
            let slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
            let mut sent = connection.write_vectored(&slices).await.unwrap();
            while sent > 0 {
                let first = parts[0].len().min(sent);
                parts[0] = parts[0].slice(first..);
                sent -= first;
                if parts[0].is_empty() {
                    parts.remove(0);
                }
            }
        }
        connection.shutdown().await.unwrap();
        drop(connection);
        let got = reading.await.unwrap();
        assert_eq!(got, [&head[..], &large, b"tail"].concat());
    }

    #[tokio::test]
    async fn without_a_descriptor_to_spare_the_bytes_go_from_the_task_in_order() {
        let (large, sealed) = sealed_pattern(240, sealed::SEALED_FROM * 8 + 5);
        let (mut connection, reading) = connection_to_a_reader().await;
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let mut head_left = &head[..];
        let mut rest = sealed.clone();
        while !rest.is_empty() {
            let before = [io::IoSlice::new(head_left)];
            let before = if head_left.is_empty() {
                &[][..]
            } else {
                &before[..]
            };
            let sent = std::future::poll_fn(|context| {
                connection.send_here(context, before, sealed::locate(&rest).unwrap())
            })
            .await
            .unwrap();
            if head_left.is_empty() {
                rest = rest.slice(sent..);
            } else {
                head_left = &head_left[sent..];
            }
        }
        connection.shutdown().await.unwrap();
        drop(connection);
        assert_eq!(reading.await.unwrap(), [&head[..], &large].concat());
    }

    #[tokio::test]
    async fn a_send_to_a_scraper_that_stopped_reading_ends_once_the_connection_is_dropped() {
        // More than the two sockets' buffers hold, so that the send has to wait.
        let (large, sealed) = sealed_pattern(250, 64 << 20);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut scraper = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let writing = tokio::spawn(async move {
            let mut connection = Connection::new(stream);
            let _ = connection.write_all(&sealed).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !writing.is_finished(),
            "the socket took it all: make it larger"
        );
        writing.abort();
        let _ = writing.await;
        // The send notices within its wait, stops, and closes its copy of the socket: the
        // scraper then reads what went, and the end, not the rest.
        tokio::time::sleep(std::time::Duration::from_millis(3 * WAIT_MS as u64)).await;
        let mut got = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            scraper.read_to_end(&mut got),
        );
        read.await.expect("the connection ends").unwrap();
        assert!(got.len() < large.len(), "{} bytes went", got.len());
        assert_eq!(got, large[..got.len()], "what went, went in order");
    }

    #[test]
    fn a_send_runs_on_the_connections_cpu_alone_and_the_thread_gets_its_cpus_back() {
        use rustix::process::{sched_getaffinity, sched_getcpu};
        let before = sched_getaffinity(None).unwrap();
        let cpu = sched_getcpu();
        let mut pinned = Pinned::new();
        pinned.move_to(Some(cpu));
        let during = sched_getaffinity(None).unwrap();
        assert_eq!(during.count(), 1);
        assert!(during.is_set(cpu));
        drop(pinned);
        assert_eq!(sched_getaffinity(None).unwrap(), before);
        for elsewhere in [None, Some(CpuSet::MAX_CPU + 1)] {
            let mut pinned = Pinned::new();
            pinned.move_to(elsewhere);
            assert_eq!(sched_getaffinity(None).unwrap(), before, "{elsewhere:?}");
        }
    }
}
