//! DDPM's U-Net in diffusers' layout: a `UNet2DModel` made and run by diffusers 0.42
//! (`scripts/diffusers_reference.py --size small`, committed in `tests/data/diffusers-small`)
//! imported here gives diffusers' output on the same inputs, its scheduler's `β`, `ᾱ` and posterior
//! variances are vdm-core's, the export gives back diffusers' tensors bit for bit, and files
//! that do not fit are refused by name.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;
use serde_json::Value;
use vdm_backends::diffusers::{export_unet, import_unet, unet_config_from_json, unet_config_json};
use vdm_backends::nn::ddpm_unet::UNet;
use vdm_backends::Cpu;
use vdm_core::ddpm::{BetaSchedule, DiscreteSchedule};
use vdm_core::process::posterior;

use common::{assert_matches_reference, assert_same_tensors, floats};

/// The committed small model.
fn small() -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "tests", "data", "diffusers-small"].iter().collect()
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

fn fixture(name: &str) -> Vec<u8> {
    read(&small(), name)
}

fn config() -> Value {
    serde_json::from_slice(&fixture("config.json")).unwrap()
}

fn imported(dir: &Path) -> UNet<Cpu> {
    let config: Value = serde_json::from_slice(&read(dir, "config.json")).unwrap();
    let (unet, shape) = unet_config_from_json(&config).unwrap();
    import_unet(unet.init::<Cpu>(shape, &Default::default()), &read(dir, "diffusion_pytorch_model.safetensors"))
        .unwrap()
}

/// The imported network's output equals diffusers' at t = 0, 10, 500, 999 to 1e-5 of the largest
/// value (f32; measured 7.2e-7 of 0.97).
#[test]
fn the_imported_network_computes_what_diffusers_computes() {
    compare_outputs(&small());
}

/// The same for google/ddpm-cifar10-32's configuration (35.7M parameters, random weights), made
/// by `python3 scripts/diffusers_reference.py --size cifar --out DIR` (143 MB, not committed):
/// `VDM_DIFFUSERS_CIFAR=DIR cargo test --release -p vdm-backends --test diffusers -- --ignored`.
#[test]
#[ignore = "needs the CIFAR-10 model made by scripts/diffusers_reference.py (VDM_DIFFUSERS_CIFAR)"]
fn the_cifar10_network_computes_what_diffusers_computes() {
    let dir =
        std::env::var("VDM_DIFFUSERS_CIFAR").expect("VDM_DIFFUSERS_CIFAR=DIR from scripts/diffusers_reference.py");
    compare_outputs(Path::new(&dir));
}

fn compare_outputs(dir: &Path) {
    let reference = read(dir, "reference.safetensors");
    let reference = SafeTensors::deserialize(&reference).unwrap();
    let device = Default::default();
    let (x, shape) = floats(&reference, "x");
    let (t, _) = floats(&reference, "t");
    let (want, _) = floats(&reference, "out");
    let x = Tensor::<Cpu, 4>::from_data(TensorData::new(x, [shape[0], shape[1], shape[2], shape[3]]), &device);
    let t = Tensor::<Cpu, 1>::from_data(TensorData::new(t.clone(), [t.len()]), &device);
    let got: Vec<f32> = imported(dir).forward(x, t).into_data().iter::<f32>().collect();
    assert_matches_reference(&got, &want);
}

/// diffusers' linear-β DDPMScheduler has vdm-core's `β_t`, `ᾱ_t` and posterior variance
/// `β̃_t = σ_s² (1 − e^{γ_s − γ_t})`, to diffusers' f32 rounding. diffusers computes
/// `β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_{t−1})` from its f32 `ᾱ`, so the relative error `r`
/// of each `ᾱ` comes back magnified by `ᾱ/(1 − ᾱ)` and by `1/β_t` (up to 4e-4 relative at the first
/// steps); the tolerance propagates diffusers' own `r`, measured against vdm-core's `ᾱ`.
#[test]
fn the_scheduler_is_vdm_cores() {
    let reference = fixture("reference.safetensors");
    let reference = SafeTensors::deserialize(&reference).unwrap();
    let schedule = DiscreteSchedule::new(BetaSchedule::DDPM_LINEAR, 1000);
    let within = |what: &str, got: f32, want: f64, relative: f64| {
        assert!((f64::from(got) - want).abs() <= relative * want.abs(), "{what}: diffusers {got}, vdm-core {want}");
    };
    let close = |what: &str, got: f32, want: f64| within(what, got, want, 2e-6);
    let (betas, _) = floats(&reference, "betas");
    let (alpha_bars, _) = floats(&reference, "alphas_cumprod");
    let (variances, _) = floats(&reference, "posterior_variance");
    for i in 1..=1000 {
        close(&format!("β_{i}"), betas[i - 1], schedule.beta(i));
        close(&format!("ᾱ_{i}"), alpha_bars[i - 1], schedule.alpha_bar(i));
    }
    // diffusers' timestep t (0-based) is latent t + 1; its variance at t has s = t − 1.
    let mut worst = (0.0f64, 0);
    for t in 1..1000 {
        let (s, t_) = (schedule.gamma_at(t), schedule.gamma_at(t + 1));
        let want = posterior(0.0, 0.0, s, t_).variance;
        let relative = (f64::from(variances[t - 1]) / want - 1.0).abs();
        if relative > worst.0 {
            worst = (relative, t);
        }
        let eps = f64::from(f32::EPSILON);
        let r = |i: usize| (f64::from(alpha_bars[i - 1]) / schedule.alpha_bar(i) - 1.0).abs() + eps;
        let magnified = |i: usize| r(i) * schedule.alpha_bar(i) / (1.0 - schedule.alpha_bar(i));
        let f32_rounding = 4.0 * eps + magnified(t) + magnified(t + 1) + (r(t) + r(t + 1)) / schedule.beta(t + 1);
        within(&format!("β̃ at timestep {t}"), variances[t - 1], want, f32_rounding);
    }
    eprintln!("largest relative difference of β̃: {:.2e} at timestep {}", worst.0, worst.1);
}

/// Export gives back diffusers' tensors bit for bit, and its config.json reads back as the same
/// network.
#[test]
fn export_after_import_is_bit_identical() {
    assert_same_tensors(&fixture("diffusion_pytorch_model.safetensors"), &export_unet(&imported(&small())).unwrap());
    let (unet, shape) = unet_config_from_json(&config()).unwrap();
    assert_eq!(unet_config_from_json(&unet_config_json(&unet, shape)).unwrap(), (unet, shape));
}

/// Files that do not fit are refused with the setting or the tensor named.
#[test]
fn files_that_do_not_fit_are_refused_by_name() {
    let mut flipped = config();
    flipped["flip_sin_to_cos"] = Value::Bool(true);
    let err = unet_config_from_json(&flipped).unwrap_err().to_string();
    assert!(err.contains("flip_sin_to_cos"), "{err}");
    let mut heads = config();
    heads["attention_head_dim"] = Value::from(4);
    let err = unet_config_from_json(&heads).unwrap_err().to_string();
    assert!(err.contains("attention_head_dim"), "{err}");

    let (unet, shape) = unet_config_from_json(&config()).unwrap();
    let fresh = || unet.init::<Cpu>(shape, &Default::default());
    let weights = fixture("diffusion_pytorch_model.safetensors");
    let file = SafeTensors::deserialize(&weights).unwrap();
    let rewritten = |skip: &str, extra: Option<&str>| {
        let mut tensors: Vec<(String, safetensors::tensor::TensorView)> =
            file.tensors().into_iter().filter(|(n, _)| n != skip).collect();
        if let Some(extra) = extra {
            tensors.push((extra.to_string(), file.tensor("conv_out.bias").unwrap()));
        }
        safetensors::serialize(tensors, None).unwrap()
    };
    let err = import_unet(fresh(), &rewritten("mid_block.attentions.0.to_k.weight", None)).unwrap_err().to_string();
    assert!(err.contains("mid_block.attentions.0.to_k.weight"), "{err}");
    let err = import_unet(fresh(), &rewritten("", Some("extra.bias"))).unwrap_err().to_string();
    assert!(err.contains("extra.bias"), "{err}");
    // A network with other sizes than the file's.
    let wider = vdm_backends::nn::ddpm_unet::UNetConfig { ch: 12, ..unet.clone() };
    let err = import_unet(wider.init::<Cpu>(shape, &Default::default()), &weights).unwrap_err().to_string();
    assert!(err.contains("time_embedding.linear_1.weight") && err.contains("shape"), "{err}");
    let err = import_unet(fresh(), b"not a safetensors file").unwrap_err().to_string();
    assert!(err.contains("safetensors"), "{err}");
}
