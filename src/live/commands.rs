//! The `serve`, `run` and `demo` commands: validated arguments in, output and
//! an error for `main` to print out. Library errors become messages here.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cli::{emit, OutputArgs};
use crate::exit::{Exit, Refused};
use crate::live::args::{DemoArgs, RunArgs, ServeArgs};
use crate::live::capture::CaptureError;
use crate::live::demo::{self, DemoError, Experiment};
use crate::live::server::TestServer;
use crate::live::session::{run_session, SessionConfig, SessionError};
use crate::render::count;

/// `conntrace serve`: prints the bound address, serves until Ctrl-C.
pub fn serve(args: ServeArgs) -> Result<Exit> {
    let config = args.config();
    // The signal handler's runtime and descriptors come first: once the
    // server listens, its connections may take every descriptor there is.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    #[cfg(unix)]
    let mut interrupt = {
        let _inside = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?
    };
    let server = TestServer::start(args.listen, config.clone())?;
    let protocols = if config.tls {
        "HTTPS, ALPN h2 and http/1.1, self-signed certificate"
    } else {
        "HTTP/1.1 and h2c"
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {} ({protocols})", server.url())?;
    out.flush()?;
    drop(out);
    #[cfg(unix)]
    runtime.block_on(interrupt.recv());
    #[cfg(not(unix))]
    runtime.block_on(tokio::signal::ctrl_c())?;
    drop(server);
    Ok(Exit::Success)
}

/// `conntrace run URL`: the report, and [`Exit::RequestsFailed`] when a
/// request failed (not one cut short by Ctrl-C).
pub fn run(args: RunArgs) -> Result<Exit> {
    crate::fleet::check_output(args.format, args.output.as_deref())?;
    let driver = args.driver()?;
    let session = SessionConfig {
        driver,
        capture: args.capture(),
        progress: true,
        handle_ctrl_c: true,
    };
    let outcome = match run_session(session) {
        Ok(o) => o,
        Err(SessionError::Capture(e @ CaptureError::Permission { .. })) => {
            return Err(Refused::no_privilege(format!(
                "{e}\nor add --no-capture to attribute requests by the client's local ports \
                 only (nothing is captured, and the report says so)"
            ))
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(c) = &outcome.report.client {
        if c.errors > 0 {
            let first = c.requests.iter().find_map(|r| r.error.as_deref());
            eprintln!(
                "conntrace: {} of {} failed (first error: {})",
                c.errors,
                count(c.requests.len() as u64, "request"),
                first.unwrap_or("?")
            );
        }
    }
    let output = OutputArgs {
        format: args.format,
        output: args.output.clone(),
        rows: args.rows,
    };
    emit(&outcome.report, &output)?;
    Ok(if outcome.client.iter().any(|r| r.failed()) {
        Exit::RequestsFailed
    } else {
        Exit::Success
    })
}

/// `conntrace demo`: every experiment's table and verdict, and
/// [`Exit::Unexpected`] when a verdict was UNEXPECTED.
pub fn demo(args: DemoArgs) -> Result<Exit> {
    let chosen: Vec<Experiment> = match &args.only {
        None => Experiment::ALL.to_vec(),
        Some(only) => Experiment::select(only).map_err(Refused::bad_input)?,
    };
    let started = Instant::now();
    let mut unexpected = 0;
    let mut out = std::io::stdout().lock();
    for e in chosen {
        let result = match demo::run_experiment(e) {
            Ok(r) => r,
            Err(DemoError::Session(SessionError::Capture(e @ CaptureError::Permission { .. }))) => {
                return Err(Refused::no_privilege(format!(
                    "the demo captures on loopback and needs capture privileges: {e}"
                ))
                .into())
            }
            Err(err) => return Err(err).with_context(|| format!("experiment ({})", e.letter())),
        };
        if !result.verdict.expected {
            unexpected += 1;
        }
        writeln!(out, "{}", demo::render(&result))?;
        out.flush()?;
    }
    writeln!(
        out,
        "demo finished in {:.1}s; {}",
        started.elapsed().as_secs_f64(),
        count(unexpected, "unexpected result")
    )?;
    out.flush()?;
    Ok(if unexpected > 0 {
        Exit::Unexpected
    } else {
        Exit::Success
    })
}

/// `conntrace probe`: the server's keep-alive limits, then the capture's report.
pub fn probe(args: crate::live::args::ProbeArgs) -> Result<Exit> {
    use crate::live::probe::ProbeError;
    crate::fleet::check_output(args.format, args.output.as_deref())?;
    let config = args.config()?;
    let report = match crate::live::probe::probe(&config) {
        Ok(r) => r,
        Err(ProbeError::Capture(e @ CaptureError::Permission { .. }))
        | Err(ProbeError::Session(SessionError::Capture(e @ CaptureError::Permission { .. }))) => {
            return Err(Refused::no_privilege(e.to_string()).into())
        }
        Err(e @ ProbeError::Scheme(_)) => return Err(Refused::bad_input(e.to_string()).into()),
        Err(e) => return Err(e.into()),
    };
    let output = OutputArgs {
        format: args.format,
        output: args.output.clone(),
        rows: crate::render::RequestRows::Auto,
    };
    emit(&report, &output)?;
    Ok(Exit::Success)
}

/// `conntrace compare`: HTTP/1.1 against HTTP/2 on the same load.
pub fn compare(args: crate::live::args::CompareArgs) -> Result<Exit> {
    use crate::render::Format;
    if args.format == Format::Parquet {
        return Err(Refused::bad_input(
            "compare: --format parquet is not supported (use json: both reports are in it)",
        )
        .into());
    }
    let driver = args.driver()?;
    let comparison = match crate::live::compare::compare(&driver, args.capture()) {
        Ok(c) => c,
        Err(SessionError::Capture(e @ CaptureError::Permission { .. })) => {
            return Err(Refused::no_privilege(e.to_string()).into())
        }
        Err(e) => return Err(e.into()),
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("cannot write the comparison to {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    match args.format {
        Format::Json | Format::Jsonl => {
            serde_json::to_writer_pretty(&mut out, &comparison)?;
            writeln!(out)?;
        }
        Format::Markdown => crate::live::compare::write_text(&comparison, &mut out, true)?,
        _ => crate::live::compare::write_text(&comparison, &mut out, false)?,
    }
    out.flush()?;
    let failed = comparison.http1.errors + comparison.http2.errors > 0;
    Ok(if failed {
        Exit::RequestsFailed
    } else {
        Exit::Success
    })
}
