//! conntrace's connections, held to tshark's: for every fixture, every capture
//! of the shared corpus (`../shared/corpus/files`, when present) and every
//! capture in `CONNTRACE_EXTRA_CAPTURES`, `conntrace replay --format json` must
//! report the same stream numbers as tshark's `tcp.stream`, the same two
//! endpoints (client = the side that opened the connection whenever tshark's
//! flags show one), per side the same packets, bytes on the wire, TCP
//! payload bytes and SYN, SYN+ACK, FIN and RST counts, the same first and last
//! frame times, and the same closing side (sender of the first FIN or RST).
//!
//! Every disagreement of a run is listed in one failure message. Where
//! conntrace deliberately differs from tshark, the case is named in
//! [`EXCEPTIONS`] (file, stream, field, reason) and explained in
//! docs/tshark-differences.md; an exception that no longer matches anything
//! is itself a failure, so the table cannot go stale.

use crate::common;

use common::tshark::{self, Reference};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A field of one stream where conntrace deliberately reports something other
/// than tshark. `file` is as in the failure messages: `fixtures/NAME`,
/// `corpus/SOURCE/PATH` or `extra/PATH`.
struct Exception {
    file: &'static str,
    stream: u64,
    field: &'static str,
    reason: &'static str,
}

const EXCEPTIONS: &[Exception] = &[Exception {
    file: "corpus/arkime/tcp_handshake_synthetic.pcap",
    stream: 5,
    field: "syn_ack from client",
    reason: "frame 20 is a SYN+ACK sent by the client after the server's SYN+ACK (a synthetic \
             odd handshake); the report's syn_ack counts SYN+ACKs from the server only, as the \
             schema defines it, and the client's shows as the upper-case H of history \"ShHA\"",
}];

/// A capture to check and the name it goes by in messages.
struct Capture {
    path: PathBuf,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Mismatch {
    file: String,
    /// None for a problem with the whole file.
    stream: Option<u64>,
    field: String,
    ours: String,
    tshark: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stream = self.stream.map_or("-".to_owned(), |s| s.to_string());
        write!(
            f,
            "{} | stream {} | {} | ours {} | tshark {}",
            self.file, stream, self.field, self.ours, self.tshark
        )
    }
}

/// The outcome for one file: its row in the summary table and its mismatches.
struct Outcome {
    name: String,
    ours_streams: Option<usize>,
    tshark_streams: usize,
    mismatches: Vec<Mismatch>,
    excused: usize,
}

fn fixture_captures() -> Vec<Capture> {
    common::fixtures()
        .into_iter()
        .map(|path| Capture {
            name: format!(
                "fixtures/{}",
                common::display_name(&path, &common::root().join("fixtures"))
            ),
            path,
        })
        .collect()
}

fn captures_in(dir: &Path, prefix: &str) -> Vec<Capture> {
    common::captures_under(dir)
        .into_iter()
        .map(|path| Capture {
            name: format!("{prefix}/{}", common::display_name(&path, dir)),
            path,
        })
        .collect()
}

fn check(capture: &Capture) -> Outcome {
    let mismatch = |stream: Option<u64>, field: &str, ours: String, tshark: String| Mismatch {
        file: capture.name.clone(),
        stream,
        field: field.to_owned(),
        ours,
        tshark,
    };
    let reference =
        tshark::reference(&capture.path).unwrap_or_else(|e| panic!("{}: {e}", capture.name));
    let mut outcome = Outcome {
        name: capture.name.clone(),
        ours_streams: None,
        tshark_streams: reference.streams.len(),
        mismatches: Vec::new(),
        excused: 0,
    };
    let replay = common::replay(&capture.path);
    if replay.panicked() {
        outcome.mismatches.push(mismatch(
            None,
            "replay",
            format!("panicked: {}", replay.stderr.trim()),
            format!("{} streams", reference.streams.len()),
        ));
        return outcome;
    }
    let report = match replay.report() {
        Ok(report) => report,
        Err(why) => {
            outcome.mismatches.push(mismatch(
                None,
                "replay",
                why,
                format!("{} streams", reference.streams.len()),
            ));
            return outcome;
        }
    };
    let connections = report["connections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    outcome.ours_streams = Some(connections.len());
    outcome.mismatches = compare(&capture.name, &reference, &connections);
    outcome
}

/// Every difference between our connections and tshark's streams.
fn compare(file: &str, reference: &Reference, connections: &[Value]) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    let mut report = |stream: Option<u64>, field: &str, ours: String, tshark: String| {
        mismatches.push(Mismatch {
            file: file.to_owned(),
            stream,
            field: field.to_owned(),
            ours,
            tshark,
        })
    };
    let mut ours_seen = BTreeSet::new();
    for c in connections {
        let Some(stream) = c["stream"].as_u64() else {
            report(
                None,
                "stream",
                format!("{}", c["stream"]),
                "a number".into(),
            );
            continue;
        };
        if !ours_seen.insert(stream) {
            report(Some(stream), "stream", "listed twice".into(), "once".into());
            continue;
        }
        let Some(t) = reference.streams.get(&stream) else {
            report(
                Some(stream),
                "stream",
                format!("{} <-> {}", c["client"], c["server"]),
                "absent".into(),
            );
            continue;
        };
        let addr = |key: &str| c[key].as_str().and_then(|s| s.parse::<SocketAddr>().ok());
        let (Some(client), Some(server)) = (addr("client"), addr("server")) else {
            report(
                Some(stream),
                "endpoints",
                format!("{} <-> {}", c["client"], c["server"]),
                format!("{} <-> {}", t.sides[0].addr, t.sides[1].addr),
            );
            continue;
        };
        let ours_pair: BTreeSet<SocketAddr> = [client, server].into();
        let tshark_pair: BTreeSet<SocketAddr> = [t.sides[0].addr, t.sides[1].addr].into();
        if ours_pair != tshark_pair {
            report(
                Some(stream),
                "endpoints",
                format!("{client} <-> {server}"),
                format!("{} <-> {}", t.sides[0].addr, t.sides[1].addr),
            );
            continue;
        }
        if let Some(opener) = t.opener() {
            if opener != client {
                report(
                    Some(stream),
                    "client",
                    format!("{client} (orientation {})", c["orientation"]),
                    format!("{opener} (opened the connection)"),
                );
            }
        }
        let (tc, ts) = (
            t.side(client).expect("in the pair"),
            t.side(server).expect("in the pair"),
        );
        let checks: [(&str, u64); 12] = [
            ("packets_client", tc.packets),
            ("packets_server", ts.packets),
            ("bytes_client", tc.bytes),
            ("bytes_server", ts.bytes),
            ("payload_client", tc.payload),
            ("payload_server", ts.payload),
            ("syn", u64::from(tc.syn)),
            ("syn_ack", u64::from(ts.syn_ack)),
            ("fin_client", u64::from(tc.fin)),
            ("fin_server", u64::from(ts.fin)),
            ("rst_client", u64::from(tc.rst)),
            ("rst_server", u64::from(ts.rst)),
        ];
        for (field, want) in checks {
            match c[field].as_u64() {
                Some(got) if got == want => {}
                _ => report(Some(stream), field, c[field].to_string(), want.to_string()),
            }
        }
        // Times: the report has microseconds, tshark nanoseconds.
        for (field, want_ns) in [
            ("first_seen", t.first_time_ns),
            ("last_seen", t.last_time_ns),
        ] {
            let close = c[field]
                .as_f64()
                .is_some_and(|got| (got - want_ns as f64 / 1e9).abs() < 1.5e-6);
            if !close {
                let want = format!(
                    "{}.{:09}",
                    want_ns.div_euclid(1_000_000_000),
                    want_ns.rem_euclid(1_000_000_000)
                );
                report(Some(stream), field, c[field].to_string(), want);
            }
        }
        let closed_by = t
            .first_close
            .map(|a| if a == client { "client" } else { "server" });
        if c["closed_by"].as_str() != closed_by {
            report(
                Some(stream),
                "closed_by",
                c["closed_by"].to_string(),
                format!("{closed_by:?} (first FIN or RST)"),
            );
        }
        // The report has no field for a SYN from the server or a SYN+ACK from
        // the client (simultaneous open, split handshakes): tshark seeing one
        // is a difference the report cannot show.
        if ts.syn > 0 {
            report(
                Some(stream),
                "syn from server",
                "not reported".into(),
                ts.syn.to_string(),
            );
        }
        if tc.syn_ack > 0 {
            report(
                Some(stream),
                "syn_ack from client",
                "not reported".into(),
                tc.syn_ack.to_string(),
            );
        }
    }
    for (stream, t) in &reference.streams {
        if !ours_seen.contains(stream) {
            report(
                Some(*stream),
                "stream",
                "absent".into(),
                format!(
                    "{} <-> {}, {} packets from frame {}",
                    t.sides[0].addr,
                    t.sides[1].addr,
                    t.sides[0].packets + t.sides[1].packets,
                    t.first_frame
                ),
            );
        }
    }
    mismatches
}

/// Checks `captures`, prints a summary table, and fails listing every
/// mismatch not covered by [`EXCEPTIONS`] and every exception of a checked
/// file that matched nothing.
fn crosscheck(what: &str, captures: Vec<Capture>) {
    // The fixtures' answers are committed; any other capture asks tshark.
    let live = captures
        .iter()
        .any(|c| tshark::committed_path(&c.path, "frames").is_none());
    if live && !common::need("tshark", tshark::available()) {
        return;
    }
    let outcomes = common::par_map(&captures, check);
    let mut used = vec![false; EXCEPTIONS.len()];
    let mut failures = Vec::new();
    let mut table = String::new();
    table.push_str(&format!(
        "{:<72} {:>6} {:>6}  agreement\n",
        "file", "ours", "tshark"
    ));
    for mut outcome in outcomes {
        outcome.mismatches.retain(|m| {
            let excused = EXCEPTIONS
                .iter()
                .position(|e| e.file == m.file && Some(e.stream) == m.stream && e.field == m.field);
            if let Some(i) = excused {
                used[i] = true;
            }
            excused.is_none()
        });
        outcome.excused = EXCEPTIONS
            .iter()
            .zip(&used)
            .filter(|(e, u)| **u && e.file == outcome.name)
            .count();
        let agreement = match (outcome.mismatches.len(), outcome.excused) {
            (0, 0) => "agree".to_owned(),
            (0, n) => format!("agree ({n} listed exceptions)"),
            (n, _) => format!("{n} MISMATCHES"),
        };
        let ours = outcome
            .ours_streams
            .map_or("-".to_owned(), |n| n.to_string());
        table.push_str(&format!(
            "{:<72} {:>6} {:>6}  {agreement}\n",
            outcome.name, ours, outcome.tshark_streams
        ));
        failures.extend(outcome.mismatches);
    }
    let checked: BTreeSet<String> = captures.iter().map(|c| c.name.clone()).collect();
    for (e, used) in EXCEPTIONS.iter().zip(&used) {
        if !used && checked.contains(e.file) {
            failures.push(Mismatch {
                file: e.file.to_owned(),
                stream: Some(e.stream),
                field: e.field.to_owned(),
                ours: "agrees with tshark now".into(),
                tshark: format!("listed in EXCEPTIONS: {}", e.reason),
            });
        }
    }
    eprintln!("cross-check of {what} against tshark:\n{table}");
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} disagreement(s) with tshark in {what}:\n{}",
        failures.len(),
        failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn fixtures_agree_with_tshark() {
    crosscheck("the fixtures", fixture_captures());
}

#[test]
fn corpus_agrees_with_tshark() {
    let Some(dir) = common::corpus_dir() else {
        eprintln!("the shared corpus is absent: skipping the corpus cross-check");
        return;
    };
    crosscheck("the corpus", captures_in(&dir, "corpus"));
}

/// `CONNTRACE_EXTRA_CAPTURES=DIR cargo test --test tshark_crosscheck` checks
/// every capture below DIR too (scripts/unseen-clients.sh uses it).
#[test]
fn extra_captures_agree_with_tshark() {
    let Some((dir, _)) = common::extra_captures() else {
        return;
    };
    let captures = captures_in(&dir, "extra");
    assert!(
        !captures.is_empty(),
        "CONNTRACE_EXTRA_CAPTURES={} holds no capture",
        dir.display()
    );
    crosscheck(&format!("the captures in {}", dir.display()), captures);
}

/// Every corpus capture (and fixture) replays with exit code 0, or fails with
/// a one-line error that names the file; never a panic.
#[test]
fn every_capture_replays_or_fails_cleanly() {
    let Some(dir) = common::corpus_dir() else {
        eprintln!("the shared corpus is absent: skipping");
        return;
    };
    let mut captures = captures_in(&dir, "corpus");
    captures.extend(fixture_captures());
    let problems: Vec<String> = common::par_map(&captures, |capture| {
        let replay = common::replay(&capture.path);
        let file_name = capture
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if replay.panicked() {
            Some(format!(
                "{}: panicked: {}",
                capture.name,
                replay.stderr.trim()
            ))
        } else if replay.code == Some(0) {
            replay
                .report()
                .err()
                .map(|why| format!("{}: exit 0 but {why}", capture.name))
        } else {
            let lines: Vec<&str> = replay
                .stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            (lines.len() != 1 || !lines[0].contains(&file_name)).then(|| {
                format!(
                    "{}: exit {:?} without a one-line error naming the file: {:?}",
                    capture.name, replay.code, replay.stderr
                )
            })
        }
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
