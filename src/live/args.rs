//! Command-line syntax of `serve`, `run` and `demo` (clap derive), and its
//! validation into the live configurations before any work starts: durations
//! and sizes parsed, the URL and headers checked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use reqwest::header::{HeaderName, HeaderValue};

use crate::live::driver::{DriverConfig, HttpVersion};
use crate::live::server::ServerConfig;
use crate::live::session::CaptureSettings;
use crate::render::{Format, RequestRows};

/// `conntrace serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port. The bound address is printed.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Serve HTTPS with a self-signed certificate made at start (ALPN h2, http/1.1).
    #[arg(long)]
    pub tls: bool,
    /// Close a connection idle for this long (nginx keepalive_timeout), e.g. 1s, 200ms.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub idle_timeout: Option<Duration>,
    /// Answer the Nth request on a connection with `Connection: close` and close
    /// (nginx keepalive_requests; HTTP/2 gets a GOAWAY).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_requests: Option<u64>,
    /// Close the connection after every response.
    #[arg(long)]
    pub close: bool,
    /// Response body size, e.g. 512, 64k, 1MiB.
    #[arg(long, value_name = "BYTES", default_value = "1024", value_parser = parse_size)]
    pub body_size: u64,
    /// Wait this long before answering (simulated latency).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub delay: Option<Duration>,
}

impl ServeArgs {
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            idle_timeout: self.idle_timeout,
            max_requests: self.max_requests,
            close: self.close,
            body_size: self.body_size,
            delay: self.delay,
            tls: self.tls,
        }
    }
}

/// `conntrace probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The http:// or https:// URL to probe (GET). Over https the capture
    /// cannot read the HTTP: the end of a response and the request count
    /// are then the probe client's, the close the capture's.
    #[arg(value_name = "URL")]
    pub url: String,
    /// The probes to run, at once, each on its own connection: `idle` (one
    /// request, then wait for the server to close the connection),
    /// `requests` (requests one after another until the server closes it)
    /// `h2` (HTTP/2, with prior knowledge on http:// and by ALPN on
    /// https://: its SETTINGS, a PING, and how it ends an idle connection)
    /// and `reuse` (a second request after each of --gaps of idle, judged
    /// by the packets: finds idle connections dropped without a FIN or RST).
    #[arg(
        long,
        value_name = "PROBES",
        value_delimiter = ',',
        default_value = "idle,requests,h2,reuse"
    )]
    pub only: Vec<ProbeKind>,
    /// The idle gaps of the `reuse` probe (one connection each: a request,
    /// the gap, a second request). Default: 1s,2s,5s,10s,20s,30s,45s,60s,
    /// 90s,120s,180s,300s and --max-idle, those shorter than --max-idle.
    #[arg(long, value_name = "DURATIONS", value_delimiter = ',', value_parser = parse_timeout)]
    pub gaps: Vec<Duration>,
    /// https://: accept any server certificate (self-signed, another name).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Wait at most this long for the server to close an idle connection.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_timeout)]
    pub max_idle: Duration,
    /// Send at most this many requests on one connection.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_requests: u64,
    /// Capture on this interface (default: the one that reaches the target).
    #[arg(short = 'i', long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// Save the captured packets to this pcap file.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub savefile: Option<PathBuf>,
    /// Report format.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the report to FILE instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `conntrace compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The URL to request (http:// uses h2c with prior knowledge for the
    /// HTTP/2 run; https:// offers only h2 by ALPN).
    #[arg(value_name = "URL")]
    pub url: String,
    /// Total number of requests in each run.
    #[arg(
        short = 'n',
        long = "requests",
        value_name = "N",
        default_value_t = 100
    )]
    pub count: u64,
    /// Workers issuing requests at once, sharing one client.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
    /// Accept any certificate (https://).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Capture on this interface (default: the one that reaches the target).
    #[arg(short = 'i', long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// Table or Markdown side by side; JSON also holds both runs' reports.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the comparison to FILE instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

impl CompareArgs {
    pub fn driver(&self) -> Result<DriverConfig, ArgsError> {
        let url = http_url(&self.url)?;
        let mut d = DriverConfig::new(url, self.count);
        d.concurrency = self.concurrency as usize;
        d.insecure = self.insecure;
        Ok(d)
    }

    pub fn capture(&self) -> CaptureSettings {
        CaptureSettings {
            interface: self.interface.clone(),
            ..CaptureSettings::default()
        }
    }
}

/// The reuse probe's gaps: a rough doubling up to five minutes, those
/// shorter than `max_idle`, and `max_idle` itself.
fn default_gaps(max_idle: Duration) -> Vec<Duration> {
    let mut gaps: Vec<Duration> = [1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300]
        .into_iter()
        .map(Duration::from_secs)
        .filter(|&g| g < max_idle)
        .collect();
    gaps.push(max_idle);
    gaps
}

/// One of `probe --only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeKind {
    Idle,
    Requests,
    H2,
    Reuse,
}

impl ProbeArgs {
    pub fn config(&self) -> Result<crate::live::probe::ProbeConfig, ArgsError> {
        let url = http_url(&self.url)?;
        Ok(crate::live::probe::ProbeConfig {
            url,
            idle: self.only.contains(&ProbeKind::Idle),
            requests: self.only.contains(&ProbeKind::Requests),
            h2: self.only.contains(&ProbeKind::H2),
            insecure: self.insecure,
            gaps: if !self.only.contains(&ProbeKind::Reuse) {
                Vec::new()
            } else if self.gaps.is_empty() {
                default_gaps(self.max_idle)
            } else {
                self.gaps.clone()
            },
            max_idle: self.max_idle,
            max_requests: self.max_requests,
            capture: CaptureSettings {
                interface: self.interface.clone(),
                savefile: self.savefile.clone(),
                ..CaptureSettings::default()
            },
            progress: true,
            handle_ctrl_c: true,
        })
    }
}

/// `conntrace run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The URL to request (http:// or https://).
    #[arg(value_name = "URL")]
    pub url: String,
    /// Total number of requests.
    #[arg(short = 'n', long = "requests", value_name = "N", default_value_t = 10)]
    pub count: u64,
    /// Workers issuing requests at once, sharing one client (one connection pool).
    #[arg(short = 'c', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
    /// Drop each response without reading its body.
    #[arg(long)]
    pub no_drain: bool,
    /// Send HEAD requests.
    #[arg(long)]
    pub head: bool,
    /// Idle connections the client keeps per host (reqwest pool_max_idle_per_host).
    #[arg(long, value_name = "N")]
    pub pool_max_idle_per_host: Option<usize>,
    /// How long the client keeps an idle connection (reqwest default: 90s).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub pool_idle_timeout: Option<Duration>,
    /// HTTP/1.1 only (no ALPN h2).
    #[arg(long, conflicts_with = "http2")]
    pub http1_only: bool,
    /// HTTP/2: prior knowledge (h2c) on http://, ALPN h2 on https://.
    #[arg(long)]
    pub http2: bool,
    /// Pause between a worker's requests.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Request method.
    #[arg(short = 'X', long, value_name = "METHOD", default_value = "GET")]
    pub method: String,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Give up on a request after this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Accept any TLS certificate (the built-in server's is self-signed).
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Retry a request that failed with a transport error up to N times
    /// (reqwest's retry policy; 0 turns reqwest's default protocol retries off).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// Write TLS secrets to FILE (SSLKEYLOGFILE format) so that
    /// `tshark -o tls.keylog_file:FILE -r CAPTURE` can decrypt a -w capture.
    #[arg(long, value_name = "FILE")]
    pub keylog: Option<PathBuf>,
    /// Interface to capture on (default: the one that reaches the target; lo for loopback).
    #[arg(short = 'i', long, value_name = "IFACE")]
    pub interface: Option<String>,
    /// Save the captured packets to FILE (pcap); `conntrace replay FILE` gives the same report.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub savefile: Option<PathBuf>,
    /// After the last response, wait at most this long for connections to close
    /// (packets libpcap still holds are always collected, which takes about 0.1s).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub linger: Duration,
    /// The kernel's capture buffer (at least 1MiB); a full buffer drops packets,
    /// which the report counts in source.dropped.
    #[arg(long, value_name = "BYTES", default_value = "32MiB", value_parser = parse_capture_buffer)]
    pub buffer_size: usize,
    /// Do not capture (no privileges needed): requests are attributed to
    /// connections by the client's local socket only, and the report says so
    /// (source.kind "client-only").
    #[arg(long, conflicts_with_all = ["savefile", "interface", "buffer_size"])]
    pub no_capture: bool,
    /// Report format.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the report to FILE instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Request rows in table, Markdown and HTML reports (`auto`: up to 200
    /// requests, 20,000 in HTML, then one row per connection).
    #[arg(long, value_enum, default_value_t = RequestRows::Auto)]
    pub rows: RequestRows,
}

/// An http:// or https:// URL with a host.
fn http_url(text: &str) -> Result<reqwest::Url, ArgsError> {
    let url_error = |detail: String| ArgsError::Url {
        url: text.to_string(),
        detail,
    };
    let url = reqwest::Url::parse(text).map_err(|e| url_error(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(url_error("only http:// and https:// are supported".into()));
    }
    if url.host_str().is_none() {
        return Err(url_error("the URL has no host".into()));
    }
    Ok(url)
}

/// Why the command line was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("invalid URL {url:?}: {detail}")]
    Url { url: String, detail: String },
    #[error("invalid header {header:?}: {detail}")]
    Header { header: String, detail: String },
    #[error("invalid method {0:?}")]
    Method(String),
}

impl RunArgs {
    pub fn driver(&self) -> Result<DriverConfig, ArgsError> {
        let url = http_url(&self.url)?;
        let method = reqwest::Method::from_bytes(self.method.to_uppercase().as_bytes())
            .map_err(|_| ArgsError::Method(self.method.clone()))?;
        let headers = self
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        let mut d = DriverConfig::new(url, self.count);
        d.method = method;
        d.headers = headers;
        d.concurrency = self.concurrency as usize;
        d.drain = !self.no_drain;
        d.head = self.head;
        d.pool_max_idle_per_host = self.pool_max_idle_per_host;
        d.pool_idle_timeout = self.pool_idle_timeout;
        d.http = if self.http1_only {
            HttpVersion::Http1Only
        } else if self.http2 {
            HttpVersion::Http2
        } else {
            HttpVersion::Auto
        };
        d.interval = self.interval;
        d.timeout = self.timeout;
        d.insecure = self.insecure;
        d.retries = self.retries;
        d.keylog = self.keylog.clone();
        Ok(d)
    }

    pub fn capture(&self) -> Option<CaptureSettings> {
        (!self.no_capture).then(|| CaptureSettings {
            interface: self.interface.clone(),
            savefile: self.savefile.clone(),
            linger: self.linger,
            buffer_size: self.buffer_size,
        })
    }
}

/// `conntrace demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run only these experiments: letters (`--only ad`) or names and letters
    /// separated by commas (`--only a,http2-concurrent`).
    #[arg(long, value_name = "EXPERIMENTS")]
    pub only: Option<String>,
}

fn parse_header(h: &str) -> Result<(HeaderName, HeaderValue), ArgsError> {
    let err = |detail: &str| ArgsError::Header {
        header: h.to_string(),
        detail: detail.to_string(),
    };
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| err("expected \"Name: value\""))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| err("bad name"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| err("bad value"))?;
    Ok((name, value))
}

/// The longest duration any option takes: longer ones are typing mistakes,
/// and would overflow a deadline computed from them.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Durations as humantime writes them: "1.5s", "200ms", "2m"; zero allowed,
/// at most 30 days.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (examples: 1.5s, 200ms, 2m)"))?;
    if d > MAX_DURATION {
        return Err("must be at most 30 days".into());
    }
    Ok(d)
}

/// A timeout: a duration as [`parse_duration`] takes it, above zero (a zero
/// timeout would expire everything at once).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err("must be longer than zero (examples: 1.5s, 200ms, 2m)".into()),
        d => Ok(d),
    }
}

fn parse_capture_buffer(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        n if n < 1 << 20 => Err("the capture buffer needs at least 1MiB".into()),
        n if n > i32::MAX as u64 => Err("the capture buffer must be below 2GiB".into()),
        n => Ok(n as usize),
    }
}

/// Byte counts: "512", "64k", "64KiB", "1M", "1MiB" (k and M are binary, as
/// curl and nginx take them).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 512, 64k, 1MiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("unknown unit in {s:?} (use k, M or G)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("1x").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn durations_take_fractions() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("10000000000y").is_err());
        assert!(parse_duration("31days").is_err());
    }

    #[test]
    fn timeouts_are_above_zero() {
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("0ms").is_err());
        assert_eq!(parse_timeout("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn headers_need_a_colon_and_valid_parts() {
        let (n, v) = parse_header("X-Test:  yes ").unwrap();
        assert_eq!(n.as_str(), "x-test");
        assert_eq!(v, "yes");
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header("bad name: v").is_err());
    }
}
