"""Python peers of `seedcore bench parallel`.

Embedded in the seedcore binary (bench/parallel.rs), written to a temporary
file and run by it with python3 (bench/pyharness.rs):

    python3 parallel_peers.py --workers W --n N --n-imap M --reps R --imap-reps Q

Workload `map_tiny_ns` (the style of shared/peers/python/bench.py): map a
no-op task (`i & 7`) over range(N) with multiprocessing.Pool(W), start
method fork, default chunk sizes: Pool.map (chunksize = ceil(N / (4 W)))
and Pool.imap_unordered (chunksize = 1). The pool is built and warmed up
before the clock starts; each repetition sums the results and checks the
sum. One line of JSON per subject on stdout:

    {"metric": "map_tiny_ns", "subject": "mp_pool_map", "unit": "ns", "samples": [...]}

or, for a peer that failed: {"metric": ..., "subject": ..., "unit": "ns", "skipped": "why"}.
Progress notes go to stderr, starting with "# ".
"""

import argparse
import json
import multiprocessing as mp
import sys
import time

# The method of shared/peers (the 3.11 default on Linux).
mp.set_start_method("fork", force=True)


def task(i):
    """The no-op task: a small integer from its input."""
    return i & 7


def expected(n):
    return sum(i & 7 for i in range(n))


def note(msg):
    print(f"# {msg}", file=sys.stderr, flush=True)


def emit(subject, samples=None, skipped=None):
    line = {"metric": "map_tiny_ns", "subject": subject, "unit": "ns"}
    if skipped is None:
        line["samples"] = samples
    else:
        line["skipped"] = skipped
    print(json.dumps(line), flush=True)


def measure(subject, n, reps, one):
    want = expected(n)
    got = one(min(n, 10_000))  # warm-up, not reported
    assert got == expected(min(n, 10_000)), (subject, got)
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        got = one(n)
        samples.append((time.perf_counter() - t) * 1e9 / n)
        assert got == want, (subject, got, want)
    note(f"map_tiny_ns: {subject}: N={n}, {reps} reps")
    emit(subject, samples)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--n-imap", type=int, required=True)
    p.add_argument("--reps", type=int, required=True)
    p.add_argument("--imap-reps", type=int, required=True)
    a = p.parse_args()
    with mp.Pool(a.workers) as pool:
        pool.map(task, range(1000))  # workers started before the clock
        for subject, n, reps, one in [
            ("mp_pool_map", a.n, a.reps, lambda n: sum(pool.map(task, range(n)))),
            ("mp_pool_imap_unordered", a.n_imap, a.imap_reps,
             lambda n: sum(pool.imap_unordered(task, range(n)))),
        ]:
            try:
                measure(subject, n, reps, one)
            except Exception as e:  # noqa: BLE001 - reported as a skip
                emit(subject, skipped=f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
