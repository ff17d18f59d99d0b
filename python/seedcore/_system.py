"""``ConcurrentSystem``: the Rust core's system, driven from Python."""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures as cf
import datetime
import itertools
import json
import math
import os
import pickle
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, TypeVar, Union

from . import _pickling, _worker
from ._errors import ConfigError, SystemShutdown
from ._future import CallbackQueue, TaskFuture
from ._seedcore import System as _RustSystem

T = TypeVar("T")

#: The task options every ``submit_*`` takes as keyword arguments; they are
#: not passed on to the function (use ``functools.partial`` for a function
#: that has a parameter of one of these names).
OPTION_NAMES = frozenset(
    (
        "priority",
        "timeout",
        "retries",
        "retry_on",
        "backoff",
        "jitter",
        "lock",
        "limit",
        "lock_timeout",
        "name",
    )
)

_SECTIONS = ("threads", "async", "processes", "balance", "callbacks", "command")
# The shutdown timeout unless one is configured: no limit, in effect.
_NO_SHUTDOWN_LIMIT = "3650days"
_TOP = ("name", "shutdown_mode", "shutdown_timeout")

_LIVE: "weakref.WeakSet[ConcurrentSystem]" = weakref.WeakSet()
# Rust systems inherited by a forked child: never dropped there (dropping
# would stop workers that belong to the parent).
_ORPHANED: List[Any] = []


def _after_fork_in_child() -> None:
    for s in list(_LIVE):
        _ORPHANED.append(s._rs)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Systems dropped while their work went on: kept until the exit has
# waited for them.
_DRAINING: List[Any] = []


def _drain(rs: Any, pid: int) -> None:
    """The finalizer of a dropped system: lets its work finish in the
    background (a forked child leaves its parent's system alone)."""
    if os.getpid() != pid:
        return
    try:
        rs.shutdown("graceful", False)
    except Exception:  # noqa: BLE001 - a finalizer must not raise
        return
    _DRAINING.append(rs)


def _shutdown_all() -> None:
    # Before the interpreter tears down: running thread tasks still get the
    # GIL, and no worker outlives this process. A normal exit lets submitted
    # work finish (as concurrent.futures does); an exit on an uncaught
    # exception (Ctrl-C included) stops it: workers killed, queue cancelled.
    # It runs where concurrent.futures' own exit runs: before the atexit
    # handlers, which therefore cannot submit any more (as there).
    mode = "immediate" if getattr(sys, "last_type", None) is not None else None
    for s in list(_LIVE):
        try:
            s.shutdown(wait=True, mode=mode)
        except BaseException:  # noqa: BLE001 - exiting anyway
            pass
    for rs in _DRAINING:
        try:
            rs.shutdown(mode or "graceful", True)
        except BaseException:  # noqa: BLE001 - exiting anyway
            pass


if hasattr(threading, "_register_atexit"):
    threading._register_atexit(_shutdown_all)  # type: ignore[attr-defined]
else:  # pragma: no cover - Python < 3.9
    atexit.register(_shutdown_all)


def _toml_value(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(where, f"must be a finite number, not {v}")
        return repr(v)
    if isinstance(v, datetime.timedelta):
        return repr(v.total_seconds())
    if isinstance(v, (str, os.PathLike)):
        return json.dumps(os.fspath(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, where) for x in v) + "]"
    raise ConfigError(where, f"unsupported value {v!r} of type {type(v).__name__}")


def _to_toml(cfg: Dict[str, Any]) -> str:
    lines: List[str] = []
    for k, v in cfg.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {_toml_value(v, k)}")
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            for kk, vv in v.items():
                lines.append(f"{kk} = {_toml_value(vv, f'{k}.{kk}')}")
    return "\n".join(lines) + "\n"


def _read_toml(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef]
        except ImportError:
            return {"__text__": open(path, encoding="utf-8").read()}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError("config", f"cannot read {os.fspath(path)}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", f"{os.fspath(path)} is not valid TOML: {e}") from e


def _worker_command() -> Tuple[str, List[str]]:
    """How a Python worker starts: this interpreter, its flags, the module
    and the parent's preparation (as ``multiprocessing`` spawn makes it)."""
    import multiprocessing.spawn

    prep = multiprocessing.spawn.get_preparation_data("seedcore-worker")
    # The authkey is a secret and argv is public.
    prep.pop("authkey", None)
    args = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    # The worker imports this very package, wherever it was loaded from
    # (an install, a checkout on sys.path); the rest of sys.path comes with
    # the preparation.
    home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    boot = f"import sys; sys.path.insert(0, {home!r}); from seedcore._worker import main; sys.exit(main())"
    args += ["-c", boot, _worker.encode_preparation(prep)]
    return sys.executable, args


class _MapIterator:
    """The results of a map whose first window is submitted: in input order
    (``ordered``) or as they complete. A failed item raises its exception;
    with ``stop_on_error`` (``map``, as ``Executor.map``) that ends the
    iteration, else (``imap``, as ``Pool.imap``) the next call goes on with
    the next result. A timeout of the map's own ``timeout`` raises
    ``TimeoutError`` and ends it; stopping early (``close``, or dropping
    the iterator once it has been read) cancels every chunk not handed
    back. No result is kept once handed out."""

    def __init__(
        self,
        pending: "collections.deque[TaskFuture]",
        fill: Callable[[], None],
        left: Callable[[], Optional[float]],
        ordered: bool,
        stop_on_error: bool,
    ) -> None:
        self._pending = pending
        self._fill = fill
        self._left = left
        self._ordered = ordered
        self._stop_on_error = stop_on_error
        # The chunk being handed out, reversed; finished chunks not yet
        # read (as they completed).
        self._values: List[Any] = []
        self._ready: "collections.deque[TaskFuture]" = collections.deque()
        self._closed = False
        # An iterator dropped before its first result leaves the work be:
        # ``ex.map(fn, items)`` alone runs every item, as in the standard
        # library.
        self._started = False

    def __iter__(self) -> "_MapIterator":
        return self

    def __next__(self) -> Any:
        return self._step(None)

    def next(self, timeout: Optional[float] = None) -> Any:
        """The next result, as ``Pool.imap``'s iterator gives it: waits up to
        ``timeout`` seconds, then raises ``multiprocessing.TimeoutError``
        (the iteration can go on)."""
        return self._step(timeout)

    def close(self) -> None:
        """Stops the map: cancels every chunk not handed back."""
        self._closed = True
        pending, self._pending = list(self._pending), collections.deque()
        ready, self._ready = list(self._ready), collections.deque()
        self._values = []
        for f in pending + ready:
            f.cancel()

    def __del__(self) -> None:
        if not self._started:
            return
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit
            pass

    def _budget(self, timeout: Optional[float]) -> Tuple[Optional[float], bool]:
        """How long this step may wait, and whether that is the map's own
        deadline (rather than ``next``'s ``timeout``)."""
        left = self._left()
        if timeout is None or (left is not None and left <= timeout):
            return left, left is not None
        return max(0.0, timeout), False

    def _timed_out(self, own: bool) -> BaseException:
        if own:
            self.close()
            return cf.TimeoutError()
        import multiprocessing

        return multiprocessing.TimeoutError()

    def _take(self, f: TaskFuture) -> Any:
        """Hands out the finished chunk ``f``: its first value."""
        try:
            out = f.result(0)
        except BaseException:
            if self._stop_on_error:
                self.close()
            raise
        out.reverse()
        self._values = out
        return self._step(None)

    def _step(self, timeout: Optional[float]) -> Any:
        self._started = True
        while True:
            if self._values:
                return self._values.pop()
            if self._ready:
                return self._take(self._ready.popleft())
            if self._closed or not self._pending:
                self._closed = True
                raise StopIteration
            wait, own = self._budget(timeout)
            if self._ordered:
                f = self._pending[0]
                if not f.wait(wait):
                    raise self._timed_out(own)
                self._pending.popleft()
                self._fill()
                return self._take(f)
            done, _ = cf.wait(list(self._pending), timeout=wait, return_when=cf.FIRST_COMPLETED)
            if not done:
                raise self._timed_out(own)
            for f in done:
                self._pending.remove(f)
            self._fill()
            self._ready.extend(done)


class _AsyncLoop:
    """The event loop on which ``submit_async`` coroutines run, in a
    thread of its own, started on first use."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="seedcore-asyncio", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _split(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Takes the task options out of ``kwargs``."""
    return {k: kwargs.pop(k) for k in list(kwargs) if k in OPTION_NAMES}


def _call_chunk(fn: Callable, chunk: List[Any], star: bool) -> List[Any]:
    """Runs ``fn`` over a map's chunk (in a worker): ``fn(item)``, or
    ``fn(*item)`` when ``star``. ``map`` and ``starmap`` loop in C."""
    return list(itertools.starmap(fn, chunk) if star else map(fn, chunk))


class ConcurrentSystem:
    """Threads, worker processes and async tasks with priorities, timeouts
    that stop work, retries, locks, callbacks and a balancer, from Python.

    Configure it with one dict per section (the keys of the Rust key table,
    see ``docs/python.md``), a TOML file, or both (keyword
    arguments win)::

        with seedcore.ConcurrentSystem(threads={"core": 2},
                                       processes={"core": 2, "max_memory": "1GiB"}) as system:
            fut = system.submit_process(parse, "42", timeout=5, retries=2)
            print(fut.result())

    Durations are seconds (``2.5``), ``timedelta``s or strings (``"250ms"``);
    sizes are bytes or strings (``"512MiB"``). An invalid value raises
    :class:`ConfigError` naming the key.

    ``callbacks`` says where done callbacks run: ``None`` (a notifier
    thread), an asyncio event loop (through ``call_soon_threadsafe``;
    a qasync loop for Qt), or a :class:`CallbackQueue` your own loop drains.
    ``initializer(*initargs)`` runs in each worker process before its first
    task; if it raises, the pool is broken and tasks fail with
    :class:`PoolBroken` carrying its message.

    Worker processes are fresh interpreters (``sys.executable -m
    seedcore._worker``), never forked: as with multiprocessing's spawn
    method, the main script's top level runs in them, so code that builds a
    system must sit under ``if __name__ == "__main__":``.
    """

    def __init__(
        self,
        config: Union[str, os.PathLike, None] = None,
        *,
        threads: Optional[Dict[str, Any]] = None,
        processes: Optional[Dict[str, Any]] = None,
        balance: Optional[Dict[str, Any]] = None,
        callbacks: Any = None,
        initializer: Optional[Callable[..., Any]] = None,
        initargs: tuple = (),
        **more: Any,
    ) -> None:
        if _worker.importing_main:
            raise RuntimeError(
                "a ConcurrentSystem is being built while a worker process imports the main "
                "module: the code that builds it must sit under "
                "`if __name__ == \"__main__\":` (worker processes import the main script, "
                "as with multiprocessing's spawn start method)"
            )
        cfg: Dict[str, Any] = {}
        text_prefix = ""
        if config is not None:
            loaded = _read_toml(config)
            if "__text__" in loaded:
                text_prefix = loaded["__text__"]
            else:
                cfg = loaded
        sections = {"threads": threads, "processes": processes, "balance": balance}
        async_section = more.pop("async_", None)
        if async_section is not None:
            sections["async"] = async_section
        for k in list(more):
            if k in _SECTIONS or k in _TOP:
                sections[k] = more.pop(k)
        if more:
            name = sorted(more)[0]
            raise ConfigError(name, "unknown section or key")
        for k, v in sections.items():
            if v is None:
                continue
            if k in _TOP:
                cfg[k] = v
                continue
            if not isinstance(v, dict):
                raise ConfigError(k, f"must be a dict of settings, not {type(v).__name__}")
            merged = dict(cfg.get(k) or {})
            merged.update(v)
            cfg[k] = merged
        if isinstance(callbacks, str):
            if callbacks not in ("thread", "notifier"):
                raise ConfigError("callbacks", f"unknown callback executor {callbacks!r}")
            callbacks = None
        if callbacks is not None and not isinstance(callbacks, (asyncio.AbstractEventLoop, CallbackQueue)):
            raise ConfigError(
                "callbacks", "must be None, an asyncio event loop or a seedcore.CallbackQueue"
            )
        self._callbacks = callbacks
        procs = cfg.get("processes") or {}
        program, args = (None, [])
        if "program" not in procs:
            program, args = _worker_command()
        init = None
        if initializer is not None or program is not None:
            # The workers also take this process's multiprocessing authkey
            # (as spawned children do), so that a Manager's proxies passed
            # to a task can reach their manager. It travels with the
            # initializer, never on the (public) command line.
            import multiprocessing

            authkey = bytes(multiprocessing.current_process().authkey)
            call = None
            if initializer is not None:
                try:
                    call = pickle.dumps((initializer, tuple(initargs)), 5)
                except Exception as e:
                    raise TypeError(f"the initializer cannot be pickled: {e}") from e
            # Two layers: the worker reads the authkey before it imports the
            # parent's main module, and unpickles the call after.
            init = pickle.dumps((authkey, call), 5)
        if "shutdown_timeout" not in cfg and not text_prefix:
            # A shutdown that lets the work finish waits for all of it, as
            # concurrent.futures' does (the core's default gives up after
            # 30 s and cancels what is left). Ctrl-C still stops it.
            cfg["shutdown_timeout"] = _NO_SHUTDOWN_LIMIT
        toml_text = text_prefix + ("\n" if text_prefix else "") + _to_toml(cfg)
        self._rs = _RustSystem(toml_text, program, args, init)
        self._pid = os.getpid()
        # Dropped with work under way, it still finishes that work (as a
        # dropped concurrent.futures executor does), and the exit waits.
        self._finalizer = weakref.finalize(self, _drain, self._rs, self._pid)
        self._finalizer.atexit = False
        self._async: Optional[_AsyncLoop] = None
        self._lock = threading.Lock()
        _LIVE.add(self)

    # --- guards --------------------------------------------------------
    def _sys(self) -> Any:
        if os.getpid() != self._pid:
            raise RuntimeError(
                "this ConcurrentSystem belongs to the process that built it; a forked child "
                "cannot use it (build a new one in the child)"
            )
        return self._rs

    def _future(self, handle: Any) -> TaskFuture:
        return TaskFuture(handle, self._callbacks)

    # --- submitting ------------------------------------------------------
    def submit_process(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> TaskFuture[T]:
        """Runs ``fn(*args, **kwargs)`` in a worker process. ``fn`` travels
        by reference (a module-level function, as with concurrent.futures;
        lambdas and closures need cloudpickle). Task options are keyword
        arguments: ``priority`` (0 most urgent .. 10, default 5),
        ``timeout`` (seconds from the start of each attempt: the worker is
        killed, with its process group), ``retries``, ``retry_on``
        (``"error"``, ``"timeout"``, ``"crash"``, ``"all"``), ``backoff``
        (seconds, or ``(initial, factor, max)``), ``jitter``, ``lock`` (a
        name or names), ``limit`` (``(name, permits)`` or a dict),
        ``lock_timeout``, ``name``."""
        return self._submit_process(fn, args, kwargs, _split(kwargs))

    def _submit_process(self, fn: Callable, args: tuple, kwargs: Dict[str, Any], opts: Dict[str, Any]) -> TaskFuture:
        """``fn(*args, **kwargs)`` in a worker process, with the task
        options ``opts`` (every keyword goes to ``fn``)."""
        rs = self._sys()
        payload, buffers = _pickling.dumps_call(fn, args, kwargs)
        return self._future(rs.submit_process(payload, buffers, opts))

    def submit_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> TaskFuture[T]:
        """Runs ``fn(*args, **kwargs)`` on the thread pool, with the task
        options of :meth:`submit_process`. A timeout resolves the future at
        the deadline (``TaskTimedOut``); the Python code itself cannot be
        stopped and runs on, its result discarded (use a process task for
        code that must be stopped)."""
        return self._submit_thread(fn, args, kwargs, _split(kwargs))

    def _submit_thread(self, fn: Callable, args: tuple, kwargs: Dict[str, Any], opts: Dict[str, Any]) -> TaskFuture:
        """``fn(*args, **kwargs)`` on the thread pool, with the task options
        ``opts`` (every keyword goes to ``fn``)."""
        rs = self._sys()
        call = (lambda: fn(*args, **kwargs)) if (args or kwargs) else fn
        return self._future(rs.submit_thread(call, opts))

    def submit_async(self, coroutine_fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Runs the coroutine ``coroutine_fn(*args, **kwargs)`` on the
        system's event loop (a thread of its own), with the task options of
        :meth:`submit_process`: a timeout or a cancel cancels the coroutine;
        a retry calls ``coroutine_fn`` again."""
        rs = self._sys()
        opts = _split(kwargs)
        loop = self._event_loop()

        def start() -> cf.Future:
            return asyncio.run_coroutine_threadsafe(coroutine_fn(*args, **kwargs), loop)

        return self._future(rs.submit_async(start, opts))

    def submit_command(
        self,
        command: Union[str, List[str]],
        *,
        cwd: Union[str, os.PathLike, None] = None,
        env: Optional[Dict[str, str]] = None,
        **options: Any,
    ) -> TaskFuture[Dict[str, Any]]:
        """Runs an external command in its own process group: a list of
        arguments run directly, or a string run by ``sh -c``. Resolves to a
        dict (``returncode``, ``signal``, ``stdout``, ``stderr`` as bytes,
        ``duration``, ``attempts``, ``pid``); a non-zero exit raises
        :class:`CommandFailed` holding that dict (retried by ``retries``).
        A timeout kills the whole group."""
        rs = self._sys()
        bad = set(options) - OPTION_NAMES
        if bad:
            raise TypeError(f"submit_command() got unknown options {sorted(bad)}")
        argv = None if isinstance(command, str) else [os.fspath(a) for a in command]
        shell = command if isinstance(command, str) else None
        pairs = list(env.items()) if env else None
        cwd_s = os.fspath(cwd) if cwd is not None else None
        return self._future(rs.submit_command(argv, shell, cwd_s, pairs, options))

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._async is None:
                self._async = _AsyncLoop()
            return self._async.loop

    # --- maps ------------------------------------------------------------
    def _map(
        self,
        fn: Callable,
        items: Iterable[Any],
        *,
        star: bool,
        pool: str,
        ordered: bool,
        chunksize: Optional[int],
        timeout: Optional[float],
        window: Optional[int],
        options: Dict[str, Any],
        sized: Optional[int],
        stop_on_error: bool = True,
    ) -> "_MapIterator":
        if pool not in ("process", "thread"):
            raise ValueError(f"pool must be \"process\" or \"thread\", not {pool!r}")
        if chunksize is None:
            if sized is not None:
                # multiprocessing.Pool.map's rule: four chunks per worker.
                chunksize = max(1, math.ceil(sized / (4 * (os.cpu_count() or 1))))
            else:
                chunksize = 1
        if chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        if window is None:
            window = 4 * (os.cpu_count() or 1) + 4
        if window < 1:
            raise ValueError("window must be at least 1")
        deadline = None if timeout is None else time.monotonic() + timeout
        submit = self.submit_process if pool == "process" else self.submit_thread
        it = iter(items)

        def chunks() -> Iterator[List[Any]]:
            while True:
                c = list(itertools.islice(it, chunksize))
                if not c:
                    return
                yield c

        source = chunks()
        pending: "collections.deque[TaskFuture]" = collections.deque()

        def fill() -> None:
            while len(pending) < window:
                c = next(source, None)
                if c is None:
                    return
                pending.append(submit(_call_chunk, fn, c, star, **options))

        def left() -> Optional[float]:
            if deadline is None:
                return None
            return max(0.0, deadline - time.monotonic())

        # The first window is submitted now, at the call (as the standard
        # library's ``map`` does), not at the first ``next``.
        try:
            fill()
        except BaseException:
            for f in pending:
                f.cancel()
            raise
        return _MapIterator(pending, fill, left, ordered, stop_on_error)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: Optional[int] = None,
        pool: str = "process",
        window: Optional[int] = None,
        **options: Any,
    ) -> Iterator[T]:
        """``fn`` over the iterables (zipped), results in order, like
        ``Executor.map`` and ``Pool.imap``: the first ``window`` chunks are
        submitted at the call, then one more as each is handed back, so an
        endless generator works. ``chunksize``
        defaults to ``Pool.map``'s rule where the input has a length, else
        1. ``timeout`` counts from this call; past it ``TimeoutError`` is
        raised. Stopping the iteration cancels what is in flight. ``pool``
        is ``"process"`` or ``"thread"``; task options apply to each chunk."""
        sized = None
        if len(iterables) == 1 and hasattr(iterables[0], "__len__"):
            sized = len(iterables[0])  # type: ignore[arg-type]
        one = len(iterables) == 1
        return self._map(
            fn,
            iterables[0] if one else zip(*iterables),
            star=not one,
            pool=pool,
            ordered=True,
            chunksize=chunksize,
            timeout=timeout,
            window=window,
            options=options,
            sized=sized,
        )

    def imap(self, fn: Callable[..., T], iterable: Iterable[Any], chunksize: int = 1, **kw: Any) -> Iterator[T]:
        """``Pool.imap``: results in order, lazily. A failed item raises
        its exception from ``next`` and the iteration goes on; ``next(timeout)``
        is there too."""
        return self._map(fn, iterable, star=False, ordered=True, chunksize=chunksize,
                         pool=kw.pop("pool", "process"), timeout=kw.pop("timeout", None),
                         window=kw.pop("window", None), options=kw, sized=None,
                         stop_on_error=False)

    def imap_unordered(
        self, fn: Callable[..., T], iterable: Iterable[Any], chunksize: int = 1, **kw: Any
    ) -> Iterator[T]:
        """``Pool.imap_unordered``: results as they complete, lazily; a
        failed item raises from ``next`` and the iteration goes on."""
        return self._map(fn, iterable, star=False, ordered=False, chunksize=chunksize,
                         pool=kw.pop("pool", "process"), timeout=kw.pop("timeout", None),
                         window=kw.pop("window", None), options=kw, sized=None,
                         stop_on_error=False)

    def starmap(
        self, fn: Callable[..., T], iterable: Iterable[Iterable[Any]], chunksize: Optional[int] = None, **kw: Any
    ) -> List[T]:
        """``Pool.starmap``: ``fn(*args)`` for each tuple, as a list. As
        there, every item runs; the first failure (in input order) is then
        raised."""
        items = list(iterable)
        it: _MapIterator = self._map(fn, items, star=True, ordered=True, chunksize=chunksize,
                       pool=kw.pop("pool", "process"), timeout=kw.pop("timeout", None),
                       window=kw.pop("window", None), options=kw, sized=len(items),
                       stop_on_error=False)
        out: List[T] = []
        first: Optional[Exception] = None
        while True:
            try:
                out.append(next(it))
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001 - raised once all have run
                if isinstance(e, cf.TimeoutError) and it._closed:
                    raise  # the map's own timeout: nothing more comes
                if first is None:
                    first = e
        if first is not None:
            raise first
        return out

    # --- observing -------------------------------------------------------
    def stats(self) -> Dict[str, Any]:
        """The core's stats snapshot as a dict: counts per outcome,
        queue-wait and run-time percentiles, per-executor readings."""
        return json.loads(self._sys().stats_json())

    def monitor(self) -> Dict[str, Any]:
        """The monitor's reading as a dict: the machine (cores, memory,
        CPU load) and every worker (pid, CPU, RSS, state)."""
        return json.loads(self._sys().monitor_json())

    def metrics(self) -> str:
        """The metrics in the Prometheus text format."""
        return self._sys().metrics()

    def resize(self, pool: str, size: int) -> int:
        """Resizes ``"threads"`` or ``"processes"`` towards ``size`` (within
        its core and max); the size it is going to."""
        return self._sys().resize(pool, size)

    # --- stopping --------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether the system is shut down."""
        return self._rs.closed

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False, mode: Optional[str] = None) -> None:
        """Stops the system, as ``Executor.shutdown``: queued and running
        tasks finish (``cancel_futures=True``: queued tasks are cancelled,
        running ones finish); ``wait=False`` returns at once while that
        happens. ``mode`` names a seedcore mode instead: ``"graceful"``,
        ``"cancel_queued"`` or ``"immediate"`` (running work is stopped:
        process tasks' workers are killed). Later submissions raise
        :class:`SystemShutdown`. Idempotent. A Ctrl-C while it waits makes it
        immediate and raises ``KeyboardInterrupt``; leaving a ``with`` block
        on a Ctrl-C, or the interpreter on an uncaught exception, shuts down
        immediately too."""
        if os.getpid() != self._pid:
            return
        if mode is None:
            mode = "cancel_queued" if cancel_futures else "graceful"
        self._rs.shutdown(mode, wait)
        if not wait:
            # It stays listed, its event loop running for the coroutines
            # still under way: the interpreter's exit waits for that work
            # (as concurrent.futures' does), then stops the loop.
            return
        with self._lock:
            loop, self._async = self._async, None
        if loop is not None:
            loop.stop()
        self._finalizer.detach()
        _LIVE.discard(self)

    def __enter__(self) -> "ConcurrentSystem":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Ctrl-C out of the block stops the work; anything else lets it
        # finish, as concurrent.futures does.
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self.shutdown(wait=True, mode="immediate" if interrupted else None)

    def __repr__(self) -> str:
        return f"<seedcore.ConcurrentSystem{' closed' if self.closed else ''}>"


__all__ = ["ConcurrentSystem", "OPTION_NAMES", "SystemShutdown"]
