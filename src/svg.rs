//! `--format svg`: the report as a timeline. One lane per connection,
//! grouped by client host and server, time across; each request a bar from
//! sent to its response's end (green when it reused its connection, else
//! the colour of its `why_new.code`), SYN, FIN and RST marked per side, and
//! a `<title>` on every element with its details. Past [`MAX_LANES`]
//! connections, consecutive lanes fold into one row each, drawn faint on
//! top of each other so that density shows; the legend says how many.
//! Plain SVG: no script, no external reference.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::report::{CloseKind, ConnectionRecord, Report, RequestRecord, Role};

/// The most lanes drawn one per connection.
pub const MAX_LANES: usize = 300;

const WIDTH: f64 = 1200.0;
const LABEL: f64 = 300.0;
const RIGHT: f64 = 90.0;
const LANE: f64 = 16.0;
const TOP: f64 = 92.0;

/// The colour of a new connection's cause (reused requests are green).
fn cause_colour(code: &str) -> &'static str {
    match code {
        "first" => "#607d8b",
        "concurrency" => "#1e88e5",
        "pool_limit" => "#8e24aa",
        "no_pool" => "#d81b60",
        "unread_body" => "#e53935",
        "client_idle_timeout" | "server_idle_timeout" => "#fb8c00",
        "server_request_limit" | "server_close" | "client_close" | "http10" | "goaway" => "#fdd835",
        "stale_connection" | "reset" => "#b71c1c",
        "idle_available" => "#00acc1",
        _ => "#9e9e9e",
    }
}

const REUSED: &str = "#43a047";

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Writes the timeline of `report`.
pub fn write_svg(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let mut conns: Vec<&ConnectionRecord> = report.connections.iter().collect();
    conns.sort_by(|a, b| {
        (a.client.ip(), a.server, a.first_seen, a.stream).cmp(&(
            b.client.ip(),
            b.server,
            b.first_seen,
            b.stream,
        ))
    });
    let mut by_stream: std::collections::HashMap<u64, Vec<&RequestRecord>> = Default::default();
    for r in &report.requests {
        by_stream.entry(r.stream).or_default().push(r);
    }
    let t0 = conns
        .iter()
        .map(|c| c.first_seen.as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    let t1 = conns
        .iter()
        .map(|c| c.last_seen.as_secs_f64())
        .chain(
            report
                .requests
                .iter()
                .filter_map(|r| r.completed.map(|t| t.as_secs_f64())),
        )
        .fold(f64::NEG_INFINITY, f64::max);
    let (t0, span) = if t0.is_finite() && t1 > t0 {
        (t0, t1 - t0)
    } else {
        (if t0.is_finite() { t0 } else { 0.0 }, 1.0)
    };
    let plot = WIDTH - LABEL - RIGHT;
    let x = |t: f64| LABEL + (t - t0) / span * plot;
    let per_row = conns.len().div_ceil(MAX_LANES).max(1);
    let rows = conns.len().div_ceil(per_row);
    let height = TOP + rows as f64 * LANE + 40.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let summary = &report.summary;
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="14" font-weight="bold">{}</text>"#,
        esc(&format!(
            "{} requests over {} connections, {} reused; {:.3} s from {}",
            summary.requests,
            summary.connections,
            summary.reused_requests,
            span,
            report.source.names.join(", ")
        ))
    );
    legend(&mut s, conns.len(), per_row);
    // Time axis.
    for k in 0..=5 {
        let t = t0 + span * f64::from(k) / 5.0;
        let px = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{}" x2="{px:.1}" y2="{:.1}" stroke="#e0e0e0"/><text x="{px:.1}" y="{}" text-anchor="middle" fill="#616161">{:.3} s</text>"##,
            TOP - 6.0,
            height - 30.0,
            height - 16.0,
            t - t0
        );
    }
    let opacity = if per_row > 1 { 0.35 } else { 1.0 };
    let mut last_group = None;
    for (row, chunk) in conns.chunks(per_row).enumerate() {
        let y = TOP + row as f64 * LANE;
        let first = chunk[0];
        let group = (first.client.ip(), first.server);
        if last_group != Some(group) {
            last_group = Some(group);
            let _ = writeln!(
                s,
                r##"<line x1="0" y1="{y:.1}" x2="{WIDTH}" y2="{y:.1}" stroke="#bdbdbd"/>"##
            );
        }
        let label = if per_row == 1 {
            format!("{} {} → {}", first.stream, first.client, first.server)
        } else {
            format!(
                "{} connections, {} → {} on",
                chunk.len(),
                first.client.ip(),
                first.server
            )
        };
        let _ = writeln!(
            s,
            r#"<text x="6" y="{:.1}">{}</text>"#,
            y + LANE - 4.0,
            esc(&label)
        );
        for c in chunk {
            lane(&mut s, c, by_stream.get(&c.stream), y, &x, opacity);
        }
    }
    s.push_str("</svg>\n");
    out.write_all(s.as_bytes())
}

fn legend(s: &mut String, connections: usize, per_row: usize) {
    let mut lx = 10.0;
    let ly = 40.0;
    let mut item = |s: &mut String, colour: &str, name: &str| {
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            ly - 9.0,
            lx + 14.0,
            ly,
            esc(name)
        );
        lx += 14.0 + 6.5 * name.len() as f64 + 12.0;
    };
    item(s, REUSED, "reused");
    for (code, name) in [
        ("first", "first"),
        ("concurrency", "concurrency"),
        ("pool_limit", "pool limit"),
        ("no_pool", "no pool"),
        ("unread_body", "unread body"),
        ("server_idle_timeout", "idle timeout"),
        ("server_request_limit", "close / limit"),
        ("reset", "reset / stale"),
        ("idle_available", "idle unused"),
    ] {
        item(s, cause_colour(code), name);
    }
    let fold = if per_row > 1 {
        format!(
            "; {connections} connections folded {per_row} to a row (drawn faint, so density shows)"
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        r##"<text x="10" y="{:.1}" fill="#424242">{}</text>"##,
        ly + 20.0,
        esc(&format!(
            "bars: request sent → response complete; marks: ▲ SYN, | FIN (blue client, orange server), ✕ RST (red); grey line: the connection's life{fold}"
        ))
    );
}

fn lane(
    s: &mut String,
    c: &ConnectionRecord,
    requests: Option<&Vec<&RequestRecord>>,
    y: f64,
    x: &dyn Fn(f64) -> f64,
    opacity: f64,
) {
    let mid = y + LANE / 2.0;
    let (a, b) = (x(c.first_seen.as_secs_f64()), x(c.last_seen.as_secs_f64()));
    let closed = match (c.closed_by, c.closed_with) {
        (Some(Role::Client), Some(k)) => format!("closed by the client ({})", k.flag()),
        (Some(Role::Server), Some(k)) => format!("closed by the server ({})", k.flag()),
        _ => "not closed in the capture".to_string(),
    };
    let _ = writeln!(
        s,
        r##"<g class="lane" data-stream="{}" opacity="{opacity}"><line x1="{a:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="#9e9e9e" stroke-width="2"><title>{}</title></line>"##,
        c.stream,
        b.max(a + 1.0),
        esc(&format!(
            "stream {}: {} → {}, {} request(s), {:.3} ms, {closed}",
            c.stream,
            c.client,
            c.server,
            c.requests.unwrap_or(0),
            (c.last_seen.as_secs_f64() - c.first_seen.as_secs_f64()) * 1000.0
        ))
    );
    if c.syn > 0 {
        let _ = writeln!(
            s,
            r##"<path d="M{a:.1},{:.1} l-4,7 h8 z" fill="#2e7d32"><title>SYN</title></path>"##,
            y + 1.0
        );
    }
    for r in requests.into_iter().flatten() {
        let start = x(r.sent.as_secs_f64());
        let end = r.completed.or(r.answered).map_or(b, |t| x(t.as_secs_f64()));
        let (colour, why) = match &r.why_new {
            Some(w) if !r.reused => (
                cause_colour(w.code.as_str()),
                format!(", new: {}", w.code.as_str()),
            ),
            _ => (REUSED, ", reused".to_string()),
        };
        let latency = r
            .answered
            .map(|t| {
                format!(
                    ", {:.3} ms",
                    (t.as_secs_f64() - r.sent.as_secs_f64()) * 1000.0
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            r#"<rect x="{start:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}</title></rect>"#,
            y + 3.0,
            (end - start).max(1.5),
            LANE - 6.0,
            esc(&format!(
                "stream {} request {}: {} {} → {}{latency}{why}",
                r.stream,
                r.depth,
                r.method,
                r.target,
                r.status
                    .map_or_else(|| "no response".to_string(), |s| s.to_string())
            ))
        );
    }
    if let (Some(at), Some(by), Some(kind)) = (c.closed_at, c.closed_by, c.closed_with) {
        let px = x(at.as_secs_f64());
        let colour = match (kind, by) {
            (CloseKind::Rst, _) => "#d32f2f",
            (_, Role::Client) => "#1565c0",
            (_, Role::Server) => "#ef6c00",
        };
        let mark = match kind {
            CloseKind::Fin => format!(
                r#"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2">"#,
                y + 1.0,
                y + LANE - 1.0
            ),
            CloseKind::Rst => format!(
                r#"<path d="M{:.1},{:.1} l8,8 m0,-8 l-8,8" stroke="{colour}" stroke-width="2">"#,
                px - 4.0,
                mid - 4.0
            ),
        };
        let tag = if kind == CloseKind::Fin {
            "line"
        } else {
            "path"
        };
        let _ = writeln!(
            s,
            "{mark}<title>{} {} first</title></{tag}>",
            by.as_str(),
            kind.flag()
        );
    }
    s.push_str("</g>\n");
}

/// `--format timeline`: the same timeline in the terminal, one line per
/// connection (folded past [`MAX_LANES`] as the SVG folds): `─` while the
/// connection is open, `█` while a request that reused it is in flight,
/// `▓` for the request that opened it, `▲` its SYN, `|` a FIN and `x` an
/// RST (upper case: the server's), then the new connection's cause.
pub fn write_timeline(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    const COLS: usize = 72;
    let mut conns: Vec<&ConnectionRecord> = report.connections.iter().collect();
    conns.sort_by_key(|c| (c.client.ip(), c.server, c.first_seen, c.stream));
    let mut by_stream: std::collections::HashMap<u64, Vec<&RequestRecord>> = Default::default();
    for r in &report.requests {
        by_stream.entry(r.stream).or_default().push(r);
    }
    let t0 = conns.iter().map(|c| c.first_seen.0).min().unwrap_or(0);
    let t1 = conns
        .iter()
        .map(|c| c.last_seen.0)
        .chain(
            report
                .requests
                .iter()
                .filter_map(|r| r.completed.map(|t| t.0)),
        )
        .max()
        .unwrap_or(t0);
    let span = (t1 - t0).max(1) as f64;
    let col = |t: i64| (((t - t0) as f64 / span) * (COLS - 1) as f64).round() as usize;
    let per_row = conns.len().div_ceil(MAX_LANES).max(1);
    writeln!(
        out,
        "{} connections, {} requests over {:.3} s ({} per column){}",
        conns.len(),
        report.requests.len(),
        span / 1e6,
        humantime::format_duration(std::time::Duration::from_micros(
            (span / COLS as f64) as u64
        )),
        if per_row > 1 {
            format!("; {per_row} connections folded to a line")
        } else {
            String::new()
        }
    )?;
    writeln!(
        out,
        "  ─ open  ▓ request that opened it  █ reused  ▲ SYN  | FIN  x RST (upper case: the server's)"
    )?;
    for chunk in conns.chunks(per_row) {
        let mut line = vec![' '; COLS];
        let mut cause = None;
        for c in chunk {
            let (a, b) = (col(c.first_seen.0), col(c.last_seen.0));
            for cell in line.iter_mut().take(b + 1).skip(a) {
                if *cell == ' ' {
                    *cell = '─';
                }
            }
            for r in by_stream.get(&c.stream).into_iter().flatten() {
                let end = r.completed.or(r.answered).map_or(b, |t| col(t.0));
                let mark = if r.reused { '█' } else { '▓' };
                for cell in line.iter_mut().take(end + 1).skip(col(r.sent.0)) {
                    *cell = mark;
                }
                if let (false, Some(w)) = (r.reused, &r.why_new) {
                    cause.get_or_insert(w.code.as_str());
                }
            }
            if c.syn > 0 {
                line[a] = '▲';
            }
            if let (Some(at), Some(by), Some(kind)) = (c.closed_at, c.closed_by, c.closed_with) {
                let mark = match (kind, by) {
                    (CloseKind::Fin, Role::Client) => '|',
                    (CloseKind::Fin, Role::Server) => 'I',
                    (CloseKind::Rst, Role::Client) => 'x',
                    (CloseKind::Rst, Role::Server) => 'X',
                };
                line[col(at.0).min(COLS - 1)] = mark;
            }
        }
        let first = chunk[0];
        let label = if per_row == 1 {
            format!("{:>5} {}", first.stream, first.client)
        } else {
            format!("{:>5}+ {}", first.stream, first.client.ip())
        };
        writeln!(
            out,
            "{label:<28} {} {}",
            line.into_iter().collect::<String>(),
            cause.unwrap_or("")
        )?;
    }
    Ok(())
}
