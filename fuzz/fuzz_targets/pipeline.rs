//! The whole pipeline: capture bytes in, JSON report out. The body, and what it asserts, is
//! `conntrace::fuzzing::pipeline`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conntrace::fuzzing::pipeline(data));
