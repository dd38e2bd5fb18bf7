//! Connection tracking: one [`Connection`] per TCP stream, numbered exactly as
//! Wireshark numbers `tcp.stream`, with per-side SYN/FIN/RST counts, Zeek's
//! `conn_state` and `history`, and the application analyser fed in order.
//!
//! Everything here is a pure state machine over decoded segments: no I/O, no
//! locks, no clock (time is the packet's timestamp). The [`FlowTable`] holds
//! the connections open now and reports what happens as [`FlowEvent`]s: a
//! stream opened, a request found or answered, a first FIN or RST, and a
//! connection finalised, with its record, when it is over ([`Expiry`]: closed
//! plus a grace period, idle, or an unanswered SYN). A finalised connection
//! leaves a small tombstone so that the numbering stays Wireshark's, so
//! memory grows with the connections open at once, not with the capture.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use crate::http::{h1, held_at, AppProtocol, ConnectionAnalyzer, HttpExchange, HttpSignals};
use crate::report::{
    CloseKind, ConnState, ConnectionRecord, Orientation, RequestRecord, Role, SeenIn, TrackerStats,
};
use crate::wire::{Direction, Segment, SeqNumber, Timestamp};

/// Both directions of a connection map to one key: the lower address first
/// (Zeek's `InitTuple` with a `flipped` flag, Wireshark's conversation key).
/// Packed (38 bytes against two `SocketAddr`'s 64): the table holds one per
/// connection and tombstone, and hashes one per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    low: Address,
    high: Address,
}

/// One end of a [`FlowKey`], ordered as `SocketAddr` orders: IPv4 before
/// IPv6, then the address, then the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Address {
    v6: bool,
    ip: [u8; 16],
    port: u16,
}

impl Address {
    fn of(addr: SocketAddr) -> Address {
        match addr {
            SocketAddr::V4(a) => {
                let mut ip = [0; 16];
                ip[..4].copy_from_slice(&a.ip().octets());
                Address {
                    v6: false,
                    ip,
                    port: a.port(),
                }
            }
            SocketAddr::V6(a) => Address {
                v6: true,
                ip: a.ip().octets(),
                port: a.port(),
            },
        }
    }

    fn socket_addr(&self) -> SocketAddr {
        if self.v6 {
            SocketAddr::from((self.ip, self.port))
        } else {
            let [a, b, c, d, ..] = self.ip;
            SocketAddr::from(([a, b, c, d], self.port))
        }
    }
}

impl FlowKey {
    /// The key of a segment from `src` to `dst`, and which side sent it.
    fn of(src: SocketAddr, dst: SocketAddr) -> (FlowKey, Side) {
        let (src, dst) = (Address::of(src), Address::of(dst));
        if src <= dst {
            (
                FlowKey {
                    low: src,
                    high: dst,
                },
                Side::Low,
            )
        } else {
            (
                FlowKey {
                    low: dst,
                    high: src,
                },
                Side::High,
            )
        }
    }

    fn addr(&self, side: Side) -> SocketAddr {
        match side {
            Side::Low => self.low.socket_addr(),
            Side::High => self.high.socket_addr(),
        }
    }
}

/// The two sides of a [`FlowKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Sent by `FlowKey::low`.
    Low = 0,
    High = 1,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Low => Side::High,
            Side::High => Side::Low,
        }
    }
}

/// Zeek's TCP endpoint states (`TCP_ENDPOINT_*`), which `conn_state` summarises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum EndpointState {
    #[default]
    Inactive,
    SynSent,
    SynAckSent,
    /// Active, but its SYN was not seen.
    Partial,
    Established,
    Closed,
    Reset,
}

/// Zeek history bits, one per letter and side (`HIST_*` in Zeek's Conn.h).
mod hist {
    pub const SYN: u32 = 1 << 0;
    pub const FIN: u32 = 1 << 1;
    pub const RST: u32 = 1 << 2;
    pub const ACK: u32 = 1 << 3;
    pub const DATA: u32 = 1 << 4;
    pub const MULTI_FLAG: u32 = 1 << 5;
    pub const FIN_RST: u32 = 1 << 6;
}

/// What one side of a connection sent.
#[derive(Debug, Clone, Default)]
struct Endpoint {
    packets: u64,
    bytes: u64,
    payload: u64,
    syn: u32,
    syn_ack: u32,
    fin: u32,
    rst: u32,
    state: EndpointState,
    /// The sequence number of this side's first packet (its SYN's, if the SYN
    /// came first): Wireshark's `base_seq`, which decides port reuse.
    base_seq: Option<SeqNumber>,
    /// The end of the highest sequence range sent so far (for retransmissions).
    max_seq_end: Option<SeqNumber>,
    hist_seen: u32,
    last_syn: Option<SeqNumber>,
    last_fin: Option<SeqNumber>,
    last_rst: Option<SeqNumber>,
    retransmits: u64,
    zero_windows: u64,
    /// The end of this side's data as far as the capture saw it without a
    /// hole (SYN and FIN included), and ranges seen beyond a hole, for Zeek's
    /// content-gap letter: data the peer acknowledged that the capture missed.
    seen_end: Option<SeqNumber>,
    seen_ahead: Vec<(SeqNumber, SeqNumber)>,
    gaps: u64,
    /// The most recent SYN (tshark measures the initial RTT from it).
    last_syn_at: Option<Timestamp>,
}

/// One TCP connection (one Wireshark `tcp.stream`).
#[derive(Debug)]
pub struct Connection {
    stream: u64,
    key: FlowKey,
    /// The side that is the client.
    client: Side,
    orientation: Orientation,
    first_seen: Timestamp,
    last_seen: Timestamp,
    ends: [Endpoint; 2],
    history: String,
    /// The first side to send a FIN or RST, which, and when.
    closed_by: Option<(Side, CloseKind, Timestamp)>,
    handshake_rtt_ms: Option<f64>,
    /// The server's ISN, to recognise the client's ACK of the SYN+ACK.
    server_isn: Option<SeqNumber>,
    app: AppState,
    /// The first FIN or RST was handed out as a [`FlowEvent::Closed`].
    close_reported: bool,
    /// The first content gap was handed out as a [`FlowEvent::Lossy`].
    loss_reported: bool,
    /// Requests handed out as [`FlowEvent::Request`] so far, and the ones
    /// among them whose response is not complete yet (with whether its
    /// first byte was handed out as [`FlowEvent::Answered`]).
    requests_reported: usize,
    awaiting_answer: VecDeque<(usize, bool)>,
    /// When the table's one live deadline entry for this connection is due.
    scheduled: Timestamp,
    /// Closed for good: an RST, or a FIN from both sides, and no SYN since
    /// (a SYN retransmitted with its ISN after an RST goes on in the stream).
    ended: bool,
}

/// The application analyser while the connection is open, its results after.
#[derive(Debug)]
enum AppState {
    Disabled,
    /// Only bare SYNs so far: the analyser is made at the first other
    /// segment and given the first SYN then, so that a SYN nobody answers
    /// (a scan, a flood) costs no analyser.
    Deferred(Option<(Direction, Segment)>),
    Open(Box<ConnectionAnalyzer>),
    Done(Box<AppResult>),
}

#[derive(Debug)]
struct AppResult {
    protocol: AppProtocol,
    tls_sni: Option<String>,
    alpn: Vec<String>,
    exchanges: Vec<HttpExchange>,
    /// Requests handed out before the close ([`FlowEvent::Settled`]).
    drained: usize,
    signals: HttpSignals,
}

/// The requests a connection holds: its first, and those after the ones
/// already handed out, indexed as all of them are.
#[derive(Debug, Clone, Copy)]
struct Held<'a> {
    list: &'a [HttpExchange],
    drained: usize,
}

impl<'a> Held<'a> {
    /// Requests seen, held or handed out.
    fn count(self) -> usize {
        self.list.len() + self.drained
    }

    fn get(self, idx: usize) -> Option<&'a HttpExchange> {
        self.list.get(held_at(idx, self.drained)?)
    }
}

impl AppState {
    /// What the analyser found so far, open or settled; `None` when the
    /// bytes are not analysed or only bare SYNs came.
    fn findings(&self) -> Option<(AppProtocol, Held<'_>, &HttpSignals)> {
        match self {
            AppState::Open(a) => {
                let held = Held {
                    list: a.exchanges(),
                    drained: a.drained(),
                };
                Some((a.protocol(), held, a.signals()))
            }
            AppState::Done(r) => {
                let held = Held {
                    list: &r.exchanges,
                    drained: r.drained,
                };
                Some((r.protocol, held, &r.signals))
            }
            AppState::Disabled | AppState::Deferred(_) => None,
        }
    }
}

impl AppResult {
    fn from(mut analyzer: ConnectionAnalyzer) -> AppResult {
        analyzer.finish();
        let mut exchanges = analyzer.take_exchanges();
        // Held through the close grace: no room to spare.
        exchanges.shrink_to_fit();
        let (signals, tls_sni, alpn) = analyzer.take_findings();
        AppResult {
            protocol: analyzer.protocol(),
            tls_sni,
            alpn,
            exchanges,
            drained: analyzer.drained(),
            signals,
        }
    }
}

impl Endpoint {
    /// Extend what the capture saw of this side's sequence space.
    fn note_seen(&mut self, seg: &Segment) {
        /// Ranges kept beyond a hole; more means the hole is real.
        const AHEAD_CAP: usize = 16;
        let start = seg.seq;
        // Payload the snaplen cut was not seen either (Zeek counts it as a gap).
        let captured = (seg.payload.len() as u32).min(seg.payload_len);
        let data_end = seg.seq + captured + u32::from(seg.flags.syn());
        let Some(mut seen) = self.seen_end else {
            self.seen_end = Some(data_end + u32::from(seg.flags.fin()));
            return;
        };
        if start > seen {
            if self.seen_ahead.len() < AHEAD_CAP {
                self.seen_ahead.push((start, data_end));
            }
            return;
        }
        if data_end > seen {
            seen = data_end;
        }
        // Ranges seen out of order that now join up.
        while let Some(i) = self.seen_ahead.iter().position(|&(s, _)| s <= seen) {
            let (_, end) = self.seen_ahead.swap_remove(i);
            if end > seen {
                seen = end;
            }
        }
        // A FIN right after the data seen occupies one more number.
        if seg.flags.fin() && data_end >= seen {
            seen = data_end + 1;
        }
        self.seen_end = Some(seen);
    }
}

impl Connection {
    fn new(
        stream: u64,
        key: FlowKey,
        first: &Segment,
        sender: Side,
        payload: &[u8],
        http: bool,
    ) -> Connection {
        let (client, orientation) = if first.flags.is_syn_only() {
            (sender, Orientation::Syn)
        } else if first.flags.is_syn_ack() {
            (sender.other(), Orientation::SynAck)
        } else if let Some(client) = Self::client_by_payload(first, sender, payload) {
            (client, Orientation::Payload)
        } else {
            (Self::client_by_port(first, sender), Orientation::Port)
        };
        // Zeek takes the first packet's sender as originator and flips the
        // connection, marking its history with '^', when that was the server.
        let history = if sender == client {
            String::new()
        } else {
            "^".to_string()
        };
        Connection {
            stream,
            key,
            client,
            orientation,
            first_seen: first.ts,
            last_seen: first.ts,
            ends: [Endpoint::default(), Endpoint::default()],
            history,
            closed_by: None,
            handshake_rtt_ms: None,
            server_isn: None,
            close_reported: false,
            loss_reported: false,
            requests_reported: 0,
            awaiting_answer: VecDeque::new(),
            scheduled: Timestamp(i64::MAX),
            ended: false,
            app: if http {
                AppState::Deferred(None)
            } else {
                AppState::Disabled
            },
        }
    }

    /// With no handshake seen and ports that do not tell (both below 1024 or
    /// both above, as a server on an ephemeral port has): a first segment
    /// that starts with an HTTP/1 request line comes from the client, one
    /// that starts with a status line from the server.
    fn client_by_payload(first: &Segment, sender: Side, payload: &[u8]) -> Option<Side> {
        if (first.src.port() < 1024) != (first.dst.port() < 1024) {
            return None;
        }
        let line = &payload[..payload.iter().position(|&b| b == b'\n')?];
        if h1::is_request_line(line) {
            Some(sender)
        } else if h1::is_status_line(line) {
            Some(sender.other())
        } else {
            None
        }
    }

    /// With no handshake seen: a port below 1024 facing one above is the
    /// server's; otherwise the lower port; with equal ports, the destination.
    fn client_by_port(first: &Segment, sender: Side) -> Side {
        let (sp, dp) = (first.src.port(), first.dst.port());
        let server_is_dst = match (sp < 1024, dp < 1024) {
            (true, false) => false,
            (false, true) => true,
            _ => dp <= sp,
        };
        if server_is_dst {
            sender
        } else {
            sender.other()
        }
    }

    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// The other side is the client after all: Zeek flips the connection,
    /// swapping the case of the history's letters so far, and marks it
    /// with '^'.
    fn flip(&mut self) {
        self.history = self
            .history
            .chars()
            .map(|c| {
                if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect();
        // A '^' first said the first packet came from the server: no more.
        if self.history.starts_with('^') {
            self.history.remove(0);
        } else {
            self.history.push('^');
        }
        self.client = self.client.other();
    }

    fn direction(&self, sender: Side) -> Direction {
        if sender == self.client {
            Direction::ToServer
        } else {
            Direction::ToClient
        }
    }

    /// Account one segment sent by `sender`; `payload` is its captured payload.
    fn on_segment(&mut self, seg: &Segment, sender: Side, payload: &[u8]) {
        self.last_seen = self.last_seen.max(seg.ts);
        if self.orientation == Orientation::Port && seg.flags.is_syn_ack() {
            // A SYN+ACK settles who the server is.
            if self.client == sender {
                self.flip();
            }
            self.orientation = Orientation::SynAck;
        }
        let nothing_carried = self.ends.iter().all(|e| e.payload == 0);
        if self.orientation == Orientation::Port && nothing_carried && !payload.is_empty() {
            // The first bytes, after segments that carried none (the
            // handshake lost), may tell from a request or status line.
            if let Some(client) = Self::client_by_payload(seg, sender, payload) {
                if client != self.client {
                    self.flip();
                    // The analyser saw no byte yet: made again, the right
                    // way round, at this segment.
                    if matches!(self.app, AppState::Open(_)) {
                        self.app = AppState::Deferred(None);
                    }
                }
                self.orientation = Orientation::Payload;
            }
        }
        let is_client = sender == self.client;
        let flags = seg.flags;
        {
            let end = &mut self.ends[sender as usize];
            end.packets += 1;
            end.bytes += u64::from(seg.frame_len);
            end.payload += u64::from(seg.payload_len);
            // Wireshark's base_seq: a SYN's own number, else one before the
            // first byte seen (relative sequence numbers then start at 1).
            if end.base_seq.is_none() {
                end.base_seq = Some(if flags.syn() {
                    seg.seq
                } else {
                    seg.seq + u32::MAX
                });
            }
            if flags.is_syn_only() {
                end.syn += 1;
                end.last_syn_at = Some(seg.ts);
            }
            if flags.is_syn_ack() {
                end.syn_ack += 1;
                self.server_isn.get_or_insert(seg.seq);
            }
        }
        if flags.ack() {
            // An ACK tells the peer's sequence numbers: Wireshark takes the
            // peer's base_seq from the first one (one before the byte it asks
            // for) when nothing the peer sent came first. A SYN from the peer
            // that does not fit it then starts a new stream.
            let peer = &mut self.ends[sender.other() as usize];
            peer.base_seq.get_or_insert(seg.ack + u32::MAX);
        }
        {
            let end = &mut self.ends[sender as usize];
            if flags.fin() {
                end.fin += 1;
            }
            if flags.rst() {
                end.rst += 1;
            }
        }
        if (flags.fin() || flags.rst()) && self.closed_by.is_none() {
            let how = if flags.rst() {
                CloseKind::Rst
            } else {
                CloseKind::Fin
            };
            self.closed_by = Some((sender, how, seg.ts));
        }
        if flags.syn() {
            self.ended = false;
        }
        if flags.rst() || (flags.fin() && self.ends.iter().all(|e| e.fin > 0)) {
            self.ended = true;
        }
        self.update_handshake_rtt(seg, sender);
        self.update_history(seg, sender, is_client);
        self.note_content_gap(seg, sender);
        self.ends[sender as usize].note_seen(seg);
        self.update_state(seg, sender);

        let dir = self.direction(sender);
        match &mut self.app {
            AppState::Deferred(syn)
                if seg.flags.is_syn_only() && seg.payload_len == 0 && !seg.flags.fin() =>
            {
                // A retransmitted SYN tells the analyser nothing more.
                syn.get_or_insert_with(|| (dir, seg.clone()));
            }
            AppState::Deferred(_) => {
                let mut analyzer = self.start_app();
                analyzer.on_segment(dir, seg, payload);
                self.app = AppState::Open(analyzer);
            }
            AppState::Open(analyzer) => analyzer.on_segment(dir, seg, payload),
            AppState::Disabled | AppState::Done(_) => {}
        }
        // Settle the analyser once both sides closed. Not at an RST: the same
        // stream can go on after one (an RST answering a stray ACK, then the
        // SYN retransmitted with its ISN, which tshark keeps in the stream);
        // an RST'd analyser is settled at the end like any open one.
        let [a, b] = &self.ends;
        if a.fin > 0 && b.fin > 0 {
            self.settle_app();
        }
    }

    /// The most recent SYN to the client's ACK of the SYN+ACK. tshark's
    /// `tcp.analysis.initial_rtt` agrees on completed handshakes; it also takes
    /// the first bare ACK or RST+ACK of either side (a refused or bogus answer),
    /// where we report no handshake.
    fn update_handshake_rtt(&mut self, seg: &Segment, sender: Side) {
        if self.handshake_rtt_ms.is_some() || sender != self.client || seg.flags.syn() {
            return;
        }
        let (Some(syn_at), Some(isn)) = (self.ends[sender as usize].last_syn_at, self.server_isn)
        else {
            return;
        };
        if seg.flags.ack() && seg.ack == isn + 1 {
            self.handshake_rtt_ms = Some(seg.ts.millis_since(syn_at));
        }
    }

    /// Zeek's 'G' (content gap): the peer acknowledged data of `sender`'s peer
    /// that the capture never saw. Repeats at 1, 10, 100, ... gaps.
    fn note_content_gap(&mut self, seg: &Segment, sender: Side) {
        // A FIN beyond the data seen: what came before it was missed.
        if seg.flags.fin() {
            let me = &mut self.ends[sender as usize];
            if let Some(seen) = me.seen_end {
                if seg.seq > seen {
                    me.seen_end = Some(seg.seq);
                    me.seen_ahead.retain(|&(_, end)| end > seg.seq);
                    self.count_gap(sender);
                }
            }
        }
        // The peer acknowledged data the capture never saw.
        if seg.flags.ack() {
            let peer = &mut self.ends[sender.other() as usize];
            if let Some(seen) = peer.seen_end {
                if seg.ack > seen {
                    peer.seen_end = Some(seg.ack);
                    peer.seen_ahead.retain(|&(_, end)| end > seg.ack);
                    self.count_gap(sender.other());
                }
            }
        }
    }

    fn count_gap(&mut self, side: Side) {
        let end = &mut self.ends[side as usize];
        end.gaps += 1;
        if is_scaled_count(end.gaps) {
            self.history
                .push(if side == self.client { 'G' } else { 'g' });
        }
    }

    /// Zeek's history letters (TCP_SessionAdapter's `update_history`): upper
    /// case for the client, lower for the server; each once per side, except a
    /// SYN/FIN/RST repeated with a new sequence number, and T (retransmission)
    /// and W (zero window), which repeat at 1, 10, 100, ... occurrences.
    fn update_history(&mut self, seg: &Segment, sender: Side, is_client: bool) {
        let flags = seg.flags;
        let bits = u8::from(flags.syn()) + u8::from(flags.fin()) + u8::from(flags.rst());
        let end = &mut self.ends[sender as usize];
        let history = &mut self.history;
        let mut letter = |c: char| history.push(if is_client { c } else { c.to_ascii_lowercase() });
        // Zeek's CheckHistory: true the first time this side shows the bit.
        let first = |end: &mut Endpoint, mask: u32| {
            let first = end.hist_seen & mask == 0;
            end.hist_seen |= mask;
            first
        };
        if bits > 1 {
            if flags.fin() && flags.rst() {
                if first(end, hist::FIN_RST) {
                    letter('I');
                }
            } else if first(end, hist::MULTI_FLAG) {
                letter('Q');
            }
        } else if bits == 1 {
            // Repeated when a later one carries another sequence number.
            if flags.syn() {
                let code = if flags.ack() { 'H' } else { 'S' };
                if first(end, hist::SYN) || end.last_syn != Some(seg.seq) {
                    letter(code);
                }
                end.last_syn = Some(seg.seq);
            }
            if flags.fin() {
                let fin_seq = seg.seq + seg.payload_len;
                if first(end, hist::FIN) || end.last_fin != Some(fin_seq) {
                    letter('F');
                }
                end.last_fin = Some(fin_seq);
            }
            if flags.rst() {
                if first(end, hist::RST) || end.last_rst != Some(seg.seq) {
                    letter('R');
                }
                end.last_rst = Some(seg.seq);
            }
        } else if seg.payload_len > 0 {
            if first(end, hist::DATA) {
                letter('D');
            }
        } else if flags.ack() && first(end, hist::ACK) {
            letter('A');
        }

        // Retransmission: payload that ends at or before what this side already sent.
        if seg.payload_len > 0 && !flags.syn() {
            let seg_end = seg.seq + seg.payload_len;
            match end.max_seq_end {
                Some(max) if seg_end <= max => {
                    end.retransmits += 1;
                    if is_scaled_count(end.retransmits) {
                        letter('T');
                    }
                }
                Some(max) if seg_end > max => end.max_seq_end = Some(seg_end),
                _ => end.max_seq_end = Some(seg_end),
            }
        }
        if seg.window == 0 && bits == 0 {
            end.zero_windows += 1;
            if is_scaled_count(end.zero_windows) {
                letter('W');
            }
        }
    }

    /// Zeek's per-endpoint TCP state machine, as far as `conn_state` needs it.
    fn update_state(&mut self, seg: &Segment, sender: Side) {
        use EndpointState::*;
        let flags = seg.flags;
        let peer_state = self.ends[sender.other() as usize].state;
        let me = &mut self.ends[sender as usize].state;
        if flags.rst() {
            *me = Reset;
        } else if flags.fin() {
            if *me != Reset {
                *me = Closed;
            }
        } else if flags.is_syn_only() {
            if *me == Inactive {
                *me = SynSent;
            }
        } else if flags.is_syn_ack() {
            if matches!(*me, Inactive | SynSent) {
                *me = SynAckSent;
            }
        } else if flags.ack() || seg.payload_len > 0 {
            match *me {
                Inactive => *me = Partial,
                SynSent | SynAckSent => *me = Established,
                _ => {}
            }
            if peer_state == SynAckSent && *me == Established {
                self.ends[sender.other() as usize].state = Established;
            }
        }
    }

    fn starts_new_stream(&self, seg: &Segment, sender: Side) -> bool {
        reuses_port(self.ends[sender as usize].base_seq, seg)
    }

    /// Opened by a SYN that the other side has not answered with anything.
    fn is_unanswered(&self) -> bool {
        self.orientation == Orientation::Syn && self.ends[self.client.other() as usize].packets == 0
    }

    fn peers(&self) -> Peers {
        Peers {
            client: self.key.addr(self.client),
            server: self.key.addr(self.client.other()),
            opened: self.first_seen,
        }
    }

    fn closed_event(&self) -> FlowEvent {
        let (side, how, at) = self.closed_by.expect("called once a FIN or RST was seen");
        let (requests, signals) = match self.app.findings() {
            Some((protocol, exchanges, signals)) => (
                request_count(protocol, exchanges.count()),
                CloseSignals::of(signals),
            ),
            // Analysed, but nothing beyond a SYN yet: no request.
            None if matches!(self.app, AppState::Deferred(_)) => (Some(0), CloseSignals::default()),
            None => (None, CloseSignals::default()),
        };
        FlowEvent::Closed {
            stream: self.stream,
            peers: self.peers(),
            by_client: side == self.client,
            rst: how == CloseKind::Rst,
            at,
            requests,
            signals,
        }
    }

    /// Account one segment and hand out what it made happen.
    fn take(&mut self, seg: &Segment, sender: Side, payload: &[u8], out: &mut Vec<FlowEvent>) {
        self.on_segment(seg, sender, payload);
        if !self.loss_reported && self.ends.iter().any(|e| e.gaps > 0) {
            self.loss_reported = true;
            out.push(FlowEvent::Lossy {
                stream: self.stream,
            });
        }
        self.report_app(out);
        self.settle_requests(out);
        if self.closed_by.is_some() && !self.close_reported {
            self.close_reported = true;
            out.push(self.closed_event());
        } else if seg.flags.rst() && sender == self.client && self.ends[sender as usize].rst == 1 {
            out.push(FlowEvent::ClientReset {
                stream: self.stream,
            });
        }
    }

    /// Hand out the requests and answers the analyser found since last time.
    fn report_app(&mut self, out: &mut Vec<FlowEvent>) {
        let Some((_, exchanges, signals)) = self.app.findings() else {
            return;
        };
        let stream_limit = signals.h2_max_concurrent_streams;
        let stream = self.stream;
        let peers = self.peers();
        // HTTP/1 answers in order; HTTP/2 in any order, so look a little
        // beyond the oldest unanswered request.
        const LOOK_AHEAD: usize = 64;
        let mut i = 0;
        while i < self.awaiting_answer.len().min(LOOK_AHEAD) {
            let (k, answer_told) = self.awaiting_answer[i];
            // Held until complete: never handed out while awaited.
            let Some(x) = exchanges.get(k) else {
                self.awaiting_answer.remove(i);
                continue;
            };
            if let (Some(at), false) = (x.answered, answer_told) {
                out.push(FlowEvent::Answered {
                    stream,
                    depth: x.depth,
                    at,
                });
                self.awaiting_answer[i].1 = true;
            }
            if let Some(at) = x.completed {
                out.push(FlowEvent::Completed {
                    stream,
                    depth: x.depth,
                    at,
                });
                self.awaiting_answer.remove(i);
            } else {
                i += 1;
            }
        }
        for i in self.requests_reported..exchanges.count() {
            let Some(x) = exchanges.get(i) else {
                continue;
            };
            out.push(FlowEvent::Request {
                stream,
                peers,
                depth: x.depth,
                sent: x.sent,
                answered: x.answered,
                completed: x.completed,
                multiplexed: x.h2_stream.is_some(),
                stream_limit,
            });
            if x.completed.is_none() {
                self.awaiting_answer.push_back((i, x.answered.is_some()));
            }
        }
        self.requests_reported = exchanges.count();
    }

    /// Hand out the requests of a keep-alive connection that are final
    /// (answered, and reported to the judge): it then holds only its open
    /// ones, however long it lives.
    fn settle_requests(&mut self, out: &mut Vec<FlowEvent>) {
        let AppState::Open(analyzer) = &mut self.app else {
            return;
        };
        // Not one whose answer is still to be told (in order of index).
        let before = self
            .awaiting_answer
            .front()
            .map_or(self.requests_reported, |&(k, _)| k);
        let stream = self.stream;
        let requests: Vec<RequestRecord> = analyzer
            .take_settled(before)
            .map(|x| request_record(stream, x))
            .collect();
        if requests.is_empty() {
            return;
        }
        out.push(FlowEvent::Settled(Settled {
            client: self.key.addr(self.client),
            server: self.key.addr(self.client.other()),
            requests,
        }));
    }

    /// Closed for good: a RST from either side, or a FIN from both.
    fn is_finished(&self) -> bool {
        self.ended
    }

    /// The analyser of a deferred connection, given the SYN it missed.
    fn start_app(&mut self) -> Box<ConnectionAnalyzer> {
        let mut analyzer = Box::new(ConnectionAnalyzer::new());
        if let AppState::Deferred(Some((dir, syn))) = &self.app {
            analyzer.on_segment(*dir, syn, &[]);
        }
        analyzer
    }

    fn settle_app(&mut self) {
        if let AppState::Deferred(_) = self.app {
            self.app = AppState::Open(self.start_app());
        }
        if let AppState::Open(_) = self.app {
            let AppState::Open(analyzer) = std::mem::replace(&mut self.app, AppState::Disabled)
            else {
                unreachable!("matched just above")
            };
            self.app = AppState::Done(Box::new(AppResult::from(*analyzer)));
        }
    }

    /// Zeek's `conn_state` from the two endpoint states (base/protocols/conn/main.zeek).
    fn conn_state(&self) -> ConnState {
        use EndpointState::*;
        let orig = &self.ends[self.client as usize];
        let resp = &self.ends[self.client.other() as usize];
        let (os, rs) = (orig.state, resp.state);
        let o_inactive = matches!(os, Inactive | Partial);
        let r_inactive = matches!(rs, Inactive | Partial);
        if rs == Reset {
            if matches!(os, SynSent | SynAckSent)
                || (os == Reset && orig.payload == 0 && resp.payload == 0)
            {
                ConnState::Rej
            } else if o_inactive {
                ConnState::Rstrh
            } else {
                ConnState::Rstr
            }
        } else if os == Reset {
            if r_inactive {
                if self.history_is_syn_then_reset() {
                    ConnState::Rstos0
                } else {
                    ConnState::Oth
                }
            } else {
                ConnState::Rsto
            }
        } else if rs == Closed && os == Closed {
            ConnState::Sf
        } else if os == Closed {
            if r_inactive {
                ConnState::Sh
            } else {
                ConnState::S2
            }
        } else if rs == Closed {
            if o_inactive {
                ConnState::Shr
            } else {
                ConnState::S3
            }
        } else if os == SynSent && rs == Inactive {
            ConnState::S0
        } else if os == Established && rs == Established {
            ConnState::S1
        } else {
            ConnState::Oth
        }
    }

    /// Zeek's `/\^?S[^HAFGIQ]*R.*/` on the history.
    fn history_is_syn_then_reset(&self) -> bool {
        let h = self.history.strip_prefix('^').unwrap_or(&self.history);
        let Some(rest) = h.strip_prefix('S') else {
            return false;
        };
        for c in rest.chars() {
            if c == 'R' {
                return true;
            }
            if "HAFGIQ".contains(c) {
                return false;
            }
        }
        false
    }

    /// The report's view of this connection, and its requests.
    pub fn into_records(mut self) -> (ConnectionRecord, Vec<RequestRecord>) {
        self.settle_app();
        let state = self.conn_state();
        let client = &self.ends[self.client as usize];
        let server = &self.ends[self.client.other() as usize];
        let stream = self.stream;
        // What the analyser found moves into the report.
        let app = match std::mem::replace(&mut self.app, AppState::Disabled) {
            AppState::Done(result) => Some(*result),
            _ => None,
        };
        let protocol = app.as_ref().map_or(AppProtocol::Unknown, |a| a.protocol);
        let (requests, request_count, tls_sni, alpn, http) = match app {
            Some(a) => {
                let requests: Vec<RequestRecord> = a
                    .exchanges
                    .into_iter()
                    .map(|x| request_record(stream, x))
                    .collect();
                let count = request_count(protocol, requests.len() + a.drained);
                (requests, count, a.tls_sni, a.alpn, Some(a.signals))
            }
            None => (Vec::new(), None, None, Vec::new(), None),
        };
        let record = ConnectionRecord {
            stream: self.stream,
            client: self.key.addr(self.client),
            server: self.key.addr(self.client.other()),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            syn: client.syn,
            syn_ack: server.syn_ack,
            fin_client: client.fin,
            fin_server: server.fin,
            rst_client: client.rst,
            rst_server: server.rst,
            packets_client: client.packets,
            packets_server: server.packets,
            bytes_client: client.bytes,
            bytes_server: server.bytes,
            payload_client: client.payload,
            payload_server: server.payload,
            handshake_rtt_ms: self.handshake_rtt_ms.map(round_micros),
            closed_by: self.closed_by.map(|(side, _, _)| {
                if side == self.client {
                    Role::Client
                } else {
                    Role::Server
                }
            }),
            closed_with: self.closed_by.map(|(_, how, _)| how),
            closed_at: self.closed_by.map(|(_, _, at)| at),
            state,
            history: std::mem::take(&mut self.history),
            orientation: self.orientation,
            protocol,
            tls_sni,
            alpn,
            requests: request_count,
            http,
            unused: None,
        };
        (record, requests)
    }
}

/// A request's row, as the capture saw it.
fn request_record(stream: u64, x: HttpExchange) -> RequestRecord {
    RequestRecord {
        stream,
        depth: x.depth,
        reused: x.depth > 1,
        method: x.method,
        target: x.target,
        host: x.host,
        status: x.status,
        sent: x.sent,
        answered: x.answered,
        completed: x.completed,
        h2_stream: x.h2_stream,
        tag: x.tag,
        seen_in: SeenIn::Capture,
        why_new: None,
    }
}

/// The requests a connection counts: none over TLS, whose bytes are not read.
fn request_count(protocol: AppProtocol, requests: usize) -> Option<u32> {
    (protocol != AppProtocol::Tls).then_some(requests as u32)
}

/// Zeek repeats T and W history letters at 1, 10, 100, ... occurrences.
fn is_scaled_count(n: u64) -> bool {
    let mut threshold = 1;
    while threshold < n {
        threshold *= 10;
    }
    threshold == n
}

fn round_micros(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// How long connections stay in the table, in capture time (never the clock).
///
/// Zeek and Linux conntrack are the references: Zeek drops a connection idle
/// for `tcp_inactivity_timeout` (5 min) and keeps a closed one for
/// `tcp_close_delay` (5 s); conntrack keeps an unanswered SYN for
/// `nf_conntrack_tcp_timeout_syn_sent` (120 s, which covers Linux's whole SYN
/// retry sequence) and, when its table is full, drops the oldest entries that
/// never saw a reply first (`early_drop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// A connection with no packet for this long is finalised (`expired`).
    pub idle: Duration,
    /// A connection closed for good (an RST, or a FIN from both sides) is
    /// finalised this long after its last packet, so retransmissions of the
    /// close still count in it.
    pub close_grace: Duration,
    /// A SYN nobody answered is finalised this long after the last SYN.
    pub unanswered: Duration,
    /// More unanswered SYNs than this at once: the oldest is finalised early
    /// (a SYN flood or a scan must not exhaust memory).
    pub max_unanswered: usize,
    /// More connections closed and in their grace period than this at once:
    /// the one closed first is finalised early (a high rate of short
    /// connections must not fill memory with closed ones).
    pub max_closing: usize,
    /// A finalised connection's 4-tuple keeps its stream number this long, so
    /// that a late retransmission is recognised and a reused port numbered as
    /// Wireshark numbers it.
    pub tombstone: Duration,
    /// At most this many tombstones; the oldest goes first.
    pub max_tombstones: usize,
}

impl Default for Expiry {
    fn default() -> Expiry {
        Expiry {
            idle: Duration::from_secs(300),
            close_grace: Duration::from_secs(5),
            unanswered: Duration::from_secs(120),
            max_unanswered: 10_000,
            max_closing: 10_000,
            tombstone: Duration::from_secs(300),
            max_tombstones: 65_536,
        }
    }
}

/// Why a connection left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Closed for good (RST, or FIN from both sides), then the grace period passed.
    Closed,
    /// No packet for the inactivity timeout.
    Idle,
    /// A SYN that nobody answered, after the unanswered timeout.
    Unanswered,
    /// An unanswered SYN finalised early: too many were pending at once.
    EarlyDrop,
    /// The input ended (end of the files, or the live capture stopped).
    EndOfInput,
}

/// Requests of a connection that goes on, final before it ends: HTTP/1
/// keep-alive requests after the first, answered. They are not among its
/// [`Finished::requests`].
#[derive(Debug)]
pub struct Settled {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub requests: Vec<RequestRecord>,
}

/// A connection that left the table: its record and its requests, final.
#[derive(Debug)]
pub struct Finished {
    pub record: ConnectionRecord,
    pub requests: Vec<RequestRecord>,
    pub end: EndReason,
}

/// What the tracker reports as it happens, in capture order.
#[derive(Debug)]
pub enum FlowEvent {
    /// A new stream began (a SYN, or the first packet of a connection the
    /// capture joined midway).
    Opened { stream: u64, peers: Peers },
    /// Requests of a connection that goes on are final, and leave it.
    Settled(Settled),
    /// The analyser found a request; its first byte was sent at `sent`.
    Request {
        stream: u64,
        peers: Peers,
        depth: u32,
        sent: Timestamp,
        answered: Option<Timestamp>,
        /// When the response's last byte came, if it had by then.
        completed: Option<Timestamp>,
        /// HTTP/2: one of several streams the connection may carry at once.
        multiplexed: bool,
        /// HTTP/2: the server's SETTINGS_MAX_CONCURRENT_STREAMS, when seen.
        stream_limit: Option<u32>,
    },
    /// The first byte of the response to request `depth` came at `at`.
    Answered {
        stream: u64,
        depth: u32,
        at: Timestamp,
    },
    /// The last byte of the response to request `depth` came at `at`.
    Completed {
        stream: u64,
        depth: u32,
        at: Timestamp,
    },
    /// The first FIN or RST of the connection, with what the connection had
    /// carried by then.
    Closed {
        stream: u64,
        peers: Peers,
        by_client: bool,
        rst: bool,
        at: Timestamp,
        /// Requests seen so far; `None` when the bytes were not analysed or
        /// are encrypted (as `ConnectionRecord::requests`).
        requests: Option<u32>,
        /// The keep-alive signals that say why a connection ended.
        signals: CloseSignals,
    },
    /// The client sent an RST after the connection's first close (a FIN).
    ClientReset { stream: u64 },
    /// The capture first missed bytes of this connection (an ACK or FIN
    /// beyond the data seen): what it shows of it may be incomplete.
    Lossy { stream: u64 },
    /// The connection left the table; nothing more will be said of it.
    Finished(Box<Finished>),
}

/// What the HTTP analyser had seen of a connection's end when it closed
/// (the depths are those of [`crate::http::HttpSignals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloseSignals {
    pub client_close_depth: Option<u32>,
    pub server_close_depth: Option<u32>,
    pub http10: bool,
    /// The sender of the first GOAWAY: "client" or "server".
    pub goaway_by: Option<&'static str>,
}

impl CloseSignals {
    pub fn of(http: &crate::http::HttpSignals) -> CloseSignals {
        CloseSignals {
            client_close_depth: http.client_close_depth,
            server_close_depth: http.server_close_depth,
            http10: http.server_http10_depth.is_some() || http.client_http10_depth.is_some(),
            goaway_by: http.goaway.first().map(|g| g.sender),
        }
    }
}

/// Who a connection is between and when it began, repeated on the events a
/// later stage may be the first to care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peers {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub opened: Timestamp,
}

/// What a finalised connection leaves behind for Wireshark's numbering.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    stream: u64,
    base_seq: [Option<SeqNumber>; 2],
}

#[derive(Debug)]
enum Slot {
    Live(Box<Connection>),
    Tomb(Tombstone),
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The connections open now, by 4-tuple, numbered as Wireshark numbers
/// streams; finalised ones leave as [`FlowEvent::Finished`].
#[derive(Debug)]
pub struct FlowTable {
    expiry: Expiry,
    http: bool,
    by_key: FastMap<FlowKey, Slot>,
    next_stream: u64,
    /// When each live connection is next looked at: (time, stream, key).
    deadlines: BinaryHeap<Reverse<(Timestamp, u64, FlowKey)>>,
    /// Tombstones in order of burial.
    tombstones: VecDeque<(Timestamp, u64, FlowKey)>,
    /// Connections opened by a SYN and not answered yet, oldest first
    /// (entries for answered ones are skipped and compacted away).
    unanswered: VecDeque<(u64, FlowKey)>,
    unanswered_now: usize,
    /// Connections as they closed for good, first closed first (entries
    /// for ones finalised or reopened since are skipped and compacted away).
    closing: VecDeque<(u64, FlowKey)>,
    live: usize,
    /// Live connections not yet closed by a RST or by a FIN from each side.
    open: usize,
    now: Timestamp,
    stats: TrackerStats,
}

impl FlowTable {
    /// `http`: whether to run the application analyser on each connection.
    pub fn new(http: bool) -> FlowTable {
        FlowTable::with_expiry(http, Expiry::default())
    }

    pub fn with_expiry(http: bool, expiry: Expiry) -> FlowTable {
        FlowTable {
            expiry,
            http,
            by_key: FastMap::default(),
            next_stream: 0,
            deadlines: BinaryHeap::new(),
            tombstones: VecDeque::new(),
            unanswered: VecDeque::new(),
            unanswered_now: 0,
            closing: VecDeque::new(),
            live: 0,
            open: 0,
            now: Timestamp(i64::MIN),
            stats: TrackerStats::default(),
        }
    }

    /// Account one segment; returns its stream number. What happened is
    /// appended to `out`: the segment's own events, then those of any
    /// connection whose time ran out by the segment's timestamp.
    pub fn on_segment(&mut self, seg: &Segment, payload: &[u8], out: &mut Vec<FlowEvent>) -> u64 {
        if seg.ts > self.now {
            self.now = seg.ts;
            self.expire(out);
        }
        let (key, sender) = FlowKey::of(seg.src, seg.dst);
        let expiry = self.expiry;
        let stream = match self.by_key.get_mut(&key) {
            Some(Slot::Live(conn)) if !conn.starts_new_stream(seg, sender) => {
                let conn = conn.as_mut();
                let was_open = !conn.is_finished();
                let was_unanswered = conn.is_unanswered();
                conn.take(seg, sender, payload, out);
                let closed_now = match (was_open, conn.is_finished()) {
                    (true, true) => {
                        self.open -= 1;
                        true
                    }
                    (false, false) => {
                        self.open += 1;
                        false
                    }
                    _ => false,
                };
                if was_unanswered && !conn.is_unanswered() {
                    self.unanswered_now -= 1;
                }
                // Closing (or an answer) can bring the deadline forward.
                let due = deadline(&expiry, conn);
                if due < conn.scheduled {
                    conn.scheduled = due;
                    self.deadlines.push(Reverse((due, conn.stream, key)));
                }
                let stream = conn.stream;
                if closed_now {
                    self.closing.push_back((stream, key));
                    self.cut_grace(out);
                }
                stream
            }
            Some(Slot::Tomb(tomb)) if !reuses_port(tomb.base_seq[sender as usize], seg) => {
                self.stats.late_packets += 1;
                tomb.stream
            }
            _ => self.open_stream(key, seg, sender, payload, out),
        };
        stream
    }

    fn open_stream(
        &mut self,
        key: FlowKey,
        seg: &Segment,
        sender: Side,
        payload: &[u8],
        out: &mut Vec<FlowEvent>,
    ) -> u64 {
        let stream = self.next_stream;
        self.next_stream += 1;
        let mut conn = Box::new(Connection::new(
            stream, key, seg, sender, payload, self.http,
        ));
        out.push(FlowEvent::Opened {
            stream,
            peers: conn.peers(),
        });
        conn.take(seg, sender, payload, out);
        if conn.is_unanswered() {
            self.unanswered_now += 1;
            self.unanswered.push_back((stream, key));
        }
        let finished = conn.is_finished();
        if !finished {
            self.open += 1;
        }
        self.live += 1;
        self.stats.peak_open = self.stats.peak_open.max(self.live as u64);
        let due = deadline(&self.expiry, &conn);
        conn.scheduled = due;
        self.deadlines.push(Reverse((due, stream, key)));
        // A reused 4-tuple replaces its tombstone (or, as Wireshark does on
        // "TCP port numbers reused", a live connection: that one ends now).
        if let Some(Slot::Live(old)) = self.by_key.insert(key, Slot::Live(conn)) {
            self.retire(*old, EndReason::Closed, out);
        }
        self.early_drop(out);
        if finished {
            self.closing.push_back((stream, key));
            self.cut_grace(out);
        }
        stream
    }

    /// Finalise every connection whose time is up at `self.now`, and let
    /// tombstones past their time go.
    /// Capture time reached `now` with no packet (a live capture on a quiet
    /// link): let go of what expired by then.
    pub fn advance_to(&mut self, now: Timestamp, out: &mut Vec<FlowEvent>) {
        if now > self.now {
            self.now = now;
            self.expire(out);
        }
    }

    fn expire(&mut self, out: &mut Vec<FlowEvent>) {
        // Entries of connections gone or rescheduled earlier linger until
        // their time; drop them when they outnumber the live ones.
        if self.deadlines.len() > 2 * self.live + 1024 {
            let by_key = &self.by_key;
            self.deadlines.retain(|Reverse((due, stream, key))| {
                matches!(by_key.get(key),
                    Some(Slot::Live(c)) if c.stream == *stream && c.scheduled == *due)
            });
        }
        while let Some(&Reverse((due, stream, key))) = self.deadlines.peek() {
            if due > self.now {
                break;
            }
            self.deadlines.pop();
            let Some(Slot::Live(conn)) = self.by_key.get_mut(&key) else {
                continue;
            };
            if conn.stream != stream || conn.scheduled != due {
                continue;
            }
            let actual = deadline(&self.expiry, conn);
            if actual > self.now {
                conn.scheduled = actual;
                self.deadlines.push(Reverse((actual, stream, key)));
                continue;
            }
            let reason = if conn.is_unanswered() {
                EndReason::Unanswered
            } else if conn.is_finished() {
                EndReason::Closed
            } else {
                EndReason::Idle
            };
            self.bury(key, reason, out);
        }
        // In order of burial, so of time: looked up only once due.
        while let Some(&(until, stream, key)) = self.tombstones.front() {
            if until > self.now {
                break;
            }
            self.tombstones.pop_front();
            self.unbury(stream, key);
        }
    }

    /// Let the tombstone of `stream` at `key` go, unless a new stream (or
    /// its own tombstone) took the 4-tuple since.
    fn unbury(&mut self, stream: u64, key: FlowKey) {
        if matches!(self.by_key.get(&key), Some(Slot::Tomb(t)) if t.stream == stream) {
            self.by_key.remove(&key);
        }
    }

    /// Too many unanswered SYNs: finalise the oldest (conntrack's early_drop).
    fn early_drop(&mut self, out: &mut Vec<FlowEvent>) {
        while self.unanswered_now > self.expiry.max_unanswered {
            let Some((stream, key)) = self.unanswered.pop_front() else {
                break;
            };
            if holds(&self.by_key, stream, &key, Connection::is_unanswered) {
                self.stats.early_dropped += 1;
                self.bury(key, EndReason::EarlyDrop, out);
            }
        }
        // Entries of SYNs answered since are dead weight.
        let wanted = self.unanswered_now;
        compact(
            &mut self.unanswered,
            wanted,
            &self.by_key,
            Connection::is_unanswered,
        );
    }

    /// Too many connections in their close grace at once: finalise those
    /// closed first. A packet that comes for one later is counted as late,
    /// as one after the grace is.
    fn cut_grace(&mut self, out: &mut Vec<FlowEvent>) {
        while self.live - self.open > self.expiry.max_closing {
            let Some((stream, key)) = self.closing.pop_front() else {
                break;
            };
            if holds(&self.by_key, stream, &key, Connection::is_finished) {
                self.stats.grace_cut += 1;
                self.bury(key, EndReason::Closed, out);
            }
        }
        // Entries of connections finalised or reopened since.
        let wanted = self.live - self.open;
        compact(
            &mut self.closing,
            wanted,
            &self.by_key,
            Connection::is_finished,
        );
    }

    /// Finalise the live connection at `key`, leaving a tombstone.
    fn bury(&mut self, key: FlowKey, reason: EndReason, out: &mut Vec<FlowEvent>) {
        let until = self.now.after(self.expiry.tombstone);
        let Some(Slot::Live(conn)) = self.by_key.get(&key) else {
            return;
        };
        let tomb = Tombstone {
            stream: conn.stream,
            base_seq: [conn.ends[0].base_seq, conn.ends[1].base_seq],
        };
        let Some(Slot::Live(conn)) = self.by_key.insert(key, Slot::Tomb(tomb)) else {
            unreachable!("the slot was live just above")
        };
        // At the cap the oldest goes first, so the queue never grows past it.
        while self.tombstones.len() >= self.expiry.max_tombstones {
            let Some((_, stream, oldest)) = self.tombstones.pop_front() else {
                break;
            };
            self.unbury(stream, oldest);
        }
        self.tombstones.push_back((until, tomb.stream, key));
        self.retire(*conn, reason, out);
    }

    /// Hand a connection out of the table.
    fn retire(&mut self, conn: Connection, reason: EndReason, out: &mut Vec<FlowEvent>) {
        self.live -= 1;
        if !conn.is_finished() {
            self.open -= 1;
        }
        if conn.is_unanswered() {
            self.unanswered_now -= 1;
            self.stats.expired_unanswered += 1;
        }
        if reason == EndReason::Idle {
            self.stats.expired_idle += 1;
        }
        let mut conn = conn;
        conn.settle_app();
        conn.report_app(out);
        let (record, requests) = conn.into_records();
        out.push(FlowEvent::Finished(Box::new(Finished {
            record,
            requests,
            end: reason,
        })));
    }

    /// The input ended: finalise every connection still in the table, in
    /// order of stream number.
    pub fn finish(&mut self, out: &mut Vec<FlowEvent>) {
        let mut keys: Vec<(u64, FlowKey)> = self
            .by_key
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Live(c) => Some((c.stream, *k)),
                Slot::Tomb(_) => None,
            })
            .collect();
        keys.sort_unstable();
        for (_, key) in keys {
            if let Some(Slot::Live(conn)) = self.by_key.remove(&key) {
                self.retire(*conn, EndReason::EndOfInput, out);
            }
        }
        self.by_key.clear();
        self.deadlines.clear();
        self.tombstones.clear();
        self.unanswered.clear();
        self.closing.clear();
    }

    /// Streams numbered so far.
    pub fn len(&self) -> usize {
        self.next_stream as usize
    }

    pub fn is_empty(&self) -> bool {
        self.next_stream == 0
    }

    /// Connections in the table not yet ended by a RST or by a FIN from each side.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Connections in the table now.
    pub fn live(&self) -> usize {
        self.live
    }

    pub fn stats(&self) -> TrackerStats {
        self.stats
    }
}

/// Whether `key` still holds the live connection `stream`, and it is `so`.
fn holds(
    by_key: &FastMap<FlowKey, Slot>,
    stream: u64,
    key: &FlowKey,
    so: fn(&Connection) -> bool,
) -> bool {
    matches!(by_key.get(key), Some(Slot::Live(c)) if c.stream == stream && so(c))
}

/// A queue of (stream, key) whose entries go stale as connections change:
/// once they outnumber the `wanted` ones well, keep only those that
/// [`holds`] (now and then, so the work stays linear).
fn compact(
    queue: &mut VecDeque<(u64, FlowKey)>,
    wanted: usize,
    by_key: &FastMap<FlowKey, Slot>,
    so: fn(&Connection) -> bool,
) {
    if queue.len() > 2 * wanted + 1024 {
        queue.retain(|(stream, key)| holds(by_key, *stream, key, so));
    }
}

/// When `conn` is due to leave the table if nothing more arrives.
fn deadline(expiry: &Expiry, conn: &Connection) -> Timestamp {
    // A client whose SYN got no SYN+ACK is still connecting, even after an
    // RST (one answering a stray ACK): its SYN is retransmitted with the same
    // ISN seconds later, and Wireshark keeps that in the stream.
    let connecting = conn.orientation == Orientation::Syn
        && conn.ends[conn.client.other() as usize].syn_ack == 0;
    let after = if connecting {
        expiry.unanswered.max(expiry.close_grace)
    } else if conn.is_finished() {
        expiry.close_grace
    } else if conn.is_unanswered() {
        expiry.unanswered
    } else {
        expiry.idle
    };
    conn.last_seen.after(after)
}

/// Wireshark starts a new stream on a known 4-tuple when a SYN (without ACK)
/// carries a sequence number other than the base sequence number of its
/// direction (`base`; "TCP port numbers reused", packet-tcp.c).
fn reuses_port(base: Option<SeqNumber>, seg: &Segment) -> bool {
    seg.flags.is_syn_only() && matches!(base, Some(base) if base != seg.seq)
}

/// Every connection's record and its requests: connections by stream number,
/// requests by time sent (then stream and depth). Sorts small keys and moves
/// each record once.
pub fn sort_records(connections: &mut [ConnectionRecord], requests: &mut [RequestRecord]) {
    connections.sort_unstable_by_key(|c| c.stream);
    let mut order: Vec<(Timestamp, u64, u32, u32)> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| (r.sent, r.stream, r.depth, i as u32))
        .collect();
    order.sort_unstable();
    // Apply the permutation in place, cycle by cycle: position k takes the
    // record at perm[k].
    let mut perm: Vec<u32> = order.into_iter().map(|(.., i)| i).collect();
    for start in 0..perm.len() {
        let mut cur = start;
        loop {
            let src = perm[cur] as usize;
            perm[cur] = cur as u32;
            if src == start {
                break;
            }
            requests.swap(cur, src);
            cur = src;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode, Decoded};
    use crate::source::LinkType;
    use crate::testkit::{frame, ipv4, tcp};
    use crate::wire::TcpFlags as F;

    const C: [u8; 4] = [10, 0, 0, 1];
    const S: [u8; 4] = [10, 0, 0, 2];

    /// `(ts_ms, from_client, seq, ack, flags, payload)`
    type Pkt<'a> = (i64, bool, u32, u32, u8, &'a [u8]);

    /// Feeds packets between
    /// 10.0.0.1:`cport` and 10.0.0.2:`sport`; returns the stream of each.
    fn feed(table: &mut Tracker, cport: u16, sport: u16, pkts: &[Pkt<'_>]) -> Vec<u64> {
        pkts.iter()
            .map(|&(ms, from_client, seq, ack, flags, payload)| {
                let data = if from_client {
                    ipv4(C, S, &tcp(cport, sport, seq, ack, flags, payload))
                } else {
                    ipv4(S, C, &tcp(sport, cport, seq, ack, flags, payload))
                };
                let Decoded::Tcp(seg) = decode(LinkType::RAW, &frame(ms * 1000, &data)) else {
                    panic!("test packet must decode")
                };
                let payload = &data[seg.payload.clone()];
                table.table.on_segment(&seg, payload, &mut table.events)
            })
            .collect()
    }

    /// A table and every event it gave.
    struct Tracker {
        table: FlowTable,
        events: Vec<FlowEvent>,
    }

    impl Tracker {
        fn new(http: bool) -> Tracker {
            Tracker::with_expiry(http, Expiry::default())
        }

        fn with_expiry(http: bool, expiry: Expiry) -> Tracker {
            Tracker {
                table: FlowTable::with_expiry(http, expiry),
                events: Vec::new(),
            }
        }

        /// Records of the connections finalised so far, in the order they left.
        fn finished(&self) -> Vec<(&ConnectionRecord, EndReason)> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    FlowEvent::Finished(f) => Some((&f.record, f.end)),
                    _ => None,
                })
                .collect()
        }
    }

    fn records(mut t: Tracker) -> Vec<ConnectionRecord> {
        t.table.finish(&mut t.events);
        let mut recs: Vec<ConnectionRecord> = t
            .events
            .into_iter()
            .filter_map(|e| match e {
                FlowEvent::Finished(f) => Some(f.record),
                _ => None,
            })
            .collect();
        recs.sort_by_key(|r| r.stream);
        recs
    }

    const SYN: u8 = F::SYN;
    const SYNACK: u8 = F::SYN | F::ACK;
    const ACK: u8 = F::ACK;
    const DATA: u8 = F::ACK | F::PSH;
    const FIN: u8 = F::FIN | F::ACK;
    const RST: u8 = F::RST;

    #[test]
    fn full_connection_closed_by_server() {
        let mut t = Tracker::new(false);
        feed(
            &mut t,
            40000,
            80,
            &[
                (0, true, 100, 0, SYN, b""),
                (1, false, 500, 101, SYNACK, b""),
                (3, true, 101, 501, ACK, b""),
                (4, true, 101, 501, DATA, b"GET / HTTP/1.1\r\n\r\n"),
                (5, false, 501, 119, DATA, b"HTTP/1.1 200 OK\r\n\r\n"),
                (6, false, 520, 119, FIN, b""),
                (7, true, 119, 521, FIN, b""),
                (8, false, 521, 120, ACK, b""),
            ],
        );
        let r = &records(t)[0];
        assert_eq!(
            (r.client.to_string(), r.server.to_string()),
            ("10.0.0.1:40000".to_string(), "10.0.0.2:80".to_string())
        );
        assert_eq!((r.syn, r.syn_ack, r.fin_client, r.fin_server), (1, 1, 1, 1));
        assert_eq!((r.packets_client, r.packets_server), (4, 4));
        assert_eq!((r.payload_client, r.payload_server), (18, 19));
        assert_eq!(r.closed_by, Some(Role::Server));
        assert_eq!(r.closed_with, Some(CloseKind::Fin));
        assert_eq!(r.state, "SF");
        assert_eq!(r.history, "ShADdfFa");
        assert_eq!(r.handshake_rtt_ms, Some(3.0));
        assert_eq!(r.orientation, "syn");
    }

    #[test]
    fn refused_connection_is_rej() {
        let mut t = Tracker::new(false);
        feed(
            &mut t,
            40001,
            81,
            &[
                (0, true, 7, 0, SYN, b""),
                (1, false, 0, 8, RST | F::ACK, b""),
            ],
        );
        let r = &records(t)[0];
        assert_eq!(r.state, "REJ");
        assert_eq!(r.history, "Sr");
        assert_eq!((r.rst_client, r.rst_server), (0, 1));
        assert_eq!(r.closed_by, Some(Role::Server));
        assert_eq!(r.closed_with, Some(CloseKind::Rst));
    }

    #[test]
    fn syn_with_new_isn_on_known_tuple_starts_a_new_stream() {
        let mut t = Tracker::new(false);
        let streams = feed(
            &mut t,
            45999,
            80,
            &[
                (0, true, 1000, 0, SYN, b""),
                (1, false, 9000, 1001, SYNACK, b""),
                (2, true, 1001, 9001, ACK, b""),
                (3, true, 1001, 9001, FIN, b""),
                (4, false, 9001, 1002, FIN, b""),
                (5, true, 1002, 9002, ACK, b""),
                (10, true, 77_000, 0, SYN, b""),
                (11, false, 5, 77_001, SYNACK, b""),
                (12, true, 77_001, 6, ACK, b""),
            ],
        );
        assert_eq!(streams, [0, 0, 0, 0, 0, 0, 1, 1, 1]);
        let recs = records(t);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].state, "SF");
        assert_eq!(recs[1].state, "S1");
    }

    /// Only the server's ACK of a connection was captured; the client's next
    /// SYN on the 4-tuple does not fit the sequence numbers that ACK asked
    /// for, so it starts a new stream, as tshark numbers it (seen when the
    /// kernel dropped most of a busy capture).
    #[test]
    fn a_syn_that_does_not_fit_the_peers_ack_starts_a_new_stream() {
        let mut t = Tracker::new(false);
        let streams = feed(
            &mut t,
            46000,
            80,
            &[
                (0, false, 9000, 1084, ACK, b""),
                (10, true, 77_000, 0, SYN, b""),
                (11, false, 5, 77_001, SYNACK, b""),
                (12, true, 77_001, 6, ACK, b""),
            ],
        );
        assert_eq!(streams, [0, 1, 1, 1]);
        // A retransmitted SYN of the ISN the ACK implies stays in its stream.
        let mut t = Tracker::new(false);
        let streams = feed(
            &mut t,
            46001,
            80,
            &[
                (0, false, 9000, 1001, ACK, b""),
                (10, true, 1000, 0, SYN, b""),
            ],
        );
        assert_eq!(streams, [0, 0]);
    }

    /// No handshake captured and both ports ephemeral (a server on a high
    /// port): the side whose first segment is a request line is the client.
    #[test]
    fn without_a_handshake_a_request_line_names_the_client() {
        for (first_from_client, payload) in [
            (true, &b"GET / HTTP/1.0\r\n\r\n"[..]),
            (false, &b"HTTP/1.1 200 OK\r\n"[..]),
        ] {
            let mut t = Tracker::new(false);
            // The client's port (40000) is below the server's (45141).
            feed(
                &mut t,
                40000,
                45141,
                &[(0, first_from_client, 1, 1, DATA, payload)],
            );
            let recs = records(t);
            assert_eq!(recs[0].client.port(), 40000, "{payload:?}");
            assert_eq!(recs[0].orientation, "payload");
        }
        // Ports that tell keep deciding: a request to port 80 from a high port.
        let mut t = Tracker::new(false);
        feed(
            &mut t,
            40000,
            80,
            &[(0, false, 1, 1, DATA, b"GET / HTTP/1.0\r\n")],
        );
        let recs = records(t);
        assert_eq!(recs[0].client.port(), 40000);
        assert_eq!(recs[0].orientation, "port");
    }

    /// The handshake lost, the first segment a bare ACK of the client's, and
    /// the client's port the lower: the port guess is undone by the first
    /// bytes, before the analyser reads any.
    #[test]
    fn the_first_bytes_undo_a_wrong_guess_by_port() {
        let mut t = Tracker::new(true);
        feed(
            &mut t,
            34812,
            44757,
            &[
                (0, true, 1, 1, ACK, b""),
                (1, true, 1, 1, DATA, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
                (
                    2,
                    false,
                    1,
                    27,
                    DATA,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                ),
            ],
        );
        let r = &records(t)[0];
        assert_eq!(r.client.port(), 34812);
        assert_eq!(r.orientation, "payload");
        assert_eq!(r.history, "ADd");
        assert_eq!(r.requests, Some(1));
    }

    #[test]
    fn retransmitted_syn_stays_in_its_stream_and_counts() {
        let mut t = Tracker::new(false);
        let streams = feed(
            &mut t,
            40002,
            80,
            &[
                (0, true, 1000, 0, SYN, b""),
                (1000, true, 1000, 0, SYN, b""),
                (1001, false, 9000, 1001, SYNACK, b""),
                (1002, true, 1001, 9001, ACK, b""),
            ],
        );
        assert_eq!(streams, [0, 0, 0, 0]);
        let r = &records(t)[0];
        assert_eq!(r.syn, 2);
        assert_eq!(r.history, "ShA");
        // Measured from the SYN that was answered: the retransmission.
        assert_eq!(r.handshake_rtt_ms, Some(2.0));
    }

    #[test]
    fn capture_starting_mid_connection_orients_by_what_it_sees() {
        let mut t = Tracker::new(false);
        // The first packet seen is the server's response (both ports are
        // above 1024, so its status line decides; the lower port agrees).
        feed(
            &mut t,
            51000,
            8080,
            &[
                (0, false, 500, 100, DATA, b"HTTP/1.1 200 OK\r\n\r\n"),
                (1, true, 100, 519, ACK, b""),
            ],
        );
        let r = &records(t)[0];
        assert_eq!(r.client.to_string(), "10.0.0.1:51000");
        assert_eq!(r.orientation, "payload");
        assert_eq!((r.syn, r.syn_ack), (0, 0));
        assert_eq!(r.handshake_rtt_ms, None);
        assert_eq!(r.closed_by, None);
        assert_eq!(r.history, "^dA");
        assert_eq!(r.state, "OTH");
    }

    #[test]
    fn well_known_port_wins_over_lower_port() {
        let mut t = Tracker::new(false);
        // Either side may speak first; the port below 1024 serves.
        feed(&mut t, 2000, 443, &[(0, true, 1, 1, ACK, b"x")]);
        feed(&mut t, 5000, 443, &[(0, false, 1, 1, ACK, b"y")]);
        let recs = records(t);
        assert_eq!(recs[0].server.to_string(), "10.0.0.2:443");
        assert_eq!(recs[1].server.to_string(), "10.0.0.2:443");
    }

    #[test]
    fn syn_ack_first_makes_its_sender_the_server() {
        let mut t = Tracker::new(false);
        let streams = feed(
            &mut t,
            40003,
            80,
            &[
                (0, false, 9000, 1001, SYNACK, b""),
                // The SYN arrives late (reordered); its ISN matches the SYN+ACK's ack - 1.
                (1, true, 1000, 0, SYN, b""),
                (2, true, 1001, 9001, ACK, b""),
            ],
        );
        assert_eq!(streams, [0, 0, 0]);
        let r = &records(t)[0];
        assert_eq!(r.client.to_string(), "10.0.0.1:40003");
        assert_eq!(r.orientation, "syn-ack");
    }

    #[test]
    fn retransmissions_mark_history_scaled() {
        let mut t = Tracker::new(false);
        let mut pkts: Vec<Pkt<'_>> = vec![
            (0, true, 0, 0, SYN, b""),
            (1, false, 0, 1, SYNACK, b""),
            (2, true, 1, 1, DATA, b"abcd"),
        ];
        for i in 0..10 {
            pkts.push((3 + i, true, 1, 1, DATA, b"abcd"));
        }
        feed(&mut t, 40004, 80, &pkts);
        let r = &records(t)[0];
        // T at the 1st and the 10th retransmission, as Zeek scales repeats.
        assert_eq!(r.history, "ShDTT");
    }

    #[test]
    fn zeek_state_for_half_closed_and_resets() {
        let mut t = Tracker::new(false);
        feed(
            &mut t,
            40005,
            80,
            &[
                (0, true, 0, 0, SYN, b""),
                (1, false, 0, 1, SYNACK, b""),
                (2, true, 1, 1, ACK, b""),
                (3, true, 1, 1, FIN, b""),
            ],
        );
        feed(
            &mut t,
            40006,
            80,
            &[
                (0, true, 0, 0, SYN, b""),
                (1, false, 0, 1, SYNACK, b""),
                (2, true, 1, 1, ACK, b""),
                (3, true, 1, 1, RST, b""),
            ],
        );
        feed(&mut t, 40007, 80, &[(0, true, 0, 0, SYN, b"")]);
        let states: Vec<&str> = records(t).iter().map(|r| r.state.as_str()).collect();
        assert_eq!(states, ["S2", "RSTO", "S0"]);
    }

    #[test]
    fn idle_connection_leaves_the_table_and_keeps_its_stream_number() {
        let expiry = Expiry {
            idle: Duration::from_secs(10),
            ..Expiry::default()
        };
        let mut t = Tracker::with_expiry(false, expiry);
        let streams = feed(
            &mut t,
            40010,
            80,
            &[
                (0, true, 100, 0, SYN, b""),
                (1, false, 500, 101, SYNACK, b""),
                (2, true, 101, 501, ACK, b""),
            ],
        );
        assert_eq!(streams, [0, 0, 0]);
        assert!(t.finished().is_empty());
        assert_eq!(t.table.live(), 1);
        // Another connection's packet 11 s later moves capture time on.
        feed(&mut t, 40011, 80, &[(11_000, true, 7, 0, SYN, b"")]);
        let gone = t.finished();
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].0.stream, gone[0].1), (0, EndReason::Idle));
        assert_eq!(t.table.live(), 1);
        // A late keep-alive on the first 4-tuple: still stream 0, counted late.
        let late = feed(&mut t, 40010, 80, &[(12_000, true, 101, 501, ACK, b"")]);
        assert_eq!(late, [0]);
        assert_eq!(t.table.stats().late_packets, 1);
        assert_eq!(t.table.stats().expired_idle, 1);
        // A SYN with a new ISN on it is a reused port: a new stream, as tshark numbers it.
        let reused = feed(&mut t, 40010, 80, &[(13_000, true, 9_999, 0, SYN, b"")]);
        assert_eq!(reused, [2]);
        let recs = records(t);
        assert_eq!(recs.iter().map(|r| r.stream).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(recs[0].packets_client, 2);
    }

    #[test]
    fn closed_connection_is_finalised_after_the_grace_period() {
        let expiry = Expiry {
            close_grace: Duration::from_secs(2),
            ..Expiry::default()
        };
        let mut t = Tracker::with_expiry(false, expiry);
        feed(
            &mut t,
            40020,
            80,
            &[
                (0, true, 100, 0, SYN, b""),
                (1, false, 500, 101, SYNACK, b""),
                (2, true, 101, 501, FIN, b""),
                (3, false, 501, 102, FIN, b""),
                (4, true, 102, 502, ACK, b""),
                // A retransmitted FIN within the grace period still counts.
                (1_000, false, 501, 102, FIN, b""),
            ],
        );
        assert!(t.finished().is_empty());
        assert_eq!(t.table.open(), 0);
        feed(&mut t, 40021, 80, &[(3_500, true, 1, 0, SYN, b"")]);
        let gone = t.finished();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].1, EndReason::Closed);
        assert_eq!((gone[0].0.fin_server, gone[0].0.packets_server), (2, 3));
    }

    #[test]
    fn past_the_cap_of_closed_connections_the_first_closed_is_finalised_early() {
        let expiry = Expiry {
            max_closing: 2,
            ..Expiry::default()
        };
        let mut t = Tracker::with_expiry(false, expiry);
        let close = |t: &mut Tracker, port: u16, at: i64| {
            feed(
                t,
                port,
                80,
                &[
                    (at, true, 100, 0, SYN, b""),
                    (at + 1, false, 500, 101, SYNACK, b""),
                    (at + 2, true, 101, 501, FIN, b""),
                    (at + 3, false, 501, 102, FIN, b""),
                    (at + 4, true, 102, 502, ACK, b""),
                ],
            )
        };
        // One still open does not count against the cap.
        feed(
            &mut t,
            42000,
            80,
            &[(0, true, 1, 0, SYN, b""), (1, false, 9, 2, SYNACK, b"")],
        );
        close(&mut t, 42001, 10);
        close(&mut t, 42002, 20);
        assert!(t.finished().is_empty());
        // A third close, well within the 5 s grace: the first closed goes.
        close(&mut t, 42003, 30);
        let gone = t.finished();
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].0.stream, gone[0].1), (1, EndReason::Closed));
        assert_eq!(gone[0].0.packets_client, 3);
        assert_eq!(t.table.stats().grace_cut, 1);
        assert_eq!((t.table.live(), t.table.open()), (3, 1));
        // Its retransmitted FIN keeps its stream number and counts as late.
        let late = feed(&mut t, 42001, 80, &[(40, false, 501, 102, FIN, b"")]);
        assert_eq!(late, [1]);
        assert_eq!(t.table.stats().late_packets, 1);
        // Its SYN retransmitted with the same ISN reopens the second (as
        // tshark keeps it in its stream): no longer closed, it is not cut
        // when the next closes come; the one closed after it is.
        feed(&mut t, 42002, 80, &[(50, true, 100, 0, SYN, b"")]);
        close(&mut t, 42004, 60);
        assert_eq!(t.finished().len(), 1);
        close(&mut t, 42005, 70);
        let streams: Vec<u64> = t.finished().iter().map(|(r, _)| r.stream).collect();
        assert_eq!(streams, [1, 3]);
        assert_eq!(
            (t.table.live() - t.table.open(), t.table.stats().grace_cut),
            (2, 2)
        );
    }

    #[test]
    fn unanswered_syns_expire_and_the_oldest_go_first_past_the_cap() {
        let expiry = Expiry {
            unanswered: Duration::from_secs(5),
            max_unanswered: 2,
            ..Expiry::default()
        };
        let mut t = Tracker::with_expiry(false, expiry);
        for (i, port) in (41000..41004).enumerate() {
            feed(&mut t, port, 80, &[(i as i64, true, 1, 0, SYN, b"")]);
        }
        // Four pending, two allowed: streams 0 and 1 went early.
        let early: Vec<_> = t.finished().iter().map(|(r, e)| (r.stream, *e)).collect();
        assert_eq!(
            early,
            [(0, EndReason::EarlyDrop), (1, EndReason::EarlyDrop)]
        );
        assert_eq!(t.table.live(), 2);
        // The rest time out 5 s after their SYN.
        feed(&mut t, 42000, 80, &[(6_000, true, 1, 0, SYN, b"")]);
        let all: Vec<_> = t.finished().iter().map(|(r, e)| (r.stream, *e)).collect();
        assert_eq!(
            &all[2..],
            [(2, EndReason::Unanswered), (3, EndReason::Unanswered)]
        );
        assert_eq!(t.table.stats().early_dropped, 2);
        assert_eq!(t.table.stats().expired_unanswered, 4);
        let recs = records(t);
        assert!(recs.iter().all(|r| r.state == "S0"));
        assert_eq!(recs.len(), 5);
    }

    /// The most entries the table's maps and queues held while taking
    /// `syns` unanswered SYNs 10 µs apart, from `port(k)` of host `host(k)`
    /// with initial sequence number `k`.
    fn retained_by_a_syn_flood(
        syns: u32,
        expiry: Expiry,
        tuple: impl Fn(u32) -> ([u8; 4], u16),
    ) -> [usize; 4] {
        let mut table = FlowTable::with_expiry(false, expiry);
        let mut events = Vec::new();
        let mut most = [0; 4];
        for k in 0..syns {
            let (host, port) = tuple(k);
            let data = ipv4(host, S, &tcp(port, 80, k.wrapping_mul(7919), 0, SYN, b""));
            let Decoded::Tcp(seg) = decode(LinkType::RAW, &frame(i64::from(k) * 10, &data)) else {
                panic!("test packet must decode")
            };
            table.on_segment(&seg, &[], &mut events);
            events.clear();
            let held = [
                table.by_key.len(),
                table.deadlines.len(),
                table.unanswered.len(),
                table.tombstones.len(),
            ];
            for (m, h) in most.iter_mut().zip(held) {
                *m = (*m).max(h);
            }
        }
        most
    }

    #[test]
    fn a_syn_flood_holds_state_within_the_caps() {
        let expiry = Expiry {
            max_unanswered: 500,
            max_tombstones: 1000,
            ..Expiry::default()
        };
        let many_hosts = |k: u32| {
            let [_, a, b, c] = k.to_be_bytes();
            ([10, a, b, c], 1024 + (k % 50_000) as u16)
        };
        let one_tuple = |_| (C, 40000);
        for (what, tuple) in [
            ("many hosts", &many_hosts as &dyn Fn(u32) -> ([u8; 4], u16)),
            ("one 4-tuple, a new ISN each", &one_tuple),
        ] {
            let small = retained_by_a_syn_flood(20_000, expiry, tuple);
            let large = retained_by_a_syn_flood(60_000, expiry, tuple);
            let [keys, deadlines, unanswered, tombstones] = large;
            // Live SYNs and tombstones within their caps; the queues of
            // entries to look at again within twice the live ones and a
            // constant (they are compacted).
            assert!(keys <= 500 + 1000 + 1, "{what}: {keys} keys");
            assert!(tombstones <= 1000 + 1, "{what}: {tombstones} tombstones");
            assert!(
                deadlines <= 2 * 500 + 1024 + 1,
                "{what}: {deadlines} deadlines"
            );
            assert!(
                unanswered <= 2 * 500 + 1024 + 1,
                "{what}: {unanswered} unanswered"
            );
            // Three times the SYNs, no more state.
            assert_eq!(small, large, "{what}");
        }
    }

    #[test]
    fn events_tell_requests_answers_and_closes_as_they_happen() {
        let mut t = Tracker::new(true);
        feed(
            &mut t,
            40030,
            80,
            &[
                (0, true, 100, 0, SYN, b""),
                (1, false, 500, 101, SYNACK, b""),
                (2, true, 101, 501, ACK, b""),
                (
                    3,
                    true,
                    101,
                    501,
                    DATA,
                    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                ),
                (
                    5,
                    false,
                    501,
                    128,
                    DATA,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                ),
                (6, true, 128, 539, FIN, b""),
            ],
        );
        let kinds: Vec<String> = t
            .events
            .iter()
            .map(|e| match e {
                FlowEvent::Opened { stream, .. } => format!("open {stream}"),
                FlowEvent::Request { depth, sent, .. } => format!("request {depth} at {}", sent.0),
                FlowEvent::Answered { depth, at, .. } => format!("answer {depth} at {}", at.0),
                FlowEvent::Completed { depth, at, .. } => format!("complete {depth} at {}", at.0),
                FlowEvent::Closed { by_client, rst, .. } => format!("close {by_client} {rst}"),
                FlowEvent::ClientReset { .. } => "client reset".to_string(),
                FlowEvent::Lossy { .. } => "lossy".to_string(),
                FlowEvent::Finished(f) => format!("finished {}", f.record.stream),
                FlowEvent::Settled(s) => format!("settled {}", s.requests.len()),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "open 0",
                "request 1 at 3000",
                "answer 1 at 5000",
                "complete 1 at 5000",
                "close true false"
            ]
        );
    }

    #[test]
    fn a_keep_alive_connection_hands_out_its_answered_requests_as_it_goes() {
        let mut t = Tracker::new(true);
        let mut pkts: Vec<Pkt<'_>> = vec![
            (0, true, 100, 0, SYN, b""),
            (1, false, 500, 101, SYNACK, b""),
            (2, true, 101, 501, ACK, b""),
        ];
        const REQ: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (mut c, mut s) = (101u32, 501u32);
        for i in 0..5i64 {
            pkts.push((10 + i * 10, true, c, s, DATA, REQ));
            c += REQ.len() as u32;
            pkts.push((15 + i * 10, false, s, c, DATA, RESP));
            s += RESP.len() as u32;
        }
        feed(&mut t, 40030, 80, &pkts);
        let settled: Vec<u32> = t
            .events
            .iter()
            .filter_map(|e| match e {
                FlowEvent::Settled(s) => Some(s.requests.iter().map(|r| r.depth)),
                _ => None,
            })
            .flatten()
            .collect();
        // The first stays for its verdict; the others leave once answered.
        assert_eq!(settled, [2, 3, 4, 5]);
        let AppState::Open(analyzer) = &live(&t, 40030).app else {
            panic!("the analyser runs while the connection is open")
        };
        assert_eq!(analyzer.exchanges().len(), 1);
        // A sixth, unanswered at the end: held, and given with the first.
        feed(&mut t, 40030, 80, &[(100, true, c, s, DATA, REQ)]);
        t.table.finish(&mut t.events);
        let finished = t.events.iter().find_map(|e| match e {
            FlowEvent::Finished(f) => Some(f),
            _ => None,
        });
        let f = finished.expect("finalised at the end of the input");
        let depths: Vec<u32> = f.requests.iter().map(|r| r.depth).collect();
        assert_eq!(depths, [1, 6]);
        assert_eq!(f.record.requests, Some(6));
    }

    /// The live connection between 10.0.0.1:`cport` and 10.0.0.2:80.
    fn live(t: &Tracker, cport: u16) -> &Connection {
        let (key, _) = FlowKey::of(SocketAddr::from((C, cport)), SocketAddr::from((S, 80)));
        match t.table.by_key.get(&key) {
            Some(Slot::Live(c)) => c,
            _ => panic!("no live connection on port {cport}"),
        }
    }

    #[test]
    fn records_sort_in_place_by_time_sent() {
        let mut conns = vec![
            crate::testkit::connection_record(2, "1.1.1.1:1", "2.2.2.2:80", 0.0),
            crate::testkit::connection_record(0, "1.1.1.1:2", "2.2.2.2:80", 0.0),
        ];
        let req = |stream: u64, sent: f64| crate::testkit::request_record(stream, 1, sent);
        let mut reqs = vec![
            req(4, 3.0),
            req(1, 1.0),
            req(3, 2.0),
            req(0, 1.0),
            req(2, 0.5),
        ];
        sort_records(&mut conns, &mut reqs);
        assert_eq!(conns.iter().map(|c| c.stream).collect::<Vec<_>>(), [0, 2]);
        let order: Vec<u64> = reqs.iter().map(|r| r.stream).collect();
        assert_eq!(order, [2, 0, 1, 3, 4]);
    }
}
