//! What the CLI tests share: running the binary, a tiny configuration, a trained tiny run.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn vdm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vdm")).args(args).output().expect("the vdm binary runs")
}

/// stdout and stderr together.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Asserts that `out` failed with a message containing every one of `expected`.
pub fn assert_fails_with(out: &Output, expected: &[&str]) {
    let t = text(out);
    assert!(!out.status.success(), "expected a failure, got success:\n{t}");
    assert!(!t.contains("panicked"), "a panic instead of an error:\n{t}");
    for e in expected {
        assert!(t.contains(e), "expected `{e}` in:\n{t}");
    }
}

pub const TINY: &str = r#"
checkpoint_every = 2

[data]
kind = "digits"
test_size = 40

[model.score]
n_embd = 8
n_layer = 1
groups = 4
dropout = 0.0
fourier_exponents = [4]

[model.schedule]
kind = "scalar"
gamma_min = -13.3
gamma_max = 5.0

[train]
batch_size = 8
steps = 4
lr = 0.002
warmup_steps = 2

[eval]
every = 2
batch_size = 40
"#;

/// [`TINY`] as a DDPM (T = 10, the hybrid loss) with a small U-Net that has attention.
pub fn tiny_ddpm() -> String {
    let ddpm = TINY.replace(
        "[model.score]\nn_embd = 8\nn_layer = 1\ngroups = 4\ndropout = 0.0\nfourier_exponents = [4]\n\n[model.schedule]\nkind = \"scalar\"\ngamma_min = -13.3\ngamma_max = 5.0\n",
        "[model]\nfamily = \"ddpm\"\ntime_steps = 10\nloss = \"hybrid\"\n\n[model.unet]\nch = 8\nch_mult = [1, 2]\nnum_res_blocks = 1\nattn_resolutions = [4]\ngroups = 4\n",
    );
    assert!(ddpm.contains("family = \"ddpm\""), "TINY no longer has the sections tiny_ddpm replaces");
    ddpm
}

pub fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Trains the tiny configuration (4 steps) into `dir/run` and returns that path.
pub fn trained_run(dir: &Path) -> PathBuf {
    let config = write_config(dir, TINY);
    let run = dir.join("run");
    let out = vdm(&["train", "--config", &config, "--run", &run.to_string_lossy()]);
    assert!(out.status.success(), "train failed:\n{}", text(&out));
    run
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
