//! The job log, GNU parallel's exactly: a header, then one tab-separated
//! record per finished job, `Seq Host Starttime JobRuntime Send Receive
//! Exitval Signal Command` (Host `:`, Send 0, Receive the bytes the job
//! wrote to stdout, newlines in the command written as NUL), appended and
//! synced to disk by a writer thread of the log's own, so that no job
//! waits for the disk: it writes the records of the jobs that came back
//! together with one `write` as they come, and syncs at most every 10 ms
//! (one sync for all written since the last). A crash of the runner loses
//! at most records not yet written, one of the machine those not yet
//! synced (those jobs run again on `--resume`); either may tear the last
//! record, which names no job.
//! `--joblog +FILE` appends to FILE without a header.
//!
//! `--resume` skips every job the log names; `--resume-failed` only those
//! with a record of Exitval 0 and Signal 0. Both read GNU parallel's logs
//! and the logs of earlier versions of this runner (an `Attempts` column
//! before `Command`): the columns they look at are the same. A record torn
//! by a crash (fewer than nine columns, or not numbers where numbers go)
//! names no job; a line that is no record at all makes the log unusable,
//! as in GNU parallel.

use anyhow::Context;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The header line.
pub(crate) const HEADER: &str =
    "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand";

/// One finished job.
#[derive(Debug, Clone)]
pub(crate) struct Record<'a> {
    pub(crate) seq: u64,
    /// Seconds since the epoch.
    pub(crate) start: f64,
    pub(crate) runtime: f64,
    /// Bytes the job wrote to stdout.
    pub(crate) received: u64,
    pub(crate) exit: i32,
    pub(crate) signal: i32,
    pub(crate) command: &'a str,
}

/// An open job log.
#[derive(Debug)]
pub(crate) struct JobLog {
    /// Records added and not yet handed to the writer.
    pending: String,
    /// To the writer thread; `None` once [`finish`](Self::finish)ed.
    tx: Option<mpsc::Sender<String>>,
    writer: Option<JoinHandle<std::io::Result<()>>>,
}

/// What an earlier log says: seq → whether one of its records shows it
/// succeeded (Exitval 0, Signal 0).
pub(crate) type Done = HashMap<u64, bool>;

/// The path of `--joblog ARG` and whether to append (`+FILE`).
pub(crate) fn target(arg: &Path) -> (PathBuf, bool) {
    match arg.to_str().and_then(|s| s.strip_prefix('+')) {
        Some(p) => (PathBuf::from(p), true),
        None => (arg.to_path_buf(), false),
    }
}

/// Reads the records of an earlier log (its first line is the header).
fn read(path: &Path, text: &str) -> anyhow::Result<Done> {
    let mut done = Done::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.splitn(9, '\t').collect();
        let Ok(seq) = cols[0].parse::<u64>() else {
            anyhow::bail!("joblog {} is not a job log: {line:?}", path.display());
        };
        // A torn record: the job is not known to be done.
        let num = |i: usize| cols.get(i).and_then(|c| c.trim().parse::<f64>().ok());
        if cols.len() < 9 || (2..8).any(|i| num(i).is_none()) {
            continue;
        }
        let (Some(exit), Some(sig)) = (num(6), num(7)) else {
            continue;
        };
        let ok = exit == 0.0 && sig == 0.0;
        *done.entry(seq).or_default() |= ok;
    }
    Ok(done)
}

impl JobLog {
    /// Opens `--joblog ARG`: read then appended to when resuming (a log
    /// with a first line), appended to for `+FILE`, started afresh with
    /// the header otherwise.
    pub(crate) fn open(arg: &Path, resume: bool) -> anyhow::Result<(JobLog, Done)> {
        let (path, mut append) = target(arg);
        let mut done = Done::new();
        if resume {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    append |= !text.is_empty();
                    done = read(&path, &text)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read joblog {}", path.display()))
                }
            }
        }
        let mut opts = OpenOptions::new();
        if append {
            opts.append(true).create(true);
        } else {
            opts.write(true).create(true).truncate(true);
        }
        let mut file = opts
            .open(&path)
            .with_context(|| format!("cannot open joblog {}", path.display()))?;
        if !append {
            writeln!(file, "{HEADER}")?;
            file.sync_data()?;
        } else {
            // A record torn by a crash gets its own line ended first.
            let text = std::fs::read(&path)?;
            if !text.is_empty() && text.last() != Some(&b'\n') {
                file.write_all(b"\n")?;
            }
        }
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("seedcore-joblog".into())
            .spawn(move || write_and_sync(file, rx))
            .context("cannot start the joblog writer")?;
        Ok((
            JobLog {
                pending: String::new(),
                tx: Some(tx),
                writer: Some(writer),
            },
            done,
        ))
    }

    /// Adds one record; [`flush`](Self::flush) hands it to the writer.
    pub(crate) fn add(&mut self, r: &Record<'_>) {
        push_record(&mut self.pending, r);
        self.pending.push('\n');
    }

    /// Hands the records added since the last call to the writer thread,
    /// which writes and syncs them without holding up the caller. An error
    /// of the writer (a full disk) comes back here, from the next call.
    pub(crate) fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        match &self.tx {
            Some(tx) if tx.send(batch).is_ok() => Ok(()),
            // The writer has stopped: its error says why.
            _ => self.finish(),
        }
    }

    /// Flushes, then waits until the writer has written and synced every
    /// record; its error, if it had one.
    pub(crate) fn finish(&mut self) -> anyhow::Result<()> {
        if !self.pending.is_empty() {
            if let Some(tx) = &self.tx {
                let _ = tx.send(std::mem::take(&mut self.pending));
            }
        }
        self.tx = None;
        match self.writer.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e).context("cannot write the joblog"),
            Some(Err(_)) => anyhow::bail!("the joblog writer panicked"),
        }
    }
}

impl Drop for JobLog {
    /// A run that ends early (an error) still gets its records on disk.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The least time between two syncs of the log: a sync costs the disk's
/// journal a commit, and a run of short jobs would otherwise pay one per job.
const SYNC_EVERY: Duration = Duration::from_millis(10);

/// The writer thread: each batch is written as it comes (a killed runner
/// loses none of it), and synced with those that come within
/// [`SYNC_EVERY`] of the last sync, until the sender is gone.
fn write_and_sync(mut file: File, rx: mpsc::Receiver<String>) -> std::io::Result<()> {
    let mut last_sync: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        file.write_all(first.as_bytes())?;
        if let Some(due) = last_sync.map(|t| t + SYNC_EVERY) {
            while let Some(left) = due.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(more) => file.write_all(more.as_bytes())?,
                    Err(_) => break,
                }
            }
        }
        file.sync_data()?;
        last_sync = Some(Instant::now());
    }
    Ok(())
}

/// Appends a record as GNU parallel writes it (without its newline) to `out`.
fn push_record(out: &mut String, r: &Record<'_>) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "{}\t:\t{:.3}\t{:10.3}\t0\t{}\t{}\t{}\t",
        r.seq, r.start, r.runtime, r.received, r.exit, r.signal
    );
    // GNU parallel: "Newlines make it hard to parse the joblog".
    out.extend(r.command.chars().map(|c| if c == '\n' { '\0' } else { c }));
}

/// A record as GNU parallel writes it (without its newline).
#[cfg(test)]
fn format_record(r: &Record<'_>) -> String {
    let mut s = String::new();
    push_record(&mut s, r);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_gnu_parallels_nine_columns() {
        let r = Record {
            seq: 3,
            start: 1_700_000_000.25,
            runtime: 1.5,
            received: 12,
            exit: 0,
            signal: 9,
            command: "echo a\tb\nc",
        };
        assert_eq!(
            format_record(&r),
            "3\t:\t1700000000.250\t     1.500\t0\t12\t0\t9\techo a\tb\0c"
        );
        assert_eq!(HEADER.split('\t').count(), 9);
    }

    #[test]
    fn gnu_logs_and_older_logs_with_attempts_are_read_alike() {
        let p = Path::new("log");
        let gnu = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n\
                   1\t:\t1796612122.290\t     0.000\t0\t0\t0\t0\texit 0\n\
                   2\t:\t1796612122.297\t     0.005\t0\t0\t3\t0\texit 3\n\
                   4\t:\t1796612122.456\t     0.000\t0\t0\t0\t9\tkill -9 $$\n\
                   5\t:\t1796612122.5\t     0.1\t0\t0\t0\t0\t\n";
        let done = read(p, gnu).unwrap();
        assert_eq!(done.len(), 4);
        assert!(done[&1] && !done[&2] && !done[&4] && done[&5]);
        let older =
            "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tAttempts\tCommand\n\
                     1\t:\t1.0\t     0.000\t0\t0\t1\t0\t1\tfalse\n\
                     1\t:\t2.0\t     0.000\t0\t0\t0\t0\t2\ttrue\n\
                     7\t:\t3.0\t     0.000\t0\t0\t0\t0\t1\ttrue\n\
                     8\t:\t3.0\t   ";
        let done = read(p, older).unwrap();
        assert_eq!(done.len(), 2, "the torn record names no job");
        assert!(done[&1] && done[&7]);
        assert!(read(p, "header\nnot a record\n").is_err());
    }

    #[test]
    fn a_plus_appends() {
        assert_eq!(target(Path::new("+a/log")), (PathBuf::from("a/log"), true));
        assert_eq!(target(Path::new("log")), (PathBuf::from("log"), false));
    }
}
