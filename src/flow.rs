//! Connection tracking: one [`Connection`] per TCP stream, numbered exactly as
//! Wireshark numbers `tcp.stream`, with per-side SYN/FIN/RST counts, Zeek's
//! `conn_state` and `history`, and the application analyser fed in order.
//!
//! Everything here is a pure state machine over decoded segments: no I/O, no
//! locks, no clock (time is the packet's timestamp). The table keeps a small
//! summary per connection for the report; the heavy per-connection state (the
//! HTTP analyser's buffers) is dropped as soon as a connection has closed, so
//! memory grows with the connections open at once, not with the capture.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::http::{AppProtocol, ConnectionAnalyzer, HttpExchange, HttpSignals};
use crate::report::{ConnectionRecord, RequestRecord};
use crate::wire::{Direction, Segment, SeqNumber, Timestamp};

/// Both directions of a connection map to one key: the lower address first
/// (Zeek's `InitTuple` with a `flipped` flag, Wireshark's conversation key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    low: SocketAddr,
    high: SocketAddr,
}

/// The two sides of a [`FlowKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Sent by `FlowKey::low`.
    Low = 0,
    High = 1,
}

impl FlowKey {
    /// The key of a segment from `src` to `dst`, and which side sent it.
    fn of(src: SocketAddr, dst: SocketAddr) -> (FlowKey, Side) {
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
            Side::Low => self.low,
            Side::High => self.high,
        }
    }
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Low => Side::High,
            Side::High => Side::Low,
        }
    }
}

/// How the client and server roles of a connection were decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    /// The client sent a SYN.
    Syn,
    /// No SYN seen; the server sent a SYN+ACK.
    SynAck,
    /// No handshake seen: the well-known (below 1024) or else lower port is the
    /// server; with equal ports, the first packet's destination.
    Port,
}

impl Orientation {
    fn as_str(self) -> &'static str {
        match self {
            Orientation::Syn => "syn",
            Orientation::SynAck => "syn-ack",
            Orientation::Port => "port",
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
    closed_by: Option<(Side, &'static str, Timestamp)>,
    handshake_rtt_ms: Option<f64>,
    /// The server's ISN, to recognise the client's ACK of the SYN+ACK.
    server_isn: Option<SeqNumber>,
    app: AppState,
}

/// The application analyser while the connection is open, its results after.
#[derive(Debug)]
enum AppState {
    Disabled,
    Open(Box<ConnectionAnalyzer>),
    Done(Box<AppResult>),
}

#[derive(Debug)]
struct AppResult {
    protocol: AppProtocol,
    tls_sni: Option<String>,
    alpn: Vec<String>,
    exchanges: Vec<HttpExchange>,
    signals: HttpSignals,
}

impl AppResult {
    fn from(mut analyzer: ConnectionAnalyzer) -> AppResult {
        analyzer.finish();
        AppResult {
            protocol: analyzer.protocol(),
            tls_sni: analyzer.tls_sni().map(str::to_string),
            alpn: analyzer.alpn().to_vec(),
            exchanges: analyzer.take_exchanges(),
            signals: analyzer.signals().clone(),
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
    fn new(stream: u64, key: FlowKey, first: &Segment, sender: Side, http: bool) -> Connection {
        let (client, orientation) = if first.flags.is_syn_only() {
            (sender, Orientation::Syn)
        } else if first.flags.is_syn_ack() {
            (sender.other(), Orientation::SynAck)
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
            app: if http {
                AppState::Open(Box::new(ConnectionAnalyzer::new()))
            } else {
                AppState::Disabled
            },
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
            // A SYN+ACK settles who the server is: Zeek flips the connection,
            // swapping the case of the letters so far, and marks it with '^'.
            if self.client == sender {
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
                self.history.push('^');
            }
            self.client = sender.other();
            self.orientation = Orientation::SynAck;
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
        if flags.is_syn_ack() && flags.ack() {
            // A SYN+ACK acknowledges the peer's ISN: Wireshark takes the peer's
            // base_seq from it when the peer's SYN was not seen.
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
            let how = if flags.rst() { "rst" } else { "fin" };
            self.closed_by = Some((sender, how, seg.ts));
        }
        self.update_handshake_rtt(seg, sender);
        self.update_history(seg, sender, is_client);
        self.note_content_gap(seg, sender);
        self.ends[sender as usize].note_seen(seg);
        self.update_state(seg, sender);

        let dir = self.direction(sender);
        if let AppState::Open(analyzer) = &mut self.app {
            analyzer.on_segment(dir, seg, payload);
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
        let mut letters: Vec<char> = Vec::new();
        let end = &mut self.ends[sender as usize];
        // Zeek's CheckHistory: records the letter the first time; true if seen before.
        let check = |end: &mut Endpoint, letters: &mut Vec<char>, mask: u32, code: char| {
            if end.hist_seen & mask == 0 {
                end.hist_seen |= mask;
                letters.push(code);
                false
            } else {
                true
            }
        };
        if bits > 1 {
            if flags.fin() && flags.rst() {
                check(end, &mut letters, hist::FIN_RST, 'I');
            } else {
                check(end, &mut letters, hist::MULTI_FLAG, 'Q');
            }
        } else if bits == 1 {
            if flags.syn() {
                let code = if flags.ack() { 'H' } else { 'S' };
                if check(end, &mut letters, hist::SYN, code) && end.last_syn != Some(seg.seq) {
                    letters.push(code);
                }
                end.last_syn = Some(seg.seq);
            }
            if flags.fin() {
                let fin_seq = seg.seq + seg.payload_len;
                if check(end, &mut letters, hist::FIN, 'F') && end.last_fin != Some(fin_seq) {
                    letters.push('F');
                }
                end.last_fin = Some(fin_seq);
            }
            if flags.rst() {
                if check(end, &mut letters, hist::RST, 'R') && end.last_rst != Some(seg.seq) {
                    letters.push('R');
                }
                end.last_rst = Some(seg.seq);
            }
        } else if seg.payload_len > 0 {
            check(end, &mut letters, hist::DATA, 'D');
        } else if flags.ack() {
            check(end, &mut letters, hist::ACK, 'A');
        }

        // Retransmission: payload that ends at or before what this side already sent.
        if seg.payload_len > 0 && !flags.syn() {
            let seg_end = seg.seq + seg.payload_len;
            match end.max_seq_end {
                Some(max) if seg_end <= max => {
                    end.retransmits += 1;
                    if is_scaled_count(end.retransmits) {
                        letters.push('T');
                    }
                }
                Some(max) if seg_end > max => end.max_seq_end = Some(seg_end),
                _ => end.max_seq_end = Some(seg_end),
            }
        }
        if seg.window == 0 && bits == 0 {
            end.zero_windows += 1;
            if is_scaled_count(end.zero_windows) {
                letters.push('W');
            }
        }
        for c in letters {
            self.history
                .push(if is_client { c } else { c.to_ascii_lowercase() });
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

    /// Closed for good: a RST from either side, or a FIN from both.
    fn is_finished(&self) -> bool {
        let [a, b] = &self.ends;
        a.rst > 0 || b.rst > 0 || (a.fin > 0 && b.fin > 0)
    }

    fn settle_app(&mut self) {
        if let AppState::Open(_) = self.app {
            let AppState::Open(analyzer) = std::mem::replace(&mut self.app, AppState::Disabled)
            else {
                unreachable!("matched just above")
            };
            self.app = AppState::Done(Box::new(AppResult::from(*analyzer)));
        }
    }

    /// Zeek's `conn_state` from the two endpoint states (base/protocols/conn/main.zeek).
    fn conn_state(&self) -> &'static str {
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
                "REJ"
            } else if o_inactive {
                "RSTRH"
            } else {
                "RSTR"
            }
        } else if os == Reset {
            if r_inactive {
                if self.history_is_syn_then_reset() {
                    "RSTOS0"
                } else {
                    "OTH"
                }
            } else {
                "RSTO"
            }
        } else if rs == Closed && os == Closed {
            "SF"
        } else if os == Closed {
            if r_inactive {
                "SH"
            } else {
                "S2"
            }
        } else if rs == Closed {
            if o_inactive {
                "SHR"
            } else {
                "S3"
            }
        } else if os == SynSent && rs == Inactive {
            "S0"
        } else if os == Established && rs == Established {
            "S1"
        } else {
            "OTH"
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
        // The exchanges move into the report; the rest of the result stays.
        let exchanges = match &mut self.app {
            AppState::Done(result) => std::mem::take(&mut result.exchanges),
            _ => Vec::new(),
        };
        let app = match &self.app {
            AppState::Done(result) => Some(result.as_ref()),
            _ => None,
        };
        let protocol = app.map_or(AppProtocol::Unknown, |a| a.protocol);
        let requests: Vec<RequestRecord> = exchanges
            .into_iter()
            .map(|x| RequestRecord {
                stream,
                depth: x.depth,
                reused: x.depth > 1,
                method: x.method,
                target: x.target,
                host: x.host,
                status: x.status,
                sent: x.sent.as_secs_f64(),
                answered: x.answered.map(Timestamp::as_secs_f64),
                h2_stream: x.h2_stream,
                tag: x.tag,
                seen_in: "capture",
                why_new: None,
            })
            .collect();
        let request_count = match (app, protocol) {
            (None, _) => None,
            (Some(_), AppProtocol::Tls) => None,
            (Some(_), _) => Some(requests.len() as u32),
        };
        let record = ConnectionRecord {
            stream: self.stream,
            client: format_addr(self.key.addr(self.client)),
            server: format_addr(self.key.addr(self.client.other())),
            first_seen: self.first_seen.as_secs_f64(),
            last_seen: self.last_seen.as_secs_f64(),
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
                    "client"
                } else {
                    "server"
                }
            }),
            closed_with: self.closed_by.map(|(_, how, _)| how),
            closed_at: self.closed_by.map(|(_, _, at)| at.as_secs_f64()),
            state,
            history: self.history.clone(),
            orientation: self.orientation.as_str(),
            protocol: protocol.as_str(),
            tls_sni: app.and_then(|a| a.tls_sni.clone()),
            alpn: app.map(|a| a.alpn.clone()).unwrap_or_default(),
            requests: request_count,
            http: app.map(|a| a.signals.clone()),
        };
        (record, requests)
    }
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

/// `ip:port`, with IPv6 in brackets (`[::1]:8080`), as the report promises.
pub fn format_addr(addr: SocketAddr) -> String {
    addr.to_string()
}

/// All connections of a capture, by 4-tuple and by stream number.
#[derive(Debug)]
pub struct FlowTable {
    /// The current (latest) stream of each 4-tuple.
    by_key: HashMap<FlowKey, u64>,
    /// Connections by stream number; `None` once handed out.
    connections: Vec<Option<Connection>>,
    /// Connections that neither a RST nor a FIN from each side has ended yet.
    open: usize,
    http: bool,
}

impl FlowTable {
    /// `http`: whether to run the application analyser on each connection.
    pub fn new(http: bool) -> FlowTable {
        FlowTable {
            by_key: HashMap::new(),
            connections: Vec::new(),
            open: 0,
            http,
        }
    }

    /// Account one segment; returns its stream number.
    pub fn on_segment(&mut self, seg: &Segment, payload: &[u8]) -> u64 {
        let (key, sender) = FlowKey::of(seg.src, seg.dst);
        let existing = self.by_key.get(&key).copied();
        let stream = match existing {
            Some(stream) if !self.starts_new_stream(stream, seg, sender) => stream,
            _ => {
                let stream = self.connections.len() as u64;
                let conn = Connection::new(stream, key, seg, sender, self.http);
                self.connections.push(Some(conn));
                self.by_key.insert(key, stream);
                self.open += 1;
                stream
            }
        };
        if let Some(Some(conn)) = self.connections.get_mut(stream as usize) {
            let was_finished = conn.is_finished();
            conn.on_segment(seg, sender, payload);
            if !was_finished && conn.is_finished() {
                self.open -= 1;
            }
        }
        stream
    }

    /// Wireshark starts a new stream on a known 4-tuple when a SYN (without
    /// ACK) carries a sequence number other than the base sequence number of
    /// its direction ("TCP port numbers reused", packet-tcp.c).
    fn starts_new_stream(&self, stream: u64, seg: &Segment, sender: Side) -> bool {
        if !seg.flags.is_syn_only() {
            return false;
        }
        match self.connections.get(stream as usize) {
            Some(Some(conn)) => {
                matches!(conn.ends[sender as usize].base_seq, Some(base) if base != seg.seq)
            }
            _ => true,
        }
    }

    /// Number of streams so far.
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// Connections not yet ended by a RST or by a FIN from each side.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Every connection's record and its requests, by stream number.
    pub fn finish(self) -> (Vec<ConnectionRecord>, Vec<RequestRecord>) {
        let mut records = Vec::with_capacity(self.connections.len());
        let mut requests = Vec::new();
        for conn in self.connections.into_iter().flatten() {
            let (record, mut reqs) = conn.into_records();
            records.push(record);
            requests.append(&mut reqs);
        }
        // Sort small keys, then move each (large) record once.
        let mut order: Vec<(f64, u64, u32, usize)> = requests
            .iter()
            .enumerate()
            .map(|(i, r)| (r.sent, r.stream, r.depth, i))
            .collect();
        order.sort_unstable_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then(a.1.cmp(&b.1))
                .then(a.2.cmp(&b.2))
                .then(a.3.cmp(&b.3))
        });
        let mut slots: Vec<Option<RequestRecord>> = requests.into_iter().map(Some).collect();
        let requests = order
            .into_iter()
            .filter_map(|(.., i)| slots[i].take())
            .collect();
        (records, requests)
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
    fn feed(table: &mut FlowTable, cport: u16, sport: u16, pkts: &[Pkt<'_>]) -> Vec<u64> {
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
                table.on_segment(&seg, payload)
            })
            .collect()
    }

    fn records(table: FlowTable) -> Vec<ConnectionRecord> {
        table.finish().0
    }

    const SYN: u8 = F::SYN;
    const SYNACK: u8 = F::SYN | F::ACK;
    const ACK: u8 = F::ACK;
    const DATA: u8 = F::ACK | F::PSH;
    const FIN: u8 = F::FIN | F::ACK;
    const RST: u8 = F::RST;

    #[test]
    fn full_connection_closed_by_server() {
        let mut t = FlowTable::new(false);
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
            (r.client.as_str(), r.server.as_str()),
            ("10.0.0.1:40000", "10.0.0.2:80")
        );
        assert_eq!((r.syn, r.syn_ack, r.fin_client, r.fin_server), (1, 1, 1, 1));
        assert_eq!((r.packets_client, r.packets_server), (4, 4));
        assert_eq!((r.payload_client, r.payload_server), (18, 19));
        assert_eq!(r.closed_by, Some("server"));
        assert_eq!(r.closed_with, Some("fin"));
        assert_eq!(r.state, "SF");
        assert_eq!(r.history, "ShADdfFa");
        assert_eq!(r.handshake_rtt_ms, Some(3.0));
        assert_eq!(r.orientation, "syn");
    }

    #[test]
    fn refused_connection_is_rej() {
        let mut t = FlowTable::new(false);
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
        assert_eq!(r.closed_by, Some("server"));
        assert_eq!(r.closed_with, Some("rst"));
    }

    #[test]
    fn syn_with_new_isn_on_known_tuple_starts_a_new_stream() {
        let mut t = FlowTable::new(false);
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

    #[test]
    fn retransmitted_syn_stays_in_its_stream_and_counts() {
        let mut t = FlowTable::new(false);
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
    fn capture_starting_mid_connection_orients_by_port() {
        let mut t = FlowTable::new(false);
        // The first packet seen is the server's response.
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
        assert_eq!(r.client, "10.0.0.1:51000");
        assert_eq!(r.orientation, "port");
        assert_eq!((r.syn, r.syn_ack), (0, 0));
        assert_eq!(r.handshake_rtt_ms, None);
        assert_eq!(r.closed_by, None);
        assert_eq!(r.history, "^dA");
        assert_eq!(r.state, "OTH");
    }

    #[test]
    fn well_known_port_wins_over_lower_port() {
        let mut t = FlowTable::new(false);
        // Either side may speak first; the port below 1024 serves.
        feed(&mut t, 2000, 443, &[(0, true, 1, 1, ACK, b"x")]);
        feed(&mut t, 5000, 443, &[(0, false, 1, 1, ACK, b"y")]);
        let recs = records(t);
        assert_eq!(recs[0].server, "10.0.0.2:443");
        assert_eq!(recs[1].server, "10.0.0.2:443");
    }

    #[test]
    fn syn_ack_first_makes_its_sender_the_server() {
        let mut t = FlowTable::new(false);
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
        assert_eq!(r.client, "10.0.0.1:40003");
        assert_eq!(r.orientation, "syn-ack");
    }

    #[test]
    fn retransmissions_mark_history_scaled() {
        let mut t = FlowTable::new(false);
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
        let mut t = FlowTable::new(false);
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
        let states: Vec<&str> = records(t).iter().map(|r| r.state).collect();
        assert_eq!(states, ["S2", "RSTO", "S0"]);
    }
}
