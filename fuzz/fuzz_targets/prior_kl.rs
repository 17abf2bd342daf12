#![no_main]
//! `cargo fuzz run prior_kl --sanitizer none` (see fuzz/README.md); the invariant is `vdm_fuzz::check_prior_kl`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vdm_fuzz::check_prior_kl(data));
