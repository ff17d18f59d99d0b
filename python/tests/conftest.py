import os
import sys

import pytest

# The helper module of process tasks sits beside the tests.
sys.path.insert(0, os.path.dirname(__file__))

import seedcore  # noqa: E402


@pytest.fixture(scope="module")
def system():
    """A small system shared by the tests of one module."""
    with seedcore.ConcurrentSystem(
        threads={"core": 2, "max": 4}, processes={"core": 2, "max": 2}
    ) as s:
        yield s


@pytest.fixture(params=["process", "thread"])
def executor(request):
    """A drop-in executor of each kind, with two workers."""
    from seedcore.futures import ProcessPoolExecutor, ThreadPoolExecutor

    kind = ProcessPoolExecutor if request.param == "process" else ThreadPoolExecutor
    ex = kind(max_workers=2)
    yield ex
    ex.shutdown(wait=True)


def wait_until(predicate, timeout=10.0, step=0.02):
    """Polls ``predicate`` until it is true or ``timeout`` passes."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
