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
    if ether_type == ETHERTYPE_MPLS || ether_type == ETHERTYPE_MPLS_MULTICAST {
        return mpls(rest);
    }
    Ok((ether_type, rest))
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
    let tcp = match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp,
        _ => return Decoded::Anomaly(stop_anomaly(&sliced).unwrap_or(Anomaly::TruncatedTcpHeader)),
    };
    let header_len = u32::from(tcp.data_offset()) * 4;
    let captured_payload = tcp.payload();
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
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: SeqNumber(tcp.sequence_number()),
        ack: SeqNumber(tcp.acknowledgment_number()),
        flags: TcpFlags(tcp.header_slice()[13] & 0x3f),
        window: tcp.window_size(),
        payload_len,
        payload: start..start + kept,
        frame_len: frame.wirelen,
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
