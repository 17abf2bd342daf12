//! The Vulkan backend (burn-wgpu: CubeCL's kernels, the ones the CUDA backend runs, and vdm-rs's
//! generic compositions; Mesa's lavapipe runs them where there is no GPU) against the CPU
//! reference, operation by operation and through both networks, forward and backward, on the same
//! inputs and weights. Built only with the feature:
//! `cargo test -p vdm-backends --features wgpu --test wgpu` (`.ci/run` does).
#![cfg(feature = "wgpu")]

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use vdm_backends::nn::blocks::timestep_embedding;
use vdm_backends::nn::ddpm_unet::UNetConfig;
use vdm_backends::nn::score_unet::ScoreNetConfig;
use vdm_backends::ops::{self, ConvSpec, FastOps, NormSpec};
use vdm_backends::{Autodiff, Cpu, Wgpu};

/// Held while a test seeds burn's process-wide generator and draws from it.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Cpu, D> {
    let _generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    Cpu::seed(&Default::default(), seed);
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

/// The same values on the Vulkan device.
fn gpu<const D: usize>(t: &Tensor<Cpu, D>) -> Tensor<Wgpu, D> {
    Tensor::from_data(t.to_data(), &Default::default())
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// Fails unless `got` (wgpu) is within `tol` of `want` (CPU), relative to the largest |want|.
fn assert_agree(what: &str, got: Vec<f32>, want: Vec<f32>, tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    let (i, worst) =
        got.iter().zip(&want).map(|(a, b)| (a - b).abs()).enumerate().fold(
            (0, 0.0),
            |m, (i, d)| {
                if d > m.1 {
                    (i, d)
                } else {
                    m
                }
            },
        );
    assert!(
        worst <= tol * scale,
        "{what}: wgpu {} against the CPU's {} at {i} (scale {scale}, tolerance {tol})",
        got[i],
        want[i]
    );
}

/// `f` on the CPU and on wgpu, from the same inputs.
fn both<const D: usize>(what: &str, tol: f32, cpu: Tensor<Cpu, D>, wgpu: Tensor<Wgpu, D>) {
    assert_agree(what, values(wgpu), values(cpu), tol);
}

/// Elementwise functions over the arguments the networks give them: the timestep embedding's
/// arguments reach 1000, the Fourier features' hundreds.
#[test]
fn elementwise_functions_agree() {
    for range in [3.0, 300.0, 1000.0] {
        let x = random([4096], 1).mul_scalar(range / 3.0);
        both(&format!("sin over ±{range}"), 1e-6, x.clone().sin(), gpu(&x).sin());
        both(&format!("cos over ±{range}"), 1e-6, x.clone().cos(), gpu(&x).cos());
    }
    let t = random([64], 2).abs().mul_scalar(400.0);
    both("timestep embedding", 1e-6, timestep_embedding(t.clone(), 32), timestep_embedding(gpu(&t), 32));
    let s = random([2, 3, 8, 8], 3).mul_scalar(4.0);
    both("exp", 1e-6, s.clone().exp(), gpu(&s).exp());
    both("log1p", 1e-6, s.clone().exp().log1p(), gpu(&s).exp().log1p());
    both("tanh", 1e-6, s.clone().tanh(), gpu(&s).tanh());
    both("sum", 1e-6, s.clone().sum(), gpu(&s).sum());
}

/// The operations of `FastOps`, which the CPU runs with its own kernels and wgpu composes from
/// burn's: convolutions of the networks' geometries (one output channel over several images
/// included: burn-cubecl 0.21 lost the broadcast of an expanded bias there, a 0.5% error), group
/// normalisation with swish, attention, channel concatenation and VDM's decoder.
#[test]
fn fast_operations_agree() {
    for (i, (shape, o, k, spec)) in [
        ([2, 8, 8, 8], 16, 3, ConvSpec::same(3)),
        ([4, 8, 8, 8], 1, 3, ConvSpec::same(3)),
        ([3, 3, 8, 8], 8, 3, ConvSpec::same(3)),
        ([2, 6, 8, 8], 4, 1, ConvSpec::same(1)),
        ([2, 3, 8, 8], 6, 3, ConvSpec { stride: 2, padding: [0, 1, 0, 1] }),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 10 * i as u64;
        let (x, w, b) = (random(shape, seed), random([o, shape[1], k, k], seed + 1), random([o], seed + 2));
        let tag = format!("conv {shape:?} → {o}");
        both(&tag, 1e-5, ops::conv(x.clone(), w.clone(), b.clone(), spec), ops::conv(gpu(&x), gpu(&w), gpu(&b), spec));
        let [ho, wo] = spec.output_size([shape[2], shape[3]], k);
        let (shift, r) = (random([shape[0], o], seed + 3), random([shape[0], o, ho, wo], seed + 4));
        both(
            &format!("{tag} with a bias per image and a residual"),
            1e-5,
            ops::conv_with(x.clone(), w.clone(), shift.clone(), Some(r.clone()), spec),
            ops::conv_with(gpu(&x), gpu(&w), gpu(&shift), Some(gpu(&r)), spec),
        );
    }
    let x = random([2, 16, 8, 8], 50).mul_scalar(3.0).add_scalar(1.5);
    let (gamma, beta) = (random([16], 51), random([16], 52));
    for swish in [false, true] {
        let spec = NormSpec { groups: 4, epsilon: 1e-6, swish };
        both(
            &format!("group norm, swish {swish}"),
            1e-5,
            ops::group_norm(x.clone(), gamma.clone(), beta.clone(), spec),
            ops::group_norm(gpu(&x), gpu(&gamma), gpu(&beta), spec),
        );
    }
    let (q, k, v) = (random([2, 8, 64], 53), random([2, 8, 64], 54), random([2, 8, 64], 55));
    both(
        "attention",
        1e-5,
        ops::dot_product_attention(q.clone(), k.clone(), v.clone()),
        ops::dot_product_attention(gpu(&q), gpu(&k), gpu(&v)),
    );
    let (a, c) = (random([2, 3, 4, 4], 56), random([2, 5, 4, 4], 57));
    both("concatenation", 0.0, ops::concat_channels(a.clone(), c.clone()), ops::concat_channels(gpu(&a), gpu(&c)));
    let f = random([4, 3, 8, 8], 58).mul_scalar(0.3).clamp(-1.0, 1.0);
    let z = f.clone() + random([4, 3, 8, 8], 59).mul_scalar(0.003);
    let p = Tensor::<Cpu, 1>::from_floats([1e6, 1e5, 1e3, 10.0], &Default::default()).reshape([4, 1, 1, 1]);
    both(
        "decoder",
        1e-5,
        ops::decoder_nll(z.clone(), f.clone(), p.clone(), 256),
        ops::decoder_nll(gpu(&z), gpu(&f), gpu(&p), 256),
    );
}

/// Every parameter set to host-drawn normal noise of sd 0.1, the `k`-th from seed `k`: the same
/// weights on any backend (the zero-initialised layers too, so that no block is the identity).
struct SameWeights(u64);
impl<B: Backend> ModuleMapper<B> for SameWeights {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, old, mapper) = param.consume();
        let shape = old.shape();
        let host = random([shape.num_elements()], 1000 + self.0).mul_scalar(0.1);
        self.0 += 1;
        let new = Tensor::<B, 1>::from_data(TensorData::new(values(host), [shape.num_elements()]), &old.device());
        Param::from_mapped_value(id, new.reshape(shape), mapper)
    }
}

/// A network's output, its gradient with respect to the input and its parameters' gradients'
/// norms (in visiting order) on backend `B`, for the loss `Σ out · r`.
fn forward_backward<B: FastOps, M: Module<Autodiff<B>>>(
    net: M,
    run: impl Fn(&M, Tensor<Autodiff<B>, 4>, Tensor<Autodiff<B>, 1>) -> Tensor<Autodiff<B>, 4>,
    [x, t, r]: [(Vec<f32>, Vec<usize>); 3],
) -> [Vec<f32>; 3]
where
    Autodiff<B>: FastOps,
{
    let device = Default::default();
    let tensor4 = |(v, s): (Vec<f32>, Vec<usize>)| Tensor::<Autodiff<B>, 4>::from_data(TensorData::new(v, s), &device);
    let net = net.map(&mut SameWeights(0));
    let x = tensor4(x).require_grad();
    let t = Tensor::<Autodiff<B>, 1>::from_data(TensorData::new(t.0, t.1), &device);
    let out = run(&net, x.clone(), t);
    let grads = (out.clone() * tensor4(r)).sum().backward();
    struct Norms<'a, B: burn::tensor::backend::AutodiffBackend>(&'a B::Gradients, Vec<f32>);
    impl<B: burn::tensor::backend::AutodiffBackend> burn::module::ModuleVisitor<B> for Norms<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let g = param.val().grad(self.0).map_or(0.0, |g| g.square().sum().sqrt().into_scalar().elem::<f32>());
            self.1.push(g);
        }
    }
    use burn::tensor::ElementConversion;
    let mut norms = Norms::<Autodiff<B>>(&grads, Vec::new());
    net.visit(&mut norms);
    [values(out), values(x.grad(&grads).expect("the input's gradient")), norms.1]
}

/// VDM's score network and DDPM's U-Net (small, attention included) with the same weights and
/// inputs: outputs, input gradients and each parameter's gradient norm agree.
#[test]
fn networks_agree_forward_and_backward() {
    let host = |t: Tensor<Cpu, 4>| (values(t.clone()), t.dims().to_vec());
    let shape = [3, 1, 8, 8]; // one channel, as the digits: the output convolution has one
    let inputs = |t: Vec<f32>| [host(random(shape, 60)), (t, vec![3]), host(random(shape, 61))];

    let vdm = ScoreNetConfig {
        n_embd: 16,
        n_layer: 2,
        groups: 4,
        dropout: 0.0,
        fourier_exponents: vec![4, 5],
        ..Default::default()
    };
    let gammas = vec![-12.0, -2.0, 4.5];
    let c =
        forward_backward::<Cpu, _>(vdm.init(1, &Default::default()), |n, x, t| n.forward(x, t), inputs(gammas.clone()));
    let g = forward_backward::<Wgpu, _>(vdm.init(1, &Default::default()), |n, x, t| n.forward(x, t), inputs(gammas));
    for ((what, c), g) in ["VDM score network", "its input gradient", "its parameter gradients"].iter().zip(c).zip(g) {
        assert_agree(what, g, c, 2e-5);
    }

    let ddpm = UNetConfig {
        ch: 16,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![4],
        groups: 4,
        dropout: 0.0,
        ..Default::default()
    };
    let steps = vec![0.0, 300.0, 999.0];
    let (c, g) = (
        forward_backward::<Cpu, _>(
            ddpm.init([1, 8, 8], &Default::default()),
            |n, x, t| n.forward(x, t),
            inputs(steps.clone()),
        ),
        forward_backward::<Wgpu, _>(
            ddpm.init([1, 8, 8], &Default::default()),
            |n, x, t| n.forward(x, t),
            inputs(steps),
        ),
    );
    for ((what, c), g) in ["DDPM U-Net", "its input gradient", "its parameter gradients"].iter().zip(c).zip(g) {
        assert_agree(what, g, c, 2e-5);
    }
}
