//! HTTP/1.x message framing on one reassembled direction: heads through
//! `httparse`, bodies by the rules of RFC 9112 §6 (Content-Length, chunked
//! with trailers, close-delimited), and resynchronisation at the next line
//! that reads as a request or status line after bytes were lost.
//!
//! Everything here is pure: a head parses into an owned summary of the facts
//! the connection analyser needs, read in one pass over its fields, and a
//! body reader says how many bytes it consumed. Bodies are skipped by
//! counting, never copied.

/// Longest head (start line plus fields) accepted; a longer one is a framing
/// error (servers refuse far smaller: nginx 8 KiB lines, hyper 400 KiB heads).
pub const MAX_HEAD_BYTES: usize = 256 * 1024;

/// Most bytes of an oversized head's start line kept (its target).
pub const MAX_LINE_KEPT: usize = 8 * 1024;

/// The `Host` field among the header lines at the start of `fields`, which
/// may end anywhere (an oversized head cut at the limit).
pub fn host_field(fields: &[u8]) -> Option<String> {
    for line in fields.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"host") {
            return Some(text(line[colon + 1..].trim_ascii()));
        }
    }
    None
}

/// Longest line kept while scanning for a message start after a gap.
const MAX_RESYNC_LINE: usize = 8 * 1024;

/// How a message's body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Runs to the end of the connection (responses only).
    UntilClose,
}

/// What the `Connection` header said (RFC 9110 §7.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: super::Method,
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub host: Option<Host>,
    pub tag: Option<String>,
    /// `User-Agent`, at most [`MAX_USER_AGENT`] bytes of it.
    pub user_agent: Option<String>,
    pub connection: ConnectionOptions,
    pub upgrade: Option<String>,
    pub framing: Framing,
}

/// Most bytes of a `User-Agent` kept: enough to name the client library.
pub const MAX_USER_AGENT: usize = 96;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub minor_version: u8,
    pub connection: ConnectionOptions,
    /// `Upgrade` of a 101: the protocol switched to. On other statuses it
    /// only advertises (Apache with mod_http2 sends `Upgrade: h2,h2c` on
    /// ordinary responses) and is not kept.
    pub upgrade: Option<String>,
    pub keep_alive_timeout: Option<u64>,
    pub keep_alive_max: Option<u64>,
    /// Framing from the header fields alone; the request method and status
    /// code refine it (see [`response_framing`]).
    pub declared: Framing,
    /// The length fields were contradictory or unparsable.
    pub bad_length: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadParse<T> {
    /// A head of the given byte length.
    Complete(T, usize),
    /// Too few bytes yet.
    Partial,
    /// Not a head of this kind.
    Invalid,
}

use super::Host;
use std::borrow::Cow;
use std::mem::MaybeUninit;

const HEADER_SLOTS: usize = 64;
const MANY_HEADER_SLOTS: usize = 2048;

fn config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .ignore_invalid_headers_in_requests(true)
        .ignore_invalid_headers_in_responses(true);
    c
}

/// What a connection already holds of its requests' fields, so that a head
/// repeating it is not copied again.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    /// A `User-Agent` (a connection keeps only the first it sees).
    pub user_agent: bool,
    /// The last request's `Host`: a head with the same one shares it.
    pub host: Option<&'a Host>,
}

pub fn parse_request(buf: &[u8], known: Known<'_>) -> HeadParse<RequestHead> {
    with_header_slots(|slots| parse_request_with(buf, slots, known))
}

/// Run `parse` with header slots on the stack, and again with many more on
/// the heap if the head has more headers than that.
fn with_header_slots<'b, T>(
    parse: impl Fn(&mut [MaybeUninit<httparse::Header<'b>>]) -> Result<HeadParse<T>, httparse::Error>,
) -> HeadParse<T> {
    let mut slots = [const { MaybeUninit::uninit() }; HEADER_SLOTS];
    match parse(&mut slots) {
        Err(httparse::Error::TooManyHeaders) => {
            let mut slots: Vec<_> = (0..MANY_HEADER_SLOTS)
                .map(|_| MaybeUninit::uninit())
                .collect();
            parse(&mut slots).unwrap_or(HeadParse::Invalid)
        }
        other => other.unwrap_or(HeadParse::Invalid),
    }
}

fn parse_request_with<'b>(
    buf: &'b [u8],
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
    known: Known<'_>,
) -> Result<HeadParse<RequestHead>, httparse::Error> {
    let mut req = httparse::Request::new(&mut []);
    let len = match config().parse_request_with_uninit_headers(&mut req, buf, slots)? {
        httparse::Status::Partial => return Ok(HeadParse::Partial),
        httparse::Status::Complete(len) => len,
    };
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Ok(HeadParse::Invalid);
    };
    let fields = Fields::read(req.headers);
    let framing = match fields.chunked {
        Some(true) => Framing::Chunked,
        // RFC 9112 §6.3 item 4: a request with a non-chunked final coding
        // cannot be framed; treat it as bodyless and let resync sort it out.
        Some(false) => Framing::None,
        None => match fields.content_length {
            Ok(Some(n)) if n > 0 => Framing::Length(n),
            Ok(_) => Framing::None,
            Err(()) => return Ok(HeadParse::Invalid),
        },
    };
    Ok(HeadParse::Complete(
        RequestHead {
            method: super::method_of(method),
            target: target.to_owned(),
            minor_version,
            host: fields.host.map(|value| host(value, known.host)),
            tag: fields.tag.map(text),
            user_agent: fields
                .user_agent
                .filter(|_| !known.user_agent)
                .map(user_agent),
            connection: fields.connection,
            upgrade: fields.upgrade.map(text),
            framing,
        },
        len,
    ))
}

pub fn parse_response(buf: &[u8]) -> HeadParse<ResponseHead> {
    with_header_slots(|slots| parse_response_with(buf, slots))
}

fn parse_response_with<'b>(
    buf: &'b [u8],
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<HeadParse<ResponseHead>, httparse::Error> {
    let mut resp = httparse::Response::new(&mut []);
    let len = match config().parse_response_with_uninit_headers(&mut resp, buf, slots)? {
        httparse::Status::Partial => return Ok(HeadParse::Partial),
        httparse::Status::Complete(len) => len,
    };
    let (Some(status), Some(minor_version)) = (resp.code, resp.version) else {
        return Ok(HeadParse::Invalid);
    };
    let fields = Fields::read(resp.headers);
    let mut bad_length = false;
    let declared = match fields.chunked {
        Some(true) => Framing::Chunked,
        Some(false) => Framing::UntilClose,
        None => match fields.content_length {
            Ok(Some(n)) => Framing::Length(n),
            Ok(None) => Framing::UntilClose,
            Err(()) => {
                bad_length = true;
                Framing::UntilClose
            }
        },
    };
    Ok(HeadParse::Complete(
        ResponseHead {
            status,
            minor_version,
            connection: fields.connection,
            upgrade: fields.upgrade.filter(|_| status == 101).map(text),
            keep_alive_timeout: fields.keep_alive_timeout,
            keep_alive_max: fields.keep_alive_max,
            declared,
            bad_length,
        },
        len,
    ))
}

/// Methods a malformed request line may still carry to count as a request:
/// Wireshark's list of HTTP methods (epan/dissectors/packet-http.c), which is
/// what makes tshark count one.
const KNOWN_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "OPTIONS",
    "TRACE",
    "CONNECT",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "REPORT",
    "CHECKOUT",
    "CHECKIN",
    "MERGE",
    "MKACTIVITY",
    "MKWORKSPACE",
    "VERSION-CONTROL",
    "BASELINE-CONTROL",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "M-SEARCH",
    "POLL",
    "BPROPFIND",
    "BPROPPATCH",
    "BDELETE",
    "BCOPY",
    "BMOVE",
    "CCM_POST",
    "CCM_GET",
    "RPC_IN_DATA",
    "RPC_OUT_DATA",
    "ICY",
    "LABEL",
    "UPDATE",
    "UNCHECKOUT",
    "ORDERPATCH",
    "ACL",
    "MKREDIRECTREF",
    "UPDATEREDIRECTREF",
];

/// A request line that `httparse` refuses but a server still received as a
/// request: a known method followed by a space or the end of the line, then
/// anything (`GET /HTTP/1.1`, `GET / HTTP/1.`, the HTTP/0.9 `GET /`).
/// Returns the method, target and whether a version was present.
pub fn lenient_request_line(line: &[u8]) -> Option<(&str, &str, bool)> {
    let line = std::str::from_utf8(line)
        .ok()?
        .trim_end_matches(['\r', '\n']);
    let (method, rest) = line.split_once(' ').unwrap_or((line, ""));
    if !KNOWN_METHODS.contains(&method) {
        return None;
    }
    let rest = rest.trim_matches(' ');
    Some(match rest.rsplit_once(' ') {
        Some((target, version)) if version.starts_with("HTTP/") => (method, target.trim(), true),
        _ => (method, rest, false),
    })
}

/// Parse a head whose request line only [`lenient_request_line`] accepts:
/// the header fields after it are read when they parse, else the line alone
/// is the head (an HTTP/0.9 simple request has none).
pub fn parse_request_lenient(buf: &[u8]) -> HeadParse<(RequestHead, bool)> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return HeadParse::Partial;
    };
    let Some((method, target, versioned)) = lenient_request_line(&buf[..end]) else {
        return HeadParse::Invalid;
    };
    let after = &buf[end + 1..];
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let (fields_len, fields) = match httparse::parse_headers(after, &mut slots) {
        Ok(httparse::Status::Complete((n, fields))) => (n, Fields::read(fields)),
        Ok(httparse::Status::Partial) if after.len() < MAX_HEAD_BYTES && versioned => {
            return HeadParse::Partial
        }
        _ => (0, Fields::default()),
    };
    let framing = match fields.content_length {
        Ok(Some(n)) if n > 0 => Framing::Length(n),
        _ => Framing::None,
    };
    HeadParse::Complete(
        (
            RequestHead {
                method: super::method_of(method),
                target: target.to_owned(),
                minor_version: 1,
                host: fields.host.map(|value| host(value, None)),
                tag: fields.tag.map(text),
                user_agent: fields.user_agent.map(user_agent),
                connection: fields.connection,
                upgrade: None,
                framing,
            },
            versioned,
        ),
        end + 1 + fields_len,
    )
}

/// The body framing of a response to a request with `method` (RFC 9112 §6.3
/// items 1 and 2): HEAD answers, 1xx, 204 and 304 have none whatever their
/// fields say; a 2xx to CONNECT turns the connection into a tunnel.
pub fn response_framing(method: Option<&str>, head: &ResponseHead) -> Framing {
    let status = head.status;
    if method == Some("HEAD") || (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::None;
    }
    if method == Some("CONNECT") && (200..300).contains(&status) {
        return Framing::UntilClose;
    }
    match head.declared {
        Framing::Length(0) => Framing::None,
        other => other,
    }
}

/// The header fields the analyser reads, gathered in one pass over a head.
/// Values are borrowed from the buffer; only what a head keeps is copied.
struct Fields<'b> {
    host: Option<&'b [u8]>,
    tag: Option<&'b [u8]>,
    user_agent: Option<&'b [u8]>,
    upgrade: Option<&'b [u8]>,
    connection: ConnectionOptions,
    /// With Transfer-Encoding: whether its final coding is chunked
    /// (RFC 9112 §6.1).
    chunked: Option<bool>,
    /// RFC 9110 §8.6: repeated identical values are one value; differing or
    /// non-numeric values are an error.
    content_length: Result<Option<u64>, ()>,
    keep_alive_timeout: Option<u64>,
    keep_alive_max: Option<u64>,
}

impl Default for Fields<'_> {
    fn default() -> Self {
        Fields {
            host: None,
            tag: None,
            user_agent: None,
            upgrade: None,
            connection: ConnectionOptions::default(),
            chunked: None,
            content_length: Ok(None),
            keep_alive_timeout: None,
            keep_alive_max: None,
        }
    }
}

impl<'b> Fields<'b> {
    fn read(headers: &[httparse::Header<'b>]) -> Fields<'b> {
        let mut fields = Fields::default();
        for header in headers {
            fields.field(header.name.as_bytes(), header.value);
        }
        fields
    }

    /// Note one field line. A single-valued field keeps its first value; a
    /// list field counts the elements of every line (RFC 9110 §5.3).
    fn field(&mut self, name: &[u8], value: &'b [u8]) {
        // The length and first letter leave at most one candidate name.
        let Some(first) = name.first() else {
            return;
        };
        let is = |wanted: &[u8]| name.eq_ignore_ascii_case(wanted);
        match (name.len(), first.to_ascii_lowercase()) {
            (4, b'h') if is(b"host") => {
                self.host.get_or_insert(value);
            }
            (7, b'u') if is(b"upgrade") => {
                self.upgrade.get_or_insert(value);
            }
            (10, b'c') if is(b"connection") => self.connection_options(value),
            (10, b'u') if is(b"user-agent") => {
                self.user_agent.get_or_insert(value);
            }
            (10, b'k') if is(b"keep-alive") => self.keep_alive_hints(value),
            (14, b'c') if is(b"content-length") => self.content_length(value),
            (14, b'x') if is(b"x-conntrace-id") => {
                self.tag.get_or_insert(value);
            }
            (17, b't') if is(b"transfer-encoding") => {
                // A line without codings leaves the final one as it was.
                let last = tokens(value).next_back();
                let chunked = last.map(|t| t.eq_ignore_ascii_case(b"chunked"));
                self.chunked = chunked.or(self.chunked).or(Some(false));
            }
            _ => {}
        }
    }

    fn content_length(&mut self, value: &[u8]) {
        for token in tokens(value) {
            let Ok(found) = self.content_length else {
                return;
            };
            self.content_length = match decimal(token) {
                Some(n) if found.is_none_or(|f| f == n) => Ok(Some(n)),
                _ => Err(()),
            };
        }
    }

    fn connection_options(&mut self, value: &[u8]) {
        for token in tokens(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.connection.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.connection.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.connection.upgrade = true;
            }
        }
    }

    /// `Keep-Alive: timeout=5, max=100` (RFC 2068 §19.7.1.1, still sent by
    /// Apache and nginx); the first usable value of each counts.
    fn keep_alive_hints(&mut self, value: &[u8]) {
        for token in tokens(value) {
            let Some(eq) = token.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (name, value) = (token[..eq].trim_ascii(), token[eq + 1..].trim_ascii());
            let slot = if name.eq_ignore_ascii_case(b"timeout") {
                &mut self.keep_alive_timeout
            } else if name.eq_ignore_ascii_case(b"max") {
                &mut self.keep_alive_max
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim_matches('"').parse::<u64>().ok());
            }
        }
    }
}

/// The elements of a comma-separated list value, trimmed, empty ones left
/// out (RFC 9110 §5.6.1).
fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A run of ASCII digits as a number; `None` for anything else, an empty
/// run or overflow.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// A `Host` value as text (as [`text`] makes it): the same copy as `known`
/// when it says the same.
fn host(value: &[u8], known: Option<&Host>) -> Host {
    match std::str::from_utf8(value).map(str::trim) {
        Ok(v) => match known {
            Some(h) if **h == *v => h.clone(),
            _ => Host::from(v),
        },
        Err(_) => Host::from(text(value)),
    }
}

/// A `User-Agent` value as text, cut to [`MAX_USER_AGENT`] bytes.
fn user_agent(value: &[u8]) -> String {
    text(&value[..value.len().min(MAX_USER_AGENT)])
}

/// A field value as text: trimmed, with invalid UTF-8 replaced; one
/// allocation either way.
fn text(value: &[u8]) -> String {
    match String::from_utf8_lossy(value) {
        Cow::Borrowed(s) => s.trim().to_owned(),
        Cow::Owned(mut s) => {
            s.truncate(s.trim_end().len());
            s.drain(..s.len() - s.trim_start().len());
            s
        }
    }
}

/// Where a body reader is inside a chunked body (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// Outcome of feeding bytes to a body reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyStep {
    /// Consumed this many bytes; the body goes on.
    More(usize),
    /// Consumed this many bytes and the body ended.
    Done(usize),
    /// Needs more bytes before it can consume anything.
    NeedMore,
    /// The bytes cannot be this body's framing.
    Invalid,
}

/// Feed `buf` to a chunked body reader in state `state`.
pub fn chunked_step(state: &mut ChunkState, buf: &[u8]) -> BodyStep {
    match *state {
        ChunkState::Size => match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((len, 0))) => {
                *state = ChunkState::Trailers;
                BodyStep::More(len)
            }
            Ok(httparse::Status::Complete((len, size))) => {
                *state = ChunkState::Data(size);
                BodyStep::More(len)
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_RESYNC_LINE => BodyStep::NeedMore,
            _ => BodyStep::Invalid,
        },
        ChunkState::Data(remaining) => {
            let take = remaining.min(buf.len() as u64);
            *state = if take == remaining {
                ChunkState::DataEnd
            } else {
                ChunkState::Data(remaining - take)
            };
            BodyStep::More(take as usize)
        }
        ChunkState::DataEnd => match buf {
            [b'\r', b'\n', ..] => {
                *state = ChunkState::Size;
                BodyStep::More(2)
            }
            [b'\n', ..] => {
                *state = ChunkState::Size;
                BodyStep::More(1)
            }
            [b'\r'] | [] => BodyStep::NeedMore,
            _ => BodyStep::Invalid,
        },
        ChunkState::Trailers => {
            let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
            match httparse::parse_headers(buf, &mut slots) {
                Ok(httparse::Status::Complete((len, _))) => BodyStep::Done(len),
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => BodyStep::NeedMore,
                _ => BodyStep::Invalid,
            }
        }
    }
}

/// Outcome of scanning for a message start after lost bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// A start line begins at this offset.
    Found(usize),
    /// No start line yet: this many leading bytes can be dropped, and the
    /// byte after them does (or does not) begin a line.
    Discard(usize, bool),
}

/// Look for the first line in `buf` that reads as a request line (or a status
/// line when `requests` is false). Offset 0 is a candidate only when
/// `line_start` says it begins a line (after a gap nothing says otherwise).
pub fn find_message_start(buf: &[u8], requests: bool, line_start: bool) -> Resync {
    let mut start = 0;
    let mut candidate = line_start;
    loop {
        let rest = &buf[start..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
                let ok = if requests {
                    is_request_line(line)
                } else {
                    is_status_line(line)
                };
                if candidate && ok {
                    return Resync::Found(start);
                }
                candidate = true;
                start += end + 1;
            }
            None if rest.len() > MAX_RESYNC_LINE => return Resync::Discard(buf.len(), false),
            None => return Resync::Discard(start, candidate),
        }
    }
}

/// `METHOD SP target SP HTTP/1.d` with a token method (RFC 9112 §3).
pub fn is_request_line(line: &[u8]) -> bool {
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let method = &line[..sp];
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if method.is_empty() || method.len() > 32 || !method.iter().all(|&b| tchar(b)) {
        return false;
    }
    let rest = line[sp..].trim_ascii_end();
    let Some(target) = rest.len().checked_sub(8).map(|v| &rest[..v]) else {
        return false;
    };
    let version = &rest[target.len()..];
    version.starts_with(b"HTTP/1.")
        && version[7].is_ascii_digit()
        && target.ends_with(b" ")
        && !target.trim_ascii().is_empty()
}

/// `HTTP/1.d SP 3DIGIT ...` (RFC 9112 §4).
pub fn is_status_line(line: &[u8]) -> bool {
    line.len() >= 12
        && line.starts_with(b"HTTP/1.")
        && line[7].is_ascii_digit()
        && line[8] == b' '
        && line[9..12].iter().all(u8::is_ascii_digit)
        && line.get(12).is_none_or(|&b| b == b' ' || b == b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_with_more_headers_than_the_stack_slots_still_parse() {
        let mut raw = b"GET /many HTTP/1.1\r\nHost: a.example\r\n".to_vec();
        for i in 0..HEADER_SLOTS + 10 {
            raw.extend_from_slice(format!("X-Filler-{i}: {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"X-Conntrace-Id: 42\r\n\r\n");
        let HeadParse::Complete(head, len) = parse_request(&raw, Known::default()) else {
            panic!("a head with {} headers did not parse", HEADER_SLOTS + 12);
        };
        assert_eq!(len, raw.len());
        assert_eq!(head.target, "/many");
        assert_eq!(head.tag.as_deref(), Some("42"));

        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..HEADER_SLOTS + 10 {
            raw.extend_from_slice(format!("X-Filler-{i}: {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        assert!(matches!(parse_response(&raw), HeadParse::Complete(_, n) if n == raw.len()));
    }

    #[test]
    fn request_head_facts() {
        let raw = b"POST /up HTTP/1.1\r\nHost: a.example\r\nX-Conntrace-Id: r7\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\nhello";
        let HeadParse::Complete(head, len) = parse_request(raw, Known::default()) else {
            panic!("head did not parse");
        };
        assert_eq!(len, raw.len() - 5);
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "/up");
        assert_eq!(head.host.as_deref(), Some("a.example"));
        assert_eq!(head.tag.as_deref(), Some("r7"));
        assert!(head.connection.keep_alive && head.connection.upgrade);
        assert_eq!(head.upgrade.as_deref(), Some("h2c"));
        assert_eq!(head.framing, Framing::Length(5));
    }

    fn request(raw: &[u8]) -> RequestHead {
        match parse_request(raw, Known::default()) {
            HeadParse::Complete(head, len) if len == raw.len() => head,
            other => panic!("{other:?}"),
        }
    }

    fn response(raw: &[u8]) -> ResponseHead {
        match parse_response(raw) {
            HeadParse::Complete(head, len) if len == raw.len() => head,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn field_names_match_in_any_case() {
        let head = request(
            b"GET / HTTP/1.1\r\nhOST: a.example\r\nx-CONNTRACE-id: t1\r\nCONNECTION: CLOSE\r\n\
              UPGRADE: h2c\r\ncontent-LENGTH: 3\r\n\r\n",
        );
        assert_eq!(head.host.as_deref(), Some("a.example"));
        assert_eq!(head.tag.as_deref(), Some("t1"));
        assert_eq!(head.upgrade.as_deref(), Some("h2c"));
        assert!(head.connection.close);
        assert_eq!(head.framing, Framing::Length(3));
        let head = request(b"POST / HTTP/1.1\r\nTRANSFER-encoding: CHUNKED\r\n\r\n");
        assert_eq!(head.framing, Framing::Chunked);
        let head = response(b"HTTP/1.1 200 OK\r\nKEEP-ALIVE: TIMEOUT=7, Max=3\r\n\r\n");
        assert_eq!(
            (head.keep_alive_timeout, head.keep_alive_max),
            (Some(7), Some(3))
        );
    }

    #[test]
    fn names_that_only_share_a_length_or_a_prefix_are_other_fields() {
        let head = request(
            b"GET / HTTP/1.1\r\nHost-Name: b\r\nHast: b\r\nX-Conntrace-Ie: b\r\n\
              Connectiom: close\r\nKeep-Alivf: x\r\nUpgradf: h2c\r\nUpgrades: h2c\r\n\
              Content-Lengtx: 9\r\nTransfer-Encodinh: chunked\r\nContent-Length-X: 9\r\n\r\n",
        );
        assert_eq!(head.host, None);
        assert_eq!(head.tag, None);
        assert_eq!(head.upgrade, None);
        assert_eq!(head.connection, ConnectionOptions::default());
        assert_eq!(head.framing, Framing::None);
        let head =
            response(b"HTTP/1.1 200 OK\r\nKeep-Alivf: timeout=5\r\nContent-Lengtx: 2\r\n\r\n");
        assert_eq!((head.keep_alive_timeout, head.keep_alive_max), (None, None));
        assert_eq!(head.declared, Framing::UntilClose);
    }

    #[test]
    fn repeated_fields_first_value_or_every_list_element() {
        // A single-valued field keeps its first value, even an empty one.
        let head = request(
            b"GET / HTTP/1.1\r\nHost: first.example\r\nHost: second.example\r\n\
              X-Conntrace-Id:\r\nX-Conntrace-Id: late\r\n\r\n",
        );
        assert_eq!(head.host.as_deref(), Some("first.example"));
        assert_eq!(head.tag.as_deref(), Some(""));
        // RFC 9110 §5.3: a list field may be split over several lines.
        let head = request(
            b"GET / HTTP/1.1\r\nConnection: , Keep-Alive ,,\r\nConnection: upgrade\r\n\
              Upgrade: websocket\r\nUpgrade: h2c\r\n\r\n",
        );
        assert_eq!(
            head.connection,
            ConnectionOptions {
                close: false,
                keep_alive: true,
                upgrade: true
            }
        );
        assert_eq!(head.upgrade.as_deref(), Some("websocket"));
        let head = request(b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(head.framing, Framing::Length(4));
        // The first parseable Keep-Alive parameter wins.
        let head = response(
            b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=soon\r\nKeep-Alive: timeout = \"9\", max=4\r\n\
              Keep-Alive: timeout=1, max=1\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            (head.keep_alive_timeout, head.keep_alive_max),
            (Some(9), Some(4))
        );
    }

    #[test]
    fn final_transfer_coding_decides_and_overrides_content_length() {
        // RFC 9112 §6.1: chunked must be the final coding, wherever the
        // codings are listed.
        let head = request(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(head.framing, Framing::Chunked);
        let head = request(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(head.framing, Framing::None);
        let head = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(head.declared, Framing::UntilClose);
        assert!(!head.bad_length);
        let head = response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(head.declared, Framing::Chunked);
    }

    #[test]
    fn unusable_content_lengths() {
        for cl in ["+5", "5 6", "0x10", "5, 6", "18446744073709551616"] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(
                parse_request(raw.as_bytes(), Known::default()),
                HeadParse::Invalid,
                "{cl}"
            );
            let head =
                response(format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n").as_bytes());
            assert!(head.bad_length, "{cl}");
            assert_eq!(head.declared, Framing::UntilClose, "{cl}");
        }
        let head = request(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(head.framing, Framing::None);
        let head = response(b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert_eq!(head.declared, Framing::Length(u64::MAX));
    }

    #[test]
    fn folded_response_fields_are_read_as_one_value() {
        // RFC 9112 §5.2: obs-fold is accepted in responses (as browsers do);
        // list elements around the fold still count.
        let head = response(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive,\r\n close\r\nKeep-Alive: timeout=5,\r\n\tmax=50\r\n\
              Content-Length:\r\n 7\r\n\r\n",
        );
        assert!(head.connection.keep_alive && head.connection.close);
        assert_eq!(
            (head.keep_alive_timeout, head.keep_alive_max),
            (Some(5), Some(50))
        );
        assert_eq!(head.declared, Framing::Length(7));
        // Requests may not fold (RFC 9112 §5.2): the continuation line is
        // skipped as an invalid field.
        let head = request(b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n");
        assert_eq!(head.host.as_deref(), Some("a"));
    }

    #[test]
    fn field_values_are_trimmed_and_read_lossily() {
        let head =
            request(b"GET / HTTP/1.1\r\nHost: \t a.example \t\r\nX-Conntrace-Id: caf\xe9\r\n\r\n");
        assert_eq!(head.host.as_deref(), Some("a.example"));
        assert_eq!(head.tag.as_deref(), Some("caf\u{fffd}"));
        // U+00A0 is whitespace to `str::trim`, in a value with a bad byte too.
        let head = request(
            b"GET / HTTP/1.1\r\nHost: \xc2\xa0h\xc2\xa0\r\nX-Conntrace-Id: \xe9 \xc2\xa0\r\n\r\n",
        );
        assert_eq!(head.host.as_deref(), Some("h"));
        assert_eq!(head.tag.as_deref(), Some("\u{fffd}"));
    }

    #[test]
    fn only_a_switching_response_keeps_its_upgrade() {
        let head = response(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nUPGRADE: h2c\r\n\r\n",
        );
        assert_eq!(head.upgrade.as_deref(), Some("h2c"));
        assert!(head.connection.upgrade);
        let head = response(b"HTTP/1.1 200 OK\r\nUpgrade: h2,h2c\r\nConnection: Upgrade\r\n\r\n");
        assert_eq!(head.upgrade, None);
        assert!(head.connection.upgrade);
    }

    #[test]
    fn lenient_heads_read_host_tag_connection_and_length_only() {
        let raw = b"GET /HTTP/1.1\r\nHOST: a.example\r\nx-conntrace-id: t\r\nConnection: close\r\n\
                    Upgrade: h2c\r\nTransfer-Encoding: chunked\r\ncontent-length: 2\r\n\r\n";
        let HeadParse::Complete((head, versioned), len) = parse_request_lenient(raw) else {
            panic!("lenient head did not parse");
        };
        assert_eq!((versioned, len), (false, raw.len()));
        assert_eq!(head.host.as_deref(), Some("a.example"));
        assert_eq!(head.tag.as_deref(), Some("t"));
        assert!(head.connection.close);
        assert_eq!(head.upgrade, None);
        assert_eq!(head.framing, Framing::Length(2));
    }

    #[test]
    fn conflicting_content_lengths_are_invalid() {
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(parse_request(raw, Known::default()), HeadParse::Invalid);
        let same = b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n";
        assert!(matches!(
            parse_request(same, Known::default()),
            HeadParse::Complete(
                RequestHead {
                    framing: Framing::Length(5),
                    ..
                },
                _
            )
        ));
    }

    #[test]
    fn keep_alive_hints_parse() {
        let raw = b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: 0\r\n\r\n";
        let HeadParse::Complete(head, _) = parse_response(raw) else {
            panic!("head did not parse");
        };
        assert_eq!(head.keep_alive_timeout, Some(5));
        assert_eq!(head.keep_alive_max, Some(100));
        assert_eq!(response_framing(Some("GET"), &head), Framing::None);
    }

    #[test]
    fn response_framing_follows_rfc9112() {
        let head = |raw: &[u8]| match parse_response(raw) {
            HeadParse::Complete(h, _) => h,
            other => panic!("{other:?}"),
        };
        let cl = head(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(response_framing(Some("GET"), &cl), Framing::Length(10));
        assert_eq!(response_framing(Some("HEAD"), &cl), Framing::None);
        let nc = head(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(response_framing(Some("GET"), &nc), Framing::None);
        let te = head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(response_framing(None, &te), Framing::Chunked);
        let close = head(b"HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(response_framing(Some("GET"), &close), Framing::UntilClose);
    }

    #[test]
    fn chunked_body_with_trailers() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nExpires: never\r\n\r\nNEXT";
        let mut state = ChunkState::Size;
        let mut pos = 0;
        loop {
            match chunked_step(&mut state, &body[pos..]) {
                BodyStep::More(n) => pos += n,
                BodyStep::Done(n) => {
                    pos += n;
                    break;
                }
                other => panic!("{other:?} at {pos}"),
            }
        }
        assert_eq!(&body[pos..], b"NEXT");
    }

    #[test]
    fn malformed_request_lines_tshark_counts() {
        assert_eq!(
            lenient_request_line(b"GET /HTTP/1.1"),
            Some(("GET", "/HTTP/1.1", false))
        );
        assert_eq!(
            lenient_request_line(b"GET / HTTP/1."),
            Some(("GET", "/", true))
        );
        assert_eq!(
            lenient_request_line(b"OPTIONS\r"),
            Some(("OPTIONS", "", false))
        );
        assert_eq!(
            lenient_request_line(b"OPTIONS HTTP/1.1"),
            Some(("OPTIONS", "HTTP/1.1", false))
        );
        assert_eq!(lenient_request_line(b"OPTIONSHTTP/1.1"), None);
        assert_eq!(lenient_request_line(b"GET/ HTTP/1.1"), None);
        assert_eq!(lenient_request_line(b"EHLO client"), None);
        let HeadParse::Complete((head, versioned), len) =
            parse_request_lenient(b"GET /HTTP/1.1\nHost: www.google.com\n\nNEXT")
        else {
            panic!("lenient head did not parse");
        };
        assert_eq!(
            (head.target.as_str(), versioned, len),
            ("/HTTP/1.1", false, 36)
        );
        assert_eq!(head.host.as_deref(), Some("www.google.com"));
    }

    #[test]
    fn start_lines_are_recognised() {
        assert!(is_request_line(b"GET /a b HTTP/1.1"));
        assert!(is_request_line(b"M-SEARCH * HTTP/1.1"));
        assert!(!is_request_line(b"GET /a"));
        assert!(!is_request_line(b"\x16\x03\x01 x HTTP/1.1"));
        assert!(is_status_line(b"HTTP/1.1 200 OK"));
        assert!(is_status_line(b"HTTP/1.0 404"));
        assert!(!is_status_line(b"HTTP/1.1 20 OK"));
        let buf = b"tail of a body\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(find_message_start(buf, true, true), Resync::Found(16));
        assert_eq!(find_message_start(&buf[16..], true, true), Resync::Found(0));
        assert_eq!(
            find_message_start(&buf[16..], true, false),
            Resync::Discard(buf.len() - 16, true)
        );
        assert_eq!(
            find_message_start(b"abc\r\npartial", true, true),
            Resync::Discard(5, true)
        );
    }
}
