//! The command line: clap for syntax, then one validated configuration per
//! command before any work starts (durations parsed, filter compiled, files
//! checked), then the command itself. `main` only maps errors to exit codes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use std::time::Duration;

use crate::document::{JsonDocumentSink, Opener};
use crate::exit::{Exit, Refused, EXIT_CODES};
use crate::fleet::{self, EachDataset, Keep, ParquetSink};
use crate::flow::Expiry;
use crate::jsonl::JsonlSink;
use crate::live::args::{parse_duration, parse_timeout, DemoArgs, RunArgs, ServeArgs};
use crate::pipeline::{
    check_filter, replay_into, Pipeline, PipelineOptions, ReaderKind, ReplayError, ReplayOptions,
};
use crate::render::{write_report, Format, RenderOptions, RequestRows};
use crate::source::is_stdin;

use crate::report::Report;

/// Shows, packet by packet, which HTTP requests reused a TCP connection and why
/// the others did not.
#[derive(Debug, Parser)]
#[command(name = "conntrace", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read saved captures (.pcap, .pcapng, optionally gzip-compressed) and report
    /// every TCP connection and the HTTP requests each carried. Needs no privileges.
    #[command(after_help = REPLAY_EXAMPLES)]
    Replay(ReplayArgs),
    /// Issue HTTP requests while capturing them on the interface that reaches the
    /// target, and report which requests reused a connection. Capturing needs
    /// root or the capture capabilities; --no-capture runs without.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// The built-in test server (HTTP/1.1 and h2c, or HTTPS) with keep-alive knobs.
    Serve(ServeArgs),
    /// Run the reuse experiments against the built-in server, captured on
    /// loopback, each with a verdict from what was captured. Needs root.
    #[command(after_help = crate::live::demo::Experiment::help())]
    Demo(DemoArgs),
    /// Measure a server's keep-alive limits on the wire: its idle timeout (one
    /// request, then the wait for its FIN or RST, timed from the end of the
    /// response in the capture) and the requests it allows per connection,
    /// with the client settings that avoid the stale-connection race. Needs
    /// root or the capture capabilities.
    Probe(crate::live::args::ProbeArgs),
    /// Run the same load once over HTTP/1.1 and once over HTTP/2, each
    /// captured, and show them side by side: connections, SYNs, requests per
    /// connection, streams and handshake time. Needs root or the capture
    /// capabilities.
    Compare(crate::live::args::CompareArgs),
    /// Run a command and report its connections only (and its children's),
    /// as replay does: its packets are told apart in the kernel at socket
    /// birth (cgroup v2, nftables, NFLOG). The command keeps the terminal;
    /// the report goes to standard error or -o FILE. Exits with the
    /// command's status. Needs root; under sudo the command runs as the
    /// invoking user.
    #[command(after_help = AUDIT_EXAMPLES)]
    Audit(AuditArgs),
    /// Capture whatever passes on an interface (any client, any process) until
    /// Ctrl-C, SIGTERM or --duration, then report as replay does; with
    /// --format jsonl the records stream out as connections are finalised.
    /// Needs root or the capture capabilities.
    Watch(WatchArgs),
    /// The kernel's TCP sockets by state, as `ss -tan` lists them (netlink
    /// sock_diag); with ADDRESS[:PORT], the sockets to that server, with
    /// TIME-WAIT counted against the ephemeral port range and CLOSE-WAIT
    /// named. Needs no privileges.
    Sockets(SocketsArgs),
}

const RUN_EXAMPLES: &str = "\
Examples:
  sudo conntrace run http://127.0.0.1:8080/ -n 100 -c 10
  sudo conntrace run http://127.0.0.1:8080/ -n 10 --no-drain      (bodies dropped unread)
  sudo conntrace run https://localhost:8443/ -k --http2 -w run.pcap --keylog keys.txt
  conntrace run http://127.0.0.1:8080/ --no-capture                (no privileges)

Every request carries `x-conntrace-id: N`; over cleartext it is found in the
packets and checked against the connection's local port. Ctrl-C, SIGTERM or
SIGHUP stops issuing requests and still reports; a second one stops waiting for
connections to close. Exits 4 when a request failed (conntrace --help lists
every exit code).";

const REPLAY_EXAMPLES: &str = "\
Examples:
  conntrace replay capture.pcap
  conntrace replay a.pcap b.pcapng.gz --format json -o report.json
  conntrace replay -r capture.pcap                        (as tcpdump and tshark take it)
  tcpdump -i eth0 -w - | conntrace replay -                (standard input, also gzip)
  conntrace replay capture.pcap -- tcp port 8080          (tcpdump-style filter)
  conntrace replay capture.pcap --format markdown | pbcopy   (paste into a bug report)
  conntrace replay huge.pcap -f jsonl | jq -c 'select(.type == \"request\")'   (rows as they finish)
  conntrace replay --each captures/*.pcap -f parquet -o ds/   (one dataset, rows tagged by file)
  conntrace replay --each a.pcap b.pcap                    (a report per file, as tail -n +1 heads them)

Stream numbers equal Wireshark's tcp.stream for the same capture, so a row can
be opened with the display filter `tcp.stream == N`.";

const AUDIT_EXAMPLES: &str = "\
Examples:
  sudo conntrace audit -- ./my-client --flags
  sudo conntrace audit -f json -o report.json -- python3 job.py
  sudo conntrace audit -w client.pcap -- go run ./cmd/load     (only its packets saved)
  conntrace audit --filter 'tcp port 8080' -- ./client   (no cgroup/nftables: by filter)

Only the command's packets are captured: a cgroup v2 of its own, an nftables
rule that labels the connections of sockets in it, and NFLOG that hands their
packets to conntrace; everything is removed when it ends (and, after a run
killed with SIGKILL, by the next). Where that cannot be set up (no root, no
cgroup v2, no nft), --filter captures by BPF filter instead and the report
says it may include other processes. Ctrl-C at the terminal reaches the
command; SIGTERM and SIGHUP sent to conntrace are passed on to it. Then
conntrace waits up to --linger for its connections to close and reports.";

/// Options shared by every command that prints a report.
#[derive(Debug, Args, Clone)]
pub struct OutputArgs {
    /// Report format.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the report to FILE instead of standard output (`-f parquet`: a
    /// directory, created if missing, for connections.parquet and
    /// requests.parquet).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Request rows in table, Markdown and HTML reports: `auto` lists up to
    /// 200 requests (20,000 in HTML), then one row per connection.
    #[arg(long = "rows", alias = "requests", value_enum, default_value_t = RequestRows::Auto)]
    pub rows: RequestRows,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Capture files, read in order as one capture; `-` reads standard input
    /// (`tcpdump -w - | conntrace replay -`).
    #[arg(value_name = "FILE", required_unless_present = "read")]
    pub files: Vec<PathBuf>,
    /// Analyse each file on its own, several at once (up to one per CPU), and
    /// write one report per file in the order given: `-f jsonl` rows and `-f
    /// parquet` rows tagged with `source`, `-f json` an array of reports, the
    /// text formats a `==> FILE <==` line before each. A file that cannot be
    /// read is named on stderr, the others still reported, and the exit
    /// code is 2.
    #[arg(long)]
    pub each: bool,
    /// A capture file to read, as tcpdump and tshark take it (`-r -` for
    /// standard input); may be repeated. Read before the FILEs.
    #[arg(short = 'r', long = "read", value_name = "FILE")]
    pub read: Vec<PathBuf>,
    /// Only frames matching this BPF filter (tcpdump syntax); the same as
    /// giving the expression after `--`.
    #[arg(long, value_name = "EXPR", conflicts_with = "filter_words")]
    pub filter: Option<String>,
    /// A BPF filter after `--`, as tcpdump takes it: `-- tcp port 80`.
    #[arg(last = true, value_name = "FILTER")]
    pub filter_words: Vec<String>,
    /// Track TCP only; do not parse HTTP, h2c or TLS inside connections.
    #[arg(long)]
    pub no_http: bool,
    /// Which code reads the files: `native` also reads gzip-compressed
    /// captures and pcapng files mixing link types; `libpcap` is for comparison.
    #[arg(long, value_enum, default_value_t = ReaderKind::Native, hide = true)]
    pub reader: ReaderKind,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
}

#[derive(Debug, Args)]
pub struct SocketsArgs {
    /// Only sockets whose remote end is this address (and port), e.g.
    /// 10.0.0.1:443 or ::1.
    #[arg(value_name = "ADDRESS[:PORT]")]
    pub peer: Option<crate::live::sockets::Peer>,
    /// `table` (lines), or `json`.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// After the command ends, wait at most this long for its connections
    /// to close.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub linger: Duration,
    /// Run the command as root even under sudo (by default it runs as
    /// SUDO_USER, with SUDO_UID, SUDO_GID and that user's groups).
    #[arg(long)]
    pub as_root: bool,
    /// Where the command's packets cannot be told apart (no root, no cgroup
    /// v2, no nft): capture this BPF filter instead; the report then says it
    /// may include other processes.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// The interface for --filter capture.
    #[arg(short = 'i', long, value_name = "IFACE", default_value = "any")]
    pub interface: String,
    /// Save the command's packets to this pcap file (NFLOG link type;
    /// `conntrace replay FILE` and tshark read it).
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub savefile: Option<PathBuf>,
    /// Track TCP only; do not parse HTTP, h2c or TLS inside connections.
    #[arg(long)]
    pub no_http: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The interface to capture on (`any`: every interface).
    #[arg(short = 'i', long, value_name = "IFACE", default_value = "any")]
    pub interface: String,
    /// Stop after this long (e.g. 30s, 10m); without it, at Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Only packets matching this BPF filter (tcpdump syntax; `tcp` by
    /// default); the same as giving it after `--`.
    #[arg(long, value_name = "EXPR", conflicts_with = "filter_words")]
    pub filter: Option<String>,
    /// A BPF filter after `--`, as tcpdump takes it: `-- tcp port 80`.
    #[arg(last = true, value_name = "FILTER")]
    pub filter_words: Vec<String>,
    /// Save the captured packets to this pcap file.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub savefile: Option<PathBuf>,
    /// Track TCP only; do not parse HTTP, h2c or TLS inside connections.
    #[arg(long)]
    pub no_http: bool,
    /// No view of the tallies updating in place on standard error (shown
    /// once a second while it is a terminal).
    #[arg(long)]
    pub no_live: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
}

/// When the tracker lets a connection go, in capture time. Packets that come
/// for a connection already let go are counted as late (`tracker.late_packets`).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Connection expiry (capture time)")]
pub struct ExpiryArgs {
    /// A connection with no packet for this long is finalised (Zeek's
    /// tcp_inactivity_timeout).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    pub idle_timeout: Duration,
    /// A connection closed by an RST, or by a FIN from each side, is finalised
    /// this long after its last packet, so a retransmitted FIN or a late ACK
    /// still counts in it (Zeek's tcp_close_delay). Shorter holds less
    /// memory on captures of many short connections.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub close_grace: Duration,
    /// A SYN nobody answered is finalised this long after it (conntrack's
    /// SYN_SENT timeout; covers Linux's SYN retries).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_timeout)]
    pub syn_timeout: Duration,
    /// At most this many unanswered SYNs are held; beyond, the oldest is
    /// finalised early (conntrack's early_drop), so a SYN flood cannot
    /// exhaust memory.
    #[arg(long, value_name = "N", default_value_t = Expiry::default().max_unanswered)]
    pub max_unanswered: usize,
    /// At most this many closed connections are held in their grace period;
    /// beyond, the one closed first is finalised early, so a high rate of
    /// short connections holds bounded memory (`tracker.grace_cut`).
    #[arg(long, value_name = "N", default_value_t = Expiry::default().max_closing)]
    pub max_closing: usize,
}

impl ExpiryArgs {
    pub fn expiry(&self) -> Expiry {
        Expiry {
            idle: self.idle_timeout,
            close_grace: self.close_grace,
            unanswered: self.syn_timeout,
            max_unanswered: self.max_unanswered.max(1),
            max_closing: self.max_closing.max(1),
            tombstone: self.idle_timeout.max(self.syn_timeout),
            ..Expiry::default()
        }
    }
}

/// Run the parsed command; the [`Exit`] says how it ended when it ran to its end.
pub fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Replay(args) => replay(args),
        Command::Run(args) => crate::live::commands::run(args),
        Command::Serve(args) => crate::live::commands::serve(args),
        Command::Demo(args) => crate::live::commands::demo(args),
        Command::Probe(args) => crate::live::commands::probe(args),
        Command::Compare(args) => crate::live::commands::compare(args),
        Command::Audit(args) => audit(args),
        Command::Watch(args) => watch(args),
        Command::Sockets(args) => sockets(args),
    }
}

fn sockets(args: SocketsArgs) -> Result<Exit> {
    use crate::live::sockets;
    let all = sockets::tcp_sockets().context("cannot read the TCP sockets (netlink sock_diag)")?;
    let filter = args.peer.map(|p| match p.port {
        Some(port) => std::net::SocketAddr::new(p.ip, port).to_string(),
        None => p.ip.to_string(),
    });
    if args.format == Format::Parquet {
        return Err(
            Refused::bad_input("sockets: --format parquet is not supported (use json)").into(),
        );
    }
    let report = sockets::report(&all, args.peer, filter);
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json | Format::Jsonl => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        _ => {
            for line in crate::render::sockets_lines(&report) {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(Exit::Success)
}

fn audit(args: AuditArgs) -> Result<Exit> {
    use crate::live::audit::{AuditConfig, AuditError};
    use crate::live::capture::CaptureError;
    use crate::live::watch::Rows;
    if let Some(f) = &args.filter {
        check_filter(f).map_err(|e| Refused::bad_input(format!("bad filter {f:?}: {e}")))?;
    }
    let config = AuditConfig {
        argv: args.command.clone(),
        linger: args.linger,
        as_root: args.as_root,
        savefile: args.savefile.clone(),
        fallback_filter: args.filter.clone(),
        interface: args.interface.clone(),
        pipeline: PipelineOptions {
            http: !args.no_http,
            expiry: args.expiry.expiry(),
            diagnose: true,
        },
    };
    // Standard output is the command's: the report goes to -o or stderr.
    let open = || -> Result<Box<dyn Write + Send>> {
        Ok(match &args.output.output {
            Some(p) => Box::new(io::LineWriter::new(
                File::create(p).with_context(|| output_error(p))?,
            )),
            None => Box::new(io::LineWriter::new(io::stderr())),
        })
    };
    let rows = match args.output.format {
        Format::Jsonl => Rows::Stream(Box::new(JsonlSink::new(open()?))),
        Format::Summary => Rows::Count,
        _ => Rows::Keep,
    };
    let streaming = matches!(rows, Rows::Stream(_));
    let outcome = match crate::live::audit::audit(&config, rows) {
        Ok(o) => o,
        Err(AuditError::Capture(e @ CaptureError::Permission { .. })) => {
            return Err(Refused::no_privilege(e.to_string()).into())
        }
        Err(e @ AuditError::Attribution(_)) => {
            return Err(Refused::no_privilege(e.to_string()).into())
        }
        Err(e @ AuditError::Spawn { .. }) => return Err(Refused::bad_input(e.to_string()).into()),
        Err(e) => return Err(e.into()),
    };
    let report = &outcome.report;
    let options = RenderOptions {
        format: args.output.format,
        requests: args.output.rows,
    };
    // Streamed rows end with the summary line the sink wrote.
    if !streaming {
        let mut out = open()?;
        write_report(report, &options, &mut out)
            .and_then(|()| out.flush())
            .context("cannot write the report")?;
    }
    use std::os::unix::process::ExitStatusExt;
    let status = &outcome.status;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(Exit::Command(u8::try_from(code).unwrap_or(1)))
}

fn watch(args: WatchArgs) -> Result<Exit> {
    use crate::live::capture::CaptureError;
    use crate::live::watch::{Rows, WatchConfig};
    let filter = match (&args.filter, args.filter_words.is_empty()) {
        (Some(f), _) => f.clone(),
        (None, false) => args.filter_words.join(" "),
        (None, true) => "tcp".to_string(),
    };
    check_filter(&filter).map_err(|e| Refused::bad_input(format!("bad filter {filter:?}: {e}")))?;
    fleet::check_output(args.output.format, args.output.output.as_deref())?;
    let config = WatchConfig {
        interface: args.interface.clone(),
        filter,
        savefile: args.savefile.clone(),
        duration: args.duration,
        pipeline: PipelineOptions {
            http: !args.no_http,
            expiry: args.expiry.expiry(),
            diagnose: true,
        },
        live_view: !args.no_live && std::io::IsTerminal::is_terminal(&io::stderr()),
    };
    let rows = match args.output.format {
        // A line at a time, so that `watch -f jsonl | jq` sees each record
        // as its connection is finalised.
        Format::Jsonl => {
            let out: Box<dyn Write + Send> = match &args.output.output {
                Some(p) => Box::new(io::LineWriter::new(
                    File::create(p).with_context(|| output_error(p))?,
                )),
                None => Box::new(io::LineWriter::new(io::stdout())),
            };
            Rows::Stream(Box::new(JsonlSink::new(out)))
        }
        // Row groups as connections are finalised, tagged `host/interface`.
        Format::Parquet => {
            let dir = parquet_dir(&args.output)?;
            let source = format!("{}/{}", fleet::host_name(), args.interface);
            Rows::Stream(Box::new(
                ParquetSink::create(dir, source).with_context(|| output_error(dir))?,
            ))
        }
        Format::Summary => Rows::Count,
        _ => Rows::Keep,
    };
    let streaming = matches!(rows, Rows::Stream(_));
    let report = match crate::live::watch::watch(&config, rows) {
        Ok(r) => r,
        Err(e @ CaptureError::Permission { .. }) => {
            return Err(Refused::no_privilege(e.to_string()).into())
        }
        Err(e) => return Err(e.into()),
    };
    if !streaming {
        emit(&report, &args.output)?;
    }
    Ok(Exit::Success)
}

fn replay(args: ReplayArgs) -> Result<Exit> {
    let filter = match (&args.filter, args.filter_words.is_empty()) {
        (Some(f), _) => Some(f.clone()),
        (None, false) => Some(args.filter_words.join(" ")),
        (None, true) => None,
    };
    if let Some(f) = &filter {
        check_filter(f).map_err(|e| Refused::bad_input(format!("bad filter {f:?}: {e}")))?;
    }
    fleet::check_output(args.output.format, args.output.output.as_deref())?;
    let files: Vec<PathBuf> = args.read.iter().chain(&args.files).cloned().collect();
    if files.iter().filter(|f| is_stdin(f)).count() > 1 {
        return Err(Refused::bad_input("-: standard input can be read only once").into());
    }
    if args.each && matches!(args.output.format, Format::Svg | Format::Html) {
        return Err(Refused::bad_input(format!(
            "--each writes a report per file; --format {} holds one: replay the files one at a time",
            if args.output.format == Format::Svg { "svg" } else { "html" }
        ))
        .into());
    }
    for f in files.iter().filter(|_| !args.each) {
        if !is_stdin(f) && !f.exists() {
            return Err(Refused::bad_input(format!("{}: no such file", f.display())).into());
        }
    }
    let options = ReplayOptions {
        pipeline: PipelineOptions {
            http: !args.no_http,
            expiry: args.expiry.expiry(),
            diagnose: true,
        },
        filter,
        reader: args.reader,
        // Several bars at once would garble each other.
        progress: !args.each || files.len() == 1,
    };
    if args.each {
        return replay_each(&files, &options, &args.output);
    }
    match args.output.format {
        Format::Jsonl => {
            // Rows go out as connections finish; the summary line ends them.
            let out = open_output(&args.output.output)?;
            let pipeline = Pipeline::streaming(&options.pipeline, Box::new(JsonlSink::new(out)));
            replay_into(&files, &options, pipeline)?;
        }
        Format::Parquet => {
            // Row groups as connections finish, tagged with the file names.
            let dir = parquet_dir(&args.output)?;
            let source = files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(",");
            let sink = ParquetSink::create(dir, source).with_context(|| output_error(dir))?;
            let pipeline = Pipeline::streaming(&options.pipeline, Box::new(sink));
            replay_into(&files, &options, pipeline)?;
        }
        Format::Summary => {
            let pipeline = Pipeline::counting(&options.pipeline);
            let report = replay_into(&files, &options, pipeline)?;
            emit(&report, &args.output)?;
        }
        Format::Json => {
            // Rows kept compressed as connections finish; the document is
            // written from them at the end (nothing when the replay fails).
            let path = args.output.output.clone();
            let open: Opener = Box::new(move || {
                open_output(&path).map_err(|e| io::Error::other(format!("{e:#}")))
            });
            let sink = JsonDocumentSink::new(open);
            let pipeline = Pipeline::streaming(&options.pipeline, Box::new(sink));
            replay_into(&files, &options, pipeline)?;
        }
        _ => {
            let pipeline = Pipeline::new(&options.pipeline);
            let report = replay_into(&files, &options, pipeline)?;
            emit(&report, &args.output)?;
            // The process ends next: freeing every record of a large report
            // one by one would only cost time.
            std::mem::forget(report);
        }
    }
    Ok(Exit::Success)
}

/// `replay --each`: the files analysed apart, several at once, their reports
/// written in input order; [`Exit::BadInput`] if one could not be read.
fn replay_each(files: &[PathBuf], options: &ReplayOptions, output: &OutputArgs) -> Result<Exit> {
    let format = output.format;
    if format == Format::Parquet {
        return replay_each_parquet(files, options, output);
    }
    let keep = match format {
        Format::Summary => Keep::Tallies,
        _ => Keep::Rows,
    };
    let render = RenderOptions {
        format,
        requests: output.rows,
    };
    let mut out = open_output(&output.output)?;
    let mut failed = 0;
    let mut written = 0;
    let mut write = |path: &Path, report: &Report| -> io::Result<()> {
        let name = path.display().to_string();
        match format {
            Format::Jsonl => crate::jsonl::write_tagged(report, &name, &mut out)?,
            Format::Json => {
                out.write_all(if written == 0 { b"[\n" } else { b",\n" })?;
                serde_json::to_writer_pretty(&mut out, report)?;
            }
            _ => {
                if written > 0 {
                    writeln!(out)?;
                }
                writeln!(out, "==> {name} <==")?;
                write_report(report, &render, &mut out)?;
            }
        }
        written += 1;
        Ok(())
    };
    fleet::replay_each(
        files,
        |_, path| fleet::replay_report(path, options, keep),
        |path, outcome| {
            match outcome {
                Ok(report) => {
                    write(path, &report).with_context(|| written_error(&output.output))?
                }
                Err(e) => {
                    eprintln!("conntrace: {}", file_error(path, e));
                    failed += 1;
                }
            }
            Ok(())
        },
    )?;
    if format == Format::Json {
        out.write_all(if written == 0 { b"[\n]\n" } else { b"\n]\n" })?;
    }
    out.flush().with_context(|| written_error(&output.output))?;
    Ok(if failed > 0 {
        Exit::BadInput
    } else {
        Exit::Success
    })
}

/// `replay --each -f parquet -o DIR`: one dataset, every row tagged with the
/// file it came from, the files' rows in input order.
fn replay_each_parquet(
    files: &[PathBuf],
    options: &ReplayOptions,
    output: &OutputArgs,
) -> Result<Exit> {
    let dir = parquet_dir(output)?;
    let mut dataset = EachDataset::create(dir).with_context(|| output_error(dir))?;
    let spiller = dataset.spiller();
    let mut failed = 0;
    fleet::replay_each(
        files,
        |i, path| spiller.replay(i, path, &path.display().to_string(), options),
        |path, outcome| {
            match outcome {
                Ok((_, part)) => dataset
                    .add(&path.display().to_string(), part)
                    .with_context(|| output_error(dir))?,
                Err(e) => {
                    eprintln!("conntrace: {}", file_error(path, e));
                    failed += 1;
                }
            }
            Ok(())
        },
    )?;
    dataset.finish().with_context(|| output_error(dir))?;
    Ok(if failed > 0 {
        Exit::BadInput
    } else {
        Exit::Success
    })
}

/// One line naming the file that failed, and why.
fn file_error(path: &Path, e: ReplayError) -> String {
    let message = format!("{:#}", anyhow::Error::new(e));
    let name = path.display().to_string();
    if message.contains(&name) {
        message
    } else {
        format!("{name}: {message}")
    }
}

fn written_error(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => output_error(p),
        None => "cannot write the report".to_string(),
    }
}

/// The `-o DIR` of `--format parquet` ([`fleet::check_output`] made sure
/// there is one).
fn parquet_dir(output: &OutputArgs) -> Result<&Path> {
    output
        .output
        .as_deref()
        .ok_or_else(|| Refused::bad_input("--format parquet needs -o DIR").into())
}

/// Write a report where the output options say.
pub fn emit(report: &Report, output: &OutputArgs) -> Result<()> {
    if output.format == Format::Parquet {
        let dir = parquet_dir(output)?;
        return fleet::write_report(report, dir).with_context(|| output_error(dir));
    }
    let options = RenderOptions {
        format: output.format,
        requests: output.rows,
    };
    let mut w = open_output(&output.output)?;
    let written = write_report(report, &options, &mut w).and_then(|()| w.flush());
    match &output.output {
        Some(p) => written.with_context(|| output_error(p)),
        None => Ok(written?),
    }
}

/// Standard output, or the `-o` file.
fn open_output(path: &Option<PathBuf>) -> Result<Box<dyn Write + Send>> {
    Ok(match path {
        Some(p) => Box::new(BufWriter::with_capacity(
            256 << 10,
            File::create(p).with_context(|| output_error(p))?,
        )),
        None => Box::new(BufWriter::with_capacity(256 << 10, io::stdout())),
    })
}

fn output_error(path: &Path) -> String {
    format!("cannot write the report to {}", path.display())
}
