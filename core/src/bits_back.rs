//! The discretisation of bits-back coding with a diffusion model (Townsend, Bird & Barber 2019,
//! BB-ANS; VDM §F): continuous latents coded on bins of equal mass under the prior.
//!
//! A latent `z` whose prior at its step is `p = N(μ_P, σ_P²)` is coded as the index `i ∈ [0, K)`
//! of the bin `[Φ⁻¹(i/K), Φ⁻¹((i+1)/K))` in prior-standardised units `(z − μ_P)/σ_P`. Every bin
//! then has prior mass exactly `1/K`: pushing `z` under the prior costs `log₂ K` bits. The
//! posterior `q = N(μ_Q, σ_Q²)` assigns bin `i` the mass `F(i + 1) − F(i)` with
//!
//! `F(v) = Φ(r Φ⁻¹(v/K) + Δ)`, `r = σ_P/σ_Q`, `Δ = (μ_P − μ_Q)/σ_Q`,
//!
//! and popping `z` from it gives back `−log₂ q(bin)` bits; as `K` grows the net cost of a latent
//! tends to `KL(q ‖ p)`, the VLB's term. The latent's value, which the next step conditions on, is
//! the bin's prior median `μ_P + σ_P Φ⁻¹((i + ½)/K)`.
//!
//! Everything here is plain `f64` arithmetic, deterministic for a given binary: encoder and
//! decoder must compute the same bins bit for bit.

/// `Φ(x)`, the standard normal CDF, as `½ erfc(−x/√2)` (accurate in both tails).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * core::f64::consts::FRAC_1_SQRT_2)
}

/// `Φ⁻¹(p)`, the standard normal quantile, by Wichura's algorithm AS 241 (`PPND16`, relative
/// accuracy about 1e-16); `−∞` at 0 and `+∞` at 1.
pub fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let poly = |c: &[f64], x: f64| c.iter().rev().fold(0.0, |acc, &k| acc * x + k);
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let r = libm::sqrt(-libm::log(if q < 0.0 { p } else { 1.0 - p }));
    let x = if r <= 5.0 { poly(&C, r - 1.6) / poly(&D, r - 1.6) } else { poly(&E, r - 5.0) / poly(&F, r - 5.0) };
    if q < 0.0 {
        -x
    } else {
        x
    }
}

// AS 241's coefficients, lowest order first.
const A: [f64; 8] = [
    3.387_132_872_796_366_5,
    1.331_416_678_917_843_8e2,
    1.971_590_950_306_551_3e3,
    1.373_169_376_550_946e4,
    4.592_195_393_154_987e4,
    6.726_577_092_700_87e4,
    3.343_057_558_358_813e4,
    2.509_080_928_730_122_7e3,
];
const B: [f64; 8] = [
    1.0,
    4.231_333_070_160_091e1,
    6.871_870_074_920_579e2,
    5.394_196_021_424_751e3,
    2.121_379_430_158_659_7e4,
    3.930_789_580_009_271e4,
    2.872_908_573_572_194_3e4,
    5.226_495_278_852_545e3,
];
const C: [f64; 8] = [
    1.423_437_110_749_683_5,
    4.630_337_846_156_546,
    5.769_497_221_460_691,
    3.647_848_324_763_204_5,
    1.270_458_252_452_368_4,
    2.417_807_251_774_506e-1,
    2.272_384_498_926_918_4e-2,
    7.745_450_142_783_414e-4,
];
const D: [f64; 8] = [
    1.0,
    2.053_191_626_637_759,
    1.676_384_830_183_803_8,
    6.897_673_349_851e-1,
    1.481_039_764_274_800_8e-1,
    1.519_866_656_361_645_7e-2,
    5.475_938_084_995_345e-4,
    1.050_750_071_644_416_9e-9,
];
const E: [f64; 8] = [
    6.657_904_643_501_103,
    5.463_784_911_164_114,
    1.784_826_539_917_291_3,
    2.965_605_718_285_048_7e-1,
    2.653_218_952_657_612_4e-2,
    1.242_660_947_388_078_4e-3,
    2.711_555_568_743_487_6e-5,
    2.010_334_399_292_288_1e-7,
];
const F: [f64; 8] = [
    1.0,
    5.998_322_065_558_88e-1,
    1.369_298_809_227_358e-1,
    1.487_536_129_085_061_5e-2,
    7.868_691_311_456_133e-4,
    1.846_318_317_510_054_8e-5,
    1.421_511_758_316_446e-7,
    2.043_131_609_278_6e-15,
];

/// The posterior's distribution over the prior-equal-mass bins of one latent, as a continuous
/// CDF on `v ∈ [0, K]` (bin `i` is `[i, i + 1)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BinPosterior {
    /// Bins `K`.
    pub bins: f64,
    /// `σ_P/σ_Q`.
    pub ratio: f64,
    /// `(μ_P − μ_Q)/σ_Q`.
    pub shift: f64,
}

impl BinPosterior {
    /// The posterior `N(mean_q, sd_q²)` over the `bins` equal-mass bins of the prior `N(mean_p, sd_p²)`.
    pub fn new(bins: usize, mean_p: f64, sd_p: f64, mean_q: f64, sd_q: f64) -> Self {
        Self { bins: bins as f64, ratio: sd_p / sd_q, shift: (mean_p - mean_q) / sd_q }
    }

    /// `F(v) = Φ(r Φ⁻¹(v/K) + Δ)`: the posterior mass of the bins below `v`.
    pub fn cdf(&self, v: f64) -> f64 {
        if v <= 0.0 {
            0.0
        } else if v >= self.bins {
            1.0
        } else {
            normal_cdf(self.ratio * normal_quantile(v / self.bins) + self.shift)
        }
    }

    /// `F⁻¹(p) = K Φ((Φ⁻¹(p) − Δ)/r)`.
    pub fn inverse(&self, p: f64) -> f64 {
        self.bins * normal_cdf((normal_quantile(p) - self.shift) / self.ratio)
    }
}

/// The value of a latent coded as bin `index` of `bins` under the prior `N(mean_p, sd_p²)`: the
/// bin's prior median.
pub fn bin_value(index: u32, bins: usize, mean_p: f64, sd_p: f64) -> f64 {
    mean_p + sd_p * normal_quantile((f64::from(index) + 0.5) / bins as f64)
}
