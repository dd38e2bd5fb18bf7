//! `conntrace probe URL`: a server's keep-alive limits, measured on the wire.
//!
//! Two probes run at once, each on its own connection, while the capture
//! thread of `run` records them:
//! - **idle**: one request, then nothing: the server's FIN or RST on that
//!   connection ends the wait, and the idle timeout is the time from the last
//!   byte of the response to that close, both read off the capture;
//! - **requests**: sequential requests on one connection until the server
//!   closes it (`Connection: close`, FIN or RST), counted in the capture.
//!
//! The probe's client is a few lines of HTTP/1.1 on a plain socket, so that
//! nothing reconnects behind its back: each probe is exactly one connection,
//! known by its local port. Nothing is judged by whether a request "worked".

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::live::capture::{CaptureConfig, CaptureError, LiveCapture};
use crate::live::session::{resolve_target, CaptureSettings, SessionError};
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::report::{
    CloseKind, ConnectionRecord, IdleProbe, ProbeAdvice, ProbeReport, Report, RequestsProbe, Role,
};

/// What to probe, and how long to wait.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub url: reqwest::Url,
    pub idle: bool,
    pub requests: bool,
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
    #[error("{0}: only http:// URLs can be probed so far (the probe reads the HTTP it sends in the capture)")]
    Scheme(String),
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
}

/// Runs the probes and returns the capture's report with its `probe` section.
pub fn probe(config: &ProbeConfig) -> Result<Report, ProbeError> {
    if config.url.scheme() != "http" {
        return Err(ProbeError::Scheme(config.url.to_string()));
    }
    let target = resolve_target(&config.url)?;
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

    let (idle, requests) = std::thread::scope(|s| {
        let idle = config.idle.then(|| {
            let request = request.clone();
            s.spawn(move || idle_probe(target, &request, config.max_idle, stop))
        });
        let requests = config.requests.then(|| {
            let request = request.clone();
            s.spawn(move || requests_probe(target, &request, config.max_requests, stop))
        });
        if let Some(h) = &idle {
            show_wait(h, config.progress, config.max_idle);
        }
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<Client, ProbeError>>| {
            h.join()
                .unwrap_or_else(|_| Err(ProbeError::Http("a probe thread panicked".into(), target)))
        };
        (idle.map(join), requests.map(join))
    });
    let (idle, requests) = match (idle.transpose(), requests.transpose()) {
        (Ok(i), Ok(r)) => (i, r),
        (Err(e), _) | (_, Err(e)) => {
            let _ = capture.stop();
            return Err(e);
        }
    };
    let (mut pipeline, stats) = capture.finish(config.capture.linger)?;
    let source = pipeline.source_mut();
    source.kind = "live";
    source.names = vec![cc.interface.clone()];
    source.filter = Some(cc.filter.clone());
    source.dropped = Some(stats.dropped);
    let mut report = pipeline
        .finish()
        .expect("a pipeline that keeps its rows writes nowhere");
    report.probe = Some(measure(config, target, &report, idle, requests));
    // The probe opens its connections on purpose, one per probe: a verdict
    // on its reuse would speak of the probe, not of the server.
    report.diagnosis.clear();
    Ok(report)
}

/// The probes' numbers, from the capture's view of their connections.
fn measure(
    config: &ProbeConfig,
    target: SocketAddr,
    report: &Report,
    idle: Option<Client>,
    requests: Option<Client>,
) -> ProbeReport {
    let conn_of = |port: u16| {
        report
            .connections
            .iter()
            .filter(|c| c.client.port() == port && c.server == target)
            .max_by_key(|c| c.stream)
    };
    let max_idle_ms = ms(config.max_idle);
    let idle = idle.map(|client| idle_result(report, conn_of(client.port), &client, max_idle_ms));
    let requests = requests
        .map(|client| requests_result(report, conn_of(client.port), &client, config.max_requests));
    let idle_timeout_ms = idle.as_ref().and_then(|(_, t)| *t);
    let requests_per_connection = requests.as_ref().and_then(|(_, n)| *n);
    ProbeReport {
        url: config.url.to_string(),
        target,
        idle_timeout_ms,
        requests_per_connection,
        idle: idle.map(|(p, _)| p),
        requests: requests.map(|(p, _)| p),
        advice: idle_timeout_ms.map(advice).unwrap_or_default(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn idle_result(
    report: &Report,
    conn: Option<&ConnectionRecord>,
    client: &Client,
    max_idle_ms: f64,
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
    let done = report
        .requests
        .iter()
        .filter(|r| r.stream == conn.stream)
        .filter_map(|r| r.completed)
        .max();
    let timeout = match (conn.closed_by, conn.closed_at, done) {
        (Some(Role::Server), Some(at), Some(done)) => {
            let t = (at.0 - done.0) as f64 / 1000.0;
            let how = conn.closed_with.map_or("close", CloseKind::flag);
            probe.detail = format!(
                "stream {}: the server's {how} came {t:.1} ms after the last byte of its response",
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
    let answered = on_conn.iter().filter(|r| r.status.is_some()).count() as u32;
    let mut probe = RequestsProbe {
        stream: conn.map(|c| c.stream),
        client_port: client.port,
        sent: on_conn.len() as u32,
        answered,
        closed_by: conn.and_then(|c| c.closed_by),
        closed_with: conn.and_then(|c| c.closed_with),
        announced_close_at: conn
            .and_then(|c| c.http.as_ref())
            .and_then(|h| h.server_close_depth),
        announced_max: client.keep_alive.1,
        max_requests,
        detail: String::new(),
    };
    let Some(conn) = conn else {
        probe.detail = format!("the capture has no connection from port {}", client.port);
        return (probe, None);
    };
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
        "stream {}: the server answered {answered} of {} requests, then ended the connection ({how})",
        conn.stream, probe.sent
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
                human(d),
                t / 1000.0
            ),
            (Some(d), _) => format!("; its default, {}, is already shorter", human(d)),
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

fn human(ms: f64) -> String {
    if ms >= 60_000.0 && ms % 60_000.0 == 0.0 {
        format!("{:.0} min", ms / 60_000.0)
    } else {
        format!("{:.0} s", ms / 1000.0)
    }
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
    r: &mut BufReader<TcpStream>,
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
    target: SocketAddr,
    request: &[u8],
    max_idle: Duration,
    stop: &AtomicBool,
) -> Result<Client, ProbeError> {
    let (stream, port) = connect(target)?;
    let io = |what| {
        move |error| ProbeError::Io {
            target,
            what,
            error,
        }
    };
    (&stream)
        .write_all(request)
        .map_err(io("sending a request"))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io("connect"))?);
    let response = read_response(&mut reader, target)?
        .ok_or_else(|| ProbeError::Http("the server closed before answering".into(), target))?;
    let mut client = Client {
        port,
        sent: 1,
        answered: 1,
        keep_alive: response.keep_alive,
        close_at: response.close.then_some(1),
        interrupted: None,
    };
    if response.to_close || response.close {
        return Ok(client);
    }
    // The server's close (EOF or a reset) ends the wait; so does --max-idle.
    let start = Instant::now();
    let deadline = start + max_idle;
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            client.interrupted = Some(start.elapsed());
            break;
        }
        stream
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .map_err(io("waiting"))?;
        match reader.read(&mut byte) {
            Ok(0) => break,
            // Bytes nobody asked for: not a close; keep waiting.
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if is_closed(&e) => break,
            Err(e) => {
                return Err(ProbeError::Io {
                    target,
                    what: "waiting",
                    error: e,
                })
            }
        }
    }
    Ok(client)
}

/// Sequential requests on one connection until the server ends it.
fn requests_probe(
    target: SocketAddr,
    request: &[u8],
    max: u64,
    stop: &AtomicBool,
) -> Result<Client, ProbeError> {
    let (stream, port) = connect(target)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|error| ProbeError::Io {
        target,
        what: "connect",
        error,
    })?);
    let mut client = Client {
        port,
        sent: 0,
        answered: 0,
        keep_alive: (None, None),
        close_at: None,
        interrupted: None,
    };
    while u64::from(client.sent) < max && !stop.load(Ordering::SeqCst) {
        if (&stream).write_all(request).is_err() {
            break;
        }
        client.sent += 1;
        match read_response(&mut reader, target)? {
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
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
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
