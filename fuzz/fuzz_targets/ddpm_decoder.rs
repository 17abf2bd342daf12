#![no_main]
//! `cargo fuzz run ddpm_decoder --sanitizer none` (see fuzz/README.md); the invariant is `vdm_fuzz::check_ddpm_decoder`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vdm_fuzz::check_ddpm_decoder(data));
