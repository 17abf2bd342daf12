//! `vdm bench`: training and sampling throughput for named model sizes.

use std::time::Instant;

use burn::module::Module;
use clap::ValueEnum;
use vdm_backends::codec;
use vdm_backends::config::TrainConfig;
use vdm_backends::config::{DataConfig, RunConfig};
use vdm_backends::config::{ModelConfig, VdmConfig};
use vdm_backends::data::GaussianSource;
use vdm_backends::nn::score_unet::ScoreNetConfig;
use vdm_backends::ops::TrainBackend;
use vdm_backends::sample::{self as sampling, SampleOptions};
use vdm_backends::train::Trainer;

use crate::device::{dispatch, BackendJob, Device};

/// Named model sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Size {
    /// The default digits model: n_embd 32, n_layer 2, on 1×8×8 images, batch 64.
    Tiny,
    /// n_embd 64, n_layer 4, on 3×32×32 images, batch 32.
    Small,
    /// VDM's CIFAR-10 model: n_embd 128, n_layer 32, dropout 0.1, on 3×32×32 images, batch 128.
    Cifar,
}

impl Size {
    fn run_config(self, batch_size: Option<usize>) -> RunConfig {
        let mut run = RunConfig::digits();
        let (score, images, batch) = match self {
            Size::Tiny => (VdmConfig::digits().score, (1, 8), 64),
            Size::Small => (
                ScoreNetConfig { n_embd: 64, n_layer: 4, groups: 32, dropout: 0.1, ..ScoreNetConfig::default() },
                (3, 32),
                32,
            ),
            Size::Cifar => (ScoreNetConfig::default(), (3, 32), 128),
        };
        let batch = batch_size.unwrap_or(batch);
        run.model = ModelConfig::Vdm(VdmConfig { score, ..VdmConfig::digits() });
        run.data = DataConfig::Gaussian(GaussianSource {
            channels: images.0,
            height: images.1,
            width: images.1,
            std: 20.0,
            train_size: batch,
            test_size: 1,
        });
        run.train = TrainConfig { batch_size: batch, warmup_steps: 1, ..run.train };
        run
    }
}

/// What `vdm bench` measures and how it reports.
pub struct BenchJob {
    pub size: Size,
    pub batch_size: Option<usize>,
    pub steps: usize,
    pub sample_steps: usize,
    /// One JSON object on standard output instead of text (for `scripts/bench_vs_pytorch.py`).
    pub json: bool,
}

pub fn run(job: BenchJob, device: Device) -> Result<(), String> {
    if job.steps == 0 || job.sample_steps == 0 || job.batch_size == Some(0) {
        return Err("--steps, --sample-steps and --batch-size must be at least 1".into());
    }
    dispatch(device, job)
}

impl BackendJob for BenchJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let run = self.size.run_config(self.batch_size);
        let (train, _) = run.data.load(0).map_err(|e| e.to_string())?;
        let batch = run.train.batch_size;
        let mut trainer = Trainer::<B>::new(&run, train.shape(), &device)?;
        let params = trainer.model().num_params();
        if !self.json {
            println!(
                "size {:?}: {params} parameters, images {}x{}x{}, batch {batch}",
                self.size, train.channels, train.height, train.width
            );
        }
        for _ in 0..2 {
            trainer.train_step(&train)?; // warm-up: allocation, autotuning
        }
        let start = Instant::now();
        for _ in 0..self.steps {
            trainer.train_step(&train)?; // reads the loss back, so each step is synchronised
        }
        let train_secs = start.elapsed().as_secs_f64();
        // Two warm-up evaluations, as the PyTorch script does, then the timed sampler.
        let sample = |steps| {
            let options = SampleOptions { n: batch, steps, batch_size: batch, ..SampleOptions::default() };
            sampling::sample(trainer.ema(), [train.height, train.width], &options, &device, &mut || {})
        };
        sample(2)?;
        let start = Instant::now();
        sample(self.sample_steps)?;
        let sample_secs = start.elapsed().as_secs_f64();

        let peak = vdm_backends::memory::peak_resident(); // of training and sampling, as PyTorch's

        // The codec on the batch's images (the bench data's own), at T = sample_steps.
        let images = train.select(&(0..batch.min(train.len())).collect::<Vec<_>>());
        let start = Instant::now();
        let (bytes, _) = codec::compress(
            trainer.ema(),
            &codec::ModelId::weights("bench"),
            &images,
            self.sample_steps,
            codec::DEFAULT_LATENT_BITS,
            batch,
            &device,
            || {},
        )?;
        let encode_secs = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let decoded = codec::decompress(trainer.ema(), "bench", &bytes, None, &device, || {})?;
        let decode_secs = start.elapsed().as_secs_f64();
        if decoded.pixels != images.pixels {
            return Err("the codec's round trip changed the images".into());
        }
        let (encode_images_per_s, decode_images_per_s) =
            (images.len() as f64 / encode_secs, images.len() as f64 / decode_secs);

        let train_images_per_s = (self.steps * batch) as f64 / train_secs;
        let sample_ms_per_eval = 1e3 * sample_secs / self.sample_steps as f64;
        if self.json {
            let size = format!("{:?}", self.size).to_lowercase();
            let result = serde_json::json!({
                "impl": "vdm-rs",
                "size": size,
                "parameters": params,
                "batch": batch,
                "train_images_per_s": train_images_per_s,
                "sample_ms_per_eval": sample_ms_per_eval,
                "peak_rss_bytes": peak,
                "codec_steps": self.sample_steps,
                "encode_images_per_s": encode_images_per_s,
                "decode_images_per_s": decode_images_per_s,
            });
            println!("{result}");
        } else {
            println!(
                "training: {train_images_per_s:.1} images/s ({:.1} ms/step over {} steps)",
                1e3 * train_secs / self.steps as f64,
                self.steps
            );
            println!(
                "sampling: {:.2} images/s at T={} ({sample_ms_per_eval:.1} ms per network evaluation of {batch} images)",
                batch as f64 / sample_secs,
                self.sample_steps
            );
            println!(
                "bits-back codec at T={}: encode {encode_images_per_s:.2} images/s, decode {decode_images_per_s:.2} images/s ({} images per message)",
                self.sample_steps,
                images.len()
            );
            if let Some(peak) = peak {
                println!("peak resident memory: {}", vdm_backends::memory::Bytes(peak));
            }
        }
        Ok(())
    }
}
