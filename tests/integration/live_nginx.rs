//! Against a real server: nginx on loopback with `keepalive_requests 3`, a live
//! run saved with `-w`, and our connection count against tshark's
//! `-z conv,tcp` on the same file. (scripts/nginx-check.sh does the same from
//! the command line.)

use crate::common;

use std::process::Command;

use conntrace::live::driver::DriverConfig;
use conntrace::live::session::{run_session, CaptureSettings, SessionConfig};

fn installed(tool: &str) -> bool {
    Command::new(tool).arg("-v").output().is_ok()
}

#[test]
fn connection_count_matches_tshark_against_nginx() {
    if !common::can_capture("connection_count_matches_tshark_against_nginx") {
        return;
    }
    if !common::need(
        "nginx and tshark",
        installed("nginx") && installed("tshark"),
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("conntrace-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "hello\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon on;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; keepalive_requests 3; keepalive_timeout 10s;\n\
             server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let nginx = |extra: &[&str]| {
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&dir)
            .args(extra)
            .status()
            .unwrap()
    };
    // With `daemon on`, nginx returns once its socket is listening.
    assert!(nginx(&[]).success(), "nginx starts");
    let pcap = dir.join("run.pcap");
    let mut driver = DriverConfig::new(format!("http://127.0.0.1:{port}/").parse().unwrap(), 20);
    driver.concurrency = 2;
    let outcome = run_session(SessionConfig {
        driver,
        capture: Some(CaptureSettings {
            savefile: Some(pcap.clone()),
            ..CaptureSettings::default()
        }),
        progress: false,
        handle_ctrl_c: false,
    });
    nginx(&["-s", "stop"]);
    let report = outcome.expect("the run completes").report;
    assert_eq!(report.client.as_ref().unwrap().errors, 0);
    let conv = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-q", "-z", "conv,tcp"])
        .output()
        .unwrap();
    let theirs = String::from_utf8_lossy(&conv.stdout)
        .lines()
        .filter(|l| l.contains("<->"))
        .count();
    // 20 requests, 3 per connection at most: at least 7 connections.
    assert!(report.summary.connections >= 7);
    assert_eq!(report.summary.connections as usize, theirs);
    let _ = std::fs::remove_dir_all(dir);
}
