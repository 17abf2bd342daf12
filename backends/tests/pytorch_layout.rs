//! A VDM in PyTorch's layout: a small `ScoreNet` of `scripts/pytorch_reference.py` with random
//! weights, made and run by PyTorch (`scripts/vdm_pytorch_reference.py`, committed in
//! `tests/data/vdm-pytorch-small`), imported here gives PyTorch's output on the same inputs; the
//! export gives back PyTorch's tensors bit for bit; a model with the monotone-network schedule
//! goes out and back unchanged; files that do not fit are refused by name.

mod common;

use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;
use serde_json::Value;
use vdm_backends::config::VdmConfig;
use vdm_backends::model::Vdm;
use vdm_backends::pytorch_layout::{config_from_json, config_json, export_vdm, import_vdm};
use vdm_backends::schedule::ScheduleConfig;
use vdm_backends::Cpu;

use common::{assert_matches_reference, assert_same_tensors, floats};

fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "data", "vdm-pytorch-small", name].iter().collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config() -> Value {
    serde_json::from_slice(&fixture("config.json")).unwrap()
}

fn fresh(config: &VdmConfig, channels: usize) -> Vdm<Cpu> {
    config.build(channels, &Default::default())
}

/// VDM's monotone-network schedule, 16 wide, initialised from `seed`.
fn net_schedule(seed: u64) -> ScheduleConfig {
    ScheduleConfig::Net {
        gamma_min: -13.3,
        gamma_max: 5.0,
        width: 16,
        seed,
        shape_objective: Default::default(),
        learn_endpoints: true,
    }
}

fn imported() -> Vdm<Cpu> {
    let (config, shape) = config_from_json(&config()).unwrap();
    import_vdm(fresh(&config, shape[0]), &fixture("model.safetensors")).unwrap()
}

/// The imported score network's output equals PyTorch's at γ = −13.3, −5, 0, 5 to 1e-5 of the
/// largest value (f32).
#[test]
fn the_imported_network_computes_what_pytorch_computes() {
    let reference = fixture("reference.safetensors");
    let reference = SafeTensors::deserialize(&reference).unwrap();
    let device = Default::default();
    let (z, shape) = floats(&reference, "z");
    let (gamma, _) = floats(&reference, "gamma");
    let (want, _) = floats(&reference, "out");
    let z = Tensor::<Cpu, 4>::from_data(TensorData::new(z, [shape[0], shape[1], shape[2], shape[3]]), &device);
    let gamma = Tensor::<Cpu, 1>::from_data(TensorData::new(gamma.clone(), [gamma.len()]), &device);
    let got: Vec<f32> = imported().score.forward(z, gamma).into_data().iter::<f32>().collect();
    assert_matches_reference(&got, &want);
}

/// Export gives back PyTorch's tensors bit for bit (names, `[out, in]` linear weights), and
/// config.json reads back as the same model.
#[test]
fn export_after_import_is_bit_identical() {
    assert_same_tensors(&fixture("model.safetensors"), &export_vdm(&imported()).unwrap());
    let (config, shape) = config_from_json(&config()).unwrap();
    assert_eq!(config_from_json(&config_json(&config, shape)).unwrap(), (config, shape));
}

/// A model with VDM's monotone-network schedule (six parameters under `schedule.`) and 3
/// channels goes out and back unchanged.
#[test]
fn the_net_schedule_goes_out_and_back() {
    let config = |seed| VdmConfig { schedule: net_schedule(seed), ..VdmConfig::digits() };
    let model = fresh(&config(0), 3);
    let bytes = export_vdm(&model).unwrap();
    let names = SafeTensors::deserialize(&bytes).unwrap().names().into_iter().map(String::from).collect::<Vec<_>>();
    assert!(names.iter().any(|n| n == "schedule.l1_w"), "{names:?}");
    assert!(names.iter().any(|n| n == "score.up.0.shortcut.weight"), "{names:?}");
    // Into a model initialised with other weights: every value must come from the file.
    let other = fresh(&config(1), 3);
    assert_same_tensors(&bytes, &export_vdm(&import_vdm(other, &bytes).unwrap()).unwrap());
}

/// Files that do not fit are refused with the field or the tensor named.
#[test]
fn files_that_do_not_fit_are_refused_by_name() {
    for (field, value) in [
        ("format", Value::from("diffusers")),
        ("format_version", Value::from(2)),
        ("image_shape", Value::from(vec![1, 8])),
    ] {
        let mut changed = config();
        changed[field] = value;
        let err = config_from_json(&changed).unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
    let mut changed = config();
    changed["model"]["score"]["n_embd"] = Value::from(3);
    let err = config_from_json(&changed).unwrap_err().to_string();
    assert!(err.contains("n_embd"), "{err}");

    let (config, shape) = config_from_json(&config()).unwrap();
    let weights = fixture("model.safetensors");
    let file = SafeTensors::deserialize(&weights).unwrap();
    let without = |skip: &str| {
        let tensors: Vec<_> = file.tensors().into_iter().filter(|(n, _)| n != skip).collect();
        safetensors::serialize(tensors, None).unwrap()
    };
    let err = import_vdm(fresh(&config, shape[0]), &without("score.mid_attn.k.weight")).unwrap_err().to_string();
    assert!(err.contains("score.mid_attn.k.weight"), "{err}");
    // A model with the monotone-network schedule needs its parameters; the file has b and w only.
    let net = VdmConfig { schedule: net_schedule(0), ..config };
    let err = import_vdm(fresh(&net, shape[0]), &weights).unwrap_err().to_string();
    assert!(err.contains("schedule.l"), "{err}");
}
