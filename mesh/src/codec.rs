//! The request-response codecs: one length-prefixed, versioned CBOR frame per request and response.
//!
//! The frame is a big-endian `u32` length followed by the envelope from [`crate::wire`]. The length
//! is checked against the limit of its direction before the body is read, so a peer cannot
//! make us allocate more than the limit (nor more than about twice what it sent), and an
//! oversized frame fails with an error that says so (libp2p's built-in cbor codec reports an
//! unexplained end-of-file instead).
//!
//! Blob responses ([`BlobCodec`]) are a frame holding a [`BlobHead`], then a chunk's bytes as they
//! are: a megabyte read through the CBOR decoder would be copied three or four times more.

use std::{io, marker::PhantomData};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};
use serde::{Serialize, de::DeserializeOwned};

use crate::wire::{self, BlobHead, BlobRequest, BlobResponse, MAX_BLOB_HEAD, MAX_CHUNK_BYTES};

/// Reads and writes one frame.
pub async fn read_frame<T, R>(io: &mut R, limit: usize) -> io::Result<T>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            wire::WireError::TooLarge { size: len, limit },
        ));
    }
    // Grown as the bytes come (from 64 KiB): a frame that announces its limit and sends
    // little holds little, however many streams a peer opens.
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    (&mut *io).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the frame ended after {} of its {len} bytes", buf.len()),
        ));
    }
    wire::decode(&buf, limit).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one frame; fails before writing anything if the encoded body is over `limit`.
pub async fn write_frame<T, W>(io: &mut W, body: &T, limit: usize) -> io::Result<()>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let bytes = encode_frame(body, limit)?;
    write_encoded(io, &bytes).await
}

fn encode_frame<T: Serialize>(body: &T, limit: usize) -> io::Result<Vec<u8>> {
    wire::encode(body, limit).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes an already encoded body with its length prefix (encoding happens before the first
/// `await`, so the message itself need not be `Sync`).
async fn write_encoded<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8]) -> io::Result<()> {
    // `encode` bounded the length by `limit`, which is far below u32::MAX.
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame over 4 GiB"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

/// A request-response codec for one protocol, with a size limit per direction.
pub struct CborCodec<Req, Resp> {
    request_limit: usize,
    response_limit: usize,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> CborCodec<Req, Resp> {
    pub fn new(request_limit: usize, response_limit: usize) -> Self {
        Self {
            request_limit,
            response_limit,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for CborCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::new(self.request_limit, self.response_limit)
    }
}

impl<Req, Resp> request_response::Codec for CborCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send,
    Resp: Serialize + DeserializeOwned + Send,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.request_limit).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.response_limit).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = encode_frame(&req, self.request_limit)?;
        write_encoded(io, &bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = encode_frame(&resp, self.response_limit)?;
        write_encoded(io, &bytes).await
    }
}

/// The codec of `/directord/blob/1`: requests are CBOR frames; a response is a frame with its
/// [`BlobHead`], followed, for a chunk, by the chunk's bytes.
#[derive(Clone, Copy, Default)]
pub struct BlobCodec;

/// Reads a blob response: the head, then at most [`MAX_CHUNK_BYTES`] of chunk.
pub async fn read_blob_response<R: AsyncRead + Unpin>(io: &mut R) -> io::Result<BlobResponse> {
    match read_frame::<BlobHead, _>(io, MAX_BLOB_HEAD).await? {
        BlobHead::Chunk { len } => {
            let len = usize::try_from(len)
                .ok()
                .filter(|&len| len <= MAX_CHUNK_BYTES)
                .ok_or_else(|| chunk_too_large(len))?;
            let mut data = vec![0u8; len];
            io.read_exact(&mut data).await?;
            Ok(BlobResponse::Chunk(data))
        }
        BlobHead::NotYet => Ok(BlobResponse::NotYet),
        BlobHead::Unknown => Ok(BlobResponse::Unknown),
        BlobHead::Unavailable => Ok(BlobResponse::Unavailable),
    }
}

fn chunk_too_large(len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("blob chunk of {len} bytes is over the {MAX_CHUNK_BYTES}-byte limit"),
    )
}

/// Writes a blob response; a chunk over [`MAX_CHUNK_BYTES`] is refused before anything is written.
pub async fn write_blob_response<W: AsyncWrite + Unpin>(
    io: &mut W,
    response: &BlobResponse,
) -> io::Result<()> {
    let (head, data): (BlobHead, &[u8]) = match response {
        BlobResponse::Chunk(data) if data.len() > MAX_CHUNK_BYTES => {
            return Err(chunk_too_large(data.len() as u64));
        }
        BlobResponse::Chunk(data) => (
            BlobHead::Chunk {
                len: data.len() as u64,
            },
            data,
        ),
        BlobResponse::NotYet => (BlobHead::NotYet, &[]),
        BlobResponse::Unknown => (BlobHead::Unknown, &[]),
        BlobResponse::Unavailable => (BlobHead::Unavailable, &[]),
    };
    let head = encode_frame(&head, MAX_BLOB_HEAD)?;
    // Length and head in one write, so they leave in one frame of the stream below.
    let mut first = Vec::with_capacity(4 + head.len());
    first.extend_from_slice(&(head.len() as u32).to_be_bytes());
    first.extend_from_slice(&head);
    io.write_all(&first).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for BlobCodec {
    type Protocol = StreamProtocol;
    type Request = BlobRequest;
    type Response = BlobResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_BLOB_HEAD).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_blob_response(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: BlobRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = encode_frame(&req, MAX_BLOB_HEAD)?;
        write_encoded(io, &bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: BlobResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_blob_response(io, &resp).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;

    use super::*;
    use crate::wire::{CtlRequest, CtlResponse};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn frame_round_trip() {
        let mut buf = Vec::new();
        block_on(write_frame(&mut buf, &CtlResponse::Ack, 1024)).unwrap();
        let back: CtlResponse = block_on(read_frame(&mut Cursor::new(buf), 1024)).unwrap();
        assert_eq!(back, CtlResponse::Ack);
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        // Claims 4 GiB; must fail on the header, not try to allocate.
        let buf = vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = block_on(read_frame::<CtlRequest, _>(&mut Cursor::new(buf), 1024)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("over the 1024-byte limit"),
            "{err}"
        );
    }

    #[test]
    fn truncated_and_garbage_frames_are_errors() {
        let garbage = vec![0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0x00];
        assert!(block_on(read_frame::<CtlRequest, _>(&mut Cursor::new(garbage), 1024)).is_err());
        let truncated = vec![0, 0, 0, 50, 1, 2];
        assert!(
            block_on(read_frame::<CtlRequest, _>(
                &mut Cursor::new(truncated),
                1024
            ))
            .is_err()
        );
    }

    fn blob_round_trip(response: BlobResponse) -> BlobResponse {
        let mut buf = Vec::new();
        block_on(write_blob_response(&mut buf, &response)).unwrap();
        block_on(read_blob_response(&mut Cursor::new(buf))).unwrap()
    }

    #[test]
    fn blob_responses_round_trip() {
        let chunk: Vec<u8> = (0..MAX_CHUNK_BYTES).map(|i| (i * 7) as u8).collect();
        assert_eq!(
            blob_round_trip(BlobResponse::Chunk(chunk.clone())),
            BlobResponse::Chunk(chunk)
        );
        assert_eq!(
            blob_round_trip(BlobResponse::Chunk(vec![])),
            BlobResponse::Chunk(vec![])
        );
        assert_eq!(blob_round_trip(BlobResponse::NotYet), BlobResponse::NotYet);
        assert_eq!(
            blob_round_trip(BlobResponse::Unknown),
            BlobResponse::Unknown
        );
        assert_eq!(
            blob_round_trip(BlobResponse::Unavailable),
            BlobResponse::Unavailable
        );
    }

    /// The blob heads of a release of wire version 8 from before
    /// [`BlobResponse::Unavailable`].
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // Only decoded.
    enum HeadBeforeUnavailable {
        Chunk { len: u64 },
        NotYet,
        Unknown,
    }

    /// A release that does not know `Unavailable` fails to read it, clearly, as malformed
    /// (its request fails: it takes the holder for one out of reach), and reads every other
    /// head as before.
    #[test]
    fn an_answer_a_release_does_not_know_fails_its_request() {
        let written = |response: BlobResponse| {
            let mut buf = Vec::new();
            block_on(write_blob_response(&mut buf, &response)).unwrap();
            buf
        };
        let read_by_older = |buf: Vec<u8>| {
            block_on(read_frame::<HeadBeforeUnavailable, _>(
                &mut Cursor::new(buf),
                MAX_BLOB_HEAD,
            ))
        };
        let err = read_by_older(written(BlobResponse::Unavailable)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().starts_with("malformed message"), "{err}");
        assert!(err.to_string().contains("Unavailable"), "{err}");
        assert!(matches!(
            read_by_older(written(BlobResponse::Unknown)),
            Ok(HeadBeforeUnavailable::Unknown)
        ));
        assert!(matches!(
            read_by_older(written(BlobResponse::NotYet)),
            Ok(HeadBeforeUnavailable::NotYet)
        ));
        assert!(matches!(
            read_by_older(written(BlobResponse::Chunk(vec![1; 3]))),
            Ok(HeadBeforeUnavailable::Chunk { len: 3 })
        ));
    }

    #[test]
    fn bad_blob_responses_are_errors_that_say_why() {
        // A head that announces more than a chunk may hold: refused before allocating.
        let head = wire::encode(
            &BlobHead::Chunk {
                len: MAX_CHUNK_BYTES as u64 + 1,
            },
            MAX_BLOB_HEAD,
        )
        .unwrap();
        let mut buf = (head.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(&head);
        let err = block_on(read_blob_response(&mut Cursor::new(buf))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("over the 1048576-byte limit"),
            "{err}"
        );

        // A chunk cut short.
        let mut buf = Vec::new();
        block_on(write_blob_response(
            &mut buf,
            &BlobResponse::Chunk(vec![1; 100]),
        ))
        .unwrap();
        buf.truncate(buf.len() - 1);
        let err = block_on(read_blob_response(&mut Cursor::new(buf))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        // A head too large to be one.
        let buf = vec![0, 0, 0x10, 0, 1, 2, 3];
        let err = block_on(read_blob_response(&mut Cursor::new(buf))).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");

        // Another wire version.
        #[derive(Serialize)]
        struct Envelope {
            v: u16,
            body: BlobHead,
        }
        let mut old = Vec::new();
        let head = Envelope {
            v: 2,
            body: BlobHead::Chunk { len: 1 },
        };
        ciborium::into_writer(&head, &mut old).unwrap();
        let mut buf = (old.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(&old);
        buf.push(0);
        let err = block_on(read_blob_response(&mut Cursor::new(buf))).unwrap_err();
        assert!(
            err.to_string().contains("unsupported wire version 2"),
            "{err}"
        );

        // Nothing goes out for a chunk over the limit.
        let mut buf = Vec::new();
        let big = BlobResponse::Chunk(vec![0; MAX_CHUNK_BYTES + 1]);
        assert!(block_on(write_blob_response(&mut buf, &big)).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_body_is_not_written() {
        let mut buf = Vec::new();
        let big = CtlResponse::Rejected {
            reason: "x".repeat(4096),
        };
        assert!(block_on(write_frame(&mut buf, &big, 1024)).is_err());
        assert!(buf.is_empty());
    }
}
