//! burn backends for vdm-core.
pub mod schedule;
pub mod score;
pub mod tensor;
