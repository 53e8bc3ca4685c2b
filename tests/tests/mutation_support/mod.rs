//! What the mutation tests of wire input share: a global allocator that counts what one
//! decode takes (per thread, as tests run side by side), a small seeded generator of
//! mutations (bit flips, boundary bytes, CBOR heads claiming huge lengths, truncations,
//! duplicated, spliced and deleted ranges, appended garbage), and the loop that feeds each
//! mutated input to a check and names the seed, case and input of a failure.

// Each test file uses part of this module.
#![allow(dead_code)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    fmt::Debug,
    time::Instant,
};

use mesh::wire::{self, MAX_CHUNK_BYTES, MAX_CTL_BYTES, MAX_GOSSIP_BYTES};
use serde::{Serialize, de::DeserializeOwned};
// ---------------------------------------------------------------------------------------------
// Memory: what decoding one input takes at most, counted per thread (tests run side by side).

pub struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

pub fn grew(size: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + size;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

pub fn shrank(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size)));
}

// SAFETY: every call is passed on to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        shrank(layout.size());
        grew(new_size);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and says how many bytes more than before it this thread held at most meanwhile.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, peak.saturating_sub(base))
}

/// The most one decode of `len` input bytes may take: serde's decoders reserve up to 1 MiB for
/// a sequence from the length it claims (`size_hint::cautious`), and a message nests a few of
/// them; beyond that, memory follows the bytes actually there. A claimed length of gigabytes
/// taken at its word is far over this.
pub fn memory_bound(len: usize) -> usize {
    4 * 1024 * 1024 + 64 * len
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// xorshift64: small, fast, and the same sequence on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: nearby seeds give unrelated streams, never the zero state.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// Bytes that sit on the edges of CBOR's heads: smallest and largest immediates, the one-,
/// two-, four- and eight-byte length markers of each major type, indefinite lengths, break,
/// simple values and floats.
pub const BOUNDARY: &[u8] = &[
    0x00, 0x01, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1f, 0x20, 0x38, 0x3b, 0x40, 0x58, 0x5a, 0x5b, 0x5f,
    0x60, 0x78, 0x7a, 0x7b, 0x7f, 0x80, 0x98, 0x9a, 0x9b, 0x9f, 0xa0, 0xb8, 0xba, 0xbb, 0xbf, 0xc0,
    0xd8, 0xdb, 0xe0, 0xf4, 0xf5, 0xf6, 0xf7, 0xf9, 0xfa, 0xfb, 0xff,
];

/// The boundary values every byte of a sample is set to in turn.
pub const SWEEP: &[u8] = &[
    0x00, 0x01, 0x17, 0x18, 0x1b, 0x5b, 0x7b, 0x7f, 0x80, 0x9b, 0xbb, 0xf7, 0xff,
];

/// Heads with an eight-byte argument: an unsigned and a negative integer, byte and text
/// strings, an array, a map and a tag.
pub const HUGE_HEADS: &[u8] = &[0x1b, 0x3b, 0x5b, 0x7b, 0x9b, 0xbb, 0xdb];
/// The same with a four-byte argument.
pub const LONG_HEADS: &[u8] = &[0x1a, 0x3a, 0x5a, 0x7a, 0x9a, 0xba, 0xda];

/// Lengths a head may claim: past every limit, just past the limits, the edges of the integer
/// types.
pub const CLAIMS: &[u64] = &[
    u64::MAX,
    u64::MAX - 1,
    1 << 63,
    (1 << 63) - 1,
    1 << 32,
    (1 << 32) - 1,
    1 << 31,
    (MAX_CTL_BYTES + 1) as u64,
    MAX_CTL_BYTES as u64,
    (MAX_GOSSIP_BYTES + 1) as u64,
    (MAX_CHUNK_BYTES + 1) as u64,
    1 << 24,
    65_536,
    1025,
    64,
    0,
];

/// One mutation of `input`, with `donor` (another valid message) to splice from.
pub fn mutate_once(rng: &mut Rng, out: &mut Vec<u8>, donor: &[u8]) {
    let len = out.len();
    let at = |rng: &mut Rng| if len == 0 { 0 } else { rng.below(len) };
    match rng.below(12) {
        // A bit flipped.
        0 if len > 0 => {
            let i = at(rng);
            out[i] ^= 1 << rng.below(8);
        }
        // A byte set to a boundary value.
        1 if len > 0 => {
            let i = at(rng);
            out[i] = rng.pick(BOUNDARY);
        }
        // A head that claims a huge length, written over the bytes there or put in.
        2 | 3 => {
            let i = at(rng);
            let mut head = vec![rng.pick(HUGE_HEADS)];
            head.extend(rng.pick(CLAIMS).to_be_bytes());
            if rng.below(2) == 0 {
                let end = (i + head.len()).min(len);
                out.splice(i..end, head);
            } else {
                out.splice(i..i, head);
            }
        }
        4 => {
            let i = at(rng);
            let mut head = vec![rng.pick(LONG_HEADS)];
            head.extend((rng.pick(CLAIMS) as u32).to_be_bytes());
            let end = (i + head.len()).min(len);
            out.splice(i..end, head);
        }
        // Cut short.
        5 if len > 0 => out.truncate(at(rng)),
        // A range repeated.
        6 if len > 0 => {
            let from = at(rng);
            let to = (from + 1 + rng.below(64)).min(len);
            let piece = out[from..to].to_vec();
            let times = 1 + rng.below(4);
            let i = at(rng);
            for _ in 0..times {
                out.splice(i..i, piece.iter().copied());
            }
        }
        // A range of another message put in place of one of this.
        7 if len > 0 && !donor.is_empty() => {
            let from = rng.below(donor.len());
            let to = (from + 1 + rng.below(128)).min(donor.len());
            let i = at(rng);
            let end = (i + rng.below(128)).min(len);
            out.splice(i..end, donor[from..to].iter().copied());
        }
        // A range taken out.
        8 if len > 0 => {
            let i = at(rng);
            let end = (i + 1 + rng.below(32)).min(len);
            out.drain(i..end);
        }
        // Garbage after the end.
        9 => {
            let n = 1 + rng.below(64);
            for _ in 0..n {
                out.push(rng.next() as u8);
            }
        }
        // Indefinite lengths and breaks where definite ones were.
        10 if len > 0 => {
            let i = at(rng);
            out[i] = rng.pick(&[0x5f, 0x7f, 0x9f, 0xbf, 0xff]);
        }
        // A random byte anywhere.
        _ if len > 0 => {
            let i = at(rng);
            out[i] = rng.next() as u8;
        }
        _ => out.push(rng.pick(BOUNDARY)),
    }
}

/// `input` with one to four mutations.
pub fn mutate(rng: &mut Rng, input: &[u8], donor: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, &mut out, donor);
    }
    out
}

/// How many times the default number of random mutations each test makes:
/// `MUTATION_SCALE=50 cargo test ...` searches longer from the same seeds (its first cases are
/// those of the default run).
pub fn scale() -> usize {
    std::env::var("MUTATION_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Names the case being run if it panics: the test's output then says which input did it.
pub struct Case<'a> {
    pub what: &'a str,
    pub seed: u64,
    pub index: usize,
    pub input: &'a [u8],
}

impl Drop for Case<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{}: seed {:#x}, case {}: input ({} bytes) {}",
                self.what,
                self.seed,
                self.index,
                self.input.len(),
                hex(self.input)
            );
        }
    }
}

/// Runs `check` on every case made from `samples`: each sample as it is, cut at every length
/// (for samples up to 4 KiB), each of its bytes set to each value of [`SWEEP`] (up to 1 KiB),
/// then `per_sample` random mutations (times [`scale`]). Each case runs as it is: a panic
/// fails the test, after the case is named. `check` returns whether the input decoded; the
/// totals are returned.
pub fn run_cases(
    what: &str,
    seed: u64,
    samples: &[Vec<u8>],
    per_sample: usize,
    check: impl FnMut(&[u8]) -> bool,
) -> (usize, usize) {
    run_cases_within(what, seed, samples, per_sample, 0, check)
}

/// As [`run_cases`], for inputs that may make the decoder take up to `allowed` bytes more
/// than [`memory_bound`] (a frame's buffer, of the length its prefix claims within the limit).
pub fn run_cases_within(
    what: &str,
    seed: u64,
    samples: &[Vec<u8>],
    per_sample: usize,
    allowed: usize,
    mut check: impl FnMut(&[u8]) -> bool,
) -> (usize, usize) {
    let started = Instant::now();
    let (mut cases, mut decoded, mut most) = (0, 0, 0);
    let mut one = |seed: u64, index: usize, input: &[u8]| {
        let _case = Case {
            what,
            seed,
            index,
            input,
        };
        let (ok, peak) = peak_during(|| check(input));
        assert!(
            peak <= memory_bound(input.len()) + allowed,
            "{what}: seed {seed:#x}, case {index}: decoding {} bytes took {peak} bytes",
            input.len()
        );
        most = most.max(peak);
        cases += 1;
        decoded += usize::from(ok);
    };
    for (s, sample) in samples.iter().enumerate() {
        let seed = seed.wrapping_mul(1000).wrapping_add(s as u64);
        let donor = &samples[(s + 1) % samples.len()];
        let mut index = 0;
        one(seed, index, sample);
        if sample.len() <= 4096 {
            for cut in 0..sample.len() {
                index += 1;
                one(seed, index, &sample[..cut]);
            }
        }
        if sample.len() <= 1024 {
            for i in 0..sample.len() {
                for &b in SWEEP {
                    let mut m = sample.clone();
                    m[i] = b;
                    index += 1;
                    one(seed, index, &m);
                }
            }
        }
        let mut rng = Rng::new(seed);
        for _ in 0..per_sample * scale() {
            let m = mutate(&mut rng, sample, donor);
            index += 1;
            one(seed, index, &m);
        }
    }
    eprintln!(
        "{what}: {cases} cases, {decoded} decoded, at most {most} bytes held, in {:.1?}",
        started.elapsed()
    );
    (cases, decoded)
}

/// What every decoded value must allow: shown in logs, encoded again, read back as itself.
pub fn encodes_again<T>(value: &T)
where
    T: Serialize + DeserializeOwned + Debug,
{
    let _ = format!("{value:?}");
    let bytes = wire::encode(value, usize::MAX).expect("a decoded value encodes again");
    let back: T = wire::decode(&bytes, usize::MAX).expect("a value encoded again decodes");
    let again = wire::encode(&back, usize::MAX).expect("encodes a third time");
    assert_eq!(bytes, again, "a value encoded again reads back as itself");
}
