//! Every new connection of the real-client scenarios in `fixtures/causes/`
//! (made by `scripts/cause-scenarios.sh`) against the truth its client
//! recorded in its own terms (`*.truth.json`: the cause by construction, each
//! connection named by the client's local port, as the client saw it): the
//! `why_new.code` conntrace gives it from the capture (`unused:<code>` for a
//! connection that carried no request). `CONNTRACE_EXTRA_CAUSES=DIR` judges a
//! folder of fresh scenarios as well.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common;

/// The scenarios of `dir`: each capture beside its truth file.
fn scenarios(dir: &Path) -> Vec<(PathBuf, Value)> {
    let mut out: Vec<(PathBuf, Value)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".truth.json"))
        .map(|truth| {
            let pcap = truth.to_string_lossy().replace(".truth.json", ".pcap");
            let text = std::fs::read_to_string(&truth).unwrap();
            let value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", truth.display()));
            (PathBuf::from(pcap), value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What conntrace said of one connection: its code and whether it said the
/// code may be wrong.
#[derive(Debug)]
struct Said {
    code: String,
    uncertain: bool,
}

/// Client port → what conntrace said of that connection, from its report of
/// `pcap`.
fn said(pcap: &Path) -> BTreeMap<u64, Said> {
    let report = common::replay(pcap)
        .report()
        .unwrap_or_else(|e| panic!("{}: {e}", pcap.display()));
    let port = |c: &Value| {
        c["client"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap()
    };
    let mut by_stream: BTreeMap<u64, u64> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for c in report["connections"].as_array().unwrap() {
        by_stream.insert(c["stream"].as_u64().unwrap(), port(c));
        if let Some(code) = c["unused"]["code"].as_str() {
            let code = format!("unused:{code}");
            out.insert(
                port(c),
                Said {
                    code,
                    uncertain: false,
                },
            );
        }
    }
    for r in report["requests"].as_array().unwrap() {
        let why = &r["why_new"];
        if let Some(code) = why["code"].as_str() {
            let said = Said {
                code: code.to_string(),
                uncertain: !why["uncertain"].is_null(),
            };
            out.insert(by_stream[&r["stream"].as_u64().unwrap()], said);
        }
    }
    out
}

/// The client library of a truth file's `client`: its text up to the first
/// comma outside parentheses ("node v20 http.Agent({keepAlive: true, ...})").
fn library(client: &str) -> String {
    let mut depth = 0i32;
    for (i, ch) in client.char_indices() {
        match ch {
            '(' | '{' => depth += 1,
            ')' | '}' => depth -= 1,
            ',' if depth == 0 => return client[..i].to_string(),
            _ => {}
        }
    }
    client.to_string()
}

/// Judges every scenario of `dir`: at least 95% of the new connections get
/// the cause they were built with, and every one that does not says it may
/// be wrong (`why_new.uncertain`).
fn judge(dir: &Path, at_least: usize) {
    let scenarios = scenarios(dir);
    assert!(
        scenarios.len() >= at_least,
        "{} scenarios in {}",
        scenarios.len(),
        dir.display()
    );
    let (mut judged, mut wrong, mut unflagged) = (0, Vec::new(), Vec::new());
    let mut clients = BTreeMap::<String, (u32, u32)>::new();
    for (pcap, truth) in &scenarios {
        let name = pcap.file_name().unwrap().to_string_lossy().into_owned();
        let got = said(pcap);
        let client = truth["client"].as_str().unwrap_or("?");
        let client = library(client);
        for c in truth["connections"].as_array().unwrap() {
            let port = c["client_port"].as_u64().unwrap();
            let want = c["code"].as_str().unwrap();
            judged += 1;
            let tally = clients.entry(client.clone()).or_default();
            tally.0 += 1;
            match got.get(&port) {
                Some(s) if s.code == want => tally.1 += 1,
                other => {
                    let line = format!("{name}: client port {port}: {other:?}, built as {want}");
                    if !other.is_some_and(|s| s.uncertain) {
                        unflagged.push(line.clone());
                    }
                    wrong.push(line);
                }
            }
        }
    }
    eprintln!(
        "{}: {judged} new connections in {} scenarios, {} right ({:.1}%)",
        dir.display(),
        scenarios.len(),
        judged - wrong.len(),
        100.0 * (judged - wrong.len()) as f64 / judged as f64
    );
    for (client, (n, right)) in &clients {
        eprintln!("  {client}: {right}/{n}");
    }
    for line in &wrong {
        eprintln!("  wrong: {line}");
    }
    assert!(judged > 0, "no connections in {}", dir.display());
    assert!(
        unflagged.is_empty(),
        "wrong without saying it may be:\n{}",
        unflagged.join("\n")
    );
    assert!(
        wrong.len() * 20 <= judged,
        "{} of {judged} wrong (more than 5%)",
        wrong.len()
    );
}

#[test]
fn new_connections_get_the_causes_their_scenarios_were_built_with() {
    judge(&common::root().join("fixtures/causes"), 15);
}

/// Fresh scenarios, made by `CAUSES_OUT=DIR scripts/cause-scenarios.sh`
/// (root, tcpdump, go, node: the script runs this test itself).
#[test]
#[ignore = "judges CONNTRACE_EXTRA_CAUSES=DIR, made by scripts/cause-scenarios.sh"]
fn fresh_scenarios_get_the_causes_they_were_built_with() {
    let dir = std::env::var_os("CONNTRACE_EXTRA_CAUSES")
        .expect("CONNTRACE_EXTRA_CAUSES names the folder of fresh scenarios");
    judge(Path::new(&dir), 1);
}
