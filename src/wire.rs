//! Protocol quantities shared by every layer: capture timestamps, TCP sequence
//! numbers with wrapping comparison (RFC 9293 §3.4), TCP flags, and the owned
//! [`Segment`] that decoding yields. Nothing after decoding looks at frame bytes
//! except through a segment's payload slice.

use std::fmt;
use std::net::SocketAddr;
use std::ops::{Add, Sub};

/// A capture timestamp in microseconds since the Unix epoch.
///
/// Microseconds are what the JSON report promises; nanosecond captures are
/// truncated to microseconds when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Seconds and microseconds as one timestamp; a value beyond what
    /// [`Timestamp`] holds saturates at its least or greatest instead of wrapping.
    pub fn from_parts(secs: i64, micros: i64) -> Timestamp {
        Timestamp(secs.saturating_mul(1_000_000).saturating_add(micros))
    }

    /// Seconds since the epoch, as the report's float with microsecond precision.
    pub fn as_secs_f64(self) -> f64 {
        // Split to keep the microseconds exact in the f64's 53-bit mantissa.
        (self.0.div_euclid(1_000_000)) as f64 + (self.0.rem_euclid(1_000_000)) as f64 / 1e6
    }

    /// `d` later, saturating at the end of time.
    pub fn after(self, d: std::time::Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// `secs` seconds later (earlier when negative), saturating at either
    /// end of time.
    pub fn after_secs(self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1_000_000)))
    }

    /// `d` earlier, saturating at the start of time.
    pub fn before(self, d: std::time::Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// Milliseconds from `earlier` to `self`.
    pub fn millis_since(self, earlier: Timestamp) -> f64 {
        // In i128: two timestamps at the ends of time are further apart than an i64.
        (i128::from(self.0) - i128::from(earlier.0)) as f64 / 1000.0
    }
}

/// A TCP sequence number. Comparison wraps modulo 2^32 (RFC 9293 §3.4, as
/// smoltcp's `TcpSeqNumber` does), so `a < b` means "b is after a".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// Signed distance from `other` to `self`, in bytes of sequence space.
    pub fn distance_from(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
}

impl PartialOrd for SeqNumber {
    fn partial_cmp(&self, other: &SeqNumber) -> Option<std::cmp::Ordering> {
        Some(self.distance_from(*other).cmp(&0))
    }
}

impl Add<u32> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, rhs: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(rhs))
    }
}

impl Sub<SeqNumber> for SeqNumber {
    type Output = i32;
    fn sub(self, rhs: SeqNumber) -> i32 {
        self.distance_from(rhs)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The TCP control bits we act on (RFC 9293 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
    pub fn psh(self) -> bool {
        self.0 & Self::PSH != 0
    }
    /// A SYN without ACK: the opening of a connection.
    pub fn is_syn_only(self) -> bool {
        self.syn() && !self.ack()
    }
    /// A SYN with ACK: the answer to an opening.
    pub fn is_syn_ack(self) -> bool {
        self.syn() && self.ack()
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::SYN, "SYN"),
            (Self::FIN, "FIN"),
            (Self::RST, "RST"),
            (Self::PSH, "PSH"),
            (Self::ACK, "ACK"),
            (Self::URG, "URG"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "[{}]", set.join(","))
    }
}

/// Which way a segment travels within its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client (the SYN sender, or the best guess) to the server.
    ToServer,
    /// From the server to the client.
    ToClient,
}

impl Direction {
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ToServer => Direction::ToClient,
            Direction::ToClient => Direction::ToServer,
        }
    }
}

/// One decoded TCP segment: everything the tracker and the stream parsers need,
/// owned, with the payload kept as a range into the frame it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub ts: Timestamp,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    pub flags: TcpFlags,
    pub window: u16,
    /// TCP payload length as the IP header states it (what was on the wire).
    pub payload_len: u32,
    /// Where the captured payload bytes are in the frame; shorter than
    /// `payload_len` when the capture's snaplen cut the frame.
    pub payload: std::ops::Range<usize>,
    /// The frame's length on the wire (what tshark counts as bytes).
    pub frame_len: u32,
}

impl Segment {
    /// Sequence space this segment occupies: payload plus one for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        self.payload_len + u32::from(self.flags.syn()) + u32::from(self.flags.fin())
    }

    /// True when the capture holds fewer payload bytes than were sent.
    pub fn payload_truncated(&self) -> bool {
        (self.payload.len() as u64) < u64::from(self.payload_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_comparison_wraps() {
        let before = SeqNumber(u32::MAX - 10);
        let after = before + 20;
        assert_eq!(after.0, 9);
        assert!(before < after);
        assert_eq!(after - before, 20);
        assert_eq!(before - after, -20);
    }

    #[test]
    fn timestamp_keeps_microseconds() {
        let t = Timestamp::from_parts(1_763_728_526, 346_441);
        assert_eq!(format!("{:.6}", t.as_secs_f64()), "1763728526.346441");
        assert_eq!(Timestamp(2_500).millis_since(Timestamp(1_000)), 1.5);
        assert!(Timestamp(i64::MAX).millis_since(Timestamp(i64::MIN)) > 0.0);
    }

    #[test]
    fn timestamp_from_parts_saturates_instead_of_overflowing() {
        assert_eq!(Timestamp::from_parts(-2, 500_000), Timestamp(-1_500_000));
        assert_eq!(Timestamp::from_parts(i64::MAX, 0), Timestamp(i64::MAX));
        assert_eq!(
            Timestamp::from_parts(i64::MAX / 1_000_000, i64::MAX),
            Timestamp(i64::MAX)
        );
        assert_eq!(Timestamp::from_parts(i64::MIN, -1), Timestamp(i64::MIN));
        assert_eq!(
            Timestamp::from_parts(i64::from(u32::MAX), i64::from(u32::MAX)),
            Timestamp(4_294_967_295_000_000 + 4_294_967_295)
        );
    }
}
