//! conntrace: which HTTP requests reused a TCP connection, and why the others did not.
//!
//! The pipeline: a packet source (a capture file or a live interface) yields
//! frames; [`decode`] turns each into an owned [`wire::Segment`]; [`flow`]
//! tracks connections with Wireshark's stream numbering and Zeek's states;
//! [`report`] holds the result, which [`render`] formats.
#![forbid(unsafe_code)]

pub mod http;
pub mod report;
pub mod wire;
