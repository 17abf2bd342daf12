//! The default CPU run on the bundled digits beats both baselines.
//!
//! Slow (about 10 minutes on 2 cores), so ignored by default:
//! `cargo test --release -p vdm-rs --test digits -- --ignored`

use vdm::backends::config::RunConfig;
use vdm::backends::data::categorical_baseline_bpd;
use vdm::backends::model::{evaluate, TimeMode};
use vdm::backends::train::Trainer;
use vdm::backends::{Autodiff, Cpu};

#[test]
#[ignore = "trains for about 10 minutes; run with --ignored"]
fn default_digits_run_beats_uniform_and_categorical_baselines() {
    let run = RunConfig::digits();
    let device = Default::default();
    let (train, test) = run.data.load(run.train.seed).unwrap();
    let mut trainer = Trainer::<Autodiff<Cpu>>::new(&run, train.shape(), &device).unwrap();
    while trainer.step < run.train.steps {
        let stats = trainer.train_step(&train).unwrap();
        assert!(stats.loss.is_finite(), "diverged at step {}", trainer.step);
    }
    let report = evaluate(&trainer.ema, &test, TimeMode::Continuous, 256, 1, 1234, &device, |_| {}).unwrap();
    let categorical = categorical_baseline_bpd(&train, &test, 0.5);
    let bound = report.bpd.mean + 2.0 * report.bpd.se;
    assert!(bound < categorical, "test VLB {:.3} ± {:.3} bpd does not beat the categorical baseline {categorical:.3}", report.bpd.mean, report.bpd.se);
    assert!(bound < 8.0);
}
