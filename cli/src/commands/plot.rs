//! `vdm plot`: compare runs side by side: test bpd against training steps (from each run's
//! `metrics.jsonl`) and the learned schedules `γ(t)` (from each run's newest checkpoint).

use std::fs;
use std::path::{Path, PathBuf};

use vdm_backends::error::describe_io;
use vdm_backends::files::write_atomically;
use vdm_backends::model::Vdm;
use vdm_backends::Cpu;
use vdm_core::schedule::NoiseSchedule;

use super::{check_output_file, load};
use crate::plot::{LinePlot, Series};

/// `(step, bpd)` points and the `T` of the bound they measured.
type Evaluations = (Vec<(f64, f64)>, Option<u64>);

/// The test-bpd evaluations a run logged: `(step, bpd)` per line of `metrics.jsonl` with an
/// `eval` entry, and the `T` they were taken at.
fn evaluations(run: &Path) -> Result<Evaluations, String> {
    let path = run.join("metrics.jsonl");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))?;
    let (mut points, mut time_steps) = (Vec::new(), None);
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
        if let (Some(step), Some(bpd)) = (value["step"].as_f64(), value["eval"]["mean"].as_f64()) {
            points.push((step, bpd));
            time_steps = value["time_steps"].as_u64();
        }
    }
    Ok((points, time_steps))
}

fn name(run: &Path) -> String {
    run.file_name().map_or_else(|| run.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The files `vdm plot` writes into its output directory.
const FILES: [&str; 2] = ["test_bpd.svg", "gamma.svg"];

pub fn plot(runs: Vec<PathBuf>, out_dir: PathBuf) -> Result<(), String> {
    if runs.is_empty() {
        return Err("give at least one --run".into());
    }
    if !out_dir.is_dir() {
        return Err(format!("{} does not exist or is not a directory", out_dir.display()));
    }
    for file in FILES {
        check_output_file(&out_dir.join(file))?;
    }
    let (mut bpd, mut gamma, mut time_steps) = (Vec::new(), Vec::new(), None);
    for run in &runs {
        let (points, t) = evaluations(run)?;
        if points.is_empty() {
            eprintln!("warning: {} logged no test evaluations (eval.every = 0?)", run.display());
        }
        time_steps = time_steps.or(t);
        bpd.push(Series { name: name(run), points });
        let schedule = load::<Cpu, Vdm<_>>(run, &Default::default())?.0.schedule.to_host();
        gamma.push(Series {
            name: name(run),
            points: (0..=200).map(|i| i as f64 / 200.0).map(|t| (t, schedule.gamma(t))).collect(),
        });
    }
    let bound = match time_steps {
        Some(0) | None => "T = inf".to_string(),
        Some(t) => format!("T = {t}"),
    };
    let plots = [
        (
            FILES[0],
            LinePlot {
                title: &format!("test bits per dimension ({bound}, EMA weights)"),
                x_label: "training step",
                y_label: "bpd",
                series: bpd,
            },
        ),
        (
            FILES[1],
            LinePlot {
                title: "learned noise schedules (EMA weights)",
                x_label: "t",
                y_label: "gamma(t) = -log SNR(t)",
                series: gamma,
            },
        ),
    ];
    for (file, plot) in plots {
        let path = out_dir.join(file);
        write_atomically(&path, plot.to_svg()?.as_bytes())
            .map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
