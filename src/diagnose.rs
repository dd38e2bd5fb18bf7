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
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use crate::flow::{Finished, FlowEvent, Peers};
use crate::report::{ConnectionRecord, Report, RequestRecord};
use crate::wire::Timestamp;

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

/// How long after a request was sent its verdict waits for the rest of the
/// capture to catch up (a request head or an answer on another connection
/// is found when its last segment arrives, a little after its first byte).
const HOLD: Duration = Duration::from_secs(1);

/// How long a verdict waits for the connection it names as "closed before"
/// to be finalised (its final request count and signals); after that it is
/// judged with what is known.
const WAIT_FOR_PREVIOUS: Duration = Duration::from_secs(10);

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Connections of one client host to one server are judged together.
type GroupKey = (IpAddr, SocketAddr);

fn later(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp(t.0.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)))
}

fn earlier(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp(t.0.saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)))
}

/// What a closed connection says about the next one, once it is final.
#[derive(Debug, Clone)]
struct ClosedInfo {
    stream: u64,
    closed_by: Option<&'static str>,
    closed_with: Option<&'static str>,
    closed_at: Option<f64>,
    requests: Option<u32>,
    cause: Option<String>,
}

impl ClosedInfo {
    fn of(record: &ConnectionRecord, requests: &[RequestRecord]) -> ClosedInfo {
        ClosedInfo {
            stream: record.stream,
            closed_by: record.closed_by,
            closed_with: record.closed_with,
            closed_at: record.closed_at,
            requests: record.requests,
            cause: close_cause(record, requests.iter().filter_map(|r| r.answered)),
        }
    }
}

/// The judge's view of one connection while it matters.
#[derive(Debug)]
struct View {
    group: GroupKey,
    server: SocketAddr,
    first_seen: Timestamp,
    closed_at: Option<Timestamp>,
    /// `(depth, sent, answered)` in order found: the recent ones, and every
    /// one a pending verdict may still ask about.
    requests: VecDeque<(u32, Timestamp, Option<Timestamp>)>,
    /// Its own verdict: when its first request was sent, while pending.
    pending: Option<Timestamp>,
    verdict: Option<NewConnectionReason>,
    /// Set when the connection was finalised.
    closed_info: Option<ClosedInfo>,
    finished: bool,
}

#[derive(Debug, Default)]
struct Group {
    /// Members by (first packet, stream): the order "most recently opened".
    members: BTreeSet<(Timestamp, u64)>,
    /// First-request times of the members' pending verdicts.
    pending: BTreeSet<(Timestamp, u64)>,
    /// The latest-closed connection no longer among the members.
    retired_closed: Option<((Timestamp, Timestamp, u64), ClosedInfo)>,
}

/// Why each new connection was opened, judged as a stage on the tracker's
/// event stream, in capture time.
///
/// For the first request on a connection, sent at `t`, it looks at the other
/// connections from the same client host to the same server as they stood
/// at `t`:
/// - none had been opened: the first connection to that server (`first`);
/// - one was open and idle (its requests so far answered): the client chose
///   not to reuse it (`idle_not_reused`): a pool limit, an undrained body, a
///   client without a connection pool;
/// - every open one was busy with an unanswered request (`all_busy`):
///   concurrency needs more connections, as HTTP/1.1 carries one request at a time;
/// - all were closed (`previous_closed`): by whom and how says whether the server
///   (idle timeout, request limit, `Connection: close`) or the client ended them.
///
/// A verdict is given [`HOLD`] after `t` in capture time (longer only while
/// it waits for the connection it names to be finalised), and a finished
/// connection is handed on once its verdict is in: the stage holds memory
/// for the connections open at once and the last second or so, not for the
/// capture.
#[derive(Debug, Default)]
pub struct ReuseJudge {
    views: FastMap<u64, View>,
    groups: FastMap<GroupKey, Group>,
    /// (due, stream) of verdicts to give.
    due: BinaryHeap<Reverse<(Timestamp, u64)>>,
    /// Finalised connections waiting for their own verdict.
    held: FastMap<u64, Box<Finished>>,
    released: VecDeque<Box<Finished>>,
    /// Finalised connections in order, to forget once no verdict can ask.
    retiring: VecDeque<(Timestamp, u64)>,
    /// Verdicts waiting for the connection (key) they name as closed
    /// before to be finalised.
    waiting: FastMap<u64, Vec<u64>>,
    clock: Option<Timestamp>,
}

impl ReuseJudge {
    pub fn new() -> ReuseJudge {
        ReuseJudge::default()
    }

    /// Take one event of the tracker, in the order the tracker gave them.
    pub fn on_event(&mut self, event: FlowEvent) {
        match event {
            // Connections matter once they carry a request or close: a
            // SYN nobody answered changes no verdict.
            FlowEvent::Opened { .. } => {}
            FlowEvent::Request {
                stream,
                peers,
                depth,
                sent,
                answered,
            } => {
                self.view(stream, peers);
                let horizon = self.horizon_for(stream);
                let Some(view) = self.views.get_mut(&stream) else {
                    return;
                };
                let at = view
                    .requests
                    .iter()
                    .rposition(|r| r.1 <= sent)
                    .map_or(0, |i| i + 1);
                view.requests.insert(at, (depth, sent, answered));
                // Keep eight requests sent before the horizon (the most any
                // verdict looks at) and every one after it.
                while view.requests.len() > 8 && view.requests[8].1 < horizon {
                    view.requests.pop_front();
                }
                if depth == 1 && view.pending.is_none() && view.verdict.is_none() {
                    view.pending = Some(sent);
                    let group = view.group;
                    self.groups
                        .entry(group)
                        .or_default()
                        .pending
                        .insert((sent, stream));
                    self.due.push(Reverse((later(sent, HOLD), stream)));
                }
            }
            FlowEvent::Answered { stream, depth, at } => {
                if let Some(view) = self.views.get_mut(&stream) {
                    if let Some(r) = view.requests.iter_mut().rev().find(|r| r.0 == depth) {
                        r.2 = Some(at);
                    }
                }
            }
            FlowEvent::Closed {
                stream, peers, at, ..
            } => self.view(stream, peers).closed_at = Some(at),
            FlowEvent::Finished(finished) => self.on_finished(finished),
        }
    }

    /// The view of a connection, made when first needed.
    fn view(&mut self, stream: u64, peers: Peers) -> &mut View {
        self.views.entry(stream).or_insert_with(|| {
            let group = (peers.client.ip(), peers.server);
            self.groups
                .entry(group)
                .or_default()
                .members
                .insert((peers.opened, stream));
            View {
                group,
                server: peers.server,
                first_seen: peers.opened,
                closed_at: None,
                requests: VecDeque::new(),
                pending: None,
                verdict: None,
                closed_info: None,
                finished: false,
            }
        })
    }

    fn on_finished(&mut self, mut finished: Box<Finished>) {
        let stream = finished.record.stream;
        let Some(view) = self.views.get_mut(&stream) else {
            self.released.push_back(finished);
            return;
        };
        view.finished = true;
        view.closed_info = Some(ClosedInfo::of(&finished.record, &finished.requests));
        if let Some(waiters) = self.waiting.remove(&stream) {
            let now = self.clock.unwrap_or(Timestamp(i64::MIN));
            for w in waiters {
                self.due.push(Reverse((now, w)));
            }
        }
        let end = view
            .closed_at
            .unwrap_or_else(|| Timestamp((finished.record.last_seen * 1e6).round() as i64));
        self.retiring.push_back((end, stream));
        if view.pending.is_some() {
            self.held.insert(stream, finished);
        } else {
            if let Some(verdict) = view.verdict.take() {
                attach(&mut finished, verdict);
            }
            self.released.push_back(finished);
        }
    }

    /// Capture time reached `now`: give the verdicts due, forget what no
    /// verdict can ask about any more.
    pub fn advance(&mut self, now: Timestamp) {
        if self.clock.is_some_and(|c| c >= now) {
            return;
        }
        self.clock = Some(now);
        while let Some(&Reverse((due, stream))) = self.due.peek() {
            if due > now {
                break;
            }
            self.due.pop();
            self.judge(stream, false);
        }
        self.forget();
    }

    /// The input ended: give every verdict with what is known.
    pub fn finish(&mut self) {
        self.clock = Some(Timestamp(i64::MAX));
        while let Some(Reverse((_, stream))) = self.due.pop() {
            self.judge(stream, true);
        }
        let mut held: Vec<u64> = self.held.keys().copied().collect();
        held.sort_unstable();
        for stream in held {
            if let Some(f) = self.held.remove(&stream) {
                self.released.push_back(f);
            }
        }
    }

    /// The next finalised connection whose verdict is in, with `why_new` set.
    pub fn pop_released(&mut self) -> Option<Box<Finished>> {
        self.released.pop_front()
    }

    /// Requests sent before this need to be kept only as the last eight.
    fn horizon_for(&self, stream: u64) -> Timestamp {
        let clock = self.clock.map_or(Timestamp(i64::MIN), |c| earlier(c, HOLD));
        let group_pending = self
            .views
            .get(&stream)
            .and_then(|v| self.groups.get(&v.group))
            .and_then(|g| g.pending.first())
            .map(|p| p.0);
        group_pending.map_or(clock, |p| p.min(clock))
    }

    fn judge(&mut self, stream: u64, last_call: bool) {
        let Some(view) = self.views.get(&stream) else {
            return;
        };
        let Some(t) = view.pending else {
            return;
        };
        let group = self.groups.get(&view.group);
        let previous = group.and_then(|g| last_closed(g, &self.views, stream, t));
        // The connection named as closed before must be final to tell its
        // request count and why it ended; wait for it a little.
        if let Some((prev, None)) = &previous {
            let clock = self.clock.unwrap_or(t);
            let give_up = later(t, WAIT_FOR_PREVIOUS);
            if !last_call && clock < give_up {
                let waiters = self.waiting.entry(*prev).or_default();
                if !waiters.contains(&stream) {
                    waiters.push(stream);
                    self.due.push(Reverse((give_up, stream)));
                }
                return;
            }
        }
        let verdict = explain(t, stream, view.server, group, &self.views, previous);
        let view = self.views.get_mut(&stream).expect("looked up above");
        view.pending = None;
        let group_key = view.group;
        if let Some(g) = self.groups.get_mut(&group_key) {
            g.pending.remove(&(t, stream));
        }
        match self.held.remove(&stream) {
            Some(mut finished) => {
                attach(&mut finished, verdict);
                self.released.push_back(finished);
            }
            None => view.verdict = Some(verdict),
        }
    }

    /// Drop finalised connections that ended before every verdict still to
    /// be given in their group (and a second before now): only the latest
    /// closed one of a group is kept, as the "previous" of later ones.
    fn forget(&mut self) {
        let Some(clock) = self.clock else { return };
        let recent = earlier(clock, HOLD);
        // A connection its group still needs goes to the back of the line;
        // a bounded number are looked at each time.
        let mut budget = 16;
        while let Some(&(end, stream)) = self.retiring.front() {
            if end >= recent {
                break;
            }
            let Some(view) = self.views.get(&stream) else {
                self.retiring.pop_front();
                continue;
            };
            let group = self.groups.get(&view.group);
            let horizon = group
                .and_then(|g| g.pending.first())
                .map_or(recent, |p| p.0.min(recent));
            self.retiring.pop_front();
            if end >= horizon || view.pending.is_some() || view.verdict.is_some() {
                self.retiring.push_back((end, stream));
                budget -= 1;
                if budget == 0 {
                    break;
                }
                continue;
            }
            let view = self.views.remove(&stream).expect("looked up above");
            let Some(g) = self.groups.get_mut(&view.group) else {
                continue;
            };
            g.members.remove(&(view.first_seen, stream));
            if let (Some(closed), Some(info)) = (view.closed_at, view.closed_info) {
                let key = (closed, view.first_seen, stream);
                if g.retired_closed.as_ref().is_none_or(|(k, _)| *k <= key) {
                    g.retired_closed = Some((key, info));
                }
            }
            if g.members.is_empty() && g.pending.is_empty() && g.retired_closed.is_none() {
                self.groups.remove(&view.group);
            }
        }
    }
}

fn attach(finished: &mut Finished, verdict: NewConnectionReason) {
    if let Some(r) = finished.requests.iter_mut().find(|r| !r.reused) {
        r.why_new = Some(verdict);
    }
}

/// The group's connection closed most recently at or before `t` (other
/// than `own`), with its final facts if it was finalised.
fn last_closed(
    group: &Group,
    views: &FastMap<u64, View>,
    own: u64,
    t: Timestamp,
) -> Option<(u64, Option<ClosedInfo>)> {
    type Candidate = ((Timestamp, Timestamp, u64), u64, Option<ClosedInfo>);
    let mut best: Option<Candidate> = group
        .retired_closed
        .as_ref()
        .filter(|(k, _)| k.0 <= t)
        .map(|(k, info)| (*k, info.stream, Some(info.clone())));
    for &(first, stream) in &group.members {
        if first >= t {
            break;
        }
        if stream == own {
            continue;
        }
        let Some(view) = views.get(&stream) else {
            continue;
        };
        let Some(closed) = view.closed_at.filter(|&c| c <= t) else {
            continue;
        };
        let key = (closed, first, stream);
        if best.as_ref().is_none_or(|(k, ..)| *k <= key) {
            best = Some((key, stream, view.closed_info.clone()));
        }
    }
    best.map(|(_, stream, info)| (stream, info))
}

/// What one connection was doing at time `t`.
enum Activity {
    /// A request sent and not yet answered.
    Busy,
    /// Its requests so far were answered, the last one at this time.
    Idle(Timestamp),
    /// Opened, but no request answered on it yet (reserved by another caller,
    /// or still in its handshake).
    Unused,
}

fn activity(view: &View, t: Timestamp) -> Activity {
    let sent = view.requests.partition_point(|r| r.1 <= t);
    // A few most recent requests decide (HTTP/2 may have several in flight).
    let recent = view.requests.range(sent.saturating_sub(8)..sent);
    let mut last_answer: Option<Timestamp> = None;
    for r in recent {
        match r.2 {
            Some(a) if a <= t => last_answer = Some(last_answer.map_or(a, |l| l.max(a))),
            _ => return Activity::Busy,
        }
    }
    match last_answer {
        Some(a) => Activity::Idle(a),
        None => Activity::Unused,
    }
}

fn secs(t: Timestamp) -> f64 {
    t.as_secs_f64()
}

fn explain(
    t: Timestamp,
    own: u64,
    server: SocketAddr,
    group: Option<&Group>,
    views: &FastMap<u64, View>,
    previous: Option<(u64, Option<ClosedInfo>)>,
) -> NewConnectionReason {
    let mut busy = 0;
    let mut latest_busy = None;
    // The connections open at `t`, most recently opened first.
    let members = group.into_iter().flat_map(|g| g.members.iter().rev());
    for &(first, stream) in members {
        if first >= t || stream == own {
            continue;
        }
        let Some(view) = views.get(&stream) else {
            continue;
        };
        if view.closed_at.is_some_and(|c| c <= t) {
            continue;
        }
        match activity(view, t) {
            Activity::Idle(answered) => {
                return NewConnectionReason {
                    reason: "idle_not_reused",
                    previous_stream: Some(stream),
                    detail: format!(
                        "stream {stream} to the same server was open, idle for {:.1} ms, but the client did not reuse it",
                        (secs(t) - secs(answered)) * 1000.0
                    ),
                    cause: None,
                };
            }
            Activity::Busy => {
                busy += 1;
                latest_busy.get_or_insert(stream);
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
    let Some((stream, info)) = previous else {
        return NewConnectionReason {
            reason: "first",
            previous_stream: None,
            detail: format!("first connection from this client to {server}"),
            cause: None,
        };
    };
    // Not finalised within the wait: what the events told.
    let last = info.unwrap_or_else(|| {
        let view = views.get(&stream);
        ClosedInfo {
            stream,
            closed_by: None,
            closed_with: None,
            closed_at: view.and_then(|v| v.closed_at).map(secs),
            requests: view.map(|v| v.requests.len() as u32),
            cause: None,
        }
    });
    let by = last.closed_by.unwrap_or("?");
    let how = last.closed_with.map_or("?".to_string(), str::to_uppercase);
    let ago = last.closed_at.map_or_else(String::new, |at| {
        format!(" {:.1} ms before", (secs(t) - at) * 1000.0)
    });
    let after = last.requests.map_or_else(String::new, |n| {
        format!(" after {n} request{}", if n == 1 { "" } else { "s" })
    });
    NewConnectionReason {
        reason: "previous_closed",
        previous_stream: Some(last.stream),
        detail: format!(
            "stream {} to the same server was closed by the {by} ({how}){after}{ago}{}",
            last.stream,
            last.cause
                .as_ref()
                .map_or_else(String::new, |c| format!(": {c}"))
        ),
        cause: last.cause,
    }
}

/// Why a connection ended, as far as its bytes and timing tell: an announced
/// close (`Connection: close`, HTTP/1.0, GOAWAY), or a server that closed a
/// connection idle since its last response (a keep-alive timeout, like
/// nginx's `keepalive_timeout`). `answers`: when its responses began.
fn close_cause(c: &ConnectionRecord, answers: impl Iterator<Item = f64>) -> Option<String> {
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
    let last_answer = answers.filter(|&a| a <= closed_at).reduce(f64::max)?;
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

fn micros(secs: f64) -> Timestamp {
    Timestamp((secs * 1e6).round() as i64)
}

/// Fill `why_new` on every request that opened its connection, and the tally
/// in the summary, for a report assembled whole (a live run, once the
/// client's own records joined the captured ones): its records are fed
/// through the same [`ReuseJudge`] as a replay's events.
pub fn explain_new_connections(report: &mut Report) {
    for r in &mut report.requests {
        r.why_new = None;
    }
    let mut judge = ReuseJudge::new();
    let mut order: Vec<usize> = (0..report.connections.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&report.connections[a], &report.connections[b]);
        a.first_seen
            .total_cmp(&b.first_seen)
            .then(a.stream.cmp(&b.stream))
    });
    let mut by_stream: FastMap<u64, Vec<usize>> = FastMap::default();
    for (i, r) in report.requests.iter().enumerate() {
        by_stream.entry(r.stream).or_default().push(i);
    }
    let addr = |s: &str| s.parse::<SocketAddr>().ok();
    for &ci in &order {
        let c = &report.connections[ci];
        let (Some(client), Some(server)) = (addr(&c.client), addr(&c.server)) else {
            continue;
        };
        let peers = Peers {
            client,
            server,
            opened: micros(c.first_seen),
        };
        let mut reqs: Vec<&RequestRecord> = by_stream
            .get(&c.stream)
            .into_iter()
            .flatten()
            .map(|&i| &report.requests[i])
            .collect();
        reqs.sort_by(|a, b| a.sent.total_cmp(&b.sent));
        for r in &reqs {
            judge.on_event(FlowEvent::Request {
                stream: c.stream,
                peers,
                depth: if r.reused { r.depth.max(2) } else { 1 },
                sent: micros(r.sent),
                answered: r.answered.map(micros),
            });
        }
        if let Some(at) = c.closed_at {
            judge.on_event(FlowEvent::Closed {
                stream: c.stream,
                peers,
                by_client: c.closed_by == Some("client"),
                rst: c.closed_with == Some("rst"),
                at: micros(at),
            });
        }
        judge.on_event(FlowEvent::Finished(Box::new(Finished {
            record: c.clone(),
            requests: reqs.iter().map(|&r| r.clone()).collect(),
            end: crate::flow::EndReason::EndOfInput,
        })));
    }
    judge.finish();
    let mut verdicts: FastMap<u64, NewConnectionReason> = FastMap::default();
    while let Some(f) = judge.pop_released() {
        if let Some(why) = f.requests.into_iter().find_map(|r| r.why_new) {
            verdicts.insert(f.record.stream, why);
        }
    }
    let mut tally: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let mut done: FastMap<u64, ()> = FastMap::default();
    for r in &mut report.requests {
        if r.reused || done.contains_key(&r.stream) {
            continue;
        }
        if let Some(why) = verdicts.remove(&r.stream) {
            done.insert(r.stream, ());
            *tally.entry(why.reason).or_default() += 1;
            r.why_new = Some(why);
        }
    }
    report.summary.new_connection_reasons =
        tally.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
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
            tracker: None,
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
