//! The run loop: inputs become jobs, jobs become command tasks on the
//! library's command executor, finished jobs are printed, logged and
//! counted.
//!
//! The loop keeps a small window of jobs submitted (twice the slots), so
//! inputs are read as they are needed and a halt or Ctrl-C leaves little
//! queued; each finished job comes back through its future's callback on
//! a channel, and the main thread alone writes stdout, stderr and the log.

use super::inputs::{InputError, Parsed};
use super::joblog::{JobLog, Record};
use super::shell::JobShell;
use super::template::{JobPlace, Rendered, Template, TemplateError};
use super::{ExecArgs, Usage};
use anyhow::Context;
use seedcore::command::{failed_output, CommandExecutor, CommandOutput, CommandSpec};
use seedcore::{
    Backoff, ConcurrentSystem, RetryPolicy, TaskError, TaskHandle, TaskOptions, TaskStatus,
};
use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Ctrl-Cs received.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

fn duration(s: &str, what: &str) -> anyhow::Result<Duration> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| usage(format!("--{what} {s}: {e}")))
}

fn bytes(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<f64>()
        .ok()
        .filter(|v| *v >= 0.0)
        .map(|v| (v * mult as f64) as u64)
        .ok_or_else(|| usage(format!("--memfree {s}: not a size")))
}

/// `--halt`.
#[derive(Debug, Clone, Copy)]
struct Halt {
    now: bool,
    /// Fail after this many failures, or this percentage of jobs done.
    count: Option<u64>,
    percent: Option<f64>,
}

fn halt(s: &str) -> anyhow::Result<Option<Halt>> {
    let bad = || {
        usage(format!(
            "--halt {s}: expected never, soon|now,fail=N or soon|now,fail=P%"
        ))
    };
    match s {
        "never" | "0" => return Ok(None),
        "1" => {
            return Ok(Some(Halt {
                now: false,
                count: Some(1),
                percent: None,
            }))
        }
        "2" => {
            return Ok(Some(Halt {
                now: true,
                count: Some(1),
                percent: None,
            }))
        }
        _ => {}
    }
    let (when, rule) = s.split_once(',').ok_or_else(bad)?;
    let now = match when {
        "soon" => false,
        "now" => true,
        _ => return Err(bad()),
    };
    let v = rule.strip_prefix("fail=").ok_or_else(bad)?;
    if let Some(p) = v.strip_suffix('%') {
        let p: f64 = p.parse().map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&p) || p == 0.0 {
            return Err(bad());
        }
        Ok(Some(Halt {
            now,
            count: None,
            percent: Some(p),
        }))
    } else {
        let n: u64 = v.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        Ok(Some(Halt {
            now,
            count: Some(n),
            percent: None,
        }))
    }
}

/// Free memory and load: the system's, or a file's (tests).
struct Readings {
    file: Option<std::path::PathBuf>,
}

impl Readings {
    /// (free bytes, 1-minute load).
    fn read(&self) -> (u64, f64) {
        if let Some(f) = &self.file {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let mut it = text.split_whitespace();
            let mem = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let load = it.next().and_then(|v| v.parse().ok()).unwrap_or(f64::MAX);
            return (mem, load);
        }
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("MemAvailable:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .map_or(u64::MAX, |kb| kb * 1024);
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        (mem, load)
    }
}

/// A finished job, as printed and logged.
struct Finished {
    seq: u64,
    line: String,
    inputs: Vec<String>,
    start: f64,
    runtime: f64,
    exit: i32,
    signal: i32,
    attempts: u32,
    status: &'static str,
    output: Option<CommandOutput>,
    message: Option<String>,
}

impl Finished {
    fn failed(&self) -> bool {
        self.status != "ok"
    }
}

struct Pending {
    line: String,
    inputs: Vec<String>,
    slot: usize,
}

pub(super) fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    if let Some(first) = args.rest.first() {
        if first.starts_with('-') && first.len() > 1 {
            return Err(usage(format!("unknown option: {first}")));
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (slots, auto) = match args.jobs.as_deref() {
        None => (cores, false),
        Some("auto") => (cores, true),
        Some(j) => {
            let n = if let Some(p) = j.strip_suffix('%') {
                p.parse::<f64>()
                    .ok()
                    .map(|p| ((cores as f64 * p / 100.0).round() as usize).max(1))
            } else {
                j.parse::<usize>()
                    .ok()
                    .map(|n| if n == 0 { 256 } else { n })
            };
            (
                n.ok_or_else(|| usage(format!("-j {j}: expected a number, N% or auto")))?,
                false,
            )
        }
    };
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| duration(t, "timeout"))
        .transpose()?;
    let grace = duration(&args.grace, "grace")?;
    let retry_delay = duration(&args.retry_delay, "retry-delay")?;
    let halt = args.halt.as_deref().map(halt).transpose()?.flatten();
    let memfree = args.memfree.as_deref().map(bytes).transpose()?;
    let readings = Readings {
        file: args.readings.clone(),
    };
    if (args.resume || args.resume_failed) && args.joblog.is_none() {
        return Err(usage("--resume and --resume-failed need --joblog FILE"));
    }
    let shell = JobShell::find().map_err(usage)?;
    let parsed = Parsed::parse(&args.rest).map_err(|e: InputError| usage(e.0))?;
    let template = Template::parse(&parsed.command, parsed.width(), args.plus, &shell)
        .map_err(|e: TemplateError| usage(e.0))?;
    let mut total = parsed.count();
    let mut jobs = parsed.into_jobs();
    if template.uses_total() && total.is_none() {
        // {##} and {0#} need the number of jobs: stdin is read to its end.
        let all: Vec<_> = jobs.collect();
        total = Some(all.iter().take_while(|j| j.is_ok()).count() as u64);
        jobs = Box::new(all.into_iter());
    }
    // jobs file: its jobs instead of a template's.
    let mut file_jobs = match &args.jobs_file {
        Some(_) if !args.rest.is_empty() => {
            return Err(usage("--jobs-file takes no command template or inputs"))
        }
        Some(p) => Some(super::jobsfile::open(p).map_err(usage)?),
        None => None,
    };
    if let Some(list) = &file_jobs {
        total = Some(list.len() as u64);
    }

    let (mut log, done_before) = match &args.joblog {
        Some(p) if !args.dry_run => {
            let (l, d) = JobLog::open(p, args.resume || args.resume_failed)
                .map_err(|e| usage(format!("{e:#}")))?;
            (Some(l), d)
        }
        _ => (None, Default::default()),
    };
    let skip = |seq: u64| match done_before.get(&seq) {
        None => false,
        Some(&succeeded) => args.resume || succeeded,
    };

    // The engine: a command executor of `slots` slots (fixed, or between
    // 1 and 4x the cores with -j auto, through the balancer).
    let system = ConcurrentSystem::builder()
        .shutdown_timeout(grace + Duration::from_secs(5))
        .build()
        .context("cannot start the engine")?;
    let exec = CommandExecutor::new(slots).grace(grace);
    let exec = if auto {
        exec.min_slots(1).max_slots(4 * cores)
    } else {
        exec.max_slots(slots)
    };
    system
        .add_executor(exec)
        .context("cannot start the command executor")?;
    let max_slots = if auto { 4 * cores } else { slots };
    // {%} needs a job per slot at most, and --halt starts no job after the
    // one that trips it (as GNU parallel); otherwise a few queued ahead keep
    // every slot busy.
    let window = if template.uses_slot() || halt.is_some() {
        max_slots
    } else {
        2 * max_slots + 2
    };
    let mut opts = TaskOptions::new();
    if let Some(t) = timeout {
        opts = opts.timeout(t);
    }
    // GNU parallel's --retries: tries in all, 0 for no limit.
    let tries = args.retries.unwrap_or(1);
    if tries != 1 {
        opts = opts.retry(RetryPolicy::retries(retries_after_first(tries)).backoff(
            Backoff::Exponential {
                initial: retry_delay,
                factor: 2.0,
                max: Duration::from_secs(30),
            },
        ));
    }

    // SAFETY: the handler only increments an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }

    let bar = (!args.no_bar && !args.dry_run && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::with_draw_target(
            total,
            indicatif::ProgressDrawTarget::stderr_with_hz(10),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} {per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let (tx, rx) = mpsc::channel::<(u64, Result<CommandOutput, TaskError>)>();
    let mut running: HashMap<u64, (TaskHandle, Pending)> = HashMap::new();
    let mut order: VecDeque<u64> = VecDeque::new();
    let mut held: HashMap<u64, Finished> = HashMap::new();
    let mut free_slots: Vec<usize> = (1..=max_slots).rev().collect();
    let mut seq = 0u64;
    let mut exhausted = false;
    let mut stop = false;
    let (mut finished, mut failed) = (0u64, 0u64);
    let mut interrupts_seen = 0;
    let mut input_error = None;

    loop {
        // Fill the window.
        while !stop && !exhausted && running.len() < window {
            if memfree.is_some() || args.load.is_some() {
                let (mem, load) = readings.read();
                let mem_ok = memfree.map_or(true, |m| mem >= m);
                let load_ok = args.load.map_or(true, |l| load < l);
                if !(mem_ok && load_ok) {
                    break;
                }
            }
            // jobs file: each job brings its command and options.
            if let Some(list) = &mut file_jobs {
                let Some(job) = list.next() else {
                    exhausted = true;
                    break;
                };
                seq += 1;
                if skip(seq) {
                    continue;
                }
                let (mut spec, line, job_opts) = job
                    .into_spec(&opts, retry_delay, &shell)
                    .map_err(|e| usage(format!("jobs file, job {seq}: {e}")))?;
                if args.dry_run {
                    writeln!(out, "{line}")?;
                    continue;
                }
                if let Some(n) = args.nice {
                    spec = spec.nice(n);
                }
                spec = with_env(spec, seq);
                let tx = tx.clone();
                let handle = system
                    .submit_command(job_opts.unwrap_or_else(|| opts.clone()), spec)
                    .context("cannot submit a job")?
                    .on_complete(move |r| {
                        let _ = tx.send((seq, r));
                    });
                let pending = Pending {
                    line,
                    inputs: Vec::new(),
                    slot: 1,
                };
                running.insert(seq, (handle, pending));
                if args.keep_order {
                    order.push_back(seq);
                }
                continue;
            }
            let inputs = match jobs.next() {
                None => {
                    exhausted = true;
                    break;
                }
                Some(Err(e)) => {
                    input_error = Some(e.0);
                    exhausted = true;
                    break;
                }
                Some(Ok(i)) => i,
            };
            seq += 1;
            if skip(seq) {
                continue;
            }
            let slot = if template.uses_slot() {
                free_slots.pop().unwrap_or(1)
            } else {
                1
            };
            let place = JobPlace {
                seq,
                slot,
                total: total.unwrap_or(0),
                slots: max_slots,
            };
            let Rendered { line, argv } = template.render(&inputs, place);
            if args.dry_run {
                writeln!(out, "{line}")?;
                continue;
            }
            let mut spec = match argv {
                Some(mut words) => {
                    let program = words.remove(0);
                    CommandSpec::new(program).args(words)
                }
                None => CommandSpec::shell(line.clone()).shell_program(&shell.path),
            };
            if let Some(n) = args.nice {
                spec = spec.nice(n);
            }
            spec = with_env(spec, seq);
            let tx = tx.clone();
            let handle = system
                .submit_command(opts.clone(), spec)
                .context("cannot submit a job")?
                .on_complete(move |r| {
                    let _ = tx.send((seq, r));
                });
            running.insert(seq, (handle, Pending { line, inputs, slot }));
            if args.keep_order {
                order.push_back(seq);
            }
            if let Some(b) = &bar {
                if total.is_none() {
                    b.set_length(seq);
                }
            }
        }
        if running.is_empty() && (exhausted || stop) {
            break;
        }
        let gated = !exhausted && !stop && running.len() < window;
        let wait = if gated {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(200)
        };
        let mut next = match rx.recv_timeout(wait) {
            Ok(r) => Some(r),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        while let Some((s, result)) = next.take() {
            let Some((_, pending)) = running.remove(&s) else {
                continue;
            };
            if template.uses_slot() {
                free_slots.push(pending.slot);
            }
            let Some(f) = finish(s, pending, result, timeout, tries) else {
                // Cancelled (halt now, Ctrl-C): not done, so not logged.
                if args.keep_order {
                    order.retain(|&q| q != s);
                }
                next = rx.try_recv().ok();
                continue;
            };
            finished += 1;
            if f.failed() {
                failed += 1;
            }
            if let Some(l) = &mut log {
                l.write(&Record {
                    seq: f.seq,
                    start: f.start,
                    runtime: f.runtime,
                    received: f.output.as_ref().map_or(0, |o| o.stdout.len()),
                    exit: f.exit,
                    signal: f.signal,
                    command: &f.line,
                })?;
            }
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(format!("running {} failed {failed}", running.len()));
            }
            if args.keep_order {
                held.insert(s, f);
                while let Some(f) = order.front().and_then(|q| held.remove(q)) {
                    order.pop_front();
                    emit(&mut out, &f, args.json, bar.as_ref())?;
                }
            } else {
                emit(&mut out, &f, args.json, bar.as_ref())?;
            }
            if let Some(h) = halt {
                let hit = h.count.is_some_and(|n| failed >= n)
                    || h.percent.is_some_and(|p| {
                        failed as f64 * 100.0 >= p * finished as f64 && failed > 0
                    });
                if hit && !stop {
                    stop = true;
                    eprintln!(
                        "seedcore exec: halting after {failed} failed job{} (--halt {}), {} running{}",
                        if failed == 1 { "" } else { "s" },
                        args.halt.as_deref().unwrap_or(""),
                        running.len(),
                        if h.now { " killed" } else { " left to finish" }
                    );
                    // `now` kills the running jobs; `soon` lets them finish
                    // but starts none of those queued in the window.
                    for (t, _) in running.values() {
                        if h.now || t.status() == TaskStatus::Queued {
                            t.cancel();
                        }
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        out.flush()?;
        let n = INTERRUPTS.load(Ordering::SeqCst);
        if n > interrupts_seen {
            if interrupts_seen == 0 {
                eprintln!("seedcore exec: interrupted: stopping {} running jobs (Ctrl-C again kills them)", running.len());
                stop = true;
                for (h, _) in running.values() {
                    h.cancel();
                }
            }
            if n >= 2 {
                kill_all(&system);
            }
            interrupts_seen = n;
        }
    }
    // Jobs held for --keep-order behind a cancelled one.
    let mut rest: Vec<_> = held.into_values().collect();
    rest.sort_by_key(|f| f.seq);
    for f in &rest {
        emit(&mut out, f, args.json, bar.as_ref())?;
    }
    out.flush()?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    // Stopped jobs (halt now, Ctrl-C) are resolved already but their
    // children may still be ending (SIGTERM, the grace period): wait for
    // them here, where a second Ctrl-C still kills them at once.
    while !running_children(&system).is_empty() {
        if INTERRUPTS.load(Ordering::SeqCst) >= 2 {
            kill_all(&system);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(system);
    if let Some(e) = input_error {
        eprintln!("seedcore exec: {e}");
        return Ok(ExitCode::from(255));
    }
    if interrupts_seen > 0 {
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::from(failed.min(101) as u8))
}

/// The process ids of the jobs' children running now.
fn running_children(system: &ConcurrentSystem) -> Vec<u32> {
    system
        .stats()
        .executor(seedcore::command::KIND)
        .map(|row| row.pids.clone())
        .unwrap_or_default()
}

/// SIGKILL to every running job's process group.
fn kill_all(system: &ConcurrentSystem) {
    for pid in running_children(system) {
        // SAFETY: kill takes plain integers; a group gone gives ESRCH.
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        }
    }
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The retries after the first try of GNU parallel's `--retries TRIES`
/// (tries in all; 0 for no limit).
pub(super) fn retries_after_first(tries: u32) -> u32 {
    if tries == 0 {
        u32::MAX
    } else {
        tries - 1
    }
}

/// Adds the variables GNU parallel gives each job.
fn with_env(spec: CommandSpec, seq: u64) -> CommandSpec {
    spec.env("PARALLEL_SEQ", seq.to_string())
        .env("PARALLEL_PID", std::process::id().to_string())
}

/// The record of a finished job; `None` for one that was cancelled.
/// `tries`: `--retries`, the most attempts a job has.
fn finish(
    seq: u64,
    p: Pending,
    result: Result<CommandOutput, TaskError>,
    timeout: Option<Duration>,
    tries: u32,
) -> Option<Finished> {
    let end = now_epoch();
    let mut f = Finished {
        seq,
        line: p.line,
        inputs: p.inputs,
        start: end,
        runtime: 0.0,
        exit: 0,
        signal: 0,
        attempts: tries,
        status: "ok",
        output: None,
        message: None,
    };
    let with_output = |f: &mut Finished, o: CommandOutput| {
        f.runtime = o.duration.as_secs_f64();
        f.start = end - f.runtime;
        // Killed by a signal: GNU parallel logs Exitval 0 and the signal.
        f.exit = o.code.unwrap_or(0);
        f.signal = o.signal.unwrap_or(0);
        f.attempts = o.attempts;
        f.output = Some(o);
    };
    match result {
        Ok(o) => with_output(&mut f, o),
        Err(TaskError::Cancelled) | Err(TaskError::SystemShutdown) => return None,
        Err(TaskError::TimedOut(d)) => {
            f.runtime = timeout.unwrap_or(d).as_secs_f64();
            f.start = end - f.runtime;
            f.exit = -1;
            f.signal = libc::SIGTERM;
            f.status = "timeout";
            f.message = Some(format!("job {seq} timed out: {}", f.line));
        }
        Err(e) => {
            f.status = "failed";
            if failed_output(&e).is_some() {
                if let TaskError::Failed(b) = e {
                    if let Ok(c) = b.downcast::<seedcore::command::CommandFailed>() {
                        with_output(&mut f, c.0);
                    }
                }
            } else {
                // It never ran: the shell's code for a command not found.
                f.exit = 127;
                f.message = Some(format!("job {seq}: {e}"));
            }
        }
    }
    Some(f)
}

/// Prints a finished job: its output (stdout then stderr, never
/// interleaved with another job's), or its JSON object.
fn emit(
    out: &mut impl Write,
    f: &Finished,
    json: bool,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    let print = |out: &mut dyn Write| -> anyhow::Result<()> {
        if json {
            let text = |c: Option<&seedcore::command::Captured>| -> anyhow::Result<String> {
                Ok(match c {
                    Some(c) => c.to_string_lossy()?,
                    None => String::new(),
                })
            };
            let o = f.output.as_ref();
            let v = serde_json::json!({
                "seq": f.seq,
                "command": f.line,
                "inputs": f.inputs,
                "status": f.status,
                "exit": f.exit,
                "signal": f.signal,
                "attempts": f.attempts,
                "start": (f.start * 1000.0).round() / 1000.0,
                "runtime_s": (f.runtime * 1e6).round() / 1e6,
                "stdout": text(o.map(|o| &o.stdout))?,
                "stderr": text(o.map(|o| &o.stderr))?,
                "error": f.message,
            });
            writeln!(out, "{v}")?;
        } else {
            if let Some(o) = &f.output {
                o.stdout.write_to(out)?;
                if !o.stderr.is_empty() {
                    out.flush()?;
                    o.stderr.write_to(&mut std::io::stderr().lock())?;
                }
            }
            if let Some(m) = &f.message {
                out.flush()?;
                eprintln!("seedcore exec: {m}");
            }
        }
        Ok(())
    };
    match bar {
        Some(b) => b.suspend(|| {
            print(out)?;
            out.flush()?;
            Ok(())
        }),
        None => print(out),
    }
}
