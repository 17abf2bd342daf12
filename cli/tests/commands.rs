//! The documented exit codes (README, "What is guaranteed": 0 success, 1 an error, 2 a usage
//! error, 130 after Ctrl-C, tested in `hardening.rs`), and the commands no other test runs:
//! `vdm data`, `vdm plot`, `vdm bench`.

mod common;

use common::{s, text, trained_run, vdm};

/// Asserts the exit status and that no panic was reported.
fn assert_exit(out: &std::process::Output, code: i32, expected: &str) {
    let t = text(out);
    assert_eq!(out.status.code(), Some(code), "expected exit status {code}:\n{t}");
    assert!(!t.contains("panicked"), "a panic:\n{t}");
    assert!(t.contains(expected), "expected `{expected}` in:\n{t}");
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1() {
    // Usage errors, found by the argument parser before any work.
    assert_exit(&vdm(&["train", "--no-such-flag"]), 2, "unexpected argument");
    assert_exit(&vdm(&["sample", "--steps", "many"]), 2, "invalid value");
    assert_exit(&vdm(&["sample", "--sampler", "euler"]), 2, "invalid value");
    assert_exit(&vdm(&["no-such-command"]), 2, "unrecognized subcommand");
    // Failures of a well-formed command.
    let dir = tempfile::tempdir().unwrap();
    let missing = s(&dir.path().join("nothing-here"));
    assert_exit(&vdm(&["eval", "--checkpoint", &missing]), 1, "error: ");
    assert_exit(
        &vdm(&["sample", "--checkpoint", &missing, "--sampler", "ddim", "--eta", "-0.5"]),
        1,
        "between 0 and 1",
    );
    assert_exit(&vdm(&["sample", "--checkpoint", &missing, "--eta", "0.5"]), 1, "--eta is DDIM's");
    assert_exit(&vdm(&["sample", "--checkpoint", &missing, "--steps", "0"]), 1, "--steps must be at least 1");
    assert_exit(&vdm(&["data", "--config", &missing]), 1, "nothing-here");
    // Help and version succeed.
    assert_exit(&vdm(&["--help"]), 0, "Usage");
    assert_exit(&vdm(&["--version"]), 0, "vdm");
}

/// `vdm data` describes the bundled digits: sizes, memory, labels, the baseline.
#[test]
fn data_describes_the_default_dataset() {
    let out = vdm(&["data"]);
    assert_exit(&out, 0, "images: 1x8x8, 1500 train, 297 test");
    for expected in ["in memory:", "labels:", "per-pixel categorical baseline", "2.5161 bpd on test"] {
        assert!(text(&out).contains(expected), "`{expected}` missing:\n{}", text(&out));
    }
}

/// `vdm plot` draws the test bound and γ of a run as SVG, and refuses a missing run.
#[test]
fn plot_draws_a_runs_curves() {
    let dir = tempfile::tempdir().unwrap();
    let run = s(&trained_run(dir.path()));
    let out_dir = dir.path().join("plots");
    std::fs::create_dir(&out_dir).unwrap();
    let out = vdm(&["plot", "--run", &run, "--out-dir", &s(&out_dir)]);
    assert_exit(&out, 0, "wrote");
    for name in ["test_bpd.svg", "gamma.svg"] {
        let svg = std::fs::read_to_string(out_dir.join(name)).unwrap();
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{name}: {}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("<polyline") || svg.contains("<path"), "{name} has no curve");
    }
    let absent = vdm(&["plot", "--run", &s(&dir.path().join("absent")), "--out-dir", &s(&out_dir), "--force"]);
    assert_exit(&absent, 1, "absent");
}

/// `vdm bench --json` prints one object with every figure, finite and positive; for DDPM's U-Net
/// without the codec's.
#[test]
fn bench_reports_its_figures_as_json() {
    let out = vdm(&["bench", "--size", "tiny", "--steps", "2", "--sample-steps", "2", "--json"]);
    assert_exit(&out, 0, "\"impl\":\"vdm-rs\"");
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_string();
    let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
    for field in [
        "parameters",
        "batch",
        "train_images_per_s",
        "sample_ms_per_eval",
        "encode_images_per_s",
        "decode_images_per_s",
    ] {
        let v = doc[field].as_f64().unwrap_or_else(|| panic!("{field} missing in {line}"));
        assert!(v.is_finite() && v > 0.0, "{field} = {v}");
    }
    assert_eq!(doc["size"], "tiny");
    // DDPM's U-Net: training and sampling, no codec (a DDPM codes over all its T = 1000 steps).
    let out =
        vdm(&["bench", "--size", "ddpm-small", "--batch-size", "4", "--steps", "1", "--sample-steps", "2", "--json"]);
    assert_exit(&out, 0, "\"size\":\"ddpm-small\"");
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_string();
    let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
    for field in ["train_images_per_s", "sample_ms_per_eval"] {
        let v = doc[field].as_f64().unwrap_or_else(|| panic!("{field} missing in {line}"));
        assert!(v.is_finite() && v > 0.0, "{field} = {v}");
    }
    assert!(doc["encode_images_per_s"].is_null(), "{line}");
}

/// `vdm import` makes a DDPM run of a diffusers folder (the committed small UNet2DModel) that
/// `vdm eval` reads; `vdm export` writes it back as a folder that imports again to the same file;
/// an occupied run directory and a folder without the weights are refused.
#[test]
fn import_and_export_diffusers_folders() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../backends/tests/data/diffusers-small");
    let dir = tempfile::tempdir().unwrap();
    let (run, out, again, rerun) =
        (dir.path().join("run"), dir.path().join("out"), dir.path().join("again"), dir.path().join("rerun"));
    assert_exit(&vdm(&["import", "--diffusers", &s(&fixture), "--run", &s(&run)]), 0, "imported");
    assert_exit(&vdm(&["eval", "--checkpoint", &s(&run), "--limit", "8"]), 0, "test bpd T=1000");
    assert_exit(&vdm(&["export", "--checkpoint", &s(&run), "--out", &s(&out)]), 0, "exported");
    assert_exit(&vdm(&["import", "--diffusers", &s(&out), "--run", &s(&rerun)]), 0, "imported");
    assert_exit(&vdm(&["export", "--checkpoint", &s(&rerun), "--out", &s(&again)]), 0, "exported");
    for file in ["config.json", "scheduler_config.json", "diffusion_pytorch_model.safetensors"] {
        assert!(std::fs::read(out.join(file)).unwrap() == std::fs::read(again.join(file)).unwrap(), "{file} changed");
    }
    assert_exit(&vdm(&["import", "--diffusers", &s(&fixture), "--run", &s(&run)]), 1, "not empty");
    assert_exit(&vdm(&["import", "--diffusers", &s(dir.path()), "--run", &s(&dir.path().join("x"))]), 1, "config.json");
}

/// A VDM run goes out in PyTorch's layout and comes back as a run with the same bound; the
/// export of the import is the same files.
#[test]
fn export_and_import_a_vdm_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path());
    let config = common::write_config(dir.path(), common::TINY);
    let (out, again, rerun) = (dir.path().join("out"), dir.path().join("again"), dir.path().join("rerun"));
    assert_exit(&vdm(&["export", "--checkpoint", &s(&run), "--out", &s(&out)]), 0, "exported");
    assert_exit(&vdm(&["import", "--vdm", &s(&out), "--run", &s(&rerun), "--config", &config]), 0, "imported");
    let bound = |run: &std::path::Path| {
        let out = vdm(&["eval", "--checkpoint", &s(run), "--limit", "8"]);
        assert_exit(&out, 0, "bpd");
        text(&out).lines().filter(|l| l.contains("bpd")).map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(bound(&run), bound(&rerun), "the imported run's bound");
    assert_exit(&vdm(&["export", "--checkpoint", &s(&rerun), "--out", &s(&again)]), 0, "exported");
    for file in ["config.json", "model.safetensors"] {
        assert!(std::fs::read(out.join(file)).unwrap() == std::fs::read(again.join(file)).unwrap(), "{file} changed");
    }
    // Without --config the bundled digits' run is made for 1x8x8 images; a diffusers folder is
    // not a VDM folder.
    assert_exit(&vdm(&["import", "--vdm", &s(&out), "--run", &s(&dir.path().join("d"))]), 0, "imported");
    let diffusers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../backends/tests/data/diffusers-small");
    assert_exit(&vdm(&["import", "--vdm", &s(&diffusers), "--run", &s(&dir.path().join("x"))]), 1, "format");
}
