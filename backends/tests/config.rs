//! Run configuration files: what an omitted field means, and that a written configuration reads
//! back as itself.

use vdm_backends::config::{ModelConfig, RunConfig};
use vdm_backends::nn::ddpm_unet::UNetConfig;
use vdm_backends::schedule::ScheduleConfig;

/// A file holding only `[data]` is the default run that `vdm config` prints (it was VDM's
/// 32-layer CIFAR-10 network); `family = "ddpm"` alone is the default DDPM run.
#[test]
fn omitted_fields_take_the_printed_default_run() {
    let data = "[data]\nkind = \"digits\"\ntest_size = 297\n";
    assert_eq!(RunConfig::from_toml(data).unwrap(), RunConfig::digits());
    let ddpm = RunConfig::from_toml(&format!("{data}[model]\nfamily = \"ddpm\"\n")).unwrap();
    assert_eq!(ddpm, RunConfig::ddpm_digits());
    // One field changed in each of a few tables; all else stays the default run's.
    let run = RunConfig::from_toml(&format!("{data}[model.score]\nn_layer = 3\n[train]\nsteps = 7\n")).unwrap();
    let mut expected = RunConfig::digits();
    let ModelConfig::Vdm(vdm) = &mut expected.model else { unreachable!() };
    vdm.score.n_layer = 3;
    expected.train.steps = 7;
    assert_eq!(run, expected);
    // A table of another kind replaces the default's whole.
    let fixed = RunConfig::from_toml(&format!(
        "{data}[model.schedule]\nkind = \"fixed\"\ngamma_min = -10.0\ngamma_max = 4.0\n"
    ))
    .unwrap();
    let ModelConfig::Vdm(vdm) = fixed.model else { unreachable!() };
    assert_eq!(vdm.schedule, ScheduleConfig::Fixed { gamma_min: -10.0, gamma_max: 4.0 });
    let ModelConfig::Ddpm(ddpm) = ddpm.model else { unreachable!() };
    assert_eq!(ddpm.unet, UNetConfig::digits());
}

/// What `vdm train` writes as a run's config.toml reads back as the same run, also with gradient
/// clipping off (`clip_grad_norm = false`: TOML has no null, and absent means the default's 1.0).
#[test]
fn a_written_configuration_reads_back_as_itself() {
    for clip in [Some(0.5), None] {
        let mut run = RunConfig::ddpm_digits();
        run.train.clip_grad_norm = clip;
        let text = toml::to_string_pretty(&run).unwrap();
        assert_eq!(RunConfig::from_toml(&text).unwrap(), run, "{text}");
    }
    let data = "[data]\nkind = \"digits\"\ntest_size = 297\n";
    let off = RunConfig::from_toml(&format!("{data}[train]\nclip_grad_norm = false\n")).unwrap();
    assert_eq!(off.train.clip_grad_norm, None);
    for bad in ["true", "\"big\"", "0.0", "-1.0"] {
        let err = RunConfig::from_toml(&format!("{data}[train]\nclip_grad_norm = {bad}\n")).unwrap_err().to_string();
        assert!(err.contains("train.clip_grad_norm"), "{bad}: {err}");
    }
    // Checkpoints written before `false` hold JSON null.
    let mut json = serde_json::to_value(RunConfig::digits()).unwrap();
    json["train"]["clip_grad_norm"] = serde_json::Value::Null;
    assert_eq!(serde_json::from_value::<RunConfig>(json).unwrap().train.clip_grad_norm, None);
}
