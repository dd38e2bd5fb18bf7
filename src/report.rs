//! The report model: plain, serde-serialisable data that analysis produces and
//! every renderer (terminal table, Markdown, JSON) only formats. Field names and
//! meanings follow the JSON contract documented in `docs/report-schema.md`;
//! fields may be added, never renamed or dropped.

use serde::Serialize;

/// The whole report of one `run`, `audit` or `replay`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub tool: ToolInfo,
    pub source: SourceInfo,
    pub connections: Vec<ConnectionRecord>,
    pub requests: Vec<RequestRecord>,
    pub summary: Summary,
    /// Frames counted but not understood, grouped by reason (an addition to the
    /// contract: `source.anomalies` gives only their total).
    pub anomalies: Vec<AnomalyCount>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolInfo {
    pub name: &'static str,
    pub version: &'static str,
}

impl Default for ToolInfo {
    fn default() -> ToolInfo {
        ToolInfo {
            name: "conntrace",
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct SourceInfo {
    /// "file" or "live".
    pub kind: &'static str,
    pub names: Vec<String>,
    pub filter: Option<String>,
    pub link_types: Vec<String>,
    pub packets: u64,
    pub tcp_packets: u64,
    /// Frames that decoded to something other than TCP (ARP, UDP, ICMP, ...):
    /// counted, not analysed. An addition to the contract.
    pub non_tcp_packets: u64,
    pub anomalies: u64,
    pub dropped: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AnomalyCount {
    pub reason: String,
    pub count: u64,
    /// Index (1-based, as tshark's frame.number) of the first frame with this reason.
    pub first_frame: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnectionRecord {
    pub stream: u64,
    pub client: String,
    pub server: String,
    pub first_seen: f64,
    pub last_seen: f64,
    pub syn: u32,
    pub syn_ack: u32,
    pub fin_client: u32,
    pub fin_server: u32,
    pub rst_client: u32,
    pub rst_server: u32,
    pub packets_client: u64,
    pub packets_server: u64,
    pub bytes_client: u64,
    pub bytes_server: u64,
    pub payload_client: u64,
    pub payload_server: u64,
    pub handshake_rtt_ms: Option<f64>,
    /// "client" | "server" | null.
    pub closed_by: Option<&'static str>,
    /// How the first closing side closed: "fin" | "rst" | null. An addition.
    pub closed_with: Option<&'static str>,
    /// When that first FIN or RST was seen. An addition.
    pub closed_at: Option<f64>,
    pub state: &'static str,
    pub history: String,
    /// How the client/server roles were decided: "syn", "syn-ack" or "port"
    /// (no handshake seen: the well-known or lower port is the server). An addition.
    pub orientation: &'static str,
    pub protocol: &'static str,
    pub tls_sni: Option<String>,
    pub alpn: Vec<String>,
    pub requests: Option<u32>,
    /// Keep-alive and connection-level HTTP signals (docs/http-signals.md);
    /// null when the connection's bytes were not analysed. An addition.
    pub http: Option<crate::http::HttpSignals>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestRecord {
    pub stream: u64,
    pub depth: u32,
    pub reused: bool,
    pub method: String,
    pub target: String,
    pub host: Option<String>,
    pub status: Option<u16>,
    pub sent: f64,
    pub answered: Option<f64>,
    pub h2_stream: Option<u32>,
    pub tag: Option<String>,
    /// "capture" | "client".
    pub seen_in: &'static str,
    /// For a request that opened its connection: why no earlier connection
    /// carried it (see `diagnose`). Null for reused connections. An addition.
    pub why_new: Option<crate::diagnose::NewConnectionReason>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Summary {
    pub connections: u64,
    pub requests: u64,
    pub reused_requests: u64,
    pub syn: u64,
    pub fin: u64,
    pub rst: u64,
    pub closed_by_client: u64,
    pub closed_by_server: u64,
    /// Additions: the per-side split of the counts above.
    pub syn_ack: u64,
    pub fin_client: u64,
    pub fin_server: u64,
    pub rst_client: u64,
    pub rst_server: u64,
    /// Connections that neither side closed within the capture.
    pub not_closed: u64,
    /// Requests that opened a new connection, by `why_new.reason`. An addition.
    pub new_connection_reasons: std::collections::BTreeMap<String, u64>,
}

impl Summary {
    /// Totals over the connections and requests of a report.
    pub fn tally(connections: &[ConnectionRecord], requests: &[RequestRecord]) -> Summary {
        let mut s = Summary {
            connections: connections.len() as u64,
            requests: requests.len() as u64,
            reused_requests: requests.iter().filter(|r| r.reused).count() as u64,
            ..Summary::default()
        };
        for c in connections {
            s.syn += u64::from(c.syn);
            s.syn_ack += u64::from(c.syn_ack);
            s.fin_client += u64::from(c.fin_client);
            s.fin_server += u64::from(c.fin_server);
            s.rst_client += u64::from(c.rst_client);
            s.rst_server += u64::from(c.rst_server);
            match c.closed_by {
                Some("client") => s.closed_by_client += 1,
                Some("server") => s.closed_by_server += 1,
                _ => s.not_closed += 1,
            }
        }
        s.fin = s.fin_client + s.fin_server;
        s.rst = s.rst_client + s.rst_server;
        s
    }
}
