//! `vdm import` / `vdm export`: models in and out of vdm-rs runs as safetensors with a JSON
//! config: DDPM in diffusers' layout (`UNet2DModel` and `DDPMScheduler` folders), VDM in
//! PyTorch's layout ([`vdm_backends::pytorch_layout`]).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vdm_backends::config::{ModelConfig, RunConfig};
use vdm_backends::diffusers::{
    ddpm_config_from_scheduler, export_unet, import_unet, scheduler_config_json, unet_config_from_json,
    unet_config_json, CONFIG_FILE, SCHEDULER_FILE, WEIGHTS_FILE,
};
use vdm_backends::error::describe_io;
use vdm_backends::model::ddpm::Ddpm;
use vdm_backends::model::{Trainable, Vdm};
use vdm_backends::pytorch_layout;
use vdm_backends::train::Trainer;
use vdm_backends::{Autodiff, Cpu};

use super::{create_empty_dir, load_model, open_checkpoint, read_config};

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))
}

fn read_json(path: &Path) -> Result<Value, String> {
    serde_json::from_slice(&read(path)?).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

/// The network's folder and the scheduler's configuration of a diffusers folder: a `UNet2DModel`
/// folder with `scheduler_config.json` beside its `config.json`, or a pipeline folder with
/// `unet/` and `scheduler/`.
fn locate(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let (unet, scheduler) = if dir.join("unet").join(CONFIG_FILE).is_file() {
        (dir.join("unet"), dir.join("scheduler").join(SCHEDULER_FILE))
    } else {
        (dir.to_path_buf(), dir.join(SCHEDULER_FILE))
    };
    for file in [unet.join(CONFIG_FILE), unet.join(WEIGHTS_FILE), scheduler.clone()] {
        if !file.is_file() {
            return Err(format!(
                "{} has no {}: give a diffusers UNet2DModel folder ({CONFIG_FILE}, {WEIGHTS_FILE}, {SCHEDULER_FILE}) or a pipeline folder with unet/ and scheduler/",
                dir.display(),
                file.strip_prefix(dir).unwrap_or(&file).display()
            ));
        }
    }
    Ok((unet, scheduler))
}

/// A model folder to import.
pub enum Source {
    /// A diffusers `UNet2DModel` folder with its scheduler, or a pipeline folder.
    Diffusers(PathBuf),
    /// A VDM folder written by `vdm export`.
    Vdm(PathBuf),
}

type B = Autodiff<Cpu>;

/// Makes the run directory `run_dir` from the model folder `source`: its network as the model
/// and EMA of a checkpoint at step 0, and `[data]`, `[train]` and `[eval]` from `config` (a run
/// configuration file), or the bundled digits' for 1×8×8 images.
pub fn import(source: &Source, run_dir: &Path, config: Option<&Path>) -> Result<(), String> {
    let at = |file: &Path, e: vdm_backends::Error| format!("{}: {e}", file.display());
    let device = Default::default();
    match source {
        Source::Diffusers(dir) => {
            let (unet_dir, scheduler_file) = locate(dir)?;
            let (unet, shape) = unet_config_from_json(&read_json(&unet_dir.join(CONFIG_FILE))?)
                .map_err(|e| at(&unet_dir.join(CONFIG_FILE), e))?;
            let ddpm =
                ddpm_config_from_scheduler(&read_json(&scheduler_file)?, unet).map_err(|e| at(&scheduler_file, e))?;
            let run = run_config(ModelConfig::Ddpm(ddpm.clone()), shape, config)?;
            create_empty_dir(run_dir, "--run")?;
            let weights = read(&unet_dir.join(WEIGHTS_FILE))?;
            let mut model: Ddpm<B> = ddpm.build(shape, &device)?;
            model.net = import_unet(model.net, &weights).map_err(|e| at(&unet_dir.join(WEIGHTS_FILE), e))?;
            save(&run, shape, model, run_dir, &format!("{}, T = {}", dir.display(), ddpm.time_steps))
        }
        Source::Vdm(dir) => {
            let config_file = dir.join(pytorch_layout::CONFIG_FILE);
            let weights_file = dir.join(pytorch_layout::WEIGHTS_FILE);
            let (vdm, shape) =
                pytorch_layout::config_from_json(&read_json(&config_file)?).map_err(|e| at(&config_file, e))?;
            let run = run_config(ModelConfig::Vdm(vdm.clone()), shape, config)?;
            create_empty_dir(run_dir, "--run")?;
            let weights = read(&weights_file)?;
            let model = pytorch_layout::import_vdm(vdm.build::<B>(shape[0], &device), &weights)
                .map_err(|e| at(&weights_file, e))?;
            save(&run, shape, model, run_dir, &dir.display().to_string())
        }
    }
}

/// The run of the imported `model` on images of `shape`: `config`'s other tables, or the
/// family's default run on the bundled digits.
fn run_config(model: ModelConfig, shape: [usize; 3], config: Option<&Path>) -> Result<RunConfig, String> {
    let (digits, family) = match model {
        ModelConfig::Vdm(_) => (RunConfig::digits(), "vdm"),
        ModelConfig::Ddpm(_) => (RunConfig::ddpm_digits(), "ddpm"),
    };
    let mut run = match config {
        Some(path) => read_config(path)?,
        None if shape == [1, 8, 8] => digits,
        None => {
            return Err(format!(
                "the network takes {}x{}x{} images: say where they are with --config FILE (its [data] table; `vdm config --family {family}` prints one)",
                shape[0], shape[1], shape[2]
            ))
        }
    };
    run.model = model;
    run.validate()?;
    Ok(run)
}

/// Saves `model` as the model and EMA of a step-0 checkpoint of `run` in `run_dir`.
fn save<M: Trainable<B>>(
    run: &RunConfig,
    shape: [usize; 3],
    model: M,
    run_dir: &Path,
    what: &str,
) -> Result<(), String> {
    let saved = Trainer::<B, M>::from_model(run, shape, model, &Default::default())?.save(run_dir)?;
    println!(
        "imported {what} ({}x{}x{} images) into {}; `vdm eval --checkpoint {}` and `vdm sample` use it",
        shape[0],
        shape[1],
        shape[2],
        saved.display(),
        run_dir.display()
    );
    Ok(())
}

/// Writes the EMA model of a checkpoint to the folder `out`: a DDPM's network as a diffusers
/// `UNet2DModel` folder with its scheduler's configuration, a VDM in PyTorch's layout.
pub fn export(checkpoint: &Path, out: &Path) -> Result<(), String> {
    let checkpoint = open_checkpoint(checkpoint)?;
    let shape = checkpoint.state.image_shape;
    let json = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON values serialise");
    let (files, how) = match &checkpoint.state.run.model {
        ModelConfig::Ddpm(ddpm) => {
            if shape[1] != shape[2] {
                return Err(format!("diffusers' UNet2DModel takes square images; these are {}x{}", shape[1], shape[2]));
            }
            let scheduler = scheduler_config_json(ddpm)?;
            let model: Ddpm<Cpu> = load_model(&checkpoint, &Default::default())?;
            let files = vec![
                (CONFIG_FILE, json(&unet_config_json(&ddpm.unet, shape))),
                (SCHEDULER_FILE, json(&scheduler)),
                (WEIGHTS_FILE, export_unet(&model.net)?),
            ];
            (files, "diffusers: UNet2DModel.from_pretrained and DDPMScheduler.from_pretrained")
        }
        ModelConfig::Vdm(vdm) => {
            let model: Vdm<Cpu> = load_model(&checkpoint, &Default::default())?;
            let files = vec![
                (pytorch_layout::CONFIG_FILE, json(&pytorch_layout::config_json(vdm, shape))),
                (pytorch_layout::WEIGHTS_FILE, pytorch_layout::export_vdm(&model)?),
            ];
            (files, "PyTorch: score.* is the state_dict of scripts/pytorch_reference.py's ScoreNet")
        }
    };
    create_empty_dir(out, "--out")?;
    for (name, bytes) in files {
        let path = out.join(name);
        fs::write(&path, bytes).map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))?;
    }
    println!("exported the EMA weights of {} to {} ({how})", checkpoint.dir.display(), out.display());
    Ok(())
}
