//! Renderers: the terminal table, GitHub-flavoured Markdown and JSON. They
//! only format a [`Report`]; nothing here computes a fact the report lacks.

use std::io::{self, Write};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};

use crate::report::{CauseCode, ConnectionRecord, NewConnectionCode, Report, RequestRecord};

/// Output formats of every report-producing command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables for a terminal.
    Table,
    /// GitHub-flavoured Markdown, to paste into a bug report.
    Markdown,
    /// One JSON document (see docs/report-schema.md).
    Json,
    /// JSON Lines: one object per request and per connection, written as each
    /// connection is finalised, then one summary line; memory stays flat
    /// however large the capture.
    Jsonl,
    /// The verdict and the totals only: one screen, however large the capture.
    Summary,
    /// A timeline picture (SVG): one lane per connection, a bar per request
    /// coloured by reuse and cause; use with -o FILE.svg.
    Svg,
    /// The same timeline in the terminal: one line per connection.
    Timeline,
    /// One self-contained HTML page: the verdict, the timeline and tables
    /// that sort on a click; use with -o FILE.html.
    Html,
    /// Two Parquet tables, DIR/connections.parquet and DIR/requests.parquet,
    /// every row tagged with its source; needs -o DIR (see docs/fleet.md).
    Parquet,
}

/// How many request rows the table and Markdown formats print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RequestRows {
    /// Every request up to 200, else one summary row per connection.
    Auto,
    /// Every request, however many.
    All,
    /// One summary row per connection.
    Summary,
}

/// Above this many requests, `auto` prints one row per connection.
const AUTO_REQUEST_ROWS: usize = 200;

#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    pub format: Format,
    pub requests: RequestRows,
}

pub fn write_report(
    report: &Report,
    options: &RenderOptions,
    out: &mut dyn Write,
) -> io::Result<()> {
    match options.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report)?;
            writeln!(out)
        }
        Format::Table => write_text(report, Some(options.requests), out, false),
        Format::Markdown => write_text(report, Some(options.requests), out, true),
        Format::Summary => write_text(report, None, out, false),
        // The rows went out as they completed; the summary line ends them.
        Format::Jsonl => crate::jsonl::write_summary(report, out),
        Format::Svg => crate::svg::write_svg(report, out),
        Format::Timeline => crate::svg::write_timeline(report, out),
        Format::Html => crate::html::write_html(report, options.requests, out),
        // Two files, not one stream: `cli::emit` writes them (crate::fleet).
        Format::Parquet => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--format parquet needs -o DIR",
        )),
    }
}

/// The capture's start, for relative times in tables (the first request's
/// when nothing was captured).
pub(crate) fn origin(report: &Report) -> f64 {
    let t0 = report
        .connections
        .iter()
        .map(|c| c.first_seen.as_secs_f64())
        .chain(report.requests.iter().map(|r| r.sent.as_secs_f64()))
        .fold(f64::INFINITY, f64::min);
    if t0.is_finite() {
        t0
    } else {
        0.0
    }
}

/// One line on what `audit` ran, how it ended and whose packets these are.
fn audit_note(a: &crate::report::AuditReport) -> String {
    let ended = match (a.exit_code, a.signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "not started".to_string(),
    };
    let user = a
        .user
        .as_ref()
        .map_or_else(String::new, |u| format!(", as {u}"));
    let whose = if a.may_include_other_processes {
        "MAY INCLUDE OTHER PROCESSES: packets chosen by a filter, not by process".to_string()
    } else {
        let excluded = a.excluded_packets.map_or_else(String::new, |n| {
            format!("; {} of other processes excluded", count(n, "packet"))
        });
        format!("only its packets (cgroup v2 + nftables + NFLOG{excluded})")
    };
    let mut note = format!(
        "Audit of `{}` ({ended}{user}): {whose}.",
        crate::live::audit::shell_words(&a.command)
    );
    if a.left_running > 0 {
        note.push_str(&format!(
            " {} still running at its end: their later packets are not seen.",
            count(a.left_running as u64, "process")
        ));
    }
    if a.interrupted {
        note.push_str(" Interrupted by a signal.");
    }
    note
}

/// What a live run adds to the text report: how requests were attributed, and
/// anything the client saw go wrong.
pub(crate) fn client_notes(report: &Report) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(a) = &report.audit {
        notes.push(audit_note(a));
    }
    let Some(c) = &report.client else {
        return notes;
    };
    match c.attribution {
        "client-only" => notes.push(
            "CLIENT-SIDE ATTRIBUTION ONLY (--no-capture): nothing was captured; a stream is \
             one local socket of the client, numbered in order of first use."
                .to_string(),
        ),
        "port" => notes.push(
            "Requests attributed by the client's local port (the packets did not show them, \
             e.g. TLS)."
                .to_string(),
        ),
        _ => {}
    }
    if c.disagreements > 0 {
        notes.push(format!(
            "WARNING: {} carried their tag on another connection than their local \
             port says (see client.requests[].disagreement in --format json).",
            count(c.disagreements, "request")
        ));
    }
    if c.errors > 0 {
        notes.push(format!(
            "{} failed on the client side.",
            count(c.errors, "request")
        ));
    }
    if c.interrupted {
        notes.push("Interrupted: not every request was issued.".to_string());
    }
    notes
}

fn new_table(markdown: bool) -> Table {
    let mut t = Table::new();
    if markdown {
        t.load_style(comfy_table::presets::ASCII_MARKDOWN);
    } else {
        t.load_style(UTF8_FULL_CONDENSED);
        t.set_content_arrangement(ContentArrangement::Dynamic);
    }
    t
}

fn right(s: impl ToString) -> Cell {
    Cell::new(s.to_string()).set_alignment(CellAlignment::Right)
}

pub(crate) fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The text formats; `rows: None` leaves the tables out (`--format summary`).
fn write_text(
    report: &Report,
    rows: Option<RequestRows>,
    out: &mut dyn Write,
    markdown: bool,
) -> io::Result<()> {
    let src = &report.source;
    if markdown {
        writeln!(out, "## conntrace report\n")?;
        writeln!(
            out,
            "Source: {} `{}`{} — {}, {} TCP, link types {}\n",
            src.kind,
            src.names.join("`, `"),
            src.filter
                .as_ref()
                .map_or_else(String::new, |f| format!(" (filter `{f}`)")),
            count(src.packets, "frame"),
            src.tcp_packets,
            src.link_types.join(", ")
        )?;
        if let Some(p) = &report.probe {
            writeln!(out, "### Probe of {}\n", p.url)?;
            for line in probe_lines(p) {
                writeln!(out, "- {line}")?;
            }
            writeln!(out)?;
        }
        writeln!(out, "{}\n", verdict(report))?;
        for d in diagnosis_lines(report) {
            writeln!(out, "- {d}")?;
        }
        if !report.diagnosis.is_empty() {
            writeln!(out)?;
        }
        for note in client_notes(report) {
            writeln!(out, "{note}\n")?;
        }
        if report.source.kind != "client-only" {
            writeln!(out, "### Connections\n")?;
        }
    } else {
        if let Some(p) = &report.probe {
            writeln!(out, "probe of {} ({}):", p.url, p.target)?;
            for line in probe_lines(p) {
                writeln!(out, "  {line}")?;
            }
            writeln!(out)?;
        }
        writeln!(out, "{}", verdict(report))?;
        for d in diagnosis_lines(report) {
            writeln!(out, "  {d}")?;
        }
        for note in client_notes(report) {
            writeln!(out, "{note}")?;
        }
    }
    if let Some(rows) = rows {
        write_tables(report, rows, out, markdown)?;
    }
    write_totals(report, out, markdown)?;
    if let Some(s) = &report.sockets {
        for line in sockets_lines(s) {
            writeln!(out, "{}{line}", if markdown { "\n" } else { "" })?;
        }
    }
    Ok(())
}

/// A span given in milliseconds, for a sentence: "800 ms", "1.5 s", "90 s",
/// "5 min".
pub(crate) fn human_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 120_000.0 {
        format!("{} s", ms / 1000.0)
    } else {
        format!("{} min", ms / 60_000.0)
    }
}

/// The probe's numbers, how each was read, and its advice.
pub(crate) fn probe_lines(p: &crate::report::ProbeReport) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(idle) = &p.idle {
        let announced = idle.announced_timeout_s.map_or_else(String::new, |s| {
            format!("; announced Keep-Alive: timeout={s}")
        });
        lines.push(match p.idle_timeout_ms {
            Some(t) => format!("idle timeout: {:.0} ms ({}{announced})", t, idle.detail),
            None => format!("idle timeout: not found ({}{announced})", idle.detail),
        });
    }
    if !p.reuse.is_empty() {
        let gaps: Vec<String> = p
            .reuse
            .iter()
            .map(|r| format!("{} {}", human_ms(r.gap_ms), r.outcome))
            .collect();
        lines.push(format!("reuse after idle: {}", gaps.join(", ")));
    }
    if let Some(d) = &p.silent_drop {
        lines.push(format!(
            "DROPPED SILENTLY: idle connections stop being answered between {} and {} of idle, with no FIN or RST (a middlebox, a NAT or a load balancer forgetting them); the advice below keeps them under {}",
            human_ms(d.alive_ms),
            human_ms(d.dead_ms),
            human_ms(d.alive_ms)
        ));
    }
    if let Some(r) = &p.requests {
        let announced = r
            .announced_max
            .map_or_else(String::new, |m| format!("; announced Keep-Alive: max={m}"));
        lines.push(match p.requests_per_connection {
            Some(n) => format!("requests per connection: {n} ({}{announced})", r.detail),
            None => format!(
                "requests per connection: not found ({}{announced})",
                r.detail
            ),
        });
    }
    if let Some(h) = &p.h2 {
        lines.push(if h.speaks_h2 {
            let streams = h.max_concurrent_streams.map_or_else(
                || "no stream limit announced".to_string(),
                |n| format!("{n} streams at once"),
            );
            let ping = match h.ping_rtt_ms {
                Some(t) => format!("PING answered in {t:.1} ms"),
                None => "PING not answered".to_string(),
            };
            let idle = h
                .idle_timeout_ms
                .map_or_else(String::new, |t| format!("idle timeout {t:.0} ms; "));
            format!("HTTP/2: {streams}, {ping}; {idle}{}", h.detail)
        } else {
            format!("HTTP/2: {}", h.detail)
        });
    }
    for a in &p.advice {
        lines.push(format!("{} ({}): {}", a.client, a.setting, a.text));
    }
    lines
}

fn write_tables(
    report: &Report,
    rows: RequestRows,
    out: &mut dyn Write,
    markdown: bool,
) -> io::Result<()> {
    if report.source.kind != "client-only" {
        writeln!(out, "{}", connections_table(report, markdown))?;
    }
    if !report.requests.is_empty() {
        if markdown {
            writeln!(out, "\n### Requests\n")?;
        } else {
            writeln!(out)?;
        }
        let per_request = match rows {
            RequestRows::All => true,
            RequestRows::Summary => false,
            RequestRows::Auto => report.requests.len() <= AUTO_REQUEST_ROWS,
        };
        if per_request {
            writeln!(out, "{}", requests_table(report, markdown))?;
        } else {
            writeln!(out, "{}", requests_per_connection(report, markdown))?;
            writeln!(
                out,
                "({}: one row per connection; --rows all prints every request)",
                count(report.requests.len() as u64, "request")
            )?;
        }
    }
    Ok(())
}

pub(crate) fn write_totals(report: &Report, out: &mut dyn Write, markdown: bool) -> io::Result<()> {
    let s = &report.summary;
    let src = &report.source;
    if markdown {
        writeln!(out, "\n### Totals\n")?;
    } else {
        writeln!(out)?;
    }
    let bullet = if markdown { "- " } else { "" };
    writeln!(
        out,
        "{bullet}{}, {} ({} reused a connection)",
        count(s.connections, "connection"),
        count(s.requests, "request"),
        s.reused_requests
    )?;
    if src.kind == "client-only" {
        return writeln!(
            out,
            "{bullet}nothing captured (--no-capture): no packet, handshake or close is known"
        );
    }
    writeln!(
        out,
        "{bullet}SYN {} (client) / SYN+ACK {} (server); FIN {} (client {}, server {}); RST {} (client {}, server {})",
        s.syn, s.syn_ack, s.fin, s.fin_client, s.fin_server, s.rst, s.rst_client, s.rst_server
    )?;
    writeln!(
        out,
        "{bullet}closed by client: {}, by server: {}, not closed in the capture: {}",
        s.closed_by_client, s.closed_by_server, s.not_closed
    )?;
    writeln!(
        out,
        "{bullet}frames: {} read, {} TCP, {} other, {} not understood{}",
        src.packets,
        src.tcp_packets,
        src.non_tcp_packets,
        src.anomalies,
        src.dropped
            .map_or_else(String::new, |d| format!(", {d} dropped by the capture"))
    )?;
    for a in &report.anomalies {
        writeln!(
            out,
            "{bullet}  {} × {} (first: frame {})",
            a.count, a.reason, a.first_frame
        )?;
    }
    if let Some(t) = &report.tracker {
        writeln!(
            out,
            "{bullet}let go before their end: {} idle past --idle-timeout, {} ({} early, past --max-unanswered), {} closed before the end of --close-grace (past --max-closing); {} after their connection was finalised{}",
            t.expired_idle,
            count(t.expired_unanswered, "unanswered SYN"),
            t.early_dropped,
            t.grace_cut,
            match t.late_packets {
                1 => "1 packet came".to_string(),
                n => format!("{n} packets came"),
            },
            if t.late_packets > 0 {
                " (counted in the frames, in no connection: raise --close-grace or --idle-timeout)"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

/// Per client host and server: what happened, then what to change for each
/// cause that cost connections.
pub(crate) fn diagnosis_lines(report: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    for d in &report.diagnosis {
        lines.push(format!("{} → {}: {}", d.client, d.server, d.verdict));
        for a in &d.advice {
            lines.push(format!(
                "  fix ({}, {}): {}",
                a.code,
                count(a.connections, "connection"),
                a.text
            ));
        }
    }
    lines
}

/// One sentence answering the question the tool exists for.
pub fn verdict(report: &Report) -> String {
    let s = &report.summary;
    if s.requests == 0 {
        return format!(
            "{} TCP connection{}; no HTTP requests seen.",
            s.connections,
            plural(s.connections)
        );
    }
    let new = s.requests - s.reused_requests;
    let why: Vec<String> = s
        .new_connection_reasons
        .iter()
        .map(|(reason, n)| format!("{n} {}", reason_phrase(reason)))
        .collect();
    format!(
        "{} request{} over {} connection{}: {} reused a connection, {} opened a new one{}.",
        s.requests,
        plural(s.requests),
        s.connections,
        plural(s.connections),
        s.reused_requests,
        new,
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", why.join(", "))
        }
    )
}

fn reason_phrase(reason: &str) -> &str {
    match reason {
        "first" => "first to their server",
        "idle_not_reused" => "while an idle connection stayed unused",
        "all_busy" => "because every open connection was busy",
        "previous_closed" => "because the previous connection was closed",
        other => other,
    }
}

/// A table cell's worth of `why_new`.
pub(crate) fn why_new_cell(report: &Report, r: &RequestRecord) -> String {
    let Some(why) = &r.why_new else {
        return String::new();
    };
    if why.code == CauseCode::First {
        return "first to server".to_string();
    }
    // The cause, and the state at the SYN in a few words (the JSON's
    // `detail`, `cause` and `evidence` say the rest).
    let state = match (why.reason, why.previous_stream) {
        (NewConnectionCode::IdleNotReused, Some(p)) => format!("stream {p} idle"),
        (NewConnectionCode::AllBusy, _) => "all open busy".to_string(),
        (NewConnectionCode::PreviousClosed, Some(p)) => {
            match report.connections.iter().find(|c| c.stream == p) {
                Some(c) => format!("stream {p}: {}", closed_text(c)),
                None => format!("stream {p} closed"),
            }
        }
        (other, _) => other.to_string(),
    };
    format!("{} ({state})", why.code)
}

/// "1 connection", "2 connections": a count and its noun, plural unless one.
pub fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", plural(n))
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

pub(crate) fn closed_text(c: &ConnectionRecord) -> String {
    match (c.closed_by, c.closed_with) {
        (Some(by), Some(how)) => format!("{by} {}", how.flag()),
        _ => "open".to_string(),
    }
}

fn connections_table(report: &Report, markdown: bool) -> Table {
    let t0 = origin(report);
    let mut t = new_table(markdown);
    t.set_header(vec![
        "stream",
        "client",
        "server",
        "proto",
        "reqs",
        "start s",
        "dur ms",
        "SYN",
        "SYN+ACK",
        "FIN c/s",
        "RST c/s",
        "pkts c/s",
        "closed by",
        "state",
        "history",
    ]);
    for c in &report.connections {
        t.add_row(vec![
            right(c.stream),
            Cell::new(c.client),
            Cell::new(c.server),
            Cell::new(c.protocol.as_str()),
            right(opt(c.requests)),
            right(format!("{:.6}", c.first_seen.as_secs_f64() - t0)),
            right(format!(
                "{:.3}",
                (c.last_seen.as_secs_f64() - c.first_seen.as_secs_f64()) * 1000.0
            )),
            right(c.syn),
            right(c.syn_ack),
            right(format!("{}/{}", c.fin_client, c.fin_server)),
            right(format!("{}/{}", c.rst_client, c.rst_server)),
            right(format!("{}/{}", c.packets_client, c.packets_server)),
            Cell::new(closed_text(c)),
            Cell::new(c.state),
            Cell::new(&c.history),
        ]);
    }
    t
}

fn requests_table(report: &Report, markdown: bool) -> Table {
    let t0 = origin(report);
    let mut t = new_table(markdown);
    t.set_header(vec![
        "time s",
        "stream",
        "depth",
        "connection",
        "why new",
        "method",
        "target",
        "status",
        "latency ms",
        "tag",
    ]);
    for r in &report.requests {
        t.add_row(vec![
            right(format!("{:.6}", r.sent.as_secs_f64() - t0)),
            right(r.stream),
            right(r.depth),
            Cell::new(reuse_mark(r)),
            Cell::new(why_new_cell(report, r)),
            Cell::new(&r.method),
            Cell::new(&r.target),
            right(opt(r.status)),
            right(opt(r.answered.map(|a| {
                format!("{:.3}", (a.as_secs_f64() - r.sent.as_secs_f64()) * 1000.0)
            }))),
            Cell::new(opt(r.tag.as_deref())),
        ]);
    }
    t
}

pub(crate) fn reuse_mark(r: &RequestRecord) -> &'static str {
    if r.reused {
        "reused"
    } else {
        "NEW"
    }
}

fn requests_per_connection(report: &Report, markdown: bool) -> Table {
    let mut t = new_table(markdown);
    t.set_header(vec![
        "stream",
        "requests",
        "first target",
        "last target",
        "answered",
        "statuses",
    ]);
    let mut by_stream: std::collections::BTreeMap<u64, Vec<&RequestRecord>> =
        std::collections::BTreeMap::new();
    for r in &report.requests {
        by_stream.entry(r.stream).or_default().push(r);
    }
    for (stream, mut reqs) in by_stream {
        reqs.sort_by_key(|r| r.depth);
        let mut statuses: std::collections::BTreeMap<String, u64> = Default::default();
        for r in &reqs {
            *statuses.entry(opt(r.status)).or_default() += 1;
        }
        let statuses: Vec<String> = statuses.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        t.add_row(vec![
            right(stream),
            right(reqs.len()),
            Cell::new(&reqs[0].target),
            Cell::new(&reqs[reqs.len() - 1].target),
            right(reqs.iter().filter(|r| r.answered.is_some()).count()),
            Cell::new(statuses.join(" ")),
        ]);
    }
    t
}

/// One line per server, then the totals by state.
pub fn sockets_lines(r: &crate::report::SocketsReport) -> Vec<String> {
    let states = |m: &std::collections::BTreeMap<&'static str, u64>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut out = Vec::new();
    let what = r.filter.as_ref().map_or_else(
        || "all TCP sockets".to_string(),
        |f| format!("TCP sockets to {f}"),
    );
    out.push(format!("{what}: {} ({})", r.total, states(&r.by_state)));
    for s in &r.servers {
        let mut line = format!("  to {}: {}", s.server, states(&s.by_state));
        if let Some(n) = s.ephemeral_ports {
            if s.time_wait_ports > 0 {
                line.push_str(&format!(
                    "; {} of {n} local ports to {} are in TIME-WAIT",
                    s.time_wait_ports, s.server
                ));
            }
        }
        if s.close_wait > 0 {
            line.push_str(&format!(
                "; {} in CLOSE-WAIT: the server closed them and this host never did (a socket leak if it lasts)",
                s.close_wait
            ));
        }
        out.push(line);
    }
    out
}
