//! Packet sources. A capture file is read here, record by record, with memory
//! bounded by the largest frame: classic pcap (micro- and nanosecond, either
//! byte order), pcapng (either byte order, several sections, several
//! interfaces, each with its own link type and timestamp resolution), and
//! either of them gzip-compressed, as tshark reads them. A live capture
//! (libpcap) is another source of the same [`Frame`]s.
//!
//! A capture file is untrusted input: whatever its bytes, reading it ends in a
//! frame, a clean end, [`Record::CutShort`] or a [`ReadError`], never a panic,
//! and the reader's memory grows with the bytes it has read, never on a length
//! field's word alone.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

use crate::wire::Timestamp;

/// A libpcap link type (LINKTYPE_/DLT_ value), as written in capture files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkType(pub i32);

impl LinkType {
    pub const NULL: LinkType = LinkType(0);
    pub const ETHERNET: LinkType = LinkType(1);
    /// DLT_RAW as some BSDs number it in live captures.
    pub const RAW_12: LinkType = LinkType(12);
    pub const RAW_14: LinkType = LinkType(14);
    pub const RAW: LinkType = LinkType(101);
    pub const LOOP: LinkType = LinkType(108);
    pub const LINUX_SLL: LinkType = LinkType(113);
    pub const IPV4: LinkType = LinkType(228);
    pub const IPV6: LinkType = LinkType(229);
    pub const NFLOG: LinkType = LinkType(239);
    pub const LINUX_SLL2: LinkType = LinkType(276);

    /// The DLT_ value libpcap's own calls take for this LINKTYPE_ value: they
    /// differ only for raw IP, LINKTYPE_RAW (101) being DLT_RAW (12 on Linux).
    pub fn dlt(self) -> i32 {
        match self {
            LinkType::RAW => 12,
            other => other.0,
        }
    }

    /// libpcap's name for the link type (`pcap_datalink_val_to_name`), e.g. "EN10MB".
    pub fn name(self) -> String {
        let known = match self {
            LinkType::NULL => "NULL",
            LinkType::ETHERNET => "EN10MB",
            LinkType::RAW | LinkType::RAW_12 | LinkType::RAW_14 => "RAW",
            LinkType::LOOP => "LOOP",
            LinkType::LINUX_SLL => "LINUX_SLL",
            LinkType::IPV4 => "IPV4",
            LinkType::IPV6 => "IPV6",
            LinkType::NFLOG => "NFLOG",
            LinkType::LINUX_SLL2 => "LINUX_SLL2",
            other => {
                return pcap::Linktype(other.0)
                    .get_name()
                    .unwrap_or_else(|_| format!("DLT_{}", other.0))
            }
        };
        known.to_string()
    }
}

impl From<pcap::Linktype> for LinkType {
    fn from(l: pcap::Linktype) -> LinkType {
        LinkType(l.0)
    }
}

/// One captured frame, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub ts: Timestamp,
    /// Bytes captured (may be less than `wirelen` when the snaplen cut the frame).
    pub caplen: u32,
    /// Bytes on the wire.
    pub wirelen: u32,
    pub data: &'a [u8],
}

impl<'a> Frame<'a> {
    /// A packet as libpcap hands it over (a live capture, or `--reader
    /// libpcap`). The wire length is at least what was captured, as the
    /// native reader reads it from a file.
    pub fn from_pcap(p: &pcap::Packet<'a>) -> Frame<'a> {
        let h = p.header;
        Frame {
            ts: Timestamp::from_parts(h.ts.tv_sec, h.ts.tv_usec),
            caplen: h.caplen,
            wirelen: h.len.max(h.caplen),
            data: p.data,
        }
    }
}

/// Why a capture file could not be read. A message names what failed; the
/// underlying error is its `source()`, which `{:#}` prints after it, so no
/// message repeats it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: not a pcap or pcapng file (starts with {magic})")]
    UnknownFormat { path: PathBuf, magic: String },
    #[error("{path}: {what} at byte {offset}")]
    Corrupt {
        path: PathBuf,
        what: String,
        offset: u64,
    },
    #[error("{path}: read error at byte {offset}")]
    Io {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
}

/// The largest frame we accept; larger record lengths mean a corrupt file.
/// (libpcap's own limit for most link types is 256 KiB; pcapng allows more.)
const MAX_FRAME: u32 = 16 << 20;

/// The pcapng Section Header Block type, a palindrome in bytes.
const SECTION_HEADER: u32 = 0x0a0d_0d0a;

/// What the next record of a file was.
pub enum Record<'a> {
    Frame(LinkType, Frame<'a>),
    /// The file ended in the middle of a record (a capture cut short). What was
    /// read before is good; this is the end.
    CutShort,
}

enum Format {
    Pcap {
        swapped: bool,
        nanos: bool,
        link: LinkType,
    },
    Pcapng {
        swapped: bool,
        interfaces: Vec<Interface>,
    },
}

#[derive(Clone, Copy)]
struct Interface {
    link: LinkType,
    /// Timestamp units per second.
    units_per_sec: u64,
    /// Seconds to add to every timestamp (if_tsoffset).
    offset_secs: i64,
    /// Most bytes captured of a packet; 0: no limit.
    snaplen: u32,
}

/// How much of the file the reader holds at first; it grows to
/// [`CaptureReader::read_ahead`] as the file goes on, and beyond only for a
/// larger record.
const FIRST_READ: usize = 64 << 10;

/// How far ahead of the parser the reader reads once a file proves large:
/// room for about [`RECORDS_AHEAD`] records of the file's average size so
/// far, from [`MIN_READ_AHEAD`] (small frames, whose decoded forms cost
/// more than their bytes while a batch waits) to `READ_AHEAD` (large ones:
/// fewer reads and fewer hand-overs between threads).
const READ_AHEAD: usize = 1 << 20;
const MIN_READ_AHEAD: usize = 256 << 10;
const RECORDS_AHEAD: usize = 4096;

/// A streaming reader over one capture file.
///
/// Records are parsed in place from one owned buffer that is refilled from the
/// input only when the next record does not fit in what remains, and frames
/// borrow their bytes from it: no frame is copied after it is read. A reader
/// that [lends its buffers](CaptureReader::lend_buffers) moves to another
/// buffer instead of refilling one it returned frames from, so that another
/// thread can use those frames in place.
pub struct CaptureReader {
    path: PathBuf,
    input: Box<dyn Read + Send>,
    format: Format,
    /// Bytes read from the input; `buf[start..end]` are not parsed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Offset in the stream of `buf[0]`.
    base: u64,
    /// Link types seen so far (pcapng may declare several), and the same as
    /// a set: a file may declare an interface per block.
    link_types: Vec<LinkType>,
    link_type_set: HashSet<LinkType>,
    /// Bytes of the file itself consumed so far (compressed bytes for gzip).
    file_position: Arc<AtomicU64>,
    /// Set when a gzip stream ended before its trailer.
    gzip_truncated: Arc<AtomicBool>,
    /// Lending (see [`CaptureReader::lend_buffers`]): whether it is on, the
    /// buffers to move to, whether a frame was returned from `buf` since the
    /// reader moved to it, the buffer it last moved off, and where in `buf`
    /// the data of the frame last returned starts.
    lending: bool,
    spare: Vec<Vec<u8>>,
    lent: bool,
    retired: Option<Vec<u8>>,
    last_frame: usize,
    /// Frames returned so far.
    frames: u64,
}

/// Counts the bytes read from the file, for progress reports.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A gzip stream that ends before its trailer (a `.pcap.gz` cut short, as
/// a capture still being written or a download stopped) ends the input there
/// instead of failing it: tshark reads the frames before the cut, and so does
/// the same file unzipped.
struct GzipToEnd<R> {
    inner: R,
    truncated: Arc<AtomicBool>,
}

impl<R: Read> Read for GzipToEnd<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.truncated.load(Ordering::Relaxed) {
            return Ok(0);
        }
        match self.inner.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.truncated.store(true, Ordering::Relaxed);
                Ok(0)
            }
            other => other,
        }
    }
}

/// `-` names standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

impl fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureReader")
            .field("path", &self.path)
            .field("offset", &self.offset())
            .finish()
    }
}

impl CaptureReader {
    /// Open a capture file, or standard input for `-` (as tcpdump and tshark
    /// read `-r -`); gzip-compressed input is recognised by its magic.
    pub fn open(path: &Path) -> Result<CaptureReader, ReadError> {
        let open_err = |source| ReadError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file_position = Arc::new(AtomicU64::new(0));
        let raw: Box<dyn Read + Send> = if is_stdin(path) {
            Box::new(io::stdin())
        } else {
            Box::new(File::open(path).map_err(open_err)?)
        };
        let mut file = Counting {
            inner: raw,
            count: Arc::clone(&file_position),
        };
        let mut magic = [0u8; 2];
        let got = read_full(&mut file, &mut magic).map_err(open_err)?;
        let file = io::Cursor::new(magic[..got].to_vec()).chain(file);
        let truncated = Arc::new(AtomicBool::new(false));
        let input: Box<dyn Read + Send> = if magic[..got] == [0x1f, 0x8b] {
            Box::new(GzipToEnd {
                inner: MultiGzDecoder::new(file),
                truncated: Arc::clone(&truncated),
            })
        } else {
            Box::new(file)
        };
        let mut reader = CaptureReader::from_reader(path, input)?;
        reader.file_position = file_position;
        reader.gzip_truncated = truncated;
        Ok(reader)
    }

    /// The input was gzip-compressed and its compressed stream ended before
    /// the gzip trailer: what was decompressed before is read, and the
    /// capture ends there as a file cut short does.
    pub fn gzip_truncated(&self) -> bool {
        self.gzip_truncated.load(Ordering::Relaxed)
    }

    /// Bytes of the file read so far (of the compressed file, for gzip).
    pub fn file_position(&self) -> u64 {
        self.file_position.load(Ordering::Relaxed)
    }

    /// Read a capture from any byte stream (`path` names it in errors).
    pub fn from_reader(
        path: &Path,
        input: Box<dyn Read + Send>,
    ) -> Result<CaptureReader, ReadError> {
        let mut reader = CaptureReader {
            path: path.to_path_buf(),
            input,
            format: Format::Pcapng {
                swapped: false,
                interfaces: Vec::new(),
            },
            buf: vec![0; FIRST_READ],
            start: 0,
            end: 0,
            base: 0,
            link_types: Vec::new(),
            link_type_set: HashSet::new(),
            file_position: Arc::new(AtomicU64::new(0)),
            gzip_truncated: Arc::new(AtomicBool::new(false)),
            lending: false,
            spare: Vec::new(),
            lent: false,
            retired: None,
            last_frame: 0,
            frames: 0,
        };
        let got = reader.fill(4)?;
        let head = &reader.buf[..got];
        let unknown = || ReadError::UnknownFormat {
            path: path.to_path_buf(),
            magic: head.iter().map(|b| format!("{b:02x}")).collect(),
        };
        let Ok(&head) = <&[u8; 4]>::try_from(head) else {
            return Err(unknown());
        };
        match u32::from_le_bytes(head) {
            le @ (0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1) => {
                let swapped = matches!(le, 0xd4c3_b2a1 | 0x4d3c_b2a1);
                let nanos = matches!(le, 0xa1b2_3c4d | 0x4d3c_b2a1);
                let Some(at) = reader.take(24)? else {
                    return Err(reader.corrupt("file header cut short"));
                };
                // The upper bits of the link-type field carry FCS information.
                let link = LinkType((u32_at(&reader.buf, at + 20, swapped) & 0x0fff_ffff) as i32);
                reader.link_types.push(link);
                reader.format = Format::Pcap {
                    swapped,
                    nanos,
                    link,
                };
            }
            SECTION_HEADER => reader.read_section_header()?,
            _ => return Err(unknown()),
        }
        Ok(reader)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Link types declared so far, in order of first appearance.
    pub fn link_types(&self) -> &[LinkType] {
        &self.link_types
    }

    /// From now on, never overwrite the bytes of a frame once returned:
    /// when the buffer must make room, move what is not parsed yet to another
    /// buffer (one given to [`recycle`](Self::recycle), or a new one) and
    /// keep the old one for [`take_retired`](Self::take_retired). Frames can
    /// then be used after the next record is read, without a copy.
    pub fn lend_buffers(&mut self) {
        self.lending = true;
    }

    /// A buffer to read into again, once its frames are done with.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.spare.push(buf);
    }

    /// When lending: the buffer the reader moved off during the last
    /// [`next_record`](Self::next_record), if it did. It holds the data of
    /// every frame returned since the reader moved to it, at the offsets
    /// [`frame_offset`](Self::frame_offset) gave; the frame that call returned
    /// is in the new buffer.
    pub fn take_retired(&mut self) -> Option<Vec<u8>> {
        self.retired.take()
    }

    /// Where the data of the frame last returned starts in the buffer the
    /// reader is on.
    pub fn frame_offset(&self) -> usize {
        self.last_frame
    }

    /// The buffer the reader is on, with the data of the frames returned
    /// since it moved to it.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// The next frame, `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, ReadError> {
        match &self.format {
            Format::Pcap { .. } => self.next_pcap(),
            Format::Pcapng { .. } => self.next_pcapng(),
        }
    }

    fn next_pcap(&mut self) -> Result<Option<Record<'_>>, ReadError> {
        let Format::Pcap {
            swapped,
            nanos,
            link,
        } = self.format
        else {
            unreachable!("next_pcap is only called for pcap files")
        };
        if self.fill(1)? == 0 {
            return Ok(None);
        }
        let Some(h) = self.take(16)? else {
            return Ok(Some(Record::CutShort));
        };
        let secs = i64::from(u32_at(&self.buf, h, swapped));
        let frac = i64::from(u32_at(&self.buf, h + 4, swapped));
        let caplen = u32_at(&self.buf, h + 8, swapped);
        let wirelen = u32_at(&self.buf, h + 12, swapped);
        if caplen > MAX_FRAME {
            return Err(self.corrupt(&format!("record length {caplen} is impossible")));
        }
        let micros = if nanos { frac / 1000 } else { frac };
        let Some(data) = self.take(caplen as usize)? else {
            return Ok(Some(Record::CutShort));
        };
        self.lent = true;
        self.last_frame = data;
        self.frames += 1;
        Ok(Some(Record::Frame(
            link,
            Frame {
                ts: Timestamp::from_parts(secs, micros),
                caplen,
                wirelen: wirelen.max(caplen),
                data: &self.buf[data..data + caplen as usize],
            },
        )))
    }

    fn next_pcapng(&mut self) -> Result<Option<Record<'_>>, ReadError> {
        loop {
            match self.fill(8)? {
                0 => return Ok(None),
                8 => {}
                _ => {
                    self.start = self.end;
                    return Ok(Some(Record::CutShort));
                }
            }
            // The section header's type reads the same in either byte order;
            // every other block is in the order its section declared.
            if self.buf[self.start..self.start + 4] == SECTION_HEADER.to_le_bytes() {
                self.read_section_header()?;
                continue;
            }
            let Format::Pcapng { swapped, .. } = self.format else {
                unreachable!("next_pcapng is only called for pcapng files")
            };
            let h = self.start;
            self.start += 8;
            let block_type = u32_at(&self.buf, h, swapped);
            let total = u32_at(&self.buf, h + 4, swapped);
            if !(12..=MAX_FRAME + 64).contains(&total) || !total.is_multiple_of(4) {
                return Err(self.corrupt(&format!("block length {total} is impossible")));
            }
            let body_len = (total - 12) as usize;
            let Some(b) = self.take(body_len + 4)? else {
                return Ok(Some(Record::CutShort));
            };
            let trailing = u32_at(&self.buf, b + body_len, swapped);
            if trailing != total {
                return Err(self.corrupt(&format!(
                    "block length {total} at its start but {trailing} at its end"
                )));
            }
            let body = &self.buf[b..b + body_len];
            match block_type {
                1 => {
                    // Interface Description Block.
                    if body.len() < 8 {
                        return Err(self.corrupt("interface description block too short"));
                    }
                    let link = LinkType(i32::from(u16_at(body, 0, swapped)));
                    let options = interface_options(&body[8..], swapped);
                    let snaplen = u32_at(body, 4, swapped);
                    if self.link_type_set.insert(link) {
                        self.link_types.push(link);
                    }
                    if let Format::Pcapng { interfaces, .. } = &mut self.format {
                        interfaces.push(Interface {
                            link,
                            units_per_sec: options.units_per_sec,
                            offset_secs: options.offset_secs,
                            snaplen,
                        });
                    }
                }
                6 | 2 => {
                    // Enhanced Packet Block (6), obsolete Packet Block (2).
                    if body.len() < 20 {
                        return Err(self.corrupt("packet block too short"));
                    }
                    let iface = if block_type == 6 {
                        u32_at(body, 0, swapped) as usize
                    } else {
                        usize::from(u16_at(body, 0, swapped))
                    };
                    let ts_raw = (u64::from(u32_at(body, 4, swapped)) << 32)
                        | u64::from(u32_at(body, 8, swapped));
                    let caplen = u32_at(body, 12, swapped);
                    let wirelen = u32_at(body, 16, swapped);
                    let Some(interface) = self.interface(iface) else {
                        return Err(
                            self.corrupt(&format!("packet on undeclared interface {iface}"))
                        );
                    };
                    if caplen as usize > body.len() - 20 {
                        return Err(self.corrupt("packet data overruns its block"));
                    }
                    return Ok(Some(self.pcapng_frame(
                        interface,
                        ts_raw,
                        b + 20,
                        caplen,
                        wirelen,
                    )));
                }
                3 => {
                    // Simple Packet Block: interface 0, no timestamp.
                    if body.len() < 4 {
                        return Err(self.corrupt("simple packet block too short"));
                    }
                    let wirelen = u32_at(body, 0, swapped);
                    let Some(interface) = self.interface(0) else {
                        return Err(self.corrupt("simple packet block before any interface"));
                    };
                    // The block holds the packet cut to the snaplen, then
                    // padding: the captured length is the smaller of the
                    // three, never the padding (RFC draft pcapng §4.4).
                    let snaplen = match interface.snaplen {
                        0 => u32::MAX,
                        n => n,
                    };
                    let caplen = wirelen.min(snaplen).min(body.len() as u32 - 4);
                    return Ok(Some(self.pcapng_frame(
                        interface,
                        0,
                        b + 4,
                        caplen,
                        wirelen,
                    )));
                }
                _ => {} // Name resolution, statistics, custom blocks: not ours.
            }
        }
    }

    fn interface(&self, index: usize) -> Option<Interface> {
        match &self.format {
            Format::Pcapng { interfaces, .. } => interfaces.get(index).copied(),
            Format::Pcap { .. } => None,
        }
    }

    /// A frame whose `caplen` bytes start at `buf[data]`.
    fn pcapng_frame(
        &mut self,
        interface: Interface,
        ts_raw: u64,
        data: usize,
        caplen: u32,
        wirelen: u32,
    ) -> Record<'_> {
        self.lent = true;
        self.last_frame = data;
        self.frames += 1;
        Record::Frame(
            interface.link,
            Frame {
                // Before the epoch is no time a capture was taken: clamp.
                ts: units_to_timestamp(ts_raw, interface.units_per_sec)
                    .after_secs(interface.offset_secs)
                    .max(Timestamp(0)),
                caplen,
                wirelen: wirelen.max(caplen),
                data: &self.buf[data..data + caplen as usize],
            },
        )
    }

    /// Reads a Section Header Block, whose length is in a byte order the block
    /// itself tells, and starts a new section.
    fn read_section_header(&mut self) -> Result<(), ReadError> {
        let Some(h) = self.take(12)? else {
            return Err(self.corrupt("section header cut short"));
        };
        let bom = [
            self.buf[h + 8],
            self.buf[h + 9],
            self.buf[h + 10],
            self.buf[h + 11],
        ];
        let swapped = match u32::from_le_bytes(bom) {
            0x1a2b_3c4d => false,
            0x4d3c_2b1a => true,
            _ => return Err(self.corrupt("bad byte-order magic in section header")),
        };
        let total = u32_at(&self.buf, h + 4, swapped);
        if !(28..=1 << 20).contains(&total) || !total.is_multiple_of(4) {
            return Err(self.corrupt(&format!("section header length {total} is impossible")));
        }
        let Some(rest) = self.take(total as usize - 12)? else {
            return Err(self.corrupt("section header cut short"));
        };
        let trailing = u32_at(&self.buf, rest + total as usize - 16, swapped);
        if trailing != total {
            return Err(self.corrupt(&format!(
                "section header length {total} at its start but {trailing} at its end"
            )));
        }
        // A new section starts a new list of interfaces.
        self.format = Format::Pcapng {
            swapped,
            interfaces: Vec::new(),
        };
        Ok(())
    }

    /// Consumes the next `len` bytes and returns where they start in `buf`;
    /// `None`, with everything left consumed, when the input ends first.
    fn take(&mut self, len: usize) -> Result<Option<usize>, ReadError> {
        if self.fill(len)? < len {
            self.start = self.end;
            return Ok(None);
        }
        let at = self.start;
        self.start += len;
        Ok(Some(at))
    }

    /// Makes `len` unparsed bytes available at `buf[start..]` if the input has
    /// them; returns how many are, fewer than `len` only at its end.
    fn fill(&mut self, len: usize) -> Result<usize, ReadError> {
        while self.end - self.start < len {
            if self.end == self.buf.len() {
                self.make_room(len);
            }
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => break,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ReadError::Io {
                        path: self.path.clone(),
                        offset: self.base + self.end as u64,
                        source,
                    })
                }
            }
        }
        Ok((self.end - self.start).min(len))
    }

    /// Room after `end` for a `len`-byte record that starts at `start`: the
    /// parsed bytes before it are dropped, and the buffer grows while the
    /// file proves large and when the record itself is larger. It grows by
    /// doubling as bytes arrive, so a length field promising more than the
    /// input holds costs no more memory than the input.
    ///
    /// When lending and a frame was returned from the buffer, the unparsed
    /// bytes move to another buffer instead, of the size this one would have
    /// grown to (a spare one larger than that is used whole).
    fn make_room(&mut self, len: usize) {
        let pending = self.end - self.start;
        let ahead = self.read_ahead();
        let size = if self.buf.len() < ahead || pending == self.buf.len() {
            (self.buf.len() * 2).min(len.max(ahead)).max(self.buf.len())
        } else {
            self.buf.len()
        };
        if self.lending && self.lent {
            let mut next = self.spare.pop().unwrap_or_default();
            if next.len() < size {
                next.resize(size, 0);
            }
            next[..pending].copy_from_slice(&self.buf[self.start..self.end]);
            self.retired = Some(std::mem::replace(&mut self.buf, next));
            self.lent = false;
        } else {
            self.buf.copy_within(self.start..self.end, 0);
            self.buf.resize(size, 0);
        }
        self.base += self.start as u64;
        self.start = 0;
        self.end = pending;
    }

    /// See [`READ_AHEAD`].
    fn read_ahead(&self) -> usize {
        let average = self.offset().checked_div(self.frames).unwrap_or(0);
        usize::try_from(average)
            .unwrap_or(usize::MAX)
            .saturating_mul(RECORDS_AHEAD)
            .clamp(MIN_READ_AHEAD, READ_AHEAD)
    }

    /// Offset in the stream of the first byte not yet parsed.
    fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    fn corrupt(&self, what: &str) -> ReadError {
        ReadError::Corrupt {
            path: self.path.clone(),
            what: what.to_string(),
            offset: self.offset(),
        }
    }
}

/// Read until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn u32_at(b: &[u8], at: usize, swapped: bool) -> u32 {
    let raw = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if swapped {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    }
}

fn u16_at(b: &[u8], at: usize, swapped: bool) -> u16 {
    let raw = [b[at], b[at + 1]];
    if swapped {
        u16::from_be_bytes(raw)
    } else {
        u16::from_le_bytes(raw)
    }
}

/// A pcapng timestamp of `units_per_sec` units a second, truncated to
/// microseconds; one too far ahead for [`Timestamp`] saturates at its greatest
/// rather than wrapping negative.
fn units_to_timestamp(raw: u64, units_per_sec: u64) -> Timestamp {
    let micros = u128::from(raw) * 1_000_000 / u128::from(units_per_sec.max(1));
    Timestamp(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// What an Interface Description Block's options say about its timestamps.
struct InterfaceOptions {
    /// if_tsresol (code 9): 10^-n seconds, or 2^-n when the high bit is set.
    /// Default: microseconds.
    units_per_sec: u64,
    /// if_tsoffset (code 14): seconds to add to every timestamp. Default: 0.
    offset_secs: i64,
}

/// Reads the options of an Interface Description Block.
///
/// An option whose value runs past the end of the block ends the list there,
/// as the end-of-options marker would: what came before it still counts.
fn interface_options(mut options: &[u8], swapped: bool) -> InterfaceOptions {
    let mut out = InterfaceOptions {
        units_per_sec: 1_000_000,
        offset_secs: 0,
    };
    let (mut resol, mut offset) = (false, false);
    while options.len() >= 4 {
        let code = u16_at(options, 0, swapped);
        let len = usize::from(u16_at(options, 2, swapped));
        let Some(value) = options.get(4..4 + len) else {
            break;
        };
        match (code, value) {
            (0, _) => break,
            (9, [v, ..]) if !resol => {
                resol = true;
                let exp = u32::from(v & 0x7f);
                out.units_per_sec = if v & 0x80 != 0 {
                    1u64.checked_shl(exp).unwrap_or(1_000_000)
                } else {
                    10u64.checked_pow(exp).unwrap_or(1_000_000)
                };
            }
            (14, [a, b, c, d, e, f, g, h, ..]) if !offset => {
                offset = true;
                let raw = [*a, *b, *c, *d, *e, *f, *g, *h];
                out.offset_secs = if swapped {
                    i64::from_be_bytes(raw)
                } else {
                    i64::from_le_bytes(raw)
                };
            }
            _ => {}
        }
        let padded = 4 + ((len + 3) & !3);
        options = options.get(padded..).unwrap_or(&[]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn reader(bytes: Vec<u8>) -> Result<CaptureReader, ReadError> {
        CaptureReader::from_reader(Path::new("mem.pcap"), Box::new(io::Cursor::new(bytes)))
    }

    /// A classic pcap file; `magic` picks resolution, `be` the byte order.
    fn pcap_file(magic: u32, be: bool, link: u32, records: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
        let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut f = Vec::new();
        f.extend_from_slice(&w32(magic));
        f.extend_from_slice(&w16(2));
        f.extend_from_slice(&w16(4));
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&w32(65535));
        f.extend_from_slice(&w32(link));
        for &(secs, frac, data, wirelen) in records {
            f.extend_from_slice(&w32(secs));
            f.extend_from_slice(&w32(frac));
            f.extend_from_slice(&w32(data.len() as u32));
            f.extend_from_slice(&w32(wirelen));
            f.extend_from_slice(data);
        }
        f
    }

    fn frames(mut r: CaptureReader) -> Vec<(LinkType, i64, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(rec) = r.next_record().expect("readable") {
            match rec {
                Record::Frame(l, f) => out.push((l, f.ts.0, f.wirelen, f.data.to_vec())),
                Record::CutShort => panic!("unexpected cut"),
            }
        }
        out
    }

    #[test]
    fn pcap_in_both_byte_orders_and_resolutions() {
        for be in [false, true] {
            let micro = pcap_file(0xa1b2_c3d4, be, 1, &[(10, 250, b"abc", 60)]);
            assert_eq!(
                frames(reader(micro).unwrap()),
                [(LinkType::ETHERNET, 10_000_250, 60, b"abc".to_vec())]
            );
            let nano = pcap_file(0xa1b2_3c4d, be, 276, &[(10, 250_999, b"x", 1)]);
            assert_eq!(frames(reader(nano).unwrap())[0].1, 10_000_250);
        }
    }

    #[test]
    fn pcap_cut_short_mid_record_is_reported_not_an_error() {
        let mut f = pcap_file(
            0xa1b2_c3d4,
            false,
            1,
            &[(1, 0, b"abcd", 4), (2, 0, b"efgh", 4)],
        );
        f.truncate(f.len() - 2);
        let mut r = reader(f).unwrap();
        assert!(matches!(r.next_record().unwrap(), Some(Record::Frame(..))));
        assert!(matches!(r.next_record().unwrap(), Some(Record::CutShort)));
    }

    /// Hands out at most `chunk` bytes a read, as a pipe or a decoder may.
    struct Dribble {
        bytes: io::Cursor<Vec<u8>>,
        chunk: usize,
    }

    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.chunk);
            self.bytes.read(&mut buf[..n])
        }
    }

    /// Frames of many sizes, some larger than the buffer at first and one
    /// larger than it ever grows on its own; and a pcap file of them.
    fn refill_capture() -> (Vec<Vec<u8>>, Vec<u8>) {
        let big: Vec<u8> = (0..5 * READ_AHEAD / 2).map(|i| i as u8).collect();
        let sizes = [0, 1, 60, 1514, 65535, FIRST_READ - 40, FIRST_READ + 3];
        let payloads: Vec<Vec<u8>> = (0..300)
            .map(|i| vec![i as u8; sizes[i % sizes.len()]])
            .chain([big, b"after".to_vec()])
            .collect();
        let records: Vec<(u32, u32, &[u8], u32)> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u32, 0, &p[..], p.len() as u32))
            .collect();
        let file = pcap_file(0xa1b2_c3d4, false, 1, &records);
        (payloads, file)
    }

    #[test]
    fn records_across_refills_and_larger_than_the_buffer_are_whole() {
        let (payloads, file) = refill_capture();
        for chunk in [7, 4096, usize::MAX] {
            let input = Dribble {
                bytes: io::Cursor::new(file.clone()),
                chunk,
            };
            let r = CaptureReader::from_reader(Path::new("mem.pcap"), Box::new(input)).unwrap();
            let got = frames(r);
            assert_eq!(got.len(), payloads.len(), "chunk {chunk}");
            for (i, (frame, payload)) in got.iter().zip(&payloads).enumerate() {
                assert_eq!(frame.1, i as i64 * 1_000_000, "chunk {chunk}");
                assert!(frame.3 == *payload, "frame {i}, chunk {chunk}");
            }
        }
    }

    #[test]
    fn lent_buffers_keep_the_frames_returned_before_the_reader_moved_off() {
        let (payloads, file) = refill_capture();
        // Frames returned from the present buffer: (offset, length).
        fn check(
            buf: &[u8],
            lent: &mut Vec<(usize, usize)>,
            payloads: &[Vec<u8>],
            next: &mut usize,
        ) {
            for (at, len) in lent.drain(..) {
                assert!(buf[at..at + len] == payloads[*next][..], "frame {next}");
                *next += 1;
            }
        }
        for chunk in [7, 4096, usize::MAX] {
            let input = Dribble {
                bytes: io::Cursor::new(file.clone()),
                chunk,
            };
            let mut r = CaptureReader::from_reader(Path::new("mem.pcap"), Box::new(input)).unwrap();
            r.lend_buffers();
            let (mut lent, mut next, mut retired) = (Vec::new(), 0, 0);
            loop {
                let len = match r.next_record().expect("readable") {
                    Some(Record::Frame(_, f)) => Some(f.data.len()),
                    Some(Record::CutShort) => panic!("unexpected cut"),
                    None => None,
                };
                if let Some(old) = r.take_retired() {
                    check(&old, &mut lent, &payloads, &mut next);
                    // Read into again: what it held must not be needed.
                    r.recycle(old);
                    retired += 1;
                }
                match len {
                    Some(len) => lent.push((r.frame_offset(), len)),
                    None => break,
                }
            }
            check(&r.into_buffer(), &mut lent, &payloads, &mut next);
            assert_eq!(next, payloads.len(), "chunk {chunk}");
            assert!(retired > 10, "chunk {chunk}: {retired} buffers retired");
        }
    }

    #[test]
    fn a_length_field_alone_does_not_grow_the_buffer() {
        let claim = |mut f: Vec<u8>, header: &[u8], follows: usize| {
            f.extend_from_slice(header);
            f.resize(f.len() + follows, 7);
            let len = f.len();
            let mut r = reader(f).unwrap();
            assert!(matches!(r.next_record().unwrap(), Some(Record::CutShort)));
            (r.buf.len(), len)
        };
        let mut record = vec![0; 8];
        record.extend_from_slice(&MAX_FRAME.to_le_bytes());
        record.extend_from_slice(&MAX_FRAME.to_le_bytes());
        let mut block = LE.u32(6).to_vec();
        block.extend_from_slice(&LE.u32(MAX_FRAME + 64));
        for (file, header) in [
            (pcap_file(0xa1b2_c3d4, false, 1, &[]), &record),
            (LE.shb(), &block),
        ] {
            let (held, _) = claim(file.clone(), header, 100);
            assert_eq!(held, FIRST_READ);
            let (held, len) = claim(file, header, 3 * READ_AHEAD);
            assert!(held >= len - 100 && held <= 2 * len, "{held} for {len}");
        }
    }

    #[test]
    fn errors_name_the_offset_after_what_was_read() {
        let offset = |bytes: Vec<u8>| match reader(bytes).and_then(|mut r| {
            while r.next_record()?.is_some() {}
            Ok(())
        }) {
            Err(ReadError::Corrupt { offset, .. }) => offset,
            other => panic!("not corrupt: {other:?}"),
        };
        // After the record header that holds the impossible length.
        let mut f = pcap_file(0xa1b2_c3d4, false, 1, &[(1, 0, b"ab", 2)]);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&(MAX_FRAME + 1).to_le_bytes());
        f.extend_from_slice(&[0; 4]);
        assert_eq!(offset(f), 24 + 18 + 16);
        // A file header cut short: after all there was.
        assert_eq!(
            offset(pcap_file(0xa1b2_c3d4, false, 1, &[])[..20].to_vec()),
            20
        );
        // After the whole block whose contents are wrong.
        let mut f = LE.shb();
        f.extend(LE.block(1, &[0; 4]));
        assert_eq!(offset(f), 28 + 16);
        let mut f = LE.shb();
        f.extend(LE.idb(1, None));
        f.extend(LE.epb(3, 0, b"x"));
        assert_eq!(offset(f), 28 + 20 + 36);
    }

    #[test]
    fn impossible_record_length_is_corrupt() {
        let mut f = pcap_file(0xa1b2_c3d4, false, 1, &[]);
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&u32::MAX.to_le_bytes());
        f.extend_from_slice(&[0; 4]);
        let err = reader(f).unwrap().next_record().err().expect("corrupt");
        assert!(err.to_string().contains("impossible"), "{err}");
    }

    #[test]
    fn unknown_format_names_the_file_and_magic() {
        let err = reader(b"hello world".to_vec()).expect_err("not a capture");
        assert_eq!(
            err.to_string(),
            "mem.pcap: not a pcap or pcapng file (starts with 68656c6c)"
        );
        assert!(reader(Vec::new()).is_err());
    }

    /// Writes pcapng blocks in one byte order.
    #[derive(Clone, Copy)]
    struct Ng {
        be: bool,
    }

    const LE: Ng = Ng { be: false };
    const BE: Ng = Ng { be: true };

    impl Ng {
        fn u16(self, v: u16) -> [u8; 2] {
            if self.be {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }

        fn u32(self, v: u32) -> [u8; 4] {
            if self.be {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }

        fn block(self, kind: u32, body: &[u8]) -> Vec<u8> {
            let padded = (body.len() + 3) & !3;
            let total = (12 + padded) as u32;
            let mut b = self.u32(kind).to_vec();
            b.extend_from_slice(&self.u32(total));
            b.extend_from_slice(body);
            b.resize(8 + padded, 0);
            b.extend_from_slice(&self.u32(total));
            b
        }

        fn shb(self) -> Vec<u8> {
            let mut body = self.u32(0x1a2b_3c4d).to_vec();
            body.extend_from_slice(&self.u16(1));
            body.extend_from_slice(&self.u16(0));
            body.extend_from_slice(&u64::MAX.to_le_bytes());
            self.block(SECTION_HEADER, &body)
        }

        /// An Interface Description Block with `options` as they stand.
        fn idb_with_options(self, link: u16, options: &[u8]) -> Vec<u8> {
            let mut body = self.u16(link).to_vec();
            body.extend_from_slice(&[0, 0]);
            body.extend_from_slice(&self.u32(65535));
            body.extend_from_slice(options);
            self.block(1, &body)
        }

        fn idb(self, link: u16, tsresol: Option<u8>) -> Vec<u8> {
            let mut options = Vec::new();
            if let Some(r) = tsresol {
                options.extend_from_slice(&self.u16(9));
                options.extend_from_slice(&self.u16(1));
                options.extend_from_slice(&[r, 0, 0, 0]);
                options.extend_from_slice(&[0, 0, 0, 0]);
            }
            self.idb_with_options(link, &options)
        }

        fn epb(self, iface: u32, ts: u64, data: &[u8]) -> Vec<u8> {
            let mut body = self.u32(iface).to_vec();
            body.extend_from_slice(&self.u32((ts >> 32) as u32));
            body.extend_from_slice(&self.u32(ts as u32));
            body.extend_from_slice(&self.u32(data.len() as u32));
            body.extend_from_slice(&self.u32(data.len() as u32));
            body.extend_from_slice(data);
            self.block(6, &body)
        }
    }

    #[test]
    fn pcapng_with_two_link_types_and_resolutions() {
        let mut f = LE.shb();
        f.extend(LE.idb(1, None));
        f.extend(LE.idb(276, Some(9))); // nanoseconds
        f.extend(LE.block(4, &[0; 8])); // a name resolution block: skipped
        f.extend(LE.epb(0, 5_000_001, b"eth"));
        f.extend(LE.epb(1, 5_000_001_000, b"sll2"));
        let r = reader(f).unwrap();
        let got = frames(r);
        assert_eq!(got[0], (LinkType::ETHERNET, 5_000_001, 3, b"eth".to_vec()));
        assert_eq!(
            got[1],
            (LinkType::LINUX_SLL2, 5_000_001, 4, b"sll2".to_vec())
        );
    }

    #[test]
    fn pcapng_packet_on_undeclared_interface_is_corrupt() {
        let mut f = LE.shb();
        f.extend(LE.epb(0, 0, b"x"));
        assert!(reader(f).unwrap().next_record().is_err());
    }

    #[test]
    fn pcapng_option_cut_short_ends_the_option_list() {
        // if_tsresol says one byte of value, but the block ends first.
        let mut cut = LE.u16(9).to_vec();
        cut.extend_from_slice(&LE.u16(1));
        // A comment that overruns the block hides the milliseconds after it.
        let mut overrun = LE.u16(1).to_vec();
        overrun.extend_from_slice(&LE.u16(0xffff));
        overrun.extend_from_slice(&LE.u16(9));
        overrun.extend_from_slice(&LE.u16(1));
        overrun.extend_from_slice(&[3, 0, 0, 0]);
        for options in [cut, overrun] {
            let mut f = LE.shb();
            f.extend(LE.idb_with_options(1, &options));
            f.extend(LE.epb(0, 1_500_000, b"x"));
            f.extend(LE.epb(0, 2_500_000, b"y"));
            let got = frames(reader(f).unwrap());
            assert_eq!((got[0].1, got[1].1), (1_500_000, 2_500_000));
        }
    }

    #[test]
    fn pcapng_timestamps_never_overflow_or_turn_negative() {
        let ts = |tsresol: u8, raw: u64| {
            let mut f = LE.shb();
            f.extend(LE.idb(1, Some(tsresol)));
            f.extend(LE.epb(0, raw, b"x"));
            frames(reader(f).unwrap())[0].1
        };
        // One unit a second: u64::MAX seconds is beyond any timestamp.
        assert_eq!(ts(0, u64::MAX), i64::MAX);
        assert_eq!(ts(0, 1_763_728_526), 1_763_728_526_000_000);
        assert_eq!(ts(6, u64::MAX), i64::MAX);
        assert_eq!(ts(9, u64::MAX), 18_446_744_073_709_551);
        assert_eq!(ts(19, u64::MAX), 1_844_674);
        // 2^-n seconds.
        assert_eq!(ts(0x80, u64::MAX), i64::MAX);
        assert_eq!(ts(0x80 | 10, 3 << 9), 1_500_000);
        assert_eq!(ts(0x80 | 20, (5 << 20) + (1 << 19)), 5_500_000);
        assert_eq!(ts(0x80 | 63, u64::MAX), 1_999_999);
        for n in 0..=63 {
            assert!(ts(0x80 | n, u64::MAX) > 0, "2^-{n}");
        }
        // Resolutions no u64 holds fall back to microseconds.
        assert_eq!(ts(0x80 | 64, 7), 7);
        assert_eq!(ts(20, 7), 7);
    }

    /// How reading a whole capture ended.
    #[derive(Debug, PartialEq)]
    enum Ending {
        Clean,
        CutShort,
        Refused,
    }

    /// Reads `bytes` to the end: the frames read and how it ended. Every
    /// frame's bytes must agree with its lengths.
    fn read_to_end(bytes: &[u8]) -> (usize, Ending) {
        let Ok(mut r) = reader(bytes.to_vec()) else {
            return (0, Ending::Refused);
        };
        let mut frames = 0;
        loop {
            match r.next_record() {
                Ok(Some(Record::Frame(_, f))) => {
                    assert_eq!(f.data.len(), f.caplen as usize);
                    assert!(f.caplen <= f.wirelen && f.ts.0 >= 0, "{f:?}");
                    frames += 1;
                    // Every record takes at least 12 bytes of the file.
                    assert!(frames <= bytes.len() / 12, "reading does not advance");
                }
                Ok(Some(Record::CutShort)) => return (frames, Ending::CutShort),
                Ok(None) => return (frames, Ending::Clean),
                Err(_) => return (frames, Ending::Refused),
            }
        }
    }

    #[test]
    fn every_mutation_and_truncation_of_a_capture_reads_to_an_end() {
        let mut ng = LE.shb();
        ng.extend(LE.idb(1, Some(9)));
        ng.extend(LE.block(4, &[0; 8]));
        ng.extend(LE.epb(0, 5, b"abcdef"));
        ng.extend(LE.block(3, &[&LE.u32(5)[..], b"xyz"].concat()));
        let mut packet_block = LE.u16(0).to_vec();
        packet_block.extend_from_slice(&[0; 10]);
        packet_block.extend_from_slice(&LE.u32(2));
        packet_block.extend_from_slice(&LE.u32(2));
        packet_block.extend_from_slice(b"pb");
        ng.extend(LE.block(2, &packet_block));
        let mut ng_be = BE.shb();
        ng_be.extend(BE.idb(276, Some(0x80 | 20)));
        ng_be.extend(BE.epb(0, 1 << 40, b"be"));
        ng_be.extend(BE.shb());
        ng_be.extend(BE.idb(1, None));
        ng_be.extend(BE.epb(0, 1, b""));
        let pcap = pcap_file(
            0xa1b2_c3d4,
            false,
            1,
            &[(1, 2, b"abcd", 60), (3, 4, b"", 0)],
        );
        let pcap_be = pcap_file(0xa1b2_3c4d, true, 113, &[(5, 6, b"xy", 2)]);
        for (file, frames) in [(ng, 3), (ng_be, 2), (pcap, 2), (pcap_be, 1)] {
            assert_eq!(read_to_end(&file), (frames, Ending::Clean));
            for at in 0..file.len() {
                let was = file[at];
                let values = [
                    0,
                    1,
                    3,
                    0x7f,
                    0x80,
                    0xfe,
                    0xff,
                    was ^ 1,
                    was.wrapping_add(4),
                ];
                for value in values {
                    let mut mutated = file.clone();
                    mutated[at] = value;
                    read_to_end(&mutated);
                }
            }
            let mut before = 0;
            for len in 0..file.len() {
                let (got, ending) = read_to_end(&file[..len]);
                assert!(got >= before && got <= frames, "cut at {len}");
                assert!(got < frames || ending != Ending::Clean || len == file.len());
                before = got;
            }
        }
    }

    #[test]
    fn pcapng_blocks_are_read_in_their_sections_byte_order() {
        let mut f = BE.shb();
        f.extend(BE.idb(1, Some(3))); // milliseconds
        f.extend(BE.block(4, &[0; 8]));
        f.extend(BE.epb(0, 7_001, b"big"));
        // A second section, little-endian, starts its own interface list.
        f.extend(LE.shb());
        f.extend(LE.idb(101, None));
        f.extend(LE.epb(0, 8_000_002, b"little"));
        assert_eq!(
            frames(reader(f).unwrap()),
            [
                (LinkType::ETHERNET, 7_001_000, 3, b"big".to_vec()),
                (LinkType::RAW, 8_000_002, 6, b"little".to_vec()),
            ]
        );
    }

    #[test]
    fn gzip_compressed_capture_is_read_from_disk() {
        let plain = pcap_file(0xa1b2_c3d4, false, 101, &[(1, 2, b"ip", 2)]);
        let dir = std::env::temp_dir().join(format!("conntrace-gz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcap.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(&plain).unwrap();
        gz.finish().unwrap();
        let got = frames(CaptureReader::open(&path).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, [(LinkType::RAW, 1_000_002, 2, b"ip".to_vec())]);
    }

    #[test]
    fn truncated_gzip_reads_the_frames_before_the_cut() {
        let records: Vec<(u32, u32, &[u8], u32)> = (0..200)
            .map(|i| (i, 0, &b"some frame bytes"[..], 16))
            .collect();
        let plain = pcap_file(0xa1b2_c3d4, false, 101, &records);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        gz.write_all(&plain).unwrap();
        let whole = gz.finish().unwrap();
        let dir = std::env::temp_dir().join(format!("conntrace-gzcut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcap.gz");
        // Cut in the middle of the deflate data: the trailer is gone.
        std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
        let mut r = CaptureReader::open(&path).unwrap();
        let mut frames = 0;
        let end = loop {
            match r.next_record().expect("a cut is not an error") {
                Some(Record::Frame(..)) => frames += 1,
                other => break other.is_some(),
            }
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(r.gzip_truncated());
        assert!(end, "cut in the middle of a record");
        assert!((50..150).contains(&frames), "{frames}");
    }

    #[test]
    fn pcapng_if_tsoffset_moves_every_timestamp() {
        let mut options = LE.u16(14).to_vec();
        options.extend_from_slice(&LE.u16(8));
        options.extend_from_slice(&1_000i64.to_le_bytes());
        let mut f = LE.shb();
        f.extend(LE.idb_with_options(1, &options));
        f.extend(LE.epb(0, 2_500_000, b"x"));
        assert_eq!(frames(reader(f).unwrap())[0].1, 1_002_500_000);
        // Before the epoch: clamped, as a timestamp never turns negative.
        let mut options = BE.u16(14).to_vec();
        options.extend_from_slice(&BE.u16(8));
        options.extend_from_slice(&(-5i64).to_be_bytes());
        let mut f = BE.shb();
        f.extend(BE.idb_with_options(1, &options));
        f.extend(BE.epb(0, 2_500_000, b"x"));
        assert_eq!(frames(reader(f).unwrap())[0].1, 0);
    }

    #[test]
    fn simple_packet_block_captured_length_excludes_padding() {
        let spb = |wirelen: u32, data: &[u8]| {
            let mut body = LE.u32(wirelen).to_vec();
            body.extend_from_slice(data);
            LE.block(3, &body)
        };
        // Snaplen 65535: a 5-byte packet is followed by 3 bytes of padding.
        let mut f = LE.shb();
        f.extend(LE.idb(1, None));
        f.extend(spb(5, b"abcde"));
        assert_eq!(frames(reader(f).unwrap())[0].3, b"abcde");
        // Snaplen 6: a 100-byte packet cut to 6 bytes, padded to 8.
        let mut idb = LE.u16(1).to_vec();
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&LE.u32(6));
        let mut f = LE.shb();
        f.extend(LE.block(1, &idb));
        f.extend(spb(100, b"abcdef"));
        let got = frames(reader(f).unwrap());
        assert_eq!((got[0].2, got[0].3.as_slice()), (100, &b"abcdef"[..]));
    }

    #[test]
    fn pcapng_block_whose_trailing_length_differs_is_corrupt_at_its_offset() {
        let mut f = LE.shb();
        f.extend(LE.idb(1, None));
        let mut epb = LE.epb(0, 1, b"abcd");
        let end = epb.len();
        epb[end - 4..].copy_from_slice(&LE.u32(999));
        f.extend(epb);
        let err = frames_or_error(f);
        assert_eq!(
            err,
            format!(
                "mem.pcap: block length {} at its start but 999 at its end at byte {}",
                end,
                28 + 20 + end
            )
        );
        let mut f = LE.shb();
        let len = f.len();
        f[len - 4..].copy_from_slice(&LE.u32(32));
        assert!(frames_or_error(f).contains("section header length 28 at its start but 32"));
    }

    /// Reads to the end, which must be an error: its message.
    fn frames_or_error(bytes: Vec<u8>) -> String {
        let mut r = match reader(bytes) {
            Ok(r) => r,
            Err(e) => return e.to_string(),
        };
        loop {
            match r.next_record() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("read to a clean end"),
                Err(e) => return e.to_string(),
            }
        }
    }

    #[test]
    fn many_interface_blocks_keep_each_link_type_once() {
        let mut f = LE.shb();
        for k in 0..3000u32 {
            f.extend(LE.idb((k % 1000) as u16, None));
        }
        f.extend(LE.epb(2999, 1, b"x"));
        let mut r = reader(f).unwrap();
        while r.next_record().unwrap().is_some() {}
        assert_eq!(r.link_types().len(), 1000);
        assert_eq!(r.link_types()[999], LinkType(999));
    }
}
