//! `vdm schedule`: print and plot a noise schedule.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use vdm_backends::config::RunConfig;
use vdm_core::process::{alpha, sigma};

use super::{load, read_config};
use crate::device::{dispatch, BackendJob, Device};
use crate::image::write_png;

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
