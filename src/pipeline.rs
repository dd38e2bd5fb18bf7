//! The one pipeline every command shares: frames in (from files or a live
//! capture), [`Report`] out. `replay`, `run` and `audit` differ only in where
//! the frames come from.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::PathBuf;

use crate::decode::{decode, Decoded};
use crate::flow::FlowTable;
use crate::report::{AnomalyCount, Report, SourceInfo, Summary, ToolInfo};
use crate::source::{CaptureReader, Frame, LinkType, ReadError, Record};

/// Settings of the analysis itself, whatever the source.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Parse the bytes inside each connection (HTTP/1, h2c, TLS ClientHello).
    pub http: bool,
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions { http: true }
    }
}

/// Frames in, report out.
#[derive(Debug)]
pub struct Pipeline {
    table: FlowTable,
    source: SourceInfo,
    link_types: Vec<LinkType>,
    /// Reason → (count, first frame number).
    anomalies: BTreeMap<String, (u64, u64)>,
}

impl Pipeline {
    pub fn new(options: &PipelineOptions) -> Pipeline {
        Pipeline {
            table: FlowTable::new(options.http),
            source: SourceInfo::default(),
            link_types: Vec::new(),
            anomalies: BTreeMap::new(),
        }
    }

    /// Account one frame captured with link type `link`.
    pub fn push(&mut self, link: LinkType, frame: &Frame<'_>) {
        self.source.packets += 1;
        if !self.link_types.contains(&link) {
            self.link_types.push(link);
        }
        match decode(link, frame) {
            Decoded::Tcp(seg) => {
                self.source.tcp_packets += 1;
                let payload = frame.data.get(seg.payload.clone()).unwrap_or(&[]);
                self.table.on_segment(&seg, payload);
            }
            Decoded::NotTcp => self.source.non_tcp_packets += 1,
            Decoded::Anomaly(a) => self.note_anomaly(a.to_string()),
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

    /// Connections seen so far.
    pub fn connections(&self) -> usize {
        self.table.len()
    }

    pub fn finish(self) -> Report {
        let (connections, requests) = self.table.finish();
        let summary = Summary::tally(&connections, &requests);
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
        Report {
            tool: ToolInfo::default(),
            source,
            connections,
            requests,
            summary,
            anomalies,
        }
    }
}

/// What `replay` reads and how.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    pub pipeline: PipelineOptions,
    /// A BPF filter (tcpdump syntax), applied to every frame.
    pub filter: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] ReadError),
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
    let mut pipeline = Pipeline::new(&options.pipeline);
    let mut filter = options.filter.as_ref().map(|expr| FilterSet {
        expr: expr.clone(),
        programs: HashMap::new(),
    });
    for path in paths {
        let mut reader = CaptureReader::open(path)?;
        while let Some(record) = reader.next_record()? {
            match record {
                Record::Frame(link, frame) => {
                    if let Some(filter) = &mut filter {
                        let keep = filter.matches(link, frame.data).map_err(|message| {
                            ReplayError::Filter {
                                path: path.clone(),
                                filter: filter.expr.clone(),
                                link: link.name(),
                                message,
                            }
                        })?;
                        if !keep {
                            continue;
                        }
                    }
                    pipeline.push(link, &frame);
                }
                Record::CutShort => {
                    pipeline.source_mut().packets += 1;
                    pipeline.note_anomaly(format!(
                        "capture file cut short in the middle of a packet ({})",
                        path.display()
                    ));
                    break;
                }
            }
        }
    }
    let source = pipeline.source_mut();
    source.kind = "file";
    source.names = paths.iter().map(|p| p.display().to_string()).collect();
    source.filter = options.filter.clone();
    Ok(pipeline.finish())
}
