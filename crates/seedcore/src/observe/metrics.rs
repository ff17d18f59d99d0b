//! Export of the stats and the monitor: Prometheus text, JSON, and (with
//! the cargo feature `http`) a small HTTP endpoint serving both.
//!
//! Every series carries a `system` label with the system's name, so that
//! several systems in one process can be told apart.
//!
//! Prometheus histograms: the buckets are the stats' power-of-two
//! microsecond buckets, written up to the last one that holds anything
//! (plus `+Inf`); `_sum` is estimated from them (each duration counted at
//! three quarters of its bucket's upper bound), since the scheduler counts
//! durations per bucket and keeps no running sum.
//!
//! Executors are rows, not names: every per-executor series carries an
//! `executor` label (`threads`, `async`, `services`, `processes`, or an
//! added executor's name), and the JSON lists them in an `executors` array,
//! so a new executor adds series and rows, never new metric names.
//!
//! The JSON document (`/stats.json`) has the members `name`, `uptime_s`,
//! `closed`, `config` (configured bounds and policies), `stats` (everything
//! in [`Stats`], histograms as `{count, p50_us, p90_us, p99_us, buckets:
//! [[upper_us, count], ...]}`), and `monitor` (the [`MonitorSnapshot`]).

use crate::observe::monitor::MonitorSnapshot;
use crate::observe::stats::{Histogram, Stats};
use crate::sched::ExecutorStats;
use crate::system::{stats_of, ConcurrentSystem, Shared};
use std::fmt::Write as _;

impl ConcurrentSystem {
    /// The stats and a fresh [`monitor`](Self::monitor) snapshot in the
    /// Prometheus text format (version 0.0.4). Every series carries a
    /// `system` label with the system's name.
    ///
    /// Histograms use the stats' power-of-two microsecond buckets, written
    /// up to the last one that holds anything (plus `+Inf`); `_sum` is
    /// estimated from them (each duration counted at three quarters of its
    /// bucket's upper bound), since the scheduler keeps no running sum.
    pub fn metrics_prometheus(&self) -> String {
        render_prometheus(self.shared())
    }

    /// The stats, a fresh monitor snapshot and the configured bounds as one
    /// JSON document with the members `name`, `uptime_s`, `closed`, `config`
    /// (configured bounds and policies), `stats` (the fields of [`Stats`],
    /// with `executors` as an array of rows `{executor, queued,
    /// queue_depth, running, workers, busy, stuck, target, core, max,
    /// pids}` and each histogram as `{count, p50_us, p90_us, p99_us,
    /// buckets: [[upper_us, count], ...]}`) and `monitor` (the
    /// [`MonitorSnapshot`], its `workers` each with their `executor`). This
    /// is what `seedcore top` reads.
    pub fn metrics_json(&self) -> String {
        render_json(self.shared())
    }
}

pub(crate) fn render_prometheus(shared: &Shared) -> String {
    let st = stats_of(shared);
    let mon = crate::observe::monitor::snapshot_of(shared);
    prometheus(&shared.config.name, &st, &mon)
}

pub(crate) fn render_json(shared: &Shared) -> String {
    let st = stats_of(shared);
    let mon = crate::observe::monitor::snapshot_of(shared);
    json(shared, &st, &mon)
}

/// Writes Prometheus families: `# HELP`, `# TYPE`, then the samples.
struct Prom<'a> {
    out: String,
    system: &'a str,
}

impl Prom<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.out, "{name}{{system=\"{}\"", escape_label(self.system));
        for (k, v) in labels {
            let _ = write!(self.out, ",{k}=\"{}\"", escape_label(v));
        }
        let _ = writeln!(self.out, "}} {}", prom_number(value));
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A gauge family with one sample per executor of `rows`, and per
    /// `(value of label, n)` pair that `series` gives it (no second label
    /// where `label` is `None`).
    fn per_executor(
        &mut self,
        name: &str,
        help: &str,
        rows: &[ExecutorStats],
        label: Option<&str>,
        series: impl Fn(&ExecutorStats) -> Vec<(&'static str, usize)>,
    ) {
        self.family(name, "gauge", help);
        for e in rows {
            for (v, n) in series(e) {
                let executor = ("executor", e.kind.name());
                match label {
                    Some(k) => self.sample(name, &[executor, (k, v)], n as f64),
                    None => self.sample(name, &[executor], n as f64),
                }
            }
        }
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let mut cumulative = 0u64;
        let mut sum = 0.0;
        let bucket = format!("{name}_bucket");
        for (upper, n) in h.buckets() {
            cumulative += n;
            sum += n as f64 * upper.as_secs_f64() * 0.75;
            let le = format!("{}", upper.as_secs_f64());
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, cumulative as f64);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn prom_number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

const LEVEL_NAMES: [&str; 11] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];

fn prometheus(name: &str, st: &Stats, mon: &MonitorSnapshot) -> String {
    let mut p = Prom {
        out: String::with_capacity(16 * 1024),
        system: name,
    };
    p.one(
        "seedcore_tasks_submitted_total",
        "counter",
        "Tasks accepted.",
        st.submitted as f64,
    );
    p.family(
        "seedcore_tasks_resolved_total",
        "counter",
        "Tasks resolved, by outcome.",
    );
    for (outcome, n) in [
        ("completed", st.completed),
        ("failed", st.failed),
        ("panicked", st.panicked),
        ("timed_out", st.timed_out),
        ("cancelled", st.cancelled),
        ("lock_timeout", st.lock_timeouts),
        ("shutdown", st.shutdown),
        ("worker_died", st.worker_died),
        ("memory_limit", st.memory_limit),
    ] {
        p.sample(
            "seedcore_tasks_resolved_total",
            &[("outcome", outcome)],
            n as f64,
        );
    }
    p.one(
        "seedcore_tasks_pending",
        "gauge",
        "Tasks accepted and not yet resolved.",
        st.pending() as f64,
    );
    p.one(
        "seedcore_tasks_running",
        "gauge",
        "Attempts running now, on any executor.",
        st.running as f64,
    );
    p.one(
        "seedcore_task_attempts_total",
        "counter",
        "Attempts started.",
        st.attempts as f64,
    );
    p.one(
        "seedcore_task_retries_total",
        "counter",
        "Retries scheduled (attempts after the first).",
        st.retried as f64,
    );
    p.one(
        "seedcore_callback_panics_total",
        "counter",
        "Callbacks that panicked.",
        st.callback_panics as f64,
    );
    // One series per executor (and state or level): a new executor adds
    // series, not names.
    let rows = &st.executors;
    p.per_executor(
        "seedcore_executor_queued",
        "Tasks waiting for a worker, by executor.",
        rows,
        None,
        |e| vec![("", e.queued)],
    );
    p.per_executor(
        "seedcore_queue_depth",
        "Tasks queued, by executor and priority level (0 is the most urgent).",
        rows,
        Some("priority"),
        |e| LEVEL_NAMES.iter().copied().zip(e.queue_depth).collect(),
    );
    p.per_executor(
        "seedcore_executor_running",
        "Attempts running now, by executor.",
        rows,
        None,
        |e| vec![("", e.running)],
    );
    p.per_executor(
        "seedcore_executor_workers",
        "Workers by executor: alive, busy, stuck past a deadline, and the size the executor keeps.",
        rows,
        Some("state"),
        |e| {
            vec![
                ("alive", e.workers),
                ("busy", e.busy),
                ("stuck", e.stuck),
                ("target", e.target),
            ]
        },
    );
    p.per_executor(
        "seedcore_executor_bound",
        "The core and max sizes of each executor.",
        rows,
        Some("bound"),
        |e| vec![("core", e.core), ("max", e.max)],
    );
    p.family(
        "seedcore_balance_events_total",
        "counter",
        "Resizes by the balancer, all executors together (each event names its executor in the JSON).",
    );
    p.sample(
        "seedcore_balance_events_total",
        &[("kind", "expand")],
        st.expansions as f64,
    );
    p.sample(
        "seedcore_balance_events_total",
        &[("kind", "shrink")],
        st.shrinks as f64,
    );
    p.one(
        "seedcore_queue_full_rejections_total",
        "counter",
        "Submissions refused at the global task limit.",
        st.queue_full_rejections as f64,
    );
    for (name, help, all, by) in [
        (
            "seedcore_queue_wait_seconds",
            "Time from submission to the start of the first attempt (sum estimated from the buckets).",
            &st.queue_wait,
            &st.queue_wait_by_priority,
        ),
        (
            "seedcore_run_time_seconds",
            "Duration of each attempt (sum estimated from the buckets).",
            &st.run_time,
            &st.run_time_by_priority,
        ),
    ] {
        p.family(name, "histogram", help);
        p.histogram(name, &[], all);
        let by_name = name.replace("_seconds", "_by_priority_seconds");
        p.family(&by_name, "histogram", &format!("{help} By priority level."));
        for (level, h) in by.iter().enumerate() {
            if h.count() > 0 {
                p.histogram(&by_name, &[("priority", LEVEL_NAMES[level])], h);
            }
        }
    }
    // The monitor.
    if let Some(load) = mon.cpu_load {
        p.one(
            "seedcore_machine_cpu_load",
            "gauge",
            "Whole-machine CPU use, 0 to 1.",
            load,
        );
    }
    p.family("seedcore_machine_memory_bytes", "gauge", "Machine memory.");
    p.sample(
        "seedcore_machine_memory_bytes",
        &[("kind", "total")],
        mon.memory_total as f64,
    );
    p.sample(
        "seedcore_machine_memory_bytes",
        &[("kind", "available")],
        mon.memory_available as f64,
    );
    p.family("seedcore_machine_cores", "gauge", "Machine cores.");
    p.sample(
        "seedcore_machine_cores",
        &[("kind", "logical")],
        mon.logical_cores as f64,
    );
    if let Some(n) = mon.physical_cores {
        p.sample("seedcore_machine_cores", &[("kind", "physical")], n as f64);
    }
    p.one(
        "seedcore_process_rss_bytes",
        "gauge",
        "Resident memory of this process (worker threads included).",
        mon.rss as f64,
    );
    p.one(
        "seedcore_process_cpu_percent",
        "gauge",
        "CPU use of this process, in percent of one core.",
        mon.cpu_percent,
    );
    p.family(
        "seedcore_worker_cpu_percent",
        "gauge",
        "CPU use of each worker thread and worker process, by executor, in percent of one core.",
    );
    for w in &mon.workers {
        let id = w.id.to_string();
        p.sample(
            "seedcore_worker_cpu_percent",
            &[
                ("executor", w.executor.name()),
                ("id", &id),
                ("state", &w.state),
            ],
            w.cpu_percent,
        );
    }
    p.family(
        "seedcore_worker_rss_bytes",
        "gauge",
        "Resident memory of each worker process, by executor.",
    );
    for w in &mon.workers {
        if let Some(rss) = w.rss {
            let id = w.id.to_string();
            p.sample(
                "seedcore_worker_rss_bytes",
                &[("executor", w.executor.name()), ("id", &id)],
                rss as f64,
            );
        }
    }
    p.out
}

/// A JSON string literal.
fn js(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for ch in v.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number (`null` when not finite).
fn jf(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".to_owned()
    }
}

fn jopt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

fn jobj(fields: &[(&str, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&js(k));
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

fn jarr<I: IntoIterator<Item = String>>(items: I) -> String {
    let items: Vec<String> = items.into_iter().collect();
    format!("[{}]", items.join(","))
}

fn jhist(h: &Histogram) -> String {
    let us = |q: f64| (h.percentile(q).as_micros() as u64).to_string();
    jobj(&[
        ("count", h.count().to_string()),
        ("p50_us", us(0.5)),
        ("p90_us", us(0.9)),
        ("p99_us", us(0.99)),
        (
            "buckets",
            jarr(
                h.buckets()
                    .into_iter()
                    .map(|(u, n)| format!("[{},{n}]", u.as_micros())),
            ),
        ),
    ])
}

fn jworker(w: &crate::observe::monitor::WorkerReading) -> String {
    jobj(&[
        ("executor", js(w.executor.name())),
        ("id", w.id.to_string()),
        ("name", js(&w.name)),
        ("state", js(&w.state)),
        ("cpu_percent", jf(w.cpu_percent)),
        ("rss", jopt(w.rss)),
        ("tasks_done", jopt(w.tasks_done)),
        ("current_task", jopt(w.current_task)),
    ])
}

fn jexecutor(e: &crate::sched::ExecutorStats) -> String {
    let u = |v: usize| v.to_string();
    jobj(&[
        ("executor", js(e.kind.name())),
        ("queued", u(e.queued)),
        ("queue_depth", jarr(e.queue_depth.iter().map(|&d| u(d)))),
        ("running", u(e.running)),
        ("workers", u(e.workers)),
        ("busy", u(e.busy)),
        ("stuck", u(e.stuck)),
        ("target", u(e.target)),
        ("core", u(e.core)),
        ("max", u(e.max)),
        ("resizable", e.resizable().to_string()),
        ("pids", jarr(e.pids.iter().map(|p| p.to_string()))),
    ])
}

fn json(shared: &Shared, st: &Stats, mon: &MonitorSnapshot) -> String {
    let c = &shared.config;
    let n = |v: u64| v.to_string();
    let u = |v: usize| v.to_string();
    let config = jobj(&[
        ("core_threads", u(c.threads.core)),
        ("max_threads", u(c.threads.max)),
        ("core_processes", u(c.processes.core)),
        ("max_processes", u(c.processes.max)),
        ("expand_policy", js(c.balance.expand.name())),
        ("shrink_policy", js(c.balance.shrink.name())),
        (
            "shrink_timeout_s",
            jf(c.balance.shrink_timeout.as_secs_f64()),
        ),
        ("max_pending_tasks", jopt(c.balance.max_pending_tasks)),
        ("min_free_memory", jopt(c.balance.min_free_memory)),
        (
            "max_cpu_load",
            c.balance.max_cpu_load.map_or("null".to_owned(), jf),
        ),
    ]);
    let events = jarr(st.balance_events.iter().map(|e| {
        jobj(&[
            ("at_s", jf(e.at.as_secs_f64())),
            ("executor", js(e.executor.name())),
            ("kind", js(e.kind.name())),
            ("from", u(e.from)),
            ("to", u(e.to)),
            ("reason", js(&e.reason)),
        ])
    }));
    let stats = jobj(&[
        ("submitted", n(st.submitted)),
        ("completed", n(st.completed)),
        ("failed", n(st.failed)),
        ("panicked", n(st.panicked)),
        ("timed_out", n(st.timed_out)),
        ("cancelled", n(st.cancelled)),
        ("lock_timeouts", n(st.lock_timeouts)),
        ("shutdown", n(st.shutdown)),
        ("worker_died", n(st.worker_died)),
        ("memory_limit", n(st.memory_limit)),
        ("retried", n(st.retried)),
        ("attempts", n(st.attempts)),
        ("running", n(st.running)),
        ("callback_panics", n(st.callback_panics)),
        ("resolved", n(st.resolved())),
        ("pending", n(st.pending())),
        ("queued", u(st.queued())),
        ("executors", jarr(st.executors.iter().map(jexecutor))),
        ("expansions", n(st.expansions)),
        ("shrinks", n(st.shrinks)),
        ("queue_full_rejections", n(st.queue_full_rejections)),
        ("queue_wait", jhist(&st.queue_wait)),
        ("run_time", jhist(&st.run_time)),
        (
            "queue_wait_by_priority",
            jarr(st.queue_wait_by_priority.iter().map(jhist)),
        ),
        (
            "run_time_by_priority",
            jarr(st.run_time_by_priority.iter().map(jhist)),
        ),
        ("balance_events", events),
    ]);
    let monitor = jobj(&[
        ("physical_cores", jopt(mon.physical_cores)),
        ("logical_cores", u(mon.logical_cores)),
        ("memory_total", n(mon.memory_total)),
        ("memory_available", n(mon.memory_available)),
        ("cpu_load", mon.cpu_load.map_or("null".to_owned(), jf)),
        ("pid", mon.pid.to_string()),
        ("rss", n(mon.rss)),
        ("cpu_percent", jf(mon.cpu_percent)),
        ("workers", jarr(mon.workers.iter().map(jworker))),
    ]);
    jobj(&[
        ("name", js(&c.name)),
        (
            "uptime_s",
            jf(shared.balance.started().elapsed().as_secs_f64()),
        ),
        ("closed", shared.sched.is_closed().to_string()),
        ("config", config),
        ("stats", stats),
        ("monitor", monitor),
    ])
}

#[cfg(feature = "http")]
pub use server::MetricsServer;

#[cfg(feature = "http")]
mod server {
    //! The metrics endpoint: one thread, std's `TcpListener`, one request
    //! per connection (`Connection: close`), `GET` only.

    use super::{render_json, render_prometheus};
    use crate::system::{ConcurrentSystem, Shared};
    use std::io::{self, Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Weak};
    use std::thread::JoinHandle;
    use std::time::Duration;

    /// How long a client may take to send its request or read the answer.
    const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
    /// The longest request head read.
    const MAX_HEAD: usize = 8 * 1024;

    /// A running metrics endpoint, from
    /// [`ConcurrentSystem::serve_metrics`]. Serves `GET /metrics`
    /// (Prometheus text) and `GET /stats.json` (JSON).
    ///
    /// Dropping it stops the server and waits for its thread; the server
    /// also answers 503 once the system is gone.
    #[derive(Debug)]
    pub struct MetricsServer {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl MetricsServer {
        /// The address the server listens on (with the port the OS chose,
        /// when port 0 was asked for).
        pub fn local_addr(&self) -> SocketAddr {
            self.addr
        }

        /// Stops the server and waits for its thread.
        pub fn stop(mut self) {
            self.halt();
        }

        fn halt(&mut self) {
            let Some(h) = self.thread.take() else { return };
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept.
            let mut wake = self.addr;
            if wake.ip().is_unspecified() {
                wake.set_ip(match wake {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
            let _ = h.join();
        }
    }

    impl Drop for MetricsServer {
        fn drop(&mut self) {
            self.halt();
        }
    }

    impl ConcurrentSystem {
        /// Serves this system's metrics over HTTP on `addr` (for example
        /// `"127.0.0.1:9400"`, or port 0 for any free port), from a thread
        /// of its own: `GET /metrics` (Prometheus text) and
        /// `GET /stats.json` (JSON, what `seedcore top` reads).
        ///
        /// Bind to a loopback address unless the network is trusted: the
        /// endpoint has no authentication.
        pub fn serve_metrics(&self, addr: impl ToSocketAddrs) -> io::Result<MetricsServer> {
            let listener = TcpListener::bind(addr)?;
            let local = listener.local_addr()?;
            let stop = Arc::new(AtomicBool::new(false));
            let (weak, flag) = (Arc::downgrade(self.shared()), stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("{}-metrics", self.shared().config.name))
                .spawn(move || serve(listener, weak, flag))?;
            Ok(MetricsServer {
                addr: local,
                stop,
                thread: Some(thread),
            })
        }
    }

    fn serve(listener: TcpListener, shared: Weak<Shared>, stop: Arc<AtomicBool>) {
        for conn in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let Ok(stream) = conn else { continue };
            if let Err(e) = handle(stream, &shared) {
                log::debug!("seedcore: metrics request failed: {e}");
            }
        }
    }

    fn handle(mut stream: TcpStream, shared: &Weak<Shared>) -> io::Result<()> {
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        let mut head = Vec::with_capacity(512);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > MAX_HEAD {
                return respond(&mut stream, 431, "text/plain", "request head too large\n");
            }
        }
        let text = String::from_utf8_lossy(&head);
        let mut parts = text.lines().next().unwrap_or("").split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        if method != "GET" && method != "HEAD" {
            return respond(&mut stream, 405, "text/plain", "only GET is served\n");
        }
        let Some(shared) = shared.upgrade() else {
            return respond(&mut stream, 503, "text/plain", "the system is gone\n");
        };
        let (status, kind, body) = match path {
            "/metrics" => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                render_prometheus(&shared),
            ),
            "/stats.json" => (200, "application/json", render_json(&shared)),
            "/" => (
                200,
                "text/plain; charset=utf-8",
                "seedcore metrics: /metrics (Prometheus text), /stats.json (JSON)\n".to_owned(),
            ),
            _ => (
                404,
                "text/plain",
                "not found: try /metrics or /stats.json\n".to_owned(),
            ),
        };
        drop(shared);
        let body = if method == "HEAD" {
            String::new()
        } else {
            body
        };
        respond(&mut stream, status, kind, &body)
    }

    fn respond(stream: &mut TcpStream, status: u16, kind: &str, body: &str) -> io::Result<()> {
        let reason = match status {
            200 => "OK",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            _ => "Service Unavailable",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())?;
        stream.flush()?;
        let _ = stream.shutdown(Shutdown::Write);
        Ok(())
    }
}
