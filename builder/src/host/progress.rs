//! Progress reporting for long steps.
//!
//! On a terminal a step shows an indicatif bar; anywhere else (CI logs, pipes) it
//! prints a plain line every few seconds and one at the end, so every step stays
//! visible in a log without control characters.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain fallback reports.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

/// When each step of this process began, for [`step_timings`].
static STEPS: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());

/// Announces a pipeline step on stderr, mkosi-style, so the log reads as a list of steps.
pub fn step(message: impl AsRef<str>) {
    eprintln!("==> {}", message.as_ref());
    if let Ok(mut steps) = STEPS.lock() {
        steps.push((message.as_ref().to_string(), Instant::now()));
    }
}

/// How long each step so far took (until the next began, the last until now), as lines for the
/// build log: where a build's time goes.
pub fn step_timings() -> Vec<String> {
    let steps = STEPS.lock().map(|s| s.clone()).unwrap_or_default();
    let now = Instant::now();
    let durations: Vec<(String, Duration)> = steps
        .iter()
        .enumerate()
        .map(|(i, (name, began))| {
            let ended = steps.get(i + 1).map_or(now, |(_, next)| *next);
            (name.clone(), ended.saturating_duration_since(*began))
        })
        .collect();
    timing_lines(&durations)
}

/// `  12.3 s  43 %  name` per step, the name cut at its first colon or 60 characters.
pub fn timing_lines(durations: &[(String, Duration)]) -> Vec<String> {
    let total: f64 = durations.iter().map(|(_, d)| d.as_secs_f64()).sum();
    durations
        .iter()
        .map(|(name, took)| {
            let short: String = name
                .split(':')
                .next()
                .unwrap_or(name)
                .chars()
                .take(60)
                .collect();
            let share = if total > 0.0 {
                100.0 * took.as_secs_f64() / total
            } else {
                0.0
            };
            format!("{:>7.1} s {share:>3.0} %  {short}", took.as_secs_f64())
        })
        .collect()
}

/// Prints a detail line under the current step.
pub fn detail(message: impl AsRef<str>) {
    eprintln!("    {}", message.as_ref());
}

/// Whether progress bars should be drawn (stderr is a terminal).
pub fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// A byte counter for one long step.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    bar: Option<ProgressBar>,
    last_plain: Instant,
}

impl Progress {
    /// Starts counting `total` bytes (0 when unknown) for the step `label`.
    pub fn bytes(label: impl Into<String>, total: u64) -> Self {
        let label = label.into();
        let bar = interactive().then(|| {
            let bar = if total > 0 {
                ProgressBar::new(total)
            } else {
                ProgressBar::new_spinner()
            };
            bar.set_draw_target(ProgressDrawTarget::stderr());
            let template = if total > 0 {
                "    {msg:<18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
            } else {
                "    {msg:<18} {spinner} {bytes} {bytes_per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.clone());
            bar
        });
        let now = Instant::now();
        Progress {
            label,
            total,
            done: 0,
            started: now,
            bar,
            last_plain: now,
        }
    }

    /// Records `n` more bytes done.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None => {
                if self.last_plain.elapsed() >= PLAIN_INTERVAL {
                    self.last_plain = Instant::now();
                    detail(self.summary());
                }
            }
        }
    }

    /// Bytes counted so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Ends the step and prints its total and throughput.
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        detail(format!(
            "{}: {} in {:.1} s ({}/s)",
            self.label,
            human_bytes(self.done),
            self.started.elapsed().as_secs_f64(),
            human_bytes(self.rate() as u64)
        ));
    }

    fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.done as f64 / secs
    }

    fn summary(&self) -> String {
        if self.total > 0 {
            let percent = self.done as f64 * 100.0 / self.total as f64;
            let eta = if self.done > 0 {
                (self.total - self.done.min(self.total)) as f64 / self.rate()
            } else {
                0.0
            };
            format!(
                "{}: {:.0}% ({} of {}, {}/s, ETA {:.0} s)",
                self.label,
                percent,
                human_bytes(self.done),
                human_bytes(self.total),
                human_bytes(self.rate() as u64),
                eta
            )
        } else {
            format!("{}: {}", self.label, human_bytes(self.done))
        }
    }
}

/// Formats a byte count with binary units ("1.5 GiB").
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_name_each_step_with_its_share() {
        let lines = timing_lines(&[
            ("Root file system: cached".into(), Duration::from_secs(3)),
            ("Compress".into(), Duration::from_secs(1)),
        ]);
        assert_eq!(
            lines,
            [
                "    3.0 s  75 %  Root file system",
                "    1.0 s  25 %  Compress"
            ]
        );
        assert!(timing_lines(&[]).is_empty());
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn plain_summary_reports_percent_and_totals() {
        let mut progress = Progress {
            label: "compress".into(),
            total: 200,
            done: 0,
            started: Instant::now(),
            bar: None,
            last_plain: Instant::now(),
        };
        progress.inc(100);
        let line = progress.summary();
        assert!(line.starts_with("compress: 50% (100 B of 200 B"), "{line}");
    }
}
