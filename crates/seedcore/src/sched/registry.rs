//! The executor table: one registry keyed by [`ExecutorKind`].
//!
//! Every executor joins a system here, the same way: the built-in pools at
//! build, the optional executors (GPU, command, remote) on first use, an
//! application's own through `add_executor`. Each gets a slot, which its
//! tasks carry; the scheduler reaches it by slot, and the system's typed
//! code by kind. A kind's name is unique in the table, since stats,
//! metrics and the monitor key rows by it.

use super::Executor;
use crate::error::SubmitError;
use crate::task::ExecutorKind;
use parking_lot::Mutex;
use std::any::Any;
use std::sync::{Arc, OnceLock};

/// Executors one system can hold (the built-in ones and those added).
pub(crate) const MAX_EXECUTORS: usize = 16;

/// The table of one system's executors.
pub(crate) struct Registry {
    slots: [OnceLock<Entry>; MAX_EXECUTORS],
    /// Registration is rare: under a lock, which also makes an optional
    /// executor start once however many first uses race.
    adding: Mutex<Adding>,
}

/// One executor, as the scheduler calls it and as its own type (for the
/// system's typed code).
struct Entry {
    exec: Arc<dyn Executor>,
    typed: Arc<dyn Any + Send + Sync>,
}

#[derive(Default)]
struct Adding {
    len: usize,
    /// Optional executors whose start failed, with why: a system without a
    /// GPU answers every GPU submission with the same error, without
    /// probing the devices again.
    failed: Vec<(ExecutorKind, SubmitError)>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            slots: std::array::from_fn(|_| OnceLock::new()),
            adding: Mutex::new(Adding::default()),
        }
    }

    /// Adds `e` to the table and returns its slot. `open` is checked under
    /// the table's lock (a closed system takes no executor).
    pub(crate) fn add<E: Executor>(
        &self,
        e: Arc<E>,
        open: impl FnOnce() -> Result<(), SubmitError>,
    ) -> Result<u8, SubmitError> {
        let mut adding = self.adding.lock();
        open()?;
        self.add_locked(&mut adding, e)
    }

    fn add_locked<E: Executor>(&self, adding: &mut Adding, e: Arc<E>) -> Result<u8, SubmitError> {
        let kind = e.kind();
        if let ExecutorKind::Custom(name) = kind {
            if ExecutorKind::built_in(name).is_some() {
                return Err(SubmitError::InvalidOptions(format!(
                    "`{name}` is the name of a built-in executor; give a custom executor its own"
                )));
            }
        }
        if self.iter().any(|(_, x)| x.kind().name() == kind.name()) {
            return Err(SubmitError::InvalidOptions(format!(
                "an executor named `{kind}` is already registered"
            )));
        }
        if adding.len >= MAX_EXECUTORS {
            return Err(SubmitError::InvalidOptions(format!(
                "a system holds at most {MAX_EXECUTORS} executors"
            )));
        }
        let slot = adding.len;
        let entry = Entry {
            exec: e.clone(),
            typed: e,
        };
        let _ = self.slots[slot].set(entry);
        adding.len += 1;
        Ok(slot as u8)
    }

    /// The executor of `kind`, started by `start` and added on its first
    /// use. A failed start is remembered: later calls return its error
    /// without calling `start` again. `added` runs once the executor is in
    /// the table (outside its lock), for whoever added it.
    pub(crate) fn get_or_add<E: Executor>(
        &self,
        kind: ExecutorKind,
        open: impl FnOnce() -> Result<(), SubmitError>,
        start: impl FnOnce() -> Result<Arc<E>, SubmitError>,
        added: impl FnOnce(),
    ) -> Result<(u8, Arc<E>), SubmitError> {
        if let Some(found) = self.typed::<E>(kind) {
            return Ok(found);
        }
        let mut adding = self.adding.lock();
        if let Some(found) = self.typed::<E>(kind) {
            return Ok(found);
        }
        if let Some((_, why)) = adding.failed.iter().find(|(k, _)| *k == kind) {
            return Err(why.clone());
        }
        open()?;
        let e = match start() {
            Ok(e) => e,
            Err(why) => {
                adding.failed.push((kind, why.clone()));
                return Err(why);
            }
        };
        if e.kind() != kind {
            return Err(SubmitError::InvalidOptions(format!(
                "an executor of kind `{}` started for kind `{kind}`",
                e.kind()
            )));
        }
        let slot = self.add_locked(&mut adding, e.clone())?;
        drop(adding);
        added();
        Ok((slot, e))
    }

    /// The registered executors with their slots, in registration order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u8, &Arc<dyn Executor>)> {
        self.slots
            .iter()
            .map_while(|e| e.get())
            .enumerate()
            .map(|(i, e)| (i as u8, &e.exec))
    }

    /// The executor in `slot`, which a task carries.
    pub(crate) fn get(&self, slot: u8) -> &Arc<dyn Executor> {
        &self.entry(slot).exec
    }

    fn entry(&self, slot: u8) -> &Entry {
        self.slots[slot as usize]
            .get()
            .expect("tasks carry registered slots")
    }

    /// The executor of `kind` with its slot.
    pub(crate) fn find(&self, kind: ExecutorKind) -> Option<(u8, &Arc<dyn Executor>)> {
        self.iter().find(|(_, e)| e.kind() == kind)
    }

    /// The executor of `kind`, as its own type `E`.
    pub(crate) fn typed<E: Executor>(&self, kind: ExecutorKind) -> Option<(u8, Arc<E>)> {
        let (slot, _) = self.find(kind)?;
        let typed = self.entry(slot).typed.clone();
        Some((slot, typed.downcast::<E>().ok()?))
    }

    /// The executor in `slot`, borrowed as its own type `E` (the built-in
    /// pools, whose slots are fixed at build).
    pub(crate) fn at<E: Executor>(&self, slot: u8) -> &E {
        self.entry(slot)
            .typed
            .downcast_ref::<E>()
            .expect("the built-in slots hold their pools")
    }

    /// [`at`](Self::at), shared: for a task body that keeps its pool.
    pub(crate) fn arc_at<E: Executor>(&self, slot: u8) -> Arc<E> {
        self.entry(slot)
            .typed
            .clone()
            .downcast::<E>()
            .unwrap_or_else(|_| panic!("the built-in slots hold their pools"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{ExecutorStats, Runnable, StopReport};
    use crate::sched::ShutdownMode;
    use std::time::Instant;

    #[derive(Debug)]
    struct Named(ExecutorKind);

    impl Executor for Named {
        fn kind(&self) -> ExecutorKind {
            self.0
        }
        fn accept(&self, task: Runnable) {
            task.run();
        }
        fn drain(&self) -> Vec<Runnable> {
            Vec::new()
        }
        fn stop(&self, _: Instant, _: ShutdownMode) -> StopReport {
            StopReport::default()
        }
        fn stats(&self) -> ExecutorStats {
            ExecutorStats::new(self.0)
        }
    }

    fn open() -> Result<(), SubmitError> {
        Ok(())
    }

    #[test]
    fn names_are_unique_and_built_in_names_are_reserved() {
        let r = Registry::new();
        assert_eq!(r.add(Arc::new(Named(ExecutorKind::Threads)), open), Ok(0));
        assert_eq!(
            r.add(Arc::new(Named(ExecutorKind::Custom("mine"))), open),
            Ok(1)
        );
        for taken in [
            ExecutorKind::Threads,
            ExecutorKind::Custom("mine"),
            ExecutorKind::Custom("threads"),
            ExecutorKind::Custom("command"),
        ] {
            let e = r.add(Arc::new(Named(taken)), open).unwrap_err();
            assert!(matches!(e, SubmitError::InvalidOptions(_)), "{taken}: {e}");
        }
        let closed = r.add(Arc::new(Named(ExecutorKind::Command)), || {
            Err(SubmitError::SystemClosed)
        });
        assert_eq!(closed, Err(SubmitError::SystemClosed));
        assert_eq!(r.iter().count(), 2);
    }

    #[test]
    fn an_optional_executor_starts_once_and_a_failed_start_is_remembered() {
        let r = Registry::new();
        let mut starts = 0;
        let mut added = 0;
        for _ in 0..3 {
            let (slot, e) = r
                .get_or_add(
                    ExecutorKind::Command,
                    open,
                    || {
                        starts += 1;
                        Ok(Arc::new(Named(ExecutorKind::Command)))
                    },
                    || added += 1,
                )
                .unwrap();
            assert_eq!((slot, e.kind()), (0, ExecutorKind::Command));
        }
        assert_eq!((starts, added), (1, 1));
        let mut tries = 0;
        for _ in 0..3 {
            let e = r
                .get_or_add::<Named>(
                    ExecutorKind::Gpu,
                    open,
                    || {
                        tries += 1;
                        Err(SubmitError::NoGpu("no device".into()))
                    },
                    || unreachable!("nothing was added"),
                )
                .unwrap_err();
            assert_eq!(e, SubmitError::NoGpu("no device".into()));
        }
        assert_eq!(tries, 1);
        assert_eq!(r.typed::<Named>(ExecutorKind::Command).unwrap().0, 0);
        assert!(r.typed::<Named>(ExecutorKind::Gpu).is_none());
    }
}
