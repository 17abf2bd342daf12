//! `vdm eval`: test-set bits per dimension by VLB term.

use std::path::PathBuf;

use vdm_backends::checkpoint::Checkpoint;
use vdm_backends::config::ModelConfig;
use vdm_backends::data::{categorical_baseline_bpd, ImageSet};
use vdm_backends::error::describe_io;
use vdm_backends::eval::{EvalOptions, EvalReport, Likelihood};
use vdm_backends::files::write_atomically;
use vdm_backends::model::ddpm::{self, Ddpm};
use vdm_backends::model::{TimeMode, Vdm};
use vdm_backends::ops::{FastOps, TrainBackend};

use super::{
    baselines_line, check_output_file, evaluate_with_progress, load_checkpoint_data, load_model, open_checkpoint,
    report_line,
};
use crate::device::{dispatch, BackendJob, Device};

/// What `vdm eval` was asked for.
pub struct EvalArgs {
    pub checkpoint: PathBuf,
    pub time_steps: Vec<usize>,
    pub batch_size: usize,
    pub seed: u64,
    pub limit: Option<usize>,
    pub draws: usize,
    pub linear_shape: bool,
    pub json: Option<PathBuf>,
    pub full_bound: bool,
}

pub fn eval(args: EvalArgs, device: Device) -> Result<(), String> {
    if args.batch_size == 0 || args.draws == 0 {
        return Err("--batch-size and --draws must be at least 1".into());
    }
    if args.limit == Some(0) {
        return Err("--limit must be at least 1 (it is the number of test images to evaluate)".into());
    }
    // VDM's default bounds: continuous time and T = 1000.
    let steps = if args.time_steps.is_empty() { vec![0, 1000] } else { args.time_steps.clone() };
    let times = steps
        .iter()
        .map(|&t| TimeMode::from_steps(t).map_err(|e| format!("--time-steps: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = &args.json {
        check_output_file(path)?;
    }
    dispatch(device, EvalJob { args, times })
}

struct EvalJob {
    args: EvalArgs,
    times: Vec<TimeMode>,
}

/// One evaluated bound: its name, draws per image, its settings for the JSON report, and the report.
struct Bound {
    name: String,
    draws: usize,
    settings: serde_json::Value,
    report: EvalReport,
}

impl BackendJob for EvalJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let args = &self.args;
        let checkpoint = open_checkpoint(&args.checkpoint)?;
        let state = &checkpoint.state;
        match &state.run.model {
            ModelConfig::Ddpm(_) if args.linear_shape => {
                return Err("--linear-shape applies to a VDM's learned schedule; this run is a DDPM".into())
            }
            ModelConfig::Ddpm(c) if !args.time_steps.is_empty() => {
                return Err(format!(
                    "--time-steps applies to VDM runs; this DDPM's T is its model.time_steps = {} (use --full-bound for all its terms)",
                    c.time_steps
                ))
            }
            ModelConfig::Vdm(_) if args.full_bound => {
                return Err(
                    "--full-bound applies to DDPM runs (a VDM's T-step bound is chosen with --time-steps)".into()
                )
            }
            _ => {}
        }
        let (train, mut test) = load_checkpoint_data(&checkpoint)?;
        if let Some(limit) = args.limit {
            test = test.select(&(0..limit.min(test.len())).collect::<Vec<_>>());
        }
        state.run.model.check_inference_memory::<B::InnerBackend>(
            state.image_shape,
            args.batch_size.min(test.len()),
            &device,
        )?;
        let bounds = match &state.run.model {
            ModelConfig::Vdm(_) => self.vdm::<B::InnerBackend>(&checkpoint, &test, &device)?,
            ModelConfig::Ddpm(_) => self.ddpm::<B::InnerBackend>(&checkpoint, &test, &device)?,
        };
        let mut reports = Vec::new();
        for Bound { name, draws, mut settings, report: r } in bounds {
            println!("{}", report_line(&name, &r));
            let fields = serde_json::json!({
                "bound": name, "bpd": r.bpd.mean, "se": r.bpd.se, "prior": r.prior,
                "reconstruction": r.reconstruction, "diffusion": r.diffusion, "images": r.per_image.len(),
                "draws": draws, "noise_sd": r.noise_sd, "per_image": r.per_image,
            });
            if let (Some(all), Some(extra)) = (settings.as_object_mut(), fields.as_object()) {
                all.extend(extra.clone());
            }
            reports.push(settings);
        }
        println!("{}", baselines_line(&state.run, &train, &test));
        if let Some(path) = &args.json {
            let doc = serde_json::json!({"checkpoint": checkpoint.dir, "step": state.step, "seed": args.seed, "bounds": reports,
                "categorical_baseline": categorical_baseline_bpd(&train, &test, 0.5), "exact": state.run.data.exact_bpd()});
            let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
            write_atomically(path, text.as_bytes()).map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))?;
        }
        Ok(())
    }
}

impl EvalJob {
    /// The options of one evaluation with `draws` draws per image.
    fn options(&self, draws: usize) -> EvalOptions {
        EvalOptions { batch_size: self.args.batch_size, draws, seed: self.args.seed }
    }

    /// `model`'s `bound` with `draws` draws per image, under a progress bar, and its settings.
    fn bound<B: FastOps, M: Likelihood<B>>(
        &self,
        model: &M,
        test: &ImageSet,
        bound: M::Bound,
        draws: usize,
        settings: serde_json::Value,
        device: &B::Device,
    ) -> Result<Bound, String> {
        let report = evaluate_with_progress(model, test, bound, &self.options(draws), device)?;
        Ok(Bound { name: model.bound_name(bound, draws), draws, settings, report })
    }

    /// A VDM's bound at every requested `T`.
    fn vdm<B: FastOps>(
        &self,
        checkpoint: &Checkpoint,
        test: &ImageSet,
        device: &B::Device,
    ) -> Result<Vec<Bound>, String> {
        let args = &self.args;
        let mut model: Vdm<B> = load_model(checkpoint, device)?;
        if args.linear_shape {
            model.schedule = model.schedule.linearised();
            println!("schedule: linear between the checkpoint's endpoints (--linear-shape)");
        }
        self.times
            .iter()
            .map(|&time| {
                let steps = match time {
                    TimeMode::Continuous => 0,
                    TimeMode::Discrete(t) => t,
                };
                let settings = serde_json::json!({"time_steps": steps, "linear_shape": args.linear_shape});
                self.bound(&model, test, time, args.draws, settings, device)
            })
            .collect()
    }

    /// A DDPM's bound: the estimate from `--draws` sampled steps per image and, with
    /// `--full-bound`, every one of its `T` terms (one draw: `T` network evaluations per image).
    fn ddpm<B: FastOps>(
        &self,
        checkpoint: &Checkpoint,
        test: &ImageSet,
        device: &B::Device,
    ) -> Result<Vec<Bound>, String> {
        let args = &self.args;
        let model: Ddpm<B> = load_model(checkpoint, device)?;
        let big_t = model.process.steps();
        let mut kinds = vec![(ddpm::Bound::Sampled, args.draws)];
        if args.full_bound {
            kinds.push((ddpm::Bound::Full, 1));
        }
        kinds
            .into_iter()
            .map(|(bound, draws)| {
                let settings = serde_json::json!({"time_steps": big_t, "full": bound == ddpm::Bound::Full});
                self.bound(&model, test, bound, draws, settings, device)
            })
            .collect()
    }
}
