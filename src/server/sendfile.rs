//! A plain TCP connection that sends the bytes lying in a sealed memory file with
//! `sendfile(2)` ([`crate::sealed`]), without copying them, and everything else as any socket.
//!
//! hyper writes a response as the slices it is made of; the cached exposition is one of them.
//! Slices before it go with `writev`, the sealed one with `sendfile` from its offset in the
//! file, so a scrape of a large exposition costs the kernel no copy on the sending side.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::sealed;

/// A TCP connection that sends sealed bytes with `sendfile`.
pub struct Connection(pub TcpStream);

impl Connection {
    /// Sends `bytes`, sealed, as far as the socket takes them.
    fn send(&self, context: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(context))?;
            let sent = self.0.try_io(Interest::WRITABLE, || {
                sealed::send(&self.0, bytes)
                    .unwrap_or_else(|| Err(io::Error::other("the bytes are no longer sealed")))
            });
            match sent {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        if sealed::is_sealed(bytes) {
            return self.send(context, bytes);
        }
        Pin::new(&mut self.0).poll_write(context, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let slices = match slices.iter().position(|slice| !slice.is_empty()) {
            Some(first) => &slices[first..],
            None => return Poll::Ready(Ok(0)),
        };
        if sealed::is_sealed(&slices[0]) {
            return self.send(context, &slices[0]);
        }
        let plain = slices
            .iter()
            .take_while(|slice| !sealed::is_sealed(slice))
            .count();
        Pin::new(&mut self.0).poll_write_vectored(context, &slices[..plain])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn plain_and_sealed_slices_arrive_in_order_as_they_are() {
        let mut writer = sealed::Writer::with_capacity(0);
        let large: Vec<u8> = (0..=200u8)
            .cycle()
            .take(sealed::SEALED_FROM * 4 + 3)
            .collect();
        writer.write_all(&large).unwrap();
        let sealed = writer.finish();
        assert!(sealed::is_sealed(&sealed));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let reading = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            socket.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut connection = Connection(TcpStream::connect(address).await.unwrap());
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
}
