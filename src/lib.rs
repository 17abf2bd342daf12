//! vdm-rs: Variational Diffusion Models and DDPM with exact likelihoods.
//!
//! This umbrella crate re-exports the backend-free math ([`core`], the `vdm-core` crate) and
//! the burn backends ([`backends`], the `vdm-backends` crate).
pub use vdm_backends as backends;
pub use vdm_core as core;
