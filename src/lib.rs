//! conntrace: which HTTP requests reused a TCP connection, and why the others did not.
//!
//! The pipeline, one way: a packet source (a capture file or a live
//! interface) yields frames ([`source`]); [`decode`] turns each into an owned
//! [`wire::Segment`]; [`flow`] tracks connections with Wireshark's stream
//! numbering and Zeek's states, feeding each connection's bytes to [`http`],
//! and reports what happens as [`flow::FlowEvent`]s, finalising connections
//! as they end (or expire) in capture time; [`diagnose`] judges on that event
//! stream why each new connection was opened; [`pipeline`] hands finished
//! connections to the rows of a document ([`report::Report`], formatted by
//! [`render`]) or to a streaming sink ([`jsonl`], [`fleet`]'s Parquet), so memory follows the
//! connections open at once.
// Unsafe code only where the standard library offers no safe form: in
// `live::audit`, the child of `conntrace audit` enters its cgroup and drops
// root between fork and exec, and signals are passed on to it.
#![deny(unsafe_code)]

pub mod advice;
pub mod cli;
pub mod decode;
pub mod diagnose;
pub mod document;
pub mod exit;
pub mod fleet;
pub mod flow;
#[doc(hidden)]
pub mod fuzzing;
pub mod html;
pub mod http;
pub mod jsonl;
pub mod live;
pub mod pipeline;
pub mod reassembly;
pub mod render;
pub mod report;
pub mod source;
pub mod svg;
pub mod wire;

#[cfg(test)]
mod testkit;
