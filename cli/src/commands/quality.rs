//! `vdm classifier train` and `vdm fid`: sample quality measured on the features of a classifier
//! trained on the dataset itself (no Inception network can be downloaded here, so this FID is
//! specific to the dataset and classifier, and not comparable with published Inception FIDs).

use std::path::PathBuf;
use std::time::Instant;

use vdm_backends::checkpoint::Checkpoint;
use vdm_backends::config::{ModelConfig, RunConfig};
use vdm_backends::data::ImageSet;
use vdm_backends::error::describe_io;
use vdm_backends::files::{write_atomically, FileDigest};
use vdm_backends::metrics::classifier::{self, ClassifierConfig, ClassifierInfo};
use vdm_backends::metrics::QualityReport;
use vdm_backends::model::ddpm::Ddpm;
use vdm_backends::model::{Generative, Vdm};
use vdm_backends::ops::{FastOps, TrainBackend};
use vdm_backends::sample::SampleOptions;

use super::{
    check_output_file, create_empty_dir, load_data, load_model, open_checkpoint, read_config, sample_with_progress,
};
use crate::device::{dispatch, BackendJob, Device};
use crate::image::write_grid;
use crate::progress::{clock, Progress};

/// What `vdm classifier train` was asked for.
pub struct ClassifierArgs {
    pub config: Option<PathBuf>,
    pub out: PathBuf,
    pub steps: Option<usize>,
}

pub fn train_classifier(args: ClassifierArgs, device: Device) -> Result<(), String> {
    create_empty_dir(&args.out, "--out")?;
    dispatch(device, ClassifierJob(args))
}

struct ClassifierJob(ClassifierArgs);

impl BackendJob for ClassifierJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let args = self.0;
        let run = match &args.config {
            Some(path) => read_config(path)?,
            None => RunConfig::digits(),
        };
        let (train, test) = load_data(&run)?;
        let config = ClassifierConfig {
            steps: args.steps.unwrap_or(ClassifierConfig::default().steps),
            ..ClassifierConfig::default()
        };
        let mut progress = Progress::new(config.steps, "classifier", 0);
        let start = Instant::now();
        let (model, test_accuracy) = classifier::train::<B>(&config, &train, &test, &device, |step, loss| {
            progress.set(step, format!("cross-entropy {loss:.4}"))
        })?;
        progress.finish();
        let classes = train.num_classes().max(test.num_classes());
        let info = ClassifierInfo {
            config,
            data: run.data.clone(),
            split_seed: run.train.seed,
            image_shape: train.shape(),
            classes,
            test_accuracy,
            weights: FileDigest::of(&[]),
        };
        classifier::save(&args.out, &model, info)?;
        println!(
            "classifier: {classes} classes, test accuracy {:.2}% on {} images, trained in {}; saved to {}",
            100.0 * test_accuracy,
            test.len(),
            clock(start.elapsed().as_secs_f64()),
            args.out.display()
        );
        Ok(())
    }
}

/// What `vdm fid` was asked for.
pub struct FidArgs {
    pub checkpoint: Option<PathBuf>,
    pub classifier: PathBuf,
    pub options: SampleOptions,
    pub grid: Option<PathBuf>,
    pub json: Option<PathBuf>,
}

pub fn fid(args: FidArgs, device: Device) -> Result<(), String> {
    let o = &args.options;
    if o.n < 2 || o.batch_size == 0 || o.steps == 0 {
        return Err("--n must be at least 2, --batch-size and --steps at least 1".into());
    }
    for path in [&args.grid, &args.json].into_iter().flatten() {
        check_output_file(path)?;
    }
    dispatch(device, FidJob(args))
}

struct FidJob(FidArgs);

impl BackendJob for FidJob {
    type Output = ();

    fn run<B: TrainBackend>(self, device: B::Device) -> Result<(), String> {
        let args = self.0;
        let (classifier, info) = classifier::load::<B::InnerBackend>(&args.classifier, &device)?;
        println!("classifier {} (test accuracy {:.2}%)", args.classifier.display(), 100.0 * info.test_accuracy);
        let mut run = RunConfig::digits();
        run.data = info.data.clone();
        run.train.seed = info.split_seed;
        let (train, test) = load_data(&run)?;
        if args.checkpoint.is_none() && args.options.n > train.len() {
            eprintln!(
                "warning: --n {} is more than the {} training images; all of them are used",
                args.options.n,
                train.len()
            );
        }
        let features = info.config.features;
        // Said before sampling, which is the long part.
        let used = if args.checkpoint.is_none() { args.options.n.min(train.len()) } else { args.options.n };
        if used <= features {
            eprintln!(
                "warning: {} images cannot estimate the covariance of the classifier's {features} features (that takes more than {features}); \
                 this FID is dominated by that error: use --n of several hundred",
                used
            );
        }
        let start = Instant::now();
        let (images, what, nfe) = match &args.checkpoint {
            None => (train.select(&(0..used).collect::<Vec<_>>()), format!("{used} training images"), None),
            Some(path) => {
                let checkpoint = open_checkpoint(path)?;
                if checkpoint.state.image_shape != info.image_shape {
                    return Err(format!(
                        "the model makes images of {:?}, the classifier takes {:?}",
                        checkpoint.state.image_shape, info.image_shape
                    ));
                }
                // The reference images are the classifier's test set: they must be the model's data.
                if !checkpoint.state.run.data.same_images(&info.data) {
                    let describe = |data| serde_json::to_string(data).unwrap_or_else(|e| e.to_string());
                    return Err(format!(
                        "the model was trained on {}, the classifier on {}: its test images, the FID's reference, are another dataset; \
                         train a classifier on the model's data with `vdm classifier train --config {}`",
                        describe(&checkpoint.state.run.data),
                        describe(&info.data),
                        checkpoint.dir.parent().unwrap_or(&checkpoint.dir).join("config.toml").display()
                    ));
                }
                let (images, nfe) = match checkpoint.state.run.model {
                    ModelConfig::Vdm(_) => draw::<B::InnerBackend, Vdm<_>>(&args, &checkpoint, &device)?,
                    ModelConfig::Ddpm(_) => draw::<B::InnerBackend, Ddpm<_>>(&args, &checkpoint, &device)?,
                };
                (
                    images,
                    format!(
                        "{} samples ({} steps of {} spaced in {}, {nfe} network evaluations per image)",
                        args.options.n, args.options.steps, args.options.sampler, args.options.spacing
                    ),
                    Some(nfe),
                )
            }
        };
        if let Some(path) = &args.grid {
            let shown = images.select(&(0..images.len().min(64)).collect::<Vec<_>>());
            write_grid(&shown, 8, 4, path)?;
        }
        let samples = classifier.features_and_probabilities(&images, args.options.batch_size, &device);
        let reference = classifier.features_and_probabilities(&test, args.options.batch_size, &device);
        let r = QualityReport::new((&samples.0, &samples.1), (&reference.0, &reference.1))?;
        println!("{what} against the {} test images, in {}:", test.len(), clock(start.elapsed().as_secs_f64()));
        println!(
            "FID (classifier features) {:.3}; IS analogue {:.3} (test images {:.3}); confident (p > 0.9) {:.1}% (test images {:.1}%)",
            r.fid,
            r.inception_score,
            r.reference_inception_score,
            100.0 * r.confident_share,
            100.0 * r.reference_confident_share
        );
        if let Some(path) = &args.json {
            let doc = serde_json::json!({"what": what, "checkpoint": args.checkpoint, "classifier": args.classifier, "n": images.len(),
                "steps": args.options.steps, "nfe": nfe, "sampler": args.options.sampler, "spacing": args.options.spacing, "seed": args.options.seed, "metrics": r});
            let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
            write_atomically(path, text.as_bytes()).map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))?;
        }
        Ok(())
    }
}

/// The samples of the checkpoint's model that `args` asks for, with progress, and the network
/// evaluations per image they took.
fn draw<B: FastOps, M: Generative<B>>(
    args: &FidArgs,
    checkpoint: &Checkpoint,
    device: &B::Device,
) -> Result<(ImageSet, usize), String> {
    let model: M = load_model(checkpoint, device)?;
    sample_with_progress(&model, checkpoint, &args.options, device)
}
