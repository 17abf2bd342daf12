#![no_main]
//! `cargo fuzz run schedules --sanitizer none` (see fuzz/README.md); the invariant is `vdm_fuzz::check_schedules`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vdm_fuzz::check_schedules(data));
