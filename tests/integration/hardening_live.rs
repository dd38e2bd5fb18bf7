//! The live commands where they used to break: errors that named their cause
//! twice, exit codes that said nothing, bodies buffered whole, signals that
//! killed a run without a report, a server that kept every finished
//! connection or spun when out of file descriptors, and options named
//! differently in each command.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use conntrace::live::server::{ServerConfig, TestServer};
use conntrace::pipeline::{replay_files, ReplayOptions};

fn bin() -> Command {
    Command::new(common::binary())
}

fn server(config: ServerConfig) -> TestServer {
    TestServer::start("127.0.0.1:0".parse().unwrap(), config).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("conntrace-hardening-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn fixture(name: &str) -> PathBuf {
    common::root().join("fixtures").join(name)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A line of /proc/PID/status, in kB.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time of a process, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A child process that is killed if the test ends before it does.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// A `conntrace serve` process and the address it printed.
fn spawn_serve(prefix: &[&str], args: &[&str]) -> (Reaped, String, BufReader<ChildStdout>) {
    let mut cmd = match prefix.split_first() {
        None => bin(),
        Some((program, pre)) => {
            let mut c = Command::new(program);
            c.args(pre).arg(common::binary());
            c
        }
    };
    let mut child = Reaped(
        cmd.arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, addr, stdout)
}

fn interrupt(child: &Child) {
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Sends a GET and reads the response head.
fn get_head(sock: &mut TcpStream) -> String {
    sock.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).to_lowercase()
}

// Row 7: the cause is printed once.

#[test]
fn errors_name_their_cause_once() {
    let dir = scratch("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let gz = scratch("corrupt.pcap.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(fixture("h2c.pcap")).unwrap())
        .unwrap();
    // Garbled past the gzip header: the deflate stream is corrupt (a gzip
    // stream merely cut short gives a partial report instead).
    let mut whole = enc.finish().unwrap();
    for b in &mut whole[30..60] {
        *b ^= 0xff;
    }
    std::fs::write(&gz, &whole).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["replay".into(), dir.display().to_string()],
            "Is a directory",
        ),
        (
            vec!["replay".into(), gz.display().to_string()],
            "corrupt deflate stream",
        ),
        (
            vec![
                "run".into(),
                "https://127.0.0.1:9/".into(),
                "--no-capture".into(),
                "-k".into(),
                "--keylog".into(),
                "/nonexistent/dir/keys.txt".into(),
            ],
            "No such file or directory",
        ),
    ];
    for (args, cause) in cases {
        let out = bin().args(&args).output().unwrap();
        let err = stderr_of(&out);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert_eq!(err.matches(cause).count(), 1, "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir(dir);
    let _ = std::fs::remove_file(gz);
}

// Row 16 and the exit code table.

#[test]
fn exit_codes_say_how_a_command_ended() {
    let code = |args: &[&str]| bin().args(args).output().unwrap().status.code();
    assert_eq!(
        code(&["replay", fixture("h2c.pcap").to_str().unwrap()]),
        Some(0)
    );
    assert_eq!(code(&["replay", "--no-such-option", "x.pcap"]), Some(2));
    assert_eq!(code(&["replay", "/nonexistent/x.pcap"]), Some(2));
    assert_eq!(
        code(&["replay", fixture("README.md").to_str().unwrap()]),
        Some(2)
    );
    assert_eq!(code(&["run", "ftp://127.0.0.1/"]), Some(2));
    assert_eq!(code(&["demo", "--only", "z"]), Some(2));
    // Port 9 (discard) refuses: every request fails.
    assert_eq!(
        code(&["run", "http://127.0.0.1:9/", "-n", "2", "--no-capture"]),
        Some(4)
    );
    let ok = server(ServerConfig::default());
    assert_eq!(
        code(&["run", &ok.url(), "-n", "2", "--no-capture"]),
        Some(0)
    );
    let help = bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for line in [
        "0  done",
        "2  bad argument",
        "3  no privilege",
        "4  run:",
        "5  demo:",
    ] {
        assert!(help.contains(line), "{line:?} not in --help: {help}");
    }
    if common::is_root() {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::binary())
            .args(["run", "http://127.0.0.1:9/", "-n", "1"])
            .output()
            .expect("setpriv runs");
        assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    }
}

// Row 15: nonsense durations are refused at parsing.

#[test]
fn zero_and_absurd_durations_are_refused_at_parsing() {
    for args in [
        &["run", "http://127.0.0.1:9/", "--timeout", "0"][..],
        &["run", "http://127.0.0.1:9/", "--timeout", "0ms"],
        &["run", "http://127.0.0.1:9/", "--pool-idle-timeout", "0s"],
        &["run", "http://127.0.0.1:9/", "--linger", "100000000y"],
        &["serve", "--idle-timeout", "0"],
        &["replay", "x.pcap", "--idle-timeout", "0s"],
    ] {
        let out = bin().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr_of(&out);
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {err}");
        assert!(errors[0].contains(args[args.len() - 2]), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

// Row 10: the server lets finished connections go.

#[test]
fn serve_lets_finished_connections_go() {
    let server = server(ServerConfig {
        close: true,
        body_size: 16,
        ..ServerConfig::default()
    });
    let n = 1500;
    for _ in 0..n {
        let mut sock = TcpStream::connect(server.addr()).unwrap();
        sock.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut rest = Vec::new();
        sock.read_to_end(&mut rest).unwrap();
        assert!(rest.starts_with(b"HTTP/1.1 200"));
    }
    assert_eq!(server.served(), n);
    assert!(
        server.wait_for_connections_held(0, Duration::from_secs(10)),
        "{} of {n} finished connections still held",
        server.connections_held()
    );
}

// Row 11: out of file descriptors, the server waits instead of spinning.

#[test]
fn serve_backs_off_when_out_of_file_descriptors() {
    let limit: usize = 32;
    let (mut child, addr, _stdout) = spawn_serve(&["prlimit", &format!("--nofile={limit}")], &[]);
    let pid = child.id();
    // More connections than the server has descriptors: the kernel completes
    // their handshakes, the server accepts until it has none left.
    let held: Vec<TcpStream> = (0..limit + 8)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // It says so once, when an accept first fails for want of one.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    stderr.read_line(&mut said).unwrap();
    assert!(said.contains("cannot accept connections"), "{said}");
    let open = open_fds(pid);
    assert!(
        open >= limit,
        "the server never ran out: {open} descriptors open"
    );
    let before = cpu_ticks(pid);
    let wall = Duration::from_millis(1500);
    std::thread::sleep(wall);
    let spent = cpu_ticks(pid) - before;
    // Spinning costs a core (150 ticks) even on a busy machine; waiting, a few.
    assert!(
        spent < 30,
        "{spent} ticks of CPU in {wall:?} while out of descriptors"
    );
    drop(held);
    let mut sock = TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(get_head(&mut sock).starts_with("http/1.1 200"));
    interrupt(&child);
    let mut err = said;
    stderr.read_to_string(&mut err).unwrap();
    child.wait().unwrap();
    assert_eq!(err.matches("cannot accept connections").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

// Row 14: a huge body size is streamed, not allocated.

#[test]
fn serve_streams_a_body_larger_than_memory() {
    let (mut child, addr, _stdout) = spawn_serve(&[], &["--body-size", "100G"]);
    let mut sock = TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = get_head(&mut sock);
    assert!(head.contains("content-length: 107374182400"), "{head}");
    let mut body = vec![0u8; 1 << 20];
    for _ in 0..8 {
        sock.read_exact(&mut body).unwrap();
    }
    assert!(body.iter().all(|&b| b == b'x'));
    let rss = status_kb(child.id(), "VmRSS:").expect("serve still runs");
    assert!(rss < 200 << 10, "serve holds {rss} kB");
    drop(sock);
    interrupt(&child);
    assert!(child.wait().unwrap().success());
}

// Row 12: `run` streams bodies.

#[test]
fn run_reads_a_large_body_in_bounded_memory() {
    let size: u64 = 256 << 20;
    let server = server(ServerConfig {
        body_size: size,
        ..ServerConfig::default()
    });
    // GNU time reports the peak resident size the kernel kept for the
    // process (wait4's ru_maxrss, in kB) as the last line of stderr.
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(common::binary())
        .args([
            "run",
            &server.url(),
            "-n",
            "1",
            "--no-capture",
            "-f",
            "json",
        ])
        .output()
        .expect("/usr/bin/time runs (Debian's time package)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let peak: u64 = stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak from /usr/bin/time: {stderr}"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &report["client"]["requests"][0];
    assert_eq!(r["error"], serde_json::Value::Null, "{r}");
    assert!(
        peak > 0 && peak < 96 << 10,
        "peak resident {peak} kB for a {size}-byte body"
    );
    assert_eq!(r["body_bytes"], size, "{r}");
}

// Rows 13 and 17: SIGTERM and SIGHUP act as Ctrl-C; a second one ends the linger.

fn run_until_served(server: &TestServer, pcap: &PathBuf, extra: &[&str]) -> Child {
    let child = bin()
        .args([
            "run",
            &server.url(),
            "-n",
            "1000000",
            "--interval",
            "5ms",
            "-f",
            "json",
        ])
        .args(extra)
        .arg("-w")
        .arg(pcap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        server.wait_for_requests(server.served() + 5, Duration::from_secs(30)),
        "the run never got going"
    );
    child
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn sigterm_and_sighup_report_and_leave_a_valid_capture() {
    if !common::can_capture("sigterm_and_sighup_report_and_leave_a_valid_capture") {
        return;
    }
    let server = server(ServerConfig::default());
    for name in ["TERM", "HUP"] {
        let pcap = scratch(&format!("{name}.pcap"));
        let child = run_until_served(&server, &pcap, &[]);
        signal(&child, name);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr_of(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["client"]["interrupted"], true, "{name}");
        let replayed = replay_files(std::slice::from_ref(&pcap), &ReplayOptions::default())
            .unwrap_or_else(|e| panic!("{name}: the capture does not replay: {e}"));
        assert_eq!(replayed.anomalies, Vec::new(), "{name}");
        assert_eq!(
            replayed.connections.len(),
            report["connections"].as_array().unwrap().len(),
            "{name}"
        );
        let _ = std::fs::remove_file(pcap);
    }
}

#[test]
fn a_second_interrupt_stops_lingering_at_once() {
    if !common::can_capture("a_second_interrupt_stops_lingering_at_once") {
        return;
    }
    let server = server(ServerConfig::default());
    let pcap = scratch("second.pcap");
    let mut child = run_until_served(&server, &pcap, &["--linger", "60s"]);
    // A connection of our own, open while the run lingers: its packets pass
    // the run's capture filter, so the run waits the whole linger for it.
    let mut open = TcpStream::connect(server.addr()).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(get_head(&mut open).starts_with("http/1.1 200"));
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    signal(&child, "INT");
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("finishing the report"), "{line}");
    signal(&child, "INT");
    // Without the second signal's effect the run lingers 60 s; 20 s is ample.
    let (child, status) = common::exit_within(child, Duration::from_secs(20));
    let lingering = status.is_none();
    let out = child.wait_with_output().unwrap();
    assert!(!lingering, "a second Ctrl-C did not end the linger");
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["client"]["interrupted"], true);
    drop(open);
    let _ = std::fs::remove_file(pcap);
}

// Command-line habits.

#[test]
fn replay_takes_rows_and_still_takes_requests() {
    let file = fixture("h2c.pcap");
    let rows = |opt: &str| {
        let out = bin()
            .arg("replay")
            .arg(&file)
            .args([opt, "summary"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{opt}: {}", stderr_of(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(rows("--rows"), rows("--requests"));
    let help = bin().args(["replay", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--rows"), "{help}");
    assert!(!help.contains("--requests"), "{help}");
    let run_help = bin().args(["run", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&run_help.stdout).contains("--rows"));
}

#[test]
fn developer_knobs_are_hidden_but_accepted() {
    let help = bin().args(["replay", "--help"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("--reader"));
    let out = bin()
        .arg("replay")
        .arg(fixture("h2c.pcap"))
        .args(["--reader", "libpcap", "-f", "summary"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn demo_help_lists_the_experiments_by_name() {
    let out = bin().args(["demo", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for name in [
        "sequential-drained",
        "sequential-undrained",
        "pool-idle-2",
        "pool-idle-10",
        "http2-concurrent",
        "server-idle-timeout",
        "server-max-requests",
    ] {
        let line = help.lines().find(|l| l.contains(name));
        assert!(
            line.is_some_and(|l| l.len() > name.len() + 10),
            "{name}: {help}"
        );
    }
}

#[test]
fn counts_of_one_are_singular() {
    let out = bin()
        .arg("replay")
        .arg(fixture("h2c.pcap"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 connection, 3 requests"), "{text}");
    assert!(!text.contains("1 connections"), "{text}");
    let markdown = bin()
        .arg("replay")
        .arg(fixture("h2c.pcap"))
        .args(["-f", "markdown"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&markdown.stdout);
    assert!(!text.contains("1 connections"), "{text}");
    let failed = bin()
        .args(["run", "http://127.0.0.1:9/", "-n", "1", "--no-capture"])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&failed.stdout),
        stderr_of(&failed)
    );
    assert!(all.contains("1 request failed"), "{all}");
    assert!(
        !all.contains("request(s)") && !all.contains("1 requests"),
        "{all}"
    );
}
