//! `vdm crosscheck`: the same checkpoint and seed on the CPU and on CUDA.

use std::path::{Path, PathBuf};

#[cfg(all(feature = "ndarray", feature = "cuda"))]
use vdm_backends::eval::EvalOptions;
use vdm_backends::model::TimeMode;
#[cfg(all(feature = "ndarray", feature = "cuda"))]
use vdm_backends::model::Vdm;

#[cfg(all(feature = "ndarray", feature = "cuda"))]
use super::{evaluate_with_progress, load, load_data, report_line};

pub fn crosscheck(
    checkpoint: PathBuf,
    images: usize,
    time_steps: usize,
    tolerance: f64,
    seed: u64,
) -> Result<(), String> {
    if images == 0 {
        return Err("--images must be at least 1".into());
    }
    if !(tolerance >= 0.0 && tolerance.is_finite()) {
        return Err(format!("--tolerance must be a non-negative number, got {tolerance}"));
    }
    let time = TimeMode::from_steps(time_steps).map_err(|e| format!("--time-steps: {e}"))?;
    crosscheck_backends(&checkpoint, images, time, tolerance, seed)
}

#[cfg(all(feature = "ndarray", feature = "cuda"))]
fn crosscheck_backends(
    checkpoint: &Path,
    images: usize,
    time: TimeMode,
    tolerance: f64,
    seed: u64,
) -> Result<(), String> {
    let check = std::panic::AssertUnwindSafe(|| compare_cpu_and_cuda(checkpoint, images, time, tolerance, seed));
    std::panic::catch_unwind(check).unwrap_or_else(|_| Err(crate::device::CUDA_FAILED.into()))
}

#[cfg(all(feature = "ndarray", feature = "cuda"))]
fn compare_cpu_and_cuda(
    checkpoint: &Path,
    images: usize,
    time: TimeMode,
    tolerance: f64,
    seed: u64,
) -> Result<(), String> {
    use vdm_backends::{Cpu, Cuda};
    let (cpu_model, checkpoint) = load::<Cpu, Vdm<_>>(checkpoint, &Default::default())?;
    let (gpu_model, _) = load::<Cuda, Vdm<_>>(&checkpoint.dir, &Default::default())?;
    let run = &checkpoint.state.run;
    let (_, test) = load_data(run)?;
    let test = test.select(&(0..images.min(test.len())).collect::<Vec<_>>());
    let batch = run.eval.batch_size;
    let options = EvalOptions { batch_size: batch, draws: 1, seed };
    let cpu = evaluate_with_progress(&cpu_model, &test, time, &options, &Default::default())?;
    let gpu = evaluate_with_progress(&gpu_model, &test, time, &options, &Default::default())?;
    let max_diff = cpu.per_image.iter().zip(&gpu.per_image).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    println!("cpu  (ndarray): {}", report_line(&time.to_string(), &cpu));
    println!("cuda          : {}", report_line(&time.to_string(), &gpu));
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
         build it with `cargo build --release --features cuda -p vdm-cli`"
        .into())
}
