//! The binary's global allocator: mimalloc, wrapped to count the bytes live
//! on the heap.
//!
//! It exists for `seedcore bench threads`' `queued_task_bytes`, the memory
//! one queued task costs: the growth of [`live_bytes`] across a burst of
//! submissions, read the same way for seedcore and for its peers, which all
//! run in this process on this allocator.
//!
//! It counts only while a [`Counting`] guard lives: a growth is the bytes
//! allocated minus the bytes freed in between, whenever the freed blocks
//! were allocated, so a window is all a reading needs, and outside one an
//! allocation costs one relaxed load more than mimalloc's own (the other
//! benchmarks time allocation-heavy code through this allocator too).
//!
//! A block counts for what mimalloc really reserves for it (its usable size,
//! so rounding up to a size class counts), not for the size asked for. The
//! count lives in [`SHARDS`] cache-line-padded counters, one picked per
//! thread, so that a counted allocation or free costs one relaxed atomic add
//! on a line other threads seldom touch. Only a reader sums the shards.

use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// How many counters the count is spread over; threads beyond this many
/// share them, which only costs contention.
const SHARDS: usize = 64;

/// One counter on a cache line of its own, so that two threads' counts do
/// not contend for one line.
#[repr(align(128))]
struct Shard(AtomicIsize);

/// The live-bytes count, spread over the shards (a block allocated on one
/// thread and freed on another moves bytes between shards; only the sum
/// means anything).
static COUNT: [Shard; SHARDS] = [const { Shard(AtomicIsize::new(0)) }; SHARDS];

/// How many [`Counting`] guards live: the count moves only while one does.
static WINDOWS: AtomicUsize = AtomicUsize::new(0);

/// Counts allocations and frees in [`live_bytes`] while it lives.
#[derive(Debug)]
pub(crate) struct Counting(());

impl Counting {
    /// Starts counting.
    pub(crate) fn start() -> Counting {
        WINDOWS.fetch_add(1, Ordering::SeqCst);
        Counting(())
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        WINDOWS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether allocations are counted now.
#[inline]
fn counting() -> bool {
    WINDOWS.load(Ordering::Relaxed) != 0
}

/// The next shard handed to a thread that has none yet.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, `usize::MAX` until its first allocation. A
    /// `const` `Cell` of a plain integer: no destructor and no lazy
    /// initialization, so the allocator may touch it at any time.
    static MY_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The counter of the calling thread.
#[inline]
fn shard() -> &'static AtomicIsize {
    let i = MY_SHARD
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
                s.set(i);
            }
            i
        })
        .unwrap_or(0);
    &COUNT[i].0
}

/// Adds `delta` bytes to the live count.
#[inline]
fn add(delta: isize) {
    shard().fetch_add(delta, Ordering::Relaxed);
}

/// The bytes mimalloc reserved for the block at `ptr`.
///
/// # Safety
/// `ptr` is a live block of mimalloc.
#[inline]
unsafe fn usable(ptr: *const u8) -> isize {
    // SAFETY: the caller's contract; a block's usable size fits an isize.
    unsafe { MiMalloc.usable_size(ptr) as isize }
}

/// The bytes allocated minus the bytes freed while counting, summed over
/// every thread: read twice inside one [`Counting`] window, the growth of
/// the live heap between the readings. Exact when no thread allocates or
/// frees while it sums.
pub(crate) fn live_bytes() -> isize {
    COUNT.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
}

/// mimalloc with a live-bytes count ([`live_bytes`]).
#[derive(Debug)]
pub(crate) struct CountingMiMalloc;

// SAFETY: every call is forwarded to mimalloc unchanged; the count only
// reads the usable size of blocks mimalloc returned and has not freed.
unsafe impl GlobalAlloc for CountingMiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        let p = unsafe { MiMalloc.alloc(layout) };
        if !p.is_null() && counting() {
            // SAFETY: `p` was just returned by mimalloc.
            add(unsafe { usable(p) });
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        let p = unsafe { MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() && counting() {
            // SAFETY: `p` was just returned by mimalloc.
            add(unsafe { usable(p) });
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counting() {
            // SAFETY: `ptr` is live until the call below frees it.
            add(-unsafe { usable(ptr) });
        }
        // SAFETY: forwarded with the caller's contract.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !counting() {
            // SAFETY: forwarded with the caller's contract.
            return unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `ptr` is live until the call below frees or resizes it.
        let old = unsafe { usable(ptr) };
        // SAFETY: forwarded with the caller's contract.
        let p = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        // On failure the old block is left as it was, and so is the count.
        if !p.is_null() {
            // SAFETY: `p` was just returned by mimalloc.
            add(unsafe { usable(p) } - old);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::{live_bytes, Counting};
    use std::hint::black_box;

    /// Other tests of this binary allocate and free on their own threads at
    /// the same time, which can move the count by any amount between two
    /// readings; a quiet moment comes within a few tries.
    const TRIES: usize = 1000;

    #[test]
    fn a_live_vec_raises_the_count_by_its_bytes() {
        let _counting = Counting::start();
        let grew = (0..TRIES).any(|_| {
            let before = live_bytes();
            let v: Vec<u8> = black_box(Vec::with_capacity(4096));
            let during = live_bytes();
            drop(black_box(v));
            let after = live_bytes();
            during - before >= 4096 && during - after >= 4096
        });
        assert!(grew, "a 4096-byte Vec never showed in the live count");
    }

    #[test]
    fn a_grown_vec_counts_its_new_size() {
        let _counting = Counting::start();
        let grew = (0..TRIES).any(|_| {
            let before = live_bytes();
            let mut v: Vec<u8> = black_box(Vec::with_capacity(4096));
            v.reserve_exact(black_box(8192));
            let during = live_bytes();
            drop(black_box(v));
            during - before >= 8192
        });
        assert!(
            grew,
            "a Vec grown to 8192 bytes never showed in the live count"
        );
    }

    #[test]
    fn size_class_rounding_counts() {
        let _counting = Counting::start();
        // mimalloc has no 4097-byte class: the block is bigger than asked.
        let more = (0..TRIES).any(|_| {
            let before = live_bytes();
            let v: Vec<u8> = black_box(Vec::with_capacity(4097));
            let during = live_bytes();
            drop(black_box(v));
            during - before > 4097
        });
        assert!(more, "a 4097-byte Vec never counted above its size");
    }
}
