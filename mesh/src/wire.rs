//! Wire types: everything one node says to another, and the one way to encode and decode it.
//!
//! Every message is CBOR (ciborium) inside a versioned [`Envelope`]. Encoders and decoders take an
//! explicit size limit and check it before anything is allocated or parsed; decoders return a
//! [`WireError`] that says what is wrong and never panic on input from the network.
//!
//! | channel                        | type                          |
//! |--------------------------------|-------------------------------|
//! | gossipsub `directord/presence/1` | [`Presence`]                |
//! | gossipsub `directord/jobs/1`   | opaque bytes (job announces and QUERY sets, decoded by `coordination`) |
//! | request-response `/directord/ctl/1` | [`CtlRequest`] → [`CtlResponse`] (`CtlRequest::Job` carries job messages as opaque bytes) |
//! | request-response `/directord/blob/1` | [`BlobRequest`] → [`BlobHead`] and the chunk's bytes, or [`BlobResponse`] |

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU16, Ordering},
};

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The version every envelope carries. A node rejects envelopes of another version with a clear
/// error instead of misreading them. Version 2: runs name their targets by key. Version 3: a blob
/// chunk travels as raw bytes after a small head ([`BlobHead`]). Version 4: the jobs topic
/// carries runs and QUERY sets (an enum around the run). Version 5: live output lines carry
/// their offsets. Version 6: a QUERY set too large to send fails its targets
/// (`QueryFailed`), JOB_WAIT registrations name the waiter's run, runs say their age. Version
/// 7: presences are signed by their node ([`Presence::signature`]). Version 8: a file's chunk
/// list holds the chaining values of its pieces, which add up to the file's blake3
/// (`jobs::spec::FileRef::chunks`), where it held their plain hashes; later in version 8, a
/// blob answer may be [`BlobResponse::Unavailable`] (no new version: a release without it
/// reads it as a failed request, see there), and a QUERY set too large to gossip whole is
/// gossiped in parts (`coordination::Gossip::QuerySetPart`: a release without it logs the
/// parts as unreadable, and its targets get the set directly after the grace).
pub const WIRE_VERSION: u16 = 8;

/// The version this process speaks: [`WIRE_VERSION`], unless a test made it another release.
static SPOKEN: AtomicU16 = AtomicU16::new(WIRE_VERSION);

/// Makes this process speak wire version `v` from now on, as a release of that version would
/// (a test of a mesh of mixed releases; every node of the process speaks it).
#[doc(hidden)]
pub fn speak_version_for_tests(v: u16) {
    SPOKEN.store(v, Ordering::Relaxed);
}

/// The wire version this process speaks (see [`WIRE_VERSION`]).
pub fn spoken_version() -> u16 {
    SPOKEN.load(Ordering::Relaxed)
}

/// Largest gossip payload we publish or accept. Gossipsub's own `max_transmit_size` is set a little
/// above this so the signature and topic fit (see `behaviour.rs`).
///
/// A run names its targets by 8-byte key: 1 MiB lets one announce reach some 130 000 targets
/// (less with many parents). A larger run is not gossiped; the originator delivers it
/// to each target directly (see `docs/scaling.md`).
pub const MAX_GOSSIP_BYTES: usize = 1024 * 1024;

/// Largest control request or response (membership tables, results with their output).
pub const MAX_CTL_BYTES: usize = 8 * 1024 * 1024;

/// Largest job message the layer above sends in one control request or response
/// ([`CtlRequest::Job`], [`CtlResponse::Job`]): the request's envelope around it must fit in
/// [`MAX_CTL_BYTES`] too (a message that fits alone but not in its envelope would fail each
/// time it is sent).
pub const MAX_JOB_DATA: usize = MAX_CTL_BYTES - JOB_ENVELOPE_BYTES;

/// Room for a control request's envelope around a job message (some 25 bytes: version,
/// variant name, byte-string header), with a margin.
const JOB_ENVELOPE_BYTES: usize = 64;

/// Largest blob chunk asked for or served.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// Largest blob request, and largest head of a blob response (the chunk's bytes follow it).
pub const MAX_BLOB_HEAD: usize = 1024;

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message of {size} bytes is over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("empty message")]
    Empty,
    #[error(
        "unsupported wire version {found}; this node speaks version {}",
        spoken_version()
    )]
    Version { found: u16 },
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// What travels on the wire: the version, then the body.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<T> {
    v: u16,
    body: T,
}

/// Only the version of an envelope, to tell "another version" from "garbage" after a failed decode.
#[derive(Deserialize)]
struct VersionOnly {
    v: u16,
}

/// Encodes `body` in a versioned envelope; fails if the result is over `limit` bytes.
pub fn encode<T: Serialize>(body: &T, limit: usize) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    ciborium::into_writer(
        &Envelope {
            v: spoken_version(),
            body,
        },
        &mut out,
    )
    .map_err(|e| WireError::Malformed(e.to_string()))?;
    if out.len() > limit {
        return Err(WireError::TooLarge {
            size: out.len(),
            limit,
        });
    }
    Ok(out)
}

/// Decodes a versioned envelope of at most `limit` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, WireError> {
    if bytes.is_empty() {
        return Err(WireError::Empty);
    }
    if bytes.len() > limit {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let spoken = spoken_version();
    match ciborium::from_reader::<Envelope<T>, _>(bytes) {
        Ok(env) if env.v == spoken => Ok(env.body),
        Ok(env) => Err(WireError::Version { found: env.v }),
        Err(e) => match ciborium::from_reader::<VersionOnly, _>(bytes) {
            Ok(only) if only.v != spoken => Err(WireError::Version { found: only.v }),
            _ => Err(WireError::Malformed(e.to_string())),
        },
    }
}

/// Decodes the body of an envelope of any wire version, as `T` (best effort: for what another
/// release says of itself, such as its name). Fails on input over `limit`, and as
/// [`WireError::Malformed`] on anything else it cannot read (empty input included).
pub fn decode_any_version<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    ciborium::from_reader::<Envelope<T>, _>(bytes)
        .map(|env| env.body)
        .map_err(|e| WireError::Malformed(e.to_string()))
}

/// Whether a node is running or on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresenceStatus {
    Alive,
    Leaving,
}

/// Most addresses a presence lists. This and [`MAX_LABELS`] are part of the wire version: a
/// presence past either fails to decode, and with it a whole table sync holding such a row,
/// so a release that raises one speaks a new version.
pub const MAX_PRESENCE_ADDRESSES: usize = 32;
/// Most labels a node sends (`join --label`), and bytes of each key and value.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_BYTES: usize = 1024;
/// The heartbeat intervals a presence may say, in milliseconds: `join` allows 100 ms to 1 h,
/// large meshes (and the simulation's) stretch it; a day is beyond any of them, and keeps a
/// row no node sends from being taken for alive for longer.
pub const MIN_HEARTBEAT_MS: u64 = 100;
pub const MAX_HEARTBEAT_MS: u64 = 24 * 3_600_000;

/// Bytes of a presence's signature: ed25519's, the mesh's keys.
pub const SIGNATURE_BYTES: usize = 64;
/// Most bytes a presence takes encoded. Its fields are bounded one by one (at most 32
/// addresses of 512 characters, 64 labels of 1024-byte keys and values, a 64-byte
/// signature...); the largest presence a node sends within those bounds (listen addresses
/// being a host and a port) takes about 145 KiB, so none reaches this. It bounds what the
/// field bounds leave open (an address of many short parts takes more bytes encoded than
/// written) and whatever field a later release adds. A full-table sync (one [`MAX_CTL_BYTES`]
/// message) holds at least 51 rows of this size; a typical presence takes 300 to 500 bytes.
pub const MAX_PRESENCE_BYTES: usize = 160 * 1024;

/// 1 to `max` bytes of ASCII letters, digits, `-`, `_`, `.` or `+`: a node's name (which
/// `join` allows without the `+`) or a release.
pub fn plausible_text(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
}

/// Reads a presence's addresses, refusing a list longer than a node sends as soon as it
/// runs past [`MAX_PRESENCE_ADDRESSES`]: read whole, a list of empty addresses would take
/// some 32 times its bytes in memory before [`Presence::plausible`] could refuse it.
fn at_most_addresses<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Multiaddr>, D::Error> {
    d.deserialize_seq(AtMost::<Vec<Multiaddr>>::new(
        MAX_PRESENCE_ADDRESSES,
        "addresses",
    ))
}

/// Reads a presence's labels, refusing more than [`MAX_LABELS`] as they are read (see
/// [`at_most_addresses`]).
fn at_most_labels<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    d.deserialize_map(AtMost::<BTreeMap<String, String>>::new(
        MAX_LABELS, "labels",
    ))
}

/// A serde visitor of a list or map of at most `max` elements.
struct AtMost<T> {
    max: usize,
    what: &'static str,
    value: std::marker::PhantomData<T>,
}

impl<T> AtMost<T> {
    fn new(max: usize, what: &'static str) -> Self {
        Self {
            max,
            what,
            value: std::marker::PhantomData,
        }
    }
}

impl<'de> serde::de::Visitor<'de> for AtMost<Vec<Multiaddr>> {
    type Value = Vec<Multiaddr>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "at most {} {}", self.max, self.what)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(element) = seq.next_element()? {
            if out.len() == self.max {
                return Err(serde::de::Error::invalid_length(self.max + 1, &self));
            }
            out.push(element);
        }
        Ok(out)
    }
}

impl<'de> serde::de::Visitor<'de> for AtMost<BTreeMap<String, String>> {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "at most {} {}", self.max, self.what)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((key, value)) = map.next_entry()? {
            if out.len() == self.max {
                return Err(serde::de::Error::invalid_length(self.max + 1, &self));
            }
            out.insert(key, value);
        }
        Ok(out)
    }
}

/// A node's heartbeat, gossiped on `directord/presence/1` every heartbeat interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub peer_id: PeerId,
    pub name: String,
    /// `/etc/machine-id` (or a stable substitute): tells two daemons on one machine apart from one
    /// machine seen twice.
    pub machine_id: String,
    pub version: String,
    /// The number of this start of the daemon: the wall clock in milliseconds when it started,
    /// kept above every earlier start of the node (see `node::state::StateDir::next_incarnation`).
    /// A restart has a higher incarnation, so its presence replaces the old one whatever the
    /// sequence numbers say.
    pub incarnation: u64,
    /// Counts heartbeats within one incarnation.
    pub seq: u64,
    pub status: PresenceStatus,
    pub host_uptime_secs: u64,
    pub agent_uptime_secs: u64,
    /// At most [`MAX_PRESENCE_ADDRESSES`]; more are refused as they are read.
    #[serde(deserialize_with = "at_most_addresses")]
    pub addresses: Vec<Multiaddr>,
    /// At most [`MAX_LABELS`]; more are refused as they are read.
    #[serde(deserialize_with = "at_most_labels")]
    pub labels: BTreeMap<String, String>,
    /// One-minute load average of the host.
    pub load: f32,
    /// How often this node sends presence; its expiry is three times this.
    pub heartbeat_interval_ms: u64,
    /// The node's ed25519 signature of the rest (see [`Presence::sign`]): a row passed on in
    /// a table sync speaks for its node only if the node signed it.
    #[serde(default, with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl Presence {
    /// An alive presence of a new random peer named `name`, for tests: its signature has the
    /// size of one and is none.
    #[doc(hidden)]
    pub fn sample_for_tests(name: &str) -> Presence {
        Presence {
            peer_id: PeerId::random(),
            name: name.into(),
            machine_id: "m".into(),
            version: "0.1.0".into(),
            incarnation: 1,
            seq: 0,
            status: PresenceStatus::Alive,
            host_uptime_secs: 1,
            agent_uptime_secs: 1,
            addresses: vec![],
            labels: Default::default(),
            load: 0.0,
            heartbeat_interval_ms: 1000,
            signature: vec![0; SIGNATURE_BYTES],
        }
    }

    /// What the signature covers: the presence without it, as CBOR.
    fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = Presence {
            signature: Vec::new(),
            ..self.clone()
        };
        let mut bytes = Vec::new();
        // Writing to a Vec cannot fail, and every field serialises.
        let _ = ciborium::into_writer(&unsigned, &mut bytes);
        bytes
    }

    /// Signs it with the node's own key (whose public half its peer id is).
    pub fn sign(&mut self, keypair: &libp2p::identity::Keypair) {
        self.signature.clear();
        // Only RSA keys in some builds fail to sign; the mesh uses ed25519.
        self.signature = keypair.sign(&self.signed_bytes()).unwrap_or_default();
    }

    /// Whether the node it names signed it (its peer id carries its public key).
    pub fn authentic(&self) -> bool {
        let bytes = self.peer_id.to_bytes();
        // An identity multihash: code 0, length, then the public key.
        let key = match bytes.as_slice() {
            [0, len, key @ ..] if usize::from(*len) == key.len() => key,
            _ => return false,
        };
        libp2p::identity::PublicKey::try_decode_protobuf(key)
            .is_ok_and(|public| public.verify(&self.signed_bytes(), &self.signature))
    }

    /// Whether its name and release are what a node sends: the name is what operators type as
    /// `--target` and both are shown as they are, so a presence with anything else (control
    /// characters, a megabyte of name) is no node's and is dropped.
    pub fn plausible(&self) -> bool {
        self.implausible().is_none()
    }

    /// What in it no node sends, if anything, in words: peers drop such a presence, so a node
    /// whose own presence has one is seen by nobody (see [`Presence::plausible`]).
    pub fn implausible(&self) -> Option<String> {
        let printable = |s: &str, max: usize| s.len() <= max && !s.chars().any(char::is_control);
        if !plausible_text(&self.name, 253) {
            Some("a name other than 1 to 253 letters, digits, '-', '_' or '.'".into())
        } else if !plausible_text(&self.version, 64) {
            Some("a release other than 1 to 64 letters, digits, '-', '_', '.' or '+'".into())
        } else if !printable(&self.machine_id, 128) {
            Some("a machine id over 128 bytes or with control characters".into())
        } else if self.addresses.len() > MAX_PRESENCE_ADDRESSES {
            Some(format!("more than {MAX_PRESENCE_ADDRESSES} addresses"))
        } else if !self
            .addresses
            .iter()
            .all(|a| printable(&a.to_string(), 512))
        {
            Some("an address over 512 bytes or with control characters".into())
        } else if self.labels.len() > MAX_LABELS {
            Some(format!("more than {MAX_LABELS} labels"))
        } else if !self
            .labels
            .iter()
            .all(|(k, v)| printable(k, MAX_LABEL_BYTES) && printable(v, MAX_LABEL_BYTES))
        {
            Some(format!(
                "a label key or value over {MAX_LABEL_BYTES} bytes or with control characters"
            ))
        } else if !(MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS).contains(&self.heartbeat_interval_ms) {
            Some(format!(
                "a heartbeat interval outside {MIN_HEARTBEAT_MS} to {MAX_HEARTBEAT_MS} ms"
            ))
        } else if self.signature.len() != SIGNATURE_BYTES {
            Some(format!(
                "a signature of {} bytes, not {SIGNATURE_BYTES} (an ed25519 key's)",
                self.signature.len()
            ))
        } else if encoded_len(self) > MAX_PRESENCE_BYTES {
            Some(format!("over {MAX_PRESENCE_BYTES} bytes encoded"))
        } else {
            None
        }
    }

    /// Orders two presences of the same peer: higher incarnation wins, then higher sequence.
    pub fn version_key(&self) -> (u64, u64) {
        (self.incarnation, self.seq)
    }
}

/// How many bytes `body` takes as CBOR, counted without writing them anywhere.
pub(crate) fn encoded_len<T: Serialize>(body: &T) -> usize {
    /// Counts what is written to it.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Counting cannot fail, and every field serialises.
    let _ = ciborium::into_writer(body, &mut counter);
    counter.0
}

/// One row of a membership table as another node saw it, for push-pull synchronisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub presence: Presence,
    /// How long ago the sender last heard from this member.
    pub age_ms: u64,
}

/// Which news a node holds about one member: anti-entropy compares these instead of rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowVersion {
    pub peer_id: PeerId,
    pub incarnation: u64,
    pub seq: u64,
}

/// Requests on `/directord/ctl/1`. Every request is idempotent: a resend after a timeout is safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CtlRequest {
    /// Sent when a connection opens: "here is my table, send me yours".
    SyncMembers { members: Vec<MemberRecord> },
    /// Periodic anti-entropy: "this is what I know of whom". Answered with
    /// [`CtlResponse::Delta`].
    SyncVersions { versions: Vec<RowVersion> },
    /// The rows a [`CtlResponse::Delta`] asked for. Answered [`CtlResponse::Ack`].
    PushMembers { members: Vec<MemberRecord> },
    /// The sender is shutting down cleanly.
    Leave { presence: Box<Presence> },
    /// Job traffic: opaque to the mesh, encoded by the layer above.
    Job(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// Requests on `/directord/blob/1`: a piece of a content-addressed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    /// blake3 of the whole file.
    #[serde(with = "serde_bytes")]
    pub hash: [u8; 32],
    /// Which chunk (of the chunk size the file was announced with).
    pub index: u64,
}

/// Responses on `/directord/blob/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobResponse {
    Chunk(#[serde(with = "serde_bytes")] Vec<u8>),
    /// This node holds (part of) the file but not that chunk yet.
    NotYet,
    /// This node serves no such file.
    Unknown,
    /// This node holds the file but cannot serve it now (reading its copy failed: a failing
    /// disk, no file descriptors left). The asker turns to other holders and asks this one
    /// again later, as it does a holder out of reach, and never takes it for "not held".
    ///
    /// Releases of wire version 8 from before this answer do not know it: the head
    /// ([`BlobHead::Unavailable`]) fails to decode there as an unknown variant
    /// ([`WireError::Malformed`]), so their request fails, and they take a failed request
    /// for a holder out of reach: the same outcome, which is why the version stays 8.
    Unavailable,
}

/// How a [`BlobResponse`] travels: this head, in a versioned envelope, then for a chunk its
/// `len` bytes as they are. Reading them straight into their buffer spares the copies a CBOR
/// decoder makes of a large byte string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobHead {
    Chunk {
        len: u64,
    },
    NotYet,
    Unknown,
    /// [`BlobResponse::Unavailable`]; a request answered so fails on a release that does not
    /// know it (see there).
    Unavailable,
}

/// Responses on `/directord/ctl/1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CtlResponse {
    Members {
        members: Vec<MemberRecord>,
    },
    /// The answer to [`CtlRequest::SyncVersions`]: the rows the asker lacks or holds older
    /// news of, and the members the asker knows better (it pushes those rows back).
    Delta {
        members: Vec<MemberRecord>,
        wanted: Vec<PeerId>,
    },
    Ack,
    /// The request was understood and refused; `reason` says why.
    Rejected {
        reason: String,
    },
    /// The answer to a [`CtlRequest::Job`], opaque to the mesh.
    Job(#[serde(with = "serde_bytes")] Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_presence() -> Presence {
        Presence {
            peer_id: PeerId::random(),
            name: "node-1".into(),
            machine_id: "abc".into(),
            version: "0.1.0".into(),
            incarnation: 1_700_000_000_000,
            seq: 7,
            status: PresenceStatus::Alive,
            host_uptime_secs: 1000,
            agent_uptime_secs: 10,
            addresses: vec!["/ip4/127.0.0.1/tcp/7411".parse().unwrap()],
            labels: BTreeMap::from([("rack".into(), "a1".into())]),
            load: 0.25,
            heartbeat_interval_ms: 5000,
            signature: Vec::new(),
        }
    }

    #[test]
    fn presence_round_trips() {
        let p = sample_presence();
        let bytes = encode(&p, MAX_GOSSIP_BYTES).unwrap();
        let back: Presence = decode(&bytes, MAX_GOSSIP_BYTES).unwrap();
        assert_eq!(back, p);
    }

    /// A presence speaks for its node only as the node signed it: not unsigned, not changed
    /// after, not signed by another key (a member forging a row of another node).
    #[test]
    fn only_a_presence_its_node_signed_is_authentic() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mut p = sample_presence();
        p.peer_id = key.public().to_peer_id();
        assert!(!p.authentic(), "unsigned");
        p.sign(&key);
        assert!(p.authentic());
        let back: Presence =
            decode(&encode(&p, MAX_GOSSIP_BYTES).unwrap(), MAX_GOSSIP_BYTES).unwrap();
        assert!(back.authentic(), "after the wire");
        let mut left = p.clone();
        left.status = PresenceStatus::Leaving;
        assert!(!left.authentic(), "changed after signing");
        let mut forged = p.clone();
        forged.incarnation = u64::MAX;
        forged.sign(&libp2p::identity::Keypair::generate_ed25519());
        assert!(!forged.authentic(), "signed by another key");
    }

    /// A presence's signature is an ed25519 key's, 64 bytes: one of a megabyte (a member
    /// making every table sync too large to send) or none is no node's.
    #[test]
    fn a_presence_is_plausible_only_with_a_signature_of_an_ed25519_key() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let mut p = sample_presence();
        p.peer_id = key.public().to_peer_id();
        assert!(!p.plausible(), "unsigned");
        p.sign(&key);
        assert!(p.plausible());
        p.signature = vec![7; 1_000_000];
        assert!(!p.plausible(), "a megabyte of signature");
        assert!(p.implausible().unwrap().contains("1000000 bytes"));
    }

    /// The largest presence a node sends is under [`MAX_PRESENCE_BYTES`] (the bound refuses
    /// none), and one with addresses no listener has, within the bounds of each field but
    /// larger encoded, is refused.
    #[test]
    fn the_largest_presence_a_node_sends_is_within_the_bound() {
        let mut p = largest_presence();
        assert_eq!(p.implausible(), None);
        let size = encode(&p, MAX_CTL_BYTES).unwrap().len();
        assert!(
            (140 * 1024..MAX_PRESENCE_BYTES).contains(&size),
            "{size} bytes"
        );
        assert_eq!(encoded_len(&p), ciborium_len(&p));
        const { assert!(MAX_CTL_BYTES / MAX_PRESENCE_BYTES >= 51) };
        // 73 times `/ip6/::`: 511 characters, 1241 bytes encoded.
        let address: Multiaddr = "/ip6/::".repeat(73).parse().unwrap();
        assert_eq!(address.to_string().len(), 511);
        p.addresses = vec![address; MAX_PRESENCE_ADDRESSES];
        assert!(encoded_len(&p) > MAX_PRESENCE_BYTES);
        assert!(p.implausible().unwrap().contains("bytes encoded"));
    }

    /// A presence with every field as large as a node sends it.
    fn largest_presence() -> Presence {
        let text = |c: char, n: usize| c.to_string().repeat(n);
        let mut p = sample_presence();
        p.name = text('n', 253);
        p.version = text('1', 64);
        p.machine_id = text('m', 128);
        p.incarnation = u64::MAX;
        p.seq = u64::MAX;
        p.host_uptime_secs = u64::MAX;
        p.agent_uptime_secs = u64::MAX;
        p.heartbeat_interval_ms = MAX_HEARTBEAT_MS;
        p.addresses = (0..MAX_PRESENCE_ADDRESSES)
            .map(|i| {
                let host = format!("{i:02}{}", text('h', 512 - 15 - 2));
                format!("/dns/{host}/tcp/65535").parse().unwrap()
            })
            .collect();
        assert!(p.addresses.iter().all(|a| a.to_string().len() == 512));
        p.labels = (0..MAX_LABELS)
            .map(|i| {
                let key = format!("{i:02}{}", text('k', MAX_LABEL_BYTES - 2));
                (key, text('v', MAX_LABEL_BYTES))
            })
            .collect();
        p.signature = vec![0xff; SIGNATURE_BYTES];
        p
    }

    fn ciborium_len(p: &Presence) -> usize {
        let mut bytes = Vec::new();
        ciborium::into_writer(p, &mut bytes).unwrap();
        bytes.len()
    }

    #[test]
    fn ctl_messages_round_trip() {
        let reqs = vec![
            CtlRequest::SyncMembers {
                members: vec![MemberRecord {
                    presence: sample_presence(),
                    age_ms: 1200,
                }],
            },
            CtlRequest::Leave {
                presence: Box::new(sample_presence()),
            },
            CtlRequest::Job(vec![1, 2, 3]),
            CtlRequest::SyncVersions {
                versions: vec![RowVersion {
                    peer_id: PeerId::random(),
                    incarnation: 3,
                    seq: 9,
                }],
            },
            CtlRequest::PushMembers {
                members: vec![MemberRecord {
                    presence: sample_presence(),
                    age_ms: 5,
                }],
            },
        ];
        for req in reqs {
            let bytes = encode(&req, MAX_CTL_BYTES).unwrap();
            assert_eq!(decode::<CtlRequest>(&bytes, MAX_CTL_BYTES).unwrap(), req);
        }
        let resps = vec![
            CtlResponse::Rejected {
                reason: "no".into(),
            },
            CtlResponse::Delta {
                members: vec![MemberRecord {
                    presence: sample_presence(),
                    age_ms: 5,
                }],
                wanted: vec![PeerId::random()],
            },
        ];
        for resp in resps {
            let bytes = encode(&resp, MAX_CTL_BYTES).unwrap();
            assert_eq!(decode::<CtlResponse>(&bytes, MAX_CTL_BYTES).unwrap(), resp);
        }
    }

    /// A job message of the largest size taken fits in a control request and response.
    #[test]
    fn the_largest_job_message_fits_in_its_envelope() {
        let data = vec![7u8; MAX_JOB_DATA];
        assert!(encode(&CtlRequest::Job(data.clone()), MAX_CTL_BYTES).is_ok());
        assert!(encode(&CtlResponse::Job(data), MAX_CTL_BYTES).is_ok());
    }

    #[test]
    fn oversized_input_is_rejected_before_parsing() {
        let bytes = vec![0u8; 2048];
        assert_eq!(
            decode::<Presence>(&bytes, 1024),
            Err(WireError::TooLarge {
                size: 2048,
                limit: 1024
            })
        );
        let p = sample_presence();
        assert!(matches!(encode(&p, 10), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xff],
            vec![0xa2, 0x61, 0x76],
            b"hello world".to_vec(),
            // A byte string that claims to be 4 GiB long.
            vec![0x5a, 0xff, 0xff, 0xff, 0xff, 0x00],
            // An array that claims 2^32 elements.
            vec![0x9a, 0xff, 0xff, 0xff, 0xff],
            // Deep nesting.
            vec![0x81; 10_000],
        ];
        for input in inputs {
            assert!(decode::<Presence>(&input, MAX_GOSSIP_BYTES).is_err());
            assert!(decode::<CtlRequest>(&input, MAX_GOSSIP_BYTES).is_err());
        }
        // Every truncation of a valid message fails cleanly.
        let bytes = encode(&sample_presence(), MAX_GOSSIP_BYTES).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode::<Presence>(&bytes[..cut], MAX_GOSSIP_BYTES).is_err());
        }
    }

    #[test]
    fn another_version_is_named() {
        let mut out = Vec::new();
        ciborium::into_writer(
            &Envelope {
                v: 99,
                body: sample_presence(),
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            decode::<Presence>(&out, MAX_GOSSIP_BYTES),
            Err(WireError::Version { found: 99 })
        );
    }

    #[test]
    fn wrong_type_is_malformed() {
        let bytes = encode(&CtlResponse::Ack, MAX_CTL_BYTES).unwrap();
        assert!(matches!(
            decode::<Presence>(&bytes, MAX_CTL_BYTES),
            Err(WireError::Malformed(_))
        ));
    }
}
