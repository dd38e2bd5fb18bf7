use std::io;
use std::process::ExitCode;

use clap::Parser;
use conntrace::exit::Exit;

fn main() -> ExitCode {
    let cli = conntrace::cli::Cli::parse();
    let exit = match conntrace::cli::run(cli) {
        Ok(exit) => exit,
        // `conntrace replay x.pcap | head`: the reader left; that is not an error.
        Err(e) if is_broken_pipe(&e) => Exit::Success,
        Err(e) => {
            eprintln!("conntrace: {e:#}");
            Exit::of_error(&e)
        }
    };
    ExitCode::from(exit.code())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}
