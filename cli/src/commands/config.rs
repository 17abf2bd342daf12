//! `vdm config`: a documented run configuration to start from.

use vdm_backends::config::{RunConfig, DATA_EXAMPLES};
use vdm_backends::config::{DDPM_EXAMPLES, WEIGHTING_EXAMPLES};
use vdm_backends::schedule::SCHEDULE_EXAMPLES;

/// The family of the configuration `vdm config` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FamilyKind {
    /// The default run: a small VDM on the bundled digits.
    Vdm,
    /// A DDPM (DDPM's process, `L_simple`, a small U-Net) on the bundled digits.
    Ddpm,
}

/// A run configuration of `family` on the bundled digits (the VDM one is what `vdm train` trains
/// without `--config`), followed by every other data source (and, for VDM, schedule), commented out.
pub fn text(family: FamilyKind) -> Result<String, String> {
    let (run, header, examples) = match family {
        FamilyKind::Vdm => (RunConfig::digits(), "the default run (a small VDM on the bundled 8x8 digits).\n# [model]: prediction = \"eps\" | \"x\" | \"v\" (v = alpha eps - sigma x): what the network's output estimates;\n# the loss is taken on the eps_hat it implies, so it has the same units whichever is predicted", vec![("noise schedules", "[model.schedule]", SCHEDULE_EXAMPLES), ("loss weightings", "[model.weighting]", WEIGHTING_EXAMPLES)]),
        FamilyKind::Ddpm => (RunConfig::ddpm_digits(), "a DDPM on the bundled 8x8 digits.\n# [model]: prediction = \"eps\" | \"x0\" | \"mean\"; variance = \"beta\" | \"beta_tilde\";\n# loss = \"simple\" | \"vlb\" | \"hybrid\" (L_simple + hybrid_lambda * L_vlb);\n# clip_denoised clips x0-hat to [-1, 1] in sampling and the bound, as DDPM's code does (a \"mean\" network's\n# output stays its mean); l0_cdf = \"exact\" | \"tanh\": the normal CDF of L_0 (tanh: DDPM's code, for its published numbers)", vec![("β schedules", "[model.betas]", DDPM_EXAMPLES)]),
    };
    let defaults = toml::to_string_pretty(&run).map_err(|e| e.to_string())?;
    let mut out = format!(
        "# vdm run configuration: {header}.\n\
         # Train with `vdm train --config FILE --run DIR`. Every field is optional except [data]: one left out\n\
         # takes the value printed here (a DDPM's, that of `vdm config --family ddpm`). clip_grad_norm = false: no clipping.\n\n",
    );
    out.push_str(&defaults);
    for (what, table, examples) in [("data sources", "[data]", DATA_EXAMPLES)].into_iter().chain(examples) {
        out.push_str(&format!("\n# Other {what}: replace the {table} table above with one of these.\n"));
        for example in examples {
            out.push('\n');
            for line in example.trim().lines() {
                out.push_str(if line.starts_with('#') { "" } else { "# " });
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

pub fn print(family: FamilyKind) -> Result<(), String> {
    print!("{}", text(family)?);
    Ok(())
}
