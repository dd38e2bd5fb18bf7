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
    let source = pipeline.source_mut();
    source.kind = "live";
    source.names = vec![cc.interface.clone()];
    source.filter = Some(cc.filter.clone());
    source.dropped = Some(stats.dropped);
    pipeline
        .finish()
        .map_err(|e| CaptureError::Read(e.to_string()))
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
