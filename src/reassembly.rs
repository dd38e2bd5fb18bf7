//! TCP stream reassembly for one direction of a connection: turns segments, in
//! whatever order the capture holds them, into the byte stream the receiving
//! application read, once, in order.
//!
//! In-order payloads are handed back as slices of the caller's buffer (no
//! copy); only segments that arrive ahead of a hole are copied, and those are
//! held up to [`MAX_BUFFERED_BYTES`] and [`MAX_BUFFERED_SEGMENTS`]. Bytes the capture never saw (a lost
//! segment, a payload cut by the snaplen) become an explicit gap so the parser
//! above can resynchronise; the stream never silently skips.
//!
//! A hole is declared lost, rather than waited for, when the peer acknowledges
//! data beyond it while later data is buffered (the receiver had the bytes, the
//! capture did not: Zeek's "ACK above hole"), when the buffer is full, or when
//! the connection is flushed at its end.

use crate::wire::{Segment, SeqNumber, Timestamp};

/// Most out-of-order payload bytes held per direction while waiting for a
/// hole to fill. Past this the oldest hole is declared lost.
pub const MAX_BUFFERED_BYTES: usize = 256 * 1024;

/// Most out-of-order segments held per direction, whatever their size: ones
/// the snaplen cut to nothing (a headers-only capture) would otherwise pile
/// up without bound behind a hole no ACK closes (a one-way capture), and
/// each [`Reassembler::pop`] scans them all. Full-size segments reach
/// [`MAX_BUFFERED_BYTES`] first.
pub const MAX_BUFFERED_SEGMENTS: usize = 1024;

/// One piece of the reassembled stream, in stream order: first `gap_before`
/// bytes the capture never saw, then `data`, then `gap_after` bytes sent but
/// not captured (a snaplen-truncated payload), then the sender's FIN if `fin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<B> {
    pub gap_before: u64,
    pub data: B,
    pub gap_after: u64,
    pub fin: bool,
    /// Timestamp of the segment that carried these bytes.
    pub ts: Timestamp,
}

impl<B: AsRef<[u8]>> Delivery<B> {
    fn is_empty(&self) -> bool {
        self.gap_before == 0 && self.data.as_ref().is_empty() && self.gap_after == 0 && !self.fin
    }
}

/// What the reassembler has counted so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReassemblyStats {
    /// Holes in the stream: bytes sent that the capture never held.
    pub gaps: u32,
    /// Total bytes in those holes.
    pub missing_bytes: u64,
    /// Payload bytes seen more than once (retransmissions, overlaps).
    pub duplicate_bytes: u64,
    /// Segments that arrived ahead of a hole and were buffered.
    pub out_of_order_segments: u32,
    /// Times the buffer limit forced a hole to be declared lost.
    pub overflows: u32,
    /// No SYN was seen: the stream starts at the first segment captured.
    pub started_midstream: bool,
}

#[derive(Debug)]
struct Held {
    seq: SeqNumber,
    data: Vec<u8>,
    wire_len: u32,
    fin: bool,
    ts: Timestamp,
}

/// Reassembly state of one direction.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// Next sequence number the stream expects; `None` until the first SYN or
    /// data segment fixes the origin.
    next: Option<SeqNumber>,
    held: Vec<Held>,
    held_bytes: usize,
    /// The peer acknowledged up to here.
    peer_ack: Option<SeqNumber>,
    /// The buffer overflowed: declare holes lost until it drains.
    overflowing: bool,
    /// The stream ended: declare every hole lost.
    flushed: bool,
    fin_delivered: bool,
    stats: ReassemblyStats,
}

impl Reassembler {
    pub fn new() -> Reassembler {
        Reassembler::default()
    }

    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// True once the stream's origin is known (a SYN or data was seen).
    pub fn started(&self) -> bool {
        self.next.is_some()
    }

    /// Take one segment sent in this direction. Returns the part of it that
    /// continues the stream now (borrowed from `payload`); anything it made
    /// deliverable from the buffer comes out of [`Reassembler::pop`].
    pub fn segment<'p>(&mut self, seg: &Segment, payload: &'p [u8]) -> Delivery<&'p [u8]> {
        let mut out = Delivery {
            gap_before: 0,
            data: &payload[..0],
            gap_after: 0,
            fin: false,
            ts: seg.ts,
        };
        let captured = &payload[..payload.len().min(seg.payload_len as usize)];
        let next = match self.next {
            Some(next) => next,
            None if seg.flags.syn() => {
                self.next = Some(seg.seq + 1);
                if seg.payload_len == 0 && !seg.flags.fin() {
                    return out;
                }
                // TCP Fast Open data rides on the SYN (RFC 7413).
                seg.seq + 1
            }
            None if seg.payload_len == 1 && !seg.flags.fin() => {
                // A lone byte opening a capture is most likely a keep-alive
                // probe (RFC 9293 §3.8.4: one byte below the send point, which
                // Wireshark flags as "TCP Keep-Alive"): the stream goes on
                // after it.
                self.stats.started_midstream = true;
                self.next = Some(seg.seq + 1);
                return out;
            }
            None if seg.payload_len > 0 || seg.flags.fin() => {
                self.stats.started_midstream = true;
                self.next = Some(seg.seq);
                seg.seq
            }
            None => return out,
        };
        let start = if seg.flags.syn() {
            seg.seq + 1
        } else {
            seg.seq
        };
        let rel = start - next;
        if rel > 0 {
            if seg.payload_len > 0 || seg.flags.fin() {
                self.hold(start, captured, seg.payload_len, seg.flags.fin(), seg.ts);
            }
            return out;
        }
        let skip = rel.unsigned_abs();
        if skip > 0 {
            self.stats.duplicate_bytes += u64::from(skip.min(seg.payload_len));
        }
        if skip >= seg.payload_len {
            if seg.flags.fin() && skip == seg.payload_len && !self.fin_delivered {
                self.fin_delivered = true;
                out.fin = true;
            }
            return out;
        }
        let skip = skip as usize;
        out.data = captured.get(skip..).unwrap_or(&[]);
        let fresh = seg.payload_len as usize - skip;
        out.gap_after = (fresh - out.data.len()) as u64;
        self.note_gap(out.gap_after);
        self.next = Some(start + seg.payload_len);
        if seg.flags.fin() && !self.fin_delivered {
            self.fin_delivered = true;
            out.fin = true;
        }
        out
    }

    /// The other direction acknowledged `ack`: bytes of this direction below
    /// it reached the receiver.
    pub fn peer_acked(&mut self, ack: SeqNumber) {
        match self.peer_ack {
            Some(prev) if ack <= prev => {}
            _ => self.peer_ack = Some(ack),
        }
    }

    /// Declare every hole lost: the connection or the capture ended.
    pub fn flush(&mut self) {
        self.flushed = true;
    }

    /// The next buffered piece that now continues the stream, if any.
    pub fn pop(&mut self) -> Option<Delivery<Vec<u8>>> {
        loop {
            let next = self.next?;
            let (idx, first) = self
                .held
                .iter()
                .enumerate()
                .min_by_key(|(_, h)| h.seq - next)?;
            let rel = first.seq - next;
            let mut gap_before = 0;
            if rel > 0 {
                let acked_beyond = self.peer_ack.is_some_and(|a| a >= first.seq);
                if !(self.flushed || self.overflowing || acked_beyond) {
                    return None;
                }
                gap_before = rel as u64;
                self.note_gap(gap_before);
            }
            let held = self.held.swap_remove(idx);
            self.held_bytes -= held.data.len();
            if self.held.is_empty() {
                self.overflowing = false;
            }
            let skip = rel.min(0).unsigned_abs();
            let fin = held.fin && !self.fin_delivered && skip <= held.wire_len;
            if skip >= held.wire_len && !fin {
                self.stats.duplicate_bytes += u64::from(held.wire_len);
                continue;
            }
            self.stats.duplicate_bytes += u64::from(skip);
            let fresh = (held.wire_len - skip) as usize;
            let mut data = held.data;
            data.drain(..(skip as usize).min(data.len()));
            let gap_after = (fresh - data.len().min(fresh)) as u64;
            data.truncate(fresh);
            self.note_gap(gap_after);
            self.next = Some(held.seq + held.wire_len);
            self.fin_delivered |= fin;
            let out = Delivery {
                gap_before,
                data,
                gap_after,
                fin,
                ts: held.ts,
            };
            if !out.is_empty() {
                return Some(out);
            }
        }
    }

    fn hold(&mut self, seq: SeqNumber, captured: &[u8], wire_len: u32, fin: bool, ts: Timestamp) {
        self.stats.out_of_order_segments += 1;
        self.held_bytes += captured.len();
        self.held.push(Held {
            seq,
            data: captured.to_vec(),
            wire_len,
            fin,
            ts,
        });
        if self.held_bytes > MAX_BUFFERED_BYTES || self.held.len() > MAX_BUFFERED_SEGMENTS {
            self.stats.overflows += 1;
            self.overflowing = true;
        }
    }

    fn note_gap(&mut self, bytes: u64) {
        if bytes > 0 {
            self.stats.gaps += 1;
            self.stats.missing_bytes += bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TcpFlags;

    fn seg(seq: u32, flags: u8, len: u32) -> Segment {
        Segment {
            ts: Timestamp(i64::from(seq)),
            src: "10.0.0.1:1".parse().unwrap(),
            dst: "10.0.0.2:2".parse().unwrap(),
            seq: SeqNumber(seq),
            ack: SeqNumber(0),
            flags: TcpFlags(flags),
            window: 0,
            payload_len: len,
            payload: 0..len as usize,
            frame_len: 0,
        }
    }

    /// Feed (seq, bytes) pairs; collect the stream as delivered, gaps as '?'.
    fn stream(r: &mut Reassembler, parts: &[(u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |gap: u64, data: &[u8], after: u64| {
            out.extend(std::iter::repeat_n(b'?', gap as usize));
            out.extend(data);
            out.extend(std::iter::repeat_n(b'?', after as usize));
        };
        for (seq, bytes) in parts {
            let d = r.segment(&seg(*seq, TcpFlags::ACK, bytes.len() as u32), bytes);
            put(d.gap_before, d.data, d.gap_after);
            while let Some(d) = r.pop() {
                put(d.gap_before, &d.data, d.gap_after);
            }
        }
        out
    }

    #[test]
    fn reorders_trims_and_wraps() {
        let mut r = Reassembler::new();
        let isn = u32::MAX - 3;
        r.segment(&seg(isn, TcpFlags::SYN, 0), &[]);
        let got = stream(
            &mut r,
            &[
                (isn.wrapping_add(7), b"ghij"),
                (isn.wrapping_add(1), b"abc"),
                (isn.wrapping_add(1), b"abc"),
                (isn.wrapping_add(3), b"cdefg"),
                (isn.wrapping_add(7), b"ghij"),
            ],
        );
        assert_eq!(got, b"abcdefghij");
        assert_eq!(r.stats().duplicate_bytes, 3 + 1 + 1 + 4);
        assert_eq!(r.stats().gaps, 0);
    }

    #[test]
    fn peer_ack_beyond_a_hole_declares_it_lost() {
        let mut r = Reassembler::new();
        r.segment(&seg(99, TcpFlags::SYN, 0), &[]);
        assert_eq!(stream(&mut r, &[(100, b"ab"), (105, b"fg")]), b"ab");
        r.peer_acked(SeqNumber(107));
        let d = r.pop().expect("held data after the hole");
        assert_eq!((d.gap_before, d.data.as_slice()), (3, &b"fg"[..]));
        assert_eq!(r.stats().missing_bytes, 3);
    }

    #[test]
    fn truncated_capture_becomes_a_trailing_gap() {
        let mut r = Reassembler::new();
        let mut s = seg(10, TcpFlags::ACK, 8);
        s.payload = 0..3;
        let d = r.segment(&s, b"abc");
        assert!(r.stats().started_midstream);
        assert_eq!((d.data, d.gap_after), (&b"abc"[..], 5));
        assert_eq!(stream(&mut r, &[(18, b"z")]), b"z");
    }

    #[test]
    fn fin_is_delivered_once_in_order() {
        let mut r = Reassembler::new();
        r.segment(&seg(0, TcpFlags::SYN, 0), &[]);
        let fin = r.segment(&seg(4, TcpFlags::FIN | TcpFlags::ACK, 0), &[]);
        assert!(!fin.fin);
        r.segment(&seg(1, TcpFlags::ACK, 3), b"abc");
        let d = r.pop().expect("the FIN");
        assert!(d.fin);
        assert!(
            !r.segment(&seg(4, TcpFlags::FIN | TcpFlags::ACK, 0), &[])
                .fin
        );
    }

    #[test]
    fn overflow_declares_holes_lost_and_bounds_memory() {
        let mut r = Reassembler::new();
        r.segment(&seg(0, TcpFlags::SYN, 0), &[]);
        let chunk = vec![b'x'; 1000];
        let mut delivered = 0;
        for k in 0..1000u32 {
            r.segment(&seg(2 + k * 1000, TcpFlags::ACK, 1000), &chunk);
            while let Some(d) = r.pop() {
                delivered += d.data.len();
            }
            assert!(r.held_bytes <= MAX_BUFFERED_BYTES + 1000);
        }
        assert!(r.stats().overflows > 0);
        assert!(delivered > 0);
    }

    #[test]
    fn segments_cut_to_nothing_are_bounded_too() {
        // A one-way, headers-only capture with a hole: no byte is held, and
        // no ACK ever declares the hole lost.
        let mut r = Reassembler::new();
        r.segment(&seg(0, TcpFlags::SYN, 0), &[]);
        let mut most_held = 0;
        for k in 0..3_000u32 {
            let mut s = seg(1000 + k * 100, TcpFlags::ACK, 100);
            s.payload = 0..0;
            r.segment(&s, &[]);
            while r.pop().is_some() {}
            most_held = most_held.max(r.held.len());
        }
        assert!(most_held <= MAX_BUFFERED_SEGMENTS + 1);
        assert!(r.stats().overflows > 0);
    }
}
