"""Functions the tests run as process tasks: module-level, so that they
travel by reference to the worker processes."""

import os
import signal
import subprocess
import sys
import time


def square(x):
    return x * x


def add(a, b, c=0):
    return a + b + c


def echo(x):
    return x


def noop():
    return None


def pid():
    return os.getpid()


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def fail(message):
    raise ValueError(message)


class CustomError(Exception):
    """An exception type of the user's own, with state."""

    def __init__(self, code, text):
        super().__init__(code, text)
        self.code = code
        self.text = text


def raise_custom(code):
    raise CustomError(code, "custom failure")


def deep_failure():
    def inner():
        raise KeyError("deep")

    inner()


def kill_self(sig=signal.SIGKILL):
    os.kill(os.getpid(), sig)
    time.sleep(5)


def segfault():
    import ctypes

    ctypes.string_at(0)


def exit_hard(code=7):
    os._exit(code)


def spawn_grandchild_and_hang(pidfile):
    """Starts a grandchild that would outlive us, records its pid, hangs."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(pidfile, "w") as f:
        f.write(str(child.pid))
    time.sleep(600)


def allocate(megabytes, hold=5.0):
    block = bytearray(megabytes << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(hold)
    return len(block)


def _count_call(path):
    """How many times this was called before with ``path``; counts this one."""
    n = 0
    if os.path.exists(path):
        with open(path) as f:
            n = int(f.read() or 0)
    with open(path, "w") as f:
        f.write(str(n + 1))
    return n


def flaky_by_file(path, fail_times):
    """Crashes its worker on the first ``fail_times`` calls."""
    n = _count_call(path)
    if n < fail_times:
        os.kill(os.getpid(), signal.SIGKILL)
    return n + 1


def fail_until_file(path, fail_times):
    """Raises on the first ``fail_times`` calls."""
    n = _count_call(path)
    if n < fail_times:
        raise RuntimeError(f"attempt {n + 1} fails")
    return n + 1


def append_line(path, text, hold=0.0):
    with open(path, "a") as f:
        f.write(f"start {text}\n")
    time.sleep(hold)
    with open(path, "a") as f:
        f.write(f"end {text}\n")
    return text


INITIALIZED = None


def init_worker(value):
    global INITIALIZED
    INITIALIZED = value


def read_initialized():
    return INITIALIZED


def init_fails():
    raise RuntimeError("initializer says no")


def nbytes(buf):
    return len(memoryview(buf).cast("B"))


def array_sum(a):
    return float(a.sum())


def double_array(a):
    return a * 2


def write_into(a):
    a[0] = 42
    return a


def unpicklable_result():
    import threading

    return threading.Lock()


def lambda_maker():
    return lambda: 1


async def async_square(x, delay=0.0):
    import asyncio

    await asyncio.sleep(delay)
    return x * x


def print_both(i):
    print(f"out {i}", flush=True)
    print(f"err {i}", file=sys.stderr, flush=True)
    return i


def put_into(queue, value):
    queue.put(value)
    return value


class Big:
    """An object whose collection a test watches."""

    def __init__(self, n=1024):
        self.buf = bytearray(n)

    def size(self):
        return len(self.buf)


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def raise_cancelled():
    import concurrent.futures

    raise concurrent.futures.CancelledError("an inner future was cancelled")
