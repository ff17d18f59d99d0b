"""Python peers of `seedcore bench process` and `seedcore bench python`.

Embedded in the seedcore binary (bench/pyharness.rs) and run by it:

    python3 python_peers.py <tiny|latency|payload|map|numpy|bytes|timeout>
                            --workers W --n N --reps R [--warmup K]
                            --peers python_ppe,mp_pool_apply_async,...

The `python` suite adds seedcore's own Python package as a subject
(`seedcore`, a `seedcore.ConcurrentSystem` of W worker processes), loky, and
the workloads map, numpy, bytes and timeout.

The workloads and method are those of shared/peers/python/bench.py, so the
figures are comparable with shared/peers/RESULTS.md: start method fork, W
worker processes, the pool built and warmed up before the clock starts, every
repetition checked. One line of JSON per (metric, subject) on stdout:

    {"metric": "tiny_task_ns", "subject": "python_ppe", "unit": "ns", "samples": [...]}

or, for a peer that could not run (not installed, or it failed):

    {"metric": "tiny_task_ns", "subject": "pebble", "unit": "ns", "skipped": "why"}

Progress notes go to stderr, starting with "# ".
"""

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import sys
import time

# The method of bench.py (the 3.11 default on Linux), for every pool.
mp.set_start_method("fork", force=True)


def task(i):
    """The tiny task: a no-op that returns a small integer."""
    return i & 7


def echo(b):
    """Large-payload task: send the received bytes back."""
    return b


def note(msg):
    print(f"# {msg}", file=sys.stderr, flush=True)


def emit(metric, subject, unit, samples=None, skipped=None):
    line = {"metric": metric, "subject": subject, "unit": unit}
    if skipped is None:
        line["samples"] = samples
    else:
        line["skipped"] = skipped
    print(json.dumps(line), flush=True)


# --------------------------------------------------------------------------
# Peers: one pool each, with the three calls the workloads make.
# --------------------------------------------------------------------------


class ProcessPoolExecutorPeer:
    """concurrent.futures.ProcessPoolExecutor: submit, then result()."""

    def __init__(self, w):
        self.ex = cf.ProcessPoolExecutor(max_workers=w)

    def many(self, n):
        futs = [self.ex.submit(task, i) for i in range(n)]
        return sum(f.result() for f in futs)

    def one(self, i):
        return self.ex.submit(task, i).result()

    def echo(self, b):
        return self.ex.submit(echo, b).result()

    def close(self):
        self.ex.shutdown(wait=True)


class PoolApplyAsyncPeer:
    """multiprocessing.Pool: apply_async, then get()."""

    def __init__(self, w):
        self.pool = mp.Pool(w)

    def many(self, n):
        rs = [self.pool.apply_async(task, (i,)) for i in range(n)]
        return sum(r.get() for r in rs)

    def one(self, i):
        return self.pool.apply_async(task, (i,)).get()

    def echo(self, b):
        return self.pool.apply_async(echo, (b,)).get()

    def close(self):
        self.pool.close()
        self.pool.join()


class PoolMapChunk1Peer(PoolApplyAsyncPeer):
    """multiprocessing.Pool.map with chunksize=1."""

    def many(self, n):
        return sum(self.pool.map(task, range(n), chunksize=1))

    def one(self, i):
        return self.pool.map(task, [i], chunksize=1)[0]

    def echo(self, b):
        return self.pool.map(echo, [b], chunksize=1)[0]


class PebblePeer:
    """pebble.ProcessPool: schedule, then result()."""

    def __init__(self, w):
        import pebble

        self.pool = pebble.ProcessPool(max_workers=w)

    def many(self, n):
        futs = [self.pool.schedule(task, args=(i,)) for i in range(n)]
        return sum(f.result() for f in futs)

    def one(self, i):
        return self.pool.schedule(task, args=(i,)).result()

    def echo(self, b):
        return self.pool.schedule(echo, args=(b,)).result()

    def timed_out(self, seconds, limit):
        fut = self.pool.schedule(time.sleep, args=(seconds,), timeout=limit)
        try:
            fut.result()
        except TimeoutError:
            return True
        return False

    def close(self):
        self.pool.close()
        self.pool.join()


class SeedcorePeer:
    """seedcore's Python package: submit_process, then result()."""

    def __init__(self, w):
        import seedcore

        self.s = seedcore.ConcurrentSystem(
            processes={"core": w, "max": w},
            threads={"core": 1, "max": 2},
            balance={"expand": "none", "shrink": "none"},
        )

    def many(self, n):
        submit = self.s.submit_process
        futs = [submit(task, i) for i in range(n)]
        return sum(f.result() for f in futs)

    def one(self, i):
        return self.s.submit_process(task, i).result()

    def echo(self, b):
        return self.s.submit_process(echo, b).result()

    def map(self, n):
        return sum(self.s.map(task, range(n)))

    def timed_out(self, seconds, limit):
        import seedcore

        fut = self.s.submit_process(time.sleep, seconds, timeout=limit)
        try:
            fut.result()
        except seedcore.TaskTimedOut:
            return True
        return False

    def close(self):
        self.s.shutdown(wait=True)


class LokyPeer:
    """loky.get_reusable_executor: submit, then result()."""

    def __init__(self, w):
        import loky

        self.ex = loky.get_reusable_executor(max_workers=w, timeout=None)

    def many(self, n):
        futs = [self.ex.submit(task, i) for i in range(n)]
        return sum(f.result() for f in futs)

    def one(self, i):
        return self.ex.submit(task, i).result()

    def echo(self, b):
        return self.ex.submit(echo, b).result()

    def close(self):
        self.ex.shutdown(wait=True)


class PoolMapPeer(PoolApplyAsyncPeer):
    """multiprocessing.Pool.map with its default chunksize."""

    def map(self, n):
        return sum(self.pool.map(task, range(n)))


PEERS = {
    "seedcore": SeedcorePeer,
    "loky": LokyPeer,
    "mp_pool_map": PoolMapPeer,
    "python_ppe": ProcessPoolExecutorPeer,
    "mp_pool_apply_async": PoolApplyAsyncPeer,
    "mp_pool_map_chunk1": PoolMapChunk1Peer,
    "pebble": PebblePeer,
}


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------


def tiny(peer, a):
    """N tiny tasks submitted, then every result awaited and summed."""
    n = a.n
    want = sum(i & 7 for i in range(n))
    got = peer.many(n)  # warm-up, not reported
    assert got == want, (got, want)
    ns = []
    for _ in range(a.reps):
        t = time.perf_counter()
        got = peer.many(n)
        ns.append((time.perf_counter() - t) * 1e9 / n)
        assert got == want, (got, want)
    return [("tiny_task_ns", "ns", ns)]


def percentile(sorted_vals, p):
    """Nearest-rank percentile (same rule as the Rust side)."""
    n = len(sorted_vals)
    rank = math.ceil(p / 100 * n)
    return sorted_vals[min(max(rank, 1), n) - 1]


def latency(peer, a):
    """Sequential round trips, each timed on its own."""
    for i in range(a.warmup):
        assert peer.one(i) == task(i)
    clock = time.perf_counter_ns
    p50, p99 = [], []
    for _ in range(a.reps):
        us = []
        for i in range(a.n):
            t = clock()
            v = peer.one(i)
            us.append((clock() - t) / 1e3)
            assert v == task(i), (v, i)
        us.sort()
        p50.append(percentile(us, 50))
        p99.append(percentile(us, 99))
    return [("round_trip_p50_us", "us", p50), ("round_trip_p99_us", "us", p99)]


def payload(peer, a):
    """`bytes` of size N sent to an echo task and back; GB/s counts 2 x N."""
    size = a.n
    data = bytes(size)
    assert peer.one(0) == 0  # workers started
    assert len(peer.echo(data)) == size  # warm-up
    gbps = []
    for _ in range(a.reps):
        t = time.perf_counter()
        v = peer.echo(data)
        secs = time.perf_counter() - t
        assert len(v) == size, len(v)
        del v
        gbps.append(2 * size / secs / 1e9)
    return [("payload_64mib_gbps", "GB/s", gbps)]


def map_tiny(peer, a):
    """`map` of N tiny items, every result summed; ns per item."""
    n = a.n
    want = sum(i & 7 for i in range(n))
    assert peer.map(n) == want  # warm-up
    ns = []
    for _ in range(a.reps):
        t = time.perf_counter()
        got = peer.map(n)
        ns.append((time.perf_counter() - t) * 1e9 / n)
        assert got == want, (got, want)
    return [("map_tiny_ns", "ns", ns)]


def _echo_rate(peer, a, data, check):
    assert peer.one(0) == 0  # workers started
    check(peer.echo(data))  # warm-up
    gbps = []
    for _ in range(a.reps):
        t = time.perf_counter()
        v = peer.echo(data)
        secs = time.perf_counter() - t
        check(v)
        del v
        gbps.append(2 * a.n / secs / 1e9)
    return gbps


def numpy_payload(peer, a):
    """A numpy array of N bytes (non-zero float64s) echoed; GB/s counts 2 x N."""
    import numpy as np

    data = np.arange(a.n // 8, dtype=np.float64)
    last = float(data[-1])

    def check(v):
        assert v.nbytes == a.n and float(v[-1]) == last, v.nbytes

    return [("numpy_64mib_gbps", "GB/s", _echo_rate(peer, a, data, check))]


def bytes_payload(peer, a):
    """`bytes` of N (non-zero) bytes echoed; GB/s counts 2 x N."""
    data = bytes(range(256)) * (a.n // 256)

    def check(v):
        assert len(v) == a.n and v[-1] == 255, len(v)

    return [("bytes_64mib_gbps", "GB/s", _echo_rate(peer, a, data, check))]


def timeout_resolve(peer, a):
    """A task that sleeps 30 s with a timeout of N ms, on an idle warm worker:
    milliseconds from its deadline to its resolved future."""
    limit = a.n / 1000
    ms = []
    for _ in range(a.reps):
        assert peer.one(0) == 0  # a worker is up and idle
        t = time.perf_counter()
        assert peer.timed_out(30, limit)
        ms.append(max((time.perf_counter() - t - limit) * 1000, 0.001))
    return [("timeout_resolve_ms", "ms", ms)]


WORKLOADS = {
    "map": (map_tiny, [("map_tiny_ns", "ns")]),
    "numpy": (numpy_payload, [("numpy_64mib_gbps", "GB/s")]),
    "bytes": (bytes_payload, [("bytes_64mib_gbps", "GB/s")]),
    "timeout": (timeout_resolve, [("timeout_resolve_ms", "ms")]),
    "tiny": (tiny, [("tiny_task_ns", "ns")]),
    "latency": (latency, [("round_trip_p50_us", "us"), ("round_trip_p99_us", "us")]),
    "payload": (payload, [("payload_64mib_gbps", "GB/s")]),
}


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", choices=sorted(WORKLOADS))
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--reps", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--peers", required=True)
    a = ap.parse_args(argv)
    run, metrics = WORKLOADS[a.workload]
    for name in a.peers.split(","):
        warmup = f"{a.warmup} warm-up trips" if a.warmup else "1 warm-up"
        note(f"{a.workload}: {name}: n={a.n}, {a.workers} processes, "
             f"{mp.get_start_method()}, {warmup} + {a.reps} reps")
        try:
            peer = PEERS[name](a.workers)
        except Exception as e:  # not installed, or the pool cannot start
            for metric, unit in metrics:
                emit(metric, name, unit, skipped=f"{name} could not start: {e!r}")
            continue
        try:
            results = run(peer, a)
        except Exception as e:
            for metric, unit in metrics:
                emit(metric, name, unit, skipped=f"{name} failed: {e!r}")
            continue
        finally:
            peer.close()
        for metric, unit, samples in results:
            emit(metric, name, unit, samples=samples)


if __name__ == "__main__":
    main(sys.argv[1:])
