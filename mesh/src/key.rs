//! The mesh key and the join token.
//!
//! A *mesh key* is the 32-byte pre-shared key of a libp2p private network: a node without it
//! cannot complete a TCP connection to the mesh. It is stored in the state directory in the
//! common `swarm.key` format (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits).
//!
//! A *join token* is what an operator copies to a new machine: the mesh key (if the mesh has one)
//! and the addresses of running nodes to bootstrap from, as one line of text
//! (`dm1-` + base64url of CBOR + a 4-byte blake3 checksum, so a damaged copy is detected).

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use libp2p::{Multiaddr, pnet::PreSharedKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};

const KEY_FILE_HEADER: &str = "/key/swarm/psk/1.0.0/";
const TOKEN_PREFIX: &str = "dm1-";
const CHECKSUM_LEN: usize = 4;
/// A token is one line an operator copies; anything longer than this is not one of ours.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a mesh key or token could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("mesh key file: {0}")]
    KeyFile(String),
    #[error("join token: {0}")]
    Token(String),
}

/// The private-network key every member of one mesh shares.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshKey(#[serde(with = "serde_bytes")] [u8; 32]);

impl MeshKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The key as libp2p's pnet layer wants it.
    pub fn psk(&self) -> PreSharedKey {
        PreSharedKey::new(self.0)
    }

    /// The key itself, for the private-network layer.
    pub(crate) fn bytes(&self) -> [u8; 32] {
        self.0
    }

    /// A short, safe-to-print identifier of the key (not the key).
    pub fn fingerprint(&self) -> String {
        let hash = blake3::hash(&self.0);
        hash.to_hex()[..16].to_string()
    }

    /// The `swarm.key` text stored in the state directory.
    pub fn to_key_file(&self) -> String {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        format!("{KEY_FILE_HEADER}\n/base16/\n{hex}\n")
    }

    /// Parses the `swarm.key` text.
    pub fn from_key_file(text: &str) -> Result<Self, KeyError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let bad = |msg: &str| KeyError::KeyFile(msg.to_string());
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(bad(&format!("first line must be {KEY_FILE_HEADER}")));
        }
        if lines.next() != Some("/base16/") {
            return Err(bad("second line must be /base16/"));
        }
        let hex = lines.next().ok_or_else(|| bad("the key line is missing"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the key must be 64 hexadecimal digits"));
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            // Checked above: 64 ASCII hex digits.
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| bad("the key must be 64 hexadecimal digits"))?;
        }
        if lines.next().is_some() {
            return Err(bad("unexpected text after the key"));
        }
        Ok(Self(bytes))
    }
}

impl fmt::Debug for MeshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeshKey({})", self.fingerprint())
    }
}

/// What a new machine needs to join a mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// `None` for an open mesh (no private-network key).
    pub mesh_key: Option<MeshKey>,
    /// Addresses of running members, each ending in `/p2p/<peer id>`.
    pub peers: Vec<Multiaddr>,
}

impl JoinToken {
    /// The one-line text form.
    pub fn encode(&self) -> String {
        let mut body = Vec::new();
        // Serialising plain owned data into a Vec cannot fail.
        ciborium::into_writer(self, &mut body).expect("CBOR encoding into memory");
        let sum = blake3::hash(&body);
        body.extend_from_slice(&sum.as_bytes()[..CHECKSUM_LEN]);
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(body))
    }

    /// Parses the text form; every failure says what is wrong with the token.
    pub fn decode(text: &str) -> Result<Self, KeyError> {
        let bad = |msg: &str| KeyError::Token(msg.to_string());
        let text = text.trim();
        if text.len() > MAX_TOKEN_LEN {
            return Err(bad("too long to be a join token"));
        }
        let rest = text.strip_prefix(TOKEN_PREFIX).ok_or_else(|| {
            bad(&format!(
                "not a directord-mesh join token (it should start with '{TOKEN_PREFIX}')"
            ))
        })?;
        let raw = URL_SAFE_NO_PAD
            .decode(rest)
            .map_err(|_| bad("damaged: it is not valid base64url; copy it again"))?;
        if raw.len() <= CHECKSUM_LEN {
            return Err(bad("damaged: too short; copy it again"));
        }
        let (body, sum) = raw.split_at(raw.len() - CHECKSUM_LEN);
        if blake3::hash(body).as_bytes()[..CHECKSUM_LEN] != *sum {
            return Err(bad("damaged: checksum mismatch; copy it again"));
        }
        let token: JoinToken =
            ciborium::from_reader(body).map_err(|e| bad(&format!("unreadable contents ({e})")))?;
        if token.peers.is_empty() {
            return Err(bad("it names no node to join through"));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> JoinToken {
        JoinToken {
            mesh_key: Some(MeshKey::generate()),
            peers: vec![
                "/ip4/127.0.0.1/tcp/7411/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                    .parse()
                    .unwrap(),
            ],
        }
    }

    #[test]
    fn token_round_trips() {
        let t = token();
        let text = t.encode();
        assert!(text.starts_with("dm1-"));
        assert_eq!(JoinToken::decode(&text).unwrap(), t);
        assert_eq!(JoinToken::decode(&format!("  {text}\n")).unwrap(), t);
        let open = JoinToken {
            mesh_key: None,
            ..t
        };
        assert_eq!(JoinToken::decode(&open.encode()).unwrap(), open);
    }

    #[test]
    fn damaged_tokens_say_why() {
        let text = token().encode();
        let err = |s: &str| JoinToken::decode(s).unwrap_err().to_string();
        assert!(err("hello").contains("should start with 'dm1-'"));
        assert!(err("dm1-***").contains("not valid base64url"));
        assert!(err("dm1-AA").contains("too short"));
        // Flip one character in the middle.
        let mut chars: Vec<char> = text.chars().collect();
        let mid = chars.len() / 2;
        chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
        let flipped: String = chars.into_iter().collect();
        assert!(err(&flipped).contains("damaged"), "{}", err(&flipped));
        // Truncated.
        assert!(err(&text[..text.len() - 3]).contains("damaged"));
        assert!(err(&"dm1-".repeat(10_000)).contains("too long"));
    }

    #[test]
    fn token_without_peers_is_refused() {
        let t = JoinToken {
            mesh_key: None,
            peers: vec![],
        };
        assert!(
            JoinToken::decode(&t.encode())
                .unwrap_err()
                .to_string()
                .contains("names no node")
        );
    }

    #[test]
    fn key_file_round_trips_and_rejects_bad_files() {
        let k = MeshKey::generate();
        assert_eq!(MeshKey::from_key_file(&k.to_key_file()).unwrap(), k);
        // Our format is the one libp2p (and go-ipfs) read.
        let psk: PreSharedKey = k.to_key_file().parse().unwrap();
        assert_eq!(
            psk.fingerprint().to_string(),
            k.psk().fingerprint().to_string()
        );
        for bad in [
            "",
            "/key/swarm/psk/1.0.0/\n/base64/\nabcd",
            "/key/swarm/psk/1.0.0/\n/base16/\nxyz",
            "/key/swarm/psk/1.0.0/\n/base16/",
        ] {
            assert!(MeshKey::from_key_file(bad).is_err(), "{bad:?}");
        }
    }
}
