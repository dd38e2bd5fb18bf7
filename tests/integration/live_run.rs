//! `conntrace run` for real on loopback: attribution by tag and by local port
//! agree, TLS requests are attributed through local ports, a saved capture
//! replays to the same tables, Ctrl-C still reports and leaves a valid file,
//! and a run without privileges says how to get them.

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use conntrace::live::driver::{DriverConfig, HttpVersion};
use conntrace::live::server::{ServerConfig, TestServer};
use conntrace::live::session::{run_session, CaptureSettings, SessionConfig, SessionOutcome};
use conntrace::pipeline::{replay_files, ReplayOptions};

const BIN: &str = env!("CARGO_BIN_EXE_conntrace");

fn server(config: ServerConfig) -> TestServer {
    TestServer::start("127.0.0.1:0".parse().unwrap(), config).unwrap()
}

fn session(driver: DriverConfig, savefile: Option<PathBuf>) -> SessionOutcome {
    run_session(SessionConfig {
        driver,
        capture: Some(CaptureSettings {
            savefile,
            ..CaptureSettings::default()
        }),
        progress: false,
        handle_ctrl_c: false,
    })
    .expect("the run completes")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("conntrace-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn tag_and_local_port_attribution_agree_on_cleartext() {
    if !common::can_capture("tag_and_local_port_attribution_agree_on_cleartext") {
        return;
    }
    // Several connections (3 requests each) used by 4 workers at once.
    let server = server(ServerConfig {
        max_requests: Some(3),
        ..ServerConfig::default()
    });
    let mut driver = DriverConfig::new(server.url().parse().unwrap(), 24);
    driver.concurrency = 4;
    driver.http = HttpVersion::Http1Only;
    let report = session(driver, None).report;
    let client = report.client.as_ref().expect("client section");
    assert_eq!(client.requests.len(), 24);
    assert_eq!(client.attribution, "tag+port");
    assert_eq!(client.disagreements, 0);
    for r in &client.requests {
        assert_eq!(r.status, Some(200), "{r:?}");
        assert!(
            r.stream_by_tag.is_some(),
            "tag not found in the packets: {r:?}"
        );
        assert_eq!(r.stream_by_tag, r.stream_by_port, "{r:?}");
    }
    assert_eq!(report.requests.len(), 24);
    assert!(report.requests.iter().all(|r| r.seen_in == "capture"));
}

#[test]
fn tls_requests_are_attributed_by_local_port() {
    if !common::can_capture("tls_requests_are_attributed_by_local_port") {
        return;
    }
    // HTTP/1.1: two requests per connection, then the server closes it.
    // HTTP/2: four workers multiplexed on one connection. (A GOAWAY after N
    // requests races the client's next stream over HTTP/2, so no limit there.)
    for (http, max_requests, concurrency, carrying) in [
        (HttpVersion::Http1Only, Some(2), 1, 4),
        (HttpVersion::Http2, None, 4, 1),
    ] {
        let server = server(ServerConfig {
            tls: true,
            max_requests,
            ..ServerConfig::default()
        });
        let mut driver = DriverConfig::new(server.url().parse().unwrap(), 8);
        driver.insecure = true;
        driver.http = http;
        driver.concurrency = concurrency;
        let report = session(driver, None).report;
        let client = report.client.as_ref().unwrap();
        assert_eq!(client.attribution, "port");
        assert_eq!(client.errors, 0, "{:?}", client.requests);
        assert_eq!(report.requests.len(), 8, "{http:?}");
        for r in &report.requests {
            assert_eq!(r.seen_in, "client");
            let tag: u64 = r.tag.as_deref().unwrap().parse().unwrap();
            let seen = &client.requests[(tag - 1) as usize];
            let conn = &report.connections[r.stream as usize];
            assert_eq!(Some(conn.client.to_string()), seen.local.clone());
        }
        let used = report
            .connections
            .iter()
            .filter(|c| report.requests.iter().any(|r| r.stream == c.stream))
            .count();
        assert_eq!(used, carrying, "{http:?}");
        assert_eq!(report.summary.reused_requests as usize, 8 - carrying);
    }
}

#[test]
fn saved_capture_replays_to_the_same_tables() {
    if !common::can_capture("saved_capture_replays_to_the_same_tables") {
        return;
    }
    let server = server(ServerConfig {
        max_requests: Some(4),
        ..ServerConfig::default()
    });
    let path = scratch("replay.pcap");
    let mut driver = DriverConfig::new(server.url().parse().unwrap(), 10);
    driver.concurrency = 2;
    let live = session(driver, Some(path.clone())).report;
    let replayed = replay_files(std::slice::from_ref(&path), &ReplayOptions::default()).unwrap();
    assert!(!live.connections.is_empty());
    assert_eq!(live.connections, replayed.connections);
    assert_eq!(live.source.packets, replayed.source.packets);
    let captured: Vec<_> = live
        .requests
        .iter()
        .filter(|r| r.seen_in == "capture")
        .cloned()
        .collect();
    assert_eq!(captured, replayed.requests);
    let _ = std::fs::remove_file(path);
}

#[test]
fn ctrl_c_reports_what_was_done_and_leaves_a_valid_capture() {
    if !common::can_capture("ctrl_c_reports_what_was_done_and_leaves_a_valid_capture") {
        return;
    }
    let server = server(ServerConfig::default());
    let path = scratch("interrupted.pcap");
    let child = Command::new(BIN)
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
        .arg("-w")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        server.wait_for_requests(5, Duration::from_secs(30)),
        "the run never got going"
    );
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let report = common::report_of(&out);
    assert_eq!(report["client"]["interrupted"], true);
    let done = report["client"]["requests"].as_array().unwrap().len();
    assert!((5..1_000_000).contains(&done), "{done}");
    let replayed = replay_files(std::slice::from_ref(&path), &ReplayOptions::default()).unwrap();
    assert_eq!(
        replayed.connections.len(),
        report["connections"].as_array().unwrap().len()
    );
    assert_eq!(replayed.anomalies, Vec::new());
    let _ = std::fs::remove_file(path);
}

#[test]
fn an_unprivileged_run_says_how_to_get_privileges() {
    if !common::need("root, for setpriv to drop to nobody", common::is_root()) {
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["run", "http://127.0.0.1:9/", "-n", "1"])
        .output()
        .expect("setpriv runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sudo"), "{err}");
    assert!(
        err.contains(&format!("setcap cap_net_raw,cap_net_admin=eip {BIN}")),
        "{err}"
    );
    assert!(err.contains("--no-capture"), "{err}");

    let demo = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "demo",
        ])
        .output()
        .expect("setpriv runs");
    assert!(!demo.status.success());
    let err = String::from_utf8_lossy(&demo.stderr);
    assert!(err.contains("needs capture privileges"), "{err}");
    assert!(
        err.contains("sudo setcap cap_net_raw,cap_net_admin=eip"),
        "{err}"
    );
}

#[test]
fn a_run_without_capture_is_labelled_client_only() {
    let server = server(ServerConfig {
        max_requests: Some(2),
        ..ServerConfig::default()
    });
    let out = Command::new(BIN)
        .args([
            "run",
            &server.url(),
            "-n",
            "4",
            "--no-capture",
            "-f",
            "json",
        ])
        .output()
        .unwrap();
    let report = common::report_of(&out);
    assert_eq!(report["source"]["kind"], "client-only");
    assert_eq!(report["client"]["attribution"], "client-only");
    assert_eq!(report["summary"]["connections"], 2);
    let requests = report["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 4);
    assert!(requests.iter().all(|r| r["seen_in"] == "client"));
    let text = Command::new(BIN)
        .args(["run", &server.url(), "-n", "2", "--no-capture"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("CLIENT-SIDE ATTRIBUTION ONLY"));
}

#[test]
fn keylog_lets_tshark_decrypt_a_saved_tls_capture() {
    if !common::can_capture("keylog_lets_tshark_decrypt_a_saved_tls_capture") {
        return;
    }
    if !common::need("tshark", common::tshark::available()) {
        return;
    }
    let server = server(ServerConfig {
        tls: true,
        ..ServerConfig::default()
    });
    let pcap = scratch("tls.pcap");
    let keys = scratch("tls.keys");
    let mut driver = DriverConfig::new(server.url().parse().unwrap(), 3);
    driver.insecure = true;
    driver.http = HttpVersion::Http1Only;
    driver.keylog = Some(keys.clone());
    let report = session(driver, Some(pcap.clone())).report;
    assert_eq!(report.client.as_ref().unwrap().errors, 0);
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .arg("-o")
        .arg(format!("tls.keylog_file:{}", keys.display()))
        .args([
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "http.request.line",
        ])
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout);
    for id in 1..=3 {
        assert!(
            lines.contains(&format!("x-conntrace-id: {id}")),
            "request {id} not decrypted: {lines}"
        );
    }
    let _ = std::fs::remove_file(pcap);
    let _ = std::fs::remove_file(keys);
}
