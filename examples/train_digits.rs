//! Training from Rust: the default digits run for a few hundred steps, then evaluation and
//! samples drawn as text.
//!
//! `cargo run --release --example train_digits -- 300`

use vdm::{evaluate, sample, Autodiff, Cpu, EvalOptions, RunConfig, SampleOptions, TimeMode, Trainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(300);
    let mut run = RunConfig::digits();
    run.train.steps = steps;
    let device = Default::default();
    let (train, test) = run.data.load(run.train.seed)?;
    let mut trainer = Trainer::<Autodiff<Cpu>>::new(&run, train.shape(), &device)?;
    while trainer.step() < steps {
        let stats = trainer.train_step(&train)?;
        if trainer.step() % 50 == 0 {
            println!("step {:>5}: batch VLB {:.3} bpd", trainer.step(), stats.loss);
        }
    }
    let report = evaluate(trainer.ema(), &test, TimeMode::Continuous, &EvalOptions::default(), &device, |_| {})?;
    println!("test VLB {:.3} ± {:.3} bpd", report.bpd.mean, report.bpd.se);

    let samples = sample(
        trainer.ema(),
        [8, 8],
        &SampleOptions { n: 4, steps: 200, ..SampleOptions::default() },
        &device,
        &mut || {},
    )?;
    let shades = [' ', '.', ':', '-', '=', '+', '*', '#', '%', '@'];
    for row in 0..8 {
        let line: Vec<String> = (0..samples.len())
            .map(|i| samples.image(i)[row * 8..row * 8 + 8].iter().map(|&p| shades[p as usize * 9 / 255]).collect())
            .collect();
        println!("{}", line.join("   "));
    }
    Ok(())
}
