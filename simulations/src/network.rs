//! The simulated network of tier 1: how long a message takes between two nodes, whether it
//! arrives, and what it costs on the wire.
//!
//! Latency is drawn per message from a fixed value or a uniform range. Loss hits a message
//! with a fixed probability; what a loss does is the [`LossModel`]: every mesh link is TCP,
//! which resends a lost segment after its retransmission timeout, so by default a loss
//! delays the message (and a loss of the resend delays it again, with the timeout doubled);
//! `drop` instead loses the whole message, as a datagram protocol would (harsher: requests
//! then fail at their timeout and are retried by the protocol). Each node has an uplink of
//! fixed bandwidth through which its messages leave one after another (downlinks are not
//! modelled). Byte costs are the encoded payload plus a per-message framing estimate (see
//! [`Overhead`]).

use std::{fmt, str::FromStr, time::Duration};

use rand::Rng;

/// Virtual time in microseconds since the start of a simulation.
pub type Micros = u64;

pub fn micros(d: Duration) -> Micros {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// Per-message latency of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    Fixed(Duration),
    /// Uniform between the two bounds.
    Uniform(Duration, Duration),
}

impl Latency {
    /// Tier 2's shaped memory links with this latency and `loss` (resent, as TCP does).
    pub fn link_shape(&self, loss: f64) -> mesh::LinkShape {
        let (latency_min, latency_max) = match *self {
            Latency::Fixed(d) => (d, d),
            Latency::Uniform(lo, hi) => (lo, hi),
        };
        mesh::LinkShape {
            latency_min,
            latency_max,
            loss_ppm: (loss * 1_000_000.0).round() as u32,
        }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> Micros {
        match *self {
            Latency::Fixed(d) => micros(d),
            Latency::Uniform(lo, hi) => rng.gen_range(micros(lo)..=micros(hi)),
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::Fixed(d) => write!(f, "{}", Exact(*d)),
            Latency::Uniform(lo, hi) => write!(f, "{}..{}", Exact(*lo), Exact(*hi)),
        }
    }
}

/// A duration as `--latency` takes it, without rounding: whole milliseconds as `20ms`, the
/// rest in microseconds (`1500us`) or, below them, fractions of one (`0.5us`).
struct Exact(Duration);

impl fmt::Display for Exact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{}us", nanos / 1_000)
        } else {
            write!(f, "{}us", nanos as f64 / 1e3)
        }
    }
}

impl FromStr for Latency {
    type Err = String;

    /// `20ms`, `1s`, or a range `10ms..30ms`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once("..") {
            Some((lo, hi)) => {
                let (lo, hi) = (parse_duration(lo)?, parse_duration(hi)?);
                if lo > hi {
                    return Err(format!(
                        "latency range {s}: the lower bound is above the upper"
                    ));
                }
                Ok(Latency::Uniform(lo, hi))
            }
            None => Ok(Latency::Fixed(parse_duration(s)?)),
        }
    }
}

/// `250us`, `20ms`, `1.5s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(format!("{s:?}: a duration cannot be negative"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?}: a duration needs a unit (us, ms, s or m)"))?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: {number:?} is not a number"))?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use us, ms, s or m)")),
    };
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A node's uplink, in bits per second (`unlimited`, `512kbit`, `100mbit`, `1gbit`,
/// `10gbit`): at least [`Bandwidth::MIN`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bandwidth(pub Option<u64>);

impl Bandwidth {
    /// The slowest uplink modelled: 1 kbit/s (slower ones would hold a message for hours).
    pub const MIN: u64 = 1_000;

    /// Time `bytes` occupy the uplink.
    pub fn transmit(&self, bytes: u64) -> Micros {
        match self.0 {
            None => 0,
            Some(bits) => (bytes as u128 * 8 * 1_000_000 / bits.max(1) as u128) as u64,
        }
    }

    /// How many bytes the uplink carries in `time` (the inverse of [`Bandwidth::transmit`]).
    pub fn bytes_in(&self, time: Micros) -> u64 {
        match self.0 {
            None => 0,
            Some(bits) => {
                u64::try_from(time as u128 * bits as u128 / 8 / 1_000_000).unwrap_or(u64::MAX)
            }
        }
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("unlimited"),
            Some(b) if b % 1_000_000_000 == 0 => write!(f, "{}gbit", b / 1_000_000_000),
            Some(b) if b.is_multiple_of(1_000_000) => write!(f, "{}mbit", b / 1_000_000),
            Some(b) if b.is_multiple_of(1_000) => write!(f, "{}kbit", b / 1_000),
            Some(b) => write!(f, "{}kbit", b as f64 / 1e3),
        }
    }
}

impl FromStr for Bandwidth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "unlimited" {
            return Ok(Bandwidth(None));
        }
        let (number, scale) = if let Some(n) = s.strip_suffix("gbit") {
            (n, 1_000_000_000.0)
        } else if let Some(n) = s.strip_suffix("mbit") {
            (n, 1_000_000.0)
        } else if let Some(n) = s.strip_suffix("kbit") {
            (n, 1_000.0)
        } else {
            return Err(format!(
                "{s:?}: give a bandwidth as e.g. 512kbit, 100mbit, 1gbit or unlimited"
            ));
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{s:?}: {number:?} is not a number"))?;
        if !(value.is_finite() && value < 1e6) {
            return Err(format!("{s:?}: out of range"));
        }
        // Zero and negative rates are below the slowest uplink too.
        let bits = (value.max(0.0) * scale).round() as u64;
        if bits < Bandwidth::MIN {
            return Err(format!(
                "{s:?}: below 1kbit (a message would hold an uplink for hours); give at least \
                 1kbit"
            ));
        }
        Ok(Bandwidth(Some(bits)))
    }
}

/// What a lost message costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LossModel {
    /// TCP: the segment is resent after the retransmission timeout (Linux: 200 ms at least,
    /// doubling on each further loss); the message arrives late.
    Retransmit,
    /// A datagram: the message is gone; a request fails at its timeout.
    Drop,
}

impl fmt::Display for LossModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossModel::Retransmit => "retransmit",
            LossModel::Drop => "drop",
        })
    }
}

/// Linux's smallest TCP retransmission timeout (`TCP_RTO_MIN`).
pub const TCP_RTO_MIN: Micros = 200_000;

/// The network every message of a tier-1 simulation crosses.
#[derive(Debug, Clone)]
pub struct NetworkModel {
    pub latency: Latency,
    /// Probability that a message is lost.
    pub loss: f64,
    pub loss_model: LossModel,
    pub uplink: Bandwidth,
}

impl NetworkModel {
    /// What happens to one message: `Some(extra delay)` if it arrives, `None` if it is gone.
    pub fn fate(&self, rng: &mut impl Rng) -> Option<Micros> {
        if self.loss <= 0.0 {
            return Some(0);
        }
        let mut extra = 0;
        let mut rto = TCP_RTO_MIN;
        while rng.r#gen::<f64>() < self.loss {
            if self.loss_model == LossModel::Drop {
                return None;
            }
            extra += rto;
            rto = (rto * 2).min(120_000_000);
        }
        Some(extra)
    }
}

impl Default for NetworkModel {
    fn default() -> Self {
        NetworkModel {
            latency: Latency::Fixed(Duration::from_millis(20)),
            loss: 0.0,
            loss_model: LossModel::Retransmit,
            uplink: Bandwidth(Some(1_000_000_000)),
        }
    }
}

/// Bytes a message costs on the wire beyond its payload: estimates of the framing of
/// rust-libp2p 0.57 over TCP + Noise + Yamux, counted per message.
pub struct Overhead;

impl Overhead {
    /// A gossipsub message: the protobuf RPC with source peer id (38 B), sequence number (8),
    /// signature (64), public key (36) and topic (16), plus Noise (18) and Yamux (12) frames.
    pub const GOSSIP: u64 = 220;
    /// A gossipsub control message (IHAVE, IWANT, IDONTWANT) without its message ids.
    pub const CONTROL: u64 = 60;
    /// Each 32-byte message id a control message names.
    pub const MESSAGE_ID: u64 = 34;
    /// A request: a new Yamux stream, multistream-select of the protocol, a length prefix.
    pub const REQUEST: u64 = 120;
    /// A response on the same stream, and its close.
    pub const RESPONSE: u64 = 60;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_is_described_without_rounding() {
        let latency: Latency = "500us..1500us".parse().unwrap();
        assert_eq!(latency.to_string(), "500us..1500us");
        assert_eq!("20ms".parse::<Latency>().unwrap().to_string(), "20ms");
        assert_eq!("0.5us".parse::<Latency>().unwrap().to_string(), "0.5us");
        let shown = |b: &str| b.parse::<Bandwidth>().unwrap().to_string();
        assert_eq!(shown("0.5mbit"), "500kbit");
        assert_eq!(shown("1.5kbit"), "1.5kbit");
        assert_eq!(shown("100mbit"), "100mbit");
        assert_eq!(shown("2.5gbit"), "2500mbit");
        assert_eq!(shown("1gbit"), "1gbit");
    }

    #[test]
    fn bandwidths_below_a_kbit_are_refused() {
        for slow in [
            "0.0000001mbit",
            "0.5kbit",
            "0.0000000001gbit",
            "0kbit",
            "-5mbit",
        ] {
            let e = slow.parse::<Bandwidth>().unwrap_err();
            assert!(e.contains("1kbit"), "{slow}: {e}");
        }
        assert_eq!("1kbit".parse::<Bandwidth>(), Ok(Bandwidth(Some(1_000))));
    }
}
