"""The exceptions of seedcore, and how the core's errors become them.

Every accepted task resolves exactly once: to its value, to the exception
its own code raised (with its type, and the worker's traceback as
``__cause__``), or to one of the :class:`TaskError` subclasses below.
Cancellation is ``concurrent.futures.CancelledError``, as in
concurrent.futures.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import pickle
from typing import Any, Optional

__all__ = [
    "ConfigError",
    "NotPicklable",
    "SubmitError",
    "TaskError",
    "TaskTimedOut",
    "WorkerDied",
    "MemoryLimit",
    "LockTimeout",
    "PoolBroken",
    "SystemShutdown",
    "TaskPanicked",
    "GpuMemory",
    "CommandFailed",
    "RemoteTraceback",
]


class ConfigError(ValueError):
    """An invalid configuration value; ``field`` names the key
    (``"threads.max"``) and ``reason`` says what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid configuration: {field}: {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self):
        return (type(self), (self.field, self.reason))


class NotPicklable(TypeError, pickle.PicklingError):
    """A process task's call or result that cannot be pickled. Raised by
    ``submit`` for the call, by ``result()`` for the result; both a
    ``TypeError`` and a ``pickle.PicklingError``, so the handlers written
    for either catch it."""


class SubmitError(RuntimeError):
    """A submission the system refused at once (invalid options, arguments
    that cannot be pickled, a queue that is full, ...)."""


class TaskError(Exception):
    """Why a task did not produce a value, other than its own exception."""


class TaskTimedOut(TaskError, TimeoutError):
    """The attempt ran past its timeout. A process task's worker was
    killed (with its whole process group); a thread task's future resolved
    at the deadline while its Python code may still be running."""

    def __init__(self, message: str = "task timed out", after: Optional[float] = None) -> None:
        super().__init__(message)
        self.after = after


class WorkerDied(TaskError, concurrent.futures.process.BrokenProcessPool):
    """The worker process running the task died (a crash, a signal, an
    out-of-memory kill). The pool replaces the worker and carries on;
    retry such tasks with ``retry_on="crash"``. Also a
    ``BrokenProcessPool``, what concurrent.futures raises in this case."""

    def __init__(
        self,
        message: str = "worker died",
        signal: Optional[int] = None,
        pid: Optional[int] = None,
        exit_code: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.signal = signal
        self.pid = pid
        self.exit_code = exit_code


class MemoryLimit(TaskError, MemoryError):
    """The worker grew past the pool's memory limit and was killed."""

    def __init__(self, message: str = "memory limit", limit: int = 0, rss: int = 0) -> None:
        super().__init__(message)
        self.limit = limit
        self.rss = rss


class LockTimeout(TaskError, TimeoutError):
    """The task waited longer than its ``lock_timeout`` for a lock or limit."""

    def __init__(self, message: str = "lock timeout", lock: str = "", waited: float = 0.0) -> None:
        super().__init__(message)
        self.lock = lock
        self.waited = waited


class PoolBroken(TaskError, concurrent.futures.process.BrokenProcessPool):
    """The process pool cannot run tasks: its initializer failed, or worker
    processes cannot be started (the message says which)."""


class SystemShutdown(TaskError, RuntimeError):
    """The system shut down before the task could run, or a task was
    submitted after shutdown."""


class TaskPanicked(TaskError):
    """Native code under the task panicked; the worker survived."""


class GpuMemory(TaskError, MemoryError):
    """GPU memory could not be had for the task."""


class CommandFailed(TaskError):
    """A command exited non-zero (or was killed by a signal); ``output``
    holds its return code, signal, stdout and stderr."""

    def __init__(self, message: str = "command failed", output: Optional[dict] = None) -> None:
        super().__init__(message)
        self.output = output or {}

    @property
    def returncode(self) -> Optional[int]:
        return self.output.get("returncode")


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, attached
    as the ``__cause__`` of the exception the caller gets (as
    concurrent.futures does)."""

    def __init__(self, tb: str) -> None:
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _raised(payload: bytes, message: str) -> BaseException:
    """The exception a worker pickled: ``(exc, traceback_text)``."""
    try:
        exc, tb = pickle.loads(payload)
    except Exception as e:  # an exception class the parent cannot import
        err = TaskError(f"{message} (the exception could not be unpickled here: {e!r})")
        return err
    if tb:
        exc.__cause__ = RemoteTraceback(tb)
    return exc


def from_core(
    kind: str, message: str, info: dict, payload: Optional[bytes], exc: Any
) -> BaseException:
    """The exception for an error the core reported (called by the binding)."""
    if kind == "failed":
        if exc is not None:
            return exc
        if payload:
            return _raised(payload, message)
        if "output" in info:
            return CommandFailed(message, info["output"])
        return TaskError(message)
    if kind == "timed_out":
        return TaskTimedOut(message, info.get("after"))
    if kind == "cancelled":
        return concurrent.futures.CancelledError(message)
    if kind == "worker_died":
        return WorkerDied(message, info.get("signal"), info.get("pid"), info.get("exit_code"))
    if kind == "memory_limit":
        return MemoryLimit(message, info.get("limit", 0), info.get("rss", 0))
    if kind == "lock_timeout":
        return LockTimeout(message, info.get("lock", ""), info.get("waited", 0.0))
    if kind == "pool_broken":
        return PoolBroken(message)
    if kind == "shutdown":
        return SystemShutdown(message)
    if kind == "panicked":
        return TaskPanicked(message)
    if kind == "gpu_memory":
        return GpuMemory(message)
    return TaskError(message)


def from_submit(kind: str, message: str) -> BaseException:
    """The exception for a refused submission (called by the binding)."""
    if kind == "closed":
        return SystemShutdown("cannot submit: the system is shut down")
    if kind == "pool_broken":
        return PoolBroken(message)
    if kind == "invalid_options":
        return ValueError(message)
    return SubmitError(message)
