//! The fixtures are what fixtures/README.md says they are: tshark finds the
//! connections each was made to show. These tests hold the captures (and the
//! tshark reference the other tests rely on) steady when `fixtures/make.sh`
//! remakes them.

use crate::common;

use common::tshark::{self, Reference};
use std::net::SocketAddr;
use std::path::Path;

/// Every fixture and the number of TCP streams tshark must find in it.
const STREAMS: &[(&str, usize)] = &[
    ("any-sll2.pcap", 1),
    ("curl-close.pcap", 3),
    ("curl-keepalive.pcap", 1),
    ("curl-keepalive.pcapng", 1),
    ("h2c.pcap", 1),
    ("head-chunked.pcap", 1),
    ("ipv6.pcap", 1),
    ("nginx-limits-requests.pcap", 3),
    ("nginx-limits-timeout.pcap", 3),
    ("pipelined.pcap", 1),
    ("port-reuse.pcap", 2),
    ("python-requests-nosession.pcap", 3),
    ("refused.pcap", 1),
    ("tls.pcap", 1),
];

/// tshark's view of a fixture, from the answers committed in `fixtures/tshark/`.
fn reference(name: &str) -> Option<Reference> {
    let path = common::root().join("fixtures").join(name);
    Some(tshark::reference(&path).unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn every_fixture_is_listed_and_small() {
    let on_disk: Vec<String> = common::fixtures()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let listed: Vec<String> = STREAMS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        on_disk, listed,
        "fixtures/ and the table in this test differ"
    );
    for path in common::fixtures() {
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 200 * 1024, "{} is {size} bytes", path.display());
    }
}

#[test]
fn tshark_finds_the_expected_streams_each_opened_by_a_syn() {
    let mut wrong = Vec::new();
    for (name, want) in STREAMS {
        let Some(r) = reference(name) else { return };
        if r.streams.len() != *want {
            wrong.push(format!("{name}: {} streams, want {want}", r.streams.len()));
        }
        let numbers: Vec<u64> = r.streams.keys().copied().collect();
        let expected: Vec<u64> = (0..*want as u64).collect();
        if numbers != expected {
            wrong.push(format!("{name}: stream numbers {numbers:?}"));
        }
        for s in r.streams.values() {
            if s.opener().is_none() {
                wrong.push(format!("{name}: stream {} has no clear opener", s.stream));
            }
        }
        if !r.warnings.is_empty() || !r.quoted_frames.is_empty() {
            wrong.push(format!("{name}: {:?} {:?}", r.warnings, r.quoted_frames));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn refused_is_a_syn_answered_by_a_reset() {
    let Some(r) = reference("refused.pcap") else {
        return;
    };
    let s = &r.streams[&0];
    let client = s.side(s.opener().unwrap()).unwrap();
    let server = s.sides.iter().find(|x| x.addr != client.addr).unwrap();
    assert_eq!((client.packets, client.syn, client.rst), (1, 1, 0));
    assert_eq!((server.packets, server.syn_ack, server.rst), (1, 0, 1));
}

#[test]
fn port_reuse_has_two_streams_on_one_four_tuple() {
    let Some(r) = reference("port-reuse.pcap") else {
        return;
    };
    let (a, b) = (&r.streams[&0], &r.streams[&1]);
    assert_eq!(a.opener(), b.opener());
    let mut pa: Vec<SocketAddr> = a.sides.iter().map(|s| s.addr).collect();
    let mut pb: Vec<SocketAddr> = b.sides.iter().map(|s| s.addr).collect();
    pa.sort();
    pb.sort();
    assert_eq!(pa, pb);
    for s in [a, b] {
        let opener = s.side(s.opener().unwrap()).unwrap();
        assert_eq!((opener.syn, opener.fin), (1, 1));
    }
}

#[test]
fn ipv6_fixture_is_on_the_ipv6_loopback() {
    let Some(r) = reference("ipv6.pcap") else {
        return;
    };
    let s = &r.streams[&0];
    assert!(s.sides.iter().all(|x| x.addr.ip() == addr("[::1]:1").ip()));
}

#[test]
fn every_connection_of_curl_close_and_nosession_carries_one_request() {
    // One request per connection: the client sends exactly one data segment
    // on each stream, so its payload is that of one GET.
    for name in ["curl-close.pcap", "python-requests-nosession.pcap"] {
        let Some(r) = reference(name) else { return };
        let payloads: Vec<u64> = r
            .streams
            .values()
            .map(|s| s.side(s.opener().unwrap()).unwrap().payload)
            .collect();
        assert!(
            payloads.iter().all(|p| *p > 0 && *p == payloads[0]),
            "{name}: {payloads:?}"
        );
    }
}

#[test]
fn pcapng_fixture_is_pcapng_and_sll2_fixture_is_sll2() {
    let head = |name: &str| -> Vec<u8> {
        let bytes = std::fs::read(common::root().join("fixtures").join(name)).unwrap();
        bytes[..24].to_vec()
    };
    assert_eq!(head("curl-keepalive.pcapng")[..4], [0x0a, 0x0d, 0x0d, 0x0a]);
    let sll2 = head("any-sll2.pcap");
    let network = u32::from_le_bytes(sll2[20..24].try_into().unwrap());
    assert_eq!(network, 276, "LINKTYPE_LINUX_SLL2");
}

/// Fixtures whose committed tshark answers are checked against tshark itself
/// on every run: one of each kind (pcap, pcapng, IPv6, h2c, TLS, port reuse).
const ASKED_AGAIN: &[&str] = &[
    "curl-keepalive.pcapng",
    "ipv6.pcap",
    "h2c.pcap",
    "tls.pcap",
    "port-reuse.pcap",
];

/// The tests read tshark's answers about the fixtures from `fixtures/tshark/`;
/// for a sample of fixtures, tshark is asked again and must say the same, so
/// the committed answers cannot drift from what tshark says. Every fixture has
/// its answer to the per-frame query.
#[test]
fn committed_tshark_answers_are_what_tshark_says_now() {
    if std::env::var_os("CONNTRACE_TSHARK_REFRESH").is_some() {
        // The other tests are writing the answers now.
        return;
    }
    let dir = common::root().join("fixtures/tshark");
    for fixture in common::fixtures() {
        let frames = tshark::committed_path(&fixture, "frames").unwrap();
        assert!(
            frames.is_file(),
            "{} is missing: `make fixtures` writes it",
            frames.display()
        );
    }
    if !common::need("tshark", tshark::available()) {
        return;
    }
    let mut asked = 0;
    for name in ASKED_AGAIN {
        let fixture = common::root().join("fixtures").join(name);
        let prefix = format!("{name}.");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let file_name = path.file_name().unwrap().to_str().unwrap();
            if !file_name.starts_with(&prefix) {
                continue;
            }
            let (args, committed) =
                tshark::recorded(&path).unwrap_or_else(|| panic!("{}: unreadable", path.display()));
            let now = tshark::ask(&fixture, &args).unwrap();
            assert_eq!(
                committed,
                now,
                "{}: tshark answers otherwise now; `make fixtures` remakes the answers",
                path.display()
            );
            asked += 1;
        }
    }
    assert!(
        asked >= 2 * ASKED_AGAIN.len(),
        "only {asked} answers checked"
    );
}

#[test]
fn gzip_captures_are_read_by_tshark_itself() {
    if !common::need("tshark", tshark::available()) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("conntrace-gz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = common::root().join("fixtures/curl-close.pcap");
    let gz = dir.join("curl-close.pcap.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    std::io::copy(&mut std::fs::File::open(&plain).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap();
    let a = tshark::reference(&plain).unwrap();
    let b = tshark::reference(Path::new(&gz)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(a.streams, b.streams);
}

/// Captures where tshark's conversation table leaves out frames that its
/// per-frame fields put in a stream, and why. The fold keeps them.
const CONVERSATION_TABLE_GAPS: &[(&str, &str)] = &[(
    "zeek/tcp/truncated-header.pcap",
    "frame 1 (the SYN) has its options cut by the snap length; tshark's TCP dissector \
     throws before the conversation tap runs, so the table starts at frame 2 (and \
     calls the server A), while tcp.stream puts frame 1 in stream 0",
)];

/// The per-frame fold in `common::tshark` agrees with tshark's own
/// conversation table on every fixture and corpus capture: same conversations,
/// same frames per direction, same bytes where tshark prints them exactly.
#[test]
fn tshark_reference_agrees_with_tshark_conversation_table() {
    if !common::need("tshark", tshark::available()) {
        return;
    }
    let mut files = common::fixtures();
    let corpus = common::corpus_dir();
    match &corpus {
        Some(dir) => files.extend(common::captures_under(dir)),
        None => eprintln!("the shared corpus is absent: checking the fixtures only"),
    }
    let results = common::par_map(&files, |file| {
        let name = match &corpus {
            Some(dir) if file.starts_with(dir) => common::display_name(file, dir),
            _ => common::display_name(file, &common::root()),
        };
        let reference = tshark::reference(file).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut fold: Vec<_> = reference
            .streams
            .values()
            .map(|s| s.as_conversation())
            .collect();
        let mut table = tshark::conversations(file).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Where tshark prints kB, compare frames only.
        for c in fold.iter_mut() {
            let exact = table.iter().any(|t| {
                t.a == c.a && t.b == c.b && t.bytes_a_to_b.is_some() && t.bytes_b_to_a.is_some()
            });
            if !exact {
                c.bytes_a_to_b = None;
                c.bytes_b_to_a = None;
            }
        }
        for t in table.iter_mut() {
            if !fold
                .iter()
                .any(|c| c.a == t.a && c.b == t.b && c.bytes_a_to_b.is_some())
            {
                t.bytes_a_to_b = None;
                t.bytes_b_to_a = None;
            }
        }
        fold.sort();
        table.sort();
        let gap = CONVERSATION_TABLE_GAPS.iter().any(|(f, _)| *f == name);
        match (fold == table, gap) {
            (true, false) | (false, true) => None,
            (true, true) => Some(format!(
                "{name}: listed in CONVERSATION_TABLE_GAPS but agrees now"
            )),
            (false, false) => Some(format!("{name}:\n  fold:  {fold:?}\n  table: {table:?}")),
        }
    });
    let wrong: Vec<String> = results.into_iter().flatten().collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
