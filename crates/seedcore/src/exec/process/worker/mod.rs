//! The worker side: what a process started by a pool runs instead of its
//! `main`.
//!
//! # Loop
//!
//! 1. Say `Hello` with the pid and the registered task names.
//! 2. Take every frame already received into a local queue ordered by
//!    priority, then FIFO; block for the next frame only when there is
//!    nothing to run.
//! 3. Run the most urgent sync task on this thread, recording it in the
//!    status page; async tasks go to a runtime thread and run concurrently.
//! 4. Results are written before the next sync task starts (so a long task
//!    delays none, and a crash loses none), when the queue runs dry, and
//!    from async tasks as they finish.
//!
//! Results wait in an `Outbox` (`outbox.rs`) until one of those moments.
//!
//! If the parent goes away (end of stream) the worker exits; a watcher
//! thread also ends it when the parent process dies while a task runs.

mod outbox;

use super::proto::{FromWorker, ToWorker};
use super::registry::{self, EntryKind, Outcome};
use super::status::StatusPage;
use super::{INDEX_ENV, STATUS_ENV, WORKER_ENV};
use crate::options::Priority;
use crate::sched::RankedQueue;
use crate::wire::frame::{FrameError, FrameReader};
use outbox::Outbox;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

/// The environment variables naming the worker's hooks.
pub(crate) const INIT_ENV: &str = "SEEDCORE_WORKER_INIT";
/// The initializer's encoded arguments, in hex (an environment value is
/// text); absent for unit arguments.
pub(crate) const INIT_ARGS_ENV: &str = "SEEDCORE_WORKER_INIT_ARGS";
pub(crate) const FINI_ENV: &str = "SEEDCORE_WORKER_FINI";
pub(crate) const MAX_FRAME_ENV: &str = "SEEDCORE_WORKER_MAX_FRAME";

/// A task the parent sent, waiting in this worker's queue.
struct Pending {
    id: u64,
    task: String,
    args: Vec<u8>,
    fds: Vec<OwnedFd>,
    boxed: Option<u64>,
}

/// Runs the worker if this process is one; returns its exit code.
pub(crate) fn run_if_worker() -> Option<i32> {
    let fd: i32 = std::env::var(WORKER_ENV).ok()?.parse().ok()?;
    super::mark_worker();
    let status_fd: Option<i32> = std::env::var(STATUS_ENV).ok().and_then(|v| v.parse().ok());
    let index = std::env::var(INDEX_ENV).unwrap_or_default();
    let max_frame: usize = std::env::var(MAX_FRAME_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 << 20);
    let init = std::env::var(INIT_ENV).ok();
    let init_args = std::env::var(INIT_ARGS_ENV).ok();
    let fini = std::env::var(FINI_ENV).ok();
    // Children of this worker are not workers.
    for v in [
        WORKER_ENV,
        STATUS_ENV,
        INDEX_ENV,
        INIT_ENV,
        INIT_ARGS_ENV,
        FINI_ENV,
        MAX_FRAME_ENV,
    ] {
        std::env::remove_var(v);
    }
    watch_parent();
    registry::record_panics();
    // SAFETY: the pool placed the worker's end of its socket at this
    // descriptor number for this process alone; nothing else owns it.
    let sock = unsafe { UnixStream::from_raw_fd(fd) };
    let status = match status_fd {
        // SAFETY: as above, for the status page's memfd.
        Some(fd) => match StatusPage::map(unsafe { OwnedFd::from_raw_fd(fd) }) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("seedcore worker {index}: cannot map the status page: {e}");
                return Some(3);
            }
        },
        None => {
            eprintln!("seedcore worker {index}: started without a status page");
            return Some(3);
        }
    };
    let init = init.map(|name| Hook {
        name,
        args: init_args,
    });
    Some(serve(sock, status, max_frame, init, fini, &index))
}

/// Ends a process that a pool started as a worker but that reached the
/// building of a system without having become one (its `main` lacks
/// `seedcore::init()`): it would start a pool of its own, whose workers
/// would do the same. It tells its parent why, which fails the parent's
/// tasks with that message at once, and exits. Elsewhere it does nothing.
pub(crate) fn refuse_if_uninitialized() {
    if super::is_worker() {
        return;
    }
    let Some(fd) = std::env::var(WORKER_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    let why = "the worker program does not call seedcore::init(): it reached \
               ConcurrentSystem::build as a worker process; call seedcore::init() first thing \
               in main (in a test file, seedcore::enable_test_workers!())";
    eprintln!("seedcore: {why}");
    // SAFETY: the pool placed this process's end of its socket at this
    // descriptor; nothing in this process has used it, and the process
    // exits right after this write.
    let sock = unsafe { UnixStream::from_raw_fd(fd) };
    refuse(&sock, why);
    std::process::exit(3);
}

/// The initializer as the parent named it, with its arguments in hex.
struct Hook {
    name: String,
    args: Option<String>,
}

/// Runs hook `name` (the initializer or finalizer) with encoded `args`;
/// `Err` says why it failed, for the parent.
fn run_hook(name: &str, what: &str, args: &[u8]) -> Result<(), String> {
    let Some(entry) = registry::find(name) else {
        return Err(format!(
            "the {what} `{name}` is not a registered process task"
        ));
    };
    let EntryKind::Sync(f) = entry.kind else {
        return Err(format!("the {what} `{name}` must not be async"));
    };
    match f(args, Vec::new()).0 {
        Outcome::Ok(_) => Ok(()),
        Outcome::Panicked {
            message, location, ..
        } => Err(format!(
            "the {what} `{name}` {}",
            registry::panic_text(&message, location.as_deref())
        )),
        Outcome::Failed(m) | Outcome::Raised { message: m, .. } => {
            Err(format!("the {what} `{name}` failed: {m}"))
        }
        Outcome::BadArgs(m) => Err(format!(
            "the {what} `{name}` could not take its arguments: {m}"
        )),
        other => Err(format!("the {what} `{name}` failed: {other:?}")),
    }
}

/// Tells the parent this worker cannot serve, before it exits.
fn refuse(sock: &UnixStream, why: &str) {
    let msg = FromWorker::StartFailed {
        why: why.to_owned(),
    };
    let bytes = postcard::to_allocvec(&msg).expect("refusals encode");
    let _ = crate::wire::frame::write_frames(
        sock,
        &[crate::wire::frame::OutFrame {
            payload: &bytes,
            fds: Vec::new(),
        }],
    );
}

fn serve(
    sock: UnixStream,
    status: StatusPage,
    max_frame: usize,
    init: Option<Hook>,
    fini: Option<String>,
    index: &str,
) -> i32 {
    let unit = postcard::to_allocvec(&()).expect("unit encodes");
    if let Some(hook) = &init {
        let args = match &hook.args {
            None => Ok(unit.clone()),
            Some(text) => hex::decode(text).map_err(|_| {
                format!(
                    "the initializer `{}` could not take its arguments: \
                     they reached the worker garbled (not hex)",
                    hook.name
                )
            }),
        };
        if let Err(why) = args.and_then(|a| run_hook(&hook.name, "initializer", &a)) {
            eprintln!("seedcore worker {index}: {why}");
            refuse(&sock, &why);
            return 3;
        }
    }
    let read_half = match sock.try_clone() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("seedcore worker {index}: {e}");
            return 3;
        }
    };
    let outbox = Arc::new(Mutex::new(Outbox {
        sock,
        frames: Vec::new(),
        since: None,
        max_frame,
    }));
    let hello = FromWorker::Hello {
        pid: std::process::id(),
        tasks: registry::names(),
    };
    {
        let mut o = outbox.lock();
        o.frames.push((
            postcard::to_allocvec(&hello).expect("hello encodes"),
            Vec::new(),
        ));
        if o.flush().is_err() {
            return 0;
        }
    }
    let mut reader = FrameReader::new(read_half, max_frame);
    let mut queue: RankedQueue<Pending> = RankedQueue::new();
    let mut runtime: Option<tokio::runtime::Runtime> = None;
    // Async tasks running, by id; the handle aborts one that is cancelled.
    let running_async: Arc<Mutex<HashMap<u64, Option<tokio::task::AbortHandle>>>> = Arc::default();
    let code = loop {
        // Take in what has arrived; block only with nothing to do.
        let mut exit: Option<i32> = None;
        // Right after a read, what the socket held is in the buffer: no
        // need to ask the kernel again before running.
        let mut just_read = false;
        loop {
            let buffered = reader.has_frame();
            if !buffered && !queue.is_empty() && (just_read || !readable(&reader)) {
                break;
            }
            just_read = true;
            if !buffered && queue.is_empty() && outbox.lock().flush().is_err() {
                exit = Some(0);
                break;
            }
            match reader.next() {
                Ok((payload, fds)) => match postcard::from_bytes::<ToWorker>(&payload) {
                    Ok(ToWorker::Run {
                        id,
                        priority,
                        task,
                        args,
                        boxed,
                    }) => {
                        // The parent sends levels it accepted; anything
                        // else waits behind every real level.
                        let p = Priority::new(priority).unwrap_or(Priority::IDLE);
                        queue.push(
                            p,
                            Pending {
                                id,
                                task,
                                args,
                                fds,
                                boxed,
                            },
                        );
                    }
                    Ok(ToWorker::Cancel { id }) => {
                        let before = queue.len();
                        queue.retain(|p| p.id != id);
                        let aborted = running_async
                            .lock()
                            .remove(&id)
                            .map(|h| h.map(|h| h.abort()));
                        if queue.len() < before || aborted.is_some() {
                            outbox.lock().push(id, Outcome::Cancelled, Vec::new());
                        }
                    }
                    Ok(ToWorker::Exit) => {
                        exit = Some(0);
                        break;
                    }
                    Err(e) => {
                        eprintln!("seedcore worker {index}: undecodable message: {e}");
                        exit = Some(3);
                        break;
                    }
                },
                Err(FrameError::Closed) => {
                    exit = Some(0);
                    break;
                }
                Err(e) => {
                    eprintln!("seedcore worker {index}: {e}");
                    exit = Some(3);
                    break;
                }
            }
        }
        if let Some(code) = exit {
            break code;
        }
        let Some(mut p) = queue.pop() else {
            continue;
        };
        // Arguments over the frame limit came in shared memory.
        let boxed = match p.boxed {
            None => None,
            Some(len) => match p
                .fds
                .pop()
                .map(|fd| crate::wire::shm::import_bytes(fd, len))
            {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    outbox.lock().push(p.id, Outcome::BadArgs(e), Vec::new());
                    continue;
                }
                None => {
                    let why = "arguments in shared memory came without their descriptor";
                    outbox
                        .lock()
                        .push(p.id, Outcome::BadArgs(why.into()), Vec::new());
                    continue;
                }
            },
        };
        let args: &[u8] = match &boxed {
            Some(b) => b.as_slice(),
            None => &p.args,
        };
        match registry::find(&p.task).map(|e| e.kind) {
            None => outbox
                .lock()
                .push(p.id, Outcome::Unknown(p.task.clone()), Vec::new()),
            Some(EntryKind::Sync(f)) => {
                // Results of earlier tasks go out before this one starts: a
                // long task must not hold them back, and if this one
                // crashes they are already in the socket, not lost with the
                // process.
                if outbox.lock().flush().is_err() {
                    break 0;
                }
                if !status.begin(p.id) {
                    // Cancelled as it was taken: the parent was told no
                    // result will come but this one.
                    outbox.lock().push(p.id, Outcome::Cancelled, Vec::new());
                    continue;
                }
                let (outcome, fds) = f(args, p.fds);
                status.finish();
                outbox.lock().push(p.id, outcome, fds);
            }
            Some(EntryKind::Async(f)) => {
                let rt = runtime.get_or_insert_with(|| {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .thread_name("seedcore-worker-async")
                        .enable_all()
                        .build()
                        .expect("the worker's async runtime starts")
                });
                let fut = f(args, p.fds);
                let (out, running) = (outbox.clone(), running_async.clone());
                let id = p.id;
                // Registered before it is spawned: it may finish before
                // `spawn` even returns.
                running_async.lock().insert(id, None);
                let h = rt.spawn(async move {
                    let (outcome, fds) = fut.await;
                    if running.lock().remove(&id).is_none() {
                        return; // cancelled meanwhile; the parent was told
                    }
                    let mut o = out.lock();
                    o.push(id, outcome, fds);
                    // Nothing else flushes while the main loop blocks.
                    let _ = o.flush();
                });
                if let Some(slot) = running_async.lock().get_mut(&id) {
                    *slot = Some(h.abort_handle());
                }
            }
        }
        let mut o = outbox.lock();
        if o.due() && o.flush().is_err() {
            break 0;
        }
    };
    let _ = outbox.lock().flush();
    if let Some(rt) = runtime.take() {
        rt.shutdown_timeout(Duration::from_secs(1));
    }
    if let Some(name) = &fini {
        if let Err(why) = run_hook(name, "finalizer", &unit) {
            eprintln!("seedcore worker {index}: {why}");
            return 3;
        }
    }
    code
}

/// Exits this worker when its parent process goes away, even while a task
/// runs (the end of the stream is only seen between tasks). A thread polls
/// the parent pid: the kernel's parent-death signal would fire when the
/// parent *thread* that started the worker exits, not the process.
fn watch_parent() {
    let parent = rustix::process::getppid();
    let _ = std::thread::Builder::new()
        .name("seedcore-worker-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            if rustix::process::getppid() != parent {
                std::process::exit(0);
            }
        });
}

/// Whether the socket has bytes to read now.
fn readable(reader: &FrameReader) -> bool {
    reader.poll_readable()
}
