//! The private-network layer: only holders of the mesh key can talk to this node.
//!
//! It speaks libp2p's private-network protocol (the one `libp2p-pnet` implements, and go-libp2p
//! and the IPFS "swarm key"): each side sends a random 24-byte nonce, then everything it writes
//! is XSalsa20 under the shared key and its own nonce. A peer without the key produces garbage
//! that the Noise handshake above rejects.
//!
//! Why not `libp2p-pnet` itself: its XSalsa20 is the portable one (about 0.4 GB/s here), and
//! every byte of every file a node fetches or serves passes through it twice; libsodium's
//! vectorised Salsa20 does the same work 7-8 times faster (about 3 GB/s), so a file transfer
//! through many co-located nodes is no longer bound by this layer. The bytes on the wire are
//! the same: the tests run this layer against `libp2p-pnet`.

use std::{
    io,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll, ready},
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rand::RngCore;

/// Length of the nonce each side sends first.
const NONCE_LEN: usize = 24;
/// Salsa20 works in blocks of this many bytes.
const BLOCK: u64 = 64;
/// Most plaintext one write takes in (it is encrypted into a buffer of this size).
const WRITE_CHUNK: usize = 64 * 1024;

/// A failed private-network handshake.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    #[error("private-network handshake: {0}")]
    Handshake(#[from] io::Error),
    #[error("the cipher library could not start")]
    Cipher,
}

/// libsodium must be initialised once per process before use (it picks its vectorised code
/// paths then); `sodium_init` is itself thread-safe and idempotent.
fn sodium_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    // SAFETY: `sodium_init` takes no arguments and may be called from any thread, any number of
    // times; it returns -1 only when the library cannot initialise.
    *READY.get_or_init(|| unsafe { libsodium_sys::sodium_init() } >= 0)
}

/// One direction's XSalsa20 keystream, applied at any byte position.
///
/// XSalsa20 is Salsa20 under a subkey derived (HSalsa20) from the key and the nonce's first 16
/// bytes, with the nonce's last 8 bytes; the subkey is derived once here rather than on every
/// call.
struct Keystream {
    subkey: [u8; 32],
    nonce: [u8; 8],
    /// Bytes of keystream used so far.
    position: u64,
}

impl Keystream {
    fn new(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> Keystream {
        let mut subkey = [0u8; 32];
        // SAFETY: `crypto_core_hsalsa20` writes 32 bytes to `out` and reads 16 bytes from `in`
        // and 32 from `k`; the null constant selects the standard one. Every pointer is valid
        // for that long during the call.
        unsafe {
            libsodium_sys::crypto_core_hsalsa20(
                subkey.as_mut_ptr(),
                nonce.as_ptr(),
                key.as_ptr(),
                std::ptr::null(),
            );
        }
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&nonce[16..]);
        Keystream {
            subkey,
            nonce: tail,
            position: 0,
        }
    }

    /// XORs the keystream from `block` on into `data`, in place.
    fn xor_from_block(&self, data: &mut [u8], block: u64) {
        // SAFETY: `crypto_stream_salsa20_xor_ic` reads `mlen` bytes from `m` and writes `mlen`
        // bytes to `c` (the same buffer here, which libsodium allows), reads 8 bytes of nonce and
        // 32 of key. `data` is valid for `data.len()` bytes and the arrays for their sizes.
        unsafe {
            libsodium_sys::crypto_stream_salsa20_xor_ic(
                data.as_mut_ptr(),
                data.as_ptr(),
                data.len() as u64,
                self.nonce.as_ptr(),
                block,
                self.subkey.as_ptr(),
            );
        }
    }

    /// Encrypts or decrypts `data` in place, continuing where the last call stopped.
    fn apply(&mut self, data: &mut [u8]) {
        let mut done = 0;
        let into_block = (self.position % BLOCK) as usize;
        if into_block != 0 {
            // The last call stopped inside a block: finish that block first.
            let mut keystream = [0u8; BLOCK as usize];
            self.xor_from_block(&mut keystream, self.position / BLOCK);
            let n = (BLOCK as usize - into_block).min(data.len());
            for (byte, key) in data[..n].iter_mut().zip(&keystream[into_block..]) {
                *byte ^= key;
            }
            done = n;
        }
        if done < data.len() {
            let block = (self.position + done as u64) / BLOCK;
            self.xor_from_block(&mut data[done..], block);
        }
        self.position += data.len() as u64;
    }
}

/// Runs the handshake on a fresh connection and returns it encrypted both ways.
pub async fn handshake<S>(key: [u8; 32], mut socket: S) -> Result<PrivateStream<S>, PrivateError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !sodium_ready() {
        return Err(PrivateError::Cipher);
    }
    let mut local = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut local);
    socket.write_all(&local).await?;
    socket.flush().await?;
    let mut remote = [0u8; NONCE_LEN];
    socket.read_exact(&mut remote).await?;
    Ok(PrivateStream {
        inner: socket,
        read: Keystream::new(&key, &remote),
        write: Keystream::new(&key, &local),
        // Grows with the largest write, up to one chunk: idle connections keep it small.
        pending: Vec::new(),
        sent: 0,
    })
}

/// A connection after the handshake: reads are decrypted, writes encrypted.
pub struct PrivateStream<S> {
    inner: S,
    read: Keystream,
    write: Keystream,
    /// Encrypted bytes taken from the caller but not yet written; at most [`WRITE_CHUNK`].
    pending: Vec<u8>,
    /// How much of `pending` is written.
    sent: usize,
}

impl<S: AsyncWrite + Unpin> PrivateStream<S> {
    /// Writes what is pending; ready once nothing is.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrivateStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.read.apply(&mut buf[..n]);
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrivateStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What was taken earlier goes out first, so the buffer never grows past one chunk.
        ready!(this.poll_drain(cx))?;
        let n = buf.len().min(WRITE_CHUNK);
        this.pending.extend_from_slice(&buf[..n]);
        this.write.apply(&mut this.pending[..n]);
        // Taken either way: if the socket is busy, the next write or flush sends it.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt, future};
    use libp2p::{
        Transport,
        core::Endpoint,
        core::transport::{DialOpts, ListenerId, MemoryTransport, PortUse, TransportEvent},
        multiaddr::Protocol,
        pnet::{PnetConfig, PreSharedKey},
    };
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    /// A connected pair of in-memory sockets.
    async fn pair() -> (
        libp2p::core::transport::memory::Channel<Vec<u8>>,
        libp2p::core::transport::memory::Channel<Vec<u8>>,
    ) {
        let port: u64 = rand::thread_rng().gen_range(1..u64::MAX);
        let addr: libp2p::Multiaddr = Protocol::Memory(port).into();
        let mut listener = MemoryTransport::default();
        listener
            .listen_on(ListenerId::next(), addr.clone())
            .unwrap();
        let dial = MemoryTransport::default()
            .dial(
                addr,
                DialOpts {
                    role: Endpoint::Dialer,
                    port_use: PortUse::New,
                },
            )
            .unwrap();
        let accept = async {
            loop {
                if let TransportEvent::Incoming { upgrade, .. } =
                    future::poll_fn(|cx| Pin::new(&mut listener).poll(cx)).await
                {
                    return upgrade.await.unwrap();
                }
            }
        };
        let (a, b) = future::join(dial, accept).await;
        (a.unwrap(), b)
    }

    /// Random messages of awkward sizes (mid-block positions, empty, several chunks).
    fn messages(seed: u64) -> Vec<Vec<u8>> {
        let mut rng = StdRng::seed_from_u64(seed);
        [0usize, 1, 7, 63, 64, 65, 1000, 4096, 100_003, 300_000]
            .iter()
            .map(|&n| (0..n).map(|_| rng.r#gen()).collect())
            .collect()
    }

    async fn exchange<A, B>(a: &mut A, b: &mut B, seed: u64)
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        for message in messages(seed) {
            let send = async {
                a.write_all(&message).await.unwrap();
                a.flush().await.unwrap();
            };
            let mut got = vec![0u8; message.len()];
            let receive = b.read_exact(&mut got);
            let ((), r) = future::join(send, receive).await;
            r.unwrap();
            assert!(got == message, "{} bytes arrived changed", message.len());
        }
    }

    #[tokio::test]
    async fn speaks_the_same_protocol_as_libp2p_pnet() {
        let key = [7u8; 32];
        let (ours, theirs) = pair().await;
        let (ours, theirs) = future::join(
            handshake(key, ours),
            PnetConfig::new(PreSharedKey::new(key)).handshake(theirs),
        )
        .await;
        let (mut ours, mut theirs) = (ours.unwrap(), theirs.unwrap());
        exchange(&mut ours, &mut theirs, 1).await;
        exchange(&mut theirs, &mut ours, 2).await;
    }

    #[tokio::test]
    async fn two_ends_of_this_layer_understand_each_other() {
        let key = [9u8; 32];
        let (a, b) = pair().await;
        let (a, b) = future::join(handshake(key, a), handshake(key, b)).await;
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        exchange(&mut a, &mut b, 3).await;
        exchange(&mut b, &mut a, 4).await;
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_during_the_handshake_is_an_error() {
        // The socket as this side sees it: room for the nonce it sends, then what the peer
        // sent before hanging up (end of stream after that).
        for sent in 0..NONCE_LEN {
            let mut wire = vec![0u8; NONCE_LEN];
            wire.extend(std::iter::repeat_n(0x5a, sent));
            let socket = futures::io::Cursor::new(wire);
            match handshake([3u8; 32], socket).await {
                Err(PrivateError::Handshake(e)) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{sent} bytes: {e}")
                }
                Err(e) => panic!("{sent} bytes: {e}"),
                Ok(_) => panic!("{sent} bytes of a nonce passed as a handshake"),
            }
        }
        // A whole nonce is a handshake; what follows is read through the keystream.
        let mut wire = vec![0u8; NONCE_LEN];
        wire.extend([0x11; NONCE_LEN]);
        wire.extend(b"payload");
        let mut stream = handshake([3u8; 32], futures::io::Cursor::new(wire))
            .await
            .unwrap();
        let mut got = [0u8; 7];
        stream.read_exact(&mut got).await.unwrap();
        let mut expected = *b"payload";
        Keystream::new(&[3u8; 32], &[0x11; NONCE_LEN]).apply(&mut expected);
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_peer_with_another_key_reads_garbage() {
        let (a, b) = pair().await;
        let (a, b) = future::join(handshake([1u8; 32], a), handshake([2u8; 32], b)).await;
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        let message = b"/multistream/1.0.0\n".to_vec();
        a.write_all(&message).await.unwrap();
        a.flush().await.unwrap();
        let mut got = vec![0u8; message.len()];
        b.read_exact(&mut got).await.unwrap();
        assert_ne!(got, message);
    }

    #[test]
    fn the_keystream_continues_across_calls_of_any_size() {
        assert!(sodium_ready());
        let (key, nonce) = ([3u8; 32], [5u8; NONCE_LEN]);
        let mut whole = vec![0u8; 1000];
        Keystream::new(&key, &nonce).apply(&mut whole);
        let mut pieces = vec![0u8; 1000];
        let mut stream = Keystream::new(&key, &nonce);
        let mut at = 0;
        for size in [1, 62, 1, 64, 129, 3, 0, 740] {
            stream.apply(&mut pieces[at..at + size]);
            at += size;
        }
        assert_eq!(at, 1000);
        assert_eq!(whole, pieces);
    }
}
