//! Packet sources (interim: the frame and link-type types only).

use crate::wire::Timestamp;

/// A libpcap link type (LINKTYPE_/DLT_ value), as written in capture files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkType(pub i32);

impl From<pcap::Linktype> for LinkType {
    fn from(l: pcap::Linktype) -> LinkType {
        LinkType(l.0)
    }
}

/// One captured frame, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub ts: Timestamp,
    pub caplen: u32,
    pub wirelen: u32,
    pub data: &'a [u8],
}
