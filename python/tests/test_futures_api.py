"""TaskFuture: waiting, cancelling, callbacks, asyncio; thread and async
tasks."""

import asyncio
import concurrent.futures as cf
import threading
import time

import pytest

import seedcore
import tasks


def test_thread_tasks_return_values_and_raise(system):
    assert system.submit_thread(lambda: 5).result(timeout=10) == 5
    assert system.submit_thread(tasks.add, 1, 2, c=4).result(timeout=10) == 7
    with pytest.raises(ValueError, match="boom"):
        system.submit_thread(tasks.fail, "boom").result(timeout=10)
    tid = system.submit_thread(threading.get_ident).result(timeout=10)
    assert tid != threading.get_ident()


def test_a_thread_task_past_its_timeout_resolves_at_the_deadline(system):
    start = time.monotonic()
    with pytest.raises(seedcore.TaskTimedOut):
        system.submit_thread(time.sleep, 3, timeout=0.3).result(timeout=10)
    assert time.monotonic() - start < 2.5


def test_async_tasks_run_coroutines(system):
    assert system.submit_async(tasks.async_square, 6).result(timeout=10) == 36
    with pytest.raises(seedcore.TaskTimedOut):
        system.submit_async(tasks.async_square, 2, delay=5, timeout=0.2).result(timeout=10)


def test_result_timeout_raises_timeout_error(system):
    fut = system.submit_process(tasks.sleep_then, 1.0, "late")
    with pytest.raises(cf.TimeoutError):
        fut.result(timeout=0.05)
    assert fut.result(timeout=30) == "late"


def test_cancel_a_queued_task(tmp_path):
    with seedcore.ConcurrentSystem(processes={"core": 1, "max": 1}, balance={"expand": "none"}) as s:
        s.submit_process(tasks.noop).result(timeout=30)
        blocker = s.submit_process(tasks.sleep_then, 1.0)
        queued = s.submit_process(tasks.square, 3)
        assert queued.cancel()
        assert queued.cancelled() and queued.done()
        with pytest.raises(cf.CancelledError):
            queued.result()
        with pytest.raises(cf.CancelledError):
            queued.exception()
        assert blocker.result(timeout=30) is None
        assert not blocker.cancel()  # already done


def test_cancel_kills_a_running_process_task():
    with seedcore.ConcurrentSystem(processes={"core": 1, "max": 1}, balance={"expand": "none"}) as s:
        fut = s.submit_process(tasks.sleep_then, 60)
        deadline = time.monotonic() + 30
        while not fut.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fut.running()
        assert fut.cancel()
        with pytest.raises(cf.CancelledError):
            fut.result(timeout=5)
        assert s.submit_process(tasks.square, 9).result(timeout=30) == 81


def test_done_callbacks_run_once_each_and_late_ones_at_once(system):
    fut = system.submit_process(tasks.sleep_then, 0.2, "v")
    seen = []
    event = threading.Event()
    for i in range(3):
        fut.add_done_callback(lambda f, i=i: seen.append((i, f.result())))
    fut.add_done_callback(lambda f: event.set())
    assert event.wait(30)
    fut.add_done_callback(lambda f: seen.append(("late", threading.get_ident())))
    assert sorted(seen[:3]) == [(0, "v"), (1, "v"), (2, "v")]
    assert seen[3] == ("late", threading.get_ident())


def test_a_raising_callback_is_logged_not_raised(system, caplog):
    fut = system.submit_process(tasks.noop)
    event = threading.Event()
    fut.add_done_callback(lambda f: 1 / 0)
    fut.add_done_callback(lambda f: event.set())
    assert event.wait(30)


def test_wait_and_as_completed_take_task_futures(system):
    futs = [system.submit_process(tasks.sleep_then, d, d) for d in (3.0, 0.0, 0.2)]
    order = [f.result() for f in seedcore.as_completed(futs, timeout=30)]
    assert sorted(order) == [0.0, 0.2, 3.0]
    assert order[-1] == 3.0
    done, not_done = seedcore.wait(futs, timeout=30, return_when=seedcore.ALL_COMPLETED)
    assert len(done) == 3 and not not_done
    slow = system.submit_process(tasks.sleep_then, 2.0)
    bad = system.submit_process(tasks.fail, "x")
    done, not_done = cf.wait([slow, bad], timeout=30, return_when=cf.FIRST_EXCEPTION)
    assert bad in done and slow in not_done
    slow.result(timeout=30)


def test_mixing_with_plain_futures_in_wait(system):
    with cf.ThreadPoolExecutor(1) as ex:
        plain = ex.submit(time.sleep, 0.1)
        ours = system.submit_process(tasks.sleep_then, 0.2, 1)
        done, _ = cf.wait([plain, ours], timeout=30)
        assert done == {plain, ours}


def test_await_a_task_future(system):
    async def main():
        fut = system.submit_process(tasks.square, 12)
        return await fut

    assert asyncio.run(main()) == 144


def test_cancelling_the_awaiting_task_cancels_the_task():
    with seedcore.ConcurrentSystem(processes={"core": 1, "max": 1}, balance={"expand": "none"}) as s:
        fut = s.submit_process(tasks.sleep_then, 60)

        async def main():
            waiter = asyncio.ensure_future(asyncio.wrap_future(fut))
            await asyncio.sleep(0.3)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter

        asyncio.run(main())
        deadline = time.monotonic() + 10
        while not fut.cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fut.cancelled()


def test_run_in_executor_takes_the_drop_in_executor():
    from seedcore.futures import ProcessPoolExecutor

    async def main(ex):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(ex, tasks.square, 11)

    with ProcessPoolExecutor(2) as ex:
        assert asyncio.run(main(ex)) == 121


def test_callbacks_on_an_asyncio_loop_run_on_its_thread():
    async def main():
        loop = asyncio.get_running_loop()
        with seedcore.ConcurrentSystem(processes={"core": 1, "max": 1}, callbacks=loop) as s:
            got = loop.create_future()
            fut = s.submit_process(tasks.sleep_then, 0.1, "x")
            fut.add_done_callback(lambda f: got.set_result(threading.get_ident()))
            return await asyncio.wait_for(got, 30)

    loop_thread = threading.get_ident()
    assert asyncio.run(main()) == loop_thread


def test_callbacks_on_a_queue_run_where_it_is_drained():
    q = seedcore.CallbackQueue()
    with seedcore.ConcurrentSystem(processes={"core": 1, "max": 1}, callbacks=q) as s:
        seen = []
        fut = s.submit_process(tasks.square, 2)
        fut.add_done_callback(lambda f: seen.append((f.result(), threading.get_ident())))
        fut.result(timeout=30)
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            q.drain(timeout=0.1)
        assert seen == [(4, threading.get_ident())]


def test_set_result_is_refused(system):
    fut = system.submit_process(tasks.noop)
    with pytest.raises(RuntimeError):
        fut.set_result(1)
    fut.result(timeout=30)


def test_commands_run_in_their_own_group(system):
    out = system.submit_command(["sh", "-c", "echo hi; echo err >&2"]).result(timeout=30)
    assert out["returncode"] == 0 and out["stdout"] == b"hi\n" and out["stderr"] == b"err\n"
    with pytest.raises(seedcore.CommandFailed) as info:
        system.submit_command("exit 3").result(timeout=30)
    assert info.value.returncode == 3


def test_the_command_section_is_taken():
    with seedcore.ConcurrentSystem(command={"slots": 1, "max_slots": 2}) as s:
        assert s.submit_command("true").result(timeout=30)["returncode"] == 0
        row = next(e for e in s.stats()["executors"] if e["executor"] == "command")
        assert (row["core"], row["max"]) == (1, 2)
    with pytest.raises(seedcore.ConfigError) as info:
        seedcore.ConcurrentSystem(command={"slots": 0})
    assert "command.slots" in str(info.value)
