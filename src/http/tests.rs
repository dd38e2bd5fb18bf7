//! Byte-stream scenarios through whole segments: what a flow tracker feeds.

use super::*;
use crate::wire::{SeqNumber, TcpFlags};
use h2::tests::frame;

const CLIENT_ISN: u32 = 4_294_967_000; // wraps during the tests
const SERVER_ISN: u32 = 7_000;

/// A connection under test: keeps each side's next sequence number and a
/// clock that advances one millisecond per segment.
struct Conn {
    an: ConnectionAnalyzer,
    seq: [u32; 2],
    clock: i64,
}

fn dir_of(i: usize) -> Direction {
    if i == CLIENT {
        Direction::ToServer
    } else {
        Direction::ToClient
    }
}

impl Conn {
    /// A connection whose handshake was seen.
    fn open() -> Conn {
        let mut c = Conn::midstream();
        c.raw(CLIENT, CLIENT_ISN, TcpFlags::SYN, b"");
        c.raw(SERVER, SERVER_ISN, TcpFlags::SYN | TcpFlags::ACK, b"");
        c.seq = [CLIENT_ISN.wrapping_add(1), SERVER_ISN.wrapping_add(1)];
        c
    }

    /// An HTTP/2 connection (prior knowledge) past its preface and both
    /// sides' SETTINGS, the server's carrying `server_settings`.
    fn h2(server_settings: &[u8]) -> Conn {
        let mut c = Conn::open();
        let mut hello = h2::PREFACE.to_vec();
        hello.extend(frame(kind::SETTINGS, 0, 0, &[]));
        c.client(&hello);
        c.server(&frame(kind::SETTINGS, 0, 0, server_settings));
        c
    }

    /// A connection whose capture starts with data.
    fn midstream() -> Conn {
        Conn {
            an: ConnectionAnalyzer::new(),
            seq: [CLIENT_ISN.wrapping_add(1), SERVER_ISN.wrapping_add(1)],
            clock: 1_000_000,
        }
    }

    fn segment(
        &mut self,
        i: usize,
        seq: u32,
        flags: u8,
        payload: &[u8],
        wire_len: u32,
    ) -> Timestamp {
        self.clock += 1000;
        let ts = Timestamp(self.clock);
        let seg = Segment {
            ts,
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.2:80".parse().unwrap(),
            seq: SeqNumber(seq),
            ack: SeqNumber(self.seq[1 - i]),
            flags: TcpFlags(flags),
            window: 1000,
            payload_len: wire_len,
            payload: 0..payload.len(),
            frame_len: 54 + wire_len,
        };
        self.an.on_segment(dir_of(i), &seg, payload);
        ts
    }

    fn raw(&mut self, i: usize, seq: u32, flags: u8, payload: &[u8]) -> Timestamp {
        self.segment(i, seq, flags, payload, payload.len() as u32)
    }

    /// Send the next bytes of side `i`, in order.
    fn send(&mut self, i: usize, payload: &[u8]) -> Timestamp {
        let seq = self.seq[i];
        self.seq[i] = seq.wrapping_add(payload.len() as u32);
        self.raw(i, seq, TcpFlags::ACK | TcpFlags::PSH, payload)
    }

    fn client(&mut self, payload: &[u8]) -> Timestamp {
        self.send(CLIENT, payload)
    }

    fn server(&mut self, payload: &[u8]) -> Timestamp {
        self.send(SERVER, payload)
    }

    fn fin(&mut self, i: usize) {
        let seq = self.seq[i];
        self.seq[i] = seq.wrapping_add(1);
        self.raw(i, seq, TcpFlags::FIN | TcpFlags::ACK, b"");
    }

    fn done(mut self) -> ConnectionAnalyzer {
        self.an.finish();
        self.an
    }
}

fn targets(an: &ConnectionAnalyzer) -> Vec<(String, String, Option<u16>)> {
    an.exchanges()
        .iter()
        .map(|e| (e.method.to_string(), e.target.clone(), e.status))
        .collect()
}

fn t(method: &str, target: &str, status: Option<u16>) -> (String, String, Option<u16>) {
    (method.to_owned(), target.to_owned(), status)
}

const GET_A: &[u8] = b"GET /a HTTP/1.1\r\nHost: example.test\r\nX-Conntrace-Id: run1-0\r\n\r\n";
const OK_5: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn one_exchange_with_host_tag_and_times() {
    let mut c = Conn::open();
    let sent = c.client(GET_A);
    let answered = c.server(OK_5);
    let an = c.done();
    assert_eq!(an.protocol(), AppProtocol::Http11);
    let e = &an.exchanges()[0];
    assert_eq!(e.depth, 1);
    assert_eq!(e.host.as_deref(), Some("example.test"));
    assert_eq!(e.tag.as_deref(), Some("run1-0"));
    assert_eq!(
        (e.sent, e.answered, e.status),
        (sent, Some(answered), Some(200))
    );
    assert_eq!(an.signals(), &HttpSignals::default());
}

#[test]
fn requests_repeating_the_host_share_one_copy_of_it() {
    let mut c = Conn::open();
    for head in [
        &b"GET /1 HTTP/1.1\r\nHost: example.test\r\n\r\n"[..],
        b"GET /2 HTTP/1.1\r\nHost:  example.test \r\n\r\n",
        b"GET /3 HTTP/1.1\r\nHost: other.test\r\n\r\n",
        b"GET /4 HTTP/1.1\r\n\r\n",
    ] {
        c.client(head);
        c.server(OK_5);
    }
    let an = c.done();
    let hosts: Vec<Option<&str>> = an.exchanges().iter().map(|e| e.host.as_deref()).collect();
    assert_eq!(
        hosts,
        [
            Some("example.test"),
            Some("example.test"),
            Some("other.test"),
            None
        ]
    );
    let (first, second) = (&an.exchanges()[0].host, &an.exchanges()[1].host);
    let (Some(first), Some(second)) = (first, second) else {
        unreachable!("checked above");
    };
    assert!(std::sync::Arc::ptr_eq(first, second));
}

#[test]
fn request_split_across_many_segments() {
    let mut c = Conn::open();
    let first = c.client(&GET_A[..1]);
    for b in GET_A[1..].chunks(3) {
        c.client(b);
    }
    c.server(OK_5);
    let an = c.done();
    assert_eq!(targets(&an), vec![t("GET", "/a", Some(200))]);
    assert_eq!(an.exchanges()[0].sent, first);
}

#[test]
fn out_of_order_and_retransmitted_segments_deliver_once() {
    let mut c = Conn::open();
    let base = c.seq[CLIENT];
    let parts: Vec<&[u8]> = GET_A.chunks(20).collect();
    assert_eq!(parts.len(), 4);
    let at = |k: usize| base.wrapping_add((k * 20) as u32);
    c.raw(CLIENT, at(2), TcpFlags::ACK, parts[2]);
    let first = c.raw(CLIENT, at(0), TcpFlags::ACK, parts[0]);
    c.raw(CLIENT, at(0), TcpFlags::ACK, parts[0]);
    c.raw(CLIENT, at(2), TcpFlags::ACK, parts[2]);
    c.raw(CLIENT, at(3), TcpFlags::ACK, parts[3]);
    c.raw(CLIENT, at(1), TcpFlags::ACK, parts[1]);
    c.raw(CLIENT, at(1), TcpFlags::ACK, parts[1]);
    c.seq[CLIENT] = base.wrapping_add(GET_A.len() as u32);
    c.client(b"GET /b HTTP/1.1\r\n\r\n");
    c.server(OK_5);
    c.server(OK_5);
    let an = c.done();
    assert_eq!(
        targets(&an),
        vec![t("GET", "/a", Some(200)), t("GET", "/b", Some(200))]
    );
    assert_eq!(an.exchanges()[0].sent, first);
    assert_eq!(an.signals().stream_gaps_client, 0);
    assert_eq!(an.signals().framing_errors, 0);
}

#[test]
fn overlapping_segments_are_trimmed() {
    let mut c = Conn::open();
    let base = c.seq[CLIENT];
    c.raw(CLIENT, base, TcpFlags::ACK, &GET_A[..30]);
    c.raw(CLIENT, base.wrapping_add(10), TcpFlags::ACK, &GET_A[10..50]);
    c.raw(CLIENT, base.wrapping_add(45), TcpFlags::ACK, &GET_A[45..]);
    c.seq[CLIENT] = base.wrapping_add(GET_A.len() as u32);
    c.server(OK_5);
    let an = c.done();
    assert_eq!(targets(&an), vec![t("GET", "/a", Some(200))]);
    assert_eq!(an.exchanges()[0].tag.as_deref(), Some("run1-0"));
}

#[test]
fn gap_then_resync_at_next_request_line() {
    let mut c = Conn::open();
    c.client(GET_A);
    let lost = b"GET /lost HTTP/1.1\r\nHost: x\r\n";
    c.seq[CLIENT] = c.seq[CLIENT].wrapping_add(lost.len() as u32);
    c.client(b"Accept: */*\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n");
    // The server acknowledges past the hole: the capture, not the network, lost it.
    c.server(OK_5);
    let an = c.done();
    let got: Vec<_> = an.exchanges().iter().map(|e| e.target.clone()).collect();
    assert_eq!(got, ["/a", "/c"]);
    let s = an.signals();
    assert_eq!(s.stream_gaps_client, 1);
    assert_eq!(s.missing_bytes_client, lost.len() as u64);
    assert_eq!(s.resyncs, 1);
}

#[test]
fn gap_inside_a_sized_body_keeps_sync() {
    let mut c = Conn::open();
    c.client(b"POST /up HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
    c.client(&[b'x'; 20]);
    c.seq[CLIENT] = c.seq[CLIENT].wrapping_add(50);
    c.client(&[b'y'; 30]);
    c.client(b"GET /next HTTP/1.1\r\n\r\n");
    c.server(OK_5);
    c.server(OK_5);
    let an = c.done();
    assert_eq!(
        targets(&an),
        vec![t("POST", "/up", Some(200)), t("GET", "/next", Some(200))]
    );
    assert_eq!(an.signals().resyncs, 0);
    assert_eq!(an.signals().missing_bytes_client, 50);
}

#[test]
fn snaplen_truncated_payload_is_a_gap() {
    let mut c = Conn::open();
    let seq = c.seq[CLIENT];
    let req = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n";
    c.segment(CLIENT, seq, TcpFlags::ACK, &req[..10], req.len() as u32);
    c.seq[CLIENT] = seq.wrapping_add(req.len() as u32);
    c.client(GET_A);
    c.server(OK_5);
    let an = c.done();
    let got: Vec<_> = an.exchanges().iter().map(|e| e.target.clone()).collect();
    assert_eq!(got, ["/a"]);
    assert_eq!(an.signals().missing_bytes_client, (req.len() - 10) as u64);
}

#[test]
fn response_body_cut_by_the_end_of_the_capture() {
    let mut c = Conn::open();
    c.client(GET_A);
    c.server(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial");
    let an = c.done();
    assert_eq!(targets(&an), vec![t("GET", "/a", Some(200))]);
    assert_eq!(an.signals().incomplete_messages, 1);
}

#[test]
fn chunked_response_with_trailers_then_next_exchange() {
    let mut c = Conn::open();
    c.client(GET_A);
    c.server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWi");
    c.server(b"ki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\n");
    c.client(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    c.server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let an = c.done();
    assert_eq!(
        targets(&an),
        vec![t("GET", "/a", Some(200)), t("GET", "/b", Some(404))]
    );
    assert_eq!(an.signals().framing_errors, 0);
    assert_eq!(an.signals().incomplete_messages, 0);
}

#[test]
fn chunked_request_body() {
    let mut c = Conn::open();
    c.client(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /d HTTP/1.1\r\n\r\n");
    c.server(OK_5);
    c.server(OK_5);
    let an = c.done();
    assert_eq!(
        targets(&an),
        vec![t("POST", "/c", Some(200)), t("GET", "/d", Some(200))]
    );
}

#[test]
fn head_response_has_no_body() {
    let mut c = Conn::open();
    c.client(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n");
    c.server(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    c.server(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
    let an = c.done();
    assert_eq!(
        targets(&an),
        vec![t("HEAD", "/h", Some(200)), t("GET", "/g", Some(201))]
    );
}

#[test]
fn continue_100_is_interim() {
    let mut c = Conn::open();
    c.client(b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    let interim = c.server(b"HTTP/1.1 100 Continue\r\n\r\n");
    c.client(b"body");
    c.server(OK_5);
    c.client(b"GET /after HTTP/1.1\r\n\r\n");
    c.server(OK_5);
    let an = c.done();
    assert_eq!(
        targets(&an),
        vec![t("POST", "/p", Some(200)), t("GET", "/after", Some(200))]
    );
    assert_ne!(an.exchanges()[0].answered, Some(interim));
    assert_eq!(an.signals().interim_responses, 1);
}

#[test]
fn no_content_and_not_modified_have_no_body() {
    let mut c = Conn::open();
    c.client(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n");
    c.server(b"HTTP/1.1 204 No Content\r\n\r\n");
    c.server(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n");
    c.server(OK_5);
    let an = c.done();
    assert_eq!(
        targets(&an),
        vec![
            t("GET", "/1", Some(204)),
            t("GET", "/2", Some(304)),
            t("GET", "/3", Some(200))
        ]
    );
}

#[test]
fn close_delimited_body_runs_to_fin() {
    let mut c = Conn::open();
    c.client(b"GET /old HTTP/1.0\r\n\r\n");
    c.server(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n");
    c.server(b"HTTP/1.1 200 this is body text, not a response\r\n\r\n");
    c.fin(SERVER);
    let an = c.done();
    assert_eq!(an.protocol(), AppProtocol::Http10);
    assert_eq!(targets(&an), vec![t("GET", "/old", Some(200))]);
    let s = an.signals();
    assert_eq!(s.close_delimited_depth, Some(1));
    assert_eq!(s.client_http10_depth, Some(1));
    assert_eq!(s.server_http10_depth, Some(1));
    assert_eq!(s.unmatched_responses, 0);
    assert_eq!(s.incomplete_messages, 0);
}

#[test]
fn http10_with_keep_alive_is_not_a_close_signal() {
    let mut c = Conn::open();
    c.client(b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    c.server(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
    let an = c.done();
    assert_eq!(an.protocol(), AppProtocol::Http10);
    assert_eq!(an.signals().client_http10_depth, None);
    assert_eq!(an.signals().server_http10_depth, None);
}

#[test]
fn three_pipelined_requests_in_one_segment() {
    let mut c = Conn::open();
    let sent = c.client(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n");
    let r1 = c.server(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1HTTP/1.1 404 Nope\r\nContent-Length: 1\r\n\r\n2");
    let r3 = c.server(b"HTTP/1.1 500 Err\r\nContent-Length: 1\r\n\r\n3");
    let an = c.done();
    assert_eq!(
        targets(&an),
        vec![
            t("GET", "/1", Some(200)),
            t("GET", "/2", Some(404)),
            t("GET", "/3", Some(500))
        ]
    );
    let depths: Vec<_> = an
        .exchanges()
        .iter()
        .map(|e| (e.depth, e.sent, e.answered))
        .collect();
    assert_eq!(
        depths,
        vec![
            (1, sent, Some(r1)),
            (2, sent, Some(r1)),
            (3, sent, Some(r3))
        ]
    );
}

#[test]
fn connection_close_and_keep_alive_hints_are_recorded() {
    let mut c = Conn::open();
    c.client(b"GET /1 HTTP/1.1\r\n\r\n");
    c.server(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=2\r\nContent-Length: 0\r\n\r\n");
    c.client(b"GET /2 HTTP/1.1\r\n\r\n");
    c.server(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    c.fin(SERVER);
    c.client(b"GET /3 HTTP/1.1\r\nConnection: close\r\n\r\n");
    let an = c.done();
    let s = an.signals();
    assert_eq!(s.keep_alive_timeout_s, Some(5));
    assert_eq!(s.keep_alive_max, Some(2));
    assert_eq!(s.server_close_depth, Some(2));
    assert_eq!(s.client_close_depth, Some(3));
    assert_eq!(an.exchanges()[2].status, None);
}

#[test]
fn response_before_its_request_is_unmatched() {
    let mut c = Conn::midstream();
    c.server(OK_5);
    c.client(GET_A);
    let an = c.done();
    assert_eq!(targets(&an), vec![t("GET", "/a", None)]);
    assert_eq!(an.signals().unmatched_responses, 1);
    assert!(an.signals().midstream);
}

#[test]
fn capture_starting_mid_body_resyncs() {
    let mut c = Conn::midstream();
    c.client(b"rest of some upload body\r\nmore\r\nGET /x HTTP/1.1\r\nHost: y\r\n\r\n");
    c.server(b"tail of a body HTTP/1.1 200 OK\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let an = c.done();
    assert_eq!(targets(&an), vec![t("GET", "/x", Some(200))]);
}

#[test]
fn websocket_upgrade_stops_parsing() {
    let mut c = Conn::open();
    c.client(b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    c.client(b"\x81\x85GET / HTTP/1.1\r\n\r\n");
    c.server(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi");
    c.client(b"GET /not-http HTTP/1.1\r\n\r\n");
    let an = c.done();
    assert_eq!(targets(&an), vec![t("GET", "/ws", Some(101))]);
    assert_eq!(an.signals().upgrade.as_deref(), Some("websocket"));
    assert_eq!(an.signals().upgrade_depth, Some(1));
}

#[test]
fn refused_upgrade_continues_http1() {
    let mut c = Conn::open();
    c.client(b"GET /u HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n");
    c.client(b"GET /v HTTP/1.1\r\n\r\n");
    c.server(OK_5);
    c.server(OK_5);
    let an = c.done();
    assert_eq!(
        targets(&an),
        vec![t("GET", "/u", Some(200)), t("GET", "/v", Some(200))]
    );
    assert_eq!(an.signals().upgrade, None);
}

#[test]
fn connect_tunnel_is_not_parsed() {
    let mut c = Conn::open();
    c.client(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n");
    c.server(b"HTTP/1.1 200 Connection established\r\n\r\n");
    c.client(b"\x16\x03\x01\x00\x05hello");
    c.server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let an = c.done();
    assert_eq!(
        targets(&an),
        vec![t("CONNECT", "example.test:443", Some(200))]
    );
    assert_eq!(an.signals().tunnel_depth, Some(1));
    assert_eq!(an.signals().unmatched_responses, 0);
}

mod kind {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const GOAWAY: u8 = 7;
    pub const CONTINUATION: u8 = 9;
}
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

fn request_fields<'a>(
    method: &'a [u8],
    path: &'a [u8],
    tag: &'a [u8],
) -> Vec<(&'a [u8], &'a [u8])> {
    vec![
        (b":method", method),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"h2.test"),
        (b"x-conntrace-id", tag),
    ]
}

#[test]
fn h2c_prior_knowledge_streams_continuation_padding_goaway_rst() {
    let mut enc_c = loona_hpack::Encoder::new();
    let mut enc_s = loona_hpack::Encoder::new();
    let mut c = Conn::h2(&[0, 1, 0, 0, 0x10, 0]);

    // Stream 1: padded HEADERS, split over two segments.
    let block = enc_c.encode(request_fields(b"GET", b"/one", b"t1"));
    let mut payload = vec![3];
    payload.extend(&block);
    payload.extend([0, 0, 0]);
    let f = frame(
        kind::HEADERS,
        END_HEADERS | END_STREAM | PADDED,
        1,
        &payload,
    );
    let sent1 = c.client(&f[..7]);
    c.client(&f[7..]);

    // Stream 3: HEADERS with priority, then CONTINUATION.
    let block = enc_c.encode(request_fields(b"POST", b"/two", b"t2"));
    let (a, b) = block.split_at(block.len() / 2);
    let mut payload = vec![0, 0, 0, 1, 200];
    payload.extend(a);
    let sent3 = c.client(&frame(kind::HEADERS, PRIORITY, 3, &payload));
    let mut bytes = frame(kind::CONTINUATION, END_HEADERS, 3, b);
    bytes.extend(frame(kind::DATA, END_STREAM, 3, b"form=1"));
    c.client(&bytes);

    // Stream 5, reset by the client.
    let block = enc_c.encode(request_fields(b"GET", b"/three", b"t3"));
    let mut bytes = frame(kind::HEADERS, END_HEADERS | END_STREAM, 5, &block);
    bytes.extend(frame(kind::RST_STREAM, 0, 5, &8u32.to_be_bytes()));
    c.client(&bytes);

    let block = enc_s.encode([(&b":status"[..], &b"200"[..])]);
    let answered3 = c.server(&frame(kind::HEADERS, END_HEADERS, 3, &block));
    let block = enc_s.encode([(&b":status"[..], &b"404"[..])]);
    let mut bytes = frame(kind::HEADERS, END_HEADERS, 1, &block);
    bytes.extend(frame(kind::DATA, END_STREAM, 1, &[0; 100]));
    let mut goaway = 3u32.to_be_bytes().to_vec();
    goaway.extend(0u32.to_be_bytes());
    bytes.extend(frame(kind::GOAWAY, 0, 0, &goaway));
    let answered1 = c.server(&bytes);
    let an = c.done();

    assert_eq!(an.protocol(), AppProtocol::H2c);
    assert_eq!(
        targets(&an),
        vec![
            t("GET", "/one", Some(404)),
            t("POST", "/two", Some(200)),
            t("GET", "/three", None)
        ]
    );
    let e = an.exchanges();
    assert_eq!(
        e.iter().map(|e| e.h2_stream).collect::<Vec<_>>(),
        [Some(1), Some(3), Some(5)]
    );
    assert_eq!(e.iter().map(|e| e.depth).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(e[2].tag.as_deref(), Some("t3"));
    assert_eq!(e[0].host.as_deref(), Some("h2.test"));
    assert_eq!((e[0].sent, e[0].answered), (sent1, Some(answered1)));
    assert_eq!((e[1].sent, e[1].answered), (sent3, Some(answered3)));
    let s = an.signals();
    assert_eq!(s.h2_start, Some("prior_knowledge"));
    assert_eq!(s.rst_stream_client, 1);
    assert_eq!(s.rst_stream_server, 0);
    assert_eq!(
        s.goaway,
        vec![GoAway {
            sender: "server",
            last_stream_id: 3,
            error_code: 0
        }]
    );
    assert_eq!(s.hpack_errors, 0);
}

#[test]
fn h2c_upgrade_makes_the_request_stream_one() {
    let mut enc_c = loona_hpack::Encoder::new();
    let mut enc_s = loona_hpack::Encoder::new();
    let mut c = Conn::open();
    let sent = c.client(b"GET /up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n");
    let mut bytes =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    bytes.extend(frame(kind::SETTINGS, 0, 0, &[]));
    c.server(&bytes);
    let mut hello = h2::PREFACE.to_vec();
    hello.extend(frame(kind::SETTINGS, 0, 0, &[]));
    let block = enc_c.encode(request_fields(b"GET", b"/next", b"n"));
    hello.extend(frame(kind::HEADERS, END_HEADERS | END_STREAM, 3, &block));
    c.client(&hello);
    let block = enc_s.encode([(&b":status"[..], &b"200"[..])]);
    let answered = c.server(&frame(kind::HEADERS, END_HEADERS, 1, &block));
    let block = enc_s.encode([(&b":status"[..], &b"204"[..])]);
    c.server(&frame(kind::HEADERS, END_HEADERS, 3, &block));
    let an = c.done();
    assert_eq!(an.protocol(), AppProtocol::H2c);
    assert_eq!(
        targets(&an),
        vec![t("GET", "/up", Some(200)), t("GET", "/next", Some(204))]
    );
    let e = an.exchanges();
    assert_eq!(
        (e[0].h2_stream, e[0].sent, e[0].answered),
        (Some(1), sent, Some(answered))
    );
    assert_eq!(e[1].h2_stream, Some(3));
    let s = an.signals();
    assert_eq!(s.h2_start, Some("upgrade"));
    assert_eq!(s.upgrade.as_deref(), Some("h2c"));
    assert_eq!(s.upgrade_depth, Some(1));
}

/// HTTP/2 streams after the first, answered, are handed out in the order
/// they were sent, never past one still open; a later frame on one handed
/// out changes nothing.
#[test]
fn h2_answered_streams_are_handed_out_in_order_and_stay_known() {
    let mut enc_c = loona_hpack::Encoder::new();
    let mut enc_s = loona_hpack::Encoder::new();
    let mut c = Conn::h2(&[]);
    for (stream, path) in [(1, b"/1"), (3, b"/3"), (5, b"/5"), (7, b"/7")] {
        let block = enc_c.encode(request_fields(b"GET", path, b"t"));
        c.client(&frame(
            kind::HEADERS,
            END_HEADERS | END_STREAM,
            stream,
            &block,
        ));
    }
    let mut answer = |c: &mut Conn, stream: u32| {
        let block = enc_s.encode([(&b":status"[..], &b"200"[..])]);
        c.server(&frame(
            kind::HEADERS,
            END_HEADERS | END_STREAM,
            stream,
            &block,
        ));
    };
    answer(&mut c, 5);
    // Stream 3 is still open: nothing after it goes.
    assert_eq!(c.an.take_settled(4).count(), 0);
    answer(&mut c, 3);
    let settled: Vec<Option<u32>> = c.an.take_settled(4).map(|x| x.h2_stream).collect();
    assert_eq!(settled, [Some(3), Some(5)]);
    // A response again on stream 3, trailers on stream 5: no new request,
    // no unmatched response.
    answer(&mut c, 3);
    let trailers = enc_c.encode([(&b"x-checksum"[..], &b"1"[..])]);
    c.client(&frame(
        kind::HEADERS,
        END_HEADERS | END_STREAM,
        5,
        &trailers,
    ));
    answer(&mut c, 1);
    let block = enc_c.encode(request_fields(b"GET", b"/9", b"t"));
    c.client(&frame(kind::HEADERS, END_HEADERS | END_STREAM, 9, &block));
    let an = c.done();
    assert_eq!(an.drained(), 2);
    let held: Vec<(Option<u32>, u32)> = an
        .exchanges()
        .iter()
        .map(|e| (e.h2_stream, e.depth))
        .collect();
    assert_eq!(held, [(Some(1), 1), (Some(7), 4), (Some(9), 5)]);
    assert_eq!(an.signals().unmatched_responses, 0);
}

#[test]
fn h2_midstream_is_recognised_by_frame_shape() {
    let mut enc = loona_hpack::Encoder::new();
    let mut c = Conn::midstream();
    let mut bytes = frame(8, 0, 0, &[0, 0, 1, 0]);
    let block = enc.encode(request_fields(b"GET", b"/mid", b"m"));
    bytes.extend(frame(kind::HEADERS, END_HEADERS | END_STREAM, 9, &block));
    // An index into a dynamic table whose history the capture missed.
    bytes.extend(frame(kind::HEADERS, END_HEADERS | END_STREAM, 11, &[0xc5]));
    c.client(&bytes);
    let an = c.done();
    assert_eq!(an.protocol(), AppProtocol::H2c);
    assert_eq!(an.signals().h2_start, Some("midstream"));
    assert_eq!(targets(&an), vec![t("GET", "/mid", None), t("", "", None)]);
    assert_eq!(an.signals().hpack_errors, 1);
}

#[test]
fn h2_server_settings_before_client_preface() {
    let mut enc = loona_hpack::Encoder::new();
    let mut c = Conn::open();
    c.server(&frame(kind::SETTINGS, 0, 0, &[]));
    let mut hello = h2::PREFACE.to_vec();
    hello.extend(frame(
        kind::HEADERS,
        END_HEADERS,
        1,
        &enc.encode(request_fields(b"GET", b"/", b"")),
    ));
    c.client(&hello);
    let block = loona_hpack::Encoder::new().encode([(&b":status"[..], &b"200"[..])]);
    c.server(&frame(kind::HEADERS, END_HEADERS, 1, &block));
    let an = c.done();
    assert_eq!(targets(&an), vec![t("GET", "/", Some(200))]);
    assert_eq!(an.signals().framing_errors, 0);
}

#[test]
fn h2_server_settings_give_the_stream_limit() {
    let mut c = Conn::open();
    let mut hello = h2::PREFACE.to_vec();
    // The client's own limit is not the server's.
    hello.extend(frame(kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 7]));
    c.client(&hello);
    // INITIAL_WINDOW_SIZE, then MAX_CONCURRENT_STREAMS twice: the last wins.
    let settings = [
        &[0, 4, 0, 1, 0, 0][..],
        &[0, 3, 0, 0, 0, 100][..],
        &[0, 3, 0, 0, 0, 128][..],
    ]
    .concat();
    c.server(&frame(kind::SETTINGS, 0, 0, &settings));
    // An ACK carries no settings.
    c.server(&frame(kind::SETTINGS, 1, 0, &[]));
    let an = c.done();
    assert_eq!(an.signals().h2_max_concurrent_streams, Some(128));
}

/// A real ClientHello (arkime tls-alpn-h2.pcap, frame 4).
const CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0xe8, 0x01, 0x00, 0x00, 0xe4, 0x03, 0x03, 0x85, 0x82, 0x26, 0xc0, 0x4f,
    0xba, 0xed, 0xde, 0xf4, 0x24, 0x60, 0x93, 0xb4, 0xcf, 0xda, 0xb3, 0x8f, 0x9d, 0xcf, 0xef, 0x14,
    0x53, 0x60, 0xe4, 0x17, 0x68, 0x65, 0x75, 0xca, 0xc4, 0x9c, 0x70, 0x00, 0x00, 0x5c, 0xc0, 0x30,
    0xc0, 0x2c, 0xc0, 0x28, 0xc0, 0x24, 0xc0, 0x14, 0xc0, 0x0a, 0x00, 0x9f, 0x00, 0x6b, 0x00, 0x39,
    0xcc, 0xa9, 0xcc, 0xa8, 0xcc, 0xaa, 0xff, 0x85, 0x00, 0xc4, 0x00, 0x88, 0x00, 0x81, 0x00, 0x9d,
    0x00, 0x3d, 0x00, 0x35, 0x00, 0xc0, 0x00, 0x84, 0xc0, 0x2f, 0xc0, 0x2b, 0xc0, 0x27, 0xc0, 0x23,
    0xc0, 0x13, 0xc0, 0x09, 0x00, 0x9e, 0x00, 0x67, 0x00, 0x33, 0x00, 0xbe, 0x00, 0x45, 0x00, 0x9c,
    0x00, 0x3c, 0x00, 0x2f, 0x00, 0xba, 0x00, 0x41, 0xc0, 0x11, 0xc0, 0x07, 0x00, 0x05, 0x00, 0x04,
    0xc0, 0x12, 0xc0, 0x08, 0x00, 0x16, 0x00, 0x0a, 0x00, 0xff, 0x01, 0x00, 0x00, 0x5f, 0x00, 0x00,
    0x00, 0x17, 0x00, 0x15, 0x00, 0x00, 0x12, 0x77, 0x77, 0x77, 0x2e, 0x63, 0x6c, 0x6f, 0x75, 0x64,
    0x66, 0x6c, 0x61, 0x72, 0x65, 0x2e, 0x63, 0x6f, 0x6d, 0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, 0x00,
    0x0a, 0x00, 0x08, 0x00, 0x06, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18, 0x00, 0x0d, 0x00, 0x1c, 0x00,
    0x1a, 0x06, 0x01, 0x06, 0x03, 0xef, 0xef, 0x05, 0x01, 0x05, 0x03, 0x04, 0x01, 0x04, 0x03, 0xee,
    0xee, 0xed, 0xed, 0x03, 0x01, 0x03, 0x03, 0x02, 0x01, 0x02, 0x03, 0x00, 0x10, 0x00, 0x0e, 0x00,
    0x0c, 0x02, 0x68, 0x32, 0x08, 0x68, 0x74, 0x74, 0x70, 0x2f, 0x31, 0x2e, 0x31,
];

#[test]
fn tls_client_hello_gives_sni_and_alpn() {
    let mut c = Conn::open();
    c.client(CLIENT_HELLO);
    c.server(b"\x16\x03\x03\x00\x10 server hello ....");
    let an = c.done();
    assert_eq!(an.protocol(), AppProtocol::Tls);
    assert_eq!(an.tls_sni(), Some("www.cloudflare.com"));
    assert_eq!(an.alpn(), ["h2", "http/1.1"]);
    assert!(an.exchanges().is_empty());
}

#[test]
fn tls_client_hello_split_across_segments() {
    let mut c = Conn::open();
    c.client(&CLIENT_HELLO[..3]);
    c.client(&CLIENT_HELLO[3..100]);
    c.client(&CLIENT_HELLO[100..]);
    let an = c.done();
    assert_eq!(an.tls_sni(), Some("www.cloudflare.com"));
    assert_eq!(an.alpn(), ["h2", "http/1.1"]);
}

#[test]
fn tls_client_hello_split_across_records() {
    let body = &CLIENT_HELLO[5..];
    let (a, b) = body.split_at(60);
    let mut bytes = Vec::new();
    for part in [a, b] {
        bytes.extend([0x16, 0x03, 0x01]);
        bytes.extend((part.len() as u16).to_be_bytes());
        bytes.extend(part);
    }
    let mut c = Conn::open();
    c.client(&bytes);
    let an = c.done();
    assert_eq!(an.tls_sni(), Some("www.cloudflare.com"));
}

/// The hello's handshake message cut into TLS records of the given sizes
/// (the last takes the rest).
fn hello_in_records(sizes: &[usize]) -> Vec<u8> {
    let mut body = &CLIENT_HELLO[5..];
    let mut bytes = Vec::new();
    for &size in sizes.iter().chain([&usize::MAX]) {
        let (part, rest) = body.split_at(size.min(body.len()));
        bytes.extend([0x16, 0x03, 0x01]);
        bytes.extend((part.len() as u16).to_be_bytes());
        bytes.extend(part);
        body = rest;
        if body.is_empty() {
            break;
        }
    }
    bytes
}

#[test]
fn tls_client_hello_whose_first_record_is_shorter_than_the_handshake_header() {
    for sizes in [&[1][..], &[2], &[3], &[1, 1, 1], &[2, 1, 5], &[3, 1]] {
        let bytes = hello_in_records(sizes);
        for per_segment in [bytes.len(), 1] {
            let mut c = Conn::open();
            for chunk in bytes.chunks(per_segment) {
                c.client(chunk);
            }
            let an = c.done();
            assert_eq!(an.tls_sni(), Some("www.cloudflare.com"), "{sizes:?}");
            assert_eq!(an.alpn(), ["h2", "http/1.1"], "{sizes:?}");
            assert_eq!(an.signals().framing_errors, 0, "{sizes:?}");
        }
    }
}

#[test]
fn tls_client_hello_in_one_byte_records_is_read() {
    let sizes = vec![1; CLIENT_HELLO.len()];
    let mut c = Conn::open();
    c.client(&hello_in_records(&sizes));
    assert_eq!(c.done().tls_sni(), Some("www.cloudflare.com"));
}

/// Bytes the analyser scanned for a client stream of `before`, then `n`
/// bytes of `filler` one per segment, then `after`, the server answering
/// each request; and the requests it found.
fn scanned_one_byte_at_a_time(
    before: &[u8],
    filler: &[u8],
    n: usize,
    after: &[u8],
) -> (u64, usize) {
    let mut c = Conn::open();
    if !before.is_empty() {
        c.client(before);
        c.server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }
    for k in 0..n {
        c.client(&filler[k % filler.len()..][..1]);
    }
    c.client(after);
    c.server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let an = c.done();
    (an.scanned_bytes(), an.exchanges().len())
}

#[test]
fn whitespace_a_byte_per_segment_is_scanned_linearly() {
    let request: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    type Case<'a> = (&'a [u8], &'a [u8], &'a [u8], usize);
    let cases: [Case<'_>; 6] = [
        // Before any request: while the protocol is still being detected.
        (b"", b"\t", b"\n", 0),
        (b"", b"\r", request, 1),
        (b"", b"\r\n", request, 1),
        // Between requests, and inside a head's header lines.
        (request, b"\r\n", request, 2),
        (request, b"\r", request, 2),
        (b"", b"\n\t", b"\r\n\r\n", 0),
    ];
    for (before, filler, after, requests) in cases {
        let n = 20_000;
        let (once, found) = scanned_one_byte_at_a_time(before, filler, n, after);
        let (twice, _) = scanned_one_byte_at_a_time(before, filler, 2 * n, after);
        let what = format!(
            "{:?} then {:?}",
            String::from_utf8_lossy(before),
            String::from_utf8_lossy(filler)
        );
        if filler != b"\n\t" {
            assert_eq!(found, requests, "{what}");
        }
        // Linear: a few readings of each byte, and twice the bytes cost
        // about twice the work (a rescan per byte would be n²/2).
        assert!(
            once <= 8 * n as u64 + 1000,
            "{what}: {once} bytes scanned for {n}"
        );
        assert!(twice <= 2 * once + 1000, "{what}: {once} then {twice}");
    }
}

/// A request head of about `kib` KiB: its line, a Host field, then
/// 1000-byte header lines, and its blank line.
fn big_request_head(target: &str, kib: usize) -> Vec<u8> {
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: big.example\r\n").into_bytes();
    let mut n = 0;
    while head.len() < kib * 1024 {
        let line = format!("X-Pad-{n}: {}\r\n", "a".repeat(990));
        head.extend_from_slice(line.as_bytes());
        n += 1;
    }
    head.extend_from_slice(b"\r\n");
    head
}

#[test]
fn requests_after_an_oversized_head_are_still_found() {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    for kib in [300, 600] {
        for segment in [1400, 64 * 1024] {
            let mut c = Conn::open();
            for chunk in big_request_head("/big", kib).chunks(segment) {
                c.client(chunk);
            }
            c.server(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n");
            c.client(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
            c.server(OK);
            c.client(b"GET /last HTTP/1.1\r\nHost: a\r\n\r\n");
            c.server(OK);
            let an = c.done();
            let what = format!("{kib} KiB in segments of {segment}");
            assert_eq!(
                targets(&an),
                vec![
                    t("GET", "/big", Some(431)),
                    t("GET", "/after", Some(200)),
                    t("GET", "/last", Some(200)),
                ],
                "{what}"
            );
            assert_eq!(
                an.exchanges()[0].host.as_deref(),
                Some("big.example"),
                "{what}"
            );
            assert_eq!(an.signals().oversized_heads, 1, "{what}");
            assert_eq!(an.signals().unmatched_responses, 0, "{what}");
        }
    }
}

#[test]
fn an_oversized_response_head_still_answers_its_request() {
    let mut c = Conn::open();
    c.client(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    head.extend(big_request_head("/", 300).split_at(30).1);
    for chunk in head.chunks(1400) {
        c.server(chunk);
    }
    c.client(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    c.server(b"HTTP/1.1 204 No Content\r\n\r\n");
    let an = c.done();
    assert_eq!(
        targets(&an),
        vec![t("GET", "/a", Some(200)), t("GET", "/b", Some(204))]
    );
    assert_eq!(an.signals().oversized_heads, 1);
}

#[test]
fn non_http_protocol_stays_unknown() {
    let mut c = Conn::open();
    c.server(b"220 mail.example ESMTP\r\n");
    c.client(b"EHLO client\r\n");
    c.server(b"250 ok\r\n");
    let an = c.done();
    assert_eq!(an.protocol(), AppProtocol::Unknown);
    assert!(an.exchanges().is_empty());
}

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seed_streams() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut enc = loona_hpack::Encoder::new();
    let mut h2c = h2::PREFACE.to_vec();
    h2c.extend(frame(kind::SETTINGS, 0, 0, &[]));
    h2c.extend(frame(
        kind::HEADERS,
        END_HEADERS,
        1,
        &enc.encode(request_fields(b"GET", b"/", b"x")),
    ));
    h2c.extend(frame(kind::HEADERS, PADDED, 3, &[2, 0x82, 0, 0]));
    h2c.extend(frame(kind::CONTINUATION, END_HEADERS, 3, &[0x84]));
    vec![
        (
            b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX: y\r\n\r\n".to_vec(),
        ),
        (
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n".iter().chain(&h2c).copied().collect(),
            b"HTTP/1.1 101 Switching\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec(),
        ),
        (h2c, frame(kind::GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0])),
        (CLIENT_HELLO.to_vec(), b"\x16\x03\x03".to_vec()),
    ]
}

/// Arbitrary bytes, cut at arbitrary places, with arbitrary sequence numbers,
/// flags, truncation and reordering: the analyser must neither panic nor keep
/// more than its bounded buffers.
#[test]
fn arbitrary_input_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds = seed_streams();
    for round in 0..3000 {
        let mut c = if rng.below(2) == 0 {
            Conn::open()
        } else {
            Conn::midstream()
        };
        let (mut client, mut server) = seeds[round % seeds.len()].clone();
        for stream in [&mut client, &mut server] {
            match rng.below(4) {
                0 => {
                    *stream = (0..rng.below(3000)).map(|_| rng.next() as u8).collect();
                }
                1 => {
                    for _ in 0..=rng.below(8) {
                        if !stream.is_empty() {
                            let at = rng.below(stream.len());
                            stream[at] = rng.next() as u8;
                        }
                    }
                }
                2 => stream.truncate(rng.below(stream.len() + 1)),
                _ => {}
            }
        }
        let mut pos = [0usize; 2];
        let streams = [client, server];
        for _ in 0..64 {
            let i = rng.below(2);
            let data = &streams[i];
            if pos[i] >= data.len() {
                continue;
            }
            let n = 1 + rng.below((data.len() - pos[i]).min(700));
            let chunk = &data[pos[i]..pos[i] + n];
            let seq = c.seq[i].wrapping_add(pos[i] as u32);
            match rng.below(10) {
                0 => {
                    // skip ahead: a hole
                    let skip = rng.below(40) as u32;
                    c.raw(i, seq.wrapping_add(skip), TcpFlags::ACK, chunk);
                }
                1 => {
                    let cut = rng.below(chunk.len());
                    c.segment(i, seq, TcpFlags::ACK, &chunk[..cut], chunk.len() as u32);
                }
                2 => {
                    c.raw(i, rng.next() as u32, rng.next() as u8, chunk);
                }
                _ => {
                    c.raw(i, seq, TcpFlags::ACK, chunk);
                }
            }
            if rng.below(5) != 0 {
                pos[i] += n;
            }
        }
        let an = c.done();
        assert!(an.exchanges().len() <= 4096);
    }
}

#[test]
fn memory_stays_bounded_for_endless_out_of_order_data() {
    let mut c = Conn::open();
    let base = c.seq[CLIENT];
    for k in 0..2000u32 {
        c.raw(
            CLIENT,
            base.wrapping_add(1 + k * 1000),
            TcpFlags::ACK,
            &[b'a'; 1000],
        );
    }
    let held: usize = c.an.sides.iter().map(|s| s.tail.buf.len()).sum();
    assert!(held <= MAX_TAIL_BYTES);
    assert!(c.an.sides[CLIENT].reasm.stats().overflows > 0);
}

#[test]
fn large_head_sent_a_byte_per_segment() {
    let mut head = b"GET /slow HTTP/1.1\r\nHost: x\r\n".to_vec();
    for k in 0..2000 {
        head.extend(format!("X-Filler-{k}: {}\r\n", "v".repeat(20)).as_bytes());
    }
    head.extend(b"\r\n");
    let mut c = Conn::open();
    for b in head.chunks(1) {
        c.client(b);
    }
    c.server(OK_5);
    let an = c.done();
    assert_eq!(targets(&an), vec![t("GET", "/slow", Some(200))]);
}

#[test]
fn http09_simple_request_gets_a_bare_body() {
    let mut c = Conn::open();
    c.client(b"GET /\r\n");
    let answered = c.server(b"<html>no status line</html>");
    c.fin(SERVER);
    let an = c.done();
    assert_eq!(targets(&an), vec![t("GET", "/", None)]);
    assert_eq!(an.exchanges()[0].answered, Some(answered));
    assert_eq!(an.signals().malformed_requests, 1);
    assert_eq!(an.signals().framing_errors, 0);
}

#[test]
fn pipelined_upgrade_waits_for_its_own_response() {
    let mut c = Conn::open();
    c.client(b"GET /first HTTP/1.1\r\n\r\nGET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    c.client(b"GET /looks-like-http HTTP/1.1\r\n\r\n");
    c.server(OK_5);
    c.server(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    let an = c.done();
    assert_eq!(
        targets(&an),
        vec![t("GET", "/first", Some(200)), t("GET", "/ws", Some(101))]
    );
}

#[test]
fn h2_pushed_stream_response_is_not_unmatched() {
    let mut enc_c = loona_hpack::Encoder::new();
    let mut enc_s = loona_hpack::Encoder::new();
    let mut c = Conn::open();
    let mut hello = h2::PREFACE.to_vec();
    hello.extend(frame(
        kind::HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &enc_c.encode(request_fields(b"GET", b"/", b"p")),
    ));
    c.client(&hello);
    let mut promise = 2u32.to_be_bytes().to_vec();
    promise.extend(enc_s.encode(request_fields(b"GET", b"/style.css", b"")));
    let mut bytes = frame(5, END_HEADERS, 1, &promise);
    bytes.extend(frame(
        kind::HEADERS,
        END_HEADERS,
        1,
        &enc_s.encode([(&b":status"[..], &b"200"[..])]),
    ));
    bytes.extend(frame(
        kind::HEADERS,
        END_HEADERS,
        2,
        &enc_s.encode([(&b":status"[..], &b"200"[..])]),
    ));
    c.server(&bytes);
    let an = c.done();
    assert_eq!(targets(&an), vec![t("GET", "/", Some(200))]);
    assert_eq!(an.signals().push_promises, 1);
    assert_eq!(an.signals().unmatched_responses, 0);
    assert_eq!(an.signals().hpack_errors, 0);
}

#[test]
fn held_bytes_keep_the_timestamp_of_their_segment() {
    let mut tail = Tail::default();
    tail.push(b"ab", Timestamp(1));
    tail.push(b"cd", Timestamp(2));
    tail.push(b"e", Timestamp(2));
    tail.push(b"fg", Timestamp(3));
    let stamps =
        |tail: &Tail| -> Vec<i64> { (0..tail.buf.len()).map(|p| tail.ts_at(p).0).collect() };
    assert_eq!(stamps(&tail), [1, 1, 2, 2, 2, 3, 3]);
    tail.consume(0);
    assert_eq!(stamps(&tail), [1, 1, 2, 2, 2, 3, 3]);
    tail.consume(2);
    assert_eq!(tail.buf, b"cdefg");
    assert_eq!(stamps(&tail), [2, 2, 2, 3, 3]);
    tail.consume(2);
    assert_eq!(tail.buf, b"efg");
    assert_eq!(stamps(&tail), [2, 3, 3]);
    tail.consume(3);
    assert!(tail.buf.is_empty() && tail.marks.is_empty());
}

#[test]
fn bytes_held_for_the_other_direction_a_byte_per_segment() {
    // Each segment re-runs the waiting side; that must not walk every
    // segment held so far.
    let mut c = Conn::open();
    c.client(b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    for _ in 0..20_000 {
        c.client(b"x");
    }
    let answered = c.server(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    let an = c.done();
    assert_eq!(targets(&an), vec![t("GET", "/ws", Some(101))]);
    assert_eq!(an.exchanges()[0].answered, Some(answered));
    assert_eq!(an.signals().upgrade.as_deref(), Some("websocket"));
    assert_eq!(an.signals().framing_errors, 0);
}
