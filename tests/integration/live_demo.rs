//! Each demo experiment, run for real on loopback with capture, and its
//! numbers asserted from the captured report.

use crate::common;

use conntrace::live::demo::{render, run_experiment, Experiment, ExperimentResult};

fn run(e: Experiment, name: &str) -> Option<ExperimentResult> {
    if !common::can_capture(name) {
        return None;
    }
    let result = run_experiment(e).expect("experiment runs");
    eprintln!("{}", render(&result));
    Some(result)
}

fn streams_closed_by(r: &ExperimentResult, side: &str) -> usize {
    r.report
        .connections
        .iter()
        .filter(|c| c.closed_by.map(|r| r.as_str()) == Some(side))
        .count()
}

/// New connections by `why_new.code`.
fn causes(r: &ExperimentResult) -> Vec<(&str, u64)> {
    r.report
        .summary
        .new_connection_causes
        .iter()
        .map(|(code, n)| (code.as_str(), *n))
        .collect()
}

/// Connections that carried at least one request.
fn carrying(r: &ExperimentResult) -> usize {
    r.report
        .connections
        .iter()
        .filter(|c| r.report.requests.iter().any(|q| q.stream == c.stream))
        .count()
}

#[test]
fn a_sequential_drained_requests_share_one_connection() {
    let Some(r) = run(Experiment::SequentialDrained, "a") else {
        return;
    };
    let s = &r.report.summary;
    assert_eq!(s.requests, 10);
    assert_eq!(s.connections, 1, "{}", r.verdict.line);
    assert_eq!(s.reused_requests, 9);
    assert!(r.verdict.expected);
}

#[test]
fn b_undrained_bodies_cost_a_connection_each() {
    let Some(r) = run(Experiment::SequentialUndrained, "b") else {
        return;
    };
    let s = &r.report.summary;
    assert_eq!(s.requests, 10);
    assert_eq!(s.connections, 10, "{}", r.verdict.line);
    assert_eq!(s.reused_requests, 0);
    // The client abandons each connection with bytes unread.
    assert_eq!(streams_closed_by(&r, "client"), 10);
    // By construction every connection after the first was opened because
    // the previous response was dropped unread.
    assert_eq!(causes(&r), [("first", 1), ("unread_body", 9)]);
    assert!(r.verdict.expected);
}

#[test]
fn c_pool_idle_limit_2_reopens_connections() {
    let Some(r) = run(Experiment::PoolIdleLimit2, "c2") else {
        return;
    };
    let s = &r.report.summary;
    assert_eq!(s.requests, 50);
    assert!(carrying(&r) > 10, "{}", r.verdict.line);
    // By construction: the first wave of 10 workers dials 10 connections
    // (one first, nine while the others are busy); every later one replaces
    // a connection the client closed because its idle pool holds 2. The
    // pool may race a dial in the first wave: at least 95% are named.
    let later = s.connections - 10;
    let pool = causes(&r)
        .iter()
        .find(|c| c.0 == "pool_limit")
        .map_or(0, |c| c.1);
    assert!(
        pool * 100 >= later * 95 && pool <= later + 1,
        "{pool} pool_limit for {later} later connections: {:?}",
        causes(&r)
    );
    assert!(r.verdict.expected);
}

#[test]
fn c_pool_idle_limit_10_keeps_ten_connections() {
    let Some(r) = run(Experiment::PoolIdleLimit10, "c10") else {
        return;
    };
    let s = &r.report.summary;
    assert_eq!(s.requests, 50);
    assert_eq!(carrying(&r), 10, "{}", r.verdict.line);
    assert_eq!(s.reused_requests, 40);
    // Ten workers warm the pool: the first connection, then nine opened
    // while every open one was busy. Under load hyper's pool sometimes
    // dials for a worker just as another connection comes back idle (its
    // checkout races the return): that one is, on the wire, idle_available.
    let causes = causes(&r);
    let count = |code: &str| causes.iter().find(|c| c.0 == code).map_or(0, |c| c.1);
    assert_eq!(count("first"), 1, "{causes:?}");
    assert_eq!(
        count("concurrency") + count("idle_available"),
        9,
        "{causes:?}"
    );
    assert!(count("concurrency") >= 8, "{causes:?}");
    assert!(r.verdict.expected);
}

#[test]
fn d_http2_multiplexes_on_one_connection() {
    let Some(r) = run(Experiment::Http2Concurrent, "d") else {
        return;
    };
    let s = &r.report.summary;
    assert_eq!(s.requests, 10);
    // One connection multiplexes the requests; a second one that hyper's
    // pool may race into being takes at most one (the verdict names it).
    let busiest = r
        .report
        .connections
        .iter()
        .map(|c| {
            r.report
                .requests
                .iter()
                .filter(|q| q.stream == c.stream)
                .count()
        })
        .max()
        .unwrap();
    assert!(busiest >= 9, "{}", r.verdict.line);
    assert!(carrying(&r) <= 2, "{}", r.verdict.line);
    // The h2c frames were parsed from the packets: every request is an
    // HTTP/2 stream on the wire, with distinct ids on each connection.
    let mut ids: Vec<(u64, u32)> = r
        .report
        .requests
        .iter()
        .filter_map(|q| Some((q.stream, q.h2_stream?)))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        10,
        "HTTP/2 streams found in the packets: {ids:?}"
    );
    assert!(r.verdict.expected);
}

#[test]
fn e_server_idle_timeout_forces_new_connections() {
    let Some(r) = run(Experiment::ServerIdleTimeout, "e") else {
        return;
    };
    let s = &r.report.summary;
    assert_eq!(s.requests, 3);
    assert_eq!(s.connections, 3, "{}", r.verdict.line);
    assert!(streams_closed_by(&r, "server") >= 2);
    assert_eq!(causes(&r), [("first", 1), ("server_idle_timeout", 2)]);
    let d = &r.report.diagnosis[0];
    let measured = d
        .server_idle_timeout_ms
        .expect("the server's idle timeout measured");
    // The server is configured with a 1 s idle timeout.
    assert!((950.0..1200.0).contains(&measured), "{measured} ms");
    assert!(r.verdict.expected);
}

#[test]
fn f_server_max_requests_splits_connections() {
    let Some(r) = run(Experiment::ServerMaxRequests, "f") else {
        return;
    };
    let s = &r.report.summary;
    assert_eq!(s.requests, 9);
    assert_eq!(s.connections, 3, "{}", r.verdict.line);
    assert_eq!(s.reused_requests, 6);
    assert_eq!(causes(&r), [("first", 1), ("server_request_limit", 2)]);
    assert!(r.verdict.expected);
}
