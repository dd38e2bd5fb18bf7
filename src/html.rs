//! `--format html`: one self-contained page a person opens in a browser or
//! attaches to a bug report. The verdict and the fix per client first, then
//! the timeline (the SVG of [`crate::svg`], inline), then the connections and
//! requests as tables that sort on a click on their heading, with a filter
//! box, and the totals. Everything is inline (style, picture, the few lines
//! of script): the page asks the network for nothing.
//!
//! A table sorts by the `data-v` of its cells (the number behind a rounded
//! figure) and a heading marked `data-num` compares numerically. The page's
//! address may carry a sort, `#sort=TABLE.COLUMN[.desc]` (for example
//! `report.html#sort=requests.latency.desc`), applied when it opens, so a
//! link can show a report already sorted.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::render::{self, RequestRows};
use crate::report::{ConnectionRecord, Report, RequestRecord};

/// Up to this many requests, `--rows auto` lists every request; beyond,
/// one row per connection (as the table format does past its own limit).
const AUTO_REQUEST_ROWS: usize = 20_000;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One heading: the key a `#sort=` names, whether it sorts as a number, and
/// the text shown.
struct Col(&'static str, bool, &'static str);

/// One cell: the text shown and, when it differs, the value it sorts by.
struct Td(String, Option<String>);

fn td(text: impl ToString) -> Td {
    Td(text.to_string(), None)
}

fn num(shown: String, value: impl ToString) -> Td {
    Td(shown, Some(value.to_string()))
}

fn table(s: &mut String, id: &str, cols: &[Col], rows: impl Iterator<Item = Vec<Td>>) {
    let _ = write!(
        s,
        r#"<p class="filter"><input type="search" placeholder="filter rows" data-table="{id}" aria-label="filter the {id} table"> <span class="count" id="{id}-count"></span></p>
<table class="sortable" id="{id}"><thead><tr>"#
    );
    for Col(key, numeric, text) in cols {
        let _ = write!(
            s,
            r#"<th data-key="{key}"{} title="sort by {}">{}</th>"#,
            if *numeric { " data-num" } else { "" },
            esc(text),
            esc(text)
        );
    }
    s.push_str("</tr></thead><tbody>\n");
    for row in rows {
        s.push_str("<tr>");
        for Td(text, value) in row {
            match value {
                Some(v) => {
                    let _ = write!(s, r#"<td data-v="{}">{}</td>"#, esc(&v), esc(&text));
                }
                None => {
                    let _ = write!(s, "<td>{}</td>", esc(&text));
                }
            }
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
}

fn ms(from: f64, to: f64) -> Td {
    let v = (to - from) * 1000.0;
    num(format!("{v:.3}"), v)
}

fn connection_row(c: &ConnectionRecord, t0: f64) -> Vec<Td> {
    let start = c.first_seen.as_secs_f64() - t0;
    vec![
        num(c.stream.to_string(), c.stream),
        td(c.client),
        td(c.server),
        td(c.protocol.as_str()),
        num(render::opt(c.requests), c.requests.map_or(-1, i64::from)),
        num(format!("{start:.6}"), start),
        ms(c.first_seen.as_secs_f64(), c.last_seen.as_secs_f64()),
        num(c.syn.to_string(), c.syn),
        num(c.syn_ack.to_string(), c.syn_ack),
        num(
            format!("{}/{}", c.fin_client, c.fin_server),
            c.fin_client + c.fin_server,
        ),
        num(
            format!("{}/{}", c.rst_client, c.rst_server),
            c.rst_client + c.rst_server,
        ),
        num(
            format!("{}/{}", c.packets_client, c.packets_server),
            c.packets_client + c.packets_server,
        ),
        td(render::closed_text(c)),
        td(c.state),
        td(&c.history),
        td(c.unused.as_ref().map_or("", |u| u.code.as_str())),
    ]
}

fn request_row(report: &Report, r: &RequestRecord, t0: f64) -> Vec<Td> {
    let sent = r.sent.as_secs_f64();
    vec![
        num(format!("{:.6}", sent - t0), sent - t0),
        num(r.stream.to_string(), r.stream),
        num(r.depth.to_string(), r.depth),
        td(render::reuse_mark(r)),
        td(render::why_new_cell(report, r)),
        td(&r.method),
        td(&r.target),
        num(render::opt(r.status), r.status.map_or(-1, i32::from)),
        match r.answered {
            Some(a) => ms(sent, a.as_secs_f64()),
            None => num("-".to_string(), -1),
        },
        td(render::opt(r.tag.as_deref())),
    ]
}

/// Writes the page for `report`; `rows` chooses between every request and
/// one row per connection, as for the table format.
pub fn write_html(report: &Report, rows: RequestRows, out: &mut dyn Write) -> io::Result<()> {
    let verdict = render::verdict(report);
    let src = &report.source;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>conntrace: {}</title>
<style>{STYLE}</style></head><body>
<h1>conntrace report</h1>
<p class="source">{} <code>{}</code>{}: {} frames, {} TCP, link types {}</p>
<section id="verdict"><p class="verdict">{}</p>
"#,
        esc(&verdict),
        esc(src.kind),
        esc(&src.names.join(", ")),
        src.filter.as_ref().map_or_else(String::new, |f| format!(
            " (filter <code>{}</code>)",
            esc(f)
        )),
        src.packets,
        src.tcp_packets,
        esc(&src.link_types.join(", ")),
        esc(&verdict),
    );
    let diagnosis = render::diagnosis_lines(report);
    if !diagnosis.is_empty() {
        s.push_str("<ul class=\"diagnosis\">\n");
        for line in diagnosis {
            let class = if line.starts_with("  fix") {
                " class=\"fix\""
            } else {
                ""
            };
            let _ = writeln!(s, "<li{class}>{}</li>", esc(line.trim_start()));
        }
        s.push_str("</ul>\n");
    }
    for note in render::client_notes(report) {
        let _ = writeln!(s, "<p class=\"note\">{}</p>", esc(&note));
    }
    s.push_str("</section>\n");
    if let Some(p) = &report.probe {
        let _ = writeln!(
            s,
            "<section id=\"probe\"><h2>Probe of {}</h2><ul>",
            esc(&p.url)
        );
        for line in render::probe_lines(p) {
            let _ = writeln!(s, "<li>{}</li>", esc(&line));
        }
        s.push_str("</ul></section>\n");
    }

    if !report.connections.is_empty() {
        s.push_str("<section id=\"timeline\"><h2>Timeline</h2>\n");
        let mut svg = Vec::new();
        crate::svg::write_svg(report, &mut svg)?;
        let svg = String::from_utf8_lossy(&svg);
        // The XML declaration has no place inside an HTML document.
        let svg = svg
            .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
            .unwrap_or(&svg);
        s.push_str(svg.trim_start());
        s.push_str("</section>\n");
    }

    let t0 = render::origin(report);
    if src.kind != "client-only" && !report.connections.is_empty() {
        let _ = writeln!(
            s,
            "<section id=\"connections-section\"><h2>Connections ({})</h2>",
            report.connections.len()
        );
        table(
            &mut s,
            "connections",
            &[
                Col("stream", true, "stream"),
                Col("client", false, "client"),
                Col("server", false, "server"),
                Col("proto", false, "proto"),
                Col("reqs", true, "reqs"),
                Col("start", true, "start s"),
                Col("duration", true, "dur ms"),
                Col("syn", true, "SYN"),
                Col("synack", true, "SYN+ACK"),
                Col("fin", true, "FIN c/s"),
                Col("rst", true, "RST c/s"),
                Col("packets", true, "pkts c/s"),
                Col("closed", false, "closed by"),
                Col("state", false, "state"),
                Col("history", false, "history"),
                Col("unused", false, "unused"),
            ],
            report.connections.iter().map(|c| connection_row(c, t0)),
        );
        s.push_str("</section>\n");
    }
    if !report.requests.is_empty() {
        let every = match rows {
            RequestRows::All => true,
            RequestRows::Summary => false,
            RequestRows::Auto => report.requests.len() <= AUTO_REQUEST_ROWS,
        };
        let _ = writeln!(
            s,
            "<section id=\"requests-section\"><h2>Requests ({})</h2>",
            report.requests.len()
        );
        if every {
            table(
                &mut s,
                "requests",
                &[
                    Col("time", true, "time s"),
                    Col("stream", true, "stream"),
                    Col("depth", true, "depth"),
                    Col("connection", false, "connection"),
                    Col("why", false, "why new"),
                    Col("method", false, "method"),
                    Col("target", false, "target"),
                    Col("status", true, "status"),
                    Col("latency", true, "latency ms"),
                    Col("tag", false, "tag"),
                ],
                report.requests.iter().map(|r| request_row(report, r, t0)),
            );
        } else {
            let _ = writeln!(
                s,
                "<p class=\"note\">One row per connection (--rows all lists every request).</p>"
            );
            table(
                &mut s,
                "requests",
                &[
                    Col("stream", true, "stream"),
                    Col("requests", true, "requests"),
                    Col("first", false, "first target"),
                    Col("last", false, "last target"),
                    Col("reused", true, "reused"),
                    Col("answered", true, "answered"),
                ],
                per_connection(report).into_iter(),
            );
        }
        s.push_str("</section>\n");
    }

    s.push_str("<section id=\"totals\"><h2>Totals</h2><ul>\n");
    let mut totals = Vec::new();
    render::write_totals(report, &mut totals, true)?;
    for line in String::from_utf8_lossy(&totals).lines() {
        if let Some(item) = line.strip_prefix("- ") {
            let _ = writeln!(s, "<li>{}</li>", esc(item.trim_start()));
        }
    }
    s.push_str("</ul></section>\n");
    if let Some(sockets) = &report.sockets {
        s.push_str("<section id=\"sockets\"><h2>Sockets</h2><ul>\n");
        for line in render::sockets_lines(sockets) {
            let _ = writeln!(s, "<li>{}</li>", esc(line.trim_start()));
        }
        s.push_str("</ul></section>\n");
    }
    let _ = write!(s, "<script>{SCRIPT}</script>\n</body></html>\n");
    out.write_all(s.as_bytes())
}

fn per_connection(report: &Report) -> Vec<Vec<Td>> {
    let mut by_stream: std::collections::BTreeMap<u64, Vec<&RequestRecord>> = Default::default();
    for r in &report.requests {
        by_stream.entry(r.stream).or_default().push(r);
    }
    by_stream
        .into_iter()
        .map(|(stream, mut reqs)| {
            reqs.sort_by_key(|r| r.depth);
            let reused = reqs.iter().filter(|r| r.reused).count();
            let answered = reqs.iter().filter(|r| r.answered.is_some()).count();
            vec![
                num(stream.to_string(), stream),
                num(reqs.len().to_string(), reqs.len()),
                td(&reqs[0].target),
                td(&reqs[reqs.len() - 1].target),
                num(reused.to_string(), reused),
                num(answered.to_string(), answered),
            ]
        })
        .collect()
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#212121}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.4em 0 .4em}
.source{color:#616161;margin:0 0 1em}
.verdict{font-size:1.1em;font-weight:600;margin:.4em 0}
ul.diagnosis{margin:.3em 0;padding-left:1.2em}li.fix{list-style:none;margin-left:1.2em;color:#1b5e20}
.note{color:#b71c1c}
svg{max-width:100%;height:auto;border:1px solid #e0e0e0}
table{border-collapse:collapse;font-size:12.5px}
th,td{border:1px solid #e0e0e0;padding:2px 6px;text-align:left;white-space:nowrap}
td[data-v]{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f5f5f5;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:' \\25B2'}th[aria-sort=descending]::after{content:' \\25BC'}
tbody tr:nth-child(even){background:#fafafa}
.filter{margin:.3em 0}.count{color:#616161}
";

const SCRIPT: &str = r#"
(function () {
  function value(row, col, numeric) {
    var td = row.cells[col];
    var v = td.hasAttribute('data-v') ? td.getAttribute('data-v') : td.textContent;
    if (!numeric) return v;
    var n = parseFloat(v);
    return isNaN(n) ? -Infinity : n;
  }
  function sort(table, key, descending) {
    var heads = table.tHead.rows[0].cells, col = -1;
    for (var i = 0; i < heads.length; i++) {
      if (heads[i].getAttribute('data-key') === key) col = i;
      heads[i].removeAttribute('aria-sort');
    }
    if (col < 0) return;
    var numeric = heads[col].hasAttribute('data-num');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (r, i) { return [value(r, col, numeric), i, r]; });
    keyed.sort(function (a, b) {
      var c = numeric ? a[0] - b[0] : a[0].localeCompare(b[0]);
      if (descending) c = -c;
      return c || a[1] - b[1];
    });
    keyed.forEach(function (k) { body.appendChild(k[2]); });
    heads[col].setAttribute('aria-sort', descending ? 'descending' : 'ascending');
  }
  function count(table) {
    var rows = table.tBodies[0].rows, shown = 0;
    for (var i = 0; i < rows.length; i++) if (!rows[i].hidden) shown++;
    var out = document.getElementById(table.id + '-count');
    if (out) out.textContent = shown + ' of ' + rows.length + ' rows';
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.addEventListener('click', function () {
        sort(table, th.getAttribute('data-key'), th.getAttribute('aria-sort') === 'ascending');
      });
    });
    count(table);
  });
  Array.prototype.forEach.call(document.querySelectorAll('input[data-table]'), function (input) {
    input.addEventListener('input', function () {
      var table = document.getElementById(input.getAttribute('data-table'));
      var needle = input.value.toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        r.hidden = needle !== '' && r.textContent.toLowerCase().indexOf(needle) < 0;
      });
      count(table);
    });
  });
  var m = /^#sort=([\w-]+)\.([\w-]+)(\.desc)?$/.exec(location.hash);
  if (m) {
    var t = document.getElementById(m[1]);
    if (t && t.classList.contains('sortable')) sort(t, m[2], !!m[3]);
  }
})();
"#;
