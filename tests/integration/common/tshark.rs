//! The reference: what tshark says about every TCP stream of a capture, in
//! tshark's own terms, for the cross-check and the golden tests to hold
//! conntrace to.
//!
//! One `tshark -r FILE -T fields ... -Y tcp` run gives, per frame, the stream
//! number (`tcp.stream`), both endpoints, the frame length, the TCP payload
//! length and the SYN/ACK/FIN/RST flags. Folding those frames per stream and per
//! sending endpoint gives the numbers `tshark -z conv,tcp` prints (frames and
//! bytes per direction) plus the handshake and close flags.
//!
//! Two things tshark does that a packet-level TCP tracker does not:
//! - tshark also dissects TCP headers quoted *inside* other payloads (sFlow
//!   samples carry headers of other flows; ICMP errors quote the offending
//!   segment) and gives them `tcp.stream` numbers. A frame whose first TCP
//!   layer sits above UDP or ICMP is not a TCP segment on the wire; it is left
//!   out here and reported in [`Reference::quoted_frames`].
//! - For IP-in-IP and similar tunnels tshark lists every IP layer; the
//!   endpoints of the TCP connection are the innermost (last) ones.
//!
//! Streams are numbered by tshark in the order of their first frame; a SYN with
//! a new ISN on a 4-tuple whose connection has closed starts a new stream.
//! tshark reads gzip-compressed captures itself.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

const FIELDS: &[&str] = &[
    "frame.number",
    "tcp.stream",
    "ip.src",
    "ipv6.src",
    "tcp.srcport",
    "ip.dst",
    "ipv6.dst",
    "tcp.dstport",
    "frame.len",
    "tcp.len",
    "tcp.flags.syn",
    "tcp.flags.ack",
    "tcp.flags.fin",
    "tcp.flags.reset",
    "frame.protocols",
    "frame.time_epoch",
];

/// Layers that, met before the first TCP layer, mean the TCP header is quoted
/// inside another protocol's payload rather than carried by the frame.
const QUOTING_LAYERS: &[&str] = &["udp", "icmp", "icmpv6", "sflow"];

/// The packets one endpoint of a stream sent, as tshark counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub addr: SocketAddr,
    pub packets: u64,
    /// Sum of `frame.len` (bytes on the wire, as `-z conv,tcp` counts them).
    pub bytes: u64,
    /// Sum of `tcp.len` (TCP payload, from the IP header's length).
    pub payload: u64,
    /// SYN without ACK.
    pub syn: u32,
    /// SYN with ACK.
    pub syn_ack: u32,
    pub fin: u32,
    pub rst: u32,
}

impl Side {
    fn new(addr: SocketAddr) -> Side {
        Side {
            addr,
            packets: 0,
            bytes: 0,
            payload: 0,
            syn: 0,
            syn_ack: 0,
            fin: 0,
            rst: 0,
        }
    }
}

/// One `tcp.stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub stream: u64,
    pub first_frame: u64,
    /// Earliest and latest frame time, in nanoseconds since the Unix epoch
    /// (frames are not always in time order).
    pub first_time_ns: i128,
    pub last_time_ns: i128,
    /// The sender of the first frame with FIN or RST, if any.
    pub first_close: Option<SocketAddr>,
    /// `sides[0]` sent the stream's first frame. A stream whose frames all go
    /// one way has a second side with zero packets.
    pub sides: [Side; 2],
}

impl Stream {
    /// The side with this address, if it is one of the two.
    pub fn side(&self, addr: SocketAddr) -> Option<&Side> {
        self.sides.iter().find(|s| s.addr == addr)
    }

    /// The endpoint that opened the connection, when tshark's flags say so
    /// without doubt: the only side that sent a SYN without ACK, or else the
    /// side that received the only SYN+ACK.
    pub fn opener(&self) -> Option<SocketAddr> {
        let [a, b] = &self.sides;
        match (a.syn > 0, b.syn > 0) {
            (true, false) => return Some(a.addr),
            (false, true) => return Some(b.addr),
            (true, true) => return None,
            (false, false) => {}
        }
        match (a.syn_ack > 0, b.syn_ack > 0) {
            (true, false) => Some(b.addr),
            (false, true) => Some(a.addr),
            _ => None,
        }
    }
}

/// Everything tshark says about the TCP streams of one capture.
#[derive(Debug, Clone, Default)]
pub struct Reference {
    pub streams: BTreeMap<u64, Stream>,
    /// Frames tshark decoded as TCP only inside another payload (see the
    /// module documentation), with the stream numbers tshark gave them.
    pub quoted_frames: Vec<(u64, Vec<u64>)>,
    /// What tshark printed on stderr, apart from its warning about running as
    /// root (for example "appears to have been cut short").
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub enum Error {
    /// tshark could not be started (not installed).
    Spawn(std::io::Error),
    /// tshark ran and failed without printing any frame.
    Failed { status: String, stderr: String },
    /// A line of tshark's output that does not have the expected shape.
    Parse { line: String, why: String },
    /// A committed answer that is missing or stale, or an earlier failure.
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Spawn(e) => write!(f, "cannot run tshark: {e}"),
            Error::Failed { status, stderr } => write!(f, "tshark failed ({status}): {stderr}"),
            Error::Parse { line, why } => write!(f, "unexpected tshark line ({why}): {line:?}"),
            Error::Other(why) => f.write_str(why),
        }
    }
}

/// Whether a usable tshark is on the PATH.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("tshark")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// What one run of tshark printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Whether tshark exited with status 0.
    pub success: bool,
    pub stdout: String,
    /// Standard error without the "Running as user" notice and blank lines.
    pub warnings: Vec<String>,
}

/// Where the committed answer of tshark to `args` on a fixture lives: one
/// file per fixture and query, under `fixtures/tshark/`.
pub fn committed_path(file: &Path, query: &str) -> Option<PathBuf> {
    let dir = super::root().join("fixtures");
    let name = file.strip_prefix(&dir).ok()?.to_str()?;
    Some(dir.join("tshark").join(format!("{name}.{query}.txt")))
}

/// tshark's answer to `tshark -r FILE ARGS`, asked once per process.
///
/// For a fixture the answer is read from the file committed under
/// `fixtures/tshark/` (see [`committed_path`]; `make fixtures` remakes them by
/// running the tests with `CONNTRACE_TSHARK_REFRESH=1`, which asks tshark and
/// writes the files). The file records the arguments, so a query changed in the
/// tests and not remade fails with a message saying so. Every other capture
/// (the corpus, extra captures) is given to tshark itself.
pub fn run(file: &Path, query: &str, args: &[String]) -> Result<Output, Error> {
    type Memo = Mutex<HashMap<(PathBuf, String), Arc<OnceLock<Result<Output, String>>>>>;
    static MEMO: OnceLock<Memo> = OnceLock::new();
    let cell = MEMO
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry((file.to_path_buf(), query.to_owned()))
        .or_default()
        .clone();
    cell.get_or_init(|| answer(file, query, args).map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Other)
}

fn answer(file: &Path, query: &str, args: &[String]) -> Result<Output, Error> {
    let Some(committed) = committed_path(file, query) else {
        return ask(file, args);
    };
    if std::env::var_os("CONNTRACE_TSHARK_REFRESH").is_some() {
        let output = ask(file, args)?;
        std::fs::create_dir_all(committed.parent().unwrap()).map_err(Error::Spawn)?;
        std::fs::write(&committed, encode(args, &output)).map_err(Error::Spawn)?;
        return Ok(output);
    }
    let text = std::fs::read_to_string(&committed).map_err(|e| {
        Error::Other(format!(
            "{}: {e}; `make fixtures` (or CONNTRACE_TSHARK_REFRESH=1 cargo test) writes it",
            committed.display()
        ))
    })?;
    let (recorded, output) = decode(&text).ok_or_else(|| {
        Error::Other(format!("{}: not a tshark answer file", committed.display()))
    })?;
    if recorded != args {
        return Err(Error::Other(format!(
            "{} answers `tshark {}`, the test asks `tshark {}`: remake it with \
             CONNTRACE_TSHARK_REFRESH=1 cargo test",
            committed.display(),
            recorded.join(" "),
            args.join(" ")
        )));
    }
    Ok(output)
}

/// Runs tshark now, whatever is committed.
pub fn ask(file: &Path, args: &[String]) -> Result<Output, Error> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .map_err(Error::Spawn)?;
    Ok(Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        warnings: String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("Running as user"))
            .map(str::to_owned)
            .collect(),
    })
}

/// The committed form: a header of JSON lines (the arguments, the exit, the
/// warnings), a `--` line, then standard output byte for byte.
fn encode(args: &[String], output: &Output) -> String {
    let header = serde_json::json!({
        "args": args,
        "success": output.success,
        "warnings": output.warnings,
    });
    format!("{header}\n--\n{}", output.stdout)
}

/// The arguments and answer recorded in a committed answer file.
pub fn recorded(committed: &Path) -> Option<(Vec<String>, Output)> {
    decode(&std::fs::read_to_string(committed).ok()?)
}

fn decode(text: &str) -> Option<(Vec<String>, Output)> {
    let (header, stdout) = text.split_once("\n--\n")?;
    let header: serde_json::Value = serde_json::from_str(header).ok()?;
    let strings = |key: &str| -> Option<Vec<String>> {
        header[key]
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    Some((
        strings("args")?,
        Output {
            success: header["success"].as_bool()?,
            stdout: stdout.to_owned(),
            warnings: strings("warnings")?,
        },
    ))
}

/// The arguments of the per-frame query [`reference`] folds.
fn reference_args() -> Vec<String> {
    let mut args: Vec<String> = [
        "-n",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]
    .map(String::from)
    .to_vec();
    for field in FIELDS {
        args.push("-e".into());
        args.push((*field).into());
    }
    args.push("-Y".into());
    args.push("tcp".into());
    args
}

/// tshark's frames of `file` folded into streams.
pub fn reference(file: &Path) -> Result<Reference, Error> {
    let out = run(file, "frames", &reference_args())?;
    // tshark exits non-zero on a capture cut short but still prints every
    // frame before the cut; only a run that printed nothing is a failure.
    if !out.success && out.stdout.trim().is_empty() {
        return Err(Error::Failed {
            status: "non-zero".into(),
            stderr: out.warnings.join(" / "),
        });
    }
    let mut reference = parse(&out.stdout)?;
    reference.warnings = out.warnings;
    Ok(reference)
}

/// Folds tshark's tab-separated field lines (in [`FIELDS`] order) into streams.
pub fn parse(text: &str) -> Result<Reference, Error> {
    let mut reference = Reference::default();
    for line in text.lines().filter(|l| !l.is_empty()) {
        match Frame::parse(line)? {
            Parsed::Frame(frame) => reference.add(frame),
            Parsed::Quoted { number, streams } => reference.quoted_frames.push((number, streams)),
        }
    }
    Ok(reference)
}

struct Frame {
    number: u64,
    time_ns: i128,
    stream: u64,
    src: SocketAddr,
    dst: SocketAddr,
    len: u64,
    payload: u64,
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
}

enum Parsed {
    Frame(Frame),
    Quoted { number: u64, streams: Vec<u64> },
}

impl Frame {
    fn parse(line: &str) -> Result<Parsed, Error> {
        let bad = |why: &str| Error::Parse {
            line: line.to_owned(),
            why: why.to_owned(),
        };
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != FIELDS.len() {
            return Err(bad("wrong number of columns"));
        }
        let col = |name: &str| cols[FIELDS.iter().position(|f| *f == name).expect("known field")];
        let number: u64 = col("frame.number")
            .parse()
            .map_err(|_| bad("frame.number"))?;

        let protocols: Vec<&str> = col("frame.protocols").split(':').collect();
        let first_tcp = protocols.iter().position(|p| *p == "tcp");
        let quoted =
            first_tcp.is_none_or(|at| protocols[..at].iter().any(|p| QUOTING_LAYERS.contains(p)));
        if quoted {
            let streams = values(col("tcp.stream"))
                .map(|v| v.parse().map_err(|_| bad("tcp.stream")))
                .collect::<Result<_, _>>()?;
            return Ok(Parsed::Quoted { number, streams });
        }
        let first_tcp = first_tcp.expect("checked above");
        // The innermost IP layer below the TCP layer decides the family; its
        // addresses are the last values of that family's fields.
        let v6 = protocols[..first_tcp]
            .iter()
            .rev()
            .find(|p| **p == "ip" || **p == "ipv6")
            .is_some_and(|p| *p == "ipv6");
        let (src_field, dst_field) = if v6 {
            ("ipv6.src", "ipv6.dst")
        } else {
            ("ip.src", "ip.dst")
        };
        let ip = |field: &str| -> Result<IpAddr, Error> {
            values(col(field))
                .last()
                .ok_or_else(|| bad(field))?
                .parse()
                .map_err(|_| bad(field))
        };
        // A frame quoting further TCP headers after its own (rare) lists those
        // too: the frame's own TCP layer is the first.
        let first = |field: &str| -> Result<u64, Error> {
            values(col(field))
                .next()
                .ok_or_else(|| bad(field))?
                .parse()
                .map_err(|_| bad(field))
        };
        let flag = |field: &str| -> Result<bool, Error> {
            match values(col(field)).next() {
                Some("1") | Some("True") => Ok(true),
                Some("0") | Some("False") | None => Ok(false),
                Some(_) => Err(bad(field)),
            }
        };
        let port = |field: &str| -> Result<u16, Error> {
            u16::try_from(first(field)?).map_err(|_| bad(field))
        };
        Ok(Parsed::Frame(Frame {
            number,
            time_ns: parse_epoch(col("frame.time_epoch")).ok_or_else(|| bad("frame.time_epoch"))?,
            stream: first("tcp.stream")?,
            src: SocketAddr::new(ip(src_field)?, port("tcp.srcport")?),
            dst: SocketAddr::new(ip(dst_field)?, port("tcp.dstport")?),
            len: first("frame.len")?,
            // A header cut short by the snap length leaves tcp.len empty.
            payload: values(col("tcp.len"))
                .next()
                .map_or(Ok(0), |v| v.parse().map_err(|_| bad("tcp.len")))?,
            syn: flag("tcp.flags.syn")?,
            ack: flag("tcp.flags.ack")?,
            fin: flag("tcp.flags.fin")?,
            rst: flag("tcp.flags.reset")?,
        }))
    }
}

/// "1795268267.304371000" -> nanoseconds, without a float's rounding.
fn parse_epoch(s: &str) -> Option<i128> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let negative = secs.starts_with('-');
    let secs: i128 = secs.parse().ok()?;
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: i128 = digits.parse().ok()?;
    Some(if negative {
        secs * 1_000_000_000 - nanos
    } else {
        secs * 1_000_000_000 + nanos
    })
}

fn values(col: &str) -> impl Iterator<Item = &str> {
    col.split(',').filter(|v| !v.is_empty())
}

impl Reference {
    fn add(&mut self, frame: Frame) {
        let stream = self.streams.entry(frame.stream).or_insert_with(|| Stream {
            stream: frame.stream,
            first_frame: frame.number,
            first_time_ns: frame.time_ns,
            last_time_ns: frame.time_ns,
            first_close: None,
            sides: [Side::new(frame.src), Side::new(frame.dst)],
        });
        stream.first_time_ns = stream.first_time_ns.min(frame.time_ns);
        stream.last_time_ns = stream.last_time_ns.max(frame.time_ns);
        if stream.first_close.is_none() && (frame.fin || frame.rst) {
            stream.first_close = Some(frame.src);
        }
        let side = if stream.sides[0].addr == frame.src {
            &mut stream.sides[0]
        } else {
            &mut stream.sides[1]
        };
        side.packets += 1;
        side.bytes += frame.len;
        side.payload += frame.payload;
        if frame.syn && frame.ack {
            side.syn_ack += 1;
        } else if frame.syn {
            side.syn += 1;
        }
        side.fin += u32::from(frame.fin);
        side.rst += u32::from(frame.rst);
    }
}

/// One row of `tshark -q -z conv,tcp`: A is the source of the conversation's
/// first frame. tshark prints bytes with units ("13 kB") once they pass 10 kB,
/// so only small byte counts are exact.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conversation {
    pub a: SocketAddr,
    pub b: SocketAddr,
    pub frames_a_to_b: u64,
    pub frames_b_to_a: u64,
    pub bytes_a_to_b: Option<u64>,
    pub bytes_b_to_a: Option<u64>,
}

impl Stream {
    /// This stream as a row of tshark's conversation table.
    pub fn as_conversation(&self) -> Conversation {
        let [a, b] = &self.sides;
        Conversation {
            a: a.addr,
            b: b.addr,
            frames_a_to_b: a.packets,
            frames_b_to_a: b.packets,
            bytes_a_to_b: Some(a.bytes),
            bytes_b_to_a: Some(b.bytes),
        }
    }
}

/// tshark's conversation table (`tshark -n -q -z conv,tcp`) of `file`. For a
/// corpus capture the table stored with the corpus (`tshark/SOURCE/FILE.conv_tcp.txt`,
/// the same command without `-n`; the corpus has no names to resolve) is read
/// instead of asking tshark again.
pub fn conversations(file: &Path) -> Result<Vec<Conversation>, Error> {
    let text = match stored(file, "conv_tcp") {
        Some(text) => text,
        None => {
            run(
                file,
                "conv",
                &["-n", "-q", "-z", "conv,tcp"].map(String::from),
            )?
            .stdout
        }
    };
    text.lines()
        .filter(|l| l.contains("<->"))
        .map(parse_conversation)
        .collect()
}

/// An answer of tshark's stored with the corpus for a corpus capture:
/// `tshark/SOURCE/FILE.KIND.txt` (the commands are in the corpus's INDEX.md).
pub fn stored(file: &Path, kind: &str) -> Option<String> {
    let files = super::corpus_dir()?;
    let relative = file.strip_prefix(&files).ok()?;
    let mut stored = files
        .parent()?
        .join("tshark")
        .join(relative)
        .into_os_string();
    stored.push(format!(".{kind}.txt"));
    std::fs::read_to_string(stored).ok()
}

fn parse_conversation(line: &str) -> Result<Conversation, Error> {
    let bad = |why: &str| Error::Parse {
        line: line.to_owned(),
        why: why.to_owned(),
    };
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() < 12 || t[1] != "<->" {
        return Err(bad("not a conversation row"));
    }
    // IPv6 endpoints are printed as "2001:db8::1:80": the port follows the last colon.
    let endpoint = |s: &str| -> Result<SocketAddr, Error> {
        let (ip, port) = s.rsplit_once(':').ok_or_else(|| bad("endpoint"))?;
        let ip: IpAddr = ip.parse().map_err(|_| bad("address"))?;
        Ok(SocketAddr::new(ip, port.parse().map_err(|_| bad("port"))?))
    };
    let number = |s: &str| -> Result<u64, Error> { s.parse().map_err(|_| bad("count")) };
    let bytes = |n: &str, unit: &str| -> Result<Option<u64>, Error> {
        Ok((unit == "bytes").then_some(number(n)?))
    };
    Ok(Conversation {
        a: endpoint(t[0])?,
        b: endpoint(t[2])?,
        frames_b_to_a: number(t[3])?,
        bytes_b_to_a: bytes(t[4], t[5])?,
        frames_a_to_b: number(t[6])?,
        bytes_a_to_b: bytes(t[7], t[8])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line of tshark's output (in [`FIELDS`] order) for a plain IPv4 or
    /// IPv6 frame; `flags` holds S, A, F and R as set.
    fn frame(
        number: u32,
        stream: u32,
        (src, dst): (&str, &str),
        (len, tcp_len): (u32, u32),
        flags: &str,
        time: &str,
    ) -> String {
        let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let ip_cols = |a: SocketAddr| {
            if a.is_ipv4() {
                (a.ip().to_string(), String::new())
            } else {
                (String::new(), a.ip().to_string())
            }
        };
        let bit = |c: char| if flags.contains(c) { "1" } else { "0" };
        let (s4, s6) = ip_cols(src);
        let (d4, d6) = ip_cols(dst);
        let protocols = if src.is_ipv4() {
            "eth:ethertype:ip:tcp"
        } else {
            "null:ipv6:tcp"
        };
        [
            number.to_string(),
            stream.to_string(),
            s4,
            s6,
            src.port().to_string(),
            d4,
            d6,
            dst.port().to_string(),
            len.to_string(),
            tcp_len.to_string(),
            bit('S').into(),
            bit('A').into(),
            bit('F').into(),
            bit('R').into(),
            protocols.into(),
            time.into(),
        ]
        .join("\t")
    }

    #[test]
    fn folds_frames_per_stream_and_side() {
        let c = "10.0.0.1:40000";
        let s = "10.0.0.2:80";
        let text = [
            frame(1, 0, (c, s), (74, 0), "S", "10.5"),
            frame(2, 0, (s, c), (74, 0), "SA", "10.500001"),
            frame(3, 0, (c, s), (120, 54), "AF", "10.4"),
            frame(4, 1, ("[::1]:40001", "[::1]:80"), (94, 0), "S", "11"),
            frame(
                5,
                1,
                ("[::1]:80", "[::1]:40001"),
                (74, 0),
                "AR",
                "11.000000002",
            ),
        ]
        .join("\n");
        let r = parse(&text).unwrap();
        assert_eq!(r.streams.len(), 2);
        let s0 = &r.streams[&0];
        let client = s0.side(c.parse().unwrap()).unwrap();
        assert_eq!((client.packets, client.bytes, client.payload), (2, 194, 54));
        assert_eq!(
            (client.syn, client.syn_ack, client.fin, client.rst),
            (1, 0, 1, 0)
        );
        let server = s0.side(s.parse().unwrap()).unwrap();
        assert_eq!((server.packets, server.syn, server.syn_ack), (1, 0, 1));
        assert_eq!(s0.opener(), Some(c.parse().unwrap()));
        assert_eq!(
            (s0.first_time_ns, s0.last_time_ns),
            (10_400_000_000, 10_500_001_000)
        );
        assert_eq!(s0.first_close, Some(c.parse().unwrap()));
        let s1 = &r.streams[&1];
        assert_eq!(s1.sides[1].addr, "[::1]:80".parse().unwrap());
        assert_eq!(s1.sides[1].rst, 1);
        assert_eq!(s1.first_close, Some("[::1]:80".parse().unwrap()));
        assert_eq!(s1.last_time_ns, 11_000_000_002);
    }

    #[test]
    fn tunnelled_frames_use_the_innermost_addresses() {
        let cols = [
            "1",
            "0",
            "192.0.2.1,10.0.0.1",
            "",
            "40000",
            "192.0.2.2,10.0.0.2",
            "",
            "80",
            "94",
            "0",
            "1",
            "0",
            "0",
            "0",
            "eth:ethertype:ip:ip:tcp",
            "1.0",
        ];
        let r = parse(&cols.join("\t")).unwrap();
        assert_eq!(
            r.streams[&0].sides[0].addr,
            "10.0.0.1:40000".parse().unwrap()
        );
        assert_eq!(r.streams[&0].sides[1].addr, "10.0.0.2:80".parse().unwrap());
    }

    #[test]
    fn tcp_headers_quoted_inside_udp_are_not_frames_of_a_stream() {
        let cols = [
            "66",
            "1,2",
            "10.0.0.9,10.0.0.1,10.0.0.3",
            "",
            "443,80",
            "10.0.0.8,10.0.0.2,10.0.0.4",
            "",
            "5000,6000",
            "1318",
            "",
            "0,0",
            "1,1",
            "0,1",
            "0,0",
            "eth:ethertype:ip:udp:sflow:eth:ethertype:ip:tcp:eth:ethertype:ip:tcp",
            "1.0",
        ];
        let r = parse(&cols.join("\t")).unwrap();
        assert!(r.streams.is_empty());
        assert_eq!(r.quoted_frames, vec![(66, vec![1, 2])]);
    }

    #[test]
    fn a_stream_seen_only_from_the_server_has_the_client_as_second_side() {
        let r = parse(&frame(
            1,
            0,
            ("10.0.0.2:80", "10.0.0.1:40000"),
            (74, 0),
            "SA",
            "1",
        ))
        .unwrap();
        let s = &r.streams[&0];
        assert_eq!(s.sides[1].packets, 0);
        assert_eq!(s.opener(), Some("10.0.0.1:40000".parse().unwrap()));
    }

    #[test]
    fn epoch_times_keep_every_digit() {
        assert_eq!(
            parse_epoch("1795268267.304371000"),
            Some(1_795_268_267_304_371_000)
        );
        assert_eq!(parse_epoch("5.1"), Some(5_100_000_000));
        assert_eq!(parse_epoch("7"), Some(7_000_000_000));
        assert_eq!(parse_epoch("x"), None);
    }

    #[test]
    fn conversation_rows_parse_with_ipv6_endpoints_and_units() {
        let row = "2001:618:400::5199:cc70:35995 <-> 2001:618:1:8000::5:80           12 13 kB          16 2323 bytes      28 15 kB         0.000000000         1.5845";
        let c = parse_conversation(row).unwrap();
        assert_eq!(c.a, "[2001:618:400::5199:cc70]:35995".parse().unwrap());
        assert_eq!(c.b, "[2001:618:1:8000::5]:80".parse().unwrap());
        assert_eq!((c.frames_b_to_a, c.bytes_b_to_a), (12, None));
        assert_eq!((c.frames_a_to_b, c.bytes_a_to_b), (16, Some(2323)));
    }

    #[test]
    fn a_line_with_missing_columns_is_an_error() {
        assert!(matches!(parse("1\t0\t10.0.0.1"), Err(Error::Parse { .. })));
    }
}
