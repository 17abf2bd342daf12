//! `vdm schedule`: print and plot a noise schedule.

use std::path::{Path, PathBuf};

use vdm_backends::ops::TrainBackend;
use vdm_backends::config::RunConfig;
use vdm_core::process::{alpha, sigma};
use vdm_core::schedule::NoiseSchedule;

use super::{check_output_file, load, read_config};
use crate::device::{dispatch, BackendJob, Device};
use crate::image::write_png;

/// The most rows `vdm schedule` prints.
const MAX_POINTS: usize = 100_000;

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
    if !(2..=MAX_POINTS).contains(&points) {
        return Err(format!("--points must be between 2 and {MAX_POINTS}"));
    }
    if let Some(path) = &plot {
        check_output_file(path)?;
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

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let schedule = match self.source {
            ScheduleSource::Checkpoint(path) => load::<B::InnerBackend>(&path, &device)?.0.schedule,
            ScheduleSource::Config(run) => run.model.schedule.init::<B::InnerBackend>(&device),
        }
        .to_host();
        println!("{:>6} {:>10} {:>10} {:>12} {:>10} {:>10}", "t", "gamma", "gamma'", "log10 SNR", "alpha", "sigma");
        for i in 0..self.points {
            let t = i as f64 / (self.points - 1) as f64;
            let (g, gp) = (schedule.gamma(t), schedule.gamma_prime(t));
            println!("{t:>6.3} {g:>10.4} {gp:>10.4} {:>12.4} {:>10.6} {:>10.6}", -g / std::f64::consts::LN_10, alpha(g), sigma(g));
        }
        if let Some(path) = self.plot {
            let curve: Vec<f64> = (0..=400).map(|i| schedule.gamma(i as f64 / 400.0)).collect();
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
