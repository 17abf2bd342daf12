//! `vdm sample`: ancestral sampling to a PNG grid.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;

use super::{bar, load};
use crate::device::{dispatch, BackendJob, Device};
use crate::image::write_grid;

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
