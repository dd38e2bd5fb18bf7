//! `conntrace audit -- CMD`: only the command's connections (and its
//! children's), while another process talks to the same server and port;
//! its stdout, exit status and user are its own; signals reach it; nothing
//! of the audit (cgroup, nftables table) outlives it, even a SIGKILL.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conntrace::live::server::{ServerConfig, TestServer};

use crate::common;

fn server() -> TestServer {
    TestServer::start("127.0.0.1:0".parse().unwrap(), ServerConfig::default()).unwrap()
}

/// Whether `tool --version` runs.
fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Audits run one at a time here: each test checks that nothing of any
/// audit is left in nftables or the cgroup tree, which a concurrent audit
/// would fill.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn can_audit() -> bool {
    common::can_capture("audit")
        && common::need("nft (apt install nftables)", installed("nft"))
        && common::need("curl (apt install curl)", installed("curl"))
}

/// Someone else's traffic, from this test's own process, until stopped.
struct Neighbour {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u32>,
}

impl Neighbour {
    /// Stop it; the number of connections it made.
    fn stop(self) -> u32 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// Traffic to `addr`: connections of two requests each, one every 20 ms.
/// Returns once its first connection has been answered.
fn neighbour(addr: SocketAddr) -> Neighbour {
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, first) = std::sync::mpsc::channel();
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut connections = 0;
        while !stopped.load(Ordering::SeqCst) {
            let mut sock = TcpStream::connect(addr).unwrap();
            connections += 1;
            for _ in 0..2 {
                sock.write_all(b"GET /other HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                let mut buf = [0u8; 4096];
                let n = sock.read(&mut buf).unwrap();
                assert!(n > 0);
            }
            let _ = answered.send(());
            // The pace of its traffic, not a wait for anything.
            std::thread::sleep(Duration::from_millis(20));
        }
        connections
    });
    first
        .recv_timeout(Duration::from_secs(10))
        .expect("the neighbour's first connection is answered");
    Neighbour { stop, thread }
}

/// What nftables and the cgroup v2 tree hold of audits, read without
/// conntrace: `nft list tables` and the cgroup2 mount's directories.
fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&tables.stdout).lines() {
        if line.contains("conntrace_audit_") {
            found.push(line.to_string());
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mounts.lines().filter(|l| l.contains(" - cgroup2 ")) {
        let dir = line.split_whitespace().nth(4).unwrap();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with("conntrace_audit_")
            {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

fn audit(args: &[&str]) -> Output {
    Command::new(common::binary())
        .arg("audit")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn only_the_commands_connections_and_its_childrens_are_reported() {
    if !can_audit() {
        return;
    }
    let _one = one_at_a_time();
    let server = server();
    let url = format!("http://{}/", server.addr());
    let other = neighbour(server.addr());
    // Two curls, children of a shell: the first reuses its connection for
    // its second URL. Each prints the local port of every transfer: the
    // client's own view of its connections.
    let script = format!(
        "curl -s -o /dev/null -o /dev/null -w '%{{local_port}}\\n' {url} {url}; \
         sleep 0.2; curl -s -o /dev/null -w '%{{local_port}}\\n' {url}"
    );
    let out = audit(&["-f", "json", "--", "sh", "-c", &script]);
    let others = other.stop();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Standard output is the command's; the report went to stderr.
    let ports: Vec<u16> = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 3, "one port per transfer");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let json = &stderr[stderr.find("{\n").expect("a JSON report on stderr")..];
    let report: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut seen: Vec<u16> = report["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["client"]
                .as_str()
                .unwrap()
                .parse::<SocketAddr>()
                .unwrap()
                .port()
        })
        .collect();
    seen.sort_unstable();
    let mut expected = ports.clone();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(seen, expected, "exactly the command's connections");
    assert_eq!(report["summary"]["requests"], 3);
    assert_eq!(report["summary"]["reused_requests"], 1);
    assert!(report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["target"] == "/"));
    let a = &report["audit"];
    assert_eq!(a["attribution"], "cgroup");
    assert_eq!(a["may_include_other_processes"], false);
    assert_eq!(a["exit_code"], 0);
    assert!(others >= 2, "the neighbour ran meanwhile ({others})");
    assert!(
        a["excluded_packets"].as_u64().unwrap() > 0,
        "the neighbour's packets counted as excluded: {a}"
    );
    assert_eq!(leftovers(), Vec::<String>::new());
}

#[test]
fn the_exit_status_and_the_user_are_the_commands() {
    if !can_audit() {
        return;
    }
    let _one = one_at_a_time();
    // 3 is also conntrace's own "no privilege": the command's status wins.
    let out = audit(&["-f", "summary", "--", "sh", "-c", "echo out; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    // Other tests' traffic may pass meanwhile: the count of excluded
    // packets is theirs.
    let said = String::from_utf8_lossy(&out.stderr);
    let note = said
        .lines()
        .find(|l| l.starts_with("Audit of "))
        .unwrap_or_else(|| panic!("no audit note: {said}"));
    assert!(
        note.starts_with(
            "Audit of `sh -c 'echo out; exit 3'` (exit 3): only its packets \
             (cgroup v2 + nftables + NFLOG; "
        ) && note.ends_with(" of other processes excluded)."),
        "{note}"
    );
    // Under sudo the command runs as the invoking user, with that user's
    // groups; --as-root keeps root.
    let as_user = |extra: &[&str]| {
        let out = Command::new(common::binary())
            .arg("audit")
            .args(extra)
            .args(["-f", "summary", "--", "sh", "-c", "id -u; id -g"])
            .env("SUDO_UID", "65534")
            .env("SUDO_GID", "65534")
            .env("SUDO_USER", "nobody")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(as_user(&[]), "65534\n65534\n");
    assert_eq!(as_user(&["--as-root"]), "0\n0\n");
    assert_eq!(leftovers(), Vec::<String>::new());
}

/// Reads `child`'s stderr until the audit says the command runs.
fn until_running(child: &mut Child) -> BufReader<std::process::ChildStderr> {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("running") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "audit ended before running the command: {said}"
        );
        said.push_str(&line);
    }
    stderr
}

fn spawn_audit(args: &[&str]) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new(common::binary())
        .arg("audit")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A process group of its own, as a terminal's job: Ctrl-C goes to
        // the whole group.
        .process_group(0)
        .spawn()
        .unwrap()
}

fn signal(pid: i32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), "--", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_for(child: Child, limit: Duration) -> std::process::ExitStatus {
    common::exit_within(child, limit)
        .1
        .unwrap_or_else(|| panic!("still running after {limit:?}"))
}

#[test]
fn ctrl_c_and_sigterm_reach_the_command_and_the_report_follows() {
    if !can_audit() {
        return;
    }
    let _one = one_at_a_time();
    // Ctrl-C: the terminal signals the job's whole process group.
    let mut child = spawn_audit(&["-f", "json", "--", "sleep", "30"]);
    let mut stderr = until_running(&mut child);
    let pid = child.id() as i32;
    signal(-pid, "INT");
    let status = wait_for(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "128 + SIGINT");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&rest[rest.find("{\n").unwrap()..]).unwrap();
    assert_eq!(report["audit"]["signal"], 2);
    assert_eq!(report["audit"]["interrupted"], true);

    // SIGTERM to conntrace alone is passed on.
    let mut child = spawn_audit(&["-f", "summary", "--", "sleep", "30"]);
    let _stderr = until_running(&mut child);
    signal(child.id() as i32, "TERM");
    let status = wait_for(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(143), "128 + SIGTERM");
    assert_eq!(leftovers(), Vec::<String>::new());
}

#[test]
fn after_a_sigkill_the_next_audit_works_and_removes_what_was_left() {
    if !can_audit() {
        return;
    }
    let _one = one_at_a_time();
    let mut child = spawn_audit(&["-f", "summary", "--", "sleep", "1"]);
    let _stderr = until_running(&mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !leftovers().is_empty(),
        "a SIGKILL leaves the table and the cgroup"
    );
    let server = server();
    let url = format!("http://{}/", server.addr());
    let out = audit(&[
        "-f",
        "json",
        "-o",
        "/dev/null",
        "--",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        &url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The killed audit's sleep may still run; the sweep moved it out.
    assert_eq!(leftovers(), Vec::<String>::new());
}

#[test]
fn without_root_it_says_why_in_one_line_and_offers_filter() {
    if !can_audit() {
        return;
    }
    let _one = one_at_a_time();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(common::binary())
        .args(["audit", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "no privilege");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("needs root") && stderr.contains("--filter"),
        "{stderr}"
    );
}

/// The JSON report an audit wrote to its standard error.
fn report_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json = &stderr[stderr.find("{\n").expect("a JSON report on stderr")..];
    serde_json::from_str(json).unwrap()
}

#[test]
fn curl_with_five_urls_is_one_connection_at_depths_one_to_five() {
    if !can_audit() {
        return;
    }
    let _one = one_at_a_time();
    let server = server();
    let urls: Vec<String> = (1..=5)
        .map(|i| format!("http://{}/{i}", server.addr()))
        .collect();
    let mut args = vec!["-f", "json", "--", "curl", "-s"];
    for url in &urls {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let report = report_of(&audit(&args));
    assert_eq!(report["summary"]["connections"], 1);
    assert_eq!(report["summary"]["requests"], 5);
    let depths: Vec<u64> = report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["depth"].as_u64().unwrap())
        .collect();
    assert_eq!(depths, [1, 2, 3, 4, 5]);
}

#[test]
fn python_urllib_opens_a_connection_per_request() {
    if !can_audit() || !common::need("python3 (apt install python3)", installed("python3")) {
        return;
    }
    let _one = one_at_a_time();
    let server = server();
    let url = format!("http://{}/", server.addr());
    // urllib.request sends `Connection: close`: a connection per request,
    // and the client's own view is its five local ports, printed.
    let script = "import sys, urllib.request\n\
                  for _ in range(5):\n    \
                  with urllib.request.urlopen(sys.argv[1]) as r:\n        \
                  r.read()\n";
    let report = report_of(&audit(&["-f", "json", "--", "python3", "-c", script, &url]));
    assert_eq!(report["summary"]["connections"], 5);
    assert_eq!(report["summary"]["requests"], 5);
    assert_eq!(report["summary"]["reused_requests"], 0);
}

#[test]
fn connections_shorter_than_a_millisecond_are_all_seen() {
    if !can_audit() || !common::need("python3 (apt install python3)", installed("python3")) {
        return;
    }
    let _one = one_at_a_time();
    let server = server();
    // Twenty connections opened and closed at once; the client prints the
    // local port of each, its own view of them.
    let script = "import socket, sys\n\
                  host, port = sys.argv[1].rsplit(':', 1)\n\
                  for _ in range(20):\n    \
                  s = socket.create_connection((host, int(port)))\n    \
                  print(s.getsockname()[1])\n    \
                  s.close()\n";
    let addr = server.addr().to_string();
    let out = audit(&["-f", "json", "--", "python3", "-c", script, &addr]);
    let mut ports: Vec<u16> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let report = report_of(&out);
    let conns = report["connections"].as_array().unwrap();
    let mut seen: Vec<u16> = conns
        .iter()
        .map(|c| {
            let client: SocketAddr = c["client"].as_str().unwrap().parse().unwrap();
            client.port()
        })
        .collect();
    ports.sort_unstable();
    seen.sort_unstable();
    assert_eq!(ports.len(), 20);
    assert_eq!(seen, ports, "every connection, however short");
    let short = conns
        .iter()
        .filter(|c| (c["closed_at"].as_f64().unwrap() - c["first_seen"].as_f64().unwrap()) < 0.001)
        .count();
    assert!(short > 0, "some closed within a millisecond of their SYN");
}

#[test]
fn the_saved_capture_holds_only_the_commands_packets() {
    if !can_audit() {
        return;
    }
    let _one = one_at_a_time();
    let server = server();
    let url = format!("http://{}/", server.addr());
    let other = neighbour(server.addr());
    let dir = std::env::temp_dir().join(format!("conntrace-audit-w-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("cmd.pcap");
    let report = report_of(&audit(&[
        "-f",
        "json",
        "-w",
        pcap.to_str().unwrap(),
        "--",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        &url,
        &url,
    ]));
    assert!(other.stop() >= 2, "the neighbour ran meanwhile");
    // Replayed, the file says what the audit said: the neighbour's
    // connections are not in it.
    let out = Command::new(common::binary())
        .args(["replay", "-f", "json"])
        .arg(&pcap)
        .output()
        .unwrap();
    let replayed = common::report_of(&out);
    let _ = std::fs::remove_dir_all(&dir);
    for field in ["connections", "requests", "reused_requests"] {
        assert_eq!(
            replayed["summary"][field], report["summary"][field],
            "{field}"
        );
    }
    assert_eq!(report["summary"]["connections"], 1);
    assert_eq!(report["summary"]["requests"], 2);
    assert_eq!(
        replayed["connections"][0]["client"],
        report["connections"][0]["client"]
    );
}
