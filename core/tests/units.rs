//! Exact checks of individual pieces: decoders normalise, DDPM schedules, time sampling, batches.

use approx::assert_relative_eq;
use vdm_core::ddpm::{
    self, discretized_gaussian_nll, discretized_gaussian_nll_tanh, l_simple, BetaSchedule, DiscreteSchedule,
};
use vdm_core::process::{alpha, diffuse};
use vdm_core::schedule::NoiseSchedule;
use vdm_core::time::{antithetic_times, discretize};
use vdm_core::vlb::{decode_nearest, encode, nats_to_bpd, reconstruction_nll, PIXEL_VALUES};
use vdm_core::{Batch, BatchTensor};

#[test]
fn vdm_decoder_is_a_normalised_distribution_over_pixel_values() {
    for &(g0, z) in &[(-13.3, 0.1234), (-8.0, -0.99), (-2.0, 0.5), (3.0, 2.5), (-13.3, -1.5)] {
        let total: f64 = (0..PIXEL_VALUES)
            .map(|k| (-reconstruction_nll(encode(k as f64, PIXEL_VALUES), z, g0, PIXEL_VALUES)).exp())
            .sum();
        assert_relative_eq!(total, 1.0, epsilon = 1e-12);
    }
}

#[test]
fn vdm_decoder_is_nearly_exact_at_low_noise() {
    // At γ₀ = −13.3 the decoder's std e^{γ₀/2} ≈ 0.0013 is a sixth of the bin spacing 2/256.
    for k in [0u32, 17, 128, 255] {
        let f = encode(k as f64, PIXEL_VALUES);
        let nll = reconstruction_nll(f, diffuse(f, 0.0, -13.3), -13.3, PIXEL_VALUES);
        assert!(nll > 0.0 && nll < 1e-6, "pixel {k}: −ln p = {nll}");
        assert_eq!(decode_nearest(diffuse(f, 0.0, -13.3) / alpha(-13.3), PIXEL_VALUES), k);
    }
}

#[test]
fn encoding_round_trips_through_the_decoder_mode() {
    for k in 0..PIXEL_VALUES as u32 {
        assert_eq!(decode_nearest(encode(k as f64, PIXEL_VALUES), PIXEL_VALUES), k);
    }
    assert_eq!(decode_nearest(-7.0, PIXEL_VALUES), 0);
    assert_eq!(decode_nearest(7.0, PIXEL_VALUES), 255);
}

#[test]
fn ddpm_discretised_gaussian_is_normalised_over_the_grid() {
    for &(mean, log_scale) in &[(0.0, -3.0), (0.7, -5.0), (-0.99, -1.0), (0.3, 0.5), (1.2, -4.0)] {
        let total: f64 =
            (0..256).map(|k| (-discretized_gaussian_nll(ddpm::encode(k as f64), mean, log_scale)).exp()).sum();
        assert_relative_eq!(total, 1.0, epsilon = 1e-9);
    }
}

/// DDPM's `approx_standard_normal_cdf` and `discretized_gaussian_log_likelihood`, transcribed.
fn ddpm_code_nll(x: f64, mean: f64, log_scale: f64) -> f64 {
    let cdf = |u: f64| 0.5 * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (u + 0.044715 * u.powi(3))).tanh());
    let (centred, inv) = (x - mean, (-log_scale).exp());
    let (cdf_plus, cdf_min) = (cdf(inv * (centred + 1.0 / 255.0)), cdf(inv * (centred - 1.0 / 255.0)));
    let log_p = if x < -0.999 {
        cdf_plus.max(1e-12).ln()
    } else if x > 0.999 {
        (1.0 - cdf_min).max(1e-12).ln()
    } else {
        (cdf_plus - cdf_min).max(1e-12).ln()
    };
    -log_p
}

/// The tanh decoder is DDPM's code's (to rounding, as bin masses), sums to 1 over the grid (its bins telescope),
/// and differs from the exact `Φ` by a few thousandths of a nat where the mass is not tiny.
#[test]
fn ddpm_tanh_decoder_is_ddpms_code() {
    let mut largest_gap: f64 = 0.0;
    for &(mean, log_scale) in &[(0.0, -3.0), (0.7, -5.0), (-0.99, -1.0), (0.3, 0.5), (1.2, -4.0)] {
        let mut total = 0.0;
        for k in 0..256 {
            let x = ddpm::encode(k as f64);
            let ours = discretized_gaussian_nll_tanh(x, mean, log_scale);
            let theirs = ddpm_code_nll(x, mean, log_scale);
            // As masses: DDPM's ½(1 + tanh v) loses relative precision in the far tail, where it
            // rounds towards 0 before the floor; sigmoid(2v) does not.
            let (p_ours, p_theirs) = ((-ours).exp(), (-theirs).exp());
            assert!(
                (p_ours - p_theirs).abs() < 1e-9 * p_theirs + 1e-15,
                "x = {x}, mean {mean}, log σ {log_scale}: {ours} vs DDPM's {theirs} nats"
            );
            total += (-ours).exp();
            let exact = discretized_gaussian_nll(x, mean, log_scale);
            if exact < 5.0 {
                // Bin masses above ~0.7%: the approximation is off by under 2% of the mass.
                assert!((ours - exact).abs() < 0.02, "x = {x}, mean {mean}: tanh {ours} vs exact {exact} nats");
                largest_gap = largest_gap.max((ours - exact).abs());
            }
        }
        assert_relative_eq!(total, 1.0, epsilon = 1e-9);
    }
    assert!(largest_gap > 1e-4, "the approximation is another function: {largest_gap}");
}

#[test]
fn ddpm_linear_betas_match_the_paper() {
    let betas = BetaSchedule::DDPM_LINEAR.betas(1000);
    assert_eq!(betas.len(), 1000);
    assert_relative_eq!(betas[0], 1e-4);
    assert_relative_eq!(betas[999], 0.02);
    assert!(betas.windows(2).all(|w| w[1] > w[0]));
}

#[test]
fn cosine_betas_use_floating_point_time_and_are_monotone() {
    let t = 1000;
    let betas = BetaSchedule::COSINE.betas(t);
    // β_1 = 1 − f(1)/f(0) from the formula in f64; integer division t/T would give β_1 = 0.
    let f = |i: f64| ((i / t as f64 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
    assert_relative_eq!(betas[0], 1.0 - f(1.0) / f(0.0), max_relative = 1e-12);
    assert!(betas[0] > 0.0);
    assert!(betas.windows(2).all(|w| w[1] >= w[0]), "cosine betas must be non-decreasing");
    assert_eq!(*betas.last().unwrap(), 0.999, "the last beta is clipped");
    let s = DiscreteSchedule::from_betas(betas);
    for i in 2..=t {
        assert!(s.alpha_bar(i) < s.alpha_bar(i - 1));
        assert!(s.gamma_at(i) > s.gamma_at(i - 1));
    }
}

#[test]
fn discrete_schedule_interpolates_its_latents() {
    let s = DiscreteSchedule::new(BetaSchedule::DDPM_LINEAR, 1000);
    for i in [1, 2, 500, 999, 1000] {
        let t = s.time_of(i);
        let want = (1.0 - s.alpha_bar(i)).ln() - s.alpha_bar(i).ln();
        assert_relative_eq!(NoiseSchedule::<f64>::gamma(&s, t), want, max_relative = 1e-9);
    }
    // ᾱ_1 = 1 − 1e-4: γ_1 = ln(1e-4 / (1 − 1e-4)).
    assert_relative_eq!(NoiseSchedule::<f64>::gamma_0(&s), (1e-4f64 / (1.0 - 1e-4)).ln(), max_relative = 1e-12);
    let (t_a, t_b) = (s.time_of(10), s.time_of(11));
    let slope = (s.gamma_at(11) - s.gamma_at(10)) / (t_b - t_a);
    assert_relative_eq!(NoiseSchedule::<f64>::gamma_prime(&s, 0.5 * (t_a + t_b)), slope, max_relative = 1e-9);
}

#[test]
fn antithetic_times_cover_the_unit_interval_evenly() {
    let mut t: Vec<f64> = antithetic_times(0.73, 8).collect();
    t.sort_by(f64::total_cmp);
    assert!(t.iter().all(|&v| (0.0..1.0).contains(&v)));
    for w in t.windows(2) {
        assert_relative_eq!(w[1] - w[0], 0.125, epsilon = 1e-12);
    }
}

#[test]
fn discretize_maps_onto_steps() {
    assert_eq!(discretize(0.0, 10), (0.0, 0.1));
    assert_eq!(discretize(1.0, 10), (0.9, 1.0));
    let (s, t) = discretize(0.45, 10);
    assert_relative_eq!(s, 0.4);
    assert_relative_eq!(t, 0.5);
}

#[test]
fn l_simple_is_the_mean_squared_error() {
    let eps = Batch::new(vec![1.0, 2.0, 3.0, 4.0], 2);
    let hat = Batch::new(vec![0.0, 2.0, 1.0, 4.0], 2);
    assert_eq!(l_simple(eps, hat).into_vec(), vec![0.5, 2.0]);
}

#[test]
fn bits_per_dim_divides_by_d_ln2() {
    let nats = Batch::per_example(vec![10.0 * std::f64::consts::LN_2]);
    assert_relative_eq!(nats_to_bpd(nats, 10).as_slice()[0], 1.0);
}

#[test]
fn batches_broadcast_per_example_values() {
    let x = Batch::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2);
    let per = Batch::per_example(vec![10.0, 100.0]);
    assert_eq!(x.clone().mul(per.clone()).into_vec(), vec![10.0, 20.0, 30.0, 400.0, 500.0, 600.0]);
    assert_eq!(per.clone().sub(x.clone()).into_vec(), vec![9.0, 8.0, 7.0, 96.0, 95.0, 94.0]);
    assert_eq!(x.clone().sum_example().into_vec(), vec![6.0, 15.0]);
    let picked = x.clone().where_lt(3.5, per, x.full_like(0.0));
    assert_eq!(picked.into_vec(), vec![10.0, 10.0, 10.0, 0.0, 0.0, 0.0]);
}

#[test]
#[should_panic(expected = "cannot broadcast 2 features against 3 features")]
fn batches_refuse_incompatible_shapes() {
    let _ = Batch::new(vec![1.0; 6], 2).add(Batch::new(vec![1.0; 4], 2));
}

/// VDM initialises the monotone network's `l₂`, `l₃` with flax's `normal()` (std 0.01): the
/// initial schedule is the linear one up to ~10⁻⁴, and its endpoints are VDM's.
#[test]
fn monotone_net_starts_as_the_linear_schedule() {
    use vdm_core::schedule::{FixedLinear, MonotoneNet};
    let linear = FixedLinear::<f64>::default();
    for seed in 0..4 {
        let net = MonotoneNet::<f64>::init(1024, -13.3, 5.0, seed);
        for i in 0..=100 {
            let t = i as f64 / 100.0;
            let dev = (net.gamma(t) - linear.gamma(t)).abs();
            assert!(dev < 1e-3, "seed {seed}, t = {t}: γ differs from the linear schedule by {dev}");
            let slope = (net.gamma_prime(t) - linear.gamma_prime(t)).abs();
            assert!(slope < 1e-3, "seed {seed}, t = {t}: γ' differs by {slope}");
        }
    }
}

mod bits_back {
    use vdm_core::bits_back::{bin_value, normal_cdf, normal_quantile, BinPosterior};

    /// `Φ⁻¹` against reference values (R's `qnorm`) and as the inverse of `Φ` over 300 decades.
    #[test]
    fn the_normal_quantile_inverts_the_cdf() {
        for (p, x) in [(0.975, 1.959963984540054), (1e-10, -6.361340902404056), (0.3, -0.5244005127080407), (0.5, 0.0)]
        {
            assert!(
                (normal_quantile(p) - x).abs() <= 1e-15 * x.abs().max(1.0),
                "Φ⁻¹({p}) = {} vs {x}",
                normal_quantile(p)
            );
        }
        for k in 1..300 {
            let p = 10f64.powi(-k);
            let back = normal_cdf(normal_quantile(p));
            assert!((back - p).abs() <= 1e-8 * p, "Φ(Φ⁻¹({p:e})) = {back:e}");
        }
        for i in 1..1000 {
            let p = i as f64 / 1000.0;
            assert!((normal_cdf(normal_quantile(p)) - p).abs() < 1e-15, "p = {p}");
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
    }

    /// The bins' posterior masses are the Gaussian masses of their intervals in `z`, sum to 1,
    /// and `F⁻¹` inverts `F`; each bin's value lies inside its bin.
    #[test]
    fn bin_posterior_masses_are_the_gaussian_masses_of_the_bins() {
        let (bins, mean_p, sd_p, mean_q, sd_q) = (64usize, 0.3, 0.02, 0.31, 0.015);
        let q = BinPosterior::new(bins, mean_p, sd_p, mean_q, sd_q);
        let edge = |i: usize| mean_p + sd_p * normal_quantile(i as f64 / bins as f64);
        let mut total = 0.0;
        for i in 0..bins {
            let direct = normal_cdf((edge(i + 1) - mean_q) / sd_q) - normal_cdf((edge(i) - mean_q) / sd_q);
            let mass = q.cdf((i + 1) as f64) - q.cdf(i as f64);
            assert!((mass - direct).abs() < 1e-13, "bin {i}: {mass} vs {direct}");
            total += mass;
            let z = bin_value(i as u32, bins, mean_p, sd_p);
            assert!(edge(i) < z && z < edge(i + 1), "bin {i}'s value {z} outside its bin");
        }
        assert!((total - 1.0).abs() < 1e-14);
        for p in [1e-6, 0.1, 0.5, 0.77, 0.999] {
            assert!((q.cdf(q.inverse(p)) - p).abs() < 1e-12, "F(F⁻¹({p}))");
        }
    }
}

/// Every prediction target reads back the noise exactly: `x` and `v = α ε − σ x` of a known
/// `z = α x + σ ε` give `ε` again.
#[test]
fn prediction_targets_read_back_the_noise() {
    use vdm_core::process::{alpha, diffuse, sigma, Target};
    for gamma in [-12.0, -3.0, 0.0, 2.5, 6.0] {
        let (x, eps) = (0.37f64, -1.3f64);
        let z = diffuse(x, eps, gamma);
        let v = alpha(gamma) * eps - sigma(gamma) * x;
        for (target, output) in [(Target::Eps, eps), (Target::X, x), (Target::V, v)] {
            let got = target.eps(output, z, gamma);
            assert!((got - eps).abs() < 1e-9 * (1.0 + (-gamma / 2.0).exp()), "{target:?} at γ = {gamma}: {got}");
        }
    }
}
