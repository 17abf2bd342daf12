//! `vdm config`: a documented run configuration to start from.

use vdm_backends::config::{RunConfig, DATA_EXAMPLES};
use vdm_backends::schedule::SCHEDULE_EXAMPLES;

/// The default run configuration (what `vdm train` trains without `--config`), followed by every
/// other data source, commented out.
pub fn text() -> Result<String, String> {
    let defaults = toml::to_string_pretty(&RunConfig::digits()).map_err(|e| e.to_string())?;
    let mut out = String::from(
        "# vdm run configuration: the default run (a small VDM on the bundled 8x8 digits).\n\
         # Train with `vdm train --config FILE --run DIR`. Every field is optional except [data].\n\n",
    );
    out.push_str(&defaults);
    for (what, table, examples) in [("data sources", "[data]", DATA_EXAMPLES), ("noise schedules", "[model.schedule]", SCHEDULE_EXAMPLES)] {
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

pub fn print() -> Result<(), String> {
    print!("{}", text()?);
    Ok(())
}
