"""``concurrent.futures`` executors on seedcore: change the import, keep
the code.

``ProcessPoolExecutor`` and ``ThreadPoolExecutor`` are subclasses of the
standard library's (none of whose machinery they use), so a check such as
asyncio's ``set_default_executor`` accepts them; their ``submit`` returns
real ``concurrent.futures.Future`` objects (:class:`seedcore.TaskFuture`),
so ``cf.wait``, ``cf.as_completed``, ``loop.run_in_executor`` and every
library that takes an executor accept them unchanged.

Differences from the standard library, all deliberate:

* ``mp_context`` accepts only ``None`` or a ``"spawn"`` context: workers
  are always fresh interpreters, never forked.
* A worker that dies (segfault, ``os._exit``, a kill) fails only the task
  it was running, with :class:`seedcore.WorkerDied` (a
  ``BrokenProcessPool``); the pool replaces the worker and stays usable.
  A failing ``initializer`` breaks the pool: its tasks raise
  :class:`seedcore.PoolBroken` (also a ``BrokenProcessPool``).
* ``Future.cancel()`` also stops a running task (its worker is killed).
* ``shutdown(cancel_futures=True)`` cancels every task that has not
  started; the standard library also runs the few it already moved to its
  call queue.
* ``map`` takes Python 3.14's ``buffersize`` on every Python version:
  with it, only that many chunks are submitted ahead of the results
  read, so an endless iterable works; without it every item is
  submitted at the call, as in the standard library.
* ``submit_with(options, fn, *args, **kwargs)`` is ``submit`` with
  seedcore's task options (``{"priority": 0, "timeout": 5}``, see
  :data:`seedcore.OPTION_NAMES`); ``submit`` passes every keyword to the
  function, as the standard library does.
* A call that cannot be pickled gives a future (a plain
  ``concurrent.futures.Future``) whose ``result()`` raises
  :class:`seedcore.NotPicklable`, both a ``TypeError`` and a
  ``pickle.PicklingError``.
* ``initargs`` are pickled as any argument: ``multiprocessing``'s own
  ``Value``, ``Lock`` and ``Queue`` cannot be passed (a Manager's proxies
  can).
"""

from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.thread  # noqa: F401 - makes cf.thread.BrokenThreadPool reachable
import os
import sys
import threading
from typing import Any, Callable, Dict, Iterable, Iterator, Optional

from ._errors import NotPicklable, SystemShutdown
from ._future import TaskFuture
from ._system import OPTION_NAMES, ConcurrentSystem

__all__ = ["ProcessPoolExecutor", "ThreadPoolExecutor", "TaskFuture"]


class _Executor(cf.Executor):
    _pool = "process"

    def __init__(self) -> None:
        self._system: Optional[ConcurrentSystem] = None
        self._shutdown = False
        self._lock = threading.Lock()

    def _submitter(self) -> Callable[[Callable, tuple, dict, dict], TaskFuture]:
        """``submit(fn, args, kwargs, options)`` of this executor's pool."""
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Schedules ``fn(*args, **kwargs)``; returns its future. Every
        keyword goes to ``fn``, as in the standard library (seedcore's task
        options go through :meth:`submit_with`). Raises ``RuntimeError``
        after :meth:`shutdown`."""
        return self.submit_with(None, fn, *args, **kwargs)

    def submit_with(
        self, options: Optional[Dict[str, Any]], fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> TaskFuture:
        """:meth:`submit` with seedcore's task options, a dict of
        :data:`seedcore.OPTION_NAMES` (``{"priority": 0, "timeout": 5,
        "retries": 2}``)."""
        opts = dict(options or {})
        unknown = sorted(set(opts) - OPTION_NAMES)
        if unknown:
            raise ValueError(
                f"unknown task options {unknown}; the options are {sorted(OPTION_NAMES)}"
            )
        with self._lock:
            if self._shutdown or self._system is None:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._system.closed:
                # Shut down by the interpreter's exit, not by this executor.
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            submit = self._submitter()
        try:
            return submit(fn, args, kwargs, opts)
        except NotPicklable as e:
            # As the standard library: the future fails (result() raises),
            # so a batch of submits is not cut short by one bad call.
            failed: cf.Future = cf.Future()
            failed.set_exception(e)
            return failed  # type: ignore[return-value]

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
        buffersize: Optional[int] = None,
    ) -> Iterator[Any]:
        """``Executor.map``: results in order; ``timeout`` from this call.
        Every item is submitted at the call, as in the standard library;
        with ``buffersize`` (Python 3.14's option) only that many chunks
        are submitted ahead of the results read, so an endless iterable
        works."""
        if buffersize is not None:
            if not isinstance(buffersize, int) or isinstance(buffersize, bool):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
        with self._lock:
            if self._shutdown or self._system is None:
                raise RuntimeError("cannot schedule new futures after shutdown")
            system = self._system
        return system.map(
            fn,
            *iterables,
            timeout=timeout,
            chunksize=chunksize,
            pool=self._pool,
            window=sys.maxsize if buffersize is None else buffersize,
        )

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        # Ctrl-C out of the block stops the work (workers killed, queue
        # cancelled), as ConcurrentSystem's own block does; anything else
        # lets it finish, as concurrent.futures does.
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self._stop(wait=True, mode="immediate" if interrupted else None)
        return False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As ``Executor.shutdown``: pending futures run unless
        ``cancel_futures``; ``wait`` blocks until they are done."""
        self._stop(wait, cancel_futures=cancel_futures)

    def _stop(self, wait: bool, **how: Any) -> None:
        """Refuses new work and shuts the system down ``how`` (the keywords
        of :meth:`ConcurrentSystem.shutdown`)."""
        with self._lock:
            self._shutdown = True
            system = self._system
        if system is not None:
            system.shutdown(wait, **how)


class ProcessPoolExecutor(_Executor, cf.ProcessPoolExecutor):
    """``concurrent.futures.ProcessPoolExecutor`` on seedcore's process
    pool: ``max_workers`` worker processes (default: the CPU count),
    ``initializer(*initargs)`` in each, ``max_tasks_per_child`` to recycle
    workers."""

    _pool = "process"

    def __init__(
        self,
        max_workers: Optional[int] = None,
        mp_context: Any = None,
        initializer: Optional[Callable[..., Any]] = None,
        initargs: tuple = (),
        *,
        max_tasks_per_child: Optional[int] = None,
    ) -> None:
        super().__init__()
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if mp_context is not None:
            method = getattr(mp_context, "get_start_method", lambda: str(mp_context))()
            if method != "spawn":
                raise ValueError(
                    f"mp_context with start method {method!r} is not supported: seedcore workers "
                    f"always start as fresh interpreters (\"spawn\")"
                )
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        # A task's prints reach this process's own stdout and stderr
        # untouched, as from the standard library's workers.
        processes: dict = {"core": max_workers, "max": max_workers, "output": "inherit"}
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int) or max_tasks_per_child < 1:
                raise ValueError("max_tasks_per_child must be >= 1")
            processes["max_tasks_per_process"] = max_tasks_per_child
        self._max_workers = max_workers
        # Threads serve the map's own bookkeeping only; keep them few.
        self._system = ConcurrentSystem(
            processes=processes,
            threads={"core": 1, "max": 2},
            balance={"expand": "none", "shrink": "none"},
            initializer=initializer,
            initargs=initargs,
        )

    def _submitter(self) -> Callable[[Callable, tuple, dict, dict], TaskFuture]:
        assert self._system is not None
        return self._system._submit_process


class ThreadPoolExecutor(_Executor, cf.ThreadPoolExecutor):
    """``concurrent.futures.ThreadPoolExecutor`` on seedcore's thread pool:
    ``max_workers`` threads (default ``min(32, cpu_count + 4)``),
    ``initializer(*initargs)`` on each before its first task."""

    _pool = "thread"

    def __init__(
        self,
        max_workers: Optional[int] = None,
        thread_name_prefix: str = "",
        initializer: Optional[Callable[..., Any]] = None,
        initargs: tuple = (),
    ) -> None:
        super().__init__()
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._max_workers = max_workers
        self._initializer = initializer
        self._initargs = initargs
        self._init_lock = threading.Lock()
        self._inited: "set[int]" = set()
        self._broken: Optional[BaseException] = None
        top: dict = {}
        if thread_name_prefix:
            top["name"] = thread_name_prefix
        self._system = ConcurrentSystem(
            threads={"core": max_workers, "max": max_workers},
            balance={"expand": "none", "shrink": "none"},
            **top,
        )

    def _broken_error(self) -> "cf.thread.BrokenThreadPool":
        e = cf.thread.BrokenThreadPool(
            "A thread initializer failed, the thread pool is not usable anymore"
        )
        e.__cause__ = self._broken
        return e

    def _run(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        # Once an initializer failed, nothing more runs (queued tasks
        # included), as in the standard library.
        if self._broken is not None:
            raise self._broken_error()
        tid = threading.get_ident()
        if tid not in self._inited:
            with self._init_lock:
                if self._broken is not None:
                    raise self._broken_error()
                try:
                    self._initializer(*self._initargs)  # type: ignore[misc]
                except BaseException as e:
                    cf._base.LOGGER.critical("Exception in initializer:", exc_info=True)
                    self._broken = e
                    raise self._broken_error() from e
                self._inited.add(tid)
        return fn(*args, **kwargs)

    def _submitter(self) -> Callable[[Callable, tuple, dict, dict], TaskFuture]:
        assert self._system is not None
        system = self._system
        if self._initializer is None:
            return system._submit_thread
        run = self._run

        def submit(fn: Callable, args: tuple, kwargs: dict, opts: dict) -> TaskFuture:
            if self._broken is not None:
                raise self._broken_error()
            return system._submit_thread(run, (fn, args, kwargs), {}, opts)

        return submit


# Referenced for the docs.
_ = SystemShutdown
