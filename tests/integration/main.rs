//! The integration tests, in one binary so the helpers in [`common`] are
//! built once and the tests share one process (ripgrep's layout).
//!
//! `cargo test --test integration MODULE::` runs one group, for example
//! `cargo test --test integration tshark_crosscheck::`.

mod common;

mod causes;
mod cli;
mod fixtures;
mod fuzz_seeds;
mod golden;
mod hardening_live;
mod hostile;
mod html;
mod http_crosscheck;
mod live_audit;
mod live_demo;
mod live_nginx;
mod live_probe;
mod live_run;
mod live_server;
mod live_sockets;
mod live_watch;
mod lossy_capture;
mod parquet;
mod svg;
mod tshark_crosscheck;
mod zeek_crosscheck;
