//! `--format svg`: a valid SVG (read back with an XML parser) whose lanes
//! and bars are the report's connections and requests.

use std::process::Command;

use crate::common;
use crate::common::capture::{http_connections, pcap, TempFile};

fn svg_of(file: &std::path::Path) -> String {
    let out = Command::new(common::binary())
        .args(["replay", "-f", "svg"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_timeline_has_a_lane_per_connection_and_a_bar_per_request() {
    let file = common::root().join("fixtures/causes/go-pool-limit.pcap");
    let report = common::replay(&file).report().unwrap();
    let text = svg_of(&file);
    let doc = roxmltree::Document::parse(&text).expect("valid XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert!(!text.contains("<script"), "plain SVG");
    let lanes = root.children().filter(|n| n.has_tag_name("g")).count();
    assert_eq!(
        lanes as u64,
        report["summary"]["connections"].as_u64().unwrap()
    );
    // Bars carry a title naming the request; the legend's swatches do not.
    let bars: Vec<_> = root
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.children().any(|c| c.has_tag_name("title")))
        .collect();
    assert_eq!(
        bars.len() as u64,
        report["summary"]["requests"].as_u64().unwrap()
    );
    let reused = bars
        .iter()
        .filter(|b| b.attribute("fill") == Some("#43a047"))
        .count();
    assert_eq!(
        reused as u64,
        report["summary"]["reused_requests"].as_u64().unwrap()
    );
    let pool_limit = bars
        .iter()
        .filter(|b| {
            b.children()
                .find(|c| c.has_tag_name("title"))
                .and_then(|t| t.text())
                .is_some_and(|t| t.ends_with("new: pool_limit"))
        })
        .count();
    assert_eq!(
        pool_limit as u64,
        report["summary"]["new_connection_causes"]["pool_limit"]
            .as_u64()
            .unwrap()
    );
}

#[test]
fn many_connections_fold_into_rows_the_legend_explains() {
    let file = TempFile::new("fold.pcap", &pcap(&http_connections(20000, 700)));
    let text = svg_of(file.path());
    let doc = roxmltree::Document::parse(&text).expect("valid XML");
    let labels = doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("text") && n.text().is_some_and(|t| t.contains("connections,")))
        .count();
    assert!(labels <= conntrace::svg::MAX_LANES, "{labels} rows");
    assert!(
        labels >= 200,
        "{labels} rows for 700 connections folded 3 to a row"
    );
    assert!(
        text.contains("700 connections folded 3 to a row"),
        "the legend says so"
    );
}

#[test]
fn the_terminal_timeline_has_a_line_per_connection() {
    let file = common::root().join("fixtures/causes/go-pool-limit.pcap");
    let report = common::replay(&file).report().unwrap();
    let out = Command::new(common::binary())
        .args(["replay", "-f", "timeline"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lanes: Vec<&str> = text.lines().skip(2).collect();
    assert_eq!(
        lanes.len() as u64,
        report["summary"]["connections"].as_u64().unwrap()
    );
    // The two connections Go kept are the only ones with reused requests.
    let reusing = lanes.iter().filter(|l| l.contains('█')).count();
    assert_eq!(reusing, 2, "{text}");
    let pool_limit = lanes.iter().filter(|l| l.ends_with(" pool_limit")).count() as u64;
    assert_eq!(
        pool_limit,
        report["summary"]["new_connection_causes"]["pool_limit"]
            .as_u64()
            .unwrap(),
        "{text}"
    );
}
