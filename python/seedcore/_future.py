"""``TaskFuture``: a ``concurrent.futures.Future`` whose state lives in the
Rust core.

The core stores a task's outcome without taking the GIL; Python reads it
when asked. So a future costs nothing at completion unless someone listens:
``result()`` waits in Rust with the GIL released (Ctrl-C interrupts it
within 100 ms), and only a done callback or a ``concurrent.futures.wait``
arms a notification, which the binding delivers on its notifier thread.

Everything ``concurrent.futures`` and ``asyncio`` read of a future is
derived from that state (``_state``, ``_condition``, ``_waiters``), so
``cf.wait``, ``cf.as_completed``, ``asyncio.wrap_future`` and
``loop.run_in_executor`` accept a ``TaskFuture`` unchanged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from concurrent.futures._base import (
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import Any, Callable, Generic, Optional, TypeVar

T = TypeVar("T")

# Handle.state() codes.
_QUEUED, _RUNNING, _OK, _ERR, _CANCELLED = range(5)
_CF_STATE = (PENDING, RUNNING, FINISHED, FINISHED, CANCELLED_AND_NOTIFIED)

# Creating a Condition per future would cost more than the rest of a tiny
# task's bookkeeping; it is made on first use, under this lock.
_MAKE = threading.Lock()


class _Waiters(list):
    """``concurrent.futures.wait``'s waiter list of one future: appending
    a waiter arms the future's notification.

    ``cf.wait`` and ``cf.as_completed`` read ``_state`` and then add their
    waiter, holding ``_condition`` throughout; a future they read as
    finished is counted already, so it must not notify that waiter again
    (``as_completed`` would yield it twice). One they read as pending is
    notified when it finishes, even if that happened just before the
    waiter was added."""

    __slots__ = ("_future",)

    def __init__(self, future: "TaskFuture") -> None:
        super().__init__()
        self._future = future

    def append(self, waiter) -> None:  # noqa: D401 - list API
        super().append(waiter)
        f = self._future
        if f._seen_finished is not None and threading.get_ident() in f._seen_finished:
            f._skip(waiter)
            return
        f._arm()

    def remove(self, waiter) -> None:  # noqa: D401 - list API
        super().remove(waiter)
        # Its id may be reused by a later waiter, which must be told.
        notified = self._future._notified
        if notified is not None:
            notified.discard(id(waiter))


# The modules whose done callbacks are made to run on any thread.
_THREAD_SAFE_CALLBACKS = frozenset({"asyncio.futures"})


class _Direct:
    """A done callback that runs where the future resolves, whatever the
    system's callback route."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable) -> None:
        self.fn = fn


def _run_callback(fn: Callable, fut: "TaskFuture") -> None:
    try:
        fn(fut)
    except Exception:  # as concurrent.futures: logged, never raised
        cf._base.LOGGER.exception("exception calling callback for %r", fut)


class TaskFuture(cf.Future, Generic[T]):
    """The handle of one submitted task: a real
    ``concurrent.futures.Future``, also awaitable from asyncio.

    Differences from ``concurrent.futures.Future``, all deliberate:

    * :meth:`cancel` also stops a running task: a process task's worker is
      killed (and replaced), an async task is cancelled; a running thread
      task resolves cancelled at once while its Python code runs on (it can
      not be interrupted), and its result is discarded.
    * ``set_result`` and ``set_exception`` are refused: the task resolves
      its own future.
    * Done callbacks run on the system's callback executor (a notifier
      thread by default, or an asyncio loop, or a :class:`CallbackQueue`),
      or at once on the calling thread when the future is already done.
    """

    def __init__(self, handle: Any, callbacks: Any = None) -> None:
        # concurrent.futures.Future.__init__ is not called: every field it
        # sets is derived here from the handle.
        self._h = handle
        self._route = callbacks
        self._cond: Optional[threading.Condition] = None
        self._wl: Optional[_Waiters] = None
        self._cbs: Optional[list] = None
        self._armed = False
        self._notified: Optional[set] = None
        # Threads that read ``_state`` as finished (see ``_Waiters``).
        self._seen_finished: Optional[set] = None

    # --- what concurrent.futures reads --------------------------------
    @property
    def _condition(self) -> threading.Condition:
        c = self._cond
        if c is None:
            with _MAKE:
                c = self._cond
                if c is None:
                    c = self._cond = threading.Condition()
        return c

    @property
    def _state(self) -> str:
        code = self._h.state()
        if code >= _OK:
            seen = self._seen_finished
            if seen is None:
                seen = self._seen_finished = set()
            seen.add(threading.get_ident())
        return _CF_STATE[code]

    @_state.setter
    def _state(self, value: str) -> None:
        raise RuntimeError("a TaskFuture's state is its task's")

    @property
    def _waiters(self) -> _Waiters:
        w = self._wl
        if w is None:
            with _MAKE:
                w = self._wl
                if w is None:
                    w = self._wl = _Waiters(self)
        return w

    # --- notification ----------------------------------------------------
    def _arm(self) -> None:
        """Makes sure listeners hear of the outcome: the binding calls
        :meth:`_fire` once it resolves, or it is called now."""
        with self._condition:
            if self._armed:
                return
            self._armed = True
        if not self._h.arm(self._fire):
            self._fire()

    def _skip(self, waiter) -> None:
        """Counts ``waiter`` as told: it saw this future finished."""
        with self._condition:
            notified = self._notified
            if notified is None:
                notified = self._notified = set()
            notified.add(id(waiter))

    def _fire(self) -> None:
        """Tells every waiter and runs every callback, each once."""
        code = self._h.state()
        with self._condition:
            self._condition.notify_all()
            waiters = list(self._wl) if self._wl else []
            callbacks = self._cbs or []
            self._cbs = None
            self._armed = False
            notified = self._notified
            if notified is None:
                notified = self._notified = set()
            todo = [w for w in waiters if id(w) not in notified]
            notified.update(id(w) for w in todo)
        for w in todo:
            if code == _OK:
                w.add_result(self)
            elif code == _ERR:
                w.add_exception(self)
            else:
                w.add_cancelled(self)
        for fn in callbacks:
            self._dispatch(fn)

    def _dispatch(self, fn: Callable) -> None:
        route = self._route
        if isinstance(fn, _Direct):
            _run_callback(fn.fn, self)
        elif route is None:
            _run_callback(fn, self)
        elif isinstance(route, asyncio.AbstractEventLoop):
            try:
                route.call_soon_threadsafe(_run_callback, fn, self)
            except RuntimeError:  # the loop is closed: run it here
                _run_callback(fn, self)
        else:
            route.put(_run_callback, fn, self)

    # --- the Future API --------------------------------------------------
    def done(self) -> bool:
        """Whether the task resolved (value, exception or cancelled)."""
        return self._h.done()

    def running(self) -> bool:
        """Whether an attempt of the task is running now."""
        return self._h.state() == _RUNNING

    def cancelled(self) -> bool:
        """Whether the task was cancelled."""
        return self._h.state() == _CANCELLED

    def cancel(self) -> bool:
        """Cancels the task: a queued task never starts; a running process
        task's worker is killed; a running async task is cancelled. True if
        the task is cancelled (also when it already was); False if it had
        already resolved otherwise."""
        return self._h.cancel()

    def result(self, timeout: Optional[float] = None) -> T:
        """The task's value: waits up to ``timeout`` seconds (forever by
        default), then raises ``TimeoutError``; raises the task's exception,
        or ``CancelledError``."""
        h = self._h
        if not h.done() and not h.wait(timeout):
            raise cf.TimeoutError()
        ok, value = h.outcome()
        if ok:
            return value
        try:
            raise value
        finally:
            value = None

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        """The task's exception, or None if it produced a value; waits as
        :meth:`result` does; raises ``CancelledError`` if cancelled."""
        h = self._h
        if not h.done() and not h.wait(timeout):
            raise cf.TimeoutError()
        ok, value = h.outcome()
        if ok:
            return None
        # Only a cancelled task raises here; a task whose own code raised
        # CancelledError failed with it, and returns it as any exception.
        if h.state() == _CANCELLED:
            raise value
        return value

    def add_done_callback(self, fn: Callable[["TaskFuture[T]"], Any]) -> None:
        """Calls ``fn(future)`` once the task resolves: at once on this
        thread if it already has, else on the system's callback executor.
        Any number may be added; an exception in one is logged. asyncio's
        own callbacks (``await``, ``wrap_future``, ``run_in_executor``) are
        thread-safe and always run on the notifier thread: routed to a
        :class:`CallbackQueue` or a loop that is not running, an ``await``
        would never wake."""
        if not self._h.done():
            if getattr(fn, "__module__", None) in _THREAD_SAFE_CALLBACKS:
                fn = _Direct(fn)
            with self._condition:
                if self._cbs is None:
                    self._cbs = []
                self._cbs.append(fn)
            self._arm()
            return
        _run_callback(fn, self)

    def set_running_or_notify_cancel(self) -> bool:
        """For executors that drive plain futures; a task drives its own."""
        return not self.cancelled()

    def set_result(self, result: Any) -> None:
        raise RuntimeError("a TaskFuture is resolved by its task, not by set_result")

    def set_exception(self, exception: Optional[BaseException]) -> None:
        raise RuntimeError("a TaskFuture is resolved by its task, not by set_exception")

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the task resolves or ``timeout`` passes; whether it
        resolved. Never raises the task's exception."""
        return self._h.done() or self._h.wait(timeout)

    @property
    def id(self) -> str:
        """The task's id, as the core's stats and logs show it."""
        return self._h.id

    def __await__(self):
        return asyncio.wrap_future(self).__await__()

    def __repr__(self) -> str:
        names = ("queued", "running", "finished", "failed", "cancelled")
        return f"<TaskFuture {self._h.id} {names[self._h.state()]}>"


class CallbackQueue:
    """Done callbacks queued for a thread of your choice, usually a GUI's
    main thread: pass it as ``callbacks=`` and call :meth:`drain` from
    that thread (a Qt timer, a Tk ``after`` loop). For Qt with asyncio
    (qasync), pass the qasync event loop as ``callbacks=`` instead."""

    def __init__(self) -> None:
        import queue

        self._q: "queue.SimpleQueue" = queue.SimpleQueue()

    def put(self, fn: Callable, *args: Any) -> None:
        """Queues ``fn(*args)``."""
        self._q.put((fn, args))

    def __len__(self) -> int:
        return self._q.qsize()

    def drain(self, limit: Optional[int] = None, timeout: float = 0.0) -> int:
        """Runs the queued callbacks on this thread (at most ``limit``),
        waiting up to ``timeout`` seconds for the first; how many ran."""
        import queue

        n = 0
        block = timeout > 0
        while limit is None or n < limit:
            try:
                fn, args = self._q.get(block, timeout if block else None)
            except queue.Empty:
                break
            block = False
            fn(*args)
            n += 1
        return n
