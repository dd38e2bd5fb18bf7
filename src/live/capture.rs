//! The capture thread of `conntrace run`: libpcap on the interface that reaches
//! the target, filtered to the target's address and port, with a large buffer
//! and full packets. It signals readiness before the first request is sent, hands
//! every frame to a [`FrameSink`] (the analysis pipeline), optionally saves
//! exactly what it captured to a pcap file, and stops — once the connections
//! have closed or a linger time has passed — through libpcap's breakloop, since
//! the read timeout is not reliable on Linux.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::source::{Frame, LinkType};

/// Where frames go. The capture thread owns the sink until the capture ends.
pub trait FrameSink: Send + 'static {
    fn push(&mut self, link: LinkType, frame: &Frame<'_>);
    /// Whether every connection seen so far has ended (both FINs, or a RST).
    fn all_closed(&self) -> bool;
    /// No packet came for a read timeout; capture time is at least `now`.
    fn quiet_until(&mut self, _now: crate::wire::Timestamp) {}
}

/// How far behind the wall clock the capture clock is moved on a quiet
/// link: more than a packet can wait in libpcap's buffer before delivery
/// (the read timeout), so that none arrives stamped before the time moved.
const QUIET_LAG: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the capture thread sleeps when libpcap has nothing to deliver.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// Name a finished live capture in the report's `source`: the interface,
/// the filter and what the kernel dropped.
pub fn describe_source(
    pipeline: &mut crate::pipeline::Pipeline,
    config: &CaptureConfig,
    stats: &CaptureStats,
) {
    let source = pipeline.source_mut();
    source.kind = "live";
    source.names = vec![config.interface.clone()];
    source.filter = Some(config.filter.clone());
    source.dropped = Some(stats.dropped);
}

/// What to capture, and where to save it.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub interface: String,
    pub filter: String,
    pub savefile: Option<PathBuf>,
    /// The kernel's capture buffer, in bytes; packets arriving while it is
    /// full are dropped (and counted).
    pub buffer_size: usize,
}

/// Room for bursts of loopback traffic while the capture thread waits for a
/// core. With blocks filled before delivery (see [`open`]), 20,000 requests at
/// concurrency 64 on two busy cores dropped nothing even with 8 MiB
/// (scripts/bench-live.sh); 32 MiB leaves a margin.
pub const DEFAULT_BUFFER_SIZE: usize = 32 << 20;

impl CaptureConfig {
    /// Captures the TCP traffic of `target` on the interface that reaches it.
    pub fn for_target(
        target: SocketAddr,
        interface: Option<String>,
    ) -> Result<CaptureConfig, CaptureError> {
        let interface = match interface {
            Some(i) => i,
            None => interface_for(target.ip())?,
        };
        Ok(CaptureConfig {
            interface,
            filter: bpf_filter(target),
            savefile: None,
            buffer_size: DEFAULT_BUFFER_SIZE,
        })
    }
}

/// The BPF filter for the connections to one server socket.
pub fn bpf_filter(target: SocketAddr) -> String {
    let family = if target.is_ipv4() { "" } else { "ip6 and " };
    format!(
        "{family}tcp and host {} and port {}",
        target.ip(),
        target.port()
    )
}

/// Why a capture could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "no permission to capture on {interface} ({detail}).\n\
         Run as root (sudo), or let the binary capture:\n    \
         sudo setcap cap_net_raw,cap_net_admin=eip {binary}"
    )]
    Permission {
        interface: String,
        detail: String,
        binary: String,
    },
    #[error("cannot capture on {interface}: {detail}")]
    Open { interface: String, detail: String },
    #[error("invalid capture filter {filter:?}: {detail}")]
    Filter { filter: String, detail: String },
    #[error("cannot write {path}: {detail}")]
    Savefile { path: PathBuf, detail: String },
    #[error("no interface has the address {local} that reaches {target}; choose one with -i")]
    NoInterface { target: IpAddr, local: IpAddr },
    #[error("cannot find the route to {target}: {detail}")]
    Route { target: IpAddr, detail: String },
    #[error("capture failed: {0}")]
    Read(String),
    #[error("the capture thread ended unexpectedly")]
    Thread,
}

/// The interface whose address the kernel would use to reach `target`: `lo` for
/// loopback targets.
pub fn interface_for(target: IpAddr) -> Result<String, CaptureError> {
    let local = if target.is_loopback() {
        target
    } else {
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        // Connecting a UDP socket sends nothing; it only asks for the route.
        let route = UdpSocket::bind(bind)
            .and_then(|s| s.connect((target, 9)).and_then(|_| s.local_addr()))
            .map_err(|e| CaptureError::Route {
                target,
                detail: e.to_string(),
            })?;
        route.ip()
    };
    let devices = pcap::Device::list().map_err(|e| CaptureError::Open {
        interface: "(list)".into(),
        detail: e.to_string(),
    })?;
    devices
        .iter()
        .find(|d| d.addresses.iter().any(|a| a.addr == local))
        .or_else(|| {
            local
                .is_loopback()
                .then(|| devices.iter().find(|d| d.flags.is_loopback()))
                .flatten()
        })
        .map(|d| d.name.clone())
        .ok_or(CaptureError::NoInterface { target, local })
}

/// libpcap's read timeout: the kernel hands a block of packets to the capture
/// thread when it is full or this old (TPACKET_V3's block retire timeout).
const READ_TIMEOUT_MS: i32 = 50;

/// Time within which a captured packet reaches the capture thread.
const DELIVERY: Duration = Duration::from_millis(2 * READ_TIMEOUT_MS as u64);

/// libpcap's counters at the end of a capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub frames: u64,
    /// Dropped for lack of buffer space, by the kernel or the interface.
    pub dropped: u64,
    pub link: Option<LinkType>,
}

/// Cuts a capture's linger short from another thread (a second Ctrl-C): its
/// [`LiveCapture::finish`] stops waiting for connections to close.
#[derive(Debug, Clone)]
pub struct LingerCut {
    cut: Arc<AtomicBool>,
    wake: mpsc::Sender<()>,
}

impl LingerCut {
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let _ = self.wake.send(());
    }
}

/// A running capture.
pub struct LiveCapture<S> {
    breaker: pcap::BreakLoop,
    stopped: Arc<AtomicBool>,
    finishing: Arc<AtomicBool>,
    quiet: Arc<AtomicBool>,
    linger_cut: LingerCut,
    done: mpsc::Receiver<()>,
    thread: thread::JoinHandle<Result<(S, CaptureStats), CaptureError>>,
}

impl<S: FrameSink> LiveCapture<S> {
    /// Opens the capture and returns once the capture thread is reading, so no
    /// packet sent after this returns is missed.
    pub fn start(config: &CaptureConfig, sink: S) -> Result<LiveCapture<S>, CaptureError> {
        let mut cap = open(config)?;
        let breaker = cap.breakloop_handle();
        let finishing = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let quiet = Arc::new(AtomicBool::new(true));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let linger_cut = LingerCut {
            cut: Arc::new(AtomicBool::new(false)),
            wake: done_tx.clone(),
        };
        let savefile = match &config.savefile {
            None => None,
            Some(path) => {
                if path.to_str().is_none() {
                    return Err(CaptureError::Savefile {
                        path: path.clone(),
                        detail: "the path is not valid UTF-8".into(),
                    });
                }
                Some(cap.savefile(path).map_err(|e| CaptureError::Savefile {
                    path: path.clone(),
                    detail: e.to_string(),
                })?)
            }
        };
        let thread = {
            let finishing = finishing.clone();
            let stopped = stopped.clone();
            let quiet = quiet.clone();
            thread::Builder::new()
                .name("conntrace-capture".into())
                .spawn(move || {
                    let _ = ready_tx.send(());
                    read_loop(cap, savefile, sink, &finishing, &stopped, &quiet, done_tx)
                })
                .map_err(|e| CaptureError::Read(e.to_string()))?
        };
        ready_rx.recv().map_err(|_| CaptureError::Thread)?;
        Ok(LiveCapture {
            breaker,
            stopped,
            finishing,
            quiet,
            linger_cut,
            done,
            thread,
        })
    }

    /// A handle that cuts [`LiveCapture::finish`]'s wait short.
    pub fn linger_cut(&self) -> LingerCut {
        self.linger_cut.clone()
    }

    /// Call after the last response: waits until every connection seen has
    /// closed or `linger` has passed (so closing FINs and RSTs are counted),
    /// stops the capture and gives the sink back. A [`LingerCut`] ends the
    /// wait at once.
    pub fn finish(self, linger: Duration) -> Result<(S, CaptureStats), CaptureError> {
        let start = Instant::now();
        let deadline = start.checked_add(linger).unwrap_or(start);
        self.finishing.store(true, Ordering::SeqCst);
        // Whatever was captured before now reaches the capture thread within
        // a read timeout; only then does "every connection closed" mean it.
        thread::sleep(DELIVERY);
        while self.done.try_recv().is_ok() {}
        let cut = || self.linger_cut.cut.load(Ordering::SeqCst);
        if !self.quiet.load(Ordering::SeqCst) && !cut() {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_ok() && !cut() {
                // The last close's ACKs travel in the same or the next block.
                thread::sleep(DELIVERY);
            }
        }
        self.stop()
    }

    /// Stops at once (after a drain of what libpcap already holds).
    pub fn stop(self) -> Result<(S, CaptureStats), CaptureError> {
        self.stopped.store(true, Ordering::SeqCst);
        self.breaker.breakloop();
        self.thread.join().map_err(|_| CaptureError::Thread)?
    }
}

fn is_nothing_yet(e: &pcap::Error) -> bool {
    match e {
        pcap::Error::TimeoutExpired => true,
        pcap::Error::PcapError(detail) => detail.contains("temporarily unavailable"),
        _ => false,
    }
}

fn open(config: &CaptureConfig) -> Result<pcap::Capture<pcap::Active>, CaptureError> {
    let open_error = |e: pcap::Error| {
        let detail = e.to_string();
        let lower = detail.to_lowercase();
        if lower.contains("permission") || lower.contains("not permitted") {
            CaptureError::Permission {
                interface: config.interface.clone(),
                detail,
                binary: std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "conntrace".into()),
            }
        } else {
            CaptureError::Open {
                interface: config.interface.clone(),
                detail,
            }
        }
    };
    let mut cap = pcap::Capture::from_device(config.interface.as_str())
        .map_err(open_error)?
        // No immediate mode: with it libpcap retires a TPACKET_V3 block every
        // millisecond, so the ring holds only a fraction of a second of traffic
        // and a capture thread kept off the CPU for a moment drops packets
        // (hundreds to thousands per 20,000 requests at concurrency 64 in
        // scripts/bench-live.sh, 64 MiB buffer; none without immediate mode,
        // 8 to 64 MiB). Blocks are still delivered within the 50 ms read
        // timeout, which only delays noticing the last FIN by as much.
        .immediate_mode(false)
        .snaplen(65535)
        .buffer_size(i32::try_from(config.buffer_size).unwrap_or(i32::MAX))
        .timeout(READ_TIMEOUT_MS)
        .open()
        .map_err(open_error)?;
    cap.filter(&config.filter, true)
        .map_err(|e| CaptureError::Filter {
            filter: config.filter.clone(),
            detail: e.to_string(),
        })?;
    Ok(cap)
}

fn read_loop<S: FrameSink>(
    cap: pcap::Capture<pcap::Active>,
    mut savefile: Option<pcap::Savefile>,
    mut sink: S,
    finishing: &AtomicBool,
    stopped: &AtomicBool,
    quiet: &AtomicBool,
    done: mpsc::Sender<()>,
) -> Result<(S, CaptureStats), CaptureError> {
    // Non-blocking, with a short sleep when nothing is there: with
    // TPACKET_V3 a blocking read never returns on a quiet link (an empty
    // block is not retired), and the capture clock must move on by the
    // wall clock for connections to be finalised while nothing passes.
    let mut cap = cap
        .setnonblock()
        .map_err(|e| CaptureError::Read(e.to_string()))?;
    let link = LinkType::from(cap.get_datalink());
    let mut frames = 0u64;
    let mut take = |p: &pcap::Packet<'_>, sink: &mut S| {
        frames += 1;
        if let Some(f) = savefile.as_mut() {
            f.write(p);
        }
        sink.push(link, &Frame::from_pcap(p));
    };
    let mut failure = None;
    loop {
        if stopped.load(Ordering::SeqCst) {
            break;
        }
        match cap.next_packet() {
            Ok(p) => {
                take(&p, &mut sink);
                let closed = sink.all_closed();
                quiet.store(closed, Ordering::SeqCst);
                if closed && finishing.load(Ordering::SeqCst) {
                    let _ = done.send(());
                }
            }
            // Nothing to read now; libpcap's NFLOG reader says so with
            // EAGAIN as an error where its packet-socket reader times out.
            Err(e) if is_nothing_yet(&e) => {
                let now = crate::live::driver::now();
                sink.quiet_until(crate::wire::Timestamp(
                    now.0 - i64::try_from(QUIET_LAG.as_micros()).unwrap_or(i64::MAX),
                ));
                thread::sleep(IDLE_POLL);
            }
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    // What libpcap already holds after breakloop is still part of the capture.
    // (A breakloop not yet seen by a read comes out once, first.)
    let mut break_seen = false;
    loop {
        match cap.next_packet() {
            Ok(p) => take(&p, &mut sink),
            Err(pcap::Error::NoMorePackets) if !break_seen => break_seen = true,
            Err(_) => break,
        }
    }
    if let Some(mut f) = savefile {
        f.flush().map_err(|e| CaptureError::Read(e.to_string()))?;
    }
    if let Some(detail) = failure {
        return Err(CaptureError::Read(detail));
    }
    let dropped = cap
        .stats()
        .map(|s| u64::from(s.dropped) + u64::from(s.if_dropped))
        .unwrap_or(0);
    Ok((
        sink,
        CaptureStats {
            frames,
            dropped,
            link: Some(link),
        },
    ))
}

impl FrameSink for crate::pipeline::Pipeline {
    fn push(&mut self, link: LinkType, frame: &Frame<'_>) {
        crate::pipeline::Pipeline::push(self, link, frame);
    }

    fn all_closed(&self) -> bool {
        self.open_connections() == 0
    }

    fn quiet_until(&mut self, now: crate::wire::Timestamp) {
        self.advance_clock(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_names_the_server_socket() {
        let v4: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(bpf_filter(v4), "tcp and host 127.0.0.1 and port 8080");
        let v6: SocketAddr = "[::1]:443".parse().unwrap();
        assert_eq!(bpf_filter(v6), "ip6 and tcp and host ::1 and port 443");
        for f in [bpf_filter(v4), bpf_filter(v6)] {
            assert!(crate::pipeline::check_filter(&f).is_ok(), "{f}");
        }
    }

    #[test]
    fn loopback_targets_are_captured_on_the_loopback_interface() {
        let name = interface_for("127.0.0.1".parse().unwrap()).expect("a loopback device");
        let devices = pcap::Device::list().unwrap();
        let device = devices.iter().find(|d| d.name == name).unwrap();
        assert!(device.flags.is_loopback(), "{name}");
    }
}
