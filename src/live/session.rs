//! One live run from start to report: resolve the target, open the capture and
//! wait for it to be ready, drive the requests (Ctrl-C, SIGTERM or SIGHUP
//! stops issuing them; the next one, or one after the last response, stops
//! waiting for connections to close), linger until the connections have
//! closed, then attribute every request to its connection. `conntrace run`
//! and each `demo` experiment are one session.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::live::capture::{CaptureConfig, CaptureError, LingerCut, LiveCapture};
use crate::live::correlate;
use crate::live::driver::{self, ClientRequest, DriverConfig, DriverError, StopSignal};
use crate::pipeline::{Pipeline, PipelineOptions};
use crate::report::{ClientSettings, Report, SourceInfo};

/// How to capture during a run; `None` in [`SessionConfig`] is `--no-capture`.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// The interface; by default the one that reaches the target.
    pub interface: Option<String>,
    /// Save what was captured to this pcap file.
    pub savefile: Option<PathBuf>,
    /// After the last response, wait at most this long for connections to close.
    pub linger: Duration,
    /// The kernel's capture buffer, in bytes.
    pub buffer_size: usize,
}

impl Default for CaptureSettings {
    fn default() -> CaptureSettings {
        CaptureSettings {
            interface: None,
            savefile: None,
            linger: Duration::from_secs(1),
            buffer_size: crate::live::capture::DEFAULT_BUFFER_SIZE,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub driver: DriverConfig,
    pub capture: Option<CaptureSettings>,
    /// Show a progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Stop issuing requests on Ctrl-C (SIGINT), SIGTERM or SIGHUP and still
    /// report; stop waiting for connections to close on the next one.
    pub handle_ctrl_c: bool,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{url}: {detail}")]
    Target { url: String, detail: String },
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("cannot start the client's runtime: {0}")]
    Runtime(std::io::Error),
}

/// The report of a run and the client's own records.
#[derive(Debug)]
pub struct SessionOutcome {
    pub report: Report,
    pub client: Vec<ClientRequest>,
}

/// The socket address the URL's host and port resolve to (the first IPv4 one,
/// else the first).
pub fn resolve_target(url: &reqwest::Url) -> Result<SocketAddr, SessionError> {
    let err = |detail: String| SessionError::Target {
        url: url.to_string(),
        detail,
    };
    let host = url
        .host_str()
        .ok_or_else(|| err("the URL has no host".into()))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| err("the URL has no port".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| err(format!("cannot resolve {host}: {e}")))?
        .collect();
    // One address, so that the capture filter and the client agree. IPv4
    // first: `localhost` often resolves to ::1 first while test servers
    // listen on 127.0.0.1.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| err(format!("{host} resolves to no address")))
}

/// Runs one session.
pub fn run_session(config: SessionConfig) -> Result<SessionOutcome, SessionError> {
    let target = resolve_target(&config.driver.url)?;
    let mut driver_config = config.driver.clone();
    // The client connects to the address the capture filters on.
    driver_config.resolve = Some(target);
    let settings = client_settings(&driver_config);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(SessionError::Runtime)?;
    // Installed before anything starts, so that from now on these signals
    // end the run with a report instead of ending the process.
    let interrupts = if config.handle_ctrl_c {
        let _inside = runtime.enter();
        Some(Interrupts::install().map_err(SessionError::Runtime)?)
    } else {
        None
    };

    let capture = match &config.capture {
        None => None,
        Some(c) => {
            let mut cc = CaptureConfig::for_target(target, c.interface.clone())?;
            cc.savefile = c.savefile.clone();
            cc.buffer_size = c.buffer_size;
            // Judged once, after the client's records joined (correlate).
            let options = PipelineOptions {
                diagnose: false,
                ..PipelineOptions::default()
            };
            let capture = LiveCapture::start(&cc, Pipeline::new(&options))?;
            Some((capture, cc, c.linger))
        }
    };

    let stop = StopSignal::default();
    let requests_done = Arc::new(AtomicBool::new(false));
    if let Some(interrupts) = interrupts {
        let cut = capture.as_ref().map(|(c, _, _)| c.linger_cut());
        runtime.spawn(interrupts.watch(stop.clone(), requests_done.clone(), cut));
    }
    let bar = progress_bar(config.progress, driver_config.requests);
    let on_done = {
        let bar = bar.clone();
        Arc::new(move |_: &ClientRequest| bar.inc(1))
    };
    let driven = runtime.block_on(driver::drive(
        Arc::new(driver_config),
        stop.clone(),
        on_done,
    ));
    requests_done.store(true, Ordering::SeqCst);
    bar.finish_and_clear();
    let client = match driven {
        Ok(c) => c,
        Err(e) => {
            if let Some((capture, _, _)) = capture {
                let _ = capture.stop();
            }
            return Err(e.into());
        }
    };
    let interrupted = stop.is_stopped();

    let report = match capture {
        None => {
            let source = SourceInfo {
                names: vec![target.to_string()],
                ..SourceInfo::default()
            };
            correlate::client_only(source, &client, settings, interrupted)
        }
        Some((capture, cc, linger)) => {
            // The runtime keeps running: the client's connections close now,
            // also after Ctrl-C, so their FINs and RSTs are in the report.
            let (mut pipeline, stats) = capture.finish(linger)?;
            crate::live::capture::describe_source(&mut pipeline, &cc, &stats);
            let mut report = pipeline
                .finish()
                .expect("a pipeline that keeps its rows writes nowhere");
            correlate::attribute(&mut report, &client, settings, interrupted);
            report
        }
    };
    runtime.shutdown_background();
    // The client's sockets to the target as the run leaves them (TIME-WAIT
    // from the connections it closed first, CLOSE-WAIT it never closed).
    let mut report = report;
    report.sockets = crate::live::sockets::tcp_sockets().ok().map(|all| {
        let peer = crate::live::sockets::Peer {
            ip: target.ip(),
            port: Some(target.port()),
        };
        crate::live::sockets::report(&all, Some(peer), Some(target.to_string()))
    });
    if let Some(c) = &report.client {
        for r in &c.requests {
            if let Some(d) = &r.disagreement {
                eprintln!("conntrace: warning: attribution disagrees: {d}");
            }
        }
    }
    Ok(SessionOutcome { report, client })
}

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP: the ways a run is asked to stop.
struct Interrupts {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 3],
}

impl Interrupts {
    /// Takes over the signals; call inside the runtime.
    fn install() -> std::io::Result<Interrupts> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Interrupts {
                signals: [
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::hangup())?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Interrupts {})
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            let [int, term, hup] = &mut self.signals;
            tokio::select! {
                Some(()) = int.recv() => "interrupted",
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = hup.recv() => "SIGHUP",
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "interrupted",
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// The first signal while requests are issued stops issuing them; any
    /// other ends the linger at once.
    async fn watch(
        mut self,
        stop: StopSignal,
        requests_done: Arc<AtomicBool>,
        cut: Option<LingerCut>,
    ) {
        loop {
            let what = self.next().await;
            if !stop.is_stopped() && !requests_done.load(Ordering::SeqCst) {
                let again = if cut.is_some() {
                    " (again to stop waiting for connections to close)"
                } else {
                    ""
                };
                eprintln!("conntrace: {what}; finishing the report{again}");
                stop.stop();
            } else if let Some(cut) = &cut {
                eprintln!("conntrace: {what}; reporting without waiting for connections to close");
                cut.cut();
            }
        }
    }
}

fn progress_bar(wanted: bool, total: u64) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {pos}/{len} requests [{bar:30}] {per_sec} {elapsed_precise}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The settings section of the report, from the driver's configuration.
pub fn client_settings(c: &DriverConfig) -> ClientSettings {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    ClientSettings {
        url: c.url.to_string(),
        method: c.effective_method().to_string(),
        requests: c.requests,
        concurrency: c.concurrency as u64,
        drain: c.drain,
        http: c.http.as_str(),
        pool_max_idle_per_host: c.pool_max_idle_per_host.map(|n| n as u64),
        pool_idle_timeout_ms: c.pool_idle_timeout.map(ms),
        interval_ms: c.interval.map(ms),
        timeout_ms: c.timeout.map(ms),
        retries: c.retries,
        insecure: c.insecure,
        headers: c
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_to_one_address_ipv4_first() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(
            resolve_target(&url("http://localhost:8080/")).unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            resolve_target(&url("https://[::1]/")).unwrap(),
            "[::1]:443".parse().unwrap()
        );
        assert_eq!(
            resolve_target(&url("http://127.0.0.1/")).unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
    }
}
