//! Learnable noise schedules as burn modules (VDM §5.1 and Appendix H.2).
//!
//! Each computes `γ(t)` and `γ'(t)` in closed form on a `[N]` tensor of times, so gradients of
//! the VLB reach the schedule's parameters (in particular its endpoints `γ(0)`, `γ(1)`, through
//! the reconstruction and prior terms) without higher-order autodiff. The values agree with
//! [`vdm_core::schedule`]'s scalar versions (tested).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use vdm_core::schedule::{LearnedScalar, MonotoneNet, NoiseSchedule};

use crate::tensor::softplus;

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
    /// VDM's monotone network of hidden width `width` (1024 in VDM), trained.
    Net {
        /// Initial `γ(0)` (`l₁` bias).
        gamma_min: f64,
        /// `γ_min + l₁` weight.
        gamma_max: f64,
        /// Hidden width.
        width: usize,
        /// Seed of the `N(0, 0.01²)` initialisation of `l₂`, `l₃`.
        seed: u64,
    },
}

impl Default for ScheduleConfig {
    /// VDM's fixed linear schedule from −13.3 to 5.
    fn default() -> Self {
        Self::Fixed { gamma_min: -13.3, gamma_max: 5.0 }
    }
}

impl ScheduleConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), String> {
        let (lo, hi) = match *self {
            Self::Fixed { gamma_min, gamma_max } | Self::Scalar { gamma_min, gamma_max } => (gamma_min, gamma_max),
            Self::Net { gamma_min, gamma_max, width, .. } => {
                if !(1..=MAX_NET_WIDTH).contains(&width) {
                    return Err(format!("schedule.width must be between 1 and {MAX_NET_WIDTH}, got {width}"));
                }
                (gamma_min, gamma_max)
            }
        };
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(format!("schedule needs finite gamma_min < gamma_max, got {lo} and {hi}"));
        }
        Ok(())
    }

    /// A freshly initialised schedule module.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LearnedSchedule<B> {
        let scalar = |v: f64, trainable: bool| {
            let p = Param::from_tensor(Tensor::from_floats([v as f32], device));
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
            Self::Net { gamma_min, gamma_max, width, seed } => {
                let net = MonotoneNet::<f64>::init(width, gamma_min, gamma_max, seed);
                let vector = |v: &[f64]| {
                    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                    Param::from_tensor(Tensor::from_floats(v.as_slice(), device))
                };
                LearnedSchedule::Net(NetSchedule {
                    l1_w: scalar(net.l1_w, true),
                    l1_b: scalar(net.l1_b, true),
                    l2_w: vector(&net.l2_w),
                    l2_b: vector(&net.l2_b),
                    l3_w: vector(&net.l3_w),
                })
            }
        }
    }
}

/// A schedule module: linear (fixed or learned) or the monotone network.
#[derive(Module, Debug)]
pub enum LearnedSchedule<B: Backend> {
    /// `γ(t) = b + |w| t`.
    Linear(LinearSchedule<B>),
    /// VDM's monotone network.
    Net(NetSchedule<B>),
}

impl<B: Backend> LearnedSchedule<B> {
    /// `(γ(t), γ'(t))` for times `t` of shape `[N]`.
    pub fn gamma_and_prime(&self, t: Tensor<B, 1>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        match self {
            Self::Linear(s) => s.gamma_and_prime(t),
            Self::Net(s) => s.gamma_and_prime(t),
        }
    }

    /// `γ(t)` for times `t` of shape `[N]`.
    pub fn gamma(&self, t: Tensor<B, 1>) -> Tensor<B, 1> {
        self.gamma_and_prime(t).0
    }

    /// `γ(0)` and `γ(1)` as `[1]` tensors.
    pub fn endpoints(&self, device: &B::Device) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let g = self.gamma(Tensor::from_floats([0.0, 1.0], device));
        (g.clone().slice([0..1]), g.slice([1..2]))
    }

    /// The same schedule on the host in `f64`, for values that `f32` cannot resolve (the `γ`
    /// differences of a bound with many steps).
    pub fn to_host(&self) -> HostSchedule {
        match self {
            Self::Linear(s) => HostSchedule::Linear(LearnedScalar { b: scalar(&s.b), w: scalar(&s.w) }),
            Self::Net(s) => HostSchedule::Net(MonotoneNet {
                l1_w: scalar(&s.l1_w),
                l1_b: scalar(&s.l1_b),
                l2_w: values(&s.l2_w),
                l2_b: values(&s.l2_b),
                l3_w: values(&s.l3_w),
                endpoints: None,
            }),
        }
    }
}

fn values<B: Backend>(p: &Param<Tensor<B, 1>>) -> Vec<f64> {
    p.val().into_data().iter::<f64>().collect()
}

fn scalar<B: Backend>(p: &Param<Tensor<B, 1>>) -> f64 {
    values(p)[0]
}

/// A [`LearnedSchedule`]'s current values as a [`vdm_core`] schedule in `f64`.
#[derive(Clone, Debug, PartialEq)]
pub enum HostSchedule {
    /// `γ(t) = b + |w| t`.
    Linear(LearnedScalar<f64>),
    /// VDM's monotone network.
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

impl<B: Backend> LinearSchedule<B> {
    fn gamma_and_prime(&self, t: Tensor<B, 1>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let slope = self.w.val().abs();
        let gamma = t.clone() * slope.clone() + self.b.val();
        (gamma, t.zeros_like() + slope)
    }
}

/// VDM's monotone network `γ(t) = l₁(t) + l₃(2(σ(l₂(2(t − ½))) − ½))/n` with `|W|` weights.
#[derive(Module, Debug)]
pub struct NetSchedule<B: Backend> {
    l1_w: Param<Tensor<B, 1>>,
    l1_b: Param<Tensor<B, 1>>,
    l2_w: Param<Tensor<B, 1>>,
    l2_b: Param<Tensor<B, 1>>,
    l3_w: Param<Tensor<B, 1>>,
}

impl<B: Backend> NetSchedule<B> {
    fn gamma_and_prime(&self, t: Tensor<B, 1>) -> (Tensor<B, 1>, Tensor<B, 1>) {
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
        let gamma = t * w1.clone() + self.l1_b.val() + hidden.squeeze_dim::<1>(1);
        let prime = dhidden.squeeze_dim::<1>(1) + w1;
        (gamma, prime)
    }
}
