"""Process tasks: values, exceptions, options, maps."""

import concurrent.futures as cf
import itertools
import os
import time

import pytest

import seedcore
import tasks


def test_a_process_task_returns_its_value(system):
    assert system.submit_process(tasks.square, 7).result(timeout=30) == 49
    assert system.submit_process(tasks.add, 1, 2, c=3).result(timeout=30) == 6


def test_tasks_run_in_other_processes(system):
    pids = {system.submit_process(tasks.pid).result(timeout=30) for _ in range(20)}
    assert os.getpid() not in pids


def test_the_future_is_a_concurrent_futures_future(system):
    fut = system.submit_process(tasks.square, 3)
    assert isinstance(fut, cf.Future)
    assert isinstance(fut, seedcore.TaskFuture)
    done, not_done = cf.wait([fut], timeout=30)
    assert fut in done and not not_done
    assert fut.done() and not fut.cancelled() and not fut.running()
    assert fut.exception() is None
    assert fut.result() == 9


def test_an_exception_keeps_its_type_and_the_worker_traceback(system):
    fut = system.submit_process(tasks.raise_custom, 17)
    with pytest.raises(tasks.CustomError) as info:
        fut.result(timeout=30)
    assert info.value.code == 17 and info.value.text == "custom failure"
    cause = info.value.__cause__
    assert isinstance(cause, seedcore.RemoteTraceback)
    assert "raise_custom" in str(cause) and "tasks.py" in str(cause)
    assert isinstance(fut.exception(), tasks.CustomError)

    with pytest.raises(KeyError) as info:
        system.submit_process(tasks.deep_failure).result(timeout=30)
    assert "inner" in str(info.value.__cause__)


def test_an_unpicklable_argument_is_refused_at_submit(system):
    import threading

    with pytest.raises(TypeError, match="cannot be pickled"):
        system.submit_process(tasks.echo, threading.Lock())


def test_an_unpicklable_result_fails_the_task_with_a_clear_error(system):
    with pytest.raises(TypeError, match="result cannot be pickled"):
        system.submit_process(tasks.unpicklable_result).result(timeout=30)


def test_lambdas_travel_with_cloudpickle(system):
    pytest.importorskip("cloudpickle")
    offset = 5
    assert system.submit_process(lambda x: x + offset, 1).result(timeout=30) == 6


def test_a_timeout_kills_the_task_and_the_pool_carries_on(system):
    start = time.monotonic()
    fut = system.submit_process(tasks.sleep_then, 30, timeout=0.5)
    with pytest.raises(seedcore.TaskTimedOut) as info:
        fut.result(timeout=30)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - start < 10
    assert system.submit_process(tasks.square, 4).result(timeout=30) == 16


def test_retries_run_the_task_again(system, tmp_path):
    path = str(tmp_path / "count")
    fut = system.submit_process(tasks.fail_until_file, path, 2, retries=3)
    assert fut.result(timeout=30) == 3
    path2 = str(tmp_path / "count2")
    fut = system.submit_process(tasks.fail_until_file, path2, 5, retries=1)
    with pytest.raises(RuntimeError, match="attempt 2 fails"):
        fut.result(timeout=30)


def test_task_options_are_checked(system):
    with pytest.raises(ValueError, match="priority"):
        system.submit_process(tasks.noop, priority=11)
    with pytest.raises(ValueError, match="retry_on"):
        system.submit_process(tasks.noop, retries=1, retry_on="sometimes")
    with pytest.raises(ValueError, match="timeout"):
        system.submit_process(tasks.noop, timeout=-1)


def test_a_lock_keeps_tasks_apart(system, tmp_path):
    path = str(tmp_path / "log")
    futs = [
        system.submit_process(tasks.append_line, path, str(i), 0.05, lock="file")
        for i in range(6)
    ]
    assert sorted(f.result(timeout=30) for f in futs) == [str(i) for i in range(6)]
    lines = open(path).read().split("\n")[:-1]
    # Never two starts in a row: each task ended before the next began.
    for a, b in zip(lines[::2], lines[1::2]):
        assert a.startswith("start") and b.startswith("end") and a[6:] == b[4:]


def test_priorities_order_queued_tasks(tmp_path):
    path = str(tmp_path / "order")
    # prefetch 1: the order is the pool's, not that of tasks sent ahead.
    with seedcore.ConcurrentSystem(processes={"core": 1, "max": 1, "prefetch": 1},
                                   balance={"expand": "none"}) as s:
        s.submit_process(tasks.noop).result(timeout=30)  # the worker is up
        blocker = s.submit_process(tasks.sleep_then, 2.0)
        low = [s.submit_process(tasks.append_line, path, f"low{i}", priority=9) for i in range(3)]
        high = [s.submit_process(tasks.append_line, path, f"high{i}", priority=1) for i in range(3)]
        for f in [blocker, *low, *high]:
            f.result(timeout=30)
    starts = [l[6:] for l in open(path).read().split("\n") if l.startswith("start")]
    assert starts == ["high0", "high1", "high2", "low0", "low1", "low2"]


def test_map_keeps_order_and_chunks(system):
    assert list(system.map(tasks.square, range(100))) == [x * x for x in range(100)]
    assert list(system.map(tasks.add, range(10), range(10), chunksize=3)) == [2 * x for x in range(10)]
    assert system.starmap(tasks.add, [(1, 2), (3, 4)]) == [3, 7]
    assert sorted(system.imap_unordered(tasks.square, range(20))) == sorted(x * x for x in range(20))
    assert list(system.imap(tasks.square, range(5))) == [0, 1, 4, 9, 16]
    assert list(system.map(tasks.square, range(10), pool="thread")) == [x * x for x in range(10)]


def test_map_over_an_endless_generator_has_backpressure(system):
    produced = []

    def endless():
        for i in itertools.count():
            produced.append(i)
            yield i

    it = system.map(tasks.square, endless(), chunksize=1, window=4)
    assert [next(it) for _ in range(10)] == [x * x for x in range(10)]
    # Only the window runs ahead of what was consumed.
    assert len(produced) <= 10 + 4 + 1
    it.close()


def test_map_timeout_counts_from_the_call(system):
    # Warm the pool first: the margin below must not include a worker's start.
    system.submit_process(tasks.noop).result(timeout=60)
    it = system.map(tasks.sleep_then, [0.0, 30.0], timeout=3.0, chunksize=1)
    assert next(it) is None
    with pytest.raises(cf.TimeoutError):
        next(it)


def test_a_map_error_reaches_the_caller_at_its_item(system):
    it = system.map(tasks.fail, ["a"], chunksize=1)
    with pytest.raises(ValueError, match="a"):
        list(it)


def test_stats_monitor_and_metrics(system):
    system.submit_process(tasks.noop).result(timeout=30)
    stats = system.stats()
    assert stats["completed"] >= 1
    mon = system.monitor()
    assert isinstance(mon, dict) and mon
    assert "seedcore" in system.metrics()


def test_resize_changes_the_thread_pool(system):
    assert system.resize("threads", 3) == 3
    with pytest.raises(ValueError):
        system.resize("ponies", 1)
