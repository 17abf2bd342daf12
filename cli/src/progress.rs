//! Progress of long work: a bar on a terminal, plain lines when stderr is a file or a pipe.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a plain progress line is printed when stderr is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(30);

/// Progress of `total` units of work, reported on stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    total: u64,
    position: u64,
    /// Where this process started (a resumed run starts past 0): the pace counts from here.
    start_position: u64,
    message: String,
    start: Instant,
    last_line: Option<Instant>,
}

impl Progress {
    /// Progress of `total` units labelled `what`, starting at `position`.
    pub fn new(total: usize, what: &str, position: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            let bar = ProgressBar::new(total as u64).with_style(style).with_prefix(what.to_string());
            bar.set_position(position as u64);
            bar
        });
        Self {
            bar,
            what: what.into(),
            total: total as u64,
            position: position as u64,
            start_position: position as u64,
            message: String::new(),
            start: Instant::now(),
            last_line: None,
        }
    }

    /// Sets the position and the message. Without a terminal, prints a line for the first update,
    /// then at most every 30 seconds, and for the last unit.
    pub fn set(&mut self, position: usize, message: impl Into<String>) {
        self.position = position as u64;
        self.message = message.into();
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.position);
                bar.set_message(self.message.clone());
            }
            None => {
                let due = self.last_line.is_none_or(|t| t.elapsed() >= LINE_INTERVAL) || self.position >= self.total;
                if due {
                    self.last_line = Some(Instant::now());
                    eprintln!("{}", self.line());
                }
            }
        }
    }

    /// Advances by `units`.
    pub fn advance(&mut self, units: usize) {
        let message = std::mem::take(&mut self.message);
        self.set(self.position as usize + units, message);
    }

    fn line(&self) -> String {
        let elapsed = self.start.elapsed().as_secs_f64();
        let percent = 100.0 * self.position as f64 / self.total.max(1) as f64;
        let mut line = format!("{} {}/{} ({percent:.1}%)", self.what, self.position, self.total);
        if !self.message.is_empty() {
            line.push_str(&format!(" {}", self.message));
        }
        line.push_str(&format!(", {} elapsed", clock(elapsed)));
        if let Some(left) = remaining(
            elapsed,
            self.position.saturating_sub(self.start_position),
            self.total.saturating_sub(self.position),
        ) {
            line.push_str(&format!(", about {} left", clock(left)));
        }
        line
    }

    /// Prints `line` above the bar (or as a plain line).
    pub fn println(&self, line: impl AsRef<str>) {
        match &self.bar {
            Some(bar) => bar.println(line.as_ref()),
            None => println!("{}", line.as_ref()),
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The time the `left` units still take at the pace of the `done` units of `elapsed` seconds
/// (none before the first unit or after the last).
fn remaining(elapsed: f64, done: u64, left: u64) -> Option<f64> {
    (done > 0 && left > 0).then(|| elapsed * left as f64 / done as f64)
}

/// `1h02m03s`, `4m05s`, `6.2s`, `0.38s`.
pub fn clock(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    if seconds < 10.0 {
        return format!("{seconds:.2}s");
    }
    let s = seconds.round() as u64;
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, min, sec) => format!("{h}h{min:02}m{sec:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_is_the_pace_so_far_times_the_units_left() {
        assert_eq!(remaining(12.0, 3, 5), Some(20.0));
        assert_eq!(remaining(12.0, 0, 5), None, "no pace before the first unit");
        assert_eq!(remaining(12.0, 8, 0), None, "nothing left");
    }

    /// A plain line (stderr not a terminal, as under a scheduler) says how long is left, counting
    /// the pace from where this process started.
    #[test]
    fn plain_lines_say_how_long_is_left() {
        let mut progress = Progress { bar: None, ..Progress::new(100, "sample", 40) };
        progress.start = Instant::now() - Duration::from_secs(20);
        progress.position = 50;
        let line = progress.line();
        assert!(line.starts_with("sample 50/100 (50.0%)"), "{line}");
        assert!(line.contains(", about 1m40s left"), "{line}"); // 10 units in 20 s, 50 to go
    }
}
