//! `vdm train`: train a model, or resume a run.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use vdm_backends::checkpoint::{checkpoint_dir, write_atomically};
use vdm_backends::config::RunConfig;
use vdm_backends::model::{evaluate, TimeMode};
use vdm_backends::train::Trainer;

use super::{bar, baselines_line, eval_with_bar, load_data, read_config, report_line};
use crate::device::{dispatch, BackendJob, Device};

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
