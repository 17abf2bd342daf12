//! DDPM's U-Net in the layout of diffusers' `UNet2DModel`: its `config.json` and its weights as
//! safetensors (`diffusion_pytorch_model.safetensors`), in and out.
//!
//! The two networks are the same function (DDPM's `diffusion_tf/models/unet.py`), named
//! differently: diffusers' `down_blocks.{i}.resnets.{j}` is this crate's `down.{i}.blocks.{j}`,
//! its `time_embedding.linear_1` our `dense0`, and so on (`diffusers_name`). The tensors go
//! through `named_tensors`, which names GroupNorm's `gamma`/`beta` `weight`/`bias` and transposes
//! linear layers' weights to PyTorch's `[out, in]`.

use burn::tensor::backend::Backend;
use serde_json::{json, Value};

use crate::config::{BetasConfig, DdpmConfig, Prediction, Variance};
use crate::error::{Error, Result};
use crate::named_tensors::{self, Layout};
use crate::nn::ddpm_unet::{UNet, UNetConfig};

/// The scheduler's configuration, beside `config.json` or in a pipeline's `scheduler/` folder.
pub const SCHEDULER_FILE: &str = "scheduler_config.json";
/// The weights file of a diffusers model folder.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";
/// Its configuration.
pub const CONFIG_FILE: &str = "config.json";

/// diffusers' `UNet2DModel` configuration of `config` for images of `[channels, size, size]`.
pub fn unet_config_json(config: &UNetConfig, [channels, size, _]: [usize; 3]) -> Value {
    let levels = config.ch_mult.len();
    let attends = |level: usize| config.attn_resolutions.contains(&(size >> level));
    let down: Vec<&str> = (0..levels).map(|l| if attends(l) { "AttnDownBlock2D" } else { "DownBlock2D" }).collect();
    let up: Vec<&str> = (0..levels).rev().map(|l| if attends(l) { "AttnUpBlock2D" } else { "UpBlock2D" }).collect();
    json!({
        "_class_name": "UNet2DModel",
        "sample_size": size,
        "in_channels": channels,
        "out_channels": channels,
        "center_input_sample": false,
        "time_embedding_type": "positional",
        "freq_shift": 1,
        "flip_sin_to_cos": false,
        "down_block_types": down,
        "up_block_types": up,
        "mid_block_type": "UNetMidBlock2D",
        "block_out_channels": config.ch_mult.iter().map(|m| m * config.ch).collect::<Vec<_>>(),
        "layers_per_block": config.num_res_blocks,
        "mid_block_scale_factor": 1,
        "downsample_padding": 0,
        "downsample_type": "conv",
        "upsample_type": "conv",
        "dropout": config.dropout,
        "act_fn": "silu",
        "attention_head_dim": null,
        "norm_num_groups": config.groups,
        "attn_norm_num_groups": null,
        "norm_eps": config.norm_eps,
        "resnet_time_scale_shift": "default",
        "add_attention": true,
        "class_embed_type": null,
        "num_class_embeds": null,
    })
}

/// The [`UNetConfig`] and image shape `[C, H, W]` of a diffusers `UNet2DModel` configuration,
/// refusing, by name, every setting that makes another network than DDPM's.
pub fn unet_config_from_json(value: &Value) -> Result<(UNetConfig, [usize; 3])> {
    let field = |name: &str| value.get(name).unwrap_or(&Value::Null);
    let wrong = |name: &str, want: &str| {
        Error::setting(name, format!("{CONFIG_FILE}: {name} is {}; DDPM's U-Net needs {want}", field(name)))
    };
    let count = |name: &str| field(name).as_u64().map(|v| v as usize).ok_or_else(|| wrong(name, "a whole number"));
    let expect = |name: &str, want: Value, absent_ok: bool| {
        let got = field(name);
        if got == &want || (absent_ok && got.is_null()) {
            Ok(())
        } else {
            Err(wrong(name, &want.to_string()))
        }
    };
    if let Some(class) = field("_class_name").as_str().filter(|c| *c != "UNet2DModel") {
        return Err(Error::Mismatch(format!("{CONFIG_FILE} describes a {class}, not a UNet2DModel")));
    }
    expect("center_input_sample", json!(false), true)?;
    expect("time_embedding_type", json!("positional"), true)?;
    expect("freq_shift", json!(1), false)?;
    expect("flip_sin_to_cos", json!(false), false)?;
    expect("mid_block_type", json!("UNetMidBlock2D"), true)?;
    expect("mid_block_scale_factor", json!(1), true)?;
    expect("downsample_padding", json!(0), false)?;
    expect("downsample_type", json!("conv"), true)?;
    expect("upsample_type", json!("conv"), true)?;
    expect("act_fn", json!("silu"), true)?;
    expect("attention_head_dim", Value::Null, true)?;
    expect("attn_norm_num_groups", Value::Null, true)?;
    expect("resnet_time_scale_shift", json!("default"), true)?;
    expect("add_attention", json!(true), true)?;
    expect("class_embed_type", Value::Null, true)?;
    expect("num_class_embeds", Value::Null, true)?;
    let (size, channels) = (count("sample_size")?, count("in_channels")?);
    if count("out_channels")? != channels {
        return Err(wrong("out_channels", &format!("in_channels ({channels})")));
    }
    let widths: Vec<usize> = field("block_out_channels")
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_u64().map(|v| v as usize)).collect())
        .ok_or_else(|| wrong("block_out_channels", "a list of channel counts"))?;
    let ch = *widths.first().ok_or_else(|| wrong("block_out_channels", "at least one channel count"))?;
    if ch == 0 || widths.iter().any(|w| w % ch != 0) {
        return Err(wrong("block_out_channels", "multiples of its first entry"));
    }
    let names = |name: &str| -> Result<Vec<String>> {
        field(name)
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
            .ok_or_else(|| wrong(name, "a list of block names"))
    };
    let (down, up) = (names("down_block_types")?, names("up_block_types")?);
    let levels = widths.len();
    let mut attn_resolutions = Vec::new();
    for level in 0..levels {
        let attends = match down.get(level).map(String::as_str) {
            Some("AttnDownBlock2D") => true,
            Some("DownBlock2D") => false,
            _ => return Err(wrong("down_block_types", "DownBlock2D or AttnDownBlock2D per block_out_channels entry")),
        };
        let up_attends = match up.get(levels - 1 - level).map(String::as_str) {
            Some("AttnUpBlock2D") => true,
            Some("UpBlock2D") => false,
            _ => return Err(wrong("up_block_types", "UpBlock2D or AttnUpBlock2D per block_out_channels entry")),
        };
        if attends != up_attends {
            return Err(wrong("up_block_types", "attention at the resolutions where down_block_types has it"));
        }
        if attends {
            attn_resolutions.push(size >> level);
        }
    }
    if down.len() != levels || up.len() != levels {
        return Err(wrong("down_block_types", "one block per block_out_channels entry, down and up"));
    }
    if !field("time_embedding_dim").is_null() && count("time_embedding_dim")? != 4 * ch {
        return Err(wrong("time_embedding_dim", &format!("4 × block_out_channels[0] ({}) or null", 4 * ch)));
    }
    let norm_eps = field("norm_eps").as_f64().ok_or_else(|| wrong("norm_eps", "a number"))?;
    let dropout = match field("dropout") {
        Value::Null => 0.0,
        v => v.as_f64().ok_or_else(|| wrong("dropout", "a number"))?,
    };
    let config = UNetConfig {
        ch,
        ch_mult: widths.iter().map(|w| w / ch).collect(),
        num_res_blocks: count("layers_per_block")?,
        attn_resolutions,
        dropout,
        groups: count("norm_num_groups")?,
        norm_eps,
    };
    let shape = [channels, size, size];
    config.validate()?;
    config.check_image_shape(shape)?;
    Ok((config, shape))
}

/// diffusers' `DDPMScheduler` configuration of `config`'s process. A μ-predicting DDPM has none.
pub fn scheduler_config_json(config: &DdpmConfig) -> Result<Value> {
    let (schedule, start, end) = match config.betas {
        BetasConfig::Linear { start, end } => ("linear", start, end),
        BetasConfig::Cosine { s, max_beta } if s == 0.008 && max_beta == 0.999 => ("squaredcos_cap_v2", 1e-4, 0.02),
        BetasConfig::Cosine { .. } => {
            return Err(Error::setting(
                "model.betas",
                "diffusers' cosine schedule has s = 0.008 and max_beta = 0.999 only",
            ))
        }
    };
    let prediction = match config.prediction {
        Prediction::Eps => "epsilon",
        Prediction::X0 => "sample",
        Prediction::Mean => {
            return Err(Error::setting("model.prediction", "diffusers' DDPMScheduler has no mean prediction"))
        }
    };
    Ok(json!({
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": config.time_steps,
        "beta_schedule": schedule,
        "beta_start": start,
        "beta_end": end,
        "trained_betas": null,
        "variance_type": match config.variance { Variance::Beta => "fixed_large", Variance::BetaTilde => "fixed_small" },
        "prediction_type": prediction,
        "clip_sample": config.clip_denoised,
        "clip_sample_range": 1.0,
        "thresholding": false,
        "timestep_spacing": "leading",
        "steps_offset": 0,
    }))
}

/// The DDPM process of a diffusers `DDPMScheduler` configuration, on the network `unet`,
/// refusing by name what this crate's DDPM does not have.
pub fn ddpm_config_from_scheduler(value: &Value, unet: UNetConfig) -> Result<DdpmConfig> {
    let field = |name: &str| value.get(name).unwrap_or(&Value::Null);
    let wrong = |name: &str, want: &str| {
        Error::setting(name, format!("{SCHEDULER_FILE}: {name} is {}; vdm-rs's DDPM needs {want}", field(name)))
    };
    let number = |name: &str| field(name).as_f64().ok_or_else(|| wrong(name, "a number"));
    if !field("trained_betas").is_null() {
        return Err(wrong("trained_betas", "null (a named beta_schedule)"));
    }
    if field("thresholding").as_bool() == Some(true) {
        return Err(wrong("thresholding", "false"));
    }
    let betas = match field("beta_schedule").as_str() {
        Some("linear") => BetasConfig::Linear { start: number("beta_start")?, end: number("beta_end")? },
        Some("squaredcos_cap_v2") => BetasConfig::Cosine { s: 0.008, max_beta: 0.999 },
        _ => return Err(wrong("beta_schedule", "linear or squaredcos_cap_v2")),
    };
    let variance = match field("variance_type").as_str() {
        Some("fixed_small") | None => Variance::BetaTilde,
        Some("fixed_large") => Variance::Beta,
        _ => return Err(wrong("variance_type", "fixed_small or fixed_large")),
    };
    let prediction = match field("prediction_type").as_str() {
        Some("epsilon") | None => Prediction::Eps,
        Some("sample") => Prediction::X0,
        _ => return Err(wrong("prediction_type", "epsilon or sample")),
    };
    let clip_denoised = field("clip_sample").as_bool().unwrap_or(true);
    if clip_denoised && field("clip_sample_range").as_f64().is_some_and(|r| r != 1.0) {
        return Err(wrong("clip_sample_range", "1.0"));
    }
    let time_steps = field("num_train_timesteps")
        .as_u64()
        .map(|t| t as usize)
        .ok_or_else(|| wrong("num_train_timesteps", "a whole number"))?;
    Ok(DdpmConfig { unet, betas, time_steps, prediction, variance, clip_denoised, ..DdpmConfig::default() })
}

/// The diffusers name of the parameter of [`UNet`] at `path` (in PyTorch's terms, from the root).
fn diffusers_name(path: &[&str]) -> Option<String> {
    let (param, module) = path.split_last()?;
    let resnet = |rest: &[&str]| -> Option<&'static str> {
        Some(match rest {
            ["norm1"] => "norm1",
            ["conv1"] => "conv1",
            ["cond_proj"] => "time_emb_proj",
            ["norm2"] => "norm2",
            ["conv2"] => "conv2",
            ["shortcut"] => "conv_shortcut",
            _ => return None,
        })
    };
    let attention = |rest: &[&str]| -> Option<&'static str> {
        Some(match rest {
            ["norm"] => "group_norm",
            ["q"] => "to_q",
            ["k"] => "to_k",
            ["v"] => "to_v",
            ["proj_out"] => "to_out.0",
            _ => return None,
        })
    };
    let name = match module {
        ["dense0"] => "time_embedding.linear_1".to_string(),
        ["dense1"] => "time_embedding.linear_2".to_string(),
        ["conv_in"] => "conv_in".to_string(),
        ["norm_out"] => "conv_norm_out".to_string(),
        ["conv_out"] => "conv_out".to_string(),
        ["mid1", rest @ ..] => format!("mid_block.resnets.0.{}", resnet(rest)?),
        ["mid_attn", rest @ ..] => format!("mid_block.attentions.0.{}", attention(rest)?),
        ["mid2", rest @ ..] => format!("mid_block.resnets.1.{}", resnet(rest)?),
        [way @ ("down" | "up"), level, "blocks", j, rest @ ..] => {
            format!("{way}_blocks.{level}.resnets.{j}.{}", resnet(rest)?)
        }
        [way @ ("down" | "up"), level, "attn", j, rest @ ..] => {
            format!("{way}_blocks.{level}.attentions.{j}.{}", attention(rest)?)
        }
        ["down", level, "resample"] => format!("down_blocks.{level}.downsamplers.0.conv"),
        ["up", level, "resample"] => format!("up_blocks.{level}.upsamplers.0.conv"),
        _ => return None,
    };
    Some(format!("{name}.{param}"))
}

/// diffusers' names of the U-Net's parameters.
const LAYOUT: Layout =
    Layout { weights_file: WEIGHTS_FILE, config_file: CONFIG_FILE, names: "diffusers", name: diffusers_name };

/// `unet`'s weights as a diffusers safetensors file (`f32`, PyTorch's layouts).
pub fn export_unet<B: Backend>(unet: &UNet<B>) -> Result<Vec<u8>> {
    named_tensors::export(unet, &LAYOUT)
}

/// `unet` (built from the file's configuration) with the weights of the diffusers safetensors
/// file `bytes`. Every tensor must be there with its shape and `f32`, and the file must hold no
/// other; an error names the first tensor that is not.
pub fn import_unet<B: Backend>(unet: UNet<B>, bytes: &[u8]) -> Result<UNet<B>> {
    named_tensors::import(unet, bytes, &LAYOUT)
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    use safetensors::SafeTensors;

    use super::*;

    /// Every parameter of a U-Net with all kinds of block has a distinct diffusers name.
    #[test]
    fn every_parameter_has_its_own_name() {
        let config = UNetConfig {
            ch: 8,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![4],
            groups: 4,
            ..UNetConfig::default()
        };
        let unet = config.init::<crate::Cpu>([1, 8, 8], &Default::default());
        let bytes = export_unet(&unet).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let names = file.names();
        struct Count(usize);
        impl<B: Backend> ModuleVisitor<B> for Count {
            fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<B, D>>) {
                self.0 += 1;
            }
        }
        let mut count = Count(0);
        unet.visit(&mut count);
        assert_eq!(names.len(), count.0, "one tensor per parameter");
        assert!(names.contains(&"up_blocks.0.attentions.1.to_out.0.weight"), "{names:?}");
        assert!(names.contains(&"down_blocks.0.downsamplers.0.conv.weight"), "{names:?}");
    }
}
