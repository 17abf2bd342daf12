//! The subcommands.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use indicatif::{ProgressBar, ProgressStyle};
use vdm_backends::config::RunConfig;
use vdm_backends::data::{categorical_baseline_bpd, ImageSet};
use vdm_backends::model::{evaluate, EvalReport, TimeMode, Vdm};
use vdm_backends::train::{checkpoint_dir, load_ema, write_atomically, CheckpointState, Trainer};
use vdm_core::process::{alpha, sigma};

use crate::device::{dispatch, BackendJob, Device};
use crate::image::{write_grid, write_png};

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

struct TrainJob {
    config: Option<PathBuf>,
    run_dir: PathBuf,
    resume: bool,
    steps: Option<usize>,
}

pub fn train(config: Option<PathBuf>, run_dir: PathBuf, resume: bool, steps: Option<usize>, device: Device) -> Result<(), String> {
    dispatch(device, TrainJob { config, run_dir, resume, steps })
}

impl BackendJob for TrainJob {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<(), String> {
        let dir = self.run_dir;
        let mut trainer = if self.resume {
            let t = Trainer::<B>::resume(&dir, &device)?;
            println!("resuming {} at step {}", dir.display(), t.step);
            t
        } else {
            if checkpoint_dir(&dir).is_ok() {
                return Err(format!(
                    "{} already holds a run; continue it with `vdm train --run {} --resume`, or choose another --run",
                    dir.display(),
                    dir.display()
                ));
            }
            let run = match &self.config {
                Some(path) => read_config(path)?,
                None => RunConfig::digits(),
            };
            Trainer::<B>::new(&run, &device)
        };
        if let Some(steps) = self.steps {
            trainer.set_total_steps(steps);
        }
        let run = trainer.run_config().clone();
        run.validate()?;
        let (train, test) = load_data(&run)?;
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let toml = toml::to_string_pretty(&run).map_err(|e| e.to_string())?;
        write_atomically(&dir.join("config.toml"), toml.as_bytes()).map_err(|e| format!("{}: {e}", dir.display()))?;

        let params = trainer.model.num_params();
        println!(
            "data: {} train / {} test images of {}x{}x{}; model: {params} parameters; {} steps of {} images",
            train.len(),
            test.len(),
            train.channels,
            train.height,
            train.width,
            run.train.steps,
            run.train.batch_size
        );
        println!("{}", baselines_line(&run, &train, &test));

        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = interrupted.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).map_err(|e| format!("installing the Ctrl-C handler: {e}"))?;

        let metrics_path = dir.join("metrics.jsonl");
        let mut metrics = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| format!("{}: {e}", metrics_path.display()))?;
        let total = run.train.steps;
        let eval_time = TimeMode::from_steps(run.eval.time_steps);
        let pb = bar(total, "train");
        pb.set_position(trainer.step as u64);
        let (start, first_step) = (Instant::now(), trainer.step);
        let mut smoothed: Option<f64> = None;
        while trainer.step < total {
            if interrupted.load(Ordering::SeqCst) {
                let saved = trainer.save(&dir)?;
                pb.abandon_with_message("interrupted");
                println!("interrupted at step {}; checkpoint {}; continue with `vdm train --run {} --resume`", trainer.step, saved.display(), dir.display());
                return Ok(());
            }
            let stats = trainer.train_step(&train);
            if !stats.bpd.is_finite() {
                pb.abandon();
                return Err(format!(
                    "the loss became {} at step {}; the last checkpoint in {} is intact (try a lower lr or train.clip_grad_norm)",
                    stats.bpd,
                    trainer.step,
                    dir.display()
                ));
            }
            let s = smoothed.map_or(stats.bpd, |s| 0.95 * s + 0.05 * stats.bpd);
            smoothed = Some(s);
            let rate = (trainer.step - first_step) as f64 * run.train.batch_size as f64 / start.elapsed().as_secs_f64();
            pb.set_position(trainer.step as u64);
            pb.set_message(format!("loss {s:.3} bpd, {rate:.0} img/s"));
            let line = serde_json::json!({"step": trainer.step, "bpd": stats.bpd, "grad_norm": stats.grad_norm, "lr": stats.lr});
            writeln!(metrics, "{line}").map_err(|e| format!("{}: {e}", metrics_path.display()))?;

            let done = trainer.step == total;
            if run.eval.every > 0 && trainer.step % run.eval.every == 0 && !done {
                let r = evaluate(&trainer.ema, &test, eval_time, run.eval.batch_size, run.eval.seed, &device, |_| {});
                pb.println(format!("step {:>6}: {}", trainer.step, report_line(eval_time, &r)));
                let line = serde_json::json!({"step": trainer.step, "eval": r.bpd, "time_steps": run.eval.time_steps});
                writeln!(metrics, "{line}").map_err(|e| format!("{}: {e}", metrics_path.display()))?;
            }
            if trainer.step % run.checkpoint_every == 0 || done {
                trainer.save(&dir)?;
            }
        }
        pb.finish();
        let r = eval_with_bar(&trainer.ema, &test, eval_time, run.eval.batch_size, run.eval.seed, &device);
        println!("{}", report_line(eval_time, &r));
        println!("{}", baselines_line(&run, &train, &test));
        println!("checkpoint: {}", checkpoint_dir(&dir)?.display());
        Ok(())
    }
}

/// The EMA model of a checkpoint and its state, on the inference backend.
fn load<B: AutodiffBackend>(path: &Path, device: &B::Device) -> Result<(Vdm<B::InnerBackend>, CheckpointState), String> {
    load_ema::<B::InnerBackend>(path, device)
}

struct EvalJob {
    checkpoint: PathBuf,
    time_steps: Vec<usize>,
    batch_size: usize,
    seed: u64,
    limit: Option<usize>,
    json: Option<PathBuf>,
}

pub fn eval(checkpoint: PathBuf, time_steps: Vec<usize>, batch_size: usize, seed: u64, limit: Option<usize>, json: Option<PathBuf>, device: Device) -> Result<(), String> {
    if batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    dispatch(device, EvalJob { checkpoint, time_steps, batch_size, seed, limit, json })
}

impl BackendJob for EvalJob {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<(), String> {
        let (model, state) = load::<B>(&self.checkpoint, &device)?;
        let (train, mut test) = load_data(&state.run)?;
        if let Some(limit) = self.limit {
            test = test.select(&(0..limit.min(test.len())).collect::<Vec<_>>());
        }
        println!("checkpoint {} (step {})", checkpoint_dir(&self.checkpoint)?.display(), state.step);
        let mut reports = Vec::new();
        for &t in &self.time_steps {
            let time = TimeMode::from_steps(t);
            let r = eval_with_bar(&model, &test, time, self.batch_size, self.seed, &device);
            println!("{}", report_line(time, &r));
            reports.push(serde_json::json!({
                "time_steps": t, "bpd": r.bpd.mean, "se": r.bpd.se, "prior": r.prior,
                "reconstruction": r.reconstruction, "diffusion": r.diffusion, "images": r.per_image.len(),
            }));
        }
        println!("{}", baselines_line(&state.run, &train, &test));
        if let Some(path) = self.json {
            let doc = serde_json::json!({"step": state.step, "seed": self.seed, "bounds": reports,
                "categorical_baseline": categorical_baseline_bpd(&train, &test, 0.5), "exact": state.run.data.exact_bpd()});
            let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
            fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }
}

struct SampleJob {
    checkpoint: PathBuf,
    n: usize,
    steps: usize,
    seed: u64,
    out: PathBuf,
    columns: usize,
    scale: usize,
}

#[allow(clippy::too_many_arguments)]
pub fn sample(checkpoint: PathBuf, n: usize, steps: usize, seed: u64, out: PathBuf, columns: usize, scale: usize, device: Device) -> Result<(), String> {
    if n == 0 || steps == 0 || scale == 0 {
        return Err("--n, --steps and --scale must be at least 1".into());
    }
    dispatch(device, SampleJob { checkpoint, n, steps, seed, out, columns, scale })
}

impl BackendJob for SampleJob {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<(), String> {
        let (model, state) = load::<B>(&self.checkpoint, &device)?;
        let (_, h, w) = state.run.data.image_shape();
        let pb = bar(self.steps, "sample");
        let start = Instant::now();
        let images = model.sample(self.n, h, w, self.steps, self.seed, &device, |i| pb.set_position(i as u64));
        pb.finish_and_clear();
        write_grid(&images, self.columns, self.scale, &self.out)?;
        println!(
            "wrote {} samples ({} steps, {:.1} s) to {}",
            self.n,
            self.steps,
            start.elapsed().as_secs_f64(),
            self.out.display()
        );
        Ok(())
    }
}

struct ScheduleJob {
    source: ScheduleSource,
    points: usize,
    plot: Option<PathBuf>,
}

enum ScheduleSource {
    Checkpoint(PathBuf),
    Config(RunConfig),
}

pub fn schedule(checkpoint: Option<PathBuf>, config: Option<PathBuf>, points: usize, plot: Option<PathBuf>) -> Result<(), String> {
    if points < 2 {
        return Err("--points must be at least 2".into());
    }
    let source = match (checkpoint, config) {
        (Some(c), _) => ScheduleSource::Checkpoint(c),
        (None, Some(path)) => ScheduleSource::Config(read_config(&path)?),
        (None, None) => ScheduleSource::Config(RunConfig::digits()),
    };
    dispatch(Device::Cpu, ScheduleJob { source, points, plot })
}

impl BackendJob for ScheduleJob {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<(), String> {
        let schedule = match self.source {
            ScheduleSource::Checkpoint(path) => load::<B>(&path, &device)?.0.schedule,
            ScheduleSource::Config(run) => run.model.schedule.init::<B::InnerBackend>(&device),
        };
        let times: Vec<f64> = (0..self.points).map(|i| i as f64 / (self.points - 1) as f64).collect();
        let gammas = schedule.gamma_values(&times, &device);
        let t_tensor = burn::tensor::Tensor::<B::InnerBackend, 1>::from_floats(times.iter().map(|&t| t as f32).collect::<Vec<_>>().as_slice(), &device);
        let primes: Vec<f64> = schedule.gamma_and_prime(t_tensor).1.into_data().convert::<f64>().to_vec().map_err(|e| format!("{e:?}"))?;
        println!("{:>6} {:>10} {:>10} {:>12} {:>10} {:>10}", "t", "gamma", "gamma'", "log10 SNR", "alpha", "sigma");
        for ((t, g), gp) in times.iter().zip(&gammas).zip(&primes) {
            println!("{t:>6.3} {g:>10.4} {gp:>10.4} {:>12.4} {:>10.6} {:>10.6}", -g / std::f64::consts::LN_10, alpha(*g), sigma(*g));
        }
        if let Some(path) = self.plot {
            let dense: Vec<f64> = (0..=400).map(|i| i as f64 / 400.0).collect();
            let curve = schedule.gamma_values(&dense, &device);
            plot_curve(&curve, &path)?;
            let (lo, hi) = (curve[0], curve[curve.len() - 1]);
            println!("plot of gamma(t) written to {}: t from 0 (left) to 1 (right), gamma from {lo:.2} (bottom) to {hi:.2} (top)", path.display());
        }
        Ok(())
    }
}

/// A 400×300 grey PNG of `values` (evenly spaced in x), scaled to fill the height, with a frame.
fn plot_curve(values: &[f64], path: &Path) -> Result<(), String> {
    let (w, h, margin) = (400usize, 300usize, 10usize);
    let mut px = vec![255u8; w * h];
    for x in 0..w {
        px[margin * w + x] = 200;
        px[(h - margin) * w + x] = 200;
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = (hi - lo).max(1e-12);
    let to_y = |v: f64| h - margin - ((v - lo) / span * (h - 2 * margin) as f64).round() as usize;
    let mut previous: Option<(usize, usize)> = None;
    for (i, &v) in values.iter().enumerate() {
        let x = margin + i * (w - 2 * margin - 1) / (values.len() - 1);
        let y = to_y(v);
        if let Some((px0, py0)) = previous {
            let (a, b) = (py0.min(y), py0.max(y));
            for yy in a..=b {
                px[yy * w + x.max(px0)] = 0;
            }
        }
        px[y * w + x] = 0;
        previous = Some((x, y));
    }
    write_png(&px, w, h, 1, path)
}

pub fn crosscheck(checkpoint: PathBuf, images: usize, time_steps: usize, tolerance: f64, seed: u64) -> Result<(), String> {
    crosscheck_backends(&checkpoint, images, TimeMode::from_steps(time_steps), tolerance, seed)
}

#[cfg(all(feature = "ndarray", feature = "cuda"))]
fn crosscheck_backends(checkpoint: &Path, images: usize, time: TimeMode, tolerance: f64, seed: u64) -> Result<(), String> {
    let check = std::panic::AssertUnwindSafe(|| compare_cpu_and_cuda(checkpoint, images, time, tolerance, seed));
    std::panic::catch_unwind(check).unwrap_or_else(|_| Err(crate::device::CUDA_FAILED.into()))
}

#[cfg(all(feature = "ndarray", feature = "cuda"))]
fn compare_cpu_and_cuda(checkpoint: &Path, images: usize, time: TimeMode, tolerance: f64, seed: u64) -> Result<(), String> {
    use vdm_backends::{Cpu, Cuda};
    let (cpu_model, state) = load_ema::<Cpu>(checkpoint, &Default::default())?;
    let (gpu_model, _) = load_ema::<Cuda>(checkpoint, &Default::default())?;
    let (_, test) = load_data(&state.run)?;
    let test = test.select(&(0..images.min(test.len())).collect::<Vec<_>>());
    let batch = state.run.eval.batch_size;
    let cpu = eval_with_bar(&cpu_model, &test, time, batch, seed, &Default::default());
    let gpu = eval_with_bar(&gpu_model, &test, time, batch, seed, &Default::default());
    let max_diff = cpu.per_image.iter().zip(&gpu.per_image).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    println!("cpu  (ndarray): {}", report_line(time, &cpu));
    println!("cuda          : {}", report_line(time, &gpu));
    println!(
        "|mean difference| {:.2e} bpd, largest per-image difference {max_diff:.2e} bpd (tolerance {tolerance:.0e})",
        (cpu.bpd.mean - gpu.bpd.mean).abs()
    );
    if max_diff > tolerance {
        return Err(format!("CPU and CUDA differ by {max_diff:.2e} bpd on one image, more than {tolerance:.0e}"));
    }
    Ok(())
}

#[cfg(not(all(feature = "ndarray", feature = "cuda")))]
fn crosscheck_backends(_: &Path, _: usize, _: TimeMode, _: f64, _: u64) -> Result<(), String> {
    Err("crosscheck compares the CPU and CUDA backends, and this binary lacks CUDA support; \
         build it with `cargo build --release --features cuda`"
        .into())
}
