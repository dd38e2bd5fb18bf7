//! Application-layer attribution inside one TCP connection: which HTTP requests
//! it carried, in what order, and the keep-alive signals both sides sent.
//!
//! PLACEHOLDER INTERFACE: this file fixes the API the flow tracker calls. It
//! parses nothing yet; the real implementation replaces it.

use serde::Serialize;

use crate::wire::{Direction, Segment, Timestamp};

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

/// One request seen on a connection, with its response if one was seen.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpExchange {
    /// 1-based position on the connection (HTTP/2: order of the HEADERS).
    pub depth: u32,
    pub method: String,
    pub target: String,
    pub host: Option<String>,
    pub status: Option<u16>,
    /// Timestamp of the segment carrying the request's first byte.
    pub sent: Timestamp,
    /// Timestamp of the segment carrying the response's first byte.
    pub answered: Option<Timestamp>,
    pub h2_stream: Option<u32>,
    /// Value of the `x-conntrace-id` request header.
    pub tag: Option<String>,
}

/// Keep-alive and connection-level signals seen on a connection (reported as
/// the connection's `http` object).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct HttpSignals {}

/// Per-connection analyser fed with every segment of one TCP connection.
#[derive(Debug, Default)]
pub struct ConnectionAnalyzer {
    exchanges: Vec<HttpExchange>,
    signals: HttpSignals,
    alpn: Vec<String>,
}

impl ConnectionAnalyzer {
    pub fn new() -> ConnectionAnalyzer {
        ConnectionAnalyzer::default()
    }

    /// Feed one segment; `payload` is the captured payload bytes (possibly
    /// shorter than `seg.payload_len` when the snaplen cut the frame).
    pub fn on_segment(&mut self, _dir: Direction, _seg: &Segment, _payload: &[u8]) {}

    /// The connection ended or the capture did: settle what is pending.
    pub fn finish(&mut self) {}

    pub fn protocol(&self) -> AppProtocol {
        AppProtocol::Unknown
    }

    pub fn tls_sni(&self) -> Option<&str> {
        None
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
}
