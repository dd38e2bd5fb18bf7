//! Reports at fleet scale. `--format parquet -o DIR` writes the rows of one
//! or many reports as two Parquet tables, `DIR/connections.parquet` and
//! `DIR/requests.parquet`, every row tagged with its `source` (the capture
//! file, or `host/interface` for a live capture), for DuckDB, ClickHouse or
//! Spark to query. `replay --each` analyses files independently, several at
//! once, and hands their reports back in input order; with Parquet the files'
//! rows join one dataset in that order, a large file's rows spilled to files
//! of its own inside DIR while it waits for its turn ([`EachDataset`]).
//!
//! The columns are the JSON report's (docs/report-schema.md) flattened: a
//! nested object becomes prefixed columns (`http_...`, `why_new_...`,
//! `unused_...`), nullable when the object or the field may be null; lists
//! (`alpn`, `why_new_evidence`, `http_goaway`) are Parquet LISTs; times are
//! `TIMESTAMP(MICROS, UTC)`. Rows go out in row groups of at most
//! [`ROW_GROUP_ROWS`], Snappy-compressed, so memory stays flat when the rows
//! stream in (`replay -f parquet` hands each finished connection over).

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;

use parquet::basic::Compression;
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::exit::Refused;
use crate::pipeline::{replay_into, Pipeline, RecordSink, ReplayError, ReplayOptions};
use crate::render::Format;
use crate::report::{ConnectionRecord, Report, RequestRecord, SourceInfo};
use crate::wire::Timestamp;

/// Most rows in one row group: what a writer holds before it writes them.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// The two tables' file names inside the output directory.
pub const CONNECTIONS_FILE: &str = "connections.parquet";
pub const REQUESTS_FILE: &str = "requests.parquet";

/// Refuse output options that cannot work, before any work starts:
/// Parquet is two files, so it needs `-o DIR`, and DIR must not be a file.
pub fn check_output(format: Format, output: Option<&Path>) -> Result<(), Refused> {
    if format != Format::Parquet {
        return Ok(());
    }
    match output {
        None => Err(Refused::bad_input(
            "--format parquet needs -o DIR (it writes DIR/connections.parquet and DIR/requests.parquet)",
        )),
        Some(dir) if dir.exists() && !dir.is_dir() => Err(Refused::bad_input(format!(
            "--format parquet -o {}: not a directory (it writes two files into DIR)",
            dir.display()
        ))),
        Some(_) => Ok(()),
    }
}

/// What a report's rows are tagged with: the file(s) it read, or for a live
/// capture `host/interface`.
pub fn source_tag(source: &SourceInfo) -> String {
    let names = source.names.join(",");
    if source.kind == "live" {
        format!("{}/{names}", host_name())
    } else {
        names
    }
}

/// This machine's name, as `hostname` prints it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Write one whole report's rows into `dir`.
pub fn write_report(report: &Report, dir: &Path) -> io::Result<()> {
    let mut tables = ParquetTables::create(dir)?;
    tables.add_report(&source_tag(&report.source), report)?;
    tables.finish()
}

/// The two tables being written.
pub struct ParquetTables {
    connections: TableWriter<ConnectionRecord>,
    requests: TableWriter<RequestRecord>,
}

impl ParquetTables {
    /// Create `dir` if missing, and both files in it (replacing old ones).
    pub fn create(dir: &Path) -> io::Result<ParquetTables> {
        std::fs::create_dir_all(dir).map_err(|e| in_file(dir, e))?;
        Ok(ParquetTables {
            connections: TableWriter::create(
                &dir.join(CONNECTIONS_FILE),
                "connection",
                connection_columns(),
            )?,
            requests: TableWriter::create(&dir.join(REQUESTS_FILE), "request", request_columns())?,
        })
    }

    /// One connection and its requests.
    pub fn add(
        &mut self,
        source: &str,
        connection: &ConnectionRecord,
        requests: &[RequestRecord],
    ) -> io::Result<()> {
        self.connections.push(source, connection)?;
        self.add_requests(source, requests)
    }

    /// Requests settled before their connection ends.
    pub fn add_requests(&mut self, source: &str, requests: &[RequestRecord]) -> io::Result<()> {
        for r in requests {
            self.requests.push(source, r)?;
        }
        Ok(())
    }

    /// Every row of a report assembled whole.
    pub fn add_report(&mut self, source: &str, report: &Report) -> io::Result<()> {
        for c in &report.connections {
            self.connections.push(source, c)?;
        }
        for r in &report.requests {
            self.requests.push(source, r)?;
        }
        Ok(())
    }

    /// Write the last row groups and both footers.
    pub fn finish(self) -> io::Result<()> {
        self.connections.finish()?;
        self.requests.finish()
    }
}

/// `replay -f parquet` and `watch -f parquet`: rows as connections are
/// finalised, a row group at a time.
pub struct ParquetSink {
    source: String,
    tables: Option<ParquetTables>,
}

impl ParquetSink {
    pub fn create(dir: &Path, source: String) -> io::Result<ParquetSink> {
        Ok(ParquetSink {
            source,
            tables: Some(ParquetTables::create(dir)?),
        })
    }
}

impl RecordSink for ParquetSink {
    fn connection(
        &mut self,
        record: &ConnectionRecord,
        requests: &[RequestRecord],
    ) -> io::Result<()> {
        match &mut self.tables {
            Some(t) => t.add(&self.source, record, requests),
            None => Ok(()),
        }
    }

    fn requests(&mut self, requests: &[RequestRecord]) -> io::Result<()> {
        match &mut self.tables {
            Some(t) => t.add_requests(&self.source, requests),
            None => Ok(()),
        }
    }

    fn finish(&mut self, _: &Report) -> io::Result<()> {
        match self.tables.take() {
            Some(t) => t.finish(),
            None => Ok(()),
        }
    }
}

fn in_file(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Columns

/// A column's Parquet type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int64,
    Int32,
    Double,
    Bool,
    Str,
    /// INT64 microseconds since the epoch, `TIMESTAMP(MICROS, true)`.
    Time,
}

impl Kind {
    fn schema(self, name: &str) -> String {
        match self {
            Kind::Int64 => format!("int64 {name}"),
            Kind::Int32 => format!("int32 {name}"),
            Kind::Double => format!("double {name}"),
            Kind::Bool => format!("boolean {name}"),
            Kind::Str => format!("binary {name} (UTF8)"),
            Kind::Time => format!("int64 {name} (TIMESTAMP(MICROS,true))"),
        }
    }
}

/// How a column nests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Required,
    Optional,
    /// A LIST of non-null elements; `optional`: the list itself may be null.
    List {
        optional: bool,
    },
    /// One field of a nullable LIST of structs named `group` (the fields of
    /// one group are consecutive).
    StructList {
        group: &'static str,
    },
}

impl Shape {
    fn max_def(self) -> i16 {
        match self {
            Shape::Required => 0,
            Shape::Optional => 1,
            Shape::List { optional } => 1 + i16::from(optional),
            Shape::StructList { .. } => 2,
        }
    }

    fn max_rep(self) -> i16 {
        match self {
            Shape::Required | Shape::Optional => 0,
            Shape::List { .. } | Shape::StructList { .. } => 1,
        }
    }
}

/// One value of a row, before it is laid out in its column.
#[derive(Debug, Clone, PartialEq)]
enum Cell<'a> {
    Null,
    Int(i64),
    Double(f64),
    Bool(bool),
    Str(Cow<'a, str>),
    Time(Timestamp),
    List(Vec<Cell<'a>>),
}

impl From<u64> for Cell<'_> {
    fn from(v: u64) -> Self {
        Cell::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Cell<'_> {
    fn from(v: u32) -> Self {
        Cell::Int(i64::from(v))
    }
}
impl From<u16> for Cell<'_> {
    fn from(v: u16) -> Self {
        Cell::Int(i64::from(v))
    }
}
impl From<f64> for Cell<'_> {
    fn from(v: f64) -> Self {
        Cell::Double(v)
    }
}
impl From<bool> for Cell<'_> {
    fn from(v: bool) -> Self {
        Cell::Bool(v)
    }
}
impl From<Timestamp> for Cell<'_> {
    fn from(v: Timestamp) -> Self {
        Cell::Time(v)
    }
}
impl<'a> From<&'a str> for Cell<'a> {
    fn from(v: &'a str) -> Self {
        Cell::Str(Cow::Borrowed(v))
    }
}
impl<'a> From<&'a String> for Cell<'a> {
    fn from(v: &'a String) -> Self {
        Cell::Str(Cow::Borrowed(v))
    }
}
impl From<String> for Cell<'_> {
    fn from(v: String) -> Self {
        Cell::Str(Cow::Owned(v))
    }
}
impl<'a, T: Into<Cell<'a>>> From<Option<T>> for Cell<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Cell::Null, Into::into)
    }
}

fn list<'a, T: Into<Cell<'a>>>(items: impl IntoIterator<Item = T>) -> Cell<'a> {
    Cell::List(items.into_iter().map(Into::into).collect())
}

/// One column of a table: its name, type, nesting, and how a record gives
/// its value.
struct Column<T> {
    name: &'static str,
    kind: Kind,
    shape: Shape,
    get: for<'r> fn(&'r T) -> Cell<'r>,
}

fn col<T>(
    name: &'static str,
    kind: Kind,
    shape: Shape,
    get: for<'r> fn(&'r T) -> Cell<'r>,
) -> Column<T> {
    Column {
        name,
        kind,
        shape,
        get,
    }
}

use Kind::{Bool as B, Double as F, Int32 as I32, Int64 as I, Str as S, Time as T};
use Shape::{Optional as Opt, Required as Req};

/// A nullable field of the connection's `http` object (null when the object is).
macro_rules! http {
    ($name:literal, $kind:expr, |$h:ident| $e:expr) => {
        col(
            concat!("http_", $name),
            $kind,
            Opt,
            |c: &ConnectionRecord| match &c.http {
                Some($h) => Cell::from($e),
                None => Cell::Null,
            },
        )
    };
}

/// A field of a request's `why_new` object (null when the object is).
macro_rules! why_new {
    ($name:literal, $kind:expr, $shape:expr, |$w:ident| $e:expr) => {
        col(
            concat!("why_new_", $name),
            $kind,
            $shape,
            |r: &RequestRecord| match &r.why_new {
                Some($w) => Cell::from($e),
                None => Cell::Null,
            },
        )
    };
}

const GOAWAY: Shape = Shape::StructList {
    group: "http_goaway",
};

/// The `connections` table: after `source`, the JSON connection object's
/// fields in its order, the addresses also split into ip and port after
/// `client` and `server`.
fn connection_columns() -> Vec<Column<ConnectionRecord>> {
    vec![
        col("stream", I, Req, |c| c.stream.into()),
        col("client", S, Req, |c| c.client.to_string().into()),
        col("server", S, Req, |c| c.server.to_string().into()),
        col("client_ip", S, Req, |c| c.client.ip().to_string().into()),
        col("client_port", I32, Req, |c| c.client.port().into()),
        col("server_ip", S, Req, |c| c.server.ip().to_string().into()),
        col("server_port", I32, Req, |c| c.server.port().into()),
        col("first_seen", T, Req, |c| c.first_seen.into()),
        col("last_seen", T, Req, |c| c.last_seen.into()),
        col("syn", I, Req, |c| c.syn.into()),
        col("syn_ack", I, Req, |c| c.syn_ack.into()),
        col("fin_client", I, Req, |c| c.fin_client.into()),
        col("fin_server", I, Req, |c| c.fin_server.into()),
        col("rst_client", I, Req, |c| c.rst_client.into()),
        col("rst_server", I, Req, |c| c.rst_server.into()),
        col("packets_client", I, Req, |c| c.packets_client.into()),
        col("packets_server", I, Req, |c| c.packets_server.into()),
        col("bytes_client", I, Req, |c| c.bytes_client.into()),
        col("bytes_server", I, Req, |c| c.bytes_server.into()),
        col("payload_client", I, Req, |c| c.payload_client.into()),
        col("payload_server", I, Req, |c| c.payload_server.into()),
        col("handshake_rtt_ms", F, Opt, |c| c.handshake_rtt_ms.into()),
        col("closed_by", S, Opt, |c| {
            c.closed_by.map(|r| r.as_str()).into()
        }),
        col("closed_with", S, Opt, |c| {
            c.closed_with.map(|k| k.as_str()).into()
        }),
        col("closed_at", T, Opt, |c| c.closed_at.into()),
        col("state", S, Req, |c| c.state.as_str().into()),
        col("history", S, Req, |c| (&c.history).into()),
        col("orientation", S, Req, |c| c.orientation.as_str().into()),
        col("protocol", S, Req, |c| c.protocol.as_str().into()),
        col("tls_sni", S, Opt, |c| c.tls_sni.as_ref().into()),
        col("alpn", S, Shape::List { optional: false }, |c| {
            list(&c.alpn)
        }),
        col("requests", I, Opt, |c| c.requests.into()),
        http!("client_close_depth", I, |h| h.client_close_depth),
        http!("server_close_depth", I, |h| h.server_close_depth),
        http!("client_http10_depth", I, |h| h.client_http10_depth),
        http!("server_http10_depth", I, |h| h.server_http10_depth),
        http!("close_delimited_depth", I, |h| h.close_delimited_depth),
        http!("keep_alive_timeout_s", I, |h| h.keep_alive_timeout_s),
        http!("keep_alive_max", I, |h| h.keep_alive_max),
        http!("upgrade", S, |h| h.upgrade.as_ref()),
        http!("upgrade_depth", I, |h| h.upgrade_depth),
        http!("tunnel_depth", I, |h| h.tunnel_depth),
        http!("interim_responses", I, |h| h.interim_responses),
        http!("user_agent", S, |h| h.user_agent.as_ref()),
        http!("h2_max_concurrent_streams", I, |h| {
            h.h2_max_concurrent_streams
        }),
        http!("unmatched_responses", I, |h| h.unmatched_responses),
        http!("h2_start", S, |h| h.h2_start),
        http!("h2_stopped_at_gap", B, |h| h.h2_stopped_at_gap),
        http!("hpack_errors", I, |h| h.hpack_errors),
        http!("push_promises", I, |h| h.push_promises),
        http!("rst_stream_client", I, |h| h.rst_stream_client),
        http!("rst_stream_server", I, |h| h.rst_stream_server),
        col("sender", S, GOAWAY, |c| match &c.http {
            Some(h) => list(h.goaway.iter().map(|g| g.sender)),
            None => Cell::Null,
        }),
        col("last_stream_id", I, GOAWAY, |c| match &c.http {
            Some(h) => list(h.goaway.iter().map(|g| g.last_stream_id)),
            None => Cell::Null,
        }),
        col("error_code", I, GOAWAY, |c| match &c.http {
            Some(h) => list(h.goaway.iter().map(|g| g.error_code)),
            None => Cell::Null,
        }),
        http!("midstream", B, |h| h.midstream),
        http!("stream_gaps_client", I, |h| h.stream_gaps_client),
        http!("stream_gaps_server", I, |h| h.stream_gaps_server),
        http!("missing_bytes_client", I, |h| h.missing_bytes_client),
        http!("missing_bytes_server", I, |h| h.missing_bytes_server),
        http!("resyncs", I, |h| h.resyncs),
        http!("malformed_requests", I, |h| h.malformed_requests),
        http!("framing_errors", I, |h| h.framing_errors),
        http!("incomplete_messages", I, |h| h.incomplete_messages),
        http!("oversized_heads", I, |h| h.oversized_heads),
        col("unused_code", S, Opt, |c| {
            c.unused.as_ref().map(|u| u.code.as_str()).into()
        }),
        col("unused_detail", S, Opt, |c| {
            c.unused.as_ref().map(|u| u.detail.as_str()).into()
        }),
    ]
}

/// The `requests` table: after `source`, the JSON request object's fields
/// in its order, `why_new` flattened.
fn request_columns() -> Vec<Column<RequestRecord>> {
    vec![
        col("stream", I, Req, |r| r.stream.into()),
        col("depth", I, Req, |r| r.depth.into()),
        col("reused", B, Req, |r| r.reused.into()),
        col("method", S, Req, |r| r.method.as_ref().into()),
        col("target", S, Req, |r| (&r.target).into()),
        col("host", S, Opt, |r| r.host.as_deref().into()),
        col("status", I32, Opt, |r| r.status.into()),
        col("sent", T, Req, |r| r.sent.into()),
        col("answered", T, Opt, |r| r.answered.into()),
        col("completed", T, Opt, |r| r.completed.into()),
        col("h2_stream", I, Opt, |r| r.h2_stream.into()),
        col("tag", S, Opt, |r| r.tag.as_ref().into()),
        col("seen_in", S, Req, |r| r.seen_in.as_str().into()),
        why_new!("code", S, Opt, |w| w.code.as_str()),
        why_new!("reason", S, Opt, |w| w.reason.as_str()),
        why_new!("previous_stream", I, Opt, |w| w.previous_stream),
        why_new!("detail", S, Opt, |w| w.detail.as_str()),
        why_new!("cause", S, Opt, |w| w.cause.as_ref()),
        col(
            "why_new_evidence",
            S,
            Shape::List { optional: true },
            |r| match &r.why_new {
                Some(w) => list(&w.evidence),
                None => Cell::Null,
            },
        ),
        why_new!("uncertain", S, Opt, |w| w.uncertain.as_ref()),
        why_new!("idle_ms", F, Opt, |w| w.idle_ms),
    ]
}

/// The message type of a table: `source`, then its columns, a LIST of
/// structs opened at its first field and closed after its last.
fn message_type<T>(name: &str, columns: &[Column<T>]) -> String {
    let mut s = format!("message {name} {{\n  required binary source (UTF8);\n");
    let mut open: Option<&str> = None;
    for c in columns {
        let group = match c.shape {
            Shape::StructList { group } => Some(group),
            _ => None,
        };
        if open.is_some() && open != group {
            s.push_str("  } }\n");
        }
        if group.is_some() && open != group {
            s.push_str(&format!(
                "  optional group {} (LIST) {{ repeated group list {{\n",
                group.unwrap_or_default()
            ));
        }
        open = group;
        let leaf = c.kind.schema(c.name);
        match c.shape {
            Shape::Required => s.push_str(&format!("  required {leaf};\n")),
            Shape::Optional => s.push_str(&format!("  optional {leaf};\n")),
            Shape::List { optional } => s.push_str(&format!(
                "  {} group {} (LIST) {{ repeated group list {{ required {}; }} }}\n",
                if optional { "optional" } else { "required" },
                c.name,
                c.kind.schema("element"),
            )),
            Shape::StructList { .. } => s.push_str(&format!("    required {leaf};\n")),
        }
    }
    if open.is_some() {
        s.push_str("  } }\n");
    }
    s.push_str("}\n");
    s
}

// ---------------------------------------------------------------------------
// Writing

/// A column's values of the row group being filled, with their levels.
struct Buffer {
    kind: Kind,
    shape: Shape,
    values: Values,
    def: Vec<i16>,
    rep: Vec<i16>,
}

enum Values {
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Double(Vec<f64>),
    Bool(Vec<bool>),
    /// Strings end to end, and where each ends: one allocation per row
    /// group, sliced without copying when written.
    Str {
        bytes: Vec<u8>,
        ends: Vec<usize>,
    },
}

impl Buffer {
    fn new(kind: Kind, shape: Shape) -> Buffer {
        let values = match kind {
            Kind::Int64 | Kind::Time => Values::Int64(Vec::new()),
            Kind::Int32 => Values::Int32(Vec::new()),
            Kind::Double => Values::Double(Vec::new()),
            Kind::Bool => Values::Bool(Vec::new()),
            Kind::Str => Values::Str {
                bytes: Vec::new(),
                ends: Vec::new(),
            },
        };
        Buffer {
            kind,
            shape,
            values,
            def: Vec::new(),
            rep: Vec::new(),
        }
    }

    /// Lay one row's cell out: its value(s) and, for nullable and repeated
    /// columns, the Dremel definition and repetition levels.
    fn push(&mut self, cell: Cell<'_>) {
        let max_def = self.shape.max_def();
        match (self.shape, cell) {
            (Shape::Required, cell) => self.value(cell),
            (Shape::Optional, Cell::Null) => self.def.push(0),
            (Shape::Optional, cell) => {
                self.def.push(1);
                self.value(cell);
            }
            (Shape::List { .. } | Shape::StructList { .. }, Cell::Null) => {
                debug_assert_eq!(max_def, 2, "a required list has no null");
                self.def.push(0);
                self.rep.push(0);
            }
            (Shape::List { .. } | Shape::StructList { .. }, Cell::List(items)) => {
                if items.is_empty() {
                    self.def.push(max_def - 1);
                    self.rep.push(0);
                }
                for (i, item) in items.into_iter().enumerate() {
                    self.def.push(max_def);
                    self.rep.push(i16::from(i > 0));
                    self.value(item);
                }
            }
            (shape, cell) => debug_assert!(false, "{cell:?} in a {shape:?} column"),
        }
    }

    fn value(&mut self, cell: Cell<'_>) {
        match (&mut self.values, cell) {
            (Values::Int64(v), Cell::Int(n)) => v.push(n),
            (Values::Int64(v), Cell::Time(t)) => v.push(t.0),
            (Values::Int32(v), Cell::Int(n)) => v.push(n.clamp(0, i64::from(i32::MAX)) as i32),
            (Values::Double(v), Cell::Double(x)) => v.push(x),
            (Values::Bool(v), Cell::Bool(b)) => v.push(b),
            (Values::Str { bytes, ends }, Cell::Str(s)) => {
                bytes.extend_from_slice(s.as_bytes());
                ends.push(bytes.len());
            }
            (_, cell) => debug_assert!(false, "{cell:?} in a {:?} column", self.kind),
        }
    }

    fn clear(&mut self) {
        self.def.clear();
        self.rep.clear();
        match &mut self.values {
            Values::Int64(v) => v.clear(),
            Values::Int32(v) => v.clear(),
            Values::Double(v) => v.clear(),
            Values::Bool(v) => v.clear(),
            Values::Str { bytes, ends } => {
                bytes.clear();
                ends.clear();
            }
        }
    }
}

/// One table's file: rows buffered by column, a row group written every
/// [`ROW_GROUP_ROWS`].
struct TableWriter<T> {
    path: PathBuf,
    columns: Vec<Column<T>>,
    /// `source` first, then one per column.
    buffers: Vec<Buffer>,
    rows: usize,
    file: SerializedFileWriter<BufWriter<File>>,
}

impl<T> TableWriter<T> {
    fn create(path: &Path, name: &str, columns: Vec<Column<T>>) -> io::Result<TableWriter<T>> {
        let schema = parse_message_type(&message_type(name, &columns))
            .map_err(|e| in_file(path, format!("schema: {e}")))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let out =
            BufWriter::with_capacity(256 << 10, File::create(path).map_err(|e| in_file(path, e))?);
        let file = SerializedFileWriter::new(out, Arc::new(schema), Arc::new(properties))
            .map_err(|e| in_file(path, e))?;
        let buffers = std::iter::once(Buffer::new(Kind::Str, Shape::Required))
            .chain(columns.iter().map(|c| Buffer::new(c.kind, c.shape)))
            .collect();
        Ok(TableWriter {
            path: path.to_path_buf(),
            columns,
            buffers,
            rows: 0,
            file,
        })
    }

    fn push(&mut self, source: &str, record: &T) -> io::Result<()> {
        self.buffers[0].push(Cell::from(source));
        for (c, b) in self.columns.iter().zip(&mut self.buffers[1..]) {
            b.push((c.get)(record));
        }
        self.rows += 1;
        if self.rows == ROW_GROUP_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Write the buffered rows as one row group.
    fn flush(&mut self) -> io::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let path = self.path.clone();
        let mut group = self.file.next_row_group().map_err(|e| in_file(&path, e))?;
        let mut buffers = self.buffers.iter_mut();
        while let Some(mut column) = group.next_column().map_err(|e| in_file(&path, e))? {
            let Some(b) = buffers.next() else {
                return Err(in_file(&path, "more columns in the schema than buffers"));
            };
            let def = (b.shape.max_def() > 0).then_some(&b.def[..]);
            let rep = (b.shape.max_rep() > 0).then_some(&b.rep[..]);
            let written = match &mut b.values {
                Values::Int64(v) => column.typed::<Int64Type>().write_batch(v, def, rep),
                Values::Int32(v) => column.typed::<Int32Type>().write_batch(v, def, rep),
                Values::Double(v) => column.typed::<DoubleType>().write_batch(v, def, rep),
                Values::Bool(v) => column.typed::<BoolType>().write_batch(v, def, rep),
                Values::Str { bytes, ends } => {
                    let all = bytes::Bytes::from(std::mem::take(bytes));
                    let mut start = 0;
                    let strings: Vec<ByteArray> = ends
                        .iter()
                        .map(|&end| {
                            let s = ByteArray::from(all.slice(start..end));
                            start = end;
                            s
                        })
                        .collect();
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&strings, def, rep)
                }
            };
            written.map_err(|e| in_file(&path, e))?;
            column.close().map_err(|e| in_file(&path, e))?;
            b.clear();
        }
        group.close().map_err(|e| in_file(&path, e))?;
        self.rows = 0;
        Ok(())
    }

    /// Copy every row group of a file written with the same columns (a
    /// spilled part) after the rows written so far, without decoding it.
    fn append(&mut self, part: &Path) -> io::Result<()> {
        self.flush()?;
        let path = self.path.clone();
        let file = File::open(part).map_err(|e| in_file(part, e))?;
        let reader = SerializedFileReader::new(file.try_clone().map_err(|e| in_file(part, e))?)
            .map_err(|e| in_file(part, e))?;
        for g in reader.metadata().row_groups() {
            let mut group = self.file.next_row_group().map_err(|e| in_file(&path, e))?;
            for c in g.columns() {
                let close = ColumnCloseResult {
                    bytes_written: u64::try_from(c.compressed_size()).unwrap_or(0),
                    rows_written: u64::try_from(g.num_rows()).unwrap_or(0),
                    metadata: c.clone(),
                    bloom_filter: None,
                    column_index: None,
                    offset_index: None,
                };
                group
                    .append_column(&file, close)
                    .map_err(|e| in_file(&path, e))?;
            }
            group.close().map_err(|e| in_file(&path, e))?;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.flush()?;
        let path = self.path.clone();
        let mut out = self.file.into_inner().map_err(|e| in_file(&path, e))?;
        io::Write::flush(&mut out).map_err(|e| in_file(&path, e))
    }
}

// ---------------------------------------------------------------------------
// replay --each

/// What each file's pipeline keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Every row (documents, JSON Lines).
    Rows,
    /// The tallies only (`--format summary`).
    Tallies,
}

/// Files a worker may run ahead of the oldest one not yet handed over, per
/// worker: what waits for its turn is bounded, whatever the order they
/// finish in.
const AHEAD_PER_WORKER: usize = 2;

/// Run `work` on each file, up to `available_parallelism` at once, and hand
/// each outcome to `each` in input order (a later file that finished first
/// waits for the earlier ones; no file is started more than
/// [`AHEAD_PER_WORKER`] per worker ahead of the oldest one waited for).
/// When `each` fails, no further file is started and its error is returned.
pub fn replay_each<O, W, F>(files: &[PathBuf], work: W, mut each: F) -> anyhow::Result<()>
where
    O: Send,
    W: Fn(usize, &Path) -> O + Sync,
    F: FnMut(&Path, O) -> anyhow::Result<()>,
{
    let workers = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len())
        .max(1);
    let window = workers * AHEAD_PER_WORKER;
    let next = AtomicUsize::new(0);
    // The index of the oldest file not handed over yet, and whether to stop.
    let turn = (Mutex::new((0usize, false)), Condvar::new());
    let (done, outcomes) = mpsc::channel();
    thread::scope(|scope| {
        for _ in 0..workers {
            let done = done.clone();
            let (next, turn, work) = (&next, &turn, &work);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= files.len() {
                    break;
                }
                let (oldest, moved) = turn;
                let mut state = oldest.lock().unwrap_or_else(|e| e.into_inner());
                while i >= state.0 + window && !state.1 {
                    state = moved.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if state.1 {
                    break;
                }
                drop(state);
                if done.send((i, work(i, &files[i]))).is_err() {
                    break;
                }
            });
        }
        drop(done);
        let (oldest, moved) = &turn;
        let mut waiting: Vec<Option<O>> = (0..files.len()).map(|_| None).collect();
        let mut first = 0;
        for (i, outcome) in outcomes {
            waiting[i] = Some(outcome);
            while let Some(outcome) = waiting.get_mut(first).and_then(Option::take) {
                let handed = each(&files[first], outcome);
                first += 1;
                let mut state = oldest.lock().unwrap_or_else(|e| e.into_inner());
                state.0 = first;
                state.1 = handed.is_err();
                moved.notify_all();
                drop(state);
                handed?;
            }
        }
        Ok(())
    })
}

/// One file's report, as `replay FILE` would make it.
pub fn replay_report(
    path: &Path,
    options: &ReplayOptions,
    keep: Keep,
) -> Result<Report, ReplayError> {
    let pipeline = match keep {
        Keep::Rows => Pipeline::new(&options.pipeline),
        Keep::Tallies => Pipeline::counting(&options.pipeline),
    };
    replay_into(&[path.to_path_buf()], options, pipeline)
}

/// Rows (connections and requests) one file may hold in memory while it
/// waits for its turn; past them, its rows go to Parquet files of its own
/// (spilled) and are copied into the dataset, row group by row group.
pub const SPILL_ROWS: usize = 4096;

/// `replay --each -f parquet`: one dataset of many files, written in input
/// order while the files are read several at once. A small file's rows wait
/// in memory and join the dataset's row groups; a large one's are written as
/// they finish to a spill directory inside DIR (`.conntrace-spill-PID`,
/// removed at the end) and copied from there, so memory stays bounded.
pub struct EachDataset {
    tables: ParquetTables,
    spill: SpillDir,
}

/// One file's rows, waiting for their turn.
#[derive(Debug)]
pub enum Part {
    Rows {
        connections: Vec<ConnectionRecord>,
        requests: Vec<RequestRecord>,
    },
    /// Both tables' files of this file alone, in this directory.
    Spilled(PathBuf),
}

/// The spill directory, removed when dropped (on success or failure).
struct SpillDir(PathBuf);

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl EachDataset {
    /// Create `dir` if missing, and both tables in it.
    pub fn create(dir: &Path) -> io::Result<EachDataset> {
        let tables = ParquetTables::create(dir)?;
        let spill = SpillDir(dir.join(format!(".conntrace-spill-{}", std::process::id())));
        Ok(EachDataset { tables, spill })
    }

    /// What the workers need to replay a file into its part.
    pub fn spiller(&self) -> Spiller {
        Spiller {
            dir: self.spill.0.clone(),
        }
    }

    /// Add one file's rows (in input order).
    pub fn add(&mut self, source: &str, part: Part) -> io::Result<()> {
        match part {
            Part::Rows {
                connections,
                requests,
            } => {
                for c in &connections {
                    self.tables.connections.push(source, c)?;
                }
                for r in &requests {
                    self.tables.requests.push(source, r)?;
                }
                Ok(())
            }
            Part::Spilled(dir) => {
                self.tables
                    .connections
                    .append(&dir.join(CONNECTIONS_FILE))?;
                self.tables.requests.append(&dir.join(REQUESTS_FILE))?;
                std::fs::remove_dir_all(&dir).map_err(|e| in_file(&dir, e))
            }
        }
    }

    /// Write the last row groups and both footers; remove the spill directory.
    pub fn finish(self) -> io::Result<()> {
        self.tables.finish()
    }
}

/// Replays files for an [`EachDataset`], on any thread.
#[derive(Debug, Clone)]
pub struct Spiller {
    dir: PathBuf,
}

impl Spiller {
    /// Replay file number `index` (run on a worker thread): its rows are
    /// tagged with `source`.
    pub fn replay(
        &self,
        index: usize,
        path: &Path,
        source: &str,
        options: &ReplayOptions,
    ) -> Result<(Report, Part), ReplayError> {
        let dir = self.dir.join(index.to_string());
        let slot = Arc::new(Mutex::new(None));
        let sink = SpillSink {
            source: source.to_string(),
            dir: dir.clone(),
            held: Held::Rows(Vec::new(), Vec::new(), 0),
            slot: Arc::clone(&slot),
        };
        let pipeline = Pipeline::streaming(&options.pipeline, Box::new(sink));
        let outcome = replay_into(&[path.to_path_buf()], options, pipeline);
        let part = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (outcome, part) {
            (Ok(report), Some(part)) => Ok((report, part)),
            (Ok(_), None) => Err(ReplayError::Write(io::Error::other(
                "the rows were not handed over",
            ))),
            (Err(e), _) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }
}

/// A file's rows: in memory up to [`SPILL_ROWS`], then in its own tables.
enum Held {
    /// Connections, requests, and how many rows both hold.
    Rows(Vec<ConnectionRecord>, Vec<RequestRecord>, usize),
    Spilled(Box<ParquetTables>),
    Done,
}

struct SpillSink {
    source: String,
    dir: PathBuf,
    held: Held,
    /// Where the rows go when the input ends.
    slot: Arc<Mutex<Option<Part>>>,
}

impl SpillSink {
    /// Write the rows held so far to this file's own tables, and the rest
    /// after them as they come.
    fn spill(&mut self) -> io::Result<()> {
        let Held::Rows(connections, requests, _) = std::mem::replace(&mut self.held, Held::Done)
        else {
            return Ok(());
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| in_file(&self.dir, e))?;
        let mut tables = ParquetTables::create(&self.dir)?;
        for c in &connections {
            tables.connections.push(&self.source, c)?;
        }
        for r in &requests {
            tables.requests.push(&self.source, r)?;
        }
        self.held = Held::Spilled(Box::new(tables));
        Ok(())
    }

    /// Rows held while they fit, written to this file's own tables after.
    fn take(
        &mut self,
        record: Option<&ConnectionRecord>,
        requests: &[RequestRecord],
    ) -> io::Result<()> {
        let n = usize::from(record.is_some()) + requests.len();
        if let Held::Rows(connections, held, rows) = &mut self.held {
            if *rows + n <= SPILL_ROWS {
                connections.extend(record.cloned());
                held.extend_from_slice(requests);
                *rows += n;
                return Ok(());
            }
            self.spill()?;
        }
        match (&mut self.held, record) {
            (Held::Spilled(tables), Some(record)) => tables.add(&self.source, record, requests),
            (Held::Spilled(tables), None) => tables.add_requests(&self.source, requests),
            (Held::Rows(..) | Held::Done, _) => Ok(()),
        }
    }
}

impl RecordSink for SpillSink {
    fn connection(
        &mut self,
        record: &ConnectionRecord,
        requests: &[RequestRecord],
    ) -> io::Result<()> {
        self.take(Some(record), requests)
    }

    fn requests(&mut self, requests: &[RequestRecord]) -> io::Result<()> {
        self.take(None, requests)
    }

    fn finish(&mut self, _: &Report) -> io::Result<()> {
        let part = match std::mem::replace(&mut self.held, Held::Done) {
            Held::Rows(connections, requests, _) => Part::Rows {
                connections,
                requests,
            },
            Held::Spilled(tables) => {
                tables.finish()?;
                Part::Spilled(self.dir.clone())
            }
            Held::Done => return Ok(()),
        };
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(part);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_parse_and_have_a_leaf_per_column() {
        let c = connection_columns();
        let r = request_columns();
        for (name, text, leaves) in [
            ("connection", message_type("connection", &c), c.len() + 1),
            ("request", message_type("request", &r), r.len() + 1),
        ] {
            let schema = parse_message_type(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let descr = parquet::schema::types::SchemaDescriptor::new(Arc::new(schema));
            assert_eq!(descr.num_columns(), leaves, "{name}");
        }
    }

    #[test]
    fn list_levels_follow_the_three_level_layout() {
        let mut b = Buffer::new(Kind::Str, Shape::List { optional: true });
        b.push(Cell::Null);
        b.push(Cell::List(vec![]));
        b.push(list(["a", "b"]));
        assert_eq!(b.def, [0, 1, 2, 2]);
        assert_eq!(b.rep, [0, 0, 0, 1]);
        let mut b = Buffer::new(Kind::Str, Shape::List { optional: false });
        b.push(Cell::List(vec![]));
        b.push(list(["h2"]));
        assert_eq!(b.def, [0, 1]);
        assert_eq!(b.rep, [0, 0]);
    }

    #[test]
    fn row_groups_hold_at_most_65536_rows() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let dir = std::env::temp_dir().join(format!("conntrace-fleet-{}", std::process::id()));
        let mut tables = ParquetTables::create(&dir).unwrap();
        let request = |depth: u32| RequestRecord {
            status: Some(200),
            sent: Timestamp(1_700_000_000_000_000 + i64::from(depth)),
            ..crate::testkit::request_record(7, depth, 0.0)
        };
        for depth in 1..=ROW_GROUP_ROWS as u32 + 1 {
            tables.requests.push("a.pcap", &request(depth)).unwrap();
        }
        tables.finish().unwrap();
        let file = File::open(dir.join(REQUESTS_FILE)).unwrap();
        let meta = SerializedFileReader::new(file).unwrap().metadata().clone();
        let rows: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(rows, [ROW_GROUP_ROWS as i64, 1]);
        let column = meta.row_group(0).column(0);
        assert_eq!(column.compression(), Compression::SNAPPY);
        let file = File::open(dir.join(CONNECTIONS_FILE)).unwrap();
        let meta = SerializedFileReader::new(file).unwrap().metadata().clone();
        assert_eq!(meta.file_metadata().num_rows(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_hands_outcomes_over_in_input_order_and_runs_a_bounded_window_ahead() {
        let files: Vec<PathBuf> = (0..50)
            .map(|i| PathBuf::from(format!("{i}.pcap")))
            .collect();
        let workers = thread::available_parallelism().map_or(1, |n| n.get());
        let window = workers.min(files.len()) * AHEAD_PER_WORKER;
        let handed = AtomicUsize::new(0);
        let mut seen = Vec::new();
        replay_each(
            &files,
            |i, path| {
                assert_eq!(path, files[i]);
                let oldest = handed.load(Ordering::SeqCst);
                assert!(
                    i < oldest + window,
                    "file {i} started, {oldest} handed over"
                );
                i
            },
            |path, i| {
                assert_eq!(path, files[i]);
                seen.push(i);
                handed.store(i + 1, Ordering::SeqCst);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());

        // A failure to write stops the batch: nothing past the window starts.
        let started = AtomicUsize::new(0);
        let e = replay_each(
            &files,
            |i, _| {
                started.fetch_max(i + 1, Ordering::SeqCst);
                i
            },
            |_, i| match i {
                3 => Err(anyhow::anyhow!("disk full")),
                _ => Ok(()),
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert!(started.load(Ordering::SeqCst) <= 3 + window);
    }

    #[test]
    fn parquet_without_a_directory_is_refused() {
        let e = check_output(Format::Parquet, None).unwrap_err();
        assert!(e.message.contains("needs -o DIR"), "{}", e.message);
        assert!(check_output(Format::Json, None).is_ok());
    }

    #[test]
    fn a_live_source_is_tagged_with_the_host() {
        let live = SourceInfo {
            kind: "live",
            names: vec!["eth0".into()],
            ..SourceInfo::default()
        };
        assert_eq!(source_tag(&live), format!("{}/eth0", host_name()));
        let file = SourceInfo {
            kind: "file",
            names: vec!["a.pcap".into(), "b.pcap".into()],
            ..SourceInfo::default()
        };
        assert_eq!(source_tag(&file), "a.pcap,b.pcap");
    }
}
