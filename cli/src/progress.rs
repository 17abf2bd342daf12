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
