//! Reassembly of one direction, fed a scripted sequence of segments. The body, and what it asserts, is
//! `conntrace::fuzzing::reassembly`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conntrace::fuzzing::reassembly(data));
