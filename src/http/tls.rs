//! The TLS ClientHello at the start of a client stream (RFC 8446 §4.1.2): the
//! server name (SNI, RFC 6066 §3) and the offered ALPN protocols (RFC 7301),
//! parsed with `tls-parser`. Nothing after the hello is read.
//!
//! The hello is read from the reassembled stream, so one split over several
//! segments parses; one split over several TLS records is joined here first.

use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_message_handshake, parse_tls_plaintext, SNIType,
    TlsExtension, TlsMessage, TlsMessageHandshake,
};

const RECORD_HEADER_LEN: usize = 5;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;

/// Largest ClientHello read; larger ones are given up on (real ones with
/// post-quantum key shares stay under 2 KiB).
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    pub sni: Option<String>,
    pub alpn: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloParse {
    NeedMore,
    Done(ClientHello),
    /// Not a ClientHello, or one that does not parse.
    Invalid,
}

/// Does the stream begin like a TLS handshake record (type 22, version 3.x)?
pub fn looks_like_tls(buf: &[u8]) -> Option<bool> {
    match buf {
        [] => None,
        [CONTENT_HANDSHAKE] => None,
        [CONTENT_HANDSHAKE, 3, ..] => Some(true),
        _ => Some(false),
    }
}

/// Most TLS records a ClientHello is read across; a hello split further is
/// given up on (RFC 8446 §5.1 allows a record of one byte, so a record count
/// bounds the work, not only the bytes).
pub const MAX_HELLO_RECORDS: usize = 1024;

/// Parse the ClientHello at the start of `buf`. The handshake message may be
/// fragmented over several handshake records, down to one byte each (RFC
/// 8446 §5.1): their fragments are joined, at most [`MAX_HELLO_BYTES`] over
/// at most [`MAX_HELLO_RECORDS`] records, before the message is parsed.
pub fn client_hello(buf: &[u8]) -> HelloParse {
    // First pass: are all the records holding the hello here? (Cheap, so a
    // hello arriving a byte per segment costs no copying until it is whole.)
    let mut records = Vec::new();
    let mut pos = 0;
    let mut joined = 0;
    // The handshake header (type and 24-bit length), from however many
    // records its four bytes span.
    let mut header = Vec::with_capacity(4);
    loop {
        let Some(record) = buf.get(pos..pos + RECORD_HEADER_LEN) else {
            return HelloParse::NeedMore;
        };
        if record[0] != CONTENT_HANDSHAKE || record[1] != 3 {
            return HelloParse::Invalid;
        }
        let len = usize::from(u16::from_be_bytes([record[3], record[4]]));
        let start = pos + RECORD_HEADER_LEN;
        let Some(fragment) = buf.get(start..start + len) else {
            return HelloParse::NeedMore;
        };
        if pos == 0 && hello_len(fragment).is_some_and(|n| n <= fragment.len()) {
            return from_record(&buf[..start + len]);
        }
        let wanted = 4 - header.len();
        header.extend_from_slice(&fragment[..fragment.len().min(wanted)]);
        records.push(start..start + len);
        joined += len;
        pos = start + len;
        match hello_len(&header) {
            Some(n) if n > MAX_HELLO_BYTES => return HelloParse::Invalid,
            Some(n) if n <= joined => {
                let mut handshake = Vec::with_capacity(joined);
                for range in records {
                    handshake.extend_from_slice(&buf[range]);
                }
                return from_handshake(&handshake[..n]);
            }
            _ if pos > MAX_HELLO_BYTES || records.len() >= MAX_HELLO_RECORDS => {
                return HelloParse::Invalid
            }
            _ => {}
        }
    }
}

/// Length of the handshake message (header included) starting `buf`.
fn hello_len(buf: &[u8]) -> Option<usize> {
    let h = buf.get(..4)?;
    Some(4 + u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize)
}

fn from_record(record: &[u8]) -> HelloParse {
    match parse_tls_plaintext(record) {
        Ok((_, plaintext)) => plaintext
            .msg
            .iter()
            .find_map(hello_of)
            .map_or(HelloParse::Invalid, HelloParse::Done),
        Err(_) => HelloParse::Invalid,
    }
}

fn from_handshake(message: &[u8]) -> HelloParse {
    if message.first() != Some(&HANDSHAKE_CLIENT_HELLO) {
        return HelloParse::Invalid;
    }
    match parse_tls_message_handshake(message) {
        Ok((_, msg)) => hello_of(&msg).map_or(HelloParse::Invalid, HelloParse::Done),
        Err(_) => HelloParse::Invalid,
    }
}

fn hello_of(msg: &TlsMessage) -> Option<ClientHello> {
    let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) = msg else {
        return None;
    };
    let mut out = ClientHello::default();
    let extensions = hello
        .ext
        .and_then(|ext| parse_tls_client_hello_extensions(ext).ok())
        .map(|(_, list)| list)
        .unwrap_or_default();
    for extension in extensions {
        match extension {
            TlsExtension::SNI(names) => {
                out.sni = names
                    .iter()
                    .find(|(kind, _)| *kind == SNIType::HostName)
                    .map(|(_, name)| String::from_utf8_lossy(name).into_owned());
            }
            TlsExtension::ALPN(protocols) => {
                out.alpn = protocols
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
            }
            _ => {}
        }
    }
    Some(out)
}
