//! The networks: VDM's score U-Net, DDPM's U-Net, and the blocks they are built from.

pub mod blocks;
pub mod classifier;
pub mod ddpm_unet;
pub mod score_unet;
