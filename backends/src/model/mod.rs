//! Diffusion models: VDM (the only family so far).

mod vdm;

pub use vdm::*;
