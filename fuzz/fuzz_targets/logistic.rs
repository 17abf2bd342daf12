#![no_main]
//! `cargo fuzz run logistic --sanitizer none` (see fuzz/README.md); the invariant is `vdm_fuzz::check_logistic`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vdm_fuzz::check_logistic(data));
