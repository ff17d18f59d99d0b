//! Map-reduce: the map runs on the pool, the reduction runs on the calling
//! thread as the results arrive (unordered), so nothing waits for the
//! slowest chunk before reducing and no result list is ever built.
//!
//! The reducing closures are `FnMut` and need not be `Send`: they never
//! leave the calling thread. Results come in completion order, so the
//! reduction should not depend on the order (or use
//! [`MapBuilder::ordered`] and fold the iterator yourself).

use super::map::MapBuilder;
use crate::error::TaskError;
use crate::ConcurrentSystem;

/// What [`MapBuilder::fold_all`] produced: the fold of every item that
/// succeeded, and the errors of those that did not.
#[derive(Debug)]
#[non_exhaustive]
pub struct Folded<A> {
    /// The fold of the successful items.
    pub value: A,
    /// Items folded into `value`.
    pub succeeded: u64,
    /// The errors of the failed items, in the order they arrived.
    pub errors: Vec<TaskError>,
}

impl<A> Folded<A> {
    /// The value if no item failed, else the first error.
    pub fn into_result(self) -> Result<A, TaskError> {
        match self.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(self.value),
        }
    }
}

impl<'a, T, R> MapBuilder<'a, T, R>
where
    T: Send + 'a,
    R: Send + 'a,
{
    /// Folds the results into `init` with `f` as they arrive. Stops at the
    /// first failed item (the rest of the map is cancelled) and returns its
    /// error.
    ///
    /// ```
    /// use seedcore::ConcurrentSystem;
    ///
    /// let system = ConcurrentSystem::builder().core_threads(2).build()?;
    /// let (n, total) = system
    ///     .map(1..=100u64, |x| x * x)
    ///     .fold((0, 0), |(n, s), sq| (n + 1, s + sq))?;
    /// assert_eq!((n, total), (100, 338_350));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fold<A, F>(self, init: A, mut f: F) -> Result<A, TaskError>
    where
        F: FnMut(A, R) -> A,
    {
        let mut it = self.stop_on_error(true).unordered();
        let mut acc = init;
        while let Some(out) = it.next_chunk() {
            if out.errors.is_empty() {
                acc = out.values.into_iter().fold(acc, &mut f);
                continue;
            }
            // Fold up to the first failed item, then stop.
            for r in out.into_cursor() {
                match r {
                    Ok(v) => acc = f(acc, v),
                    Err(e) => {
                        it.stop_after_error();
                        return Err(e);
                    }
                }
            }
        }
        Ok(acc)
    }

    /// The results in input order, in one `Vec` (Python's `Pool.map`,
    /// rayon's `collect`); stops at the first failed item (in input order)
    /// and returns its error. Moves each finished chunk's values at once
    /// rather than item by item.
    ///
    /// ```
    /// use seedcore::ConcurrentSystem;
    ///
    /// let system = ConcurrentSystem::builder().core_threads(2).build()?;
    /// let cubes = system.map(0..1000u64, |x| x * x * x).collect_vec()?;
    /// assert_eq!(cubes[10], 1000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn collect_vec(self) -> Result<Vec<R>, TaskError> {
        let mut it = self.stop_on_error(true).ordered();
        let mut all: Vec<R> = Vec::new();
        if let Some(n) = it.len_hint() {
            all.reserve_exact(usize::try_from(n).unwrap_or(0));
        }
        while let Some(mut out) = it.next_chunk() {
            if !out.errors.is_empty() {
                // Chunks come in order and their errors sorted: this is the
                // first failure of the map.
                it.stop_after_error();
                return Err(out.errors.swap_remove(0).1);
            }
            if all.is_empty() && all.capacity() < out.values.len() {
                all = out.values;
            } else {
                all.append(&mut out.values);
            }
        }
        Ok(all)
    }

    /// Combines the results with `op` as they arrive: `None` for an empty
    /// input. Stops at the first failed item, like [`fold`](Self::fold).
    ///
    /// ```
    /// use seedcore::ConcurrentSystem;
    ///
    /// let system = ConcurrentSystem::builder().core_threads(2).build()?;
    /// let longest = system
    ///     .map(vec!["pear", "fig", "banana"], |s: &str| s.len())
    ///     .reduce(usize::max)?;
    /// assert_eq!(longest, Some(6));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reduce<F>(self, mut op: F) -> Result<Option<R>, TaskError>
    where
        F: FnMut(R, R) -> R,
    {
        self.fold(None, |acc, r| match acc {
            None => Some(r),
            Some(a) => Some(op(a, r)),
        })
    }

    /// Folds every successful result and collects the errors of the failed
    /// items: the map runs to the end whatever fails.
    ///
    /// ```
    /// use seedcore::ConcurrentSystem;
    ///
    /// let system = ConcurrentSystem::builder().core_threads(2).build()?;
    /// let folded = system
    ///     .try_map(vec!["1", "2", "x", "4"], |s: &str| s.parse::<u64>())
    ///     .fold_all(0, |a, x| a + x);
    /// assert_eq!((folded.value, folded.succeeded, folded.errors.len()), (7, 3, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fold_all<A, F>(self, init: A, mut f: F) -> Folded<A>
    where
        F: FnMut(A, R) -> A,
    {
        let mut out = Folded {
            value: init,
            succeeded: 0,
            errors: Vec::new(),
        };
        for r in self.stop_on_error(false).unordered() {
            match r {
                Ok(v) => {
                    out.value = f(out.value, v);
                    out.succeeded += 1;
                }
                Err(e) => out.errors.push(e),
            }
        }
        out
    }

    /// Calls `f` on each result as it arrives, on this thread. Stops at the
    /// first failed item and returns its error.
    pub fn for_each<F>(self, mut f: F) -> Result<(), TaskError>
    where
        F: FnMut(R),
    {
        self.fold((), |(), r| f(r))
    }

    /// Runs the map to the end for its effects and counts the items; stops
    /// at the first failed item and returns its error.
    pub fn count(self) -> Result<u64, TaskError> {
        self.fold(0u64, |n, _| n + 1)
    }
}

impl ConcurrentSystem {
    /// Maps `map` over `input` on the thread pool and folds the results
    /// into `init` with `reduce` on this thread as they arrive; stops at
    /// the first failed item. The same as `self.map(input, map).fold(init,
    /// reduce)`, with the default settings; use the builder for options,
    /// chunk size, progress, or processes
    /// ([`map_process`](Self::map_process)`(..).fold(..)`).
    ///
    /// ```
    /// use seedcore::ConcurrentSystem;
    /// use std::collections::HashMap;
    ///
    /// let system = ConcurrentSystem::builder().core_threads(2).build()?;
    /// let text = vec!["a b a", "b c", "a"];
    /// let counts = system.map_reduce(
    ///     text,
    ///     |line: &str| line.split(' ').map(str::to_owned).collect::<Vec<_>>(),
    ///     HashMap::new(),
    ///     |mut m, words| {
    ///         for w in words {
    ///             *m.entry(w).or_insert(0) += 1;
    ///         }
    ///         m
    ///     },
    /// )?;
    /// assert_eq!(counts["a"], 3);
    /// assert_eq!(counts["c"], 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_reduce<'a, I, M, R, A, F>(
        &'a self,
        input: I,
        map: M,
        init: A,
        reduce: F,
    ) -> Result<A, TaskError>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'a,
        I::Item: Send + 'static,
        M: Fn(I::Item) -> R + Send + Sync + 'static,
        R: Send + 'static,
        F: FnMut(A, R) -> A,
    {
        self.map(input, map).fold(init, reduce)
    }
}
