//! Zeek's `conn_state` and `history` for the same captures: every TCP
//! connection in the Zeek baselines of ../shared/corpus must get the same
//! state and history letters from `conntrace replay`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;

fn corpus() -> Option<PathBuf> {
    let p = common::corpus_dir()?.parent()?.to_path_buf();
    if p.join("expected/zeek").exists() {
        Some(p)
    } else {
        eprintln!("skipped: {} has no Zeek baselines", p.display());
        None
    }
}

/// (baseline conn.log under expected/zeek, trace under files/zeek), from the
/// `@TEST-EXEC` lines in expected/zeek/README.md.
const CONN_LOGS: &[(&str, &str)] = &[
    ("core.history-flip/conn.log", "tcp/missing-syn.pcap"),
    (
        "core.tcp.flip-without-syn/conn.log",
        "tcp/http-on-irc-port-missing-syn.pcapng",
    ),
    ("core.tcp.miss-end-data/conn.log", "tcp/miss_end_data.pcap"),
    ("core.tcp.missing-syn/conn.log", "tcp/missing-syn.pcap"),
    ("core.tcp.reassembly-known-ports/conn.log", "http/get.pcap"),
    (
        "core.tcp.rxmit-history/conn-1.log",
        "tcp/retransmit-fast009.pcap",
    ),
    ("core.tcp.rxmit-history/conn-2.log", "wikipedia.pcap"),
    ("core.vlan-mpls/conn.log", "mixed-vlan-mpls.pcap"),
    ("opt.basic/conn.log", "wikipedia.pcap"),
    (
        "scripts.base.protocols.http.261.chunked-rest/conn.log",
        "http/261/variant-10-multi_value_te.pcap",
    ),
    (
        "scripts.base.protocols.http.concurrent-range-requests/conn.log",
        "http/concurrent-range-requests.pcap",
    ),
    (
        "scripts.base.protocols.http.http-connect-with-header/conn.log",
        "http/connect-with-header.pcap",
    ),
];

/// `history, conn_state` lines, one per trace (conn_state-RST-behavior/out).
const RST_BEHAVIOUR: &[&str] = &[
    "tcp/single-rst.pcap",
    "tcp/syn-then-rst.pcap",
    "tcp/syn-then-ack-then-rst.pcap",
    "tcp/syn-then-stuff-then-rst.pcap",
];

fn replay(trace: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_conntrace"))
        .arg("replay")
        .arg(trace)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        trace.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn addr(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

#[test]
fn conn_state_and_history_match_zeek_conn_logs() {
    let Some(corpus) = corpus() else { return };
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for (log, trace) in CONN_LOGS {
        let text = std::fs::read_to_string(corpus.join("expected/zeek").join(log)).unwrap();
        let report = replay(&corpus.join("files/zeek").join(trace));
        let mut fields: Vec<&str> = Vec::new();
        for line in text.lines() {
            if let Some(f) = line.strip_prefix("#fields\t") {
                fields = f.split('\t').collect();
                continue;
            }
            if line.starts_with('#') || fields.is_empty() {
                continue;
            }
            let row: std::collections::HashMap<&str, &str> =
                fields.iter().copied().zip(line.split('\t')).collect();
            if row.get("proto") != Some(&"tcp") {
                continue;
            }
            let client = addr(row["id.orig_h"], row["id.orig_p"]);
            let server = addr(row["id.resp_h"], row["id.resp_p"]);
            let conn = report["connections"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["client"] == client.as_str() && c["server"] == server.as_str());
            let Some(conn) = conn else {
                mismatches.push(format!("{log}: no connection {client} -> {server}"));
                continue;
            };
            checked += 1;
            for (ours, zeek) in [("state", "conn_state"), ("history", "history")] {
                if conn[ours] != row[zeek] {
                    mismatches.push(format!(
                        "{log} {client}: {ours} ours {} zeek {}",
                        conn[ours], row[zeek]
                    ));
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(checked >= 25, "only {checked} connections compared");
}

#[test]
fn reset_behaviour_matches_zeek() {
    let Some(corpus) = corpus() else { return };
    let out = std::fs::read_to_string(
        corpus.join("expected/zeek/scripts.base.protocols.conn.conn_state-RST-behavior/out"),
    )
    .unwrap();
    let expected: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(expected.len(), RST_BEHAVIOUR.len());
    for (trace, want) in RST_BEHAVIOUR.iter().zip(expected) {
        let report = replay(&corpus.join("files/zeek").join(trace));
        let c = &report["connections"][0];
        let got = format!(
            "{}, {}",
            c["history"].as_str().unwrap(),
            c["state"].as_str().unwrap()
        );
        assert_eq!(got, want, "{trace}");
    }
}
