//! Checkpoints on disk: the state file, locating a run's latest checkpoint, loading weights.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::model::Vdm;

/// The checkpoint's small state file: the step and the whole run's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Steps taken.
    pub step: usize,
    /// The run (data, model, optimisation, evaluation).
    pub run: RunConfig,
}

pub(crate) type Rec = NamedMpkFileRecorder<FullPrecisionSettings>;


/// The checkpoint directory named by `path`: a checkpoint itself (holding `state.json`) or a
/// run directory whose `latest` file names one.
pub fn checkpoint_dir(path: &Path) -> Result<PathBuf, String> {
    if path.join("state.json").is_file() {
        return Ok(path.to_owned());
    }
    let latest = path.join("latest");
    let name = fs::read_to_string(&latest).map_err(|e| {
        format!("{} is not a checkpoint (no state.json) and has no readable `latest` file ({e})", path.display())
    })?;
    let dir = path.join(name.trim());
    if !dir.join("state.json").is_file() {
        return Err(format!("{} names {}, which holds no state.json", latest.display(), dir.display()));
    }
    Ok(dir)
}

pub(crate) fn read_state(path: &Path) -> Result<(PathBuf, CheckpointState), String> {
    let dir = checkpoint_dir(path)?;
    let file = dir.join("state.json");
    let text = fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let state = serde_json::from_str(&text).map_err(|e| format!("{}: malformed checkpoint state: {e}", file.display()))?;
    Ok((dir, state))
}

/// Loads a checkpoint's EMA weights (what evaluation and sampling use) onto any backend.
pub fn load_ema<B: Backend>(path: &Path, device: &B::Device) -> Result<(Vdm<B>, CheckpointState), String> {
    let (dir, state) = read_state(path)?;
    let model = state
        .run
        .model
        .init::<B>(device)
        .load_file(dir.join("ema"), &Rec::new(), device)
        .map_err(|e| format!("{}: loading EMA weights: {e}", dir.display()))?;
    Ok((model, state))
}

/// Writes `bytes` to `path` via a temporary file and a rename, so readers see old or new, never half.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}
