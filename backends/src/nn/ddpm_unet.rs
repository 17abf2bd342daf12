//! DDPM's U-Net (`diffusion_tf/models/unet.py` of Ho, Jain & Abbeel 2020).
//!
//! `conv_in`, then per resolution `num_res_blocks` ResNet blocks of `ch × ch_mult[i]` channels
//! (self-attention after each at the resolutions in `attn_resolutions`) and a stride-2
//! convolution down; a middle of ResNet, attention, ResNet; the mirror image upwards with
//! `num_res_blocks + 1` blocks per resolution on `[h, skip]` and nearest-neighbour upsampling
//! followed by a convolution; `GroupNorm, swish, conv_out` (zero-initialised). The timestep `t`
//! enters through a sinusoidal embedding, `dense(4ch) swish dense(4ch)`, and a dense projection
//! inside every ResNet block.

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
use crate::ops::{self, ConvSpec, FastOps};

/// The largest accepted `ch` (DDPM's largest model, LSUN 256×256, has 128).
pub const MAX_CHANNELS: usize = 4096;

/// Sizes of a [`UNet`]. The default is DDPM's CIFAR-10 model (35.7M parameters).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UNetConfig {
    /// Base channel count.
    pub ch: usize,
    /// Channel multiplier of each resolution, from the input resolution down.
    pub ch_mult: Vec<usize>,
    /// ResNet blocks per resolution on the way down (the way up has one more).
    pub num_res_blocks: usize,
    /// Image sizes (height) at which self-attention follows each ResNet block.
    pub attn_resolutions: Vec<usize>,
    /// Dropout probability inside ResNet blocks.
    pub dropout: f64,
    /// GroupNorm groups (32 in DDPM); must divide every channel count.
    pub groups: usize,
    /// GroupNorm's epsilon. DDPM's code (and diffusers' `google/ddpm-cifar10-32`) uses 1e-6; the
    /// default is burn's 1e-5, which every run made before this setting existed was trained with.
    pub norm_eps: f64,
}

impl Default for UNetConfig {
    /// DDPM's CIFAR-10 model: `ch = 128`, `ch_mult = (1, 2, 2, 2)`, 2 blocks, attention at 16×16.
    fn default() -> Self {
        Self {
            ch: 128,
            ch_mult: vec![1, 2, 2, 2],
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            dropout: 0.1,
            groups: 32,
            norm_eps: BURN_GROUP_NORM_EPSILON,
        }
    }
}

impl UNetConfig {
    /// A small U-Net for the 8×8 digits: `ch = 32`, `ch_mult = (1, 2)`, 2 blocks, attention at 4×4.
    pub fn digits() -> Self {
        Self { ch: 32, ch_mult: vec![1, 2], attn_resolutions: vec![4], dropout: 0.0, groups: 8, ..Self::default() }
    }

    /// A small U-Net for 28×28 images (Fashion-MNIST): `ch = 32`, `ch_mult = (1, 2, 2)`, 1 block,
    /// attention at 7×7.
    pub fn mnist() -> Self {
        Self {
            ch: 32,
            ch_mult: vec![1, 2, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![7],
            dropout: 0.0,
            groups: 8,
            ..Self::default()
        }
    }

    /// Checks the sizes, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.ch < 4 || !self.ch.is_multiple_of(2) || self.ch > MAX_CHANNELS {
            return Err(Error::setting(
                "unet.ch",
                format!("unet.ch must be even and between 4 and {MAX_CHANNELS}, got {}", self.ch),
            ));
        }
        if self.ch_mult.is_empty() || self.ch_mult.len() > 8 || self.ch_mult.iter().any(|&m| m == 0 || m > 16) {
            return Err(Error::setting(
                "unet.ch_mult",
                format!("unet.ch_mult needs 1 to 8 multipliers, each between 1 and 16, got {:?}", self.ch_mult),
            ));
        }
        if self.num_res_blocks == 0 || self.num_res_blocks > 64 {
            return Err(Error::setting(
                "unet.num_res_blocks",
                format!("unet.num_res_blocks must be between 1 and 64, got {}", self.num_res_blocks),
            ));
        }
        if self.groups == 0 || self.ch_mult.iter().any(|&m| !(self.ch * m).is_multiple_of(self.groups)) {
            return Err(Error::setting(
                "unet.groups",
                format!(
                    "unet.groups ({}) must divide every channel count ch × ch_mult ({} × {:?})",
                    self.groups, self.ch, self.ch_mult
                ),
            ));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(Error::setting(
                "unet.norm_eps",
                format!("unet.norm_eps must be in (0, 1), got {}", self.norm_eps),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::setting(
                "unet.dropout",
                format!("unet.dropout must be in [0, 1), got {}", self.dropout),
            ));
        }
        Ok(())
    }

    /// Checks that images of `[c, h, w]` pass through the network: each of the `len(ch_mult) − 1`
    /// halvings must leave an even size, so that upsampling restores it.
    pub fn check_image_shape(&self, [_, h, w]: [usize; 3]) -> Result<()> {
        check_halvings(self.ch_mult.len(), h, w)?;
        let resolutions: Vec<usize> = (0..self.ch_mult.len()).map(|level| h >> level).collect();
        if let Some(r) = self.attn_resolutions.iter().find(|r| !resolutions.contains(r)) {
            return Err(Error::setting(
                "unet.attn_resolutions",
                format!(
                    "unet.attn_resolutions holds {r}, none of the U-Net's resolutions {resolutions:?} for {h}x{w} images: its attention would be left out"
                ),
            ));
        }
        Ok(())
    }

    /// `f32` values a training step keeps per image for the backward pass, an estimate for
    /// refusing sizes that cannot fit: about 12 tensors per ResNet block at its resolution, and
    /// the attention matrices.
    pub fn activations_per_image(&self, [_, h, w]: [usize; 3]) -> u128 {
        let mut total = 0u128;
        for (level, &mult) in self.ch_mult.iter().enumerate() {
            let pixels = ((h >> level) * (w >> level)) as u128;
            let blocks = (2 * self.num_res_blocks + 1) as u128;
            total += blocks * 12 * (self.ch * mult) as u128 * pixels;
            if self.attn_resolutions.contains(&(h >> level)) {
                total += blocks * 3 * pixels * pixels;
            }
        }
        total
    }

    /// A freshly initialised network for images of `[channels, height, width]`
    /// ([`UNetConfig::check_image_shape`] must accept it): attention goes where a level's
    /// height is listed in `attn_resolutions`.
    pub fn init<B: Backend>(&self, [channels, height, _]: [usize; 3], device: &B::Device) -> UNet<B> {
        let temb = 4 * self.ch;
        let grouping = Grouping { groups: self.groups, epsilon: self.norm_eps };
        let block = |c_in: usize, c_out: usize| {
            ResnetBlock::new(c_in, c_out, temb, grouping, self.dropout, CondProjection::Dense, device)
        };
        let attends = |level: usize| self.attn_resolutions.contains(&(height >> level));
        let attn = |count: usize, c: usize, level: usize| match attends(level) {
            true => (0..count).map(|_| AttnBlock::new(c, grouping, device)).collect(),
            false => Vec::new(),
        };
        let levels = self.ch_mult.len();
        // Channel counts of the skip connections, in the order the way down produces them.
        let mut skips = vec![self.ch];
        let mut c = self.ch;
        let mut down = Vec::with_capacity(levels);
        for (level, &mult) in self.ch_mult.iter().enumerate() {
            let c_out = self.ch * mult;
            let mut blocks = Vec::with_capacity(self.num_res_blocks);
            for _ in 0..self.num_res_blocks {
                blocks.push(block(c, c_out));
                c = c_out;
                skips.push(c);
            }
            let resample = (level + 1 < levels).then(|| {
                skips.push(c);
                Conv::new(c, c, 3, DOWNSAMPLE, Init::Default, device)
            });
            down.push(Level { blocks, attn: attn(self.num_res_blocks, c, level), resample });
        }
        let (mid1, mid_attn, mid2) = (block(c, c), AttnBlock::new(c, grouping, device), block(c, c));
        let mut up = Vec::with_capacity(levels);
        for (level, &mult) in self.ch_mult.iter().enumerate().rev() {
            let c_out = self.ch * mult;
            let mut blocks = Vec::with_capacity(self.num_res_blocks + 1);
            for _ in 0..=self.num_res_blocks {
                let skip = skips.pop().expect("one skip per up block");
                blocks.push(block(c + skip, c_out));
                c = c_out;
            }
            let resample = (level > 0).then(|| Conv::same(c, c, 3, Init::Default, device));
            up.push(Level { blocks, attn: attn(self.num_res_blocks + 1, c, level), resample });
        }
        UNet {
            dense0: LinearConfig::new(self.ch, temb).init(device),
            dense1: LinearConfig::new(temb, temb).init(device),
            conv_in: Conv::same(channels, self.ch, 3, Init::Default, device),
            down,
            mid1,
            mid_attn,
            mid2,
            up,
            norm_out: Norm::new(grouping, c, true, device),
            conv_out: Conv::same(c, channels, 3, Init::Zeros, device),
            ch: self.ch,
        }
    }
}

/// DDPM's downsampling: a 3×3 convolution of stride 2 with TensorFlow's `SAME` padding for even
/// sizes (one zero row and column after the image, none before).
const DOWNSAMPLE: ConvSpec = ConvSpec { stride: 2, padding: [0, 1, 0, 1] };

/// One resolution of the U-Net: its ResNet blocks, the attention after each (if any), and the
/// convolution of the resampling that ends it (down: stride 2; up: after nearest-neighbour ×2).
#[derive(Module, Debug)]
pub struct Level<B: Backend> {
    blocks: Vec<ResnetBlock<B>>,
    attn: Vec<AttnBlock<B>>,
    resample: Option<Conv<B>>,
}

/// The noise-prediction network `ε̂(x_t, t)` of DDPM (or its `x₀` or mean prediction).
#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    dense0: Linear<B>,
    dense1: Linear<B>,
    conv_in: Conv<B>,
    down: Vec<Level<B>>,
    mid1: ResnetBlock<B>,
    mid_attn: AttnBlock<B>,
    mid2: ResnetBlock<B>,
    up: Vec<Level<B>>,
    norm_out: Norm<B>,
    conv_out: Conv<B>,
    #[module(skip)]
    ch: usize,
}

impl<B: Backend> UNet<B> {
    /// Image channels the network takes and predicts.
    pub fn channels(&self) -> usize {
        self.conv_out.out_channels()
    }

    /// Checks that images of `[c, h, w]` pass through the network's halvings and back.
    pub fn check_image_size(&self, [_, h, w]: [usize; 3]) -> Result<()> {
        check_halvings(self.down.len(), h, w)
    }
}

/// Each of the `levels − 1` halvings must leave an even size, so that upsampling restores it.
fn check_halvings(levels: usize, h: usize, w: usize) -> Result<()> {
    let factor = 1usize << (levels - 1);
    if !h.is_multiple_of(factor) || !w.is_multiple_of(factor) {
        return Err(Error::Mismatch(format!(
            "the U-Net halves the image {} times (len(unet.ch_mult) − 1), so height and width must be multiples of {factor}; the images are {h}x{w}",
            levels - 1
        )));
    }
    Ok(())
}

impl<B: FastOps> Level<B> {
    /// ResNet block `i` with its attention, if the level has any.
    fn block(&self, i: usize, h: Tensor<B, 4>, cond: Tensor<B, 2>) -> Tensor<B, 4> {
        let h = self.blocks[i].forward(h, cond);
        match self.attn.get(i) {
            Some(attn) => attn.forward(h),
            None => h,
        }
    }
}

impl<B: FastOps> UNet<B> {
    /// The network's output for `x_t` of shape `[B, C, H, W]` at timesteps `t` of shape `[B]`
    /// (DDPM's 0-based index `0..T`, as a float).
    pub fn forward(&self, x: Tensor<B, 4>, t: Tensor<B, 1>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let activation_bytes = self.ch * h * w * std::mem::size_of::<B::FloatElem>();
        ops::evaluate_in_parts(x, t, activation_bytes, |x, t| self.evaluate(x, t))
    }

    /// [`UNet::forward`] on one part of the batch ([`ops::evaluate_in_parts`]).
    fn evaluate(&self, x: Tensor<B, 4>, t: Tensor<B, 1>) -> Tensor<B, 4> {
        let temb = timestep_embedding(t, self.ch);
        // DDPM applies swish to the embedding inside every block (`dense(nonlinearity(temb))`);
        // doing it once here is the same function.
        let cond = silu(self.dense1.forward(silu(self.dense0.forward(temb))));

        let mut hs = vec![self.conv_in.forward(x)];
        for level in &self.down {
            for i in 0..level.blocks.len() {
                let h = level.block(i, hs.last().expect("hs starts non-empty").clone(), cond.clone());
                hs.push(h);
            }
            if let Some(conv) = &level.resample {
                let h = conv.forward(hs.last().expect("hs starts non-empty").clone());
                hs.push(h);
            }
        }
        let mut h = hs.last().expect("hs starts non-empty").clone();
        h = self.mid1.forward(h, cond.clone());
        h = self.mid_attn.forward(h);
        h = self.mid2.forward(h, cond.clone());
        for level in &self.up {
            for i in 0..level.blocks.len() {
                let skip = hs.pop().expect("one skip per up block");
                h = level.block(i, ops::concat_channels(h, skip), cond.clone());
            }
            if let Some(conv) = &level.resample {
                h = conv.forward(upsample_nearest(h));
            }
        }
        self.conv_out.forward(self.norm_out.forward(h))
    }
}

/// Nearest-neighbour upsampling by 2: `[N, C, H, W] → [N, C, 2H, 2W]`.
fn upsample_nearest<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let wide = x.reshape([n, c, h, w, 1]).repeat_dim(4, 2).reshape([n, c, h, 1, 2 * w]);
    wide.repeat_dim(3, 2).reshape([n, c, 2 * h, 2 * w])
}
