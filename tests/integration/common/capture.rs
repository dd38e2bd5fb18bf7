//! Captures written byte by byte for tests of hostile input: raw IPv4 + TCP
//! frames in a classic pcap (LINKTYPE_RAW) or in pcapng blocks, and a
//! temporary file that removes itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const SYN_ACK: u8 = 0x12;
pub const PSH_ACK: u8 = 0x18;

/// An IPv4 packet (no options) carrying a TCP segment (no options).
pub fn ipv4_tcp(
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let total = (40 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    p.extend_from_slice(&src.0);
    p.extend_from_slice(&dst.0);
    p.extend_from_slice(&src.1.to_be_bytes());
    p.extend_from_slice(&dst.1.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ack.to_be_bytes());
    p.push(5 << 4);
    p.push(flags);
    p.extend_from_slice(&65535u16.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A classic little-endian microsecond pcap of raw IP frames:
/// `(microseconds since the epoch, frame)`.
pub fn pcap(frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut f = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 101] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    for (ts, data) in frames {
        let len = data.len() as u32;
        for v in [(ts / 1_000_000) as u32, (ts % 1_000_000) as u32, len, len] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(data);
    }
    f
}

/// `conns` HTTP/1.1 connections from 10.0.0.1 (ports `first_port` on) to
/// 10.0.0.2:80, one request each, a millisecond apart, without a close.
pub fn http_connections(first_port: u16, conns: u16) -> Vec<(u64, Vec<u8>)> {
    let request: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let response: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (q, r) = (request.len() as u32, response.len() as u32);
    let server = ([10, 0, 0, 2], 80);
    let mut frames = Vec::new();
    let mut ts = 1_700_000_000_000_000;
    for n in 0..conns {
        let client = ([10, 0, 0, 1], first_port + n);
        for frame in [
            ipv4_tcp(client, server, 100, 0, SYN, &[]),
            ipv4_tcp(server, client, 500, 101, SYN_ACK, &[]),
            ipv4_tcp(client, server, 101, 501, PSH_ACK, request),
            ipv4_tcp(server, client, 501, 101 + q, PSH_ACK, response),
            ipv4_tcp(client, server, 101 + q, 501 + r, ACK, &[]),
        ] {
            ts += 1000;
            frames.push((ts, frame));
        }
    }
    frames
}

/// One little-endian pcapng block, its body padded to 32 bits.
pub fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let padded = (body.len() + 3) & !3;
    let total = (12 + padded) as u32;
    let mut b = kind.to_le_bytes().to_vec();
    b.extend_from_slice(&total.to_le_bytes());
    b.extend_from_slice(body);
    b.resize(8 + padded, 0);
    b.extend_from_slice(&total.to_le_bytes());
    b
}

/// A little-endian Section Header Block.
pub fn shb() -> Vec<u8> {
    let mut body = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    body.extend_from_slice(&[1, 0, 0, 0]);
    body.extend_from_slice(&u64::MAX.to_le_bytes());
    block(0x0a0d_0d0a, &body)
}

/// An Interface Description Block for raw IP with `options` as they stand.
pub fn idb(options: &[u8]) -> Vec<u8> {
    let mut body = 101u16.to_le_bytes().to_vec();
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&65535u32.to_le_bytes());
    body.extend_from_slice(options);
    block(1, &body)
}

/// An Enhanced Packet Block on interface 0 with a raw timestamp.
pub fn epb(ts: u64, data: &[u8]) -> Vec<u8> {
    let mut body = 0u32.to_le_bytes().to_vec();
    body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ts as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(data);
    block(6, &body)
}

/// A file in the temporary directory, removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("conntrace-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("temp file");
        TempFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `conntrace replay -f json ARGS...`: its output.
pub fn replay_json(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(super::binary())
        .args(["replay", "-f", "json"])
        .args(args)
        .output()
        .expect("the conntrace binary runs")
}

pub use super::report_of;
