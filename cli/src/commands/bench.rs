//! `vdm bench`: training, sampling and codec throughput for named model sizes of both families.

use std::time::Instant;

use clap::ValueEnum;
use vdm_backends::codec;
use vdm_backends::config::{DataConfig, DdpmConfig, ModelConfig, RunConfig, TrainConfig, VdmConfig};
use vdm_backends::data::{GaussianSource, ImageSet};
use vdm_backends::model::ddpm::Ddpm;
use vdm_backends::model::{Generative, Trainable, Vdm};
use vdm_backends::nn::ddpm_unet::UNetConfig;
use vdm_backends::nn::score_unet::ScoreNetConfig;
use vdm_backends::ops::TrainBackend;
use vdm_backends::sample::{self as sampling, SampleOptions, SamplerKind};
use vdm_backends::train::Trainer;

use crate::device::{dispatch, BackendJob, Device};

/// Named model sizes: VDM's score network and DDPM's U-Net.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Size {
    /// The default digits VDM: n_embd 32, n_layer 2, on 1×8×8 images, batch 64.
    Tiny,
    /// VDM, n_embd 64, n_layer 4, on 3×32×32 images, batch 32.
    Small,
    /// VDM's CIFAR-10 model: n_embd 128, n_layer 32, dropout 0.1, on 3×32×32 images, batch 128.
    Cifar,
    /// The default digits DDPM's U-Net: ch 32, ch_mult (1, 2), 2 blocks, attention at 4×4, on
    /// 1×8×8 images, batch 64.
    DdpmSmall,
    /// DDPM's CIFAR-10 U-Net (35.7M parameters): ch 128, ch_mult (1, 2, 2, 2), 2 blocks,
    /// attention at 16×16, dropout 0.1, on 3×32×32 images, batch 32.
    DdpmCifar,
}

impl Size {
    /// The name `--size` takes (and the JSON output reports).
    fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
    }

    /// A run of this size's network on Gaussian noise images: `batch_size` images, the default
    /// run's optimiser settings (AdamW, clipping at norm 1, EMA) with one warm-up step.
    fn run_config(self, batch_size: Option<usize>) -> RunConfig {
        let vdm = |score| ModelConfig::Vdm(VdmConfig { score, ..VdmConfig::digits() });
        let ddpm = |unet| ModelConfig::Ddpm(DdpmConfig { unet, ..DdpmConfig::default() });
        let (model, images, batch) = match self {
            Size::Tiny => (vdm(VdmConfig::digits().score), (1, 8), 64),
            Size::Small => (
                vdm(ScoreNetConfig { n_embd: 64, n_layer: 4, groups: 32, dropout: 0.1, ..ScoreNetConfig::default() }),
                (3, 32),
                32,
            ),
            Size::Cifar => (vdm(ScoreNetConfig::default()), (3, 32), 128),
            Size::DdpmSmall => (ddpm(UNetConfig::digits()), (1, 8), 64),
            Size::DdpmCifar => (ddpm(UNetConfig::default()), (3, 32), 32),
        };
        let run = if matches!(model, ModelConfig::Ddpm(_)) { RunConfig::ddpm_digits() } else { RunConfig::digits() };
        let batch = batch_size.unwrap_or(batch);
        RunConfig {
            model,
            data: DataConfig::Gaussian(GaussianSource {
                channels: images.0,
                height: images.1,
                width: images.1,
                std: 20.0,
                train_size: batch,
                test_size: 1,
            }),
            train: TrainConfig { batch_size: batch, warmup_steps: 1, ..run.train },
            ..run
        }
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

/// Training and sampling throughput, and the peak resident memory of both.
struct Throughput {
    parameters: usize,
    batch: usize,
    train_images_per_s: f64,
    sample_ms_per_eval: f64,
    peak_rss_bytes: Option<u64>,
}

/// The codec's throughput at `T = sample_steps` on one batch.
struct CodecThroughput {
    encode_images_per_s: f64,
    decode_images_per_s: f64,
    images: usize,
}

impl BackendJob for BenchJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let run = self.size.run_config(self.batch_size);
        let (train, _) = run.data.load(0).map_err(|e| e.to_string())?;
        let (throughput, codec) = match run.model {
            ModelConfig::Vdm(_) => {
                let (trainer, throughput) =
                    self.train_and_sample::<B, Vdm<B>>(&run, &train, SamplerKind::Ancestral, &device)?;
                let codec = self.codec::<B>(trainer.ema(), &train, throughput.batch, &device)?;
                (throughput, Some(codec))
            }
            // DDPM's ancestral sampler takes all T steps; DDIM with η = 1 is its stochastic step on
            // fewer, at the same cost per network evaluation. A DDPM codes over all its T steps (1000
            // for these sizes), too slow for a benchmark: its codec is not timed here.
            ModelConfig::Ddpm(_) => {
                let sampler = SamplerKind::Ddim { eta: 1.0 };
                (self.train_and_sample::<B, Ddpm<B>>(&run, &train, sampler, &device)?.1, None)
            }
        };
        self.report(&throughput, codec.as_ref());
        Ok(())
    }
}

impl BenchJob {
    /// Times `steps` training steps (after two warm-up steps) and one sampling run of
    /// `sample_steps` network evaluations of `sampler` (after a two-step warm-up run) of a new
    /// model of `run`.
    fn train_and_sample<B: TrainBackend, M: Trainable<B>>(
        &self,
        run: &RunConfig,
        train: &ImageSet,
        sampler: SamplerKind,
        device: &B::Device,
    ) -> Result<(Trainer<B, M>, Throughput), String>
    where
        M::InnerModule: Generative<B::InnerBackend>,
    {
        let batch = run.train.batch_size;
        let mut trainer = Trainer::<B, M>::new(run, train.shape(), device)?;
        let parameters = trainer.model().num_params();
        if !self.json {
            println!(
                "size {}: {parameters} parameters, images {}x{}x{}, batch {batch}",
                self.size.name(),
                train.channels,
                train.height,
                train.width
            );
        }
        for _ in 0..2 {
            trainer.train_step(train)?; // warm-up: allocation, autotuning
        }
        let start = Instant::now();
        for _ in 0..self.steps {
            trainer.train_step(train)?; // reads the loss back, so each step is synchronised
        }
        let train_secs = start.elapsed().as_secs_f64();
        // Two warm-up evaluations, as the PyTorch scripts do, then the timed sampler.
        let sample = |steps| {
            let options = SampleOptions { n: batch, steps, sampler, batch_size: batch, ..SampleOptions::default() };
            sampling::sample(trainer.ema(), [train.height, train.width], &options, device, &mut || {})
        };
        sample(2)?;
        let start = Instant::now();
        sample(self.sample_steps)?;
        let sample_secs = start.elapsed().as_secs_f64();
        let throughput = Throughput {
            parameters,
            batch,
            train_images_per_s: (self.steps * batch) as f64 / train_secs,
            sample_ms_per_eval: 1e3 * sample_secs / self.sample_steps as f64,
            // Of training and sampling, as the PyTorch scripts', before the codec runs.
            peak_rss_bytes: vdm_backends::memory::peak_resident(),
        };
        Ok((trainer, throughput))
    }

    /// Codes the first `batch` of `train` (the bench data's own images) at `T = sample_steps`
    /// and back, refusing a round trip that changed them.
    fn codec<B: TrainBackend>(
        &self,
        model: &Vdm<B::InnerBackend>,
        train: &ImageSet,
        batch: usize,
        device: &B::Device,
    ) -> Result<CodecThroughput, String> {
        let images = train.select(&(0..batch.min(train.len())).collect::<Vec<_>>());
        let id = codec::ModelId::weights("bench");
        let start = Instant::now();
        let (bytes, _) =
            codec::compress(model, &id, &images, self.sample_steps, codec::DEFAULT_LATENT_BITS, batch, device, |_| {})?;
        let encode_secs = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let decoded = codec::decompress(model, "bench", &bytes, None, device, |_| {})?;
        let decode_secs = start.elapsed().as_secs_f64();
        if decoded.pixels != images.pixels {
            return Err("the codec's round trip changed the images".into());
        }
        Ok(CodecThroughput {
            encode_images_per_s: images.len() as f64 / encode_secs,
            decode_images_per_s: images.len() as f64 / decode_secs,
            images: images.len(),
        })
    }

    fn report(&self, t: &Throughput, codec: Option<&CodecThroughput>) {
        if self.json {
            let result = serde_json::json!({
                "impl": "vdm-rs",
                "size": self.size.name(),
                "parameters": t.parameters,
                "batch": t.batch,
                "train_images_per_s": t.train_images_per_s,
                "sample_ms_per_eval": t.sample_ms_per_eval,
                "peak_rss_bytes": t.peak_rss_bytes,
                "codec_steps": codec.map(|_| self.sample_steps),
                "encode_images_per_s": codec.map(|c| c.encode_images_per_s),
                "decode_images_per_s": codec.map(|c| c.decode_images_per_s),
            });
            println!("{result}");
            return;
        }
        println!(
            "training: {:.1} images/s ({:.1} ms/step over {} steps)",
            t.train_images_per_s,
            1e3 * t.batch as f64 / t.train_images_per_s,
            self.steps
        );
        println!(
            "sampling: {:.2} images/s at T={} ({:.1} ms per network evaluation of {} images)",
            1e3 * t.batch as f64 / (t.sample_ms_per_eval * self.sample_steps as f64),
            self.sample_steps,
            t.sample_ms_per_eval,
            t.batch
        );
        if let Some(c) = codec {
            println!(
                "bits-back codec at T={}: encode {:.2} images/s, decode {:.2} images/s ({} images per message)",
                self.sample_steps, c.encode_images_per_s, c.decode_images_per_s, c.images
            );
        }
        if let Some(peak) = t.peak_rss_bytes {
            println!("peak resident memory of training and sampling: {}", vdm_backends::memory::Bytes(peak));
        }
    }
}
