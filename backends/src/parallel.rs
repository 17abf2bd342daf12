//! Data-parallel training on burn-collective: replicas of one run on several devices (threads of
//! one process, and processes on several machines through burn-collective's global orchestrator),
//! each computing the gradient of its share of every batch. burn-collective's all-reduce sums the
//! shares, so every replica takes the same optimiser step from the same gradient and the replicas
//! stay equal.
//!
//! Replica `r` of `R` takes the images `⌊rN/R⌋ .. ⌊(r+1)N/R⌋` of each batch of `N` ([`Shard`]).
//! The step's randomness (`ε`, the antithetic times) is drawn for the whole batch from the step's
//! stream and sliced, and a share's loss is the sum of its images' losses over `N`, so the shares'
//! gradients add up to the whole batch's gradient: a run does not depend on the number of
//! replicas beyond `f32` rounding. Dropout is the exception: each replica draws its own masks.

use std::marker::PhantomData;
use std::ops::Range;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend, BackendTypes};
use burn::tensor::{Tensor, TensorPrimitive};
use burn_collective::{AllReduceStrategy, CollectiveConfig, CollectiveError, PeerId, ReduceOperation};

use crate::error::{Error, Result};

/// A replica's share of a batch: the images `start .. start + len` of a batch of `of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// The first image's index in the batch.
    pub start: usize,
    /// How many images.
    pub len: usize,
    /// The batch's size.
    pub of: usize,
}

impl Shard {
    /// The whole batch of `n` images (training on one device).
    pub fn whole(n: usize) -> Self {
        Self { start: 0, len: n, of: n }
    }

    /// Replica `rank`'s share of a batch of `n` among `replicas`: `⌊rank·n/replicas⌋ ..
    /// ⌊(rank+1)·n/replicas⌋`, so the shares' sizes differ by at most one.
    pub fn of_replica(rank: usize, replicas: usize, n: usize) -> Self {
        let (start, end) = (rank * n / replicas, (rank + 1) * n / replicas);
        Self { start, len: end - start, of: n }
    }

    /// The images' indices in the batch.
    pub fn range(&self) -> Range<usize> {
        self.start..self.start + self.len
    }

    /// The share's weight in the batch's mean, `len / of`.
    pub fn weight(&self) -> f64 {
        self.len as f64 / self.of as f64
    }

    /// The share's part of `values`, `per_image` values for each image of the batch.
    pub fn slice<T: Clone>(&self, values: &[T], per_image: usize) -> Vec<T> {
        values[self.start * per_image..(self.start + self.len) * per_image].to_vec()
    }
}

/// The processes of a run on several machines (burn-collective's global level): every process
/// runs the same number of replicas, and their gradients meet through the orchestrator that
/// `vdm orchestrator` (burn-collective's `start_global_orchestrator`) serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nodes {
    count: usize,
    rank: usize,
    orchestrator: String,
    address: String,
    port: u16,
}

impl Nodes {
    /// Process `rank` of `count` (from 0; its replicas take the batch's shares `rank · local ..`),
    /// reaching the orchestrator at `orchestrator` and reached by the others at `address` (both
    /// `ws://HOST:PORT`; this process serves its tensors on the port of `address`). Refuses fewer
    /// than 2 processes, a rank out of range and addresses of another form.
    pub fn new(count: usize, rank: usize, orchestrator: String, address: String) -> Result<Self> {
        for (field, value) in [("orchestrator", &orchestrator), ("node-address", &address)] {
            if !value.starts_with("ws://") {
                return Err(Error::setting(
                    field,
                    format!("--{field} {value}: give a WebSocket address, ws://HOST:PORT"),
                ));
            }
        }
        let port = address
            .rsplit_once(':')
            .and_then(|(_, port)| port.trim_end_matches('/').parse::<u16>().ok())
            .ok_or_else(|| {
                Error::setting(
                    "node-address",
                    format!("--node-address {address}: give the port this process serves on, ws://HOST:PORT"),
                )
            })?;
        if count < 2 || rank >= count {
            return Err(Error::setting(
                "nodes",
                format!(
                    "--nodes {count} --node-rank {rank}: a run on several machines has 2 or more, ranked 0 to {}",
                    count.max(2) - 1
                ),
            ));
        }
        Ok(Self { count, rank, orchestrator, address, port })
    }

    /// How many processes take part.
    pub fn count(&self) -> usize {
        self.count
    }

    /// This process's index, `0 .. count`; process 0 writes the run.
    pub fn rank(&self) -> usize {
        self.rank
    }
}

/// How a run's replicas are laid out: `local` devices in this process, and the processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Replicas (devices) in this process.
    pub local: usize,
    /// The processes, when there are several.
    pub nodes: Option<Nodes>,
}

impl Layout {
    /// All replicas of the run: `local` times the number of processes.
    pub fn replicas(&self) -> usize {
        self.local * self.nodes.as_ref().map_or(1, |n| n.count)
    }

    /// The run-wide rank of this process's replica `local_rank`.
    pub fn rank(&self, local_rank: usize) -> usize {
        self.nodes.as_ref().map_or(0, |n| n.rank) * self.local + local_rank
    }

    /// Refuses an empty layout and a batch some replica would get no image of.
    pub fn check(&self, batch_size: usize) -> Result<()> {
        if self.local == 0 {
            return Err(Error::setting("devices", "data-parallel training needs at least one device"));
        }
        if batch_size < self.replicas() {
            return Err(Error::setting(
                "train.batch_size",
                format!(
                    "train.batch_size {batch_size} is smaller than the {} replicas: each needs at least one image of every batch",
                    self.replicas()
                ),
            ));
        }
        Ok(())
    }
}

/// One replica of a data-parallel run, registered with burn-collective on backend `B` (a
/// training backend's inner backend: gradients are plain tensors).
#[derive(Debug)]
pub struct Replica<B: Backend> {
    peer: PeerId,
    device: B::Device,
    rank: usize,
    count: usize,
    backend: PhantomData<B>,
}

impl<B: Backend> Replica<B> {
    /// Registers this process's replica `local_rank` of `layout`, on `device`, with
    /// burn-collective. Returns once every replica of the run has registered: every one of this
    /// process and, with several processes, every process's through the orchestrator.
    pub fn join(local_rank: usize, layout: &Layout, device: &B::Device) -> Result<Self> {
        let mut config = CollectiveConfig::default()
            .with_num_devices(layout.local)
            .with_local_all_reduce_strategy(AllReduceStrategy::Tree(2));
        if let Some(nodes) = &layout.nodes {
            config = config
                .with_num_nodes(nodes.count as u32)
                .with_global_address(nodes.orchestrator.parse().expect("an address is any string"))
                .with_node_address(nodes.address.parse().expect("an address is any string"))
                .with_data_service_port(nodes.port)
                .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2));
        }
        let rank = layout.rank(local_rank);
        let peer = PeerId::from(rank as u32);
        burn_collective::register::<B>(peer, device.clone(), config).map_err(|e| failed("registering", e))?;
        Ok(Self { peer, device: device.clone(), rank, count: layout.replicas(), backend: PhantomData })
    }

    /// This replica's index in the run, `0 .. count`; replica 0 writes the checkpoints.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many replicas the run has.
    pub fn count(&self) -> usize {
        self.count
    }

    /// This replica's share of a batch of `n`.
    pub fn shard(&self, n: usize) -> Shard {
        Shard::of_replica(self.rank, self.count, n)
    }

    /// `tensor` summed over the replicas (each passes its own; each gets the same sum).
    pub fn sum<const D: usize>(&self, tensor: Tensor<B, D>) -> Result<Tensor<B, D>> {
        self.finish_queued_work()?;
        let (own, shared) = self.sum_and_copy(tensor)?;
        self.release(vec![shared])?;
        Ok(own)
    }

    /// The sum in a buffer of this replica's own, and the sum as received. Replicas on one device
    /// receive one buffer, which one of them may change in place (burn reuses a buffer no other
    /// tensor holds) while another's reads of it are still queued on its own stream: the caller
    /// holds the received sum until [`Replica::release`] has waited for those reads.
    fn sum_and_copy<const D: usize>(&self, tensor: Tensor<B, D>) -> Result<(Tensor<B, D>, Tensor<B, D>)> {
        let summed =
            burn_collective::all_reduce::<B>(self.peer, tensor.into_primitive().tensor(), ReduceOperation::Sum)
                .map_err(|e| failed("summing across the replicas", e))?;
        let summed = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(summed));
        Ok((summed.clone().mul_scalar(1.0), summed))
    }

    /// Waits for this replica's queued work, then lets the shared sums go.
    fn release<T>(&self, shared: Vec<T>) -> Result<()> {
        self.finish_queued_work()?;
        drop(shared);
        Ok(())
    }

    /// Waits for the work this thread queued on the device: before the collective, which runs on
    /// a thread (a device stream) of its own, reads this replica's tensors, and before the shared
    /// sums go.
    fn finish_queued_work(&self) -> Result<()> {
        B::sync(&self.device)
            .map_err(|e| Error::Collective(format!("data-parallel training: the device failed: {e:?}")))
    }

    /// Leaves the collective; the last replica of a process to leave closes its connections.
    pub fn leave(self) -> Result<()> {
        burn_collective::finish_collective::<B>(self.peer).map_err(|e| failed("leaving", e))
    }

    /// The gradients of `module`'s parameters summed over the replicas, one all-reduce per
    /// parameter in the module's order (the same on every replica; parameter ids are not: each
    /// process draws its own).
    pub fn sum_gradients<A: AutodiffBackend<InnerBackend = B>, M: AutodiffModule<A>>(
        &self,
        module: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams> {
        struct Sum<'a, B: AutodiffBackend> {
            replica: &'a Replica<B::InnerBackend>,
            grads: GradientsParams,
            shared: Vec<<B::InnerBackend as BackendTypes>::FloatTensorPrimitive>,
            failure: Option<Error>,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Sum<'_, B> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if self.failure.is_some() {
                    return;
                }
                if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    match self.replica.sum_and_copy(grad) {
                        Ok((own, shared)) => {
                            self.grads.register::<B::InnerBackend, D>(param.id, own);
                            self.shared.push(shared.into_primitive().tensor());
                        }
                        Err(e) => self.failure = Some(e),
                    }
                }
            }
        }
        self.finish_queued_work()?;
        let mut visitor = Sum::<A> { replica: self, grads, shared: Vec::new(), failure: None };
        module.visit(&mut visitor);
        self.release(visitor.shared)?;
        match visitor.failure {
            Some(e) => Err(e),
            None => Ok(visitor.grads),
        }
    }
}

/// A collective operation's failure as the library's error.
fn failed(what: &str, e: CollectiveError) -> Error {
    // burn-collective does not export the type of its global errors: they are told by name.
    let detail = format!("{e:?}");
    let why = if detail.contains("PeerLost") {
        format!("another process of the run was lost: it stopped, or its connection broke ({detail})")
    } else if detail.contains("LocalServerMissing") {
        format!("its network layer failed, as when another process of the run was lost ({detail})")
    } else if detail.contains("OrchestratorUnreachable") {
        "the orchestrator cannot be reached (is `vdm orchestrator` running at --orchestrator?)".to_string()
    } else {
        format!("burn-collective: {detail}")
    };
    Error::Collective(format!("data-parallel training: {what} failed: {why}"))
}
