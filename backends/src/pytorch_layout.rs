//! A VDM in PyTorch's layout: `config.json` (the model's settings and image shape) and
//! `model.safetensors` (its weights), in and out.
//!
//! The weights are named as the PyTorch modules of `scripts/pytorch_reference.py` name theirs:
//! the score network's under `score.` are the `state_dict` of its `ScoreNet` (`dense0`,
//! `conv_in`, `down.{i}.norm1`, `mid_attn.q`, `up.{i}.shortcut`, `norm_out`, `conv_out`, …;
//! GroupNorm's `weight`/`bias`, linear weights `[out, in]`, convolutions `[out, in, kh, kw]`),
//! so `ScoreNet(...).load_state_dict({k[6:]: v for k, v in load_file(...).items() if
//! k.startswith("score.")})` loads them. The learned schedule's parameters are under `schedule.`,
//! by their field names in [`crate::schedule`]: `b` and `w` (`γ(t) = b + |w| t`, the reference's
//! `Vdm.b` and `Vdm.w`), and for the monotone network also `l1_w`, `l2_w`, `l2_b`, `l3_w`, each
//! stored as it is held (the network applies their absolute values).

use burn::tensor::backend::Backend;
use serde_json::{json, Value};

use crate::config::VdmConfig;
use crate::error::{Error, Result};
use crate::model::Vdm;
use crate::named_tensors::{self, Layout};

/// The weights file of an exported VDM.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Its configuration.
pub const CONFIG_FILE: &str = "config.json";
/// `config.json`'s `format`: what wrote it.
pub const FORMAT: &str = "vdm-rs VDM";
/// `config.json`'s `format_version`: the layout of this module.
pub const FORMAT_VERSION: u64 = 1;

/// `config.json` of a VDM of `config` on images of `image_shape` (`[C, H, W]`).
pub fn config_json(config: &VdmConfig, image_shape: [usize; 3]) -> Value {
    json!({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "image_shape": image_shape,
        "model": config,
    })
}

/// The model settings and image shape of a `config.json` written by [`config_json`]; another
/// format or version, a missing or malformed field are refused by name.
pub fn config_from_json(value: &Value) -> Result<(VdmConfig, [usize; 3])> {
    let field = |name: &str| value.get(name).unwrap_or(&Value::Null);
    if field("format").as_str() != Some(FORMAT) {
        return Err(Error::setting(
            "format",
            format!(
                "{CONFIG_FILE}: format is {}, not \"{FORMAT}\" (a file vdm export wrote of a VDM)",
                field("format")
            ),
        ));
    }
    if field("format_version").as_u64() != Some(FORMAT_VERSION) {
        return Err(Error::setting(
            "format_version",
            format!("{CONFIG_FILE}: format_version is {}; this build reads {FORMAT_VERSION}", field("format_version")),
        ));
    }
    let image_shape = field("image_shape")
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_u64().filter(|&v| v > 0).map(|v| v as usize)).collect::<Option<Vec<_>>>())
        .and_then(|v| <[usize; 3]>::try_from(v).ok())
        .ok_or_else(|| {
            Error::setting(
                "image_shape",
                format!("{CONFIG_FILE}: image_shape is {}, not three positive sizes [C, H, W]", field("image_shape")),
            )
        })?;
    let config: VdmConfig = serde_json::from_value(field("model").clone())
        .map_err(|e| Error::setting("model", format!("{CONFIG_FILE}: model: {e}")))?;
    config.validate()?;
    Ok((config, image_shape))
}

/// The file's name of the parameter of [`Vdm`] at `path` (in PyTorch's terms, from the root).
fn pytorch_name(path: &[&str]) -> Option<String> {
    match path {
        // The schedule's parameters have distinct names; the variant's level is left out.
        ["schedule", .., param] => Some(format!("schedule.{param}")),
        ["score", _, _, ..] => Some(path.join(".")),
        _ => None,
    }
}

const LAYOUT: Layout =
    Layout { weights_file: WEIGHTS_FILE, config_file: CONFIG_FILE, names: "PyTorch", name: pytorch_name };

/// `model`'s weights (score network and schedule) as `model.safetensors`.
pub fn export_vdm<B: Backend>(model: &Vdm<B>) -> Result<Vec<u8>> {
    named_tensors::export(model, &LAYOUT)
}

/// `model` (built from the file's configuration) with the weights of `model.safetensors`
/// (`bytes`). Every tensor must be there with its shape and `f32`, and the file must hold no
/// other; an error names the first tensor that is not.
pub fn import_vdm<B: Backend>(model: Vdm<B>, bytes: &[u8]) -> Result<Vdm<B>> {
    named_tensors::import(model, bytes, &LAYOUT)
}
