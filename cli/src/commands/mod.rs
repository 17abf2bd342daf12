//! The subcommands, one file each, and what they share.

pub mod bench;
pub mod codec;
pub mod config;
pub mod crosscheck;
pub mod data;
pub mod eval;
pub mod interop;
pub mod plot;
pub mod quality;
pub mod sample;
pub mod schedule;
pub mod train;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::backend::Backend;
use vdm_backends::checkpoint::Checkpoint;
use vdm_backends::config::RunConfig;
use vdm_backends::data::{categorical_baseline_bpd, ImageSet};
use vdm_backends::error::describe_io;
use vdm_backends::eval::{evaluate, EvalOptions, EvalReport, Likelihood};
use vdm_backends::memory::Bytes;
use vdm_backends::model::{Family, Generative};
use vdm_backends::ops::FastOps;
use vdm_backends::sample::{self as sampling, SampleOptions};
use vdm_backends::train::load_ema;

use crate::progress::{clock, Progress};

/// Reads and validates a run configuration file.
pub fn read_config(path: &Path) -> Result<RunConfig, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))?;
    RunConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Loads a run's train and test images, saying how much was loaded and how long it took.
fn load_data(run: &RunConfig) -> Result<(ImageSet, ImageSet), String> {
    let start = Instant::now();
    let (train, test) = run.data.load(run.train.seed).map_err(|e| format!("loading data: {e}"))?;
    let [c, h, w] = train.shape();
    println!(
        "data: {} train / {} test images of {c}x{h}x{w} ({} in memory), loaded in {}",
        train.len(),
        test.len(),
        Bytes((train.pixels.len() + test.pixels.len()) as u64),
        clock(start.elapsed().as_secs_f64())
    );
    Ok((train, test))
}

/// A checkpoint's run's train and test images, refused unless they still have the shape the model
/// was trained on (a run's data files can change after training).
fn load_checkpoint_data(checkpoint: &Checkpoint) -> Result<(ImageSet, ImageSet), String> {
    let (train, test) = load_data(&checkpoint.state.run)?;
    let shape = checkpoint.state.image_shape;
    for (set, images) in [("training", &train), ("test", &test)] {
        if images.shape() != shape {
            return Err(format!(
                "the run was trained on images of {shape:?}, but its {set} data now has {:?}; restore the data it was trained on",
                images.shape()
            ));
        }
    }
    Ok((train, test))
}

/// One line per evaluated bound (`bound` names it).
fn report_line(bound: &str, r: &EvalReport) -> String {
    let mut line = format!(
        "test bpd {bound}: {:.4} ± {:.4}  [prior {:.4}, reconstruction {:.4}, diffusion {:.4}] over {} images",
        r.bpd.mean,
        r.bpd.se,
        r.prior,
        r.reconstruction,
        r.diffusion,
        r.per_image.len()
    );
    if let Some(sd) = r.noise_sd {
        line.push_str(&format!("; Monte-Carlo sd of one estimate {sd:.4}"));
    }
    line
}

fn baselines_line(run: &RunConfig, train: &ImageSet, test: &ImageSet) -> String {
    let categorical = categorical_baseline_bpd(train, test, 0.5);
    let mut line =
        format!("baselines: uniform 8.0000 bpd, per-pixel categorical (add-½ smoothing) {categorical:.4} bpd");
    if let Some(exact) = run.data.exact_bpd() {
        line.push_str(&format!(", exact NLL of the data {exact:.4} bpd"));
    }
    line
}

/// `evaluate` under a progress bar named after the bound.
fn evaluate_with_progress<B: FastOps, M: Likelihood<B>>(
    model: &M,
    test: &ImageSet,
    bound: M::Bound,
    options: &EvalOptions,
    device: &B::Device,
) -> Result<EvalReport, String> {
    let mut progress = Progress::new(test.len() * model.work_per_image(bound, options.draws), "eval", 0);
    progress.set(0, model.bound_name(bound, options.draws));
    let report = evaluate(model, test, bound, options, device, |n| progress.advance(n));
    progress.finish();
    Ok(report?)
}

/// `options.n` samples of `model`, the checkpoint's, under a progress bar of network evaluations,
/// after checking that a batch fits in memory; with the evaluations per image they took.
fn sample_with_progress<B: FastOps, M: Generative<B>>(
    model: &M,
    checkpoint: &Checkpoint,
    options: &SampleOptions,
    device: &B::Device,
) -> Result<(ImageSet, usize), String> {
    let shape = checkpoint.state.image_shape;
    let options = SampleOptions { batch_size: options.batch_size.min(options.n), ..*options };
    checkpoint.state.run.model.check_inference_memory::<B>(shape, options.batch_size, device)?;
    let nfe = options.sampler.evaluations(&model.grid(options.steps, options.spacing)?);
    let mut progress = Progress::new(options.n.div_ceil(options.batch_size) * nfe, "sample", 0);
    progress.set(0, format!("{} images, {} steps of {}", options.n, options.steps, options.sampler));
    let images = sampling::sample(model, [shape[1], shape[2]], &options, device, &mut || progress.advance(1));
    progress.finish();
    Ok((images?, nfe))
}

/// A checkpoint (or a run's newest one), warning when the run's `latest` file had to be bypassed.
fn open_checkpoint(path: &Path) -> Result<Checkpoint, String> {
    let checkpoint = Checkpoint::open(path)?;
    if let Some(problem) = &checkpoint.recovered {
        eprintln!("warning: {problem}; using the newest complete checkpoint, {}", checkpoint.dir.display());
    }
    Ok(checkpoint)
}

/// The EMA model of `checkpoint` as family `M`, on backend `B`.
fn load_model<B: Backend, M: Family<B>>(checkpoint: &Checkpoint, device: &B::Device) -> Result<M, String> {
    let model = load_ema::<B, M>(checkpoint, device)?;
    println!("checkpoint {} (step {})", checkpoint.dir.display(), checkpoint.state.step);
    Ok(model)
}

/// A checkpoint (or a run's newest one) and its EMA model of family `M`, on backend `B`.
fn load<B: Backend, M: Family<B>>(path: &Path, device: &B::Device) -> Result<(M, Checkpoint), String> {
    let checkpoint = open_checkpoint(path)?;
    Ok((load_model(&checkpoint, device)?, checkpoint))
}

/// Creates `dir` for a command's output files, or accepts it if it exists and is empty: nothing
/// is ever overwritten. `option` names the flag in the error.
pub fn create_empty_dir(dir: &Path, option: &str) -> Result<(), String> {
    if dir.exists() && !dir.is_dir() {
        return Err(format!("{} is a file; {option} takes a directory (nothing is overwritten)", dir.display()));
    }
    if dir.exists()
        && fs::read_dir(dir).map_err(|e| format!("{}: {}", dir.display(), describe_io(&e)))?.next().is_some()
    {
        return Err(format!(
            "{} is not empty; choose a new directory for {option} (nothing is overwritten)",
            dir.display()
        ));
    }
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {}", dir.display(), describe_io(&e)))
}

/// Whether output files that exist may be replaced (`--force`); set once by `main`.
static OVERWRITE: AtomicBool = AtomicBool::new(false);

/// Lets [`check_output_file`] accept files that exist (`--force`).
pub fn allow_overwrite(allow: bool) {
    OVERWRITE.store(allow, Ordering::Relaxed);
}

/// Checks, before any work, that a file can be written at `path`: it is not a directory, it does
/// not exist (unless `--force`), its directory exists, and a file can be created there.
pub fn check_output_file(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("{} is a directory; give a file name", path.display()));
    }
    if path.exists() && !OVERWRITE.load(Ordering::Relaxed) {
        return Err(format!(
            "{} exists; give another name, or --force to replace it (nothing was written)",
            path.display()
        ));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(format!("cannot write {}: the directory {} does not exist", path.display(), parent.display()));
    }
    let probe = parent.join(format!(".vdm-write-check-{}", std::process::id()));
    fs::write(&probe, b"").map_err(|e| format!("cannot write {}: {}", path.display(), describe_io(&e)))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}
