//! Cross-check against tshark: for every capture in `../shared/corpus`,
//! `fixtures/` and the folder named by `CONNTRACE_EXTRA_CAPTURES` (see
//! scripts/unseen-clients.sh), the HTTP requests conntrace attributes to each TCP stream, in
//! order, are the ones tshark decodes there.
//!
//! HTTP/1.x: method and request-target of every `http.request`. HTTP/2: stream
//! id, `:method` and `:path` of every request HEADERS frame (type 1; tshark's
//! `http2.headers.method` also matches server PUSH_PROMISE frames, which are
//! not requests). tshark 4.0 has no heuristic for h2c prior knowledge on an
//! arbitrary port, so the ports of the connections conntrace found to be h2c
//! with prior knowledge or mid-stream are handed to it with `-d tcp.port==P,http2` (in a second run, so that
//! HTTP/1 on the same port still decodes in the first).
//!
//! The request of an `Upgrade: h2c` exchange was sent as HTTP/1.1: tshark
//! lists it among the HTTP/1 requests, conntrace as HTTP/2 stream 1 (RFC 7540
//! §3.2); it is compared as an HTTP/1 request.
//!
//! Where conntrace deliberately differs, [`EXCEPTIONS`] names the stream and
//! the reason; an exception that no longer differs fails the test so that it
//! is removed. Skipped, with a notice, when tshark or the corpus is absent.

use crate::common::{self, tshark};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use conntrace::pipeline::{replay_files, ReplayOptions};
use conntrace::report::Report;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    H1,
    H2,
}

/// One request as both sides can name it: (HTTP/2 stream id or 0, method, target).
type Request = (u32, String, String);
type Streams = BTreeMap<(Layer, u64), Vec<Request>>;

struct Exception {
    file: &'static str,
    layer: Layer,
    stream: u64,
    reason: &'static str,
}

const EXCEPTIONS: &[Exception] = &[Exception {
    file: "pcapplusplus/unidirectional_tcp_stream_with_missing_packet.pcap",
    layer: Layer::H1,
    stream: 0,
    reason: "the first POST's body has a segment missing from the capture: tshark never \
                 completes that PDU so it does not list the request; conntrace counts its \
                 complete head, then skips the hole inside the sized body",
}];

fn captures() -> Vec<PathBuf> {
    let mut out = common::fixtures();
    if let Some(dir) = common::corpus_dir() {
        out.extend(common::captures_under(&dir));
    }
    // Fresh captures, e.g. from scripts/unseen-clients.sh.
    if let Some((_, extra)) = common::extra_captures() {
        out.extend(extra);
    }
    out
}

fn label(path: &Path) -> String {
    let root = common::corpus_dir().unwrap_or_default();
    path.strip_prefix(&root)
        .or_else(|_| path.strip_prefix(env!("CARGO_MANIFEST_DIR")))
        .unwrap_or(path)
        .display()
        .to_string()
}

/// tshark's packets as JSON (`-T json --no-duplicate-keys`: repeated keys
/// become arrays).
fn tshark_json(path: &Path, query: &str, args: &[String]) -> Vec<Value> {
    let mut args = args.to_vec();
    args.extend(["-T", "json", "--no-duplicate-keys"].map(String::from));
    let out = tshark::run(path, query, &args).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if out.stdout.bytes().all(|b| b.is_ascii_whitespace()) {
        return Vec::new();
    }
    match serde_json::from_str(&out.stdout) {
        Ok(Value::Array(packets)) => packets,
        other => panic!("{}: tshark JSON did not parse: {other:?}", path.display()),
    }
}

/// A value or every element of an array of them.
fn each(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// First string under `key` anywhere inside `v`.
fn find_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    match v {
        Value::Object(map) => map
            .get(key)
            .and_then(|x| each(x).first().and_then(|f| f.as_str()))
            .or_else(|| map.values().find_map(|inner| find_str(inner, key))),
        Value::Array(items) => items.iter().find_map(|inner| find_str(inner, key)),
        _ => None,
    }
}

/// The packet's `tcp.stream`; `None` for HTTP over UDP (SSDP).
fn tcp_stream(packet: &Value) -> Option<u64> {
    find_str(&packet["_source"]["layers"]["tcp"], "tcp.stream").and_then(|s| s.parse().ok())
}

/// HTTP/1 requests (`http.request`) and HTTP/2 request HEADERS in one run of
/// tshark; `h2_ports` are decoded as HTTP/2 (then only HTTP/2 is taken).
fn tshark_requests(path: &Path, h2_ports: &[u16]) -> Streams {
    let mut out = Streams::new();
    let mut args: Vec<String> = Vec::new();
    for port in h2_ports {
        args.push("-d".into());
        args.push(format!("tcp.port=={port},http2"));
    }
    args.extend(
        [
            "-Y",
            "http.request || http2.type == 1",
            "-J",
            "tcp http http2",
        ]
        .map(String::from),
    );
    let query = if h2_ports.is_empty() {
        "requests"
    } else {
        "requests-h2"
    };
    for packet in tshark_json(path, query, &args) {
        let Some(stream) = tcp_stream(&packet) else {
            continue;
        };
        let layers = &packet["_source"]["layers"];
        if h2_ports.is_empty() {
            for pdu in each(&layers["http"]) {
                let Some(method) = find_str(pdu, "http.request.method") else {
                    continue;
                };
                let target = find_str(pdu, "http.request.uri").unwrap_or("");
                out.entry((Layer::H1, stream)).or_default().push((
                    0,
                    method.to_owned(),
                    target.to_owned(),
                ));
            }
        }
        for pdu in each(&layers["http2"]) {
            for frame in each(&pdu["http2.stream"]) {
                if frame["http2.type"].as_str() != Some("1") {
                    continue;
                }
                let mut method = None;
                let mut target = String::new();
                for field in each(&frame["http2.header"]) {
                    match field["http2.header.name"].as_str() {
                        Some(":method") => method = field["http2.header.value"].as_str(),
                        Some(":path") => {
                            target = field["http2.header.value"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned()
                        }
                        _ => {}
                    }
                }
                let Some(method) = method else {
                    continue;
                };
                let id = frame["http2.streamid"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                out.entry((Layer::H2, stream))
                    .or_default()
                    .push((id, method.to_owned(), target));
            }
        }
    }
    out
}

fn ours(report: &Report) -> Streams {
    let upgraded: Vec<u64> = report
        .connections
        .iter()
        .filter(|c| {
            c.http
                .as_ref()
                .is_some_and(|h| h.h2_start == Some("upgrade"))
        })
        .map(|c| c.stream)
        .collect();
    let mut requests: Vec<_> = report.requests.iter().collect();
    requests.sort_by_key(|r| (r.stream, r.depth));
    let mut out = Streams::new();
    for r in requests {
        let key = match r.h2_stream {
            Some(1) if upgraded.contains(&r.stream) => (Layer::H1, 0),
            Some(id) => (Layer::H2, id),
            None => (Layer::H1, 0),
        };
        out.entry((key.0, r.stream)).or_default().push((
            key.1,
            r.method.to_string(),
            r.target.clone(),
        ));
    }
    out
}

fn h2c_ports(report: &Report) -> Vec<u16> {
    let mut ports: Vec<u16> = report
        .connections
        .iter()
        .filter(|c| c.protocol == "h2c")
        // tshark follows an h2c upgrade by itself; forcing HTTP/2 on the port
        // would hide the HTTP/1.1 request before it.
        .filter(|c| c.http.as_ref().and_then(|h| h.h2_start) != Some("upgrade"))
        .map(|c| c.server.port())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[test]
fn requests_per_stream_match_tshark() {
    if !common::need("tshark", tshark::available()) {
        return;
    }
    let files = captures();
    assert!(!files.is_empty(), "no captures: the fixtures are missing");
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for path in &files {
        let name = label(path);
        let report = match replay_files(std::slice::from_ref(path), &ReplayOptions::default()) {
            Ok(report) => report,
            Err(e) => {
                failures.push(format!("{name}: replay failed: {e}"));
                continue;
            }
        };
        let mut ours = ours(&report);
        let mut theirs = tshark_requests(path, &[]);
        let ports = h2c_ports(&report);
        if !ports.is_empty() {
            theirs.retain(|key, _| key.0 == Layer::H1);
            theirs.extend(tshark_requests(path, &ports));
        }
        if ours.is_empty() && theirs.is_empty() {
            continue;
        }
        let mut excused = Vec::new();
        for ex in EXCEPTIONS.iter().filter(|e| name.ends_with(e.file)) {
            let key = (ex.layer, ex.stream);
            let (a, b) = (ours.remove(&key), theirs.remove(&key));
            if a == b {
                failures.push(format!(
                    "{name}: stream {} now agrees with tshark; remove the exception ({})",
                    ex.stream, ex.reason
                ));
            }
            excused.push(format!(
                "stream {} ({:?}): ours {:?}, tshark {:?}: {}",
                ex.stream, ex.layer, a, b, ex.reason
            ));
        }
        let count = |s: &Streams| s.values().map(Vec::len).sum::<usize>();
        let agrees = ours == theirs;
        table.push(format!(
            "{:<72} tshark {:>5} ours {:>5} {}{}",
            name,
            count(&theirs),
            count(&ours),
            if agrees { "agree" } else { "DIFFER" },
            if excused.is_empty() {
                ""
            } else {
                " (+ named exceptions)"
            }
        ));
        for line in excused {
            table.push(format!("    excused {line}"));
        }
        if !agrees {
            for key in ours.keys().chain(theirs.keys()) {
                if ours.get(key) != theirs.get(key) {
                    failures.push(format!(
                        "{name}: stream {} ({:?}):\n    ours   {:?}\n    tshark {:?}",
                        key.1,
                        key.0,
                        ours.get(key),
                        theirs.get(key)
                    ));
                }
            }
        }
    }
    eprintln!("{}", table.join("\n"));
    failures.dedup();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The first ClientHello's server name and offered ALPN list per stream, as
/// tshark decodes them.
fn tshark_hellos(path: &Path) -> BTreeMap<u64, (Option<String>, Vec<String>)> {
    let args = [
        "-Y",
        "tls.handshake.type == 1",
        "-T",
        "fields",
        "-E",
        "aggregator=;",
        "-e",
        "tcp.stream",
        "-e",
        "tls.handshake.extensions_server_name",
        "-e",
        "tls.handshake.extensions_alpn_str",
    ]
    .map(String::from);
    let out =
        tshark::run(path, "hellos", &args).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hellos = BTreeMap::new();
    for line in out.stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let Some(stream) = fields.first().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let field = |k: usize| fields.get(k).copied().unwrap_or("");
        let sni = field(1).split(';').next().filter(|s| !s.is_empty());
        let alpn = field(2)
            .split(';')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        hellos
            .entry(stream)
            .or_insert((sni.map(String::from), alpn));
    }
    hellos
}

#[test]
fn tls_server_names_and_alpn_match_tshark() {
    if !common::need("tshark", tshark::available()) {
        return;
    }
    let mut failures = Vec::new();
    let mut compared = 0;
    for path in captures() {
        let name = label(&path);
        let theirs = tshark_hellos(&path);
        if theirs.is_empty() {
            continue;
        }
        let report = replay_files(std::slice::from_ref(&path), &ReplayOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (stream, (sni, alpn)) in &theirs {
            compared += 1;
            let Some(conn) = report.connections.iter().find(|c| c.stream == *stream) else {
                failures.push(format!("{name}: stream {stream} missing"));
                continue;
            };
            if conn.tls_sni != *sni || conn.alpn != *alpn {
                failures.push(format!(
                    "{name}: stream {stream}: ours {:?} {:?}, tshark {sni:?} {alpn:?}",
                    conn.tls_sni, conn.alpn
                ));
            }
        }
    }
    eprintln!("{compared} ClientHellos compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
