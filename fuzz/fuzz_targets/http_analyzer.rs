//! Fuzz the application-layer analyser: the input is a script of segments
//! (direction, flags, sequence offset, payload, truncation) fed to one
//! connection, then finished. Any panic is a bug; so is unbounded memory.
#![no_main]

use conntrace::http::ConnectionAnalyzer;
use conntrace::wire::{Direction, Segment, SeqNumber, TcpFlags, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut analyzer = ConnectionAnalyzer::new();
    let mut next = [1_000u32, 9_000u32];
    let mut rest = data;
    let mut clock = 0i64;
    // Each segment: control byte, offset byte, length byte, then payload.
    while let [control, offset, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, after) = tail.split_at(len);
        rest = after;
        let side = usize::from(control & 1);
        let dir = if side == 0 {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        let flags = match control >> 1 & 7 {
            0 => TcpFlags::SYN,
            1 => TcpFlags::SYN | TcpFlags::ACK,
            2 => TcpFlags::FIN | TcpFlags::ACK,
            3 => TcpFlags::RST,
            _ => TcpFlags::ACK | TcpFlags::PSH,
        };
        // Mostly in order; sometimes ahead, behind, or far off.
        let seq = match control >> 4 {
            0..=9 => next[side],
            10..=12 => next[side].wrapping_add(u32::from(*offset)),
            13..=14 => next[side].wrapping_sub(u32::from(*offset)),
            _ => u32::from(*offset) << 24,
        };
        // Sometimes the capture kept less than was sent.
        let wire_len = if control & 0x80 != 0 && *offset < 32 {
            len as u32 + u32::from(*offset)
        } else {
            len as u32
        };
        clock += 1;
        let seg = Segment {
            ts: Timestamp(clock),
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.2:80".parse().unwrap(),
            seq: SeqNumber(seq),
            ack: SeqNumber(next[1 - side]),
            flags: TcpFlags(flags),
            window: 0,
            payload_len: wire_len,
            payload: 0..payload.len(),
            frame_len: 54 + wire_len,
        };
        analyzer.on_segment(dir, &seg, payload);
        if seq == next[side] {
            next[side] = seq.wrapping_add(wire_len);
        }
    }
    analyzer.finish();
    let _ = analyzer.exchanges().len();
});
