#![no_main]
//! `cargo fuzz run sampling_steps --sanitizer none` (see fuzz/README.md); the invariant is `vdm_fuzz::check_sampling_steps`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vdm_fuzz::check_sampling_steps(data));
