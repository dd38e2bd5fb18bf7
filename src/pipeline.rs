//! The one pipeline every command shares: frames in (from files or a live
//! capture), [`Report`] out. `replay`, `run` and `audit` differ only in where
//! the frames come from.
//!
//! A capture file read by the native reader is read, filtered and decoded on
//! a thread of its own, a couple of batches ahead of the tracker, which takes
//! them in file order; and a file replay runs the reuse judge and the rows
//! (tallies, sinks) on a third, fed the tracker's events in chunks, in order.
//! What the report says (counts, anomalies and their frame numbers, verdicts,
//! errors, the rows streamed before an error) is what one thread doing it
//! all would say.

use crate::advice::Diagnoser;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

use crate::decode::{decode, Decoded};
use crate::diagnose::ReuseJudge;
use crate::flow::{sort_records, Expiry, Finished, FlowEvent, FlowTable, Settled};
use crate::report::{
    AnomalyCount, ConnectionRecord, Report, RequestRecord, SourceInfo, Summary, ToolInfo,
    TrackerStats,
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
    /// Judge why each new connection was opened as the capture goes. A live
    /// run turns this off and judges once, after the client's own records
    /// joined the captured ones.
    pub diagnose: bool,
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions {
            http: true,
            expiry: Expiry::default(),
            diagnose: true,
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

    /// Requests of a connection that goes on, final before it ends (HTTP/1
    /// keep-alive requests after the first, answered): they are not among
    /// the requests handed over with their connection.
    fn requests(&mut self, requests: &[RequestRecord]) -> io::Result<()>;

    /// The input ended: write what is buffered and the end of the output
    /// (`report` has everything but the rows already handed over).
    fn finish(&mut self, report: &Report) -> io::Result<()>;
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

/// The tallies of a pipeline at one moment. Requests are counted as their
/// connection is finalised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Glance {
    pub packets: u64,
    /// Streams numbered so far.
    pub connections: u64,
    /// Seen and not yet ended.
    pub open: u64,
    /// Finalised, with their requests counted below.
    pub finalised: u64,
    pub requests: u64,
    pub reused_requests: u64,
    /// Requests that opened a connection, by `why_new.code`.
    pub causes: BTreeMap<String, u64>,
}

/// Frames in, report out: decode → tracker → reuse judge → rows.
#[derive(Debug)]
pub struct Pipeline {
    table: FlowTable,
    events: Vec<FlowEvent>,
    /// What follows the tracker, here or on a thread of its own.
    back: Stage,
    source: SourceInfo,
    link_types: Vec<LinkType>,
    /// The same as a set: a pcapng file may declare thousands.
    link_type_set: std::collections::HashSet<LinkType>,
    /// Reason → (count, first frame number).
    anomalies: BTreeMap<String, (u64, u64)>,
}

/// The stages after the tracker: the reuse judge, then the tallies and the
/// rows. Fed the tracker's events in order, with the capture time reached
/// after each segment's.
#[derive(Debug)]
struct Back {
    /// `None`: connections go straight to the rows, undiagnosed.
    judge: Option<ReuseJudge>,
    rows: Rows,
    summary: Summary,
    /// The verdict per client host and server, gathered as rows finish.
    diagnoser: Diagnoser,
    /// The first error a streaming sink returned; later rows are dropped.
    sink_error: Option<io::Error>,
    /// Behind: connections done with, handed back to the tracker's thread
    /// to be freed there (freeing on another thread than the one that
    /// allocated contends for the allocator's lock, once per record).
    dead: Option<Vec<Dead>>,
}

/// A document of every row cannot be streamed: when memory for one more
/// runs out, this says so (at the end of the input) rather than abort.
fn out_of_memory(connections: usize, requests: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!(
            "out of memory holding the rows of {connections} connections and {requests} requests for the report; --format summary, jsonl or json hold no rows"
        ),
    )
}

/// Records done with on the judge's thread, to be freed on the tracker's:
/// held only to be dropped there.
#[derive(Debug)]
#[allow(dead_code)]
enum Dead {
    Finished(Box<Finished>),
    Settled(Settled),
}

/// Where the stages after the tracker run.
#[derive(Debug)]
enum Stage {
    Here(Box<Back>),
    /// On a thread of its own, fed in chunks: a file replay, where the judge
    /// and the rows cost about as much as the tracker.
    Behind(Behind),
}

/// The judge's thread and the chunk being filled for it.
#[derive(Debug)]
struct Behind {
    chunk: Chunk,
    /// `None` once the input ended (or the replay stopped).
    to: Option<SyncSender<Chunk>>,
    /// Chunks the thread is done with, to fill again.
    spare: Receiver<Chunk>,
    thread: Option<thread::JoinHandle<Option<Box<Back>>>>,
}

impl Behind {
    /// Hand over what is left and wait for the thread to take it all.
    fn join(&mut self) -> Option<Box<Back>> {
        if let Some(to) = self.to.take() {
            // The thread is gone only if it panicked: `join` says so.
            let _ = to.send(std::mem::take(&mut self.chunk));
        }
        match self.thread.take()?.join() {
            Ok(back) => back,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Behind {
    /// A replay that stops at an error still streams the connections
    /// finalised before it, as one thread doing it all would have.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = self.join();
        }
    }
}

/// Events for [`Back`], and after which of them capture time moved on.
#[derive(Debug, Default)]
struct Chunk {
    events: Vec<FlowEvent>,
    /// Back from the judge's thread: records to free.
    dead: Vec<Dead>,
    /// (events before it, capture time or `None` for "no time"): the
    /// judge advances there. Consecutive ones with no event between them
    /// are one, the later time (advancing twice gives the same verdicts).
    marks: Vec<(usize, Option<Timestamp>)>,
}

/// Events a chunk gathers before it is handed on, and chunks on their way.
const CHUNK_EVENTS: usize = 1024;
const CHUNKS_AHEAD: usize = 2;

impl Back {
    /// `events`, then capture time reached `now`: verdicts due are given and
    /// the connections released go to the rows.
    fn pass(&mut self, events: impl Iterator<Item = FlowEvent>, now: Option<Timestamp>) {
        for event in events {
            match (event, &mut self.judge) {
                // Reused requests need no verdict: straight to the rows.
                (FlowEvent::Settled(settled), _) => self.take_settled(settled),
                (event, Some(judge)) => judge.on_event(event),
                (FlowEvent::Finished(finished), None) => self.take(finished),
                (_, None) => {}
            }
        }
        if let (Some(now), Some(judge)) = (now, &mut self.judge) {
            judge.advance(now);
        }
        self.release();
    }

    /// Requests of a connection that goes on, final.
    fn take_settled(&mut self, settled: Settled) {
        for r in &settled.requests {
            self.summary.add_request(r);
        }
        self.diagnoser
            .add_settled(settled.client, settled.server, &settled.requests);
        match &mut self.rows {
            Rows::Keep {
                connections,
                requests: kept,
            } => {
                if kept.try_reserve(settled.requests.len()).is_err() {
                    self.sink_error = Some(out_of_memory(connections.len(), kept.len()));
                    self.rows = Rows::Count;
                    return;
                }
                kept.extend(settled.requests);
                return;
            }
            Rows::Stream(sink) => {
                if self.sink_error.is_none() {
                    if let Err(e) = sink.requests(&settled.requests) {
                        self.sink_error = Some(e);
                    }
                }
            }
            Rows::Count => {}
        }
        if let Some(dead) = &mut self.dead {
            dead.push(Dead::Settled(settled));
        }
    }

    fn release(&mut self) {
        while let Some(finished) = self.judge.as_mut().and_then(ReuseJudge::pop_released) {
            self.take(finished);
        }
    }

    fn pass_chunk(&mut self, chunk: &mut Chunk) {
        let mut events = chunk.events.drain(..);
        let mut done = 0;
        for &(end, now) in &chunk.marks {
            self.pass(events.by_ref().take(end - done), now);
            done = end;
        }
        self.pass(events, None);
        chunk.marks.clear();
        if let Some(dead) = &mut self.dead {
            std::mem::swap(dead, &mut chunk.dead);
        }
    }

    fn take(&mut self, finished: Box<Finished>) {
        self.summary.add_connection(&finished.record);
        for r in &finished.requests {
            self.summary.add_request(r);
        }
        self.diagnoser.add(&finished.record, &finished.requests);
        match &mut self.rows {
            Rows::Keep {
                connections,
                requests: kept,
            } => {
                // When memory for one more row runs out, say so at the end
                // and keep only the tallies from here.
                if connections.try_reserve(1).is_err()
                    || kept.try_reserve(finished.requests.len()).is_err()
                {
                    self.sink_error = Some(out_of_memory(connections.len(), kept.len()));
                    self.rows = Rows::Count;
                    return;
                }
                let Finished {
                    record, requests, ..
                } = *finished;
                connections.push(record);
                kept.extend(requests);
                return;
            }
            Rows::Stream(sink) => {
                if self.sink_error.is_none() {
                    if let Err(e) = sink.connection(&finished.record, &finished.requests) {
                        self.sink_error = Some(e);
                    }
                }
            }
            Rows::Count => {}
        }
        // Freed where it was allocated (see `Back::dead`): the verdicts
        // here, the rest on the tracker's thread.
        if let Some(dead) = &mut self.dead {
            let mut finished = finished;
            finished.record.unused = None;
            for r in &mut finished.requests {
                r.why_new = None;
            }
            dead.push(Dead::Finished(finished));
        }
    }

    /// The input ended: the verdicts still to give, with what is known,
    /// each connection handed on as its verdict comes.
    fn finish(&mut self) {
        while self.judge.as_mut().is_some_and(ReuseJudge::finish_one) {
            self.release();
        }
        self.release();
    }
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
            events: Vec::new(),
            back: Stage::Here(Box::new(Back {
                judge: options.diagnose.then(ReuseJudge::new),
                rows,
                summary: Summary::default(),
                diagnoser: Diagnoser::new(),
                sink_error: None,
                dead: None,
            })),
            source: SourceInfo::default(),
            link_types: Vec::new(),
            link_type_set: Default::default(),
            anomalies: BTreeMap::new(),
        }
    }

    /// Run the judge and the rows on a thread of their own from now on,
    /// fed the same events in the same order (so the report is the same).
    /// Stays as it is if no thread can be started.
    fn run_behind(&mut self) {
        if !matches!(self.back, Stage::Here(_)) {
            return;
        }
        let (to, from) = mpsc::sync_channel::<Chunk>(CHUNKS_AHEAD);
        let (spare_to, spare) = mpsc::channel::<Chunk>();
        // Handed over once the thread runs: if it cannot start, it stays here.
        let (give, take) = mpsc::sync_channel::<Box<Back>>(1);
        let started = thread::Builder::new()
            .name("conntrace-judge".into())
            .spawn(move || {
                let mut back = take.recv().ok()?;
                back.dead = Some(Vec::new());
                for mut chunk in from {
                    back.pass_chunk(&mut chunk);
                    let _ = spare_to.send(chunk);
                }
                Some(back)
            });
        let Ok(thread) = started else {
            return;
        };
        let Stage::Here(back) = std::mem::replace(
            &mut self.back,
            Stage::Behind(Behind {
                chunk: Chunk::default(),
                to: Some(to),
                spare,
                thread: Some(thread),
            }),
        ) else {
            unreachable!("matched above")
        };
        let _ = give.send(back);
    }

    /// Account one frame captured with link type `link`.
    pub fn push(&mut self, link: LinkType, frame: &Frame<'_>) {
        self.push_decoded(link, &decode(link, frame), frame.data);
    }

    /// Account one frame captured with link type `link` and already decoded;
    /// a segment's payload range indexes `data` (the frame itself, or
    /// wherever its payload was copied to).
    /// Capture time is at least `now` though no packet came: connections
    /// whose time is up are finalised (and streamed) now.
    pub fn advance_clock(&mut self, now: Timestamp) {
        self.table.advance_to(now, &mut self.events);
        self.pass_events(Some(now));
    }

    pub fn push_decoded(&mut self, link: LinkType, decoded: &Decoded, data: &[u8]) {
        self.source.packets += 1;
        if self.link_types.last() != Some(&link) && self.link_type_set.insert(link) {
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

    /// Hand the tracker's events on, with the capture time reached.
    fn pass_events(&mut self, now: Option<Timestamp>) {
        match &mut self.back {
            Stage::Here(back) => back.pass(self.events.drain(..), now),
            Stage::Behind(Behind {
                chunk, to, spare, ..
            }) => {
                if self.events.is_empty()
                    && chunk
                        .marks
                        .last()
                        .is_some_and(|m| m.0 == chunk.events.len())
                {
                    // Time moved on with no event since the last mark.
                    if let Some(last) = chunk.marks.last_mut() {
                        last.1 = now.or(last.1);
                    }
                } else {
                    chunk.events.append(&mut self.events);
                    chunk.marks.push((chunk.events.len(), now));
                }
                if chunk.events.len() >= CHUNK_EVENTS {
                    let mut next = spare.try_recv().unwrap_or_default();
                    next.dead.clear();
                    let full = std::mem::replace(chunk, next);
                    // The thread is gone only if it panicked: joined at the end.
                    if let Some(to) = to {
                        let _ = to.send(full);
                    }
                }
            }
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

    /// The tallies so far, for a view that updates while a capture runs.
    pub fn glance(&self) -> Glance {
        // Behind, the tallies are the judge thread's: not counted here.
        let none = Summary::default();
        let summary = match &self.back {
            Stage::Here(back) => &back.summary,
            Stage::Behind(_) => &none,
        };
        Glance {
            packets: self.source.packets,
            connections: self.table.len() as u64,
            open: self.table.open() as u64,
            finalised: summary.connections,
            requests: summary.requests,
            reused_requests: summary.reused_requests,
            causes: summary.new_connection_causes.clone(),
        }
    }

    /// The input ended: finalise every connection and assemble the report
    /// (a streaming sink writes its end from it). A streaming sink's write
    /// error is returned here.
    pub fn finish(mut self) -> io::Result<Report> {
        self.table.finish(&mut self.events);
        self.pass_events(None);
        let mut back = match self.back {
            Stage::Here(mut back) => {
                back.finish();
                back
            }
            Stage::Behind(mut behind) => {
                let mut back = behind.join().expect("handed over when the thread started");
                back.dead = None;
                back.finish();
                back
            }
        };
        if let Some(e) = back.sink_error.take() {
            return Err(e);
        }
        let (mut connections, mut requests, mut sink) = match back.rows {
            Rows::Keep {
                connections,
                requests,
            } => (connections, requests, None),
            Rows::Stream(sink) => (Vec::new(), Vec::new(), Some(sink)),
            Rows::Count => (Vec::new(), Vec::new(), None),
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
        let report = Report {
            tool: ToolInfo::default(),
            source,
            connections,
            requests,
            summary: back.summary,
            anomalies,
            client: None,
            tracker: Some(self.table.stats()).filter(TrackerStats::noteworthy),
            diagnosis: back.diagnoser.finish(),
            probe: None,
            sockets: None,
            audit: None,
        };
        if let Some(sink) = &mut sink {
            sink.finish(&report)?;
        }
        Ok(report)
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
            let dead =
                pcap::Capture::dead(pcap::Linktype(link.dlt())).map_err(|e| e.to_string())?;
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
///
/// The native reader reads, filters and decodes on a thread of its own, a
/// couple of its buffers ahead of the tracker; what the report says is the
/// same as when one thread does it all.
pub fn replay_into(
    paths: &[PathBuf],
    options: &ReplayOptions,
    pipeline: Pipeline,
) -> Result<Report, ReplayError> {
    replay(paths, options, pipeline, true)
}

fn replay(
    paths: &[PathBuf],
    options: &ReplayOptions,
    mut pipeline: Pipeline,
    ahead: bool,
) -> Result<Report, ReplayError> {
    if ahead {
        // The judge and the rows beside the tracker: the second core's
        // work once the reader's is light.
        pipeline.run_behind();
    }
    let mut filter = options.filter.as_ref().map(|expr| FilterSet {
        expr: expr.clone(),
        programs: HashMap::new(),
    });
    for path in paths {
        let threaded = match options.reader {
            ReaderKind::Native if ahead => {
                replay_ahead(path, options.progress, &mut filter, &mut pipeline)
            }
            _ => None,
        };
        let end = match threaded {
            Some(end) => end?,
            None => {
                let mut feed = |link: LinkType, frame: &Frame<'_>| {
                    if keep(&mut filter, path, link, frame.data)? {
                        pipeline.push(link, frame);
                    }
                    Ok(())
                };
                match options.reader {
                    ReaderKind::Native => read_native(path, options.progress, &mut feed)?,
                    ReaderKind::Libpcap => FileEnd {
                        cut_short: read_libpcap(path, &mut feed)?,
                        gzip_truncated: false,
                    },
                }
            }
        };
        if end.gzip_truncated {
            // The report is the partial one the same bytes unzipped give;
            // this line says why it stops early.
            eprintln!(
                "conntrace: warning: {}: the gzip stream is truncated; the report covers the frames before the cut",
                path.display()
            );
        }
        if end.cut_short {
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

/// How reading one file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FileEnd {
    /// The file ended in the middle of a frame.
    cut_short: bool,
    /// Its gzip stream ended before the gzip trailer.
    gzip_truncated: bool,
}

/// Whether the filter (if any) keeps a frame of `path`.
fn keep(
    filter: &mut Option<FilterSet>,
    path: &Path,
    link: LinkType,
    data: &[u8],
) -> Result<bool, ReplayError> {
    let Some(filter) = filter else {
        return Ok(true);
    };
    filter
        .matches(link, data)
        .map_err(|message| ReplayError::Filter {
            path: path.to_path_buf(),
            filter: filter.expr.clone(),
            link: link.name(),
            message,
        })
}

/// Batches decoded and not yet tracked. A batch is one of the reader's
/// buffers (256 KiB to 1 MiB once a file proves large, about 4,096 frames)
/// and its frames decoded, so with the one being read and the one being
/// tracked, memory stays within a few of each (some 4 MiB in all for a
/// capture of bare SYNs, 6 MiB for large frames).
const BATCHES_AHEAD: usize = 2;

/// Frames read, filtered and decoded, in file order, with the reader's buffer
/// that holds their bytes.
struct Batch {
    /// Each frame's link type and what it decoded to; a segment's payload
    /// range indexes `bytes`.
    frames: Vec<(LinkType, Decoded)>,
    bytes: Vec<u8>,
}

/// Replay one file with the native reader on a thread of its own, feeding
/// `pipeline` here; the file's outcome (cut short or not, or the error that
/// stopped it after the frames before it were tracked). `None` if no thread
/// could be started, before anything was read.
fn replay_ahead(
    path: &Path,
    progress: bool,
    filter: &mut Option<FilterSet>,
    pipeline: &mut Pipeline,
) -> Option<Result<FileEnd, ReplayError>> {
    let (full, decoded) = mpsc::sync_channel(BATCHES_AHEAD);
    let (used, empty) = mpsc::channel();
    thread::scope(|scope| {
        let reader = thread::Builder::new()
            .name("conntrace-read".into())
            .spawn_scoped(scope, move || {
                read_ahead(path, progress, filter, &full, &empty)
            })
            .ok()?;
        for mut batch in decoded {
            for (link, frame) in &batch.frames {
                pipeline.push_decoded(*link, frame, &batch.bytes);
            }
            batch.frames.clear();
            // The reader may have finished: then the batch is just dropped.
            let _ = used.send(batch);
        }
        Some(match reader.join() {
            Ok(outcome) => outcome,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    })
}

/// The reader's side of [`replay_ahead`]: read, filter and decode `path`,
/// sending each of the reader's buffers on `full` with the frames in it once
/// the reader has moved on (it lends them: frames are not copied), and
/// reusing the batches that come back on `empty`. Whatever ends the file,
/// the frames read before it are sent first.
fn read_ahead(
    path: &Path,
    progress: bool,
    filter: &mut Option<FilterSet>,
    full: &SyncSender<Batch>,
    empty: &Receiver<Batch>,
) -> Result<FileEnd, ReplayError> {
    let mut reader = CaptureReader::open(path)?;
    reader.lend_buffers();
    let mut progress = Progress::new(path, progress);
    let mut frames = Vec::new();
    let mut spare_frames = Vec::new();
    let outcome = loop {
        for batch in empty.try_iter() {
            reader.recycle(batch.bytes);
            spare_frames.push(batch.frames);
        }
        let (frame, end) = match reader.next_record() {
            Ok(Some(Record::Frame(link, frame))) => match keep(filter, path, link, frame.data) {
                Ok(true) => (Some((link, decode(link, &frame))), None),
                Ok(false) => (None, None),
                Err(e) => (None, Some(Err(e))),
            },
            Ok(Some(Record::CutShort)) => (None, Some(Ok(true))),
            Ok(None) => (None, Some(Ok(false))),
            Err(e) => (None, Some(Err(e.into()))),
        };
        if let Some(bytes) = reader.take_retired() {
            if frames.is_empty() {
                reader.recycle(bytes);
            } else {
                let next = spare_frames.pop().unwrap_or_default();
                let batch = Batch {
                    frames: std::mem::replace(&mut frames, next),
                    bytes,
                };
                if full.send(batch).is_err() {
                    // The tracker's side is gone (it panicked and is
                    // unwinding): stop reading. No one sees this error.
                    break Err(ReplayError::Write(io::ErrorKind::BrokenPipe.into()));
                }
            }
        }
        if let Some(end) = end {
            break end;
        }
        if let Some((link, mut decoded)) = frame {
            if let Decoded::Tcp(seg) = &mut decoded {
                let at = reader.frame_offset();
                seg.payload = at + seg.payload.start..at + seg.payload.end;
            }
            frames.push((link, decoded));
        }
        progress.frame(&reader);
    };
    let gzip_truncated = reader.gzip_truncated();
    if !frames.is_empty() {
        let _ = full.send(Batch {
            frames,
            bytes: reader.into_buffer(),
        });
    }
    if outcome.is_ok() {
        progress.finish();
    }
    outcome.map(|cut_short| FileEnd {
        cut_short,
        gzip_truncated,
    })
}

type FrameSink<'a> = dyn FnMut(LinkType, &Frame<'_>) -> Result<(), ReplayError> + 'a;

/// Feed every frame of `path` to `feed`; how the file ended.
fn read_native(
    path: &Path,
    progress: bool,
    feed: &mut FrameSink<'_>,
) -> Result<FileEnd, ReplayError> {
    let mut reader = CaptureReader::open(path)?;
    let mut progress = Progress::new(path, progress);
    let cut_short = loop {
        let Some(record) = reader.next_record()? else {
            break false;
        };
        match record {
            Record::Frame(link, frame) => feed(link, &frame)?,
            Record::CutShort => break true,
        }
        progress.frame(&reader);
    };
    progress.finish();
    Ok(FileEnd {
        cut_short,
        gzip_truncated: reader.gzip_truncated(),
    })
}

/// The progress bar of one file, if it has one, moved every 65,536 frames.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    frames: u64,
}

impl Progress {
    fn new(path: &Path, progress: bool) -> Progress {
        Progress {
            bar: progress.then(|| progress_bar(path)).flatten(),
            frames: 0,
        }
    }

    fn frame(&mut self, reader: &CaptureReader) {
        self.frames += 1;
        if self.frames.is_multiple_of(65536) {
            if let Some(bar) = &self.bar {
                bar.set_position(reader.file_position());
            }
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
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
            Ok(packet) => feed(link, &Frame::from_pcap(&packet))?,
            Err(pcap::Error::NoMorePackets) => return Ok(false),
            Err(pcap::Error::PcapError(m)) if m.contains("truncated") => return Ok(true),
            Err(e) => return Err(err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{ether, ipv4, ipv4_proto, tcp};
    use std::sync::{Arc, Mutex};

    const SYN: u8 = 0x02;
    const FIN_ACK: u8 = 0x11;
    const SYN_ACK: u8 = 0x12;
    const ACK: u8 = 0x10;
    const PSH_ACK: u8 = 0x18;

    /// A little-endian pcapng block.
    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let padded = (body.len() + 3) & !3;
        let total = (12 + padded) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&total.to_le_bytes());
        b.extend_from_slice(body);
        b.resize(8 + padded, 0);
        b.extend_from_slice(&total.to_le_bytes());
        b
    }

    fn epb(iface: u32, ts: u64, data: &[u8]) -> Vec<u8> {
        let mut body = iface.to_le_bytes().to_vec();
        body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        block(6, &body)
    }

    /// A pcapng capture of `conns` HTTP/1.1 connections of one request each
    /// from port `first_port` on, alternating between an Ethernet and a Linux
    /// cooked interface, with a UDP datagram and a frame cut inside its IP
    /// header every 500 frames, and a last block cut short. Several batches
    /// long.
    fn capture(first_port: u16, conns: u16) -> Vec<u8> {
        let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut file = block(0x0a0d_0d0a, &shb);
        for link in [1u16, 113] {
            let mut idb = link.to_le_bytes().to_vec();
            idb.extend_from_slice(&[0, 0]);
            idb.extend_from_slice(&65535u32.to_le_bytes());
            file.extend(block(1, &idb));
        }
        let (c, s) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let request: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let response: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (q, r) = (request.len() as u32, response.len() as u32);
        let mut ts = 1_700_000_000_000_000u64;
        let mut frames = 0;
        for n in 0..conns {
            let port = first_port + n;
            let segments = [
                (true, 100, 0, SYN, &[][..]),
                (false, 500, 101, SYN_ACK, &[][..]),
                (true, 101, 501, PSH_ACK, request),
                (false, 501, 101 + q, PSH_ACK, response),
                (true, 101 + q, 501 + r, FIN_ACK, &[][..]),
                (false, 501 + r, 102 + q, FIN_ACK, &[][..]),
                (true, 102 + q, 502 + r, ACK, &[][..]),
            ];
            let iface = u32::from(n % 2);
            for (from_client, seq, ack, flags, payload) in segments {
                let ip = if from_client {
                    ipv4(c, s, &tcp(port, 80, seq, ack, flags, payload))
                } else {
                    ipv4(s, c, &tcp(80, port, seq, ack, flags, payload))
                };
                let data = if iface == 0 {
                    ether(0x0800, &[], &ip)
                } else {
                    sll(&ip)
                };
                ts += 200_000;
                file.extend(epb(iface, ts, &data));
                frames += 1;
                if frames % 500 == 0 {
                    let udp = ipv4_proto(c, s, 17, &[0; 8]);
                    file.extend(epb(1, ts, &sll(&udp)));
                    file.extend(epb(0, ts, &ether(0x0800, &[], &[0x45, 0, 0])));
                }
            }
        }
        let last = epb(0, ts, &ether(0x0800, &[], &[0; 40]));
        file.extend_from_slice(&last[..last.len() - 10]);
        file
    }

    /// A Linux cooked (SLL) header before an IPv4 packet.
    fn sll(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0; 14];
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    /// A file of its own for each test.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, bytes: &[u8]) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "conntrace-pipeline-{}-{name}.pcapng",
                std::process::id()
            ));
            std::fs::write(&path, bytes).expect("temp file");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Remembers the stream numbers of the rows handed to it, in order.
    struct Streams(Arc<Mutex<Vec<u64>>>);

    impl RecordSink for Streams {
        fn connection(&mut self, r: &ConnectionRecord, _: &[RequestRecord]) -> io::Result<()> {
            self.0.lock().expect("not poisoned").push(r.stream);
            Ok(())
        }

        fn requests(&mut self, _: &[RequestRecord]) -> io::Result<()> {
            Ok(())
        }

        fn finish(&mut self, _: &Report) -> io::Result<()> {
            Ok(())
        }
    }

    /// Replays `paths` with the reader on its own thread or not: the report
    /// (or error message), and the rows a streaming sink was handed.
    fn both_ways(
        paths: &[PathBuf],
        filter: Option<&str>,
    ) -> [(Result<Report, String>, Vec<u64>); 2] {
        let options = ReplayOptions {
            filter: filter.map(str::to_string),
            ..ReplayOptions::default()
        };
        [true, false].map(|ahead| {
            let report = replay(paths, &options, Pipeline::new(&options.pipeline), ahead)
                .map_err(|e| e.to_string());
            let rows = Arc::new(Mutex::new(Vec::new()));
            let sink = Box::new(Streams(Arc::clone(&rows)));
            let streamed = replay(
                paths,
                &options,
                Pipeline::streaming(&options.pipeline, sink),
                ahead,
            );
            assert_eq!(
                streamed.map(|r| r.source).map_err(|e| e.to_string()),
                report.clone().map(|r| r.source),
            );
            let rows = rows.lock().expect("not poisoned").clone();
            (report, rows)
        })
    }

    #[test]
    fn reading_ahead_reports_what_one_thread_does() {
        let first = TempFile::new("ahead-1", &capture(10_000, 1500));
        let second = TempFile::new("ahead-2", &capture(20_000, 1500));
        let paths = [first.0.clone(), second.0.clone()];
        let [ahead, alone] = both_ways(&paths, None);
        assert_eq!(ahead, alone);
        let report = ahead.0.expect("replays");
        // What the comparison covers: two files of several batches each,
        // two link types, frames that are not TCP, anomalies numbered by
        // frame, and files cut short.
        let frames_per_file = 1500 * 7 + 2 * 21 + 1;
        assert_eq!(report.source.packets, 2 * frames_per_file);
        assert_eq!(report.source.non_tcp_packets, 2 * 21);
        assert_eq!(report.source.link_types, ["EN10MB", "LINUX_SLL"]);
        assert_eq!(report.connections.len(), 3000);
        assert_eq!(report.requests.len(), 3000);
        let firsts: Vec<u64> = report.anomalies.iter().map(|a| a.first_frame).collect();
        assert_eq!(firsts, [502, frames_per_file, 2 * frames_per_file]);
        assert_eq!(report.anomalies[0].count, 2 * 21);
        assert_eq!(ahead.1.len(), 3000);
    }

    #[test]
    fn reading_ahead_filters_as_one_thread_does() {
        let file = TempFile::new("filter", &capture(10_000, 400));
        let paths = [file.0.clone()];
        let [ahead, alone] = both_ways(&paths, Some("tcp port 10001 or udp"));
        assert_eq!(ahead, alone);
        let report = ahead.0.expect("replays");
        assert_eq!(report.source.packets, 7 + 5 + 1);
        assert_eq!(report.connections.len(), 1);

        // The filter compiles for Ethernet, not for Linux cooked: the error
        // comes after the frames before the first cooked one were tracked.
        let [ahead, alone] = both_ways(&paths, Some("ether host 02:00:00:00:00:01"));
        assert_eq!(ahead, alone);
        let message = ahead
            .0
            .expect_err("cooked frames have no Ethernet addresses");
        assert!(message.contains("bad filter"), "{message}");
    }

    #[test]
    fn reading_ahead_stops_at_a_corrupt_block_as_one_thread_does() {
        let mut bytes = capture(10_000, 1000);
        // Somewhere in the third batch, a block length no block can have.
        let at = bytes.len() * 2 / 3;
        let at = at - at % 4;
        let mut block = 0;
        while bytes[block..block + 4] != 6u32.to_le_bytes() || block < at {
            block += u32::from_le_bytes(bytes[block + 4..block + 8].try_into().unwrap()) as usize;
        }
        bytes[block + 4..block + 8].copy_from_slice(&5u32.to_le_bytes());
        let file = TempFile::new("corrupt", &bytes);
        let [ahead, alone] = both_ways(std::slice::from_ref(&file.0), None);
        assert_eq!(ahead, alone);
        let message = ahead.0.expect_err("corrupt");
        assert!(
            message.contains("block length 5 is impossible"),
            "{message}"
        );
        // Connections that ended before the bad block were streamed.
        assert!(ahead.1.len() > 500, "{}", ahead.1.len());
    }
}
