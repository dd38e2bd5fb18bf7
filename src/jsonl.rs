//! JSON Lines output (`--format jsonl`): one object per line, each with a
//! `"type"`: `request` and `connection` lines are written as each connection
//! is finalised (its requests first, then the connection), in completion
//! order; a keep-alive connection's answered requests after its first come
//! before that, as they are settled; one `summary` line ends the output. Field names and values are
//! those of the JSON document (docs/report-schema.md), so a line is the
//! document's array element plus its `type`.

use std::io::{self, Write};

use serde::Serialize;

use crate::pipeline::RecordSink;
use crate::report::{AnomalyCount, ConnectionRecord, Report, RequestRecord, SourceInfo, Summary};
use crate::report::{ToolInfo, TrackerStats};

#[derive(Serialize)]
struct Line<'a, T> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// `replay --each`: the file the row came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(flatten)]
    row: &'a T,
}

/// The last line: everything of the document but its rows.
#[derive(Serialize)]
struct SummaryLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    tool: &'a ToolInfo,
    source: &'a SourceInfo,
    summary: &'a Summary,
    anomalies: &'a [AnomalyCount],
    #[serde(skip_serializing_if = "Option::is_none")]
    tracker: &'a Option<TrackerStats>,
}

/// Writes each finished connection as lines to `W` (buffered by the caller).
pub struct JsonlSink<W> {
    out: W,
    /// The line being written: serialized here, then written at once.
    line: Vec<u8>,
}

impl<W: Write + Send> JsonlSink<W> {
    pub fn new(out: W) -> JsonlSink<W> {
        JsonlSink {
            out,
            line: Vec::new(),
        }
    }
}

/// One line, serialized into `buf` and written to `out` in one call (the
/// serializer's many small writes then stay out of `out`'s buffering).
fn line<T: Serialize>(
    out: &mut dyn Write,
    buf: &mut Vec<u8>,
    kind: &'static str,
    source: Option<&str>,
    row: &T,
) -> io::Result<()> {
    buf.clear();
    serde_json::to_writer(&mut *buf, &Line { kind, source, row })?;
    buf.push(b'\n');
    out.write_all(buf)
}

impl<W: Write + Send> RecordSink for JsonlSink<W> {
    fn connection(
        &mut self,
        record: &ConnectionRecord,
        requests: &[RequestRecord],
    ) -> io::Result<()> {
        for r in requests {
            line(&mut self.out, &mut self.line, "request", None, r)?;
        }
        line(&mut self.out, &mut self.line, "connection", None, record)
    }

    fn requests(&mut self, requests: &[RequestRecord]) -> io::Result<()> {
        for r in requests {
            line(&mut self.out, &mut self.line, "request", None, r)?;
        }
        Ok(())
    }

    fn finish(&mut self, report: &Report) -> io::Result<()> {
        write_summary(report, &mut self.out)?;
        self.out.flush()
    }
}

/// The summary line (after the rows a [`JsonlSink`] wrote); for a report
/// assembled whole, its rows first.
pub fn write_summary(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    write_lines(report, None, out)
}

/// The same with every connection, request and diagnosis line tagged with
/// `"source": FILE` (`replay --each`); the summary line's `source` stays the
/// document's object, whose `names` holds the file.
pub fn write_tagged(report: &Report, source: &str, out: &mut dyn Write) -> io::Result<()> {
    write_lines(report, Some(source), out)
}

fn write_lines(report: &Report, source: Option<&str>, out: &mut dyn Write) -> io::Result<()> {
    let mut buf = Vec::new();
    for c in &report.connections {
        line(out, &mut buf, "connection", source, c)?;
    }
    for r in &report.requests {
        line(out, &mut buf, "request", source, r)?;
    }
    for d in &report.diagnosis {
        line(out, &mut buf, "diagnosis", source, d)?;
    }
    serde_json::to_writer(
        &mut *out,
        &SummaryLine {
            kind: "summary",
            tool: &report.tool,
            source: &report.source,
            summary: &report.summary,
            anomalies: &report.anomalies,
            tracker: &report.tracker,
        },
    )?;
    out.write_all(b"\n")
}
