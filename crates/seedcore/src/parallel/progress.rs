//! The optional progress bar of maps and pipelines: items done, failed
//! items, rate and ETA, drawn on stderr with indicatif.
//!
//! The bar exists only when it was asked for *and* stderr is a terminal,
//! so that logs and CI output stay clean; otherwise every call here is a
//! no-op on `None`. It counts items as the consumer receives them (a map
//! counts a whole chunk at once), and it is updated by the consumer's
//! thread only, so it costs nothing on the pool.
//!
//! Lines printed while it runs go above it through a [`ProgressHandle`]
//! (`println`, or `suspend` around the user's own printing). At the end the
//! bar is replaced by one summary line, ended by a newline: `done` when
//! every item was received (even if the consumer stopped reading after
//! that), `cancelled` only when items were left.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::fmt;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Redraws per second at most.
const HZ: u8 = 8;

/// With a known length: a bar with position, rate and ETA.
const BAR: &str =
    "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({rate}, ETA {eta}) {msg}";
/// Without one: a spinner with the count and the rate.
const SPINNER: &str = "{prefix} {spinner} [{elapsed_precise}] {human_pos} items ({rate}) {msg}";

/// A rate of items per second, rounded to whole items from 100/s, to a
/// tenth from 10/s and to a hundredth below (`12345/s`, `45.6/s`,
/// `3.21/s`).
pub(crate) fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        "0/s".to_owned()
    } else if per_sec >= 100.0 {
        format!("{per_sec:.0}/s")
    } else if per_sec >= 10.0 {
        format!("{per_sec:.1}/s")
    } else {
        format!("{per_sec:.2}/s")
    }
}

/// A handle on the progress bar of a running map or pipeline (from
/// [`MapIter::progress`](crate::parallel::MapIter::progress) or
/// [`PipelineIter::progress`](crate::parallel::PipelineIter::progress)),
/// to print without garbling it: lines printed with
/// [`println`](Self::println), or by code run inside
/// [`suspend`](Self::suspend), land above the bar. Cheap to clone; it can
/// be moved into the map's tasks. Where no bar is shown it prints
/// straight to stderr ([`println`](Self::println)) or just runs the code
/// ([`suspend`](Self::suspend)).
#[derive(Clone, Default)]
pub struct ProgressHandle {
    bar: Option<ProgressBar>,
}

impl fmt::Debug for ProgressHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressHandle")
            .field("shown", &self.is_shown())
            .finish()
    }
}

impl ProgressHandle {
    /// Whether a bar is shown (it was asked for and stderr is a terminal).
    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// Prints `line` on stderr, above the bar when one is shown.
    pub fn println(&self, line: impl AsRef<str>) {
        match &self.bar {
            Some(bar) if !bar.is_finished() => bar.println(line),
            _ => {
                let _ = writeln!(std::io::stderr().lock(), "{}", line.as_ref());
            }
        }
    }

    /// Hides the bar, runs `f` (which may print anything, to stdout or
    /// stderr) and draws the bar again below what it printed.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

/// A progress bar, or nothing.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    len: Option<u64>,
    errors: u64,
}

impl Progress {
    /// A bar labelled `what` for `len` items (a spinner when the length is
    /// unknown); nothing unless `enabled` and stderr is a terminal.
    pub(crate) fn new(enabled: bool, len: Option<u64>, what: &str) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress::default();
        }
        Progress::with_target(len, what, ProgressDrawTarget::stderr_with_hz(HZ))
    }

    /// A bar drawn on `target`.
    pub(crate) fn with_target(
        len: Option<u64>,
        what: &str,
        target: ProgressDrawTarget,
    ) -> Progress {
        Progress {
            bar: Some(make_bar(len, what, target)),
            len,
            errors: 0,
        }
    }

    /// Whether a bar is shown.
    #[cfg(test)]
    pub(crate) fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// A handle to print above the bar.
    pub(crate) fn handle(&self) -> ProgressHandle {
        ProgressHandle {
            bar: self.bar.clone(),
        }
    }

    /// `n` more items done, `failed` of them with an error.
    pub(crate) fn inc(&mut self, n: u64, failed: u64) {
        let Some(bar) = &self.bar else { return };
        bar.inc(n);
        if failed > 0 {
            self.errors += failed;
            bar.set_message(format!("{} failed", self.errors));
        }
    }

    /// The work finished: every item was received.
    pub(crate) fn finish(&mut self) {
        self.end(true);
    }

    /// The consumer stopped: `done` if every item had been received
    /// already, `cancelled` if some were left.
    pub(crate) fn abandon(&mut self) {
        let all = match (&self.bar, self.len) {
            (Some(bar), Some(len)) => bar.position() >= len,
            _ => false,
        };
        self.end(all);
    }

    /// Replaces the bar by its summary line.
    fn end(&mut self, all: bool) {
        let Some(bar) = self.bar.take() else { return };
        let done = bar.position();
        let took = bar.elapsed();
        let per_sec = done as f64 / took.as_secs_f64().max(1e-9);
        let prefix = bar.prefix();
        let items = match self.len {
            Some(len) if !all => format!("{done}/{len} items"),
            _ => format!("{done} items"),
        };
        let failed = if self.errors > 0 {
            format!(", {} failed", self.errors)
        } else {
            String::new()
        };
        let state = if all { "done" } else { "cancelled" };
        let line = format!(
            "{prefix} {state}: {items} in {} ({}){failed}",
            human(took),
            rate(per_sec)
        );
        // Printed above the bar, then the bar cleared: the summary is the
        // last line, with its newline.
        bar.println(line);
        bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Dropped before the end: the consumer stopped reading.
        self.abandon();
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else if s >= 10.0 {
        format!("{s:.0}s")
    } else {
        format!("{s:.1}s")
    }
}

/// Builds the bar (or spinner) on `target`.
fn make_bar(len: Option<u64>, what: &str, target: ProgressDrawTarget) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(len, target);
    let template = if len.is_some() { BAR } else { SPINNER };
    // The templates are constants: a parse error is a bug caught by the
    // tests; fall back to the default style rather than fail a map.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(
            style.with_key("rate", |s: &ProgressState, w: &mut dyn fmt::Write| {
                let _ = w.write_str(&rate(s.per_sec()));
            }),
        );
    }
    bar.set_prefix(what.to_string());
    if len.is_none() {
        bar.enable_steady_tick(Duration::from_millis(1000 / u64::from(HZ)));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::{InMemoryTerm, TermLike};

    fn term() -> (InMemoryTerm, ProgressDrawTarget) {
        let term = InMemoryTerm::new(10, 100);
        let target = ProgressDrawTarget::term_like(Box::new(term.clone()));
        (term, target)
    }

    #[test]
    fn templates_parse() {
        assert!(ProgressStyle::with_template(BAR).is_ok());
        assert!(ProgressStyle::with_template(SPINNER).is_ok());
    }

    #[test]
    fn rates_are_rounded_to_their_size() {
        assert_eq!(rate(12345.678), "12346/s");
        assert_eq!(rate(456.7), "457/s");
        assert_eq!(rate(45.678), "45.7/s");
        assert_eq!(rate(3.2149), "3.21/s");
        assert_eq!(rate(0.0), "0/s");
        assert_eq!(rate(f64::NAN), "0/s");
    }

    #[test]
    fn disabled_is_a_no_op() {
        let mut p = Progress::new(false, Some(10), "map");
        assert!(!p.is_shown());
        assert!(!p.handle().is_shown());
        p.inc(5, 1);
        p.finish();
    }

    #[test]
    fn lines_printed_while_it_runs_go_above_the_bar() {
        let (term, target) = term();
        let mut p = Progress::with_target(Some(10), "map", target);
        let h = p.handle();
        assert!(h.is_shown());
        p.inc(3, 0);
        h.println("first line");
        p.inc(2, 0);
        h.println("second line");
        let screen = term.contents();
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(lines[0], "first line", "{screen}");
        assert_eq!(lines[1], "second line", "{screen}");
        assert!(lines[2].starts_with("map ["), "{screen}");
        assert!(lines[2].contains("5/10"), "{screen}");
        p.inc(5, 0);
        p.finish();
        let screen = term.contents();
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(lines.len(), 3, "{screen}");
        assert!(lines[2].starts_with("map done: 10 items in "), "{screen}");
        assert!(lines[2].ends_with("/s)"), "{screen}");
        // The summary ended with a newline: the cursor is at the start of
        // the next row.
        term.write_str("after").unwrap();
        assert_eq!(
            term.contents().lines().nth(3),
            Some("after"),
            "{}",
            term.contents()
        );
    }

    #[test]
    fn suspend_runs_the_code_with_the_bar_hidden() {
        let (term, target) = term();
        let mut p = Progress::with_target(Some(4), "map", target);
        p.inc(1, 0);
        let seen = p.handle().suspend(|| term.contents());
        assert_eq!(seen.trim(), "", "the bar is cleared while the code runs");
        assert!(term.contents().contains("1/4"), "and drawn again after");
        p.finish();
    }

    #[test]
    fn stopping_after_every_item_says_done() {
        let (term, target) = term();
        let mut p = Progress::with_target(Some(6), "map", target);
        p.inc(6, 2);
        // The consumer drops the map before it saw the end.
        drop(p);
        let screen = term.contents();
        assert!(screen.starts_with("map done: 6 items in "), "{screen}");
        assert!(screen.trim_end().ends_with(", 2 failed"), "{screen}");
    }

    #[test]
    fn stopping_with_items_left_says_cancelled() {
        let (term, target) = term();
        let mut p = Progress::with_target(Some(6), "map", target);
        p.inc(4, 0);
        p.abandon();
        let screen = term.contents();
        assert!(
            screen.starts_with("map cancelled: 4/6 items in "),
            "{screen}"
        );
    }
}
