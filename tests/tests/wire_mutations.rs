//! Everything a node decodes from the network, fed mutated bytes: valid messages of each type,
//! encoded, then bit flips, boundary bytes, CBOR heads that claim huge lengths, truncations,
//! duplicated, spliced and deleted ranges and appended garbage. Each result goes through the
//! decoder a node runs on it and then through the checks the node applies to what it decoded.
//!
//! What must hold for every input: no panic, decoding gives an error or a value that encodes
//! again (and reads back as itself), and the memory decoding takes is bounded by the input's
//! size, never by a length the input claims.
//!
//! The mutations come from a small xorshift generator seeded per message: a failure names the
//! seed, the case and the input in hex, and running the test again gives the same inputs.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{AsyncRead, executor::block_on, io::Cursor};
use libp2p::request_response::Codec;
use mesh::{
    BLOB_PROTOCOL, CTL_PROTOCOL, Keypair, Multiaddr, PeerId,
    codec::{BlobCodec, CborCodec, read_blob_response, read_frame},
    membership::Membership,
    wire::{
        self, BlobHead, BlobRequest, BlobResponse, CtlRequest, CtlResponse, MAX_BLOB_HEAD,
        MAX_CHUNK_BYTES, MAX_CTL_BYTES, MAX_GOSSIP_BYTES, MemberRecord, Presence, PresenceStatus,
        RowVersion, WireError,
    },
};
use serde::{Deserialize, Serialize};

mod mutation_support;

use mutation_support::*;

// ---------------------------------------------------------------------------------------------
// Valid messages, as nodes send them.

/// A key the same on every run (`n` tells keys apart).
fn key(n: u8) -> Keypair {
    Keypair::ed25519_from_bytes([n; 32]).expect("32 bytes are an ed25519 secret")
}

fn addr(text: &str) -> Multiaddr {
    text.parse().expect("a valid multiaddr")
}

/// A heartbeat of the node of key `n`, signed by it.
fn presence(n: u8) -> Presence {
    let key = key(n);
    let mut p = Presence {
        peer_id: key.public().to_peer_id(),
        name: format!("node-{n}"),
        machine_id: format!("{n:032x}"),
        version: "0.1.0+abc".into(),
        incarnation: 1_700_000_000_000 + u64::from(n),
        seq: 7 * u64::from(n),
        status: PresenceStatus::Alive,
        host_uptime_secs: 86_400,
        agent_uptime_secs: 120,
        addresses: vec![addr(&format!("/ip4/10.0.0.{n}/tcp/7411"))],
        labels: BTreeMap::from([("rack".into(), format!("r{n}"))]),
        load: 0.25,
        heartbeat_interval_ms: 5000,
        signature: Vec::new(),
    };
    p.sign(&key);
    p
}

/// Heartbeats of every shape a node sends: few and many addresses of many kinds, labels,
/// a goodbye, the edges of the numbers.
fn presences() -> Vec<Presence> {
    let mut many = presence(2);
    many.addresses = vec![
        addr("/ip4/192.0.2.1/tcp/7411"),
        addr("/ip6/2001:db8::1/tcp/7411"),
        addr("/ip6/fe80::1/tcp/7411"),
        addr("/dns4/node.example.com/tcp/7411"),
        addr("/dns6/node.example.com/tcp/443/tls/sni/node.example.com/ws"),
        addr("/dnsaddr/mesh.example.com"),
        addr("/ip4/192.0.2.1/udp/7411/quic-v1"),
        addr("/ip6zone/eth0/ip6/fe80::2/tcp/7411"),
        addr("/memory/1234"),
        addr("/onion3/vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd:1234"),
        addr("/unix/%2Frun%2Fdirectord.sock"),
        addr("/ip4/192.0.2.1/tcp/7411").with(libp2p::multiaddr::Protocol::P2p(
            key(9).public().to_peer_id(),
        )),
    ];
    many.labels = (0..8)
        .map(|i| (format!("label-{i}"), format!("wert-{i}-ü")))
        .collect();
    many.sign(&key(2));
    let mut leaving = presence(3);
    leaving.status = PresenceStatus::Leaving;
    leaving.seq = u64::MAX;
    leaving.incarnation = u64::MAX;
    leaving.load = f32::MAX;
    leaving.heartbeat_interval_ms = wire::MAX_HEARTBEAT_MS;
    leaving.labels.clear();
    leaving.sign(&key(3));
    let mut bare = presence(4);
    bare.addresses.clear();
    bare.load = 0.0;
    bare.heartbeat_interval_ms = wire::MIN_HEARTBEAT_MS;
    bare.sign(&key(4));
    vec![presence(1), many, leaving, bare]
}

fn records() -> Vec<MemberRecord> {
    presences()
        .into_iter()
        .zip([0, 1200, u64::MAX, 30_000])
        .map(|(presence, age_ms)| MemberRecord { presence, age_ms })
        .collect()
}

fn versions() -> Vec<RowVersion> {
    presences()
        .iter()
        .map(|p| RowVersion {
            peer_id: p.peer_id,
            incarnation: p.incarnation,
            seq: p.seq,
        })
        .collect()
}

fn ctl_requests() -> Vec<CtlRequest> {
    vec![
        CtlRequest::SyncMembers { members: records() },
        CtlRequest::SyncVersions {
            versions: versions(),
        },
        CtlRequest::PushMembers {
            members: records()[1..2].to_vec(),
        },
        CtlRequest::Leave {
            presence: Box::new(presences()[2].clone()),
        },
        // What the layer above sends is opaque here: its own test reads it.
        CtlRequest::Job((0..200u8).collect()),
        CtlRequest::Job(Vec::new()),
    ]
}

fn ctl_responses() -> Vec<CtlResponse> {
    vec![
        CtlResponse::Members { members: records() },
        CtlResponse::Delta {
            members: records()[..2].to_vec(),
            wanted: versions().iter().map(|v| v.peer_id).collect(),
        },
        CtlResponse::Ack,
        CtlResponse::Rejected {
            reason: "not a member of this mesh (no presence heard from it)".into(),
        },
        CtlResponse::Job(vec![0xa1, 0x61, 0x76, 0x08]),
    ]
}

fn blob_requests() -> Vec<BlobRequest> {
    vec![
        BlobRequest {
            hash: *blake3::hash(b"a file").as_bytes(),
            index: 0,
        },
        BlobRequest {
            hash: [0xff; 32],
            index: u64::MAX,
        },
        BlobRequest {
            hash: [0; 32],
            index: 4096,
        },
    ]
}

fn blob_heads() -> Vec<BlobHead> {
    vec![
        BlobHead::Chunk { len: 0 },
        BlobHead::Chunk { len: 100 },
        BlobHead::Chunk {
            len: MAX_CHUNK_BYTES as u64,
        },
        BlobHead::NotYet,
        BlobHead::Unknown,
        BlobHead::Unavailable,
    ]
}

fn encoded<T: Serialize>(values: &[T], limit: usize) -> Vec<Vec<u8>> {
    values
        .iter()
        .map(|v| wire::encode(v, limit).expect("a valid message encodes"))
        .collect()
}

/// `body` with its length in front, as the request-response codecs frame it.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------------------------
// What a node does with what it decoded.

/// A membership table of a node (key 100) that already holds a few members, at a fixed
/// instant (the table's decisions depend only on the times given to it).
fn table(now: Instant) -> Membership {
    let mut local = presence(100);
    local.name = "local".into();
    local.sign(&key(100));
    let mut t = Membership::new(local, now);
    for p in presences().into_iter().take(2) {
        t.observe(p, now);
    }
    t
}

/// The checks a presence gets, then the table it is offered to, heard from its node.
fn heard(t: &mut Membership, p: &Presence, now: Instant) {
    let _ = p.implausible();
    let _ = p.authentic();
    let _ = p.version_key();
    for a in &p.addresses {
        let _ = a.to_string();
        let _ = mesh::multiaddr_with_peer(a.clone(), p.peer_id);
    }
    t.observe(p.clone(), now);
    settle(t, now);
}

/// Rows passed on by a peer, as a node takes a table sync.
fn passed_on(t: &mut Membership, members: &[MemberRecord], now: Instant) {
    let mut rows = members.to_vec();
    t.keep_authentic(&mut rows, now);
    t.merge(rows, now);
    settle(t, now);
}

/// What a node reads from its table after a change: time passes, the table is shown.
fn settle(t: &mut Membership, now: Instant) {
    t.tick(now + Duration::from_secs(1));
    for view in t.view(now) {
        let _ = format!("{:?} {}", view.state, view.presence.name);
    }
    let _ = t.conflicted(now);
    let _ = t.records(now);
    let _ = t.versions();
    let _ = t.take_refused();
    let _ = t.take_twin();
}

/// What `status` keeps of a heartbeat of another wire version (`decode_any_version`).
#[derive(Debug, Deserialize)]
struct OtherPresence {
    name: String,
    version: String,
}

/// The mesh answers a control request from a peer as it does (see `network/swarm_events.rs`):
/// a table sync merged, versions compared, a goodbye taken from its node.
fn answer(t: &mut Membership, request: &CtlRequest, from: PeerId, now: Instant) {
    match request {
        CtlRequest::SyncMembers { members } | CtlRequest::PushMembers { members } => {
            passed_on(t, members, now);
            let _ = wire::encode(
                &CtlResponse::Members {
                    members: t.records(now),
                },
                MAX_CTL_BYTES,
            );
        }
        CtlRequest::SyncVersions { versions } => {
            let (members, wanted) = t.delta(versions, now);
            let _ = t.records_of(&wanted, now);
            let _ = wire::encode(&CtlResponse::Delta { members, wanted }, MAX_CTL_BYTES);
        }
        CtlRequest::Leave { presence }
            if presence.peer_id == from && presence.status == PresenceStatus::Leaving =>
        {
            heard(t, presence, now)
        }
        CtlRequest::Leave { .. } | CtlRequest::Job(_) => {}
    }
}

/// What the asker does with an answer.
fn answered(t: &mut Membership, response: &CtlResponse, now: Instant) {
    match response {
        CtlResponse::Members { members } => passed_on(t, members, now),
        CtlResponse::Delta { members, wanted } => {
            passed_on(t, members, now);
            let _ = t.records_of(wanted, now);
        }
        CtlResponse::Ack | CtlResponse::Rejected { .. } | CtlResponse::Job(_) => {}
    }
}

/// The mutations of each sample a test makes: enough to reach every kind of mutation at many
/// places, few enough that each test takes a few seconds in a debug build.
const PER_SAMPLE: usize = 3000;

// ---------------------------------------------------------------------------------------------
// The tests.

/// A heartbeat on `directord/presence/1`: decoded, checked, offered to the table; and as the
/// heartbeat of another release, read for its name and release only.
#[test]
fn mutated_presences_are_errors_or_values_a_node_can_take() {
    let now = Instant::now();
    let mut t = table(now);
    let signers = [presence(1).peer_id, presences()[1].peer_id];
    let samples = encoded(&presences(), MAX_GOSSIP_BYTES);
    let (cases, decoded) = run_cases("presence", 1, &samples, PER_SAMPLE, |input| {
        let other = wire::decode_any_version::<OtherPresence>(input, MAX_GOSSIP_BYTES);
        if let Ok(o) = other {
            let _ = wire::plausible_text(&o.name, 253) && wire::plausible_text(&o.version, 64);
        }
        match wire::decode::<Presence>(input, MAX_GOSSIP_BYTES) {
            Ok(p) => {
                encodes_again(&p);
                // Gossip is signed: a node takes a heartbeat only from the peer it names.
                if signers.contains(&p.peer_id) {
                    heard(&mut t, &p, now);
                } else {
                    let _ = p.implausible();
                    let _ = p.authentic();
                }
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    });
    assert!(cases > 4 * PER_SAMPLE && decoded > 0, "{cases} {decoded}");
}

/// Rows of a table sync one by one, and the anti-entropy versions.
#[test]
fn mutated_member_records_and_versions_are_errors_or_values_a_node_can_take() {
    let now = Instant::now();
    let mut t = table(now);
    let samples: Vec<Vec<u8>> = encoded(&records(), MAX_CTL_BYTES)
        .into_iter()
        .chain(encoded(&versions(), MAX_CTL_BYTES))
        .collect();
    run_cases("member record", 2, &samples, PER_SAMPLE / 2, |input| {
        let record = wire::decode::<MemberRecord>(input, MAX_CTL_BYTES);
        if let Ok(r) = &record {
            encodes_again(r);
            passed_on(&mut t, std::slice::from_ref(r), now);
        }
        let version = wire::decode::<RowVersion>(input, MAX_CTL_BYTES);
        if let Ok(v) = &version {
            encodes_again(v);
            let _ = t.delta(std::slice::from_ref(v), now);
        }
        record.is_ok() || version.is_ok()
    });
}

/// Requests on `/directord/ctl/1`, decoded and answered as the mesh answers them.
#[test]
fn mutated_ctl_requests_are_errors_or_values_a_node_can_take() {
    let now = Instant::now();
    let mut t = table(now);
    let from = presences()[2].peer_id;
    let samples = encoded(&ctl_requests(), MAX_CTL_BYTES);
    run_cases(
        "ctl request",
        3,
        &samples,
        PER_SAMPLE,
        |input| match wire::decode::<CtlRequest>(input, MAX_CTL_BYTES) {
            Ok(request) => {
                encodes_again(&request);
                answer(&mut t, &request, from, now);
                true
            }
            Err(_) => false,
        },
    );
}

/// Answers on `/directord/ctl/1`, decoded and taken as the asker takes them.
#[test]
fn mutated_ctl_responses_are_errors_or_values_a_node_can_take() {
    let now = Instant::now();
    let mut t = table(now);
    let samples = encoded(&ctl_responses(), MAX_CTL_BYTES);
    run_cases(
        "ctl response",
        4,
        &samples,
        PER_SAMPLE,
        |input| match wire::decode::<CtlResponse>(input, MAX_CTL_BYTES) {
            Ok(response) => {
                encodes_again(&response);
                answered(&mut t, &response, now);
                true
            }
            Err(_) => false,
        },
    );
}

/// Blob requests and the heads of blob answers.
#[test]
fn mutated_blob_requests_and_heads_are_errors_or_values() {
    let samples: Vec<Vec<u8>> = encoded(&blob_requests(), MAX_BLOB_HEAD)
        .into_iter()
        .chain(encoded(&blob_heads(), MAX_BLOB_HEAD))
        .collect();
    run_cases("blob request or head", 5, &samples, PER_SAMPLE, |input| {
        let request = wire::decode::<BlobRequest>(input, MAX_BLOB_HEAD);
        if let Ok(r) = &request {
            encodes_again(r);
            // A node serves chunk `index` from `index * CHUNK_SIZE` (saturating).
            let _ = r.index.saturating_mul(1024 * 1024);
        }
        let head = wire::decode::<BlobHead>(input, MAX_BLOB_HEAD);
        if let Ok(h) = &head {
            encodes_again(h);
        }
        request.is_ok() || head.is_ok()
    });
}

/// Whole frames of `/directord/ctl/1`, length prefix included, through the codec the swarm
/// runs (requests and answers alike).
#[test]
fn mutated_ctl_frames_are_errors_or_messages() {
    let samples: Vec<Vec<u8>> = encoded(&ctl_requests(), MAX_CTL_BYTES)
        .iter()
        .chain(&encoded(&ctl_responses(), MAX_CTL_BYTES))
        .map(|body| framed(body))
        .collect();
    let mut codec = CborCodec::<CtlRequest, CtlResponse>::new(MAX_CTL_BYTES, MAX_CTL_BYTES);
    // The buffer of a frame is allocated at the length its prefix claims, up to the limit.
    let allowed = MAX_CTL_BYTES;
    run_cases_within("ctl frame", 6, &samples, PER_SAMPLE / 2, allowed, |input| {
        let request = block_on(codec.read_request(&CTL_PROTOCOL, &mut Cursor::new(input)));
        if let Ok(r) = &request {
            encodes_again(r);
        }
        let response = block_on(codec.read_response(&CTL_PROTOCOL, &mut Cursor::new(input)));
        if let Ok(r) = &response {
            encodes_again(r);
        }
        request.is_ok() || response.is_ok()
    });
}

/// Whole blob requests and answers, the chunk's bytes after the head, through the blob codec.
#[test]
fn mutated_blob_frames_are_errors_or_messages() {
    let mut samples: Vec<Vec<u8>> = encoded(&blob_requests(), MAX_BLOB_HEAD)
        .iter()
        .map(|b| framed(b))
        .collect();
    for response in [
        BlobResponse::Chunk((0..300u32).map(|i| i as u8).collect()),
        BlobResponse::Chunk(Vec::new()),
        BlobResponse::NotYet,
        BlobResponse::Unknown,
        BlobResponse::Unavailable,
    ] {
        let mut out = Vec::new();
        block_on(mesh::codec::write_blob_response(&mut out, &response)).unwrap();
        samples.push(out);
    }
    let mut codec = BlobCodec;
    // The buffers of a head and of the chunk it announces, each up to its limit.
    let allowed = MAX_BLOB_HEAD + MAX_CHUNK_BYTES;
    run_cases_within(
        "blob frame",
        7,
        &samples,
        PER_SAMPLE / 2,
        allowed,
        |input| {
            let request = block_on(codec.read_request(&BLOB_PROTOCOL, &mut Cursor::new(input)));
            if let Ok(r) = &request {
                encodes_again(r);
            }
            let response = block_on(codec.read_response(&BLOB_PROTOCOL, &mut Cursor::new(input)));
            match &response {
                Ok(BlobResponse::Chunk(data)) => assert!(data.len() <= MAX_CHUNK_BYTES),
                Ok(_) => {}
                Err(e) => assert_ne!(e.kind(), io::ErrorKind::Other, "{e}"),
            }
            request.is_ok() || response.is_ok()
        },
    );
}

/// A stream that gives `head` and then zeros without end, counting what was read.
struct Endless {
    head: Vec<u8>,
    read: usize,
}

impl AsyncRead for Endless {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let at = self.read;
        let n = buf.len();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.head.get(at + i).copied().unwrap_or(0);
        }
        self.read += n;
        Poll::Ready(Ok(n))
    }
}

/// A frame whose length prefix is over the limit is refused on the prefix: nothing of the
/// body is read and nothing of its size is allocated, whatever the stream holds after it.
#[test]
fn a_frame_claiming_more_than_its_limit_is_refused_before_it_is_allocated() {
    let limits = [MAX_BLOB_HEAD, MAX_GOSSIP_BYTES, MAX_CTL_BYTES];
    for limit in limits {
        for claim in [limit as u64 + 1, 1 << 24, u64::from(u32::MAX)] {
            let claim = claim as u32;
            if claim as usize <= limit {
                continue;
            }
            let mut stream = Endless {
                head: claim.to_be_bytes().to_vec(),
                read: 0,
            };
            let (result, peak) =
                peak_during(|| block_on(read_frame::<CtlRequest, _>(&mut stream, limit)));
            let err = result.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{claim}: {err}");
            let inner = err.get_ref().and_then(|e| e.downcast_ref::<WireError>());
            assert_eq!(
                inner,
                Some(&WireError::TooLarge {
                    size: claim as usize,
                    limit
                }),
                "{claim}"
            );
            assert_eq!(stream.read, 4, "{claim}: read past the length");
            assert!(peak < 64 * 1024, "{claim}: {peak} bytes allocated");
        }
    }
    // Through the codecs the swarm runs, each with its own limit.
    let over = |limit: usize| ((limit + 1) as u32).to_be_bytes().to_vec();
    let mut ctl = CborCodec::<CtlRequest, CtlResponse>::new(MAX_CTL_BYTES, MAX_CTL_BYTES);
    let mut stream = Endless {
        head: over(MAX_CTL_BYTES),
        read: 0,
    };
    let (result, peak) = peak_during(|| block_on(ctl.read_request(&CTL_PROTOCOL, &mut stream)));
    assert!(result.is_err() && stream.read == 4 && peak < 64 * 1024);
    let mut stream = Endless {
        head: over(MAX_CTL_BYTES),
        read: 0,
    };
    let (result, peak) = peak_during(|| block_on(ctl.read_response(&CTL_PROTOCOL, &mut stream)));
    assert!(result.is_err() && stream.read == 4 && peak < 64 * 1024);
    let mut stream = Endless {
        head: over(MAX_BLOB_HEAD),
        read: 0,
    };
    let (result, peak) =
        peak_during(|| block_on(BlobCodec.read_request(&BLOB_PROTOCOL, &mut stream)));
    assert!(result.is_err() && stream.read == 4 && peak < 64 * 1024);
    let mut stream = Endless {
        head: over(MAX_BLOB_HEAD),
        read: 0,
    };
    let (result, peak) = peak_during(|| block_on(read_blob_response(&mut stream)));
    assert!(result.is_err() && stream.read == 4 && peak < 64 * 1024);
}

/// A blob head announcing a chunk over [`MAX_CHUNK_BYTES`] is refused on the head: the chunk
/// is neither read nor allocated. One within the limit is read whole.
#[test]
fn a_blob_head_claiming_more_than_a_chunk_is_refused_before_the_chunk_is_allocated() {
    for len in [MAX_CHUNK_BYTES as u64 + 1, 1 << 32, u64::MAX] {
        let head = wire::encode(&BlobHead::Chunk { len }, MAX_BLOB_HEAD).unwrap();
        let framed_head = framed(&head);
        let mut stream = Endless {
            head: framed_head.clone(),
            read: 0,
        };
        let (result, peak) = peak_during(|| block_on(read_blob_response(&mut stream)));
        let err = result.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{len}: {err}");
        assert!(err.to_string().contains("limit"), "{len}: {err}");
        assert_eq!(stream.read, framed_head.len(), "{len}: read past the head");
        assert!(peak < 64 * 1024, "{len}: {peak} bytes allocated");
    }
    let head = wire::encode(
        &BlobHead::Chunk {
            len: MAX_CHUNK_BYTES as u64,
        },
        MAX_BLOB_HEAD,
    )
    .unwrap();
    let mut stream = Endless {
        head: framed(&head),
        read: 0,
    };
    let chunk = block_on(read_blob_response(&mut stream)).unwrap();
    assert_eq!(chunk, BlobResponse::Chunk(vec![0; MAX_CHUNK_BYTES]));
}

/// A frame within its limit whose stream ends early is an error; what it takes is bounded by
/// the limit, not by anything the body says.
#[test]
fn a_frame_cut_short_is_an_error_bounded_by_its_limit() {
    for (limit, claim) in [
        (MAX_CTL_BYTES, MAX_CTL_BYTES),
        (MAX_CTL_BYTES, 100),
        (1024, 1024),
    ] {
        let mut input = (claim as u32).to_be_bytes().to_vec();
        input.extend([0x9b; 16]);
        let (result, peak) = peak_during(|| {
            block_on(read_frame::<CtlRequest, _>(
                &mut Cursor::new(&input[..]),
                limit,
            ))
        });
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(peak <= limit + 64 * 1024, "{claim}: {peak} bytes allocated");
    }
}

/// A small message whose heads claim gigabytes is an error and takes no memory of that size,
/// with a string, array or map head put in (or written over what is there) at every place of
/// each message.
#[test]
fn claimed_lengths_anywhere_in_a_message_are_not_taken_at_their_word() {
    type Decode = fn(&[u8]) -> bool;
    let kinds: [(&str, Vec<Vec<u8>>, Decode); 3] = [
        (
            "presence",
            encoded(&presences()[..2], MAX_GOSSIP_BYTES),
            |m| wire::decode::<Presence>(m, MAX_GOSSIP_BYTES).is_ok(),
        ),
        (
            "ctl request",
            encoded(&ctl_requests(), MAX_CTL_BYTES),
            |m| wire::decode::<CtlRequest>(m, MAX_CTL_BYTES).is_ok(),
        ),
        (
            "ctl response",
            encoded(&ctl_responses(), MAX_CTL_BYTES),
            |m| wire::decode::<CtlResponse>(m, MAX_CTL_BYTES).is_ok(),
        ),
    ];
    let started = Instant::now();
    let mut cases = 0;
    for (what, samples, decode) in kinds {
        for (s, sample) in samples.iter().enumerate() {
            for i in 0..sample.len() {
                for head in [0x5b, 0x7b, 0x9b, 0xbb] {
                    for (claim, over) in [(u64::MAX, true), (1 << 32, false)] {
                        let mut m = sample.clone();
                        let mut put = vec![head];
                        put.extend(claim.to_be_bytes());
                        let end = if over { (i + 9).min(m.len()) } else { i };
                        m.splice(i..end, put);
                        let _case = Case {
                            what,
                            seed: s as u64,
                            index: cases,
                            input: &m,
                        };
                        let (_, peak) = peak_during(|| decode(&m));
                        assert!(
                            peak <= memory_bound(m.len()),
                            "{what} {s}, at {i}: head {head:#x} claiming {claim}: {peak} bytes"
                        );
                        cases += 1;
                    }
                }
            }
        }
    }
    eprintln!(
        "claimed lengths: {cases} cases in {:.1?}",
        started.elapsed()
    );
}

/// A field a node does not know is skipped, whatever it holds: nested as deep as CBOR allows
/// it is refused at the decoder's depth limit, within the stack of a runtime worker thread
/// (where a node decodes), never by overflowing it.
#[test]
fn deeply_nested_unknown_fields_are_refused_within_a_worker_threads_stack() {
    let worker_stack = 2 * 1024 * 1024;
    let message = wire::encode(&presence(1), MAX_GOSSIP_BYTES).unwrap();
    // The envelope is a map of two entries (`v`, `body`): a third, `x`, goes at its end.
    assert_eq!(message[0], 0xa2);
    let with_field = |depth: usize, open: &[u8], close: &[u8]| {
        let mut input = message.clone();
        input[0] = 0xa3;
        input.extend([0x61, b'x']);
        for _ in 0..depth {
            input.extend_from_slice(open);
        }
        input.push(0xf6);
        for _ in 0..depth {
            input.extend_from_slice(close);
        }
        input
    };
    for (depth, open, close, decodes) in [
        (0, &[][..], &[][..], true),
        (100, &[0x81], &[], true),
        (200, &[0x9f], &[0xff], true),
        (200, &[0xa1, 0x60], &[], true),
        (256, &[0x81], &[], false),
        (10_000, &[0x81], &[], false),
        (100_000, &[0x9f], &[0xff], false),
        (100_000, &[0xa1, 0x60], &[], false),
        (100, &[0xc6], &[], true),
        (100_000, &[0xc6], &[], false),
    ] {
        let input = with_field(depth, open, close);
        assert!(input.len() <= MAX_GOSSIP_BYTES);
        let decoded = std::thread::Builder::new()
            .stack_size(worker_stack)
            .spawn(move || {
                let p = wire::decode::<Presence>(&input, MAX_GOSSIP_BYTES);
                if let Ok(p) = &p {
                    encodes_again(p);
                    assert!(p.authentic());
                }
                let _ = wire::decode_any_version::<OtherPresence>(&input, MAX_GOSSIP_BYTES);
                p.is_ok()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(decoded, decodes, "{depth} deep, opened by {open:x?}");
    }
}

/// A presence of the most memory-hungry shape as large as gossip carries: every byte one empty
/// address (each held as a reference-counted allocation), or labels of a few bytes each.
fn hungry_presences() -> Vec<(&'static str, Presence)> {
    let mut addresses = presence(1);
    addresses.addresses = vec![Multiaddr::empty(); MAX_GOSSIP_BYTES - 1000];
    let mut labels = presence(1);
    labels.labels = (0..100_000u32)
        .map(|i| (format!("{i:x}"), String::new()))
        .collect();
    vec![("empty addresses", addresses), ("short labels", labels)]
}

/// A presence with more addresses or labels than a node sends is no node's, and is refused as
/// it is read, at the first element past [`wire::MAX_PRESENCE_ADDRESSES`] or
/// [`wire::MAX_LABELS`]: reading it takes memory of the order of its size. Read whole, a list
/// of empty addresses takes some 32 times its bytes (16 for short labels): 1 MiB of gossip
/// would be held as 32 MiB, an 8 MiB table sync of such a row as 256 MiB, and a peer may
/// have several such requests in flight at once (two connections, 256 streams each).
#[test]
fn a_presence_with_more_addresses_or_labels_than_a_node_sends_is_refused_as_it_is_read() {
    for (what, presence) in hungry_presences() {
        let input = wire::encode(&presence, MAX_GOSSIP_BYTES).unwrap();
        let (decoded, peak) = peak_during(|| wire::decode::<Presence>(&input, MAX_GOSSIP_BYTES));
        let error = decoded.expect_err(what).to_string();
        assert!(error.contains("at most"), "{what}: {error}");
        assert!(
            peak <= 2 * 1024 * 1024 + 4 * input.len(),
            "{what}: {} bytes took {peak}",
            input.len()
        );
        // The same row in a table sync: the whole message is refused, as cheaply.
        let members = vec![MemberRecord {
            presence,
            age_ms: 0,
        }];
        let sync = wire::encode(&CtlRequest::SyncMembers { members }, MAX_CTL_BYTES).unwrap();
        let (decoded, peak) =
            peak_during(|| wire::decode::<CtlRequest>(&sync, MAX_CTL_BYTES).map(|_| ()));
        assert!(decoded.is_err(), "{what} in a sync");
        assert!(
            peak <= 2 * 1024 * 1024 + 4 * sync.len(),
            "{what} in a sync: {} bytes took {peak}",
            sync.len()
        );
    }
}
