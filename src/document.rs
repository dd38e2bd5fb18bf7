//! `--format json` for `replay`, written from rows held compressed.
//!
//! The document lists every connection by stream number and every request
//! by the time it was sent, so its rows cannot be written as connections are
//! finalised. Instead each row is rendered as it comes, exactly as it will
//! appear in the document, and kept in sorted runs compressed with zstd
//! (JSON of one capture repeats itself: a row costs tens of bytes there).
//! At the end the runs are merged into the document. A few runs at a time
//! are merged into one as they pile up (as a log-structured merge does), so
//! the merge at the end reads a few of them at once, whatever the input size.
//!
//! The bytes are those `serde_json::to_writer_pretty` writes for the whole
//! report: each row is its pretty JSON indented two levels, and the rest of
//! the report is spliced around the two arrays.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};

use serde::Serialize;

use crate::pipeline::RecordSink;
use crate::report::{ConnectionRecord, Report, RequestRecord};

/// Where a row goes in its array: connections by stream; requests by time
/// sent, then stream and depth (as `flow::sort_records` orders them).
type Key = (i64, u64, u32);

/// Rendered rows held uncompressed before they are sorted into a run.
const RUN_BYTES: usize = 8 << 20;

/// Runs of one level merged into one of the next once there are this many.
const FAN_IN: usize = 16;

/// zstd's fastest level; JSON rows still shrink thirty-fold or more.
const LEVEL: i32 = 1;

/// A decoder's window: what each run being merged holds while it is read.
const WINDOW_LOG: u32 = 17;

/// The rows of one array: those not yet compressed, and sorted runs.
struct Rows {
    /// Rendered bytes held before a run is sealed ([`RUN_BYTES`]).
    run_bytes: usize,
    pending: Vec<(Key, u32, u32)>,
    text: Vec<u8>,
    /// Oldest first; a run's level says how many merges made it.
    runs: Vec<(u32, Vec<u8>)>,
    count: u64,
}

impl Rows {
    fn new(run_bytes: usize) -> Rows {
        Rows {
            run_bytes,
            pending: Vec::new(),
            text: Vec::new(),
            runs: Vec::new(),
            count: 0,
        }
    }

    fn add<T: Serialize>(&mut self, key: Key, row: &T) -> io::Result<()> {
        // Pretty inside two arrays, the row is indented as it is inside the
        // report's: keep it without the arrays' brackets.
        const OPEN: &[u8] = b"[\n  [\n    ";
        const CLOSE: &[u8] = b"\n  ]\n]";
        let start = self.text.len();
        serde_json::to_writer_pretty(&mut self.text, &[[row]])?;
        let (start, end) = (start + OPEN.len(), self.text.len() - CLOSE.len());
        debug_assert!(self.text[start - OPEN.len()..].starts_with(OPEN));
        debug_assert!(self.text.ends_with(CLOSE));
        self.pending.push((key, offset(start)?, offset(end)?));
        self.count += 1;
        if self.text.len() >= self.run_bytes {
            self.seal()?;
        }
        Ok(())
    }

    /// Sort the pending rows into a run; merge runs that piled up.
    fn seal(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.pending.sort_unstable_by_key(|&(key, ..)| key);
        let mut run = encoder()?;
        for &(key, start, end) in &self.pending {
            write_record(&mut run, key, &self.text[start as usize..end as usize])?;
        }
        self.runs.push((0, run.finish()?));
        self.pending.clear();
        self.text.clear();
        loop {
            let n = self.runs.len();
            if n < FAN_IN {
                break;
            }
            let level = self.runs[n - 1].0;
            if self.runs[n - FAN_IN..].iter().any(|&(l, _)| l != level) {
                break;
            }
            let merged: Vec<Vec<u8>> = self.runs.drain(n - FAN_IN..).map(|(_, r)| r).collect();
            let mut run = encoder()?;
            merge(merged.iter().map(Vec::as_slice), |key, row| {
                write_record(&mut run, key, row)
            })?;
            self.runs.push((level + 1, run.finish()?));
        }
        Ok(())
    }

    /// The array's elements, in order, as the report's pretty JSON has them.
    fn write_array(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.count == 0 {
            return out.write_all(b"[]");
        }
        self.seal()?;
        out.write_all(b"[")?;
        let mut first = true;
        merge(self.runs.iter().map(|(_, r)| r.as_slice()), |_, row| {
            out.write_all(if first { b"\n    " } else { b",\n    " })?;
            first = false;
            out.write_all(row)
        })?;
        out.write_all(b"\n  ]")
    }
}

fn offset(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::other("a report row is larger than 4 GiB"))
}

fn encoder() -> io::Result<zstd::stream::write::Encoder<'static, Vec<u8>>> {
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), LEVEL)?;
    e.window_log(WINDOW_LOG)?;
    Ok(e)
}

/// A row in a run: its key, its length, its bytes.
fn write_record(out: &mut impl Write, key: Key, row: &[u8]) -> io::Result<()> {
    out.write_all(&key.0.to_le_bytes())?;
    out.write_all(&key.1.to_le_bytes())?;
    out.write_all(&key.2.to_le_bytes())?;
    out.write_all(&offset(row.len())?.to_le_bytes())?;
    out.write_all(row)
}

/// One run read back a row at a time.
struct RunReader<'a> {
    decoder: zstd::stream::read::Decoder<'static, &'a [u8]>,
    row: Vec<u8>,
}

impl<'a> RunReader<'a> {
    fn new(run: &'a [u8]) -> io::Result<RunReader<'a>> {
        Ok(RunReader {
            decoder: zstd::stream::read::Decoder::with_buffer(run)?,
            row: Vec::new(),
        })
    }

    /// The next row's key, its bytes left in `self.row`; `None` at the end.
    fn next(&mut self) -> io::Result<Option<Key>> {
        let mut head = [0u8; 24];
        match crate::source::read_full(&mut self.decoder, &mut head)? {
            0 => return Ok(None),
            24 => {}
            _ => return Err(io::Error::other("a run of report rows ended inside a row")),
        }
        let word = |at: usize| <[u8; 8]>::try_from(&head[at..at + 8]).expect("8 bytes");
        let half = |at: usize| <[u8; 4]>::try_from(&head[at..at + 4]).expect("4 bytes");
        let key = (
            i64::from_le_bytes(word(0)),
            u64::from_le_bytes(word(8)),
            u32::from_le_bytes(half(16)),
        );
        let len = u32::from_le_bytes(half(20)) as usize;
        self.row.resize(len, 0);
        self.decoder.read_exact(&mut self.row)?;
        Ok(Some(key))
    }
}

/// Every row of `runs` (each sorted) to `each`, in key order.
fn merge<'a>(
    runs: impl Iterator<Item = &'a [u8]>,
    mut each: impl FnMut(Key, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut runs = runs.map(RunReader::new).collect::<io::Result<Vec<_>>>()?;
    let mut heap = BinaryHeap::new();
    for (i, run) in runs.iter_mut().enumerate() {
        if let Some(key) = run.next()? {
            heap.push(Reverse((key, i)));
        }
    }
    while let Some(Reverse((key, i))) = heap.pop() {
        each(key, &runs[i].row)?;
        if let Some(key) = runs[i].next()? {
            heap.push(Reverse((key, i)));
        }
    }
    Ok(())
}

/// How the document's output is opened, once the input has been read (a
/// replay that fails writes nothing).
pub type Opener = Box<dyn FnOnce() -> io::Result<Box<dyn Write + Send>> + Send>;

/// Keeps the rows compressed as connections finish; writes the document at
/// the end.
pub struct JsonDocumentSink {
    connections: Rows,
    requests: Rows,
    open: Option<Opener>,
}

impl JsonDocumentSink {
    pub fn new(open: Opener) -> JsonDocumentSink {
        JsonDocumentSink::with_run_bytes(open, RUN_BYTES)
    }

    fn with_run_bytes(open: Opener, run_bytes: usize) -> JsonDocumentSink {
        JsonDocumentSink {
            connections: Rows::new(run_bytes),
            requests: Rows::new(run_bytes),
            open: Some(open),
        }
    }
}

impl RecordSink for JsonDocumentSink {
    fn connection(
        &mut self,
        record: &ConnectionRecord,
        requests: &[RequestRecord],
    ) -> io::Result<()> {
        self.connections.add((0, record.stream, 0), record)?;
        self.requests(requests)
    }

    fn requests(&mut self, requests: &[RequestRecord]) -> io::Result<()> {
        for r in requests {
            self.requests.add((r.sent.0, r.stream, r.depth), r)?;
        }
        Ok(())
    }

    fn finish(&mut self, report: &Report) -> io::Result<()> {
        // The report without its rows, pretty; the arrays go where its two
        // empty ones are (top-level keys, the only ones indented by two).
        let frame = serde_json::to_vec_pretty(report)?;
        let (head, rest) = split_at(&frame, b"\n  \"connections\": ")?;
        let rest = rest.strip_prefix(b"[]").ok_or_else(not_empty)?;
        let (middle, rest) = split_at(rest, b"\n  \"requests\": ")?;
        let tail = rest.strip_prefix(b"[]").ok_or_else(not_empty)?;
        let open = self
            .open
            .take()
            .ok_or_else(|| io::Error::other("the JSON document was already written"))?;
        let mut out = open()?;
        out.write_all(head)?;
        self.connections.write_array(&mut out)?;
        out.write_all(middle)?;
        self.requests.write_array(&mut out)?;
        out.write_all(tail)?;
        out.write_all(b"\n")?;
        out.flush()
    }
}

/// `text` up to and including `mark`, and what follows it.
fn split_at<'a>(text: &'a [u8], mark: &[u8]) -> io::Result<(&'a [u8], &'a [u8])> {
    let at = text
        .windows(mark.len())
        .position(|w| w == mark)
        .ok_or_else(|| io::Error::other("the report has no place for its rows"))?;
    Ok(text.split_at(at + mark.len()))
}

fn not_empty() -> io::Error {
    io::Error::other("the report already holds rows")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{connection_record, report, request_record};
    use std::sync::{Arc, Mutex};

    /// An output the test reads back once the sink wrote it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The document from `sink` fed `rows` in the order given.
    fn written(
        run_bytes: usize,
        rows: &[(ConnectionRecord, Vec<RequestRecord>)],
        end: &Report,
    ) -> Vec<u8> {
        let out = Shared::default();
        let handle = out.clone();
        let mut sink = JsonDocumentSink::with_run_bytes(
            Box::new(move || Ok(Box::new(handle) as Box<dyn Write + Send>)),
            run_bytes,
        );
        for (c, r) in rows {
            sink.connection(c, r).unwrap();
        }
        sink.finish(end).unwrap();
        let bytes = out.0.lock().unwrap().clone();
        bytes
    }

    #[test]
    fn the_document_from_compressed_runs_is_the_one_serde_writes_whole() {
        // 600 connections finalised out of order, each with up to 3
        // requests, some sent in the same microsecond as another stream's.
        let mut rows = Vec::new();
        for i in 0..600u64 {
            let stream = (i * 7919) % 600;
            let opened = stream as f64 * 0.01;
            let mut c = connection_record(stream, "10.0.0.1:40000", "10.0.0.2:80", opened);
            c.history = format!("ShAD\"{stream}\n");
            let requests: Vec<RequestRecord> = (1..=(stream % 4) as u32)
                .map(|d| request_record(stream, d, opened + (d as f64) * 0.005))
                .collect();
            rows.push((c, requests));
        }
        let mut connections: Vec<ConnectionRecord> = rows.iter().map(|(c, _)| c.clone()).collect();
        let mut requests: Vec<RequestRecord> = rows.iter().flat_map(|(_, r)| r.clone()).collect();
        crate::flow::sort_records(&mut connections, &mut requests);
        let whole = report(connections, requests);
        let mut expected = serde_json::to_vec_pretty(&whole).unwrap();
        expected.push(b'\n');
        let end = report(Vec::new(), Vec::new());
        let end = Report {
            summary: whole.summary.clone(),
            ..end
        };
        // One run; a run every few rows, so that runs are merged into
        // runs of the next level, and those again (600 / 16 / 16 > 1).
        for run_bytes in [RUN_BYTES, 2_000, 100] {
            let got = written(run_bytes, &rows, &end);
            assert!(
                got == expected,
                "run_bytes {run_bytes}: the documents differ"
            );
        }
    }

    #[test]
    fn with_no_rows_the_arrays_are_empty_as_serde_writes_them() {
        let end = report(Vec::new(), Vec::new());
        let mut expected = serde_json::to_vec_pretty(&end).unwrap();
        expected.push(b'\n');
        assert_eq!(written(RUN_BYTES, &[], &end), expected);
    }

    #[test]
    fn merged_runs_keep_every_row_in_key_order() {
        let mut rows = Rows::new(64);
        let keys: Vec<Key> = (0..5000u64)
            .map(|i| ((i * 31) as i64 % 977, i % 3, 0))
            .collect();
        for &k in &keys {
            rows.add(k, &k.1).unwrap();
        }
        assert!(rows.runs.iter().any(|&(level, _)| level >= 2));
        let mut seen = Vec::new();
        rows.seal().unwrap();
        merge(rows.runs.iter().map(|(_, r)| r.as_slice()), |k, _| {
            seen.push(k);
            Ok(())
        })
        .unwrap();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(seen, sorted);
    }
}
