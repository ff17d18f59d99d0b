"""seedcore: a concurrent task system for Python, driven by a Rust core.

One :class:`ConcurrentSystem` runs your functions in isolated worker
processes, on threads and as asyncio coroutines, every task with a
priority, a timeout that really stops it, retries, named locks and limits,
and a :class:`TaskFuture` that is a real ``concurrent.futures.Future``
(block on it, ``await`` it, add callbacks)::

    import seedcore

    def square(x):
        return x * x

    if __name__ == "__main__":
        with seedcore.ConcurrentSystem(processes={"core": 2}) as system:
            fut = system.submit_process(square, 7, timeout=5, priority=2)
            print(fut.result())                             # 49
            print(list(system.map(square, range(10))))      # [0, 1, 4, ...]

``seedcore.futures`` has drop-in ``ProcessPoolExecutor`` and
``ThreadPoolExecutor``; ``seedcore.compat`` the names of
TheSeedCoreConcurrentSystem. Linux only.
"""

from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from concurrent.futures import CancelledError, as_completed, wait

from ._errors import (
    CommandFailed,
    ConfigError,
    GpuMemory,
    LockTimeout,
    MemoryLimit,
    NotPicklable,
    PoolBroken,
    RemoteTraceback,
    SubmitError,
    SystemShutdown,
    TaskError,
    TaskPanicked,
    TaskTimedOut,
    WorkerDied,
)
from ._future import CallbackQueue, TaskFuture
from ._seedcore import __version__
from ._shared import SharedBytes
from ._system import OPTION_NAMES, ConcurrentSystem

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "CallbackQueue",
    "CancelledError",
    "CommandFailed",
    "ConcurrentSystem",
    "ConfigError",
    "GpuMemory",
    "LockTimeout",
    "MemoryLimit",
    "NotPicklable",
    "OPTION_NAMES",
    "PoolBroken",
    "RemoteTraceback",
    "SharedBytes",
    "SubmitError",
    "SystemShutdown",
    "TaskError",
    "TaskFuture",
    "TaskPanicked",
    "TaskTimedOut",
    "WorkerDied",
    "__version__",
    "as_completed",
    "wait",
]
