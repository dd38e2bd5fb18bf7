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
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::flow::{CloseSignals, EndReason, Finished, FlowEvent, Peers};
use crate::report::{
    CauseCode, NewConnectionCode, NewConnectionReason, Report, RequestRecord, Role, Summary,
    UnusedCode, UnusedVerdict,
};
use crate::wire::Timestamp;

/// How long after a request was sent its verdict waits for the rest of the
/// capture to catch up (a request head or an answer on another connection
/// is found when its last segment arrives, a little after its first byte).
const HOLD: Duration = Duration::from_secs(1);

/// Most open connections a verdict looks at, most recently opened first. A
/// client that holds more open to one server at once (a flood, a leak) is
/// judged on these: an idle one among them is named, else they were busy.
pub const MAX_EXAMINED: usize = 64;

/// Most groups (client host, server) kept with nothing open, only for their
/// last close, which explains their next connection; the oldest goes first.
pub const MAX_IDLE_GROUPS: usize = 65_536;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Connections of one client host to one server are judged together.
type GroupKey = (IpAddr, SocketAddr);

/// Orders the connections of a group by when they opened.
type Member = (Timestamp, u64);

/// What a closed connection says about the next one: taken when it closed,
/// completed from its requests when the sweep passes its close.
#[derive(Debug, Clone)]
struct ClosedInfo {
    stream: u64,
    by_client: bool,
    rst: bool,
    at: Timestamp,
    requests: Option<u32>,
    signals: CloseSignals,
    /// The client also sent an RST (at the close or after it).
    client_reset: bool,
    /// When its last response complete before the close ended, and when
    /// that response's request was sent.
    last_complete: Option<Timestamp>,
    last_complete_sent: Option<Timestamp>,
    /// A response had begun and was not complete at the close.
    incomplete: Option<u32>,
    /// A request was sent and not answered by the close.
    in_flight: Option<u32>,
    /// Closed by the server first: the first request sent after that close
    /// (depth, when), and whether it was answered.
    sent_after_close: Option<(u32, Timestamp, bool)>,
    /// The capture missed bytes of it.
    lossy: bool,
}

impl ClosedInfo {
    /// Take what the connection's requests say about its end.
    fn settle(&mut self, requests: &VecDeque<Req>) {
        let at = self.at;
        let last = requests
            .iter()
            .filter(|r| r.complete_by(at))
            .max_by_key(|r| r.completed);
        self.last_complete = last.and_then(|r| r.completed);
        self.last_complete_sent = last.map(|r| r.sent);
        self.incomplete = requests
            .iter()
            .find(|r| r.sent <= at && r.answered.is_some_and(|a| a <= at) && !r.complete_by(at))
            .map(|r| r.depth);
        self.in_flight = requests
            .iter()
            .find(|r| r.sent <= at && r.answered.is_none_or(|a| a > at))
            .map(|r| r.depth);
        if !self.by_client {
            self.sent_after_close = requests
                .iter()
                .find(|r| r.sent > at)
                .map(|r| (r.depth, r.sent, r.answered.is_some()));
        }
    }
}

/// A request that another connection took while a new one was being dialled:
/// the connection that took it (`stream`) became free (`freed`: its previous
/// exchange complete, or its handshake done) after the new one's SYN, and
/// the request was sent at `sent`.
#[derive(Debug, Clone, Copy)]
struct Race {
    stream: u64,
    freed: Timestamp,
    sent: Timestamp,
}

/// How soon after a connection's SYN a request on another one, freed after
/// that SYN, says the new one lost a dial race.
const DIAL_RACE: Duration = Duration::from_secs(1);

/// One request as the judge follows it.
#[derive(Debug, Clone, Copy)]
struct Req {
    depth: u32,
    sent: Timestamp,
    answered: Option<Timestamp>,
    completed: Option<Timestamp>,
}

impl Req {
    fn complete_by(&self, t: Timestamp) -> bool {
        self.completed.is_some_and(|c| c <= t)
    }
}

/// The judge's view of one connection while it matters.
#[derive(Debug)]
struct View {
    group: GroupKey,
    first_seen: Timestamp,
    closed: Option<ClosedInfo>,
    /// In order sent: the recent ones, and every one a verdict still to be
    /// given may ask about.
    requests: VecDeque<Req>,
    /// HTTP/2: streams share the connection, busy only at its stream limit.
    multiplexed: bool,
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS, when seen.
    stream_limit: Option<u32>,
    /// The capture missed bytes of it.
    lossy: bool,
    /// Its own verdict: when its first request was sent, while pending.
    pending: Option<Timestamp>,
    finished: bool,
    /// Passed by its group's sweep: closed (or expired) before it.
    retired: bool,
}

/// One client host and one server, swept in time as verdicts are given
/// (in order of the time their request was sent): connections join the
/// open set when they began before that time and leave it when they closed.
#[derive(Debug, Default)]
struct Group {
    sweep: Option<Timestamp>,
    /// Members not yet reached by the sweep (opened at or after it).
    waiting: BTreeSet<Member>,
    /// Members opened before the sweep and not closed by it.
    open: BTreeSet<Member>,
    /// (end, opened, stream) of members not yet retired.
    ending: BinaryHeap<Reverse<(Timestamp, Timestamp, u64)>>,
    /// The member closed last before the sweep, by (close, open, stream).
    last_closed: Option<((Timestamp, Timestamp, u64), ClosedInfo)>,
    /// The members closed most recently before the sweep, as they were
    /// retired (at most [`RECENT_CLOSES`]).
    recent: VecDeque<ClosedInfo>,
    /// Requests carried by the members the server closed with
    /// `Connection: close`, most recent last (at most [`RECENT_CLOSES`]).
    server_closed_after: VecDeque<u32>,
    pending: usize,
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
/// A verdict is given [`HOLD`] after `t` in capture time, and a finalised
/// connection is handed on once its own verdict is in: the stage holds the
/// connections open at once and the last second, not the capture.
#[derive(Debug, Default)]
pub struct ReuseJudge {
    /// Boxed: the map's spare capacity then costs a pointer a slot.
    views: FastMap<u64, Box<View>>,
    /// Boxed too: a group is some 350 bytes, and a busy table is half empty.
    groups: FastMap<GroupKey, Box<Group>>,
    /// (due, stream) of verdicts to give.
    due: BinaryHeap<Reverse<(Timestamp, u64)>>,
    /// Finalised connections waiting for their own verdict.
    held: FastMap<u64, Box<Finished>>,
    /// Verdicts given before their connection was finalised.
    given: FastMap<u64, NewConnectionReason>,
    /// Connections forgotten (swept past, verdict given) before they were
    /// finalised, with their group: later events about them change nothing
    /// but a reset of the group's last close.
    gone: FastMap<u64, GroupKey>,
    released: VecDeque<Box<Finished>>,
    /// Groups with nothing open left, kept for their last close, in the
    /// order they became so (a group may be listed again; the entry is
    /// checked when it comes out).
    idle_groups: VecDeque<GroupKey>,
    /// Connections looked at to give verdicts: bounded per verdict.
    examined: u64,
    /// Connections the capture missed bytes of, so far.
    lossy_connections: u64,
    /// Connections opened while another of their group was busy (a request
    /// may have waited for them), until they are finalised.
    opened_while_busy: FastMap<u64, ()>,
    /// Connections opened and not used yet, by group and SYN, with the
    /// first request another connection took while they were being
    /// dialled; and where each is in that map. A connection leaves at its
    /// first request or when it is finalised: these are bounded by the
    /// connections open at once, not by the requests of their group.
    dialled: BTreeMap<(GroupKey, Timestamp, u64), Option<Race>>,
    dialled_at: FastMap<u64, (GroupKey, Timestamp)>,
}

impl ReuseJudge {
    pub fn new() -> ReuseJudge {
        ReuseJudge::default()
    }

    /// Take one event of the tracker, in the order the tracker gave them.
    pub fn on_event(&mut self, event: FlowEvent) {
        if let FlowEvent::Request { stream, .. }
        | FlowEvent::Answered { stream, .. }
        | FlowEvent::Closed { stream, .. } = &event
        {
            if self.gone.contains_key(stream) {
                return;
            }
        }
        match event {
            // Connections matter once they carry a request or close: a
            // SYN nobody answered changes no verdict.
            // Noted only whether a request may have waited for it, for a
            // connection that then carries none.
            FlowEvent::Opened { stream, peers } => {
                let t = peers.opened;
                let busy = self
                    .groups
                    .get(&(peers.client.ip(), peers.server))
                    .is_some_and(|g| {
                        g.open
                            .iter()
                            .chain(g.waiting.iter())
                            .rev()
                            .take(MAX_EXAMINED)
                            .filter_map(|&(_, s)| self.views.get(&s))
                            .any(|v| {
                                v.closed.as_ref().is_none_or(|c| c.at > t)
                                    && matches!(activity(v, t), Activity::Busy { .. })
                            })
                    });
                if busy {
                    self.opened_while_busy.insert(stream, ());
                }
                let group = (peers.client.ip(), peers.server);
                if let Some((g, opened)) = self.dialled_at.insert(stream, (group, t)) {
                    self.dialled.remove(&(g, opened, stream));
                }
                self.dialled.insert((group, t, stream), None);
            }
            FlowEvent::Request {
                stream,
                peers,
                depth,
                sent,
                answered,
                completed,
                multiplexed,
                stream_limit,
            } => {
                let (view, group) = view_of(&mut self.views, &mut self.groups, stream, peers);
                let at = view
                    .requests
                    .iter()
                    .rposition(|r| r.sent <= sent)
                    .map_or(0, |i| i + 1);
                view.requests.insert(
                    at,
                    Req {
                        depth,
                        sent,
                        answered,
                        completed,
                    },
                );
                view.multiplexed |= multiplexed;
                if stream_limit.is_some() {
                    view.stream_limit = stream_limit;
                }
                let previous = view
                    .requests
                    .range(..at)
                    .rev()
                    .find(|r| r.complete_by(sent))
                    .and_then(|r| Some((r.sent, r.completed?)));
                // A first request: the connection was not ready (in its
                // handshake) from its SYN until then.
                let previous = match depth {
                    1 => Some((peers.opened, sent)),
                    _ => previous,
                };
                // Connections dialled while this one was busy, and not used
                // yet: this one became free and took the request first.
                if let Some((busy_from, freed)) = previous {
                    let group_key = view.group;
                    let from = busy_from.max(sent.before(DIAL_RACE));
                    if from < freed && sent >= freed {
                        let lost = self
                            .dialled
                            .range_mut((group_key, from, 0)..(group_key, freed, 0))
                            .filter(|((_, opened, s), race)| {
                                // The earliest request, whichever is told first.
                                *s != stream
                                    && *opened > busy_from
                                    && race.is_none_or(|r| (sent, stream) < (r.sent, r.stream))
                            });
                        for (_, race) in lost {
                            *race = Some(Race {
                                stream,
                                freed,
                                sent,
                            });
                        }
                    }
                }
                if depth == 1 {
                    if let Some((g, opened)) = self.dialled_at.remove(&stream) {
                        self.dialled.remove(&(g, opened, stream));
                    }
                }
                // Keep eight requests sent before the sweep (the most a
                // verdict looks at) and every one after it.
                if let Some(sweep) = group.sweep {
                    while view.requests.len() > 8 && view.requests[8].sent < sweep {
                        view.requests.pop_front();
                    }
                }
                if depth == 1 && view.pending.is_none() && !self.given.contains_key(&stream) {
                    view.pending = Some(sent);
                    group.pending += 1;
                    // Judged as of its SYN, in the order of the SYNs, so a
                    // group's sweep meets them in time order.
                    self.due
                        .push(Reverse((view.first_seen.after(HOLD), stream)));
                }
            }
            FlowEvent::Answered { stream, depth, at } => {
                if let Some(view) = self.views.get_mut(&stream) {
                    if let Some(r) = view.requests.iter_mut().rev().find(|r| r.depth == depth) {
                        r.answered = Some(at);
                    }
                }
            }
            FlowEvent::Completed { stream, depth, at } => {
                if let Some(view) = self.views.get_mut(&stream) {
                    if let Some(r) = view.requests.iter_mut().rev().find(|r| r.depth == depth) {
                        r.answered.get_or_insert(at);
                        r.completed = Some(at);
                    }
                }
            }
            FlowEvent::Closed {
                stream,
                peers,
                by_client,
                rst,
                at,
                requests,
                signals,
            } => {
                let (view, _) = view_of(&mut self.views, &mut self.groups, stream, peers);
                let mut closed = ClosedInfo {
                    stream,
                    by_client,
                    rst,
                    at,
                    requests,
                    signals,
                    client_reset: by_client && rst,
                    last_complete: None,
                    last_complete_sent: None,
                    incomplete: None,
                    in_flight: None,
                    sent_after_close: None,
                    lossy: view.lossy,
                };
                closed.settle(&view.requests);
                view.closed = Some(closed);
                let (group, member) = (view.group, (view.first_seen, stream));
                self.end_member(group, member, at);
            }
            FlowEvent::ClientReset { stream } => {
                let group = match self.views.get_mut(&stream) {
                    Some(view) => {
                        if let Some(c) = &mut view.closed {
                            c.client_reset = true;
                        }
                        Some(view.group)
                    }
                    None => self.gone.get(&stream).copied(),
                };
                if let Some((_, c)) = group
                    .and_then(|g| self.groups.get_mut(&g))
                    .and_then(|g| g.last_closed.as_mut())
                    .filter(|(_, c)| c.stream == stream)
                {
                    c.client_reset = true;
                }
            }
            FlowEvent::Lossy { stream } => {
                self.lossy_connections += 1;
                if let Some(view) = self.views.get_mut(&stream) {
                    view.lossy = true;
                    if let Some(c) = &mut view.closed {
                        c.lossy = true;
                    }
                }
            }
            FlowEvent::Finished(finished) => self.on_finished(finished),
            // Reused requests, already told as `Request` events: nothing
            // to judge (the pipeline takes them to the rows).
            FlowEvent::Settled(_) => {}
        }
    }

    /// The view of a connection, made when first needed.
    /// A member's end is known: the sweep retires it when it gets there
    /// (at once, if it is already past).
    fn end_member(&mut self, group_key: GroupKey, member: Member, at: Timestamp) {
        let Some(group) = self.groups.get_mut(&group_key) else {
            return;
        };
        group.ending.push(Reverse((at, member.0, member.1)));
        if let Some(sweep) = group.sweep {
            if at <= sweep {
                self.sweep(group_key, sweep);
            }
        }
    }

    fn on_finished(&mut self, mut finished: Box<Finished>) {
        let stream = finished.record.stream;
        let waited_for = self.opened_while_busy.remove(&stream).is_some();
        let race = self
            .dialled_at
            .remove(&stream)
            .and_then(|(g, opened)| self.dialled.remove(&(g, opened, stream)))
            .flatten();
        if finished.requests.is_empty() && finished.record.requests == Some(0) {
            finished.record.unused = Some(unused(&finished.record, race, waited_for));
        }
        let Some(view) = self.views.get_mut(&stream) else {
            self.gone.remove(&stream);
            if let Some(verdict) = self.given.remove(&stream) {
                attach(&mut finished, verdict);
            }
            self.released.push_back(finished);
            return;
        };
        view.finished = true;
        // Let go before its end by the tracker: no longer open from then on.
        // (At the end of the input every connection is finalised as it stands,
        // and stays open for the verdicts still to come.)
        if view.closed.is_none() && finished.end != EndReason::EndOfInput {
            let at = finished.record.last_seen;
            let member = (view.first_seen, stream);
            let group = view.group;
            self.end_member(group, member, at);
        }
        // Finalised before the end of the input, it ended seconds ago (the
        // close grace, the idle timeout): no verdict still to come is about
        // a time before its end unless one is pending now. With none, the
        // group's sweep moves past it, so it is forgotten with its group's
        // other finished members instead of waiting for a next verdict that
        // may never come. (The sweep may have passed its end already and
        // forgotten it.)
        if let Some(view) = self.views.get(&stream) {
            let group_key = view.group;
            let ended = view
                .closed
                .as_ref()
                .map_or(finished.record.last_seen, |c| c.at);
            let idle_group = self.groups.get(&group_key).is_some_and(|g| g.pending == 0);
            if finished.end != EndReason::EndOfInput && view.pending.is_none() && idle_group {
                self.sweep(group_key, ended);
            }
        }
        let Some(view) = self.views.get_mut(&stream) else {
            // Swept past and forgotten.
            if let Some(verdict) = self.given.remove(&stream) {
                attach(&mut finished, verdict);
            }
            self.released.push_back(finished);
            return;
        };
        if view.pending.is_some() {
            self.held.insert(stream, finished);
            return;
        }
        if let Some(verdict) = self.given.remove(&stream) {
            attach(&mut finished, verdict);
        }
        self.released.push_back(finished);
        if view.retired {
            self.forget(stream);
        }
    }

    /// Capture time reached `now`: give the verdicts due.
    pub fn advance(&mut self, now: Timestamp) {
        while let Some(&Reverse((due, stream))) = self.due.peek() {
            if due > now {
                break;
            }
            self.due.pop();
            self.judge(stream);
        }
    }

    /// The input ended: give every verdict with what is known.
    pub fn finish(&mut self) {
        while self.finish_one() {}
    }

    /// The input ended: give the next verdict with what is known, or, once
    /// all are given, release the connections left waiting; false then. A
    /// caller that takes the released connections between calls holds no
    /// more of them at once than the judge held when the input ended.
    pub fn finish_one(&mut self) -> bool {
        if let Some(Reverse((_, stream))) = self.due.pop() {
            self.judge(stream);
            return true;
        }
        let mut held: Vec<u64> = self.held.keys().copied().collect();
        held.sort_unstable();
        for stream in held {
            if let Some(f) = self.held.remove(&stream) {
                self.released.push_back(f);
            }
        }
        false
    }

    /// Open connections looked at by the verdicts so far: at most
    /// [`MAX_EXAMINED`] a verdict, so linear in the requests.
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Groups (client host, server) held now, open or kept for a last close.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Connections the judge holds a view of now.
    pub fn views(&self) -> usize {
        self.views.len()
    }

    /// The next finalised connection whose verdict is in, with `why_new` set.
    pub fn pop_released(&mut self) -> Option<Box<Finished>> {
        self.released.pop_front()
    }

    /// Move the group's sweep on to `t`: members that began before it join
    /// the open set, members that ended by it leave.
    fn sweep(&mut self, group_key: GroupKey, t: Timestamp) {
        let Some(group) = self.groups.get_mut(&group_key) else {
            return;
        };
        if group.sweep.is_none_or(|s| s < t) {
            group.sweep = Some(t);
        }
        let t = group.sweep.expect("set just above");
        while let Some(&first) = group.waiting.first() {
            if first.0 >= t {
                break;
            }
            group.waiting.pop_first();
            group.open.insert(first);
        }
        let mut forgettable = Vec::new();
        while let Some(&Reverse((end, opened, stream))) = group.ending.peek() {
            if end > t {
                break;
            }
            group.ending.pop();
            let member = (opened, stream);
            group.open.remove(&member);
            group.waiting.remove(&member);
            let Some(view) = self.views.get_mut(&stream) else {
                continue;
            };
            view.retired = true;
            if let Some(closed) = &mut view.closed {
                closed.settle(&view.requests);
                let key = (closed.at, opened, stream);
                if group.last_closed.as_ref().is_none_or(|(k, _)| *k <= key) {
                    group.last_closed = Some((key, closed.clone()));
                }
                push_bounded(&mut group.recent, closed.clone(), RECENT_CLOSES);
                // Announced by the server, whichever FIN went first.
                let server_said = closed.signals.server_close_depth.is_some();
                if let (true, Some(n)) = (server_said, closed.requests) {
                    push_bounded(&mut group.server_closed_after, n, RECENT_CLOSES);
                }
            }
            if view.pending.is_none() {
                forgettable.push(stream);
            }
        }
        for stream in forgettable {
            self.forget(stream);
        }
    }

    /// Drop a view no verdict can ask about any more; and its group, once
    /// the group has nothing left to tell.
    fn forget(&mut self, stream: u64) {
        let Some(view) = self.views.remove(&stream) else {
            return;
        };
        if !view.finished {
            self.gone.insert(stream, view.group);
        }
        if self.groups.get(&view.group).is_some_and(|g| g.is_idle()) {
            // Its last close still explains the next connection: kept, up
            // to MAX_IDLE_GROUPS such groups.
            if self.groups[&view.group].last_closed.is_none() {
                self.groups.remove(&view.group);
            } else {
                self.idle_groups.push_back(view.group);
                while self.idle_groups.len() > MAX_IDLE_GROUPS {
                    let Some(oldest) = self.idle_groups.pop_front() else {
                        break;
                    };
                    if self.groups.get(&oldest).is_some_and(|g| g.is_idle()) {
                        self.groups.remove(&oldest);
                    }
                }
            }
        }
    }

    fn judge(&mut self, stream: u64) {
        let Some(view) = self.views.get(&stream) else {
            return;
        };
        if view.pending.is_none() {
            return;
        }
        // The client decided at its SYN.
        let t = view.first_seen;
        let group_key = view.group;
        self.sweep(group_key, t);
        let group = self.groups.get(&group_key).map(|g| &**g);
        let mut verdict = explain(
            t,
            stream,
            group_key.1,
            group,
            &self.views,
            &mut self.examined,
        );
        verdict.uncertain = uncertainty(&verdict, group, &self.views, self.lossy_connections);
        let group = self.groups.get_mut(&group_key).expect("swept just above");
        group.pending -= 1;
        let view = self.views.get_mut(&stream).expect("looked up above");
        view.pending = None;
        match self.held.remove(&stream) {
            Some(mut finished) => {
                attach(&mut finished, verdict);
                self.released.push_back(finished);
            }
            None => {
                self.given.insert(stream, verdict);
            }
        }
        if view.retired {
            self.forget(stream);
        }
    }
}

impl Group {
    /// Nothing open, waiting, ending or pending: only the last close is left.
    fn is_idle(&self) -> bool {
        self.waiting.is_empty()
            && self.open.is_empty()
            && self.pending == 0
            && self.ending.is_empty()
    }
}

/// The view of a connection and its group, made when first needed.
fn view_of<'a>(
    views: &'a mut FastMap<u64, Box<View>>,
    groups: &'a mut FastMap<GroupKey, Box<Group>>,
    stream: u64,
    peers: Peers,
) -> (&'a mut View, &'a mut Group) {
    let view = views.entry(stream).or_insert_with(|| {
        let group_key = (peers.client.ip(), peers.server);
        let group = groups.entry(group_key).or_default();
        let member = (peers.opened, stream);
        if group.sweep.is_some_and(|s| peers.opened < s) {
            group.open.insert(member);
        } else {
            group.waiting.insert(member);
        }
        Box::new(View {
            group: group_key,
            first_seen: peers.opened,
            closed: None,
            // Most connections carry one request, and a view lives about a second.
            requests: VecDeque::with_capacity(1),
            multiplexed: false,
            stream_limit: None,
            lossy: false,
            pending: None,
            finished: false,
            retired: false,
        })
    });
    let group = groups.entry(view.group).or_default();
    (view, group)
}

/// The most recent `cap` kept: the oldest goes before the new one comes,
/// so the queue never grows past `cap` (a group holds several).
fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, cap: usize) {
    if queue.len() >= cap {
        queue.pop_front();
    }
    queue.push_back(item);
}

fn attach(finished: &mut Finished, verdict: NewConnectionReason) {
    if let Some(r) = finished.requests.iter_mut().find(|r| !r.reused) {
        r.why_new = Some(verdict);
    }
}

/// What one connection was doing at time `t`.
enum Activity {
    /// An exchange not complete: a request sent and its response not read
    /// to its end (`receiving` once the response began).
    Busy { receiving: bool },
    /// Its exchanges so far were complete, the last one at this time.
    Idle(Timestamp),
    /// Opened, but no request sent on it yet (reserved by another caller,
    /// or still in its handshake).
    Unused,
}

fn activity(view: &View, t: Timestamp) -> Activity {
    let sent = view.requests.partition_point(|r| r.sent <= t);
    // A few most recent requests decide (HTTP/2 may have several in flight).
    let recent = view.requests.range(sent.saturating_sub(8)..sent);
    if view.multiplexed {
        let in_flight = view
            .requests
            .range(..sent)
            .filter(|r| !r.complete_by(t))
            .count();
        let limit = view.stream_limit.map_or(H2_STREAM_LIMIT, |n| n as usize);
        if in_flight >= limit {
            return Activity::Busy { receiving: false };
        }
        return match sent {
            0 => Activity::Unused,
            _ => Activity::Idle(recent.filter_map(|r| r.completed).max().unwrap_or(t)),
        };
    }
    let mut last_complete: Option<Timestamp> = None;
    for r in recent {
        if !r.complete_by(t) {
            return Activity::Busy {
                receiving: r.answered.is_some_and(|a| a <= t),
            };
        }
        last_complete = last_complete.max(r.completed);
    }
    match last_complete {
        Some(c) => Activity::Idle(c),
        None => Activity::Unused,
    }
}

/// Milliseconds from `a` to `b`, to the microsecond (exact in JSON).
fn ms(a: Timestamp, b: Timestamp) -> f64 {
    b.0.saturating_sub(a.0) as f64 / 1000.0
}

fn plural(n: u32, one: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

/// How long after the SYN the evidence a cause needs may still arrive: a
/// client's close of the connection it gives up reaches the wire just after
/// it dials the next (Go's RST of an unread connection, ~0.2 ms).
const LOOK_AHEAD: Duration = Duration::from_millis(5);

/// How far before the SYN a close still speaks for it.
const RECENT: Duration = Duration::from_secs(1);

/// How far before the SYN a client's discard of an idle connection still
/// says its pool is full (a pool discards as it dials: within a millisecond).
const POOL_DISCARD: Duration = Duration::from_millis(100);

/// A client that closes a connection this soon after its last complete
/// response does not keep it idle: it throws it away.
const QUICK_CLOSE: Duration = Duration::from_millis(50);

/// Streams in flight at which an HTTP/2 connection counts as busy when the
/// server's SETTINGS_MAX_CONCURRENT_STREAMS was not seen: 100, the least
/// RFC 9113 §6.5.2 recommends, as common servers use 100-128.
const H2_STREAM_LIMIT: usize = 100;

/// Most closes a group keeps for the verdicts that follow.
const RECENT_CLOSES: usize = 16;

/// What the closes around a SYN say, strongest first.
fn close_evidence(c: &ClosedInfo, t: Timestamp) -> Option<(CauseCode, String)> {
    let who = if c.by_client { "client" } else { "server" };
    let how = if c.rst { "RST" } else { "FIN" };
    // Written only for the close that gives evidence: most give none.
    let when_of = || {
        if c.at <= t {
            format!("{:.1} ms before this SYN", ms(c.at, t))
        } else {
            format!("{:.1} ms after this SYN", ms(t, c.at))
        }
    };
    if let Some((depth, sent, answered)) = c.sent_after_close {
        // After a GOAWAY from the server, a request the client sent before it
        // read the GOAWAY is lost the same way; the GOAWAY is why (the
        // server ends connections: raise its limit, not the client's timer).
        if !answered && c.signals.goaway_by == Some("server") {
            return Some((
                CauseCode::Goaway,
                format!(
                    "stream {}: the server sent GOAWAY and closed it ({how} at {when}); request {depth} sent {:.1} ms after that close, never answered, was sent again",
                    c.stream,
                    ms(c.at, sent),
                    when = when_of()
                ),
            ));
        }
        if !answered {
            return Some((
                CauseCode::StaleConnection,
                format!(
                    "stream {}: server {how} at {when}; request {depth} sent {:.1} ms after that close, never answered",
                    c.stream,
                    ms(c.at, sent),
                    when = when_of()
                ),
            ));
        }
    }
    if c.rst {
        if let (Some(depth), false) = (c.in_flight, c.by_client && c.incomplete.is_some()) {
            return Some((
                CauseCode::Reset,
                format!(
                    "stream {}: {who} RST {when} while request {depth} waited for its response",
                    c.stream,
                    when = when_of()
                ),
            ));
        }
    }
    if c.by_client {
        if let Some(depth) = c.incomplete {
            return Some((
                CauseCode::UnreadBody,
                format!(
                    "stream {}: client {how} {when}, response {depth} not read to its end",
                    c.stream,
                    when = when_of()
                ),
            ));
        }
        if c.client_reset && c.in_flight.is_none() {
            return Some((
                CauseCode::UnreadBody,
                format!(
                    "stream {}: client RST {when} after its responses (data the client never read)",
                    c.stream,
                    when = when_of()
                ),
            ));
        }
    }
    None
}

/// A close by the client of a connection idle since a complete response,
/// within [`QUICK_CLOSE`], with nothing announced: the client threw it away.
fn quick_client_close(c: &ClosedInfo) -> Option<f64> {
    let announced = c.signals.client_close_depth.is_some()
        || c.signals.server_close_depth.is_some()
        || c.signals.http10
        || c.signals.goaway_by.is_some();
    if !c.by_client || c.rst || announced || c.incomplete.is_some() || c.in_flight.is_some() {
        return None;
    }
    let idle = ms(c.last_complete?, c.at);
    (idle <= QUICK_CLOSE.as_secs_f64() * 1000.0).then_some(idle)
}

/// The verdict for `own`'s first request, judged at `t`, its SYN, with its
/// group swept to `t`; the open connections it looks at are added to
/// `examined_total`.
fn explain(
    t: Timestamp,
    own: u64,
    server: SocketAddr,
    group: Option<&Group>,
    views: &FastMap<u64, Box<View>>,
    examined_total: &mut u64,
) -> NewConnectionReason {
    let mut busy = 0;
    let mut receiving = 0;
    let mut connecting = 0;
    let mut latest_busy = None;
    let mut idle: Option<(u64, Timestamp)> = None;
    let mut idle_closing: Option<(u64, Timestamp)> = None;
    let mut examined = 0;
    // Closes of the open connections just after the SYN.
    let mut closing: Vec<ClosedInfo> = Vec::new();
    let horizon = t.after(LOOK_AHEAD);
    // The connections open at `t`, most recently opened first, as many as
    // a verdict looks at.
    let open_now = group.map_or(0, |g| g.open.len());
    let open = group.into_iter().flat_map(|g| g.open.iter().rev());
    for &(_, stream) in open {
        if stream == own {
            continue;
        }
        if examined == MAX_EXAMINED {
            break;
        }
        examined += 1;
        *examined_total += 1;
        let Some(view) = views.get(&stream) else {
            continue;
        };
        let soon = view.closed.as_ref().filter(|c| c.at <= horizon);
        if let Some(c) = soon {
            let mut c = c.clone();
            c.settle(&view.requests);
            closing.push(c);
        }
        match activity(view, t) {
            Activity::Idle(done) if soon.is_none() => {
                idle.get_or_insert((stream, done));
            }
            // Idle, and closed just after the SYN: its close may explain
            // the SYN (below).
            Activity::Idle(done) => {
                idle_closing.get_or_insert((stream, done));
            }
            Activity::Busy { receiving: r } => {
                busy += 1;
                receiving += u32::from(r);
                latest_busy.get_or_insert(stream);
            }
            // Still in its handshake, or reserved: not there to be reused.
            Activity::Unused => {
                busy += 1;
                connecting += 1;
                latest_busy.get_or_insert(stream);
            }
        }
    }
    let last = group.and_then(|g| g.last_closed.as_ref()).map(|(_, c)| c);
    let recent: Vec<&ClosedInfo> = group
        .into_iter()
        .flat_map(|g| g.recent.iter().rev())
        .filter(|c| c.at <= t && ms(c.at, t) <= RECENT.as_secs_f64() * 1000.0)
        .chain(closing.iter())
        .collect();
    // With others busy, a quick client close just after the SYN may be a
    // pool throwing a connection away (pool_limit, below); with none busy,
    // the closing one was the connection the client could have reused.
    let idle = idle.or(idle_closing.filter(|_| busy == 0));
    let mut evidence = Vec::new();
    let state = if idle.is_some() {
        NewConnectionCode::IdleNotReused
    } else if busy > 0 {
        NewConnectionCode::AllBusy
    } else if last.is_some() {
        NewConnectionCode::PreviousClosed
    } else {
        NewConnectionCode::First
    };
    let previous = idle
        .map(|(s, _)| s)
        .or(latest_busy)
        .or(last.map(|c| c.stream));
    let verdict = |code: CauseCode, detail: String, evidence: Vec<String>| NewConnectionReason {
        code,
        reason: state,
        previous_stream: previous,
        detail,
        cause: None,
        evidence,
        uncertain: None,
        idle_ms: None,
    };
    if state == NewConnectionCode::First {
        return verdict(
            CauseCode::First,
            format!("first connection from this client to {server}"),
            vec![format!(
                "no earlier connection from this client host to {server}"
            )],
        );
    }
    if busy > 0 || idle.is_some() {
        let others = open_now
            - usize::from(
                views
                    .get(&own)
                    .is_some_and(|v| group.is_some_and(|g| g.open.contains(&(v.first_seen, own)))),
            );
        let sample = if others > examined {
            format!(" (the {examined} most recently opened of {others} open connections)")
        } else {
            String::new()
        };
        evidence.push(format!(
            "at this SYN: {busy} open connection{} busy ({receiving} receiving a response, {connecting} with no request yet), {} idle{sample}",
            if busy == 1 { "" } else { "s" },
            u32::from(idle.is_some())
        ));
    }
    // A close around the SYN that says why the connection was given up.
    if let Some((code, fact)) = recent.iter().find_map(|c| close_evidence(c, t)) {
        evidence.push(fact);
        let detail = match code {
            CauseCode::Goaway => "the server ended the previous connection with GOAWAY; a request the client had sent on it anyway went unanswered and was sent again on this new one",
            CauseCode::StaleConnection => "a request was sent on a connection the server had already closed, went unanswered, and was sent again on this new one",
            CauseCode::Reset => "the previous connection was reset in the middle of an exchange",
            _ => "the previous connection was given up with a response the client had not read to the end",
        };
        return verdict(code, detail.to_string(), evidence);
    }
    if let Some((stream, done)) = idle {
        let idle_ms = ms(done, t);
        evidence.push(format!(
            "stream {stream}: idle {idle_ms:.1} ms at this SYN, its responses complete"
        ));
        let mut v = verdict(
            CauseCode::IdleAvailable,
            format!(
                "stream {stream} to the same server was open, idle for {idle_ms:.1} ms, but the client did not reuse it"
            ),
            evidence,
        );
        v.idle_ms = Some(idle_ms);
        return v;
    }
    if busy > 0 {
        // A discard that speaks for this SYN: of a connection whose last
        // exchange was already under way at the SYN, closed around it.
        let around = |c: &&&ClosedInfo| {
            c.last_complete_sent.is_some_and(|s| s < t)
                && (c.at > t || ms(c.at, t) <= POOL_DISCARD.as_secs_f64() * 1000.0)
        };
        let thrown: Vec<String> = recent
            .iter()
            .filter(around)
            .filter_map(|c| {
                quick_client_close(c).map(|idle| {
                    format!(
                        "stream {}: client FIN {idle:.1} ms after its last complete response, {} this SYN",
                        c.stream,
                        if c.at <= t { "before" } else { "just after" }
                    )
                })
            })
            .collect();
        if !thrown.is_empty() {
            evidence.extend(thrown);
            return verdict(
                CauseCode::PoolLimit,
                "the client closed idle connections right after their responses while it needed more: its pool keeps fewer idle connections than it uses".to_string(),
                evidence,
            );
        }
        let detail = if busy == 1 {
            "the one open connection to the same server was busy with an exchange".to_string()
        } else {
            format!("all {busy} open connections to the same server were busy with an exchange")
        };
        return verdict(CauseCode::Concurrency, detail, evidence);
    }
    let last = last.expect("not first: something was closed");
    let (code, cause) = closed_cause(last, group);
    let by = if last.by_client { "client" } else { "server" };
    let how = if last.rst { "RST" } else { "FIN" };
    let after = last
        .requests
        .map_or_else(String::new, |n| format!(" after {}", plural(n, "request")));
    evidence.push(format!(
        "stream {}: closed by the {by} ({how}){after} {:.1} ms before this SYN{}",
        last.stream,
        ms(last.at, t),
        last.last_complete.map_or_else(String::new, |c| format!(
            ", {:.1} ms after its last complete response",
            ms(c, last.at)
        ))
    ));
    let mut v =
        verdict(
            code,
            format!(
            "stream {} to the same server was closed by the {by} ({how}){after} {:.1} ms before{}",
            last.stream,
            ms(last.at, t),
            cause.as_ref().map_or_else(String::new, |c| format!(": {c}"))
        ),
            evidence,
        );
    v.cause = cause;
    if matches!(
        code,
        CauseCode::ServerIdleTimeout | CauseCode::ClientIdleTimeout
    ) {
        v.idle_ms = last.last_complete.map(|c| ms(c, last.at));
    }
    v
}

/// Why a connection the client opened carried no request: dialled while
/// another connection was busy, which became free after this SYN and took
/// the next request (hyper's and Go's pools dial for a waiting request and
/// hand it whichever connection is ready first).
fn unused(
    record: &crate::report::ConnectionRecord,
    race: Option<Race>,
    waited_for: bool,
) -> UnusedVerdict {
    let t = record.first_seen;
    match race {
        Some(r) => UnusedVerdict {
            code: UnusedCode::DialRace,
            detail: format!(
                "dialled while stream {} was busy (connecting or in an exchange); it became free {:.1} ms after this SYN and took the next request {:.1} ms after it; this connection was never used",
                r.stream,
                ms(t, r.freed),
                ms(t, r.sent)
            ),
        },
        // Handshake answered, nothing sent, and nothing to this server busy
        // when it was opened: no request waited for it.
        None if !waited_for && record.syn_ack > 0 => UnusedVerdict {
            code: UnusedCode::Preconnect,
            detail: "opened while no connection from this client to this server was busy, so no request waited for it, and never used: a preconnect (a browser's, a warm-up) or a TCP health check".to_string(),
        },
        None => UnusedVerdict {
            code: UnusedCode::Unknown,
            detail: "no request was seen on it, and no other connection took one it might have waited for".to_string(),
        },
    }
}

/// Why `v` may be wrong: the capture lost what it rests on, or it rests on
/// one observation. A connection that looked open and idle may have been
/// closed with its FIN lost; a connection named as the previous one may have
/// lost what says how it ended; a request limit read off the one connection
/// the server has closed so far may be a close for some other reason.
fn uncertainty(
    v: &NewConnectionReason,
    group: Option<&Group>,
    views: &FastMap<u64, Box<View>>,
    lossy_connections: u64,
) -> Option<String> {
    let prev = v.previous_stream?;
    let view = views.get(&prev);
    let lossy = view.map(|w| w.lossy).or_else(|| {
        group
            .and_then(|g| g.last_closed.as_ref())
            .filter(|(_, c)| c.stream == prev)
            .map(|(_, c)| c.lossy)
    });
    let never_closed = view.is_some_and(|w| w.closed.is_none());
    if v.code == CauseCode::IdleAvailable && never_closed && lossy_connections > 0 {
        return Some(format!(
            "no close of stream {prev} was captured, and the capture missed bytes of {} so far: it may have been closed with its FIN lost",
            plural(lossy_connections.min(u64::from(u32::MAX)) as u32, "connection")
        ));
    }
    if let Some(true) = lossy {
        return Some(format!(
            "the capture missed bytes of stream {prev}: what decided this cause may be incomplete"
        ));
    }
    let closes_seen = group.map_or(0, |g| g.server_closed_after.len());
    (v.code == CauseCode::ServerRequestLimit && closes_seen == 1).then(|| {
        "judged from the one connection the server has closed so far: a server that closed it for another reason after as many requests looks the same".to_string()
    })
}

/// Why a connection ended, when nothing else was open: an announced close
/// (`Connection: close`, HTTP/1.0, GOAWAY), a server that closed it idle (a
/// keep-alive timeout, like nginx's `keepalive_timeout`) or after a constant
/// number of requests, or a client that closes after every response or
/// after its own idle timeout.
fn closed_cause(c: &ClosedInfo, group: Option<&Group>) -> (CauseCode, Option<String>) {
    let s = &c.signals;
    if s.http10 {
        return (
            CauseCode::Http10,
            Some("HTTP/1.0 without keep-alive".to_string()),
        );
    }
    // A client that asked to close is answered in kind: the ask comes first.
    // Asked with its first request, on a connection that carried only that
    // one, it keeps no connection for the next (aiohttp's force_close,
    // `curl -H 'Connection: close'`): the pattern `no_pool` names, as a
    // quick FIN after the only response does below.
    match (s.client_close_depth, s.server_close_depth) {
        (Some(1), s) if c.requests == Some(1) && s.is_none_or(|s| s >= 1) => {
            return (
                CauseCode::NoPool,
                Some(
                    "the client sent Connection: close with its first and only request: it keeps no connection for the next"
                        .to_string(),
                ),
            );
        }
        (Some(d), s) if s.is_none_or(|s| d <= s) => {
            return (
                CauseCode::ClientClose,
                Some(format!(
                    "the client sent Connection: close with request {d}"
                )),
            );
        }
        (_, Some(d)) => {
            let counts = group.map(|g| &g.server_closed_after);
            let constant = counts.is_some_and(|n| {
                n.back()
                    .is_some_and(|&last| last >= 2 && n.iter().all(|&k| k == last))
            });
            let seen = counts.map_or(0, VecDeque::len);
            return if constant {
                (
                    CauseCode::ServerRequestLimit,
                    Some(if seen == 1 {
                        format!(
                            "the server sent Connection: close with response {d} (a request limit of {d}, judged from the one connection it closed so far)"
                        )
                    } else {
                        format!(
                            "the server sent Connection: close with response {d}, after {} on each of the {seen} connections it closed so far (a request limit)",
                            plural(d, "request")
                        )
                    }),
                )
            } else {
                (
                    CauseCode::ServerClose,
                    Some(format!(
                        "the server sent Connection: close with response {d}"
                    )),
                )
            };
        }
        _ => {}
    }
    if let Some(sender) = s.goaway_by {
        return (CauseCode::Goaway, Some(format!("the {sender} sent GOAWAY")));
    }
    let Some(done) = c.last_complete else {
        return (CauseCode::Unknown, None);
    };
    let idle_ms = ms(done, c.at);
    if !c.by_client {
        return (
            CauseCode::ServerIdleTimeout,
            Some(format!(
                "the server closed it {idle_ms:.0} ms after its last response (an idle timeout)"
            )),
        );
    }
    if quick_client_close(c).is_some() {
        return if c.requests == Some(1) {
            (
                CauseCode::NoPool,
                Some(format!(
                    "the client closed it {idle_ms:.1} ms after its only response: it keeps no connection for the next request"
                )),
            )
        } else {
            (
                CauseCode::Unknown,
                Some(format!(
                    "the client closed it {idle_ms:.1} ms after its last response"
                )),
            )
        };
    }
    (
        CauseCode::ClientIdleTimeout,
        Some(format!(
            "the client closed it {idle_ms:.0} ms after its last response (its idle timeout)"
        )),
    )
}

/// Fill `why_new` on every request that opened its connection, and the tally
/// in the summary, for a report assembled whole (a live run, once the
/// client's own records joined the captured ones): its records are fed
/// through the same [`ReuseJudge`] as a replay's events.
pub fn explain_new_connections(report: &mut Report) {
    let mut judge = ReuseJudge::new();
    let mut order: Vec<usize> = (0..report.connections.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&report.connections[a], &report.connections[b]);
        (a.first_seen, a.stream).cmp(&(b.first_seen, b.stream))
    });
    let mut by_stream: FastMap<u64, Vec<usize>> = FastMap::default();
    for (i, r) in report.requests.iter().enumerate() {
        by_stream.entry(r.stream).or_default().push(i);
    }
    // Every connection is dialled before any request is told: a connection
    // that never carries one is then found whichever connection took the
    // request it was dialled for (as the tracker's SYNs come before them).
    for &ci in &order {
        let c = &report.connections[ci];
        judge.on_event(FlowEvent::Opened {
            stream: c.stream,
            peers: Peers {
                client: c.client,
                server: c.server,
                opened: c.first_seen,
            },
        });
    }
    for &ci in &order {
        let c = &report.connections[ci];
        let peers = Peers {
            client: c.client,
            server: c.server,
            opened: c.first_seen,
        };
        let mut reqs: Vec<&RequestRecord> = by_stream
            .get(&c.stream)
            .into_iter()
            .flatten()
            .map(|&i| &report.requests[i])
            .collect();
        reqs.sort_by_key(|r| r.sent);
        for r in &reqs {
            judge.on_event(FlowEvent::Request {
                stream: c.stream,
                peers,
                depth: if r.reused { r.depth.max(2) } else { 1 },
                sent: r.sent,
                answered: r.answered,
                completed: r.completed,
                multiplexed: r.h2_stream.is_some(),
                stream_limit: c.http.as_ref().and_then(|h| h.h2_max_concurrent_streams),
            });
        }
        if let Some(at) = c.closed_at {
            let by_client = c.closed_by == Some(Role::Client);
            let rst = c.closed_with == Some(crate::report::CloseKind::Rst);
            judge.on_event(FlowEvent::Closed {
                stream: c.stream,
                peers,
                by_client,
                rst,
                at,
                requests: c.requests,
                signals: c.http.as_ref().map(CloseSignals::of).unwrap_or_default(),
            });
            if c.rst_client > 0 && !(by_client && rst) {
                judge.on_event(FlowEvent::ClientReset { stream: c.stream });
            }
        }
        judge.on_event(FlowEvent::Finished(Box::new(Finished {
            record: c.clone(),
            // The verdict is attached to the first request that was not reused.
            requests: reqs
                .iter()
                .filter(|r| !r.reused)
                .take(1)
                .map(|&r| r.clone())
                .collect(),
            end: EndReason::EndOfInput,
        })));
    }
    judge.finish();
    let mut verdicts: FastMap<u64, NewConnectionReason> = FastMap::default();
    let mut unused: FastMap<u64, UnusedVerdict> = FastMap::default();
    while let Some(f) = judge.pop_released() {
        if let Some(u) = f.record.unused {
            unused.insert(f.record.stream, u);
        }
        if let Some(why) = f.requests.into_iter().find_map(|r| r.why_new) {
            verdicts.insert(f.record.stream, why);
        }
    }
    for r in &mut report.requests {
        if r.reused {
            continue;
        }
        // Once per stream: the first request not reused takes it.
        if let Some(why) = verdicts.remove(&r.stream) {
            r.why_new = Some(why);
        }
    }
    for c in &mut report.connections {
        c.unused = unused.remove(&c.stream);
    }
    let tally = Summary::tally(&report.connections, &report.requests);
    report.summary.unused_connections = tally.unused_connections;
    report.summary.new_connection_reasons = tally.new_connection_reasons;
    report.summary.new_connection_causes = tally.new_connection_causes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ConnectionRecord, RequestRecord};
    use crate::testkit::secs;

    fn conn(stream: u64, cport: u16, first: f64, closed: Option<(f64, Role)>) -> ConnectionRecord {
        ConnectionRecord {
            last_seen: secs(first + 10.0),
            closed_by: closed.map(|(_, by)| by),
            closed_with: closed.map(|_| crate::report::CloseKind::Fin),
            closed_at: closed.map(|(at, _)| secs(at)),
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
            status: answered.map(|_| 200),
            answered: answered.map(secs),
            completed: answered.map(secs),
            ..crate::testkit::request_record(stream, depth, sent)
        }
    }

    fn report(connections: Vec<ConnectionRecord>, requests: Vec<RequestRecord>) -> Report {
        let mut r = crate::testkit::report(connections, requests);
        explain_new_connections(&mut r);
        r
    }

    fn reasons(r: &Report) -> Vec<Option<(&'static str, Option<u64>)>> {
        r.requests
            .iter()
            .map(|q| {
                q.why_new
                    .as_ref()
                    .map(|w| (w.reason.as_str(), w.previous_stream))
            })
            .collect()
    }

    #[test]
    fn server_closed_connections_explain_the_next_one() {
        let r = report(
            vec![
                conn(0, 5000, 0.0, Some((1.0, Role::Server))),
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
            detail.contains("closed by the server (FIN) after 1 request 1000.0 ms before"),
            "{detail}"
        );
        assert_eq!(
            r.requests[1].why_new.as_ref().unwrap().code,
            "server_idle_timeout"
        );
        assert_eq!(r.summary.new_connection_reasons["previous_closed"], 1);
    }

    #[test]
    fn the_cause_of_a_close_comes_from_signals_or_idle_time() {
        // Closed by the server one second after its only response: an idle timeout.
        let r = report(
            vec![
                conn(0, 5000, 0.0, Some((1.2, Role::Server))),
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
        let mut announced = conn(0, 5000, 0.0, Some((1.2, Role::Server)));
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
        assert!(detail.contains("idle for 300.0 ms"), "{detail}");
        assert_eq!(
            r.requests[1].why_new.as_ref().unwrap().code,
            "idle_available"
        );
    }

    #[test]
    fn an_idle_connection_closed_just_after_the_syn_was_still_there_to_reuse() {
        // Three Sessions, each with its own pool, closed together at exit:
        // stream 0 is idle at stream 1's SYN and its client FIN comes 3 ms
        // later, with nothing about that close explaining the SYN.
        let r = report(
            vec![
                conn(0, 5000, 0.0, Some((0.503, Role::Client))),
                conn(1, 5001, 0.5, Some((0.504, Role::Client))),
            ],
            vec![
                req(0, 1, 0.001, Some(0.002)),
                req(1, 1, 0.5001, Some(0.5002)),
            ],
        );
        assert_eq!(reasons(&r)[1], Some(("idle_not_reused", Some(0))));
        assert_eq!(
            r.requests[1].why_new.as_ref().unwrap().code,
            "idle_available"
        );
    }

    #[test]
    fn busy_connections_explain_concurrency() {
        let r = report(
            vec![conn(0, 5000, 0.0, None), conn(1, 5001, 0.05, None)],
            vec![req(0, 1, 0.1, Some(0.5)), req(1, 1, 0.2, Some(0.6))],
        );
        assert_eq!(reasons(&r)[1], Some(("all_busy", Some(0))));
        assert_eq!(r.requests[1].why_new.as_ref().unwrap().code, "concurrency");
    }

    #[test]
    fn other_clients_and_servers_do_not_count() {
        let mut other = conn(1, 5001, 0.5, None);
        other.client = "10.9.9.9:5001".parse().unwrap();
        let r = report(
            vec![conn(0, 5000, 0.0, None), other],
            vec![req(0, 1, 0.1, Some(0.2)), req(1, 1, 0.6, Some(0.7))],
        );
        assert_eq!(reasons(&r)[1], Some(("first", None)));
    }

    fn peers(cport: u16, opened: f64) -> Peers {
        Peers {
            client: format!("127.0.0.1:{cport}").parse().unwrap(),
            server: "127.0.0.1:8080".parse().unwrap(),
            opened: secs(opened),
        }
    }

    /// A first request on a connection opened at `opened` from client port
    /// `cport`: sent 100 ms after, answered 100 ms later.
    fn answered_request(stream: u64, cport: u16, opened: f64) -> FlowEvent {
        FlowEvent::Request {
            stream,
            peers: peers(cport, opened),
            depth: 1,
            sent: secs(opened + 0.1),
            answered: Some(secs(opened + 0.2)),
            completed: Some(secs(opened + 0.2)),
            multiplexed: false,
            stream_limit: None,
        }
    }

    fn finished(stream: u64, cport: u16, first: f64, end: EndReason) -> FlowEvent {
        FlowEvent::Finished(Box::new(Finished {
            record: conn(stream, cport, first, None),
            requests: vec![req(stream, 1, first + 0.1, Some(first + 0.2))],
            end,
        }))
    }

    #[test]
    fn a_verdict_waits_a_second_of_capture_time_then_comes_out_with_its_connection() {
        let mut judge = ReuseJudge::new();
        judge.on_event(answered_request(0, 5000, 0.0));
        judge.on_event(finished(0, 5000, 0.0, EndReason::Closed));
        judge.advance(secs(0.9));
        assert!(judge.pop_released().is_none(), "held until its verdict");
        judge.advance(secs(1.2));
        let out = judge.pop_released().expect("released after the hold");
        assert_eq!(out.requests[0].why_new.as_ref().unwrap().reason, "first");
    }

    #[test]
    fn a_connection_let_go_for_inactivity_stops_counting_as_open() {
        for (end, want) in [
            (EndReason::Idle, "first"),
            (EndReason::EndOfInput, "idle_not_reused"),
        ] {
            let mut judge = ReuseJudge::new();
            judge.on_event(answered_request(0, 5000, 0.0));
            judge.advance(secs(5.0));
            judge.on_event(finished(0, 5000, 0.0, end));
            judge.on_event(answered_request(1, 5001, 9.9));
            judge.on_event(finished(1, 5001, 9.9, EndReason::EndOfInput));
            judge.finish();
            let verdicts: Vec<&str> = std::iter::from_fn(|| judge.pop_released())
                .filter_map(|f| f.requests[0].why_new.as_ref().map(|w| w.reason.as_str()))
                .collect();
            assert_eq!(verdicts, ["first", want], "{end:?}");
        }
    }

    /// A connection let go by the tracker (idle) after the sweep has passed
    /// its last packet is retired and released at once, with its verdict.
    #[test]
    fn a_connection_let_go_behind_the_sweep_is_released_with_its_verdict() {
        let mut judge = ReuseJudge::new();
        judge.on_event(answered_request(0, 5000, 0.0));
        judge.on_event(answered_request(1, 5001, 10.4));
        judge.advance(secs(12.0));
        // Stream 0's last packet was at 10.0, before the sweep (10.5).
        judge.on_event(finished(0, 5000, 0.0, EndReason::Idle));
        judge.on_event(finished(1, 5001, 10.4, EndReason::EndOfInput));
        judge.finish();
        let released: Vec<(u64, String)> = std::iter::from_fn(|| judge.pop_released())
            .map(|f| {
                let why = f.requests[0].why_new.as_ref().map(|w| w.reason.to_string());
                (f.record.stream, why.unwrap_or_default())
            })
            .collect();
        assert_eq!(
            released,
            [(0, "first".to_string()), (1, "idle_not_reused".to_string())]
        );
    }

    /// `n` connections from one client host to one server, each with a
    /// request never answered, a millisecond apart: the judge's examined
    /// count, and the last verdict's detail.
    fn busy_connections(n: u16) -> (u64, String) {
        let mut judge = ReuseJudge::new();
        let mut last = String::new();
        for k in 0..n {
            let opened = f64::from(k) * 0.001;
            judge.on_event(FlowEvent::Request {
                stream: u64::from(k),
                peers: peers(1024 + k, opened),
                depth: 1,
                sent: secs(opened),
                answered: None,
                completed: None,
                multiplexed: false,
                stream_limit: None,
            });
            judge.advance(secs(opened));
        }
        judge.finish();
        for k in 0..n {
            judge.on_event(finished(
                u64::from(k),
                1024 + k,
                f64::from(k) * 0.001,
                EndReason::EndOfInput,
            ));
        }
        while let Some(f) = judge.pop_released() {
            if let Some(why) = f.requests.iter().find_map(|r| r.why_new.as_ref()) {
                last = why.evidence.join("; ");
            }
        }
        (judge.examined(), last)
    }

    #[test]
    fn many_busy_connections_cost_bounded_work_per_verdict() {
        let n = 3000;
        let (once, _) = busy_connections(n);
        let (twice, detail) = busy_connections(2 * n);
        // At most MAX_EXAMINED a verdict, where walking every open one is n²/2.
        assert!(once <= MAX_EXAMINED as u64 * u64::from(n), "{once} for {n}");
        // (The first verdicts of each run look at fewer: the slack.)
        let slack = (MAX_EXAMINED * MAX_EXAMINED) as u64;
        assert!(twice <= 2 * once + slack, "{once} then {twice}");
        assert!(
            detail.contains("64 most recently opened of 5999 open connections"),
            "{detail}"
        );
    }

    #[test]
    fn finalised_connections_and_their_groups_are_let_go() {
        let mut judge = ReuseJudge::new();
        let n = MAX_IDLE_GROUPS as u32 + 5000;
        let mut most_views = 0;
        for k in 0..n {
            // One client host each: a group of its own, closed and finalised.
            let t = f64::from(k) * 0.001;
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + k);
            let p = Peers {
                client: SocketAddr::new(ip.into(), 5000),
                server: "127.0.0.1:8080".parse().unwrap(),
                opened: secs(t),
            };
            judge.on_event(FlowEvent::Request {
                stream: u64::from(k),
                peers: p,
                depth: 1,
                sent: secs(t + 0.0001),
                answered: Some(secs(t + 0.0002)),
                completed: Some(secs(t + 0.0002)),
                multiplexed: false,
                stream_limit: None,
            });
            judge.on_event(FlowEvent::Closed {
                stream: u64::from(k),
                peers: p,
                by_client: true,
                rst: false,
                at: secs(t + 0.0003),
                requests: Some(1),
                signals: CloseSignals::default(),
            });
            judge.advance(secs(t));
            if k >= 2000 {
                // Finalised after the grace period, as the tracker does.
                let old = k - 2000;
                let mut record = conn(u64::from(old), 5000, f64::from(old) * 0.001, None);
                record.client =
                    SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 + old).into(), 5000);
                judge.on_event(FlowEvent::Finished(Box::new(Finished {
                    record,
                    requests: vec![req(u64::from(old), 1, f64::from(old) * 0.001, Some(0.0))],
                    end: EndReason::Closed,
                })));
            }
            while judge.pop_released().is_some() {}
            most_views = most_views.max(judge.views());
        }
        assert!(most_views <= 2100, "{most_views} views held");
        assert!(
            judge.groups() <= MAX_IDLE_GROUPS + 2100,
            "{} groups",
            judge.groups()
        );
    }

    #[test]
    fn a_connection_let_go_after_a_later_verdict_is_released() {
        // Stream 0 goes quiet at 10 s; stream 1's verdict at 20.1 s sweeps
        // past that before the tracker lets stream 0 go.
        let mut judge = ReuseJudge::new();
        judge.on_event(answered_request(0, 5000, 0.0));
        judge.on_event(answered_request(1, 5001, 20.0));
        judge.advance(secs(25.0));
        let FlowEvent::Finished(mut quiet) = finished(0, 5000, 0.0, EndReason::Idle) else {
            unreachable!()
        };
        quiet.record.last_seen = secs(10.0);
        judge.on_event(FlowEvent::Finished(quiet));
        let out = judge.pop_released().expect("released with its verdict");
        assert_eq!(out.record.stream, 0);
        assert_eq!(out.requests[0].why_new.as_ref().unwrap().reason, "first");
    }

    /// An idle connection with no close captured, in a capture that lost
    /// bytes: the verdict says it may be wrong; without loss it does not.
    #[test]
    fn an_idle_connection_never_seen_closing_is_uncertain_when_the_capture_lost_bytes() {
        for lossy in [false, true] {
            let mut judge = ReuseJudge::new();
            judge.on_event(answered_request(0, 5000, 0.0));
            if lossy {
                judge.on_event(FlowEvent::Lossy { stream: 0 });
            }
            judge.on_event(answered_request(1, 5001, 0.5));
            judge.finish();
            judge.on_event(finished(0, 5000, 0.0, EndReason::EndOfInput));
            judge.on_event(finished(1, 5001, 0.5, EndReason::EndOfInput));
            let why: Vec<NewConnectionReason> = std::iter::from_fn(|| judge.pop_released())
                .filter_map(|f| f.requests[0].why_new.clone())
                .collect();
            assert_eq!(why[1].code, CauseCode::IdleAvailable);
            assert_eq!(why[1].uncertain.is_some(), lossy, "{:?}", why[1].uncertain);
        }
    }

    /// A connection dialled while the only other one was busy, which then
    /// became free and took the next request: it lost a dial race.
    #[test]
    fn a_connection_that_lost_the_race_to_a_freed_one_is_named() {
        for later_requests in [0, 200] {
            assert_eq!(
                unused_code_of_a_raced_connection(later_requests),
                [None, Some(UnusedCode::DialRace)],
                "{later_requests} requests after the race"
            );
        }
    }

    /// The same race judged on a finished report (a live run's), where each
    /// connection is told whole in order of its SYN: the request that stream
    /// 0, opened first, took is told before stream 1 is finished.
    #[test]
    fn a_finished_report_names_the_connection_that_lost_a_dial_race() {
        let mut raced = conn(1, 5001, 0.15, None);
        raced.requests = Some(0);
        raced.syn_ack = 1;
        let mut second = req(0, 2, 0.35, Some(0.4));
        second.reused = true;
        let r = report(
            vec![conn(0, 5000, 0.0, None), raced],
            vec![req(0, 1, 0.1, Some(0.2)), second],
        );
        let unused: Vec<Option<UnusedCode>> = r
            .connections
            .iter()
            .map(|c| c.unused.as_ref().map(|u| u.code))
            .collect();
        assert_eq!(unused, [None, Some(UnusedCode::DialRace)]);
    }

    /// Stream 1 is dialled at 0.15 s while stream 0 is busy; stream 0 takes
    /// the next request at 0.35 s, then `later` more before stream 1, never
    /// used, is finalised: the race is remembered however many follow it.
    fn unused_code_of_a_raced_connection(later: u32) -> Vec<Option<UnusedCode>> {
        let mut judge = ReuseJudge::new();
        judge.on_event(answered_request(0, 5000, 0.0));
        judge.on_event(FlowEvent::Opened {
            stream: 1,
            peers: peers(5001, 0.15),
        });
        judge.on_event(FlowEvent::Request {
            stream: 0,
            peers: peers(5000, 0.0),
            depth: 2,
            sent: secs(0.35),
            answered: Some(secs(0.4)),
            completed: Some(secs(0.4)),
            multiplexed: false,
            stream_limit: None,
        });
        for k in 0..later {
            let sent = 0.5 + f64::from(k) * 0.01;
            judge.on_event(FlowEvent::Request {
                stream: 0,
                peers: peers(5000, 0.0),
                depth: 3 + k,
                sent: secs(sent),
                answered: Some(secs(sent + 0.005)),
                completed: Some(secs(sent + 0.005)),
                multiplexed: false,
                stream_limit: None,
            });
        }
        judge.finish();
        let mut raced = conn(1, 5001, 0.15, None);
        raced.requests = Some(0);
        judge.on_event(finished(0, 5000, 0.0, EndReason::EndOfInput));
        judge.on_event(FlowEvent::Finished(Box::new(Finished {
            record: raced,
            requests: Vec::new(),
            end: EndReason::EndOfInput,
        })));
        std::iter::from_fn(|| judge.pop_released())
            .map(|f| f.record.unused.map(|u| u.code))
            .collect()
    }

    /// Stream 0's first exchange is over at 0.2 s (and its second, sent at
    /// 0.22 s, is never answered when `busy`); stream 1 opens at 0.25 s and
    /// never carries a request.
    fn unused_code_of_a_connection_opened_at_0_25(busy: bool) -> Option<UnusedCode> {
        let mut judge = ReuseJudge::new();
        judge.on_event(answered_request(0, 5000, 0.0));
        if busy {
            judge.on_event(FlowEvent::Request {
                stream: 0,
                peers: peers(5000, 0.0),
                depth: 2,
                sent: secs(0.22),
                answered: None,
                completed: None,
                multiplexed: false,
                stream_limit: None,
            });
        }
        judge.on_event(FlowEvent::Opened {
            stream: 1,
            peers: peers(5001, 0.25),
        });
        judge.finish();
        let mut never = conn(1, 5001, 0.25, None);
        never.requests = Some(0);
        never.syn_ack = 1;
        judge.on_event(finished(0, 5000, 0.0, EndReason::EndOfInput));
        judge.on_event(FlowEvent::Finished(Box::new(Finished {
            record: never,
            requests: Vec::new(),
            end: EndReason::EndOfInput,
        })));
        std::iter::from_fn(|| judge.pop_released())
            .find(|f| f.record.stream == 1)
            .and_then(|f| f.record.unused.map(|u| u.code))
    }

    #[test]
    fn a_connection_opened_while_nothing_was_busy_and_never_used_is_a_preconnect() {
        assert_eq!(
            unused_code_of_a_connection_opened_at_0_25(false),
            Some(UnusedCode::Preconnect)
        );
        // With a request in flight at its SYN, one may have waited for it.
        assert_eq!(
            unused_code_of_a_connection_opened_at_0_25(true),
            Some(UnusedCode::Unknown)
        );
    }
}
