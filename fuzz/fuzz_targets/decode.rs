//! Link, IP and TCP decoding of one frame. The body, and what it asserts, is
//! `conntrace::fuzzing::decode_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conntrace::fuzzing::decode_frame(data));
