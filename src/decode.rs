//! Link layer → IP → TCP, in one place. Each captured frame becomes an owned
//! [`Segment`], a note that it was something other than TCP, or an
//! [`Anomaly`] with its reason (Zeek's "weird"): never a panic, never a silent
//! drop. Dispatch is on the capture's link type, never on guesses about the
//! bytes. IP and TCP headers go through etherparse's lax slicing; link headers
//! etherparse lacks (SLL2, NULL/LOOP, NFLOG, MPLS) are parsed here.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use crate::source::{Frame, LinkType};
use crate::wire::{Segment, SeqNumber, TcpFlags};

/// What one frame turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Tcp(Segment),
    /// Understood, but not TCP (ARP, UDP, ICMP, other EtherTypes...).
    NotTcp,
    Anomaly(Anomaly),
}

/// Why a frame could not be decoded as far as its headers claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Anomaly {
    UnsupportedLinkType(i32),
    TruncatedLinkHeader,
    UnknownAddressFamily,
    TruncatedIpHeader,
    BadIpHeader,
    TruncatedTcpHeader,
    BadTcpHeader,
    IpFragment,
    TruncatedIpv6Extension,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::UnsupportedLinkType(dlt) => write!(f, "unsupported link type {dlt}"),
            Anomaly::TruncatedLinkHeader => f.write_str("truncated link-layer header"),
            Anomaly::UnknownAddressFamily => f.write_str("unknown address family in link header"),
            Anomaly::TruncatedIpHeader => f.write_str("truncated IP header"),
            Anomaly::BadIpHeader => f.write_str("malformed IP header"),
            Anomaly::TruncatedTcpHeader => f.write_str("truncated TCP header"),
            Anomaly::BadTcpHeader => f.write_str("malformed TCP header"),
            Anomaly::IpFragment => f.write_str("IP fragment (not reassembled)"),
            Anomaly::TruncatedIpv6Extension => f.write_str("truncated IPv6 extension header"),
        }
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_MPLS: u16 = 0x8847;
const ETHERTYPE_MPLS_MULTICAST: u16 = 0x8848;
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];
const ETHERTYPE_PPPOE_SESSION: u16 = 0x8864;
/// Stands for a payload that is not IP (no EtherType uses 0).
const NOT_IP: u16 = 0;

/// Decode one frame captured with link type `link`.
pub fn decode(link: LinkType, frame: &Frame<'_>) -> Decoded {
    let data = frame.data;
    let inner = match link {
        LinkType::ETHERNET => ethernet(data),
        LinkType::LINUX_SLL => {
            // struct sll_header: 16 bytes, protocol (EtherType) at 14..16.
            match data.get(..16) {
                Some(h) => Ok((be16(&h[14..16]), &data[16..])),
                None => Err(Anomaly::TruncatedLinkHeader),
            }
        }
        LinkType::LINUX_SLL2 => {
            // struct sll2_header: 20 bytes, protocol (EtherType) at 0..2.
            match data.get(..20) {
                Some(h) => Ok((be16(&h[0..2]), &data[20..])),
                None => Err(Anomaly::TruncatedLinkHeader),
            }
        }
        LinkType::NULL | LinkType::LOOP => null_loop(link, data),
        LinkType::RAW | LinkType::RAW_12 | LinkType::RAW_14 => raw_ip(data),
        LinkType::IPV4 => Ok((ETHERTYPE_IPV4, data)),
        LinkType::IPV6 => Ok((ETHERTYPE_IPV6, data)),
        LinkType::NFLOG => nflog(data),
        other => Err(Anomaly::UnsupportedLinkType(other.0)),
    };
    match inner {
        Ok((ether_type, payload)) => network(ether_type, payload, frame),
        Err(anomaly) => Decoded::Anomaly(anomaly),
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Ethernet II, with any number of VLAN tags (802.1Q, QinQ) and MPLS labels.
fn ethernet(data: &[u8]) -> Result<(u16, &[u8]), Anomaly> {
    let h = data.get(..14).ok_or(Anomaly::TruncatedLinkHeader)?;
    let mut ether_type = be16(&h[12..14]);
    let mut rest = &data[14..];
    while ETHERTYPE_VLAN.contains(&ether_type) {
        let tag = rest.get(..4).ok_or(Anomaly::TruncatedLinkHeader)?;
        ether_type = be16(&tag[2..4]);
        rest = &rest[4..];
    }
    match ether_type {
        ETHERTYPE_MPLS | ETHERTYPE_MPLS_MULTICAST => mpls(rest),
        ETHERTYPE_PPPOE_SESSION => pppoe_session(rest),
        _ => Ok((ether_type, rest)),
    }
}

/// RFC 2516 PPPoE session: a 6-byte header, then the 2-byte PPP protocol
/// (0x0021 IPv4, 0x0057 IPv6).
fn pppoe_session(rest: &[u8]) -> Result<(u16, &[u8]), Anomaly> {
    let h = rest.get(..8).ok_or(Anomaly::TruncatedLinkHeader)?;
    let ether_type = match be16(&h[6..8]) {
        0x0021 => ETHERTYPE_IPV4,
        0x0057 => ETHERTYPE_IPV6,
        _ => NOT_IP, // another PPP protocol: counted as non-TCP
    };
    Ok((ether_type, &rest[8..]))
}

/// RFC 3032: pop labels to the bottom of the stack; the payload's IP version
/// nibble says which IP follows (as Wireshark and Zeek do for MPLS).
fn mpls(mut rest: &[u8]) -> Result<(u16, &[u8]), Anomaly> {
    loop {
        let label = rest.get(..4).ok_or(Anomaly::TruncatedLinkHeader)?;
        rest = &rest[4..];
        if label[2] & 0x01 != 0 {
            return raw_ip(rest);
        }
    }
}

fn raw_ip(data: &[u8]) -> Result<(u16, &[u8]), Anomaly> {
    match data.first().map(|b| b >> 4) {
        Some(4) => Ok((ETHERTYPE_IPV4, data)),
        Some(6) => Ok((ETHERTYPE_IPV6, data)),
        Some(_) => Err(Anomaly::BadIpHeader),
        None => Err(Anomaly::TruncatedIpHeader),
    }
}

/// BSD loopback: a 4-byte address family, in the writer's byte order for NULL
/// and in network order for LOOP. AF_INET6 differs by OS (10, 24, 28, 30).
fn null_loop(link: LinkType, data: &[u8]) -> Result<(u16, &[u8]), Anomaly> {
    let h = data.get(..4).ok_or(Anomaly::TruncatedLinkHeader)?;
    let raw = [h[0], h[1], h[2], h[3]];
    let family = if link == LinkType::LOOP {
        u32::from_be_bytes(raw)
    } else {
        // The writer's byte order: a family fits in the low 16 bits either way.
        let le = u32::from_le_bytes(raw);
        if le <= 0xffff {
            le
        } else {
            u32::from_be_bytes(raw)
        }
    };
    match family {
        2 => Ok((ETHERTYPE_IPV4, &data[4..])),
        10 | 24 | 28 | 30 => Ok((ETHERTYPE_IPV6, &data[4..])),
        _ => Err(Anomaly::UnknownAddressFamily),
    }
}

/// Linux NFLOG (LINKTYPE_NFLOG): a 4-byte header, then TLVs with host-order
/// (little-endian in practice) length and type, padded to 4 bytes; the packet
/// is the NFULA_PAYLOAD (type 9) TLV.
fn nflog(data: &[u8]) -> Result<(u16, &[u8]), Anomaly> {
    const NFULA_PAYLOAD: u16 = 9;
    let h = data.get(..4).ok_or(Anomaly::TruncatedLinkHeader)?;
    let ether_type = match h[0] {
        2 => ETHERTYPE_IPV4,
        10 => ETHERTYPE_IPV6,
        _ => return Err(Anomaly::UnknownAddressFamily),
    };
    let mut rest = &data[4..];
    while rest.len() >= 4 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let kind = u16::from_le_bytes([rest[2], rest[3]]);
        if len < 4 {
            return Err(Anomaly::TruncatedLinkHeader);
        }
        if kind == NFULA_PAYLOAD {
            let end = len.min(rest.len());
            return Ok((ether_type, &rest[4..end]));
        }
        let padded = (len + 3) & !3;
        if padded > rest.len() {
            break;
        }
        rest = &rest[padded..];
    }
    Err(Anomaly::TruncatedLinkHeader)
}

/// IP and TCP, through etherparse's lax slicing so a cut frame keeps what it has.
fn network(ether_type: u16, data: &[u8], frame: &Frame<'_>) -> Decoded {
    if ether_type != ETHERTYPE_IPV4 && ether_type != ETHERTYPE_IPV6 {
        return Decoded::NotTcp;
    }
    let sliced = LaxSlicedPacket::from_ether_type(EtherType(ether_type), data);
    let Some(net) = &sliced.net else {
        return Decoded::Anomaly(stop_anomaly(&sliced).unwrap_or(Anomaly::BadIpHeader));
    };
    // Length of the IP payload on the wire, from the IP header: the declared
    // length less the headers before the payload (options, IPv6 extensions).
    // A declared length of 0 (TCP segmentation offload, jumbograms): trust the capture.
    let (src_ip, dst_ip, ip_payload, declared): (IpAddr, IpAddr, _, u32) = match net {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            let (src, dst) = (h.source_addr().into(), h.destination_addr().into());
            (src, dst, v4.payload(), u32::from(h.total_len()))
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            let (src, dst) = (h.source_addr().into(), h.destination_addr().into());
            // The IPv6 payload length counts from the end of the 40-byte header.
            let declared = match h.payload_length() {
                0 => 0,
                n => u32::from(n) + 40,
            };
            (src, dst, v6.payload(), declared)
        }
        LaxNetSlice::Arp(_) => return Decoded::NotTcp,
    };
    let before_payload = offset_in(data, ip_payload.payload) as u32;
    let wire_ip_payload_len = (declared != 0).then(|| declared.saturating_sub(before_payload));
    if ip_payload.fragmented {
        return Decoded::Anomaly(Anomaly::IpFragment);
    }
    if ip_payload.ip_number != etherparse::IpNumber::TCP {
        return match stop_anomaly(&sliced) {
            Some(a @ Anomaly::TruncatedIpv6Extension) => Decoded::Anomaly(a),
            _ => Decoded::NotTcp,
        };
    }
    let fields = match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => TcpFields {
            src_port: tcp.source_port(),
            dst_port: tcp.destination_port(),
            seq: tcp.sequence_number(),
            ack: tcp.acknowledgment_number(),
            flags: tcp.header_slice()[13],
            window: tcp.window_size(),
            header_len: u32::from(tcp.data_offset()) * 4,
            payload: tcp.payload(),
        },
        _ => match fixed_tcp_header(ip_payload.payload) {
            // The 20-byte fixed header is there; only options were cut (as
            // tshark, keep the segment: its flags and sequence numbers are facts).
            Some(fields) => fields,
            None => {
                return Decoded::Anomaly(
                    stop_anomaly(&sliced).unwrap_or(Anomaly::TruncatedTcpHeader),
                )
            }
        },
    };
    let header_len = fields.header_len;
    let captured_payload = fields.payload;
    let payload_len = match wire_ip_payload_len {
        Some(wire) => wire.saturating_sub(header_len),
        None => captured_payload.len() as u32,
    };
    // Where the payload sits in the frame, for the stream parsers.
    let start = offset_in(frame.data, captured_payload);
    // IP padding (Ethernet minimum frame size) is not payload.
    let kept = (captured_payload.len() as u32).min(payload_len) as usize;
    Decoded::Tcp(Segment {
        ts: frame.ts,
        src: SocketAddr::new(src_ip, fields.src_port),
        dst: SocketAddr::new(dst_ip, fields.dst_port),
        seq: SeqNumber(fields.seq),
        ack: SeqNumber(fields.ack),
        flags: TcpFlags(fields.flags & 0x3f),
        window: fields.window,
        payload_len,
        payload: start..start + kept,
        frame_len: frame.wirelen,
    })
}

/// The TCP header fields we keep, however they were parsed.
struct TcpFields<'a> {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    header_len: u32,
    payload: &'a [u8],
}

/// RFC 9293 §3.1: the fixed 20 bytes of a TCP header whose options the
/// snaplen cut. `None` if even those are missing or the data offset is
/// impossible.
fn fixed_tcp_header(b: &[u8]) -> Option<TcpFields<'_>> {
    let h = b.get(..20)?;
    let header_len = u32::from(h[12] >> 4) * 4;
    if header_len < 20 {
        return None;
    }
    Some(TcpFields {
        src_port: be16(&h[0..2]),
        dst_port: be16(&h[2..4]),
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        flags: h[13],
        window: be16(&h[14..16]),
        header_len,
        payload: b.get(header_len as usize..).unwrap_or(&b[b.len()..]),
    })
}

/// Offset of `inner` within `outer`; `inner` must be a sub-slice of it.
fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

fn stop_anomaly(sliced: &LaxSlicedPacket<'_>) -> Option<Anomaly> {
    use etherparse::err::Layer;
    let (_, layer) = sliced.stop_err.as_ref()?;
    Some(match layer {
        Layer::Ipv4Header | Layer::Ipv6Header | Layer::IpHeader => Anomaly::TruncatedIpHeader,
        Layer::TcpHeader => Anomaly::TruncatedTcpHeader,
        Layer::Ipv6ExtHeader
        | Layer::Ipv6HopByHopHeader
        | Layer::Ipv6DestOptionsHeader
        | Layer::Ipv6RouteHeader
        | Layer::Ipv6FragHeader
        | Layer::IpAuthHeader => Anomaly::TruncatedIpv6Extension,
        _ => Anomaly::BadIpHeader,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{ether, frame, ipv4, ipv4_proto, ipv6, tcp};
    use crate::wire::TcpFlags as F;

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];

    fn seg(d: Decoded) -> Segment {
        match d {
            Decoded::Tcp(s) => s,
            other => panic!("expected a TCP segment, got {other:?}"),
        }
    }

    #[test]
    fn ethernet_ipv4_tcp_decodes_every_field() {
        let data = ether(
            0x0800,
            &[],
            &ipv4(A, B, &tcp(40000, 80, 7, 9, F::ACK | F::PSH, b"GET")),
        );
        let s = seg(decode(LinkType::ETHERNET, &frame(5, &data)));
        assert_eq!(s.src.to_string(), "10.0.0.1:40000");
        assert_eq!(s.dst.to_string(), "10.0.0.2:80");
        assert_eq!((s.seq.0, s.ack.0), (7, 9));
        assert!(s.flags.ack() && s.flags.psh() && !s.flags.syn());
        assert_eq!(s.payload_len, 3);
        assert_eq!(&data[s.payload.clone()], b"GET");
        assert_eq!(s.frame_len, data.len() as u32);
    }

    #[test]
    fn vlan_and_qinq_tags_are_skipped() {
        for tags in [&[100u16][..], &[100, 200][..], &[1, 2, 3][..]] {
            let data = ether(0x0800, tags, &ipv4(A, B, &tcp(1, 2, 0, 0, F::SYN, b"")));
            assert!(seg(decode(LinkType::ETHERNET, &frame(0, &data)))
                .flags
                .is_syn_only());
        }
    }

    #[test]
    fn truncated_ipv4_header_is_an_anomaly() {
        let data = ether(0x0800, &[], &ipv4(A, B, &tcp(1, 2, 0, 0, F::SYN, b"")));
        let cut = &data[..14 + 12];
        assert_eq!(
            decode(LinkType::ETHERNET, &frame(0, cut)),
            Decoded::Anomaly(Anomaly::TruncatedIpHeader)
        );
    }

    #[test]
    fn truncated_tcp_fixed_header_is_an_anomaly() {
        let data = ipv4(A, B, &tcp(1, 2, 0, 0, F::SYN, b""));
        assert_eq!(
            decode(LinkType::RAW, &frame(0, &data[..20 + 10])),
            Decoded::Anomaly(Anomaly::TruncatedTcpHeader)
        );
    }

    #[test]
    fn tcp_options_cut_by_snaplen_still_give_a_segment() {
        let mut t = tcp(1, 2, 42, 0, F::SYN, &[2, 4, 5, 0xb4, 1, 1, 1, 1]);
        t[12] = 7 << 4; // 28-byte header: 8 bytes of options
        let data = ipv4(A, B, &t);
        let s = seg(decode(LinkType::RAW, &frame(0, &data[..20 + 24])));
        assert_eq!(s.seq.0, 42);
        assert!(s.flags.is_syn_only());
        assert_eq!(s.payload_len, 0);
    }

    #[test]
    fn payload_length_comes_from_the_ip_header_when_snaplen_cut() {
        let data = ipv4(A, B, &tcp(1, 2, 0, 0, F::ACK, &[b'x'; 1000]));
        let cut = &data[..20 + 20 + 100];
        let f = Frame {
            ts: crate::wire::Timestamp(0),
            caplen: cut.len() as u32,
            wirelen: data.len() as u32,
            data: cut,
        };
        let s = seg(decode(LinkType::RAW, &f));
        assert_eq!(s.payload_len, 1000);
        assert_eq!(s.payload.len(), 100);
        assert!(s.payload_truncated());
        assert_eq!(s.frame_len, 1040);
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut data = ether(0x0800, &[], &ipv4(A, B, &tcp(1, 2, 0, 0, F::ACK, b"")));
        data.extend_from_slice(&[0; 6]); // padded to the 60-byte minimum
        let s = seg(decode(LinkType::ETHERNET, &frame(0, &data)));
        assert_eq!(s.payload_len, 0);
        assert!(s.payload.is_empty());
    }

    #[test]
    fn ipv6_extension_headers_are_skipped() {
        let a6 = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let data = ipv6(a6, a6, true, &tcp(5000, 8080, 1, 0, F::ACK, b"hi"));
        let s = seg(decode(LinkType::IPV6, &frame(0, &data)));
        assert_eq!(s.src.to_string(), "[::1]:5000");
        assert_eq!(s.payload_len, 2);
        assert_eq!(&data[s.payload.clone()], b"hi");
    }

    #[test]
    fn linux_sll2_header_is_parsed_here() {
        let ip = ipv4(A, B, &tcp(1, 2, 0, 0, F::SYN, b""));
        let mut data = vec![0x08, 0x00, 0, 0, 0, 0, 0, 1, 0x03, 0x04, 0, 6];
        data.extend_from_slice(&[0; 8]);
        data.extend_from_slice(&ip);
        assert!(seg(decode(LinkType::LINUX_SLL2, &frame(0, &data)))
            .flags
            .syn());
        assert_eq!(
            decode(LinkType::LINUX_SLL2, &frame(0, &data[..10])),
            Decoded::Anomaly(Anomaly::TruncatedLinkHeader)
        );
    }

    #[test]
    fn linux_sll_header_is_parsed_here() {
        let ip = ipv4(A, B, &tcp(1, 2, 0, 0, F::SYN, b""));
        let mut data = vec![0, 0, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        data.extend_from_slice(&ip);
        assert!(seg(decode(LinkType::LINUX_SLL, &frame(0, &data)))
            .flags
            .syn());
    }

    #[test]
    fn bsd_null_and_loop_families_in_either_byte_order() {
        let ip = ipv4(A, B, &tcp(1, 2, 0, 0, F::SYN, b""));
        let a6 = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let ip6 = ipv6(a6, a6, false, &tcp(1, 2, 0, 0, F::SYN, b""));
        for (link, family, packet) in [
            (LinkType::NULL, 2u32.to_le_bytes(), &ip),
            (LinkType::NULL, 2u32.to_be_bytes(), &ip),
            (LinkType::NULL, 30u32.to_le_bytes(), &ip6),
            (LinkType::LOOP, 2u32.to_be_bytes(), &ip),
        ] {
            let mut data = family.to_vec();
            data.extend_from_slice(packet);
            assert!(
                matches!(decode(link, &frame(0, &data)), Decoded::Tcp(_)),
                "{link:?} {family:?}"
            );
        }
        let mut odd = 99u32.to_le_bytes().to_vec();
        odd.extend_from_slice(&ip);
        assert_eq!(
            decode(LinkType::NULL, &frame(0, &odd)),
            Decoded::Anomaly(Anomaly::UnknownAddressFamily)
        );
    }

    #[test]
    fn nflog_payload_tlv_is_found() {
        let ip = ipv4(A, B, &tcp(1, 2, 0, 0, F::SYN, b""));
        let mut data = vec![2, 0, 0, 0];
        // An NFULA_PREFIX TLV (type 10, 5 bytes, padded to 8), then NFULA_PAYLOAD.
        data.extend_from_slice(&[5, 0, 10, 0, b'x', 0, 0, 0]);
        data.extend_from_slice(&((4 + ip.len()) as u16).to_le_bytes());
        data.extend_from_slice(&9u16.to_le_bytes());
        data.extend_from_slice(&ip);
        assert!(seg(decode(LinkType::NFLOG, &frame(0, &data))).flags.syn());
    }

    #[test]
    fn pppoe_and_mpls_are_unwrapped() {
        let ip = ipv4(A, B, &tcp(1, 2, 0, 0, F::SYN, b""));
        let mut pppoe = vec![0x11, 0, 0x12, 0x34, 0, 0, 0x00, 0x21];
        pppoe.extend_from_slice(&ip);
        assert!(matches!(
            decode(LinkType::ETHERNET, &frame(0, &ether(0x8864, &[], &pppoe))),
            Decoded::Tcp(_)
        ));
        let mut mpls = vec![0, 0x01, 0x00, 64, 0, 0x02, 0x01, 64]; // two labels, S bit on the second
        mpls.extend_from_slice(&ip);
        assert!(matches!(
            decode(LinkType::ETHERNET, &frame(0, &ether(0x8847, &[], &mpls))),
            Decoded::Tcp(_)
        ));
    }

    #[test]
    fn non_tcp_is_counted_as_such() {
        let udp = ipv4_proto(A, B, 17, &[0, 53, 0, 53, 0, 8, 0, 0]);
        assert_eq!(decode(LinkType::RAW, &frame(0, &udp)), Decoded::NotTcp);
        assert_eq!(
            decode(LinkType::ETHERNET, &frame(0, &ether(0x0806, &[], &[0; 28]))),
            Decoded::NotTcp
        );
        assert_eq!(
            decode(LinkType(147), &frame(0, &udp)),
            Decoded::Anomaly(Anomaly::UnsupportedLinkType(147))
        );
    }

    #[test]
    fn garbage_never_panics() {
        // A small deterministic generator: every link type, every length.
        let mut x: u32 = 0x1234_5678;
        let mut buf = Vec::new();
        for len in 0..300 {
            buf.clear();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf.push(x as u8);
            }
            if len > 14 {
                buf[12] = 0x08; // make some of it reach the IP decoder
                buf[13] = 0x00;
                buf[14] = 0x45;
            }
            for link in [0, 1, 12, 101, 108, 113, 228, 229, 239, 276] {
                let _ = decode(LinkType(link), &frame(0, &buf));
            }
        }
    }
}
