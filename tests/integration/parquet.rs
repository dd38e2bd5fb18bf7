//! `--format parquet` and `replay --each`, read back by DuckDB (the Python
//! module, which `make deps` installs): the tables hold the JSON report's
//! rows, column for column; `--each` keeps the good files of a batch and
//! names the bad one.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Map, Value};

use crate::common;
use crate::common::capture::{http_connections, pcap, TempFile};

/// A directory for one test's dataset, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("conntrace-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    fn table(&self, name: &str) -> String {
        self.0.join(format!("{name}.parquet")).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn conntrace(args: &[OsString]) -> Output {
    Command::new(common::binary())
        .args(args)
        .output()
        .expect("the conntrace binary runs")
}

fn parquet(files: &[&Path], each: bool, dir: &TempDir) -> Output {
    let mut args: Vec<OsString> = vec!["replay".into()];
    if each {
        args.push("--each".into());
    }
    args.extend(files.iter().map(|f| f.as_os_str().to_owned()));
    args.extend(["-f".into(), "parquet".into(), "-o".into()]);
    args.push(dir.0.clone().into());
    conntrace(&args)
}

/// Rows of a DuckDB query as JSON objects; timestamps as integer
/// microseconds since the epoch, LISTs as arrays, structs as objects.
pub fn duckdb(sql: &str) -> Vec<Map<String, Value>> {
    const SCRIPT: &str = r#"
import datetime, json, sys
import duckdb
epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
def plain(v):
    if isinstance(v, datetime.datetime):
        return (v - epoch) // datetime.timedelta(microseconds=1)
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v
r = duckdb.sql(sys.argv[1])
print(json.dumps([{c: plain(v) for c, v in zip(r.columns, row)} for row in r.fetchall()]))
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, sql])
        .output()
        .expect("python3 runs (make deps installs it and the duckdb module)");
    assert!(
        out.status.success(),
        "DuckDB failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON rows");
    rows.into_iter()
        .map(|r| match r {
            Value::Object(m) => m,
            other => panic!("not a row: {other}"),
        })
        .collect()
}

fn count(sql: &str) -> u64 {
    duckdb(sql)[0]["n"].as_u64().expect("a count named n")
}

/// A JSON row flattened as the Parquet columns are: a nested object's fields
/// prefixed with its name (`http_`, `why_new_`, `unused_`), times as integer
/// microseconds. A null object's prefix is returned apart: all its columns
/// must be null.
fn flatten(row: &Map<String, Value>, times: &[&str]) -> (Map<String, Value>, Vec<String>) {
    let mut flat = Map::new();
    let mut null_objects = Vec::new();
    for (key, value) in row {
        match value {
            Value::Object(inner) => {
                for (k, v) in inner {
                    flat.insert(format!("{key}_{k}"), v.clone());
                }
            }
            Value::Null if ["http", "why_new", "unused"].contains(&key.as_str()) => {
                null_objects.push(format!("{key}_"));
            }
            Value::Number(n) if times.contains(&key.as_str()) => {
                let micros = (n.as_f64().unwrap() * 1e6).round() as i64;
                flat.insert(key.clone(), micros.into());
            }
            _ => {
                flat.insert(key.clone(), value.clone());
            }
        }
    }
    (flat, null_objects)
}

/// Every field of every JSON row is the same in its Parquet row; a column
/// the JSON row lacks is one of `derived` (checked by the caller), or of a
/// null object, or a count the JSON leaves out when zero.
fn assert_rows_equal(
    what: &str,
    json: &[Value],
    parquet: &[Map<String, Value>],
    times: &[&str],
    derived: &[&str],
) {
    assert_eq!(json.len(), parquet.len(), "{what}: row count");
    for (j, p) in json.iter().zip(parquet) {
        let (flat, null_objects) = flatten(j.as_object().expect("a JSON object"), times);
        for (key, value) in &flat {
            let Some(got) = p.get(key) else {
                panic!("{what}: no column {key} in the Parquet table");
            };
            assert_eq!(got, value, "{what}: {key} of {j}");
        }
        for (key, got) in p {
            if flat.contains_key(key) || derived.contains(&key.as_str()) {
                continue;
            }
            if null_objects.iter().any(|prefix| key.starts_with(prefix)) {
                assert!(got.is_null(), "{what}: {key} of a null object is {got}");
            } else {
                assert!(
                    got.is_null() || got.as_u64() == Some(0),
                    "{what}: {key} = {got}, which the JSON row {j} leaves out"
                );
            }
        }
    }
}

fn sorted_by(rows: &mut [Value], keys: &[&str]) {
    rows.sort_by_key(|r| keys.iter().map(|k| r[*k].as_u64()).collect::<Vec<_>>());
}

/// Captures with HTTP/1.1 reuse, HTTP/2, TLS (SNI and ALPN lists), IPv6,
/// a refused connection, pool-limit and idle-timeout causes.
fn varied_captures() -> Vec<PathBuf> {
    let root = common::root();
    [
        "fixtures/curl-keepalive.pcap",
        "fixtures/h2c.pcap",
        "fixtures/tls.pcap",
        "fixtures/ipv6.pcap",
        "fixtures/refused.pcap",
        "fixtures/causes/go-pool-limit.pcap",
        "fixtures/causes/aiohttp-server-idle-timeout.pcap",
        "fixtures/causes/httpx-h2-goaway.pcap",
    ]
    .iter()
    .map(|f| root.join(f))
    .collect()
}

#[test]
fn the_tables_hold_the_json_reports_rows_column_for_column() {
    for file in varied_captures() {
        let name = file.display().to_string();
        let report = common::replay(&file).report().unwrap();
        let dir = TempDir::new("columns");
        let out = parquet(&[&file], false, &dir);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (connections, requests) = (dir.table("connections"), dir.table("requests"));

        let mut json = report["connections"].as_array().unwrap().clone();
        sorted_by(&mut json, &["stream"]);
        let rows = duckdb(&format!("SELECT * FROM '{connections}' ORDER BY stream"));
        assert_rows_equal(
            &name,
            &json,
            &rows,
            &["first_seen", "last_seen", "closed_at"],
            &[
                "source",
                "client_ip",
                "client_port",
                "server_ip",
                "server_port",
            ],
        );
        for row in &rows {
            assert_eq!(row["source"], name.as_str());
            let ip_port = |ip: &Value, port: &Value| {
                let ip = ip.as_str().unwrap();
                if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                }
            };
            assert_eq!(
                row["client"].as_str().unwrap(),
                ip_port(&row["client_ip"], &row["client_port"])
            );
            assert_eq!(
                row["server"].as_str().unwrap(),
                ip_port(&row["server_ip"], &row["server_port"])
            );
        }

        let mut json = report["requests"].as_array().unwrap().clone();
        sorted_by(&mut json, &["stream", "depth"]);
        let rows = duckdb(&format!(
            "SELECT * FROM '{requests}' ORDER BY stream, depth"
        ));
        assert_rows_equal(
            &name,
            &json,
            &rows,
            &["sent", "answered", "completed"],
            &["source"],
        );

        // The tallies a fleet query starts from agree with the report's.
        let summary = &report["summary"];
        let reused = count(&format!(
            "SELECT count(*) AS n FROM '{requests}' WHERE reused"
        ));
        assert_eq!(
            reused,
            summary["reused_requests"].as_u64().unwrap(),
            "{name}"
        );
        let causes: BTreeMap<String, u64> = duckdb(&format!(
            "SELECT why_new_code AS code, count(*) AS n FROM '{requests}' \
             WHERE why_new_code IS NOT NULL GROUP BY 1"
        ))
        .into_iter()
        .map(|r| {
            (
                r["code"].as_str().unwrap().to_string(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
        let expected: BTreeMap<String, u64> =
            serde_json::from_value(summary["new_connection_causes"].clone()).unwrap();
        assert_eq!(causes, expected, "{name}: why_new codes");
        // Every request joins its one connection on (source, stream).
        let joined = count(&format!(
            "SELECT count(*) AS n FROM '{requests}' r \
             JOIN '{connections}' c USING (source, stream)"
        ));
        assert_eq!(joined, summary["requests"].as_u64().unwrap(), "{name}");
    }
}

#[test]
fn each_keeps_the_good_files_and_names_the_bad_one() {
    let root = common::root();
    let good = [
        root.join("fixtures/curl-keepalive.pcap"),
        root.join("fixtures/causes/go-pool-limit.pcap"),
    ];
    let bad = TempFile::new("each-bad.pcap", b"this is not a capture\n");
    let dir = TempDir::new("each");
    let out = parquet(&[&good[0], bad.path(), &good[1]], true, &dir);
    assert_eq!(out.status.code(), Some(2), "a bad file makes the exit 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&bad.path().display().to_string()),
        "stderr names the bad file: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let (connections, requests) = (dir.table("connections"), dir.table("requests"));
    let sources: Vec<String> = duckdb(&format!(
        "SELECT source, min(file_row_number) AS first \
         FROM read_parquet('{connections}', file_row_number = true) \
         GROUP BY source ORDER BY first"
    ))
    .into_iter()
    .map(|r| r["source"].as_str().unwrap().to_string())
    .collect();
    let names: Vec<String> = good.iter().map(|g| g.display().to_string()).collect();
    assert_eq!(sources, names, "rows of both good files, in input order");
    for (file, name) in good.iter().zip(&names) {
        let summary = common::replay(file).report().unwrap()["summary"].clone();
        for (table, field) in [(&connections, "connections"), (&requests, "requests")] {
            let n = count(&format!(
                "SELECT count(*) AS n FROM '{table}' WHERE source = '{name}'"
            ));
            assert_eq!(n, summary[field].as_u64().unwrap(), "{name}: {field}");
        }
    }
    let mut left: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["connections.parquet", "requests.parquet"]);
}

#[test]
fn each_spills_a_large_file_and_keeps_the_input_order() {
    // More rows than a file may hold in memory while it waits (4,096):
    // they are written apart and copied in, row group by row group.
    let large = TempFile::new("each-large.pcap", &pcap(&http_connections(20000, 3000)));
    let small = common::root().join("fixtures/h2c.pcap");
    let dir = TempDir::new("each-spill");
    let out = parquet(&[&small, large.path(), &small], true, &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let connections = dir.table("connections");
    let small_name = small.display().to_string();
    let large_name = large.path().display().to_string();
    // small, large, small: the large file's 3,000 rows between the small
    // file's row (one connection each time).
    let spans: Vec<(String, u64, u64, u64)> = duckdb(&format!(
        "SELECT source, count(*) AS n, min(file_row_number) AS lo, max(file_row_number) AS hi \
         FROM read_parquet('{connections}', file_row_number = true) GROUP BY source ORDER BY lo"
    ))
    .into_iter()
    .map(|r| {
        let n = |k: &str| r[k].as_u64().unwrap();
        (
            r["source"].as_str().unwrap().to_string(),
            n("n"),
            n("lo"),
            n("hi"),
        )
    })
    .collect();
    assert_eq!(
        spans,
        [
            (small_name.clone(), 2, 0, 3001),
            (large_name.clone(), 3000, 1, 3000)
        ]
    );
    let requests = dir.table("requests");
    assert_eq!(
        count(&format!(
            "SELECT count(*) AS n FROM '{requests}' WHERE source = '{large_name}' AND status = 200"
        )),
        3000
    );
    assert_eq!(
        count(&format!(
            "SELECT count(*) AS n FROM '{requests}' WHERE source = '{small_name}'"
        )),
        6
    );
    let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert_eq!(left.len(), 2, "no spill directory left: {left:?}");
}

#[test]
fn row_groups_hold_at_most_65536_rows() {
    let dir = TempDir::new("row-groups");
    let capture = TempDir::new("row-groups-capture");
    std::fs::create_dir_all(&capture.0).unwrap();
    let file = capture.0.join("keepalive.pcap");
    // 10 connections of 7,000 requests: 70,000 request rows.
    let made = Command::new("python3")
        .arg(common::root().join("scripts/synth-capture.py"))
        .arg("keepalive")
        .arg(&file)
        .args(["-m", "10", "-k", "7000"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let summary = common::replay(&file).report().unwrap()["summary"].clone();
    assert_eq!(summary["requests"], 70000);
    let out = parquet(&[&file], false, &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = dir.table("requests");
    let groups: Vec<(u64, String)> = duckdb(&format!(
        "SELECT row_group_num_rows AS n, compression AS c FROM parquet_metadata('{requests}') \
         WHERE path_in_schema = 'source' ORDER BY row_group_id"
    ))
    .into_iter()
    .map(|r| {
        (
            r["n"].as_u64().unwrap(),
            r["c"].as_str().unwrap().to_string(),
        )
    })
    .collect();
    let snappy = "SNAPPY".to_string();
    assert_eq!(groups, [(65536, snappy.clone()), (4464, snappy)]);
    assert_eq!(
        count(&format!(
            "SELECT count(*) AS n FROM '{requests}' WHERE reused"
        )),
        summary["reused_requests"].as_u64().unwrap()
    );
}

#[test]
fn parquet_without_a_directory_is_refused() {
    let file = common::root().join("fixtures/h2c.pcap");
    let out = conntrace(&["replay".into(), file.into(), "-f".into(), "parquet".into()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--format parquet needs -o DIR"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn each_in_the_other_formats_reports_each_file_in_order() {
    let root = common::root();
    let a = root.join("fixtures/curl-keepalive.pcap");
    let b = root.join("fixtures/h2c.pcap");
    let bad = TempFile::new("each-formats-bad.pcap", b"junk");
    let each = |format: &str| {
        let mut args: Vec<OsString> = vec!["replay".into(), "--each".into()];
        args.extend([a.clone().into(), bad.path().into(), b.clone().into()]);
        args.extend(["-f".into(), format.into()]);
        let out = conntrace(&args);
        assert_eq!(out.status.code(), Some(2), "{format}");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            stderr.contains(&bad.path().display().to_string()),
            "{stderr}"
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (name_a, name_b) = (a.display().to_string(), b.display().to_string());

    let reports: Vec<Value> = serde_json::from_str(&each("json")).unwrap();
    let alone = [&a, &b].map(|f| common::replay(f).report().unwrap());
    assert_eq!(reports.len(), 2);
    for (got, want) in reports.iter().zip(&alone) {
        assert_eq!(got["summary"], want["summary"]);
        assert_eq!(got["source"]["names"], want["source"]["names"]);
    }

    let lines: Vec<Value> = each("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tagged: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l["type"] == "request")
        .map(|l| (l["source"].as_str().unwrap(), l["target"].as_str().unwrap()))
        .collect();
    let expected: Vec<(&str, &str)> = [(&name_a, &alone[0]), (&name_b, &alone[1])]
        .iter()
        .flat_map(|(name, report)| {
            report["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |r| (name.as_str(), r["target"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(tagged, expected);
    assert_eq!(lines.iter().filter(|l| l["type"] == "summary").count(), 2);

    let text = each("summary");
    let heads: Vec<&str> = text.lines().filter(|l| l.starts_with("==> ")).collect();
    assert_eq!(
        heads,
        [format!("==> {name_a} <=="), format!("==> {name_b} <==")]
    );
}
