//! `conntrace probe URL`: a server's keep-alive limits, measured on the wire.
//!
//! Two probes run at once, each on its own connection, while the capture
//! thread of `run` records them:
//! - **idle**: one request, then nothing: the server's FIN or RST on that
//!   connection ends the wait, and the idle timeout is the time from the last
//!   byte of the response to that close, both read off the capture;
//! - **requests**: sequential requests on one connection until the server
//!   closes it (`Connection: close`, FIN or RST), counted in the capture;
//! - **reuse**: one connection per idle gap: a request, the gap, a second
//!   request, judged by the packets (answered on the same connection, a
//!   RST, or nothing at all), which finds a middlebox that forgets idle
//!   connections without a FIN or RST, where the idle probe waits in vain.
//!
//! The probe's client is a few lines of HTTP/1.1 on a plain socket, so that
//! nothing reconnects behind its back: each probe is exactly one connection,
//! known by its local port. Nothing is judged by whether a request "worked".
//!
//! Over https the capture sees the connection (its SYN, its close, by whom)
//! but not the HTTP inside: the end of a response is then when the probe's
//! client read its last byte (the same clock as the capture's timestamps),
//! and the requests are counted by the client; the report says so.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::live::capture::{CaptureConfig, CaptureError, LiveCapture};
use crate::live::session::{resolve_target, CaptureSettings, SessionError};
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::report::{
    CloseKind, ConnectionRecord, H2Probe, H2Setting, IdleProbe, ProbeAdvice, ProbeReport, Report,
    RequestsProbe, ReuseProbe, Role, SilentDrop,
};
use crate::wire::Timestamp;

/// What to probe, and how long to wait.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub url: reqwest::Url,
    pub idle: bool,
    pub requests: bool,
    /// HTTP/2: with prior knowledge on http://, by ALPN on https://.
    pub h2: bool,
    /// https://: accept any server certificate.
    pub insecure: bool,
    /// Reuse after these idle gaps, one connection each (empty: not run).
    pub gaps: Vec<Duration>,
    /// Wait at most this long for the server to close an idle connection.
    pub max_idle: Duration,
    /// Send at most this many requests on the requests probe's connection.
    pub max_requests: u64,
    pub capture: CaptureSettings,
    /// A progress line on stderr while the idle probe waits (only drawn
    /// when stderr is a terminal).
    pub progress: bool,
    /// Ctrl-C ends the waits and still reports what was measured.
    pub handle_ctrl_c: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("{0}: only http:// and https:// URLs can be probed")]
    Scheme(String),
    #[error("probe of {target}: TLS: {detail}")]
    Tls { target: SocketAddr, detail: String },
    #[error("probe of {target}: {what}: {error}")]
    Io {
        target: SocketAddr,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("probe of {target}: {0}", target = .1)]
    Http(String, SocketAddr),
}

/// What the probe's own client saw of one connection (the capture decides).
#[derive(Debug)]
struct Client {
    port: u16,
    sent: u32,
    answered: u32,
    keep_alive: (Option<u64>, Option<u64>),
    close_at: Option<u32>,
    /// Ctrl-C ended the wait after this long.
    interrupted: Option<Duration>,
    /// Why the server's answer could not be read as HTTP/1.1.
    failure: Option<String>,
    /// When the client read the last byte of its last response (wall clock,
    /// as the capture's timestamps); what https is measured from.
    done_at: Option<Timestamp>,
}

/// Now, on the capture's clock (the system's).
fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// How the probes reach the server: TLS settings for https.
#[derive(Clone)]
struct Dial {
    target: SocketAddr,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

/// A probe's connection: a socket, or TLS over one.
enum Wire {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Wire {
    fn tcp(&self) -> &TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(t) => &t.sock,
        }
    }

    /// After TLS's close_notify, waits (a little) for the TCP close that
    /// follows it, so that the capture shows the server closing first.
    fn await_tcp_close(&self) {
        if let Wire::Tls(t) = self {
            let mut sock = &t.sock;
            let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 512];
            while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Wire::Plain(s) => s.write(buf),
            Wire::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Wire::Plain(s) => s.flush(),
            Wire::Tls(t) => t.flush(),
        }
    }
}

impl Dial {
    fn new(url: &reqwest::Url, target: SocketAddr, insecure: bool) -> Result<Dial, ProbeError> {
        if url.scheme() != "https" {
            return Ok(Dial { target, tls: None });
        }
        let tls_error = |detail: String| ProbeError::Tls { target, detail };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = crate::live::driver::client_tls(insecure).map_err(tls_error)?;
        let host = url
            .host_str()
            .unwrap_or("")
            .trim_matches(|c| c == '[' || c == ']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| tls_error(format!("{host}: {e}")))?;
        Ok(Dial {
            target,
            tls: Some((Arc::new(config), name)),
        })
    }

    fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects (and shakes hands, offering `alpn`), returning the
    /// connection, its local port and the protocol the server chose.
    fn connect(&self, alpn: &[&[u8]]) -> Result<(Wire, u16, Option<Vec<u8>>), ProbeError> {
        let (stream, port) = connect(self.target)?;
        let Some((config, name)) = &self.tls else {
            return Ok((Wire::Plain(stream), port, None));
        };
        let target = self.target;
        let mut config = (**config).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let conn = rustls::ClientConnection::new(Arc::new(config), name.clone()).map_err(|e| {
            ProbeError::Tls {
                target,
                detail: e.to_string(),
            }
        })?;
        let mut tls = rustls::StreamOwned::new(conn, stream);
        tls.sock
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|error| ProbeError::Io {
                target,
                what: "connect",
                error,
            })?;
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| ProbeError::Tls {
                    target,
                    detail: e.to_string(),
                })?;
        }
        let _ = tls.sock.set_read_timeout(None);
        let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
        Ok((Wire::Tls(Box::new(tls)), port, alpn))
    }
}

impl ProbeError {
    /// The error without the target it names, for a sentence that does.
    fn detail(&self) -> String {
        match self {
            ProbeError::Http(m, _) => m.clone(),
            ProbeError::Io { what, error, .. } => format!("{what}: {error}"),
            e => e.to_string(),
        }
    }
}

impl Client {
    fn failed(port: u16, why: &str) -> Client {
        Client {
            port,
            sent: 1,
            answered: 0,
            keep_alive: (None, None),
            close_at: None,
            interrupted: None,
            failure: Some(why.to_string()),
            done_at: None,
        }
    }
}

/// Runs the probes and returns the capture's report with its `probe` section.
pub fn probe(config: &ProbeConfig) -> Result<Report, ProbeError> {
    if !matches!(config.url.scheme(), "http" | "https") {
        return Err(ProbeError::Scheme(config.url.to_string()));
    }
    let target = resolve_target(&config.url)?;
    let dial = Dial::new(&config.url, target, config.insecure)?;
    let dial = &dial;
    let mut cc = CaptureConfig::for_target(target, config.capture.interface.clone())?;
    cc.savefile = config.capture.savefile.clone();
    cc.buffer_size = config.capture.buffer_size;
    let capture = LiveCapture::start(&cc, Pipeline::new(&PipelineOptions::default()))?;
    let request = request_bytes(&config.url);
    let stop = Arc::new(AtomicBool::new(false));
    if config.handle_ctrl_c {
        watch_ctrl_c(stop.clone());
    }
    let stop = &*stop;

    let (idle, requests, h2, reuse) = std::thread::scope(|s| {
        let idle = config.idle.then(|| {
            let request = request.clone();
            s.spawn(move || idle_probe(dial, &request, config.max_idle, stop))
        });
        let requests = config.requests.then(|| {
            let request = request.clone();
            s.spawn(move || requests_probe(dial, &request, config.max_requests, stop))
        });
        let h2 = config
            .h2
            .then(|| s.spawn(move || h2_probe(dial, &config.url, config.max_idle, stop)));
        let reuse: Vec<_> = config
            .gaps
            .iter()
            .map(|&gap| {
                let request = request.clone();
                s.spawn(move || gap_probe(dial, &request, gap, stop))
            })
            .collect();
        if let Some(h) = &idle {
            show_wait(h, config.progress, config.max_idle);
        }
        let reuse: Result<Vec<GapClient>, ProbeError> =
            reuse.into_iter().map(|h| joined(h, target)).collect();
        (
            idle.map(|h| joined(h, target)),
            requests.map(|h| joined(h, target)),
            h2.map(|h| joined(h, target)),
            reuse,
        )
    });
    let (idle, requests, h2, reuse) = match (
        idle.transpose(),
        requests.transpose(),
        h2.transpose(),
        reuse,
    ) {
        (Ok(i), Ok(r), Ok(h), Ok(g)) => (i, r, h, g),
        (Err(e), _, _, _) | (_, Err(e), _, _) | (_, _, Err(e), _) | (_, _, _, Err(e)) => {
            let _ = capture.stop();
            return Err(e);
        }
    };
    let (mut pipeline, stats) = capture.finish(config.capture.linger)?;
    crate::live::capture::describe_source(&mut pipeline, &cc, &stats);
    let mut report = pipeline
        .finish()
        .expect("a pipeline that keeps its rows writes nowhere");
    report.probe = Some(measure(config, target, &report, idle, requests, h2, reuse));
    // The probe opens its connections on purpose, one per probe: a verdict
    // on its reuse would speak of the probe, not of the server.
    report.diagnosis.clear();
    Ok(report)
}

/// A probe thread's result; a panic in it is an error of that probe.
fn joined<T>(
    h: std::thread::ScopedJoinHandle<'_, Result<T, ProbeError>>,
    target: SocketAddr,
) -> Result<T, ProbeError> {
    h.join()
        .unwrap_or_else(|_| Err(ProbeError::Http("a probe thread panicked".into(), target)))
}

/// The probes' numbers, from the capture's view of their connections.
fn measure(
    config: &ProbeConfig,
    target: SocketAddr,
    report: &Report,
    idle: Option<Client>,
    requests: Option<Client>,
    h2: Option<H2Client>,
    reuse: Vec<GapClient>,
) -> ProbeReport {
    let conn_of = |port: u16| {
        report
            .connections
            .iter()
            .filter(|c| c.client.port() == port && c.server == target)
            .max_by_key(|c| c.stream)
    };
    let max_idle_ms = ms(config.max_idle);
    let tls = config.url.scheme() == "https";
    let idle =
        idle.map(|client| idle_result(report, conn_of(client.port), &client, max_idle_ms, tls));
    let requests = requests.map(|client| {
        requests_result(
            report,
            conn_of(client.port),
            &client,
            config.max_requests,
            tls,
        )
    });
    let h2 = h2.map(|client| h2_result(report, conn_of(client.port), &client, max_idle_ms, tls));
    // HTTP/1.1's idle probe, else HTTP/2's (a server that speaks only h2c).
    let idle_timeout_ms = idle
        .as_ref()
        .and_then(|(_, t)| *t)
        .or_else(|| h2.as_ref().and_then(|h| h.idle_timeout_ms));
    let requests_per_connection = requests.as_ref().and_then(|(_, n)| *n);
    let reuse: Vec<ReuseProbe> = reuse
        .iter()
        .map(|g| gap_result(report, conn_of(g.port), g, tls))
        .collect();
    let silent_drop = silent_drop(&reuse);
    let advised = idle_timeout_ms.or(silent_drop.map(|d| d.alive_ms).filter(|&t| t > 0.0));
    ProbeReport {
        url: config.url.to_string(),
        target,
        idle_timeout_ms,
        requests_per_connection,
        idle: idle.map(|(p, _)| p),
        requests: requests.map(|(p, _)| p),
        h2,
        reuse,
        silent_drop,
        advice: advised.map(advice).unwrap_or_default(),
    }
}

/// What the reuse probe's client saw of one connection.
#[derive(Debug)]
struct GapClient {
    port: u16,
    gap: Duration,
    /// The first request was answered.
    first: bool,
    /// The server closed (or reset) the connection during the gap.
    closed_in_gap: bool,
    /// The second request was answered.
    second: bool,
    /// The second request was sent and nothing came back in time.
    no_answer: bool,
    interrupted: bool,
}

/// How long the second request of a reuse probe may take to be answered
/// before the connection is judged dead (TCP retransmits meanwhile).
const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// One request, `gap` of silence, then a second request on the same
/// connection.
fn gap_probe(
    dial: &Dial,
    request: &[u8],
    gap: Duration,
    stop: &AtomicBool,
) -> Result<GapClient, ProbeError> {
    let (wire, port, _) = dial.connect(&[b"http/1.1"])?;
    let target = dial.target;
    let mut client = GapClient {
        port,
        gap,
        first: false,
        closed_in_gap: false,
        second: false,
        no_answer: false,
        interrupted: false,
    };
    let mut reader = BufReader::new(wire);
    if reader.get_mut().write_all(request).is_err() {
        return Ok(client);
    }
    match read_response(&mut reader, target) {
        Ok(Some(r)) if !r.close && !r.to_close => client.first = true,
        _ => return Ok(client),
    }
    match wait_idle(&mut reader, gap, stop, discard) {
        Ok(Waited::Full) => {}
        Ok(Waited::Stopped(_)) => {
            client.interrupted = true;
            return Ok(client);
        }
        Ok(Waited::Closed) | Err(_) => {
            client.closed_in_gap = true;
            return Ok(client);
        }
    }
    if reader.get_mut().write_all(request).is_err() {
        return Ok(client);
    }
    // The answer's first byte, or nothing at all within ANSWER_WAIT.
    let _ = reader.get_ref().tcp().set_read_timeout(Some(ANSWER_WAIT));
    match reader.fill_buf() {
        Err(e) if is_timeout(&e) => {
            client.no_answer = true;
            return Ok(client);
        }
        Ok([]) | Err(_) => return Ok(client),
        Ok(_) => {}
    }
    client.second = matches!(read_response(&mut reader, target), Ok(Some(_)));
    Ok(client)
}

/// One gap's verdict, from the packets where they tell: the second
/// request's answer on the same stream, the server's RST or FIN.
fn gap_result(
    report: &Report,
    conn: Option<&ConnectionRecord>,
    client: &GapClient,
    tls: bool,
) -> ReuseProbe {
    let gap_ms = ms(client.gap);
    let human_gap = crate::render::human_ms(gap_ms);
    let mut probe = ReuseProbe {
        gap_ms,
        stream: conn.map(|c| c.stream),
        client_port: client.port,
        alive: false,
        outcome: "failed",
        detail: String::new(),
    };
    let Some(conn) = conn else {
        probe.detail = format!("the capture has no connection from port {}", client.port);
        return probe;
    };
    let answered = if tls {
        usize::from(client.first) + usize::from(client.second)
    } else {
        report
            .requests
            .iter()
            .filter(|r| r.stream == conn.stream && r.status.is_some())
            .count()
    };
    let reset = conn.rst_server > 0;
    let (outcome, detail) = if !client.first || client.interrupted {
        (
            "failed",
            if client.interrupted {
                "interrupted during the gap".to_string()
            } else {
                "the first request was not answered with keep-alive".to_string()
            },
        )
    } else if answered >= 2 {
        probe.alive = true;
        (
            "answered",
            format!("a request after {human_gap} idle was answered on the same connection"),
        )
    } else if reset {
        (
            "reset",
            format!("the server reset the connection (after {human_gap} idle or at the request)"),
        )
    } else if client.closed_in_gap || conn.closed_by == Some(Role::Server) {
        (
            "closed",
            format!("the server closed the connection within {human_gap} idle"),
        )
    } else if client.no_answer {
        (
            "no answer",
            format!(
                "a request after {human_gap} idle got nothing back in {} (no FIN, no RST): dropped silently",
                crate::render::human_ms(ms(ANSWER_WAIT))
            ),
        )
    } else {
        ("failed", "the second request failed".to_string())
    };
    probe.outcome = outcome;
    probe.detail = format!("stream {}: {detail}", conn.stream);
    probe
}

/// Where reuse stopped being answered without the server saying so: the
/// longest gap answered below the shortest gap with no answer.
fn silent_drop(reuse: &[ReuseProbe]) -> Option<SilentDrop> {
    let dead = reuse
        .iter()
        .filter(|r| r.outcome == "no answer")
        .map(|r| r.gap_ms)
        .fold(f64::INFINITY, f64::min);
    if !dead.is_finite() {
        return None;
    }
    let alive = reuse
        .iter()
        .filter(|r| r.alive && r.gap_ms < dead)
        .map(|r| r.gap_ms)
        .fold(0.0, f64::max);
    Some(SilentDrop {
        alive_ms: alive,
        dead_ms: dead,
    })
}

/// The end of the last response on `conn`: from the capture (its last
/// byte, or an HTTP/2 response's HEADERS), or over TLS, which the capture
/// cannot read, when the probe's client read it (`client_done`).
fn response_end(
    report: &Report,
    conn: &ConnectionRecord,
    client_done: Option<Timestamp>,
    tls: bool,
) -> Option<Timestamp> {
    if tls {
        return client_done;
    }
    report
        .requests
        .iter()
        .filter(|r| r.stream == conn.stream)
        .filter_map(|r| r.completed.or(r.answered))
        .max()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn idle_result(
    report: &Report,
    conn: Option<&ConnectionRecord>,
    client: &Client,
    max_idle_ms: f64,
    tls: bool,
) -> (IdleProbe, Option<f64>) {
    let mut probe = IdleProbe {
        stream: conn.map(|c| c.stream),
        client_port: client.port,
        closed_by: conn.and_then(|c| c.closed_by),
        closed_with: conn.and_then(|c| c.closed_with),
        max_idle_ms,
        announced_timeout_s: client.keep_alive.0,
        detail: String::new(),
    };
    let Some(conn) = conn else {
        probe.detail = format!("the capture has no connection from port {}", client.port);
        return (probe, None);
    };
    if let Some(why) = &client.failure {
        probe.detail = format!("stream {}: no HTTP/1.1 answer to read: {why}", conn.stream);
        return (probe, None);
    }
    let done = response_end(report, conn, client.done_at, tls);
    let read_by = if tls {
        ", as the probe's client read it (TLS)"
    } else {
        ""
    };
    let timeout = match (conn.closed_by, conn.closed_at, done) {
        (Some(Role::Server), Some(at), Some(done)) => {
            let t = (at.0 - done.0) as f64 / 1000.0;
            let how = conn.closed_with.map_or("close", CloseKind::flag);
            probe.detail = format!(
                "stream {}: the server's {how} came {t:.1} ms after the last byte of its response{read_by}",
                conn.stream
            );
            Some(t)
        }
        (_, _, None) => {
            probe.detail = format!("stream {}: no complete response was captured", conn.stream);
            None
        }
        (Some(Role::Client), _, _) if client.interrupted.is_some() => {
            let waited = client.interrupted.unwrap_or_default();
            probe.detail = format!(
                "stream {}: interrupted after {}: the server had not closed the idle connection by then (its idle timeout is longer, if it has one)",
                conn.stream,
                humantime::format_duration(Duration::from_millis(waited.as_millis() as u64))
            );
            None
        }
        (Some(Role::Client), _, _) => {
            let waited = Duration::from_micros((max_idle_ms * 1000.0) as u64);
            probe.detail = format!(
                "stream {}: no idle timeout up to --max-idle ({}): the server kept the idle connection open, and the probe closed it",
                conn.stream,
                humantime::format_duration(waited)
            );
            None
        }
        _ => {
            probe.detail = format!("stream {}: no close was captured", conn.stream);
            None
        }
    };
    (probe, timeout)
}

fn requests_result(
    report: &Report,
    conn: Option<&ConnectionRecord>,
    client: &Client,
    max_requests: u64,
    tls: bool,
) -> (RequestsProbe, Option<u32>) {
    let on_conn: Vec<_> = conn
        .map(|c| {
            report
                .requests
                .iter()
                .filter(|r| r.stream == c.stream)
                .collect()
        })
        .unwrap_or_default();
    // Over TLS the capture cannot count the requests: the client does.
    let (sent, answered) = if tls {
        (client.sent, client.answered)
    } else {
        (
            on_conn.len() as u32,
            on_conn.iter().filter(|r| r.status.is_some()).count() as u32,
        )
    };
    let mut probe = RequestsProbe {
        stream: conn.map(|c| c.stream),
        client_port: client.port,
        sent,
        answered,
        closed_by: conn.and_then(|c| c.closed_by),
        closed_with: conn.and_then(|c| c.closed_with),
        announced_close_at: if tls {
            client.close_at
        } else {
            conn.and_then(|c| c.http.as_ref())
                .and_then(|h| h.server_close_depth)
        },
        announced_max: client.keep_alive.1,
        max_requests,
        detail: String::new(),
    };
    let Some(conn) = conn else {
        probe.detail = format!("the capture has no connection from port {}", client.port);
        return (probe, None);
    };
    if let (Some(why), 0) = (&client.failure, answered) {
        probe.detail = format!("stream {}: no HTTP/1.1 answer to read: {why}", conn.stream);
        return (probe, None);
    }
    let by_server = conn.closed_by == Some(Role::Server) || probe.announced_close_at.is_some();
    if !by_server {
        probe.detail = format!(
            "stream {}: the server answered {answered} requests and kept the connection open (--max-requests {max_requests})",
            conn.stream
        );
        return (probe, None);
    }
    let how = match (probe.announced_close_at, conn.closed_with) {
        (Some(d), _) => format!("Connection: close on response {d}"),
        (None, Some(k)) => format!("a {} with nothing announced", k.flag()),
        (None, None) => "a close".to_string(),
    };
    probe.detail = format!(
        "stream {}: the server answered {answered} of {} requests, then ended the connection ({how}){}",
        conn.stream,
        probe.sent,
        if tls {
            ", counted by the probe's client (TLS)"
        } else {
            ""
        }
    );
    (probe, Some(answered))
}

/// Idle-connection settings of the common clients against the server's
/// idle timeout `t` (ms): a margin of a fifth below it, so that a client
/// gives up its idle connection before the server closes it under a request.
fn advice(t: f64) -> Vec<ProbeAdvice> {
    let keep = (t * 0.8 / 100.0).floor() * 100.0;
    let keep_s = keep / 1000.0;
    let item = |client: &'static str,
                setting: &'static str,
                default_ms: Option<f64>,
                how: String| {
        let outlives = default_ms.map(|d| d >= t);
        let default = match (default_ms, outlives) {
            (Some(d), Some(true)) => format!(
                "; its default, {}, is longer than the server's {:.1} s: the stale-connection race waits there",
                crate::render::human_ms(d),
                t / 1000.0
            ),
            (Some(d), _) => format!("; its default, {}, is already shorter", crate::render::human_ms(d)),
            (None, _) => String::new(),
        };
        ProbeAdvice {
            client,
            setting,
            default_ms,
            default_outlives_server: outlives,
            text: format!("{how}{default}"),
        }
    };
    vec![
        item("reqwest", "ClientBuilder::pool_idle_timeout", Some(90_000.0),
             format!(".pool_idle_timeout(Duration::from_millis({keep:.0}))")),
        item("go", "http.Transport.IdleConnTimeout", Some(90_000.0),
             format!("Transport{{IdleConnTimeout: {keep:.0} * time.Millisecond}}")),
        item("node", "undici Agent keepAliveTimeout", Some(4_000.0),
             format!("new Agent({{ keepAliveTimeout: {keep:.0} }}) (setGlobalDispatcher for fetch)")),
        item("python-requests", "urllib3 (no idle timeout)", None,
             format!("requests/urllib3 keep idle connections with no time limit: retry idempotent requests (HTTPAdapter(max_retries=Retry(...))), or drop the Session's connections when it was idle longer than {keep_s:.1} s")),
        item("okhttp", "ConnectionPool keepAliveDuration", Some(300_000.0),
             format!("ConnectionPool(5, {keep:.0}, TimeUnit.MILLISECONDS)")),
        item("java", "jdk.httpclient.keepalive.timeout", Some(1_200_000.0),
             format!("-Djdk.httpclient.keepalive.timeout={} (seconds; java.net.http.HttpClient)", (keep_s.floor() as u64).max(1))),
    ]
}

fn request_bytes(url: &reqwest::Url) -> Vec<u8> {
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => String::new(),
    };
    let mut target = url.path().to_string();
    if let Some(q) = url.query() {
        target.push('?');
        target.push_str(q);
    }
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: conntrace-probe/{}\r\nAccept: */*\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

fn connect(target: SocketAddr) -> Result<(TcpStream, u16), ProbeError> {
    let io = |what| {
        move |error| ProbeError::Io {
            target,
            what,
            error,
        }
    };
    let stream =
        TcpStream::connect_timeout(&target, Duration::from_secs(10)).map_err(io("connect"))?;
    stream.set_nodelay(true).map_err(io("connect"))?;
    let port = stream.local_addr().map_err(io("connect"))?.port();
    Ok((stream, port))
}

/// One response as the probe's client read it.
struct Response {
    close: bool,
    keep_alive: (Option<u64>, Option<u64>),
    /// Its body ran to the server's close.
    to_close: bool,
}

/// Reads one HTTP/1.1 response to a GET; `None` when the connection ended
/// before any of it.
fn read_response(
    r: &mut BufReader<Wire>,
    target: SocketAddr,
) -> Result<Option<Response>, ProbeError> {
    let http = |m: String| ProbeError::Http(m, target);
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        match r.read_until(b'\n', &mut line) {
            Ok(0) if head.is_empty() => return Ok(None),
            Ok(0) => {
                return Err(http(
                    "the server closed in the middle of a response head".into(),
                ))
            }
            Ok(_) => {}
            Err(e) if head.is_empty() && is_closed(&e) => return Ok(None),
            Err(e) => return Err(http(format!("reading a response: {e}"))),
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            if head.len() == line.len() {
                head.clear();
                continue;
            }
            break;
        }
        if head.len() > 64 << 10 {
            return Err(http("a response head over 64 KiB".into()));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&head)
        .map_err(|e| http(format!("an unreadable response head: {e}")))?;
    let status = resp.code.unwrap_or(0);
    let header = |name: &str| {
        resp.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",")
    };
    let close = header("connection").split(',').any(|t| t.trim() == "close");
    let mut keep_alive = (None, None);
    for part in header("keep-alive").split(',') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let v = v.trim().parse::<u64>().ok();
        match k.trim() {
            "timeout" => keep_alive.0 = keep_alive.0.or(v),
            "max" => keep_alive.1 = keep_alive.1.or(v),
            _ => {}
        }
    }
    if (100..200).contains(&status) {
        return read_response(r, target);
    }
    let length = header("content-length")
        .split(',')
        .next()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = header("transfer-encoding").contains("chunked");
    let read_err = |e: std::io::Error| http(format!("reading a response body: {e}"));
    let mut to_close = false;
    if status == 204 || status == 304 {
    } else if chunked {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).map_err(read_err)?;
            let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| http(format!("a bad chunk size line {line:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t).map_err(read_err)? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            std::io::copy(&mut (&mut *r).take(size + 2), &mut std::io::sink()).map_err(read_err)?;
        }
    } else if let Some(n) = length {
        let got = std::io::copy(&mut (&mut *r).take(n), &mut std::io::sink()).map_err(read_err)?;
        if got < n {
            return Err(http(format!(
                "the server closed {got} bytes into a {n}-byte body"
            )));
        }
    } else {
        std::io::copy(r, &mut std::io::sink()).map_err(read_err)?;
        to_close = true;
    }
    Ok(Some(Response {
        close,
        keep_alive,
        to_close,
    }))
}

/// A read timeout ran out (which of the two depends on the platform).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

/// One request, then wait for the server to end the connection.
fn idle_probe(
    dial: &Dial,
    request: &[u8],
    max_idle: Duration,
    stop: &AtomicBool,
) -> Result<Client, ProbeError> {
    let target = dial.target;
    let (wire, port, _) = dial.connect(&[b"http/1.1"])?;
    let io = |what| {
        move |error| ProbeError::Io {
            target,
            what,
            error,
        }
    };
    let mut reader = BufReader::new(wire);
    reader
        .get_mut()
        .write_all(request)
        .map_err(io("sending a request"))?;
    let response = match read_response(&mut reader, target) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(Client::failed(port, "the server closed before answering")),
        Err(e) => return Ok(Client::failed(port, &e.detail())),
    };
    let mut client = Client {
        port,
        sent: 1,
        answered: 1,
        keep_alive: response.keep_alive,
        close_at: response.close.then_some(1),
        interrupted: None,
        failure: None,
        done_at: Some(now()),
    };
    if response.to_close || response.close {
        return Ok(client);
    }
    // The server's close (EOF or a reset) ends the wait; so do --max-idle
    // and Ctrl-C.
    client.interrupted = wait_idle(&mut reader, max_idle, stop, discard)
        .map_err(io("waiting"))?
        .interrupted();
    Ok(client)
}

/// What ended a wait on an idle connection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Waited {
    /// The server ended the connection (EOF, a reset, or what `on_data`
    /// read said so).
    Closed,
    /// The whole wait passed with the connection open.
    Full,
    /// `stop` was set after this long.
    Stopped(Duration),
}

impl Waited {
    /// How long it waited when `stop` ended the wait.
    fn interrupted(self) -> Option<Duration> {
        match self {
            Waited::Stopped(d) => Some(d),
            Waited::Closed | Waited::Full => None,
        }
    }
}

/// Takes whatever the server sends on an idle HTTP/1.1 connection: bytes
/// nobody asked for are not a close.
fn discard(r: &mut BufReader<Wire>) -> std::io::Result<bool> {
    let n = r.buffer().len();
    r.consume(n);
    Ok(false)
}

/// Waits on an idle connection until the server ends it (EOF or a reset),
/// `max_idle` passes or `stop` is set. `on_data` takes what the server sends
/// meanwhile (the buffer holds some) and says whether that ended the
/// connection.
fn wait_idle(
    r: &mut BufReader<Wire>,
    max_idle: Duration,
    stop: &AtomicBool,
    mut on_data: impl FnMut(&mut BufReader<Wire>) -> std::io::Result<bool>,
) -> std::io::Result<Waited> {
    let start = Instant::now();
    let deadline = start + max_idle;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Waited::Full);
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(Waited::Stopped(start.elapsed()));
        }
        r.get_ref()
            .tcp()
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))?;
        match r.fill_buf() {
            Ok([]) => {
                r.get_ref().await_tcp_close();
                return Ok(Waited::Closed);
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => continue,
            Err(e) if is_closed(&e) => return Ok(Waited::Closed),
            Err(e) => return Err(e),
        }
        r.get_ref().tcp().set_read_timeout(None)?;
        if on_data(r)? {
            return Ok(Waited::Closed);
        }
    }
}

/// Sequential requests on one connection until the server ends it.
fn requests_probe(
    dial: &Dial,
    request: &[u8],
    max: u64,
    stop: &AtomicBool,
) -> Result<Client, ProbeError> {
    let target = dial.target;
    let (wire, port, _) = dial.connect(&[b"http/1.1"])?;
    let mut reader = BufReader::new(wire);
    let mut client = Client {
        port,
        sent: 0,
        answered: 0,
        keep_alive: (None, None),
        close_at: None,
        interrupted: None,
        failure: None,
        done_at: None,
    };
    while u64::from(client.sent) < max && !stop.load(Ordering::SeqCst) {
        if reader.get_mut().write_all(request).is_err() {
            break;
        }
        client.sent += 1;
        let read = match read_response(&mut reader, target) {
            Ok(r) => r,
            Err(e) => {
                client.failure = Some(e.detail());
                break;
            }
        };
        match read {
            None => break,
            Some(r) => {
                client.answered += 1;
                if client.answered == 1 {
                    client.keep_alive = r.keep_alive;
                }
                if r.close || r.to_close {
                    client.close_at = Some(client.answered);
                    break;
                }
            }
        }
    }
    // Read the server's FIN (or reset) before closing, so that the capture
    // shows who ended it.
    if client.close_at.is_some() {
        let _ = reader
            .get_ref()
            .tcp()
            .set_read_timeout(Some(Duration::from_secs(5)));
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        reader.get_ref().await_tcp_close();
    }
    Ok(client)
}

/// Sets `stop` at the first Ctrl-C (SIGINT), from a thread of its own.
fn watch_ctrl_c(stop: Arc<AtomicBool>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    std::thread::spawn(move || {
        runtime.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nconntrace probe: interrupted; reporting what was measured");
                stop.store(true, Ordering::SeqCst);
            }
        });
    });
}

/// A line on stderr while the idle probe waits, redrawn each second.
fn show_wait<T>(h: &std::thread::ScopedJoinHandle<'_, T>, progress: bool, max_idle: Duration) {
    use std::io::IsTerminal;
    if !progress || !std::io::stderr().is_terminal() {
        return;
    }
    let start = Instant::now();
    while !h.is_finished() {
        eprint!(
            "\rconntrace probe: waiting for the server to close an idle connection: {:.0} s (at most {:.0} s) ",
            start.elapsed().as_secs_f64(),
            max_idle.as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprint!("\r\x1b[2K");
}

/// What the probe's HTTP/2 client saw (the capture decides the timings).
#[derive(Debug)]
struct H2Client {
    port: u16,
    /// When the response's END_STREAM was read (wall clock).
    done_at: Option<Timestamp>,
    speaks_h2: bool,
    status: Option<u16>,
    settings: Vec<(u16, u32)>,
    ping_rtt: Option<Duration>,
    interrupted: Option<Duration>,
    /// What the server said instead of SETTINGS, when it did not speak h2.
    refusal: Option<String>,
}

const FRAME_DATA: u8 = 0;
const FRAME_HEADERS: u8 = 1;
const FRAME_SETTINGS: u8 = 4;
const FRAME_PING: u8 = 6;
const FRAME_GOAWAY: u8 = 7;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One HTTP/2 frame: type, flags, stream, payload.
type Frame = (u8, u8, u32, Vec<u8>);

/// The next frame; `None` at the end of the connection.
fn read_frame(r: &mut BufReader<Wire>) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 9];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof || is_closed(&e) => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    if len > 1 << 24 {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "frame too long",
        ));
    }
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[3], head[4], stream, payload)))
}

fn setting_name(id: u16) -> String {
    match id {
        1 => "HEADER_TABLE_SIZE".into(),
        2 => "ENABLE_PUSH".into(),
        3 => "MAX_CONCURRENT_STREAMS".into(),
        4 => "INITIAL_WINDOW_SIZE".into(),
        5 => "MAX_FRAME_SIZE".into(),
        6 => "MAX_HEADER_LIST_SIZE".into(),
        8 => "ENABLE_CONNECT_PROTOCOL".into(),
        n => format!("0x{n:x}"),
    }
}

/// HTTP/2 with prior knowledge: SETTINGS, one GET, a PING, then the wait
/// for the server to end the idle connection (GOAWAY, FIN or RST).
fn h2_probe(
    dial: &Dial,
    url: &reqwest::Url,
    max_idle: Duration,
    stop: &AtomicBool,
) -> Result<H2Client, ProbeError> {
    let target = dial.target;
    let (wire, port, alpn) = dial.connect(&[b"h2", b"http/1.1"])?;
    let io = |what| {
        move |error| ProbeError::Io {
            target,
            what,
            error,
        }
    };
    let mut r = BufReader::new(wire);
    let mut client = H2Client {
        port,
        done_at: None,
        speaks_h2: false,
        status: None,
        settings: Vec::new(),
        ping_rtt: None,
        interrupted: None,
        refusal: None,
    };
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_string(),
    };
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    if dial.is_tls() && alpn.as_deref() != Some(&b"h2"[..]) {
        client.refusal = Some(format!(
            "ALPN {}",
            alpn.map_or_else(
                || "none".to_string(),
                |a| String::from_utf8_lossy(&a).into_owned()
            )
        ));
        return Ok(client);
    }
    let agent = format!("conntrace-probe/{}", env!("CARGO_PKG_VERSION"));
    let scheme: &[u8] = if dial.is_tls() { b"https" } else { b"http" };
    let block = loona_hpack::Encoder::new().encode([
        (&b":method"[..], &b"GET"[..]),
        (b":scheme", scheme),
        (b":path", path.as_bytes()),
        (b":authority", authority.as_bytes()),
        (b"user-agent", agent.as_bytes()),
    ]);
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(FRAME_SETTINGS, 0, 0, &[]));
    hello.extend(frame(
        FRAME_HEADERS,
        FLAG_END_STREAM | FLAG_END_HEADERS,
        1,
        &block,
    ));
    r.get_mut()
        .write_all(&hello)
        .map_err(io("sending the preface"))?;
    r.get_ref()
        .tcp()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io("reading"))?;
    // The server's SETTINGS come first, or it does not speak h2.
    let peek = r.fill_buf().map_err(io("reading"))?;
    if peek.len() >= 9 && peek[3] != FRAME_SETTINGS {
        let text = String::from_utf8_lossy(&peek[..peek.len().min(40)]);
        client.refusal = Some(text.lines().next().unwrap_or("").to_string());
        return Ok(client);
    }
    let mut decoder = loona_hpack::Decoder::new();
    let mut ping_sent: Option<Instant> = None;
    let mut done = false;
    while !(done && client.ping_rtt.is_some()) {
        let Some((kind, flags, sid, payload)) = read_frame(&mut r).map_err(io("reading"))? else {
            break;
        };
        match kind {
            FRAME_SETTINGS if flags & FLAG_ACK == 0 => {
                if !client.speaks_h2 {
                    client.speaks_h2 = true;
                    client.settings = payload
                        .chunks_exact(6)
                        .map(|c| {
                            (
                                u16::from_be_bytes([c[0], c[1]]),
                                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                            )
                        })
                        .collect();
                }
                r.get_mut()
                    .write_all(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]))
                    .map_err(io("sending"))?;
            }
            FRAME_HEADERS if sid == 1 => {
                if let Ok(headers) = decoder.decode(&payload) {
                    client.status = headers
                        .iter()
                        .find(|(n, _)| n == b":status")
                        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok());
                }
                done |= flags & FLAG_END_STREAM != 0;
            }
            FRAME_DATA if sid == 1 => done |= flags & FLAG_END_STREAM != 0,
            FRAME_PING if flags & FLAG_ACK != 0 => {
                client.ping_rtt = ping_sent.map(|t| t.elapsed());
            }
            FRAME_PING => {
                r.get_mut()
                    .write_all(&frame(FRAME_PING, FLAG_ACK, 0, &payload))
                    .map_err(io("sending"))?;
            }
            FRAME_GOAWAY => return Ok(client),
            _ => {}
        }
        if done && ping_sent.is_none() {
            ping_sent = Some(Instant::now());
            client.done_at = Some(now());
            r.get_mut()
                .write_all(&frame(FRAME_PING, 0, 0, b"conntrac"))
                .map_err(io("sending a PING"))?;
        }
    }
    // Idle: the server's GOAWAY, FIN or RST ends the wait; so do --max-idle
    // and Ctrl-C. A PING it sends is answered (it is not our traffic); after
    // GOAWAY the server closes: that is waited for too.
    client.interrupted = wait_idle(&mut r, max_idle, stop, |r| match read_frame(r)? {
        None => Ok(true),
        Some((FRAME_PING, flags, _, payload)) if flags & FLAG_ACK == 0 => {
            r.get_mut()
                .write_all(&frame(FRAME_PING, FLAG_ACK, 0, &payload))?;
            Ok(false)
        }
        Some(_) => Ok(false),
    })
    .map_err(io("waiting"))?
    .interrupted();
    Ok(client)
}

fn h2_result(
    report: &Report,
    conn: Option<&ConnectionRecord>,
    client: &H2Client,
    max_idle_ms: f64,
    tls: bool,
) -> H2Probe {
    let http = conn.and_then(|c| c.http.as_ref());
    let mut probe = H2Probe {
        stream: conn.map(|c| c.stream),
        client_port: client.port,
        speaks_h2: client.speaks_h2,
        status: client.status,
        max_concurrent_streams: http.and_then(|h| h.h2_max_concurrent_streams).or_else(|| {
            // SETTINGS_MAX_CONCURRENT_STREAMS as the client read it (TLS).
            client
                .settings
                .iter()
                .find(|(id, _)| *id == 3)
                .map(|&(_, v)| v)
        }),
        settings: client
            .settings
            .iter()
            .map(|&(id, value)| H2Setting {
                name: setting_name(id),
                value,
            })
            .collect(),
        ping_answered: client.ping_rtt.is_some(),
        ping_rtt_ms: client.ping_rtt.map(ms),
        goaway: http.and_then(|h| h.goaway.iter().find(|g| g.sender == "server").cloned()),
        idle_timeout_ms: None,
        closed_by: conn.and_then(|c| c.closed_by),
        closed_with: conn.and_then(|c| c.closed_with),
        detail: String::new(),
    };
    let Some(conn) = conn else {
        probe.detail = format!("the capture has no connection from port {}", client.port);
        return probe;
    };
    if !client.speaks_h2 {
        probe.detail = format!(
            "stream {}: the server does not speak HTTP/2 {} here{}",
            conn.stream,
            if tls {
                "by ALPN"
            } else {
                "with prior knowledge"
            },
            client
                .refusal
                .as_ref()
                .map_or_else(String::new, |r| format!(" (it answered {r:?})"))
        );
        return probe;
    }
    let done = response_end(report, conn, client.done_at, tls);
    let goaway = probe.goaway.as_ref().map_or_else(String::new, |g| {
        format!("GOAWAY (error {}), then ", g.error_code)
    });
    match (conn.closed_by, conn.closed_at, done) {
        (Some(Role::Server), Some(at), Some(done)) => {
            let t = (at.0 - done.0) as f64 / 1000.0;
            probe.idle_timeout_ms = Some(t);
            probe.detail = format!(
                "stream {}: the server sent {goaway}its {} {t:.1} ms after its response",
                conn.stream,
                conn.closed_with.map_or("close", CloseKind::flag)
            );
        }
        (Some(Role::Client), _, _) if client.interrupted.is_some() => {
            probe.detail = format!(
                "stream {}: interrupted before the server closed the idle connection",
                conn.stream
            );
        }
        (Some(Role::Client), _, _) => {
            let waited = Duration::from_micros((max_idle_ms * 1000.0) as u64);
            probe.detail = format!(
                "stream {}: no idle timeout up to --max-idle ({}): the server kept the idle HTTP/2 connection open",
                conn.stream,
                humantime::format_duration(waited)
            );
        }
        _ => probe.detail = format!("stream {}: no close was captured", conn.stream),
    }
    probe
}
