//! A small image classifier whose penultimate layer gives the features of the sample-quality
//! metrics ([`crate::metrics`], which also train, save and load it): a stand-in for the Inception network, which cannot be
//! downloaded here. Its FID is specific to the dataset and this network, and not comparable
//! with published Inception FIDs.
//!
//! `conv(3×3, ch) relu → conv(3×3, stride 2, 2ch) relu → conv(3×3, stride 2, 2ch) relu →
//! dense(features) relu → dense(classes)`; the features are the output of the `dense(features)`
//! layer after its relu.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{relu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::blocks::{Conv, Init};
use crate::data::ImageSet;
use crate::ops::{ConvSpec, FastOps};
use crate::tensor::pixels_tensor;
use crate::transfer::download;

/// The classifier network.
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    convs: Vec<Conv<B>>,
    dense: Linear<B>,
    head: Linear<B>,
}

impl<B: Backend> Classifier<B> {
    /// A network with `ch` channels in its first convolution and `features` features, for images of
    /// `[c, h, w]` and `classes` classes, parameters not yet allocated.
    pub fn new(ch: usize, features: usize, [c, h, w]: [usize; 3], classes: usize, device: &B::Device) -> Self {
        let down = ConvSpec { stride: 2, padding: [0, 1, 0, 1] };
        let convs = vec![
            Conv::same(c, ch, 3, Init::Default, device),
            Conv::new(ch, 2 * ch, 3, down, Init::Default, device),
            Conv::new(2 * ch, 2 * ch, 3, down, Init::Default, device),
        ];
        let [h2, w2] = down.output_size(down.output_size([h, w], 3), 3);
        Self {
            convs,
            dense: LinearConfig::new(2 * ch * h2 * w2, features).init(device),
            head: LinearConfig::new(features, classes).init(device),
        }
    }
}

impl<B: FastOps> Classifier<B> {
    /// The features `[N, features]` and class logits `[N, classes]` of `pixels` (`[N, C, H, W]`,
    /// values `0..=255`).
    pub fn forward(&self, pixels: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let mut h = pixels.div_scalar(127.5).sub_scalar(1.0);
        for conv in &self.convs {
            h = relu(conv.forward(h));
        }
        let features = relu(self.dense.forward(h.flatten::<2>(1, 3)));
        let logits = self.head.forward(features.clone());
        (features, logits)
    }

    /// Features and class probabilities of every image, `batch_size` at a time, as host rows.
    pub fn features_and_probabilities(
        &self,
        images: &ImageSet,
        batch_size: usize,
        device: &B::Device,
    ) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let (mut features, mut probabilities) = (Vec::with_capacity(images.len()), Vec::with_capacity(images.len()));
        let indices: Vec<usize> = (0..images.len()).collect();
        for chunk in indices.chunks(batch_size.max(1)) {
            let (f, logits) = self.forward(pixels_tensor::<B>(&images.select(chunk), device));
            features.extend(rows(f));
            probabilities.extend(rows(softmax(logits, 1)));
        }
        (features, probabilities)
    }
}

/// A `[N, K]` tensor as `N` host rows.
fn rows<B: Backend>(t: Tensor<B, 2>) -> Vec<Vec<f64>> {
    let [_, k] = t.dims();
    let values: Vec<f64> = download(t).iter::<f64>().collect();
    values.chunks(k.max(1)).map(<[f64]>::to_vec).collect()
}
