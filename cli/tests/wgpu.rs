//! `vdm crosscheck --device wgpu` on a VDM and a DDPM trained here: the bound per image, seeded
//! samples and training steps agree with the CPU within the command's default tolerances. Built
//! only with the feature, and needs a Vulkan driver (Mesa's lavapipe where there is no GPU):
//! `cargo test -p vdm-cli --features wgpu --test wgpu` (`.ci/run` does).
#![cfg(feature = "wgpu")]

mod common;

use common::{s, text, tiny_ddpm, trained_run, vdm, write_config};

fn crosscheck(run: &str) -> String {
    let out = vdm(&["crosscheck", "--checkpoint", run, "--device", "wgpu", "--train-steps", "2", "--samples", "8"]);
    let t = text(&out);
    assert!(out.status.success() && t.contains("wgpu agrees with the CPU within every tolerance"), "{t}");
    for check in ["bound, wgpu", "samples (8 images", "parameters after 2 steps"] {
        assert!(t.contains(check), "no `{check}` in:\n{t}");
    }
    t
}

#[test]
fn a_vdm_and_a_ddpm_agree_on_wgpu_and_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    crosscheck(&s(&trained_run(dir.path())));

    let ddpm_dir = tempfile::tempdir().unwrap();
    let config = write_config(ddpm_dir.path(), &tiny_ddpm());
    let run = s(&ddpm_dir.path().join("run"));
    let out = vdm(&["train", "--config", &config, "--run", &run]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(crosscheck(&run).contains("DDIM 10 steps"), "a DDPM's samples take at most its T steps");
}
