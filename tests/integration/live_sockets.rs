//! `conntrace sockets ADDRESS:PORT` against `ss -tan` at the same moment, on
//! sockets this test makes: some held open, some left in TIME-WAIT by a
//! client that closed first.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use crate::common;

/// `ss -Htan` state counts of the sockets whose remote port is `port`.
fn ss_counts(port: u16) -> BTreeMap<String, u64> {
    let out = Command::new("ss")
        .args(["-Htan", &format!("( dport = :{port} )")])
        .output()
        .unwrap();
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(state) = line.split_whitespace().next() {
            *counts.entry(state.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn sockets_by_state_match_ss() {
    let ss_there = Command::new("ss").arg("-V").output().is_ok();
    if !common::need("ss (iproute2)", ss_there) {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Three held open; four closed by the client first (TIME-WAIT here),
    // each read to the server's close so that the close is complete.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let accepted: Vec<TcpStream> = (0..3).map(|_| listener.accept().unwrap().0).collect();
    for _ in 0..4 {
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut b = [0u8; 1];
        assert_eq!((&server).read(&mut b).unwrap(), 0);
        drop(server);
        assert_eq!((&client).read(&mut b).unwrap(), 0);
        drop(client);
    }
    let out = Command::new(common::binary())
        .args(["sockets", &format!("127.0.0.1:{port}"), "-f", "json"])
        .output()
        .unwrap();
    let ss = ss_counts(port);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours: BTreeMap<String, u64> = r["by_state"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(ours, ss, "conntrace sockets against ss -tan");
    assert_eq!(ours.get("ESTAB"), Some(&3), "{r:#}");
    assert_eq!(ours.get("TIME-WAIT"), Some(&4), "{r:#}");
    let server = &r["servers"][0];
    assert_eq!(server["server"], format!("127.0.0.1:{port}"));
    assert_eq!(server["time_wait_ports"], 4, "{server:#}");
    let text = Command::new(common::binary())
        .args(["sockets", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("4 of ") && text.contains("are in TIME-WAIT"),
        "{text}"
    );
    drop((held, accepted));
}

#[test]
fn a_run_reports_the_sockets_it_leaves_behind() {
    let server = conntrace::live::server::TestServer::start(
        "127.0.0.1:0".parse().unwrap(),
        conntrace::live::server::ServerConfig::default(),
    )
    .unwrap();
    // No capture needed: the sockets come from the kernel.
    let out = Command::new(common::binary())
        .args([
            "run",
            &server.url(),
            "-n",
            "6",
            "-c",
            "2",
            "--no-capture",
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
    let r = common::report_of(&out);
    let s = &r["sockets"];
    assert_eq!(s["filter"], server.addr().to_string(), "{s:#}");
    let servers = s["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{s:#}");
    // reqwest closes its pooled connections first as the run ends: each
    // leaves a socket here on its way to TIME-WAIT (read at once, without
    // the capture's linger, some are still in FIN-WAIT), one per
    // connection the run opened.
    let opened = r["summary"]["connections"].as_u64().unwrap();
    assert!(opened >= 1);
    let by_state = servers[0]["by_state"].as_object().unwrap();
    let closing: u64 = by_state
        .iter()
        .map(|(state, n)| {
            assert!(
                ["FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"].contains(&state.as_str()),
                "{s:#}"
            );
            n.as_u64().unwrap()
        })
        .sum();
    // Without a capture, `connections` counts the sockets that carried a
    // request; a connection dialled and never used (hyper's dial race) is
    // a socket too, at most one per worker.
    assert!(
        closing >= opened && closing <= opened + 2,
        "{opened} connections: {s:#}"
    );
}
