//! Attribution of each request the driver made to the connection (tcp.stream)
//! that carried it, two ways: by its `x-conntrace-id` tag found in the packets
//! (cleartext only), and by the connection's local socket address and lifetime
//! (always; the only way over TLS). Where both exist they must agree; a
//! disagreement is kept in the report, never resolved silently. Requests the
//! packets could not show (TLS) are added to the report from the client's
//! record, marked `seen_in: "client"`.
//!
//! Pure functions over the report and the driver's records: no I/O, no clock.

use std::collections::{BTreeMap, HashMap};

use crate::live::driver::ClientRequest;
use crate::report::{
    ClientReport, ClientRequestRecord, ClientSettings, Report, RequestRecord, SourceInfo, Summary,
    ToolInfo,
};

/// A request's client-side times are taken around the packets' kernel
/// timestamps; this much slack covers clock reads on either side.
const SLACK_SECS: f64 = 0.002;

/// Joins the driver's requests to a captured report.
pub fn attribute(
    report: &mut Report,
    client: &[ClientRequest],
    settings: ClientSettings,
    interrupted: bool,
) {
    let mut by_client_addr: HashMap<&str, Vec<(u64, f64)>> = HashMap::new();
    for c in &report.connections {
        by_client_addr
            .entry(c.client.as_str())
            .or_default()
            .push((c.stream, c.first_seen));
    }
    let mut by_tag: HashMap<&str, Vec<u64>> = HashMap::new();
    for r in &report.requests {
        if let Some(tag) = &r.tag {
            by_tag.entry(tag.as_str()).or_default().push(r.stream);
        }
    }
    let any_tag_seen = !by_tag.is_empty();
    let mut records = Vec::with_capacity(client.len());
    let mut unseen = Vec::new();
    for r in client {
        let local = r.local.map(|a| a.to_string());
        let stream_by_port = local.as_deref().and_then(|l| {
            // The latest connection from this socket that began before the
            // request ended (a port is only reused after its last connection).
            by_client_addr.get(l).and_then(|cands| {
                cands
                    .iter()
                    .filter(|(_, first)| *first <= r.end.as_secs_f64() + SLACK_SECS)
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(stream, _)| *stream)
            })
        });
        let tagged = by_tag.get(r.id.to_string().as_str());
        let stream_by_tag = match (tagged, stream_by_port) {
            (Some(streams), Some(p)) if streams.contains(&p) => Some(p),
            (Some(streams), _) => streams.last().copied(),
            (None, _) => None,
        };
        let disagreement = match (stream_by_tag, stream_by_port) {
            (Some(t), Some(p)) if t != p => Some(format!(
                "request {} carried its tag on stream {t} but came from {} on stream {p}",
                r.id,
                local.as_deref().unwrap_or("?")
            )),
            _ => None,
        };
        let stream = stream_by_port.or(stream_by_tag);
        if let (None, Some(s), Some(_)) = (stream_by_tag, stream, r.status) {
            unseen.push(client_seen_request(r, s, &settings));
        }
        records.push(client_record(
            r,
            stream,
            stream_by_tag,
            stream_by_port,
            disagreement,
        ));
    }
    report.requests.extend(unseen);
    number_client_requests(&mut report.requests);
    report.summary = Summary::tally(&report.connections, &report.requests);
    report.client = Some(ClientReport {
        attribution: if any_tag_seen { "tag+port" } else { "port" },
        errors: client.iter().filter(|r| r.error.is_some()).count() as u64,
        disagreements: records.iter().filter(|r| r.disagreement.is_some()).count() as u64,
        settings,
        requests: records,
        interrupted,
    });
}

/// The report of a run without capture (`--no-capture`): each local socket the
/// client used is a connection, numbered in order of first use; nothing about
/// packets, handshakes or closes is known, so `connections` stays empty.
pub fn client_only(
    source: SourceInfo,
    client: &[ClientRequest],
    settings: ClientSettings,
    interrupted: bool,
) -> Report {
    let mut order: Vec<&ClientRequest> = client.iter().collect();
    order.sort_by_key(|r| (r.start, r.id));
    let mut streams: HashMap<std::net::SocketAddr, u64> = HashMap::new();
    let mut requests = Vec::new();
    let mut records = Vec::new();
    for r in order {
        let stream = r.local.map(|l| {
            let next = streams.len() as u64;
            *streams.entry(l).or_insert(next)
        });
        if let (Some(s), Some(_)) = (stream, r.status) {
            requests.push(client_seen_request(r, s, &settings));
        }
        records.push(client_record(r, stream, None, stream, None));
    }
    records.sort_by_key(|r| r.id);
    number_client_requests(&mut requests);
    let mut summary = Summary::tally(&[], &requests);
    summary.connections = streams.len() as u64;
    Report {
        tool: ToolInfo::default(),
        source: SourceInfo {
            kind: "client-only",
            ..source
        },
        connections: Vec::new(),
        requests,
        summary,
        anomalies: Vec::new(),
        client: Some(ClientReport {
            attribution: "client-only",
            errors: client.iter().filter(|r| r.error.is_some()).count() as u64,
            disagreements: 0,
            settings,
            requests: records,
            interrupted,
        }),
    }
}

fn client_seen_request(r: &ClientRequest, stream: u64, settings: &ClientSettings) -> RequestRecord {
    let url = reqwest::Url::parse(&settings.url).ok();
    RequestRecord {
        stream,
        depth: 0,
        reused: false,
        method: r.method.clone(),
        target: url
            .as_ref()
            .map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            })
            .unwrap_or_default(),
        host: url.as_ref().and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        }),
        status: r.status,
        sent: r.start.as_secs_f64(),
        answered: Some(r.head.as_secs_f64()),
        h2_stream: None,
        tag: Some(r.id.to_string()),
        seen_in: "client",
    }
}

fn client_record(
    r: &ClientRequest,
    stream: Option<u64>,
    stream_by_tag: Option<u64>,
    stream_by_port: Option<u64>,
    disagreement: Option<String>,
) -> ClientRequestRecord {
    ClientRequestRecord {
        id: r.id,
        worker: r.worker as u64,
        method: r.method.clone(),
        started: r.start.as_secs_f64(),
        head: r.head.as_secs_f64(),
        finished: r.end.as_secs_f64(),
        status: r.status,
        http_version: r.version.clone(),
        error: r.error.clone(),
        local: r.local.map(|a| a.to_string()),
        remote: r.remote.map(|a| a.to_string()),
        stream,
        stream_by_tag,
        stream_by_port,
        disagreement,
    }
}

/// Gives requests known only from the client their depth on their connection
/// (order of sending among all requests of that stream) and sorts the list as
/// the report promises: by `sent`, then `stream`, then `depth`.
fn number_client_requests(requests: &mut [RequestRecord]) {
    requests.sort_by(|a, b| a.sent.total_cmp(&b.sent).then(a.stream.cmp(&b.stream)));
    let mut position: BTreeMap<u64, u32> = BTreeMap::new();
    for r in requests.iter_mut() {
        let n = position.entry(r.stream).or_insert(0);
        *n += 1;
        if r.seen_in == "client" {
            r.depth = *n;
            r.reused = *n > 1;
        }
    }
    requests.sort_by(|a, b| {
        a.sent
            .total_cmp(&b.sent)
            .then(a.stream.cmp(&b.stream))
            .then(a.depth.cmp(&b.depth))
    });
}
