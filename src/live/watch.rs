//! `conntrace watch`: live capture of whatever passes on an interface (any
//! client, any process), as `tcpdump -i` captures, until Ctrl-C, SIGTERM or
//! `--duration`, then the report. With JSON Lines the records go out as
//! connections are finalised, while the capture runs. On a terminal, a view
//! of the tallies updates in place on standard error once a second.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::live::capture::{
    CaptureConfig, CaptureError, FrameSink, LiveCapture, DEFAULT_BUFFER_SIZE,
};
use crate::pipeline::{Glance, Pipeline, PipelineOptions, RecordSink};
use crate::report::Report;
use crate::source::{Frame, LinkType};

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
    /// Redraw the tallies in place on standard error (a terminal) while
    /// capturing.
    pub live_view: bool,
}

/// How the rows leave: kept for a document, streamed, or only counted.
pub enum Rows {
    Keep,
    Stream(Box<dyn RecordSink>),
    Count,
}

impl Rows {
    /// The pipeline that keeps, streams or counts the rows so.
    pub fn pipeline(self, options: &PipelineOptions) -> Pipeline {
        match self {
            Rows::Keep => Pipeline::new(options),
            Rows::Stream(sink) => Pipeline::streaming(options, sink),
            Rows::Count => Pipeline::counting(options),
        }
    }
}

/// Captures until the duration passes or a signal comes, then reports.
pub fn watch(config: &WatchConfig, rows: Rows) -> Result<Report, CaptureError> {
    let cc = CaptureConfig {
        interface: config.interface.clone(),
        filter: config.filter.clone(),
        savefile: config.savefile.clone(),
        buffer_size: DEFAULT_BUFFER_SIZE,
    };
    let pipeline = rows.pipeline(&config.pipeline);
    let shown = config
        .live_view
        .then(|| Arc::new(Mutex::new(pipeline.glance())));
    let sink = Glancing {
        pipeline,
        shown: shown.clone(),
        updated: Instant::now(),
    };
    let capture = LiveCapture::start(&cc, sink)?;
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
    let start = Instant::now();
    let mut drawn = 0;
    let mut tick = || {
        if let Some(shown) = &shown {
            let glance = shown.lock().map(|g| g.clone()).unwrap_or_default();
            drawn = redraw(drawn, &view(&glance, start.elapsed()));
        }
    };
    wait(config.duration, &mut tick);
    if shown.is_some() {
        redraw(drawn, &[]);
    }
    let (sink, stats) = capture.stop()?;
    let mut pipeline = sink.pipeline;
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

/// The pipeline, and a copy of its tallies for the view when there is one,
/// refreshed at most every 200 ms as packets come (and when the link is
/// quiet).
struct Glancing {
    pipeline: Pipeline,
    shown: Option<Arc<Mutex<Glance>>>,
    updated: Instant,
}

impl Glancing {
    fn refresh(&mut self) {
        let Some(shown) = &self.shown else {
            return;
        };
        if self.updated.elapsed() >= Duration::from_millis(200) {
            self.updated = Instant::now();
            if let Ok(mut g) = shown.lock() {
                *g = self.pipeline.glance();
            }
        }
    }
}

impl FrameSink for Glancing {
    fn push(&mut self, link: LinkType, frame: &Frame<'_>) {
        self.pipeline.push(link, frame);
        self.refresh();
    }

    fn all_closed(&self) -> bool {
        self.pipeline.open_connections() == 0
    }

    fn quiet_until(&mut self, now: crate::wire::Timestamp) {
        self.pipeline.advance_clock(now);
        self.refresh();
    }
}

/// The view's lines: what is open now, what was finalised, why connections
/// were opened.
pub fn view(g: &Glance, elapsed: Duration) -> Vec<String> {
    use crate::render::count;
    let ratio = if g.requests > 0 {
        format!(
            " ({:.0}%)",
            100.0 * g.reused_requests as f64 / g.requests as f64
        )
    } else {
        String::new()
    };
    let mut causes: Vec<(&String, &u64)> = g.causes.iter().collect();
    causes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let causes = if causes.is_empty() {
        "none yet".to_string()
    } else {
        causes
            .iter()
            .take(5)
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        format!(
            "{:.0} s: {}, {} ({} open now)",
            elapsed.as_secs_f64(),
            count(g.packets, "packet"),
            count(g.connections, "connection"),
            g.open
        ),
        format!(
            "finalised: {}, {}, {} reused a connection{ratio}",
            count(g.finalised, "connection"),
            count(g.requests, "request"),
            g.reused_requests
        ),
        format!("why new connections: {causes}"),
    ]
}

/// Replaces the `drawn` lines last written to standard error with `lines`
/// (cursor up, clear to the end of the screen); returns how many it drew.
fn redraw(drawn: usize, lines: &[String]) -> usize {
    let mut out = String::new();
    if drawn > 0 {
        out.push_str(&format!("\x1b[{drawn}A\r\x1b[J"));
    }
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(out.as_bytes());
    let _ = err.flush();
    lines.len()
}

/// Until `duration` has passed, or Ctrl-C (SIGINT) or SIGTERM came; `tick`
/// runs once a second meanwhile.
fn wait(duration: Option<Duration>, tick: &mut dyn FnMut()) {
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
            let mut second = tokio::time::interval(Duration::from_secs(1));
            second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            tokio::pin!(timer);
            loop {
                tokio::select! {
                    () = &mut timer => break,
                    _ = int.recv() => {
                        eprintln!("\nconntrace watch: interrupted; reporting");
                        break;
                    }
                    _ = term.recv() => {
                        eprintln!("conntrace watch: SIGTERM; reporting");
                        break;
                    }
                    _ = second.tick() => tick(),
                }
            }
        }
        #[cfg(not(unix))]
        tokio::select! {
            () = timer => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
}
