//! The report model: plain, serde-serialisable data that analysis produces and
//! every renderer (terminal table, Markdown, JSON) only formats. Field names and
//! meanings follow the JSON contract documented in `docs/report-schema.md`;
//! fields may be added, never renamed or dropped.

use std::fmt;
use std::net::SocketAddr;

use serde::{Serialize, Serializer};

pub use crate::http::{AppProtocol, HttpSignals};
use crate::wire::Timestamp;

/// Times are written as seconds since the epoch with microsecond precision.
fn secs<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(t.as_secs_f64())
}

fn opt_secs<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&t.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Addresses are written as `ip:port`, IPv6 in brackets (`[::1]:8080`).
fn addr<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(a)
}

/// A fieldless enum that the report spells as a fixed string.
macro_rules! spelled {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

spelled!(
    /// One side of a connection.
    Role {
        Client => "client",
        Server => "server",
    }
);

spelled!(
    /// How a side closed: "fin" or "rst".
    CloseKind {
        Fin => "fin",
        Rst => "rst",
    }
);

impl CloseKind {
    /// The TCP flag's name, as tcpdump prints it: "FIN" or "RST".
    pub fn flag(self) -> &'static str {
        match self {
            CloseKind::Fin => "FIN",
            CloseKind::Rst => "RST",
        }
    }
}

spelled!(
    /// How the client and server roles of a connection were decided.
    Orientation {
        /// The client sent a SYN.
        Syn => "syn",
        /// No SYN seen; the server sent a SYN+ACK.
        SynAck => "syn-ack",
        /// No handshake seen: the well-known (below 1024) or else lower port is
        /// the server; with equal ports, the first packet's destination.
        Port => "port",
        /// No handshake seen and the ports do not tell (both below 1024 or
        /// both above): the first segment began with an HTTP/1 request line
        /// (its sender is the client) or a status line (the server).
        Payload => "payload",
    }
);

spelled!(
    /// Zeek's `conn_state` (base/protocols/conn/main.zeek).
    ConnState {
        S0 => "S0",
        S1 => "S1",
        Sf => "SF",
        Rej => "REJ",
        S2 => "S2",
        S3 => "S3",
        Rsto => "RSTO",
        Rstr => "RSTR",
        Rstos0 => "RSTOS0",
        Rstrh => "RSTRH",
        Sh => "SH",
        Shr => "SHR",
        Oth => "OTH",
    }
);

spelled!(
    /// Where a request was seen.
    SeenIn {
        /// In the captured packets.
        Capture => "capture",
        /// Only in the client's own record (a live run over TLS).
        Client => "client",
    }
);

spelled!(
    /// Why a request opened a new connection (`why_new.reason`).
    NewConnectionCode {
        /// No earlier connection from this client host to this server.
        First => "first",
        /// An earlier one was open and idle: the client chose a new one.
        IdleNotReused => "idle_not_reused",
        /// Every open one had a request in flight.
        AllBusy => "all_busy",
        /// All earlier ones were closed.
        PreviousClosed => "previous_closed",
    }
);

spelled!(
    /// The cause of a new connection (`why_new.code`), judged at its SYN; see
    /// docs/causes.md for each one's evidence, precedence and advice.
    CauseCode {
        /// No earlier connection from this client host to this server.
        First => "first",
        /// Every open connection was busy (HTTP/1.x: an exchange not yet
        /// complete; HTTP/2: at its stream limit).
        Concurrency => "concurrency",
        /// The client closed idle connections right after complete
        /// responses while it needed new ones: its idle pool is capped.
        PoolLimit => "pool_limit",
        /// The client closes every connection after its first response.
        NoPool => "no_pool",
        /// The previous connection held a response the client did not read
        /// to the end (closed with the response incomplete, or reset).
        UnreadBody => "unread_body",
        /// The client closed an idle connection after its own idle timeout.
        ClientIdleTimeout => "client_idle_timeout",
        /// The server closed an idle connection (its keep-alive timeout).
        ServerIdleTimeout => "server_idle_timeout",
        /// The server ends connections after a constant number of requests.
        ServerRequestLimit => "server_request_limit",
        /// The server sent `Connection: close`.
        ServerClose => "server_close",
        /// The client sent `Connection: close`.
        ClientClose => "client_close",
        /// HTTP/1.0 without keep-alive.
        Http10 => "http10",
        /// The previous connection ended with an HTTP/2 GOAWAY.
        Goaway => "goaway",
        /// A request was sent on a connection the server had already closed,
        /// went unanswered, and was sent again on a new connection.
        StaleConnection => "stale_connection",
        /// The previous connection was reset in the middle of an exchange.
        Reset => "reset",
        /// An idle connection was open at the SYN and the client did not use it.
        IdleAvailable => "idle_available",
        /// The capture does not tell.
        Unknown => "unknown",
    }
);

/// Why one request was sent on a new connection (see `diagnose`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewConnectionReason {
    /// The cause, machine-readable. An addition.
    pub code: CauseCode,
    /// The state of the other connections at the SYN: `first`,
    /// `idle_not_reused`, `all_busy` or `previous_closed` (the contract).
    pub reason: NewConnectionCode,
    /// The earlier connection the reason is about (the idle one, or the most
    /// recently closed one), if any.
    pub previous_stream: Option<u64>,
    /// One sentence for people.
    pub detail: String,
    /// For `previous_closed`: why that connection ended, when the bytes or
    /// the timing tell (`Connection: close`, HTTP/1.0, GOAWAY, an idle close).
    pub cause: Option<String>,
    /// The facts that decided `code`, with stream numbers and milliseconds.
    /// An addition.
    pub evidence: Vec<String>,
    /// Set when the capture lost what the cause depends on (kernel drops,
    /// gaps, a close never seen): why the code may be wrong. An addition.
    pub uncertain: Option<String>,
    /// For the idle causes (`server_idle_timeout`, `client_idle_timeout`,
    /// `idle_available`): how long the connection had been idle, in ms.
    /// An addition.
    pub idle_ms: Option<f64>,
}

spelled!(
    /// The client library, as its `User-Agent` names it (`diagnosis.library`).
    Library {
        Go => "go",
        Reqwest => "reqwest",
        PythonRequests => "python-requests",
        Urllib3 => "urllib3",
        PythonUrllib => "python-urllib",
        Aiohttp => "aiohttp",
        Httpx => "httpx",
        Node => "node",
        Curl => "curl",
        Wget => "wget",
        Java => "java",
        Okhttp => "okhttp",
        /// No `User-Agent`, or one the diagnosis does not know.
        Unknown => "unknown",
    }
);

/// What to change for one cause, in the library's vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    pub code: CauseCode,
    pub connections: u64,
    pub text: String,
}

/// One client host and server: the `diagnosis` entries of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientDiagnosis {
    pub client: std::net::IpAddr,
    pub server: SocketAddr,
    /// The first `User-Agent` seen from this client to this server.
    pub user_agent: Option<String>,
    pub library: Library,
    pub requests: u64,
    pub connections: u64,
    pub reused_requests: u64,
    /// Reused requests over requests (0 when there were none).
    pub reuse_ratio: f64,
    /// New connections by `why_new.code`, `first` included.
    pub causes: std::collections::BTreeMap<String, u64>,
    /// Of those, verdicts marked `uncertain` (the capture lost their evidence).
    pub uncertain: u64,
    /// Connections the client opened and never sent a request on.
    pub unused_connections: u64,
    /// The longest idle time after which the server closed a connection
    /// (its keep-alive timeout, as measured), in milliseconds.
    pub server_idle_timeout_ms: Option<f64>,
    /// The same for closes by the client (its own idle timeout).
    pub client_idle_timeout_ms: Option<f64>,
    /// One sentence: what happened.
    pub verdict: String,
    /// One piece of advice per cause that cost connections, most costly first.
    pub advice: Vec<Advice>,
}

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
    /// `run` and `demo`: the client's settings and what it saw of each request.
    /// An addition; absent from `replay` reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientReport>,
    /// What the tracker did beyond following connections to their end:
    /// present only when it finalised some early (inactivity, unanswered
    /// SYNs) or saw packets after a connection was finalised. An addition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker: Option<TrackerStats>,
    /// Per client host and server: the causes of its new connections and
    /// what to change (see `advice`). An addition.
    pub diagnosis: Vec<ClientDiagnosis>,
    /// `probe`: the server's keep-alive limits as measured on the wire (see
    /// docs/report-schema.md). An addition; absent from other reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeReport>,
    /// `run`: the client-side TCP sockets to the target at the end, by
    /// state, from the kernel. An addition; absent elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<SocketsReport>,
    /// `audit`: the command, how it ended and how its packets were told
    /// apart from other processes'. An addition; absent elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditReport>,
}

/// What `conntrace audit` ran and how it chose the packets.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditReport {
    pub command: Vec<String>,
    pub pid: Option<u32>,
    /// The command's exit status; null when a signal ended it.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// The user it ran as (the one behind sudo); null: as conntrace's user.
    pub user: Option<String>,
    /// "cgroup": only the command's packets (cgroup v2, nftables, NFLOG);
    /// "filter": a BPF filter chose them, other processes' may be in.
    pub attribution: &'static str,
    pub may_include_other_processes: bool,
    /// TCP packets of other processes that passed meanwhile, not captured.
    pub excluded_packets: Option<u64>,
    /// Processes of the command's still running at its end (moved out of
    /// its cgroup; their later packets are not seen).
    pub left_running: usize,
    /// A signal (Ctrl-C, SIGTERM, SIGHUP) came while it ran.
    pub interrupted: bool,
}

/// What `conntrace probe` measured, each number read off the capture.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeReport {
    pub url: String,
    pub target: SocketAddr,
    /// The end of the response to the server's close of the idle
    /// connection; null when the server did not close it within the wait.
    pub idle_timeout_ms: Option<f64>,
    /// Requests the server answered on one connection before it closed it;
    /// null when it never closed it within `--max-requests`.
    pub requests_per_connection: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleProbe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestsProbe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2: Option<H2Probe>,
    /// Reuse after idle gaps: one connection per gap, a request, the gap,
    /// a second request, judged by the packets. Empty when not run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reuse: Vec<ReuseProbe>,
    /// Idle connections that died without a FIN or RST (a middlebox that
    /// forgets them): the longest gap still answered and the shortest that
    /// was not. Null when every gap was answered or the server closed.
    pub silent_drop: Option<SilentDrop>,
    /// Client settings that avoid the stale-connection race, from the
    /// measured idle timeout (or the longest gap that was answered before a
    /// silent drop).
    pub advice: Vec<ProbeAdvice>,
}

/// One connection of the reuse-after-gap probe.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReuseProbe {
    pub gap_ms: f64,
    pub stream: Option<u64>,
    pub client_port: u16,
    /// The second request, after the gap, was answered on the same
    /// connection (the probe never reconnects).
    pub alive: bool,
    /// "answered", "no answer" (nothing came back: dropped silently),
    /// "reset" (a RST), "closed" (the server's FIN during the gap), or
    /// "failed" (the first request was not answered).
    pub outcome: &'static str,
    pub detail: String,
}

/// Between which idle gaps connections stopped being answered.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct SilentDrop {
    /// The longest gap after which a request was still answered (0: none).
    pub alive_ms: f64,
    /// The shortest gap after which it was not.
    pub dead_ms: f64,
}

/// The idle-timeout probe: one connection, one request, then a wait.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IdleProbe {
    pub stream: Option<u64>,
    pub client_port: u16,
    /// Who closed the connection (`server`, or `client` at the end of the
    /// wait), and how.
    pub closed_by: Option<Role>,
    pub closed_with: Option<CloseKind>,
    /// How long the probe was ready to wait (`--max-idle`).
    pub max_idle_ms: f64,
    /// `Keep-Alive: timeout=` of the response, if it had one.
    pub announced_timeout_s: Option<u64>,
    pub detail: String,
}

/// The requests-per-connection probe: sequential requests on one
/// connection until the server closes it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestsProbe {
    pub stream: Option<u64>,
    pub client_port: u16,
    /// Requests sent on the connection, and answered, as captured.
    pub sent: u32,
    pub answered: u32,
    pub closed_by: Option<Role>,
    pub closed_with: Option<CloseKind>,
    /// The response that carried `Connection: close`, by its position.
    pub announced_close_at: Option<u32>,
    /// `Keep-Alive: max=` of the first response, if it had one.
    pub announced_max: Option<u64>,
    pub max_requests: u64,
    pub detail: String,
}

/// The HTTP/2 probe (prior knowledge on http://): one request, a PING, then
/// the wait for the server to end the idle connection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct H2Probe {
    pub stream: Option<u64>,
    pub client_port: u16,
    /// The server answered the connection preface with SETTINGS.
    pub speaks_h2: bool,
    pub status: Option<u16>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS, as captured.
    pub max_concurrent_streams: Option<u32>,
    /// Every setting of the server's first SETTINGS frame, as the probe read
    /// them.
    pub settings: Vec<H2Setting>,
    /// The server acknowledged a PING, and in how long (the probe's clock).
    pub ping_answered: bool,
    pub ping_rtt_ms: Option<f64>,
    /// The server's GOAWAY, as captured.
    pub goaway: Option<crate::http::GoAway>,
    /// From the response (its HEADERS) to the server's close of the idle
    /// connection, as captured.
    pub idle_timeout_ms: Option<f64>,
    pub closed_by: Option<Role>,
    pub closed_with: Option<CloseKind>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct H2Setting {
    pub name: String,
    pub value: u32,
}

/// One client library's idle-connection setting against the measured timeout.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeAdvice {
    pub client: &'static str,
    pub setting: &'static str,
    /// Its default, when it has one.
    pub default_ms: Option<f64>,
    /// Whether that default keeps idle connections longer than the server.
    pub default_outlives_server: Option<bool>,
    pub text: String,
}

/// The tracker's own work, counted as it goes (see [`Report::tracker`]).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct TrackerStats {
    /// Packets on a 4-tuple whose connection had already been finalised (a
    /// retransmission after the grace period, traffic after the inactivity
    /// timeout): counted in `source`, not in any connection.
    pub late_packets: u64,
    /// Connections finalised after the inactivity timeout.
    pub expired_idle: u64,
    /// Unanswered SYNs finalised (after their timeout or early).
    pub expired_unanswered: u64,
    /// Of those, finalised early because too many were pending at once.
    pub early_dropped: u64,
    /// Closed connections finalised before the end of their grace period
    /// because too many were in it at once. An addition.
    pub grace_cut: u64,
    /// Most connections held at once.
    pub peak_open: u64,
}

impl TrackerStats {
    /// False when every connection simply ran to its end: the report then
    /// leaves the section out.
    pub fn noteworthy(&self) -> bool {
        self.late_packets + self.expired_idle + self.expired_unanswered + self.grace_cut > 0
    }
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
    #[serde(serialize_with = "addr")]
    pub client: SocketAddr,
    #[serde(serialize_with = "addr")]
    pub server: SocketAddr,
    #[serde(serialize_with = "secs")]
    pub first_seen: Timestamp,
    #[serde(serialize_with = "secs")]
    pub last_seen: Timestamp,
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
    pub closed_by: Option<Role>,
    /// How the first closing side closed: "fin" | "rst" | null. An addition.
    pub closed_with: Option<CloseKind>,
    /// When that first FIN or RST was seen. An addition.
    #[serde(serialize_with = "opt_secs")]
    pub closed_at: Option<Timestamp>,
    pub state: ConnState,
    pub history: String,
    /// How the client/server roles were decided: "syn", "syn-ack" or "port"
    /// (no handshake seen: the well-known or lower port is the server). An addition.
    pub orientation: Orientation,
    pub protocol: AppProtocol,
    pub tls_sni: Option<String>,
    pub alpn: Vec<String>,
    pub requests: Option<u32>,
    /// Keep-alive and connection-level HTTP signals (docs/http-signals.md);
    /// null when the connection's bytes were not analysed. An addition.
    pub http: Option<HttpSignals>,
    /// For a connection the client opened and sent no request on: why it
    /// went unused (see `diagnose`). An addition.
    pub unused: Option<UnusedVerdict>,
}

spelled!(
    /// Why a connection carried no request (`unused.code`).
    UnusedCode {
        /// Opened while a request waited; an existing connection became free
        /// first and took it.
        DialRace => "dial_race",
        /// Opened while nothing to its server was busy (no request could
        /// have waited for it), its handshake answered: opened ahead.
        Preconnect => "preconnect",
        /// The capture does not tell.
        Unknown => "unknown",
    }
);

/// Why a connection went unused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnusedVerdict {
    pub code: UnusedCode,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestRecord {
    pub stream: u64,
    pub depth: u32,
    pub reused: bool,
    /// The common methods are not copied per request (see `http::Method`).
    pub method: crate::http::Method,
    pub target: String,
    pub host: Option<crate::http::Host>,
    pub status: Option<u16>,
    #[serde(serialize_with = "secs")]
    pub sent: Timestamp,
    #[serde(serialize_with = "opt_secs")]
    pub answered: Option<Timestamp>,
    /// When the response's last byte was seen (see `HttpExchange::completed`).
    /// An addition.
    #[serde(serialize_with = "opt_secs")]
    pub completed: Option<Timestamp>,
    pub h2_stream: Option<u32>,
    pub tag: Option<String>,
    pub seen_in: SeenIn,
    /// For a request that opened its connection: why no earlier connection
    /// carried it (see `diagnose`). Null for reused connections. An addition.
    pub why_new: Option<NewConnectionReason>,
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
    /// Requests that opened a new connection, by `why_new.code`. An addition.
    pub new_connection_causes: std::collections::BTreeMap<String, u64>,
    /// Connections the client opened and sent no request on, by
    /// `unused.code`. An addition.
    pub unused_connections: std::collections::BTreeMap<String, u64>,
}

impl Summary {
    /// Totals over the connections and requests of a report.
    pub fn tally(connections: &[ConnectionRecord], requests: &[RequestRecord]) -> Summary {
        let mut s = Summary::default();
        for c in connections {
            s.add_connection(c);
        }
        for r in requests {
            s.add_request(r);
        }
        s
    }

    /// Count one connection in.
    pub fn add_connection(&mut self, c: &ConnectionRecord) {
        if let Some(u) = &c.unused {
            count_in(&mut self.unused_connections, u.code.as_str());
        }
        self.connections += 1;
        self.syn += u64::from(c.syn);
        self.syn_ack += u64::from(c.syn_ack);
        self.fin_client += u64::from(c.fin_client);
        self.fin_server += u64::from(c.fin_server);
        self.rst_client += u64::from(c.rst_client);
        self.rst_server += u64::from(c.rst_server);
        self.fin = self.fin_client + self.fin_server;
        self.rst = self.rst_client + self.rst_server;
        match c.closed_by {
            Some(Role::Client) => self.closed_by_client += 1,
            Some(Role::Server) => self.closed_by_server += 1,
            None => self.not_closed += 1,
        }
    }

    /// Count one request in, with the reason it opened a connection.
    pub fn add_request(&mut self, r: &RequestRecord) {
        self.requests += 1;
        self.reused_requests += u64::from(r.reused);
        if let Some(why) = &r.why_new {
            count_in(&mut self.new_connection_reasons, why.reason.as_str());
            count_in(&mut self.new_connection_causes, why.code.as_str());
        }
    }
}

fn count_in(tally: &mut std::collections::BTreeMap<String, u64>, key: &str) {
    match tally.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            tally.insert(key.to_string(), 1);
        }
    }
}

/// What the request driver of a live run did and saw.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientReport {
    /// How requests were matched to connections: "tag+port" (the
    /// `x-conntrace-id` header found in the packets, checked against the local
    /// port), "port" (local port and time only, e.g. over TLS) or "client-only"
    /// (`--no-capture`: nothing was captured; streams are the client's local
    /// sockets in order of first use).
    pub attribution: &'static str,
    pub settings: ClientSettings,
    pub requests: Vec<ClientRequestRecord>,
    /// Requests that ended with an error.
    pub errors: u64,
    /// Requests whose tag and local port pointed at different connections.
    pub disagreements: u64,
    /// The run was stopped (Ctrl-C) before every request was issued.
    pub interrupted: bool,
}

/// The client settings of a run, as given on the command line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientSettings {
    pub url: String,
    pub method: String,
    pub requests: u64,
    pub concurrency: u64,
    /// Response bodies read to the end (false: dropped unread).
    pub drain: bool,
    /// "auto" | "http1" | "http2".
    pub http: &'static str,
    pub pool_max_idle_per_host: Option<u64>,
    pub pool_idle_timeout_ms: Option<f64>,
    pub interval_ms: Option<f64>,
    pub timeout_ms: Option<f64>,
    pub retries: u32,
    pub insecure: bool,
    pub headers: Vec<String>,
}

/// One request as the client saw it, and the connection it was attributed to.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClientRequestRecord {
    /// The `x-conntrace-id` header's value.
    pub id: u64,
    pub worker: u64,
    pub method: String,
    pub started: f64,
    /// When the response head arrived, or the request failed.
    pub head: f64,
    /// When the body was read to its end or dropped.
    pub finished: f64,
    pub status: Option<u16>,
    pub http_version: Option<String>,
    /// The client's error, if the request failed.
    pub error: Option<String>,
    /// Response body bytes the client read (none when it dropped the body unread).
    pub body_bytes: u64,
    /// The connection's local and remote socket addresses (hyper-util `HttpInfo`).
    pub local: Option<String>,
    pub remote: Option<String>,
    /// The connection (tcp.stream) attributed; null if none could be.
    pub stream: Option<u64>,
    /// The stream whose packets carried this request's tag.
    pub stream_by_tag: Option<u64>,
    /// The stream whose client socket and lifetime match the request's.
    pub stream_by_port: Option<u64>,
    /// Set when the two attributions disagree.
    pub disagreement: Option<String>,
}

/// The sockets to one server, by state.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerSockets {
    pub server: SocketAddr,
    pub by_state: std::collections::BTreeMap<&'static str, u64>,
    /// TIME-WAIT sockets whose local port is in the ephemeral range, out
    /// of the ports that range holds: a client needs a free one for each
    /// new connection to this server.
    pub time_wait_ports: u64,
    pub ephemeral_ports: Option<u64>,
    /// Sockets the server closed that were never closed here (a leak, if
    /// it lasts).
    pub close_wait: u64,
}

/// `conntrace sockets`, and the `sockets` section of a live report: the
/// kernel's TCP sockets by state (netlink sock_diag).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SocketsReport {
    /// `ADDRESS[:PORT]` asked for, if any.
    pub filter: Option<String>,
    pub total: u64,
    pub by_state: std::collections::BTreeMap<&'static str, u64>,
    pub ephemeral_range: Option<(u16, u16)>,
    /// Per server (the remote end), when an address was given: the
    /// sockets connected to it.
    pub servers: Vec<PeerSockets>,
}
