//! Fuzz the capture-file reader: the input is a whole file, pcap or pcapng in
//! either byte order, read record by record to its end. Any panic is a bug; so
//! is a frame whose bytes disagree with its lengths, or memory that the
//! input's own length does not justify.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use conntrace::source::{CaptureReader, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Box::new(Cursor::new(data.to_vec()));
    let Ok(mut reader) = CaptureReader::from_reader(Path::new("fuzz.pcap"), input) else {
        return;
    };
    while let Ok(Some(Record::Frame(_, frame))) = reader.next_record() {
        assert_eq!(frame.data.len(), frame.caplen as usize);
        assert!(frame.caplen <= frame.wirelen);
        assert!(frame.ts.0 >= 0, "a timestamp from unsigned fields is negative");
    }
});
