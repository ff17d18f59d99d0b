//! A page of shared memory per worker where the worker records which task
//! it is running and since when, without a message per task.
//!
//! The parent reads it to time out the task a worker actually runs (tasks
//! sent ahead wait in the worker's queue and have not started), to tell
//! which task a dead worker was running (the others never started and go
//! back to the queue), and to decide whether cancelling a task means
//! killing its worker.
//!
//! Layout: `u64`s written only by the worker, read by the parent: the
//! running task's id (0: none); its start on `CLOCK_MONOTONIC` in
//! nanoseconds (one clock for every process of the machine); then a count
//! and a ring of the ids of the last `RING` tasks finished, so that when a
//! worker dies the parent can tell a task that finished (whose result may
//! not have been sent) from one that never started. The id is written last on start and first on finish, so a reader
//! that sees an id sees that task's start time. The last word is written
//! by the parent: the id of a task it cancels, so that a worker about to
//! start that very task skips it (see [`StatusPage::begin`]).

use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

const SIZE: usize = 4096;
/// Finished ids remembered (more than a worker is ever sent ahead).
const RING: usize = 256;
/// The word the parent writes: the task it cancels.
const CANCEL: usize = 3 + RING;
const WORDS: usize = 4 + RING;
const _: () = assert!(WORDS * 8 <= SIZE);

/// One mapping of a worker's status page.
pub(crate) struct StatusPage {
    ptr: NonNull<AtomicU64>,
    fd: OwnedFd,
}

// SAFETY: the page holds only atomics, which may be shared between threads
// (and processes); the mapping lives as long as the `StatusPage`.
unsafe impl Send for StatusPage {}
// SAFETY: as above: every access goes through `AtomicU64`.
unsafe impl Sync for StatusPage {}

/// The monotonic clock, in nanoseconds, as every process on the machine
/// reads it.
pub(crate) fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl StatusPage {
    /// A fresh page (parent side).
    pub(crate) fn create() -> io::Result<StatusPage> {
        let fd = memfd_create("seedcore-worker-status", MemfdFlags::CLOEXEC)?;
        ftruncate(&fd, SIZE as u64)?;
        Self::map(fd)
    }

    /// Maps the page received from the parent (worker side).
    pub(crate) fn map(fd: OwnedFd) -> io::Result<StatusPage> {
        // SAFETY: a fresh shared mapping of a descriptor we own, at an
        // address of the kernel's choosing; it aliases no Rust object.
        let p = unsafe {
            mmap(
                std::ptr::null_mut(),
                SIZE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        let ptr = NonNull::new(p.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(StatusPage { ptr, fd })
    }

    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < WORDS);
        // SAFETY: the mapping is page-aligned, SIZE bytes long and lives as
        // long as `self`; `i < WORDS` (WORDS * 8 <= SIZE) stays inside it; AtomicU64 has the layout
        // of u64 and the page was zero-filled by ftruncate.
        unsafe { &*self.ptr.as_ptr().add(i) }
    }

    /// Worker: task `id` starts now, unless the parent cancelled it:
    /// `false` then (and nothing is recorded as running).
    ///
    /// With [`cancel`](Self::cancel), a handshake: the worker writes the
    /// running id then reads the cancelled one, the parent writes the
    /// cancelled id then reads the running one, all sequentially
    /// consistent, so at least one of them sees the other. A cancel that
    /// comes as the worker takes the task is never lost between them: the
    /// worker skips the task, or the parent sees it running and kills it.
    pub(crate) fn begin(&self, id: u64) -> bool {
        self.word(1).store(now_ns(), Ordering::Release);
        self.word(0).store(id, Ordering::SeqCst);
        if self.word(CANCEL).load(Ordering::SeqCst) == id {
            self.word(0).store(0, Ordering::Release);
            return false;
        }
        true
    }

    /// Parent: cancels task `id`; whether the worker is running it now
    /// (then only killing the worker stops it).
    pub(crate) fn cancel(&self, id: u64) -> bool {
        self.word(CANCEL).store(id, Ordering::SeqCst);
        self.word(0).load(Ordering::SeqCst) == id
    }

    /// Worker: the running task is done.
    pub(crate) fn finish(&self) {
        let id = self.word(0).load(Ordering::Relaxed);
        let n = self.word(2).load(Ordering::Relaxed);
        self.word(3 + (n as usize % RING))
            .store(id, Ordering::Release);
        self.word(2).store(n + 1, Ordering::Release);
        self.word(0).store(0, Ordering::Release);
    }

    /// Parent: the ids of the last tasks the worker finished (read after
    /// the worker is gone, so nothing moves meanwhile).
    pub(crate) fn finished(&self) -> Vec<u64> {
        let n = self.word(2).load(Ordering::Acquire) as usize;
        (n.saturating_sub(RING)..n)
            .map(|i| self.word(3 + i % RING).load(Ordering::Acquire))
            .collect()
    }

    /// Parent: the running task and its start, if any.
    pub(crate) fn running(&self) -> Option<(u64, u64)> {
        let id = self.word(0).load(Ordering::Acquire);
        if id == 0 {
            return None;
        }
        let started = self.word(1).load(Ordering::Acquire);
        // The id may have changed while we read the time: read it again.
        (self.word(0).load(Ordering::Acquire) == id).then_some((id, started))
    }
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference
        // into it outlives `self`.
        unsafe {
            let _ = munmap(self.ptr.as_ptr().cast(), SIZE);
        }
    }
}
