"""Python peers of `seedcore bench process`.

Embedded in the seedcore binary (bench/process.rs) and run by it with python3:

    python3 python_peers.py <tiny|latency|payload> --workers W --n N --reps R
                            [--warmup K] --peers python_ppe,mp_pool_apply_async,...

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

    def close(self):
        self.pool.close()
        self.pool.join()


PEERS = {
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


WORKLOADS = {
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
