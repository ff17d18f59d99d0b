"""The promises of concurrent.futures' own executor tests, against
seedcore.futures (where seedcore deliberately differs, the test says so)."""

import concurrent.futures as cf
import threading
import time
import weakref

import pytest

import tasks
from seedcore.futures import ProcessPoolExecutor, ThreadPoolExecutor



def test_submit(executor):
    assert executor.submit(pow, 2, 8).result(timeout=30) == 256


def test_submit_keyword(executor):
    assert executor.submit(tasks.add, 1, 2, c=3).result(timeout=30) == 6


def test_map(executor):
    assert list(executor.map(pow, range(10), range(10))) == list(map(pow, range(10), range(10)))
    assert list(executor.map(pow, range(40), range(40), chunksize=6)) == list(map(pow, range(40), range(40)))


def test_map_exception(executor):
    it = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert next(it) == (0, 1)
    assert next(it) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(it)


def test_map_timeout(executor):
    results = []
    executor.submit(tasks.noop).result(timeout=60)
    with pytest.raises(cf.TimeoutError):
        for r in executor.map(tasks.sleep_then, [0, 0, 10], timeout=3):
            results.append(r)
    assert results == [None, None]


def test_map_empty(executor):
    assert list(executor.map(tasks.square, [])) == []


def test_max_workers_negative():
    for n in (0, -1):
        with pytest.raises(ValueError):
            ProcessPoolExecutor(max_workers=n)
        with pytest.raises(ValueError):
            ThreadPoolExecutor(max_workers=n)


def test_no_submit_after_shutdown(executor):
    executor.shutdown()
    with pytest.raises(RuntimeError):
        executor.submit(pow, 2, 5)
    with pytest.raises(RuntimeError):
        executor.map(pow, [1], [1])


def test_shutdown_waits_for_pending_work(executor):
    futs = [executor.submit(tasks.sleep_then, 0.2, i) for i in range(4)]
    executor.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futs] == [0, 1, 2, 3]


def test_shutdown_no_wait_still_runs_pending_work(executor):
    futs = [executor.submit(tasks.sleep_then, 0.1, i) for i in range(4)]
    start = time.monotonic()
    executor.shutdown(wait=False)
    # It returns without waiting for the 0.1 s tasks (a loose bound: no timing test).
    assert time.monotonic() - start < 5
    assert [f.result(timeout=30) for f in futs] == [0, 1, 2, 3]


def test_cancel_futures_on_shutdown(executor):
    futs = [executor.submit(tasks.sleep_then, 0.3, i) for i in range(20)]
    # Every task not yet started is cancelled (the standard library also
    # lets run the few it already handed to its call queue); wait until
    # some run.
    deadline = time.monotonic() + 30
    while not any(f.running() for f in futs) and time.monotonic() < deadline:
        time.sleep(0.01)
    executor.shutdown(wait=True, cancel_futures=True)
    cancelled = [f for f in futs if f.cancelled()]
    finished = [f for f in futs if f.done() and not f.cancelled()]
    assert len(cancelled) + len(finished) == 20
    assert cancelled, "queued futures are cancelled"
    assert finished, "running futures finish"
    for f in finished:
        assert f.result() in range(20)


def test_context_manager_shuts_down(executor):
    with executor as ex:
        f = ex.submit(tasks.square, 3)
    assert f.result(timeout=0) == 9
    with pytest.raises(RuntimeError):
        executor.submit(tasks.square, 1)


def test_as_completed_and_wait(executor):
    futs = {executor.submit(tasks.sleep_then, d, d) for d in (0.3, 0.0, 0.1)}
    got = [f.result() for f in cf.as_completed(futs, timeout=30)]
    assert sorted(got) == [0.0, 0.1, 0.3]
    done, not_done = cf.wait(futs, return_when=cf.FIRST_COMPLETED, timeout=30)
    assert done and done | not_done == futs


def test_as_completed_timeout(executor):
    slow = executor.submit(tasks.sleep_then, 3)
    with pytest.raises(cf.TimeoutError):
        for _ in cf.as_completed([slow], timeout=0.2):
            pass
    slow.result(timeout=30)


def test_first_exception(executor):
    a = executor.submit(tasks.sleep_then, 3)
    b = executor.submit(tasks.fail, "no")
    done, not_done = cf.wait([a, b], return_when=cf.FIRST_EXCEPTION, timeout=30)
    assert b in done and a in not_done
    a.result(timeout=30)


def test_free_reference(executor):
    # The executor keeps no reference to a result once its future is gone.
    for _ in range(10):
        obj = tasks.CustomError(1, "x")
        wr = weakref.ref(obj)
        executor.submit(tasks.echo, obj).result(timeout=30)
        del obj
        import gc

        gc.collect()
        if wr() is None:
            return
    pytest.fail("a result stayed referenced")


def test_process_pool_traceback():
    with ProcessPoolExecutor(1) as ex:
        fut = ex.submit(tasks.raise_custom, 3)
        with pytest.raises(tasks.CustomError) as info:
            fut.result(timeout=30)
        assert "raise_custom" in str(info.value.__cause__)


def test_killed_child_fails_its_task_as_broken_process_pool():
    # The standard library breaks the whole pool; seedcore fails the one
    # task (a BrokenProcessPool all the same) and replaces the worker.
    with ProcessPoolExecutor(1) as ex:
        fut = ex.submit(tasks.kill_self)
        with pytest.raises(cf.process.BrokenProcessPool):
            fut.result(timeout=30)
        assert ex.submit(tasks.square, 3).result(timeout=30) == 9


def test_broken_initializer():
    with ProcessPoolExecutor(1, initializer=tasks.init_fails) as ex:
        with pytest.raises(cf.process.BrokenProcessPool):
            ex.submit(tasks.noop).result(timeout=60)


def test_initializer_runs_in_each_worker():
    with ProcessPoolExecutor(2, initializer=tasks.init_worker, initargs=(5,)) as ex:
        assert {ex.submit(tasks.read_initialized).result(timeout=30) for _ in range(8)} == {5}


def test_thread_initializer():
    seen = []
    with ThreadPoolExecutor(2, initializer=seen.append, initargs=("init",)) as ex:
        for f in [ex.submit(tasks.noop) for _ in range(10)]:
            f.result(timeout=30)
    assert 1 <= len(seen) <= 2 and set(seen) == {"init"}


def test_broken_thread_initializer():
    def bad():
        raise ValueError("no")

    with ThreadPoolExecutor(1, initializer=bad) as ex:
        with pytest.raises(cf.thread.BrokenThreadPool):
            ex.submit(tasks.noop).result(timeout=30)


def test_max_tasks_per_child():
    with ProcessPoolExecutor(1, max_tasks_per_child=3) as ex:
        pids = [ex.submit(tasks.pid).result(timeout=30) for _ in range(6)]
    assert len(set(pids)) == 2
    with pytest.raises(ValueError):
        ProcessPoolExecutor(1, max_tasks_per_child=0)


def test_mp_context_fork_is_refused_spawn_accepted():
    import multiprocessing

    with pytest.raises(ValueError, match="fork"):
        ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        assert ex.submit(tasks.square, 2).result(timeout=30) == 4


def test_futures_from_many_threads(executor):
    results = []

    def submitter(k):
        results.extend(executor.submit(tasks.square, k * 10 + i).result(timeout=30) for i in range(10))

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(x * x for x in range(40))
