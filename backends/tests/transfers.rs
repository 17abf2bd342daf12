//! Host↔device copies per training step ([`Transfers`]): on a GPU each download waits for the
//! device, so a step should make as few as it can. The counts are those of the code, the same on
//! every backend; checked here on the CPU for each kind of model and training objective.

mod common;

use common::{net_schedule, tiny_run, tiny_unet, vdm_of, B};
use vdm_backends::config::{DdpmConfig, ModelConfig, RunConfig, WeightingConfig};
use vdm_backends::model::ddpm::Ddpm;
use vdm_backends::model::Trainable;
use vdm_backends::schedule::{ScheduleConfig, ShapeObjective};
use vdm_backends::train::Trainer;
use vdm_backends::transfer::Transfers;

/// The copies of one training step (the second: the first may differ only by initialisation).
fn per_step<M: Trainable<B>>(run: &RunConfig) -> Transfers {
    let (train, _) = run.data.load(0).unwrap();
    let mut trainer = Trainer::<B, M>::new(run, train.shape(), &Default::default()).unwrap();
    trainer.train_step(&train).unwrap();
    Transfers::counted(|| trainer.train_step(&train).unwrap()).1
}

fn vdm(edit: impl FnOnce(&mut RunConfig)) -> Transfers {
    let mut run = tiny_run(10);
    edit(&mut run);
    per_step::<vdm_backends::Vdm<B>>(&run)
}

/// The copies per step of each kind of model, as docs/results.md states them ("Host–device round
/// trips per training step"): the schedule's parameters read in one download (VDM), the loss and
/// gradient norm in another after the step's work; uploads of the pixels, the noise, the host's
/// `f64` values of the schedule (times, exact `γ` and weights; the endpoints), the time
/// embedding's frequencies, and the per-example weighting where there is one.
#[test]
fn a_training_step_makes_few_copies() {
    let ddpm = RunConfig {
        model: ModelConfig::Ddpm(DdpmConfig { unet: tiny_unet(), time_steps: 20, ..DdpmConfig::default() }),
        ..tiny_run(10)
    };
    let fixed = ScheduleConfig::Fixed { gamma_min: -13.3, gamma_max: 5.0 };
    let cases = [
        ("VDM, fixed linear schedule", vdm(|r| vdm_of(r).schedule = fixed), [5, 2]),
        ("VDM, learned linear schedule", vdm(|_| {}), [6, 2]),
        ("VDM, learned schedule", vdm(|r| vdm_of(r).schedule = net_schedule(ShapeObjective::Vlb)), [6, 2]),
        (
            "VDM, learned schedule, variance objective",
            vdm(|r| vdm_of(r).schedule = net_schedule(ShapeObjective::Variance)),
            [7, 2],
        ),
        ("VDM, sigmoid weighting", vdm(|r| vdm_of(r).weighting = WeightingConfig::Sigmoid { bias: 2.0 }), [7, 2]),
        ("VDM, 100 steps", vdm(|r| r.train.time_steps = 100), [6, 2]),
        ("DDPM", per_step::<Ddpm<B>>(&ddpm), [4, 1]),
    ];
    for (name, got, [uploads, downloads]) in cases {
        assert_eq!(got, Transfers { uploads, downloads }, "{name} (docs/results.md states the counts)");
    }
}
