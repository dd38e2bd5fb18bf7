//! The bodies of the fuzz targets (`fuzz/`), one plain function per parser
//! of untrusted bytes, so that cargo-fuzz runs them on nightly and the test
//! suite runs the same functions over the seed inputs and every saved
//! regression on stable (`tests/integration/fuzz_seeds.rs`).
//!
//! Each function takes arbitrary bytes, must never panic on them, and asserts
//! the invariants a user relies on: the JSON report parses back to what was
//! rendered, stream numbers are dense, reassembled bytes are the bytes that
//! were sent, in their place, and never more than were captured. A failed
//! assertion is a finding just as a panic in the code under test is.
//!
//! [`seeds`] derives each target's seed inputs from a capture file, so the
//! corpora are built from captures read in place, never copied.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use crate::decode::{decode, Decoded};
use crate::diagnose::ReuseJudge;
use crate::flow::{Expiry, FlowEvent, FlowTable};
use crate::http::{h1, h2, tls, ConnectionAnalyzer};
use crate::jsonl::JsonlSink;
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::reassembly::Reassembler;
use crate::render::{write_report, Format, RenderOptions, RequestRows};
use crate::source::{CaptureReader, Frame, LinkType, Record};
use crate::wire::{Direction, Segment, SeqNumber, TcpFlags, Timestamp};

/// One fuzz target: its name (the cargo-fuzz target and the directory of its
/// corpus and regressions) and its body.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `make fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "capture_reader",
        run: capture_reader,
    },
    Target {
        name: "decode",
        run: decode_frame,
    },
    Target {
        name: "tracker",
        run: tracker,
    },
    Target {
        name: "reassembly",
        run: reassembly,
    },
    Target {
        name: "http1",
        run: http1,
    },
    Target {
        name: "h2_frames",
        run: h2_frames,
    },
    Target {
        name: "tls_hello",
        run: tls_hello,
    },
    Target {
        name: "http_analyzer",
        run: http_analyzer,
    },
    Target {
        name: "pipeline",
        run: pipeline,
    },
];

/// Most bytes a gzip-compressed input may expand to here (the reader itself
/// bounds a record, not the file).
const MAX_GUNZIPPED: u64 = 8 << 20;

fn capture_input(data: &[u8]) -> Box<dyn Read + Send> {
    let bytes = Cursor::new(data.to_vec());
    if data.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(bytes).take(MAX_GUNZIPPED))
    } else {
        Box::new(bytes)
    }
}

/// What reading a capture produced: each frame's link type, timestamp,
/// lengths and bytes, and how it ended.
type FrameLog = (Vec<(LinkType, i64, u32, u32, Vec<u8>)>, String);

fn read_frames(data: &[u8], lending: bool) -> Option<FrameLog> {
    let mut reader =
        CaptureReader::from_reader(Path::new("fuzz.pcap"), capture_input(data)).ok()?;
    if lending {
        reader.lend_buffers();
    }
    let mut frames = Vec::new();
    let end = loop {
        let end = match reader.next_record() {
            Ok(Some(Record::Frame(link, frame))) => {
                assert_eq!(frame.data.len(), frame.caplen as usize);
                assert!(frame.caplen <= frame.wirelen, "caplen above wirelen");
                frames.push((
                    link,
                    frame.ts.0,
                    frame.caplen,
                    frame.wirelen,
                    frame.data.to_vec(),
                ));
                None
            }
            Ok(Some(Record::CutShort)) => Some("cut short".to_string()),
            Ok(None) => Some("end".to_string()),
            Err(e) => Some(format!("error: {e}")),
        };
        if lending {
            // As the pipeline does: hand back each buffer the reader moved off.
            if let Some(buf) = reader.take_retired() {
                reader.recycle(buf);
            }
        }
        if let Some(end) = end {
            break end;
        }
    };
    for (link, ..) in &frames {
        assert!(
            reader.link_types().contains(link),
            "frame of an undeclared link type"
        );
    }
    Some((frames, end))
}

/// The capture reader, on a whole file's bytes (pcap or pcapng, either byte
/// order, or gzip of either): every frame's bytes agree with its lengths, and
/// a reader that lends its buffers reads exactly what one that does not reads.
pub fn capture_reader(data: &[u8]) {
    let plain = read_frames(data, false);
    let lending = read_frames(data, true);
    assert!(plain == lending, "lending buffers changed what was read");
}

/// Link types the decoder dispatches on, and one it does not.
const LINK_TYPES: [LinkType; 12] = [
    LinkType::ETHERNET,
    LinkType::LINUX_SLL,
    LinkType::LINUX_SLL2,
    LinkType::NULL,
    LinkType::LOOP,
    LinkType::RAW,
    LinkType::RAW_12,
    LinkType::RAW_14,
    LinkType::IPV4,
    LinkType::IPV6,
    LinkType::NFLOG,
    LinkType(147),
];

/// Link, IP and TCP decoding of one frame. The first byte picks the link
/// type, the second how many bytes the snaplen cut; the rest is the frame.
/// A segment's payload lies inside the frame and is no longer than the IP
/// header says was sent.
pub fn decode_frame(data: &[u8]) {
    let [link, cut, frame @ ..] = data else {
        return;
    };
    let link = LINK_TYPES[usize::from(*link) % LINK_TYPES.len()];
    let frame = Frame {
        ts: Timestamp(1),
        caplen: frame.len() as u32,
        wirelen: frame.len() as u32 + u32::from(*cut),
        data: frame,
    };
    if let Decoded::Tcp(seg) = decode(link, &frame) {
        assert!(seg.payload.start <= seg.payload.end);
        assert!(
            seg.payload.end <= frame.data.len(),
            "payload beyond the frame"
        );
        assert!(seg.payload.len() as u64 <= u64::from(seg.payload_len));
        assert_eq!(seg.frame_len, frame.wirelen);
    }
}

/// Where a scripted segment's sequence (or acknowledgement) number lies,
/// relative to where its direction's stream has got to.
#[derive(Debug, Arbitrary)]
enum SeqMove {
    /// Exactly where the stream goes on.
    Next,
    /// A retransmission or an overlap.
    Behind(u16),
    /// Ahead of a hole.
    Ahead(u16),
    /// Anywhere at all (a huge jump, or a wrap around 2^32).
    Anywhere(u32),
    /// Just below 2^32 from where the stream is: a wrap the other way.
    Wrap(u8),
}

impl SeqMove {
    fn at(&self, next: u32) -> u32 {
        match *self {
            SeqMove::Next => next,
            SeqMove::Behind(n) => next.wrapping_sub(u32::from(n)),
            SeqMove::Ahead(n) => next.wrapping_add(u32::from(n)),
            SeqMove::Anywhere(n) => n,
            SeqMove::Wrap(n) => next.wrapping_add(u32::MAX - u32::from(n)),
        }
    }
}

/// How the capture clock moves before a scripted segment.
#[derive(Debug, Arbitrary)]
enum Tick {
    Micros(u16),
    Seconds(u16),
    /// Timestamps out of order.
    Back(u16),
}

/// What a scripted segment carries.
#[derive(Debug, Arbitrary)]
enum Content {
    /// Bytes derived from the sequence number (see [`stream_byte`]).
    Pattern,
    /// One of a few protocol openings, so the analyser has something to parse.
    Canned(u8),
    /// The fuzzer's own bytes.
    Bytes(Vec<u8>),
}

const CANNED: [&[u8]; 8] = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nz\r\n0\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    b"\x00\x00\x05\x01\x05\x00\x00\x00\x01\x82\x86\x84\x41\x80",
    b"\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
];

/// The byte a pattern payload carries at sequence number `seq`. Taken modulo
/// 256, so it stays consistent across a wrap of the 32-bit sequence space.
fn stream_byte(seq: u32) -> u8 {
    seq as u8
}

impl Content {
    fn bytes(&self, seq: u32, len: usize) -> Vec<u8> {
        match self {
            Content::Pattern => (0..len as u32)
                .map(|i| stream_byte(seq.wrapping_add(i)))
                .collect(),
            Content::Canned(i) => CANNED[usize::from(*i) % CANNED.len()]
                .iter()
                .copied()
                .cycle()
                .take(len)
                .collect(),
            Content::Bytes(b) => b.iter().copied().cycle().take(len).collect(),
        }
    }
}

/// Largest payload a scripted segment sends.
const MAX_SCRIPT_PAYLOAD: u16 = 4096;

/// One scripted segment of the tracker target.
#[derive(Debug, Arbitrary)]
struct TrackerStep {
    /// Which of [`TUPLES`] it travels on.
    tuple: u8,
    /// From the first address of the tuple to the second, or back.
    forward: bool,
    flags: u8,
    seq: SeqMove,
    ack: SeqMove,
    /// Bytes sent, and how many of them the capture kept.
    len: u16,
    kept: u16,
    content: Content,
    tick: Tick,
}

#[derive(Debug, Arbitrary)]
struct TrackerScript {
    http: bool,
    /// Expiry in milliseconds rather than minutes, so that connections are
    /// finalised, entombed and their ports reused within a short script.
    short_expiry: bool,
    max_unanswered: u8,
    max_closing: u8,
    steps: Vec<TrackerStep>,
}

/// Address pairs the scripted segments travel between: two connections
/// between the same hosts, one over IPv6, one with equal ports.
const TUPLES: [(&str, &str); 4] = [
    ("10.0.0.1:40000", "10.0.0.2:80"),
    ("10.0.0.1:40001", "10.0.0.2:80"),
    ("[2001:db8::1]:50000", "[2001:db8::2]:443"),
    ("10.0.0.3:8080", "10.0.0.4:8080"),
];

/// Most segments of one script, to keep each run short.
const MAX_STEPS: usize = 512;

/// The connection tracker fed a scripted sequence of segments (built with
/// `arbitrary`: several 4-tuples, both directions, any flags, in order or out
/// of order, with huge sequence jumps and wraparound, timestamps jumping
/// forward and back), its events passed on to the reuse judge as the
/// pipeline does. Streams are numbered densely from 0 in order of opening,
/// each is finalised exactly once and released by the judge exactly once,
/// and no connection counts more packets or payload than its 4-tuple carried.
pub fn tracker(data: &[u8]) {
    let Ok(script) = TrackerScript::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut expiry = Expiry::default();
    if script.short_expiry {
        let ms = Duration::from_millis;
        expiry = Expiry {
            idle: ms(300),
            close_grace: ms(5),
            unanswered: ms(120),
            max_unanswered: usize::from(script.max_unanswered % 8) + 1,
            max_closing: usize::from(script.max_closing % 8) + 1,
            tombstone: ms(300),
            max_tombstones: 4,
        };
    }
    let mut table = FlowTable::with_expiry(script.http, expiry);
    let tuples: Vec<(SocketAddr, SocketAddr)> = TUPLES
        .iter()
        .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
        .collect();
    // Per tuple and direction: where the stream has got to.
    let mut next = [[1_000u32, 900_000u32]; TUPLES.len()];
    // Per unordered address pair: segments and payload bytes sent.
    let mut sent: BTreeMap<(SocketAddr, SocketAddr), (u64, u64)> = BTreeMap::new();
    let mut clock = 1_000_000_000i64;
    let mut events = Vec::new();
    let mut log = EventLog::default();
    let mut judge = ReuseJudge::new();
    for step in script.steps.iter().take(MAX_STEPS) {
        let t = usize::from(step.tuple) % TUPLES.len();
        let side = usize::from(!step.forward);
        let (src, dst) = if step.forward {
            tuples[t]
        } else {
            (tuples[t].1, tuples[t].0)
        };
        clock = match step.tick {
            Tick::Micros(n) => clock + i64::from(n),
            Tick::Seconds(n) => clock + i64::from(n) * 1_000_000,
            Tick::Back(n) => clock - i64::from(n),
        };
        let seq = step.seq.at(next[t][side]);
        let ack = step.ack.at(next[t][1 - side]);
        let len = step.len % (MAX_SCRIPT_PAYLOAD + 1);
        let kept = step.kept.min(len);
        let payload = step.content.bytes(seq, usize::from(kept));
        let flags = TcpFlags(step.flags & 0x3f);
        let seg = Segment {
            ts: Timestamp(clock),
            src,
            dst,
            seq: SeqNumber(seq),
            ack: SeqNumber(ack),
            flags,
            window: 512,
            payload_len: u32::from(len),
            payload: 0..payload.len(),
            frame_len: 54 + u32::from(len),
        };
        let end = seq
            .wrapping_add(u32::from(len))
            .wrapping_add(u32::from(flags.syn()) + u32::from(flags.fin()));
        if SeqNumber(end) > SeqNumber(next[t][side]) || flags.syn() {
            next[t][side] = end;
        }
        let pair = (src.min(dst), src.max(dst));
        let tally = sent.entry(pair).or_default();
        tally.0 += 1;
        tally.1 += u64::from(len);
        let stream = table.on_segment(&seg, &payload, &mut events);
        assert!(
            (stream as usize) < table.len(),
            "segment given stream {stream}, only {} numbered",
            table.len()
        );
        log.take(&mut events, &mut judge);
        judge.advance(seg.ts);
        log.release(&mut judge);
    }
    table.finish(&mut events);
    log.take(&mut events, &mut judge);
    judge.finish();
    log.release(&mut judge);
    assert!(
        log.released == log.finished,
        "the reuse judge released {} of {} connections",
        log.released.len(),
        log.finished.len()
    );
    assert_eq!(
        log.opened.len(),
        table.len(),
        "streams numbered but not opened"
    );
    assert_eq!(
        log.finished.len(),
        log.opened.len(),
        "streams opened but never finalised"
    );
    let mut counted: BTreeMap<(SocketAddr, SocketAddr), (u64, u64)> = BTreeMap::new();
    for (client, server, packets, payload) in log.records {
        let tally = counted
            .entry((client.min(server), client.max(server)))
            .or_default();
        tally.0 += packets;
        tally.1 += payload;
    }
    for (pair, (packets, payload)) in counted {
        let (sent_packets, sent_payload) = sent.get(&pair).copied().unwrap_or_default();
        assert!(
            packets <= sent_packets && payload <= sent_payload,
            "{pair:?}: connections count {packets} packets / {payload} payload bytes, \
             {sent_packets} / {sent_payload} were sent"
        );
    }
}

/// What the tracker's events said, checked as they come.
#[derive(Default)]
struct EventLog {
    opened: Vec<u64>,
    finished: BTreeSet<u64>,
    /// Per finalised connection: client, server, packets, payload bytes.
    records: Vec<(SocketAddr, SocketAddr, u64, u64)>,
    /// Streams the reuse judge released with their verdicts.
    released: BTreeSet<u64>,
}

impl EventLog {
    /// Check the tracker's events, then hand them to the judge.
    fn take(&mut self, events: &mut Vec<FlowEvent>, judge: &mut ReuseJudge) {
        for event in events.drain(..) {
            self.check(&event);
            judge.on_event(event);
        }
    }

    fn release(&mut self, judge: &mut ReuseJudge) {
        while let Some(f) = judge.pop_released() {
            let stream = f.record.stream;
            assert!(
                self.finished.contains(&stream),
                "stream {stream} released unfinished"
            );
            assert!(
                self.released.insert(stream),
                "stream {stream} released twice"
            );
        }
    }

    fn check(&mut self, event: &FlowEvent) {
        match event {
            &FlowEvent::Opened { stream, .. } => {
                assert_eq!(
                    stream,
                    self.opened.len() as u64,
                    "stream numbers are not dense"
                );
                self.opened.push(stream);
            }
            FlowEvent::Finished(f) => {
                let r = &f.record;
                assert!(
                    (r.stream as usize) < self.opened.len(),
                    "stream {} finalised before it opened",
                    r.stream
                );
                assert!(
                    self.finished.insert(r.stream),
                    "stream {} finalised twice",
                    r.stream
                );
                for q in &f.requests {
                    assert_eq!(q.stream, r.stream, "a request filed under another stream");
                }
                self.records.push((
                    r.client,
                    r.server,
                    r.packets_client + r.packets_server,
                    r.payload_client + r.payload_server,
                ));
            }
            FlowEvent::Settled(settled) => {
                for q in &settled.requests {
                    assert!(
                        (q.stream as usize) < self.opened.len()
                            && !self.finished.contains(&q.stream),
                        "requests settled for stream {}, which is not open",
                        q.stream
                    );
                    assert!(
                        q.depth > 1,
                        "the first request settled before its connection"
                    );
                }
            }
            &FlowEvent::Request { stream, .. }
            | &FlowEvent::Answered { stream, .. }
            | &FlowEvent::Completed { stream, .. }
            | &FlowEvent::Closed { stream, .. }
            | &FlowEvent::ClientReset { stream }
            | &FlowEvent::Lossy { stream } => {
                assert!(
                    (stream as usize) < self.opened.len() && !self.finished.contains(&stream),
                    "event for stream {stream}, which is not open"
                );
            }
        }
    }
}

/// One step of the reassembly target.
#[derive(Debug, Arbitrary)]
enum ReassemblyStep {
    Segment {
        seq: SeqMove,
        len: u16,
        kept: u16,
        syn: bool,
        fin: bool,
    },
    /// The peer acknowledged up to here.
    Ack(SeqMove),
    /// The connection ended.
    Flush,
}

#[derive(Debug, Arbitrary)]
struct ReassemblyScript {
    /// The stream opens with a SYN at this sequence number; else midstream.
    syn: Option<u32>,
    start: u32,
    steps: Vec<ReassemblyStep>,
}

/// A segment of `len` bytes at `seq` whose payload is the pattern of
/// [`stream_byte`], `kept` of them captured.
fn pattern_segment(seq: u32, len: u16, kept: u16, flags: u8, clock: i64) -> (Segment, Vec<u8>) {
    // The data of a SYN segment starts after the SYN's own sequence number.
    let first = seq.wrapping_add(u32::from(flags & TcpFlags::SYN != 0));
    let payload = Content::Pattern.bytes(first, usize::from(kept.min(len)));
    let seg = Segment {
        ts: Timestamp(clock),
        src: "10.0.0.1:1".parse().unwrap(),
        dst: "10.0.0.2:2".parse().unwrap(),
        seq: SeqNumber(seq),
        ack: SeqNumber(0),
        flags: TcpFlags(flags),
        window: 0,
        payload_len: u32::from(len),
        payload: 0..payload.len(),
        frame_len: 0,
    };
    (seg, payload)
}

/// The stream one direction delivered, checked as it comes.
struct Delivered {
    /// Stream offset of the next byte (gaps included).
    offset: u64,
    /// `stream_byte(seq) - offset` for every byte so far: the same for all of
    /// them when each byte is in its place.
    shift: Option<u8>,
    data: u64,
    fins: u32,
}

impl Delivered {
    fn take(&mut self, gap_before: u64, data: &[u8], gap_after: u64, fin: bool) {
        self.offset += gap_before;
        for &b in data {
            let shift = b.wrapping_sub(self.offset as u8);
            assert_eq!(
                *self.shift.get_or_insert(shift),
                shift,
                "byte at stream offset {} is out of place",
                self.offset
            );
            self.offset += 1;
        }
        self.data += data.len() as u64;
        self.offset += gap_after;
        self.fins += u32::from(fin);
    }
}

/// Reassembly of one direction fed a scripted sequence of segments (in
/// order, overlapping, ahead of holes, truncated by the snaplen, with huge
/// jumps and wraparound), acknowledgements and a flush. Every payload byte
/// is derived from its sequence number, so each byte delivered must be in its
/// place; the data delivered never exceeds what was captured, the FIN comes
/// once and last, and after a flush everything held comes out.
pub fn reassembly(data: &[u8]) {
    let Ok(script) = ReassemblyScript::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut r = Reassembler::new();
    let mut next = script.start;
    let mut clock = 0;
    let mut captured = 0u64;
    let mut out = Delivered {
        offset: 0,
        shift: None,
        data: 0,
        fins: 0,
    };
    if let Some(isn) = script.syn {
        let (seg, _) = pattern_segment(isn, 0, 0, TcpFlags::SYN, clock);
        r.segment(&seg, &[]);
        next = isn.wrapping_add(1);
        out.shift = Some(stream_byte(next));
    }
    let drain = |r: &mut Reassembler, out: &mut Delivered| {
        while let Some(d) = r.pop() {
            out.take(d.gap_before, &d.data, d.gap_after, d.fin);
        }
    };
    for step in script.steps.iter().take(MAX_STEPS) {
        match step {
            ReassemblyStep::Segment {
                seq,
                len,
                kept,
                syn,
                fin,
            } => {
                let seq = seq.at(next);
                let len = len % (MAX_SCRIPT_PAYLOAD + 1);
                let mut flags = TcpFlags::ACK;
                if *syn {
                    flags |= TcpFlags::SYN;
                }
                if *fin {
                    flags |= TcpFlags::FIN;
                }
                clock += 1;
                let (seg, payload) = pattern_segment(seq, len, *kept, flags, clock);
                let d = r.segment(&seg, &payload);
                captured += payload.len() as u64;
                out.take(d.gap_before, d.data, d.gap_after, d.fin);
                let end = seq.wrapping_add(u32::from(len));
                if SeqNumber(end) > SeqNumber(next) {
                    next = end;
                }
            }
            ReassemblyStep::Ack(at) => r.peer_acked(SeqNumber(at.at(next))),
            ReassemblyStep::Flush => r.flush(),
        }
        drain(&mut r, &mut out);
        assert!(
            out.data <= captured,
            "delivered {} bytes of {captured} captured",
            out.data
        );
    }
    r.flush();
    drain(&mut r, &mut out);
    assert!(r.pop().is_none());
    assert!(out.fins <= 1, "the FIN delivered {} times", out.fins);
    assert!(out.data <= captured);
}

/// The HTTP/1 head parsers, the resynchronising scan and the chunked body
/// reader, on one buffer: what each says it consumed lies inside the buffer,
/// a message start it finds begins a start line, and the body reader never
/// stalls on bytes it has.
pub fn http1(data: &[u8]) {
    let len = data.len();
    if let h1::HeadParse::Complete(head, n) = h1::parse_request(data, h1::Known::default()) {
        assert!(n <= len && !head.method.is_empty());
    }
    if let h1::HeadParse::Complete(head, n) = h1::parse_response(data) {
        assert!(n <= len);
        for method in [None, Some("GET"), Some("HEAD"), Some("CONNECT")] {
            let _ = h1::response_framing(method, &head);
        }
    }
    if let h1::HeadParse::Complete(_, n) = h1::parse_request_lenient(data) {
        assert!(n <= len);
    }
    for requests in [true, false] {
        for line_start in [true, false] {
            match h1::find_message_start(data, requests, line_start) {
                h1::Resync::Found(at) => {
                    assert!(at < len && (line_start || at > 0));
                    let rest = &data[at..];
                    let line = &rest[..rest.iter().position(|&b| b == b'\n').unwrap()];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    assert!(if requests {
                        h1::is_request_line(line)
                    } else {
                        h1::is_status_line(line)
                    });
                }
                h1::Resync::Discard(n, _) => assert!(n <= len),
            }
        }
    }
    let mut state = h1::ChunkState::Size;
    let mut pos = 0;
    let mut stalled = 0;
    while pos < len {
        match h1::chunked_step(&mut state, &data[pos..]) {
            h1::BodyStep::More(n) => {
                assert!(n <= len - pos, "chunked reader consumed beyond its input");
                pos += n;
                stalled = if n == 0 { stalled + 1 } else { 0 };
                assert!(stalled < 3, "chunked reader stalls on {} bytes", len - pos);
            }
            h1::BodyStep::Done(n) => {
                assert!(n <= len - pos);
                break;
            }
            h1::BodyStep::NeedMore | h1::BodyStep::Invalid => break,
        }
    }
}

/// The HTTP/2 frame reader and its HPACK decoder, on one direction's bytes.
/// The first byte says whether the stream starts with the client preface,
/// how many bytes arrive at a time, and whether bytes inside skipped payloads
/// are lost. Every step consumes bytes it was given and makes progress, and
/// stream identifiers never carry the reserved bit.
pub fn h2_frames(data: &[u8]) {
    let [mode, stream @ ..] = data else {
        return;
    };
    let mut reader = if mode & 1 == 0 {
        h2::FrameReader::client()
    } else {
        h2::FrameReader::at_frame()
    };
    let chunk = usize::from(mode >> 2).max(1) * 7;
    let lose = mode & 2 != 0;
    let mut buf = Vec::new();
    for piece in stream.chunks(chunk) {
        if lose && reader.can_skip(3) {
            reader.skip_lost(3);
        }
        buf.extend_from_slice(piece);
        let mut stalled = 0;
        loop {
            match reader.step(&buf) {
                h2::Step::Consumed(n, event) => {
                    assert!(n <= buf.len(), "consumed {n} of {} bytes", buf.len());
                    stalled = if n == 0 && event.is_none() {
                        stalled + 1
                    } else {
                        0
                    };
                    assert!(stalled < 3, "frame reader makes no progress");
                    buf.drain(..n);
                    if let Some(event) = event {
                        check_frame_event(&event);
                    }
                }
                h2::Step::NeedMore => break,
                h2::Step::NotHttp2 => return,
            }
        }
    }
    let _ = h2::looks_like_frames(stream);
}

fn check_frame_event(event: &h2::FrameEvent) {
    const RESERVED: u32 = 0x8000_0000;
    let ids = match *event {
        h2::FrameEvent::Headers { stream, .. } | h2::FrameEvent::RstStream { stream, .. } => {
            [stream, 0]
        }
        h2::FrameEvent::PushPromise {
            stream, promised, ..
        } => [stream, promised],
        h2::FrameEvent::GoAway { last_stream, .. } => [last_stream, 0],
        h2::FrameEvent::MaxConcurrentStreams(_) => [0, 0],
    };
    assert!(
        ids.iter().all(|id| id & RESERVED == 0),
        "reserved bit in a stream identifier: {event:?}"
    );
}

/// The TLS ClientHello parser, on the start of a client stream: what it
/// reads lies in the bytes, and the same hello cut short anywhere is either
/// not complete yet or the same hello, never a different verdict.
pub fn tls_hello(data: &[u8]) {
    let _ = tls::looks_like_tls(data);
    let whole = tls::client_hello(data);
    if let tls::HelloParse::Done(hello) = &whole {
        let named = hello.sni.as_ref().map_or(0, String::len);
        let offered: usize = hello.alpn.iter().map(String::len).sum();
        assert!(named + offered <= data.len());
        for cut in [
            1,
            data.len() / 3,
            data.len() / 2,
            data.len().saturating_sub(1),
        ] {
            match tls::client_hello(&data[..cut.min(data.len())]) {
                tls::HelloParse::NeedMore => {}
                tls::HelloParse::Done(h) => assert_eq!(&h, hello, "a prefix parsed differently"),
                tls::HelloParse::Invalid => panic!("a prefix of a valid hello is invalid"),
            }
        }
    }
}

/// The application-layer analyser of one connection, fed a script of
/// segments (each: a control byte for direction, flags and where its
/// sequence number lies; an offset byte; a length byte; the payload), then
/// finished.
pub fn http_analyzer(data: &[u8]) {
    let mut analyzer = ConnectionAnalyzer::new();
    let mut next = [1_000u32, 9_000u32];
    let mut rest = data;
    let mut clock = 0i64;
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
        let seq_len = seg.seq_len();
        if seq == next[side] {
            next[side] = seq.wrapping_add(seq_len);
        }
    }
    analyzer.finish();
    for (i, exchange) in analyzer.exchanges().iter().enumerate() {
        assert_eq!(
            exchange.depth as usize,
            i + 1,
            "request depths are not dense"
        );
    }
}

/// A `Write` whose bytes can be read after the writer was given away.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The whole pipeline, capture bytes in, report out, as `replay` runs it:
/// once into a document and once streaming JSON Lines. Streams are numbered
/// densely, the summary counts the rows, the JSON document parses back to
/// the report, every JSON line parses and the streamed rows are the
/// document's, and every other format renders.
pub fn pipeline(data: &[u8]) {
    let Ok(mut reader) = CaptureReader::from_reader(Path::new("fuzz.pcap"), capture_input(data))
    else {
        return;
    };
    let options = PipelineOptions::default();
    let lines = SharedBuf::default();
    let mut document = Pipeline::new(&options);
    let mut streaming = Pipeline::streaming(&options, Box::new(JsonlSink::new(lines.clone())));
    loop {
        match reader.next_record() {
            Ok(Some(Record::Frame(link, frame))) => {
                document.push(link, &frame);
                streaming.push(link, &frame);
            }
            Ok(Some(Record::CutShort)) => {
                for p in [&mut document, &mut streaming] {
                    p.source_mut().packets += 1;
                    p.note_anomaly("capture file cut short".to_string());
                }
                break;
            }
            Ok(None) | Err(_) => break,
        }
    }
    let report = document.finish().expect("a document pipeline cannot fail");
    let streamed = streaming.finish().expect("writing to memory cannot fail");

    for (i, c) in report.connections.iter().enumerate() {
        assert_eq!(c.stream, i as u64, "stream numbers are not dense");
    }
    for r in &report.requests {
        assert!((r.stream as usize) < report.connections.len());
    }
    assert_eq!(report.summary.connections, report.connections.len() as u64);
    assert_eq!(report.summary.requests, report.requests.len() as u64);
    assert_eq!(streamed.summary, report.summary);
    assert_eq!(streamed.source, report.source);

    let json = render(&report, Format::Json);
    let parsed: serde_json::Value = serde_json::from_slice(&json).expect("the JSON parses back");
    let model = serde_json::to_value(&report).expect("the report serialises");
    assert!(parsed == model, "the JSON parses back to something else");

    let lines = lines.0.lock().unwrap();
    let mut rows: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut value: serde_json::Value =
            serde_json::from_slice(line).expect("a JSON line parses");
        let kind = match value.as_object_mut().and_then(|o| o.remove("type")) {
            Some(serde_json::Value::String(kind)) => kind,
            other => panic!("a JSON line of type {other:?}"),
        };
        let kind = match kind.as_str() {
            "connection" => "connections",
            "request" => "requests",
            "summary" => "summary",
            "diagnosis" => "diagnosis",
            other => panic!("a JSON line of type {other}"),
        };
        rows.entry(kind).or_default().push(value);
    }
    assert_eq!(rows.get("summary").map(Vec::len), Some(1));
    for kind in ["connections", "requests", "diagnosis"] {
        let mut streamed = rows.remove(kind).unwrap_or_default();
        let key = |v: &serde_json::Value| v.to_string();
        streamed.sort_by_key(key);
        let mut kept = model[kind].as_array().cloned().unwrap_or_default();
        kept.sort_by_key(key);
        assert!(
            streamed == kept,
            "the JSON lines' {kind} differ from the document's"
        );
    }
    for format in [
        Format::Table,
        Format::Markdown,
        Format::Summary,
        Format::Jsonl,
    ] {
        render(&report, format);
    }
}

fn render(report: &crate::report::Report, format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    let options = RenderOptions {
        format,
        requests: RequestRows::All,
    };
    write_report(report, &options, &mut out).expect("rendering to memory cannot fail");
    out
}

/// Largest seed derived from a capture for the targets that take stream
/// bytes (HTTP/1, h2, TLS, the analyser's script).
const MAX_DERIVED_SEED: usize = 16 << 10;

/// Seeds for target `name` derived from one capture file's bytes: the file
/// itself for the targets that read files; its frames for the decoder; the
/// bytes each direction of each connection carried for the stream parsers;
/// its connections as scripts for the analyser. Nothing for the scripted
/// tracker and reassembly targets, which start from [`generated_seeds`].
pub fn seeds(name: &str, capture: &[u8]) -> Vec<Vec<u8>> {
    match name {
        "capture_reader" | "pipeline" => return vec![capture.to_vec()],
        "tracker" | "reassembly" => return Vec::new(),
        _ => {}
    }
    let Some((frames, _)) = read_frames(capture, false) else {
        return Vec::new();
    };
    if name == "decode" {
        return frames
            .iter()
            .filter_map(|(link, _, caplen, wirelen, bytes)| {
                let index = LINK_TYPES.iter().position(|l| l == link)?;
                let cut = (wirelen - caplen).min(255) as u8;
                Some([&[index as u8, cut][..], bytes].concat())
            })
            .collect();
    }
    // Each direction's payloads in capture order, by (src, dst); the first
    // sender of a connection is taken for its client.
    let mut streams: BTreeMap<(SocketAddr, SocketAddr), Vec<u8>> = BTreeMap::new();
    let mut scripts: BTreeMap<(SocketAddr, SocketAddr), Vec<u8>> = BTreeMap::new();
    for (link, ts, caplen, wirelen, bytes) in &frames {
        let frame = Frame {
            ts: Timestamp(*ts),
            caplen: *caplen,
            wirelen: *wirelen,
            data: bytes,
        };
        let Decoded::Tcp(seg) = decode(*link, &frame) else {
            continue;
        };
        let payload = &bytes[seg.payload.clone()];
        let stream = streams.entry((seg.src, seg.dst)).or_default();
        if stream.len() < MAX_DERIVED_SEED {
            stream.extend_from_slice(payload);
        }
        let (key, side) = if scripts.contains_key(&(seg.dst, seg.src)) {
            ((seg.dst, seg.src), 1)
        } else {
            ((seg.src, seg.dst), 0)
        };
        let script = scripts.entry(key).or_default();
        let code = match seg.flags {
            f if f.is_syn_only() => 0,
            f if f.is_syn_ack() => 1,
            f if f.rst() => 3,
            f if f.fin() => 2,
            _ => 4,
        };
        if payload.is_empty() && code == 4 {
            continue;
        }
        let mut pieces: Vec<&[u8]> = payload.chunks(255).collect();
        if pieces.is_empty() {
            pieces.push(&[]);
        }
        for piece in pieces {
            if script.len() < MAX_DERIVED_SEED {
                script.extend_from_slice(&[side | code << 1, 0, piece.len() as u8]);
                script.extend_from_slice(piece);
            }
        }
    }
    let streams = streams.into_values().filter(|s| !s.is_empty());
    match name {
        "http1" => streams.collect(),
        "h2_frames" => streams
            .flat_map(|s| [[&[0u8][..], &s].concat(), [&[0xfd][..], &s].concat()])
            .collect(),
        "tls_hello" => streams.filter(|s| s.starts_with(&[0x16, 3])).collect(),
        "http_analyzer" => scripts.into_values().collect(),
        _ => Vec::new(),
    }
}

/// Small seeds made here for target `name`, needing no capture: a minimal
/// pcap, pcapng and gzip file, a frame of each link type, protocol openings,
/// and bytes from a fixed generator for the scripted targets.
pub fn generated_seeds(name: &str) -> Vec<Vec<u8>> {
    let pcap = tiny_pcap();
    match name {
        "capture_reader" | "pipeline" => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &pcap).unwrap();
            vec![pcap.clone(), tiny_pcapng(), gz.finish().unwrap()]
        }
        "decode" => (0..LINK_TYPES.len() as u8)
            .map(|i| {
                let ip = &ipv4_tcp(40000, 80, 1, TcpFlags::SYN, b"")[14..];
                let frame: Vec<u8> = match LINK_TYPES[usize::from(i)] {
                    LinkType::ETHERNET => ipv4_tcp(40000, 80, 1, TcpFlags::SYN, b"GET"),
                    LinkType::LINUX_SLL => [&[0; 14][..], &[8, 0], ip].concat(),
                    LinkType::LINUX_SLL2 => [&[8, 0][..], &[0; 18], ip].concat(),
                    LinkType::NULL | LinkType::LOOP => [&[2, 0, 0, 0][..], ip].concat(),
                    _ => ip.to_vec(),
                };
                [&[i, 0][..], &frame].concat()
            })
            .collect(),
        "http1" => CANNED.iter().map(|c| c.to_vec()).collect(),
        "h2_frames" => vec![
            [&[0u8][..], CANNED[4], CANNED[5]].concat(),
            [&[1u8][..], CANNED[5]].concat(),
        ],
        "tls_hello" => vec![tiny_client_hello()],
        "http_analyzer" => {
            let mut script = vec![0, 0, 0, 3, 0, 0];
            for (side, bytes) in [(0u8, CANNED[0]), (1, CANNED[1]), (0, CANNED[0])] {
                script.extend_from_slice(&[side | 4 << 1, 0, bytes.len() as u8]);
                script.extend_from_slice(bytes);
            }
            script.extend_from_slice(&[2 << 1, 0, 0, 1 | 2 << 1, 0, 0]);
            vec![script]
        }
        "tracker" | "reassembly" => (0..8u64)
            .map(|k| {
                let mut x = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(k + 1);
                (0..16 << k)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// An Ethernet/IPv4/TCP frame from 10.0.0.1 to 10.0.0.2.
fn ipv4_tcp(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 8, 0];
    let total = (40 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0x10, 0, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Frames of one short HTTP/1.1 exchange, client to server and back.
fn tiny_exchange() -> Vec<Vec<u8>> {
    let (c, s) = (40000, 80);
    let (syn, ack, psh, fin) = (TcpFlags::SYN, TcpFlags::ACK, TcpFlags::PSH, TcpFlags::FIN);
    vec![
        ipv4_tcp(c, s, 100, syn, b""),
        ipv4_tcp(s, c, 500, syn | ack, b""),
        ipv4_tcp(c, s, 101, ack | psh, CANNED[0]),
        ipv4_tcp(s, c, 501, ack | psh, CANNED[1]),
        ipv4_tcp(c, s, 101 + CANNED[0].len() as u32, fin | ack, b""),
    ]
}

fn tiny_pcap() -> Vec<u8> {
    let mut out = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, frame) in tiny_exchange().iter().enumerate() {
        let len = frame.len() as u32;
        for field in [1_700_000_000, i as u32 * 1000, len, len] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(frame);
    }
    out
}

fn tiny_pcapng() -> Vec<u8> {
    fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.resize(out.len() + padded - body.len(), 0);
        out.extend_from_slice(&len.to_le_bytes());
    }
    let mut out = Vec::new();
    let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    block(&mut out, SECTION_HEADER_BLOCK, &shb);
    let mut idb = 1u16.to_le_bytes().to_vec();
    idb.extend_from_slice(&[0, 0]);
    idb.extend_from_slice(&65535u32.to_le_bytes());
    block(&mut out, 1, &idb);
    for (i, frame) in tiny_exchange().iter().enumerate() {
        let micros = 1_700_000_000_000_000u64 + i as u64 * 1000;
        let len = frame.len() as u32;
        let mut epb = 0u32.to_le_bytes().to_vec();
        epb.extend_from_slice(&((micros >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(micros as u32).to_le_bytes());
        epb.extend_from_slice(&len.to_le_bytes());
        epb.extend_from_slice(&len.to_le_bytes());
        epb.extend_from_slice(frame);
        epb.resize(epb.len().div_ceil(4) * 4, 0);
        block(&mut out, 6, &epb);
    }
    out
}

const SECTION_HEADER_BLOCK: u32 = 0x0a0d_0d0a;

/// A ClientHello naming `example.com` and offering h2 and http/1.1.
fn tiny_client_hello() -> Vec<u8> {
    fn with_len16(body: &[u8]) -> Vec<u8> {
        [&(body.len() as u16).to_be_bytes()[..], body].concat()
    }
    let name = b"example.com";
    let sni = with_len16(&[&[0u8][..], &with_len16(name)].concat());
    let alpn = with_len16(b"\x02h2\x08http/1.1");
    let extensions = [
        &[0u8, 0][..],
        &with_len16(&sni),
        &[0, 16],
        &with_len16(&alpn),
    ]
    .concat();
    let mut hello = vec![3, 3];
    hello.extend_from_slice(&[7; 32]);
    hello.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    hello.extend_from_slice(&with_len16(&extensions));
    let len = hello.len() as u32;
    let handshake = [&[1u8][..], &len.to_be_bytes()[1..], &hello].concat();
    [&[0x16u8, 3, 1][..], &with_len16(&handshake)].concat()
}
