//! `conntrace watch`: a live capture of whatever passes, here a client this
//! test drives on loopback against the built-in server, reported at the end
//! (`-f json`) or streamed (`-f jsonl`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};

use conntrace::live::server::{ServerConfig, TestServer};

use crate::common;

/// `requests` GETs on one keep-alive connection, each read to its end.
fn keep_alive(addr: std::net::SocketAddr, requests: usize) {
    let mut sock = TcpStream::connect(addr).unwrap();
    for _ in 0..requests {
        sock.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + length {
                    break;
                }
            }
            let n = sock.read(&mut chunk).unwrap();
            assert!(n > 0, "closed before the response ended");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Reads the child's stderr until watch says it is capturing (then the
/// capture is reading); the rest of stderr stays to be read.
fn until_capturing(
    child: &mut std::process::Child,
) -> std::io::BufReader<std::process::ChildStderr> {
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("capturing on") {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "watch ended before capturing: {said}"
        );
        said.push_str(&line);
    }
    stderr
}

/// Watches the server's port for 2 s while three requests go on one
/// connection and one on another.
fn watch(format: &str) -> Output {
    watch_into(&["-f", format])
}

/// The same with these output options.
fn watch_into(output: &[&str]) -> Output {
    let server =
        TestServer::start("127.0.0.1:0".parse().unwrap(), ServerConfig::default()).unwrap();
    let addr = server.addr();
    let port = addr.port().to_string();
    let mut child = Command::new(common::binary())
        .args(["watch", "-i", "lo", "--duration", "2s"])
        .args(output)
        .args(["--", "tcp", "port", &port])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = until_capturing(&mut child);
    keep_alive(addr, 3);
    keep_alive(addr, 1);
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut out = child.wait_with_output().unwrap();
    out.stderr = rest.join().unwrap().into_bytes();
    assert!(
        !out.stderr.contains(&0x1b),
        "no view drawn where standard error is not a terminal"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn watch_reports_what_passed_during_its_duration() {
    if !common::can_capture("watch_reports_what_passed_during_its_duration") {
        return;
    }
    let r = common::report_of(&watch("json"));
    assert_eq!(r["source"]["kind"], "live");
    assert_eq!(r["summary"]["connections"], 2, "{:#}", r["summary"]);
    assert_eq!(r["summary"]["requests"], 4);
    assert_eq!(r["summary"]["reused_requests"], 2);
    let depths: Vec<u64> = r["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["depth"].as_u64().unwrap())
        .collect();
    assert_eq!(depths, [1, 2, 3, 1]);
    // The test's two sockets, closed by it first, as the kernel holds them.
    let sockets = &r["sockets"];
    assert_eq!(
        sockets["servers"].as_array().unwrap().len(),
        1,
        "{sockets:#}"
    );
    assert_eq!(sockets["total"], 2, "{sockets:#}");
    assert!(
        sockets["by_state"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| ["FIN-WAIT-2", "TIME-WAIT"].contains(&k.as_str())),
        "{sockets:#}"
    );
}

#[test]
fn watch_streams_json_lines() {
    if !common::can_capture("watch_streams_json_lines") {
        return;
    }
    let out = watch("jsonl");
    let lines: Vec<serde_json::Value> = common::stdout_of(&out)
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let kinds = |t: &str| lines.iter().filter(|l| l["type"] == t).count();
    assert_eq!(kinds("connection"), 2);
    assert_eq!(kinds("request"), 4);
    assert_eq!(lines.last().unwrap()["type"], "summary");
    assert_eq!(lines.last().unwrap()["summary"]["requests"], 4);
}

#[test]
fn watch_writes_parquet_rows_tagged_with_the_host_and_interface() {
    if !common::can_capture("watch_writes_parquet_rows_tagged_with_the_host_and_interface") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("conntrace-{}-watch-parquet", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = watch_into(&["-f", "parquet", "-o", dir.to_str().unwrap()]);
    assert!(out.stdout.is_empty());
    let table = |name: &str| dir.join(format!("{name}.parquet")).display().to_string();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let tally = crate::parquet::duckdb(&format!(
        "SELECT (SELECT count(*) FROM '{c}') AS connections, \
                (SELECT count(*) FROM '{r}') AS requests, \
                (SELECT count(*) FROM '{r}' WHERE reused) AS reused, \
                (SELECT list(DISTINCT source) FROM '{c}') AS sources",
        c = table("connections"),
        r = table("requests"),
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let row = &tally[0];
    assert_eq!(row["connections"], 2, "{row:?}");
    assert_eq!(row["requests"], 4, "{row:?}");
    assert_eq!(row["reused"], 2, "{row:?}");
    assert_eq!(
        row["sources"],
        serde_json::json!([format!("{}/lo", host.trim())])
    );
}

#[test]
fn watch_streams_a_finished_connection_while_the_link_is_quiet() {
    if !common::can_capture("watch_streams_a_finished_connection_while_the_link_is_quiet") {
        return;
    }
    let server =
        TestServer::start("127.0.0.1:0".parse().unwrap(), ServerConfig::default()).unwrap();
    let addr = server.addr();
    let port = addr.port().to_string();
    let mut child = Command::new(common::binary())
        .args([
            "watch",
            "-i",
            "lo",
            "--duration",
            "60s",
            "--close-grace",
            "1s",
            "-f",
            "jsonl",
        ])
        .args(["--", "tcp", "port", &port])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _stderr = until_capturing(&mut child);
    let started = std::time::Instant::now();
    keep_alive(addr, 2);
    // Nothing else passes: the connection's record comes out once its close
    // grace has passed by the clock, long before the watch ends.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut kinds = Vec::new();
    while !kinds.contains(&"connection".to_string()) {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        kinds.push(v["type"].as_str().unwrap().to_string());
    }
    let waited = started.elapsed();
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert_eq!(kinds, ["request", "request", "connection"]);
    assert!(
        waited < std::time::Duration::from_secs(20),
        "the record came after {waited:?}"
    );
}

#[test]
fn on_a_terminal_the_tallies_update_in_place() {
    if !common::can_capture("on_a_terminal_the_tallies_update_in_place")
        || !common::need(
            "script (util-linux)",
            Command::new("script").arg("--version").output().is_ok(),
        )
    {
        return;
    }
    let server =
        TestServer::start("127.0.0.1:0".parse().unwrap(), ServerConfig::default()).unwrap();
    let addr = server.addr();
    // `script` gives watch a terminal; standard error and output both go to it.
    let watch = format!(
        "{} watch -i lo --duration 4s --close-grace 200ms -f summary -- tcp port {}",
        common::binary().display(),
        addr.port()
    );
    let mut child = Command::new("script")
        .args(["-qec", &watch, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut said = String::new();
    while !said.contains("capturing on") {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0,
            "watch ended before capturing: {said}"
        );
        said.push_str(&line);
    }
    keep_alive(addr, 3);
    keep_alive(addr, 1);
    stdout.read_to_string(&mut said).unwrap();
    assert!(child.wait().unwrap().success(), "{said}");
    assert!(
        said.contains("\x1b[3A\r\x1b[J"),
        "redrawn in place: {said:?}"
    );
    assert!(
        said.contains("finalised: 2 connections, 4 requests, 2 reused a connection (50%)"),
        "{said}"
    );
    // The view is cleared before the report.
    let report = &said[said.rfind("\x1b[J").unwrap()..];
    assert!(
        report.contains("2 connections, 4 requests (2 reused a connection)"),
        "{report}"
    );
    assert!(!report.contains("finalised:"), "{report}");
}
