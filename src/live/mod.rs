//! The live half of conntrace: a built-in test server ([`server`]), a request
//! driver ([`driver`]), a libpcap capture thread ([`capture`]) and the
//! attribution of each driven request to the connection that carried it
//! ([`correlate`]). `conntrace run`, `serve`, `demo`, `probe`, `compare` and `watch` are built from these.

pub mod args;
pub mod audit;
pub mod capture;
pub mod commands;
pub mod compare;
pub mod correlate;
pub mod demo;
pub mod driver;
pub mod probe;
pub mod server;
pub mod session;
pub mod sockets;
pub mod watch;
