//! The application-layer analyser of one connection. The body, and what it asserts, is
//! `conntrace::fuzzing::http_analyzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conntrace::fuzzing::http_analyzer(data));
