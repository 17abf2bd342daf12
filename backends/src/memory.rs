//! Refusing work that cannot fit in memory, before allocating it.
//!
//! An allocation that fails aborts the process ("memory allocation of N bytes failed") with no
//! chance to report it, so sizes that come from a user (batch sizes, model widths, image counts)
//! are estimated first and refused with the estimate.

use std::fmt;

use crate::error::{Error, Result};

/// Bytes of memory the operating system reports as available for new allocations
/// (`MemAvailable` in `/proc/meminfo`); `None` where that is unknown.
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The most memory this process has held resident so far (`VmHWM` in `/proc/self/status`).
pub fn peak_resident() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// A byte count, printed in human units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        match self.0 {
            0..=9_999 => write!(f, "{} B", self.0),
            10_000..=9_999_999 => write!(f, "{:.1} kB", b / 1e3),
            10_000_000..=9_999_999_999 => write!(f, "{:.1} MB", b / 1e6),
            _ => write!(f, "{:.1} GB", b / 1e9),
        }
    }
}

/// `f32` values → bytes, saturating (so that absurd sizes compare as absurd, not wrap around).
pub fn f32s(count: u128) -> u64 {
    u64::try_from(count.saturating_mul(4)).unwrap_or(u64::MAX)
}

/// Refuses `what` if its estimated `need` exceeds the memory available now.
pub fn check(what: &str, need: u64, advice: &str) -> Result<()> {
    check_against(what, need, available(), advice)
}

fn check_against(what: &str, need: u64, available: Option<u64>, advice: &str) -> Result<()> {
    match available {
        Some(have) if need > have => Err(Error::Memory(format!(
            "{what} needs about {} of memory, and this machine has {} available; {advice}",
            Bytes(need),
            Bytes(have)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_human_units() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(150_000_000).to_string(), "150.0 MB");
        assert_eq!(Bytes(12_300_000_000).to_string(), "12.3 GB");
        assert_eq!(f32s(u128::MAX), u64::MAX);
    }

    #[test]
    fn refusals_state_the_estimate_and_what_is_available() {
        let err = check_against("training", 40_000_000_000, Some(20_000_000_000), "lower train.batch_size")
            .unwrap_err()
            .to_string();
        assert!(err.contains("40.0 GB") && err.contains("20.0 GB") && err.contains("train.batch_size"), "{err}");
        assert!(check_against("training", 1, Some(2), "").is_ok());
        assert!(check_against("training", u64::MAX, None, "").is_ok(), "unknown availability refuses nothing");
        assert!(available().is_some_and(|b| b > 0), "/proc/meminfo is readable on Linux");
    }
}
