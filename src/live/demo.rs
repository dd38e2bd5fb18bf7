//! `conntrace demo`: the built-in server and the request driver, captured on
//! loopback, in the experiments that show when a client reuses a connection and
//! why it does not. Each experiment prints its connections and a one-line
//! verdict computed from what was captured — never a constant — saying whether
//! the expected behaviour was observed.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;

use crate::live::driver::{DriverConfig, HttpVersion};
use crate::live::server::{ServerConfig, ServerError, TestServer};
use crate::live::session::{run_session, CaptureSettings, SessionConfig, SessionError};
use crate::render::count;
use crate::report::{Report, Role};

/// The experiments, in the order the demo runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Experiment {
    /// (a) 10 sequential requests, bodies read.
    SequentialDrained,
    /// (b) 10 sequential requests, 1 MiB bodies dropped unread.
    SequentialUndrained,
    /// (c) 10 workers × 5 requests, at most 2 idle connections kept.
    PoolIdleLimit2,
    /// (c) the same with 10 idle connections kept.
    PoolIdleLimit10,
    /// (d) HTTP/2 (h2c), 10 concurrent requests.
    Http2Concurrent,
    /// (e) server idle timeout 1 s, requests 1.5 s apart.
    ServerIdleTimeout,
    /// (f) server allows 3 requests per connection.
    ServerMaxRequests,
}

impl Experiment {
    pub const ALL: [Experiment; 7] = [
        Experiment::SequentialDrained,
        Experiment::SequentialUndrained,
        Experiment::PoolIdleLimit2,
        Experiment::PoolIdleLimit10,
        Experiment::Http2Concurrent,
        Experiment::ServerIdleTimeout,
        Experiment::ServerMaxRequests,
    ];

    /// The letter of the experiment ("c" for both pool limits).
    pub fn letter(self) -> char {
        match self {
            Experiment::SequentialDrained => 'a',
            Experiment::SequentialUndrained => 'b',
            Experiment::PoolIdleLimit2 | Experiment::PoolIdleLimit10 => 'c',
            Experiment::Http2Concurrent => 'd',
            Experiment::ServerIdleTimeout => 'e',
            Experiment::ServerMaxRequests => 'f',
        }
    }

    /// The experiment's name, which `--only` takes as well as its letter.
    pub fn name(self) -> &'static str {
        match self {
            Experiment::SequentialDrained => "sequential-drained",
            Experiment::SequentialUndrained => "sequential-undrained",
            Experiment::PoolIdleLimit2 => "pool-idle-2",
            Experiment::PoolIdleLimit10 => "pool-idle-10",
            Experiment::Http2Concurrent => "http2-concurrent",
            Experiment::ServerIdleTimeout => "server-idle-timeout",
            Experiment::ServerMaxRequests => "server-max-requests",
        }
    }

    /// The experiments `--only` names: letters run together (`ad`), or
    /// names and letters separated by commas (`a,http2-concurrent`).
    pub fn select(only: &str) -> Result<Vec<Experiment>, String> {
        let mut wanted = Vec::new();
        for word in only.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if let Some(e) = Experiment::ALL.into_iter().find(|e| e.name() == word) {
                wanted.push(e);
            } else if word.chars().all(|c| ('a'..='f').contains(&c)) {
                wanted.extend(
                    Experiment::ALL
                        .into_iter()
                        .filter(|e| word.contains(e.letter())),
                );
            } else {
                return Err(format!(
                    "--only {only:?}: no experiment {word:?} (see conntrace demo --help)"
                ));
            }
        }
        if wanted.is_empty() {
            return Err(format!(
                "--only {only:?}: name an experiment (see conntrace demo --help)"
            ));
        }
        Ok(Experiment::ALL
            .into_iter()
            .filter(|e| wanted.contains(e))
            .collect())
    }

    /// One line per experiment, for `conntrace demo --help`.
    pub fn help() -> String {
        let mut out = String::from("Experiments (--only takes letters or names):\n");
        for e in Experiment::ALL {
            let _ = writeln!(out, "  {}  {:<21} {}", e.letter(), e.name(), e.summary());
        }
        out.push_str(
            "\nExits 5 when a verdict is UNEXPECTED (conntrace --help lists every exit code).",
        );
        out
    }

    /// The title in a few words, for the list in `--help`.
    pub fn summary(self) -> &'static str {
        match self {
            Experiment::PoolIdleLimit2 => "10 workers x 5 requests, 2 idle connections kept",
            Experiment::PoolIdleLimit10 => "10 workers x 5 requests, 10 idle connections kept",
            Experiment::ServerMaxRequests => "server allows 3 requests per connection",
            e => e.title(),
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Experiment::SequentialDrained => "10 sequential requests, bodies read",
            Experiment::SequentialUndrained => "10 sequential requests, 1 MiB bodies dropped unread",
            Experiment::PoolIdleLimit2 => {
                "10 concurrent workers x 5 requests 50ms apart, 50ms responses, pool_max_idle_per_host 2"
            }
            Experiment::PoolIdleLimit10 => {
                "10 concurrent workers x 5 requests 50ms apart, 50ms responses, pool_max_idle_per_host 10"
            }
            Experiment::Http2Concurrent => "HTTP/2 (h2c), 10 concurrent requests",
            Experiment::ServerIdleTimeout => "server idle timeout 1s, requests 1.5s apart",
            Experiment::ServerMaxRequests => "server allows 3 requests per connection, 9 requests",
        }
    }

    fn server(self) -> ServerConfig {
        let base = ServerConfig {
            body_size: 1024,
            ..ServerConfig::default()
        };
        match self {
            Experiment::SequentialUndrained => ServerConfig {
                // Larger than what arrives with the response head, so dropping
                // the response really leaves bytes unread.
                body_size: 1 << 20,
                ..base
            },
            Experiment::ServerIdleTimeout => ServerConfig {
                idle_timeout: Some(Duration::from_secs(1)),
                ..base
            },
            Experiment::ServerMaxRequests => ServerConfig {
                max_requests: Some(3),
                ..base
            },
            // Every worker's first request is still in flight when the last
            // one starts, so the first round needs 10 connections.
            Experiment::PoolIdleLimit2 | Experiment::PoolIdleLimit10 => ServerConfig {
                delay: Some(Duration::from_millis(50)),
                ..base
            },
            _ => base,
        }
    }

    fn driver(self, url: reqwest::Url) -> DriverConfig {
        let mut d = DriverConfig::new(url, 10);
        d.timeout = Some(Duration::from_secs(10));
        match self {
            Experiment::SequentialDrained => {}
            Experiment::SequentialUndrained => d.drain = false,
            Experiment::PoolIdleLimit2 | Experiment::PoolIdleLimit10 => {
                d.requests = 50;
                d.concurrency = 10;
                // Paced so that each response's connection is back in the pool
                // before the worker's next request: without a pause, hyper's
                // pool races a new connect against the checkout.
                d.interval = Some(Duration::from_millis(50));
                d.http = HttpVersion::Http1Only;
                d.pool_max_idle_per_host = Some(match self {
                    Experiment::PoolIdleLimit2 => 2,
                    _ => 10,
                });
            }
            Experiment::Http2Concurrent => {
                d.concurrency = 10;
                d.http = HttpVersion::Http2;
            }
            Experiment::ServerIdleTimeout => {
                d.requests = 3;
                d.interval = Some(Duration::from_millis(1500));
            }
            Experiment::ServerMaxRequests => d.requests = 9,
        }
        d
    }
}

/// What one experiment observed.
#[derive(Debug)]
pub struct ExperimentResult {
    pub experiment: Experiment,
    pub server: SocketAddr,
    pub report: Report,
    pub verdict: Verdict,
}

/// Whether the expected behaviour was seen, in one line.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub expected: bool,
    pub line: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Starts a server for the experiment, drives and captures it, and judges.
pub fn run_experiment(experiment: Experiment) -> Result<ExperimentResult, DemoError> {
    let server = TestServer::start("127.0.0.1:0".parse().expect("literal"), experiment.server())?;
    let url = server.url().parse().expect("the server's URL parses");
    let outcome = run_session(SessionConfig {
        driver: experiment.driver(url),
        capture: Some(CaptureSettings::default()),
        progress: false,
        handle_ctrl_c: false,
    })?;
    let verdict = judge(experiment, &outcome.report);
    Ok(ExperimentResult {
        experiment,
        server: server.addr(),
        report: outcome.report,
        verdict,
    })
}

/// Requests carried by each stream, from the report's request list.
fn requests_on(report: &Report, stream: u64) -> usize {
    report
        .requests
        .iter()
        .filter(|r| r.stream == stream)
        .count()
}

fn closes(report: &Report) -> String {
    let mut by: Vec<(String, usize)> = Vec::new();
    for c in &report.connections {
        let key = match (c.closed_by, c.closed_with) {
            (Some(side), Some(how)) => format!("{side} ({})", how.flag()),
            _ => "nobody".to_string(),
        };
        match by.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => by.push((key, 1)),
        }
    }
    by.iter()
        .map(|(k, n)| format!("{n} closed by {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The verdict, from the captured connections and the reuse table.
pub fn judge(experiment: Experiment, report: &Report) -> Verdict {
    let s = &report.summary;
    let conns = s.connections;
    let reqs = s.requests;
    let reused = s.reused_requests;
    let server_closed = report
        .connections
        .iter()
        .filter(|c| c.closed_by == Some(Role::Server))
        .count() as u64;
    let carrying = report
        .connections
        .iter()
        .filter(|c| requests_on(report, c.stream) > 0)
        .count() as u64;
    let unused = match conns - carrying {
        0 => String::new(),
        n => format!(
            "; {} opened by the pool and never used",
            count(n, "connection")
        ),
    };
    let head = format!(
        "{}, {}, {reused} reused",
        count(reqs, "request"),
        count(conns, "connection")
    );
    let (expected, why) = match experiment {
        Experiment::SequentialDrained => (
            reqs == 10 && conns == 1,
            "bodies read to the end: one connection carries every request".to_string(),
        ),
        Experiment::SequentialUndrained => (
            reqs == 10 && conns == 10 && reused == 0,
            format!(
                "each unread body made its connection unusable: {}; {} of them also reset by \
                 the client (RST: bytes left unread)",
                closes(report),
                report
                    .connections
                    .iter()
                    .filter(|c| c.rst_client > 0)
                    .count()
            ),
        ),
        Experiment::PoolIdleLimit2 => (
            reqs == 50 && carrying > 10,
            format!(
                "only 2 idle connections are kept, the others are closed and reopened \
                 ({}){unused}",
                closes(report)
            ),
        ),
        Experiment::PoolIdleLimit10 => (
            reqs == 50 && carrying == 10,
            format!("the pool kept all 10 workers' connections between requests{unused}"),
        ),
        Experiment::Http2Concurrent => {
            // Requests found in the packets as HTTP/2 streams (stream ids
            // repeat across connections, so they are not deduplicated).
            let h2 = report
                .requests
                .iter()
                .filter(|r| r.h2_stream.is_some())
                .count();
            let (streams, seen) = if h2 == 0 {
                let client_h2 = report.client.as_ref().map_or(0, |c| {
                    c.requests
                        .iter()
                        .filter(|r| r.http_version.as_deref() == Some("HTTP/2.0"))
                        .count()
                });
                (
                    client_h2,
                    "as the client reports; the packets showed no HTTP/2 stream",
                )
            } else {
                (h2, "as the packets show")
            };
            // hyper's pool may race a second connection into being while the
            // first is handshaking (more often in a debug build on a loaded
            // machine); it may take a request before the first is ready. One
            // connection multiplexing all but at most one request is what
            // HTTP/2 promises; the raced one is named.
            let busiest = report
                .connections
                .iter()
                .map(|c| requests_on(report, c.stream))
                .max()
                .unwrap_or(0) as u64;
            let raced = match reqs.saturating_sub(busiest) {
                0 => String::new(),
                n => format!(
                    "; the pool raced a second connection into being, which carried {}",
                    count(n, "request")
                ),
            };
            (
                reqs == 10 && busiest >= 9 && carrying <= 2 && streams == 10,
                format!(
                    "{} multiplexed on one connection, {seen}{raced}{unused}",
                    count(busiest, "HTTP/2 stream")
                ),
            )
        }
        Experiment::ServerIdleTimeout => (
            reqs == 3 && conns == 3 && server_closed >= 2,
            format!(
                "the server closed {} before the next request",
                count(server_closed, "idle connection")
            ),
        ),
        Experiment::ServerMaxRequests => {
            let per: Vec<usize> = report
                .connections
                .iter()
                .map(|c| requests_on(report, c.stream))
                .collect();
            (
                reqs == 9 && conns == 3 && per.iter().all(|&n| n == 3),
                // After a `Connection: close` response both sides close at
                // once; which FIN goes first is a race, so it is reported only.
                format!(
                    "requests per connection {per:?}, a new connection every 3 requests; {}",
                    closes(report)
                ),
            )
        }
    };
    let mark = if expected {
        "as expected"
    } else {
        "UNEXPECTED"
    };
    let causes: Vec<String> = report
        .summary
        .new_connection_causes
        .iter()
        .filter(|(code, _)| code.as_str() != "first")
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    let causes = if causes.is_empty() {
        String::new()
    } else {
        format!(" [causes: {}]", causes.join(", "))
    };
    Verdict {
        expected,
        line: format!("{mark}: {head}: {why}{causes}"),
    }
}

/// Connection rows printed per experiment; the rest are summed up in one row.
const MAX_ROWS: usize = 12;

/// The experiment's compact table and verdict, as the demo prints them.
pub fn render(result: &ExperimentResult) -> String {
    let mut out = String::new();
    let e = result.experiment;
    let _ = writeln!(
        out,
        "({}) {}  [server {}]",
        e.letter(),
        e.title(),
        result.server
    );
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "stream",
        "client",
        "requests",
        "tags",
        "h2 streams",
        "closed by",
    ]);
    let connections = &result.report.connections;
    let shown = if connections.len() > MAX_ROWS {
        MAX_ROWS - 1
    } else {
        connections.len()
    };
    for c in &connections[..shown] {
        let reqs: Vec<_> = result
            .report
            .requests
            .iter()
            .filter(|r| r.stream == c.stream)
            .collect();
        let tags: Vec<&str> = reqs.iter().filter_map(|r| r.tag.as_deref()).collect();
        let h2 = reqs.iter().filter(|r| r.h2_stream.is_some()).count();
        let closed = match (c.closed_by, c.closed_with) {
            (Some(by), Some(how)) => format!("{by} {}", how.flag()),
            _ => "open".into(),
        };
        t.add_row(vec![
            c.stream.to_string(),
            c.client.to_string(),
            reqs.len().to_string(),
            abbreviate(&tags),
            if h2 > 0 { h2.to_string() } else { "-".into() },
            closed,
        ]);
    }
    if shown < connections.len() {
        let rest = &connections[shown..];
        let reqs = result
            .report
            .requests
            .iter()
            .filter(|r| r.stream >= rest[0].stream)
            .count();
        t.add_row(vec![
            format!("{}-{}", rest[0].stream, rest[rest.len() - 1].stream),
            format!("({} more)", count(rest.len() as u64, "connection")),
            reqs.to_string(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    let _ = writeln!(out, "{t}");
    let _ = writeln!(out, "{}", result.verdict.line);
    out
}

fn abbreviate(tags: &[&str]) -> String {
    match tags.len() {
        0 => "-".into(),
        1..=6 => tags.join(","),
        n => format!("{},{},...,{} ({n})", tags[0], tags[1], tags[n - 1]),
    }
}
