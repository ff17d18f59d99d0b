//! The command-line grammar (clap derive). Parsing only: validation into library
//! objects happens in each command's module.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// seedcore: a concurrent task system with priorities, timeouts, retries, named
/// locks and callbacks.
#[derive(Debug, Parser)]
#[command(
    name = "seedcore",
    version,
    about,
    propagate_version = true,
    after_help = "Examples:\n  \
        seedcore demo                      run the demo scenarios and check each outcome\n  \
        seedcore demo --serve 127.0.0.1:9400   ... then keep serving metrics under load\n  \
        seedcore top --url http://127.0.0.1:9400   watch it live (--once: one text frame)\n  \
        seedcore bench threads --json      benchmark against peers, one JSON line per figure"
)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// One value per run: the size of the exec flags does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    /// Measure seedcore against its peers (rayon, tokio, Python pools, ...),
    /// both sides in one run: a table, or JSON lines with --json.
    Bench(BenchArgs),
    /// Run a mixed workload that shows the whole local system (threads, async,
    /// processes, shared memory, maps, the balancer), then check every outcome.
    Demo(DemoArgs),
    /// Run a command for each input, in parallel (GNU parallel's inputs,
    /// replacement strings and job log): `seedcore exec -j 4 gzip {} ::: *.log`.
    Exec(Box<crate::exec::ExecArgs>),
    /// Watch a running system live in the terminal: tasks, executors, workers,
    /// latency and the balancer, read from its metrics endpoint
    /// (`seedcore demo --serve ADDR`, or `ConcurrentSystem::serve_metrics`).
    Top(TopArgs),
    /// Serve this binary's process tasks to a seedcore deployment on Redis.
    Worker(WorkerArgs),
}

/// Flags of `seedcore worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The Redis server: `redis://[user:password@]host:port[/db]`, or
    /// `rediss://...` for TLS (default: `remote.url` of the configuration).
    #[arg(long)]
    pub(crate) redis: Option<String>,
    /// A TOML configuration whose `[remote]` section sets the worker
    /// (`SEEDCORE_REMOTE_*` variables apply over it; flags over both).
    #[arg(long)]
    pub(crate) config: Option<std::path::PathBuf>,
    /// A PEM file of CA certificates to trust for `rediss://`, besides the
    /// system's roots (default: `remote.tls_ca_file`).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_ca_file: Option<std::path::PathBuf>,
    /// A PEM file with this worker's certificate chain, for a server that
    /// asks for client certificates (mutual TLS); with --tls-key-file.
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    pub(crate) tls_cert_file: Option<std::path::PathBuf>,
    /// A PEM file with the private key of --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub(crate) tls_key_file: Option<std::path::PathBuf>,
    /// A file holding the shared secret (default: SEEDCORE_REMOTE_SECRET,
    /// else `remote.secret_file`); never on the command line.
    #[arg(long)]
    pub(crate) secret_file: Option<std::path::PathBuf>,
    /// The deployment's key prefix (default: `remote.namespace`).
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// Local worker processes (default: one per core).
    #[arg(long)]
    pub(crate) processes: Option<usize>,
    /// Tasks held per worker process.
    #[arg(long, default_value_t = 64)]
    pub(crate) prefetch: usize,
    /// How long a silent worker keeps its tasks before others take them
    /// (default: `remote.visibility_timeout`, 30 s).
    #[arg(long)]
    pub(crate) visibility_timeout_ms: Option<u64>,
    /// Deliveries of one entry before it goes to the dead-letter stream
    /// (default: `remote.max_deliveries`, 3).
    #[arg(long)]
    pub(crate) max_deliveries: Option<u32>,
    /// How long SIGTERM/SIGINT wait for running tasks to finish and be
    /// stored; unstarted ones go back at once (default: `remote.grace`,
    /// 30 s).
    #[arg(long)]
    pub(crate) grace_ms: Option<u64>,
    /// Run messages naming the task OLD with the registered task NEW
    /// (`--alias OLD=NEW`, repeatable): a renamed task keeps serving
    /// clients that send its old name.
    #[arg(long, value_name = "OLD=NEW")]
    pub(crate) alias: Vec<String>,
    /// List the dead letters (one line each: id, task, deliveries,
    /// attempt) and exit.
    #[arg(long)]
    pub(crate) list_dead: bool,
    /// Put the dead letter with this id (or `all`) back on its stream and
    /// exit.
    #[arg(long)]
    pub(crate) requeue_dead: Option<String>,
}

/// Flags of `seedcore bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Which suite to run.
    #[arg(value_parser = suite_parser())]
    pub(crate) suite: Suite,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Smaller workloads and fewer repetitions (a smoke run, not a measurement).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Install missing peers that can be installed (pebble, and Celery and
    /// Dramatiq for `remote`, with pip into a virtual environment under target/). Without it, missing peers are
    /// reported as skipped, with how to install them.
    #[arg(long)]
    pub(crate) install_peers: bool,
}

/// The suites for the command line, their help from their doc lines; a
/// suite whose doc line says "not built yet" is left out of the help (and
/// still parsed, so that `bench` can say so).
fn suite_parser() -> impl TypedValueParser<Value = Suite> {
    let values = Suite::value_variants().iter().filter_map(|s| {
        let v = s.to_possible_value()?;
        Some(if s.is_built() { v } else { v.hide(true) })
    });
    PossibleValuesParser::new(values).map(|name| {
        Suite::from_str(&name, false).expect("the parser accepts only the suites' names")
    })
}

/// A benchmark suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Suite {
    /// Thread pool: tiny-task throughput and priority latency.
    Threads,
    /// Process pool: tiny tasks, round trips and a 64 MiB payload, against
    /// Python's process pools (ProcessPoolExecutor, multiprocessing.Pool, pebble).
    Process,
    /// Parallel maps: a thread map against rayon's par_iter, a process map
    /// against multiprocessing.Pool, and CPU speedup over one worker.
    Parallel,
    /// Load balancer: AutoExpand/AutoShrink against fixed pools of core and
    /// max size on a bursty workload, threads and processes.
    Balance,
    /// `seedcore exec` against GNU parallel and `xargs -P`: 2,000 short jobs
    /// (`true`, `echo`), jobs per second.
    Exec,
    /// GPU executor against direct CUDA calls (feature `cuda`; skipped
    /// without it or without a GPU).
    Gpu,
    /// Distributed mode over Redis: tiny tasks/s and round trip through 2
    /// workers, against Celery and Dramatiq on the same Redis.
    Remote,
    /// seedcore's Python package against ProcessPoolExecutor,
    /// multiprocessing.Pool, pebble and loky, in the active Python
    /// (`$SEEDCORE_PYTHON`, else `python3`).
    Python,
    /// Every suite that is built.
    All,
}

impl Suite {
    /// Every concrete suite, in the order `all` runs them.
    pub(crate) const CONCRETE: [Suite; 8] = [
        Suite::Threads,
        Suite::Process,
        Suite::Parallel,
        Suite::Balance,
        Suite::Exec,
        Suite::Gpu,
        Suite::Remote,
        Suite::Python,
    ];

    /// Whether the suite is built: its doc line (its help) does not say
    /// "not built yet".
    pub(crate) fn is_built(self) -> bool {
        self.to_possible_value()
            .and_then(|v| {
                v.get_help()
                    .map(|h| !h.to_string().contains("not built yet"))
            })
            .unwrap_or(true)
    }

    /// The suite's name as typed on the command line and printed in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Suite::Threads => "threads",
            Suite::Process => "process",
            Suite::Parallel => "parallel",
            Suite::Balance => "balance",
            Suite::Exec => "exec",
            Suite::Gpu => "gpu",
            Suite::Remote => "remote",
            Suite::Python => "python",
            Suite::All => "all",
        }
    }
}

/// Flags of `seedcore demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Number of low-priority backlog tasks in the priority scenario.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) tasks: Option<u32>,
    /// A smaller, faster run (used by the tests).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Serve the demo system's metrics on ADDR (e.g. 127.0.0.1:9400) and,
    /// after the scenarios, keep a bursty load running until Ctrl-C, so that
    /// `seedcore top --url http://ADDR` has something to show.
    #[arg(long, value_name = "ADDR")]
    pub(crate) serve: Option<String>,
}

/// Flags of `seedcore top`.
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// The metrics endpoint: http://HOST:PORT (reads /stats.json there).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9400")]
    pub(crate) url: String,
    /// How often to poll, like 500ms or 2s.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub(crate) interval: String,
    /// Print one frame as text (after two polls) and exit.
    #[arg(long)]
    pub(crate) once: bool,
    /// Width of the `--once` frame.
    #[arg(long, default_value_t = 120, requires = "once")]
    pub(crate) width: u16,
    /// Height of the `--once` frame.
    #[arg(long, default_value_t = 40, requires = "once")]
    pub(crate) height: u16,
}
