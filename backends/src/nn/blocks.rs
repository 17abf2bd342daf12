//! Building blocks shared by the networks: the "same" convolution, the ResNet block,
//! self-attention and the sinusoidal timestep embedding.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, GroupNorm, GroupNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::ops::PadMode;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// How a 3×3 convolution is computed. Both give the same result (tested); they differ in speed
/// and memory per backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvMethod {
    /// One `[O, C] × [C, H·W]` matrix product per kernel tap `(dy, dx)` with the input shifted by
    /// the tap, summed. On burn-ndarray its forward and backward passes together are several
    /// times faster than the native convolution for the small images this crate trains on CPU.
    #[default]
    Taps,
    /// The backend's own `conv2d` (the better choice on GPUs for large models).
    Native,
}


/// How a layer's weights start.
pub enum Init {
    /// The layer's default initialiser.
    Default,
    /// All zeros.
    Zeros,
}

/// A `k×k` (odd `k`), stride-1, zero-padded ("same") convolution computed as chosen by [`ConvMethod`].
#[derive(Module, Debug)]
pub struct ConvSame<B: Backend> {
    conv: Conv2d<B>,
    #[module(skip)]
    method: ConvMethod,
}

impl<B: Backend> ConvSame<B> {
    pub fn new(c_in: usize, c_out: usize, kernel: usize, init: Init, method: ConvMethod, device: &B::Device) -> Self {
        let config = Conv2dConfig::new([c_in, c_out], [kernel, kernel]).with_padding(PaddingConfig2d::Same);
        let config = match init {
            Init::Default => config,
            Init::Zeros => config.with_initializer(Initializer::Zeros),
        };
        Self { conv: config.init(device), method }
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.conv.weight.dims()[0]
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.method {
            ConvMethod::Native => self.conv.forward(x),
            ConvMethod::Taps => self.forward_taps(x),
        }
    }

    /// `y[b, o, i, j] = bias[o] + Σ_{dy, dx} Σ_c w[o, c, dy, dx] · x_pad[b, c, i + dy, j + dx]`:
    /// for each tap, the shifted input `[B, C, H·W]` multiplied by the tap's `[O, C]` weights.
    fn forward_taps(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let [o, _, k, _] = self.conv.weight.dims();
        let pad = k / 2;
        let padded = if pad > 0 { x.pad((pad, pad, pad, pad), PadMode::Constant(0.0)) } else { x };
        let weight = self.conv.weight.val();
        let mut y: Option<Tensor<B, 3>> = None;
        for dy in 0..k {
            for dx in 0..k {
                let tap = weight.clone().slice([0..o, 0..c, dy..dy + 1, dx..dx + 1]).reshape([1, o, c]);
                let shifted = padded.clone().slice([0..b, 0..c, dy..dy + h, dx..dx + w]).reshape([b, c, h * w]);
                let term = tap.matmul(shifted);
                y = Some(match y {
                    Some(acc) => acc + term,
                    None => term,
                });
            }
        }
        let mut y = y.expect("at least one tap").reshape([b, o, h, w]);
        if let Some(bias) = &self.conv.bias {
            y = y + bias.val().reshape([1, o, 1, 1]);
        }
        y
    }
}


/// Fairseq's sinusoidal embedding of `1000 t` (VDM `get_timestep_embedding`): `[B] → [B, dim]`.
pub fn timestep_embedding<B: Backend>(t: Tensor<B, 1>, dim: usize) -> Tensor<B, 2> {
    let half = dim / 2;
    let device = t.device();
    let scale = (10_000f64).ln() / (half as f64 - 1.0);
    let freqs: Vec<f32> = (0..half).map(|k| (-(k as f64) * scale).exp() as f32).collect();
    let freqs = Tensor::<B, 1>::from_floats(freqs.as_slice(), &device).unsqueeze_dim::<2>(0);
    let args = t.mul_scalar(1000.0).unsqueeze_dim::<2>(1) * freqs;
    Tensor::cat(vec![args.clone().sin(), args.cos()], 1)
}


/// `x + conv2(dropout(swish(GN(conv1(swish(GN(x))) + W cond))))`, with a 1×1 projection of `x`
/// when the channel count changes; `W` and `conv2` start at zero, so a new block is the identity.
#[derive(Module, Debug)]
pub struct ResnetBlock<B: Backend> {
    norm1: GroupNorm<B>,
    conv1: ConvSame<B>,
    cond_proj: Linear<B>,
    norm2: GroupNorm<B>,
    dropout: Dropout,
    conv2: ConvSame<B>,
    shortcut: Option<ConvSame<B>>,
}

impl<B: Backend> ResnetBlock<B> {
    pub fn new(c_in: usize, c_out: usize, d_cond: usize, groups: usize, dropout: f64, conv: ConvMethod, device: &B::Device) -> Self {
        Self {
            norm1: GroupNormConfig::new(groups, c_in).init(device),
            conv1: ConvSame::new(c_in, c_out, 3, Init::Default, conv, device),
            cond_proj: LinearConfig::new(d_cond, c_out).with_bias(false).with_initializer(Initializer::Zeros).init(device),
            norm2: GroupNormConfig::new(groups, c_out).init(device),
            dropout: DropoutConfig::new(dropout).init(),
            conv2: ConvSame::new(c_out, c_out, 3, Init::Zeros, conv, device),
            shortcut: (c_in != c_out).then(|| ConvSame::new(c_in, c_out, 1, Init::Default, conv, device)),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>, cond: Tensor<B, 2>) -> Tensor<B, 4> {
        let h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        let h = h + self.cond_proj.forward(cond).unsqueeze_dims::<4>(&[2, 3]);
        let h = self.conv2.forward(self.dropout.forward(silu(self.norm2.forward(h))));
        let x = match &self.shortcut {
            Some(proj) => proj.forward(x),
            None => x,
        };
        x + h
    }
}


/// Single-head self-attention over all `H × W` positions, with a zero-initialised output projection.
#[derive(Module, Debug)]
pub struct AttnBlock<B: Backend> {
    norm: GroupNorm<B>,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    proj_out: Linear<B>,
}

impl<B: Backend> AttnBlock<B> {
    pub fn new(c: usize, groups: usize, device: &B::Device) -> Self {
        Self {
            norm: GroupNormConfig::new(groups, c).init(device),
            q: LinearConfig::new(c, c).init(device),
            k: LinearConfig::new(c, c).init(device),
            v: LinearConfig::new(c, c).init(device),
            proj_out: LinearConfig::new(c, c).with_initializer(Initializer::Zeros).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, hgt, wid] = x.dims();
        // [B, C, H, W] → [B, HW, C]
        let h = self.norm.forward(x.clone()).reshape([b, c, hgt * wid]).swap_dims(1, 2);
        let (q, k, v) = (self.q.forward(h.clone()), self.k.forward(h.clone()), self.v.forward(h));
        let weights = softmax(q.matmul(k.swap_dims(1, 2)).div_scalar((c as f64).sqrt()), 2);
        let h = self.proj_out.forward(weights.matmul(v));
        x + h.swap_dims(1, 2).reshape([b, c, hgt, wid])
    }
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
                                        s += w[((oi * c + ci) * k + dy) * k + dx] * x[((bi * c + ci) * h + yy as usize) * wd + xx as usize];
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

    /// The tap-sum convolution matches the definition, and its gradient matches finite differences.
    #[test]
    fn tap_convolution_matches_the_definition() {
        let device = Default::default();
        let (shape, o) = ([2, 5, 6, 4], 7);
        for k in [1, 3] {
            let conv_ad = ConvSame::<Autodiff<Cpu>>::new(shape[1], o, k, Init::Default, ConvMethod::Taps, &device);
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
            let loss = |xv: &[f32]| reference(xv, &w, &bias, shape, o, k).iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
            let h = 1e-2f32;
            xv[idx] += h;
            let up = loss(&xv);
            xv[idx] -= 2.0 * h;
            let down = loss(&xv);
            let fd = (up - down) / (2.0 * f64::from(h));
            assert!((f64::from(g[idx]) - fd).abs() < 1e-2 * fd.abs().max(1.0), "k = {k}: gradient {} vs finite difference {fd}", g[idx]);
        }
    }

    /// Both methods compute the same convolution.
    #[test]
    fn tap_and_native_convolutions_agree() {
        let device = Default::default();
        for k in [1, 3] {
            let native = ConvSame::<Cpu>::new(5, 7, k, Init::Default, ConvMethod::Native, &device);
            // Materialise the lazily initialised parameters before cloning them.
            let _ = (native.conv.weight.val(), native.conv.bias.as_ref().map(|b| b.val()));
            let taps = ConvSame { conv: native.conv.clone(), method: ConvMethod::Taps };
            let x = Tensor::<Cpu, 4>::random([2, 5, 6, 4], Distribution::Normal(0.0, 1.0), &device);
            let diff = (native.forward(x.clone()) - taps.forward(x)).abs().max().into_scalar();
            assert!(diff < 1e-5, "k = {k}: methods differ by {diff}");
        }
    }
}
