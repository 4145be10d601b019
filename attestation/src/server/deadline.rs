//! The write deadline of a connection: once the socket stops taking the service's bytes (a write is
//! pending), everything written so far must be handed to the kernel within `write_timeout_secs`, or the
//! connection fails with `TimedOut` and is closed. A client that sends requests and never reads the
//! answers therefore holds its connection for at most that long, whatever it pipelines.
//!
//! The deadline wraps the TCP stream under TLS, so it covers every byte the service writes: handshake
//! flights, answers and alerts. It is armed only when a write is pending and disarmed when a flush completes
//! (TLS flushes the socket once all its records are written), so a connection whose writes never block
//! costs no timer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream whose pending writes have a deadline.
#[derive(Debug)]
pub struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    armed: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicU64>,
}

impl<T> WriteDeadline<T> {
    /// Wrap `inner`; `expired` counts connections cut off by the deadline.
    pub fn new(inner: T, timeout: Duration, expired: Arc<AtomicU64>) -> Self {
        WriteDeadline {
            inner,
            timeout,
            armed: None,
            expired,
        }
    }

    /// A write is pending: start the clock if it is not running, and fail once it has run out.
    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let timeout = self.timeout;
        let sleep = self
            .armed
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.expired.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the answer within write_timeout_secs",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending(cx),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            Poll::Ready(Ok(())) => {
                self.armed = None;
                Poll::Ready(Ok(()))
            }
            err => err,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.pending(cx),
            ready => ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_after_the_timeout() {
        // A duplex pipe with a 64-byte buffer that nobody reads stands in for a socket whose peer stopped
        // reading (tcp_sendmsg blocks once the send buffer is full).
        let (near, _far) = tokio::io::duplex(64);
        let expired = Arc::new(AtomicU64::new(0));
        let mut io = WriteDeadline::new(near, Duration::from_millis(50), expired.clone());
        io.write_all(&[0; 64]).await.unwrap();
        io.flush().await.unwrap();
        let e = io.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(expired.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_flush_disarms_the_deadline() {
        // Twelve answers of 256 bytes, each read completely in about 100 ms, take longer together than the
        // one-second deadline: only disarming at each flush lets them all through.
        const ANSWERS: usize = 12;
        let (near, mut far) = tokio::io::duplex(64);
        let expired = Arc::new(AtomicU64::new(0));
        let mut io = WriteDeadline::new(near, Duration::from_secs(1), expired.clone());
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut total = 0;
            let mut buf = [0u8; 64];
            while total < 256 * ANSWERS {
                tokio::time::sleep(Duration::from_millis(25)).await;
                total += far.read(&mut buf).await.unwrap();
            }
        });
        for _ in 0..ANSWERS {
            io.write_all(&[1; 256]).await.unwrap();
            io.flush().await.unwrap();
        }
        reader.await.unwrap();
        assert_eq!(expired.load(Ordering::Relaxed), 0);
    }
}
