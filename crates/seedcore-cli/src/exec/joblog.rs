//! The job log: GNU parallel's tab-separated columns (Seq Host Starttime
//! JobRuntime Send Receive Exitval Signal) then Attempts, then Command last
//! (the one free-text column), one record per finished job, appended and
//! synced to disk before the next, so a crash of the runner loses nothing
//! the log shows. `--resume` skips every job the log names;
//! `--resume-failed` only those that succeeded.

use anyhow::Context;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// The header line.
pub(crate) const HEADER: &str =
    "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tAttempts\tCommand";

/// One finished job.
#[derive(Debug, Clone)]
pub(crate) struct Record<'a> {
    pub(crate) seq: u64,
    /// Seconds since the epoch.
    pub(crate) start: f64,
    pub(crate) runtime: f64,
    pub(crate) exit: i32,
    pub(crate) signal: i32,
    pub(crate) attempts: u32,
    pub(crate) command: &'a str,
}

/// An open job log.
#[derive(Debug)]
pub(crate) struct JobLog {
    file: File,
}

/// What an earlier log says: seq → (exit, signal) of its last record.
pub(crate) type Done = HashMap<u64, (i32, i32)>;

impl JobLog {
    /// Opens `path`: appended to when resuming (after reading what it
    /// holds), started afresh otherwise.
    pub(crate) fn open(path: &Path, resume: bool) -> anyhow::Result<(JobLog, Done)> {
        let mut done = Done::new();
        let mut fresh = true;
        if resume {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    fresh = text.is_empty();
                    for line in text.lines().skip(1) {
                        let cols: Vec<&str> = line.split('\t').collect();
                        // A torn last line (a crash mid-write) is no record.
                        if cols.len() < 10 {
                            continue;
                        }
                        let (Ok(seq), Ok(exit), Ok(sig)) =
                            (cols[0].parse(), cols[6].parse(), cols[7].parse())
                        else {
                            continue;
                        };
                        done.insert(seq, (exit, sig));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read joblog {}", path.display()))
                }
            }
        }
        let mut opts = OpenOptions::new();
        if fresh {
            opts.write(true).create(true).truncate(true);
        } else {
            opts.append(true);
        }
        let mut file = opts
            .open(path)
            .with_context(|| format!("cannot open joblog {}", path.display()))?;
        if fresh {
            writeln!(file, "{HEADER}")?;
            file.sync_data()?;
        } else {
            // A record torn by a crash gets its own line ended first.
            let text = std::fs::read(path)?;
            if text.last() != Some(&b'\n') {
                file.write_all(b"\n")?;
            }
        }
        Ok((JobLog { file }, done))
    }

    /// Appends one record and syncs it to disk.
    pub(crate) fn write(&mut self, r: &Record<'_>) -> anyhow::Result<()> {
        let command = r.command.replace(['\n', '\t'], " ");
        let line = format!(
            "{}\t:\t{:.3}\t{:10.3}\t0\t0\t{}\t{}\t{}\t{}\n",
            r.seq, r.start, r.runtime, r.exit, r.signal, r.attempts, command
        );
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data().context("cannot sync the joblog")?;
        Ok(())
    }
}
