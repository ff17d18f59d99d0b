"""What kills other pools: crashes, hangs, leaks, bad workers, Ctrl-C."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import seedcore
import tasks
from conftest import pid_alive, wait_until


@pytest.fixture
def small():
    with seedcore.ConcurrentSystem(processes={"core": 1, "max": 1}, balance={"expand": "none"}) as s:
        yield s


def test_sigkill_of_the_worker_gives_worker_died_and_the_pool_heals(small):
    with pytest.raises(seedcore.WorkerDied) as info:
        small.submit_process(tasks.kill_self).result(timeout=30)
    assert info.value.signal == signal.SIGKILL
    assert info.value.pid is not None
    # A concurrent.futures user's except clause catches it too.
    from concurrent.futures.process import BrokenProcessPool

    assert isinstance(info.value, BrokenProcessPool)
    assert small.submit_process(tasks.square, 5).result(timeout=30) == 25


def test_a_segfault_gives_worker_died(small):
    with pytest.raises(seedcore.WorkerDied) as info:
        small.submit_process(tasks.segfault).result(timeout=30)
    assert info.value.signal == signal.SIGSEGV
    assert small.submit_process(tasks.square, 6).result(timeout=30) == 36


def test_os_exit_gives_worker_died_with_the_code(small):
    with pytest.raises(seedcore.WorkerDied) as info:
        small.submit_process(tasks.exit_hard, 7).result(timeout=30)
    assert info.value.exit_code == 7


def test_crashes_are_retried_when_asked(small, tmp_path):
    path = str(tmp_path / "n")
    fut = small.submit_process(tasks.flaky_by_file, path, 2, retries=3, retry_on="crash")
    assert fut.result(timeout=60) == 3


def test_a_timeout_kills_the_worker_and_its_grandchildren(small, tmp_path):
    pidfile = tmp_path / "grandchild"
    fut = small.submit_process(tasks.spawn_grandchild_and_hang, str(pidfile), timeout=2)
    with pytest.raises(seedcore.TaskTimedOut):
        fut.result(timeout=30)
    grandchild = int(pidfile.read_text())
    assert wait_until(lambda: not pid_alive(grandchild), 10), "the grandchild outlived the timeout"


def test_the_timeout_resolves_close_to_the_deadline(small):
    small.submit_process(tasks.noop).result(timeout=30)
    start = time.monotonic()
    with pytest.raises(seedcore.TaskTimedOut):
        small.submit_process(tasks.sleep_then, 30, timeout=1.0).result(timeout=30)
    # Generous bound: the point is that it does not wait for the task.
    assert time.monotonic() - start < 5


def test_the_memory_limit_kills_a_leaking_task():
    with seedcore.ConcurrentSystem(
        processes={"core": 1, "max": 1, "max_memory": "150MiB"}, balance={"expand": "none"}
    ) as s:
        with pytest.raises(seedcore.MemoryLimit) as info:
            s.submit_process(tasks.allocate, 400, 10).result(timeout=60)
        assert info.value.limit == 150 << 20
        assert s.submit_process(tasks.square, 2).result(timeout=30) == 4


def test_workers_are_recycled_after_n_tasks():
    with seedcore.ConcurrentSystem(
        processes={"core": 1, "max": 1, "max_tasks_per_process": 2}, balance={"expand": "none"}
    ) as s:
        pids = [s.submit_process(tasks.pid).result(timeout=30) for _ in range(6)]
    assert len(set(pids)) == 3, pids


def test_the_initializer_runs_in_each_worker():
    with seedcore.ConcurrentSystem(
        processes={"core": 2, "max": 2}, initializer=tasks.init_worker, initargs=("ready",)
    ) as s:
        assert {s.submit_process(tasks.read_initialized).result(timeout=30) for _ in range(6)} == {"ready"}


def test_a_failing_initializer_breaks_the_pool_with_its_message():
    with seedcore.ConcurrentSystem(processes={"core": 1, "max": 1}, initializer=tasks.init_fails) as s:
        with pytest.raises(seedcore.PoolBroken, match="initializer says no"):
            s.submit_process(tasks.noop).result(timeout=60)


def test_submitting_after_shutdown_is_refused():
    s = seedcore.ConcurrentSystem(processes={"core": 1, "max": 1})
    s.shutdown()
    with pytest.raises(seedcore.SystemShutdown):
        s.submit_process(tasks.noop)
    s.shutdown()  # idempotent


def test_an_invalid_configuration_names_the_key():
    with pytest.raises(seedcore.ConfigError) as info:
        seedcore.ConcurrentSystem(threads={"core": 4, "max": 2})
    assert info.value.field == "threads.max"
    assert isinstance(info.value, ValueError)
    with pytest.raises(seedcore.ConfigError) as info:
        seedcore.ConcurrentSystem(processes={"bogus": 1})
    assert "processes.bogus" in str(info.value)


def test_a_toml_file_configures_the_system(tmp_path):
    cfg = tmp_path / "seedcore.toml"
    cfg.write_text('[threads]\ncore = 1\nmax = 3\n[processes]\ncore = 1\nmax = 1\n')
    with seedcore.ConcurrentSystem(config=cfg, threads={"max": 2}) as s:
        assert s.submit_thread(tasks.square, 3).result(timeout=30) == 9
        assert s.submit_process(tasks.square, 3).result(timeout=30) == 9


def _run_script(tmp_path, body, timeout=60, **popen):
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(body))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(__file__)] + [p for p in sys.path if p]
    )
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=timeout,
        env=env, cwd=str(tmp_path), **popen,
    )


def test_functions_defined_in_main_run_in_workers(tmp_path):
    out = _run_script(tmp_path, """
        import seedcore

        def triple(x):
            return 3 * x

        if __name__ == "__main__":
            with seedcore.ConcurrentSystem(processes={"core": 1, "max": 1}) as s:
                print(s.submit_process(triple, 14).result(timeout=30))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"


def test_a_missing_main_guard_is_a_clear_error_not_a_fork_bomb(tmp_path):
    out = _run_script(tmp_path, """
        import seedcore

        def triple(x):
            return 3 * x

        s = seedcore.ConcurrentSystem(processes={"core": 1, "max": 1})
        try:
            s.submit_process(triple, 1).result(timeout=30)
        except Exception as e:
            print("ERROR", type(e).__name__, e)
        s.shutdown()
    """)
    assert out.returncode == 0, out.stderr
    assert "ERROR" in out.stdout and "__name__" in out.stdout, out.stdout + out.stderr


def test_a_forked_child_cannot_use_the_parents_system(system):
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        try:
            system.submit_process(tasks.noop)
            msg = b"no error"
        except RuntimeError as e:
            msg = str(e).encode()
        except BaseException as e:  # noqa: BLE001
            msg = repr(e).encode()
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    data = os.read(r, 4096).decode()
    os.waitpid(child, 0)
    assert "forked child" in data, data
    assert system.submit_process(tasks.square, 2).result(timeout=30) == 4


def test_ctrl_c_interrupts_a_wait_on_a_result(tmp_path):
    script = tmp_path / "wait.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        import seedcore
        import tasks

        if __name__ == "__main__":
            with seedcore.ConcurrentSystem(processes={"core": 1, "max": 1}) as s:
                fut = s.submit_process(tasks.sleep_then, 60)
                print("waiting", flush=True)
                try:
                    fut.result()
                except KeyboardInterrupt:
                    print("interrupted", time.monotonic(), flush=True)
                    s.shutdown(mode="immediate")
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__)] + sys.path))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "waiting"
    time.sleep(0.5)
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    line = p.stdout.readline()
    assert line.startswith("interrupted"), line
    assert float(line.split()[1]) - sent < 1.0
    assert p.wait(30) == 0


@pytest.mark.parametrize("block", [
    "seedcore.ConcurrentSystem(processes={'core': 2, 'max': 2})",
    "seedcore.futures.ProcessPoolExecutor(max_workers=2)",
], ids=["system", "executor"])
def test_ctrl_c_out_of_a_with_block_stops_the_work_and_exits(tmp_path, block):
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent(f"""
        import seedcore
        import seedcore.futures
        import tasks

        if __name__ == "__main__":
            with {block} as s:
                submit = getattr(s, "submit_process", getattr(s, "submit", None))
                pids = {{submit(tasks.pid).result(timeout=30) for _ in range(10)}}
                print(" ".join(map(str, pids)), flush=True)
                submit(tasks.sleep_then, 60).result()
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__)] + sys.path))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    pids = [int(x) for x in p.stdout.readline().split()]
    time.sleep(0.5)
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    p.wait(30)
    assert time.monotonic() - sent < 10, "the running task was waited for"
    assert "KeyboardInterrupt" in p.stderr.read()
    for pid in pids:
        assert wait_until(lambda: not pid_alive(pid), 10), f"worker {pid} outlived Ctrl-C"


def test_a_second_ctrl_c_stops_a_graceful_shutdown(tmp_path):
    script = tmp_path / "graceful.py"
    script.write_text(textwrap.dedent("""
        import seedcore
        import tasks

        if __name__ == "__main__":
            s = seedcore.ConcurrentSystem(processes={"core": 1, "max": 1})
            s.submit_process(tasks.noop).result(timeout=30)
            s.submit_process(tasks.sleep_then, 60)
            print("shutting down", flush=True)
            try:
                s.shutdown(wait=True)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__)] + sys.path))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "shutting down"
    time.sleep(0.5)
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    assert p.stdout.readline().strip() == "interrupted"
    assert p.wait(30) == 0
    assert time.monotonic() - sent < 10


def test_no_worker_survives_its_killed_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import time
        import seedcore
        import tasks

        if __name__ == "__main__":
            s = seedcore.ConcurrentSystem(processes={"core": 2, "max": 2})
            pids = {s.submit_process(tasks.pid).result(timeout=30) for _ in range(10)}
            s.submit_process(tasks.sleep_then, 60)
            print(" ".join(map(str, pids)), flush=True)
            time.sleep(60)
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__)] + sys.path))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    pids = [int(x) for x in p.stdout.readline().split()]
    assert pids
    p.kill()
    p.wait(10)
    for pid in pids:
        assert wait_until(lambda: not pid_alive(pid), 10), f"worker {pid} outlived its parent"


def test_exit_leaves_no_worker_behind(tmp_path):
    out = _run_script(tmp_path, """
        import seedcore
        import tasks

        if __name__ == "__main__":
            s = seedcore.ConcurrentSystem(processes={"core": 2, "max": 2})
            pids = {s.submit_process(tasks.pid).result(timeout=30) for _ in range(10)}
            print(" ".join(map(str, pids)))
            # No shutdown: the exit handler stops the system.
    """)
    assert out.returncode == 0, out.stderr
    for pid in map(int, out.stdout.split()):
        assert wait_until(lambda: not pid_alive(pid), 10)
