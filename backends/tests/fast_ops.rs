//! The CPU kernels of the fused operations agree with burn's own operations, forward and backward,
//! and their gradients agree with finite differences.

use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{module, Distribution, Tensor, TensorData};
use vdm_backends::ops::{self, generic, ConvSpec, NormSpec};
use vdm_backends::{Autodiff, Cpu};

type A = Autodiff<Cpu>;

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * scale, "{what}[{i}]: {a} vs {b} (scale {scale})");
    }
}

/// Held while a test seeds burn's process-wide generator and draws from it: the tests of this
/// file run in parallel, and one seeding between another's seed and draw would change its numbers.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Cpu, D> {
    let _generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    Cpu::seed(&Default::default(), seed);
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

/// Convolutions of every geometry the networks use (and odd ones), with a bias per image and a
/// residual: the kernel's output and gradients equal burn's conv2d plus both, and its autodiff.
#[test]
fn convolution_matches_burn_forward_and_backward() {
    let geometries = [
        ([2, 5, 6, 4], 7, 3, ConvSpec::same(3)),
        ([3, 4, 5, 5], 2, 1, ConvSpec::same(1)),
        ([2, 3, 8, 8], 6, 3, ConvSpec { stride: 2, padding: [0, 1, 0, 1] }), // DDPM's downsampling
        ([1, 2, 7, 6], 3, 3, ConvSpec { stride: 2, padding: [1, 1, 1, 1] }),
        ([2, 3, 5, 4], 2, 3, ConvSpec { stride: 1, padding: [0, 2, 1, 0] }),
        ([9, 4, 6, 5], 5, 3, ConvSpec::same(3)), // more images than a gradient group
        ([2, 2, 1, 2], 3, 3, ConvSpec::same(3)), // taps entirely in the padding
        // Wide enough that the forward pass builds its im2col matrix a few output rows at a time.
        ([1, 64, 24, 32], 4, 3, ConvSpec::same(3)),
        ([1, 64, 40, 32], 3, 3, ConvSpec { stride: 2, padding: [0, 1, 0, 1] }),
        ([1, 64, 30, 32], 2, 3, ConvSpec { stride: 1, padding: [0, 2, 1, 0] }),
        // Winograd's tiles (3×3 "same" convolutions of at least 8×8 pixels and 64 channels): odd
        // sizes, whose last tiles reach past the image; small images, many to a matrix product
        // and to a weight gradient's group; and channels enough that a chunk of tiles ends inside
        // an image (of the weight gradient's group of images; of a single image).
        ([3, 64, 9, 11], 64, 3, ConvSpec::same(3)),
        ([20, 64, 9, 8], 64, 3, ConvSpec::same(3)),
        ([7, 256, 8, 11], 64, 3, ConvSpec::same(3)),
        ([2, 256, 24, 24], 64, 3, ConvSpec::same(3)),
    ];
    for (i, (shape, o, k, spec)) in geometries.into_iter().enumerate() {
        let tag = format!("geometry {i}");
        let seed = 5 * i as u64;
        let (x, w, b) = (random(shape, seed), random([o, shape[1], k, k], seed + 1), random([shape[0], o], seed + 2));
        let [ho, wo] = spec.output_size([shape[2], shape[3]], k);
        let residual = random([shape[0], o, ho, wo], seed + 3);
        let fast = ops::conv_with(x.clone(), w.clone(), b.clone(), Some(residual.clone()), spec);
        let p = |t: Tensor<Cpu, 4>| ops::primitive(t);
        let reference = generic::conv2d::<Cpu>(
            p(x.clone()),
            p(w.clone()),
            ops::primitive(b.clone()),
            Some(p(residual.clone())),
            spec,
        );
        let reference = ops::tensor::<Cpu, 4>(reference);
        assert_eq!(fast.dims(), reference.dims(), "{tag}: shape");
        assert_close(&format!("{tag} forward"), &values(fast.clone()), &values(reference), 1e-5);

        // Gradients of Σ y·r for a random r, through our node and through burn's ops.
        let r = random::<4>(fast.dims(), seed + 4);
        let leaf = |t: Tensor<Cpu, 4>| Tensor::<A, 4>::from_data(t.into_data(), &Default::default()).require_grad();
        let (xa, wa, resa) = (leaf(x.clone()), leaf(w.clone()), leaf(residual));
        let ba = Tensor::<A, 2>::from_data(b.clone().into_data(), &Default::default()).require_grad();
        let ra = Tensor::<A, 4>::from_data(r.into_data(), &Default::default());
        let grads = (ops::conv_with(xa.clone(), wa.clone(), ba.clone(), Some(resa.clone()), spec) * ra.clone())
            .sum()
            .backward();
        let [t, bot, l, rt] = spec.padding;
        let padded = xa.clone().pad((l, rt, t, bot), burn::tensor::ops::PadMode::Constant(0.0));
        let options = burn::tensor::ops::ConvOptions::new([spec.stride; 2], [0, 0], [1, 1], 1);
        let y =
            module::conv2d(padded, wa.clone(), None, options) + ba.clone().unsqueeze_dims::<4>(&[2, 3]) + resa.clone();
        let reference = (y * ra).sum().backward();
        for (name, ours, theirs) in [
            ("dx", values(xa.grad(&grads).unwrap()), values(xa.grad(&reference).unwrap())),
            ("dw", values(wa.grad(&grads).unwrap()), values(wa.grad(&reference).unwrap())),
            ("dresidual", values(resa.grad(&grads).unwrap()), values(resa.grad(&reference).unwrap())),
        ] {
            assert_close(&format!("{tag} {name}"), &ours, &theirs, 1e-4);
        }
        assert_close(
            &format!("{tag} db"),
            &values(ba.grad(&grads).unwrap()),
            &values(ba.grad(&reference).unwrap()),
            1e-4,
        );
    }
}

/// Group normalisation with and without swish: the kernel equals burn's GroupNorm (+ silu),
/// forward and backward.
#[test]
fn group_norm_matches_burn_forward_and_backward() {
    for (shape, groups, swish) in
        [([2, 8, 3, 4], 4, true), ([3, 6, 2, 2], 3, false), ([1, 4, 5, 5], 1, true), ([2, 4, 2, 1], 4, false)]
    {
        let tag = format!("{shape:?} groups {groups} swish {swish}");
        let spec = NormSpec { groups, epsilon: 1e-5, swish };
        let x = random(shape, 5).mul_scalar(3.0).add_scalar(1.5);
        let (gamma, beta) = (random([shape[1]], 6), random([shape[1]], 7));
        let r = random::<4>(shape, 8);

        let leaf4 = |t: Tensor<Cpu, 4>| Tensor::<A, 4>::from_data(t.into_data(), &Default::default()).require_grad();
        let leaf1 = |t: Tensor<Cpu, 1>| Tensor::<A, 1>::from_data(t.into_data(), &Default::default()).require_grad();
        let (xa, ga, ba) = (leaf4(x.clone()), leaf1(gamma.clone()), leaf1(beta.clone()));
        let ra = Tensor::<A, 4>::from_data(r.into_data(), &Default::default());
        let ours = ops::group_norm(xa.clone(), ga.clone(), ba.clone(), spec);

        let mut norm = burn::nn::GroupNormConfig::new(groups, shape[1]).init::<A>(&Default::default());
        norm.gamma = Some(burn::module::Param::from_tensor(ga.clone()));
        norm.beta = Some(burn::module::Param::from_tensor(ba.clone()));
        let theirs = norm.forward(xa.clone());
        let theirs = if swish { silu(theirs) } else { theirs };
        assert_close(&format!("{tag} forward"), &values(ours.clone()), &values(theirs.clone()), 1e-5);

        let g_ours = (ours * ra.clone()).sum().backward();
        let g_theirs = (theirs * ra).sum().backward();
        assert_close(
            &format!("{tag} dx"),
            &values(xa.grad(&g_ours).unwrap()),
            &values(xa.grad(&g_theirs).unwrap()),
            1e-4,
        );
        assert_close(
            &format!("{tag} dgamma"),
            &values(ga.grad(&g_ours).unwrap()),
            &values(ga.grad(&g_theirs).unwrap()),
            1e-4,
        );
        assert_close(
            &format!("{tag} dbeta"),
            &values(ba.grad(&g_ours).unwrap()),
            &values(ba.grad(&g_theirs).unwrap()),
            1e-4,
        );
    }
}

/// Attention by its definition in `f64` on the host, per image: `o = v pᵀ` with
/// `p = softmax(qᵀk/√C)` row by row, and the gradients of `Σ o·r` with respect to `q`, `k`, `v`
/// (written out from the chain rule, independently of the kernel's formulas).
fn attention_by_definition(q: &[f32], k: &[f32], v: &[f32], r: &[f32], [n, c, l]: [usize; 3]) -> [Vec<f64>; 4] {
    let mut out = [(); 4].map(|_| vec![0f64; n * c * l]);
    for image in 0..n {
        let at = |x: &[f32], ch: usize, i: usize| f64::from(x[(image * c + ch) * l + i]);
        let mut p = vec![0f64; l * l];
        for i in 0..l {
            let row = &mut p[i * l..(i + 1) * l];
            for (j, s) in row.iter_mut().enumerate() {
                *s = (0..c).map(|ch| at(q, ch, i) * at(k, ch, j)).sum::<f64>() / (c as f64).sqrt();
            }
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
            row.iter_mut().for_each(|s| *s = (*s - max).exp());
            let total: f64 = row.iter().sum();
            row.iter_mut().for_each(|s| *s /= total);
        }
        // dL/dp_ij = Σ_c r[c,i] v[c,j]; through the softmax, ds_ij = p_ij (dp_ij − Σ_j' p_ij' dp_ij'),
        // and through the scaled product, dq[c,i] = Σ_j k[c,j] ds_ij/√C, dk[c,j] = Σ_i q[c,i] ds_ij/√C.
        let mut ds = vec![0f64; l * l];
        for i in 0..l {
            let dp: Vec<f64> = (0..l).map(|j| (0..c).map(|ch| at(r, ch, i) * at(v, ch, j)).sum()).collect();
            let mean: f64 = (0..l).map(|j| p[i * l + j] * dp[j]).sum();
            for j in 0..l {
                ds[i * l + j] = p[i * l + j] * (dp[j] - mean) / (c as f64).sqrt();
            }
        }
        let [o, dq, dk, dv] = &mut out;
        for ch in 0..c {
            let index = |i: usize| (image * c + ch) * l + i;
            for i in 0..l {
                o[index(i)] = (0..l).map(|j| at(v, ch, j) * p[i * l + j]).sum();
                dv[index(i)] = (0..l).map(|j| at(r, ch, j) * p[j * l + i]).sum();
                dq[index(i)] = (0..l).map(|j| at(k, ch, j) * ds[i * l + j]).sum();
                dk[index(i)] = (0..l).map(|j| at(q, ch, j) * ds[j * l + i]).sum();
            }
        }
    }
    out
}

/// Attention over the positions: the kernel's output and gradients (through burn's autodiff)
/// equal the definition in `f64`, with logits up to ±30 (the softmax must subtract its maximum),
/// for batches split across threads and single images (threaded matrix products), to 1e-5 of the
/// largest value. Not against burn's own f32 composition: from 32 positions on, its gradients
/// (of order 1) differ from the definition by up to 2.6e-4 (measured), as much as an error would.
#[test]
fn attention_matches_the_definition_forward_and_backward() {
    let cases = [([3, 4, 10], 1.0), ([1, 8, 33], 1.0), ([2, 5, 7], 4.0), ([1, 16, 64], 1.0)];
    for (i, (shape, spread)) in cases.into_iter().enumerate() {
        let tag = format!("{shape:?} spread {spread}");
        let seed = 10 * i as u64;
        let [q, k, v, r] = [
            random(shape, seed).mul_scalar(spread),
            random(shape, seed + 1).mul_scalar(spread),
            random(shape, seed + 2),
            random(shape, seed + 3),
        ]
        .map(values);
        let leaf = |x: &[f32]| Tensor::<A, 3>::from_data(TensorData::new(x.to_vec(), shape), &Default::default());
        let [qa, ka, va] = [&q, &k, &v].map(|x| leaf(x).require_grad());
        let ours = ops::dot_product_attention(qa.clone(), ka.clone(), va.clone());
        let grads = (ours.clone() * leaf(&r)).sum().backward();
        let want =
            attention_by_definition(&q, &k, &v, &r, shape).map(|x| x.into_iter().map(|v| v as f32).collect::<Vec<_>>());
        assert_close(&format!("{tag} forward"), &values(ours), &want[0], 1e-5);
        for (name, t, want) in [("dq", &qa, &want[1]), ("dk", &ka, &want[2]), ("dv", &va, &want[3])] {
            assert_close(&format!("{tag} {name}"), &values(t.grad(&grads).unwrap()), want, 1e-5);
        }
    }
}

/// The skip connections' channel concatenation equals burn's `cat`, and its backward hands each
/// input its own channels of the gradient.
#[test]
fn channel_concatenation_matches_burn_forward_and_backward() {
    let leaf = |t: Tensor<Cpu, 4>| Tensor::<A, 4>::from_data(t.into_data(), &Default::default()).require_grad();
    let (a, b) = (leaf(random([3, 2, 4, 5], 61)), leaf(random([3, 5, 4, 5], 62)));
    let r = Tensor::<A, 4>::from_data(random::<4>([3, 7, 4, 5], 63).into_data(), &Default::default());
    let ours = ops::concat_channels(a.clone(), b.clone());
    let theirs = Tensor::cat(vec![a.clone(), b.clone()], 1);
    assert_eq!(values(ours.clone()), values(theirs.clone()), "forward");
    let g_ours = (ours * r.clone()).sum().backward();
    let g_theirs = (theirs * r).sum().backward();
    for (name, t) in [("da", &a), ("db", &b)] {
        assert_eq!(values(t.grad(&g_ours).unwrap()), values(t.grad(&g_theirs).unwrap()), "{name}");
    }
}

/// Dropout while training: the gradient of `Σ dropout(x)` is the mask the forward pass applied,
/// the same seed gives the same mask, and without autodiff (evaluation, sampling) it is the identity.
#[test]
fn dropout_applies_one_mask_forward_and_backward() {
    let x = random::<4>([4, 3, 8, 8], 71).add_scalar(5.0); // away from zero: y = 0 only where dropped
    let run = || {
        let _generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        Cpu::seed(&Default::default(), 7);
        let xa = Tensor::<A, 4>::from_data(x.clone().into_data(), &Default::default()).require_grad();
        let y = ops::dropout(xa.clone(), 0.25);
        let grads = y.clone().sum().backward();
        (values(y), values(xa.grad(&grads).unwrap()))
    };
    let (y, mask) = run();
    for ((&y, &m), &x) in y.iter().zip(&mask).zip(&values(x.clone())) {
        assert!(m == 0.0 || (m - 1.0 / 0.75).abs() < 1e-6, "mask value {m}");
        assert!((y - x * m).abs() < 1e-5, "y = {y} for x = {x}, mask {m}");
    }
    assert!(mask.contains(&0.0) && mask.iter().any(|&m| m > 0.0));
    assert_eq!(run(), (y, mask), "the same seed, another mask");
    assert_eq!(values(ops::dropout(x.clone(), 0.25)), values(x), "dropout without autodiff");
}

/// The generic composition (what GPUs run) has the same backward as the kernels.
#[test]
fn generic_backward_passes_match_the_kernels() {
    use burn::tensor::ops::FloatTensor;
    use vdm_backends::ops::FastOps;
    let p = |t: Tensor<Cpu, 4>| ops::primitive(t);
    let spec = ConvSpec { stride: 2, padding: [0, 1, 0, 1] };
    let (x, w, b) = (random([2, 3, 6, 6], 11), random([4, 3, 3, 3], 12), random([4], 13));
    let out = ops::conv(x.clone(), w.clone(), b, spec);
    let grad = random::<4>(out.dims(), 14);
    let fast = Cpu::conv_backward(p(x.clone()), p(w.clone()), p(grad.clone()), spec);
    let slow = generic::conv2d_backward::<Cpu>(p(x), p(w), p(grad), spec);
    let v = |t: FloatTensor<Cpu>| values(ops::tensor::<Cpu, 1>(t).reshape([-1]));
    let flat = |t: FloatTensor<Cpu>| values(ops::tensor::<Cpu, 4>(t));
    assert_close("conv dx", &flat(fast.0), &flat(slow.0), 1e-4);
    assert_close("conv dw", &flat(fast.1), &flat(slow.1), 1e-4);
    assert_close("conv db", &v(fast.2), &v(slow.2), 1e-4);

    let spec = NormSpec { groups: 2, epsilon: 1e-5, swish: true };
    let (x, g, bt, grad) = (random([2, 4, 3, 3], 21), random([4], 22), random([4], 23), random([2, 4, 3, 3], 24));
    let prim1 = |t: Tensor<Cpu, 1>| ops::primitive(t);
    let fast = Cpu::group_norm_backward(p(x.clone()), prim1(g.clone()), prim1(bt.clone()), p(grad.clone()), spec);
    let slow = generic::group_norm_backward::<Cpu>(p(x), prim1(g), prim1(bt), p(grad), spec);
    assert_close("norm dx", &flat(fast.0), &flat(slow.0), 1e-4);
    assert_close("norm dgamma", &v(fast.1), &v(slow.1), 1e-4);
    assert_close("norm dbeta", &v(fast.2), &v(slow.2), 1e-4);

    let z = random::<4>([2, 3, 2, 2], 25).mul_scalar(0.5);
    let f = random::<4>([2, 3, 2, 2], 26).mul_scalar(0.5);
    let precision = Tensor::<Cpu, 1>::from_floats([30.0, 300.0], &Default::default()).reshape([2, 1, 1, 1]);
    let grad = random::<4>([2, 3, 2, 2], 27);
    let fast = Cpu::decoder_nll_backward(p(z.clone()), p(f.clone()), p(precision.clone()), p(grad.clone()), 256);
    let slow = generic::decoder_nll_backward::<Cpu>(p(z), p(f), p(precision), p(grad), 256);
    assert_close("decoder dz", &flat(fast.0), &flat(slow.0), 1e-4);
    assert_close("decoder df", &flat(fast.1), &flat(slow.1), 1e-4);
    assert_close("decoder dP", &flat(fast.2), &flat(slow.2), 1e-4);

    let p3 = |t: Tensor<Cpu, 3>| ops::primitive(t);
    let (q, k, v, grad) = (
        random::<3>([2, 4, 9], 51),
        random::<3>([2, 4, 9], 52),
        random::<3>([2, 4, 9], 53),
        random::<3>([2, 4, 9], 54),
    );
    let fast = Cpu::dot_product_attention_backward(p3(q.clone()), p3(k.clone()), p3(v.clone()), p3(grad.clone()));
    let slow = generic::dot_product_attention_backward::<Cpu>(p3(q), p3(k), p3(v), p3(grad));
    let flat3 = |t: FloatTensor<Cpu>| values(ops::tensor::<Cpu, 3>(t));
    assert_close("attention dq", &flat3(fast.0), &flat3(slow.0), 1e-4);
    assert_close("attention dk", &flat3(fast.1), &flat3(slow.1), 1e-4);
    assert_close("attention dv", &flat3(fast.2), &flat3(slow.2), 1e-4);
}

/// The forward passes the GPU backends run (the generic compositions of burn operations) equal
/// the CPU kernels: group norm with and without swish, attention with large logits, the decoder
/// from sharp to flat, and the channel concatenation and split.
#[test]
fn generic_forward_passes_match_the_kernels() {
    use burn::tensor::ops::FloatTensor;
    use vdm_backends::ops::FastOps;
    let p = |t: Tensor<Cpu, 4>| ops::primitive(t);
    let p1 = |t: Tensor<Cpu, 1>| ops::primitive(t);
    let flat = |t: FloatTensor<Cpu>| values(ops::tensor::<Cpu, 4>(t));
    for (shape, groups, swish) in [([2, 8, 3, 4], 4, true), ([3, 6, 5, 5], 3, false), ([1, 32, 8, 8], 8, true)] {
        let spec = NormSpec { groups, epsilon: 1e-5, swish };
        let (x, g, b) =
            (random(shape, 61).mul_scalar(3.0).add_scalar(1.5), random([shape[1]], 62), random([shape[1]], 63));
        let fast = Cpu::group_norm(p(x.clone()), p1(g.clone()), p1(b.clone()), spec);
        let slow = generic::group_norm::<Cpu>(p(x), p1(g), p1(b), spec);
        assert_close(&format!("norm {shape:?} swish {swish}"), &flat(fast), &flat(slow), 1e-5);
    }
    let p3 = |t: Tensor<Cpu, 3>| ops::primitive(t);
    let flat3 = |t: FloatTensor<Cpu>| values(ops::tensor::<Cpu, 3>(t));
    for (shape, spread) in [([2, 4, 9], 1.0), ([1, 16, 64], 1.0), ([3, 5, 7], 4.0)] {
        let (q, k, v) = (
            random::<3>(shape, 71).mul_scalar(spread),
            random::<3>(shape, 72).mul_scalar(spread),
            random::<3>(shape, 73),
        );
        let fast = Cpu::dot_product_attention(p3(q.clone()), p3(k.clone()), p3(v.clone()));
        let slow = generic::dot_product_attention::<Cpu>(p3(q), p3(k), p3(v));
        assert_close(&format!("attention {shape:?} spread {spread}"), &flat3(fast), &flat3(slow), 1e-5);
    }
    let pixels: Vec<f32> = (0..2 * 3 * 4 * 4).map(|i| ((i * 53) % 256) as f32).collect();
    let f = vdm_core::vlb::encode(
        vdm_backends::tensor::BurnBatch(
            Tensor::<Cpu, 1>::from_floats(pixels.as_slice(), &Default::default()).reshape([2, 3, 4, 4]),
        ),
        256,
    )
    .0;
    for gammas in [[-25.0f32, -13.3], [-6.0, 0.5], [4.0, 6.0]] {
        let z = f.clone() + random::<4>([2, 3, 4, 4], 81).mul_scalar(0.02);
        let precision = Tensor::<Cpu, 1>::from_floats(gammas.map(|g| (-g).exp()).as_slice(), &Default::default())
            .reshape([2, 1, 1, 1]);
        let fast = Cpu::decoder_nll(p(z.clone()), p(f.clone()), p(precision.clone()), 256);
        let slow = generic::decoder_nll::<Cpu>(p(z), p(f.clone()), p(precision), 256);
        assert_close(&format!("decoder γ {gammas:?}"), &flat(fast), &flat(slow), 2e-5);
    }
    let (a, b) = (random::<4>([2, 3, 4, 5], 91), random::<4>([2, 2, 4, 5], 92));
    let joined = Cpu::concat_channels(p(a.clone()), p(b.clone()));
    assert_eq!(flat(joined.clone()), flat(generic::concat_channels::<Cpu>(p(a.clone()), p(b.clone()))));
    let (left, right) = Cpu::split_channels(joined, 3);
    assert_eq!((flat(left), flat(right)), (values(a), values(b)));
}

/// A central difference in f64 of a scalar loss through the kernel confirms its gradient.
#[test]
fn convolution_gradient_matches_finite_differences() {
    let spec = ConvSpec::same(3);
    let (x, w, b) = (random([1, 2, 4, 4], 31), random([3, 2, 3, 3], 32), random([3], 33));
    let loss = |w: Tensor<Cpu, 4>| -> f64 {
        values(ops::conv(x.clone(), w, b.clone(), spec).powi_scalar(2)).iter().map(|&v| f64::from(v)).sum()
    };
    let wa = Tensor::<A, 4>::from_data(w.clone().into_data(), &Default::default()).require_grad();
    let xa = Tensor::<A, 4>::from_data(x.clone().into_data(), &Default::default());
    let ba = Tensor::<A, 1>::from_data(b.clone().into_data(), &Default::default()).require_grad();
    let grads = ops::conv(xa, wa.clone(), ba.clone(), spec).powi_scalar(2).sum().backward();
    let g = values(wa.grad(&grads).unwrap());
    // The bias shared by the images: ∂/∂b_o Σ y² = Σ_{n,h,w} 2 y[n, o, h, w].
    let y = ops::conv(x.clone(), w.clone(), b.clone(), spec);
    let want: Vec<f32> = values(y.mul_scalar(2.0).sum_dims(&[0, 2, 3]).reshape([3]));
    assert_close("db", &values(ba.grad(&grads).unwrap()), &want, 1e-5);
    let mut wv = values(w.clone());
    for idx in [0, 7, 20, 53] {
        let h = 1e-2f32;
        let at = |wv: &[f32]| loss(Tensor::<Cpu, 1>::from_floats(wv, &Default::default()).reshape([3, 2, 3, 3]));
        wv[idx] += h;
        let up = at(&wv);
        wv[idx] -= 2.0 * h;
        let down = at(&wv);
        wv[idx] += h;
        let fd = (up - down) / (2.0 * f64::from(h));
        assert!(
            (f64::from(g[idx]) - fd).abs() < 2e-2 * fd.abs().max(1.0),
            "dw[{idx}]: {} vs finite difference {fd}",
            g[idx]
        );
    }
}

/// VDM's decoder: the kernel's values and gradients equal burn's autodiff through vdm-core's
/// composition, from sharp (γ₀ = −25) to flat (γ₀ = 6) decoders, per-image and shared precision.
#[test]
fn decoder_matches_autodiff_through_the_core_composition() {
    use vdm_backends::tensor::BurnBatch;
    let pixels: Vec<f32> = (0..2 * 3 * 2 * 2).map(|i| ((i * 53) % 256) as f32).collect();
    for (gammas, label) in [(vec![-25.0f32, -13.3], "per image"), (vec![-6.0, 0.5], "per image"), (vec![6.0], "shared")]
    {
        let n = gammas.len();
        let precision_values: Vec<f32> = gammas.iter().map(|g| (-g).exp()).collect();
        let f = vdm_core::vlb::encode(
            BurnBatch(Tensor::<Cpu, 1>::from_floats(pixels.as_slice(), &Default::default()).reshape([2, 3, 2, 2])),
            256,
        )
        .0;
        // z near the data, with offsets of up to a few bins.
        let z = f.clone() + random::<4>([2, 3, 2, 2], 41).mul_scalar(0.02);
        let ps = [n, 1, 1, 1];
        let r = random::<4>([2, 3, 2, 2], 42);
        let leaf = |t: Tensor<Cpu, 4>| Tensor::<A, 4>::from_data(t.into_data(), &Default::default()).require_grad();
        let p = Tensor::<Cpu, 1>::from_floats(precision_values.as_slice(), &Default::default()).reshape(ps);
        let (za, fa, pa) = (leaf(z.clone()), leaf(f.clone()), leaf(p.clone()));
        let ra = Tensor::<A, 4>::from_data(r.into_data(), &Default::default());

        let ours = ops::decoder_nll(za.clone(), fa.clone(), pa.clone(), 256);
        let theirs =
            vdm_core::vlb::decoder_nll(BurnBatch(fa.clone()), BurnBatch(za.clone()), BurnBatch(pa.clone()), 256).0;
        assert_close(&format!("{label} {gammas:?} forward"), &values(ours.clone()), &values(theirs.clone()), 2e-5);
        let g_ours = (ours * ra.clone()).sum().backward();
        let g_theirs = (theirs * ra).sum().backward();
        for (name, t) in [("dz", &za), ("df", &fa), ("dP", &pa)] {
            assert_close(
                &format!("{label} {gammas:?} {name}"),
                &values(t.grad(&g_ours).unwrap()),
                &values(t.grad(&g_theirs).unwrap()),
                2e-3,
            );
        }
    }
}
