//! Embedding the math with no backend: the VLB of Gaussian data, estimated by Monte Carlo with
//! the Bayes-optimal denoiser, against the exact NLL.
//!
//! `cargo run --release --example gaussian_vlb`

use vdm::core::analytic::{gaussian_reconstruction_nll, optimal_eps, GaussianData};
use vdm::core::process::diffuse;
use vdm::core::rng::SplitMix64;
use vdm::core::schedule::{FixedLinear, NoiseSchedule};
use vdm::core::time::antithetic_times;
use vdm::core::vlb::{diffusion_loss_continuous, prior_kl};
use vdm::core::{Batch, BatchTensor};

fn main() {
    let data = GaussianData::new(vec![0.3, -0.2], vec![0.1, 0.5]);
    let schedule = FixedLinear::new(-20.0, 12.0);
    let (batches, n, d) = (2000, 256, data.features());
    let per = |v: Vec<f64>| Batch::per_example(v);
    let tile = |v: &[f64]| Batch::new(v.iter().copied().cycle().take(n * d).collect(), n);
    let (mean, var) = (tile(&data.mean), tile(&data.std.iter().map(|s| s * s).collect::<Vec<_>>()));
    let mut rng = SplitMix64::new(0);
    let mut total = 0.0;
    for _ in 0..batches {
        let x = Batch::new((0..n * d).map(|i| data.mean[i % d] + data.std[i % d] * rng.normal::<f64>()).collect(), n);
        let eps = Batch::new((0..n * d).map(|_| rng.normal()).collect(), n);
        let t: Vec<f64> = antithetic_times(rng.uniform(), n).collect();
        let g_t = per(t.iter().map(|&t| schedule.gamma(t)).collect());
        let g_prime = per(t.iter().map(|&t| schedule.gamma_prime(t)).collect());
        let eps_hat = optimal_eps(diffuse(x.clone(), eps.clone(), g_t.clone()), mean.clone(), var.clone(), g_t);
        let g0 = per(vec![schedule.gamma_0(); n]);
        let vlb = prior_kl(x.clone(), per(vec![schedule.gamma_1(); n]))
            .add(gaussian_reconstruction_nll(x.clone(), diffuse(x, eps.clone(), g0.clone()), g0))
            .add(diffusion_loss_continuous(eps, eps_hat, g_prime));
        total += vlb.as_slice().iter().sum::<f64>();
    }
    let estimate = total / (batches * n) as f64;
    let closed = data.expected_vlb_continuous(schedule.gamma_0(), schedule.gamma_1()).total();
    println!("Monte-Carlo VLB      {estimate:.4} nats");
    println!("closed-form VLB      {closed:.4} nats");
    println!("exact NLL (entropy)  {:.4} nats", data.entropy());
}
