//! The subcommands, one file each, and what they share.

pub mod bench;
pub mod crosscheck;
pub mod eval;
pub mod sample;
pub mod schedule;
pub mod train;

use std::fs;
use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use indicatif::{ProgressBar, ProgressStyle};
use vdm_backends::checkpoint::{load_ema, CheckpointState};
use vdm_backends::config::RunConfig;
use vdm_backends::data::{categorical_baseline_bpd, ImageSet};
use vdm_backends::model::{evaluate, EvalReport, TimeMode, Vdm};

fn bar(len: usize, what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})")
        .expect("valid template")
        .progress_chars("=> ");
    ProgressBar::new(len as u64).with_style(style).with_prefix(what.to_string())
}

/// Reads and validates a run configuration file.
pub fn read_config(path: &Path) -> Result<RunConfig, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: RunConfig = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    config.validate().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(config)
}

pub fn print_default_config() -> Result<(), String> {
    let text = toml::to_string_pretty(&RunConfig::digits()).map_err(|e| e.to_string())?;
    print!("{text}");
    Ok(())
}

fn load_data(run: &RunConfig) -> Result<(ImageSet, ImageSet), String> {
    run.data.load(run.train.seed).map_err(|e| format!("loading data: {e}"))
}

/// One line per evaluated bound.
fn report_line(time: TimeMode, r: &EvalReport) -> String {
    format!(
        "test bpd {time}: {:.4} ± {:.4}  [prior {:.4}, reconstruction {:.4}, diffusion {:.4}] over {} images",
        r.bpd.mean,
        r.bpd.se,
        r.prior,
        r.reconstruction,
        r.diffusion,
        r.per_image.len()
    )
}

fn baselines_line(run: &RunConfig, train: &ImageSet, test: &ImageSet) -> String {
    let categorical = categorical_baseline_bpd(train, test, 0.5);
    let mut line = format!("baselines: uniform 8.0000 bpd, per-pixel categorical (add-½ smoothing) {categorical:.4} bpd");
    if let Some(exact) = run.data.exact_bpd() {
        line.push_str(&format!(", exact NLL of the data {exact:.4} bpd"));
    }
    line
}

fn eval_with_bar<B: Backend>(model: &Vdm<B>, test: &ImageSet, time: TimeMode, batch: usize, seed: u64, device: &B::Device) -> EvalReport {
    let pb = bar(test.len(), "eval");
    pb.set_message(time.to_string());
    let report = evaluate(model, test, time, batch, seed, device, |n| pb.inc(n as u64));
    pb.finish_and_clear();
    report
}

/// The EMA model of a checkpoint and its state, on the inference backend.
fn load<B: AutodiffBackend>(path: &Path, device: &B::Device) -> Result<(Vdm<B::InnerBackend>, CheckpointState), String> {
    load_ema::<B::InnerBackend>(path, device)
}
