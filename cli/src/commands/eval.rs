//! `vdm eval`: test-set bits per dimension by VLB term.

use std::fs;
use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use vdm_backends::checkpoint::checkpoint_dir;
use vdm_backends::data::categorical_baseline_bpd;
use vdm_backends::model::TimeMode;

use super::{baselines_line, eval_with_bar, load, load_data, report_line};
use crate::device::{dispatch, BackendJob, Device};

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
