//! The built-in server's keep-alive knobs, seen from a raw socket (no capture
//! needed), and the driver's per-request record of the connection used.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use conntrace::live::driver::{self, DriverConfig, HttpVersion, StopSignal};
use conntrace::live::server::{ServerConfig, TestServer};

fn start(config: ServerConfig) -> TestServer {
    TestServer::start("127.0.0.1:0".parse().unwrap(), config).expect("server starts")
}

/// Sends one GET on `sock` and returns the response head and body length.
fn get(sock: &mut TcpStream, body_size: usize) -> String {
    sock.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before the response ended");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if buf.len() >= end + 4 + body_size {
                return String::from_utf8_lossy(&buf[..end]).to_lowercase();
            }
        }
    }
}

fn at_eof(sock: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(sock.read(&mut b), Ok(0))
}

#[test]
fn max_requests_closes_after_the_nth_response() {
    let server = start(ServerConfig {
        max_requests: Some(3),
        body_size: 10,
        ..ServerConfig::default()
    });
    let mut sock = TcpStream::connect(server.addr()).unwrap();
    assert!(!get(&mut sock, 10).contains("connection: close"));
    assert!(!get(&mut sock, 10).contains("connection: close"));
    assert!(get(&mut sock, 10).contains("connection: close"));
    assert!(at_eof(&mut sock));
}

#[test]
fn close_closes_after_every_response() {
    let server = start(ServerConfig {
        close: true,
        ..ServerConfig::default()
    });
    let mut sock = TcpStream::connect(server.addr()).unwrap();
    assert!(get(&mut sock, 0).contains("connection: close"));
    assert!(at_eof(&mut sock));
}

/// A server that closes connections idle for 200 ms, and one connection to it
/// (the server shuts down when its handle is dropped: keep it).
fn connect_with_idle_timeout() -> (TestServer, TcpStream) {
    let server = start(ServerConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    });
    let sock = TcpStream::connect(server.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (server, sock)
}

#[test]
fn idle_timeout_closes_an_idle_keep_alive_connection() {
    let (_server, mut sock) = connect_with_idle_timeout();
    assert!(!get(&mut sock, 0).contains("connection: close"));
    assert!(at_eof(&mut sock), "the server closes the idle connection");
}

#[test]
fn idle_timeout_closes_a_connection_that_never_speaks() {
    let (_server, mut sock) = connect_with_idle_timeout();
    assert!(at_eof(&mut sock));
}

fn drive(config: DriverConfig) -> Vec<driver::ClientRequest> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(driver::drive(
        Arc::new(config),
        StopSignal::default(),
        Arc::new(|_: &driver::ClientRequest| {}),
    ))
    .expect("client builds")
}

#[test]
fn driver_records_the_connection_of_every_request() {
    let server = start(ServerConfig {
        max_requests: Some(2),
        ..ServerConfig::default()
    });
    let mut config = DriverConfig::new(server.url().parse().unwrap(), 6);
    config.http = HttpVersion::Http1Only;
    let done = drive(config);
    assert_eq!(
        done.iter().map(|r| r.id).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    for r in &done {
        assert_eq!(r.status, Some(200), "{r:?}");
        assert_eq!(r.remote, Some(server.addr()));
    }
    // Two requests per connection: each pair shares a local port, pairs differ.
    let locals: Vec<_> = done.iter().map(|r| r.local.unwrap()).collect();
    assert_eq!(locals[0], locals[1]);
    assert_ne!(locals[1], locals[2]);
    assert_eq!(locals[2], locals[3]);
}

#[test]
fn driver_speaks_h2_over_tls_and_h2c() {
    for tls in [false, true] {
        let server = start(ServerConfig {
            tls,
            ..ServerConfig::default()
        });
        let mut config = DriverConfig::new(server.url().parse().unwrap(), 4);
        config.http = HttpVersion::Http2;
        config.insecure = true;
        config.concurrency = 4;
        let done = drive(config);
        for r in &done {
            assert_eq!(r.version.as_deref(), Some("HTTP/2.0"), "{r:?}");
            assert!(r.local.is_some());
        }
    }
}

#[test]
fn idle_timeout_closes_an_idle_h2c_connection() {
    let server = start(ServerConfig {
        idle_timeout: Some(Duration::from_millis(100)),
        ..ServerConfig::default()
    });
    let mut config = DriverConfig::new(server.url().parse().unwrap(), 2);
    config.http = HttpVersion::Http2;
    // Longer than the idle timeout: the server's GOAWAY closes the first
    // connection and the second request needs another.
    config.interval = Some(Duration::from_millis(400));
    let done = drive(config);
    assert!(done.iter().all(|r| r.status == Some(200)), "{done:?}");
    assert_ne!(done[0].local, done[1].local);
}

#[test]
fn serve_prints_the_address_it_bound_and_answers_there() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_conntrace"))
        .args(["serve", "--max-requests", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let answered = TcpStream::connect(&addr).map(|mut sock| get(&mut sock, 1024));
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    assert!(answered.unwrap().contains("connection: close"));
}
