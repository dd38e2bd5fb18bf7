//! Captures a hostile tester would write: cut-short options, impossible
//! timestamps, floods of tiny segments. Each run must end in a report or one
//! clear line naming the file, never a panic, and work that grows with the
//! input must grow linearly (asserted on counters, never on the clock).

use std::ffi::OsStr;

use crate::common::capture::{self, ipv4_tcp, TempFile, ACK, SYN, SYN_ACK};

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
