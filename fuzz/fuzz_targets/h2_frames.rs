//! The HTTP/2 frame reader and its HPACK decoder. The body, and what it asserts, is
//! `conntrace::fuzzing::h2_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conntrace::fuzzing::h2_frames(data));
