//! The run loop: inputs become jobs, jobs become command tasks on the
//! library's command executor, finished jobs are printed, logged and
//! counted.
//!
//! The loop keeps a small window of jobs submitted (twice the slots), so
//! inputs are read as they are needed and a halt or Ctrl-C leaves little
//! queued; each finished job comes back on a channel (sent by the thread
//! that resolves it), and the main thread alone writes stdout, stderr and
//! the log.
//!
//! Steps of [`run`]: the flags are checked ([`Settings::parse`]), the inputs
//! opened ([`Inputs::open`]), the job log, engine and progress bar set up
//! ([`Run::start`]); then, until every job is done or the run stops, the
//! window is filled ([`Run::fill_window`]) and what came back handled
//! ([`Run::collect`], [`Run::check_interrupts`]); last, [`Run::finish`]
//! prints what `--keep-order` still holds, waits for stopped jobs and
//! picks the exit status.

use super::inputs::{InputError, Parsed};
use super::joblog::{Done, JobLog, Record};
use super::jobsfile::Job;
use super::settings::{Settings, Tally};
use super::shell::JobShell;
use super::template::{JobPlace, Rendered, Template, TemplateError};
use super::{usage, ExecArgs};
use anyhow::Context;
use seedcore::command::{failed_output, CommandExecutor, CommandOutput, CommandSpec};
use seedcore::{
    Backoff, ConcurrentSystem, RetryPolicy, TaskError, TaskHandle, TaskOptions, TaskStatus,
};
use std::collections::{HashMap, VecDeque};
use std::io::{BufWriter, IsTerminal, StdoutLock, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Ctrl-Cs received.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
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

/// A job submitted and not yet come back.
struct Pending {
    line: String,
    inputs: Vec<String>,
    slot: usize,
}

/// Runs the jobs of `args`; the exit status as GNU parallel gives it.
pub(super) fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::parse(&args)?;
    let inputs = Inputs::open(&args)?;
    let mut run = Run::start(&args, settings, inputs)?;
    loop {
        run.fill_window()?;
        if run.running.is_empty() && (run.exhausted || run.stop) {
            break;
        }
        if !run.collect()? {
            break;
        }
        run.out.flush()?;
        run.check_interrupts();
    }
    run.finish()
}

/// A job's inputs, as the input sources give them.
type JobInputs = Box<dyn Iterator<Item = Result<Vec<String>, InputError>>>;

/// Where the jobs come from: a template and its inputs, or a jobs file.
struct Inputs {
    shell: JobShell,
    template: Template,
    jobs: JobInputs,
    /// `--jobs-file`: its jobs instead of the template's.
    file_jobs: Option<std::vec::IntoIter<Job>>,
    /// The number of jobs, where it is known before they run.
    total: Option<u64>,
}

impl Inputs {
    /// Finds the job shell and parses the template and input sources (or
    /// opens the jobs file).
    fn open(args: &ExecArgs) -> anyhow::Result<Inputs> {
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
        let file_jobs = match &args.jobs_file {
            Some(_) if !args.rest.is_empty() => {
                return Err(usage("--jobs-file takes no command template or inputs"))
            }
            Some(p) => Some(super::jobsfile::open(p).map_err(usage)?),
            None => None,
        };
        if let Some(list) = &file_jobs {
            total = Some(list.len() as u64);
        }
        Ok(Inputs {
            shell,
            template,
            jobs,
            file_jobs,
            total,
        })
    }
}

/// A finished (or cancelled) job's sequence number and result, sent when
/// it resolves.
type Outcome = (u64, Result<CommandOutput, TaskError>);

/// A run under way: its engine, the jobs in flight and what has been
/// counted. The main thread alone owns it.
struct Run<'a> {
    args: &'a ExecArgs,
    settings: Settings,
    inputs: Inputs,
    log: Option<JobLog>,
    /// `--resume`: what the job log shows done before.
    done_before: Done,
    system: ConcurrentSystem,
    /// The options of a job (those of a jobs file's job may replace them).
    opts: TaskOptions,
    max_slots: usize,
    /// Jobs submitted and not back at most.
    window: usize,
    bar: Option<indicatif::ProgressBar>,
    out: BufWriter<StdoutLock<'static>>,
    tx: mpsc::Sender<Outcome>,
    rx: mpsc::Receiver<Outcome>,
    running: HashMap<u64, (TaskHandle, Pending)>,
    /// `--keep-order`: the jobs in input order, and the finished ones
    /// waiting for those before them.
    order: VecDeque<u64>,
    held: HashMap<u64, Finished>,
    /// `{%}`: the slot numbers not in use.
    free_slots: Vec<usize>,
    /// The last job's sequence number.
    seq: u64,
    /// No more jobs to read.
    exhausted: bool,
    /// Halted or interrupted: no more jobs to start.
    stop: bool,
    finished: u64,
    failed: u64,
    /// The exit status of the last failed job (255 for one killed or not
    /// started), for `--halt fail=1`'s exit status.
    last_failure: Option<u8>,
    /// Whether `--halt` stopped the run.
    halted: bool,
    interrupts_seen: usize,
    input_error: Option<String>,
}

impl<'a> Run<'a> {
    /// Opens the job log, starts the engine (a command executor of the
    /// slots: fixed, or between 1 and 4x the cores with `-j auto`, through
    /// the balancer), catches Ctrl-C and shows the bar.
    fn start(args: &'a ExecArgs, settings: Settings, inputs: Inputs) -> anyhow::Result<Run<'a>> {
        let (log, done_before) = match &args.joblog {
            Some(p) if !args.dry_run => {
                let (l, d) = JobLog::open(p, args.resume || args.resume_failed)
                    .map_err(|e| usage(format!("{e:#}")))?;
                (Some(l), d)
            }
            _ => (None, Default::default()),
        };
        let grace = settings.grace;
        let system = ConcurrentSystem::builder()
            .shutdown_timeout(grace + Duration::from_secs(5))
            .build()
            .context("cannot start the engine")?;
        let exec = CommandExecutor::new(settings.slots).grace(grace);
        let exec = if settings.auto {
            exec.min_slots(1).max_slots(4 * settings.cores)
        } else {
            exec.max_slots(settings.slots)
        };
        system
            .add_executor(exec)
            .context("cannot start the command executor")?;
        let max_slots = settings.max_slots();
        // {%} needs a job per slot at most, and --halt starts no job after the
        // one that trips it (as GNU parallel); otherwise a few queued ahead keep
        // every slot busy.
        let window = if inputs.template.uses_slot() || settings.halt.is_some() {
            max_slots
        } else {
            2 * max_slots + 2
        };
        let mut opts = TaskOptions::new();
        if let Some(t) = settings.timeout {
            opts = opts.timeout(t);
        }
        if settings.tries != 1 {
            opts = opts.retry(
                RetryPolicy::retries(super::settings::retries_after_first(settings.tries)).backoff(
                    Backoff::Exponential {
                        initial: settings.retry_delay,
                        factor: 2.0,
                        max: Duration::from_secs(30),
                    },
                ),
            );
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
                inputs.total,
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

        let (tx, rx) = mpsc::channel();
        Ok(Run {
            args,
            settings,
            inputs,
            log,
            done_before,
            system,
            opts,
            max_slots,
            window,
            bar,
            out: BufWriter::with_capacity(64 * 1024, std::io::stdout().lock()),
            tx,
            rx,
            running: HashMap::new(),
            order: VecDeque::new(),
            held: HashMap::new(),
            free_slots: (1..=max_slots).rev().collect(),
            seq: 0,
            exhausted: false,
            stop: false,
            finished: 0,
            failed: 0,
            last_failure: None,
            halted: false,
            interrupts_seen: 0,
            input_error: None,
        })
    }

    /// Whether job `seq` is skipped: `--resume` skips the jobs the log
    /// shows finished, `--resume-failed` those that succeeded.
    fn skip(&self, seq: u64) -> bool {
        match self.done_before.get(&seq) {
            None => false,
            Some(&succeeded) => self.args.resume || succeeded,
        }
    }

    /// Reads and submits jobs until the window is full, the inputs end,
    /// the run stops, or `--memfree` / `--load` hold the next one back.
    fn fill_window(&mut self) -> anyhow::Result<()> {
        while !self.stop && !self.exhausted && self.running.len() < self.window {
            if !self.settings.resources_allow(self.args.load) {
                break;
            }
            if let Some(list) = &mut self.inputs.file_jobs {
                let Some(job) = list.next() else {
                    self.exhausted = true;
                    break;
                };
                self.seq += 1;
                if !self.skip(self.seq) {
                    self.submit_file_job(job)?;
                }
                continue;
            }
            let inputs = match self.inputs.jobs.next() {
                None => {
                    self.exhausted = true;
                    break;
                }
                Some(Err(e)) => {
                    self.input_error = Some(e.0);
                    self.exhausted = true;
                    break;
                }
                Some(Ok(i)) => i,
            };
            self.seq += 1;
            if !self.skip(self.seq) {
                self.submit_template_job(inputs)?;
            }
        }
        Ok(())
    }

    /// A jobs file's job: its command and options (printed only, with
    /// `--dry-run`).
    fn submit_file_job(&mut self, job: Job) -> anyhow::Result<()> {
        let seq = self.seq;
        let (spec, line, job_opts) = job
            .into_spec(&self.opts, self.settings.retry_delay, &self.inputs.shell)
            .map_err(|e| usage(format!("jobs file, job {seq}: {e}")))?;
        if self.args.dry_run {
            writeln!(self.out, "{line}")?;
            return Ok(());
        }
        let opts = job_opts.unwrap_or_else(|| self.opts.clone());
        let pending = Pending {
            line,
            inputs: Vec::new(),
            slot: 1,
        };
        self.submit(spec, opts, pending)
    }

    /// The template's job for `inputs` (printed only, with `--dry-run`).
    fn submit_template_job(&mut self, inputs: Vec<String>) -> anyhow::Result<()> {
        let seq = self.seq;
        let template = &self.inputs.template;
        let slot = if template.uses_slot() {
            self.free_slots.pop().unwrap_or(1)
        } else {
            1
        };
        let place = JobPlace {
            seq,
            slot,
            total: self.inputs.total.unwrap_or(0),
            slots: self.max_slots,
        };
        let Rendered { line, argv } = template.render(&inputs, place);
        if self.args.dry_run {
            writeln!(self.out, "{line}")?;
            return Ok(());
        }
        let spec = match argv {
            Some(mut words) => {
                let program = words.remove(0);
                CommandSpec::new(program).args(words)
            }
            None => CommandSpec::shell(line.clone()).shell_program(&self.inputs.shell.path),
        };
        self.submit(spec, self.opts.clone(), Pending { line, inputs, slot })?;
        if let Some(b) = &self.bar {
            if self.inputs.total.is_none() {
                b.set_length(seq);
            }
        }
        Ok(())
    }

    /// Submits job [`seq`](Self::seq) with `--nice` and GNU parallel's
    /// variables; its result comes back on the channel.
    fn submit(
        &mut self,
        mut spec: CommandSpec,
        opts: TaskOptions,
        pending: Pending,
    ) -> anyhow::Result<()> {
        let seq = self.seq;
        if let Some(n) = self.args.nice {
            spec = spec.nice(n);
        }
        spec = with_env(spec, seq);
        let tx = self.tx.clone();
        let handle = self
            .system
            .submit_command(opts, spec)
            .context("cannot submit a job")?
            // A send on an unbounded channel is short and never blocks: it
            // runs on the thread that resolves the job, with no hop through
            // the callback executor's thread per job.
            .on_resolved(move |r| {
                let _ = tx.send((seq, r));
            });
        self.running.insert(seq, (handle, pending));
        if self.args.keep_order {
            self.order.push_back(seq);
        }
        Ok(())
    }

    /// Waits a little for a job to come back (less while the window has
    /// room, so that a `--memfree` / `--load` gate is looked at again
    /// soon), then handles it and every other that has come back. False
    /// when none can come back any more.
    fn collect(&mut self) -> anyhow::Result<bool> {
        let gated = !self.exhausted && !self.stop && self.running.len() < self.window;
        let wait = if gated {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(200)
        };
        let mut next = match self.rx.recv_timeout(wait) {
            Ok(r) => Some(r),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(false),
        };
        let mut batch = Vec::new();
        while let Some((s, result)) = next.take() {
            next = self.rx.try_recv().ok();
            let Some((_, pending)) = self.running.remove(&s) else {
                continue;
            };
            if self.inputs.template.uses_slot() {
                self.free_slots.push(pending.slot);
            }
            match finish(
                s,
                pending,
                result,
                self.settings.timeout,
                self.settings.tries,
            ) {
                Some(f) => batch.push(f),
                // Cancelled (halt now, Ctrl-C): not done, so not logged.
                None if self.args.keep_order => self.order.retain(|&q| q != s),
                None => {}
            }
        }
        // The jobs that came back together go to the log's writer at once
        // (one write and one sync for them, or with later ones).
        if let Some(l) = &mut self.log {
            for f in &batch {
                l.add(&Record {
                    seq: f.seq,
                    start: f.start,
                    runtime: f.runtime,
                    received: f.output.as_ref().map_or(0, |o| o.stdout.len()),
                    exit: f.exit,
                    signal: f.signal,
                    command: &f.line,
                });
            }
            l.flush()?;
        }
        for f in batch {
            self.done(f)?;
        }
        Ok(true)
    }

    /// Counts and prints finished job `f` (logged already; in input order
    /// with `--keep-order`), then checks `--halt`.
    fn done(&mut self, f: Finished) -> anyhow::Result<()> {
        let s = f.seq;
        self.finished += 1;
        if f.failed() {
            self.failed += 1;
            self.last_failure = Some(match u8::try_from(f.exit) {
                Ok(code) if f.signal == 0 && code != 0 => code,
                _ => 255,
            });
        }
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!(
                "running {} failed {}",
                self.running.len(),
                self.failed
            ));
        }
        let json = self.args.json;
        if self.args.keep_order {
            self.held.insert(s, f);
            while let Some(f) = self.order.front().and_then(|q| self.held.remove(q)) {
                self.order.pop_front();
                emit(&mut self.out, &f, json, self.bar.as_ref())?;
            }
        } else {
            emit(&mut self.out, &f, json, self.bar.as_ref())?;
        }
        self.check_halt();
        Ok(())
    }

    /// Stops the run once `--halt` is tripped: `now` kills the running
    /// jobs; `soon` lets them finish but starts none of those queued in
    /// the window.
    fn check_halt(&mut self) {
        let Some(h) = self.settings.halt else {
            return;
        };
        if !h.tripped(self.tally()) || self.stop {
            return;
        }
        self.stop = true;
        self.halted = true;
        let (failed, finished) = (self.failed, self.finished);
        eprintln!(
            "seedcore exec: halting after {finished} finished job{} ({failed} failed; --halt {}), {} running{}",
            if finished == 1 { "" } else { "s" },
            self.args.halt.as_deref().unwrap_or(""),
            self.running.len(),
            if h.now { " killed" } else { " left to finish" }
        );
        for (t, _) in self.running.values() {
            if h.now || t.status() == TaskStatus::Queued {
                t.cancel();
            }
        }
    }

    /// Where the run stands, for `--halt`.
    fn tally(&self) -> Tally {
        Tally {
            finished: self.finished,
            failed: self.failed,
            total: self.inputs.total,
        }
    }

    /// The first Ctrl-C stops the run and cancels the running jobs (their
    /// process groups get SIGTERM, then SIGKILL after the grace period); a
    /// second kills them at once.
    fn check_interrupts(&mut self) {
        let n = INTERRUPTS.load(Ordering::SeqCst);
        if n <= self.interrupts_seen {
            return;
        }
        if self.interrupts_seen == 0 {
            eprintln!(
                "seedcore exec: interrupted: stopping {} running jobs (Ctrl-C again kills them)",
                self.running.len()
            );
            self.stop = true;
            for (h, _) in self.running.values() {
                h.cancel();
            }
        }
        if n >= 2 {
            kill_all(&self.system);
        }
        self.interrupts_seen = n;
    }

    /// Prints the jobs `--keep-order` held behind a cancelled one, waits
    /// for stopped jobs' children and picks the exit status: 255 after an
    /// input error, 130 after Ctrl-C, else the failed jobs (at most 101).
    fn finish(mut self) -> anyhow::Result<ExitCode> {
        let mut rest: Vec<_> = std::mem::take(&mut self.held).into_values().collect();
        rest.sort_by_key(|f| f.seq);
        for f in &rest {
            emit(&mut self.out, f, self.args.json, self.bar.as_ref())?;
        }
        self.out.flush()?;
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        // Stopped jobs (halt now, Ctrl-C) are resolved already but their
        // children may still be ending (SIGTERM, the grace period): wait for
        // them here, where a second Ctrl-C still kills them at once.
        while !running_children(&self.system).is_empty() {
            if INTERRUPTS.load(Ordering::SeqCst) >= 2 {
                kill_all(&self.system);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Every record written and synced before the run says it is done.
        if let Some(l) = &mut self.log {
            l.finish()?;
        }
        let tally = self.tally();
        let halt_status = self
            .settings
            .halt
            .and_then(|h| h.exit_status(tally, self.halted, self.last_failure));
        let Run {
            system,
            input_error,
            interrupts_seen,
            failed,
            ..
        } = self;
        drop(system);
        if let Some(e) = input_error {
            eprintln!("seedcore exec: {e}");
            return Ok(ExitCode::from(255));
        }
        if interrupts_seen > 0 {
            return Ok(ExitCode::from(130));
        }
        if let Some(code) = halt_status {
            return Ok(ExitCode::from(code));
        }
        Ok(ExitCode::from(failed.min(101) as u8))
    }
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
