//! Why a request opened a new connection instead of reusing one: the question
//! none of the peer tools answers directly. Computed from the report alone
//! (connections with their open and close times, requests with their times),
//! so it works the same for replayed files and live runs.
//!
//! For each request that was first on its connection, look at the earlier
//! connections from the same client host to the same server, as they stood
//! when the request was sent:
//! - none: the first connection to that server (`first`);
//! - one was open and idle (its requests so far answered): the client chose not to
//!   reuse it (`idle_not_reused`): a pool limit, an undrained body, a client
//!   without a connection pool;
//! - all open ones were busy with an unanswered request (`all_busy`):
//!   concurrency needs more connections, as HTTP/1.1 carries one request at a time;
//! - all were closed (`previous_closed`): by whom and how says whether the server
//!   (idle timeout, request limit, `Connection: close`) or the client ended them.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use serde::Serialize;

use crate::report::{ConnectionRecord, Report};

/// Why one request was sent on a new connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewConnectionReason {
    /// "first" | "idle_not_reused" | "all_busy" | "previous_closed".
    pub reason: &'static str,
    /// The earlier connection the reason is about (the idle one, or the most
    /// recently closed one), if any.
    pub previous_stream: Option<u64>,
    /// One sentence for people.
    pub detail: String,
    /// For `previous_closed`: why that connection ended, when the bytes or
    /// the timing tell (`Connection: close`, HTTP/1.0, GOAWAY, an idle close).
    pub cause: Option<String>,
}

/// The client host of an `ip:port` address.
fn host(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// Fill `why_new` on every request that opened its connection, and the tally
/// in the summary.
///
/// One sweep in time per (client host, server) pair: connections join the
/// open set when they start and leave it when they close, so the work grows
/// with the requests times the connections open at once, not with the square
/// of the connections in the capture.
pub fn explain_new_connections(report: &mut Report) {
    // Requests per stream, in order sent, for the busy/idle test.
    // Stream numbers are dense (Wireshark's tcp.stream), so vectors index them.
    let streams = report
        .connections
        .iter()
        .map(|c| c.stream + 1)
        .chain(report.requests.iter().map(|r| r.stream + 1))
        .max()
        .unwrap_or(0) as usize;
    let mut by_stream = Timeline(vec![Vec::new(); streams]);
    for r in &report.requests {
        by_stream.0[r.stream as usize].push((r.sent, r.answered));
    }
    for reqs in &mut by_stream.0 {
        reqs.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let mut index: Vec<Option<usize>> = vec![None; streams];
    for (i, c) in report.connections.iter().enumerate() {
        index[c.stream as usize] = Some(i);
    }
    // Connections (by first packet) and new-connection requests (by time
    // sent) of each client host and server.
    type Group = (Vec<usize>, Vec<usize>);
    let mut groups: HashMap<(&str, &str), Group> = HashMap::new();
    for (i, c) in report.connections.iter().enumerate() {
        groups
            .entry((host(&c.client), c.server.as_str()))
            .or_default()
            .0
            .push(i);
    }
    for (ri, r) in report.requests.iter().enumerate() {
        if r.reused {
            continue;
        }
        if let Some(ci) = index[r.stream as usize] {
            let c = &report.connections[ci];
            if let Some(g) = groups.get_mut(&(host(&c.client), c.server.as_str())) {
                g.1.push(ri);
            }
        }
    }
    let mut reasons: Vec<(usize, NewConnectionReason)> = Vec::new();
    for (_, (mut conns, mut reqs)) in groups {
        let all = &report.connections;
        conns.sort_by(|&a, &b| all[a].first_seen.total_cmp(&all[b].first_seen));
        reqs.sort_by(|&a, &b| report.requests[a].sent.total_cmp(&report.requests[b].sent));
        // Open connections by position in `conns` (so in order of start), and
        // their close times, earliest first, to retire them as time passes.
        let mut next = 0;
        let mut open: BTreeSet<usize> = BTreeSet::new();
        let mut closing: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
        let mut last_closed: Option<usize> = None;
        for ri in reqs {
            let r = &report.requests[ri];
            let t = r.sent;
            while next < conns.len() && all[conns[next]].first_seen < t {
                open.insert(next);
                if let Some(at) = all[conns[next]].closed_at {
                    closing.push(Reverse((micros(at), next)));
                }
                next += 1;
            }
            while let Some(&Reverse((at, pos))) = closing.peek() {
                if at > micros(t) {
                    break;
                }
                closing.pop();
                open.remove(&pos);
                let ci = conns[pos];
                if last_closed.is_none_or(|l| all[l].closed_at <= all[ci].closed_at) {
                    last_closed = Some(ci);
                }
            }
            let Some(own) = index[r.stream as usize] else {
                continue;
            };
            // Most recently opened first.
            let others = open
                .iter()
                .rev()
                .map(|&pos| conns[pos])
                .filter(|&ci| ci != own)
                .map(|ci| &all[ci]);
            let closed = last_closed.map(|ci| &all[ci]);
            reasons.push((ri, explain(t, &all[own], others, closed, &by_stream)));
        }
    }
    let mut tally: std::collections::BTreeMap<&'static str, u64> = Default::default();
    for (ri, why) in reasons {
        *tally.entry(why.reason).or_default() += 1;
        report.requests[ri].why_new = Some(why);
    }
    report.summary.new_connection_reasons =
        tally.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
}

/// `(sent, answered)` of every request, per stream number, in order sent.
struct Timeline(Vec<Vec<(f64, Option<f64>)>>);

impl Timeline {
    fn get(&self, stream: u64) -> Option<&[(f64, Option<f64>)]> {
        self.0
            .get(stream as usize)
            .map(Vec::as_slice)
            .filter(|reqs| !reqs.is_empty())
    }
}

fn micros(secs: f64) -> i64 {
    (secs * 1e6).round() as i64
}

/// What one connection was doing at time `t`.
enum Activity {
    /// A request sent and not yet answered.
    Busy,
    /// Its requests so far were answered, the last one at this time.
    Idle(f64),
    /// Opened, but no request answered on it yet (reserved by another caller,
    /// or still in its handshake).
    Unused,
}

fn activity(c: &ConnectionRecord, t: f64, by_stream: &Timeline) -> Activity {
    let Some(reqs) = by_stream.get(c.stream) else {
        return Activity::Unused;
    };
    let sent = reqs.partition_point(|&(s, _)| s <= t);
    // A few most recent requests decide (HTTP/2 may have several in flight).
    let recent = &reqs[sent.saturating_sub(8)..sent];
    if recent.iter().any(|&(_, a)| a.is_none_or(|a| a > t)) {
        return Activity::Busy;
    }
    match recent.iter().filter_map(|&(_, a)| a).reduce(f64::max) {
        Some(a) => Activity::Idle(a),
        None => Activity::Unused,
    }
}

/// `others`: the other connections of the same client host to the same
/// server open at `t`; `closed`: the one of them closed most recently before.
fn explain<'a>(
    t: f64,
    conn: &ConnectionRecord,
    others: impl Iterator<Item = &'a ConnectionRecord>,
    closed: Option<&ConnectionRecord>,
    by_stream: &Timeline,
) -> NewConnectionReason {
    let mut busy = 0;
    let mut latest_busy = None;
    for c in others {
        match activity(c, t, by_stream) {
            Activity::Idle(answered) => {
                return NewConnectionReason {
                    reason: "idle_not_reused",
                    previous_stream: Some(c.stream),
                    detail: format!(
                        "stream {} to the same server was open, idle for {:.1} ms, but the client did not reuse it",
                        c.stream,
                        (t - answered) * 1000.0
                    ),
                    cause: None,
                };
            }
            Activity::Busy => {
                busy += 1;
                latest_busy.get_or_insert(c.stream);
            }
            Activity::Unused => {}
        }
    }
    if busy > 0 {
        return NewConnectionReason {
            reason: "all_busy",
            previous_stream: latest_busy,
            detail: format!(
                "all {} open connection{} to the same server had a request in flight",
                busy,
                if busy == 1 { "" } else { "s" }
            ),
            cause: None,
        };
    }
    let Some(last) = closed else {
        return NewConnectionReason {
            reason: "first",
            previous_stream: None,
            detail: format!("first connection from this client to {}", conn.server),
            cause: None,
        };
    };
    let by = last.closed_by.unwrap_or("?");
    let how = last.closed_with.map_or("?".to_string(), str::to_uppercase);
    let ago = last.closed_at.map_or_else(String::new, |at| {
        format!(" {:.1} ms before", (t - at) * 1000.0)
    });
    let after = last.requests.map_or_else(String::new, |n| {
        format!(" after {n} request{}", if n == 1 { "" } else { "s" })
    });
    let cause = close_cause(last, by_stream);
    NewConnectionReason {
        reason: "previous_closed",
        previous_stream: Some(last.stream),
        detail: format!(
            "stream {} to the same server was closed by the {by} ({how}){after}{ago}{}",
            last.stream,
            cause
                .as_ref()
                .map_or_else(String::new, |c| format!(": {c}"))
        ),
        cause,
    }
}

/// Why a connection ended, as far as its bytes and timing tell: an announced
/// close (`Connection: close`, HTTP/1.0, GOAWAY), or a server that closed a
/// connection idle since its last response (a keep-alive timeout, like
/// nginx's `keepalive_timeout`).
fn close_cause(c: &ConnectionRecord, by_stream: &Timeline) -> Option<String> {
    if let Some(http) = &c.http {
        // A client that asked to close is answered in kind: the ask comes first.
        match (http.client_close_depth, http.server_close_depth) {
            (Some(c), s) if s.is_none_or(|s| c <= s) => {
                return Some(format!(
                    "the client sent Connection: close with request {c}"
                ));
            }
            (_, Some(s)) => {
                return Some(format!(
                    "the server sent Connection: close with response {s}"
                ));
            }
            _ => {}
        }
        if http.server_http10_depth.is_some() || http.client_http10_depth.is_some() {
            return Some("HTTP/1.0 without keep-alive".to_string());
        }
        if let Some(g) = http.goaway.first() {
            return Some(format!("the {} sent GOAWAY", g.sender));
        }
    }
    let closed_at = c.closed_at?;
    let last_answer = by_stream
        .get(c.stream)?
        .iter()
        .filter_map(|&(_, a)| a)
        .filter(|&a| a <= closed_at)
        .reduce(f64::max)?;
    let idle_ms = (closed_at - last_answer) * 1000.0;
    match c.closed_by {
        Some("server") => Some(format!(
            "the server closed it {idle_ms:.0} ms after its last response (an idle timeout)"
        )),
        Some("client") if c.rst_client > 0 => Some(format!(
            "the client reset it {idle_ms:.0} ms after its last response (a response not read to the end?)"
        )),
        Some("client") => Some(format!(
            "the client closed it {idle_ms:.0} ms after its last response"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{RequestRecord, Summary};

    fn conn(
        stream: u64,
        cport: u16,
        first: f64,
        closed: Option<(f64, &'static str)>,
    ) -> ConnectionRecord {
        ConnectionRecord {
            last_seen: first + 10.0,
            closed_by: closed.map(|(_, by)| by),
            closed_with: closed.map(|_| "fin"),
            closed_at: closed.map(|(at, _)| at),
            requests: Some(1),
            ..crate::testkit::connection_record(
                stream,
                &format!("127.0.0.1:{cport}"),
                "127.0.0.1:8080",
                first,
            )
        }
    }

    fn req(stream: u64, depth: u32, sent: f64, answered: Option<f64>) -> RequestRecord {
        RequestRecord {
            stream,
            depth,
            reused: depth > 1,
            method: "GET".to_string(),
            target: "/".to_string(),
            host: None,
            status: answered.map(|_| 200),
            sent,
            answered,
            h2_stream: None,
            tag: None,
            seen_in: "capture",
            why_new: None,
        }
    }

    fn report(connections: Vec<ConnectionRecord>, requests: Vec<RequestRecord>) -> Report {
        let summary = Summary::tally(&connections, &requests);
        let mut r = Report {
            tool: Default::default(),
            source: Default::default(),
            connections,
            requests,
            summary,
            anomalies: Vec::new(),
            client: None,
        };
        explain_new_connections(&mut r);
        r
    }

    fn reasons(r: &Report) -> Vec<Option<(&'static str, Option<u64>)>> {
        r.requests
            .iter()
            .map(|q| q.why_new.as_ref().map(|w| (w.reason, w.previous_stream)))
            .collect()
    }

    #[test]
    fn server_closed_connections_explain_the_next_one() {
        let r = report(
            vec![
                conn(0, 5000, 0.0, Some((1.0, "server"))),
                conn(1, 5001, 2.0, None),
            ],
            vec![
                req(0, 1, 0.1, Some(0.2)),
                req(1, 1, 2.1, Some(2.2)),
                req(1, 2, 3.0, Some(3.1)),
            ],
        );
        assert_eq!(
            reasons(&r),
            [
                Some(("first", None)),
                Some(("previous_closed", Some(0))),
                None
            ]
        );
        let detail = &r.requests[1].why_new.as_ref().unwrap().detail;
        assert!(
            detail.contains("closed by the server (FIN) after 1 request 1100.0 ms before"),
            "{detail}"
        );
        assert_eq!(r.summary.new_connection_reasons["previous_closed"], 1);
    }

    #[test]
    fn the_cause_of_a_close_comes_from_signals_or_idle_time() {
        // Closed by the server one second after its only response: an idle timeout.
        let r = report(
            vec![
                conn(0, 5000, 0.0, Some((1.2, "server"))),
                conn(1, 5001, 2.0, None),
            ],
            vec![req(0, 1, 0.1, Some(0.2)), req(1, 1, 2.1, Some(2.2))],
        );
        let cause = r.requests[1].why_new.as_ref().unwrap().cause.clone();
        assert_eq!(
            cause.as_deref(),
            Some("the server closed it 1000 ms after its last response (an idle timeout)")
        );
        // The same close after an announced `Connection: close`.
        let mut announced = conn(0, 5000, 0.0, Some((1.2, "server")));
        announced.http = Some(crate::http::HttpSignals {
            server_close_depth: Some(1),
            ..Default::default()
        });
        let r = report(
            vec![announced, conn(1, 5001, 2.0, None)],
            vec![req(0, 1, 0.1, Some(0.2)), req(1, 1, 2.1, Some(2.2))],
        );
        let why = r.requests[1].why_new.as_ref().unwrap();
        assert_eq!(
            why.cause.as_deref(),
            Some("the server sent Connection: close with response 1")
        );
        assert!(why
            .detail
            .ends_with(": the server sent Connection: close with response 1"));
    }

    #[test]
    fn an_open_idle_connection_left_unused_is_named() {
        // Stream 0 answered at 0.2 and stays open; stream 1 opens at 0.5.
        let r = report(
            vec![conn(0, 5000, 0.0, None), conn(1, 5001, 0.5, None)],
            vec![req(0, 1, 0.1, Some(0.2)), req(1, 1, 0.6, Some(0.7))],
        );
        assert_eq!(reasons(&r)[1], Some(("idle_not_reused", Some(0))));
        let detail = &r.requests[1].why_new.as_ref().unwrap().detail;
        assert!(detail.contains("idle for 400.0 ms"), "{detail}");
    }

    #[test]
    fn busy_connections_explain_concurrency() {
        let r = report(
            vec![conn(0, 5000, 0.0, None), conn(1, 5001, 0.05, None)],
            vec![req(0, 1, 0.1, Some(0.5)), req(1, 1, 0.2, Some(0.6))],
        );
        assert_eq!(reasons(&r)[1], Some(("all_busy", Some(0))));
    }

    #[test]
    fn other_clients_and_servers_do_not_count() {
        let mut other = conn(1, 5001, 0.5, None);
        other.client = "10.9.9.9:5001".to_string();
        let r = report(
            vec![conn(0, 5000, 0.0, None), other],
            vec![req(0, 1, 0.1, Some(0.2)), req(1, 1, 0.6, Some(0.7))],
        );
        assert_eq!(reasons(&r)[1], Some(("first", None)));
    }
}
