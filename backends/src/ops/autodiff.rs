//! The backward passes of [`FastOps`] under burn's autodiff: each fused operation is one node of
//! the graph, whose backward calls the inner backend's `*_backward`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorMetadata};

use super::{ConvSpec, FastOps, NormSpec};

/// A convolution over the parents `[x, weight, bias]`, or `[x, weight, bias, residual]` with a
/// residual added, whose gradient is the output's own.
#[derive(Debug)]
struct Conv2dBackward(ConvSpec);

impl<B: FastOps, const N: usize> Backward<B, N> for Conv2dBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight) = ops.state;
        let (dx, dw, db) = B::conv_backward(x, weight, grad.clone(), self.0);
        let mut values = [dx, dw, db, grad].into_iter();
        let values = std::array::from_fn(|_| values.next().expect("a convolution has 3 or 4 parents"));
        register_parents::<B, N>(grads, ops.parents.map(|p| p.map(|node| node.id)), values);
    }
}

/// The split point: the first input's channels.
#[derive(Debug)]
struct ConcatBackward(usize);

impl<B: FastOps> Backward<B, 2> for ConcatBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (da, db) = B::split_channels(grad, self.0);
        register_parents::<B, 2>(grads, ops.parents.map(|p| p.map(|node| node.id)), [da, db]);
    }
}

#[derive(Debug)]
struct GroupNormBackward(NormSpec);

impl<B: FastOps> Backward<B, 3> for GroupNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, gamma, beta) = ops.state;
        let (dx, d_gamma, d_beta) = B::group_norm_backward(x, gamma, beta, grad, self.0);
        register_parents::<B, 3>(grads, ops.parents.map(|p| p.map(|node| node.id)), [dx, d_gamma, d_beta]);
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: FastOps> Backward<B, 3> for AttentionBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (q, k, v) = ops.state;
        let (dq, dk, dv) = B::dot_product_attention_backward(q, k, v, grad);
        register_parents::<B, 3>(grads, ops.parents.map(|p| p.map(|node| node.id)), [dq, dk, dv]);
    }
}

#[derive(Debug)]
struct DecoderBackward(usize);

impl<B: FastOps> Backward<B, 3> for DecoderBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (z, f, precision) = ops.state;
        let (dz, df, dp) = B::decoder_nll_backward(z, f, precision, grad, self.0);
        register_parents::<B, 3>(grads, ops.parents.map(|p| p.map(|node| node.id)), [dz, df, dp]);
    }
}

/// Hands each tracked parent its gradient (untracked parents, `None`, get none).
fn register_parents<B: FastOps, const N: usize>(
    grads: &mut Gradients,
    parents: [Option<NodeId>; N],
    values: [FloatTensor<B>; N],
) {
    for (parent, value) in parents.into_iter().zip(values) {
        if let Some(id) = parent {
            grads.register::<B>(id, value);
        }
    }
}

impl<B: FastOps, C: CheckpointStrategy> FastOps for Autodiff<B, C> {
    fn decoder_nll(
        z: FloatTensor<Self>,
        f: FloatTensor<Self>,
        precision: FloatTensor<Self>,
        vocab: usize,
    ) -> FloatTensor<Self> {
        let output = B::decoder_nll(z.primitive.clone(), f.primitive.clone(), precision.primitive.clone(), vocab);
        match DecoderBackward(vocab)
            .prepare::<C>([z.node.clone(), f.node.clone(), precision.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((z.primitive, f.primitive, precision.primitive), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: Option<FloatTensor<Self>>,
        spec: ConvSpec,
    ) -> FloatTensor<Self> {
        let output = B::conv(
            x.primitive.clone(),
            weight.primitive.clone(),
            bias.primitive,
            residual.as_ref().map(|r| r.primitive.clone()),
            spec,
        );
        let state = (x.primitive, weight.primitive);
        let (x, weight, bias) = (x.node, weight.node, bias.node);
        match residual {
            None => match Conv2dBackward(spec).prepare::<C>([x, weight, bias]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(state, output),
                OpsKind::UnTracked(prep) => prep.finish(output),
            },
            Some(r) => match Conv2dBackward(spec).prepare::<C>([x, weight, bias, r.node]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(state, output),
                OpsKind::UnTracked(prep) => prep.finish(output),
            },
        }
    }

    fn dot_product_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
        let output = B::dot_product_attention(q.primitive.clone(), k.primitive.clone(), v.primitive.clone());
        match AttentionBackward
            .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((q.primitive, k.primitive, v.primitive), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn concat_channels(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let channels = a.primitive.shape()[1];
        let output = B::concat_channels(a.primitive, b.primitive);
        ConcatBackward(channels).prepare::<C>([a.node, b.node]).compute_bound().stateless(output)
    }

    fn dropout_mask(shape: Shape, keep: f64, device: &Self::Device) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::dropout_mask(shape, keep, device))
    }

    fn group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        spec: NormSpec,
    ) -> FloatTensor<Self> {
        let output = B::group_norm(x.primitive.clone(), gamma.primitive.clone(), beta.primitive.clone(), spec);
        match GroupNormBackward(spec)
            .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x.primitive, gamma.primitive, beta.primitive), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}
