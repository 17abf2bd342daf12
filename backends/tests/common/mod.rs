//! What the backend tests share: a tiny run and a way to read every weight.

#![allow(dead_code)]

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use vdm_backends::config::TrainConfig;
use vdm_backends::config::{DataConfig, EvalConfig, RunConfig};
use vdm_backends::config::{ModelConfig, VdmConfig};
use vdm_backends::data::GaussianSource;
use vdm_backends::nn::ddpm_unet::UNetConfig;
use vdm_backends::nn::score_unet::ScoreNetConfig;
use vdm_backends::schedule::{ScheduleConfig, ShapeObjective};
use vdm_backends::{Autodiff, Cpu};

/// The training backend of the tests.
pub type B = Autodiff<Cpu>;

/// A model small enough to train in seconds on 1×4×4 discretised-Gaussian images.
pub fn tiny_run(steps: usize) -> RunConfig {
    RunConfig {
        data: DataConfig::Gaussian(GaussianSource {
            channels: 1,
            height: 4,
            width: 4,
            std: 24.0,
            train_size: 256,
            test_size: 64,
        }),
        model: ModelConfig::Vdm(VdmConfig {
            score: ScoreNetConfig {
                n_embd: 8,
                n_layer: 1,
                groups: 4,
                dropout: 0.0,
                fourier_exponents: vec![],
                ..ScoreNetConfig::default()
            },
            schedule: ScheduleConfig::Scalar { gamma_min: -13.3, gamma_max: 5.0 },
            ..VdmConfig::digits()
        }),
        train: TrainConfig {
            batch_size: 16,
            steps,
            lr: 3e-3,
            warmup_steps: 5,
            ema_decay: 0.9,
            clip_grad_norm: Some(1.0),
            ..TrainConfig::default()
        },
        eval: EvalConfig { every: 0, batch_size: 64, ..EvalConfig::default() },
        checkpoint_every: 1000,
        keep_checkpoints: 1,
    }
}

/// A U-Net small enough for 4×4 images: two resolutions, attention at 2×2.
pub fn tiny_unet() -> UNetConfig {
    UNetConfig {
        ch: 8,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![2],
        dropout: 0.0,
        groups: 4,
        ..UNetConfig::default()
    }
}

/// Every parameter value of `model`, in visiting order.
pub fn parameters<Bk: Backend, M: Module<Bk>>(model: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl<Bk: Backend> ModuleVisitor<Bk> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            self.0.extend(param.val().into_data().convert::<f32>().to_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// The smallest score network the tests use: 8 channels, one block per resolution.
pub fn tiny_score() -> ScoreNetConfig {
    ScoreNetConfig {
        n_embd: 8,
        n_layer: 1,
        groups: 4,
        dropout: 0.0,
        fourier_exponents: vec![4],
        ..ScoreNetConfig::default()
    }
}

/// A learned schedule of width 8 with `shape_objective`.
pub fn net_schedule(shape_objective: ShapeObjective) -> ScheduleConfig {
    ScheduleConfig::Net { gamma_min: -10.0, gamma_max: 6.0, width: 8, seed: 3, shape_objective, learn_endpoints: true }
}

/// Every parameter's gradient (empty where it has none), in visiting order.
pub fn gradients<Bk: AutodiffBackend, M: Module<Bk>>(module: &M, grads: &GradientsParams) -> Vec<Vec<f64>> {
    struct Collect<'a>(&'a GradientsParams, Vec<Vec<f64>>);
    impl<Bk: AutodiffBackend> ModuleVisitor<Bk> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            let g = self.0.get::<Bk::InnerBackend, D>(param.id);
            self.1.push(g.map_or_else(Vec::new, |g| g.into_data().iter::<f64>().collect()));
        }
    }
    let mut c = Collect(grads, Vec::new());
    module.visit(&mut c);
    c.1
}

/// The VDM settings of a VDM run.
pub fn vdm_of(run: &mut RunConfig) -> &mut VdmConfig {
    match &mut run.model {
        ModelConfig::Vdm(c) => c,
        ModelConfig::Ddpm(_) => panic!("the test needs a VDM run"),
    }
}

/// `ᾱ_t = Π_{i ≤ t} (1 − β_i)` of DDPM's linear schedule (`β` from `1e-4` to `0.02` over `T`
/// steps), directly from the βs, for `t = 1..=T`.
pub fn linear_alpha_bars(big_t: usize) -> Vec<f64> {
    alpha_bar_products(&(0..big_t).map(|i| 1e-4 + (0.02 - 1e-4) * i as f64 / (big_t - 1) as f64).collect::<Vec<f64>>())
}

/// `ᾱ_t = Π_{i ≤ t} (1 − β_i)`.
pub fn alpha_bar_products(betas: &[f64]) -> Vec<f64> {
    betas
        .iter()
        .scan(1.0, |a, b| {
            *a *= 1.0 - b;
            Some(*a)
        })
        .collect()
}

/// The `f32` values and shape of tensor `name` of a safetensors file.
pub fn floats(file: &safetensors::SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let view = file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (values, view.shape().to_vec())
}

/// `got` equals the peer implementation's `want` to `1e-5` of its largest magnitude (f32); the
/// largest difference is printed (`--nocapture`) for the docs.
pub fn assert_matches_reference(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "output sizes");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("largest difference {worst:e} of {scale}");
    assert!(worst <= 1e-5 * scale, "largest difference {worst:e}, output scale {scale}");
}

/// The safetensors files `a` and `b` hold the same tensors: names, shapes, dtypes and bytes.
pub fn assert_same_tensors(a: &[u8], b: &[u8]) {
    let (a, b) = (safetensors::SafeTensors::deserialize(a).unwrap(), safetensors::SafeTensors::deserialize(b).unwrap());
    let (mut names, mut others) = (a.names(), b.names());
    names.sort();
    others.sort();
    assert_eq!(names, others, "the same tensor names");
    for name in names {
        let (x, y) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
        assert_eq!((x.shape(), x.dtype()), (y.shape(), y.dtype()), "{name}");
        assert!(x.data() == y.data(), "{name}: the values differ");
    }
}
