//! `vdm sample`: ancestral or DDIM sampling (VDM or DDPM) to a PNG grid and, optionally, one PNG per image.

use std::path::PathBuf;
use std::time::Instant;

use vdm_backends::checkpoint::Checkpoint;
use vdm_backends::config::ModelConfig;
use vdm_backends::model::ddpm::Ddpm;
use vdm_backends::model::{Generative, Vdm};
use vdm_backends::ops::{FastOps, TrainBackend};
use vdm_backends::sample::SampleOptions;

use super::{check_output_file, create_empty_dir, load_model, open_checkpoint, sample_with_progress};
use crate::device::{dispatch, BackendJob, Device};
use crate::image::{check_grid, write_grid, write_images};
use crate::progress::clock;

/// What `vdm sample` was asked for.
pub struct SampleArgs {
    pub checkpoint: PathBuf,
    pub options: SampleOptions,
    pub out: PathBuf,
    pub out_dir: Option<PathBuf>,
    pub columns: usize,
    pub scale: usize,
}

pub fn sample(args: SampleArgs, device: Device) -> Result<(), String> {
    let o = &args.options;
    for (name, v) in [
        ("--n", o.n),
        ("--steps", o.steps),
        ("--scale", args.scale),
        ("--batch-size", o.batch_size),
        ("--columns", args.columns),
    ] {
        if v == 0 {
            return Err(format!("{name} must be at least 1"));
        }
    }
    check_output_file(&args.out)?;
    if let Some(dir) = &args.out_dir {
        create_empty_dir(dir, "--out-dir")?;
    }
    dispatch(device, SampleJob(args))
}

struct SampleJob(SampleArgs);

impl BackendJob for SampleJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let checkpoint = open_checkpoint(&self.0.checkpoint)?;
        match checkpoint.state.run.model {
            ModelConfig::Vdm(_) => sample_family::<B::InnerBackend, Vdm<_>>(self.0, &checkpoint, &device),
            ModelConfig::Ddpm(_) => sample_family::<B::InnerBackend, Ddpm<_>>(self.0, &checkpoint, &device),
        }
    }
}

fn sample_family<B: FastOps, M: Generative<B>>(
    args: SampleArgs,
    checkpoint: &Checkpoint,
    device: &B::Device,
) -> Result<(), String> {
    let model: M = load_model(checkpoint, device)?;
    let options = args.options;
    check_grid(options.n, checkpoint.state.image_shape, args.columns, args.scale)?;
    let start = Instant::now();
    let (images, nfe) = sample_with_progress(&model, checkpoint, &options, device)?;
    write_grid(&images, args.columns, args.scale, &args.out)?;
    if let Some(dir) = &args.out_dir {
        write_images(&images, dir, |i| format!("sample-{i:06}.png"))?;
    }
    println!(
        "wrote {} samples ({} steps of {} spaced in {}, {nfe} network evaluations per image, {}) to {}{}",
        options.n,
        options.steps,
        options.sampler,
        options.spacing,
        clock(start.elapsed().as_secs_f64()),
        args.out.display(),
        args.out_dir.map(|d| format!(" and {}", d.display())).unwrap_or_default()
    );
    Ok(())
}
