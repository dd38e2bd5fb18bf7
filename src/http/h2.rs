//! HTTP/2 frames on one reassembled direction of a cleartext connection
//! (RFC 9113 §4 framing, §6 frame types), with that direction's HPACK decoder
//! (RFC 7541) kept in step so later header blocks decode.
//!
//! A reader yields one [`FrameEvent`] per frame that matters for request
//! attribution: header blocks (HEADERS or PUSH_PROMISE joined with their
//! CONTINUATION frames, padding and priority bytes removed), RST_STREAM and
//! GOAWAY. DATA and the other frames are skipped by counting, never held.

use std::borrow::Cow;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_HEADER_LEN: usize = 9;

/// Largest frame whose payload is held to be read (header blocks, GOAWAY);
/// a bigger one is skipped and its header block counted as lost.
pub const MAX_HELD_FRAME: usize = 256 * 1024;

/// Largest header block joined from HEADERS and CONTINUATION frames.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Largest HPACK dynamic table a peer may ask for before decoding fails
/// (RFC 7541 §4.2; the default is 4 KiB, browsers ask for 64 KiB).
const MAX_TABLE_SIZE: usize = 1 << 20;

mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

mod flag {
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// The fields of a decoded header block that attribution needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderFacts {
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<String>,
    pub host: Option<String>,
    pub status: Option<u16>,
    pub tag: Option<String>,
    pub user_agent: Option<String>,
}

/// A header block: decoded, or lost to an HPACK error or an oversized frame.
pub type Block = Result<HeaderFacts, BlockLost>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockLost {
    /// The HPACK decoder rejected the block (typically a reference into a
    /// dynamic table whose history the capture does not hold).
    Hpack,
    /// The block or one of its frames was larger than the reader holds.
    TooLarge,
    /// A CONTINUATION frame came without a block in progress, or another
    /// frame interrupted one (RFC 9113 §6.10).
    Continuation,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// A header block sent on `stream` (HEADERS plus CONTINUATION frames).
    Headers {
        stream: u32,
        block: Block,
    },
    PushPromise {
        stream: u32,
        promised: u32,
        block: Block,
    },
    RstStream {
        stream: u32,
        error_code: u32,
    },
    GoAway {
        last_stream: u32,
        error_code: u32,
    },
    /// A SETTINGS frame (not an ACK) with SETTINGS_MAX_CONCURRENT_STREAMS.
    MaxConcurrentStreams(u32),
}

/// Outcome of one reader step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Consumed bytes, maybe completing a frame that produced an event.
    Consumed(usize, Option<FrameEvent>),
    NeedMore,
    /// The bytes are not HTTP/2 (a wrong preface).
    NotHttp2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Preface,
    FrameHeader,
    Skip(u32),
}

#[derive(Debug)]
struct PendingBlock {
    stream: u32,
    promised: Option<u32>,
    fragment: Vec<u8>,
    lost: Option<BlockLost>,
}

/// Frame reader for one direction.
pub struct FrameReader {
    state: ReadState,
    decoder: super::hpack::Decoder,
    pending: Option<PendingBlock>,
    /// The HPACK decoder has failed once: its table may differ from the
    /// sender's from here on.
    pub hpack_desynchronised: bool,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("state", &self.state)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    /// A reader that first expects the client preface.
    pub fn client() -> FrameReader {
        FrameReader::starting(ReadState::Preface)
    }

    /// A reader positioned on a frame boundary (server side, or a client
    /// whose preface the capture did not hold).
    pub fn at_frame() -> FrameReader {
        FrameReader::starting(ReadState::FrameHeader)
    }

    fn starting(state: ReadState) -> FrameReader {
        FrameReader {
            state,
            decoder: super::hpack::Decoder::new(MAX_TABLE_SIZE),
            pending: None,
            hpack_desynchronised: false,
        }
    }

    /// True while a header block awaits its CONTINUATION frames.
    pub fn block_open(&self) -> bool {
        self.pending.is_some()
    }

    /// True while the reader is skipping a frame payload it can lose bytes
    /// of without losing its place.
    pub fn can_skip(&self, bytes: u64) -> bool {
        matches!(self.state, ReadState::Skip(n) if u64::from(n) >= bytes)
    }

    /// Account for `bytes` the capture lost: only possible inside a skipped
    /// payload (see [`FrameReader::can_skip`]).
    pub fn skip_lost(&mut self, bytes: u64) {
        if let ReadState::Skip(n) = self.state {
            let left = u64::from(n).saturating_sub(bytes) as u32;
            self.state = if left == 0 {
                ReadState::FrameHeader
            } else {
                ReadState::Skip(left)
            };
        }
    }

    /// Read as far as one frame into `buf`.
    pub fn step(&mut self, buf: &[u8]) -> Step {
        match self.state {
            ReadState::Preface => {
                let n = buf.len().min(PREFACE.len());
                if buf[..n] != PREFACE[..n] {
                    return Step::NotHttp2;
                }
                if n < PREFACE.len() {
                    return Step::NeedMore;
                }
                self.state = ReadState::FrameHeader;
                Step::Consumed(PREFACE.len(), None)
            }
            ReadState::Skip(n) => {
                if buf.is_empty() {
                    return Step::NeedMore;
                }
                let take = (n as usize).min(buf.len());
                let left = n - take as u32;
                self.state = if left == 0 {
                    ReadState::FrameHeader
                } else {
                    ReadState::Skip(left)
                };
                Step::Consumed(take, None)
            }
            ReadState::FrameHeader => self.frame(buf),
        }
    }

    fn frame(&mut self, buf: &[u8]) -> Step {
        let Some(header) = FrameHeader::parse(buf) else {
            return Step::NeedMore;
        };
        let len = header.length as usize;
        let held = matches!(
            header.kind,
            kind::HEADERS
                | kind::PUSH_PROMISE
                | kind::CONTINUATION
                | kind::RST_STREAM
                | kind::GOAWAY
                | kind::SETTINGS
        );
        if self.pending.is_some() && header.kind != kind::CONTINUATION {
            // RFC 9113 §6.10: nothing may interleave with a header block.
            self.hpack_desynchronised = true;
            let lost = self.pending.take().map(|p| (p.stream, p.promised));
            if let Some((stream, promised)) = lost {
                return Step::Consumed(
                    0,
                    Some(block_event(stream, promised, Err(BlockLost::Continuation))),
                );
            }
        }
        if !held || len > MAX_HELD_FRAME {
            if held
                && matches!(
                    header.kind,
                    kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION
                )
            {
                self.hpack_desynchronised = true;
                return self.skip_block(header);
            }
            self.state = if len == 0 {
                ReadState::FrameHeader
            } else {
                ReadState::Skip(header.length)
            };
            return Step::Consumed(FRAME_HEADER_LEN, None);
        }
        if buf.len() < FRAME_HEADER_LEN + len {
            return Step::NeedMore;
        }
        let payload = &buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
        let consumed = FRAME_HEADER_LEN + len;
        let event = match header.kind {
            kind::HEADERS => self.headers(header, payload),
            kind::PUSH_PROMISE => self.push_promise(header, payload),
            kind::CONTINUATION => self.continuation(header, payload),
            kind::RST_STREAM => payload.get(..4).map(|code| FrameEvent::RstStream {
                stream: header.stream,
                error_code: be32(code),
            }),
            kind::GOAWAY => payload.get(..8).map(|p| FrameEvent::GoAway {
                last_stream: be32(&p[..4]) & 0x7fff_ffff,
                error_code: be32(&p[4..8]),
            }),
            // RFC 9113 §6.5.2: SETTINGS_MAX_CONCURRENT_STREAMS is 0x3; the
            // last value in a frame wins.
            kind::SETTINGS if header.flags & flag::ACK == 0 => payload
                .chunks_exact(6)
                .rfind(|p| p[..2] == [0, 3])
                .map(|p| be32(&p[2..6]))
                .map(FrameEvent::MaxConcurrentStreams),
            _ => None,
        };
        Step::Consumed(consumed, event)
    }

    /// A header-block frame too large to hold: skip it, report the block lost.
    fn skip_block(&mut self, header: FrameHeader) -> Step {
        self.state = if header.length == 0 {
            ReadState::FrameHeader
        } else {
            ReadState::Skip(header.length)
        };
        let event = match header.kind {
            kind::CONTINUATION => self
                .pending
                .take()
                .map(|p| block_event(p.stream, p.promised, Err(BlockLost::TooLarge))),
            kind::HEADERS => Some(block_event(header.stream, None, Err(BlockLost::TooLarge))),
            _ => None,
        };
        Step::Consumed(FRAME_HEADER_LEN, event)
    }

    fn headers(&mut self, header: FrameHeader, payload: &[u8]) -> Option<FrameEvent> {
        let fragment = unpad(header.flags, payload).and_then(|p| {
            if header.flags & flag::PRIORITY != 0 {
                p.get(5..)
            } else {
                Some(p)
            }
        });
        self.begin_block(header, None, fragment)
    }

    fn push_promise(&mut self, header: FrameHeader, payload: &[u8]) -> Option<FrameEvent> {
        let unpadded = unpad(header.flags, payload);
        let promised = unpadded
            .and_then(|p| p.get(..4))
            .map(|p| be32(p) & 0x7fff_ffff)
            .unwrap_or(0);
        let fragment = unpadded.and_then(|p| p.get(4..));
        self.begin_block(header, Some(promised), fragment)
    }

    fn begin_block(
        &mut self,
        header: FrameHeader,
        promised: Option<u32>,
        fragment: Option<&[u8]>,
    ) -> Option<FrameEvent> {
        let Some(fragment) = fragment else {
            // Padding longer than the payload: a connection error (RFC 9113
            // §6.2); the block is gone.
            self.hpack_desynchronised = true;
            return Some(block_event(header.stream, promised, Err(BlockLost::Hpack)));
        };
        if header.flags & flag::END_HEADERS != 0 {
            let block = self.decode(fragment);
            return Some(block_event(header.stream, promised, block));
        }
        self.pending = Some(PendingBlock {
            stream: header.stream,
            promised,
            fragment: fragment.to_vec(),
            lost: None,
        });
        None
    }

    fn continuation(&mut self, header: FrameHeader, payload: &[u8]) -> Option<FrameEvent> {
        let Some(mut pending) = self.pending.take() else {
            self.hpack_desynchronised = true;
            return None;
        };
        if pending.stream != header.stream {
            self.hpack_desynchronised = true;
            pending.lost = Some(BlockLost::Continuation);
        } else if pending.fragment.len() + payload.len() > MAX_HEADER_BLOCK {
            pending.lost = Some(BlockLost::TooLarge);
            pending.fragment = Vec::new();
        } else if pending.lost.is_none() {
            pending.fragment.extend_from_slice(payload);
        }
        if header.flags & flag::END_HEADERS == 0 {
            self.pending = Some(pending);
            return None;
        }
        let block = match pending.lost {
            Some(lost) => {
                self.hpack_desynchronised = true;
                Err(lost)
            }
            None => self.decode(&pending.fragment),
        };
        Some(block_event(pending.stream, pending.promised, block))
    }

    fn decode(&mut self, fragment: &[u8]) -> Block {
        let mut facts = HeaderFacts::default();
        let result = self.decoder.decode(fragment, |name, value| {
            let text = |v: &Cow<[u8]>| String::from_utf8_lossy(v).into_owned();
            match &*name {
                b":method" => facts.method = Some(text(&value)),
                b":path" => facts.path = Some(text(&value)),
                b":authority" => facts.authority = Some(text(&value)),
                b":status" => {
                    facts.status = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                }
                b"host" => facts.host = Some(text(&value)),
                b"x-conntrace-id" => facts.tag = Some(text(&value)),
                b"user-agent" if facts.user_agent.is_none() => {
                    let cut = &value[..value.len().min(super::h1::MAX_USER_AGENT)];
                    facts.user_agent = Some(String::from_utf8_lossy(cut).into_owned());
                }
                _ => {}
            }
        });
        match result {
            Ok(()) => Ok(facts),
            Err(_) => {
                self.hpack_desynchronised = true;
                Err(BlockLost::Hpack)
            }
        }
    }
}

fn block_event(stream: u32, promised: Option<u32>, block: Block) -> FrameEvent {
    match promised {
        Some(promised) => FrameEvent::PushPromise {
            stream,
            promised,
            block,
        },
        None => FrameEvent::Headers { stream, block },
    }
}

/// The payload without its padding (RFC 9113 §6.1), `None` if the pad length
/// exceeds the payload.
fn unpad(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    if flags & flag::PADDED == 0 {
        return Some(payload);
    }
    let (&pad, rest) = payload.split_first()?;
    rest.len()
        .checked_sub(usize::from(pad))
        .map(|end| &rest[..end])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHeader {
    length: u32,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(buf: &[u8]) -> Option<FrameHeader> {
        let h = buf.get(..FRAME_HEADER_LEN)?;
        Some(FrameHeader {
            length: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream: be32(&h[5..9]) & 0x7fff_ffff,
        })
    }

    /// Plausible for a known frame type (RFC 9113 §6: which types live on
    /// stream 0, fixed payload sizes, the default 16 KiB frame limit).
    fn plausible(&self) -> bool {
        let on_stream = self.stream != 0;
        let sized = |n: u32| self.length == n;
        self.length <= 16_384
            && match self.kind {
                kind::DATA | kind::HEADERS | kind::CONTINUATION | kind::PUSH_PROMISE => on_stream,
                kind::PRIORITY => on_stream && sized(5),
                kind::RST_STREAM => on_stream && sized(4),
                kind::SETTINGS => !on_stream && self.length.is_multiple_of(6),
                kind::PING => !on_stream && sized(8),
                kind::GOAWAY => !on_stream && self.length >= 8,
                kind::WINDOW_UPDATE => sized(4),
                _ => false,
            }
    }
}

/// Frame-shape check for a stream whose start the capture missed: does `buf`
/// begin with two plausible frames back to back (or one that ends exactly at
/// the end of `buf`)? `None` means too few bytes to tell.
pub fn looks_like_frames(buf: &[u8]) -> Option<bool> {
    let mut pos = 0;
    for seen in 0..2 {
        let Some(header) = FrameHeader::parse(&buf[pos..]) else {
            return if seen > 0 && pos == buf.len() {
                Some(true)
            } else {
                None
            };
        };
        if !header.plausible() {
            return Some(false);
        }
        pos += FRAME_HEADER_LEN + header.length as usize;
        if pos > buf.len() {
            return None;
        }
    }
    Some(true)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Frame bytes: header plus payload.
    pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }

    pub(crate) fn hpack(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        loona_hpack::Encoder::new().encode(fields.iter().copied())
    }

    fn events(reader: &mut FrameReader, buf: &[u8]) -> Vec<FrameEvent> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Step::Consumed(n, ev) = reader.step(&buf[pos..]) {
            pos += n;
            out.extend(ev);
        }
        assert_eq!(pos, buf.len());
        out
    }

    #[test]
    fn padded_priority_headers_with_continuation() {
        let block = hpack(&[
            (b":method", b"GET"),
            (b":path", b"/x"),
            (b":authority", b"h"),
        ]);
        let (a, b) = block.split_at(3);
        let mut payload = vec![2u8];
        payload.extend([0, 0, 0, 0, 16]);
        payload.extend(a);
        payload.extend([0, 0]);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(kind::SETTINGS, 0, 0, &[]));
        bytes.extend(frame(
            kind::HEADERS,
            flag::PADDED | flag::PRIORITY,
            1,
            &payload,
        ));
        bytes.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, b));
        bytes.extend(frame(kind::DATA, 1, 1, b"body"));
        bytes.extend(frame(kind::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
        let got = events(&mut FrameReader::client(), &bytes);
        assert_eq!(
            got,
            vec![
                FrameEvent::Headers {
                    stream: 1,
                    block: Ok(HeaderFacts {
                        method: Some("GET".into()),
                        path: Some("/x".into()),
                        authority: Some("h".into()),
                        ..HeaderFacts::default()
                    })
                },
                FrameEvent::RstStream {
                    stream: 1,
                    error_code: 8
                }
            ]
        );
    }

    #[test]
    fn dynamic_table_reference_without_history_is_a_lost_block() {
        // 0xbe: indexed field 62, the first dynamic-table entry.
        let bytes = frame(kind::HEADERS, flag::END_HEADERS, 3, &[0xbe]);
        let mut reader = FrameReader::at_frame();
        let got = events(&mut reader, &bytes);
        assert_eq!(
            got,
            vec![FrameEvent::Headers {
                stream: 3,
                block: Err(BlockLost::Hpack)
            }]
        );
        assert!(reader.hpack_desynchronised);
    }

    #[test]
    fn frame_shape_heuristic() {
        let mut bytes = frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
        bytes.extend(frame(kind::DATA, 0, 5, b"abc"));
        assert_eq!(looks_like_frames(&bytes), Some(true));
        assert_eq!(looks_like_frames(&bytes[..12]), None);
        assert_eq!(looks_like_frames(b"GET / HTTP/1.1\r\n\r\n"), Some(false));
        assert_eq!(
            looks_like_frames(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Some(false)
        );
    }
}
