//! `conntrace sockets [ADDRESS[:PORT]]`: the kernel's TCP sockets by state,
//! as `ss -tan` lists them, read through netlink sock_diag; for the sockets
//! to one server, TIME_WAIT counted against the ephemeral port range so
//! that port exhaustion is seen coming, and CLOSE_WAIT named (sockets the
//! peer closed that the program never closed).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::*;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

use crate::report::{PeerSockets, SocketsReport};

/// One TCP socket as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: &'static str,
}

/// `ss`'s names for the kernel's TCP states.
fn state_name(state: u8) -> &'static str {
    match state {
        TCP_ESTABLISHED => "ESTAB",
        TCP_SYN_SENT => "SYN-SENT",
        TCP_SYN_RECV => "SYN-RECV",
        TCP_FIN_WAIT1 => "FIN-WAIT-1",
        TCP_FIN_WAIT2 => "FIN-WAIT-2",
        TCP_TIME_WAIT => "TIME-WAIT",
        TCP_CLOSE => "UNCONN",
        TCP_CLOSE_WAIT => "CLOSE-WAIT",
        TCP_LAST_ACK => "LAST-ACK",
        TCP_LISTEN => "LISTEN",
        TCP_CLOSING => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// Every TCP socket of this network namespace, IPv4 and IPv6.
pub fn tcp_sockets() -> io::Result<Vec<TcpSocket>> {
    let mut out = Vec::new();
    for family in [AF_INET, AF_INET6] {
        dump(family, &mut out)?;
    }
    Ok(out)
}

fn dump(family: u8, out: &mut Vec<TcpSocket>) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf, 0)?;
    let mut receive = vec![0u8; 1 << 16];
    loop {
        let size = socket.recv(&mut &mut receive[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let message = <NetlinkMessage<SockDiagMessage>>::deserialize(&receive[offset..size])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let id = &r.header.socket_id;
                    out.push(TcpSocket {
                        local: SocketAddr::new(id.source_address, id.source_port),
                        remote: SocketAddr::new(id.destination_address, id.destination_port),
                        state: state_name(r.header.state),
                    });
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("sock_diag: {e:?}")));
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// The local ports the kernel picks from (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// What matches: the server end of client-side sockets.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl std::str::FromStr for Peer {
    type Err = String;
    fn from_str(s: &str) -> Result<Peer, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Peer {
                ip: a.ip(),
                port: Some(a.port()),
            });
        }
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>()
            .map(|ip| Peer { ip, port: None })
            .map_err(|_| format!("{s:?} is not an ADDRESS or ADDRESS:PORT"))
    }
}

/// The sockets matching `peer` (every TCP socket without one), counted.
pub fn report(sockets: &[TcpSocket], peer: Option<Peer>, filter: Option<String>) -> SocketsReport {
    report_of(sockets, peer.as_slice(), filter)
}

/// The sockets whose remote end is one of `peers` (every TCP socket when
/// there are none), counted per server.
pub fn report_of(sockets: &[TcpSocket], peers: &[Peer], filter: Option<String>) -> SocketsReport {
    let range = ephemeral_range();
    let matches = |s: &TcpSocket| {
        peers.is_empty()
            || peers
                .iter()
                .any(|p| s.remote.ip() == p.ip && p.port.is_none_or(|port| s.remote.port() == port))
    };
    let peer = peers.first();
    let chosen: Vec<&TcpSocket> = sockets.iter().filter(|s| matches(s)).collect();
    let mut by_state = BTreeMap::new();
    for s in &chosen {
        *by_state.entry(s.state).or_insert(0) += 1;
    }
    let mut servers: BTreeMap<SocketAddr, PeerSockets> = BTreeMap::new();
    if peer.is_some() {
        for s in &chosen {
            let e = servers.entry(s.remote).or_insert_with(|| PeerSockets {
                server: s.remote,
                by_state: BTreeMap::new(),
                time_wait_ports: 0,
                ephemeral_ports: range.map(|(lo, hi)| u64::from(hi.saturating_sub(lo)) + 1),
                close_wait: 0,
            });
            *e.by_state.entry(s.state).or_insert(0) += 1;
            let ephemeral = range.is_some_and(|(lo, hi)| (lo..=hi).contains(&s.local.port()));
            if s.state == "TIME-WAIT" && ephemeral {
                e.time_wait_ports += 1;
            }
            if s.state == "CLOSE-WAIT" {
                e.close_wait += 1;
            }
        }
    }
    SocketsReport {
        filter,
        total: chosen.len() as u64,
        by_state,
        ephemeral_range: range,
        servers: servers.into_values().collect(),
    }
}
