//! VDM's score network (`ScoreUNet` in google-research/vdm): a U-Net without downsampling.
//!
//! `conv_in → n_layer ResNet blocks → (ResNet, self-attention, ResNet) → n_layer + 1 ResNet
//! blocks on [h, skip] → GroupNorm, swish, conv_out (zero-initialised)`, conditioned on
//! `γ_t` through a sinusoidal embedding, with Fourier features of `z_t` as extra input
//! channels; the output is `ε̂ = out + z_t`, so the untrained network predicts `ε̂ = z_t`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::blocks::{
    timestep_embedding, AttnBlock, CondProjection, Conv, Grouping, Init, Norm, ResnetBlock, BURN_GROUP_NORM_EPSILON,
};
use crate::error::{Error, Result};
use crate::ops::{self, FastOps};

/// The largest accepted `n_embd` (VDM's CIFAR-10 model has 128).
pub const MAX_WIDTH: usize = 8192;
/// The largest accepted `n_layer` (VDM's CIFAR-10 model has 32).
pub const MAX_LAYERS: usize = 1024;
/// Accepted Fourier feature exponents.
pub const FOURIER_EXPONENTS: std::ops::RangeInclusive<i32> = 0..=16;

/// Sizes of a [`ScoreNet`]. VDM's CIFAR-10 model is `n_embd = 128`, `n_layer = 32`, `dropout = 0.1`.
/// The image channels are not a setting: they come from the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreNetConfig {
    /// Width of every ResNet block.
    pub n_embd: usize,
    /// ResNet blocks on the way down (the way up has `n_layer + 1`).
    pub n_layer: usize,
    /// GroupNorm groups (32 in VDM); must divide `n_embd`.
    pub groups: usize,
    /// Dropout probability inside ResNet blocks.
    pub dropout: f64,
    /// Fourier feature exponents `n`: features `sin(2ⁿ π z)`, `cos(2ⁿ π z)` (VDM: 7, 8).
    pub fourier_exponents: Vec<i32>,
    /// `γ` mapped to 0 by the conditioning (`t' = (γ − γ_min)/(γ_max − γ_min)`).
    pub gamma_min: f64,
    /// `γ` mapped to 1 by the conditioning.
    pub gamma_max: f64,
}

impl Default for ScoreNetConfig {
    /// VDM's CIFAR-10 architecture.
    fn default() -> Self {
        Self {
            n_embd: 128,
            n_layer: 32,
            groups: 32,
            dropout: 0.1,
            fourier_exponents: vec![7, 8],
            gamma_min: -13.3,
            gamma_max: 5.0,
        }
    }
}

impl ScoreNetConfig {
    /// Checks the sizes, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.n_embd < 4 || !self.n_embd.is_multiple_of(2) || self.n_embd > MAX_WIDTH {
            return Err(Error::setting(
                "score.n_embd",
                format!("score.n_embd must be even and between 4 and {MAX_WIDTH}, got {}", self.n_embd),
            ));
        }
        if self.n_layer > MAX_LAYERS {
            return Err(Error::setting(
                "score.n_layer",
                format!("score.n_layer must be at most {MAX_LAYERS}, got {}", self.n_layer),
            ));
        }
        if let Some(n) = self.fourier_exponents.iter().find(|n| !FOURIER_EXPONENTS.contains(n)) {
            return Err(Error::setting(
                "score.fourier_exponents",
                format!(
                    "score.fourier_exponents must lie in {}..={} (sin(2ⁿπz) of an f32 z is noise beyond that), got {n}",
                    FOURIER_EXPONENTS.start(),
                    FOURIER_EXPONENTS.end()
                ),
            ));
        }
        if self.groups == 0 || !self.n_embd.is_multiple_of(self.groups) {
            return Err(Error::setting(
                "score.groups",
                format!("score.groups ({}) must divide score.n_embd ({})", self.groups, self.n_embd),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::setting(
                "score.dropout",
                format!("score.dropout must be in [0, 1), got {}", self.dropout),
            ));
        }
        if !(self.gamma_min.is_finite() && self.gamma_max.is_finite() && self.gamma_min < self.gamma_max) {
            return Err(Error::setting(
                "score.gamma_min",
                format!("score needs finite gamma_min < gamma_max, got {} and {}", self.gamma_min, self.gamma_max),
            ));
        }
        Ok(())
    }

    /// `f32` values a training step keeps per image for the backward pass (activations of every
    /// block and the attention matrix), an estimate for refusing sizes that cannot fit.
    pub fn activations_per_image(&self, [c, h, w]: [usize; 3]) -> u128 {
        let (pixels, n) = ((h * w) as u128, self.n_embd as u128);
        let blocks = 2 * self.n_layer as u128 + 3;
        // Per block about 12 tensors of n channels (norms, activations, convolutions, the
        // concatenated skip); the input features; attention's scores, softmax and its gradient
        // (where the backend has no fused attention and keeps them).
        blocks * 12 * n * pixels + (c * (1 + 2 * self.fourier_exponents.len())) as u128 * pixels + 3 * pixels * pixels
    }

    /// A freshly initialised network for images of `channels` channels.
    pub fn init<B: Backend>(&self, channels: usize, device: &B::Device) -> ScoreNet<B> {
        let n = self.n_embd;
        let in_channels = channels * (1 + 2 * self.fourier_exponents.len());
        let conv = |c_in: usize, c_out: usize, init: Init| Conv::same(c_in, c_out, 3, init, device);
        let grouping = Grouping { groups: self.groups, epsilon: BURN_GROUP_NORM_EPSILON };
        let block =
            |c_in: usize| ResnetBlock::new(c_in, n, 4 * n, grouping, self.dropout, CondProjection::ZeroNoBias, device);
        ScoreNet {
            dense0: LinearConfig::new(n, 4 * n).init(device),
            dense1: LinearConfig::new(4 * n, 4 * n).init(device),
            conv_in: conv(in_channels, n, Init::Default),
            down: (0..self.n_layer).map(|_| block(n)).collect(),
            mid1: block(n),
            mid_attn: AttnBlock::new(n, grouping, device),
            mid2: block(n),
            up: (0..=self.n_layer).map(|_| block(2 * n)).collect(),
            norm_out: Norm::new(grouping, n, true, device),
            conv_out: conv(n, channels, Init::Zeros),
            n_embd: n,
            fourier_exponents: self.fourier_exponents.clone(),
            gamma_min: self.gamma_min,
            gamma_max: self.gamma_max,
        }
    }
}

/// The noise-prediction network `ε̂(z_t; γ_t)`.
#[derive(Module, Debug)]
pub struct ScoreNet<B: Backend> {
    dense0: Linear<B>,
    dense1: Linear<B>,
    conv_in: Conv<B>,
    down: Vec<ResnetBlock<B>>,
    mid1: ResnetBlock<B>,
    mid_attn: AttnBlock<B>,
    mid2: ResnetBlock<B>,
    up: Vec<ResnetBlock<B>>,
    norm_out: Norm<B>,
    conv_out: Conv<B>,
    #[module(skip)]
    n_embd: usize,
    #[module(skip)]
    fourier_exponents: Vec<i32>,
    #[module(skip)]
    gamma_min: f64,
    #[module(skip)]
    gamma_max: f64,
}

impl<B: Backend> ScoreNet<B> {
    /// Image channels the network takes and predicts.
    pub fn channels(&self) -> usize {
        self.conv_out.out_channels()
    }
}

impl<B: FastOps> ScoreNet<B> {
    /// `ε̂(z_t; γ_t)` for `z_t` of shape `[B, C, H, W]` and `γ_t` of shape `[B]`.
    pub fn forward(&self, z: Tensor<B, 4>, gamma: Tensor<B, 1>) -> Tensor<B, 4> {
        let [_, _, h, w] = z.dims();
        let activation_bytes = self.n_embd * h * w * std::mem::size_of::<B::FloatElem>();
        ops::evaluate_in_parts(z, gamma, activation_bytes, |z, gamma| self.evaluate(z, gamma))
    }

    /// [`ScoreNet::forward`] on one part of the batch ([`ops::evaluate_in_parts`]).
    fn evaluate(&self, z: Tensor<B, 4>, gamma: Tensor<B, 1>) -> Tensor<B, 4> {
        let t = gamma.sub_scalar(self.gamma_min).div_scalar(self.gamma_max - self.gamma_min);
        let temb = timestep_embedding(t.mul_scalar(1000.0), self.n_embd);
        let cond = silu(self.dense1.forward(silu(self.dense0.forward(temb))));

        let h = self.conv_in.forward(fourier_features(z.clone(), &self.fourier_exponents));
        let mut skips = vec![h];
        for block in &self.down {
            let h = block.forward(skips.last().expect("skips start non-empty").clone(), cond.clone());
            skips.push(h);
        }
        let mut h = skips.last().expect("skips start non-empty").clone();
        h = self.mid1.forward(h, cond.clone());
        h = self.mid_attn.forward(h);
        h = self.mid2.forward(h, cond.clone());
        for block in &self.up {
            let skip = skips.pop().expect("one skip per up block");
            h = block.forward(ops::concat_channels(h, skip), cond.clone());
        }
        let out = self.conv_out.forward(self.norm_out.forward(h));
        out + z
    }
}

/// `[z, sin(2ⁿ π z), cos(2ⁿ π z) for n in exponents]` along channels (VDM `Base2FourierFeatures`).
fn fourier_features<B: Backend>(z: Tensor<B, 4>, exponents: &[i32]) -> Tensor<B, 4> {
    let mut parts = vec![z.clone()];
    for &n in exponents {
        let scaled = z.clone().mul_scalar(2f64.powi(n) * std::f64::consts::PI);
        parts.push(scaled.clone().sin());
        parts.push(scaled.cos());
    }
    Tensor::cat(parts, 1)
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use crate::{Autodiff, Cpu};
    use burn::module::{AutodiffModule, ModuleMapper, Param};
    use burn::tensor::Distribution;

    /// Every parameter replaced by normal noise (the zero-initialised layers too, so that the
    /// network is not the identity).
    struct Randomise;
    impl<B: Backend> ModuleMapper<B> for Randomise {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, old, mapper) = param.consume();
            Param::from_mapped_value(
                id,
                Tensor::random(old.shape(), Distribution::Normal(0.0, 0.1), &old.device()),
                mapper,
            )
        }
    }

    /// Evaluated in parts (the CPU backend on one thread takes 4 images of 256 KB activations at a
    /// time: here 4 + 4 + 1), the network gives the values of one evaluation of the whole batch
    /// (on the autodiff backend, which does not split it), bit for bit.
    #[test]
    fn evaluation_in_parts_equals_one_evaluation() {
        let device = Default::default();
        Autodiff::<Cpu>::seed(&device, 3);
        let config = ScoreNetConfig { n_embd: 64, n_layer: 1, dropout: 0.0, ..ScoreNetConfig::default() };
        let whole = config.init::<Autodiff<Cpu>>(3, &device).map(&mut Randomise);
        let parts = whole.valid();
        let z = Tensor::<Cpu, 4>::random([9, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let gamma = Tensor::<Cpu, 1>::random([9], Distribution::Uniform(-10.0, 5.0), &device);

        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let (split, one) = pool.install(|| {
            assert_eq!(Cpu::evaluation_batch(64 * 32 * 32 * 4), 4, "the part size this test is built on");
            let one = whole.forward(Tensor::from_inner(z.clone()), Tensor::from_inner(gamma.clone())).inner();
            (parts.forward(z.clone(), gamma), one)
        });
        let (split, one) = (split.into_data().to_vec::<f32>().unwrap(), one.into_data().to_vec::<f32>().unwrap());
        assert!(split != z.into_data().to_vec::<f32>().unwrap(), "the network is the identity");
        assert!(split == one, "evaluation in parts differs from one evaluation");
    }
}
