//! A source file of ADD/COPY as content: its size, blake3 hash and the digests of its 1 MiB
//! pieces, which merge into that hash (so a piece is verified on its own, and a description
//! whose pieces do not add up to its hash is refused before anything is fetched).

use super::*;

/// Size of the pieces a file travels in; each is verified on its own. A power of two
/// multiple of blake3's 1 KiB chunk, so that every piece is a whole subtree of the file's
/// blake3 tree (see [`FileRef::chunks`]).
pub const CHUNK_SIZE: u64 = 1024 * 1024;

/// One source file of ADD/COPY, as the submitter read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The file's name, used when DEST is a directory.
    pub name: String,
    pub size: u64,
    /// blake3 of the whole content.
    pub hash: Fingerprint,
    /// One digest per [`CHUNK_SIZE`] piece, in order (none for an empty file): the blake3
    /// chaining value of the piece as a subtree of the whole file, or, for a file of one
    /// piece, the file's own hash. The list merges into `hash` (see [`FileRef::check`]), so
    /// pieces that each match their digest make up exactly the file `hash` names: a node
    /// that fetched them all needs no second pass over the file to know it is whole.
    pub chunks: Vec<Fingerprint>,
}

impl FileRef {
    /// Hashes the file at `path`: the digest of each piece, and the whole hash from them
    /// (each byte is hashed once). How a piece is hashed depends on whether it is the file's
    /// only one, so the size must be known first: a file whose size is not what its metadata
    /// says (`/proc/version` says 0) is read again with the size read, and one that changes
    /// size again while it is read is an error.
    pub fn read(path: &std::path::Path) -> std::io::Result<FileRef> {
        let mut size = std::fs::metadata(path)?.len();
        for _ in 0..2 {
            let (chunks, read) = FileRef::digests(path, size)?;
            if read != size {
                size = read;
                continue;
            }
            let hash = match chunks.as_slice() {
                [] => Fingerprint(*blake3::hash(b"").as_bytes()),
                [only] => *only,
                _ => Fingerprint(*tree_root(&chunks, size).as_bytes()),
            };
            return Ok(FileRef {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                size,
                hash,
                chunks,
            });
        }
        Err(std::io::Error::other(format!(
            "it changed size while it was read (to {size} bytes, then again); submit again"
        )))
    }

    /// The digests of the file at `path` taken as `size` bytes long, and how many bytes it had.
    fn digests(path: &std::path::Path, size: u64) -> std::io::Result<(Vec<Fingerprint>, u64)> {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let pieces = size.div_ceil(CHUNK_SIZE) as usize;
        let mut chunks = Vec::new();
        let mut read = 0u64;
        let mut buf = vec![0u8; CHUNK_SIZE as usize];
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = file.read(&mut buf[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            chunks.push(FileRef::digest_of_chunk(
                chunks.len(),
                pieces,
                &buf[..filled],
            ));
            read += filled as u64;
            if filled < buf.len() {
                break;
            }
        }
        Ok((chunks, read))
    }

    /// The digest piece `index` of a file of `pieces` pieces has in [`FileRef::chunks`].
    /// Data that cannot be a piece of a file of several (empty, or longer than a piece) gets
    /// its plain hash, which matches no digest of such a file: blake3's tree functions
    /// would panic on it, and it may come from a peer.
    pub fn digest_of_chunk(index: usize, pieces: usize, data: &[u8]) -> Fingerprint {
        use blake3::hazmat::HasherExt;
        if pieces <= 1 || data.is_empty() || data.len() as u64 > CHUNK_SIZE {
            return Fingerprint(*blake3::hash(data).as_bytes());
        }
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(index as u64 * CHUNK_SIZE);
        hasher.update(data);
        Fingerprint(hasher.finalize_non_root())
    }

    /// Checks that the chunk list fits the size and merges into the whole hash. A description
    /// from a peer is checked before anything is fetched by it: one that fails (forged, or
    /// from a release whose lists held plain hashes of the pieces) could otherwise have a node
    /// keep other content under this hash.
    pub fn check(&self) -> Result<(), String> {
        let pieces = self.size.div_ceil(CHUNK_SIZE);
        if self.chunks.len() as u64 != pieces {
            return Err(format!(
                "{} ({}): {} bytes take {pieces} chunks, but its description lists {}",
                self.name,
                self.hash,
                self.size,
                self.chunks.len()
            ));
        }
        let merged = match self.chunks.as_slice() {
            [] => Fingerprint(*blake3::hash(b"").as_bytes()),
            [only] => *only,
            _ => Fingerprint(*tree_root(&self.chunks, self.size).as_bytes()),
        };
        if merged != self.hash {
            return Err(format!(
                "{} ({}): its chunk list does not add up to its blake3 (it makes {merged}); \
                 the run was forged or comes from an older release (wire version 7 or before), \
                 submit it again",
                self.name, self.hash
            ));
        }
        Ok(())
    }
}

/// The root hash of a file of `size` bytes (more than one piece) from its pieces' chaining
/// values, merged the way blake3 builds its tree: each left subtree is the largest power of
/// two of 1 KiB chunks that leaves something on the right, which for files over one piece
/// always ends on a piece boundary.
fn tree_root(pieces: &[Fingerprint], size: u64) -> blake3::Hash {
    use blake3::hazmat::{Mode, left_subtree_len, merge_subtrees_root};
    let left = left_subtree_len(size);
    let split = (left / CHUNK_SIZE) as usize;
    merge_subtrees_root(
        &subtree(&pieces[..split], left),
        &subtree(&pieces[split..], size - left),
        Mode::Hash,
    )
}

/// The chaining value of the subtree `len` bytes long made of `pieces`.
fn subtree(pieces: &[Fingerprint], len: u64) -> blake3::hazmat::ChainingValue {
    use blake3::hazmat::{Mode, left_subtree_len, merge_subtrees_non_root};
    if pieces.len() <= 1 {
        return pieces.first().map_or([0; 32], |p| p.0);
    }
    let left = left_subtree_len(len);
    let split = (left / CHUNK_SIZE) as usize;
    merge_subtrees_non_root(
        &subtree(&pieces[..split], left),
        &subtree(&pieces[split..], len - left),
        Mode::Hash,
    )
}
