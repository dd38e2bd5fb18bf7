//! A busy capture in which the kernel dropped packets: wrk with 64 keep-alive
//! connections and ab without keep-alive against nginx on loopback, recorded
//! by tcpdump with a buffer too small to keep up. Lost SYNs, FINs and
//! requests are where a tracker's state goes wrong: a stream numbered
//! differently from tshark from the first lost handshake on, or a long
//! keep-alive stream whose requests stop being found after some gaps.
//!
//! The truth per stream comes from how the load is built (every request is
//! one `GET / ...` segment from the client) and from tshark's frames: the
//! client segments whose payload starts with `GET ` and that tshark does not
//! call retransmissions. Stream numbers must equal tshark's.

use crate::common::{self, tshark};

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn installed(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

struct Nginx {
    conf: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn start(dir: &Path, port: u16) -> Nginx {
        std::fs::create_dir_all(dir.join("www")).unwrap();
        // About 2 KB: a response of two segments on loopback.
        std::fs::write(dir.join("www/index.html"), "x".repeat(2000)).unwrap();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\ndaemon on;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{ access_log off; keepalive_requests 100000;\n\
                 server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let nginx = Nginx {
            conf,
            dir: dir.to_path_buf(),
        };
        assert!(nginx.signal(&[]), "nginx starts");
        nginx
    }

    fn signal(&self, extra: &[&str]) -> bool {
        Command::new("nginx")
            .arg("-c")
            .arg(&self.conf)
            .arg("-p")
            .arg(&self.dir)
            .args(extra)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.signal(&["-s", "stop"]);
    }
}

/// Records the load on `port` with a small kernel buffer; returns the
/// packets tcpdump says the kernel dropped.
fn record(pcap: &Path, port: u16, seconds: u32, ab_requests: u32) -> u64 {
    let mut tcpdump = Command::new("tcpdump")
        .args(["-i", "lo", "-B", "32", "-w"])
        .arg(pcap)
        .arg(format!("tcp port {port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump starts");
    let mut stderr = BufReader::new(tcpdump.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "tcpdump stopped before listening"
        );
    }
    let url = format!("http://127.0.0.1:{port}/");
    let wrk = Command::new("wrk")
        .args(["-t2", "-c64", &format!("-d{seconds}s"), &url])
        .stdout(Stdio::null())
        .spawn()
        .expect("wrk starts");
    let ab = Command::new("ab")
        .args(["-q", "-n", &ab_requests.to_string(), "-c", "8", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ab runs");
    assert!(ab.success(), "ab succeeds");
    assert!(wrk.wait_with_output().unwrap().status.success());
    // The clients are gone; their last FINs are on the wire once the kernel
    // holds no connection to the port but in TIME-WAIT. (The capture is
    // compared with tshark's reading of the same file, so a packet tcpdump
    // missed at the end changes nothing judged here.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while open_connections(port) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let stopped = Command::new("kill")
        .args(["-INT", &tcpdump.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    tcpdump.wait().unwrap();
    rest.lines()
        .find_map(|l| l.strip_suffix(" packets dropped by kernel"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("tcpdump's summary has no drop count: {rest}"))
}

/// Per tshark stream: the time of its first frame, and the requests the
/// client sent before both sides had sent a FIN (`before`) and after
/// (`after`: a later connection on the same 4-tuple whose SYN was lost,
/// which tshark keeps in the same stream).
#[derive(Debug, Default)]
struct Truth {
    first: Option<f64>,
    before: u64,
    after: u64,
}

fn truth(pcap: &Path, port: u16) -> BTreeMap<u64, Truth> {
    let args: Vec<String> = [
        "-n",
        "--disable-protocol",
        "http",
        "-T",
        "fields",
        "-e",
        "tcp.stream",
        "-e",
        "frame.time_epoch",
        "-e",
        "tcp.srcport",
        "-e",
        "tcp.flags.fin",
        "-e",
        "tcp.analysis.retransmission",
        "-e",
        "tcp.payload",
        "-Y",
        "tcp",
    ]
    .map(String::from)
    .to_vec();
    let out = tshark::ask(pcap, &args).expect("tshark runs");
    let mut streams: BTreeMap<u64, Truth> = BTreeMap::new();
    let mut fins: BTreeMap<u64, HashSet<bool>> = BTreeMap::new();
    for line in out.stdout.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let field = |k: usize| f.get(k).copied().unwrap_or("");
        let Ok(stream) = field(0).parse::<u64>() else {
            continue;
        };
        let from_server = field(2) == port.to_string();
        let s = streams.entry(stream).or_default();
        s.first.get_or_insert(field(1).parse().unwrap());
        let closed = fins.get(&stream).is_some_and(|f| f.len() == 2);
        // "GET " in hex, the start of every request this load sends.
        if !from_server && field(5).starts_with("47455420") && field(4).is_empty() {
            if closed {
                s.after += 1;
            } else {
                s.before += 1;
            }
        }
        if field(3) == "1" {
            fins.entry(stream).or_default().insert(from_server);
        }
    }
    streams
}

#[test]
fn a_capture_with_kernel_drops_agrees_with_tshark_stream_by_stream() {
    if !common::can_capture("a_capture_with_kernel_drops_agrees_with_tshark_stream_by_stream") {
        return;
    }
    let tools = [
        ("nginx", "-v"),
        ("tcpdump", "--version"),
        ("wrk", "--version"),
        ("ab", "-V"),
    ]
    .iter()
    .all(|(tool, version)| installed(tool, version));
    if !common::need("nginx, tcpdump, wrk and ab", tools && tshark::available()) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("conntrace-lossy-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nginx = Nginx::start(&dir, port);
    let pcap = dir.join("lossy.pcap");
    // More load each time until the kernel drops packets (at once, here).
    let dropped = (1..=3)
        .map(|round| record(&pcap, port, round, 1500 * round))
        .find(|&d| d > 0);
    drop(nginx);
    let dropped = dropped.expect("the kernel dropped packets in one of three rounds");

    let truth = truth(&pcap, port);
    let out = Command::new(common::binary())
        .arg("replay")
        .arg(&pcap)
        .args(["-f", "jsonl"])
        .output()
        .unwrap();
    let mut first: BTreeMap<u64, f64> = BTreeMap::new();
    let mut requests: BTreeMap<u64, u64> = BTreeMap::new();
    for line in String::from_utf8_lossy(common::stdout_of(&out)).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let stream = v["stream"].as_u64();
        match (v["type"].as_str(), stream) {
            (Some("connection"), Some(s)) => {
                first.insert(s, v["first_seen"].as_f64().unwrap());
            }
            (Some("request"), Some(s)) => *requests.entry(s).or_default() += 1,
            _ => {}
        }
    }
    let mut wrong = Vec::new();
    for (stream, t) in &truth {
        match first.get(stream) {
            Some(ours) if (ours - t.first.unwrap()).abs() < 2e-6 => {}
            ours => wrong.push(format!(
                "stream {stream}: first seen {ours:?}, tshark {:?}",
                t.first
            )),
        }
        let ours = requests.get(stream).copied().unwrap_or(0);
        if ours != t.before {
            wrong.push(format!(
                "stream {stream}: {ours} requests, the client sent {} before the close ({} after)",
                t.before, t.after
            ));
        }
    }
    if first.len() != truth.len() {
        wrong.push(format!("{} streams, tshark {}", first.len(), truth.len()));
    }
    let total: u64 = truth.values().map(|t| t.before).sum();
    let longest = truth.values().map(|t| t.before).max().unwrap_or(0);
    eprintln!(
        "{dropped} packets dropped by the kernel; {} streams, {total} requests, the longest \
         stream {longest}; {} disagreements",
        truth.len(),
        wrong.len()
    );
    if wrong.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("the capture is kept: {}", pcap.display());
    }
    assert!(
        longest > 100,
        "wrk's keep-alive streams carry many requests"
    );
    assert!(
        wrong.is_empty(),
        "{}",
        wrong[..wrong.len().min(30)].join("\n")
    );
}

/// Connections to or from `port` the kernel holds in a state other than
/// TIME-WAIT, the listening socket aside (`ss`).
fn open_connections(port: u16) -> usize {
    let filter = format!("( sport = :{port} or dport = :{port} )");
    let out = Command::new("ss")
        .args(["-Htn", "state", "connected", "exclude", "time-wait"])
        .arg(filter)
        .output()
        .expect("ss runs");
    String::from_utf8_lossy(&out.stdout).lines().count()
}
