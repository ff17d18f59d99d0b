//! The snapshot types every layer reports in: the counters and histograms
//! of [`Stats`], an executor's row and workers, the balancer's events and
//! the machine's load readings. A leaf below the scheduler (it names only
//! `kind` and `options`), so that the scheduler fills a snapshot and the
//! layers above read one without importing each other.

/// `name()`, `parse()` and `Display` for an enum named in configuration
/// files and metrics.
macro_rules! named {
    ($ty:ident { $($v:ident => $s:literal),* $(,)? }) => {
        impl $ty {
            /// The name used in configuration files.
            pub fn name(self) -> &'static str {
                match self { $($ty::$v => $s),* }
            }

            #[allow(dead_code)] // Event kinds are never parsed.
            pub(crate) fn parse(s: &str) -> Result<Self, String> {
                match s.trim() {
                    $($s => Ok($ty::$v),)*
                    other => Err(format!(
                        "unknown value `{other}` (expected {})",
                        [$(concat!("\"", $s, "\"")),*].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
pub(crate) use named;

mod balance;
mod executor;
mod stats;

pub use balance::{BalanceEvent, EventKind, LoadReading};
pub use executor::{ExecutorStats, WorkerInfo};
pub(crate) use stats::{new_hdr, seconds};
pub use stats::{Histogram, Stats};
