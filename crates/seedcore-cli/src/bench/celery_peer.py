"""Celery on Redis, the peer of `seedcore bench remote`.

Usage: python celery_peer.py URL --workers 2 --n N --reps R --rtt M
Starts one Celery worker node with `--workers` prefork processes on the
given Redis (broker and result backend), then measures, from this client:
  tasks_per_s        N `add.delay` calls, then `.get()` on each, N / time
  round_trip_p50_us  M sequential `add.delay(..).get()`, the median
and prints one JSON object per line: {"metric": ..., "samples": [...]}.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

APP = '''
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


def main():
    args = sys.argv[1:]
    url = args[0]
    opt = {args[i]: args[i + 1] for i in range(1, len(args) - 1, 2)}
    workers = int(opt.get("--workers", "2"))
    n = int(opt.get("--n", "2000"))
    reps = int(opt.get("--reps", "3"))
    rtt = int(opt.get("--rtt", "200"))
    d = tempfile.mkdtemp(prefix="seedcore-celery-")
    with open(os.path.join(d, "peerapp.py"), "w") as f:
        f.write(APP)
    env = dict(os.environ, PEER_URL=url, PYTHONPATH=d)
    sys.path.insert(0, d)
    os.environ["PEER_URL"] = url
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "peerapp", "worker",
         "--concurrency", str(workers), "--pool", "prefork", "--loglevel", "WARNING",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d)
    try:
        import peerapp
        # Warm up: the worker is ready when a task comes back.
        peerapp.add.delay(1, 1).get(timeout=120)
        for _ in range(3):
            peerapp.add.delay(1, 1).get(timeout=60)
        rates = []
        for _ in range(reps):
            t = time.perf_counter()
            rs = [peerapp.add.delay(i, i) for i in range(n)]
            s = 0
            for r in rs:
                s += r.get(timeout=600)
            el = time.perf_counter() - t
            assert s == n * (n - 1), s
            rates.append(n / el)
        lat = []
        for i in range(rtt):
            t = time.perf_counter()
            assert peerapp.add.delay(i, 1).get(timeout=60) == i + 1
            lat.append((time.perf_counter() - t) * 1e6)
        print(json.dumps({"metric": "tasks_per_s", "samples": rates}), flush=True)
        print(json.dumps({"metric": "round_trip_p50_us", "samples": [statistics.median(lat)]}), flush=True)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


if __name__ == "__main__":
    main()
