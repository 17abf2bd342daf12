//! Copies between the host and the device, counted.
//!
//! Every copy the models, the schedule and the trainer make goes through [`upload`] or
//! [`download`]. On a GPU a download waits for all the work queued before it (a synchronisation
//! point) and an upload is a separate queue submission, so their number per training step is a
//! property worth measuring: [`Transfers::counted`] counts those made by the calling thread while
//! a closure runs (docs/results.md, "Host–device round trips per training step").

use std::cell::Cell;

use burn::tensor::backend::Backend;
use burn::tensor::{BasicOps, Tensor, TensorData, TensorKind};

thread_local! {
    static COUNTS: Cell<Transfers> = const { Cell::new(Transfers { uploads: 0, downloads: 0 }) };
}

/// Host↔device copies made by this crate's code on one thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Host → device.
    pub uploads: usize,
    /// Device → host: each waits for the device.
    pub downloads: usize,
}

impl Transfers {
    /// Runs `f` and returns its result with the copies it made on this thread.
    pub fn counted<R>(f: impl FnOnce() -> R) -> (R, Self) {
        let before = COUNTS.get();
        let result = f();
        let after = COUNTS.get();
        (result, Self { uploads: after.uploads - before.uploads, downloads: after.downloads - before.downloads })
    }
}

/// `data` on `device` (one host → device copy).
pub fn upload<B: Backend, const D: usize, K: TensorKind<B> + BasicOps<B>>(
    data: TensorData,
    device: &B::Device,
) -> Tensor<B, D, K> {
    COUNTS.set(Transfers { uploads: COUNTS.get().uploads + 1, ..COUNTS.get() });
    Tensor::from_data(data, device)
}

/// `tensor`'s values on the host (one device → host copy, which waits for the device).
pub fn download<B: Backend, const D: usize, K: TensorKind<B> + BasicOps<B>>(tensor: Tensor<B, D, K>) -> TensorData {
    COUNTS.set(Transfers { downloads: COUNTS.get().downloads + 1, ..COUNTS.get() });
    tensor.into_data()
}

/// Several vectors of values on `device` in one copy, as tensors `[len]` each.
pub fn upload_rows<B: Backend, const R: usize>(rows: [&[f64]; R], device: &B::Device) -> [Tensor<B, 1>; R] {
    let values = rows.concat();
    let len = values.len();
    let all: Tensor<B, 1> = upload(TensorData::new(values, [len]), device);
    let mut start = 0;
    rows.map(|row| {
        start += row.len();
        all.clone().slice(start - row.len()..start)
    })
}

/// `tensors`' values on the host in one copy, in `f64`, one vector per tensor.
pub fn download_values<B: Backend, const N: usize>(tensors: [Tensor<B, 1>; N]) -> [Vec<f64>; N] {
    let lengths = tensors.each_ref().map(|t| t.dims()[0]);
    let all: Vec<f64> = download(Tensor::cat(tensors.into(), 0)).iter::<f64>().collect();
    let mut start = 0;
    lengths.map(|len| {
        start += len;
        all[start - len..start].to_vec()
    })
}
