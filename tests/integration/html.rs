//! `--format html`: the page rendered by a real browser (headless Chromium,
//! Debian's `chromium` package), read back as the DOM after its script ran:
//! the verdict a person reads, one timeline lane per connection, the tables'
//! rows, and a sort asked for in the page's address.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

/// Writes the HTML report of `capture` (with `extra` arguments) to a
/// temporary file and returns its path.
fn html_of(capture: &Path, extra: &[&str], name: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("conntrace-{}-{name}.html", std::process::id()));
    let status = Command::new(common::binary())
        .args(["replay", "-f", "html", "-o"])
        .arg(&out)
        .args(extra)
        .arg(capture)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// The DOM Chromium holds once the page at `url` has loaded and run its
/// script, with the network off limits as it is for a report read offline.
fn dom(browser: &Path, url: &str) -> String {
    // A profile of its own: two browsers cannot share one.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile = tempdir(&format!("chromium-profile-{run}"));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Any request the page made would fail: everything is inline.
            "--proxy-server=127.0.0.1:9",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("conntrace-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The inside of the first element that starts with `open`, up to `close`.
fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text.find(open).unwrap_or_else(|| panic!("no {open}")) + open.len();
    let len = text[start..].find(close).unwrap();
    &text[start..start + len]
}

/// The cells of each body row of the table with id `id`: (text, data-v).
fn rows(dom: &str, id: &str) -> Vec<Vec<(String, Option<String>)>> {
    let table = between(
        dom,
        &format!("<table class=\"sortable\" id=\"{id}\">"),
        "</table>",
    );
    let body = between(table, "<tbody>", "</tbody>");
    body.split("<tr")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let (attrs, rest) = cell.split_once('>').unwrap();
                    let text = rest.split("</td>").next().unwrap().to_string();
                    let value = attrs
                        .split_once("data-v=\"")
                        .map(|(_, v)| v.split('"').next().unwrap().to_string());
                    (text, value)
                })
                .collect()
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[test]
fn the_page_shows_the_verdict_a_lane_per_connection_and_sorts_in_a_browser() {
    let Some(browser) = chromium() else {
        common::need("chromium (apt install chromium)", false);
        return;
    };
    let capture = common::root().join("fixtures/causes/go-pool-limit.pcap");
    let report = common::replay(&capture).report().unwrap();
    let summary = Command::new(common::binary())
        .args(["replay", "-f", "summary"])
        .arg(&capture)
        .output()
        .unwrap();
    let verdict = String::from_utf8(summary.stdout).unwrap();
    let verdict = verdict.lines().next().unwrap().to_string();
    let page = html_of(&capture, &[], "pool");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to fetch.
    assert!(
        !html.contains(" src=") && !html.contains("href="),
        "{page:?}"
    );

    let url = format!("file://{}#sort=requests.latency.desc", page.display());
    let dom = dom(&browser, &url);
    let _ = std::fs::remove_file(&page);
    assert_eq!(
        between(&dom, "<p class=\"verdict\">", "</p>"),
        escape(&verdict)
    );
    let diagnosis = between(&dom, "<ul class=\"diagnosis\">", "</ul>");
    assert!(
        diagnosis.contains("Transport.MaxIdleConnsPerHost"),
        "the fix in Go's words: {diagnosis}"
    );
    let connections = report["summary"]["connections"].as_u64().unwrap() as usize;
    let requests = report["summary"]["requests"].as_u64().unwrap() as usize;
    assert_eq!(dom.matches("<g class=\"lane\"").count(), connections);
    assert_eq!(rows(&dom, "connections").len(), connections);

    // The script ran: it counted the rows and sorted by latency, slowest
    // first, as the address asked.
    assert_eq!(
        between(
            &dom,
            "<span class=\"count\" id=\"requests-count\">",
            "</span>"
        ),
        format!("{requests} of {requests} rows")
    );
    let latencies: Vec<f64> = rows(&dom, "requests")
        .iter()
        .map(|r| r[8].1.as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(latencies.len(), requests);
    assert!(
        latencies.windows(2).all(|w| w[0] >= w[1]),
        "sorted slowest first: {latencies:?}"
    );
    let mut json: Vec<f64> = report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["answered"].as_f64().unwrap() - r["sent"].as_f64().unwrap()) * 1000.0)
        .collect();
    json.sort_by(|a, b| b.partial_cmp(a).unwrap());
    for (page, json) in latencies.iter().zip(&json) {
        assert!((page - json).abs() < 0.01, "{page} vs {json}");
    }
    assert!(dom.contains("aria-sort=\"descending\""));
}

#[test]
fn a_text_column_sorts_and_the_summary_rows_count_connections() {
    let Some(browser) = chromium() else {
        common::need("chromium (apt install chromium)", false);
        return;
    };
    let capture = common::root().join("fixtures/causes/go-client-idle-timeout.pcap");
    let report = common::replay(&capture).report().unwrap();
    let page = html_of(&capture, &["--rows", "summary"], "summary");
    let dom = dom(
        &browser,
        &format!("file://{}#sort=connections.history", page.display()),
    );
    let _ = std::fs::remove_file(&page);
    let connections = report["connections"].as_array().unwrap();
    let histories: Vec<String> = rows(&dom, "connections")
        .iter()
        .map(|r| r[14].0.clone())
        .collect();
    let mut expected: Vec<String> = connections
        .iter()
        .map(|c| c["history"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    assert_eq!(histories, expected);
    // One row per connection that carried a request, with its count.
    let per_connection = rows(&dom, "requests");
    let with_requests = connections
        .iter()
        .filter(|c| c["requests"].as_u64().unwrap_or(0) > 0)
        .count();
    assert_eq!(per_connection.len(), with_requests);
    let total: u64 = per_connection
        .iter()
        .map(|r| r[1].0.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, report["summary"]["requests"].as_u64().unwrap());
}
