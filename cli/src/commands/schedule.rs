//! `vdm schedule`: print and plot a noise schedule.

use std::path::PathBuf;

use vdm_backends::error::describe_io;
use vdm_backends::files::write_atomically;

use vdm_backends::config::RunConfig;
use vdm_backends::model::Vdm;
use vdm_backends::ops::TrainBackend;
use vdm_core::process::{alpha, sigma};
use vdm_core::schedule::NoiseSchedule;

use super::{check_output_file, load, read_config};
use crate::device::{dispatch, BackendJob, Device};
use crate::plot::{LinePlot, Series};

/// The most rows `vdm schedule` prints.
const MAX_POINTS: usize = 100_000;

struct ScheduleJob {
    source: ScheduleSource,
    points: usize,
    plot: Option<PathBuf>,
}

enum ScheduleSource {
    Checkpoint(PathBuf),
    Config(Box<RunConfig>),
}

pub fn schedule(
    checkpoint: Option<PathBuf>,
    config: Option<PathBuf>,
    points: usize,
    plot: Option<PathBuf>,
) -> Result<(), String> {
    if !(2..=MAX_POINTS).contains(&points) {
        return Err(format!("--points must be between 2 and {MAX_POINTS}"));
    }
    if let Some(path) = &plot {
        check_output_file(path)?;
    }
    let source = match (checkpoint, config) {
        (Some(c), _) => ScheduleSource::Checkpoint(c),
        (None, Some(path)) => ScheduleSource::Config(Box::new(read_config(&path)?)),
        (None, None) => ScheduleSource::Config(Box::new(RunConfig::digits())),
    };
    dispatch(Device::Cpu, ScheduleJob { source, points, plot })
}

impl BackendJob for ScheduleJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let schedule = match self.source {
            ScheduleSource::Checkpoint(path) => load::<B::InnerBackend, Vdm<_>>(&path, &device)?.0.schedule,
            ScheduleSource::Config(run) => run.model.vdm("vdm schedule")?.schedule.init::<B::InnerBackend>(&device),
        }
        .to_host();
        println!("{:>6} {:>10} {:>10} {:>12} {:>10} {:>10}", "t", "gamma", "gamma'", "log10 SNR", "alpha", "sigma");
        for i in 0..self.points {
            let t = i as f64 / (self.points - 1) as f64;
            let (g, gp) = (schedule.gamma(t), schedule.gamma_prime(t));
            println!(
                "{t:>6.3} {g:>10.4} {gp:>10.4} {:>12.4} {:>10.6} {:>10.6}",
                -g / std::f64::consts::LN_10,
                alpha(g),
                sigma(g)
            );
        }
        if let Some(path) = self.plot {
            let points = (0..=400).map(|i| i as f64 / 400.0).map(|t| (t, schedule.gamma(t))).collect();
            let plot = LinePlot {
                title: "noise schedule",
                x_label: "t",
                y_label: "gamma(t) = -log SNR(t)",
                series: vec![Series { name: "gamma(t)".into(), points }],
            };
            write_atomically(&path, plot.to_svg()?.as_bytes())
                .map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))?;
            println!("plot of gamma(t) written to {} (SVG)", path.display());
        }
        Ok(())
    }
}
