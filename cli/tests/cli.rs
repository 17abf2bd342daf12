//! The `vdm` binary end to end, on a tiny model: train, resume, evaluate, sample, schedule, and
//! the errors a user sees.

use std::path::Path;
use std::process::{Command, Output};

fn vdm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vdm")).args(args).output().expect("the vdm binary runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

const TINY: &str = r#"
checkpoint_every = 2

[data]
kind = "digits"
test_size = 40

[model.score]
channels = 1
n_embd = 8
n_layer = 1
groups = 4
dropout = 0.0
fourier_exponents = [4]
conv = "taps"

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

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn train_resume_eval_sample_and_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), TINY);
    let run = dir.path().join("run");
    let run_s = run.to_string_lossy().into_owned();

    let out = vdm(&["train", "--config", &config, "--run", &run_s]);
    assert!(out.status.success(), "train failed:\n{}", text(&out));
    let log = text(&out);
    assert!(log.contains("per-pixel categorical"), "{log}");
    assert!(log.contains("test bpd T=inf (continuous)"), "{log}");
    assert_eq!(std::fs::read_to_string(run.join("latest")).unwrap(), "step-0000004");
    assert!(run.join("config.toml").is_file() && run.join("metrics.jsonl").is_file());

    // A second `train` into the same directory refuses to overwrite it.
    let again = vdm(&["train", "--config", &config, "--run", &run_s]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already holds a run") && text(&again).contains("--resume"), "{}", text(&again));

    // Resuming with more steps continues from step 4.
    let resumed = vdm(&["train", "--run", &run_s, "--resume", "--steps", "6"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(text(&resumed).contains("resuming") && text(&resumed).contains("at step 4"), "{}", text(&resumed));
    assert_eq!(std::fs::read_to_string(run.join("latest")).unwrap(), "step-0000006");

    let json = dir.path().join("eval.json");
    let eval = vdm(&["eval", "--checkpoint", &run_s, "--time-steps", "0", "--time-steps", "10", "--limit", "16", "--json", &json.to_string_lossy()]);
    assert!(eval.status.success(), "{}", text(&eval));
    assert!(text(&eval).contains("T=10:") && text(&eval).contains("± "), "{}", text(&eval));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["bounds"].as_array().unwrap().len(), 2);
    assert_eq!(report["bounds"][1]["images"], 16);

    let png = dir.path().join("s.png");
    let sample = vdm(&["sample", "--checkpoint", &run_s, "--n", "4", "--steps", "5", "--out", &png.to_string_lossy()]);
    assert!(sample.status.success(), "{}", text(&sample));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

    let plot = dir.path().join("g.png");
    let schedule = vdm(&["schedule", "--checkpoint", &run_s, "--points", "3", "--plot", &plot.to_string_lossy()]);
    assert!(schedule.status.success(), "{}", text(&schedule));
    assert!(text(&schedule).contains("log10 SNR") && plot.is_file(), "{}", text(&schedule));
}

#[test]
fn configuration_errors_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad_field = write_config(dir.path(), &TINY.replace("n_layer = 1", "n_layers = 1"));
    let out = vdm(&["train", "--config", &bad_field, "--run", &dir.path().join("r").to_string_lossy()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("run.toml") && text(&out).contains("n_layers"), "{}", text(&out));

    let bad_groups = write_config(dir.path(), &TINY.replace("groups = 4", "groups = 3"));
    let out = vdm(&["train", "--config", &bad_groups, "--run", &dir.path().join("r").to_string_lossy()]);
    assert!(text(&out).contains("score.groups (3) must divide score.n_embd (8)"), "{}", text(&out));

    let missing = vdm(&["eval", "--checkpoint", &dir.path().join("nowhere").to_string_lossy()]);
    assert!(!missing.status.success());
    assert!(text(&missing).contains("is not a checkpoint"), "{}", text(&missing));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn asking_for_cuda_without_it_says_how_to_get_it() {
    let out = vdm(&["bench", "--device", "cuda"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("built without CUDA support") && text(&out).contains("--features cuda"), "{}", text(&out));
    let out = vdm(&["crosscheck"]);
    assert!(!out.status.success() && text(&out).contains("--features cuda"), "{}", text(&out));
}

#[test]
fn the_default_config_parses_back() {
    let out = vdm(&["config"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &String::from_utf8(out.stdout).unwrap());
    let schedule = vdm(&["schedule", "--config", &path, "--points", "2"]);
    assert!(schedule.status.success(), "{}", text(&schedule));
}
