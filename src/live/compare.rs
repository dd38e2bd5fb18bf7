//! `conntrace compare URL`: the same load once over HTTP/1.1 and once over
//! HTTP/2, each a captured `run`, side by side: what multiplexing saves in
//! connections, SYNs and handshakes, measured from the two captures.

use std::io::{self, Write};
use std::time::Instant;

use serde::Serialize;

use crate::live::driver::{DriverConfig, HttpVersion};
use crate::live::session::{run_session, CaptureSettings, SessionConfig, SessionError};
use crate::report::Report;

/// One side of the comparison, from its capture.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// `http1` or `http2`.
    pub http: &'static str,
    pub requests: u64,
    pub errors: u64,
    pub connections: u64,
    pub syn: u64,
    pub requests_per_connection: f64,
    /// Requests carried as HTTP/2 streams.
    pub streams: u64,
    /// Connections whose handshake was captured, and those handshakes'
    /// round trips summed (tshark's `initial_rtt`).
    pub handshakes: u64,
    pub handshake_ms: f64,
    /// The run's wall time, by the probe's clock.
    pub wall_ms: f64,
    pub new_connection_causes: std::collections::BTreeMap<String, u64>,
}

/// Both sides, and both reports in full.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub url: String,
    pub requests: u64,
    pub concurrency: u64,
    pub http1: Side,
    pub http2: Side,
    /// Connections, SYNs and handshake time HTTP/2 did without.
    pub connections_saved: i64,
    pub handshake_ms_saved: f64,
    pub reports: Reports,
}

#[derive(Debug, Serialize)]
pub struct Reports {
    pub http1: Report,
    pub http2: Report,
}

fn side(http: &'static str, report: &Report, wall_ms: f64) -> Side {
    let s = &report.summary;
    let handshakes: Vec<f64> = report
        .connections
        .iter()
        .filter_map(|c| c.handshake_rtt_ms)
        .collect();
    Side {
        http,
        requests: s.requests,
        errors: report.client.as_ref().map_or(0, |c| c.errors),
        connections: s.connections,
        syn: s.syn,
        requests_per_connection: if s.connections == 0 {
            0.0
        } else {
            s.requests as f64 / s.connections as f64
        },
        streams: report
            .requests
            .iter()
            .filter(|r| r.h2_stream.is_some())
            .count() as u64,
        handshakes: handshakes.len() as u64,
        handshake_ms: handshakes.iter().sum(),
        wall_ms,
        new_connection_causes: s.new_connection_causes.clone(),
    }
}

/// Runs `driver`'s load twice, over HTTP/1.1 and HTTP/2, each captured.
pub fn compare(
    driver: &DriverConfig,
    capture: CaptureSettings,
) -> Result<Comparison, SessionError> {
    let run = |http: HttpVersion| -> Result<(Report, f64), SessionError> {
        let mut d = driver.clone();
        d.http = http;
        let start = Instant::now();
        let outcome = run_session(SessionConfig {
            driver: d,
            capture: Some(capture.clone()),
            progress: true,
            handle_ctrl_c: true,
        })?;
        Ok((outcome.report, start.elapsed().as_secs_f64() * 1000.0))
    };
    let (r1, w1) = run(HttpVersion::Http1Only)?;
    let (r2, w2) = run(HttpVersion::Http2)?;
    let (http1, http2) = (side("http1", &r1, w1), side("http2", &r2, w2));
    Ok(Comparison {
        url: driver.url.to_string(),
        requests: driver.requests,
        concurrency: driver.concurrency as u64,
        connections_saved: http1.connections as i64 - http2.connections as i64,
        handshake_ms_saved: http1.handshake_ms - http2.handshake_ms,
        http1,
        http2,
        reports: Reports {
            http1: r1,
            http2: r2,
        },
    })
}

/// The two sides as a table (Markdown when `markdown`).
pub fn write_text(c: &Comparison, out: &mut dyn Write, markdown: bool) -> io::Result<()> {
    let causes = |s: &Side| {
        let v: Vec<String> = s
            .new_connection_causes
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    let rows: Vec<(&str, String, String)> = vec![
        (
            "requests",
            c.http1.requests.to_string(),
            c.http2.requests.to_string(),
        ),
        (
            "errors",
            c.http1.errors.to_string(),
            c.http2.errors.to_string(),
        ),
        (
            "connections",
            c.http1.connections.to_string(),
            c.http2.connections.to_string(),
        ),
        ("SYNs", c.http1.syn.to_string(), c.http2.syn.to_string()),
        (
            "requests per connection",
            format!("{:.1}", c.http1.requests_per_connection),
            format!("{:.1}", c.http2.requests_per_connection),
        ),
        (
            "HTTP/2 streams",
            c.http1.streams.to_string(),
            c.http2.streams.to_string(),
        ),
        (
            "handshakes (time)",
            format!("{} ({:.2} ms)", c.http1.handshakes, c.http1.handshake_ms),
            format!("{} ({:.2} ms)", c.http2.handshakes, c.http2.handshake_ms),
        ),
        (
            "new connections by cause",
            causes(&c.http1),
            causes(&c.http2),
        ),
        (
            "run wall time",
            format!("{:.0} ms", c.http1.wall_ms),
            format!("{:.0} ms", c.http2.wall_ms),
        ),
    ];
    let title = format!(
        "{} requests, concurrency {}, to {}: HTTP/1.1 against HTTP/2",
        c.requests, c.concurrency, c.url
    );
    let saved = format!(
        "HTTP/2 used {} fewer connection(s) and {:.2} ms less handshake time.",
        c.connections_saved, c.handshake_ms_saved
    );
    if markdown {
        writeln!(out, "## {title}\n")?;
        writeln!(out, "| | HTTP/1.1 | HTTP/2 |\n|---|---|---|")?;
        for (name, a, b) in &rows {
            writeln!(out, "| {name} | {a} | {b} |")?;
        }
        writeln!(out, "\n{saved}")
    } else {
        writeln!(out, "{title}")?;
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
            .set_header(vec!["", "HTTP/1.1", "HTTP/2"]);
        for (name, a, b) in rows {
            t.add_row(vec![name.to_string(), a, b]);
        }
        writeln!(out, "{t}\n{saved}")
    }
}
