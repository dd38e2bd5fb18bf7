//! The command line as a user meets it: errors, pipes, filters, output files.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conntrace"))
}

fn corpus(rel: &str) -> Option<PathBuf> {
    let Some(files) = crate::common::corpus_dir() else {
        eprintln!("skipped: the shared corpus is not here");
        return None;
    };
    let p = files.join(rel);
    assert!(p.exists(), "{} is missing from the corpus", p.display());
    Some(p)
}

#[test]
fn missing_file_is_a_one_line_error_naming_it() {
    let out = bin()
        .args(["replay", "/nonexistent/x.pcap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err, "conntrace: /nonexistent/x.pcap: no such file\n");
}

#[test]
fn a_file_that_is_not_a_capture_is_refused_clearly() {
    let dir = std::env::temp_dir().join(format!("conntrace-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notes.txt");
    std::fs::write(&path, "just text\n").unwrap();
    let out = bin().arg("replay").arg(&path).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("notes.txt: not a pcap or pcapng file"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn bad_filter_is_refused_before_reading() {
    let out = bin()
        .args(["replay", "whatever.pcap", "--", "tcp", "port", "banana"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad filter"));
}

#[test]
fn piping_into_head_exits_quietly() {
    let Some(f) = corpus("pcapplusplus/many-protocols.pcap") else {
        return;
    };
    let mut child = bin()
        .arg("replay")
        .arg(&f)
        .args(["--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then hang up, as `head -1` does.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}, stderr {err}");
    assert_eq!(err, "");
}

#[test]
fn filter_after_double_dash_selects_frames_and_is_reported() {
    let Some(f) = corpus("arkime/tcp_handshake_synthetic.pcap") else {
        return;
    };
    let out = bin()
        .arg("replay")
        .arg(&f)
        .args(["-f", "json", "--", "tcp", "port", "40003"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["source"]["filter"], "tcp port 40003");
    // Port 40003 carries two streams in this capture (a reused 4-tuple).
    assert_eq!(v["connections"].as_array().unwrap().len(), 2);
    assert_eq!(v["source"]["packets"], 5);
}

#[test]
fn output_file_gets_the_report_and_stdout_stays_empty() {
    let Some(f) = corpus("zeek/http/get.pcap") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("conntrace-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("r.md");
    let out = bin()
        .arg("replay")
        .arg(&f)
        .args(["--format", "markdown", "-o"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let md = std::fs::read_to_string(&report).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(md.starts_with("## conntrace report"), "{md}");
    assert!(md.contains("| 141.142.228.5:59856"), "{md}");
}

#[test]
fn several_files_are_numbered_as_one_capture() {
    let (Some(a), Some(b)) = (
        corpus("zeek/http/get.pcap"),
        corpus("arkime/tcp_handshake_synthetic.pcap"),
    ) else {
        return;
    };
    let out = bin()
        .arg("replay")
        .arg(&a)
        .arg(&b)
        .args(["-f", "json", "--no-http"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 17);
    assert_eq!(conns[1]["client"], "192.0.2.10:40001");
    assert_eq!(v["source"]["names"].as_array().unwrap().len(), 2);
}

#[test]
fn markdown_tables_have_as_many_cells_as_headers() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nginx-limits-requests.pcap");
    let out = bin()
        .arg("replay")
        .arg(&fixture)
        .args(["--format", "markdown"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let md = String::from_utf8(out.stdout).unwrap();
    let mut tables = 0;
    let mut header_cells = None;
    for line in md.lines() {
        if line.starts_with('|') {
            let cells = line.matches('|').count();
            match header_cells {
                None => {
                    header_cells = Some(cells);
                    tables += 1;
                }
                Some(h) => assert_eq!(cells, h, "row {line:?} in\n{md}"),
            }
        } else {
            header_cells = None;
        }
    }
    assert_eq!(tables, 2, "a connections and a requests table:\n{md}");
    assert!(md.contains("| why new"), "{md}");
}

#[test]
fn summary_format_is_the_verdict_and_totals_without_tables() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nginx-limits-timeout.pcap");
    let out = bin()
        .arg("replay")
        .arg(&fixture)
        .args(["--format", "summary"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(
            "3 requests over 3 connections: 0 reused a connection, 3 opened a new one"
        ),
        "{text}"
    );
    assert!(text.contains("closed by client: 1, by server: 2"), "{text}");
    assert!(
        !text.contains('│') && !text.contains('|'),
        "no tables: {text}"
    );
}

/// A classic pcap of raw IPv4 frames (LINKTYPE_RAW, 101): one SYN to port 80
/// and one to port 81.
fn raw_ip_capture(path: &Path) {
    let mut f = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 101] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    for (i, port) in [80u16, 81].into_iter().enumerate() {
        let mut ip = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&(40000 + i as u16).to_be_bytes());
        tcp[2..4].copy_from_slice(&port.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x02;
        ip.extend_from_slice(&tcp);
        for v in [1u32, i as u32, ip.len() as u32, ip.len() as u32] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&ip);
    }
    std::fs::write(path, f).unwrap();
}

#[test]
fn a_filter_works_on_raw_ip_captures() {
    let path = std::env::temp_dir().join(format!("conntrace-raw-{}.pcap", std::process::id()));
    raw_ip_capture(&path);
    let out = bin()
        .args(["replay", "-f", "json"])
        .arg(&path)
        .args(["--", "tcp", "dst", "port", "80"])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let report = crate::common::report_of(&out);
    assert_eq!(report["summary"]["connections"], 1);
    assert_eq!(report["connections"][0]["server"], "10.0.0.2:80");
    assert_eq!(report["source"]["link_types"][0], "RAW");
}

/// `conntrace replay ARGS -f json` with `stdin` on standard input.
fn replay_with_stdin(args: &[&std::ffi::OsStr], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = bin()
        .arg("replay")
        .args(args)
        .args(["-f", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let bytes = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn dash_r_reads_files_as_tcpdump_and_tshark_take_them() {
    use crate::common::capture::{http_connections, pcap, report_of, TempFile};
    let a = TempFile::new("r-a.pcap", &pcap(&http_connections(40000, 2)));
    let b = TempFile::new("r-b.pcap", &pcap(&http_connections(50000, 3)));
    let one = report_of(&replay_with_stdin(
        &["-r".as_ref(), a.path().as_os_str()],
        b"",
    ));
    assert_eq!(one["summary"]["connections"], 2);
    // Repeated, or beside positional files: read as one capture, -r first.
    for args in [
        vec![
            "-r".as_ref(),
            a.path().as_os_str(),
            "-r".as_ref(),
            b.path().as_os_str(),
        ],
        vec![b.path().as_os_str(), "-r".as_ref(), a.path().as_os_str()],
        vec![
            "--read".as_ref(),
            a.path().as_os_str(),
            b.path().as_os_str(),
        ],
    ] {
        let both = report_of(&replay_with_stdin(&args, b""));
        assert_eq!(both["summary"]["connections"], 5, "{args:?}");
        assert_eq!(
            both["source"]["names"][0],
            a.path().display().to_string(),
            "{args:?}"
        );
    }
    let none = bin().arg("replay").output().unwrap();
    assert_eq!(none.status.code(), Some(2), "no file: a usage error");
}

#[test]
fn dash_reads_a_capture_from_standard_input_plain_or_gzip() {
    use crate::common::capture::{http_connections, pcap, report_of};
    use std::io::Write;
    let plain = pcap(&http_connections(50000, 3));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gzipped = gz.finish().unwrap();
    for bytes in [&plain, &gzipped] {
        for args in [vec!["-"], vec!["-r", "-"]] {
            let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
            let report = report_of(&replay_with_stdin(&args, bytes));
            assert_eq!(report["summary"]["connections"], 3, "{args:?}");
            assert_eq!(report["summary"]["requests"], 3, "{args:?}");
            assert_eq!(report["source"]["names"][0], "-");
        }
    }
    let twice = replay_with_stdin(&["-".as_ref(), "-r".as_ref(), "-".as_ref()], &plain);
    assert_eq!(twice.status.code(), Some(2), "a bad argument");
    assert!(String::from_utf8_lossy(&twice.stderr).contains("standard input"));
}
