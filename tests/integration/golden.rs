//! Golden reports: `conntrace replay --format json fixtures/X.pcap` must print
//! exactly `fixtures/X.json` (for `X.pcapng`: `X-pcapng.json`), apart from
//! `tool.version`. Each golden was checked against tshark when it was written
//! (tshark_crosscheck.rs checks the TCP numbers on every run; the golden
//! also pins the rest: states, histories, requests, timings).
//!
//! After a deliberate change to the report, or after fixtures/make.sh remade
//! the captures, rewrite the goldens with
//! `CONNTRACE_BLESS=1 cargo test --test integration golden::` and review the diff.

use crate::common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `fixtures/X.pcap` -> `fixtures/X.json`; `fixtures/X.pcapng` ->
/// `fixtures/X-pcapng.json`, so that a capture and its pcapng twin keep
/// goldens of their own (and no golden's name contains ".pcap").
fn golden_path(capture: &Path) -> PathBuf {
    let name = capture.file_name().unwrap().to_string_lossy();
    let stem = match name.strip_suffix(".pcap") {
        Some(stem) => stem.to_owned(),
        None => name.replace('.', "-"),
    };
    capture.with_file_name(format!("{stem}.json"))
}

/// Replays `fixtures/NAME` from the repository root, so that the report names
/// the file `fixtures/NAME` whatever the machine.
fn replay(capture: &Path) -> Result<String, String> {
    let relative = capture.strip_prefix(common::root()).unwrap();
    let out = Command::new(common::binary())
        .current_dir(common::root())
        .args(["replay", "--format", "json"])
        .arg(relative)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

fn without_version(mut v: Value) -> Value {
    if let Some(tool) = v.get_mut("tool").and_then(Value::as_object_mut) {
        tool.remove("version");
    }
    v
}

/// JSON pointers where `a` and `b` differ, with both values.
fn differences(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = format!("{at}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => differences(p, q, &path, out),
                    (p, q) => out.push(format!("{path}: {} != {}", show(p), show(q))),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, &format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("{at}: {} != {}", short(a), short(b))),
        _ => {}
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or("(absent)".to_owned(), short)
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}...", &s[..117])
    } else {
        s
    }
}

#[test]
fn replay_reports_match_the_goldens() {
    let bless = std::env::var_os("CONNTRACE_BLESS").is_some_and(|v| v == "1");
    let captures = common::fixtures();
    assert!(!captures.is_empty(), "no capture in fixtures/");
    let mut failures = Vec::new();
    for capture in &captures {
        let name = common::display_name(capture, &common::root());
        let golden = golden_path(capture);
        let printed = match replay(capture) {
            Ok(printed) => printed,
            Err(why) => {
                failures.push(format!("{name}: replay failed: {why}"));
                continue;
            }
        };
        let ours: Value = match serde_json::from_str(&printed) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: the report is not JSON: {e}"));
                continue;
            }
        };
        if bless {
            // As printed, so that the golden reads like the tool's output.
            let mut text = printed;
            if !text.ends_with('\n') {
                text.push('\n');
            }
            std::fs::write(&golden, text).unwrap();
            eprintln!("wrote {}", golden.display());
            continue;
        }
        let want: Value = match std::fs::read_to_string(&golden) {
            Ok(text) => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", golden.display())),
            Err(_) => {
                failures.push(format!(
                    "{name}: no golden {} (CONNTRACE_BLESS=1 writes it)",
                    common::display_name(&golden, &common::root())
                ));
                continue;
            }
        };
        let (ours, want) = (without_version(ours), without_version(want));
        if ours != want {
            let mut diffs = Vec::new();
            differences(&ours, &want, "", &mut diffs);
            let shown = diffs.len().min(30);
            failures.push(format!(
                "{name}: {} difference(s) from the golden (ours != golden):\n  {}{}",
                diffs.len(),
                diffs[..shown].join("\n  "),
                if diffs.len() > shown { "\n  ..." } else { "" }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(after a deliberate change: CONNTRACE_BLESS=1 cargo test --test integration golden::)",
        failures.join("\n")
    );
}

#[test]
fn every_golden_belongs_to_a_capture() {
    let captures: Vec<PathBuf> = common::fixtures().iter().map(|c| golden_path(c)).collect();
    let orphans: Vec<String> = std::fs::read_dir(common::root().join("fixtures"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !captures.contains(p))
        .map(|p| p.display().to_string())
        .collect();
    assert!(orphans.is_empty(), "goldens without a capture: {orphans:?}");
}

/// Runs `conntrace replay --format FORMAT capture` and returns its stdout.
fn replay_as(capture: &Path, format: &str) -> Result<String, String> {
    let out = Command::new(common::binary())
        .args(["replay", "--format", format])
        .arg(capture)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

fn sorted_by(mut rows: Vec<Value>, keys: &[&str]) -> Vec<Value> {
    let key =
        |v: &Value| -> Vec<u64> { keys.iter().map(|k| v[*k].as_u64().unwrap_or(0)).collect() };
    rows.sort_by_key(key);
    rows
}

/// `--format jsonl` writes the document's rows as they complete: each
/// connection's requests, then the connection (an HTTP/1 keep-alive
/// connection's answered requests after its first may come earlier, as they
/// settle; never after their connection), then one summary line. The rows
/// and the summary must equal the JSON document's, on every fixture and
/// every corpus capture.
#[test]
fn jsonl_lines_are_the_documents_rows() {
    let mut captures = common::fixtures();
    if let Some(dir) = common::corpus_dir() {
        captures.extend(common::captures_under(&dir));
    }
    let mut failures = Vec::new();
    let mut checked_rows = 0;
    for capture in &captures {
        let name = common::display_name(capture, &common::root());
        let (doc, lines) = match (replay_as(capture, "json"), replay_as(capture, "jsonl")) {
            (Ok(d), Ok(l)) => (d, l),
            (Err(d), Err(_)) => {
                // Unreadable in both forms: the error tests cover it.
                eprintln!("{name}: skipped, not readable: {d}");
                continue;
            }
            (d, l) => {
                failures.push(format!(
                    "{name}: json {:?} but jsonl {:?}",
                    d.err(),
                    l.err()
                ));
                continue;
            }
        };
        let doc: Value = serde_json::from_str(&doc).unwrap();
        let mut connections = Vec::new();
        let mut requests = Vec::new();
        let mut summary = None;
        let mut diagnosis = Vec::new();
        // First requests seen and their connection not yet; connections seen.
        let mut firsts_waiting: Vec<u64> = Vec::new();
        let mut finalised = std::collections::HashSet::new();
        for line in lines.lines() {
            let mut v: Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(e) => {
                    failures.push(format!("{name}: a line is not JSON: {e}: {line}"));
                    break;
                }
            };
            if summary.is_some() {
                failures.push(format!("{name}: a line after the summary"));
            }
            let kind = v.as_object_mut().unwrap().remove("type");
            match kind.as_ref().and_then(Value::as_str) {
                Some("request") => {
                    let stream = v["stream"].as_u64().unwrap();
                    if finalised.contains(&stream) {
                        failures.push(format!("{name}: a request after its connection {stream}"));
                    }
                    if v["depth"] == 1 {
                        firsts_waiting.push(stream);
                    }
                    requests.push(v);
                }
                Some("connection") => {
                    let stream = v["stream"].as_u64().unwrap();
                    if firsts_waiting.iter().any(|&s| s != stream) {
                        failures.push(format!(
                            "{name}: the first request of another stream before connection {stream}"
                        ));
                    }
                    firsts_waiting.clear();
                    finalised.insert(stream);
                    connections.push(v);
                }
                Some("summary") => summary = Some(v),
                Some("diagnosis") => diagnosis.push(v),
                other => failures.push(format!("{name}: line of type {other:?}")),
            }
        }
        checked_rows += connections.len() + requests.len();
        let want_conns = doc["connections"].as_array().unwrap().clone();
        let want_reqs = doc["requests"].as_array().unwrap().clone();
        if sorted_by(connections, &["stream"]) != want_conns {
            failures.push(format!("{name}: connection lines differ from the document"));
        }
        if sorted_by(requests, &["stream", "depth"]) != sorted_by(want_reqs, &["stream", "depth"]) {
            failures.push(format!("{name}: request lines differ from the document"));
        }
        if Value::Array(diagnosis) != doc["diagnosis"] {
            failures.push(format!("{name}: diagnosis lines differ from the document"));
        }
        match summary {
            Some(s) => {
                for field in ["summary", "source", "anomalies", "tool"] {
                    if s[field] != doc[field] {
                        failures.push(format!("{name}: summary line's {field} differs"));
                    }
                }
            }
            None => failures.push(format!("{name}: no summary line")),
        }
    }
    assert!(checked_rows > 100, "too few rows checked: {checked_rows}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
