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
    ClientReport, ClientRequestRecord, ClientSettings, Report, RequestRecord, SeenIn, SourceInfo,
    Summary, ToolInfo,
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
    let mut by_client_addr: HashMap<std::net::SocketAddr, Vec<(u64, f64)>> = HashMap::new();
    for c in &report.connections {
        by_client_addr
            .entry(c.client)
            .or_default()
            .push((c.stream, c.first_seen.as_secs_f64()));
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
        let stream_by_port = r.local.and_then(|l| {
            // The latest connection from this socket that began before the
            // request ended (a port is only reused after its last connection).
            by_client_addr.get(&l).and_then(|cands| {
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
    crate::diagnose::explain_new_connections(report);
    report.diagnosis = crate::advice::Diagnoser::of(report);
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
        tracker: None,
        diagnosis: Vec::new(),
        probe: None,
        sockets: None,
        audit: None,
    }
}

fn client_seen_request(r: &ClientRequest, stream: u64, settings: &ClientSettings) -> RequestRecord {
    let url = reqwest::Url::parse(&settings.url).ok();
    RequestRecord {
        stream,
        depth: 0,
        reused: false,
        method: crate::http::method_of(&r.method),
        target: url
            .as_ref()
            .map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            })
            .unwrap_or_default(),
        host: url.as_ref().and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}").into(),
                None => h.into(),
            })
        }),
        status: r.status,
        sent: r.start,
        answered: Some(r.head),
        completed: Some(r.end),
        h2_stream: None,
        tag: Some(r.id.to_string()),
        seen_in: SeenIn::Client,
        why_new: None,
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
        body_bytes: r.body_bytes,
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
    requests.sort_by_key(|r| (r.sent, r.stream));
    let mut position: BTreeMap<u64, u32> = BTreeMap::new();
    for r in requests.iter_mut() {
        let n = position.entry(r.stream).or_insert(0);
        *n += 1;
        if r.seen_in == SeenIn::Client {
            r.depth = *n;
            r.reused = *n > 1;
        }
    }
    requests.sort_by_key(|r| (r.sent, r.stream, r.depth));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ConnectionRecord;
    use crate::wire::Timestamp;

    fn conn(stream: u64, client: &str, first_seen: f64) -> ConnectionRecord {
        ConnectionRecord {
            fin_client: 1,
            fin_server: 1,
            packets_client: 5,
            packets_server: 5,
            closed_by: Some(crate::report::Role::Client),
            closed_with: Some(crate::report::CloseKind::Fin),
            closed_at: Some(crate::testkit::secs(first_seen + 1.0)),
            state: crate::report::ConnState::Sf,
            ..crate::testkit::connection_record(stream, client, "127.0.0.1:80", first_seen)
        }
    }

    fn captured(stream: u64, depth: u32, tag: &str, sent: f64) -> RequestRecord {
        RequestRecord {
            status: Some(200),
            answered: Some(crate::testkit::secs(sent + 0.001)),
            completed: Some(crate::testkit::secs(sent + 0.001)),
            tag: Some(tag.into()),
            ..crate::testkit::request_record(stream, depth, sent)
        }
    }

    fn sent(id: u64, local: &str, start: f64) -> ClientRequest {
        let t = |s: f64| Timestamp((s * 1e6) as i64);
        ClientRequest {
            id,
            worker: 0,
            method: "GET".into(),
            start: t(start),
            head: t(start + 0.002),
            end: t(start + 0.003),
            status: Some(200),
            version: Some("HTTP/1.1".into()),
            error: None,
            body_bytes: 0,
            local: Some(local.parse().unwrap()),
            remote: Some("127.0.0.1:80".parse().unwrap()),
        }
    }

    fn settings() -> ClientSettings {
        ClientSettings {
            url: "http://127.0.0.1/x?y=1".into(),
            method: "GET".into(),
            requests: 3,
            concurrency: 1,
            drain: true,
            http: "auto",
            pool_max_idle_per_host: None,
            pool_idle_timeout_ms: None,
            interval_ms: None,
            timeout_ms: None,
            retries: 0,
            insecure: false,
            headers: Vec::new(),
        }
    }

    use crate::testkit::report;

    #[test]
    fn a_reused_local_port_maps_to_the_connection_alive_at_the_time() {
        // The same client socket used by stream 0 and, later, by stream 2.
        let mut r = report(
            vec![
                conn(0, "127.0.0.1:5000", 10.0),
                conn(1, "127.0.0.1:5001", 10.5),
                conn(2, "127.0.0.1:5000", 20.0),
            ],
            Vec::new(),
        );
        let client = [
            sent(1, "127.0.0.1:5000", 10.0),
            sent(2, "127.0.0.1:5001", 10.5),
            sent(3, "127.0.0.1:5000", 20.0),
            sent(4, "127.0.0.1:5000", 20.1),
        ];
        attribute(&mut r, &client, settings(), false);
        let c = r.client.as_ref().unwrap();
        assert_eq!(c.attribution, "port");
        let streams: Vec<_> = c.requests.iter().map(|q| q.stream).collect();
        assert_eq!(streams, [Some(0), Some(1), Some(2), Some(2)]);
        // Known only from the client: depth and reuse from the order of sending.
        let depths: Vec<_> = r
            .requests
            .iter()
            .map(|q| (q.stream, q.depth, q.reused))
            .collect();
        assert_eq!(
            depths,
            [(0, 1, false), (1, 1, false), (2, 1, false), (2, 2, true)]
        );
        assert!(r.requests.iter().all(|q| q.seen_in == "client"));
        assert_eq!(r.requests[0].target, "/x?y=1");
        assert_eq!(r.summary.reused_requests, 1);
    }

    #[test]
    fn tag_and_port_on_different_streams_is_a_disagreement() {
        let mut r = report(
            vec![
                conn(0, "127.0.0.1:5000", 10.0),
                conn(1, "127.0.0.1:5001", 10.0),
            ],
            vec![captured(0, 1, "1", 10.001), captured(0, 2, "2", 10.01)],
        );
        let client = [
            sent(1, "127.0.0.1:5000", 10.0),
            // Its tag travelled on stream 0, but its socket is stream 1's.
            sent(2, "127.0.0.1:5001", 10.009),
        ];
        attribute(&mut r, &client, settings(), false);
        let c = r.client.as_ref().unwrap();
        assert_eq!(c.attribution, "tag+port");
        assert_eq!(c.disagreements, 1);
        assert_eq!(c.requests[0].disagreement, None);
        assert_eq!(c.requests[1].stream_by_tag, Some(0));
        assert_eq!(c.requests[1].stream_by_port, Some(1));
        assert!(c.requests[1].disagreement.is_some());
        // Captured requests are not duplicated from the client's record.
        assert_eq!(r.requests.len(), 2);
    }

    #[test]
    fn failed_requests_keep_their_error_and_add_no_request_row() {
        let mut r = report(vec![conn(0, "127.0.0.1:5000", 10.0)], Vec::new());
        let mut failed = sent(1, "127.0.0.1:5000", 10.0);
        failed.status = None;
        failed.local = None;
        failed.error = Some("connection refused".into());
        attribute(&mut r, &[failed], settings(), true);
        let c = r.client.as_ref().unwrap();
        assert_eq!(c.errors, 1);
        assert!(c.interrupted);
        assert_eq!(c.requests[0].error.as_deref(), Some("connection refused"));
        assert_eq!(c.requests[0].stream, None);
        assert!(r.requests.is_empty());
    }

    #[test]
    fn client_only_numbers_sockets_in_order_of_first_use() {
        let client = [
            sent(1, "127.0.0.1:6000", 1.0),
            sent(2, "127.0.0.1:5000", 2.0),
            sent(3, "127.0.0.1:6000", 3.0),
        ];
        let r = client_only(SourceInfo::default(), &client, settings(), false);
        assert_eq!(r.source.kind, "client-only");
        assert!(r.connections.is_empty());
        assert_eq!(r.summary.connections, 2);
        let rows: Vec<_> = r.requests.iter().map(|q| (q.stream, q.depth)).collect();
        assert_eq!(rows, [(0, 1), (1, 1), (0, 2)]);
    }
}
