//! `vdm import` / `vdm export`: DDPM models in diffusers' layout (`UNet2DModel` and
//! `DDPMScheduler` folders, safetensors weights) in and out of vdm-rs runs.

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

/// Makes the run directory `run_dir` from the diffusers folder `dir`: its network as the model
/// and EMA of a checkpoint at step 0, its scheduler as the DDPM's process, and `[data]`, `[train]`
/// and `[eval]` from `config` (a run configuration file), or the bundled digits' for 1×8×8 images.
pub fn import(dir: &Path, run_dir: &Path, config: Option<&Path>) -> Result<(), String> {
    let (unet_dir, scheduler_file) = locate(dir)?;
    let at = |file: &Path, e: vdm_backends::Error| format!("{}: {e}", file.display());
    let (unet, shape) = unet_config_from_json(&read_json(&unet_dir.join(CONFIG_FILE))?)
        .map_err(|e| at(&unet_dir.join(CONFIG_FILE), e))?;
    let ddpm = ddpm_config_from_scheduler(&read_json(&scheduler_file)?, unet).map_err(|e| at(&scheduler_file, e))?;
    let mut run = match config {
        Some(path) => read_config(path)?,
        None if shape == [1, 8, 8] => RunConfig::ddpm_digits(),
        None => {
            return Err(format!(
                "the network takes {}x{}x{} images: say where they are with --config FILE (its [data] table; `vdm config --family ddpm` prints one)",
                shape[0], shape[1], shape[2]
            ))
        }
    };
    run.model = ModelConfig::Ddpm(ddpm.clone());
    run.validate()?;
    create_empty_dir(run_dir, "--run")?;
    let device = Default::default();
    type B = Autodiff<Cpu>;
    let weights = read(&unet_dir.join(WEIGHTS_FILE))?;
    let mut model: Ddpm<B> = ddpm.build(shape, &device)?;
    model.net = import_unet(model.net, &weights).map_err(|e| at(&unet_dir.join(WEIGHTS_FILE), e))?;
    let saved = Trainer::<B, Ddpm<B>>::from_model(&run, shape, model, &device)?.save(run_dir)?;
    println!(
        "imported {} ({}x{}x{} images, T = {}) into {}; `vdm eval --checkpoint {}` and `vdm sample` use it",
        dir.display(),
        shape[0],
        shape[1],
        shape[2],
        ddpm.time_steps,
        saved.display(),
        run_dir.display()
    );
    Ok(())
}

/// Writes the EMA network of a DDPM checkpoint as a diffusers `UNet2DModel` folder `out` with its
/// scheduler's configuration.
pub fn export(checkpoint: &Path, out: &Path) -> Result<(), String> {
    let checkpoint = open_checkpoint(checkpoint)?;
    let ModelConfig::Ddpm(ddpm) = &checkpoint.state.run.model else {
        return Err(format!(
            "{} is a VDM; vdm export writes DDPM networks (diffusers has no VDM score network)",
            checkpoint.dir.display()
        ));
    };
    let shape = checkpoint.state.image_shape;
    if shape[1] != shape[2] {
        return Err(format!("diffusers' UNet2DModel takes square images; these are {}x{}", shape[1], shape[2]));
    }
    let scheduler = scheduler_config_json(ddpm)?;
    let model: Ddpm<Cpu> = load_model(&checkpoint, &Default::default())?;
    let weights = export_unet(&model.net)?;
    create_empty_dir(out, "--out")?;
    let json = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON values serialise");
    for (name, bytes) in [
        (CONFIG_FILE, json(&unet_config_json(&ddpm.unet, shape))),
        (SCHEDULER_FILE, json(&scheduler)),
        (WEIGHTS_FILE, weights),
    ] {
        let path = out.join(name);
        fs::write(&path, bytes).map_err(|e| format!("{}: {}", path.display(), describe_io(&e)))?;
    }
    println!(
        "exported the EMA weights of {} to {} (diffusers: UNet2DModel.from_pretrained and DDPMScheduler.from_pretrained)",
        checkpoint.dir.display(),
        out.display()
    );
    Ok(())
}
