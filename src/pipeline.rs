//! The one pipeline every command shares: frames in (from files or a live
//! capture), [`Report`] out. `replay`, `run` and `audit` differ only in where
//! the frames come from.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::decode::{decode, Decoded};
use crate::diagnose::ReuseJudge;
use crate::flow::{sort_records, Expiry, Finished, FlowEvent, FlowTable};
use crate::report::{
    AnomalyCount, ConnectionRecord, Report, RequestRecord, SourceInfo, Summary, ToolInfo,
    TrackerReport,
};
use crate::source::{CaptureReader, Frame, LinkType, ReadError, Record};
use crate::wire::Timestamp;

/// Settings of the analysis itself, whatever the source.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Parse the bytes inside each connection (HTTP/1, h2c, TLS ClientHello).
    pub http: bool,
    /// When connections leave the tracker's table.
    pub expiry: Expiry,
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions {
            http: true,
            expiry: Expiry::default(),
        }
    }
}

/// Where finished connections go as they complete.
pub trait RecordSink: Send {
    /// One finalised connection and its requests (`why_new` filled), in
    /// completion order.
    fn connection(
        &mut self,
        record: &ConnectionRecord,
        requests: &[RequestRecord],
    ) -> io::Result<()>;

    /// The input ended: write out whatever is buffered.
    fn flush(&mut self) -> io::Result<()>;
}

/// What the pipeline does with the rows of finished connections.
enum Rows {
    /// Keep every row for a document (table, Markdown, JSON).
    Keep {
        connections: Vec<ConnectionRecord>,
        requests: Vec<RequestRecord>,
    },
    /// Hand each to a sink and forget it (JSON Lines).
    Stream(Box<dyn RecordSink>),
    /// Only the tallies (`--format summary`).
    Count,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rows::Keep { connections, .. } => write!(f, "Keep({})", connections.len()),
            Rows::Stream(_) => f.write_str("Stream"),
            Rows::Count => f.write_str("Count"),
        }
    }
}

/// Frames in, report out: decode → tracker → reuse judge → rows.
#[derive(Debug)]
pub struct Pipeline {
    table: FlowTable,
    judge: ReuseJudge,
    events: Vec<FlowEvent>,
    rows: Rows,
    summary: Summary,
    source: SourceInfo,
    link_types: Vec<LinkType>,
    /// Reason → (count, first frame number).
    anomalies: BTreeMap<String, (u64, u64)>,
    /// The first error a streaming sink returned; later rows are dropped.
    sink_error: Option<io::Error>,
}

impl Pipeline {
    /// A pipeline that keeps every row for a document report.
    pub fn new(options: &PipelineOptions) -> Pipeline {
        Pipeline::with_rows(
            options,
            Rows::Keep {
                connections: Vec::new(),
                requests: Vec::new(),
            },
        )
    }

    /// A pipeline that hands each finished connection to `sink` and keeps
    /// only the tallies.
    pub fn streaming(options: &PipelineOptions, sink: Box<dyn RecordSink>) -> Pipeline {
        Pipeline::with_rows(options, Rows::Stream(sink))
    }

    /// A pipeline that keeps only the tallies.
    pub fn counting(options: &PipelineOptions) -> Pipeline {
        Pipeline::with_rows(options, Rows::Count)
    }

    fn with_rows(options: &PipelineOptions, rows: Rows) -> Pipeline {
        Pipeline {
            table: FlowTable::with_expiry(options.http, options.expiry),
            judge: ReuseJudge::new(),
            events: Vec::new(),
            rows,
            summary: Summary::default(),
            source: SourceInfo::default(),
            link_types: Vec::new(),
            anomalies: BTreeMap::new(),
            sink_error: None,
        }
    }

    /// Account one frame captured with link type `link`.
    pub fn push(&mut self, link: LinkType, frame: &Frame<'_>) {
        self.push_decoded(link, &decode(link, frame), frame.data);
    }

    /// Account one frame captured with link type `link` and already decoded;
    /// a segment's payload range indexes `data` (the frame itself, or
    /// wherever its payload was copied to).
    pub fn push_decoded(&mut self, link: LinkType, decoded: &Decoded, data: &[u8]) {
        self.source.packets += 1;
        if !self.link_types.contains(&link) {
            self.link_types.push(link);
        }
        match decoded {
            Decoded::Tcp(seg) => {
                self.source.tcp_packets += 1;
                let payload = data.get(seg.payload.clone()).unwrap_or(&[]);
                self.table.on_segment(seg, payload, &mut self.events);
                self.pass_events(Some(seg.ts));
            }
            Decoded::NotTcp => self.source.non_tcp_packets += 1,
            Decoded::Anomaly(a) => self.note_anomaly(a.to_string()),
        }
    }

    /// Hand the tracker's events to the judge, and what the judge released
    /// to the rows.
    fn pass_events(&mut self, now: Option<Timestamp>) {
        for event in self.events.drain(..) {
            self.judge.on_event(event);
        }
        if let Some(now) = now {
            self.judge.advance(now);
        }
        while let Some(finished) = self.judge.pop_released() {
            self.take(finished);
        }
    }

    fn take(&mut self, finished: Box<Finished>) {
        let Finished {
            record, requests, ..
        } = *finished;
        self.summary.add_connection(&record);
        for r in &requests {
            self.summary.add_request(r);
        }
        match &mut self.rows {
            Rows::Keep {
                connections,
                requests: kept,
            } => {
                connections.push(record);
                kept.extend(requests);
            }
            Rows::Stream(sink) => {
                if self.sink_error.is_none() {
                    if let Err(e) = sink.connection(&record, &requests) {
                        self.sink_error = Some(e);
                    }
                }
            }
            Rows::Count => {}
        }
    }

    /// Count a frame that could not be understood, with its reason.
    pub fn note_anomaly(&mut self, reason: String) {
        self.source.anomalies += 1;
        let frame = self.source.packets;
        self.anomalies.entry(reason).or_insert((0, frame)).0 += 1;
    }

    /// The source description to fill in: kind, names, filter, dropped.
    pub fn source_mut(&mut self) -> &mut SourceInfo {
        &mut self.source
    }

    /// Streams numbered so far.
    pub fn connections(&self) -> usize {
        self.table.len()
    }

    /// Connections seen and not yet ended (a live capture lingers for these).
    pub fn open_connections(&self) -> usize {
        self.table.open()
    }

    /// The input ended: finalise every connection and assemble the report.
    /// A streaming sink's write error is returned here.
    pub fn finish(mut self) -> io::Result<Report> {
        self.table.finish(&mut self.events);
        self.pass_events(None);
        self.judge.finish();
        self.pass_events(None);
        if let (Rows::Stream(sink), None) = (&mut self.rows, &self.sink_error) {
            if let Err(e) = sink.flush() {
                self.sink_error = Some(e);
            }
        }
        if let Some(e) = self.sink_error.take() {
            return Err(e);
        }
        let (mut connections, mut requests) = match self.rows {
            Rows::Keep {
                connections,
                requests,
            } => (connections, requests),
            Rows::Stream(_) | Rows::Count => (Vec::new(), Vec::new()),
        };
        sort_records(&mut connections, &mut requests);
        let mut source = self.source;
        source.link_types = self.link_types.iter().map(|l| l.name()).collect();
        let mut anomalies: Vec<AnomalyCount> = self
            .anomalies
            .into_iter()
            .map(|(reason, (count, first_frame))| AnomalyCount {
                reason,
                count,
                first_frame,
            })
            .collect();
        anomalies.sort_by_key(|a| a.first_frame);
        Ok(Report {
            tool: ToolInfo::default(),
            source,
            connections,
            requests,
            summary: self.summary,
            anomalies,
            client: None,
            tracker: TrackerReport::of(self.table.stats()),
        })
    }
}

/// Which code reads capture files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReaderKind {
    /// conntrace's own streaming reader: pcap, pcapng with several link
    /// types, gzip-compressed files, and files cut short.
    #[default]
    Native,
    /// libpcap's `pcap_next_ex` (no gzip; pcapng only with one link type).
    Libpcap,
}

/// What `replay` reads and how.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    pub pipeline: PipelineOptions,
    /// Show a progress bar on stderr for large files (when it is a terminal).
    pub progress: bool,
    /// A BPF filter (tcpdump syntax), applied to every frame.
    pub filter: Option<String>,
    pub reader: ReaderKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("cannot write the report")]
    Write(#[source] io::Error),
    #[error("{path}: {message}")]
    Libpcap { path: PathBuf, message: String },
    #[error("{path}: bad filter {filter:?} for link type {link}: {message}")]
    Filter {
        path: PathBuf,
        filter: String,
        link: String,
        message: String,
    },
}

/// Compiled BPF programs, one per link type (the same expression compiles
/// differently for each link layer).
struct FilterSet {
    expr: String,
    programs: HashMap<LinkType, pcap::BpfProgram>,
}

impl FilterSet {
    fn matches(&mut self, link: LinkType, data: &[u8]) -> Result<bool, String> {
        if !self.programs.contains_key(&link) {
            let dead = pcap::Capture::dead(pcap::Linktype(link.0)).map_err(|e| e.to_string())?;
            let program = dead.compile(&self.expr, true).map_err(|e| e.to_string())?;
            self.programs.insert(link, program);
        }
        Ok(self.programs[&link].filter(data))
    }
}

/// Validate a BPF filter expression before any work starts.
pub fn check_filter(expr: &str) -> Result<(), String> {
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(|e| e.to_string())?;
    dead.compile(expr, true)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Read capture files in order through one pipeline: the connections of all
/// files are numbered as if the files were one capture.
pub fn replay_files(paths: &[PathBuf], options: &ReplayOptions) -> Result<Report, ReplayError> {
    replay_into(paths, options, Pipeline::new(&options.pipeline))
}

/// The same through a pipeline of the caller's (streaming or counting).
pub fn replay_into(
    paths: &[PathBuf],
    options: &ReplayOptions,
    mut pipeline: Pipeline,
) -> Result<Report, ReplayError> {
    let mut filter = options.filter.as_ref().map(|expr| FilterSet {
        expr: expr.clone(),
        programs: HashMap::new(),
    });
    for path in paths {
        let mut feed = |link: LinkType, frame: &Frame<'_>| -> Result<(), ReplayError> {
            if let Some(filter) = &mut filter {
                let keep =
                    filter
                        .matches(link, frame.data)
                        .map_err(|message| ReplayError::Filter {
                            path: path.clone(),
                            filter: filter.expr.clone(),
                            link: link.name(),
                            message,
                        })?;
                if !keep {
                    return Ok(());
                }
            }
            pipeline.push(link, frame);
            Ok(())
        };
        let cut_short = match options.reader {
            ReaderKind::Native => read_native(path, options.progress, &mut feed)?,
            ReaderKind::Libpcap => read_libpcap(path, &mut feed)?,
        };
        if cut_short {
            pipeline.source_mut().packets += 1;
            pipeline.note_anomaly(format!(
                "capture file cut short in the middle of a packet ({})",
                path.display()
            ));
        }
    }
    let source = pipeline.source_mut();
    source.kind = "file";
    source.names = paths.iter().map(|p| p.display().to_string()).collect();
    source.filter = options.filter.clone();
    pipeline.finish().map_err(ReplayError::Write)
}

type FrameSink<'a> = dyn FnMut(LinkType, &Frame<'_>) -> Result<(), ReplayError> + 'a;

/// Feed every frame of `path` to `feed`; true if the file was cut short.
fn read_native(path: &Path, progress: bool, feed: &mut FrameSink<'_>) -> Result<bool, ReplayError> {
    let mut reader = CaptureReader::open(path)?;
    let bar = progress.then(|| progress_bar(path)).flatten();
    let mut frames: u64 = 0;
    let cut_short = loop {
        let Some(record) = reader.next_record()? else {
            break false;
        };
        match record {
            Record::Frame(link, frame) => feed(link, &frame)?,
            Record::CutShort => break true,
        }
        frames += 1;
        if frames.is_multiple_of(65536) {
            if let Some(bar) = &bar {
                bar.set_position(reader.file_position());
            }
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(cut_short)
}

/// Files smaller than this replay in a moment: no progress bar.
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

/// A byte-position progress bar on stderr, if stderr is a terminal and the
/// file is large enough to be worth one.
fn progress_bar(path: &Path) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    let len = std::fs::metadata(path).ok()?.len();
    if len < PROGRESS_MIN_BYTES || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .ok()?
        .progress_chars("=> "),
    );
    bar.set_message(path.display().to_string());
    Some(bar)
}

/// The same through libpcap, for comparison (`--reader libpcap`).
fn read_libpcap(path: &Path, feed: &mut FrameSink<'_>) -> Result<bool, ReplayError> {
    let err = |e: pcap::Error| ReplayError::Libpcap {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut cap = pcap::Capture::from_file(path).map_err(err)?;
    let link = LinkType::from(cap.get_datalink());
    loop {
        match cap.next_packet() {
            Ok(packet) => {
                let h = packet.header;
                let frame = Frame {
                    ts: Timestamp::from_parts(h.ts.tv_sec, h.ts.tv_usec),
                    caplen: h.caplen,
                    wirelen: h.len.max(h.caplen),
                    data: packet.data,
                };
                feed(link, &frame)?;
            }
            Err(pcap::Error::NoMorePackets) => return Ok(false),
            Err(pcap::Error::PcapError(m)) if m.contains("truncated") => return Ok(true),
            Err(e) => return Err(err(e)),
        }
    }
}
