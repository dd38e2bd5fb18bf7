//! The capture-file reader: a whole pcap, pcapng or gzip file. The body, and what it asserts, is
//! `conntrace::fuzzing::capture_reader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conntrace::fuzzing::capture_reader(data));
