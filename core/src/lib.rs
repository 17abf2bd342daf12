//! # vdm-core
//!
//! The mathematics of diffusion models with exact likelihoods — Variational Diffusion Models
//! (Kingma, Salimans, Poole & Ho 2021; "VDM") and Denoising Diffusion Probabilistic Models
//! (Ho, Jain & Abbeel 2020; "DDPM") — written once, generically over a [`BatchTensor`], and
//! `#![no_std]`.
//!
//! | module | contents |
//! |---|---|
//! | [`schedule`] | noise schedules `γ(t) = −log SNR(t)` with analytic `γ'(t)` |
//! | [`ddpm`] | β schedules and their `γ` form, `L_simple`, the discretised Gaussian decoder |
//! | [`process`] | `α`, `σ`, SNR; forward sample; posterior `q(z_s|z_t,x)`; VDM, DDPM and DDIM steps |
//! | [`solver`] | DPM-Solver++ multistep updates of the probability-flow ODE in log-SNR |
//! | [`vlb`] | prior KL, reconstruction, discrete and continuous diffusion losses, bits per dim |
//! | [`weighting`] | weightings `w(λ)` of the diffusion loss: ELBO, `L_simple`, sigmoid, EDM |
//! | [`time`] | antithetic time sampling, discretisation onto `T` steps |
//! | [`analytic`] | closed-form optimal denoiser and expected VLB for Gaussian data |
//! | [`bits_back`] | `Φ`, `Φ⁻¹`, and the prior-equal-mass bins of bits-back coding |
//! | [`tensor`] | the [`BatchTensor`] trait and its reference implementations (`f32`, `f64`, [`Batch`]) |
//!
//! Conventions: `α_t² = sigmoid(−γ_t)`, `σ_t² = sigmoid(γ_t)`, so `α² + σ² = 1` exactly in
//! exact arithmetic and to rounding in floating point; every quantity is computed in a form
//! (`expm1`, `log1p`, `softplus`, log-sigmoid) that stays finite for all finite `γ`.
//! Losses are per example, in nats, summed over features.
//!
//! ```
//! use vdm_core::{schedule::{FixedLinear, NoiseSchedule}, process, vlb, Batch};
//!
//! let schedule = FixedLinear::<f64>::default();            // γ from −13.3 to 5
//! let x = Batch::new(vec![0.2, -0.5, 0.9, 0.1], 2);        // two examples, two features
//! let eps = Batch::new(vec![0.3, -1.2, 0.5, 0.0], 2);
//! let gamma = Batch::per_example(vec![schedule.gamma(0.25), schedule.gamma(0.75)]);
//! let z = process::diffuse(x.clone(), eps.clone(), gamma.clone());
//! let prior = vlb::prior_kl(x, Batch::per_example(vec![schedule.gamma_1(); 2]));
//! assert_eq!(prior.rows(), 2);
//! ```

#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod analytic;
pub mod bits_back;
pub mod ddpm;
pub mod process;
pub mod real;
pub mod rng;
pub mod schedule;
pub mod solver;
pub mod tensor;
pub mod time;
pub mod vlb;
pub mod weighting;

pub use real::Real;
pub use tensor::{Batch, BatchTensor};
