//! An in-process link with latency and loss, for simulations of many nodes in one process.
//!
//! [`Shaped`] wraps one side of a memory-transport connection and holds every chunk it reads
//! until the chunk's arrival time: now plus a latency drawn from the [`LinkShape`], plus, with
//! the loss probability, TCP's retransmission timeout (200 ms, doubling if the resend is lost
//! too). Chunks never overtake each other, as on a TCP connection, so a late chunk delays the
//! ones behind it. Each side delays what it reads: the latency is one-way.

use std::{
    cell::RefCell,
    collections::VecDeque,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{AsyncRead, AsyncWrite};
use rand::Rng;
use tokio::time::{Instant, Sleep};

/// Latency and loss of every link of a shaped memory transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkShape {
    /// One-way latency, uniform between the two bounds (equal for a fixed latency).
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// Probability that a chunk is lost (and resent), in parts per million.
    pub loss_ppm: u32,
}

/// Linux's smallest TCP retransmission timeout.
const RTO_MIN: Duration = Duration::from_millis(200);

impl LinkShape {
    fn delay(&self) -> Duration {
        let mut rng = rand::thread_rng();
        let mut delay = if self.latency_max > self.latency_min {
            rng.gen_range(self.latency_min..=self.latency_max)
        } else {
            self.latency_min
        };
        let mut rto = RTO_MIN;
        // At most as many resends as Linux tries (`tcp_retries2`) before giving up.
        for _ in 0..15 {
            if self.loss_ppm == 0 || rng.gen_range(0..1_000_000) >= self.loss_ppm {
                break;
            }
            delay += rto;
            rto = (rto * 2).min(Duration::from_secs(60));
        }
        delay
    }
}

/// Largest chunk read from the inner stream at once.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// Where a read from the inner stream lands before its bytes join the queue (one per
    /// thread, not per connection: a thousand-node simulation has tens of thousands of links).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0u8; READ_CHUNK]);
}

/// One side of a connection whose reads arrive late (see the module doc).
pub struct Shaped<S> {
    inner: S,
    shape: LinkShape,
    /// Chunks read from the inner stream, each with its arrival time and how much of it was
    /// handed out already. Bounded by the peer's sending: Yamux's flow-control windows cap
    /// what can be in flight on a connection.
    arriving: VecDeque<(Instant, Vec<u8>, usize)>,
    last_arrival: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    inner_done: bool,
}

impl<S> Shaped<S> {
    pub fn new(inner: S, shape: LinkShape) -> Self {
        Shaped {
            inner,
            shape,
            arriving: VecDeque::new(),
            last_arrival: None,
            timer: None,
            inner_done: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Shaped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // Take in everything the peer has sent so far, stamped with its arrival time.
        while !this.inner_done {
            // Read into this thread's scratch buffer and keep only what came: most polls find
            // nothing new, and a fresh zeroed chunk for each was a tenth of a 1 000-node run.
            // (The inner stream is a memory-transport channel, never another `Shaped`, so the
            // borrow cannot nest.)
            let read = SCRATCH.with_borrow_mut(|scratch| {
                match Pin::new(&mut this.inner).poll_read(cx, &mut scratch[..]) {
                    Poll::Ready(Ok(n)) => Poll::Ready(Ok(scratch[..n].to_vec())),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            });
            match read {
                Poll::Ready(Ok(chunk)) if chunk.is_empty() => this.inner_done = true,
                Poll::Ready(Ok(chunk)) => {
                    let mut at = Instant::now() + this.shape.delay();
                    if let Some(last) = this.last_arrival {
                        at = at.max(last);
                    }
                    this.last_arrival = Some(at);
                    this.arriving.push_back((at, chunk, 0));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        loop {
            let Some((at, data, used)) = this.arriving.front_mut() else {
                // Nothing on its way: end of stream, or wait for the inner stream (its waker
                // is registered by the read above).
                return if this.inner_done {
                    Poll::Ready(Ok(0))
                } else {
                    Poll::Pending
                };
            };
            if *at <= Instant::now() {
                this.timer = None;
                let n = buf.len().min(data.len() - *used);
                buf[..n].copy_from_slice(&data[*used..*used + n]);
                *used += n;
                if *used == data.len() {
                    this.arriving.pop_front();
                }
                return Poll::Ready(Ok(n));
            }
            let deadline = *at;
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Shaped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, io::Cursor};

    use super::*;

    #[tokio::test]
    async fn reads_arrive_after_the_latency_whole_and_in_order() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let shape = LinkShape {
            latency_min: Duration::from_millis(30),
            latency_max: Duration::from_millis(60),
            loss_ppm: 0,
        };
        let mut link = Shaped::new(Cursor::new(data.clone()), shape);
        let start = Instant::now();
        let mut got = Vec::new();
        link.read_to_end(&mut got).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(got, data);
    }
}
