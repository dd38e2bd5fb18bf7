//! `conntrace probe` against servers whose limits are known by how they are
//! configured: the built-in server, nginx, a server that resets idle
//! connections instead of closing them, and one that never closes them.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use conntrace::live::server::{ServerConfig, TestServer};
use serde_json::Value;

use crate::common;
use crate::common::nginx;

/// `conntrace probe URL -f json ARGS`: the report's `probe` section.
fn probe(url: &str, args: &[&str]) -> Value {
    let out = Command::new(common::binary())
        .args(["probe", url, "-f", "json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "probe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::report_of(&out)["probe"].clone()
}

fn near(got: &Value, want_ms: f64) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("no idle timeout: {got}"));
    assert!(
        (got - want_ms).abs() <= 50.0,
        "idle timeout {got} ms, configured {want_ms} ms"
    );
}

/// The built-in server closing connections idle for 1.5 s and after 4
/// requests, over TLS (HTTP/1.1 and h2 by ALPN) or not (h2c on the same port).
fn limited_server(tls: bool) -> TestServer {
    TestServer::start(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig {
            idle_timeout: Some(Duration::from_millis(1500)),
            max_requests: Some(4),
            tls,
            ..ServerConfig::default()
        },
    )
    .unwrap()
}

/// What a probe of [`limited_server`] must find, over HTTP/1.1 and h2.
fn assert_limits(p: &Value) {
    near(&p["idle_timeout_ms"], 1500.0);
    assert_eq!(p["requests_per_connection"], 4, "{p:#}");
    assert_eq!(p["idle"]["closed_by"], "server");
    let h2 = &p["h2"];
    assert_eq!(h2["speaks_h2"], true, "{h2:#}");
    assert_eq!(h2["status"], 200);
    assert_eq!(h2["ping_answered"], true);
    near(&h2["idle_timeout_ms"], 1500.0);
}

#[test]
fn probe_measures_the_built_in_servers_limits() {
    if !common::can_capture("probe_measures_the_built_in_servers_limits") {
        return;
    }
    let server = limited_server(false);
    let p = probe(&server.url(), &[]);
    // The same port speaks h2c: its SETTINGS as captured, a PING answered,
    // and the idle timeout again, ended with GOAWAY.
    assert_limits(&p);
    let h2 = &p["h2"];
    assert!(h2["max_concurrent_streams"].as_u64().is_some(), "{h2:#}");
    assert_eq!(h2["goaway"]["sender"], "server", "{h2:#}");
    assert_eq!(p["requests"]["announced_close_at"], 4);
    let reqwest = p["advice"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["client"] == "reqwest")
        .expect("advice for reqwest");
    assert_eq!(reqwest["default_outlives_server"], true);
    assert!(
        reqwest["text"]
            .as_str()
            .unwrap()
            .contains("from_millis(1200)"),
        "{reqwest}"
    );
}

#[test]
fn probe_measures_nginx_keepalive_timeout_and_requests() {
    if !common::can_capture("probe_measures_nginx_keepalive_timeout_and_requests") {
        return;
    }
    if !common::need("nginx", nginx::installed()) {
        return;
    }
    let (port, h2c_port) = (nginx::free_port(), nginx::free_port());
    let server = nginx::Nginx::start(
        "probe-nginx",
        &format!(
            "keepalive_timeout 3s; keepalive_requests 7; \
             server {{ listen 127.0.0.1:{port}; root {{root}}; }} \
             server {{ listen 127.0.0.1:{h2c_port} http2; root {{root}}; }}"
        ),
    );
    let p = probe(&format!("http://127.0.0.1:{port}/"), &[]);
    let h2c = probe(&format!("http://127.0.0.1:{h2c_port}/"), &["--only", "h2"]);
    drop(server);
    near(&p["idle_timeout_ms"], 3000.0);
    assert_eq!(p["requests_per_connection"], 7, "{p:#}");
    assert_eq!(p["h2"]["speaks_h2"], false, "an HTTP/1.1 port: {p:#}");
    let h2 = &h2c["h2"];
    assert_eq!(h2["speaks_h2"], true, "{h2c:#}");
    assert_eq!(h2["max_concurrent_streams"], 128, "nginx's default: {h2:#}");
    near(&h2["idle_timeout_ms"], 3000.0);
    near(&h2c["idle_timeout_ms"], 3000.0);
}

/// A server on a port of its own that answers every request with
/// keep-alive until a connection has been idle for `idle`, then hands the
/// connection (and what was read of it) to `then`.
fn idle_server(idle: Duration, then: fn(TcpStream, BufReader<TcpStream>)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(sock.try_clone().unwrap());
                let mut w = sock.try_clone().unwrap();
                sock.set_read_timeout(Some(idle)).unwrap();
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) => return,
                        Ok(_) if line == "\r\n" => {
                            let _ =
                                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                then(sock, reader);
            });
        }
    });
    port
}

/// After `idle` without a request: reset the connection (SO_LINGER 0).
fn reset(sock: TcpStream, _: BufReader<TcpStream>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _inside = runtime.enter();
    let sock = tokio::net::TcpStream::from_std({
        sock.set_nonblocking(true).unwrap();
        sock
    })
    .unwrap();
    sock.set_zero_linger().unwrap();
    drop(sock);
}

/// After `idle` without a request: forgotten. Never answer again and never
/// close, reading and dropping whatever comes until the client gives up:
/// what a client sees when a middlebox forgets an idle connection without a
/// FIN or RST (here the server's kernel still acknowledges the bytes;
/// through a middlebox they would not even be acknowledged).
fn go_silent(sock: TcpStream, mut reader: BufReader<TcpStream>) {
    sock.set_read_timeout(None).unwrap();
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
}

#[test]
fn probe_times_an_idle_reset_like_a_fin() {
    if !common::can_capture("probe_times_an_idle_reset_like_a_fin") {
        return;
    }
    let port = idle_server(Duration::from_millis(800), reset);
    let p = probe(&format!("http://127.0.0.1:{port}/"), &["--only", "idle"]);
    near(&p["idle_timeout_ms"], 800.0);
    assert_eq!(p["idle"]["closed_with"], "rst", "{p:#}");
    assert!(p["requests"].is_null(), "only the idle probe ran: {p:#}");
}

#[test]
fn probe_says_when_the_server_never_closes() {
    if !common::can_capture("probe_says_when_the_server_never_closes") {
        return;
    }
    let server =
        TestServer::start("127.0.0.1:0".parse().unwrap(), ServerConfig::default()).unwrap();
    let p = probe(
        &server.url(),
        &["--max-idle", "700ms", "--max-requests", "12"],
    );
    assert!(p["idle_timeout_ms"].is_null(), "{p:#}");
    assert_eq!(p["idle"]["closed_by"], "client");
    assert!(
        p["idle"]["detail"]
            .as_str()
            .unwrap()
            .contains("no idle timeout up to --max-idle"),
        "{p:#}"
    );
    assert!(p["requests_per_connection"].is_null());
    assert_eq!(p["requests"]["answered"], 12);
    assert!(p["advice"].as_array().unwrap().is_empty());
}

#[test]
fn probe_interrupted_reports_what_it_measured() {
    if !common::can_capture("probe_interrupted_reports_what_it_measured") {
        return;
    }
    let server = TestServer::start(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig {
            max_requests: Some(3),
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let child = Command::new(common::binary())
        .args(["probe", &server.url(), "-f", "json", "--max-idle", "60s"])
        .args(["--only", "idle,requests"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Past the requests probe (3 answered) and into the idle wait (its one
    // request answered).
    assert!(server.wait_for_requests(4, Duration::from_secs(10)));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = &common::report_of(&out)["probe"];
    assert!(p["idle_timeout_ms"].is_null(), "{p:#}");
    assert!(
        p["idle"]["detail"]
            .as_str()
            .unwrap()
            .contains("interrupted after"),
        "{p:#}"
    );
    assert_eq!(p["requests_per_connection"], 3, "{p:#}");
}

#[test]
fn compare_runs_the_same_load_over_http1_and_http2() {
    if !common::can_capture("compare_runs_the_same_load_over_http1_and_http2") {
        return;
    }
    // 20 ms per response: four workers keep four HTTP/1.1 exchanges in
    // flight, which need four connections; HTTP/2 carries them on one.
    let server = TestServer::start(
        "127.0.0.1:0".parse().unwrap(),
        ServerConfig {
            delay: Some(Duration::from_millis(20)),
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let out = Command::new(common::binary())
        .args([
            "compare",
            &server.url(),
            "-n",
            "40",
            "-c",
            "4",
            "-f",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = common::report_of(&out);
    let (h1, h2) = (&c["http1"], &c["http2"]);
    assert_eq!(h1["requests"], 40, "{h1:#}");
    assert_eq!(h2["requests"], 40, "{h2:#}");
    assert_eq!(h1["errors"], 0);
    assert_eq!(h2["errors"], 0);
    assert!(h1["connections"].as_u64().unwrap() >= 4, "{h1:#}");
    assert_eq!(h1["syn"], h1["connections"]);
    assert_eq!(h1["streams"], 0);
    assert_eq!(h2["connections"], 1, "{h2:#}");
    assert_eq!(h2["streams"], 40);
    assert_eq!(
        c["connections_saved"].as_i64().unwrap(),
        h1["connections"].as_i64().unwrap() - 1
    );
    assert_eq!(c["reports"]["http2"]["summary"]["connections"], 1);
}

#[test]
fn probe_measures_https_servers_limits() {
    if !common::can_capture("probe_measures_https_servers_limits") {
        return;
    }
    // The built-in server over TLS: HTTP/1.1 and h2 by ALPN.
    let server = limited_server(true);
    let url = format!("https://{}/", server.addr());
    let p = probe(&url, &["-k"]);
    assert_limits(&p);
    // Without -k the self-signed certificate is refused, in one line.
    let out = Command::new(common::binary())
        .args(["probe", &url, "--only", "idle"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("certificate") || said.contains("TLS"),
        "{said}"
    );

    // nginx over TLS, with a certificate made here.
    if !common::need("nginx", nginx::installed()) {
        return;
    }
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("conntrace-probe-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let port = nginx::free_port();
    let server = nginx::Nginx::start(
        "probe-nginx-tls",
        &format!(
            "keepalive_timeout 3s; keepalive_requests 7; \
             server {{ listen 127.0.0.1:{port} ssl http2; root {{root}}; \
             ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem; }}",
            d = dir.display()
        ),
    );
    let p = probe(&format!("https://localhost:{port}/"), &["-k"]);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    near(&p["idle_timeout_ms"], 3000.0);
    assert_eq!(p["requests_per_connection"], 7, "{p:#}");
    let h2 = &p["h2"];
    assert_eq!(h2["speaks_h2"], true, "{h2:#}");
    assert_eq!(h2["max_concurrent_streams"], 128, "nginx's default: {h2:#}");
    near(&h2["idle_timeout_ms"], 3000.0);
}

#[test]
fn probe_finds_idle_connections_dropped_without_a_fin_or_rst() {
    if !common::can_capture("probe_finds_idle_connections_dropped_without_a_fin_or_rst") {
        return;
    }
    let port = idle_server(Duration::from_millis(1200), go_silent);
    let p = probe(
        &format!("http://127.0.0.1:{port}/"),
        &[
            "--only",
            "idle,reuse",
            "--max-idle",
            "3s",
            "--gaps",
            "500ms,1s,2s,3s",
        ],
    );
    // The idle probe waits in vain: no close comes.
    assert!(p["idle_timeout_ms"].is_null(), "{p:#}");
    assert_eq!(p["idle"]["closed_by"], "client", "{p:#}");
    let outcomes: Vec<(&str, bool)> = p["reuse"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap(),
                r["alive"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("answered", true),
            ("answered", true),
            ("no answer", false),
            ("no answer", false)
        ],
        "{p:#}"
    );
    assert_eq!(p["silent_drop"]["alive_ms"], 1000.0, "{p:#}");
    assert_eq!(p["silent_drop"]["dead_ms"], 2000.0, "{p:#}");
    // Advice from the longest gap still answered.
    let reqwest = p["advice"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["client"] == "reqwest")
        .expect("advice for reqwest");
    assert!(
        reqwest["text"]
            .as_str()
            .unwrap()
            .contains("from_millis(800)"),
        "{reqwest}"
    );
}
