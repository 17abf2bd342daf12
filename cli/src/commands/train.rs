//! `vdm train`: train a model, or resume a run.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vdm_backends::checkpoint::{describe_existing_run, Checkpoint};
use vdm_backends::config::{ModelConfig, RunConfig};
use vdm_backends::data::ImageSet;
use vdm_backends::error::describe_io;
use vdm_backends::files::write_atomically;
use vdm_backends::model::ddpm::Ddpm;
use vdm_backends::model::{Generative, Trainable, Vdm};
use vdm_backends::ops::TrainBackend;
use vdm_backends::parallel::{Layout, Nodes};
use vdm_backends::train::Trainer;

use super::{baselines_line, load_checkpoint_data, load_data, read_config, report_line};
use crate::device::{device_at, dispatch, BackendJob, Device};
use crate::progress::Progress;
use crate::replicas::{self, Watchdog};
use crate::stop;
use crate::Failure;

/// What `vdm train` was asked for.
pub struct TrainArgs {
    pub config: Option<PathBuf>,
    pub run_dir: PathBuf,
    pub resume: bool,
    pub steps: Option<usize>,
    /// Each of this process's replicas' device index (`None`: the default device); one entry
    /// trains on one device.
    pub devices: Vec<Option<u16>>,
    /// The processes of a run on several machines.
    pub nodes: Option<Nodes>,
    /// How long a data-parallel run waits for a step before it gives its peers up for lost.
    pub peer_timeout: Duration,
}

impl TrainArgs {
    /// Whether this process writes the run (checkpoints, metrics): the only one, or process 0.
    fn writes(&self) -> bool {
        self.nodes.as_ref().is_none_or(|n| n.rank() == 0)
    }
}

pub fn train(args: TrainArgs, device: Device) -> Result<(), Failure> {
    if args.steps == Some(0) {
        return Err(Failure::Error("--steps must be at least 1".into()));
    }
    if args.run_dir.exists() && !args.run_dir.is_dir() {
        return Err(Failure::Error(format!(
            "{} is a file; --run takes a directory (nothing was changed)",
            args.run_dir.display()
        )));
    }
    if !args.resume && args.writes() {
        if let Some(found) = describe_existing_run(&args.run_dir) {
            let dir = args.run_dir.display();
            return Err(Failure::Error(format!(
                "{dir} already holds a run ({found}); continue it with `vdm train --run {dir} --resume` \
                 (add --steps N to extend it to N steps in all), or start anew with another --run; nothing was changed"
            )));
        }
    }
    match dispatch(device, TrainJob(args))? {
        Outcome::Finished => Ok(()),
        Outcome::Interrupted { message, status } => Err(Failure::Interrupted { message, status }),
    }
}

enum Outcome {
    Finished,
    /// Stopped by a signal after saving: what to say, and the exit status (128 + the signal).
    Interrupted {
        message: String,
        status: u8,
    },
}

struct TrainJob(TrainArgs);

impl BackendJob for TrainJob {
    type Output = Outcome;

    fn run<B: TrainBackend>(self, _default: B::Device) -> Result<Outcome, String> {
        let args = self.0;
        let config = match (&args.config, args.resume) {
            (_, true) => None,
            (Some(path), false) => Some(read_config(path)?),
            (None, false) => Some(RunConfig::digits()),
        };
        // The family of a resumed run is its checkpoint's; a run without a readable checkpoint
        // fails with the reason in `train_family`.
        let model = match &config {
            Some(run) => Some(run.model.clone()),
            None => Checkpoint::open(&args.run_dir).ok().map(|c| c.state.run.model),
        };
        match model {
            Some(ModelConfig::Ddpm(_)) => train_family::<B, Ddpm<B>>(args, config),
            // Without a readable checkpoint to resume, `train_family` fails with the reason.
            Some(ModelConfig::Vdm(_)) | None => train_family::<B, Vdm<B>>(args, config),
        }
    }
}

/// Trains a new run of `config`, or resumes `args.run_dir` when `config` is `None`; data-parallel
/// on `args.devices` and `args.nodes`, where only process 0 writes the run.
fn train_family<B: TrainBackend, M: Trainable<B> + Send + 'static>(
    args: TrainArgs,
    config: Option<RunConfig>,
) -> Result<Outcome, String>
where
    M::InnerModule: Generative<B::InnerBackend> + Send,
{
    let devices: Vec<B::Device> = args.devices.iter().map(|&i| device_at::<B>(i)).collect();
    let device = devices[0].clone();
    let layout = Layout { local: devices.len(), nodes: args.nodes.clone() };
    let writes = args.writes();
    let dir = args.run_dir.clone();
    let (mut trainer, train, test, _lock) = if args.resume {
        if !dir.is_dir() {
            return Err(format!("{} does not exist or is not a directory; there is no run to resume", dir.display()));
        }
        let lock = writes.then(|| lock_run(&dir)).transpose()?;
        let checkpoint = Checkpoint::open(&dir)?;
        if let Some(problem) = &checkpoint.recovered {
            eprintln!("warning: {problem}; resuming from the newest complete checkpoint, {}", checkpoint.dir.display());
        }
        let (train, test) = load_checkpoint_data(&checkpoint)?;
        let mut trainer = Trainer::<B, M>::resume(&checkpoint, &device)?;
        println!("resuming {} at step {}", dir.display(), trainer.step());
        if let Some(steps) = args.steps {
            trainer.extend_to(steps)?;
        } else if trainer.step() >= trainer.run_config().train.steps {
            println!("the run is complete ({} steps); pass --steps N to extend it to N steps in all", trainer.step());
            return Ok(Outcome::Finished);
        }
        if writes {
            keep_metrics_up_to(&dir.join("metrics.jsonl"), trainer.step())?;
        }
        (trainer, train, test, lock)
    } else {
        let mut run = config.ok_or("no configuration to start a run from")?;
        if let Some(steps) = args.steps {
            run.train.steps = steps;
        }
        let (train, test) = load_data(&run)?;
        let trainer = Trainer::<B, M>::new(&run, train.shape(), &device)?;
        let lock = writes.then(|| claim_new_run(&dir)).transpose()?;
        (trainer, train, test, lock)
    };
    // Shared with the replicas' threads, not copied.
    let train = Arc::new(train);
    layout.check(trainer.run_config().train.batch_size)?;
    let parallel = layout.replicas() > 1;
    // A lost replica or process ends the run instead of leaving this one waiting (see `replicas`).
    let watchdog = parallel.then(|| Watchdog::start(args.peer_timeout));
    if !writes {
        return follow(trainer, &train, &devices, &layout, watchdog);
    }
    let run = trainer.run_config().clone();
    let toml = toml::to_string_pretty(&run).map_err(|e| e.to_string())?;
    write_atomically(&dir.join("config.toml"), toml.as_bytes())
        .map_err(|e| format!("{}: {}", dir.join("config.toml").display(), describe_io(&e)))?;
    println!(
        "model: {} ({} parameters); {} steps of {} images",
        run.model.family().to_uppercase(),
        trainer.model().num_params(),
        run.train.steps,
        run.train.batch_size
    );
    println!("{}", baselines_line(&run, &train, &test));
    if let Some(limit) = run.eval.limit {
        println!("evaluating on the first {limit} test images (eval.limit)");
    }

    if parallel {
        replicas::start(&mut trainer, &devices, &layout, &train)?;
        println!("{}", replicas_line(&layout));
    }
    // The first Ctrl-C or SIGTERM saves a checkpoint at the end of the step (see `stop`).
    stop::install();

    let metrics_path = dir.join("metrics.jsonl");
    let mut metrics = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| format!("{}: {}", metrics_path.display(), describe_io(&e)))?;
    let mut log = |line: serde_json::Value| {
        writeln!(metrics, "{line}").map_err(|e| format!("{}: {}", metrics_path.display(), describe_io(&e)))
    };
    let total = run.train.steps;
    let unit = run.model.loss_unit();
    let test = match run.eval.limit {
        Some(limit) if limit < test.len() => test.select(&(0..limit).collect::<Vec<_>>()),
        _ => test,
    };
    let mut progress = Progress::new(total, "train", trainer.step());
    let (start, first_step) = (Instant::now(), trainer.step());
    let mut saved_step = (args.resume).then_some(trainer.step());
    let mut smoothed: Option<f64> = None;
    while trainer.step() < total {
        if let Some(signal) = stop::requested() {
            let saved = trainer.save(&dir)?;
            progress.finish();
            let message = format!(
                "interrupted at step {}; checkpoint {}; continue with `vdm train --run {} --resume`",
                trainer.step(),
                saved.display(),
                dir.display()
            );
            return Ok(Outcome::Interrupted { message, status: (128 + signal) as u8 });
        }
        let kept = || match saved_step {
            Some(step) => format!("the checkpoint of step {step} in {} is intact", dir.display()),
            None => "no checkpoint had been written yet".to_string(),
        };
        let stats = trainer.train_step(&train).map_err(|e| format!("{e}; {}", kept()))?;
        progressed(&watchdog);
        if !stats.loss.is_finite() {
            progress.finish();
            let kept = kept();
            return Err(format!(
                "the loss became {} at step {}; {kept} (try a lower train.lr or set train.clip_grad_norm)",
                stats.loss,
                trainer.step()
            ));
        }
        let s = smoothed.map_or(stats.loss, |s| 0.95 * s + 0.05 * stats.loss);
        smoothed = Some(s);
        let rate = (trainer.step() - first_step) as f64 * run.train.batch_size as f64 / start.elapsed().as_secs_f64();
        progress.set(trainer.step(), format!("loss {s:.3} {unit}, {rate:.0} img/s"));
        log(
            serde_json::json!({"step": trainer.step(), "loss": stats.loss, "grad_norm": stats.grad_norm, "lr": stats.lr}),
        )?;

        let done = trainer.step() == total;
        if run.eval.every > 0 && trainer.step() % run.eval.every == 0 && !done {
            let (bound, r) = trainer.ema().training_bound(&test, &run.eval, &device)?;
            progress.println(format!("step {:>6}: {}", trainer.step(), report_line(&bound, &r)));
            log(serde_json::json!({"step": trainer.step(), "eval": r.bpd, "bound": bound}))?;
        }
        if trainer.step() % run.checkpoint_every == 0 || done {
            trainer.save(&dir)?;
            saved_step = Some(trainer.step());
        }
        progressed(&watchdog);
    }
    trainer.leave()?;
    drop(watchdog);
    progress.finish();
    let (bound, r) = trainer.ema().training_bound(&test, &run.eval, &device)?;
    println!("{}", report_line(&bound, &r));
    log(serde_json::json!({"step": trainer.step(), "eval": r.bpd, "bound": bound}))?;
    println!("{}", baselines_line(&run, &train, &test));
    println!("checkpoint: {}", Checkpoint::open(&dir)?.dir.display());
    Ok(Outcome::Finished)
}

/// Another process writes the run: this one's replicas step in lockstep with the others to the end.
fn follow<B: TrainBackend, M: Trainable<B> + Send + 'static>(
    mut trainer: Trainer<B, M>,
    train: &Arc<ImageSet>,
    devices: &[B::Device],
    layout: &Layout,
    watchdog: Option<Watchdog>,
) -> Result<Outcome, String>
where
    M::InnerModule: Send,
{
    replicas::start(&mut trainer, devices, layout, train)?;
    println!("{}", replicas_line(layout));
    stop::install();
    let total = trainer.run_config().train.steps;
    let mut progress = Progress::new(total, "train", trainer.step());
    while trainer.step() < total {
        if let Some(signal) = stop::requested() {
            progress.finish();
            let message = format!("interrupted at step {}; process 0 writes the run's checkpoints", trainer.step());
            return Ok(Outcome::Interrupted { message, status: (128 + signal) as u8 });
        }
        trainer.train_step(train)?;
        progress.set(trainer.step(), String::new());
        progressed(&watchdog);
    }
    trainer.leave()?;
    progress.finish();
    Ok(Outcome::Finished)
}

/// Tells the watchdog of a data-parallel run that a step completed.
fn progressed(watchdog: &Option<Watchdog>) {
    if let Some(watchdog) = watchdog {
        watchdog.progressed();
    }
}

/// Which replicas of a data-parallel run this process holds.
fn replicas_line(layout: &Layout) -> String {
    let first = layout.rank(0);
    let process = layout.nodes.as_ref().map_or(String::new(), |n| format!(" (process {} of {})", n.rank(), n.count()));
    format!(
        "data-parallel: replicas {first}..{} of {} on this process{process}; each batch is split among them",
        first + layout.local,
        layout.replicas()
    )
}

/// Creates the run directory of a new run and takes its lock; replaces the log of a run that
/// stopped before its first checkpoint.
fn claim_new_run(dir: &Path) -> Result<fs::File, String> {
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {}", dir.display(), describe_io(&e)))?;
    let lock = lock_run(dir)?;
    if let Some(found) = describe_existing_run(dir) {
        return Err(format!("{} was taken by another run meanwhile ({found})", dir.display()));
    }
    // What a run that stopped before its first checkpoint left behind: replaced, not continued.
    let metrics = dir.join("metrics.jsonl");
    if metrics.exists() {
        fs::remove_file(&metrics).map_err(|e| format!("{}: {}", metrics.display(), describe_io(&e)))?;
        eprintln!(
            "note: {} held no checkpoint, only the log of a run that stopped before its first one; starting anew",
            dir.display()
        );
    }
    Ok(lock)
}

/// Takes the run directory's lock, so that two `vdm train` never write one run (the operating
/// system releases it when the process ends, however it ends).
fn lock_run(dir: &Path) -> Result<fs::File, String> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            Err(format!("another `vdm train` is running in {}; wait for it or stop it first", dir.display()))
        }
        Err(fs::TryLockError::Error(e)) => Err(format!("locking {}: {}", path.display(), describe_io(&e))),
    }
}

/// Drops the lines of `metrics.jsonl` logged after `step` (by a run that stopped before saving
/// them in a checkpoint), so that a resumed run does not log those steps twice, and a torn last
/// line (a crash while writing it leaves it without its newline), which the next line would
/// otherwise be glued onto.
fn keep_metrics_up_to(path: &Path, step: usize) -> Result<(), String> {
    let Ok(text) = fs::read_to_string(path) else { return Ok(()) };
    let torn = !text.is_empty() && !text.ends_with('\n');
    let complete = if torn { &text[..text.rfind('\n').map_or(0, |i| i + 1)] } else { &text[..] };
    if torn {
        eprintln!("warning: {}: dropped its torn last line (written when the run stopped)", path.display());
    }
    let kept: Vec<&str> = complete
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_none_or(|s| s <= step as u64)
        })
        .collect();
    if torn || kept.len() < complete.lines().count() {
        let joined: String = kept.iter().map(|l| format!("{l}\n")).collect();
        write_atomically(path, joined.as_bytes()).map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))?;
    }
    Ok(())
}
