"""More of what concurrent.futures' users rely on, each found broken once:
waiting on futures some of which are done, work left running by
``shutdown(wait=False)`` at exit, ``map`` submitting at the call, a
timed-out ``map`` cancelling its item, a broken thread pool refusing work,
prints from workers, Manager proxies, thread names, references let go."""

import concurrent.futures as cf
import gc
import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

import seedcore
import tasks
from conftest import wait_until
from seedcore.futures import ProcessPoolExecutor, ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))


def test_as_completed_and_wait_over_done_and_pending_futures(executor):
    executor.submit(tasks.noop).result(timeout=60)
    for _ in range(3):
        fast = executor.submit(tasks.noop)
        slow = executor.submit(tasks.sleep_then, 0.5, "slow")
        fast.result(timeout=30)
        got = list(cf.as_completed([fast, slow], timeout=30))
        assert got == [fast, slow]
        fast = executor.submit(tasks.noop)
        slow = executor.submit(tasks.sleep_then, 0.5, "slow")
        fast.result(timeout=30)
        for when in (cf.ALL_COMPLETED, cf.FIRST_EXCEPTION):
            done, not_done = cf.wait([fast, slow], timeout=30, return_when=when)
            assert done == {fast, slow} and not not_done
        # A plain future in the mix.
        plain = cf.Future()
        plain.set_result(1)
        slow = executor.submit(tasks.sleep_then, 0.3, "slow")
        assert list(cf.as_completed([plain, fast, slow], timeout=30))[-1] is slow


def _run_script(body, timeout=120):
    script = textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE] + sys.path))
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("kind", ["ProcessPoolExecutor", "ThreadPoolExecutor"])
@pytest.mark.parametrize("leave", ["ex.shutdown(wait=False)", "del ex; gc.collect()"])
def test_work_left_running_still_runs_before_exit(tmp_path, kind, leave):
    # Shut down without waiting, or dropped: the exit waits for the work.
    out = tmp_path / "ran"
    r = _run_script(
        f"""
        import gc
        import tasks
        from seedcore.futures import {kind}
        if __name__ == "__main__":
            ex = {kind}(max_workers=2)
            for i in range(6):
                ex.submit(tasks.append_line, {str(out)!r}, str(i), 0.2)
            {leave}
            print("main done", flush=True)
        """
    )
    assert r.returncode == 0, r.stderr
    assert "main done" in r.stdout
    ended = sorted(line.split()[1] for line in out.read_text().splitlines() if line.startswith("end"))
    assert ended == [str(i) for i in range(6)]


def test_map_submits_at_the_call(executor, tmp_path):
    out = tmp_path / "ran"
    executor.map(tasks.append_line, [str(out)] * 10, [str(i) for i in range(10)])
    executor.shutdown(wait=True)
    ended = sorted(int(line.split()[1]) for line in out.read_text().splitlines() if line.startswith("end"))
    assert ended == list(range(10))


def test_map_timeout_counts_from_the_call(executor):
    executor.submit(tasks.noop).result(timeout=60)
    it = executor.map(tasks.sleep_then, [5.0], timeout=1.0)
    time.sleep(1.5)
    t = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        next(it)
    # Counted from the call, the deadline had passed: no second wait.
    assert time.monotonic() - t < 0.7


def test_map_with_buffersize_reads_an_endless_iterable(executor):
    import itertools

    it = executor.map(tasks.square, itertools.count(), buffersize=2)
    assert [next(it) for _ in range(5)] == [0, 1, 4, 9, 16]
    it.close()
    with pytest.raises(ValueError):
        executor.map(tasks.square, [1], buffersize=0)


def test_a_timed_out_map_cancels_the_item_it_waited_on(tmp_path):
    log = tmp_path / "log"
    with ThreadPoolExecutor(max_workers=1) as ex:
        gate = threading.Event()
        first = ex.submit(gate.wait, 30)
        try:
            gen = ex.map(tasks.append_line, [str(log)] * 2, ["second", "third"], timeout=0)
            with pytest.raises(cf.TimeoutError):
                next(gen)
            gen.close()
        finally:
            gate.set()
        assert first.result(timeout=30)
    assert not log.exists(), log.read_text()


def test_a_failed_thread_initializer_breaks_the_pool_for_later_submits(caplog):
    ex = ThreadPoolExecutor(max_workers=2, initializer=tasks.init_fails)
    try:
        with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
            with pytest.raises(cf.thread.BrokenThreadPool):
                ex.submit(tasks.noop).result(timeout=30)
        with pytest.raises(cf.thread.BrokenThreadPool):
            ex.submit(tasks.noop)
        assert any("initializer" in r.getMessage() for r in caplog.records)
    finally:
        ex.shutdown(wait=True)


def test_a_process_tasks_prints_reach_stdout_and_stderr_as_they_are():
    r = _run_script(
        """
        import tasks
        from seedcore.futures import ProcessPoolExecutor
        if __name__ == "__main__":
            with ProcessPoolExecutor(max_workers=1) as ex:
                assert list(ex.map(tasks.print_both, range(2))) == [0, 1]
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["out 0", "out 1"]
    assert [line for line in r.stderr.splitlines() if line.startswith("err")] == ["err 0", "err 1"]


def test_a_managers_proxies_reach_process_tasks():
    with multiprocessing.Manager() as m:
        q = m.Queue()
        with ProcessPoolExecutor(max_workers=1) as ex:
            assert ex.submit(tasks.put_into, q, 42).result(timeout=60) == 42
        assert q.get(timeout=10) == 42


def test_thread_tasks_run_on_threads_named_after_the_prefix():
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="crawler") as ex:
        names = {ex.submit(lambda: threading.current_thread().name).result(timeout=30) for _ in range(20)}
    assert names and all(n.startswith("crawler") for n in names), names


def test_a_finished_tasks_callable_is_let_go(executor):
    if isinstance(executor, ProcessPoolExecutor):
        pytest.skip("a process task's callable is pickled at submit; nothing is held")
    big = tasks.Big()
    collected = threading.Event()
    ref = weakref.ref(big, lambda _: collected.set())
    fut = executor.submit(big.size)
    del big
    assert fut.result(timeout=30) == 1024
    gc.collect()
    assert collected.wait(10), "the finished task's callable is still held"
    assert ref() is None


def test_map_keeps_no_result_it_handed_out(executor):
    for obj in executor.map(tasks.Big, range(5)):
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        assert ref() is None


def test_what_cannot_be_pickled_is_a_pickling_error():
    with ProcessPoolExecutor(max_workers=1) as ex:
        lock = threading.Lock()
        # As the standard library: the future fails, the submit does not.
        f = ex.submit(tasks.echo, lock)
        with pytest.raises(pickle.PicklingError):
            f.result(timeout=30)
        assert isinstance(f.exception(), TypeError)
        with pytest.raises(seedcore.NotPicklable):
            ex.submit(tasks.unpicklable_result).result(timeout=60)


def fetch(url, timeout=None, name=None, priority=None):
    return (url, timeout, name, priority)


def test_submit_passes_every_keyword_to_the_function():
    # requests.get(url, timeout=5) style: the keywords are the function's.
    with ThreadPoolExecutor(max_workers=1) as ex:
        assert ex.submit(fetch, "u", timeout=0.01, name="n", priority=3).result(timeout=30) == (
            "u", 0.01, "n", 3)
        # seedcore's task options have their own door.
        f = ex.submit_with({"timeout": 0.2}, tasks.sleep_then, 5)
        with pytest.raises(seedcore.TaskTimedOut):
            f.result(timeout=30)
        assert ex.submit_with({"priority": 0}, fetch, "u", timeout=1).result(timeout=30)[1] == 1
        with pytest.raises(ValueError, match="unknown task options"):
            ex.submit_with({"prio": 0}, fetch, "u")
    with ProcessPoolExecutor(max_workers=1) as ex:
        assert ex.submit(tasks.add, 1, 2, c=3).result(timeout=60) == 6
        assert ex.submit_with({"retries": 1}, tasks.add, 1, 2, c=4).result(timeout=60) == 7


@pytest.mark.parametrize("kind", ["ProcessPoolExecutor", "ThreadPoolExecutor"])
def test_an_atexit_handler_cannot_submit_any_more(kind):
    r = _run_script(
        f"""
        import atexit
        @atexit.register
        def run_last():
            try:
                t.submit(id, None)
            except RuntimeError as e:
                print("runtime-error:", e)
        from seedcore.futures import {kind}
        if __name__ == "__main__":
            t = {kind}(2)
            t.submit(id, 42).result()
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "runtime-error: cannot schedule new futures after interpreter shutdown"


def test_imap_goes_on_after_a_failed_item_as_pool_imap_does(system):
    import functools

    fail_on_3 = functools.partial(tasks.fail_on, bad=3)
    for it in (
        system.imap(fail_on_3, range(8)),
        system.imap(fail_on_3, range(8), pool="thread"),
    ):
        got = []
        while True:
            try:
                got.append(next(it))
            except StopIteration:
                break
            except ValueError as e:
                got.append(str(e))
        assert got == [0, 1, 2, "bad item 3", 4, 5, 6, 7]
    got, errors = [], 0
    it = system.imap_unordered(functools.partial(tasks.fail_on, bad=5), range(8))
    while True:
        try:
            got.append(next(it))
        except StopIteration:
            break
        except ValueError:
            errors += 1
    assert sorted(got) == [0, 1, 2, 3, 4, 6, 7] and errors == 1
    # Pool.imap's next(timeout).
    it = system.imap(tasks.sleep_then, [5.0], pool="thread")
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.05)
    it.close()
    # map stops at the first failure, as Executor.map does.
    it = system.map(fail_on_3, range(8), chunksize=1)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_starmap_runs_every_item_then_raises_the_first_failure(system, tmp_path):
    out = tmp_path / "ran"
    args = [(str(out), None, "not a number")] + [(str(out), str(i)) for i in range(6)]
    with pytest.raises(TypeError):
        system.starmap(tasks.append_line, args, chunksize=1)
    ended = sorted(line for line in out.read_text().splitlines() if line.startswith("end"))
    assert len(ended) == 6


def test_a_task_raising_cancelled_error_itself_fails_with_it():
    import asyncio

    with ThreadPoolExecutor(max_workers=1) as ex:
        f = ex.submit(tasks.raise_cancelled)
        assert f.wait(30)
        assert not f.cancelled()
        assert isinstance(f.exception(), cf.CancelledError)

        async def main():
            return await asyncio.wait_for(ex.submit(tasks.raise_cancelled), 30)

        with pytest.raises(asyncio.CancelledError):
            asyncio.run(main())


def test_await_wakes_whatever_the_callback_route():
    import asyncio

    queue = seedcore.CallbackQueue()
    other = asyncio.new_event_loop()  # never run
    try:
        for route in (queue, other):
            with seedcore.ConcurrentSystem(threads={"core": 1, "max": 1}, callbacks=route) as s:
                async def main():
                    return await asyncio.wait_for(asyncio.wrap_future(s.submit_thread(tasks.square, 7)), 30)

                assert asyncio.run(main()) == 49
    finally:
        other.close()


def test_the_executors_are_the_standard_librarys_kinds():
    import asyncio

    with ThreadPoolExecutor(max_workers=2) as ex:
        assert isinstance(ex, cf.ThreadPoolExecutor)

        async def main():
            asyncio.get_running_loop().set_default_executor(ex)
            return await asyncio.to_thread(tasks.square, 6)

        assert asyncio.run(main()) == 36
    with ProcessPoolExecutor(max_workers=1) as ex:
        assert isinstance(ex, cf.ProcessPoolExecutor)


def test_a_graceful_shutdown_waits_for_all_the_work_however_long():
    with seedcore.ConcurrentSystem(threads={"core": 1, "max": 1}) as s:
        fs = [s.submit_thread(tasks.sleep_then, 0.3, i) for i in range(4)]
        s.shutdown(wait=True)
        assert [f.result(timeout=0) for f in fs] == [0, 1, 2, 3]
    # The configured limit still applies where one is set.
    s = seedcore.ConcurrentSystem(threads={"core": 1, "max": 1}, shutdown_timeout="200ms")
    fs = [s.submit_thread(tasks.sleep_then, 0.5, i) for i in range(3)]
    s.shutdown(wait=True)
    assert any(f.cancelled() for f in fs)
