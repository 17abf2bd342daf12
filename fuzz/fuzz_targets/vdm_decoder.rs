#![no_main]
//! `cargo fuzz run vdm_decoder --sanitizer none` (see fuzz/README.md); the invariant is `vdm_fuzz::check_vdm_decoder`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vdm_fuzz::check_vdm_decoder(data));
