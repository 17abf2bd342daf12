//! The networks: VDM's score U-Net and the blocks it is built from.

pub mod blocks;
pub mod score_unet;
