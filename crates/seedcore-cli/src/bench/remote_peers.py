"""Celery and Dramatiq on Redis, the peers of `seedcore bench remote`.

Usage: python remote_peers.py PEER URL --workers 2 --n N --reps R --rtt M --prefetch P

PEER is `celery` or `dramatiq`. The script starts the peer's worker
processes on the given Redis (broker and result store), measures from this
client, stops the workers, and prints one JSON object per line:
{"metric": ..., "subject": ..., "samples": [...]} or, for a subject that
failed, {"metric": ..., "subject": ..., "skipped": "why"}.

celery (one worker node, `--concurrency WORKERS`, prefork):
  celery         tasks_per_s: N `add.delay`, then `.get()` on each, N / time;
                 round trips: M sequential `add.delay(..).get()`, default
                 prefetch (multiplier 4)
  celery_group   tasks_per_s: `group(N signatures).apply_async()`, then
                 `join_native()`; the worker restarted with
                 `--prefetch-multiplier P` (P x WORKERS messages reserved)
dramatiq (`dramatiq --processes WORKERS`, its default 8 threads each,
`dramatiq_queue_prefetch=P` per process; Results middleware, Redis backend):
  dramatiq       tasks_per_s: N `add.send`, then `get_result(block=True)` on
                 each; round trips: M sequential send + `get_result`

Round trips: R repetitions of M trips; each repetition gives its
nearest-rank p50 and p99 in microseconds.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import time

CELERY_APP = '''
from celery import Celery
import os
app = Celery("seedcore_peer", broker=os.environ["PEER_URL"], backend=os.environ["PEER_URL"])
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"],
    worker_hijack_root_logger=False, broker_connection_retry_on_startup=True,
    result_expires=3600,
)

@app.task
def add(a, b):
    return a + b
'''

DRAMATIQ_APP = '''
import os
import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

broker = RedisBroker(url=os.environ["PEER_URL"])
backend = RedisBackend(url=os.environ["PEER_URL"])
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)

@dramatiq.actor(store_results=True, max_retries=0)
def add(a, b):
    return a + b
'''


def emit(metric, subject, samples):
    print(json.dumps({"metric": metric, "subject": subject, "samples": samples}), flush=True)


def skip(metrics, subject, why):
    for metric in metrics:
        print(json.dumps({"metric": metric, "subject": subject, "skipped": why}), flush=True)


def percentile(sorted_values, p):
    """Nearest-rank percentile, the rule of the Rust side."""
    n = len(sorted_values)
    rank = math.ceil(p / 100.0 * n)
    return sorted_values[min(max(rank, 1), n) - 1]


def rates(reps, n, batch):
    """`reps` timings of `batch(n)` (which returns the sum of `i + i`)."""
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        s = batch(n)
        el = time.perf_counter() - t
        assert s == n * (n - 1), s
        out.append(n / el)
    return out


def round_trips(subject, reps, m, one):
    """`reps` repetitions of `m` sequential `one(i)` (which returns i + 1)."""
    p50, p99 = [], []
    for _ in range(reps):
        us = []
        for i in range(m):
            t = time.perf_counter()
            r = one(i)
            us.append((time.perf_counter() - t) * 1e6)
            assert r == i + 1, r
        us.sort()
        p50.append(percentile(us, 50))
        p99.append(percentile(us, 99))
    emit("round_trip_p50_us", subject, p50)
    emit("round_trip_p99_us", subject, p99)


class Workers:
    """A worker command, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, argv, env, cwd):
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        import signal
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def celery(d, env, o):
    sys.path.insert(0, d)
    import peerapp
    from celery import group

    def worker(prefetch_multiplier):
        argv = [sys.executable, "-m", "celery", "-A", "peerapp", "worker",
                "--concurrency", str(o["workers"]), "--pool", "prefork",
                "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                "--without-heartbeat"]
        if prefetch_multiplier:
            argv += ["--prefetch-multiplier", str(prefetch_multiplier)]
        return Workers(argv, env, d)

    def warm_up():
        # The worker is ready when a task comes back.
        peerapp.add.delay(1, 1).get(timeout=120)
        for _ in range(o["warmup"]):
            peerapp.add.delay(1, 1).get(timeout=60)

    def one_by_one(n):
        rs = [peerapp.add.delay(i, i) for i in range(n)]
        return sum(r.get(timeout=600) for r in rs)

    def grouped(n):
        res = group(peerapp.add.s(i, i) for i in range(n)).apply_async()
        return sum(res.join_native(timeout=600))

    try:
        with worker(None):
            warm_up()
            emit("tasks_per_s", "celery", rates(o["reps"], o["n"], one_by_one))
            round_trips("celery", o["reps"], o["rtt"],
                        lambda i: peerapp.add.delay(i, 1).get(timeout=60))
    except Exception as e:
        skip(["tasks_per_s", "round_trip_p50_us", "round_trip_p99_us"], "celery",
             "Celery failed: %r" % e)
    try:
        with worker(o["prefetch"]):
            warm_up()
            grouped(min(o["n"], 1000))
            emit("tasks_per_s", "celery_group", rates(o["reps"], o["n"], grouped))
    except Exception as e:
        skip(["tasks_per_s"], "celery_group", "Celery failed: %r" % e)


def dramatiq(d, env, o):
    sys.path.insert(0, d)
    env = dict(env, dramatiq_queue_prefetch=str(o["prefetch"]))
    import peerapp

    def get(m):
        return m.get_result(block=True, timeout=600_000)

    def pipelined(n):
        ms = [peerapp.add.send(i, i) for i in range(n)]
        return sum(get(m) for m in ms)

    argv = [sys.executable, "-m", "dramatiq", "peerapp",
            "--processes", str(o["workers"])]
    metrics = ["tasks_per_s", "round_trip_p50_us", "round_trip_p99_us"]
    try:
        with Workers(argv, env, d):
            get(peerapp.add.send(1, 1))
            for _ in range(o["warmup"]):
                get(peerapp.add.send(1, 1))
            emit("tasks_per_s", "dramatiq", rates(o["reps"], o["n"], pipelined))
            round_trips("dramatiq", o["reps"], o["rtt"],
                        lambda i: get(peerapp.add.send(i, 1)))
    except Exception as e:
        skip(metrics, "dramatiq", "Dramatiq failed: %r" % e)


def main():
    args = sys.argv[1:]
    peer, url = args[0], args[1]
    opt = {args[i]: args[i + 1] for i in range(2, len(args) - 1, 2)}
    o = {
        "workers": int(opt.get("--workers", "2")),
        "n": int(opt.get("--n", "2000")),
        "reps": int(opt.get("--reps", "3")),
        "rtt": int(opt.get("--rtt", "200")),
        "warmup": int(opt.get("--warmup", "20")),
        "prefetch": int(opt.get("--prefetch", "64")),
    }
    d = tempfile.mkdtemp(prefix="seedcore-bench-%s-" % peer)
    with open(os.path.join(d, "peerapp.py"), "w") as f:
        f.write(CELERY_APP if peer == "celery" else DRAMATIQ_APP)
    os.environ["PEER_URL"] = url
    env = dict(os.environ, PYTHONPATH=d)
    try:
        {"celery": celery, "dramatiq": dramatiq}[peer](d, env, o)
    finally:
        import shutil
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
