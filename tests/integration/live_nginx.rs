//! Against a real server: nginx on loopback with `keepalive_requests 3`, a live
//! run saved with `-w`, and our connection count against tshark's
//! `-z conv,tcp` on the same file. (scripts/nginx-check.sh does the same from
//! the command line.)

use crate::common;
use crate::common::nginx;

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
    let port = nginx::free_port();
    let server = nginx::Nginx::start(
        "nginx",
        &format!(
            "keepalive_requests 3; keepalive_timeout 10s; server {{ listen 127.0.0.1:{port}; root {{root}}; }}"
        ),
    );
    let pcap =
        std::env::temp_dir().join(format!("conntrace-nginx-run-{}.pcap", std::process::id()));
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
    drop(server);
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
    let _ = std::fs::remove_file(pcap);
}
