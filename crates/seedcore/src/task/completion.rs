//! The completion state machine of one task.
//!
//! # Invariants
//!
//! * The slot moves `Empty → Waiting → Ready → Taken` (a step may be
//!   skipped) and never back, except that a waiter that gives up takes its
//!   registration back (`Waiting → Empty`). The one caller of
//!   [`Completion::complete`] that finds it neither `Ready` nor `Taken` is
//!   the only writer of the result: "resolves exactly once" is that one
//!   look under the lock, and [`Resolve`] tells every caller whether it won.
//! * The result and the waiter share one slot under one mutex, so a waiter
//!   that registers itself either sees the result or is seen by the
//!   completer; a wake-up cannot be lost between the two.
//! * A registered callback consumes the result: the future that registered
//!   it was consumed too, so nobody else can wait for it.
//!
//! # Size
//!
//! A task record holds one of these for every queued task, so it is two
//! words: a lock whose guarded byte says which state the slot is in, and
//! one payload word (for results of a word or less) that holds the state's
//! data. The lock is what orders every access to the payload, so the
//! packing changes nothing of the above; [`Slot`] is the state as a value,
//! moved out of the packed form under the lock and back before it is
//! released. A waiter is boxed, because most results are taken without
//! anyone having to wait for them.
//!
//! While nobody waits and no result is there, the payload keeps a word for
//! the owner ([`Completion::note`]): a task record keeps its submission
//! time there, so that it costs no field of its own.
//!
//! This file names its primitives only through `crate::sync`, so that the
//! model-checking tests can compile it against loom.

use crate::sync::{lock, thread, Mutex, MutexGuard};
use std::cell::UnsafeCell;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::task::Waker;
use std::time::Instant;

/// Who is waiting for the result.
enum Waiter<R> {
    Thread(thread::Thread),
    Waker(Waker),
    Callback(Box<dyn FnOnce(R) + Send>),
}

/// A registered waiter, with the owner's note it displaced.
struct Registered<R> {
    note: u64,
    waiter: Waiter<R>,
}

/// The state of the slot, as a value.
enum Slot<R> {
    /// No result, nobody waits; the owner's note.
    Empty(u64),
    Waiting(Box<Registered<R>>),
    Ready(R),
    /// The result was handed out.
    Taken,
}

/// Which [`Slot`] the packed form holds: the byte under the lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tag {
    Empty,
    Waiting,
    Ready,
    Taken,
}

/// The data of a [`Slot`], as the tag says: read only under the lock.
union Payload<R> {
    note: u64,
    waiting: ManuallyDrop<Box<Registered<R>>>,
    ready: ManuallyDrop<R>,
}

/// The outcome of an attempt to resolve a [`Completion`].
#[must_use = "the loser of a resolution race must not act as if it resolved the task"]
pub(crate) enum Resolve<R> {
    /// This call stored the result.
    Won,
    /// The completion was already resolved; the value is handed back.
    Lost(R),
}

impl<R> Resolve<R> {
    pub(crate) fn won(&self) -> bool {
        matches!(self, Resolve::Won)
    }
}

/// A write-once slot with blocking, async and callback readers.
pub(crate) struct Completion<R> {
    tag: Mutex<Tag>,
    payload: UnsafeCell<MaybeUninit<Payload<R>>>,
}

// SAFETY: the payload is read and written only under `tag`'s lock, and it
// moves `R` (and wakers, threads, `Send` callbacks) between threads, never
// shares it: `R: Send` is all either needs.
unsafe impl<R: Send> Send for Completion<R> {}
// SAFETY: as for `Send`: a shared completion hands its payload over only
// under the lock.
unsafe impl<R: Send> Sync for Completion<R> {}

/// The slot under its lock: [`take`](Self::take) moves the state out,
/// [`put`](Self::put) moves one back.
struct Locked<'a, R> {
    tag: MutexGuard<'a, Tag>,
    payload: &'a UnsafeCell<MaybeUninit<Payload<R>>>,
}

impl<R> Locked<'_, R> {
    /// Moves the state out, leaving `Taken` (which owns nothing).
    fn take(&mut self) -> Slot<R> {
        let tag = std::mem::replace(&mut *self.tag, Tag::Taken);
        // SAFETY: the lock is held, and `tag` was the payload's tag; it now
        // says `Taken`, so the field is read once.
        unsafe { read(tag, self.payload) }
    }

    /// The note of an `Empty` slot.
    fn note(&self) -> u64 {
        assert!(*self.tag == Tag::Empty);
        // SAFETY: the lock is held and the tag says the note is there.
        unsafe { (*self.payload.get()).assume_init_ref().note }
    }

    /// The registration of a `Waiting` slot, in place.
    fn waiting_mut(&mut self) -> &mut Registered<R> {
        assert!(*self.tag == Tag::Waiting);
        // SAFETY: the lock is held (and borrowed mutably through `self`),
        // and the tag says the registration is there.
        unsafe { &mut (*self.payload.get()).assume_init_mut().waiting }
    }

    /// Moves `s` in; the state must have been taken out before.
    fn put(&mut self, s: Slot<R>) {
        debug_assert!(
            *self.tag == Tag::Taken,
            "a state is put only in place of a taken one"
        );
        let (tag, p) = match s {
            Slot::Empty(note) => (Tag::Empty, Payload { note }),
            Slot::Waiting(w) => (
                Tag::Waiting,
                Payload {
                    waiting: ManuallyDrop::new(w),
                },
            ),
            Slot::Ready(r) => (
                Tag::Ready,
                Payload {
                    ready: ManuallyDrop::new(r),
                },
            ),
            Slot::Taken => return,
        };
        // SAFETY: the lock is held and the payload holds nothing (`Taken`).
        unsafe { (*self.payload.get()).write(p) };
        *self.tag = tag;
    }
}

/// The state `payload` holds under `tag`, moved out.
///
/// # Safety
/// `tag` is the payload's tag, nobody else reads or writes the payload
/// meanwhile, and what is moved out is not read again (the caller retags
/// the payload `Taken` or drops it).
unsafe fn read<R>(tag: Tag, payload: &UnsafeCell<MaybeUninit<Payload<R>>>) -> Slot<R> {
    // SAFETY: as the caller promises; the tag names the field read.
    unsafe {
        let p = (*payload.get()).assume_init_read();
        match tag {
            Tag::Empty => Slot::Empty(p.note),
            Tag::Waiting => Slot::Waiting(ManuallyDrop::into_inner(p.waiting)),
            Tag::Ready => Slot::Ready(ManuallyDrop::into_inner(p.ready)),
            Tag::Taken => Slot::Taken,
        }
    }
}

impl<R> Drop for Completion<R> {
    fn drop(&mut self) {
        // Drops what the payload holds, as the tag says.
        let tag = *self.tag.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `&mut self`: nobody else can look, and the completion is
        // gone after this.
        drop(unsafe { read(tag, &self.payload) });
    }
}

impl<R> Completion<R> {
    pub(crate) fn new() -> Self {
        Self::with_note(0)
    }

    /// An empty completion that keeps `note` until a waiter or the result
    /// comes ([`note`](Self::note)).
    pub(crate) fn with_note(note: u64) -> Self {
        Completion {
            tag: Mutex::new(Tag::Empty),
            payload: UnsafeCell::new(MaybeUninit::new(Payload { note })),
        }
    }

    fn lock(&self) -> Locked<'_, R> {
        Locked {
            tag: lock(&self.tag),
            payload: &self.payload,
        }
    }

    /// The note given to [`with_note`](Self::with_note), while no result is
    /// there.
    pub(crate) fn note(&self) -> Option<u64> {
        let mut g = self.lock();
        match *g.tag {
            Tag::Empty => Some(g.note()),
            Tag::Waiting => Some(g.waiting_mut().note),
            Tag::Ready | Tag::Taken => None,
        }
    }

    /// Stores `r` if nobody has yet; wakes the waiter or runs the callback.
    pub(crate) fn complete(&self, r: R) -> Resolve<R> {
        let mut g = self.lock();
        let waiter = match g.take() {
            Slot::Empty(_) => None,
            Slot::Waiting(w) => Some(w.waiter),
            done @ (Slot::Ready(_) | Slot::Taken) => {
                g.put(done);
                return Resolve::Lost(r);
            }
        };
        match waiter {
            Some(Waiter::Callback(cb)) => {
                drop(g);
                cb(r);
            }
            Some(Waiter::Thread(t)) => {
                g.put(Slot::Ready(r));
                drop(g);
                t.unpark();
            }
            Some(Waiter::Waker(w)) => {
                g.put(Slot::Ready(r));
                drop(g);
                w.wake();
            }
            None => g.put(Slot::Ready(r)),
        }
        Resolve::Won
    }

    /// Takes the result out of `g` if it is there.
    fn take(g: &mut Locked<'_, R>) -> Option<R> {
        match g.take() {
            Slot::Ready(r) => Some(r),
            other => {
                g.put(other);
                None
            }
        }
    }

    /// Registers `waiter`, keeping the owner's note; a registration there
    /// already is replaced unless `keep` accepts it. Panics if the result
    /// was taken (`taken` says by whom). A panic of `keep` or `waiter`
    /// leaves the slot as it was.
    fn register(
        g: &mut Locked<'_, R>,
        keep: impl FnOnce(&mut Waiter<R>) -> bool,
        waiter: impl FnOnce() -> Waiter<R>,
        taken: &str,
    ) {
        match *g.tag {
            Tag::Empty => {
                let note = g.note();
                let w = Box::new(Registered {
                    note,
                    waiter: waiter(),
                });
                let _empty = g.take();
                g.put(Slot::Waiting(w));
            }
            Tag::Waiting => {
                let w = g.waiting_mut();
                if !keep(&mut w.waiter) {
                    w.waiter = waiter();
                }
            }
            Tag::Taken => panic!("{taken}"),
            Tag::Ready => {}
        }
    }

    /// Registers the calling thread as the waiter, reusing its box.
    fn wait_here(g: &mut Locked<'_, R>) {
        Self::register(
            g,
            |w| matches!(w, Waiter::Thread(_)),
            || Waiter::Thread(thread::current()),
            "task result already taken",
        );
    }

    /// Blocks the calling thread until the result is there and takes it.
    pub(crate) fn wait(&self) -> R {
        loop {
            {
                let mut g = self.lock();
                if let Some(r) = Self::take(&mut g) {
                    return r;
                }
                Self::wait_here(&mut g);
            }
            thread::park();
        }
    }

    /// Like [`wait`](Self::wait), but gives up at `deadline`.
    pub(crate) fn wait_deadline(&self, deadline: Instant) -> Option<R> {
        loop {
            {
                let mut g = self.lock();
                if let Some(r) = Self::take(&mut g) {
                    return Some(r);
                }
                if Instant::now() >= deadline {
                    match g.take() {
                        Slot::Waiting(w) => g.put(Slot::Empty(w.note)),
                        other => g.put(other),
                    }
                    return None;
                }
                Self::wait_here(&mut g);
            }
            thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// Takes the result if it is there, without blocking.
    pub(crate) fn try_take(&self) -> Option<R> {
        Self::take(&mut self.lock())
    }

    /// The `Future::poll` half: takes the result or registers `waker`.
    pub(crate) fn poll_take(&self, waker: &Waker) -> Option<R> {
        let mut g = self.lock();
        if let Some(r) = Self::take(&mut g) {
            return Some(r);
        }
        Self::register(
            &mut g,
            |w| matches!(w, Waiter::Waker(old) if old.will_wake(waker)),
            || Waiter::Waker(waker.clone()),
            "TaskFuture polled after it returned its result",
        );
        None
    }

    /// Hands the result to `cb` once it is there (at once if it already is,
    /// on the calling thread; otherwise on the thread that completes).
    pub(crate) fn on_complete(&self, cb: Box<dyn FnOnce(R) + Send>) {
        let mut g = self.lock();
        if let Some(r) = Self::take(&mut g) {
            drop(g);
            cb(r);
            return;
        }
        Self::register(
            &mut g,
            |_| false,
            || Waiter::Callback(cb),
            "task result already taken",
        );
    }

    /// Whether the result is there; if not, `waker` is woken when it is
    /// (it takes the place of an earlier waker, never of a blocked thread
    /// or a callback, which the owner of the future cannot have now).
    pub(crate) fn watch(&self, waker: &Waker) -> bool {
        let mut g = self.lock();
        if matches!(*g.tag, Tag::Ready | Tag::Taken) {
            return true;
        }
        Self::register(
            &mut g,
            |w| {
                if let Waiter::Waker(old) = w {
                    if !old.will_wake(waker) {
                        *old = waker.clone();
                    }
                }
                true
            },
            || Waiter::Waker(waker.clone()),
            "unreachable: the slot is not taken",
        );
        false
    }
}
