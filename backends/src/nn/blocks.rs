//! Building blocks shared by the networks: convolution, group normalisation (with swish), the
//! ResNet block, self-attention and the sinusoidal timestep embedding. The convolution (with a
//! ResNet block's conditioning and skip folded in), the normalisation and the attention run as
//! [`crate::ops`]' fused operations.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, GroupNorm, GroupNormConfig, Initializer, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Float, Tensor, TensorData};

use crate::ops::{self, ConvSpec, FastOps, NormSpec};
use crate::transfer::upload;

/// How a layer's weights start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// The layer's default initialiser.
    Default,
    /// All zeros.
    Zeros,
}

/// A `k×k` convolution with bias, of any stride and zero padding ([`ConvSpec`]).
#[derive(Module, Debug)]
pub struct Conv<B: Backend> {
    conv: Conv2d<B>,
    #[module(skip)]
    spec: ConvSpec,
}

impl<B: Backend> Conv<B> {
    /// A `k×k` convolution from `c_in` to `c_out` channels.
    pub fn new(c_in: usize, c_out: usize, kernel: usize, spec: ConvSpec, init: Init, device: &B::Device) -> Self {
        let config = Conv2dConfig::new([c_in, c_out], [kernel, kernel]);
        let config = match init {
            Init::Default => config,
            Init::Zeros => config.with_initializer(Initializer::Zeros),
        };
        Self { conv: config.init(device), spec }
    }

    /// A stride-1 convolution that keeps the image size (odd `k`, `k/2` zeros on every side).
    pub fn same(c_in: usize, c_out: usize, kernel: usize, init: Init, device: &B::Device) -> Self {
        Self::new(c_in, c_out, kernel, ConvSpec::same(kernel), init, device)
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.conv.weight.dims()[0]
    }
}

impl<B: FastOps> Conv<B> {
    /// `[N, C_in, H, W] → [N, C_out, H', W']`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_with(x, None, None)
    }

    /// The convolution with `shift` `[N, C_out]` added to each image's bias, and `residual`
    /// `[N, C_out, H', W']` added to the output: both folded into the one operation.
    pub fn forward_with(
        &self,
        x: Tensor<B, 4>,
        shift: Option<Tensor<B, 2>>,
        residual: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        let (n, o) = (x.dims()[0], self.out_channels());
        let bias = match &self.conv.bias {
            Some(b) => b.val().unsqueeze_dim(0),
            None => Tensor::zeros([1, o], &x.device()),
        };
        let bias = match shift {
            Some(shift) => shift + bias,
            None => ops::per_image(bias, n),
        };
        ops::conv_with(x, self.conv.weight.val(), bias, residual, self.spec)
    }
}

/// A group normalisation's settings: `groups` groups (32 in VDM and DDPM), `epsilon` added to
/// the variance (1e-6 in both original codes; vdm-rs's networks have used burn's default, 1e-5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grouping {
    /// The number of groups (divides the channels).
    pub groups: usize,
    /// Added to the variance.
    pub epsilon: f64,
}

/// burn's default GroupNorm epsilon, which VDM's score network uses.
pub const BURN_GROUP_NORM_EPSILON: f64 = 1e-5;

/// Group normalisation, optionally followed by swish.
#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    norm: GroupNorm<B>,
    #[module(skip)]
    swish: bool,
}

impl<B: Backend> Norm<B> {
    /// `grouping` over `channels` channels; `swish` adds `y σ(y)` after it.
    pub fn new(grouping: Grouping, channels: usize, swish: bool, device: &B::Device) -> Self {
        let config = GroupNormConfig::new(grouping.groups, channels).with_epsilon(grouping.epsilon);
        Self { norm: config.init(device), swish }
    }
}

impl<B: FastOps> Norm<B> {
    /// `[N, C, H, W] → [N, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let channels = x.dims()[1];
        let (gamma, beta) = match (&self.norm.gamma, &self.norm.beta) {
            (Some(g), Some(b)) => (g.val(), b.val()),
            _ => (Tensor::ones([channels], &x.device()), Tensor::zeros([channels], &x.device())),
        };
        let spec = NormSpec { groups: self.norm.num_groups, epsilon: self.norm.epsilon, swish: self.swish };
        ops::group_norm(x, gamma, beta, spec)
    }
}

/// Fairseq's sinusoidal embedding (VDM's and DDPM's `get_timestep_embedding`) of `t`:
/// `[sin(t f_k), cos(t f_k)]`, `f_k = 10000^{−k/(d/2 − 1)}`, `[B] → [B, dim]`.
pub fn timestep_embedding<B: Backend>(t: Tensor<B, 1>, dim: usize) -> Tensor<B, 2> {
    let half = dim / 2;
    let device = t.device();
    let scale = (10_000f64).ln() / (half as f64 - 1.0);
    let freqs: Vec<f32> = (0..half).map(|k| (-(k as f64) * scale).exp() as f32).collect();
    let freqs = upload::<B, 1, Float>(TensorData::new(freqs, [half]), &device).unsqueeze_dim::<2>(0);
    let args = t.unsqueeze_dim::<2>(1) * freqs;
    Tensor::cat(vec![args.clone().sin(), args.cos()], 1)
}

/// How a ResNet block receives its conditioning vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CondProjection {
    /// VDM: a zero-initialised dense layer without bias (the block starts as the identity).
    ZeroNoBias,
    /// DDPM: a dense layer with bias and its default initialisation.
    Dense,
}

/// `x + conv2(dropout(swish(GN(conv1(swish(GN(x))) + W cond))))`, with a 1×1 projection of `x`
/// when the channel count changes (VDM's and DDPM's `ResnetBlock`); `conv2` starts at zero.
#[derive(Module, Debug)]
pub struct ResnetBlock<B: Backend> {
    norm1: Norm<B>,
    conv1: Conv<B>,
    cond_proj: Linear<B>,
    norm2: Norm<B>,
    dropout: Dropout,
    conv2: Conv<B>,
    shortcut: Option<Conv<B>>,
}

impl<B: Backend> ResnetBlock<B> {
    /// A block from `c_in` to `c_out` channels conditioned on a `d_cond`-vector.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c_in: usize,
        c_out: usize,
        d_cond: usize,
        grouping: Grouping,
        dropout: f64,
        cond: CondProjection,
        device: &B::Device,
    ) -> Self {
        let cond_proj = match cond {
            CondProjection::ZeroNoBias => {
                LinearConfig::new(d_cond, c_out).with_bias(false).with_initializer(Initializer::Zeros)
            }
            CondProjection::Dense => LinearConfig::new(d_cond, c_out),
        };
        Self {
            norm1: Norm::new(grouping, c_in, true, device),
            conv1: Conv::same(c_in, c_out, 3, Init::Default, device),
            cond_proj: cond_proj.init(device),
            norm2: Norm::new(grouping, c_out, true, device),
            dropout: DropoutConfig::new(dropout).init(),
            conv2: Conv::same(c_out, c_out, 3, Init::Zeros, device),
            shortcut: (c_in != c_out).then(|| Conv::same(c_in, c_out, 1, Init::Default, device)),
        }
    }
}

impl<B: FastOps> ResnetBlock<B> {
    /// `x` `[N, C_in, H, W]` and `cond` `[N, D]` → `[N, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>, cond: Tensor<B, 2>) -> Tensor<B, 4> {
        let h = self.conv1.forward_with(self.norm1.forward(x.clone()), Some(self.cond_proj.forward(cond)), None);
        let x = match &self.shortcut {
            Some(proj) => proj.forward(x),
            None => x,
        };
        self.conv2.forward_with(ops::dropout(self.norm2.forward(h), self.dropout.prob), None, Some(x))
    }
}

/// Single-head self-attention over all `H × W` positions, with a zero-initialised output projection.
#[derive(Module, Debug)]
pub struct AttnBlock<B: Backend> {
    norm: Norm<B>,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    proj_out: Linear<B>,
}

impl<B: Backend> AttnBlock<B> {
    /// Attention over `c` channels, normalised with `grouping`.
    pub fn new(c: usize, grouping: Grouping, device: &B::Device) -> Self {
        Self {
            norm: Norm::new(grouping, c, false, device),
            q: LinearConfig::new(c, c).init(device),
            k: LinearConfig::new(c, c).init(device),
            v: LinearConfig::new(c, c).init(device),
            proj_out: LinearConfig::new(c, c).with_initializer(Initializer::Zeros).init(device),
        }
    }
}

impl<B: FastOps> AttnBlock<B> {
    /// `[N, C, H, W] → [N, C, H, W]`, in this layout throughout: the dense layers act on the
    /// channels as the 1×1 convolutions they are.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, hgt, wid] = x.dims();
        let h = self.norm.forward(x.clone());
        let project = |layer: &Linear<B>| pointwise(layer, h.clone(), None).reshape([b, c, hgt * wid]);
        let h = ops::dot_product_attention(project(&self.q), project(&self.k), project(&self.v));
        pointwise(&self.proj_out, h.reshape([b, c, hgt, wid]), Some(x))
    }
}

/// A dense layer over the channels of `x` `[N, C, H, W]`, as a 1×1 convolution, plus `residual`.
fn pointwise<B: FastOps>(layer: &Linear<B>, x: Tensor<B, 4>, residual: Option<Tensor<B, 4>>) -> Tensor<B, 4> {
    let n = x.dims()[0];
    let [d_in, d_out] = layer.weight.dims();
    let weight = layer.weight.val().transpose().reshape([d_out, d_in, 1, 1]);
    let bias = match &layer.bias {
        Some(b) => ops::per_image(b.val().unsqueeze_dim(0), n),
        None => Tensor::zeros([n, d_out], &x.device()),
    };
    ops::conv_with(x, weight, bias, residual, ConvSpec::same(1))
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use crate::{Autodiff, Cpu};
    use burn::module::AutodiffModule;
    use burn::tensor::Distribution;

    /// Direct evaluation of the definition, `y[b,o,i,j] = bias[o] + Σ w[o,c,dy,dx] x[b,c,i+dy−p,j+dx−p]`.
    fn reference(x: &[f32], w: &[f32], bias: &[f32], [b, c, h, wd]: [usize; 4], o: usize, k: usize) -> Vec<f32> {
        let p = (k / 2) as isize;
        let mut y = vec![0f32; b * o * h * wd];
        for bi in 0..b {
            for oi in 0..o {
                for i in 0..h {
                    for j in 0..wd {
                        let mut s = bias[oi];
                        for ci in 0..c {
                            for dy in 0..k {
                                for dx in 0..k {
                                    let (yy, xx) = (i as isize + dy as isize - p, j as isize + dx as isize - p);
                                    if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < wd {
                                        s += w[((oi * c + ci) * k + dy) * k + dx]
                                            * x[((bi * c + ci) * h + yy as usize) * wd + xx as usize];
                                    }
                                }
                            }
                        }
                        y[((bi * o + oi) * h + i) * wd + j] = s;
                    }
                }
            }
        }
        y
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    /// The attention block equals its definition with the dense layers acting on `[N, HW, C]`
    /// (VDM's `AttnBlock`), for random weights everywhere (the output projection too).
    #[test]
    fn attention_block_matches_the_definition() {
        use burn::module::Param;
        use burn::tensor::activation::softmax;
        let device = Default::default();
        let (b, c, hgt, wid) = (2, 8, 3, 5);
        let mut block = AttnBlock::<Cpu>::new(c, Grouping { groups: 4, epsilon: BURN_GROUP_NORM_EPSILON }, &device);
        let random = |shape: [usize; 2]| {
            Param::from_tensor(Tensor::<Cpu, 2>::random(shape, Distribution::Normal(0.0, 0.5), &device))
        };
        for layer in [&mut block.q, &mut block.k, &mut block.v, &mut block.proj_out] {
            layer.weight = random([c, c]);
            layer.bias = Some(Param::from_tensor(Tensor::random([c], Distribution::Normal(0.0, 0.5), &device)));
        }
        let x = Tensor::<Cpu, 4>::random([b, c, hgt, wid], Distribution::Normal(0.0, 1.0), &device);
        let h = block.norm.forward(x.clone()).reshape([b, c, hgt * wid]).swap_dims(1, 2);
        let (q, k, v) = (block.q.forward(h.clone()), block.k.forward(h.clone()), block.v.forward(h));
        let weights = softmax(q.matmul(k.swap_dims(1, 2)).div_scalar((c as f64).sqrt()), 2);
        let h = block.proj_out.forward(weights.matmul(v));
        let want = values(x.clone() + h.swap_dims(1, 2).reshape([b, c, hgt, wid]));
        let got = values(block.forward(x));
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err < 1e-5, "largest deviation from the definition {err}");
    }

    /// The convolution layer matches the definition, and its gradient matches finite differences.
    #[test]
    fn convolution_matches_the_definition() {
        let device = Default::default();
        let (shape, o) = ([2, 5, 6, 4], 7);
        for k in [1, 3] {
            let conv_ad = Conv::<Autodiff<Cpu>>::same(shape[1], o, k, Init::Default, &device);
            let conv = conv_ad.valid();
            let x = Tensor::<Cpu, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let (w, bias) = (values(conv.conv.weight.val()), values(conv.conv.bias.as_ref().unwrap().val()));
            let want = reference(&values(x.clone()), &w, &bias, shape, o, k);
            let got = values(conv.forward(x.clone()));
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 1e-5, "k = {k}: largest deviation from the definition {err}");

            // d/dx of Σ y² at one input element, against a central difference in f64 arithmetic.
            let xa = Tensor::<Autodiff<Cpu>, 4>::from_data(x.clone().into_data(), &device).require_grad();
            let grads = conv_ad.forward(xa.clone()).square().sum().backward();
            let g = values(xa.grad(&grads).unwrap());
            let mut xv = values(x);
            let idx = 2 * 5 * 6 * 4 / 2 + 7;
            let loss = |xv: &[f32]| {
                reference(xv, &w, &bias, shape, o, k).iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>()
            };
            let h = 1e-2f32;
            xv[idx] += h;
            let up = loss(&xv);
            xv[idx] -= 2.0 * h;
            let down = loss(&xv);
            let fd = (up - down) / (2.0 * f64::from(h));
            assert!(
                (f64::from(g[idx]) - fd).abs() < 1e-2 * fd.abs().max(1.0),
                "k = {k}: gradient {} vs finite difference {fd}",
                g[idx]
            );
        }
    }
}
