//! Byte-array packets for unit tests: IPv4/IPv6 + TCP built by hand, so the
//! tests say exactly which bytes they feed the decoder and the tracker.

use crate::report::{ConnectionRecord, Report, RequestRecord, SeenIn, Summary};
use crate::source::Frame;
use crate::wire::Timestamp;

/// A TCP header (20 bytes, no options) and payload.
pub fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push(5 << 4);
    t.push(flags);
    t.extend_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// An IPv4 packet carrying `l4` (protocol 6 unless said).
pub fn ipv4(src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
    ipv4_proto(src, dst, 6, l4)
}

pub fn ipv4_proto(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(l4);
    p
}

/// An IPv6 packet carrying `l4`, optionally behind a hop-by-hop header.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], hop_by_hop: bool, l4: &[u8]) -> Vec<u8> {
    let ext: &[u8] = if hop_by_hop {
        &[6, 0, 1, 4, 0, 0, 0, 0]
    } else {
        &[]
    };
    let next = if hop_by_hop { 0 } else { 6 };
    let len = (ext.len() + l4.len()) as u16;
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(ext);
    p.extend_from_slice(l4);
    p
}

/// An Ethernet II frame with optional VLAN tags.
pub fn ether(ether_type: u16, vlans: &[u16], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for vid in vlans {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A frame as a reader would yield it, captured whole.
pub fn frame(ts_micros: i64, data: &[u8]) -> Frame<'_> {
    Frame {
        ts: Timestamp(ts_micros),
        caplen: data.len() as u32,
        wirelen: data.len() as u32,
        data,
    }
}

/// Seconds since the epoch as a capture timestamp.
pub fn secs(s: f64) -> crate::wire::Timestamp {
    crate::wire::Timestamp((s * 1e6).round() as i64)
}

/// A report row for an HTTP/1.1 connection that opened with a handshake and is
/// still open; tests set the fields they are about.
pub fn connection_record(
    stream: u64,
    client: &str,
    server: &str,
    first_seen: f64,
) -> ConnectionRecord {
    ConnectionRecord {
        stream,
        client: client.parse().expect("an ip:port"),
        server: server.parse().expect("an ip:port"),
        first_seen: secs(first_seen),
        last_seen: secs(first_seen + 1.0),
        syn: 1,
        syn_ack: 1,
        fin_client: 0,
        fin_server: 0,
        rst_client: 0,
        rst_server: 0,
        packets_client: 0,
        packets_server: 0,
        bytes_client: 0,
        bytes_server: 0,
        payload_client: 0,
        payload_server: 0,
        handshake_rtt_ms: None,
        closed_by: None,
        closed_with: None,
        closed_at: None,
        state: crate::report::ConnState::S1,
        history: String::new(),
        orientation: crate::report::Orientation::Syn,
        protocol: crate::report::AppProtocol::Http11,
        tls_sni: None,
        alpn: Vec::new(),
        requests: None,
        http: None,
        unused: None,
    }
}

/// A report row for `GET /` at `depth` on `stream`, sent at `sent` seconds,
/// seen in the capture and not answered; tests set the fields they are
/// about.
pub fn request_record(stream: u64, depth: u32, sent: f64) -> RequestRecord {
    RequestRecord {
        stream,
        depth,
        reused: depth > 1,
        method: "GET".into(),
        target: "/".into(),
        host: None,
        status: None,
        sent: secs(sent),
        answered: None,
        completed: None,
        h2_stream: None,
        tag: None,
        seen_in: SeenIn::Capture,
        why_new: None,
    }
}

/// A report of these rows, tallied, with nothing else in it.
pub fn report(connections: Vec<ConnectionRecord>, requests: Vec<RequestRecord>) -> Report {
    Report {
        tool: Default::default(),
        source: Default::default(),
        summary: Summary::tally(&connections, &requests),
        connections,
        requests,
        anomalies: Vec::new(),
        client: None,
        tracker: None,
        diagnosis: Vec::new(),
        probe: None,
        sockets: None,
        audit: None,
    }
}
