//! `vdm eval`: test-set bits per dimension by VLB term.

use std::path::PathBuf;

use vdm_backends::checkpoint::Checkpoint;
use vdm_backends::data::{categorical_baseline_bpd, ImageSet};
use vdm_backends::files::{describe_io, write_atomically};
use vdm_backends::model::ddpm::{self, Ddpm};
use vdm_backends::model::{EvalReport, TimeMode, Vdm};
use vdm_backends::ops::{FastOps, TrainBackend};
use vdm_core::ddpm::NormalCdf;

use super::{
    baselines_line, check_output_file, eval_with_progress, load_data, load_model, open_checkpoint, report_line,
};
use crate::device::{dispatch, BackendJob, Device};
use crate::progress::Progress;

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
    let times = args
        .time_steps
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

/// One evaluated bound: its name, its settings for the JSON report, and the report.
struct Bound {
    name: String,
    settings: serde_json::Value,
    report: EvalReport,
}

impl BackendJob for EvalJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let args = &self.args;
        let checkpoint = open_checkpoint(&args.checkpoint)?;
        let state = &checkpoint.state;
        if args.linear_shape && state.run.model.family() != "vdm" {
            return Err("--linear-shape applies to a VDM's learned schedule; this run is a DDPM".into());
        }
        if args.full_bound && state.run.model.family() != "ddpm" {
            return Err("--full-bound applies to DDPM runs (a VDM's T-step bound is chosen with --time-steps)".into());
        }
        let (train, mut test) = load_data(&state.run)?;
        if let Some(limit) = args.limit {
            test = test.select(&(0..limit.min(test.len())).collect::<Vec<_>>());
        }
        state.run.model.check_inference_memory::<B::InnerBackend>(
            state.image_shape,
            args.batch_size.min(test.len()),
            &device,
        )?;
        let bounds = match state.run.model.family() {
            "ddpm" => self.ddpm::<B::InnerBackend>(&checkpoint, &test, &device)?,
            _ => self.vdm::<B::InnerBackend>(&checkpoint, &test, &device)?,
        };
        let mut reports = Vec::new();
        for Bound { name, mut settings, report: r } in bounds {
            println!("{}", report_line(&name, &r));
            let fields = serde_json::json!({
                "bound": name, "bpd": r.bpd.mean, "se": r.bpd.se, "prior": r.prior,
                "reconstruction": r.reconstruction, "diffusion": r.diffusion, "images": r.per_image.len(),
                "draws": args.draws, "noise_sd": r.noise_sd, "per_image": r.per_image,
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
        let mut bounds = Vec::new();
        for &time in &self.times {
            let report = eval_with_progress(&model, test, time, args.batch_size, args.draws, args.seed, device)?;
            let steps = match time {
                TimeMode::Continuous => 0,
                TimeMode::Discrete(t) => t,
            };
            bounds.push(Bound {
                name: time.to_string(),
                settings: serde_json::json!({"time_steps": steps, "linear_shape": args.linear_shape}),
                report,
            });
        }
        Ok(bounds)
    }

    /// A DDPM's bound: the estimate from `--draws` sampled steps per image and, with
    /// `--full-bound`, every one of its `T` terms.
    fn ddpm<B: FastOps>(
        &self,
        checkpoint: &Checkpoint,
        test: &ImageSet,
        device: &B::Device,
    ) -> Result<Vec<Bound>, String> {
        let args = &self.args;
        let model: Ddpm<B> = load_model(checkpoint, device)?;
        let big_t = model.process.steps();
        // The convention of L_0's bin masses, beside the bound (published DDPM numbers use tanh).
        let cdf = match model.process.l0_cdf() {
            NormalCdf::Exact => "L_0 with the exact normal CDF",
            NormalCdf::Tanh => "L_0 with DDPM's tanh approximation of the normal CDF",
        };
        let mut kinds = vec![(
            format!("T={big_t}, estimate from {} sampled t per image; {cdf}", args.draws),
            ddpm::Bound::Sampled { draws: args.draws },
        )];
        if args.full_bound {
            kinds.push((format!("T={big_t}, all {big_t} terms; {cdf}"), ddpm::Bound::Full));
        }
        let mut bounds = Vec::new();
        for (name, bound) in kinds {
            let units = test.len() * if bound == ddpm::Bound::Full { big_t } else { args.draws };
            let mut progress = Progress::new(units, "eval", 0);
            progress.set(0, name.clone());
            let report =
                ddpm::evaluate(&model, test, bound, args.batch_size, args.seed, device, |n| progress.advance(n));
            progress.finish();
            let settings = serde_json::json!({"time_steps": big_t, "full": bound == ddpm::Bound::Full});
            bounds.push(Bound { name, settings, report: report? });
        }
        Ok(bounds)
    }
}
