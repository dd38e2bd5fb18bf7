//! The HTTP/1 head parsers, resynchronising scan and chunked body reader. The body, and what it asserts, is
//! `conntrace::fuzzing::http1`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conntrace::fuzzing::http1(data));
