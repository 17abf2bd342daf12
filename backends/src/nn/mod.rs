//! The networks: VDM's score U-Net, DDPM's U-Net, and the blocks they are built from.

pub mod blocks;
pub mod classifier;
pub mod ddpm_unet;
pub mod score_unet;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `module` with every parameter allocated now, in visiting order: burn initialises parameters
/// lazily, and copies (the EMA) must start from the same weights as the model.
pub fn materialise<B: Backend, M: Module<B>>(module: M) -> M {
    struct Materialise;
    impl<B: Backend> ModuleVisitor<B> for Materialise {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Materialise);
    module
}
