//! `vdm data`: load a run's data and describe it (sizes, labels, memory, time, baseline).

use std::path::PathBuf;
use std::time::Instant;

use vdm_backends::config::RunConfig;
use vdm_backends::data::{categorical_baseline_bpd, ImageSet};
use vdm_backends::memory::{self, Bytes};

use super::read_config;
use crate::progress::clock;

pub fn describe(config: Option<PathBuf>) -> Result<(), String> {
    let run = match config {
        Some(path) => read_config(&path)?,
        None => RunConfig::digits(),
    };
    let start = Instant::now();
    let (train, test) = run.data.load(run.train.seed).map_err(|e| format!("loading data: {e}"))?;
    let elapsed = start.elapsed().as_secs_f64();
    let [c, h, w] = train.shape();
    println!("images: {c}x{h}x{w}, {} train, {} test", train.len(), test.len());
    println!(
        "in memory: {} of pixels; loaded in {}",
        Bytes((train.pixels.len() + test.pixels.len()) as u64),
        clock(elapsed)
    );
    if let Some(peak) = memory::peak_resident() {
        println!("peak resident memory of this process: {}", Bytes(peak));
    }
    for (name, set) in [("train", &train), ("test", &test)] {
        println!("{name} labels: {}", describe_labels(set));
    }
    println!(
        "per-pixel categorical baseline (add-½ smoothing, fit on train): {:.4} bpd on test",
        categorical_baseline_bpd(&train, &test, 0.5)
    );
    Ok(())
}

fn describe_labels(set: &ImageSet) -> String {
    let Some(labels) = &set.labels else { return "none".into() };
    let mut counts = vec![0usize; set.num_classes()];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let named = |k: usize| set.class_names.get(k).map_or(k.to_string(), |n| format!("{k} {n}"));
    let parts: Vec<String> = counts.iter().enumerate().map(|(k, n)| format!("{}: {n}", named(k))).collect();
    format!("{} classes ({})", counts.len(), parts.join(", "))
}
