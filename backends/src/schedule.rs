//! Learnable noise schedules as burn modules (VDM §5.1 and Appendix H.2).
//!
//! Each computes `γ(t)` and `γ'(t)` in closed form on a `[N]` tensor of times, so gradients of
//! the VLB reach the schedule's parameters (in particular its endpoints `γ(0)`, `γ(1)`, through
//! the reconstruction and prior terms) without higher-order autodiff. The values agree with
//! [`vdm_core::schedule`]'s scalar versions (tested).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vdm_core::schedule::{LearnedScalar, MonotoneNet, NoiseSchedule};

use crate::error::{Error, Result};
use crate::tensor::softplus;
use crate::transfer::{download_values, upload};

/// The largest accepted hidden width of the monotone network (VDM uses 1024).
pub const MAX_NET_WIDTH: usize = 1 << 16;

/// Which schedule a model uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// `γ(t) = γ_min + (γ_max − γ_min) t`, not trained.
    Fixed {
        /// `γ(0)`.
        gamma_min: f64,
        /// `γ(1)`.
        gamma_max: f64,
    },
    /// `γ(t) = b + |w| t`, initialised to the fixed schedule and trained.
    Scalar {
        /// Initial `γ(0)`.
        gamma_min: f64,
        /// Initial `γ(1)`.
        gamma_max: f64,
    },
    /// Learned endpoints `γ₀`, `γ₁` and a learned shape between them: VDM's monotone network of
    /// hidden width `width` (1024 in VDM) normalised onto the endpoints (VDM Appendix H.2),
    /// `γ(t) = γ₀ + (γ₁ − γ₀)(γ̃(t) − γ̃(0))/(γ̃(1) − γ̃(0))`.
    Net {
        /// Initial `γ(0)`.
        gamma_min: f64,
        /// Initial `γ(1)`.
        gamma_max: f64,
        /// Hidden width.
        width: usize,
        /// Seed of the `N(0, 0.01²)` initialisation of `l₂`, `l₃`.
        seed: u64,
        /// What trains the shape `γ̃` (the endpoints, when learned, follow the VLB).
        #[serde(default)]
        shape_objective: ShapeObjective,
        /// Whether `γ₀`, `γ₁` are trained (the default) or stay at `gamma_min`, `gamma_max`,
        /// so that only the shape, and with it only the estimator's variance, is learned.
        #[serde(default = "learned")]
        learn_endpoints: bool,
    },
}

/// Every schedule kind as a documented `[model.schedule]` table (`vdm config` prints them).
pub const SCHEDULE_EXAMPLES: &[&str] = &[
    r#"
## VDM's fixed linear schedule gamma(t) = gamma_min + (gamma_max - gamma_min) t, not trained.
[model.schedule]
kind = "fixed"
gamma_min = -13.3
gamma_max = 5.0
"#,
    r#"
## Learned endpoints, linear in between: gamma(t) = b + |w| t (the default run's).
[model.schedule]
kind = "scalar"
gamma_min = -13.3
gamma_max = 5.0
"#,
    r#"
## Learned endpoints and a learned shape: VDM's monotone network normalised onto the endpoints.
## shape_objective: "vlb" (the shape follows the VLB's gradient, zero in expectation) or
## "variance" (VDM's: the shape minimises the VLB estimator's variance; continuous time only).
[model.schedule]
kind = "net"
gamma_min = -13.3
gamma_max = 5.0
width = 1024
seed = 0
shape_objective = "variance"
## false keeps gamma(0) and gamma(1) at gamma_min and gamma_max: only the shape is learned.
learn_endpoints = true
"#,
];

/// The default of `learn_endpoints`: VDM learns them.
fn learned() -> bool {
    true
}

/// The objective whose gradient trains a schedule's shape, the part of `γ` between its endpoints.
///
/// The continuous-time VLB depends on the schedule only through `γ₀` and `γ₁` (VDM eq. 20); the
/// shape changes only the variance of its Monte-Carlo estimate. So the VLB's gradient for the
/// shape is zero in expectation (pure noise), and VDM (§5.2, Appendix I.2) instead trains the
/// shape to minimise the estimator's variance, `∇_η E[L²] = ∇_η Var[L]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeObjective {
    /// The mean VLB, like every other parameter.
    Vlb,
    /// The mean square of the per-example VLB estimates (continuous-time training only). The
    /// default: on the digits it cut the estimator's standard deviation by a third at an equal
    /// bound (README, "Learned schedules").
    #[default]
    Variance,
}

/// The largest `|γ|` of a schedule's endpoints: within it the decoder's log-sum-exp and the
/// process are exact in `f32` (`core/tests/stability.rs`); beyond it `α` or `σ` underflow.
pub const MAX_GAMMA: f64 = 30.0;

impl Default for ScheduleConfig {
    /// VDM's fixed linear schedule from −13.3 to 5.
    fn default() -> Self {
        Self::Fixed { gamma_min: -13.3, gamma_max: 5.0 }
    }
}

impl ScheduleConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        let (lo, hi) = match *self {
            Self::Fixed { gamma_min, gamma_max } | Self::Scalar { gamma_min, gamma_max } => (gamma_min, gamma_max),
            Self::Net { gamma_min, gamma_max, width, .. } => {
                if !(1..=MAX_NET_WIDTH).contains(&width) {
                    return Err(Error::setting(
                        "schedule.width",
                        format!("schedule.width must be between 1 and {MAX_NET_WIDTH}, got {width}"),
                    ));
                }
                (gamma_min, gamma_max)
            }
        };
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::setting(
                "schedule.gamma_min",
                format!("schedule needs finite gamma_min < gamma_max, got {lo} and {hi}"),
            ));
        }
        if lo < -MAX_GAMMA || hi > MAX_GAMMA {
            return Err(Error::setting(
                "schedule.gamma_min",
                format!(
                    "schedule endpoints must lie in [-{MAX_GAMMA}, {MAX_GAMMA}], where the f32 decoder and \
                     process are exact, got gamma_min = {lo}, gamma_max = {hi}"
                ),
            ));
        }
        Ok(())
    }

    /// What trains the shape: [`ShapeObjective::Vlb`] for the schedules without one.
    pub fn shape_objective(&self) -> ShapeObjective {
        match *self {
            Self::Net { shape_objective, .. } => shape_objective,
            Self::Fixed { .. } | Self::Scalar { .. } => ShapeObjective::Vlb,
        }
    }

    /// A freshly initialised schedule module.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LearnedSchedule<B> {
        let scalar = |v: f64, trainable: bool| {
            let p = Param::from_tensor(upload(TensorData::new(vec![v as f32], [1]), device));
            if trainable {
                p
            } else {
                p.set_require_grad(false)
            }
        };
        match *self {
            Self::Fixed { gamma_min, gamma_max } | Self::Scalar { gamma_min, gamma_max } => {
                let trainable = matches!(self, Self::Scalar { .. });
                LearnedSchedule::Linear(LinearSchedule {
                    b: scalar(gamma_min, trainable),
                    w: scalar(gamma_max - gamma_min, trainable),
                })
            }
            Self::Net { gamma_min, gamma_max, width, seed, learn_endpoints, .. } => {
                let net = MonotoneNet::<f64>::init_shape(width, seed);
                let vector = |v: &[f64]| {
                    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                    let len = v.len();
                    Param::from_tensor(upload(TensorData::new(v, [len]), device))
                };
                LearnedSchedule::Net(NetSchedule {
                    b: scalar(gamma_min, learn_endpoints),
                    w: scalar(gamma_max - gamma_min, learn_endpoints),
                    l1_w: scalar(net.l1_w, true),
                    l2_w: vector(&net.l2_w),
                    l2_b: vector(&net.l2_b),
                    l3_w: vector(&net.l3_w),
                })
            }
        }
    }
}

/// A schedule module: `γ(t) = γ₀ + (γ₁ − γ₀) · shape(t)`, with endpoints `γ₀ = b`,
/// `γ₁ = b + |w|` and a shape rising from 0 to 1, linear or VDM's normalised monotone network.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one per model, never in a collection
pub enum LearnedSchedule<B: Backend> {
    /// `γ(t) = b + |w| t`.
    Linear(LinearSchedule<B>),
    /// Learned endpoints and VDM's monotone network as the shape.
    Net(NetSchedule<B>),
}

/// The parameters a schedule value passes gradients to (the others enter as constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Every parameter.
    All,
    /// The endpoints `γ₀`, `γ₁` only.
    Endpoints,
    /// The shape only.
    Shape,
}

impl<B: Backend> LearnedSchedule<B> {
    /// `(γ(t), γ'(t))` for times `t` of shape `[N]`.
    pub fn gamma_and_prime(&self, t: Tensor<B, 1>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        self.gamma_and_prime_of(t, Part::All)
    }

    /// `(γ(t), γ'(t))` for times `t` of shape `[N]`, carrying gradients to the parameters of `part`.
    pub fn gamma_and_prime_of(&self, t: Tensor<B, 1>, part: Part) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let (b, w) = match self {
            Self::Linear(s) => (s.b.val(), s.w.val()),
            Self::Net(s) => (s.b.val(), s.w.val()),
        };
        let (shape, shape_prime) = match self {
            Self::Linear(_) => (t.clone(), t.ones_like()),
            Self::Net(s) => s.shape(t),
        };
        let (b, w) = if part == Part::Shape { (b.detach(), w.detach()) } else { (b, w) };
        let (shape, shape_prime) =
            if part == Part::Endpoints { (shape.detach(), shape_prime.detach()) } else { (shape, shape_prime) };
        let span = w.abs();
        (shape * span.clone() + b, shape_prime * span)
    }

    /// `γ(t)` for times `t` of shape `[N]`.
    pub fn gamma(&self, t: Tensor<B, 1>) -> Tensor<B, 1> {
        self.gamma_and_prime(t).0
    }

    /// `γ(0) = b` and `γ(1) = b + |w|` as `[1]` tensors.
    pub fn endpoints(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let (b, w) = match self {
            Self::Linear(s) => (s.b.val(), s.w.val()),
            Self::Net(s) => (s.b.val(), s.w.val()),
        };
        (b.clone(), b + w.abs())
    }

    /// The linear schedule between the same endpoints. The continuous-time bound is unchanged
    /// (VDM eq. 20): comparing the two isolates what the shape does to the estimator's variance.
    pub fn linearised(self) -> Self {
        match self {
            Self::Net(s) => Self::Linear(LinearSchedule { b: s.b, w: s.w }),
            linear => linear,
        }
    }

    /// Whether any parameter is trained (a fixed schedule has none).
    pub fn is_trainable(&self) -> bool {
        match self {
            Self::Linear(s) => s.b.val().is_require_grad(),
            Self::Net(_) => true,
        }
    }

    /// The same schedule on the host in `f64`, for values that `f32` cannot resolve (the `γ`
    /// differences of a bound with many steps): its parameters, read in one copy.
    pub fn to_host(&self) -> HostSchedule {
        match self {
            Self::Linear(s) => {
                let [b, w] = download_values([&s.b, &s.w].map(Param::val));
                HostSchedule::Linear(LearnedScalar { b: b[0], w: w[0] })
            }
            Self::Net(s) => {
                let [b, w, l1_w, l2_w, l2_b, l3_w] =
                    download_values([&s.b, &s.w, &s.l1_w, &s.l2_w, &s.l2_b, &s.l3_w].map(Param::val));
                let (b, w) = (b[0], w[0]);
                HostSchedule::Net(
                    MonotoneNet { l1_w: l1_w[0], l1_b: 0.0, l2_w, l2_b, l3_w, endpoints: None }
                        .with_endpoints(b, b + w.abs()),
                )
            }
        }
    }
}

/// A [`LearnedSchedule`]'s current values as a [`vdm_core`] schedule in `f64`.
#[derive(Clone, Debug, PartialEq)]
pub enum HostSchedule {
    /// `γ(t) = b + |w| t`.
    Linear(LearnedScalar<f64>),
    /// VDM's monotone network normalised onto its endpoints.
    Net(MonotoneNet<f64>),
}

impl NoiseSchedule<f64> for HostSchedule {
    fn gamma(&self, t: f64) -> f64 {
        match self {
            Self::Linear(s) => s.gamma(t),
            Self::Net(s) => s.gamma(t),
        }
    }
    fn gamma_prime(&self, t: f64) -> f64 {
        match self {
            Self::Linear(s) => s.gamma_prime(t),
            Self::Net(s) => s.gamma_prime(t),
        }
    }
}

/// `γ(t) = b + |w| t` (a fixed schedule has `b`, `w` frozen).
#[derive(Module, Debug)]
pub struct LinearSchedule<B: Backend> {
    b: Param<Tensor<B, 1>>,
    w: Param<Tensor<B, 1>>,
}

/// Endpoints `b`, `b + |w|` and VDM's monotone network `γ̃(t) = |w₁| t + l₃(2(σ(l₂(2(t − ½))) − ½))/n`
/// (with `|W|` weights, no `l₁` bias: it cancels in the normalisation) as the shape.
#[derive(Module, Debug)]
pub struct NetSchedule<B: Backend> {
    b: Param<Tensor<B, 1>>,
    w: Param<Tensor<B, 1>>,
    l1_w: Param<Tensor<B, 1>>,
    l2_w: Param<Tensor<B, 1>>,
    l2_b: Param<Tensor<B, 1>>,
    l3_w: Param<Tensor<B, 1>>,
}

impl<B: Backend> NetSchedule<B> {
    /// `γ̃` and `γ̃'` at the times `t` and at 0 and 1 in one pass: `[N + 2]`.
    fn raw(&self, t: Tensor<B, 1>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let width = self.l2_w.dims()[0] as f64;
        let w1 = self.l1_w.val().abs();
        let w2 = self.l2_w.val().abs().unsqueeze_dim::<2>(0); // [1, n]
        let b2 = self.l2_b.val().unsqueeze_dim::<2>(0);
        let w3 = self.l3_w.val().abs().unsqueeze_dim::<2>(1); // [n, 1]
        let u = t.clone().sub_scalar(0.5).mul_scalar(2.0).unsqueeze_dim::<2>(1); // [N, 1]
        let a = u * w2.clone() + b2;
        // σ(a) = e^{−softplus(−a)}: finite for all a.
        let s = softplus(a.neg()).neg().exp();
        let hidden = s.clone().sub_scalar(0.5).mul_scalar(2.0).matmul(w3.clone()).div_scalar(width);
        // d/dt 2(σ(2|w₂|(t−½) + b₂) − ½) = 4 |w₂| σ (1 − σ)
        let ds = s.clone() * s.neg().add_scalar(1.0) * w2.mul_scalar(4.0);
        let dhidden = ds.matmul(w3).div_scalar(width);
        (t * w1.clone() + hidden.squeeze_dim::<1>(1), dhidden.squeeze_dim::<1>(1) + w1)
    }

    /// The normalised shape `(γ̃(t) − γ̃(0))/(γ̃(1) − γ̃(0))` and its derivative.
    fn shape(&self, t: Tensor<B, 1>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let n = t.dims()[0];
        let device = t.device();
        let (raw, raw_prime) =
            self.raw(Tensor::cat(vec![t, Tensor::zeros([1], &device), Tensor::ones([1], &device)], 0));
        let (r0, r1) = (raw.clone().narrow(0, n, 1), raw.clone().narrow(0, n + 1, 1));
        let range = r1 - r0.clone();
        ((raw.narrow(0, 0, n) - r0) / range.clone(), raw_prime.narrow(0, 0, n) / range)
    }
}
