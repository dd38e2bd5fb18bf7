//! `conntrace watch`: live capture of whatever passes on an interface (any
//! client, any process), as `tcpdump -i` captures, until Ctrl-C, SIGTERM or
//! `--duration`, then the report. With JSON Lines the records go out as
//! connections are finalised, while the capture runs.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::live::capture::{CaptureConfig, CaptureError, LiveCapture, DEFAULT_BUFFER_SIZE};
use crate::pipeline::{Pipeline, PipelineOptions, RecordSink};
use crate::report::Report;

/// What to watch, and for how long.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub interface: String,
    /// A BPF filter (tcpdump syntax); `tcp` when none is given.
    pub filter: String,
    pub savefile: Option<std::path::PathBuf>,
    /// Stop after this long; `None` runs until Ctrl-C or SIGTERM.
    pub duration: Option<Duration>,
    pub pipeline: PipelineOptions,
}

/// How the rows leave: kept for a document, streamed, or only counted.
pub enum Rows {
    Keep,
    Stream(Box<dyn RecordSink>),
    Count,
}

/// Captures until the duration passes or a signal comes, then reports.
pub fn watch(config: &WatchConfig, rows: Rows) -> Result<Report, CaptureError> {
    let cc = CaptureConfig {
        interface: config.interface.clone(),
        filter: config.filter.clone(),
        savefile: config.savefile.clone(),
        buffer_size: DEFAULT_BUFFER_SIZE,
    };
    let pipeline = match rows {
        Rows::Keep => Pipeline::new(&config.pipeline),
        Rows::Stream(sink) => Pipeline::streaming(&config.pipeline, sink),
        Rows::Count => Pipeline::counting(&config.pipeline),
    };
    let capture = LiveCapture::start(&cc, pipeline)?;
    let mut err = std::io::stderr().lock();
    let until = config.duration.map_or_else(
        || "Ctrl-C".to_string(),
        |d| humantime::format_duration(d).to_string(),
    );
    let _ = writeln!(
        err,
        "conntrace watch: capturing on {} ({}) until {until}",
        cc.interface, cc.filter
    );
    drop(err);
    wait(config.duration);
    let (mut pipeline, stats) = capture.stop()?;
    crate::live::capture::describe_source(&mut pipeline, &cc, &stats);
    let mut report = pipeline
        .finish()
        .map_err(|e| CaptureError::Read(e.to_string()))?;
    report.sockets = sockets_to_servers(&report);
    Ok(report)
}

/// This host's sockets to the servers of the connections watched (the 64
/// with the most connections), by state.
pub(crate) fn sockets_to_servers(report: &Report) -> Option<crate::report::SocketsReport> {
    use crate::live::sockets::{self, Peer};
    let mut servers: std::collections::HashMap<std::net::SocketAddr, u64> = Default::default();
    for c in &report.connections {
        *servers.entry(c.server).or_insert(0) += 1;
    }
    if servers.is_empty() {
        return None;
    }
    let mut servers: Vec<_> = servers.into_iter().collect();
    servers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let peers: Vec<Peer> = servers
        .iter()
        .take(64)
        .map(|(s, _)| Peer {
            ip: s.ip(),
            port: Some(s.port()),
        })
        .collect();
    let all = sockets::tcp_sockets().ok()?;
    let filter = format!("the {} server(s) watched", peers.len());
    Some(sockets::report_of(&all, &peers, Some(filter)))
}

/// Until `duration` has passed, or Ctrl-C (SIGINT) or SIGTERM came.
fn wait(duration: Option<Duration>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        if let Some(d) = duration {
            std::thread::sleep(d);
        }
        return;
    };
    let start = Instant::now();
    runtime.block_on(async move {
        let timer = async {
            match duration {
                Some(d) => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(start + d)).await
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                timer.await;
                return;
            };
            tokio::select! {
                () = timer => {}
                _ = int.recv() => eprintln!("\nconntrace watch: interrupted; reporting"),
                _ = term.recv() => eprintln!("conntrace watch: SIGTERM; reporting"),
            }
        }
        #[cfg(not(unix))]
        tokio::select! {
            () = timer => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
}
