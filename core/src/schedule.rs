//! Noise schedules in VDM's convention `γ(t) = -log SNR(t)`, `t ∈ [0, 1]`.
//!
//! A schedule is a monotonically increasing `γ`: `σ_t² = sigmoid(γ(t))`, `α_t² = sigmoid(-γ(t))`
//! (VDM eq. 3–4, variance preserving). Every schedule gives `γ(t)` **and** `γ'(t)` in closed
//! form: the continuous-time diffusion loss (VDM eq. 17) weights the denoising error by `γ'(t)`.
//!
//! The continuous-time VLB depends on the schedule only through its endpoints `γ(0)`, `γ(1)`
//! (VDM eq. 19–20); the schedule shapes the *variance* of its Monte-Carlo estimate.

use alloc::vec::Vec;

use crate::real::Real;
use crate::rng::SplitMix64;

/// A noise schedule `γ: [0, 1] → ℝ`, increasing in `t`.
pub trait NoiseSchedule<F: Real> {
    /// `γ(t) = -log SNR(t)`.
    fn gamma(&self, t: F) -> F;
    /// `dγ/dt` at `t`, analytic.
    fn gamma_prime(&self, t: F) -> F;
    /// `γ(0)`, the least noisy latent `z_0`.
    fn gamma_0(&self) -> F {
        self.gamma(F::zero())
    }
    /// `γ(1)`, the noisiest latent `z_1`.
    fn gamma_1(&self) -> F {
        self.gamma(F::one())
    }
}

/// VDM's fixed linear schedule `γ(t) = γ_min + (γ_max - γ_min) t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedLinear<F> {
    /// `γ(0)`; VDM default −13.3.
    pub gamma_min: F,
    /// `γ(1)`; VDM default 5.0.
    pub gamma_max: F,
}

impl<F: Real> FixedLinear<F> {
    /// The schedule with endpoints `γ(0) = gamma_min`, `γ(1) = gamma_max`.
    pub fn new(gamma_min: F, gamma_max: F) -> Self {
        Self { gamma_min, gamma_max }
    }
}

impl<F: Real> Default for FixedLinear<F> {
    /// VDM's defaults: `γ_min = −13.3`, `γ_max = 5.0`.
    fn default() -> Self {
        Self::new(F::of(-13.3), F::of(5.0))
    }
}

impl<F: Real> NoiseSchedule<F> for FixedLinear<F> {
    fn gamma(&self, t: F) -> F {
        self.gamma_min + (self.gamma_max - self.gamma_min) * t
    }
    fn gamma_prime(&self, _t: F) -> F {
        self.gamma_max - self.gamma_min
    }
}

/// VDM's learnable scalar schedule `γ(t) = b + |w| t` (monotone for every `w`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearnedScalar<F> {
    /// Intercept `b = γ(0)`; VDM initialises it to `γ_min`.
    pub b: F,
    /// Slope parameter; VDM initialises it to `γ_max − γ_min`.
    pub w: F,
}

impl<F: Real> LearnedScalar<F> {
    /// VDM's initialisation: equal to [`FixedLinear`] with the same endpoints.
    pub fn init(gamma_min: F, gamma_max: F) -> Self {
        Self { b: gamma_min, w: gamma_max - gamma_min }
    }
}

impl<F: Real> NoiseSchedule<F> for LearnedScalar<F> {
    fn gamma(&self, t: F) -> F {
        self.b + self.w.abs() * t
    }
    fn gamma_prime(&self, _t: F) -> F {
        self.w.abs()
    }
}

/// Nichol & Dhariwal's cosine schedule in continuous time and `γ` form, stretched onto given endpoints.
///
/// `ᾱ(θ) = cos²θ / cos²θ₀` with `θ₀ = (s/(1+s)) π/2` (their eq. 17 with `θ = ((τ + s)/(1 + s)) π/2`), so
///
/// `γ(θ) = ln(1 − ᾱ) − ln ᾱ = ln(sin(θ − θ₀) sin(θ + θ₀)) − 2 ln cos θ`,
///
/// using `cos²θ₀ − cos²θ = sin(θ − θ₀) sin(θ + θ₀)` so nothing cancels near `θ₀`. `t ∈ [0, 1]` maps
/// linearly onto `[θ(γ₀), θ(γ₁)]`, and `γ'(t) = (θ_end − θ_start) (cot(θ − θ₀) + cot(θ + θ₀) + 2 tan θ)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cosine<F> {
    theta_0: F,
    theta_start: F,
    theta_end: F,
}

impl<F: Real> Cosine<F> {
    /// The cosine schedule with offset `s` (0.008 in the paper) running from `γ(0) = gamma_0`
    /// to `γ(1) = gamma_1`.
    pub fn new(gamma_0: F, gamma_1: F, s: F) -> Self {
        assert!(gamma_0 < gamma_1, "Cosine::new: need gamma_0 < gamma_1");
        let theta_0 = s / (F::one() + s) * F::FRAC_PI_2();
        // Invert γ: ᾱ = sigmoid(−γ) = cos²θ / cos²θ₀.
        let theta_of = |gamma: F| ((-gamma).sigmoid().sqrt() * theta_0.cos()).acos();
        Self { theta_0, theta_start: theta_of(gamma_0), theta_end: theta_of(gamma_1) }
    }

    fn theta(&self, t: F) -> F {
        self.theta_start + (self.theta_end - self.theta_start) * t
    }
}

impl<F: Real> NoiseSchedule<F> for Cosine<F> {
    fn gamma(&self, t: F) -> F {
        let th = self.theta(t);
        ((th - self.theta_0).sin() * (th + self.theta_0).sin()).ln() - F::of(2.0) * th.cos().ln()
    }
    fn gamma_prime(&self, t: F) -> F {
        let th = self.theta(t);
        let d_theta = (th - self.theta_0).tan().recip() + (th + self.theta_0).tan().recip() + F::of(2.0) * th.tan();
        (self.theta_end - self.theta_start) * d_theta
    }
}

/// The standard deviation of the initial `l₂`, `l₃` weights of [`MonotoneNet`] (flax's `normal()`).
pub const INIT_STD: f64 = 0.01;

/// VDM's monotone neural-network schedule (VDM Appendix H.2, `NoiseSchedule_NNet`):
///
/// `γ̃(t) = l₁(t) + l₃(φ(l₂(2(t − ½)))) / n`, with `φ(h) = 2(σ(h) − ½)`,
///
/// where every dense layer uses `|W|` so that `γ̃` increases in `t`, `l₂` has width `n` and
/// `l₃` has no bias. With [`MonotoneNet::endpoints`] set, the output is mapped affinely onto
/// them, `γ(t) = γ₀ + (γ₁ − γ₀)(γ̃(t) − γ̃(0))/(γ̃(1) − γ̃(0))`, as in the paper's appendix.
#[derive(Clone, Debug, PartialEq)]
pub struct MonotoneNet<F> {
    /// `l₁` weight (used as `|w|`).
    pub l1_w: F,
    /// `l₁` bias.
    pub l1_b: F,
    /// `l₂` weights (used as `|w|`), one per hidden unit.
    pub l2_w: Vec<F>,
    /// `l₂` biases.
    pub l2_b: Vec<F>,
    /// `l₃` weights (used as `|w|`), one per hidden unit.
    pub l3_w: Vec<F>,
    /// Optional `(γ₀, γ₁)` onto which the network output is normalised.
    pub endpoints: Option<(F, F)>,
}

impl<F: Real> MonotoneNet<F> {
    /// VDM's initialisation (`NoiseSchedule_NNet` in its code): `l₁` weight `γ_max − γ_min`,
    /// bias `γ_min`; `l₂`, `l₃` weights from flax's default `normal()` initialiser, `N(0, 0.01²)`
    /// (drawn from `seed`); `l₂` biases zero. The nonlinear part then adds only about `|w₂||w₃|/2 ~ 10⁻⁴`
    /// to `γ`: the schedule starts almost exactly linear.
    pub fn init(width: usize, gamma_min: F, gamma_max: F, seed: u64) -> Self {
        assert!(width > 0, "MonotoneNet::init: width must be positive");
        let mut rng = SplitMix64::new(seed);
        let mut weights = || (0..width).map(|_| F::of(INIT_STD) * rng.normal()).collect::<Vec<F>>();
        let l2_w = weights();
        let l3_w = weights();
        Self {
            l1_w: gamma_max - gamma_min,
            l1_b: gamma_min,
            l2_w,
            l2_b: alloc::vec![F::zero(); width],
            l3_w,
            endpoints: None,
        }
    }

    /// A shape to be normalised onto endpoints ([`MonotoneNet::with_endpoints`]): `l₁` weight 1,
    /// bias 0; hidden unit `k` a sigmoid step of slope `|w₂| ~ |N(0, 3²)|` centred at
    /// `t = (k + ½)/n` (`b₂ = −|w₂|(2c_k − 1)`); `l₃` weights `N(0, 0.01²)`.
    ///
    /// The shape starts within ~10⁻³ of linear, like [`MonotoneNet::init`]'s, but its gradient
    /// does not vanish. Normalisation removes every part of `γ̃` that is linear in `t`, so with
    /// VDM's `N(0, 0.01²)` for `l₂` too (sigmoids linear to ~10⁻⁵ over `t ∈ [0, 1]`) the shape's
    /// gradient is ~10⁻¹¹, below Adam's `ε`, and the shape never moves: measured, 1500 steps of
    /// the digits run left `γ'` constant to four digits.
    pub fn init_shape(width: usize, seed: u64) -> Self {
        assert!(width > 0, "MonotoneNet::init_shape: width must be positive");
        let mut rng = SplitMix64::new(seed);
        let l2_w: Vec<F> = (0..width).map(|_| F::of(3.0) * rng.normal()).collect();
        let l2_b = l2_w
            .iter()
            .enumerate()
            .map(|(k, w)| -w.abs() * F::of(2.0 * (k as f64 + 0.5) / width as f64 - 1.0))
            .collect();
        let l3_w = (0..width).map(|_| F::of(INIT_STD) * rng.normal()).collect();
        Self { l1_w: F::one(), l1_b: F::zero(), l2_w, l2_b, l3_w, endpoints: None }
    }

    /// The same network normalised onto `(γ₀, γ₁)`.
    pub fn with_endpoints(mut self, gamma_0: F, gamma_1: F) -> Self {
        self.endpoints = Some((gamma_0, gamma_1));
        self
    }

    /// Hidden width `n`.
    pub fn width(&self) -> usize {
        self.l2_w.len()
    }

    /// The unnormalised output `γ̃(t)` and its derivative `γ̃'(t)`.
    pub fn raw(&self, t: F) -> (F, F) {
        let two = F::of(2.0);
        let n = F::of(self.width() as f64);
        let u = two * (t - F::of(0.5));
        let (mut h, mut dh) = (F::zero(), F::zero());
        for ((&w2, &b2), &w3) in self.l2_w.iter().zip(&self.l2_b).zip(&self.l3_w) {
            let s = (w2.abs() * u + b2).sigmoid();
            h = h + w3.abs() * two * (s - F::of(0.5));
            // d/dt [2(σ(|w₂|·2(t−½) + b₂) − ½)] = 2 σ(1−σ) · 2|w₂|
            dh = dh + w3.abs() * two * s * (F::one() - s) * two * w2.abs();
        }
        (self.l1_b + self.l1_w.abs() * t + h / n, self.l1_w.abs() + dh / n)
    }
}

impl<F: Real> NoiseSchedule<F> for MonotoneNet<F> {
    fn gamma(&self, t: F) -> F {
        let (g, _) = self.raw(t);
        match self.endpoints {
            None => g,
            Some((g0, g1)) => {
                let (r0, r1) = (self.raw(F::zero()).0, self.raw(F::one()).0);
                g0 + (g1 - g0) * (g - r0) / (r1 - r0)
            }
        }
    }
    fn gamma_prime(&self, t: F) -> F {
        let (_, dg) = self.raw(t);
        match self.endpoints {
            None => dg,
            Some((g0, g1)) => {
                let (r0, r1) = (self.raw(F::zero()).0, self.raw(F::one()).0);
                (g1 - g0) * dg / (r1 - r0)
            }
        }
    }
}
