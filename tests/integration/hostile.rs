//! Captures a hostile tester would write, replayed by the built binary:
//! cut-short options, impossible timestamps, a gzip stream cut short, a
//! request head larger than any parser reads. Each run must end in a report
//! or one clear line naming the file, never a panic. (The floods of tiny
//! segments and connections are tested next to the code, on work counters:
//! reassembly, http and diagnose.)

use std::ffi::OsStr;

use crate::common::capture::{self, ipv4_tcp, TempFile, ACK, PSH_ACK, SYN, SYN_ACK};

const CLIENT: ([u8; 4], u16) = ([10, 0, 0, 1], 40000);
const SERVER: ([u8; 4], u16) = ([10, 0, 0, 2], 80);

/// A SYN and its SYN+ACK as raw IP frames.
fn handshake() -> [Vec<u8>; 2] {
    [
        ipv4_tcp(CLIENT, SERVER, 100, 0, SYN, &[]),
        ipv4_tcp(SERVER, CLIENT, 500, 101, SYN_ACK, &[]),
    ]
}

#[test]
fn pcapng_interface_with_cut_short_tsresol_option_replays() {
    // if_tsresol (9) claims 1..4 bytes of value; the block ends first, or
    // right after a value too short for the padding.
    let cuts: [&[u8]; 4] = [
        &[9, 0, 1, 0],
        &[9, 0, 4, 0, 6],
        &[9, 0, 1, 0, 9, 0],
        &[2, 0, 0xff, 0xff, 9, 0, 1, 0, 3],
    ];
    for (n, options) in cuts.iter().enumerate() {
        let mut file = capture::shb();
        file.extend(capture::idb(options));
        for (k, frame) in handshake().iter().enumerate() {
            file.extend(capture::epb(1_700_000_000_000_000 + k as u64, frame));
        }
        let f = TempFile::new(&format!("tsresol-{n}.pcapng"), &file);
        let out = capture::replay_json(&[f.path().as_os_str()]);
        let report = capture::report_of(&out);
        assert_eq!(report["summary"]["connections"], 1, "options {options:?}");
        assert_eq!(report["source"]["packets"], 2);
    }
}

#[test]
fn pcapng_timestamps_beyond_any_date_replay_in_a_debug_build() {
    // One unit a second (if_tsresol 0) and u64::MAX units: no multiply may
    // overflow (this test binary's conntrace has overflow checks on).
    let mut options = vec![9, 0, 1, 0, 0, 0, 0, 0];
    options.extend_from_slice(&[0; 4]);
    let mut file = capture::shb();
    file.extend(capture::idb(&options));
    let [syn, syn_ack] = handshake();
    let ack = ipv4_tcp(CLIENT, SERVER, 101, 501, ACK, &[]);
    file.extend(capture::epb(u64::MAX - 2, &syn));
    file.extend(capture::epb(u64::MAX - 1, &syn_ack));
    file.extend(capture::epb(u64::MAX, &ack));
    let f = TempFile::new("huge-ts.pcapng", &file);
    for format in ["json", "jsonl", "table", "summary"] {
        let out = std::process::Command::new(crate::common::binary())
            .args(["replay", "-f", format])
            .arg(f.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{format}: {stderr}");
        assert!(!stderr.contains("panicked"), "{format}: {stderr}");
    }
    let report = capture::report_of(&capture::replay_json(&[OsStr::new(f.path())]));
    assert_eq!(report["summary"]["connections"], 1);
}

#[test]
fn truncated_gzip_gives_partial_report() {
    use std::io::Write;
    let plain = capture::pcap(&capture::http_connections(40000, 40));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let whole = gz.finish().unwrap();
    let cut = TempFile::new("cut.pcap.gz", &whole[..whole.len() * 2 / 3]);
    let out = capture::replay_json(&[cut.path().as_os_str()]);
    let report = capture::report_of(&out);
    let connections = report["summary"]["connections"].as_u64().unwrap();
    assert!((5..40).contains(&connections), "{connections} connections");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cut.pcap.gz") && stderr.contains("gzip stream is truncated"),
        "{stderr}"
    );
    // The frames it read are those the same bytes unzipped hold.
    let mut decoder = flate2::read::MultiGzDecoder::new(&whole[..whole.len() * 2 / 3]);
    let mut unzipped = Vec::new();
    let _ = std::io::Read::read_to_end(&mut decoder, &mut unzipped);
    let unzipped = TempFile::new("cut-unzipped.pcap", &unzipped);
    let plain_report = capture::report_of(&capture::replay_json(&[unzipped.path().as_os_str()]));
    assert_eq!(report["summary"], plain_report["summary"]);
    assert_eq!(
        report["source"]["packets"],
        plain_report["source"]["packets"]
    );
}

#[test]
fn requests_after_a_head_over_512_kib_are_found() {
    let mut big = b"GET /big HTTP/1.1\r\nHost: a\r\n".to_vec();
    while big.len() < 600 * 1024 {
        big.extend_from_slice(format!("X-Pad: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let client: Vec<&[u8]> = big
        .chunks(1400)
        .chain([&b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n"[..]])
        .collect();
    let response: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let mut frames: Vec<Vec<u8>> = handshake().into();
    let (mut seq, mut ack) = (101u32, 501u32);
    for (k, chunk) in client.iter().enumerate() {
        frames.push(ipv4_tcp(CLIENT, SERVER, seq, ack, PSH_ACK, chunk));
        seq += chunk.len() as u32;
        if k == client.len() - 2 || k == client.len() - 1 {
            frames.push(ipv4_tcp(SERVER, CLIENT, ack, seq, PSH_ACK, response));
            ack += response.len() as u32;
        }
    }
    let frames: Vec<(u64, Vec<u8>)> = frames
        .into_iter()
        .enumerate()
        .map(|(k, f)| (1_700_000_000_000_000 + 100 * k as u64, f))
        .collect();
    let f = TempFile::new("big-head.pcap", &capture::pcap(&frames));
    let report = capture::report_of(&capture::replay_json(&[f.path().as_os_str()]));
    let targets: Vec<&str> = report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["/big", "/after"]);
    let http = &report["connections"][0]["http"];
    assert_eq!(http["unmatched_responses"], 0);
    assert_eq!(http["oversized_heads"], 1);
}
