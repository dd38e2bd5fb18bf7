//! Application-layer attribution inside one TCP connection: which HTTP requests
//! it carried, in what order, and the keep-alive signals both sides sent.
//!
//! A [`ConnectionAnalyzer`] gets every segment of its connection. Each
//! direction is reassembled ([`crate::reassembly`]), and the client's first
//! bytes decide what the connection speaks: the HTTP/2 preface (h2c with prior
//! knowledge), a TLS handshake record (only the ClientHello is read), or an
//! HTTP/1 request line. HTTP/1 can switch to h2c through `Upgrade: h2c` and a
//! 101 (RFC 9113 §3.2 as RFC 7540 §3.2 defined it). A capture that starts
//! mid-connection is recognised as HTTP/2 by the shape of its first frames
//! (two plausible frame headers back to back), else parsed as HTTP/1 from the
//! first line that reads as a start line.
//!
//! Lost bytes never make the analyser guess silently: HTTP/1 resynchronises at
//! the next start line and counts it; HTTP/2 stops at a gap it cannot skip.
//! Everything it noticed is in [`HttpSignals`], documented field by field in
//! `docs/http-signals.md`.

pub(crate) mod h1;
pub(crate) mod h2;
mod hpack;
pub(crate) mod tls;

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::reassembly::{Delivery, Reassembler};
use crate::wire::{Direction, Segment, Timestamp};

use h1::{BodyStep, ChunkState, Framing, HeadParse, Resync};

/// What a connection carried, as far as the bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppProtocol {
    Http10,
    Http11,
    H2c,
    Tls,
    #[default]
    Unknown,
}

impl Serialize for AppProtocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for AppProtocol {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl AppProtocol {
    /// The report's spelling: "http/1.0" | "http/1.1" | "h2c" | "tls" | "unknown".
    pub fn as_str(self) -> &'static str {
        match self {
            AppProtocol::Http10 => "http/1.0",
            AppProtocol::Http11 => "http/1.1",
            AppProtocol::H2c => "h2c",
            AppProtocol::Tls => "tls",
            AppProtocol::Unknown => "unknown",
        }
    }
}

/// A request's `Host` (HTTP/2: `:authority`, else `host`). The requests of
/// a connection that repeat the one before share its copy.
pub type Host = std::sync::Arc<str>;

/// One request seen on a connection, with its response if one was seen.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpExchange {
    /// 1-based position on the connection (HTTP/2: order of the HEADERS).
    pub depth: u32,
    pub method: Method,
    pub target: String,
    pub host: Option<Host>,
    pub status: Option<u16>,
    /// Timestamp of the segment carrying the request's first byte.
    pub sent: Timestamp,
    /// Timestamp of the segment carrying the response's first byte.
    pub answered: Option<Timestamp>,
    /// Timestamp of the segment carrying the response's last byte (HTTP/1:
    /// the end of its body by its length, its last chunk, or the server's
    /// FIN for a close-delimited one; HTTP/2: its HEADERS, as streams do
    /// not hold the connection). None while the response is incomplete.
    pub completed: Option<Timestamp>,
    pub h2_stream: Option<u32>,
    /// Value of the `x-conntrace-id` request header.
    pub tag: Option<String>,
}

/// A GOAWAY frame (RFC 9113 §6.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GoAway {
    /// "client" or "server".
    pub sender: &'static str,
    pub last_stream_id: u32,
    pub error_code: u32,
}

/// Most promised HTTP/2 streams remembered per connection.
const MAX_PUSHED_STREAMS: usize = 4096;

/// Most GOAWAY frames recorded per connection (a graceful shutdown sends two).
const MAX_GOAWAYS: usize = 16;

/// Keep-alive and connection-level signals seen on a connection (reported as
/// the connection's `http` object). Depths are 1-based request positions, as
/// in [`HttpExchange::depth`]. See `docs/http-signals.md`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct HttpSignals {
    /// Depth of the first request that sent `Connection: close`.
    pub client_close_depth: Option<u32>,
    /// Depth of the request whose response first sent `Connection: close`.
    pub server_close_depth: Option<u32>,
    /// Depth of the first HTTP/1.0 request without `Connection: keep-alive`.
    pub client_http10_depth: Option<u32>,
    /// Depth of the request answered by the first HTTP/1.0 response without
    /// `Connection: keep-alive`.
    pub server_http10_depth: Option<u32>,
    /// Depth of the request whose response had no length: its body ran to
    /// the server's close.
    pub close_delimited_depth: Option<u32>,
    /// `timeout=` of the first `Keep-Alive` response header, in seconds.
    pub keep_alive_timeout_s: Option<u64>,
    /// `max=` of the first `Keep-Alive` response header.
    pub keep_alive_max: Option<u64>,
    /// Protocol a 101 response switched to (its `Upgrade` value).
    pub upgrade: Option<String>,
    /// Depth of the request that the 101 answered.
    pub upgrade_depth: Option<u32>,
    /// Depth of a CONNECT request answered with 2xx: the connection became a
    /// tunnel; only a TLS ClientHello opening it is read.
    pub tunnel_depth: Option<u32>,
    /// 1xx responses other than 101 (100 Continue, 103 Early Hints).
    pub interim_responses: u32,
    /// The first request's `User-Agent` (at most 96 bytes): names the client
    /// library the diagnosis speaks to.
    pub user_agent: Option<String>,
    /// HTTP/2: the server's last SETTINGS_MAX_CONCURRENT_STREAMS.
    pub h2_max_concurrent_streams: Option<u32>,
    /// Final responses for which no request had been seen.
    pub unmatched_responses: u32,
    /// How HTTP/2 began: "prior_knowledge", "upgrade" or "midstream".
    pub h2_start: Option<&'static str>,
    /// HTTP/2 parsing stopped at a stream gap it could not skip.
    pub h2_stopped_at_gap: bool,
    /// HTTP/2 header blocks that could not be decoded.
    pub hpack_errors: u32,
    pub push_promises: u32,
    pub rst_stream_client: u32,
    pub rst_stream_server: u32,
    pub goaway: Vec<GoAway>,
    /// A direction started without its SYN: the capture began mid-connection.
    pub midstream: bool,
    pub stream_gaps_client: u32,
    pub stream_gaps_server: u32,
    pub missing_bytes_client: u64,
    pub missing_bytes_server: u64,
    /// Times HTTP/1 parsing skipped ahead to the next start line.
    pub resyncs: u32,
    /// Requests whose request line is malformed (`GET /HTTP/1.1`, an
    /// HTTP/0.9 `GET /`) but starts with a known method: counted as requests,
    /// as tshark and Zeek count them.
    pub malformed_requests: u32,
    /// Heads or bodies that did not parse as the protocol requires.
    pub framing_errors: u32,
    /// Messages still incomplete when the connection or capture ended.
    pub incomplete_messages: u32,
    /// Heads longer than the analyser reads (`h1::MAX_HEAD_BYTES`): a
    /// request is still listed (and a response still answers its request)
    /// with what its start line says, and parsing resumes at the next start
    /// line. Absent when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub oversized_heads: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Most bytes held unparsed per direction (a head, a frame, a hello, or
/// bytes waiting for the other direction to say what they are).
const MAX_TAIL_BYTES: usize = 512 * 1024;

/// Bytes a direction holds before its protocol is known from the other one.
const MAX_UNDECIDED_BYTES: usize = 64 * 1024;

const CLIENT: usize = 0;
const SERVER: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum H1State {
    Head,
    Body(u64),
    Chunked(ChunkState),
    UntilClose,
    /// Scanning for the next start line; `line_start` says whether the
    /// first byte begins a line.
    Resync {
        line_start: bool,
    },
    /// A request asked to switch protocols (Upgrade, CONNECT): what follows
    /// depends on the response.
    AwaitResponse,
}

#[derive(Debug, Default)]
enum Mode {
    #[default]
    Detect,
    H1(H1State),
    H2(Box<h2::FrameReader>),
    Tls,
    /// The client side of a CONNECT tunnel: a TLS ClientHello is read if one
    /// opens it.
    Tunnel,
    Opaque,
}

enum Flow {
    Consumed(usize),
    NeedMore,
    /// Cannot go on until the other direction says more.
    Wait,
    /// Consumed this many bytes and the direction now reads as `Mode`.
    Switch(usize, Mode),
}

/// Bytes of one direction received but not yet parsed, with the timestamps
/// of the segments they came in.
#[derive(Debug, Default)]
struct Tail {
    buf: Vec<u8>,
    marks: Vec<(usize, Timestamp)>,
    /// `buf` holds a line feed (kept as bytes come, so asking costs nothing).
    newline: bool,
}

impl Tail {
    fn push(&mut self, data: &[u8], ts: Timestamp) {
        if self.marks.last().map(|m| m.1) != Some(ts) {
            self.marks.push((self.buf.len(), ts));
        }
        self.newline = self.newline || data.contains(&b'\n');
        self.buf.extend_from_slice(data);
    }

    /// Timestamp of the segment that brought the byte at `pos`. Marks are in
    /// offset order, so this is a binary search: the parser asks at every
    /// step, and bytes held a segment at a time leave a mark each.
    fn ts_at(&self, pos: usize) -> Timestamp {
        let after = self.marks.partition_point(|m| m.0 <= pos);
        after
            .checked_sub(1)
            .map(|k| self.marks[k].1)
            .unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        if n >= self.buf.len() {
            self.clear();
            return;
        }
        // A parse that took nothing (bytes waiting for the other direction)
        // leaves the marks as they are.
        if n == 0 {
            return;
        }
        self.buf.drain(..n);
        // What a parse just read past costs as much again to look at.
        self.newline = self.newline && self.buf.contains(&b'\n');
        let keep = self.marks.partition_point(|m| m.0 <= n).saturating_sub(1);
        self.marks.drain(..keep);
        for mark in &mut self.marks {
            mark.0 = mark.0.saturating_sub(n);
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.marks.clear();
        self.newline = false;
    }
}

#[derive(Debug, Default)]
struct Side {
    reasm: Reassembler,
    tail: Tail,
    mode: Mode,
    waiting: bool,
    /// Bytes were lost before the protocol was known.
    lost_before_detect: bool,
}

/// Per-connection analyser fed with every segment of one TCP connection.
#[derive(Debug, Default)]
pub struct ConnectionAnalyzer {
    sides: [Side; 2],
    /// The requests still held: the first, then those after the
    /// [`ConnectionAnalyzer::drained`] ones handed out by
    /// [`ConnectionAnalyzer::take_settled`]. Indices below are of all the
    /// requests, held or not.
    exchanges: Vec<HttpExchange>,
    /// Requests after the first handed out while the connection went on.
    drained: usize,
    signals: HttpSignals,
    alpn: Vec<String>,
    sni: Option<String>,
    protocol: AppProtocol,
    /// The `Host` of the last HTTP/1 request, shared with the next ones
    /// that repeat it.
    host: Option<Host>,
    /// Index of the request the next final HTTP/1 response answers.
    next_answer: usize,
    /// Indices in `exchanges` of HTTP/0.9 simple requests (no version).
    http09: Vec<usize>,
    /// Index in `exchanges` of the request whose response the client side
    /// waits for (an Upgrade or CONNECT).
    awaited: Option<usize>,
    /// `Upgrade` value of the last request that offered one.
    upgrade_offer: Option<String>,
    /// HTTP/2 stream id to index in `exchanges`.
    h2_streams: HashMap<u32, usize>,
    /// Streams the server promised (PUSH_PROMISE): their responses answer
    /// no request of the client.
    h2_pushed: HashSet<u32>,
    /// When the header block being read on each side began.
    h2_block_ts: [Option<Timestamp>; 2],
    /// Index in `exchanges` of the HTTP/1 response whose body is being read.
    responding: Option<usize>,
    finished: bool,
    /// Bytes handed to the parsers, counting every re-reading of held ones.
    scanned: u64,
}

/// A request method: the registered ones borrowed from one table, any other
/// kept as sent, so a request costs no allocation for its method.
pub type Method = std::borrow::Cow<'static, str>;

/// `method` as a [`Method`].
pub fn method_of(method: &str) -> Method {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    match KNOWN.iter().find(|&&m| m == method) {
        Some(&m) => Method::Borrowed(m),
        None => Method::Owned(method.to_string()),
    }
}

/// Where request `idx` (of all) is in a list holding the first request and
/// those after `drained` handed out; `None` if it was handed out.
pub fn held_at(idx: usize, drained: usize) -> Option<usize> {
    match idx {
        0 => Some(0),
        _ if idx > drained => Some(idx - drained),
        _ => None,
    }
}

/// Empty lines (CR and LF bytes) at the start of `buf`: RFC 9112 §2.2 has
/// them ignored before a request line; a response's are skipped alike.
fn leading_blank(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count()
}

fn side_of(dir: Direction) -> usize {
    match dir {
        Direction::ToServer => CLIENT,
        Direction::ToClient => SERVER,
    }
}

impl ConnectionAnalyzer {
    pub fn new() -> ConnectionAnalyzer {
        ConnectionAnalyzer::default()
    }

    /// Feed one segment; `payload` is the captured payload bytes (possibly
    /// shorter than `seg.payload_len` when the snaplen cut the frame).
    pub fn on_segment(&mut self, dir: Direction, seg: &Segment, payload: &[u8]) {
        if self.finished {
            return;
        }
        let i = side_of(dir);
        if seg.flags.ack() {
            // The peer had these bytes before this segment left: they come
            // first in the exchange.
            self.sides[1 - i].reasm.peer_acked(seg.ack);
            self.drain(1 - i);
        }
        let d = self.sides[i].reasm.segment(seg, payload);
        self.signals.midstream |= self.sides[i].reasm.stats().started_midstream;
        self.deliver(i, d);
        self.drain(i);
        self.settle();
    }

    /// The connection ended or the capture did: settle what is pending.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        for i in [CLIENT, SERVER] {
            self.sides[i].reasm.flush();
            self.drain(i);
        }
        self.settle();
        if matches!(self.sides[CLIENT].mode, Mode::H1(H1State::AwaitResponse)) {
            self.sides[CLIENT].mode = Mode::H1(H1State::Head);
            self.pump(CLIENT);
        }
        if matches!(self.sides[SERVER].mode, Mode::Detect) {
            let held = &self.sides[SERVER].tail.buf;
            self.sides[SERVER].mode = if h2::looks_like_frames(held) == Some(true) {
                self.mark_h2("midstream");
                Mode::H2(Box::new(h2::FrameReader::at_frame()))
            } else {
                Mode::H1(H1State::Resync { line_start: true })
            };
            self.pump(SERVER);
        }
        self.settle();
        for side in &self.sides {
            let pending = match side.mode {
                Mode::H1(H1State::Body(_) | H1State::Chunked(_)) => true,
                Mode::H1(H1State::Head) => !side.tail.buf.is_empty(),
                _ => false,
            };
            self.signals.incomplete_messages += u32::from(pending);
        }
        for side in &mut self.sides {
            side.tail = Tail::default();
        }
        self.finished = true;
    }

    pub fn protocol(&self) -> AppProtocol {
        self.protocol
    }

    pub fn tls_sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    pub fn alpn(&self) -> &[String] {
        &self.alpn
    }

    /// Requests in order of depth.
    pub fn exchanges(&self) -> &[HttpExchange] {
        &self.exchanges
    }

    pub fn signals(&self) -> &HttpSignals {
        &self.signals
    }

    /// Bytes the parsers have read, each time they read them: a measure of
    /// the work done, linear in the bytes of the connection whatever the
    /// segments' sizes (held bytes are re-read only when new ones can
    /// complete what they began).
    pub fn scanned_bytes(&self) -> u64 {
        self.scanned
    }

    /// Move the requests out, leaving none: for a caller done with the
    /// analyser after [`ConnectionAnalyzer::finish`] (no copy of every string).
    pub fn take_exchanges(&mut self) -> Vec<HttpExchange> {
        std::mem::take(&mut self.exchanges)
    }

    /// The same for the signals, the SNI and the ALPN protocols.
    pub fn take_findings(&mut self) -> (HttpSignals, Option<String>, Vec<String>) {
        (
            std::mem::take(&mut self.signals),
            self.sni.take(),
            std::mem::take(&mut self.alpn),
        )
    }

    /// Requests after the first already handed out by
    /// [`ConnectionAnalyzer::take_settled`]: [`ConnectionAnalyzer::exchanges`]
    /// holds the first and those after them.
    pub fn drained(&self) -> usize {
        self.drained
    }

    /// Requests seen so far, held or handed out.
    fn count(&self) -> usize {
        self.exchanges.len() + self.drained
    }

    /// The request at `idx` (of all), if it is still held.
    fn exchange_mut(&mut self, idx: usize) -> Option<&mut HttpExchange> {
        let at = held_at(idx, self.drained)?;
        self.exchanges.get_mut(at)
    }

    /// Hand out the requests after the first whose responses are complete
    /// and that nothing read later can change: a keep-alive connection then
    /// holds only those still open, however many it carries. The first stays
    /// (its verdict is attached when the connection is finalised). None from
    /// `before` on (requests the caller has yet to tell about), and none past
    /// one still open: HTTP/2 answers in any order, and its requests go out
    /// in the order they were sent. An HTTP/2 stream handed out keeps its
    /// entry by id (some 16 bytes): a later frame on it then changes nothing,
    /// as it would have changed nothing on the request.
    pub fn take_settled(&mut self, before: usize) -> std::vec::Drain<'_, HttpExchange> {
        let h2 = !self.h2_streams.is_empty();
        if self.finished
            || !(h2 || matches!(self.protocol, AppProtocol::Http10 | AppProtocol::Http11))
        {
            return self.exchanges.drain(..0);
        }
        // Requests from `limit` on may still be answered, or are waited for.
        let limit = if h2 {
            before
        } else {
            [
                Some(before),
                Some(self.next_answer),
                self.responding,
                self.awaited,
                self.http09.iter().copied().min(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(0)
        };
        let settled = self
            .exchanges
            .iter()
            .enumerate()
            .skip(1)
            .take_while(|&(at, x)| at + self.drained < limit && x.completed.is_some())
            .count();
        if settled == 0 {
            return self.exchanges.drain(..0);
        }
        self.drained += settled;
        self.exchanges.drain(1..1 + settled)
    }

    fn drain(&mut self, i: usize) {
        while let Some(d) = self.sides[i].reasm.pop() {
            self.deliver(i, d);
        }
    }

    fn deliver<B: AsRef<[u8]>>(&mut self, i: usize, d: Delivery<B>) {
        if d.gap_before > 0 {
            self.lost(i, d.gap_before);
        }
        let data = d.data.as_ref();
        if !data.is_empty() {
            self.bytes(i, data, d.ts);
        }
        if d.gap_after > 0 {
            self.lost(i, d.gap_after);
        }
        if d.fin {
            self.ended(i, d.ts);
        }
    }

    fn bytes(&mut self, i: usize, data: &[u8], ts: Timestamp) {
        let mut tail = std::mem::take(&mut self.sides[i].tail);
        if tail.buf.is_empty() {
            let n = self.parse(i, data, &|_| ts);
            if n < data.len() {
                tail.push(&data[n..], ts);
            }
        } else {
            let can_progress = self.can_progress(i, &tail, data);
            tail.push(data, ts);
            if can_progress {
                let n = self.parse(i, &tail.buf, &|p| tail.ts_at(p));
                tail.consume(n);
            }
        }
        if tail.buf.len() > MAX_TAIL_BYTES {
            self.signals.framing_errors += 1;
            tail.clear();
            self.sides[i].mode = Mode::Opaque;
            self.sides[i].waiting = false;
        }
        self.sides[i].tail = tail;
    }

    /// Could `data`, appended to the unparsed `held` bytes, let the parser
    /// of direction `i` go on? A head needs its blank line, a chunk size or a
    /// start line its line end; without them re-parsing the held bytes would
    /// only cost time (quadratic in a head sent a byte per segment).
    fn can_progress(&self, i: usize, tail: &Tail, data: &[u8]) -> bool {
        let held = tail.buf.as_slice();
        // The bytes around the seam, for a pattern split between the two.
        let seam: Vec<u8> = held[held.len().saturating_sub(2)..]
            .iter()
            .chain(&data[..data.len().min(2)])
            .copied()
            .collect();
        let has = |pattern: &[u8]| {
            data.windows(pattern.len()).any(|w| w == pattern)
                || seam.windows(pattern.len()).any(|w| w == pattern)
        };
        let newline = data.contains(&b'\n');
        let blank_line = || has(b"\n\n") || has(b"\n\r\n");
        // The held bytes reach a limit with these: the parser decides once.
        let reaches = |limit: usize| held.len() < limit && held.len() + data.len() >= limit;
        match &self.sides[i].mode {
            // The first line decides (a start line, an HTTP/0.9 request, the
            // h2 preface); after it only the blank line can, or the head
            // growing past its limit.
            Mode::H1(H1State::Head) => {
                (newline && !tail.newline)
                    || blank_line()
                    || held.len() < h2::PREFACE.len()
                    || reaches(h1::MAX_HEAD_BYTES)
            }
            Mode::H1(H1State::Chunked(ChunkState::Trailers)) => blank_line(),
            Mode::H1(H1State::Chunked(ChunkState::Size) | H1State::Resync { .. }) => newline,
            Mode::H1(H1State::AwaitResponse) => false,
            // A line end, or a control byte a request line cannot hold (tab
            // and CR can: they do not decide), or the limits.
            Mode::Detect if i == CLIENT => {
                held.len() < 64
                    || newline
                    || data
                        .iter()
                        .any(|&b| b.is_ascii_control() && b != b'\r' && b != b'\t')
                    || reaches(h1::MAX_HEAD_BYTES)
                    || reaches(MAX_UNDECIDED_BYTES)
            }
            _ => true,
        }
    }

    /// Parse what a direction holds (after the other direction unblocked it).
    fn pump(&mut self, i: usize) {
        let mut tail = std::mem::take(&mut self.sides[i].tail);
        if !tail.buf.is_empty() {
            let n = self.parse(i, &tail.buf, &|p| tail.ts_at(p));
            tail.consume(n);
        }
        self.sides[i].tail = tail;
    }

    /// Re-run directions that waited for the other one.
    fn settle(&mut self) {
        for _ in 0..3 {
            let mut again = false;
            for i in [CLIENT, SERVER] {
                if self.sides[i].waiting {
                    self.sides[i].waiting = false;
                    self.pump(i);
                    again |= !self.sides[i].waiting;
                }
            }
            if !again {
                break;
            }
        }
    }

    /// Run a direction's parser over `data`; returns the bytes consumed.
    fn parse(&mut self, i: usize, data: &[u8], at: &dyn Fn(usize) -> Timestamp) -> usize {
        self.scanned += data.len() as u64;
        let mut mode = std::mem::take(&mut self.sides[i].mode);
        let mut pos = 0;
        let mut idle = 0;
        while pos < data.len() && idle < 8 {
            let rest = &data[pos..];
            let ts = at(pos);
            let flow = match &mut mode {
                Mode::Detect if i == CLIENT => self.detect_client(rest),
                Mode::Detect => self.detect_server(rest),
                Mode::H1(state) if i == CLIENT => self.request_step(state, rest, ts),
                Mode::H1(state) => self.response_step(state, rest, ts),
                Mode::H2(reader) => self.h2_step(i, reader, rest, ts),
                Mode::Tls => self.tls_step(rest),
                Mode::Tunnel => match tls::looks_like_tls(rest) {
                    None => Flow::NeedMore,
                    Some(true) => Flow::Switch(0, Mode::Tls),
                    Some(false) => Flow::Switch(rest.len(), Mode::Opaque),
                },
                Mode::Opaque => Flow::Consumed(rest.len()),
            };
            match flow {
                Flow::Consumed(0) => idle += 1,
                Flow::Consumed(n) => {
                    pos += n;
                    idle = 0;
                }
                Flow::NeedMore => break,
                Flow::Wait => {
                    self.sides[i].waiting = true;
                    break;
                }
                Flow::Switch(n, next) => {
                    pos += n;
                    mode = next;
                    idle = if n == 0 { idle + 1 } else { 0 };
                }
            }
        }
        self.sides[i].mode = mode;
        pos.min(data.len())
    }

    fn detect_client(&mut self, rest: &[u8]) -> Flow {
        let midstream = self.sides[CLIENT].reasm.stats().started_midstream
            || self.sides[CLIENT].lost_before_detect;
        let prefix = rest.len().min(h2::PREFACE.len());
        if rest[..prefix] == h2::PREFACE[..prefix] {
            if prefix < h2::PREFACE.len() {
                return Flow::NeedMore;
            }
            self.mark_h2("prior_knowledge");
            self.decide_server(|| Mode::H2(Box::new(h2::FrameReader::at_frame())));
            return Flow::Switch(0, Mode::H2(Box::new(h2::FrameReader::client())));
        }
        match tls::looks_like_tls(rest) {
            None => return Flow::NeedMore,
            Some(true) => {
                self.protocol = AppProtocol::Tls;
                self.decide_server(|| Mode::Opaque);
                return Flow::Switch(0, Mode::Tls);
            }
            Some(false) => {}
        }
        // RFC 9112 §2.2: empty lines before a request line are ignored;
        // consumed, so that they are not read again with the next bytes.
        let blank = leading_blank(rest);
        if blank > 0 {
            return Flow::Consumed(blank);
        }
        let text = rest;
        match text.iter().position(|&b| b == b'\n') {
            Some(end)
                if h1::is_request_line(text[..end].trim_ascii_end())
                    || h1::lenient_request_line(&text[..end]).is_some() =>
            {
                self.decide_server(|| Mode::H1(H1State::Head));
                return Flow::Switch(0, Mode::H1(H1State::Head));
            }
            None if text.len() < h1::MAX_HEAD_BYTES
                && !text
                    .iter()
                    .any(|&b| b.is_ascii_control() && b != b'\r' && b != b'\t') =>
            {
                return Flow::NeedMore;
            }
            _ => {}
        }
        if !midstream {
            self.decide_server(|| Mode::Opaque);
            return Flow::Switch(0, Mode::Opaque);
        }
        match h2::looks_like_frames(rest) {
            None if rest.len() < MAX_UNDECIDED_BYTES => Flow::NeedMore,
            Some(true) => {
                self.mark_h2("midstream");
                self.decide_server(|| Mode::H2(Box::new(h2::FrameReader::at_frame())));
                Flow::Switch(0, Mode::H2(Box::new(h2::FrameReader::at_frame())))
            }
            _ => {
                self.decide_server(|| Mode::H1(H1State::Resync { line_start: true }));
                Flow::Switch(0, Mode::H1(H1State::Resync { line_start: true }))
            }
        }
    }

    /// The client's bytes fixed the protocol: tell a server side still
    /// waiting to know.
    fn decide_server(&mut self, mode: impl FnOnce() -> Mode) {
        if matches!(self.sides[SERVER].mode, Mode::Detect) {
            self.sides[SERVER].mode = mode();
        }
    }

    fn detect_server(&mut self, rest: &[u8]) -> Flow {
        let prefix = rest.len().min(7);
        if rest[..prefix] == b"HTTP/1."[..prefix] {
            return if prefix < 7 {
                Flow::NeedMore
            } else {
                Flow::Switch(0, Mode::H1(H1State::Head))
            };
        }
        let midstream = self.sides[SERVER].reasm.stats().started_midstream
            || self.sides[SERVER].lost_before_detect;
        if midstream && self.sides[CLIENT].tail.buf.is_empty() {
            match h2::looks_like_frames(rest) {
                Some(true) => {
                    self.mark_h2("midstream");
                    return Flow::Switch(0, Mode::H2(Box::new(h2::FrameReader::at_frame())));
                }
                Some(false) => {
                    return Flow::Switch(0, Mode::H1(H1State::Resync { line_start: true }))
                }
                None => {}
            }
        }
        if rest.len() > MAX_UNDECIDED_BYTES {
            return Flow::Switch(0, Mode::Opaque);
        }
        Flow::Wait
    }

    fn mark_h2(&mut self, start: &'static str) {
        self.protocol = AppProtocol::H2c;
        self.signals.h2_start.get_or_insert(start);
    }

    fn request_step(&mut self, state: &mut H1State, rest: &[u8], ts: Timestamp) -> Flow {
        match *state {
            H1State::Head => {
                let prefix = rest.len().min(h2::PREFACE.len());
                if rest[..prefix] == h2::PREFACE[..prefix] {
                    if prefix < h2::PREFACE.len() {
                        return Flow::NeedMore;
                    }
                    self.mark_h2("prior_knowledge");
                    if matches!(self.sides[SERVER].mode, Mode::Detect) {
                        self.sides[SERVER].mode = Mode::H2(Box::new(h2::FrameReader::at_frame()));
                    }
                    return Flow::Switch(0, Mode::H2(Box::new(h2::FrameReader::client())));
                }
                let blank = leading_blank(rest);
                if blank > 0 {
                    return Flow::Consumed(blank);
                }
                let known = h1::Known {
                    user_agent: self.signals.user_agent.is_some(),
                    host: self.host.as_ref(),
                };
                match h1::parse_request(rest, known) {
                    HeadParse::Partial if rest.len() < h1::MAX_HEAD_BYTES => Flow::NeedMore,
                    HeadParse::Partial => self.oversized_request(state, rest, ts),
                    HeadParse::Complete(head, len) => {
                        *state = self.request_head(head, ts);
                        Flow::Consumed(len)
                    }
                    _ => match h1::parse_request_lenient(rest) {
                        HeadParse::Partial if rest.len() < h1::MAX_HEAD_BYTES => Flow::NeedMore,
                        HeadParse::Complete((head, versioned), len) => {
                            self.signals.malformed_requests += 1;
                            if !versioned {
                                self.http09.push(self.count());
                            }
                            *state = self.request_head(head, ts);
                            Flow::Consumed(len)
                        }
                        _ => self.framing_error(state),
                    },
                }
            }
            H1State::AwaitResponse => Flow::Wait,
            _ => self.body_step(state, rest, true),
        }
    }

    /// A request head that does not end within [`h1::MAX_HEAD_BYTES`]: a
    /// request with what its start line (and any `Host` field before the
    /// limit) says, if the line reads as one; then on at the next start
    /// line, as its body's length is not known.
    fn oversized_request(&mut self, state: &mut H1State, rest: &[u8], ts: Timestamp) -> Flow {
        let line_end = rest.iter().position(|&b| b == b'\n');
        let line = &rest[..line_end.unwrap_or(rest.len()).min(h1::MAX_LINE_KEPT)];
        let Some((method, target, _)) = h1::lenient_request_line(line) else {
            return self.framing_error(state);
        };
        self.signals.oversized_heads += 1;
        let head = h1::RequestHead {
            method: method_of(method),
            target: target.to_owned(),
            minor_version: 1,
            host: h1::host_field(&rest[line_end.map_or(rest.len(), |e| e + 1)..]).map(Host::from),
            tag: None,
            user_agent: None,
            connection: h1::ConnectionOptions::default(),
            upgrade: None,
            framing: h1::Framing::None,
        };
        self.request_head(head, ts);
        self.signals.resyncs += 1;
        *state = H1State::Resync { line_start: false };
        Flow::Consumed(line_end.map_or(line.len(), |e| e + 1))
    }

    /// A response head that does not end within [`h1::MAX_HEAD_BYTES`]: it
    /// answers the next request with its status, if its start line reads as
    /// a status line; then on at the next status line.
    fn oversized_response(&mut self, state: &mut H1State, rest: &[u8], ts: Timestamp) -> Flow {
        let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = rest[..line_end]
            .strip_suffix(b"\r")
            .unwrap_or(&rest[..line_end]);
        if !h1::is_status_line(line) {
            return self.framing_error(state);
        }
        self.signals.oversized_heads += 1;
        let status = line[9..12]
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if !(100..200).contains(&status) {
            let idx = self.next_answer;
            self.next_answer = (idx + 1).min(self.count());
            match self.exchange_mut(idx) {
                Some(exchange) => {
                    exchange.status.get_or_insert(status);
                    exchange.answered.get_or_insert(ts);
                }
                None => self.signals.unmatched_responses += 1,
            }
        }
        self.signals.resyncs += 1;
        *state = H1State::Resync { line_start: false };
        Flow::Consumed((line_end + 1).min(rest.len()))
    }

    fn framing_error(&mut self, state: &mut H1State) -> Flow {
        self.signals.framing_errors += 1;
        self.signals.resyncs += 1;
        *state = H1State::Resync { line_start: false };
        Flow::Consumed(0)
    }

    /// Bodies and resynchronisation, the same for both directions.
    fn body_step(&mut self, state: &mut H1State, rest: &[u8], requests: bool) -> Flow {
        match *state {
            H1State::Body(remaining) => {
                let take = remaining.min(rest.len() as u64);
                *state = if take == remaining {
                    H1State::Head
                } else {
                    H1State::Body(remaining - take)
                };
                Flow::Consumed(take as usize)
            }
            H1State::Chunked(mut chunk) => match h1::chunked_step(&mut chunk, rest) {
                BodyStep::More(n) => {
                    *state = H1State::Chunked(chunk);
                    Flow::Consumed(n)
                }
                BodyStep::Done(n) => {
                    *state = H1State::Head;
                    Flow::Consumed(n)
                }
                BodyStep::NeedMore => Flow::NeedMore,
                BodyStep::Invalid => self.framing_error(state),
            },
            H1State::UntilClose => Flow::Consumed(rest.len()),
            H1State::Resync { line_start } => {
                match h1::find_message_start(rest, requests, line_start) {
                    Resync::Found(at) => {
                        *state = H1State::Head;
                        Flow::Consumed(at)
                    }
                    Resync::Discard(0, _) => Flow::NeedMore,
                    Resync::Discard(n, line_start) => {
                        *state = H1State::Resync { line_start };
                        Flow::Consumed(n)
                    }
                }
            }
            H1State::Head | H1State::AwaitResponse => Flow::NeedMore,
        }
    }

    fn request_head(&mut self, head: h1::RequestHead, ts: Timestamp) -> H1State {
        let depth = self.count() as u32 + 1;
        if matches!(self.protocol, AppProtocol::Unknown) {
            self.protocol = if head.minor_version == 0 {
                AppProtocol::Http10
            } else {
                AppProtocol::Http11
            };
        }
        if head.connection.close {
            self.signals.client_close_depth.get_or_insert(depth);
        }
        if self.signals.user_agent.is_none() {
            self.signals.user_agent = head.user_agent;
        }
        if head.minor_version == 0 && !head.connection.keep_alive {
            self.signals.client_http10_depth.get_or_insert(depth);
        }
        let switching = head.method == "CONNECT" || head.upgrade.is_some();
        if head.upgrade.is_some() {
            self.upgrade_offer = head.upgrade;
        }
        let next = match head.framing {
            Framing::Length(n) => H1State::Body(n),
            Framing::Chunked => H1State::Chunked(ChunkState::Size),
            Framing::None | Framing::UntilClose if switching => {
                self.awaited = Some(self.count());
                H1State::AwaitResponse
            }
            Framing::None | Framing::UntilClose => H1State::Head,
        };
        self.host.clone_from(&head.host);
        self.exchanges.push(HttpExchange {
            depth,
            method: head.method,
            target: head.target,
            host: head.host,
            status: None,
            sent: ts,
            answered: None,
            completed: None,
            h2_stream: None,
            tag: head.tag,
        });
        next
    }

    fn response_step(&mut self, state: &mut H1State, rest: &[u8], ts: Timestamp) -> Flow {
        if *state != H1State::Head {
            let in_body = matches!(state, H1State::Body(_) | H1State::Chunked(_));
            let flow = self.body_step(state, rest, false);
            if in_body && *state == H1State::Head {
                self.response_complete(ts);
            }
            return flow;
        }
        let blank = leading_blank(rest);
        if blank > 0 {
            return Flow::Consumed(blank);
        }
        match h1::parse_response(rest) {
            HeadParse::Partial if rest.len() < h1::MAX_HEAD_BYTES => Flow::NeedMore,
            HeadParse::Partial => self.oversized_response(state, rest, ts),
            HeadParse::Complete(head, len) => self.response_head(state, head, len, ts),
            _ if self.http09.contains(&self.next_answer) => {
                // RFC 1945 §4.1: a simple request gets a bare body, ended by
                // the close.
                if let Some(exchange) = self.exchange_mut(self.next_answer) {
                    exchange.answered.get_or_insert(ts);
                }
                self.next_answer += 1;
                *state = H1State::UntilClose;
                Flow::Consumed(0)
            }
            _ => self.framing_error(state),
        }
    }

    fn response_head(
        &mut self,
        state: &mut H1State,
        head: h1::ResponseHead,
        len: usize,
        ts: Timestamp,
    ) -> Flow {
        if head.status == 101 {
            return self.switching_protocols(head, len, ts);
        }
        if (100..200).contains(&head.status) {
            self.signals.interim_responses += 1;
            return Flow::Consumed(len);
        }
        if matches!(self.protocol, AppProtocol::Unknown) {
            self.protocol = if head.minor_version == 0 {
                AppProtocol::Http10
            } else {
                AppProtocol::Http11
            };
        }
        // A response with no request pending answers one the capture missed
        // (it started mid-connection): it is counted, and pairing stays put.
        let idx = self.next_answer;
        self.next_answer = (idx + 1).min(self.count());
        let depth = idx as u32 + 1;
        // Only HEAD and CONNECT change how a response is framed.
        let method = match self.exchange_mut(idx) {
            Some(exchange) => {
                exchange.status.get_or_insert(head.status);
                exchange.answered.get_or_insert(ts);
                Some(match exchange.method.as_ref() {
                    "HEAD" => "HEAD",
                    "CONNECT" => "CONNECT",
                    _ => "",
                })
            }
            None => {
                self.signals.unmatched_responses += 1;
                None
            }
        };
        if head.connection.close {
            self.signals.server_close_depth.get_or_insert(depth);
        }
        if head.minor_version == 0 && !head.connection.keep_alive {
            self.signals.server_http10_depth.get_or_insert(depth);
        }
        let hinted = head.keep_alive_timeout.is_some() || head.keep_alive_max.is_some();
        let unset =
            self.signals.keep_alive_timeout_s.is_none() && self.signals.keep_alive_max.is_none();
        if hinted && unset {
            self.signals.keep_alive_timeout_s = head.keep_alive_timeout;
            self.signals.keep_alive_max = head.keep_alive_max;
        }
        if head.bad_length {
            self.signals.framing_errors += 1;
        }
        let answers_awaited = self.awaited.is_some_and(|a| idx >= a);
        if answers_awaited && matches!(self.sides[CLIENT].mode, Mode::H1(H1State::AwaitResponse)) {
            self.sides[CLIENT].mode = Mode::H1(H1State::Head);
            self.sides[CLIENT].waiting = true;
        }
        if method == Some("CONNECT") && (200..300).contains(&head.status) {
            self.signals.tunnel_depth.get_or_insert(depth);
            self.sides[CLIENT].mode = Mode::Tunnel;
            return Flow::Switch(len, Mode::Opaque);
        }
        self.responding = self.exchange_mut(idx).map(|_| idx);
        *state = match h1::response_framing(method, &head) {
            Framing::None | Framing::Length(0) => {
                self.response_complete(ts);
                H1State::Head
            }
            Framing::Length(n) => H1State::Body(n),
            Framing::Chunked => H1State::Chunked(ChunkState::Size),
            Framing::UntilClose => {
                self.signals.close_delimited_depth.get_or_insert(depth);
                H1State::UntilClose
            }
        };
        Flow::Consumed(len)
    }

    /// A 101 (RFC 9110 §15.2.2): h2c goes on as HTTP/2 with the upgraded
    /// request as stream 1 (RFC 7540 §3.2); anything else is not parsed.
    fn switching_protocols(&mut self, head: h1::ResponseHead, len: usize, ts: Timestamp) -> Flow {
        let idx = self.next_answer;
        self.next_answer = (idx + 1).min(self.count());
        let depth = idx as u32 + 1;
        let upgrade = head
            .upgrade
            .or_else(|| self.upgrade_offer.take())
            .unwrap_or_default();
        self.signals.upgrade.get_or_insert_with(|| upgrade.clone());
        self.signals.upgrade_depth.get_or_insert(depth);
        let h2c = upgrade
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("h2c"));
        self.sides[CLIENT].waiting = true;
        if !h2c {
            if let Some(exchange) = self.exchange_mut(idx) {
                exchange.status.get_or_insert(101);
                exchange.answered.get_or_insert(ts);
            }
            self.sides[CLIENT].mode = Mode::Opaque;
            return Flow::Switch(len, Mode::Opaque);
        }
        self.mark_h2("upgrade");
        if let Some(exchange) = self.exchange_mut(idx) {
            exchange.h2_stream = Some(1);
            self.h2_streams.insert(1, idx);
        }
        if !matches!(self.sides[CLIENT].mode, Mode::H2(_)) {
            self.sides[CLIENT].mode = Mode::H2(Box::new(h2::FrameReader::client()));
        }
        Flow::Switch(len, Mode::H2(Box::new(h2::FrameReader::at_frame())))
    }

    fn h2_step(
        &mut self,
        i: usize,
        reader: &mut h2::FrameReader,
        rest: &[u8],
        ts: Timestamp,
    ) -> Flow {
        let open_before = reader.block_open();
        match reader.step(rest) {
            h2::Step::NeedMore => Flow::NeedMore,
            h2::Step::NotHttp2 => {
                self.signals.framing_errors += 1;
                Flow::Switch(rest.len(), Mode::Opaque)
            }
            h2::Step::Consumed(n, event) => {
                if !open_before && reader.block_open() {
                    self.h2_block_ts[i] = Some(ts);
                }
                if let Some(event) = event {
                    let started = self.h2_block_ts[i].take().unwrap_or(ts);
                    self.h2_event(i, event, started);
                }
                Flow::Consumed(n)
            }
        }
    }

    fn h2_event(&mut self, i: usize, event: h2::FrameEvent, ts: Timestamp) {
        match event {
            h2::FrameEvent::Headers { stream, block } => {
                if block.is_err() {
                    self.signals.hpack_errors += 1;
                }
                if i == CLIENT {
                    self.h2_request(stream, block.ok(), ts);
                } else {
                    self.h2_response(stream, block.ok(), ts);
                }
            }
            h2::FrameEvent::PushPromise {
                promised, block, ..
            } => {
                self.signals.push_promises += 1;
                if self.h2_pushed.len() < MAX_PUSHED_STREAMS {
                    self.h2_pushed.insert(promised);
                }
                if block.is_err() {
                    self.signals.hpack_errors += 1;
                }
            }
            h2::FrameEvent::RstStream { .. } => {
                if i == CLIENT {
                    self.signals.rst_stream_client += 1;
                } else {
                    self.signals.rst_stream_server += 1;
                }
            }
            h2::FrameEvent::MaxConcurrentStreams(n) => {
                if i == SERVER {
                    self.signals.h2_max_concurrent_streams = Some(n);
                }
            }
            h2::FrameEvent::GoAway {
                last_stream,
                error_code,
            } => {
                if self.signals.goaway.len() < MAX_GOAWAYS {
                    self.signals.goaway.push(GoAway {
                        sender: if i == CLIENT { "client" } else { "server" },
                        last_stream_id: last_stream,
                        error_code,
                    });
                }
            }
        }
    }

    /// A client HEADERS on a new odd stream opens a request (RFC 9113 §8.1);
    /// a second one on the same stream carries trailers.
    fn h2_request(&mut self, stream: u32, facts: Option<h2::HeaderFacts>, ts: Timestamp) {
        if stream.is_multiple_of(2) || self.h2_streams.contains_key(&stream) {
            return;
        }
        let facts = facts.unwrap_or_default();
        if self.signals.user_agent.is_none() {
            self.signals.user_agent = facts.user_agent.clone();
        }
        self.h2_streams.insert(stream, self.count());
        self.exchanges.push(HttpExchange {
            depth: self.count() as u32 + 1,
            method: method_of(facts.method.as_deref().unwrap_or_default()),
            target: facts.path.unwrap_or_default(),
            host: facts.authority.or(facts.host).map(Host::from),
            status: None,
            sent: ts,
            answered: None,
            completed: None,
            h2_stream: Some(stream),
            tag: facts.tag,
        });
    }

    fn h2_response(&mut self, stream: u32, facts: Option<h2::HeaderFacts>, ts: Timestamp) {
        let Some(status) = facts.and_then(|f| f.status) else {
            return;
        };
        if (100..200).contains(&status) {
            self.signals.interim_responses += 1;
            return;
        }
        match self.h2_streams.get(&stream) {
            Some(&idx) => {
                let Some(exchange) = self.exchange_mut(idx) else {
                    return;
                };
                if exchange.status.is_none() {
                    exchange.status = Some(status);
                    exchange.answered = Some(ts);
                    exchange.completed = Some(ts);
                }
            }
            // A pushed stream's response answers the server's own promise.
            None if self.h2_pushed.contains(&stream) => {}
            None => self.signals.unmatched_responses += 1,
        }
    }

    fn tls_step(&mut self, rest: &[u8]) -> Flow {
        match tls::client_hello(rest) {
            tls::HelloParse::NeedMore if rest.len() <= tls::MAX_HELLO_BYTES => Flow::NeedMore,
            tls::HelloParse::Done(hello) => {
                self.sni = hello.sni;
                self.alpn = hello.alpn;
                Flow::Switch(rest.len(), Mode::Opaque)
            }
            _ => {
                self.signals.framing_errors += 1;
                Flow::Switch(rest.len(), Mode::Opaque)
            }
        }
    }

    /// The capture lost `bytes` of direction `i`.
    fn lost(&mut self, i: usize, bytes: u64) {
        if i == CLIENT {
            self.signals.stream_gaps_client += 1;
            self.signals.missing_bytes_client += bytes;
        } else {
            self.signals.stream_gaps_server += 1;
            self.signals.missing_bytes_server += bytes;
        }
        let held = !self.sides[i].tail.buf.is_empty();
        self.sides[i].tail.clear();
        self.sides[i].waiting = false;
        self.sides[i].mode = match std::mem::take(&mut self.sides[i].mode) {
            Mode::H1(H1State::Body(n)) if !held && n > bytes => Mode::H1(H1State::Body(n - bytes)),
            Mode::H1(H1State::Body(n)) if !held && n == bytes => Mode::H1(H1State::Head),
            Mode::H1(H1State::Chunked(ChunkState::Data(n))) if !held && n >= bytes => {
                Mode::H1(H1State::Chunked(if n == bytes {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(n - bytes)
                }))
            }
            Mode::H1(H1State::UntilClose) => Mode::H1(H1State::UntilClose),
            Mode::H1(_) => {
                self.signals.resyncs += 1;
                Mode::H1(H1State::Resync { line_start: true })
            }
            Mode::H2(mut reader) if !held && reader.can_skip(bytes) => {
                reader.skip_lost(bytes);
                Mode::H2(reader)
            }
            Mode::H2(_) => {
                self.signals.h2_stopped_at_gap = true;
                Mode::Opaque
            }
            Mode::Detect => {
                self.sides[i].lost_before_detect = true;
                Mode::Detect
            }
            Mode::Tls | Mode::Tunnel | Mode::Opaque => Mode::Opaque,
        };
    }

    /// The HTTP/1 response being read ended with the segment of `ts`.
    fn response_complete(&mut self, ts: Timestamp) {
        if let Some(exchange) = self.responding.take().and_then(|i| self.exchange_mut(i)) {
            exchange.completed.get_or_insert(ts);
        }
    }

    /// Direction `i` sent its FIN (in the segment of `ts`): a close-delimited
    /// body ends here.
    fn ended(&mut self, i: usize, ts: Timestamp) {
        if let Mode::H1(state @ H1State::UntilClose) = &mut self.sides[i].mode {
            *state = H1State::Head;
            if i == SERVER {
                self.response_complete(ts);
            }
        }
    }
}

#[cfg(test)]
mod tests;
