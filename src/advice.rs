//! The verdict per client: for each client host and server, what its
//! requests did (reused or new, and why), and what to change, in the words
//! of the client library its `User-Agent` names. Built from the finished
//! connections as they leave the pipeline, so it streams like the summary.
//!
//! The advice for each cause is in docs/causes.md.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::report::{
    Advice, CauseCode, ClientDiagnosis, ConnectionRecord, Library, Report, RequestRecord,
};

/// Most (client host, server) pairs given a verdict of their own; the
/// connections of later ones are counted in [`Diagnoser::overflow`].
pub const MAX_DIAGNOSED: usize = 4096;

impl Library {
    /// The library a `User-Agent` names (its product token, RFC 9110 §10.1.5).
    pub fn of(user_agent: Option<&str>) -> Library {
        let Some(ua) = user_agent else {
            return Library::Unknown;
        };
        let ua = ua.to_ascii_lowercase();
        let table: [(&str, Library); 13] = [
            ("go-http-client", Library::Go),
            ("reqwest", Library::Reqwest),
            ("conntrace", Library::Reqwest),
            ("python-requests", Library::PythonRequests),
            ("python-urllib3", Library::Urllib3),
            ("python-urllib", Library::PythonUrllib),
            ("python-httpx", Library::Httpx),
            ("aiohttp", Library::Aiohttp),
            ("node", Library::Node),
            ("undici", Library::Node),
            ("curl", Library::Curl),
            ("wget", Library::Wget),
            ("okhttp", Library::Okhttp),
        ];
        if let Some((_, lib)) = table.iter().find(|(token, _)| ua.starts_with(token)) {
            return *lib;
        }
        if ua.starts_with("java") {
            return Library::Java;
        }
        Library::Unknown
    }

    fn name(self) -> &'static str {
        match self {
            Library::Go => "Go net/http",
            Library::Reqwest => "reqwest/hyper",
            Library::PythonRequests => "python requests",
            Library::Urllib3 => "urllib3",
            Library::PythonUrllib => "python urllib/http.client",
            Library::Aiohttp => "aiohttp",
            Library::Httpx => "httpx",
            Library::Node => "node (undici)",
            Library::Curl => "curl",
            Library::Wget => "wget",
            Library::Java => "Java HttpClient",
            Library::Okhttp => "OkHttp",
            Library::Unknown => "the client",
        }
    }
}

#[derive(Debug, Default)]
struct Entry {
    user_agent: Option<String>,
    requests: u64,
    connections: u64,
    reused: u64,
    causes: BTreeMap<CauseCode, u64>,
    uncertain: u64,
    unused: u64,
    server_idle_ms: Option<f64>,
    client_idle_ms: Option<f64>,
}

impl Entry {
    /// One request, and its verdict if it opened a connection.
    fn count(&mut self, r: &RequestRecord) {
        self.requests += 1;
        self.reused += u64::from(r.reused);
        let Some(why) = &r.why_new else {
            return;
        };
        *self.causes.entry(why.code).or_default() += 1;
        self.uncertain += u64::from(why.uncertain.is_some());
        let slot = match why.code {
            CauseCode::ServerIdleTimeout => &mut self.server_idle_ms,
            CauseCode::ClientIdleTimeout => &mut self.client_idle_ms,
            _ => return,
        };
        if let Some(ms) = why.idle_ms {
            *slot = Some(slot.map_or(ms, |m: f64| m.max(ms)));
        }
    }
}

/// Gathers the verdicts per client host and server.
#[derive(Debug, Default)]
pub struct Diagnoser {
    entries: BTreeMap<(IpAddr, SocketAddr), Entry>,
    /// Connections of pairs past [`MAX_DIAGNOSED`].
    overflow: u64,
}

impl Diagnoser {
    pub fn new() -> Diagnoser {
        Diagnoser::default()
    }

    /// Count one finished connection with its requests.
    pub fn add(&mut self, c: &ConnectionRecord, requests: &[RequestRecord]) {
        if requests.is_empty() && c.unused.is_none() {
            return;
        }
        let Some(e) = self.entry(c.client, c.server) else {
            self.overflow += 1;
            return;
        };
        if e.user_agent.is_none() {
            e.user_agent = c.http.as_ref().and_then(|h| h.user_agent.clone());
        }
        e.connections += 1;
        e.unused += u64::from(c.unused.is_some());
        for r in requests {
            e.count(r);
        }
    }

    /// Requests of a connection that goes on, counted before it ends.
    pub fn add_settled(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        requests: &[RequestRecord],
    ) {
        if let Some(e) = self.entry(client, server) {
            for r in requests {
                e.count(r);
            }
        }
    }

    /// The entry of this client host and server; `None` past
    /// [`MAX_DIAGNOSED`] pairs.
    fn entry(&mut self, client: SocketAddr, server: SocketAddr) -> Option<&mut Entry> {
        let key = (client.ip(), server);
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_DIAGNOSED {
            return None;
        }
        Some(self.entries.entry(key).or_default())
    }

    /// Connections of client/server pairs past [`MAX_DIAGNOSED`].
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// The verdicts, by client host then server.
    pub fn finish(self) -> Vec<ClientDiagnosis> {
        self.entries
            .into_iter()
            .map(|((client, server), e)| diagnose(client, server, e))
            .collect()
    }

    /// The verdicts of a report assembled whole.
    pub fn of(report: &Report) -> Vec<ClientDiagnosis> {
        let mut by_stream: BTreeMap<u64, Vec<RequestRecord>> = BTreeMap::new();
        for r in &report.requests {
            by_stream.entry(r.stream).or_default().push(r.clone());
        }
        let mut d = Diagnoser::new();
        for c in &report.connections {
            if let Some(reqs) = by_stream.get(&c.stream) {
                d.add(c, reqs);
            }
        }
        d.finish()
    }
}

fn diagnose(client: IpAddr, server: SocketAddr, e: Entry) -> ClientDiagnosis {
    let library = Library::of(e.user_agent.as_deref());
    let new = e.requests - e.reused;
    let mut costly: Vec<(CauseCode, u64)> = e
        .causes
        .iter()
        .filter(|(code, _)| **code != CauseCode::First)
        .map(|(c, n)| (*c, *n))
        .collect();
    costly.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.as_str().cmp(b.0.as_str())));
    let advice = costly
        .iter()
        .map(|&(code, n)| Advice {
            code,
            connections: n,
            text: advise(code, library, e.server_idle_ms, e.client_idle_ms),
        })
        .collect();
    let ratio = if e.requests == 0 {
        0.0
    } else {
        e.reused as f64 / e.requests as f64
    };
    let verdict = if costly.is_empty() {
        format!(
            "{}: {} over {}, {} reused; nothing to change.",
            library.name(),
            count(e.requests, "request"),
            count(e.connections, "connection"),
            e.reused
        )
    } else {
        let causes: Vec<String> = costly
            .iter()
            .map(|(code, n)| format!("{n} {}", phrase(*code)))
            .collect();
        let doubt = match e.uncertain {
            0 => String::new(),
            n => format!(
                " ({} uncertain, each saying why in why_new.uncertain)",
                count(n, "verdict")
            ),
        };
        let doubt = match e.unused {
            0 => doubt,
            n => format!("{doubt}; {} opened and never used", count(n, "connection")),
        };
        format!(
            "{}: {} over {} ({:.0}% reused); {} new connection{} beyond the first: {}{doubt}.",
            library.name(),
            count(e.requests, "request"),
            count(e.connections, "connection"),
            ratio * 100.0,
            new.saturating_sub(e.causes.get(&CauseCode::First).copied().unwrap_or(0)),
            if costly.iter().map(|c| c.1).sum::<u64>() == 1 {
                ""
            } else {
                "s"
            },
            causes.join(", ")
        )
    };
    ClientDiagnosis {
        client,
        server,
        user_agent: e.user_agent,
        library,
        requests: e.requests,
        connections: e.connections,
        reused_requests: e.reused,
        reuse_ratio: (ratio * 1000.0).round() / 1000.0,
        causes: e
            .causes
            .iter()
            .map(|(c, n)| (c.as_str().to_string(), *n))
            .collect(),
        uncertain: e.uncertain,
        unused_connections: e.unused,
        server_idle_timeout_ms: e.server_idle_ms.map(|m| m.round()),
        client_idle_timeout_ms: e.client_idle_ms.map(|m| m.round()),
        verdict,
        advice,
    }
}

fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A few words for a cause, after a count of connections.
fn phrase(code: CauseCode) -> &'static str {
    match code {
        CauseCode::First => "first",
        CauseCode::Concurrency => "because every open connection was busy",
        CauseCode::PoolLimit => "because the client threw idle connections away (idle pool capped)",
        CauseCode::NoPool => "because the client keeps no connection between requests",
        CauseCode::UnreadBody => "because a response was not read to its end",
        CauseCode::ClientIdleTimeout => "after the client's idle timeout",
        CauseCode::ServerIdleTimeout => "after the server's idle timeout",
        CauseCode::ServerRequestLimit => "after the server's request limit",
        CauseCode::ServerClose => "after the server sent Connection: close",
        CauseCode::ClientClose => "after the client sent Connection: close",
        CauseCode::Http10 => "because of HTTP/1.0 without keep-alive",
        CauseCode::Goaway => "after a GOAWAY",
        CauseCode::StaleConnection => {
            "retrying a request sent on a connection the server had closed"
        }
        CauseCode::Reset => "after a reset mid-exchange",
        CauseCode::IdleAvailable => "while an idle connection stayed unused",
        CauseCode::Unknown => "for reasons the capture does not tell",
    }
}

/// The setting that says how long `lib` keeps an idle connection.
fn idle_timeout_knob(lib: Library) -> &'static str {
    match lib {
        Library::Go => "Transport.IdleConnTimeout",
        Library::Reqwest => "ClientBuilder::pool_idle_timeout",
        Library::Node => "the Agent's keepAliveTimeout",
        Library::Java => "jdk.httpclient.keepalive.timeout",
        Library::Okhttp => "ConnectionPool keepAliveDuration",
        _ => "the client's idle-connection timeout",
    }
}

/// What to change, for `code`, said for `lib`.
fn advise(
    code: CauseCode,
    lib: Library,
    server_idle_ms: Option<f64>,
    client_idle_ms: Option<f64>,
) -> String {
    use CauseCode as C;
    use Library as L;
    let secs = |ms: f64| format!("{:.1} s", ms / 1000.0);
    match (code, lib) {
        (C::PoolLimit, L::Go) => "raise Transport.MaxIdleConnsPerHost (default 2) to the number of requests in flight at once: Go closes every connection it cannot park idle".into(),
        (C::PoolLimit, L::Reqwest) => "raise ClientBuilder::pool_max_idle_per_host to the requests in flight at once".into(),
        (C::PoolLimit, L::PythonRequests | L::Urllib3) => "mount an HTTPAdapter(pool_maxsize=N) with N at least the threads sharing the Session (urllib3 logs \"Connection pool is full, discarding connection\")".into(),
        (C::PoolLimit, L::Node) => "raise the Agent's connections / keep-alive pool size (undici Agent connections, http.Agent maxFreeSockets)".into(),
        (C::PoolLimit, L::Okhttp) => "raise ConnectionPool(maxIdleConnections, ...)".into(),
        (C::PoolLimit, _) => "let the client keep as many idle connections per host as it has requests in flight".into(),
        (C::NoPool, L::PythonRequests) => "use one requests.Session() for all requests: requests.get() opens and closes a connection every time".into(),
        (C::NoPool, L::PythonUrllib) => "keep one http.client.HTTPConnection (or use urllib3/requests.Session) instead of a new one per request".into(),
        (C::NoPool, L::Curl) => "give curl all URLs in one invocation (or use --next), or libcurl with one easy handle, and drop -H 'Connection: close': a new curl process, or a request that asks to close, cannot reuse a connection".into(),
        (C::NoPool, L::Aiohttp) => "use one ClientSession with a default TCPConnector for all requests: force_close=True (or a Connection: close header) ends every connection after its response".into(),
        (C::NoPool, L::Go) => "share one http.Client (and its Transport) instead of creating one per request; do not set DisableKeepAlives".into(),
        (C::NoPool, L::Reqwest) => "build one reqwest::Client and clone it: each Client has its own pool".into(),
        (C::NoPool, L::Node) => "use a keep-alive Agent (node's default agent keeps alive since node 19; fetch shares undici's global dispatcher)".into(),
        (C::NoPool, _) => "keep one client object (and its connection pool) for all requests to this server, and do not send Connection: close with every request".into(),
        (C::UnreadBody, L::Go) => "read every response Body to EOF (io.Copy(io.Discard, resp.Body)) before Body.Close(): a body closed unread closes its connection".into(),
        (C::UnreadBody, L::Reqwest) => "read every response body to its end (bytes(), text() or the whole stream) before dropping it".into(),
        (C::UnreadBody, L::PythonRequests | L::Urllib3) => "with stream=True, read the body (r.content or iter_content to the end) before r.close(), or use the response as a context manager after reading it".into(),
        (C::UnreadBody, L::Node) => "consume or cancel every response body (await res.arrayBuffer(), or res.body.cancel()) before the next request".into(),
        (C::UnreadBody, _) => "read each response body to its end before the next request: an unread body costs its connection".into(),
        (C::Concurrency, L::Go) => "expected with more requests in flight than connections (HTTP/1.1 carries one at a time); cap with Transport.MaxConnsPerHost, or use HTTP/2".into(),
        (C::Concurrency, _) => "expected: HTTP/1.1 carries one exchange at a time, so N requests in flight need N connections; limit the concurrency or use HTTP/2 if that is too many".into(),
        (C::ClientIdleTimeout, lib) => {
            let knob = idle_timeout_knob(lib);
            let server = server_idle_ms.map_or_else(String::new, |s| format!("; keep it below the server's {}", secs(s)));
            let own = client_idle_ms.map_or_else(String::new, |c| format!(" (measured: {})", secs(c)));
            format!("the client gave up idle connections itself{own}: raise {knob} if requests are that far apart{server}")
        }
        (C::ServerIdleTimeout, L::PythonRequests | L::Urllib3 | L::PythonUrllib | L::Curl | L::Wget) => {
            let measured = server_idle_ms.map_or_else(String::new, |s| format!(" (measured: {})", secs(s)));
            format!("the server closed idle connections after its keep-alive timeout{measured}; the client checks a pooled connection before reusing it, so this costs a new handshake: raise the server's timeout if requests come that far apart")
        }
        (C::ServerIdleTimeout, lib) => {
            let knob = idle_timeout_knob(lib);
            let measured = server_idle_ms.map_or_else(|| "its keep-alive timeout".to_string(), |s| format!("its keep-alive timeout (measured: {})", secs(s)));
            let race = match client_idle_ms {
                Some(c) if server_idle_ms.is_some_and(|s| c > s) => " The client keeps idle connections longer than the server: requests sent as the server closes get reset (the stale-connection race).".to_string(),
                _ => String::new(),
            };
            format!("the server closed idle connections after {measured}: set {knob} below it, or raise the server's timeout if requests come that far apart.{race}")
        }
        (C::ServerRequestLimit, _) => "the server ends connections after a fixed number of requests (nginx keepalive_requests, default 1000): raise it if connections churn".into(),
        (C::ServerClose, _) => "the server asked to close (Connection: close): see why it does (errors, a proxy setting); nothing to change in the client".into(),
        (C::ClientClose, L::Curl) => "drop -H 'Connection: close' (curl keeps connections alive by default)".into(),
        (C::ClientClose, _) => "do not send Connection: close unless the connection should end".into(),
        (C::Http10, L::Curl) => "drop -0/--http1.0: HTTP/1.1 keeps connections alive by default".into(),
        (C::Http10, _) => "use HTTP/1.1 (or send Connection: keep-alive with HTTP/1.0)".into(),
        (C::Goaway, _) => "the server shut HTTP/2 connections down (GOAWAY): check its limits (nginx keepalive_requests, http2 max streams) or restarts".into(),
        (C::StaleConnection, lib) => {
            let knob = match lib {
                L::PythonUrllib => "a reconnect before reusing an HTTPConnection idle that long",
                _ => idle_timeout_knob(lib),
            };
            let below = server_idle_ms.map_or_else(|| "below the server's idle timeout".to_string(), |s| format!("below the server's {} (measured), with a margin", secs(s)));
            format!("a request was sent on a connection the server had already closed: set {knob} {below}, and retry idempotent requests")
        }
        (C::Reset, _) => "a connection was reset in the middle of an exchange: look at the server's or a middlebox's logs (timeouts, limits, crashes)".into(),
        (C::IdleAvailable, L::PythonRequests) => "one Session per program, not one per task: a second Session does not see the first one's idle connection".into(),
        (C::IdleAvailable, L::Go) => "share one Transport: each http.Transport has its own idle pool".into(),
        (C::IdleAvailable, _) => "share one client (one pool) across the code that talks to this server".into(),
        (C::Unknown | C::First, _) => "look at the evidence of these connections: the capture does not tell why".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_named_from_their_user_agent() {
        for (ua, lib) in [
            ("Go-http-client/1.1", Library::Go),
            ("python-requests/2.32.3", Library::PythonRequests),
            ("Python-urllib/3.11", Library::PythonUrllib),
            ("curl/8.5.0", Library::Curl),
            ("node", Library::Node),
            ("Java-http-client/17.0.15", Library::Java),
            ("okhttp/4.12.0", Library::Okhttp),
            ("Mozilla/5.0", Library::Unknown),
        ] {
            assert_eq!(Library::of(Some(ua)), lib, "{ua}");
        }
        assert_eq!(Library::of(None), Library::Unknown);
    }

    #[test]
    fn advice_speaks_the_library_and_names_the_race() {
        let go = advise(CauseCode::PoolLimit, Library::Go, None, None);
        assert!(go.contains("MaxIdleConnsPerHost"), "{go}");
        let py = advise(CauseCode::NoPool, Library::PythonRequests, None, None);
        assert!(py.contains("Session"), "{py}");
        let race = advise(
            CauseCode::ServerIdleTimeout,
            Library::Go,
            Some(1000.0),
            Some(90_000.0),
        );
        assert!(
            race.contains("1.0 s") && race.contains("stale-connection race"),
            "{race}"
        );
    }
}
