//! The optional progress bar of maps and pipelines: items done, failed
//! items, rate and ETA, drawn on stderr with indicatif.
//!
//! The bar exists only when it was asked for *and* stderr is a terminal,
//! so that logs and CI output stay clean; otherwise every call here is a
//! no-op on `None`. It counts items as the consumer receives them (a map
//! counts a whole chunk at once), and it is updated by the consumer's
//! thread only, so it costs nothing on the pool.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Redraws per second at most.
const HZ: u8 = 8;

/// With a known length: a bar with position, rate and ETA.
const BAR: &str =
    "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}, ETA {eta}) {msg}";
/// Without one: a spinner with the count and the rate.
const SPINNER: &str = "{prefix} {spinner} [{elapsed_precise}] {human_pos} items ({per_sec}) {msg}";

/// A progress bar, or nothing.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    errors: u64,
}

impl Progress {
    /// A bar labelled `what` for `len` items (a spinner when the length is
    /// unknown); nothing unless `enabled` and stderr is a terminal.
    pub(crate) fn new(enabled: bool, len: Option<u64>, what: &str) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress::default();
        }
        Progress {
            bar: Some(make_bar(len, what)),
            errors: 0,
        }
    }

    /// Whether a bar is shown.
    #[cfg(test)]
    pub(crate) fn is_shown(&self) -> bool {
        self.bar.is_some()
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

    /// The work finished: leave the bar at its final state.
    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }

    /// The work was cancelled: leave the bar where it stopped, and say so.
    pub(crate) fn abandon(&mut self) {
        if let Some(bar) = self.bar.take() {
            let msg = if self.errors > 0 {
                format!("{} failed, cancelled", self.errors)
            } else {
                "cancelled".to_string()
            };
            bar.abandon_with_message(msg);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // Dropped before the end: the consumer stopped reading.
        self.abandon();
    }
}

/// Builds the bar (or spinner) on stderr.
fn make_bar(len: Option<u64>, what: &str) -> ProgressBar {
    let target = ProgressDrawTarget::stderr_with_hz(HZ);
    let bar = ProgressBar::with_draw_target(len, target);
    let template = if len.is_some() { BAR } else { SPINNER };
    // The templates are constants: a parse error is a bug caught by the
    // tests; fall back to the default style rather than fail a map.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_prefix(what.to_string());
    if len.is_none() {
        bar.enable_steady_tick(std::time::Duration::from_millis(1000 / u64::from(HZ)));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        assert!(ProgressStyle::with_template(BAR).is_ok());
        assert!(ProgressStyle::with_template(SPINNER).is_ok());
    }

    #[test]
    fn disabled_is_a_no_op() {
        let mut p = Progress::new(false, Some(10), "map");
        assert!(!p.is_shown());
        p.inc(5, 1);
        p.finish();
    }

    #[test]
    fn hidden_bars_count() {
        // A bar drawn nowhere, to check the bookkeeping without a terminal.
        let mut p = Progress {
            bar: Some(ProgressBar::hidden()),
            errors: 0,
        };
        p.inc(3, 0);
        p.inc(2, 2);
        assert_eq!(p.bar.as_ref().map(|b| b.position()), Some(5));
        assert_eq!(p.errors, 2);
        p.abandon();
        assert!(p.bar.is_none());
    }
}
