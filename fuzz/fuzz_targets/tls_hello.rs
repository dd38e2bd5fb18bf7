//! The TLS ClientHello parser. The body, and what it asserts, is
//! `conntrace::fuzzing::tls_hello`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| conntrace::fuzzing::tls_hello(data));
