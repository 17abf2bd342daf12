//! `vdm eval`: test-set bits per dimension by VLB term.

use std::path::PathBuf;

use vdm_backends::ops::TrainBackend;
use vdm_backends::checkpoint::{describe_io, write_atomically};
use vdm_backends::data::categorical_baseline_bpd;
use vdm_backends::model::TimeMode;

use super::{baselines_line, check_output_file, eval_with_progress, load, load_data, report_line};
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
}

pub fn eval(args: EvalArgs, device: Device) -> Result<(), String> {
    if args.batch_size == 0 || args.draws == 0 {
        return Err("--batch-size and --draws must be at least 1".into());
    }
    if args.limit == Some(0) {
        return Err("--limit must be at least 1 (it is the number of test images to evaluate)".into());
    }
    let times = args.time_steps.iter().map(|&t| TimeMode::from_steps(t).map_err(|e| format!("--time-steps: {e}"))).collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = &args.json {
        check_output_file(path)?;
    }
    dispatch(device, EvalJob { args, times })
}

struct EvalJob {
    args: EvalArgs,
    times: Vec<TimeMode>,
}

impl BackendJob for EvalJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let args = self.args;
        let (mut model, checkpoint) = load::<B::InnerBackend>(&args.checkpoint, &device)?;
        if args.linear_shape {
            model.schedule = model.schedule.linearised();
            println!("schedule: linear between the checkpoint's endpoints (--linear-shape)");
        }
        let state = &checkpoint.state;
        let (train, mut test) = load_data(&state.run)?;
        if let Some(limit) = args.limit {
            test = test.select(&(0..limit.min(test.len())).collect::<Vec<_>>());
        }
        state.run.model.check_inference_memory::<B::InnerBackend>(state.image_shape, args.batch_size.min(test.len()), &device)?;
        let mut reports = Vec::new();
        for time in self.times {
            let r = eval_with_progress(&model, &test, time, args.batch_size, args.draws, args.seed, &device)?;
            println!("{}", report_line(time, &r));
            let steps = match time {
                TimeMode::Continuous => 0,
                TimeMode::Discrete(t) => t,
            };
            reports.push(serde_json::json!({
                "time_steps": steps, "bpd": r.bpd.mean, "se": r.bpd.se, "prior": r.prior,
                "reconstruction": r.reconstruction, "diffusion": r.diffusion, "images": r.per_image.len(),
                "draws": args.draws, "noise_sd": r.noise_sd, "linear_shape": args.linear_shape, "per_image": r.per_image,
            }));
        }
        println!("{}", baselines_line(&state.run, &train, &test));
        if let Some(path) = args.json {
            let doc = serde_json::json!({"checkpoint": checkpoint.dir, "step": state.step, "seed": args.seed, "bounds": reports,
                "categorical_baseline": categorical_baseline_bpd(&train, &test, 0.5), "exact": state.run.data.exact_bpd()});
            let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
            write_atomically(&path, text.as_bytes()).map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))?;
        }
        Ok(())
    }
}
