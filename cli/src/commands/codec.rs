//! `vdm compress` / `vdm decompress`: lossless compression with a trained model by bits-back
//! coding ([`vdm_backends::codec`]).

use std::fs;
use std::io::Write;
use std::path::{absolute, PathBuf};
use std::time::Instant;

use flate2::write::GzEncoder;
use vdm_backends::checkpoint::{self, Checkpoint, KEEP};
use vdm_backends::codec::{
    compress, decompress_into, read_file, Codable, CodecStats, Header, Images, ModelId, PngFiles,
};
use vdm_backends::config::ModelConfig;
use vdm_backends::data::categorical_baseline_bpd;
use vdm_backends::error::describe_io;
use vdm_backends::files::write_atomically;
use vdm_backends::model::ddpm::Ddpm;
use vdm_backends::model::{Family, Vdm};
use vdm_backends::ops::{FastOps, TrainBackend};

use super::{check_output_file, create_empty_dir, load_checkpoint_data, load_model, open_checkpoint};
use crate::device::{dispatch, BackendJob, Device};
use crate::image::image_png;
use crate::progress::{clock, Progress};

/// The weight file a checkpoint's model is loaded from (the EMA): its SHA-256 identifies the model.
const MODEL_FILE: &str = "ema.mpk";

/// Where the images to compress come from.
pub enum Input {
    /// The checkpoint's run's test set, at most `limit` images.
    TestSet { limit: Option<usize> },
    /// PNG files, all of the model's image shape.
    Png(Vec<PathBuf>),
}

/// What `vdm compress` was asked for.
pub struct CompressArgs {
    pub checkpoint: PathBuf,
    /// `None`: 100 for a VDM, a DDPM's own `T`.
    pub steps: Option<usize>,
    pub latent_bits: u32,
    pub batch_size: usize,
    pub input: Input,
    pub out: PathBuf,
}

/// What `vdm decompress` was asked for.
pub struct DecompressArgs {
    pub file: PathBuf,
    pub checkpoint: Option<PathBuf>,
    pub steps: Option<usize>,
    pub out_dir: PathBuf,
}

pub fn run_compress(args: CompressArgs, device: Device) -> Result<(), String> {
    if args.steps == Some(0) || args.batch_size == 0 {
        return Err("--steps and --batch-size must be at least 1".into());
    }
    if let Input::TestSet { limit: Some(0) } = args.input {
        return Err("--limit must be at least 1".into());
    }
    check_output_file(&args.out)?;
    dispatch(device, CompressJob(args))
}

pub fn run_decompress(args: DecompressArgs, device: Device) -> Result<(), String> {
    let bytes = fs::read(&args.file).map_err(|e| format!("{}: {}", args.file.display(), describe_io(&e)))?;
    create_empty_dir(&args.out_dir, "-o")?;
    dispatch(device, DecompressJob { args, bytes })
}

fn model_hash(checkpoint: &Checkpoint) -> Result<String, String> {
    checkpoint
        .state
        .files
        .get(MODEL_FILE)
        .map(|f| f.sha256.clone())
        .ok_or_else(|| format!("{} lists no {MODEL_FILE}", checkpoint.dir.display()))
}

/// The T a VDM's chain has unless told otherwise.
const DEFAULT_VDM_STEPS: usize = 100;

struct CompressJob(CompressArgs);

impl BackendJob for CompressJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let checkpoint = open_checkpoint(&self.0.checkpoint)?;
        match &checkpoint.state.run.model {
            ModelConfig::Vdm(_) => {
                let steps = self.0.steps.unwrap_or(DEFAULT_VDM_STEPS);
                compress_with::<B::InnerBackend, Vdm<_>>(self.0, steps, checkpoint, &device)
            }
            ModelConfig::Ddpm(c) => {
                let steps = self.0.steps.unwrap_or(c.time_steps);
                compress_with::<B::InnerBackend, Ddpm<_>>(self.0, steps, checkpoint, &device)
            }
        }
    }
}

fn compress_with<B: FastOps, M: Family<B> + Codable<B>>(
    args: CompressArgs,
    steps: usize,
    checkpoint: Checkpoint,
    device: &B::Device,
) -> Result<(), String> {
    let model: M = load_model(&checkpoint, device)?;
    let shape = checkpoint.state.image_shape;
    // The test set is in memory already (the training set only for the baseline, computed here);
    // PNG files are read a batch at a time.
    let (baseline, images): (Option<f64>, Box<dyn Images>) = match &args.input {
        Input::TestSet { limit } => {
            let (train, test) = load_checkpoint_data(&checkpoint)?;
            let n = limit.unwrap_or(test.len()).min(test.len());
            let test = test.select(&(0..n).collect::<Vec<_>>());
            (Some(categorical_baseline_bpd(&train, &test, 0.5)), Box::new(test))
        }
        Input::Png(paths) => (None, Box::new(PngFiles::new(paths.clone(), shape).map_err(|e| e.to_string())?)),
    };
    let dir =
        fs::canonicalize(&checkpoint.dir).map_err(|e| format!("{}: {}", checkpoint.dir.display(), describe_io(&e)))?;
    let id = ModelId {
        sha256: model_hash(&checkpoint)?,
        step: Some(checkpoint.state.step as u64),
        checkpoint: Some(dir.to_string_lossy().into_owned()),
    };
    let count = images.count();
    let mut progress = Progress::new(count * model.chain(steps)?.evaluations(), "encode", 0);
    let start = Instant::now();
    let (bytes, stats) = compress(&model, &id, &*images, steps, args.latent_bits, args.batch_size, device, |images| {
        progress.advance(images)
    })?;
    progress.finish();
    let secs = start.elapsed().as_secs_f64();
    // Kept before the file exists, so that no file is ever without its checkpoint.
    let out = absolute(&args.out).map_err(|e| format!("{}: {}", args.out.display(), describe_io(&e)))?;
    checkpoint::keep(&dir, &format!("compressed file {}", out.display()))?;
    write_atomically(&args.out, &bytes).map_err(|e| format!("{}: {}", args.out.display(), describe_io(&e)))?;
    report(&stats, &*images, baseline, steps)?;
    println!(
        "decoding needs this checkpoint: {} now holds a `{KEEP}` file, so training never prunes it (delete that file once the compressed files are gone)",
        dir.display()
    );
    println!(
        "wrote {} ({} bytes) in {} ({:.2} images/s)",
        args.out.display(),
        bytes.len(),
        clock(secs),
        count as f64 / secs
    );
    Ok(())
}

/// The rates of a compressed message beside the sizes of the usual lossless formats, and the
/// per-pixel categorical baseline's rate on the test set, if that is what was compressed.
fn report(stats: &CodecStats, images: &dyn Images, baseline: Option<f64>, steps: usize) -> Result<(), String> {
    const CHUNK: usize = 256;
    let dims = stats.dims as f64;
    let (count, shape) = (images.count(), images.shape());
    let d: usize = shape.iter().product();
    let mut gzip = GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut png_bits = 0.0;
    for start in (0..count).step_by(CHUNK) {
        let pixels = images.read(start..(start + CHUNK).min(count)).map_err(|e| e.to_string())?;
        gzip.write_all(&pixels).map_err(|e| e.to_string())?;
        for image in pixels.chunks_exact(d) {
            png_bits += 8.0 * image_png(image, shape)?.len() as f64;
        }
    }
    let gzip_bits = 8.0 * gzip.finish().map_err(|e| e.to_string())?.len() as f64;
    println!("{count} images, {} values, T = {steps}", stats.dims);
    println!(
        "bits-back rate: {:.4} bpd effective (net codelength), {:.4} bpd used (the file: net + {:.0} seed bits consumed + header)",
        stats.effective_bpd(),
        stats.used_bpd(),
        stats.seed_bits
    );
    let mut line = format!(
        "for comparison: PNG files {:.4} bpd, gzip -9 of the raw bytes {:.4} bpd, raw 8 bpd",
        png_bits / dims,
        gzip_bits / dims
    );
    if let Some(bpd) = baseline {
        line.push_str(&format!(", per-pixel categorical baseline {bpd:.4} bpd"));
    }
    println!("{line}");
    Ok(())
}

/// The checkpoint a compressed file needs (`id`): `--checkpoint`, a checkpoint directory or a run
/// directory whose checkpoints are searched, or else the directory the file records. The error
/// says which step and weights are needed and what was found instead.
fn find_checkpoint(args: &DecompressArgs, id: &ModelId) -> Result<Checkpoint, String> {
    let file = args.file.display();
    let path = match (&args.checkpoint, &id.checkpoint) {
        (Some(path), _) => path.clone(),
        (None, Some(recorded)) => PathBuf::from(recorded),
        (None, None) => return Err(format!("{file} (format 1) does not record its checkpoint; give --checkpoint")),
    };
    if !path.exists() {
        return Err(format!(
            "{file} needs {id}, but {} does not exist; restore that checkpoint, or give --checkpoint",
            path.display()
        ));
    }
    if path.join("state.json").is_file() {
        return open_checkpoint(&path); // `decompress` compares the weights' hash
    }
    let candidates = Checkpoint::all(&path)?;
    let found: Vec<String> = candidates.iter().map(|c| format!("step {}", c.state.step)).collect();
    candidates.into_iter().find(|c| model_hash(c).is_ok_and(|h| h == id.sha256)).ok_or_else(|| {
        format!(
            "{file} needs {id}; {} holds no checkpoint with those weights ({}): restore that checkpoint to decode it",
            path.display(),
            if found.is_empty() {
                "it holds no checkpoint".to_string()
            } else {
                format!("it holds {}", found.join(", "))
            }
        )
    })
}

struct DecompressJob {
    args: DecompressArgs,
    bytes: Vec<u8>,
}

impl BackendJob for DecompressJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let header = read_file(&self.bytes).map_err(|e| format!("{}: {e}", self.args.file.display()))?.header;
        let checkpoint = find_checkpoint(&self.args, &header.model)?;
        match &checkpoint.state.run.model {
            ModelConfig::Vdm(_) => self.decompress_with::<B::InnerBackend, Vdm<_>>(&header, checkpoint, &device),
            ModelConfig::Ddpm(_) => self.decompress_with::<B::InnerBackend, Ddpm<_>>(&header, checkpoint, &device),
        }
    }
}

impl DecompressJob {
    /// Decodes with `checkpoint`'s model, writing each batch's PNGs as it comes out; if decoding
    /// fails, the images already written are removed.
    fn decompress_with<B: FastOps, M: Family<B> + Codable<B>>(
        self,
        header: &Header,
        checkpoint: Checkpoint,
        device: &B::Device,
    ) -> Result<(), String> {
        let (args, file) = (&self.args, self.args.file.display());
        let model: M = load_model(&checkpoint, device)?;
        let hash = model_hash(&checkpoint)?;
        let per_image = model.chain(header.steps as usize).map_err(|e| format!("{file}: {e}"))?.evaluations();
        let mut progress = Progress::new((header.count as usize).saturating_mul(per_image), "decode", 0);
        let start = Instant::now();
        let shape = header.shape.map(|v| v as usize);
        let d: usize = shape.iter().product();
        let mut written = Vec::new();
        let decoded = decompress_into(
            &model,
            &hash,
            &self.bytes,
            args.steps,
            device,
            |images| progress.advance(images),
            |first, pixels| {
                for (k, image) in pixels.chunks_exact(d).enumerate() {
                    let path = args.out_dir.join(format!("{:06}.png", first + k));
                    let failed = |message| vdm_backends::Error::File { path: path.clone(), message };
                    let png = image_png(image, shape).map_err(failed)?;
                    write_atomically(&path, &png).map_err(|e| failed(describe_io(&e)))?;
                    written.push(path);
                }
                Ok(())
            },
        );
        progress.finish();
        if let Err(e) = decoded {
            for path in &written {
                let _ = fs::remove_file(path);
            }
            return Err(format!("{file}: {e}; the {} images written before the error were removed", written.len()));
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "decoded {} images of {:?} (checksum verified) into {} in {} ({:.2} images/s)",
            written.len(),
            shape,
            args.out_dir.display(),
            clock(secs),
            written.len() as f64 / secs
        );
        Ok(())
    }
}
