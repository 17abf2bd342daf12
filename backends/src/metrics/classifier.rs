//! The classifier behind the sample-quality metrics ([`crate::nn::classifier`] is the network):
//! its settings, training (cross-entropy, Adam), and its files, a weight file checked against the
//! size and SHA-256 recorded beside it.

use std::fs;
use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::Recorder;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vdm_core::rng::derive_seed;

use crate::checkpoint::{encode_module, Recording};
use crate::data::{epoch_batch, DataConfig, ImageSet};
use crate::error::{describe_io, Error, Result};
use crate::files::{read_verified, write_atomically, FileDigest};
use crate::nn::classifier::Classifier;
use crate::nn::materialise;
use crate::ops::TrainBackend;
use crate::tensor::pixels_tensor;
use crate::transfer::{download, upload};

/// The classifier's sizes and training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Channels of the first convolution (the others have twice as many).
    pub ch: usize,
    /// Size of the feature layer.
    pub features: usize,
    /// Training steps (Adam).
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Seed of the initialisation and the batch order.
    pub seed: u64,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self { ch: 32, features: 64, steps: 2000, batch_size: 64, lr: 1e-3, seed: 0 }
    }
}

impl ClassifierConfig {
    /// Checks the settings, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        for (name, v, max) in [
            ("ch", self.ch, 1024),
            ("features", self.features, 8192),
            ("steps", self.steps, 10_000_000),
            ("batch_size", self.batch_size, 1 << 20),
        ] {
            if v == 0 || v > max {
                return Err(Error::setting(
                    format!("classifier.{name}"),
                    format!("classifier {name} must be between 1 and {max}, got {v}"),
                ));
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::setting(
                "classifier.lr",
                format!("classifier lr must be positive and finite, got {}", self.lr),
            ));
        }
        Ok(())
    }

    /// A network for images of `[c, h, w]` and `classes` classes, parameters not yet allocated.
    pub fn build<B: Backend>(&self, shape: [usize; 3], classes: usize, device: &B::Device) -> Classifier<B> {
        Classifier::new(self.ch, self.features, shape, classes, device)
    }
}

/// The share of `probabilities`' rows whose most probable class is `labels`' (the accuracy).
pub fn accuracy(probabilities: &[Vec<f64>], labels: &[u32]) -> f64 {
    let argmax = |p: &Vec<f64>| {
        p.iter().enumerate().fold((0, f64::MIN), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
    };
    let correct = probabilities.iter().zip(labels).filter(|(p, &l)| argmax(p) == l as usize).count();
    correct as f64 / labels.len().max(1) as f64
}

/// A trained classifier with what it was trained on, as saved on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierInfo {
    /// The network and its training.
    pub config: ClassifierConfig,
    /// The data it was trained on.
    pub data: DataConfig,
    /// The seed of the data's train/test split (a run's `train.seed`).
    pub split_seed: u64,
    /// `[C, H, W]` of its images.
    pub image_shape: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Accuracy on the data's test split.
    pub test_accuracy: f64,
    /// Size and SHA-256 of the weight file.
    pub weights: FileDigest,
}

/// The random stream of the epochs' image orders.
const STREAM_EPOCH: u64 = 1;

const INFO_FILE: &str = "classifier.json";
const WEIGHTS_FILE: &str = "weights.mpk";

/// Trains a classifier on the labelled `train` images (cross-entropy, Adam), then measures its
/// accuracy on `test`. `on_step` receives each step's number and loss.
pub fn train<B: TrainBackend>(
    config: &ClassifierConfig,
    train: &ImageSet,
    test: &ImageSet,
    device: &B::Device,
    mut on_step: impl FnMut(usize, f64),
) -> Result<(Classifier<B::InnerBackend>, f64)> {
    config.validate()?;
    let labels = train.labels.as_ref().filter(|l| !l.is_empty()).ok_or_else(|| {
        Error::Mismatch("the training images have no labels; a classifier needs a labelled dataset".into())
    })?;
    let test_labels = test.labels.as_ref().ok_or_else(|| Error::Mismatch("the test images have no labels".into()))?;
    let classes = train.num_classes().max(test.num_classes());
    B::seed(device, derive_seed(config.seed, 0, 0));
    let mut model = materialise(config.build::<B>(train.shape(), classes, device));
    let mut optim = AdamConfig::new().init::<B, Classifier<B>>();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    for step in 0..config.steps {
        let indices = epoch_batch(train.len(), config.batch_size, step, config.seed, STREAM_EPOCH);
        let batch = train.select(&indices);
        let targets: Vec<i64> = indices.iter().map(|&i| i64::from(labels[i])).collect();
        let targets: Tensor<B, 1, Int> = upload(TensorData::new(targets, [indices.len()]), device);
        let (_, logits) = model.forward(pixels_tensor::<B>(&batch, device));
        let loss = loss_fn.forward(logits, targets);
        let value = download(loss.clone()).iter::<f64>().next().expect("the loss is one value");
        if !value.is_finite() {
            return Err(Error::NonFinite {
                step,
                message: format!("the classifier's loss became {value} at step {step}; try a lower lr"),
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(config.lr, model, grads);
        on_step(step + 1, value);
    }
    let model = model.valid();
    let (_, probabilities) = model.features_and_probabilities(test, 256, device);
    Ok((model, accuracy(&probabilities, test_labels)))
}

/// Writes a trained classifier into the new (or empty) directory `dir`.
pub fn save<B: Backend>(dir: &Path, model: &Classifier<B>, mut info: ClassifierInfo) -> Result<()> {
    let weights = encode_module(model.clone())?;
    info.weights = FileDigest::of(&weights);
    let json = serde_json::to_string_pretty(&info).map_err(|e| Error::Corrupt(e.to_string()))?;
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
    for (name, bytes) in [(WEIGHTS_FILE, weights), (INFO_FILE, json.into_bytes())] {
        let path = dir.join(name);
        write_atomically(&path, &bytes).map_err(|e| Error::io(&path, &e))?;
    }
    Ok(())
}

/// Loads the classifier saved in `dir`, checking its weight file against the recorded size and
/// SHA-256.
pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<(Classifier<B>, ClassifierInfo)> {
    let info_path = dir.join(INFO_FILE);
    let text = fs::read_to_string(&info_path).map_err(|e| {
        Error::file(
            &info_path,
            format!("{} (is {} a classifier from `vdm classifier train`?)", describe_io(&e), dir.display()),
        )
    })?;
    let info: ClassifierInfo = serde_json::from_str(&text).map_err(|e| Error::file(&info_path, e.to_string()))?;
    info.config.validate().map_err(|e| e.in_file(&info_path))?;
    let path = dir.join(WEIGHTS_FILE);
    let bytes = read_verified(&path, &info.weights, INFO_FILE)?;
    let record = Recorder::<B>::load(&Recording::new(), bytes, device)
        .map_err(|e| Error::file(&path, format!("cannot be decoded ({e})")))?;
    let model = info.config.build::<B>(info.image_shape, info.classes, device).load_record(record);
    Ok((model, info))
}
